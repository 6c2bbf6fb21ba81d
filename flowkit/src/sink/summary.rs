//! The terminal summary printed when a top-level flow run ends.
//!
//! For each top-level flow run (a flow run without a parent), the summary prints one table
//! when the flow reaches its final state: a row per task name and subflow name with how many
//! runs ended in each final state and how long they took, then the runs that did not succeed
//! with their error, then the flow's own state and duration.
//!
//! ```text
//! flowkit: flow run "training" (0192f1a2-7c4e-7d3a-9d2e-0a1b2c3d4e5f)
//!   run                runs  completed  cached  failed   total    mean
//!   download              1          1       -       -   120ms   120ms
//!   featurize             1          -       1       -   1.2ms   1.2ms
//!   train                 3          2       -       1   1.92s   640ms
//!   evaluate (subflow)    1          1       -       -   310ms   310ms
//!   not successful:
//!     train (0192…) Failed after 2 attempts: CUDA out of memory
//!   training: Completed in 2.41s
//! ```
//!
//! Memory stays bounded however many runs a flow makes: a run is tracked only while it is
//! live (from its first event to its final state); what remains is one aggregate per name.

use crate::event::{Event, EventBody, RunKind};
use crate::ids::IdMap;
use crate::sink::Sink;
use crate::state::StateType;
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::Duration;
use uuid::Uuid;

/// How many unsuccessful runs are listed with their message before "and N more".
const MAX_LISTED_FAILURES: usize = 10;

/// Longest error message printed for one run, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// The final states, in the order of the table's columns.
const FINAL_STATES: [StateType; 6] = [
    StateType::Completed,
    StateType::Cached,
    StateType::Failed,
    StateType::Crashed,
    StateType::TimedOut,
    StateType::Cancelled,
];

/// Prints a table of the runs of each top-level flow run when it ends.
///
/// It is on by default (see [`crate::config`]); write it somewhere else with
/// [`Summary::new`] and [`crate::sink::add_sink`].
pub struct Summary {
    out: Box<dyn Write + Send>,
    /// Runs that have started and not yet ended, under a top-level flow run.
    live: IdMap<LiveRun>,
    /// Top-level flow runs that have started and not yet ended.
    flows: IdMap<FlowTally>,
}

/// What is kept about a run between its first event and its final state.
struct LiveRun {
    /// The top-level flow run it belongs to.
    root: Uuid,
    /// Its row in the root's table; `None` for the root flow run itself.
    row: Option<usize>,
    /// When its first event happened.
    first_seen: DateTime<Utc>,
    /// When its first attempt started running.
    running: Option<DateTime<Utc>>,
    /// Attempts started so far.
    attempts: u32,
}

/// Everything printed for one top-level flow run.
struct FlowTally {
    name: Cow<'static, str>,
    rows: Vec<Row>,
    row_of: HashMap<(RunKind, Cow<'static, str>), usize>,
    failures: Vec<Failure>,
    unlisted_failures: u64,
    /// Events dropped while this flow run was live: rows may miss up to this many runs.
    dropped: u64,
}

/// The aggregate of every run of one name under one top-level flow run.
struct Row {
    kind: RunKind,
    name: Cow<'static, str>,
    /// Runs per final state, in the order of [`FINAL_STATES`].
    counts: [u64; FINAL_STATES.len()],
    total: Duration,
}

/// An unsuccessful run, as listed under the table.
struct Failure {
    kind: RunKind,
    name: Cow<'static, str>,
    run_id: Uuid,
    state: StateType,
    attempts: u32,
    message: Option<String>,
}

impl Summary {
    /// A summary written to `out` (a test buffer, a log file, ...).
    pub fn new(out: Box<dyn Write + Send>) -> Summary {
        Summary {
            out,
            live: IdMap::default(),
            flows: IdMap::default(),
        }
    }

    /// A summary printed to stderr.
    pub fn to_stderr() -> Summary {
        Summary::new(Box::new(std::io::stderr()))
    }

