//! The sender thread: serializes what the sink thread hands over, POSTs it, retries, spools.
//!
//! Everything here runs on one thread, in one current-thread tokio runtime, one request at a
//! time: while a request is in flight the thread keeps taking events in and spooling the
//! oldest when memory is full, so a slow server never makes the sink thread wait.

use super::compact;
use super::encode::{self, Item};
use super::spool::{self, Key, Spool};
use super::{FlushOutcome, FlushReply, Notices, ReportConfig, Shared};
use crate::event::Event;
use crate::http::{self, Backoff};
use flowkit_wire::api::error::ErrorBody;
use flowkit_wire::api::health::Health;
use flowkit_wire::api::ingest::{IngestResponse, ReporterDrops};
use flowkit_wire::event::RUN_RECORD_KIND;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{Instant, sleep_until};

/// How often a reporter that does not hold the spool lock tries to take it, and how often the
/// holder lists the directory for files other processes added.
const SPOOL_MAINTENANCE: Duration = Duration::from_secs(5);

/// Some events, serialized: one JSON object per line (an event, or a run record standing for
/// several).
#[derive(Debug)]
struct Batch {
    key: Key,
    lines: Vec<u8>,
    /// Lines: the elements of the JSON array sent.
    count: usize,
    /// Events the lines stand for.
    events: usize,
    /// The batch is the spool file of this key (deleted once delivered), not held in memory.
    file: bool,
}

impl Batch {
    /// The request body: the lines as a JSON array.
    fn to_array(&self) -> Vec<u8> {
        let lines = self.lines.strip_suffix(b"\n").unwrap_or(&self.lines);
        let mut body = Vec::with_capacity(lines.len() + 2);
        body.push(b'[');
        body.extend_from_slice(lines);
        // Compact JSON never holds a raw newline, so every newline separates two events.
        for b in &mut body[1..] {
            if *b == b'\n' {
                *b = b',';
            }
        }
        body.push(b']');
        body
    }

    /// Splits a batch of two or more events into two halves, as memory batches.
    fn split(self) -> (Batch, Batch) {
        let half = self.count / 2;
        let cut = self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(half.saturating_sub(1))
            .map_or(self.lines.len(), |(i, _)| i + 1);
        let (first, second) = self.lines.split_at(cut);
        let events_in = |lines: &[u8]| -> usize {
            lines
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| encode::events_in_line(l).unwrap_or(1))
                .sum()
        };
        let first_events = events_in(first).min(self.events);
        (
            Batch {
                key: self.key,
                lines: first.to_vec(),
                count: half,
                events: first_events,
                file: false,
            },
            Batch {
                key: self.key,
                lines: second.to_vec(),
                count: self.count - half,
                events: self.events - first_events,
                file: false,
            },
        )
    }
}

/// The flush in progress: everyone who asked for it since it started is answered together.
struct Flush {
    replies: Vec<FlushReply>,
    deadline: Instant,
    /// The server cannot be reached now: spool at once rather than wait for the deadline.
    give_up: bool,
}

/// Why a POST did not deliver, when it should be retried.
enum Failure {
    Connect(String),
    Auth(StatusCode),
    Other(String),
}

/// Notices said once (per outage, for `down`).
#[derive(Default)]
struct Said {
    down: bool,
    auth: bool,
    refused_batch: bool,
    rejected_event: bool,
    too_big: bool,
    spool_full: bool,
    spool_error: bool,
    drops_404: bool,
    capped: bool,
}

pub(super) struct Sender {
    /// Built on the sender thread when it starts (loading TLS roots takes milliseconds that
    /// the first run of the process should not wait for); the error says why there is none.
    client: Result<reqwest::Client, String>,
    events_url: String,
    drops_url: String,
    auth: Option<HeaderValue>,
    cfg: ReportConfig,
    notices: Notices,
    shared: Arc<Shared>,
    /// Serialized batches, oldest first.
    queue: VecDeque<Batch>,
    /// Events in `queue`.
    queued: usize,
    /// The most `queued` has been (read by tests).
    #[cfg(test)]
    peak_queued: usize,
    /// Whether the server stores run records (`None`: not asked yet; see `learn_event_kinds`).
    records: Option<bool>,
    /// Scratch space of `encode::plan`.
    runs: HashMap<uuid::Uuid, usize>,
    health_url: String,
    /// Reused between intakes.
    spare: Vec<Event>,
    spool: Spool,
    next_maintenance: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    /// Dropped events the server has not been told about.
    unreported_drops: u64,
    /// Events dropped since the count was last logged.
    dropped_unlogged: u64,
    flush: Option<Flush>,
    /// Events were spooled while another process held the spool lock.
    spilled_unowned: bool,
    shutdown: bool,
    /// When the oldest event still with the sink thread started waiting (`None`: none waits):
    /// a partial batch is taken once it has waited the batch interval.
    window_start: Option<Instant>,
    /// When the last POST of events started.
    last_post: Option<Instant>,
    last_micros: u64,
    seq: u64,
    said: Said,
}

