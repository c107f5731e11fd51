//! Reminders to post a status update: when an active incident of a configured severity has
//! gone `after` without one (since it opened, since its last update, or since it reopened),
//! its commander is reminded once per quiet period, through their first reachable contact
//! method.
//!
//! Durable like a paging step: each quiet period is a delivery row of kind
//! `status.reminder`, due when the period would end, keyed by the period's start and
//! length (so a redelivered event arms nothing twice), claimed under a lease like every
//! delivery (so replicas never both run it). Events arm rows and never cancel them: when a
//! row comes due, [`decide`] looks at the incident's reminder rows and runs only the
//! current one (the latest period's, armed last), once per period; an update, a hand-off,
//! a severity change or a resolve arms a newer row, which supersedes the older one. A
//! resolve or close arms a row that is already cancelled: it supersedes every earlier one
//! and reminds nobody. With no commander the reminder fails, naming why, and the failure is
//! on the timeline (every delivery's outcome is).

use std::time::Duration;

use firebreak_domain::status_update::{ReminderRule, reminder_due};
use firebreak_domain::{DeliveryState, IncidentState, Micros};
use firebreak_proto::v1;
use firebreak_storage::DeliveryRecord;
use serde::Deserialize;
use serde_json::json;

use crate::Notification;

/// The kind of a reminder's row, and of the message to the commander.
pub(crate) const REMINDER: &str = "status.reminder";
pub(crate) const REMINDER_MESSAGE: &str = "incident.status_reminder";
/// The longest quiet period a rule may allow.
const MAX_AFTER: u64 = 7 * 24 * 3600;

/// Configuration's `status_updates`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdatesSpec {
    /// When the commander is reminded: an incident of SEV1 up to `max_severity` that has
    /// had no status update for `after_seconds`. The shortest period that holds for an
    /// incident's severity counts. Default: SEV1 after 30 minutes, SEV2 after an hour;
    /// `[]` reminds nobody.
    #[serde(default = "default_reminders")]
    pub reminders: Vec<ReminderSpec>,
}

impl Default for StatusUpdatesSpec {
    fn default() -> Self {
        Self {
            reminders: default_reminders(),
        }
    }
}

/// One reminder rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReminderSpec {
    /// 1 (SEV1 only) to 5 (every severity).
    pub max_severity: u32,
    /// 1 second to 7 days.
    pub after_seconds: u64,
}

fn default_reminders() -> Vec<ReminderSpec> {
    firebreak_domain::status_update::DEFAULT_REMINDERS
        .iter()
        .map(|r| ReminderSpec {
            max_severity: r.max_severity,
            after_seconds: r.after.as_secs(),
        })
        .collect()
}

impl StatusUpdatesSpec {
    /// The rules, checked: the error names the field.
    pub(crate) fn rules(&self) -> Result<Vec<ReminderRule>, String> {
        self.reminders
            .iter()
            .enumerate()
            .map(|(n, r)| {
                if !(1..=5).contains(&r.max_severity) {
                    return Err(format!(
                        "status_updates.reminders[{n}].max_severity: 1 to 5, not {}",
                        r.max_severity
                    ));
                }
                if r.after_seconds == 0 || r.after_seconds > MAX_AFTER {
                    return Err(format!(
                        "status_updates.reminders[{n}].after_seconds: 1 to {MAX_AFTER}, not {}",
                        r.after_seconds
                    ));
                }
                Ok(ReminderRule {
                    max_severity: r.max_severity,
                    after: Duration::from_secs(r.after_seconds),
                })
            })
            .collect()
    }
}

/// What a reminder row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) id: String,
    /// The quiet period's start (microseconds).
    pub(crate) since: i64,
    pub(crate) created_at: Micros,
    pub(crate) status: DeliveryState,
    /// Armed by a resolve or close: it ends every period that began before it or with it.
    pub(crate) stop: bool,
}

impl Row {
    pub(crate) fn of(d: &DeliveryRecord) -> Option<Self> {
        (d.kind == REMINDER).then(|| Self {
            id: d.id.clone(),
            since: d.payload["since"].as_i64().unwrap_or(0),
            created_at: d.created_at,
            status: d.status,
            stop: d.payload["stop"].as_bool().unwrap_or(false),
        })
    }
}

/// What a due reminder row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A later period's row, or one armed later for this period, exists: nothing.
    Superseded,
    /// This period's reminder went out already.
    Reminded,
    /// Remind the commander.
    Remind,
}

/// Whether the due row `mine` reminds, given every reminder row of its incident (`mine`
/// among them).
pub(crate) fn decide(mine: &Row, rows: &[Row]) -> Outcome {
    let key = |r: &Row| (r.since, r.created_at, r.id.clone());
    if rows
        .iter()
        .any(|r| key(r) > key(mine) || (r.stop && r.since >= mine.since))
    {
        return Outcome::Superseded;
    }
    if rows
        .iter()
        .any(|r| r.id != mine.id && r.since == mine.since && r.status == DeliveryState::Delivered)
    {
        return Outcome::Reminded;
    }
    Outcome::Remind
}

