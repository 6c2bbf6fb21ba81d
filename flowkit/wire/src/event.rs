//! The wire types: what the runtime emits for every state change and log line, and what the
//! server ingests. One model, shared by both sides, so they can never disagree.
//!
//! An event serializes as one flat JSON object:
//!
//! ```json
//! {"id":"0192…","run_id":"0192…","parent_run_id":null,"flow_run_id":"0192…",
//!  "run_kind":"task","name":"download","attempt":1,"timestamp":"2026-11-28T12:00:00.123456Z",
//!  "kind":"state","state":{"type":"Running"}}
//! ```
//!
//! `kind` says what the event carries: `"state"` (a state change, with `state` and on the first
//! event of a run its `details`), `"log"` (a `tracing` event captured inside the run, with
//! `level`, `message` and `fields`) or `"run_record"` (several state changes of one run in one
//! object, see below).
//!
//! # Run records
//!
//! A run whose states all happen within one batch (a task that goes `Pending → Running →
//! Completed` in microseconds) travels as one *run record* rather than three state events: the
//! fields the events share are written once, the first state is the record's own `id`,
//! `attempt`, `timestamp`, `state` and `details`, and each later state is an entry of `later`
//! with its own `id`, `timestamp`, `attempt` and `state`:
//!
//! ```json
//! {"id":"0192…a","run_id":"0192…","parent_run_id":"0192…","flow_run_id":"0192…",
//!  "run_kind":"task","name":"step","attempt":0,"timestamp":"2026-11-28T12:00:00.000001Z",
//!  "kind":"run_record","state":{"type":"Pending"},"details":{"task_key":"demo::step"},
//!  "later":[{"id":"0192…b","timestamp":"2026-11-28T12:00:00.000004Z","attempt":1,"state":{"type":"Running"}},
//!           {"id":"0192…c","timestamp":"2026-11-28T12:00:00.000009Z","attempt":1,"state":{"type":"Completed"}}]}
//! ```
//!
//! It stands for exactly the state events [`Event::into_events`] gives back, which is what a
//! server stores. A client sends records only to a server whose `GET /api/v1/health` lists
//! [`RUN_RECORD_KIND`] in `event_kinds` (an older server would ignore them); single events are
//! always accepted.
//!
//! # Evolving the format
//!
//! Readers ignore fields they do not know, read a `kind` they do not know as
//! [`EventBody::Unknown`] and a state type they do not know as
//! [`StateType::Unknown`](crate::StateType::Unknown), so a newer peer's
//! events never fail an older one. A client sends a new *kind* only to a server that lists it
//! in `event_kinds` of `GET /api/v1/health` ([`crate::api::health::Health`]).

use crate::state::{State, StateType};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use uuid::Uuid;

/// The `kind` of a run record ([`EventBody::RunRecord`]).
pub const RUN_RECORD_KIND: &str = "run_record";

pub use crate::timestamp_json::Rfc3339;

/// Whether a run is a flow run or a task run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A run of a `#[flow]` function.
    Flow,
    /// A run of a `#[task]` function.
    Task,
}

impl RunKind {
    /// `"flow"` or `"task"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Flow => "flow",
            RunKind::Task => "task",
        }
    }
}

/// One event: a state change or a log line of one run. Its JSON is one flat object (see the
/// [module](self) documentation), written and read by hand rather than derived, for speed.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique, time-ordered id of this event (UUID v7); the server ingests each id once.
    pub id: Uuid,
    /// The run this event belongs to (UUID v7).
    pub run_id: Uuid,
    /// The run that called this one (a flow or a task run), if any.
    pub parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run (the run itself for a flow run); `None` for a task run
    /// outside any flow.
    pub flow_run_id: Option<Uuid>,
    /// Flow run or task run.
    pub run_kind: RunKind,
    /// The run's display name (the function name unless `name = "..."` was given).
    pub name: Cow<'static, str>,
    /// The attempt this event belongs to, starting at 1 (0 before the first attempt starts).
    pub attempt: u32,
    /// When the event happened (RFC 3339 on the wire).
    pub timestamp: DateTime<Utc>,
    /// The fencing token of the lease under which a worker runs this event's flow run (see
    /// [`crate::api::workers`]); absent for runs no worker claimed. The server refuses an
    /// event whose token is older than its flow run's.
    pub lease: Option<u64>,
    /// What the event carries.
    pub body: EventBody,
}

