//! Security rules over HTTP on both backends: owners, forged fields, lists
//! filtered by rules, admin claims, subcollections and recursive wildcards,
//! get()/exists(), batches with a denied write, a broken rules file.

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

const RULES: &str = r#"
rules_version = '2';
service cloud.firestore {
  match /databases/{database}/documents {
    function signedIn() { return request.auth != null; }
    function isAdmin() { return signedIn() && request.auth.token.admin == true; }

    match /notes/{noteId} {
      allow read: if signedIn() && resource.data.owner == request.auth.uid;
      allow create: if signedIn()
                    && request.resource.data.owner == request.auth.uid
                    && request.resource.data.keys().hasOnly(['owner', 'text', 'n']);
      allow update: if resource.data.owner == request.auth.uid
                    && request.resource.data.owner == resource.data.owner;
      allow delete: if resource.data.owner == request.auth.uid || isAdmin();

      match /comments/{commentId} {
        allow read: if signedIn();
        allow create: if exists(/databases/$(database)/documents/notes/$(noteId))
                      && get(/databases/$(database)/documents/notes/$(noteId)).data.open == true;
      }
    }
    match /products/{productId} {
      allow read: if true;
      allow write: if isAdmin();
    }
    match /shared/{path=**} {
      allow read: if signedIn();
    }
    match /fresh/{id} {
      allow read: if signedIn();
      allow create: if signedIn() && resource == null;
    }
    match /big/{id} {
      allow read: if resource.data.n >= 9007199254740993;
    }
  }
}
"#;

async fn start(backend: Backend) -> Server {
    Server::start_with(backend, Options::default().file("rules/app.rules", RULES)).await
}

async fn user(server: &Server, email: &str) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse"});
    let (status, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    (session["user"]["id"].as_str().unwrap().to_owned(), session["access_token"].as_str().unwrap().to_owned())
}

