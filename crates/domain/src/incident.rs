//! Severity, priority and the incident state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid};

/// How bad an incident is, 1 (critical) to 5 (low-level deficiency).
///
/// 1 critical: affects users in production; 2 significant: affects limited users in
/// production; 3 incident: errors, minor issues, heavy load; 4 minor: affects the service,
/// not seriously its users; 5 low-level deficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Severity(u8);

impl Severity {
    pub const CRITICAL: Self = Self(1);
    pub const SIGNIFICANT: Self = Self(2);
    pub const INCIDENT: Self = Self(3);
    pub const MINOR: Self = Self(4);
    pub const LOW: Self = Self(5);

    /// Accepts 1 to 5.
    pub fn new(level: u32) -> Result<Self> {
        match level {
            1..=5 => Ok(Self(level as u8)),
            _ => Err(invalid(
                "severity",
                format!("{level} is outside 1 (critical) to 5 (low)"),
            )),
        }
    }

    /// The level, 1 to 5.
    pub fn level(self) -> u8 {
        self.0
    }

    /// True when `self` is worse than `other` (a lower number).
    pub fn is_worse_than(self, other: Self) -> bool {
        self.0 < other.0
    }

    /// The guide's name of the level.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "critical",
            2 => "significant",
            3 => "incident",
            4 => "minor",
            _ => "low",
        }
    }
}

impl TryFrom<u8> for Severity {
    type Error = Error;
    fn try_from(v: u8) -> Result<Self> {
        Self::new(u32::from(v))
    }
}

impl From<Severity> for u8 {
    fn from(s: Severity) -> u8 {
        s.0
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SEV{}", self.0)
    }
}

/// How soon an incident needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    High,
    #[default]
    Medium,
    Low,
}

impl Urgency {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }
}

impl FromStr for Urgency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            "low" => Ok(Self::Low),
            other => Err(invalid(
                "urgency",
                format!("{other:?} is not high, medium or low"),
            )),
        }
    }
}

/// Work order, 1 (do now) to 5, from impact × urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Priority(u8);

impl Priority {
    /// The impact comes from severity: 1–2 high, 3 medium, 4–5 low. The priority is the
    /// classic matrix: high × high = P1, one step down on either axis adds one.
    pub fn from_impact_urgency(severity: Severity, urgency: Urgency) -> Self {
        let impact = match severity.level() {
            1 | 2 => 0,
            3 => 1,
            _ => 2,
        };
        let urgency = match urgency {
            Urgency::High => 0,
            Urgency::Medium => 1,
            Urgency::Low => 2,
        };
        Self(1 + impact + urgency)
    }

    /// The level, 1 to 5.
    pub fn level(self) -> u8 {
        self.0
    }

    /// Rebuilds a stored priority.
    pub fn new(level: u32) -> Result<Self> {
        match level {
            1..=5 => Ok(Self(level as u8)),
            _ => Err(invalid("priority", format!("{level} is outside 1 to 5"))),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// Raised and not yet acknowledged by a person.
    Open,
    /// A person owns it.
    Acknowledged,
    /// The impact is contained (a workaround, a rollback, a runbook's fix); the cause may
    /// remain. Paging stops, alerts still attach.
    Mitigated,
    /// The impact is over; the post-incident review is drafted.
    Resolved,
    /// The review is done (root cause recorded); nothing changes any more.
    Closed,
}

/// A change of state a person or runbook asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Mitigate,
    Resolve,
    Close,
    /// Back to open after a resolve (within the reopen window, which triage checks).
    Reopen,
    /// Closed because its alerts moved into another incident.
    Merge,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Mitigate => "mitigate",
            Self::Resolve => "resolve",
            Self::Close => "close",
            Self::Reopen => "reopen",
            Self::Merge => "merge",
        }
    }
}

impl IncidentState {
    /// Every state, in life-cycle order.
    pub const ALL: [Self; 5] = [
        Self::Open,
        Self::Acknowledged,
        Self::Mitigated,
        Self::Resolved,
        Self::Closed,
    ];

