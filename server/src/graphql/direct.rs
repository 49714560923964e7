//! Simple queries answered without the engine. A query whose one operation
//! reads one root `documents` page or one `document`, selecting only a
//! document's own fields (`id`, `path`, `version`, `createTime`,
//! `updateTime`, `data`, `__typename`) and the page's `nextCursor`, is
//! planned once per query text (`plan`) and answered by calling the
//! documents layer with the caller and writing the JSON itself (`answer`):
//! the answer async-graphql gives, byte for byte (the tests compare the two).
//! Whatever the plan cannot check itself — fragments, directives, list or
//! enum variables, an argument of the wrong type, any failure of the query —
//! goes to the engine, so every error is the engine's.

use std::fmt::Write as _;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet, Type,
};
use async_graphql::{Name, Variables};
use async_graphql_value::Value as GraphqlValue;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::config::GraphqlSettings;
use crate::documents::path::DocPath;
use crate::documents::query::QueryRequest;
use crate::documents::{DocumentError, Documents, QueryResult};
use crate::store::documents::StoredDoc;

/// How one query text is answered without the engine.
#[derive(Debug)]
pub(super) struct Plan {
    /// The operation's name, which a request may name.
    operation: Option<String>,
    variables: Vec<Variable>,
    /// The root field's response key (its alias or name).
    key: String,
    root: Root,
}

#[derive(Debug)]
struct Variable {
    name: Name,
    kind: Kind,
    nullable: bool,
    default: Option<GraphqlValue>,
}

/// The types a variable may have here (the positions a plan checks itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Int,
    Json,
}

impl Kind {
    fn named(name: &str) -> Option<Kind> {
        match name {
            "String" => Some(Kind::String),
            "Int" => Some(Kind::Int),
            "JSON" => Some(Kind::Json),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Root {
    Documents { arguments: Vec<(Name, GraphqlValue)>, fields: Vec<(String, PageField)> },
    Document { path: GraphqlValue, fields: Vec<(String, DocField)> },
}

#[derive(Debug)]
enum PageField {
    Documents(Vec<(String, DocField)>),
    NextCursor,
    Typename,
}

#[derive(Debug, Clone, Copy)]
enum DocField {
    Id,
    Path,
    Version,
    CreateTime,
    UpdateTime,
    Data,
    Typename,
}

/// Where a variable was used: its type there, and whether that position is non-null.
struct Usage {
    kind: Kind,
    non_null: bool,
}

/// Each use of a variable in the arguments, by name.
type Usages = Vec<(Name, Usage)>;

/// The plan for `document` when its shape is one a plan answers within `limits`.
pub(super) fn plan(document: &ExecutableDocument, limits: &GraphqlSettings) -> Option<Plan> {
    if !document.fragments.is_empty() {
        return None;
    }
    let (operation, definition) = match &document.operations {
        DocumentOperations::Single(definition) => (None, &definition.node),
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            let (name, definition) = operations.iter().next()?;
            (Some(name.to_string()), &definition.node)
        }
        DocumentOperations::Multiple(_) => return None,
    };
    if definition.ty != OperationType::Query || !definition.directives.is_empty() {
        return None;
    }
    let [root] = fields_of(&definition.selection_set.node)?[..] else { return None };
    let aliases = super::aliases_in(&definition.selection_set.node);
    if !within_limits(root, limits) || aliases > limits.max_aliases || (!limits.introspection && asks_typename(root)) {
        return None;
    }
    let mut usages = Vec::new();
    let root_plan = match root.name.node.as_str() {
        "documents" => documents_root(root, &mut usages)?,
        "document" => document_root(root, &mut usages)?,
        _ => return None,
    };
    let variables = variables_of(definition, &usages)?;
    Some(Plan { operation, variables, key: response_key(root), root: root_plan })
}

/// The fields of a selection set, when it has only plain fields (no fragments, no directives).
fn fields_of(set: &SelectionSet) -> Option<Vec<&Field>> {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) if field.node.directives.is_empty() => Some(&field.node),
            _ => None,
        })
        .collect()
}

fn response_key(field: &Field) -> String {
    field.alias.as_ref().unwrap_or(&field.name).node.to_string()
}

