//! Rules as query filters: the `allow list` conditions of a collection,
//! partially evaluated for one caller, leave a condition on `resource.data`
//! that a host can push into its query (`WHERE`). Whatever cannot be
//! expressed becomes `Unknown`, so the result is always a *necessary*
//! condition: pushing it down only saves reading rows the caller could never
//! see. When no `Unknown` is left (`Condition::is_exact`), the condition is
//! also sufficient — under the comparison semantics documented on
//! `Condition` — and a host whose filter implements them needs no per-row check.

use std::collections::HashMap;

use crate::ast::{BinaryOp, Expr, ExprKind, Function, Segment};
use crate::eval::{eval, Env, EvalError, Lookup, Scope};
use crate::value::Value;

pub use crate::ast::CompareOp;

/// A condition on a document's data, with the rules language's semantics:
/// a comparison with a missing field (or through a non-map) is false; `==`
/// and `!=` compare any present value (`!=` is true for other types; ints and
/// floats compare numerically); `<`, `<=`, `>`, `>=` are false unless both
/// sides are numbers, both strings (byte order) or both timestamps.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every document passes.
    Anything,
    /// No document passes.
    Nothing,
    /// Depends on the row in a way no filter expresses: every row passes the
    /// filter and must be checked one by one.
    Unknown,
    /// `data.<field> <op> <value>` with a scalar value.
    Compare {
        field: Vec<String>,
        op: CompareOp,
        value: serde_json::Value,
    },
    /// `data.<field> in [values]` with scalar values.
    In {
        field: Vec<String>,
        values: Vec<serde_json::Value>,
    },
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

impl Condition {
    /// Whether the condition decides every row by itself (no `Unknown` part).
    pub fn is_exact(&self) -> bool {
        match self {
            Condition::Unknown => false,
            Condition::And(parts) | Condition::Or(parts) => parts.iter().all(Condition::is_exact),
            Condition::Anything | Condition::Nothing | Condition::Compare { .. } | Condition::In { .. } => true,
        }
    }
}

fn and(a: Condition, b: Condition) -> Condition {
    match (a, b) {
        (Condition::Nothing, _) | (_, Condition::Nothing) => Condition::Nothing,
        (Condition::Anything, x) | (x, Condition::Anything) => x,
        (Condition::Unknown, Condition::Unknown) => Condition::Unknown,
        (Condition::And(mut xs), Condition::And(ys)) => {
            xs.extend(ys);
            Condition::And(xs)
        }
        (Condition::And(mut xs), y) | (y, Condition::And(mut xs)) => {
            xs.push(y);
            Condition::And(xs)
        }
        (x, y) => Condition::And(vec![x, y]),
    }
}

fn or(a: Condition, b: Condition) -> Condition {
    match (a, b) {
        (Condition::Anything, _) | (_, Condition::Anything) => Condition::Anything,
        (Condition::Nothing, x) | (x, Condition::Nothing) => x,
        (Condition::Unknown, Condition::Unknown) => Condition::Unknown,
        (Condition::Or(mut xs), y) => {
            xs.push(y);
            Condition::Or(xs)
        }
        (x, y) => Condition::Or(vec![x, y]),
    }
}

/// Lookups are not available while building a filter: `get()` makes a part unknown.
struct NoDocuments;

impl Lookup for NoDocuments {
    fn document(&self, _path: &str) -> Option<Option<&serde_json::Value>> {
        None
    }
}

/// One rule as the push-down sees it: pattern, version, its `allow list`
/// conditions, the functions it sees, and fixed variables.
pub(crate) type RuleView<'r> = (&'r [Segment], u8, Vec<&'r Expr>, Vec<&'r [Function]>, &'r [(String, String)]);

/// How much of a collection group a rule's pattern reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupReach {
    /// No document of the group.
    None,
    /// Documents of some of the group's collections (`/posts/{p}/comments/{c}`).
    Some,
    /// Every document of the group (`/{path=**}/comments/{c}`).
    All,
}

