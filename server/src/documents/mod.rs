//! Documents: JSON documents in collections. Owns every client-reachable read
//! and write of document data — access checks, data validation, merges and
//! transforms, preconditions, batches (`write`) and queries under the rules
//! (`scan`), declared indexes (`indexes`) — and hands the result to `store`
//! as one transaction. New entry points (GraphQL, realtime, functions)
//! call this module, never `store` directly, so checks cannot be bypassed.

pub mod access;
pub mod api;
pub mod cursor;
pub mod data;
mod indexes;
pub mod path;
pub mod query;
pub mod render;
mod scan;
pub mod schema;
pub mod typescript;
mod write;

use serde_json::Value;

use crate::auth::Caller;
use crate::clock::now_micros;
use crate::error::{ApiFailure, ErrorCode};
use crate::rules::RulesService;
use crate::store::documents::{DocKey, StoredDoc};
use crate::store::{Store, StoreError};
use crate::swap::Swap;
use crate::triggers::TriggerIndex;
use access::Fetched;
use data::DataLimits;
use nimbus_rules_lang::ast::Method;
use path::{CollectionPath, DocPath, PathError};
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
    /// Create at an id the server has just generated (`POST` on a collection).
    CreateNew(Value),
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
    /// Each document knows its collection (a collection group spans several).
    Documents {
        documents: Vec<StoredDoc>,
        next_cursor: Option<String>,
    },
    Count(i64),
    Aggregates(Vec<(String, Value)>),
}

/// The document service.
#[derive(Clone)]
pub struct Documents {
    store: Store,
    limits: DataLimits,
    /// The collections' JSON Schemas in force (replaced when nimbus.toml changes).
    schemas: Swap<Schemas>,
    rules: RulesService,
    /// Rows read by rules-filtered lists (`nimbus_documents_rows_read_total`).
    rows_read: prometheus::IntCounter,
    /// Statements run to read documents (`nimbus_documents_read_statements_total`).
    read_statements: prometheus::IntCounter,
    triggers: TriggerIndex,
    cursors: cursor::CursorSeal,
}

fn denied(what: &str) -> DocumentError {
    DocumentError::PermissionDenied(format!("security rules do not allow {what}"))
}

fn parse_data(stored: &StoredDoc) -> Result<Value, DocumentError> {
    serde_json::from_str(&stored.data)
        .map_err(|e| StoreError::Internal(format!("stored document is not JSON: {e}")).into())
}

impl Documents {
    /// The service over `store`, with the cursor key every instance shares.
    pub async fn start(
        store: Store,
        schemas: Schemas,
        rules: RulesService,
        metrics: DocumentMetrics,
        triggers: TriggerIndex,
    ) -> Result<Documents, StoreError> {
        let cursors = cursor::CursorSeal::establish(&store).await?;
        let DocumentMetrics { rows_read, read_statements } = metrics;
        Ok(Documents {
            limits: DataLimits::default(),
            store,
            schemas: Swap::new(schemas),
            rules,
            rows_read,
            read_statements,
            triggers,
            cursors,
        })
    }

    /// Puts `schemas` in force for the writes that follow.
    pub fn replace_schemas(&self, schemas: Schemas) {
        self.schemas.store(schemas);
    }

    pub async fn get(&self, caller: &Caller, path: &DocPath) -> Result<Document, DocumentError> {
        self.read_statements.inc();
        let stored = self.store.get_document(&key(path)).await?;
        if *caller != Caller::Service {
            let existing = stored.as_ref().map(parse_data).transpose()?;
            let path_text = path.to_string();
            let check =
                access::Check { method: Method::Get, path: &path_text, existing: existing.as_ref(), incoming: None };
            if !self.allowed(caller, &mut Fetched::default(), &check).await? {
                return Err(denied(&format!("reading {path}")));
            }
        }
        stored
            .map(|stored| Document { path: path.clone(), stored })
            .ok_or_else(|| DocumentError::NotFound(path.to_string()))
    }

    /// Whether the rules let `caller` create `path` with `data` (used for
    /// publishing to `topics/{topic}`, which has no document).
    pub async fn may_create(&self, caller: &Caller, path: &str, data: &Value) -> Result<bool, DocumentError> {
        let check = access::Check { method: Method::Create, path, existing: None, incoming: Some(data) };
        self.allowed(caller, &mut Fetched::default(), &check).await
    }

    /// Whether the rules let `caller` read the document at `path` holding
    /// `data` by `method` (`get` or `list`): realtime's check at delivery.
    pub async fn may_read(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        data: &Value,
    ) -> Result<bool, DocumentError> {
        if *caller == Caller::Service {
            return Ok(true);
        }
        let check = access::Check { method, path, existing: Some(data), incoming: None };
        self.allowed(caller, &mut Fetched::default(), &check).await
    }

    async fn allowed(
        &self,
        caller: &Caller,
        fetched: &mut Fetched<'_>,
        check: &access::Check<'_>,
    ) -> Result<bool, DocumentError> {
        self.allowed_at(caller, fetched, check, now_micros()).await
    }

    /// `allowed` with `request.time` = `time`.
    async fn allowed_at(
        &self,
        caller: &Caller,
        fetched: &mut Fetched<'_>,
        check: &access::Check<'_>,
        time: i64,
    ) -> Result<bool, DocumentError> {
        let rules = self.rules.current();
        let auth = access::rules_auth(caller);
        Ok(access::allowed(&rules, &self.store, fetched, auth.as_deref(), time, check).await?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same service, but its writes enqueue no trigger jobs (`nimbus import … --no-triggers`).
    pub fn without_triggers(&self) -> Documents {
        Documents { triggers: TriggerIndex::default(), ..self.clone() }
    }
}

fn key(path: &DocPath) -> DocKey {
    DocKey { collection: path.collection().as_str().to_owned(), id: path.id().to_owned() }
}

pub use indexes::ensure_indexes;

/// The documents' series (what `Documents::start` counts into).
pub struct DocumentMetrics {
    rows_read: prometheus::IntCounter,
    read_statements: prometheus::IntCounter,
}

impl DocumentMetrics {
    /// Registers them with the app's registry.
    pub fn register(metrics: &crate::http::metrics::Metrics) -> Result<DocumentMetrics, prometheus::Error> {
        Ok(DocumentMetrics {
            rows_read: metrics
                .counter("nimbus_documents_rows_read_total", "Documents read by rules-filtered lists and queries")?,
            read_statements: metrics.counter(
                "nimbus_documents_read_statements_total",
                "Statements run to read the documents asked for (gets, pages, counts, aggregates)",
            )?,
        })
    }
}
