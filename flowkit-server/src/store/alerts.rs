//! Alert rules, the state changes waiting to be matched against them, and the deliveries of
//! their messages, in the database (migration 0009). The decisions — which run matches which
//! rule, the quiet period, the backoff — are `crate::alerts`'s; this module reads and writes
//! the rows, each write in one transaction.
//!
//! State changes reach `alert_events` through database triggers on `runs` (see the migration),
//! in the transaction of whatever changed the run: ingestion, the reaper, the scheduler,
//! cancel, finish. On SQLite, a run created in such a state is queued by the writer that
//! creates it (`sqlite_ingest::queue_alerts`, migration 0016), in the same transaction.
//! [`match_events`] consumes them oldest first; on PostgreSQL several replicas may match at
//! once (`FOR UPDATE SKIP LOCKED` gives each its own events); on SQLite it runs on the writer
//! like every write.

use super::StoreError;
use super::dialect::{Dialect, PushBind, begin_write, xact_lock};
use super::queries::{Columns, json_string};
use super::rows::{corrupt, parse_state};
use chrono::{DateTime, Utc};
use flowkit_wire::alerts::{Alert, AlertState, WorkerAbsence};
use flowkit_wire::api::alerts::{
    AlertRule, AlertRuleSpec, Delivery, DeliveryAttempt, DeliveryStatus, MAX_ATTEMPTS_SHOWN,
    MAX_RULES, TargetKind,
};
use flowkit_wire::event::RunKind;
use flowkit_wire::state::StateType;
use sqlx::{Pool, QueryBuilder};
use std::collections::HashMap;
use uuid::Uuid;

/// A rule as stored: its full spec (URLs unmasked: only the sender reads them).
#[derive(Clone, Debug)]
pub struct StoredRule {
    /// Its id.
    pub id: Uuid,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// The spec as sent.
    pub spec: AlertRuleSpec,
    /// The `last_seen` of the worker absence already notified.
    pub absence_notified: Option<DateTime<Utc>>,
}

impl StoredRule {
    /// As the API shows it: URLs masked.
    pub fn shown(&self) -> AlertRule {
        AlertRule::shown(self.id, self.created, &self.spec)
    }
}

/// A write of the alerts' tables, run like every write (SQLite: on its writer).
#[derive(Debug)]
pub(crate) enum AlertWrite {
    /// See [`create_rule`].
    CreateRule(Box<StoredRule>),
    /// See [`delete_rule`].
    DeleteRule(Uuid),
    /// See [`update_rule`].
    UpdateRule {
        /// The rule.
        id: Uuid,
        /// The spec the change was made from: the rule is changed only if it still has it.
        expected: Box<AlertRuleSpec>,
        /// Its new spec (checked).
        spec: Box<AlertRuleSpec>,
    },
    /// See [`match_events`].
    Match(Box<MatchOrder>),
    /// See [`notify_absences`].
    Absences {
        /// The matcher's clock.
        now: DateTime<Utc>,
    },
    /// See [`claim`].
    Claim {
        /// The sender's clock.
        now: DateTime<Utc>,
        /// At most this many.
        limit: u32,
        /// How long a claim keeps other replicas off.
        lease: chrono::Duration,
    },
    /// See [`record`].
    Record(Box<AttemptOutcome>),
    /// See [`prune`].
    Prune {
        /// Finished deliveries created before this go.
        before: DateTime<Utc>,
        /// At most this many.
        limit: u32,
    },
}

/// What an [`AlertWrite`] did.
#[derive(Debug)]
pub enum AlertWritten {
    /// Rows changed (create: 1, or 0 when [`MAX_RULES`] are stored; delete and update: rules
    /// deleted or changed).
    Count(u64),
    /// See [`Matched`].
    Matched(Matched),
    /// Deliveries claimed for sending.
    Claimed(Vec<Claimed>),
}

/// How to match the waiting state changes.
#[derive(Debug, Clone)]
pub struct MatchOrder {
    /// The matcher's clock (quiet periods, `at` of the alerts).
    pub now: DateTime<Utc>,
    /// The server's public URL, for links to run pages.
    pub base_url: String,
    /// At most this many state changes.
    pub limit: u32,
}

/// What matching did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// State changes read (and deleted).
    pub events: u64,
    /// Deliveries created.
    pub deliveries: u64,
    /// Messages held back by quiet periods.
    pub suppressed: u64,
}

