//! Renders every failure as the one error shape
//! `{"error": {"code": "...", "message": "..."}}` with the status from
//! `error::ErrorCode`. Internal and unavailable errors are logged with an id and
//! the client gets only that id, never the underlying text.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{ApiFailure, ErrorCode};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), retry_after_secs: None }
    }

    /// The one way an error the client may not read reaches it: `detail` is
    /// logged with a new id, and the client gets `code` and only that id.
    pub fn hidden(code: ErrorCode, detail: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4();
        tracing::error!(error_id = %id, code = %code, "{detail}");
        let message = match code {
            ErrorCode::Unavailable => format!("service unavailable (id {id})"),
            _ => format!("internal error (id {id})"),
        };
        ApiError::new(code, message)
    }
}

impl<E: ApiFailure> From<E> for ApiError {
    fn from(failure: E) -> Self {
        let code = failure.code();
        let mut error = match code {
            ErrorCode::Internal | ErrorCode::Unavailable => ApiError::hidden(code, &failure),
            _ => ApiError::new(code, failure.to_string()),
        };
        error.retry_after_secs = failure.retry_after_secs();
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        response
    }
}

/// The fallback for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// The fallback for a known path asked with a method it does not serve.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
}

/// The answer to a request whose handler panicked: `500 internal` with an id
/// (the panic's text is logged with the id, never sent) and one more count in
/// `nimbus_http_panics_total`.
pub fn panicked(counter: &prometheus::IntCounter, panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    counter.inc();
    let detail = format!("a request handler panicked: {}", crate::supervise::panic_text(&*panic));
    ApiError::hidden(ErrorCode::Internal, &detail).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    async fn boom() -> &'static str {
        panic!("a bug holding a secret: hunter2")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_an_id_and_is_counted() {
        let counter = prometheus::IntCounter::new("panics", "test").unwrap_or_else(|e| panic!("{e}"));
        let seen = counter.clone();
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(move |panic| panicked(&seen, panic)));
        let request = axum::http::Request::builder().uri("/boom").body(Body::empty()).unwrap_or_default();
        let response = app.oneshot(request).await.unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(body["error"]["code"], "internal");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("internal error (id ") && !message.contains("hunter2"), "{message}");
        assert_eq!(counter.get(), 1);
    }
}
