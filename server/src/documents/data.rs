//! Document data: validation at the edge (an object, depth, field names,
//! transform syntax, typed values) and, inside the commit, resolving field
//! transforms and merges against the current data. Transforms are one-key
//! objects: `{"$serverTimestamp": true}`, `{"$increment": n}`,
//! `{"$arrayUnion": [..]}`, `{"$arrayRemove": [..]}`, `{"$delete": true}`
//! (merge only). A timestamp is the typed value `{"$timestamp": "<RFC 3339>"}`,
//! stored in its canonical text (UTC, six fraction digits) so it sorts in
//! time order.

use nimbus_rules_lang::time::{self, TIMESTAMP_KEY};
use serde_json::{Map, Value};

/// Limits on one document's data.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits { max_bytes: 1024 * 1024, max_depth: 64 }
    }
}

pub const MAX_FIELD_NAME_BYTES: usize = 1500;

/// How incoming data combines with the stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The data becomes the whole document.
    Replace,
    /// Nested objects merge into the stored data; other values replace.
    Merge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transform {
    ServerTimestamp,
    Increment,
    ArrayUnion,
    ArrayRemove,
    Delete,
}

fn transform_of(object: &Map<String, Value>) -> Option<(Transform, &Value)> {
    if object.len() != 1 {
        return None;
    }
    let (key, arg) = object.iter().next()?;
    let transform = match key.as_str() {
        "$serverTimestamp" => Transform::ServerTimestamp,
        "$increment" => Transform::Increment,
        "$arrayUnion" => Transform::ArrayUnion,
        "$arrayRemove" => Transform::ArrayRemove,
        "$delete" => Transform::Delete,
        _ => return None,
    };
    Some((transform, arg))
}

/// Checks incoming data; the message names the offending field.
pub fn validate(data: &Value, mode: Mode, limits: DataLimits) -> Result<(), String> {
    let Value::Object(fields) = data else {
        return Err("`data` must be a JSON object".into());
    };
    validate_fields(fields, mode, limits, 1, &mut Vec::new())
}

fn validate_fields(
    fields: &Map<String, Value>,
    mode: Mode,
    limits: DataLimits,
    depth: usize,
    path: &mut Vec<String>,
) -> Result<(), String> {
    for (name, value) in fields {
        path.push(name.clone());
        let at = || path.join(".");
        if name.is_empty() || name.len() > MAX_FIELD_NAME_BYTES {
            return Err(format!("field `{}`: names must be 1 to {MAX_FIELD_NAME_BYTES} bytes", at()));
        }
        if name.starts_with('$') {
            return Err(format!("field `{}`: names starting with `$` are reserved for transforms", at()));
        }
        if name.contains('\0') {
            return Err(format!("field `{}`: names may not contain the NUL character (\\u0000)", at()));
        }
        validate_value(value, mode, limits, depth + 1, path, true)?;
        path.pop();
    }
    Ok(())
}

fn validate_value(
    value: &Value,
    mode: Mode,
    limits: DataLimits,
    depth: usize,
    path: &mut Vec<String>,
    transforms_allowed: bool,
) -> Result<(), String> {
    if depth > limits.max_depth {
        return Err(format!("field `{}`: nested deeper than {} levels", path.join("."), limits.max_depth));
    }
    match value {
        Value::Object(object) if object.contains_key(TIMESTAMP_KEY) => match time::from_json(value) {
            Some(_) => Ok(()),
            None => Err(format!(
                "field `{}`: `$timestamp` takes one RFC 3339 date-time string, years 1 to 9999 (e.g. \"2026-01-02T03:04:05Z\")",
                path.join(".")
            )),
        },
        Value::Object(object) => {
            if let Some(first) = object.keys().next().filter(|k| k.starts_with('$')) {
                let Some((transform, arg)) = transform_of(object) else {
                    return Err(format!("field `{}`: unknown transform `{first}`", path.join(".")));
                };
                if !transforms_allowed {
                    return Err(format!("field `{}`: transforms are not allowed inside arrays", path.join(".")));
                }
                return check_transform(transform, arg, mode, limits, depth, path);
            }
            validate_fields(object, mode, limits, depth, path)
        }
        Value::Array(items) => {
            for item in items {
                validate_value(item, mode, limits, depth + 1, path, false)?;
            }
            Ok(())
        }
        Value::String(text) if text.contains('\0') => {
            Err(format!("field `{}`: strings may not contain the NUL character (\\u0000)", path.join(".")))
        }
        _ => Ok(()),
    }
}

