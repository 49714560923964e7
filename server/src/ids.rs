//! Random identifiers and secret tokens, and the one way tokens are hashed
//! for storage. Shared by documents (auto ids) and auth (user ids, refresh and
//! email tokens).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters from [A-Za-z0-9] (20 characters: about 119 bits).
pub fn random_id(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| ALPHANUMERIC[rng.gen_range(0..ALPHANUMERIC.len())] as char).collect()
}

/// A random (version 4) UUID from the thread's generator, without a system
/// call per id (event, job and invocation ids are made on every write and call).
pub fn uuid() -> String {
    uuid::Builder::from_random_bytes(rand::thread_rng().gen()).into_uuid().to_string()
}

/// A secret token: `prefix` + 256 random bits, URL-safe.
pub fn secret_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The form in which a secret token is stored and looked up.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_and_tokens_have_their_shape() {
        let id = super::random_id(20);
        assert!(id.len() == 20 && id.chars().all(|c| c.is_ascii_alphanumeric()));
        let token = super::secret_token("rt_");
        assert!(token.starts_with("rt_") && token.len() == 3 + 43);
        assert_eq!(super::token_hash("a"), super::token_hash("a"));
    }
}
