//! Methods on values (`s.size()`, `list.hasAll(...)`, `map.diff(...)`, …) and
//! the conversion functions `string()`, `int()`, `float()`.

use std::collections::BTreeMap;

use crate::error::{Eval, EvalError};
use crate::value::Value;

/// Every method name the language knows; anything else fails to load.
pub const METHODS: &[&str] = &[
    "size",
    "matches",
    "lower",
    "upper",
    "trim",
    "split",
    "replace",
    "hasAll",
    "hasAny",
    "hasOnly",
    "join",
    "toSet",
    "concat",
    "keys",
    "values",
    "get",
    "diff",
    "addedKeys",
    "removedKeys",
    "changedKeys",
    "unchangedKeys",
    "affectedKeys",
    "toMillis",
    "union",
    "difference",
    "intersection",
    "contains",
    "removeAll",
    "year",
    "month",
    "day",
    "hours",
    "minutes",
    "seconds",
    "nanos",
    "date",
];

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// `duration.value(n, unit)`, `timestamp.value(epochMillis)`, `timestamp.date(y, m, d)`.
pub fn call_namespace(namespace: &str, function: &str, args: Vec<Value>) -> Eval {
    match (namespace, function, args.as_slice()) {
        ("duration", "value", [Value::Int(n), Value::Str(unit)]) => {
            let micros_per_unit: i64 = match unit.as_str() {
                "w" => 7 * MICROS_PER_DAY,
                "d" => MICROS_PER_DAY,
                "h" => 3_600_000_000,
                "m" => 60_000_000,
                "s" => 1_000_000,
                "ms" => 1_000,
                "ns" => return Ok(Value::Duration(n / 1000)),
                other => return error(format!("unknown duration unit {other:?} (w, d, h, m, s, ms, ns)")),
            };
            n.checked_mul(micros_per_unit).map(Value::Duration).map_or_else(|| error("duration out of range"), Ok)
        }
        ("timestamp", "value", [Value::Int(millis)]) => {
            millis.checked_mul(1000).map(Value::Timestamp).map_or_else(|| error("timestamp out of range"), Ok)
        }
        ("timestamp", "date", [Value::Int(y), Value::Int(m), Value::Int(d)]) => {
            if !(1..=9999).contains(y) || !(1..=12).contains(m) || !(1..=31).contains(d) {
                return error("timestamp.date(year, month, day) needs a valid date in years 1 to 9999");
            }
            Ok(Value::Timestamp(crate::error::checked(
                crate::time::days_from_civil(*y, *m, *d).checked_mul(MICROS_PER_DAY),
            )?))
        }
        ("math", _, _) => math(function, &args),
        _ => error(format!("{namespace}.{function}() does not take these arguments")),
    }
}

/// `math.abs`, `ceil`, `floor`, `round` (to integers), `sqrt`, `pow` (floats),
/// `isInfinite`, `isNaN`, as in Firestore rules.
fn math(function: &str, args: &[Value]) -> Eval {
    let number = |v: &Value| match v {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    };
    let to_int = |f: f64| {
        // Out of the integer range (or NaN): an error, as any overflow.
        if f.is_finite() && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            Ok(Value::Int(f as i64))
        } else {
            error(format!("math.{function}() is outside the integer range"))
        }
    };
    match (function, args) {
        ("abs", [Value::Int(n)]) => crate::error::checked(n.checked_abs()).map(Value::Int),
        ("abs", [Value::Float(f)]) => Ok(Value::Float(f.abs())),
        ("ceil" | "floor" | "round", [Value::Int(n)]) => Ok(Value::Int(*n)),
        ("ceil", [Value::Float(f)]) => to_int(f.ceil()),
        ("floor", [Value::Float(f)]) => to_int(f.floor()),
        ("round", [Value::Float(f)]) => to_int(f.round()),
        ("sqrt", [x]) if number(x).is_some() => Ok(Value::Float(number(x).unwrap_or_default().sqrt())),
        ("pow", [base, exponent]) if number(base).is_some() && number(exponent).is_some() => {
            Ok(Value::Float(number(base).unwrap_or_default().powf(number(exponent).unwrap_or_default())))
        }
        ("isInfinite", [x]) if number(x).is_some() => Ok(Value::Bool(number(x).unwrap_or_default().is_infinite())),
        ("isNaN", [x]) if number(x).is_some() => Ok(Value::Bool(number(x).unwrap_or_default().is_nan())),
        _ => error(format!("math.{function}() takes numbers")),
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::Error(message.into()))
}

