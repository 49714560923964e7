//! Firestore fidelity over HTTP (issue 16), on both backends: users with
//! chosen ids, the rest of the rules language real files use (`getAfter`,
//! `existsAfter`, `math.*`, the literal `(default)` database segment).

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(
    admin_creates_users_with_chosen_ids,
    rules_see_the_request_s_own_writes_and_math,
    timestamps_are_a_type_for_rules_and_writes,
    collection_group_queries_span_every_collection_of_the_id,
    a_firebase_project_is_imported_in_two_commands,
);

async fn password_grant(server: &Server, email: &str, password: &str) -> (u16, Value) {
    let body = json!({"grant_type": "password", "email": email, "password": password});
    server.call("POST", "/v1/auth/token", None, Some(body)).await
}

fn sub_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    serde_json::from_slice::<Value>(&bytes).unwrap_or_default()["sub"].as_str().unwrap_or_default().to_owned()
}

async fn admin_creates_users_with_chosen_ids(backend: Backend) {
    let rules = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /config/{id} { allow read, write: if request.auth.uid in ['root', 'admin']; }
        } }";
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", rules)).await;
    let body = json!({"id": "root", "email": "Root@Example.com", "password": "correct horse",
                      "emailVerified": true, "displayName": "Root", "claims": {"staff": true}});
    let (status, created) = server.admin("POST", "/v1/admin/users", Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    let user = &created["user"];
    assert_eq!((user["id"].as_str(), user["email"].as_str()), (Some("root"), Some("root@example.com")));
    assert_eq!((user["emailVerified"].as_bool(), user["displayName"].as_str()), (Some(true), Some("Root")));
    let (status, session) = password_grant(&server, "root@example.com", "correct horse").await;
    assert_eq!(status, 200, "{session}");
    let token = session["access_token"].as_str().unwrap_or_default();
    assert_eq!(sub_of(token), "root");
    assert_eq!(server.call("PUT", "/v1/docs/config/site", Some(token), Some(json!({"open": true}))).await.0, 201);

    let (status, again) = server.admin("POST", "/v1/admin/users", Some(json!({"id": "root"}))).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("already-exists")), "{again}");
    let (status, _) = server.admin("POST", "/v1/admin/users", Some(json!({"email": "root@example.com"}))).await;
    assert_eq!(status, 409, "the email is taken too");
    for bad in ["a b", "", "x/y", &"x".repeat(129)] {
        let (status, body) = server.admin("POST", "/v1/admin/users", Some(json!({ "id": bad }))).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, random) = server.admin("POST", "/v1/admin/users", Some(json!({"email": "x@example.com"}))).await;
    assert_eq!(status, 201);
    assert_eq!(random["user"]["id"].as_str().map(str::len), Some(20), "an id is made when none is given");
    let (_, someone) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "u@example.com", "password": "correct horse"})))
        .await;
    let token = someone["access_token"].as_str().unwrap_or_default();
    assert_eq!(server.call("POST", "/v1/admin/users", Some(token), Some(json!({"id": "mine"}))).await.0, 403);
    assert_eq!(server.call("POST", "/v1/admin/users", None, Some(json!({"id": "mine"}))).await.0, 403);
}

async fn rules_see_the_request_s_own_writes_and_math(backend: Backend) {
    let rules = "rules_version = '2';
        service cloud.firestore {
          match /databases/(default)/documents {
            match /rooms/{room} {
              allow create: if request.resource.data.count == 0 || existsAfter(/databases/(default)/documents/rooms/$(room)/members/first);
            }
            match /rooms/{room}/members/{uid} {
              allow create: if getAfter(/databases/(default)/documents/rooms/$(room)).data.count == 1;
            }
            match /scores/{id} {
              allow create: if math.abs(request.resource.data.n) < 10 && math.floor(request.resource.data.f) == 2;
            }
          }
        }";
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", rules)).await;
    let together = json!({"writes": [
        {"op": "create", "path": "rooms/r1", "data": {"count": 1}},
        {"op": "create", "path": "rooms/r1/members/first", "data": {"joined": true}},
    ]});
    let (status, body) = server.call("POST", "/v1/batch", None, Some(together)).await;
    assert_eq!(status, 200, "each write's rule sees the other write: {body}");
    let member_alone = json!({"joined": true});
    assert_eq!(server.call("PUT", "/v1/docs/rooms/r2/members/first", None, Some(member_alone)).await.0, 403);
    assert_eq!(server.call("PUT", "/v1/docs/rooms/r3", None, Some(json!({"count": 1}))).await.0, 403);
    assert_eq!(server.call("PUT", "/v1/docs/scores/s1", None, Some(json!({"n": -9, "f": 2.7}))).await.0, 201);
    assert_eq!(server.call("PUT", "/v1/docs/scores/s2", None, Some(json!({"n": -10, "f": 2.7}))).await.0, 403);
    assert_eq!(server.call("PUT", "/v1/docs/scores/s3", None, Some(json!({"n": 1, "f": 3.0}))).await.0, 403);
}