    /// Starts tracking a run on its first event, if it belongs to a top-level flow run.
    fn first_event(&mut self, event: &Event) {
        let root = match event.parent_run_id {
            None if event.run_kind == RunKind::Flow => {
                self.flows.insert(
                    event.run_id,
                    FlowTally {
                        name: event.name.clone(),
                        rows: Vec::new(),
                        row_of: HashMap::new(),
                        failures: Vec::new(),
                        unlisted_failures: 0,
                        dropped: 0,
                    },
                );
                self.live.insert(
                    event.run_id,
                    LiveRun {
                        root: event.run_id,
                        row: None,
                        first_seen: event.timestamp,
                        running: None,
                        attempts: 0,
                    },
                );
                return;
            }
            // A standalone task run (and whatever it calls) is not summarized.
            None => return,
            // A parent's first event precedes its children's. A parent that already ended
            // (a run left running in the background) still has its flow run to go by.
            Some(parent) => match self.live.get(&parent) {
                Some(p) => p.root,
                None => match event.flow_run_id.and_then(|f| self.live.get(&f)) {
                    Some(f) => f.root,
                    None => return,
                },
            },
        };
        let Some(tally) = self.flows.get_mut(&root) else {
            return;
        };
        let row = tally.row(event.run_kind, event.name.clone());
        self.live.insert(
            event.run_id,
            LiveRun {
                root,
                row: Some(row),
                first_seen: event.timestamp,
                running: None,
                attempts: 0,
            },
        );
    }

    fn end_of_run(&mut self, event: &Event, run: LiveRun, state: StateType, message: Option<&str>) {
        // A cached run never runs: it is measured from its first event.
        let start = match state {
            StateType::Cached => run.first_seen,
            _ => run.running.unwrap_or(run.first_seen),
        };
        let took = (event.timestamp - start).to_std().unwrap_or_default();
        let Some(row) = run.row else {
            if let Some(tally) = self.flows.remove(&run.root) {
                // Whatever is still live under this flow run will not be printed any more.
                let before = self.live.len();
                self.live.retain(|_, r| r.root != run.root);
                let unfinished = before - self.live.len();
                let text = tally.render(event, state, message, took, unfinished);
                // Nothing sensible can be done when stderr itself fails.
                let _ = self
                    .out
                    .write_all(text.as_bytes())
                    .and_then(|()| self.out.flush());
            }
            return;
        };
        let Some(tally) = self.flows.get_mut(&run.root) else {
            return;
        };
        if let Some(column) = FINAL_STATES.iter().position(|s| *s == state) {
            let r = &mut tally.rows[row];
            r.counts[column] += 1;
            r.total += took;
        }
        if state.is_failure() {
            if tally.failures.len() < MAX_LISTED_FAILURES {
                tally.failures.push(Failure {
                    kind: event.run_kind,
                    name: event.name.clone(),
                    run_id: event.run_id,
                    state,
                    attempts: run.attempts,
                    message: message.map(str::to_owned),
                });
            } else {
                tally.unlisted_failures += 1;
            }
        }
    }

    /// Runs being tracked now (for tests of the memory bound).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.live.len(), self.flows.len())
    }
}

impl Default for Summary {
    fn default() -> Summary {
        Summary::to_stderr()
    }
}