fn list_arg(args: &[Value], method: &str) -> Result<Vec<Value>, EvalError> {
    match args {
        [Value::List(items)] => Ok(items.clone()),
        _ => error(format!("{method}() takes one list")),
    }
}

fn str_arg<'a>(args: &'a [Value], index: usize, method: &str) -> Result<&'a str, EvalError> {
    match args.get(index) {
        Some(Value::Str(s)) => Ok(s),
        _ => error(format!("{method}() takes a string argument")),
    }
}

fn contains(items: &[Value], value: &Value) -> bool {
    items.iter().any(|i| i.equals(value))
}

fn dedupe(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for item in items {
        if !contains(&out, &item) {
            out.push(item);
        }
    }
    out
}

fn keys(map: &BTreeMap<String, Value>, filter: impl Fn(&str) -> bool) -> Value {
    Value::List(map.keys().filter(|k| filter(k)).map(|k| Value::Str(k.clone())).collect())
}

fn regex(pattern: &str) -> Result<regex::Regex, EvalError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| EvalError::Error(format!("invalid regular expression: {e}")))
}

pub fn call_method(target: Value, method: &str, args: Vec<Value>) -> Eval {
    let no_args =
        |value: Value| if args.is_empty() { Ok(value) } else { error(format!("{method}() takes no arguments")) };
    match (target, method) {
        (Value::Str(s), "size") => no_args(Value::Int(s.chars().count() as i64)),
        (Value::Str(s), "lower") => no_args(Value::Str(s.to_lowercase())),
        (Value::Str(s), "upper") => no_args(Value::Str(s.to_uppercase())),
        (Value::Str(s), "trim") => no_args(Value::Str(s.trim().to_owned())),
        (Value::Str(s), "matches") => Ok(Value::Bool(regex(str_arg(&args, 0, method)?)?.is_match(&s))),
        (Value::Str(s), "split") => {
            let pattern = regex::Regex::new(str_arg(&args, 0, method)?)
                .map_err(|e| EvalError::Error(format!("invalid regular expression: {e}")))?;
            Ok(Value::List(pattern.split(&s).map(|p| Value::Str(p.to_owned())).collect()))
        }
        (Value::Str(s), "replace") => {
            let pattern = regex::Regex::new(str_arg(&args, 0, method)?)
                .map_err(|e| EvalError::Error(format!("invalid regular expression: {e}")))?;
            Ok(Value::Str(pattern.replace_all(&s, str_arg(&args, 1, method)?).into_owned()))
        }
        (Value::List(items), "size") => no_args(Value::Int(items.len() as i64)),
        (Value::List(items), "hasAll") => Ok(Value::Bool(list_arg(&args, method)?.iter().all(|v| contains(&items, v)))),
        (Value::List(items), "hasAny") => Ok(Value::Bool(list_arg(&args, method)?.iter().any(|v| contains(&items, v)))),
        (Value::List(items), "hasOnly") => {
            let allowed = list_arg(&args, method)?;
            Ok(Value::Bool(items.iter().all(|v| contains(&allowed, v))))
        }
        (Value::List(items), "toSet") => no_args(Value::List(dedupe(items))),
        (Value::List(mut items), "concat") => {
            items.extend(list_arg(&args, method)?);
            Ok(Value::List(items))
        }
        (Value::List(mut items), "union") => {
            items.extend(list_arg(&args, method)?);
            Ok(Value::List(dedupe(items)))
        }
        (Value::List(items), "difference" | "removeAll") => {
            let other = list_arg(&args, method)?;
            Ok(Value::List(items.into_iter().filter(|v| !contains(&other, v)).collect()))
        }
        (Value::List(items), "intersection") => {
            let other = list_arg(&args, method)?;
            Ok(Value::List(dedupe(items.into_iter().filter(|v| contains(&other, v)).collect())))
        }
        (Value::List(items), "join") => {
            let separator = str_arg(&args, 0, method)?;
            let parts: Result<Vec<String>, EvalError> = items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    other => error(format!("join() needs strings, found a {}", other.type_name())),
                })
                .collect();
            Ok(Value::Str(parts?.join(separator)))
        }
        (Value::Map(map), "size") => no_args(Value::Int(map.len() as i64)),
        (Value::Map(map), "keys") => no_args(keys(&map, |_| true)),
        (Value::Map(map), "values") => no_args(Value::List(map.into_values().collect())),
        (Value::Map(map), "get") => {
            let default =
                args.get(1).cloned().ok_or_else(|| EvalError::Error("get() takes a key and a default".into()))?;
            let path: Vec<String> = match &args[0] {
                Value::Str(key) => vec![key.clone()],
                Value::List(keys) => {
                    keys.iter().filter_map(|k| if let Value::Str(s) = k { Some(s.clone()) } else { None }).collect()
                }
                other => return error(format!("get() keys are strings, not a {}", other.type_name())),
            };
            let mut current = Value::Map(map);
            for key in path {
                current = match current {
                    Value::Map(mut m) => match m.remove(&key) {
                        Some(v) => v,
                        None => return Ok(default),
                    },
                    _ => return Ok(default),
                };
            }
            Ok(current)
        }
        (Value::Map(map), "diff") => match args.into_iter().next() {
            Some(Value::Map(other)) => Ok(Value::MapDiff(Box::new((map, other)))),
            _ => error("diff() takes a map"),
        },
        (Value::MapDiff(diff), name) if name.ends_with("Keys") => {
            let (left, right) = *diff;
            let changed = |k: &str| left.get(k).zip(right.get(k)).is_some_and(|(a, b)| !a.equals(b));
            Ok(match name {
                "addedKeys" => keys(&right, |k| !left.contains_key(k)),
                "removedKeys" => keys(&left, |k| !right.contains_key(k)),
                "changedKeys" => keys(&left, changed),
                "unchangedKeys" => keys(&left, |k| right.get(k).is_some_and(|b| left[k].equals(b))),
                "affectedKeys" => {
                    let mut all: Vec<Value> = Vec::new();
                    for k in left.keys().chain(right.keys()) {
                        if (!left.contains_key(k) || !right.contains_key(k) || changed(k))
                            && !contains(&all, &Value::Str(k.clone()))
                        {
                            all.push(Value::Str(k.clone()));
                        }
                    }
                    Value::List(all)
                }
                other => return error(format!("a map diff has no method {other}()")),
            })
        }
        (Value::Timestamp(t), "toMillis") => no_args(Value::Int(t.div_euclid(1000))),
        (Value::Timestamp(t), "date") => {
            no_args(Value::Timestamp(crate::error::checked(t.div_euclid(MICROS_PER_DAY).checked_mul(MICROS_PER_DAY))?))
        }
        (Value::Timestamp(t), part @ ("year" | "month" | "day" | "hours" | "minutes" | "seconds")) => {
            let (year, month, day) = crate::time::civil_from_days(t.div_euclid(MICROS_PER_DAY));
            let second_of_day = t.rem_euclid(MICROS_PER_DAY) / 1_000_000;
            no_args(Value::Int(match part {
                "year" => year,
                "month" => month,
                "day" => day,
                "hours" => second_of_day / 3600,
                "minutes" => second_of_day % 3600 / 60,
                _ => second_of_day % 60,
            }))
        }
        (Value::Duration(d), "seconds") => no_args(Value::Int(d.div_euclid(1_000_000))),
        (Value::Duration(d), "nanos") => no_args(Value::Int(d.rem_euclid(1_000_000) * 1000)),
        (target, method) => error(format!("a {} has no method {method}()", target.type_name())),
    }
}

