//! A flow run executed for a worker (`flowkit::serve`): the claim it runs under and what the
//! worker reads back when it ends.
//!
//! The executor finds it in the [`CallSite`](crate::run::spec::CallSite) of the flow run and
//! then:
//! - uses the claimed run id, starts at the claimed attempt and allows attempts up to the
//!   claim's `max_attempts` (the flow's own retries continue the numbering);
//! - sets [`Event::lease`] to the claim's fencing token on every event of the run, its task
//!   runs' and logs included (the token travels in the flow's [`FlowScope`]);
//! - records the deployment (`flow/name`) and the worker in the run's details;
//! - serializes the output of a completed run before recording `Completed` (an output that does
//!   not serialize, or is larger than [`MAX_RESULT_BYTES`], ends the run `Failed` instead);
//! - keeps the run's final state event (the very event the sinks get) for the worker, which
//!   sends it in its `FinishRequest`; a second final state (a drop guard firing after the worker
//!   gave up waiting) is never emitted;
//! - stops the flow when [`Deployed::cancel`] is triggered (see `executor::run`).
//!
//! [`FlowScope`]: crate::context::FlowScope

use crate::event::{Event, RunDetails, RunKind};
use crate::run::emit::Emitter;
use crate::state::State;
use flowkit_wire::api::workers::MAX_RESULT_BYTES;
use serde_json::Value;
use std::any::Any;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Serializes a flow's output, given as `&dyn Any` of its declared return type: `None` for an
/// `Err` (no result), else the JSON of `T` of `Result<T, E>` (or of the whole output) or why
/// it does not serialize. Written by `#[flow]` in `deployment()`, where the types are known.
pub type OutputFn = fn(&dyn Any) -> Option<Result<Value, String>>;

/// What a deployed flow run is running under, shared by the executor and the worker.
#[derive(Debug)]
pub(crate) struct Deployed {
    /// The claimed run.
    pub run_id: Uuid,
    /// The flow's name (the run's display name).
    pub flow_name: &'static str,
    /// The claim's attempt: the first this process runs.
    pub first_attempt: u32,
    /// The most attempts the run may have in all.
    pub max_attempts: u32,
    /// The fencing token, on every event of the run.
    pub lease: u64,
    /// `flow/name`.
    pub deployment: String,
    /// `host:pid` of the worker.
    pub worker: String,
    /// The claim's tags (the deployment's and the trigger's).
    pub tags: Vec<String>,
    /// Triggered to stop the flow (a cancel request, a shutdown).
    pub cancel: CancellationToken,
    /// Why it was cancelled, for the final state's message.
    reason: Mutex<Option<String>>,
    /// The attempt executing now (0 before the first starts).
    attempt: AtomicU32,
    output: OutputFn,
    result: Mutex<Option<Value>>,
    final_event: Mutex<Option<Event>>,
}

/// The claim a deployed run executes, as the worker passes it on.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub run_id: Uuid,
    pub attempt: u32,
    pub max_attempts: u32,
    pub token: u64,
    pub deployment: String,
    pub worker: String,
    pub tags: Vec<String>,
}

impl Deployed {
    pub(crate) fn new(claim: Claim, flow_name: &'static str, output: OutputFn) -> Arc<Deployed> {
        Arc::new(Deployed {
            run_id: claim.run_id,
            flow_name,
            first_attempt: claim.attempt.max(1),
            max_attempts: claim.max_attempts.max(claim.attempt).max(1),
            lease: claim.token,
            deployment: claim.deployment,
            worker: claim.worker,
            tags: claim.tags,
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            attempt: AtomicU32::new(claim.attempt.max(1).saturating_sub(1)),
            output,
            result: Mutex::new(None),
            final_event: Mutex::new(None),
        })
    }

    /// Asks the flow to stop; `reason` becomes the `Cancelled` state's message. The first
    /// reason given is kept.
    pub(crate) fn cancel(&self, reason: &str) {
        {
            let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        self.cancel.cancel();
    }

    /// The message of a `Cancelled` state.
    pub(crate) fn cancel_message(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "cancelled".to_string())
    }

