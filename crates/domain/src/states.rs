//! The states of runs, their steps, deliveries and alerts as enums: stored and sent by name,
//! parsed strictly (an unknown name is an error naming the field, never a default).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, invalid};

/// Declares a state enum with its stored names, `ALL`, `as_str`, strict `FromStr` and
/// `Display`.
macro_rules! states {
    ($(#[$meta:meta])* $name:ident, $field:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stored and displayed name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        invalid($field, format!("{s:?} is not one of {}", names.join(", ")))
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use states;

states!(
    /// Where a runbook run is.
    RunState, "run_state", {
        /// Created, not yet executed.
        Pending => "pending",
        /// An executor holds it.
        Running => "running",
        /// A durable sleep; due again at its wake time.
        Sleeping => "sleeping",
        /// Waits for a person to approve or reject (a step, or a plan).
        WaitingApproval => "waiting_approval",
        Succeeded => "succeeded",
        Failed => "failed",
        /// A person rejected it (or its approval timed out with `on_timeout: reject`).
        Rejected => "rejected",
    }
);

impl RunState {
    /// Over: nothing moves it again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Rejected)
    }

    /// The state `event` moves a run in this state to, or why it cannot: the run's whole
    /// life cycle, in one place.
    ///
    /// pending → running (an executor takes it; a running run whose process died is taken
    /// again, and a sleeper whose time has come wakes) → succeeded, or → waiting_approval →
    /// pending (approved) or rejected, or → sleeping → running. Any unfinished run can fail
    /// (its script failed, its runbook is gone, it kept crashing the process). Nothing leaves
    /// a finished run.
    pub fn apply(self, event: RunEvent) -> Result<Self, Error> {
        use RunState::*;
        match (self, event) {
            (Pending | Running | Sleeping, RunEvent::Execute) => Ok(Running),
            (Running, RunEvent::Succeed) => Ok(Succeeded),
            (s, RunEvent::Fail) if !s.is_finished() => Ok(Failed),
            (Running, RunEvent::AwaitApproval) => Ok(WaitingApproval),
            (Running, RunEvent::Sleep) => Ok(Sleeping),
            (WaitingApproval, RunEvent::Approve | RunEvent::Resume) => Ok(Pending),
            (WaitingApproval, RunEvent::Reject) => Ok(Rejected),
            (state, event) => Err(Error::RunTransition {
                action: event.verb(),
                state: state.as_str(),
            }),
        }
    }
}

/// What moves a run ([`RunState::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEvent {
    /// An executor executes it (first, again after a crash, or woken from a sleep).
    Execute,
    /// Its script returned.
    Succeed,
    Fail,
    /// Its script asked a person (a step's approval, or a plan's).
    AwaitApproval,
    /// Its script sleeps durably.
    Sleep,
    /// A person approved its plan.
    Approve,
    /// A person rejected its plan (or its approval timed out with `on_timeout: reject`).
    Reject,
    /// A person decided its waiting step, either way: the script resumes with the decision.
    Resume,
}

impl RunEvent {
    /// Every event.
    pub const ALL: [Self; 8] = [
        Self::Execute,
        Self::Succeed,
        Self::Fail,
        Self::AwaitApproval,
        Self::Sleep,
        Self::Approve,
        Self::Reject,
        Self::Resume,
    ];

    fn verb(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Succeed => "succeed",
            Self::Fail => "fail",
            Self::AwaitApproval => "wait for approval on",
            Self::Sleep => "put to sleep",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Resume => "resume",
        }
    }
}

states!(
    /// Which half of a plan-approve run this is.
    RunPhase, "run_phase", {
        /// Every action simulated, to show a person what the run would do.
        Plan => "plan",
        /// Actions performed (every run of a runbook that is not plan-approve).
        Apply => "apply",
    }
);

states!(
    /// What became of a journaled runbook step.
    StepStatus, "step_status", {
        /// Performed; its result is recorded.
        Done => "done",
        /// Performed and failed; the script got a catchable error.
        Failed => "failed",
        /// Waits for a person's decision.
        Waiting => "waiting",
        /// A durable sleep, until its recorded time.
        Sleeping => "sleeping",
        /// Simulated (a dry or plan run).
        Simulated => "simulated",
    }
);

