//! Process-wide settings, read once from the environment at first use.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `FLOWKIT_HOME` | the local store: result cache and kept results | `.flowkit` in the current directory |
//! | `FLOWKIT_SUMMARY` | `0` turns off the terminal summary printed after each top-level flow | on |
//! | `FLOWKIT_EVENT_LOG` | append every event to this file, one JSON object per line | off |
//! | `FLOWKIT_LOG_LEVEL` | lowest level of `tracing` events captured as run logs | `info` |
//! | `FLOWKIT_FLUSH_TIMEOUT` | most time [`crate::flush`], the guard of [`crate::init`] and the exit flush wait for every sink (the server included); also bounds a top-level flow's wait for the local sinks | `5s` |
//! | `FLOWKIT_API_URL` | report every event to the flowkit server at this URL ([`crate::sink::report`]); also the server [`Client::from_env`](crate::Client::from_env) and the `flowkit` command call | off |
//! | `FLOWKIT_API_KEY` | sent to the server as `Authorization: Bearer <key>` (by the reporter, the client and the command) | none |
//! | `FLOWKIT_REPORT_FLUSH_TIMEOUT` | how long a flush waits for the server before spooling what is left (kept below `FLOWKIT_FLUSH_TIMEOUT`) | `3s` |
//! | `FLOWKIT_SPOOL_MAX_BYTES` | most bytes the reporter's spool (`<FLOWKIT_HOME>/spool`) holds; only past it are events dropped (and counted, and reported). Bytes, or with a unit: `512MiB`, `4GiB`, `2GB` | `1GiB` |
//! | `FLOWKIT_REPORT_BACKLOG_BYTES` | most bytes of the reporter's compact in-memory backlog (events waiting to be serialized while the reporter is behind); past it newer events are dropped (and counted, and reported). Bytes, or with a unit as above | `256MiB` |

use crate::sink::Sink;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The settings in force for this process.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Root of the local store.
    pub home: PathBuf,
    /// Whether the terminal summary is printed.
    pub summary: bool,
    /// Where the JSONL event log goes, if anywhere.
    pub event_log: Option<PathBuf>,
    /// Lowest level captured as run logs.
    pub log_level: tracing::Level,
    /// Most time [`crate::flush`], the guard of [`crate::init`] and the exit flush wait for
    /// every sink; also bounds a top-level flow's wait for the local sinks.
    pub flush_timeout: Duration,
    /// `hostname:pid` of this process.
    pub worker: String,
    /// Base URL of the flowkit server events are reported to, if any.
    pub api_url: Option<String>,
    /// The key sent to the server.
    pub api_key: Option<crate::sink::report::ApiKey>,
    /// How long a flush waits for the server before spooling what is left.
    pub report_flush_timeout: Duration,
    /// Most bytes the reporter's spool holds
    /// ([`ReportConfig::spool_max_bytes`](crate::sink::report::ReportConfig::spool_max_bytes)).
    pub spool_max_bytes: u64,
    /// Most bytes of the reporter's compact backlog
    /// ([`ReportConfig::backlog_bytes`](crate::sink::report::ReportConfig::backlog_bytes)).
    pub report_backlog_bytes: usize,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The settings of this process (read from the environment on first call, unless
/// [`init`] was called before).
pub fn get() -> &'static Config {
    CONFIG.get_or_init(Config::from_env)
}

/// Sets the settings of this process from code instead of the environment. Must be called
/// before the first run; returns the config back if settings were already in force.
///
/// ```
/// let mut config = flowkit::config::Config::from_env();
/// config.home = std::env::temp_dir().join("flowkit-doc-example");
/// let _ = flowkit::config::init(config);
/// ```
pub fn init(config: Config) -> Result<(), Box<Config>> {
    CONFIG.set(config).map_err(Box::new)
}

