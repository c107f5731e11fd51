//! Incident command from the schedule: an incident that needs a commander (triage flags it
//! `needs_commander`: severe enough, active, nobody in the role) gets the on-call person of
//! the configured schedule (`commander.schedule`) as commander when it opens, reopens, or
//! becomes severe enough. The assignment is a command triage applies, kept once per event
//! (a redelivered event assigns nothing twice) and only if the role is still vacant when
//! triage applies it, so it never takes the role from someone a person chose.

use firebreak_bus::{HandlerError, outbox_event, streams};
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_storage::ResponseRecord;

use crate::Notification;

/// The role the schedule fills.
const COMMANDER: &str = "commander";

/// Whether `change` is one after which an incident that needs a commander gets one: it
/// opened or reopened, or its severity rose (by hand or by a runbook's escalation).
fn assigns_after(change: v1::IncidentChange) -> bool {
    matches!(
        change,
        v1::IncidentChange::Opened
            | v1::IncidentChange::Reopened
            | v1::IncidentChange::SeverityChanged
            | v1::IncidentChange::Escalated
    )
}

impl Notification {
    /// Makes the schedule's on-call person commander of the incident `event` announces, when
    /// it needs one; nothing when no schedule is configured, the schedule does not exist
    /// (logged) or nobody is on call (logged: the flag stays for a person to act on).
    pub(crate) async fn assign_commander(&self, event: &v1::Event) -> Result<(), HandlerError> {
        let (Some(schedule), Some(Payload::IncidentChanged(c))) =
            (self.commander_schedule.as_deref(), &event.payload)
        else {
            return Ok(());
        };
        let Some(inc) = &c.incident else {
            return Ok(());
        };
        if !inc.needs_commander || !assigns_after(c.change_kind()) {
            return Ok(());
        }
        let now = self.clock.now();
        let current = self.schedules.now().await;
        let Some(s) = current.get(schedule) else {
            tracing::warn!(schedule, incident = %inc.id, "commander.schedule names no schedule: nobody is made commander");
            return Ok(());
        };
        let on_call = firebreak_domain::schedule::on_call(s, crate::schedules::instant(now));
        let Some(person) = on_call.into_iter().next() else {
            tracing::info!(schedule, incident = %inc.id, "nobody is on call to command the incident");
            return Ok(());
        };
        let actor = format!("schedule:{schedule}");
        let command = outbox_event(
            streams::NOTIFICATIONS,
            "notifications.incident_command",
            Payload::IncidentCommand(v1::IncidentCommand {
                incident_id: inc.id.clone(),
                actor: actor.clone(),
                command: Some(Command::Assign(v1::Assignment {
                    role: COMMANDER.into(),
                    person: person.clone(),
                    ..Default::default()
                })),
                via: actor.clone(),
                if_vacant: true,
            }),
        );
        // Kept as the schedule's answer to the page, once per announcing event.
        let record = ResponseRecord {
            id: format!("commander:{}", event.id),
            incident_id: inc.id.clone(),
            user: person.clone(),
            action: "assign-commander".into(),
            via: actor,
            at: now,
        };
        let new = self
            .store
            .record_response(&record, &command)
            .await
            .map_err(HandlerError::from)?;
        if new {
            self.relay.wake();
            tracing::info!(schedule, incident = %inc.id, person, "the on-call person is made commander");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_opening_reopening_and_rising_severity_assign() {
        use v1::IncidentChange as C;
        let assigning: Vec<C> = (0..=20)
            .filter_map(|n| C::try_from(n).ok())
            .filter(|c| assigns_after(*c))
            .collect();
        assert_eq!(
            assigning,
            [C::Opened, C::SeverityChanged, C::Escalated, C::Reopened]
        );
    }
}
