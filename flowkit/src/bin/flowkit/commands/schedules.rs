//! `flowkit schedules list|create|pause|resume|delete` and `flowkit backfill`.

use super::{Failure, add_parameter_pairs, deployment_name};
use crate::args::{BackfillArgs, CreateScheduleArgs, SchedulesCommand};
use crate::print;
use chrono::{DateTime, Utc};
use flowkit::Client;
use flowkit_wire::api::schedules::{BackfillRequest, Schedule, ScheduleSource, ScheduleSpec};
use serde_json::Value;
use uuid::Uuid;

/// Runs `command`.
pub async fn run(client: &Client, command: SchedulesCommand, json: bool) -> Result<(), Failure> {
    match command {
        SchedulesCommand::List { deployment } => {
            let (flow, name) = deployment_name(&deployment)?;
            let schedules = client.schedules(flow, name).await?;
            if json {
                print::json(&schedules);
            } else if schedules.is_empty() {
                print::err(&format!(
                    "{flow}/{name} has no schedule: declare one in code (`.cron(…)`) or create \
                     one (`flowkit schedules create {flow}/{name} --cron …`)"
                ));
            } else {
                list(&schedules);
            }
            Ok(())
        }
        SchedulesCommand::Create(args) => create(client, args, json).await,
        SchedulesCommand::Pause { id } => {
            let schedule = client.pause_schedule(schedule_id(&id)?).await?;
            show(&schedule, json);
            Ok(())
        }
        SchedulesCommand::Resume { id } => {
            let schedule = client.resume_schedule(schedule_id(&id)?).await?;
            show(&schedule, json);
            Ok(())
        }
        SchedulesCommand::Delete { id } => {
            let id = schedule_id(&id)?;
            client.delete_schedule(id).await?;
            if json {
                print::json(&serde_json::json!({"deleted": id}));
            } else {
                print::out(&format!("schedule {id} deleted"));
            }
            Ok(())
        }
    }
}

/// The timing of a schedule, for people: `cron "0 3 * * *"` or `every 15m`.
fn timing(spec: &ScheduleSpec) -> String {
    match (&spec.cron, &spec.interval) {
        (Some(cron), _) => format!("cron \"{cron}\""),
        (None, Some(every)) => format!("every {every}"),
        (None, None) => String::new(),
    }
}

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_string(),
        |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn source(schedule: &Schedule) -> &'static str {
    match schedule.source {
        ScheduleSource::Code => "code",
        ScheduleSource::Api => "api",
    }
}

fn list(schedules: &[Schedule]) {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                source(s).to_string(),
                if s.active { "yes" } else { "paused" }.to_string(),
                when(s.next_at),
                timing(&s.spec),
                s.spec.timezone.clone(),
            ]
        })
        .collect();
    print::table(&["ID", "SOURCE", "ACTIVE", "NEXT", "TIMING", "ZONE"], &rows);
}

fn show(schedule: &Schedule, json: bool) {
    if json {
        print::json(schedule);
        return;
    }
    print::out(&format!(
        "schedule {} ({}, {}): {} in {}, next {}",
        schedule.id,
        source(schedule),
        if schedule.active { "active" } else { "paused" },
        timing(&schedule.spec),
        schedule.spec.timezone,
        when(schedule.next_at)
    ));
}

fn schedule_id(text: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        Failure::Usage(format!(
            "{text:?} is not a schedule id: give the UUID `flowkit schedules list FLOW/NAME` shows"
        ))
    })
}

/// A policy given on the command line, read as the API names it.
fn policy<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: Option<&String>,
    choices: &str,
) -> Result<Option<T>, Failure> {
    value
        .map(|v| {
            serde_json::from_value(Value::String(v.trim().to_string()))
                .map_err(|_| Failure::Usage(format!("--{flag} {v:?}: give one of {choices}")))
        })
        .transpose()
}

async fn create(client: &Client, args: CreateScheduleArgs, json: bool) -> Result<(), Failure> {
    let (flow, name) = deployment_name(&args.deployment)?;
    let mut spec = match (&args.cron, &args.interval) {
        (Some(cron), _) => ScheduleSpec::cron(cron.as_str()),
        (None, Some(every)) => ScheduleSpec::interval(every.as_str()),
        (None, None) => {
            return Err(Failure::Usage(
                "give --cron \"0 3 * * *\" or --interval 15m".to_string(),
            ));
        }
    };
    if let Some(zone) = &args.timezone {
        spec.timezone = zone.clone();
    }
    if let Some(catchup) = policy("catchup", args.catchup.as_ref(), "latest, none, all")? {
        spec.catchup = catchup;
    }
    if let Some(overlap) = policy(
        "overlap",
        args.overlap.as_ref(),
        "skip, allow, queue_one, cancel_running",
    )? {
        spec.overlap = overlap;
    }
    spec.max_lateness = args.max_lateness.clone();
    add_parameter_pairs(client, (flow, name), &args.params, &mut spec.parameters).await?;
    let schedule = client.create_schedule(flow, name, &spec).await?;
    show(&schedule, json);
    Ok(())
}

fn instant(flag: &str, text: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Failure::Usage(format!(
                "--{flag} {text:?}: {e}; give an RFC 3339 instant such as 2026-01-01T00:00:00Z"
            ))
        })
}

/// Runs `flowkit backfill`.
pub async fn backfill(client: &Client, args: BackfillArgs, json: bool) -> Result<(), Failure> {
    let (flow, name) = deployment_name(&args.deployment)?;
    let request = BackfillRequest {
        from: instant("from", &args.from)?,
        to: instant("to", &args.to)?,
        max_parallel: args.max_parallel,
        schedule: args.schedule.as_deref().map(schedule_id).transpose()?,
    };
    let done = client.backfill(flow, name, &request).await?;
    if json {
        print::json(&done);
    } else {
        print::out(&format!(
            "backfill {}: {} instant(s), {} run(s) created, {} already had one",
            done.id, done.instants, done.created, done.existing
        ));
    }
    Ok(())
}