impl Notification {
    /// The reminder row an incident's change arms, if any: for a change that starts a
    /// quiet period or changes who or how soon (opened, reopened, a status update, a
    /// severity change or escalation, a role change), one due when the period ends; for a
    /// resolve, close or merge, one already cancelled that supersedes the rest.
    pub(crate) fn reminder_row(
        &self,
        change: &v1::IncidentChanged,
        now: Micros,
    ) -> Option<DeliveryRecord> {
        use v1::IncidentChange as C;
        let inc = change.incident.as_ref()?;
        let state = inc.incident_state()?;
        let opened = inc.opened_at.as_ref().map_or(now, firebreak_proto::micros);
        let last = inc
            .last_status_update
            .as_ref()
            .and_then(|u| u.at.as_ref())
            .map(firebreak_proto::micros);
        // A resolve (or reopen) is placed after every period that began before it, however
        // the clocks of the services that stamped them compare.
        let at = now.max(opened).max(last.unwrap_or(opened));
        let severity = firebreak_proto::level(inc.severity);
        let (since, due, status) = match change.change_kind() {
            C::Resolved | C::Closed | C::Merged
                if matches!(state, IncidentState::Resolved | IncidentState::Closed) =>
            {
                (at, at, DeliveryState::Cancelled)
            }
            // A reopened incident's quiet period starts again, just after the resolve's
            // row (which ends every period up to its own time).
            C::Reopened => {
                let since = at + Duration::from_micros(1);
                let due = reminder_due(&self.reminders, severity, state, since, None)?;
                (since, due, DeliveryState::Pending)
            }
            C::Opened | C::StatusUpdated | C::SeverityChanged | C::Escalated | C::RolesChanged => {
                let due = reminder_due(&self.reminders, severity, state, opened, last)?;
                let since = last.map_or(opened, |l| l.max(opened));
                (since, due, DeliveryState::Pending)
            }
            _ => return None,
        };
        let commander = inc
            .roles
            .iter()
            .find(|r| r.role == "commander")
            .map(|r| r.person.clone());
        let minutes = due.saturating_duration_since(since).as_secs() / 60;
        Some(DeliveryRecord {
            // One row per incident, period, length and commander: the same event again arms
            // nothing.
            event_id: format!(
                "reminder:{}:{}:{}:{}",
                inc.id,
                since.unix_micros(),
                due.unix_micros(),
                commander.as_deref().unwrap_or("")
            ),
            channel: REMINDER.to_owned(),
            incident_id: inc.id.clone(),
            kind: REMINDER.to_owned(),
            payload: json!({
                "since": since.unix_micros(), "commander": commander,
                "stop": status == DeliveryState::Cancelled,
                "incident": crate::incident_json(inc),
                "message": format!(
                    "no status update for {minutes} minutes: post one with `firebreak incident update {} --status ... \"...\"`",
                    inc.id
                ),
            }),
            status,
            last_error: if status == DeliveryState::Cancelled {
                "the incident was resolved".into()
            } else {
                String::new()
            },
            next_attempt_at: due,
            ..crate::planned(now)
        })
    }

    /// Runs a due reminder row (see the module's comment).
    pub(crate) async fn attempt_reminder(&self, mut d: DeliveryRecord) {
        let now = self.clock.now();
        let mut announce = true;
        match self.remind(&d).await {
            Ok(Outcome::Remind) => {
                d.status = DeliveryState::Delivered;
                d.delivered_at = Some(now);
                d.last_error.clear();
                self.wake.notify_one();
            }
            Ok(outcome) => {
                // Not an event: a superseded row is bookkeeping, not news for the timeline.
                announce = false;
                d.status = DeliveryState::Cancelled;
                d.last_error = match outcome {
                    Outcome::Reminded => "the commander was reminded in this period".into(),
                    _ => "a later change re-armed the reminder".into(),
                };
            }
            Err(RemindError::Nobody(why)) => {
                d.status = DeliveryState::Failed;
                d.last_error = why;
            }
            Err(RemindError::Store(e)) => {
                announce = false;
                d.last_error = e;
                d.next_attempt_at = now + Duration::from_secs(5 * u64::from(d.attempts.min(12)));
                tracing::warn!(delivery = %d.id, error = %d.last_error, "a status reminder failed; tried again");
            }
        }
        let event = (announce && d.status != DeliveryState::Pending)
            .then(|| crate::delivery::changed_event(&d));
        if let Err(e) = self.store.update_delivery(&d, event.as_ref()).await {
            tracing::warn!(delivery = %d.id, error = %e, "recording a status reminder failed");
        }
        self.relay.wake();
    }

