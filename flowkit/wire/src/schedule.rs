//! The instants of a schedule: a [`ScheduleSpec`] checked and compiled into a [`Schedule`]
//! that says when it is next due. Feature `schedule` (croner for cron expressions, chrono-tz
//! for time zones, humantime for durations).
//!
//! The runtime checks every schedule before it registers anything, so a worker never starts
//! half-registered; the server checks them again and computes the instants its tick creates
//! runs for. The daylight-saving rules are those written on [`ScheduleSpec`].
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use flowkit_wire::api::schedules::ScheduleSpec;
//! use flowkit_wire::schedule::Schedule;
//!
//! let mut spec = ScheduleSpec::cron("30 2 * * *");
//! spec.timezone = "Europe/Paris".into();
//! let schedule = Schedule::compile(&spec).unwrap();
//! // 02:30 does not exist in Paris on 2026-03-29: the run is at 03:00 local, 01:00 UTC.
//! let before = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
//! assert_eq!(
//!     schedule.next_after(before),
//!     Some(Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap())
//! );
//!
//! let bad = ScheduleSpec::cron("0 3 * *");
//! let error = Schedule::compile(&bad).unwrap_err();
//! assert_eq!(error.field, "cron");
//! assert!(error.message.contains("0 3 * * *"));
//! ```

use crate::api::schedules::ScheduleSpec;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A schedule that cannot be used: which field is wrong, and what a valid one looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    /// The field at fault (`cron`, `interval`, `anchor`, `timezone`, `max_lateness`).
    pub field: &'static str,
    /// What is wrong, with an example of a valid value.
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ScheduleError {}

fn error(field: &'static str, message: String) -> ScheduleError {
    ScheduleError { field, message }
}

/// A checked schedule that computes its instants.
#[derive(Clone, Debug)]
pub struct Schedule {
    rule: Rule,
    max_lateness: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Rule {
    Cron {
        cron: Box<Cron>,
        zone: Tz,
        /// The hour field matches every hour: the schedule fires on every real hour.
        hourly: bool,
    },
    Interval {
        every: Duration,
        anchor: DateTime<Utc>,
    },
}

impl Schedule {
    /// Checks `spec` and compiles it: exactly one of `cron` and `interval`; a five-field cron
    /// expression that matches some instant; a known IANA time zone; an interval and a
    /// `max_lateness` of at least one second.
    pub fn compile(spec: &ScheduleSpec) -> Result<Schedule, ScheduleError> {
        let zone: Tz = spec.timezone.parse().map_err(|_| {
            error(
                "timezone",
                format!(
                    "unknown time zone {:?}: use an IANA name such as \"Europe/Paris\", \
                     \"America/New_York\" or \"UTC\"",
                    spec.timezone
                ),
            )
        })?;
        let rule = match (&spec.cron, &spec.interval) {
            (Some(expression), None) => {
                if spec.anchor.is_some() {
                    return Err(error(
                        "anchor",
                        "an anchor counts intervals; a cron schedule has none: remove `anchor`, \
                         or use `interval` (e.g. \"15m\") instead of `cron`"
                            .into(),
                    ));
                }
                let cron = parse_cron(expression)?;
                let hourly = (0..24).all(|h| cron.pattern.hour_match(h).unwrap_or(false));
                let rule = Rule::Cron {
                    cron: Box::new(cron),
                    zone,
                    hourly,
                };
                // An expression that never matches (`0 0 30 2 *`) would make every lookup
                // search to the end of time.
                if next_cron(&rule, Utc::now()).is_none() {
                    return Err(error(
                        "cron",
                        format!(
                            "{expression:?} never matches a date (e.g. February 30th): \
                             check the day and month fields, e.g. \"0 3 28 2 *\""
                        ),
                    ));
                }
                rule
            }
            (None, Some(every)) => Rule::Interval {
                every: parse_duration("interval", every, "\"15m\", \"1h\" or \"1d\"")?,
                anchor: spec.anchor.unwrap_or(DateTime::UNIX_EPOCH),
            },
            (Some(_), Some(_)) => {
                return Err(error(
                    "cron",
                    "a schedule has either `cron` or `interval`, not both: give two schedules \
                     if you need both"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(error(
                    "cron",
                    "a schedule needs `cron` (e.g. \"0 3 * * *\") or `interval` (e.g. \"15m\")"
                        .into(),
                ));
            }
        };
        let max_lateness = spec
            .max_lateness
            .as_deref()
            .map(|text| parse_duration("max_lateness", text, "\"30m\" or \"2h\""))
            .transpose()?;
        let schedule = Schedule { rule, max_lateness };
        if let Rule::Interval { .. } = schedule.rule
            && schedule.next_after(Utc::now()).is_none()
        {
            return Err(error(
                if spec.anchor.is_some() {
                    "anchor"
                } else {
                    "interval"
                },
                "the interval counted from the anchor overflows the calendar: use an interval \
                 under a century and an anchor near today, e.g. \"1d\" from \
                 \"2026-01-01T00:00:00Z\""
                    .into(),
            ));
        }
        Ok(schedule)
    }

    /// The first instant of the schedule strictly after `after`; `None` when there is none
    /// before the year 5000.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Cron { .. } => next_cron(&self.rule, after),
            Rule::Interval { every, anchor } => {
                let every_ns = every.num_nanoseconds()?;
                let since = after.signed_duration_since(*anchor).num_nanoseconds()?;
                // The first k with anchor + k·every > after (k may be negative).
                let k = since.div_euclid(every_ns) + 1;
                anchor.checked_add_signed(Duration::nanoseconds(k.checked_mul(every_ns)?))
            }
        }
    }

