//! The process's event queue and the thread that feeds the sinks.
//!
//! Emitting appends to a bounded queue under a lock held for a push ([`queue`]): when the
//! queue already holds [`QUEUE_CAPACITY`] events the event is dropped and counted, so a slow
//! sink never blocks a run. The sink thread takes everything waiting at once, hands it to the
//! sinks in order and tells them how many events were dropped.
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

mod queue;

use crate::event::Event;
use crate::sink::{Delivery, Sink};
use queue::Queue;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Capacity of the event queue between the runtime and the sink thread: past it, events are
/// dropped and counted ([`dropped_events`]), never waited for.
///
/// The sink thread takes events at several million a second, so the queue fills only while
/// that thread gets no CPU at all (every core busy with tasks); this many events (about
/// 200 MB at most, taken only as the queue grows) cover seconds of the busiest workloads.
pub const QUEUE_CAPACITY: usize = 1 << 20;

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
    queue: Queue<Message>,
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
        let sinks: Vec<Entry> = crate::config::get()
            .default_sinks()
            .into_iter()
            .map(Entry::new)
            .collect();
        let local = sinks.iter().filter(|s| s.local).count();
        let count = sinks.len();
        let handle = thread::Builder::new()
            .name("flowkit-sinks".into())
            .spawn(move || sink_loop(sinks))
            .expect("the OS refused to start the flowkit sink thread");
        Bus {
            queue: Queue::new(QUEUE_CAPACITY),
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

    /// Queues a message someone waits for (never refused: control messages are few, each
    /// with its waiter) and wakes the sink thread.
    fn send_control(&self, msg: Message) {
        // An unbounded push never fails.
        let _ = self.queue.push(msg, false);
        self.wake_now();
    }
}

