//! Documents: JSON documents in collections. Owns every client-reachable read
//! and write of document data — access checks, data validation, merges and
//! transforms, preconditions, batches and queries — and hands the result to
//! `store` as one transaction. New entry points (GraphQL, realtime, functions)
//! call this module, never `store` directly, so checks cannot be bypassed.

pub mod api;
pub mod data;
pub mod path;
pub mod query;
pub mod schema;

use std::collections::HashSet;

use sha2::Digest;

use serde_json::Value;

use crate::auth::Caller;
use crate::clock::format_time;
use crate::error::{ApiFailure, ErrorCode};
use crate::store::documents::{CommitError, Committed, DocKey, Outcome, Rejection, StoredDoc, Write};
use crate::store::{Store, StoreError};
use data::{DataLimits, Mode};
use path::{CollectionPath, DocPath, PathError};
use query::{ParsedQuery, Wanted};
use schema::Schemas;

/// Most writes in one batch.
pub const MAX_BATCH_WRITES: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("document {0} does not exist")]
    NotFound(String),
    #[error("document {0} already exists")]
    AlreadyExists(String),
    #[error("document {path} fails its precondition: expected version {expected}, found {actual}")]
    VersionMismatch { path: String, expected: i64, actual: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiFailure for DocumentError {
    fn code(&self) -> ErrorCode {
        match self {
            DocumentError::InvalidPath(_) | DocumentError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            DocumentError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            DocumentError::NotFound(_) => ErrorCode::NotFound,
            DocumentError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            DocumentError::VersionMismatch { .. } => ErrorCode::FailedPrecondition,
            DocumentError::Store(e) => e.code(),
        }
    }
}

/// What a write does.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create; fails with `already-exists` when the document exists.
    Create(Value),
    /// Create or replace.
    Set(Value),
    /// Merge into an existing document; fails with `not-found` when missing.
    Update(Value),
    Delete,
}

/// A condition the current document must meet for the write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The document exists at exactly this version.
    Version(i64),
    /// The document does not exist.
    MustNotExist,
}

#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub path: DocPath,
    pub op: WriteOp,
    pub precondition: Precondition,
}

/// A document as read, with the path it lives at.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: DocPath,
    pub stored: StoredDoc,
}

/// The result of a query.
#[derive(Debug)]
pub enum QueryResult {
    Documents { collection: CollectionPath, documents: Vec<StoredDoc>, next_cursor: Option<String> },
    Count(i64),
    Aggregates(Vec<(String, Value)>),
}

/// The document service.
#[derive(Clone)]
pub struct Documents {
    store: Store,
    limits: DataLimits,
    schemas: Schemas,
}

impl Documents {
    pub fn new(store: Store, limits: DataLimits, schemas: Schemas) -> Documents {
        Documents { store, limits, schemas }
    }

    /// Until security rules exist, only the service key may touch documents (default deny).
    fn authorize(&self, caller: &Caller) -> Result<(), DocumentError> {
        match caller {
            Caller::Service => Ok(()),
            Caller::Public | Caller::User(_) => {
                Err(DocumentError::PermissionDenied("no security rule allows this request".into()))
            }
        }
    }

    pub async fn get(&self, caller: &Caller, path: &DocPath) -> Result<Document, DocumentError> {
        self.authorize(caller)?;
        let stored = self.store.get_document(&key(path)).await?;
        stored
            .map(|stored| Document { path: path.clone(), stored })
            .ok_or_else(|| DocumentError::NotFound(path.to_string()))
    }

