//! The core of intake: a batch of signals — triggers, acknowledgements, resolves — validated,
//! then stored with their events in one transaction, with repeats recognised by alert key.

use std::collections::HashMap;
use std::sync::Arc;

use firebreak_bus::{RelayHandle, outbox_event, streams};
use firebreak_domain::{AlertId, Labels, Micros, Signal, SignalInput};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::{AlertRecord, IntakeStore, OutboxEvent, SilencedRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{IngestError, Intake};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    Trigger,
    Acknowledge,
    Resolve,
}

/// One signal as an endpoint read it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub action: SignalAction,
    /// The signal (for a trigger; follow-ups use only `alert_key`).
    pub input: SignalInput,
    pub annotations: Labels,
    /// The sender's key for the alert; empty means every trigger is a new alert.
    pub alert_key: String,
    /// Alerts the sender left out of this call (Alertmanager `truncatedAlerts`).
    pub truncated: u32,
}

/// What became of one signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalResult {
    /// The alert it made or named; empty when invalid or when a follow-up named no alert.
    pub alert_id: String,
    /// Why it was refused (nothing stored for it).
    pub error: Option<String>,
    /// A trigger for an alert that was already firing.
    pub duplicate: bool,
    /// The stored alert of a new trigger, as the `alerts` event carries it.
    #[serde(skip)]
    pub received: Option<v1::AlertReceived>,
    /// The silence that silenced this trigger: it was stored, and opens and pages nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
}

/// The caller's integration as intake needs it.
pub struct Source<'a> {
    /// The integration's name (`grpc` for unauthenticated gRPC callers).
    pub integration: &'a str,
    pub auto_resolve: bool,
}

const MAX_ALERT_KEY: usize = 255;
/// An alert's annotations (Alertmanager) or details (PagerDuty), keys and values together:
/// they travel with the alert onto its incident's timeline.
const MAX_ANNOTATIONS: usize = 64 * 1024;

/// A signal with the verdict of its validation: its parsed form (for a trigger) or why it
/// was refused.
pub(crate) type Checked = (Incoming, Result<Option<Signal>, String>);

/// A trigger's alert and `alerts` event, made in the caller's task so that the writer, which
/// every call waits on, only decides (new alert or repeat) and stores.
struct Prepared {
    record: AlertRecord,
    received: v1::AlertReceived,
    event: OutboxEvent,
    /// The silence in force that matches its labels: the alert is stored, and nothing opens.
    silenced_by: Option<String>,
    /// What reports count of it when silenced: what it would have been.
    silenced: Option<SilencedRecord>,
}

/// A signal as the writer takes it: a trigger prepared, a follow-up as is, or why it was
/// refused.
type Ready = (Incoming, Result<Option<Prepared>, String>);

/// A call waiting for the writer.
pub(crate) struct Job {
    integration: String,
    auto_resolve: bool,
    items: Vec<Ready>,
    idempotency_key: Option<String>,
    /// The caller's trace context, which the events of its signals continue.
    traceparent: Option<String>,
    reply: oneshot::Sender<Result<Vec<SignalResult>, IngestError>>,
}

/// Alerts one transaction takes at most; the calls beyond wait for the next.
const GROUP_ITEMS: usize = 4000;

/// Rows a transaction writes at its end, in a few statements, and the alert keys it read
/// at its start: what each (integration, key) names, as the group's signals change it.
#[derive(Default)]
struct Pending {
    alerts: Vec<AlertRecord>,
    silenced: Vec<SilencedRecord>,
    events: Vec<OutboxEvent>,
    /// (integration, key) → (alert id, state, changed by this group).
    keys: HashMap<(String, String), (String, String, bool)>,
}

impl Pending {
    fn key(&self, integration: &str, key: &str) -> Option<(String, String)> {
        if key.is_empty() {
            return None;
        }
        self.keys
            .get(&(integration.to_owned(), key.to_owned()))
            .map(|(id, state, _)| (id.clone(), state.clone()))
    }

    fn set_key(&mut self, integration: &str, key: &str, alert_id: &str, state: &str) {
        self.keys.insert(
            (integration.to_owned(), key.to_owned()),
            (alert_id.to_owned(), state.to_owned(), true),
        );
    }
}

