//! The SQLite backend: one file, WAL mode, one writer task, a pool of read-only connections.
//!
//! SQLite allows one writer at a time. Rather than let connections of a pool race for the
//! write lock (and fail with "database is locked" under load), every write goes through one
//! task, on a thread of its own, that owns the only writing connection. It receives requests
//! (ingest batches, triggers, claims, finishes, …) over a channel and commits whatever has
//! queued up while it was busy in one transaction (group commit), each request in a savepoint
//! of its own, then answers each request: an acknowledged write is committed. A group takes at
//! most half of what is queued, so that the clients its commit answers come back while the
//! writer writes the other half. A group of ingest requests alone (what heavy load is made of)
//! is begun, written and committed on the writer's thread (`Ingester::write_alone`), which
//! keeps the connection borrowed from the connection's own thread from one such group to the
//! next: no round trip to that thread, where sqlx makes three per group. Readers use their own
//! read-only
//! connections, which WAL lets run alongside the writer. A checkpointer task on one more
//! connection copies the WAL into the database file every 200 ms (it writes no rows), so the
//! writer's commits do not stop to do it.
//!
//! Durability: `synchronous = NORMAL` in WAL mode writes each commit to the WAL before the
//! commit returns but does not fsync it, so a commit survives the server process being killed
//! (SIGKILL, panic, OOM: the data is in the OS page cache) but may be lost on power loss or a
//! kernel crash. `FULL` would fsync every group; it was not needed for the process-crash
//! guarantee the server makes.

use super::dialect::begin_write;
use super::leases;
use super::queries::{self, Maintenance, Written};
use super::rows::Plan;
use super::sqlite_batch;
use super::sqlite_ingest::{self, Ingester, WrittenAlone};
use super::sqlite_schedule_rows;
use super::{ClaimOrder, Finished, IngestOutcome, NewRun, StoreError, Triggered};
use flowkit_wire::event::Event;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};
use std::collections::{HashSet, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Stop gathering queued requests into one transaction past this many events.
const MAX_GROUP_EVENTS: usize = 20_000;
/// ... or this many requests.
const MAX_GROUP_REQUESTS: usize = 256;
/// Requests waiting for the writer before `ingest` callers wait for room (backpressure).
const QUEUE: usize = 1024;
/// Keyless triggers written together (see [`sqlite_batch::triggers`]).
const MAX_TRIGGER_BATCH: usize = 256;
/// Finishes written together (see [`sqlite_batch::finishes`]).
const MAX_FINISH_BATCH: usize = 256;
/// Claims made together (see [`leases::claim`]).
const MAX_CLAIM_BATCH: usize = 64;
/// Read-only connections.
const READERS: u32 = 4;
/// How often the checkpointer copies the WAL into the database file (see [`checkpoints`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL pages past which the writer checkpoints by itself, as a backstop should the
/// checkpointer fall behind (SQLite's default, 1000, is where the writer would do it every
/// time: a commit every few hundred ms taking tens of ms).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_000;
/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer's page cache, in KiB (SQLite's default is 2 MiB): the pages of the tables and
/// indexes ingestion appends to stay in memory between groups instead of being read back.
///
/// Not larger: many commits of heavy ingestion scan the whole cache. When a B-tree page
/// splits, SQLite renumbers the new pages through a spare page number (the lock-byte page's,
/// at 1 GiB), which the cache keeps as its highest page number seen; the commit's trim of
/// pages past the end of the database then walks every slot of the cache's hash table, the
/// database being smaller than 1 GiB. (At 64 MiB that walk was about 4% of the writer's
/// samples; `ingest_bench` at 16 MiB: 1.05× the events per second of 64 MiB, medians of 11
/// alternated runs.)
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// The SQLite store. See the module documentation.
pub(crate) struct SqliteStore {
    /// Taken (dropped) by `close`, which lets the writer drain its queue and stop.
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    /// Answered (or dropped) when the writer thread has stopped.
    writer: Mutex<Option<oneshot::Receiver<()>>>,
    /// Dropped by `close` to stop the checkpointer; answered when it has stopped.
    checkpointer: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    readers: SqlitePool,
}

/// A write, for the writer task.
enum Command {
    /// One request's events, made into rows by the caller (on the server's runtime, while
    /// the writer writes the groups before it).
    Ingest {
        /// Shared with the request, which drops it last (see [`SqliteStore::ingest`]).
        plan: Arc<Plan>,
        reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
    },
    Maintain {
        task: Maintenance,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    },
}

