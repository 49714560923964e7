//! The gateway: builds the axum router from every part's `router()`, and wraps
//! it in the layers every request passes: request id, tracing span, metrics,
//! body size limit, CORS. Owns error rendering (`error`), the extractors that
//! keep malformed input in the error shape (`extract`), health and metrics.

pub mod error;
pub mod extract;
pub mod health;
pub mod idle;
pub mod metrics;
pub mod openapi;
pub mod serve;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::config::CorsOrigins;
use crate::error::ErrorCode;
use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface of one Nimbus process.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/v1/openapi.json", get(openapi::openapi))
        .merge(crate::documents::api::router())
        .merge(crate::auth::api::router())
        .merge(crate::rules::api::router())
        .merge(crate::functions::api::router())
        .merge(crate::triggers::api::router())
        .merge(crate::realtime::api::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed);
    let body_limit = state.config.body_limit;
    let panics = state.metrics.panics.clone();
    api.layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(CatchPanicLayer::custom(move |panic| error::panicked(&panics, panic)))
        .layer(middleware::from_fn_with_state(state.clone(), reject_oversize_bodies))
        .layer(RequestBodyTimeoutLayer::new(state.config.http.body_timeout))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors_layer(&state.config.cors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unsafe_request_id))
        .with_state(state)
}

/// Longest client-supplied request id kept.
const MAX_REQUEST_ID: usize = 64;

/// A client's `x-request-id` is kept only when it is short and made of safe
/// characters (letters, digits, `-`, `_`, `.`); otherwise it is dropped and
/// one is generated, so a client cannot forge fields in log lines.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let safe = |id: &[u8]| {
        !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let headers = request.headers_mut();
    if headers.get_all(REQUEST_ID).iter().count() > 1 || headers.get(REQUEST_ID).is_some_and(|v| !safe(v.as_bytes())) {
        headers.remove(REQUEST_ID);
    }
    request
}

/// Answers `413` in the error shape when the declared length is over the limit;
/// bodies without a length are cut by `DefaultBodyLimit` in the extractors.
async fn reject_oversize_bodies(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > state.config.body_limit as u64 => {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is over {} bytes", state.config.body_limit))
                .into_response()
        }
        _ => next.run(request).await,
    }
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH, header::IF_NONE_MATCH])
        .expose_headers([header::ETAG, header::RETRY_AFTER, REQUEST_ID])
        .max_age(Duration::from_secs(3600))
}
