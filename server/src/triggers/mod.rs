//! Durable triggers (transactional outbox): what a commit or a message
//! fires, knowing nothing of functions. Owns the index of document triggers
//! (`onCreate`/`onUpdate`/`onDelete`/`onWrite` patterns) and queue consumers
//! from which a commit derives its jobs — inserted in the same transaction as
//! the write — publishing messages, and cron schedules (`schedule`). The
//! worker that runs the jobs is `functions::worker`.

pub mod schedule;

use std::sync::Arc;

use crate::swap::Swap;

use serde_json::{json, Value};

use crate::clock::{format_time, now_micros};
use crate::store::commit::{ChangeKind, Committed};
use crate::store::jobs::{JobsFor, NewJob};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One document trigger: a path pattern, the change kinds, the function.
#[derive(Debug, Clone)]
pub struct DocTrigger {
    pattern: Vec<Segment>,
    kinds: Vec<ChangeKind>,
    /// `module.js:export`.
    pub function: String,
}

impl DocTrigger {
    /// From a descriptor: `kind` is `create`, `update`, `delete` or `write`; `path` like `orders/{id}`.
    pub fn new(kind: &str, path: &str, function: String) -> Option<DocTrigger> {
        let kinds = match kind {
            "create" => vec![ChangeKind::Create],
            "update" => vec![ChangeKind::Update],
            "delete" => vec![ChangeKind::Delete],
            "write" => vec![ChangeKind::Create, ChangeKind::Update, ChangeKind::Delete],
            _ => return None,
        };
        let pattern: Vec<Segment> = path
            .trim_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(s.to_owned()),
            })
            .collect();
        (pattern.len().is_multiple_of(2) && !pattern.is_empty()).then_some(DocTrigger { pattern, kinds, function })
    }

    fn params(&self, path: &str) -> Option<serde_json::Map<String, Value>> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.pattern.len() {
            return None;
        }
        let mut params = serde_json::Map::new();
        for (segment, part) in self.pattern.iter().zip(parts) {
            match segment {
                Segment::Literal(text) if text == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), Value::String(part.to_owned()));
                }
            }
        }
        Some(params)
    }
}

/// A queue consumer: `onMessage(topic)`.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub topic: String,
    /// `module.js:export`.
    pub function: String,
}

/// The document triggers and queue consumers in force, shared by documents
/// and messages (to enqueue) and functions (which replace them on reload);
/// also wakes the worker.
#[derive(Clone, Default)]
pub struct TriggerIndex {
    triggers: Swap<Vec<DocTrigger>>,
    consumers: Swap<Vec<Consumer>>,
}

impl TriggerIndex {
    pub fn replace(&self, triggers: Vec<DocTrigger>, consumers: Vec<Consumer>) {
        self.triggers.store(triggers);
        self.consumers.store(consumers);
    }

    /// One job per consumer of `topic`, all with the same message id.
    pub fn message_jobs(&self, topic: &str, data: &Value) -> (String, Vec<NewJob>) {
        let id = crate::ids::uuid();
        let event = json!({"id": id, "topic": topic, "data": data, "time": format_time(now_micros())}).to_string();
        let consumers = self.consumers.load();
        let jobs = consumers
            .iter()
            .filter(|c| c.topic == topic)
            .enumerate()
            .map(|(i, c)| NewJob {
                // One job row per consumer; the event id the consumers see is shared.
                id: if i == 0 { id.clone() } else { format!("{id}.{i}") },
                function: c.function.clone(),
                payload: event.clone(),
            })
            .collect();
        (id, jobs)
    }

    fn current(&self) -> Arc<Vec<DocTrigger>> {
        self.triggers.load()
    }

    /// How a commit by `auth` derives its jobs; `None` when no trigger exists.
    pub fn jobs_for(&self, auth: Value) -> Option<JobsFor> {
        let triggers = self.current();
        if triggers.is_empty() {
            return None;
        }
        Some(Box::new(move |committed: &[Committed], now: i64| {
            committed.iter().flat_map(|change| jobs_of_change(&triggers, change, &auth, now)).collect()
        }))
    }
}

fn parse(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null)
}

/// The triggers a change fires, each with the path parameters it bound.
fn fired<'t>(
    triggers: &'t [DocTrigger],
    change: &Committed,
    path: &str,
) -> Vec<(&'t DocTrigger, serde_json::Map<String, Value>)> {
    let Some(kind) = change.kind else { return Vec::new() };
    triggers
        .iter()
        .filter(|t| t.kinds.contains(&kind))
        .filter_map(|trigger| Some((trigger, trigger.params(path)?)))
        .collect()
}

fn change_path(change: &Committed) -> String {
    format!("{}/{}", change.key.collection, change.key.id)
}

fn jobs_of_change(triggers: &[DocTrigger], change: &Committed, auth: &Value, now: i64) -> Vec<NewJob> {
    let path = change_path(change);
    let kind = change.kind.map_or("", |k| k.as_str());
    fired(triggers, change, &path)
        .into_iter()
        .map(|(trigger, params)| {
            let id = crate::ids::uuid();
            let event = json!({
                "id": id,
                "type": kind,
                "path": path,
                "params": params,
                "before": parse(change.before.as_deref()),
                "after": parse(change.doc.as_ref().map(|d| d.data.as_str())),
                "time": format_time(now),
                "auth": auth,
            });
            NewJob { id, function: trigger.function.clone(), payload: event.to_string() }
        })
        .collect()
}

/// Publishing messages to topics (`POST /v1/messages/{topic}`, `ctx.publish`).
#[derive(Clone)]
pub struct Messages {
    store: Store,
    index: TriggerIndex,
}

/// Topic names: 1 to 128 characters of letters, digits, `-`, `_` and `.`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 128 && topic.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Messages {
    pub fn new(store: Store, index: TriggerIndex) -> Messages {
        Messages { store, index }
    }

    /// Enqueues the message for every consumer of the topic; returns its id.
    pub async fn publish(&self, topic: &str, data: &Value) -> Result<String, StoreError> {
        let (id, jobs) = self.index.message_jobs(topic, data);
        if !jobs.is_empty() {
            self.store.enqueue_jobs(&jobs).await?;
        }
        Ok(id)
    }
}