    /// Applies the writes atomically; returns each write's result in order.
    pub async fn write(&self, caller: &Caller, requests: Vec<WriteRequest>) -> Result<Vec<Committed>, DocumentError> {
        self.authorize(caller)?;
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
            if let WriteOp::Create(data) | WriteOp::Set(data) | WriteOp::Update(data) = &request.op {
                let mode = if matches!(request.op, WriteOp::Update(_)) { Mode::Merge } else { Mode::Replace };
                data::validate(data, mode, self.limits).map_err(|e| batch_error(&requests, i, e))?;
            }
        }
        let writes = requests.iter().map(|r| self.store_write(r)).collect();
        match self.store.commit(writes).await {
            Ok(committed) => Ok(committed),
            Err(CommitError::Store(e)) => Err(e.into()),
            Err(CommitError::Rejected { index, rejection }) => Err(rejected(&requests, index, rejection)),
        }
    }

    fn store_write(&self, request: &WriteRequest) -> Write {
        let op = request.op.clone();
        let precondition = request.precondition;
        let limits = self.limits;
        let schemas = self.schemas.clone();
        let key = key(&request.path);
        let collection = key.collection.clone();
        Write {
            key,
            mutation: Box::new(move |current, now| {
                let outcome = decide(&op, precondition, current, now, limits)?;
                if let (Outcome::Put(data), false) = (&outcome, schemas.is_empty()) {
                    let value: Value = serde_json::from_str(data).map_err(|e| Rejection::Invalid(e.to_string()))?;
                    schemas.check(&collection, &value).map_err(Rejection::Invalid)?;
                }
                Ok(outcome)
            }),
        }
    }

    pub async fn query(&self, caller: &Caller, parsed: ParsedQuery) -> Result<QueryResult, DocumentError> {
        self.authorize(caller)?;
        let ParsedQuery { collection, query, wanted } = parsed;
        match wanted {
            Wanted::Count => Ok(QueryResult::Count(self.store.count_documents(&query).await?)),
            Wanted::Aggregates(list) => {
                let functions: Vec<_> = list.iter().filter_map(|(_, a)| a.clone()).collect();
                let mut values = self.store.aggregate_documents(&query, &functions).await?.into_iter();
                let needs_count = list.iter().any(|(_, a)| a.is_none());
                let count = if needs_count { self.store.count_documents(&query).await? } else { 0 };
                let results = list
                    .into_iter()
                    .map(|(name, aggregate)| {
                        let value = match aggregate {
                            None => Value::from(count),
                            Some(_) => values.next().flatten().map_or(Value::Null, Value::from),
                        };
                        (name, value)
                    })
                    .collect();
                Ok(QueryResult::Aggregates(results))
            }
            Wanted::Documents => {
                let page = self.store.query_documents(&query).await?;
                let next_cursor =
                    page.next.map(|cursor| query::encode_cursor(collection.as_str(), &query.order, &cursor));
                Ok(QueryResult::Documents { collection, documents: page.documents, next_cursor })
            }
        }
    }

    /// Plain listing of a collection in id order.
    pub async fn list(
        &self,
        caller: &Caller,
        collection: &CollectionPath,
        limit: Option<u32>,
        page_token: Option<&str>,
    ) -> Result<QueryResult, DocumentError> {
        let query = query::list_query(collection, limit, page_token).map_err(DocumentError::InvalidArgument)?;
        self.query(caller, ParsedQuery { collection: collection.clone(), query, wanted: Wanted::Documents }).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Creates the expression indexes declared in configuration (idempotent).
pub async fn ensure_indexes(store: &Store, indexes: &[crate::config::IndexSetting]) -> Result<(), String> {
    for (i, index) in indexes.iter().enumerate() {
        let context = format!("nimbus.toml: indexes[{i}]");
        CollectionPath::parse(&index.collection.replace('*', "x"))
            .map_err(|e| format!("{context}.collection: {}", e.0))?;
        if index.fields.is_empty() || index.fields.len() > 8 {
            return Err(format!("{context}.fields: list 1 to 8 fields"));
        }
        let fields = index
            .fields
            .iter()
            .map(|f| {
                crate::store::query::FieldPath::parse(f)
                    .ok_or_else(|| format!("{context}.fields: invalid field path {f:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name =
            format!("documents_idx_{}", &hex::encode(sha2::Sha256::digest(index.fields.join(",").as_bytes()))[..16]);
        store.ensure_index(&name, &fields).await.map_err(|e| format!("{context}: {e}"))?;
    }
    Ok(())
}

fn key(path: &DocPath) -> DocKey {
    DocKey { collection: path.collection().as_str().to_owned(), id: path.id().to_owned() }
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
    let now_text = format_time(now);
    let data = match (op, current) {
        (WriteOp::Delete, _) => return Ok(Outcome::Delete),
        (WriteOp::Create(_), Some(_)) => return Err(Rejection::AlreadyExists),
        (WriteOp::Update(_), None) => return Err(Rejection::NotFound),
        (WriteOp::Create(data) | WriteOp::Set(data), _) => data::resolve(None, data, Mode::Replace, &now_text),
        (WriteOp::Update(data), Some(doc)) => {
            let current: Value = serde_json::from_str(&doc.data)
                .map_err(|_| Rejection::Invalid("the stored document is not valid JSON".into()))?;
            data::resolve(Some(current), data, Mode::Merge, &now_text)
        }
    };
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
    }
}
