//! A flow's signature as types: what a typed client sends and gets back, and how its
//! arguments travel as a JSON object keyed by parameter name.

use flowkit_wire::api::deployments::FieldError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;

/// The argument and output types of a flow, implemented by the struct `#[flow]` puts beside
/// the function, so typed code (a client that triggers a deployment, a worker that runs one)
/// can name a flow by its type: `client.run::<train>("nightly", (dataset, epochs, lr))`.
///
/// Only flows without generic parameters that own their arguments (no references, lifetimes or
/// `impl Trait`) implement it; every such flow does, deployed or not. The bounds that JSON
/// needs (`Serialize`, `DeserializeOwned`) are asked for by the methods that use them.
///
/// # Parameters as JSON
///
/// A run's parameters are a JSON object with one property per argument, named as the argument
/// is written (a pattern argument such as `(a, b): (u8, u8)` is named `arg0`, `arg1`, .. by
/// position). A missing property is read as `null`, which an `Option<T>` argument takes as
/// `None`: those arguments are optional, the others required. Unknown properties are refused.
///
/// Forms: what `Serialize` writes and the schema describes, nothing else. serde_json also
/// reads a struct from an array of its fields and a unit variant from `{"Variant": null}`;
/// flowkit does not, as the schema does not.
///
/// Numbers: a whole-number float (`50.0`) is read as the integer it equals (`50`) before the
/// arguments are deserialized, so an integer argument accepts it, as JSON Schema's `integer`
/// does; `50.5` is refused by both. The deployment's parameter schema bounds integers by
/// their Rust type (`u8`: 0 to 255), so schema and deserialization accept the same values.
///
/// ```
/// use flowkit::{FlowSignature, flow};
///
/// #[flow]
/// async fn train(dataset: String, epochs: u32, learning_rate: Option<f64>) -> anyhow::Result<f64> {
///     Ok(learning_rate.unwrap_or(0.1) * f64::from(epochs))
/// }
///
/// assert_eq!(train::NAME, "train");
/// assert_eq!(train::PARAMETERS, ["dataset", "epochs", "learning_rate"]);
/// let json = train::parameters_json(("s3://houses.csv".to_string(), 5, None)).unwrap();
/// assert_eq!(
///     serde_json::Value::Object(json),
///     serde_json::json!({"dataset": "s3://houses.csv", "epochs": 5, "learning_rate": null}),
/// );
///
/// let params = serde_json::json!({"dataset": "d", "epochs": 50.0});
/// let args = train::args_from_json(params.as_object().unwrap().clone()).unwrap();
/// assert_eq!(args, ("d".to_string(), 50, None));
///
/// let err = train::args_from_json(serde_json::Map::new()).unwrap_err();
/// assert_eq!(err.errors[0].pointer, "/dataset");
/// ```
pub trait FlowSignature {
    /// The arguments, in order, as a tuple: `(String, u32)`, `(u8,)` for one, `()` for none.
    type Args;
    /// What a completed run gives back: `T` of a flow returning `Result<T, E>`, else the
    /// return type.
    type Output;
    /// The flow's name (the function's name, or `name = "..."`).
    const NAME: &'static str;
    /// The parameters' names, in the order of [`Args`](FlowSignature::Args).
    const PARAMETERS: &'static [&'static str];

    /// The arguments as a JSON object keyed by parameter name (`None` becomes `null`).
    fn parameters_json(args: Self::Args) -> Result<Map<String, Value>, serde_json::Error>
    where
        Self::Args: Serialize,
    {
        parameters_json(Self::PARAMETERS, &args)
    }

    /// The arguments read back from a JSON object keyed by parameter name, as a worker does
    /// before running the flow. Reports every unknown parameter and the first argument that
    /// does not deserialize, each at its JSON pointer.
    fn args_from_json(parameters: Map<String, Value>) -> Result<Self::Args, InvalidParameters>
    where
        Self::Args: DeserializeOwned,
    {
        args_from_json(Self::PARAMETERS, parameters)
    }
}

/// Parameters a flow cannot take: every error, each at the JSON pointer of the parameter
/// (`/epochs`) or of the part of it (`/config/rate`) that is wrong.
///
/// ```
/// use flowkit::{FlowSignature, flow};
///
/// #[flow]
/// async fn resize(width: u16) {}
///
/// let params = serde_json::json!({"width": 70000, "height": 2});
/// let err = resize::args_from_json(params.as_object().unwrap().clone()).unwrap_err();
/// assert_eq!(err.errors.len(), 2);
/// assert!(err.to_string().contains("/height"), "{err}");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub struct InvalidParameters {
    /// What is wrong, where.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid parameters: ")?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.pointer, e.message)?;
        }
        Ok(())
    }
}

/// The JSON of an `Args` tuple, keyed by `names`.
pub(crate) fn parameters_json<A: Serialize + ?Sized>(
    names: &[&str],
    args: &A,
) -> Result<Map<String, Value>, serde_json::Error> {
    let values = match serde_json::to_value(args)? {
        // `()`: a flow without arguments.
        Value::Null => Vec::new(),
        Value::Array(values) => values,
        other => vec![other],
    };
    Ok(names
        .iter()
        .map(|n| n.to_string())
        .zip(values)
        .collect::<Map<_, _>>())
}

