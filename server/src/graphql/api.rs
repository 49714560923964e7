//! `/v1/graphql`: `POST` with `{query, variables?, operationName?}`, `GET`
//! with the same as query parameters (queries only), GraphiQL for a
//! browser's `GET` (`Accept: text/html`), and subscriptions over a WebSocket
//! upgrade of `GET` (`graphql-transport-ws` or the older `graphql-ws`, the
//! token in `connection_init`'s payload). The caller comes from the same
//! bearer token or service key as REST. A request that executes answers
//! `200` with `{data, errors}`; one that cannot be read answers in REST's
//! error shape.

use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::live::ClientAddress;
use super::{Graphql, Operations};
use crate::auth::{Authenticator, Caller};
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery, ClientIp};

/// What `/v1/graphql` needs.
#[derive(Clone)]
pub struct GraphqlApi {
    pub graphql: Arc<Graphql>,
    pub authenticator: Authenticator,
}

crate::auth::api::authenticates!(GraphqlApi);

pub fn router() -> Router<Arc<GraphqlApi>> {
    Router::new().route("/v1/graphql", get(get_graphql).post(post_graphql))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    operation_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Params {
    query: Option<String>,
    /// JSON text.
    variables: Option<String>,
    operation_name: Option<String>,
}

fn request(
    query: String,
    variables: Option<serde_json::Value>,
    operation_name: Option<String>,
) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(query);
    if let Some(variables) = variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    request
}

async fn run(state: &GraphqlApi, caller: Caller, request: async_graphql::Request, allowed: Operations) -> Response {
    match state.graphql.respond(caller, request, allowed).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::hidden(ErrorCode::Internal, &format!("a GraphQL response does not serialize: {e}"))
            .into_response(),
    }
}

async fn post_graphql(State(state): State<Arc<GraphqlApi>>, caller: Caller, ApiJson(body): ApiJson<Body>) -> Response {
    run(&state, caller, request(body.query, body.variables, body.operation_name), Operations::Any).await
}

async fn get_graphql(
    State(state): State<Arc<GraphqlApi>>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    caller: Caller,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    protocol: Result<GraphQLProtocol, axum::http::StatusCode>,
    ApiQuery(params): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    if let Ok(upgrade) = upgrade {
        let protocol = protocol.map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                "Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws",
            )
        })?;
        return Ok(subscriptions(state, caller, ip, upgrade, protocol));
    }
    let Some(query) = params.query else {
        let browser =
            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
        if browser {
            return Ok(Html(GRAPHIQL).into_response());
        }
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "a GET needs `query` (or Accept: text/html for GraphiQL)",
        ));
    };
    let variables = match params.variables {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "`variables` is not JSON"))?,
        ),
        None => None,
    };
    Ok(run(&state, caller, request(query, variables, params.operation_name), Operations::QueriesOnly).await)
}

/// A WebSocket of subscriptions; `connection_init` may carry a token
/// (`{"token"}` or `{"authorization": "Bearer …"}`) that replaces the upgrade request's caller.
fn subscriptions(
    state: Arc<GraphqlApi>,
    caller: Caller,
    ip: std::net::IpAddr,
    upgrade: WebSocketUpgrade,
    protocol: GraphQLProtocol,
) -> Response {
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        let mut data = async_graphql::Data::default();
        data.insert(ClientAddress(ip));
        let authenticator = state.authenticator.clone();
        GraphQLWebSocket::new(socket, state.graphql.schema(), protocol)
            .with_data(data)
            .on_connection_init(move |payload| connection_caller(authenticator, caller, payload))
            .serve()
            .await
    })
}

async fn connection_caller(
    authenticator: Authenticator,
    caller: Caller,
    payload: serde_json::Value,
) -> async_graphql::Result<async_graphql::Data> {
    let text = |key: &str| payload.get(key).and_then(|v| v.as_str());
    let token = text("token").or_else(|| text("authToken")).or_else(|| {
        text("authorization").or_else(|| text("Authorization")).map(|h| h.trim_start_matches("Bearer ").trim())
    });
    let caller = match token {
        Some(token) => authenticator.identify(token).await.map_err(|e| {
            let error = ApiError::from(e);
            async_graphql::Error::new(error.message)
        })?,
        None => caller,
    };
    let mut data = async_graphql::Data::default();
    data.insert(caller);
    Ok(data)
}

/// GraphiQL, loaded from a CDN by the browser; the page sends requests to this server.
const GRAPHIQL: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <title>Nimbus GraphQL</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css" />
  <script crossorigin src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script>
    const fetcher = GraphiQL.createFetcher({ url: location.origin + "/v1/graphql" });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, { fetcher }));
  </script>
</body>
</html>
"#;
