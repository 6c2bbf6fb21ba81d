//! `flowkit run FLOW/NAME -p NAME=VALUE ...`: trigger a run and wait for its result.

use super::{Failure, add_parameter_pairs, deployment_name};
use crate::args::RunArgs;
use crate::{params, print};
use flowkit::{Client, RunError};
use flowkit_wire::api::deployments::TriggerRequest;
use serde_json::Map;

/// Runs `args`.
pub async fn run(client: &Client, args: RunArgs, json: bool) -> Result<(), Failure> {
    let (flow, name) = deployment_name(&args.deployment)?;
    let mut parameters = match &args.params_file {
        Some(path) => params::read_file(path).map_err(RunError::InvalidParameters)?,
        None => Map::new(),
    };
    add_parameter_pairs(client, (flow, name), &args.params, &mut parameters).await?;
    let request = TriggerRequest {
        parameters,
        idempotency_key: args.idempotency_key.clone(),
        ..TriggerRequest::default()
    };
    if args.no_wait {
        let triggered = client.trigger(flow, name, &request).await?;
        if json {
            print::json(&triggered.run);
        } else {
            if triggered.replayed {
                print::err(&triggered.to_string());
            }
            print::out(&triggered.run.id.to_string());
        }
        return Ok(());
    }
    let finished = client
        .trigger_and_wait(flow, name, &request, args.timeout)
        .await?;
    if finished.replayed {
        print::err(&format!(
            "run {} was already created with this idempotency key: its result",
            finished.run.id
        ));
    }
    if json {
        print::json(&finished.run);
    } else {
        print::json(&finished.output);
    }
    Ok(())
}
