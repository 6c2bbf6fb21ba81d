//! Deployed runs and their leases, written once for both backends: claims, heartbeats,
//! finishing and releasing a run, the reaper, cancellation and retry, results, and the reads
//! the fencing of ingestion and the deployments' live workers need.
//!
//! Every state the server decides here is a *server state event*: a row of `run_states` with
//! a fresh event id, stamped with the database's clock (and strictly after the run's latest
//! state, so it is the latest whatever the clocks of the clients said), folded into the run's
//! row with `server_state` set (see the fold rule in `store::rows`).
//!
//! Concurrency: on SQLite every write here runs on the single writer, one at a time. On
//! PostgreSQL each is one transaction: a claim (of the group of claims waiting together on
//! this replica, see `store::pg_batch`) locks the `deployments` rows it claims from (so two
//! replicas serialize their concurrency-limit checks of one deployment) and picks its runs
//! with `FOR UPDATE SKIP LOCKED`; the reaper picks expired leases with `SKIP LOCKED` and
//! changes each run only if its token is still the one it read, so two reapers never decide
//! one run twice.

use super::dialect::{Dialect, PushBind, begin_write};
use super::queries::{Columns, push_list, read_all};
use super::rows::{corrupt, group_of, parse_attempt, parse_state};
use super::tag_limits::{Lock, TagSlots};
use super::{
    BulkCancelFilter, ClaimOrder, HeartbeatOutcome, LeaseCall, Reaped, RunAction, StoreError,
    WorkerSeen,
};
use chrono::{DateTime, Utc};
use flowkit_wire::api::workers::{ClaimedRun, LiveWorker, Served};
use flowkit_wire::state::StateType;
use serde_json::{Map, Value};
use sqlx::{Pool, QueryBuilder};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// Expired leases one reaper pass decides (it runs again at once while it finds a full pass).
pub(crate) const REAP_BATCH: i64 = 100;
/// Runs a claim reads beyond the ones it asks for, to skip those over their deployment's
/// limit or of a version the worker does not serve.
const CLAIM_SLACK: i64 = 100;
/// Rows per multi-row statement of the worker's served versions and of a heartbeat's leases.
const CHUNK: usize = 200;
/// Most live workers a deployment's detail lists.
pub(crate) const MAX_LIVE_WORKERS: usize = 100;
/// Most run ids a heartbeat answers in `cancel`.
const MAX_CANCEL: i64 = 10_000;

/// The database's clock (microsecond precision, as stored).
pub(super) async fn db_now<D: Dialect>(
    conn: &mut D::Connection,
) -> Result<DateTime<Utc>, StoreError> {
    let now = match D::NOW_QUERY {
        Some(sql) => {
            let mut q = QueryBuilder::new(sql);
            let row = D::fetch_optional(conn, &mut q)
                .await?
                .ok_or_else(|| corrupt("the database's clock answered nothing".into()))?;
            Columns::<D>(&row).instant("now")?
        }
        None => Utc::now(),
    };
    super::rows::from_micros(now.timestamp_micros())
}

