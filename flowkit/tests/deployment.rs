//! Deployments: what `deployment()` describes (schemas, defaults, version, description), the
//! typed side (`FlowSignature`), and the property that a deployment's parameter schema accepts
//! exactly the parameters the flow's types deserialize.

// The flows below exist for their signatures; their bodies ignore the arguments.
#![allow(unused_variables)]

use flowkit::{Deployment, FlowSignature, flow};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Config {
    rate: f64,
    name: Option<String>,
    tags: Vec<bool>,
    level: u16,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
enum Mode {
    Fast,
    Slow,
    Custom(u8),
    Scaled { factor: f64 },
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
struct Metrics {
    loss: f64,
}

/// Retrain the house-price model.
///
/// Reads the dataset and fits.
#[flow]
async fn train(
    dataset: String,
    epochs: u32,
    learning_rate: Option<f64>,
) -> anyhow::Result<Metrics> {
    Ok(Metrics {
        loss: learning_rate.unwrap_or(0.1) / f64::from(epochs.max(1)) + dataset.len() as f64,
    })
}

#[flow]
async fn p_u8(x: u8) {}
#[flow]
async fn p_u32(x: u32) {}
#[flow]
async fn p_i64(x: i64) {}
#[flow]
async fn p_u64(x: u64) {}
#[flow]
async fn p_f64(x: f64) {}
#[flow]
async fn p_bool(x: bool) {}
#[flow]
async fn p_string(x: String) {}
#[flow]
async fn p_option(x: Option<u32>) {}
#[flow]
async fn p_vec(x: Vec<u32>) {}
#[flow]
async fn p_struct(x: Config) {}
#[flow]
async fn p_enum(x: Mode) {}
#[flow]
#[allow(clippy::too_many_arguments)]
async fn p_all(
    a: u8,
    b: u32,
    c: i64,
    d: u64,
    e: f64,
    f: bool,
    g: String,
    h: Option<u32>,
    i: Vec<u32>,
    j: Config,
    k: Mode,
) -> Option<Vec<Mode>> {
    None
}
#[flow]
async fn p_none() -> u8 {
    1
}

#[flow(tags = ["gpu", "ml"])]
async fn on_the_gpu() -> u8 {
    1
}

#[test]
fn a_deployment_registers_the_flow_s_own_tags_then_its_own() {
    let spec = on_the_gpu::deployment("nightly").spec().expect("valid");
    assert_eq!(spec.tags, ["gpu", "ml"], "the server's tag limits see them");
    let spec = on_the_gpu::deployment("nightly")
        .tags(["ml", "team-x"])
        .spec()
        .expect("valid");
    assert_eq!(spec.tags, ["gpu", "ml", "team-x"], "added, not repeated");
}

#[test]
fn the_spec_describes_the_flow() {
    let spec = train::deployment("nightly")
        .parameters(json!({"epochs": 50.0}))
        .tags(["ml"])
        .limit(2)
        .spec()
        .expect("valid");
    assert_eq!(spec.flow, "train");
    assert_eq!(spec.name, "nightly");
    assert_eq!(spec.flow_key, "deployment::train");
    assert_eq!(
        spec.description.as_deref(),
        Some("Retrain the house-price model.\n\nReads the dataset and fits.")
    );
    let (hash, crate_version) = spec.version.split_once('@').expect("hash@version");
    assert_eq!(hash.len(), 16);
    assert_eq!(crate_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(spec.tags, ["ml"]);
    assert_eq!(spec.concurrency_limit, Some(2));
    // The whole-number float is stored as the integer the flow reads.
    assert_eq!(
        Value::Object(spec.default_parameters),
        json!({"epochs": 50})
    );
    assert_eq!(
        spec.parameter_schema,
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "train",
            "type": "object",
            "properties": {
                "dataset": {"type": "string"},
                "epochs": {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 4294967295u32, "default": 50},
                "learning_rate": {"type": ["number", "null"], "format": "double"},
            },
            "required": ["dataset"],
            "additionalProperties": false,
            "x-flowkit-order": ["dataset", "epochs", "learning_rate"],
        })
    );
    assert_eq!(spec.output_schema["title"], "Metrics");
    assert_eq!(spec.output_schema["required"], json!(["loss"]));
}

#[test]
fn named_types_are_defined_once() {
    let spec = p_all::deployment("x").spec().unwrap();
    let schema = &spec.parameter_schema;
    assert_eq!(schema["properties"]["j"], json!({"$ref": "#/$defs/Config"}));
    assert_eq!(
        schema["$defs"]["Config"]["properties"]["level"]["maximum"],
        65535
    );
    assert!(schema["$defs"]["Mode"].is_object(), "{schema:#}");
    assert_eq!(
        schema["required"],
        json!(["a", "b", "c", "d", "e", "f", "g", "i", "j", "k"])
    );
    let none = p_none::deployment("x").spec().unwrap();
    assert_eq!(none.parameter_schema["properties"], json!({}));
    assert_eq!(none.output_schema["maximum"], 255);
}

#[test]
fn deployments_of_different_flows_fit_in_one_array() {
    let all: [Deployment; 2] = [
        train::deployment("a").limit(2),
        p_enum::deployment("b").cron("0 3 * * *"),
    ];
    assert_eq!(all.map(|d| d.flow_name), ["train", "p_enum"]);
}

#[test]
fn bad_defaults_fail_the_spec_with_every_error() {
    let err = train::deployment("nightly")
        .parameters(json!({"epochs": -1, "dataset": 3, "epoch": 5, "learning_rate": null}))
        .spec()
        .unwrap_err();
    let mut pointers: Vec<&str> = err.errors.iter().map(|e| e.pointer.as_str()).collect();
    pointers.sort();
    assert_eq!(
        pointers,
        [
            "/default_parameters/dataset",
            "/default_parameters/epoch",
            "/default_parameters/epochs"
        ]
    );
    let err = train::deployment("nightly")
        .parameters(json!([1]))
        .spec()
        .unwrap_err();
    assert_eq!(err.errors[0].pointer, "/default_parameters");
}

#[test]
fn typed_arguments_travel_by_parameter_name() {
    let args = ("s3://houses.csv".to_string(), 5, Some(0.01));
    let json = train::parameters_json(args.clone()).unwrap();
    assert_eq!(
        Value::Object(json.clone()),
        json!({"dataset": "s3://houses.csv", "epochs": 5, "learning_rate": 0.01})
    );
    assert_eq!(train::args_from_json(json).unwrap(), args);
    assert_eq!(<train as FlowSignature>::NAME, "train");
    // The output type of a fallible flow is what it gives back when it completes.
    let output: <train as FlowSignature>::Output = Metrics { loss: 1.0 };
    assert_eq!(output, Metrics { loss: 1.0 });
    let () = p_none::args_from_json(Map::new()).unwrap();
    assert!(p_none::parameters_json(()).unwrap().is_empty());
}

// --- schema accepts ⇔ serde accepts --------------------------------------------------------

/// Keys the generated objects use: parameter and field names, variant names, and strays.
const KEYS: &[&str] = &[
    "x", "a", "b", "h", "j", "k", "rate", "name", "tags", "level", "Fast", "Custom", "Scaled",
    "factor", "extra",
];

const VARIANTS: &[&str] = &["Fast", "Slow", "Custom", "Scaled"];

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-300i64..70_000).prop_map(Value::from),
        prop::sample::select(vec![
            json!(-1),
            json!(0),
            json!(255),
            json!(256),
            json!(65535),
            json!(65536),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(i64::MAX as u64 + 1),
        ]),
        (-1e6f64..1e6).prop_map(Value::from),
        (-70_000i32..70_000).prop_map(|i| Value::from(f64::from(i))),
        prop::sample::select(vec![
            50.0,
            -0.0,
            0.5,
            255.0,
            256.0,
            4294967295.0,
            4294967296.0,
            9.223372036854776e18,
            -9.223372036854776e18,
            1.8446744073709552e19,
            1e300,
            -1e300,
        ])
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        4 => number(),
        1 => prop::sample::select(KEYS).prop_map(Value::from),
        1 => "[a-z]{0,3}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(prop::sample::select(KEYS), inner.clone(), 0..5).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
            // An enum's variant in map form, `{"Fast": null}` included.
            (prop::sample::select(VARIANTS), inner).prop_map(|(k, v)| json!({ k: v })),
            config_like(),
        ]
    })
}

