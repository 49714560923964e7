//! The generic GraphQL schema and its resolvers: `document`, `documents`,
//! `count` (a collection or a collection group), `Document` with `field` and
//! `collection` (its subcollections, so a post and its comments come in one
//! request), and the mutations `createDocument`, `setDocument`,
//! `updateDocument`, `deleteDocument` and `batch`. Arguments are turned into
//! the REST shapes (`POST /v1/query`, `POST /v1/batch`) and parsed by the
//! same code, so limits, validation and error codes are REST's.

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ObjectAccessor, ResolverContext, Scalar,
    Schema, SchemaBuilder, TypeRef, ValueAccessor,
};
use async_graphql::{Error, Value as GraphqlValue};
use serde_json::{json, Value};

use super::loader::PageLoader;
use super::{failure, public};
use crate::auth::Caller;
use crate::clock::format_time;
use crate::documents::path::{CollectionPath, DocPath};
use crate::documents::query::{ParsedQuery, QueryRequest};
use crate::documents::{DocumentError, Documents, Precondition, QueryResult, WriteOp, WriteRequest};
use crate::error::ErrorCode;
use crate::store::commit::Committed;
use crate::store::documents::StoredDoc;
use crate::store::query::FieldPath;
use async_graphql::dataloader::DataLoader;

/// One page of a query's documents.
struct Page {
    documents: Vec<Doc>,
    next_cursor: Option<String>,
}

/// A document being resolved: its stored row, and its data parsed once, on first
/// use, for however many of its fields (`field(…)`, typed properties) read it.
pub(super) struct Doc {
    stored: StoredDoc,
    data: std::sync::OnceLock<Option<Value>>,
}

impl Doc {
    fn new(stored: StoredDoc) -> Doc {
        Doc { stored, data: std::sync::OnceLock::new() }
    }

    /// The data as JSON (an `internal` error when the stored text is not JSON).
    pub(super) fn data(&self) -> Result<&Value, Error> {
        self.data
            .get_or_init(|| serde_json::from_str(&self.stored.data).ok())
            .as_ref()
            .ok_or_else(|| failure(ErrorCode::Internal, "a stored document is not JSON"))
    }
}

/// What a `documents` or `collection` field queries.
pub(super) enum Scope {
    Collection(String),
    Group(String),
}

/// The schema's types and resolvers, with the typed part for `schemas`
/// (`nimbus.toml`'s JSON Schemas); the resolvers need `Documents` and
/// `Realtime` in the schema's data.
pub fn build(schemas: &[(String, Value)]) -> Result<SchemaBuilder, String> {
    let [event, change, live_document] = super::live::event_types();
    let typed = super::typed::build(schemas)?;
    let builder = Schema::build("Query", Some("Mutation"), Some("Subscription"))
        .register(
            Scalar::new("JSON")
                .description("Any JSON value; timestamps inside it are {\"$timestamp\": \"<RFC 3339>\"}."),
        )
        .register(Scalar::new("Timestamp").description("A point in time, RFC 3339 in UTC with microseconds."))
        .register(enumeration(
            "FilterOp",
            &["EQ", "NE", "LT", "LE", "GT", "GE", "IN", "NOT_IN", "ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"],
        ))
        .register(enumeration("Direction", &["ASC", "DESC"]))
        .register(enumeration("WriteOp", &["SET", "UPDATE", "CREATE", "DELETE"]))
        .register(filter_input())
        .register(order_input())
        .register(write_input())
        .register(document_type())
        .register(page_type())
        .register(write_result_type())
        .register(typed.root_fields.into_iter().fold(query_type(), |query, field| query.field(field)))
        .register(mutation_type())
        .register(event)
        .register(change)
        .register(live_document)
        .register(super::live::subscription_type());
    let builder = typed.objects.into_iter().fold(builder, |b, object| b.register(object));
    Ok(typed.inputs.into_iter().fold(builder, |b, input| b.register(input)))
}

fn enumeration(name: &str, items: &[&str]) -> Enum {
    items.iter().fold(Enum::new(name), |e, item| e.item(*item))
}

