//! Regression tests for the findings of the security probe (issue 23) and for
//! "the rule decides first" (issue 16): each fails without its fix. Data and
//! auth findings run on both backends; the functions sandbox and the HTTP
//! connection limits run once (they touch no data).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server, SERVICE_KEY};
use crate::on_both_backends;

on_both_backends!(
    nested_matches_under_recursive_wildcards_keep_their_segments,
    the_rule_decides_before_existence_for_every_verb,
    the_rule_decides_before_preconditions,
    rule_arithmetic_that_overflows_denies_and_the_server_stays_up,
    verification_links_confirm_only_the_address_they_were_sent_to,
    credential_changes_end_other_sessions_and_outstanding_links,
    unknown_and_existing_emails_lock_alike,
    email_changes_count_against_the_mail_limits,
    metrics_need_the_service_key_or_the_metrics_token,
    cursors_are_sealed_and_carry_nothing_unreadable,
    one_query_cannot_ask_for_unbounded_work,
    nul_characters_and_increment_overflow_are_invalid_arguments,
);

async fn user(server: &Server, email: &str) -> Value {
    let body = json!({"email": email, "password": "correct horse"});
    let (status, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    session
}

fn token(session: &Value) -> &str {
    session["access_token"].as_str().expect("access token")
}

fn rules_file(matches: &str) -> String {
    format!("rules_version = '2';\nservice cloud.firestore {{ match /databases/{{db}}/documents {{ {matches} }} }}")
}

async fn nested_matches_under_recursive_wildcards_keep_their_segments(backend: Backend) {
    let rules = rules_file(
        "match /forum/{path=**} { match /comments/{c} { allow read: if true; } }
         match /{p=**} { match /publicPosts/{id} { allow read: if true; } }",
    );
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    for path in ["forum/secret", "forum/t/comments/c1", "secret/x", "users/u/publicPosts/x"] {
        assert_eq!(server.admin("PUT", &format!("/v1/docs/{path}"), Some(json!({"v": 1}))).await.0, 201);
    }
    assert_eq!(server.call("GET", "/v1/docs/forum/secret", None, None).await.0, 403);
    assert_eq!(server.call("GET", "/v1/docs/forum", None, None).await.0, 403, "no list of forum");
    assert_eq!(server.call("GET", "/v1/docs/secret/x", None, None).await.0, 403);
    assert_eq!(server.call("GET", "/v1/docs/forum/t/comments/c1", None, None).await.0, 200);
    assert_eq!(server.call("GET", "/v1/docs/users/u/publicPosts/x", None, None).await.0, 200);
    let case = json!({"request": {"method": "get", "path": "forum/secret"}});
    let (status, report) = server.admin("POST", "/v1/admin/rules:test", Some(case)).await;
    assert_eq!((status, report["allowed"].as_bool()), (200, Some(false)), "the rules tester agrees: {report}");
}

/// `(method, path, body)` of every single-document verb, as a request.
async fn send(server: &Server, verb: &str, path: &str, who: Option<&str>) -> u16 {
    match verb {
        "GET" => server.call("GET", &format!("/v1/docs/{path}"), who, None).await.0,
        "PUT" => server.call("PUT", &format!("/v1/docs/{path}"), who, Some(json!({"v": 2}))).await.0,
        "PATCH" => server.call("PATCH", &format!("/v1/docs/{path}"), who, Some(json!({"v": 3}))).await.0,
        "DELETE" => server.call("DELETE", &format!("/v1/docs/{path}"), who, None).await.0,
        op => {
            let data = (op != "delete").then(|| json!({"v": 4}));
            let write = json!({"op": op, "path": path, "data": data});
            server.call("POST", "/v1/batch", who, Some(json!({"writes": [write]}))).await.0
        }
    }
}

async fn the_rule_decides_before_existence_for_every_verb(backend: Backend) {
    let rules = rules_file(
        "match /secret/{id} { allow read, write: if false; } match /open/{id} { allow read, write: if true; }",
    );
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    let verbs = ["GET", "PUT", "PATCH", "DELETE", "create", "set", "update", "delete"];
    // (verb, expected on an existing document, expected on a missing one) for the open collection.
    let allowed = [
        ("GET", 200, 404),
        ("PUT", 200, 201),
        ("PATCH", 200, 404),
        ("DELETE", 204, 204),
        ("create", 409, 200),
        ("set", 200, 200),
        ("update", 200, 404),
        ("delete", 200, 200),
    ];
    for (i, verb) in verbs.iter().enumerate() {
        for exists in [true, false] {
            for collection in ["secret", "open"] {
                let path = format!("{collection}/d{i}{}", if exists { "e" } else { "m" });
                if exists {
                    assert_eq!(server.admin("PUT", &format!("/v1/docs/{path}"), Some(json!({"v": 1}))).await.0, 201);
                }
                let status = send(&server, verb, &path, None).await;
                let expected = match (collection, exists) {
                    ("secret", _) => 403,
                    (_, true) => allowed[i].1,
                    (_, false) => allowed[i].2,
                };
                assert_eq!(status, expected, "{verb} on {path} (exists: {exists})");
            }
        }
    }
}

async fn the_rule_decides_before_preconditions(backend: Backend) {
    let rules = rules_file("match /notes/{id} { allow read, write: if request.auth.uid == resource.data.owner; }");
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    assert_eq!(server.admin("PUT", "/v1/docs/notes/n1", Some(json!({"owner": "alice"}))).await.0, 201);
    let stranger = user(&server, "stranger@example.com").await;
    for who in [None, Some(token(&stranger))] {
        let mut delete = server.client.delete(server.url("/v1/docs/notes/n1")).header("if-match", "5");
        let mut put = server.client.put(server.url("/v1/docs/notes/n1")).header("if-none-match", "*");
        if let Some(t) = who {
            (delete, put) = (delete.bearer_auth(t), put.bearer_auth(t));
        }
        let (status, body) = crate::harness::read(delete.send().await.expect("delete")).await;
        assert_eq!(status, 403, "If-Match on someone's document: the rule answers, not the version: {body}");
        assert!(!body.to_string().contains("version"), "{body}");
        let (status, body) = crate::harness::read(put.json(&json!({"owner": "x"})).send().await.expect("put")).await;
        assert_eq!(status, 403, "If-None-Match: * does not reveal existence: {body}");
        let batch = json!({"writes": [{"op": "create", "path": "notes/n1", "data": {"owner": "x"}}]});
        let (status, body) = server.call("POST", "/v1/batch", who, Some(batch)).await;
        assert_eq!(status, 403, "{body}");
    }
}

async fn rule_arithmetic_that_overflows_denies_and_the_server_stays_up(backend: Backend) {
    let rules =
        rules_file("match /calc/{id} { allow create: if request.resource.data.a / request.resource.data.b == 1; }");
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    let body = json!({"a": i64::MIN, "b": -1});
    let (status, answer) = server.call("PUT", "/v1/docs/calc/c1", None, Some(body)).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(server.call("PUT", "/v1/docs/calc/c2", None, Some(json!({"a": 3, "b": 3}))).await.0, 201);
    assert_eq!(server.call("GET", "/healthz", None, None).await.0, 200);
}

fn link_token(mail: &str) -> String {
    let start = mail.find("token=").expect("a token link") + "token=".len();
    mail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

async fn verification_links_confirm_only_the_address_they_were_sent_to(backend: Backend) {
    let server = Server::start(backend).await;
    let session = user(&server, "mallory@attacker.test").await;
    let old_link = link_token(&server.last_mail("mallory@attacker.test"));
    let change = json!({"email": "ceo@victim-corp.test", "currentPassword": "correct horse"});
    let (status, changed) = server.call("PATCH", "/v1/auth/user", Some(token(&session)), Some(change)).await;
    assert_eq!((status, changed["emailVerified"].as_bool()), (200, Some(false)), "{changed}");
    let (status, _) = server.call("POST", "/v1/auth/verify", None, Some(json!({"token": old_link}))).await;
    assert_eq!(status, 400, "the link sent to the old address confirms nothing now");
    let (_, me) = server.call("GET", "/v1/auth/user", Some(token(&session)), None).await;
    assert_eq!(me["emailVerified"], false, "{me}");
    let new_link = link_token(&server.last_mail("ceo@victim-corp.test"));
    let (status, verified) = server.call("POST", "/v1/auth/verify", None, Some(json!({"token": new_link}))).await;
    assert_eq!((status, verified["emailVerified"].as_bool()), (200, Some(true)), "only the new address's own link");
}

async fn password_grant(server: &Server, email: &str, password: &str) -> (u16, Value) {
    let body = json!({"grant_type": "password", "email": email, "password": password});
    server.call("POST", "/v1/auth/token", None, Some(body)).await
}

async fn refresh(server: &Server, session: &Value) -> u16 {
    let body = json!({"grant_type": "refresh_token", "refresh_token": session["refresh_token"]});
    server.call("POST", "/v1/auth/token", None, Some(body)).await.0
}

async fn credential_changes_end_other_sessions_and_outstanding_links(backend: Backend) {
    let server = Server::start(backend).await;
    let a = user(&server, "pat@example.com").await;
    let (_, b) = password_grant(&server, "pat@example.com", "correct horse").await;
    assert_eq!(server.call("POST", "/v1/auth/recover", None, Some(json!({"email": "pat@example.com"}))).await.0, 204);
    let reset = link_token(&server.last_mail("pat@example.com"));
    let change = json!({"password": "a brand new one", "currentPassword": "correct horse"});
    assert_eq!(server.call("PATCH", "/v1/auth/user", Some(token(&b)), Some(change)).await.0, 200);
    assert_eq!(refresh(&server, &a).await, 401, "session A ends when B changes the password");
    assert_eq!(refresh(&server, &b).await, 200, "the session that changed it continues");
    let confirm = json!({"token": reset, "password": "attacker picks"});
    assert_eq!(
        server.call("POST", "/v1/auth/recover/confirm", None, Some(confirm)).await.0,
        400,
        "a reset link from before the change is spent"
    );
    assert_eq!(password_grant(&server, "pat@example.com", "a brand new one").await.0, 200);

    let (_, c) = password_grant(&server, "pat@example.com", "a brand new one").await;
    let (_, d) = password_grant(&server, "pat@example.com", "a brand new one").await;
    let change = json!({"email": "pat2@example.com", "currentPassword": "a brand new one"});
    assert_eq!(server.call("PATCH", "/v1/auth/user", Some(token(&d)), Some(change)).await.0, 200);
    assert_eq!(refresh(&server, &c).await, 401, "an email change ends other sessions too");
}

async fn unknown_and_existing_emails_lock_alike(backend: Backend) {
    let server = Server::start_with(backend, Options::default().env("NIMBUS_AUTH_MAX_FAILED_SIGNINS", "2")).await;
    user(&server, "real@example.com").await;
    for email in ["real@example.com", "ghost@example.com"] {
        for _ in 0..2 {
            assert_eq!(password_grant(&server, email, "wrong guess").await.0, 401, "{email}");
        }
    }
    let (real, real_body) = password_grant(&server, "real@example.com", "wrong guess").await;
    let (ghost, ghost_body) = password_grant(&server, "ghost@example.com", "wrong guess").await;
    assert_eq!((real, ghost), (429, 429), "{real_body} {ghost_body}");
    assert_eq!(real_body["error"]["code"], ghost_body["error"]["code"]);
}

async fn email_changes_count_against_the_mail_limits(backend: Backend) {
    let server = Server::start_with(backend, Options::default().env("NIMBUS_AUTH_EMAIL_PER_MINUTE", "2")).await;
    let session = user(&server, "burst@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let change = json!({"email": format!("victim{i}@example.com"), "currentPassword": "correct horse"});
        statuses.push(server.call("PATCH", "/v1/auth/user", Some(token(&session)), Some(change)).await.0);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
}

async fn metrics_need_the_service_key_or_the_metrics_token(backend: Backend) {
    let metrics_token = "metrics-token-0123456789abcdef";
    let server = Server::start_with(backend, Options::default().env("NIMBUS_METRICS_TOKEN", metrics_token)).await;
    let get = |bearer: Option<&str>| {
        let request = server.client.get(server.url("/metrics"));
        let request = match bearer {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move { request.send().await.expect("metrics").status().as_u16() }
    };
    let someone = user(&server, "someone@example.com").await;
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some(token(&someone))).await, 403);
    assert_eq!(get(Some("not-the-token-at-all-000")).await, 401);
    assert_eq!(get(Some(SERVICE_KEY)).await, 200);
    assert_eq!(get(Some(metrics_token)).await, 200);
}

async fn cursors_are_sealed_and_carry_nothing_unreadable(backend: Backend) {
    // A numeric condition is checked row by row (not exact in SQL), so a
    // query can stop on unreadable rows when its scan budget is spent.
    let rules = rules_file("match /ads/{id} { allow read: if resource.data.budget - 5100 > 0; }");
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    for batch in 0..11 {
        let writes: Vec<Value> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                json!({"op": "set", "path": format!("ads/ad{n:05}"), "data": {"budget": n}})
            })
            .collect();
        assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await.0, 200);
    }
    let query = json!({"collection": "ads", "orderBy": ["budget"], "limit": 50});
    let (status, page) = server.call("POST", "/v1/query", None, Some(query.clone())).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["documents"], json!([]), "nothing readable within the scan budget");
    let cursor = page["nextCursor"].as_str().expect("a cursor to continue from");
    let decoded = URL_SAFE_NO_PAD.decode(cursor).expect("base64url");
    let text = String::from_utf8_lossy(&decoded);
    assert!(!text.contains("ad0") && !text.contains("4999"), "the cursor names no unreadable document: {text}");
    let mut forged = decoded.clone();
    if let Some(byte) = forged.get_mut(20) {
        *byte ^= 0x55;
    }
    let mut bad = query.clone();
    bad["startAfter"] = json!(URL_SAFE_NO_PAD.encode(forged));
    assert_eq!(server.call("POST", "/v1/query", None, Some(bad)).await.0, 400, "a forged cursor is refused");
    let mut next = query.clone();
    next["startAfter"] = json!(cursor);
    let (status, rest) = server.call("POST", "/v1/query", None, Some(next)).await;
    assert_eq!(status, 200, "{rest}");
    let ids: Vec<&str> =
        rest["documents"].as_array().expect("documents").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!((ids.len(), ids.first().copied()), (50, Some("ad05101")));
}

