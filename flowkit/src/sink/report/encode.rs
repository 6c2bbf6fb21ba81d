//! How the sender writes events: one JSON object per line, and, for a server that stores
//! them, the state events of one run folded into one run record
//! ([`flowkit_wire::EventBody::RunRecord`]).
//!
//! Within the events taken in at once (a batch window), the state events of a run become one
//! record at the place of its first state (up to [`MAX_RECORD_STATES`] states and only while
//! the lease token stays the same); log events stay single, in order. A run with a single
//! state in the window is written as a plain state event. The record is written straight from
//! the borrowed events (no copy, no intermediate value), and carries the fields they share once:
//! a task run's three events become one line about half their size.
//!
//! Values nested deeper than [`MAX_VALUE_DEPTH`] (flow parameters, log fields) are cut at that
//! depth ([`cap_depth`]) before they are written: the server would reject the event whole.

use crate::event::{Event, EventBody};
use flowkit_wire::api::ingest::{MAX_VALUE_DEPTH, cap_depth};
use flowkit_wire::event::{RUN_RECORD_KIND, Rfc3339};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// Most states one run record carries; a run with more (many retries) continues in another.
pub(crate) const MAX_RECORD_STATES: usize = 32;

/// One element of a batch, as indexes into the events taken in.
#[derive(Debug, PartialEq)]
pub(crate) enum Item {
    /// An event written alone.
    Single(usize),
    /// The state events of one run (two or more), oldest first.
    Record(Vec<usize>),
}

impl Item {
    /// How many events the element stands for.
    pub(crate) fn events(&self) -> usize {
        match self {
            Item::Single(_) => 1,
            Item::Record(states) => states.len(),
        }
    }
}

/// Plans the elements of `events`: with `records`, the state events of each run folded into
/// one record; without, every event alone. `runs` is scratch space, reused between calls.
pub(crate) fn plan(events: &[Event], records: bool, runs: &mut HashMap<Uuid, usize>) -> Vec<Item> {
    let mut items = Vec::with_capacity(events.len());
    if !records {
        items.extend((0..events.len()).map(Item::Single));
        return items;
    }
    runs.clear();
    for (i, event) in events.iter().enumerate() {
        if !matches!(event.body, EventBody::State { .. }) {
            items.push(Item::Single(i));
            continue;
        }
        if let Some(&at) = runs.get(&event.run_id)
            && let Item::Record(states) = &mut items[at]
            && states.len() < MAX_RECORD_STATES
            && events[states[0]].lease == event.lease
        {
            states.push(i);
            continue;
        }
        runs.insert(event.run_id, items.len());
        items.push(Item::Record(vec![i]));
    }
    items
}

/// What writing one element found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Values nested too deep that were cut.
    pub capped: usize,
}

/// Writes one element as one line of JSON (without the newline).
pub(crate) fn write_item(
    out: &mut Vec<u8>,
    events: &[Event],
    item: &Item,
) -> Result<Written, serde_json::Error> {
    match item {
        Item::Single(i) => write_event(out, &events[*i]),
        Item::Record(states) if states.len() == 1 => write_event(out, &events[states[0]]),
        Item::Record(states) => {
            let first = &events[states[0]];
            if first
                .details()
                .and_then(|d| d.parameters.as_ref())
                .is_some_and(too_deep)
            {
                let mut copy = first.clone();
                let capped = cap_event(&mut copy);
                let mut refs: Vec<&Event> = states.iter().map(|&i| &events[i]).collect();
                refs[0] = &copy;
                serde_json::to_writer(&mut *out, &RecordOut(&refs))?;
                return Ok(Written { capped });
            }
            let refs: Vec<&Event> = states.iter().map(|&i| &events[i]).collect();
            serde_json::to_writer(&mut *out, &RecordOut(&refs))?;
            Ok(Written::default())
        }
    }
}

/// Writes one event as is (cut at [`MAX_VALUE_DEPTH`] where needed).
pub(crate) fn write_event(out: &mut Vec<u8>, event: &Event) -> Result<Written, serde_json::Error> {
    let deep = match &event.body {
        EventBody::State { details, .. } => details
            .as_ref()
            .and_then(|d| d.parameters.as_ref())
            .is_some_and(too_deep),
        EventBody::Log { fields, .. } => {
            fields.values().any(|v| deeper_than(v, MAX_VALUE_DEPTH - 1))
        }
        _ => false,
    };
    if deep {
        let mut copy = event.clone();
        let capped = cap_event(&mut copy);
        serde_json::to_writer(&mut *out, &copy)?;
        return Ok(Written { capped });
    }
    serde_json::to_writer(&mut *out, event)?;
    Ok(Written::default())
}

