//! Realtime over the real binary (issue 18), on both backends: snapshots then
//! changes in commit order, rules at delivery (per subscriber, rules edits,
//! refreshed and expired tokens, disabled users), documents leaving a query,
//! limit refill, resume with nothing lost or repeated, resync outside the
//! retention window, a slow consumer that slows no one, limits, SSE with
//! `Last-Event-ID`; on PostgreSQL also commits that finish out of order and
//! two instances on one database.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(
    a_snapshot_then_every_commit_in_order,
    rules_decide_what_each_subscriber_sees,
    limited_queries_keep_their_first_n,
    a_resumed_subscription_gets_what_it_missed_once,
    tokens_refreshed_expired_and_sessions_ended,
    a_slow_consumer_is_resynced_and_slows_no_one,
    connections_and_subscriptions_are_bounded,
    an_event_stream_resumes_from_its_last_event_id,
    concurrent_writers_lose_nothing_live_or_resumed,
    a_failing_rule_hides_a_document_from_that_subscriber_only,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_that_finish_out_of_order_are_not_skipped() {
        super::commits_that_finish_out_of_order_are_not_skipped().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_transaction_began_before_an_earlier_ended_one_is_not_skipped() {
        super::a_commit_whose_transaction_began_before_an_earlier_ended_one_is_not_skipped().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_on_one_instance_reaches_a_subscriber_on_another() {
        super::a_write_on_one_instance_reaches_a_subscriber_on_another().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_ended_on_one_instance_end_connections_on_another() {
        super::sessions_ended_on_one_instance_end_connections_on_another().await
    }
}

/// How long a frame the test waits for may take.
const FRAME_WAIT: Duration = Duration::from_secs(10);

const OPEN_RULES: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /{path=**} { allow read, write: if true; }
    } }";

/// A WebSocket client speaking the realtime protocol.
struct Live {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Live {
    async fn connect(server: &Server, token: Option<&str>) -> Live {
        let mut url = server.url("/v1/realtime").replacen("http://", "ws://", 1);
        if let Some(token) = token {
            url.push_str(&format!("?access_token={token}"));
        }
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Live { socket }
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    /// The next protocol frame (pings and pongs of the WebSocket layer skipped).
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.socket.next())
                .await
                .expect("a frame within the wait")
                .expect("the connection is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("frames are JSON"),
                Message::Close(frame) => {
                    return json!({"type": "closed", "reason": frame.map(|f| f.reason.to_string())})
                }
                _ => continue,
            }
        }
    }

    async fn subscribe(&mut self, id: &str, what: Value) -> Value {
        let mut message = json!({"type": "subscribe", "id": id});
        message.as_object_mut().expect("object").extend(what.as_object().expect("object").clone());
        self.send(message).await;
        self.next().await
    }
}

fn paths(documents: &Value) -> Vec<String> {
    documents.as_array().into_iter().flatten().filter_map(|d| d["path"].as_str().map(str::to_owned)).collect()
}

