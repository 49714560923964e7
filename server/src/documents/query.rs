//! The structured query of `POST /v1/query` (and list via `GET`): parsing the
//! wire form into a `store::query::Query`, and opaque cursors. A cursor holds
//! the sort keys of the last document and a fingerprint of the query's
//! collection and order, so it cannot be replayed against another query.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::path::CollectionPath;
use crate::store::query::{
    Aggregate, AggregateFn, CompareOp, Cursor, Direction, FieldPath, Filter, OrderBy, Query, Scalar,
};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;
/// Most values in one `in`, `not-in` or `array-contains-any` list.
pub const MAX_LIST_VALUES: usize = 30;
/// Most clauses in one query, counting nested ones.
pub const MAX_CLAUSES: usize = 100;
const MAX_ORDER_FIELDS: usize = 8;

/// The wire form of a query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryRequest {
    pub collection: String,
    #[serde(default, rename = "where")]
    pub filters: Vec<Value>,
    #[serde(default)]
    pub order_by: Vec<Value>,
    pub limit: Option<u32>,
    pub start_after: Option<String>,
    pub end_before: Option<String>,
    #[serde(default)]
    pub count: bool,
    pub aggregate: Option<serde_json::Map<String, Value>>,
}

/// What the caller wants from the matching documents.
#[derive(Debug)]
pub enum Wanted {
    Documents,
    Count,
    Aggregates(Vec<(String, Option<Aggregate>)>),
}

/// A parsed query: the store query and what to return.
#[derive(Debug)]
pub struct ParsedQuery {
    pub collection: CollectionPath,
    pub query: Query,
    pub wanted: Wanted,
}

impl QueryRequest {
    pub fn parse(self) -> Result<ParsedQuery, String> {
        let collection = CollectionPath::parse(&self.collection).map_err(|e| format!("`collection`: {}", e.0))?;
        let mut clauses = 0;
        let filters = self.filters.iter().map(|f| parse_filter(f, &mut clauses)).collect::<Result<Vec<_>, _>>()?;
        let order = self.order_by.iter().map(parse_order).collect::<Result<Vec<_>, _>>()?;
        if order.len() > MAX_ORDER_FIELDS {
            return Err(format!("`orderBy`: at most {MAX_ORDER_FIELDS} fields"));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!("`limit`: must be between 1 and {MAX_LIMIT}"));
        }
        let fingerprint = fingerprint(collection.as_str(), &order);
        let order_fields = order.len();
        let decode = |token: &Option<String>, name: &str| {
            token
                .as_deref()
                .map(|t| decode_cursor(t, &fingerprint, order_fields))
                .transpose()
                .map_err(|e| format!("`{name}`: {e}"))
        };
        let query = Query {
            collection: collection.as_str().to_owned(),
            filter: (!filters.is_empty()).then_some(Filter::And(filters)),
            start_after: decode(&self.start_after, "startAfter")?,
            end_before: decode(&self.end_before, "endBefore")?,
            order,
            limit,
        };
        let wanted = match (self.count, self.aggregate) {
            (true, Some(_)) => {
                return Err("`count` and `aggregate` cannot be combined; use an aggregate [\"count\"]".into())
            }
            (true, None) => Wanted::Count,
            (false, Some(map)) => Wanted::Aggregates(parse_aggregates(map)?),
            (false, None) => Wanted::Documents,
        };
        Ok(ParsedQuery { collection, query, wanted })
    }
}

/// A list of documents in id order (`GET` on a collection).
pub fn list_query(collection: &CollectionPath, limit: Option<u32>, page_token: Option<&str>) -> Result<Query, String> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("`limit`: must be between 1 and {MAX_LIMIT}"));
    }
    let fingerprint = fingerprint(collection.as_str(), &[]);
    let start_after =
        page_token.map(|t| decode_cursor(t, &fingerprint, 0)).transpose().map_err(|e| format!("`pageToken`: {e}"))?;
    Ok(Query {
        collection: collection.as_str().to_owned(),
        filter: None,
        order: Vec::new(),
        limit,
        start_after,
        end_before: None,
    })
}

