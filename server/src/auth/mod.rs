//! Authentication: who is calling. Owns accounts (sign-up, sign-in, sessions
//! with rotating refresh tokens, email verification, password reset, admin
//! user management), access tokens and their keys, the service key, and the
//! `Caller` every other part receives. It decides identity only; what an
//! identity may do is for each part (and, for documents, the security rules).

pub mod accounts;
pub mod api;
pub mod limits;
pub mod mailer;
pub mod password;
pub mod service_key;
pub mod tokens;

use std::sync::Arc;

use crate::error::{ApiFailure, ErrorCode};
use crate::store::StoreError;
use tokens::{AccessClaims, Role};

/// The identity behind a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// The service key: full access, bypasses rules.
    Service,
    /// No credentials.
    Public,
    /// A signed-in user (possibly anonymous), from a verified access token.
    User(Arc<AccessClaims>),
}

impl Caller {
    /// The caller as functions see it (`ctx.auth`, `event.auth`): `{uid, token}`,
    /// `{uid: null, service: true}` for the service key, `null` when signed out.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Caller::User(claims) => serde_json::json!({"uid": claims.sub, "token": claims.as_ref()}),
            Caller::Service => serde_json::json!({"uid": null, "service": true, "token": {}}),
            Caller::Public => serde_json::Value::Null,
        }
    }

    /// `Ok` for admins (see `is_admin`), else `AuthError::AdminRequired`.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::AdminRequired)
        }
    }

    /// The service key, or a user whose token carries the `admin` claim.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Service => true,
            Caller::User(claims) => claims.role == Role::Admin,
            Caller::Public => false,
        }
    }
}

/// What tells who is calling from a bearer token: the access-token keys
/// and the service key. Cheap to clone; every HTTP part holds one.
#[derive(Clone)]
pub struct Authenticator {
    tokens: tokens::Tokens,
    service_key: service_key::ServiceKey,
}

impl Authenticator {
    pub fn new(tokens: tokens::Tokens, service_key: service_key::ServiceKey) -> Authenticator {
        Authenticator { tokens, service_key }
    }

    /// The caller a bearer token stands for: a JWT access token or the service key.
    pub async fn identify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.contains('.') {
            return Ok(Caller::User(self.tokens.verify(token).await?));
        }
        if self.service_key.matches(token) {
            return Ok(Caller::Service);
        }
        Err(AuthError::InvalidCredentials)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid or expired credentials")]
    InvalidCredentials,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedHeader,
    #[error("sign in first")]
    SignInRequired,
    #[error("this action needs an admin")]
    AdminRequired,
    #[error("field `{field}`: {problem}")]
    InvalidField { field: String, problem: String },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("a user with this id already exists")]
    UserIdTaken,
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    #[error("this account is disabled")]
    Disabled,
    #[error("this refresh token was already used; the session is revoked")]
    RefreshReused,
    #[error("the link is invalid, used or expired")]
    BadEmailToken,
    #[error("no such user")]
    UserNotFound,
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A `beforeSignUp` function refused the account.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Functions that run around account creation (`beforeSignUp`, `afterSignUp`),
/// provided by the functions part; auth only calls them.
pub trait SignUpHooks: Send + Sync {
    /// Before the account exists: `Err` refuses it, `Ok(Some(claims))` sets custom claims.
    fn before(
        &self,
        user: serde_json::Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<serde_json::Value>, AuthError>> + Send>>;
    /// After the account was created: runs asynchronously, at least once.
    fn after(&self, user: serde_json::Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

impl AuthError {
    pub fn invalid(field: &str, problem: &str) -> AuthError {
        AuthError::InvalidField { field: field.to_owned(), problem: problem.to_owned() }
    }
}

impl ApiFailure for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            AuthError::InvalidCredentials
            | AuthError::MalformedHeader
            | AuthError::SignInRequired
            | AuthError::RefreshReused => ErrorCode::Unauthenticated,
            AuthError::AdminRequired | AuthError::Disabled | AuthError::WrongCurrentPassword => {
                ErrorCode::PermissionDenied
            }
            AuthError::InvalidField { .. } | AuthError::InvalidRequest(_) | AuthError::BadEmailToken => {
                ErrorCode::InvalidArgument
            }
            AuthError::EmailTaken | AuthError::UserIdTaken => ErrorCode::AlreadyExists,
            AuthError::UserNotFound => ErrorCode::NotFound,
            AuthError::RateLimited { .. } => ErrorCode::ResourceExhausted,
            AuthError::Refused { code, .. } => *code,
            AuthError::Store(e) => e.code(),
            AuthError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}