/// What an [`Event`] carries, tagged by its `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventBody {
    /// The run entered a new state.
    State {
        /// The new state.
        state: State,
        /// Facts about the run that do not change, sent once with its first event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<Box<RunDetails>>,
    },
    /// A `tracing` event emitted while the run was executing.
    Log {
        /// Level of the log event.
        level: LogLevel,
        /// The formatted message.
        message: String,
        /// The event's other fields, by name.
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Several state changes of one run: the first is the record's own `id`, `attempt`,
    /// `timestamp` and `state` (with the run's `details`), the others follow in `later`, in
    /// order. Stands for the events [`Event::into_events`] gives back.
    RunRecord {
        /// The first state of the record.
        state: State,
        /// Facts about the run that do not change, when the record holds its first event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<Box<RunDetails>>,
        /// The later states, oldest first (at most
        /// [`MAX_RECORD_LATER`](crate::api::ingest::MAX_RECORD_LATER)).
        #[serde(default)]
        later: Vec<LaterState>,
    },
    /// A kind this version does not know (from a newer peer): its other fields are ignored.
    #[serde(other)]
    Unknown,
}

/// A later state of a run record: one state event of the run, without the fields the record
/// gives once for all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LaterState {
    /// The id of this state event (UUID v7); the server ingests each id once.
    pub id: Uuid,
    /// When the run entered this state.
    #[serde(with = "crate::timestamp_json")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: DateTime<Utc>,
    /// The attempt this state belongs to.
    pub attempt: u32,
    /// The new state.
    pub state: State,
}

/// Facts about a run that do not change over its life. Fields this version does not know are
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunDetails {
    /// The function's path, e.g. `my_crate::etl::download`: what makes a task unique.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task_key: Cow<'static, str>,
    /// `version = "..."` of the attribute, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<Cow<'static, str>>,
    /// `tags = [...]` of the attribute plus per-call tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub tags: Vec<Cow<'static, str>>,
    /// The arguments of a flow run, as JSON (arguments that are not `Serialize` show as a
    /// placeholder). Not recorded for task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Runs whose results this run consumed (`TaskHandle` arguments and `wait_for`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<Uuid>,
    /// The cache key, when the run uses the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// The deployment that created this flow run, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Which process ran it: `hostname:pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub worker: Option<Cow<'static, str>>,
}

/// Level of a captured log event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Finest detail (`tracing::Level::TRACE`).
    Trace,
    /// Debugging detail (`tracing::Level::DEBUG`).
    Debug,
    /// Information (`tracing::Level::INFO`).
    Info,
    /// A warning (`tracing::Level::WARN`).
    Warn,
    /// An error (`tracing::Level::ERROR`).
    Error,
}

impl Event {
    /// The state this event carries, if it is a state change.
    pub fn state(&self) -> Option<&State> {
        match &self.body {
            EventBody::State { state, .. } => Some(state),
            _ => None,
        }
    }

    /// The state type this event carries, if it is a state change.
    pub fn state_type(&self) -> Option<StateType> {
        self.state().map(|s| s.kind)
    }

    /// The run details, if this is the first event of a run.
    pub fn details(&self) -> Option<&RunDetails> {
        match &self.body {
            EventBody::State { details, .. } | EventBody::RunRecord { details, .. } => {
                details.as_deref()
            }
            _ => None,
        }
    }

    /// How many events this one stands for: `1 + later.len()` for a run record, 1 otherwise.
    pub fn event_count(&self) -> usize {
        match &self.body {
            EventBody::RunRecord { later, .. } => 1 + later.len(),
            _ => 1,
        }
    }

