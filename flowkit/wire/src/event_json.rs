//! [`Event`]'s JSON, written by hand: one flat object (see [`crate::event`]), written and read
//! field by field.
//!
//! serde's derive would need `#[serde(flatten)]` for the body, and a flattened, internally
//! tagged enum is read by buffering the whole object into an intermediate tree and reading it
//! again (and written through a map serializer): most of the time a server spent parsing an
//! event, and a good part of what the reporter spent writing one. Here the object is read once:
//! every field goes straight into its typed slot, whatever the order of the keys, and the body
//! is assembled from the slots its `kind` uses. Behaviour is the derive's: unknown fields are
//! ignored, an unknown `kind` reads as [`EventBody::Unknown`], a missing required field or a
//! field given twice is an error naming it.

use crate::event::{
    Event, EventBody, LaterState, LogLevel, RUN_RECORD_KIND, Rfc3339, RunDetails, RunKind,
};
use crate::state::State;
use chrono::{DateTime, Utc};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use uuid::Uuid;

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 14)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("run_id", &self.run_id)?;
        s.serialize_field("parent_run_id", &self.parent_run_id)?;
        s.serialize_field("flow_run_id", &self.flow_run_id)?;
        s.serialize_field("run_kind", &self.run_kind)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("attempt", &self.attempt)?;
        s.serialize_field("timestamp", &Rfc3339(&self.timestamp))?;
        if let Some(lease) = self.lease {
            s.serialize_field("lease", &lease)?;
        }
        match &self.body {
            EventBody::State { state, details } => {
                s.serialize_field("kind", "state")?;
                s.serialize_field("state", state)?;
                if let Some(details) = details {
                    s.serialize_field("details", details)?;
                }
            }
            EventBody::Log {
                level,
                message,
                fields,
            } => {
                s.serialize_field("kind", "log")?;
                s.serialize_field("level", level)?;
                s.serialize_field("message", message)?;
                if !fields.is_empty() {
                    s.serialize_field("fields", fields)?;
                }
            }
            EventBody::RunRecord {
                state,
                details,
                later,
            } => {
                s.serialize_field("kind", RUN_RECORD_KIND)?;
                s.serialize_field("state", state)?;
                if let Some(details) = details {
                    s.serialize_field("details", details)?;
                }
                s.serialize_field("later", later)?;
            }
            EventBody::Unknown => s.serialize_field("kind", "unknown")?,
        }
        s.end()
    }
}

/// An event's timestamp, read by [`crate::timestamp_json`].
struct ReadTimestamp(DateTime<Utc>);

impl<'de> Deserialize<'de> for ReadTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ReadTimestamp, D::Error> {
        crate::timestamp_json::deserialize(deserializer).map(ReadTimestamp)
    }
}

/// The keys of an event object.
enum Key {
    Id,
    RunId,
    ParentRunId,
    FlowRunId,
    RunKind,
    Name,
    Attempt,
    Timestamp,
    Lease,
    Kind,
    State,
    Details,
    Level,
    Message,
    Fields,
    Later,
    Other,
}

impl Key {
    fn of(name: &str) -> Key {
        match name {
            "id" => Key::Id,
            "run_id" => Key::RunId,
            "parent_run_id" => Key::ParentRunId,
            "flow_run_id" => Key::FlowRunId,
            "run_kind" => Key::RunKind,
            "name" => Key::Name,
            "attempt" => Key::Attempt,
            "timestamp" => Key::Timestamp,
            "lease" => Key::Lease,
            "kind" => Key::Kind,
            "state" => Key::State,
            "details" => Key::Details,
            "level" => Key::Level,
            "message" => Key::Message,
            "fields" => Key::Fields,
            "later" => Key::Later,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::of(v))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// What `kind` says the event carries.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    State,
    Log,
    RunRecord,
    Unknown,
}

impl Kind {
    /// Whether an event of this kind has a field `key` (the shared fields aside).
    fn uses(self, key: &Key) -> bool {
        match self {
            Kind::State => matches!(key, Key::State | Key::Details),
            Kind::Log => matches!(key, Key::Level | Key::Message | Key::Fields),
            Kind::RunRecord => matches!(key, Key::State | Key::Details | Key::Later),
            Kind::Unknown => false,
        }
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the event's kind, a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                Ok(match v {
                    "state" => Kind::State,
                    "log" => Kind::Log,
                    RUN_RECORD_KIND => Kind::RunRecord,
                    _ => Kind::Unknown,
                })
            }
        }
        deserializer.deserialize_str(KindVisitor)
    }
}

