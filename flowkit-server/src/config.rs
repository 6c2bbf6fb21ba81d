//! Command line and environment: what `flowkit-server --help` explains, parsed into a
//! [`Config`] and checked before anything binds.

use crate::allowed_hosts::AllowedHosts;
use crate::auth::{ApiKey, ApiKeys};
use crate::connections::{ConnectionLimits, DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_BOUND};
use crate::stream_slots::{DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_KEY};
use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Default address: loopback only, so a server started without keys is not reachable from
/// other machines.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4200);
/// Default bound of a request body: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;
/// Default bound of the number of events in one batch.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// Default of `--search-budget`.
pub const DEFAULT_SEARCH_BUDGET: Duration = Duration::from_secs(2);
/// Default time an answer of `/api/stats` is reused.
pub const DEFAULT_STATS_TTL: Duration = Duration::from_secs(1);
/// Default bound of the bytes of ingest request bodies in flight at once: 256 MiB.
pub const DEFAULT_INGEST_MEMORY: usize = 256 * 1024 * 1024;

/// `flowkit-server`: receives run events from flowkit programs over HTTP, stores them and
/// serves them to the dashboard and the API.
///
/// Every flag can also be given by the environment variable shown next to it.
#[derive(Debug, Parser)]
#[command(name = "flowkit-server", version, about, long_about)]
pub struct Cli {
    /// Address and port to listen on. Without API keys, only a loopback address
    /// (127.0.0.1, ::1, localhost) is accepted unless --insecure-open is given.
    #[arg(long, env = "FLOWKIT_BIND", default_value = "127.0.0.1:4200", value_parser = parse_bind)]
    pub bind: SocketAddr,

    /// Database: `sqlite://PATH` (a file, created with its tables if missing) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` to share one database between several servers.
    /// Migrations are applied at start.
    #[arg(
        long,
        env = "FLOWKIT_DATABASE_URL",
        default_value = "sqlite://flowkit.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// How long runs are kept: runs this server first received longer ago than this (by its own
    /// clock, never a client's timestamp) are deleted, each flow run with its task runs and
    /// logs, by a background task (checked hourly). A duration such as `30d`, `12h`, `90days`; `off` keeps
    /// everything.
    #[arg(long, env = "FLOWKIT_RETENTION", default_value = "30d", value_parser = parse_retention)]
    pub retention: Retention,

