//! The gRPC `RunbookService`: runbooks, runs, approvals.

use firebreak_proto::v1::{self, runbook_service_server::RunbookService};
use firebreak_storage::{JournalRecord, RunQuery, RunRecord};
use tonic::{Request, Response, Status};

use crate::Orchestration;
use crate::approvals::Decision;
use crate::error::Error;
use crate::limits::{
    MAX_ACTOR, MAX_COMMENT, MAX_DOCUMENT, MAX_LISTED_JOURNAL, MAX_NAME, MAX_PAGE_BYTES, MAX_TEXT,
    checked, clip, clip_json, clip_lines,
};
use firebreak_domain::{RunPhase, RunState};
use firebreak_proto::page::{self, fit};
use firebreak_proto::{Message, WireState};
use firebreak_runbook::OnTimeout;
use firebreak_runbook::{Outcome, Simulator, simulate};
use tokio_stream::StreamExt as _;

/// The page tokens' list names (`firebreak_proto::page`).
const RUNBOOKS: &str = "runbooks";
const RUNS: &str = "runs";
const APPROVALS: &str = "approvals";
const JOURNAL: &str = "journal";

/// Dry runs simulating at once in this process; more are refused (`RESOURCE_EXHAUSTED`), so
/// dry runs cannot take the blocking threads live runs need.
static DRY_RUNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// The largest incident a dry run takes, encoded.
const MAX_DRY_RUN_INCIDENT: usize = 256 * 1024;

/// The gRPC face of orchestration.
pub struct RunbookApi {
    pub(crate) orch: Orchestration,
}

/// The run as sent, without its journal (`actions`): free text clipped, log and plan only
/// when `full` (a list of runs, the first page of `GetRun`).
fn run_to_proto(r: &RunRecord, log: Vec<String>, full: bool) -> v1::Run {
    v1::Run {
        id: r.id.clone(),
        runbook: r.runbook.clone(),
        incident_id: r.incident_id.clone(),
        state: r.state.wire(),
        live: r.live,
        error: clip(&r.error, MAX_TEXT),
        started_at: Some(firebreak_proto::timestamp(r.started_at)),
        finished_at: r.finished_at.map(firebreak_proto::timestamp),
        actions: Vec::new(),
        log: if full {
            clip_lines(log, MAX_DOCUMENT).0
        } else {
            Vec::new()
        },
        phase: r.phase.wire(),
        plan: if r.plan.is_null() || !full {
            String::new()
        } else {
            clip_json(&r.plan, MAX_DOCUMENT)
        },
        wake_at: r.wake_at.map(firebreak_proto::timestamp),
        next_actions_page_token: String::new(),
    }
}

fn action_to_proto(j: &JournalRecord) -> v1::RunAction {
    v1::RunAction {
        seq: j.seq,
        action: j.action.clone(),
        args: clip_json(&j.args, MAX_DOCUMENT),
        result: clip_json(&j.result, MAX_DOCUMENT),
        status: j.status.wire(),
        idempotency_key: j.idempotency_key.clone(),
        at: Some(firebreak_proto::timestamp(j.at)),
    }
}

fn invalid_token() -> Error {
    Error::InvalidPageToken
}

