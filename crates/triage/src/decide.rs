//! Triage's decisions as one pure function: what a batch of inputs does to the incidents a
//! snapshot holds.
//!
//! [`decide`] takes a [`TriageSnapshot`] (what the store held when the batch's transaction
//! read it), the inputs, and a [`Context`] (the rules, the time, a source of ids), and returns
//! a [`Decision`]: the typed [`TriageChangeset`] the store applies in one transaction, the
//! changes to announce on the `incidents` stream, and each input's answer. No IO, no async,
//! no clock: every path is unit-testable from a snapshot. The shell around it
//! (`logic.rs`) reads the snapshot, calls this, turns announcements into events, applies.
//!
//! Where things are decided, for a newcomer:
//! - the **dedup key** comes with the alert (intake derives the default: see
//!   `firebreak_domain::Signal`); here an alert joins the active incident with its key, or
//!   opens one;
//! - **grouping** (`grouping.rs`): an alert whose key has no active incident joins its
//!   group's incident (the first grouping rule that applies, inside the rule's window), or
//!   opens one that carries the group key;
//! - the **category, severity, urgency and priority** come from the taxonomy
//!   (`Taxonomy::classify`), applied in [`Work::ingest`]; a later alert only ever raises the
//!   severity;
//! - the **life cycle** is `IncidentState::apply` (domain), applied in [`Work::transition`]
//!   (acknowledge, mitigate, resolve, close, reopen), [`Work::merge`] and, for a repeat alert
//!   inside its integration's reopen window, [`Work::reopen_for_repeat`]; the windows are
//!   the [`Lifecycle`] policy;
//! - a person's **reclassification** (severity, priority, category, with a reason) is
//!   [`Work::reclassify`];
//! - the **roles** (who is commander, who responds) are `roles.rs`, applied in
//!   `Work::change_role` for people's calls and runbooks' `incident.assign` alike.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use firebreak_domain::{
    Action, IncidentState, Micros, Priority, Severity, Signal, SignalInput, Taxonomy,
    review_markdown,
};
use firebreak_proto::v1;
use firebreak_storage::{
    AlertLink, AlertMove, AlertRepeat, AlertSeen, ChangeRecord, IncidentRecord, IncidentUpdate,
    NewIncident, NewTimelineEntry, SnapshotRequest, TimelineRecord, TriageChangeset,
    TriageSnapshot,
};
use serde_json::json;

use crate::Error;
use crate::limits::{MAX_ACTOR, MAX_DOCUMENT, MAX_NAME, MAX_PAGE_BYTES, MAX_TEXT, clip, clip_json};

mod grouping;
mod review;
mod roles;
mod status;

pub(crate) use grouping::group_keys;
pub(crate) use review::{FollowUpChange, review_input, with_follow_ups};
pub(crate) use roles::{RoleChange, person_name, role_name};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The most bytes a person's note holds.
pub(crate) const MAX_NOTE: usize = 16 * 1024;

/// Something triage is asked to do.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// An alert intake accepted, with the signal parsed from it once (by [`Input::alert`])
    /// and the trace context of its event.
    Alert {
        alert: v1::AlertReceived,
        signal: Box<Signal>,
        traceparent: Option<String>,
    },
    /// A person, a runbook or an integration moves an incident along its life cycle.
    /// `timeline` is the incident's timeline as it stands (resolve and close render the
    /// review from it); empty for acknowledge.
    Transition {
        incident_id: String,
        action: Action,
        actor: String,
        text: String,
        timeline: Vec<TimelineRecord>,
    },
    /// A person merges one incident into another: its alerts move, and it closes with a
    /// link to `into`.
    Merge {
        incident_id: String,
        into: String,
        actor: String,
        reason: String,
    },
    /// A person sets the severity, priority or category by hand, with a reason.
    Reclassify {
        incident_id: String,
        actor: String,
        change: Reclassification,
    },
    /// A person's note.
    Note {
        incident_id: String,
        actor: String,
        text: String,
    },
    /// A person gives or takes an incident role.
    Role {
        incident_id: String,
        actor: String,
        change: RoleChange,
        role: String,
        person: String,
    },
    /// A person adds or changes a follow-up of the incident's review.
    FollowUp {
        incident_id: String,
        actor: String,
        change: FollowUpChange,
    },
    /// A person sets the summary of the incident's review.
    Summary {
        incident_id: String,
        actor: String,
        text: String,
    },
    /// A person's status update to the incident's stakeholders.
    StatusUpdate {
        incident_id: String,
        actor: String,
        status: firebreak_domain::UpdateStatus,
        message: String,
    },
    /// A runbook's progress or a delivery's outcome for the timeline, once per event.
    Record {
        event_id: String,
        incident_id: String,
        kind: String,
        actor: String,
        data: serde_json::Value,
    },
    /// A runbook's command, once per event (resolve is a [`Input::Transition`]).
    Command {
        event_id: String,
        incident_id: String,
        actor: String,
        command: RunbookCommand,
    },
    /// The sender cleared an alert, once per event.
    AlertResolved {
        event_id: String,
        alert_id: String,
        integration: String,
        auto_resolve: bool,
    },
    /// A change event: stored once, and referred to from the timelines of `concerned`.
    Change {
        change: ChangeRecord,
        concerned: Vec<String>,
    },
    /// The sender triggered a firing alert again, once per event: counted on its
    /// attachment (an alert attached nowhere, silenced, is not counted).
    AlertRepeated {
        event_id: String,
        alert_id: String,
        at: Micros,
    },
}

/// A reclassification by hand: what to set (`None`: leave as it is) and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reclassification {
    pub(crate) severity: Option<u32>,
    pub(crate) priority: Option<u32>,
    pub(crate) category: Option<String>,
    pub(crate) reason: String,
}

/// How long resolved incidents can come back: by hand (`reopen_window`), and by a repeat
/// alert (its integration's window, else `repeat_window`; zero: a repeat opens a new
/// incident, as it always did).
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub reopen_window: Duration,
    pub repeat_window: Duration,
    pub repeat_windows: HashMap<String, Duration>,
    /// Incidents of this severity or worse (1 = SEV1 only, 2 = SEV1–2) need a commander:
    /// while active with nobody in the role they carry the `needs_commander` flag. 0: none do.
    pub commander_through: u32,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            reopen_window: Duration::from_secs(3600),
            repeat_window: Duration::ZERO,
            repeat_windows: HashMap::new(),
            commander_through: 2,
        }
    }
}

