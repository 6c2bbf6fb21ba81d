//! Deployments: a flow made available to be run by name, on a schedule or on demand.
//!
//! A [`Deployment`] records what a deployment is: its flow, its name, its version, what it
//! does, the JSON Schemas of its parameters and output, default parameters, tags, a
//! concurrency limit and a schedule; [`Deployment::spec`] turns it into the
//! [`DeploymentSpec`] a worker registers with the server. It also knows how to run its flow
//! from a JSON parameter map, which is what a worker ([`crate::serve`], [`crate::Worker`])
//! does with the runs it claims.
//!
//! [`FlowSignature`] gives typed code the flow's argument and output types, and carries its
//! arguments to and from a JSON object keyed by parameter name.

mod runner;
mod schedule;
mod schema;
mod signature;
mod strict;

pub(crate) use runner::Started;
pub use runner::{StartFn, output_json};
pub use schedule::{Catchup, Overlap, Schedule};
pub use schema::{Parameter, accepts_null, output_schema, subschema};
pub use signature::{FlowSignature, InvalidParameters};

use flowkit_wire::api::deployments::{DeploymentSpec, FieldError, check_name};
use serde_json::{Map, Value};
use std::fmt;

/// A deployment of a flow, built with `my_flow::deployment("name")`: what a worker registers
/// with the server so that others can run the flow by name with JSON parameters.
///
/// `deployment()` needs the flow's arguments to be `DeserializeOwned + schemars::JsonSchema`
/// and its output (`T` of `Result<T, E>`) `Serialize + schemars::JsonSchema`; a flow that is
/// never deployed needs none of it. Derive `JsonSchema` with schemars 1.x in your own
/// `Cargo.toml` (`schemars = "1"`, the version flowkit uses). Deployments of different flows
/// have the same type, so they fit in one array.
///
/// - **Version**: `version = "..."` of `#[flow]` if given, else the first 16 hex digits of
///   the hash of the flow's source, `@`, and its crate's version (`3f2a..@0.4.1`): editing
///   the flow's function or releasing the crate makes a new version.
/// - **Description**: the flow's doc comment.
/// - **Parameter schema** (JSON Schema 2020-12): an object with one property per argument,
///   named as written; `Option<T>` arguments and arguments with a default are not required,
///   the others are; unknown properties are refused (`additionalProperties: false`); a
///   default appears as the property's `default`. Integers are bounded by their Rust type,
///   and a whole-number float (`50.0`) counts as an integer, as it does when the worker reads
///   the parameters (see [`FlowSignature`]). The annotation `x-flowkit-order` lists the
///   arguments in the order the function declares them (JSON objects do not keep an order):
///   the dashboard's run form follows it.
/// - **Defaults** ([`parameters`](Deployment::parameters)) must be a JSON object whose
///   properties are parameters of the flow and are accepted by their types. They are checked
///   by [`spec`](Deployment::spec), that is when the deployment is registered: a bad default
///   fails registration, it never reaches the server.
///
/// ```
/// use flowkit::flow;
/// use serde_json::json;
///
/// /// Loads one day of sales.
/// #[flow]
/// async fn etl(day: String, limit: Option<u32>) -> usize {
///     day.len()
/// }
///
/// # #[flow] async fn report() {}
/// let d = etl::deployment("nightly")
///     .cron("0 3 * * *")
///     .parameters(json!({"day": "2026-11-28"}))
///     .tags(["sales"])
///     .limit(2);
/// assert_eq!(d.name, "nightly");
/// assert_eq!(d.flow_name, "etl");
/// assert_eq!(d.schedules.len(), 1);
///
/// let spec = d.spec().unwrap();
/// assert_eq!(spec.description.as_deref(), Some("Loads one day of sales."));
/// assert_eq!(spec.concurrency_limit, Some(2));
/// assert_eq!(spec.parameter_schema["required"], json!([])); // `day` has a default
/// assert_eq!(spec.parameter_schema["properties"]["day"]["default"], "2026-11-28");
/// assert_eq!(spec.parameter_schema["x-flowkit-order"], json!(["day", "limit"]));
///
/// // Deployments of different flows fit in one array.
/// let all = [etl::deployment("a").limit(2), report::deployment("b")];
///
/// // A default the flow's types refuse fails `spec`.
/// let bad = etl::deployment("bad").parameters(json!({"limit": -1}));
/// assert_eq!(bad.spec().unwrap_err().errors[0].pointer, "/default_parameters/limit");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Deployment {
    /// The deployment's name, unique per flow.
    pub name: String,
    /// The flow's name.
    pub flow_name: String,
    /// The flow function's path.
    pub flow_key: String,
    /// The flow's version (see above).
    pub version: String,
    /// The flow's doc comment, if it has one.
    pub description: Option<String>,
    /// When the server runs it by itself ([`cron`](Deployment::cron),
    /// [`interval`](Deployment::interval), [`schedule`](Deployment::schedule)).
    pub schedules: Vec<Schedule>,
    /// `timezone()` called before any schedule: reported by `spec`.
    timezone_without_schedule: bool,
    /// Parameters used when a run does not give them (a JSON object).
    pub parameters: Value,
    /// Tags given to every run of the deployment: the flow's own, then those of
    /// [`tags`](Deployment::tags).
    pub tags: Vec<String>,
    /// At most this many runs of the deployment at once.
    pub limit: Option<u32>,
    /// The flow's `retries` (the server re-queues a run whose worker died while it has
    /// attempts left).
    pub retries: u32,
    /// The parameter schema without defaults.
    parameter_schema: Value,
    output_schema: Value,
    /// Whether a value suits the named parameter's type (`None`: no such parameter).
    check: CheckParameter,
    /// Starts a run of the flow from JSON parameters.
    start: StartFn,
    /// Serializes the flow's output.
    output: crate::run::deployed::OutputFn,
    /// The flow's spec (its name as `'static`, its function's path).
    flow_spec: &'static crate::__private::TaskSpec,
}