fn filter_input() -> InputObject {
    InputObject::new("Filter")
        .description("A comparison (`field`, `op`, `value`), or a group of filters: `or` (any) or `and` (all).")
        .field(InputValue::new("field", TypeRef::named(TypeRef::STRING)))
        .field(InputValue::new("op", TypeRef::named("FilterOp")))
        .field(InputValue::new("value", TypeRef::named("JSON")))
        .field(InputValue::new("or", TypeRef::named_nn_list("Filter")))
        .field(InputValue::new("and", TypeRef::named_nn_list("Filter")))
}

fn order_input() -> InputObject {
    InputObject::new("Order")
        .field(InputValue::new("field", TypeRef::named_nn(TypeRef::STRING)))
        .field(InputValue::new("direction", TypeRef::named("Direction")))
}

fn write_input() -> InputObject {
    InputObject::new("Write")
        .description("One write of a batch; `version` or `exists: false` is its precondition.")
        .field(InputValue::new("op", TypeRef::named_nn("WriteOp")))
        .field(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING)))
        .field(InputValue::new("data", TypeRef::named("JSON")))
        .field(InputValue::new("version", TypeRef::named(TypeRef::INT)))
        .field(InputValue::new("exists", TypeRef::named(TypeRef::BOOLEAN)))
}

/// The query arguments `documents` and `collection` share.
fn with_query_arguments(field: Field) -> Field {
    field
        .argument(InputValue::new("where", TypeRef::named_nn_list("Filter")))
        .argument(InputValue::new("orderBy", TypeRef::named_nn_list("Order")))
        .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
}

fn document_type() -> Object {
    document_meta_fields(Object::new("Document"))
}

/// The fields every document type has: `id`, `path`, `version`, the times,
/// `data`, `field(path)` and `collection(name, …)` (its subcollections).
pub(super) fn document_meta_fields(object: Object) -> Object {
    let text = |name: &str, read: fn(&StoredDoc) -> String| {
        Field::new(name, TypeRef::named_nn(TypeRef::STRING), move |ctx| {
            FieldFuture::new(async move { Ok(Some(GraphqlValue::from(read(stored(&ctx)?)))) })
        })
    };
    let time = |name: &str, read: fn(&StoredDoc) -> i64| {
        Field::new(name, TypeRef::named_nn("Timestamp"), move |ctx| {
            FieldFuture::new(async move { Ok(Some(GraphqlValue::from(format_time(read(stored(&ctx)?))))) })
        })
    };
    object
        .field(text("id", |d| d.id.clone()))
        .field(text("path", |d| format!("{}/{}", d.collection, d.id)))
        .field(Field::new("version", TypeRef::named_nn(TypeRef::INT), |ctx| {
            FieldFuture::new(async move { Ok(Some(GraphqlValue::from(stored(&ctx)?.version))) })
        }))
        .field(time("createTime", |d| d.create_time))
        .field(time("updateTime", |d| d.update_time))
        .field(Field::new("data", TypeRef::named_nn("JSON"), |ctx| {
            // Straight from the stored text to async-graphql's value (no serde_json value between).
            FieldFuture::new(async move {
                let data: GraphqlValue = serde_json::from_str(&stored(&ctx)?.data)
                    .map_err(|_| failure(ErrorCode::Internal, "a stored document is not JSON"))?;
                Ok(Some(data))
            })
        }))
        .field(
            Field::new("field", TypeRef::named("JSON"), |ctx| {
                FieldFuture::new(async move {
                    let path = ctx.args.try_get("path")?.string()?;
                    let field = FieldPath::parse(path)
                        .ok_or_else(|| failure(ErrorCode::InvalidArgument, format!("{path:?} is not a field path")))?;
                    field.lookup(doc(&ctx)?.data()?).map(|v| graphql_value(v.clone())).transpose()
                })
            })
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING))),
        )
        .field(with_query_arguments(
            // Nullable, so a refused subcollection is an error of this field only.
            Field::new("collection", TypeRef::named("DocumentPage"), |ctx| {
                FieldFuture::new(async move {
                    let parent = stored(&ctx)?;
                    let name = ctx.args.try_get("name")?.string()?;
                    let scope = Scope::Collection(format!("{}/{}/{name}", parent.collection, parent.id));
                    Ok(Some(nested_page(&ctx, scope).await?))
                })
            })
            .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING))),
        ))
}