impl Lifecycle {
    /// Whether `incident` needs a commander now: its severity is one the policy requires a
    /// commander for, it is active (open, acknowledged or mitigated), and nobody holds the
    /// `commander` role. Computed, never stored, so a severity lowered by hand or a handoff
    /// takes the flag away at once.
    pub fn needs_commander(&self, incident: &IncidentRecord) -> bool {
        (1..=self.commander_through).contains(&incident.severity)
            && incident.state.is_active()
            && !incident.roles.iter().any(|r| r.role == roles::COMMANDER)
    }

    /// The window in which a repeat alert through `integration` reopens.
    pub fn repeat_window_of(&self, integration: &str) -> Duration {
        self.repeat_windows
            .get(integration)
            .copied()
            .unwrap_or(self.repeat_window)
    }

    /// The longest repeat window of any integration: how far back a batch of alerts looks
    /// for resolved incidents (zero: it does not look).
    pub fn longest_repeat_window(&self) -> Duration {
        self.repeat_windows
            .values()
            .copied()
            .chain([self.repeat_window])
            .max()
            .unwrap_or_default()
    }
}

/// Whether `at` is at most `window` after `since`.
fn within(since: Micros, window: Duration, at: Micros) -> bool {
    at.saturating_duration_since(since) <= window
}

/// What a runbook can ask of an incident through an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RunbookCommand {
    Note(String),
    SetSeverity(u32),
    /// Raise the severity one level (SEV1 stays SEV1) and page for it.
    Escalate(String),
    SetCategory(String),
    /// Give `person` the role; with `if_vacant`, only when nobody holds it (a schedule's
    /// on-call person made commander never takes the role from someone a person chose).
    Assign {
        role: String,
        person: String,
        if_vacant: bool,
    },
}

/// A change to an incident that the `incidents` stream announces (`incidents.<name>`): the
/// wire's enum, so producer and consumers are checked by the compiler alike.
pub(crate) use firebreak_proto::v1::IncidentChange as Change;

/// The change a life-cycle action makes.
fn change_of(action: Action) -> Change {
    match action {
        Action::Acknowledge => Change::Acknowledged,
        Action::Mitigate => Change::Mitigated,
        Action::Resolve => Change::Resolved,
        Action::Close => Change::Closed,
        Action::Reopen => Change::Reopened,
        Action::Merge => Change::Merged,
    }
}

/// A change to announce, with the incident as the change left it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Announcement {
    pub(crate) change: Change,
    pub(crate) incident: IncidentRecord,
    pub(crate) actor: String,
    /// The trace the announcement continues (an alert's event); `None`: the caller's.
    pub(crate) traceparent: Option<String>,
}

/// What became of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ingested {
    pub(crate) incident_id: String,
    /// It joined an incident rather than opening one.
    pub(crate) deduplicated: bool,
    /// It was ingested before this batch: nothing was decided for it.
    pub(crate) before: bool,
    /// The grouping rule that joined it to its group's incident (then `deduplicated` too).
    pub(crate) grouped_by: Option<String>,
}

/// What the rules need besides the snapshot.
pub(crate) struct Context<'a> {
    pub(crate) taxonomy: &'a Taxonomy,
    pub(crate) lifecycle: &'a Lifecycle,
    /// The grouping rules.
    pub(crate) grouping: &'a firebreak_domain::grouping::Grouping,
    /// When the decisions are made, by the service's clock.
    pub(crate) now: Micros,
    /// Makes the id of a new incident.
    pub(crate) new_id: &'a mut dyn FnMut() -> String,
}

/// A batch's decisions.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// What to write (its events are left to the shell: see `announcements`).
    pub(crate) changeset: TriageChangeset,
    /// What to announce on `incidents`, in order.
    pub(crate) announcements: Vec<Announcement>,
    /// One per [`Input::Alert`], in input order.
    pub(crate) ingested: Vec<Ingested>,
    /// The incidents transitions left, in input order.
    pub(crate) transitioned: Vec<IncidentRecord>,
    /// The incidents role changes left (changed or not: a repeated assignment changes
    /// nothing), in input order.
    pub(crate) assigned: Vec<IncidentRecord>,
    /// The incidents status updates left, in input order.
    pub(crate) updated: Vec<IncidentRecord>,
    /// Merges, in input order: the incident merged away, the one merged into, and how many
    /// alerts moved.
    pub(crate) merged: Vec<(IncidentRecord, IncidentRecord, u32)>,
    /// Incidents whose last alert cleared through an auto-resolving integration: the shell
    /// resolves them next (their review needs the timeline as committed).
    pub(crate) auto_resolve: Vec<(String, String)>,
    /// The follow-ups follow-up changes left (changed or not), in input order.
    pub(crate) follow_ups: Vec<firebreak_storage::FollowUpRecord>,
}

/// What deciding on `inputs` needs to read: the snapshot to take before [`decide`].
pub(crate) fn request_for(inputs: &[Input]) -> SnapshotRequest {
    let mut r = SnapshotRequest::default();
    for input in inputs {
        match input {
            Input::Alert { alert, signal, .. } => {
                r.alert_ids.push(alert.alert_id.clone());
                r.dedup_keys.push(signal.dedup_key.clone());
            }
            Input::Transition { incident_id, .. }
            | Input::Note { incident_id, .. }
            | Input::Reclassify { incident_id, .. }
            | Input::Role { incident_id, .. }
            | Input::Summary { incident_id, .. }
            | Input::StatusUpdate { incident_id, .. } => {
                r.incident_ids.push(incident_id.clone());
            }
            Input::FollowUp { incident_id, .. } => {
                r.incident_ids.push(incident_id.clone());
                r.follow_ups = true;
            }
            Input::Merge {
                incident_id, into, ..
            } => {
                r.incident_ids.push(incident_id.clone());
                r.incident_ids.push(into.clone());
                r.count_unresolved = true;
            }
            Input::Record {
                event_id,
                incident_id,
                ..
            }
            | Input::Command {
                event_id,
                incident_id,
                ..
            } => {
                r.incident_ids.push(incident_id.clone());
                r.event_ids.push(event_id.clone());
            }
            Input::AlertResolved {
                event_id, alert_id, ..
            } => {
                r.alert_ids.push(alert_id.clone());
                r.incidents_of_alerts = true;
                r.count_unresolved = true;
                r.event_ids.push(event_id.clone());
            }
            Input::Change { change, .. } => r.event_ids.push(change.id.clone()),
            Input::AlertRepeated {
                event_id, alert_id, ..
            } => {
                r.alert_ids.push(alert_id.clone());
                r.event_ids.push(event_id.clone());
            }
        }
    }
    r
}

