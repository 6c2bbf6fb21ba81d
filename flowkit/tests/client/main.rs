//! `flowkit::Client` and the `flowkit` command (feature `cli`) against a real flowkit server
//! on loopback: no imitation of the server. Runs are driven to their end by the worker
//! routes the tests call themselves (claim, then finish), as a worker does.

mod alerts;
mod cli;
mod flows;
mod harness;
mod keys;
mod limits;
mod schedules_cli;
mod typed;