fn page_type() -> Object {
    page_of("DocumentPage", "Document")
}

/// A page type named `name` of documents typed `item`.
pub(super) fn page_of(name: &str, item: &str) -> Object {
    Object::new(name)
        .field(Field::new("documents", TypeRef::named_nn_list_nn(item), |ctx| {
            FieldFuture::new(async move {
                let page = ctx.parent_value.try_downcast_ref::<Page>()?;
                Ok(Some(FieldValue::list(page.documents.iter().map(|d| FieldValue::borrowed_any(d)))))
            })
        }))
        .field(Field::new("nextCursor", TypeRef::named(TypeRef::STRING), |ctx| {
            FieldFuture::new(async move {
                let page = ctx.parent_value.try_downcast_ref::<Page>()?;
                Ok(page.next_cursor.clone().map(GraphqlValue::from))
            })
        }))
}

fn write_result_type() -> Object {
    Object::new("WriteResult")
        .field(json_field("path", TypeRef::named_nn(TypeRef::STRING), "path"))
        .field(json_field("version", TypeRef::named(TypeRef::INT), "version"))
        .field(json_field("updateTime", TypeRef::named("Timestamp"), "updateTime"))
        .field(json_field("deleted", TypeRef::named_nn(TypeRef::BOOLEAN), "deleted"))
}

/// A field read from the JSON object that is its parent (a write result, a realtime frame).
pub(super) fn json_field(name: &str, ty: TypeRef, key: &'static str) -> Field {
    Field::new(name, ty, move |ctx| {
        FieldFuture::new(async move {
            let parent = ctx.parent_value.try_downcast_ref::<Value>()?;
            parent.get(key).filter(|v| !v.is_null()).map(|v| graphql_value(v.clone())).transpose()
        })
    })
}

fn query_type() -> Object {
    let scoped = |field: Field| {
        field
            .argument(InputValue::new("collection", TypeRef::named(TypeRef::STRING)))
            .argument(InputValue::new("collectionGroup", TypeRef::named(TypeRef::STRING)))
    };
    Object::new("Query")
        .field(
            Field::new("document", TypeRef::named("Document"), |ctx| {
                FieldFuture::new(
                    async move { read_document(&ctx, &doc_path(ctx.args.try_get("path")?.string()?)?).await },
                )
            })
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING))),
        )
        .field(scoped(with_query_arguments(Field::new("documents", TypeRef::named_nn("DocumentPage"), |ctx| {
            FieldFuture::new(async move { Ok(Some(page(&ctx, root_scope(&ctx.args)?).await?)) })
        }))))
        .field(scoped(
            Field::new("count", TypeRef::named_nn(TypeRef::INT), |ctx| {
                FieldFuture::new(async move {
                    let body = query_body(root_scope(&ctx.args)?, &ctx.args, true)?;
                    match run_query(&ctx, body).await? {
                        QueryResult::Count(n) => Ok(Some(GraphqlValue::from(n))),
                        _ => Err(failure(ErrorCode::Internal, "a count answered something else")),
                    }
                })
            })
            .argument(InputValue::new("where", TypeRef::named_nn_list("Filter"))),
        ))
}

