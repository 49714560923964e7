//! `beforeSignUp` and `afterSignUp` functions, offered to auth as its sign-up
//! hooks: the first runs synchronously before the account exists (it may
//! refuse it with an `HttpsError` or return `{claims}`), the second is queued
//! as a durable job like a document trigger.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nimbus_js_runtime::{JsError, Module};
use serde_json::{json, Value};

use super::Functions;
use crate::auth::{AuthError, SignUpHooks};
use crate::clock::{format_time, now_micros};
use crate::error::ErrorCode;
use crate::store::jobs::NewJob;
use crate::store::Store;

pub struct FunctionSignUpHooks {
    functions: Functions,
    store: Store,
}

impl FunctionSignUpHooks {
    pub fn new(functions: Functions, store: Store) -> FunctionSignUpHooks {
        FunctionSignUpHooks { functions, store }
    }
}

/// Every loaded function of `kind`: (module, module file name, export).
fn functions_of(functions: &Functions, kind: &str) -> Vec<(Arc<Module>, String, String)> {
    let registry = functions.registry();
    registry
        .modules
        .iter()
        .flat_map(|(name, loaded)| {
            loaded
                .descriptors
                .iter()
                .filter(|d| d.kind == kind)
                .map(|d| (loaded.module.clone(), name.clone(), d.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

impl SignUpHooks for FunctionSignUpHooks {
    fn before(&self, user: Value) -> Pin<Box<dyn Future<Output = Result<Option<Value>, AuthError>> + Send>> {
        let functions = self.functions.clone();
        Box::pin(async move {
            let Some((module, _, export)) = functions_of(&functions, "beforeSignUp").into_iter().next() else {
                return Ok(None);
            };
            let invocation = functions.invoke(module, &export, user, json!({ "function": export })).await;
            match invocation.result {
                Ok(value) => Ok(value.get("claims").cloned().filter(|c| !c.is_null())),
                Err(JsError::Thrown { code: Some(code), message, .. })
                    if ErrorCode::parse(&code).is_some_and(|c| c != ErrorCode::Internal) =>
                {
                    Err(AuthError::Refused { code: ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal), message })
                }
                Err(JsError::Timeout) => Err(AuthError::Refused {
                    code: ErrorCode::DeadlineExceeded,
                    message: "beforeSignUp timed out".into(),
                }),
                Err(other) => Err(AuthError::Internal(format!("beforeSignUp failed: {other}"))),
            }
        })
    }

    fn after(&self, user: Value) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let jobs: Vec<NewJob> = functions_of(&self.functions, "afterSignUp")
            .into_iter()
            .map(|(_, name, export)| {
                let id = crate::ids::uuid();
                let event = json!({"id": id, "type": "afterSignUp", "user": user, "time": format_time(now_micros())});
                NewJob { id, function: format!("{name}:{export}"), payload: event.to_string() }
            })
            .collect();
        let store = self.store.clone();
        Box::pin(async move {
            if jobs.is_empty() {
                return;
            }
            if let Err(e) = store.enqueue_jobs(&jobs).await {
                tracing::error!("afterSignUp jobs could not be queued: {e}");
            }
        })
    }
}
