//! Capturing `tracing` events inside a run as that run's logs.
//!
//! Every event at or above `FLOWKIT_LOG_LEVEL` emitted while a run is executing is recorded as
//! a [`Log`](crate::EventBody::Log) event of that run, with its level, message and
//! fields. Runs started inside a run (called, submitted, mapped or moved with
//! [`crate::spawn`]) are captured too.
//!
//! # With your own subscriber: add the [`layer`]
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! let _default = tracing_subscriber::registry()
//!     // .with(tracing_subscriber::fmt::layer())   // your layers, as before
//!     .with(flowkit::sink::logs::layer())
//!     .set_default(); // or `.init()` for the whole process
//! ```
//!
//! The capture is then one layer of your subscriber: inside runs, your subscriber stays the
//! current dispatcher, so everything that finds a layer by downcasting it keeps working —
//! tracing-error's `SpanTrace`, tracing-opentelemetry's context, `reload` handles. The layer
//! sees the events your subscriber enables (filter your terminal output per layer, with
//! `.with_filter(..)`, to capture more than you print).
//!
//! # Without the layer
//!
//! A root run (one started outside any other run) whose dispatcher does not capture executes
//! with a capturing wrapper as the default dispatcher instead: the wrapper holds the dispatcher
//! that was the default when the run started — your subscriber, or none — and forwards
//! everything to it, so your logs look as they would without flowkit. A wrapper cannot pass on
//! downcasts (`tracing` gives no way to reach the subscriber inside a `Dispatch`), which is why
//! a subscriber that has layers of its own should include the [`layer`].
//!
//! Only the capturing allocates: an event that is not captured (below the level, or outside
//! any run) costs a level comparison and a task-local lookup on top of the user's
//! subscriber.

use crate::context;
use crate::event::LogLevel;
use crate::run::emit::log_to_current_run;
use futures::future::Either;
use serde_json::{Map, Value};
use std::fmt::{self, Write as _};
use std::future::Future;
use tracing::dispatcher::{self, Dispatch};
use tracing::field::{Field, Visit};
use tracing::instrument::{WithDispatch, WithSubscriber};
use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::subscriber::{Interest, Subscriber};
use tracing::{Event, Level, Metadata};

/// The capture as a layer of your own subscriber: see [the module docs](self).
///
/// Captures events at `FLOWKIT_LOG_LEVEL` and above unless [`CaptureLayer::level`] says
/// otherwise.
pub fn layer() -> CaptureLayer {
    CaptureLayer { level: None }
}

/// A [`tracing_subscriber::Layer`] that records `tracing` events inside runs as the runs'
/// logs; made by [`layer`].
#[derive(Clone, Debug)]
pub struct CaptureLayer {
    /// `None`: the configured `FLOWKIT_LOG_LEVEL`, read at the first event inside a run (the
    /// layer is usually built before flowkit is configured).
    level: Option<Level>,
}

impl CaptureLayer {
    /// Captures events at `level` and above.
    pub fn level(mut self, level: Level) -> CaptureLayer {
        self.level = Some(level);
        self
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    // No `register_callsite` or `enabled`: an observer that defers to the rest of the
    // subscriber on what is enabled.
    fn on_event(&self, event: &Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().is_event() || !in_run() {
            return;
        }
        let level = self.level.unwrap_or_else(|| crate::config::get().log_level);
        if *event.metadata().level() <= level {
            record_to_current_run(event);
        }
    }
}

/// Wraps a root run's future so that `tracing` events emitted inside any run it starts are
/// captured, while still reaching the user's own subscriber.
///
/// When the current dispatcher already captures (it includes [`CaptureLayer`], or a root run
/// starts inside a future that is itself captured), the future is returned as it is.
pub(crate) fn capture<F: Future>(fut: F) -> Either<WithDispatch<F>, F> {
    capture_at(crate::config::get().log_level, fut)
}

/// [`capture`] with an explicit lowest captured level.
fn capture_at<F: Future>(level: Level, fut: F) -> Either<WithDispatch<F>, F> {
    let wrapper = dispatcher::get_default(|current| {
        let captures = current.is::<CaptureLayer>() || current.is::<Capture>();
        (!captures).then(|| Capture::new(current.clone(), level))
    });
    match wrapper {
        Some(capture) => Either::Left(fut.with_subscriber(capture)),
        None => Either::Right(fut),
    }
}

/// Records `event` as a log of the run executing on this task.
fn record_to_current_run(event: &Event<'_>) {
    let mut visitor = LogVisitor::default();
    event.record(&mut visitor);
    log_to_current_run(
        log_level(event.metadata().level()),
        visitor.message,
        visitor.fields,
    );
}

/// The `tracing` subscriber a root run executes with when the user's subscriber does not
/// include [`CaptureLayer`]: forwards everything to the dispatcher it wraps and records events
/// inside runs as run logs.
#[derive(Debug)]
pub(crate) struct Capture {
    /// The dispatcher that was the default when the root run started.
    inner: Dispatch,
    /// The lowest level captured.
    level: Level,
    /// The most verbose level this dispatcher may enable.
    hint: LevelFilter,
}

impl Capture {
    fn new(inner: Dispatch, level: Level) -> Capture {
        // `Dispatch` does not expose the inner subscriber's own hint. The global maximum
        // (taken before this dispatcher registers) covers every registered dispatcher,
        // the inner one included, so it is a safe upper bound for it.
        let hint = LevelFilter::current().max(LevelFilter::from_level(level));
        Capture { inner, level, hint }
    }

