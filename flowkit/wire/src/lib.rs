//! The flowkit wire model: what the runtime emits, what the server stores and answers, and
//! what clients send — defined once, so the runtime, the server, the typed client and the CLI
//! can never disagree.
//!
//! It depends only on serde, serde_json, uuid and chrono; the `schedule` feature adds croner,
//! chrono-tz and humantime to compute schedules; the `openapi` feature derives the
//! OpenAPI schemas the server publishes at `/api/openapi.json`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`state`] | states of a run and the transitions between them |
//! | [`event`] | the events a process reports: state changes and log lines of runs |
//! | [`api`] | every body of the HTTP API: errors, ingestion, runs, logs, graph, stats, pages |
//! | [`links`] | the URLs of the server's pages, e.g. a run's page on the dashboard |
//! | `schedule` (feature `schedule`) | the instants of a deployment's schedules |
//! | `alerts` (feature `alerts`) | what a notification says, as a webhook body and a Slack message |

#[cfg(feature = "alerts")]
pub mod alerts;
pub mod api;
pub mod event;
mod event_json;
pub mod links;
#[cfg(feature = "schedule")]
pub mod schedule;
pub mod state;
mod timestamp_json;

pub use event::{Event, EventBody, LaterState, LogLevel, RunDetails, RunKind};
pub use state::{State, StateType};
