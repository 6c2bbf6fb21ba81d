//! `flowkit limits list|set|delete`: the server's tag concurrency limits, which bound the
//! deployed runs carrying a tag across every worker (`flowkit::limits()` bounds one process).

use super::Failure;
use crate::args::LimitsCommand;
use crate::print;
use flowkit::Client;
use flowkit_wire::api::concurrency_limits::{ConcurrencyLimit, check_tag};

/// Runs a `limits` command.
pub async fn run(client: &Client, command: LimitsCommand, json: bool) -> Result<(), Failure> {
    match command {
        LimitsCommand::List => {
            let limits = client.concurrency_limits().await?;
            if json {
                print::json(&limits);
            } else if limits.items.is_empty() {
                print::err("no concurrency limits: set one with `flowkit limits set TAG N`");
            } else {
                let rows: Vec<Vec<String>> = limits.items.iter().map(row).collect();
                print::table(&["TAG", "LIMIT", "LEASED", "UPDATED"], &rows);
            }
        }
        LimitsCommand::Set { tag, limit } => {
            let set = client.set_concurrency_limit(tag_arg(&tag)?, limit).await?;
            if json {
                print::json(&set);
            } else {
                print::out(&format!(
                    "tag {}: at most {} at once ({} leased now)",
                    shown(&set.tag),
                    runs(u64::from(set.limit)),
                    set.leased
                ));
                if set.leased > u64::from(set.limit) {
                    print::err(&format!(
                        "{} of tag {} are leased now, more than the limit: they go on, and no \
                         other is claimed until they are fewer than {}",
                        runs(set.leased),
                        shown(&set.tag),
                        set.limit
                    ));
                }
            }
        }
        LimitsCommand::Delete { tag } => {
            client.delete_concurrency_limit(tag_arg(&tag)?).await?;
            if json {
                print::json(&serde_json::json!({ "deleted": tag }));
            } else {
                print::out(&format!(
                    "deleted the limit of tag {}: the server no longer bounds its runs",
                    shown(&tag)
                ));
            }
        }
    }
    Ok(())
}

/// The tag given on the command line, if it can carry a limit and be sent in a URL's path.
fn tag_arg(tag: &str) -> Result<&str, Failure> {
    check_tag(tag).map_err(|reason| Failure::Usage(format!("tag {tag:?}: {reason}")))?;
    if matches!(tag, "." | "..") {
        return Err(Failure::Usage(format!(
            "tag {tag:?}: `.` and `..` cannot be sent in a URL's path: use another tag"
        )));
    }
    Ok(tag)
}

/// `tag` as it reads in a line or a table cell: quoted when it holds a space, a control
/// character or a quote, or is empty, so where it ends stays clear.
fn shown(tag: &str) -> String {
    if tag.is_empty()
        || tag
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        format!("{tag:?}")
    } else {
        tag.to_string()
    }
}

/// `n runs`, or `1 run`.
fn runs(n: u64) -> String {
    if n == 1 {
        "1 run".to_string()
    } else {
        format!("{n} runs")
    }
}

fn row(limit: &ConcurrencyLimit) -> Vec<String> {
    vec![
        shown(&limit.tag),
        limit.limit.to_string(),
        limit.leased.to_string(),
        limit.updated.format("%Y-%m-%d %H:%M:%S").to_string(),
    ]
}