fn check_transform(
    transform: Transform,
    arg: &Value,
    mode: Mode,
    limits: DataLimits,
    depth: usize,
    path: &mut Vec<String>,
) -> Result<(), String> {
    let at = path.join(".");
    match transform {
        Transform::ServerTimestamp | Transform::Delete if arg != &Value::Bool(true) => {
            Err(format!("field `{at}`: this transform takes `true`"))
        }
        Transform::Delete if mode == Mode::Replace => {
            Err(format!("field `{at}`: `$delete` is only allowed when merging (PATCH or update)"))
        }
        Transform::Increment if !arg.is_number() => Err(format!("field `{at}`: `$increment` takes a number")),
        Transform::ArrayUnion | Transform::ArrayRemove => match arg {
            Value::Array(items) => {
                for item in items {
                    validate_value(item, mode, limits, depth + 1, path, false)?;
                }
                Ok(())
            }
            _ => Err(format!("field `{at}`: this transform takes an array")),
        },
        _ => Ok(()),
    }
}

/// The document data after this write: `incoming` (already validated)
/// combined with `current` by `mode`, transforms resolved at `now_text`.
/// Fails (with the field named) only when a transform has no representable
/// result, such as an `$increment` beyond the largest double.
/// `now` is the commit time (what `$serverTimestamp` becomes).
pub fn resolve(current: Option<Value>, incoming: &Value, mode: Mode, now: i64) -> Result<Value, String> {
    let base = match (mode, current) {
        (Mode::Merge, Some(Value::Object(map))) => map,
        _ => Map::new(),
    };
    match incoming {
        Value::Object(fields) => Ok(Value::Object(merge_into(base, fields, now, "")?)),
        _ => Ok(Value::Object(base)),
    }
}

