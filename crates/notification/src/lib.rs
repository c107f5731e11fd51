//! Notification: delivers incident events and runbook messages to channels (the log, JSON
//! webhooks), with retries, once per event and channel.
//!
//! Consumes `incidents` and `runbooks`; publishes `notifications` (delivery outcomes).

mod channels;
mod command;
pub mod declared;
mod delivery;
mod directory;
mod error;
mod escalation;
pub mod ical;
mod inbound;
mod maintenance;
mod paging;
mod reminders;
pub mod respond;
pub mod routing;
mod schedule_admin;
pub mod schedules;
pub mod subscriptions;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, ConsumerOptions, HandlerError, Relay, RelayHandle, consume, streams};
use firebreak_domain::{Clock, DeliveryState, Micros, SystemClock};
use firebreak_proto::WireState;
use firebreak_proto::v1::{
    self,
    event::Payload,
    notification_service_server::{NotificationService, NotificationServiceServer},
};
use firebreak_storage::{DeliveryCursor, DeliveryRecord, NotificationStore};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::error::Error;

pub use channels::{
    Channel, ChannelError, ChannelKind, DeliveryError, EventKind, Message, Receipt,
    SIGNATURE_HEADER, SecretRef, TIMESTAMP_HEADER, channel_for, preview, sample_incident,
    signature,
};
pub use delivery::ProviderReport;
pub use directory::{Directory, MAX_SYNC};
pub use error::Error as NotificationError;
pub use escalation::{
    EscalationPolicy, EscalationStep, Page, Reachable, Recipient, Roster, Target, next_step, plan,
    step_pages,
};
pub use inbound::{Responses, ResponsesSpec};
pub use paging::OnCall;
pub use reminders::{ReminderSpec, StatusUpdatesSpec};

/// Why notification could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A channel is not valid; the text names it and says why.
    #[error("{0}")]
    Channels(String),
    /// An escalation policy is not valid; the text names it and says why.
    #[error("{0}")]
    Policies(String),
    /// A throttle is not valid; the text names the field and says why.
    #[error("{0}")]
    Throttles(String),
    /// A maintenance window is not valid; the text names the field and says why.
    #[error("{0}")]
    Maintenance(String),
    /// A subscription rule is not valid; the text names the field and says why.
    #[error("{0}")]
    Subscriptions(String),
    /// A status-update reminder is not valid; the text names the field and says why.
    #[error("{0}")]
    StatusUpdates(String),
    #[error("http client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// The most deliveries one dispatcher round claims.
const BATCH: u32 = 64;
/// How long an idle dispatcher waits before it looks for due deliveries again (a step or a
/// retry comes due without a wake-up): at most this late.
const IDLE: Duration = Duration::from_millis(200);

/// Attempts before a delivery is marked failed.
const MAX_ATTEMPTS: u32 = 8;
/// How long a replica holds the deliveries it claimed before another may take them: longer
/// than a batch of attempts takes.
const CLAIM: Duration = Duration::from_secs(60);

/// The notification service. Cheap to clone.
#[derive(Clone)]
pub struct Notification {
    store: Arc<dyn NotificationStore>,
    bus: Arc<dyn Bus>,
    relay: RelayHandle,
    channels: Arc<Vec<Channel>>,
    policies: Arc<Vec<EscalationPolicy>>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    wake: Arc<Notify>,
    /// Where incident roles are copied, so that access layers learn what they grant; and
    /// whose people and teams escalation pages.
    directory: Option<Directory>,
    /// Which policy pages for an incident that opens.
    routes: Arc<Vec<routing::Route>>,
    /// Who is on call in each schedule.
    schedules: Arc<schedules::Live>,
    /// Where people answer pages from (links, Slack buttons, SMS replies), if configured.
    responses: Option<Arc<Responses>>,
    /// How many pages each destination may receive in a window.
    throttles: Arc<throttle::Throttles>,
    /// Maintenance windows: while one covers an incident, its escalation pages nobody.
    maintenance: Arc<Vec<firebreak_domain::maintenance::Window>>,
    /// The configuration's windows and those made at run time, as of a schedule-store
    /// version (see `maintenance::Notification::windows`).
    windows: Arc<std::sync::RwLock<(i64, Arc<Vec<firebreak_domain::maintenance::Window>>)>>,
    /// The schedule whose on-call person commands incidents that need a commander.
    commander_schedule: Option<Arc<str>>,
    /// Who receives the status updates of which incidents, by rule (configuration).
    subscription_rules: Arc<Vec<subscriptions::SubscriptionRule>>,
    /// How long an incident may go without a status update before its commander is
    /// reminded, by severity.
    reminders: Arc<Vec<firebreak_domain::status_update::ReminderRule>>,
}

impl Notification {
    /// A notification service delivering to `channels`, escalating through `policies`.
    pub fn new(
        store: Arc<dyn NotificationStore>,
        bus: Arc<dyn Bus>,
        channels: Vec<Channel>,
        policies: Vec<EscalationPolicy>,
    ) -> Result<Self, ConfigError> {
        channels::validate(&channels).map_err(ConfigError::Channels)?;
        escalation::validate(&policies, &channels).map_err(ConfigError::Policies)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(ConfigError::HttpClient)?;
        Ok(Self {
            store,
            bus,
            relay: RelayHandle::default(),
            channels: Arc::new(channels),
            policies: Arc::new(policies),
            clock: Arc::new(SystemClock),
            http,
            wake: Arc::new(Notify::new()),
            directory: None,
            routes: Arc::new(Vec::new()),
            schedules: Arc::new(schedules::Live::fixed(schedules::Schedules::default())),
            responses: None,
            throttles: Arc::new(throttle::Throttles::default()),
            maintenance: Arc::new(Vec::new()),
            windows: Arc::new(std::sync::RwLock::new((-1, Arc::new(Vec::new())))),
            commander_schedule: None,
            subscription_rules: Arc::new(Vec::new()),
            reminders: Arc::new(firebreak_domain::status_update::DEFAULT_REMINDERS.to_vec()),
        })
    }

    /// Reminds commanders of quiet incidents as `spec` says (configuration's
    /// `status_updates`; by default SEV1 after 30 minutes, SEV2 after an hour).
    pub fn with_status_updates(
        mut self,
        spec: &reminders::StatusUpdatesSpec,
    ) -> Result<Self, ConfigError> {
        self.reminders = Arc::new(spec.rules().map_err(ConfigError::StatusUpdates)?);
        Ok(self)
    }

