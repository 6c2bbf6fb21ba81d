//! The sink thread: awake while events come (emitters then make no system call to wake it),
//! asleep without any wake-up once the process is idle, and woken again by the next run.
//!
//! One test, in stages: the sink thread is process-wide, and the idle stage needs a process
//! where nothing else happens.

use flowkit::Event;
use flowkit::sink::Sink;
use flowkit::{flow, task};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

#[flow]
async fn request(x: u64) -> u64 {
    double(x).await + double(x + 1).await
}

/// Events per call of `request`: three states for the flow and for each task.
const EVENTS_PER_CALL: usize = 9;

struct Counts(Arc<AtomicUsize>);

impl Sink for Counts {
    fn on_event(&mut self, _: &Event) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Context switches of the thread named `name` so far (voluntary: each wake-up from a sleep).
#[cfg(target_os = "linux")]
fn context_switches(name: &str) -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).expect("status");
        return status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
    }
    panic!("no thread named {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_thread_sleeps_when_idle_and_stays_awake_while_busy() {
    flowkit::testing::isolated_home();

    // Busy: a service running a flow per request. The sink thread is woken once, then stays
    // awake while events keep coming: emitting does not wake it (a system call) per event.
    assert_eq!(request(1).await, 6);
    let before = flowkit::testing::sink_thread_wakeups();
    for i in 0..200 {
        assert_eq!(request(i).await, 4 * i + 2);
    }
    let wakeups = flowkit::testing::sink_thread_wakeups() - before;
    assert!(
        wakeups <= 5,
        "{wakeups} wake-ups for {} events",
        200 * EVENTS_PER_CALL
    );

    // Idle: once the last events are handled, the sink thread does not wake up at all.
    assert!(flowkit::flush().await);
    tokio::time::sleep(Duration::from_millis(150)).await;
    #[cfg(target_os = "linux")]
    {
        let before = context_switches("flowkit-sinks");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let woke = context_switches("flowkit-sinks") - before;
        assert_eq!(
            woke, 0,
            "the idle sink thread woke up {woke} times in 500 ms"
        );
    }

    // Woken again: a local sink (one the end of a flow waits for) has every event of a flow
    // by the time the flow's call returns.
    let seen = Arc::new(AtomicUsize::new(0));
    flowkit::sink::add_sink(Counts(Arc::clone(&seen)));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(request(5).await, 22);
    assert_eq!(seen.load(Ordering::SeqCst), EVENTS_PER_CALL);
}
