//! States of a run and the transitions between them.
//!
//! A run moves through
//! `Scheduled → (Late →)? Pending → Running → (AwaitingRetry → Running)* → final`,
//! where the final state is one of [`StateType::Completed`], [`StateType::Cached`],
//! [`StateType::Failed`], [`StateType::Crashed`], [`StateType::Cancelled`],
//! [`StateType::TimedOut`] or [`StateType::Expired`] (a scheduled run that was not started in
//! time: `Scheduled` or `Late` → `Expired`, decided by the server). The rules live here as pure functions so the runtime,
//! the server and the tests agree on them.
//!
//! ```
//! use flowkit_wire::StateType;
//! assert!(StateType::Completed.is_final());
//! assert!(StateType::Running.can_become(StateType::AwaitingRetry));
//! assert!(!StateType::Completed.can_become(StateType::Running));
//!
//! // A newer peer's state type reads as `Unknown`, it does not fail the message.
//! let later: StateType = serde_json::from_str(r#""Hibernating""#).unwrap();
//! assert_eq!(later, StateType::Unknown);
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of a state, without its message.
///
/// A state type this version does not know (sent by a newer client, or answered by a newer
/// server) reads as [`StateType::Unknown`] instead of failing the whole message: the protocol
/// can gain states without breaking older peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum StateType {
    /// Created ahead of time (a deployment run waiting for its start time).
    Scheduled,
    /// A run created by a schedule that no worker has claimed within the server's threshold
    /// after its instant: still waiting, and said to be late. Decided by the server.
    Late,
    /// Created and about to start: waiting for cache lookup, limits or upstream runs.
    Pending,
    /// An attempt is executing the function body.
    Running,
    /// An attempt failed and another one starts after the retry delay.
    AwaitingRetry,
    /// The body returned successfully.
    Completed,
    /// The result was taken from the cache (or from an earlier attempt of the flow run) without
    /// running the body.
    Cached,
    /// The body returned an error after the last attempt.
    Failed,
    /// The body panicked after the last attempt (or the process running it went away).
    Crashed,
    /// Cancellation was asked for while a worker runs it: the worker is stopping it (it ends
    /// `Cancelled`, or whatever it reached first). Decided by the server.
    Cancelling,
    /// The run was cancelled before it finished.
    Cancelled,
    /// The last attempt exceeded the run's timeout.
    TimedOut,
    /// A scheduled run not started within its schedule's `max_lateness`: it never ran.
    /// Decided by the server.
    Expired,
    /// A state type this version does not know (from a newer peer). Not final; no transition
    /// rule applies to it.
    #[serde(other)]
    Unknown,
}

impl StateType {
    /// Every state type this version knows, in lifecycle order ([`StateType::Unknown`] is not
    /// one of them).
    pub const ALL: [StateType; 13] = [
        StateType::Scheduled,
        StateType::Late,
        StateType::Pending,
        StateType::Running,
        StateType::AwaitingRetry,
        StateType::Cancelling,
        StateType::Completed,
        StateType::Cached,
        StateType::Failed,
        StateType::Crashed,
        StateType::Cancelled,
        StateType::TimedOut,
        StateType::Expired,
    ];

    /// The name used on the wire and in the dashboard, e.g. `"Completed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Scheduled => "Scheduled",
            StateType::Late => "Late",
            StateType::Pending => "Pending",
            StateType::Running => "Running",
            StateType::AwaitingRetry => "AwaitingRetry",
            StateType::Completed => "Completed",
            StateType::Cached => "Cached",
            StateType::Failed => "Failed",
            StateType::Crashed => "Crashed",
            StateType::Cancelling => "Cancelling",
            StateType::Cancelled => "Cancelled",
            StateType::TimedOut => "TimedOut",
            StateType::Expired => "Expired",
            StateType::Unknown => "Unknown",
        }
    }

    /// A final state ends the run: no transition leaves it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StateType::Completed
                | StateType::Cached
                | StateType::Failed
                | StateType::Crashed
                | StateType::Cancelled
                | StateType::TimedOut
                | StateType::Expired
        )
    }

    /// A final state in which the caller did not get a successful result.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StateType::Failed
                | StateType::Crashed
                | StateType::Cancelled
                | StateType::TimedOut
                | StateType::Expired
        )
    }

    /// Whether a run in `self` may move to `next`.
    ///
    /// Any non-final state may be cancelled, directly (`Cancelled`) or through `Cancelling`
    /// while a worker stops it; a `Cancelling` run ends in any final state (the worker may
    /// finish before it sees the cancellation). A run that ended in failure (`Failed`,
    /// `Crashed`, `Cancelled`, `TimedOut`, `Expired`) may be re-queued as its next attempt (`Scheduled`)
    /// by the server only: after a crash, when it has attempts left, or when someone retries it;
    /// no other transition leaves a final state. Everything else follows the lifecycle above.
    /// A state type this version does not know ([`StateType::Unknown`]) may follow or precede
    /// any non-final state: a newer peer knows its rules.
    ///
    /// ```
    /// use flowkit_wire::StateType::*;
    /// assert!(Running.can_become(Cancelling) && Cancelling.can_become(Completed));
    /// assert!(Crashed.can_become(Scheduled)); // re-queued as the next attempt
    /// assert!(!Completed.can_become(Scheduled));
    /// ```
    pub fn can_become(self, next: StateType) -> bool {
        use StateType::*;
        if self.is_final() {
            return self.is_failure() && next == Scheduled;
        }
        if next == Cancelled || self == Unknown || next == Unknown {
            return true;
        }
        match self {
            Scheduled => matches!(next, Late | Pending | Expired | Cancelling),
            Late => matches!(next, Pending | Expired | Cancelling),
            // A cache hit, or a missing upstream result, ends a run before it ever runs.
            Pending => matches!(next, Running | Cached | Failed | Crashed | Cancelling),
            Running => next.is_final() || matches!(next, AwaitingRetry | Cancelling),
            AwaitingRetry => matches!(next, Running | Cancelling),
            Cancelling => next.is_final(),
            _ => false,
        }
    }
}

