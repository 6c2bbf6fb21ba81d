//! One file per command; [`run`] picks the one asked for, with a client of the server, and
//! turns its outcome into the exit code.

mod actions;
mod alerts;
mod deployments;
mod keys;
mod limits;
mod logs;
mod run;
mod runs;
mod schedules;

use crate::args::{Cli, Command};
use crate::print;
use flowkit::client::exit_code;
use flowkit::{Client, RunError};
use uuid::Uuid;

/// Runs the command of `cli`; its exit code.
pub async fn run(cli: Cli) -> i32 {
    let json = cli.json;
    let client = match client(&cli) {
        Ok(client) => client,
        Err(e) => {
            print::error(&e, json);
            return exit_code::of(&e);
        }
    };
    let outcome = match cli.command {
        Command::Deployments(command) => deployments::run(&client, command, json).await,
        Command::Run(args) => run::run(&client, args, json).await,
        Command::Runs(command) => runs::run(&client, command, json).await,
        Command::Logs(args) => logs::run(&client, args, json).await,
        Command::Cancel(args) => actions::cancel(&client, args, json).await,
        Command::Retry(args) => actions::retry(&client, args, json).await,
        Command::Keys(command) => keys::run(&client, command, json).await,
        Command::Alerts(command) => alerts::run(&client, command, json).await,
        Command::Limits(command) => limits::run(&client, command, json).await,
        Command::Schedules(command) => schedules::run(&client, command, json).await,
        Command::Backfill(args) => schedules::backfill(&client, args, json).await,
    };
    match outcome {
        Ok(()) => exit_code::COMPLETED,
        Err(Failure::Run(e)) => {
            print::error(&e, json);
            exit_code::of(&e)
        }
        Err(Failure::Usage(message)) => {
            print::err(&message);
            exit_code::USAGE
        }
    }
}

/// Why a command did not do what it was asked.
pub enum Failure {
    /// What the client said.
    Run(RunError),
    /// An argument that is not what it should be.
    Usage(String),
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        Failure::Run(e)
    }
}

/// The client of `--api-url` or `FLOWKIT_API_URL`, with `--api-key` or `FLOWKIT_API_KEY`.
fn client(cli: &Cli) -> Result<Client, RunError> {
    let client = match &cli.api_url {
        Some(url) => {
            Client::new(url.as_str())?.api_key(std::env::var("FLOWKIT_API_KEY").unwrap_or_default())
        }
        None => Client::from_env().map_err(|e| match e {
            RunError::Config(message) => RunError::Config(format!("{message} (or give --api-url)")),
            other => other,
        })?,
    };
    Ok(match &cli.api_key {
        Some(key) => client.api_key(key.as_str()),
        None => client,
    })
}

/// `FLOW/NAME` split in two.
fn deployment_name(text: &str) -> Result<(&str, &str), Failure> {
    match text.split_once('/') {
        Some((flow, name)) if !flow.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((flow, name))
        }
        _ => Err(Failure::Usage(format!(
            "{text:?} is not a deployment: give FLOW/NAME, e.g. train/nightly (see `flowkit \
             deployments ls`)"
        ))),
    }
}

/// Adds the `-p NAME=VALUE` pairs to `parameters`, each value read as the parameter's type in
/// the deployment's newest schema (asked of the server only when there are pairs).
async fn add_parameter_pairs(
    client: &Client,
    (flow, name): (&str, &str),
    pairs: &[String],
    parameters: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), Failure> {
    let pairs = crate::params::split(pairs).map_err(RunError::InvalidParameters)?;
    if pairs.is_empty() {
        return Ok(());
    }
    let detail = client.deployment(flow, name).await?;
    let schema = &detail.latest.parameter_schema;
    for (key, value) in pairs {
        let value = crate::params::coerce(schema, &key, &value);
        parameters.insert(key, value);
    }
    Ok(())
}

/// A run id given on the command line.
fn run_id(text: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        Failure::Usage(format!(
            "{text:?} is not a run id: give the UUID `flowkit runs ls` shows"
        ))
    })
}
