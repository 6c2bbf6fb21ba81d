//! OpenAPI schemas of the flowkit wire types that `flowkit` itself does not describe (it keeps
//! no OpenAPI dependency): the event body of `POST /api/events` and the enums it uses. They
//! only exist for the document; tests check them against the real types.

#![allow(dead_code)] // Types that are only read by the OpenAPI derive.

use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// The type of a state.
#[derive(ToSchema)]
#[schema(as = StateType)]
pub enum StateTypeDoc {
    /// Created ahead of time.
    Scheduled,
    /// About to start.
    Pending,
    /// An attempt is running.
    Running,
    /// An attempt failed; another one follows.
    AwaitingRetry,
    /// Succeeded.
    Completed,
    /// Result taken from the cache.
    Cached,
    /// Returned an error after the last attempt.
    Failed,
    /// Panicked, or its process went away.
    Crashed,
    /// Cancelled.
    Cancelled,
    /// Exceeded its timeout.
    TimedOut,
}

/// Flow run or task run.
#[derive(ToSchema)]
#[schema(as = RunKind)]
#[allow(non_camel_case_types)]
pub enum RunKindDoc {
    /// A run of a `#[flow]` function.
    flow,
    /// A run of a `#[task]` function.
    task,
}

/// Level of a log line.
#[derive(ToSchema)]
#[schema(as = LogLevel)]
#[allow(clippy::upper_case_acronyms)]
pub enum LogLevelDoc {
    /// Trace.
    TRACE,
    /// Debug.
    DEBUG,
    /// Info.
    INFO,
    /// Warning.
    WARN,
    /// Error.
    ERROR,
}

/// `state` or `log`.
#[derive(ToSchema)]
#[schema(as = EventKind)]
#[allow(non_camel_case_types)]
pub enum EventKindDoc {
    /// A state change: `state` (and, on a run's first event, `details`).
    state,
    /// A log line: `level`, `message`, `fields`.
    log,
}

/// A state: its type and an optional message.
#[derive(ToSchema)]
#[schema(as = State)]
pub struct StateDoc {
    /// The state type.
    #[schema(rename = "type")]
    r#type: StateTypeDoc,
    /// Why the run is in this state.
    message: Option<String>,
}

/// Facts about a run sent once, with its first event.
#[derive(ToSchema)]
#[schema(as = RunDetails)]
pub struct RunDetailsDoc {
    /// The function's path (at most 1000 characters).
    task_key: String,
    /// Version of the task or flow.
    version: Option<String>,
    /// Tags (at most 100, each at most 1000 characters).
    tags: Option<Vec<String>>,
    /// Arguments of a flow run (at most 256 KiB of JSON).
    parameters: Option<serde_json::Value>,
    /// Runs whose results this run consumed.
    upstream: Option<Vec<Uuid>>,
    /// Cache key.
    cache_key: Option<String>,
    /// Deployment that created the flow run.
    deployment: Option<String>,
    /// `host:pid` of the process that ran it.
    worker: Option<String>,
}

/// One event, as `flowkit::Event` serializes it: a flat object. State events carry `state`
/// (and `details` on a run's first event); log events carry `level`, `message` and `fields`.
/// Unknown fields are rejected.
#[derive(ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// Unique id of the event (UUID v7); an id already stored counts as a duplicate.
    id: Uuid,
    /// The run.
    run_id: Uuid,
    /// The calling run.
    parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run (the run itself for a flow run).
    flow_run_id: Option<Uuid>,
    /// Flow or task.
    run_kind: RunKindDoc,
    /// Display name, 1 to 1000 characters.
    name: String,
    /// Attempt, from 1 (0 before the first attempt).
    attempt: u32,
    /// When it happened: RFC 3339, after 2000-01-01 and at most one day ahead of the server's
    /// clock.
    timestamp: chrono::DateTime<chrono::Utc>,
    /// What the event carries.
    kind: EventKindDoc,
    /// The new state (state events).
    state: Option<StateDoc>,
    /// Run details (the first state event of a run).
    details: Option<RunDetailsDoc>,
    /// Level (log events).
    level: Option<LogLevelDoc>,
    /// Message (log events); longer than 64 KiB is truncated.
    message: Option<String>,
    /// Other fields of the log event (at most 64 KiB of JSON).
    fields: Option<BTreeMap<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowkit::state::StateType;
    use utoipa::PartialSchema;

    fn enum_values<T: PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).expect("schema");
        let values = schema["enum"]
            .as_array()
            .or_else(|| schema["oneOf"].as_array())
            .cloned()
            .unwrap_or_default();
        values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect()
    }

    #[test]
    fn documented_enums_match_the_wire_types() {
        let states: Vec<String> = StateType::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        assert_eq!(enum_values::<StateTypeDoc>(), states);
        assert_eq!(enum_values::<RunKindDoc>(), ["flow", "task"]);
        let levels: Vec<String> = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
            .iter()
            .map(|l| {
                serde_json::to_value(
                    serde_json::from_value::<flowkit::event::LogLevel>((*l).into()).expect("level"),
                )
                .expect("json")
                .as_str()
                .expect("str")
                .to_string()
            })
            .collect();
        assert_eq!(enum_values::<LogLevelDoc>(), levels);
    }
}
