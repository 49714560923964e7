//! The semantics of `query.rs`, evaluated on one document in memory: whether
//! a document is in a query's scope and passes its filter, and how two
//! positions compare in its order. Realtime uses it to decide, change by
//! change, what a live query shows without asking the database; it must
//! agree with the SQL both dialects run (the tests below hold the cases
//! `tests/e2e` checks against the databases).

use std::cmp::Ordering;

use serde_json::Value;

use super::query::{rank, CompareOp, Cursor, Direction, Filter, Query, Scalar, SortKey};

impl Query {
    /// Whether a document of `collection` belongs to the collection (or group) queried.
    pub fn in_scope(&self, collection: &str) -> bool {
        if self.group {
            collection == self.collection
                || collection.strip_suffix(self.collection.as_str()).is_some_and(|rest| rest.ends_with('/'))
        } else {
            collection == self.collection
        }
    }

    /// Whether `data` passes the filter and has every order field (cursors are not considered).
    pub fn matches(&self, data: &Value) -> bool {
        self.order.iter().all(|o| o.field.lookup(data).is_some())
            && self.filter.as_ref().is_none_or(|f| f.matches(data))
    }

    /// How two positions compare in the query's order.
    pub fn compare(&self, a: &Cursor, b: &Cursor) -> Ordering {
        for (i, order) in self.order.iter().enumerate() {
            let (x, y) = (a.keys.get(i), b.keys.get(i));
            let by_keys = match (x, y) {
                (Some(x), Some(y)) => compare_keys(x, y),
                _ => Ordering::Equal,
            };
            let directed = if order.direction == Direction::Desc { by_keys.reverse() } else { by_keys };
            if directed != Ordering::Equal {
                return directed;
            }
        }
        let last = self.order.last().map_or(Direction::Asc, |o| o.direction);
        let tail = a.collection.cmp(&b.collection).then_with(|| a.id.cmp(&b.id));
        if last == Direction::Desc {
            tail.reverse()
        } else {
            tail
        }
    }
}

fn compare_keys(a: &SortKey, b: &SortKey) -> Ordering {
    a.rank
        .cmp(&b.rank)
        .then_with(|| a.num.partial_cmp(&b.num).unwrap_or(Ordering::Equal))
        .then_with(|| a.text.as_bytes().cmp(b.text.as_bytes()))
}

impl Filter {
    pub fn matches(&self, data: &Value) -> bool {
        match self {
            Filter::Compare { field, op, value } => field.lookup(data).is_some_and(|v| compare(v, *op, value)),
            Filter::In { field, values, negated } => match field.lookup(data) {
                None => false,
                Some(v) if *negated => values.iter().all(|value| compare(v, CompareOp::Ne, value)),
                Some(v) => values.iter().any(|value| compare(v, CompareOp::Eq, value)),
            },
            Filter::ArrayContains { field, values } => match field.lookup(data) {
                Some(Value::Array(elements)) => {
                    elements.iter().any(|e| Scalar::from_json(e).is_some_and(|e| values.iter().any(|v| same(&e, v))))
                }
                _ => false,
            },
            Filter::And(filters) => filters.iter().all(|f| f.matches(data)),
            Filter::Or(filters) => filters.iter().any(|f| f.matches(data)),
        }
    }
}

/// Two scalars are the same value (numbers by value, as SQL compares them).
fn same(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Number(x), Scalar::Number(y)) => x == y,
        _ => a == b,
    }
}

