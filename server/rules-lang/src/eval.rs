//! Evaluates expressions. Errors are values, as in Firebase: `error || true`
//! is true, `error && false` is false, and a condition that ends in an error
//! grants nothing. A `get()`/`exists()` of a document the caller has not
//! supplied stops evaluation with `NeedDocument`, so the host can fetch it and
//! evaluate again (expressions are pure, so the retry is deterministic).

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, HashMap};

use crate::ast::{BinaryOp, CompareOp, Expr, ExprKind, Function, PathPart, UnaryOp};
use crate::value::Value;
use crate::{Auth, Request};

/// Most nested function calls in one evaluation.
const MAX_CALL_DEPTH: usize = 20;

use crate::error::checked;
pub use crate::error::{Eval, EvalError};

fn error<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::Error(message.into()))
}

/// Documents that `get()` and `exists()` may read.
pub trait Lookup {
    /// `None`: not fetched yet; `Some(None)`: does not exist; `Some(Some(data))`: exists.
    fn document(&self, path: &str) -> Option<Option<&serde_json::Value>>;

    /// The document as it will be after the whole request (`getAfter`,
    /// `existsAfter`): the request's own writes, else the stored document.
    fn document_after(&self, path: &str) -> Option<Option<&serde_json::Value>> {
        self.document(path)
    }
}

/// What an expression can see: the request, the resource, the documents at
/// hand. Parts of `request` and `resource` are converted to rule values the
/// first time an expression reads them, so a condition that never looks at
/// the document does not pay for converting it.
pub struct Env<'a> {
    request: &'a Request<'a>,
    pub lookup: &'a dyn Lookup,
    depth: Cell<usize>,
    method: OnceCell<Value>,
    path: OnceCell<Value>,
    time: OnceCell<Value>,
    incoming: OnceCell<Value>,
    existing: OnceCell<Value>,
    whole_request: OnceCell<Value>,
}

static NULL: Value = Value::Null;

impl<'a> Env<'a> {
    pub fn new(request: &'a Request<'a>, lookup: &'a dyn Lookup) -> Env<'a> {
        Env {
            request,
            lookup,
            depth: Cell::new(0),
            method: OnceCell::new(),
            path: OnceCell::new(),
            time: OnceCell::new(),
            incoming: OnceCell::new(),
            existing: OnceCell::new(),
            whole_request: OnceCell::new(),
        }
    }

    /// `request.<name>`.
    fn request_member(&self, name: &str) -> Option<&Value> {
        let request = self.request;
        Some(match name {
            "auth" => request.auth.map_or(&NULL, Auth::value),
            "method" => self.method.get_or_init(|| Value::Str(request.method.name().to_owned())),
            "path" => self.path.get_or_init(|| Value::Path(request.path.split('/').map(str::to_owned).collect())),
            "time" => self.time.get_or_init(|| Value::Timestamp(request.time_micros)),
            "resource" => self
                .incoming
                .get_or_init(|| request.incoming.map_or(Value::Null, |data| resource_value(request.path, data))),
            _ => return None,
        })
    }

    /// `request` as one map (only when an expression uses it whole).
    fn request(&self) -> &Value {
        self.whole_request.get_or_init(|| {
            let names = ["auth", "method", "path", "time", "resource"];
            Value::Map(
                names
                    .into_iter()
                    .filter_map(|name| Some((name.to_owned(), self.request_member(name)?.clone())))
                    .collect(),
            )
        })
    }

    /// `resource`: the stored document, or null.
    fn resource(&self) -> &Value {
        let request = self.request;
        self.existing.get_or_init(|| request.existing.map_or(Value::Null, |data| resource_value(request.path, data)))
    }
}

/// Variables and the functions visible at one point (innermost scope first).
pub struct Scope<'s> {
    pub vars: HashMap<String, Value>,
    pub functions: Vec<&'s [Function]>,
}

