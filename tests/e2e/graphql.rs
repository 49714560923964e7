//! GraphQL (`/v1/graphql`) over the documents layer, on both backends: reads
//! with filters, order, pages and counts (collections and collection groups),
//! a post with its comments in one request, the rules deciding every read
//! and write exactly as for REST (a refused subcollection is an error of
//! that field only), mutations with preconditions and REST's error codes in
//! `extensions.code`, GET for queries only, GraphiQL for browsers, and
//! subscriptions over both WebSocket protocols fed by the realtime stream.

use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

const RULES: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /posts/{post} {
        allow read: if resource.data.published == true || request.auth != null;
        allow write: if request.auth != null && request.resource.data.author == request.auth.uid;
        match /comments/{comment} { allow read: if request.auth != null; }
      }
      match /{path=**}/comments/{comment} { allow read: if request.auth != null; }
    } }";

async fn server(backend: Backend) -> Server {
    let server = Server::start_with(backend, Options::default().file("rules/app.rules", RULES)).await;
    let writes = json!({"writes": [
        {"op": "set", "path": "posts/p1", "data": {"title": "First", "n": 1, "published": true, "author": "x"}},
        {"op": "set", "path": "posts/p2", "data": {"title": "Second", "n": 2, "published": true, "author": "x", "tags": ["rust"]}},
        {"op": "set", "path": "posts/p3", "data": {"title": "Draft", "n": 3, "published": false, "author": "x"}},
        {"op": "set", "path": "posts/p1/comments/c1", "data": {"text": "nice", "n": 1}},
        {"op": "set", "path": "posts/p1/comments/c2", "data": {"text": "agreed", "n": 2}},
        {"op": "set", "path": "posts/p2/comments/c3", "data": {"text": "hm", "n": 3}}
    ]});
    assert_eq!(server.admin("POST", "/v1/batch", Some(writes)).await.0, 200);
    server
}

/// Runs a GraphQL request; answers (status, body).
async fn graphql(server: &Server, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    server.call("POST", "/v1/graphql", token, Some(json!({"query": query, "variables": variables}))).await
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| errors.iter().map(|e| e["extensions"]["code"].as_str().unwrap_or("?").to_owned()).collect())
        .unwrap_or_default()
}

async fn user_token(server: &Server, email: &str) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse"});
    let (status, session) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    (session["user"]["id"].as_str().unwrap().to_owned(), session["access_token"].as_str().unwrap().to_owned())
}

on_both_backends!(
    queries_read_through_the_rules,
    a_post_and_its_comments_in_one_request,
    nested_lists_are_read_in_one_statement,
    mutations_keep_rest_preconditions_and_codes,
    get_serves_queries_and_graphiql,
    subscriptions_follow_the_realtime_stream,
    the_older_graphql_ws_protocol_works_too,
    requests_over_the_limits_get_a_clear_error,
    simple_queries_answer_exactly_as_the_engine_does
);

async fn queries_read_through_the_rules(backend: Backend) {
    let server = server(backend).await;
    let query = r#"query($after: String) {
        documents(collection: "posts", where: [{field: "published", op: EQ, value: true}],
                  orderBy: [{field: "n", direction: DESC}], limit: 1, after: $after) {
          documents { id path version createTime data title: field(path: "title") }
          nextCursor
        }
        count(collection: "posts", where: [{field: "published", op: EQ, value: true}])
        one: document(path: "posts/p1") { id data }
      }"#;
    let (status, body) = graphql(&server, None, query, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let page = &body["data"]["documents"];
    assert_eq!(page["documents"][0]["path"], "posts/p2");
    assert_eq!(page["documents"][0]["title"], "Second");
    assert_eq!(page["documents"][0]["data"]["tags"], json!(["rust"]));
    assert_eq!(page["documents"][0]["version"], 1);
    assert!(page["documents"][0]["createTime"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(body["data"]["count"], 2);
    assert_eq!(body["data"]["one"]["data"]["title"], "First");
    let cursor = page["nextCursor"].as_str().expect("a next page").to_owned();
    let (_, next) = graphql(&server, None, query, json!({"after": cursor})).await;
    assert_eq!(next["data"]["documents"]["documents"][0]["id"], "p1", "{next}");

    // Rules decide: signed out, the draft cannot be read and lists leave it out, as REST's do.
    let (_, draft) = graphql(&server, None, r#"{ document(path: "posts/p3") { id } }"#, json!({})).await;
    assert_eq!((draft["data"]["document"].clone(), codes(&draft)), (Value::Null, vec!["permission-denied".to_owned()]));
    let everything = r#"{ documents(collection: "posts", orderBy: [{field: "n"}]) { documents { id } } count(collection: "posts") }"#;
    let (_, all) = graphql(&server, None, everything, json!({})).await;
    assert_eq!(all["data"]["documents"]["documents"], json!([{"id": "p1"}, {"id": "p2"}]), "{all}");
    assert_eq!(all["data"]["count"], 2, "{all}");
    let (_, token) = user_token(&server, "reader@example.com").await;
    let (_, mine) = graphql(
        &server,
        Some(&token),
        r#"{ count(collection: "posts") missing: document(path: "posts/none") { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(mine["data"]["count"], 3, "{mine}");
    assert_eq!(mine["data"]["missing"], Value::Null, "a missing document is null, not an error: {mine}");
    assert!(mine.get("errors").is_none(), "{mine}");

    // Disjunctions, membership and collection groups.
    let query = r#"{ documents(collection: "posts", where: [{or: [{field: "n", op: EQ, value: 1},
        {field: "tags", op: ARRAY_CONTAINS, value: "rust"}]}], orderBy: [{field: "n"}]) { documents { id } }
        group: documents(collectionGroup: "comments", where: [{field: "n", op: GE, value: 2}], orderBy: [{field: "n"}]) { documents { path } } }"#;
    let (_, body) = graphql(&server, Some(&token), query, json!({})).await;
    let ids: Vec<&str> =
        body["data"]["documents"]["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p1", "p2"], "{body}");
    let paths: Vec<&str> =
        body["data"]["group"]["documents"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["posts/p1/comments/c2", "posts/p2/comments/c3"], "{body}");

    let (_, bad) = graphql(
        &server,
        None,
        r#"{ documents(collection: "posts", where: [{field: "n"}]) { documents { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(codes(&bad), ["invalid-argument"], "{bad}");
}

