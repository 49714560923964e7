//! Password hashing with argon2id at OWASP parameters (m = 19 MiB, t = 2,
//! p = 1), on the blocking pool, with a bound on hashes in flight so a burst of
//! sign-ins queues instead of exhausting memory. Unknown accounts are checked
//! against a dummy hash so they cost the same time as a wrong password.

use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, Semaphore};

use super::AuthError;

/// Longest accepted password, in bytes (argon2 takes any length; this bounds work).
pub const MAX_PASSWORD_BYTES: usize = 256;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<OnceCell<String>>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Passwords {
    /// `in_flight`: most hashes computed at once (each takes 19 MiB).
    pub fn new(in_flight: usize) -> Passwords {
        Passwords { permits: Arc::new(Semaphore::new(in_flight.max(1))), dummy: Arc::new(OnceCell::new()) }
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, AuthError> {
        let password = password.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Internal(format!("password hashing failed: {e}")))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash, spends the same time and says no.
    pub async fn verify(&self, password: &SecretString, hash: Option<&str>) -> Result<bool, AuthError> {
        let has_account = hash.is_some();
        let hash = match hash {
            Some(hash) => hash.to_owned(),
            None => self.dummy_hash().await?,
        };
        let password = password.clone();
        let ok = self
            .run(move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|_| AuthError::Internal("stored password hash is corrupt".into()))?;
                Ok(argon2().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(ok && has_account)
    }

    async fn dummy_hash(&self) -> Result<String, AuthError> {
        let dummy = SecretString::from("not a real password".to_owned());
        self.dummy.get_or_try_init(|| self.hash(&dummy)).await.cloned()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self.permits.acquire().await.map_err(|_| AuthError::Internal("hasher closed".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_fail() {
        let passwords = Passwords::new(2);
        let secret = SecretString::from("correct horse".to_owned());
        let hash = passwords.hash(&secret).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(passwords.verify(&secret, Some(&hash)).await.unwrap());
        assert!(!passwords.verify(&SecretString::from("wrong".to_owned()), Some(&hash)).await.unwrap());
        assert!(!passwords.verify(&SecretString::from("not a real password".to_owned()), None).await.unwrap());
    }
}