/// One slot per field, filled as the keys come.
#[derive(Default)]
struct Slots {
    id: Option<Uuid>,
    run_id: Option<Uuid>,
    parent_run_id: Option<Option<Uuid>>,
    flow_run_id: Option<Option<Uuid>>,
    run_kind: Option<RunKind>,
    name: Option<String>,
    attempt: Option<u32>,
    timestamp: Option<ReadTimestamp>,
    lease: Option<Option<u64>>,
    kind: Option<Kind>,
    state: Option<State>,
    details: Option<Option<Box<RunDetails>>>,
    level: Option<LogLevel>,
    message: Option<String>,
    fields: Option<serde_json::Map<String, serde_json::Value>>,
    later: Option<Vec<LaterState>>,
}

/// Reads the next value into `slot`, refusing a second one.
fn fill<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| de::Error::missing_field(name))
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event: a JSON object with a `kind`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut s = Slots::default();
        while let Some(key) = map.next_key::<Key>()? {
            // Once the kind is known, another kind's fields are skipped unread, as the derive
            // did (a newer peer may give them other shapes).
            if let Some(kind) = s.kind
                && matches!(
                    key,
                    Key::State
                        | Key::Details
                        | Key::Level
                        | Key::Message
                        | Key::Fields
                        | Key::Later
                )
                && !kind.uses(&key)
            {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match key {
                Key::Id => fill(&mut map, &mut s.id, "id")?,
                Key::RunId => fill(&mut map, &mut s.run_id, "run_id")?,
                Key::ParentRunId => fill(&mut map, &mut s.parent_run_id, "parent_run_id")?,
                Key::FlowRunId => fill(&mut map, &mut s.flow_run_id, "flow_run_id")?,
                Key::RunKind => fill(&mut map, &mut s.run_kind, "run_kind")?,
                Key::Name => fill(&mut map, &mut s.name, "name")?,
                Key::Attempt => fill(&mut map, &mut s.attempt, "attempt")?,
                Key::Timestamp => fill(&mut map, &mut s.timestamp, "timestamp")?,
                Key::Lease => fill(&mut map, &mut s.lease, "lease")?,
                Key::Kind => fill(&mut map, &mut s.kind, "kind")?,
                Key::State => fill(&mut map, &mut s.state, "state")?,
                Key::Details => fill(&mut map, &mut s.details, "details")?,
                Key::Level => fill(&mut map, &mut s.level, "level")?,
                Key::Message => fill(&mut map, &mut s.message, "message")?,
                Key::Fields => fill(&mut map, &mut s.fields, "fields")?,
                Key::Later => fill(&mut map, &mut s.later, "later")?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let body = match required(s.kind, "kind")? {
            Kind::State => EventBody::State {
                state: required(s.state, "state")?,
                details: s.details.flatten(),
            },
            Kind::Log => EventBody::Log {
                level: required(s.level, "level")?,
                message: required(s.message, "message")?,
                fields: s.fields.unwrap_or_default(),
            },
            Kind::RunRecord => EventBody::RunRecord {
                state: required(s.state, "state")?,
                details: s.details.flatten(),
                later: s.later.unwrap_or_default(),
            },
            Kind::Unknown => EventBody::Unknown,
        };
        Ok(Event {
            id: required(s.id, "id")?,
            run_id: required(s.run_id, "run_id")?,
            parent_run_id: s.parent_run_id.flatten(),
            flow_run_id: s.flow_run_id.flatten(),
            run_kind: required(s.run_kind, "run_kind")?,
            name: Cow::Owned(required(s.name, "name")?),
            attempt: required(s.attempt, "attempt")?,
            timestamp: required(s.timestamp, "timestamp")?.0,
            lease: s.lease.flatten(),
            body,
        })
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// The shape the OpenAPI document gives [`Event`]: the derive's view of the same JSON (the
/// body's fields flattened into the event's object).
#[cfg(feature = "openapi")]
mod schema {
    use crate::event::{EventBody, RunKind};
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    /// One event: a state change or a log line of one run.
    #[derive(serde::Serialize, utoipa::ToSchema)]
    #[allow(dead_code)] // only its schema is used
    pub(super) struct Event {
        /// Unique, time-ordered id of this event (UUID v7); the server ingests each id once.
        id: Uuid,
        /// The run this event belongs to (UUID v7).
        run_id: Uuid,
        /// The run that called this one (a flow or a task run), if any.
        parent_run_id: Option<Uuid>,
        /// The nearest enclosing flow run (the run itself for a flow run); absent or `null`
        /// for a task run outside any flow.
        #[serde(default)]
        flow_run_id: Option<Uuid>,
        /// Flow run or task run.
        run_kind: RunKind,
        /// The run's display name (the function name unless `name = "..."` was given).
        name: String,
        /// The attempt this event belongs to, starting at 1 (0 before the first attempt starts).
        attempt: u32,
        /// When the event happened (RFC 3339).
        timestamp: DateTime<Utc>,
        /// The fencing token of the lease under which a worker runs this event's flow run;
        /// absent for runs no worker claimed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<u64>,
        /// What the event carries, tagged by its `kind`.
        #[serde(flatten)]
        body: EventBody,
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Event {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <schema::Event as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Event {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Event")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <schema::Event as utoipa::ToSchema>::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, EventBody};
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "id": "0192a000-0000-7000-8000-000000000001",
            "run_id": "0192a000-0000-7000-8000-0000000000aa",
            "parent_run_id": null, "run_kind": "task", "name": "step", "attempt": 1,
            "timestamp": "2026-11-28T12:00:00Z"
        })
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut v = base();
        if let (Some(map), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            map.extend(more.clone());
        }
        v
    }

    fn read(v: serde_json::Value) -> Result<Event, String> {
        serde_json::from_str(&v.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_may_come_in_any_order_and_the_kind_last() {
        let text = r#"{"state":{"type":"Running"},"attempt":2,"name":"t","run_kind":"flow",
            "timestamp":"2026-11-28T12:00:00.5Z","run_id":"0192a000-0000-7000-8000-0000000000aa",
            "id":"0192a000-0000-7000-8000-000000000001","lease":7,"kind":"state"}"#;
        let event: Event = serde_json::from_str(text).expect("read");
        assert_eq!(event.attempt, 2);
        assert_eq!(event.lease, Some(7));
        assert_eq!(event.parent_run_id, None);
        assert_eq!(event.flow_run_id, None);
        assert!(matches!(event.body, EventBody::State { details: None, .. }));
    }

    #[test]
    fn missing_and_repeated_fields_are_named() {
        let no_kind = read(base()).expect_err("no kind");
        assert!(no_kind.contains("missing field `kind`"), "{no_kind}");
        let no_state = read(with(json!({"kind": "state"}))).expect_err("no state");
        assert!(no_state.contains("missing field `state`"), "{no_state}");
        let no_level = read(with(json!({"kind": "log", "message": "m"}))).expect_err("no level");
        assert!(no_level.contains("missing field `level`"), "{no_level}");
        let mut no_id = with(json!({"kind": "state", "state": {"type": "Running"}}));
        no_id.as_object_mut().map(|m| m.remove("id"));
        let no_id = read(no_id).expect_err("no id");
        assert!(no_id.contains("missing field `id`"), "{no_id}");
        let twice = r#"{"kind":"log","kind":"log"}"#;
        let twice = serde_json::from_str::<Event>(twice).expect_err("twice");
        assert!(
            twice.to_string().contains("duplicate field `kind`"),
            "{twice}"
        );
        let not_object = serde_json::from_str::<Event>("[1]").expect_err("array");
        assert!(not_object.to_string().contains("an event"), "{not_object}");
    }

    #[test]
    fn another_kinds_fields_are_ignored_whatever_their_shape_once_the_kind_is_known() {
        let event = read(with(json!({
            "kind": "state", "state": {"type": "Running"}, "level": 5, "later": "x",
            "message": {"odd": true}
        })))
        .expect("a state event with foreign fields");
        assert!(matches!(event.body, EventBody::State { .. }));
        let event = read(with(json!({"kind": "from_the_future", "state": [1, 2]})))
            .expect("an unknown kind");
        assert_eq!(event.body, EventBody::Unknown);
    }

    #[test]
    fn a_written_event_reads_back_the_same_for_every_kind() {
        for extra in [
            json!({"kind": "state", "state": {"type": "Pending"},
                   "details": {"task_key": "demo::step", "tags": ["a"]}}),
            json!({"kind": "log", "level": "INFO", "message": "hi", "fields": {"n": 1}}),
            json!({"kind": "log", "level": "WARN", "message": "no fields"}),
            json!({"kind": "run_record", "state": {"type": "Pending"}, "later": [
                {"id": "0192a000-0000-7000-8000-000000000002", "attempt": 1,
                 "timestamp": "2026-11-28T12:00:01Z", "state": {"type": "Completed"}}]}),
            json!({"kind": "state", "state": {"type": "Running"}, "lease": 3,
                   "flow_run_id": "0192a000-0000-7000-8000-0000000000aa"}),
        ] {
            let event = read(with(extra.clone())).expect("read");
            let written = serde_json::to_value(&event).expect("write");
            let again: Event = serde_json::from_value(written.clone()).expect("read again");
            assert_eq!(again, event, "{written}");
            for (key, value) in extra.as_object().into_iter().flatten() {
                assert_eq!(&written[key], value, "{key} in {written}");
            }
        }
    }
}