    /// Whether an event of `metadata` would be captured if a run were executing.
    fn capturable(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= self.level
    }
}

/// Whether a run is executing on this task now.
fn in_run() -> bool {
    context::current().is_some_and(|frame| frame.run.is_some())
}

impl Subscriber for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        let inner = self.inner.register_callsite(metadata);
        if self.capturable(metadata) && !inner.is_always() {
            // Whether to capture depends on being inside a run: ask per event.
            Interest::sometimes()
        } else {
            inner
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata) || (self.capturable(metadata) && in_run())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.hint)
    }

    fn new_span(&self, span: &span::Attributes<'_>) -> span::Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.inner.record(span, values);
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.inner.record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if self.capturable(metadata) && in_run() {
            record_to_current_run(event);
            // Enabled for the capture: the inner subscriber may not want it.
            if self.inner.enabled(metadata) {
                self.inner.event(event);
            }
        } else {
            // Not captured, so `enabled` (or an `always` interest) let it through only
            // because the inner subscriber wants it.
            self.inner.event(event);
        }
    }

    fn enter(&self, span: &span::Id) {
        self.inner.enter(span);
    }

    fn exit(&self, span: &span::Id) {
        self.inner.exit(span);
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> tracing_core::span::Current {
        self.inner.current_span()
    }
}

/// Collects an event's `message` and its other fields as JSON.
#[derive(Default)]
struct LogVisitor {
    message: String,
    fields: Map<String, Value>,
}

impl LogVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => match value {
                Value::String(s) => self.message.push_str(&s),
                other => {
                    let _ = write!(self.message, "{other}");
                }
            },
            // Metadata `tracing-log` adds to events bridged from the `log` crate.
            name if name.starts_with("log.") => {}
            name => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for LogVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let json = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, json);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let json =
            i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let json =
            u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, json);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // The formatted `format_args!` of the event: write it in place.
            let _ = write!(self.message, "{value:?}");
        } else {
            self.put(field, Value::String(format!("{value:?}")));
        }
    }
}