/// A delivery claimed for one attempt.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The delivery.
    pub id: Uuid,
    /// This attempt's number (from 1): fences the outcome.
    pub attempt: u32,
    /// Where to.
    pub target: TargetKind,
    /// The URL, in full.
    pub url: String,
    /// What to send.
    pub alert: Alert,
}

/// How one attempt went, and what happens next.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// The delivery.
    pub id: Uuid,
    /// The attempt's number (as claimed).
    pub attempt: u32,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// Delivered, failed for good, or pending again from `next_attempt`.
    pub status: DeliveryStatus,
    /// When to try again (pending).
    pub next_attempt: Option<DateTime<Utc>>,
}

/// Runs an [`AlertWrite`] on `conn`.
pub(crate) async fn write<D: Dialect>(
    conn: &mut D::Connection,
    task: &AlertWrite,
) -> Result<AlertWritten, StoreError> {
    match task {
        AlertWrite::CreateRule(rule) => create_rule::<D>(conn, rule).await.map(AlertWritten::Count),
        AlertWrite::DeleteRule(id) => delete_rule::<D>(conn, *id).await.map(AlertWritten::Count),
        AlertWrite::UpdateRule { id, expected, spec } => {
            update_rule::<D>(conn, *id, expected, spec)
                .await
                .map(AlertWritten::Count)
        }
        AlertWrite::Match(order) => match_events::<D>(conn, order)
            .await
            .map(AlertWritten::Matched),
        AlertWrite::Absences { now } => notify_absences::<D>(conn, *now)
            .await
            .map(AlertWritten::Matched),
        AlertWrite::Claim { now, limit, lease } => claim::<D>(conn, *now, *limit, *lease)
            .await
            .map(AlertWritten::Claimed),
        AlertWrite::Record(outcome) => record::<D>(conn, outcome).await.map(AlertWritten::Count),
        AlertWrite::Prune { before, limit } => prune::<D>(conn, *before, *limit)
            .await
            .map(AlertWritten::Count),
    }
}

/// The name of the lock that creating a rule holds while it counts the rules (PostgreSQL:
/// concurrent creates on several connections or replicas wait for each other, so the bound
/// holds).
const RULES_LOCK: i64 = 0x666b_616c_6572_7473; // "fkalerts"

/// Stores a rule, unless [`MAX_RULES`] are stored already (then 0).
async fn create_rule<D: Dialect>(
    conn: &mut D::Connection,
    rule: &StoredRule,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    xact_lock::<D>(&mut tx, RULES_LOCK).await?;
    let mut q = QueryBuilder::new("SELECT COUNT(*) AS n FROM alert_rules");
    let row = D::fetch_optional(&mut tx, &mut q).await?;
    let n: i64 = row
        .map(|r| Columns::<D>(&r).get("n"))
        .transpose()?
        .unwrap_or(0);
    if n >= MAX_RULES as i64 {
        return Ok(0);
    }
    let mut q = QueryBuilder::new("INSERT INTO alert_rules (id, name, spec, created) VALUES (");
    q.bind(rule.id)
        .push(", ")
        .bind(D::text(&rule.spec.name))
        .push(", ");
    D::push_json(&mut q, json_string(&rule.spec)?);
    q.push(", ").bind_instant(rule.created).push(")");
    D::execute(&mut tx, &mut q).await?;
    tx.commit().await?;
    Ok(1)
}

/// Replaces the spec (and name) of rule `id` if its spec is still `expected` (compare and
/// set: two changes made at once from the same spec cannot both land, so neither undoes the
/// other unseen); returns 1 when it did. Its deliveries, quiet periods and the worker absence
/// it notified stay; pending deliveries go to the new URLs (the sender reads them when it
/// claims a delivery).
async fn update_rule<D: Dialect>(
    conn: &mut D::Connection,
    id: Uuid,
    expected: &AlertRuleSpec,
    spec: &AlertRuleSpec,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("UPDATE alert_rules SET name = ");
    q.bind(D::text(&spec.name)).push(", spec = ");
    D::push_json(&mut q, json_string(spec)?);
    // The stored text is what `json_string` wrote (PostgreSQL's `json` keeps its input as is).
    q.push(" WHERE id = ")
        .bind(id)
        .push(" AND CAST(spec AS TEXT) = ")
        .bind(json_string(expected)?);
    let changed = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(changed)
}

