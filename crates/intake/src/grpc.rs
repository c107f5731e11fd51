//! Intake's gRPC services: `IntakeService` (raise one, raise a batch, resolve) and
//! `IntegrationService` (create, list, delete integrations).

use std::time::Duration;

use firebreak_domain::SignalInput;
use firebreak_proto::v1::{
    self,
    intake_service_server::{IntakeService, IntakeServiceServer},
    integration_service_server::{IntegrationService, IntegrationServiceServer},
};
use tonic::{Request, Response, Status};

use crate::edge::InvalidProtobuf;
use crate::ingest::received_message;
use crate::integrations::{Listed, bearer_token};
use crate::{
    Error, Incoming, Intake, Integration, IntegrationKind, SignalAction, SignalResult, Source,
};

impl Intake {
    /// The gRPC `IntakeService`.
    pub fn grpc(&self) -> InvalidProtobuf<IntakeServiceServer<Self>> {
        InvalidProtobuf(IntakeServiceServer::new(self.clone()))
    }

    /// The gRPC `IntegrationService`.
    pub fn integrations_grpc(&self) -> InvalidProtobuf<IntegrationServiceServer<IntegrationApi>> {
        InvalidProtobuf(IntegrationServiceServer::new(IntegrationApi {
            intake: self.clone(),
        }))
    }

    /// Who calls over gRPC: an API token the access layer verified, an integration key in
    /// the bearer header, or (where no access layer runs) nobody in particular.
    fn grpc_caller<T>(&self, req: &Request<T>) -> Result<GrpcCaller, Status> {
        if firebreak_proto::access::caller(req).is_some() {
            return Ok(GrpcCaller::Token);
        }
        let Some(value) = req.metadata().get("authorization") else {
            return Ok(GrpcCaller::Anonymous);
        };
        let token = value.to_str().map(bearer_token).unwrap_or_default();
        // A source that keeps presenting wrong keys is held back before its key is looked at.
        let source = firebreak_proto::access::remote_addr(req).map(|a| a.ip());
        let now = self.clock.now();
        self.registry
            .admit_source(source, now)
            .and_then(|()| {
                let found = self.registry.authenticate(token, IntegrationKind::Grpc);
                self.registry.note(source, now, found)
            })
            .map(GrpcCaller::Key)
            .map_err(|e| Error::from(e).into())
    }

    async fn ingest_grpc(
        &self,
        caller: &GrpcCaller,
        batch: Vec<Incoming>,
        idempotency_key: &str,
    ) -> Result<Vec<SignalResult>, Status> {
        // An integration keeps to its rate; a verified token is bounded by the in-flight cap
        // alone; keyless callers share the anonymous budget.
        let _permit = match caller {
            GrpcCaller::Key(i) => self.admit_for(i, batch.len()),
            GrpcCaller::Token => self.admit(),
            GrpcCaller::Anonymous => self.admit_anonymous(batch.len()),
        }
        .map_err(Error::from)?;
        let caller = caller.integration();
        let source = Source {
            integration: caller.map_or("grpc", |i| i.name.as_str()),
            auto_resolve: caller.is_none_or(|i| i.auto_resolve),
        };
        let key = match idempotency_key.trim() {
            "" => None,
            k if k.len() > 255 => {
                return Err(Error::Invalid(
                    "invalid idempotency_key: longer than 255 bytes".into(),
                )
                .into());
            }
            k => Some(k),
        };
        Ok(self.ingest(source, batch, key).await.map_err(Error::from)?)
    }
}

fn trigger(a: v1::AlertInput, integration: Option<&Integration>) -> Incoming {
    let category = match (a.category.trim(), integration) {
        ("", Some(i)) => i.category.clone(),
        _ => a.category,
    };
    Incoming {
        action: SignalAction::Trigger,
        alert_key: a.alert_key,
        input: SignalInput {
            title: a.title,
            description: a.description,
            severity: firebreak_proto::level(a.severity),
            category,
            labels: a.labels.into_iter().collect(),
            source: a.source,
            dedup_key: a.dedup_key,
        },
        annotations: Default::default(),
        truncated: 0,
    }
}

/// Who raises alerts over gRPC.
enum GrpcCaller {
    /// An integration, by its key.
    Key(Integration),
    /// A person or account, by an API token the access layer verified.
    Token,
    /// No credentials (only where no access layer runs: a service's own tests).
    Anonymous,
}

impl GrpcCaller {
    fn integration(&self) -> Option<&Integration> {
        match self {
            Self::Key(i) => Some(i),
            Self::Token | Self::Anonymous => None,
        }
    }
}

