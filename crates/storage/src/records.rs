//! Rows as the services see them: plain data, every time a [`Micros`] (microseconds since the
//! epoch, as the stores keep it).

use std::collections::{BTreeMap, HashMap, HashSet};

use firebreak_domain::{
    DeliveryState, IncidentState, Micros, RunPhase, RunState, StepStatus, Urgency,
};

/// An event to publish after the transaction that wrote it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The event id; consumers dedupe on it.
    pub id: String,
    /// The stream (alerts, incidents, runbooks, notifications).
    pub stream: String,
    /// The subject within the stream, e.g. `incidents.opened`.
    pub subject: String,
    /// The encoded protobuf event.
    pub payload: Vec<u8>,
}

/// An outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub seq: i64,
    pub event: OutboxEvent,
}

/// A message in the embedded bus's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    pub id: String,
    pub subject: String,
    pub payload: Vec<u8>,
}

/// A message a consumer gave up on.
#[derive(Debug, Clone)]
pub struct ParkedRecord {
    pub consumer: String,
    pub stream: String,
    pub seq: i64,
    pub message_id: String,
    pub subject: String,
    pub error: String,
    pub parked_at: Micros,
}

/// A stored alert (intake).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub id: String,
    pub received_at: Micros,
    pub source: String,
    pub title: String,
    pub description: String,
    /// 0 when the signal stated none.
    pub severity: u32,
    pub category: String,
    pub labels: BTreeMap<String, String>,
    pub dedup_key: String,
    /// Annotations (Alertmanager) or details (PagerDuty) the sender attached.
    pub annotations: BTreeMap<String, String>,
    /// The integration it came through; empty for unauthenticated gRPC.
    pub integration: String,
    /// The sender's key for this alert (fingerprint, PagerDuty dedup key); empty if none.
    pub alert_key: String,
    /// The silence that silenced it (stored, announced to nobody); empty when none did.
    pub silenced_by: String,
}

/// A trigger a silence kept from opening anything (intake), with what it would have been:
/// what reports count as silenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilencedRecord {
    pub alert_id: String,
    /// The silence that matched it.
    pub silence_id: String,
    pub received_at: Micros,
    pub integration: String,
    /// Its `service` label, else its source ([`firebreak_domain::report::service_of`]).
    pub service: String,
    /// The category and severity level the taxonomy gives it.
    pub category: String,
    pub severity: u32,
}

/// An integration created at run time (those in the configuration are not stored). Its key
/// is not stored, only its hash; its signing secret only sealed (encrypted) by intake.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationRecord {
    pub name: String,
    pub kind: String,
    /// SHA-256 of its key, in lowercase hex ([`firebreak_domain::access::integration_key_hash`]):
    /// what a presented key is looked up by.
    pub key_hash: String,
    /// The first characters of its key, so listings can tell keys apart.
    pub key_hint: String,
    /// The rest of its settings, as JSON (never the key or the secret).
    pub settings: serde_json::Value,
    /// Its webhook signing secret as intake sealed it (encrypted, naming its key), if any.
    pub signing_secret: Option<String>,
    pub created_at: Micros,
}

/// What an incident is opened with (triage); the rest of its record follows from being new.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    /// Its `Severity`'s level, 1 to 5.
    pub severity: u32,
    /// Its `Priority`'s level, 1 to 5.
    pub priority: u32,
    pub urgency: Urgency,
    pub dedup_key: String,
    pub labels: BTreeMap<String, String>,
    pub source: String,
    /// The integration its first alert came through (empty: unauthenticated gRPC).
    pub integration: String,
    pub opened_at: Micros,
}

/// An incident as opened: `Open`, with its first alert, updated when opened, nothing
/// acknowledged, resolved or closed, and no resolution, root cause or review yet.
impl From<NewIncident> for IncidentRecord {
    fn from(n: NewIncident) -> Self {
        Self {
            id: n.id,
            title: n.title,
            description: n.description,
            category: n.category,
            severity: n.severity,
            priority: n.priority,
            urgency: n.urgency,
            state: IncidentState::Open,
            dedup_key: n.dedup_key,
            alert_count: 1,
            labels: n.labels,
            source: n.source,
            integration: n.integration,
            opened_at: n.opened_at,
            acknowledged_at: None,
            mitigated_at: None,
            resolved_at: None,
            closed_at: None,
            merged_into: String::new(),
            resolution_summary: String::new(),
            root_cause: String::new(),
            review: String::new(),
            updated_at: n.opened_at,
            roles: Vec::new(),
            group_key: String::new(),
            last_status_update: None,
        }
    }
}