async fn a_post_and_its_comments_in_one_request(backend: Backend) {
    let server = server(backend).await;
    let query = r#"{ document(path: "posts/p1") { title: field(path: "title")
        collection(name: "comments", orderBy: [{field: "n"}]) { documents { id data } } } }"#;
    let (_, token) = user_token(&server, "c@example.com").await;
    let (_, body) = graphql(&server, Some(&token), query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let comments = &body["data"]["document"]["collection"]["documents"];
    assert_eq!((comments[0]["id"].as_str(), comments[1]["id"].as_str()), (Some("c1"), Some("c2")), "{body}");
    // Signed out: the post is readable; its comments are filtered as a REST list is (none
    // visible), and a subcollection no rule allows is an error of that field only.
    let query = r#"{ document(path: "posts/p1") { title: field(path: "title")
        comments: collection(name: "comments") { documents { id } }
        secrets: collection(name: "secrets") { documents { id } } } }"#;
    let (_, body) = graphql(&server, None, query, json!({})).await;
    assert_eq!(body["data"]["document"]["title"], "First", "{body}");
    assert_eq!(body["data"]["document"]["comments"]["documents"], json!([]), "{body}");
    assert_eq!(body["data"]["document"]["secrets"], Value::Null, "{body}");
    assert_eq!(codes(&body), ["permission-denied"], "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["document", "secrets"]), "{body}");
}

async fn nested_lists_are_read_in_one_statement(backend: Backend) {
    let server = server(backend).await;
    let mut writes = Vec::new();
    for post in 0..20 {
        let data = json!({"title": format!("Post {post}"), "n": 10 + post, "published": true, "author": "x"});
        writes.push(json!({"op": "set", "path": format!("posts/f{post}"), "data": data}));
        // Post 7 has no comments: an empty page among full ones.
        for comment in (0..3).filter(|_| post != 7) {
            let path = format!("posts/f{post}/comments/f{post}c{comment}");
            writes.push(json!({"op": "set", "path": path, "data": {"n": comment}}));
        }
    }
    assert_eq!(server.admin("POST", "/v1/batch", Some(json!({"writes": writes}))).await.0, 200);
    let (_, token) = user_token(&server, "n@example.com").await;
    let query = r#"{ documents(collection: "posts", where: [{field: "n", op: GE, value: 10}], orderBy: [{field: "n"}],
        limit: 20) { documents { id
        collection(name: "comments", orderBy: [{field: "n", direction: DESC}], limit: 2) {
          documents { id } nextCursor } } } }"#;
    let statements = || async { server.metric("nimbus_documents_read_statements_total").await.unwrap_or(-1.0) };
    let before = statements().await;
    let (_, body) = graphql(&server, Some(&token), query, json!({})).await;
    let after = statements().await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(after - before, 2.0, "one statement for the posts, one for all their comments");
    let posts = body["data"]["documents"]["documents"].as_array().expect("posts").clone();
    assert_eq!(posts.len(), 20);
    for (i, post) in posts.iter().enumerate() {
        let ids: Vec<&str> =
            post["collection"]["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        let expected = if i == 7 { vec![] } else { vec![format!("f{i}c2"), format!("f{i}c1")] };
        assert_eq!(ids, expected, "each post's own page, in its order: {post}");
    }
    // A nested page's cursor goes on as REST's does.
    let cursor = posts[4]["collection"]["nextCursor"].as_str().expect("a cursor, as more remain");
    let rest = json!({"collection": "posts/f4/comments", "orderBy": [["n", "desc"]], "limit": 2, "startAfter": cursor});
    let (status, page) = server.call("POST", "/v1/query", Some(&token), Some(rest)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["documents"][0]["id"], "f4c0", "{page}");
    // Signed out, the rules still decide each nested page (comments need a user).
    let (_, body) = graphql(&server, None, query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["documents"]["documents"][0]["collection"]["documents"], json!([]), "{body}");
}

