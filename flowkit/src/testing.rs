//! Test your pipelines without a server: run a flow or task with a recording sink and assert
//! on its runs and states. Needs the `test-util` feature.
//!
//! ```
//! use flowkit::{task, StateType};
//!
//! #[task(retries = 2)]
//! async fn flaky(fail_first: bool) -> Result<u32, String> {
//!     Ok(7)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (out, rec) = flowkit::testing::record(flaky(false)).await;
//! assert_eq!(out, Ok(7));
//! let run = rec.run("flaky");
//! assert_eq!(run.state_types(), [StateType::Pending, StateType::Running, StateType::Completed]);
//! # }
//! ```

use crate::context::{self, Frame, Recorder};
use crate::event::{Event, EventBody, LogLevel, RunDetails, RunKind};
use crate::state::{State, StateType};
use std::future::Future;
use std::sync::Arc;
use uuid::Uuid;

/// Runs `fut`, recording every event of every run it starts (including runs it spawns with
/// `submit`, `map` or [`crate::spawn`]). The events are recorded synchronously, so the
/// recording is complete when `fut` returns.
pub async fn record<F: Future>(fut: F) -> (F::Output, Recording) {
    let recorder = Arc::new(Recorder::default());
    let frame = Arc::new(Frame {
        run: None,
        flow: None,
        recorder: Some(Arc::clone(&recorder)),
        held_tags: None,
    });
    let out = context::scope(frame, fut).await;
    let events = recorder
        .events
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    (out, Recording { events })
}

/// Every event recorded by [`record`].
#[derive(Clone, Debug, Default)]
pub struct Recording {
    events: Vec<Event>,
}

/// One run, assembled from its recorded events.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedRun {
    /// The run's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Flow or task.
    pub kind: RunKind,
    /// The calling run.
    pub parent_run_id: Option<Uuid>,
    /// The nearest enclosing flow run.
    pub flow_run_id: Option<Uuid>,
    /// Every state, in order, with the attempt each belongs to.
    pub states: Vec<(u32, State)>,
    /// Captured log lines.
    pub logs: Vec<(LogLevel, String)>,
    /// What the first event said about the run.
    pub details: Option<RunDetails>,
}

impl RecordedRun {
    /// The state types in order.
    pub fn state_types(&self) -> Vec<StateType> {
        self.states.iter().map(|(_, s)| s.kind).collect()
    }

    /// The last state.
    pub fn final_state(&self) -> Option<&State> {
        self.states.last().map(|(_, s)| s)
    }

    /// How many attempts started (`Running` states).
    pub fn attempts(&self) -> u32 {
        self.states
            .iter()
            .filter(|(_, s)| s.kind == StateType::Running)
            .count() as u32
    }
}

impl Recording {
    /// Every event, in the order it was emitted.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Every run, in the order of its first event.
    pub fn runs(&self) -> Vec<RecordedRun> {
        let mut runs: Vec<RecordedRun> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for event in &self.events {
            let i = *index.entry(event.run_id).or_insert_with(|| {
                runs.push(RecordedRun {
                    id: event.run_id,
                    name: event.name.to_string(),
                    kind: event.run_kind,
                    parent_run_id: event.parent_run_id,
                    flow_run_id: event.flow_run_id,
                    states: Vec::new(),
                    logs: Vec::new(),
                    details: None,
                });
                runs.len() - 1
            });
            let run = &mut runs[i];
            match &event.body {
                EventBody::State { state, details } => {
                    run.states.push((event.attempt, state.clone()));
                    if let Some(d) = details {
                        run.details = Some((**d).clone());
                    }
                }
                EventBody::Log { level, message, .. } => run.logs.push((*level, message.clone())),
                // Kinds this version does not record.
                _ => {}
            }
        }
        runs
    }

    /// Every run named `name`.
    pub fn runs_named(&self, name: &str) -> Vec<RecordedRun> {
        self.runs().into_iter().filter(|r| r.name == name).collect()
    }

