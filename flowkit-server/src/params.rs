//! Deployments' JSON Schemas: compiling a registered schema, checking parameters against it
//! with every error at its JSON pointer, and fingerprints of request bodies.
//!
//! Errors are reported the way a form shows them: one entry per offending property, located
//! by an RFC 6901 pointer into the parameters (`/learning_rate`). A missing required
//! property points at where it is missing (`/dataset`), not at the object that lacks it; an
//! unknown property (refused by `additionalProperties: false`) points at itself.

use flowkit_wire::api::deployments::FieldError;
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Longest message of one error: a message quotes the offending value, which may be large.
const MAX_MESSAGE_CHARS: usize = 300;

/// Compiles a JSON Schema (2020-12 unless the schema's `$schema` names another draft). The
/// schema is checked against its meta-schema; `$ref`s must stay inside the schema (nothing is
/// fetched).
pub(crate) fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| bounded(e.to_string()))
}

/// The most errors listed in one answer; past it, one last entry (at `""`) counts the rest, so
/// a body with a million unknown properties gets a small answer.
pub(crate) const MAX_LISTED_ERRORS: usize = 100;

/// Every error of `instance` against `validator` (up to [`MAX_LISTED_ERRORS`]), each at its
/// pointer under `prefix` (`""` for parameters themselves, `"/default_parameters"` for a
/// registration's defaults). With `partial`, missing required properties of the top-level
/// object are not errors (defaults need not give every parameter).
pub(crate) fn errors(
    validator: &Validator,
    instance: &Value,
    prefix: &str,
    partial: bool,
) -> Vec<FieldError> {
    let mut listed = Listed {
        found: Vec::new(),
        unlisted: 0,
    };
    for error in validator.iter_errors(instance) {
        let at = error.instance_path().as_str();
        match error.kind() {
            ValidationErrorKind::Required { property } => {
                if partial && at.is_empty() {
                    continue;
                }
                listed.add(|| {
                    let property = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_string);
                    FieldError {
                        pointer: format!("{prefix}{at}/{}", escape(&property)),
                        message: bounded(format!("`{property}` is required but missing")),
                    }
                });
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for property in unexpected {
                    listed.add(|| FieldError {
                        pointer: format!("{prefix}{at}/{}", escape(property)),
                        message: bounded(format!(
                            "`{property}` is not a parameter of this deployment (unknown \
                             properties are refused)"
                        )),
                    });
                }
            }
            _ => listed.add(|| FieldError {
                pointer: format!("{prefix}{at}"),
                message: bounded(error.to_string()),
            }),
        }
    }
    let Listed {
        mut found,
        unlisted,
    } = listed;
    if unlisted > 0 {
        found.push(FieldError {
            pointer: prefix.to_string(),
            message: format!(
                "{unlisted} more errors are not listed (at most {MAX_LISTED_ERRORS} are)"
            ),
        });
    }
    found
}

/// The errors kept, and how many more there were.
struct Listed {
    found: Vec<FieldError>,
    unlisted: usize,
}

impl Listed {
    /// Keeps the error `make` builds, or only counts it once [`MAX_LISTED_ERRORS`] are kept.
    fn add(&mut self, make: impl FnOnce() -> FieldError) {
        if self.found.len() < MAX_LISTED_ERRORS {
            self.found.push(make());
        } else {
            self.unlisted += 1;
        }
    }
}

/// A reference token of a JSON pointer (RFC 6901: `~` is `~0`, `/` is `~1`).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn bounded(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push('…');
    cut
}

/// The BLAKE3 of `value`'s canonical JSON (object keys sorted at every level, no spaces), in
/// hex: equal for bodies that mean the same whatever their key order or spacing.
pub(crate) fn fingerprint(value: &Value) -> String {
    let mut text = String::new();
    canonical(value, &mut text);
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `defaults` with `given` on top: a given parameter replaces its default as a whole (objects
/// are not merged key by key).
pub(crate) fn merge(
    defaults: &Map<String, Value>,
    given: &Map<String, Value>,
) -> Map<String, Value> {
    let mut resolved = defaults.clone();
    for (name, value) in given {
        resolved.insert(name.clone(), value.clone());
    }
    resolved
}

/// Compiled parameter schemas by deployment version. A version's spec never changes once
/// registered (a different body for it is refused), so an entry never goes stale.
#[derive(Default)]
pub(crate) struct Validators {
    compiled: Mutex<HashMap<(String, String, String), Arc<Validator>>>,
}

/// Versions kept compiled; past this the cache starts over.
const MAX_CACHED: usize = 1024;

impl Validators {
    /// The compiled parameter schema of a version, compiling it on first use.
    pub(crate) fn get(
        &self,
        flow: &str,
        name: &str,
        version: &str,
        schema: &Value,
    ) -> Result<Arc<Validator>, String> {
        let key = (flow.to_string(), name.to_string(), version.to_string());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let compiled = Arc::new(compile(schema)?);
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The compiled parameter schema of a stored version (see [`Validators::get`]).
    pub(crate) fn of(
        &self,
        version: &flowkit_wire::api::deployments::DeploymentVersion,
    ) -> Result<Arc<Validator>, String> {
        self.get(
            &version.flow,
            &version.name,
            &version.version,
            &version.parameter_schema,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Arc<Validator>>> {
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner)
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
                "epochs": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                "learning_rate": {"type": "number"},
                "a/b": {"type": "string"}
            },
            "required": ["dataset", "learning_rate"],
            "additionalProperties": false
        })
    }

    #[test]
    fn every_error_has_its_pointer() {
        let validator = compile(&schema()).expect("compiles");
        let bad = json!({"epochs": -1, "learning_rate": "fast", "colour": "red", "a/b": 1});
        let mut pointers: Vec<String> = errors(&validator, &bad, "", false)
            .into_iter()
            .map(|e| e.pointer)
            .collect();
        pointers.sort();
        assert_eq!(
            pointers,
            ["/a~1b", "/colour", "/dataset", "/epochs", "/learning_rate"]
        );
        let defaults = json!({"epochs": 5});
        assert!(errors(&validator, &defaults, "/default_parameters", true).is_empty());
        let defaults = json!({"epochs": 1.5});
        let found = errors(&validator, &defaults, "/default_parameters", true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pointer, "/default_parameters/epochs");
    }

    #[test]
    fn a_flood_of_errors_is_listed_up_to_the_bound() {
        let validator = compile(&schema()).expect("compiles");
        let mut flood = serde_json::Map::new();
        for i in 0..(MAX_LISTED_ERRORS + 250) {
            flood.insert(format!("unknown{i}"), Value::from(i));
        }
        let found = errors(&validator, &Value::Object(flood), "", true);
        assert_eq!(found.len(), MAX_LISTED_ERRORS + 1);
        let last = found.last().expect("the count of the rest");
        assert_eq!(last.pointer, "");
        assert!(
            last.message.starts_with("250 more errors"),
            "{}",
            last.message
        );
    }

    #[test]
    fn invalid_schemas_do_not_compile() {
        assert!(compile(&json!({"type": "nope"})).is_err());
        assert!(compile(&json!({"minimum": "zero"})).is_err());
        assert!(compile(&json!(true)).is_ok());
    }

    #[test]
    fn fingerprints_ignore_key_order_only() {
        let a = json!({"parameters": {"x": 1, "y": [1, {"b": 2, "a": 1}]}, "tags": []});
        let b = json!({"tags": [], "parameters": {"y": [1, {"a": 1, "b": 2}], "x": 1}});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = json!({"tags": [], "parameters": {"y": [{"a": 1, "b": 2}, 1], "x": 1}});
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
