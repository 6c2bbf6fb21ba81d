//! How a deployment runs its flow for a worker: from the claim's JSON parameters (the
//! deployment's defaults merged under them), read strictly as the flow's arguments, to the
//! flow run under the claim (see [`crate::run::deployed`]).

use super::{Deployment, InvalidParameters};
use crate::run::deployed::{Claim, Deployed};
use crate::run::spec::CallSite;
use crate::state::{State, StateType};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Starts a run of a flow from its parameters (a JSON object keyed by parameter name) and the
/// call site the worker prepared: the flow's future, or why the parameters do not fit its
/// arguments. Written by `#[flow]` in `deployment()`.
pub type StartFn =
    fn(Map<String, Value>, CallSite) -> Result<BoxFuture<'static, ()>, InvalidParameters>;

/// The JSON of a flow's successful output (`None`: the flow returned an `Err`), cut at
/// [`MAX_VALUE_DEPTH`](flowkit_wire::api::ingest::MAX_VALUE_DEPTH) levels, for
/// [`OutputFn`](crate::run::deployed::OutputFn).
pub fn output_json<T: serde::Serialize + ?Sized>(
    value: Option<&T>,
) -> Option<Result<Value, String>> {
    value.map(|v| {
        serde_json::to_value(v)
            .map(|mut json| {
                // Deeper would make the server refuse the result: cut, with a marker saying so.
                flowkit_wire::api::ingest::cap_depth(
                    &mut json,
                    flowkit_wire::api::ingest::MAX_VALUE_DEPTH,
                );
                json
            })
            .map_err(|e| e.to_string())
    })
}

/// A claimed run, started.
pub(crate) struct Started {
    /// What the run executes under: its final event and result once it ends.
    pub deployed: Arc<Deployed>,
    /// The flow's future; `None` when the parameters did not fit (the run has ended `Failed`).
    pub run: Option<BoxFuture<'static, ()>>,
}

impl Deployment {
    /// Prepares the claimed run: the flow's future, which runs it as that run when polled.
    pub(crate) fn start(&self, claim: Claim, parameters: Map<String, Value>) -> Started {
        let deployed = Deployed::new(claim, self.flow_spec.name(), self.output);
        let mut merged = match &self.parameters {
            Value::Object(defaults) => defaults.clone(),
            _ => Map::new(),
        };
        merged.extend(parameters);
        let site = CallSite {
            run_id: Some(deployed.run_id),
            deployed: Some(Arc::clone(&deployed)),
            ..CallSite::default()
        };
        match (self.start)(merged.clone(), site) {
            Ok(run) => Started {
                deployed,
                run: Some(run),
            },
            Err(invalid) => {
                let details = deployed.details(self.flow_spec.task_key(), Value::Object(merged));
                let message = format!(
                    "the worker cannot run these parameters (is it serving the version the run \
                     was triggered for?): {invalid}"
                );
                deployed.end(
                    State::with_message(StateType::Failed, message),
                    Some(details),
                );
                Started {
                    deployed,
                    run: None,
                }
            }
        }
    }
}
