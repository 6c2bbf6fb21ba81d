//! The command line: every command, option and the help text (exit codes included).

use clap::{Args, Parser, Subcommand};
use flowkit_wire::api::concurrency_limits::MAX_LIMIT;
use std::path::PathBuf;
use std::time::Duration;

/// The help's description, with the exit codes of `flowkit::client::exit_code`.
const LONG_ABOUT: &str = "\
Runs deployed flows on a flowkit server and reads their runs.

The server is FLOWKIT_API_URL (or --api-url), e.g. http://127.0.0.1:4200; the API key is
FLOWKIT_API_KEY (or --api-key; the variable keeps it out of the process list), sent as
`Authorization: Bearer <key>`: the variables a flowkit program reads to report its runs.

Exit codes:
  0  completed: the run completed, or the command did what it was asked
  1  failed: the run's flow returned an error
  2  crashed: the run panicked, or its worker died with no attempts left
  3  cancelled: the run was cancelled
  4  invalid parameters: the server refused them (each listed with its JSON pointer), or a
     -p / --params-file could not be read
  5  cannot reach the server (or FLOWKIT_API_URL is not set), or it refused the API key
     (unauthorized, or the key lacks the scope)
  6  timed out: the run exceeded the flow's own timeout
  7  still running: --timeout passed before the run ended; it goes on on the server
  8  any other error (no such deployment or run, a conflict, ...)
  9  expired: a scheduled run no worker started within its schedule's max_lateness
  64 the command line is wrong";

/// Runs deployed flows on a flowkit server and reads their runs.
#[derive(Debug, Parser)]
#[command(name = "flowkit", version, long_about = LONG_ABOUT)]
pub struct Cli {
    /// The flowkit server's URL [default: FLOWKIT_API_URL].
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// The API key [default: FLOWKIT_API_KEY].
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print JSON (the server's bodies) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List deployments, or show one with its parameters.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Run a deployment and wait for its result (printed as JSON).
    Run(RunArgs),
    /// List flow runs, or show one.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print a flow run's logs (its own and its tasks'), oldest first.
    Logs(LogsArgs),
    /// Cancel a flow run: at once if it has not started, else its worker stops it.
    Cancel(CancelArgs),
    /// Run a flow run that failed, crashed, timed out or was cancelled again, as its next
    /// attempt.
    Retry(RetryArgs),
    /// Create, list and revoke API keys (needs an `admin` key, or a server without keys).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Alert rules of the server: list, create, delete them, and read their deliveries.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Tag concurrency limits of the server: at most N deployed runs carrying a tag at once,
    /// across every worker (setting and deleting need an `admin` key).
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// List, create, pause, resume or delete a deployment's schedules.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Create the runs of a past range of a deployment's schedules (each instant once).
    Backfill(BackfillArgs),
}

/// `keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret, this once: the server keeps only a digest.
    Create {
        /// The key's name: letters, digits, `-`, `_`, `.`, `@`.
        name: String,
        /// A scope: read, report, trigger, worker, admin, or trigger=FLOW/NAME /
        /// worker=FLOW/NAME for one deployment; repeat for several.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
    },
    /// List the keys: the server's startup keys and the stored ones (never a secret).
    #[command(alias = "list")]
    Ls,
    /// Revoke a stored key, by name or id: every replica refuses it within 5 s.
    Revoke {
        /// The key's name or id.
        key: String,
    },
}

/// `limits ...`
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// List the tags' limits, by tag: the limit and the runs holding a slot now.
    #[command(alias = "ls")]
    List,
    /// Set a tag's limit (creating or replacing it): at most N of its deployed runs at once.
    ///
    /// At most N deployed runs carrying the tag are leased to workers at once, across every
    /// worker and server replica. Lowering it stops no run leased already: no other is claimed
    /// until they are fewer than N.
    #[command(allow_negative_numbers = true)]
    Set {
        /// The tag, as the runs carry it, e.g. `gpu` (quote one with spaces).
        tag: String,
        /// At most this many runs at once: 1 to 1000000 (`flowkit limits delete` lifts it).
        #[arg(
            value_name = "N",
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT))
        )]
        limit: u32,
    },
    /// Delete a tag's limit: the server no longer bounds its runs.
    Delete {
        /// The tag.
        tag: String,
    },
}