/// The wire's level of a `tracing` level.
fn log_level(level: &Level) -> LogLevel {
    match *level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        Level::ERROR => LogLevel::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Frame, Recorder, RunRef};
    use crate::event::{EventBody, RunKind};
    use std::io;
    use std::sync::{Arc, Mutex};
    use uuid::Uuid;

    /// What the user's subscriber wrote.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("utf-8")
        }
    }

    /// A user's fmt subscriber that keeps events at `level` and above.
    fn user_subscriber(level: Level) -> (Dispatch, Buffer) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (Dispatch::new(subscriber), buffer)
    }

    /// A frame for a task run named `work` whose events go to the returned recorder.
    fn run_frame() -> (Arc<Frame>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let frame = Arc::new(Frame {
            run: Some(RunRef {
                id: Uuid::now_v7(),
                kind: RunKind::Task,
                name: "work".into(),
                parent_run_id: None,
                flow_run_id: None,
                attempt: 1,
            }),
            flow: None,
            recorder: Some(Arc::clone(&recorder)),
            held_tags: None,
        });
        (frame, recorder)
    }

    /// The captured logs: (level, message, fields).
    fn logs(recorder: &Recorder) -> Vec<(LogLevel, String, Map<String, Value>)> {
        let events = recorder.events.lock().expect("recorder lock");
        events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Log {
                    level,
                    message,
                    fields,
                } => Some((*level, message.clone(), fields.clone())),
                _ => None,
            })
            .collect()
    }

    #[derive(Debug)]
    struct Oops;
    impl fmt::Display for Oops {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("disk on fire")
        }
    }
    impl std::error::Error for Oops {}

    #[tokio::test]
    async fn events_reach_the_user_and_the_run() {
        let (user, buffer) = user_subscriber(Level::TRACE);
        let _default = dispatcher::set_default(&user);
        let (frame, recorder) = run_frame();
        capture_at(
            Level::INFO,
            context::scope(frame, async {
                let span = tracing::info_span!("work_span", k = 1);
                let _entered = span.enter();
                let error: &(dyn std::error::Error + 'static) = &Oops;
                tracing::info!(
                    rows = 42,
                    ratio = 0.5,
                    ok = true,
                    table = "users",
                    big = u128::MAX,
                    list = ?[1, 2],
                    error,
                    "loaded <b>{}</b> & more",
                    "data"
                );
                tracing::debug!("too quiet to capture");
                tracing::warn!("no fields");
            }),
        )
        .await;

        let logs = logs(&recorder);
        assert_eq!(logs.len(), 2, "{logs:?}");
        let (level, message, fields) = &logs[0];
        assert_eq!(*level, LogLevel::Info);
        // Escaping is the dashboard's job: the message is kept verbatim.
        assert_eq!(message, "loaded <b>data</b> & more");
        let want = serde_json::json!({
            "rows": 42,
            "ratio": 0.5,
            "ok": true,
            "table": "users",
            "big": u128::MAX.to_string(),
            "list": "[1, 2]",
            "error": "disk on fire",
        });
        assert_eq!(Value::Object(fields.clone()), want);
        assert_eq!(
            logs[1],
            (LogLevel::Warn, "no fields".to_string(), Map::new())
        );

        let text = buffer.text();
        assert!(
            text.contains("work_span{k=1}: "),
            "spans reach the user:\n{text}"
        );
        assert!(text.contains("loaded <b>data</b> & more"), "{text}");
        assert!(text.contains("too quiet to capture"), "{text}");
        assert!(text.contains("no fields"), "{text}");
    }

    #[tokio::test]
    async fn capture_does_not_depend_on_the_user_filter() {
        // The user keeps only warnings; INFO is still captured, and not shown to the user.
        let (user, buffer) = user_subscriber(Level::WARN);
        let _default = dispatcher::set_default(&user);
        let (frame, recorder) = run_frame();
        capture_at(
            Level::INFO,
            context::scope(frame, async {
                tracing::info!(step = 1, "captured only");
                tracing::error!("captured and shown");
            }),
        )
        .await;
        let messages: Vec<String> = logs(&recorder).into_iter().map(|l| l.1).collect();
        assert_eq!(messages, ["captured only", "captured and shown"]);
        let text = buffer.text();
        assert!(!text.contains("captured only"), "{text}");
        assert!(text.contains("captured and shown"), "{text}");
    }

    #[tokio::test]
    async fn captured_without_any_user_subscriber() {
        let _default = dispatcher::set_default(&Dispatch::none());
        let (frame, recorder) = run_frame();
        capture_at(
            Level::INFO,
            context::scope(frame, async {
                tracing::info!("nobody else listens");
            }),
        )
        .await;
        assert_eq!(logs(&recorder).len(), 1);
    }

    #[tokio::test]
    async fn events_outside_a_run_or_below_the_level_are_not_captured() {
        let (user, buffer) = user_subscriber(Level::TRACE);
        let _default = dispatcher::set_default(&user);
        let recorder = Arc::new(Recorder::default());
        // A frame with a recorder but no run: code between runs.
        let no_run = Arc::new(Frame {
            run: None,
            flow: None,
            recorder: Some(Arc::clone(&recorder)),
            held_tags: None,
        });
        capture_at(
            Level::INFO,
            context::scope(no_run, async {
                tracing::info!("between runs");
            }),
        )
        .await;
        capture_at(Level::INFO, async {
            tracing::info!("outside any frame");
        })
        .await;
        let (frame, recorder_in_run) = run_frame();
        capture_at(
            Level::INFO,
            context::scope(frame, async {
                tracing::debug!("debug inside a run");
                tracing::trace!("trace inside a run");
            }),
        )
        .await;
        assert!(logs(&recorder).is_empty());
        assert!(logs(&recorder_in_run).is_empty());
        let text = buffer.text();
        for line in [
            "between runs",
            "outside any frame",
            "debug inside a run",
            "trace inside a run",
        ] {
            assert!(text.contains(line), "the user still sees {line:?}:\n{text}");
        }
    }

    #[tokio::test]
    async fn spawned_futures_keep_capturing() {
        let _default = dispatcher::set_default(&Dispatch::none());
        let (frame, recorder) = run_frame();
        capture_at(
            Level::INFO,
            context::scope(frame, async {
                crate::spawn(async { tracing::info!("from a spawned future") })
                    .await
                    .expect("spawned future");
            }),
        )
        .await;
        let messages: Vec<String> = logs(&recorder).into_iter().map(|l| l.1).collect();
        assert_eq!(messages, ["from a spawned future"]);
    }

    #[test]
    fn capture_is_not_nested() {
        let outer = Dispatch::new(Capture::new(Dispatch::none(), Level::INFO));
        dispatcher::with_default(&outer, || {
            assert!(matches!(
                capture_at(Level::INFO, async {}),
                Either::Right(_)
            ));
        });
        dispatcher::with_default(&Dispatch::none(), || {
            assert!(matches!(capture_at(Level::INFO, async {}), Either::Left(_)));
        });
    }

    #[test]
    fn hint_covers_the_capture_level() {
        let capture = Capture::new(Dispatch::none(), Level::DEBUG);
        assert!(capture.max_level_hint() >= Some(LevelFilter::DEBUG));
    }
}