async fn mutations_keep_rest_preconditions_and_codes(backend: Backend) {
    let server = server(backend).await;
    let (uid, token) = user_token(&server, "w@example.com").await;
    let create =
        r#"mutation($data: JSON!) { createDocument(collection: "posts", data: $data) { id path version data } }"#;
    let (_, body) = graphql(&server, Some(&token), create, json!({"data": {"title": "Mine", "author": uid}})).await;
    let created = &body["data"]["createDocument"];
    assert_eq!((created["version"].as_i64(), created["data"]["title"].as_str()), (Some(1), Some("Mine")), "{body}");
    let path = created["path"].as_str().unwrap().to_owned();
    let (status, rest) = server.call("GET", &format!("/v1/docs/{path}"), Some(&token), None).await;
    assert_eq!((status, rest["data"]["title"].as_str()), (200, Some("Mine")), "REST sees what GraphQL wrote");

    let update = r#"mutation($path: String!, $version: Int, $data: JSON!) { updateDocument(path: $path, data: $data, version: $version) { version data } }"#;
    let increment = json!({"n": {"$increment": 5}});
    let (_, body) =
        graphql(&server, Some(&token), update, json!({"path": path, "version": 1, "data": increment})).await;
    assert_eq!(body["data"]["updateDocument"]["data"]["n"], 5, "{body}");
    let (_, stale) =
        graphql(&server, Some(&token), update, json!({"path": path, "version": 1, "data": increment})).await;
    assert_eq!(codes(&stale), ["failed-precondition"], "{stale}");
    let (_, stranger) = user_token(&server, "s@example.com").await;
    let (_, refused) = graphql(&server, Some(&stranger), update, json!({"path": path, "data": increment})).await;
    assert_eq!(codes(&refused), ["permission-denied"], "the rules decide first: {refused}");
    let set = r#"mutation($path: String!, $data: JSON!) { setDocument(path: $path, data: $data) { version } }"#;
    let (_, forged) =
        graphql(&server, Some(&token), set, json!({"path": "posts/forged", "data": {"author": "someone else"}})).await;
    assert_eq!(codes(&forged), ["permission-denied"], "{forged}");

    let batch = r#"mutation($a: String!, $b: String!, $uid: JSON!) { batch(writes: [
        {op: SET, path: $a, data: {author: $uid, title: "A"}},
        {op: CREATE, path: $b, data: {author: $uid}, exists: false}]) { path version deleted } }"#;
    let vars = json!({"a": "posts/ba", "b": "posts/bb", "uid": uid});
    let (_, body) = graphql(&server, Some(&token), batch, vars.clone()).await;
    assert_eq!(
        body["data"]["batch"],
        json!([{"path": "posts/ba", "version": 1, "deleted": false}, {"path": "posts/bb", "version": 1, "deleted": false}]),
        "{body}"
    );
    let (_, again) = graphql(&server, Some(&token), batch, vars).await;
    assert_eq!(codes(&again), ["already-exists"], "all or nothing: {again}");
    assert_eq!(
        server.admin("GET", "/v1/docs/posts/ba", None).await.1["version"],
        1,
        "the refused batch changed nothing"
    );

    let delete = r#"mutation($path: String!) { deleteDocument(path: $path) }"#;
    let (_, refused) = graphql(&server, Some(&token), delete, json!({"path": path})).await;
    assert_eq!(codes(&refused), ["permission-denied"], "a delete has no request.resource here: {refused}");
    let (_, body) = graphql(&server, Some(crate::harness::SERVICE_KEY), delete, json!({"path": path})).await;
    assert_eq!(body["data"]["deleteDocument"], true, "{body}");
    assert_eq!(server.call("GET", &format!("/v1/docs/{path}"), Some(&token), None).await.0, 404);
    let (_, changes) = server.admin("POST", "/v1/query", Some(json!({"collection": "posts", "count": true}))).await;
    assert_eq!(changes["count"], 5, "p1..p3, ba, bb");
}

