//! Authentication: who is calling. Owns the service key (admin access for
//! operators and servers) and the `Caller` every other part receives. It
//! decides identity only; what an identity may do is for each part (and, for
//! documents, the security rules).

pub mod api;
pub mod service_key;

use crate::error::{ApiFailure, ErrorCode};

/// The identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The service key: full access, bypasses rules.
    Service,
    /// No credentials.
    Public,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid or expired credentials")]
    InvalidCredentials,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedHeader,
}

impl ApiFailure for AuthError {
    fn code(&self) -> ErrorCode {
        match self {
            AuthError::InvalidCredentials | AuthError::MalformedHeader => {
                ErrorCode::Unauthenticated
            }
        }
    }
}
