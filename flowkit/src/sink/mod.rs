//! Sinks: where events go, off the hot path.
//!
//! The runtime emits events into one bounded queue per process ([`crate::bus`]); a background
//! thread hands each one to every sink. A sink that falls behind makes the queue fill up, and
//! then events are dropped and counted, never waited for: a run is never slowed by a sink.

use crate::event::Event;

pub mod jsonl;
pub mod logs;
pub mod report;
pub mod summary;

/// Something that receives every event of the process, in order, on the sink thread.
///
/// Every method defaults to doing nothing.
pub trait Sink: Send + 'static {
    /// One event.
    fn on_event(&mut self, event: &Event) {
        let _ = event;
    }
    /// Events were dropped because the queue was full.
    fn on_dropped(&mut self, count: u64) {
        let _ = count;
    }
    /// Make everything received so far durable or visible (called when a top-level flow ends
    /// and when the process flushes).
    fn flush(&mut self) {}
}