pub fn convert(function: &str, value: Value) -> Eval {
    match (function, value) {
        ("string", Value::Str(s)) => Ok(Value::Str(s)),
        ("string", Value::Int(n)) => Ok(Value::Str(n.to_string())),
        ("string", Value::Float(f)) => Ok(Value::Str(f.to_string())),
        ("string", Value::Bool(b)) => Ok(Value::Str(b.to_string())),
        ("string", Value::Null) => Ok(Value::Str("null".into())),
        ("string", Value::Path(p)) => Ok(Value::Str(p.join("/"))),
        ("int", Value::Int(n)) => Ok(Value::Int(n)),
        ("int", Value::Float(f)) => Ok(Value::Int(f.trunc() as i64)),
        ("int", Value::Str(s)) => {
            s.trim().parse().map(Value::Int).map_err(|_| EvalError::Error("int() of a non-number".into()))
        }
        ("float", Value::Int(n)) => Ok(Value::Float(n as f64)),
        ("float", Value::Float(f)) => Ok(Value::Float(f)),
        ("float", Value::Str(s)) => {
            s.trim().parse().map(Value::Float).map_err(|_| EvalError::Error("float() of a non-number".into()))
        }
        (function, value) => error(format!("{function}() of a {}", value.type_name())),
    }
}