async fn get_serves_queries_and_graphiql(backend: Backend) {
    let server = server(backend).await;
    let query = r#"{ document(path: "posts/p1") { id } }"#;
    let url = format!("{}?query={}", server.url("/v1/graphql"), urlencode(query));
    let body: Value = server.client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["data"]["document"]["id"], "p1", "{body}");
    let mutation = r#"mutation { deleteDocument(path: "posts/p1") }"#;
    let url = format!("{}?query={}", server.url("/v1/graphql"), urlencode(mutation));
    let body: Value =
        server.client.get(&url).bearer_auth(crate::harness::SERVICE_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(codes(&body), ["method-not-allowed"], "{body}");
    assert_eq!(server.admin("GET", "/v1/docs/posts/p1", None).await.0, 200, "GET changed nothing");
    let page = server.client.get(server.url("/v1/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("GraphiQL"));
    let (status, body) = server.call("GET", "/v1/graphql", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")));
    let (status, body) = server.call("POST", "/v1/graphql", None, Some(json!({"nope": 1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")), "{body}");
    let (status, body) = graphql(&server, None, "{ nonsense }", json!({})).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].as_str().is_some(), "{body}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `nimbus graphql schema` prints the schema the server serves, for client code
/// generators; graphql-js (`buildSchema`, an independent implementation) accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_schema() {
    let server = Server::start_with(Backend::Sqlite, Options::default().file("nimbus.toml", TYPED)).await;
    let output = server.run_cli(&["graphql", "schema"]);
    let sdl = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for expected in ["type Document {", "type Mutation {", "documents(", "scalar Timestamp", "input Filter {"] {
        assert!(sdl.contains(expected), "{expected} is missing from:\n{sdl}");
    }
    std::fs::write(server.dir.path().join("schema.graphql"), sdl.as_bytes()).expect("write the SDL");
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk-ts");
    let check = "import { buildSchema } from 'graphql'; import { readFileSync } from 'node:fs'; \
        const schema = buildSchema(readFileSync(process.argv[1], 'utf8')); \
        console.log(Object.keys(schema.getTypeMap()).filter((n) => !n.startsWith('__')).length, \
        schema.getSubscriptionType().name);";
    let checked = std::process::Command::new("node")
        .args(["--input-type=module", "-e", check, &server.dir.path().join("schema.graphql").display().to_string()])
        .current_dir(&sdk)
        .output()
        .expect("node runs (scripts/test installs graphql-js with the SDK's dev dependencies)");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "graphql-js refuses the SDL: {}", String::from_utf8_lossy(&checked.stderr));
    assert!(said.trim().ends_with("Subscription"), "{said}");
    let introspected =
        graphql(&server, None, "{ __schema { queryType { name } mutationType { name } } }", json!({})).await.1;
    assert_eq!(introspected["data"]["__schema"]["mutationType"]["name"], "Mutation", "{introspected}");
}

/// A GraphQL WebSocket client speaking `protocol` (`graphql-transport-ws` or `graphql-ws`).
struct GraphqlSocket {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl GraphqlSocket {
    async fn connect(server: &Server, protocol: &str, init: Value) -> GraphqlSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = server.url("/v1/graphql").replacen("http://", "ws://", 1);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        let mut socket = GraphqlSocket { socket };
        socket.send(json!({"type": "connection_init", "payload": init})).await;
        assert_eq!(socket.next().await["type"], "connection_ack");
        socket
    }

    async fn send(&mut self, message: Value) {
        use futures_util::SinkExt;
        let text = tokio_tungstenite::tungstenite::Message::Text(message.to_string().into());
        self.socket.send(text).await.expect("send");
    }

    /// The next message that is not a keep-alive.
    async fn next(&mut self) -> Value {
        use futures_util::StreamExt;
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s")
                .expect("the connection is open")
                .expect("a readable message");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] != "ka" && value["type"] != "ping" {
                    return value;
                }
            }
        }
    }
}

const LIVE_QUERY: &str = r#"subscription { queryChanges(collection: "posts", orderBy: [{field: "n"}]) {
    type position documents { id } changes { type document { id version title: field(path: "title") } } } }"#;