fn mutation_type() -> Object {
    let precondition = |field: Field| field.argument(InputValue::new("version", TypeRef::named(TypeRef::INT)));
    let with_data = |field: Field| {
        field
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING)))
            .argument(InputValue::new("data", TypeRef::named_nn("JSON")))
    };
    Object::new("Mutation")
        .field(
            Field::new("createDocument", TypeRef::named_nn("Document"), |ctx| {
                FieldFuture::new(async move {
                    let collection = CollectionPath::parse(ctx.args.try_get("collection")?.string()?)
                        .map_err(|e| public(DocumentError::from(e)))?;
                    let path =
                        collection.doc(&crate::ids::random_id(20)).map_err(|e| public(DocumentError::from(e)))?;
                    let op = WriteOp::CreateNew(json_argument(&ctx.args, "data")?);
                    written_document(&ctx, WriteRequest { path, op, precondition: Precondition::None }).await
                })
            })
            .argument(InputValue::new("collection", TypeRef::named_nn(TypeRef::STRING)))
            .argument(InputValue::new("data", TypeRef::named_nn("JSON"))),
        )
        .field(precondition(with_data(Field::new("setDocument", TypeRef::named_nn("Document"), |ctx| {
            FieldFuture::new(async move {
                let request = write_request(&ctx.args, WriteOp::Set(json_argument(&ctx.args, "data")?))?;
                written_document(&ctx, request).await
            })
        }))))
        .field(precondition(with_data(Field::new("updateDocument", TypeRef::named_nn("Document"), |ctx| {
            FieldFuture::new(async move {
                let request = write_request(&ctx.args, WriteOp::Update(json_argument(&ctx.args, "data")?))?;
                written_document(&ctx, request).await
            })
        }))))
        .field(precondition(
            Field::new("deleteDocument", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
                FieldFuture::new(async move {
                    let committed = write(&ctx, vec![write_request(&ctx.args, WriteOp::Delete)?]).await?;
                    Ok(Some(GraphqlValue::from(committed.iter().any(|c| c.kind.is_some()))))
                })
            })
            .argument(InputValue::new("path", TypeRef::named_nn(TypeRef::STRING))),
        ))
        .field(
            Field::new("batch", TypeRef::named_nn_list_nn("WriteResult"), |ctx| {
                FieldFuture::new(async move {
                    let writes = ctx.args.try_get("writes")?.list()?;
                    let requests =
                        writes.iter().enumerate().map(|(i, w)| batch_write(i, w)).collect::<Result<Vec<_>, Error>>()?;
                    let paths: Vec<DocPath> = requests.iter().map(|r| r.path.clone()).collect();
                    let committed = write(&ctx, requests).await?;
                    let results =
                        committed.iter().zip(paths).map(|(c, path)| FieldValue::owned_any(write_result(c, &path)));
                    Ok(Some(FieldValue::list(results.collect::<Vec<_>>())))
                })
            })
            .argument(InputValue::new("writes", TypeRef::named_nn_list_nn("Write"))),
        )
}

// ---- resolver helpers ----------------------------------------------------

fn service<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Documents, Error> {
    ctx.data::<Documents>()
}

fn caller<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Caller, Error> {
    ctx.data::<Caller>()
}

/// The document a field of a document type belongs to.
pub(super) fn doc<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Doc, Error> {
    ctx.parent_value.try_downcast_ref::<Doc>()
}

fn stored<'a>(ctx: &ResolverContext<'a>) -> Result<&'a StoredDoc, Error> {
    Ok(&doc(ctx)?.stored)
}

pub(super) fn graphql_value(value: Value) -> Result<GraphqlValue, Error> {
    GraphqlValue::from_json(value).map_err(|_| failure(ErrorCode::Internal, "a value has no GraphQL form"))
}

fn json_of(value: ValueAccessor<'_>) -> Result<Value, Error> {
    value.as_value().clone().into_json().map_err(|e| failure(ErrorCode::InvalidArgument, e.to_string()))
}

fn json_argument(args: &ObjectAccessor<'_>, name: &str) -> Result<Value, Error> {
    json_of(args.try_get(name)?)
}

pub(super) fn doc_path(text: &str) -> Result<DocPath, Error> {
    DocPath::parse(text).map_err(|e| public(DocumentError::from(e)))
}

fn write_request(args: &ObjectAccessor<'_>, op: WriteOp) -> Result<WriteRequest, Error> {
    let path = doc_path(args.try_get("path")?.string()?)?;
    let precondition = match args.get("version") {
        Some(version) if !version.is_null() => Precondition::Version(version.i64()?),
        _ => Precondition::None,
    };
    Ok(WriteRequest { path, op, precondition })
}

async fn write(ctx: &ResolverContext<'_>, requests: Vec<WriteRequest>) -> Result<Vec<Committed>, Error> {
    service(ctx)?.write(caller(ctx)?, requests).await.map_err(public)
}

/// Writes one document and answers it as written.
async fn written_document<'a>(
    ctx: &ResolverContext<'a>,
    request: WriteRequest,
) -> Result<Option<FieldValue<'a>>, Error> {
    let committed = write(ctx, vec![request]).await?;
    let doc = committed.into_iter().next().and_then(|c| c.doc);
    doc.map(|d| Some(FieldValue::owned_any(Doc::new(d))))
        .ok_or_else(|| failure(ErrorCode::Internal, "the write answered nothing"))
}