/// Depth and complexity (one per field) as the engine counts them, each within its limit.
fn within_limits(root: &Field, limits: &GraphqlSettings) -> bool {
    fn walk(field: &Field, depth: usize, most_depth: &mut usize, fields: &mut usize) {
        *most_depth = (*most_depth).max(depth);
        *fields += 1;
        for item in &field.selection_set.node.items {
            if let Selection::Field(child) = &item.node {
                walk(&child.node, depth + 1, most_depth, fields);
            }
        }
    }
    let (mut depth, mut fields) = (0, 0);
    walk(root, 1, &mut depth, &mut fields);
    depth <= limits.max_depth && fields <= limits.max_complexity
}

fn asks_typename(field: &Field) -> bool {
    field.selection_set.node.items.iter().any(|item| match &item.node {
        Selection::Field(child) => child.node.name.node.as_str() == "__typename" || asks_typename(&child.node),
        _ => false,
    })
}

/// The arguments of `field`, each at most once.
fn arguments(field: &Field) -> Option<Vec<(Name, GraphqlValue)>> {
    let mut seen = std::collections::HashSet::new();
    field
        .arguments
        .iter()
        .map(|(name, value)| seen.insert(name.node.clone()).then(|| (name.node.clone(), value.node.clone())))
        .collect()
}

fn documents_root(field: &Field, usages: &mut Usages) -> Option<Root> {
    let arguments = arguments(field)?;
    for (name, value) in &arguments {
        match name.as_str() {
            "collection" | "collectionGroup" | "after" => scalar_position(value, Kind::String, false, usages)?,
            "limit" => scalar_position(value, Kind::Int, false, usages)?,
            "where" => list_position(value, usages, filter_position)?,
            "orderBy" => list_position(value, usages, order_position)?,
            _ => return None,
        }
    }
    let mut fields = Vec::new();
    for child in fields_of(&field.selection_set.node)? {
        if !child.arguments.is_empty() {
            return None;
        }
        let planned = match child.name.node.as_str() {
            "documents" => PageField::Documents(document_fields(child)?),
            "nextCursor" if child.selection_set.node.items.is_empty() => PageField::NextCursor,
            "__typename" if child.selection_set.node.items.is_empty() => PageField::Typename,
            _ => return None,
        };
        fields.push((response_key(child), planned));
    }
    (!fields.is_empty()).then_some(Root::Documents { arguments, fields })
}

fn document_root(field: &Field, usages: &mut Usages) -> Option<Root> {
    let [(name, path)] = &arguments(field)?[..] else { return None };
    if name.as_str() != "path" {
        return None;
    }
    scalar_position(path, Kind::String, true, usages)?;
    Some(Root::Document { path: path.clone(), fields: document_fields(field)? })
}

/// The selected fields of a document (a non-empty set of its own scalar fields).
fn document_fields(field: &Field) -> Option<Vec<(String, DocField)>> {
    let fields: Option<Vec<(String, DocField)>> = fields_of(&field.selection_set.node)?
        .into_iter()
        .map(|child| {
            if !child.arguments.is_empty() || !child.selection_set.node.items.is_empty() {
                return None;
            }
            let planned = match child.name.node.as_str() {
                "id" => DocField::Id,
                "path" => DocField::Path,
                "version" => DocField::Version,
                "createTime" => DocField::CreateTime,
                "updateTime" => DocField::UpdateTime,
                "data" => DocField::Data,
                "__typename" => DocField::Typename,
                _ => return None,
            };
            Some((response_key(child), planned))
        })
        .collect();
    fields.filter(|f| !f.is_empty())
}

/// A position of a scalar type: a variable (recorded) or any literal (checked when answering).
fn scalar_position(value: &GraphqlValue, kind: Kind, non_null: bool, usages: &mut Usages) -> Option<()> {
    if let GraphqlValue::Variable(name) = value {
        usages.push((name.clone(), Usage { kind, non_null }));
    } else if !literal(value) {
        return None; // a variable nested inside a literal JSON value
    }
    Some(())
}

