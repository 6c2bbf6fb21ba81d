//! Process-wide settings, read once from the environment at first use.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `FLOWKIT_HOME` | the local store: result cache and kept results | `.flowkit` in the current directory |
//! | `FLOWKIT_SUMMARY` | `0` turns off the terminal summary printed after each top-level flow | on |
//! | `FLOWKIT_EVENT_LOG` | append every event to this file, one JSON object per line | off |
//! | `FLOWKIT_LOG_LEVEL` | lowest level of `tracing` events captured as run logs | `info` |
//! | `FLOWKIT_FLUSH_TIMEOUT` | how long a top-level flow waits for its events to reach the sinks | `5s` |

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
    /// How long a top-level flow waits for its events to reach the sinks.
    pub flush_timeout: Duration,
    /// `hostname:pid` of this process.
    pub worker: String,
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
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
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
        Config {
            home,
            summary,
            event_log: var("FLOWKIT_EVENT_LOG").map(PathBuf::from),
            log_level,
            flush_timeout,
            worker: format!("{}:{}", hostname(), std::process::id()),
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
        sinks
    }
}

fn hostname() -> String {
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