/// A `Config` as an object, or as the array of its fields that serde_json would also take.
fn config_like() -> impl Strategy<Value = Value> {
    let name = prop_oneof![Just(Value::Null), "[a-z]{0,2}".prop_map(Value::from)];
    let tags = prop::collection::vec(any::<bool>(), 0..3);
    (number(), name, tags, number(), any::<bool>()).prop_map(|(rate, name, tags, level, array)| {
        if array {
            json!([rate, name, tags, level])
        } else {
            json!({"rate": rate, "name": name, "tags": tags, "level": level})
        }
    })
}

/// Parameters: mostly `{"x": value}`, sometimes empty or with a stray key.
fn parameters() -> impl Strategy<Value = Map<String, Value>> {
    prop_oneof![
        1 => prop::collection::btree_map(prop::sample::select(KEYS), value(), 0..4)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        3 => value().prop_map(|v| std::iter::once(("x".to_string(), v)).collect()),
    ]
}

/// Objects for `p_all`: each parameter present most of the time.
fn all_parameters() -> impl Strategy<Value = Map<String, Value>> {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    prop::collection::vec(prop::option::weighted(0.9, value()), names.len()).prop_map(
        move |values| {
            names
                .iter()
                .zip(values)
                .filter_map(|(n, v)| Some((n.to_string(), v?)))
                .collect()
        },
    )
}