async fn one_query_cannot_ask_for_unbounded_work(backend: Backend) {
    let rules = rules_file("match /rooms/{id} { allow read: if request.auth != null; }");
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", &rules)).await;
    let anonymous = server.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "anonymous"}))).await.1;
    let values: Vec<i64> = (0..30).collect();
    let any = json!(["members", "array-contains-any", values]);
    let expensive = json!({"collection": "rooms", "where": [{"or": vec![any.clone(); 40]}]});
    let started = Instant::now();
    let (status, body) = server.call("POST", "/v1/query", Some(token(&anonymous)), Some(expensive)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("at most 30"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let fine = json!({"collection": "rooms", "where": [any]});
    assert_eq!(server.call("POST", "/v1/query", Some(token(&anonymous)), Some(fine)).await.0, 200);
}

async fn nul_characters_and_increment_overflow_are_invalid_arguments(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, body) = server.admin("PUT", "/v1/docs/things/t1", Some(json!({"name": "a\u{0}b"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
    assert_eq!(server.admin("PUT", "/v1/docs/things/t2", Some(json!({"big": 1.7e308}))).await.0, 201);
    let (status, body) =
        server.admin("PATCH", "/v1/docs/things/t2", Some(json!({"big": {"$increment": 1.7e308}}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
    let (_, stored) = server.admin("GET", "/v1/docs/things/t2", None).await;
    assert_eq!(stored["data"]["big"], json!(1.7e308), "nothing was stored");
}

// ---- the functions sandbox (no data involved: SQLite only) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_reach_no_deno_core_op_and_cannot_end_the_process() {
    let module = r#"
        import { onHttp } from "nimbus:functions";
        export const boom = onHttp({ method: "GET", path: "/boom" }, () => { Deno.core.ops.op_panic("x"); return 1; });
        export const print = onHttp({ method: "GET", path: "/print" }, () => { Deno.core.print("forged log line\n"); return 1; });
        export const probe = onHttp({ method: "GET", path: "/probe" }, () => ({ deno: typeof Deno }));
    "#;
    let server = Server::start_with(Backend::Sqlite, Options::default().file("functions/evil.js", module)).await;
    assert_eq!(server.call("GET", "/fn/boom", None, None).await.0, 500);
    assert_eq!(server.call("GET", "/fn/print", None, None).await.0, 500);
    assert_eq!(server.call("GET", "/healthz", None, None).await.0, 200, "the process is still up");
    let (status, body) = server.call("GET", "/fn/probe", None, None).await;
    assert_eq!((status, body["deno"].as_str()), (200, Some("undefined")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaited_timer_ends_at_the_deadline_and_frees_its_worker() {
    let sleepy = r#"
        import { onHttp } from "nimbus:functions";
        export const sleepy = onHttp({ method: "GET", path: "/sleepy" }, () => new Promise((r) => setTimeout(r, 25000)));
    "#;
    let other = r#"
        import { onHttp } from "nimbus:functions";
        export const quick = onHttp({ method: "GET", path: "/quick" }, () => ({ ok: true }));
    "#;
    let options = Options::default()
        .env("NIMBUS_FUNCTIONS_TIMEOUT_MS", "500")
        .env("NIMBUS_FUNCTIONS_WORKERS", "1")
        .file("functions/sleepy.js", sleepy)
        .file("functions/other.js", other);
    let server = Server::start_with(Backend::Sqlite, options).await;
    let started = Instant::now();
    let (first, second) =
        tokio::join!(server.call("GET", "/fn/sleepy", None, None), server.call("GET", "/fn/sleepy", None, None));
    assert_eq!((first.0, second.0), (504, 504));
    assert!(started.elapsed() < Duration::from_secs(4), "both end at their deadline: {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(server.call("GET", "/fn/quick", None, None).await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "the worker is free: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_never_finishes_loading_is_skipped() {
    let fine = r#"
        import { onHttp } from "nimbus:functions";
        export const ok = onHttp({ method: "GET", path: "/ok" }, () => ({ ok: true }));
    "#;
    let options = Options::default()
        .env("NIMBUS_FUNCTIONS_TIMEOUT_MS", "500")
        .file("functions/zhang.js", "while (true) {}")
        .file("functions/zz_fine.js", fine);
    let server = Server::start_with(Backend::Sqlite, options).await;
    assert_eq!(server.call("GET", "/fn/ok", None, None).await.0, 200, "the later module loaded");
    let (_, listing) = server.admin("GET", "/v1/admin/functions", None).await;
    let error = listing["errors"]["zhang.js"].as_str().unwrap_or_default();
    assert!(error.contains("zhang.js") && error.contains("time limit"), "{listing}");
}

/// A local HTTP server that answers every request with an endless body.
fn endless_body_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
                let chunk = vec![b'x'; 1 << 20];
                let started = Instant::now();
                // At most 1.2 GB or 60 s, whichever comes first.
                for _ in 0..1200 {
                    if stream.write_all(&chunk).is_err() || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_stops_reading_at_the_size_limit() {
    let port = endless_body_server();
    let module = format!(
        r#"
        import {{ onHttp }} from "nimbus:functions";
        export const big = onHttp({{ method: "GET", path: "/big" }}, async () => {{
            try {{ await fetch("http://127.0.0.1:{port}/huge"); return {{ read: true }}; }}
            catch (e) {{ return {{ code: e.code, message: e.message }}; }}
        }});
    "#
    );
    let options = Options::default().env("NIMBUS_FUNCTIONS_FETCH_ALLOW", "127.0.0.1").file("functions/big.js", &module);
    let server = Server::start_with(Backend::Sqlite, options).await;
    let before = resident_kib(server.pid());
    let started = Instant::now();
    let (status, body) = server.call("GET", "/fn/big", None, None).await;
    assert_eq!((status, body["code"].as_str()), (200, Some("resource-exhausted")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let grown = resident_kib(server.pid()).saturating_sub(before);
    assert!(grown < 200 * 1024, "memory grew by {grown} KiB");
}

/// Opens a TCP connection that sends half a request header and then nothing.
fn slow_socket(port: u16) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    stream
}

fn port_of(server: &Server) -> u16 {
    server.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sockets_are_closed_and_cannot_exhaust_the_server() {
    let options = Options::default().env("NIMBUS_HTTP_HEADER_TIMEOUT_MS", "700");
    let server = Server::start_with(Backend::Sqlite, options).await;
    let port = port_of(&server);
    let mut sockets: Vec<std::net::TcpStream> = (0..300).map(|_| slow_socket(port)).collect();
    // A keep-alive connection that got its answer and then sits idle is closed too.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    idle.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut answer = [0u8; 1024];
    let read = idle.read(&mut answer).expect("answer");
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 200"));
    sockets.push(idle);
    let started = Instant::now();
    assert_eq!(server.call("GET", "/healthz", None, None).await.0, 200, "a normal request while 300 sockets dawdle");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Each read returns when the server closes the socket (well within the budget).
    let mut closed = 0;
    for socket in &mut sockets {
        socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buffer = [0u8; 512];
        match socket.read(&mut buffer) {
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, sockets.len(), "the server closed every socket that never finished its header");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap_or_default();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("").split_whitespace().collect();
    assert_eq!(open_files.get(3), open_files.get(4), "the soft limit was raised to the hard limit: {open_files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_clear_refusal() {
    let options = Options::default().env("NIMBUS_HTTP_MAX_CONNECTIONS", "20");
    let server = Server::start_with(Backend::Sqlite, options).await;
    let port = port_of(&server);
    let held: Vec<std::net::TcpStream> = (0..20).map(|_| slow_socket(port)).collect();
    // Once the server has taken the 20 held sockets, one more is refused.
    let answer = crate::harness::eventually(Duration::from_secs(5), "a refusal over the cap", || async {
        let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        extra.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut answer = String::new();
        let _ = extra.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await;
    assert!(answer.contains("\"unavailable\""), "{answer}");
    drop(held);
    crate::harness::eventually(Duration::from_secs(5), "room again once they close", || async {
        (server.call("GET", "/healthz", None, None).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_from_clients_are_kept_only_when_safe() {
    let server = Server::start(Backend::Sqlite).await;
    let id_of = |value: &'static str| {
        let request = server.client.get(server.url("/healthz")).header("x-request-id", value);
        async move {
            let response = request.send().await.expect("request");
            response.headers()["x-request-id"].to_str().expect("id").to_owned()
        }
    };
    assert_eq!(id_of("trace-abc_123.4").await, "trace-abc_123.4");
    let forged = id_of("1234 method=DELETE path=/v1/admin/users/ALL").await;
    assert!(!forged.contains(' ') && !forged.contains("method="), "{forged}");
    assert_eq!(forged.len(), 36, "a generated id instead: {forged}");
}
