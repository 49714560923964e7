//! Security-rules checks for document requests. The rules language is pure,
//! so documents that `get()`/`exists()` ask for are fetched here (at most 10
//! per request, shared by every write of a batch so one request sees one
//! consistent set) and the decision is taken again.

use std::collections::HashMap;

use nimbus_rules_lang::ast::Method;
use nimbus_rules_lang::pushdown::{CompareOp, Condition};
use nimbus_rules_lang::{Auth, Decision, Lookup, Request, Rules};
use serde_json::Value;

use super::path::DocPath;
use crate::auth::Caller;
use crate::store::documents::DocKey;
use crate::store::query::{CompareOp as StoreOp, FieldPath, Filter, Scalar};
use crate::store::{Store, StoreError};

/// Most documents one request's rules may read with `get()`/`exists()`.
pub const MAX_RULE_READS: usize = 10;

/// Documents fetched for rules during one request.
#[derive(Default)]
pub struct Fetched(HashMap<String, Option<Value>>);

impl Lookup for Fetched {
    fn document(&self, path: &str) -> Option<Option<&Value>> {
        self.0.get(path).map(Option::as_ref)
    }
}

/// `request.auth` for a caller: `None` when signed out.
pub fn rules_auth(caller: &Caller) -> Option<Auth> {
    match caller {
        Caller::User(claims) => {
            Some(Auth { uid: claims.sub.clone(), token: serde_json::to_value(claims.as_ref()).unwrap_or(Value::Null) })
        }
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
    fetched: &mut Fetched,
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
            Decision::NeedDocument(_) if fetched.0.len() >= MAX_RULE_READS => return Ok(false),
            Decision::NeedDocument(path) => {
                let data = match DocPath::parse(&path) {
                    Ok(doc) => {
                        let key = DocKey { collection: doc.collection().as_str().to_owned(), id: doc.id().to_owned() };
                        store.get_document(&key).await?.and_then(|d| serde_json::from_str(&d.data).ok())
                    }
                    Err(_) => None,
                };
                fetched.0.insert(path, data);
            }
        }
    }
}

/// The store filter for a pushed-down rules condition; `None` = no filter.
/// Fields that cannot be written in SQL stay unfiltered (checked per row).
pub fn pushed_filter(condition: &Condition) -> Option<Filter> {
    let field = |segments: &[String]| FieldPath::parse(&segments.join("."));
    let scalar = |value: &Value| match value {
        Value::Null => Some(Scalar::Null),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Scalar::Number),
        Value::String(s) => Some(Scalar::String(s.clone())),
        _ => None,
    };
    match condition {
        Condition::Anything => None,
        Condition::Nothing => Some(Filter::Or(Vec::new())),
        Condition::Compare { field: f, op, value } => {
            let op = match op {
                CompareOp::Eq => StoreOp::Eq,
                CompareOp::Ne => StoreOp::Ne,
                CompareOp::Lt => StoreOp::Lt,
                CompareOp::Le => StoreOp::Le,
                CompareOp::Gt => StoreOp::Gt,
                CompareOp::Ge => StoreOp::Ge,
            };
            Some(Filter::Compare { field: field(f)?, op, value: scalar(value)? })
        }
        Condition::In { field: f, values } => {
            let values = values.iter().map(scalar).collect::<Option<Vec<_>>>()?;
            Some(Filter::In { field: field(f)?, values, negated: false })
        }
        Condition::And(parts) => {
            let pushed: Vec<Filter> = parts.iter().filter_map(pushed_filter).collect();
            (!pushed.is_empty()).then_some(Filter::And(pushed))
        }
        Condition::Or(parts) => parts.iter().map(pushed_filter).collect::<Option<Vec<_>>>().map(Filter::Or),
    }
}