    /// The events this one stands for: the state events of a run record, in order (the first
    /// with the record's `details`), or the event itself.
    ///
    /// ```
    /// use flowkit_wire::{Event, StateType};
    /// let record: Event = serde_json::from_value(serde_json::json!({
    ///     "id": "0192a000-0000-7000-8000-000000000001", "run_id": "0192a000-0000-7000-8000-0000000000aa",
    ///     "parent_run_id": null, "flow_run_id": null, "run_kind": "task", "name": "step",
    ///     "attempt": 0, "timestamp": "2026-11-28T12:00:00Z", "kind": "run_record",
    ///     "state": {"type": "Pending"},
    ///     "later": [{"id": "0192a000-0000-7000-8000-000000000002", "attempt": 1,
    ///                "timestamp": "2026-11-28T12:00:00.000004Z", "state": {"type": "Completed"}}]
    /// })).unwrap();
    /// let events = record.into_events();
    /// let types: Vec<_> = events.iter().filter_map(|e| e.state_type()).collect();
    /// assert_eq!(types, [StateType::Pending, StateType::Completed]);
    /// assert_eq!(events[1].attempt, 1);
    /// ```
    pub fn into_events(self) -> Vec<Event> {
        let Event {
            id,
            run_id,
            parent_run_id,
            flow_run_id,
            run_kind,
            name,
            attempt,
            timestamp,
            lease,
            body,
        } = self;
        let EventBody::RunRecord {
            state,
            details,
            later,
        } = body
        else {
            return vec![Event {
                id,
                run_id,
                parent_run_id,
                flow_run_id,
                run_kind,
                name,
                attempt,
                timestamp,
                lease,
                body,
            }];
        };
        let mut events = Vec::with_capacity(1 + later.len());
        events.push(Event {
            id,
            run_id,
            parent_run_id,
            flow_run_id,
            run_kind,
            name: name.clone(),
            attempt,
            timestamp,
            lease,
            body: EventBody::State { state, details },
        });
        for l in later {
            events.push(Event {
                id: l.id,
                run_id,
                parent_run_id,
                flow_run_id,
                run_kind,
                name: name.clone(),
                attempt: l.attempt,
                timestamp: l.timestamp,
                lease,
                body: EventBody::State {
                    state: l.state,
                    details: None,
                },
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateType;

    fn sample(body: EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: Uuid::now_v7(),
            parent_run_id: None,
            flow_run_id: None,
            run_kind: RunKind::Task,
            name: Cow::Borrowed("download"),
            attempt: 1,
            timestamp: Utc::now(),
            lease: None,
            body,
        }
    }

    #[test]
    fn state_event_round_trips_as_flat_json() {
        let ev = sample(EventBody::State {
            state: State::new(StateType::Running),
            details: Some(Box::new(RunDetails {
                task_key: "demo::download".into(),
                tags: vec!["db".into()],
                ..RunDetails::default()
            })),
        });
        let json = serde_json::to_value(&ev).expect("serialize");
        assert_eq!(json["kind"], "state");
        assert_eq!(json["run_kind"], "task");
        assert_eq!(json["state"]["type"], "Running");
        assert_eq!(json["details"]["tags"][0], "db");
        assert!(json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let back: Event = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, ev);
    }

    #[test]
    fn a_newer_peers_event_is_read_not_rejected() {
        let id = Uuid::now_v7();
        let newer = serde_json::json!({
            "id": id, "run_id": id, "parent_run_id": null, "flow_run_id": id,
            "run_kind": "flow", "name": "train", "attempt": 1,
            "timestamp": "2026-11-28T12:00:00Z", "trace_id": "abc",
            "kind": "state", "state": {"type": "Hibernating", "since": "x"},
            "details": {"task_key": "demo::train", "priority": 3}
        });
        let event: Event = serde_json::from_value(newer).expect("unknown fields are ignored");
        assert_eq!(event.state_type(), Some(StateType::Unknown));
        assert_eq!(event.details().map(|d| &*d.task_key), Some("demo::train"));

        let new_kind = serde_json::json!({
            "id": id, "run_id": id, "parent_run_id": null, "run_kind": "task", "name": "t",
            "attempt": 1, "timestamp": "2026-11-28T12:00:00Z",
            "kind": "from_the_future", "states": [{"type": "Completed"}]
        });
        let event: Event = serde_json::from_value(new_kind).expect("unknown kinds are read");
        assert_eq!(event.body, EventBody::Unknown);
    }

    #[test]
    fn a_run_record_stands_for_its_state_events() {
        let first = sample(EventBody::State {
            state: State::new(StateType::Pending),
            details: Some(Box::new(RunDetails {
                task_key: "demo::download".into(),
                ..RunDetails::default()
            })),
        });
        let record = Event {
            body: EventBody::RunRecord {
                state: State::new(StateType::Pending),
                details: first.details().cloned().map(Box::new),
                later: vec![LaterState {
                    id: Uuid::now_v7(),
                    timestamp: Utc::now(),
                    attempt: 2,
                    state: State::new(StateType::Completed),
                }],
            },
            ..first.clone()
        };
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["kind"], RUN_RECORD_KIND);
        let back: Event = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, record);
        assert_eq!(back.event_count(), 2);
        let events = back.into_events();
        assert_eq!(events[0], first);
        assert_eq!(events[1].attempt, 2);
        assert_eq!(events[1].run_id, first.run_id);
        assert_eq!(events[1].details(), None);
        assert_eq!(events[1].state_type(), Some(StateType::Completed));
        assert_eq!(first.clone().into_events(), vec![first]);
    }

    #[test]
    fn log_event_round_trips() {
        let mut fields = serde_json::Map::new();
        fields.insert("rows".into(), 42.into());
        let ev = sample(EventBody::Log {
            level: LogLevel::Warn,
            message: "<b>slow</b>".into(),
            fields,
        });
        let text = serde_json::to_string(&ev).expect("serialize");
        assert!(text.contains(r#""level":"WARN""#), "{text}");
        let back: Event = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, ev);
    }
}