async fn subscriptions_follow_the_realtime_stream(backend: Backend) {
    let server = server(backend).await;
    let (uid, token) = user_token(&server, "live@example.com").await;
    // Signed out: the rules filter what the subscription shows, as they filter lists.
    let mut stranger = GraphqlSocket::connect(&server, "graphql-transport-ws", json!({})).await;
    stranger.send(json!({"id": "q", "type": "subscribe", "payload": {"query": LIVE_QUERY}})).await;
    let first = stranger.next().await;
    assert_eq!((first["type"].as_str(), first["id"].as_str()), (Some("next"), Some("q")), "{first}");
    assert_eq!(first["payload"]["data"]["queryChanges"]["documents"], json!([{"id": "p1"}, {"id": "p2"}]), "{first}");

    let mut owner = GraphqlSocket::connect(&server, "graphql-transport-ws", json!({"token": token})).await;
    owner.send(json!({"id": "q", "type": "subscribe", "payload": {"query": LIVE_QUERY}})).await;
    let snapshot = owner.next().await;
    let ids = &snapshot["payload"]["data"]["queryChanges"]["documents"];
    assert_eq!(ids, &json!([{"id": "p1"}, {"id": "p2"}, {"id": "p3"}]), "signed in, the draft too: {snapshot}");
    let doc = r#"subscription($path: String!) { documentChanges(path: $path) { type documents { version data } changes { type } } }"#;
    owner
        .send(json!({"id": "d", "type": "subscribe", "payload": {"query": doc, "variables": {"path": "posts/p1"}}}))
        .await;
    let single = owner.next().await;
    assert_eq!(single["payload"]["data"]["documentChanges"]["documents"][0]["data"]["title"], "First", "{single}");

    let draft = json!({"title": "Hidden", "n": 4, "published": false, "author": uid});
    assert_eq!(server.call("PUT", "/v1/docs/posts/p4", Some(&token), Some(draft)).await.0, 201);
    let added = owner.next().await;
    assert_eq!(added["id"], "q", "{added}");
    let change = &added["payload"]["data"]["queryChanges"];
    assert_eq!(change["type"], "change");
    assert_eq!(
        change["changes"],
        json!([{"type": "added", "document": {"id": "p4", "version": 1, "title": "Hidden"}}])
    );
    let update = json!({"title": "Renamed"});
    assert_eq!(server.admin("PATCH", "/v1/docs/posts/p1", Some(update)).await.0, 200);
    let mut seen = vec![owner.next().await, owner.next().await];
    seen.sort_by_key(|m| m["id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(seen[0]["payload"]["data"]["documentChanges"]["changes"], json!([{"type": "modified"}]), "{seen:?}");
    assert_eq!(seen[1]["payload"]["data"]["queryChanges"]["changes"][0]["document"]["title"], "Renamed", "{seen:?}");
    // The stranger saw the published post change, never the draft.
    let next = stranger.next().await;
    let changes = &next["payload"]["data"]["queryChanges"]["changes"];
    assert_eq!(
        changes,
        &json!([{"type": "modified", "document": {"id": "p1", "version": 2, "title": "Renamed"}}]),
        "{next}"
    );

    // Ending one subscription leaves the other; a denied one is an error, then complete.
    owner.send(json!({"id": "d", "type": "complete"})).await;
    let denied = r#"subscription { documentChanges(path: "posts/p1/secrets/s") { type } }"#;
    stranger.send(json!({"id": "x", "type": "subscribe", "payload": {"query": denied}})).await;
    let refused = stranger.next().await;
    assert_eq!(refused["id"], "x", "{refused}");
    let codes: Vec<&str> = refused["payload"]["errors"]
        .as_array()
        .or_else(|| refused["payload"].as_array())
        .map(|errors| errors.iter().filter_map(|e| e["extensions"]["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["permission-denied"], "{refused}");
    assert_eq!(server.admin("DELETE", "/v1/docs/posts/p2", None).await.0, 204);
    let mut removed = owner.next().await;
    if removed == json!({"type": "complete", "id": "d"}) {
        removed = owner.next().await; // the server confirms the client's `complete`
    }
    assert_eq!(removed["id"], "q", "only the open subscription hears: {removed}");
    assert_eq!(
        removed["payload"]["data"]["queryChanges"]["changes"],
        json!([{"type": "removed", "document": {"id": "p2", "version": null, "title": null}}])
    );

    let (status, _) = server.call("GET", "/v1/graphql", None, None).await;
    assert_eq!(status, 400, "a GET that is neither a query nor an upgrade");
    let bad_token = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = server.url("/v1/graphql").replacen("http://", "ws://", 1).into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut client = GraphqlSocket { socket };
        client.send(json!({"type": "connection_init", "payload": {"token": "not-a-token"}})).await;
        socket = client.socket;
        socket.next().await
    })
    .await
    .expect("an answer to a bad token");
    let closed = matches!(bad_token, Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)));
    assert!(closed, "a bad token in connection_init closes the connection: {bad_token:?}");
}

async fn the_older_graphql_ws_protocol_works_too(backend: Backend) {
    let server = server(backend).await;
    let mut socket = GraphqlSocket::connect(&server, "graphql-ws", json!({})).await;
    socket.send(json!({"id": "1", "type": "start", "payload": {"query": LIVE_QUERY}})).await;
    let first = socket.next().await;
    assert_eq!(first["type"], "data", "{first}");
    assert_eq!(first["payload"]["data"]["queryChanges"]["type"], "snapshot", "{first}");
    let post = json!({"title": "Third", "n": 5, "published": true, "author": "x"});
    assert_eq!(server.admin("PUT", "/v1/docs/posts/p5", Some(post)).await.0, 201);
    let next = socket.next().await;
    assert_eq!(next["payload"]["data"]["queryChanges"]["changes"][0]["document"]["id"], "p5", "{next}");
}

const TYPED: &str = r#"
[schemas.products]
type = "object"
required = ["name", "price"]
[schemas.products.properties.name]
type = "string"
[schemas.products.properties.price]
type = "number"
[schemas.products.properties.stock]
type = "integer"
[schemas.products.properties.tags]
type = "array"
items = { type = "string" }
[schemas."rooms/*/messages"]
title = "Message"
type = "object"
[schemas."rooms/*/messages".properties.text]
type = "string"
"#;

const OPEN_READS: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /{path=**} { allow read: if true; }
    } }";

