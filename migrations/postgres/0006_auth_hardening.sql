-- A verification or reset link names the address it was sent to: a link sent
-- to an old address confirms nothing after the email changes.
ALTER TABLE email_tokens ADD COLUMN email TEXT;

-- Failed sign-ins counted per email address, whether or not an account has it,
-- so a locked account and an unknown address answer alike. (The per-user
-- columns users.failed_signins / last_failed_at are no longer read.)
CREATE TABLE signin_failures (
    email           TEXT PRIMARY KEY NOT NULL,
    failed          BIGINT NOT NULL,
    last_failed_at  BIGINT NOT NULL
);
CREATE INDEX signin_failures_by_time ON signin_failures (last_failed_at);
