//! What both backends share: turning batches of events into rows (deduplicated, with the
//! per-run fold done once in memory so each run is upserted once per transaction), the
//! encodings of enums and instants, and the arithmetic of stats and retention.
//!
//! The fold here and the upsert in SQL implement the same merge, so a run's row is the same
//! whatever the order and grouping in which its events arrive:
//! - latest state: the state event with the greatest `(timestamp µs, event id)`;
//! - `created`: the least timestamp; `started`: the least timestamp of a `Running` state;
//! - `ended`: the latest state's timestamp when that state is final;
//! - details: taken from the event that carries them (sent once per run); if several events
//!   carried details, the first one stored wins;
//! - a state the server decided is kept: while the row's `server_state` is set (a claim,
//!   a crash, a re-queue, a cancellation, a worker's finish, see `store::leases`), a client's
//!   state event is stored in the history but does not change the row, whatever its timestamp, EXCEPT the worker
//!   starting a run it claimed: a `Running` event carrying the run's current fencing token
//!   (`Event::lease`) while the row is `Pending` takes over (whatever its timestamp) and clears
//!   `server_state`. Events with an older token never get here (ingestion refuses them), and
//!   if the reaper moves the token on between that check and the write, the token no longer
//!   matches and the event changes nothing. The rule is in the upsert (`queries::merge_runs`);
//!   the fold of one batch below only sees client events.

use super::{IngestOutcome, Stats, StatsBucket, StoreError};
use chrono::{DateTime, Utc};
use flowkit_wire::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use flowkit_wire::state::StateType;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// A value read from the database that the server cannot have written.
pub(crate) fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

/// An instant as microseconds since the Unix epoch: the precision both backends keep.
pub(crate) fn micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

/// The inverse of [`micros`].
pub(crate) fn from_micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| corrupt(format!("instant {value}µs is out of range")))
}

/// Parses a state type stored by [`StateType::as_str`]. A name this version does not know
/// (written by a newer server sharing the database) reads as [`StateType::Unknown`].
pub(crate) fn parse_state(text: &str) -> Result<StateType, StoreError> {
    Ok(StateType::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .unwrap_or(StateType::Unknown))
}

/// Parses a run kind stored by [`RunKind::as_str`].
pub(crate) fn parse_kind(text: &str) -> Result<RunKind, StoreError> {
    match text {
        "flow" => Ok(RunKind::Flow),
        "task" => Ok(RunKind::Task),
        other => Err(corrupt(format!("unknown run kind {other:?}"))),
    }
}

/// A log level as stored: ordered, so "at or above" is `>=`.
pub(crate) fn level_number(level: LogLevel) -> i16 {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
    }
}

/// The inverse of [`level_number`].
pub(crate) fn parse_level(number: i64) -> Result<LogLevel, StoreError> {
    Ok(match number {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        other => return Err(corrupt(format!("unknown log level {other}"))),
    })
}

/// A stored attempt number.
pub(crate) fn parse_attempt(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(format!("attempt {value} is out of range")))
}

/// The group a run's rows are read and deleted with: its flow run, or itself without one.
pub(crate) fn group_of(run_id: Uuid, flow_run_id: Option<Uuid>) -> Uuid {
    flow_run_id.unwrap_or(run_id)
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))
}

/// One row of `run_states`.
#[derive(Clone, Debug)]
pub(crate) struct StateRow {
    pub event_id: Uuid,
    pub run_id: Uuid,
    pub group_id: Uuid,
    pub state: StateType,
    pub message: Option<String>,
    pub attempt: u32,
    /// Microseconds since the epoch.
    pub ts: i64,
}

/// One row of `logs`.
#[derive(Clone, Debug)]
pub(crate) struct LogRow {
    pub event_id: Uuid,
    pub run_id: Uuid,
    pub flow_run_id: Option<Uuid>,
    pub group_id: Uuid,
    pub run_name: String,
    pub level: LogLevel,
    pub message: String,
    /// The fields as a JSON object, `None` when there are none.
    pub fields: Option<String>,
    pub attempt: u32,
    pub ts: i64,
}

/// The details columns of a run, encoded for storage.
#[derive(Clone, Debug, Default)]
pub(crate) struct DetailsRow {
    pub task_key: String,
    pub version: Option<String>,
    pub tags: Vec<String>,
    /// JSON text.
    pub parameters: Option<String>,
    pub upstream: Vec<Uuid>,
    pub cache_key: Option<String>,
    pub deployment: Option<String>,
    pub worker: Option<String>,
}

