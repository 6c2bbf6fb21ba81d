//! The terminal summary printed when a top-level flow run ends. (Being written.)

use crate::event::Event;
use crate::sink::Sink;

/// Prints a table of the runs of each top-level flow run when it ends.
#[derive(Debug, Default)]
pub struct Summary {}

impl Summary {
    /// A summary printed to stderr.
    pub fn to_stderr() -> Summary {
        Summary {}
    }
}

impl Sink for Summary {
    fn on_event(&mut self, _event: &Event) {}
}
