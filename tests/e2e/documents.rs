//! Documents over HTTP on both backends: CRUD, merges and transforms,
//! preconditions, races, batches, limits, the shared table of query cases,
//! cursors, aggregates and index use.

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(
    crud_round_trip,
    patch_merges_and_applies_transforms,
    preconditions,
    racing_conditional_updates_have_one_winner,
    failing_batch_leaves_no_trace,
    batch_commits_across_collections,
    end_users_are_denied_by_default,
    limits_and_bad_input,
    query_cases_match_on_both_backends,
    cursors_page_through_and_survive_inserts,
    counts_and_aggregates,
    declared_index_is_used,
    schema_rejects_non_matching_documents,
    in_flight_request_finishes_on_sigterm,
    every_change_is_logged_in_commit_order,
    concurrent_creates_commit_together_and_leave_room_for_other_writes,
    acknowledged_writes_survive_a_kill,
);

/// collection, id, kind, version, before, after
type ChangeRow = (String, String, String, String, Option<Value>, Option<Value>);

async fn every_change_is_logged_in_commit_order(backend: Backend) {
    let server = Server::start(backend).await;
    server.admin("PUT", "/v1/docs/log/a", Some(json!({"v": 1}))).await;
    server.admin("PATCH", "/v1/docs/log/a", Some(json!({"v": 2}))).await;
    server.admin("DELETE", "/v1/docs/log/a", None).await;
    server.admin("DELETE", "/v1/docs/log/never", None).await;
    let batch = json!({"writes": [{"op": "create", "path": "log/b", "data": {}}, {"op": "set", "path": "log/c/sub/d", "data": {"x": true}}]});
    server.admin("POST", "/v1/batch", Some(batch)).await;
    let failing = json!({"writes": [{"op": "create", "path": "log/e", "data": {}}, {"op": "create", "path": "log/b", "data": {}}]});
    assert_eq!(server.admin("POST", "/v1/batch", Some(failing)).await.0, 409);
    let rows = server
        .sql_rows("SELECT collection, doc_id, kind, CAST(version AS TEXT), CAST(before AS TEXT), CAST(after AS TEXT) FROM changes ORDER BY seq")
        .await;
    let compact = |v: &Option<String>| v.as_ref().map(|t| serde_json::from_str::<Value>(t).unwrap());
    let summary: Vec<ChangeRow> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
                r[3].clone().unwrap(),
                compact(&r[4]),
                compact(&r[5]),
            )
        })
        .collect();
    let expected = vec![
        ("log", "a", "create", "1", None, Some(json!({"v": 1}))),
        ("log", "a", "update", "2", Some(json!({"v": 1})), Some(json!({"v": 2}))),
        ("log", "a", "delete", "3", Some(json!({"v": 2})), None),
        ("log", "b", "create", "1", None, Some(json!({}))),
        ("log/c/sub", "d", "create", "1", None, Some(json!({"x": true}))),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(a, b, c, d, e, f)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned(), e, f))
        .collect();
    assert_eq!(summary, expected, "one row per change, none for a no-op delete or a failed batch");
}

/// Many clients creating at once (on SQLite, commits grouped into shared
/// transactions) while other writes — updates and a sign-up, which on SQLite
/// must get the write connection from the group writer — run alongside.
async fn concurrent_creates_commit_together_and_leave_room_for_other_writes(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(backend).await);
    server.admin("PUT", "/v1/docs/counter/c", Some(json!({"n": 0}))).await;
    let mut creates = Vec::new();
    for i in 0..64 {
        let server = server.clone();
        creates.push(tokio::spawn(async move { server.admin("POST", "/v1/docs/crowd", Some(json!({"i": i}))).await }));
    }
    let mut updates = Vec::new();
    for _ in 0..8 {
        let server = server.clone();
        let increment = json!({"n": {"$increment": 1}});
        updates.push(tokio::spawn(async move { server.admin("PATCH", "/v1/docs/counter/c", Some(increment)).await.0 }));
    }
    let signup = json!({"email": "busy@example.com", "password": "correct horse"});
    let signed_up = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        server.call("POST", "/v1/auth/signup", None, Some(signup)),
    )
    .await
    .expect("a sign-up during a burst of creates finishes");
    assert_eq!(signed_up.0, 201, "{}", signed_up.1);
    let mut ids = std::collections::HashSet::new();
    for (i, task) in creates.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!((status, &body["data"]), (201, &json!({"i": i})), "{body}");
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 64, "every create got its own id");
    for task in updates {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(server.admin("GET", "/v1/docs/counter/c", None).await.1["data"], json!({"n": 8}));
    let (_, counted) = server.admin("POST", "/v1/query", Some(json!({"collection": "crowd", "count": true}))).await;
    assert_eq!(counted, json!({"count": 64}));
    let logged = server
        .sql_rows("SELECT doc_id, CAST(after AS TEXT) FROM changes WHERE collection = 'crowd' AND kind = 'create'")
        .await;
    assert_eq!(logged.len(), 64, "one change-log row per create");
    for row in logged {
        let id = row[0].clone().unwrap();
        let (_, doc) = server.admin("GET", &format!("/v1/docs/crowd/{id}"), None).await;
        assert_eq!(
            Some(doc["data"].to_string()),
            row[1].as_deref().map(|t| serde_json::from_str::<Value>(t).unwrap().to_string())
        );
    }
}