/// Cuts the parameters and log fields of `event` at [`MAX_VALUE_DEPTH`]; returns the cuts.
fn cap_event(event: &mut Event) -> usize {
    match &mut event.body {
        EventBody::State { details, .. } => details
            .as_mut()
            .and_then(|d| d.parameters.as_mut())
            .map_or(0, |p| cap_depth(p, MAX_VALUE_DEPTH)),
        EventBody::Log { fields, .. } => fields
            .values_mut()
            .map(|v| cap_depth(v, MAX_VALUE_DEPTH - 1))
            .sum(),
        _ => 0,
    }
}

fn too_deep(value: &Value) -> bool {
    deeper_than(value, MAX_VALUE_DEPTH)
}

/// Whether `value` nests arrays and objects more than `levels` deep (recursing at most that
/// far).
fn deeper_than(value: &Value, levels: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return false,
    };
    if levels == 0 {
        return true;
    }
    let mut children = children.peekable();
    if children.peek().is_none() {
        return false;
    }
    children.any(|c| deeper_than(c, levels - 1))
}

/// A run record written from the state events it stands for (two or more, one run).
struct RecordOut<'a>(&'a [&'a Event]);

impl Serialize for RecordOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let first = self.0[0];
        let EventBody::State { state, details } = &first.body else {
            return Err(serde::ser::Error::custom(
                "a run record holds state events only",
            ));
        };
        let mut s = serializer.serialize_struct("Event", 14)?;
        s.serialize_field("id", &first.id)?;
        s.serialize_field("run_id", &first.run_id)?;
        s.serialize_field("parent_run_id", &first.parent_run_id)?;
        s.serialize_field("flow_run_id", &first.flow_run_id)?;
        s.serialize_field("run_kind", &first.run_kind)?;
        s.serialize_field("name", &first.name)?;
        s.serialize_field("attempt", &first.attempt)?;
        s.serialize_field("timestamp", &Rfc3339(&first.timestamp))?;
        if let Some(lease) = first.lease {
            s.serialize_field("lease", &lease)?;
        }
        s.serialize_field("kind", RUN_RECORD_KIND)?;
        s.serialize_field("state", state)?;
        if let Some(details) = details {
            s.serialize_field("details", details)?;
        }
        s.serialize_field("later", &LaterOut(&self.0[1..]))?;
        s.end()
    }
}

struct LaterOut<'a>(&'a [&'a Event]);

impl Serialize for LaterOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            let EventBody::State { state, .. } = &event.body else {
                return Err(serde::ser::Error::custom(
                    "a run record holds state events only",
                ));
            };
            seq.serialize_element(&LaterEntry { event, state })?;
        }
        seq.end()
    }
}

struct LaterEntry<'a> {
    event: &'a Event,
    state: &'a crate::State,
}

impl Serialize for LaterEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("LaterState", 4)?;
        s.serialize_field("id", &self.event.id)?;
        s.serialize_field("timestamp", &Rfc3339(&self.event.timestamp))?;
        s.serialize_field("attempt", &self.event.attempt)?;
        s.serialize_field("state", self.state)?;
        s.end()
    }
}

