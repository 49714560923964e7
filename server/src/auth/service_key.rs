//! The service key: full admin access, presented as `Authorization: Bearer <key>`.
//! Taken from configuration when set; otherwise generated at first start,
//! printed once, and kept only as a SHA-256 hash in the shared settings table
//! (so every instance on one database accepts the same key).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

const SETTING: &str = "service_key_sha256";

/// Checks presented keys against the one accepted key's hash.
#[derive(Clone)]
pub struct ServiceKey {
    sha256: [u8; 32],
}

impl ServiceKey {
    /// Uses the configured key, or the stored hash, or makes a new key. A newly
    /// made key is returned once so the caller can show it to the operator.
    pub async fn establish(
        configured: Option<&SecretString>,
        store: &Store,
    ) -> Result<(ServiceKey, Option<SecretString>), StoreError> {
        if let Some(key) = configured {
            return Ok((ServiceKey { sha256: digest(key.expose_secret()) }, None));
        }
        if let Some(stored) = store.get_setting(SETTING).await? {
            return Ok((ServiceKey::from_stored(&stored)?, None));
        }
        let key = generate();
        let hash = digest(&key);
        if store.insert_setting_if_absent(SETTING, &hex::encode(hash)).await? {
            return Ok((ServiceKey { sha256: hash }, Some(SecretString::from(key))));
        }
        // Another instance stored its key first: use that one.
        let stored = store.get_setting(SETTING).await?.unwrap_or_default();
        Ok((ServiceKey::from_stored(&stored)?, None))
    }

    fn from_stored(stored: &str) -> Result<ServiceKey, StoreError> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(stored, &mut sha256)
            .map_err(|_| StoreError::Internal(format!("setting {SETTING} is corrupt")))?;
        Ok(ServiceKey { sha256 })
    }

    /// Whether `presented` is the service key (compares hashes, not the key).
    pub fn matches(&self, presented: &str) -> bool {
        let presented = digest(presented);
        presented.iter().zip(self.sha256.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("nsk_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_key() {
        let key = ServiceKey { sha256: digest("nsk_right") };
        assert!(key.matches("nsk_right"));
        assert!(!key.matches("nsk_wrong"));
        assert!(generate().len() > 40);
    }
}
