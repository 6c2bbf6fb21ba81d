//! Live run changes for the dashboard: after each successful ingest, one compact
//! [`RunChange`] per run the batch touched goes into a bounded broadcast channel, and
//! `GET /api/stream` forwards it as a server-sent event.
//!
//! Each change is serialized once, as the whole server-sent event (`event: run`, its JSON
//! data), when it is published; every stream sends the same shared bytes
//! ([`PublishedChange::frame`]), so a change costs one serialization however many streams are
//! open ([`Changes::serialized`] counts them).
//!
//! A client too slow to keep up loses the oldest changes; it is then sent a `lagged` event and
//! should refetch what it shows. Changes are hints for refetching, not a replication log:
//! when events of a run arrive out of order the change carries the latest state *of the
//! batch*, and the API has the truth.

use axum::body::Bytes;
use flowkit_wire::event::{Event, EventBody};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use flowkit_wire::api::stream::RunChange;

/// A change as every stream receives it: the change (to filter on) and its server-sent event,
/// serialized once.
#[derive(Debug)]
pub struct PublishedChange {
    /// The change.
    pub change: RunChange,
    /// `event: run` and `data: <the change as JSON>`, ready to send.
    pub frame: Bytes,
}

/// The sending side, shared by every request handler.
#[derive(Clone, Debug)]
pub struct Changes {
    sender: broadcast::Sender<Arc<PublishedChange>>,
    serialized: Arc<AtomicU64>,
}

impl Changes {
    /// A channel that buffers `capacity` changes for the slowest client.
    pub fn new(capacity: usize) -> Changes {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Changes {
            sender,
            serialized: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A new receiver, seeing changes published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PublishedChange>> {
        self.sender.subscribe()
    }

    /// Whether anyone is listening (skips the work when nobody is).
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Publishes changes, each serialized once for every listener; with no listener nothing
    /// is serialized.
    pub fn publish(&self, changes: Vec<RunChange>) {
        for change in changes {
            if !self.has_subscribers() {
                return;
            }
            let Ok(json) = serde_json::to_string(&change) else {
                continue;
            };
            self.serialized.fetch_add(1, Ordering::Relaxed);
            let frame = Bytes::from(format!("event: run\ndata: {json}\n\n"));
            // An error only means nobody is listening right now.
            let _ = self
                .sender
                .send(Arc::new(PublishedChange { change, frame }));
        }
    }

    /// How many changes were serialized since the server started (one per change published
    /// while someone listened, whatever the number of streams).
    pub fn serialized(&self) -> u64 {
        self.serialized.load(Ordering::Relaxed)
    }
}

/// One change per run touched by `events`, in the order the runs first appear; each carries
/// the run's latest state in the batch by `(timestamp, event id)`.
pub fn changes_of(events: &[Event]) -> Vec<RunChange> {
    /// Orders state events of one run: the greatest is the latest.
    type Key = (chrono::DateTime<chrono::Utc>, Uuid);
    let mut order: Vec<Uuid> = Vec::new();
    let mut by_run: HashMap<Uuid, (RunChange, Option<Key>)> = HashMap::new();
    for event in events {
        let entry = by_run.entry(event.run_id).or_insert_with(|| {
            order.push(event.run_id);
            (
                RunChange {
                    run_id: event.run_id,
                    flow_run_id: event.flow_run_id,
                    kind: event.run_kind,
                    name: event.name.to_string(),
                    state: None,
                },
                None,
            )
        });
        if let EventBody::State { state, .. } = &event.body {
            let key = (event.timestamp, event.id);
            if entry.1.is_none_or(|latest| key > latest) {
                entry.0.state = Some(state.kind);
                entry.0.name = event.name.to_string();
                entry.1 = Some(key);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_run.remove(&id).map(|(change, _)| change))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use flowkit_wire::event::{LogLevel, RunKind};
    use flowkit_wire::state::{State, StateType};

    fn event(run: Uuid, secs: i64, body: EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: run,
            parent_run_id: None,
            flow_run_id: Some(run),
            run_kind: RunKind::Flow,
            name: "etl".into(),
            attempt: 1,
            timestamp: Utc
                .timestamp_opt(1_800_000_000 + secs, 0)
                .single()
                .expect("time"),
            lease: None,
            body,
        }
    }

    fn state(kind: StateType) -> EventBody {
        EventBody::State {
            state: State::new(kind),
            details: None,
        }
    }

    #[test]
    fn latest_state_per_run_even_out_of_order() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let events = vec![
            event(a, 2, state(StateType::Completed)),
            event(a, 1, state(StateType::Running)),
            event(
                b,
                0,
                EventBody::Log {
                    level: LogLevel::Info,
                    message: "hi".into(),
                    fields: Default::default(),
                },
            ),
        ];
        let changes = changes_of(&events);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].run_id, a);
        assert_eq!(changes[0].state, Some(StateType::Completed));
        assert_eq!(changes[1].run_id, b);
        assert_eq!(changes[1].state, None);
    }
}