async fn timestamps_are_a_type_for_rules_and_writes(backend: Backend) {
    let rules = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /posts/{id} {
            allow create: if request.resource.data.createdAt == request.time
                          && request.resource.data.createdAt is timestamp
                          && request.resource.data.createdAt + duration.value(1, 'd') > request.time;
            allow read: if resource.data.publishedAt <= request.time;
          }
        } }";
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", rules)).await;
    let (status, created) =
        server.call("POST", "/v1/docs/posts", None, Some(json!({"createdAt": {"$serverTimestamp": true}}))).await;
    assert_eq!(status, 201, "a server timestamp equals request.time: {created}");
    assert_eq!(created["data"]["createdAt"], json!({"$timestamp": created["updateTime"]}));
    let old = json!({"createdAt": {"$timestamp": "2020-01-01T00:00:00Z"}});
    assert_eq!(server.call("POST", "/v1/docs/posts", None, Some(old)).await.0, 403);
    let as_string = json!({"createdAt": created["updateTime"]});
    assert_eq!(server.call("POST", "/v1/docs/posts", None, Some(as_string)).await.0, 403, "a string is no timestamp");

    for (id, when) in [("past", "2020-01-01T00:00:00Z"), ("future", "2999-01-01T00:00:00Z")] {
        let data = json!({"publishedAt": {"$timestamp": when}});
        assert_eq!(server.admin("PUT", &format!("/v1/docs/posts/{id}"), Some(data)).await.0, 201);
    }
    assert_eq!(server.call("GET", "/v1/docs/posts/past", None, None).await.0, 200);
    assert_eq!(server.call("GET", "/v1/docs/posts/future", None, None).await.0, 403);
    let query = json!({"collection": "posts", "where": [["publishedAt", "<", {"$timestamp": "2100-01-01T00:00:00Z"}]]});
    let (status, listed) = server.call("POST", "/v1/query", None, Some(query)).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> =
        listed["documents"].as_array().into_iter().flatten().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, ["past"]);
    let (_, stored) = server.admin("GET", "/v1/docs/posts/past", None).await;
    assert_eq!(stored["data"]["publishedAt"], json!({"$timestamp": "2020-01-01T00:00:00.000000Z"}), "canonical text");
    let bad = json!({"publishedAt": {"$timestamp": "next tuesday"}});
    let (status, body) = server.admin("PUT", "/v1/docs/posts/bad", Some(bad)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
}

async fn signed_up(server: &Server, email: &str) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse"});
    let (_, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&session["user"]["id"]), text(&session["access_token"]))
}

fn ids_of(body: &Value) -> Vec<String> {
    body["documents"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str().map(str::to_owned)).collect()
}

