//! The executor: picks runnable runs and executes them off the async runtime, bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{Micros, RunEvent, RunPhase, RunState, StepStatus};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_runbook::{
    Execution, Mode, Outcome, PlannedStep, Recorded, Runbook, Simulator, execute, simulate,
};
use firebreak_storage::{OutboxEvent, RunRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::Orchestration;
use crate::host::RunHost;

/// The incident as a runbook sees it (`incident` in the script): frozen when the run starts.
pub fn incident_input(incident: &v1::Incident) -> serde_json::Value {
    json!({
        "id": incident.id,
        "title": incident.title,
        "description": incident.description,
        "category": incident.category,
        "severity": incident.severity,
        "priority": incident.priority,
        "state": incident.incident_state().map(|s| s.as_str()),
        "dedup_key": incident.dedup_key,
        "alert_count": incident.alert_count,
        "labels": incident.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "source": incident.source,
    })
}

/// A new pending run of `runbook` for `incident`, with the incident frozen as its input.
/// A plan-approve runbook starts in the plan phase.
pub(crate) fn new_run(
    runbook: &Runbook,
    incident: &v1::Incident,
    live: bool,
    now: Micros,
) -> RunRecord {
    RunRecord {
        id: firebreak_domain::RunId::new().to_string(),
        runbook: runbook.manifest.name.clone(),
        incident_id: incident.id.clone(),
        state: RunState::Pending,
        live,
        error: String::new(),
        input: incident_input(incident),
        started_at: now,
        finished_at: None,
        phase: match runbook.manifest.mode {
            Mode::PlanApprove => RunPhase::Plan,
            Mode::Auto => RunPhase::Apply,
        },
        plan: serde_json::Value::Null,
        wake_at: None,
        // Created while handling the incident's event: its trace.
        traceparent: firebreak_telemetry::trace::outgoing(),
    }
}

/// Why an execution of `run` resumes it rather than starts it (`None`: its first): it was
/// running when its process died (`restart`), slept (`sleep`), or has steps journaled
/// already, as after an approval (`approval`).
fn resumed_from(
    run: &RunRecord,
    journal: &[firebreak_storage::JournalRecord],
) -> Option<&'static str> {
    match run.state {
        RunState::Running => Some("restart"),
        RunState::Sleeping => Some("sleep"),
        _ if !journal.is_empty() => Some("approval"),
        _ => None,
    }
}

/// The `runbooks` event announcing a change of a run.
pub(crate) fn run_event(
    run: &RunRecord,
    change: v1::RunChange,
    action: &str,
    detail: &str,
) -> OutboxEvent {
    outbox_event(
        streams::RUNBOOKS,
        format!("runbooks.{}", change.name()),
        Payload::RunChanged(v1::RunChanged {
            run_id: run.id.clone(),
            runbook: run.runbook.clone(),
            incident_id: run.incident_id.clone(),
            kind: change as i32,
            live: run.live,
            action: action.to_owned(),
            detail: detail.to_owned(),
        }),
    )
}