struct Case {
    flow: &'static str,
    validator: jsonschema::Validator,
    serde_accepts: fn(Map<String, Value>) -> bool,
}

fn case<F: FlowSignature>(deployment: Deployment) -> Case
where
    F::Args: serde::de::DeserializeOwned,
{
    let spec = deployment.spec().expect("valid deployment");
    Case {
        flow: F::NAME,
        validator: jsonschema::validator_for(&spec.parameter_schema).expect("a valid schema"),
        serde_accepts: |p| F::args_from_json(p).is_ok(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        case::<p_u8>(p_u8::deployment("t")),
        case::<p_u32>(p_u32::deployment("t")),
        case::<p_i64>(p_i64::deployment("t")),
        case::<p_u64>(p_u64::deployment("t")),
        case::<p_f64>(p_f64::deployment("t")),
        case::<p_bool>(p_bool::deployment("t")),
        case::<p_string>(p_string::deployment("t")),
        case::<p_option>(p_option::deployment("t")),
        case::<p_vec>(p_vec::deployment("t")),
        case::<p_struct>(p_struct::deployment("t")),
        case::<p_enum>(p_enum::deployment("t")),
        case::<p_none>(p_none::deployment("t")),
    ]
}

fn agree(case: &Case, parameters: Map<String, Value>) -> Result<(), TestCaseError> {
    let instance = Value::Object(parameters.clone());
    let schema = case.validator.is_valid(&instance);
    let serde = (case.serde_accepts)(parameters);
    prop_assert_eq!(
        schema,
        serde,
        "{}: schema {} but serde {} {}",
        case.flow,
        if schema { "accepts" } else { "refuses" },
        if serde { "accepts" } else { "refuses" },
        instance
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(flowkit::testing::scaled(2000) as u32))]

    #[test]
    fn schema_accepts_what_serde_accepts(parameters in parameters()) {
        thread_local!(static CASES: Vec<Case> = cases());
        CASES.with(|cases| cases.iter().try_for_each(|c| agree(c, parameters.clone())))?;
    }

    #[test]
    fn schema_accepts_what_serde_accepts_for_many_parameters(parameters in all_parameters()) {
        thread_local!(static CASE: Case = case::<p_all>(p_all::deployment("t")));
        CASE.with(|c| agree(c, parameters))?;
    }
}

/// Values that each side once judged differently, kept as fixed cases.
#[test]
fn known_disagreements_are_settled() {
    let cases = cases();
    let by_name = |n: &str| cases.iter().find(|c| c.flow == n).unwrap();
    for (flow, x) in [
        ("p_u32", json!(50.0)),
        ("p_u32", json!(4294967296u64)),
        ("p_u32", json!(-1)),
        ("p_u64", json!(1.8446744073709552e19)),
        ("p_i64", json!(9.223372036854776e18)),
        ("p_option", json!(null)),
        ("p_vec", json!([1.0, 2])),
        ("p_enum", json!({"Fast": null})),
        ("p_struct", json!([1.5, null, [], 3])),
    ] {
        let p: Map<String, Value> = std::iter::once(("x".to_string(), x)).collect();
        agree(by_name(flow), p).unwrap();
    }
}
