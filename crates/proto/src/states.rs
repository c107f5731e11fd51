//! The domain's states on the wire: each state enum of `firebreak_domain` beside its `v1`
//! twin, converted with exhaustive matches both ways (a state added on one side only does
//! not compile), and read strictly: an unspecified or unknown value is never a default state.

use std::str::FromStr;

use firebreak_domain as domain;

use crate::v1;

/// A domain state that travels as a `v1` enum.
pub trait WireState: Sized + Copy + FromStr {
    /// The state as its wire enum's value.
    fn wire(self) -> i32;

    /// The state's name (as stored, and as the CLI shows it).
    fn name(self) -> &'static str;

    /// The state a wire value holds; `None` for unspecified or a value this build lacks.
    fn from_wire(value: i32) -> Option<Self>;

    /// A request's optional state field: `None` when unspecified, the state when known, and
    /// INVALID_ARGUMENT naming `field` for a value no state has.
    fn field(field: &'static str, value: i32) -> Result<Option<Self>, domain::Error> {
        match value {
            0 => Ok(None),
            v => Self::from_wire(v)
                .map(Some)
                .ok_or_else(|| domain::Error::Invalid {
                    field,
                    reason: format!("{v} is not a known value"),
                }),
        }
    }

    /// A request's required state field: unspecified or unknown is INVALID_ARGUMENT naming
    /// `field`.
    fn required(field: &'static str, value: i32) -> Result<Self, domain::Error> {
        Self::field(field, value)?.ok_or_else(|| domain::Error::Invalid {
            field,
            reason: "required".into(),
        })
    }
}

/// A request's optional enum field without a domain twin: `None` when unspecified, the value
/// when this build knows it, and INVALID_ARGUMENT naming `field` otherwise.
pub fn enum_field<E: TryFrom<i32>>(
    field: &'static str,
    value: i32,
) -> Result<Option<E>, domain::Error> {
    match value {
        0 => Ok(None),
        v => E::try_from(v)
            .map(Some)
            .map_err(|_| domain::Error::Invalid {
                field,
                reason: format!("{v} is not a known value"),
            }),
    }
}

/// A report's grouping on the wire.
pub fn wire_grouping(g: domain::report::GroupBy) -> v1::ReportGrouping {
    use domain::report::GroupBy as G;
    match g {
        G::Category => v1::ReportGrouping::Category,
        G::Severity => v1::ReportGrouping::Severity,
        G::Service => v1::ReportGrouping::Service,
        G::Integration => v1::ReportGrouping::Integration,
    }
}

/// A request's grouping (`field`): unspecified is by category; an unknown value is
/// INVALID_ARGUMENT naming `field`.
pub fn grouping(field: &'static str, value: i32) -> Result<domain::report::GroupBy, domain::Error> {
    use domain::report::GroupBy as G;
    Ok(match enum_field::<v1::ReportGrouping>(field, value)? {
        None | Some(v1::ReportGrouping::Unspecified | v1::ReportGrouping::Category) => G::Category,
        Some(v1::ReportGrouping::Severity) => G::Severity,
        Some(v1::ReportGrouping::Service) => G::Service,
        Some(v1::ReportGrouping::Integration) => G::Integration,
    })
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
    /// The incident's state; `None` for unspecified or one this build lacks.
    pub fn incident_state(&self) -> Option<domain::IncidentState> {
        WireState::from_wire(self.state)
    }
}

impl v1::Run {
    /// The run's state; `None` for unspecified or one this build lacks.
    pub fn run_state(&self) -> Option<domain::RunState> {
        WireState::from_wire(self.state)
    }

    /// The run's phase; `None` for unspecified or one this build lacks.
    pub fn run_phase(&self) -> Option<domain::RunPhase> {
        WireState::from_wire(self.phase)
    }
}

impl v1::RunAction {
    /// The step's status; `None` for unspecified or one this build lacks.
    pub fn step_status(&self) -> Option<domain::StepStatus> {
        WireState::from_wire(self.status)
    }
}

impl v1::Delivery {
    /// The delivery's state; `None` for unspecified or one this build lacks.
    pub fn delivery_state(&self) -> Option<domain::DeliveryState> {
        WireState::from_wire(self.status)
    }
}

impl v1::DeliveryChanged {
    /// The delivery's state; `None` for unspecified or one this build lacks.
    pub fn delivery_state(&self) -> Option<domain::DeliveryState> {
        WireState::from_wire(self.status)
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
            assert_eq!(S::field("f", s.wire()).unwrap(), Some(s));
            assert_eq!(S::required("f", s.wire()).unwrap(), s);
        }
        assert_eq!(S::from_wire(0), None, "never a default state");
        assert_eq!(S::from_wire(999), None);
        assert_eq!(S::field("f", 0).unwrap(), None);
        let e = S::field("state_filter", 999).unwrap_err().to_string();
        assert!(e.contains("state_filter") && e.contains("999"), "{e}");
        let e = S::required("status", 0).unwrap_err().to_string();
        assert!(e.contains("status") && e.contains("required"), "{e}");
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
    wire_name!(
        IncidentState,
        RunState,
        RunPhase,
        StepStatus,
        DeliveryState,
        UpdateStatus
    );

    #[test]
    fn every_state_crosses_the_wire_and_back_and_nothing_else_does() {
        use domain::{DeliveryState, IncidentState, RunPhase, RunState, StepStatus, UpdateStatus};
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
        round_trips::<_, v1::UpdateStatus>(
            UpdateStatus::ALL,
            "UPDATE_STATUS_",
            UpdateStatus::as_str,
        );
    }

    #[test]
    fn every_grouping_crosses_the_wire_and_unspecified_is_by_category() {
        use domain::report::GroupBy;
        for g in GroupBy::ALL {
            assert_eq!(grouping("group_by", wire_grouping(g) as i32).unwrap(), g);
            assert_eq!(wire_grouping(g).name(), g.as_str());
        }
        assert_eq!(grouping("group_by", 0).unwrap(), GroupBy::Category);
        let e = grouping("group_by", 42).unwrap_err().to_string();
        assert!(e.contains("group_by"), "{e}");
        assert_eq!(
            enum_field::<v1::RunbookMode>("run_mode", 2).unwrap(),
            Some(v1::RunbookMode::PlanApprove)
        );
        assert!(enum_field::<v1::RunbookMode>("run_mode", 7).is_err());
    }
}