/// One `Write` input as the REST batch write it stands for.
fn batch_write(index: usize, write: ValueAccessor<'_>) -> Result<WriteRequest, Error> {
    let write = write.object()?;
    let op = write.try_get("op")?.enum_name()?.to_ascii_lowercase();
    let mut rest = json!({"op": op, "path": write.try_get("path")?.string()?});
    if let Some(data) = write.get("data").filter(|v| !v.is_null()) {
        rest["data"] = json_of(data)?;
    }
    let version = write.get("version").filter(|v| !v.is_null()).map(|v| v.i64()).transpose()?;
    let exists = write.get("exists").filter(|v| !v.is_null()).map(|v| v.boolean()).transpose()?;
    match (version, exists) {
        (None, None) => {}
        (Some(version), None) => rest["precondition"] = json!({"version": version}),
        (None, Some(exists)) => rest["precondition"] = json!({"exists": exists}),
        (Some(version), Some(exists)) => rest["precondition"] = json!({"version": version, "exists": exists}),
    }
    crate::documents::api::batch_write_from_json(index, rest).map_err(public)
}

fn write_result(committed: &Committed, path: &DocPath) -> Value {
    match &committed.doc {
        Some(doc) => json!({"path": path.to_string(), "version": doc.version,
            "updateTime": format_time(doc.update_time), "deleted": false}),
        None => json!({"path": path.to_string(), "deleted": true}),
    }
}

pub(super) fn root_scope(args: &ObjectAccessor<'_>) -> Result<Scope, Error> {
    let text = |name: &str| args.get(name).filter(|v| !v.is_null()).map(|v| v.string().map(str::to_owned)).transpose();
    match (text("collection")?, text("collectionGroup")?) {
        (Some(collection), None) => Ok(Scope::Collection(collection)),
        (None, Some(group)) => Ok(Scope::Group(group)),
        _ => Err(failure(ErrorCode::InvalidArgument, "give exactly one of `collection` and `collectionGroup`")),
    }
}

/// The `POST /v1/query` body these arguments stand for.
pub(super) fn query_body(scope: Scope, args: &ObjectAccessor<'_>, count: bool) -> Result<Value, Error> {
    let filters = match args.get("where").filter(|v| !v.is_null()) {
        Some(filters) => filters.list()?.iter().map(filter_json).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    query_body_with(scope, filters, args, count)
}

/// The `POST /v1/query` body for `filters` and the other arguments (`orderBy`, `limit`, `after`).
pub(super) fn query_body_with(
    scope: Scope,
    filters: Vec<Value>,
    args: &ObjectAccessor<'_>,
    count: bool,
) -> Result<Value, Error> {
    let mut body = match scope {
        Scope::Collection(path) => json!({"collection": path}),
        Scope::Group(id) => json!({"collectionGroup": id}),
    };
    if !filters.is_empty() {
        body["where"] = Value::Array(filters);
    }
    if let Some(orders) = args.get("orderBy").filter(|v| !v.is_null()) {
        body["orderBy"] = Value::Array(orders.list()?.iter().map(order_json).collect::<Result<_, _>>()?);
    }
    if let Some(limit) = args.get("limit").filter(|v| !v.is_null()) {
        body["limit"] = json!(limit.i64()?);
    }
    if let Some(after) = args.get("after").filter(|v| !v.is_null()) {
        body["startAfter"] = json!(after.string()?);
    }
    if count {
        body["count"] = json!(true);
    }
    Ok(body)
}

/// A `Filter` input as a REST filter: `[field, op, value]`, `{"or": […]}` or `{"and": […]}`.
fn filter_json(filter: ValueAccessor<'_>) -> Result<Value, Error> {
    let filter = filter.object()?;
    let present = |name: &str| filter.get(name).filter(|v| !v.is_null());
    let group = |name: &str| -> Result<Option<Value>, Error> {
        let Some(list) = present(name) else { return Ok(None) };
        let members = list.list()?.iter().map(filter_json).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(json!({ name: members })))
    };
    match (present("field"), present("op"), group("or")?, group("and")?) {
        (Some(field), Some(op), None, None) => {
            let value = present("value").map(json_of).transpose()?.unwrap_or(Value::Null);
            Ok(json!([field.string()?, operator(op.enum_name()?), value]))
        }
        (None, None, Some(any), None) => Ok(any),
        (None, None, None, Some(all)) => Ok(all),
        _ => Err(failure(ErrorCode::InvalidArgument, "a filter is `field` + `op` (+ `value`), or `or`, or `and`")),
    }
}