/// How many events a line stands for: `1 + later.len()` for a run record, 1 otherwise; `None`
/// when it is not a JSON object (a damaged spool line).
pub(crate) fn events_in_line(line: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        later: Vec<serde::de::IgnoredAny>,
    }
    if line.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Probe>(line)
        .ok()
        .map(|p| 1 + p.later.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LogLevel, RunDetails, RunKind};
    use crate::{State, StateType};
    use chrono::Utc;
    use flowkit_wire::api::ingest::DEPTH_MARK;

    fn event(run: Uuid, attempt: u32, body: EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: run,
            parent_run_id: Some(run),
            flow_run_id: Some(run),
            run_kind: RunKind::Task,
            name: "step".into(),
            attempt,
            timestamp: Utc::now(),
            lease: None,
            body,
        }
    }

    fn state(kind: StateType, details: Option<RunDetails>) -> EventBody {
        EventBody::State {
            state: State::new(kind),
            details: details.map(Box::new),
        }
    }

    fn log() -> EventBody {
        EventBody::Log {
            level: LogLevel::Info,
            message: "hi".into(),
            fields: serde_json::Map::new(),
        }
    }

    /// Writes `events` as the sender does and reads the lines back as the server does.
    fn round_trip(events: &[Event], records: bool) -> (Vec<Event>, usize) {
        let plan = plan(events, records, &mut HashMap::new());
        let mut lines = Vec::new();
        for item in &plan {
            let mut line = Vec::new();
            write_item(&mut line, events, item).expect("written");
            assert_eq!(events_in_line(&line), Some(item.events()));
            lines.push(line);
        }
        let back = lines
            .iter()
            .flat_map(|l| {
                serde_json::from_slice::<Event>(l)
                    .expect("the wire type reads it")
                    .into_events()
            })
            .collect();
        (back, lines.len())
    }

    #[test]
    fn a_runs_states_travel_as_one_record_and_come_back_the_same() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let details = RunDetails {
            task_key: "demo::step".into(),
            parameters: Some(serde_json::json!({"x": [1, 2]})),
            ..RunDetails::default()
        };
        let events = vec![
            event(a, 0, state(StateType::Pending, Some(details.clone()))),
            event(b, 0, state(StateType::Pending, Some(details))),
            event(a, 1, state(StateType::Running, None)),
            event(a, 1, log()),
            event(b, 1, state(StateType::Running, None)),
            event(a, 1, state(StateType::Completed, None)),
            event(Uuid::now_v7(), 1, state(StateType::Completed, None)),
        ];
        let (back, lines) = round_trip(&events, true);
        // a's record, b's record, a's log, the lone state event.
        assert_eq!(lines, 4);
        let mut want = vec![
            events[0].clone(),
            events[2].clone(),
            events[5].clone(),
            events[1].clone(),
            events[4].clone(),
            events[3].clone(),
            events[6].clone(),
        ];
        assert_eq!(back, want);
        let (back, lines) = round_trip(&events, false);
        assert_eq!(lines, events.len());
        want.clone_from(&events);
        assert_eq!(back, want);
    }

    #[test]
    fn records_stay_bounded_and_within_one_lease() {
        let run = Uuid::now_v7();
        let mut events: Vec<Event> = (0..MAX_RECORD_STATES + 3)
            .map(|_| event(run, 1, state(StateType::Running, None)))
            .collect();
        let mut leased = event(run, 2, state(StateType::Running, None));
        leased.lease = Some(7);
        events.push(leased);
        let plan = plan(&events, true, &mut HashMap::new());
        let sizes: Vec<usize> = plan.iter().map(Item::events).collect();
        assert_eq!(sizes, vec![MAX_RECORD_STATES, 3, 1]);
        let (back, _) = round_trip(&events, true);
        assert_eq!(back, events);
    }

    #[test]
    fn values_nested_too_deep_are_cut_and_counted() {
        let mut deep = serde_json::json!(1);
        for _ in 0..200 {
            deep = serde_json::json!([deep]);
        }
        let run = Uuid::now_v7();
        let mut fields = serde_json::Map::new();
        fields.insert("deep".into(), deep.clone());
        fields.insert("flat".into(), serde_json::json!("kept"));
        let events = vec![
            event(
                run,
                0,
                state(
                    StateType::Pending,
                    Some(RunDetails {
                        task_key: "demo::step".into(),
                        parameters: Some(serde_json::json!({"cfg": deep})),
                        ..RunDetails::default()
                    }),
                ),
            ),
            event(run, 1, state(StateType::Running, None)),
            event(
                run,
                1,
                EventBody::Log {
                    level: LogLevel::Warn,
                    message: "deep".into(),
                    fields,
                },
            ),
        ];
        let plan = plan(&events, true, &mut HashMap::new());
        let mut capped = 0;
        for item in &plan {
            let mut line = Vec::new();
            capped += write_item(&mut line, &events, item)
                .expect("written")
                .capped;
            // The server parses with a recursion limit of 128: this line passes it.
            let event: Event = serde_json::from_slice(&line).expect("parses under the limit");
            let text = String::from_utf8(line).expect("utf-8");
            assert!(text.contains(DEPTH_MARK), "{text}");
            if let EventBody::Log { fields, .. } = &event.body {
                assert_eq!(fields["flat"], "kept");
            }
        }
        assert_eq!(capped, 2);
        assert!(!deeper_than(&serde_json::json!({"a": [1]}), 2));
        assert!(deeper_than(&serde_json::json!({"a": [[1]]}), 2));
    }
}
