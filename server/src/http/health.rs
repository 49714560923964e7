//! `/healthz` (the process is up) and `/readyz` (the database answers and the
//! migrations this binary knows are applied).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::error::ErrorCode;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(store): State<crate::store::Store>) -> Result<Json<Value>, ApiError> {
    match store.ready().await {
        Ok(true) => Ok(Json(json!({"status": "ready", "database": store.backend_name()}))),
        Ok(false) => Err(ApiError::new(ErrorCode::Unavailable, "migrations are not applied")),
        Err(e) => Err(e.into()),
    }
}