/// A person holding an incident role (triage decides who may; the store keeps the list as
/// it is given, one JSON column).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleHolder {
    /// The role's name: `commander`, `responder`, `scribe`…
    pub role: String,
    /// The user's name.
    pub person: String,
    pub assigned_at: Micros,
    /// The actor who assigned it: `user:NAME`, `runbook:NAME`.
    pub assigned_by: String,
}

/// A stored incident (triage).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub severity: u32,
    pub priority: u32,
    pub urgency: Urgency,
    pub state: IncidentState,
    pub dedup_key: String,
    pub alert_count: u32,
    pub labels: BTreeMap<String, String>,
    pub source: String,
    /// The integration its first alert came through (empty: unauthenticated gRPC); set
    /// when it opens, never changed.
    pub integration: String,
    pub opened_at: Micros,
    pub acknowledged_at: Option<Micros>,
    /// When the impact was contained (the `mitigated` state); kept after a resolve.
    pub mitigated_at: Option<Micros>,
    /// When it was resolved; cleared when it reopens.
    pub resolved_at: Option<Micros>,
    pub closed_at: Option<Micros>,
    /// The incident its alerts were merged into (it is then closed); empty when not merged.
    pub merged_into: String,
    pub resolution_summary: String,
    pub root_cause: String,
    /// The post-incident review draft (Markdown), written on resolve.
    pub review: String,
    pub updated_at: Micros,
    /// Who holds which incident role, in the order they were assigned.
    pub roles: Vec<RoleHolder>,
    /// The group a grouping rule put it in when it opened (empty: none); set when it opens,
    /// never changed. Triage finds the active incident of a group by it.
    pub group_key: String,
    /// The last status update to stakeholders (one JSON column); `None` before the first.
    pub last_status_update: Option<firebreak_domain::StatusUpdate>,
}

impl IncidentRecord {
    /// About the bytes the incident takes on the wire (its review, never sent with it,
    /// left out): what bounds a page of incidents.
    pub fn wire_size(&self) -> usize {
        [
            &self.id,
            &self.title,
            &self.description,
            &self.category,
            self.state.as_str(),
            &self.dedup_key,
            &self.source,
            &self.resolution_summary,
            &self.root_cause,
            &self.merged_into,
            &self.group_key,
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
            + self
                .roles
                .iter()
                .map(|r| r.role.len() + r.person.len() + r.assigned_by.len() + 24)
                .sum::<usize>()
            + self
                .last_status_update
                .as_ref()
                .map_or(0, |u| u.message.len() + u.by.len() + 24)
            + 64
    }
}

/// Where a page of incidents (newest first) ended: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentCursor {
    pub opened_at: Micros,
    pub id: String,
}

/// A change event (a deploy, a configuration change), stored once; the timelines of the
/// incidents it concerns refer to it by id.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// The id of the event that carried it.
    pub id: String,
    pub integration: String,
    pub summary: String,
    pub source: String,
    pub at: Micros,
    /// The sender's details, as JSON text.
    pub details: String,
}

/// A timeline entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimelineEntry {
    pub incident_id: String,
    pub kind: String,
    /// When it happened, by the service's clock.
    pub at: Micros,
    pub actor: String,
    pub data: serde_json::Value,
}

impl NewTimelineEntry {
    /// The entry as stored under `seq`.
    pub(crate) fn recorded(&self, seq: i64) -> TimelineRecord {
        TimelineRecord {
            seq,
            incident_id: self.incident_id.clone(),
            kind: self.kind.clone(),
            at: self.at,
            actor: self.actor.clone(),
            data: self.data.clone(),
        }
    }
}

/// A stored timeline entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRecord {
    pub seq: i64,
    pub incident_id: String,
    pub kind: String,
    /// When it happened, by the service's clock.
    pub at: Micros,
    pub actor: String,
    pub data: serde_json::Value,
}

/// An alert's attachment to an incident (triage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertLink {
    pub alert_id: String,
    pub incident_id: String,
    /// The alert opened the incident (rather than joined it).
    pub opened: bool,
    /// The sender said the alert cleared.
    pub resolved: bool,
    /// The grouping rule that joined it to the incident (empty: it opened the incident, or
    /// joined by its dedup key); set when attached.
    pub grouped_by: String,
}

/// A merge's move of every alert of one incident into another (triage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMove {
    pub from: String,
    pub to: String,
}

