//! HTTP surface of documents: `/v1/docs/{path}` (get, list, put, patch,
//! delete, create in a collection), `POST /v1/batch` and `POST /v1/query`.
//! Wire types live here (documents render through `render`); handlers extract, call one
//! `Documents` method and map the result.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use super::path::{AnyPath, CollectionPath, DocPath};
use super::query::QueryRequest;
use std::fmt::Write as _;

use super::render::{render_document, write_document};
use super::{Document, DocumentError, Precondition, QueryResult, WriteOp, WriteRequest};
use crate::auth::Caller;
use crate::clock::format_time;
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::store::commit::{ChangeKind, Committed};
use crate::store::documents::StoredDoc;

/// What the documents endpoints use.
#[derive(Clone)]
pub struct DocumentsApi {
    pub documents: super::Documents,
    pub authenticator: crate::auth::Authenticator,
}

crate::auth::api::authenticates!(DocumentsApi);

pub fn router() -> Router<Arc<DocumentsApi>> {
    Router::new()
        .route(
            "/v1/docs/{*path}",
            get(get_path)
                .put(put_or_patch_document)
                .patch(put_or_patch_document)
                .delete(delete_document)
                .post(create_in_collection),
        )
        .route("/v1/batch", post(batch))
        .route("/v1/query", post(run_query))
        .route("/v1/admin/explain", post(explain_query))
}

fn render(document: &Document) -> String {
    render_document(document.path.collection().as_str(), &document.stored)
}

fn json_response(status: StatusCode, body: String, version: Option<i64>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(version) = version {
        headers.insert(header::ETAG, HeaderValue::from(version));
    }
    response
}

fn render_page(documents: &[StoredDoc], next_cursor: Option<String>) -> String {
    let mut out = String::with_capacity(documents.iter().map(|d| d.data.len() + 160).sum::<usize>() + 64);
    out.push_str("{\"documents\":[");
    for (i, stored) in documents.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_document(&mut out, &stored.collection, stored);
    }
    let _ = write!(out, "],\"nextCursor\":{}}}", next_cursor.map_or(Value::Null, Value::from));
    out
}

fn render_query_result(result: QueryResult) -> String {
    match result {
        QueryResult::Documents { documents, next_cursor } => render_page(&documents, next_cursor),
        QueryResult::Count(n) => serde_json::json!({ "count": n }).to_string(),
        QueryResult::Aggregates(list) => {
            let map: serde_json::Map<String, Value> = list.into_iter().collect();
            serde_json::json!({ "aggregates": map }).to_string()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListParams {
    limit: Option<u32>,
    page_token: Option<String>,
}

async fn get_path(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    Path(path): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    match AnyPath::parse(&path).map_err(DocumentError::from)? {
        AnyPath::Document(path) => {
            let document = state.documents.get(&caller, &path).await?;
            Ok(json_response(StatusCode::OK, render(&document), Some(document.stored.version)))
        }
        AnyPath::Collection(collection) => {
            let result = state.documents.list(&caller, &collection, params.limit, params.page_token.as_deref()).await?;
            Ok(json_response(StatusCode::OK, render_query_result(result), None))
        }
    }
}

/// Reads `If-Match: <version>` and `If-None-Match: *`.
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("").trim().trim_matches('"').to_owned());
    match (text(header::IF_MATCH), text(header::IF_NONE_MATCH)) {
        (Some(_), Some(_)) => Err(ApiError::new(ErrorCode::InvalidArgument, "use If-Match or If-None-Match, not both")),
        (Some(version), None) => version
            .parse::<i64>()
            .map(Precondition::Version)
            .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "If-Match must be a document version number")),
        (None, Some(star)) if star == "*" => Ok(Precondition::MustNotExist),
        (None, Some(_)) => Err(ApiError::new(ErrorCode::InvalidArgument, "If-None-Match supports only `*`")),
        (None, None) => Ok(Precondition::None),
    }
}

