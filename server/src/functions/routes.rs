//! The API gateway's routing table: `onHttp({method, path, auth, body})`
//! functions served under `/fn/…`, with `:name` path parameters, an auth
//! requirement checked before the function runs, and an optional JSON Schema
//! for the body.

use std::collections::BTreeMap;
use std::sync::Arc;

use nimbus_js_runtime::Module;
use serde_json::Value;

use super::LoadedModule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Optional,
    Required,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One routed function.
pub struct HttpRoute {
    /// `None` = any method.
    pub method: Option<String>,
    segments: Vec<Segment>,
    pub auth: AuthMode,
    pub body_schema: Option<Arc<jsonschema::Validator>>,
    pub module: Arc<Module>,
    pub export: String,
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The routes of every `http` descriptor; a descriptor with a bad spec is logged and skipped.
pub fn http_routes(modules: &BTreeMap<String, LoadedModule>) -> Vec<HttpRoute> {
    let mut routes = Vec::new();
    for loaded in modules.values() {
        for descriptor in loaded.descriptors.iter().filter(|d| d.kind == "http") {
            match route(loaded, &descriptor.name, &descriptor.spec) {
                Ok(route) => routes.push(route),
                Err(problem) => {
                    tracing::error!(module = %loaded.module.name, export = %descriptor.name, "onHttp: {problem}")
                }
            }
        }
    }
    // Literal segments win over parameters: more literals first.
    routes.sort_by_key(|r| std::cmp::Reverse(r.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()));
    routes
}

fn route(loaded: &LoadedModule, export: &str, spec: &Value) -> Result<HttpRoute, String> {
    let path = spec.get("path").and_then(Value::as_str).ok_or("`path` is required, e.g. \"/hello/:name\"")?;
    let segments = split(path)
        .into_iter()
        .map(|s| match s.strip_prefix(':') {
            Some(name) if !name.is_empty() => Segment::Param(name.to_owned()),
            _ => Segment::Literal(s.to_owned()),
        })
        .collect();
    let method = match spec.get("method") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => Some(m.to_uppercase()),
        Some(_) => return Err("`method` must be a string".into()),
    };
    let auth = match spec.get("auth").and_then(Value::as_str) {
        None | Some("optional") => AuthMode::Optional,
        Some("required") => AuthMode::Required,
        Some("admin") => AuthMode::Admin,
        Some(other) => return Err(format!("`auth` must be \"required\", \"optional\" or \"admin\", not {other:?}")),
    };
    let body_schema = match spec.get("body") {
        None | Some(Value::Null) => None,
        Some(schema) => {
            Some(Arc::new(jsonschema::validator_for(schema).map_err(|e| format!("`body` is not a JSON Schema: {e}"))?))
        }
    };
    Ok(HttpRoute { method, segments, auth, body_schema, module: loaded.module.clone(), export: export.to_owned() })
}

/// What a request path matched: the route and its parameters.
pub struct Matched<'r> {
    pub route: &'r HttpRoute,
    pub params: serde_json::Map<String, Value>,
}

/// The route for `method path`; `Err(true)` when the path exists for another method.
pub fn find<'r>(routes: &'r [HttpRoute], method: &str, path: &str) -> Result<Matched<'r>, bool> {
    let parts = split(path);
    let mut path_exists = false;
    for route in routes {
        let Some(params) = bind(&route.segments, &parts) else { continue };
        if route.method.as_deref().is_none_or(|m| m == method) {
            return Ok(Matched { route, params });
        }
        path_exists = true;
    }
    Err(path_exists)
}

fn bind(segments: &[Segment], parts: &[&str]) -> Option<serde_json::Map<String, Value>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = serde_json::Map::new();
    for (segment, part) in segments.iter().zip(parts) {
        match segment {
            Segment::Literal(text) if text == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => {
                params.insert(name.clone(), Value::String((*part).to_owned()));
            }
        }
    }
    Some(params)
}
