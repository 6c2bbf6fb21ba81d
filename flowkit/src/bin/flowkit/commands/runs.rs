//! `flowkit runs ls` and `flowkit runs show ID`.

use super::{Failure, run_id};
use crate::args::RunsCommand;
use crate::print;
use flowkit::client::{PageRequest, RunFilter};
use flowkit::{Client, StateType};
use flowkit_wire::api::page::MAX_PAGE_SIZE;

/// Runs `command`.
pub async fn run(client: &Client, command: RunsCommand, json: bool) -> Result<(), Failure> {
    match command {
        RunsCommand::Ls {
            state,
            deployment,
            limit,
        } => {
            let mut filter = RunFilter::all();
            for name in state.iter().flat_map(|s| s.split(',')) {
                filter = filter.state(parse_state(name)?);
            }
            if let Some(deployment) = deployment {
                filter = filter.deployment(deployment);
            }
            list(client, &filter, limit, json).await
        }
        RunsCommand::Show { id } => {
            let run = client.flow_run(run_id(&id)?).await?;
            print::json(&run);
            Ok(())
        }
    }
}

fn parse_state(name: &str) -> Result<StateType, Failure> {
    StateType::ALL
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            let all: Vec<&str> = StateType::ALL.iter().map(|s| s.as_str()).collect();
            Failure::Usage(format!(
                "--state: {name:?} is not a state; give some of {}",
                all.join(", ")
            ))
        })
}

/// Up to `limit` runs that match `filter`, page after page.
async fn list(client: &Client, filter: &RunFilter, limit: u32, json: bool) -> Result<(), Failure> {
    let mut items = Vec::new();
    let mut page = PageRequest::first(limit.min(MAX_PAGE_SIZE));
    loop {
        let got = client.runs(filter, &page).await?;
        items.extend(got.items);
        match got.next_cursor {
            Some(cursor) if items.len() < limit as usize => page = page.after(cursor),
            _ => break,
        }
    }
    items.truncate(limit as usize);
    if json {
        print::json(&items);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|run| {
            vec![
                run.id.to_string(),
                run.state.as_str().to_string(),
                run.deployment.clone().unwrap_or_else(|| run.name.clone()),
                run.created.format("%Y-%m-%d %H:%M:%S").to_string(),
                run.state_message
                    .as_deref()
                    .and_then(|m| m.lines().next())
                    .unwrap_or("")
                    .to_string(),
            ]
        })
        .collect();
    print::table(&["ID", "STATE", "FLOW", "CREATED", "MESSAGE"], &rows);
    Ok(())
}
