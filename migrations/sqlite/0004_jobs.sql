-- Durable trigger jobs (transactional outbox): one row per function to run for
-- a committed change, written in the same transaction. `id` is the event id the
-- function sees (stable across retries). A job that keeps failing stays with
-- dead = 1 (the dead-letter list) until replayed.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    function     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_after    INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    dead         INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (dead, run_after);