/// `Args` from a JSON object keyed by `names`: unknown keys refused, missing ones `null`.
pub(crate) fn args_from_json<A: DeserializeOwned>(
    names: &[&str],
    mut parameters: Map<String, Value>,
) -> Result<A, InvalidParameters> {
    let mut errors: Vec<FieldError> = parameters
        .keys()
        .filter(|k| !names.contains(&k.as_str()))
        .map(|k| FieldError {
            pointer: pointer_to(&[k]),
            message: unknown_parameter(names),
        })
        .collect();
    let mut missing = Vec::new();
    let mut values = Vec::with_capacity(names.len());
    for name in names {
        let mut value = parameters.remove(*name).unwrap_or_else(|| {
            missing.push(*name);
            Value::Null
        });
        normalize_numbers(&mut value);
        values.push(value);
    }
    // serde stops at the first argument that does not deserialize: that one is reported (the
    // server's schema validation lists every error before a run is created).
    let whole = if names.is_empty() {
        Value::Null
    } else {
        Value::Array(values)
    };
    match serde_path_to_error::deserialize::<_, A>(super::strict::Strict(whole)) {
        Ok(args) if errors.is_empty() => Ok(args),
        Ok(_) => Err(InvalidParameters { errors }),
        Err(e) => {
            let mut segments = e.path().iter();
            let name = match segments.next() {
                Some(serde_path_to_error::Segment::Seq { index }) => names.get(*index).copied(),
                _ => None,
            };
            let rest: Vec<String> = segments.filter_map(segment_key).collect();
            let mut path: Vec<&str> = name.into_iter().collect();
            path.extend(rest.iter().map(String::as_str));
            let message = match name {
                Some(name) if rest.is_empty() && missing.contains(&name) => {
                    format!("missing parameter `{name}`")
                }
                _ => e.into_inner().to_string(),
            };
            errors.push(FieldError {
                pointer: pointer_to(&path),
                message,
            });
            Err(InvalidParameters { errors })
        }
    }
}

fn segment_key(segment: &serde_path_to_error::Segment) -> Option<String> {
    use serde_path_to_error::Segment;
    match segment {
        Segment::Seq { index } => Some(index.to_string()),
        Segment::Map { key } => Some(key.clone()),
        Segment::Enum { variant } => Some(variant.clone()),
        Segment::Unknown => None,
    }
}

pub(crate) fn unknown_parameter(names: &[&str]) -> String {
    if names.is_empty() {
        "unknown parameter: the flow takes none".to_string()
    } else {
        format!(
            "unknown parameter: the flow takes {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A JSON pointer (RFC 6901) to `path`.
pub(crate) fn pointer_to(path: &[&str]) -> String {
    path.iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// Whole-number floats become the integers they equal (`50.0` → `50`), everywhere in `value`,
/// so integer types accept them as JSON Schema's `integer` does. Floats beyond `i64`/`u64`
/// stay floats (and no integer type accepts them, as the schema's bounds say).
pub(crate) fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // 2^63 and 2^64 are exact in f64; the casts below are exact inside these ranges.
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            if f.fract() != 0.0 || !f.is_finite() {
                return;
            }
            if (-TWO_63..TWO_63).contains(&f) {
                *value = Value::from(f as i64);
            } else if (0.0..2.0 * TWO_63).contains(&f) {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_floats_become_integers() {
        let mut v = json!([50.0, 50.5, -3.0, 1e300, 1.8446744073709552e19, 9.3e18, {"a": 2.0}]);
        normalize_numbers(&mut v);
        assert_eq!(
            v,
            json!([50, 50.5, -3, 1e300, 1.8446744073709552e19, 9_300_000_000_000_000_000u64, {"a": 2}])
        );
    }

    #[test]
    fn args_round_trip_by_name() {
        let names = ["dataset", "epochs", "rate"];
        let args = ("d".to_string(), 3u32, Some(0.5f64));
        let map = parameters_json(&names, &args).unwrap();
        assert_eq!(
            Value::Object(map.clone()),
            json!({"dataset": "d", "epochs": 3, "rate": 0.5})
        );
        let back: (String, u32, Option<f64>) = args_from_json(&names, map).unwrap();
        assert_eq!(back, args);

        let one = parameters_json(&["x"], &(7u8,)).unwrap();
        assert_eq!(Value::Object(one), json!({"x": 7}));
        assert!(parameters_json(&[], &()).unwrap().is_empty());
        let () = args_from_json(&[], Map::new()).unwrap();
    }

    #[test]
    fn errors_name_the_parameter() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Config {
            rate: f64,
        }
        let names = ["epochs", "config"];
        let parse = |v: Value| {
            args_from_json::<(u32, Config)>(&names, v.as_object().unwrap().clone()).unwrap_err()
        };
        let err = parse(json!({"config": {"rate": 1}}));
        assert_eq!(err.errors[0].pointer, "/epochs");
        assert_eq!(err.errors[0].message, "missing parameter `epochs`");
        let err = parse(json!({"epochs": 1, "config": {"rate": "fast"}}));
        assert_eq!(err.errors[0].pointer, "/config/rate");
        let err = parse(json!({"epochs": 1, "config": {"rate": 1}, "ep0chs": 2}));
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].pointer, "/ep0chs");
        assert!(err.errors[0].message.contains("`epochs`, `config`"));
    }
}
