//! The gRPC `RunbookService`: runbooks, runs, approvals.

use firebreak_proto::ErrorCode;
use firebreak_proto::v1::{self, runbook_service_server::RunbookService};
use firebreak_storage::{JournalRecord, RunRecord};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::Orchestration;
use crate::executor::{now_micros, run_event};

/// The gRPC face of orchestration.
pub struct RunbookApi {
    pub(crate) orch: Orchestration,
}

fn unavailable(e: firebreak_storage::Error) -> Status {
    tracing::error!(error = %e, "orchestration storage failed");
    ErrorCode::Unavailable.status(e.to_string())
}

fn run_to_proto(r: &RunRecord, journal: &[JournalRecord], log: Vec<String>) -> v1::Run {
    v1::Run {
        id: r.id.clone(),
        runbook: r.runbook.clone(),
        incident_id: r.incident_id.clone(),
        state: r.state.clone(),
        live: r.live,
        error: r.error.clone(),
        started_at: Some(firebreak_proto::timestamp(r.started_at)),
        finished_at: r.finished_at.map(firebreak_proto::timestamp),
        actions: journal
            .iter()
            .map(|j| v1::RunAction {
                seq: j.seq,
                action: j.action.clone(),
                args: j.args.to_string(),
                result: j.result.to_string(),
                status: j.status.clone(),
                idempotency_key: j.idempotency_key.clone(),
                at: Some(firebreak_proto::timestamp(j.at)),
            })
            .collect(),
        log,
    }
}

impl RunbookApi {
    async fn load(&self, id: &str) -> Result<v1::Run, Status> {
        firebreak_domain::RunId::parse(id)
            .map_err(|e| ErrorCode::InvalidArgument.status(e.to_string()))?;
        let store = &self.orch.store;
        let run = store
            .run(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ErrorCode::NotFound.status(format!("run {id} not found")))?;
        let journal = store.journal(id).await.map_err(unavailable)?;
        let log = store.log(id).await.map_err(unavailable)?;
        Ok(run_to_proto(&run, &journal, log))
    }

    async fn decide(
        &self,
        req: v1::DecideApprovalRequest,
        approved: bool,
    ) -> Result<Response<v1::DecideApprovalResponse>, Status> {
        firebreak_domain::RunId::parse(&req.run_id)
            .map_err(|e| ErrorCode::InvalidArgument.status(e.to_string()))?;
        let store = &self.orch.store;
        let run = store
            .run(&req.run_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ErrorCode::NotFound.status(format!("run {} not found", req.run_id)))?;
        if run.state != "waiting_approval" {
            return Err(ErrorCode::FailedPrecondition.status(format!(
                "run {} is {}, not waiting for approval",
                run.id, run.state
            )));
        }
        let journal = store.journal(&run.id).await.map_err(unavailable)?;
        let Some(waiting) = journal.iter().find(|j| j.status == "waiting") else {
            return Err(ErrorCode::FailedPrecondition.status("the run has no pending approval"));
        };
        let by = match req.actor.trim() {
            "" => "user:anonymous".to_owned(),
            a => a.to_owned(),
        };
        let mut decided = waiting.clone();
        decided.status = "done".into();
        decided.result = json!({ "approved": approved, "by": by, "comment": req.comment });
        decided.at = now_micros();
        let change = if approved { "approved" } else { "rejected" };
        let detail = format!("{by}: {}", req.comment);
        store
            .put_journal(&decided, &[run_event(&run, change, "", &detail)])
            .await
            .map_err(unavailable)?;
        store
            .set_run_state(&run.id, "pending", None, &[])
            .await
            .map_err(unavailable)?;
        self.orch.relay.wake();
        self.orch.wake.notify_one();
        Ok(Response::new(v1::DecideApprovalResponse {
            run: Some(self.load(&run.id).await?),
        }))
    }
}

#[tonic::async_trait]
impl RunbookService for RunbookApi {
    async fn list_runbooks(
        &self,
        _: Request<v1::ListRunbooksRequest>,
    ) -> Result<Response<v1::ListRunbooksResponse>, Status> {
        let runbooks = self
            .orch
            .catalog
            .all()
            .iter()
            .map(|rb| {
                let m = &rb.manifest;
                v1::Runbook {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    categories: m.matches.categories.clone(),
                    min_severity: m.matches.severity.min,
                    max_severity: m.matches.severity.max,
                    capabilities: m.capabilities.clone(),
                    approval_required: Vec::new(),
                    timeout_seconds: m.timeout_seconds,
                }
            })
            .collect();
        Ok(Response::new(v1::ListRunbooksResponse { runbooks }))
    }

    async fn list_runs(
        &self,
        req: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let req = req.into_inner();
        let incident = match req.incident_id.trim() {
            "" => None,
            id => Some(
                firebreak_domain::IncidentId::parse(id)
                    .map_err(|e| ErrorCode::InvalidArgument.status(e.to_string()))?
                    .to_string(),
            ),
        };
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(1000)
        };
        let runs = self
            .orch
            .store
            .runs(incident.as_deref(), limit)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(runs.len());
        for r in &runs {
            let journal = self.orch.store.journal(&r.id).await.map_err(unavailable)?;
            out.push(run_to_proto(r, &journal, Vec::new()));
        }
        Ok(Response::new(v1::ListRunsResponse { runs: out }))
    }

    async fn get_run(
        &self,
        req: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        Ok(Response::new(v1::GetRunResponse {
            run: Some(self.load(&req.into_inner().id).await?),
        }))
    }

    async fn approve(
        &self,
        req: Request<v1::DecideApprovalRequest>,
    ) -> Result<Response<v1::DecideApprovalResponse>, Status> {
        self.decide(req.into_inner(), true).await
    }

    async fn reject(
        &self,
        req: Request<v1::DecideApprovalRequest>,
    ) -> Result<Response<v1::DecideApprovalResponse>, Status> {
        self.decide(req.into_inner(), false).await
    }
}