/// Decides what `inputs` do, in order, to the incidents in `snapshot`. The first input
/// that cannot be taken fails the whole batch (the caller then takes them one at a time).
pub(crate) fn decide(
    snapshot: &TriageSnapshot,
    inputs: &[Input],
    ctx: &mut Context<'_>,
) -> Result<Decision> {
    let mut work = Work::new(snapshot);
    for input in inputs {
        work.take(input, ctx)?;
    }
    Ok(work.finish())
}

/// The batch's working state: the incidents as the inputs so far left them.
struct Work<'s> {
    snap: &'s TriageSnapshot,
    /// Incidents touched or read so far, as they stand now, by id.
    incidents: HashMap<String, IncidentRecord>,
    /// Follow-ups of incidents touched so far, as they stand now, by incident id.
    follow_ups: HashMap<String, Vec<firebreak_storage::FollowUpRecord>>,
    /// Their state as stored, for those the snapshot held.
    stored_state: HashMap<String, IncidentState>,
    /// Ids of the incidents this batch opened, in order.
    opened: Vec<String>,
    /// Ids of stored incidents this batch changed, in order.
    changed: Vec<String>,
    /// The active incident of each dedup key the batch touched (`None`: none now).
    active: HashMap<String, Option<String>>,
    /// The incident of each group this batch looked up or opened (`None`: none).
    groups: HashMap<String, Option<String>>,
    /// The `grouped` entry of each incident this batch grouped alerts into: its index in the
    /// changeset's entries.
    group_entries: HashMap<String, usize>,
    /// Alerts attached by this batch.
    linked: HashMap<String, AlertLink>,
    /// Alerts cleared by this batch.
    cleared: HashSet<String>,
    /// Unresolved alerts per incident, as this batch left them.
    unresolved: HashMap<String, i64>,
    /// Events handled by this batch.
    handled: HashSet<String>,
    /// Plain attachments announced once per incident at the batch's end: id → the trace of
    /// the last alert, in first-attach order.
    attached: Vec<String>,
    attach_traces: HashMap<String, Option<String>>,
    /// The `alert_attached` entry of each incident this batch attached alerts to: its
    /// index in the changeset's entries.
    attach_entries: HashMap<String, usize>,
    decision: Decision,
}

impl<'s> Work<'s> {
    fn new(snap: &'s TriageSnapshot) -> Self {
        Self {
            snap,
            incidents: HashMap::new(),
            follow_ups: HashMap::new(),
            stored_state: HashMap::new(),
            opened: Vec::new(),
            changed: Vec::new(),
            active: HashMap::new(),
            groups: HashMap::new(),
            group_entries: HashMap::new(),
            linked: HashMap::new(),
            cleared: HashSet::new(),
            unresolved: HashMap::new(),
            handled: HashSet::new(),
            attached: Vec::new(),
            attach_traces: HashMap::new(),
            attach_entries: HashMap::new(),
            decision: Decision::default(),
        }
    }

    fn take(&mut self, input: &Input, ctx: &mut Context<'_>) -> Result<()> {
        match input {
            Input::Alert {
                alert,
                signal,
                traceparent,
            } => self.ingest(alert, signal, traceparent.as_deref(), ctx),
            Input::Transition {
                incident_id,
                action,
                actor,
                text,
                timeline,
            } => self.transition(incident_id, *action, actor, text, timeline, ctx),
            Input::Merge {
                incident_id,
                into,
                actor,
                reason,
            } => self.merge(incident_id, into, actor, reason, ctx.now),
            Input::Reclassify {
                incident_id,
                actor,
                change,
            } => {
                let inc = self.reclassify(incident_id, actor, change, ctx)?;
                self.decision.transitioned.push(inc);
                Ok(())
            }
            Input::Note {
                incident_id,
                actor,
                text,
            } => self.note(incident_id, actor, text, ctx.now),
            Input::Role {
                incident_id,
                actor,
                change,
                role,
                person,
            } => {
                let inc = self.change_role(incident_id, *change, role, person, actor, ctx.now)?;
                self.decision.assigned.push(inc);
                Ok(())
            }
            Input::FollowUp {
                incident_id,
                actor,
                change,
            } => {
                let f = self.follow_up(incident_id, actor, change, ctx.now)?;
                self.decision.follow_ups.push(f);
                Ok(())
            }
            Input::Summary {
                incident_id,
                actor,
                text,
            } => self.summary(incident_id, actor, text, ctx.now),
            Input::StatusUpdate {
                incident_id,
                actor,
                status,
                message,
            } => {
                let inc = self.status_update(incident_id, *status, message, actor, ctx.now)?;
                self.decision.updated.push(inc);
                Ok(())
            }
            Input::Record {
                event_id,
                incident_id,
                kind,
                actor,
                data,
            } => {
                if self.first_time(event_id) && self.incident(incident_id).is_some() {
                    self.entry(incident_id, kind, actor, data.clone(), ctx.now);
                }
                Ok(())
            }
            Input::Command {
                event_id,
                incident_id,
                actor,
                command,
            } => self.command(event_id, incident_id, actor, command, ctx),
            Input::AlertResolved {
                event_id,
                alert_id,
                integration,
                auto_resolve,
            } => {
                self.alert_resolved(event_id, alert_id, integration, *auto_resolve, ctx.now);
                Ok(())
            }
            Input::Change { change, concerned } => {
                if !self.first_time(&change.id) {
                    return Ok(());
                }
                self.decision.changeset.changes.push(change.clone());
                let actor = format!("integration:{}", change.integration);
                let data = json!({
                    "change_id": change.id, "summary": change.summary, "source": change.source,
                    "integration": change.integration, "details_bytes": change.details.len(),
                });
                for id in concerned {
                    self.entry(id, "change", &actor, data.clone(), ctx.now);
                }
                Ok(())
            }
            Input::AlertRepeated {
                event_id,
                alert_id,
                at,
            } => {
                let attached =
                    self.linked.contains_key(alert_id) || self.snap.links.contains_key(alert_id);
                if self.first_time(event_id) && attached {
                    self.decision.changeset.repeats.push(AlertRepeat {
                        alert_id: alert_id.clone(),
                        at: *at,
                    });
                }
                Ok(())
            }
        }
    }