    /// An API key, as `NAME:SECRET:SCOPES`; repeat the flag for several keys. SCOPES is a
    /// comma-separated list of `read` (GET routes), `report` (sending events), `trigger`
    /// (creating, cancelling and retrying runs of deployments), `worker` (registering
    /// deployments and claiming their runs; a worker process uses `report,worker`) and `admin`
    /// (everything). `trigger=FLOW/NAME` and `worker=FLOW/NAME` (repeatable) limit that scope
    /// to those deployments, so a key is safe to hand to another team: e.g.
    /// `team-a:SECRET:trigger=train/nightly` triggers, cancels and retries runs of
    /// train/nightly only, and reads the runs it created (the run, its result, its logs)
    /// without `read`. Runs record who created them (`created_by`): `key:NAME`, or
    /// `dashboard:key:NAME` from the dashboard. Clients send `Authorization: Bearer SECRET`.
    /// The secret must be at least 16 characters. In the environment variable, separate keys
    /// with `;`. Keys can also be created and revoked at runtime (`flowkit keys`, `POST
    /// /api/v1/keys`, scope admin), stored hashed in the database; a key given here cannot be
    /// revoked that way.
    #[arg(
        long = "api-key",
        value_name = "NAME:SECRET:SCOPES",
        env = "FLOWKIT_API_KEYS",
        value_delimiter = ';',
        hide_env_values = true
    )]
    // Parsed in `into_config`, not by clap: clap's error would echo the whole value, secret
    // included.
    pub api_keys: Vec<String>,

    /// Serve without API keys on a non-loopback address: anyone who can reach the port can
    /// read every run and send events. Only for trusted networks.
    #[arg(long)]
    pub insecure_open: bool,

    /// A host name this server may be reached by, besides localhost, 127.0.0.1, [::1] (any
    /// port) and the bind address: `NAME` (any port), `NAME:PORT`, an IP address, or `*` for
    /// any. Repeat the flag for several; in the environment variable, separate them with `,`.
    /// Without API keys, a request naming any other `Host` is refused with 403
    /// `forbidden_host`: a web page cannot read or change runs by pointing its own name at
    /// this server (DNS rebinding). With API keys the `Host` is not checked unless this flag is
    /// given.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "FLOWKIT_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Largest request body accepted, e.g. `8MiB`, `512KiB` or a number of bytes; larger
    /// bodies get 413.
    #[arg(long, env = "FLOWKIT_MAX_BODY", default_value = "8MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// Most events accepted in one batch (`POST /api/events`); larger batches get 413. At
    /// least 1.
    #[arg(long, env = "FLOWKIT_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH, value_parser = parse_max_batch)]
    pub max_batch: usize,

    /// Most bytes of ingest request bodies (`POST /api/events`) held at once, e.g. `256MiB`:
    /// a batch that would go over it is answered 503 `unavailable` with `Retry-After` before
    /// its body is read (the reporter retries it). Each batch counts its `Content-Length`, or
    /// `--max-body` when it has none. Must be at least `--max-body`. The memory a batch takes
    /// while parsed is a small multiple of its body.
    #[arg(long, env = "FLOWKIT_INGEST_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub ingest_memory: usize,

    /// How long the idempotency key of a trigger is remembered (`Idempotency-Key`): within
    /// it, the same key with the same body gives back the run it created, with another body a
    /// 409. A duration such as `24h`, `30m`, `7d`.
    #[arg(long, env = "FLOWKIT_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub idempotency_ttl: Duration,

    /// How long a worker's lease on a run lasts unless renewed by a heartbeat: a run whose
    /// worker stops heartbeating is decided (`Crashed`, re-queued, `Cancelled`) this long after
    /// its last heartbeat. 1 s to 1 h.
    #[arg(long, env = "FLOWKIT_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,

    /// The URL people reach this server at (behind a proxy, say `https://flowkit.example.com`):
    /// alert messages link to run pages under it. Without it, links use the bind address.
    #[arg(long, env = "FLOWKIT_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// A run created by a schedule and not claimed by a worker this long after its instant
    /// becomes `Late` (still claimable; alerts can say so). 1 s to 7 d, e.g. `60s`, `5m`.
    #[arg(long, env = "FLOWKIT_LATE_AFTER", default_value = "60s", value_parser = parse_late_after)]
    pub late_after: Duration,
    /// The wait before an alert delivery that failed is tried again; it doubles after every
    /// further failure, up to 6 h, for at most 10 attempts. 1 s to 1 h, e.g. `60s`, `5m`.
    #[arg(long, env = "FLOWKIT_ALERT_RETRY_AFTER", default_value = "60s", value_parser = parse_alert_retry_after)]
    pub alert_retry_after: Duration,

    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish before the
    /// server stops anyway.
    #[arg(long, env = "FLOWKIT_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// How long a client may take to send a complete request head (request line and
    /// headers), counted from when it connects or starts its next request; a connection still
    /// short of one then is closed. A duration such as `10s`, `500ms` (up to 1 h).
    #[arg(long, env = "FLOWKIT_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,

    /// How long a keep-alive connection may stay open with no request in flight before the
    /// server closes it. Requests in flight are never cut: live streams, `?wait=`,
    /// `Prefer: wait` and workers' claim long-polls last as long as they need. Up to 1 h.
    #[arg(long, env = "FLOWKIT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Longest pause in a request body: a client that sends no byte of its body for this long
    /// has its connection closed without an answer, freeing what it had sent. It bounds each
    /// pause, not the whole upload. Up to 1 h.
    #[arg(long, env = "FLOWKIT_BODY_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub body_timeout: Duration,

    /// Most client connections open at once (1 to 1000000), long waits and live streams
    /// included. At the bound the server accepts nothing more: new connections wait in the
    /// kernel's listen backlog until an open one closes. Keep it below the process's limit of
    /// open files.
    #[arg(long, env = "FLOWKIT_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// Most database time a runs listing filtered by `search` or `tag` may take (such a
    /// filter can scan every run): past it the query is stopped and the client gets 422
    /// `filter_too_broad`, asking to narrow the filter. At most 2 such listings run at once;
    /// the other read connections stay free for plain lookups. 1 ms to 1 h.
    #[arg(long, env = "FLOWKIT_SEARCH_BUDGET", default_value = "2s", value_parser = parse_timeout)]
    pub search_budget: Duration,

    /// Most live streams (`GET /api/v1/stream`, one per open dashboard tab) open at once on
    /// this server (1 to 1000000); one more is answered 503 `unavailable` with `Retry-After`.
    /// Streams also count against --max-connections.
    #[arg(long, env = "FLOWKIT_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS, value_parser = parse_max_streams)]
    pub max_streams: usize,

    /// Most live streams one API key holds open at once (all clients of a server without keys
    /// count as one key); one more is answered 429 `too_many_requests` with `Retry-After`.
    #[arg(long, env = "FLOWKIT_MAX_STREAMS_PER_KEY", default_value_t = DEFAULT_MAX_STREAMS_PER_KEY, value_parser = parse_max_streams)]
    pub max_streams_per_key: usize,
}

