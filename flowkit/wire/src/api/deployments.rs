//! Deployments: a flow registered with the server by a process that can run it, triggered by
//! name over HTTP with parameters the server validates against the flow's JSON Schema.
//!
//! | route | body in | body out |
//! |---|---|---|
//! | `POST /deployments` (scope `worker`) | [`DeploymentSpec`] | 201 (a new version) or 200 (known) [`DeploymentVersion`] |
//! | `GET /deployments` | | a [`Page`](crate::api::page::Page) of [`DeploymentSummary`] |
//! | `GET /deployments/{flow}/{name}` | | [`DeploymentDetail`] |
//! | `GET /deployments/{flow}/{name}/versions` | | a [`Page`](crate::api::page::Page) of [`DeploymentVersion`] |
//! | `POST /deployments/{flow}/{name}/runs` (scope `trigger`) | [`TriggerRequest`] | 201 + `Location`, or 200 for a replayed idempotency key: the [`Run`](crate::api::runs::Run) |
//!
//! `{flow}` and `{name}` are made of the characters of [`NAME_CHARS`] ([`check_name`]). A
//! deployment is identified by the pair; a second function (another `flow_key`) registering
//! the same pair is refused with 409 `deployment_conflict`.
//!
//! ```
//! use flowkit_wire::api::deployments::{TriggerRequest, check_name};
//!
//! let trigger: TriggerRequest = serde_json::from_str(
//!     r#"{"parameters": {"dataset": "s3://bucket/houses.csv", "epochs": 5}}"#,
//! ).unwrap();
//! assert_eq!(trigger.parameters["epochs"], 5);
//! assert!(trigger.idempotency_key.is_none());
//!
//! assert!(check_name("flow", "training.nightly-v2").is_ok());
//! assert!(check_name("flow", "train/nightly").is_err());
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The characters a flow or deployment name may use (it goes in URL paths unescaped).
pub const NAME_CHARS: &str = "A-Z a-z 0-9 _ . -";

/// The longest flow or deployment name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The header that carries an idempotency key, as an alternative to
/// [`TriggerRequest::idempotency_key`].
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// How long the server remembers an idempotency key by default (configurable on the server).
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks a flow or deployment name: 1 to [`MAX_NAME_LEN`] bytes of [`NAME_CHARS`]. `what`
/// names the field in the message (`"flow"`, `"deployment"`).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "the {what} name is empty; use letters, digits, `_`, `.` or `-`"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the {what} name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "the {what} name {name:?} contains {bad:?}; use only letters, digits, `_`, `.` and `-` \
             (e.g. \"training.nightly\")"
        ));
    }
    Ok(())
}

/// What a worker registers: one version of one deployment (`POST /deployments`).
///
/// Registering the same `version` again changes nothing (200); another `version` of the same
/// `flow`/`name` and `flow_key` is kept beside the earlier ones (201), and the newest becomes
/// the one a trigger without `version` runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentSpec {
    /// The flow's name (the function name, or `name = "..."` of `#[flow]`).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub flow: String,
    /// The deployment's name, unique per flow.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.-]+$")
    )]
    pub name: String,
    /// The flow function's path (`my_crate::training::train`): which function this is.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub flow_key: String,
    /// The flow's version: the hash of its source and the version of its crate.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub version: String,
    /// What the deployment does (the flow's doc comment).
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema (2020-12) of the parameters: an object with one property per argument.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::json_schema))]
    pub parameter_schema: Value,
    /// JSON Schema (2020-12) of the flow's output.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::json_schema))]
    pub output_schema: Value,
    /// Parameters a trigger does not need to give.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub default_parameters: Map<String, Value>,
    /// Tags given to every run of the deployment (at most 100, each 1 to 1000 characters,
    /// not blank).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::tag_list))]
    pub tags: Vec<String>,
    /// At most this many runs of the deployment at once (none: no limit).
    #[serde(default, deserialize_with = "crate::api::whole::opt_u32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub concurrency_limit: Option<u32>,
    /// The flow's `retries`: a run whose worker died is re-queued while it has attempts left
    /// (`retries` + 1 in all).
    #[serde(default, deserialize_with = "crate::api::whole::u32")]
    pub retries: u32,
    /// The deployment's schedules declared in code: they replace those of the previous
    /// registration (schedules created over the API are kept; a pause survives). Not part of
    /// the version: the same version may be registered with other schedules. At most
    /// [`MAX_SCHEDULES_PER_DEPLOYMENT`](crate::api::schedules::MAX_SCHEDULES_PER_DEPLOYMENT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<crate::api::schedules::ScheduleSpec>,
}