fn operator(name: &str) -> &'static str {
    operator_named(name).unwrap_or("==")
}

/// The REST operator a `FilterOp` name stands for.
pub(super) fn operator_named(name: &str) -> Option<&'static str> {
    Some(match name {
        "EQ" => "==",
        "NE" => "!=",
        "LT" => "<",
        "LE" => "<=",
        "GT" => ">",
        "GE" => ">=",
        "IN" => "in",
        "NOT_IN" => "not-in",
        "ARRAY_CONTAINS" => "array-contains",
        "ARRAY_CONTAINS_ANY" => "array-contains-any",
        _ => return None,
    })
}

fn order_json(order: ValueAccessor<'_>) -> Result<Value, Error> {
    let order = order.object()?;
    let field = order.try_get("field")?.string()?;
    let direction = match order.get("direction").filter(|v| !v.is_null()) {
        Some(d) if d.enum_name()? == "DESC" => "desc",
        _ => "asc",
    };
    Ok(json!([field, direction]))
}

async fn run_query(ctx: &ResolverContext<'_>, body: Value) -> Result<QueryResult, Error> {
    let request: QueryRequest =
        serde_json::from_value(body).map_err(|e| failure(ErrorCode::InvalidArgument, e.to_string()))?;
    service(ctx)?.query(caller(ctx)?, parsed(request)?).await.map_err(public)
}

/// A query request checked and parsed.
pub(super) fn parsed(request: QueryRequest) -> Result<ParsedQuery, Error> {
    request.parse().map_err(|m| failure(ErrorCode::InvalidArgument, m))
}

/// A subcollection's page, through the request's loader when it has one
/// (queries and mutations; a subscription's documents are read one by one).
async fn nested_page<'a>(ctx: &ResolverContext<'a>, scope: Scope) -> Result<FieldValue<'a>, Error> {
    let Some(loader) = ctx.data_opt::<DataLoader<PageLoader>>() else { return page(ctx, scope).await };
    let body = query_body(scope, &ctx.args, false)?;
    let loaded = loader
        .load_one(body.to_string())
        .await?
        .ok_or_else(|| failure(ErrorCode::Internal, "a nested page went unanswered"))??;
    let (documents, next_cursor) = loaded.as_ref();
    let documents = documents.iter().cloned().map(Doc::new).collect();
    Ok(FieldValue::owned_any(Page { documents, next_cursor: next_cursor.clone() }))
}

/// A page of the query the field's arguments describe over `scope`.
async fn page<'a>(ctx: &ResolverContext<'a>, scope: Scope) -> Result<FieldValue<'a>, Error> {
    run_page(ctx, query_body(scope, &ctx.args, false)?).await
}

/// A page of the query `body` (the `POST /v1/query` shape) stands for.
pub(super) async fn run_page<'a>(ctx: &ResolverContext<'a>, body: Value) -> Result<FieldValue<'a>, Error> {
    match run_query(ctx, body).await? {
        QueryResult::Documents { documents, next_cursor } => {
            let documents = documents.into_iter().map(Doc::new).collect();
            Ok(FieldValue::owned_any(Page { documents, next_cursor }))
        }
        _ => Err(failure(ErrorCode::Internal, "a query answered something else")),
    }
}

/// The document at `path` as the caller may read it; `None` when it does not exist.
pub(super) async fn read_document<'a>(
    ctx: &ResolverContext<'a>,
    path: &DocPath,
) -> Result<Option<FieldValue<'a>>, Error> {
    match service(ctx)?.get(caller(ctx)?, path).await {
        Ok(document) => Ok(Some(FieldValue::owned_any(Doc::new(document.stored)))),
        Err(DocumentError::NotFound(_)) => Ok(None),
        Err(e) => Err(public(e)),
    }
}
