//! HTTP side of functions: the API gateway (`/fn/…` → the matching `onHttp`
//! function, after its auth requirement and body schema are checked) and the
//! admin listing of loaded functions.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Json, Router};
use nimbus_js_runtime::JsError;
use serde_json::{json, Map, Value};

use super::routes::{self, AuthMode};
use crate::auth::{AuthError, Caller};
use crate::error::ErrorCode;
use crate::http::error::ApiError;

/// What the functions gateway, its admin endpoints and the job queue's
/// endpoints (`jobs_api`) use.
#[derive(Clone)]
pub struct FunctionsApi {
    pub functions: super::Functions,
    pub documents: crate::documents::Documents,
    pub messages: crate::triggers::Messages,
    pub store: crate::store::Store,
    pub authenticator: crate::auth::Authenticator,
}

crate::auth::api::authenticates!(FunctionsApi);

pub fn router() -> Router<Arc<FunctionsApi>> {
    Router::new()
        .route("/fn/{*path}", any(gateway))
        .route("/v1/admin/functions", get(list_functions))
        .route("/v1/admin/functions/invocations", get(list_invocations))
}

fn check_auth(mode: AuthMode, caller: &Caller) -> Result<(), ApiError> {
    match (mode, caller) {
        (AuthMode::Optional, _) => Ok(()),
        (AuthMode::Required | AuthMode::Admin, Caller::Public) => {
            Err(ApiError::new(ErrorCode::Unauthenticated, "sign in to call this function"))
        }
        (AuthMode::Admin, caller) if !caller.is_admin() => Err(AuthError::AdminRequired.into()),
        _ => Ok(()),
    }
}

fn read_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if is_json {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("malformed JSON body at line {} column {}", e.line(), e.column()),
            )
        })
    } else {
        Ok(Value::String(String::from_utf8_lossy(body).into_owned()))
    }
}

fn request_headers(headers: &HeaderMap) -> Value {
    let map: Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION && *name != header::COOKIE)
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), Value::String(value.to_str().ok()?.to_owned()))))
        .collect();
    Value::Object(map)
}

async fn gateway(
    State(state): State<Arc<FunctionsApi>>,
    caller: Caller,
    method: Method,
    uri: Uri,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let registry = state.functions.registry();
    let matched = routes::find(&registry.http, method.as_str(), &path).map_err(|path_exists| {
        if path_exists {
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not served at /fn/{path}"))
        } else {
            ApiError::new(ErrorCode::NotFound, format!("no function at /fn/{path}"))
        }
    })?;
    let route = matched.route;
    check_auth(route.auth, &caller)?;
    let body = read_body(&headers, &body)?;
    if let Some(schema) = &route.body_schema {
        if let Some(error) = schema.iter_errors(&body).next() {
            let message = crate::documents::schema::violation(&error, "body", "the function's schema");
            return Err(ApiError::new(ErrorCode::InvalidArgument, message));
        }
    }
    let query: Map<String, Value> = uri
        .query()
        .map(|q| form_urlencoded_pairs(q).into_iter().map(|(k, v)| (k, Value::String(v))).collect())
        .unwrap_or_default();
    let input = json!({
        "method": method.as_str(),
        "path": format!("/{path}"),
        "params": matched.params,
        "query": query,
        "headers": request_headers(&headers),
        "body": body,
    });
    let context = json!({"auth": caller.to_json(), "function": route.export});
    let invocation = state.functions.invoke(route.module.clone(), &route.export, input, context).await;
    match invocation.result {
        Ok(value) => Ok(function_response(value)),
        Err(error) => Err(js_error(error)),
    }
}

/// `a=1&b=x%20y` → pairs, percent-decoded.
fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex =
                || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex()) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `{status, headers, body}` from the function, or a plain value as a 200 JSON body.
fn function_response(value: Value) -> Response {
    let (status, headers, body) = match value {
        Value::Object(mut map) if map.get("status").is_some_and(Value::is_u64) => {
            let status = map.get("status").and_then(Value::as_u64).unwrap_or(200);
            (status, map.remove("headers"), map.remove("body").unwrap_or(Value::Null))
        }
        other => (200, None, other),
    };
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let (content_type, bytes) = match body {
        Value::Null => (None, Vec::new()),
        Value::String(text) => (Some("text/plain; charset=utf-8"), text.into_bytes()),
        json => (Some("application/json"), json.to_string().into_bytes()),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(Value::Object(extra)) = headers {
        for (name, value) in extra {
            let (Ok(name), Some(Ok(value))) =
                (HeaderName::try_from(name.as_str()), value.as_str().map(HeaderValue::from_str))
            else {
                continue;
            };
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn js_error(error: JsError) -> ApiError {
    match error {
        JsError::Thrown { code: Some(code), message, .. }
            if ErrorCode::parse(&code).is_some_and(|c| c != ErrorCode::Internal) =>
        {
            ApiError::new(ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal), message)
        }
        JsError::Timeout => ApiError::new(ErrorCode::DeadlineExceeded, "the function ran longer than its time limit"),
        other => ApiError::hidden(ErrorCode::Internal, &format!("function failed: {other}")),
    }
}

async fn list_functions(State(state): State<Arc<FunctionsApi>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let registry = state.functions.registry();
    let modules: Vec<Value> = registry
        .modules
        .values()
        .map(|m| {
            let version = format!("{:016x}", m.module.version);
            json!({"module": m.module.name, "version": version, "functions": m.descriptors})
        })
        .collect();
    Ok(Json(json!({"modules": modules, "errors": registry.errors})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InvocationsParams {
    function: Option<String>,
}

/// The latest invocations on this instance, with status, duration and console lines.
async fn list_invocations(
    State(state): State<Arc<FunctionsApi>>,
    caller: Caller,
    crate::http::extract::ApiQuery(params): crate::http::extract::ApiQuery<InvocationsParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let invocations = state.functions.recent_invocations(params.function.as_deref()).await?;
    Ok(Json(json!({ "invocations": invocations })))
}