/// `value op operand`, through the sort keys as `query::compare_sql` writes it.
fn compare(value: &Value, op: CompareOp, operand: &Scalar) -> bool {
    let key = SortKey::of(value);
    let (operand_rank, num, text) = operand.sort_keys();
    let equal = key.rank == operand_rank && key.num == num && key.text == text;
    match op {
        CompareOp::Eq => equal,
        CompareOp::Ne => !equal,
        CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => {
            let ordering = match operand {
                Scalar::Null => {
                    return matches!(op, CompareOp::Le | CompareOp::Ge) && key.rank == rank::NULL;
                }
                _ if key.rank != operand_rank => return false,
                Scalar::Bool(_) | Scalar::Number(_) => match key.num.partial_cmp(&num) {
                    Some(ordering) => ordering,
                    None => return false,
                },
                Scalar::String(_) | Scalar::Timestamp(_) => key.text.as_bytes().cmp(text.as_bytes()),
            };
            match op {
                CompareOp::Lt => ordering == Ordering::Less,
                CompareOp::Le => ordering != Ordering::Greater,
                CompareOp::Gt => ordering == Ordering::Greater,
                _ => ordering != Ordering::Less,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::query::{FieldPath, OrderBy};
    use super::*;

    fn field(name: &str) -> FieldPath {
        FieldPath::parse(name).expect("field")
    }

    fn query(filter: Option<Filter>) -> Query {
        Query {
            collection: "posts".into(),
            group: false,
            filter,
            order: vec![],
            limit: 10,
            start_after: None,
            end_before: None,
        }
    }

    fn compare_filter(name: &str, op: CompareOp, value: Scalar) -> Option<Filter> {
        Some(Filter::Compare { field: field(name), op, value })
    }

    #[test]
    fn comparisons_match_only_values_of_the_same_type() {
        let q = query(compare_filter("n", CompareOp::Gt, Scalar::Number(2.0)));
        assert!(q.matches(&json!({"n": 3})));
        assert!(!q.matches(&json!({"n": 2})));
        assert!(!q.matches(&json!({"n": "9"})), "a string is not greater than a number in a filter");
        assert!(!q.matches(&json!({})));
        let ne = query(compare_filter("n", CompareOp::Ne, Scalar::Number(2.0)));
        assert!(ne.matches(&json!({"n": "2"})) && !ne.matches(&json!({"n": 2.0})) && !ne.matches(&json!({})));
        let at_least_null = query(compare_filter("n", CompareOp::Ge, Scalar::Null));
        assert!(at_least_null.matches(&json!({"n": null})) && !at_least_null.matches(&json!({"n": 1})));
    }

    #[test]
    fn timestamps_and_strings_compare_by_their_text() {
        let q = query(compare_filter("at", CompareOp::Lt, Scalar::Timestamp("2026-01-02T00:00:00.000000Z".into())));
        assert!(q.matches(&json!({"at": {"$timestamp": "2026-01-01T00:00:00.000000Z"}})));
        assert!(!q.matches(&json!({"at": "2026-01-01T00:00:00.000000Z"})));
        let s = query(compare_filter("name", CompareOp::Ge, Scalar::String("b".into())));
        assert!(s.matches(&json!({"name": "ba"})) && !s.matches(&json!({"name": "B"})));
    }

    #[test]
    fn in_lists_and_array_membership() {
        let values = vec![Scalar::String("a".into()), Scalar::Number(1.0)];
        let any = query(Some(Filter::In { field: field("x"), values: values.clone(), negated: false }));
        assert!(any.matches(&json!({"x": 1})) && !any.matches(&json!({"x": "b"})));
        let none = query(Some(Filter::In { field: field("x"), values: values.clone(), negated: true }));
        assert!(none.matches(&json!({"x": "b"})) && !none.matches(&json!({"x": "a"})) && !none.matches(&json!({})));
        let contains = query(Some(Filter::ArrayContains { field: field("tags"), values }));
        assert!(contains.matches(&json!({"tags": ["z", 1.0]})));
        assert!(!contains.matches(&json!({"tags": "a"})) && !contains.matches(&json!({"tags": ["b"]})));
    }

    #[test]
    fn scope_and_order() {
        let mut group = query(None);
        group.group = true;
        group.collection = "comments".into();
        assert!(group.in_scope("comments") && group.in_scope("posts/p1/comments"));
        assert!(!group.in_scope("posts/p1/mycomments") && !group.in_scope("comments/c1/likes"));
        let mut ordered = query(None);
        ordered.order = vec![OrderBy { field: field("n"), direction: Direction::Desc }];
        let at = |n: Value, id: &str| Cursor { keys: vec![SortKey::of(&n)], collection: None, id: id.into() };
        assert_eq!(ordered.compare(&at(json!(2), "a"), &at(json!(1), "b")), Ordering::Less);
        assert_eq!(ordered.compare(&at(json!(1), "a"), &at(json!(1), "b")), Ordering::Greater);
        assert_eq!(ordered.compare(&at(json!("x"), "a"), &at(json!(5), "b")), Ordering::Less, "strings after numbers");
        assert!(!ordered.matches(&json!({})), "a document without the order field is not in an ordered query");
    }
}