fn field(value: &Value, context: &str) -> Result<FieldPath, String> {
    let text = value.as_str().ok_or_else(|| format!("{context}: the field must be a string"))?;
    FieldPath::parse(text).ok_or_else(|| {
        format!(
            "{context}: invalid field path {text:?} (dotted names of letters, digits and _, not starting with a digit)"
        )
    })
}

fn scalar(value: &Value, context: &str) -> Result<Scalar, String> {
    match value {
        Value::Null => Ok(Scalar::Null),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Scalar::Number).ok_or_else(|| format!("{context}: number out of range")),
        Value::String(s) => Ok(Scalar::String(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            Err(format!("{context}: values must be null, a boolean, a number or a string"))
        }
    }
}

fn scalar_list(value: &Value, context: &str) -> Result<Vec<Scalar>, String> {
    let items = value.as_array().ok_or_else(|| format!("{context}: this operator takes a list of values"))?;
    if items.is_empty() || items.len() > MAX_LIST_VALUES {
        return Err(format!("{context}: the list must hold 1 to {MAX_LIST_VALUES} values"));
    }
    items.iter().map(|v| scalar(v, context)).collect()
}

fn parse_filter(value: &Value, clauses: &mut usize) -> Result<Filter, String> {
    *clauses += 1;
    if *clauses > MAX_CLAUSES {
        return Err(format!("`where`: at most {MAX_CLAUSES} clauses"));
    }
    match value {
        Value::Array(parts) if parts.len() == 3 => {
            let op = parts[1].as_str().unwrap_or_default();
            let context = format!("`where` clause on {}", parts[0]);
            let field = field(&parts[0], &context)?;
            let compare = |op| Ok(Filter::Compare { field: field.clone(), op, value: scalar(&parts[2], &context)? });
            match op {
                "==" => compare(CompareOp::Eq),
                "!=" => compare(CompareOp::Ne),
                "<" => compare(CompareOp::Lt),
                "<=" => compare(CompareOp::Le),
                ">" => compare(CompareOp::Gt),
                ">=" => compare(CompareOp::Ge),
                "in" => Ok(Filter::In { field, values: scalar_list(&parts[2], &context)?, negated: false }),
                "not-in" => Ok(Filter::In { field, values: scalar_list(&parts[2], &context)?, negated: true }),
                "array-contains" => Ok(Filter::ArrayContains { field, values: vec![scalar(&parts[2], &context)?] }),
                "array-contains-any" => Ok(Filter::ArrayContains { field, values: scalar_list(&parts[2], &context)? }),
                other => Err(format!(
                    "{context}: unknown operator {other:?} (expected == != < <= > >= in not-in array-contains array-contains-any)"
                )),
            }
        }
        Value::Object(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next().ok_or("`where`: empty clause")?;
            let list = inner.as_array().ok_or_else(|| format!("`where`: {key:?} takes a list of clauses"))?;
            let filters = list.iter().map(|f| parse_filter(f, clauses)).collect::<Result<Vec<_>, _>>()?;
            match key.as_str() {
                "and" => Ok(Filter::And(filters)),
                "or" => Ok(Filter::Or(filters)),
                other => Err(format!("`where`: unknown combinator {other:?} (expected \"and\" or \"or\")")),
            }
        }
        _ => Err("`where`: a clause is [field, op, value], {\"or\": [...]} or {\"and\": [...]}".into()),
    }
}

fn parse_order(value: &Value) -> Result<OrderBy, String> {
    let (name, direction) = match value {
        Value::String(_) => (value, "asc"),
        Value::Array(parts) if parts.len() == 2 => (&parts[0], parts[1].as_str().unwrap_or_default()),
        _ => return Err("`orderBy`: each entry is [field, \"asc\"|\"desc\"] or a field name".into()),
    };
    let direction = match direction {
        "asc" => Direction::Asc,
        "desc" => Direction::Desc,
        other => return Err(format!("`orderBy`: direction must be \"asc\" or \"desc\", got {other:?}")),
    };
    Ok(OrderBy { field: field(name, "`orderBy`")?, direction })
}

