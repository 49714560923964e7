//! The deno_core host. Owns the JavaScript engine (QuickJS through deno_core's
//! `quickjs` feature), module loading from in-memory sources, and running module
//! code to completion. It knows nothing of Nimbus: no HTTP, no SQL.

use std::rc::Rc;

use deno_core::{JsRuntime, ModuleSpecifier, RuntimeOptions};

/// An error from loading or running JavaScript, with the engine's message.
#[derive(Debug, thiserror::Error)]
pub enum JsError {
    #[error("invalid module name {0:?}")]
    InvalidSpecifier(String),
    #[error("{0}")]
    Script(String),
}

/// Evaluates `source` as the main ES module named `name` and returns the JSON
/// form of its `default` export.
pub fn eval_module_default(name: &str, source: &str) -> Result<serde_json::Value, JsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| JsError::Script(e.to_string()))?;
    runtime.block_on(eval_inner(name, source.to_owned()))
}

async fn eval_inner(name: &str, source: String) -> Result<serde_json::Value, JsError> {
    let specifier =
        ModuleSpecifier::parse(&format!("file:///{name}")).map_err(|_| JsError::InvalidSpecifier(name.to_owned()))?;
    let mut js = JsRuntime::new(RuntimeOptions {
        module_loader: Some(Rc::new(deno_core::NoopModuleLoader)),
        ..Default::default()
    });
    let id = js.load_main_es_module_from_code(&specifier, source).await.map_err(|e| JsError::Script(e.to_string()))?;
    let done = js.mod_evaluate(id);
    js.run_event_loop(Default::default()).await.map_err(|e| JsError::Script(e.to_string()))?;
    done.await.map_err(|e| JsError::Script(e.to_string()))?;
    let namespace = js.get_module_namespace(id).map_err(|e| JsError::Script(e.to_string()))?;
    deno_core::scope!(scope, &mut js);
    let namespace = deno_core::v8::Local::new(scope, namespace);
    let key = deno_core::v8::String::new(scope, "default").ok_or_else(|| JsError::Script("alloc".into()))?;
    let value = namespace.get(scope, key.into()).ok_or_else(|| JsError::Script("no default export".into()))?;
    deno_core::serde_v8::from_v8(scope, value).map_err(|e| JsError::Script(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_an_es_module() {
        let value = eval_module_default(
            "main.js",
            "const double = async (n) => n * 2;\nexport default { answer: await double(21), list: [1, 'a'] };",
        )
        .unwrap();
        assert_eq!(value, serde_json::json!({"answer": 42, "list": [1, "a"]}));
    }
}
