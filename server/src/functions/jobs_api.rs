//! HTTP surface of the job queue: publishing a message to a topic, and the
//! admin dead-letter list and replaying one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::api::FunctionsApi;
use crate::auth::Caller;
use crate::clock::{format_time, now_micros};
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;

pub fn router() -> Router<Arc<FunctionsApi>> {
    Router::new()
        .route("/v1/messages/{topic}", post(publish))
        .route("/v1/admin/functions/dead-letters", get(list_dead_letters))
        .route("/v1/admin/functions/dead-letters/{id}/replay", post(replay))
}

/// Publishes the JSON body to a topic: the service key, or a user a rule on
/// `match /topics/{topic}` allows to `create` (with the message as `request.resource.data`).
async fn publish(
    State(state): State<Arc<FunctionsApi>>,
    caller: Caller,
    Path(topic): Path<String>,
    ApiJson(data): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !crate::triggers::valid_topic(&topic) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "topic names are 1-128 letters, digits, '-', '_' or '.'",
        ));
    }
    if caller != Caller::Service && !state.documents.may_create(&caller, &format!("topics/{topic}"), &data).await? {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("security rules do not allow publishing to {topic}"),
        ));
    }
    let id = state.messages.publish(&topic, &data).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

async fn list_dead_letters(State(state): State<Arc<FunctionsApi>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let jobs = state.store.dead_jobs(1000).await?;
    let items: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "id": j.id,
                "function": j.function,
                "attempts": j.attempts,
                "lastError": j.last_error,
                "createdAt": format_time(j.created_at),
                "event": serde_json::from_str::<Value>(&j.payload).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "deadLetters": items })))
}

async fn replay(
    State(state): State<Arc<FunctionsApi>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if state.store.replay_job(&id, now_micros()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("no dead letter {id}")))
    }
}
