//! Security-rules checks for document requests. The rules language is pure,
//! so documents that `get()`/`exists()` ask for are fetched here (at most 10
//! per request, shared by every write of a batch so one request sees one
//! consistent set) and the decision is taken again. `getAfter()` sees the
//! request's own writes first.

use std::collections::HashMap;
use std::sync::Arc;

use nimbus_rules_lang::ast::Method;
use nimbus_rules_lang::pushdown::{CompareOp, Condition};
use nimbus_rules_lang::{Auth, Decision, Lookup, Request, Rules};
use serde_json::Value;

use super::path::DocPath;
use crate::auth::Caller;
use crate::store::documents::DocKey;
use crate::store::query::{FieldPath, Filter, Scalar};
use crate::store::{Store, StoreError};

/// Most documents one request's rules may read with `get()`/`exists()`.
pub const MAX_RULE_READS: usize = 10;

/// Documents fetched for rules during one request, and the request's own
/// writes (what `getAfter()`/`existsAfter()` see: `None` for a delete).
#[derive(Default)]
pub struct Fetched<'w> {
    stored: HashMap<String, Option<Value>>,
    after: HashMap<String, Option<&'w Value>>,
}

impl<'w> Fetched<'w> {
    /// Records that the request leaves `path` as `data` (`None`: deleted).
    pub fn write_after(&mut self, path: String, data: Option<&'w Value>) {
        self.after.insert(path, data);
    }
}

impl Lookup for Fetched<'_> {
    fn document(&self, path: &str) -> Option<Option<&Value>> {
        self.stored.get(path).map(Option::as_ref)
    }

    fn document_after(&self, path: &str) -> Option<Option<&Value>> {
        self.after.get(path).copied().or_else(|| self.document(path))
    }
}

/// `request.auth` for a caller: `None` when signed out.
pub fn rules_auth(caller: &Caller) -> Option<Arc<Auth>> {
    match caller {
        Caller::User(claims) => Some(claims.rules_auth()),
        Caller::Service | Caller::Public => None,
    }
}

/// What is being decided.
pub struct Check<'a> {
    pub method: Method,
    pub path: &'a str,
    pub existing: Option<&'a Value>,
    pub incoming: Option<&'a Value>,
}

/// Decides `check`, fetching the documents the rules read. `true` = allowed.
pub async fn allowed(
    rules: &Rules,
    store: &Store,
    fetched: &mut Fetched<'_>,
    auth: Option<&Auth>,
    time_micros: i64,
    check: &Check<'_>,
) -> Result<bool, StoreError> {
    loop {
        let request = Request {
            method: check.method,
            path: check.path,
            auth,
            time_micros,
            existing: check.existing,
            incoming: check.incoming,
        };
        match rules.decide(&request, fetched) {
            Decision::Allow(_) => return Ok(true),
            Decision::Deny => return Ok(false),
            Decision::NeedDocument(_) if fetched.stored.len() >= MAX_RULE_READS => return Ok(false),
            Decision::NeedDocument(path) => {
                let data = match DocPath::parse(&path) {
                    Ok(doc) => {
                        let key = DocKey { collection: doc.collection().as_str().to_owned(), id: doc.id().to_owned() };
                        store.get_document(&key).await?.and_then(|d| serde_json::from_str(&d.data).ok())
                    }
                    Err(_) => None,
                };
                fetched.stored.insert(path, data);
            }
        }
    }
}

/// A pushed-down rules condition as a store filter.
pub struct Pushed {
    /// `None` = no filter.
    pub filter: Option<Filter>,
    /// The filter decides every row exactly as the rules would, so rows read
    /// through it need no per-row check.
    pub exact: bool,
}

/// The store filter for a pushed-down rules condition. Parts the store cannot
/// write in SQL stay unfiltered (checked per row). A comparison counts as
/// exact only where the store's semantics equal the rules' for every stored
/// value: `==`/`!=`/`in` with null, bools, strings and timestamps. Numbers are compared
/// as doubles in SQL (ints above 2^53 would differ) and string ranges follow
/// the database collation, so those are still checked per row.
pub fn pushed_filter(condition: &Condition) -> Pushed {
    match condition {
        Condition::Anything => Pushed { filter: None, exact: true },
        Condition::Unknown => Pushed { filter: None, exact: false },
        Condition::Nothing => Pushed { filter: Some(Filter::Or(Vec::new())), exact: true },
        Condition::Compare { field, op, value } => {
            let exact_op = matches!(op, CompareOp::Eq | CompareOp::Ne);
            let op = *op;
            match (field_path(field), Scalar::from_json(value)) {
                (Some(field), Some(scalar)) => Pushed {
                    exact: exact_op && exact_scalar(&scalar),
                    filter: Some(Filter::Compare { field, op, value: scalar }),
                },
                _ => Pushed { filter: None, exact: false },
            }
        }
        Condition::In { field, values } => {
            match (field_path(field), values.iter().map(Scalar::from_json).collect::<Option<Vec<_>>>()) {
                (Some(field), Some(values)) => Pushed {
                    exact: values.iter().all(exact_scalar),
                    filter: Some(Filter::In { field, values, negated: false }),
                },
                _ => Pushed { filter: None, exact: false },
            }
        }
        Condition::And(parts) => {
            let pushed: Vec<Pushed> = parts.iter().map(pushed_filter).collect();
            let exact = pushed.iter().all(|p| p.exact);
            let filters: Vec<Filter> = pushed.into_iter().filter_map(|p| p.filter).collect();
            Pushed { filter: (!filters.is_empty()).then_some(Filter::And(filters)), exact }
        }
        Condition::Or(parts) => {
            let pushed: Vec<Pushed> = parts.iter().map(pushed_filter).collect();
            let exact = pushed.iter().all(|p| p.exact);
            // One unfiltered alternative lets every row through.
            let filter = pushed.into_iter().map(|p| p.filter).collect::<Option<Vec<_>>>().map(Filter::Or);
            Pushed { filter, exact }
        }
    }
}

/// A rules field (`["dims", "w"]`) as a store field path; `None` when a
/// segment is not a plain name (`resource.data['a.b']`).
fn field_path(segments: &[String]) -> Option<FieldPath> {
    if segments.iter().any(|s| FieldPath::parse(s).is_none_or(|f| f.segments().len() != 1)) {
        return None;
    }
    FieldPath::parse(&segments.join("."))
}

fn exact_scalar(value: &Scalar) -> bool {
    !matches!(value, Scalar::Number(_))
}
