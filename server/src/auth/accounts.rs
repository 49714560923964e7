//! Accounts: sign-up, sign-in (password, anonymous, refresh token), sign-out,
//! profile changes (including upgrading an anonymous user in place), email
//! verification, password reset, and admin management of users and claims.

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::limits::{Action, RateLimits};
use super::mailer::{Mail, Mailer};
use super::password::{FirebaseHash, Passwords, MAX_PASSWORD_BYTES};
use super::tokens::{AccessClaims, Role, Tokens, RESERVED_CLAIMS};
use super::AuthError;
use crate::clock::now_micros;
use crate::config::AuthConfig;
use crate::ids::{random_id, secret_token, token_hash};
use crate::store::auth::{Refreshed, UserRow};
use crate::store::{Store, StoreError};

const MAX_EMAIL_BYTES: usize = 254;
const MAX_DISPLAY_NAME: usize = 256;
const MAX_CLAIMS_BYTES: usize = 1000;
const FAILED_SIGNIN_WINDOW_MICROS: i64 = 15 * 60 * 1_000_000;
const VERIFY_TOKEN_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A signed-in session as returned to the client.
#[derive(Debug)]
pub struct SignedIn {
    pub user: UserRow,
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in: u64,
}

/// Changes a signed-in user may make to their own account.
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub display_name: Option<Option<String>>,
    pub email: Option<String>,
    pub password: Option<SecretString>,
    pub current_password: Option<SecretString>,
}

/// Changes an admin may make to any account.
#[derive(Debug, Default)]
pub struct AdminChange {
    pub claims: Option<Value>,
    pub disabled: Option<bool>,
    pub email_verified: Option<bool>,
}

/// An account made by an admin (or an import), with a chosen id or a random one.
#[derive(Debug, Default)]
pub struct NewAccount {
    pub id: Option<String>,
    pub email: Option<String>,
    pub password: Option<SecretString>,
    /// A password hash to keep as it is (imported; see `password::verify`).
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub claims: Option<Value>,
    pub disabled: bool,
    /// When the account was made (imported accounts keep theirs).
    pub created_at: Option<i64>,
}

/// Longest chosen user id.
const MAX_USER_ID: usize = 128;

/// A chosen user id: 1–128 letters, digits, `-` and `_` (as Firebase uids in practice).
pub fn validate_user_id(id: &str) -> Result<(), AuthError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_USER_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(AuthError::invalid("id", "must be 1 to 128 letters, digits, `-` or `_`"))
    }
}

/// The auth service; cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    passwords: Passwords,
    tokens: Tokens,
    mailer: Arc<Mailer>,
    limits: Arc<RateLimits>,
    config: Arc<AuthConfig>,
    /// What runs around account creation (functions' `beforeSignUp`/`afterSignUp`).
    hooks: Option<Arc<dyn super::SignUpHooks>>,
}

/// Lower-cased, shaped like `local@domain.tld`, no spaces or control characters.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(AuthError::invalid("email", "is not a valid email address"))
    }
}