/// `now`, or just after `after` when the run's latest state is not older than `now` (a client
/// clock ahead of the database's): a server state is always the run's latest.
pub(super) fn next_ts(now: DateTime<Utc>, after: DateTime<Utc>) -> DateTime<Utc> {
    if now > after {
        now
    } else {
        after + chrono::Duration::microseconds(1)
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

fn token(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Wakes the waiting claims of every replica at commit (PostgreSQL).
async fn notify_runs<D: Dialect>(conn: &mut D::Connection) -> Result<(), StoreError> {
    if let Some(sql) = D::NOTIFY_RUNS {
        D::fetch_optional(conn, &mut QueryBuilder::new(sql)).await?;
    }
    Ok(())
}

/// The end of the insert of a run's result: a result stored before (an earlier finish whose
/// answer was lost) is replaced.
pub(super) const RESULT_UPSERT: &str = " ON CONFLICT (run_id) DO UPDATE SET \
     result = excluded.result, bytes = excluded.bytes, created = excluded.created";

/// The columns of a run a lease operation decides from.
pub(super) const LEASE_COLUMNS: &str = "id, flow_run_id, kind, state, state_ts, state_event_id, attempt, \
     max_attempts, lease_token, lease_expires, deployment, version, worker";

/// A run as a lease operation sees it.
pub(super) struct LeaseRow {
    pub(super) id: Uuid,
    pub(super) flow_run_id: Option<Uuid>,
    pub(super) kind: String,
    pub(super) state: StateType,
    pub(super) state_ts: DateTime<Utc>,
    pub(super) state_event_id: Uuid,
    pub(super) attempt: u32,
    pub(super) max_attempts: Option<i64>,
    pub(super) lease_token: i64,
    pub(super) lease_expires: Option<DateTime<Utc>>,
    pub(super) deployment: Option<String>,
    pub(super) version: Option<String>,
    pub(super) worker: Option<String>,
}

pub(super) fn lease_row<D: Dialect>(row: &D::Row) -> Result<LeaseRow, StoreError> {
    let c = Columns::<D>(row);
    Ok(LeaseRow {
        id: c.get("id")?,
        flow_run_id: c.get("flow_run_id")?,
        kind: c.get("kind")?,
        state: parse_state(&c.get::<String>("state")?)?,
        state_ts: c.instant("state_ts")?,
        state_event_id: c.get("state_event_id")?,
        attempt: parse_attempt(c.get("attempt")?)?,
        max_attempts: c.get("max_attempts")?,
        lease_token: c.get("lease_token")?,
        lease_expires: c.opt_instant("lease_expires")?,
        deployment: c.get("deployment")?,
        version: c.get("version")?,
        worker: c.get("worker")?,
    })
}

impl LeaseRow {
    pub(super) fn held(&self) -> bool {
        self.lease_expires.is_some()
    }
    pub(super) fn group(&self) -> Uuid {
        group_of(self.id, self.flow_run_id)
    }
}

/// One run, without a lock, with the database's clock (as [`db_now`] reads it) in the same
/// round trip.
async fn read_run_now<D: Dialect>(
    conn: &mut D::Connection,
    id: Uuid,
) -> Result<Option<(DateTime<Utc>, LeaseRow)>, StoreError> {
    let mut q = QueryBuilder::new("SELECT ");
    D::push_now(&mut q);
    q.push(format!(" AS now, {LEASE_COLUMNS} FROM runs WHERE id = "))
        .bind(id);
    let Some(row) = D::fetch_optional(conn, &mut q).await? else {
        return Ok(None);
    };
    let now = Columns::<D>(&row).instant("now")?;
    Ok(Some((
        super::rows::from_micros(now.timestamp_micros())?,
        lease_row::<D>(&row)?,
    )))
}

/// One run, locked until the end of the transaction (PostgreSQL).
async fn lock_run<D: Dialect>(
    conn: &mut D::Connection,
    id: Uuid,
) -> Result<Option<LeaseRow>, StoreError> {
    let mut q = QueryBuilder::new(format!("SELECT {LEASE_COLUMNS} FROM runs WHERE id = "));
    q.bind(id).push(D::FOR_UPDATE);
    let row = D::fetch_optional(conn, &mut q).await?;
    row.as_ref().map(lease_row::<D>).transpose()
}

/// A state the server decides for a run.
struct ServerState {
    state: StateType,
    message: Option<String>,
    attempt: u32,
    ts: DateTime<Utc>,
    event_id: Uuid,
}

impl ServerState {
    fn new(state: StateType, message: String, attempt: u32, ts: DateTime<Utc>) -> ServerState {
        ServerState {
            state,
            message: Some(message),
            attempt,
            ts,
            event_id: Uuid::now_v7(),
        }
    }
}

/// Stores a server state event in the run's history; `false` if an event of that id was
/// stored already.
async fn insert_state<D: Dialect>(
    conn: &mut D::Connection,
    run: &LeaseRow,
    state: &ServerState,
) -> Result<bool, StoreError> {
    let mut q = QueryBuilder::new(INSERT_STATES);
    push_state_row(&mut q, run, state);
    q.push(" ON CONFLICT (event_id) DO NOTHING");
    Ok(D::rows_affected(&D::execute(conn, &mut q).await?) > 0)
}

/// The head of an insert of server state events; rows follow as [`push_state_row`] writes them.
const INSERT_STATES: &str =
    "INSERT INTO run_states (event_id, run_id, group_id, state, message, attempt, ts) VALUES ";

/// Appends one row of [`INSERT_STATES`]: `state` in the history of `run`.
fn push_state_row<D: Dialect>(q: &mut QueryBuilder<D>, run: &LeaseRow, state: &ServerState) {
    q.push("(")
        .bind(state.event_id)
        .push(", ")
        .bind(run.id)
        .push(", ")
        .bind(run.group())
        .push(", ")
        .bind(state.state.as_str().to_string())
        .push(", ")
        .bind(state.message.as_deref().map(D::text))
        .push(", ")
        .bind(i64::from(state.attempt))
        .push(", ")
        .bind_instant(state.ts)
        .push(")");
}

/// Appends `UPDATE runs SET <the state's columns>, server_state = TRUE` (the server decided
/// the state): the caller appends the rest of the `SET` list and the `WHERE`.
fn push_set_state<D: Dialect>(q: &mut QueryBuilder<D>, state: &ServerState) {
    q.push("UPDATE runs SET state = ")
        .bind(state.state.as_str().to_string())
        .push(", state_message = ")
        .bind(state.message.as_deref().map(D::text))
        .push(", state_ts = ")
        .bind_instant(state.ts)
        .push(", state_event_id = ")
        .bind(state.event_id)
        .push(", attempt = ")
        .bind(i64::from(state.attempt))
        .push(", ended = ");
    if state.state.is_final() {
        q.bind_instant(state.ts);
    } else {
        q.push("NULL");
    }
    q.push(", server_state = TRUE");
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// Records that a worker is alive and what it serves (`last_seen` = the database's clock,
/// which it returns: the caller's `now`, read in the same round trip).
async fn touch_worker<D: Dialect>(
    conn: &mut D::Connection,
    worker: &WorkerSeen,
) -> Result<DateTime<Utc>, StoreError> {
    let mut q = QueryBuilder::new("INSERT INTO workers (id, name, started, last_seen) VALUES (");
    q.bind(worker.id)
        .push(", ")
        .bind(D::text(&worker.name))
        .push(", ");
    D::push_now(&mut q);
    q.push(", ");
    D::push_now(&mut q);
    q.push(
        ") ON CONFLICT (id) DO UPDATE SET name = excluded.name, last_seen = excluded.last_seen \
         RETURNING last_seen",
    );
    let row = D::fetch_optional(conn, &mut q)
        .await?
        .ok_or_else(|| corrupt("recording a worker returned nothing".into()))?;
    let now =
        super::rows::from_micros(Columns::<D>(&row).instant("last_seen")?.timestamp_micros())?;
    for chunk in worker.served.chunks(CHUNK) {
        let mut q = QueryBuilder::new(
            "INSERT INTO worker_deployments (worker, flow, name, version, last_seen) VALUES ",
        );
        for (i, served) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(worker.id)
                .push(", ")
                .bind(served.flow.clone())
                .push(", ")
                .bind(served.name.clone())
                .push(", ")
                .bind(D::text(&served.version))
                .push(", ")
                .bind_instant(now)
                .push(")");
        }
        q.push(
            " ON CONFLICT (worker, flow, name, version) DO UPDATE SET last_seen = \
             excluded.last_seen",
        );
        D::execute_once(conn, &mut q).await?;
    }
    Ok(now)
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

/// A served version, as registered.
struct VersionInfo {
    version: String,
    limit: Option<i64>,
    retries: i64,
    registered: DateTime<Utc>,
    id: Uuid,
}

/// A run a claim may take (its parameters are read by the update that takes it, so that the
/// candidates passed over cost no parameters).
struct Candidate {
    run: LeaseRow,
    pinned: bool,
    tags: Vec<String>,
}

/// Claims runs for the workers of `orders`, in one transaction: see
/// [`super::Backend::claim`]. Each order comes with whether to record its worker
/// (`last_seen`, what it serves; see `store::worker_touches`). The orders share the reads
/// (versions, leased counts, candidates) and the writes (one update of the runs taken, one
/// insert of their state events); each is answered, in order, as if the orders had claimed one
/// after the other: the limits count what the earlier ones took.
pub(crate) async fn claim<D: Dialect>(
    conn: &mut D::Connection,
    orders: &[(&ClaimOrder, bool)],
) -> Result<Vec<Vec<ClaimedRun>>, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let mut answers: Vec<Vec<ClaimedRun>> = orders.iter().map(|_| Vec::new()).collect();
    // Every version served, once.
    let mut seen_served: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    let mut served: Vec<&Served> = Vec::new();
    for (order, _) in orders {
        for s in &order.worker.served {
            if seen_served.insert((&s.flow, &s.name, &s.version)) {
                served.push(s);
            }
        }
    }
    // On PostgreSQL the deployments' rows are locked by the read of their served versions when
    // that is one statement (which reads the database's clock too when no worker is recorded):
    // fewer round trips while the lock is held.
    let fused = !D::FOR_UPDATE.is_empty() && served.len() <= CHUNK;
    let mut now = None;
    for (order, touch) in orders {
        if *touch {
            now = Some(touch_worker::<D>(&mut tx, &order.worker).await?);
        }
    }
    if now.is_none() && !fused {
        now = Some(db_now::<D>(&mut tx).await?);
    }
    // The deployments served.
    let deployments: BTreeSet<(&str, &str)> = served
        .iter()
        .map(|s| (s.flow.as_str(), s.name.as_str()))
        .collect();
    if deployments.is_empty() {
        tx.commit().await?;
        return Ok(answers);
    }
    if !D::FOR_UPDATE.is_empty() && !fused {
        // Claims of one deployment take turns from here to commit (on every replica): the
        // limit check below counts what the previous claim leased.
        for chunk in deployments.iter().collect::<Vec<_>>().chunks(CHUNK) {
            let mut q = QueryBuilder::new("SELECT flow FROM deployments WHERE (flow, name) IN (");
            for (i, (flow, name)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(")
                    .bind(flow.to_string())
                    .push(", ")
                    .bind(name.to_string())
                    .push(")");
            }
            q.push(") ORDER BY flow, name").push(D::FOR_UPDATE);
            D::fetch_all(&mut tx, &mut q).await?;
        }
    }
    // The served versions that are registered, newest first per deployment.
    let mut versions: HashMap<String, Vec<VersionInfo>> = HashMap::new();
    for chunk in served.chunks(CHUNK) {
        let mut q = QueryBuilder::new("SELECT ");
        if now.is_none() {
            D::push_now(&mut q);
            q.push(" AS now, ");
        }
        q.push(
            "v.flow, v.name, v.version, v.concurrency_limit, v.retries, v.registered, v.id \
             FROM deployment_versions AS v",
        );
        if fused {
            // Claims of one deployment take turns from here to commit (on every replica): the
            // limit check below counts what the previous claim leased.
            q.push(" JOIN deployments AS d ON d.flow = v.flow AND d.name = v.name");
        }
        q.push(" WHERE (v.flow, v.name, v.version) IN (VALUES ");
        for (i, served) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(served.flow.clone())
                .push(", ")
                .bind(served.name.clone())
                .push(", ")
                .bind(D::text(&served.version))
                .push(")");
        }
        q.push(")");
        if fused {
            q.push(" ORDER BY v.flow, v.name")
                .push(D::FOR_UPDATE)
                .push(" OF d");
        }
        for row in D::fetch_all(&mut tx, &mut q).await? {
            let c = Columns::<D>(&row);
            if now.is_none() {
                now = Some(super::rows::from_micros(
                    c.instant("now")?.timestamp_micros(),
                )?);
            }
            let key = format!("{}/{}", c.get::<String>("flow")?, c.get::<String>("name")?);
            versions.entry(key).or_default().push(VersionInfo {
                version: c.get("version")?,
                limit: c.get("concurrency_limit")?,
                retries: c.get("retries")?,
                registered: c.instant("registered")?,
                id: c.get("id")?,
            });
        }
    }
    for list in versions.values_mut() {
        list.sort_by_key(|v| std::cmp::Reverse((v.registered, v.id)));
        list.dedup_by(|a, b| a.version == b.version);
    }
    if versions.is_empty() {
        tx.commit().await?;
        return Ok(answers);
    }
    let now = match now {
        Some(now) => now,
        None => db_now::<D>(&mut tx).await?,
    };
    let keys: Vec<String> = versions.keys().cloned().collect();
    let wanted: i64 = orders
        .iter()
        .map(|(order, _)| i64::from(order.max_runs))
        .sum();
    let window = wanted + CLAIM_SLACK;
    // Leased runs per deployment: what the limits count (a lease counts until it ends: finished,
    // released, or decided by the reaper); and the leased runs of limited backfills (see
    // `crate::backfill`): a backfill at its `max_parallel` has its other runs left out of the
    // search.
    let mut leased: HashMap<String, i64> = HashMap::new();
    let mut backfills: HashMap<String, (u32, u32)> = HashMap::new();
    // When no served version has a limit, the leased runs are counted only if a candidate
    // belongs to a limited backfill: otherwise nothing they would decide applies (every
    // deployment is open, and a backfill exclusion would leave out none of the runs found).
    let unlimited = versions.values().flatten().all(|v| v.limit.is_none());
    let all: Vec<&String> = keys.iter().collect();
    let mut open: Vec<&String> = all.clone();
    let mut full: Vec<String> = Vec::new();
    let mut found = None;
    if unlimited {
        let candidates = read_candidates::<D>(&mut tx, &all, &versions, &[], now, window).await?;
        let limited = |c: &Candidate| {
            c.tags
                .iter()
                .any(|tag| crate::backfill::limit_of(tag).is_some())
        };
        if !candidates.iter().any(limited) {
            found = Some(candidates);
        }
    }
    let mut candidates = match found {
        Some(candidates) => candidates,
        None => {
            count_leased::<D>(&mut tx, &keys, &mut leased, &mut backfills).await?;
            // Deployments whose every served version is at its limit are left out of the
            // search.
            open.retain(|key| {
                let n = leased.get(*key).copied().unwrap_or(0);
                versions[*key]
                    .iter()
                    .any(|v| v.limit.is_none_or(|limit| n < limit))
            });
            if open.is_empty() {
                tx.commit().await?;
                return Ok(answers);
            }
            full = backfills
                .iter()
                .filter(|(_, (leased, limit))| leased >= limit)
                .map(|(tag, _)| tag.clone())
                .collect();
            let full: Vec<&String> = full.iter().collect();
            read_candidates::<D>(&mut tx, &open, &versions, &full, now, window).await?
        }
    };
    // Tag limits (`super::tag_limits`): the limits of the candidates' tags, their leased runs
    // counted. When the oldest candidates carry a tag at its limit, the search is made again
    // without that tag's runs, so that they do not hide the runs behind them.
    let mut tag_slots = TagSlots::default();
    if candidates.iter().any(|c| !c.tags.is_empty()) {
        let tags = candidates.iter().flat_map(|c| &c.tags);
        tag_slots.look_up::<D>(&mut tx, tags, Lock::Wait).await?;
        let at_limit = tag_slots.full();
        if !at_limit.is_empty()
            && candidates
                .iter()
                .any(|c| c.tags.iter().any(|t| at_limit.contains(t)))
        {
            full.extend(at_limit);
            let full: Vec<&String> = full.iter().collect();
            candidates =
                read_candidates::<D>(&mut tx, &open, &versions, &full, now, window).await?;
            let tags = candidates.iter().flat_map(|c| &c.tags);
            tag_slots.look_up::<D>(&mut tx, tags, Lock::Skip).await?;
        }
    }
    // The runs taken, decided in memory (limits counted as they are taken, order after order),
    // then written with one update of their rows and one insert of their state events.
    let mut taken: Vec<Taken> = Vec::new();
    let mut gone: HashSet<Uuid> = HashSet::new();
    for (index, (order, _)) in orders.iter().enumerate() {
        let message = format!("claimed by worker {}", order.worker.name);
        let expires = lease_end(now, order.lease);
        // The versions this worker serves, by deployment.
        let mut mine: HashMap<String, HashSet<&str>> = HashMap::new();
        for s in &order.worker.served {
            mine.entry(format!("{}/{}", s.flow, s.name))
                .or_default()
                .insert(&s.version);
        }
        let mut count_taken = 0;
        for candidate in &candidates {
            if count_taken >= order.max_runs as usize {
                break;
            }
            let run = &candidate.run;
            if gone.contains(&run.id) {
                continue;
            }
            let Some(key) = run.deployment.as_deref() else {
                continue;
            };
            let Some(registered) = versions.get(key) else {
                continue;
            };
            // The versions of this deployment this worker serves, newest first.
            let Some(versions_mine) = mine.get(key) else {
                continue;
            };
            let mut served_here = registered
                .iter()
                .filter(|v| versions_mine.contains(v.version.as_str()));
            let version = if candidate.pinned {
                served_here.find(|v| Some(&v.version) == run.version.as_ref())
            } else {
                served_here.next()
            };
            let Some(version) = version else { continue };
            let count = leased.entry(key.to_string()).or_insert(0);
            if version.limit.is_some_and(|limit| *count >= limit) {
                continue;
            }
            if tag_slots.any_limited() && !tag_slots.admits(&candidate.tags) {
                continue;
            }
            let backfill = candidate
                .tags
                .iter()
                .find_map(|tag| crate::backfill::limit_of(tag).map(|(_, limit)| (tag, limit)));
            if let Some((tag, limit)) = backfill {
                let (n, _) = backfills.entry(tag.clone()).or_insert((0, limit));
                if *n >= limit {
                    continue;
                }
                *n += 1;
            }
            tag_slots.take(&candidate.tags);
            *count += 1;
            count_taken += 1;
            gone.insert(run.id);
            let state = ServerState::new(
                StateType::Pending,
                message.clone(),
                run.attempt,
                next_ts(now, run.state_ts),
            );
            taken.push(Taken {
                order: index,
                worker: &order.worker,
                message: message.clone(),
                expires,
                candidate,
                version,
                state,
            });
        }
    }
    for chunk in taken.chunks(CHUNK) {
        // On PostgreSQL the update inserts the `Pending` state events of the runs it leased
        // (one statement); on SQLite they follow in a second one.
        let fused = !D::FOR_UPDATE.is_empty();
        let mut leased = lease_taken::<D>(&mut tx, chunk, fused).await?;
        let mut q = QueryBuilder::new(INSERT_STATES);
        let mut any = false;
        for taken in chunk {
            let (candidate, version) = (taken.candidate, taken.version);
            let run = &candidate.run;
            // Not `Scheduled` or `Late` any more (cannot happen under the writer or the row
            // locks): not claimed.
            let Some(Leased {
                token: new_token,
                max_attempts,
                parameters,
            }) = leased.remove(&run.id)
            else {
                continue;
            };
            if !fused {
                if any {
                    q.push(", ");
                }
                any = true;
                push_state_row(&mut q, run, &taken.state);
            }
            let key = run.deployment.as_deref().unwrap_or_default();
            let (flow, name) = key.split_once('/').unwrap_or((key, ""));
            answers[taken.order].push(ClaimedRun {
                run_id: run.id,
                flow: flow.to_string(),
                name: name.to_string(),
                version: version.version.clone(),
                parameters: parameters.unwrap_or_default(),
                attempt: run.attempt,
                max_attempts: max_attempts
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or_else(|| u32::try_from(version.retries + 1).unwrap_or(1))
                    .max(run.attempt),
                token: token(new_token),
                tags: candidate.tags.clone(),
            });
        }
        if any {
            q.push(" ON CONFLICT (event_id) DO NOTHING");
            D::execute_once(&mut tx, &mut q).await?;
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// Counts the leased runs of the deployments `keys` into `leased`, and those of limited
/// backfills (by tag, with the backfill's `max_parallel`) into `backfills`, in one statement.
async fn count_leased<D: Dialect>(
    tx: &mut D::Connection,
    keys: &[String],
    leased: &mut HashMap<String, i64>,
    backfills: &mut HashMap<String, (u32, u32)>,
) -> Result<(), StoreError> {
    let mut q = QueryBuilder::new(
        "SELECT deployment, count(*) AS n, NULL AS tags FROM runs \
         WHERE lease_expires IS NOT NULL AND deployment IN (",
    );
    push_list(&mut q, keys.iter().cloned());
    q.push(format!(
        ") GROUP BY deployment UNION ALL SELECT deployment, 0 AS n, {} FROM runs \
         WHERE lease_expires IS NOT NULL AND deployment IN (",
        D::json_text("tags")
    ));
    push_list(&mut q, keys.iter().cloned());
    q.push(")");
    D::push_has_tag(&mut q, crate::backfill::TAG);
    for row in D::fetch_all(tx, &mut q).await? {
        let c = Columns::<D>(&row);
        match c.opt_json::<Vec<String>>("tags")? {
            None => {
                leased.insert(c.get("deployment")?, c.get("n")?);
            }
            Some(tags) => {
                for tag in tags {
                    if let Some((_, limit)) = crate::backfill::limit_of(&tag) {
                        backfills.entry(tag).or_insert((0, limit)).0 += 1;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The oldest claimable runs (at most `window`, locked on PostgreSQL, skipping those locked
/// by others) of the deployments `open`, of a version served when pinned, without the runs
/// tagged with one of `full` (limited backfills at their `max_parallel`).
async fn read_candidates<D: Dialect>(
    tx: &mut D::Connection,
    open: &[&String],
    versions: &HashMap<String, Vec<VersionInfo>>,
    full: &[&String],
    now: DateTime<Utc>,
    window: i64,
) -> Result<Vec<Candidate>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {LEASE_COLUMNS}, CAST(CASE WHEN version_pinned THEN 1 ELSE 0 END AS BIGINT) \
         AS pinned, {} FROM runs WHERE kind = 'flow' AND state IN ('Scheduled', 'Late') \
         AND deployment IN (",
        D::json_text("tags"),
    ));
    push_list(&mut q, open.iter().map(|key| (*key).clone()));
    q.push(") AND (scheduled_for IS NULL OR scheduled_for <= ")
        .bind_instant(now)
        .push(") AND (NOT version_pinned OR (deployment, version) IN (VALUES ");
    let mut first = true;
    for key in open {
        for v in &versions[*key] {
            if !first {
                q.push(", ");
            }
            first = false;
            q.push("(")
                .bind((*key).clone())
                .push(", ")
                .bind(v.version.clone())
                .push(")");
        }
    }
    q.push("))");
    for tag in full {
        D::push_lacks_tag(&mut q, tag);
    }
    q.push(" ORDER BY created, id LIMIT ")
        .bind(window)
        .push(D::SKIP_LOCKED);
    read_all_tx::<D, _>(tx, &mut q, |row| {
        let c = Columns::<D>(row);
        Ok(Candidate {
            run: lease_row::<D>(row)?,
            pinned: c.get::<i64>("pinned")? != 0,
            tags: c.json("tags")?,
        })
    })
    .await
}

/// A run a claim of a group takes.
struct Taken<'a> {
    /// The claim's index in its group.
    order: usize,
    worker: &'a super::WorkerSeen,
    /// The `Pending` state's message.
    message: String,
    /// When the lease ends.
    expires: DateTime<Utc>,
    candidate: &'a Candidate,
    version: &'a VersionInfo,
    state: ServerState,
}

/// What the update of a claim answers for a run it leased.
struct Leased {
    /// The new fencing token.
    token: i64,
    max_attempts: Option<i64>,
    parameters: Option<Map<String, Value>>,
}

/// Leases the runs of `chunk` to their claiming workers with one update (each `Pending` with
/// its state's timestamp and event id, a new token, the version chosen), if still `Scheduled`
/// or `Late`: their new tokens, `max_attempts` and parameters, by run id. With `with_states`
/// (PostgreSQL) the same statement inserts the `Pending` state events of the runs it leased.
async fn lease_taken<D: Dialect>(
    tx: &mut D::Connection,
    chunk: &[Taken<'_>],
    with_states: bool,
) -> Result<HashMap<Uuid, Leased>, StoreError> {
    // The CTE's column names differ from `runs`' so that the `RETURNING` list is unambiguous.
    let mut q = QueryBuilder::new(
        "WITH v (v_run, v_ts, v_event, v_version, v_worker, v_name, v_expires, v_message, \
         v_group, v_attempt) AS (VALUES ",
    );
    for (i, taken) in chunk.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.push("(")
            .bind(taken.candidate.run.id)
            .push(", ")
            .bind_instant(taken.state.ts)
            .push(", ")
            .bind(taken.state.event_id)
            .push(", ")
            .bind(taken.version.version.clone())
            .push(", ")
            .bind(Some(taken.worker.id))
            .push(", ")
            .bind(Some(D::text(&taken.worker.name)))
            .push(", ")
            .bind_instant(taken.expires)
            .push(", ")
            .bind(Some(D::text(&taken.message)))
            .push(", ")
            .bind(taken.candidate.run.group())
            .push(", ")
            .bind(i64::from(taken.state.attempt))
            .push(")");
    }
    let update = "UPDATE runs SET state = 'Pending', state_message = v.v_message, \
         state_ts = v.v_ts, state_event_id = v.v_event, ended = NULL, server_state = TRUE, \
         lease_token = lease_token + 1, lease_worker = v.v_worker, lease_expires = v.v_expires, \
         worker = v.v_name, version = v.v_version FROM v WHERE runs.id = v.v_run \
         AND runs.state IN ('Scheduled', 'Late') RETURNING id, lease_token, max_attempts, ";
    let parameters = D::json_text("parameters");
    if with_states {
        q.push(format!(
            "), u AS ({update}{parameters}, v.v_event, v.v_group, v.v_message, v.v_attempt, \
             v.v_ts), s AS (INSERT INTO run_states (event_id, run_id, group_id, state, message, \
             attempt, ts) SELECT v_event, id, v_group, 'Pending', v_message, v_attempt, v_ts \
             FROM u ON CONFLICT (event_id) DO NOTHING) \
             SELECT id, lease_token, max_attempts, parameters FROM u"
        ));
    } else {
        q.push(format!(") {update}{parameters}"));
    }
    let mut leased = HashMap::with_capacity(chunk.len());
    for row in D::fetch_all(tx, &mut q).await? {
        let c = Columns::<D>(&row);
        leased.insert(
            c.get::<Uuid>("id")?,
            Leased {
                token: c.get("lease_token")?,
                max_attempts: c.get("max_attempts")?,
                parameters: c.opt_json("parameters")?,
            },
        );
    }
    Ok(leased)
}

/// Whether a run of one of the deployments `served` waits for a worker: see
/// [`super::Backend::claimable`].
pub(crate) async fn claimable<D: Dialect>(
    pool: &Pool<D>,
    served: &[Served],
) -> Result<bool, StoreError> {
    let keys: BTreeSet<String> = served
        .iter()
        .map(|s| format!("{}/{}", s.flow, s.name))
        .collect();
    if keys.is_empty() {
        return Ok(false);
    }
    let mut q = QueryBuilder::new(
        "SELECT 1 AS one FROM runs WHERE kind = 'flow' AND state IN ('Scheduled', 'Late') \
         AND deployment IN (",
    );
    push_list(&mut q, keys);
    q.push(") AND (scheduled_for IS NULL OR scheduled_for <= ");
    D::push_now(&mut q);
    q.push(") LIMIT 1");
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    Ok(row.is_some())
}

/// Every row of `q` in a transaction, read with `read`.
async fn read_all_tx<D: Dialect, T>(
    conn: &mut D::Connection,
    q: &mut QueryBuilder<D>,
    read: impl Fn(&D::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    D::fetch_all(conn, q).await?.iter().map(read).collect()
}

// ---------------------------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------------------------

/// A heartbeat, in one transaction: see [`super::Backend::heartbeat`].
pub(crate) async fn heartbeat<D: Dialect>(
    conn: &mut D::Connection,
    worker: &WorkerSeen,
    leases: &[(Uuid, u64)],
    lease: Duration,
) -> Result<HeartbeatOutcome, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = touch_worker::<D>(&mut tx, worker).await?;
    let expires = lease_end(now, lease);
    let mut held = HashSet::new();
    // In id order, and locked in id order before the update (PostgreSQL): ingestion upserts
    // runs in id order too, so the two never wait for each other in a cycle.
    let mut leases = leases.to_vec();
    leases.sort_unstable();
    for chunk in leases.chunks(CHUNK) {
        if !D::FOR_UPDATE.is_empty() {
            let mut q = QueryBuilder::new("SELECT id FROM runs WHERE id IN (");
            for (i, (id, _)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(*id);
            }
            q.push(") ORDER BY id").push(D::FOR_UPDATE);
            D::fetch_all(&mut tx, &mut q).await?;
        }
        let mut q = QueryBuilder::new("UPDATE runs SET lease_expires = ");
        q.bind_instant(expires)
            .push(" WHERE lease_worker = ")
            .bind(Some(worker.id))
            .push(" AND lease_expires IS NOT NULL AND (id, lease_token) IN (VALUES ");
        for (i, (id, token)) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(")
                .bind(*id)
                .push(", ")
                .bind(i64::try_from(*token).unwrap_or(-1))
                .push(")");
        }
        q.push(") RETURNING id");
        for row in D::fetch_all(&mut tx, &mut q).await? {
            held.insert(Columns::<D>(&row).get::<Uuid>("id")?);
        }
    }
    let mut q = QueryBuilder::new("SELECT id FROM runs WHERE lease_worker = ");
    q.bind(Some(worker.id))
        .push(" AND lease_expires IS NOT NULL AND state = 'Cancelling' LIMIT ")
        .bind(MAX_CANCEL);
    let cancel = read_all_tx::<D, _>(&mut tx, &mut q, |row| Columns::<D>(row).get("id")).await?;
    tx.commit().await?;
    let mut lost: Vec<Uuid> = leases
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains(id))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    Ok(HeartbeatOutcome { cancel, lost })
}

// ---------------------------------------------------------------------------------------------
// Finishing and releasing
// ---------------------------------------------------------------------------------------------

/// Whether `token` is the run's current lease.
pub(super) fn check_lease(run: &LeaseRow, token: u64) -> Result<(), LeaseCall> {
    if run.held() && i64::try_from(token).is_ok_and(|t| t == run.lease_token) {
        Ok(())
    } else {
        Err(LeaseCall::Stale {
            current: self::token(run.lease_token),
            held: run.held(),
            state: run.state,
        })
    }
}

/// A run's final state event from its worker, in one transaction: see
/// [`super::Backend::finish`].
pub(crate) async fn finish<D: Dialect>(
    conn: &mut D::Connection,
    finished: &super::Finished,
) -> Result<LeaseCall, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    // The final event's row is taken before the run's: ingestion inserts a run's state events
    // before it upserts the run, so taking them in the same order means the worker's reporter
    // delivering this same event at the same moment waits for the finish (or the finish for
    // it) instead of deadlocking with it (PostgreSQL).
    let Some((now, seen)) = read_run_now::<D>(&mut tx, finished.run_id).await? else {
        tx.rollback().await?;
        return Ok(LeaseCall::NotFound);
    };
    // The event's time: after the run's latest state. If the reporter delivered the event
    // first (and the row folded it), the lease still ends here, with the result, and the event
    // takes the server's time.
    let ts_after = |run: &LeaseRow| {
        let after = if run.state_event_id == finished.event_id {
            now
        } else {
            run.state_ts
        };
        next_ts(now, after).max(finished.timestamp)
    };
    let mut state = ServerState {
        state: finished.state,
        message: finished.message.clone(),
        attempt: finished.attempt,
        ts: ts_after(&seen),
        event_id: finished.event_id,
    };
    let inserted = insert_state::<D>(&mut tx, &seen, &state).await?;
    let Some(run) = lock_run::<D>(&mut tx, finished.run_id).await? else {
        tx.rollback().await?;
        return Ok(LeaseCall::NotFound);
    };
    if run.state_event_id == finished.event_id && !run.held() {
        // The same finish again (its answer was lost): done already.
        tx.rollback().await?;
        return Ok(LeaseCall::Done);
    }
    if let Err(stale) = check_lease(&run, finished.token) {
        tx.rollback().await?;
        return Ok(stale);
    }
    // The row as locked decides the time (it may have changed since it was read): the stored
    // event is moved to it unless it was inserted with it.
    let ts = ts_after(&run);
    if !inserted || ts != state.ts {
        state.ts = ts;
        let mut q = QueryBuilder::new("UPDATE run_states SET ts = ");
        q.bind_instant(state.ts)
            .push(" WHERE event_id = ")
            .bind(state.event_id);
        D::execute(&mut tx, &mut q).await?;
    }
    let mut q = QueryBuilder::new("");
    // The server's verdict: a client event coming later never moves it (see `store::rows`).
    push_set_state(&mut q, &state);
    q.push(", lease_expires = NULL, lease_worker = NULL WHERE id = ")
        .bind(run.id);
    D::execute(&mut tx, &mut q).await?;
    if let Some(result) = &finished.result {
        let mut q =
            QueryBuilder::new("INSERT INTO run_results (run_id, result, bytes, created) VALUES (");
        q.bind(run.id)
            .push(", ")
            .bind(result.clone().into_bytes())
            .push(", ")
            .bind(i64::try_from(result.len()).unwrap_or(i64::MAX))
            .push(", ")
            .bind_instant(now)
            .push(")")
            .push(RESULT_UPSERT);
        D::execute(&mut tx, &mut q).await?;
    }
    tx.commit().await?;
    Ok(LeaseCall::Done)
}

/// A worker hands a run back, in one transaction: see [`super::Backend::release`].
pub(crate) async fn release<D: Dialect>(
    conn: &mut D::Connection,
    run_id: Uuid,
    token: u64,
    reason: Option<&str>,
) -> Result<LeaseCall, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = db_now::<D>(&mut tx).await?;
    let Some(run) = lock_run::<D>(&mut tx, run_id).await? else {
        tx.rollback().await?;
        return Ok(LeaseCall::NotFound);
    };
    if let Err(stale) = check_lease(&run, token) {
        tx.rollback().await?;
        return Ok(stale);
    }
    let worker = run.worker.clone().unwrap_or_else(|| "its worker".into());
    let why = reason.map_or(String::new(), |r| format!(": {r}"));
    let ts = next_ts(now, run.state_ts);
    let state = match run.state {
        // Asked to stop and handed back: it is cancelled.
        StateType::Cancelling => Some(ServerState::new(
            StateType::Cancelled,
            format!("cancelled: released by worker {worker}{why}"),
            run.attempt,
            ts,
        )),
        // Already ended by the worker's own events: only the lease ends.
        s if s.is_final() => None,
        _ => Some(ServerState::new(
            StateType::Scheduled,
            format!("released by worker {worker}{why}; waiting for a worker"),
            run.attempt,
            ts,
        )),
    };
    let mut q = QueryBuilder::new("");
    match &state {
        Some(state) => {
            push_set_state(&mut q, state);
            q.push(", lease_expires = NULL, lease_worker = NULL WHERE id = ");
        }
        None => {
            q.push("UPDATE runs SET lease_expires = NULL, lease_worker = NULL WHERE id = ");
        }
    }
    q.bind(run.id);
    D::execute(&mut tx, &mut q).await?;
    if let Some(state) = &state {
        insert_state::<D>(&mut tx, &run, state).await?;
        if state.state == StateType::Scheduled {
            notify_runs::<D>(&mut tx).await?;
        }
    }
    tx.commit().await?;
    Ok(LeaseCall::Done)
}

// ---------------------------------------------------------------------------------------------
// The reaper
// ---------------------------------------------------------------------------------------------

/// Decides up to [`REAP_BATCH`] runs whose lease expired, in one transaction: see
/// [`super::Backend::reap`].
pub(crate) async fn reap<D: Dialect>(conn: &mut D::Connection) -> Result<Reaped, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = db_now::<D>(&mut tx).await?;
    let mut q = QueryBuilder::new(format!(
        "SELECT {LEASE_COLUMNS} FROM runs WHERE lease_expires IS NOT NULL AND lease_expires < "
    ));
    q.bind_instant(now)
        .push(" ORDER BY lease_expires LIMIT ")
        .bind(REAP_BATCH)
        .push(D::SKIP_LOCKED);
    let expired = read_all_tx::<D, _>(&mut tx, &mut q, lease_row::<D>).await?;
    let mut reaped = Reaped::default();
    for run in expired {
        let worker = run.worker.clone().unwrap_or_else(|| "?".into());
        let expiry = run.lease_expires.unwrap_or(now).to_rfc3339();
        let ts = next_ts(now, run.state_ts);
        let mut states = Vec::new();
        if run.state == StateType::Cancelling {
            states.push(ServerState::new(
                StateType::Cancelled,
                format!(
                    "cancelled: the worker {worker} stopped heartbeating (lease expired at \
                     {expiry}) before it stopped the run"
                ),
                run.attempt,
                ts,
            ));
        } else if !run.state.is_final() {
            states.push(ServerState::new(
                StateType::Crashed,
                format!("the worker {worker} stopped heartbeating: lease expired at {expiry}"),
                run.attempt,
                ts,
            ));
            let max_attempts = run
                .max_attempts
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1);
            if run.kind == "flow" && run.deployment.is_some() && run.attempt < max_attempts {
                states.push(ServerState::new(
                    StateType::Scheduled,
                    format!(
                        "re-queued as attempt {} of {max_attempts} after the crash of attempt {}",
                        run.attempt + 1,
                        run.attempt
                    ),
                    run.attempt + 1,
                    ts + chrono::Duration::microseconds(1),
                ));
            }
        }
        let mut q = QueryBuilder::new("");
        match states.last() {
            Some(last) => {
                push_set_state(&mut q, last);
                q.push(", ");
            }
            None => {
                q.push("UPDATE runs SET ");
            }
        }
        q.push(
            "lease_token = lease_token + 1, lease_expires = NULL, lease_worker = NULL WHERE id = ",
        )
        .bind(run.id)
        .push(" AND lease_token = ")
        .bind(run.lease_token)
        .push(" AND lease_expires IS NOT NULL");
        // Another replica's reaper decided it first: nothing to do.
        if D::rows_affected(&D::execute(&mut tx, &mut q).await?) == 0 {
            continue;
        }
        for state in &states {
            insert_state::<D>(&mut tx, &run, state).await?;
        }
        if states
            .last()
            .is_some_and(|s| s.state == StateType::Scheduled)
        {
            reaped.requeued = true;
        }
        reaped.runs.push(run.id);
    }
    if reaped.requeued {
        notify_runs::<D>(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(reaped)
}

// ---------------------------------------------------------------------------------------------
// Cancel and retry
// ---------------------------------------------------------------------------------------------

/// Cancels one locked run; the caller commits.
async fn cancel_run<D: Dialect>(
    conn: &mut D::Connection,
    run: &LeaseRow,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<RunAction, StoreError> {
    if run.state.is_final() {
        return Ok(RunAction::Conflict(run.state));
    }
    if run.state == StateType::Cancelling {
        return Ok(RunAction::Unchanged(run.state));
    }
    let why = reason.map_or(String::new(), |r| format!(": {r}"));
    let ts = next_ts(now, run.state_ts);
    let state = if run.held() {
        ServerState::new(
            StateType::Cancelling,
            format!("cancelling{why}; its worker stops it"),
            run.attempt,
            ts,
        )
    } else {
        ServerState::new(
            StateType::Cancelled,
            format!("cancelled{why}"),
            run.attempt,
            ts,
        )
    };
    let mut q = QueryBuilder::new("");
    push_set_state(&mut q, &state);
    q.push(" WHERE id = ").bind(run.id);
    D::execute(conn, &mut q).await?;
    insert_state::<D>(conn, run, &state).await?;
    Ok(RunAction::Done(state.state))
}

/// Cancels a flow run: see [`super::Backend::cancel`].
pub(crate) async fn cancel<D: Dialect>(
    conn: &mut D::Connection,
    run_id: Uuid,
    reason: Option<&str>,
) -> Result<RunAction, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = db_now::<D>(&mut tx).await?;
    let run = match lock_run::<D>(&mut tx, run_id).await? {
        Some(run) if run.kind == "flow" => run,
        _ => {
            tx.rollback().await?;
            return Ok(RunAction::NotFound);
        }
    };
    let action = cancel_run::<D>(&mut tx, &run, reason, now).await?;
    tx.commit().await?;
    Ok(action)
}

/// Cancels the oldest non-final flow runs matching a filter: see
/// [`super::Backend::bulk_cancel`].
pub(crate) async fn bulk_cancel<D: Dialect>(
    conn: &mut D::Connection,
    filter: &BulkCancelFilter,
) -> Result<flowkit_wire::api::run_actions::BulkCancelled, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = db_now::<D>(&mut tx).await?;
    let mut q = QueryBuilder::new(format!(
        "SELECT {LEASE_COLUMNS} FROM runs WHERE kind = 'flow' AND state IN ("
    ));
    push_list(&mut q, filter.states.iter().map(|s| s.as_str().to_string()));
    q.push(")");
    if let Some(deployment) = &filter.deployment {
        q.push(" AND deployment = ").bind(D::text(deployment));
    }
    if let Some(flow) = &filter.flow_name {
        q.push(" AND name = ").bind(D::text(flow));
    }
    if let Some(tag) = &filter.tag {
        D::push_has_tag(&mut q, tag);
    }
    if let Some(before) = filter.created_before {
        q.push(" AND created < ").bind_instant(before);
    }
    q.push(" ORDER BY created, id LIMIT ")
        .bind(i64::from(filter.limit) + 1)
        .push(D::SKIP_LOCKED);
    let mut runs = read_all_tx::<D, _>(&mut tx, &mut q, lease_row::<D>).await?;
    let more = runs.len() > filter.limit as usize;
    runs.truncate(filter.limit as usize);
    let mut answer = flowkit_wire::api::run_actions::BulkCancelled {
        more,
        ..Default::default()
    };
    for run in &runs {
        match cancel_run::<D>(&mut tx, run, filter.reason.as_deref(), now).await? {
            RunAction::Done(StateType::Cancelled) => answer.cancelled.push(run.id),
            RunAction::Done(_) => answer.cancelling.push(run.id),
            _ => {}
        }
    }
    tx.commit().await?;
    Ok(answer)
}

/// Re-queues a deployed flow run that ended in failure: see [`super::Backend::retry`].
pub(crate) async fn retry<D: Dialect>(
    conn: &mut D::Connection,
    run_id: Uuid,
) -> Result<RunAction, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let now = db_now::<D>(&mut tx).await?;
    let run = match lock_run::<D>(&mut tx, run_id).await? {
        Some(run) if run.kind == "flow" => run,
        _ => {
            tx.rollback().await?;
            return Ok(RunAction::NotFound);
        }
    };
    let (Some(deployment), Some(version)) = (&run.deployment, &run.version) else {
        tx.rollback().await?;
        return Ok(RunAction::Conflict(run.state));
    };
    if !run.state.is_failure() {
        tx.rollback().await?;
        return Ok(RunAction::Conflict(run.state));
    }
    let (flow, name) = deployment.split_once('/').unwrap_or((deployment, ""));
    let mut q = QueryBuilder::new("SELECT retries FROM deployment_versions WHERE flow = ");
    q.bind(flow.to_string())
        .push(" AND name = ")
        .bind(name.to_string())
        .push(" AND version = ")
        .bind(version.clone());
    let retries: i64 = match D::fetch_optional(&mut tx, &mut q).await? {
        Some(row) => Columns::<D>(&row).get("retries")?,
        None => 0,
    };
    let attempt = run.attempt + 1;
    let state = ServerState::new(
        StateType::Scheduled,
        format!(
            "retried from {} as attempt {attempt}; waiting for a worker",
            run.state.as_str()
        ),
        attempt,
        next_ts(now, run.state_ts),
    );
    let mut q = QueryBuilder::new("");
    push_set_state(&mut q, &state);
    q.push(
        ", lease_token = lease_token + 1, lease_expires = NULL, lease_worker = NULL, \
         version_pinned = TRUE, scheduled_for = NULL, max_attempts = ",
    )
    .bind(i64::from(attempt) + retries.max(0))
    .push(" WHERE id = ")
    .bind(run.id);
    D::execute(&mut tx, &mut q).await?;
    insert_state::<D>(&mut tx, &run, &state).await?;
    // A result of an earlier attempt would be served as this attempt's.
    let mut q = QueryBuilder::new("DELETE FROM run_results WHERE run_id = ");
    q.bind(run.id);
    D::execute(&mut tx, &mut q).await?;
    notify_runs::<D>(&mut tx).await?;
    tx.commit().await?;
    Ok(RunAction::Done(StateType::Scheduled))
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// The stored result of a run, as JSON text.
pub(crate) async fn result<D: Dialect>(
    pool: &Pool<D>,
    run_id: Uuid,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut q = QueryBuilder::new("SELECT result FROM run_results WHERE run_id = ");
    q.bind(run_id);
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.map(|row| Columns::<D>(&row).get("result")).transpose()
}

/// The fencing tokens of runs (those that exist), with the worker they were last leased to.
pub(crate) async fn lease_tokens<D: Dialect>(
    pool: &Pool<D>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (u64, Option<String>)>, StoreError> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let mut q = QueryBuilder::new("SELECT id, lease_token, worker FROM runs WHERE id IN (");
        push_list(&mut q, chunk.iter().copied());
        q.push(") AND lease_token > 0");
        for row in read_all(pool, &mut q, |row| {
            let c = Columns::<D>(row);
            Ok((
                c.get::<Uuid>("id")?,
                token(c.get("lease_token")?),
                c.get::<Option<String>>("worker")?,
            ))
        })
        .await?
        {
            found.insert(row.0, (row.1, row.2));
        }
    }
    Ok(found)
}

/// Adds to a worker's count of events refused for a stale token.
pub(crate) async fn record_stale_events<D: Dialect>(
    conn: &mut D::Connection,
    worker: &str,
    refused: u64,
) -> Result<(), StoreError> {
    let mut q = QueryBuilder::new("INSERT INTO stale_events (worker, refused, last_seen) VALUES (");
    q.bind(D::text(worker))
        .push(", ")
        .bind(i64::try_from(refused).unwrap_or(i64::MAX))
        .push(", ");
    D::push_now(&mut q);
    q.push(
        ") ON CONFLICT (worker) DO UPDATE SET refused = stale_events.refused + excluded.refused, \
         last_seen = excluded.last_seen",
    );
    D::execute(conn, &mut q).await?;
    Ok(())
}

/// A worker's count of events refused for a stale token.
pub(crate) async fn stale_events<D: Dialect>(
    pool: &Pool<D>,
    worker: &str,
) -> Result<u64, StoreError> {
    let mut q = QueryBuilder::new("SELECT refused FROM stale_events WHERE worker = ");
    q.bind(D::text(worker));
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    Ok(row
        .map(|row| Columns::<D>(&row).get::<i64>("refused"))
        .transpose()?
        .map_or(0, |n| n.max(0) as u64))
}

/// The workers of a deployment seen since `since`, most recently seen first, at most
/// [`MAX_LIVE_WORKERS`].
pub(crate) async fn live_workers<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
    since: DateTime<Utc>,
) -> Result<Vec<LiveWorker>, StoreError> {
    let mut q = QueryBuilder::new(
        "SELECT w.id, w.name, d.version, d.last_seen FROM worker_deployments AS d \
         JOIN workers AS w ON w.id = d.worker WHERE d.flow = ",
    );
    q.bind(flow.to_string())
        .push(" AND d.name = ")
        .bind(name.to_string())
        .push(" AND d.last_seen >= ")
        .bind_instant(since)
        .push(" ORDER BY d.last_seen DESC LIMIT ")
        .bind((MAX_LIVE_WORKERS * 10) as i64);
    let rows = read_all(pool, &mut q, |row| {
        let c = Columns::<D>(row);
        Ok((
            c.get::<Uuid>("id")?,
            c.get::<String>("name")?,
            c.get::<String>("version")?,
            c.instant("last_seen")?,
        ))
    })
    .await?;
    let mut workers: Vec<LiveWorker> = Vec::new();
    for (id, name, version, last_seen) in rows {
        match workers.iter().position(|w| w.id == id) {
            Some(i) => {
                let worker = &mut workers[i];
                if !worker.versions.contains(&version) {
                    worker.versions.push(version);
                }
                worker.last_seen = worker.last_seen.max(last_seen);
            }
            None if workers.len() < MAX_LIVE_WORKERS => workers.push(LiveWorker {
                id,
                name,
                versions: vec![version],
                last_seen,
            }),
            None => {}
        }
    }
    Ok(workers)
}

/// The newest registered version of a deployment that a worker seen since `since` serves.
pub(crate) async fn serving_version<D: Dialect>(
    pool: &Pool<D>,
    flow: &str,
    name: &str,
    since: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let mut q = QueryBuilder::new("SELECT v.version FROM deployment_versions AS v WHERE v.flow = ");
    q.bind(flow.to_string())
        .push(" AND v.name = ")
        .bind(name.to_string())
        .push(
            " AND EXISTS (SELECT 1 FROM worker_deployments AS d WHERE d.flow = v.flow \
             AND d.name = v.name AND d.version = v.version AND d.last_seen >= ",
        )
        .bind_instant(since)
        .push(") ORDER BY v.registered DESC, v.id DESC LIMIT 1");
    let row = D::fetch_optional(&mut *pool.acquire().await?, &mut q).await?;
    row.map(|row| Columns::<D>(&row).get("version")).transpose()
}

/// Marks overdue scheduled runs, as of `now` (the scheduler's clock, which also decides when
/// schedules are due): `Expired` for runs still `Scheduled` or `Late` at their `expires_at`,
/// then `Late` for runs still `Scheduled` at their `late_at`; at most 100 of each per call,
/// the most overdue first. A run claimed meanwhile (no longer in those states) is left alone.
pub(crate) async fn mark_overdue<D: Dialect>(
    conn: &mut D::Connection,
    now: DateTime<Utc>,
) -> Result<super::Overdue, StoreError> {
    let mut tx = begin_write::<D>(conn).await?;
    let expired = decide_overdue::<D>(
        &mut tx,
        now,
        "state IN ('Scheduled', 'Late')",
        "expires_at",
        StateType::Expired,
        "not started before its schedule's max_lateness: it will not run (trigger it, or \
         retry this run, to run it now)",
    )
    .await?;
    let late = decide_overdue::<D>(
        &mut tx,
        now,
        "state = 'Scheduled'",
        "late_at",
        StateType::Late,
        "no worker has claimed it since it was due: is a worker serving this deployment, \
         with a free slot?",
    )
    .await?;
    let overdue = super::Overdue { late, expired };
    tx.commit().await?;
    Ok(overdue)
}

/// Moves up to 100 runs in `states` (an SQL condition matching a partial index of the
/// migration) whose `deadline` column has passed at `now` into `decided`, each with a state
/// event; returns how many moved (a run claimed meanwhile no longer matches and is left alone).
async fn decide_overdue<D: Dialect>(
    tx: &mut D::Connection,
    now: DateTime<Utc>,
    states: &str,
    deadline: &str,
    decided: StateType,
    message: &str,
) -> Result<u64, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {LEASE_COLUMNS} FROM runs WHERE {states} AND {deadline} IS NOT NULL \
         AND {deadline} <= "
    ));
    q.bind_instant(now)
        .push(format!(" ORDER BY {deadline} LIMIT 100"))
        .push(D::SKIP_LOCKED);
    let mut moved = 0;
    for run in read_all_tx::<D, _>(&mut *tx, &mut q, lease_row::<D>).await? {
        let state = ServerState::new(
            decided,
            message.to_string(),
            run.attempt,
            next_ts(now, run.state_ts),
        );
        let mut q = QueryBuilder::new("");
        push_set_state(&mut q, &state);
        q.push(" WHERE id = ")
            .bind(run.id)
            .push(format!(" AND {states}"));
        if D::rows_affected(&D::execute(&mut *tx, &mut q).await?) > 0 {
            insert_state::<D>(&mut *tx, &run, &state).await?;
            moved += 1;
        }
    }
    Ok(moved)
}
