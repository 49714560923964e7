//! What functions may ask of Nimbus through `ctx.db`: documents with admin
//! access, like a Firebase Admin SDK. Requests go through `Documents` as the
//! service caller, so rules are skipped but validation, schemas, the change
//! log and (later) triggers are not. Calls come from the JavaScript worker
//! threads and run on the server's runtime.

use std::future::Future;
use std::pin::Pin;

use nimbus_js_runtime::{Host, HostError};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::documents::path::{CollectionPath, DocPath};
use crate::documents::query::QueryRequest;
use crate::documents::{Documents, Precondition, QueryResult, WriteOp, WriteRequest};
use crate::error::ErrorCode;
use crate::http::error::ApiError;
use crate::store::documents::StoredDoc;
use crate::triggers::Messages;

pub struct FunctionHost {
    runtime: tokio::runtime::Handle,
    documents: Documents,
    messages: Messages,
    fetch: Fetcher,
}

impl FunctionHost {
    pub fn new(
        runtime: tokio::runtime::Handle,
        documents: Documents,
        messages: Messages,
        allowed_hosts: Vec<String>,
    ) -> FunctionHost {
        FunctionHost { runtime, documents, messages, fetch: Fetcher::new(allowed_hosts) }
    }
}

/// `fetch()` for functions: only to the hosts allowed in configuration
/// (`api.example.com`, or `*.example.com` for its subdomains).
#[derive(Clone)]
struct Fetcher {
    client: reqwest::Client,
    allowed: std::sync::Arc<Vec<String>>,
}

/// Largest response body handed to a function.
const MAX_FETCH_BYTES: usize = 10 * 1024 * 1024;

impl Fetcher {
    fn new(allowed: Vec<String>) -> Fetcher {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Fetcher { client, allowed: std::sync::Arc::new(allowed) }
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed.iter().any(|a| match a.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => a == host,
        })
    }

    async fn fetch(&self, request: &Value) -> Result<Value, ApiError> {
        let url = reqwest::Url::parse(request["url"].as_str().unwrap_or_default())
            .map_err(|_| invalid("fetch() needs an absolute http(s) URL"))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if !matches!(url.scheme(), "http" | "https") || !self.allows(&host) {
            return Err(ApiError::new(ErrorCode::PermissionDenied, format!("fetch() to {host:?} is not allowed")));
        }
        let method = reqwest::Method::from_bytes(request["method"].as_str().unwrap_or("GET").as_bytes())
            .map_err(|_| invalid("fetch(): invalid method"))?;
        let mut outgoing = self.client.request(method, url);
        if let Some(headers) = request["headers"].as_object() {
            for (name, value) in headers {
                outgoing = outgoing.header(name.as_str(), value.as_str().unwrap_or_default());
            }
        }
        if let Some(body) = request["body"].as_str() {
            outgoing = outgoing.body(body.to_owned());
        }
        let mut response = outgoing.send().await.map_err(|e| fetch_failed(&host, &e))?;
        let status = response.status().as_u16();
        let headers: serde_json::Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), Value::String(v.to_str().ok()?.to_owned()))))
            .collect();
        let too_large = || ApiError::new(ErrorCode::ResourceExhausted, "fetch(): the response is larger than 10 MiB");
        if response.content_length().is_some_and(|length| length > MAX_FETCH_BYTES as u64) {
            return Err(too_large());
        }
        // Read the body as it arrives and stop at the limit, so a huge (or
        // endless) response never sits in memory whole.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch_failed(&host, &e))? {
            if bytes.len() + chunk.len() > MAX_FETCH_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(json!({"status": status, "headers": headers, "body": String::from_utf8_lossy(&bytes)}))
    }
}

/// A failed `fetch()` as the function sees it: what went wrong in general
/// terms (the library's own text, which may name internals, is only logged).
fn fetch_failed(host: &str, error: &reqwest::Error) -> ApiError {
    tracing::warn!(host = %host, "fetch() failed: {error}");
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    ApiError::new(ErrorCode::Unavailable, format!("fetch() to {host:?} failed: {what}"))
}

impl Host for FunctionHost {
    fn call(&self, request: Value) -> Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send>> {
        let (documents, messages, fetch) = (self.documents.clone(), self.messages.clone(), self.fetch.clone());
        let task = self.runtime.spawn(async move {
            if request["op"] == "fetch" {
                return fetch.fetch(&request).await.map_err(host_error);
            }
            handle(&documents, &messages, request).await.map_err(host_error)
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| Err(HostError { code: "internal".into(), message: e.to_string() }))
        })
    }
}