impl DetailsRow {
    fn new(details: RunDetails) -> Result<DetailsRow, StoreError> {
        Ok(DetailsRow {
            task_key: details.task_key.into_owned(),
            version: details.version.map(Cow::into_owned),
            tags: details.tags.into_iter().map(Cow::into_owned).collect(),
            parameters: details.parameters.as_ref().map(json_text).transpose()?,
            upstream: details.upstream,
            cache_key: details.cache_key,
            deployment: details.deployment,
            worker: details.worker.map(Cow::into_owned),
        })
    }

    /// The tags as a JSON array (the SQLite column).
    pub(crate) fn tags_json(&self) -> Result<String, StoreError> {
        json_text(&self.tags)
    }

    /// The upstream ids as a JSON array of strings (the SQLite column).
    pub(crate) fn upstream_json(&self) -> Result<String, StoreError> {
        json_text(&self.upstream)
    }
}

/// One run as folded from the state events of a transaction, ready to be upserted.
#[derive(Clone, Debug)]
pub(crate) struct RunRow {
    pub id: Uuid,
    pub kind: RunKind,
    pub name: String,
    pub parent_run_id: Option<Uuid>,
    pub flow_run_id: Option<Uuid>,
    pub state: StateType,
    pub state_message: Option<String>,
    pub state_ts: i64,
    pub state_event_id: Uuid,
    pub attempt: u32,
    pub created: i64,
    pub started: Option<i64>,
    pub ended: Option<i64>,
    pub details: Option<DetailsRow>,
    /// The fencing token carried by the event of the latest state (0: none).
    pub lease_token: i64,
    /// When the server took the events in (µs, its own clock): the row's `received` when the
    /// upsert creates it (an existing row keeps its own). Retention goes by it, so a client's
    /// timestamps cannot make a run look old.
    pub received: i64,
}

/// What a state event contributes to its run's row besides its `run_states` row.
#[derive(Debug)]
struct RunFacts {
    kind: RunKind,
    name: String,
    parent_run_id: Option<Uuid>,
    flow_run_id: Option<Uuid>,
    details: Option<DetailsRow>,
    /// The event's fencing token, 0 without one.
    lease_token: i64,
}

/// The rows one transaction writes, from one or more ingest requests.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Distinct state events, sorted by event id (a stable lock order on PostgreSQL).
    pub states: Vec<StateRow>,
    /// Distinct log events, sorted by event id.
    pub logs: Vec<LogRow>,
    /// Parallel to `states` before sorting; kept with each state row after.
    facts: Vec<RunFacts>,
    /// For each row of `states` then `logs`, the request it came from.
    state_owner: Vec<usize>,
    log_owner: Vec<usize>,
    /// Per request: events in it, and events that repeated an id seen earlier in this plan.
    sizes: Vec<(usize, usize)>,
    /// When the plan was made (µs, the server's clock): the `received` of the runs it creates.
    received: i64,
    /// The runs of every state event of the plan, folded when the plan is made (by the
    /// request's task, off the writer): what [`Plan::runs`] answers when every one of them is
    /// newly stored, as they are unless events are sent again.
    folded: Vec<RunRow>,
}

impl Plan {
    /// The plan's state and log rows whose event id is not in `found` (the ids already
    /// stored): what ingestion still has to insert.
    pub(crate) fn unseen(
        &self,
        found: &std::collections::HashSet<Uuid>,
    ) -> (Vec<&StateRow>, Vec<&LogRow>) {
        let states = self
            .states
            .iter()
            .filter(|r| !found.contains(&r.event_id))
            .collect();
        let logs = self
            .logs
            .iter()
            .filter(|r| !found.contains(&r.event_id))
            .collect();
        (states, logs)
    }