impl Accounts {
    pub fn new(
        store: Store,
        tokens: Tokens,
        mailer: Mailer,
        config: AuthConfig,
        hooks: Option<Arc<dyn super::SignUpHooks>>,
    ) -> Accounts {
        let limits = RateLimits::new(config.signin_per_minute, config.signup_per_minute, config.email_per_minute);
        // One hash per core: two 19 MiB hashes taking turns on one core evict
        // each other's memory from the caches, which made each sign-in cost
        // about 1.5 hashes of CPU (docs/benchmarks.md); more sign-ins queue.
        let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get());
        Accounts {
            store,
            passwords: Passwords::new(in_flight),
            tokens,
            mailer: Arc::new(mailer),
            limits: Arc::new(limits),
            config: Arc::new(config),
            hooks,
        }
    }

    /// Runs `beforeSignUp` for a new user; returns the custom claims it sets.
    async fn before_sign_up(&self, email: Option<&str>, anonymous: bool) -> Result<String, AuthError> {
        let Some(hooks) = &self.hooks else { return Ok("{}".into()) };
        match hooks.before(serde_json::json!({"email": email, "anonymous": anonymous})).await? {
            Some(claims) => validate_claims(&claims),
            None => Ok("{}".into()),
        }
    }

    async fn after_sign_up(&self, user: &UserRow) {
        if let Some(hooks) = &self.hooks {
            let user = serde_json::json!({"uid": user.id, "email": user.email, "anonymous": user.anonymous});
            hooks.after(user).await;
        }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn check_password_policy(&self, password: &SecretString, field: &str) -> Result<(), AuthError> {
        let length = password.expose_secret().chars().count();
        if length < self.config.min_password_length {
            return Err(AuthError::invalid(
                field,
                &format!("must be at least {} characters", self.config.min_password_length),
            ));
        }
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::invalid(field, &format!("must be at most {MAX_PASSWORD_BYTES} bytes")));
        }
        Ok(())
    }

    pub async fn sign_up(&self, email: &str, password: SecretString, ip: IpAddr) -> Result<SignedIn, AuthError> {
        self.limits.check(Action::SignUp, ip)?;
        let email = normalize_email(email)?;
        self.check_password_policy(&password, "password")?;
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let claims = self.before_sign_up(Some(&email), false).await?;
        let user = new_user(Some(email), Some(self.passwords.hash(&password).await?), claims);
        self.store.insert_user(&user).await.map_err(|e| match e {
            StoreError::AlreadyExists => AuthError::EmailTaken,
            other => other.into(),
        })?;
        self.send_verification_mail(&user).await?;
        self.after_sign_up(&user).await;
        self.start_session(user).await
    }

    pub async fn sign_in_anonymously(&self, ip: IpAddr) -> Result<SignedIn, AuthError> {
        self.limits.check(Action::SignUp, ip)?;
        let claims = self.before_sign_up(None, true).await?;
        let user = new_user(None, None, claims);
        self.store.insert_user(&user).await?;
        self.after_sign_up(&user).await;
        self.start_session(user).await
    }

    /// Same answer and similar time for an unknown email and a wrong password.
    pub async fn sign_in(&self, email: &str, password: SecretString, ip: IpAddr) -> Result<SignedIn, AuthError> {
        self.limits.check(Action::SignIn, ip)?;
        // Failures are counted per address whether or not an account has it,
        // so a locked account and an unknown address answer alike.
        let email = normalize_email(email).unwrap_or_default();
        let user = if email.is_empty() { None } else { self.store.user_by_email(&email).await? };
        let now = now_micros();
        let window_start = now - FAILED_SIGNIN_WINDOW_MICROS;
        let failures = if email.is_empty() { None } else { self.store.failed_signins(&email).await? };
        if let Some((_, last_failed_at)) =
            failures.filter(|(count, last)| *count >= i64::from(self.config.max_failed_signins) && *last > window_start)
        {
            let wait = (last_failed_at - window_start) / 1_000_000;
            return Err(AuthError::RateLimited { retry_after_secs: wait.max(1) as u64 });
        }
        let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let imported = hash.is_some_and(FirebaseHash::is_firebase);
        let verified = match hash {
            Some(stored) if imported => self.passwords.verify_firebase(&password, stored).await?,
            other => self.passwords.verify(&password, other).await?,
        };
        if !verified {
            if !email.is_empty() {
                self.store.record_failed_signin(&email, now, window_start).await?;
            }
            return Err(AuthError::InvalidCredentials);
        }
        let mut user = user.ok_or(AuthError::InvalidCredentials)?;
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        if imported {
            // The first sign-in after an import moves the password to argon2id.
            user.password_hash = Some(self.passwords.hash(&password).await?);
            user.updated_at = now_micros();
            self.store.save_user(&user).await?;
        }
        if failures.is_some() {
            self.store.clear_failed_signins(&email).await?;
        }
        self.start_session(user).await
    }

    /// Spends a refresh token for a new pair; a spent token revokes its session.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<SignedIn, AuthError> {
        let new_token = SecretString::from(secret_token("rt_"));
        let outcome = self
            .store
            .rotate_refresh_token(
                &token_hash(refresh_token.expose_secret()),
                &token_hash(new_token.expose_secret()),
                now_micros(),
            )
            .await?;
        let (session_id, user_id) = match outcome {
            Refreshed::Rotated { session_id, user_id } => (session_id, user_id),
            Refreshed::Reused => return Err(AuthError::RefreshReused),
            Refreshed::Invalid => return Err(AuthError::InvalidCredentials),
        };
        let user = self.store.user_by_id(&user_id).await?.ok_or(AuthError::InvalidCredentials)?;
        if user.disabled {
            self.store.revoke_session(&session_id, now_micros()).await?;
            return Err(AuthError::Disabled);
        }
        let access_token = self.access_token(&user, &session_id)?;
        Ok(SignedIn { user, access_token, refresh_token: new_token, expires_in: self.tokens.ttl().as_secs() })
    }

    async fn start_session(&self, user: UserRow) -> Result<SignedIn, AuthError> {
        let session_id = random_id(20);
        let refresh_token = SecretString::from(secret_token("rt_"));
        let now = now_micros();
        let expires_at = now + self.config.refresh_ttl.as_micros() as i64;
        self.store
            .start_session(&session_id, &user.id, &token_hash(refresh_token.expose_secret()), now, expires_at)
            .await?;
        let access_token = self.access_token(&user, &session_id)?;
        Ok(SignedIn { user, access_token, refresh_token, expires_in: self.tokens.ttl().as_secs() })
    }

    fn access_token(&self, user: &UserRow, session_id: &str) -> Result<String, AuthError> {
        let custom: Map<String, Value> = serde_json::from_str(&user.claims).unwrap_or_default();
        let role = if custom.get("admin") == Some(&Value::Bool(true)) {
            Role::Admin
        } else if user.anonymous {
            Role::Anonymous
        } else {
            Role::User
        };
        self.tokens.issue(&user.id, session_id, role, user.email.as_deref(), user.email_verified, custom)
    }

    pub async fn sign_out(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        Ok(self.store.revoke_session(&claims.sid, now_micros()).await?)
    }

    pub async fn user(&self, id: &str) -> Result<UserRow, AuthError> {
        self.store.user_by_id(id).await?.ok_or(AuthError::UserNotFound)
    }

    /// Changes the caller's profile. Changing the email or the password ends
    /// every other session of the user and spends every outstanding
    /// verification and reset link; a new address is unverified until a link
    /// sent to it is used (and each such mail counts against the mail limits).
    pub async fn change_profile(
        &self,
        claims: &AccessClaims,
        change: ProfileChange,
        ip: IpAddr,
    ) -> Result<UserRow, AuthError> {
        let mut user = self.user(&claims.sub).await?;
        if let Some(name) = change.display_name {
            if name.as_ref().is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME) {
                return Err(AuthError::invalid(
                    "displayName",
                    &format!("must be at most {MAX_DISPLAY_NAME} characters"),
                ));
            }
            user.display_name = name;
        }
        let email = change.email.as_deref().map(normalize_email).transpose()?;
        if let Some(password) = &change.password {
            self.check_password_policy(password, "password")?;
        }
        let credentials_change = email.is_some() || change.password.is_some();
        let new_email = email.as_ref().is_some_and(|e| user.email.as_deref() != Some(e.as_str()));
        if let Some(address) = email.as_deref().filter(|_| new_email) {
            self.limits.check(Action::Email, ip)?;
            self.limits.check_recipient(address)?;
        }
        if credentials_change && user.anonymous {
            let (Some(email), Some(password)) = (email.clone(), change.password.as_ref()) else {
                return Err(AuthError::invalid(
                    "email",
                    "an anonymous user links an account with both email and password",
                ));
            };
            self.claim_email(&user, &email).await?;
            user.email = Some(email);
            user.password_hash = Some(self.passwords.hash(password).await?);
            user.anonymous = false;
            user.email_verified = false;
        } else if credentials_change {
            let current = change
                .current_password
                .as_ref()
                .ok_or_else(|| AuthError::invalid("currentPassword", "is required to change the email or password"))?;
            if !self.passwords.verify(current, user.password_hash.as_deref()).await? {
                return Err(AuthError::WrongCurrentPassword);
            }
            if let Some(email) = email.filter(|e| user.email.as_deref() != Some(e)) {
                self.claim_email(&user, &email).await?;
                user.email = Some(email);
                user.email_verified = false;
            }
            if let Some(password) = &change.password {
                user.password_hash = Some(self.passwords.hash(password).await?);
            }
        }
        user.updated_at = now_micros();
        self.store.save_user(&user).await.map_err(|e| match e {
            StoreError::AlreadyExists => AuthError::EmailTaken,
            other => other.into(),
        })?;
        if credentials_change {
            let now = now_micros();
            self.store.revoke_email_tokens(&user.id, now).await?;
            self.store.revoke_other_sessions(&user.id, &claims.sid, now).await?;
        }
        if new_email {
            self.send_verification_mail(&user).await?;
        }
        Ok(user)
    }

    async fn claim_email(&self, user: &UserRow, email: &str) -> Result<(), AuthError> {
        match self.store.user_by_email(email).await? {
            Some(other) if other.id != user.id => Err(AuthError::EmailTaken),
            _ => Ok(()),
        }
    }

    /// Sends a verification link to the signed-in user's email.
    pub async fn request_verification(&self, claims: &AccessClaims, ip: IpAddr) -> Result<(), AuthError> {
        self.limits.check(Action::Email, ip)?;
        let user = self.user(&claims.sub).await?;
        let Some(email) = &user.email else {
            return Err(AuthError::invalid("email", "this account has no email address"));
        };
        self.limits.check_recipient(email)?;
        self.send_verification_mail(&user).await
    }

    async fn send_verification_mail(&self, user: &UserRow) -> Result<(), AuthError> {
        let Some(email) = &user.email else { return Ok(()) };
        let token = self.email_token(user, email, "verify", VERIFY_TOKEN_MICROS).await?;
        let link = format!("{}/v1/auth/verify?token={token}", self.config.public_url);
        let body =
            format!("Confirm your email address by opening this link:\n\n{link}\n\nThe link works once, for 24 hours.");
        self.mailer.send(Mail { to: email.clone(), subject: "Confirm your email address".into(), body }).await
    }

    /// A single-use link token for `purpose`, bound to the address it is sent to.
    async fn email_token(
        &self,
        user: &UserRow,
        email: &str,
        purpose: &str,
        lifetime: i64,
    ) -> Result<String, AuthError> {
        let token = secret_token("et_");
        let now = now_micros();
        self.store.insert_email_token(&token_hash(&token), &user.id, email, purpose, now, now + lifetime).await?;
        Ok(token)
    }

    /// Spends a link token and returns its user, if it was sent to the
    /// user's current address.
    async fn consume_email_token(&self, token: &str, purpose: &str) -> Result<UserRow, AuthError> {
        let (user_id, sent_to) = self
            .store
            .consume_email_token(&token_hash(token), purpose, now_micros())
            .await?
            .ok_or(AuthError::BadEmailToken)?;
        let user = self.user(&user_id).await.map_err(|_| AuthError::BadEmailToken)?;
        if sent_to.is_none() || sent_to != user.email {
            return Err(AuthError::BadEmailToken);
        }
        Ok(user)
    }

    pub async fn verify_email(&self, token: &str) -> Result<UserRow, AuthError> {
        let mut user = self.consume_email_token(token, "verify").await?;
        user.email_verified = true;
        user.updated_at = now_micros();
        self.store.save_user(&user).await?;
        Ok(user)
    }

    /// Emails a reset link when the account exists; answers the same either way.
    pub async fn request_recovery(&self, email: &str, ip: IpAddr) -> Result<(), AuthError> {
        self.limits.check(Action::Email, ip)?;
        let email = normalize_email(email)?;
        let Some(user) = self.store.user_by_email(&email).await? else { return Ok(()) };
        if self.limits.check_recipient(&email).is_err() {
            return Ok(());
        }
        let token = self.email_token(&user, &email, "recover", self.config.recovery_ttl.as_micros() as i64).await?;
        let link = format!("{}/reset-password?token={token}", self.config.public_url);
        let body = format!(
            "Someone asked to reset the password of this account. To choose a new password, open:\n\n{link}\n\n\
             The link works once, for a limited time. If it was not you, ignore this message."
        );
        self.mailer.send(Mail { to: email, subject: "Reset your password".into(), body }).await
    }

    /// Sets a new password with a reset token and ends every session of the user.
    pub async fn confirm_recovery(&self, token: &str, password: SecretString) -> Result<(), AuthError> {
        self.check_password_policy(&password, "password")?;
        let mut user = self.consume_email_token(token, "recover").await?;
        user.password_hash = Some(self.passwords.hash(&password).await?);
        user.updated_at = now_micros();
        self.store.save_user(&user).await?;
        if let Some(email) = &user.email {
            self.store.clear_failed_signins(email).await?;
        }
        let now = now_micros();
        self.store.revoke_email_tokens(&user.id, now).await?;
        Ok(self.store.revoke_user_sessions(&user.id, now).await?)
    }

    /// Creates an account as an admin: no sign-up hooks, no mail, no session.
    pub async fn create_account(&self, account: NewAccount) -> Result<UserRow, AuthError> {
        let id = match account.id {
            Some(id) => {
                validate_user_id(&id)?;
                if self.store.user_by_id(&id).await?.is_some() {
                    return Err(AuthError::UserIdTaken);
                }
                id
            }
            None => random_id(20),
        };
        let email = account.email.as_deref().map(normalize_email).transpose()?;
        if let Some(email) = &email {
            if self.store.user_by_email(email).await?.is_some() {
                return Err(AuthError::EmailTaken);
            }
        }
        if account.display_name.as_ref().is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME) {
            return Err(AuthError::invalid("displayName", &format!("must be at most {MAX_DISPLAY_NAME} characters")));
        }
        let password_hash = match (&account.password, account.password_hash) {
            (Some(password), _) => {
                self.check_password_policy(password, "password")?;
                Some(self.passwords.hash(password).await?)
            }
            (None, hash) => hash,
        };
        let claims = account.claims.as_ref().map(validate_claims).transpose()?.unwrap_or_else(|| "{}".into());
        let mut user = new_user(email, password_hash, claims);
        user.id = id;
        user.anonymous = false;
        user.email_verified = account.email_verified;
        user.display_name = account.display_name;
        user.disabled = account.disabled;
        if let Some(created_at) = account.created_at {
            user.created_at = created_at;
        }
        self.store.insert_user(&user).await.map_err(|e| match e {
            StoreError::AlreadyExists => AuthError::UserIdTaken,
            other => other.into(),
        })?;
        Ok(user)
    }

    pub async fn list_users(&self, after: &str, limit: i64, search: Option<&str>) -> Result<Vec<UserRow>, AuthError> {
        Ok(self.store.list_users(after, limit.clamp(1, 1000), search).await?)
    }

    pub async fn admin_change(&self, id: &str, change: AdminChange) -> Result<UserRow, AuthError> {
        let mut user = self.user(id).await?;
        if let Some(claims) = change.claims {
            user.claims = validate_claims(&claims)?;
        }
        if let Some(verified) = change.email_verified {
            user.email_verified = verified;
        }
        if let Some(disabled) = change.disabled {
            user.disabled = disabled;
        }
        user.updated_at = now_micros();
        self.store.save_user(&user).await?;
        if change.disabled == Some(true) {
            self.store.revoke_user_sessions(&user.id, now_micros()).await?;
        }
        Ok(user)
    }

    pub async fn delete_user(&self, id: &str) -> Result<(), AuthError> {
        if self.store.delete_user(id).await? {
            Ok(())
        } else {
            Err(AuthError::UserNotFound)
        }
    }

    pub async fn revoke_sessions(&self, id: &str) -> Result<(), AuthError> {
        self.user(id).await?;
        Ok(self.store.revoke_user_sessions(id, now_micros()).await?)
    }
}