#[tonic::async_trait]
impl IntakeService for Intake {
    async fn raise_incident(
        &self,
        req: Request<v1::RaiseIncidentRequest>,
    ) -> Result<Response<v1::RaiseIncidentResponse>, Status> {
        let caller = self.grpc_caller(&req)?;
        let req = req.into_inner();
        let a = req
            .alert
            .ok_or_else(|| Error::Invalid("invalid alert: missing".into()))?;
        let mut outcomes = self
            .ingest_grpc(
                &caller,
                vec![trigger(a, caller.integration())],
                &req.idempotency_key,
            )
            .await?;
        let outcome = outcomes.remove(0);
        if let Some(error) = outcome.error {
            return Err(Error::Invalid(error).into());
        }
        // Silenced: stored, and triage never hears of it.
        if let Some(silence) = outcome.silenced_by {
            return Ok(Response::new(v1::RaiseIncidentResponse {
                alert_id: outcome.alert_id,
                silenced_by: silence,
                ..Default::default()
            }));
        }
        // A repeat or a retried call: the alert is stored already; read it back for triage.
        let alert = match outcome.received {
            Some(a) => a,
            None => {
                let stored = self
                    .store
                    .alert(&outcome.alert_id)
                    .await
                    .map_err(Error::from)?
                    .ok_or_else(|| Error::AlertGone(outcome.alert_id.clone()))?;
                received_message(&stored, 0)
            }
        };
        let alert_id = alert.alert_id.clone();
        let mut triage = self.triage.clone();
        let mut call =
            Request::new(firebreak_proto::internal::v1::IngestAlertRequest { alert: Some(alert) });
        call.set_timeout(Duration::from_secs(5));
        if let Ok(traceparent) = firebreak_telemetry::trace::outgoing().parse() {
            call.metadata_mut().insert("traceparent", traceparent);
        }
        // The alert is stored: whatever triage answers, the caller's signal is accepted.
        let (incident_id, deduplicated, grouped_by) = match triage.ingest_alert(call).await {
            Ok(r) => {
                let r = r.into_inner();
                (
                    r.incident_id,
                    r.deduplicated || outcome.duplicate,
                    r.grouped_by,
                )
            }
            Err(status) => {
                tracing::warn!(%alert_id, error = %status, "triage unreachable; the alerts event will open the incident");
                (String::new(), outcome.duplicate, String::new())
            }
        };
        Ok(Response::new(v1::RaiseIncidentResponse {
            alert_id,
            incident_id,
            deduplicated,
            silenced_by: String::new(),
            grouped_by,
        }))
    }

