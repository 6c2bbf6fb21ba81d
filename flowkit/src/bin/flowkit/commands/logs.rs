//! `flowkit logs ID [--follow]`: a flow run's log lines, oldest first; with `--follow`, new
//! lines as they arrive until the run ends.
//!
//! Following asks for the page after the last full page every `--poll-interval`, printing only
//! the lines not printed yet (remembered for that page only: at most
//! [`MAX_PAGE_SIZE`] ids). A line that reaches the server later than lines logged after it
//! (a reporter that was offline) can be missed; `flowkit logs ID` after the run shows it.

use super::{Failure, run_id};
use crate::args::LogsArgs;
use crate::print;
use flowkit::Client;
use flowkit::client::PageRequest;
use flowkit_wire::api::logs::LogEntry;
use flowkit_wire::api::page::MAX_PAGE_SIZE;
use std::collections::HashSet;
use uuid::Uuid;

/// Runs `args`.
pub async fn run(client: &Client, args: LogsArgs, json: bool) -> Result<(), Failure> {
    let id = run_id(&args.id)?;
    // A run that does not exist is an error, not an empty list.
    let mut ended = client.flow_run(id).await?.state.is_final();
    let mut tail = Tail::default();
    loop {
        tail.drain(client, id, json).await?;
        if ended || !args.follow {
            return Ok(());
        }
        tokio::time::sleep(args.poll_interval).await;
        // Read after the wait: once the run is seen final, one last drain prints its last lines.
        ended = client.flow_run(id).await?.state.is_final();
    }
}

/// Where reading stopped: the cursor of the last page read, and the lines of it printed.
#[derive(Default)]
struct Tail {
    cursor: Option<String>,
    printed: HashSet<Uuid>,
}

impl Tail {
    /// Prints every line not printed yet, page after page.
    async fn drain(&mut self, client: &Client, id: Uuid, json: bool) -> Result<(), Failure> {
        loop {
            let page = PageRequest {
                limit: Some(MAX_PAGE_SIZE),
                cursor: self.cursor.clone(),
            };
            let got = client.logs(id, &page).await?;
            for entry in &got.items {
                if self.printed.insert(entry.event_id) {
                    print_entry(entry, json);
                }
            }
            match got.next_cursor {
                Some(cursor) => {
                    self.cursor = Some(cursor);
                    self.printed.clear();
                }
                None => return Ok(()),
            }
        }
    }
}

fn print_entry(entry: &LogEntry, json: bool) {
    if json {
        match serde_json::to_string(entry) {
            Ok(line) => print::out(&line),
            Err(e) => print::err(&format!("cannot write a log line as JSON: {e}")),
        }
        return;
    }
    let level = serde_json::to_value(entry.level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    print::out(&format!(
        "{} {level:<5} {}: {}",
        entry.timestamp.format("%Y-%m-%d %H:%M:%S%.3f"),
        entry.run_name,
        entry.message
    ));
}