/// Deletes a rule with its deliveries, their attempts and its quiet periods; returns 1 when
/// it existed.
async fn delete_rule<D: Dialect>(conn: &mut D::Connection, id: Uuid) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new(
        "DELETE FROM alert_attempts WHERE delivery_id IN \
         (SELECT id FROM alert_deliveries WHERE rule_id = ",
    );
    q.bind(id).push(")");
    D::execute(&mut tx, &mut q).await?;
    for table in ["alert_deliveries", "alert_quiet"] {
        let mut q = QueryBuilder::new(format!("DELETE FROM {table} WHERE rule_id = "));
        q.bind(id);
        D::execute(&mut tx, &mut q).await?;
    }
    let mut q = QueryBuilder::new("DELETE FROM alert_rules WHERE id = ");
    q.bind(id);
    let deleted = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    tx.commit().await?;
    Ok(deleted)
}

fn rule_of<D: Dialect>(row: &D::Row) -> Result<StoredRule, StoreError> {
    let c = Columns::<D>(row);
    Ok(StoredRule {
        id: c.get("id")?,
        created: c.instant("created")?,
        spec: c.json("spec")?,
        absence_notified: c.opt_instant("absence_notified")?,
    })
}

fn rule_columns<D: Dialect>() -> String {
    format!("id, created, {}, absence_notified", D::json_text("spec"))
}

async fn rules_tx<D: Dialect>(conn: &mut D::Connection) -> Result<Vec<StoredRule>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM alert_rules ORDER BY created, id LIMIT ",
        rule_columns::<D>()
    ));
    q.bind(MAX_RULES as i64);
    D::fetch_all(conn, &mut q)
        .await?
        .iter()
        .map(rule_of::<D>)
        .collect()
}

/// Every rule (at most [`MAX_RULES`]), oldest first.
pub(crate) async fn rules<D: Dialect>(pool: &Pool<D>) -> Result<Vec<StoredRule>, StoreError> {
    rules_tx::<D>(&mut *pool.acquire().await?).await
}

/// One rule.
pub(crate) async fn rule<D: Dialect>(
    pool: &Pool<D>,
    id: Uuid,
) -> Result<Option<StoredRule>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM alert_rules WHERE id = ",
        rule_columns::<D>()
    ));
    q.bind(id);
    D::fetch_optional(&mut *pool.acquire().await?, &mut q)
        .await?
        .as_ref()
        .map(rule_of::<D>)
        .transpose()
}

/// The run a state change is about, as matching needs it.
struct RunFacts {
    name: String,
    task_key: String,
    deployment: Option<String>,
    tags: Vec<String>,
    created: DateTime<Utc>,
    state_ts: DateTime<Utc>,
    parent_run_id: Option<Uuid>,
}

/// Whether `rule` fires for a flow run of `run` entering `state` (never when disabled).
fn matches(rule: &AlertRuleSpec, run: &RunFacts, state: StateType) -> bool {
    rule.enabled
        && rule.states.contains(&state)
        && rule.flow.as_ref().is_none_or(|flow| *flow == run.name)
        && rule
            .deployment
            .as_ref()
            .is_none_or(|d| run.deployment.as_ref() == Some(d))
        && rule.tag.as_ref().is_none_or(|tag| run.tags.contains(tag))
}