/// `(type, path)` of each entry of a change frame.
fn entries(frame: &Value) -> Vec<(String, String)> {
    assert_eq!(frame["type"], "change", "{frame}");
    frame["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (c["type"].as_str().unwrap_or("?").to_owned(), c["document"]["path"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

fn entry(kind: &str, path: &str) -> (String, String) {
    (kind.to_owned(), path.to_owned())
}

async fn put(server: &Server, token: Option<&str>, path: &str, data: Value) {
    let (status, body) = server.call("PUT", &format!("/v1/docs/{path}"), token, Some(data)).await;
    assert!(status == 200 || status == 201, "PUT {path}: {status} {body}");
}

async fn delete(server: &Server, token: Option<&str>, path: &str) {
    let (status, body) = server.call("DELETE", &format!("/v1/docs/{path}"), token, None).await;
    assert!(status == 200 || status == 204, "DELETE {path}: {status} {body}");
}

async fn signed_up(server: &Server, email: &str) -> Value {
    let body = json!({"email": email, "password": "correct horse"});
    let (status, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    session
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

async fn a_snapshot_then_every_commit_in_order(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    put(&server, None, "posts/p1", json!({"n": 1})).await;
    put(&server, None, "posts/p2", json!({"n": 2, "at": {"$serverTimestamp": true}})).await;
    let mut live = Live::connect(&server, None).await;
    let snapshot = live.subscribe("all", json!({"query": {"collection": "posts"}})).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(paths(&snapshot["documents"]), ["posts/p1", "posts/p2"]);
    let (_, rest) = server.call("GET", "/v1/docs/posts/p2", None, None).await;
    assert_eq!(snapshot["documents"][1], rest, "documents are rendered as REST renders them");
    let mut positions = std::collections::HashMap::new();
    positions.insert("all".to_owned(), snapshot["position"].as_i64().expect("a position"));

    let doc = live.subscribe("one", json!({"doc": "posts/p1"})).await;
    assert_eq!(paths(&doc["documents"]), ["posts/p1"]);
    positions.insert("one".to_owned(), doc["position"].as_i64().expect("a position"));

    put(&server, None, "posts/p3", json!({"n": 3})).await;
    put(&server, None, "posts/p1", json!({"n": 10})).await;
    let batch = json!({"writes": [
        {"op": "set", "path": "posts/p4", "data": {"n": 4}},
        {"op": "delete", "path": "posts/p2"},
        {"op": "set", "path": "other/x", "data": {"n": 0}},
    ]});
    let (status, body) = server.call("POST", "/v1/batch", None, Some(batch)).await;
    assert_eq!(status, 200, "{body}");

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let frame = live.next().await;
        let at = frame["position"].as_i64().expect("position");
        let last = positions.insert(text(&frame["id"]), at).expect("a known id");
        assert!(at > last, "positions grow: {at} after {last}");
        seen.push((text(&frame["id"]), entries(&frame)));
    }
    assert_eq!(
        seen,
        [
            ("all".to_owned(), vec![entry("added", "posts/p3")]),
            ("all".to_owned(), vec![entry("modified", "posts/p1")]),
            ("one".to_owned(), vec![entry("modified", "posts/p1")]),
            ("all".to_owned(), vec![entry("added", "posts/p4"), entry("removed", "posts/p2")]),
        ],
        "one frame per commit and subscription, a batch's changes together, other collections left out"
    );
    live.send(json!({"type": "ping"})).await;
    assert_eq!(live.next().await["type"], "pong");
    live.send(json!({"type": "unsubscribe", "id": "all"})).await;
    delete(&server, None, "posts/p1").await;
    let frame = live.next().await;
    assert_eq!((text(&frame["id"]), entries(&frame)), ("one".to_owned(), vec![entry("removed", "posts/p1")]));

    live.send(json!({"type": "subscribe", "id": "bad", "query": {"collection": "posts", "count": true}})).await;
    let error = live.next().await;
    assert_eq!((error["type"].as_str(), error["error"]["code"].as_str()), (Some("error"), Some("invalid-argument")));
    live.send(json!({"type": "nonsense"})).await;
    assert_eq!(live.next().await["error"]["code"], "invalid-argument");
}

const OWNER_RULES: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /notes/{id} {
        allow read: if resource.data.owner == request.auth.uid || resource.data.public == true;
        allow write: if request.auth != null;
      }
    } }";

async fn rules_decide_what_each_subscriber_sees(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OWNER_RULES)).await;
    let (alice, bob) = (signed_up(&server, "a@example.com").await, signed_up(&server, "b@example.com").await);
    let (a_token, b_token) = (text(&alice["access_token"]), text(&bob["access_token"]));
    let a_id = text(&alice["user"]["id"]);
    let mut a = Live::connect(&server, Some(&a_token)).await;
    let mut b = Live::connect(&server, None).await;
    b.send(json!({"type": "auth", "token": b_token})).await;
    let open = json!({"query": {"collection": "notes", "where": [["status", "==", "open"]]}});
    assert_eq!(paths(&a.subscribe("q", open.clone()).await["documents"]), Vec::<String>::new());
    assert_eq!(paths(&b.subscribe("q", open.clone()).await["documents"]), Vec::<String>::new());

    let t = Some(a_token.as_str());
    put(&server, t, "notes/secret", json!({"owner": a_id, "status": "open"})).await;
    put(&server, t, "notes/shared", json!({"owner": a_id, "status": "open", "public": true})).await;
    assert_eq!(entries(&a.next().await), [entry("added", "notes/secret")]);
    assert_eq!(entries(&a.next().await), [entry("added", "notes/shared")]);
    assert_eq!(entries(&b.next().await), [entry("added", "notes/shared")], "bob never hears of the secret note");

    put(&server, t, "notes/shared", json!({"owner": a_id, "status": "open", "public": false})).await;
    assert_eq!(entries(&a.next().await), [entry("modified", "notes/shared")]);
    let gone = b.next().await;
    assert_eq!(entries(&gone), [entry("removed", "notes/shared")], "unreadable now: removed");
    assert_eq!(gone["changes"][0]["document"], json!({"id": "shared", "path": "notes/shared"}), "and nothing of it");

    put(&server, t, "notes/secret", json!({"owner": a_id, "status": "closed"})).await;
    assert_eq!(entries(&a.next().await), [entry("removed", "notes/secret")], "it left the query");

    let everyone = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /notes/{id} { allow read: if true; allow write: if request.auth != null; }
        } }";
    let files = json!({"files": [{"name": "app.rules", "source": everyone}]});
    let (status, body) = server.admin("PUT", "/v1/admin/rules", Some(files)).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert_eq!(
        entries(&b.next().await),
        [entry("added", "notes/shared")],
        "a rules edit applies to open subscriptions"
    );
}

