//! HTTP side of auth: the `Caller` extractor, which reads
//! `Authorization: Bearer …` once per request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{AuthError, Caller};
use crate::app::AppState;
use crate::http::error::ApiError;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Caller::Public);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(AuthError::MalformedHeader)?;
        if state.service_key.matches(token) {
            return Ok(Caller::Service);
        }
        Err(AuthError::InvalidCredentials.into())
    }
}