/// Reads up to `order.limit` waiting state changes, oldest first, and for each rule that
/// matches creates a delivery per target — or, within the rule's quiet period for the same
/// flow and deployment, counts it as held back (the next message says how many). Deletes the
/// changes read. One transaction.
async fn match_events<D: Dialect>(
    conn: &mut D::Connection,
    order: &MatchOrder,
) -> Result<Matched, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new(
        "SELECT seq, run_id, state, attempt, message FROM alert_events ORDER BY seq LIMIT ",
    );
    q.bind(i64::from(order.limit)).push(D::SKIP_LOCKED);
    let events = D::fetch_all(&mut tx, &mut q)
        .await?
        .iter()
        .map(|row| {
            let c = Columns::<D>(row);
            Ok((
                c.get::<i64>("seq")?,
                c.get::<Uuid>("run_id")?,
                parse_state(&c.get::<String>("state")?)?,
                c.get::<i64>("attempt")?,
                c.get::<Option<String>>("message")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut matched = Matched::default();
    if events.is_empty() {
        return Ok(matched);
    }
    let rules = rules_tx::<D>(&mut tx).await?;
    for (_, run_id, state, attempt, message) in &events {
        let wanted: Vec<&StoredRule> = rules
            .iter()
            .filter(|r| r.spec.enabled && r.spec.states.contains(state))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let Some(run) = run_facts::<D>(&mut tx, *run_id).await? else {
            continue;
        };
        for rule in wanted
            .into_iter()
            .filter(|r| matches(&r.spec, &run, *state))
        {
            let scope = format!(
                "{}\u{1f}{}",
                run.name,
                run.deployment.as_deref().unwrap_or("")
            );
            let quiet = rule.spec.quiet().unwrap_or_default();
            let Some(held_back) =
                pass_quiet::<D>(&mut tx, rule.id, &scope, order.now, quiet).await?
            else {
                matched.suppressed += 1;
                continue;
            };
            let mut alert = Alert::run(*run_id, RunKind::Flow, run.name.clone());
            // As the run's own process writes it (`flowkit::notify`): a flow run is its own
            // flow run, of its own flow.
            alert.task_key = run.task_key.clone();
            alert.flow_run_id = Some(*run_id);
            alert.flow_name = Some(run.name.clone());
            alert.parent_run_id = run.parent_run_id;
            alert.state = Some(AlertState {
                kind: *state,
                message: message.clone(),
            });
            alert.attempt = u32::try_from(*attempt).unwrap_or(1);
            alert.elapsed_ms =
                u64::try_from((run.state_ts - run.created).num_milliseconds()).unwrap_or(0);
            alert.url = Some(flowkit_wire::links::run_page(&order.base_url, *run_id));
            alert.deployment = run.deployment.clone();
            alert.rule = Some(rule.spec.name.clone());
            alert.at = Some(order.now);
            alert.suppressed = held_back;
            matched.deliveries += create_deliveries::<D>(&mut tx, rule, &alert, order.now).await?;
        }
    }
    let mut q = QueryBuilder::new("DELETE FROM alert_events WHERE seq IN (");
    for (i, (seq, ..)) in events.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(*seq);
    }
    q.push(")");
    D::execute_once(&mut tx, &mut q).await?;
    matched.events = events.len() as u64;
    tx.commit().await?;
    Ok(matched)
}

async fn run_facts<D: Dialect>(
    tx: &mut D::Connection,
    run_id: Uuid,
) -> Result<Option<RunFacts>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT name, task_key, deployment, {}, created, state_ts, parent_run_id FROM runs \
         WHERE id = ",
        D::json_text("tags")
    ));
    q.bind(run_id);
    let Some(row) = D::fetch_optional(tx, &mut q).await? else {
        return Ok(None);
    };
    let c = Columns::<D>(&row);
    Ok(Some(RunFacts {
        name: c.get("name")?,
        task_key: c.get("task_key")?,
        deployment: c.get("deployment")?,
        tags: c.json("tags")?,
        created: c.instant("created")?,
        state_ts: c.instant("state_ts")?,
        parent_run_id: c.get("parent_run_id")?,
    }))
}

