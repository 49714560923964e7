//! The realtime wire protocol (docs/realtime.md): client messages parsed with
//! errors that name the field, and the server's frames written as JSON text
//! (documents embedded exactly as REST renders them).

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::RealtimeError;
use crate::error::ErrorCode;

/// Largest client message accepted (bytes).
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// What a client may send.
#[derive(Debug)]
pub enum ClientMessage {
    /// Sign in (or refresh the token); `None` signs out.
    Auth {
        token: Option<String>,
    },
    Subscribe(Subscribe),
    Unsubscribe {
        id: SubscriptionId,
    },
    Ping,
}

/// A client's name for one of its subscriptions: a string or a number, echoed back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
pub enum SubscriptionId {
    Text(String),
    Number(i64),
}

impl SubscriptionId {
    fn write(&self, out: &mut String) {
        match self {
            SubscriptionId::Text(text) => out.push_str(&Value::from(text.as_str()).to_string()),
            SubscriptionId::Number(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subscribe {
    pub id: SubscriptionId,
    /// The same object as `POST /v1/query` takes (`where`, `orderBy`, `limit`) …
    pub query: Option<Value>,
    /// … or one document's path.
    pub doc: Option<String>,
    /// Deliver what was missed since this position instead of a snapshot.
    pub resume_from: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthMessage {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeMessage {
    id: SubscriptionId,
}

fn fields<T: serde::de::DeserializeOwned>(kind: &str, message: Value) -> Result<T, RealtimeError> {
    serde_path_to_error::deserialize(message).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(" at `{path}`") };
        RealtimeError::Invalid(format!("`{kind}` message{at}: {}", e.inner()))
    })
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, RealtimeError> {
        if text.len() > MAX_CLIENT_MESSAGE {
            return Err(RealtimeError::Invalid(format!("a message holds at most {MAX_CLIENT_MESSAGE} bytes")));
        }
        let mut message: Value = serde_json::from_str(text)
            .map_err(|e| RealtimeError::Invalid(format!("a message is one JSON object: {e}")))?;
        let kind = match message.as_object_mut().and_then(|m| m.remove("type")) {
            Some(Value::String(kind)) => kind,
            _ => return Err(RealtimeError::Invalid("a message is a JSON object with a string `type`".into())),
        };
        match kind.as_str() {
            "auth" => Ok(ClientMessage::Auth { token: fields::<AuthMessage>("auth", message)?.token }),
            "subscribe" => Ok(ClientMessage::Subscribe(fields("subscribe", message)?)),
            "unsubscribe" => {
                Ok(ClientMessage::Unsubscribe { id: fields::<UnsubscribeMessage>("unsubscribe", message)?.id })
            }
            "ping" => Ok(ClientMessage::Ping),
            other => Err(RealtimeError::Invalid(format!(
                "unknown message type {other:?} (auth, subscribe, unsubscribe, ping)"
            ))),
        }
    }
}

/// One frame for the client: its JSON text, and for SSE its event name and id.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: &'static str,
    pub position: Option<i64>,
    pub json: String,
}

/// One entry of a `change` frame.
pub enum ChangeEntry<'a> {
    Added(&'a str),
    Modified(&'a str),
    /// The document's id and path only: nothing of its current state.
    Removed {
        id: &'a str,
        path: &'a str,
    },
}

fn frame_start(kind: &'static str, id: &SubscriptionId) -> String {
    let mut out = String::with_capacity(256);
    let _ = write!(out, "{{\"type\":\"{kind}\",\"id\":");
    id.write(&mut out);
    out
}

pub fn snapshot<'a>(id: &SubscriptionId, documents: impl Iterator<Item = &'a str>, position: i64) -> Frame {
    let mut out = frame_start("snapshot", id);
    out.push_str(",\"documents\":[");
    for (i, document) in documents.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(document);
    }
    let _ = write!(out, "],\"position\":{position}}}");
    Frame { kind: "snapshot", position: Some(position), json: out }
}

pub fn change(id: &SubscriptionId, entries: &[ChangeEntry<'_>], position: i64) -> Frame {
    let mut out = frame_start("change", id);
    out.push_str(",\"changes\":[");
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match entry {
            ChangeEntry::Added(document) => {
                let _ = write!(out, "{{\"type\":\"added\",\"document\":{document}}}");
            }
            ChangeEntry::Modified(document) => {
                let _ = write!(out, "{{\"type\":\"modified\",\"document\":{document}}}");
            }
            ChangeEntry::Removed { id, path } => {
                let _ = write!(
                    out,
                    "{{\"type\":\"removed\",\"document\":{{\"id\":{},\"path\":{}}}}}",
                    Value::from(*id),
                    Value::from(*path)
                );
            }
        }
    }
    let _ = write!(out, "],\"position\":{position}}}");
    Frame { kind: "change", position: Some(position), json: out }
}

pub fn resync(id: &SubscriptionId, reason: &str) -> Frame {
    let mut out = frame_start("resync", id);
    let _ = write!(out, ",\"reason\":{}}}", Value::from(reason));
    Frame { kind: "resync", position: None, json: out }
}

/// An error for one subscription (`id`) or for the connection (`None`).
pub fn error(id: Option<&SubscriptionId>, code: ErrorCode, message: &str) -> Frame {
    let mut out = String::from("{\"type\":\"error\",\"id\":");
    match id {
        Some(id) => id.write(&mut out),
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"error\":{{\"code\":\"{}\",\"message\":{}}}}}", code.as_str(), Value::from(message));
    Frame { kind: "error", position: None, json: out }
}

pub fn pong() -> Frame {
    Frame { kind: "pong", position: None, json: "{\"type\":\"pong\"}".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_with_errors_that_name_the_problem() {
        assert!(matches!(ClientMessage::parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping)));
        let Ok(ClientMessage::Subscribe(s)) = ClientMessage::parse(r#"{"type":"subscribe","id":3,"doc":"a/b"}"#) else {
            panic!("subscribe")
        };
        assert_eq!((s.id, s.doc.as_deref()), (SubscriptionId::Number(3), Some("a/b")));
        let err = ClientMessage::parse(r#"{"type":"subscribe","id":"x","extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        assert!(ClientMessage::parse("[1]").is_err() && ClientMessage::parse(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn frames_are_json() {
        let id = SubscriptionId::Text("q\"1".into());
        let entries = [ChangeEntry::Added(r#"{"id":"a"}"#), ChangeEntry::Removed { id: "b", path: "c/b" }];
        let parsed: Value = serde_json::from_str(&change(&id, &entries, 7).json).expect("json");
        assert_eq!(parsed["id"], "q\"1");
        assert_eq!(parsed["changes"][1]["document"]["path"], "c/b");
        let parsed: Value = serde_json::from_str(&error(None, ErrorCode::Internal, "x\n").json).expect("json");
        assert_eq!(parsed["error"]["code"], "internal");
    }
}
