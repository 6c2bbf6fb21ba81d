//! Rows the server cannot have written (a database edited by hand, or damaged) read as
//! [`StoreError::Corrupt`], saying what is wrong, not as a driver error.

use crate::fixtures::*;
use crate::harness::Env;
use flowkit_server::store::{Backend, LogFilter, RunFilter, StoreError};

conformance!(corrupt_rows_are_reported_as_such);

async fn corrupt_rows_are_reported_as_such(env: &mut Env) {
    let s = scenario("damaged", t0());
    ingest(&env.store, s.events.clone()).await;

    env.execute_raw("UPDATE logs SET level = 99").await;
    match env
        .store
        .logs(s.flow.id, &LogFilter::default(), &page(10))
        .await
    {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("log level 99"), "{why}"),
        other => panic!("a log line at level 99 gave {other:?}"),
    }

    env.execute_raw("UPDATE runs SET attempt = -1").await;
    match env.store.get_run(s.flow.id).await {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("attempt -1"), "{why}"),
        other => panic!("a run at attempt -1 gave {other:?}"),
    }
    match env
        .store
        .list_flow_runs(&RunFilter::default(), &page(10))
        .await
    {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("attempt -1"), "{why}"),
        other => panic!("listing a run at attempt -1 gave {other:?}"),
    }
}