fn committed_response(committed: Vec<Committed>, path: &DocPath) -> Response {
    match committed.into_iter().next() {
        Some(Committed { kind: Some(kind), doc: Some(doc), .. }) => {
            let status = if kind == ChangeKind::Create { StatusCode::CREATED } else { StatusCode::OK };
            let mut response =
                json_response(status, render_document(path.collection().as_str(), &doc), Some(doc.version));
            if kind == ChangeKind::Create {
                if let Ok(location) = HeaderValue::from_str(&format!("/v1/docs/{path}")) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
            }
            response
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn write_one(state: &DocumentsApi, caller: &Caller, request: WriteRequest) -> Result<Response, ApiError> {
    let path = request.path.clone();
    let committed = state.documents.write(caller, vec![request]).await?;
    Ok(committed_response(committed, &path))
}

fn doc_path(path: &str) -> Result<DocPath, ApiError> {
    Ok(DocPath::parse(path).map_err(DocumentError::from)?)
}

/// A write of the document at `path` with the request's precondition headers.
async fn write_at(
    state: &DocumentsApi,
    caller: &Caller,
    path: &str,
    headers: &HeaderMap,
    op: WriteOp,
) -> Result<Response, ApiError> {
    let request = WriteRequest { path: doc_path(path)?, op, precondition: precondition(headers)? };
    write_one(state, caller, request).await
}

/// `PUT` (set) and `PATCH` (update, a merge) of one document.
async fn put_or_patch_document(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    method: axum::http::Method,
    Path(path): Path<String>,
    headers: HeaderMap,
    ApiJson(data): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let op = if method == axum::http::Method::PATCH { WriteOp::Update(data) } else { WriteOp::Set(data) };
    write_at(&state, &caller, &path, &headers, op).await
}

async fn delete_document(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write_at(&state, &caller, &path, &headers, WriteOp::Delete).await
}

async fn create_in_collection(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    Path(path): Path<String>,
    ApiJson(data): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let collection = CollectionPath::parse(&path).map_err(DocumentError::from)?;
    let path = collection.doc(&crate::ids::random_id(20)).map_err(DocumentError::from)?;
    write_one(&state, &caller, WriteRequest { path, op: WriteOp::CreateNew(data), precondition: Precondition::None })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    writes: Vec<BatchWrite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchWrite {
    op: BatchOp,
    path: String,
    data: Option<Value>,
    precondition: Option<BatchPrecondition>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum BatchOp {
    Set,
    Update,
    Delete,
    Create,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchPrecondition {
    version: Option<i64>,
    exists: Option<bool>,
}

/// One write of a batch given as JSON (the REST batch shape), for `ctx.db.batch()`.
pub fn batch_write_from_json(index: usize, write: Value) -> Result<WriteRequest, ApiError> {
    let write: BatchWrite = crate::http::extract::decode_value(write)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, format!("writes[{index}]: {}", e.message)))?;
    batch_request(index, write)
}

fn batch_request(index: usize, write: BatchWrite) -> Result<WriteRequest, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidArgument, format!("writes[{index}]: {m}"));
    let path = DocPath::parse(&write.path).map_err(|e| invalid(e.to_string()))?;
    let data = |d: Option<Value>| d.ok_or_else(|| invalid("`data` is required for this op".into()));
    let op = match write.op {
        BatchOp::Set => WriteOp::Set(data(write.data)?),
        BatchOp::Update => WriteOp::Update(data(write.data)?),
        BatchOp::Create => WriteOp::Create(data(write.data)?),
        BatchOp::Delete if write.data.is_some() => return Err(invalid("`data` is not allowed for delete".into())),
        BatchOp::Delete => WriteOp::Delete,
    };
    let precondition = match write.precondition {
        None => Precondition::None,
        Some(BatchPrecondition { version: Some(v), exists: None }) => Precondition::Version(v),
        Some(BatchPrecondition { version: None, exists: Some(false) }) => Precondition::MustNotExist,
        Some(_) => return Err(invalid("`precondition` is {\"version\": n} or {\"exists\": false}".into())),
    };
    Ok(WriteRequest { path, op, precondition })
}

async fn batch(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Response, ApiError> {
    let requests =
        body.writes.into_iter().enumerate().map(|(i, w)| batch_request(i, w)).collect::<Result<Vec<_>, _>>()?;
    let paths: Vec<DocPath> = requests.iter().map(|r| r.path.clone()).collect();
    let committed = state.documents.write(&caller, requests).await?;
    let results: Vec<Value> = committed
        .iter()
        .zip(paths)
        .map(|(c, path)| match &c.doc {
            Some(doc) => serde_json::json!({"path": path.to_string(), "version": doc.version, "updateTime": format_time(doc.update_time)}),
            None => serde_json::json!({"path": path.to_string(), "deleted": true}),
        })
        .collect();
    Ok(json_response(StatusCode::OK, serde_json::json!({ "writes": results }).to_string(), None))
}

async fn run_query(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    let parsed = body.parse().map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
    let result = state.documents.query(&caller, parsed).await?;
    Ok(json_response(StatusCode::OK, render_query_result(result), None))
}

/// The database's plan for a query (service key only), to check index use.
async fn explain_query(
    State(state): State<Arc<DocumentsApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    if caller != Caller::Service {
        return Err(ApiError::new(ErrorCode::PermissionDenied, "the service key is required"));
    }
    let parsed = body.parse().map_err(|m| ApiError::new(ErrorCode::InvalidArgument, m))?;
    let plan = state.documents.store().explain_query(&parsed.query).await.map_err(DocumentError::from)?;
    Ok(json_response(StatusCode::OK, serde_json::json!({ "plan": plan }).to_string(), None))
}