on_both_backends!(collections_with_a_schema_get_typed_fields, the_schemas_follow_nimbus_toml);

const TOYS: &str = r#"
[schemas.toys]
type = "object"
required = ["name"]
[schemas.toys.properties.name]
type = "string"
"#;

async fn the_schemas_follow_nimbus_toml(backend: Backend) {
    let options = Options::default().file("nimbus.toml", TYPED).file("rules/app.rules", OPEN_READS);
    let server = Server::start_with(backend, options).await;
    let toys = "{ listToys { documents { id name } } }";
    assert!(!codes(&graphql(&server, None, toys, json!({})).await.1).is_empty(), "no typed toys yet");
    assert_eq!(server.admin("PUT", "/v1/docs/toys/t1", Some(json!({"name": 1}))).await.0, 201, "nor a check");

    let settings = server.dir.path().join("nimbus.toml");
    std::fs::write(&settings, format!("{TYPED}{TOYS}")).expect("edit nimbus.toml");
    let body = crate::harness::eventually(std::time::Duration::from_secs(10), "the toys' schema", || async {
        let (_, body) = graphql(&server, None, toys, json!({})).await;
        body.get("errors").is_none().then_some(body)
    })
    .await;
    assert_eq!(body["data"]["listToys"]["documents"], json!([{"id": "t1", "name": null}]), "{body}");
    let (status, refused) = server.admin("PUT", "/v1/docs/toys/t2", Some(json!({"name": 2}))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid-argument")),
        "writes checked: {refused}"
    );
    assert_eq!(server.admin("PUT", "/v1/docs/toys/t3", Some(json!({"name": "ball"}))).await.0, 201);

    // A schema that does not compile leaves the ones in force in place, for writes and GraphQL.
    std::fs::write(&settings, format!("{TYPED}{TOYS}[schemas.games]\ntype = 12\n")).expect("edit nimbus.toml");
    assert_eq!(server.admin("PUT", "/v1/docs/toys/t4", Some(json!({"name": 4}))).await.0, 400);
    assert!(graphql(&server, None, toys, json!({})).await.1.get("errors").is_none());
    // Taking the toys' schema out removes its type and its check.
    std::fs::write(&settings, TYPED).expect("edit nimbus.toml");
    crate::harness::eventually(std::time::Duration::from_secs(10), "the toys' schema gone", || async {
        let (_, body) = graphql(&server, None, toys, json!({})).await;
        body.get("errors").is_some().then_some(())
    })
    .await;
    assert_eq!(server.admin("PUT", "/v1/docs/toys/t5", Some(json!({"name": 5}))).await.0, 201);
}

async fn collections_with_a_schema_get_typed_fields(backend: Backend) {
    let options = Options::default().file("nimbus.toml", TYPED).file("rules/app.rules", OPEN_READS);
    let server = Server::start_with(backend, options).await;
    let writes = json!({"writes": [
        {"op": "set", "path": "products/a", "data": {"name": "Alpha", "price": 3, "stock": 1, "tags": ["x"]}},
        {"op": "set", "path": "products/b", "data": {"name": "Beta", "price": 7.5, "stock": 2}},
        {"op": "set", "path": "products/c", "data": {"name": "Gamma", "price": 9, "tags": ["y", "x"]}},
        {"op": "set", "path": "rooms/r1/messages/m1", "data": {"text": "hi"}},
        {"op": "set", "path": "rooms/r2/messages/m2", "data": {"text": "other room"}}
    ]});
    assert_eq!(server.admin("POST", "/v1/batch", Some(writes)).await.0, 200);
    let query = r#"{
        listProducts(where: {price: {gt: 5}, or: [{name: {eq: "Beta"}}, {tags: {contains: "x"}}]}, orderBy: [{field: "price", direction: DESC}]) {
          documents { id name price stock tags } nextCursor }
        cheap: listProducts(where: {price: {le: 3}}) { documents { id } }
        getProducts(id: "b") { name price path }
        listMessage(collection: "rooms/r1/messages") { documents { text path } }
        getMessage(path: "rooms/r2/messages/m2") { text }
      }"#;
    let (_, body) = graphql(&server, None, query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let data = &body["data"];
    assert_eq!(
        data["listProducts"]["documents"],
        json!([{"id": "c", "name": "Gamma", "price": 9, "stock": null, "tags": ["y", "x"]},
               {"id": "b", "name": "Beta", "price": 7.5, "stock": 2, "tags": null}]),
        "{body}"
    );
    assert_eq!(data["cheap"]["documents"], json!([{"id": "a"}]));
    assert_eq!(data["getProducts"], json!({"name": "Beta", "price": 7.5, "path": "products/b"}));
    assert_eq!(data["listMessage"]["documents"], json!([{"text": "hi", "path": "rooms/r1/messages/m1"}]));
    assert_eq!(data["getMessage"]["text"], "other room");
    let (_, wrong) =
        graphql(&server, None, r#"{ listMessage(collection: "rooms/r1/other") { documents { text } } }"#, json!({}))
            .await;
    assert_eq!(codes(&wrong), ["invalid-argument"], "{wrong}");
    let output = server.run_cli(&["graphql", "schema"]);
    let sdl = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "type Products {",
        "price: Float",
        "stock: Int",
        "tags: [String!]",
        "input ProductsFilter {",
        "type Message {",
        "listMessage(",
        "getProducts(id: String!): Products",
    ] {
        assert!(sdl.contains(expected), "{expected} is missing from:\n{sdl}");
    }
}

