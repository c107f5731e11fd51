//! Approvals: a person (or the timeout's fallback) decides a waiting step or a plan.

use firebreak_domain::{RunEvent, RunPhase, RunState, StepStatus};
use firebreak_proto::v1;
use firebreak_runbook::OnTimeout;
use firebreak_storage::RunRecord;
use serde_json::json;

use crate::Orchestration;
use crate::executor::run_event;

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecideError {
    #[error("run {0} not found")]
    NotFound(String),
    #[error("run {0} is {1}, not waiting for approval")]
    NotWaiting(String, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("storage: {0}")]
    Storage(#[from] firebreak_storage::Error),
}

/// Who decides and why.
pub(crate) struct Decision<'a> {
    pub(crate) approved: bool,
    pub(crate) actor: &'a str,
    /// The authenticated caller (none where no access layer runs): the roles it holds on
    /// the run's incident count, its incident roles among them.
    pub(crate) caller: Option<&'a firebreak_domain::access::Principal>,
    pub(crate) comment: &'a str,
    /// The timeout's fallback decides: no role applies.
    pub(crate) by_timeout: bool,
}

impl Orchestration {
    /// Applies a decision to a waiting run, once: of two racing decisions one wins and the
    /// other is told the run is no longer waiting.
    pub(crate) async fn decide(
        &self,
        run_id: &str,
        d: Decision<'_>,
    ) -> Result<RunRecord, DecideError> {
        let store = &self.store;
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| DecideError::NotFound(run_id.to_owned()))?;
        if run.state != RunState::WaitingApproval {
            return Err(DecideError::NotWaiting(run.id, run.state.to_string()));
        }
        let role = self
            .catalog
            .get(&run.runbook)
            .map(|rb| rb.manifest.approval.role.clone())
            .unwrap_or_default();
        if !d.by_timeout && !role.is_empty() {
            // The role is a permission role the caller's token holds, or a group of the
            // configuration's `approvers`.
            let on = firebreak_domain::access::Target {
                service: "orchestration",
                team: None,
                incident: Some(&run.incident_id),
            };
            let holds = role
                .parse::<firebreak_domain::access::Role>()
                .ok()
                .zip(d.caller)
                .is_some_and(|(r, p)| p.holds(r, on));
            let members = self.options.approvers.get(&role);
            let name = d.actor.strip_prefix("user:").unwrap_or(d.actor);
            if !holds && !members.is_some_and(|m| m.iter().any(|p| p == name)) {
                return Err(DecideError::Forbidden(format!(
                    "{:?} may not decide runs of {}: only holders of the role {role:?} may (a token's role, or approvers in the configuration)",
                    d.actor, run.runbook
                )));
            }
        }
        let change = if d.approved {
            v1::RunChange::Approved
        } else {
            v1::RunChange::Rejected
        };
        let detail = crate::watch::decided_detail(d.actor, d.comment);
        let events = [run_event(&run, change, "", &detail)];
        let mut next = run.clone();
        next.wake_at = None;
        let not_waiting = |_| DecideError::NotWaiting(run.id.clone(), run.state.to_string());
        let moved = if run.phase == RunPhase::Plan {
            if d.approved {
                next.phase = RunPhase::Apply;
                next.state = run.state.apply(RunEvent::Approve).map_err(not_waiting)?;
            } else {
                next.state = run.state.apply(RunEvent::Reject).map_err(not_waiting)?;
                next.error = format!("plan rejected by {detail}");
                next.finished_at = Some(self.now());
            }
            store
                .transition(&next, RunState::WaitingApproval, None, &events)
                .await?
        } else {
            // The waiting step alone: a run's journal may be far too large to read whole.
            let Some(waiting) = store.waiting_step(&run.id).await? else {
                return Err(DecideError::NotWaiting(
                    run.id,
                    "without a pending approval".into(),
                ));
            };
            let mut decided = waiting;
            decided.status = StepStatus::Done;
            decided.result = json!({ "approved": d.approved, "by": d.actor, "comment": d.comment });
            decided.at = self.now();
            next.state = run.state.apply(RunEvent::Resume).map_err(not_waiting)?;
            store
                .transition(&next, RunState::WaitingApproval, Some(&decided), &events)
                .await?
        };
        if !moved {
            return Err(DecideError::NotWaiting(run.id, "already decided".into()));
        }
        self.relay.wake();
        self.wake.notify_one();
        Ok(next)
    }

    /// Applies the runbook's fallback to an approval nobody answered in time.
    pub(crate) async fn expire_approval(&self, run: &RunRecord) {
        let fallback = self
            .catalog
            .get(&run.runbook)
            .map_or(OnTimeout::Reject, |rb| rb.manifest.approval.on_timeout);
        let decision = Decision {
            approved: fallback == OnTimeout::Approve,
            actor: "firebreak:timeout",
            caller: None,
            comment: "no decision before the approval timed out",
            by_timeout: true,
        };
        match self.decide(&run.id, decision).await {
            Ok(_) => tracing::info!(run = %run.id, ?fallback, "approval timed out"),
            Err(DecideError::NotWaiting(..)) => {}
            Err(e) => tracing::warn!(run = %run.id, error = %e, "approval timeout failed"),
        }
    }
}
