//! Functions over HTTP on both backends: the API gateway (routing, path
//! params, auth modes, body schema, errors, timeouts), live reload of a good
//! and of a broken module, and the admin listing.

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

const HELLO: &str = r#"
import { onHttp, HttpsError } from "nimbus:functions";

export const hello = onHttp({ method: "GET", path: "/hello/:name" }, async (req, ctx) => {
  console.log("greeting", req.params.name);
  return { greeting: `hello ${req.params.name}`, query: req.query, caller: ctx.auth ? ctx.auth.uid : null };
});

export const secure = onHttp(
  { method: "POST", path: "/secure", auth: "required",
    body: { type: "object", required: ["amount"], properties: { amount: { type: "integer", minimum: 1 } } } },
  (req, ctx) => ({ status: 201, body: { charged: req.body.amount, by: ctx.auth.uid } }),
);

export const adminOnly = onHttp({ path: "/admin", auth: "admin" }, () => "welcome");

export const refuse = onHttp({ method: "POST", path: "/refuse" }, () => {
  throw new HttpsError("failed-precondition", "out of stock");
});

export const crash = onHttp({ path: "/crash" }, () => { throw new Error("secret internals"); });

export const spin = onHttp({ path: "/spin" }, () => { while (true) {} });

export const hog = onHttp({ path: "/hog" }, () => { const all = []; while (true) all.push(new Array(100000).fill(1)); });

export const go = onHttp({ path: "/go/:id" }, (req) => ({ status: 302, headers: { location: `https://example.com/${req.params.id}` } }));
"#;

async fn start(backend: Backend) -> Server {
    let options = Options::default()
        .file("functions/hello.js", HELLO)
        .env("NIMBUS_FUNCTIONS_TIMEOUT_MS", "300")
        .env("NIMBUS_FUNCTIONS_HEAP_MB", "16");
    Server::start_with(backend, options).await
}

on_both_backends!(
    gateway_routes_and_checks_before_running,
    functions_reload_live_and_keep_the_last_good_version,
    concurrency_env_and_invocation_records,
);

const LIMITED: &str = r#"
import { onHttp } from "nimbus:functions";
export const busy = onHttp({ path: "/busy" }, () => {
  const until = Date.now() + 300;
  while (Date.now() < until) {}
  console.warn("done");
  return "ok";
});
export const env = onHttp({ path: "/env" }, (req, ctx) => ctx.env.GREETING);
export const proxy = onHttp({ path: "/proxy" }, async (req) => {
  const allowed = await fetch(`http://127.0.0.1:${req.query.port}/healthz`);
  let denied = null;
  try { await fetch("https://example.com/"); } catch (e) { denied = e.code; }
  return { fetched: allowed.status, health: await allowed.json(), denied };
});
"#;

async fn concurrency_env_and_invocation_records(backend: Backend) {
    let options = Options::default()
        .file("functions/limited.js", LIMITED)
        .file(
            "nimbus.toml",
            "[functions]\nconcurrency = 1\nworkers = 2\nfetch_allow = [\"127.0.0.1\"]\n[functions.env]\nGREETING = \"hey\"\n",
        );
    let server = std::sync::Arc::new(Server::start_with(backend, options).await);
    assert_eq!(server.call("GET", "/fn/env", None, None).await.1, Value::String("hey".into()), "ctx.env");
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let (status, body) = server.call("GET", &format!("/fn/proxy?port={port}"), None, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"fetched": 200, "health": {"status": "ok"}, "denied": "permission-denied"}))
    );
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.call("GET", "/fn/busy", None, None).await.0 })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(580), "one at a time: {:?}", started.elapsed());
    let (status, body) = server.admin("GET", "/v1/admin/functions/invocations?function=limited.js:busy", None).await;
    assert_eq!(status, 200);
    let records = body["invocations"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!((records[0]["status"].as_str(), records[0]["logs"][0]["message"].as_str()), (Some("ok"), Some("done")));
    assert!(records[0]["durationMs"].as_f64().unwrap() >= 290.0);

    // The log is in the database: it outlives the process, and every instance reads the same.
    crate::harness::eventually(std::time::Duration::from_secs(10), "the invocations written", || async {
        let rows =
            server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM invocations WHERE function = 'limited.js:busy'").await;
        (rows[0][0].as_deref() == Some("2")).then_some(())
    })
    .await;
    let mut server = std::sync::Arc::try_unwrap(server).unwrap_or_else(|_| panic!("the calls are done"));
    server.crash_and_restart().await;
    let (_, after) = server.admin("GET", "/v1/admin/functions/invocations?function=limited.js:busy", None).await;
    assert_eq!(after["invocations"], body["invocations"], "the same records after a restart");
    if backend == Backend::Postgres {
        let other = server.sibling(&[]).await;
        let (_, there) = other.admin("GET", "/v1/admin/functions/invocations?function=limited.js:busy", None).await;
        assert_eq!(there["invocations"], body["invocations"], "another instance lists them too");
    }
}

