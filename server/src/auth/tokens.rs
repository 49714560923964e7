//! Access tokens: short-lived JWTs signed with EdDSA (Ed25519) keys kept in
//! the database so every instance shares them, or HS256 with a configured
//! secret. Publishes the public keys as a JWKS, rotates keys (retired keys
//! stay published until their last tokens expire), and verifies tokens with
//! a cache so the hot path costs a hash-map lookup, never a database read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::AuthError;
use crate::clock::{now_micros, now_secs};
use crate::store::auth::SigningKeyRow;
use crate::store::Store;

/// Claim names Nimbus sets itself; custom claims may not use them.
pub const RESERVED_CLAIMS: &[&str] =
    &["sub", "iat", "exp", "nbf", "iss", "aud", "jti", "sid", "role", "email", "email_verified"];

const CACHE_LIMIT: usize = 50_000;
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// Seconds a token is still taken after its `exp` (clock skew between instances).
const EXPIRY_LEEWAY_SECS: i64 = 5;

/// Whether a token with this `exp` has expired by the server's clock.
fn expired(exp: i64) -> bool {
    exp + EXPIRY_LEEWAY_SECS < now_secs()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Anonymous,
    Admin,
}

/// The claims of a verified access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub sid: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    /// Custom claims, at the top level of the token.
    #[serde(flatten)]
    pub custom: Map<String, Value>,
    /// The claims as security rules see them (`request.auth`), converted on
    /// first use. Verified claims are cached per token, so a token's claims
    /// are converted once, not on every request.
    #[serde(skip)]
    pub rules_view: RulesView,
}

/// A derived value cached with the claims; it takes no part in comparing or printing them.
#[derive(Clone, Default)]
pub struct RulesView(OnceLock<Arc<nimbus_rules_lang::Auth>>);

impl PartialEq for RulesView {
    fn eq(&self, _: &RulesView) -> bool {
        true
    }
}

impl std::fmt::Debug for RulesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulesView")
    }
}

impl AccessClaims {
    /// `request.auth` for these claims.
    pub fn rules_auth(&self) -> Arc<nimbus_rules_lang::Auth> {
        self.rules_view
            .0
            .get_or_init(|| {
                let token = serde_json::to_value(self).unwrap_or(Value::Null);
                Arc::new(nimbus_rules_lang::Auth::new(&self.sub, &token))
            })
            .clone()
    }
}

enum Keys {
    EdDsa { signing_kid: String, signing: EncodingKey, verifying: HashMap<String, DecodingKey>, jwks: Value },
    Hs256 { encoding: EncodingKey, decoding: DecodingKey },
}

const HS256_KID: &str = "hs256";

/// Issues and verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    issuer: String,
    audience: String,
    ttl: Duration,
    keys: RwLock<Arc<Keys>>,
    last_reload: Mutex<Instant>,
    cache: Mutex<HashMap<String, Arc<AccessClaims>>>,
}

impl Tokens {
    /// Loads the signing keys, creating the first one on a new database.
    pub async fn start(
        store: Store,
        issuer: String,
        audience: String,
        ttl: Duration,
        secret: Option<&SecretString>,
    ) -> Result<Tokens, AuthError> {
        let keys = match secret {
            Some(secret) => Keys::Hs256 {
                encoding: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
                decoding: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            },
            None => {
                if !store.signing_keys().await?.iter().any(|k| k.retired_at.is_none()) {
                    store.add_signing_key(&new_key()?).await?;
                }
                build_keys(&store.signing_keys().await?, ttl)?
            }
        };
        let inner = Inner {
            store,
            issuer,
            audience,
            ttl,
            keys: RwLock::new(Arc::new(keys)),
            last_reload: Mutex::new(Instant::now()),
            cache: Mutex::new(HashMap::new()),
        };
        Ok(Tokens { inner: Arc::new(inner) })
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    fn keys(&self) -> Arc<Keys> {
        self.inner.keys.read().map(|k| k.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Signs an access token carrying `custom` claims at the top level.
    pub fn issue(
        &self,
        user_id: &str,
        session_id: &str,
        role: Role,
        email: Option<&str>,
        email_verified: bool,
        custom: Map<String, Value>,
    ) -> Result<String, AuthError> {
        let iat = now_secs();
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            iat,
            exp: iat + self.inner.ttl.as_secs() as i64,
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            sid: session_id.to_owned(),
            role,
            email: email.map(str::to_owned),
            email_verified,
            custom,
            rules_view: RulesView::default(),
        };
        let keys = self.keys();
        let (header, key) = match keys.as_ref() {
            Keys::EdDsa { signing_kid, signing, .. } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(signing_kid.clone());
                (header, signing)
            }
            Keys::Hs256 { encoding, .. } => {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some(HS256_KID.to_owned());
                (header, encoding)
            }
        };
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| AuthError::Internal(format!("signing failed: {e}")))
    }