/// The quiet period of (`rule`, `scope`) at `now`: `None` when a message went out less than
/// `quiet` ago (this one is counted as held back); otherwise how many were held back since
/// the last one (and the period starts again now).
async fn pass_quiet<D: Dialect>(
    tx: &mut D::Connection,
    rule: Uuid,
    scope: &str,
    now: DateTime<Utc>,
    quiet: std::time::Duration,
) -> Result<Option<u64>, StoreError> {
    let mut q = QueryBuilder::new("SELECT last_sent, suppressed FROM alert_quiet WHERE rule_id = ");
    q.bind(rule).push(" AND scope = ").bind(D::text(scope));
    let row = D::fetch_optional(tx, &mut q).await?;
    let last = row
        .as_ref()
        .map(|row| {
            let c = Columns::<D>(row);
            Ok::<_, StoreError>((c.instant("last_sent")?, c.get::<i64>("suppressed")?))
        })
        .transpose()?;
    let quiet = chrono::Duration::from_std(quiet).unwrap_or(chrono::Duration::MAX);
    if let Some((last_sent, _)) = last
        && now < last_sent + quiet
    {
        let mut q = QueryBuilder::new(
            "UPDATE alert_quiet SET suppressed = suppressed + 1 WHERE rule_id = ",
        );
        q.bind(rule).push(" AND scope = ").bind(D::text(scope));
        D::execute(tx, &mut q).await?;
        return Ok(None);
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO alert_quiet (rule_id, scope, last_sent, suppressed) VALUES (",
    );
    q.bind(rule)
        .push(", ")
        .bind(D::text(scope))
        .push(", ")
        .bind_instant(now)
        .push(", 0) ON CONFLICT (rule_id, scope) DO UPDATE SET last_sent = excluded.last_sent, suppressed = 0");
    D::execute(tx, &mut q).await?;
    Ok(Some(last.map_or(0, |(_, n)| u64::try_from(n).unwrap_or(0))))
}

/// One pending delivery of `alert` per target of `rule`, due `now`.
async fn create_deliveries<D: Dialect>(
    tx: &mut D::Connection,
    rule: &StoredRule,
    alert: &Alert,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut created = 0;
    let targets = [
        (TargetKind::Webhook, rule.spec.webhook.is_some()),
        (TargetKind::Slack, rule.spec.slack.is_some()),
    ];
    for (target, _) in targets.into_iter().filter(|(_, set)| *set) {
        let mut q = QueryBuilder::new(
            "INSERT INTO alert_deliveries (id, rule_id, run_id, state, target, status, alert, \
             created, next_attempt, attempt_count) VALUES (",
        );
        q.bind(Uuid::now_v7())
            .push(", ")
            .bind(rule.id)
            .push(", ")
            .bind(alert.run_id)
            .push(", ")
            .bind(alert.state.as_ref().map(|s| s.kind.as_str().to_string()))
            .push(", ")
            .bind(target.as_str().to_string())
            .push(", 'pending', ");
        D::push_json(&mut q, json_string(alert)?);
        q.push(", ")
            .bind_instant(now)
            .push(", ")
            .bind_instant(now)
            .push(", 0)");
        D::execute(tx, &mut q).await?;
        created += 1;
    }
    Ok(created)
}

/// For every enabled rule with `worker_absent_for`: when the workers it watches (of its deployment,
/// of its flow, or every worker) were last seen that long before `now`, creates its
/// deliveries — once per absence (the absence is known by its `last_seen`). Rules whose
/// workers were never seen fire nothing.
async fn notify_absences<D: Dialect>(
    conn: &mut D::Connection,
    now: DateTime<Utc>,
) -> Result<Matched, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut matched = Matched::default();
    let rules = rules_tx::<D>(&mut tx).await?;
    for rule in rules.iter().filter(|r| r.spec.enabled) {
        let Some(absent_for) = rule.spec.absent_for() else {
            continue;
        };
        let (mut q, scope) = match (&rule.spec.deployment, &rule.spec.flow) {
            (Some(deployment), _) => {
                let (flow, name) = deployment.split_once('/').unwrap_or((deployment, ""));
                let mut q = QueryBuilder::new(
                    "SELECT MAX(last_seen) AS seen FROM worker_deployments WHERE flow = ",
                );
                q.bind(D::text(flow))
                    .push(" AND name = ")
                    .bind(D::text(name));
                (q, format!("deployment `{deployment}`"))
            }
            (None, Some(flow)) => {
                let mut q = QueryBuilder::new(
                    "SELECT MAX(last_seen) AS seen FROM worker_deployments WHERE flow = ",
                );
                q.bind(D::text(flow));
                (q, format!("flow `{flow}`"))
            }
            (None, None) => (
                QueryBuilder::new("SELECT MAX(last_seen) AS seen FROM workers"),
                "any deployment".to_string(),
            ),
        };
        let row = D::fetch_optional(&mut tx, &mut q).await?;
        let Some(last_seen) = row
            .map(|row| Columns::<D>(&row).opt_instant("seen"))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        let absent_for = chrono::Duration::from_std(absent_for).unwrap_or(chrono::Duration::MAX);
        if now < last_seen + absent_for || rule.absence_notified == Some(last_seen) {
            continue;
        }
        let mut alert = Alert::workers_gone(
            scope,
            WorkerAbsence {
                last_seen,
                absent_for_secs: u64::try_from(absent_for.num_seconds()).unwrap_or(0),
            },
        );
        alert.deployment = rule.spec.deployment.clone();
        alert.rule = Some(rule.spec.name.clone());
        alert.at = Some(now);
        matched.deliveries += create_deliveries::<D>(&mut tx, rule, &alert, now).await?;
        let mut q = QueryBuilder::new("UPDATE alert_rules SET absence_notified = ");
        q.bind_instant(last_seen).push(" WHERE id = ").bind(rule.id);
        D::execute(&mut tx, &mut q).await?;
        matched.events += 1;
    }
    tx.commit().await?;
    Ok(matched)
}