impl Orchestration {
    /// Runs due runs until `shutdown`; on start it resumes runs a crash interrupted. Also
    /// wakes sleeping runs and applies the fallback of approvals that timed out.
    pub(crate) async fn executor(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().renew_leases(shutdown.clone()));
        while !shutdown.is_cancelled() {
            match self.store.due_runs(self.now()).await {
                Ok(runs) => {
                    for run in runs {
                        if run.state == RunState::WaitingApproval {
                            self.expire_approval(&run).await;
                            continue;
                        }
                        if !self.claim(&run) {
                            continue;
                        }
                        let Some(run) = self.take(run).await else {
                            continue;
                        };
                        let Ok(permit) = self.slots.clone().acquire_owned().await else {
                            return;
                        };
                        let me = self.clone();
                        tasks.spawn(async move {
                            let id = run.id.clone();
                            me.execute_run(run).await;
                            me.unclaim(&id);
                            if let Err(e) = me.store.release_run(&id, &me.owner).await {
                                // It runs out on its own.
                                tracing::warn!(run = %id, error = %e, "releasing the run's lease failed");
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing due runs failed"),
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                () = shutdown.cancelled() => {}
            }
        }
        // Let executing scripts finish their current step; their journal keeps the rest.
        while tasks.join_next().await.is_some() {}
    }

    /// Takes this process's lease on a claimed run and reads the run again under it: the
    /// list of due runs is a snapshot, and another replica may have executed the run (and
    /// finished it, or moved it on) since. Returns the run as it stands, or `None` (claim and
    /// lease let go) when it is not for this process to execute now.
    async fn take(&self, listed: RunRecord) -> Option<RunRecord> {
        let id = listed.id.clone();
        if !self.lease(&id).await {
            self.unclaim(&id);
            return None;
        }
        self.mark_leased(&id);
        let fresh = match self.store.run(&id).await {
            Ok(Some(run)) => Some(run),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "reading the run failed");
                None
            }
        };
        let due = |r: &RunRecord| match r.state {
            RunState::Pending | RunState::Running => true,
            RunState::Sleeping => r.wake_at.is_none_or(|t| t <= self.now()),
            _ => false,
        };
        let run = fresh.filter(due);
        let Some(run) = run else {
            self.unclaim(&id);
            self.release(&id).await;
            return None;
        };
        // Executions that began and never ended died with their process (a script that
        // aborts it, a kill): past the bound the run fails instead of taking every restart
        // down again.
        match self.store.begin_attempt(&id, &self.owner).await {
            Ok(Some(n)) if n > MAX_EXECUTION_ATTEMPTS => {
                let from = run.state;
                let msg = format!(
                    "the run crashed the process {} times (its execution began and never ended); it is not tried again",
                    n - 1
                );
                tracing::error!(run = %id, runbook = %run.runbook, attempts = n - 1, "giving up a run that keeps crashing the process");
                self.finish(&run, from, RunEvent::Fail, Some(&msg)).await;
                self.unclaim(&id);
                self.release(&id).await;
                None
            }
            Ok(Some(_)) => Some(run),
            Ok(None) => {
                self.unclaim(&id);
                self.release(&id).await;
                None
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "counting the run's execution failed");
                self.unclaim(&id);
                self.release(&id).await;
                None
            }
        }
    }

    async fn release(&self, id: &str) {
        if let Err(e) = self.store.release_run(id, &self.owner).await {
            // It runs out on its own.
            tracing::warn!(run = %id, error = %e, "releasing the run's lease failed");
        }
    }

    /// Takes this process's lease on a run; false when another process holds it, or the run
    /// is not in a state to execute.
    ///
    /// Leases are compared across processes, so they must be on the wall clock: they are on
    /// the injected clock, which in production is `SystemClock`, the wall clock (distributed
    /// mode never gets another). A `ManualClock` in tests moves leases with the timers: a
    /// jump past the lease period makes a lease look expired, which within one process only
    /// lets the same owner take it again.
    async fn lease(&self, id: &str) -> bool {
        let now = self.options.clock.now();
        let until = now + self.options.lease;
        match self.store.lease_run(id, &self.owner, until, now).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "leasing the run failed");
                false
            }
        }
    }

    /// Renews the leases of the runs executing here, three times per lease period, until
    /// `shutdown`. Runs claimed but not (yet) leased are not renewed: their lease may be
    /// another replica's, and that is no loss.
    async fn renew_leases(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.options.lease / 3) => {}
                () = shutdown.cancelled() => return,
            }
            let ids: Vec<String> = match self.running.lock() {
                Ok(r) => r
                    .iter()
                    .filter(|(_, c)| c.leased)
                    .map(|(id, _)| id.clone())
                    .collect(),
                Err(_) => return,
            };
            for id in ids {
                let until = self.options.clock.now() + self.options.lease;
                match self.store.renew_run(&id, &self.owner, until).await {
                    Ok(true) => {}
                    // Released meanwhile, because its execution ended: no loss.
                    Ok(false) if !self.is_leased(&id) => {}
                    Ok(false) => {
                        tracing::error!(run = %id, "lost the run's lease: another process may take it over");
                    }
                    Err(e) => {
                        tracing::warn!(run = %id, error = %e, "renewing the run's lease failed")
                    }
                }
            }
        }
    }

    fn unclaim(&self, id: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(id);
        }
    }

    fn mark_leased(&self, id: &str) {
        if let Ok(mut r) = self.running.lock()
            && let Some(c) = r.get_mut(id)
        {
            c.leased = true;
        }
    }

    fn is_leased(&self, id: &str) -> bool {
        self.running
            .lock()
            .is_ok_and(|r| r.get(id).is_some_and(|c| c.leased))
    }

    /// Marks a run as executing here, unless it is already or its runbook is at its cap.
    fn claim(&self, run: &RunRecord) -> bool {
        let cap = self
            .catalog
            .get(&run.runbook)
            .map_or(0, |rb| rb.manifest.concurrency.max_running as usize);
        let Ok(mut running) = self.running.lock() else {
            return false;
        };
        if running.contains_key(&run.id) {
            return false;
        }
        if cap > 0
            && running
                .values()
                .filter(|c| c.runbook == run.runbook)
                .count()
                >= cap
        {
            return false;
        }
        running.insert(
            run.id.clone(),
            Claim {
                runbook: run.runbook.clone(),
                leased: false,
            },
        );
        true
    }

    /// Moves `run` from `from` by `event` (the state the life cycle says, `RunState::apply`),
    /// with `change` to its other fields and its events, if it is still in `from`; false if
    /// it was not, or if the life cycle has no such move (logged; nothing written).
    async fn move_run(
        &self,
        run: &RunRecord,
        from: RunState,
        event: RunEvent,
        change: impl FnOnce(&mut RunRecord),
        events: &[OutboxEvent],
    ) -> bool {
        let to = match from.apply(event) {
            Ok(to) => to,
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "a move the run's life cycle does not have");
                return false;
            }
        };
        let mut next = run.clone();
        change(&mut next);
        next.state = to;
        match self.store.transition(&next, from, None, events).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "updating the run failed");
                false
            }
        }
    }

    /// Executes `run` in a span of the trace it was created in: the first execution is a
    /// child of that context, and a resumed one (after a restart, a sleep or an approval) is
    /// one too, linked to it and marked `firebreak.resumed`.
    async fn execute_run(&self, run: RunRecord) {
        let span = firebreak_telemetry::trace::follow(
            tracing::info_span!(
                "runbook.run",
                otel.name = format!("run {}", run.runbook),
                run.id = %run.id,
                runbook = %run.runbook,
                incident.id = %run.incident_id,
                firebreak.live = run.live,
                firebreak.phase = run.phase.as_str(),
                firebreak.resumed = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            ),
            Some(&run.traceparent),
        );
        self.execute_run_in_span(run).instrument(span).await;
    }

    async fn execute_run_in_span(&self, run: RunRecord) {
        let Some(runbook) = self.catalog.get(&run.runbook).cloned() else {
            let msg = format!("runbook {} is no longer loaded", run.runbook);
            self.finish(&run, run.state, RunEvent::Fail, Some(&msg))
                .await;
            return;
        };
        if run.state != RunState::Running {
            let from = run.state;
            let moved = self
                .move_run(&run, from, RunEvent::Execute, |r| r.wake_at = None, &[])
                .await;
            if !moved {
                return;
            }
        }
        let params = match runbook.params(self.options.params.get(&run.runbook)) {
            Ok(p) => p,
            Err(e) => {
                self.finish(
                    &run,
                    RunState::Running,
                    RunEvent::Fail,
                    Some(&e.to_string()),
                )
                .await;
                return;
            }
        };
        if run.phase == RunPhase::Plan {
            self.plan(run, runbook, params).await;
            return;
        }
        let journal = match self.store.journal(&run.id).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "reading the journal failed");
                return;
            }
        };
        if let Some(reason) = resumed_from(&run, &journal) {
            let span = tracing::Span::current();
            span.record("firebreak.resumed", reason);
            firebreak_telemetry::trace::link(&span, &run.traceparent);
        }
        // A sleep whose time has come is over: record it so before replaying.
        let now = self.now();
        let mut journal = journal;
        for j in journal
            .iter_mut()
            .filter(|j| j.status == StepStatus::Sleeping)
        {
            let until = Micros::from_unix_micros(j.result["until"].as_i64().unwrap_or(0));
            if until <= now {
                j.status = StepStatus::Done;
                j.result = json!({ "slept_until": until.unix_micros() });
                if let Err(e) = self.store.put_journal(j, &[]).await {
                    tracing::warn!(run = %run.id, error = %e, "recording the end of a sleep failed");
                    return;
                }
            }
        }
        let journal = journal
            .into_iter()
            .map(|j| Recorded {
                seq: j.seq,
                action: j.action,
                digest: j.args_digest,
                status: j.status.as_str().to_owned(),
                result: j.result,
            })
            .collect();
        let host = Arc::new(RunHost {
            store: self.store.clone(),
            run: run.clone(),
            secrets: runbook.manifest.secrets.clone(),
            actions: self.actions.clone(),
            clock: self.options.clock.clone(),
            rt: tokio::runtime::Handle::current(),
            log: Mutex::new(Vec::new()),
            deadline: std::time::Instant::now()
                + Duration::from_secs(u64::from(runbook.manifest.timeout_seconds)),
            timeout_seconds: runbook.manifest.timeout_seconds,
        });
        let approval_timeout = runbook.manifest.approval.timeout_seconds;
        let execution = Execution {
            runbook,
            run_id: run.id.clone(),
            incident: run.input.clone(),
            params,
            journal,
            host: host.clone(),
            limits: self.options.limits.clone(),
        };
        // The script's thread works in the run's span: each step's span is its child.
        let span = tracing::Span::current();
        let outcome = tokio::task::spawn_blocking(move || span.in_scope(|| execute(execution)))
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("the script's thread failed: {e}")));
        let lines = host
            .log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        self.append_log(&run, &lines).await;
        match outcome {
            Outcome::Succeeded { steps } => {
                if self
                    .finish(&run, RunState::Running, RunEvent::Succeed, None)
                    .await
                {
                    tracing::info!(run = %run.id, runbook = %run.runbook, steps, "run succeeded");
                }
            }
            Outcome::Failed(msg) => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                if self
                    .finish(&run, RunState::Running, RunEvent::Fail, Some(&msg))
                    .await
                {
                    tracing::warn!(run = %run.id, runbook = %run.runbook, error = %msg, "run failed");
                }
            }
            Outcome::Interrupted { seq, reason } => {
                // The store went away under the script: the run is not over, and its journal
                // holds every step before this one. Let go of it; once the store is back, an
                // execution (here or on another replica) replays the journal and goes on.
                tracing::warn!(run = %run.id, seq, error = %reason, "run interrupted; it resumes when the store is back");
                self.release(&run.id).await;
            }
            Outcome::Waiting { seq } => {
                tracing::info!(run = %run.id, seq, "run waits for approval");
                let until = self.now() + Duration::from_secs(approval_timeout);
                self.move_run(
                    &run,
                    RunState::Running,
                    RunEvent::AwaitApproval,
                    |r| r.wake_at = Some(until),
                    &[],
                )
                .await;
            }
            Outcome::Sleeping { seq, until } => {
                tracing::info!(run = %run.id, seq, until = until.unix_micros(), "run sleeps");
                let event = run_event(
                    &run,
                    v1::RunChange::Sleeping,
                    "",
                    &sleeping_detail(seq, until),
                );
                self.move_run(
                    &run,
                    RunState::Running,
                    RunEvent::Sleep,
                    |r| r.wake_at = Some(until),
                    &[event],
                )
                .await;
            }
        }
        self.relay.wake();
    }

    /// The plan phase of a plan-approve run: execute with every action simulated, record the
    /// plan on the run and the incident, and wait for a person to approve it.
    async fn plan(&self, run: RunRecord, runbook: Runbook, params: serde_json::Value) {
        let limits = self.options.limits.clone();
        let input = run.input.clone();
        let timeout = runbook.manifest.approval.timeout_seconds;
        let sim = tokio::task::spawn_blocking(move || {
            simulate(
                &runbook,
                input,
                params,
                Simulator::new(Vec::new(), Vec::new()),
                &limits,
            )
        })
        .await;
        let sim = match sim {
            Ok(sim) => sim,
            Err(e) => {
                self.finish(
                    &run,
                    RunState::Running,
                    RunEvent::Fail,
                    Some(&format!("the plan's thread failed: {e}")),
                )
                .await;
                return;
            }
        };
        self.append_log(&run, &sim.log).await;
        if let Outcome::Failed(msg) = &sim.outcome {
            self.finish(
                &run,
                RunState::Running,
                RunEvent::Fail,
                Some(&format!("planning failed: {msg}")),
            )
            .await;
            return;
        }
        let plan = serde_json::to_value(&sim.steps).unwrap_or_default();
        let event = run_event(&run, v1::RunChange::PlanReady, "", &plan_text(&sim.steps));
        let until = self.now() + Duration::from_secs(timeout);
        self.move_run(
            &run,
            RunState::Running,
            RunEvent::AwaitApproval,
            |r| {
                r.plan = plan;
                r.wake_at = Some(until);
            },
            &[event],
        )
        .await;
        self.relay.wake();
    }

    async fn append_log(&self, run: &RunRecord, lines: &[String]) {
        if !lines.is_empty()
            && let Err(e) = self.store.append_log(&run.id, lines).await
        {
            tracing::warn!(run = %run.id, error = %e, "writing the run log failed");
        }
    }

    /// Finishes a run that is in `from`, with its event, once: false (nothing written, nothing
    /// counted) when it was no longer in `from`, because another execution moved or
    /// finished it.
    pub(crate) async fn finish(
        &self,
        run: &RunRecord,
        from: RunState,
        event: RunEvent,
        error: Option<&str>,
    ) -> bool {
        let (state, change) = match from.apply(event) {
            Ok(state) if let Some(change) = v1::RunChange::finished(state) => (state, change),
            Ok(state) => {
                tracing::error!(run = %run.id, %state, "finishing a run into an unfinished state");
                return false;
            }
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "a move the run's life cycle does not have");
                return false;
            }
        };
        // A script's error can be as long as the script likes: it is stored clipped, so the
        // run stays readable.
        let error = error.map(|e| crate::limits::clip(e, crate::limits::MAX_TEXT));
        let event = run_event(run, change, "", error.as_deref().unwrap_or_default());
        let finished = match self
            .store
            .set_run_state(&run.id, from, state, error.as_deref(), &[event])
            .await
        {
            Ok(finished) => finished,
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "finishing run failed");
                false
            }
        };
        if finished {
            let m = firebreak_telemetry::metrics();
            firebreak_telemetry::Metrics::count(&m.runs_finished, state.as_str());
            let took = self.now().saturating_duration_since(run.started_at);
            m.observe_run(&run.runbook, state.as_str(), took.as_secs_f64());
            self.relay.wake();
        } else {
            tracing::warn!(run = %run.id, %state, "the run was finished or moved on by another execution");
        }
        finished
    }
}