async fn crud_round_trip(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, doc) = server.admin("PUT", "/v1/docs/posts/p1", Some(json!({"title": "hi", "n": 1}))).await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(
        (doc["id"].as_str(), doc["path"].as_str(), doc["version"].as_i64()),
        (Some("p1"), Some("posts/p1"), Some(1))
    );
    assert_eq!(doc["data"], json!({"title": "hi", "n": 1}));
    assert!(doc["createTime"].as_str().unwrap().ends_with('Z'));
    let (status, doc) = server.admin("PUT", "/v1/docs/posts/p1", Some(json!({"title": "again"}))).await;
    assert_eq!((status, doc["version"].as_i64(), doc["data"].clone()), (200, Some(2), json!({"title": "again"})));
    let (status, got) = server.admin("GET", "/v1/docs/posts/p1", None).await;
    assert_eq!((status, got), (200, doc));
    let (status, _) = server.admin("PUT", "/v1/docs/posts/p1/comments/c1", Some(json!({"text": "nested"}))).await;
    assert_eq!(status, 201);
    let (status, created) = server.admin("POST", "/v1/docs/posts/p1/comments", Some(json!({"text": "auto"}))).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(id.len(), 20);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    let (status, list) = server.admin("GET", "/v1/docs/posts/p1/comments", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["documents"].as_array().unwrap().len(), 2);
    let (status, _) = server.admin("DELETE", "/v1/docs/posts/p1", None).await;
    assert_eq!(status, 204);
    let (status, body) = server.admin("GET", "/v1/docs/posts/p1", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")));
    let (status, _) = server.admin("DELETE", "/v1/docs/posts/p1", None).await;
    assert_eq!(status, 204, "deleting a missing document succeeds");
    let (status, body) = server.admin("GET", "/v1/docs/posts/p1/comments/c1", None).await;
    assert_eq!((status, body["data"]["text"].as_str()), (200, Some("nested")), "subcollections are independent");
    let (status, odd) = server.admin("PUT", "/v1/docs/posts/a%22b%5Cc%20d", Some(json!({}))).await;
    assert_eq!((status, odd["id"].as_str(), odd["path"].as_str()), (201, Some("a\"b\\c d"), Some("posts/a\"b\\c d")));
}

