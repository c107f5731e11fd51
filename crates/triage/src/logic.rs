//! Triage's rules applied in transactions: ingest, life-cycle changes, timeline entries.

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{
    Action, IncidentState, Priority, ReviewInput, Severity, Signal, SignalInput, TimelineItem,
    Urgency, review_markdown,
};
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_storage::{IncidentRecord, NewTimelineEntry, TimelineRecord, TriageTx};
use serde_json::json;

use crate::convert::{from_micros, incident_to_proto, now_micros};
use crate::limits::{
    MAX_ACTOR, MAX_CHANGE_DETAILS, MAX_CHANGE_SUMMARY, MAX_DOCUMENT, MAX_NAME, MAX_PAGE_BYTES,
    MAX_TEXT, clip, clip_json,
};
use crate::{Error, Triage};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The outcome of ingesting an alert.
pub(crate) struct Ingested {
    pub(crate) incident_id: String,
    pub(crate) deduplicated: bool,
}

impl Triage {
    /// Turns a stored alert into an incident or attaches it to the open one with its dedup key.
    /// Idempotent by alert id: a second call returns the first answer and changes nothing.
    pub(crate) async fn ingest(&self, alert: v1::AlertReceived) -> Result<Ingested> {
        // Two replicas racing on a new key: the database's unique index lets one insert win;
        // the loser retries and finds the winner's incident to attach to.
        for _ in 0..3 {
            match self.try_ingest(&alert).await {
                Err(Error::Storage(firebreak_storage::Error::Conflict(_))) => continue,
                other => return other,
            }
        }
        Err(Error::Storage(firebreak_storage::Error::Conflict(
            "dedup key kept changing hands".into(),
        )))
    }

    async fn try_ingest(&self, alert: &v1::AlertReceived) -> Result<Ingested> {
        let mut tx = self.store.begin().await?;
        let (ingested, written) = self
            .ingest_in(&mut *tx, alert, signal_of(alert), None)
            .await?;
        if written.is_empty() {
            // Ingested before: nothing was written.
            return Ok(ingested);
        }
        tx.commit().await?;
        self.after_commit(&[ingested.deduplicated], written);
        Ok(ingested)
    }

    /// Ingests a run of alerts in one transaction, as a consumer fetched them: the same
    /// decisions as one by one, a fraction of the commits. Any error rolls all back (the
    /// consumer then takes them one at a time).
    /// Each alert comes with the trace context of its event, which the events it causes
    /// continue.
    pub(crate) async fn ingest_batch(&self, alerts: &[(String, v1::AlertReceived)]) -> Result<()> {
        use firebreak_telemetry::trace;
        let mut tx = self.store.begin().await?;
        let mut written = Vec::new();
        let mut deduplicated = Vec::new();
        // Alerts joining an incident are announced once per incident and batch, with its
        // latest state, in the trace of the last of them; each alert still gets its own
        // timeline entry.
        let mut attached = std::collections::BTreeMap::new();
        let mut traces = std::collections::HashMap::new();
        // In dedup key order (stable: a key's alerts keep theirs), so that replicas ingesting
        // overlapping batches open and lock incidents in one order and cannot deadlock.
        // An alert whose signal does not parse sorts first; it fails the batch as it did.
        let mut sorted: Vec<(Result<Signal>, &(String, v1::AlertReceived))> =
            alerts.iter().map(|a| (signal_of(&a.1), a)).collect();
        let key = |s: &Result<Signal>| s.as_ref().map_or("", |s| s.dedup_key.as_str()).to_owned();
        sorted.sort_by_key(|(s, _)| key(s));
        // What the loop will ask, read in two round trips instead of two per alert.
        let ids: Vec<String> = alerts.iter().map(|(_, a)| a.alert_id.clone()).collect();
        let keys: Vec<String> = sorted.iter().map(|(s, _)| key(s)).collect();
        tx.prefetch(&ids, &keys).await?;
        for (signal, (traceparent, alert)) in sorted {
            let (ingested, entries) = trace::scope(
                Some(traceparent),
                self.ingest_in(&mut *tx, alert, signal, Some(&mut attached)),
            )
            .await?;
            if !entries.is_empty() {
                deduplicated.push(ingested.deduplicated);
                written.extend(entries);
            }
            traces.insert(ingested.incident_id, traceparent.as_str());
        }
        for incident in attached.values() {
            trace::scope(
                traces.get(&incident.id).copied(),
                stage_change(&mut *tx, incident, "alert_attached", "triage", &[]),
            )
            .await?;
        }
        tx.commit().await?;
        self.after_commit(&deduplicated, written);
        Ok(())
    }