/// Turns off SQLite's memory statistics (`SQLITE_CONFIG_MEMSTATUS`), which nothing here reads:
/// with them on, every allocation SQLite makes takes a global mutex (in a profile of
/// `ingest_bench`, mutex calls, mostly from allocations and the page cache, were about 8% of
/// the writer's time). A setting of the whole process, taken only before SQLite is
/// first used in it (later SQLite refuses it, and statistics stay on: nothing else changes).
fn without_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` may be called only before SQLite initializes, and not at the
        // same time as another SQLite call; it checks the former itself (SQLITE_MISUSE, with
        // nothing changed). Every SQLite connection of this server is opened after this call
        // returns (`SqliteStore::connect` makes it first), through this `Once`.
        #[allow(unsafe_code)]
        let _ = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
    });
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of `url` (`sqlite://PATH` or
    /// `sqlite:PATH`), switches it to WAL, applies the migrations and starts the writer.
    pub(crate) async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            // Each connection of the reader pool would see its own empty database.
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        without_memory_statistics();
        // No foreign keys: the schema has none (events of related runs arrive in any order).
        let base = SqliteConnectOptions::from_str(url)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        let write_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Savepoints (one per request of a group) journal in memory, not in a temp file.
            .pragma("temp_store", "memory")
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            // The WAL is copied into the database file by the checkpointer, off the writer.
            .pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            )
            // Bounds the work of `PRAGMA optimize` (below and at close) on a large database.
            .analysis_limit(400)
            .optimize_on_close(true, 400);
        let mut conn = SqliteConnection::connect_with(&write_options).await?;
        conn.clear_cached_statements().await?;
        if !sqlite_ingest::widen_lookaside(&mut conn).await? {
            tracing::debug!("SQLite kept the writer's lookaside memory as it was");
        }
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        // Keeps the planner's statistics current (cheap: it only analyzes what changed).
        sqlx::query("PRAGMA optimize = 0x10002")
            .execute(&mut conn)
            .await?;
        let checkpointer = {
            let conn = SqliteConnection::connect_with(&base).await?;
            let (stop, stopping) = oneshot::channel();
            let (stopped, done) = oneshot::channel();
            tokio::spawn(async move {
                checkpoints(conn, stopping).await;
                let _ = stopped.send(());
            });
            (stop, done)
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            // One connection open from the start: the first page does not pay for opening it.
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        // The writer has a thread and a runtime of its own: each of its statements is a round
        // trip to the connection's thread, and on the server's runtime every one of them would
        // wait in line behind the HTTP requests' tasks (the writer was the bottleneck of
        // deployed runs, idle most of its time).
        let (stopped, writer) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(sqlx::Error::Io)?;
        std::thread::Builder::new()
            .name("flowkit-sqlite-writer".into())
            .spawn(move || {
                runtime.block_on(write_loop(conn, receiver));
                let _ = stopped.send(());
            })
            .map_err(sqlx::Error::Io)?;
        Ok(SqliteStore {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers,
        })
    }

    /// The read-only connections the shared queries read through; WAL lets them run
    /// alongside the writer.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.readers
    }

    /// Hands a command to the writer and waits for its answer.
    async fn write<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let sender = lock(&self.sender).clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        drop(sender);
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// See [`super::Backend::ingest`]: committed by the writer, possibly in one transaction
    /// with other requests.
    pub(crate) async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, StoreError> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let plan = Arc::new(Plan::new(vec![events])?);
        let kept = plan.clone();
        let outcome = self.write(|reply| Command::Ingest { plan, reply }).await;
        // The writer drops its reference before it answers: the plan's rows are freed here,
        // on the request's task, not on the writer's thread (about 4% of its time).
        drop(kept);
        outcome
    }

    /// Runs a write besides ingestion on the writer, between ingestion groups.
    pub(crate) async fn maintain(&self, task: Maintenance) -> Result<Written, StoreError> {
        self.write(|reply| Command::Maintain { task, reply }).await
    }

    /// Lets the writer commit what is queued, waits for it to stop, closes the readers.
    pub(crate) async fn close(&self) {
        let checkpointer = lock(&self.checkpointer).take();
        if let Some((stop, stopped)) = checkpointer {
            drop(stop);
            let _ = stopped.await;
        }
        drop(lock(&self.sender).take());
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer
            && writer.await.is_err()
        {
            tracing::error!("the SQLite writer thread stopped without closing its connection");
        }
        self.readers.close().await;
    }
}

/// The checkpointer: every [`CHECKPOINT_EVERY`] until `stop` is dropped, copies what the WAL
/// holds into the database file on a connection of its own (`PRAGMA wal_checkpoint(PASSIVE)`,
/// which waits for no one and lets the writer go on committing), so that the writer's commits
/// do not do it themselves (with SQLite's default the commit that crosses 1000 WAL pages
/// checkpoints them: in trigger_bench every ~45th group took 20-60 ms instead of 1-5 ms, the
/// trigger's p99). Once a checkpoint has copied everything, the writer's next transaction
/// starts the WAL over.
async fn checkpoints(mut conn: SqliteConnection, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!("SQLite checkpoint: {e}");
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!("closing the SQLite checkpointer connection: {e}");
    }
}

/// The writer: takes what has queued, commits it (see [`write_group`]), answers, repeats.
async fn write_loop(mut conn: SqliteConnection, mut receiver: mpsc::Receiver<Command>) {
    let ingester = match Ingester::open(&mut conn).await {
        Ok(ingester) => ingester,
        Err(e) => {
            // Only a dead connection thread fails this: every request is answered "closed".
            tracing::error!("the SQLite writer cannot start: {e}");
            return;
        }
    };
    let mut pending = None;
    loop {
        let group = match pending.take() {
            Some(group) => group,
            None => match receiver.recv().await {
                Some(first) => Group::gather(&mut receiver, first),
                None => break,
            },
        };
        if group.work.is_empty() && !conn.is_in_transaction() {
            // Only ingestion (what heavy load is made of): on this thread, until a group
            // holds another write.
            pending = ingest_alone(&mut conn, &ingester, &mut receiver, group.ingests).await;
            continue;
        }
        let mut work = group.work;
        if !group.ingests.is_empty() {
            work.push_front(Work::Ingest(group.ingests));
        }
        write_group(&mut conn, &ingester, work).await;
    }
    ingester.close(&mut conn).await;
    if let Err(e) = conn.close().await {
        tracing::warn!("closing the SQLite writer connection: {e}");
    }
}