async fn collection_group_queries_span_every_collection_of_the_id(backend: Backend) {
    let rules = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /{path=**}/comments/{id} {
            allow read: if resource.data.author == request.auth.uid;
          }
        } }";
    let toml = "[[indexes]]\ncollectionGroup = \"comments\"\nfields = [\"n\"]\n";
    let options = Options::default().file("rules/app.rules", rules).file("nimbus.toml", toml);
    let server = Server::start_with(backend, options).await;
    let (alice, alice_token) = signed_up(&server, "alice@example.com").await;
    let (bob, _) = signed_up(&server, "bob@example.com").await;
    let comments = [
        ("posts/p1/comments/c1", &alice, 5),
        ("posts/p1/comments/c2", &bob, 1),
        ("posts/p2/comments/c3", &alice, 2),
        ("comments/c4", &alice, 9),
        ("users/u/posts/p9/comments/c5", &alice, 7),
        ("posts/p1/mycomments/c6", &alice, 3),
        ("posts/p3/comments/c7", &bob, 4),
    ];
    let writes: Vec<Value> = comments
        .iter()
        .map(|(path, author, n)| json!({"op": "set", "path": path, "data": {"author": author, "n": n}}))
        .collect();
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await.0, 200);

    let all = json!({"collectionGroup": "comments", "orderBy": ["n"]});
    let (status, body) = server.admin("POST", "/v1/query", Some(all)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids_of(&body),
        [
            "posts/p1/comments/c2",
            "posts/p2/comments/c3",
            "posts/p3/comments/c7",
            "posts/p1/comments/c1",
            "users/u/posts/p9/comments/c5",
            "comments/c4"
        ],
        "every collection named comments, not mycomments"
    );

    let mine = json!({"collectionGroup": "comments", "orderBy": ["n"], "limit": 2});
    let (status, first) = server.call("POST", "/v1/query", Some(&alice_token), Some(mine.clone())).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids_of(&first), ["posts/p2/comments/c3", "posts/p1/comments/c1"], "only her own, across all posts");
    let mut next = mine.clone();
    next["startAfter"] = first["nextCursor"].clone();
    let (_, second) = server.call("POST", "/v1/query", Some(&alice_token), Some(next)).await;
    assert_eq!(ids_of(&second), ["users/u/posts/p9/comments/c5", "comments/c4"]);
    let count = json!({"collectionGroup": "comments", "count": true});
    let (_, counted) = server.call("POST", "/v1/query", Some(&alice_token), Some(count)).await;
    assert_eq!(counted["count"], 4, "{counted}");
    let filtered = json!({"collectionGroup": "comments", "where": [["n", ">", 4]], "orderBy": [["n", "desc"]]});
    let (_, big) = server.call("POST", "/v1/query", Some(&alice_token), Some(filtered)).await;
    assert_eq!(ids_of(&big), ["comments/c4", "users/u/posts/p9/comments/c5", "posts/p1/comments/c1"]);
    let mut wrong = mine.clone();
    wrong["collectionGroup"] = json!("mycomments");
    wrong["startAfter"] = first["nextCursor"].clone();
    assert_eq!(
        server.call("POST", "/v1/query", Some(&alice_token), Some(wrong)).await.0,
        400,
        "a cursor fits its group"
    );
    let signed_out = json!({"collectionGroup": "mycomments"});
    assert_eq!(server.call("POST", "/v1/query", None, Some(signed_out)).await.0, 403, "no rule reaches that group");
    let both = json!({"collection": "comments", "collectionGroup": "comments"});
    assert_eq!(server.admin("POST", "/v1/query", Some(both)).await.0, 400);
    let nested = json!({"collectionGroup": "posts/p1/comments"});
    assert_eq!(server.admin("POST", "/v1/query", Some(nested)).await.0, 400);

    let filler: Vec<Value> =
        (0..300).map(|i| json!({"op": "set", "path": format!("other/o{i}"), "data": {"n": i}})).collect();
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": filler }))).await.0, 200);
    server.sql_rows("ANALYZE").await;
    let ordered = json!({"collectionGroup": "comments", "orderBy": ["n"], "limit": 3});
    let (status, plan) = server.admin("POST", "/v1/admin/explain", Some(ordered)).await;
    assert_eq!(status, 200, "{plan}");
    let plan = plan["plan"].as_str().unwrap_or_default();
    assert!(plan.contains("documents_idx_"), "the plan uses the collection group index:\n{plan}");
}

/// The public test vector of Firebase's scrypt (github.com/firebase/scrypt).
const SIGNER_KEY: &str = "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==";