    pub(crate) fn set_attempt(&self, attempt: u32) {
        self.attempt.store(attempt, Ordering::Relaxed);
    }

    /// The attempt executing now, or the last one.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt.load(Ordering::Relaxed)
    }

    /// Keeps `event` as the run's final state if it is the first; `false` if one was kept
    /// already (then `event` must not be emitted).
    pub(crate) fn latch_final(&self, event: &Event) -> bool {
        let mut slot = self
            .final_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(event.clone());
        true
    }

    /// Whether the run has recorded its final state.
    pub(crate) fn has_ended(&self) -> bool {
        self.final_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The run's final state event, if it has one.
    pub(crate) fn final_event(&self) -> Option<Event> {
        self.final_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The output of a completed run, as JSON.
    pub(crate) fn take_result(&self) -> Option<Value> {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Serializes a successful output (erased) and keeps it; `Err` says why the run cannot
    /// complete with it.
    pub(crate) fn keep_output(&self, output: &dyn Any) -> Result<(), String> {
        let json = match (self.output)(output) {
            None => return Ok(()),
            Some(Err(why)) => {
                return Err(format!(
                    "the flow's output could not be serialized as JSON for the server: {why}"
                ));
            }
            Some(Ok(json)) => json,
        };
        let size = serde_json::to_vec(&json).map_or(0, |bytes| bytes.len());
        if size > MAX_RESULT_BYTES {
            return Err(format!(
                "the flow's output is {size} bytes of JSON; a deployed flow's result may be at \
                 most {MAX_RESULT_BYTES} bytes: return less (e.g. where the data is, not the data)"
            ));
        }
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(json);
        Ok(())
    }

    /// The emitter of the flow run's own events, for the worker's records of a run whose
    /// flow never started or never ended (no details: the executor sends them).
    pub(crate) fn emitter(self: &Arc<Self>) -> Emitter {
        Emitter {
            run_id: self.run_id,
            parent_run_id: None,
            flow_run_id: Some(self.run_id),
            kind: RunKind::Flow,
            name: Cow::Borrowed(self.flow_name),
            recorder: None,
            lease: Some(self.lease),
            deployed: Some(Arc::clone(self)),
        }
    }

    /// Records a final `state` for a run whose flow did not (it never started, or was aborted
    /// in code that never yields), unless one is recorded already. `details` goes with a run
    /// that never started. Returns the run's final event.
    pub(crate) fn end(self: &Arc<Self>, state: State, details: Option<RunDetails>) -> Event {
        let state_for_fallback = {
            let state = state.clone();
            move || state
        };
        if !self.has_ended() {
            let emitter = self.emitter();
            if let Some(details) = details {
                emitter.state(
                    self.attempt(),
                    State::new(crate::state::StateType::Pending),
                    Some(Box::new(details)),
                );
            }
            emitter.state(self.attempt().max(self.first_attempt), state, None);
        }
        // `state` above latched a final event, or one was latched before; `state` itself
        // (unsent) only if the run's emitter lost it.
        self.final_event().unwrap_or_else(|| {
            self.emitter()
                .event_of(self.attempt(), state_for_fallback())
        })
    }

    /// The details of a flow run that never started.
    pub(crate) fn details(&self, task_key: &'static str, parameters: Value) -> RunDetails {
        RunDetails {
            task_key: Cow::Borrowed(task_key),
            tags: self.tags.iter().cloned().map(Cow::Owned).collect(),
            parameters: Some(parameters),
            deployment: Some(self.deployment.clone()),
            worker: Some(Cow::Owned(self.worker.clone())),
            ..RunDetails::default()
        }
    }
}

/// `&dyn Any` of a value, for [`crate::run::spec::Shape::with_any`].
pub(crate) fn erase<T: Any>(value: &T) -> &dyn Any {
    value
}