async fn limited_queries_keep_their_first_n(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    for n in 1..=4 {
        put(&server, None, &format!("scores/s{n}"), json!({"n": n})).await;
    }
    let mut live = Live::connect(&server, None).await;
    let top = json!({"query": {"collection": "scores", "orderBy": [["n", "asc"]], "limit": 2}});
    assert_eq!(paths(&live.subscribe("top", top).await["documents"]), ["scores/s1", "scores/s2"]);

    delete(&server, None, "scores/s1").await;
    assert_eq!(
        entries(&live.next().await),
        [entry("removed", "scores/s1"), entry("added", "scores/s3")],
        "the window is refilled"
    );
    put(&server, None, "scores/s0", json!({"n": 0})).await;
    assert_eq!(entries(&live.next().await), [entry("added", "scores/s0"), entry("removed", "scores/s3")], "pushed out");
    put(&server, None, "scores/s9", json!({"n": 9})).await;
    put(&server, None, "scores/s2", json!({"n": 20})).await;
    assert_eq!(
        entries(&live.next().await),
        [entry("modified", "scores/s2"), entry("removed", "scores/s2"), entry("added", "scores/s3")],
        "a document that moved past the end leaves, the next one enters (s9 never did)"
    );
}

async fn a_resumed_subscription_gets_what_it_missed_once(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    put(&server, None, "items/keep", json!({"v": 1})).await;
    put(&server, None, "items/gone", json!({"v": 1})).await;
    let query = json!({"query": {"collection": "items"}});
    let mut live = Live::connect(&server, None).await;
    let snapshot = live.subscribe("items", query.clone()).await;
    put(&server, None, "items/early", json!({"v": 1})).await;
    let frame = live.next().await;
    assert_eq!(entries(&frame), [entry("added", "items/early")]);
    let position = frame["position"].as_i64().expect("position");
    assert!(position > snapshot["position"].as_i64().expect("snapshot position"));
    drop(live);

    put(&server, None, "items/keep", json!({"v": 2})).await;
    delete(&server, None, "items/gone").await;
    put(&server, None, "items/late", json!({"v": 1})).await;
    put(&server, None, "elsewhere/x", json!({"v": 1})).await;

    let mut live = Live::connect(&server, None).await;
    let mut resume = query.clone();
    resume["resumeFrom"] = json!(position);
    let mut missed = entries(&live.subscribe("items", resume).await);
    loop {
        let frame = live.next().await;
        let changes = entries(&frame);
        if changes.is_empty() {
            break;
        }
        missed.extend(changes);
    }
    assert_eq!(
        missed,
        [entry("modified", "items/keep"), entry("removed", "items/gone"), entry("added", "items/late")],
        "changes only, each once, then an empty frame at the current position"
    );
    put(&server, None, "items/live", json!({"v": 1})).await;
    assert_eq!(entries(&live.next().await), [entry("added", "items/live")], "and then live changes");

    let mut future = query.clone();
    future["resumeFrom"] = json!(1_000_000_000_000i64);
    let resync = live.subscribe("future", future).await;
    assert_eq!(resync["type"], "resync", "{resync}");
    let fresh = live.next().await;
    assert_eq!((fresh["type"].as_str(), fresh["id"].as_str()), (Some("snapshot"), Some("future")));

    // A position older than the retention window: resync, then a snapshot.
    let pruning = Options::default()
        .file("rules/app.rules", OPEN_RULES)
        .env("NIMBUS_REALTIME_RETENTION_SECS", "1")
        .movable_clock();
    let short = Server::start_with(backend, pruning).await;
    put(&short, None, "items/a", json!({"v": 1})).await;
    let mut live = Live::connect(&short, None).await;
    let old = live.subscribe("items", query.clone()).await["position"].clone();
    put(&short, None, "items/b", json!({"v": 1})).await;
    assert_eq!(entries(&live.next().await), [entry("added", "items/b")]);
    short.advance_clock(Duration::from_secs(2)).await;
    put(&short, None, "items/c", json!({"v": 1})).await;
    crate::harness::eventually(Duration::from_secs(10), "the old changes are pruned", || async {
        let rows = short.sql_rows("SELECT CAST(COUNT(*) AS TEXT) FROM changes WHERE doc_id IN ('a', 'b')").await;
        (rows[0][0].as_deref().and_then(|n| n.parse::<i64>().ok()) == Some(0)).then_some(())
    })
    .await;
    let mut resume = query;
    resume["resumeFrom"] = old;
    let mut again = Live::connect(&short, None).await;
    let answer = again.subscribe("items", resume).await;
    assert_eq!(answer["type"], "resync", "{answer}");
    assert_eq!(paths(&again.next().await["documents"]), ["items/a", "items/b", "items/c"]);
}