/// Whether `value` deserializes as the type of parameter `name` (`None`: no such parameter).
pub type CheckParameter = fn(name: &str, value: &Value) -> Option<Result<(), String>>;

impl Deployment {
    /// Runs at the instants of a five-field cron expression, in UTC unless
    /// [`timezone`](Deployment::timezone) follows: short for
    /// `.schedule(Schedule::cron(expression))`. Checked by [`spec`](Deployment::spec); see
    /// [`Schedule`] for the rules (daylight saving time, catch-up, overlap).
    ///
    /// ```
    /// # #[flowkit::flow] async fn etl() {}
    /// let d = etl::deployment("nightly").cron("0 3 * * *").timezone("Europe/Paris");
    /// let spec = d.spec().unwrap();
    /// assert_eq!(spec.schedules[0].cron.as_deref(), Some("0 3 * * *"));
    /// assert_eq!(spec.schedules[0].timezone, "Europe/Paris");
    /// ```
    pub fn cron(self, expression: impl Into<String>) -> Deployment {
        self.schedule(Schedule::cron(expression))
    }

    /// Runs every `every` of real time (humantime: `"15m"`): short for
    /// `.schedule(Schedule::interval(every))`.
    ///
    /// ```
    /// # #[flowkit::flow] async fn poll() {}
    /// let spec = poll::deployment("often").interval("15m").spec().unwrap();
    /// assert_eq!(spec.schedules[0].interval.as_deref(), Some("15m"));
    ///
    /// let err = poll::deployment("never").interval("0s").spec().unwrap_err();
    /// assert_eq!(err.errors[0].pointer, "/schedules/0/interval");
    /// ```
    pub fn interval(self, every: impl Into<String>) -> Deployment {
        self.schedule(Schedule::interval(every))
    }

    /// The time zone of the schedule given last ([`cron`](Deployment::cron)): an IANA name
    /// such as `"Europe/Paris"`. Without a schedule before it, [`spec`](Deployment::spec)
    /// fails.
    pub fn timezone(mut self, zone: impl Into<String>) -> Deployment {
        match self.schedules.last_mut() {
            Some(last) => last.spec_mut().timezone = zone.into(),
            None => self.timezone_without_schedule = true,
        }
        self
    }

    /// Adds a schedule (repeatable: each with its own parameters and policies). Schedules
    /// declared in code replace, at each registration, the ones the previous registration
    /// declared; schedules created over the server's API are kept, and a pause made on the
    /// server survives registration.
    pub fn schedule(mut self, schedule: Schedule) -> Deployment {
        self.schedules.push(schedule);
        self
    }

    /// Default parameters of the runs it creates: a JSON object keyed by parameter name.
    /// Checked by [`spec`](Deployment::spec).
    ///
    /// ```
    /// # #[flowkit::flow] async fn train(epochs: u32) {}
    /// let d = train::deployment("nightly").parameters(serde_json::json!({"epochs": 50}));
    /// assert_eq!(d.parameters["epochs"], 50);
    /// ```
    pub fn parameters(mut self, parameters: Value) -> Deployment {
        self.parameters = parameters;
        self
    }

