//! Intake's gRPC services: `IntakeService` (raise one, raise a batch, resolve) and
//! `IntegrationService` (create, list, delete integrations).

use std::time::Duration;

use firebreak_domain::SignalInput;
use firebreak_proto::ErrorCode;
use firebreak_proto::v1::{
    self,
    intake_service_server::{IntakeService, IntakeServiceServer},
    integration_service_server::{IntegrationService, IntegrationServiceServer},
};
use tonic::{Request, Response, Status};

use crate::edge::{InvalidProtobuf, exhausted};
use crate::ingest::received_message;
use crate::integrations::{AuthError, bearer_token, to_record};
use crate::{Action, Incoming, IngestError, Intake, Integration, IntegrationKind, Outcome, Source};

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

    /// The integration of a gRPC caller: the one its bearer token names, else the
    /// unauthenticated `grpc` source.
    fn grpc_caller<T>(&self, req: &Request<T>) -> Result<Option<Integration>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Ok(None);
        };
        let token = value.to_str().map(bearer_token).unwrap_or_default();
        self.registry
            .authenticate(token, IntegrationKind::Grpc)
            .map(Some)
            .map_err(auth_status)
    }

    async fn ingest_grpc(
        &self,
        caller: Option<&Integration>,
        batch: Vec<Incoming>,
        idempotency_key: &str,
    ) -> Result<Vec<Outcome>, Status> {
        let _permit = match caller {
            Some(i) => self.admit_for(i, batch.len()),
            None => self.admit_anonymous(batch.len()),
        }
        .map_err(ingest_status)?;
        let source = Source {
            integration: caller.map_or("grpc", |i| i.name.as_str()),
            auto_resolve: caller.is_none_or(|i| i.auto_resolve),
        };
        let key = match idempotency_key.trim() {
            "" => None,
            k if k.len() > 255 => {
                return Err(ErrorCode::InvalidArgument
                    .status("invalid idempotency_key: longer than 255 bytes"));
            }
            k => Some(k),
        };
        self.ingest(source, batch, key).await.map_err(ingest_status)
    }
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::WrongKind { .. } => ErrorCode::PermissionDenied.status(e.to_string()),
        AuthError::Missing | AuthError::Unknown => ErrorCode::Unauthenticated.status(e.to_string()),
    }
}

fn ingest_status(e: IngestError) -> Status {
    match e.retry_after() {
        Some(delay) => exhausted(e.to_string(), delay),
        None => ErrorCode::Unavailable.status(e.to_string()),
    }
}

