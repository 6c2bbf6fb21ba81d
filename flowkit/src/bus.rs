//! The process's event queue and the thread that feeds the sinks.
//!
//! Emitting is a `try_send` into a bounded queue: when the queue is full the event is dropped
//! and counted, so a slow sink never blocks a run. The sink thread drains the queue in
//! batches (it is woken only for flushes, so emitting never makes a system call), and tells
//! the sinks how many events were dropped.

use crate::event::Event;
use crate::sink::Sink;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::{self, Thread};
use std::time::Duration;

/// Capacity of the event queue.
pub const QUEUE_CAPACITY: usize = 1 << 16;

/// How often the sink thread looks for new events when nobody asks it to flush.
const DRAIN_INTERVAL: Duration = Duration::from_millis(2);

enum Message {
    Event(Event),
    Flush(tokio::sync::oneshot::Sender<()>),
    AddSink(Box<dyn Sink>),
}

struct Bus {
    tx: SyncSender<Message>,
    thread: Thread,
    dropped: AtomicU64,
}

static BUS: OnceLock<Bus> = OnceLock::new();

fn bus() -> &'static Bus {
    BUS.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let sinks = crate::config::get().default_sinks();
        let handle = thread::Builder::new()
            .name("flowkit-sinks".into())
            .spawn(move || sink_loop(rx, sinks))
            .expect("the OS refused to start the flowkit sink thread");
        Bus {
            tx,
            thread: handle.thread().clone(),
            dropped: AtomicU64::new(0),
        }
    })
}

/// Hands `event` to the sinks, without ever waiting.
pub(crate) fn emit(event: Event) {
    let bus = bus();
    match bus.tx.try_send(Message::Event(event)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            bus.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Adds a sink to the process. It receives the events emitted from now on.
pub fn add_sink(sink: impl Sink) {
    let bus = bus();
    // Blocking here is fine: adding a sink is configuration, not a run.
    if bus.tx.send(Message::AddSink(Box::new(sink))).is_ok() {
        bus.thread.unpark();
    }
}

/// Waits until every event emitted before this call has been handed to every sink and the
/// sinks have flushed, or until `timeout` passes. Returns whether the flush completed.
pub async fn flush(timeout: Duration) -> bool {
    let bus = bus();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut msg = Message::Flush(done_tx);
    let deadline = tokio::time::Instant::now() + timeout;
    // The queue may be full: keep offering the flush marker until the deadline.
    loop {
        match bus.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                msg = back;
                bus.thread.unpark();
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
    bus.thread.unpark();
    matches!(tokio::time::timeout_at(deadline, done_rx).await, Ok(Ok(())))
}

/// Events dropped so far because the queue was full.
pub fn dropped_events() -> u64 {
    BUS.get().map_or(0, |b| b.dropped.load(Ordering::Relaxed))
}

fn sink_loop(rx: Receiver<Message>, mut sinks: Vec<Box<dyn Sink>>) {
    let mut reported_drops = 0u64;
    loop {
        let mut got_any = false;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    got_any = true;
                    match msg {
                        Message::Event(event) => {
                            // Drops counted before this event was queued may concern its run:
                            // tell the sinks first (one atomic load per event).
                            report_drops(&mut sinks, &mut reported_drops);
                            each_sink(&mut sinks, |sink| sink.on_event(&event));
                        }
                        Message::Flush(done) => {
                            report_drops(&mut sinks, &mut reported_drops);
                            each_sink(&mut sinks, |sink| sink.flush());
                            let _ = done.send(());
                        }
                        Message::AddSink(sink) => sinks.push(sink),
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        report_drops(&mut sinks, &mut reported_drops);
        if !got_any {
            thread::park_timeout(DRAIN_INTERVAL);
        }
    }
}

fn report_drops(sinks: &mut Vec<Box<dyn Sink>>, reported: &mut u64) {
    let total = dropped_events();
    if total > *reported {
        let count = total - *reported;
        each_sink(sinks, |sink| sink.on_dropped(count));
        *reported = total;
    }
}

/// Calls `f` on every sink; a sink that panics is removed (and said so on stderr) so the
/// others keep receiving events.
fn each_sink(sinks: &mut Vec<Box<dyn Sink>>, mut f: impl FnMut(&mut dyn Sink)) {
    sinks.retain_mut(|sink| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(sink.as_mut())));
        match outcome {
            Ok(()) => true,
            Err(panic) => {
                eprintln!(
                    "flowkit: a sink panicked and was removed; the other sinks go on: {}",
                    crate::run::panic_message(&*panic)
                );
                false
            }
        }
    });
}
