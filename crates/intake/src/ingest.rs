//! The core of intake: a batch of signals — triggers, acknowledgements, resolves — validated,
//! then stored with their events in one transaction, with repeats recognised by alert key.

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{AlertId, Labels, Signal, SignalInput};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::{AlertRecord, IntakeTx};
use serde::{Deserialize, Serialize};

use crate::{IngestError, Intake};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Trigger,
    Acknowledge,
    Resolve,
}

/// One signal as an endpoint read it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub action: Action,
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
pub struct Outcome {
    /// The alert it made or named; empty when invalid or when a follow-up named no alert.
    pub alert_id: String,
    /// Why it was refused (nothing stored for it).
    pub error: Option<String>,
    /// A trigger for an alert that was already firing.
    pub duplicate: bool,
    /// The stored alert of a new trigger, as the `alerts` event carries it.
    #[serde(skip)]
    pub received: Option<v1::AlertReceived>,
}

/// The caller's integration as intake needs it.
pub struct Source<'a> {
    /// The integration's name (`grpc` for unauthenticated gRPC callers).
    pub integration: &'a str,
    pub auto_resolve: bool,
}

const MAX_ALERT_KEY: usize = 255;

impl Intake {
    /// Stores a batch: each valid signal with its event, all in one transaction, committed
    /// before this returns. With an idempotency key, a retry returns the first outcome.
    pub async fn ingest(
        &self,
        source: Source<'_>,
        batch: Vec<Incoming>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Outcome>, IngestError> {
        // Validation needs no transaction: bad signals never reach the database.
        let checked: Vec<Result<Option<Signal>, String>> =
            batch.iter().map(|i| self.check(i)).collect();
        let mut tx = self.store.begin().await.map_err(IngestError::storage)?;
        let idem = idempotency_key.map(|k| format!("{}:{k}", source.integration));
        if let Some(key) = &idem
            && let Some(bytes) = tx.idempotent(key).await.map_err(IngestError::storage)?
        {
            return serde_json::from_slice(&bytes)
                .map_err(|e| IngestError::Storage(format!("stored response: {e}")));
        }
        let now = firebreak_domain::now();
        let received_at = (now.unix_timestamp_nanos() / 1_000) as i64;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (item, checked) in batch.into_iter().zip(checked) {
            let outcome = match checked {
                Err(error) => Outcome {
                    alert_id: String::new(),
                    error: Some(error),
                    duplicate: false,
                    received: None,
                },
                Ok(signal) => self
                    .apply(&mut *tx, &source, item, signal, received_at)
                    .await
                    .map_err(IngestError::storage)?,
            };
            outcomes.push(outcome);
        }
        if let Some(key) = &idem {
            let bytes = serde_json::to_vec(&outcomes).unwrap_or_default();
            tx.remember(key, &bytes)
                .await
                .map_err(IngestError::storage)?;
        }
        tx.commit().await.map_err(IngestError::storage)?;
        self.relay.wake();
        let m = firebreak_telemetry::metrics();
        for o in &outcomes {
            if o.received.is_some() {
                m.alerts_accepted.inc();
            }
        }
        Ok(outcomes)
    }

    /// Validates a signal; a trigger yields its parsed form.
    pub(crate) fn check(&self, item: &Incoming) -> Result<Option<Signal>, String> {
        if item.alert_key.len() > MAX_ALERT_KEY {
            return Err(format!(
                "invalid alert_key: longer than {MAX_ALERT_KEY} bytes"
            ));
        }
        if item.action != Action::Trigger {
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

    async fn apply(
        &self,
        tx: &mut dyn IntakeTx,
        source: &Source<'_>,
        item: Incoming,
        signal: Option<Signal>,
        received_at: i64,
    ) -> firebreak_storage::Result<Outcome> {
        let key = item.alert_key.trim();
        let current = if key.is_empty() {
            None
        } else {
            tx.alert_key(source.integration, key).await?
        };
        let outcome = |alert_id: String, duplicate: bool| Outcome {
            alert_id,
            error: None,
            duplicate,
            received: None,
        };
        match (item.action, signal) {
            (Action::Trigger, Some(signal)) => {
                if let Some((id, state)) = current
                    && state != "resolved"
                {
                    // A repeat (Alertmanager's repeat_interval, a retried send): same alert.
                    return Ok(outcome(id, true));
                }
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
                    annotations: item.annotations,
                    integration: source.integration.to_owned(),
                    alert_key: key.to_owned(),
                };
                tx.insert_alert(&record).await?;
                if !key.is_empty() {
                    tx.set_alert_key(source.integration, key, &record.id, "firing")
                        .await?;
                }
                let received = received_message(&record, item.truncated);
                tx.enqueue(&outbox_event(
                    streams::ALERTS,
                    "alerts.received",
                    Payload::AlertReceived(received.clone()),
                ))
                .await?;
                Ok(Outcome {
                    received: Some(received),
                    ..outcome(record.id, false)
                })
            }
            (Action::Acknowledge, _) => match current {
                Some((id, state)) if state == "firing" => {
                    tx.set_alert_key(source.integration, key, &id, "acknowledged")
                        .await?;
                    tx.enqueue(&outbox_event(
                        streams::ALERTS,
                        "alerts.acknowledged",
                        Payload::AlertAcknowledged(v1::AlertAcknowledged {
                            alert_id: id.clone(),
                            integration: source.integration.to_owned(),
                        }),
                    ))
                    .await?;
                    Ok(outcome(id, false))
                }
                // Acknowledging an acknowledged, resolved or unknown alert changes nothing.
                Some((id, _)) => Ok(outcome(id, true)),
                None => Ok(outcome(String::new(), false)),
            },
            (Action::Resolve, _) => match current {
                Some((id, state)) if state != "resolved" => {
                    tx.set_alert_key(source.integration, key, &id, "resolved")
                        .await?;
                    tx.enqueue(&outbox_event(
                        streams::ALERTS,
                        "alerts.resolved",
                        Payload::AlertResolved(v1::AlertResolved {
                            alert_id: id.clone(),
                            integration: source.integration.to_owned(),
                            auto_resolve: source.auto_resolve,
                        }),
                    ))
                    .await?;
                    Ok(outcome(id, false))
                }
                Some((id, _)) => Ok(outcome(id, true)),
                None => Ok(outcome(String::new(), false)),
            },
            (Action::Trigger, None) => Ok(outcome(String::new(), false)),
        }
    }
}

/// The `alerts` event of a stored alert.
pub(crate) fn received_message(record: &AlertRecord, truncated: u32) -> v1::AlertReceived {
    v1::AlertReceived {
        alert_id: record.id.clone(),
        title: record.title.clone(),
        description: record.description.clone(),
        severity: record.severity,
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