/// How long runs are kept; `None` keeps them forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// The server's configuration, from [`Cli`] or built by hand (tests, the bench).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Which database.
    pub database_url: String,
    /// Runs older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Serve without keys on a non-loopback address.
    pub insecure_open: bool,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// The timeouts and the bound of client connections.
    pub connections: ConnectionLimits,
    /// What the request handlers need.
    pub settings: Settings,
}

/// The part of the configuration the request handlers use.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The API keys; empty means open (loopback only unless `insecure_open`).
    pub api_keys: ApiKeys,
    /// The `Host`s a request may name without keys (or whenever given): see
    /// [`crate::allowed_hosts`].
    pub allowed_hosts: AllowedHosts,
    /// Largest request body of `POST /api/events`, in bytes.
    pub max_body: usize,
    /// Most events in one batch (at least 1).
    pub max_batch: usize,
    /// Most bytes of ingest bodies in flight at once (at least `max_body`).
    pub ingest_memory: usize,
    /// How many run changes the live stream buffers for a slow client before telling it to
    /// refetch.
    pub stream_capacity: usize,
    /// Most database time of a `search`/`tag` listing.
    pub search_budget: Duration,
    /// How long an answer of `/api/stats` is reused for the same window (the dashboard asks
    /// about once a second per tab).
    pub stats_ttl: Duration,
    /// Most live streams open at once (at least 1).
    pub max_streams: usize,
    /// Most live streams of one API key open at once (at least 1).
    pub max_streams_per_key: usize,
    /// How long a trigger's idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How long a worker's lease lasts unless renewed.
    pub lease: Duration,
    /// `--public-url`: the base of the links of alert messages; `None` = the bind address.
    pub public_url: Option<String>,
    /// A scheduled run not claimed this long after its instant becomes `Late`.
    pub late_after: Duration,
    /// `--alert-retry-after`: the wait before a failed alert delivery's second attempt.
    pub alert_retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            api_keys: ApiKeys::default(),
            allowed_hosts: AllowedHosts::default(),
            max_body: DEFAULT_MAX_BODY,
            max_batch: DEFAULT_MAX_BATCH,
            ingest_memory: DEFAULT_INGEST_MEMORY,
            stream_capacity: 4096,
            search_budget: DEFAULT_SEARCH_BUDGET,
            stats_ttl: DEFAULT_STATS_TTL,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_key: DEFAULT_MAX_STREAMS_PER_KEY,
            idempotency_ttl: flowkit_wire::api::deployments::DEFAULT_IDEMPOTENCY_TTL,
            lease: flowkit_wire::api::workers::DEFAULT_LEASE,
            public_url: None,
            late_after: DEFAULT_LATE_AFTER,
            alert_retry_after: crate::alerts::FIRST_BACKOFF,
        }
    }
}

impl Config {
    /// A configuration with the defaults of the command line for `database_url`.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            bind: DEFAULT_BIND,
            database_url: database_url.into(),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            insecure_open: false,
            shutdown_timeout: Duration::from_secs(30),
            connections: ConnectionLimits::default(),
            settings: Settings::default(),
        }
    }

    /// Checks what can be checked before connecting and binding: see [`check_bind`] and
    /// [`Settings::check`].
    pub fn check(&self) -> Result<(), ConfigError> {
        check_bind(
            self.bind,
            !self.settings.api_keys.is_empty(),
            self.insecure_open,
        )?;
        self.settings.check()
    }
}