/// Whether `value` holds no variable.
fn literal(value: &GraphqlValue) -> bool {
    match value {
        GraphqlValue::Variable(_) => false,
        GraphqlValue::List(items) => items.iter().all(literal),
        GraphqlValue::Object(fields) => fields.values().all(literal),
        _ => true,
    }
}

/// A list literal whose items `item` accepts (a list in a variable goes to the engine).
fn list_position(
    value: &GraphqlValue,
    usages: &mut Usages,
    item: fn(&GraphqlValue, &mut Usages) -> Option<()>,
) -> Option<()> {
    match value {
        GraphqlValue::Null => Some(()),
        GraphqlValue::List(items) => items.iter().try_for_each(|i| item(i, usages)),
        _ => None,
    }
}

fn filter_position(value: &GraphqlValue, usages: &mut Usages) -> Option<()> {
    let GraphqlValue::Object(fields) = value else { return None };
    for (name, value) in fields {
        match name.as_str() {
            "field" => scalar_position(value, Kind::String, false, usages)?,
            "value" => scalar_position(value, Kind::Json, false, usages)?,
            "op" if matches!(value, GraphqlValue::Enum(_) | GraphqlValue::Null) => {}
            "or" | "and" => list_position(value, usages, filter_position)?,
            _ => return None,
        }
    }
    Some(())
}

fn order_position(value: &GraphqlValue, usages: &mut Usages) -> Option<()> {
    let GraphqlValue::Object(fields) = value else { return None };
    for (name, value) in fields {
        match name.as_str() {
            "field" => scalar_position(value, Kind::String, true, usages)?,
            "direction" if matches!(value, GraphqlValue::Enum(_) | GraphqlValue::Null) => {}
            _ => return None,
        }
    }
    Some(())
}

/// The operation's variables, when each is declared once, is used, is used
/// only where its type fits, and every variable used is declared.
fn variables_of(definition: &OperationDefinition, usages: &Usages) -> Option<Vec<Variable>> {
    let variables: Vec<Variable> = definition
        .variable_definitions
        .iter()
        .map(|v| {
            let v = &v.node;
            let kind = scalar_kind(&v.var_type.node)?;
            let default = v.default_value.as_ref().map(|d| d.node.clone().into_value());
            (v.directives.is_empty()).then_some(Variable {
                name: v.name.node.clone(),
                kind,
                nullable: v.var_type.node.nullable,
                default,
            })
        })
        .collect::<Option<_>>()?;
    let fits = |(name, usage): &(Name, Usage)| {
        variables.iter().any(|v| v.name == *name && v.kind == usage.kind && (!usage.non_null || !v.nullable))
    };
    let used = |v: &Variable| usages.iter().any(|(name, _)| *name == v.name);
    let once = |(i, v): (usize, &Variable)| variables[..i].iter().all(|earlier| earlier.name != v.name);
    let sound = usages.iter().all(fits) && variables.iter().all(used) && variables.iter().enumerate().all(once);
    sound.then_some(variables)
}

fn scalar_kind(ty: &Type) -> Option<Kind> {
    match &ty.base {
        BaseType::Named(name) => Kind::named(name.as_str()),
        BaseType::List(_) => None,
    }
}

/// The answer to a request `plan` stands for, or `None` when the engine must answer it.
pub(super) async fn answer(
    plan: &Plan,
    request: &async_graphql::Request,
    documents: &Documents,
    caller: &Caller,
) -> Option<String> {
    if request.operation_name.is_some() && request.operation_name != plan.operation {
        return None;
    }
    let bound = bind(&plan.variables, &request.variables)?;
    let mut out = String::with_capacity(4096);
    out.push_str("{\"data\":{");
    push_key(&mut out, &plan.key);
    match &plan.root {
        Root::Documents { arguments, fields } => {
            let body = query_body(arguments, &bound)?;
            let request: QueryRequest = serde_json::from_value(body).ok()?;
            let parsed = request.parse().ok()?;
            let QueryResult::Documents { documents, next_cursor } = documents.query(caller, parsed).await.ok()? else {
                return None;
            };
            write_page(&mut out, fields, &documents, next_cursor.as_deref())?;
        }
        Root::Document { path, fields } => {
            let GraphqlValue::String(path) = substitute(path, &bound) else { return None };
            let path = DocPath::parse(&path).ok()?;
            match documents.get(caller, &path).await {
                Ok(document) => write_document(&mut out, fields, &document.stored)?,
                Err(DocumentError::NotFound(_)) => out.push_str("null"),
                Err(_) => return None,
            }
        }
    }
    out.push_str("}}");
    Some(out)
}

