//! Extractors owned by the gateway, so malformed input answers in the one
//! error shape: `ApiJson` (body), `ApiQuery` (query string). Messages name the
//! field and the expectation but never echo client values (they may be secrets).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::error::ErrorCode;

/// A JSON body; rejections become `400 invalid-argument` or `413`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => decode_value(value).map(ApiJson),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Decodes an already-parsed JSON value into `T`, naming the offending field.
pub fn decode_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = describe_serde_error(&e.into_inner().to_string());
        let message = if path == "." { reason } else { format!("field `{path}`: {reason}") };
        ApiError::new(ErrorCode::InvalidArgument, message)
    })
}

/// Keeps serde's explanation but drops any quoted client value from it.
fn describe_serde_error(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("missing field ") {
        return format!("missing field {rest}");
    }
    if let Some(rest) = text.strip_prefix("unknown field ") {
        return format!("unknown field {}", rest.split(',').next().unwrap_or(rest));
    }
    match text.split_once(", expected ") {
        Some((kind, expected)) => {
            let kind = kind.split(':').next().unwrap_or(kind);
            format!("{kind}, expected {expected}")
        }
        None => text.split(':').next().unwrap_or(text).to_owned(),
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::InvalidArgument, "expected Content-Type: application/json")
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            ErrorCode::InvalidArgument,
            format!("malformed JSON body: {}", syntax_position(&e.body_text())),
        ),
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        other => ApiError::new(ErrorCode::InvalidArgument, format!("unreadable request body ({})", other.status())),
    }
}

/// serde_json syntax errors end with "at line L column C"; keep that part.
fn syntax_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(at) => format!("syntax error{}", &text[at..]),
        None => "syntax error".into(),
    }
}

/// The address of the connected client (the TCP peer).
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| ClientIp(info.0.ip()))
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the client address is unknown"))
    }
}

/// A query string decoded into `T`; rejections become `400 invalid-argument`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| ApiQuery(q.0)).map_err(
            |e: QueryRejection| {
                let text = e.body_text();
                let reason = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                ApiError::new(ErrorCode::InvalidArgument, format!("query string: {}", describe_serde_error(reason)))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_never_echo_values() {
        let msg = describe_serde_error("invalid type: string \"hunter2\", expected u32");
        assert_eq!(msg, "invalid type, expected u32");
        assert!(!describe_serde_error("invalid value: string \"secret\", expected one of `a`").contains("secret"));
    }

    #[test]
    fn decode_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        let err = decode_value::<Body>(serde_json::json!({"inner": {"n": "x"}})).unwrap_err();
        assert_eq!(err.message, "field `inner.n`: invalid type, expected u32");
    }
}