impl fmt::Display for StateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state: its type and an optional human-readable message (the error of a failed run,
/// "retry 2 of 3 in 1s", "cached result from attempt 1", ...).
///
/// Serialized as `{"type": "Failed", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct State {
    /// The kind of state.
    #[serde(rename = "type")]
    pub kind: StateType,
    /// Why the run is in this state, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl State {
    /// A state without a message.
    pub fn new(kind: StateType) -> State {
        State {
            kind,
            message: None,
        }
    }

    /// A state with a message.
    pub fn with_message(kind: StateType, message: impl Into<String>) -> State {
        State {
            kind,
            message: Some(message.into()),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{}: {}", self.kind, m),
            None => write!(f, "{}", self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_transitions() {
        use StateType::*;
        let path = [
            Scheduled,
            Pending,
            Running,
            AwaitingRetry,
            Running,
            Completed,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(Pending.can_become(Cached));
        assert!(!Pending.can_become(Completed));
        assert!(!AwaitingRetry.can_become(Completed));
        for path in [
            [Running, Cancelling, Cancelled],
            [Running, Cancelling, Completed],
        ] {
            for w in path.windows(2) {
                assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
            }
        }
        assert!(!Cancelling.can_become(Running));
        // A scheduled run not claimed in time is late, then expired unless claimed first.
        for path in [[Scheduled, Late, Pending], [Scheduled, Late, Expired]] {
            for w in path.windows(2) {
                assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
            }
        }
        assert!(Scheduled.can_become(Expired) && !Late.can_become(Running));
        assert!(!Running.can_become(Late) && !Pending.can_become(Expired));
        // A final state is left only when the server re-queues a failed run as its next
        // attempt.
        for s in ALL_FINAL {
            for n in StateType::ALL {
                let requeue = s.is_failure() && n == Scheduled;
                assert_eq!(s.can_become(n), requeue, "{s} -> {n}");
            }
        }
        assert!(!Completed.can_become(Scheduled) && !Cached.can_become(Scheduled));
    }

    const ALL_FINAL: [StateType; 7] = [
        StateType::Completed,
        StateType::Cached,
        StateType::Failed,
        StateType::Crashed,
        StateType::Cancelled,
        StateType::TimedOut,
        StateType::Expired,
    ];

    #[test]
    fn final_states_are_exactly_the_last_seven() {
        let finals: Vec<_> = StateType::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(finals, ALL_FINAL);
    }

    #[test]
    fn unknown_state_types_are_tolerated() {
        let later: State =
            serde_json::from_str(r#"{"type":"Hibernating","message":"asked by ops","since":1}"#)
                .expect("a newer peer's state parses");
        assert_eq!(later.kind, StateType::Unknown);
        assert_eq!(later.message.as_deref(), Some("asked by ops"));
        assert!(!StateType::Unknown.is_final());
        assert!(StateType::Running.can_become(StateType::Unknown));
        assert!(StateType::Unknown.can_become(StateType::Completed));
        assert!(!StateType::Completed.can_become(StateType::Unknown));
        assert!(!StateType::ALL.contains(&StateType::Unknown));
    }

    #[test]
    fn wire_format() {
        let s = State::with_message(StateType::TimedOut, "after 30s");
        let json = serde_json::to_string(&s).expect("serialize");
        assert_eq!(json, r#"{"type":"TimedOut","message":"after 30s"}"#);
        let back: State = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        let bare: State = serde_json::from_str(r#"{"type":"Running"}"#).expect("deserialize");
        assert_eq!(bare, State::new(StateType::Running));
    }
}
