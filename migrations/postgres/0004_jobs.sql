-- Durable trigger jobs (transactional outbox): one row per function to run for
-- a committed change, written in the same transaction. `id` is the event id the
-- function sees (stable across retries). A job that keeps failing stays with
-- dead = true (the dead-letter list) until replayed.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    function     TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    run_after    BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    dead         BOOLEAN NOT NULL DEFAULT FALSE,
    last_error   TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (dead, run_after);
