//! The gateway toolkit, which knows no part of the product: the layers every
//! request passes (request id, tracing span, metrics, panics, body size and
//! time limits, CORS) around the routes `app` assembles, error rendering
//! (`error`), the extractors that keep malformed input in the error shape
//! (`extract`), the accept loop (`serve`, `idle`), health, the metrics registry,
//! and the web app's static files (`files`).

pub mod error;
pub mod extract;
pub mod files;
pub mod health;
pub mod idle;
pub mod metrics;
pub mod openapi;
pub mod serve;

use std::sync::Arc;
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

use crate::config::CorsOrigins;
use crate::error::ErrorCode;
use error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the gateway's layers need.
pub struct Gateway {
    pub body_limit: usize,
    pub body_timeout: Duration,
    pub cors: CorsOrigins,
    pub metrics: Arc<metrics::Metrics>,
    /// The web app's folder, served for paths no route matches.
    pub static_dir: Option<std::path::PathBuf>,
}

/// Wraps the parts' routes (`api`, assembled by `app`) in the layers every
/// request passes, and adds what no part owns: `/healthz` and the OpenAPI document.
pub fn gateway(api: Router, settings: Gateway) -> Router {
    let panics = settings.metrics.panics.clone();
    let api = api.route("/healthz", get(health::healthz)).route("/v1/openapi.json", get(openapi::openapi));
    let api = match settings.static_dir.as_deref() {
        Some(dir) => {
            let files = files::StaticFiles::new(dir);
            api.fallback(move |request: Request| files.clone().answer(request))
        }
        None => api.fallback(error::not_found),
    };
    api.method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(settings.metrics.clone(), metrics::record))
        .layer(CatchPanicLayer::custom(move |panic| error::panicked(&panics, panic)))
        .layer(middleware::from_fn_with_state(settings.body_limit, reject_oversize_bodies))
        .layer(RequestBodyTimeoutLayer::new(settings.body_timeout))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(cors_layer(&settings.cors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unsafe_request_id))
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
async fn reject_oversize_bodies(State(body_limit): State<usize>, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > body_limit as u64 => {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is over {body_limit} bytes"))
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
