//! The stable error codes of the public API and the one table mapping them to
//! HTTP statuses. Every module's error enum says which code it is (`code()`);
//! the gateway (`http::error`) renders `{"error": {"code", "message"}}`.

use std::fmt;

/// A stable, client-visible error code (the `error.code` field on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PayloadTooLarge,
    MethodNotAllowed,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission-denied",
            ErrorCode::NotFound => "not-found",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::FailedPrecondition => "failed-precondition",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::MethodNotAllowed => "method-not-allowed",
            ErrorCode::ResourceExhausted => "resource-exhausted",
            ErrorCode::DeadlineExceeded => "deadline-exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for parsing wire names.
    const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ResourceExhausted,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code with this wire name, if any.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The one code → HTTP status table.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::FailedPrecondition => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every module's error enum so the gateway can render it.
///
/// `public_message` must never contain secrets; for `Internal` errors the
/// gateway logs `log_detail` with an id and sends only the id.
pub trait ApiFailure: fmt::Display {
    fn code(&self) -> ErrorCode;

    /// Extra headers (for example `Retry-After`).
    fn retry_after_secs(&self) -> Option<u64> {
        None
    }
}
