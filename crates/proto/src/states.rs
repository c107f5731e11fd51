//! The domain's states on the wire: each state enum of `firebreak_domain` beside its `v1`
//! twin, converted with exhaustive matches both ways (a state added on one side only does
//! not compile), and read back from messages whose producer may predate the typed field.

use std::str::FromStr;

use firebreak_domain as domain;

use crate::v1;

/// A domain state that travels as a `v1` enum, next to its name for older readers.
pub trait WireState: Sized + Copy + FromStr {
    /// The state as its wire enum's value.
    fn wire(self) -> i32;

    /// The state's name (as stored, and in the message's name field).
    fn name(self) -> &'static str;

    /// The state a wire value holds; `None` for unspecified or a value this build lacks.
    fn from_wire(value: i32) -> Option<Self>;

    /// The state a message carries: its typed field or, when that holds no state (from a
    /// producer that predates it), the state its name field names. `None` when neither does:
    /// never a default state.
    fn read(typed: i32, name: &str) -> Option<Self> {
        Self::from_wire(typed).or_else(|| name.parse().ok())
    }
}

macro_rules! wire_states {
    ($($domain:ident => $wire:ident { $($variant:ident),+ $(,)? })+) => {$(
        impl From<domain::$domain> for v1::$wire {
            fn from(s: domain::$domain) -> Self {
                match s {
                    $(domain::$domain::$variant => Self::$variant,)+
                }
            }
        }

        impl WireState for domain::$domain {
            fn wire(self) -> i32 {
                v1::$wire::from(self) as i32
            }

            fn name(self) -> &'static str {
                self.as_str()
            }

            fn from_wire(value: i32) -> Option<Self> {
                match v1::$wire::try_from(value).ok()? {
                    v1::$wire::Unspecified => None,
                    $(v1::$wire::$variant => Some(Self::$variant),)+
                }
            }
        }
    )+};
}

wire_states! {
    IncidentState => IncidentState { Open, Acknowledged, Mitigated, Resolved, Closed }
    RunState => RunState {
        Pending, Running, Sleeping, WaitingApproval, Succeeded, Failed, Rejected,
    }
    RunPhase => RunPhase { Plan, Apply }
    StepStatus => StepStatus { Done, Failed, Waiting, Sleeping, Simulated }
    DeliveryState => DeliveryState { Pending, Sent, Delivered, Failed, Cancelled }
    UpdateStatus => UpdateStatus { Investigating, Identified, Monitoring, Resolved }
}

impl From<&domain::StatusUpdate> for v1::StatusUpdate {
    fn from(u: &domain::StatusUpdate) -> Self {
        Self {
            status: u.status.wire(),
            message: u.message.clone(),
            at: Some(crate::timestamp(u.at)),
            by: u.by.clone(),
        }
    }
}

impl v1::Incident {
    /// The incident's state ([`WireState::read`]).
    pub fn incident_state(&self) -> Option<domain::IncidentState> {
        WireState::read(self.state, &self.state_name)
    }
}

impl v1::Run {
    /// The run's state ([`WireState::read`]).
    pub fn run_state(&self) -> Option<domain::RunState> {
        WireState::read(self.state, &self.state_name)
    }

    /// The run's phase ([`WireState::read`]).
    pub fn run_phase(&self) -> Option<domain::RunPhase> {
        WireState::read(self.phase, &self.phase_name)
    }
}

impl v1::RunAction {
    /// The step's status ([`WireState::read`]).
    pub fn step_status(&self) -> Option<domain::StepStatus> {
        WireState::read(self.status, &self.status_name)
    }
}

impl v1::Delivery {
    /// The delivery's state ([`WireState::read`]).
    pub fn delivery_state(&self) -> Option<domain::DeliveryState> {
        WireState::read(self.status, &self.status_name)
    }
}

impl v1::DeliveryChanged {
    /// The delivery's state ([`WireState::read`]).
    pub fn delivery_state(&self) -> Option<domain::DeliveryState> {
        WireState::read(self.status, &self.status_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain state goes to the wire and back, and its wire name is its stored name
    /// with the enum's prefix: the two sides name the same states.
    fn round_trips<S, W>(all: &[S], prefix: &str, name: fn(S) -> &'static str)
    where
        S: WireState + PartialEq + std::fmt::Debug,
        W: TryFrom<i32> + Copy,
        W: WireName,
    {
        for &s in all {
            assert_eq!(S::from_wire(s.wire()), Some(s));
            let wire = W::try_from(s.wire()).ok().unwrap();
            assert_eq!(
                wire.wire_name(),
                format!("{prefix}{}", name(s).to_uppercase()),
                "{s:?}"
            );
            // From an older producer: only the name.
            assert_eq!(S::read(0, name(s)), Some(s));
        }
        assert_eq!(S::from_wire(0), None);
        assert_eq!(S::from_wire(999), None);
        assert_eq!(S::read(0, "bogus"), None, "never a default state");
    }

    trait WireName {
        fn wire_name(self) -> &'static str;
    }
    macro_rules! wire_name {
        ($($t:ident),+) => {$(
            impl WireName for v1::$t {
                fn wire_name(self) -> &'static str {
                    self.as_str_name()
                }
            }
        )+};
    }
    wire_name!(IncidentState, RunState, RunPhase, StepStatus, DeliveryState);

    #[test]
    fn every_state_crosses_the_wire_and_back_by_value_and_by_name() {
        use domain::{DeliveryState, IncidentState, RunPhase, RunState, StepStatus};
        round_trips::<_, v1::IncidentState>(
            &IncidentState::ALL,
            "INCIDENT_STATE_",
            IncidentState::as_str,
        );
        round_trips::<_, v1::RunState>(RunState::ALL, "RUN_STATE_", RunState::as_str);
        round_trips::<_, v1::RunPhase>(RunPhase::ALL, "RUN_PHASE_", RunPhase::as_str);
        round_trips::<_, v1::StepStatus>(StepStatus::ALL, "STEP_STATUS_", StepStatus::as_str);
        round_trips::<_, v1::DeliveryState>(
            DeliveryState::ALL,
            "DELIVERY_STATE_",
            DeliveryState::as_str,
        );
    }

    #[test]
    fn the_typed_field_wins_over_the_name() {
        let run = v1::Run {
            state: v1::RunState::Failed as i32,
            state_name: "succeeded".into(),
            ..Default::default()
        };
        assert_eq!(run.run_state(), Some(domain::RunState::Failed));
    }
}
