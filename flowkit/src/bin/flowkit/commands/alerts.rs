//! `flowkit alerts ls|create|update|delete|deliveries`: the server's alert rules.

use super::Failure;
use crate::args::{AlertsCommand, CreateAlertArgs, UpdateAlertArgs};
use crate::print;
use flowkit::Client;
use flowkit::client::PageRequest;
use flowkit_wire::api::alerts::{AlertRule, AlertRulePatch, AlertRuleSpec, Delivery};
use flowkit_wire::state::StateType;
use uuid::Uuid;

/// Runs `command`.
pub async fn run(client: &Client, command: AlertsCommand, json: bool) -> Result<(), Failure> {
    match command {
        AlertsCommand::Ls => {
            let rules = client.alert_rules().await?;
            if json {
                print::json(&rules.items);
            } else if rules.items.is_empty() {
                print::err("no alert rules: create one with `flowkit alerts create`");
            } else {
                let rows: Vec<Vec<String>> = rules.items.iter().map(rule_row).collect();
                print::table(&["ID", "NAME", "WHEN", "SCOPE", "TARGETS"], &rows);
            }
            Ok(())
        }
        AlertsCommand::Create(args) => {
            let rule = client.create_alert_rule(&spec_of(args)?).await?;
            if json {
                print::json(&rule);
            } else {
                print::out(&format!(
                    "created alert rule {} ({})",
                    rule.id, rule.spec.name
                ));
            }
            Ok(())
        }
        AlertsCommand::Update(args) => {
            let id = rule_id(&args.id)?;
            let rule = client.update_alert_rule(id, &patch_of(args)?).await?;
            if json {
                print::json(&rule);
            } else {
                print::out(&format!(
                    "updated alert rule {} ({}, {})",
                    rule.id,
                    rule.spec.name,
                    if rule.spec.enabled {
                        "enabled"
                    } else {
                        "disabled"
                    }
                ));
            }
            Ok(())
        }
        AlertsCommand::Delete { id } => {
            let id = rule_id(&id)?;
            client.delete_alert_rule(id).await?;
            if !json {
                print::out(&format!("deleted alert rule {id}"));
            } else {
                print::json(&serde_json::json!({"deleted": id}));
            }
            Ok(())
        }
        AlertsCommand::Deliveries { id, limit } => {
            let page = client
                .alert_deliveries(rule_id(&id)?, &PageRequest::first(limit))
                .await?;
            if json {
                print::json(&page.items);
            } else if page.items.is_empty() {
                print::err("no deliveries yet");
            } else {
                let rows: Vec<Vec<String>> = page.items.iter().map(delivery_row).collect();
                print::table(
                    &["CREATED", "RUN", "STATE", "TARGET", "STATUS", "ATTEMPTS"],
                    &rows,
                );
            }
            Ok(())
        }
    }
}

fn rule_id(text: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        Failure::Usage(format!(
            "{text:?} is not an alert rule id: give the UUID `flowkit alerts ls` shows"
        ))
    })
}

/// The states of `--states` (comma-separated, any case).
fn states_of(text: Option<&str>) -> Result<Vec<StateType>, Failure> {
    let mut states = Vec::new();
    for name in text.iter().flat_map(|s| s.split(',')) {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let state = StateType::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "{name:?} is not a state: use Failed, Crashed, TimedOut, Late, Expired or \
                     Cancelled"
                ))
            })?;
        states.push(state);
    }
    Ok(states)
}

/// The rule the flags describe; the server checks it (and answers every error at its field).
fn spec_of(args: CreateAlertArgs) -> Result<AlertRuleSpec, Failure> {
    let states = states_of(args.states.as_deref())?;
    Ok(AlertRuleSpec {
        name: args.name,
        flow: args.flow,
        deployment: args.deployment,
        tag: args.tag,
        states,
        worker_absent_for: args.worker_absent_for,
        webhook: args.webhook,
        slack: args.slack,
        quiet_period: args.quiet_period,
        enabled: true,
    })
}

/// The change the flags describe: only the fields given; `--clear` ones become `null`.
fn patch_of(args: UpdateAlertArgs) -> Result<AlertRulePatch, Failure> {
    let mut patch = AlertRulePatch {
        name: args.name,
        flow: args.flow.map(Some),
        deployment: args.deployment.map(Some),
        tag: args.tag.map(Some),
        states: args
            .states
            .as_deref()
            .map(|s| states_of(Some(s)))
            .transpose()?,
        worker_absent_for: args.worker_absent_for.map(Some),
        webhook: args.webhook.map(Some),
        slack: args.slack.map(Some),
        quiet_period: args.quiet_period.map(Some),
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    };
    for field in &args.clear {
        let slot = match field.trim() {
            "flow" => &mut patch.flow,
            "deployment" => &mut patch.deployment,
            "tag" => &mut patch.tag,
            "worker_absent_for" => &mut patch.worker_absent_for,
            "webhook" => &mut patch.webhook,
            "slack" => &mut patch.slack,
            "quiet_period" => &mut patch.quiet_period,
            other => {
                return Err(Failure::Usage(format!(
                    "--clear {other:?}: only flow, deployment, tag, worker_absent_for, webhook, \
                     slack and quiet_period can be removed"
                )));
            }
        };
        if slot.as_ref().is_some_and(Option::is_some) {
            return Err(Failure::Usage(format!(
                "--clear {field} and --{} both given: choose one",
                field.replace('_', "-")
            )));
        }
        *slot = Some(None);
    }
    if patch == AlertRulePatch::default() {
        return Err(Failure::Usage(
            "nothing to change: give --name, --states, --enable, --disable, --clear, …".to_string(),
        ));
    }
    Ok(patch)
}

fn rule_row(rule: &AlertRule) -> Vec<String> {
    let spec = &rule.spec;
    let mut when: Vec<String> = spec.states.iter().map(|s| s.to_string()).collect();
    if let Some(absent) = &spec.worker_absent_for {
        when.push(format!("no worker for {absent}"));
    }
    let scope: Vec<String> = [
        spec.flow.as_ref().map(|f| format!("flow={f}")),
        spec.deployment.as_ref().map(|d| format!("deployment={d}")),
        spec.tag.as_ref().map(|t| format!("tag={t}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let targets: Vec<&str> = [spec.webhook.as_deref(), spec.slack.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    vec![
        rule.id.to_string(),
        if spec.enabled {
            spec.name.clone()
        } else {
            format!("{} (disabled)", spec.name)
        },
        when.join(","),
        if scope.is_empty() {
            "all runs".to_string()
        } else {
            scope.join(" ")
        },
        targets.join(" "),
    ]
}

fn delivery_row(d: &Delivery) -> Vec<String> {
    let attempts: Vec<String> = d
        .attempts
        .iter()
        .map(|a| match (a.status_code, &a.error) {
            (Some(code), _) => code.to_string(),
            (None, Some(error)) => error.clone(),
            (None, None) => "?".to_string(),
        })
        .collect();
    vec![
        d.created.format("%Y-%m-%d %H:%M:%S").to_string(),
        d.run_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".into()),
        d.state
            .map(|s| s.to_string())
            .unwrap_or_else(|| "workers gone".into()),
        format!("{:?}", d.target).to_lowercase(),
        format!("{:?}", d.status).to_lowercase(),
        attempts.join(", "),
    ]
}