/// `value` with every timestamp in its canonical text (validated before).
fn canonical(value: &Value) -> Value {
    if let Some(micros) = time::from_json(value) {
        return time::to_json(micros);
    }
    match value {
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// `prefix` is the dotted path of `base` (`""` at the top), for messages.
fn merge_into(
    mut base: Map<String, Value>,
    fields: &Map<String, Value>,
    now: i64,
    prefix: &str,
) -> Result<Map<String, Value>, String> {
    for (name, value) in fields {
        let at = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let current = base.remove(name);
        if let Some(next) = resolve_value(current, value, now, &at)? {
            base.insert(name.clone(), next);
        }
    }
    Ok(base)
}

/// The new value of the field at `at`, or `None` to delete it.
fn resolve_value(current: Option<Value>, incoming: &Value, now: i64, at: &str) -> Result<Option<Value>, String> {
    let Value::Object(object) = incoming else {
        return Ok(Some(canonical(incoming)));
    };
    if let Some(micros) = time::from_json(incoming) {
        return Ok(Some(time::to_json(micros)));
    }
    if let Some((transform, arg)) = transform_of(object) {
        return apply_transform(transform, arg, current, now).map_err(|problem| format!("field `{at}`: {problem}"));
    }
    let base = match current {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Some(Value::Object(merge_into(base, object, now, at)?)))
}

fn apply_transform(
    transform: Transform,
    arg: &Value,
    current: Option<Value>,
    now: i64,
) -> Result<Option<Value>, String> {
    Ok(match transform {
        Transform::Delete => None,
        Transform::ServerTimestamp => Some(time::to_json(now)),
        Transform::Increment => Some(increment(current.as_ref(), arg)?),
        Transform::ArrayUnion => {
            let mut items = match current {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for item in arg.as_array().into_iter().flatten().map(canonical) {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            Some(Value::Array(items))
        }
        Transform::ArrayRemove => {
            let remove: Vec<Value> = arg.as_array().into_iter().flatten().map(canonical).collect();
            let items = match current {
                Some(Value::Array(items)) => items.into_iter().filter(|i| !remove.contains(i)).collect(),
                _ => Vec::new(),
            };
            Some(Value::Array(items))
        }
    })
}

/// Integer arithmetic while both sides are integers, floating point otherwise;
/// a missing or non-numeric field counts as 0. A sum beyond the doubles'
/// range is refused rather than stored as null.
fn increment(current: Option<&Value>, by: &Value) -> Result<Value, String> {
    let current = current.filter(|v| v.is_number()).cloned().unwrap_or(Value::from(0));
    if let (Some(a), Some(b)) = (current.as_i64(), by.as_i64()) {
        if let Some(sum) = a.checked_add(b) {
            return Ok(Value::from(sum));
        }
    }
    let sum = current.as_f64().unwrap_or(0.0) + by.as_f64().unwrap_or(0.0);
    serde_json::Number::from_f64(sum)
        .filter(|n| n.as_f64().is_some_and(f64::is_finite))
        .map(Value::Number)
        .ok_or_else(|| "`$increment` overflows the largest number a document can hold".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-01-01T00:00:00Z.
    const NOW: i64 = 1_767_225_600_000_000;

    #[test]
    fn merge_keeps_untouched_fields_and_merges_nested_objects() {
        let current = json!({"a": 1, "dims": {"w": 1, "h": 2}, "tags": ["x"]});
        let patch = json!({"dims": {"w": 5}, "b": null, "tags": {"$arrayUnion": ["x", "y"]}, "a": {"$delete": true}});
        let merged = resolve(Some(current), &patch, Mode::Merge, NOW).unwrap();
        assert_eq!(merged, json!({"dims": {"w": 5, "h": 2}, "b": null, "tags": ["x", "y"]}));
    }

    #[test]
    fn transforms_resolve_against_current_values() {
        let current = json!({"n": 41, "f": 1.5, "s": "x", "arr": [1, 2, 1]});
        let patch = json!({
            "n": {"$increment": 1}, "f": {"$increment": 1}, "s": {"$increment": 2},
            "arr": {"$arrayRemove": [1]}, "at": {"$serverTimestamp": true}
        });
        let merged = resolve(Some(current), &patch, Mode::Merge, NOW).unwrap();
        assert_eq!(
            merged,
            json!({"n": 42, "f": 2.5, "s": 2, "arr": [2], "at": {"$timestamp": "2026-01-01T00:00:00.000000Z"}})
        );
    }

    #[test]
    fn replace_ignores_current_data() {
        let replaced =
            resolve(Some(json!({"old": 1})), &json!({"new": {"$increment": 3}}), Mode::Replace, NOW).unwrap();
        assert_eq!(replaced, json!({"new": 3}));
    }

    #[test]
    fn an_increment_past_the_largest_double_is_refused() {
        let current = json!({"a": {"n": 1.7e308}});
        let error =
            resolve(Some(current), &json!({"a": {"n": {"$increment": 1.7e308}}}), Mode::Merge, NOW).unwrap_err();
        assert_eq!(error, "field `a.n`: `$increment` overflows the largest number a document can hold");
        let ints = resolve(Some(json!({"n": i64::MAX})), &json!({"n": {"$increment": 1}}), Mode::Merge, NOW);
        assert_eq!(ints.unwrap(), json!({"n": 9.223372036854776e18}));
    }

    #[test]
    fn timestamps_are_typed_values_stored_canonically() {
        let limits = DataLimits::default();
        let data = json!({"at": {"$timestamp": "2026-01-02T04:04:05.5+01:00"}, "list": [{"$timestamp": "2026-01-02T03:04:05Z"}]});
        assert_eq!(validate(&data, Mode::Replace, limits), Ok(()));
        let stored = resolve(None, &data, Mode::Replace, NOW).unwrap();
        assert_eq!(
            stored,
            json!({"at": {"$timestamp": "2026-01-02T03:04:05.500000Z"}, "list": [{"$timestamp": "2026-01-02T03:04:05.000000Z"}]})
        );
        for bad in [
            json!({"$timestamp": "yesterday"}),
            json!({"$timestamp": 5}),
            json!({"$timestamp": "2026-01-02T03:04:05Z", "x": 1}),
        ] {
            let err = validate(&json!({ "at": bad }), Mode::Replace, limits).unwrap_err();
            assert!(err.starts_with("field `at`: `$timestamp` takes"), "{err}");
        }
    }

    #[test]
    fn nul_characters_are_refused() {
        let limits = DataLimits::default();
        let err = validate(&json!({"a": {"b": "x\u{0}y"}}), Mode::Replace, limits).unwrap_err();
        assert!(err.starts_with("field `a.b`: strings may not contain"), "{err}");
        assert!(validate(&json!({"a\u{0}": 1}), Mode::Replace, limits).is_err());
        assert!(validate(&json!({"a": ["\u{0}"]}), Mode::Replace, limits).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let limits = DataLimits::default();
        assert!(validate(&json!([1]), Mode::Replace, limits).unwrap_err().contains("object"));
        let err = validate(&json!({"a": {"$bogus": 1}}), Mode::Merge, limits).unwrap_err();
        assert_eq!(err, "field `a`: unknown transform `$bogus`");
        let err = validate(&json!({"a": {"$delete": true}}), Mode::Replace, limits).unwrap_err();
        assert!(err.contains("only allowed when merging"));
        let err = validate(&json!({"a": [{"$increment": 1}]}), Mode::Merge, limits).unwrap_err();
        assert!(err.contains("inside arrays"));
        let deep = (0..70).fold(json!(1), |v, _| json!({ "x": v }));
        assert!(validate(&deep, Mode::Replace, limits).unwrap_err().contains("deeper than 64"));
        assert!(validate(&json!({"": 1}), Mode::Replace, limits).is_err());
    }
}