/// What an attached alert was when it was attached: kept on its attachment, so an
/// incident lists its alerts without asking intake (triage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSeen {
    pub alert_id: String,
    pub title: String,
    pub labels: BTreeMap<String, String>,
    /// When intake received it.
    pub fired_at: Micros,
}

/// The sender triggered an attached alert again while it fired (triage counts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRepeat {
    pub alert_id: String,
    /// When intake received the repeat.
    pub at: Micros,
}

/// An incident's alert as listed (triage's `incident_alerts` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentAlertRecord {
    pub alert_id: String,
    pub incident_id: String,
    pub opened: bool,
    pub resolved: bool,
    pub title: String,
    pub labels: BTreeMap<String, String>,
    /// Its first trigger (for attachments from before this was kept: when it was attached).
    pub first_seen: Micros,
    /// Its latest trigger or repeat.
    pub last_seen: Micros,
    /// Triggers after the first while it fired.
    pub repeats: u32,
    pub attached_at: Micros,
    /// When the sender said it cleared (none for attachments cleared before this was kept).
    pub resolved_at: Option<Micros>,
}

/// Where a page of an incident's alerts ended: the last alert's attachment time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCursor {
    pub attached_at: Micros,
    pub alert_id: String,
}

impl IncidentAlertRecord {
    /// The cursor of a page ending with this alert.
    pub fn cursor(&self) -> AlertCursor {
        AlertCursor {
            attached_at: self.attached_at,
            alert_id: self.alert_id.clone(),
        }
    }
}

/// What triage's decisions read ([`crate::TriageTx::snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest {
    /// Alerts whose attachments are wanted.
    pub alert_ids: Vec<String>,
    /// Dedup keys whose active incident is wanted.
    pub dedup_keys: Vec<String>,
    /// Incidents wanted by id.
    pub incident_ids: Vec<String>,
    /// Also the incidents the alerts in `alert_ids` are attached to.
    pub incidents_of_alerts: bool,
    /// Also count the unresolved alerts of the incidents read (a cleared alert's decision
    /// needs them; nothing else does, so the reads of the other inputs stay one per kind).
    pub count_unresolved: bool,
    /// Events whose processed mark is wanted.
    pub event_ids: Vec<String>,
    /// Also, for each key in `dedup_keys`, the incident with it resolved last, when that was
    /// at or after this time (a repeat alert inside the reopen window reopens it).
    pub resolved_since: Option<Micros>,
    /// Group keys whose active incident opened last is wanted, when it opened at or after
    /// `grouped_since` (a related alert inside the group's window joins it). On Postgres each
    /// key is locked for the transaction (an advisory lock), so two replicas cannot both find
    /// no incident of a group and open two.
    pub group_keys: Vec<String>,
    pub grouped_since: Option<Micros>,
    /// Also read the follow-ups of the incidents read.
    pub follow_ups: bool,
}

/// The part of triage's store that a batch of decisions depends on, read in the transaction
/// that applies them. Incidents in it are locked on Postgres (`FOR UPDATE`) until that
/// transaction ends, so what the decisions rest on cannot change under them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriageSnapshot {
    /// Attached alerts among those asked for, by alert id (absent: not attached).
    pub links: HashMap<String, AlertLink>,
    /// The active incident of each dedup key asked for that has one.
    pub active: HashMap<String, IncidentRecord>,
    /// Incidents by id: those asked for (and those of the alerts, when asked) that exist.
    pub incidents: HashMap<String, IncidentRecord>,
    /// How many of its alerts have not cleared, for each incident in `incidents` (when the
    /// request asked for the counts).
    pub unresolved: HashMap<String, i64>,
    /// Events among those asked for that were handled before.
    pub processed: HashSet<String>,
    /// The incident resolved last of each dedup key asked for, when it was resolved at or
    /// after `resolved_since` and is still resolved (locked on Postgres like the active).
    pub resolved: HashMap<String, IncidentRecord>,
    /// The active incident opened last of each group key asked for, when it opened at or
    /// after `grouped_since`.
    pub grouped: HashMap<String, IncidentRecord>,
    /// The follow-ups of each incident in `incidents`, by number (when the request asked
    /// for them).
    pub follow_ups: HashMap<String, Vec<FollowUpRecord>>,
}

/// An incident as a changeset leaves it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentUpdate {
    pub record: IncidentRecord,
    /// Whether its state differs from the stored one (SQLite then leaves the state's
    /// indexes alone).
    pub state_changed: bool,
}

