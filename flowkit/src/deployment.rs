//! Deployments: a flow made available to be run by name, on a schedule or on demand.
//!
//! A [`Deployment`] records what a deployment is: its name, its flow, a schedule and default
//! parameters. It is a description only: registering deployments with the server and running
//! them there is not part of this release.

use serde::{Deserialize, Serialize};

/// A deployment of a flow, built with `my_flow::deployment("name")`.
///
/// ```
/// use flowkit::flow;
///
/// #[flow]
/// async fn etl(day: String) -> usize {
///     day.len()
/// }
///
/// let d = etl::deployment("nightly")
///     .cron("0 3 * * *")
///     .parameters(serde_json::json!({"day": "2026-11-28"}));
/// assert_eq!(d.name, "nightly");
/// assert_eq!(d.flow_name, "etl");
/// assert_eq!(d.schedule.as_deref(), Some("0 3 * * *"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deployment {
    /// The deployment's name, unique per flow.
    pub name: String,
    /// The flow's name.
    pub flow_name: String,
    /// The flow function's path.
    pub flow_key: String,
    /// A 5-field cron schedule, if the deployment runs on one.
    pub schedule: Option<String>,
    /// Parameters used when a run does not give them.
    pub parameters: serde_json::Value,
}

impl Deployment {
    /// A deployment named `name` of the flow `flow_name` (at `flow_key`).
    pub fn new(name: &str, flow_name: &str, flow_key: &str) -> Deployment {
        Deployment {
            name: name.to_string(),
            flow_name: flow_name.to_string(),
            flow_key: flow_key.to_string(),
            schedule: None,
            parameters: serde_json::Value::Object(Default::default()),
        }
    }

    /// Runs on a 5-field cron schedule (validated when the deployment is registered).
    pub fn cron(mut self, schedule: impl Into<String>) -> Deployment {
        self.schedule = Some(schedule.into());
        self
    }

    /// Default parameters of the runs it creates.
    pub fn parameters(mut self, parameters: serde_json::Value) -> Deployment {
        self.parameters = parameters;
        self
    }
}
