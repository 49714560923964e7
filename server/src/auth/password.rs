//! Password hashing with argon2id at OWASP parameters (m = 19 MiB, t = 2,
//! p = 1), on the blocking pool, with a bound on hashes in flight so a burst of
//! sign-ins queues instead of exhausting memory. Unknown accounts are checked
//! against a dummy hash so they cost the same time as a wrong password.
//! Hashes imported from Firebase Auth (its modified scrypt) verify too, until
//! the first sign-in replaces them.

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

    /// Whether `password` matches an imported Firebase hash (see
    /// `firebase_hash`); `false` for any other stored form.
    pub async fn verify_firebase(&self, password: &SecretString, stored: &str) -> Result<bool, AuthError> {
        let Some(parts) = FirebaseHash::parse(stored) else { return Ok(false) };
        let password = password.clone();
        self.run(move || {
            Ok(firebase_scrypt::verify_password(
                password.expose_secret(),
                &parts.hash,
                &parts.salt,
                &parts.salt_separator,
                &parts.signer_key,
                parts.rounds,
                parts.mem_cost,
            )
            .unwrap_or(false))
        })
        .await
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

/// The prefix of a password hash imported from Firebase Auth (its modified scrypt).
const FIREBASE_PREFIX: &str = "$firebase-scrypt$";

/// A Firebase Auth password hash with the project's hash parameters, as
/// `firebase auth:export` and the console give them (all base64).
#[derive(Debug, Clone, PartialEq)]
pub struct FirebaseHash {
    pub hash: String,
    pub salt: String,
    pub salt_separator: String,
    pub signer_key: String,
    pub rounds: u32,
    pub mem_cost: u32,
}

impl FirebaseHash {
    /// The stored form: `$firebase-scrypt$r=8$m=14$<separator>$<signer key>$<salt>$<hash>`
    /// (base64 never contains `$`). It is replaced by an argon2id hash at
    /// the user's first successful sign-in.
    pub fn stored(&self) -> String {
        format!(
            "{FIREBASE_PREFIX}r={}$m={}${}${}${}${}",
            self.rounds, self.mem_cost, self.salt_separator, self.signer_key, self.salt, self.hash
        )
    }

    pub fn parse(stored: &str) -> Option<FirebaseHash> {
        let rest = stored.strip_prefix(FIREBASE_PREFIX)?;
        let parts: Vec<&str> = rest.split('$').collect();
        let [rounds, mem, separator, key, salt, hash] = parts.as_slice() else { return None };
        Some(FirebaseHash {
            rounds: rounds.strip_prefix("r=")?.parse().ok()?,
            mem_cost: mem.strip_prefix("m=")?.parse().ok()?,
            salt_separator: (*separator).to_owned(),
            signer_key: (*key).to_owned(),
            salt: (*salt).to_owned(),
            hash: (*hash).to_owned(),
        })
    }

    /// Whether a stored hash is an imported Firebase one.
    pub fn is_firebase(stored: &str) -> bool {
        stored.starts_with(FIREBASE_PREFIX)
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

    /// The public test vector of Firebase's scrypt (github.com/firebase/scrypt).
    #[tokio::test]
    async fn firebase_hashes_verify_with_the_public_test_vector() {
        let imported = FirebaseHash {
            hash: "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==".into(),
            salt: "42xEC+ixf3L2lw==".into(),
            salt_separator: "Bw==".into(),
            signer_key: "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA=="
                .into(),
            rounds: 8,
            mem_cost: 14,
        };
        let stored = imported.stored();
        assert_eq!(FirebaseHash::parse(&stored), Some(imported));
        let passwords = Passwords::new(1);
        let right = SecretString::from("user1password".to_owned());
        assert!(passwords.verify_firebase(&right, &stored).await.unwrap());
        assert!(!passwords.verify_firebase(&SecretString::from("wrong".to_owned()), &stored).await.unwrap());
        assert!(!passwords.verify_firebase(&right, "$argon2id$whatever").await.unwrap());
    }
}