async fn requests_over_the_limits_get_a_clear_error(backend: Backend) {
    let closed = Options::default().file("rules/app.rules", RULES).env("NIMBUS_GRAPHQL_INTROSPECTION", "false");
    let server = Server::start_with(backend, closed).await;
    let (_, token) = user_token(&server, "limits@example.com").await;
    // Depth: the default allows 10 levels.
    let mut deep = String::from("id");
    for _ in 0..5 {
        deep = format!("collection(name: \"c\") {{ documents {{ {deep} }} }}");
    }
    let (_, body) =
        graphql(&server, Some(&token), &format!("{{ document(path: \"posts/p1\") {{ {deep} }} }}"), json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(body["data"].is_null() && message.contains("too deep"), "too deep: {body}");
    // Aliases: at most 30.
    let many: String = (0..31).map(|i| format!("a{i}: document(path: \"posts/p1\") {{ id }} ")).collect();
    let (_, body) = graphql(&server, Some(&token), &format!("{{ {many} }}"), json!({})).await;
    assert_eq!(codes(&body), ["invalid-argument"], "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains("31 aliased fields"), "{body}");
    // Page sizes are REST's: at most 1000.
    let (_, body) = graphql(
        &server,
        Some(&token),
        r#"{ documents(collection: "posts", limit: 1001) { documents { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(codes(&body), ["invalid-argument"], "{body}");
    // Introspection turned off by configuration.
    let (_, body) = graphql(&server, None, "{ __schema { queryType { name } } }", json!({})).await;
    assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()), "introspection is off: {body}");
    // Malformed queries and variables of the wrong type are errors, not crashes.
    for (query, variables) in
        [("{ document(path: ", json!({})), ("query($p: String!) { document(path: $p) { id } }", json!({"p": 5}))]
    {
        let (status, body) = graphql(&server, None, query, variables).await;
        assert_eq!(status, 200);
        assert!(body["errors"][0]["message"].is_string(), "{query}: {body}");
    }
}

/// The response text of a GraphQL request.
async fn graphql_text(server: &Server, token: Option<&str>, query: &str, variables: Value) -> String {
    let mut request =
        server.client.post(server.url("/v1/graphql")).json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// `text` with each cursor's value replaced (cursors are sealed with a fresh nonce each time).
fn without_cursors(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) =
        ["\"nextCursor\":\"", "\"cursor\":\""].iter().filter_map(|k| rest.find(k).map(|i| i + k.len())).min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = &rest[rest.find('"').unwrap_or(rest.len())..];
        out.push_str("<cursor>");
    }
    out.push_str(rest);
    out
}

async fn answered_by(server: &Server, by: &str) -> f64 {
    server.metric(&format!("nimbus_graphql_requests_total{{by=\"{by}\"}}")).await.unwrap_or(0.0)
}