fn text_of(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn a_firebase_project_is_imported_in_two_commands(backend: Backend) {
    let receipts = r#"
        import { onCreate } from "nimbus:functions";
        export const receipt = onCreate("imported/{id}", async (event, ctx) => {
            await ctx.db.doc(`receipts/${event.params.id}`).set({ from: event.path });
        });
    "#;
    let users = json!({"users": [
        {"localId": "u1", "email": "user1@example.com", "emailVerified": true, "displayName": "User One",
         "passwordHash": "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
         "salt": "42xEC+ixf3L2lw==", "customAttributes": "{\"team\":\"editors\"}", "createdAt": "1600000000000",
         "providerUserInfo": [{"providerId": "password"}]},
        {"localId": "google-only", "email": "g@example.com", "providerUserInfo": [{"providerId": "google.com"}]},
        {"localId": "broken", "email": "not an email"},
        {"localId": "gone", "email": "gone@example.com", "disabled": true}
    ]});
    let documents = [
        r#"{"path": "imported/a", "data": {"n": 1, "at": {"$timestamp": "2026-01-01T01:00:00+01:00"}}}"#,
        r#"{"path": "imported/b", "data": {"n": 2}}"#,
        "not json",
        r#"{"path": "imported", "data": {}}"#,
    ];
    let options = Options::default()
        .file("functions/receipts.js", receipts)
        .file("users.json", &users.to_string())
        .file("docs.jsonl", &documents.join("\n"))
        .file("later.jsonl", r#"{"path": "imported/c", "data": {"n": 3}}"#);
    let server = Server::start_with(backend, options).await;
    let import_users = [
        "import",
        "firebase-auth",
        "users.json",
        "--hash-key",
        SIGNER_KEY,
        "--salt-separator",
        "Bw==",
        "--rounds",
        "8",
        "--mem-cost",
        "14",
    ];
    let output = server.run_cli(&import_users);
    let text = text_of(&output);
    assert!(!output.status.success(), "one user was refused: {text}");
    assert!(text.contains("3 users imported, 0 skipped (already there), 1 refused"), "{text}");
    assert!(text.contains("users[2] (localId broken)"), "{text}");

    let (status, session) = password_grant(&server, "user1@example.com", "user1password").await;
    assert_eq!(status, 200, "the old Firebase password works: {session}");
    let token = session["access_token"].as_str().unwrap_or_default();
    assert_eq!(sub_of(token), "u1");
    let (_, me) = server.call("GET", "/v1/auth/user", Some(token), None).await;
    assert_eq!((me["emailVerified"].as_bool(), me["displayName"].as_str()), (Some(true), Some("User One")), "{me}");
    let (_, admin_view) = server.admin("GET", "/v1/admin/users/u1", None).await;
    assert_eq!(admin_view["claims"]["team"], "editors", "{admin_view}");
    let hash = server.sql_rows("SELECT password_hash FROM users WHERE id = 'u1'").await;
    assert!(hash[0][0].as_deref().unwrap_or_default().starts_with("$argon2id$"), "rehashed at the first sign-in");
    assert_eq!(password_grant(&server, "user1@example.com", "user1password").await.0, 200, "and still works");
    assert_eq!(password_grant(&server, "user1@example.com", "wrong").await.0, 401);
    assert_eq!(password_grant(&server, "g@example.com", "anything at all").await.0, 401, "no password: OAuth only");
    assert_eq!(password_grant(&server, "gone@example.com", "anything at all").await.0, 401);
    let again = text_of(&server.run_cli(&import_users));
    assert!(again.contains("0 users imported, 3 skipped"), "importing twice skips existing ids: {again}");

    let output = server.run_cli(&["import", "firestore", "docs.jsonl"]);
    let text = text_of(&output);
    assert!(text.contains("2 documents imported, 0 skipped (already there), 2 refused"), "{text}");
    assert!(text.contains("line 3: not JSON") && text.contains("line 4: path"), "{text}");
    let (_, a) = server.admin("GET", "/v1/docs/imported/a", None).await;
    assert_eq!(a["data"]["at"], json!({"$timestamp": "2026-01-01T00:00:00.000000Z"}));
    crate::harness::eventually(std::time::Duration::from_secs(20), "the import's trigger ran", || async {
        (server.admin("GET", "/v1/docs/receipts/b", None).await.0 == 200).then_some(())
    })
    .await;
    assert!(server.run_cli(&["import", "firestore", "later.jsonl", "--no-triggers"]).status.success());
    assert_eq!(server.admin("GET", "/v1/docs/imported/c", None).await.0, 200);
    let jobs = server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM jobs WHERE payload LIKE '%imported/c%'").await;
    assert_eq!(jobs[0][0].as_deref(), Some("0"), "--no-triggers enqueues no job");

    let output = server.run_cli(&["export", "firestore", "out.jsonl"]);
    assert!(output.status.success(), "{}", text_of(&output));
    let exported = std::fs::read_to_string(server.dir.path().join("out.jsonl")).unwrap_or_default();
    let lines: Vec<Value> = exported.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(paths, ["imported/a", "imported/b", "imported/c", "receipts/a", "receipts/b"]);
    assert_eq!(lines[0]["data"], a["data"], "the wire form, timestamps included");
}