/// `alerts ...`
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List the alert rules (URLs masked), oldest first.
    Ls,
    /// Create an alert rule (needs a key with the `admin` scope).
    Create(CreateAlertArgs),
    /// Change an alert rule: only the fields given change (needs an `admin` key).
    Update(UpdateAlertArgs),
    /// Delete an alert rule and its deliveries.
    Delete {
        /// The rule's id.
        id: String,
    },
    /// A rule's deliveries, newest first, with every attempt's status code or error.
    Deliveries {
        /// The rule's id.
        id: String,
        /// At most this many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
}

/// `alerts create NAME ...`
#[derive(Debug, Args)]
pub struct CreateAlertArgs {
    /// What the rule is called (shown in every message).
    pub name: String,
    /// The states that fire it, comma-separated: Failed, Crashed, TimedOut, Late, Expired,
    /// Cancelled.
    #[arg(long, value_name = "STATES")]
    pub states: Option<String>,
    /// Only runs of this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// Only runs of this deployment (FLOW/NAME).
    #[arg(long, value_name = "FLOW/NAME")]
    pub deployment: Option<String>,
    /// Only runs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Also fire once when the workers have all been gone this long, e.g. `5m`.
    #[arg(long, value_name = "DURATION")]
    pub worker_absent_for: Option<String>,
    /// POST the alert as JSON to this URL (a secret: the variable keeps it out of the
    /// process list).
    #[arg(
        long,
        env = "FLOWKIT_ALERT_WEBHOOK",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub webhook: Option<String>,
    /// Post a message to this Slack incoming webhook (a secret, like --webhook).
    #[arg(
        long,
        env = "FLOWKIT_ALERT_SLACK",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub slack: Option<String>,
    /// At most one message per flow this often, e.g. `10m` (the server's default), `0s`.
    #[arg(long, value_name = "DURATION")]
    pub quiet_period: Option<String>,
}

/// `alerts update ID ...`
#[derive(Debug, Args)]
pub struct UpdateAlertArgs {
    /// The rule's id.
    pub id: String,
    /// A new name.
    #[arg(long)]
    pub name: Option<String>,
    /// The states that fire it (replacing the list), comma-separated.
    #[arg(long, value_name = "STATES")]
    pub states: Option<String>,
    /// Only runs of this flow.
    #[arg(long)]
    pub flow: Option<String>,
    /// Only runs of this deployment (FLOW/NAME).
    #[arg(long, value_name = "FLOW/NAME")]
    pub deployment: Option<String>,
    /// Only runs with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Fire once when the workers have all been gone this long, e.g. `5m`.
    #[arg(long, value_name = "DURATION")]
    pub worker_absent_for: Option<String>,
    /// A new webhook URL (the stored one is kept without this flag).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// A new Slack incoming webhook URL (the stored one is kept without this flag).
    #[arg(long, value_name = "URL")]
    pub slack: Option<String>,
    /// At most one message per flow this often, e.g. `10m`, `0s`.
    #[arg(long, value_name = "DURATION")]
    pub quiet_period: Option<String>,
    /// Remove these optional fields, comma-separated: flow, deployment, tag,
    /// worker_absent_for, webhook, slack, quiet_period.
    #[arg(long, value_name = "FIELDS", value_delimiter = ',')]
    pub clear: Vec<String>,
    /// Resume the rule.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Pause the rule: it matches nothing until `--enable`.
    #[arg(long)]
    pub disable: bool,
}

/// `schedules ...`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List a deployment's schedules: id, source, active, next fire time, timing.
    #[command(alias = "ls")]
    List {
        /// The deployment, as FLOW/NAME.
        #[arg(value_name = "FLOW/NAME")]
        deployment: String,
    },
    /// Create a schedule over the API (kept when the deployment registers again).
    Create(CreateScheduleArgs),
    /// Pause a schedule: it creates no run until resumed (survives re-registration).
    Pause {
        /// The schedule's id (`flowkit schedules list`).
        id: String,
    },
    /// Resume a schedule from now (the instants passed while paused get no run).
    Resume {
        /// The schedule's id.
        id: String,
    },
    /// Delete a schedule created over the API (one from code is replaced at registration).
    Delete {
        /// The schedule's id.
        id: String,
    },
}