impl Sender {
    pub(super) fn new(cfg: ReportConfig, shared: Arc<Shared>) -> io::Result<Sender> {
        let auth = match &cfg.api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "FLOWKIT_API_KEY holds characters an HTTP header cannot carry",
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let now = Instant::now();
        let health_url = flowkit_wire::links::api(&cfg.api_url, "/health");
        Ok(Sender {
            client: Err("the sender thread has not started".to_string()),
            events_url: cfg.events_url(),
            drops_url: cfg.drops_url(),
            auth,
            notices: cfg.notices.clone(),
            spool: Spool::new(
                cfg.spool_dir.clone(),
                cfg.spool_max_events,
                cfg.spool_max_bytes,
            ),
            cfg,
            shared,
            queue: VecDeque::new(),
            queued: 0,
            #[cfg(test)]
            peak_queued: 0,
            records: None,
            runs: HashMap::new(),
            health_url,
            spare: Vec::new(),
            next_maintenance: now,
            failures: 0,
            retry_at: None,
            unreported_drops: 0,
            dropped_unlogged: 0,
            flush: None,
            spilled_unowned: false,
            shutdown: false,
            window_start: None,
            last_post: None,
            last_micros: 0,
            seq: 0,
            said: Said::default(),
        })
    }

    /// The thread's body: returns after a shutdown flush.
    pub(super) fn run(mut self) {
        // Made now so the lock can be taken at once; failing here is reported on first use.
        let _ = std::fs::create_dir_all(self.spool.dir());
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                self.say(&format!(
                    "flowkit: cannot start the reporter ({e}); events are not reported"
                ));
                return;
            }
        };
        let plain_http = self.events_url.starts_with("http://");
        self.client = http::client(self.cfg.request_timeout, !plain_http);
        if let Err(why) = &self.client {
            self.say(&format!(
                "flowkit: {why}; events are kept (spooled under {}) and not sent",
                self.spool.dir().display()
            ));
        }
        runtime.block_on(self.main_loop());
    }

    async fn main_loop(&mut self) {
        loop {
            self.intake();
            self.bound_memory();
            self.maintain_spool();
            if self.progress_flush() && self.shutdown {
                return;
            }
            self.publish();
            match self.next_batch() {
                Some(batch) => self.send(batch).await,
                None => self.idle().await,
            }
        }
    }

    fn publish(&self) {
        let stats = &self.shared.stats;
        stats.in_memory.store(self.queued as u64, Ordering::Relaxed);
        stats.spooled.store(self.spool.events(), Ordering::Relaxed);
    }

    fn say(&self, message: &str) {
        self.notices.say(message);
    }

    /// Takes what the sink thread handed over: whole batches, or everything once the batch
    /// interval has passed or a flush is asked for.
    fn intake(&mut self) {
        let batch_size = self.cfg.batch_size.max(1);
        let mut chunks = Vec::new();
        {
            let shared = self.shared.clone();
            let mut pending = shared.lock();
            let replies = std::mem::take(&mut pending.flush);
            if !replies.is_empty() {
                self.start_flush(replies);
            }
            // A top-level flow ended: send at once, unless a request started less than a batch
            // interval ago (a service ending flows back to back then sends a batch per
            // interval, not a request per flow).
            let send_now = std::mem::take(&mut pending.send_now)
                && self
                    .last_post
                    .is_none_or(|t| t.elapsed() >= self.cfg.batch_interval);
            self.shutdown |= pending.shutdown;
            let refused = std::mem::take(&mut pending.refused);
            let bus_dropped = std::mem::take(&mut pending.bus_dropped);
            if refused > 0 {
                self.shared
                    .stats
                    .dropped
                    .fetch_add(refused, Ordering::Relaxed);
                self.dropped_unlogged += refused;
            }
            self.unreported_drops += refused + bus_dropped;
            let len = pending.events.len();
            let compacted = pending.compact.events();
            self.shared
                .stats
                .compacted
                .store(pending.compact.pushed(), Ordering::Relaxed);
            if len + compacted > 0 && self.window_start.is_none() {
                self.window_start = Some(Instant::now());
            }
            // A compact backlog means the sender is behind: no batch is worth waiting for.
            let take_all = self.flush.is_some()
                || self.shutdown
                || send_now
                || compacted > 0
                || self
                    .window_start
                    .is_some_and(|t| t.elapsed() >= self.cfg.batch_interval);
            let n = if take_all {
                len
            } else {
                len / batch_size * batch_size
            };
            if n == len && compacted == 0 {
                self.window_start = None;
            }
            if n == len {
                std::mem::swap(&mut pending.events, &mut self.spare);
            } else {
                self.spare.extend(pending.events.drain(..n));
            }
            // The compact backlog comes after every whole event: a part of it is taken once
            // those are all taken, and the rest on the next calls (the sender takes them in
            // while a request is in flight), so a memory's worth is decoded at a time.
            if n == len && compacted > 0 {
                chunks = pending.compact.take(self.part_len().saturating_sub(n));
            }
        }
        let mut events = std::mem::take(&mut self.spare);
        if events.is_empty() && chunks.is_empty() {
            // Nothing moved: not counted as progress.
            self.spare = events;
            return;
        }
        let started = std::time::Instant::now();
        let mut count = events.len();
        self.take_in(&events);
        for chunk in chunks {
            events.clear();
            let in_chunk = chunk.events();
            count += in_chunk;
            if let Err(e) = compact::decode(chunk, &mut events) {
                // Never seen: the bytes are this process's own. What cannot be read is lost.
                let lost = (in_chunk - e.decoded) as u64;
                self.say(&format!(
                    "flowkit: the reporter could not read back its compact backlog ({e}); {lost} events are dropped"
                ));
                self.drop_events(lost);
                count -= in_chunk - e.decoded;
            }
            self.take_in(&events);
        }
        crate::bus::progressed();
        let stats = &self.shared.stats;
        stats
            .encode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stats.encoded.fetch_add(count as u64, Ordering::Relaxed);
        events.clear();
        if events.capacity() > 2 * self.part_len() {
            // Once behind with a large backlog of whole events: not kept for good.
            events = Vec::new();
        }
        self.spare = events;
    }

    /// Events serialized at a time while a backlog is taken in: the larger of the memory bound
    /// and a batch.
    fn part_len(&self) -> usize {
        self.cfg.memory_events.max(self.cfg.max_batch_size).max(1)
    }

    /// Serializes events taken in at the end of the queue, a memory's worth at a time, the
    /// oldest spooled in between: a backlog's JSON never waits in memory all at once.
    fn take_in(&mut self, events: &[Event]) {
        let records = self.records == Some(true);
        for part in events.chunks(self.part_len()) {
            let plan = encode::plan(part, records, &mut self.runs);
            for (i, item) in plan.iter().enumerate() {
                self.push_item(part, item);
                if i % 1024 == 1023 {
                    // A flush past its deadline waits on while a large backlog is serialized.
                    crate::bus::progressed();
                }
            }
            self.bound_memory();
        }
    }

    /// Whether events wait in the compact backlog of the sink thread.
    fn compact_backlog(&self) -> bool {
        !self.shared.lock().compact.is_empty()
    }

    /// Serializes one element (an event, or a run record) at the end of the queue.
    fn push_item(&mut self, events: &[Event], item: &Item) {
        let max = self.cfg.max_batch_size.max(1);
        if self.queue.back().is_none_or(|b| b.count >= max) {
            let key = self.next_key();
            self.queue.push_back(Batch {
                key,
                lines: Vec::with_capacity(max.min(1024) * 256),
                count: 0,
                events: 0,
                file: false,
            });
        }
        let Some(batch) = self.queue.back_mut() else {
            return;
        };
        let start = batch.lines.len();
        let n = item.events();
        match encode::write_item(&mut batch.lines, events, item) {
            Ok(written) => {
                batch.lines.push(b'\n');
                batch.count += 1;
                batch.events += n;
                self.queued += n;
                #[cfg(test)]
                {
                    self.peak_queued = self.peak_queued.max(self.queued);
                }
                if written.capped > 0 {
                    self.capped(written.capped);
                }
            }
            Err(_) => {
                // Only a hand-made `fields` map can fail to serialize; it could never be sent.
                batch.lines.truncate(start);
                self.shared
                    .stats
                    .rejected
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Counts values cut at the depth limit, and says so once.
    fn capped(&mut self, count: usize) {
        self.shared
            .stats
            .capped
            .fetch_add(count as u64, Ordering::Relaxed);
        if !self.said.capped {
            self.said.capped = true;
            self.say(&format!(
                "flowkit: a value nested deeper than {} levels (flow parameters or log fields) was cut at that depth and marked {:?}; later cuts are only counted",
                flowkit_wire::api::ingest::MAX_VALUE_DEPTH,
                flowkit_wire::api::ingest::DEPTH_MARK
            ));
        }
    }

    /// A key later than every key this process made before.
    fn next_key(&mut self) -> Key {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_micros = self.last_micros.max(now);
        self.seq += 1;
        Key {
            micros: self.last_micros,
            pid: std::process::id(),
            seq: self.seq,
        }
    }

    /// Spools the oldest batches while memory holds more than its bound (down to half of it,
    /// so spooling happens in chunks).
    fn bound_memory(&mut self) {
        if self.queued <= self.cfg.memory_events {
            return;
        }
        let target = self.cfg.memory_events / 2;
        while self.queued > target {
            let Some(chunk) = self.pop_chunk() else { break };
            self.spill(chunk);
        }
    }

    /// Takes the oldest memory batches, merged up to the largest batch size.
    fn pop_chunk(&mut self) -> Option<Batch> {
        let mut chunk = self.queue.pop_front()?;
        while let Some(next) = self.queue.front() {
            if chunk.count + next.count > self.cfg.max_batch_size {
                break;
            }
            if let Some(next) = self.queue.pop_front() {
                chunk.lines.extend_from_slice(&next.lines);
                chunk.count += next.count;
                chunk.events += next.events;
            }
        }
        self.queued -= chunk.events;
        Some(chunk)
    }

    /// Writes a memory batch to the spool, or drops and counts it when the spool is full.
    fn spill(&mut self, batch: Batch) {
        if batch.events == 0 || batch.file {
            return;
        }
        let packed = match spool::pack(&batch.lines) {
            Ok(packed) => packed,
            Err(e) => {
                self.spool_error(&e);
                self.drop_events(batch.events as u64);
                return;
            }
        };
        if !self.spool.fits(batch.events, packed.len()) {
            // Another process may have sent files since the last look.
            let _ = self.spool.scan();
        }
        if !self.spool.fits(batch.events, packed.len()) {
            if !self.said.spool_full {
                self.said.spool_full = true;
                self.say(&format!(
                    "flowkit: the spool under {} is full ({} events, at most {} events or {} bytes); newer events are dropped and counted",
                    self.spool.dir().display(),
                    self.spool.events(),
                    self.cfg.spool_max_events,
                    self.cfg.spool_max_bytes
                ));
            }
            self.drop_events(batch.events as u64);
            return;
        }
        if !self.spool.is_owner() {
            // Another process sends the spool: this flush cannot say it delivered everything.
            self.spilled_unowned = true;
        }
        if let Err(e) = self.spool.write(batch.key, &packed, batch.events) {
            self.spool_error(&e);
            self.drop_events(batch.events as u64);
        }
        crate::bus::progressed();
    }

    /// Says once that the spool cannot be written.
    fn spool_error(&mut self, e: &io::Error) {
        if !self.said.spool_error {
            self.said.spool_error = true;
            self.say(&format!(
                "flowkit: cannot write the spool under {}: {e}; events that do not fit in memory are dropped",
                self.spool.dir().display()
            ));
        }
    }

    fn drop_events(&mut self, count: u64) {
        self.shared
            .stats
            .dropped
            .fetch_add(count, Ordering::Relaxed);
        self.unreported_drops += count;
        self.dropped_unlogged += count;
    }

    /// Takes the spool lock when free, and lists the directory now and then.
    fn maintain_spool(&mut self) {
        if Instant::now() < self.next_maintenance {
            return;
        }
        self.next_maintenance = Instant::now() + SPOOL_MAINTENANCE;
        if let Err(e) = self.spool.try_own()
            && !self.said.spool_error
        {
            self.said.spool_error = true;
            self.say(&format!(
                "flowkit: cannot lock the spool under {}: {e}; spooled events are not sent by this process",
                self.spool.dir().display()
            ));
        }
        if let Err(e) = self.spool.scan()
            && !self.said.spool_error
        {
            self.said.spool_error = true;
            self.say(&format!(
                "flowkit: cannot list the spool under {}: {e}",
                self.spool.dir().display()
            ));
        }
    }

    fn start_flush(&mut self, replies: Vec<FlushReply>) {
        let deadline = Instant::now() + self.cfg.flush_timeout;
        match &mut self.flush {
            // Joined to the flush in progress, which now lasts until the latest deadline.
            Some(flush) => {
                flush.replies.extend(replies);
                flush.deadline = flush.deadline.max(deadline);
            }
            None => {
                self.flush = Some(Flush {
                    replies,
                    deadline,
                    give_up: false,
                })
            }
        }
        // Try now rather than at the end of a backoff; pick up what other processes left.
        self.retry_at = None;
        self.next_maintenance = Instant::now();
    }

    fn outcome(&self, complete: bool) -> FlushOutcome {
        FlushOutcome {
            complete,
            spooled: self.spool.events(),
            spool_dir: self.spool.dir().to_path_buf(),
        }
    }

    /// Answers the flush in progress when everything is delivered, or spools what is left when
    /// its time is up. Returns whether a flush was answered.
    fn progress_flush(&mut self) -> bool {
        let Some(flush) = &self.flush else {
            return false;
        };
        let unowned = self.spilled_unowned && !self.spool.is_owner();
        let backlog = self.compact_backlog();
        let done = self.queue.is_empty() && self.spool.oldest().is_none() && !unowned && !backlog;
        let stuck = self.queue.is_empty() && unowned && !backlog;
        if !done && !stuck && !flush.give_up && Instant::now() < flush.deadline {
            return false;
        }
        // Out of time: what waits in the compact backlog is serialized (and spooled) now; not
        // what keeps coming meanwhile, though (the loop ends). Not when the flush is done: an
        // intake could join a newer flush to this one, which would be answered complete
        // while its events are still queued.
        if !done {
            let waiting = self.shared.lock().compact.events();
            for _ in 0..waiting.div_ceil(self.part_len()) + 1 {
                if !self.compact_backlog() {
                    break;
                }
                self.intake();
            }
        }
        if self.spool.is_owner() {
            self.spilled_unowned = false;
        }
        if !done {
            while let Some(chunk) = self.pop_chunk() {
                self.spill(chunk);
            }
        }
        self.publish();
        if self.dropped_unlogged > 0 {
            self.say(&format!(
                "flowkit: {} events were dropped: events came faster than the reporter could serialize and spool them (its memory queue was full), or the spool under {} was full",
                self.dropped_unlogged,
                self.spool.dir().display()
            ));
            self.dropped_unlogged = 0;
        }
        let outcome = self.outcome(done);
        if !done && outcome.spooled > 0 {
            self.say(&format!(
                "flowkit: {} events are spooled under {} and will be sent when the server at {} answers",
                outcome.spooled,
                self.spool.dir().display(),
                self.cfg.api_url
            ));
        }
        if let Some(flush) = self.flush.take() {
            for reply in flush.replies {
                reply(outcome.clone());
            }
        }
        true
    }

    /// The oldest batch, from memory or the spool, unless waiting out a backoff.
    fn next_batch(&mut self) -> Option<Batch> {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        loop {
            let file = self.spool.oldest().map(|(k, f)| (k, f.path.clone()));
            let from_memory = match (self.queue.front(), &file) {
                (Some(b), Some((k, _))) => b.key <= *k,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if from_memory {
                let batch = self.queue.pop_front()?;
                self.queued -= batch.events;
                return Some(batch);
            }
            let (key, path) = file?;
            match spool::read_lines(&path) {
                Ok(spool::Lines {
                    lines,
                    count,
                    events,
                    skipped,
                }) => {
                    if skipped > 0 {
                        self.say(&format!(
                            "flowkit: skipped {skipped} damaged lines of the spool file {}",
                            path.display()
                        ));
                    }
                    if count == 0 {
                        self.spool.remove(&key);
                        continue;
                    }
                    return Some(Batch {
                        key,
                        lines,
                        count,
                        events,
                        file: true,
                    });
                }
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        self.say(&format!(
                            "flowkit: cannot read the spool file {}: {e}; it is skipped",
                            path.display()
                        ));
                    }
                    self.spool.remove(&key);
                }
            }
        }
    }

    /// When the partial batch waiting with the sink thread is due, if one waits.
    fn partial_batch_due(&self) -> Option<Instant> {
        self.window_start.map(|t| t + self.cfg.batch_interval)
    }

    /// Waits for events, a flush, the end of a backoff or the batch interval.
    async fn idle(&mut self) {
        let mut wake = self.next_maintenance;
        if let Some(t) = self.partial_batch_due() {
            wake = wake.min(t);
        }
        if let Some(t) = self.retry_at {
            wake = wake.min(t);
        }
        if let Some(flush) = &self.flush {
            wake = wake.min(flush.deadline);
        }
        let shared = self.shared.clone();
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep_until(wake) => {}
        }
    }

    /// POSTs one batch, taking events in meanwhile; handles the answer.
    async fn send(&mut self, batch: Batch) {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(why) => {
                let why = why.clone();
                self.failed(batch, Failure::Connect(why));
                return;
            }
        };
        if self.records.is_none() {
            self.learn_event_kinds(&client).await;
        }
        let mut request = client
            .post(&self.events_url)
            .header(CONTENT_TYPE, "application/json")
            .body(batch.to_array());
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        self.shared.stats.posts.fetch_add(1, Ordering::Relaxed);
        self.last_post = Some(Instant::now());
        let answer = async move {
            let response = request.send().await?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        let mut answer = std::pin::pin!(answer);
        let shared = self.shared.clone();
        let result = loop {
            // Wakes for a partial batch or a flush's deadline; else far enough to be never.
            let mut wake = self
                .partial_batch_due()
                .unwrap_or_else(|| Instant::now() + SPOOL_MAINTENANCE);
            if let Some(flush) = &self.flush {
                wake = wake.min(flush.deadline);
            }
            tokio::select! {
                result = &mut answer => break Some(result),
                _ = shared.wake.notified() => {}
                _ = sleep_until(wake) => {}
            }
            self.intake();
            self.bound_memory();
            self.publish();
            if self
                .flush
                .as_ref()
                .is_some_and(|f| Instant::now() >= f.deadline)
            {
                // The flush may not wait any longer: the batch goes to the spool.
                break None;
            }
        };
        match result {
            None => self.put_back(batch),
            Some(Err(e)) => {
                let failure = if e.is_connect() {
                    Failure::Connect(http::describe(&e))
                } else {
                    Failure::Other(http::describe(&e))
                };
                self.failed(batch, failure);
            }
            Some(Ok((status, retry_after, body))) => {
                self.answered(batch, status, retry_after, &body).await
            }
        }
    }

    async fn answered(
        &mut self,
        batch: Batch,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) {
        let stats = &self.shared.stats;
        match status.as_u16() {
            200..=299 => {
                // A 2xx whose body does not parse still delivered the batch. The server counts
                // the events a run record stands for; `ignored` counts elements.
                let (delivered, rejected) = match serde_json::from_slice::<IngestResponse>(body) {
                    Ok(answer) if answer.rejected.is_empty() => (batch.events, 0),
                    Ok(answer) => {
                        let kept = (answer.stored() + answer.ignored).min(batch.events);
                        (kept, batch.events - kept)
                    }
                    Err(_) => (batch.events, 0),
                };
                let accepted: IngestResponse = serde_json::from_slice(body).unwrap_or_default();
                stats
                    .delivered
                    .fetch_add(delivered as u64, Ordering::Relaxed);
                stats.rejected.fetch_add(rejected as u64, Ordering::Relaxed);
                if let Some(first) = accepted.rejected.first()
                    && !self.said.rejected_event
                {
                    self.said.rejected_event = true;
                    self.say(&format!(
                        "flowkit: the server at {} rejected {rejected} events of a batch (event {}: {}: {}); rejected events are counted, not retried",
                        self.cfg.api_url, first.index, first.error.code, first.error.message
                    ));
                }
                self.done_with(batch);
                self.succeeded();
                if self.unreported_drops > 0 {
                    self.report_drops().await;
                }
            }
            413 if batch.count > 1 => {
                let file = batch.file.then_some(batch.key);
                let (first, second) = batch.split();
                self.queued += first.events + second.events;
                self.queue.push_front(second);
                self.queue.push_front(first);
                if let Some(key) = file {
                    self.spool.remove(&key);
                }
                self.succeeded();
            }
            413 | 400 | 422 => {
                stats
                    .rejected
                    .fetch_add(batch.events as u64, Ordering::Relaxed);
                let said = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    &mut self.said.too_big
                } else {
                    &mut self.said.refused_batch
                };
                if !*said {
                    *said = true;
                    let message = match serde_json::from_slice::<ErrorBody>(body) {
                        Ok(error) => error.error.to_string(),
                        Err(_) => {
                            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                        }
                    };
                    self.say(&format!(
                        "flowkit: the server at {} refused a batch of {} events ({status}: {message}); it is dropped, and later refused batches are only counted",
                        self.cfg.api_url, batch.events
                    ));
                }
                self.done_with(batch);
                self.succeeded();
            }
            401 | 403 => self.failed(batch, Failure::Auth(status)),
            _ => {
                self.failed(batch, Failure::Other(format!("it answered {status}")));
                // A server that says when to come back (503 of a full ingest budget, 429) is
                // heard, within the reporter's longest backoff.
                if let Some(wait) = retry_after {
                    let wait = wait.min(self.cfg.max_retry_delay);
                    let at = Instant::now() + wait;
                    self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
                }
            }
        }
    }

    /// Asks the server which event kinds it stores (until it answers): run records are sent
    /// only to a server that lists them in `GET /api/v1/health`; an older one gets single
    /// events. Waits at most two seconds (the health route is cheap on a live server).
    async fn learn_event_kinds(&mut self, client: &reqwest::Client) {
        let mut request = client.get(&self.health_url);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let asked = async {
            let response = request.send().await?;
            let status = response.status();
            let health = if status.is_success() {
                response.json::<Health>().await.ok()
            } else {
                None
            };
            Ok::<_, reqwest::Error>((status, health))
        };
        match tokio::time::timeout(Duration::from_secs(2), asked).await {
            Ok(Ok((status, health))) if status.is_success() || status.is_client_error() => {
                self.records = Some(health.is_some_and(|h| h.accepts_event_kind(RUN_RECORD_KIND)));
            }
            // Not reachable now (or a 5xx): asked again before the next POST.
            _ => {}
        }
    }

    /// Forgets a batch the server has answered for good.
    fn done_with(&mut self, batch: Batch) {
        if batch.file {
            self.spool.remove(&batch.key);
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        if self.said.down {
            self.said.down = false;
            self.say(&format!(
                "flowkit: the server at {} answers again",
                self.cfg.api_url
            ));
        }
    }

    /// Keeps a batch that was not delivered, to send again first.
    fn put_back(&mut self, batch: Batch) {
        if !batch.file {
            self.queued += batch.events;
            self.queue.push_front(batch);
        }
    }

    fn failed(&mut self, batch: Batch, failure: Failure) {
        self.put_back(batch);
        self.failures = self.failures.saturating_add(1);
        // Jittered, so processes that lost the same server do not come back in step.
        let delay = Backoff::doubling(self.cfg.retry_delay, self.cfg.max_retry_delay, 0.2)
            .after(self.failures);
        self.retry_at = Some(Instant::now() + delay);
        let hopeless = matches!(failure, Failure::Connect(_) | Failure::Auth(_));
        if let Some(flush) = &mut self.flush {
            flush.give_up |= hopeless;
        }
        match failure {
            Failure::Auth(status) => {
                if !self.said.auth {
                    self.said.auth = true;
                    self.say(&format!(
                        "flowkit: the server at {} answered {status}: FLOWKIT_API_KEY missing or lacks the report scope; events are kept (spooled under {}) and retried",
                        self.cfg.api_url,
                        self.spool.dir().display()
                    ));
                }
            }
            Failure::Connect(reason) | Failure::Other(reason) => {
                if !self.said.down {
                    self.said.down = true;
                    self.say(&format!(
                        "flowkit: cannot deliver events to the server at {} ({reason}); they are kept and retried",
                        self.cfg.api_url
                    ));
                }
            }
        }
    }

    /// Tells the server how many events it will never see.
    async fn report_drops(&mut self) {
        let dropped = self.unreported_drops;
        let body = ReporterDrops {
            dropped,
            worker: self.cfg.worker.clone(),
        };
        let Ok(client) = &self.client else { return };
        let mut request = client.post(&self.drops_url).json(&body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                self.unreported_drops -= dropped;
            }
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                self.unreported_drops -= dropped;
                if !self.said.drops_404 {
                    self.said.drops_404 = true;
                    self.say(&format!(
                        "flowkit: the server at {} does not take drop counts (404 on /api/v1/reporter-drops); {dropped} events were dropped",
                        self.cfg.api_url
                    ));
                }
            }
            // Kept, and sent again after the next delivered batch.
            _ => {}
        }
    }
}

