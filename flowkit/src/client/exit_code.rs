//! The exit codes of the `flowkit` command (feature `cli`), for scripts that run it:
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`COMPLETED`] | the run completed (or the command did what it was asked) |
//! | 1 | [`FAILED`] | the run failed: its flow returned an error |
//! | 2 | [`CRASHED`] | the run crashed: it panicked, or its worker died with no attempts left |
//! | 3 | [`CANCELLED`] | the run was cancelled |
//! | 4 | [`INVALID_PARAMETERS`] | the server refused the parameters (each listed at its JSON pointer), or a `-p`/`--params-file` could not be read |
//! | 5 | [`UNREACHABLE`] | the server cannot be reached (or none is set: `FLOWKIT_API_URL`), or it refused the API key (unauthorized, forbidden) |
//! | 6 | [`TIMED_OUT`] | the run timed out: its last attempt exceeded the flow's own `timeout` |
//! | 7 | [`STILL_RUNNING`] | `--timeout` passed before the run ended: it goes on on the server |
//! | 8 | [`ERROR`] | anything else the server refused (no such deployment or run, a conflict…) |
//! | 9 | [`EXPIRED`] | the run expired: a scheduled run no worker started within its schedule's `max_lateness` |
//! | 64 | [`USAGE`] | the command line is wrong (unknown option, missing argument) |

use super::RunError;

/// The run completed, or the command did what it was asked.
pub const COMPLETED: i32 = 0;
/// The run failed: its flow returned an error.
pub const FAILED: i32 = 1;
/// The run crashed: it panicked, or its worker died and it had no attempts left.
pub const CRASHED: i32 = 2;
/// The run was cancelled.
pub const CANCELLED: i32 = 3;
/// The server refused the parameters, or the command could not read them.
pub const INVALID_PARAMETERS: i32 = 4;
/// The server cannot be reached, or refused the API key.
pub const UNREACHABLE: i32 = 5;
/// The run timed out (the flow's own `timeout`).
pub const TIMED_OUT: i32 = 6;
/// The wait (`--timeout`) ended before the run did; the run goes on.
pub const STILL_RUNNING: i32 = 7;
/// Any other error.
pub const ERROR: i32 = 8;
/// The run expired: scheduled, it was not started within its schedule's `max_lateness`.
pub const EXPIRED: i32 = 9;
/// The command line is wrong (as `EX_USAGE` of `sysexits.h`).
pub const USAGE: i32 = 64;

/// The exit code that stands for `error`.
///
/// ```
/// use flowkit::client::exit_code;
/// let err = flowkit::RunError::Unreachable { url: "http://127.0.0.1:4200".into(), reason: "refused".into() };
/// assert_eq!(exit_code::of(&err), exit_code::UNREACHABLE);
/// ```
pub fn of(error: &RunError) -> i32 {
    match error {
        RunError::Failed(_) => FAILED,
        RunError::Crashed(_) => CRASHED,
        RunError::Cancelled(_) => CANCELLED,
        RunError::TimedOut(_) => TIMED_OUT,
        RunError::Expired(_) => EXPIRED,
        RunError::StillRunning { .. } => STILL_RUNNING,
        RunError::InvalidParameters(_) => INVALID_PARAMETERS,
        RunError::Unauthorized(_) | RunError::Forbidden(_) | RunError::Unreachable { .. } => {
            UNREACHABLE
        }
        RunError::NotFound(_) | RunError::Api(_) | RunError::Decode { .. } => ERROR,
        RunError::Config(_) => UNREACHABLE,
    }
}