    /// The one run named `name`.
    ///
    /// # Panics
    /// If there is not exactly one such run (this is a test helper: the panic is the failed
    /// assertion, and lists the runs that were recorded).
    pub fn run(&self, name: &str) -> RecordedRun {
        let mut found = self.runs_named(name);
        if found.len() != 1 {
            let names: Vec<String> = self.runs().into_iter().map(|r| r.name).collect();
            panic!(
                "expected exactly one run named {name:?}, found {}; recorded runs: {names:?}",
                found.len()
            );
        }
        found.remove(0)
    }
}

/// Points this test process at a fresh, empty `FLOWKIT_HOME` under the system's temporary
/// directory and turns the summary table off — once per process, before its first run — so
/// cached results of earlier test runs cannot leak into this one.
///
/// Call it first in every test of a test binary (the configuration is fixed by the first run
/// of the process). Returns the home directory in force.
///
/// The directory outlives the process (nothing runs at a test binary's exit); on Linux, each
/// call removes the homes left by earlier test processes that are no longer running, so
/// `/tmp` does not fill up run after run.
///
/// ```
/// let home = flowkit::testing::isolated_home();
/// assert!(home.is_dir());
/// ```
pub fn isolated_home() -> std::path::PathBuf {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        remove_homes_of_exited_processes();
        let dir = std::env::temp_dir().join(format!("{HOME_PREFIX}{}-{nanos}", std::process::id()));
        if let Err(err) = std::fs::create_dir_all(&dir) {
            panic!(
                "cannot create the test FLOWKIT_HOME {}: {err}",
                dir.display()
            );
        }
        let mut config = crate::config::Config::from_env();
        config.home = dir;
        config.summary = false;
        // Another run of this process may have started first: then its configuration stays
        // in force (and is what this returns).
        let _ = crate::config::init(config);
        crate::config::get().home.clone()
    })
    .clone()
}

/// The name of every test home starts with this, then the process id and `-`.
const HOME_PREFIX: &str = "flowkit-test-home-";

/// Removes the test homes whose process has exited: on Linux, a process is running while
/// `/proc/<pid>` exists (a reused pid only keeps an old home a little longer). Elsewhere,
/// nothing is removed. Best effort: a home that cannot be removed stays.
fn remove_homes_of_exited_processes() {
    let proc_dir = std::path::Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(HOME_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc_dir.join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// For flowkit's own tests: not a stable API.
///
/// Holds every disk read and write of the result cache until the test lets it through, to
/// check that a slow disk stalls no other task. One per process at a time: put the test in a
/// test binary of its own.
///
/// A held operation waits on the thread doing the I/O; after 10 s it goes on regardless and
/// counts in [`CacheDiskGate::gave_up`] — what happens when the I/O blocks the very thread that
/// would release it. Dropping the gate lets everything through.
#[doc(hidden)]
pub fn hold_cache_disk() -> CacheDiskGate {
    crate::policy::cache::gate::hold();
    CacheDiskGate { _private: () }
}

/// The gate returned by [`hold_cache_disk`].
#[doc(hidden)]
#[derive(Debug)]
pub struct CacheDiskGate {
    _private: (),
}

impl CacheDiskGate {
    /// How many cache reads and writes have reached the gate since it was made.
    pub fn arrived(&self) -> usize {
        crate::policy::cache::gate::arrived()
    }

    /// Lets the next held operation through (in arrival order).
    pub fn release_one(&self) {
        crate::policy::cache::gate::release_one();
    }

    /// How many operations stopped waiting for their release.
    pub fn gave_up(&self) -> usize {
        crate::policy::cache::gate::gave_up()
    }
}

impl Drop for CacheDiskGate {
    fn drop(&mut self) {
        crate::policy::cache::gate::open();
    }
}

/// For flowkit's own tests: not a stable API.
///
/// How many times emitting an event had to wake flowkit's sink thread from its idle sleep.
///
/// The sink thread sleeps (without waking up at all) once nothing has happened for a few
/// milliseconds, and emitters wake it; while events keep coming it stays awake and emitting
/// makes no system call. A loop of runs therefore adds about one wake-up, not one per event.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let before = flowkit::testing::sink_thread_wakeups();
/// // ... run flows ...
/// assert!(flowkit::testing::sink_thread_wakeups() >= before);
/// # }
/// ```
#[doc(hidden)]
pub fn sink_thread_wakeups() -> u64 {
    crate::bus::wakeups()
}

/// The environment variable that scales the sizes of size-sensitive tests: [`scaled`].
pub const SCALE_VAR: &str = "FLOWKIT_TEST_SCALE";

/// The factor in `FLOWKIT_TEST_SCALE` (default 1): `0.1` for a quick run on a slow machine,
/// `10` or `100` to run the same tests at sizes a debug build in CI cannot afford.
///
/// # Panics
///
/// When the variable is set to something other than a positive number, with a message naming
/// the variable and the value: a test run at a size nobody asked for would prove nothing.
pub fn scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var(SCALE_VAR) {
        Err(_) => 1.0,
        Ok(value) => match parse_scale(&value) {
            Ok(scale) => scale,
            Err(why) => panic!("{SCALE_VAR}={value:?}: {why}"),
        },
    })
}

