//! Sealed cursors. A cursor holds the sort keys and id of the document a page
//! ended after; it is encrypted and authenticated (ChaCha20-Poly1305) with a
//! key every instance on one database shares, and bound to its query's
//! collection and order as associated data. So a client can neither read the
//! values of a document it was not shown, nor forge a position, nor replay a
//! cursor against another query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::store::query::{Cursor, OrderBy};
use crate::store::{Store, StoreError};

/// The settings row holding the key (hex).
const SETTING: &str = "cursor_key";
const NONCE_BYTES: usize = 12;

/// Seals and opens cursors; cheap to clone.
#[derive(Clone)]
pub struct CursorSeal {
    cipher: ChaCha20Poly1305,
}

/// A cursor token as a client sent it, with the field it came in.
#[derive(Debug, Clone)]
pub struct CursorToken {
    pub field: &'static str,
    pub token: String,
}

impl CursorSeal {
    /// The key stored in the database, or a new one stored for every instance.
    pub async fn establish(store: &Store) -> Result<CursorSeal, StoreError> {
        if let Some(stored) = store.get_setting(SETTING).await? {
            return CursorSeal::from_hex(&stored);
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        if store.insert_setting_if_absent(SETTING, &hex::encode(key)).await? {
            return Ok(CursorSeal::new(&key));
        }
        // Another instance stored its key first: use that one.
        CursorSeal::from_hex(&store.get_setting(SETTING).await?.unwrap_or_default())
    }

    fn from_hex(stored: &str) -> Result<CursorSeal, StoreError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored, &mut key)
            .map_err(|_| StoreError::Internal(format!("setting {SETTING} is corrupt")))?;
        Ok(CursorSeal::new(&key))
    }

    pub fn new(key: &[u8; 32]) -> CursorSeal {
        CursorSeal { cipher: ChaCha20Poly1305::new(Key::from_slice(key)) }
    }

    /// The opaque token for a position in the query `(collection, order)`.
    pub fn seal(&self, collection: &str, order: &[OrderBy], cursor: &Cursor) -> String {
        // From the thread's CSPRNG (ChaCha, seeded and reseeded from the OS):
        // a system call per page cost about 1 % of a list.
        let mut nonce = [0u8; NONCE_BYTES];
        rand::thread_rng().fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(cursor).unwrap_or_default();
        let bound = binding(collection, order);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: bound.as_bytes() })
            .unwrap_or_default();
        let mut token = nonce.to_vec();
        token.extend(sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The position a token holds, if this server sealed it for this query.
    pub fn open(&self, token: &CursorToken, collection: &str, order: &[OrderBy]) -> Result<Cursor, String> {
        let refused = || format!("`{}`: not a cursor of this query from this server", token.field);
        let bytes = URL_SAFE_NO_PAD.decode(&token.token).map_err(|_| refused())?;
        if bytes.len() <= NONCE_BYTES {
            return Err(refused());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let bound = binding(collection, order);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: bound.as_bytes() })
            .map_err(|_| refused())?;
        let cursor: Cursor = serde_json::from_slice(&plain).map_err(|_| refused())?;
        if cursor.keys.len() != order.len() {
            return Err(refused());
        }
        Ok(cursor)
    }
}

/// What a cursor is bound to: the collection and the order of its query.
fn binding(collection: &str, order: &[OrderBy]) -> String {
    let mut text = collection.to_owned();
    for o in order {
        text.push_str(&format!("|{}:{:?}", o.field.segments().join("."), o.direction));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::{Direction, FieldPath, SortKey};

    fn token(text: String) -> CursorToken {
        CursorToken { field: "startAfter", token: text }
    }

    #[test]
    fn cursors_are_opaque_and_fit_only_their_own_query() {
        let seal = CursorSeal::new(&[7; 32]);
        let order = vec![OrderBy {
            field: FieldPath::parse("budget").unwrap_or_else(|| unreachable!()),
            direction: Direction::Asc,
        }];
        let cursor = Cursor {
            keys: vec![SortKey { rank: 2, num: 123456.0, text: String::new() }],
            collection: None,
            id: "secret-id".into(),
        };
        let sealed = seal.seal("ads", &order, &cursor);
        let bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap_or_default();
        let visible = String::from_utf8_lossy(&bytes);
        assert!(!visible.contains("secret-id") && !visible.contains("123456"), "{visible}");
        assert_eq!(seal.open(&token(sealed.clone()), "ads", &order).map(|c| c.id), Ok("secret-id".to_owned()));
        assert!(seal.open(&token(sealed.clone()), "other", &order).is_err());
        assert!(seal.open(&token(sealed.clone()), "ads", &[]).is_err());
        assert!(CursorSeal::new(&[8; 32]).open(&token(sealed.clone()), "ads", &order).is_err());
        let mut forged = bytes.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        assert!(seal.open(&token(URL_SAFE_NO_PAD.encode(forged)), "ads", &order).is_err());
        assert!(seal.open(&token("zzz".into()), "ads", &order).is_err());
    }
}