/// Hands `event` to the sinks, without ever waiting.
pub(crate) fn emit(event: Event) {
    let bus = bus();
    match bus.queue.push(Message::Event(event), true) {
        Ok(()) => bus.wake_if_sleeping(),
        Err(_) => {
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
    bus.send_control(Message::AddSink(entry));
}

/// Flushes the sinks the end of a top-level flow waits for (see [`Sink::waits_at_flow_end`]),
/// if there is any: returns at once otherwise. Returns whether they flushed within `timeout`.
pub(crate) async fn flush_local(timeout: Duration) -> bool {
    let bus = bus();
    if bus.local_sinks.load(Ordering::Relaxed) == 0 {
        return true;
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    bus.send_control(Message::FlushLocal(done_tx));
    matches!(tokio::time::timeout(timeout, done_rx).await, Ok(Ok(())))
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
    bus.send_control(Message::Deliver(Arc::clone(&waiter)));
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

    /// Waits for every answer until the deadline, and past it for as long as the sink thread
    /// or the reporter still make progress (events handed on, serialized or spooled), at most
    /// [`FLUSH_GRACE`] more ([`wait_while_progressing`]): a flush at exit that finds a large
    /// backlog lets it reach the spool rather than losing it.
    fn wait(&self) -> Flushed {
        let delivered = wait_while_progressing(self.deadline, |timeout| {
            let state = self.lock();
            let (state, _) = self
                .answered
                .wait_timeout_while(state, timeout, |state| state.pending > 0)
                .unwrap_or_else(PoisonError::into_inner);
            (state.pending == 0).then_some(state.delivered)
        });
        match delivered {
            Some(delivered) => Flushed {
                answered: true,
                delivered,
            },
            None => {
                say_unflushed();
                Flushed::default()
            }
        }
    }
}

/// Waits for what `answer` gives (each call waits at most the time it is passed, and answers
/// `None` if nothing came by then) until `deadline`, and past it while events still move
/// towards the sinks' destinations ([`progressed`] was called within the last
/// [`PROGRESS_WINDOW`]), at most [`FLUSH_GRACE`] past `deadline`. `None` once it gives up.
///
/// Every wait for a flush's answer goes through here (the bus's flush, and the reporter's
/// own [`crate::sink::report::ReportSink::flush_report`] and drop), so none of them cuts off
/// a spool that is still being written.
pub(crate) fn wait_while_progressing<T>(
    deadline: Instant,
    mut answer: impl FnMut(Duration) -> Option<T>,
) -> Option<T> {
    let hard_deadline = deadline + FLUSH_GRACE;
    let mut until = deadline;
    let mut seen = PROGRESS.load(Ordering::Relaxed);
    let mut extended = false;
    loop {
        let now = Instant::now();
        if now >= until {
            let progress = PROGRESS.load(Ordering::Relaxed);
            if progress == seen || now >= hard_deadline {
                return None;
            }
            seen = progress;
            until = (now + PROGRESS_WINDOW).min(hard_deadline);
            if !extended {
                extended = true;
                eprintln!(
                    "flowkit: the flush is past its timeout but events are still being spooled; waiting while that goes on (at most {} s more)",
                    FLUSH_GRACE.as_secs()
                );
            }
            continue;
        }
        if let Some(value) = answer(until - now) {
            return Some(value);
        }
    }
}

/// How long a flush may wait past its deadline while events are still being spooled.
const FLUSH_GRACE: Duration = Duration::from_secs(60);

/// Past its deadline, a flush waits on while progress was made within this long.
const PROGRESS_WINDOW: Duration = Duration::from_secs(1);

/// Bumped whenever the sink thread hands events on or the reporter serializes or spools them.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Says that events moved towards a sink's destination (a flush past its deadline waits on
/// while this is called).
pub(crate) fn progressed() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// A flush gave up: says on stderr how many events, as far as is known, were then neither
/// delivered nor spooled (those still in the bus's queue or waiting for the reporter).
fn say_unflushed() {
    let queued = BUS.get().map_or(0, |bus| bus.queue.len());
    let reporter = crate::sink::report::process_backlog();
    if queued + reporter > 0 {
        eprintln!(
            "flowkit: the flush timed out with {} events neither delivered nor spooled ({queued} still queued for the sinks, {reporter} waiting for the reporter); they are lost if the process exits now",
            queued + reporter
        );
    }
}

fn sink_loop(mut sinks: Vec<Entry>) {
    // `bus()` starts this thread while it initialises the bus: wait until it is set.
    let bus = loop {
        match BUS.get() {
            Some(bus) => break bus,
            None => thread::park_timeout(DRAIN_INTERVAL),
        }
    };
    let mut reported_drops = 0u64;
    let mut last_message = Instant::now();
    loop {
        if drain(bus, &mut sinks, &mut reported_drops) {
            last_message = Instant::now();
            continue;
        }
        report_drops(&mut sinks, &mut reported_drops);
        if last_message.elapsed() < LINGER {
            thread::park_timeout(DRAIN_INTERVAL);
            continue;
        }
        // Idle: sleep until an emitter or a flush wakes us. Raise the flag first, then look at
        // the queue once more, so a message queued in between is never left waiting.
        bus.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if drain(bus, &mut sinks, &mut reported_drops) {
            bus.sleeping.store(false, Ordering::SeqCst);
            last_message = Instant::now();
            continue;
        }
        // `park` may return spuriously: sleep on while nobody cleared the flag.
        while bus.sleeping.load(Ordering::Acquire) {
            thread::park();
        }
        last_message = Instant::now();
    }
}

/// Hands everything waiting to the sinks, in order. Returns whether there was anything.
fn drain(bus: &Bus, sinks: &mut Vec<Entry>, reported_drops: &mut u64) -> bool {
    let mut chunks = bus.queue.take();
    if chunks.is_empty() {
        return false;
    }
    for chunk in &mut chunks {
        for msg in chunk.drain(..) {
            handle(msg, sinks, reported_drops);
        }
        progressed();
    }
    bus.queue.recycle(chunks);
    true
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
