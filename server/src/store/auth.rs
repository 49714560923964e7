//! Auth rows: users, sessions and their refresh tokens, signing keys and
//! single-use email tokens. Every statement here is portable SQL, written once.
//! Tokens arrive already hashed; this module never sees a secret.

use super::query::Param;
use super::sessions::SessionChange;
use super::{Store, StoreError};

/// A user row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub anonymous: bool,
    pub display_name: Option<String>,
    /// Custom claims as a JSON object.
    pub claims: String,
    pub disabled: bool,
    pub failed_signins: i64,
    pub last_failed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const USER_COLUMNS: &str = "id, email, password_hash, email_verified, anonymous, display_name, claims, disabled, \
                            failed_signins, last_failed_at, created_at, updated_at";

/// A signing key row; `private_key` is PKCS#8 (EdDSA) or the HS256 secret never stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key: String,
    pub public_key: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Rotated: the old token is spent, the new one stored.
    Rotated { session_id: String, user_id: String },
    /// The token was already spent: its whole session is now revoked.
    Reused,
    /// Unknown token, or its session is revoked or expired.
    Invalid,
}

/// The id and the columns a user's owner or an admin change, in `USER_COLUMNS` order ($1 to $8).
fn user_identity(user: &UserRow) -> Vec<Param> {
    vec![
        (&user.id).into(),
        (&user.email).into(),
        (&user.password_hash).into(),
        user.email_verified.into(),
        user.anonymous.into(),
        (&user.display_name).into(),
        (&user.claims).into(),
        user.disabled.into(),
    ]
}

