//! The process's event queue and the thread that feeds the sinks.
//!
//! Emitting is a `try_send` into a bounded queue: when the queue is full the event is dropped
//! and counted, so a slow sink never blocks a run. The sink thread drains the queue in
//! batches and tells the sinks how many events were dropped.
//!
//! # Waking the sink thread
//!
//! While events keep coming the sink thread polls the queue every 2 ms, and an
//! emitter only reads one flag: no system call on the hot path. After 20 ms without any
//! message the thread raises that flag and parks without a timeout, so an idle process has a
//! sink thread that never wakes up; the next emitter sees the flag and unparks it (one system
//! call, once per idle period). Flush requests always unpark it, so they are answered at once.
//!
//! # Two kinds of flush
//!
//! - the end of a top-level flow waits for [`Sink::flush`] of the sinks that ask for it
//!   ([`Sink::waits_at_flow_end`]: the terminal summary, the event log), and only when there
//!   is such a sink: with none (say only the reporter) the flow returns without a round trip;
//! - [`flush`] (and [`crate::flush`], the guard of [`crate::init`], the exit flush) also asks
//!   every sink to [`Sink::deliver`] what it holds, and waits for every answer. The sink thread
//!   does not wait for deliveries itself: events keep flowing while the reporter talks to the
//!   server.

use crate::event::Event;
use crate::sink::{Delivery, Sink};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Capacity of the event queue: past it, events are dropped and counted
/// ([`dropped_events`]), never waited for.
pub const QUEUE_CAPACITY: usize = 1 << 16;

/// How often the sink thread looks for new events while events keep coming.
const DRAIN_INTERVAL: Duration = Duration::from_millis(2);

/// How long the sink thread keeps polling after its last message before it sleeps until the
/// next one. Long enough that a busy process never pays a wake-up per event, short enough that
/// an idle one stops waking within a blink.
const LINGER: Duration = Duration::from_millis(20);

enum Message {
    Event(Event),
    /// End of a top-level flow: flush the sinks that ask for it, then answer.
    FlushLocal(tokio::sync::oneshot::Sender<()>),
    /// Flush every sink and ask each to deliver what it holds.
    Deliver(Arc<Waiter>),
    AddSink(Entry),
}

struct Bus {
    tx: SyncSender<Message>,
    thread: Thread,
    /// Set by the sink thread just before it parks without a timeout.
    sleeping: AtomicBool,
    /// Times an emitter had to wake the sleeping sink thread.
    wakeups: AtomicU64,
    dropped: AtomicU64,
    /// Sinks whose flush the end of a top-level flow waits for.
    local_sinks: AtomicUsize,
    /// Every sink, added or default.
    sinks: AtomicUsize,
}

static BUS: OnceLock<Bus> = OnceLock::new();

/// A sink and what it said about itself when it was added.
struct Entry {
    sink: Box<dyn Sink>,
    local: bool,
}

impl Entry {
    fn new(sink: Box<dyn Sink>) -> Entry {
        let local = sink.waits_at_flow_end();
        Entry { sink, local }
    }
}

fn bus() -> &'static Bus {
    BUS.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let sinks: Vec<Entry> = crate::config::get()
            .default_sinks()
            .into_iter()
            .map(Entry::new)
            .collect();
        let local = sinks.iter().filter(|s| s.local).count();
        let count = sinks.len();
        let handle = thread::Builder::new()
            .name("flowkit-sinks".into())
            .spawn(move || sink_loop(rx, sinks))
            .expect("the OS refused to start the flowkit sink thread");
        Bus {
            tx,
            thread: handle.thread().clone(),
            sleeping: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            local_sinks: AtomicUsize::new(local),
            sinks: AtomicUsize::new(count),
        }
    })
}

/// Starts the sink thread (and the reporter, when configured) if it is not running yet.
pub(crate) fn start() {
    bus();
}

