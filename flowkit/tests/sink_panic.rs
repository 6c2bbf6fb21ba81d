//! A sink that panics is removed; the other sinks keep receiving every event.

use flowkit::Event;
use flowkit::sink::Sink;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Explodes;
impl Sink for Explodes {
    fn on_event(&mut self, _: &Event) {
        panic!("a broken sink");
    }
}

struct Counts(Arc<AtomicUsize>);
impl Sink for Counts {
    fn on_event(&mut self, _: &Event) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[flowkit::task]
async fn step(i: u32) -> u32 {
    i
}

#[flowkit::flow]
async fn few_steps() -> u32 {
    step(1).await + step(2).await
}

#[tokio::test]
async fn a_panicking_sink_is_removed_and_the_others_go_on() {
    let seen = Arc::new(AtomicUsize::new(0));
    flowkit::sink::add_sink(Explodes);
    flowkit::sink::add_sink(Counts(seen.clone()));
    assert_eq!(few_steps().await, 3);
    assert!(flowkit::flush().await);
    // Flow: 3 states, two steps: 3 states each.
    assert_eq!(seen.load(Ordering::SeqCst), 9);
    assert_eq!(few_steps().await, 3);
    assert!(flowkit::flush().await, "the sink thread is alive");
    assert_eq!(seen.load(Ordering::SeqCst), 18);
}
