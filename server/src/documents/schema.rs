//! Optional JSON Schemas per collection pattern (`products`,
//! `rooms/*/messages`), from `nimbus.toml`. Checked against the document as it
//! will be stored (after merges and transforms), inside the commit.

use std::sync::Arc;

use serde_json::Value;

use super::path::CollectionPath;

struct CollectionSchema {
    pattern: Vec<String>,
    validator: jsonschema::Validator,
}

/// The compiled schemas; cheap to clone.
#[derive(Clone, Default)]
pub struct Schemas(Arc<Vec<CollectionSchema>>);

impl Schemas {
    /// Compiles every schema; the error names the pattern.
    pub fn compile(schemas: &[(String, Value)]) -> Result<Schemas, String> {
        let compiled = schemas
            .iter()
            .map(|(pattern, schema)| {
                CollectionPath::parse(&pattern.replace('*', "x"))
                    .map_err(|e| format!("nimbus.toml: schemas.{pattern}: not a collection pattern ({})", e.0))?;
                let validator = jsonschema::validator_for(schema)
                    .map_err(|e| format!("nimbus.toml: schemas.{pattern}: invalid JSON Schema: {e}"))?;
                let pattern = pattern.trim_matches('/').split('/').map(str::to_owned).collect();
                Ok(CollectionSchema { pattern, validator })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Schemas(Arc::new(compiled)))
    }

    /// Checks `data` against the first schema whose pattern matches the
    /// collection; the message names the failing field.
    pub fn check(&self, collection: &str, data: &Value) -> Result<(), String> {
        let segments: Vec<&str> = collection.split('/').collect();
        let Some(schema) = self.0.iter().find(|s| matches(&s.pattern, &segments)) else {
            return Ok(());
        };
        match schema.validator.iter_errors(data).next() {
            None => Ok(()),
            Some(error) => Err(violation(&error, "document", "the collection schema")),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `collection` is one of the collections `pattern` (`rooms/*/messages`) names.
pub fn pattern_matches(pattern: &str, collection: &str) -> bool {
    let pattern: Vec<String> = pattern.trim_matches('/').split('/').map(str::to_owned).collect();
    matches(&pattern, &collection.split('/').collect::<Vec<_>>())
}

fn matches(pattern: &[String], segments: &[&str]) -> bool {
    pattern.len() == segments.len() && pattern.iter().zip(segments).all(|(p, s)| p == "*" || p == s)
}

/// A schema violation as a client may see it: the field (or `whole` for the
/// root) and what is wrong, with the client's own values masked — they may be
/// secrets, and the client knows what it sent.
pub fn violation(error: &jsonschema::ValidationError<'_>, whole: &str, schema: &str) -> String {
    let at = error.instance_path.to_string();
    let field = if at.is_empty() {
        whole.to_owned()
    } else {
        format!("field `{}`", at.trim_start_matches('/').replace('/', "."))
    };
    format!("{field} does not match {schema}: {}", error.masked())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_matching_schema_names_the_failing_field() {
        let schemas = Schemas::compile(&[(
            "rooms/*/messages".into(),
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        )])
        .unwrap();
        assert!(schemas.check("rooms/r1/messages", &json!({"text": "hi"})).is_ok());
        let err = schemas.check("rooms/r1/messages", &json!({"text": 5})).unwrap_err();
        assert!(err.starts_with("field `text`"), "{err}");
        let secret = schemas.check("rooms/r1/messages", &json!({"text": {"password": "hunter2"}})).unwrap_err();
        assert!(!secret.contains("hunter2"), "client values are masked: {secret}");
        assert!(schemas.check("rooms", &json!({"text": 5})).is_ok());
    }
}