async fn simple_queries_answer_exactly_as_the_engine_does(backend: Backend) {
    // Simple queries are answered by a plan, without async-graphql's engine;
    // the same query with its root selection in an inline fragment goes
    // through the engine. The two answers must be the same text.
    let server = server(backend).await;
    let odd = json!({"text": "quote \" backslash \\ tab \t newline \n bell \u{7} é ✓ 😀", "float": 1.5,
        "big": 12345678901234567890u64, "negative": -42, "tiny": 1.0e-7, "huge": 1.0e300, "zero": 0.0,
        "nested": {"z": 1, "a": [true, null, {"k": "v"}], "m": {}}, "when": {"$timestamp": "2026-01-02T03:04:05.123456Z"}, "published": true});
    assert_eq!(server.admin("PUT", "/v1/docs/posts/odd", Some(odd)).await.0, 201);
    let (_, token) = user_token(&server, "plan@example.com").await;
    let every = "id path version createTime updateTime data __typename";
    let queries: Vec<(Option<&str>, String, Value)> = vec![
        (None, format!("{{ documents(collection: \"posts\", orderBy: [{{field: \"n\"}}]) {{ documents {{ {every} }} nextCursor __typename }} }}"), json!({})),
        (Some(&token), format!("{{ documents(collection: \"posts\", orderBy: [{{field: \"n\", direction: DESC}}]) {{ documents {{ {every} }} nextCursor }} }}"), json!({})),
        (Some(&token), "{ page: documents(collection: \"posts\", where: [{field: \"published\", op: EQ, value: true}], orderBy: [{field: \"n\"}], limit: 1) { cursor: nextCursor docs: documents { key: id data } } }".into(), json!({})),
        (Some(&token), "query Posts($c: String!, $l: Int, $v: JSON) { documents(collection: $c, where: [{or: [{field: \"n\", op: GE, value: $v}, {field: \"tags\", op: ARRAY_CONTAINS, value: \"rust\"}]}], limit: $l) { documents { id version } nextCursor } }".into(), json!({"c": "posts", "l": 2, "v": 3})),
        (Some(&token), "query($group: String = \"comments\") { documents(collectionGroup: $group, orderBy: [{field: \"n\"}]) { documents { path data } } }".into(), json!({})),
        (None, format!("{{ documents(collection: \"posts\", where: [{{field: \"published\", op: EQ, value: true}}]) {{ documents {{ {every} }} }} }}"), json!({})),
        (None, "{ document(path: \"posts/p1\") { id path data __typename } }".into(), json!({})),
        (Some(&token), "query($p: String!) { one: document(path: $p) { version updateTime } }".into(), json!({"p": "posts/missing"})),
    ];
    let direct_before = answered_by(&server, "direct").await;
    for (token, query, variables) in &queries {
        let through_engine = format!("{} }}", query.replacen('{', "{ ... on Query {", 1));
        let engine_before = answered_by(&server, "engine").await;
        let engine = graphql_text(&server, *token, &through_engine, variables.clone()).await;
        assert_eq!(answered_by(&server, "engine").await, engine_before + 1.0, "the engine answered {through_engine}");
        let direct = graphql_text(&server, *token, query, variables.clone()).await;
        assert_eq!(without_cursors(&direct), without_cursors(&engine), "{query}");
        assert!(!direct.contains("errors"), "{direct}");
    }
    assert_eq!(
        answered_by(&server, "direct").await,
        direct_before + queries.len() as f64,
        "each simple query was planned"
    );
    // A cursor the plan wrote continues the page.
    let page = "query($after: String) { documents(collection: \"posts\", orderBy: [{field: \"n\"}], limit: 1, after: $after) { documents { id } nextCursor } }";
    let (_, first) = graphql(&server, Some(&token), page, json!({})).await;
    let (_, second) =
        graphql(&server, Some(&token), page, json!({"after": first["data"]["documents"]["nextCursor"]})).await;
    assert_eq!(second["data"]["documents"]["documents"], json!([{"id": "p2"}]), "{second}");

    // What a plan cannot check itself, and any failure, is the engine's to answer.
    let engine_before = answered_by(&server, "engine").await;
    let refused = [
        (None, "{ document(path: \"posts/p3\") { id } }", json!({})),
        (None, "{ documents(collection: 5) { documents { id } } }", json!({})),
        (None, "{ documents(collection: \"posts\", limit: 5000000000) { documents { id } } }", json!({})),
        (
            None,
            "{ documents(collection: \"posts\", where: [{field: \"n\", op: NOPE, value: 1}]) { documents { id } } }",
            json!({}),
        ),
        (
            None,
            "query($l: Int) { documents(collection: \"posts\", limit: $l) { documents { id } } }",
            json!({"l": "ten"}),
        ),
        (None, "query($c: String!) { documents(collection: \"posts\") { documents { id } } }", json!({"c": "x"})),
        (None, "{ documents(collection: \"posts\", collectionGroup: \"comments\") { documents { id } } }", json!({})),
        (
            None,
            "query($c: String, $c: String) { documents(collection: $c) { documents { id } } }",
            json!({"c": "posts"}),
        ),
        (None, "{ documents(collection: \"posts/p1\") { documents { id } } }", json!({})),
    ];
    for (token, query, variables) in &refused {
        let (_, body) = graphql(&server, *token, query, variables.clone()).await;
        assert!(!codes(&body).is_empty(), "{query}: {body}");
    }
    assert_eq!(answered_by(&server, "engine").await, engine_before + refused.len() as f64, "the engine answered each");
}