    /// Opens an incident for `alert` or attaches it to the active one with its dedup key.
    fn ingest(
        &mut self,
        alert: &v1::AlertReceived,
        signal: &Signal,
        traceparent: Option<&str>,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if let Some(link) = self
            .linked
            .get(&alert.alert_id)
            .or_else(|| self.snap.links.get(&alert.alert_id))
        {
            self.decision.ingested.push(Ingested {
                incident_id: link.incident_id.clone(),
                deduplicated: !link.opened,
                before: true,
                grouped_by: Some(link.grouped_by.clone()).filter(|g| !g.is_empty()),
            });
            return Ok(());
        }
        let mut signal = Signal::clone(signal);
        let mut class_note = None;
        let class = match ctx.taxonomy.classify(&signal) {
            Ok(c) => c,
            // Intake checks categories too; one can only be unknown here if the taxonomy
            // changed in between. The alert is kept and categorized by the rules instead.
            Err(e) => {
                class_note = Some(e.to_string());
                signal.category = None;
                ctx.taxonomy.classify(&signal)?
            }
        };
        let now = ctx.now;
        let traceparent = traceparent.map(str::to_owned);
        if self.active_of(&signal.dedup_key).is_none() {
            let window = ctx.lifecycle.repeat_window_of(&alert.integration);
            self.reopen_for_repeat(&signal.dedup_key, &alert.alert_id, window, now);
        }
        // The dedup key wins; without an active incident of its own, the alert's group.
        let mut group = None;
        let mut joined = self.active_of(&signal.dedup_key);
        let mut grouped_by = None;
        if joined.is_none() {
            group = ctx.grouping.group_of(&alert.integration, &signal.labels);
            if let Some(g) = &group {
                joined = self.group_incident(g, now);
                grouped_by = joined.as_ref().map(|_| g.rule.clone());
            }
        }
        if let Some(id) = joined {
            let mut inc = self.incidents[&id].clone();
            inc.alert_count += 1;
            inc.updated_at = now;
            if let (Some(g), true) = (&group, grouped_by.is_some()) {
                self.grouped_entry(&id, alert, &signal, g, now);
            }
            self.attach_entry(&id, alert, &signal, inc.alert_count, now);
            let current = Severity::new(inc.severity)?;
            let rises = class.severity.is_worse_than(current);
            if rises {
                let urgency = inc.urgency;
                let data = json!({
                    "from": inc.severity, "to": class.severity.level(),
                    "reason": format!("a new alert is {}", class.severity_reason),
                });
                self.entry(&id, "severity_changed", "triage", data, now);
                inc.severity = u32::from(class.severity.level());
                inc.priority =
                    u32::from(Priority::from_impact_urgency(class.severity, urgency).level());
            }
            self.link(&alert.alert_id, &id, false);
            if let (Some(rule), Some(l)) = (&grouped_by, self.decision.changeset.links.last_mut()) {
                l.grouped_by = rule.clone();
                self.linked.insert(l.alert_id.clone(), l.clone());
            }
            self.seen(alert, &signal, now);
            self.put(inc.clone());
            if rises {
                self.announce(Change::SeverityChanged, inc, "triage", traceparent);
            } else {
                // Announced once per incident and batch, with its latest state.
                if !self.attach_traces.contains_key(&id) {
                    self.attached.push(id.clone());
                }
                self.attach_traces.insert(id.clone(), traceparent);
            }
            self.decision.ingested.push(Ingested {
                incident_id: id,
                deduplicated: true,
                before: false,
                grouped_by,
            });
            return Ok(());
        }
        let mut inc = IncidentRecord::from(NewIncident {
            id: (ctx.new_id)(),
            title: signal.title.clone(),
            description: signal.description.clone(),
            category: class.category.clone(),
            severity: u32::from(class.severity.level()),
            priority: u32::from(class.priority.level()),
            urgency: class.urgency,
            dedup_key: signal.dedup_key.clone(),
            labels: signal.labels.clone(),
            source: signal.source.clone(),
            integration: alert.integration.clone(),
            opened_at: now,
        });
        let id = inc.id.clone();
        let mut opened = with_origin(
            json!({
                "alert_id": alert.alert_id, "title": inc.title, "source": inc.source,
                "dedup_key": inc.dedup_key,
            }),
            alert,
        );
        if let Some(g) = &group {
            // It opens its group: related alerts join it for the rule's window.
            inc.group_key = g.key.clone();
            opened["group"] = grouping::describe(g);
            self.groups.insert(g.key.clone(), Some(id.clone()));
        }
        self.entry(&id, "opened", "triage", opened, now);
        let categorized = json!({
            "category": class.category, "reason": class.category_reason, "note": class_note,
        });
        self.entry(&id, "categorized", "triage", categorized, now);
        let prioritized = json!({
            "severity": class.severity.level(), "severity_name": class.severity.name(),
            "severity_reason": class.severity_reason,
            "urgency": inc.urgency, "priority": class.priority.level(),
        });
        self.entry(&id, "prioritized", "triage", prioritized, now);
        self.opened.push(id.clone());
        self.active.insert(inc.dedup_key.clone(), Some(id.clone()));
        self.incidents.insert(id.clone(), inc.clone());
        self.unresolved.insert(id.clone(), 0);
        self.link(&alert.alert_id, &id, true);
        self.seen(alert, &signal, now);
        self.announce(Change::Opened, inc, "triage", traceparent);
        self.decision.ingested.push(Ingested {
            incident_id: id,
            deduplicated: false,
            before: false,
            grouped_by: None,
        });
        Ok(())
    }