impl Scope<'_> {
    fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find_map(|list| list.iter().find(|f| f.name == name))
    }
}

fn as_bool(value: Eval) -> Result<bool, EvalError> {
    match value? {
        Value::Bool(b) => Ok(b),
        other => error(format!("expected a bool, got {}", other.type_name())),
    }
}

pub fn eval(expr: &Expr, scope: &Scope, env: &Env) -> Eval {
    match &expr.kind {
        ExprKind::Null => Ok(Value::Null),
        ExprKind::Bool(b) => Ok(Value::Bool(*b)),
        ExprKind::Int(n) => Ok(Value::Int(*n)),
        ExprKind::Float(f) => Ok(Value::Float(*f)),
        ExprKind::Str(s) => Ok(Value::Str(s.clone())),
        ExprKind::List(items) => Ok(Value::List(items.iter().map(|e| eval(e, scope, env)).collect::<Result<_, _>>()?)),
        ExprKind::Map(entries) => Ok(Value::Map(
            entries.iter().map(|(k, e)| Ok((k.clone(), eval(e, scope, env)?))).collect::<Result<_, EvalError>>()?,
        )),
        ExprKind::Path(parts) => {
            let mut segments = Vec::new();
            for part in parts {
                match part {
                    PathPart::Literal(s) => segments.push(s.clone()),
                    PathPart::Interpolated(e) => match eval(e, scope, env)? {
                        Value::Str(s) => segments.extend(s.split('/').filter(|s| !s.is_empty()).map(str::to_owned)),
                        Value::Int(n) => segments.push(n.to_string()),
                        Value::Path(p) => segments.extend(p),
                        other => return error(format!("cannot put a {} in a path", other.type_name())),
                    },
                }
            }
            Ok(Value::Path(segments))
        }
        ExprKind::Ident(name) => match name.as_str() {
            "request" => Ok(env.request().clone()),
            "resource" => Ok(env.resource().clone()),
            _ => scope.vars.get(name).cloned().map_or_else(|| error(format!("unknown name `{name}`")), Ok),
        },
        ExprKind::Member(target, name) => match borrowed(target, scope, env) {
            // `request.auth.uid`, `resource.data.owner`: walk the stored maps and
            // copy only the leaf, instead of copying `request` or `resource` whole.
            Some(Ok(value)) => match value {
                Value::Map(map) => map.get(name).cloned().map_or_else(|| error(format!("no field `{name}`")), Ok),
                other => member(other.clone(), name),
            },
            Some(Err(e)) => Err(e),
            None => member(eval(target, scope, env)?, name),
        },
        ExprKind::Index(target, index) => {
            let target = eval(target, scope, env)?;
            let index = eval(index, scope, env)?;
            match (target, index) {
                (Value::List(items), Value::Int(i)) => {
                    let at = if i < 0 { items.len() as i64 + i } else { i };
                    items.get(at as usize).cloned().map_or_else(|| error("list index out of range"), Ok)
                }
                (Value::Map(map), Value::Str(key)) => {
                    map.get(&key).cloned().map_or_else(|| error(format!("no key `{key}`")), Ok)
                }
                (t, i) => error(format!("cannot index a {} with a {}", t.type_name(), i.type_name())),
            }
        }
        ExprKind::Call(name, args) => call(name, args, scope, env),
        ExprKind::MethodCall(target, name, args) if is_namespace(target) => {
            let ExprKind::Ident(namespace) = &target.kind else { return error("not a namespace") };
            let args = args.iter().map(|a| eval(a, scope, env)).collect::<Result<Vec<_>, _>>()?;
            crate::methods::call_namespace(namespace, name, args)
        }
        ExprKind::MethodCall(target, name, args) => {
            let target = eval(target, scope, env)?;
            let args = args.iter().map(|a| eval(a, scope, env)).collect::<Result<Vec<_>, _>>()?;
            crate::methods::call_method(target, name, args)
        }
        ExprKind::Unary(UnaryOp::Not, inner) => Ok(Value::Bool(!as_bool(eval(inner, scope, env))?)),
        ExprKind::Unary(UnaryOp::Neg, inner) => match eval(inner, scope, env)? {
            Value::Int(n) => checked(n.checked_neg()).map(Value::Int),
            Value::Float(f) => Ok(Value::Float(-f)),
            other => error(format!("cannot negate a {}", other.type_name())),
        },
        ExprKind::Binary(BinaryOp::Or, left, right) => {
            logical(eval(left, scope, env), || eval(right, scope, env), true)
        }
        ExprKind::Binary(BinaryOp::And, left, right) => {
            logical(eval(left, scope, env), || eval(right, scope, env), false)
        }
        ExprKind::Binary(BinaryOp::Compare(op @ (CompareOp::Eq | CompareOp::Ne)), left, right) => {
            let equal = eval_cow(left, scope, env)?.equals(eval_cow(right, scope, env)?.as_ref());
            Ok(Value::Bool(equal == (*op == CompareOp::Eq)))
        }
        ExprKind::Binary(op, left, right) => binary(*op, eval(left, scope, env)?, eval(right, scope, env)?),
        ExprKind::Ternary(condition, then, otherwise) => {
            if as_bool(eval(condition, scope, env))? {
                eval(then, scope, env)
            } else {
                eval(otherwise, scope, env)
            }
        }
        ExprKind::Is(inner, type_name) => Ok(Value::Bool(eval_cow(inner, scope, env)?.is(*type_name))),
    }
}