/// Which documents `<any path>/<group>/<id>` a pattern can match.
pub(crate) fn group_reach(pattern: &[Segment], group: &str, version: u8) -> GroupReach {
    match pattern {
        [Segment::Rest(_), Segment::Literal(g), Segment::Var(_)] if g == group && version >= 2 => GroupReach::All,
        [.., Segment::Rest(_)] => GroupReach::Some,
        [.., Segment::Rest(_), Segment::Var(_)] => GroupReach::Some,
        [.., Segment::Literal(g), Segment::Var(_)] if g == group => GroupReach::Some,
        [.., Segment::Var(_), Segment::Var(_)] => GroupReach::Some,
        _ => GroupReach::None,
    }
}

/// The filter for `list` over the collection group `group`. The path
/// variables differ from row to row, so every one of them is left to the
/// per-row check; a rule that reaches only part of the group makes the
/// result inexact (its documents elsewhere must be checked one by one).
pub(crate) fn group_list_condition<'r>(
    rules: impl Iterator<Item = RuleView<'r>>,
    group: &str,
    request: &crate::Request,
) -> Condition {
    let lookup = NoDocuments;
    let env = Env::new(request, &lookup);
    let mut result = Condition::Nothing;
    for (pattern, version, conditions, functions, fixed) in rules {
        let reach = group_reach(pattern, group, version);
        if conditions.is_empty() || reach == GroupReach::None {
            continue;
        }
        if matches!(pattern.last(), Some(Segment::Literal(_))) {
            return Condition::Unknown;
        }
        let mut row = vec!["resource".to_owned()];
        row.extend(pattern.iter().filter_map(|s| match s {
            Segment::Var(name) | Segment::Rest(name) => Some(name.clone()),
            Segment::Literal(_) => None,
        }));
        let vars = fixed.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))).collect();
        let scope = Scope { vars, functions };
        let mut allowed = Condition::Nothing;
        for condition in conditions {
            allowed = or(allowed, residual(condition, &scope, &env, &row, 0));
        }
        if reach == GroupReach::Some {
            allowed = and(allowed, Condition::Unknown);
        }
        result = or(result, allowed);
    }
    result
}

/// The filter for `list` in `collection`, given the bindings and functions of
/// each matching rule.
pub(crate) fn list_condition<'r>(
    rules: impl Iterator<Item = RuleView<'r>>,
    collection: &str,
    request: &crate::Request,
) -> Condition {
    let lookup = NoDocuments;
    let env = Env::new(request, &lookup);
    let mut segments: Vec<&str> = collection.split('/').collect();
    segments.push("\u{0}");
    let mut result = Condition::Nothing;
    for (pattern, version, conditions, functions, fixed) in rules {
        if conditions.is_empty() {
            continue;
        }
        // A rule for one literal document id in this collection: no filter can be derived.
        if let Some(Segment::Literal(id)) = pattern.last() {
            let mut path = segments.clone();
            if let Some(last) = path.last_mut() {
                *last = id.as_str();
            }
            if crate::bind(pattern, &path, version).is_some() {
                return Condition::Unknown;
            }
        }
        let Some(mut vars) = crate::bind(pattern, &segments, version) else { continue };
        // The document id is different for every row: leave it unbound so any
        // condition on it stays per-row.
        let mut row = vec!["resource".to_owned()];
        if let Some(Segment::Var(name) | Segment::Rest(name)) = pattern.last() {
            vars.remove(name);
            row.push(name.clone());
        }
        vars.extend(fixed.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))));
        let scope = Scope { vars, functions };
        for condition in conditions {
            result = or(result, residual(condition, &scope, &env, &row, 0));
        }
    }
    result
}

const MAX_INLINE_DEPTH: usize = 8;

fn residual(expr: &Expr, scope: &Scope, env: &Env, row: &[String], depth: usize) -> Condition {
    match &expr.kind {
        ExprKind::Binary(BinaryOp::And, a, b) => {
            and(residual(a, scope, env, row, depth), residual(b, scope, env, row, depth))
        }
        ExprKind::Binary(BinaryOp::Or, a, b) => {
            or(residual(a, scope, env, row, depth), residual(b, scope, env, row, depth))
        }
        ExprKind::Binary(op, left, right) => {
            comparison(*op, left, right, scope, env, row).unwrap_or_else(|| concrete(expr, scope, env, row))
        }
        ExprKind::Call(name, args) if depth < MAX_INLINE_DEPTH => match scope_function(scope, name) {
            Some(function) => {
                inline(function, args, scope, env, row, depth).unwrap_or_else(|| concrete(expr, scope, env, row))
            }
            None => concrete(expr, scope, env, row),
        },
        _ => concrete(expr, scope, env, row),
    }
}