fn host_error(error: ApiError) -> HostError {
    HostError { code: error.code.as_str().to_owned(), message: error.message }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

/// A document as REST renders it (`documents::render`), as a value for the function.
fn document_json(stored: &StoredDoc) -> Value {
    serde_json::from_str(&crate::documents::render::render_document(&stored.collection, stored)).unwrap_or(Value::Null)
}

fn doc_path(request: &Value) -> Result<DocPath, ApiError> {
    let path = request["path"].as_str().ok_or_else(|| invalid("`path` is required"))?;
    Ok(DocPath::parse(path).map_err(crate::documents::DocumentError::from)?)
}

fn precondition(request: &Value) -> Result<Precondition, ApiError> {
    match request.get("precondition") {
        None | Some(Value::Null) => Ok(Precondition::None),
        Some(p) => match (p.get("version").and_then(Value::as_i64), p.get("exists")) {
            (Some(version), None) => Ok(Precondition::Version(version)),
            (None, Some(Value::Bool(false))) => Ok(Precondition::MustNotExist),
            _ => Err(invalid("`precondition` is {version: n} or {exists: false}")),
        },
    }
}

async fn write(documents: &Documents, requests: Vec<WriteRequest>) -> Result<Value, ApiError> {
    let paths: Vec<String> = requests.iter().map(|r| r.path.to_string()).collect();
    let committed = documents.write(&Caller::Service, requests).await?;
    Ok(Value::Array(
        committed
            .iter()
            .zip(paths)
            .map(|(c, path)| match &c.doc {
                Some(doc) => json!({"path": path, "id": doc.id, "version": doc.version}),
                None => json!({"path": path, "deleted": true}),
            })
            .collect(),
    ))
}

fn data(request: &Value) -> Result<Value, ApiError> {
    request.get("data").cloned().ok_or_else(|| invalid("`data` is required"))
}

async fn handle(documents: &Documents, messages: &Messages, request: Value) -> Result<Value, ApiError> {
    let op = request["op"].as_str().unwrap_or_default();
    let one = |op: WriteOp| -> Result<Vec<WriteRequest>, ApiError> {
        Ok(vec![WriteRequest { path: doc_path(&request)?, op, precondition: precondition(&request)? }])
    };
    match op {
        "get" => {
            let path = doc_path(&request)?;
            match documents.get(&Caller::Service, &path).await {
                Ok(document) => Ok(document_json(&document.stored)),
                Err(crate::documents::DocumentError::NotFound(_)) => Ok(Value::Null),
                Err(e) => Err(e.into()),
            }
        }
        "set" => first(write(documents, one(WriteOp::Set(data(&request)?))?).await?),
        "create" => first(write(documents, one(WriteOp::Create(data(&request)?))?).await?),
        "update" => first(write(documents, one(WriteOp::Update(data(&request)?))?).await?),
        "delete" => first(write(documents, one(WriteOp::Delete)?).await?),
        "add" => {
            let collection = request["collection"].as_str().ok_or_else(|| invalid("`collection` is required"))?;
            let collection = CollectionPath::parse(collection).map_err(crate::documents::DocumentError::from)?;
            let path = collection.doc(&crate::ids::random_id(20)).map_err(crate::documents::DocumentError::from)?;
            let request =
                WriteRequest { path, op: WriteOp::CreateNew(data(&request)?), precondition: Precondition::None };
            first(write(documents, vec![request]).await?)
        }
        "batch" => {
            let writes = request["writes"].as_array().cloned().unwrap_or_default();
            let requests = writes
                .into_iter()
                .enumerate()
                .map(|(i, w)| crate::documents::api::batch_write_from_json(i, w))
                .collect::<Result<Vec<_>, _>>()?;
            write(documents, requests).await
        }
        "query" => {
            let query: QueryRequest = crate::http::extract::decode_value(request["query"].clone())?;
            let parsed = query.parse().map_err(invalid)?;
            match documents.query(&Caller::Service, parsed).await? {
                QueryResult::Documents { documents, next_cursor } => Ok(json!({
                    "documents": documents
                        .iter()
                        .map(document_json)
                        .collect::<Vec<_>>(),
                    "nextCursor": next_cursor,
                })),
                QueryResult::Count(n) => Ok(json!({ "count": n })),
                QueryResult::Aggregates(list) => {
                    Ok(json!({ "aggregates": list.into_iter().collect::<serde_json::Map<_, _>>() }))
                }
            }
        }
        "publish" => {
            let topic = request["topic"].as_str().unwrap_or_default();
            if !crate::triggers::valid_topic(topic) {
                return Err(invalid("topic names are 1-128 letters, digits, '-', '_' or '.'"));
            }
            let id = messages.publish(topic, &request["data"]).await?;
            Ok(json!({ "id": id }))
        }
        other => Err(invalid(format!("unknown ctx.db operation {other:?}"))),
    }
}

fn first(results: Value) -> Result<Value, ApiError> {
    Ok(results.as_array().and_then(|r| r.first()).cloned().unwrap_or(Value::Null))
}