impl Config {
    /// Reads the settings from the environment; unparsable values fall back to the default
    /// with a warning on stderr.
    pub fn from_env() -> Config {
        let home = var("FLOWKIT_HOME").map_or_else(|| PathBuf::from(".flowkit"), PathBuf::from);
        let summary = !matches!(
            var("FLOWKIT_SUMMARY").as_deref().map(str::trim),
            Some("0" | "false" | "off" | "no")
        );
        let log_level = match var("FLOWKIT_LOG_LEVEL") {
            None => tracing::Level::INFO,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                eprintln!(
                    "flowkit: FLOWKIT_LOG_LEVEL={v:?} is not a level (trace, debug, info, warn, error); using info"
                );
                tracing::Level::INFO
            }),
        };
        let flush_timeout = match var("FLOWKIT_FLUSH_TIMEOUT") {
            None => Duration::from_secs(5),
            Some(v) => humantime::parse_duration(v.trim()).unwrap_or_else(|e| {
                eprintln!("flowkit: FLOWKIT_FLUSH_TIMEOUT={v:?} is not a duration ({e}), e.g. \"5s\"; using 5s");
                Duration::from_secs(5)
            }),
        };
        let report_flush_timeout = match var("FLOWKIT_REPORT_FLUSH_TIMEOUT") {
            None => crate::sink::report::DEFAULT_FLUSH_TIMEOUT,
            Some(v) => humantime::parse_duration(v.trim()).unwrap_or_else(|e| {
                eprintln!("flowkit: FLOWKIT_REPORT_FLUSH_TIMEOUT={v:?} is not a duration ({e}), e.g. \"3s\"; using 3s");
                crate::sink::report::DEFAULT_FLUSH_TIMEOUT
            }),
        };
        let spool_max_bytes = match var("FLOWKIT_SPOOL_MAX_BYTES") {
            None => crate::sink::report::DEFAULT_SPOOL_MAX_BYTES,
            Some(v) => parse_bytes(&v).unwrap_or_else(|e| {
                eprintln!("flowkit: FLOWKIT_SPOOL_MAX_BYTES={v:?} is not a size ({e}), e.g. \"4GiB\"; using 1GiB");
                crate::sink::report::DEFAULT_SPOOL_MAX_BYTES
            }),
        };
        let report_backlog_bytes = match var("FLOWKIT_REPORT_BACKLOG_BYTES") {
            None => crate::sink::report::DEFAULT_BACKLOG_BYTES,
            Some(v) => parse_bytes(&v)
                .and_then(|bytes| {
                    usize::try_from(bytes)
                        .ok()
                        .filter(|&bytes| bytes > 0)
                        .ok_or_else(|| format!("{bytes} bytes is not a usable bound"))
                })
                .unwrap_or_else(|e| {
                    eprintln!("flowkit: FLOWKIT_REPORT_BACKLOG_BYTES={v:?} is not a size ({e}), e.g. \"512MiB\"; using 256MiB");
                    crate::sink::report::DEFAULT_BACKLOG_BYTES
                }),
        };
        Config {
            home,
            summary,
            event_log: var("FLOWKIT_EVENT_LOG").map(PathBuf::from),
            log_level,
            flush_timeout,
            worker: format!("{}:{}", hostname(), std::process::id()),
            api_url: api_url_from_env(),
            api_key: api_key_from_env(),
            report_flush_timeout,
            spool_max_bytes,
            report_backlog_bytes,
        }
    }

    /// The sinks this configuration turns on.
    pub(crate) fn default_sinks(&self) -> Vec<Box<dyn Sink>> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if self.summary {
            sinks.push(Box::new(crate::sink::summary::Summary::to_stderr()));
        }
        if let Some(path) = &self.event_log {
            match crate::sink::jsonl::JsonlSink::open(path) {
                Ok(sink) => sinks.push(Box::new(sink)),
                Err(e) => eprintln!(
                    "flowkit: cannot open FLOWKIT_EVENT_LOG={}: {e}; events are not logged to a file",
                    path.display()
                ),
            }
        }
        if let Some(url) = &self.api_url {
            use crate::sink::report::{ReportConfig, ReportSink};
            let mut report = ReportConfig::new(url.clone(), self.home.join("spool"))
                .worker(self.worker.clone())
                .spool_max_bytes(self.spool_max_bytes)
                .backlog_bytes(self.report_backlog_bytes)
                // The bus waits `flush_timeout` for every sink: leave room to write the spool.
                .flush_timeout(
                    self.report_flush_timeout
                        .min(self.flush_timeout.mul_f64(0.8)),
                );
            report.api_key = self.api_key.clone();
            match ReportSink::start(report) {
                Ok(sink) => {
                    sink.register_as_process_reporter();
                    sinks.push(Box::new(sink))
                }
                Err(e) => eprintln!(
                    "flowkit: cannot report to FLOWKIT_API_URL={url}: {e}; events are not reported"
                ),
            }
        }
        sinks
    }
}

/// A size in bytes: a number, optionally followed by a unit (`B`, `K`/`KB`, `KiB`, `M`/`MB`,
/// `MiB`, `G`/`GB`, `GiB`, `T`/`TB`, `TiB`; the decimal ones are powers of 1000).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err("out of range".into());
    }
    Ok(bytes as u64)
}

/// A variable of the environment, unless unset or blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `FLOWKIT_API_URL`, trimmed, unless unset or blank: the runtime's and the client's.
pub(crate) fn api_url_from_env() -> Option<String> {
    var("FLOWKIT_API_URL").map(|v| v.trim().to_string())
}

/// `FLOWKIT_API_KEY`, trimmed, unless unset or blank: the runtime's and the client's.
pub(crate) fn api_key_from_env() -> Option<crate::sink::report::ApiKey> {
    var("FLOWKIT_API_KEY").map(|v| crate::sink::report::ApiKey::new(v.trim()))
}

/// This machine's host name (`HOSTNAME`, else `/etc/hostname`, else `localhost`).
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_or_without_a_unit() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes(" 512 MiB "), Ok(512 << 20));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1.5k"), Ok(1500));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