/// Claims up to `limit` pending deliveries due at `now`, most overdue first: each one's next
/// attempt moves to `now + lease` (no other replica takes it meanwhile: PostgreSQL skips the
/// rows another transaction locked, SQLite has one writer) and its attempt count goes up by
/// one, which fences what [`record`] writes.
async fn claim<D: Dialect>(
    conn: &mut D::Connection,
    now: DateTime<Utc>,
    limit: u32,
    lease: chrono::Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new(format!(
        "SELECT d.id AS id, d.target AS target, d.attempt_count AS attempt_count, {}, {} \
         FROM alert_deliveries d JOIN alert_rules r ON r.id = d.rule_id \
         WHERE d.status = 'pending' AND d.next_attempt <= ",
        D::json_text("d.alert").replace("AS d.alert", "AS alert"),
        D::json_text("r.spec").replace("AS r.spec", "AS spec"),
    ));
    q.bind_instant(now)
        .push(" ORDER BY d.next_attempt LIMIT ")
        .bind(i64::from(limit));
    if !D::SKIP_LOCKED.is_empty() {
        q.push(" FOR UPDATE OF d SKIP LOCKED");
    }
    let rows = D::fetch_all(&mut tx, &mut q).await?;
    let mut claimed = Vec::new();
    for row in &rows {
        let c = Columns::<D>(row);
        let id: Uuid = c.get("id")?;
        let target = match c.get::<String>("target")?.as_str() {
            "webhook" => TargetKind::Webhook,
            "slack" => TargetKind::Slack,
            other => return Err(corrupt(format!("alert delivery target {other:?}"))),
        };
        let spec: AlertRuleSpec = c.json("spec")?;
        let url = match target {
            TargetKind::Webhook => spec.webhook,
            TargetKind::Slack => spec.slack,
        };
        let attempt = c.get::<i64>("attempt_count")? + 1;
        let mut q = QueryBuilder::new("UPDATE alert_deliveries SET attempt_count = ");
        q.bind(attempt).push(", next_attempt = ");
        q.bind_instant(now + lease).push(" WHERE id = ").bind(id);
        D::execute(&mut tx, &mut q).await?;
        let Some(url) = url else {
            continue;
        };
        claimed.push(Claimed {
            id,
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            target,
            url,
            alert: c.json("alert")?,
        });
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Records one attempt and the delivery's new status — only if the delivery is still at this
/// attempt (a replica whose claim expired and was taken over writes nothing). Returns 1 when
/// written.
async fn record<D: Dialect>(
    conn: &mut D::Connection,
    outcome: &AttemptOutcome,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new("UPDATE alert_deliveries SET status = ");
    q.bind(outcome.status.as_str().to_string())
        .push(", next_attempt = ");
    match outcome.next_attempt {
        Some(at) if outcome.status == DeliveryStatus::Pending => q.bind_instant(at),
        _ => q.push("NULL"),
    };
    q.push(", delivered = ");
    if outcome.status == DeliveryStatus::Delivered {
        q.bind_instant(outcome.at);
    } else {
        q.push("NULL");
    }
    q.push(" WHERE id = ")
        .bind(outcome.id)
        .push(" AND status = 'pending' AND attempt_count = ")
        .bind(i64::from(outcome.attempt));
    let changed = D::rows_affected(&D::execute(&mut tx, &mut q).await?);
    if changed == 0 {
        return Ok(0);
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO alert_attempts (delivery_id, n, at, status_code, error) VALUES (",
    );
    q.bind(outcome.id)
        .push(", ")
        .bind(i64::from(outcome.attempt))
        .push(", ")
        .bind_instant(outcome.at)
        .push(", ")
        .bind(outcome.status_code.map(i64::from))
        .push(", ")
        .bind(outcome.error.clone())
        .push(") ON CONFLICT (delivery_id, n) DO NOTHING");
    D::execute(&mut tx, &mut q).await?;
    tx.commit().await?;
    Ok(1)
}

/// Deletes up to `limit` finished (delivered or failed) deliveries created before `before`,
/// with their attempts; returns how many.
async fn prune<D: Dialect>(
    conn: &mut D::Connection,
    before: DateTime<Utc>,
    limit: u32,
) -> Result<u64, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut q = QueryBuilder::new(
        "SELECT id FROM alert_deliveries WHERE status <> 'pending' AND created < ",
    );
    q.bind_instant(before)
        .push(" ORDER BY created LIMIT ")
        .bind(i64::from(limit));
    let ids = D::fetch_all(&mut tx, &mut q)
        .await?
        .iter()
        .map(|row| Columns::<D>(row).get::<Uuid>("id"))
        .collect::<Result<Vec<_>, StoreError>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    for (table, column) in [
        ("alert_attempts", "delivery_id"),
        ("alert_deliveries", "id"),
    ] {
        let mut q = QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(*id);
        }
        q.push(")");
        D::execute_once(&mut tx, &mut q).await?;
    }
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// A page of a rule's deliveries, newest first, keyset-paginated on (created, id) after
/// `after`; with their latest [`MAX_ATTEMPTS_SHOWN`] attempts each. Returns `limit + 1` rows
/// at most (the caller knows from the extra one that there is a next page).
pub(crate) async fn deliveries<D: Dialect>(
    pool: &Pool<D>,
    rule_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut q = QueryBuilder::new(format!(
        "SELECT id, rule_id, run_id, state, target, status, {}, created, next_attempt, \
         delivered, attempt_count FROM alert_deliveries WHERE rule_id = ",
        D::json_text("alert")
    ));
    q.bind(rule_id);
    if let Some((created, id)) = after {
        q.push(" AND (created < ")
            .bind_instant(created)
            .push(" OR (created = ")
            .bind_instant(created)
            .push(" AND id < ")
            .bind(id)
            .push("))");
    }
    q.push(" ORDER BY created DESC, id DESC LIMIT ")
        .bind(i64::from(limit) + 1);
    let rows = D::fetch_all(&mut conn, &mut q).await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let c = Columns::<D>(row);
        let state: Option<String> = c.get("state")?;
        found.push(Delivery {
            id: c.get("id")?,
            rule_id: c.get("rule_id")?,
            run_id: c.get("run_id")?,
            state: state.as_deref().map(parse_state).transpose()?,
            target: match c.get::<String>("target")?.as_str() {
                "slack" => TargetKind::Slack,
                _ => TargetKind::Webhook,
            },
            status: match c.get::<String>("status")?.as_str() {
                "delivered" => DeliveryStatus::Delivered,
                "failed" => DeliveryStatus::Failed,
                _ => DeliveryStatus::Pending,
            },
            created: c.instant("created")?,
            next_attempt: c.opt_instant("next_attempt")?,
            delivered: c.opt_instant("delivered")?,
            attempt_count: u32::try_from(c.get::<i64>("attempt_count")?).unwrap_or(0),
            attempts: Vec::new(),
            alert: c.json("alert")?,
        });
    }
    if found.is_empty() {
        return Ok(found);
    }
    let mut q = QueryBuilder::new(
        "SELECT delivery_id, n, at, status_code, error FROM alert_attempts WHERE delivery_id IN (",
    );
    for (i, d) in found.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(d.id);
    }
    q.push(") ORDER BY delivery_id, n");
    let mut attempts: HashMap<Uuid, Vec<DeliveryAttempt>> = HashMap::new();
    for row in D::fetch_all(&mut conn, &mut q).await? {
        let c = Columns::<D>(&row);
        attempts
            .entry(c.get("delivery_id")?)
            .or_default()
            .push(DeliveryAttempt {
                at: c.instant("at")?,
                status_code: c
                    .get::<Option<i64>>("status_code")?
                    .and_then(|s| u16::try_from(s).ok()),
                error: c.get("error")?,
            });
    }
    for d in &mut found {
        let mut mine = attempts.remove(&d.id).unwrap_or_default();
        let extra = mine.len().saturating_sub(MAX_ATTEMPTS_SHOWN);
        mine.drain(..extra);
        d.attempts = mine;
    }
    Ok(found)
}