/// `schedules create FLOW/NAME ...`
#[derive(Debug, Args)]
pub struct CreateScheduleArgs {
    /// The deployment, as FLOW/NAME.
    #[arg(value_name = "FLOW/NAME")]
    pub deployment: String,
    /// A five-field cron expression, e.g. "0 3 * * *".
    #[arg(
        long,
        value_name = "EXPR",
        conflicts_with = "interval",
        required_unless_present = "interval"
    )]
    pub cron: Option<String>,
    /// A fixed interval, e.g. 15m.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// The IANA time zone the cron expression is read in, e.g. Europe/Paris [default: UTC].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// A parameter of its runs, as NAME=VALUE (read as the deployment's schema says); repeat
    /// for several.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Missed instants: latest (default), none or all.
    #[arg(long, value_name = "POLICY")]
    pub catchup: Option<String>,
    /// An instant due while a run is going: skip (default), allow, queue_one, cancel_running.
    #[arg(long, value_name = "POLICY")]
    pub overlap: Option<String>,
    /// A run not started this long after its instant ends Expired, e.g. 30m.
    #[arg(long, value_name = "DURATION")]
    pub max_lateness: Option<String>,
}

/// `backfill FLOW/NAME --from ... --to ...`
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The deployment, as FLOW/NAME.
    #[arg(value_name = "FLOW/NAME")]
    pub deployment: String,
    /// The first instant (RFC 3339, e.g. 2026-01-01T00:00:00Z), included.
    #[arg(long, value_name = "INSTANT")]
    pub from: String,
    /// The last instant (RFC 3339), included; not after now.
    #[arg(long, value_name = "INSTANT")]
    pub to: String,
    /// At most this many of its runs at once.
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<u32>,
    /// Only this schedule's instants [default: every schedule of the deployment].
    #[arg(long, value_name = "ID")]
    pub schedule: Option<String>,
}

/// `deployments ...`
#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List the deployments, newest first.
    Ls {
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show a deployment: its description, parameters, workers and recent runs.
    Show {
        /// The deployment, as FLOW/NAME.
        #[arg(value_name = "FLOW/NAME")]
        deployment: String,
    },
}

/// `run FLOW/NAME ...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The deployment, as FLOW/NAME.
    #[arg(value_name = "FLOW/NAME")]
    pub deployment: String,
    /// A parameter, as NAME=VALUE; repeat for several. The value is read as the deployment's
    /// parameter schema says: a number, true/false, a JSON array or object; for a string
    /// parameter, the text as it is.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Parameters from a file holding a JSON object (`-` reads standard input); -p values
    /// take precedence.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// A key that makes the trigger idempotent: the same key with the same parameters gives
    /// back the run it created (within the server's retention of keys, 24 hours by default).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the run's id (the run with --json) and exit without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the run to end, e.g. `90s`, `30m`, `2h`; then exit 7 (the run
    /// goes on).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `runs ...`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List flow runs, newest first.
    Ls {
        /// Only runs in these states (comma-separated, e.g. `Failed,Crashed`).
        #[arg(long, value_name = "STATES")]
        state: Option<String>,
        /// Only runs of this deployment (FLOW/NAME).
        #[arg(long, value_name = "FLOW/NAME")]
        deployment: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show a flow run.
    Show {
        /// The run's id.
        id: String,
    },
}

/// `logs ID ...`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The flow run's id.
    pub id: String,
    /// Keep printing new lines until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// With --follow: how often to ask for new lines (100ms to 60s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_poll_interval)]
    pub poll_interval: Duration,
}

/// `cancel ID`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The flow run's id.
    pub id: String,
    /// Why (shown as the message of the run's state).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `retry ID`
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The flow run's id.
    pub id: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; give a duration such as 90s, 30m or 2h"))
}

fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&interval) {
        return Err("give an interval from 100ms to 60s".to_string());
    }
    Ok(interval)
}
