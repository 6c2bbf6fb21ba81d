//! The current run, carried by a tokio task-local.
//!
//! Every task or flow run executes inside a [`Frame`] that names it; a run started inside
//! another finds its parent here. The frame crosses [`crate::spawn`], `submit` and `map`, but
//! not a bare `tokio::spawn` (a run spawned that way is a standalone run with no parent).

use crate::event::{Event, RunKind};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

tokio::task_local! {
    static CURRENT: Arc<Frame>;
}

/// The scope a piece of code runs in: the current run (if any), the enclosing flow run and,
/// under [`crate::testing`], the recorder that receives every event.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    pub run: Option<RunRef>,
    pub flow: Option<Arc<FlowScope>>,
    pub recorder: Option<Arc<Recorder>>,
    /// Limited tags whose slots this run or an enclosing one holds: a run nested inside runs
    /// inside that slot instead of waiting for another (which could never come at limit 1).
    pub held_tags: Option<Arc<[String]>>,
}

/// The identity of the run a frame belongs to.
#[derive(Clone, Debug)]
pub(crate) struct RunRef {
    pub id: Uuid,
    pub kind: RunKind,
    pub name: Cow<'static, str>,
    pub parent_run_id: Option<Uuid>,
    pub flow_run_id: Option<Uuid>,
    pub attempt: u32,
}

/// Per flow run: what tasks of earlier attempts of this flow run finished with, so a flow
/// retry reruns only what did not finish.
#[derive(Debug)]
pub(crate) struct FlowScope {
    pub run_id: Uuid,
    pub name: Cow<'static, str>,
    /// The flow run's attempt currently executing (1-based).
    pub attempt: std::sync::atomic::AtomicU32,
    /// Kept results by (task key + inputs hash): the encoded output and the attempt that
    /// produced it.
    pub kept: Mutex<HashMap<[u8; 32], KeptResult>>,
    /// The fencing token of the deployed run this flow run belongs to (its own claim, or the
    /// enclosing deployed flow's for a subflow): set on every event of its runs and logs.
    pub lease: Option<u64>,
}

/// An encoded output and the flow attempt that produced it.
pub(crate) type KeptResult = (Arc<[u8]>, u32);

/// Receives every event emitted in its scope, synchronously (see [`crate::testing`]).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn record(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// The frame of the code running now, if any.
pub(crate) fn current() -> Option<Arc<Frame>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `fut` inside `frame`.
pub(crate) fn scope<F: std::future::Future>(
    frame: Arc<Frame>,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<Arc<Frame>, F> {
    CURRENT.scope(frame, fut)
}