impl Settings {
    /// Refuses limits that would make every batch fail: a `max_batch` of 0, an
    /// `ingest_memory` below `max_body` (a full-size batch could never be admitted).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_batch == 0 {
            return Err(ConfigError::InvalidLimit(
                "--max-batch must be at least 1: with 0 every batch would be refused".into(),
            ));
        }
        if self.ingest_memory < self.max_body {
            return Err(ConfigError::InvalidLimit(format!(
                "--ingest-memory ({} bytes) must be at least --max-body ({} bytes): a batch of \
                 the largest accepted size could never be admitted",
                self.ingest_memory, self.max_body
            )));
        }
        Ok(())
    }
}

impl Cli {
    /// The configuration these flags describe; fails on duplicated key names or secrets.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        Ok(Config {
            bind: self.bind,
            database_url: self.database_url,
            retention: self.retention.0,
            insecure_open: self.insecure_open,
            shutdown_timeout: self.shutdown_timeout,
            connections: ConnectionLimits {
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                body_timeout: self.body_timeout,
                max_connections: self.max_connections,
            },
            settings: Settings {
                api_keys: ApiKeys::new(parse_keys(&self.api_keys)?)?,
                allowed_hosts: AllowedHosts::parse(&self.allowed_hosts)
                    .map_err(ConfigError::InvalidHost)?,
                max_body: self.max_body,
                max_batch: self.max_batch,
                ingest_memory: self.ingest_memory,
                search_budget: self.search_budget,
                max_streams: self.max_streams,
                max_streams_per_key: self.max_streams_per_key,
                idempotency_ttl: self.idempotency_ttl,
                lease: self.lease,
                public_url: self.public_url,
                late_after: self.late_after,
                alert_retry_after: self.alert_retry_after,
                ..Settings::default()
            },
        })
    }
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No API keys and a non-loopback address, without `--insecure-open`.
    #[error(
        "refusing to listen on {0} without API keys: anyone who can reach it could read every \
         run and send events. Give keys with --api-key NAME:SECRET:SCOPES (or FLOWKIT_API_KEYS), \
         listen on a loopback address (--bind 127.0.0.1:4200), or pass --insecure-open if this \
         network is trusted"
    )]
    OpenOnNetwork(SocketAddr),
    /// An `--api-key` value does not parse; only the key's name is shown, never its secret.
    #[error("API key {name:?}: {why}")]
    InvalidKey {
        /// The part before the first `:`.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Two keys share a name.
    #[error("two API keys are named {0:?}: key names must be unique")]
    DuplicateKeyName(String),
    /// Two keys share a secret, so a request could not tell which one it used.
    #[error("API keys {0:?} and {1:?} have the same secret")]
    DuplicateKeySecret(String, String),
    /// An `--allowed-host` value that is not a host name.
    #[error("{0}")]
    InvalidHost(String),
    /// A limit that would make the server refuse every request it bounds.
    #[error("{0}")]
    InvalidLimit(String),
}

/// Parses `NAME:SECRET:SCOPES` values; an error names the key, never its secret.
fn parse_keys(values: &[String]) -> Result<Vec<ApiKey>, ConfigError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|value| {
            value
                .parse::<ApiKey>()
                .map_err(|why| ConfigError::InvalidKey {
                    name: value
                        .trim()
                        .split_once(':')
                        .map_or("(no name)", |(name, _)| name)
                        .to_string(),
                    why: why.replace(value.as_str(), "<key>"),
                })
        })
        .collect()
}

/// The one rule about where the server may listen: without API keys, only on loopback, unless
/// the operator says the network is trusted.
pub fn check_bind(
    bind: SocketAddr,
    has_keys: bool,
    insecure_open: bool,
) -> Result<(), ConfigError> {
    if has_keys || insecure_open || bind.ip().is_loopback() {
        Ok(())
    } else {
        Err(ConfigError::OpenOnNetwork(bind))
    }
}

/// Parses `ADDR:PORT`; `localhost:PORT` means `127.0.0.1:PORT`.
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in {s:?}"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse()
        .map_err(|_| format!("expected ADDR:PORT such as 127.0.0.1:4200 or [::1]:4200, got {s:?}"))
}