    /// Sends status updates to the people and channels of `rules` (configuration's
    /// `subscriptions`) besides each incident's own subscribers.
    pub fn with_subscriptions(
        mut self,
        rules: Vec<subscriptions::SubscriptionRule>,
    ) -> Result<Self, ConfigError> {
        let names: Vec<String> = self.channels.iter().map(|c| c.name.clone()).collect();
        subscriptions::validate(&rules, &names).map_err(ConfigError::Subscriptions)?;
        self.subscription_rules = Arc::new(rules);
        Ok(self)
    }

    /// Holds pages to each destination within `throttles` (GoAlert's limits by default).
    pub fn with_throttles(mut self, throttles: throttle::Throttles) -> Result<Self, ConfigError> {
        throttles.check().map_err(ConfigError::Throttles)?;
        self.throttles = Arc::new(throttles);
        Ok(self)
    }

    /// Holds paging back while one of `windows` covers an incident (see `maintenance`).
    pub fn with_maintenance(
        mut self,
        windows: &[firebreak_domain::maintenance::WindowSpec],
    ) -> Result<Self, ConfigError> {
        let checked =
            firebreak_domain::maintenance::check_all(windows).map_err(ConfigError::Maintenance)?;
        self.maintenance = Arc::new(checked);
        Ok(self)
    }

    /// Pages for incidents as they open, through the policy the first matching route names.
    pub fn with_routes(mut self, routes: Vec<routing::Route>) -> Result<Self, ConfigError> {
        routing::validate(&routes, &self.policies).map_err(ConfigError::Policies)?;
        self.routes = Arc::new(routes);
        Ok(self)
    }

    /// Pages the people on call in `schedules` (the configuration's); every schedule a
    /// policy names must be among them. With a schedule store, see
    /// [`Notification::declare_schedules`] instead.
    pub fn with_schedules(mut self, schedules: schedules::Schedules) -> Result<Self, ConfigError> {
        self.check_policy_schedules(&schedules)?;
        self.schedules = Arc::new(schedules::Live::fixed(schedules));
        Ok(self)
    }

    /// Keeps schedules in `store` too: the configuration's (declared) and those made at run
    /// time over the API. Call [`Notification::declare_schedules`] before serving.
    pub fn with_schedule_store(mut self, store: Arc<dyn firebreak_storage::ScheduleStore>) -> Self {
        self.schedules = Arc::new(schedules::Live::stored(
            store,
            schedules::Schedules::default(),
        ));
        self
    }

    /// Writes the configuration's schedules to the store as declared (run-time calls cannot
    /// change or delete them), releases those no longer declared (they stay, as run-time
    /// schedules), loads every schedule, and checks that each schedule a policy names exists.
    pub async fn declare_schedules(
        &self,
        declared: &[firebreak_domain::schedule::ScheduleSpec],
    ) -> Result<(), ConfigError> {
        schedules::Schedules::new(declared).map_err(ConfigError::Policies)?;
        let store = self
            .schedules
            .store()
            .ok_or_else(|| ConfigError::Policies("no schedule store".into()))?;
        let store_err =
            |e: firebreak_storage::Error| ConfigError::Policies(format!("storing schedules: {e}"));
        let (_, stored) = store.schedules().await.map_err(store_err)?;
        let now = self.clock.now();
        for spec in declared {
            let record = firebreak_storage::ScheduleRecord {
                name: spec.name.clone(),
                spec: serde_json::to_value(spec)
                    .map_err(|e| ConfigError::Policies(e.to_string()))?,
                declared: true,
                updated_at: now,
                updated_by: "configuration".into(),
                overrides: Vec::new(),
            };
            let same = stored
                .iter()
                .any(|s| s.name == record.name && s.declared && s.spec == record.spec);
            if !same {
                store.put_schedule(&record).await.map_err(store_err)?;
            }
        }
        for s in stored.iter().filter(|s| s.declared) {
            if !declared.iter().any(|d| d.name == s.name) {
                let released = firebreak_storage::ScheduleRecord {
                    declared: false,
                    updated_at: now,
                    updated_by: "configuration".into(),
                    ..s.clone()
                };
                store.put_schedule(&released).await.map_err(store_err)?;
            }
        }
        let loaded =
            self.schedules.reload().await.ok_or_else(|| {
                ConfigError::Policies("reading the stored schedules failed".into())
            })?;
        self.check_policy_schedules(&loaded)
    }

