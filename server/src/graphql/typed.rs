//! Typed GraphQL for the collections that have a JSON Schema in `nimbus.toml`:
//! per schema an object type with real fields (named by the schema's `title`,
//! else PascalCase of the collection: `Products`), a typed filter input
//! (`ProductsFilter { price: {gt: 5}, or: […] }`), a page type, and root
//! fields `get<Type>` and `list<Type>`. Reads go through the same resolvers as
//! the generic schema (the documents layer under the rules); a typed filter
//! becomes the REST `where` it stands for. A stored value that does not have
//! its property's type reads as `null` (documents written before the schema).

use async_graphql::dynamic::{
    Field, FieldFuture, InputObject, InputValue, Object, ObjectAccessor, TypeRef, ValueAccessor,
};
use async_graphql::Error;
use serde_json::{json, Value};

use super::schema::{self, doc_path, document_meta_fields, graphql_value, Scope};
use super::{failure, public};
use crate::documents::schema::pattern_matches;
use crate::documents::typescript::collection_type_name;
use crate::documents::DocumentError;
use crate::error::ErrorCode;

/// The GraphQL scalar a JSON Schema property maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    String,
    Int,
    Float,
    Boolean,
}

impl Scalar {
    fn of(schema: &Value) -> Option<Scalar> {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => Some(Scalar::String),
            Some("integer") => Some(Scalar::Int),
            Some("number") => Some(Scalar::Float),
            Some("boolean") => Some(Scalar::Boolean),
            _ => None,
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Scalar::String => TypeRef::STRING,
            Scalar::Int => TypeRef::INT,
            Scalar::Float => TypeRef::FLOAT,
            Scalar::Boolean => TypeRef::BOOLEAN,
        }
    }

    /// Whether a stored value has this type.
    fn holds(self, value: &Value) -> bool {
        match self {
            Scalar::String => value.is_string(),
            Scalar::Int => value.is_i64(),
            Scalar::Float => value.is_number(),
            Scalar::Boolean => value.is_boolean(),
        }
    }

    /// The comparison input of a single value of this type.
    fn comparison(self) -> String {
        format!("{}Comparison", self.type_name())
    }

    /// The comparison input of a list of values of this type.
    fn list_comparison(self) -> String {
        format!("{}ListComparison", self.type_name())
    }
}

/// How one property of a typed collection reads.
#[derive(Debug, Clone)]
enum Shape {
    Scalar(Scalar),
    List(Scalar),
    Json,
}

#[derive(Debug, Clone)]
struct Property {
    name: String,
    shape: Shape,
}

/// One typed collection.
#[derive(Debug, Clone)]
struct Collection {
    pattern: String,
    name: String,
    properties: Vec<Property>,
}

/// Names the generic schema uses, which a collection's type may not take.
const TAKEN: [&str; 21] = [
    "Query",
    "Mutation",
    "Subscription",
    "Document",
    "DocumentPage",
    "Filter",
    "FilterOp",
    "Order",
    "Direction",
    "Write",
    "WriteOp",
    "WriteResult",
    "ChangeEvent",
    "LiveChange",
    "LiveDocument",
    "JSON",
    "Timestamp",
    "String",
    "Int",
    "Float",
    "Boolean",
];
/// Fields of every document type, which a property may not shadow.
const META: [&str; 7] = ["id", "path", "version", "createTime", "updateTime", "data", "field"];

fn is_graphql_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn collections(schemas: &[(String, Value)]) -> Result<Vec<Collection>, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (pattern, schema) in schemas {
        let name = collection_type_name(pattern, schema);
        if TAKEN.contains(&name.as_str()) || seen.contains(&name) {
            return Err(format!(
                "schemas.{pattern}: its GraphQL type would be named {name}, which is taken; give the schema a `title`"
            ));
        }
        seen.push(name.clone());
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .filter(|(key, _)| is_graphql_name(key) && !META.contains(&key.as_str()))
                    .map(|(key, property)| Property { name: key.clone(), shape: shape_of(property) })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Collection { pattern: pattern.trim_matches('/').to_owned(), name, properties });
    }
    Ok(out)
}