    async fn raise_alerts(
        &self,
        req: Request<v1::RaiseAlertsRequest>,
    ) -> Result<Response<v1::RaiseAlertsResponse>, Status> {
        let caller = self.grpc_caller(&req)?;
        let req = req.into_inner();
        let max = self.max_alerts_per_call;
        if req.alerts.is_empty() || req.alerts.len() > max {
            return Err(Error::Invalid(format!(
                "invalid alerts: a batch holds 1 to {max} alerts, not {}; split it",
                req.alerts.len()
            ))
            .into());
        }
        let batch = req
            .alerts
            .into_iter()
            .map(|a| trigger(a, caller.integration()))
            .collect();
        let outcomes = self
            .ingest_grpc(&caller, batch, &req.idempotency_key)
            .await?;
        Ok(Response::new(v1::RaiseAlertsResponse {
            results: outcomes
                .into_iter()
                .map(|o| v1::AlertResult {
                    alert_id: o.alert_id,
                    error: o.error.unwrap_or_default(),
                    duplicate: o.duplicate,
                    silenced_by: o.silenced_by.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn resolve_alert(
        &self,
        req: Request<v1::ResolveAlertRequest>,
    ) -> Result<Response<v1::ResolveAlertResponse>, Status> {
        let caller = self.grpc_caller(&req)?;
        let req = req.into_inner();
        let item = Incoming {
            action: SignalAction::Resolve,
            alert_key: req.alert_key,
            input: SignalInput::default(),
            annotations: Default::default(),
            truncated: 0,
        };
        let mut outcomes = self
            .ingest_grpc(&caller, vec![item], &req.idempotency_key)
            .await?;
        let outcome = outcomes.remove(0);
        if let Some(error) = outcome.error {
            return Err(Error::Invalid(error).into());
        }
        Ok(Response::new(v1::ResolveAlertResponse {
            alert_id: if outcome.duplicate {
                String::new()
            } else {
                outcome.alert_id
            },
        }))
    }
}

/// The gRPC face of integrations.
pub struct IntegrationApi {
    intake: Intake,
}

/// An integration on the wire with `key` as given: the whole key once, when it is created;
/// masked when listed. The signing secret is never sent.
fn integration_proto(i: &Integration, declared: bool, key: String) -> v1::Integration {
    v1::Integration {
        name: i.name.clone(),
        integration_kind: wire_kind(i.kind) as i32,
        key,
        declared,
    }
}

/// An integration's kind on the wire.
fn wire_kind(kind: IntegrationKind) -> v1::IntegrationKind {
    match kind {
        IntegrationKind::Alertmanager => v1::IntegrationKind::Alertmanager,
        IntegrationKind::Pagerduty => v1::IntegrationKind::Pagerduty,
        IntegrationKind::Grpc => v1::IntegrationKind::Grpc,
    }
}

/// A request's integration kind: required; unspecified or unknown is INVALID_ARGUMENT naming
/// `integration_kind`.
fn integration_kind(value: i32) -> Result<IntegrationKind, Error> {
    match firebreak_proto::enum_field::<v1::IntegrationKind>("integration_kind", value)
        .map_err(|e| Error::Invalid(e.to_string()))?
    {
        Some(v1::IntegrationKind::Alertmanager) => Ok(IntegrationKind::Alertmanager),
        Some(v1::IntegrationKind::Pagerduty) => Ok(IntegrationKind::Pagerduty),
        Some(v1::IntegrationKind::Grpc) => Ok(IntegrationKind::Grpc),
        None | Some(v1::IntegrationKind::Unspecified) => Err(Error::Invalid(
            "invalid integration_kind: alertmanager, pagerduty or grpc is required".into(),
        )),
    }
}

/// The page tokens' list name (`firebreak_proto::page`).
const INTEGRATIONS: &str = "integrations";

#[tonic::async_trait]
impl IntegrationService for IntegrationApi {
    async fn create_integration(
        &self,
        req: Request<v1::CreateIntegrationRequest>,
    ) -> Result<Response<v1::CreateIntegrationResponse>, Status> {
        let req = req.into_inner();
        let kind = integration_kind(req.integration_kind)?;
        let integration = Integration {
            signing_secret: Some(req.signing_secret)
                .filter(|s| !s.is_empty())
                .map(crate::Secret::new),
            ..Integration::generated(req.name.trim(), kind)
        };
        integration.validate().map_err(Error::Invalid)?;
        let registry = &self.intake.registry;
        if registry
            .all()
            .iter()
            .any(|l| l.integration.name == integration.name)
        {
            return Err(Error::IntegrationExists(integration.name).into());
        }
        let now = self.intake.clock.now();
        let record = registry
            .record(&integration, now)
            .map_err(|_| Error::NoSecretsKey)?;
        self.intake
            .store
            .create_integration(&record)
            .await
            .map_err(|e| match e {
                // Another call created it since the check above.
                firebreak_storage::Error::Conflict(_) => {
                    Error::IntegrationExists(integration.name.clone())
                }
                e => Error::Storage(e),
            })?;
        registry.add_runtime(&integration, &record);
        Ok(Response::new(v1::CreateIntegrationResponse {
            integration: Some(integration_proto(
                &integration,
                false,
                integration.key.expose().to_owned(),
            )),
        }))
    }

    async fn list_integrations(
        &self,
        req: Request<v1::ListIntegrationsRequest>,
    ) -> Result<Response<v1::ListIntegrationsResponse>, Status> {
        let req = req.into_inner();
        let after = firebreak_proto::page::cursor(INTEGRATIONS, &req.page_token)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let mut all: Vec<v1::Integration> = self
            .intake
            .registry
            .all()
            .into_iter()
            .map(|l: Listed| integration_proto(&l.integration, l.declared, l.masked_key))
            .collect();
        // Names are unique across declared and run-time integrations: by name is a stable
        // order to page in.
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (integrations, next_page_token) = firebreak_proto::page::in_memory(
            INTEGRATIONS,
            all,
            |i| i.name.clone(),
            after,
            firebreak_proto::page::list_size(req.page_size),
            |i| i.name.clone(),
        );
        Ok(Response::new(v1::ListIntegrationsResponse {
            integrations,
            next_page_token,
        }))
    }

    async fn delete_integration(
        &self,
        req: Request<v1::DeleteIntegrationRequest>,
    ) -> Result<Response<v1::DeleteIntegrationResponse>, Status> {
        let name = req.into_inner().name;
        let registry = &self.intake.registry;
        if registry.is_declared(&name) {
            return Err(Error::IntegrationDeclared(name).into());
        }
        let deleted = self
            .intake
            .store
            .delete_integration(&name)
            .await
            .map_err(Error::from)?;
        if !deleted {
            return Err(Error::IntegrationNotFound(name).into());
        }
        registry.remove_runtime(&name);
        Ok(Response::new(v1::DeleteIntegrationResponse {}))
    }

    async fn get_silenced_counts(
        &self,
        req: Request<v1::GetSilencedCountsRequest>,
    ) -> Result<Response<v1::GetSilencedCountsResponse>, Status> {
        let req = req.into_inner();
        let by = firebreak_proto::grouping("group_by", req.group_by)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        // Between the epoch and the year 9999: a hostile timestamp cannot overflow a
        // conversion.
        let since = match &req.since {
            Some(t)
                if (0..=253_402_300_799).contains(&t.seconds)
                    && (0..1_000_000_000).contains(&t.nanos) =>
            {
                firebreak_proto::micros(t)
            }
            Some(_) => {
                return Err(Error::Invalid(
                    "invalid since: outside 1970-01-01 to 9999-12-31".into(),
                )
                .into());
            }
            None => {
                return Err(
                    Error::Invalid("invalid since: the window's start is required".into()).into(),
                );
            }
        };
        let counts = self
            .intake
            .store
            .silenced_tally(since)
            .await
            .map_err(Error::from)?;
        let counts = firebreak_domain::report::silenced_by_group(by, &counts)
            .into_iter()
            .map(|(key, count)| v1::SilencedGroupCount { key, count })
            .collect();
        Ok(Response::new(v1::GetSilencedCountsResponse { counts }))
    }
}
