//! Documents: JSON documents in collections. Owns every client-reachable read
//! and write of document data — access checks, data validation, merges and
//! transforms, preconditions, batches and queries — and hands the result to
//! `store` as one transaction. New entry points (GraphQL, realtime, functions)
//! call this module, never `store` directly, so checks cannot be bypassed.

pub mod access;
pub mod api;
pub mod cursor;
pub mod data;
pub mod path;
pub mod query;
pub mod render;
pub mod schema;

use std::collections::HashSet;

use sha2::Digest;

use serde_json::Value;

use crate::auth::Caller;
use crate::clock::now_micros;
use crate::error::{ApiFailure, ErrorCode};
use crate::rules::RulesService;
use crate::store::documents::{CommitError, Committed, DocKey, IndexScope, Outcome, Rejection, StoredDoc, Write};
use crate::store::{Store, StoreError};
use crate::triggers::TriggerIndex;
use access::Fetched;
use data::{DataLimits, Mode};
use nimbus_rules_lang::ast::Method;
use path::{CollectionPath, DocPath, PathError};
use query::{ParsedQuery, QueryScope, Wanted};
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
    schemas: Schemas,
    rules: RulesService,
    /// Rows read by rules-filtered lists (`nimbus_documents_rows_read_total`).
    rows_read: prometheus::IntCounter,
    triggers: TriggerIndex,
    cursors: cursor::CursorSeal,
}

/// Attempts at a rules-checked write whose documents change between the check and the commit.
const WRITE_ATTEMPTS: usize = 3;
/// Most documents a rules-filtered query examines to fill one page.
const MAX_SCANNED_PER_QUERY: usize = 5000;
/// Most documents checked against the rules for one count or aggregate.
const MAX_COUNTED_UNDER_RULES: usize = 100_000;

/// A query with the rules' list conditions added.
struct RuledQuery {
    query: crate::store::query::Query,
    /// The added filter is the whole decision: rows read need no per-row check.
    exact: bool,
}

/// Documents a scan kept, and the cursor after the last one read when more remain.
struct Scan {
    visible: Vec<StoredDoc>,
    next: Option<crate::store::query::Cursor>,
}

