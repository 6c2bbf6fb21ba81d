//! `flowkit cancel ID` and `flowkit retry ID`.

use super::{Failure, run_id};
use crate::args::{CancelArgs, RetryArgs};
use crate::print;
use flowkit::Client;

/// Cancels the run of `args`.
pub async fn cancel(client: &Client, args: CancelArgs, json: bool) -> Result<(), Failure> {
    let run = client
        .cancel_with_reason(run_id(&args.id)?, args.reason)
        .await?;
    if json {
        print::json(&run);
    } else {
        print::out(&print::run_line(&run));
    }
    Ok(())
}

/// Retries the run of `args`.
pub async fn retry(client: &Client, args: RetryArgs, json: bool) -> Result<(), Failure> {
    let run = client.retry(run_id(&args.id)?).await?;
    if json {
        print::json(&run);
    } else {
        print::out(&print::run_line(&run));
    }
    Ok(())
}