async fn tokens_refreshed_expired_and_sessions_ended(backend: Backend) {
    let rules = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /reports/{id} { allow read: if resource.data.public == true || request.auth.token.tier == 'reader'; }
          match /inbox/{id} { allow read: if request.auth != null; }
        } }";
    let options = Options::default()
        .file("rules/app.rules", rules)
        .movable_clock()
        .env("NIMBUS_REALTIME_SESSION_CHECK_MS", "200");
    let server = Server::start_with(backend, options).await;
    server.admin("PUT", "/v1/docs/reports/open", Some(json!({"public": true}))).await;
    server.admin("PUT", "/v1/docs/reports/closed", Some(json!({"public": false}))).await;
    server.admin("PUT", "/v1/docs/inbox/m1", Some(json!({"text": "hi"}))).await;
    let session = signed_up(&server, "r@example.com").await;
    let uid = text(&session["user"]["id"]);
    let mut live = Live::connect(&server, Some(&text(&session["access_token"]))).await;
    let reports = live.subscribe("reports", json!({"query": {"collection": "reports"}})).await;
    assert_eq!(paths(&reports["documents"]), ["reports/open"]);
    assert_eq!(
        paths(&live.subscribe("inbox", json!({"query": {"collection": "inbox"}})).await["documents"]),
        ["inbox/m1"]
    );
    assert_eq!(paths(&live.subscribe("open", json!({"doc": "reports/open"})).await["documents"]), ["reports/open"]);

    let user = format!("/v1/admin/users/{uid}");
    server.admin("PATCH", &user, Some(json!({"claims": {"tier": "reader"}}))).await;
    let body = json!({"grant_type": "refresh_token", "refresh_token": session["refresh_token"]});
    let (status, renewed) = server.call("POST", "/v1/auth/token", None, Some(body)).await;
    assert_eq!(status, 200, "{renewed}");
    live.send(json!({"type": "auth", "token": renewed["access_token"]})).await;
    let frame = live.next().await;
    assert_eq!((text(&frame["id"]), entries(&frame)), ("reports".to_owned(), vec![entry("added", "reports/closed")]));

    // The refreshed token lives 15 minutes; without another refresh it expires.
    server.advance_clock(Duration::from_secs(15 * 60 + 1)).await;
    let expired = live.next().await;
    assert_eq!((expired["type"].as_str(), expired["error"]["code"].as_str()), (Some("error"), Some("unauthenticated")));
    let mut ended = Vec::new();
    for _ in 0..2 {
        let frame = live.next().await;
        ended.push((
            text(&frame["id"]),
            frame["type"].as_str().unwrap_or("?").to_owned(),
            frame["error"]["code"].clone(),
        ));
    }
    let unauthenticated = |id: &str| (id.to_owned(), "error".to_owned(), json!("unauthenticated"));
    assert_eq!(ended, [unauthenticated("reports"), unauthenticated("inbox")], "what needed the token ends");
    put_public_report(&server).await;
    let frame = live.next().await;
    assert_eq!((text(&frame["id"]), entries(&frame)), ("open".to_owned(), vec![entry("modified", "reports/open")]));

    // A disabled user is disconnected.
    let fresh = signed_up(&server, "d@example.com").await;
    let mut doomed = Live::connect(&server, Some(&text(&fresh["access_token"]))).await;
    assert_eq!(doomed.subscribe("inbox", json!({"query": {"collection": "inbox"}})).await["type"], "snapshot");
    server
        .admin("PATCH", &format!("/v1/admin/users/{}", text(&fresh["user"]["id"])), Some(json!({"disabled": true})))
        .await;
    let ended = doomed.next().await;
    assert_eq!(ended["error"]["code"], "unauthenticated", "{ended}");
    assert_eq!(doomed.next().await["type"], "closed");
}