fn trigger(a: v1::AlertInput, integration: Option<&Integration>) -> Incoming {
    let category = match (a.category.trim(), integration) {
        ("", Some(i)) => i.category.clone(),
        _ => a.category,
    };
    Incoming {
        action: Action::Trigger,
        alert_key: a.alert_key,
        input: SignalInput {
            title: a.title,
            description: a.description,
            severity: a.severity,
            category,
            labels: a.labels.into_iter().collect(),
            source: a.source,
            dedup_key: a.dedup_key,
        },
        annotations: Default::default(),
        truncated: 0,
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
            .ok_or_else(|| ErrorCode::InvalidArgument.status("invalid alert: missing"))?;
        let mut outcomes = self
            .ingest_grpc(
                caller.as_ref(),
                vec![trigger(a, caller.as_ref())],
                &req.idempotency_key,
            )
            .await?;
        let outcome = outcomes.remove(0);
        if let Some(error) = outcome.error {
            return Err(ErrorCode::InvalidArgument.status(error));
        }
        // A repeat or a retried call: the alert is stored already; read it back for triage.
        let alert = match outcome.received {
            Some(a) => a,
            None => {
                let stored = self
                    .store
                    .alert(&outcome.alert_id)
                    .await
                    .map_err(|e| ErrorCode::Unavailable.status(e.to_string()))?
                    .ok_or_else(|| ErrorCode::Internal.status("the stored alert is gone"))?;
                received_message(&stored, 0)
            }
        };
        let alert_id = alert.alert_id.clone();
        let mut triage = self.triage.clone();
        let mut call = Request::new(v1::IngestAlertRequest { alert: Some(alert) });
        call.set_timeout(Duration::from_secs(5));
        if let Ok(traceparent) = firebreak_telemetry::trace::outgoing().parse() {
            call.metadata_mut().insert("traceparent", traceparent);
        }
        // The alert is stored: whatever triage answers, the caller's signal is accepted.
        let (incident_id, deduplicated) = match triage.ingest_alert(call).await {
            Ok(r) => {
                let r = r.into_inner();
                (r.incident_id, r.deduplicated || outcome.duplicate)
            }
            Err(status) => {
                tracing::warn!(%alert_id, error = %status, "triage unreachable; the alerts event will open the incident");
                (String::new(), outcome.duplicate)
            }
        };
        Ok(Response::new(v1::RaiseIncidentResponse {
            alert_id,
            incident_id,
            deduplicated,
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
            return Err(ErrorCode::InvalidArgument.status(format!(
                "invalid alerts: a batch holds 1 to {max} alerts, not {}; split it",
                req.alerts.len()
            )));
        }
        let batch = req
            .alerts
            .into_iter()
            .map(|a| trigger(a, caller.as_ref()))
            .collect();
        let outcomes = self
            .ingest_grpc(caller.as_ref(), batch, &req.idempotency_key)
            .await?;
        Ok(Response::new(v1::RaiseAlertsResponse {
            results: outcomes
                .into_iter()
                .map(|o| v1::AlertResult {
                    alert_id: o.alert_id,
                    error: o.error.unwrap_or_default(),
                    duplicate: o.duplicate,
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
            action: Action::Resolve,
            alert_key: req.alert_key,
            input: SignalInput::default(),
            annotations: Default::default(),
            truncated: 0,
        };
        let mut outcomes = self
            .ingest_grpc(caller.as_ref(), vec![item], &req.idempotency_key)
            .await?;
        let outcome = outcomes.remove(0);
        if let Some(error) = outcome.error {
            return Err(ErrorCode::InvalidArgument.status(error));
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

fn integration_proto(i: &Integration, declared: bool, show_key: bool) -> v1::Integration {
    v1::Integration {
        name: i.name.clone(),
        kind: i.kind.as_str().into(),
        key: if show_key {
            i.key.clone()
        } else {
            format!("{}…", &i.key[..4.min(i.key.len())])
        },
        origin: if declared { "configuration" } else { "runtime" }.into(),
    }
}

#[tonic::async_trait]
impl IntegrationService for IntegrationApi {
    async fn create_integration(
        &self,
        req: Request<v1::CreateIntegrationRequest>,
    ) -> Result<Response<v1::CreateIntegrationResponse>, Status> {
        let req = req.into_inner();
        let kind = IntegrationKind::parse(req.kind.trim()).ok_or_else(|| {
            ErrorCode::InvalidArgument.status(format!(
                "invalid kind: {:?} is not alertmanager, pagerduty or grpc",
                req.kind
            ))
        })?;
        let integration = Integration::generated(req.name.trim(), kind);
        integration
            .validate()
            .map_err(|e| ErrorCode::InvalidArgument.status(e))?;
        let registry = &self.intake.registry;
        if registry
            .all()
            .iter()
            .any(|(i, _)| i.name == integration.name)
        {
            return Err(
                ErrorCode::AlreadyExists.status(format!("integration {} exists", integration.name))
            );
        }
        let now = (firebreak_domain::now().unix_timestamp_nanos() / 1_000) as i64;
        self.intake
            .store
            .create_integration(&to_record(&integration, now))
            .await
            .map_err(|e| match e {
                firebreak_storage::Error::Conflict(m) => ErrorCode::AlreadyExists.status(m),
                e => ErrorCode::Unavailable.status(e.to_string()),
            })?;
        registry.add_runtime(integration.clone());
        Ok(Response::new(v1::CreateIntegrationResponse {
            integration: Some(integration_proto(&integration, false, true)),
        }))
    }

    async fn list_integrations(
        &self,
        _: Request<v1::ListIntegrationsRequest>,
    ) -> Result<Response<v1::ListIntegrationsResponse>, Status> {
        Ok(Response::new(v1::ListIntegrationsResponse {
            integrations: self
                .intake
                .registry
                .all()
                .iter()
                .map(|(i, declared)| integration_proto(i, *declared, false))
                .collect(),
        }))
    }

    async fn delete_integration(
        &self,
        req: Request<v1::DeleteIntegrationRequest>,
    ) -> Result<Response<v1::DeleteIntegrationResponse>, Status> {
        let name = req.into_inner().name;
        let registry = &self.intake.registry;
        if registry.is_declared(&name) {
            return Err(ErrorCode::FailedPrecondition.status(format!(
                "integration {name} is declared in the configuration; remove it there"
            )));
        }
        let deleted = self
            .intake
            .store
            .delete_integration(&name)
            .await
            .map_err(|e| ErrorCode::Unavailable.status(e.to_string()))?;
        if !deleted {
            return Err(ErrorCode::NotFound.status(format!("integration {name} not found")));
        }
        registry.remove_runtime(&name);
        Ok(Response::new(v1::DeleteIntegrationResponse {}))
    }
}