    /// After ingest commits: wake the relay, tell watchers, count.
    fn after_commit(&self, deduplicated: &[bool], written: Vec<TimelineRecord>) {
        self.relay.wake();
        self.announce(written);
        let m = firebreak_telemetry::metrics();
        for d in deduplicated {
            if *d {
                m.alerts_deduplicated.inc();
            } else {
                m.incidents_opened.inc();
            }
        }
    }

    /// The decisions of ingesting one alert (`signal` is its parse), written in `tx` (not
    /// committed). Returns the timeline entries written; none when the alert was ingested
    /// before.
    async fn ingest_in(
        &self,
        tx: &mut dyn TriageTx,
        alert: &v1::AlertReceived,
        signal: Result<Signal>,
        attached: Option<&mut std::collections::BTreeMap<String, IncidentRecord>>,
    ) -> Result<(Ingested, Vec<TimelineRecord>)> {
        if let Some((incident_id, opened)) = tx.incident_of_alert(&alert.alert_id).await? {
            return Ok((
                Ingested {
                    incident_id,
                    deduplicated: !opened,
                },
                Vec::new(),
            ));
        }
        let mut signal = signal?;
        let mut class_note = None;
        let class = match self.taxonomy.classify(&signal) {
            Ok(c) => c,
            // Intake checks categories too; one can only be unknown here if the taxonomy
            // changed in between. The alert is kept and categorized by the rules instead.
            Err(e) => {
                class_note = Some(e.to_string());
                signal.category = None;
                self.taxonomy.classify(&signal)?
            }
        };
        let now = now_micros();
        let mut entries = Vec::new();
        let (incident, change, deduplicated) =
            match tx.active_incident_by_key(&signal.dedup_key).await? {
                Some(mut inc) => {
                    inc.alert_count += 1;
                    inc.updated_at = now;
                    entries.push(entry(&inc.id, "alert_attached", "triage", with_origin(json!({
                    "alert_id": alert.alert_id, "title": signal.title, "source": signal.source,
                    "alert_count": inc.alert_count,
                }), alert)));
                    let current = Severity::new(inc.severity)?;
                    let change = if class.severity.is_worse_than(current) {
                        let urgency: Urgency = inc.urgency.parse().unwrap_or_default();
                        entries.push(entry(
                            &inc.id,
                            "severity_changed",
                            "triage",
                            json!({
                                "from": inc.severity, "to": class.severity.level(),
                                "reason": format!("a new alert is {}", class.severity_reason),
                            }),
                        ));
                        inc.severity = u32::from(class.severity.level());
                        inc.priority = u32::from(
                            Priority::from_impact_urgency(class.severity, urgency).level(),
                        );
                        "severity_changed"
                    } else {
                        "alert_attached"
                    };
                    tx.update_incident(&inc).await?;
                    tx.link_alert(&alert.alert_id, &inc.id, false).await?;
                    (inc, change, true)
                }
                None => {
                    let inc = IncidentRecord {
                        id: firebreak_domain::IncidentId::new().to_string(),
                        title: signal.title.clone(),
                        description: signal.description.clone(),
                        category: class.category.clone(),
                        severity: u32::from(class.severity.level()),
                        priority: u32::from(class.priority.level()),
                        urgency: format!("{:?}", class.urgency).to_lowercase(),
                        state: IncidentState::Open.as_str().into(),
                        dedup_key: signal.dedup_key.clone(),
                        alert_count: 1,
                        labels: signal.labels.clone(),
                        source: signal.source.clone(),
                        opened_at: now,
                        acknowledged_at: None,
                        resolved_at: None,
                        closed_at: None,
                        resolution_summary: String::new(),
                        root_cause: String::new(),
                        review: String::new(),
                        updated_at: now,
                    };
                    tx.insert_incident(&inc).await?;
                    tx.link_alert(&alert.alert_id, &inc.id, true).await?;
                    entries.push(entry(
                    &inc.id,
                    "opened",
                    "triage",
                    with_origin(
                        json!({
                            "alert_id": alert.alert_id, "title": inc.title, "source": inc.source,
                            "dedup_key": inc.dedup_key,
                        }),
                        alert,
                    ),
                ));
                    entries.push(entry(
                        &inc.id,
                        "categorized",
                        "triage",
                        json!({
                            "category": class.category, "reason": class.category_reason,
                            "note": class_note,
                        }),
                    ));
                    entries.push(entry(
                    &inc.id,
                    "prioritized",
                    "triage",
                    json!({
                        "severity": class.severity.level(), "severity_name": class.severity.name(),
                        "severity_reason": class.severity_reason,
                        "urgency": inc.urgency, "priority": class.priority.level(),
                    }),
                ));
                    (inc, "opened", false)
                }
            };
        let incident_id = incident.id.clone();
        // In a batch, a plain attach is announced at the batch's end (see ingest_batch).
        let change = match attached {
            Some(later) if change == "alert_attached" => {
                later.insert(incident.id.clone(), incident.clone());
                ""
            }
            _ => change,
        };
        let written = stage_change(tx, &incident, change, "triage", &entries).await?;
        Ok((
            Ingested {
                incident_id,
                deduplicated,
            },
            written,
        ))
    }