    /// Splits the requests' events into rows, moving their names, messages and details into
    /// them, and drops repeats of an id already in the plan (they are duplicates whatever the
    /// database says). A failed group is retried plan by plan, from the rows.
    pub(crate) fn new(requests: Vec<Vec<Event>>) -> Result<Plan, StoreError> {
        let total: usize = requests.iter().map(Vec::len).sum();
        let mut seen = HashSet::with_capacity(total);
        let mut plan = Plan {
            received: micros(Utc::now()),
            ..Plan::default()
        };
        // Sized once (no reallocation on the way).
        let state_events = requests
            .iter()
            .flatten()
            .filter(|event| matches!(event.body, EventBody::State { .. }))
            .count();
        let mut states = Vec::with_capacity(state_events);
        let mut logs = Vec::with_capacity(total - state_events);
        for (owner, events) in requests.into_iter().enumerate() {
            let mut repeats = 0;
            let len = events.len();
            for event in events {
                if !seen.insert(event.id) {
                    repeats += 1;
                    continue;
                }
                let group_id = group_of(event.run_id, event.flow_run_id);
                let ts = micros(event.timestamp);
                match event.body {
                    EventBody::State { state, details } => {
                        let facts = RunFacts {
                            kind: event.run_kind,
                            name: event.name.into_owned(),
                            parent_run_id: event.parent_run_id,
                            flow_run_id: event.flow_run_id,
                            details: details.map(|d| DetailsRow::new(*d)).transpose()?,
                            lease_token: event
                                .lease
                                .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
                        };
                        let row = StateRow {
                            event_id: event.id,
                            run_id: event.run_id,
                            group_id,
                            state: state.kind,
                            message: state.message,
                            attempt: event.attempt,
                            ts,
                        };
                        states.push((row, facts, owner));
                    }
                    EventBody::Log {
                        level,
                        message,
                        fields,
                    } => {
                        let fields = if fields.is_empty() {
                            None
                        } else {
                            Some(json_text(&fields)?)
                        };
                        let row = LogRow {
                            event_id: event.id,
                            run_id: event.run_id,
                            flow_run_id: event.flow_run_id,
                            group_id,
                            run_name: event.name.into_owned(),
                            level,
                            message,
                            fields,
                            attempt: event.attempt,
                            ts,
                        };
                        logs.push((row, owner));
                    }
                    // A kind of event this server does not know yet: nothing to store. It is
                    // counted as accepted (the API validates bodies before they get here).
                    _ => {}
                }
            }
            plan.sizes.push((len, repeats));
        }
        // Ids are unique here, so an unstable sort gives the one order.
        states.sort_unstable_by_key(|(row, _, _)| row.event_id);
        logs.sort_unstable_by_key(|(row, _)| row.event_id);
        plan.states.reserve_exact(states.len());
        plan.facts.reserve_exact(states.len());
        plan.state_owner.reserve_exact(states.len());
        plan.logs.reserve_exact(logs.len());
        plan.log_owner.reserve_exact(logs.len());
        for (row, facts, owner) in states {
            plan.states.push(row);
            plan.facts.push(facts);
            plan.state_owner.push(owner);
        }
        for (row, owner) in logs {
            plan.logs.push(row);
            plan.log_owner.push(owner);
        }
        plan.folded = plan.fold(|_| true);
        Ok(plan)
    }