/// The cursor a page token of `list` holds, read by `parse`; a token this list did not give
/// is INVALID_ARGUMENT naming `page_token`.
fn token_cursor<T>(
    list: &str,
    token: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Status> {
    match page::cursor(list, token).map_err(|_| invalid_token())? {
        None => Ok(None),
        Some(c) => Ok(Some(parse(&c).ok_or_else(invalid_token)?)),
    }
}

/// A page token of `list` naming the last run of a page (its id).
fn run_token(list: &str, token: &str) -> Result<Option<String>, Status> {
    token_cursor(list, token, |c| {
        firebreak_domain::RunId::parse(c)
            .ok()
            .map(|id| id.to_string())
    })
}

/// A runbook's mode on the wire.
fn wire_mode(mode: firebreak_runbook::Mode) -> v1::RunbookMode {
    match mode {
        firebreak_runbook::Mode::Auto => v1::RunbookMode::Auto,
        firebreak_runbook::Mode::PlanApprove => v1::RunbookMode::PlanApprove,
    }
}

/// An approval's fallback on the wire.
fn wire_on_timeout(on_timeout: OnTimeout) -> v1::ApprovalTimeoutAction {
    match on_timeout {
        OnTimeout::Approve => v1::ApprovalTimeoutAction::Approve,
        OnTimeout::Reject => v1::ApprovalTimeoutAction::Reject,
    }
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

/// Refuses an incident for a dry run holding NUL in any of its text, naming the field.
fn incident_text(incident: &v1::Incident) -> Result<(), Status> {
    for (field, text) in [
        ("incident.id", &incident.id),
        ("incident.title", &incident.title),
        ("incident.description", &incident.description),
        ("incident.category", &incident.category),
        ("incident.dedup_key", &incident.dedup_key),
        ("incident.source", &incident.source),
        ("incident.resolution_summary", &incident.resolution_summary),
        ("incident.root_cause", &incident.root_cause),
    ] {
        checked(field, text, MAX_DRY_RUN_INCIDENT)?;
    }
    for (k, v) in &incident.labels {
        checked("incident.labels", k, MAX_DRY_RUN_INCIDENT)?;
        checked("incident.labels", v, MAX_DRY_RUN_INCIDENT)?;
    }
    Ok(())
}

impl RunbookApi {
    /// A part of a run's journal: the entries after `after`, at most `limit`, within `budget`
    /// bytes encoded (at least one); with the token of the next part, empty at the end.
    async fn actions(
        &self,
        run_id: &str,
        after: u32,
        limit: u32,
        budget: usize,
    ) -> Result<(Vec<v1::RunAction>, String), Status> {
        let list = self
            .orch
            .store
            .journal_page(run_id, after, limit + 1, budget)
            .await
            .map_err(Error::from)?;
        let read: usize = list.iter().map(JournalRecord::wire_size).sum();
        let (actions, more) = fit(
            list.iter().map(action_to_proto).collect(),
            limit as usize,
            budget,
            read,
        );
        let token = page::next(JOURNAL, actions.last().map(|a| a.seq.to_string()), more);
        Ok((actions, token))
    }

    /// A run with one page of its journal: the first (with its log and plan) when `after` is
    /// 0, else the entries after `after`; the whole answer within [`MAX_PAGE_BYTES`].
    async fn load(&self, id: &str, after: u32, limit: u32) -> Result<v1::Run, Status> {
        firebreak_domain::RunId::parse(checked("id", id, 64)?).map_err(invalid)?;
        let store = &self.orch.store;
        let run = store
            .run(id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::RunNotFound(id.to_owned()))?;
        let full = after == 0;
        let log = if full {
            store.log(id).await.map_err(Error::from)?
        } else {
            Vec::new()
        };
        let mut out = run_to_proto(&run, log, full);
        let budget = MAX_PAGE_BYTES.saturating_sub(out.encoded_len() + 64);
        let (actions, token) = self.actions(id, after, limit, budget).await?;
        out.actions = actions;
        out.next_actions_page_token = token;
        Ok(out)
    }

    /// Approves or rejects `req`'s run (an `ApproveRequest`'s fields, which a
    /// `RejectRequest` shares), as `caller`.
    async fn decide(
        &self,
        caller: Option<firebreak_domain::access::Principal>,
        req: v1::ApproveRequest,
        approved: bool,
    ) -> Result<Option<v1::Run>, Status> {
        // The authenticated caller decides, with the roles it holds here; the request's
        // `actor` counts only where no access layer runs.
        firebreak_domain::RunId::parse(checked("run_id", &req.run_id, 64)?).map_err(invalid)?;
        let comment = checked("comment", req.comment.trim(), MAX_COMMENT)?;
        let actor = match &caller {
            Some(p) => p.actor(),
            None => match checked("actor", req.actor.trim(), MAX_ACTOR)? {
                "" => "user:anonymous".to_owned(),
                a => a.to_owned(),
            },
        };
        let decision = Decision {
            approved,
            actor: &actor,
            caller: caller.as_ref(),
            comment,
            by_timeout: false,
        };
        self.orch
            .decide(&req.run_id, decision)
            .await
            .map_err(Error::from)?;
        Ok(Some(self.load(&req.run_id, 0, 500).await?))
    }
}

type WatchRunsStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<v1::WatchRunsResponse, Status>> + Send>,
>;

/// The runs a `WatchRuns` call asks for, checked: an id of each kind at most, well formed;
/// a run that does not exist is NOT_FOUND.
async fn watch_scope(
    orch: &Orchestration,
    req: &v1::WatchRunsRequest,
) -> Result<crate::watch::Scope, Status> {
    use crate::watch::Scope;
    let run_id = checked("run_id", req.run_id.trim(), 64)?;
    let incident_id = checked("incident_id", req.incident_id.trim(), 64)?;
    match (run_id, incident_id) {
        ("", "") => Ok(Scope::All),
        (run, "") => {
            let id = firebreak_domain::RunId::parse(run)
                .map_err(invalid)?
                .to_string();
            if orch.store.run(&id).await.map_err(Error::from)?.is_none() {
                return Err(Error::RunNotFound(id).into());
            }
            Ok(Scope::Run(id))
        }
        ("", incident) => Ok(Scope::Incident(
            firebreak_domain::IncidentId::parse(incident)
                .map_err(invalid)?
                .to_string(),
        )),
        _ => Err(Error::Invalid("give run_id or incident_id, not both".into()).into()),
    }
}

#[tonic::async_trait]
impl RunbookService for RunbookApi {
    type WatchRunsStream = WatchRunsStream;

    async fn watch_runs(
        &self,
        req: Request<v1::WatchRunsRequest>,
    ) -> Result<Response<Self::WatchRunsStream>, Status> {
        let scope = watch_scope(&self.orch, req.get_ref()).await?;
        let permit = self
            .orch
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::WatchesBusy)?;
        // Subscribed before the history is read: nothing committed in between is missed.
        let bus = self
            .orch
            .bus
            .watch(firebreak_bus::streams::RUNBOOKS)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "watching the runbooks stream failed");
                Error::Bus(e)
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(crate::watch::OUTBOUND);
        tokio::spawn(crate::watch::follow(
            self.orch.store.clone(),
            scope,
            bus,
            tx,
            self.orch.stopping.clone(),
            permit,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|item| item.map(|p| v1::WatchRunsResponse { progress: Some(p) })),
        )))
    }

    async fn list_runbooks(
        &self,
        req: Request<v1::ListRunbooksRequest>,
    ) -> Result<Response<v1::ListRunbooksResponse>, Status> {
        let req = req.into_inner();
        let limit = page::list_size(req.page_size);
        let after = token_cursor(RUNBOOKS, &req.page_token, |c| Some(c.to_owned()))?;
        let mut runbooks: Vec<v1::Runbook> = self
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
                    min_severity: firebreak_proto::wire_level(m.matches.severity.min),
                    max_severity: firebreak_proto::wire_level(m.matches.severity.max),
                    capabilities: m.capabilities.clone(),
                    approval_required: m.approval.actions.clone(),
                    timeout_seconds: m.timeout_seconds,
                    run_mode: wire_mode(m.mode) as i32,
                    approver_role: m.approval.role.clone(),
                }
            })
            .collect();
        // The catalogue's names are unique: by name is a stable order to page in.
        runbooks.sort_by(|a, b| a.name.cmp(&b.name));
        let (runbooks, next_page_token) = page::in_memory(
            RUNBOOKS,
            runbooks,
            |r| r.name.clone(),
            after,
            limit,
            |r| r.name.clone(),
        );
        Ok(Response::new(v1::ListRunbooksResponse {
            runbooks,
            next_page_token,
        }))
    }

    async fn list_runs(
        &self,
        req: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let req = req.into_inner();
        let incident = match req.incident_id.trim() {
            "" => None,
            id => Some(
                firebreak_domain::IncidentId::parse(checked("incident_id", id, 64)?)
                    .map_err(invalid)?
                    .to_string(),
            ),
        };
        let limit = page::list_size(req.page_size);
        let state = RunState::field("state_filter", req.state_filter)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let after = run_token(RUNS, &req.page_token)?;
        let query = RunQuery {
            incident_id: incident.as_deref(),
            state,
            after: after.as_deref(),
            oldest_first: false,
        };
        // One more than asked: whether another page follows.
        let runs = self
            .orch
            .store
            .runs_page(&query, limit + 1, MAX_PAGE_BYTES)
            .await
            .map_err(Error::from)?;
        let read: usize = runs.iter().map(RunRecord::wire_size).sum();
        let mut more = runs.len() > limit as usize || read >= MAX_PAGE_BYTES;
        let mut out = Vec::new();
        let mut bytes = 0;
        // Each run with the first part of its journal, read only for the runs the page holds.
        for r in runs.iter().take(limit as usize) {
            let mut run = run_to_proto(r, Vec::new(), true);
            let (actions, token) = self.actions(&r.id, 0, 1000, MAX_LISTED_JOURNAL).await?;
            run.actions = actions;
            run.next_actions_page_token = token;
            let size = run.encoded_len() + 6;
            if !out.is_empty() && bytes + size > MAX_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            out.push(run);
        }
        if out.len() < runs.len() {
            more = true;
        }
        let next_page_token = page::next(RUNS, out.last().map(|r| r.id.clone()), more);
        Ok(Response::new(v1::ListRunsResponse {
            runs: out,
            next_page_token,
        }))
    }

    async fn get_run(
        &self,
        req: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        let req = req.into_inner();
        let after = token_cursor(JOURNAL, &req.page_token, |c| c.parse::<u32>().ok())?.unwrap_or(0);
        let run = self
            .load(
                &req.id,
                after,
                page::size(req.page_size, 500, page::MAX_PAGE_SIZE),
            )
            .await?;
        Ok(Response::new(v1::GetRunResponse {
            next_page_token: run.next_actions_page_token.clone(),
            run: Some(run),
        }))
    }

    async fn approve(
        &self,
        req: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::ApproveResponse>, Status> {
        let caller = firebreak_proto::access::caller(&req).cloned();
        let run = self.decide(caller, req.into_inner(), true).await?;
        Ok(Response::new(v1::ApproveResponse { run }))
    }

    async fn reject(
        &self,
        req: Request<v1::RejectRequest>,
    ) -> Result<Response<v1::RejectResponse>, Status> {
        let caller = firebreak_proto::access::caller(&req).cloned();
        let r = req.into_inner();
        let as_decision = v1::ApproveRequest {
            run_id: r.run_id,
            actor: r.actor,
            comment: r.comment,
        };
        let run = self.decide(caller, as_decision, false).await?;
        Ok(Response::new(v1::RejectResponse { run }))
    }

    async fn dry_run(
        &self,
        req: Request<v1::DryRunRequest>,
    ) -> Result<Response<v1::DryRunResponse>, Status> {
        let req = req.into_inner();
        checked("runbook", &req.runbook, MAX_NAME)?;
        let incident = req
            .incident
            .ok_or_else(|| Error::Invalid("incident is required".into()))?;
        if incident.encoded_len() > MAX_DRY_RUN_INCIDENT {
            return Err(Error::Invalid(format!(
                "incident is larger than {MAX_DRY_RUN_INCIDENT} bytes"
            ))
            .into());
        }
        incident_text(&incident)?;
        let runbook = self
            .orch
            .catalog
            .get(&req.runbook)
            .ok_or_else(|| Error::RunbookNotFound(req.runbook.clone()))?
            .clone();
        // The parameters a run would get: the configuration's overrides, checked at start-up.
        let params = runbook
            .params(self.orch.options.params.get(&req.runbook))
            .map_err(Error::Params)?;
        let _permit = DRY_RUNS.try_acquire().map_err(|_| Error::DryRunsBusy)?;
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
        .map_err(Error::DryRunThread)?;
        use v1::DryRunOutcome as O;
        let (outcome, error) = match sim.outcome {
            Outcome::Succeeded { .. } => (O::Succeeded, String::new()),
            Outcome::Failed(e) => (O::Failed, e),
            Outcome::Waiting { .. } => (O::Waiting, String::new()),
            Outcome::Sleeping { .. } => (O::Sleeping, String::new()),
            // A simulation journals nothing, so nothing interrupts it; said plainly if it did.
            Outcome::Interrupted { reason, .. } => (O::Failed, reason),
        };
        let error = clip(&error, MAX_TEXT);
        let (log, mut truncated) = clip_lines(sim.log, MAX_DOCUMENT);
        let mut steps = Vec::new();
        let mut bytes = log.iter().map(|l| l.len() + 6).sum::<usize>() + error.len();
        // A dry run's steps are not stored: what does not fit in a page is left out.
        for s in &sim.steps {
            let step = v1::PlannedStep {
                seq: s.seq,
                action: s.action.clone(),
                args: clip_json(&s.args, MAX_DOCUMENT),
                result: clip_json(&s.result, MAX_DOCUMENT),
            };
            let size = step.encoded_len() + 6;
            if bytes + size > MAX_PAGE_BYTES {
                truncated = true;
                break;
            }
            bytes += size;
            steps.push(step);
        }
        Ok(Response::new(v1::DryRunResponse {
            end_state: outcome as i32,
            error,
            steps,
            log,
            truncated,
        }))
    }

    async fn list_approvals(
        &self,
        req: Request<v1::ListApprovalsRequest>,
    ) -> Result<Response<v1::ListApprovalsResponse>, Status> {
        let req = req.into_inner();
        let limit = page::list_size(req.page_size);
        let after = run_token(APPROVALS, &req.page_token)?;
        let store = &self.orch.store;
        let query = RunQuery {
            state: Some(RunState::WaitingApproval),
            after: after.as_deref(),
            oldest_first: true,
            ..RunQuery::default()
        };
        let runs = store
            .runs_page(&query, limit + 1, MAX_PAGE_BYTES)
            .await
            .map_err(Error::from)?;
        let read: usize = runs.iter().map(RunRecord::wire_size).sum();
        let mut more = runs.len() > limit as usize || read >= MAX_PAGE_BYTES;
        let (mut approvals, mut bytes) = (Vec::new(), 0);
        // The id of the last run the page went through: a run that stopped waiting
        // meanwhile is skipped, not listed again.
        let mut last = None;
        for run in runs.iter().take(limit as usize) {
            let approval = self
                .orch
                .catalog
                .get(&run.runbook)
                .map(|rb| rb.manifest.approval.clone())
                .unwrap_or_default();
            let (seq, prompt, requested_at) = if run.phase == RunPhase::Plan {
                let steps = run.plan.as_array().map_or(0, Vec::len);
                (
                    0,
                    format!("apply the plan of {steps} step(s)?"),
                    run.started_at,
                )
            } else {
                match store.waiting_step(&run.id).await.map_err(Error::from)? {
                    Some(j) => (
                        j.seq,
                        clip(j.args["prompt"].as_str().unwrap_or_default(), MAX_TEXT),
                        j.at,
                    ),
                    None => {
                        last = Some(run.id.clone());
                        continue;
                    }
                }
            };
            let item = v1::PendingApproval {
                run_id: run.id.clone(),
                runbook: run.runbook.clone(),
                incident_id: run.incident_id.clone(),
                seq,
                prompt,
                role: approval.role,
                requested_at: Some(firebreak_proto::timestamp(requested_at)),
                expires_at: run.wake_at.map(firebreak_proto::timestamp),
                timeout_action: wire_on_timeout(approval.on_timeout) as i32,
            };
            let size = item.encoded_len() + 6;
            if !approvals.is_empty() && bytes + size > MAX_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            last = Some(run.id.clone());
            approvals.push(item);
        }
        let next_page_token = page::next(APPROVALS, last, more);
        Ok(Response::new(v1::ListApprovalsResponse {
            approvals,
            next_page_token,
        }))
    }
}
