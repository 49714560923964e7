-- Auth: users, sessions (one per sign-in; a refresh-token family), refresh
-- tokens (hashed), signing keys shared by instances, and single-use email
-- tokens (verification, password reset), stored hashed. Times are µs since epoch.
CREATE TABLE users (
    id              TEXT PRIMARY KEY NOT NULL,
    email           TEXT UNIQUE,
    password_hash   TEXT,
    email_verified  INTEGER NOT NULL DEFAULT 0,
    anonymous       INTEGER NOT NULL DEFAULT 0,
    display_name    TEXT,
    claims          TEXT NOT NULL DEFAULT '{}',
    disabled        INTEGER NOT NULL DEFAULT 0,
    failed_signins  INTEGER NOT NULL DEFAULT 0,
    last_failed_at  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE TABLE email_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify', 'recover')),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