/// The `Retry-After` of an answer, in its seconds form (the HTTP-date form is not used by
/// flowkit-server and is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lines: &[&str]) -> Batch {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        Batch {
            key: Key {
                micros: 1,
                pid: 1,
                seq: 1,
            },
            lines: bytes,
            count: lines.len(),
            events: lines.len(),
            file: false,
        }
    }

    #[test]
    fn the_body_is_a_json_array_of_the_lines() {
        let b = batch(&[r#"{"a":"x\ny"}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        let body = b.to_array();
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!([{"a": "x\ny"}, {"b": 2}, {"c": 3}])
        );
        assert_eq!(batch(&[]).to_array(), b"[]");
    }

    /// A sender spooling into `dir` that keeps at most 1 000 events in memory (batches of 100
    /// to 500, to a server that never answers), and the state it shares with the sink thread.
    fn sender_of_a_thousand(dir: &tempfile::TempDir) -> (Sender, Arc<Shared>) {
        let cfg = ReportConfig::new("http://127.0.0.1:9", dir.path().join("spool"))
            .memory_events(1_000)
            .batch_size(100, 500);
        let shared = Arc::new(Shared {
            pending: std::sync::Mutex::new(super::super::Pending::default()),
            wake: tokio::sync::Notify::new(),
            stats: super::super::Stats::default(),
        });
        let sender = Sender::new(cfg, shared.clone()).expect("sender");
        (sender, shared)
    }

    /// A state event of a new task run of the flow run `flow`.
    fn task_state(flow: uuid::Uuid, state: crate::State) -> Event {
        Event {
            id: crate::new_id(),
            run_id: crate::new_id(),
            parent_run_id: Some(flow),
            flow_run_id: Some(flow),
            run_kind: crate::event::RunKind::Task,
            name: "step".into(),
            attempt: 1,
            timestamp: chrono::Utc::now(),
            lease: None,
            body: crate::event::EventBody::State {
                state,
                details: None,
            },
        }
    }

    /// A backlog far larger than the memory bound, taken in at once (the sender was behind):
    /// its serialized form never waits in memory whole, the oldest is spooled as it goes.
    #[test]
    fn a_large_backlog_is_spooled_as_it_is_serialized() {
        use crate::{State, StateType};
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut sender, shared) = sender_of_a_thousand(&dir);
        let flow = crate::new_id();
        let events: Vec<Event> = (0..20_000)
            .map(|_| task_state(flow, State::new(StateType::Completed)))
            .collect();
        {
            let mut pending = shared.lock();
            pending.events = events;
            pending.send_now = true;
        }
        sender.intake();
        // One part (the larger of the memory bound and a batch) is serialized before the
        // oldest are spooled.
        assert!(
            sender.peak_queued <= 2_000,
            "{} events waited in memory, serialized, at once: the bound is 1 000",
            sender.peak_queued
        );
        assert_eq!(
            sender.queued as u64 + sender.spool.events(),
            20_000,
            "every event is in memory or in the spool"
        );
    }

    /// A compact backlog (the sink thread encoded what the sender could not take in) is
    /// taken in a memory's worth at a time, after the whole events, in order, and all of it.
    #[test]
    fn a_compact_backlog_is_taken_in_by_parts_in_order() {
        use crate::{State, StateType};
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut sender, shared) = sender_of_a_thousand(&dir);
        let flow = crate::new_id();
        let events: Vec<Event> = (0..60_000)
            .map(|i| {
                let state = State::with_message(StateType::Failed, format!("error {i}"));
                task_state(flow, state)
            })
            .collect();
        {
            let mut pending = shared.lock();
            pending.events = events[..10_000].to_vec();
            for event in &events[10_000..] {
                pending.compact.push(event);
            }
        }
        sender.intake();
        let taken = sender.queued as u64 + sender.spool.events();
        assert!(
            (10_000..=20_000).contains(&taken),
            "the whole events and a part of the compact backlog are taken: {taken}"
        );
        assert!(sender.compact_backlog());
        let mut calls = 1;
        while sender.compact_backlog() {
            sender.intake();
            calls += 1;
        }
        assert!(calls >= 5, "{calls}");
        assert!(sender.peak_queued <= 2_000, "{}", sender.peak_queued);
        assert_eq!(sender.queued as u64 + sender.spool.events(), 60_000);
        let mut lines = Vec::new();
        for line in super::super::spooled_lines(sender.spool.dir()).expect("read the spool") {
            lines.extend_from_slice(line.as_bytes());
            lines.push(b'\n');
        }
        for batch in &sender.queue {
            lines.extend_from_slice(&batch.lines);
        }
        let got: Vec<uuid::Uuid> = lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Event>(l).expect("an event").id)
            .collect();
        let want: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        assert!(got == want, "every event, once, in order");
        assert_eq!(shared.stats.snapshot().encoded, 60_000);
    }

    #[test]
    fn split_cuts_at_a_line_boundary() {
        let (a, b) = batch(&["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]).split();
        assert_eq!((a.count, b.count), (1, 2));
        assert_eq!(a.lines, b"{\"n\":1}\n");
        assert_eq!(b.lines, b"{\"n\":2}\n{\"n\":3}\n");
        let (a, b) = batch(&["{}", "{}"]).split();
        assert_eq!((a.count, b.count), (1, 1));
        assert_eq!(a.lines, b"{}\n");
    }
}