fn shape_of(property: &Value) -> Shape {
    if let Some(scalar) = Scalar::of(property) {
        return Shape::Scalar(scalar);
    }
    if property.get("type").and_then(Value::as_str) == Some("array") {
        if let Some(scalar) = property.get("items").and_then(Scalar::of) {
            return Shape::List(scalar);
        }
    }
    Shape::Json
}

/// What the typed part adds to the schema: its types, and the root fields.
pub struct Typed {
    pub objects: Vec<Object>,
    pub inputs: Vec<InputObject>,
    pub root_fields: Vec<Field>,
}

pub fn build(schemas: &[(String, Value)]) -> Result<Typed, String> {
    let collections = collections(schemas)?;
    let mut typed = Typed { objects: Vec::new(), inputs: comparison_inputs(), root_fields: Vec::new() };
    for collection in collections {
        typed.objects.push(object_type(&collection));
        typed.objects.push(page_type(&collection.name));
        typed.inputs.push(filter_input(&collection));
        typed.root_fields.push(get_field(&collection));
        typed.root_fields.push(list_field(collection));
    }
    Ok(typed)
}

fn comparison_inputs() -> Vec<InputObject> {
    let mut inputs = Vec::new();
    for scalar in [Scalar::String, Scalar::Int, Scalar::Float, Scalar::Boolean] {
        let one = || TypeRef::named(scalar.type_name());
        let many = || TypeRef::named_nn_list(scalar.type_name());
        let mut comparison = InputObject::new(scalar.comparison())
            .field(InputValue::new("eq", one()))
            .field(InputValue::new("ne", one()))
            .field(InputValue::new("in", many()))
            .field(InputValue::new("notIn", many()));
        if scalar != Scalar::Boolean {
            for op in ["lt", "le", "gt", "ge"] {
                comparison = comparison.field(InputValue::new(op, one()));
            }
        }
        inputs.push(comparison);
        inputs.push(
            InputObject::new(scalar.list_comparison())
                .field(InputValue::new("contains", one()))
                .field(InputValue::new("containsAny", many())),
        );
    }
    inputs
}

fn object_type(collection: &Collection) -> Object {
    let mut object = document_meta_fields(Object::new(&collection.name));
    for property in &collection.properties {
        let ty = match property.shape {
            Shape::Scalar(scalar) => TypeRef::named(scalar.type_name()),
            Shape::List(scalar) => TypeRef::named_nn_list(scalar.type_name()),
            Shape::Json => TypeRef::named("JSON"),
        };
        let (key, shape) = (property.name.clone(), property.shape.clone());
        object = object.field(Field::new(&property.name, ty, move |ctx| {
            let (key, shape) = (key.clone(), shape.clone());
            FieldFuture::new(async move {
                typed_value(schema::doc(&ctx)?.data()?.get(&key), &shape).map(graphql_value).transpose()
            })
        }));
    }
    object
}

/// The stored value as the property's type has it, `None` when it does not fit.
fn typed_value(value: Option<&Value>, shape: &Shape) -> Option<Value> {
    let value = value?;
    match shape {
        Shape::Scalar(scalar) => scalar.holds(value).then(|| value.clone()),
        Shape::List(scalar) => {
            value.as_array().map(|items| Value::Array(items.iter().filter(|v| scalar.holds(v)).cloned().collect()))
        }
        Shape::Json => Some(value.clone()),
    }
}

fn page_type(name: &str) -> Object {
    schema::page_of(&format!("{name}Page"), name)
}

fn filter_input(collection: &Collection) -> InputObject {
    let name = format!("{}Filter", collection.name);
    let mut input = InputObject::new(&name)
        .description("Every given field must hold; `or`: any of the filters, `and`: all of them.")
        .field(InputValue::new("or", TypeRef::named_nn_list(&name)))
        .field(InputValue::new("and", TypeRef::named_nn_list(&name)));
    for property in &collection.properties {
        let comparison = match property.shape {
            Shape::Scalar(scalar) => scalar.comparison(),
            Shape::List(scalar) => scalar.list_comparison(),
            Shape::Json => continue,
        };
        input = input.field(InputValue::new(&property.name, TypeRef::named(comparison)));
    }
    input
}