/// Parses a retention: a humantime duration (`30d`, `12h`) or `off`.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(Retention(None));
    }
    let duration = humantime::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 30d or 12h, or `off`: {e}"))?;
    if duration.is_zero() {
        return Err(
            "a retention of zero would delete every run; use `off` to keep everything".into(),
        );
    }
    Ok(Retention(Some(duration)))
}

/// Parses the idempotency-key TTL: a positive duration of at most a year (chrono adds it to
/// instants, and a key kept longer is a leak rather than a guarantee).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 24h or 30m: {e}"))?;
    if duration.is_zero() || duration > Duration::from_secs(366 * 24 * 3600) {
        return Err("expected a duration between 1s and 366d".into());
    }
    Ok(duration)
}

/// Parses `--max-batch`: a whole number of events, at least 1.
pub fn parse_max_batch(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number of events such as 10000, got {s:?}"))?;
    if n == 0 {
        return Err("a batch limit of 0 would refuse every batch: give at least 1".into());
    }
    Ok(n)
}

/// Parses `--public-url`: an `http` or `https` URL, kept without a trailing `/`.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    flowkit_wire::api::alerts::check_url(s.trim())?;
    Ok(s.trim().trim_end_matches('/').to_string())
}

/// The default of `--late-after`.
pub const DEFAULT_LATE_AFTER: Duration = Duration::from_secs(60);

/// Parses `--late-after`: a duration from 1 s to 7 days.
pub fn parse_late_after(s: &str) -> Result<Duration, String> {
    let after = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 60s or 5m: {e}"))?;
    if after < Duration::from_secs(1) || after > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("{s:?}: --late-after is 1s to 7d"));
    }
    Ok(after)
}

/// Parses `--alert-retry-after`: a duration from 1 s to 1 h.
pub fn parse_alert_retry_after(s: &str) -> Result<Duration, String> {
    let after = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 60s or 5m: {e}"))?;
    if after < Duration::from_secs(1) || after > Duration::from_secs(3600) {
        return Err(format!("{s:?}: --alert-retry-after is 1s to 1h"));
    }
    Ok(after)
}

/// Parses `--lease`: a duration from 1 s to 1 h.
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    let lease = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if lease < Duration::from_secs(1) || lease > Duration::from_secs(3600) {
        return Err(format!("{s:?}: a lease is 1s to 1h"));
    }
    Ok(lease)
}

/// Parses a connection timeout (`--header-timeout`, `--idle-timeout`, `--body-timeout`): a
/// duration from 1 ms to 1 h.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(s.trim())
        .map_err(|e| format!("expected a duration such as 10s or 500ms: {e}"))?;
    if timeout.is_zero() {
        return Err("a timeout of zero would close every connection at once".into());
    }
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(3600) {
        return Err(format!("{s:?}: a timeout is 1ms to 1h"));
    }
    Ok(timeout)
}

/// Parses `--max-streams` and `--max-streams-per-key`: 1 to [`MAX_CONNECTIONS_BOUND`].
pub fn parse_max_streams(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of streams such as 100, got {s:?}"))?;
    if n == 0 || n > MAX_CONNECTIONS_BOUND {
        return Err(format!(
            "a bound of streams is 1 to {MAX_CONNECTIONS_BOUND}, got {n}"
        ));
    }
    Ok(n)
}

/// Parses `--max-connections`: 1 to [`MAX_CONNECTIONS_BOUND`].
pub fn parse_max_connections(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of connections such as 1024, got {s:?}"))?;
    if n == 0 {
        return Err("a bound of zero connections would serve nobody".into());
    }
    if n > MAX_CONNECTIONS_BOUND {
        return Err(format!("at most {MAX_CONNECTIONS_BOUND} connections"));
    }
    Ok(n)
}