    /// Appends `entries`, enqueues the `incidents` event for `change`, commits, then tells
    /// watchers and wakes the relay.
    async fn commit_change(
        &self,
        mut tx: Box<dyn TriageTx>,
        incident: &IncidentRecord,
        change: &str,
        actor: &str,
        entries: Vec<NewTimelineEntry>,
    ) -> Result<()> {
        let written = stage_change(&mut *tx, incident, change, actor, &entries).await?;
        tx.commit().await?;
        self.relay.wake();
        self.announce(written);
        Ok(())
    }

    fn announce(&self, entries: Vec<TimelineRecord>) {
        for e in entries {
            // No watcher is fine.
            let _ = self.watch.send(e);
        }
    }

    /// Applies a life-cycle action requested by a person or a runbook.
    pub(crate) async fn transition(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        text: &str,
    ) -> Result<IncidentRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        if action == Action::Close && text.trim().is_empty() {
            return Err(firebreak_domain::Error::Invalid {
                field: "root_cause",
                reason: "closing an incident requires a root cause".into(),
            }
            .into());
        }
        let mut tx = self.store.begin().await?;
        let mut inc = tx
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let from: IncidentState = inc.state.parse()?;
        let to = from.apply(action)?;
        let now = now_micros();
        inc.state = to.as_str().into();
        inc.updated_at = now;
        let (kind, data) = match action {
            Action::Acknowledge => {
                inc.acknowledged_at = Some(now);
                ("acknowledged", json!({}))
            }
            Action::Resolve => {
                inc.resolved_at = Some(now);
                inc.resolution_summary = text.trim().to_owned();
                ("resolved", json!({ "summary": inc.resolution_summary }))
            }
            Action::Close => {
                inc.closed_at = Some(now);
                inc.root_cause = text.trim().to_owned();
                ("closed", json!({ "root_cause": inc.root_cause }))
            }
        };
        let mut entries = vec![entry(&inc.id, kind, actor, data)];
        if matches!(action, Action::Resolve | Action::Close) {
            // The draft is rendered from the timeline as it stands, this entry included.
            let mut timeline = self.store.timeline(&inc.id).await?;
            timeline.push(TimelineRecord {
                seq: 0,
                incident_id: inc.id.clone(),
                kind: kind.into(),
                at: now,
                actor: actor.into(),
                data: entries[0].data.clone(),
            });
            inc.review = render_review(&inc, &timeline);
            if action == Action::Resolve {
                entries.push(entry(&inc.id, "review_drafted", "triage", json!({})));
            }
        }
        tx.update_incident(&inc).await?;
        self.commit_change(tx, &inc, kind, actor, entries).await?;
        Ok(inc)
    }

    /// Adds a note to the timeline.
    pub(crate) async fn add_note(
        &self,
        id: &str,
        actor: &str,
        text: &str,
    ) -> Result<TimelineRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        let text = text.trim();
        if text.is_empty() || text.len() > 16 * 1024 {
            return Err(firebreak_domain::Error::Invalid {
                field: "text",
                reason: "a note must hold 1 to 16384 bytes".into(),
            }
            .into());
        }
        let mut tx = self.store.begin().await?;
        let inc = tx
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let e = tx
            .append(&entry(&inc.id, "note", actor, json!({ "text": text })))
            .await?;
        tx.commit().await?;
        self.announce(vec![e.clone()]);
        Ok(e)
    }

    /// The review draft: while the incident is resolved it is re-rendered, so runbook
    /// actions that finish after the resolve still appear; after close it is frozen.
    pub(crate) async fn review(&self, id: &str) -> Result<String> {
        firebreak_domain::IncidentId::parse(id)?;
        let inc = self
            .store
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        match inc.state.as_str() {
            "resolved" => Ok(render_review(&inc, &self.store.timeline(id).await?)),
            "closed" => Ok(inc.review),
            state => Err(firebreak_domain::Error::Transition {
                action: "review",
                state: IncidentState::from_str_lossy(state).as_str(),
            }
            .into()),
        }
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
        let kind = format!("runbook_{}", clip(&run.change, MAX_NAME));
        self.record(
            event_id,
            &run.incident_id,
            &kind,
            &clip(&format!("runbook:{runbook}"), MAX_ACTOR),
            data,
        )
        .await
    }

    /// Puts a delivery's outcome on the incident's timeline (once per event).
    pub(crate) async fn record_delivery(
        &self,
        event_id: &str,
        d: v1::DeliveryChanged,
    ) -> Result<()> {
        let data = json!({
            "delivery_id": clip(&d.delivery_id, MAX_NAME), "channel": clip(&d.channel, MAX_NAME),
            "status": clip(&d.status, MAX_NAME), "attempts": d.attempts,
            "error": clip(&d.error, MAX_TEXT),
        });
        self.record(
            event_id,
            &d.incident_id,
            "notification",
            "notification",
            data,
        )
        .await
    }

    async fn record(
        &self,
        event_id: &str,
        incident_id: &str,
        kind: &str,
        actor: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if !tx.mark_processed(event_id).await? {
            return Ok(());
        }
        if tx.incident(incident_id).await?.is_none() {
            tracing::warn!(incident_id, kind, "event for an unknown incident ignored");
            tx.commit().await?;
            return Ok(());
        }
        let e = tx.append(&entry(incident_id, kind, actor, data)).await?;
        tx.commit().await?;
        self.announce(vec![e]);
        Ok(())
    }

    /// Applies a runbook's command to an incident, once per event.
    pub(crate) async fn apply_command(
        &self,
        event_id: &str,
        cmd: v1::IncidentCommand,
    ) -> Result<()> {
        // A runbook's text is clipped, not refused: the command cannot be answered.
        let actor = clip(&cmd.actor, MAX_ACTOR);
        let id = cmd.incident_id.clone();
        // The processed mark and the change share one transaction, so a redelivered command
        // changes nothing.
        match cmd.command {
            Some(Command::Note(text)) => {
                let mut tx = self.store.begin().await?;
                if !tx.mark_processed(event_id).await? || tx.incident(&id).await?.is_none() {
                    tx.commit().await?;
                    return Ok(());
                }
                let e = tx
                    .append(&entry(
                        &id,
                        "note",
                        &actor,
                        json!({ "text": clip(&text, MAX_TEXT) }),
                    ))
                    .await?;
                tx.commit().await?;
                self.announce(vec![e]);
                Ok(())
            }
            Some(Command::SetSeverity(level)) => {
                self.set_severity(event_id, &id, &actor, level).await
            }
            // Escalating raises the severity one level (SEV1 stays SEV1) and is announced as
            // its own change, so channels page for it even at SEV1.
            Some(Command::Escalate(reason)) => {
                let reason = clip(&reason, MAX_TEXT);
                let mut tx = self.store.begin().await?;
                if !tx.mark_processed(event_id).await? {
                    return Ok(());
                }
                let Some(mut inc) = tx.incident(&id).await? else {
                    tx.commit().await?;
                    return Ok(());
                };
                if !IncidentState::from_str_lossy(&inc.state).is_active() {
                    tx.commit().await?;
                    return Ok(());
                }
                let level = inc.severity.saturating_sub(1).max(1);
                let mut entries = Vec::new();
                if level != inc.severity {
                    let urgency: Urgency = inc.urgency.parse().unwrap_or_default();
                    entries.push(entry(
                        &id,
                        "severity_changed",
                        &actor,
                        json!({ "from": inc.severity, "to": level, "reason": format!("escalated: {reason}") }),
                    ));
                    inc.severity = level;
                    inc.priority = u32::from(
                        Priority::from_impact_urgency(Severity::new(level)?, urgency).level(),
                    );
                }
                entries.push(entry(&id, "escalated", &actor, json!({ "reason": reason })));
                inc.updated_at = now_micros();
                tx.update_incident(&inc).await?;
                self.commit_change(tx, &inc, "escalated", &actor, entries)
                    .await
            }
            Some(Command::SetCategory(category)) => {
                let mut tx = self.store.begin().await?;
                if !tx.mark_processed(event_id).await? {
                    return Ok(());
                }
                let Some(mut inc) = tx.incident(&id).await? else {
                    tx.commit().await?;
                    return Ok(());
                };
                if !self.taxonomy.has(&category) {
                    // A runbook asked for a category the taxonomy lacks: say so where the
                    // responders look rather than drop it.
                    let text = format!(
                        "a runbook asked to set the unknown category {:?}; the category stays {}",
                        clip(&category, MAX_NAME),
                        inc.category
                    );
                    let e = tx
                        .append(&entry(&id, "note", &actor, json!({ "text": text })))
                        .await?;
                    tx.commit().await?;
                    self.announce(vec![e]);
                    return Ok(());
                }
                if inc.category == category
                    || !IncidentState::from_str_lossy(&inc.state).is_active()
                {
                    tx.commit().await?;
                    return Ok(());
                }
                let entries = vec![entry(
                    &id,
                    "category_changed",
                    &actor,
                    json!({ "from": inc.category, "to": category }),
                )];
                inc.category = category;
                inc.updated_at = now_micros();
                tx.update_incident(&inc).await?;
                self.commit_change(tx, &inc, "category_changed", &actor, entries)
                    .await
            }
            Some(Command::Assign(a)) => {
                let mut tx = self.store.begin().await?;
                if !tx.mark_processed(event_id).await? || tx.incident(&id).await?.is_none() {
                    tx.commit().await?;
                    return Ok(());
                }
                let e = tx
                    .append(&entry(
                        &id,
                        "role_assigned",
                        &actor,
                        json!({ "role": clip(&a.role, MAX_NAME), "person": clip(&a.person, MAX_ACTOR) }),
                    ))
                    .await?;
                tx.commit().await?;
                self.announce(vec![e]);
                Ok(())
            }
            // The state machine makes this one idempotent: a redelivered resolve finds the
            // incident resolved and is refused, which is the outcome wanted.
            Some(Command::Resolve(summary)) => {
                match self
                    .transition(&id, Action::Resolve, &actor, &clip(&summary, MAX_TEXT))
                    .await
                {
                    Ok(_) | Err(Error::NotFound(_)) => Ok(()),
                    Err(Error::Domain(firebreak_domain::Error::Transition { .. })) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        }
    }
}

impl Triage {
    /// A runbook sets an active incident's severity, once per event.
    async fn set_severity(&self, event_id: &str, id: &str, actor: &str, level: u32) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if !tx.mark_processed(event_id).await? {
            return Ok(());
        }
        let Some(mut inc) = tx.incident(id).await? else {
            tx.commit().await?;
            return Ok(());
        };
        let severity = Severity::new(level)?;
        if inc.severity == level || !IncidentState::from_str_lossy(&inc.state).is_active() {
            tx.commit().await?;
            return Ok(());
        }
        let urgency: Urgency = inc.urgency.parse().unwrap_or_default();
        let entries = vec![entry(
            id,
            "severity_changed",
            actor,
            json!({ "from": inc.severity, "to": level, "reason": "set by a runbook" }),
        )];
        inc.severity = level;
        inc.priority = u32::from(Priority::from_impact_urgency(severity, urgency).level());
        inc.updated_at = now_micros();
        tx.update_incident(&inc).await?;
        self.commit_change(tx, &inc, "severity_changed", actor, entries)
            .await
    }
}

