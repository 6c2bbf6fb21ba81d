//! `FLOWKIT_EVENT_LOG`: every event appended to a file as one JSON object per line. (Being written.)

use crate::event::Event;
use crate::sink::Sink;
use std::path::Path;

/// Appends every event to a file as JSON lines.
#[derive(Debug)]
pub struct JsonlSink {}

impl JsonlSink {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<JsonlSink> {
        let _ = path;
        Ok(JsonlSink {})
    }
}

impl Sink for JsonlSink {
    fn on_event(&mut self, _event: &Event) {}
}