impl Store {
    pub async fn insert_user(&self, user: &UserRow) -> Result<(), StoreError> {
        let sql =
            format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)");
        let mut params = user_identity(user);
        params.extend([
            user.failed_signins.into(),
            user.last_failed_at.into(),
            user.created_at.into(),
            user.updated_at.into(),
        ]);
        self.execute(&sql, &params).await.map(|_| ())
    }

    /// Writes every mutable column of `user` (the row must exist).
    pub async fn save_user(&self, user: &UserRow) -> Result<(), StoreError> {
        let sql = "UPDATE users SET email = $2, password_hash = $3, email_verified = $4, anonymous = $5, \
                   display_name = $6, claims = $7, disabled = $8, updated_at = $9 WHERE id = $1";
        let mut params = user_identity(user);
        params.push(user.updated_at.into());
        self.execute(sql, &params).await.map(|_| ())
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(on_reader!(self, |pool| sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?))
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        Ok(on_reader!(self, |pool| sqlx::query_as(&sql).bind(email).fetch_optional(pool).await?))
    }

    /// Users in id order after `after`, optionally only emails containing `search`.
    pub async fn list_users(&self, after: &str, limit: i64, search: Option<&str>) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id > $1 AND ($2 = '' OR email LIKE $3) ORDER BY id LIMIT $4"
        );
        let search = search.unwrap_or_default();
        let pattern = format!("%{}%", search.replace(['\\', '%', '_'], ""));
        Ok(on_reader!(self, |pool| {
            sqlx::query_as(&sql).bind(after).bind(search).bind(&pattern).bind(limit).fetch_all(pool).await?
        }))
    }

    pub async fn delete_user(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM users WHERE id = $1", &[id.into()]).await? == 1)
    }

    /// Failed sign-ins for `email` (whether or not an account has it): (count, last failure).
    pub async fn failed_signins(&self, email: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(on_reader!(self, |pool| {
            sqlx::query_as("SELECT failed, last_failed_at FROM signin_failures WHERE email = $1")
                .bind(email)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Counts a failed sign-in for `email`; the count restarts when the last
    /// failure is older than `window_start`, and older counts are dropped.
    pub async fn record_failed_signin(&self, email: &str, now: i64, window_start: i64) -> Result<(), StoreError> {
        let count = "INSERT INTO signin_failures (email, failed, last_failed_at) VALUES ($1, 1, $2) \
                     ON CONFLICT (email) DO UPDATE SET failed = CASE WHEN signin_failures.last_failed_at < $3 \
                     THEN 1 ELSE signin_failures.failed + 1 END, last_failed_at = $2";
        self.execute(count, &[email.into(), now.into(), window_start.into()]).await?;
        let forget = "DELETE FROM signin_failures WHERE last_failed_at < $1";
        self.execute(forget, &[window_start.into()]).await.map(|_| ())
    }

    pub async fn clear_failed_signins(&self, email: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM signin_failures WHERE email = $1", &[email.into()]).await.map(|_| ())
    }

    /// Ends every session of the user but `keep` (the one that made a change).
    pub async fn revoke_other_sessions(&self, user_id: &str, keep: &str, now: i64) -> Result<(), StoreError> {
        let sql = "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL";
        self.execute(sql, &[user_id.into(), keep.into(), now.into()]).await?;
        self.announce_session_change(SessionChange::User(user_id.to_owned())).await;
        Ok(())
    }

    /// Spends every outstanding verification and reset link of the user.
    pub async fn revoke_email_tokens(&self, user_id: &str, now: i64) -> Result<(), StoreError> {
        let sql = "UPDATE email_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL";
        self.execute(sql, &[user_id.into(), now.into()]).await.map(|_| ())
    }

    /// Starts a session with its first refresh token.
    pub async fn start_session(
        &self,
        session_id: &str,
        user_id: &str,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let session = [session_id.into(), user_id.into(), now.into(), expires_at.into()];
        let token = [token_hash.into(), session_id.into(), now.into()];
        self.execute_together(&[
            ("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)", &session),
            ("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)", &token),
        ])
        .await
    }

    /// Spends `old_hash` and stores `new_hash` in its session, or detects reuse
    /// and revokes the session. One transaction; safe across instances.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<Refreshed, StoreError> {
        let (outcome, revoked) = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let spent: Option<String> = sqlx::query_scalar(
                "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING session_id",
            )
            .bind(old_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match spent {
                None => {
                    let known: Option<String> =
                        sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                            .bind(old_hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match known {
                        Some(session_id) => {
                            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                                .bind(&session_id)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            (Refreshed::Reused, Some(session_id))
                        }
                        None => (Refreshed::Invalid, None),
                    }
                }
                Some(session_id) => {
                    let user: Option<String> = sqlx::query_scalar(
                        "SELECT user_id FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
                    )
                    .bind(&session_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match user {
                        Some(user_id) => {
                            sqlx::query(
                                "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
                            )
                            .bind(new_hash)
                            .bind(&session_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            (Refreshed::Rotated { session_id, user_id }, None)
                        }
                        None => (Refreshed::Invalid, None),
                    }
                }
            };
            tx.commit().await?;
            outcome
        });
        if let Some(session_id) = revoked {
            self.announce_session_change(SessionChange::Session(session_id)).await;
        }
        Ok(outcome)
    }

    /// Whether the session is neither revoked nor expired and its user exists and is not disabled.
    pub async fn session_in_force(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let found: i64 = on_reader!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND NOT u.disabled",
            )
            .bind(session_id)
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(found > 0)
    }

    pub async fn revoke_session(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        let sql = "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
        self.execute(sql, &[session_id.into(), now.into()]).await?;
        self.announce_session_change(SessionChange::Session(session_id.to_owned())).await;
        Ok(())
    }

    pub async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<(), StoreError> {
        let sql = "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
        self.execute(sql, &[user_id.into(), now.into()]).await?;
        self.announce_session_change(SessionChange::User(user_id.to_owned())).await;
        Ok(())
    }

    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        Ok(on_reader!(self, |pool| {
            sqlx::query_as(
                "SELECT kid, algorithm, private_key, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Stores a new key and retires the others at `now`.
    pub async fn add_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        let retire = [key.created_at.into()];
        let insert = [
            (&key.kid).into(),
            (&key.algorithm).into(),
            (&key.private_key).into(),
            (&key.public_key).into(),
            key.created_at.into(),
        ];
        self.execute_together(&[
            ("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL", &retire),
            (
                "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &insert,
            ),
        ])
        .await
    }

    pub async fn insert_email_token(
        &self,
        token_hash: &str,
        user_id: &str,
        email: &str,
        purpose: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO email_tokens (token_hash, user_id, email, purpose, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        let params = [token_hash.into(), user_id.into(), email.into(), purpose.into(), now.into(), expires_at.into()];
        self.execute(sql, &params).await.map(|_| ())
    }

    /// Spends an unexpired, unused email token; returns its user and the
    /// address it was sent to.
    pub async fn consume_email_token(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        Ok(on_writer!(self, |pool| {
            sqlx::query_as(
                "UPDATE email_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 \
                 AND used_at IS NULL AND expires_at > $3 RETURNING user_id, email",
            )
            .bind(token_hash)
            .bind(purpose)
            .bind(now)
            .fetch_optional(pool)
            .await?
        }))
    }
}