fn fixed(collection: &Collection) -> bool {
    !collection.pattern.split('/').any(|s| s == "*")
}

/// `get<Type>(id)` for a fixed collection, `get<Type>(path)` for a pattern with wildcards.
fn get_field(collection: &Collection) -> Field {
    let pattern = collection.pattern.clone();
    let is_fixed = fixed(collection);
    let field = Field::new(format!("get{}", collection.name), TypeRef::named(&collection.name), move |ctx| {
        let pattern = pattern.clone();
        FieldFuture::new(async move {
            let text = match is_fixed {
                true => format!("{pattern}/{}", ctx.args.try_get("id")?.string()?),
                false => ctx.args.try_get("path")?.string()?.to_owned(),
            };
            let path = doc_path(&text)?;
            if !pattern_matches(&pattern, path.collection().as_str()) {
                return Err(failure(ErrorCode::InvalidArgument, format!("{text} is not in {pattern}")));
            }
            schema::read_document(&ctx, &path).await
        })
    });
    let key = if is_fixed { "id" } else { "path" };
    field.argument(InputValue::new(key, TypeRef::named_nn(TypeRef::STRING)))
}

/// `list<Type>(where, orderBy, limit, after)`; with `collection` for a pattern with wildcards.
fn list_field(collection: Collection) -> Field {
    let is_fixed = fixed(&collection);
    let name = format!("list{}", collection.name);
    let page = format!("{}Page", collection.name);
    let filter = format!("{}Filter", collection.name);
    let field = Field::new(name, TypeRef::named_nn(page), move |ctx| {
        let collection = collection.clone();
        FieldFuture::new(async move {
            let path = match is_fixed {
                true => collection.pattern.clone(),
                false => ctx.args.try_get("collection")?.string()?.to_owned(),
            };
            if !pattern_matches(&collection.pattern, path.trim_matches('/')) {
                return Err(failure(ErrorCode::InvalidArgument, format!("{path} is not in {}", collection.pattern)));
            }
            let filters = match ctx.args.get("where").filter(|v| !v.is_null()) {
                Some(filter) => clauses(&filter.object()?)?,
                None => Vec::new(),
            };
            let body = schema::query_body_with(Scope::Collection(path), filters, &ctx.args, false)?;
            Ok(Some(schema::run_page(&ctx, body).await?))
        })
    });
    let field = field
        .argument(InputValue::new("where", TypeRef::named(filter)))
        .argument(InputValue::new("orderBy", TypeRef::named_nn_list("Order")))
        .argument(InputValue::new("limit", TypeRef::named(TypeRef::INT)))
        .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)));
    if is_fixed {
        field
    } else {
        field.argument(InputValue::new("collection", TypeRef::named_nn(TypeRef::STRING)))
    }
}

/// A typed filter as REST `where` clauses (all of which must hold).
fn clauses(filter: &ObjectAccessor<'_>) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (key, value) in filter.iter() {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            group @ ("or" | "and") => {
                let members = value
                    .list()?
                    .iter()
                    .map(|member| Ok(json!({"and": clauses(&member.object()?)?})))
                    .collect::<Result<Vec<_>, Error>>()?;
                out.push(json!({ group: members }));
            }
            field => out.extend(comparisons(field, &value)?),
        }
    }
    Ok(out)
}

/// `{gt: 5, lt: 9}` on `field` as `[field, ">", 5], [field, "<", 9]`.
fn comparisons(field: &str, comparison: &ValueAccessor<'_>) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (op, operand) in comparison.object()?.iter() {
        if operand.is_null() {
            continue;
        }
        let op = match op.as_str() {
            "eq" => "==",
            "ne" => "!=",
            "lt" => "<",
            "le" => "<=",
            "gt" => ">",
            "ge" => ">=",
            "in" => "in",
            "notIn" => "not-in",
            "contains" => "array-contains",
            "containsAny" => "array-contains-any",
            other => return Err(failure(ErrorCode::InvalidArgument, format!("unknown comparison {other}"))),
        };
        let operand = operand
            .as_value()
            .clone()
            .into_json()
            .map_err(|e| public(DocumentError::InvalidArgument(e.to_string())))?;
        out.push(json!([field, op, operand]));
    }
    Ok(out)
}