/// Each variable's value: given, else its default, else absent; `None` when a
/// value does not fit its type (the engine says why).
fn bind(variables: &[Variable], given: &Variables) -> Option<Vec<(Name, GraphqlValue)>> {
    variables
        .iter()
        .filter_map(|v| {
            let value = given.get(&v.name).map(|c| c.clone().into_value()).or_else(|| v.default.clone());
            match value {
                None if v.nullable => None,
                None => Some(None),
                Some(value) => Some(fits(&value, v.kind, v.nullable).then(|| (v.name.clone(), value))),
            }
        })
        .collect()
}

/// Whether a (variable-free) value is one of `kind`.
fn fits(value: &GraphqlValue, kind: Kind, nullable: bool) -> bool {
    match (value, kind) {
        (GraphqlValue::Null, _) => nullable,
        (GraphqlValue::String(_), Kind::String) => true,
        (GraphqlValue::Number(n), Kind::Int) => n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        (_, Kind::Json) => literal(value),
        _ => false,
    }
}

/// `value` with the variables bound (an absent one reads as null).
fn substitute(value: &GraphqlValue, bound: &[(Name, GraphqlValue)]) -> GraphqlValue {
    match value {
        GraphqlValue::Variable(name) => {
            bound.iter().find(|(n, _)| n == name).map_or(GraphqlValue::Null, |(_, v)| v.clone())
        }
        other => other.clone(),
    }
}

/// A literal of a scalar position, checked as the engine would: `None` when it does not fit.
fn scalar(value: &GraphqlValue, kind: Kind, bound: &[(Name, GraphqlValue)]) -> Option<Option<Value>> {
    let value = substitute(value, bound);
    if !fits(&value, kind, true) {
        return None;
    }
    match value {
        GraphqlValue::Null => Some(None),
        other => other.into_json().ok().map(Some),
    }
}

/// The `POST /v1/query` body the `documents` arguments stand for (as `schema::query_body` builds it).
fn query_body(arguments: &[(Name, GraphqlValue)], bound: &[(Name, GraphqlValue)]) -> Option<Value> {
    let argument = |name: &str| arguments.iter().find(|(n, _)| n.as_str() == name).map(|(_, v)| v);
    let optional = |name: &str, kind| match argument(name) {
        Some(value) => scalar(value, kind, bound),
        None => Some(None),
    };
    let text = |name: &str| optional(name, Kind::String);
    let mut body = match (text("collection")?, text("collectionGroup")?) {
        (Some(collection), None) => json!({ "collection": collection }),
        (None, Some(group)) => json!({ "collectionGroup": group }),
        _ => return None,
    };
    if let Some(GraphqlValue::List(filters)) = argument("where") {
        if !filters.is_empty() {
            body["where"] = Value::Array(filters.iter().map(|f| filter(f, bound)).collect::<Option<_>>()?);
        }
    }
    if let Some(GraphqlValue::List(orders)) = argument("orderBy") {
        body["orderBy"] = Value::Array(orders.iter().map(|o| order(o, bound)).collect::<Option<_>>()?);
    }
    if let Some(limit) = optional("limit", Kind::Int)? {
        body["limit"] = limit;
    }
    if let Some(after) = text("after")? {
        body["startAfter"] = after;
    }
    Some(body)
}