impl super::Store {
    /// Runs a write of the alerts' tables like every write (SQLite: on its writer).
    pub(crate) async fn alert_write(&self, task: AlertWrite) -> Result<AlertWritten, StoreError> {
        let written = match &self.db {
            #[cfg(feature = "sqlite")]
            super::Db::Sqlite(b) => {
                b.maintain(super::queries::Maintenance::Alerts(Box::new(task)))
                    .await?
            }
            #[cfg(feature = "postgres")]
            super::Db::Postgres(b) => {
                b.maintain(super::queries::Maintenance::Alerts(Box::new(task)))
                    .await?
            }
        };
        match written {
            super::queries::Written::Alerts(done) => Ok(done),
            other => Err(super::unexpected(other)),
        }
    }

    /// Stores a rule; `false` when [`MAX_RULES`] are stored already.
    pub async fn create_alert_rule(&self, rule: StoredRule) -> Result<bool, StoreError> {
        match self
            .alert_write(AlertWrite::CreateRule(Box::new(rule)))
            .await?
        {
            AlertWritten::Count(n) => Ok(n > 0),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Deletes a rule with its deliveries; `false` when there was none.
    pub async fn delete_alert_rule(&self, id: Uuid) -> Result<bool, StoreError> {
        match self.alert_write(AlertWrite::DeleteRule(id)).await? {
            AlertWritten::Count(n) => Ok(n > 0),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Replaces rule `id`'s spec (checked by the caller) if it is still `expected` (the spec
    /// the change was made from); `false` when there is no such rule or its spec changed since.
    pub async fn update_alert_rule(
        &self,
        id: Uuid,
        expected: AlertRuleSpec,
        spec: AlertRuleSpec,
    ) -> Result<bool, StoreError> {
        let task = AlertWrite::UpdateRule {
            id,
            expected: Box::new(expected),
            spec: Box::new(spec),
        };
        match self.alert_write(task).await? {
            AlertWritten::Count(n) => Ok(n > 0),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Every rule (at most [`MAX_RULES`]), oldest first.
    pub async fn alert_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            super::Db::Sqlite(b) => rules(b.pool()).await,
            #[cfg(feature = "postgres")]
            super::Db::Postgres(b) => rules(b.pool()).await,
        }
    }

    /// One rule.
    pub async fn alert_rule(&self, id: Uuid) -> Result<Option<StoredRule>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            super::Db::Sqlite(b) => rule(b.pool(), id).await,
            #[cfg(feature = "postgres")]
            super::Db::Postgres(b) => rule(b.pool(), id).await,
        }
    }

    /// A page of a rule's deliveries, newest first, after `after` (the last one's created
    /// and id); `limit + 1` at most.
    pub async fn alert_deliveries(
        &self,
        rule_id: Uuid,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        match &self.db {
            #[cfg(feature = "sqlite")]
            super::Db::Sqlite(b) => deliveries(b.pool(), rule_id, after, limit).await,
            #[cfg(feature = "postgres")]
            super::Db::Postgres(b) => deliveries(b.pool(), rule_id, after, limit).await,
        }
    }

    /// Matches the waiting state changes against the rules (see the module documentation).
    pub async fn match_alerts(&self, order: MatchOrder) -> Result<Matched, StoreError> {
        match self.alert_write(AlertWrite::Match(Box::new(order))).await? {
            AlertWritten::Matched(m) => Ok(m),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Creates the deliveries of worker absences noticed at `now`.
    pub async fn notify_worker_absences(&self, now: DateTime<Utc>) -> Result<Matched, StoreError> {
        match self.alert_write(AlertWrite::Absences { now }).await? {
            AlertWritten::Matched(m) => Ok(m),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Claims up to `limit` due deliveries for one attempt each, keeping other replicas off
    /// them for `lease`.
    pub async fn claim_alert_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: chrono::Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self
            .alert_write(AlertWrite::Claim { now, limit, lease })
            .await?
        {
            AlertWritten::Claimed(c) => Ok(c),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Deletes up to `limit` finished deliveries created before `before`; returns how many.
    pub async fn prune_alert_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        match self
            .alert_write(AlertWrite::Prune { before, limit })
            .await?
        {
            AlertWritten::Count(n) => Ok(n),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Records an attempt; `false` when the delivery moved on meanwhile (nothing written).
    pub async fn record_alert_attempt(&self, outcome: AttemptOutcome) -> Result<bool, StoreError> {
        match self
            .alert_write(AlertWrite::Record(Box::new(outcome)))
            .await?
        {
            AlertWritten::Count(n) => Ok(n > 0),
            other => Err(corrupt(format!("unexpected outcome {other:?}"))),
        }
    }
}
