-- The recent-invocations log, shared by every instance: each finished function
-- invocation with its outcome and console output; the newest 500 are kept.
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    duration_ms REAL NOT NULL,
    cold INTEGER NOT NULL,
    time INTEGER NOT NULL,
    logs TEXT NOT NULL
);
CREATE INDEX invocations_by_time ON invocations (time);