async fn patch_merges_and_applies_transforms(backend: Backend) {
    let server = Server::start(backend).await;
    server
        .admin("PUT", "/v1/docs/p/a", Some(json!({"n": 1, "dims": {"w": 1, "h": 2}, "tags": ["x"], "gone": 1})))
        .await;
    let patch = json!({
        "n": {"$increment": 41}, "dims": {"w": 5}, "tags": {"$arrayUnion": ["y", "x"]},
        "gone": {"$delete": true}, "at": {"$serverTimestamp": true}, "nothing": null
    });
    let (status, doc) = server.admin("PATCH", "/v1/docs/p/a", Some(patch)).await;
    assert_eq!(status, 200, "{doc}");
    let data = &doc["data"];
    assert_eq!(data["n"], 42);
    assert_eq!(data["dims"], json!({"w": 5, "h": 2}));
    assert_eq!(data["tags"], json!(["x", "y"]));
    assert_eq!(data["nothing"], Value::Null);
    assert!(data.get("gone").is_none());
    assert_eq!(data["at"], json!({"$timestamp": doc["updateTime"]}), "server timestamps are typed, at the commit time");
    let (status, doc) = server.admin("PATCH", "/v1/docs/p/a", Some(json!({"tags": {"$arrayRemove": ["x"]}}))).await;
    assert_eq!((status, doc["data"]["tags"].clone(), doc["version"].as_i64()), (200, json!(["y"]), Some(3)));
    let (status, body) = server.admin("PATCH", "/v1/docs/p/missing", Some(json!({"a": 1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")));
}

async fn preconditions(backend: Backend) {
    let server = Server::start(backend).await;
    server.admin("PUT", "/v1/docs/p/a", Some(json!({"v": 1}))).await;
    let put = |headers: Vec<(&'static str, &'static str)>| {
        let mut request = server
            .client
            .put(server.url("/v1/docs/p/a"))
            .bearer_auth(crate::harness::SERVICE_KEY)
            .json(&json!({"v": 2}));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.send()
    };
    let (status, body) = crate::harness::read(put(vec![("If-Match", "7")]).await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (412, Some("failed-precondition")));
    let (status, body) = crate::harness::read(put(vec![("If-None-Match", "*")]).await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("already-exists")));
    let response = put(vec![("If-Match", "1")]).await.unwrap();
    assert_eq!(response.headers()["etag"], "2");
    assert_eq!(response.status(), 200);
    let (status, _) = crate::harness::read(put(vec![("If-Match", "abc")]).await.unwrap()).await;
    assert_eq!(status, 400);
}

async fn racing_conditional_updates_have_one_winner(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(backend).await);
    server.admin("PUT", "/v1/docs/race/doc", Some(json!({"winner": null}))).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let response = server
                .client
                .patch(server.url("/v1/docs/race/doc"))
                .bearer_auth(crate::harness::SERVICE_KEY)
                .header("If-Match", "1")
                .json(&json!({"winner": i}))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 15, "{statuses:?}");
    let (_, doc) = server.admin("GET", "/v1/docs/race/doc", None).await;
    assert_eq!(doc["version"], 2);
}

async fn failing_batch_leaves_no_trace(backend: Backend) {
    let server = Server::start(backend).await;
    server.admin("PUT", "/v1/docs/a/existing", Some(json!({"v": 1}))).await;
    let batch = json!({"writes": [
        {"op": "set", "path": "a/new", "data": {"v": 1}},
        {"op": "update", "path": "a/existing", "data": {"v": 2}},
        {"op": "create", "path": "a/existing", "data": {"v": 3}}
    ]});
    let (status, body) = server.admin("POST", "/v1/batch", Some(batch)).await;
    assert!(status == 400 || status == 409, "{body}");
    let batch = json!({"writes": [
        {"op": "set", "path": "a/new", "data": {"v": 1}},
        {"op": "update", "path": "a/existing", "data": {"v": 2}},
        {"op": "create", "path": "b/existing", "data": {"v": 3}, "precondition": {"version": 4}}
    ]});
    let (status, body) = server.admin("POST", "/v1/batch", Some(batch)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (412, Some("failed-precondition")), "{body}");
    assert_eq!(server.admin("GET", "/v1/docs/a/new", None).await.0, 404);
    let (_, existing) = server.admin("GET", "/v1/docs/a/existing", None).await;
    assert_eq!((existing["version"].as_i64(), existing["data"]["v"].as_i64()), (Some(1), Some(1)));
}

async fn batch_commits_across_collections(backend: Backend) {
    let server = Server::start(backend).await;
    server.admin("PUT", "/v1/docs/a/gone", Some(json!({"v": 1}))).await;
    let batch = json!({"writes": [
        {"op": "create", "path": "a/one", "data": {"v": 1}},
        {"op": "set", "path": "b/two/c/three", "data": {"v": 2}},
        {"op": "delete", "path": "a/gone", "precondition": {"version": 1}}
    ]});
    let (status, body) = server.admin("POST", "/v1/batch", Some(batch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["writes"][0]["version"], 1);
    assert_eq!(body["writes"][2]["deleted"], true);
    assert_eq!(server.admin("GET", "/v1/docs/b/two/c/three", None).await.0, 200);
    assert_eq!(server.admin("GET", "/v1/docs/a/gone", None).await.0, 404);
    let too_many: Vec<Value> = (0..501).map(|i| json!({"op": "set", "path": format!("x/{i}"), "data": {}})).collect();
    let (status, _) = server.admin("POST", "/v1/batch", Some(json!({ "writes": too_many }))).await;
    assert_eq!(status, 400);
}

async fn end_users_are_denied_by_default(backend: Backend) {
    let server = Server::start(backend).await;
    server.admin("PUT", "/v1/docs/p/a", Some(json!({"v": 1}))).await;
    for (method, path, body) in [
        ("GET", "/v1/docs/p/a", None),
        ("GET", "/v1/docs/p", None),
        ("PUT", "/v1/docs/p/b", Some(json!({}))),
        ("DELETE", "/v1/docs/p/a", None),
        ("POST", "/v1/query", Some(json!({"collection": "p"}))),
        ("POST", "/v1/batch", Some(json!({"writes": [{"op": "delete", "path": "p/a"}]}))),
    ] {
        let (status, response) = server.call(method, path, None, body).await;
        assert_eq!((status, response["error"]["code"].as_str()), (403, Some("permission-denied")), "{method} {path}");
    }
    let (status, body) = server.call("GET", "/v1/docs/p/a", Some("not-a-token"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
}

async fn limits_and_bad_input(backend: Backend) {
    let server = Server::start(backend).await;
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("PUT", "/v1/docs/p/a", json!([1, 2]), "object"),
        ("PUT", "/v1/docs/p/a", json!({"$x": 1}), "reserved"),
        ("PUT", "/v1/docs/p/a", json!({"a": {"$delete": true}}), "merging"),
        ("PUT", "/v1/docs/p/a", json!({"big": "x".repeat(1_100_000)}), "larger than"),
        ("PUT", "/v1/docs/p/a", (0..70).fold(json!(1), |v, _| json!({ "x": v })), "deeper"),
        ("PUT", "/v1/docs/p", json!({}), "collection"),
        ("PUT", "/v1/docs/p/a%2F..%2Fb", json!({}), "\"..\""),
        ("PUT", "/v1/docs/p/a%00b", json!({}), "control"),
        ("POST", "/v1/docs/p/a", json!({}), "document"),
        ("POST", "/v1/query", json!({"collection": "p", "limit": 0}), "limit"),
        ("POST", "/v1/query", json!({"collection": "p", "where": [["a", "in", [[1]]]]}), "values"),
        ("POST", "/v1/query", json!({"collection": "p", "bogus": 1}), "unknown field"),
        (
            "POST",
            "/v1/batch",
            json!({"writes": [{"op": "set", "path": "p/a", "data": {}}, {"op": "delete", "path": "p/a"}]}),
            "twice",
        ),
        ("POST", "/v1/batch", json!({"writes": [{"op": "explode", "path": "p/a"}]}), "op"),
    ];
    for (method, path, body, expected) in cases {
        let (status, response) = server.admin(method, path, Some(body)).await;
        let message = response["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            (status, response["error"]["code"].as_str()),
            (400, Some("invalid-argument")),
            "{method} {path}: {response}"
        );
        assert!(message.contains(expected), "{method} {path}: {message:?} should mention {expected:?}");
    }
    let response = server
        .client
        .put(server.url("/v1/docs/p/a"))
        .bearer_auth(crate::harness::SERVICE_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::harness::read(response).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")));
}

/// Documents with mixed types and missing fields, shared by the query cases.
async fn seed_items(server: &Server) {
    let items = json!({
        "a": {"n": 1, "s": "apple", "b": true, "tags": ["x", "y"], "dims": {"w": 10}},
        "b": {"n": 2.5, "s": "banana", "b": false, "tags": ["y"], "dims": {"w": 20}},
        "c": {"n": "3", "s": "cherry", "tags": []},
        "d": {"n": null, "s": "Apple"},
        "e": {"s": "date", "n": 10},
        "f": {"n": -1, "s": "é", "tags": ["z", 1]},
        "g": {"n": 2, "s": "fig", "b": true, "dims": {"w": 20, "h": 1}}
    });
    let writes: Vec<Value> = items
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, data)| json!({"op": "set", "path": format!("items/{id}"), "data": data}))
        .collect();
    let (status, body) = server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await;
    assert_eq!(status, 200, "{body}");
}

fn ids(body: &Value) -> Vec<String> {
    body["documents"].as_array().unwrap_or(&Vec::new()).iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

async fn query_cases_match_on_both_backends(backend: Backend) {
    let server = Server::start(backend).await;
    seed_items(&server).await;
    // Timestamps sort after numbers and before strings (Firestore's type order).
    let timestamps = json!({"writes": [
        {"op": "set", "path": "items/h", "data": {"n": {"$timestamp": "2026-01-02T03:04:05Z"}}},
        {"op": "set", "path": "items/i", "data": {"n": {"$timestamp": "2025-06-01T00:00:00+02:00"},
                                                    "tags": [{"$timestamp": "2025-06-01T00:00:00Z"}]}},
    ]});
    assert_eq!(server.admin("POST", "/v1/batch", Some(timestamps)).await.0, 200);
    let at = |text: &str| json!({ "$timestamp": text });
    let cases: Vec<(Value, Value, &str)> = vec![
        (json!([["n", ">", at("2025-12-31T23:59:59Z")]]), json!([]), "h"),
        (json!([["n", "<=", at("2026-01-02T03:04:05Z")]]), json!(["n"]), "i h"),
        (json!([["n", "==", at("2026-01-02T04:04:05+01:00")]]), json!([]), "h"),
        (json!([["n", "==", "2026-01-02T03:04:05.000000Z"]]), json!([]), ""),
        (json!([["n", "in", [at("2026-01-02T03:04:05.000Z"), 1]]]), json!([]), "a h"),
        (json!([["tags", "array-contains", at("2025-06-01T00:00:00.000Z")]]), json!([]), "i"),
        (json!([["n", "==", 2]]), json!([]), "g"),
        (json!([["n", ">", 1]]), json!(["n"]), "g b e"),
        (json!([["n", "<", 2]]), json!([]), "a f"),
        (json!([["n", "==", "3"]]), json!([]), "c"),
        (json!([["n", "==", null]]), json!([]), "d"),
        (json!([["n", "!=", 2]]), json!([]), "a b c d e f h i"),
        (json!([["s", ">=", "b"]]), json!(["s"]), "b c e g f"),
        (json!([]), json!(["s"]), "d a b c e g f"),
        (json!([["b", "==", true]]), json!([]), "a g"),
        (json!([["b", "<", true]]), json!([]), "b"),
        (json!([["tags", "array-contains", "y"]]), json!([]), "a b"),
        (json!([["tags", "array-contains", 1]]), json!([]), "f"),
        (json!([["tags", "array-contains-any", ["x", "z"]]]), json!([]), "a f"),
        (json!([["n", "in", [1, 2, "3"]]]), json!([]), "a c g"),
        (json!([["n", "not-in", [1, 2]]]), json!([]), "b c d e f h i"),
        (json!([["dims.w", "==", 20]]), json!([]), "b g"),
        (json!([{"or": [["n", "==", 1], ["s", "==", "fig"]]}]), json!([]), "a g"),
        (json!([{"and": [["b", "==", true], ["n", ">", 1]]}]), json!([]), "g"),
        (json!([]), json!(["n"]), "d f a g b e i h c"),
        (json!([]), json!([["n", "desc"]]), "c h i e b g a f d"),
        (json!([]), json!([["dims.w", "desc"]]), "g b a"),
        (json!([["s", "<", "a"]]), json!([]), "d"),
        (json!([["missing", "==", null]]), json!([]), ""),
    ];
    for (filters, order, expected) in cases {
        let query = json!({"collection": "items", "where": filters, "orderBy": order});
        let (status, body) = server.admin("POST", "/v1/query", Some(query.clone())).await;
        assert_eq!(status, 200, "{query}: {body}");
        let got = ids(&body).join(" ");
        assert_eq!(got, expected, "{query}");
    }
}

async fn cursors_page_through_and_survive_inserts(backend: Backend) {
    let server = Server::start(backend).await;
    seed_items(&server).await;
    let page = |cursor: Option<Value>| {
        let mut query = json!({"collection": "items", "orderBy": ["n"], "limit": 3});
        if let Some(cursor) = cursor {
            query["startAfter"] = cursor;
        }
        server.admin("POST", "/v1/query", Some(query))
    };
    let (_, first) = page(None).await;
    assert_eq!(ids(&first), ["d", "f", "a"]);
    server.admin("PUT", "/v1/docs/items/early", Some(json!({"n": 0.5}))).await;
    let (_, second) = page(Some(first["nextCursor"].clone())).await;
    assert_eq!(ids(&second), ["g", "b", "e"], "an insert before the cursor does not shift the next page");
    let (_, third) = page(Some(second["nextCursor"].clone())).await;
    assert_eq!((ids(&third), third["nextCursor"].clone()), (vec!["c".to_owned()], Value::Null));
    let (_, up_to_g) =
        server.admin("POST", "/v1/query", Some(json!({"collection": "items", "orderBy": ["n"], "limit": 5}))).await;
    let (_, before) = server
        .admin(
            "POST",
            "/v1/query",
            Some(json!({"collection": "items", "orderBy": ["n"], "endBefore": up_to_g["nextCursor"]})),
        )
        .await;
    assert_eq!(ids(&before), ["d", "f", "early", "a"]);
    let (status, _) = server
        .admin(
            "POST",
            "/v1/query",
            Some(json!({"collection": "items", "orderBy": ["s"], "startAfter": first["nextCursor"]})),
        )
        .await;
    assert_eq!(status, 400, "a cursor is bound to its query's order");
    let (_, listed) = server.admin("GET", "/v1/docs/items?limit=4", None).await;
    assert_eq!(ids(&listed), ["a", "b", "c", "d"]);
    let token = listed["nextCursor"].as_str().unwrap();
    let (_, rest) = server.admin("GET", &format!("/v1/docs/items?limit=4&pageToken={token}"), None).await;
    assert_eq!(ids(&rest), ["e", "early", "f", "g"]);
}

async fn counts_and_aggregates(backend: Backend) {
    let server = Server::start(backend).await;
    seed_items(&server).await;
    let (_, body) = server
        .admin("POST", "/v1/query", Some(json!({"collection": "items", "where": [["n", ">", 0]], "count": true})))
        .await;
    assert_eq!(body, json!({"count": 4}));
    let query = json!({"collection": "items", "aggregate": {
        "total": ["sum", "n"], "mean": ["avg", "n"], "low": ["min", "n"], "high": ["max", "n"], "all": ["count"], "none": ["sum", "zzz"]
    }});
    let (status, body) = server.admin("POST", "/v1/query", Some(query)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["aggregates"],
        json!({"total": 14.5, "mean": 2.9, "low": -1.0, "high": 10.0, "all": 7, "none": null})
    );
}

async fn declared_index_is_used(backend: Backend) {
    let toml = r#"
[[indexes]]
collection = "messages"
fields = ["room", "createdAt"]

[[indexes]]
collection = "rooms/*/posts"
fields = ["score"]

[[indexes]]
collection = "it's"
fields = ["n"]
"#;
    let server = Server::start_with(backend, Options::default().file("nimbus.toml", toml)).await;
    for (path, n) in
        [("rooms/a/posts/p1", 3), ("rooms/a/posts/p2", 1), ("rooms/b/posts/p3", 2), ("it's/q1", 2), ("it's/q2", 1)]
    {
        let field = if path.starts_with("rooms") { "score" } else { "n" };
        server.admin("PUT", &format!("/v1/docs/{path}"), Some(json!({ field: n }))).await;
    }
    let filler: Vec<Value> = (0..300)
        .map(|i| json!({"op": "set", "path": format!("rooms/c/posts/f{i}"), "data": {"score": 10 + i}}))
        .collect();
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": filler }))).await.0, 200);
    server.sql_rows("ANALYZE").await; // statistics, as autovacuum would gather them
    for (collection, field, expected) in
        [("rooms/c/posts", "score", vec!["f0", "f1", "f2", "f3", "f4"]), ("it's", "n", vec!["q2", "q1"])]
    {
        let query = json!({"collection": collection, "orderBy": [field], "limit": 5});
        let (_, body) = server.admin("POST", "/v1/query", Some(query.clone())).await;
        assert_eq!(ids(&body), expected, "{collection}");
        let (_, plan) = server.admin("POST", "/v1/admin/explain", Some(query)).await;
        let plan = plan["plan"].as_str().unwrap();
        assert!(plan.contains("documents_idx_"), "{collection}: the plan must use the declared index:\n{plan}");
    }
    for i in 0..20 {
        let path = format!("/v1/docs/messages/m{i}");
        server.admin("PUT", &path, Some(json!({"room": format!("r{}", i % 3), "createdAt": i}))).await;
    }
    let query = json!({"collection": "messages", "where": [["room", "==", "r1"]], "orderBy": [["createdAt", "desc"]], "limit": 20});
    let (_, body) = server.admin("POST", "/v1/query", Some(query.clone())).await;
    assert_eq!(ids(&body), ["m19", "m16", "m13", "m10", "m7", "m4", "m1"]);
    let (status, plan) = server.admin("POST", "/v1/admin/explain", Some(query)).await;
    assert_eq!(status, 200, "{plan}");
    let plan = plan["plan"].as_str().unwrap();
    assert!(plan.contains("documents_idx_"), "the plan must use the declared index:\n{plan}");
    assert!(!plan.contains("TEMP B-TREE") && !plan.contains("Sort"), "the index must serve the order:\n{plan}");
}

async fn schema_rejects_non_matching_documents(backend: Backend) {
    let toml = r#"
[schemas."shops/*/products"]
type = "object"
required = ["name", "price"]
properties = { name = { type = "string" }, price = { type = "number", minimum = 0 } }
"#;
    let server = Server::start_with(backend, Options::default().file("nimbus.toml", toml)).await;
    let (status, _) =
        server.admin("PUT", "/v1/docs/shops/s1/products/p1", Some(json!({"name": "cat", "price": 3}))).await;
    assert_eq!(status, 201);
    let (status, body) = server.admin("PATCH", "/v1/docs/shops/s1/products/p1", Some(json!({"price": -1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")));
    assert!(body["error"]["message"].as_str().unwrap().contains("field `price`"), "{body}");
    let (status, _) = server.admin("PUT", "/v1/docs/shops/s1/products/p2", Some(json!({"name": "dog"}))).await;
    assert_eq!(status, 400);
    let (status, _) = server.admin("PUT", "/v1/docs/shops/s1/other/x", Some(json!({"name": 1}))).await;
    assert_eq!(status, 201, "other collections are not checked");
}

async fn in_flight_request_finishes_on_sigterm(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Server::start(backend).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = r#"{"slow": true}"#;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/docs/slow/one HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::harness::SERVICE_KEY,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..5]).await.unwrap();
    // The request is being answered (it waits for its body) beside this reading of the metrics.
    crate::harness::eventually(std::time::Duration::from_secs(5), "the request in flight", || async {
        (server.metric("nimbus_http_requests_in_flight").await >= Some(2.0)).then_some(())
    })
    .await;
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    // The server has begun to shut down once it takes no new connection.
    crate::harness::eventually(std::time::Duration::from_secs(5), "new connections refused", || async {
        tokio::net::TcpStream::connect(&addr).await.is_err().then_some(())
    })
    .await;
    stream.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = server.terminate();
    assert!(status.success(), "nimbus exits cleanly after SIGTERM: {status:?}");
}

async fn acknowledged_writes_survive_a_kill(backend: Backend) {
    // Writers race (so the writer commits them in groups, with their
    // change-log rows and updates of one document); every write answered
    // 2xx is there after SIGKILL and a restart, with its change-log row.
    let mut server = Server::start(backend).await;
    let writes = (0..8).map(|w| {
        let (client, base) = (server.client.clone(), server.url("/v1/docs"));
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..25 {
                let response = client
                    .put(format!("{base}/kept/w{w}-{i}"))
                    .bearer_auth(crate::harness::SERVICE_KEY)
                    .json(&json!({"w": w, "i": i}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 201);
                acknowledged.push(format!("w{w}-{i}"));
                let counter = client
                    .put(format!("{base}/counters/w{w}"))
                    .bearer_auth(crate::harness::SERVICE_KEY)
                    .json(&json!({"n": i}))
                    .send()
                    .await
                    .expect("sent");
                assert!(counter.status().is_success(), "{}", counter.status());
            }
            acknowledged
        }
    });
    let acknowledged: Vec<String> = futures_util::future::join_all(writes).await.into_iter().flatten().collect();
    server.crash_and_restart().await;
    let ids = server.sql_rows("SELECT id FROM documents WHERE collection = 'kept' ORDER BY id").await;
    let mut found: Vec<String> = ids.into_iter().filter_map(|r| r[0].clone()).collect();
    let mut expected = acknowledged.clone();
    found.sort();
    expected.sort();
    assert_eq!(found, expected, "every acknowledged create");
    for w in 0..8 {
        let (status, counter) = server.admin("GET", &format!("/v1/docs/counters/w{w}"), None).await;
        assert_eq!((status, counter["data"]["n"].clone()), (200, json!(24)), "the last acknowledged update");
    }
    let logged = server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM changes WHERE collection = 'kept'").await;
    assert_eq!(logged[0][0].as_deref(), Some("200"), "each create's change-log row");
}

/// On SQLite the WAL is checkpointed off the writer's path (decision 0021);
/// under writes that never pause, the WAL must still start again from its
/// beginning now and then, or it grows until the writer's own backstop
/// checkpoint (20,000 pages) lands inside a commit. Writers race for well over
/// 20,000 pages of WAL in small commits (without the checkpointer the file
/// reaches 20,005 pages); the WAL file (which never shrinks) must have stayed
/// well below the backstop. Alone on this machine it stays under 7,000 pages;
/// the bound leaves room for a CI run whose parallel tests slow the
/// checkpointer's fsyncs (13,037 pages seen once).
#[tokio::test]
async fn the_sqlite_wal_starts_again_while_writes_go_on() {
    const PAGE: u64 = 4096 + 24; // a WAL frame: the page and its header
    let server = Server::start(Backend::Sqlite).await;
    let text = "x".repeat(4_000);
    let writers = (0..8).map(|w| {
        let (client, base, text) = (server.client.clone(), server.url("/v1/batch"), text.clone());
        async move {
            for b in 0..150 {
                let writes: Vec<Value> = (0..10)
                    .map(|i| json!({"op": "set", "path": format!("wal/w{w}-{b}-{i}"), "data": {"text": text}}))
                    .collect();
                let response = client
                    .post(&base)
                    .bearer_auth(crate::harness::SERVICE_KEY)
                    .json(&json!({ "writes": writes }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 200);
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let written = server.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM documents WHERE collection = 'wal'").await;
    assert_eq!(written[0][0].as_deref(), Some("12000"));
    // 12,000 documents of 4 kB, each also in its change-log row: about 100 MB.
    let wal = std::fs::metadata(server.dir.path().join("nimbus-data/nimbus.db-wal")).expect("a WAL").len();
    assert!(wal < 17_000 * PAGE, "the WAL reached {} pages", wal / PAGE);
}

/// On SQLite a document read first runs on the calling thread within a
/// millisecond and is moved to a reader thread when it takes longer
/// (decision 0022): a slow query is still answered in full, and the
/// statement limit (`query_timeout_ms`) still cuts one that runs too long.
#[tokio::test]
async fn a_slow_sqlite_query_moves_to_a_reader_and_keeps_its_limit() {
    let mut server = Server::start(Backend::Sqlite).await;
    let tags: Vec<i64> = (0..100).collect();
    for batch in 0..20 {
        let writes: Vec<Value> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                json!({"op": "set", "path": format!("slow/d{n}"), "data": {"n": n, "tags": tags}})
            })
            .collect();
        assert_eq!(server.admin("POST", "/v1/batch", Some(json!({ "writes": writes }))).await.0, 200);
    }
    // No index: every document's 100 tags are looked through.
    let slow = json!({"collection": "slow", "where": [["tags", "array-contains", 99], ["n", ">=", 9990]], "limit": 50});
    let reads = |server: &Server| {
        let (metrics, base) = (server.client.clone(), server.url("/metrics"));
        async move {
            let text = metrics.get(base).bearer_auth(crate::harness::SERVICE_KEY).send().await.expect("sent");
            let text = text.text().await.expect("metrics");
            let count = |thread: &str| {
                let series = format!("nimbus_sqlite_reads_total{{thread=\"{thread}\"}} ");
                text.lines().find_map(|l| l.strip_prefix(&series)?.parse::<u64>().ok()).unwrap_or(0)
            };
            (count("caller"), count("reader"))
        }
    };
    let before = reads(&server).await;
    let (status, body) = server.admin("POST", "/v1/query", Some(slow.clone())).await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<i64> =
        body["documents"].as_array().expect("documents").iter().filter_map(|d| d["data"]["n"].as_i64()).collect();
    assert_eq!(found, (9990..10000).collect::<Vec<_>>());
    let after = reads(&server).await;
    assert_eq!(after.1, before.1 + 1, "the reader thread answered the slow query ({before:?} → {after:?})");
    let (status, _) = server.admin("GET", "/v1/docs/slow/d7", None).await;
    assert_eq!(status, 200);
    assert_eq!(reads(&server).await.0, after.0 + 1, "a read by id is answered on the calling thread");

    server.restart_with(&[("NIMBUS_QUERY_TIMEOUT_MS", "10")]).await;
    let (status, body) = server.admin("POST", "/v1/query", Some(slow)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("deadline-exceeded")), "{body}");
}