    /// Verifies signature, algorithm, key id, issuer, audience and expiry.
    pub async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, AuthError> {
        if let Some(claims) = self.cached(token) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidCredentials)?;
        let kid = header.kid.ok_or(AuthError::InvalidCredentials)?;
        let mut keys = self.keys();
        if !has_kid(&keys, &kid) && self.reload_if_due().await? {
            keys = self.keys();
        }
        let (algorithm, key) = match keys.as_ref() {
            Keys::EdDsa { verifying, .. } => {
                (Algorithm::EdDSA, verifying.get(&kid).ok_or(AuthError::InvalidCredentials)?)
            }
            Keys::Hs256 { decoding, .. } if kid == HS256_KID => (Algorithm::HS256, decoding),
            Keys::Hs256 { .. } => return Err(AuthError::InvalidCredentials),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        // Expiry is checked against the server's clock (crate::clock), not the library's.
        validation.validate_exp = false;
        let data =
            jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|_| AuthError::InvalidCredentials)?;
        if expired(data.claims.exp) {
            return Err(AuthError::InvalidCredentials);
        }
        let claims = Arc::new(data.claims);
        self.remember(token, claims.clone());
        Ok(claims)
    }

    fn cached(&self, token: &str) -> Option<Arc<AccessClaims>> {
        let cache = self.inner.cache.lock().ok()?;
        cache.get(token).filter(|c| !expired(c.exp)).cloned()
    }

    fn remember(&self, token: &str, claims: Arc<AccessClaims>) {
        if let Ok(mut cache) = self.inner.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, c| !expired(c.exp));
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(token.to_owned(), claims);
        }
    }

    /// Re-reads keys from the database (another instance may have rotated),
    /// at most every few seconds. Returns whether it reloaded.
    async fn reload_if_due(&self) -> Result<bool, AuthError> {
        {
            let mut last = self.inner.last_reload.lock().map_err(|_| AuthError::Internal("lock poisoned".into()))?;
            if last.elapsed() < RELOAD_AT_MOST_EVERY {
                return Ok(false);
            }
            *last = Instant::now();
        }
        self.reload().await?;
        Ok(true)
    }

    async fn reload(&self) -> Result<(), AuthError> {
        if matches!(self.keys().as_ref(), Keys::Hs256 { .. }) {
            return Ok(());
        }
        let keys = build_keys(&self.inner.store.signing_keys().await?, self.inner.ttl)?;
        if let Ok(mut slot) = self.inner.keys.write() {
            *slot = Arc::new(keys);
        }
        Ok(())
    }

    /// Makes a new signing key; the old ones stay published until their tokens expire.
    pub async fn rotate(&self) -> Result<String, AuthError> {
        if matches!(self.keys().as_ref(), Keys::Hs256 { .. }) {
            return Err(AuthError::InvalidRequest(
                "HS256 keys come from configuration and cannot be rotated here".into(),
            ));
        }
        let key = new_key()?;
        self.inner.store.add_signing_key(&key).await?;
        self.reload().await?;
        Ok(key.kid)
    }

    /// The public keys as a JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        match self.keys().as_ref() {
            Keys::EdDsa { jwks, .. } => jwks.clone(),
            Keys::Hs256 { .. } => json!({"keys": []}),
        }
    }
}

fn has_kid(keys: &Keys, kid: &str) -> bool {
    match keys {
        Keys::EdDsa { verifying, .. } => verifying.contains_key(kid),
        Keys::Hs256 { .. } => kid == HS256_KID,
    }
}

fn new_key() -> Result<SigningKeyRow, AuthError> {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = signing.to_pkcs8_der().map_err(|e| AuthError::Internal(format!("key encoding failed: {e}")))?;
    let mut kid = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut kid);
    Ok(SigningKeyRow {
        kid: URL_SAFE_NO_PAD.encode(kid),
        algorithm: "EdDSA".into(),
        private_key: STANDARD.encode(der.as_bytes()),
        public_key: URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes()),
        created_at: now_micros(),
        retired_at: None,
    })
}

/// The newest unretired key signs; every key whose tokens may still be live verifies.
fn build_keys(rows: &[SigningKeyRow], ttl: Duration) -> Result<Keys, AuthError> {
    let live_after = now_micros() - ttl.as_micros() as i64 - 60_000_000;
    let signing_row = rows
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by_key(|r| r.created_at)
        .ok_or_else(|| AuthError::Internal("no active signing key".into()))?;
    let der =
        STANDARD.decode(&signing_row.private_key).map_err(|_| AuthError::Internal("signing key is corrupt".into()))?;
    let mut verifying = HashMap::new();
    let mut published = Vec::new();
    for row in rows.iter().filter(|r| r.retired_at.is_none_or(|t| t > live_after)) {
        let key = DecodingKey::from_ed_components(&row.public_key)
            .map_err(|_| AuthError::Internal("verifying key is corrupt".into()))?;
        verifying.insert(row.kid.clone(), key);
        published.push(
            json!({"kty": "OKP", "crv": "Ed25519", "x": row.public_key, "kid": row.kid, "alg": "EdDSA", "use": "sig"}),
        );
    }
    Ok(Keys::EdDsa {
        signing_kid: signing_row.kid.clone(),
        signing: EncodingKey::from_ed_der(&der),
        verifying,
        jwks: json!({ "keys": published }),
    })
}