impl Intake {
    /// Stores a batch: each valid signal with its event, committed before this returns.
    /// With an idempotency key, a retry returns the first outcome. Concurrent calls share
    /// transactions (group commit): the writer takes every call waiting when it starts one.
    pub async fn ingest(
        &self,
        source: Source<'_>,
        batch: Vec<Incoming>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<SignalResult>, IngestError> {
        let items = self.validate(batch);
        self.ingest_checked(source, items, idempotency_key).await
    }

    /// Validates each signal; needs no transaction, so bad signals never reach the database.
    pub(crate) fn validate(&self, batch: Vec<Incoming>) -> Vec<Checked> {
        batch
            .into_iter()
            .map(|i| {
                let checked = self.check(&i);
                (i, checked)
            })
            .collect()
    }

    /// [`Intake::ingest`] of signals already validated.
    pub(crate) async fn ingest_checked(
        &self,
        source: Source<'_>,
        items: Vec<Checked>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<SignalResult>, IngestError> {
        let (reply, answer) = oneshot::channel();
        let received_at = self.clock.now();
        let in_force = self.silencer.snapshot();
        let items = items
            .into_iter()
            .map(|(mut item, checked)| {
                let ready = checked.map(|signal| {
                    signal.map(|signal| {
                        let silenced_by = in_force.silenced_by(&signal.labels, received_at);
                        let silenced = silenced_by
                            .as_ref()
                            .map(|id| self.silenced_as(id, &source, &signal, received_at));
                        let mut prepared = prepare(&source, &mut item, signal, received_at);
                        prepared.silenced_by = silenced_by;
                        prepared.silenced = silenced.map(|s| SilencedRecord {
                            alert_id: prepared.record.id.clone(),
                            ..s
                        });
                        prepared
                    })
                });
                (item, ready)
            })
            .collect();
        let job = Job {
            integration: source.integration.to_owned(),
            auto_resolve: source.auto_resolve,
            items,
            idempotency_key: idempotency_key.map(|k| format!("{}:{k}", source.integration)),
            traceparent: Some(firebreak_telemetry::trace::outgoing()).filter(|t| !t.is_empty()),
            reply,
        };
        // The queue is bounded: when it is full, the caller hears so at once.
        self.jobs.try_send(job).map_err(|_| {
            firebreak_telemetry::metrics().intake_overloaded.inc();
            IngestError::Overloaded
        })?;
        let outcomes = answer.await.map_err(|_| IngestError::WriterStopped)??;
        let m = firebreak_telemetry::metrics();
        for o in &outcomes {
            if o.received.is_some() {
                m.alerts_accepted.inc();
            }
        }
        Ok(outcomes)
    }
}

/// The writer: takes the calls waiting, stores them in one transaction, answers each.
pub(crate) async fn writer(
    store: Arc<dyn IntakeStore>,
    relay: RelayHandle,
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let mut items = group[0].items.len();
        while items < GROUP_ITEMS {
            match jobs.try_recv() {
                Ok(job) => {
                    items += job.items.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        match commit_group(store.as_ref(), &mut group).await {
            Ok(results) => {
                relay.wake();
                for (job, outcomes) in group.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(outcomes));
                }
            }
            Err(e) => {
                // Logged where it is answered, once per call.
                let e = std::sync::Arc::new(e);
                for job in group {
                    let _ = job.reply.send(Err(IngestError::Storage(e.clone())));
                }
            }
        }
    }
}

async fn commit_group(
    store: &dyn IntakeStore,
    group: &mut [Job],
) -> firebreak_storage::Result<Vec<Vec<SignalResult>>> {
    let mut tx = store.begin().await?;
    let mut pending = Pending::default();
    // One read for every alert key the group names.
    let mut pairs: Vec<(String, String)> = group
        .iter()
        .flat_map(|job| {
            job.items
                .iter()
                .map(|(item, _)| (job.integration.clone(), item.alert_key.trim().to_owned()))
        })
        .filter(|(_, key)| !key.is_empty())
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (integration, key, id, state) in tx.alert_keys(&pairs).await? {
        pending.keys.insert((integration, key), (id, state, false));
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        if let Some(key) = &job.idempotency_key
            && let Some(bytes) = tx.idempotent(key).await?
        {
            let first = serde_json::from_slice(&bytes)
                .map_err(|e| firebreak_storage::Error::Corrupt(format!("stored response: {e}")))?;
            results.push(first);
            continue;
        }
        let source = Source {
            integration: &job.integration,
            auto_resolve: job.auto_resolve,
        };
        let items = std::mem::take(&mut job.items);
        // The events of follow-ups continue the caller's trace (triggers' were made in it).
        let span = firebreak_telemetry::trace::follow(
            tracing::info_span!("intake.store", integration = %job.integration, alerts = items.len()),
            job.traceparent.as_deref(),
        );
        let outcomes = span.in_scope(|| {
            items
                .into_iter()
                .map(|(item, ready)| match ready {
                    Err(error) => SignalResult {
                        alert_id: String::new(),
                        error: Some(error),
                        duplicate: false,
                        received: None,
                        silenced_by: None,
                    },
                    Ok(prepared) => apply(&mut pending, &source, &item, prepared),
                })
                .collect::<Vec<_>>()
        });
        if let Some(key) = &job.idempotency_key {
            let bytes = serde_json::to_vec(&outcomes).unwrap_or_default();
            tx.remember(key, &bytes).await?;
        }
        results.push(outcomes);
    }
    let keys: Vec<_> = pending
        .keys
        .iter()
        .filter(|(_, (_, _, changed))| *changed)
        .map(|((integration, key), (id, state, _))| {
            (integration.clone(), key.clone(), id.clone(), state.clone())
        })
        .collect();
    tx.set_alert_keys(&keys).await?;
    tx.insert_alerts(pending.alerts, pending.events).await?;
    if !pending.silenced.is_empty() {
        tx.insert_silenced(pending.silenced).await?;
    }
    tx.commit().await?;
    Ok(results)
}

impl Intake {
    /// What a report counts of a trigger `silence` kept from opening anything: the category
    /// and severity the taxonomy gives it (what triage would have), its service and
    /// integration. The alert id is filled in when the alert is made.
    fn silenced_as(
        &self,
        silence: &str,
        source: &Source<'_>,
        signal: &Signal,
        received_at: Micros,
    ) -> SilencedRecord {
        // Intake checked the category against the same taxonomy; should it be unknown all
        // the same, the rules categorize the alert, as triage would.
        let class = self.taxonomy.classify(signal).or_else(|_| {
            let mut s = signal.clone();
            s.category = None;
            self.taxonomy.classify(&s)
        });
        let (category, severity) = match class {
            Ok(c) => (c.category, u32::from(c.severity.level())),
            Err(_) => (firebreak_domain::UNCATEGORIZED.to_owned(), 3),
        };
        SilencedRecord {
            alert_id: String::new(),
            silence_id: silence.to_owned(),
            received_at,
            integration: source.integration.to_owned(),
            service: firebreak_domain::report::service_of(&signal.labels, &signal.source)
                .to_owned(),
            category,
            severity,
        }
    }

    /// Validates a signal; a trigger yields its parsed form.
    fn check(&self, item: &Incoming) -> Result<Option<Signal>, String> {
        if item.alert_key.len() > MAX_ALERT_KEY {
            return Err(format!(
                "invalid alert_key: longer than {MAX_ALERT_KEY} bytes"
            ));
        }
        firebreak_domain::no_nul("alert_key", &item.alert_key).map_err(|e| e.to_string())?;
        for (key, value) in &item.annotations {
            firebreak_domain::no_nul("annotations", key).map_err(|e| e.to_string())?;
            firebreak_domain::no_nul("annotations", value).map_err(|e| e.to_string())?;
        }
        let size: usize = item
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_ANNOTATIONS {
            return Err(format!(
                "invalid annotations: {size} bytes, more than {MAX_ANNOTATIONS}"
            ));
        }
        if item.action != SignalAction::Trigger {
            if item.alert_key.trim().is_empty() {
                return Err("invalid alert_key: a follow-up needs the key of its alert".into());
            }
            return Ok(None);
        }
        let signal = Signal::parse(item.input.clone()).map_err(|e| e.to_string())?;
        if let Some(c) = &signal.category
            && !self.taxonomy.has(c)
        {
            let known: Vec<_> = self.taxonomy.names().collect();
            return Err(format!(
                "invalid category: {c:?} is not one of {}",
                known.join(", ")
            ));
        }
        Ok(Some(signal))
    }
}

/// A trigger's alert and event, as stored if it turns out not to be a repeat.
fn prepare(
    source: &Source<'_>,
    item: &mut Incoming,
    signal: Signal,
    received_at: Micros,
) -> Prepared {
    let record = AlertRecord {
        id: AlertId::new().to_string(),
        received_at,
        source: signal.source,
        title: signal.title,
        description: signal.description,
        severity: signal.severity.map_or(0, |s| u32::from(s.level())),
        category: signal.category.unwrap_or_default(),
        labels: signal.labels,
        dedup_key: signal.dedup_key,
        annotations: std::mem::take(&mut item.annotations),
        integration: source.integration.to_owned(),
        alert_key: item.alert_key.trim().to_owned(),
        silenced_by: String::new(),
    };
    let received = received_message(&record, item.truncated);
    let event = outbox_event(
        streams::ALERTS,
        "alerts.received",
        Payload::AlertReceived(received.clone()),
    );
    Prepared {
        record,
        received,
        event,
        silenced_by: None,
        silenced: None,
    }
}

/// Applies one signal: alert-key bookkeeping now, rows and events into `pending` (in order,
/// so a resolve never overtakes the trigger it follows).
fn apply(
    pending: &mut Pending,
    source: &Source<'_>,
    item: &Incoming,
    prepared: Option<Prepared>,
) -> SignalResult {
    let key = item.alert_key.trim();
    let current = pending.key(source.integration, key);
    let outcome = |alert_id: String, duplicate: bool| SignalResult {
        alert_id,
        error: None,
        duplicate,
        received: None,
        silenced_by: None,
    };
    match (item.action, prepared) {
        (
            SignalAction::Trigger,
            Some(Prepared {
                record,
                received,
                event,
                silenced_by,
                silenced,
            }),
        ) => {
            if let Some((id, state)) = current
                && state != "resolved"
            {
                // A repeat (Alertmanager's repeat_interval, a retried send): same alert,
                // counted where its incident lists it.
                pending.events.push(outbox_event(
                    streams::ALERTS,
                    "alerts.repeated",
                    Payload::AlertRepeated(v1::AlertRepeated {
                        alert_id: id.clone(),
                        integration: source.integration.to_owned(),
                        at: Some(firebreak_proto::timestamp(record.received_at)),
                    }),
                ));
                return outcome(id, true);
            }
            // Silenced: stored, and nothing announced; nor is its key remembered as
            // firing, so the sender's next notice after the silence ends is a new trigger.
            if let Some(silence) = silenced_by {
                tracing::debug!(alert = %record.id, silence, "an alert was silenced");
                let id = record.id.clone();
                pending.alerts.push(AlertRecord {
                    silenced_by: silence.clone(),
                    ..record
                });
                pending.silenced.extend(silenced);
                return SignalResult {
                    silenced_by: Some(silence),
                    ..outcome(id, false)
                };
            }
            if !key.is_empty() {
                pending.set_key(source.integration, key, &record.id, "firing");
            }
            pending.events.push(event);
            let id = record.id.clone();
            pending.alerts.push(record);
            SignalResult {
                received: Some(received),
                ..outcome(id, false)
            }
        }
        (SignalAction::Acknowledge, _) => match current {
            Some((id, state)) if state == "firing" => {
                pending.set_key(source.integration, key, &id, "acknowledged");
                pending.events.push(outbox_event(
                    streams::ALERTS,
                    "alerts.acknowledged",
                    Payload::AlertAcknowledged(v1::AlertAcknowledged {
                        alert_id: id.clone(),
                        integration: source.integration.to_owned(),
                    }),
                ));
                outcome(id, false)
            }
            // Acknowledging an acknowledged, resolved or unknown alert changes nothing.
            Some((id, _)) => outcome(id, true),
            None => outcome(String::new(), false),
        },
        (SignalAction::Resolve, _) => match current {
            Some((id, state)) if state != "resolved" => {
                pending.set_key(source.integration, key, &id, "resolved");
                pending.events.push(outbox_event(
                    streams::ALERTS,
                    "alerts.resolved",
                    Payload::AlertResolved(v1::AlertResolved {
                        alert_id: id.clone(),
                        integration: source.integration.to_owned(),
                        auto_resolve: source.auto_resolve,
                    }),
                ));
                outcome(id, false)
            }
            Some((id, _)) => outcome(id, true),
            None => outcome(String::new(), false),
        },
        (SignalAction::Trigger, None) => outcome(String::new(), false),
    }
}

/// The `alerts` event of a stored alert.
pub(crate) fn received_message(record: &AlertRecord, truncated: u32) -> v1::AlertReceived {
    v1::AlertReceived {
        alert_id: record.id.clone(),
        title: record.title.clone(),
        description: record.description.clone(),
        severity: firebreak_proto::wire_level(record.severity),
        category: record.category.clone(),
        labels: record.labels.clone().into_iter().collect(),
        source: record.source.clone(),
        dedup_key: record.dedup_key.clone(),
        received_at: Some(firebreak_proto::timestamp(record.received_at)),
        annotations: record.annotations.clone().into_iter().collect(),
        integration: record.integration.clone(),
        alert_key: record.alert_key.clone(),
        truncated_alerts: truncated,
    }
}