fn scope_function<'s>(scope: &'s Scope, name: &str) -> Option<&'s Function> {
    scope.functions.iter().find_map(|list| list.iter().find(|f| f.name == name))
}

/// A user function inlined: arguments that do not depend on the row are
/// evaluated, the others are substituted into the body as expressions.
fn inline(
    function: &Function,
    args: &[Expr],
    scope: &Scope,
    env: &Env,
    row: &[String],
    depth: usize,
) -> Option<Condition> {
    if function.params.len() != args.len() {
        return None;
    }
    let mut vars: HashMap<String, Value> = scope.vars.clone();
    let mut substitutions: HashMap<String, Expr> = HashMap::new();
    for (param, arg) in function.params.iter().zip(args) {
        if mentions_row(arg, row) {
            substitutions.insert(param.clone(), arg.clone());
        } else {
            vars.insert(param.clone(), eval(arg, scope, env).ok()?);
        }
    }
    let mut inner = Scope { vars, functions: scope.functions.clone() };
    for (name, expr) in &function.lets {
        let expr = substitute(expr, &substitutions);
        if mentions_row(&expr, row) {
            substitutions.insert(name.clone(), expr);
        } else {
            let value = eval(&expr, &inner, env).ok()?;
            inner.vars.insert(name.clone(), value);
        }
    }
    Some(residual(&substitute(&function.body, &substitutions), &inner, env, row, depth + 1))
}

