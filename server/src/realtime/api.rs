//! HTTP side of realtime: `GET /v1/realtime` (WebSocket upgrade) and
//! `GET /v1/realtime/sse` (one subscription per event stream, resumed with
//! `Last-Event-ID`). The token comes from `Authorization` or, since browsers
//! cannot set headers on these, `access_token`. Connections are counted per
//! address before the upgrade, so a refusal is an ordinary error response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::follow::{follow, Said};
use super::protocol::{Frame, Subscribe, SubscriptionId, MAX_CLIENT_MESSAGE};
use super::session::{Gone, Incoming, Session, Transport};
use super::{Realtime, RealtimeError};
use crate::auth::Caller;
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, ClientIp};

/// What the realtime endpoints use.
#[derive(Clone)]
pub struct RealtimeApi {
    pub realtime: super::Realtime,
    pub authenticator: crate::auth::Authenticator,
}

crate::auth::api::authenticates!(RealtimeApi);

pub fn router() -> Router<Arc<RealtimeApi>> {
    Router::new().route("/v1/realtime", get(websocket)).route("/v1/realtime/sse", get(event_stream))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketParams {
    access_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    access_token: Option<String>,
    /// The query as JSON text (the object `POST /v1/query` takes) …
    query: Option<String>,
    /// … or a document path.
    doc: Option<String>,
}

/// The caller from `Authorization`, else from `access_token`.
async fn caller_of(realtime: &Realtime, from_header: Caller, token: Option<String>) -> Result<Caller, ApiError> {
    match (from_header, token) {
        (Caller::Public, Some(token)) => Ok(realtime.identify(&token).await?),
        (caller, _) => Ok(caller),
    }
}

async fn websocket(
    State(state): State<Arc<RealtimeApi>>,
    ClientIp(ip): ClientIp,
    from_header: Caller,
    ApiQuery(params): ApiQuery<SocketParams>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(ErrorCode::InvalidArgument, format!("a WebSocket upgrade request is required here: {e}"))
    })?;
    let realtime = state.realtime.clone();
    let caller = caller_of(&realtime, from_header, params.access_token).await?;
    let slot = realtime.ip_slot(ip)?;
    let send_patience = realtime.settings().ping * 2;
    Ok(upgrade
        // Small buffers (the library's default is 128 KiB each way, per
        // connection): frames are written as they are sent.
        .read_buffer_size(SOCKET_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            Session::new(realtime, caller, slot, Socket { socket, send_patience }).run(None).await;
        }))
}

/// Bytes a connection reads from its socket at once.
const SOCKET_READ_BUFFER: usize = 4096;

/// A WebSocket carrying the protocol as JSON text frames.
struct Socket {
    socket: WebSocket,
    /// A client that takes longer than this to accept a frame is disconnected.
    send_patience: Duration,
}

impl Transport for Socket {
    async fn recv(&mut self) -> Option<Incoming> {
        match self.socket.recv().await? {
            Ok(Message::Text(text)) => Some(Incoming::Text(text.as_str().to_owned())),
            Ok(Message::Binary(_)) => Some(Incoming::Text(String::new())),
            Ok(Message::Close(_)) | Err(_) => None,
            Ok(Message::Ping(_) | Message::Pong(_)) => Some(Incoming::Activity),
        }
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_patience, self.socket.send(Message::Text(frame.json.into()))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        let ping = self.socket.send(Message::Ping(Default::default()));
        tokio::time::timeout(self.send_patience, ping).await.map_err(|_| Gone)?.map_err(|_| Gone)
    }

    fn answers_pings(&self) -> bool {
        true
    }

    async fn close(&mut self, reason: &str) {
        let frame = CloseFrame { code: 1008, reason: reason.to_owned().into() };
        let _ = tokio::time::timeout(self.send_patience, self.socket.send(Message::Close(Some(frame)))).await;
    }
}

async fn event_stream(
    State(state): State<Arc<RealtimeApi>>,
    ClientIp(ip): ClientIp,
    from_header: Caller,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    let realtime = state.realtime.clone();
    let caller = caller_of(&realtime, from_header, params.access_token).await?;
    let query = params
        .query
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| RealtimeError::Invalid(format!("`query` is the query as JSON: {e}")))?;
    if query.is_some() == params.doc.is_some() {
        return Err(RealtimeError::Invalid("give either `query` or `doc`".into()).into());
    }
    let resume_from = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).ok_or_else(|| {
            RealtimeError::Invalid("`Last-Event-ID` is a position the server sent as an event id".into())
        })?),
    };
    let first = Subscribe { id: SubscriptionId::Text("sse".into()), query, doc: params.doc, resume_from };
    let slot = realtime.ip_slot(ip)?;
    let mut said = follow(realtime, caller, slot, first);
    let events =
        futures_util::stream::poll_fn(move |cx| said.poll_recv(cx).map(|s| s.map(|s| Ok::<_, Infallible>(event(s)))));
    Ok(Sse::new(events).into_response())
}

/// A server-sent event: `event:` is the frame's type, `data:` its JSON, `id:`
/// its position (so `EventSource` resumes by itself).
fn event(said: Said) -> Event {
    match said {
        Said::Frame(frame) => {
            let event = Event::default().event(frame.kind).data(frame.json);
            match frame.position {
                Some(position) => event.id(position.to_string()),
                None => event,
            }
        }
        Said::Idle => Event::default().comment("ping"),
        Said::Closed(reason) => {
            Event::default().event("close").data(serde_json::json!({ "type": "close", "reason": reason }).to_string())
        }
    }
}