    /// Tags given to every run of the deployment, added to the flow's own
    /// (`#[flow(tags = [...])]`, which a deployment starts with). The server knows a run's
    /// tags from its trigger on: its tag limits (`flowkit limits set TAG N`) hold the run
    /// before a worker claims it.
    ///
    /// ```
    /// # #[flowkit::flow(tags = ["ml"])] async fn train() {}
    /// let d = train::deployment("nightly").tags(["gpu", "ml"]);
    /// assert_eq!(d.tags, ["ml", "gpu"]);
    /// ```
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Deployment {
        for tag in tags {
            let tag = tag.into();
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self
    }

    /// At most `n` runs of this deployment at once (at least 1).
    ///
    /// ```
    /// # #[flowkit::flow] async fn train() {}
    /// let d = train::deployment("nightly").limit(2);
    /// assert_eq!(d.limit, Some(2));
    /// ```
    pub fn limit(mut self, n: u32) -> Deployment {
        self.limit = Some(n);
        self
    }

    /// What a worker registers: every field, the parameter schema with the defaults applied.
    /// Fails, listing every error at a JSON pointer into the [`DeploymentSpec`], when a name
    /// uses characters other than letters, digits, `_`, `.` and `-`, when the defaults are not
    /// an object, name an unknown parameter or hold a value its type refuses, or when the
    /// limit is 0.
    ///
    /// ```
    /// # #[flowkit::flow] async fn train(epochs: u32) {}
    /// let spec = train::deployment("nightly").spec().unwrap();
    /// assert_eq!(spec.flow, "train");
    /// assert_eq!(spec.parameter_schema["required"], serde_json::json!(["epochs"]));
    ///
    /// let err = train::deployment("night/ly").limit(0).spec().unwrap_err();
    /// assert_eq!(err.errors.len(), 2);
    /// ```
    pub fn spec(&self) -> Result<DeploymentSpec, InvalidDeployment> {
        let mut errors = Vec::new();
        let mut named = |pointer: &str, r: Result<(), String>| {
            if let Err(message) = r {
                errors.push(FieldError {
                    pointer: pointer.into(),
                    message,
                });
            }
        };
        named("/flow", check_name("flow", &self.flow_name));
        named("/name", check_name("deployment", &self.name));
        if self.limit == Some(0) {
            named(
                "/concurrency_limit",
                Err("a limit of 0 would never run: give at least 1, or no limit".into()),
            );
        }
        let defaults = match &self.parameters {
            Value::Object(map) => map.clone(),
            other => {
                named(
                    "/default_parameters",
                    Err(format!(
                        "the defaults must be a JSON object keyed by parameter name, not {other}"
                    )),
                );
                Map::new()
            }
        };
        let mut normalized = defaults.clone();
        for (name, value) in &mut normalized {
            signature::normalize_numbers(value);
            let pointer = signature::pointer_to(&["default_parameters", name]);
            let result = match (self.check)(name, value) {
                Some(result) => result,
                None => Err(signature::unknown_parameter(&self.parameter_names())),
            };
            named(&pointer, result);
        }
        let schedules = self.schedule_specs(&mut named);
        if !errors.is_empty() {
            return Err(InvalidDeployment {
                flow: self.flow_name.clone(),
                name: self.name.clone(),
                errors,
            });
        }
        Ok(DeploymentSpec {
            flow: self.flow_name.clone(),
            name: self.name.clone(),
            flow_key: self.flow_key.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            parameter_schema: schema::with_defaults(self.parameter_schema.clone(), &normalized),
            output_schema: self.output_schema.clone(),
            default_parameters: normalized,
            tags: self.tags.clone(),
            concurrency_limit: self.limit,
            retries: self.retries,
            schedules,
        })
    }

    /// The schedules as registered, each checked (see [`Schedule`]); every error goes to
    /// `named` at its pointer.
    fn schedule_specs(
        &self,
        named: &mut impl FnMut(&str, Result<(), String>),
    ) -> Vec<flowkit_wire::api::schedules::ScheduleSpec> {
        use flowkit_wire::api::schedules::MAX_SCHEDULES_PER_DEPLOYMENT;
        if self.timezone_without_schedule {
            named(
                "/schedules",
                Err(
                    "timezone() was called before any schedule: call .cron(\"0 3 * * *\") \
                     first, then .timezone(\"Europe/Paris\")"
                        .into(),
                ),
            );
        }
        if self.schedules.len() > MAX_SCHEDULES_PER_DEPLOYMENT {
            named(
                "/schedules",
                Err(format!(
                    "{} schedules; at most {MAX_SCHEDULES_PER_DEPLOYMENT} per deployment",
                    self.schedules.len()
                )),
            );
        }
        let mut specs = Vec::with_capacity(self.schedules.len());
        for (i, schedule) in self.schedules.iter().enumerate() {
            let (spec, parameters) = schedule.parts();
            let mut spec = spec.clone();
            if let Err(e) = flowkit_wire::schedule::Schedule::compile(&spec) {
                named(&format!("/schedules/{i}/{}", e.field), Err(e.message));
            }
            match parameters {
                Value::Object(map) => {
                    let mut normalized = map.clone();
                    for (name, value) in &mut normalized {
                        signature::normalize_numbers(value);
                        let result = match (self.check)(name, value) {
                            Some(result) => result,
                            None => Err(signature::unknown_parameter(&self.parameter_names())),
                        };
                        named(
                            &signature::pointer_to(&[
                                "schedules",
                                &i.to_string(),
                                "parameters",
                                name,
                            ]),
                            result,
                        );
                    }
                    spec.parameters = normalized;
                }
                other => named(
                    &format!("/schedules/{i}/parameters"),
                    Err(format!(
                        "a schedule's parameters must be a JSON object keyed by parameter name, \
                         not {other}"
                    )),
                ),
            }
            specs.push(spec);
        }
        specs
    }

    fn parameter_names(&self) -> Vec<&str> {
        self.parameter_schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// A deployment that cannot be registered: every error, each at a JSON pointer into its
/// [`DeploymentSpec`] (`/default_parameters/epochs`, `/name`, ..).
///
/// ```
/// # #[flowkit::flow] async fn train(epochs: u32) {}
/// let err = train::deployment("nightly")
///     .parameters(serde_json::json!({"epochs": "many"}))
///     .spec()
///     .unwrap_err();
/// assert_eq!(err.errors[0].pointer, "/default_parameters/epochs");
/// assert!(err.to_string().starts_with("deployment train/nightly:"), "{err}");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub struct InvalidDeployment {
    /// The flow's name.
    pub flow: String,
    /// The deployment's name.
    pub name: String,
    /// What is wrong, where.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidDeployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deployment {}/{}:", self.flow, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{} {}", e.pointer, e.message)?;
        }
        Ok(())
    }
}