async fn put_public_report(server: &Server) {
    let (status, body) = server.admin("PUT", "/v1/docs/reports/open", Some(json!({"public": true, "v": 2}))).await;
    assert_eq!(status, 200, "{body}");
}

async fn a_slow_consumer_is_resynced_and_slows_no_one(backend: Backend) {
    let options = Options::default().file("rules/app.rules", OPEN_RULES).env("NIMBUS_REALTIME_BUFFER", "32");
    let server = Server::start_with(backend, options).await;
    let query = json!({"query": {"collection": "blobs"}});
    let mut slow = Live::connect(&server, None).await;
    assert_eq!(slow.subscribe("q", query.clone()).await["type"], "snapshot");
    let mut fast = Live::connect(&server, None).await;
    assert_eq!(fast.subscribe("q", query).await["type"], "snapshot");
    let filler = "x".repeat(32 * 1024);
    let writes = 400;
    let mut received = 0;
    for i in 0..writes {
        put(&server, None, &format!("blobs/b{i:04}"), json!({"i": i, "filler": filler})).await;
        // The fast client reads as it goes; the slow one reads nothing.
        while let Ok(Some(Ok(Message::Text(frame)))) =
            tokio::time::timeout(Duration::from_millis(1), fast.socket.next()).await
        {
            let frame: Value = serde_json::from_str(&frame).expect("json");
            assert_eq!(frame["type"], "change", "the fast client is never resynced");
            received += frame["changes"].as_array().map_or(0, Vec::len);
        }
    }
    while received < writes {
        let frame = fast.next().await;
        assert_eq!(frame["type"], "change", "{}", frame["type"]);
        received += frame["changes"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(received, writes, "every change reached the fast client");
    let mut last = -1;
    loop {
        let frame = slow.next().await;
        match frame["type"].as_str() {
            Some("change") => {
                let i = frame["changes"][0]["document"]["data"]["i"].as_i64().expect("i");
                assert!(i > last, "in order until the resync");
                last = i;
            }
            Some("resync") => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last < writes as i64 - 1, "the slow client fell behind before the resync");
    let snapshot = slow.next().await;
    assert_eq!(snapshot["documents"].as_array().map(Vec::len), Some(writes), "then a whole snapshot");
}

async fn connections_and_subscriptions_are_bounded(backend: Backend) {
    let options = Options::default()
        .file("rules/app.rules", OPEN_RULES)
        .env("NIMBUS_REALTIME_MAX_SUBSCRIPTIONS", "2")
        .env("NIMBUS_REALTIME_MAX_CONNECTIONS_PER_IP", "3")
        .env("NIMBUS_REALTIME_MAX_CONNECTIONS_PER_USER", "1");
    let server = Server::start_with(backend, options).await;
    let mut live = Live::connect(&server, None).await;
    for id in ["a", "b"] {
        assert_eq!(live.subscribe(id, json!({"doc": "x/y"})).await["type"], "snapshot");
    }
    let refused = live.subscribe("c", json!({"doc": "x/y"})).await;
    assert_eq!((refused["id"].as_str(), refused["error"]["code"].as_str()), (Some("c"), Some("resource-exhausted")));

    let session = signed_up(&server, "u@example.com").await;
    let token = text(&session["access_token"]);
    let mut first = Live::connect(&server, Some(&token)).await;
    assert_eq!(first.subscribe("a", json!({"doc": "x/y"})).await["type"], "snapshot");
    let mut second = Live::connect(&server, Some(&token)).await;
    assert_eq!(second.next().await["error"]["code"], "resource-exhausted", "one connection per user here");
    assert_eq!(second.next().await["type"], "closed");
    drop(second);

    let _third = crate::harness::eventually(Duration::from_secs(5), "a third connection", || async {
        let url = server.url("/v1/realtime").replacen("http://", "ws://", 1);
        tokio_tungstenite::connect_async(url).await.ok()
    })
    .await;
    let response = server
        .client
        .get(server.url("/v1/realtime"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 429, "a fourth connection from one address is refused");
    let body: Value = response.json().await.expect("the error shape");
    assert_eq!(body["error"]["code"], "resource-exhausted");
    let (status, body) = server.call("GET", "/v1/realtime", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "not an upgrade: {body}");
}

/// Reads server-sent events from `response` until `count` events arrived:
/// each as (event, data, id).
async fn sse_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, Value, Option<String>)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(FRAME_WAIT, response.chunk())
            .await
            .expect("an event within the wait")
            .expect("readable")
            .expect("the stream is open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut data, mut id) = (String::new(), String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                }
            }
            if !event.is_empty() {
                events.push((event, serde_json::from_str(&data).expect("data is JSON"), id));
            }
        }
    }
    events
}