    /// Whether the plan writes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.logs.is_empty()
    }

    /// What each request did, given the ids the database newly stored.
    pub(crate) fn outcomes(&self, stored: &HashSet<Uuid>) -> Vec<IngestOutcome> {
        let mut duplicates: Vec<usize> = self.sizes.iter().map(|&(_, repeats)| repeats).collect();
        for (row, &owner) in self.states.iter().zip(&self.state_owner) {
            if !stored.contains(&row.event_id) {
                duplicates[owner] += 1;
            }
        }
        for (row, &owner) in self.logs.iter().zip(&self.log_owner) {
            if !stored.contains(&row.event_id) {
                duplicates[owner] += 1;
            }
        }
        self.outcomes_with(duplicates)
    }

    /// What each request did when the database newly stored every row of the plan (the
    /// only duplicates are the ids repeated within the plan).
    pub(crate) fn outcomes_all_new(&self) -> Vec<IngestOutcome> {
        self.outcomes_with(self.sizes.iter().map(|&(_, repeats)| repeats).collect())
    }

    /// Each request's outcome, given its count of duplicates.
    fn outcomes_with(&self, duplicates: Vec<usize>) -> Vec<IngestOutcome> {
        self.sizes
            .iter()
            .zip(duplicates)
            .map(|(&(len, _), duplicates)| IngestOutcome {
                accepted: len - duplicates,
                duplicates,
            })
            .collect()
    }

    /// The runs touched by the newly stored state events, folded, sorted by id (a stable lock
    /// order on PostgreSQL). Replayed events are left out: they would change nothing. Unless
    /// some were replayed, these are the runs folded when the plan was made.
    pub(crate) fn runs(&self, stored: &HashSet<Uuid>) -> std::borrow::Cow<'_, [RunRow]> {
        let all =
            !self.folded.is_empty() && self.states.iter().all(|row| stored.contains(&row.event_id));
        if all {
            std::borrow::Cow::Borrowed(&self.folded)
        } else {
            std::borrow::Cow::Owned(self.fold(|id| stored.contains(id)))
        }
    }

    /// The runs of every state event of the plan, folded (what [`Plan::runs`] answers when
    /// every one of them is newly stored).
    pub(crate) fn all_runs(&self) -> &[RunRow] {
        &self.folded
    }

    /// The runs of the state events whose id `stored` accepts, folded.
    fn fold(&self, stored: impl Fn(&Uuid) -> bool) -> Vec<RunRow> {
        let mut runs: HashMap<Uuid, RunRow> = HashMap::with_capacity(self.states.len());
        // Fold in arrival order so "first details win" means the same as in the database.
        let mut order: Vec<usize> = (0..self.states.len()).collect();
        order.sort_by_key(|&i| self.state_owner[i]);
        for i in order {
            let (row, facts) = (&self.states[i], &self.facts[i]);
            if !stored(&row.event_id) {
                continue;
            }
            let started = (row.state == StateType::Running).then_some(row.ts);
            match runs.get_mut(&row.run_id) {
                None => {
                    runs.insert(
                        row.run_id,
                        RunRow {
                            id: row.run_id,
                            kind: facts.kind,
                            name: facts.name.clone(),
                            parent_run_id: facts.parent_run_id,
                            flow_run_id: facts.flow_run_id,
                            state: row.state,
                            state_message: row.message.clone(),
                            state_ts: row.ts,
                            state_event_id: row.event_id,
                            attempt: row.attempt,
                            created: row.ts,
                            started,
                            ended: None,
                            details: facts.details.clone(),
                            lease_token: facts.lease_token,
                            received: self.received,
                        },
                    );
                }
                Some(run) => {
                    run.parent_run_id = run.parent_run_id.or(facts.parent_run_id);
                    run.flow_run_id = run.flow_run_id.or(facts.flow_run_id);
                    if (row.ts, row.event_id) > (run.state_ts, run.state_event_id) {
                        run.state = row.state;
                        run.state_message.clone_from(&row.message);
                        run.state_ts = row.ts;
                        run.state_event_id = row.event_id;
                        run.attempt = row.attempt;
                        run.lease_token = facts.lease_token;
                    }
                    run.created = run.created.min(row.ts);
                    run.started = match (run.started, started) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if run.details.is_none() {
                        run.details.clone_from(&facts.details);
                    }
                }
            }
        }
        let mut runs: Vec<RunRow> = runs
            .into_values()
            .map(|mut run| {
                run.ended = run.state.is_final().then_some(run.state_ts);
                run
            })
            .collect();
        // One run per id: an unstable sort gives the one order, without a scratch copy.
        runs.sort_unstable_by_key(|run| run.id);
        runs
    }
}

/// The shape of a stats query: `buckets` buckets of `width` µs from `since`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatsFrame {
    pub since: i64,
    pub until: i64,
    pub width: i64,
    pub buckets: u32,
}

impl StatsFrame {
    /// Equal-width buckets of whole seconds (at least one second, at most 10 000 buckets)
    /// covering `[since, until)`; the last bucket may end after `until`, but every bucket
    /// starts before it: a window shorter than `buckets` seconds gets fewer buckets.
    pub(crate) fn new(since: DateTime<Utc>, until: DateTime<Utc>, buckets: u32) -> StatsFrame {
        let buckets = buckets.clamp(1, 10_000);
        let (since, until) = (micros(since), micros(until));
        let span = until.saturating_sub(since).max(1);
        let span_secs = span.div_euclid(1_000_000) + i64::from(span.rem_euclid(1_000_000) != 0);
        let width_secs = (span_secs + i64::from(buckets) - 1) / i64::from(buckets);
        let width = width_secs.max(1) * 1_000_000;
        // Buckets that would start at or after `until` are left out.
        let needed = span.saturating_add(width - 1) / width;
        StatsFrame {
            since,
            until,
            width,
            buckets: u32::try_from(needed).map_or(buckets, |n| n.clamp(1, buckets)),
        }
    }