fn parse_aggregates(map: serde_json::Map<String, Value>) -> Result<Vec<(String, Option<Aggregate>)>, String> {
    if map.is_empty() || map.len() > 20 {
        return Err("`aggregate`: give 1 to 20 named aggregates".into());
    }
    let mut out = Vec::new();
    for (name, spec) in map {
        let context = format!("`aggregate.{name}`");
        let parts = spec
            .as_array()
            .ok_or_else(|| format!("{context}: expected [\"sum\"|\"avg\"|\"min\"|\"max\", field] or [\"count\"]"))?;
        let function = match parts.first().and_then(Value::as_str) {
            Some("count") if parts.len() == 1 => {
                out.push((name, None));
                continue;
            }
            Some("sum") => AggregateFn::Sum,
            Some("avg") => AggregateFn::Avg,
            Some("min") => AggregateFn::Min,
            Some("max") => AggregateFn::Max,
            _ => return Err(format!("{context}: expected [\"sum\"|\"avg\"|\"min\"|\"max\", field] or [\"count\"]")),
        };
        let field =
            parts.get(1).ok_or_else(|| format!("{context}: missing the field")).and_then(|f| field(f, &context))?;
        out.push((name, Some(Aggregate { function, field })));
    }
    Ok(out)
}

fn fingerprint(collection: &str, order: &[OrderBy]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(collection.as_bytes());
    for o in order {
        hasher.update(format!("|{}:{:?}", o.field.segments().join("."), o.direction).as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

#[derive(serde::Serialize, Deserialize)]
struct CursorToken {
    q: String,
    c: Cursor,
}

/// The opaque token for a position in the query `(collection, order)`.
pub fn encode_cursor(collection: &str, order: &[OrderBy], cursor: &Cursor) -> String {
    let token = CursorToken { q: fingerprint(collection, order), c: cursor.clone() };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_cursor(token: &str, fingerprint: &str, order_fields: usize) -> Result<Cursor, String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| "not a cursor from this server".to_owned())?;
    let token: CursorToken = serde_json::from_slice(&bytes).map_err(|_| "not a cursor from this server".to_owned())?;
    if token.q != fingerprint || token.c.keys.len() != order_fields {
        return Err("the cursor belongs to a query with another collection or order".into());
    }
    Ok(token.c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<ParsedQuery, String> {
        serde_json::from_value::<QueryRequest>(body).map_err(|e| e.to_string())?.parse()
    }

    #[test]
    fn parses_clauses_combinators_and_order() {
        let q = parse(json!({
            "collection": "rooms/r1/messages",
            "where": [["room", "==", "a"], {"or": [["n", ">", 1], ["tags", "array-contains", "x"]]}],
            "orderBy": [["n", "desc"], "id2"],
            "limit": 10
        }))
        .unwrap();
        assert_eq!(q.query.order.len(), 2);
        assert!(matches!(q.query.filter, Some(Filter::And(ref f)) if f.len() == 2));
    }

    #[test]
    fn rejects_bad_queries_with_a_reason() {
        assert!(parse(json!({"collection": "a/b"})).unwrap_err().contains("collection"));
        assert!(parse(json!({"collection": "a", "where": [["x", "~", 1]]})).unwrap_err().contains("unknown operator"));
        assert!(parse(json!({"collection": "a", "where": [["x'", "==", 1]]}))
            .unwrap_err()
            .contains("invalid field path"));
        assert!(parse(json!({"collection": "a", "limit": 5000})).unwrap_err().contains("limit"));
        assert!(parse(json!({"collection": "a", "where": [["x", "in", []]]})).unwrap_err().contains("1 to 30"));
        assert!(parse(json!({"collection": "a", "startAfter": "zzz"})).unwrap_err().contains("cursor"));
    }

    #[test]
    fn cursors_only_fit_their_own_query() {
        let order = vec![OrderBy { field: FieldPath::parse("n").unwrap(), direction: Direction::Asc }];
        let cursor = Cursor {
            keys: vec![crate::store::query::SortKey { rank: 2, num: 1.0, text: String::new() }],
            id: "x".into(),
        };
        let token = encode_cursor("a", &order, &cursor);
        assert!(parse(json!({"collection": "a", "orderBy": ["n"], "startAfter": token})).is_ok());
        assert!(parse(json!({"collection": "b", "orderBy": ["n"], "startAfter": token})).is_err());
        assert!(parse(json!({"collection": "a", "startAfter": token})).is_err());
    }
}
