//! Building events for one run and handing them to the bus (and the test recorder).

use crate::bus;
use crate::context::{self, Recorder};
use crate::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use crate::run::deployed::Deployed;
use crate::state::State;
use chrono::Utc;
use std::borrow::Cow;
use std::sync::Arc;
use uuid::Uuid;

/// The fields every event of one run shares.
#[derive(Clone, Debug)]
pub(crate) struct Emitter {
    pub run_id: Uuid,
    pub parent_run_id: Option<Uuid>,
    pub flow_run_id: Option<Uuid>,
    pub kind: RunKind,
    pub name: Cow<'static, str>,
    pub recorder: Option<Arc<Recorder>>,
    /// The fencing token of the deployed run this run belongs to, on every event.
    pub lease: Option<u64>,
    /// Set on a deployed flow run's own emitter: its final state event is kept for the worker,
    /// and only the first final state is emitted.
    pub deployed: Option<Arc<Deployed>>,
}

impl Emitter {
    /// The state event this emitter would send, not sent.
    pub fn event_of(&self, attempt: u32, state: State) -> Event {
        self.event(
            attempt,
            EventBody::State {
                state,
                details: None,
            },
        )
    }

    fn event(&self, attempt: u32, body: EventBody) -> Event {
        let timestamp = Utc::now();
        Event {
            id: crate::ids::new_id_at(timestamp.timestamp_millis().max(0) as u64),
            run_id: self.run_id,
            parent_run_id: self.parent_run_id,
            flow_run_id: self.flow_run_id,
            run_kind: self.kind,
            name: self.name.clone(),
            attempt,
            timestamp,
            lease: self.lease,
            body,
        }
    }

    /// Records that the run entered `state` during `attempt`.
    pub fn state(&self, attempt: u32, state: State, details: Option<Box<RunDetails>>) {
        let is_final = state.kind.is_final();
        let event = self.event(attempt, EventBody::State { state, details });
        if let Some(deployed) = self.deployed.as_ref().filter(|_| is_final)
            && !deployed.latch_final(&event)
        {
            return;
        }
        self.send(event);
    }

    fn send(&self, event: Event) {
        if let Some(recorder) = &self.recorder {
            recorder.record(&event);
        }
        bus::emit(event);
    }
}

/// Records a log line for the run executing now. Returns `false` (and records nothing) when
/// no run is executing.
pub(crate) fn log_to_current_run(
    level: LogLevel,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
) -> bool {
    let Some(frame) = context::current() else {
        return false;
    };
    let Some(run) = &frame.run else {
        return false;
    };
    let emitter = Emitter {
        run_id: run.id,
        parent_run_id: run.parent_run_id,
        flow_run_id: run.flow_run_id,
        kind: run.kind,
        name: run.name.clone(),
        recorder: frame.recorder.clone(),
        lease: frame.flow.as_ref().and_then(|f| f.lease),
        deployed: None,
    };
    let event = emitter.event(
        run.attempt,
        EventBody::Log {
            level,
            message,
            fields,
        },
    );
    emitter.send(event);
    true
}
