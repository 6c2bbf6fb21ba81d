//! The store conformance suite: the same tests against every backend compiled in.
//!
//! SQLite (a file in a temporary directory) always. PostgreSQL when `FLOWKIT_TEST_PG_URL` holds
//! an admin URL (`. .ci/pg.sh && pg_start` sets one up): each test creates its own database from
//! it and drops it afterwards, so tests run in parallel. Without it the PostgreSQL tests say why
//! they skip — unless `FLOWKIT_REQUIRE_SERVICES=1` (CI), where they fail instead.
//!
//! One module per suite; each test runs once per backend, as `<suite>::sqlite::<test>` and
//! `<suite>::postgres::<test>` (see [`harness`]). The benchmarks in [`bench`] are ignored by
//! default.

#[macro_use]
mod harness;
mod fixtures;
#[cfg(feature = "postgres")]
#[path = "../support/pg_database.rs"]
mod pg_database;

mod bench;
mod concurrency;
mod corruption;
mod deployments;
#[cfg(feature = "sqlite")]
mod durability;
mod ingestion;
mod leases;
mod listing;
mod logs;
mod retention;
mod stats;