/// Everything a batch of triage's decisions writes, applied in one transaction by
/// [`crate::TriageTx::apply`]. A write that finds the store other than the snapshot said
/// (a processed mark, an attachment or an active dedup key taken meanwhile) fails the whole
/// changeset with [`crate::Error::Conflict`]; the caller decides again on a fresh snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriageChangeset {
    /// Events now handled.
    pub processed: Vec<String>,
    /// Incidents opened.
    pub inserts: Vec<IncidentRecord>,
    /// Incidents changed, each once, as they end up.
    pub updates: Vec<IncidentUpdate>,
    /// Alerts attached (unresolved).
    pub links: Vec<AlertLink>,
    /// Attached alerts that cleared.
    pub resolved_alerts: Vec<String>,
    /// Merges: every alert attached to `from` moves to `to`.
    pub moves: Vec<AlertMove>,
    /// What the alerts attached here (in `links`) looked like; one per link at most.
    pub seen: Vec<AlertSeen>,
    /// Attached alerts triggered again while firing, one per repeat.
    pub repeats: Vec<AlertRepeat>,
    /// Change events stored.
    pub changes: Vec<ChangeRecord>,
    /// Timeline entries, in order; numbered when written.
    pub entries: Vec<NewTimelineEntry>,
    /// Events to publish, in order.
    pub events: Vec<OutboxEvent>,
    /// Follow-ups added (`insert`) or changed, as they end up.
    pub follow_ups: Vec<FollowUpWrite>,
}

impl TriageChangeset {
    /// Whether applying it would write nothing.
    pub fn is_empty(&self) -> bool {
        self.processed.is_empty()
            && self.inserts.is_empty()
            && self.updates.is_empty()
            && self.links.is_empty()
            && self.resolved_alerts.is_empty()
            && self.moves.is_empty()
            && self.repeats.is_empty()
            && self.changes.is_empty()
            && self.entries.is_empty()
            && self.events.is_empty()
            && self.follow_ups.is_empty()
    }
}

/// A runbook run (orchestration).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub runbook: String,
    pub incident_id: String,
    pub state: RunState,
    pub live: bool,
    pub error: String,
    /// The incident as the run saw it when it started (JSON), so replays see the same input.
    pub input: serde_json::Value,
    pub started_at: Micros,
    pub finished_at: Option<Micros>,
    /// `Plan` while a plan-approve run records its plan, then `Apply`.
    pub phase: RunPhase,
    /// The recorded plan (JSON array), or null.
    pub plan: serde_json::Value,
    /// When a sleeping run wakes or a pending approval times out.
    pub wake_at: Option<Micros>,
    /// The W3C trace context the run was created in (its incident's trace), which every
    /// execution of it, resumed ones too, continues; "" for none.
    pub traceparent: String,
}

impl RunRecord {
    /// True for succeeded, failed and rejected runs.
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// About the bytes the run takes on the wire without its journal and log (its input,
    /// never sent, left out): what bounds a page of runs.
    pub fn wire_size(&self) -> usize {
        [
            &self.id,
            &self.runbook,
            &self.incident_id,
            self.state.as_str(),
            &self.error,
            self.phase.as_str(),
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + if self.plan.is_null() {
                0
            } else {
                self.plan.to_string().len()
            }
            + 64
    }
}

/// Which runs a page lists: optionally of one incident and in one state, after the run
/// `after` (an id) in the order asked.
#[derive(Debug, Clone, Default)]
pub struct RunQuery<'a> {
    pub incident_id: Option<&'a str>,
    pub state: Option<RunState>,
    /// The id of the last run of the previous page.
    pub after: Option<&'a str>,
    /// Oldest first (ascending ids) instead of newest first.
    pub oldest_first: bool,
}

/// One journaled action of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRecord {
    pub run_id: String,
    pub seq: u32,
    pub action: String,
    /// Arguments as JSON, secrets redacted.
    pub args: serde_json::Value,
    /// A digest of the arguments, to detect a replay that diverges.
    pub args_digest: String,
    pub status: StepStatus,
    pub result: serde_json::Value,
    pub idempotency_key: String,
    pub attempts: u32,
    pub at: Micros,
}

impl JournalRecord {
    /// About the bytes the entry takes on the wire: what bounds a page of a journal.
    pub fn wire_size(&self) -> usize {
        self.action.len()
            + self.args.to_string().len()
            + self.result.to_string().len()
            + self.status.as_str().len()
            + self.idempotency_key.len()
            + 32
    }
}