fn is_namespace(target: &Expr) -> bool {
    matches!(&target.kind, ExprKind::Ident(n) if crate::check::NAMESPACES.iter().any(|(namespace, _)| namespace == n))
}

/// `expr`'s value, borrowed when it is a variable or a member chain on one.
fn eval_cow<'v>(expr: &Expr, scope: &'v Scope, env: &'v Env) -> Result<std::borrow::Cow<'v, Value>, EvalError> {
    match borrowed(expr, scope, env) {
        Some(value) => value.map(std::borrow::Cow::Borrowed),
        None => eval(expr, scope, env).map(std::borrow::Cow::Owned),
    }
}

/// The value of a variable or of a member chain on one, by reference;
/// `None` when the expression is something else (then it is evaluated).
fn borrowed<'v>(expr: &Expr, scope: &'v Scope, env: &'v Env) -> Option<Result<&'v Value, EvalError>> {
    match &expr.kind {
        ExprKind::Ident(name) => Some(match name.as_str() {
            "request" => Ok(env.request()),
            "resource" => Ok(env.resource()),
            _ => scope.vars.get(name).ok_or_else(|| EvalError::Error(format!("unknown name `{name}`"))),
        }),
        ExprKind::Member(target, name) if matches!(&target.kind, ExprKind::Ident(r) if r == "request") => {
            Some(env.request_member(name).ok_or_else(|| EvalError::Error(format!("no field `{name}`"))))
        }
        ExprKind::Member(target, name) => Some(borrowed(target, scope, env)?.and_then(|value| match value {
            Value::Map(map) => map.get(name).ok_or_else(|| EvalError::Error(format!("no field `{name}`"))),
            Value::Null => Err(EvalError::Error(format!("`{name}` of null"))),
            other => Err(EvalError::Error(format!("a {} has no field `{name}`", other.type_name()))),
        })),
        _ => None,
    }
}