/// A `Filter` literal as a REST filter (as `schema::filter_json` makes it).
fn filter(value: &GraphqlValue, bound: &[(Name, GraphqlValue)]) -> Option<Value> {
    let GraphqlValue::Object(fields) = value else { return None };
    let present = |name: &str| fields.get(name).filter(|v| !matches!(v, GraphqlValue::Null));
    let group = |name: &str| -> Option<Option<Value>> {
        match present(name) {
            None => Some(None),
            Some(GraphqlValue::List(members)) => {
                let members = members.iter().map(|m| filter(m, bound)).collect::<Option<Vec<_>>>()?;
                Some(Some(json!({ name: members })))
            }
            Some(_) => None,
        }
    };
    match (present("field"), present("op"), group("or")?, group("and")?) {
        (Some(field), Some(GraphqlValue::Enum(op)), None, None) => {
            let field = scalar(field, Kind::String, bound)??;
            let op = super::schema::operator_named(op.as_str())?;
            let value = match fields.get("value") {
                Some(value) => scalar(value, Kind::Json, bound)?.unwrap_or(Value::Null),
                None => Value::Null,
            };
            Some(json!([field, op, value]))
        }
        (None, None, Some(any), None) => Some(any),
        (None, None, None, Some(all)) => Some(all),
        _ => None,
    }
}

/// An `Order` literal as a REST order (as `schema::order_json` makes it).
fn order(value: &GraphqlValue, bound: &[(Name, GraphqlValue)]) -> Option<Value> {
    let GraphqlValue::Object(fields) = value else { return None };
    let field = scalar(fields.get("field")?, Kind::String, bound)??;
    let direction = match fields.get("direction") {
        None | Some(GraphqlValue::Null) => "asc",
        Some(GraphqlValue::Enum(d)) if d.as_str() == "DESC" => "desc",
        Some(GraphqlValue::Enum(d)) if d.as_str() == "ASC" => "asc",
        Some(_) => return None,
    };
    Some(json!([field, direction]))
}

fn push_key(out: &mut String, key: &str) {
    // Response keys are GraphQL names: nothing to escape.
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// `{"key":value,…}` for `fields`, each value written by `value`.
fn write_object<F>(
    out: &mut String,
    fields: &[(String, F)],
    mut value: impl FnMut(&mut String, &F) -> Option<()>,
) -> Option<()> {
    out.push('{');
    for (index, (key, field)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_key(out, key);
        value(out, field)?;
    }
    out.push('}');
    Some(())
}

fn write_page(
    out: &mut String,
    fields: &[(String, PageField)],
    documents: &[StoredDoc],
    next_cursor: Option<&str>,
) -> Option<()> {
    write_object(out, fields, |out, field| {
        match field {
            PageField::Documents(fields) => {
                out.push('[');
                for (index, document) in documents.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_document(out, fields, document)?;
                }
                out.push(']');
            }
            PageField::NextCursor => match next_cursor {
                Some(cursor) => push_string(out, cursor),
                None => out.push_str("null"),
            },
            PageField::Typename => out.push_str("\"DocumentPage\""),
        }
        Some(())
    })
}

fn write_document(out: &mut String, fields: &[(String, DocField)], document: &StoredDoc) -> Option<()> {
    write_object(out, fields, |out, field| {
        match field {
            DocField::Id => push_string(out, &document.id),
            DocField::Path => push_string(out, &format!("{}/{}", document.collection, document.id)),
            DocField::Version => {
                let _ = write!(out, "{}", document.version);
            }
            DocField::CreateTime => push_time(out, document.create_time),
            DocField::UpdateTime => push_time(out, document.update_time),
            DocField::Data => push_json(out, &document.data)?,
            DocField::Typename => out.push_str("\"Document\""),
        }
        Some(())
    })
}

fn push_string(out: &mut String, text: &str) {
    // serde_json's escaping, as the engine's response is serialized with it.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

fn push_time(out: &mut String, micros: i64) {
    out.push('"');
    crate::clock::write_time(out, micros);
    out.push('"');
}

/// The stored JSON text as serde_json writes it (compact, keys in the stored
/// order, numbers as parsed): what the engine writes after parsing it.
fn push_json(out: &mut String, stored: &str) -> Option<()> {
    let mut written = Vec::with_capacity(stored.len());
    let mut reader = serde_json::Deserializer::from_str(stored);
    let mut writer = serde_json::Serializer::new(&mut written);
    serde_transcode::transcode(&mut reader, &mut writer).ok()?;
    reader.end().ok()?;
    out.push_str(std::str::from_utf8(&written).ok()?);
    Some(())
}