/// An on-call schedule as stored (notification's database): declared in configuration or
/// made at run time, with the overrides added at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub name: String,
    /// The schedule's spec (`domain::schedule::ScheduleSpec`) as JSON, without run-time
    /// overrides.
    pub spec: serde_json::Value,
    /// Declared in configuration: run-time calls cannot replace or delete it.
    pub declared: bool,
    pub updated_at: Micros,
    pub updated_by: String,
    /// Run-time overrides, oldest first (ignored when stored: see `add_override`).
    pub overrides: Vec<OverrideRecord>,
}

/// A maintenance window made at run time (notification's database); those of the
/// configuration are not stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceRecord {
    pub name: String,
    /// The window's spec (`domain::maintenance::WindowSpec`) as JSON.
    pub spec: serde_json::Value,
    pub updated_at: Micros,
    pub updated_by: String,
}

/// An override added at run time to a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct OverrideRecord {
    pub id: String,
    pub schedule: String,
    /// The override (`domain::schedule::OverrideSpec`) as JSON.
    pub spec: serde_json::Value,
    pub created_at: Micros,
    pub created_by: String,
}

/// Someone's answer to a page from where they are (a signed link, a Slack button, an SMS
/// reply), kept once by its id: a provider retrying the same answer acts once.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRecord {
    /// The answer's own id: Twilio's `MessageSid`, Slack's action (`trigger_id`), or a new
    /// id for a link.
    pub id: String,
    pub incident_id: String,
    /// The person who answered (a directory user's name).
    pub user: String,
    /// `acknowledge` or `resolve`.
    pub action: String,
    /// Where from: `link`, `slack`, `sms`.
    pub via: String,
    pub at: Micros,
}

/// A person or channel subscribed to one incident's status updates (notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub incident_id: String,
    /// `person:NAME` or `channel:NAME`.
    pub subscriber: String,
    pub created_at: Micros,
    /// The actor who subscribed it.
    pub created_by: String,
}

/// A notification to deliver on a channel (notification).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub channel: String,
    pub incident_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// Cancelled: a later escalation step after an acknowledgement.
    pub status: DeliveryState,
    pub attempts: u32,
    pub last_error: String,
    pub created_at: Micros,
    pub next_attempt_at: Micros,
    pub delivered_at: Option<Micros>,
    /// The step of an escalation policy this delivery belongs to; 0 for none.
    pub escalation_step: u32,
    /// The provider's id of what was sent (Slack `CHANNEL:TS`, a Twilio SID, an email's
    /// `Message-ID`), once sent; `None` before, or where the provider gives none.
    pub provider_id: Option<String>,
    /// Who a page reaches, as throttles count it (`sms:+15551230000`); empty for a
    /// broadcast to a channel, which is not throttled.
    pub destination: String,
    /// When it was last handed to the provider.
    pub sent_at: Option<Micros>,
    /// For a page: when its incident was acknowledged (or resolved) after it was made, and
    /// by whom (`user:amy`); time to acknowledge counts from `sent_at` to here. Set by
    /// [`crate::NotificationStore::mark_acknowledged`], never by an insert.
    pub acknowledged_at: Option<Micros>,
    pub acknowledged_by: String,
    /// The W3C trace context it was planned in (its incident's trace), which each attempt
    /// continues; "" for none.
    pub traceparent: String,
}

impl DeliveryRecord {
    /// A new delivery made at `now` and due then, never tried: what every planner starts from
    /// (`DeliveryRecord { event_id, channel, incident_id, kind, payload, ..due(now) }`).
    pub fn due(now: Micros) -> Self {
        Self {
            id: firebreak_domain::new_id().to_string(),
            event_id: String::new(),
            channel: String::new(),
            incident_id: String::new(),
            kind: String::new(),
            payload: serde_json::Value::Null,
            status: DeliveryState::Pending,
            attempts: 0,
            last_error: String::new(),
            created_at: now,
            next_attempt_at: now,
            delivered_at: None,
            escalation_step: 0,
            provider_id: None,
            destination: String::new(),
            sent_at: None,
            acknowledged_at: None,
            acknowledged_by: String::new(),
            traceparent: String::new(),
        }
    }

    /// About the bytes the delivery takes on the wire (its payload, never sent, left out):
    /// what bounds a page of deliveries.
    pub fn wire_size(&self) -> usize {
        [
            &self.id,
            &self.event_id,
            &self.channel,
            &self.incident_id,
            &self.kind,
            self.status.as_str(),
            &self.last_error,
            self.provider_id.as_deref().unwrap_or_default(),
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + 64
    }
}

/// Where a page of deliveries (newest first) ended: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCursor {
    pub created_at: Micros,
    pub id: String,
}