async fn gateway_routes_and_checks_before_running(backend: Backend) {
    let server = start(backend).await;
    let (status, body) = server.call("GET", "/fn/hello/ann?x=1&y=a%20b", None, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"greeting": "hello ann", "query": {"x": "1", "y": "a b"}, "caller": null}))
    );
    let (_, session) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "f@example.com", "password": "correct horse"})))
        .await;
    let token = session["access_token"].as_str().unwrap();
    let uid = session["user"]["id"].clone();
    let (_, body) = server.call("GET", "/fn/hello/bo", Some(token), None).await;
    assert_eq!(body["caller"], uid);

    let (status, body) = server.call("POST", "/fn/secure", None, Some(json!({"amount": 5}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    let (status, body) = server.call("POST", "/fn/secure", Some(token), Some(json!({"amount": 0}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("field `amount`"), "{body}");
    let (status, body) = server.call("POST", "/fn/secure", Some(token), Some(json!({"amount": 3}))).await;
    assert_eq!((status, body), (201, json!({"charged": 3, "by": uid})));
    assert_eq!(server.call("GET", "/fn/admin", Some(token), None).await.0, 403);
    let (status, body) = server.admin("GET", "/fn/admin", None).await;
    assert_eq!((status, body), (200, Value::String("welcome".into())));

    let (status, body) = server.call("POST", "/fn/refuse", None, None).await;
    assert_eq!((status, body), (412, json!({"error": {"code": "failed-precondition", "message": "out of stock"}})));
    let (status, body) = server.call("GET", "/fn/crash", None, None).await;
    assert_eq!(status, 500);
    assert!(!body.to_string().contains("secret internals"), "uncaught errors are not sent to clients");
    let (status, body) = server.call("GET", "/fn/spin", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("deadline-exceeded")));
    assert_eq!(server.call("GET", "/fn/hello/again", None, None).await.0, 200, "a runaway function harms nothing else");
    let (status, _) = server.call("GET", "/fn/hog", None, None).await;
    assert!(status == 500 || status == 504, "a memory hog is stopped ({status})");
    assert_eq!(server.call("GET", "/fn/hello/again", None, None).await.0, 200, "and harms nothing else");
    assert_eq!(server.call("GET", "/fn/nothing", None, None).await.0, 404);
    assert_eq!(server.call("DELETE", "/fn/hello/ann", None, None).await.0, 405);

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(server.url("/fn/go/ad7")).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://example.com/ad7");

    let series = |labels: &str| format!("nimbus_function_invocations_total{{function=\"hello.js:{labels}\"}}");
    let warm_hellos = server.metric(&series(r#"hello",outcome="ok",start="warm"#)).await.unwrap_or(0.0);
    assert!(warm_hellos >= 1.0, "{}", server.metrics().await);
    let timeouts = server.metric(&series(r#"spin",outcome="timeout",start="warm"#)).await.unwrap_or(0.0)
        + server.metric(&series(r#"spin",outcome="timeout",start="cold"#)).await.unwrap_or(0.0);
    assert_eq!(timeouts, 1.0, "{}", server.metrics().await);
}

async fn functions_reload_live_and_keep_the_last_good_version(backend: Backend) {
    let server = start(backend).await;
    let file = server.dir.path().join("functions/hello.js");
    std::fs::write(&file, HELLO.replace("hello ${req.params.name}", "hi ${req.params.name}")).unwrap();
    let answered = crate::harness::eventually(std::time::Duration::from_secs(10), "the edited module", || async {
        let answered = server.call("GET", "/fn/hello/ann", None, None).await.1;
        (answered["greeting"] == "hi ann").then_some(answered)
    })
    .await;
    assert_eq!(answered["greeting"], "hi ann", "the edited module serves");
    std::fs::write(
        &file,
        "import { onHttp } from \"nimbus:functions\";\nexport const hello = onHttp({ path: \"/x\" }, () => 1;\n",
    )
    .unwrap();
    let errors = crate::harness::eventually(std::time::Duration::from_secs(10), "the load error", || async {
        let errors = server.admin("GET", "/v1/admin/functions", None).await.1["errors"].clone();
        errors.get("hello.js").is_some().then_some(errors)
    })
    .await;
    let message = errors["hello.js"].as_str().unwrap_or_default();
    assert!(message.contains("hello.js:2"), "the error names the file and line: {errors}");
    let (status, body) = server.call("GET", "/fn/hello/ann", None, None).await;
    assert_eq!((status, body["greeting"].as_str()), (200, Some("hi ann")), "the last good version keeps serving");
    let (_, listing) = server.admin("GET", "/v1/admin/functions", None).await;
    let names: Vec<&str> =
        listing["modules"][0]["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"hello") && names.contains(&"secure"), "{listing}");
}

#[test]
fn functions_check_lists_the_demo_and_reports_errors() {
    let demo = crate::harness::cli_in(&crate::harness::repository_root(), &["functions", "check", "functions"]);
    let (passed, stdout, stderr) = demo;
    assert!(passed, "{stderr}");
    assert!(stdout.contains("petstore.js: purchase (http)"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.js"),
        "import { onHttp } from \"nimbus:functions\";\nexport const x = onHttp({ path: \"/x\" }, () => 1;\n",
    )
    .unwrap();
    let (passed, _, stderr) = crate::harness::cli_in(dir.path(), &["functions", "check", "."]);
    assert!(!passed);
    assert!(stderr.contains("bad.js:2"), "{stderr}");
}