states!(
    /// Where a notification delivery is.
    DeliveryState, "delivery_state", {
        /// Due (now or at its step's time), to be attempted.
        Pending => "pending",
        /// Handed to the provider, which accepted it but has not confirmed that it reached
        /// the person (an SMTP relay took the email, Twilio queued the text or call). Final
        /// for retries: a sent delivery is never attempted again; a provider's report moves
        /// it to delivered or failed.
        Sent => "sent",
        /// In the channel, or confirmed by the provider as reached.
        Delivered => "delivered",
        /// Given up: a permanent error, or out of attempts.
        Failed => "failed",
        /// Not needed any more (the incident was acknowledged before its escalation step).
        Cancelled => "cancelled",
    }
);

states!(
    /// Where a sender's alert is (intake).
    AlertState, "alert_state", {
        Firing => "firing",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: FromStr<Err = Error> + fmt::Display + PartialEq + fmt::Debug + Copy>(
        all: &[T],
    ) {
        for v in all {
            assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn every_state_round_trips_by_name() {
        round_trips(RunState::ALL);
        round_trips(RunPhase::ALL);
        round_trips(StepStatus::ALL);
        round_trips(DeliveryState::ALL);
        round_trips(AlertState::ALL);
        assert_eq!(RunState::WaitingApproval.as_str(), "waiting_approval");
        assert_eq!(
            serde_json::to_value(RunState::WaitingApproval).unwrap(),
            "waiting_approval"
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_field_never_a_default() {
        let e = "paused".parse::<RunState>().unwrap_err().to_string();
        assert!(
            e.contains("run_state") && e.contains("paused") && e.contains("succeeded"),
            "{e}"
        );
        assert!(
            " done".parse::<StepStatus>().is_err(),
            "no trimming: stored names are exact"
        );
        assert!("Delivered".parse::<DeliveryState>().is_err());
    }

    /// The whole table: every state × every event, against the life cycle as written out.
    #[test]
    fn the_run_life_cycle_allows_exactly_its_moves() {
        use RunEvent as E;
        use RunState as S;
        let allowed = [
            (S::Pending, E::Execute, S::Running),
            (S::Running, E::Execute, S::Running),
            (S::Sleeping, E::Execute, S::Running),
            (S::Running, E::Succeed, S::Succeeded),
            (S::Pending, E::Fail, S::Failed),
            (S::Running, E::Fail, S::Failed),
            (S::Sleeping, E::Fail, S::Failed),
            (S::WaitingApproval, E::Fail, S::Failed),
            (S::Running, E::AwaitApproval, S::WaitingApproval),
            (S::Running, E::Sleep, S::Sleeping),
            (S::WaitingApproval, E::Approve, S::Pending),
            (S::WaitingApproval, E::Reject, S::Rejected),
            (S::WaitingApproval, E::Resume, S::Pending),
        ];
        for from in RunState::ALL.iter().copied() {
            for event in RunEvent::ALL {
                let want = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (from.apply(event), want) {
                    (Ok(to), Some(w)) => assert_eq!(to, w, "{from} {event:?}"),
                    (Err(e), None) => {
                        let text = e.to_string();
                        assert!(
                            text.contains(from.as_str()) && text.contains("a run"),
                            "{text}"
                        );
                    }
                    (got, want) => panic!("{from} {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        for end in [S::Succeeded, S::Failed, S::Rejected] {
            assert!(
                RunEvent::ALL.iter().all(|e| end.apply(*e).is_err()),
                "{end} moved"
            );
        }
    }

    #[test]
    fn finished_runs_are_the_three_ends() {
        let finished: Vec<_> = RunState::ALL.iter().filter(|s| s.is_finished()).collect();
        assert_eq!(
            finished,
            [&RunState::Succeeded, &RunState::Failed, &RunState::Rejected]
        );
    }
}
