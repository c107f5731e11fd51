//! The gRPC `RunbookService`: runbooks, runs, approvals.

use firebreak_proto::ErrorCode;
use firebreak_proto::v1::{self, runbook_service_server::RunbookService};
use firebreak_storage::{JournalRecord, RunRecord};
use tonic::{Request, Response, Status};

use crate::Orchestration;
use crate::approvals::{DecideError, Decision};
use firebreak_proto::Message;
use firebreak_runbook::OnTimeout;
use firebreak_runbook::{Outcome, Simulator, simulate};

const STATES: &[&str] = &[
    "pending",
    "running",
    "sleeping",
    "waiting_approval",
    "succeeded",
    "failed",
    "rejected",
];

/// Dry runs simulating at once in this process; more are refused (`RESOURCE_EXHAUSTED`), so
/// dry runs cannot take the blocking threads live runs need.
static DRY_RUNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The largest incident a dry run takes, encoded.
const MAX_DRY_RUN_INCIDENT: usize = 256 * 1024;

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
        phase: r.phase.clone(),
        plan: if r.plan.is_null() {
            String::new()
        } else {
            r.plan.to_string()
        },
        wake_at: r.wake_at.map(firebreak_proto::timestamp),
    }
}

fn decide_status(e: DecideError) -> Status {
    match e {
        DecideError::NotFound(_) => ErrorCode::NotFound.status(e.to_string()),
        DecideError::NotWaiting(..) => ErrorCode::FailedPrecondition.status(e.to_string()),
        DecideError::Forbidden(_) => ErrorCode::PermissionDenied.status(e.to_string()),
        DecideError::Storage(e) => unavailable(e),
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
        if req.comment.len() > 4096 {
            return Err(ErrorCode::InvalidArgument.status("comment is longer than 4096 bytes"));
        }
        let actor = match req.actor.trim() {
            "" => "user:anonymous",
            a => a,
        };
        let decision = Decision {
            approved,
            actor,
            comment: req.comment.trim(),
            by_timeout: false,
        };
        self.orch
            .decide(&req.run_id, decision)
            .await
            .map_err(decide_status)?;
        Ok(Response::new(v1::DecideApprovalResponse {
            run: Some(self.load(&req.run_id).await?),
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
                    approval_required: m.approval.actions.clone(),
                    timeout_seconds: m.timeout_seconds,
                    mode: match m.mode {
                        firebreak_runbook::Mode::Auto => "auto".into(),
                        firebreak_runbook::Mode::PlanApprove => "plan-approve".into(),
                    },
                    approver_role: m.approval.role.clone(),
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
        let state = match req.state.trim() {
            "" => None,
            s if STATES.contains(&s) => Some(s),
            s => {
                return Err(ErrorCode::InvalidArgument.status(format!(
                    "unknown run state {s:?}; known: {}",
                    STATES.join(", ")
                )));
            }
        };
        let runs = self
            .orch
            .store
            .runs(incident.as_deref(), state, limit)
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

    async fn dry_run(
        &self,
        req: Request<v1::DryRunRequest>,
    ) -> Result<Response<v1::DryRunResponse>, Status> {
        let req = req.into_inner();
        if req.runbook.len() > 128 {
            return Err(ErrorCode::InvalidArgument.status("runbook is longer than 128 bytes"));
        }
        let incident = req
            .incident
            .ok_or_else(|| ErrorCode::InvalidArgument.status("incident is required"))?;
        if incident.encoded_len() > MAX_DRY_RUN_INCIDENT {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "incident is larger than {MAX_DRY_RUN_INCIDENT} bytes"
            )));
        }
        let runbook = self
            .orch
            .catalog
            .get(&req.runbook)
            .ok_or_else(|| {
                ErrorCode::NotFound
                    .status(format!("no runbook named {:?} on this server", req.runbook))
            })?
            .clone();
        // The parameters a run would get: the configuration's overrides, checked at start-up.
        let params = runbook
            .params(self.orch.options.params.get(&req.runbook))
            .map_err(|e| ErrorCode::FailedPrecondition.status(e))?;
        let _permit = DRY_RUNS.try_acquire().map_err(|_| {
            ErrorCode::ResourceExhausted.status("too many dry runs at once; retry shortly")
        })?;
        let input = crate::incident_input(&incident);
        let limits = self.orch.options.limits.clone();
        let sim = tokio::task::spawn_blocking(move || {
            simulate(
                &runbook,
                input,
                params,
                Simulator::new(Vec::new(), Vec::new()),
                &limits,
            )
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a dry run's thread failed");
            ErrorCode::Internal.status("the dry run's thread failed")
        })?;
        let (outcome, error) = match sim.outcome {
            Outcome::Succeeded { .. } => ("succeeded", String::new()),
            Outcome::Failed(e) => ("failed", e),
            Outcome::Waiting { .. } => ("waiting", String::new()),
            Outcome::Sleeping { .. } => ("sleeping", String::new()),
        };
        Ok(Response::new(v1::DryRunResponse {
            outcome: outcome.into(),
            error,
            steps: sim
                .steps
                .iter()
                .map(|s| v1::PlannedStep {
                    seq: s.seq,
                    action: s.action.clone(),
                    args: s.args.to_string(),
                    result: s.result.to_string(),
                })
                .collect(),
            log: sim.log,
        }))
    }

    async fn list_approvals(
        &self,
        _: Request<v1::ListApprovalsRequest>,
    ) -> Result<Response<v1::ListApprovalsResponse>, Status> {
        let store = &self.orch.store;
        let mut runs = store
            .runs(None, Some("waiting_approval"), 1000)
            .await
            .map_err(unavailable)?;
        runs.reverse();
        let mut approvals = Vec::with_capacity(runs.len());
        for run in runs {
            let approval = self
                .orch
                .catalog
                .get(&run.runbook)
                .map(|rb| rb.manifest.approval.clone())
                .unwrap_or_default();
            let (seq, prompt, requested_at) = if run.phase == "plan" {
                let steps = run.plan.as_array().map_or(0, Vec::len);
                (
                    0,
                    format!("apply the plan of {steps} step(s)?"),
                    run.started_at,
                )
            } else {
                let journal = store.journal(&run.id).await.map_err(unavailable)?;
                match journal.iter().find(|j| j.status == "waiting") {
                    Some(j) => (
                        j.seq,
                        j.args["prompt"].as_str().unwrap_or_default().to_owned(),
                        j.at,
                    ),
                    None => continue,
                }
            };
            approvals.push(v1::PendingApproval {
                run_id: run.id.clone(),
                runbook: run.runbook.clone(),
                incident_id: run.incident_id.clone(),
                seq,
                prompt,
                role: approval.role,
                requested_at: Some(firebreak_proto::timestamp(requested_at)),
                expires_at: run.wake_at.map(firebreak_proto::timestamp),
                on_timeout: match approval.on_timeout {
                    OnTimeout::Approve => "approve".into(),
                    OnTimeout::Reject => "reject".into(),
                },
            });
        }
        Ok(Response::new(v1::ListApprovalsResponse { approvals }))
    }
}