/// A new account; without an email it is anonymous.
fn new_user(email: Option<String>, password_hash: Option<String>, claims: String) -> UserRow {
    let now = now_micros();
    UserRow {
        id: random_id(20),
        anonymous: email.is_none(),
        email,
        password_hash,
        email_verified: false,
        display_name: None,
        claims,
        disabled: false,
        failed_signins: 0,
        last_failed_at: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Custom claims: a JSON object of at most 1000 bytes without reserved names.
fn validate_claims(claims: &Value) -> Result<String, AuthError> {
    let Value::Object(map) = claims else {
        return Err(AuthError::invalid("claims", "must be a JSON object"));
    };
    if let Some(name) = map.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
        return Err(AuthError::invalid("claims", &format!("`{name}` is reserved")));
    }
    let text = claims.to_string();
    if text.len() > MAX_CLAIMS_BYTES {
        return Err(AuthError::invalid("claims", &format!("must be at most {MAX_CLAIMS_BYTES} bytes as JSON")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(normalize_email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "a b@x.io", "ann@localhost", "a@b@c.io", "ann@x.io."] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_are_checked() {
        assert!(validate_claims(&serde_json::json!({"admin": true})).is_ok());
        assert!(validate_claims(&serde_json::json!({"sub": "x"})).is_err());
        assert!(validate_claims(&serde_json::json!([1])).is_err());
        assert!(validate_claims(&serde_json::json!({"big": "x".repeat(2000)})).is_err());
    }
}
