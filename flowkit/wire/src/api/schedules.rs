//! Schedules of a deployment: when the server creates its runs by itself.
//!
//! A [`ScheduleSpec`] is either a cron expression read in a time zone (`"0 3 * * *"` in
//! `"Europe/Paris"`) or a fixed interval (`"15m"`) counted from an anchor instant. The server
//! creates a run only when an instant is due (no backlog is created ahead of time), under a
//! permanent key (schedule, instant), so two replicas never create it twice.
//!
//! The rules of time (daylight saving time, catch-up after an outage, overlapping runs,
//! lateness) are written on the types below; [`crate::schedule`] (feature `schedule`) computes
//! the instants.
//!
//! ```
//! use flowkit_wire::api::schedules::{Catchup, Overlap, ScheduleSpec};
//!
//! let nightly: ScheduleSpec = serde_json::from_str(
//!     r#"{"cron": "0 3 * * *", "timezone": "Europe/Paris", "parameters": {"epochs": 50}}"#,
//! ).unwrap();
//! assert_eq!(nightly.catchup, Catchup::Latest);
//! assert_eq!(nightly.overlap, Overlap::Skip);
//!
//! let every_quarter_hour = ScheduleSpec::interval("15m");
//! assert_eq!(serde_json::to_value(&every_quarter_hour).unwrap()["interval"], "15m");
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// The most runs one catch-up with [`Catchup::All`] creates; older missed instants are skipped
/// and counted, as with [`Catchup::Latest`].
pub const CATCHUP_ALL_MAX: usize = 100;

/// The most schedules one deployment may have.
pub const MAX_SCHEDULES_PER_DEPLOYMENT: usize = 32;

/// When a deployment runs by itself: a cron expression in a time zone, or a fixed interval.
///
/// Exactly one of [`cron`](Self::cron) and [`interval`](Self::interval) is given.
///
/// **Daylight saving time.** A cron expression is read on the wall clock of
/// [`timezone`](Self::timezone):
/// - a local time that does not exist (the hour skipped in spring) runs at the first instant
///   after the gap (`30 2 * * *` in Europe/Paris runs at 03:00 on the last Sunday of March);
/// - a local time that occurs twice (the hour repeated in autumn) runs once, the first time;
/// - an expression whose hour field is `*` (hourly or finer) fires on every real hour: through
///   the repeated hour twice, and never for the wall-clock times that do not exist.
///
/// An interval counts real time: `"1d"` is 24 hours, 23 or 25 hours of wall clock across a
/// change of time; use a cron expression for "every day at 03:00".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A five-field cron expression (minute hour day-of-month month day-of-week, as in Vixie
    /// cron, e.g. `"0 3 * * *"`; `@daily` and the other nicknames are accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval in humantime form (`"15m"`, `"1h 30m"`, `"1d"`), at least one second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The instant an interval is counted from (default: 1970-01-01T00:00:00Z, so `"15m"`
    /// fires at :00, :15, :30 and :45). Only with `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<DateTime<Utc>>,
    /// The IANA time zone the cron expression is read in (`"Europe/Paris"`); default `"UTC"`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Parameters of the runs this schedule creates, over the deployment's defaults; checked
    /// against the deployment's parameter schema when the schedule is registered.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Map<String, Value>,
    /// What happens to the instants missed while no server was running.
    #[serde(default)]
    pub catchup: Catchup,
    /// What happens when an instant is due while a run of this schedule is still going.
    #[serde(default)]
    pub overlap: Overlap,
    /// A run not started this long (humantime, e.g. `"30m"`) after its instant ends `Expired`
    /// instead of starting late; none: it waits for a worker however long it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lateness: Option<String>,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

impl ScheduleSpec {
    /// A schedule of a cron expression, in UTC until [`timezone`](Self::timezone) is set.
    pub fn cron(expression: impl Into<String>) -> ScheduleSpec {
        ScheduleSpec {
            cron: Some(expression.into()),
            ..ScheduleSpec::empty()
        }
    }

    /// A schedule of a fixed interval (humantime: `"15m"`), counted from the Unix epoch until
    /// [`anchor`](Self::anchor) is set.
    pub fn interval(every: impl Into<String>) -> ScheduleSpec {
        ScheduleSpec {
            interval: Some(every.into()),
            ..ScheduleSpec::empty()
        }
    }

    fn empty() -> ScheduleSpec {
        ScheduleSpec {
            cron: None,
            interval: None,
            anchor: None,
            timezone: default_timezone(),
            parameters: Map::new(),
            catchup: Catchup::default(),
            overlap: Overlap::default(),
            max_lateness: None,
        }
    }
}

/// What a schedule does with the instants it missed (no server replica was running, or the
/// schedule was paused and resumed: paused instants are never caught up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// One run for the latest missed instant; the run records how many earlier instants were
    /// skipped.
    #[default]
    Latest,
    /// No run for missed instants: the schedule goes on from the next one.
    None,
    /// One run per missed instant, at most [`CATCHUP_ALL_MAX`] (the newest); the rest are
    /// skipped and counted.
    All,
}

/// What a schedule does when an instant is due while an earlier run of it has not ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// No run for this instant (it is counted as skipped).
    #[default]
    Skip,
    /// A run for every instant, however many are going.
    Allow,
    /// At most one run waits behind the one going; further instants are skipped.
    QueueOne,
    /// The run going is cancelled and a run for the new instant is created.
    CancelRunning,
}

/// Where a schedule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// Declared in code (`.cron(…)`, `.schedule(…)` on a deployment): replaced by each
    /// registration of the deployment.
    Code,
    /// Created over the API: kept until deleted.
    Api,
}

/// A schedule as the server holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// Its id: derived from the deployment and the timing (cron or interval, time zone,
    /// anchor) for a schedule declared in code, so registering it again keeps it.
    pub id: Uuid,
    /// Where it comes from.
    pub source: ScheduleSource,
    /// Whether it creates runs (false while paused).
    pub active: bool,
    /// When it is next due (none while paused, or when no instant is left).
    pub next_at: Option<DateTime<Utc>>,
    /// What it is.
    pub spec: ScheduleSpec,
}

/// The most runs one backfill creates (instants of the range over all its schedules); a
/// longer range is refused (422): split it.
pub const MAX_BACKFILL_RUNS: usize = 1000;

/// `POST /deployments/{flow}/{name}/backfill`: create the runs of a past range of a
/// deployment's schedules, under the same permanent keys (schedule, instant) as the scheduler,
/// so an instant that already has a run (from the scheduler or an earlier backfill) gets none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The first instant of the range (included).
    pub from: DateTime<Utc>,
    /// The last instant of the range (included); not after now: the instants to come are the
    /// scheduler's.
    pub to: DateTime<Utc>,
    /// At most this many runs of this backfill are claimed by workers at once (the others wait,
    /// `Scheduled`, oldest instant first); none: no limit but the deployment's own.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api::whole::opt_u32"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max_parallel: Option<u32>,
    /// The schedule whose instants to backfill; none: every schedule of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Uuid>,
}

/// What a backfill did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backfilled {
    /// The backfill's id: its runs carry the tags `backfill` and `backfill:ID` (with its
    /// `max_parallel`) and `created_by` = `backfill:…`.
    pub id: Uuid,
    /// Instants of the range, over the schedules backfilled.
    pub instants: u64,
    /// Runs created now.
    pub created: u64,
    /// Instants that already had a run (by the scheduler or an earlier backfill): none created.
    pub existing: u64,
}