    /// The instants in `(after, until]`, oldest first, at most `cap` of them (the oldest ones),
    /// and whether more were left out.
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        cap: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut instants = Vec::new();
        let mut at = after;
        while let Some(next) = self.next_after(at).filter(|next| *next <= until) {
            if instants.len() == cap {
                return (instants, true);
            }
            instants.push(next);
            at = next;
        }
        (instants, false)
    }

    /// How late a run of this schedule may start before it ends `Expired`, if bounded.
    pub fn max_lateness(&self) -> Option<Duration> {
        self.max_lateness
    }
}

/// A five-field cron expression (Vixie cron: day-of-month and day-of-week match when either
/// does), or a nickname (`@daily`, `@hourly`, …).
fn parse_cron(expression: &str) -> Result<Cron, ScheduleError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| {
            error(
                "cron",
                format!(
                    "{expression:?} is not a cron expression ({e}): give five fields, minute \
                     hour day-of-month month day-of-week, e.g. \"0 3 * * *\" for every day at \
                     03:00"
                ),
            )
        })
}

fn parse_duration(
    field: &'static str,
    text: &str,
    example: &str,
) -> Result<Duration, ScheduleError> {
    let parsed = humantime::parse_duration(text).map_err(|e| {
        error(
            field,
            format!("{text:?} is not a duration ({e}): use e.g. {example}"),
        )
    })?;
    if parsed < MIN_INTERVAL {
        return Err(error(
            field,
            format!("{text:?} is shorter than one second: use e.g. {example}"),
        ));
    }
    Duration::from_std(parsed)
        .map_err(|_| error(field, format!("{text:?} is too long: use e.g. {example}")))
}

fn next_cron(rule: &Rule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let Rule::Cron { cron, zone, hourly } = rule else {
        return None;
    };
    if *hourly {
        // Every real instant whose wall-clock time matches: croner walks real time, through
        // both passes of a repeated hour, and wall-clock times in a gap never occur.
        return cron
            .find_next_occurrence(&after.with_timezone(zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc));
    }
    // Walk the wall clock's matching times from `after`'s wall-clock time and place each on
    // the time line: the first pass of a repeated time, the end of the gap for a skipped one.
    // That placing never goes backwards, so the first placed after `after` is the answer.
    let mut wall = after.with_timezone(zone).naive_local();
    let mut inclusive = true;
    // Bounded: placed instants grow with the wall clock, which passes `after` within a day of
    // wall-clock matches; each step is a croner search bounded by its year limit.
    for _ in 0..10_000 {
        let candidate = cron.find_next_occurrence(&wall, inclusive).ok()?;
        let placed = place(*zone, candidate)?;
        if placed > after {
            return Some(placed);
        }
        wall = candidate;
        inclusive = false;
    }
    None
}

/// The instant of a wall-clock time in `zone`: itself; the earlier of two; or, for a time the
/// clock skipped, the first instant after the gap.
fn place(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.with_timezone(&Utc)),
        LocalResult::None => {
            // Gaps are at most a day long (Samoa skipped 2011-12-30) and start and end on
            // whole minutes in every zone since 1970.
            let mut probe = wall;
            for _ in 0..(26 * 60) {
                probe = probe.checked_add_signed(Duration::minutes(1))?;
                if let Some(at) = zone.from_local_datetime(&probe).earliest() {
                    let end = at.with_timezone(&Utc);
                    // The minute found may lie past the gap's end when the gap does not end
                    // on a whole minute of `wall`'s seconds: step back to the first instant
                    // whose wall-clock time is not in the gap.
                    let mut first = end;
                    while let Some(earlier) = first.checked_sub_signed(Duration::seconds(1)) {
                        let local = earlier.with_timezone(&zone).naive_local();
                        if local <= wall {
                            break;
                        }
                        first = earlier;
                    }
                    return Some(first);
                }
            }
            None
        }
    }
}