    /// The state after `action`, or why the action is not allowed now.
    ///
    /// open → acknowledged → mitigated → resolved → closed. Steps may be skipped forward
    /// (an alert that cleared before anyone looked resolves an open incident; a runbook's
    /// fix mitigates one), never taken backwards, except that a resolved incident reopens
    /// (triage keeps that to its reopen window). Any incident not closed can be merged
    /// into another, which closes it. Nothing leaves closed.
    pub fn apply(self, action: Action) -> Result<Self> {
        use IncidentState::*;
        match (self, action) {
            (Open, Action::Acknowledge) => Ok(Acknowledged),
            (Open | Acknowledged, Action::Mitigate) => Ok(Mitigated),
            (Open | Acknowledged | Mitigated, Action::Resolve) => Ok(Resolved),
            (Resolved, Action::Close) => Ok(Closed),
            (Resolved, Action::Reopen) => Ok(Open),
            (Open | Acknowledged | Mitigated | Resolved, Action::Merge) => Ok(Closed),
            (state, action) => Err(Error::Transition {
                action: action.verb(),
                state: state.as_str(),
            }),
        }
    }

    /// True while alerts with the incident's dedup key attach to it.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged | Self::Mitigated)
    }

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Mitigated => "mitigated",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
        }
    }
}

impl FromStr for IncidentState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s.trim())
            .ok_or_else(|| {
                invalid(
                    "state",
                    format!("{s:?} is not open, acknowledged, mitigated, resolved or closed"),
                )
            })
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_is_allowed_or_forbidden_as_designed() {
        use Action::*;
        use IncidentState::*;
        // Every (state, action) pair: the target state, or None when forbidden.
        let table = [
            (Open, Acknowledge, Some(Acknowledged)),
            (Open, Mitigate, Some(Mitigated)),
            (Open, Resolve, Some(Resolved)),
            (Open, Close, None),
            (Open, Reopen, None),
            (Open, Merge, Some(Closed)),
            (Acknowledged, Acknowledge, None),
            (Acknowledged, Mitigate, Some(Mitigated)),
            (Acknowledged, Resolve, Some(Resolved)),
            (Acknowledged, Close, None),
            (Acknowledged, Reopen, None),
            (Acknowledged, Merge, Some(Closed)),
            (Mitigated, Acknowledge, None),
            (Mitigated, Mitigate, None),
            (Mitigated, Resolve, Some(Resolved)),
            (Mitigated, Close, None),
            (Mitigated, Reopen, None),
            (Mitigated, Merge, Some(Closed)),
            (Resolved, Acknowledge, None),
            (Resolved, Mitigate, None),
            (Resolved, Resolve, None),
            (Resolved, Close, Some(Closed)),
            (Resolved, Reopen, Some(Open)),
            (Resolved, Merge, Some(Closed)),
            (Closed, Acknowledge, None),
            (Closed, Mitigate, None),
            (Closed, Resolve, None),
            (Closed, Close, None),
            (Closed, Reopen, None),
            (Closed, Merge, None),
        ];
        assert_eq!(table.len(), IncidentState::ALL.len() * 6);
        for (from, action, to) in table {
            match (from.apply(action), to) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{from} {action:?}"),
                (Err(Error::Transition { .. }), None) => {}
                (got, want) => panic!("{from} {action:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn transition_errors_name_action_and_state() {
        let err = IncidentState::Open.apply(Action::Close).unwrap_err();
        assert_eq!(err.to_string(), "cannot close an incident that is open");
    }

    #[test]
    fn states_parse_from_their_names_only() {
        for state in IncidentState::ALL {
            assert_eq!(state.as_str().parse::<IncidentState>().unwrap(), state);
        }
        assert!("triggered".parse::<IncidentState>().is_err());
    }

    #[test]
    fn severity_accepts_one_to_five_only() {
        assert!(Severity::new(0).is_err());
        assert!(Severity::new(6).is_err());
        for level in 1..=5 {
            assert_eq!(Severity::new(level).unwrap().level() as u32, level);
        }
        assert!(Severity::CRITICAL.is_worse_than(Severity::INCIDENT));
    }

    #[test]
    fn priority_is_impact_times_urgency() {
        let p = |s: u32, u| Priority::from_impact_urgency(Severity::new(s).unwrap(), u).level();
        assert_eq!(p(1, Urgency::High), 1);
        assert_eq!(p(2, Urgency::Medium), 2);
        assert_eq!(p(1, Urgency::Low), 3);
        assert_eq!(p(3, Urgency::High), 2);
        assert_eq!(p(3, Urgency::Medium), 3);
        assert_eq!(p(4, Urgency::Medium), 4);
        assert_eq!(p(5, Urgency::Low), 5);
    }
}