/// Parses a size: bytes, or a number with `KiB`/`MiB`/`GiB` (also `KB`/`MB`/`GB`, taken as
/// powers of 1024, and `K`/`M`/`G`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("expected a size such as 8MiB or 1048576, got {s:?}"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}: use KiB, MiB or GiB"
            ));
        }
    };
    let size = n
        .checked_mul(factor)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if size == 0 {
        return Err("the body limit must be greater than zero".into());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["flowkit-server"]).expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(config.bind, DEFAULT_BIND);
        assert_eq!(config.database_url, "sqlite://flowkit.db");
        assert_eq!(config.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.settings.max_body, DEFAULT_MAX_BODY);
        assert!(config.settings.api_keys.is_empty());
        assert_eq!(config.settings.idempotency_ttl, Duration::from_secs(86400));
        config.check().expect("loopback without keys is fine");
    }

    #[test]
    fn public_url() {
        let cli = Cli::try_parse_from([
            "flowkit-server",
            "--public-url",
            "https://flowkit.example.com/",
        ])
        .expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(
            config.settings.public_url.as_deref(),
            Some("https://flowkit.example.com")
        );
        let cli = Cli::try_parse_from(["flowkit-server"]).expect("parse");
        assert_eq!(cli.into_config().expect("config").settings.public_url, None);
        for bad in ["ftp://x/y", "flowkit.example.com", "https://"] {
            assert!(
                Cli::try_parse_from(["flowkit-server", "--public-url", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn late_after() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["flowkit-server"].iter().chain(args))
                .expect("parse")
                .into_config()
                .expect("config")
        };
        assert_eq!(parse(&[]).settings.late_after, Duration::from_secs(60));
        assert_eq!(
            parse(&["--late-after", "5m"]).settings.late_after,
            Duration::from_secs(300)
        );
        assert!(parse_late_after("0s").is_err());
        assert!(parse_late_after("soon").is_err());
    }

    #[test]
    fn alert_retry_after() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["flowkit-server"].iter().chain(args))
                .expect("parse")
                .into_config()
                .expect("config")
        };
        assert_eq!(
            parse(&[]).settings.alert_retry_after,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse(&["--alert-retry-after", "5s"])
                .settings
                .alert_retry_after,
            Duration::from_secs(5)
        );
        assert!(parse_alert_retry_after("0s").is_err());
        assert!(parse_alert_retry_after("2h").is_err());
        assert!(parse_alert_retry_after("soon").is_err());
    }

    #[test]
    fn idempotency_ttl() {
        let cli =
            Cli::try_parse_from(["flowkit-server", "--idempotency-ttl", "90m"]).expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(config.settings.idempotency_ttl, Duration::from_secs(5400));
        for bad in ["0s", "400d", "soon"] {
            assert!(
                Cli::try_parse_from(["flowkit-server", "--idempotency-ttl", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bad_key_is_named_but_its_secret_never_shown() {
        for bad in [
            "ci:my-real-secret-1234567:reprot",
            "ci:my-real-secret:read",
            "no-colons-my-real-secret",
        ] {
            let cli = Cli::try_parse_from(["flowkit-server", "--api-key", bad])
                .expect("clap takes any string");
            let err = cli.into_config().expect_err("invalid key").to_string();
            assert!(!err.contains("my-real-secret"), "{err}");
        }
        let cli = Cli::try_parse_from([
            "flowkit-server",
            "--api-key",
            "ci:my-real-secret-1234567:reprot",
        ])
        .expect("parse");
        let err = cli.into_config().expect_err("invalid scope").to_string();
        assert!(err.starts_with("API key \"ci\""), "{err}");
    }

    #[test]
    fn flags() {
        let cli = Cli::try_parse_from([
            "flowkit-server",
            "--bind",
            "0.0.0.0:8080",
            "--retention",
            "off",
            "--max-body",
            "1MiB",
            "--api-key",
            "ci:0123456789abcdef0123:report",
            "--api-key",
            "ops:fedcba9876543210fedc:read,admin",
        ])
        .expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(config.retention, None);
        assert_eq!(config.settings.max_body, 1 << 20);
        assert_eq!(config.settings.api_keys.len(), 2);
        config.check().expect("keys allow any address");
    }

    #[test]
    fn bind_rule() {
        let lan: SocketAddr = "0.0.0.0:4200".parse().expect("addr");
        let v6: SocketAddr = "[::1]:4200".parse().expect("addr");
        assert!(matches!(
            check_bind(lan, false, false),
            Err(ConfigError::OpenOnNetwork(_))
        ));
        assert!(check_bind(lan, false, true).is_ok());
        assert!(check_bind(lan, true, false).is_ok());
        assert!(check_bind(DEFAULT_BIND, false, false).is_ok());
        assert!(check_bind(v6, false, false).is_ok());
        assert_eq!(
            parse_bind("localhost:9").expect("bind").to_string(),
            "127.0.0.1:9"
        );
        assert!(parse_bind("nowhere").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(
            parse_retention("12h"),
            Ok(Retention(Some(Duration::from_secs(43200))))
        );
        assert!(parse_retention("0s").is_err());
        assert!(parse_retention("soon").is_err());
    }

    #[test]
    fn connection_limits() {
        let config = Cli::try_parse_from(["flowkit-server"])
            .expect("parse")
            .into_config()
            .expect("config");
        assert_eq!(config.connections, ConnectionLimits::default());
        let cli = Cli::try_parse_from([
            "flowkit-server",
            "--header-timeout",
            "500ms",
            "--idle-timeout",
            "2m",
            "--body-timeout",
            "5s",
            "--max-connections",
            "64",
        ])
        .expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(
            config.connections,
            ConnectionLimits {
                header_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(120),
                body_timeout: Duration::from_secs(5),
                max_connections: 64,
            }
        );
        for (flag, bad) in [
            ("--header-timeout", "0s"),
            ("--idle-timeout", "0"),
            ("--body-timeout", "2h"),
            ("--body-timeout", "soon"),
            ("--max-connections", "0"),
            ("--max-connections", "many"),
            ("--max-connections", "2000000"),
        ] {
            assert!(
                Cli::try_parse_from(["flowkit-server", flag, bad]).is_err(),
                "{flag} {bad}"
            );
        }
        let zero = parse_timeout("0s").expect_err("zero");
        assert!(zero.contains("zero"), "{zero}");
        let none = parse_max_connections("0").expect_err("zero");
        assert!(none.contains("zero"), "{none}");
    }

    #[test]
    fn batch_and_ingest_memory_limits() {
        let err = Cli::try_parse_from(["flowkit-server", "--max-batch", "0"])
            .expect_err("0 refused")
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
        let cli = Cli::try_parse_from(["flowkit-server", "--max-batch", "5"]).expect("parse");
        assert_eq!(cli.into_config().expect("config").settings.max_batch, 5);
        let cli =
            Cli::try_parse_from(["flowkit-server", "--ingest-memory", "64MiB"]).expect("parse");
        let config = cli.into_config().expect("config");
        assert_eq!(config.settings.ingest_memory, 64 << 20);
        config.check().expect("64 MiB >= 8 MiB");
        let cli =
            Cli::try_parse_from(["flowkit-server", "--ingest-memory", "1MiB"]).expect("parse");
        let err = cli
            .into_config()
            .expect("config")
            .check()
            .expect_err("below max-body");
        assert!(err.to_string().contains("--ingest-memory"), "{err}");
        // Built by hand (tests, embedding): the same rule.
        let mut config = Config::new("sqlite://x.db");
        config.settings.max_batch = 0;
        assert!(matches!(config.check(), Err(ConfigError::InvalidLimit(_))));
    }

    #[test]
    fn allowed_hosts() {
        let config = Cli::try_parse_from([
            "flowkit-server",
            "--allowed-host",
            "flowkit.internal",
            "--allowed-host",
            "ci.example:8080",
        ])
        .expect("parse")
        .into_config()
        .expect("config");
        assert!(
            config
                .settings
                .allowed_hosts
                .allows("flowkit.internal:4200")
        );
        assert!(config.settings.allowed_hosts.allows("ci.example:8080"));
        assert!(!config.settings.allowed_hosts.allows("evil.example"));
        let err = Cli::try_parse_from(["flowkit-server", "--allowed-host", "a b"])
            .expect("parse")
            .into_config()
            .expect_err("not a host");
        assert!(err.to_string().contains("--allowed-host"), "{err}");
        let default = Cli::try_parse_from(["flowkit-server"])
            .expect("parse")
            .into_config()
            .expect("config");
        assert!(!default.settings.allowed_hosts.is_configured());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let cli = Cli::try_parse_from([
            "flowkit-server",
            "--api-key",
            "a:0123456789abcdef0123:read",
            "--api-key",
            "a:fedcba9876543210fedc:read",
        ])
        .expect("parse");
        assert!(matches!(
            cli.into_config(),
            Err(ConfigError::DuplicateKeyName(_))
        ));
    }
}