impl fmt::Debug for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summary")
            .field("live_runs", &self.live.len())
            .field("live_flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

impl Sink for Summary {
    fn on_event(&mut self, event: &Event) {
        let EventBody::State { state, .. } = &event.body else {
            return;
        };
        if !self.live.contains_key(&event.run_id) {
            self.first_event(event);
        }
        let kind = state.kind;
        if kind.is_final() {
            if let Some(run) = self.live.remove(&event.run_id) {
                self.end_of_run(event, run, kind, state.message.as_deref());
            }
        } else if kind == StateType::Running
            && let Some(run) = self.live.get_mut(&event.run_id)
        {
            run.running.get_or_insert(event.timestamp);
            run.attempts += 1;
        }
    }

    fn on_dropped(&mut self, count: u64) {
        // Which flow runs lost events is unknown: each live one may have.
        for tally in self.flows.values_mut() {
            tally.dropped += count;
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl FlowTally {
    fn row(&mut self, kind: RunKind, name: Cow<'static, str>) -> usize {
        let key = (kind, name);
        if let Some(&i) = self.row_of.get(&key) {
            return i;
        }
        self.rows.push(Row {
            kind,
            name: key.1.clone(),
            counts: [0; FINAL_STATES.len()],
            total: Duration::ZERO,
        });
        self.row_of.insert(key, self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// The whole summary of this flow run, ready to print.
    fn render(
        &self,
        flow: &Event,
        state: StateType,
        message: Option<&str>,
        took: Duration,
        unfinished: usize,
    ) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(out, "\nflowkit: flow run {:?} ({})", self.name, flow.run_id);
        if self.rows.is_empty() {
            let _ = writeln!(out, "  (no task runs)");
        } else {
            self.render_table(&mut out);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "  not successful:");
            for f in &self.failures {
                let suffix = if f.kind == RunKind::Flow {
                    " (subflow)"
                } else {
                    ""
                };
                let attempts = match f.attempts {
                    0 | 1 => String::new(),
                    n => format!(" after {n} attempts"),
                };
                let _ = write!(
                    out,
                    "    {}{suffix} ({}) {}{attempts}",
                    f.name, f.run_id, f.state
                );
                match &f.message {
                    Some(m) => {
                        let _ = writeln!(out, ": {}", one_line(m));
                    }
                    None => out.push('\n'),
                }
            }
            if self.unlisted_failures > 0 {
                let _ = writeln!(out, "    and {} more", self.unlisted_failures);
            }
        }
        if unfinished > 0 {
            let _ = writeln!(
                out,
                "  {unfinished} run(s) had not finished when the flow run ended and are not counted"
            );
        }
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "  {} event(s) were dropped (the event queue was full): up to {} run(s) may be missing above",
                self.dropped, self.dropped
            );
        }
        let _ = write!(out, "  {}: {} in {}", self.name, state, HumanDuration(took));
        match message {
            Some(m) => {
                let _ = writeln!(out, ": {}", one_line(m));
            }
            None => out.push('\n'),
        }
        out
    }

    fn render_table(&self, out: &mut String) {
        let columns: Vec<usize> = (0..FINAL_STATES.len())
            .filter(|&c| self.rows.iter().any(|r| r.counts[c] > 0))
            .collect();
        let mut header: Vec<String> = vec!["run".into(), "runs".into()];
        header.extend(
            columns
                .iter()
                .map(|&c| FINAL_STATES[c].as_str().to_lowercase()),
        );
        header.extend(["total".into(), "mean".into()]);
        let mut lines = vec![header];
        for row in &self.rows {
            let runs: u64 = row.counts.iter().sum();
            let mut cells = vec![
                match row.kind {
                    RunKind::Flow => format!("{} (subflow)", row.name),
                    RunKind::Task => row.name.to_string(),
                },
                runs.to_string(),
            ];
            cells.extend(columns.iter().map(|&c| match row.counts[c] {
                0 => "-".to_string(),
                n => n.to_string(),
            }));
            let mean = match u32::try_from(runs) {
                Ok(0) => Duration::ZERO,
                Ok(n) => row.total / n,
                // More runs than u32 holds: the mean is computed in floating point.
                Err(_) => Duration::from_secs_f64(row.total.as_secs_f64() / runs as f64),
            };
            cells.push(HumanDuration(row.total).to_string());
            cells.push(HumanDuration(mean).to_string());
            lines.push(cells);
        }
        let width = |i: usize| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..lines[0].len()).map(width).collect();
        for line in &lines {
            out.push_str("  ");
            for (i, cell) in line.iter().enumerate() {
                if i == 0 {
                    let _ = write!(out, "{cell:<w$}", w = widths[i]);
                } else {
                    let _ = write!(out, "  {cell:>w$}", w = widths[i]);
                }
            }
            out.push('\n');
        }
    }
}

/// `message` on one line, cut to a readable length.
fn one_line(message: &str) -> String {
    let mut text = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A duration with 2–3 significant digits: `850µs`, `12.3ms`, `1.92s`, `3m05s`, `2h14m`.
struct HumanDuration(Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        if secs >= 3600 {
            write!(f, "{}h{:02}m", secs / 3600, secs % 3600 / 60)
        } else if secs >= 60 {
            write!(f, "{}m{:02}s", secs / 60, secs % 60)
        } else if secs >= 10 {
            write!(f, "{:.1}s", d.as_secs_f64())
        } else if secs >= 1 {
            write!(f, "{:.2}s", d.as_secs_f64())
        } else if d.as_millis() >= 100 {
            write!(f, "{}ms", d.as_millis())
        } else if d.as_millis() >= 1 {
            write!(f, "{:.1}ms", d.as_secs_f64() * 1e3)
        } else {
            write!(f, "{}µs", d.as_micros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use std::sync::{Arc, Mutex};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("utf-8")
        }
    }

    /// Builds synthetic events with a clock the test moves by hand.
    struct Script {
        now: DateTime<Utc>,
        events: Vec<Event>,
    }

    #[derive(Clone, Copy)]
    struct Run {
        id: Uuid,
        parent: Option<Uuid>,
        flow: Option<Uuid>,
        kind: RunKind,
        name: &'static str,
    }

    impl Run {
        fn flow(name: &'static str, parent: Option<&Run>) -> Run {
            let id = Uuid::now_v7();
            Run {
                id,
                parent: parent.map(|p| p.id),
                flow: Some(id),
                kind: RunKind::Flow,
                name,
            }
        }
        fn task(name: &'static str, parent: &Run) -> Run {
            Run {
                id: Uuid::now_v7(),
                parent: Some(parent.id),
                flow: parent.flow,
                kind: RunKind::Task,
                name,
            }
        }
    }

    impl Script {
        fn new() -> Script {
            Script {
                now: Utc::now(),
                events: Vec::new(),
            }
        }
        fn wait(&mut self, ms: i64) {
            self.now += chrono::TimeDelta::milliseconds(ms);
        }
        fn state(&mut self, run: &Run, attempt: u32, state: State) {
            self.events.push(Event {
                id: Uuid::now_v7(),
                run_id: run.id,
                parent_run_id: run.parent,
                flow_run_id: run.flow,
                run_kind: run.kind,
                name: Cow::Borrowed(run.name),
                attempt,
                timestamp: self.now,
                lease: None,
                body: EventBody::State {
                    state,
                    details: None,
                },
            });
        }
        fn to(&mut self, run: &Run, attempt: u32, kind: StateType) {
            self.state(run, attempt, State::new(kind));
        }
        /// Pending, Running, `ms` later Completed.
        fn completed(&mut self, run: &Run, ms: i64) {
            self.to(run, 0, StateType::Pending);
            self.to(run, 1, StateType::Running);
            self.wait(ms);
            self.to(run, 1, StateType::Completed);
        }
    }

    fn summarize(events: &[Event]) -> (String, Summary) {
        let buffer = Buffer::default();
        let mut summary = Summary::new(Box::new(buffer.clone()));
        for event in events {
            summary.on_event(event);
        }
        (buffer.text(), summary)
    }

    /// The cells of the table line whose first cell is `name`.
    fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.first() == Some(&name))
            .unwrap_or_else(|| panic!("no row {name:?} in\n{text}"))
    }

    #[test]
    fn flow_with_tasks_retries_and_a_subflow() {
        let mut s = Script::new();
        let flow = Run::flow("training", None);
        s.to(&flow, 0, StateType::Pending);
        s.to(&flow, 1, StateType::Running);

        let download = Run::task("download", &flow);
        s.completed(&download, 100);

        let featurize = Run::task("featurize", &flow);
        s.to(&featurize, 0, StateType::Pending);
        s.wait(2);
        s.state(
            &featurize,
            0,
            State::with_message(StateType::Cached, "cache hit"),
        );

        let train = Run::task("train", &flow);
        s.to(&train, 0, StateType::Pending);
        s.to(&train, 1, StateType::Running);
        s.wait(10);
        s.state(
            &train,
            1,
            State::with_message(StateType::AwaitingRetry, "retry 1 of 1"),
        );
        s.wait(5);
        s.to(&train, 2, StateType::Running);
        s.wait(15);
        s.state(
            &train,
            2,
            State::with_message(StateType::Failed, "CUDA out of memory"),
        );

        let sub = Run::flow("evaluate", Some(&flow));
        s.to(&sub, 0, StateType::Pending);
        s.to(&sub, 1, StateType::Running);
        let inner = Run::task("download", &sub);
        s.completed(&inner, 300);
        s.wait(10);
        s.to(&sub, 1, StateType::Completed);

        s.wait(50);
        s.state(
            &flow,
            1,
            State::with_message(StateType::Failed, "train failed"),
        );

        let (text, summary) = summarize(&s.events);
        assert!(text.contains("flow run \"training\""), "{text}");
        assert_eq!(
            row(&text, "run"),
            [
                "run",
                "runs",
                "completed",
                "cached",
                "failed",
                "total",
                "mean"
            ],
            "only the non-zero state columns, in order:\n{text}"
        );
        // Both downloads (top level and in the subflow) share one row: 100ms + 300ms.
        assert_eq!(
            row(&text, "download"),
            ["download", "2", "2", "-", "-", "400ms", "200ms"]
        );
        assert_eq!(
            row(&text, "featurize"),
            ["featurize", "1", "-", "1", "-", "2.0ms", "2.0ms"]
        );
        // Measured from the first Running to the final state, across the retry.
        assert_eq!(
            row(&text, "train"),
            ["train", "1", "-", "-", "1", "30.0ms", "30.0ms"]
        );
        assert_eq!(
            row(&text, "evaluate"),
            [
                "evaluate",
                "(subflow)",
                "1",
                "1",
                "-",
                "-",
                "310ms",
                "310ms"
            ]
        );
        assert!(
            text.contains(&format!(
                "train ({}) Failed after 2 attempts: CUDA out of memory",
                train.id
            )),
            "{text}"
        );
        assert!(
            text.contains("training: Failed in 492ms: train failed"),
            "{text}"
        );
        assert_eq!(summary.tracked(), (0, 0));
    }

    #[test]
    fn interleaved_top_level_flows_print_separately() {
        let mut s = Script::new();
        let a = Run::flow("alpha", None);
        let b = Run::flow("beta", None);
        s.to(&a, 0, StateType::Pending);
        s.to(&b, 0, StateType::Pending);
        s.to(&a, 1, StateType::Running);
        s.to(&b, 1, StateType::Running);
        let ta = Run::task("shared_name", &a);
        let tb = Run::task("shared_name", &b);
        let tb2 = Run::task("only_beta", &b);
        for t in [&ta, &tb, &tb2] {
            s.to(t, 0, StateType::Pending);
        }
        for t in [&ta, &tb, &tb2] {
            s.to(t, 1, StateType::Running);
        }
        s.wait(5);
        s.to(&tb, 1, StateType::Completed);
        s.state(
            &ta,
            1,
            State::with_message(StateType::Crashed, "panicked: boom"),
        );
        s.to(&b, 1, StateType::Cancelled); // beta ends with a run still live
        s.wait(5);
        s.to(&a, 1, StateType::Completed);

        let (text, summary) = summarize(&s.events);
        let beta_at = text.find("flow run \"beta\"").expect("beta printed");
        let alpha_at = text.find("flow run \"alpha\"").expect("alpha printed");
        assert!(
            beta_at < alpha_at,
            "printed in the order the flows ended:\n{text}"
        );
        let (beta, alpha) = text.split_at(alpha_at);
        assert_eq!(
            row(beta, "shared_name"),
            ["shared_name", "1", "1", "5.0ms", "5.0ms"]
        );
        assert!(beta.contains("1 run(s) had not finished"), "{beta}");
        assert!(beta.contains("beta: Cancelled in 5.0ms"), "{beta}");
        assert!(!beta.contains("boom"), "{beta}");
        assert_eq!(
            row(alpha, "shared_name"),
            ["shared_name", "1", "1", "5.0ms", "5.0ms"]
        );
        assert!(alpha.contains("Crashed: panicked: boom"), "{alpha}");
        assert!(!alpha.contains("only_beta"), "{alpha}");
        assert!(alpha.contains("alpha: Completed in 10.0ms"), "{alpha}");
        assert_eq!(summary.tracked(), (0, 0));
    }

    #[test]
    fn standalone_task_runs_are_not_summarized() {
        let mut s = Script::new();
        let task = Run {
            id: Uuid::now_v7(),
            parent: None,
            flow: None,
            kind: RunKind::Task,
            name: "alone",
        };
        s.completed(&task, 1);
        let (text, summary) = summarize(&s.events);
        assert_eq!(text, "");
        assert_eq!(summary.tracked(), (0, 0));
    }

    #[test]
    fn failures_are_bounded_and_drops_are_reported() {
        let buffer = Buffer::default();
        let mut summary = Summary::new(Box::new(buffer.clone()));
        let mut s = Script::new();
        let flow = Run::flow("many", None);
        s.to(&flow, 0, StateType::Pending);
        s.to(&flow, 1, StateType::Running);
        for _ in 0..25 {
            let t = Run::task("flaky", &flow);
            s.to(&t, 0, StateType::Pending);
            s.to(&t, 1, StateType::Running);
            s.state(
                &t,
                1,
                State::with_message(StateType::TimedOut, "timed out\nafter 1s"),
            );
        }
        for e in &s.events {
            summary.on_event(e);
        }
        summary.on_dropped(7);
        s.events.clear();
        s.to(&flow, 1, StateType::Completed);
        summary.on_event(&s.events[0]);
        let text = buffer.text();
        assert_eq!(
            text.matches("TimedOut: timed out / after 1s").count(),
            10,
            "{text}"
        );
        assert!(text.contains("and 15 more"), "{text}");
        assert!(text.contains("7 event(s) were dropped"), "{text}");
        assert!(text.contains("up to 7 run(s) may be missing"), "{text}");
    }

    #[test]
    fn memory_stays_bounded_over_many_runs() {
        let buffer = Buffer::default();
        let mut summary = Summary::new(Box::new(buffer.clone()));
        let mut s = Script::new();
        let flow = Run::flow("big", None);
        s.to(&flow, 0, StateType::Pending);
        s.to(&flow, 1, StateType::Running);
        for e in s.events.drain(..) {
            summary.on_event(&e);
        }
        for _ in 0..100_000 {
            let t = Run::task("tiny", &flow);
            s.completed(&t, 0);
            for e in s.events.drain(..) {
                summary.on_event(&e);
            }
        }
        // Only the flow run itself is live, and one row holds all 100 000 runs.
        assert_eq!(summary.tracked(), (1, 1));
        assert_eq!(summary.flows[&flow.id].rows.len(), 1);
        s.to(&flow, 1, StateType::Completed);
        summary.on_event(&s.events[0]);
        assert_eq!(summary.tracked(), (0, 0));
        assert_eq!(
            row(&buffer.text(), "tiny")[..3],
            ["tiny", "100000", "100000"]
        );
    }

    #[test]
    fn durations_read_well() {
        let cases = [
            (Duration::from_micros(850), "850µs"),
            (Duration::from_micros(12_340), "12.3ms"),
            (Duration::from_millis(640), "640ms"),
            (Duration::from_millis(1_920), "1.92s"),
            (Duration::from_millis(12_340), "12.3s"),
            (Duration::from_secs(185), "3m05s"),
            (Duration::from_secs(2 * 3600 + 14 * 60 + 9), "2h14m"),
        ];
        for (d, want) in cases {
            assert_eq!(HumanDuration(d).to_string(), want);
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1_000);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("a\n\n  b  \n"), "a / b");
    }
}
