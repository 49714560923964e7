-- What the admin API deployed for every instance (today the security rules):
-- the newest content of each kind, with a version each instance compares
-- with the one it has in force, and when it was deployed.
CREATE TABLE deployments (
    kind TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    content TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