/// A person or a service account of the directory (notification owns it; identity and
/// on-call share it).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// Unique, `a-z 0-9 . _ -` (`domain::access::parse_name`).
    pub name: String,
    pub display_name: String,
    pub email: String,
    /// An IANA time zone name, or empty.
    pub time_zone: String,
    /// A person, or a non-person account (a monitoring tool, a CI job).
    pub kind: firebreak_domain::access::SubjectKind,
    /// Declared in configuration: run-time calls cannot delete it.
    pub declared: bool,
    pub created_at: Micros,
    /// How the person is reached, and in which order (checked by
    /// `domain::people::check_contacts` before it is stored).
    pub contact_methods: Vec<firebreak_domain::people::ContactMethod>,
    pub notification_rules: Vec<firebreak_domain::people::NotificationRule>,
}

/// A team of the directory, with its members' names (sorted).
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    pub name: String,
    pub display_name: String,
    pub declared: bool,
    pub created_at: Micros,
    pub members: Vec<String>,
}

/// An API token: only its hash is kept. `version` orders changes (created, revoked) so
/// that each service's verifier copies only what changed since it last looked.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// The public id (12 hex digits).
    pub id: String,
    /// SHA-256 of the whole token, in hex.
    pub hash: String,
    /// The user or service account it acts as.
    pub subject: String,
    pub grants: Vec<firebreak_domain::access::Grant>,
    pub description: String,
    /// The actor that created it.
    pub created_by: String,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
    /// As the verifiers last reported it (not versioned: use does not change the table).
    pub last_used_at: Option<Micros>,
    /// Assigned by the store at each change; increasing in commit order.
    pub version: i64,
}

/// One person's incident role as the directory copies it from triage's incidents, so that
/// every access layer learns what the role grants (a removed one stays, versioned, so that
/// copies drop it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRoleRecord {
    pub incident_id: String,
    pub role: String,
    pub person: String,
    pub removed: bool,
    /// From the same counter as tokens' versions; increasing in commit order.
    pub version: i64,
}

/// One entry of the audit log (notification's database): a call the access layer refused, or
/// an allowed call to a method that changes state. Append-only: nothing updates an entry;
/// entries older than the retention go whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// A UUIDv7 made where the call was received; appending an id again changes nothing.
    pub id: String,
    pub at: Micros,
    /// `user:NAME`, `account:NAME`, `service:NAME` or `anonymous`.
    pub actor: String,
    /// Permission role names, comma-separated.
    pub roles: String,
    /// The gRPC method path.
    pub method: String,
    /// What the call acted on, when known.
    pub target: String,
    /// `ok`, `denied`, `unauthenticated`, `unavailable` or a gRPC code name.
    pub outcome: String,
    /// Why the call was refused.
    pub reason: String,
    /// The caller's address.
    pub source: String,
    pub request_id: String,
    pub trace_id: String,
}

/// Which audit entries to list; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this actor.
    pub actor: Option<String>,
    /// At or after this time.
    pub since: Option<Micros>,
    /// A method: its whole path, or the end of it after a `/` or a `.`
    /// (`IncidentService/Close` and `Close` both name `/firebreak.v1.IncidentService/Close`).
    pub action: Option<String>,
}

/// Where a page of audit entries (newest first) ended: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub at: Micros,
    pub id: String,
}

/// A post-incident follow-up action item (triage): numbered within its incident from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpRecord {
    pub incident_id: String,
    pub number: u32,
    pub title: String,
    /// A person's name.
    pub owner: String,
    pub due: Option<time::Date>,
    pub state: firebreak_domain::follow_up::FollowUpState,
    pub created_at: Micros,
    /// The actor who added it.
    pub created_by: String,
    pub updated_at: Micros,
}

/// A follow-up a changeset writes: a new one (`insert`: a number taken meanwhile is a
/// conflict) or a changed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpWrite {
    pub record: FollowUpRecord,
    pub insert: bool,
}

/// Which follow-ups to list: every filter given must hold. Listed by incident, then number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowUpQuery {
    pub incident_id: Option<String>,
    pub owner: Option<String>,
    pub state: Option<firebreak_domain::follow_up::FollowUpState>,
    /// Past this (incident id, number), for the next page.
    pub after: Option<(String, u32)>,
    pub limit: u32,
}