/// The requests one turn of the writer commits together.
struct Group {
    /// The ingest requests (written together, first).
    ingests: Vec<(Arc<Plan>, IngestReply)>,
    /// The other writes, in the order they came.
    work: VecDeque<Work>,
}

impl Group {
    /// `first` and what is queued after it, up to the bounds of a group.
    fn gather(receiver: &mut mpsc::Receiver<Command>, first: Command) -> Group {
        let mut group = Group {
            ingests: Vec::new(),
            work: VecDeque::new(),
        };
        let mut events = 0;
        // At most half of what is queued (rounded up): the clients answered by this group's
        // commit send their next requests while the writer writes the other half, instead of
        // every client waiting for one commit and the writer then waiting for them all (with
        // four clients, a fifth of its time went that way in `ingest_bench`).
        let max_requests = (receiver.len() + 1).div_ceil(2).min(MAX_GROUP_REQUESTS);
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Ingest { plan, reply } => {
                    events += plan.states.len() + plan.logs.len();
                    group.ingests.push((plan, reply));
                }
                Command::Maintain { task, reply } => {
                    group.work.push_back(Work::Maintain(task, reply))
                }
            }
            if events < MAX_GROUP_EVENTS && group.ingests.len() + group.work.len() < max_requests {
                next = receiver.try_recv().ok();
            }
        }
        group
    }
}