impl Bus {
    /// Wakes the sink thread if it sleeps: after a message was queued, so that it cannot go to
    /// sleep without seeing that message.
    fn wake_if_sleeping(&self) {
        // Pairs with the fence in `sink_loop`: either this load sees `sleeping`, or the sink
        // thread's last look at the queue sees the message queued before it.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            self.thread.unpark();
        }
    }

    /// Wakes the sink thread whether it sleeps or polls: someone waits for an answer.
    fn wake_now(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        self.thread.unpark();
    }

    /// Queues a message someone waits for, retrying while the queue is full, until `deadline`.
    fn send_waited(&self, mut msg: Message, deadline: Instant) -> bool {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => {
                    self.wake_now();
                    return true;
                }
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    self.wake_now();
                    if Instant::now() >= deadline {
                        return false;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }
}

/// Hands `event` to the sinks, without ever waiting.
pub(crate) fn emit(event: Event) {
    let bus = bus();
    match bus.tx.try_send(Message::Event(event)) {
        Ok(()) => bus.wake_if_sleeping(),
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            bus.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Adds a sink to the process. It receives the events emitted from now on.
///
/// ```
/// use flowkit::Event;
/// use flowkit::sink::{Sink, add_sink};
///
/// struct Count(usize);
/// impl Sink for Count {
///     fn on_event(&mut self, _event: &Event) {
///         self.0 += 1;
///     }
/// }
///
/// add_sink(Count(0));
/// ```
pub fn add_sink(sink: impl Sink) {
    let bus = bus();
    let entry = Entry::new(Box::new(sink));
    // Counted before the sink is queued: a flow ending after this call waits for it, and its
    // flush request is queued behind the sink.
    if entry.local {
        bus.local_sinks.fetch_add(1, Ordering::SeqCst);
    }
    bus.sinks.fetch_add(1, Ordering::SeqCst);
    // Blocking here is fine: adding a sink is configuration, not a run.
    if bus.tx.send(Message::AddSink(entry)).is_ok() {
        bus.wake_now();
    }
}

/// Flushes the sinks the end of a top-level flow waits for (see [`Sink::waits_at_flow_end`]),
/// if there is any: returns at once otherwise. Returns whether they flushed within `timeout`.
pub(crate) async fn flush_local(timeout: Duration) -> bool {
    let bus = bus();
    if bus.local_sinks.load(Ordering::Relaxed) == 0 {
        return true;
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut msg = Message::FlushLocal(done_tx);
    // The queue may be full: keep offering the request until the deadline, without blocking
    // the runtime's thread.
    loop {
        match bus.tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                msg = back;
                bus.wake_now();
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
    bus.wake_now();
    matches!(tokio::time::timeout_at(deadline, done_rx).await, Ok(Ok(())))
}

/// What a blocking flush found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flushed {
    /// Every sink answered (delivered, or kept what it could not deliver, e.g. in the spool).
    pub answered: bool,
    /// Every sink delivered everything.
    pub delivered: bool,
}

/// [`crate::flush`] on the calling thread, until `deadline`. Uses only locks and condition
/// variables, so it may run at thread exit (from a thread-local destructor).
pub(crate) fn flush_blocking(deadline: Instant) -> Flushed {
    let Some(bus) = BUS.get() else {
        // Nothing was ever emitted.
        return Flushed {
            answered: true,
            delivered: true,
        };
    };
    if bus.sinks.load(Ordering::SeqCst) == 0 {
        return Flushed {
            answered: true,
            delivered: true,
        };
    }
    let waiter = Arc::new(Waiter::new(deadline));
    if !bus.send_waited(Message::Deliver(Arc::clone(&waiter)), deadline) {
        return Flushed::default();
    }
    waiter.wait()
}

/// Events dropped so far because the queue of [`QUEUE_CAPACITY`] events was full.
pub fn dropped_events() -> u64 {
    BUS.get().map_or(0, |b| b.dropped.load(Ordering::Relaxed))
}

/// Times emitting had to wake the sink thread from its sleep (for tests).
#[cfg(feature = "test-util")]
pub(crate) fn wakeups() -> u64 {
    BUS.get().map_or(0, |b| b.wakeups.load(Ordering::Relaxed))
}

/// One [`flush`]: how many sinks have still to answer, and whether all delivered.
pub(crate) struct Waiter {
    deadline: Instant,
    state: Mutex<WaitState>,
    answered: Condvar,
}

struct WaitState {
    /// Sinks (plus one for the sink thread itself, until it has asked them all) yet to answer.
    pending: usize,
    delivered: bool,
}

impl Waiter {
    fn new(deadline: Instant) -> Waiter {
        Waiter {
            deadline,
            state: Mutex::new(WaitState {
                pending: 1,
                delivered: true,
            }),
            answered: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more sink to wait for.
    fn expect_one(self: &Arc<Self>) -> Delivery {
        self.lock().pending += 1;
        Delivery::new(Arc::clone(self), self.deadline)
    }

    /// A sink (or the sink thread) answered.
    pub(crate) fn answer(&self, delivered: bool) {
        let mut state = self.lock();
        state.pending = state.pending.saturating_sub(1);
        state.delivered &= delivered;
        if state.pending == 0 {
            self.answered.notify_all();
        }
    }

    fn wait(&self) -> Flushed {
        let mut state = self.lock();
        while state.pending > 0 {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Flushed::default();
            }
            state = self
                .answered
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Flushed {
            answered: true,
            delivered: state.delivered,
        }
    }
}

fn sink_loop(rx: Receiver<Message>, mut sinks: Vec<Entry>) {
    let mut reported_drops = 0u64;
    let mut last_message = Instant::now();
    loop {
        let mut got_any = false;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    got_any = true;
                    handle(msg, &mut sinks, &mut reported_drops);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        report_drops(&mut sinks, &mut reported_drops);
        if got_any {
            last_message = Instant::now();
            continue;
        }
        if last_message.elapsed() < LINGER {
            thread::park_timeout(DRAIN_INTERVAL);
            continue;
        }
        // Idle: sleep until an emitter or a flush wakes us. Raise the flag first, then look at
        // the queue once more, so a message queued in between is never left waiting.
        let Some(bus) = BUS.get() else {
            // Only while `bus()` is still being initialised.
            thread::park_timeout(DRAIN_INTERVAL);
            continue;
        };
        bus.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        match rx.try_recv() {
            Ok(msg) => {
                bus.sleeping.store(false, Ordering::SeqCst);
                handle(msg, &mut sinks, &mut reported_drops);
                last_message = Instant::now();
                continue;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return,
        }
        // `park` may return spuriously: sleep on while nobody cleared the flag.
        while bus.sleeping.load(Ordering::Acquire) {
            thread::park();
        }
        last_message = Instant::now();
    }
}

fn handle(msg: Message, sinks: &mut Vec<Entry>, reported_drops: &mut u64) {
    match msg {
        Message::Event(event) => {
            // Drops counted before this event was queued may concern its run: tell the sinks
            // first (one atomic load per event).
            report_drops(sinks, reported_drops);
            each_sink(sinks, |entry| entry.sink.on_event(&event));
        }
        Message::FlushLocal(done) => {
            report_drops(sinks, reported_drops);
            each_sink(sinks, |entry| {
                if entry.local {
                    entry.sink.flush();
                }
            });
            let _ = done.send(());
        }
        Message::Deliver(waiter) => {
            report_drops(sinks, reported_drops);
            each_sink(sinks, |entry| {
                entry.sink.flush();
                entry.sink.deliver(waiter.expect_one());
            });
            waiter.answer(true);
        }
        Message::AddSink(sink) => sinks.push(sink),
    }
}

fn report_drops(sinks: &mut Vec<Entry>, reported: &mut u64) {
    let total = dropped_events();
    if total > *reported {
        let count = total - *reported;
        each_sink(sinks, |entry| entry.sink.on_dropped(count));
        *reported = total;
    }
}

/// Calls `f` on every sink; a sink that panics is removed (and said so on stderr) so the
/// others keep receiving events.
fn each_sink(sinks: &mut Vec<Entry>, mut f: impl FnMut(&mut Entry)) {
    sinks.retain_mut(|entry| {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(entry)));
        match outcome {
            Ok(()) => true,
            Err(panic) => {
                eprintln!(
                    "flowkit: a sink panicked and was removed; the other sinks go on: {}",
                    crate::run::panic_message(&*panic)
                );
                if let Some(bus) = BUS.get() {
                    bus.sinks.fetch_sub(1, Ordering::SeqCst);
                    if entry.local {
                        bus.local_sinks.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                false
            }
        }
    });
}
