//! The HTTP API against a real store: the router in-process (`tower::ServiceExt::oneshot`) for
//! most tests, the real server on a free loopback port for the live stream and shutdown.
//!
//! Every data test runs on a temporary SQLite file, and on PostgreSQL too when
//! `FLOWKIT_TEST_PG_URL` is set (each test in a database of its own, created and dropped
//! here). Without it the PostgreSQL tests print why they skip — and fail when
//! `FLOWKIT_REQUIRE_SERVICES=1`, as in CI.
//!
//! Each backend's tests are compiled only with its cargo feature; the tests that need a SQLite
//! file (not about the data: errors, keys, the socket) only with `sqlite`.
//!
//! One module per suite. The data suites run each test once per backend, as
//! `<suite>::sqlite::<test>` and `<suite>::postgres::<test>` (see [`harness`]).

// Without SQLite, the helpers only the SQLite-only tests use are unused.
#![cfg_attr(not(feature = "sqlite"), allow(unused_imports, dead_code))]

#[macro_use]
mod harness;
mod fixtures;

// The data, on every backend.
mod alerts;
mod children;
mod compatibility;
mod concurrency_limits;
mod deployments;
mod drops;
mod full_scans;
mod ingestion;
mod keys;
mod metrics;
mod pagination;
mod read_back;
mod retention;
mod schedule_api;
mod schedule_year;
mod schedules;
mod stats_buckets;
mod workers;

// The HTTP surface, keys and the API description (SQLite).
mod auth;
mod openapi;
#[cfg(feature = "sqlite")]
mod origins;
mod surface;

// Over a real socket, and a damaged database (SQLite).
mod corruption;
mod hardening;
#[cfg(feature = "postgres")]
mod outage;
// Needs a SQLite file.
#[cfg(feature = "sqlite")]
mod slow_clients;
mod socket;
#[cfg(feature = "sqlite")]
mod streams;