fn ids(body: &Value) -> Vec<String> {
    body["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

on_both_backends!(
    owners_read_and_write_their_own_documents,
    lists_show_only_what_the_caller_may_read,
    list_conditions_sql_cannot_decide_exactly_are_checked_per_row,
    admin_claim_grants_writes,
    get_and_exists_read_other_documents,
    a_batch_with_one_denied_write_is_refused_whole,
    recursive_wildcards_match_nested_paths,
    rules_reload_from_the_folder_and_keep_serving_on_a_broken_file,
    admin_api_reads_replaces_and_tests_rules,
    reloading_under_load_fails_no_request,
    creates_at_a_server_drawn_id_are_checked_like_any_create,
);

/// `POST` on a collection (a server-drawn id) is decided by the create rule
/// with `resource == null`, reads other documents through get()/exists(), and
/// a refused one writes nothing.
async fn creates_at_a_server_drawn_id_are_checked_like_any_create(backend: Backend) {
    let server = start(backend).await;
    let (ann, ann_token) = user(&server, "ann@example.com").await;
    let token = Some(ann_token.as_str());
    let (status, created) =
        server.call("POST", "/v1/docs/notes", token, Some(json!({"owner": ann, "text": "a"}))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/docs/{}", created["path"].as_str().unwrap());
    assert_eq!(server.call("GET", &path, token, None).await.1["data"], json!({"owner": ann, "text": "a"}));
    for refused in [json!({"owner": "someone-else", "text": "b"}), json!({"owner": ann, "extra": true})] {
        assert_eq!(server.call("POST", "/v1/docs/notes", token, Some(refused)).await.0, 403);
    }
    assert_eq!(server.call("POST", "/v1/docs/notes", None, Some(json!({"owner": ann}))).await.0, 403);
    let count = json!({"collection": "notes", "count": true});
    assert_eq!(
        server.admin("POST", "/v1/query", Some(count)).await.1,
        json!({"count": 1}),
        "refused creates wrote nothing"
    );

    let (status, fresh) = server.call("POST", "/v1/docs/fresh", token, Some(json!({"n": 1}))).await;
    assert_eq!(status, 201, "resource == null holds for a new id: {fresh}");

    server.admin("PUT", "/v1/docs/notes/open", Some(json!({"owner": ann, "open": true}))).await;
    server.admin("PUT", "/v1/docs/notes/shut", Some(json!({"owner": ann, "open": false}))).await;
    let comment = || Some(json!({"text": "hi"}));
    assert_eq!(server.call("POST", "/v1/docs/notes/open/comments", token, comment()).await.0, 201);
    assert_eq!(server.call("POST", "/v1/docs/notes/shut/comments", token, comment()).await.0, 403);
    assert_eq!(server.call("POST", "/v1/docs/notes/missing/comments", token, comment()).await.0, 403);
}

const OPEN_PRODUCTS: &str = "service cloud.firestore { match /products/{id} { allow read: if true; } }";
const CLOSED_PRODUCTS: &str = "service cloud.firestore { match /products/{id} { allow read: if false; } }";

/// A signed-out read of `products/p1`: its status.
async fn read_on(server: &Server) -> u16 {
    server.call("GET", "/v1/docs/products/p1", None, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_changed_on_one_instance_take_effect_on_the_others() {
    let a = Server::start_with(Backend::Postgres, Options::default().file("rules/a.rules", CLOSED_PRODUCTS)).await;
    a.admin("PUT", "/v1/docs/products/p1", Some(json!({"name": "cat"}))).await;
    let mut b = a.sibling(&[]).await;
    assert_eq!(read_on(&b).await, 403);

    let started = std::time::Instant::now();
    let files = json!({"files": [{"name": "a.rules", "source": OPEN_PRODUCTS}]});
    assert_eq!(a.admin("PUT", "/v1/admin/rules", Some(files)).await.0, 204);
    crate::harness::eventually(std::time::Duration::from_secs(5), "the other instance reads", || async {
        (read_on(&b).await == 200).then_some(())
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());

    // A restart keeps the deployment, although that instance's folder still has the older rules.
    b.crash_and_restart().await;
    assert_eq!(read_on(&b).await, 200, "the deployment, newer than the folder, is in force");
    // An edit of one instance's folder is deployed to the others.
    std::fs::write(b.dir.path().join("rules/a.rules"), format!("{CLOSED_PRODUCTS}\n// closed again")).unwrap();
    crate::harness::eventually(std::time::Duration::from_secs(5), "the edit reaches the first instance", || async {
        (read_on(&a).await == 403).then_some(())
    })
    .await;
    let (_, listing) = a.admin("GET", "/v1/admin/rules", None).await;
    assert!(listing["files"][0]["source"].as_str().is_some_and(|s| s.ends_with("// closed again")), "{listing}");
}

async fn eventually_status(server: &Server, path: &str, expected: u16) {
    crate::harness::eventually(std::time::Duration::from_secs(10), &format!("{path} answering {expected}"), || async {
        (server.call("GET", path, None, None).await.0 == expected).then_some(())
    })
    .await
}

async fn rules_reload_from_the_folder_and_keep_serving_on_a_broken_file(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/a.rules", CLOSED_PRODUCTS)).await;
    server.admin("PUT", "/v1/docs/products/p1", Some(json!({"name": "cat"}))).await;
    assert_eq!(server.call("GET", "/v1/docs/products/p1", None, None).await.0, 403);
    let file = server.dir.path().join("rules/a.rules");
    std::fs::write(&file, OPEN_PRODUCTS).unwrap();
    eventually_status(&server, "/v1/docs/products/p1", 200).await;
    std::fs::write(&file, "service cloud.firestore { match /products/{id} { allow read: if nope(); } }").unwrap();
    // The watcher refuses the broken file: the admin API says so, with its position.
    let refused = crate::harness::eventually(std::time::Duration::from_secs(10), "the refusal", || async {
        let (_, body) = server.admin("GET", "/v1/admin/rules", None).await;
        body["error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(refused.contains("a.rules:1:") && refused.contains("nope"), "{refused}");
    assert_eq!(server.call("GET", "/v1/docs/products/p1", None, None).await.0, 200, "the last good rules keep serving");
    std::fs::write(&file, CLOSED_PRODUCTS).unwrap();
    eventually_status(&server, "/v1/docs/products/p1", 403).await;
    let (_, status) = server.admin("GET", "/v1/admin/rules", None).await;
    assert_eq!(status["error"], Value::Null, "a good reload clears the error: {status}");
    assert!(status["loadedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{status}");
}

async fn admin_api_reads_replaces_and_tests_rules(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/a.rules", CLOSED_PRODUCTS)).await;
    let (status, body) = server.admin("GET", "/v1/admin/rules", None).await;
    assert_eq!((status, body["files"][0]["name"].as_str()), (200, Some("a.rules")));
    let broken = json!({"files": [{"name": "b.rules", "source": "service cloud.firestore { match /x/{y} { allow read: if y.bogus(); } }"}]});
    let (status, body) = server.admin("PUT", "/v1/admin/rules", Some(broken)).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("b.rules:1:"), "{body}");
    let good = json!({"files": [{"name": "b.rules", "source": OPEN_PRODUCTS}]});
    assert_eq!(server.admin("PUT", "/v1/admin/rules", Some(good)).await.0, 204);
    server.admin("PUT", "/v1/docs/products/p1", Some(json!({"name": "cat"}))).await;
    assert_eq!(server.call("GET", "/v1/docs/products/p1", None, None).await.0, 200, "in force at once");
    assert!(!server.dir.path().join("rules/a.rules").exists(), "persisted: the old file is gone");
    assert_eq!(std::fs::read_to_string(server.dir.path().join("rules/b.rules")).unwrap(), OPEN_PRODUCTS);
    let test = json!({"request": {"method": "get", "path": "products/p1"}});
    let (status, body) = server.admin("POST", "/v1/admin/rules:test", Some(test)).await;
    assert_eq!(
        (status, body["allowed"].as_bool(), body["line"].as_u64(), body["col"].as_u64()),
        (200, Some(true), Some(1), Some(50))
    );
    let test = json!({"files": [{"name": "c.rules", "source": CLOSED_PRODUCTS}], "request": {"method": "get", "path": "products/p1"}});
    let (_, body) = server.admin("POST", "/v1/admin/rules:test", Some(test)).await;
    assert_eq!(body["allowed"], false);
    let (_, token) = user(&server, "u@example.com").await;
    assert_eq!(server.call("GET", "/v1/admin/rules", Some(&token), None).await.0, 403);
}

async fn reloading_under_load_fails_no_request(backend: Backend) {
    let server =
        std::sync::Arc::new(Server::start_with(backend, Options::default().file("rules/a.rules", OPEN_PRODUCTS)).await);
    server.admin("PUT", "/v1/docs/products/p1", Some(json!({"name": "cat"}))).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (server, stop) = (server.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(server.call("GET", "/v1/docs/products/p1", None, None).await.0);
            }
            statuses
        }));
    }
    for i in 0..5 {
        let source = format!("service cloud.firestore {{ match /products/{{id}} {{ allow read: if {i} >= 0; }} }}");
        let files = json!({"files": [{"name": "a.rules", "source": source}]});
        assert_eq!(server.admin("PUT", "/v1/admin/rules", Some(files)).await.0, 204);
        let edited = format!("{i} < 100");
        std::fs::write(server.dir.path().join("rules/a.rules"), OPEN_PRODUCTS.replace("true", &edited)).unwrap();
        crate::harness::eventually(std::time::Duration::from_secs(10), "the edited file is loaded", || async {
            let (_, rules) = server.admin("GET", "/v1/admin/rules", None).await;
            rules["files"][0]["source"].as_str().is_some_and(|s| s.contains(&edited)).then_some(())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        let statuses = reader.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "every read is allowed by every version: {statuses:?}");
    }
    assert!(total > 20, "{total} requests ran during the reloads");
}

#[test]
fn the_demo_rules_pass_their_cases_and_the_cli_reports_errors() {
    let root = crate::harness::repository_root();
    let (passed, stdout, stderr) = crate::harness::cli_in(&root, &["rules", "test", "rules/petstore.cases.json"]);
    assert!(passed, "{stdout}{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(crate::harness::cli_in(&root, &["rules", "check", "rules"]).0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.rules"), "service cloud.firestore {\n match /a/{b} { allow read: if 1 +; }\n}")
        .unwrap();
    let (passed, _, stderr) = crate::harness::cli_in(dir.path(), &["rules", "check", "."]);
    assert!(!passed);
    assert!(stderr.contains("x.rules:2:35: expected an expression"), "{stderr}");
}

async fn rows_read(server: &Server) -> u64 {
    server.metric("nimbus_documents_rows_read_total").await.map_or(0, |n| n as u64)
}

async fn owners_read_and_write_their_own_documents(backend: Backend) {
    let server = start(backend).await;
    let (alice, alice_token) = user(&server, "alice@example.com").await;
    let (_, bob_token) = user(&server, "bob@example.com").await;
    let a = Some(alice_token.as_str());
    let b = Some(bob_token.as_str());
    let (status, body) =
        server.call("PUT", "/v1/docs/notes/n1", a, Some(json!({"owner": alice, "text": "mine"}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        server.call("PUT", "/v1/docs/notes/n2", b, Some(json!({"owner": alice, "text": "forged"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission-denied")), "forged owner");
    let (status, _) =
        server.call("PUT", "/v1/docs/notes/n3", a, Some(json!({"owner": alice, "text": "x", "extra": 1}))).await;
    assert_eq!(status, 403, "fields are validated");
    assert_eq!(server.call("GET", "/v1/docs/notes/n1", a, None).await.0, 200);
    assert_eq!(server.call("GET", "/v1/docs/notes/n1", b, None).await.0, 403, "another user's note");
    assert_eq!(server.call("GET", "/v1/docs/notes/n1", None, None).await.0, 403, "signed out");
    assert_eq!(server.call("PATCH", "/v1/docs/notes/n1", b, Some(json!({"text": "hacked"}))).await.0, 403);
    assert_eq!(
        server.call("PATCH", "/v1/docs/notes/n1", a, Some(json!({"owner": "bob"}))).await.0,
        403,
        "owner is fixed"
    );
    assert_eq!(server.call("PATCH", "/v1/docs/notes/n1", a, Some(json!({"text": "edited"}))).await.0, 200);
    assert_eq!(server.call("DELETE", "/v1/docs/notes/n1", b, None).await.0, 403);
    assert_eq!(server.call("DELETE", "/v1/docs/notes/n1", a, None).await.0, 204);
    assert_eq!(server.call("GET", "/v1/docs/other/x", a, None).await.0, 403, "default deny");
}

async fn lists_show_only_what_the_caller_may_read(backend: Backend) {
    let server = start(backend).await;
    let (alice, alice_token) = user(&server, "alice@example.com").await;
    let (bob, _) = user(&server, "bob@example.com").await;
    let writes: Vec<Value> = (0..30)
        .map(|i| {
            let owner = if i % 3 == 0 { &alice } else { &bob };
            json!({"op": "set", "path": format!("notes/n{i:02}"), "data": {"owner": owner, "n": i}})
        })
        .collect();
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await.0, 200);
    let a = Some(alice_token.as_str());
    let query = json!({"collection": "notes", "orderBy": ["n"], "limit": 4});
    let (status, first) = server.call("POST", "/v1/query", a, Some(query.clone())).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), ["n00", "n03", "n06", "n09"], "only alice's notes, and a full page");
    let mut next = query.clone();
    next["startAfter"] = first["nextCursor"].clone();
    let (_, second) = server.call("POST", "/v1/query", a, Some(next)).await;
    assert_eq!(ids(&second), ["n12", "n15", "n18", "n21"]);
    let before = rows_read(&server).await;
    let (_, all) = server.call("GET", "/v1/docs/notes?limit=100", a, None).await;
    assert_eq!(ids(&all).len(), 10);
    assert_eq!(all["nextCursor"], Value::Null);
    assert_eq!(
        rows_read(&server).await - before,
        10,
        "the owner condition is pushed into SQL: only visible rows are read"
    );
    let (status, counted) =
        server.call("POST", "/v1/query", a, Some(json!({"collection": "notes", "count": true}))).await;
    assert_eq!((status, counted), (200, json!({"count": 10})), "counts see only readable documents");
    let sums =
        json!({"collection": "notes", "aggregate": {"total": ["sum", "n"], "top": ["max", "n"], "all": ["count"]}});
    let (_, summed) = server.call("POST", "/v1/query", a, Some(sums)).await;
    assert_eq!(summed["aggregates"], json!({"total": 135.0, "top": 27.0, "all": 10}));
}

/// SQL compares numbers as doubles, so 2^53 passes `>= 2^53 + 1` there; the
/// rules compare integers exactly, and the per-row check must drop it.
async fn list_conditions_sql_cannot_decide_exactly_are_checked_per_row(backend: Backend) {
    let server = start(backend).await;
    let (_, token) = user(&server, "alice@example.com").await;
    let writes = json!([
        {"op": "set", "path": "big/a", "data": {"n": 9007199254740992_i64}},
        {"op": "set", "path": "big/b", "data": {"n": 9007199254740994_i64}},
        {"op": "set", "path": "big/c", "data": {"n": "9007199254740999"}},
    ]);
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await.0, 200);
    let t = Some(token.as_str());
    let (status, listed) = server.call("GET", "/v1/docs/big", t, None).await;
    assert_eq!((status, ids(&listed)), (200, vec!["b".to_owned()]), "{listed}");
    let (_, counted) = server.call("POST", "/v1/query", t, Some(json!({"collection": "big", "count": true}))).await;
    assert_eq!(counted, json!({"count": 1}));
    assert_eq!(server.call("GET", "/v1/docs/big/a", t, None).await.0, 403);
}

async fn admin_claim_grants_writes(backend: Backend) {
    let server = start(backend).await;
    let (admin_id, token) = user(&server, "admin@example.com").await;
    let t = Some(token.as_str());
    assert_eq!(server.call("PUT", "/v1/docs/products/p1", t, Some(json!({"name": "cat"}))).await.0, 403);
    server.admin("PATCH", &format!("/v1/admin/users/{admin_id}"), Some(json!({"claims": {"admin": true}}))).await;
    let body = json!({"email": "admin@example.com", "password": "correct horse", "grant_type": "password"});
    let (_, session) = server.call("POST", "/v1/auth/token", None, Some(body)).await;
    let admin_token = session["access_token"].as_str().unwrap();
    assert_eq!(
        server.call("PUT", "/v1/docs/products/p1", Some(admin_token), Some(json!({"name": "cat"}))).await.0,
        201
    );
    assert_eq!(server.call("GET", "/v1/docs/products/p1", None, None).await.0, 200, "products are public");
}

async fn get_and_exists_read_other_documents(backend: Backend) {
    let server = start(backend).await;
    let (_, token) = user(&server, "c@example.com").await;
    let t = Some(token.as_str());
    server.admin("PUT", "/v1/docs/notes/open", Some(json!({"owner": "x", "open": true}))).await;
    server.admin("PUT", "/v1/docs/notes/closed", Some(json!({"owner": "x", "open": false}))).await;
    assert_eq!(server.call("PUT", "/v1/docs/notes/open/comments/c1", t, Some(json!({"text": "hi"}))).await.0, 201);
    assert_eq!(server.call("PUT", "/v1/docs/notes/closed/comments/c1", t, Some(json!({"text": "hi"}))).await.0, 403);
    assert_eq!(server.call("PUT", "/v1/docs/notes/missing/comments/c1", t, Some(json!({"text": "hi"}))).await.0, 403);
    assert_eq!(server.call("GET", "/v1/docs/notes/open/comments/c1", t, None).await.0, 200, "subcollection rule");
}

async fn a_batch_with_one_denied_write_is_refused_whole(backend: Backend) {
    let server = start(backend).await;
    let (alice, token) = user(&server, "alice@example.com").await;
    let t = Some(token.as_str());
    let batch = json!({"writes": [
        {"op": "set", "path": "notes/ok", "data": {"owner": alice}},
        {"op": "set", "path": "products/p9", "data": {"name": "nope"}}
    ]});
    let (status, body) = server.call("POST", "/v1/batch", t, Some(batch)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("writes[1]"), "{body}");
    assert_eq!(server.admin("GET", "/v1/docs/notes/ok", None).await.0, 404, "nothing was written");
}

async fn recursive_wildcards_match_nested_paths(backend: Backend) {
    let server = start(backend).await;
    let (_, token) = user(&server, "r@example.com").await;
    server.admin("PUT", "/v1/docs/shared/a/deep/b", Some(json!({"v": 1}))).await;
    assert_eq!(server.call("GET", "/v1/docs/shared/a/deep/b", Some(&token), None).await.0, 200);
    assert_eq!(server.call("GET", "/v1/docs/shared/a/deep/b", None, None).await.0, 403);
    assert_eq!(server.call("PUT", "/v1/docs/shared/a/deep/b", Some(&token), Some(json!({}))).await.0, 403);
}

#[test]
fn a_broken_rules_file_stops_the_start_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/bad.rules"),
        "service cloud.firestore {\n  match /a/{b} {\n    allow read: if nope();\n  }\n}\n",
    )
    .unwrap();
    let output = crate::harness::base_command(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.rules:3:20: unknown function `nope`"), "{stderr}");
}
