//! Live run changes for the dashboard: after each successful ingest, one compact
//! [`RunChange`] per run the batch touched goes into a bounded broadcast channel, and
//! `GET /api/stream` forwards it as a server-sent event.
//!
//! Each change is serialized once, as the whole server-sent event (`event: run`, its JSON
//! data), when it is published; every stream sends the same shared bytes
//! ([`PublishedChange::frame`]), so a change costs one serialization however many streams are
//! open ([`Changes::serialized`] counts them).
//!
//! The log lines of a flow run and its task runs go out too (`event: log`, a [`LogEntry`]),
//! to the streams that follow that flow run with `logs=true`: they are serialized only for a
//! flow run someone follows ([`Changes::watch_logs`]), once however many follow it, and
//! published before the batch's changes, so a client sees a run's last lines before it sees
//! the run end. They share the channel's bound with the changes: a flow run that logs faster
//! than a client reads makes that client `lagged`, as any burst of changes does.
//!
//! A client too slow to keep up loses the oldest changes; it is then sent a `lagged` event and
//! should refetch what it shows. Changes are hints for refetching, not a replication log:
//! when events of a run arrive out of order the change carries the latest state *of the
//! batch*, and the API has the truth.

use axum::body::Bytes;
use flowkit_wire::api::logs::LogEntry;
use flowkit_wire::event::{Event, EventBody};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use flowkit_wire::api::stream::RunChange;

/// A change as every stream receives it: the change (to filter on) and its server-sent event,
/// serialized once.
#[derive(Debug)]
pub struct PublishedChange {
    /// The change; for a log line, the run that logged it (its `state` null).
    pub change: RunChange,
    /// `event: run` and `data: <the change as JSON>` (or `event: log` and a [`LogEntry`]),
    /// ready to send.
    pub frame: Bytes,
    /// Whether this is a log line, which only streams asking for logs send.
    pub log: bool,
}

/// The sending side, shared by every request handler.
#[derive(Clone, Debug)]
pub struct Changes {
    sender: broadcast::Sender<Arc<PublishedChange>>,
    serialized: Arc<AtomicU64>,
    /// Streams following the logs of each flow run, and their total.
    log_watchers: Arc<Mutex<HashMap<Uuid, usize>>>,
    watching: Arc<AtomicUsize>,
}

/// A stream's interest in a flow run's log lines; dropping it ends it.
#[derive(Debug)]
pub struct LogWatch {
    flow_run_id: Uuid,
    watchers: Arc<Mutex<HashMap<Uuid, usize>>>,
    watching: Arc<AtomicUsize>,
}

impl Drop for LogWatch {
    fn drop(&mut self) {
        if let Ok(mut watchers) = self.watchers.lock() {
            if let Some(n) = watchers.get_mut(&self.flow_run_id) {
                *n -= 1;
                if *n == 0 {
                    watchers.remove(&self.flow_run_id);
                }
            }
            self.watching.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Changes {
    /// A channel that buffers `capacity` changes for the slowest client.
    pub fn new(capacity: usize) -> Changes {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Changes {
            sender,
            serialized: Arc::new(AtomicU64::new(0)),
            log_watchers: Arc::new(Mutex::new(HashMap::new())),
            watching: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Asks for the log lines of `flow_run_id` (the flow run's and its task runs') to be
    /// published, until the returned watch is dropped.
    pub fn watch_logs(&self, flow_run_id: Uuid) -> LogWatch {
        if let Ok(mut watchers) = self.log_watchers.lock() {
            *watchers.entry(flow_run_id).or_insert(0) += 1;
            self.watching.fetch_add(1, Ordering::Relaxed);
        }
        LogWatch {
            flow_run_id,
            watchers: Arc::clone(&self.log_watchers),
            watching: Arc::clone(&self.watching),
        }
    }

    /// The log lines of `events` whose flow run someone follows (see
    /// [`watch_logs`](Changes::watch_logs)), each serialized once, to publish with
    /// [`publish_logs`](Changes::publish_logs) once the batch is stored; none (and no work)
    /// when nobody follows logs.
    pub fn logs_of(&self, events: &[Event]) -> Vec<PublishedChange> {
        if self.watching.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let Ok(watchers) = self.log_watchers.lock().map(|w| w.clone()) else {
            return Vec::new();
        };
        let mut logs = Vec::new();
        for event in events {
            let EventBody::Log {
                level,
                message,
                fields,
            } = &event.body
            else {
                continue;
            };
            let flow_run_id = event.flow_run_id.unwrap_or(event.run_id);
            if !watchers.contains_key(&flow_run_id) {
                continue;
            }
            let entry = LogEntry {
                event_id: event.id,
                run_id: event.run_id,
                flow_run_id: Some(flow_run_id),
                run_name: event.name.to_string(),
                level: *level,
                message: message.clone(),
                fields: fields.clone(),
                attempt: event.attempt,
                timestamp: event.timestamp,
            };
            let Ok(json) = serde_json::to_string(&entry) else {
                continue;
            };
            let change = RunChange {
                run_id: event.run_id,
                flow_run_id: Some(flow_run_id),
                kind: event.run_kind,
                name: event.name.to_string(),
                state: None,
            };
            logs.push(PublishedChange {
                change,
                frame: Bytes::from(format!("event: log\ndata: {json}\n\n")),
                log: true,
            });
        }
        logs
    }

    /// Publishes log lines made by [`logs_of`](Changes::logs_of).
    pub fn publish_logs(&self, logs: Vec<PublishedChange>) {
        for log in logs {
            self.serialized.fetch_add(1, Ordering::Relaxed);
            // An error only means nobody is listening right now.
            let _ = self.sender.send(Arc::new(log));
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
            let _ = self.sender.send(Arc::new(PublishedChange {
                change,
                frame,
                log: false,
            }));
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
