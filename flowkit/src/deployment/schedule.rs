//! [`Schedule`]: when the server runs a deployment by itself.

use flowkit_wire::api::schedules::ScheduleSpec;
pub use flowkit_wire::api::schedules::{Catchup, Overlap};
use serde_json::Value;

/// When the server runs a deployment by itself, with the parameters of those runs. Give it to
/// [`Deployment::schedule`](super::Deployment::schedule), as many as needed; for a single
/// schedule, [`Deployment::cron`](super::Deployment::cron) and
/// [`Deployment::interval`](super::Deployment::interval) are shorter.
///
/// The server creates a run only when an instant is due (never a backlog ahead of time), once
/// per instant whatever the number of server replicas. Its rules:
///
/// - **Time zones and daylight saving time**: a cron expression is read on the wall clock of
///   its [`timezone`](Schedule::timezone) (default UTC). A local time that does not exist
///   (spring forward) runs at the first instant after the gap; a local time that occurs
///   twice (fall back) runs once, the first time; an expression whose hour field is `*`
///   (hourly or finer) fires on every real hour.
/// - **Catch-up** ([`Catchup`], default [`Catchup::Latest`]): what happens to the instants
///   missed while no server ran: one run for the latest, none, or one each (at most 100).
/// - **Overlap** ([`Overlap`], default [`Overlap::Skip`]): what happens when an instant is
///   due while an earlier run of the schedule has not ended.
/// - **Max lateness**: a run not started that long after its instant ends `Expired`.
///
/// Everything is checked by [`Deployment::spec`](super::Deployment::spec), so a worker with a
/// bad schedule never starts: an unknown time zone, a cron expression that is not five
/// fields, an interval under a second, parameters the flow's types refuse.
///
/// ```
/// use flowkit::{Catchup, Overlap, Schedule};
/// use serde_json::json;
///
/// # #[flowkit::flow] async fn train(epochs: u32) {}
/// let d = train::deployment("nightly")
///     .parameters(json!({"epochs": 50}))
///     .schedule(Schedule::cron("0 3 * * *").timezone("Europe/Paris"))
///     .schedule(
///         Schedule::cron("0 12 * * SAT")
///             .timezone("Europe/Paris")
///             .parameters(json!({"epochs": 500}))
///             .catchup(Catchup::None)
///             .overlap(Overlap::QueueOne)
///             .max_lateness("2h"),
///     );
/// let spec = d.spec().unwrap();
/// assert_eq!(spec.schedules.len(), 2);
/// assert_eq!(spec.schedules[1].parameters["epochs"], 500);
///
/// let bad = train::deployment("bad").schedule(Schedule::cron("0 3 * * *").timezone("Paris"));
/// let err = bad.spec().unwrap_err();
/// assert_eq!(err.errors[0].pointer, "/schedules/0/timezone");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    spec: ScheduleSpec,
    /// Parameters as given (checked to be an object by `Deployment::spec`).
    parameters: Value,
}

impl Schedule {
    /// Runs at the instants of a five-field cron expression (minute hour day-of-month month
    /// day-of-week, e.g. `"0 3 * * *"`; `@daily` and the other nicknames work too).
    pub fn cron(expression: impl Into<String>) -> Schedule {
        Schedule::from_spec(ScheduleSpec::cron(expression))
    }

    /// Runs every `every` of real time (humantime: `"15m"`, `"1h 30m"`, `"1d"`), counted from
    /// the Unix epoch unless [`anchor`](Schedule::anchor) says otherwise: `"15m"` runs at :00,
    /// :15, :30 and :45.
    pub fn interval(every: impl Into<String>) -> Schedule {
        Schedule::from_spec(ScheduleSpec::interval(every))
    }

    fn from_spec(spec: ScheduleSpec) -> Schedule {
        Schedule {
            spec,
            parameters: Value::Object(serde_json::Map::new()),
        }
    }

    /// The IANA time zone a cron expression is read in (`"Europe/Paris"`); default UTC.
    pub fn timezone(mut self, zone: impl Into<String>) -> Schedule {
        self.spec.timezone = zone.into();
        self
    }

    /// The instant an interval is counted from.
    pub fn anchor(mut self, at: chrono::DateTime<chrono::Utc>) -> Schedule {
        self.spec.anchor = Some(at);
        self
    }

    /// Parameters of the runs it creates (a JSON object), over the deployment's defaults.
    pub fn parameters(mut self, parameters: Value) -> Schedule {
        self.parameters = parameters;
        self
    }

    /// What happens to missed instants (default [`Catchup::Latest`]).
    pub fn catchup(mut self, catchup: Catchup) -> Schedule {
        self.spec.catchup = catchup;
        self
    }

    /// What happens when an instant is due while an earlier run has not ended (default
    /// [`Overlap::Skip`]).
    pub fn overlap(mut self, overlap: Overlap) -> Schedule {
        self.spec.overlap = overlap;
        self
    }

    /// A run not started `lateness` (humantime: `"30m"`) after its instant ends `Expired`
    /// instead of starting late.
    pub fn max_lateness(mut self, lateness: impl Into<String>) -> Schedule {
        self.spec.max_lateness = Some(lateness.into());
        self
    }

    /// The spec as registered, and the parameters as given (to be checked as an object).
    pub(crate) fn parts(&self) -> (&ScheduleSpec, &Value) {
        (&self.spec, &self.parameters)
    }

    pub(crate) fn spec_mut(&mut self) -> &mut ScheduleSpec {
        &mut self.spec
    }
}