async fn an_event_stream_resumes_from_its_last_event_id(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    put(&server, None, "feed/a", json!({"v": 1})).await;
    let query = json!({"collection": "feed"}).to_string();
    let url = server.url("/v1/realtime/sse");
    let mut stream = server.client.get(&url).query(&[("query", query.as_str())]).send().await.expect("sse");
    assert_eq!(stream.status(), 200);
    let first = sse_events(&mut stream, 1).await;
    assert_eq!((first[0].0.as_str(), paths(&first[0].1["documents"])), ("snapshot", vec!["feed/a".to_owned()]));
    put(&server, None, "feed/b", json!({"v": 1})).await;
    let second = sse_events(&mut stream, 1).await;
    assert_eq!(entries(&second[0].1), [entry("added", "feed/b")]);
    let last_id = second[0].2.clone().expect("an id on every change");
    drop(stream);

    put(&server, None, "feed/c", json!({"v": 1})).await;
    let mut resumed = server
        .client
        .get(&url)
        .query(&[("query", query.as_str())])
        .header("last-event-id", last_id)
        .send()
        .await
        .expect("sse");
    let events = sse_events(&mut resumed, 1).await;
    assert_eq!(entries(&events[0].1), [entry("added", "feed/c")], "only what was missed");

    let (status, body) = server.call("GET", "/v1/realtime/sse?doc=a/b&query=%7B%7D", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
}

async fn commits_that_finish_out_of_order_are_not_skipped() {
    let server = Server::start_with(Backend::Postgres, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    let mut live = Live::connect(&server, None).await;
    let snapshot = live.subscribe("q", json!({"query": {"collection": "race"}})).await;
    let before = snapshot["position"].clone();
    let url = server.database_url().expect("postgres");
    let mut slow = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    // A commit that draws its position first and finishes last.
    sqlx::query("BEGIN").execute(&mut slow).await.expect("begin");
    sqlx::query(
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) \
         VALUES ('race', 'slow', '{\"v\": 1}', 1, 1, 1)",
    )
    .execute(&mut slow)
    .await
    .expect("insert document");
    sqlx::query(
        "INSERT INTO changes (collection, doc_id, kind, version, before, after, time, commit_id, create_time) \
         VALUES ('race', 'slow', 'create', 1, NULL, '{\"v\": 1}', 1, 424242, 1)",
    )
    .execute(&mut slow)
    .await
    .expect("insert change");
    put(&server, None, "race/fast", json!({"v": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut slow).await.expect("commit");
    let first = live.next().await;
    let second = live.next().await;
    assert_eq!(
        (entries(&first), entries(&second)),
        (vec![entry("added", "race/slow")], vec![entry("added", "race/fast")]),
        "the later-committed change with the lower position is delivered, in position order"
    );
    let mut again = Live::connect(&server, None).await;
    let resumed = again.subscribe("q", json!({"query": {"collection": "race"}, "resumeFrom": before})).await;
    let second_frame = again.next().await;
    assert_eq!(
        (entries(&resumed), entries(&second_frame)),
        (vec![entry("added", "race/slow")], vec![entry("added", "race/fast")]),
        "a resume from before both sees both"
    );
}

/// Begins a transaction on `connection` that writes document `race/{id}` and
/// its change-log row, as a Nimbus commit does, without committing it.
async fn write_uncommitted(connection: &mut sqlx::PgConnection, id: &str, commit_id: i64) {
    let data = json!({"v": 1}).to_string();
    sqlx::query(
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) \
         VALUES ('race', $1, $2::jsonb, 1, 1, 1)",
    )
    .bind(id)
    .bind(&data)
    .execute(&mut *connection)
    .await
    .expect("insert document");
    sqlx::query(
        "INSERT INTO changes (collection, doc_id, kind, version, before, after, time, commit_id, create_time) \
         VALUES ('race', $1, 'create', 1, NULL, $2::jsonb, 1, $3, 1)",
    )
    .bind(id)
    .bind(&data)
    .bind(commit_id)
    .execute(&mut *connection)
    .await
    .expect("insert change");
}

async fn a_commit_whose_transaction_began_before_an_earlier_ended_one_is_not_skipped() {
    // PostgreSQL's snapshots list the transactions running below one past the
    // highest id that ended: `late` takes its id after `early`, draws the lower
    // position, and is still running when `early` ends, so a snapshot then
    // lists nothing running although `late` is.
    let options = Options::default().file("rules/app.rules", OPEN_RULES).env("NIMBUS_REALTIME_POLL_MS", "20");
    let server = Server::start_with(Backend::Postgres, options).await;
    let mut live = Live::connect(&server, None).await;
    assert_eq!(live.subscribe("q", json!({"query": {"collection": "race"}})).await["type"], "snapshot");
    let url = server.database_url().expect("postgres");
    let connect = || async { <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect") };
    let (mut early, mut late) = (connect().await, connect().await);
    sqlx::query("BEGIN").execute(&mut early).await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut early).await.expect("early takes its id");
    sqlx::query("BEGIN").execute(&mut late).await.expect("begin");
    write_uncommitted(&mut late, "late", 515151).await;
    write_uncommitted(&mut early, "early", 525252).await;
    sqlx::query("COMMIT").execute(&mut early).await.expect("commit");
    // The feed reads the log every 20 ms meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut late).await.expect("commit");
    let (first, second) = (live.next().await, live.next().await);
    assert_eq!(
        (entries(&first), entries(&second)),
        (vec![entry("added", "race/late")], vec![entry("added", "race/early")]),
        "both commits, in position order"
    );
}

async fn a_write_on_one_instance_reaches_a_subscriber_on_another() {
    let a = Server::start_with(Backend::Postgres, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    // B would poll only every 30 s: a prompt delivery is the notification's doing.
    let b = a.sibling(&[("NIMBUS_REALTIME_POLL_MS", "30000")]).await;
    let mut live = Live::connect(&b, None).await;
    assert_eq!(live.subscribe("q", json!({"query": {"collection": "shared"}})).await["type"], "snapshot");
    let started = std::time::Instant::now();
    put(&a, None, "shared/one", json!({"v": 1})).await;
    let frame = live.next().await;
    assert_eq!(entries(&frame), [entry("added", "shared/one")]);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let position = frame["position"].clone();
    drop(live);
    put(&a, None, "shared/two", json!({"v": 1})).await;
    let mut on_a = Live::connect(&a, None).await;
    let resumed = on_a.subscribe("q", json!({"query": {"collection": "shared"}, "resumeFrom": position})).await;
    assert_eq!(entries(&resumed), [entry("added", "shared/two")], "positions from one instance resume on another");
}

/// Added paths from frames of subscription `id` until `count` arrived (each frame's position must grow).
async fn sessions_ended_on_one_instance_end_connections_on_another() {
    let a = Server::start_with(Backend::Postgres, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    // B checks sessions only every minute: a prompt end is the announcement's doing.
    let b = a.sibling(&[("NIMBUS_REALTIME_SESSION_CHECK_MS", "60000")]).await;
    let query = json!({"query": {"collection": "items"}});
    let disabled = signed_up(&a, "off@example.com").await;
    let mut live = Live::connect(&b, Some(&text(&disabled["access_token"]))).await;
    assert_eq!(live.subscribe("q", query.clone()).await["type"], "snapshot");
    let signed_out = signed_up(&a, "out@example.com").await;
    let token = text(&signed_out["access_token"]);
    let mut other = Live::connect(&b, Some(&token)).await;
    assert_eq!(other.subscribe("q", query).await["type"], "snapshot");

    let started = std::time::Instant::now();
    let user = format!("/v1/admin/users/{}", text(&disabled["user"]["id"]));
    assert_eq!(a.admin("PATCH", &user, Some(json!({"disabled": true}))).await.0, 200);
    let ended = live.next().await;
    assert_eq!(ended["error"]["code"], "unauthenticated", "{ended}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    put(&a, None, "items/after", json!({"v": 1})).await;
    let frame = other.next().await;
    assert_eq!(entries(&frame), [entry("added", "items/after")], "the other user's connection goes on");
    assert_eq!(a.call("POST", "/v1/auth/logout", Some(&token), None).await.0, 204);
    let ended = other.next().await;
    assert_eq!(ended["error"]["code"], "unauthenticated", "a sign-out on another instance: {ended}");
}

async fn collect_added(live: &mut Live, count: usize) -> Vec<String> {
    let mut added = Vec::new();
    let mut last = i64::MIN;
    while added.len() < count {
        let frame = live.next().await;
        assert_eq!(frame["type"], "change", "{frame}");
        let position = frame["position"].as_i64().expect("position");
        assert!(position > last, "positions grow: {position} after {last}");
        last = position;
        added.extend(entries(&frame).into_iter().filter(|(kind, _)| kind == "added").map(|(_, path)| path));
    }
    added
}

async fn concurrent_writers_lose_nothing_live_or_resumed(backend: Backend) {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", OPEN_RULES)).await;
    let query = json!({"query": {"collection": "burst"}});
    let mut live = Live::connect(&server, None).await;
    let start = live.subscribe("q", query.clone()).await["position"].clone();
    let (writers, each) = (8, 40);
    let writes = (0..writers).map(|w| {
        let (client, base) = (server.client.clone(), server.url("/v1/docs/burst"));
        async move {
            for i in 0..each {
                let response = client.put(format!("{base}/w{w}-{i}")).json(&json!({"w": w, "i": i})).send().await;
                assert_eq!(response.expect("sent").status(), 201);
            }
        }
    });
    futures_util::future::join_all(writes).await;
    let expected: std::collections::BTreeSet<String> =
        (0..writers).flat_map(|w| (0..each).map(move |i| format!("burst/w{w}-{i}"))).collect();
    let added = collect_added(&mut live, expected.len()).await;
    assert_eq!(added.len(), expected.len(), "each change once");
    assert_eq!(added.into_iter().collect::<std::collections::BTreeSet<_>>(), expected, "every change, live");

    let mut resumed = Live::connect(&server, None).await;
    let mut resume = query;
    resume["resumeFrom"] = start;
    resumed
        .send(json!({"type": "subscribe", "id": "q", "query": resume["query"], "resumeFrom": resume["resumeFrom"]}))
        .await;
    let replayed = collect_added(&mut resumed, expected.len()).await;
    assert_eq!(replayed.len(), expected.len(), "each change once");
    assert_eq!(replayed.into_iter().collect::<std::collections::BTreeSet<_>>(), expected, "every change, resumed");
}

async fn a_failing_rule_hides_a_document_from_that_subscriber_only(backend: Backend) {
    // The rule reads the caller's profile: for a caller without one it fails
    // (no `data` on null), which denies that caller alone.
    let rules = "rules_version = '2';
        service cloud.firestore { match /databases/{db}/documents {
          match /profiles/{uid} { allow read, write: if request.auth.uid == uid; }
          match /notices/{id} { allow read: if true; }
          match /posts/{id} {
            allow read: if get(/databases/$(db)/documents/profiles/$(request.auth.uid)).data.team == resource.data.team;
          }
        } }";
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", rules)).await;
    let (member, stranger) = (signed_up(&server, "m@example.com").await, signed_up(&server, "s@example.com").await);
    let (m_token, s_token) = (text(&member["access_token"]), text(&stranger["access_token"]));
    put(&server, Some(&m_token), &format!("profiles/{}", text(&member["user"]["id"])), json!({"team": "red"})).await;
    let query = json!({"query": {"collection": "posts"}});
    let mut m = Live::connect(&server, Some(&m_token)).await;
    let mut s = Live::connect(&server, Some(&s_token)).await;
    assert_eq!(m.subscribe("q", query.clone()).await["type"], "snapshot");
    assert_eq!(s.subscribe("q", query).await["type"], "snapshot");
    assert_eq!(s.subscribe("n", json!({"query": {"collection": "notices"}})).await["type"], "snapshot");
    server.admin("PUT", "/v1/docs/posts/p1", Some(json!({"team": "red"}))).await;
    server.admin("PUT", "/v1/docs/notices/n1", Some(json!({"text": "hello"}))).await;
    assert_eq!(entries(&m.next().await), [entry("added", "posts/p1")], "delivery goes on for the others");
    // A connection takes commits in order: the stranger's first frame is the
    // notice, so the post was decided (hidden) and nothing stopped.
    let first = s.next().await;
    assert_eq!((text(&first["id"]), entries(&first)), ("n".to_owned(), vec![entry("added", "notices/n1")]));
}
