//! `FLOWKIT_EVENT_LOG`: every event appended to a file as one JSON object per line.
//!
//! Each line is the [`Event`] exactly as the server ingests it, so a log can be replayed
//! into a server or read back with `serde_json::from_str::<flowkit::Event>`. Writes are
//! buffered and made durable when a top-level flow ends ([`Sink::flush`]) and when the sink
//! is dropped. A failing disk never fails a run: the first write error is reported on stderr
//! and the sink stops writing.

use crate::event::Event;
use crate::sink::Sink;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Appends every event to a file as JSON lines.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    /// `None` once a write has failed.
    out: Option<BufWriter<File>>,
}

impl JsonlSink {
    /// Opens (creating it and its parent directories if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<JsonlSink> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            out: Some(BufWriter::new(file)),
        })
    }

    /// The file events are appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reports `error` once and stops writing.
    fn fail(&mut self, error: &io::Error) {
        if let Some(out) = self.out.take() {
            // Discard what is buffered rather than have the drop try to write it again.
            let _ = out.into_parts();
            eprintln!(
                "flowkit: cannot write the event log {}: {error}; no more events are written to it",
                self.path.display()
            );
        }
    }
}

impl Sink for JsonlSink {
    fn on_event(&mut self, event: &Event) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        let written = serde_json::to_writer(&mut *out, event)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(error) = written {
            self.fail(&error);
        }
    }

    fn flush(&mut self) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if let Err(error) = out.flush() {
            self.fail(&error);
        }
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        Sink::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBody, LogLevel, RunDetails, RunKind};
    use crate::state::{State, StateType};
    use chrono::Utc;
    use std::borrow::Cow;
    use std::io::BufRead;
    use uuid::Uuid;

    fn events(n: usize) -> Vec<Event> {
        let run_id = Uuid::now_v7();
        (0..n)
            .map(|i| Event {
                id: Uuid::now_v7(),
                run_id,
                parent_run_id: None,
                flow_run_id: Some(run_id),
                run_kind: RunKind::Flow,
                name: Cow::Borrowed("etl"),
                attempt: 1,
                timestamp: Utc::now(),
                lease: None,
                body: match i % 3 {
                    0 => EventBody::State {
                        state: State::new(StateType::Pending),
                        details: Some(Box::new(RunDetails {
                            task_key: "demo::etl".into(),
                            parameters: Some(serde_json::json!({"day": "2026-11-28"})),
                            ..RunDetails::default()
                        })),
                    },
                    1 => EventBody::Log {
                        level: LogLevel::Info,
                        message: format!("line {i}\nwith a newline and <b>html</b>"),
                        fields: serde_json::Map::from_iter([("rows".into(), i.into())]),
                    },
                    _ => EventBody::State {
                        state: State::with_message(StateType::Failed, "boom"),
                        details: None,
                    },
                },
            })
            .collect()
    }

    fn read_back(path: &Path) -> Vec<Event> {
        let file = File::open(path).expect("open the log");
        io::BufReader::new(file)
            .lines()
            .map(|line| serde_json::from_str(&line.expect("read a line")).expect("parse an event"))
            .collect()
    }

    #[test]
    fn events_round_trip_one_per_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/dirs/events.jsonl");
        let written = events(9);
        let mut sink = JsonlSink::open(&path).expect("open");
        for e in &written {
            sink.on_event(e);
        }
        Sink::flush(&mut sink);
        assert_eq!(read_back(&path), written);
    }

    #[test]
    fn opening_again_appends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.jsonl");
        let first = events(4);
        let second = events(5);
        {
            let mut sink = JsonlSink::open(&path).expect("open");
            first.iter().for_each(|e| sink.on_event(e));
            // Dropped without an explicit flush: the drop flushes.
        }
        {
            let mut sink = JsonlSink::open(&path).expect("open again");
            second.iter().for_each(|e| sink.on_event(e));
        }
        let all: Vec<Event> = first.into_iter().chain(second).collect();
        assert_eq!(read_back(&path), all);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_error_stops_the_sink_without_panicking() {
        let mut sink = JsonlSink::open(Path::new("/dev/full")).expect("open /dev/full");
        for e in &events(3) {
            sink.on_event(e);
        }
        Sink::flush(&mut sink);
        assert!(sink.out.is_none(), "the sink stopped after the error");
        // Later events and flushes are ignored.
        sink.on_event(&events(1)[0]);
        Sink::flush(&mut sink);
    }
}