    fn transition(
        &mut self,
        id: &str,
        action: Action,
        actor: &str,
        text: &str,
        timeline: &[TimelineRecord],
        ctx: &Context<'_>,
    ) -> Result<()> {
        let (lifecycle, now) = (ctx.lifecycle, ctx.now);
        firebreak_domain::IncidentId::parse(id)?;
        if action == Action::Close && text.trim().is_empty() {
            return Err(firebreak_domain::Error::Invalid {
                field: "root_cause",
                reason: "closing an incident requires a root cause".into(),
            }
            .into());
        }
        if action == Action::Reopen && text.trim().is_empty() {
            return Err(firebreak_domain::Error::Invalid {
                field: "reason",
                reason: "reopening an incident requires a reason".into(),
            }
            .into());
        }
        let mut inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let from = inc.state;
        let to = from.apply(action)?;
        if action == Action::Reopen {
            let resolved_at = inc.resolved_at.unwrap_or(inc.updated_at);
            if !within(resolved_at, lifecycle.reopen_window, now) {
                return Err(firebreak_domain::Error::Invalid {
                    field: "id",
                    reason: format!(
                        "{id} was resolved more than {}s ago: incidents reopen within {}s of their resolve (reopen.window)",
                        lifecycle.reopen_window.as_secs(),
                        lifecycle.reopen_window.as_secs()
                    ),
                }
                .into());
            }
        }
        inc.state = to;
        inc.updated_at = now;
        let (kind, data) = match action {
            Action::Acknowledge => {
                inc.acknowledged_at = Some(now);
                // `text` says where a person answered a page from (`slack`, `sms`, `link`).
                match text.trim() {
                    "" => ("acknowledged", json!({})),
                    via => ("acknowledged", json!({ "via": via })),
                }
            }
            Action::Mitigate => {
                inc.mitigated_at = Some(now);
                ("mitigated", json!({ "summary": text.trim() }))
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
            Action::Reopen => {
                let resolved_at = inc.resolved_at.take();
                (
                    "reopened",
                    json!({ "reason": text.trim(), "resolved_at": resolved_at.map(Micros::unix_micros) }),
                )
            }
            // Merging goes through `merge`, which moves the alerts.
            Action::Merge => {
                return Err(firebreak_domain::Error::Invalid {
                    field: "action",
                    reason: "a merge names the incident merged into".into(),
                }
                .into());
            }
        };
        if matches!(action, Action::Resolve | Action::Close) {
            // The draft is rendered from the timeline as it stands, this entry included.
            let mut timeline = timeline.to_vec();
            timeline.push(TimelineRecord {
                seq: 0,
                incident_id: inc.id.clone(),
                kind: kind.into(),
                at: now,
                actor: actor.into(),
                data: data.clone(),
            });
            inc.review = render_review(&inc, &timeline);
        }
        self.entry(id, kind, actor, data, now);
        if action == Action::Resolve {
            self.entry(id, "review_drafted", "triage", json!({}), now);
        }
        if from.is_active() && !to.is_active() {
            // Its dedup key is free: the next alert with it opens a new incident.
            self.active.insert(inc.dedup_key.clone(), None);
        }
        if !from.is_active() && to.is_active() {
            // Reopened: it holds its key again (the store refuses it when another does).
            self.active
                .insert(inc.dedup_key.clone(), Some(inc.id.clone()));
        }
        self.put(inc.clone());
        self.announce(change_of(action), inc.clone(), actor, None);
        self.decision.transitioned.push(inc);
        Ok(())
    }

    /// Reopens the incident with `dedup_key` that was resolved within `window` (and is still
    /// resolved), for a repeat alert: the alert then joins it as any other would.
    fn reopen_for_repeat(
        &mut self,
        dedup_key: &str,
        alert_id: &str,
        window: Duration,
        now: Micros,
    ) {
        if window.is_zero() {
            return;
        }
        let Some(stored) = self.snap.resolved.get(dedup_key) else {
            return;
        };
        let Some(mut inc) = self.incident(&stored.id.clone()) else {
            return;
        };
        let Some(resolved_at) = inc.resolved_at else {
            return;
        };
        if inc.state != IncidentState::Resolved || !within(resolved_at, window, now) {
            return;
        }
        inc.state = IncidentState::Open;
        inc.resolved_at = None;
        inc.updated_at = now;
        let data = json!({
            "reason": "a repeat alert inside the reopen window", "alert_id": alert_id,
            "resolved_at": resolved_at.unix_micros(),
        });
        self.entry(&inc.id, "reopened", "triage", data, now);
        self.active
            .insert(dedup_key.to_owned(), Some(inc.id.clone()));
        self.put(inc.clone());
        self.announce(Change::Reopened, inc, "triage", None);
    }

    /// Merges `id` into `into`: every alert of `id` moves to `into`, which counts them, and
    /// `id` closes with a link to it. Both go on their timelines and are announced.
    fn merge(
        &mut self,
        id: &str,
        into: &str,
        actor: &str,
        reason: &str,
        now: Micros,
    ) -> Result<()> {
        firebreak_domain::IncidentId::parse(id)?;
        firebreak_domain::IncidentId::parse(into).map_err(|e| match e {
            firebreak_domain::Error::Invalid { reason, .. } => firebreak_domain::Error::Invalid {
                field: "into",
                reason,
            },
            other => other,
        })?;
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_TEXT {
            return Err(firebreak_domain::Error::Invalid {
                field: "reason",
                reason: format!("a merge needs a reason of 1 to {MAX_TEXT} bytes"),
            }
            .into());
        }
        if id == into {
            return Err(firebreak_domain::Error::Invalid {
                field: "into",
                reason: "an incident cannot be merged into itself".into(),
            }
            .into());
        }
        let mut source = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let mut target = self
            .incident(into)
            .ok_or_else(|| Error::NotFound(into.to_owned()))?;
        if !target.state.is_active() {
            return Err(firebreak_domain::Error::Invalid {
                field: "into",
                reason: format!(
                    "{into} is {}: alerts merge only into an open, acknowledged or mitigated incident",
                    target.state
                ),
            }
            .into());
        }
        let from = source.state;
        source.state = from.apply(Action::Merge)?;
        source.closed_at = Some(now);
        source.merged_into = into.to_owned();
        source.root_cause = format!("merged into {into}: {reason}");
        source.updated_at = now;
        let moved = source.alert_count;
        target.alert_count = target.alert_count.saturating_add(moved);
        target.updated_at = now;
        let open = |w: &Self, i: &str| {
            w.unresolved
                .get(i)
                .or_else(|| w.snap.unresolved.get(i))
                .copied()
                .unwrap_or(0)
        };
        let (source_open, target_open) = (open(self, id), open(self, into));
        self.unresolved.insert(id.to_owned(), 0);
        self.unresolved
            .insert(into.to_owned(), target_open + source_open);
        for link in self.linked.values_mut().filter(|l| l.incident_id == id) {
            link.incident_id = into.to_owned();
        }
        self.decision.changeset.moves.push(AlertMove {
            from: id.to_owned(),
            to: into.to_owned(),
        });
        if from.is_active() {
            self.active.insert(source.dedup_key.clone(), None);
        }
        let data = json!({ "into": into, "reason": reason, "alerts_moved": moved });
        self.entry(id, "merged_into", actor, data, now);
        let data = json!({ "from": id, "reason": reason, "alerts_moved": moved });
        self.entry(into, "merged", actor, data, now);
        self.put(source.clone());
        self.put(target.clone());
        self.announce(Change::Merged, source.clone(), actor, None);
        self.announce(Change::Merged, target.clone(), actor, None);
        self.decision.merged.push((source, target, moved));
        Ok(())
    }

    /// Sets severity, priority and category by hand. A reason is required; a severity set
    /// without a priority recomputes the priority (impact × urgency). Setting what is
    /// already set changes nothing.
    fn reclassify(
        &mut self,
        id: &str,
        actor: &str,
        change: &Reclassification,
        ctx: &Context<'_>,
    ) -> Result<IncidentRecord> {
        firebreak_domain::IncidentId::parse(id)?;
        let reason = change.reason.trim();
        if reason.is_empty() || reason.len() > MAX_TEXT {
            return Err(firebreak_domain::Error::Invalid {
                field: "reason",
                reason: format!("a change by hand needs a reason of 1 to {MAX_TEXT} bytes"),
            }
            .into());
        }
        if change.severity.is_none() && change.priority.is_none() && change.category.is_none() {
            return Err(firebreak_domain::Error::Invalid {
                field: "severity",
                reason: "name a severity, a priority or a category to set".into(),
            }
            .into());
        }
        let severity = change.severity.map(Severity::new).transpose()?;
        let priority = change.priority.map(Priority::new).transpose()?;
        if let Some(category) = &change.category
            && !ctx.taxonomy.has(category)
        {
            return Err(firebreak_domain::Error::Invalid {
                field: "category",
                reason: format!(
                    "{:?} is not a category of the taxonomy",
                    clip(category, MAX_NAME)
                ),
            }
            .into());
        }
        let mut inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if inc.state == IncidentState::Closed {
            return Err(firebreak_domain::Error::Transition {
                action: "reclassify",
                state: inc.state.as_str(),
            }
            .into());
        }
        let now = ctx.now;
        let mut changes = Vec::new();
        if let Some(s) = severity
            && u32::from(s.level()) != inc.severity
        {
            let data = json!({ "from": inc.severity, "to": s.level(), "reason": reason });
            self.entry(id, "severity_changed", actor, data, now);
            inc.severity = u32::from(s.level());
            changes.push(Change::SeverityChanged);
            if priority.is_none() {
                let p = u32::from(Priority::from_impact_urgency(s, inc.urgency).level());
                if p != inc.priority {
                    let data = json!({ "from": inc.priority, "to": p, "reason": reason });
                    self.entry(id, "priority_changed", actor, data, now);
                    inc.priority = p;
                }
            }
        }
        if let Some(p) = priority
            && u32::from(p.level()) != inc.priority
        {
            let data = json!({ "from": inc.priority, "to": p.level(), "reason": reason });
            self.entry(id, "priority_changed", actor, data, now);
            inc.priority = u32::from(p.level());
            changes.push(Change::PriorityChanged);
        }
        if let Some(category) = &change.category
            && *category != inc.category
        {
            let data = json!({ "from": inc.category, "to": category, "reason": reason });
            self.entry(id, "category_changed", actor, data, now);
            inc.category = category.clone();
            changes.push(Change::CategoryChanged);
        }
        if changes.is_empty() {
            return Ok(inc);
        }
        inc.updated_at = now;
        self.put(inc.clone());
        for c in changes {
            self.announce(c, inc.clone(), actor, None);
        }
        Ok(inc)
    }

    fn note(&mut self, id: &str, actor: &str, text: &str, now: Micros) -> Result<()> {
        firebreak_domain::IncidentId::parse(id)?;
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_NOTE {
            return Err(firebreak_domain::Error::Invalid {
                field: "text",
                reason: format!("a note must hold 1 to {MAX_NOTE} bytes"),
            }
            .into());
        }
        if self.incident(id).is_none() {
            return Err(Error::NotFound(id.to_owned()));
        }
        self.entry(id, "note", actor, json!({ "text": text }), now);
        Ok(())
    }

    fn command(
        &mut self,
        event_id: &str,
        id: &str,
        actor: &str,
        command: &RunbookCommand,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        // A runbook's text is clipped, not refused: the command cannot be answered.
        let actor = clip(actor, MAX_ACTOR);
        if !self.first_time(event_id) {
            return Ok(());
        }
        let Some(mut inc) = self.incident(id) else {
            return Ok(());
        };
        let now = ctx.now;
        let active = inc.state.is_active();
        match command {
            RunbookCommand::Note(text) => {
                self.entry(
                    id,
                    "note",
                    &actor,
                    json!({ "text": clip(text, MAX_TEXT) }),
                    now,
                );
            }
            // The rule a person's call goes through: a name the rule refuses fails the
            // command (as a severity out of range does); a closed incident's roles stay as
            // they are, as a late command leaves an inactive incident's severity alone.
            RunbookCommand::Assign {
                role,
                person,
                if_vacant,
            } => {
                let held = |r: &str| inc.roles.iter().any(|h| h.role == r);
                if *if_vacant && roles::role_name(role).is_ok_and(|r| held(&r)) {
                    return Ok(());
                }
                let assigned = self.change_role(id, RoleChange::Assign, role, person, &actor, now);
                match assigned {
                    Ok(_) => {}
                    Err(Error::Domain(firebreak_domain::Error::Transition { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            RunbookCommand::SetSeverity(level) => {
                let severity = Severity::new(*level)?;
                if inc.severity == *level || !active {
                    return Ok(());
                }
                let urgency = inc.urgency;
                let data =
                    json!({ "from": inc.severity, "to": level, "reason": "set by a runbook" });
                self.entry(id, "severity_changed", &actor, data, now);
                inc.severity = *level;
                inc.priority = u32::from(Priority::from_impact_urgency(severity, urgency).level());
                inc.updated_at = now;
                self.put(inc.clone());
                self.announce(Change::SeverityChanged, inc, &actor, None);
            }
            // Escalating raises the severity one level (SEV1 stays SEV1) and is announced as
            // its own change, so channels page for it even at SEV1.
            RunbookCommand::Escalate(reason) => {
                if !active {
                    return Ok(());
                }
                let reason = clip(reason, MAX_TEXT);
                let level = inc.severity.saturating_sub(1).max(1);
                if level != inc.severity {
                    let urgency = inc.urgency;
                    let data = json!({
                        "from": inc.severity, "to": level, "reason": format!("escalated: {reason}"),
                    });
                    self.entry(id, "severity_changed", &actor, data, now);
                    inc.severity = level;
                    inc.priority = u32::from(
                        Priority::from_impact_urgency(Severity::new(level)?, urgency).level(),
                    );
                }
                self.entry(id, "escalated", &actor, json!({ "reason": reason }), now);
                inc.updated_at = now;
                self.put(inc.clone());
                self.announce(Change::Escalated, inc, &actor, None);
            }
            RunbookCommand::SetCategory(category) => {
                if !ctx.taxonomy.has(category) {
                    // A runbook asked for a category the taxonomy lacks: say so where the
                    // responders look rather than drop it.
                    let text = format!(
                        "a runbook asked to set the unknown category {:?}; the category stays {}",
                        clip(category, MAX_NAME),
                        inc.category
                    );
                    self.entry(id, "note", &actor, json!({ "text": text }), now);
                    return Ok(());
                }
                if inc.category == *category || !active {
                    return Ok(());
                }
                let data = json!({ "from": inc.category, "to": category });
                self.entry(id, "category_changed", &actor, data, now);
                inc.category = category.clone();
                inc.updated_at = now;
                self.put(inc.clone());
                self.announce(Change::CategoryChanged, inc, &actor, None);
            }
        }
        Ok(())
    }

    /// Marks an alert cleared; when it was its incident's last and the integration
    /// auto-resolves, the incident is resolved next. Safe to repeat: a redelivered event
    /// finds the mark made and adds no entry.
    fn alert_resolved(
        &mut self,
        event_id: &str,
        alert_id: &str,
        integration: &str,
        auto_resolve: bool,
        now: Micros,
    ) {
        let fresh = self.first_time(event_id);
        let Some(link) = self
            .linked
            .get(alert_id)
            .or_else(|| self.snap.links.get(alert_id))
            .cloned()
        else {
            return;
        };
        let id = link.incident_id;
        let mut open = self
            .unresolved
            .get(&id)
            .or_else(|| self.snap.unresolved.get(&id))
            .copied()
            .unwrap_or(0);
        if !link.resolved && self.cleared.insert(alert_id.to_owned()) {
            open = (open - 1).max(0);
            self.unresolved.insert(id.clone(), open);
            self.decision
                .changeset
                .resolved_alerts
                .push(alert_id.to_owned());
        }
        let actor = format!("integration:{integration}");
        if fresh {
            let data = json!({ "alert_id": alert_id, "unresolved_alerts": open });
            self.entry(&id, "alert_resolved", &actor, data, now);
        }
        if open == 0 && auto_resolve {
            self.decision.auto_resolve.push((id, actor));
        }
    }

    /// Puts an attached alert on its incident's timeline. The first alert a batch attaches
    /// to an incident gets an entry of its own, with its origin; the batch's later ones join
    /// that entry, which then lists the ids of all (`alert_ids`) and the latest count: a
    /// storm on one key costs one entry per batch, not one per alert, and each alert stays
    /// findable from the timeline.
    fn attach_entry(
        &mut self,
        id: &str,
        alert: &v1::AlertReceived,
        signal: &Signal,
        alert_count: u32,
        now: Micros,
    ) {
        if let Some(&at) = self.attach_entries.get(id) {
            let data = &mut self.decision.changeset.entries[at].data;
            if let Some(first) = data.get("alert_id").cloned() {
                *data = json!({
                    "alert_ids": [first],
                    "title": data["title"], "source": data["source"],
                });
            }
            if let Some(ids) = data["alert_ids"].as_array_mut() {
                ids.push(json!(alert.alert_id));
            }
            data["alert_count"] = json!(alert_count);
            return;
        }
        let data = with_origin(
            json!({
                "alert_id": alert.alert_id, "title": signal.title, "source": signal.source,
                "alert_count": alert_count,
            }),
            alert,
        );
        self.attach_entries
            .insert(id.to_owned(), self.decision.changeset.entries.len());
        self.entry(id, "alert_attached", "triage", data, now);
    }

    /// The incident as it stands now, if it exists.
    fn incident(&mut self, id: &str) -> Option<IncidentRecord> {
        if let Some(i) = self.incidents.get(id) {
            return Some(i.clone());
        }
        let stored = self
            .snap
            .incidents
            .get(id)
            .or_else(|| self.snap.active.values().find(|i| i.id == id))
            .or_else(|| self.snap.resolved.values().find(|i| i.id == id))
            .or_else(|| self.snap.grouped.values().find(|i| i.id == id))?
            .clone();
        self.stored_state.insert(stored.id.clone(), stored.state);
        self.incidents.insert(stored.id.clone(), stored.clone());
        Some(stored)
    }

    /// The id of the active incident with `dedup_key` now, if any.
    fn active_of(&mut self, dedup_key: &str) -> Option<String> {
        if let Some(now) = self.active.get(dedup_key) {
            return now.clone();
        }
        let stored = self.snap.active.get(dedup_key)?.id.clone();
        // Read through `incident`, which may hold a newer version (a transition in this batch).
        let inc = self.incident(&stored)?;
        let active = inc.state.is_active();
        let now = active.then_some(stored);
        self.active.insert(dedup_key.to_owned(), now.clone());
        now
    }

    /// Keeps `inc` as changed by this batch.
    fn put(&mut self, inc: IncidentRecord) {
        if !self.opened.contains(&inc.id) && !self.changed.contains(&inc.id) {
            self.stored_state.entry(inc.id.clone()).or_insert(inc.state);
            self.changed.push(inc.id.clone());
        }
        self.incidents.insert(inc.id.clone(), inc);
    }

    fn link(&mut self, alert_id: &str, incident_id: &str, opened: bool) {
        let link = AlertLink {
            alert_id: alert_id.to_owned(),
            incident_id: incident_id.to_owned(),
            opened,
            resolved: false,
            grouped_by: String::new(),
        };
        self.linked.insert(alert_id.to_owned(), link.clone());
        self.decision.changeset.links.push(link);
        let open = self
            .unresolved
            .get(incident_id)
            .or_else(|| self.snap.unresolved.get(incident_id))
            .copied()
            .unwrap_or(0);
        self.unresolved.insert(incident_id.to_owned(), open + 1);
    }

    /// Keeps what an alert attached now was, for its incident's list of alerts.
    fn seen(&mut self, alert: &v1::AlertReceived, signal: &Signal, now: Micros) {
        self.decision.changeset.seen.push(AlertSeen {
            alert_id: alert.alert_id.clone(),
            title: signal.title.clone(),
            labels: signal.labels.clone(),
            fired_at: alert
                .received_at
                .as_ref()
                .map_or(now, firebreak_proto::micros),
        });
    }

    /// Whether `event_id` is handled for the first time; marks it handled.
    fn first_time(&mut self, event_id: &str) -> bool {
        if self.snap.processed.contains(event_id) || !self.handled.insert(event_id.to_owned()) {
            return false;
        }
        self.decision.changeset.processed.push(event_id.to_owned());
        true
    }

    fn entry(
        &mut self,
        incident_id: &str,
        kind: &str,
        actor: &str,
        data: serde_json::Value,
        at: Micros,
    ) {
        self.decision.changeset.entries.push(NewTimelineEntry {
            incident_id: incident_id.to_owned(),
            kind: kind.to_owned(),
            at,
            actor: actor.to_owned(),
            data,
        });
    }

    fn announce(
        &mut self,
        change: Change,
        incident: IncidentRecord,
        actor: &str,
        traceparent: Option<String>,
    ) {
        self.decision.announcements.push(Announcement {
            change,
            incident,
            actor: actor.to_owned(),
            traceparent,
        });
    }

    fn finish(mut self) -> Decision {
        for id in std::mem::take(&mut self.attached) {
            let incident = self.incidents[&id].clone();
            let traceparent = self.attach_traces.remove(&id).flatten();
            self.announce(Change::AlertAttached, incident, "triage", traceparent);
        }
        let Self {
            mut incidents,
            stored_state,
            opened,
            changed,
            mut decision,
            ..
        } = self;
        for id in opened {
            if let Some(i) = incidents.remove(&id) {
                decision.changeset.inserts.push(i);
            }
        }
        for id in changed {
            if let Some(record) = incidents.remove(&id) {
                let state_changed = stored_state.get(&id) != Some(&record.state);
                decision.changeset.updates.push(IncidentUpdate {
                    record,
                    state_changed,
                });
            }
        }
        decision
    }
}

impl Input {
    /// A repeat of a firing alert as triage takes it (`event_id` its event's id).
    pub(crate) fn repeated(event_id: &str, r: &v1::AlertRepeated, now: Micros) -> Self {
        Self::AlertRepeated {
            event_id: event_id.to_owned(),
            alert_id: r.alert_id.clone(),
            at: r.at.as_ref().map_or(now, firebreak_proto::micros),
        }
    }

    /// For an alert: `Some` of when intake received it (`None` inside when the event does
    /// not say); `None` for any other input.
    pub(crate) fn received_at(&self) -> Option<Option<Micros>> {
        match self {
            Self::Alert { alert, .. } => {
                Some(alert.received_at.as_ref().map(firebreak_proto::micros))
            }
            _ => None,
        }
    }

    /// An alert as triage takes it: its signal is parsed here, once, so an alert that does not
    /// parse is refused before anything is read (and fails a batch it is part of).
    pub(crate) fn alert(alert: v1::AlertReceived, traceparent: Option<String>) -> Result<Self> {
        let signal = Box::new(signal_of(&alert)?);
        Ok(Self::Alert {
            alert,
            signal,
            traceparent,
        })
    }
}

/// The signal an alert event carries.
fn signal_of(alert: &v1::AlertReceived) -> Result<Signal> {
    Ok(Signal::parse(SignalInput {
        title: alert.title.clone(),
        description: alert.description.clone(),
        severity: firebreak_proto::level(alert.severity),
        category: alert.category.clone(),
        labels: alert.labels.clone().into_iter().collect(),
        source: alert.source.clone(),
        dedup_key: alert.dedup_key.clone(),
    })?)
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
            let sorted: BTreeMap<_, _> = alert.annotations.iter().collect();
            obj.insert("annotations".into(), clip_json(json!(sorted), MAX_DOCUMENT));
        }
        if alert.truncated_alerts > 0 {
            obj.insert("truncated_alerts".into(), json!(alert.truncated_alerts));
        }
    }
    data
}

/// The review draft of an incident, at most [`MAX_PAGE_BYTES`]: a flooded timeline must not
/// make the review unreadable (gRPC's 4 MiB message limit) or the incident row huge.
pub(crate) fn render_review(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> String {
    clip(&render_review_unbounded(inc, timeline), MAX_PAGE_BYTES)
}

fn render_review_unbounded(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> String {
    review_markdown(&review::review_input(inc, timeline))
}

/// The first page a provider took for a person, from the timeline's delivery entries.
fn first_page(timeline: &[TimelineRecord]) -> Option<firebreak_domain::FirstPage> {
    timeline
        .iter()
        .filter(|t| {
            t.kind == "notification"
                && t.data["kind"] == "escalation.page"
                && matches!(t.data["status"].as_str(), Some("sent" | "delivered"))
        })
        .min_by_key(|t| t.at)
        .map(|t| firebreak_domain::FirstPage {
            at: t.at.timestamp(),
            user: t.data["user"].as_str().unwrap_or_default().to_owned(),
            channel: t.data["channel"].as_str().unwrap_or_default().to_owned(),
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
mod model;
#[cfg(test)]
mod tests;
