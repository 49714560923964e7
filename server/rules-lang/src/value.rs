//! Runtime values of the rules language and their conversion from JSON
//! (`{"$timestamp": "…"}` is a timestamp, as on the wire).

use std::collections::BTreeMap;

use crate::ast::TypeName;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    /// A document path, as segments.
    Path(Vec<String>),
    /// Microseconds since the Unix epoch.
    Timestamp(i64),
    /// Microseconds.
    Duration(i64),
    /// The result of `a.diff(b)`.
    MapDiff(Box<(BTreeMap<String, Value>, BTreeMap<String, Value>)>),
}

impl Value {
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(map) => match crate::time::from_json(json) {
                Some(micros) => Value::Timestamp(micros),
                None => Value::Map(map.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect()),
            },
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Path(_) => "path",
            Value::Timestamp(_) => "timestamp",
            Value::Duration(_) => "duration",
            Value::MapDiff(_) => "map diff",
        }
    }

    pub fn is(&self, type_name: TypeName) -> bool {
        matches!(
            (type_name, self),
            (TypeName::String, Value::Str(_))
                | (TypeName::Int, Value::Int(_))
                | (TypeName::Float, Value::Float(_))
                | (TypeName::Number, Value::Int(_) | Value::Float(_))
                | (TypeName::Bool, Value::Bool(_))
                | (TypeName::Map, Value::Map(_))
                | (TypeName::List, Value::List(_))
                | (TypeName::Timestamp, Value::Timestamp(_))
                | (TypeName::Duration, Value::Duration(_))
                | (TypeName::Path, Value::Path(_))
                | (TypeName::Null, Value::Null)
        )
    }

    /// Equality as the rules language defines it: ints and floats compare numerically.
    pub fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
            (Value::List(a), Value::List(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equals(y)),
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.equals(w)))
            }
            _ => self == other,
        }
    }
}
