//! `flowkit deployments ls` and `flowkit deployments show FLOW/NAME`.

use super::{Failure, deployment_name};
use crate::args::DeploymentsCommand;
use crate::print;
use flowkit::Client;
use flowkit::client::PageRequest;
use flowkit_wire::api::deployments::DeploymentDetail;
use flowkit_wire::api::page::MAX_PAGE_SIZE;
use serde_json::Value;

/// Runs `command`.
pub async fn run(client: &Client, command: DeploymentsCommand, json: bool) -> Result<(), Failure> {
    match command {
        DeploymentsCommand::Ls { limit } => list(client, limit, json).await,
        DeploymentsCommand::Show { deployment } => {
            let (flow, name) = deployment_name(&deployment)?;
            let detail = client.deployment(flow, name).await?;
            if json {
                print::json(&detail);
            } else {
                show(&detail);
            }
            Ok(())
        }
    }
}

/// Up to `limit` deployments, page after page.
async fn list(client: &Client, limit: u32, json: bool) -> Result<(), Failure> {
    let mut items = Vec::new();
    let mut page = PageRequest::first(limit.min(MAX_PAGE_SIZE));
    loop {
        let got = client.deployments(&page).await?;
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
    if items.is_empty() {
        print::err("no deployments: a worker registers them (`flowkit::serve`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|d| {
            vec![
                format!("{}/{}", d.flow, d.name),
                d.latest_version.clone(),
                d.versions.to_string(),
                d.updated.format("%Y-%m-%d %H:%M:%S").to_string(),
                first_line(d.description.as_deref()),
            ]
        })
        .collect();
    print::table(
        &[
            "DEPLOYMENT",
            "VERSION",
            "VERSIONS",
            "UPDATED",
            "DESCRIPTION",
        ],
        &rows,
    );
    Ok(())
}

fn first_line(text: Option<&str>) -> String {
    text.and_then(|t| t.lines().next())
        .unwrap_or("")
        .to_string()
}

/// A deployment for people: what it does, its parameters, who serves it, its last runs.
fn show(detail: &DeploymentDetail) {
    let latest = &detail.latest;
    print::out(&format!("{}/{}", latest.flow, latest.name));
    if let Some(description) = latest.description.as_deref().filter(|d| !d.is_empty()) {
        for line in description.lines() {
            print::out(&format!("  {line}"));
        }
    }
    print::out(&format!(
        "version:  {} (of {}){}",
        latest.version,
        detail.versions,
        match &detail.serving_version {
            Some(v) if *v != latest.version => format!("; triggers run {v}"),
            _ => String::new(),
        }
    ));
    if !latest.tags.is_empty() {
        print::out(&format!("tags:     {}", latest.tags.join(", ")));
    }
    if let Some(limit) = latest.concurrency_limit {
        print::out(&format!("limit:    {limit} runs at once"));
    }
    print::out("parameters:");
    let schema = &latest.parameter_schema;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut rows = Vec::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let default = latest
                .default_parameters
                .get(name)
                .or_else(|| property.get("default"))
                .map(Value::to_string)
                .unwrap_or_default();
            rows.push(vec![
                format!("  {name}"),
                type_of(property),
                if required.contains(&name.as_str()) && default.is_empty() {
                    "required".to_string()
                } else {
                    "optional".to_string()
                },
                default,
            ]);
        }
    }
    if rows.is_empty() {
        print::out("  (none)");
    } else {
        print::table(&["  NAME", "TYPE", "", "DEFAULT"], &rows);
    }
    print::out(&format!("workers:  {}", detail.live_workers.len()));
    for worker in &detail.live_workers {
        print::out(&format!(
            "  {} (seen {})",
            worker.name,
            worker.last_seen.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    if !detail.recent_runs.is_empty() {
        print::out("recent runs:");
        for run in &detail.recent_runs {
            print::out(&format!("  {}", print::run_line(run)));
        }
    }
}

/// A property's type, as its schema says it (`integer`, `string | null`, `Config`…).
fn type_of(property: &Value) -> String {
    match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => property
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .map_or_else(|| "any".to_string(), str::to_string),
    }
}