/// `n` times [`scale`], rounded, and at least 1: the size of a test loop, a batch or a fan-out
/// that should grow or shrink with `FLOWKIT_TEST_SCALE`.
///
/// ```
/// // With FLOWKIT_TEST_SCALE unset:
/// # if std::env::var_os(flowkit::testing::SCALE_VAR).is_none() {
/// assert_eq!(flowkit::testing::scaled(1000), 1000);
/// # }
/// ```
pub fn scaled(n: usize) -> usize {
    scale_by(n, scale())
}

fn parse_scale(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        Ok(_) => Err("the scale must be a positive number, e.g. 0.5 or 10".into()),
        Err(_) => Err("not a number; write a positive factor such as 0.5 or 10".into()),
    }
}

fn scale_by(n: usize, scale: f64) -> usize {
    // `as` saturates at usize::MAX for huge products.
    ((n as f64 * scale).round() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::{HOME_PREFIX, parse_scale, remove_homes_of_exited_processes, scale_by};

    #[test]
    fn scale_is_a_positive_factor() {
        assert_eq!(parse_scale("10"), Ok(10.0));
        assert_eq!(parse_scale(" 0.5 "), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "ten", ""] {
            let err = parse_scale(bad).expect_err(bad);
            assert!(err.contains("positive"), "{bad}: {err}");
        }
    }

    #[test]
    fn scaled_sizes_round_and_never_reach_zero() {
        assert_eq!(scale_by(1000, 1.0), 1000);
        assert_eq!(scale_by(1000, 0.25), 250);
        assert_eq!(scale_by(3, 0.1), 1);
        assert_eq!(scale_by(7, 1.5), 11);
        assert_eq!(scale_by(usize::MAX, 10.0), usize::MAX);
    }

    #[test]
    fn homes_of_exited_processes_are_removed_and_running_ones_kept() {
        if !std::path::Path::new("/proc/self").exists() {
            eprintln!("skipped: no /proc here, so no home is ever removed");
            return;
        }
        // Above the largest pid Linux hands out (2^22): no such process.
        let exited = std::env::temp_dir().join(format!("{HOME_PREFIX}999999999-1"));
        let running = std::env::temp_dir().join(format!("{HOME_PREFIX}{}-1", std::process::id()));
        for dir in [&exited, &running] {
            std::fs::create_dir_all(dir.join("spool")).expect("make a home");
        }
        remove_homes_of_exited_processes();
        assert!(!exited.exists(), "the exited process's home is left");
        assert!(running.is_dir(), "a running process's home was removed");
        std::fs::remove_dir_all(&running).expect("clean up");
    }
}
