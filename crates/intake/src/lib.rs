//! Intake: where signals enter Firebreak. Validates them, stores them durably with their
//! `alerts` event (one transaction), then asks triage for the incident so the caller gets
//! its id at once.
//!
//! An alert is accepted once it is stored: if triage cannot be reached, the caller still
//! gets OK with the alert id, and the `alerts` event makes the incident later.

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, Relay, RelayHandle, outbox_event, streams};
use firebreak_domain::{AlertId, Signal, SignalInput, Taxonomy};
use firebreak_proto::ErrorCode;
use firebreak_proto::v1::{
    self,
    event::Payload,
    incident_service_client::IncidentServiceClient,
    intake_service_server::{IntakeService, IntakeServiceServer},
};
use firebreak_storage::{AlertRecord, IntakeStore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The intake service. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn IntakeStore>,
    bus: Arc<dyn Bus>,
    relay: RelayHandle,
    taxonomy: Arc<Taxonomy>,
    triage: IncidentServiceClient<Channel>,
}

impl Intake {
    /// An intake service; `triage` is a (lazily connecting) channel to triage's gRPC server.
    pub fn new(
        store: Arc<dyn IntakeStore>,
        bus: Arc<dyn Bus>,
        taxonomy: Taxonomy,
        triage: Channel,
    ) -> Self {
        Self {
            store,
            bus,
            relay: RelayHandle::default(),
            taxonomy: Arc::new(taxonomy),
            triage: IncidentServiceClient::new(triage),
        }
    }

    /// The gRPC `IntakeService`.
    pub fn grpc(&self) -> IntakeServiceServer<Self> {
        IntakeServiceServer::new(self.clone())
    }

    /// Starts the outbox relay; it stops when `shutdown` fires.
    pub fn spawn(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let relay = Relay {
            outbox: self.store.clone(),
            bus: self.bus.clone(),
            handle: self.relay.clone(),
            name: "intake",
        };
        tasks.spawn(relay.run(shutdown.clone()));
    }

    /// Validates and stores one signal with its event; returns the stored alert.
    pub async fn accept(&self, input: SignalInput) -> Result<v1::AlertReceived, Status> {
        let signal = Signal::parse(input).map_err(invalid)?;
        if let Some(c) = &signal.category
            && !self.taxonomy.has(c)
        {
            let known: Vec<_> = self.taxonomy.names().collect();
            return Err(ErrorCode::InvalidArgument.status(format!(
                "invalid category: {c:?} is not one of {}",
                known.join(", ")
            )));
        }
        let now = firebreak_domain::now();
        let received_at = (now.unix_timestamp_nanos() / 1_000) as i64;
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
        };
        let alert = v1::AlertReceived {
            alert_id: record.id.clone(),
            title: record.title.clone(),
            description: record.description.clone(),
            severity: record.severity,
            category: record.category.clone(),
            labels: record.labels.clone().into_iter().collect(),
            source: record.source.clone(),
            dedup_key: record.dedup_key.clone(),
            received_at: Some(firebreak_proto::timestamp(received_at)),
        };
        let event = outbox_event(
            streams::ALERTS,
            "alerts.received",
            Payload::AlertReceived(alert.clone()),
        );
        self.store
            .insert_alert(&record, &event)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "storing an alert failed");
                ErrorCode::Unavailable.status(format!("alert not stored: {e}"))
            })?;
        self.relay.wake();
        firebreak_telemetry::metrics().alerts_accepted.inc();
        Ok(alert)
    }
}

fn invalid(e: firebreak_domain::Error) -> Status {
    ErrorCode::InvalidArgument.status(e.to_string())
}

#[tonic::async_trait]
impl IntakeService for Intake {
    async fn raise_incident(
        &self,
        req: Request<v1::RaiseIncidentRequest>,
    ) -> Result<Response<v1::RaiseIncidentResponse>, Status> {
        let a = req
            .into_inner()
            .alert
            .ok_or_else(|| ErrorCode::InvalidArgument.status("invalid alert: missing"))?;
        let alert = self
            .accept(SignalInput {
                title: a.title,
                description: a.description,
                severity: a.severity,
                category: a.category,
                labels: a.labels.into_iter().collect(),
                source: a.source,
                dedup_key: a.dedup_key,
            })
            .await?;
        let alert_id = alert.alert_id.clone();
        let mut triage = self.triage.clone();
        let mut call = Request::new(v1::IngestAlertRequest { alert: Some(alert) });
        call.set_timeout(Duration::from_secs(5));
        // The alert is stored: whatever triage answers, the caller's signal is accepted.
        let (incident_id, deduplicated) = match triage.ingest_alert(call).await {
            Ok(r) => {
                let r = r.into_inner();
                (r.incident_id, r.deduplicated)
            }
            Err(status) => {
                tracing::warn!(%alert_id, error = %status, "triage unreachable; the alerts event will open the incident");
                (String::new(), false)
            }
        };
        Ok(Response::new(v1::RaiseIncidentResponse {
            alert_id,
            incident_id,
            deduplicated,
        }))
    }
}
