//! Writes: a batch of creates, sets, updates and deletes checked against the
//! rules on the state they would change (the rule decides first, before
//! existence or preconditions), then committed atomically with mutations
//! that re-check that state inside the transaction.

use std::collections::HashSet;

use serde_json::Value;

use super::access::{self, Fetched};
use super::data::{self, DataLimits, Mode};
use super::{
    denied, key, parse_data, Caller, DocumentError, Documents, Precondition, WriteOp, WriteRequest, MAX_BATCH_WRITES,
};
use crate::clock::now_micros;
use crate::store::commit::{CommitError, Committed, Outcome, Rejection, Write};
use crate::store::documents::StoredDoc;
use crate::store::StoreError;
use nimbus_rules_lang::ast::Method;

/// Attempts at a rules-checked write whose documents change between the check and the commit.
const WRITE_ATTEMPTS: usize = 3;

impl Documents {
    /// Applies the writes atomically; returns each write's result in order.
    pub async fn write(&self, caller: &Caller, requests: Vec<WriteRequest>) -> Result<Vec<Committed>, DocumentError> {
        if requests.is_empty() || requests.len() > MAX_BATCH_WRITES {
            return Err(DocumentError::InvalidArgument(format!("a batch holds 1 to {MAX_BATCH_WRITES} writes")));
        }
        let mut seen = HashSet::new();
        for (i, request) in requests.iter().enumerate() {
            if !seen.insert(request.path.to_string()) {
                return Err(DocumentError::InvalidArgument(format!(
                    "writes[{i}]: {} is written twice in one batch",
                    request.path
                )));
            }
            if let WriteOp::Create(data) | WriteOp::CreateNew(data) | WriteOp::Set(data) | WriteOp::Update(data) =
                &request.op
            {
                let mode = if matches!(request.op, WriteOp::Update(_)) { Mode::Merge } else { Mode::Replace };
                data::validate(data, mode, self.limits).map_err(|e| batch_error(&requests, i, e))?;
            }
        }
        if *caller == Caller::Service {
            return self.commit(caller, &requests, None, None).await;
        }
        for attempt in 1..=WRITE_ATTEMPTS {
            let now = now_micros();
            let seen_versions = self.authorize_writes(caller, &requests, now).await?;
            // The commit happens at the `request.time` the rules saw, so a
            // `$serverTimestamp` equals `request.time` (and `updateTime`).
            match self.commit(caller, &requests, Some(&seen_versions), Some(now)).await {
                Err(DocumentError::Store(StoreError::Conflict(_))) if attempt < WRITE_ATTEMPTS => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict("the documents kept changing while the write was checked".into()).into())
    }

    /// Checks every write against the rules on a snapshot of the documents;
    /// returns the versions seen, which the commit then requires unchanged.
    /// The rule decides first, with `resource == null` for a missing
    /// document: a caller the rules refuse learns nothing of existence,
    /// versions or preconditions (those are answered by the commit, after).
    async fn authorize_writes(
        &self,
        caller: &Caller,
        requests: &[WriteRequest],
        now: i64,
    ) -> Result<Vec<Option<i64>>, DocumentError> {
        let mut views = Vec::with_capacity(requests.len());
        for request in requests {
            // A create at an id the server just drew has nothing to read: the
            // rule sees `resource == null` as for any create, and the commit
            // still requires the document to be absent (the version seen is `None`).
            let current = match request.op {
                WriteOp::CreateNew(_) => None,
                _ => self.store.get_document(&key(&request.path)).await?,
            };
            let existing = current.as_ref().map(parse_data).transpose()?;
            let (method, incoming) = rule_view(&request.op, existing.as_ref(), now);
            let existing = if method == Method::Create { None } else { existing };
            views.push((current.map(|c| c.version), method, existing, incoming));
        }
        let mut fetched = Fetched::default();
        for (request, (_, _, _, incoming)) in requests.iter().zip(&views) {
            fetched.write_after(request.path.to_string(), incoming.as_ref());
        }
        let mut versions = Vec::with_capacity(requests.len());
        for (index, (request, (version, method, existing, incoming))) in requests.iter().zip(&views).enumerate() {
            let method = *method;
            let path = request.path.to_string();
            let check = access::Check { method, path: &path, existing: existing.as_ref(), incoming: incoming.as_ref() };
            if !self.allowed_at(caller, &mut fetched, &check, now).await? {
                let what = format!("{} of {path}", method.name());
                return Err(if requests.len() == 1 {
                    denied(&what)
                } else {
                    denied(&format!("writes[{index}]: {what}"))
                });
            }
            versions.push(*version);
        }
        Ok(versions)
    }

    async fn commit(
        &self,
        caller: &Caller,
        requests: &[WriteRequest],
        seen: Option<&[Option<i64>]>,
        time: Option<i64>,
    ) -> Result<Vec<Committed>, DocumentError> {
        let writes =
            requests.iter().enumerate().map(|(i, r)| self.store_write(r, seen.map(|versions| versions[i]))).collect();
        let jobs = self.triggers.jobs_for(caller.to_json());
        self.store.commit(writes, jobs, time).await.map_err(|e| match e {
            CommitError::Store(e) => e.into(),
            CommitError::Rejected { rejection: Rejection::Changed, .. } => {
                StoreError::Conflict("a document changed after the rules check".into()).into()
            }
            CommitError::Rejected { index, rejection } => rejected(requests, index, rejection),
        })
    }

    /// The store write for a request; with `seen`, the document must still be at that version.
    fn store_write(&self, request: &WriteRequest, seen: Option<Option<i64>>) -> Write {
        let op = request.op.clone();
        let precondition = request.precondition;
        let limits = self.limits;
        let schemas = self.schemas.load();
        let key = key(&request.path);
        let collection = key.collection.clone();
        let fresh = matches!(request.op, WriteOp::CreateNew(_));
        Write {
            key,
            fresh,
            mutation: Box::new(move |current, now| {
                if seen.is_some_and(|version| version != current.map(|c| c.version)) {
                    return Err(Rejection::Changed);
                }
                let outcome = decide(&op, precondition, current, now, limits)?;
                if let (Outcome::Put(data), false) = (&outcome, schemas.is_empty()) {
                    let value: Value = serde_json::from_str(data).map_err(|e| Rejection::Invalid(e.to_string()))?;
                    schemas.check(&collection, &value).map_err(Rejection::Invalid)?;
                }
                Ok(outcome)
            }),
        }
    }
}

/// The rules method and `request.resource` of a write, from the op and the
/// current data alone (no precondition is looked at). A create is decided as
/// a create whether or not the document exists; a set is an update of an
/// existing document; update and delete are decided on a missing document
/// too, with `resource == null`. When a transform has no result (an
/// `$increment` overflow) `request.resource` is left out, so the rule errs
/// and denies unless it does not look; the commit then names the problem.
fn rule_view(op: &WriteOp, existing: Option<&Value>, now: i64) -> (Method, Option<Value>) {
    match op {
        WriteOp::Delete => (Method::Delete, None),
        WriteOp::Create(data) | WriteOp::CreateNew(data) => {
            (Method::Create, data::resolve(None, data, Mode::Replace, now).ok())
        }
        WriteOp::Set(data) => {
            let method = if existing.is_some() { Method::Update } else { Method::Create };
            (method, data::resolve(None, data, Mode::Replace, now).ok())
        }
        WriteOp::Update(data) => (Method::Update, data::resolve(existing.cloned(), data, Mode::Merge, now).ok()),
    }
}

/// The decision for one write against the current row, inside the transaction.
fn decide(
    op: &WriteOp,
    precondition: Precondition,
    current: Option<&StoredDoc>,
    now: i64,
    limits: DataLimits,
) -> Result<Outcome, Rejection> {
    match (precondition, current) {
        (Precondition::Version(expected), None) => return Err(Rejection::VersionMismatch { expected, actual: None }),
        (Precondition::Version(expected), Some(doc)) if doc.version != expected => {
            return Err(Rejection::VersionMismatch { expected, actual: Some(doc.version) })
        }
        (Precondition::MustNotExist, Some(_)) => return Err(Rejection::AlreadyExists),
        _ => {}
    }
    let data = match (op, current) {
        (WriteOp::Delete, _) => return Ok(Outcome::Delete),
        (WriteOp::Create(_) | WriteOp::CreateNew(_), Some(_)) => return Err(Rejection::AlreadyExists),
        (WriteOp::Update(_), None) => return Err(Rejection::NotFound),
        (WriteOp::Create(data) | WriteOp::CreateNew(data) | WriteOp::Set(data), _) => {
            data::resolve(None, data, Mode::Replace, now)
        }
        (WriteOp::Update(data), Some(doc)) => {
            let current: Value = serde_json::from_str(&doc.data)
                .map_err(|_| Rejection::Invalid("the stored document is not valid JSON".into()))?;
            data::resolve(Some(current), data, Mode::Merge, now)
        }
    }
    .map_err(Rejection::Invalid)?;
    let text = data.to_string();
    if text.len() > limits.max_bytes {
        return Err(Rejection::Invalid(format!("the document is larger than {} bytes", limits.max_bytes)));
    }
    Ok(Outcome::Put(text))
}

fn batch_error(requests: &[WriteRequest], index: usize, message: String) -> DocumentError {
    if requests.len() == 1 {
        DocumentError::InvalidArgument(message)
    } else {
        DocumentError::InvalidArgument(format!("writes[{index}] ({}): {message}", requests[index].path))
    }
}

fn rejected(requests: &[WriteRequest], index: usize, rejection: Rejection) -> DocumentError {
    let path = requests[index].path.to_string();
    match rejection {
        Rejection::NotFound => DocumentError::NotFound(path),
        Rejection::AlreadyExists => DocumentError::AlreadyExists(path),
        Rejection::VersionMismatch { expected, actual } => DocumentError::VersionMismatch {
            path,
            expected,
            actual: actual.map_or_else(|| "missing".to_owned(), |v| v.to_string()),
        },
        Rejection::Invalid(message) => batch_error(requests, index, message),
        Rejection::Changed => StoreError::Conflict(format!("{path} changed after the rules check")).into(),
    }
}