    /// Refuses a policy naming a schedule `schedules` does not have.
    fn check_policy_schedules(&self, schedules: &schedules::Schedules) -> Result<(), ConfigError> {
        for p in self.policies.iter() {
            let named = p
                .steps
                .iter()
                .flat_map(|s| s.targets.iter())
                .chain(p.fallback.iter());
            for t in named {
                if let Target::Schedule(s) = t
                    && schedules.get(s).is_none()
                {
                    return Err(ConfigError::Policies(format!(
                        "escalation policy {:?} names the unknown schedule {s:?}",
                        p.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The schedules this service pages from, as they stand.
    pub async fn schedules(&self) -> Arc<schedules::Schedules> {
        self.schedules.now().await
    }

    /// Makes the on-call person of `schedule` commander of incidents that need one (see
    /// `command`).
    pub fn with_commander_schedule(mut self, schedule: Option<String>) -> Self {
        self.commander_schedule = schedule.map(Arc::from);
        self
    }

    /// Copies incident roles into `directory` as triage announces them.
    pub fn with_directory(mut self, directory: Directory) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Reads the time from `clock` (escalation steps and retries are due against it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes answers to pages as `responses` says: pages carry signed links, and the
    /// HTTP routes of [`Notification::http_routes`] act on links, Slack buttons and SMS
    /// replies.
    pub fn with_responses(mut self, responses: Responses) -> Self {
        self.responses = Some(Arc::new(responses));
        self
    }

    /// The HTTP routes people answer pages through (see `inbound`).
    pub fn http_routes(&self) -> axum::Router {
        inbound::routes(self.clone())
    }

    /// The gRPC `NotificationService`.
    pub fn grpc(&self) -> NotificationServiceServer<Self> {
        NotificationServiceServer::new(self.clone())
    }

    /// Starts the relay, the consumers and the dispatcher.
    pub fn spawn(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        tasks.spawn(
            Relay {
                outbox: self.store.clone(),
                bus: self.bus.clone(),
                handle: self.relay.clone(),
                name: "notification",
            }
            .run(shutdown.clone()),
        );
        for stream in [streams::INCIDENTS, streams::RUNBOOKS] {
            let me = self.clone();
            tasks.spawn(consume(
                self.bus.clone(),
                stream,
                "notification",
                ConsumerOptions::default(),
                shutdown.clone(),
                move |inbound| {
                    let me = me.clone();
                    async move {
                        let event = firebreak_proto::decode_event(&inbound.message.payload)
                            .map_err(|e| {
                                HandlerError::Permanent(format!("undecodable event: {e}"))
                            })?;
                        // An acknowledged (or mitigated, resolved, closed, merged away)
                        // incident needs no more paging.
                        if let Some(Payload::IncidentChanged(c)) = &event.payload
                            && let Some(inc) = &c.incident
                            && match c.change_kind() {
                                v1::IncidentChange::Acknowledged
                                | v1::IncidentChange::Mitigated
                                | v1::IncidentChange::Resolved
                                | v1::IncidentChange::Closed => true,
                                v1::IncidentChange::Merged => !inc.merged_into.is_empty(),
                                _ => false,
                            }
                        {
                            me.store
                                .cancel_escalations(&inc.id)
                                .await
                                .map_err(HandlerError::from)?;
                            // Each page remembers when and by whom (time to acknowledge from
                            // it); a resolve or close marks what no acknowledgement did.
                            let at = [
                                inc.acknowledged_at,
                                inc.mitigated_at,
                                inc.resolved_at,
                                inc.closed_at,
                            ]
                            .iter()
                            .flatten()
                            .map(firebreak_proto::micros)
                            .min()
                            .unwrap_or_else(|| me.clock.now());
                            me.store
                                .mark_acknowledged(&inc.id, at, &c.actor)
                                .await
                                .map_err(HandlerError::from)?;
                        }
                        // Incident roles grant permissions: the directory's copy is what every
                        // access layer syncs.
                        if let (Some(Payload::IncidentChanged(c)), Some(directory)) =
                            (&event.payload, &me.directory)
                            && c.change_kind() == v1::IncidentChange::RolesChanged
                            && let Some(inc) = &c.incident
                        {
                            directory
                                .record_incident_roles(inc)
                                .await
                                .map_err(|e| match e {
                                    Error::Storage(e) => HandlerError::from(e),
                                    other => HandlerError::Permanent(other.to_string()),
                                })?;
                        }
                        me.assign_commander(&event).await?;
                        let mut deliveries = me.plan(&event);
                        // A change that starts a quiet period (or ends one) arms the
                        // commander's reminder.
                        if let Some(Payload::IncidentChanged(c)) = &event.payload
                            && let Some(row) = me.reminder_row(c, me.clock.now())
                        {
                            deliveries.push(row);
                        }
                        // A status update goes to the incident's subscribers too.
                        if let Some(Payload::IncidentChanged(c)) = &event.payload
                            && c.change_kind() == v1::IncidentChange::StatusUpdated
                        {
                            let planned = me.status_update_deliveries(&event, c).await.map_err(
                                |e| match e {
                                    Error::Storage(e) => HandlerError::from(e),
                                    other => HandlerError::Permanent(other.to_string()),
                                },
                            )?;
                            // A channel both subscribed and broadcasting every change gets
                            // the update once (the store keeps one per event and channel).
                            deliveries.retain(|d| !planned.iter().any(|p| p.channel == d.channel));
                            deliveries.extend(planned);
                        }
                        if deliveries.is_empty() {
                            return Ok(());
                        }
                        me.store
                            .insert_deliveries(&deliveries)
                            .await
                            .map_err(HandlerError::from)?;
                        me.wake.notify_one();
                        Ok(())
                    }
                },
            ));
        }
        let me = self.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { me.dispatch(shutdown).await });
    }

    /// The deliveries an event calls for: one per subscribed channel.
    fn plan(&self, event: &v1::Event) -> Vec<DeliveryRecord> {
        let now = self.clock.now();
        let make = |channel: &str, incident_id: &str, kind: &str, payload: serde_json::Value| {
            DeliveryRecord {
                event_id: event.id.clone(),
                channel: channel.to_owned(),
                incident_id: incident_id.to_owned(),
                kind: kind.to_owned(),
                payload,
                ..crate::planned(now)
            }
        };
        match &event.payload {
            Some(Payload::IncidentChanged(c)) => {
                let Some(inc) = &c.incident else {
                    return Vec::new();
                };
                let change = c.change_kind().name();
                let payload = json!({
                    "event_id": event.id,
                    "kind": format!("incident.{change}"),
                    "actor": c.actor,
                    "incident": incident_json(inc),
                });
                let mut out: Vec<DeliveryRecord> = self
                    .channels
                    .iter()
                    .filter(|ch| ch.wants(change, firebreak_proto::level(inc.severity)))
                    .map(|ch| {
                        make(
                            &ch.name,
                            &inc.id,
                            &format!("incident.{change}"),
                            payload.clone(),
                        )
                    })
                    .collect();
                // An incident that opens (or reopens) pages through its routed policy; one
                // that becomes SEV1 (or a runbook escalates) pages through it again.
                let pages = match c.change_kind() {
                    v1::IncidentChange::Opened | v1::IncidentChange::Reopened => true,
                    v1::IncidentChange::Escalated => true,
                    v1::IncidentChange::SeverityChanged => {
                        firebreak_proto::level(inc.severity) == 1
                    }
                    _ => false,
                };
                if pages && let Some(policy) = routing::route(&self.routes, inc) {
                    out.push(self.first_step(
                        policy,
                        &event.id,
                        &inc.id,
                        payload["incident"].clone(),
                        now,
                    ));
                }
                out
            }
            Some(Payload::NotifyRequested(n)) => {
                let payload = json!({
                    "event_id": event.id, "kind": "runbook.message", "actor": n.actor,
                    "incident_id": n.incident_id, "message": n.message,
                });
                let Some(policy) = self.policies.iter().find(|p| p.name == n.channel) else {
                    return vec![make(&n.channel, &n.incident_id, "runbook.message", payload)];
                };
                // One delivery per step and channel, each due at its step's time; a step
                // after the first has its own event id (`EVENT#STEP`) so a channel may be
                // paged again and a redelivered event still inserts nothing new.
                let mut out = Vec::new();
                for (i, step) in policy.steps.iter().enumerate() {
                    let n_step = i as u32 + 1;
                    let channels = step.all_targets().into_iter().filter_map(|t| match t {
                        escalation::Target::Channel(c) => Some(c),
                        _ => None,
                    });
                    for channel in &channels.collect::<Vec<_>>() {
                        let mut d =
                            make(channel, &n.incident_id, "runbook.message", payload.clone());
                        if n_step > 1 {
                            d.event_id = format!("{}#{n_step}", event.id);
                        }
                        d.escalation_step = n_step;
                        d.next_attempt_at = now + Duration::from_secs(step.after_seconds);
                        out.push(d);
                    }
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Sends due deliveries until `shutdown`, retrying with backoff. Deliveries are claimed
    /// for a while first, so replicas share the work.
    async fn dispatch(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.dispatch_due().await {
                // A full round: more are due (a storm of steps); the next round at once.
                Ok(n) if n >= BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "listing due deliveries failed"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Claims the deliveries due now and attempts them; returns how many. The dispatcher's
    /// one round (tests call it to run the dispatcher by hand on their clock). Deliveries
    /// to different places go at once; those to one place (a person's number or address,
    /// or one incident's channel messages) go in order, so an update follows its original
    /// and a throttle counts every send.
    pub(crate) async fn dispatch_due(&self) -> Result<usize, firebreak_storage::Error> {
        let now = self.clock.now();
        let due = self
            .store
            .claim_due_deliveries(now, now + CLAIM, BATCH)
            .await?;
        let n = due.len();
        let mut lanes: Vec<(String, Vec<DeliveryRecord>)> = Vec::new();
        for d in due {
            let lane = if d.destination.is_empty() {
                format!("incident:{}", d.incident_id)
            } else {
                format!("to:{}", d.destination)
            };
            match lanes.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, list)) => list.push(d),
                None => lanes.push((lane, vec![d])),
            }
        }
        let mut running = JoinSet::new();
        for (_, list) in lanes {
            let me = self.clone();
            running.spawn(async move {
                for d in list {
                    me.attempt(d).await;
                }
            });
        }
        while running.join_next().await.is_some() {}
        Ok(n)
    }

    /// Attempts `d` in a span of the trace it was planned in.
    async fn attempt(&self, d: DeliveryRecord) {
        let span = firebreak_telemetry::trace::follow(
            tracing::info_span!(
                "notification.deliver",
                otel.name = format!("deliver {} {}", d.kind, d.channel),
                otel.kind = "client",
                delivery.id = %d.id,
                delivery.kind = %d.kind,
                channel = %d.channel,
                incident.id = %d.incident_id,
                firebreak.attempt = d.attempts + 1,
                otel.status_code = tracing::field::Empty,
            ),
            Some(&d.traceparent),
        );
        self.attempt_in_span(d).instrument(span).await;
    }

    async fn attempt_in_span(&self, mut d: DeliveryRecord) {
        d.attempts += 1;
        if d.kind == paging::STEP {
            return self.attempt_step(d).await;
        }
        if d.kind == reminders::REMINDER {
            return self.attempt_reminder(d).await;
        }
        let person = paging::person_of(&d);
        if let Some(method) = &person
            && self.throttled(&mut d, method).await
        {
            return;
        }
        let outcome = match &person {
            // A page to a person: through the channel that reaches their contact method.
            Some(method) => self.page_person(&d, method).await,
            None => match self.channels.iter().find(|c| c.name == d.channel) {
                Some(ch) => {
                    let previous = self.previous_id(&d, ch.kind()).await;
                    ch.send(&self.http, &d, previous)
                        .await
                        .map(|r| (r, ch.kind()))
                }
                None => Err(DeliveryError::UnknownChannel(d.channel.clone())),
            },
        };
        let now = self.clock.now();
        match &outcome {
            Ok((receipt, kind)) => {
                // Chat and webhooks answer once the message is there; email and texts are
                // only handed on.
                d.status = if kind.confirms_on_accept() {
                    DeliveryState::Delivered
                } else {
                    DeliveryState::Sent
                };
                d.sent_at = Some(now);
                d.delivered_at = (d.status == DeliveryState::Delivered).then_some(now);
                let took = now.saturating_duration_since(d.created_at).as_secs_f64();
                firebreak_telemetry::metrics().observe_delivery(kind.as_str(), took);
                d.provider_id = receipt
                    .provider_id
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .map(|p| clip(p, delivery::MAX_PROVIDER_ID));
                d.last_error.clear();
            }
            Err(e) => {
                d.last_error = e.to_string();
                match retry_at(e, d.attempts, now, delivery::random_fraction()) {
                    Some(at) => d.next_attempt_at = at,
                    None => d.status = DeliveryState::Failed,
                }
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::warn!(delivery = %d.id, channel = %d.channel, attempt = d.attempts, error = %e, "delivery failed");
            }
        }
        // A page that failed for good fails over to its person's next contact method: stored
        // before the failure is, so a crash in between retries the page (and inserts the
        // same failover, keyed, at most once) rather than losing it.
        if d.status == DeliveryState::Failed
            && person.is_some()
            && let Err(e) = self.fail_over(&d).await
        {
            tracing::warn!(delivery = %d.id, error = %e, "failing over to the next contact method failed; the page is tried again");
            d.status = DeliveryState::Pending;
            d.next_attempt_at = now + backoff(0, Duration::from_secs(60));
        }
        let outcome = if d.status == DeliveryState::Pending {
            "retry"
        } else {
            d.status.as_str()
        };
        firebreak_telemetry::Metrics::count(&firebreak_telemetry::metrics().deliveries, outcome);
        let event = (d.status != DeliveryState::Pending).then(|| delivery::changed_event(&d));
        if let Err(e) = self.store.update_delivery(&d, event.as_ref()).await {
            tracing::warn!(delivery = %d.id, error = %e, "recording a delivery failed");
        }
        self.relay.wake();
    }
}

impl Notification {
    /// Pages a person through `method`, by the first channel that reaches its kind.
    async fn page_person(
        &self,
        d: &DeliveryRecord,
        method: &firebreak_domain::people::ContactMethod,
    ) -> Result<(Receipt, ChannelKind), DeliveryError> {
        let Some(ch) = channels::channel_for(&self.channels, method.kind) else {
            return Err(DeliveryError::UnknownChannel(format!(
                "no channel reaches {} contact methods",
                method.kind
            )));
        };
        let mut msg = channels::Message::from_payload(&d.kind, &d.payload)?;
        if let (Some(user), Some(responses)) = (paging::user_of(d), &self.responses) {
            let now = self.clock.now().unix_micros() / 1_000_000;
            if let Some((ack, resolve)) = responses.links(&d.incident_id, &user, now) {
                msg.ack_url = Some(ack);
                msg.resolve_url = Some(resolve);
            }
            // A text message can be answered by a reply naming the incident's code.
            if method.kind == firebreak_domain::people::ContactKind::Sms {
                let code = self
                    .store
                    .reply_code(&method.address, &d.incident_id, self.clock.now())
                    .await
                    .map_err(|e| DeliveryError::Store(format!("assigning a reply code: {e}")))?;
                msg.reply_code = Some(code);
            }
        }
        msg.previous_id = self.previous_id(d, ch.kind()).await;
        ch.deliver(&self.http, Some(method), &msg, &d.id)
            .await
            .map(|r| (r, ch.kind()))
    }

    /// Runs a due escalation step (see `paging`), retried like a delivery when the store
    /// fails.
    async fn attempt_step(&self, mut d: DeliveryRecord) {
        let now = self.clock.now();
        // A maintenance window covering the incident holds the step back: it is replaced by
        // one due at the window's end, and this one is done.
        let mut held = None;
        let outcome = match self.hold_for_maintenance(&d, now).await {
            Ok(Some(event)) => {
                held = Some(event);
                Ok(())
            }
            Ok(None) => self.run_step(&d).await.map(drop),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                d.status = DeliveryState::Delivered;
                d.delivered_at = Some(now);
                d.last_error.clear();
                self.wake.notify_one();
            }
            Err(e) => {
                d.last_error = e.to_string();
                if e.is_permanent() || d.attempts >= MAX_ATTEMPTS {
                    d.status = DeliveryState::Failed;
                } else {
                    // A step waits at most a minute: people are waiting to be paged.
                    d.next_attempt_at = now
                        + jitter(
                            backoff(d.attempts, Duration::from_secs(60)),
                            delivery::random_fraction(),
                        );
                }
                tracing::warn!(delivery = %d.id, policy = %d.channel, error = %e, "an escalation step failed");
            }
        }
        if let Err(e) = self.store.update_delivery(&d, held.as_ref()).await {
            tracing::warn!(delivery = %d.id, error = %e, "recording an escalation step failed");
        } else if held.is_some() {
            self.relay.wake();
        }
    }
}

#[tonic::async_trait]
impl NotificationService for Notification {
    async fn preview_template(
        &self,
        req: Request<v1::PreviewTemplateRequest>,
    ) -> Result<Response<v1::PreviewTemplateResponse>, Status> {
        let req = req.into_inner();
        let name = name_arg("channel", &req.channel)?;
        let channel = self
            .channels
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NotFound(format!("channel {name:?}")))?;
        let kind = firebreak_proto::enum_field::<v1::DeliveryKind>("kind", req.kind)
            .map_err(Error::from)?
            .unwrap_or(v1::DeliveryKind::IncidentOpened);
        // The paging engine's own rows (a step, a quiet period) are never sent.
        let event = channels::EventKind::from_delivery_kind(kind.name()).ok_or_else(|| {
            Error::Invalid(format!(
                "kind: {} is not a message a channel sends",
                kind.as_str_name()
            ))
        })?;
        let incident = req
            .incident
            .as_ref()
            .ok_or_else(|| Error::Invalid("incident: required".into()))?;
        let serde_json::Value::Object(fields) = incident_json(incident) else {
            return Err(Status::internal("an incident is an object"));
        };
        let text = channels::preview(channel, event, &fields)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Response::new(v1::PreviewTemplateResponse { text }))
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let req = req.into_inner();
        let after = page_cursor(SCHEDULES, &req.page_token)?;
        let mut all = self.list_schedule_infos().await?;
        // Schedules are configuration-sized and read whole with their version: paged in
        // memory, by their unique name.
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (schedules, next_page_token) = firebreak_proto::page::in_memory(
            SCHEDULES,
            all,
            |s| s.name.clone(),
            after,
            firebreak_proto::page::list_size(req.page_size),
            |s| s.name.clone(),
        );
        Ok(Response::new(v1::ListSchedulesResponse {
            schedules,
            next_page_token,
        }))
    }

    async fn put_schedule(
        &self,
        req: Request<v1::PutScheduleRequest>,
    ) -> Result<Response<v1::PutScheduleResponse>, Status> {
        let actor = caller(&req);
        let schedule = self
            .put_schedule_yaml(&req.into_inner().yaml, &actor)
            .await?;
        Ok(Response::new(v1::PutScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn delete_schedule(
        &self,
        req: Request<v1::DeleteScheduleRequest>,
    ) -> Result<Response<v1::DeleteScheduleResponse>, Status> {
        let req = req.into_inner();
        self.delete_schedule_named(name_arg("name", &req.name)?)
            .await?;
        Ok(Response::new(v1::DeleteScheduleResponse {}))
    }

    async fn add_override(
        &self,
        req: Request<v1::AddOverrideRequest>,
    ) -> Result<Response<v1::AddOverrideResponse>, Status> {
        let actor = caller(&req);
        let req = req.into_inner();
        let o = req
            .r#override
            .as_ref()
            .ok_or_else(|| Error::Invalid("override: required".into()))?;
        let added = self
            .add_schedule_override(name_arg("schedule", &req.schedule)?, o, &actor)
            .await?;
        Ok(Response::new(v1::AddOverrideResponse {
            r#override: Some(added),
        }))
    }

    async fn remove_override(
        &self,
        req: Request<v1::RemoveOverrideRequest>,
    ) -> Result<Response<v1::RemoveOverrideResponse>, Status> {
        let req = req.into_inner();
        self.remove_schedule_override(
            name_arg("schedule", &req.schedule)?,
            name_arg("id", &req.id)?,
        )
        .await?;
        Ok(Response::new(v1::RemoveOverrideResponse {}))
    }

    async fn who_is_on_call(
        &self,
        req: Request<v1::WhoIsOnCallRequest>,
    ) -> Result<Response<v1::WhoIsOnCallResponse>, Status> {
        let req = req.into_inner();
        let at = req
            .at
            .as_ref()
            .map_or_else(|| self.clock.now(), firebreak_proto::micros);
        let current = self.schedules.now().await;
        let chosen: Vec<&firebreak_domain::schedule::Schedule> =
            match name_arg("schedule", &req.schedule)? {
                "" => current.all(),
                name => vec![
                    current
                        .get(name)
                        .ok_or_else(|| Error::NotFound(format!("schedule {name:?}")))?,
                ],
            };
        let schedules = chosen
            .into_iter()
            .map(|s| v1::OnCallNow {
                schedule: s.name().to_owned(),
                users: firebreak_domain::schedule::on_call(s, schedules::instant(at)),
                time_zone: s.spec().time_zone.clone(),
            })
            .collect();
        Ok(Response::new(v1::WhoIsOnCallResponse { schedules }))
    }

    async fn list_shifts(
        &self,
        req: Request<v1::ListShiftsRequest>,
    ) -> Result<Response<v1::ListShiftsResponse>, Status> {
        use firebreak_domain::schedule;
        let req = req.into_inner();
        let name = name_arg("schedule", &req.schedule)?;
        let user = name_arg("user", &req.user)?.to_owned();
        // A shift's start (micros) is unique within one layout: the keyset of its pages.
        let after = page_cursor(SHIFTS, &req.page_token)?
            .map(|c| c.parse::<i64>().map_err(|_| Error::InvalidPageToken))
            .transpose()?;
        let s = self
            .schedules
            .now()
            .await
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("schedule {name:?}")))?
            .clone();
        let now = self.clock.now();
        let from = req.from.as_ref().map_or(now, firebreak_proto::micros);
        let to = req.to.as_ref().map_or(
            from + Duration::from_secs(7 * 86_400),
            firebreak_proto::micros,
        );
        let (from, to) = (schedules::instant(from), schedules::instant(to));
        // A schedule at its bounds takes seconds to lay out: off the async threads.
        let laid_out = tokio::task::spawn_blocking(move || {
            if user.is_empty() {
                schedule::shifts(&s, from, to)
            } else {
                schedule::shifts_of(&s, &user, from, to).map(|intervals| {
                    intervals
                        .into_iter()
                        .map(|i| schedule::Shift {
                            start: i.start,
                            end: i.end,
                            users: vec![user.clone()],
                        })
                        .collect()
                })
            }
            .map(|shifts| (shifts, s.spec().time_zone.clone()))
        })
        .await
        .map_err(|e| Status::internal(format!("laying out the schedule failed: {e}")))?
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let at = |t: jiff::Timestamp| {
            firebreak_proto::timestamp(Micros::from_unix_micros(t.as_microsecond()))
        };
        let micros = |s: &v1::Shift| {
            s.start
                .as_ref()
                .map_or(0, |t| firebreak_proto::micros(t).unix_micros())
        };
        let (shifts, next_page_token) = firebreak_proto::page::in_memory(
            SHIFTS,
            laid_out
                .0
                .into_iter()
                .map(|sh| v1::Shift {
                    start: Some(at(sh.start)),
                    end: Some(at(sh.end)),
                    users: sh.users,
                })
                .collect(),
            micros,
            after,
            firebreak_proto::page::list_size(req.page_size),
            |s| micros(s).to_string(),
        );
        Ok(Response::new(v1::ListShiftsResponse {
            shifts,
            time_zone: laid_out.1,
            next_page_token,
        }))
    }

    async fn test_escalation(
        &self,
        req: Request<v1::TestEscalationRequest>,
    ) -> Result<Response<v1::TestEscalationResponse>, Status> {
        let req = req.into_inner();
        let name = name_arg("policy", &req.policy)?;
        let policy = self
            .policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::NotFound(format!("escalation policy {name:?}")))?;
        let at = req
            .at
            .as_ref()
            .map_or_else(|| self.clock.now(), firebreak_proto::micros);
        let roster = self
            .roster()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let pages = escalation::plan(policy, "dry-run", at, &roster)
            .into_iter()
            .map(|p| {
                let (user, via, contact_kind) = match p.to {
                    Recipient::Person { name, method } => (
                        name,
                        method.name,
                        firebreak_proto::access::wire_contact_kind(method.kind) as i32,
                    ),
                    Recipient::Channel(c) => (String::new(), c, 0),
                };
                v1::PlannedPage {
                    step: p.step,
                    repeat: p.repeat,
                    at: Some(firebreak_proto::timestamp(p.at)),
                    user,
                    via,
                    contact_kind,
                }
            })
            .collect();
        Ok(Response::new(v1::TestEscalationResponse { pages }))
    }

    async fn subscribe(
        &self,
        req: Request<v1::SubscribeRequest>,
    ) -> Result<Response<v1::SubscribeResponse>, Status> {
        self.subscribe_call(req).await
    }

    async fn unsubscribe(
        &self,
        req: Request<v1::UnsubscribeRequest>,
    ) -> Result<Response<v1::UnsubscribeResponse>, Status> {
        self.unsubscribe_call(req).await
    }

    async fn list_subscribers(
        &self,
        req: Request<v1::ListSubscribersRequest>,
    ) -> Result<Response<v1::ListSubscribersResponse>, Status> {
        self.list_subscribers_call(req).await
    }

    async fn list_maintenance_windows(
        &self,
        req: Request<v1::ListMaintenanceWindowsRequest>,
    ) -> Result<Response<v1::ListMaintenanceWindowsResponse>, Status> {
        let req = req.into_inner();
        let at = req
            .at
            .as_ref()
            .map_or_else(|| self.clock.now(), firebreak_proto::micros);
        let n = match req.occurrences {
            0 => 3,
            n if n as usize > maintenance::MAX_LISTED => {
                return Err(Error::Invalid(format!(
                    "occurrences: at most {}",
                    maintenance::MAX_LISTED
                ))
                .into());
            }
            n => n as usize,
        };
        // Windows are configuration-sized: paged in memory, the declared ones first, each
        // group by its unique names (a token holds the last one's group and name).
        let after = page_cursor(MAINTENANCE, &req.page_token)?
            .map(|c| match c.split_once('.') {
                Some(("0", name)) => Ok((false, name.to_owned())),
                Some(("1", name)) => Ok((true, name.to_owned())),
                _ => Err(Error::InvalidPageToken),
            })
            .transpose()?;
        let key = |w: &v1::MaintenanceWindow| (!w.declared, w.name.clone());
        let mut all = self.list_maintenance(at, n).await;
        all.sort_by_key(key);
        let (windows, next_page_token) = firebreak_proto::page::in_memory(
            MAINTENANCE,
            all,
            key,
            after,
            firebreak_proto::page::list_size(req.page_size),
            |w| format!("{}.{}", u8::from(!w.declared), w.name),
        );
        Ok(Response::new(v1::ListMaintenanceWindowsResponse {
            windows,
            next_page_token,
        }))
    }

    async fn put_maintenance_window(
        &self,
        req: Request<v1::PutMaintenanceWindowRequest>,
    ) -> Result<Response<v1::PutMaintenanceWindowResponse>, Status> {
        let actor = caller(&req);
        let window = self
            .put_maintenance_yaml(&req.into_inner().yaml, &actor)
            .await?;
        Ok(Response::new(v1::PutMaintenanceWindowResponse {
            window: Some(window),
        }))
    }

    async fn delete_maintenance_window(
        &self,
        req: Request<v1::DeleteMaintenanceWindowRequest>,
    ) -> Result<Response<v1::DeleteMaintenanceWindowResponse>, Status> {
        let req = req.into_inner();
        self.delete_maintenance_named(name_arg("name", &req.name)?)
            .await?;
        Ok(Response::new(v1::DeleteMaintenanceWindowResponse {}))
    }

    async fn list_deliveries(
        &self,
        req: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        use firebreak_proto::Message;
        let req = req.into_inner();
        if req.incident_id.len() > 64 {
            return Err(Error::Invalid("incident_id is longer than 64 bytes".into()).into());
        }
        let incident = match req.incident_id.trim() {
            "" => None,
            id => Some(
                firebreak_domain::IncidentId::parse(id)
                    .map_err(|e| Error::Invalid(e.to_string()))?
                    .to_string(),
            ),
        };
        let limit = firebreak_proto::page::list_size(req.page_size);
        let after = delivery_token(&req.page_token)?;
        let status = DeliveryState::field("status", req.status).map_err(Error::from)?;
        // One more than asked: whether another page follows.
        let list = self
            .store
            .deliveries_page(
                incident.as_deref(),
                status,
                after.as_ref(),
                limit + 1,
                MAX_PAGE_BYTES,
            )
            .await
            .map_err(Error::from)?;
        let read: usize = list.iter().map(DeliveryRecord::wire_size).sum();
        let mut more = list.len() > limit as usize || read >= MAX_PAGE_BYTES;
        let (mut deliveries, mut bytes) = (Vec::new(), 0);
        let mut last = None;
        for d in list.iter().take(limit as usize) {
            let item = v1::Delivery {
                id: d.id.clone(),
                channel: d.channel.clone(),
                incident_id: d.incident_id.clone(),
                event_id: d.event_id.clone(),
                delivery_kind: delivery_kind(&d.kind)? as i32,
                status: d.status.wire(),
                attempts: d.attempts,
                last_error: clip(&d.last_error, MAX_ERROR),
                created_at: Some(firebreak_proto::timestamp(d.created_at)),
                delivered_at: d.delivered_at.map(firebreak_proto::timestamp),
                provider_id: d.provider_id.clone().unwrap_or_default(),
                sent_at: d.sent_at.map(firebreak_proto::timestamp),
                acknowledged_at: d.acknowledged_at.map(firebreak_proto::timestamp),
                acknowledged_by: d.acknowledged_by.clone(),
            };
            let size = item.encoded_len() + 6;
            if !deliveries.is_empty() && bytes + size > MAX_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            last = Some(format!("{}.{}", d.created_at.unix_micros(), d.id));
            deliveries.push(item);
        }
        let next_page_token = firebreak_proto::page::next(DELIVERIES, last, more);
        Ok(Response::new(v1::ListDeliveriesResponse {
            deliveries,
            next_page_token,
        }))
    }
}

/// The encoded size a page of deliveries may reach: a quarter of gRPC's default 4 MiB
/// message limit, so a page always decodes.
const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// A delivery's error as sent (a target's answer can be long).
const MAX_ERROR: usize = 16 * 1024;

/// The longest a provider's `Retry-After` is waited for: a page an hour late is no page.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// When a delivery that failed with `e` on attempt `attempts` is tried again, or `None` when
/// it has failed for good: its error is permanent or its attempts are spent. The backoff
/// doubles from a second, up to five minutes, with equal jitter (`fraction`, in `[0, 1)`,
/// picks where in its upper half); a 429 or 503 that says `Retry-After` is waited out
/// (up to an hour) when it asks for longer.
/// A new delivery planned at `now`, in the trace of the work that plans it (an incident's
/// event, an escalation step): what every planner starts from.
pub(crate) fn planned(now: Micros) -> DeliveryRecord {
    DeliveryRecord {
        traceparent: firebreak_telemetry::trace::outgoing(),
        ..DeliveryRecord::due(now)
    }
}

fn retry_at(e: &DeliveryError, attempts: u32, now: Micros, fraction: f64) -> Option<Micros> {
    if e.is_permanent() || attempts >= MAX_ATTEMPTS {
        return None;
    }
    let wait = jitter(backoff(attempts, Duration::from_secs(300)), fraction);
    let asked = match e {
        DeliveryError::RateLimited { .. } => e.retry_after(),
        DeliveryError::Answered { status, .. }
            if *status == reqwest::StatusCode::SERVICE_UNAVAILABLE =>
        {
            e.retry_after()
        }
        _ => None,
    };
    Some(now + wait.max(asked.unwrap_or_default().min(MAX_RETRY_AFTER)))
}

/// Equal jitter: half of `base` fixed, the other half scaled by `fraction` (in `[0, 1)`), so
/// retries of many deliveries that failed together spread out instead of returning at once.
/// Always within `[base / 2, base]`.
fn jitter(base: Duration, fraction: f64) -> Duration {
    let half = base / 2;
    half + half.mul_f64(fraction.clamp(0.0, 1.0))
}

/// How long after its `attempts`-th failure something is tried again: half a second,
/// doubling, at most `max`.
fn backoff(attempts: u32, max: Duration) -> Duration {
    Duration::from_micros(500_000 << attempts.min(10)).min(max)
}

/// The actor a call acts as (`user:NAME`), or `api` without one.
fn caller<T>(req: &Request<T>) -> String {
    firebreak_proto::access::caller(req).map_or_else(|| "api".to_owned(), |p| p.actor())
}

/// The most bytes of a name a request gives (a channel, schedule, policy, user or event).
const MAX_NAME_ARG: usize = 256;

/// A name from a request, trimmed: refused naming `field` when longer than
/// [`MAX_NAME_ARG`] or holding a control character.
pub(crate) fn name_arg<'a>(field: &str, text: &'a str) -> Result<&'a str, Error> {
    if text.len() > MAX_NAME_ARG {
        return Err(Error::Invalid(format!(
            "{field}: at most {MAX_NAME_ARG} bytes"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{field}: must not hold control characters"
        )));
    }
    Ok(text.trim())
}

/// An incident as channels receive it (webhooks' JSON, templates' `incident`).
fn incident_json(inc: &v1::Incident) -> serde_json::Value {
    json!({
        "id": inc.id, "title": inc.title, "category": inc.category,
        "severity": inc.severity, "priority": inc.priority,
        // By name, as channels have always received it.
        "state": inc.incident_state().map(|s| s.as_str()),
        "dedup_key": inc.dedup_key, "alert_count": inc.alert_count,
        "labels": inc.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "source": inc.source, "integration": inc.integration,
        "merged_into": inc.merged_into, "needs_commander": inc.needs_commander,
        "last_status_update": inc.last_status_update.as_ref().map(|u| json!({
            "status": firebreak_domain::UpdateStatus::from_wire(u.status).map(|s| s.as_str()),
            "message": u.message,
            "at": u.at.as_ref().map(|t| firebreak_proto::micros(t).timestamp().to_string()),
            "by": u.by,
        })),
    })
}

/// The page tokens' list names (`firebreak_proto::page`).
const DELIVERIES: &str = "deliveries";
const SCHEDULES: &str = "schedules";
const SHIFTS: &str = "shifts";
const MAINTENANCE: &str = "maintenance_windows";

/// The cursor a page token of `list` holds; a token this list did not give is
/// INVALID_ARGUMENT naming `page_token`.
fn page_cursor(list: &str, token: &str) -> Result<Option<String>, Error> {
    firebreak_proto::page::cursor(list, token).map_err(|_| Error::InvalidPageToken)
}

/// A page token of deliveries: `CREATED_AT.ID` of the last delivery of the previous page.
fn delivery_token(token: &str) -> Result<Option<DeliveryCursor>, Error> {
    let Some(c) = page_cursor(DELIVERIES, token)? else {
        return Ok(None);
    };
    let (at, id) = firebreak_proto::page::pair(&c, |a| a.parse::<i64>().ok())
        .map_err(|_| Error::InvalidPageToken)?;
    Ok(Some(DeliveryCursor {
        created_at: Micros::from_unix_micros(at),
        id,
    }))
}

/// A stored delivery's kind on the wire. This service stores only kinds the wire has (a
/// test holds it); one it does not know is a fault of the store, never a default kind.
fn delivery_kind(stored: &str) -> Result<v1::DeliveryKind, Error> {
    match v1::DeliveryKind::from_name(stored) {
        v1::DeliveryKind::Unspecified => Err(Error::Internal(format!(
            "stored delivery kind {:?} is unknown",
            clip(stored, 64)
        ))),
        kind => Ok(kind),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_channel_fails_at_once_and_a_webhook_answer_is_retried() {
        let unknown = DeliveryError::UnknownChannel("pager".into());
        assert_eq!(unknown.to_string(), "unknown channel \"pager\"");
        assert_eq!(retry_at(&unknown, 1, Micros::default(), 0.5), None);
        let answered = DeliveryError::Status(reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answered.to_string(),
            "webhook answered 503 Service Unavailable"
        );
        let epoch = Micros::default();
        assert_eq!(
            retry_at(&answered, 1, epoch, 1.0),
            Some(Micros::from_unix_micros(1_000_000))
        );
        assert_eq!(
            retry_at(&answered, 1, epoch, 0.0),
            Some(Micros::from_unix_micros(500_000))
        );
        assert_eq!(retry_at(&answered, MAX_ATTEMPTS, epoch, 0.5), None);
    }

    #[test]
    fn jittered_backoff_stays_within_half_and_all_of_its_base() {
        for attempts in 0..12 {
            let base = backoff(attempts, Duration::from_secs(300));
            for fraction in [0.0, 1e-9, 0.25, 0.5, 0.999_999, 1.0]
                .into_iter()
                .chain((0..200).map(|_| delivery::random_fraction()))
            {
                let wait = jitter(base, fraction);
                assert!(
                    wait >= base / 2 && wait <= base,
                    "{wait:?} outside [{:?}, {base:?}] ({fraction})",
                    base / 2
                );
            }
        }
        // Random fractions are in [0, 1) and not all alike.
        let drawn: Vec<f64> = (0..100).map(|_| delivery::random_fraction()).collect();
        assert!(drawn.iter().all(|f| (0.0..1.0).contains(f)));
        assert!(drawn.iter().any(|f| *f != drawn[0]));
    }

    #[test]
    fn retry_after_is_waited_out_on_429_and_503_up_to_an_hour() {
        use std::time::Duration as D;
        let epoch = Micros::default();
        let at = |e: &DeliveryError| retry_at(e, 1, epoch, 0.0).unwrap().unix_micros();
        let limited = |secs| DeliveryError::RateLimited {
            provider: "slack",
            retry_after: Some(D::from_secs(secs)),
        };
        let answered = |status: u16, secs| DeliveryError::Answered {
            provider: "twilio",
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            detail: String::new(),
            retry_after: Some(D::from_secs(secs)),
        };
        assert_eq!(at(&limited(30)), 30_000_000);
        assert_eq!(at(&answered(503, 120)), 120_000_000);
        // An hour at most, however long it asks.
        assert_eq!(at(&limited(86_400)), 3_600_000_000);
        // Shorter than the backoff: the backoff (half a second at the least jitter).
        assert_eq!(at(&limited(0)), 500_000);
        // Another status's Retry-After is not taken.
        assert_eq!(at(&answered(500, 120)), 500_000);
        // No Retry-After: the backoff.
        let plain = DeliveryError::RateLimited {
            provider: "slack",
            retry_after: None,
        };
        assert_eq!(at(&plain), 500_000);
    }

    #[test]
    fn a_bad_page_token_is_invalid_argument() {
        for bad in [
            "no-dot-here".to_owned(),
            firebreak_proto::page::token(DELIVERIES, "no-dot-here"),
            firebreak_proto::page::token(SHIFTS, "1.d"),
        ] {
            let status = Status::from(delivery_token(&bad).unwrap_err());
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                status.message(),
                "page_token is not a token this service gave"
            );
        }
        let good = firebreak_proto::page::token(DELIVERIES, "12.d-1");
        assert_eq!(
            delivery_token(&good).unwrap(),
            Some(DeliveryCursor {
                created_at: Micros::from_unix_micros(12),
                id: "d-1".into()
            })
        );
    }

    /// Every kind of delivery this service stores has its wire value: the message kinds of
    /// channels, and the paging engine's own rows.
    #[test]
    fn every_stored_delivery_kind_has_its_wire_value() {
        let mut stored: Vec<String> = channels::EventKind::ALL
            .iter()
            .map(|k| k.delivery_kind())
            .collect();
        stored.extend(
            [
                paging::STEP,
                paging::PAGE,
                reminders::REMINDER,
                reminders::REMINDER_MESSAGE,
                subscriptions::STATUS_UPDATE,
            ]
            .map(str::to_owned),
        );
        for kind in &stored {
            let wire = delivery_kind(kind).unwrap();
            assert_eq!(wire.name(), kind);
        }
        assert!(delivery_kind("incident.unheard_of").is_err());
        // And every wire kind but the engine's rows is a message a channel sends.
        for &k in v1::DeliveryKind::ALL {
            let sent = channels::EventKind::from_delivery_kind(k.name()).is_some();
            let row = matches!(
                k,
                v1::DeliveryKind::EscalationStep | v1::DeliveryKind::StatusReminder
            );
            assert_ne!(sent, row, "{k:?}");
        }
    }
}
