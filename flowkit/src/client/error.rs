//! [`RunError`]: everything a call of the [`Client`](super::Client) can end with besides its
//! answer, each saying what to do about it.

use flowkit_wire::StateType;
use flowkit_wire::api::deployments::FieldError;
use flowkit_wire::api::error::{ErrorCode, ErrorDetail};
use flowkit_wire::api::runs::Run;
use std::time::Duration;
use uuid::Uuid;

/// Why a call of the [`Client`](super::Client) did not give its answer.
///
/// The first variants are runs that ended without a result (each carries the run as the server
/// last showed it: its id, state and the state's message, which holds the flow's error); the
/// others are the server refusing the request, or no server to ask.
///
/// ```
/// use flowkit::RunError;
/// use flowkit::FieldError;
///
/// let err = RunError::InvalidParameters(vec![FieldError {
///     pointer: "/epochs".into(),
///     message: "-1 is less than the minimum of 0".into(),
/// }]);
/// assert!(err.to_string().contains("/epochs: -1 is less than the minimum of 0"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run ended `Failed`: its flow returned an error (in the run's `state_message`).
    #[error("{}", ended(.0, "failed"))]
    Failed(Box<Run>),
    /// The run ended `Crashed`: it panicked, or its worker went away and it had no attempts
    /// left.
    #[error("{}", ended(.0, "crashed"))]
    Crashed(Box<Run>),
    /// The run ended `Cancelled`.
    #[error("{}", ended(.0, "was cancelled"))]
    Cancelled(Box<Run>),
    /// The run ended `TimedOut`: its last attempt exceeded the flow's `timeout`.
    #[error("{}", ended(.0, "timed out (the flow's own timeout)"))]
    TimedOut(Box<Run>),
    /// The run ended `Expired`: a scheduled run that no worker started within its schedule's
    /// `max_lateness` (is a worker serving the deployment?).
    #[error("{}", ended(.0, "expired: no worker started it in time"))]
    Expired(Box<Run>),
    /// The client stopped waiting before the run ended: it goes on on the server.
    #[error(
        "run {} is still {} after waiting {}: it goes on on the server; wait longer (a larger \
         timeout), read its result later by its id, or cancel it",
        .run.id,
        .run.state.as_str(),
        humantime::format_duration(*.waited)
    )]
    StillRunning {
        /// The run as it stands.
        run: Box<Run>,
        /// How long the client waited.
        waited: Duration,
    },
    /// The server refused the parameters (422 `invalid_parameters`): every error, at its JSON
    /// pointer into the parameters (`/learning_rate`).
    #[error("{}", invalid_parameters(.0))]
    InvalidParameters(Vec<FieldError>),
    /// The server does not know the API key, or none was sent (401).
    #[error(
        "the server refused the API key ({}): set FLOWKIT_API_KEY to a key the server knows",
        .0.message
    )]
    Unauthorized(ErrorDetail),
    /// The API key lacks the scope this call needs (403).
    #[error(
        "the API key may not do this ({}): use a key with the scope named there",
        .0.message
    )]
    Forbidden(ErrorDetail),
    /// No such deployment, run or route (404).
    #[error("not found: {}", .0.message)]
    NotFound(ErrorDetail),
    /// The server could not be reached, or stopped answering: nothing is known of the call's
    /// effect.
    #[error(
        "cannot reach the flowkit server at {url} ({reason}): check that it is running and that \
         FLOWKIT_API_URL points at it"
    )]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What went wrong, e.g. `cannot connect: Connection refused`.
        reason: String,
    },
    /// Any other refusal of the server, with its code and message.
    #[error("the server refused the request: {0}")]
    Api(ErrorDetail),
    /// An answer that does not read as what was expected: a run's output that is not of the
    /// flow's output type (the deployment may run another version of the flow than the one
    /// this program was built with), or a server that does not speak this API.
    #[error("{}", decode(.run_id, .message))]
    Decode {
        /// The run whose output it is, if it is one.
        run_id: Option<Uuid>,
        /// What did not read.
        message: String,
    },
    /// The client is not set up to call a server: no `FLOWKIT_API_URL`, or a URL that is not
    /// one.
    #[error("{0}")]
    Config(String),
}

impl RunError {
    /// The run this error is about, when the run ended without a result or is still going.
    pub fn run(&self) -> Option<&Run> {
        match self {
            RunError::Failed(run)
            | RunError::Crashed(run)
            | RunError::Cancelled(run)
            | RunError::TimedOut(run)
            | RunError::Expired(run)
            | RunError::StillRunning { run, .. } => Some(run),
            _ => None,
        }
    }

    /// The error for a run that ended in `run.state`, or `None` if it completed (or is not
    /// final).
    pub(crate) fn from_final(run: Run) -> Option<RunError> {
        let run = Box::new(run);
        Some(match run.state {
            StateType::Failed => RunError::Failed(run),
            StateType::Crashed => RunError::Crashed(run),
            StateType::Cancelled => RunError::Cancelled(run),
            StateType::TimedOut => RunError::TimedOut(run),
            StateType::Expired => RunError::Expired(run),
            _ => return None,
        })
    }

    /// The error an error body of the server says.
    pub(crate) fn from_detail(detail: ErrorDetail) -> RunError {
        match detail.code {
            ErrorCode::InvalidParameters => {
                let mut details = detail.details;
                if details.is_empty() {
                    details.push(FieldError {
                        pointer: String::new(),
                        message: detail.message,
                    });
                }
                RunError::InvalidParameters(details)
            }
            ErrorCode::Unauthorized => RunError::Unauthorized(detail),
            ErrorCode::Forbidden => RunError::Forbidden(detail),
            ErrorCode::NotFound => RunError::NotFound(detail),
            _ => RunError::Api(detail),
        }
    }
}

fn ended(run: &Run, how: &str) -> String {
    let mut text = format!("run {} ({}) {how}", run.id, run.name);
    if let Some(message) = run.state_message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(message);
    }
    text.push_str(&format!(
        "; read its logs (`flowkit logs {}`), or run it again from where it stopped (`flowkit retry {}`)",
        run.id, run.id
    ));
    text
}

fn invalid_parameters(errors: &[FieldError]) -> String {
    let mut text = String::from("the server refused the parameters:");
    for e in errors {
        if e.pointer.is_empty() {
            text.push_str(&format!(" {};", e.message));
        } else {
            text.push_str(&format!(" {}: {};", e.pointer, e.message));
        }
    }
    text.push_str(" fix them and trigger again");
    text
}

fn decode(run_id: &Option<Uuid>, message: &str) -> String {
    match run_id {
        Some(id) => format!(
            "the output of run {id} does not read as the flow's output type ({message}): the \
             deployment may run another version of the flow than this program was built with"
        ),
        None => format!(
            "the server's answer does not read as expected ({message}): is FLOWKIT_API_URL a \
             flowkit server of the same version?"
        ),
    }
}