/// Commits groups of ingest requests alone, starting with `ingests`, each in a transaction of
/// its own begun and committed on the writer's thread ([`Ingester::write_alone`]), and answers
/// each request once its group is committed. The connection stays borrowed from its driver's
/// thread from one group to the next (also while waiting for the next), so a group makes no
/// round trip to that thread (through sqlx it made three). Returns the first group that holds
/// another write, or `None` (the channel closed, or a group failed and its requests were
/// written again one by one, [`ingest_one_by_one`]).
async fn ingest_alone(
    conn: &mut SqliteConnection,
    ingester: &Ingester,
    receiver: &mut mpsc::Receiver<Command>,
    mut ingests: Vec<(Arc<Plan>, IngestReply)>,
) -> Option<Group> {
    let mut handle = match conn.lock_handle().await {
        Ok(handle) => handle,
        Err(e) => {
            let why = e.to_string();
            ingests
                .into_iter()
                .for_each(|(_, reply)| refuse(reply, &why));
            return None;
        }
    };
    loop {
        let (plans, replies): (Vec<_>, Vec<_>) = ingests.into_iter().unzip();
        match ingester.write_alone(&mut handle, &plans) {
            WrittenAlone::Committed(outcomes) => {
                // Before the answers, so that each request drops its plan last.
                drop(plans);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            WrittenAlone::Failed(e) => {
                drop(handle);
                let group = plans.into_iter().zip(replies).collect();
                ingest_one_by_one(conn, ingester, group, &e).await;
                return None;
            }
            WrittenAlone::NotCommitted(e) => {
                let why = e.to_string();
                replies.into_iter().for_each(|reply| refuse(reply, &why));
            }
        }
        let first = receiver.recv().await?;
        let group = Group::gather(receiver, first);
        if !group.work.is_empty() {
            return Some(group);
        }
        ingests = group.ingests;
    }
}

type IngestReply = oneshot::Sender<Result<IngestOutcome, StoreError>>;
type MaintainReply = oneshot::Sender<Result<Written, StoreError>>;

/// One turn's writes, in order: the ingest requests (together), then each other write.
enum Work {
    Ingest(Vec<(Arc<Plan>, IngestReply)>),
    Maintain(Maintenance, MaintainReply),
}

/// A write done inside the shared transaction, answered once it commits.
enum Done {
    Ingest(Vec<IngestReply>, Vec<IngestOutcome>),
    Maintain(MaintainReply, Written),
}

/// Commits `work` in as few transactions as it can (group commit: one commit, one write of
/// the pages every write touched, instead of one per request). Each write runs in a savepoint
/// of the shared transaction (but the first, rolled back with the transaction if it fails), so
/// a failing write is undone alone; every answer waits for the
/// commit, so nothing is acknowledged that is not committed. After a write fails the
/// transaction is committed and the rest goes on in a new one (some SQLite errors end the
/// whole transaction, and no write may count on it after that): a failed write is answered
/// with its error, a failed ingest group is retried on its own, request by request.
async fn write_group(conn: &mut SqliteConnection, ingester: &Ingester, mut work: VecDeque<Work>) {
    while !work.is_empty() {
        let mut tx = match begin_write::<Sqlite>(conn).await {
            Ok(tx) => tx,
            Err(e) => {
                let why = e.to_string();
                for item in work {
                    match item {
                        Work::Ingest(group) => {
                            group.into_iter().for_each(|(_, reply)| refuse(reply, &why));
                        }
                        Work::Maintain(_, reply) => refuse(reply, &why),
                    }
                }
                return;
            }
        };
        let mut done = Vec::with_capacity(work.len());
        let mut failed = None;
        // Whether a write without a savepoint failed: the transaction holds nothing else
        // (nothing is done yet) and is rolled back instead of committed.
        let mut rollback = false;
        while let Some(item) = work.pop_front() {
            match item {
                Work::Ingest(group) => {
                    let (plans, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                    // The first write of the transaction (ingestion is put first): written
                    // without a savepoint of its own (which would copy every page it first
                    // touches), since a failure rolls the whole transaction back.
                    let first = done.is_empty();
                    let applied = if first {
                        ingester.write(&mut tx, &plans).await
                    } else {
                        write_in_savepoint(&mut tx, ingester, &plans).await
                    };
                    match applied {
                        Ok(outcomes) => done.push(Done::Ingest(replies, outcomes)),
                        Err(e) => {
                            rollback = first;
                            failed = Some((plans.into_iter().zip(replies).collect(), e));
                            break;
                        }
                    }
                }
                Work::Maintain(Maintenance::Trigger(first), reply) if first.batchable() => {
                    // Keyless triggers queued together are written together.
                    let batch =
                        gather(
                            &mut work,
                            (first, reply),
                            MAX_TRIGGER_BATCH,
                            |item| match item {
                                Work::Maintain(Maintenance::Trigger(next), reply)
                                    if next.batchable() =>
                                {
                                    Ok((next, reply))
                                }
                                other => Err(other),
                            },
                        );
                    let runs: Vec<&NewRun> = batch.iter().map(|(run, _)| run.as_ref()).collect();
                    if let Err(e) = sqlite_batch::triggers(&mut tx, ingester, &runs).await {
                        let why = e.to_string();
                        batch.into_iter().for_each(|(_, reply)| refuse(reply, &why));
                        break;
                    }
                    done.extend(batch.into_iter().map(|(run, reply)| {
                        let created = Triggered::Created(run.event.run_id);
                        Done::Maintain(reply, Written::Triggered(created))
                    }));
                }
                Work::Maintain(Maintenance::Finish(first), reply) => {
                    // Finishes of distinct runs queued together are written together.
                    let mut ids = HashSet::from([first.run_id]);
                    let batch =
                        gather(
                            &mut work,
                            (first, reply),
                            MAX_FINISH_BATCH,
                            |item| match item {
                                Work::Maintain(Maintenance::Finish(next), reply)
                                    if ids.insert(next.run_id) =>
                                {
                                    Ok((next, reply))
                                }
                                other => Err(other),
                            },
                        );
                    let finished: Vec<&Finished> = batch.iter().map(|(f, _)| f.as_ref()).collect();
                    match sqlite_batch::finishes(&mut tx, &finished).await {
                        Ok(calls) => {
                            done.extend(batch.into_iter().zip(calls).map(|((_, reply), call)| {
                                Done::Maintain(reply, Written::Lease(call))
                            }))
                        }
                        Err(e) => {
                            let why = e.to_string();
                            batch.into_iter().for_each(|(_, reply)| refuse(reply, &why));
                            break;
                        }
                    }
                }
                Work::Maintain(Maintenance::Claim { order, touch }, reply) => {
                    // Claims queued together share their reads and writes (see
                    // `leases::claim`), each answered with its own runs.
                    let batch =
                        gather(
                            &mut work,
                            (order, touch, reply),
                            MAX_CLAIM_BATCH,
                            |item| match item {
                                Work::Maintain(Maintenance::Claim { order, touch }, reply) => {
                                    Ok((order, touch, reply))
                                }
                                other => Err(other),
                            },
                        );
                    let orders: Vec<(&ClaimOrder, bool)> = batch
                        .iter()
                        .map(|(order, touch, _)| (&**order, *touch))
                        .collect();
                    match leases::claim::<Sqlite>(&mut tx, &orders).await {
                        Ok(answers) => done.extend(batch.into_iter().zip(answers).map(
                            |((_, _, reply), claimed)| {
                                Done::Maintain(reply, Written::Claimed(claimed))
                            },
                        )),
                        Err(e) => {
                            let why = e.to_string();
                            batch
                                .into_iter()
                                .for_each(|(_, _, reply)| refuse(reply, &why));
                            break;
                        }
                    }
                }
                Work::Maintain(Maintenance::WriteSlots { runs, advances }, reply) => {
                    // A tick's batch: through the writer's prepared statements.
                    match write_slots(&mut tx, ingester, &runs, &advances).await {
                        Ok(written) => {
                            done.push(Done::Maintain(reply, Written::SlotsWritten(written)))
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            break;
                        }
                    }
                }
                Work::Maintain(task, reply) => {
                    match queries::maintain::<Sqlite>(&mut tx, &task).await {
                        Ok(written) => done.push(Done::Maintain(reply, written)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            break;
                        }
                    }
                }
            }
        }
        let committed = if rollback {
            tx.rollback().await.map_err(|e| e.to_string())
        } else {
            tx.commit().await.map_err(|e| e.to_string())
        };
        for answer in done {
            match (answer, &committed) {
                (Done::Ingest(replies, outcomes), Ok(())) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                (Done::Maintain(reply, written), Ok(())) => {
                    let _ = reply.send(Ok(written));
                }
                (Done::Ingest(replies, _), Err(why)) => {
                    replies.into_iter().for_each(|reply| refuse(reply, why));
                }
                (Done::Maintain(reply, _), Err(why)) => refuse(reply, why),
            }
        }
        if let Some((group, e)) = failed {
            ingest_one_by_one(conn, ingester, group, &e).await;
        }
    }
}

/// Writes the plans of ingest requests into `conn` in a transaction of their own (a savepoint
/// when `conn` is in one already); returns each plan's outcome.
async fn write_in_savepoint(
    conn: &mut SqliteConnection,
    ingester: &Ingester,
    plans: &[Arc<Plan>],
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut tx = begin_write::<Sqlite>(conn).await?;
    let outcomes = ingester.write(&mut tx, plans).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// [`sqlite_schedule_rows::write_slots`] in a savepoint of the transaction open on `conn`.
async fn write_slots(
    conn: &mut SqliteConnection,
    ingester: &Ingester,
    runs: &[NewRun],
    advances: &[super::schedules::Advance],
) -> Result<super::schedules::SlotsWritten, StoreError> {
    let mut tx = begin_write::<Sqlite>(conn).await?;
    let written = ingester
        .on_writer(&mut tx, |db| {
            sqlite_schedule_rows::write_slots(db, runs, advances)
        })
        .await?;
    tx.commit().await?;
    Ok(written)
}

/// `first` and what follows it at the front of `work` that `take` accepts (handing back what
/// it does not), at most `max` in all: the requests of one batch.
fn gather<T>(
    work: &mut VecDeque<Work>,
    first: T,
    max: usize,
    mut take: impl FnMut(Work) -> Result<T, Work>,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        let Some(item) = work.pop_front() else { break };
        match take(item) {
            Ok(next) => batch.push(next),
            Err(other) => {
                work.push_front(other);
                break;
            }
        }
    }
    batch
}

/// Answers a request whose shared transaction failed: it did not happen.
fn refuse<T>(reply: oneshot::Sender<Result<T, StoreError>>, why: &str) {
    let _ = reply.send(Err(StoreError::Commit(why.to_string())));
}

/// Writes each request of an ingest group that failed as a whole (with `why`) in a
/// transaction of its own, so that one bad request cannot fail the others, and answers each
/// with its own outcome or error. (The group is not tried whole again: it has just failed.)
async fn ingest_one_by_one(
    conn: &mut SqliteConnection,
    ingester: &Ingester,
    group: Vec<(Arc<Plan>, IngestReply)>,
    why: &StoreError,
) {
    tracing::warn!(
        "a group of {} ingest requests failed ({why}); writing them one by one",
        group.len()
    );
    for (plan, reply) in group {
        let result = write_in_savepoint(conn, ingester, std::slice::from_ref(&plan))
            .await
            .map(|mut outcomes| outcomes.pop().unwrap_or_default());
        // Before the answer, so that the request drops its plan last.
        drop(plan);
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{QueryBuilder, Row};
    use uuid::Uuid;

    /// `sqlite:PATH` works as well as `sqlite://PATH`, creates the file and turns WAL on.
    #[tokio::test]
    async fn opens_both_url_forms_in_wal_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, prefix) in ["sqlite://", "sqlite:"].into_iter().enumerate() {
            let path = dir.path().join(format!("db-{i}.sqlite"));
            let store = SqliteStore::connect(&format!("{prefix}{}", path.display()))
                .await
                .expect("connect");
            assert!(path.exists());
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&store.readers)
                .await
                .expect("journal mode");
            assert_eq!(mode, "wal");
            store.close().await;
            assert!(matches!(
                store.ingest(vec![]).await,
                Ok(IngestOutcome { accepted: 0, .. })
            ));
            let drops = Maintenance::ReporterDrops {
                worker: "w".into(),
                dropped: 1,
            };
            assert!(matches!(
                store.maintain(drops).await,
                Err(StoreError::Closed)
            ));
        }
        assert!(matches!(
            SqliteStore::connect("sqlite::memory:").await,
            Err(StoreError::UnsupportedUrl(_))
        ));
    }

    /// An event of the flow run `run` (named `etl`, first attempt, now).
    fn flow_event(run: Uuid, body: flowkit_wire::event::EventBody) -> Event {
        Event {
            id: Uuid::now_v7(),
            run_id: run,
            parent_run_id: None,
            flow_run_id: Some(run),
            run_kind: flowkit_wire::event::RunKind::Flow,
            name: "etl".into(),
            attempt: 1,
            timestamp: chrono::Utc::now(),
            lease: None,
            body,
        }
    }

    /// A connection to a new, migrated database file in `dir`, outside any store.
    async fn migrated(dir: &tempfile::TempDir) -> SqliteConnection {
        let url = format!("sqlite://{}", dir.path().join("writer.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .create_if_missing(true);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .expect("migrate");
        conn
    }

    /// A group commit answers each write after the commit, and a write that fails is undone
    /// alone: the writes before it in the group and the ones after it are committed.
    #[tokio::test]
    async fn a_failing_write_of_a_group_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = migrated(&dir).await;
        // The table the third write needs is gone: that write fails in the database.
        sqlx::query("DROP TABLE stale_events")
            .execute(&mut conn)
            .await
            .expect("drop");
        let drops = |worker: &str| Maintenance::ReporterDrops {
            worker: worker.into(),
            dropped: 1,
        };
        let mut work = VecDeque::new();
        let mut answers = Vec::new();
        for task in [
            drops("before"),
            drops("also-before"),
            Maintenance::StaleEvents {
                worker: "w".into(),
                refused: 1,
            },
            drops("after"),
        ] {
            let (reply, answer) = oneshot::channel();
            work.push_back(Work::Maintain(task, reply));
            answers.push(answer);
        }
        let ingester = Ingester::open(&mut conn).await.expect("ingester");
        write_group(&mut conn, &ingester, work).await;
        ingester.close(&mut conn).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.expect("every write is answered").is_ok());
        }
        assert_eq!(outcomes, [true, true, false, true]);
        assert!(
            !conn.is_in_transaction(),
            "the writer left a transaction open"
        );
        let workers: Vec<String> =
            sqlx::query_scalar("SELECT worker FROM reporter_drops ORDER BY worker")
                .fetch_all(&mut conn)
                .await
                .expect("read");
        assert_eq!(workers, ["after", "also-before", "before"]);
    }

    /// An ingest group is its transaction's first write, without a savepoint: when it fails
    /// after some of its rows are written (here its log lines are refused, after its states),
    /// the transaction is rolled back, nothing of the group is committed, each request is
    /// answered with the error, and the writes queued after it are committed all the same.
    #[tokio::test]
    async fn a_failing_first_ingest_leaves_nothing_behind() {
        use flowkit_wire::event::{EventBody, LogLevel};
        use flowkit_wire::state::{State, StateType};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = migrated(&dir).await;
        sqlx::query(
            "CREATE TRIGGER refuse_logs BEFORE INSERT ON logs \
             BEGIN SELECT RAISE(ABORT, 'no log lines'); END",
        )
        .execute(&mut conn)
        .await
        .expect("trigger");
        let run = Uuid::now_v7();
        let event = |body| flow_event(run, body);
        let batch = |n: usize| -> Vec<Event> {
            (0..n)
                .map(|_| {
                    event(EventBody::State {
                        state: State::new(StateType::Running),
                        details: None,
                    })
                })
                .chain([event(EventBody::Log {
                    level: LogLevel::Info,
                    message: "hello".into(),
                    fields: serde_json::Map::new(),
                })])
                .collect()
        };
        let mut answers = Vec::new();
        let mut group = Vec::new();
        for n in [3, 700] {
            let (reply, answer) = oneshot::channel();
            let plan = Arc::new(Plan::new(vec![batch(n)]).expect("plan"));
            group.push((plan, reply));
            answers.push(answer);
        }
        let (reply, drops) = oneshot::channel();
        let work = VecDeque::from([
            Work::Ingest(group),
            Work::Maintain(
                Maintenance::ReporterDrops {
                    worker: "after".into(),
                    dropped: 1,
                },
                reply,
            ),
        ]);
        let ingester = Ingester::open(&mut conn).await.expect("ingester");
        write_group(&mut conn, &ingester, work).await;
        ingester.close(&mut conn).await;
        for answer in answers {
            assert!(answer.await.expect("answered").is_err());
        }
        assert!(drops.await.expect("answered").is_ok());
        assert!(!conn.is_in_transaction());
        for table in ["run_states", "runs", "logs"] {
            let rows: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut conn)
                    .await
                    .expect("count");
            assert_eq!(rows, 0, "{table}");
        }
        let workers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reporter_drops")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(workers, 1);
    }

    /// Ingest requests alone are written in a transaction begun and committed on the writer's
    /// thread (`ingest_alone`): each is answered with its outcome once committed; when one
    /// fails (here its log line is refused), nothing of the first try stays, the others are
    /// written again and committed, the failing one is answered with its error and leaves
    /// nothing behind; no transaction is left open, for sqlx or for SQLite.
    #[tokio::test]
    async fn ingest_requests_alone_commit_on_the_writer_and_one_failing_fails_alone() {
        use flowkit_wire::event::{EventBody, LogLevel};
        use flowkit_wire::state::{State, StateType};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = migrated(&dir).await;
        sqlx::query(
            "CREATE TRIGGER refuse_bad_logs BEFORE INSERT ON logs WHEN NEW.message = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'no bad log lines'); END",
        )
        .execute(&mut conn)
        .await
        .expect("trigger");
        let request = |message: &str| -> (Uuid, Vec<Event>) {
            let run = Uuid::now_v7();
            let event = |body| flow_event(run, body);
            let events = vec![
                event(EventBody::State {
                    state: State::new(StateType::Running),
                    details: None,
                }),
                event(EventBody::Log {
                    level: LogLevel::Info,
                    message: message.into(),
                    fields: serde_json::Map::new(),
                }),
            ];
            (run, events)
        };
        let ingester = Ingester::open(&mut conn).await.expect("ingester");
        let count = async |conn: &mut SqliteConnection, table: &str, run: Uuid| -> i64 {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table} WHERE {} = ?",
                if table == "runs" { "id" } else { "run_id" }
            )))
            .bind(run.as_bytes().as_slice())
            .fetch_one(conn)
            .await
            .expect("count")
        };
        for messages in [["fine", "also fine", "more"], ["fine", "bad", "more"]] {
            let (runs, requests): (Vec<Uuid>, Vec<Vec<Event>>) =
                messages.iter().map(|message| request(message)).unzip();
            let answers = ingest_group(&mut conn, &ingester, &requests).await;
            for ((message, run), answer) in messages.iter().zip(&runs).zip(answers) {
                let stored = if *message == "bad" {
                    assert!(answer.is_err(), "{message}: {answer:?}");
                    0
                } else {
                    let outcome = answer.expect("committed");
                    assert_eq!(outcome.accepted, 2, "{message}: {outcome:?}");
                    1
                };
                for table in ["runs", "run_states", "logs"] {
                    assert_eq!(
                        count(&mut conn, table, *run).await,
                        stored,
                        "{message} {table}"
                    );
                }
            }
        }
        // SQLite has no transaction open either: a transaction of sqlx's own begins and
        // commits.
        let mut tx = begin_write::<Sqlite>(&mut conn).await.expect("begin");
        sqlx::query("DELETE FROM reporter_drops")
            .execute(&mut *tx)
            .await
            .expect("write");
        tx.commit().await.expect("commit");
        ingester.close(&mut conn).await;
    }

    /// Writes `requests` as one group on the writer's thread (`ingest_alone`), one plan per
    /// request, nothing else coming (the group is written and the writer's turn ends); answers
    /// each request's answer, and checks that no transaction is left open for sqlx.
    async fn ingest_group(
        conn: &mut SqliteConnection,
        ingester: &Ingester,
        requests: &[Vec<Event>],
    ) -> Vec<Result<IngestOutcome, StoreError>> {
        let mut group = Vec::new();
        let mut answers = Vec::new();
        for events in requests {
            let (reply, answer) = oneshot::channel();
            group.push((
                Arc::new(Plan::new(vec![events.clone()]).expect("plan")),
                reply,
            ));
            answers.push(answer);
        }
        let (sender, mut receiver) = mpsc::channel(1);
        drop(sender);
        assert!(
            ingest_alone(conn, ingester, &mut receiver, group)
                .await
                .is_none()
        );
        assert!(!conn.is_in_transaction(), "sqlx sees a transaction open");
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.expect("every request is answered"));
        }
        outcomes
    }

    /// A group written on the writer's thread counts what its inserts store instead of reading
    /// their ids back. A run whose details come after another of its states (its row is
    /// stored) is merged into that row. An event sent again makes the group roll back and be
    /// written again with the inserts that return ids: each request's duplicates are counted
    /// right, the rest of the group is stored, nothing twice; a flow run it creates failed is
    /// queued for the alert matcher once (no trigger does it on SQLite).
    #[tokio::test]
    async fn an_ingest_group_counts_new_rows_and_one_sent_again_is_a_duplicate() {
        use flowkit_wire::event::{EventBody, RunDetails};
        use flowkit_wire::state::{State, StateType};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = migrated(&dir).await;
        let ingester = Ingester::open(&mut conn).await.expect("ingester");
        sqlx::query("INSERT INTO alert_rules (id, name, spec, created) VALUES (?, 'r', '{}', 0)")
            .bind(Uuid::now_v7().as_bytes().as_slice())
            .execute(&mut conn)
            .await
            .expect("a rule");
        let state = |run, kind, tag: Option<&str>| {
            flow_event(
                run,
                EventBody::State {
                    state: State::new(kind),
                    details: tag.map(|tag| {
                        Box::new(RunDetails {
                            tags: vec![tag.to_string().into()],
                            ..RunDetails::default()
                        })
                    }),
                },
            )
        };
        let outcome = |accepted, duplicates| IngestOutcome {
            accepted,
            duplicates,
        };
        let (late, other) = (Uuid::now_v7(), Uuid::now_v7());
        let running = state(late, StateType::Running, None);
        // Sent after Running, but it happened before, and carries the run's details.
        let mut pending = state(late, StateType::Pending, Some("late"));
        pending.timestamp = running.timestamp - chrono::Duration::milliseconds(5);
        let others = vec![
            state(other, StateType::Pending, Some("other")),
            state(other, StateType::Failed, None),
        ];
        let committed = async |conn: &mut SqliteConnection, requests: &[Vec<Event>]| {
            let answers = ingest_group(conn, &ingester, requests).await;
            answers
                .into_iter()
                .map(|answer| answer.expect("committed"))
                .collect::<Vec<_>>()
        };
        let first = committed(&mut conn, &[vec![running.clone()]]).await;
        assert_eq!(first, [outcome(1, 0)]);
        let second = committed(&mut conn, &[vec![pending.clone()]]).await;
        assert_eq!(second, [outcome(1, 0)]);
        let third = committed(&mut conn, &[vec![running.clone(), pending.clone()], others]).await;
        assert_eq!(third, [outcome(0, 2), outcome(2, 0)]);
        let row = async |conn: &mut SqliteConnection, run: Uuid| -> (String, String, i64, i64) {
            sqlx::query_as(
                "SELECT state, tags, created, \
                 (SELECT COUNT(*) FROM run_states WHERE run_id = runs.id) FROM runs WHERE id = ?",
            )
            .bind(run.as_bytes().as_slice())
            .fetch_one(conn)
            .await
            .expect("run row")
        };
        let (state_now, tags, created, states) = row(&mut conn, late).await;
        assert_eq!(state_now, "Running");
        assert_eq!(tags, r#"["late"]"#);
        assert_eq!(created, super::super::rows::micros(pending.timestamp));
        assert_eq!(states, 2);
        let (state_now, tags, _, states) = row(&mut conn, other).await;
        assert_eq!(
            (state_now.as_str(), tags.as_str(), states),
            ("Failed", r#"["other"]"#, 2)
        );
        let queued: Vec<(Vec<u8>, String)> =
            sqlx::query_as("SELECT run_id, state FROM alert_events")
                .fetch_all(&mut conn)
                .await
                .expect("alert events");
        assert_eq!(queued, [(other.as_bytes().to_vec(), "Failed".to_string())]);
        ingester.close(&mut conn).await;
    }

    /// Lookaside blocks SQLite holds for `conn` while one statement has `values` strings bound.
    async fn lookaside_in_use_binding(conn: &mut SqliteConnection, values: usize) -> i32 {
        let mut handle = conn.lock_handle().await.expect("handle");
        let raw = handle.as_raw_handle().as_ptr();
        let db = sqlite_ingest::borrowed(&mut handle).expect("borrow");
        let mut statement = db
            .prepare(&format!(
                "SELECT 1 WHERE 0 IN ({})",
                vec!["?"; values].join(", ")
            ))
            .expect("prepare");
        for i in 1..=values {
            statement
                .raw_bind_parameter(i, format!("a bound value {i:>10}"))
                .expect("bind");
        }
        let (mut current, mut highest) = (0, 0);
        // SAFETY: a live connection that only this thread uses while `handle` is held.
        #[allow(unsafe_code)]
        let code = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                raw,
                rusqlite::ffi::SQLITE_DBSTATUS_LOOKASIDE_USED,
                &mut current,
                &mut highest,
                0,
            )
        };
        assert_eq!(code, rusqlite::ffi::SQLITE_OK);
        drop(statement);
        drop(db);
        drop(handle);
        current
    }

    /// The writer's connection gets its wider lookaside pool (`widen_lookaside`): thousands of
    /// bound values fit in it, where SQLite's default holds about a hundred.
    #[tokio::test]
    async fn the_writer_connection_takes_the_wider_lookaside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lookaside.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .expect("url")
            .create_if_missing(true);
        let mut plain = SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        let default = lookaside_in_use_binding(&mut plain, 4000).await;
        assert!(
            default < 1000,
            "SQLite's default pool held {default} blocks"
        );
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        writer.clear_cached_statements().await.expect("clear");
        assert!(
            sqlite_ingest::widen_lookaside(&mut writer)
                .await
                .expect("config")
        );
        let widened = lookaside_in_use_binding(&mut writer, 4000).await;
        assert!(widened >= 4000, "the writer's pool held {widened} blocks");
    }

    /// The list query must walk an index in the page's order: no sort of all flow runs.
    #[tokio::test]
    async fn list_query_uses_an_index_without_sorting() {
        use super::super::RunFilter;
        use super::super::cursor::Cursor;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url).await.expect("connect");
        let cursor = Some(Cursor {
            micros: 1,
            id: Uuid::nil(),
        });
        let cases = [
            (RunFilter::default(), "runs_flow_list"),
            (
                RunFilter {
                    flow_name: Some("etl".into()),
                    ..RunFilter::default()
                },
                "runs_flow_name",
            ),
            (
                RunFilter {
                    deployment: Some("nightly".into()),
                    ..RunFilter::default()
                },
                "runs_flow_deployment",
            ),
            (
                RunFilter {
                    states: vec![flowkit_wire::state::StateType::Failed],
                    ..RunFilter::default()
                },
                "runs_flow_state",
            ),
            (
                RunFilter {
                    tag: Some("x".into()),
                    search: Some("a".into()),
                    ..RunFilter::default()
                },
                "runs_flow_list",
            ),
        ];
        for (filter, index) in cases {
            for after in [None, cursor] {
                // The very query the store runs, with its values bound: EXPLAIN needs them to
                // plan with the same shape.
                let mut explain = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
                queries::push_list_query(&mut explain, &filter, after, 51).expect("query");
                let plan: Vec<String> = explain
                    .build()
                    .fetch_all(&store.readers)
                    .await
                    .expect("explain")
                    .iter()
                    .map(|row| row.try_get::<String, _>("detail").expect("detail"))
                    .collect();
                let plan = plan.join(" | ");
                assert!(plan.contains(index), "{filter:?}: {plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            }
        }
        store.close().await;
    }

    /// A page of a flow run's children reads its task runs from `runs_children` in page
    /// order, its subflow runs from those created while it ran, and their states one
    /// `(group_id, run_id)` range each: no scan of the flow.
    #[tokio::test]
    async fn child_page_and_its_states_use_their_indexes() {
        use super::super::cursor::Cursor;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url).await.expect("connect");
        let plan = |mut explain: QueryBuilder<Sqlite>| {
            let readers = store.readers.clone();
            async move {
                let rows = explain.build().fetch_all(&readers).await.expect("explain");
                rows.iter()
                    .map(|row| row.try_get::<String, _>("detail").expect("detail"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
        };
        let flow = Uuid::now_v7();
        for after in [
            None,
            Some(Cursor {
                micros: 1,
                id: Uuid::nil(),
            }),
        ] {
            let mut explain = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
            let now = chrono::Utc::now();
            let window = queries::SubflowWindow::of(now, Some(now));
            queries::push_child_page_query(&mut explain, flow, window, after, 101).expect("query");
            let plan = plan(explain).await;
            let wanted = if after.is_some() {
                "runs_children (flow_run_id=? AND (created,id)>(?,?))"
            } else {
                "runs_children (flow_run_id=?)"
            };
            assert!(plan.contains(wanted), "{plan}");
            // The subflow runs: those created while the flow ran, not a lookup per task run.
            assert!(
                plan.contains("runs_subflows_by_created (created>? AND created<?)"),
                "{plan}"
            );
            assert!(!plan.contains("runs_subflows "), "{plan}");
        }
        let mut groups = std::collections::BTreeMap::new();
        groups.insert(flow, vec![Uuid::now_v7(), Uuid::now_v7()]);
        let sub = Uuid::now_v7();
        groups.insert(sub, vec![sub]);
        let mut explain = QueryBuilder::<Sqlite>::new("EXPLAIN QUERY PLAN ");
        queries::push_states_query(&mut explain, groups);
        let plan = plan(explain).await;
        assert_eq!(
            plan.matches("run_states_group (group_id=? AND run_id=?)")
                .count(),
            2,
            "{plan}"
        );
        store.close().await;
    }
}