    /// Builds the answer from `(bucket index, state, count)` rows of the query.
    pub(crate) fn assemble(&self, rows: Vec<(i64, StateType, u64)>) -> Result<Stats, StoreError> {
        let mut counts = vec![[0u64; StateType::ALL.len()]; self.buckets as usize];
        let mut totals = [0u64; StateType::ALL.len()];
        for (bucket, state, count) in rows {
            let slot = StateType::ALL.iter().position(|s| *s == state).unwrap_or(0);
            let Some(bucket) = usize::try_from(bucket).ok().and_then(|b| counts.get_mut(b)) else {
                return Err(corrupt(format!(
                    "stats bucket {bucket} outside 0..{}",
                    self.buckets
                )));
            };
            bucket[slot] += count;
            totals[slot] += count;
        }
        let nonzero = |counts: &[u64; StateType::ALL.len()]| -> Vec<(StateType, u64)> {
            StateType::ALL
                .iter()
                .zip(counts)
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (*s, *n))
                .collect()
        };
        let buckets = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(StatsBucket {
                    start: from_micros(self.since + i as i64 * self.width)?,
                    counts: nonzero(c),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Stats {
            since: from_micros(self.since)?,
            until: from_micros(self.until)?,
            bucket_seconds: (self.width / 1_000_000) as u64,
            buckets,
            totals: nonzero(&totals),
        })
    }
}

/// The groups (see [`group_of`]) of the runs retention picked, without repeats.
pub(crate) fn retention_groups(candidates: &[(Uuid, Option<Uuid>)]) -> Vec<Uuid> {
    let mut groups: Vec<Uuid> = candidates
        .iter()
        .map(|&(id, flow)| group_of(id, flow))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_covers_the_window() {
        let since = DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let until = DateTime::from_timestamp(1_000 + 3_600, 0).unwrap_or_default();
        let f = StatsFrame::new(since, until, 7);
        assert!(f.width * 7 >= 3_600 * 1_000_000);
        assert_eq!(f.width % 1_000_000, 0);
        let f = StatsFrame::new(until, since, 0);
        assert_eq!((f.buckets, f.width), (1, 1_000_000));
    }

    #[test]
    fn every_bucket_starts_inside_the_window() {
        let at = |secs: i64, micros: u32| {
            DateTime::from_timestamp(secs, micros * 1000).unwrap_or_default()
        };
        // 9999-12-31T23:59:59Z: the last second RFC 3339 can write.
        let end = 253_402_300_799;
        let windows = [
            (at(end - 10, 0), at(end, 999_999), 1000u32),
            (at(end - 86_400, 0), at(end, 0), 1000),
            (at(1_000, 0), at(1_000, 1), 24),
            (at(1_000, 0), at(1_003, 500_000), 10),
            (at(1_000, 0), at(1_000 + 3_600, 0), 7),
            (at(1_000, 0), at(1_000 + 3_660 * 86_400, 0), 1000),
        ];
        // And a sweep of spans against bucket counts.
        let sweep = (1..200i64).flat_map(|span| {
            [1u32, 2, 3, 7, 24, 100, 1000].into_iter().map(move |n| {
                (
                    at(5_000, 0),
                    at(5_000 + span / 10, (span % 10) as u32 * 100_000),
                    n,
                )
            })
        });
        for (since, until, asked) in windows.into_iter().chain(sweep) {
            if since >= until {
                continue;
            }
            let f = StatsFrame::new(since, until, asked);
            assert!(
                (1..=asked).contains(&f.buckets),
                "{since} {until} {asked}: {f:?}"
            );
            let last_start = f.since + i64::from(f.buckets - 1) * f.width;
            assert!(last_start < f.until, "{since} {until} {asked}: {f:?}");
            assert!(
                f.since + i64::from(f.buckets) * f.width >= f.until,
                "the buckets cover the window: {f:?}"
            );
            let stats = f.assemble(Vec::new()).expect("assemble");
            for bucket in &stats.buckets {
                let text = bucket.start.to_rfc3339();
                assert!(!text.starts_with('+'), "{text}");
                assert!(bucket.start >= since && bucket.start < until, "{text}");
            }
        }
    }

    #[test]
    fn levels_and_states_round_trip() {
        for level in [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(
                parse_level(i64::from(level_number(level))).ok(),
                Some(level)
            );
        }
        for state in StateType::ALL {
            assert_eq!(parse_state(state.as_str()).ok(), Some(state));
        }
        // Written by a newer server sharing the database: read, not an error.
        assert_eq!(parse_state("Hibernating").ok(), Some(StateType::Unknown));
    }
}
