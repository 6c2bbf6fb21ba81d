//! Sinks: where events go, off the hot path.
//!
//! The runtime emits events into one bounded queue per process ([`QUEUE_CAPACITY`] events); a
//! background thread hands each one to every sink. A sink that falls behind makes the queue
//! fill up, and then events are dropped and counted ([`dropped_events`]), never waited for: a
//! run is never slowed by a sink. [`add_sink`] adds your own.
//!
//! A sink is flushed at two moments: at the end of every top-level flow ([`Sink::flush`],
//! waited for by the flow when the sink [waits at flow end](Sink::waits_at_flow_end)), and on
//! [`crate::flush`] (also when the guard of [`crate::init`] drops, and at process exit), which
//! also asks it to [`deliver`](Sink::deliver) what it holds to wherever it sends events.

use crate::bus::Waiter;
use crate::event::Event;
use std::sync::Arc;
use std::time::Instant;

pub use crate::bus::{QUEUE_CAPACITY, add_sink, dropped_events};

pub mod jsonl;
pub mod logs;
pub mod report;
pub mod summary;

/// Something that receives every event of the process, in order, on the sink thread.
///
/// Every method defaults to doing nothing (or, for [`Sink::deliver`], to answering at once).
pub trait Sink: Send + 'static {
    /// One event.
    fn on_event(&mut self, event: &Event) {
        let _ = event;
    }
    /// Events were dropped because the queue was full.
    fn on_dropped(&mut self, count: u64) {
        let _ = count;
    }
    /// Make everything received so far durable or visible locally (a file, the terminal).
    /// Called at the end of each top-level flow (if [`Sink::waits_at_flow_end`]) and before
    /// [`Sink::deliver`]. Must not wait for the network: the flow waits for it.
    fn flush(&mut self) {}
    /// Whether the end of each top-level flow waits for this sink's [`Sink::flush`], so that
    /// what it writes is complete when the flow's call returns. Asked once, when the sink is
    /// added. `true` unless the sink says otherwise; a sink that sends events elsewhere (the
    /// reporter) says `false` and delivers in the background and on [`Sink::deliver`].
    fn waits_at_flow_end(&self) -> bool {
        true
    }
    /// Deliver everything received so far to wherever this sink sends events, and say so on
    /// `delivery` — from any thread, so the sink thread can go on meanwhile. Called by
    /// [`crate::flush`], when the guard of [`crate::init`] drops, and at process exit, right
    /// after [`Sink::flush`].
    ///
    /// ```
    /// use flowkit::sink::{Delivery, Sink};
    /// use std::time::Instant;
    ///
    /// /// Sends events to some service, within `deadline`; says whether they all got there.
    /// fn send(events: &[flowkit::Event], deadline: Instant) -> bool {
    ///     # let _ = (events, deadline);
    ///     true
    /// }
    ///
    /// struct Outbox(Vec<flowkit::Event>);
    ///
    /// impl Sink for Outbox {
    ///     fn on_event(&mut self, event: &flowkit::Event) {
    ///         self.0.push(event.clone());
    ///     }
    ///     fn waits_at_flow_end(&self) -> bool {
    ///         false
    ///     }
    ///     fn deliver(&mut self, delivery: Delivery) {
    ///         let batch = std::mem::take(&mut self.0);
    ///         std::thread::spawn(move || {
    ///             let delivered = send(&batch, delivery.deadline());
    ///             delivery.finish(delivered);
    ///         });
    ///     }
    /// }
    /// ```
    fn deliver(&mut self, delivery: Delivery) {
        delivery.finish(true);
    }
}

/// The request of one [`crate::flush`] to one sink: call [`Delivery::finish`] when what the
/// sink held is delivered (or kept somewhere durable), or give up by dropping it. The flush
/// waits until every sink has answered or [`Delivery::deadline`] has passed.
#[must_use = "the flush waits until this is finished or dropped"]
pub struct Delivery {
    waiter: Option<Arc<Waiter>>,
    deadline: Instant,
}

impl Delivery {
    pub(crate) fn new(waiter: Arc<Waiter>, deadline: Instant) -> Delivery {
        Delivery {
            waiter: Some(waiter),
            deadline,
        }
    }

    /// When the flush stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Answers the flush: `delivered` says whether everything the sink held was delivered.
    pub fn finish(mut self, delivered: bool) {
        if let Some(waiter) = self.waiter.take() {
            waiter.answer(delivered);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Dropped unanswered (the sink gave up or panicked): not delivered.
        if let Some(waiter) = self.waiter.take() {
            waiter.answer(false);
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