/// One aggregate over the numeric values of a field (`None` = count), as SQL computes it.
fn aggregate_in_memory(aggregate: Option<&crate::store::query::Aggregate>, documents: &[Value]) -> Value {
    use crate::store::query::AggregateFn;
    let Some(aggregate) = aggregate else { return Value::from(documents.len()) };
    let numbers: Vec<f64> = documents
        .iter()
        .filter_map(|d| aggregate.field.lookup(d))
        .filter(|v| v.is_number())
        .filter_map(Value::as_f64)
        .collect();
    if numbers.is_empty() {
        return Value::Null;
    }
    let result = match aggregate.function {
        AggregateFn::Sum => numbers.iter().sum(),
        AggregateFn::Avg => numbers.iter().sum::<f64>() / numbers.len() as f64,
        AggregateFn::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
        AggregateFn::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Value::from(result)
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
        rows_read: prometheus::IntCounter,
        triggers: TriggerIndex,
    ) -> Result<Documents, StoreError> {
        let cursors = cursor::CursorSeal::establish(&store).await?;
        Ok(Documents { limits: DataLimits::default(), store, schemas, rules, rows_read, triggers, cursors })
    }

    pub async fn get(&self, caller: &Caller, path: &DocPath) -> Result<Document, DocumentError> {
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
    pub async fn may_read(&self, caller: &Caller, method: Method, path: &str, data: &Value) -> Result<bool, DocumentError> {
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
            let current = self.store.get_document(&key(&request.path)).await?;
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
        let enqueues = jobs.is_some();
        match self.store.commit(writes, jobs, time).await {
            Ok(committed) => {
                // Waking the worker for nothing would cost a job claim, a write.
                if enqueues && self.triggers.matches_any(&committed) {
                    self.triggers.wake();
                }
                Ok(committed)
            }
            Err(CommitError::Store(e)) => Err(e.into()),
            Err(CommitError::Rejected { rejection: Rejection::Changed, .. }) => {
                Err(StoreError::Conflict("a document changed after the rules check".into()).into())
            }
            Err(CommitError::Rejected { index, rejection }) => Err(rejected(requests, index, rejection)),
        }
    }

    /// The store write for a request; with `seen`, the document must still be at that version.
    fn store_write(&self, request: &WriteRequest, seen: Option<Option<i64>>) -> Write {
        let op = request.op.clone();
        let precondition = request.precondition;
        let limits = self.limits;
        let schemas = self.schemas.clone();
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

    pub async fn query(&self, caller: &Caller, parsed: ParsedQuery) -> Result<QueryResult, DocumentError> {
        let ParsedQuery { scope, mut query, wanted, start_after, end_before } = parsed;
        let binding = scope.binding();
        let open = |token: Option<cursor::CursorToken>| {
            token
                .map(|t| self.cursors.open(&t, &binding, &query.order))
                .transpose()
                .map_err(DocumentError::InvalidArgument)
        };
        let (start_after, end_before) = (open(start_after)?, open(end_before)?);
        query.start_after = start_after;
        query.end_before = end_before;
        let query = match caller {
            Caller::Service => query,
            Caller::Public | Caller::User(_) => {
                let ruled = self.with_pushed_rules(caller, &scope, query)?;
                if !ruled.exact {
                    return match wanted {
                        Wanted::Documents => self.filtered_query(caller, &binding, ruled.query).await,
                        _ => self.filtered_aggregate(caller, ruled.query, wanted).await,
                    };
                }
                ruled.query
            }
        };
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
                if *caller != Caller::Service {
                    self.rows_read.inc_by(page.documents.len() as u64);
                }
                let next_cursor = page.next.map(|cursor| self.cursors.seal(&binding, &query.order, &cursor));
                Ok(QueryResult::Documents { documents: page.documents, next_cursor })
            }
        }
    }

    /// Rules act as filters: documents the caller may not `list` are left out,
    /// and further pages are read until the page is full (or the scan budget
    /// is spent), so limits and cursors stay exact.
    async fn filtered_query(
        &self,
        caller: &Caller,
        binding: &str,
        query: crate::store::query::Query,
    ) -> Result<QueryResult, DocumentError> {
        let scan = self.scan_visible(caller, query.clone(), query.limit as usize, MAX_SCANNED_PER_QUERY).await?;
        let next_cursor = scan.next.map(|cursor| self.cursors.seal(binding, &query.order, &cursor));
        Ok(QueryResult::Documents { documents: scan.visible, next_cursor })
    }

    /// Counts and aggregates over the documents the caller may `list`.
    async fn filtered_aggregate(
        &self,
        caller: &Caller,
        mut query: crate::store::query::Query,
        wanted: Wanted,
    ) -> Result<QueryResult, DocumentError> {
        query.limit = 1000;
        let scan = self.scan_visible(caller, query, usize::MAX, MAX_COUNTED_UNDER_RULES).await?;
        if scan.next.is_some() {
            return Err(DocumentError::InvalidArgument(format!(
                "more than {MAX_COUNTED_UNDER_RULES} documents to check against the rules; narrow the query"
            )));
        }
        let values: Vec<Value> = scan.visible.iter().map(parse_data).collect::<Result<_, _>>()?;
        Ok(match wanted {
            Wanted::Count => QueryResult::Count(values.len() as i64),
            Wanted::Aggregates(list) => QueryResult::Aggregates(
                list.into_iter()
                    .map(|(name, aggregate)| (name, aggregate_in_memory(aggregate.as_ref(), &values)))
                    .collect(),
            ),
            Wanted::Documents => QueryResult::Count(values.len() as i64),
        })
    }

    /// Refuses a collection no `allow list` applies to, and adds the rules'
    /// pushed-down conditions to the query.
    fn with_pushed_rules(
        &self,
        caller: &Caller,
        scope: &QueryScope,
        mut query: crate::store::query::Query,
    ) -> Result<RuledQuery, DocumentError> {
        let rules = self.rules.current();
        let auth = access::rules_auth(caller);
        let condition = match scope {
            QueryScope::Collection(collection) => {
                if !rules.covers(Method::List, collection.as_str()) {
                    return Err(denied(&format!("listing {collection}")));
                }
                rules.list_condition(collection.as_str(), auth.as_deref(), now_micros())
            }
            QueryScope::Group(id) => {
                if !rules.covers_group(Method::List, id) {
                    return Err(denied(&format!("listing the collection group {id}")));
                }
                rules.group_list_condition(id, auth.as_deref(), now_micros())
            }
        };
        let pushed = access::pushed_filter(&condition);
        if let Some(filter) = pushed.filter {
            query.filter = Some(match query.filter.take() {
                Some(own) => crate::store::query::Filter::And(vec![own, filter]),
                None => filter,
            });
        }
        Ok(RuledQuery { query, exact: pushed.exact })
    }

    /// Reads pages in query order, keeping the documents the caller may `list`,
    /// until `want` are kept or `budget` rows were read.
    async fn scan_visible(
        &self,
        caller: &Caller,
        mut query: crate::store::query::Query,
        want: usize,
        budget: usize,
    ) -> Result<Scan, DocumentError> {
        let mut visible: Vec<StoredDoc> = Vec::new();
        let mut fetched = Fetched::default();
        let mut scanned = 0;
        loop {
            let page = self.store.query_documents(&query).await?;
            self.rows_read.inc_by(page.documents.len() as u64);
            for stored in page.documents {
                scanned += 1;
                let path = format!("{}/{}", stored.collection, stored.id);
                let data = parse_data(&stored)?;
                let check = access::Check { method: Method::List, path: &path, existing: Some(&data), incoming: None };
                if self.allowed(caller, &mut fetched, &check).await? {
                    visible.push(stored);
                    if visible.len() == want {
                        let next = visible
                            .last()
                            .map(|last| crate::store::documents::cursor_after(last, &query))
                            .transpose()?;
                        return Ok(Scan { visible, next });
                    }
                }
            }
            match page.next {
                Some(cursor) if scanned < budget => query.start_after = Some(cursor),
                next => return Ok(Scan { visible, next }),
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
        let parsed = query::list_query(collection, limit, page_token).map_err(DocumentError::InvalidArgument)?;
        self.query(caller, parsed).await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same service, but its writes enqueue no trigger jobs (`nimbus import … --no-triggers`).
    pub fn without_triggers(&self) -> Documents {
        Documents { triggers: TriggerIndex::default(), ..self.clone() }
    }
}

/// The version of the sort-key expressions that declared indexes are built on.
const SORT_KEYS_VERSION: &str = "|keys-v2";

/// Creates the expression indexes declared in configuration (idempotent).
pub async fn ensure_indexes(store: &Store, indexes: &[crate::config::IndexSetting]) -> Result<(), String> {
    for (i, index) in indexes.iter().enumerate() {
        let context = format!("nimbus.toml: indexes[{i}]");
        let (target, scope) = match (&index.collection, &index.collection_group) {
            (Some(collection), None) => {
                let pattern = collection.trim_matches('/');
                CollectionPath::parse(&pattern.replace('*', "x"))
                    .map_err(|e| format!("{context}.collection: {}", e.0))?;
                // A pattern (`rooms/*/messages`) spans many collections: index them all.
                let scope =
                    if pattern.contains('*') { IndexScope::Everything } else { IndexScope::Collection(pattern) };
                (pattern.to_owned(), scope)
            }
            (None, Some(group)) => {
                let valid = CollectionPath::parse(group).is_ok_and(|p| !p.as_str().contains('/'));
                if !valid {
                    return Err(format!("{context}.collectionGroup: a collection id, one segment (e.g. \"comments\")"));
                }
                (format!("**/{group}"), IndexScope::Group(group))
            }
            _ => return Err(format!("{context}: give either `collection` or `collectionGroup`")),
        };
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
        // The identity names the sort-key expressions' version: when they
        // change (timestamps got their own type rank), the index is built
        // again under a new name and the old one is dropped.
        let name_of = |version: &str| {
            let identity = format!("{target}|{}{version}", index.fields.join(","));
            format!("documents_idx_{}", &hex::encode(sha2::Sha256::digest(identity.as_bytes()))[..16])
        };
        let (name, previous) = (name_of(SORT_KEYS_VERSION), name_of(""));
        store.drop_index(&previous).await.map_err(|e| format!("{context}: {e}"))?;
        store.ensure_index(&name, scope, &fields).await.map_err(|e| format!("{context}: {e}"))?;
    }
    Ok(())
}

fn key(path: &DocPath) -> DocKey {
    DocKey { collection: path.collection().as_str().to_owned(), id: path.id().to_owned() }
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
