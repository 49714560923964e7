//! The structured query of `POST /v1/query` (and list via `GET`): parsing the
//! wire form into a `store::query::Query`. Cursor tokens are kept as the
//! client sent them; `Documents` opens them (`cursor`: they are sealed).

use serde::Deserialize;
use serde_json::Value;

use super::cursor::CursorToken;
use super::path::CollectionPath;
use crate::store::query::{Aggregate, AggregateFn, CompareOp, Direction, FieldPath, Filter, OrderBy, Query, Scalar};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;
/// Most values in one `in`, `not-in` or `array-contains-any` list.
pub const MAX_LIST_VALUES: usize = 30;
/// Most clauses in one query, counting nested ones.
pub const MAX_CLAUSES: usize = 100;
const MAX_ORDER_FIELDS: usize = 8;
/// Most disjunctions of a query's filter in disjunctive normal form (as in
/// Firestore): `in` and `array-contains-any` count one per value, `and`
/// multiplies, `or` adds. Bounds the work one query can ask for.
pub const MAX_DISJUNCTIONS: u64 = 30;

/// The wire form of a query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QueryRequest {
    /// One collection (`rooms/r1/messages`) …
    pub collection: Option<String>,
    /// … or a collection group: every collection with this last segment.
    pub collection_group: Option<String>,
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

/// What a query reads.
#[derive(Debug, Clone)]
pub enum QueryScope {
    Collection(CollectionPath),
    /// Every collection whose last segment is this collection id.
    Group(String),
}

impl QueryScope {
    /// What a cursor of this query is bound to (a group cannot be mistaken for a collection).
    pub fn binding(&self) -> String {
        match self {
            QueryScope::Collection(path) => path.as_str().to_owned(),
            QueryScope::Group(id) => format!("**/{id}"),
        }
    }
}

/// A parsed query: the store query, its cursor tokens (not opened yet), and what to return.
#[derive(Debug)]
pub struct ParsedQuery {
    pub scope: QueryScope,
    pub query: Query,
    pub wanted: Wanted,
    pub start_after: Option<CursorToken>,
    pub end_before: Option<CursorToken>,
}

impl QueryRequest {
    pub fn parse(self) -> Result<ParsedQuery, String> {
        let scope = match (&self.collection, &self.collection_group) {
            (Some(path), None) => {
                QueryScope::Collection(CollectionPath::parse(path).map_err(|e| format!("`collection`: {}", e.0))?)
            }
            (None, Some(id)) => {
                let single = CollectionPath::parse(id).map_err(|e| format!("`collectionGroup`: {}", e.0))?;
                if single.as_str().contains('/') {
                    return Err("`collectionGroup`: a collection id, one segment (e.g. \"comments\")".into());
                }
                QueryScope::Group(id.clone())
            }
            _ => return Err("give either `collection` or `collectionGroup`".into()),
        };
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
        let filter = (!filters.is_empty()).then_some(Filter::And(filters));
        let disjunctions = filter.as_ref().map_or(1, disjunctions);
        if disjunctions > MAX_DISJUNCTIONS {
            return Err(format!(
                "`where`: the filter has {}{disjunctions} disjunctions in normal form, at most {MAX_DISJUNCTIONS} are allowed \
                 (`in` and `array-contains-any` count one per value; `and` multiplies, `or` adds)",
                if disjunctions == u64::MAX { "over " } else { "" }
            ));
        }
        let (collection, group) = match &scope {
            QueryScope::Collection(path) => (path.as_str().to_owned(), false),
            QueryScope::Group(id) => (id.clone(), true),
        };
        let query = Query { collection, group, filter, start_after: None, end_before: None, order, limit };
        let wanted = match (self.count, self.aggregate) {
            (true, Some(_)) => {
                return Err("`count` and `aggregate` cannot be combined; use an aggregate [\"count\"]".into())
            }
            (true, None) => Wanted::Count,
            (false, Some(map)) => Wanted::Aggregates(parse_aggregates(map)?),
            (false, None) => Wanted::Documents,
        };
        let token = |field, token: Option<String>| token.map(|token| CursorToken { field, token });
        Ok(ParsedQuery {
            scope,
            query,
            wanted,
            start_after: token("startAfter", self.start_after),
            end_before: token("endBefore", self.end_before),
        })
    }
}

/// A list of documents in id order (`GET` on a collection).
pub fn list_query(
    collection: &CollectionPath,
    limit: Option<u32>,
    page_token: Option<&str>,
) -> Result<ParsedQuery, String> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("`limit`: must be between 1 and {MAX_LIMIT}"));
    }
    let query = Query {
        collection: collection.as_str().to_owned(),
        group: false,
        filter: None,
        order: Vec::new(),
        limit,
        start_after: None,
        end_before: None,
    };
    Ok(ParsedQuery {
        scope: QueryScope::Collection(collection.clone()),
        query,
        wanted: Wanted::Documents,
        start_after: page_token.map(|t| CursorToken { field: "pageToken", token: t.to_owned() }),
        end_before: None,
    })
}

/// The number of disjunctions of `filter` in disjunctive normal form (saturating).
fn disjunctions(filter: &Filter) -> u64 {
    match filter {
        Filter::Compare { .. } | Filter::In { negated: true, .. } => 1,
        Filter::In { values, negated: false, .. } | Filter::ArrayContains { values, .. } => values.len().max(1) as u64,
        Filter::And(parts) => parts.iter().map(disjunctions).fold(1, u64::saturating_mul),
        Filter::Or(parts) => parts.iter().map(disjunctions).fold(0, u64::saturating_add).max(1),
    }
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
    Scalar::from_json(value).ok_or_else(|| match value {
        Value::Number(_) => format!("{context}: number out of range"),
        _ => format!(
            "{context}: values must be null, a boolean, a number, a string or a timestamp ({{\"$timestamp\": \"<RFC 3339>\"}})"
        ),
    })
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
    }

    #[test]
    fn the_normal_form_of_a_filter_is_bounded() {
        let thirty: Vec<i64> = (0..30).collect();
        let any = json!(["m", "array-contains-any", thirty]);
        assert!(parse(json!({"collection": "a", "where": [any]})).is_ok(), "30 disjunctions are allowed");
        let two = json!({"or": [any, ["x", "==", 1]]});
        assert!(parse(json!({"collection": "a", "where": [two]})).unwrap_err().contains("31 disjunctions"));
        let product = json!([["a", "in", [1, 2, 3, 4, 5, 6]], ["b", "in", [1, 2, 3, 4, 5, 6]]]);
        assert!(parse(json!({"collection": "a", "where": product})).unwrap_err().contains("36 disjunctions"));
        let huge = json!({"or": vec![any; 99]});
        assert!(parse(json!({"collection": "a", "where": [huge]})).unwrap_err().contains("2970 disjunctions"));
    }
}