/// The signal an alert event carries.
fn signal_of(alert: &v1::AlertReceived) -> Result<Signal> {
    Ok(Signal::parse(SignalInput {
        title: alert.title.clone(),
        description: alert.description.clone(),
        severity: alert.severity,
        category: alert.category.clone(),
        labels: alert.labels.clone().into_iter().collect(),
        source: alert.source.clone(),
        dedup_key: alert.dedup_key.clone(),
    })?)
}

/// Appends `entries` and enqueues the `incidents` event for `change` in `tx`.
async fn stage_change(
    tx: &mut dyn TriageTx,
    incident: &IncidentRecord,
    change: &str,
    actor: &str,
    entries: &[NewTimelineEntry],
) -> Result<Vec<TimelineRecord>> {
    let mut written = Vec::with_capacity(entries.len());
    for e in entries {
        written.push(tx.append(e).await?);
    }
    if !change.is_empty() {
        tx.enqueue(&outbox_event(
            streams::INCIDENTS,
            format!("incidents.{change}"),
            Payload::IncidentChanged(v1::IncidentChanged {
                change: change.to_owned(),
                incident: Some(incident_to_proto(incident)),
                actor: actor.to_owned(),
            }),
        ))
        .await?;
    }
    Ok(written)
}

/// Adds where an alert came from to its timeline data: the integration, the sender's
/// annotations, and how many alerts the sender left out of the call.
fn with_origin(mut data: serde_json::Value, alert: &v1::AlertReceived) -> serde_json::Value {
    if let Some(obj) = data.as_object_mut() {
        if !alert.integration.is_empty() {
            obj.insert("integration".into(), json!(alert.integration));
        }
        if !alert.alert_key.is_empty() {
            obj.insert("alert_key".into(), json!(alert.alert_key));
        }
        if !alert.annotations.is_empty() {
            let sorted: std::collections::BTreeMap<_, _> = alert.annotations.iter().collect();
            obj.insert("annotations".into(), clip_json(json!(sorted), MAX_DOCUMENT));
        }
        if alert.truncated_alerts > 0 {
            obj.insert("truncated_alerts".into(), json!(alert.truncated_alerts));
        }
    }
    data
}

