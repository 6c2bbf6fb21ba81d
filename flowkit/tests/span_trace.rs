//! Inside runs, the user's subscriber stays reachable by downcasting: tracing-error's
//! `SpanTrace` sees the spans of the runs, while the runs' logs are still captured (once).

use flowkit::{flow, task};
use tracing::Instrument;
use tracing_error::{ErrorLayer, SpanTrace, SpanTraceStatus};
use tracing_subscriber::prelude::*;

#[task]
async fn parse_row(row: u32) -> String {
    tracing::info!(row, "parsing");
    let trace = SpanTrace::capture();
    assert_eq!(
        trace.status(),
        SpanTraceStatus::CAPTURED,
        "the ErrorLayer is reachable inside a run"
    );
    trace.to_string()
}

#[flow]
async fn import_rows() -> String {
    parse_row(7)
        .instrument(tracing::info_span!("batch", size = 1))
        .await
}

#[tokio::test]
async fn span_trace_sees_the_spans_of_runs_and_logs_are_captured_once() {
    flowkit::testing::isolated_home();
    let _default = tracing_subscriber::registry()
        .with(ErrorLayer::default())
        .with(flowkit::sink::logs::layer())
        .set_default();

    let (trace, rec) = flowkit::testing::record(import_rows()).await;
    for span in ["parse_row", "batch", "import_rows"] {
        assert!(trace.contains(span), "{span} in the span trace:\n{trace}");
    }
    let logs = rec.run("parse_row").logs;
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].1, "parsing");
}
