//! Admin HTTP surface of rules: `GET`/`PUT /v1/admin/rules` (read, or check
//! and replace atomically, persisted to the rules folder) and
//! `POST /v1/admin/rules:test` (decide a described request against the
//! current rules or given files).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::cases::{self, Case};
use super::{compile, RulesError, RulesFile};
use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;

/// What the rules endpoints use.
#[derive(Clone)]
pub struct RulesApi {
    pub rules: super::RulesService,
    pub authenticator: crate::auth::Authenticator,
}

crate::auth::api::authenticates!(RulesApi);

pub fn router() -> Router<Arc<RulesApi>> {
    Router::new()
        .route("/v1/admin/rules", get(read_rules).put(replace_rules))
        .route("/v1/admin/rules:test", post(test_rules))
}

async fn read_rules(State(state): State<Arc<RulesApi>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let status = state.rules.status();
    Ok(Json(
        json!({ "files": state.rules.files(), "loadedAt": status.loaded_at, "error": status.error, "errorAt": status.error_at }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesBody {
    files: Vec<RulesFile>,
}

async fn replace_rules(
    State(state): State<Arc<RulesApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<FilesBody>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.rules.replace(body.files).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// Rules to test instead of the ones in force.
    files: Option<Vec<RulesFile>>,
    request: Case,
}

async fn test_rules(
    State(state): State<Arc<RulesApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let rules = match body.files {
        Some(files) => std::sync::Arc::new(compile(std::path::Path::new("rules"), &files)?),
        None => state.rules.current(),
    };
    let outcome = cases::run(&rules, &body.request).map_err(RulesError::Invalid)?;
    Ok(Json(json!({
        "allowed": outcome.allowed,
        "line": outcome.at.map(|p| p.line),
        "col": outcome.at.map(|p| p.col),
    })))
}
