//! The parameters of `flowkit run`: `-p NAME=VALUE` values read as the deployment's parameter
//! schema says, over those of `--params-file`.
//!
//! A value becomes the JSON it spells when that JSON is of a type the parameter takes
//! (`-p epochs=5` → `5`, `-p tags=["a","b"]` → an array, `-p note=null` for an optional
//! parameter → `null`); otherwise it stays the text it is (`-p dataset=s3://b/x.csv` → a
//! string, `-p name=123` for a string parameter → `"123"`). A value a parameter does not take
//! (`-p epochs=many`) is sent as text too: the server then lists it with every other error, at
//! its pointer.

use flowkit::FieldError;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// How deep `$ref`s, `anyOf`s and `oneOf`s are followed to find a parameter's types.
const MAX_SCHEMA_DEPTH: usize = 16;

/// Largest `--params-file` read: the server's default bound of a request body.
const MAX_PARAMS_FILE: u64 = 8 * 1024 * 1024;

/// `NAME=VALUE` pairs split at the first `=`; a pair without one is an error at its pointer.
pub fn split(pairs: &[String]) -> Result<Vec<(String, String)>, Vec<FieldError>> {
    let mut split = Vec::new();
    let mut errors = Vec::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                split.push((name.trim().to_string(), value.to_string()));
            }
            _ => errors.push(FieldError {
                pointer: String::new(),
                message: format!("-p {pair:?}: give NAME=VALUE, e.g. -p epochs=5"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(split)
    } else {
        Err(errors)
    }
}

/// The JSON object of `--params-file` (`-`: standard input).
pub fn read_file(path: &Path) -> Result<Map<String, Value>, Vec<FieldError>> {
    let fail = |message: String| {
        vec![FieldError {
            pointer: String::new(),
            message: format!("--params-file {}: {message}", path.display()),
        }]
    };
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_PARAMS_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PARAMS_FILE + 1).read_to_string(&mut text))
    };
    read.map_err(|e| fail(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_PARAMS_FILE {
        return Err(fail(format!(
            "larger than {} MiB",
            MAX_PARAMS_FILE / 1024 / 1024
        )));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(fail(
            "holds JSON that is not an object; give {\"NAME\": VALUE, ...}".to_string(),
        )),
        Err(e) => Err(fail(format!("is not JSON: {e}"))),
    }
}

/// `value` of the parameter `name`, read as `schema` (the deployment's parameter schema)
/// says.
pub fn coerce(schema: &Value, name: &str, value: &str) -> Value {
    let property = schema.get("properties").and_then(|p| p.get(name));
    let mut types = BTreeSet::new();
    if let Some(property) = property {
        collect_types(schema, property, 0, &mut types);
    }
    let text = || Value::String(value.to_string());
    let Ok(parsed) = serde_json::from_str::<Value>(value) else {
        return text();
    };
    // No type known (an unknown parameter, or a schema without `type`): JSON when it is JSON.
    if types.is_empty() || types.iter().any(|t| takes(t, &parsed)) {
        parsed
    } else {
        text()
    }
}

/// Whether the JSON Schema type `kind` takes `value`.
fn takes(kind: &str, value: &Value) -> bool {
    match (kind, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_)) => true,
        // A whole-number float counts as an integer, as in JSON Schema.
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// The types `schema` (inside `root`) allows, through `type`, `const`, `enum`, `anyOf`,
/// `oneOf` and local `$ref`s.
fn collect_types(root: &Value, schema: &Value, depth: usize, types: &mut BTreeSet<String>) {
    if depth > MAX_SCHEMA_DEPTH {
        return;
    }
    match schema.get("type") {
        Some(Value::String(t)) => {
            types.insert(t.clone());
        }
        Some(Value::Array(list)) => {
            types.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
        }
        _ => {}
    }
    let values = schema.get("const").into_iter().chain(
        schema
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    );
    for value in values {
        types.insert(json_type(value).to_string());
    }
    for key in ["anyOf", "oneOf"] {
        for member in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_types(root, member, depth + 1, types);
        }
    }
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        collect_types(root, target, depth + 1, types);
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "dataset": {"type": "string"},
                "epochs": {"type": "integer", "minimum": 0},
                "rate": {"type": "number"},
                "verbose": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "config": {"$ref": "#/$defs/Config"},
                "note": {"type": ["string", "null"]},
                "mode": {"enum": ["fast", "slow"]},
                "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]}
            },
            "$defs": {"Config": {"type": "object"}}
        })
    }

    #[test]
    fn values_take_the_parameters_types() {
        let s = schema();
        let cases = [
            ("dataset", "s3://bucket/x.csv", json!("s3://bucket/x.csv")),
            ("dataset", "123", json!("123")),
            ("dataset", "\"quoted\"", json!("quoted")),
            ("dataset", "null", json!("null")),
            ("epochs", "5", json!(5)),
            ("epochs", "50.0", json!(50.0)),
            ("epochs", "many", json!("many")),
            ("rate", "0.01", json!(0.01)),
            ("rate", "1e-3", json!(0.001)),
            ("verbose", "true", json!(true)),
            ("verbose", "yes", json!("yes")),
            ("tags", "[\"a\",\"b\"]", json!(["a", "b"])),
            ("config", "{\"depth\": 3}", json!({"depth": 3})),
            ("note", "null", json!(null)),
            ("note", "hello world", json!("hello world")),
            ("mode", "fast", json!("fast")),
            ("limit", "7", json!(7)),
            ("limit", "null", json!(null)),
            ("unknown", "7", json!(7)),
            ("unknown", "seven", json!("seven")),
        ];
        for (name, raw, expected) in cases {
            assert_eq!(coerce(&s, name, raw), expected, "-p {name}={raw}");
        }
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        let pairs = split(&["a=b=c".to_string(), "empty=".to_string()]).unwrap();
        assert_eq!(
            pairs,
            [("a".into(), "b=c".into()), ("empty".into(), String::new())]
        );
        let errors = split(&["novalue".to_string(), "=x".to_string()]).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].message.contains("NAME=VALUE"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_cyclic_reference_ends() {
        let s = json!({"properties": {"x": {"$ref": "#/properties/x"}}});
        assert_eq!(coerce(&s, "x", "1"), json!(1));
    }
}
