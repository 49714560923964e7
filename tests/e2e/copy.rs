//! `nimbus copy --to postgres://…`: a project that ran on SQLite moves to an
//! empty PostgreSQL database whole — its users sign in with the same
//! passwords, sessions and tokens issued before go on working (the signing
//! keys came along), documents keep their versions, dead letters can still
//! be replayed, the change log goes on from its last position — and a
//! database that is not empty is refused.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Options, PgDatabase, Server};

const FAILING: &str = r#"
import { onCreate } from "nimbus:functions";
export const charge = onCreate("payments/{id}", async () => { throw new Error("the provider is down"); });
"#;

const OPEN: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents { match /items/{id} { allow read: if true; } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_project_moves_to_postgres_whole() {
    let options = Options::default()
        .file("rules/app.rules", OPEN)
        .file("functions/payments.js", FAILING)
        .env("NIMBUS_FUNCTIONS_RETRY_ATTEMPTS", "1");
    let mut server = Server::start_with(crate::harness::Backend::Sqlite, options).await;
    let body = json!({"email": "m@example.com", "password": "correct horse"});
    let (status, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    server.admin("PUT", "/v1/docs/items/a", Some(json!({"v": 1}))).await;
    server.admin("PATCH", "/v1/docs/items/a", Some(json!({"v": 2}))).await;
    server.admin("PUT", "/v1/docs/payments/p1", Some(json!({"amount": 5}))).await;
    crate::harness::eventually(Duration::from_secs(10), "a dead letter", || async {
        let (_, dead) = server.admin("GET", "/v1/admin/functions/dead-letters", None).await;
        dead["deadLetters"].as_array().is_some_and(|d| d.len() == 1).then_some(())
    })
    .await;
    let last_position = server.sql_rows("SELECT CAST(MAX(seq) AS TEXT) FROM changes").await[0][0].clone();
    let last_position: i64 = last_position.and_then(|p| p.parse().ok()).expect("changes were logged");
    server.terminate();

    let database = PgDatabase::create().await;
    let output = server.run_cli(&["copy", "--to", &database.url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("documents: 2 rows"), "{stdout}");
    assert!(stdout.contains("users: 1 rows") && stdout.contains("signing_keys: 1 rows"), "{stdout}");
    assert!(stdout.contains("set NIMBUS_DATABASE_URL=postgres://"), "the one setting to change: {stdout}");
    let again = server.run_cli(&["copy", "--to", &database.url]);
    assert!(!again.status.success(), "a database that is not empty is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    server.restart_on(database).await;
    let (status, item) = server.call("GET", "/v1/docs/items/a", None, None).await;
    assert_eq!((status, item["version"].as_i64(), item["data"]["v"].as_i64()), (200, Some(2), Some(2)), "{item}");
    let token = session["access_token"].as_str().expect("token");
    assert_eq!(server.call("GET", "/v1/auth/user", Some(token), None).await.0, 200, "a token issued before verifies");
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": session["refresh_token"]});
    assert_eq!(server.call("POST", "/v1/auth/token", None, Some(refresh)).await.0, 200, "the session goes on");
    let password = json!({"grant_type": "password", "email": "m@example.com", "password": "correct horse"});
    assert_eq!(server.call("POST", "/v1/auth/token", None, Some(password)).await.0, 200, "the same password");
    let (_, dead) = server.admin("GET", "/v1/admin/functions/dead-letters", None).await;
    assert_eq!(dead["deadLetters"].as_array().map(Vec::len), Some(1), "{dead}");
    server.admin("PUT", "/v1/docs/items/b", Some(json!({"v": 1}))).await;
    let next = server.sql_rows("SELECT CAST(MAX(seq) AS TEXT) FROM changes").await[0][0].clone();
    let next: i64 = next.and_then(|p| p.parse().ok()).expect("a position");
    assert!(next > last_position, "the change log goes on: {next} after {last_position}");
}
