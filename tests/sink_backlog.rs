//! The bus between the runtime and the sinks: a sink that stops taking events for a while
//! (its thread got no CPU, or it blocked) loses nothing while the bus holds fewer than
//! `QUEUE_CAPACITY` events, and the events reach it in the order they were emitted.
//!
//! Its own process: the sink thread is process-wide, and it is held up here on purpose.

use flowkit::sink::{QUEUE_CAPACITY, Sink, dropped_events};
use flowkit::{Event, EventBody, StateType, flow, task};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[task]
async fn square(x: u64) -> u64 {
    x * x
}

#[flow]
async fn squares(n: u64) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        sum += square(i).await;
    }
    sum
}

/// Blocks on its first event until the gate opens, then keeps every run's state types.
struct Stalled {
    gate: Arc<AtomicBool>,
    states: Arc<Mutex<HashMap<String, Vec<StateType>>>>,
}

impl Sink for Stalled {
    fn on_event(&mut self, event: &Event) {
        while !self.gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let EventBody::State { state, .. } = &event.body {
            self.states
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(event.run_id.to_string())
                .or_default()
                .push(state.kind);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_loses_nothing_below_the_bound_and_sees_every_event_in_order() {
    flowkit::testing::isolated_home();
    let gate = Arc::new(AtomicBool::new(false));
    let states = Arc::new(Mutex::new(HashMap::new()));
    flowkit::sink::add_sink(Stalled {
        gate: gate.clone(),
        states: states.clone(),
    });

    // More events than the bus held before it grew (65 536), all emitted while the sink
    // thread is stuck in the sink: three per task, three for the flow.
    let tasks = flowkit::testing::scaled(30_000) as u64;
    let events = 3 * (tasks as usize + 1);
    assert!(events < QUEUE_CAPACITY);
    let expected: u64 = (0..tasks).map(|i| i * i).sum();
    assert_eq!(squares(tasks).await, expected);
    gate.store(true, Ordering::SeqCst);
    assert!(flowkit::flush().await, "the flush did not complete");

    assert_eq!(
        dropped_events(),
        0,
        "the bus dropped events below its bound"
    );
    let states = states.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(states.len(), tasks as usize + 1, "runs seen by the sink");
    let in_order = [StateType::Pending, StateType::Running, StateType::Completed];
    for (run, kinds) in states.iter() {
        assert_eq!(kinds.as_slice(), in_order, "states of run {run}");
    }
}