/// `||` (`short = true`) and `&&` (`short = false`) with errors as values:
/// a side equal to `short` decides, whatever the other side is.
fn logical(left: Eval, right: impl FnOnce() -> Eval, short: bool) -> Eval {
    let left = as_bool(left);
    if left == Ok(short) {
        return Ok(Value::Bool(short));
    }
    let right = as_bool(right());
    match (left, right) {
        (_, Ok(r)) if r == short => Ok(Value::Bool(short)),
        (Ok(_), Ok(_)) => Ok(Value::Bool(!short)),
        (Err(EvalError::NeedDocument(p)), _) | (_, Err(EvalError::NeedDocument(p))) => Err(EvalError::NeedDocument(p)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

fn member(target: Value, name: &str) -> Eval {
    match target {
        Value::Map(mut map) => map.remove(name).map_or_else(|| error(format!("no field `{name}`")), Ok),
        Value::Null => error(format!("`{name}` of null")),
        other => error(format!("a {} has no field `{name}`", other.type_name())),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn binary(op: BinaryOp, left: Value, right: Value) -> Eval {
    use std::cmp::Ordering;
    let compare = |left: &Value, right: &Value| -> Result<Ordering, EvalError> {
        let ordering = match (left, right) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) | (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
            (a, b) => match (number(a), number(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => None,
            },
        };
        ordering
            .map_or_else(|| error(format!("cannot compare a {} with a {}", left.type_name(), right.type_name())), Ok)
    };
    Ok(match op {
        BinaryOp::Compare(CompareOp::Eq) => Value::Bool(left.equals(&right)),
        BinaryOp::Compare(CompareOp::Ne) => Value::Bool(!left.equals(&right)),
        BinaryOp::Compare(CompareOp::Lt) => Value::Bool(compare(&left, &right)? == Ordering::Less),
        BinaryOp::Compare(CompareOp::Le) => Value::Bool(compare(&left, &right)? != Ordering::Greater),
        BinaryOp::Compare(CompareOp::Gt) => Value::Bool(compare(&left, &right)? == Ordering::Greater),
        BinaryOp::Compare(CompareOp::Ge) => Value::Bool(compare(&left, &right)? != Ordering::Less),
        BinaryOp::In => match right {
            Value::List(items) => Value::Bool(items.iter().any(|i| i.equals(&left))),
            Value::Map(map) => match left {
                Value::Str(key) => Value::Bool(map.contains_key(&key)),
                other => return error(format!("map keys are strings, not a {}", other.type_name())),
            },
            other => return error(format!("`in` needs a list or a map, not a {}", other.type_name())),
        },
        BinaryOp::Add => match (left, right) {
            (Value::Int(a), Value::Int(b)) => Value::Int(checked(a.checked_add(b))?),
            (Value::Str(a), Value::Str(b)) => Value::Str(a + &b),
            (Value::List(mut a), Value::List(b)) => {
                a.extend(b);
                Value::List(a)
            }
            (Value::Timestamp(t), Value::Duration(d)) | (Value::Duration(d), Value::Timestamp(t)) => {
                Value::Timestamp(checked(t.checked_add(d))?)
            }
            (Value::Duration(a), Value::Duration(b)) => Value::Duration(checked(a.checked_add(b))?),
            (a, b) => arithmetic(op, &a, &b)?,
        },
        BinaryOp::Sub => match (left, right) {
            (Value::Int(a), Value::Int(b)) => Value::Int(checked(a.checked_sub(b))?),
            (Value::Timestamp(t), Value::Duration(d)) => Value::Timestamp(checked(t.checked_sub(d))?),
            (Value::Timestamp(a), Value::Timestamp(b)) => Value::Duration(checked(a.checked_sub(b))?),
            (Value::Duration(a), Value::Duration(b)) => Value::Duration(checked(a.checked_sub(b))?),
            (a, b) => arithmetic(op, &a, &b)?,
        },
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => match (&left, &right) {
            (Value::Int(_), Value::Int(0)) if op != BinaryOp::Mul => return error("division by zero"),
            (Value::Int(a), Value::Int(b)) => Value::Int(checked(match op {
                BinaryOp::Mul => a.checked_mul(*b),
                BinaryOp::Div => a.checked_div(*b),
                _ => a.checked_rem(*b),
            })?),
            _ => arithmetic(op, &left, &right)?,
        },
        BinaryOp::Or | BinaryOp::And => return error("logical operators are evaluated lazily"),
    })
}

fn arithmetic(op: BinaryOp, left: &Value, right: &Value) -> Eval {
    let (Some(a), Some(b)) = (number(left), number(right)) else {
        return error(format!("cannot apply {op:?} to a {} and a {}", left.type_name(), right.type_name()));
    };
    Ok(Value::Float(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if b == 0.0 => return error("division by zero"),
        BinaryOp::Div => a / b,
        _ => a % b,
    }))
}

/// Strips the Firestore prefix `databases/<db>/documents/` from a path.
pub fn document_path(segments: &[String]) -> String {
    let rest = match segments {
        [first, _, third, rest @ ..] if first == "databases" && third == "documents" => rest,
        all => all,
    };
    rest.join("/")
}

fn call(name: &str, args: &[Expr], scope: &Scope, env: &Env) -> Eval {
    let values = || args.iter().map(|a| eval(a, scope, env)).collect::<Result<Vec<_>, _>>();
    match name {
        "get" | "exists" | "getAfter" | "existsAfter" => {
            let [path] = values()?.try_into().map_err(|_| EvalError::Error(format!("{name}() takes one path")))?;
            let Value::Path(segments) = path else {
                return error(format!("{name}() takes a path, not a {}", path.type_name()));
            };
            let path = document_path(&segments);
            let found =
                if name.ends_with("After") { env.lookup.document_after(&path) } else { env.lookup.document(&path) };
            match found {
                None => Err(EvalError::NeedDocument(path)),
                Some(found) if name.starts_with("exists") => Ok(Value::Bool(found.is_some())),
                Some(None) => error(format!("{name}() of a missing document {path}")),
                Some(Some(data)) => Ok(resource_value(&path, data)),
            }
        }
        "debug" => values()?.into_iter().next().map_or_else(|| error("debug() takes one value"), Ok),
        "string" | "int" | "float" => {
            let [value] = values()?.try_into().map_err(|_| EvalError::Error(format!("{name}() takes one value")))?;
            crate::methods::convert(name, value)
        }
        "path" => match values()?.as_slice() {
            [Value::Str(s)] => Ok(Value::Path(s.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect())),
            _ => error("path() takes one string"),
        },
        _ => call_function(name, values()?, scope, env),
    }
}

fn call_function(name: &str, args: Vec<Value>, scope: &Scope, env: &Env) -> Eval {
    let Some(function) = scope.function(name) else {
        return error(format!("unknown function `{name}`"));
    };
    if function.params.len() != args.len() {
        return error(format!("`{name}` takes {} arguments, got {}", function.params.len(), args.len()));
    }
    if env.depth.get() >= MAX_CALL_DEPTH {
        return error("functions nest too deeply");
    }
    env.depth.set(env.depth.get() + 1);
    let mut vars = scope.vars.clone();
    vars.extend(function.params.iter().cloned().zip(args));
    let mut inner = Scope { vars, functions: scope.functions.clone() };
    let result = (|| {
        for (name, expr) in &function.lets {
            let value = eval(expr, &inner, env)?;
            inner.vars.insert(name.clone(), value);
        }
        eval(&function.body, &inner, env)
    })();
    env.depth.set(env.depth.get() - 1);
    result
}

/// `{data, id, __name__}` of a document, as `resource` and `get()` show it.
pub fn resource_value(path: &str, data: &serde_json::Value) -> Value {
    let id = path.rsplit('/').next().unwrap_or(path).to_owned();
    let mut map = BTreeMap::new();
    map.insert("data".to_owned(), Value::from_json(data));
    map.insert("id".to_owned(), Value::Str(id));
    map.insert("__name__".to_owned(), Value::Path(path.split('/').map(str::to_owned).collect()));
    Value::Map(map)
}