/// A run claimed by this process, and whether it holds its lease yet.
pub(crate) struct Claim {
    runbook: String,
    leased: bool,
}

/// Executions of a run that may begin and never end (their process died) before the run
/// fails instead of being tried again.
pub const MAX_EXECUTION_ATTEMPTS: u32 = 3;

/// What the `sleeping` event of a run says (a watch rebuilds it from the journal).
pub(crate) fn sleeping_detail(seq: u32, until: Micros) -> String {
    format!(
        "step {seq} sleeps until {}",
        firebreak_proto::timestamp(until)
    )
}

/// A plan as people read it on the timeline: one line per step.
pub(crate) fn plan_text(steps: &[PlannedStep]) -> String {
    let mut text = format!("plan of {} step(s), waiting for approval:", steps.len());
    for s in steps {
        text.push_str(&format!("\n{}. {} {}", s.seq, s.action, s.args));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_execution_resumes_a_run_that_ran_slept_or_has_journaled_steps() {
        let run = |state| RunRecord {
            id: "r".into(),
            runbook: "b".into(),
            incident_id: "i".into(),
            state,
            live: false,
            error: String::new(),
            input: serde_json::Value::Null,
            started_at: Micros::default(),
            finished_at: None,
            phase: RunPhase::Apply,
            plan: serde_json::Value::Null,
            wake_at: None,
            traceparent: String::new(),
        };
        let step = firebreak_storage::JournalRecord {
            run_id: "r".into(),
            seq: 1,
            action: "approval.request".into(),
            args: serde_json::Value::Null,
            args_digest: String::new(),
            status: StepStatus::Done,
            result: serde_json::Value::Null,
            idempotency_key: String::new(),
            attempts: 1,
            at: Micros::default(),
        };
        assert_eq!(resumed_from(&run(RunState::Pending), &[]), None);
        assert_eq!(resumed_from(&run(RunState::Running), &[]), Some("restart"));
        assert_eq!(resumed_from(&run(RunState::Sleeping), &[]), Some("sleep"));
        assert_eq!(
            resumed_from(&run(RunState::Pending), &[step]),
            Some("approval")
        );
    }
}