impl Triage {
    /// The sender resolved an alert: mark it, and resolve its incident when it was the last
    /// unresolved one and the integration auto-resolves. Safe to repeat: a redelivered
    /// event finds the mark made and the incident resolved.
    pub(crate) async fn alert_resolved(&self, event_id: &str, r: v1::AlertResolved) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let fresh = tx.mark_processed(event_id).await?;
        let Some((incident_id, open)) = tx.resolve_alert(&r.alert_id).await? else {
            tx.commit().await?;
            return Ok(());
        };
        let mut announced = Vec::new();
        if fresh {
            announced.push(
                tx.append(&entry(
                    &incident_id,
                    "alert_resolved",
                    &format!("integration:{}", r.integration),
                    json!({ "alert_id": r.alert_id, "unresolved_alerts": open }),
                ))
                .await?,
            );
        }
        tx.commit().await?;
        self.announce(announced);
        if open == 0 && r.auto_resolve {
            let actor = format!("integration:{}", r.integration);
            match self
                .transition(
                    &incident_id,
                    Action::Resolve,
                    &actor,
                    "all its alerts resolved",
                )
                .await
            {
                Ok(_) | Err(Error::Domain(firebreak_domain::Error::Transition { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The sender acknowledged an alert: acknowledge its incident if it is still open.
    pub(crate) async fn alert_acknowledged(&self, a: v1::AlertAcknowledged) -> Result<()> {
        let Some((incident_id, _)) = self.incident_of_alert(&a.alert_id).await? else {
            return Ok(());
        };
        let actor = format!("integration:{}", a.integration);
        match self
            .transition(&incident_id, Action::Acknowledge, &actor, "")
            .await
        {
            Ok(_) | Err(Error::Domain(firebreak_domain::Error::Transition { .. })) => Ok(()),
            Err(e) => Err(e),
        }
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
        let change = firebreak_storage::ChangeRecord {
            id: event_id.to_owned(),
            integration: clip(&c.integration, MAX_NAME),
            summary: clip(&c.summary, MAX_CHANGE_SUMMARY),
            source: clip(&c.source, MAX_CHANGE_SUMMARY),
            at: c
                .at
                .as_ref()
                .map_or_else(now_micros, firebreak_proto::micros),
            details,
        };
        let mut tx = self.store.begin().await?;
        if !tx.mark_processed(event_id).await? {
            return Ok(());
        }
        tx.insert_change(&change).await?;
        let actor = format!("integration:{}", change.integration);
        let data = json!({
            "change_id": change.id, "summary": change.summary, "source": change.source,
            "integration": change.integration, "details_bytes": change.details.len(),
        });
        let mut written = Vec::with_capacity(concerned.len());
        for id in &concerned {
            written.push(
                tx.append(&entry(id, "change", &actor, data.clone()))
                    .await?,
            );
        }
        tx.commit().await?;
        self.announce(written);
        Ok(())
    }

    async fn incident_of_alert(&self, alert_id: &str) -> Result<Option<(String, bool)>> {
        let mut tx = self.store.begin().await?;
        let found = tx.incident_of_alert(alert_id).await?;
        tx.commit().await?;
        Ok(found)
    }
}

trait StateExt {
    fn from_str_lossy(s: &str) -> IncidentState;
}

impl StateExt for IncidentState {
    fn from_str_lossy(s: &str) -> IncidentState {
        s.parse().unwrap_or(IncidentState::Closed)
    }
}

fn entry(incident_id: &str, kind: &str, actor: &str, data: serde_json::Value) -> NewTimelineEntry {
    NewTimelineEntry {
        incident_id: incident_id.to_owned(),
        kind: kind.to_owned(),
        at: now_micros(),
        actor: actor.to_owned(),
        data,
    }
}

/// The review draft of an incident, at most [`MAX_PAGE_BYTES`]: a flooded timeline must not
/// make the review unreadable (gRPC's 4 MiB message limit) or the incident row huge.
fn render_review(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> String {
    clip(&render_review_unbounded(inc, timeline), MAX_PAGE_BYTES)
}

fn render_review_unbounded(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> String {
    let mut runs: Vec<firebreak_domain::ReviewRun> = Vec::new();
    for t in timeline.iter().filter(|t| t.kind.starts_with("runbook_")) {
        let name = t.data["runbook"].as_str().unwrap_or_default().to_owned();
        let idx = match runs.iter().position(|r| r.runbook == name) {
            Some(i) => i,
            None => {
                runs.push(firebreak_domain::ReviewRun {
                    runbook: name,
                    state: "running".into(),
                    live: t.data["live"].as_bool().unwrap_or(false),
                    actions: Vec::new(),
                });
                runs.len() - 1
            }
        };
        let run = &mut runs[idx];
        match t.kind.as_str() {
            "runbook_action" => {
                let a = &t.data["action"];
                run.actions.push(format!(
                    "`{}` {} → {}",
                    a["action"].as_str().unwrap_or("?"),
                    a["args"],
                    a["status"].as_str().unwrap_or("?")
                ));
            }
            "runbook_succeeded" => run.state = "succeeded".into(),
            "runbook_failed" => {
                run.state = format!("failed: {}", t.data["detail"].as_str().unwrap_or(""))
            }
            "runbook_waiting_approval" => run.state = "waiting for approval".into(),
            _ => {}
        }
    }
    review_markdown(&ReviewInput {
        incident_id: inc.id.clone(),
        title: inc.title.clone(),
        category: inc.category.clone(),
        severity: inc.severity as u8,
        priority: inc.priority as u8,
        alert_count: inc.alert_count,
        opened_at: from_micros(inc.opened_at),
        acknowledged_at: inc.acknowledged_at.map(from_micros),
        resolved_at: inc.resolved_at.map(from_micros),
        resolution_summary: inc.resolution_summary.clone(),
        root_cause: inc.root_cause.clone(),
        timeline: timeline
            .iter()
            .map(|t| TimelineItem {
                at: from_micros(t.at),
                kind: t.kind.clone(),
                actor: t.actor.clone(),
                detail: summarize(&t.data),
            })
            .collect(),
        runs,
    })
}

fn summarize(data: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(map) = data.as_object() {
        for (k, v) in map {
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) if s.is_empty() => {}
                serde_json::Value::String(s) => parts.push(format!("{k}: {s}")),
                other => parts.push(format!("{k}: {other}")),
            }
        }
    }
    parts.join("; ")
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
        Triage::new(Arc::new(store), bus, firebreak_domain::Taxonomy::default())
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
                change: "action".into(),
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
                },
            )
            .await
            .unwrap();
        }
        t.transition(&id, Action::Resolve, "user:alice", "done")
            .await
            .unwrap();
        let review = t.review(&id).await.unwrap();
        assert!(
            review.len() <= MAX_PAGE_BYTES,
            "a review of {} bytes",
            review.len()
        );
        let stored = t.store.incident(&id).await.unwrap().unwrap().review;
        assert!(stored.len() <= MAX_PAGE_BYTES);
    }
}