/// One registered version of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentVersion {
    /// The flow's name.
    pub flow: String,
    /// The deployment's name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The flow function's path.
    pub flow_key: String,
    /// What the deployment does.
    pub description: Option<String>,
    /// JSON Schema (2020-12) of the parameters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::json_schema))]
    pub parameter_schema: Value,
    /// JSON Schema (2020-12) of the output.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::json_schema))]
    pub output_schema: Value,
    /// Parameters a trigger does not need to give.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub default_parameters: Map<String, Value>,
    /// Tags given to every run.
    pub tags: Vec<String>,
    /// At most this many runs at once.
    pub concurrency_limit: Option<u32>,
    /// The flow's `retries`.
    #[serde(default)]
    pub retries: u32,
    /// When this version was first registered.
    pub registered: DateTime<Utc>,
}

/// A deployment in the list (`GET /deployments`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentSummary {
    /// The flow's name.
    pub flow: String,
    /// The deployment's name.
    pub name: String,
    /// What the newest version says it does.
    pub description: Option<String>,
    /// The newest version.
    pub latest_version: String,
    /// How many versions are registered.
    pub versions: u64,
    /// When the newest version was registered.
    pub updated: DateTime<Utc>,
}

/// One deployment in full (`GET /deployments/{flow}/{name}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentDetail {
    /// The newest version, with its schemas.
    pub latest: DeploymentVersion,
    /// How many versions are registered.
    pub versions: u64,
    /// The deployment's most recent runs, newest first (at most 10).
    pub recent_runs: Vec<crate::api::runs::Run>,
    /// Workers serving it now (seen within one lease), most recently seen first (at most 100).
    #[serde(default)]
    pub live_workers: Vec<crate::api::workers::LiveWorker>,
    /// The version a trigger without `version` runs: the newest one a live worker serves, else
    /// the newest registered (its runs then wait for a worker).
    #[serde(default)]
    pub serving_version: Option<String>,
    /// Its schedules, those declared in code first (at most
    /// [`MAX_SCHEDULES_PER_DEPLOYMENT`](crate::api::schedules::MAX_SCHEDULES_PER_DEPLOYMENT)
    /// of each source).
    #[serde(default)]
    pub schedules: Vec<crate::api::schedules::Schedule>,
}

/// A trigger: `POST /deployments/{flow}/{name}/runs`.
///
/// Unknown fields are refused (422): a misspelt `idempotency_key` must not silently create a
/// second run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// The flow's arguments by name; the deployment's defaults fill in the rest. Validated
    /// against the version's parameter schema: 422 `invalid_parameters` lists every error.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Map<String, Value>,
    /// The same key with the same body within the retention of keys gives back the run it
    /// created (200) instead of a new one; with another body, 409 `idempotency_key_reused`.
    /// Scoped to the deployment. Also accepted as the `Idempotency-Key` header.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
        )
    )]
    pub idempotency_key: Option<String>,
    /// Not before this instant.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Tags added to the deployment's (at most 100, each 1 to 1000 characters, not blank).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::api::tag_list))]
    pub tags: Vec<String>,
    /// Run this version instead of the newest.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "\\S")
    )]
    pub version: Option<String>,
}

/// One error of a request body or of parameters, located by a JSON pointer (RFC 6901) into
/// what was sent: `""` is the whole object, `"/learning_rate"` one parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Where, e.g. `/learning_rate`.
    pub pointer: String,
    /// What is wrong there and what is expected.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_only_url_safe_characters() {
        for good in ["train", "train_v2", "a.b-c", "X9"] {
            assert!(check_name("flow", good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "train/nightly", "has space", "é", "a?b", long.as_str()] {
            let err = check_name("deployment", bad).expect_err(bad);
            assert!(err.contains("deployment name"), "{err}");
        }
    }

    #[test]
    fn a_misspelt_trigger_field_is_refused() {
        let err = serde_json::from_str::<TriggerRequest>(r#"{"idempotency": "k"}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("idempotency"), "{err}");
    }

    #[test]
    fn a_registration_needs_only_its_identity_and_schemas() {
        let spec: DeploymentSpec = serde_json::from_value(serde_json::json!({
            "flow": "train", "name": "nightly", "flow_key": "demo::train", "version": "abc@0.1.0",
            "parameter_schema": {"type": "object"}, "output_schema": {}
        }))
        .expect("minimal spec");
        assert!(spec.default_parameters.is_empty());
        assert_eq!(spec.concurrency_limit, None);
    }
}
