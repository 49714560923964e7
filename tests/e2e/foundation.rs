//! The server starts on each backend, answers health, readiness and metrics,
//! keeps every failure in the one error shape, and shuts down gracefully.

use std::process::Command;

use serde_json::json;

use crate::harness::{base_command, nimbus_bin, spawn_and_wait_for_address, Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(
    health_and_readiness,
    metrics_count_requests_by_route,
    unknown_routes_and_methods,
    oversize_body_is_413
);

async fn health_and_readiness(backend: Backend) {
    let server = Server::start(backend).await;
    assert_eq!(server.call("GET", "/healthz", None, None).await, (200, json!({"status": "ok"})));
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!((status, body["status"].as_str(), body["database"].as_str()), (200, Some("ready"), Some(expected)));
}

async fn metrics_count_requests_by_route(backend: Backend) {
    let server = Server::start(backend).await;
    for _ in 0..3 {
        server.call("GET", "/healthz", None, None).await;
    }
    server.call("GET", "/no/such/thing", None, None).await;
    let text = server.metrics().await;
    assert!(text.contains(r#"nimbus_http_requests_total{method="GET",route="/healthz",status="200"} 3"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(text.contains("nimbus_http_request_duration_seconds_bucket"), "{text}");
}

async fn unknown_routes_and_methods(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, body) = server.call("GET", "/v1/nothing-here", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not-found");
    let (status, body) = server.call("DELETE", "/healthz", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method-not-allowed")));
    let response = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"), "every response carries a request id");
}

async fn oversize_body_is_413(backend: Backend) {
    let server = Server::start_with(backend, Options::default().env("NIMBUS_BODY_LIMIT", "1024")).await;
    let (status, body) = server.call("POST", "/v1/anything", None, Some(json!({"big": "x".repeat(2000)}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload-too-large")));
}

#[test]
fn invalid_settings_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        ("NIMBUS_LISTEN", "x", "error: NIMBUS_LISTEN: invalid socket address \"x\""),
        ("NIMBUS_LOG_FORMAT", "xml", "error: NIMBUS_LOG_FORMAT: expected \"human\" or \"json\", got \"xml\""),
        ("NIMBUS_DATABASE_URL", "mysql://h/db", "error: NIMBUS_DATABASE_URL: expected a postgres:// or sqlite: URL"),
    ] {
        let output = base_command(dir.path()).env(key, value).output().unwrap();
        assert!(!output.status.success(), "{key}={value} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim(), expected);
    }
    let output = base_command(dir.path()).arg("--listen").arg("nope").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr).trim(), "error: --listen: invalid socket address \"nope\"");
}

#[test]
fn serves_with_no_configuration_and_keeps_the_generated_service_key() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut command = base_command(dir.path());
        command.env_remove("NIMBUS_SERVICE_KEY");
        spawn_and_wait_for_address(command)
    };
    let (mut first, _, lines) = start();
    let _ = first.kill();
    let _ = first.wait();
    let printed: Vec<String> = lines.lock().unwrap().iter().filter(|l| l.starts_with("service key")).cloned().collect();
    assert_eq!(printed.len(), 1, "a new key is printed once at first start");
    assert!(dir.path().join("nimbus-data/nimbus.db").exists(), "data dir and database are created");
    let (mut second, _, lines) = start();
    let _ = second.kill();
    let _ = second.wait();
    assert!(!lines.lock().unwrap().iter().any(|l| l.starts_with("service key")), "the stored key is not shown again");
}

#[test]
fn migrate_and_version_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(nimbus_bin()).arg("migrate").current_dir(dir.path()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied (sqlite)"));
    let output = Command::new(nimbus_bin()).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("nimbus "));
    let output = Command::new(nimbus_bin()).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("NIMBUS_LISTEN"));
}

on_both_backends!(openapi_matches_the_routes);

/// Every `$ref` resolves and every documented path and method is routed.
async fn openapi_matches_the_routes(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, spec) = server.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local ref");
        assert!(spec.pointer(pointer).is_some(), "unresolved $ref {r}");
    }
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    for (path, item) in paths {
        let concrete = path.replace("{path}", "things/t1").replace("{id}", "someone");
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let (status, body) = server.call(&method.to_uppercase(), &concrete, None, Some(json!({}))).await;
            let unrouted = status == 405 || (status == 404 && body["error"]["message"] == "no such route");
            assert!(!unrouted, "{method} {path} is documented but not routed ({status})");
        }
    }
}
