//! Triage's shell: reads a snapshot, lets `decide` decide, applies the changeset in the same
//! transaction, then tells watchers and wakes the relay. Every rule lives in `decide.rs`.

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{Action, IncidentState};
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_storage::{
    ChangeRecord, IncidentRecord, OutboxEvent, SnapshotRequest, TimelineRecord,
};
use serde_json::json;

use crate::Lifecycle;
use crate::convert::incident_to_proto;
use crate::decide::{
    Announcement, Change, Context, Decision, FollowUpChange, Ingested, Input, Reclassification,
    RoleChange, RunbookCommand, decide, group_keys, person_name, request_for, review_input,
    role_name, with_follow_ups,
};
use crate::limits::{
    MAX_ACTOR, MAX_CHANGE_DETAILS, MAX_CHANGE_SUMMARY, MAX_DOCUMENT, MAX_NAME, MAX_PAGE_BYTES,
    MAX_TEXT, clip, clip_json,
};
use crate::{Error, Triage};

type Result<T, E = Error> = std::result::Result<T, E>;

/// How often a batch is decided again after the store was not as its snapshot said (another
/// replica opened the key, attached the alert or handled the event first).
const CONFLICT_RETRIES: u32 = 3;

impl Triage {
    /// Reads what `inputs` depend on, decides, applies, all in one transaction; on a
    /// conflict, decides again on a fresh snapshot. Returns the decision and the timeline
    /// entries written.
    async fn decide_and_apply(&self, inputs: &[Input]) -> Result<(Decision, Vec<TimelineRecord>)> {
        let mut request = request_for(inputs);
        request.group_keys = group_keys(inputs, &self.grouping);
        let group_window = self.grouping.longest_window();
        let repeat_window = self.lifecycle.longest_repeat_window();
        let mut tries = 0;
        loop {
            let now = self.clock.now();
            if !repeat_window.is_zero() && !request.dedup_keys.is_empty() {
                let back = i64::try_from(repeat_window.as_micros()).unwrap_or(i64::MAX);
                request.resolved_since = Some(firebreak_domain::Micros::from_unix_micros(
                    now.unix_micros().saturating_sub(back),
                ));
            }
            if !request.group_keys.is_empty() {
                let back = i64::try_from(group_window.as_micros()).unwrap_or(i64::MAX);
                request.grouped_since = Some(firebreak_domain::Micros::from_unix_micros(
                    now.unix_micros().saturating_sub(back),
                ));
            }
            let mut tx = self.store.begin().await?;
            let snapshot = tx.snapshot(&request).await?;
            let mut decision = {
                let mut new_id = || firebreak_domain::IncidentId::new().to_string();
                let mut ctx = Context {
                    taxonomy: &self.taxonomy,
                    lifecycle: &self.lifecycle,
                    grouping: &self.grouping,
                    now,
                    new_id: &mut new_id,
                };
                decide(&snapshot, inputs, &mut ctx)?
            };
            if decision.changeset.is_empty() {
                // Nothing to write: the transaction ends unused.
                return Ok((decision, Vec::new()));
            }
            let mut changeset = std::mem::take(&mut decision.changeset);
            // Each alert's decision span stays open until the write says whether it held.
            let (events, spans): (Vec<_>, Vec<_>) = decision
                .announcements
                .iter()
                .map(|a| event_of(a, &self.lifecycle))
                .unzip();
            changeset.events = events;
            let applied = tx.apply(changeset).await;
            if applied.is_err() {
                for span in spans.iter().flatten() {
                    span.record("firebreak.applied", false);
                    span.record("otel.status_code", "ERROR");
                }
            }
            match applied {
                Ok(written) => {
                    self.relay.wake();
                    self.announce(written.clone());
                    return Ok((decision, written));
                }
                Err(firebreak_storage::Error::Conflict(_)) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn announce(&self, entries: Vec<TimelineRecord>) {
        for e in entries {
            // No watcher is fine.
            let _ = self.watch.send(e);
        }
    }

    /// Turns a stored alert into an incident or attaches it to the open one with its dedup key.
    /// Idempotent by alert id: a second call returns the first answer and changes nothing.
    pub(crate) async fn ingest(&self, alert: v1::AlertReceived) -> Result<Ingested> {
        let traceparent = Some(firebreak_telemetry::trace::outgoing()).filter(|t| !t.is_empty());
        let (decision, _) = self
            .ingest_inputs(vec![Input::alert(alert, traceparent)?])
            .await?;
        decision.ingested.into_iter().next().ok_or_else(|| {
            Error::Storage(firebreak_storage::Error::Corrupt(
                "an alert without an answer".into(),
            ))
        })
    }

    /// Ingests a run of alerts in one transaction, as a consumer fetched them: the same
    /// decisions as one by one, a fraction of the commits. Any error rolls all back (the
    /// consumer then takes them one at a time). Each alert comes with the trace context of
    /// its event, which the events it causes continue.
    /// A fetched run of alerts (with their trace context) and repeats of firing alerts (with
    /// their event ids), in one transaction: the alerts first, so a repeat in the same run as
    /// its trigger finds it attached.
    pub(crate) async fn ingest_batch(
        &self,
        alerts: &[(String, v1::AlertReceived)],
        repeats: &[(String, v1::AlertRepeated)],
    ) -> Result<()> {
        let mut inputs = alerts
            .iter()
            .map(|(traceparent, alert)| Input::alert(alert.clone(), Some(traceparent.clone())))
            .collect::<Result<Vec<_>>>()?;
        let now = self.clock.now();
        inputs.extend(
            repeats
                .iter()
                .map(|(event_id, r)| Input::repeated(event_id, r, now)),
        );
        self.ingest_inputs(inputs).await.map(drop)
    }

    /// The sender triggered a firing alert again: counted on its attachment, once.
    pub(crate) async fn alert_repeated(&self, event_id: &str, r: &v1::AlertRepeated) -> Result<()> {
        let input = Input::repeated(event_id, r, self.clock.now());
        self.decide_and_apply(&[input]).await.map(drop)
    }

    async fn ingest_inputs(&self, inputs: Vec<Input>) -> Result<(Decision, Vec<TimelineRecord>)> {
        let done = self.decide_and_apply(&inputs).await?;
        let m = firebreak_telemetry::metrics();
        // Each alert input has its answer in `ingested`, in order.
        let received = inputs.iter().filter_map(Input::received_at);
        let now = self.clock.now().unix_micros() as f64 / 1e6;
        for (i, at) in done.0.ingested.iter().zip(received) {
            if i.before {
                continue;
            }
            if i.deduplicated {
                m.alerts_deduplicated.inc();
            } else {
                m.incidents_opened.inc();
            }
            if let Some(at) = at {
                m.observe_alert_to_incident(!i.deduplicated, at.unix_micros() as f64 / 1e6, now);
            }
        }
        Ok(done)
    }

    /// Applies a life-cycle action requested by a person, a runbook or an integration.
    pub(crate) async fn transition(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        text: &str,
    ) -> Result<IncidentRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        // Resolve and close render the review from the timeline as it stands.
        let timeline = match action {
            Action::Resolve | Action::Close => self.store.timeline(id).await?,
            Action::Acknowledge | Action::Mitigate | Action::Reopen | Action::Merge => Vec::new(),
        };
        let input = Input::Transition {
            incident_id: id.to_owned(),
            action,
            actor: actor.to_owned(),
            text: text.to_owned(),
            timeline,
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        let inc = decision
            .transitioned
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        observe_response_time(&inc, action);
        Ok(inc)
    }

    /// Merges `id` into `into`: the incident merged away (closed, linked), the one merged
    /// into, and how many alerts moved.
    pub(crate) async fn merge(
        &self,
        id: &str,
        into: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(IncidentRecord, IncidentRecord, u32)> {
        let input = Input::Merge {
            incident_id: id.to_owned(),
            into: into.to_owned(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        decision
            .merged
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Sets severity, priority or category by hand, with a reason.
    pub(crate) async fn reclassify(
        &self,
        id: &str,
        actor: &str,
        change: Reclassification,
    ) -> Result<IncidentRecord> {
        let input = Input::Reclassify {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            change,
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        decision
            .transitioned
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Adds a person's note to the timeline.
    pub(crate) async fn add_note(
        &self,
        id: &str,
        actor: &str,
        text: &str,
    ) -> Result<TimelineRecord> {
        let input = Input::Note {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            text: text.to_owned(),
        };
        let (_, written) = self.decide_and_apply(&[input]).await?;
        written
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Posts a status update to the incident's stakeholders; the incident as it then stands.
    pub(crate) async fn post_status_update(
        &self,
        id: &str,
        status: firebreak_domain::UpdateStatus,
        message: &str,
        actor: &str,
    ) -> Result<IncidentRecord> {
        // `decide` checks these too; here they are refused before a transaction begins.
        firebreak_domain::IncidentId::parse(id)?;
        firebreak_domain::status_update::update_message(message)?;
        let input = Input::StatusUpdate {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            status,
            message: message.to_owned(),
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        decision
            .updated
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Gives or takes an incident role; the incident as it then stands (a repeated
    /// assignment changes nothing and answers the same).
    pub(crate) async fn change_role(
        &self,
        id: &str,
        change: RoleChange,
        role: &str,
        person: &str,
        actor: &str,
    ) -> Result<IncidentRecord> {
        // `decide` checks these too; here they are refused before a transaction begins.
        firebreak_domain::IncidentId::parse(id)?;
        role_name(role)?;
        person_name(person)?;
        let input = Input::Role {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            change,
            role: role.to_owned(),
            person: person.to_owned(),
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        decision
            .assigned
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// The review of a resolved or closed incident, made when asked from the timeline and
    /// the follow-ups as they stand (runbook actions that finish after the resolve, and the
    /// follow-ups and summary people keep writing after the close, appear), with the
    /// configured template; the follow-ups are overdue by triage's clock.
    pub(crate) async fn review(&self, id: &str) -> Result<firebreak_domain::ReviewInput> {
        firebreak_domain::IncidentId::parse(id)?;
        let inc = self
            .store
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if !matches!(inc.state, IncidentState::Resolved | IncidentState::Closed) {
            return Err(firebreak_domain::Error::Transition {
                action: "review",
                state: inc.state.as_str(),
            }
            .into());
        }
        let timeline = self.store.timeline(id).await?;
        let follow_ups = self
            .store
            .follow_ups(&firebreak_storage::FollowUpQuery {
                incident_id: Some(id.to_owned()),
                limit: u32::try_from(firebreak_domain::follow_up::MAX_FOLLOW_UPS)
                    .unwrap_or(u32::MAX),
                ..Default::default()
            })
            .await?;
        Ok(with_follow_ups(
            review_input(&inc, &timeline),
            &follow_ups,
            &self.review_template,
            self.clock.now().timestamp().date(),
        ))
    }

    /// Adds or changes a follow-up; the follow-up as it then stands.
    pub(crate) async fn follow_up(
        &self,
        id: &str,
        actor: &str,
        change: FollowUpChange,
    ) -> Result<firebreak_storage::FollowUpRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        let input = Input::FollowUp {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            change,
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        decision
            .follow_ups
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Sets the review's summary; the `summary_edited` entry written.
    pub(crate) async fn set_summary(
        &self,
        id: &str,
        actor: &str,
        text: &str,
    ) -> Result<TimelineRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        let input = Input::Summary {
            incident_id: id.to_owned(),
            actor: actor.to_owned(),
            text: text.to_owned(),
        };
        let (_, written) = self.decide_and_apply(&[input]).await?;
        written
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Puts a runbook's progress on the incident's timeline (once per event).
    pub(crate) async fn record_run(&self, event_id: &str, run: v1::RunChanged) -> Result<()> {
        // A runbook's action and detail come from a script: clipped, so no run can flood
        // the timeline with what a read cannot carry.
        let action = match serde_json::from_str::<serde_json::Value>(&run.action) {
            Ok(v) => clip_json(v, MAX_DOCUMENT),
            Err(_) if run.action.is_empty() => serde_json::Value::Null,
            Err(_) => json!({ "truncated": clip(&run.action, MAX_DOCUMENT) }),
        };
        let runbook = clip(&run.runbook, MAX_NAME);
        let data = json!({
            "run_id": clip(&run.run_id, MAX_NAME), "runbook": runbook, "live": run.live,
            "action": action,
            "detail": clip(&run.detail, MAX_TEXT),
        });
        let input = Input::Record {
            event_id: event_id.to_owned(),
            incident_id: run.incident_id.clone(),
            // A change this build lacks (from a newer producer) is recorded as such, never
            // as another change.
            kind: format!("runbook_{}", run.change_kind().name()),
            actor: clip(&format!("runbook:{runbook}"), MAX_ACTOR),
            data,
        };
        self.decide_and_apply(&[input]).await.map(drop)
    }

    /// Puts a delivery's outcome on the incident's timeline (once per event).
    pub(crate) async fn record_delivery(
        &self,
        event_id: &str,
        d: v1::DeliveryChanged,
    ) -> Result<()> {
        let data = json!({
            "delivery_id": clip(&d.delivery_id, MAX_NAME), "channel": clip(&d.channel, MAX_NAME),
            // Null when the event names no state this build knows.
            "status": d.delivery_state().map(|s| s.as_str()), "attempts": d.attempts,
            "error": clip(&d.error, MAX_TEXT),
            "kind": v1::DeliveryKind::shown(d.delivery_kind), "user": clip(&d.user, MAX_NAME),
        });
        let input = Input::Record {
            event_id: event_id.to_owned(),
            incident_id: d.incident_id.clone(),
            kind: "notification".into(),
            actor: "notification".into(),
            data,
        };
        self.decide_and_apply(&[input]).await.map(drop)
    }

    /// Puts a maintenance window holding an incident's paging back on its timeline (once
    /// per event): which window, until when, and the escalation step that waits.
    pub(crate) async fn record_paging_suppressed(
        &self,
        event_id: &str,
        p: v1::PagingSuppressed,
    ) -> Result<()> {
        let until = p
            .until
            .as_ref()
            .map(|t| firebreak_proto::micros(t).timestamp())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        let data = json!({
            "window": clip(&p.window, MAX_NAME), "until": until,
            "policy": clip(&p.policy, MAX_NAME), "step": p.step,
        });
        let input = Input::Record {
            event_id: event_id.to_owned(),
            incident_id: p.incident_id.clone(),
            kind: "paging_suppressed".into(),
            actor: "notification".into(),
            data,
        };
        self.decide_and_apply(&[input]).await.map(drop)
    }

    /// Applies a runbook's command to an incident, once per event.
    pub(crate) async fn apply_command(
        &self,
        event_id: &str,
        cmd: v1::IncidentCommand,
    ) -> Result<()> {
        let command = match cmd.command {
            Some(Command::Note(text)) => RunbookCommand::Note(text),
            Some(Command::SetSeverity(level)) => {
                RunbookCommand::SetSeverity(firebreak_proto::level(level))
            }
            Some(Command::Escalate(reason)) => RunbookCommand::Escalate(reason),
            Some(Command::SetCategory(category)) => RunbookCommand::SetCategory(category),
            Some(Command::Assign(a)) => RunbookCommand::Assign {
                role: a.role,
                person: a.person,
                if_vacant: cmd.if_vacant,
            },
            // The state machine makes this one idempotent: a redelivered resolve finds the
            // incident resolved and is refused, which is the outcome wanted.
            Some(Command::Resolve(summary)) => {
                let actor = clip(&cmd.actor, MAX_ACTOR);
                return ignore_refusals(
                    self.transition(
                        &cmd.incident_id,
                        Action::Resolve,
                        &actor,
                        &clip(&summary, MAX_TEXT),
                    )
                    .await,
                );
            }
            // A person answering a page (a link, a button, a reply): the same acknowledgement
            // as the CLI's, with where it came from on the timeline.
            Some(Command::Acknowledge(_)) => {
                let actor = clip(&cmd.actor, MAX_ACTOR);
                return ignore_refusals(
                    self.transition(
                        &cmd.incident_id,
                        Action::Acknowledge,
                        &actor,
                        &clip(&cmd.via, MAX_NAME),
                    )
                    .await,
                );
            }
            None => return Ok(()),
        };
        let input = Input::Command {
            event_id: event_id.to_owned(),
            incident_id: cmd.incident_id.clone(),
            actor: cmd.actor,
            command,
        };
        self.decide_and_apply(&[input]).await.map(drop)
    }

    /// The sender resolved an alert: mark it, and resolve its incident when it was the last
    /// unresolved one and the integration auto-resolves. Safe to repeat: a redelivered
    /// event finds the mark made and the incident resolved.
    pub(crate) async fn alert_resolved(&self, event_id: &str, r: v1::AlertResolved) -> Result<()> {
        let input = Input::AlertResolved {
            event_id: event_id.to_owned(),
            alert_id: r.alert_id.clone(),
            integration: r.integration.clone(),
            auto_resolve: r.auto_resolve,
        };
        let (decision, _) = self.decide_and_apply(&[input]).await?;
        for (incident_id, actor) in decision.auto_resolve {
            let resolved = self
                .transition(
                    &incident_id,
                    Action::Resolve,
                    &actor,
                    "all its alerts resolved",
                )
                .await;
            ignore_refusals(resolved)?;
        }
        Ok(())
    }

    /// The sender acknowledged an alert: acknowledge its incident if it is still open.
    pub(crate) async fn alert_acknowledged(&self, a: v1::AlertAcknowledged) -> Result<()> {
        let Some(incident_id) = self.incident_of_alert(&a.alert_id).await? else {
            return Ok(());
        };
        let actor = format!("integration:{}", a.integration);
        ignore_refusals(
            self.transition(&incident_id, Action::Acknowledge, &actor, "")
                .await,
        )
    }

    /// A change event: stored once, and a timeline entry referring to it (by `change_id`)
    /// on every active incident of the same integration, as context; nobody is paged. The
    /// details stay in the one stored copy: an entry per incident holding them would grow
    /// the store by the event's size times the incidents open.
    pub(crate) async fn change_received(
        &self,
        event_id: &str,
        c: v1::ChangeReceived,
    ) -> Result<()> {
        let mut concerned = Vec::new();
        for state in [IncidentState::Open, IncidentState::Acknowledged] {
            let mut after = None;
            loop {
                let page = self
                    .store
                    .incidents_page(Some(state.as_str()), after.as_ref(), 1000, MAX_PAGE_BYTES)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(firebreak_storage::IncidentCursor {
                    opened_at: last.opened_at,
                    id: last.id.clone(),
                });
                // Webhook incidents carry their integration in their source: `pagerduty/NAME`.
                concerned.extend(
                    page.into_iter()
                        .filter(|i| {
                            i.source.split_once('/').map(|(_, name)| name)
                                == Some(c.integration.as_str())
                        })
                        .map(|i| i.id),
                );
            }
        }
        let details = if c.details.len() > MAX_CHANGE_DETAILS {
            json!({ "truncated": clip(&c.details, MAX_CHANGE_DETAILS) }).to_string()
        } else {
            c.details.replace('\0', "\u{fffd}")
        };
        let change = ChangeRecord {
            id: event_id.to_owned(),
            integration: clip(&c.integration, MAX_NAME),
            summary: clip(&c.summary, MAX_CHANGE_SUMMARY),
            source: clip(&c.source, MAX_CHANGE_SUMMARY),
            at: c
                .at
                .as_ref()
                .map_or_else(|| self.clock.now(), firebreak_proto::micros),
            details,
        };
        let input = Input::Change { change, concerned };
        self.decide_and_apply(&[input]).await.map(drop)
    }

    async fn incident_of_alert(&self, alert_id: &str) -> Result<Option<String>> {
        let mut tx = self.store.begin().await?;
        let snapshot = tx
            .snapshot(&SnapshotRequest {
                alert_ids: vec![alert_id.to_owned()],
                ..Default::default()
            })
            .await?;
        Ok(snapshot.links.get(alert_id).map(|l| l.incident_id.clone()))
    }
}

/// A transition asked for by an event rather than a person: an incident gone or already
/// past the state is the outcome wanted, not an error.
fn ignore_refusals<T>(result: Result<T>) -> Result<()> {
    match result {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(Error::Domain(firebreak_domain::Error::Transition { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `incidents` event announcing a change, in the trace it continues, and the decision's
/// span when the change is an alert's (a person's continues the request's span).
fn event_of(a: &Announcement, policy: &Lifecycle) -> (OutboxEvent, Option<tracing::Span>) {
    let make = || {
        outbox_event(
            streams::INCIDENTS,
            format!("incidents.{}", a.change.name()),
            Payload::IncidentChanged(v1::IncidentChanged {
                // The update a status change announces travels beside the incident, so a
                // consumer reads it where the kind says it is.
                status_update: match a.change {
                    Change::StatusUpdated => a.incident.last_status_update.as_ref().map(Into::into),
                    _ => None,
                },
                ..v1::IncidentChanged::new(
                    a.change,
                    incident_to_proto(&a.incident, policy),
                    a.actor.clone(),
                )
            }),
        )
    };
    // An alert's decision continues the alert's trace (a batch mixes traces), in a span of
    // its own that what the event causes descends from; a person's change continues the
    // request's span.
    match &a.traceparent {
        Some(tp) => {
            let span = firebreak_telemetry::trace::follow(
                tracing::info_span!(
                    "triage.decide",
                    otel.name = format!("triage {}", a.change.name()),
                    incident.id = %a.incident.id,
                    incident.severity = a.incident.severity,
                    incident.category = %a.incident.category,
                    firebreak.change = a.change.name(),
                    // False when the write failed (a conflict, retried with a new decision).
                    firebreak.applied = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                ),
                Some(tp),
            );
            (span.in_scope(make), Some(span))
        }
        None => (make(), None),
    }
}

/// Observes the time from opening to acknowledgement or resolve in the Prometheus
/// histograms (by severity and category) when `action` just made it.
fn observe_response_time(inc: &IncidentRecord, action: Action) {
    let (family, at) = match action {
        Action::Acknowledge => (
            &firebreak_telemetry::metrics().time_to_acknowledge,
            inc.acknowledged_at,
        ),
        Action::Resolve => (
            &firebreak_telemetry::metrics().time_to_resolve,
            inc.resolved_at,
        ),
        _ => return,
    };
    if let Some(at) = at {
        let seconds = at.saturating_duration_since(inc.opened_at).as_secs_f64();
        firebreak_telemetry::Metrics::observe_incident(
            family,
            inc.severity,
            &inc.category,
            seconds,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use firebreak_bus::EmbeddedBus;
    use firebreak_storage::sqlite::{SqliteBusLog, SqliteTriageStore};

    use super::*;

    async fn triage(dir: &std::path::Path) -> Triage {
        let store = SqliteTriageStore::open(&dir.join("triage.db"), false)
            .await
            .unwrap();
        let log = SqliteBusLog::open(&dir.join("bus.db"), false)
            .await
            .unwrap();
        let bus = Arc::new(EmbeddedBus::new(Arc::new(log)));
        Triage::new(
            Arc::new(store),
            bus,
            firebreak_domain::Taxonomy::default(),
            Arc::new(firebreak_domain::SystemClock),
        )
    }

    fn alert() -> v1::AlertReceived {
        v1::AlertReceived {
            alert_id: firebreak_domain::AlertId::new().to_string(),
            title: "flooded".into(),
            source: "test".into(),
            dedup_key: "flood".into(),
            ..Default::default()
        }
    }

    /// Events from runbooks were stored as sent: a 32,769-byte note, NUL in actors, a run's
    /// megabyte of action JSON, all read back by every timeline read.
    #[tokio::test]
    async fn text_arriving_in_events_is_clipped_and_never_holds_nul() {
        let dir = tempfile::tempdir().unwrap();
        let t = triage(dir.path()).await;
        let id = t.ingest(alert()).await.unwrap().incident_id;
        let hostile_actor = format!("runbook:{}\0", "a".repeat(1000));
        t.apply_command(
            "ev-1",
            v1::IncidentCommand {
                incident_id: id.clone(),
                actor: hostile_actor.clone(),
                command: Some(Command::Note(format!("{}\0", "n".repeat(32_769)))),
                via: String::new(),
                if_vacant: false,
            },
        )
        .await
        .unwrap();
        t.record_run(
            "ev-2",
            v1::RunChanged {
                run_id: "r".into(),
                runbook: "flood".into(),
                incident_id: id.clone(),
                kind: v1::RunChange::Action as i32,
                live: true,
                action: json!({ "action": "http", "result": "x".repeat(1_000_000) }).to_string(),
                detail: "d".repeat(100_000),
            },
        )
        .await
        .unwrap();
        let timeline = t.store.timeline(&id).await.unwrap();
        let note = timeline.iter().find(|e| e.kind == "note").unwrap();
        let text = note.data["text"].as_str().unwrap();
        assert!(text.len() <= MAX_TEXT, "a note of {} bytes", text.len());
        assert!(!text.contains('\0') && !note.actor.contains('\0'));
        assert!(
            note.actor.len() <= MAX_ACTOR,
            "an actor of {} bytes",
            note.actor.len()
        );
        let run = timeline
            .iter()
            .find(|e| e.kind == "runbook_action")
            .unwrap();
        let size = run.data.to_string().len();
        assert!(
            size <= MAX_DOCUMENT + MAX_TEXT + 4096,
            "a run entry of {size} bytes"
        );
        assert_eq!(run.data["action"]["action"], "http");
    }

    /// The review draft was rendered from the whole timeline, however large.
    #[tokio::test]
    async fn a_flooded_timeline_leaves_a_bounded_review() {
        let dir = tempfile::tempdir().unwrap();
        let t = triage(dir.path()).await;
        let id = t.ingest(alert()).await.unwrap().incident_id;
        for n in 0..100 {
            t.apply_command(
                &format!("ev-{n}"),
                v1::IncidentCommand {
                    incident_id: id.clone(),
                    actor: "runbook:flood".into(),
                    command: Some(Command::Note("n".repeat(MAX_TEXT))),
                    via: String::new(),
                    if_vacant: false,
                },
            )
            .await
            .unwrap();
        }
        t.transition(&id, Action::Resolve, "user:alice", "done")
            .await
            .unwrap();
        let review = crate::convert::review_markdown_bounded(&t.review(&id).await.unwrap());
        assert!(
            review.len() <= MAX_PAGE_BYTES,
            "a review of {} bytes",
            review.len()
        );
        let stored = t.store.incident(&id).await.unwrap().unwrap().review;
        assert!(stored.len() <= MAX_PAGE_BYTES);
    }
}