    async fn remind(&self, d: &DeliveryRecord) -> Result<Outcome, RemindError> {
        let store = |e: firebreak_storage::Error| RemindError::Store(e.to_string());
        let rows: Vec<Row> = self
            .store
            .deliveries(Some(&d.incident_id), 1000)
            .await
            .map_err(store)?
            .iter()
            .filter_map(Row::of)
            .collect();
        let mine = Row::of(d).ok_or_else(|| RemindError::Nobody("not a reminder".into()))?;
        let outcome = decide(&mine, &rows);
        if outcome != Outcome::Remind {
            return Ok(outcome);
        }
        let Some(commander) = d.payload["commander"].as_str() else {
            return Err(RemindError::Nobody(
                "no commander to remind: assign one with `firebreak incident assign ID --role commander PERSON`".into(),
            ));
        };
        let user = match &self.directory {
            Some(dir) => dir.store.user(commander).await.map_err(store)?,
            None => None,
        };
        let method = user.as_ref().and_then(|u| {
            u.contact_methods
                .iter()
                .find(|m| crate::channels::channel_for(&self.channels, m.kind).is_some())
        });
        let Some(method) = method else {
            return Err(RemindError::Nobody(format!(
                "the commander {commander} has no contact method a channel reaches"
            )));
        };
        let now = self.clock.now();
        let event_id = format!("{}:message", d.event_id);
        let message = DeliveryRecord {
            payload: json!({
                "event_id": event_id, "kind": REMINDER_MESSAGE, "actor": "notification",
                "incident": d.payload["incident"], "message": d.payload["message"],
                "recipient": { "user": commander, "method": method },
            }),
            event_id,
            channel: format!("user:{commander}/{}", method.name),
            incident_id: d.incident_id.clone(),
            kind: REMINDER_MESSAGE.to_owned(),
            destination: crate::delivery::destination(method),
            ..crate::planned(now)
        };
        self.store
            .insert_deliveries(&[message])
            .await
            .map_err(store)?;
        Ok(Outcome::Remind)
    }
}

/// Why a reminder did not go out.
enum RemindError {
    /// Nobody can be reminded (the text says why); final.
    Nobody(String),
    /// The store failed; tried again.
    Store(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, since: i64, created: i64, status: DeliveryState) -> Row {
        Row {
            id: id.into(),
            since,
            created_at: Micros::from_unix_micros(created),
            status,
            stop: false,
        }
    }

    #[test]
    fn only_the_current_row_reminds_and_once_per_period() {
        use DeliveryState::{Cancelled, Delivered, Pending};
        let a = row("a", 10, 10, Pending);
        // Alone: it reminds.
        assert_eq!(decide(&a, std::slice::from_ref(&a)), Outcome::Remind);
        // An update started a later period: superseded.
        let b = row("b", 20, 20, Pending);
        assert_eq!(decide(&a, &[a.clone(), b.clone()]), Outcome::Superseded);
        assert_eq!(decide(&b, &[a.clone(), b.clone()]), Outcome::Remind);
        // A resolve's row (cancelled at once) supersedes every earlier one.
        let stop = Row {
            stop: true,
            ..row("c", 30, 30, Cancelled)
        };
        assert_eq!(
            decide(&b, &[a.clone(), b.clone(), stop.clone()]),
            Outcome::Superseded
        );
        // Also one armed at the same instant (an update, then a resolve, in one tick).
        let same = row("0", 30, 30, Pending);
        assert_eq!(
            decide(&same, &[same.clone(), stop.clone()]),
            Outcome::Superseded
        );
        // A reopen's period starts after it.
        let reopened = row("f", 31, 31, Pending);
        assert_eq!(
            decide(&reopened, &[stop, reopened.clone()]),
            Outcome::Remind
        );
        // Re-armed in the same period (a hand-off) after this period's reminder went out:
        // not again.
        let sent = row("d", 20, 20, Delivered);
        let handed = row("e", 20, 25, Pending);
        assert_eq!(decide(&handed, &[sent, handed.clone()]), Outcome::Reminded);
    }

    #[test]
    fn rules_are_checked_naming_the_field() {
        assert_eq!(StatusUpdatesSpec::default().rules().unwrap().len(), 2);
        for (yaml, field) in [
            (
                "reminders: [{ max_severity: 0, after_seconds: 60 }]",
                "max_severity",
            ),
            (
                "reminders: [{ max_severity: 6, after_seconds: 60 }]",
                "max_severity",
            ),
            (
                "reminders: [{ max_severity: 1, after_seconds: 0 }]",
                "after_seconds",
            ),
            (
                "reminders: [{ max_severity: 1, after_seconds: 604801 }]",
                "after_seconds",
            ),
        ] {
            let spec: StatusUpdatesSpec = serde_yaml::from_str(yaml).unwrap();
            let err = spec.rules().unwrap_err();
            assert!(err.contains(field), "{yaml}: {err}");
        }
        let none: StatusUpdatesSpec = serde_yaml::from_str("reminders: []").unwrap();
        assert!(none.rules().unwrap().is_empty());
        assert!(serde_yaml::from_str::<StatusUpdatesSpec>("reminder: []").is_err());
    }
}