/// Whether `value` (numbers normalized) reads as `T`, strictly, for [`FlowTypes::check`].
pub fn check_parameter<T: serde::de::DeserializeOwned>(value: &Value) -> Result<(), String> {
    strict::from_value::<T>(value.clone())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What the macro knows of a flow beyond its [`TaskSpec`](crate::__private::TaskSpec), for
/// [`crate::__private::deployment`].
pub struct FlowTypes<'a> {
    /// The values of the flow's `#[doc]` attributes, one per line.
    pub doc: &'a [&'a str],
    /// `CARGO_PKG_VERSION` of the flow's crate.
    pub crate_version: Option<&'static str>,
    /// The arguments.
    pub parameters: &'a [Parameter],
    /// The output's schema.
    pub output_schema: fn() -> Value,
    /// Whether a value suits a parameter.
    pub check: CheckParameter,
    /// Starts a run of the flow from JSON parameters (see [`StartFn`]).
    pub start: StartFn,
    /// Serializes the flow's output for the server.
    pub output: crate::run::deployed::OutputFn,
}

/// The deployment `name` of the flow described by `spec` and `types`.
pub(crate) fn new(
    name: &str,
    spec: &'static crate::__private::TaskSpec,
    types: FlowTypes<'_>,
) -> Deployment {
    let version = match spec.version {
        Some(v) => v.to_string(),
        None => {
            let hash = &spec.source_hash()[..16.min(spec.source_hash().len())];
            match types.crate_version {
                Some(crate_version) => format!("{hash}@{crate_version}"),
                None => hash.to_string(),
            }
        }
    };
    Deployment {
        name: name.to_string(),
        flow_name: spec.name().to_string(),
        flow_key: spec.task_key().to_string(),
        version,
        description: description(types.doc),
        schedules: Vec::new(),
        timezone_without_schedule: false,
        parameters: Value::Object(Map::new()),
        tags: spec.tags.iter().map(|tag| tag.to_string()).collect(),
        limit: None,
        retries: spec.retry.retries,
        parameter_schema: schema::parameter_schema(spec.name(), types.parameters),
        output_schema: (types.output_schema)(),
        check: types.check,
        start: types.start,
        output: types.output,
        flow_spec: spec,
    }
}

/// The doc comment as rustdoc shows it: `///` lines lose the one space after the slashes.
fn description(doc: &[&str]) -> Option<String> {
    let text = doc
        .iter()
        .flat_map(|d| d.split('\n'))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_like_rustdoc() {
        assert_eq!(description(&[]), None);
        assert_eq!(description(&[" ", ""]), None);
        assert_eq!(
            description(&[" Retrain the model.", "", " Weekly.", "  indented"]),
            Some("Retrain the model.\n\nWeekly.\n indented".into())
        );
    }
}