/// `expr` with every name in `substitutions` replaced by its expression.
fn substitute(expr: &Expr, substitutions: &HashMap<String, Expr>) -> Expr {
    if substitutions.is_empty() {
        return expr.clone();
    }
    let sub = |e: &Expr| Box::new(substitute(e, substitutions));
    let subs = |items: &[Expr]| items.iter().map(|e| substitute(e, substitutions)).collect();
    let kind = match &expr.kind {
        ExprKind::Ident(name) => match substitutions.get(name) {
            Some(replacement) => return replacement.clone(),
            None => ExprKind::Ident(name.clone()),
        },
        ExprKind::List(items) => ExprKind::List(subs(items)),
        ExprKind::Map(entries) => {
            ExprKind::Map(entries.iter().map(|(k, e)| (k.clone(), substitute(e, substitutions))).collect())
        }
        ExprKind::Member(target, name) => ExprKind::Member(sub(target), name.clone()),
        ExprKind::Index(a, b) => ExprKind::Index(sub(a), sub(b)),
        ExprKind::Call(name, args) => ExprKind::Call(name.clone(), subs(args)),
        ExprKind::MethodCall(target, name, args) => ExprKind::MethodCall(sub(target), name.clone(), subs(args)),
        ExprKind::Unary(op, inner) => ExprKind::Unary(*op, sub(inner)),
        ExprKind::Binary(op, a, b) => ExprKind::Binary(*op, sub(a), sub(b)),
        ExprKind::Ternary(a, b, c) => ExprKind::Ternary(sub(a), sub(b), sub(c)),
        ExprKind::Is(inner, t) => ExprKind::Is(sub(inner), *t),
        ExprKind::Path(parts) => ExprKind::Path(
            parts
                .iter()
                .map(|p| match p {
                    crate::ast::PathPart::Interpolated(e) => {
                        crate::ast::PathPart::Interpolated(substitute(e, substitutions))
                    }
                    literal => literal.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    };
    Expr { kind, pos: expr.pos }
}

/// The value of a part that does not depend on the row: true → anything, otherwise nothing
/// (an error never grants); a part that depends on the row → unknown (left for per-row checks).
fn concrete(expr: &Expr, scope: &Scope, env: &Env, row: &[String]) -> Condition {
    if mentions_row(expr, row) {
        return Condition::Unknown;
    }
    match eval(expr, scope, env) {
        Ok(Value::Bool(true)) => Condition::Anything,
        Err(EvalError::NeedDocument(_)) => Condition::Unknown,
        _ => Condition::Nothing,
    }
}

fn comparison(op: BinaryOp, left: &Expr, right: &Expr, scope: &Scope, env: &Env, row: &[String]) -> Option<Condition> {
    if op == BinaryOp::In {
        let field = data_field(left)?;
        if mentions_row(right, row) {
            return None;
        }
        return Some(match eval(right, scope, env) {
            Ok(Value::List(items)) => match items.iter().map(scalar).collect::<Option<Vec<_>>>() {
                Some(values) => Condition::In { field, values },
                None => Condition::Unknown,
            },
            // `in` a map tests its keys; leave that to the per-row check.
            Ok(_) | Err(EvalError::NeedDocument(_)) => Condition::Unknown,
            Err(EvalError::Error(_)) => Condition::Nothing,
        });
    }
    let (field, other, flipped) = match (data_field(left), data_field(right)) {
        (Some(field), None) => (field, right, false),
        (None, Some(field)) => (field, left, true),
        _ => return None,
    };
    if mentions_row(other, row) {
        return None;
    }
    let BinaryOp::Compare(op) = op else { return None };
    let op = if flipped { op.flipped() } else { op };
    match eval(other, scope, env) {
        Ok(value) => Some(scalar(&value).map_or(Condition::Unknown, |value| Condition::Compare { field, op, value })),
        Err(EvalError::NeedDocument(_)) => Some(Condition::Unknown),
        // Comparing with an error is an error: it never grants.
        Err(EvalError::Error(_)) => Some(Condition::Nothing),
    }
}

fn scalar(value: &Value) -> Option<serde_json::Value> {
    match value {
        Value::Null => Some(serde_json::Value::Null),
        Value::Bool(b) => Some(serde_json::Value::Bool(*b)),
        Value::Int(n) => Some(serde_json::Value::from(*n)),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number),
        Value::Str(s) => Some(serde_json::Value::String(s.clone())),
        Value::Timestamp(micros) => Some(crate::time::to_json(*micros)),
        _ => None,
    }
}

/// `resource.data.a.b` (or `resource.data['a']`) → `["a", "b"]`.
fn data_field(expr: &Expr) -> Option<Vec<String>> {
    data_path(expr).filter(|path| !path.is_empty())
}

/// Like `data_field`, and `resource.data` itself → `[]`.
fn data_path(expr: &Expr) -> Option<Vec<String>> {
    let (target, key) = match &expr.kind {
        ExprKind::Member(target, name) => {
            if matches!(&target.kind, ExprKind::Ident(root) if root == "resource") && name == "data" {
                return Some(Vec::new());
            }
            (target, name.clone())
        }
        ExprKind::Index(target, index) => match &index.kind {
            ExprKind::Str(key) => (target, key.clone()),
            _ => return None,
        },
        _ => return None,
    };
    data_path(target).map(|mut path| {
        path.push(key);
        path
    })
}

/// Whether an expression depends on the row: `resource`, the document id
/// variable, or a call that might read them.
fn mentions_row(expr: &Expr, row: &[String]) -> bool {
    let any = |e: &Expr| mentions_row(e, row);
    match &expr.kind {
        ExprKind::Ident(name) => row.contains(name),
        ExprKind::Call(..) => true,
        ExprKind::List(items) => items.iter().any(any),
        ExprKind::Map(entries) => entries.iter().any(|(_, e)| any(e)),
        ExprKind::Member(target, _) => any(target),
        ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => any(a) || any(b),
        ExprKind::MethodCall(target, _, args) => any(target) || args.iter().any(any),
        ExprKind::Unary(_, inner) | ExprKind::Is(inner, _) => any(inner),
        ExprKind::Ternary(a, b, c) => any(a) || any(b) || any(c),
        ExprKind::Path(parts) => parts.iter().any(|p| matches!(p, crate::ast::PathPart::Interpolated(e) if any(e))),
        _ => false,
    }
}
