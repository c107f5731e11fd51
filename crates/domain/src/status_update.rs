//! Status updates to an incident's stakeholders: the stakeholder-facing status (Statuspage's
//! investigating, identified, monitoring, resolved), the message's rules, and when the
//! commander is reminded that none came.
//!
//! The status is not the incident's state: a `resolved` update tells stakeholders the impact
//! is over, and resolving the incident (which stops paging and renders the review) stays a
//! separate act, so an update never moves the life cycle.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid};
use crate::states::states;
use crate::{IncidentState, Micros};

states!(
    /// What stakeholders are told of an incident.
    UpdateStatus, "status", {
        /// The cause is being looked for.
        Investigating => "investigating",
        /// The cause is known; a fix is under way.
        Identified => "identified",
        /// A fix is in; the results are being watched.
        Monitoring => "monitoring",
        /// The impact is over (the incident itself is resolved separately).
        Resolved => "resolved",
    }
);

/// The most bytes a status update's message holds.
pub const MAX_UPDATE_MESSAGE: usize = 4096;

/// A status update as posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub status: UpdateStatus,
    pub message: String,
    pub at: Micros,
    /// The actor who posted it (`user:NAME`).
    pub by: String,
}

/// A status update's message, trimmed: 1 to [`MAX_UPDATE_MESSAGE`] bytes, no NUL; the error
/// names the field `message`.
pub fn update_message(given: &str) -> Result<&str> {
    let message = given.trim();
    if message.is_empty() || message.len() > MAX_UPDATE_MESSAGE {
        return Err(invalid(
            "message",
            format!("a status update's message holds 1 to {MAX_UPDATE_MESSAGE} bytes"),
        ));
    }
    crate::no_nul("message", message)?;
    Ok(message)
}

/// Whether an incident in `state` takes a status update: every state but closed (a resolved
/// incident may still tell stakeholders it is over).
pub fn takes_updates(state: IncidentState) -> bool {
    state != IncidentState::Closed
}

/// How long an incident of some severities may go without a status update before its
/// commander is reminded (configuration `status_updates.reminders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderRule {
    /// The rule holds for SEV1 up to this level (1: SEV1 only).
    pub max_severity: u32,
    pub after: Duration,
}

/// The default reminders: SEV1 after 30 minutes, SEV2 after an hour.
pub const DEFAULT_REMINDERS: [ReminderRule; 2] = [
    ReminderRule {
        max_severity: 1,
        after: Duration::from_secs(30 * 60),
    },
    ReminderRule {
        max_severity: 2,
        after: Duration::from_secs(60 * 60),
    },
];

/// How long an incident of `severity` may stay quiet: the shortest `after` of the rules
/// that hold for it; `None` when none does.
pub fn quiet_limit(rules: &[ReminderRule], severity: u32) -> Option<Duration> {
    rules
        .iter()
        .filter(|r| severity >= 1 && severity <= r.max_severity)
        .map(|r| r.after)
        .min()
}

/// When the commander of an incident is next reminded: `quiet` after the later of its
/// opening and its last status update, while it is open, acknowledged or mitigated; `None`
/// once it is resolved or closed, or when no rule holds for its severity.
pub fn reminder_due(
    rules: &[ReminderRule],
    severity: u32,
    state: IncidentState,
    opened_at: Micros,
    last_update: Option<Micros>,
) -> Option<Micros> {
    if matches!(state, IncidentState::Resolved | IncidentState::Closed) {
        return None;
    }
    let quiet = quiet_limit(rules, severity)?;
    let since = last_update.map_or(opened_at, |u| u.max(opened_at));
    Some(since + quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn statuses_parse_strictly_and_name_the_field() {
        for s in UpdateStatus::ALL {
            assert_eq!(s.as_str().parse::<UpdateStatus>().unwrap(), *s);
        }
        for bad in ["", "Resolved", "fixed", "investigating "] {
            let err = bad.parse::<UpdateStatus>().unwrap_err().to_string();
            assert!(err.contains("status"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_message_holds_one_to_4096_bytes_without_nul() {
        assert_eq!(update_message("  db is back  ").unwrap(), "db is back");
        assert!(update_message(&"x".repeat(MAX_UPDATE_MESSAGE)).is_ok());
        for bad in [
            String::new(),
            "   ".into(),
            "x".repeat(MAX_UPDATE_MESSAGE + 1),
            "a\0b".into(),
        ] {
            let err = update_message(&bad).unwrap_err().to_string();
            assert!(err.contains("message"), "{err}");
        }
    }

    #[test]
    fn only_a_closed_incident_refuses_updates() {
        for s in [
            IncidentState::Open,
            IncidentState::Acknowledged,
            IncidentState::Mitigated,
            IncidentState::Resolved,
        ] {
            assert!(takes_updates(s), "{s}");
        }
        assert!(!takes_updates(IncidentState::Closed));
    }

    #[test]
    fn the_reminder_falls_due_after_the_quiet_limit_of_the_severity() {
        let opened = Micros::from_unix_micros(1_000_000);
        let rules = DEFAULT_REMINDERS;
        assert_eq!(quiet_limit(&rules, 1), Some(30 * MIN));
        assert_eq!(quiet_limit(&rules, 2), Some(60 * MIN));
        assert_eq!(quiet_limit(&rules, 3), None);
        assert_eq!(quiet_limit(&rules, 0), None);
        let due = |sev, state, last| reminder_due(&rules, sev, state, opened, last);
        assert_eq!(due(1, IncidentState::Open, None), Some(opened + 30 * MIN));
        // An update re-arms it from the update.
        let update = opened + 20 * MIN;
        assert_eq!(
            due(1, IncidentState::Acknowledged, Some(update)),
            Some(update + 30 * MIN)
        );
        assert_eq!(
            due(2, IncidentState::Mitigated, None),
            Some(opened + 60 * MIN)
        );
        assert_eq!(due(3, IncidentState::Open, None), None);
        assert_eq!(due(1, IncidentState::Resolved, None), None);
        assert_eq!(due(1, IncidentState::Closed, Some(update)), None);
    }
}
