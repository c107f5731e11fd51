//! The executor: picks runnable runs and executes them off the async runtime, bounded.

use std::sync::{Arc, Mutex};

use firebreak_bus::{outbox_event, streams};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_runbook::{Execution, Outcome, Recorded, execute};
use firebreak_storage::{OutboxEvent, RunRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Orchestration;
use crate::host::RunHost;

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A new pending run of `runbook` for `incident`, with the incident frozen as its input.
pub(crate) fn new_run(runbook: &str, incident: &v1::Incident, live: bool) -> RunRecord {
    RunRecord {
        id: firebreak_domain::RunId::new().to_string(),
        runbook: runbook.to_owned(),
        incident_id: incident.id.clone(),
        state: "pending".into(),
        live,
        error: String::new(),
        input: json!({
            "id": incident.id,
            "title": incident.title,
            "description": incident.description,
            "category": incident.category,
            "severity": incident.severity,
            "priority": incident.priority,
            "state": incident.state,
            "dedup_key": incident.dedup_key,
            "alert_count": incident.alert_count,
            "labels": incident.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "source": incident.source,
        }),
        started_at: now_micros(),
        finished_at: None,
    }
}

/// The `runbooks` event announcing a change of a run.
pub(crate) fn run_event(run: &RunRecord, change: &str, action: &str, detail: &str) -> OutboxEvent {
    outbox_event(
        streams::RUNBOOKS,
        format!("runbooks.{change}"),
        Payload::RunChanged(v1::RunChanged {
            run_id: run.id.clone(),
            runbook: run.runbook.clone(),
            incident_id: run.incident_id.clone(),
            change: change.to_owned(),
            live: run.live,
            action: action.to_owned(),
            detail: detail.to_owned(),
        }),
    )
}

impl Orchestration {
    /// Runs pending runs until `shutdown`; on start it resumes runs a crash interrupted.
    pub(crate) async fn executor(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        while !shutdown.is_cancelled() {
            match self.store.runnable_runs().await {
                Ok(runs) => {
                    for run in runs {
                        let fresh = self
                            .running
                            .lock()
                            .map(|mut r| r.insert(run.id.clone()))
                            .unwrap_or(false);
                        if !fresh {
                            continue;
                        }
                        let Ok(permit) = self.slots.clone().acquire_owned().await else {
                            return;
                        };
                        let me = self.clone();
                        tasks.spawn(async move {
                            let id = run.id.clone();
                            me.execute_run(run).await;
                            if let Ok(mut r) = me.running.lock() {
                                r.remove(&id);
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing runnable runs failed"),
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => {}
            }
        }
        // Let executing scripts finish their current step; their journal keeps the rest.
        while tasks.join_next().await.is_some() {}
    }

    async fn execute_run(&self, run: RunRecord) {
        let Some(runbook) = self.catalog.get(&run.runbook).cloned() else {
            let msg = format!("runbook {} is no longer loaded", run.runbook);
            self.finish(&run, "failed", Some(&msg)).await;
            return;
        };
        if run.state == "pending"
            && let Err(e) = self
                .store
                .set_run_state(&run.id, "running", None, &[])
                .await
        {
            tracing::warn!(run = %run.id, error = %e, "marking run running failed");
            return;
        }
        let journal = match self.store.journal(&run.id).await {
            Ok(j) => j
                .into_iter()
                .map(|j| Recorded {
                    seq: j.seq,
                    action: j.action,
                    digest: j.args_digest,
                    status: j.status,
                    result: j.result,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "reading the journal failed");
                return;
            }
        };
        let params = match runbook.params(self.options.params.get(&run.runbook)) {
            Ok(p) => p,
            Err(e) => {
                self.finish(&run, "failed", Some(&e)).await;
                return;
            }
        };
        let host = Arc::new(RunHost {
            store: self.store.clone(),
            run: run.clone(),
            http: self.http.clone(),
            rt: tokio::runtime::Handle::current(),
            log: Mutex::new(Vec::new()),
        });
        let execution = Execution {
            runbook,
            run_id: run.id.clone(),
            incident: run.input.clone(),
            params,
            journal,
            host: host.clone(),
            limits: self.options.limits.clone(),
        };
        let outcome = tokio::task::spawn_blocking(move || execute(execution))
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("the script's thread failed: {e}")));
        let lines = host
            .log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        if !lines.is_empty()
            && let Err(e) = self.store.append_log(&run.id, &lines).await
        {
            tracing::warn!(run = %run.id, error = %e, "writing the run log failed");
        }
        match outcome {
            Outcome::Succeeded { steps } => {
                tracing::info!(run = %run.id, runbook = %run.runbook, steps, "run succeeded");
                self.finish(&run, "succeeded", None).await;
            }
            Outcome::Failed(msg) => {
                tracing::warn!(run = %run.id, runbook = %run.runbook, error = %msg, "run failed");
                self.finish(&run, "failed", Some(&msg)).await;
            }
            Outcome::Waiting { seq } => {
                tracing::info!(run = %run.id, seq, "run waits for approval");
                if let Err(e) = self
                    .store
                    .set_run_state(&run.id, "waiting_approval", None, &[])
                    .await
                {
                    tracing::warn!(run = %run.id, error = %e, "marking run waiting failed");
                }
            }
        }
        self.relay.wake();
    }

    async fn finish(&self, run: &RunRecord, state: &str, error: Option<&str>) {
        let m = firebreak_telemetry::metrics();
        firebreak_telemetry::Metrics::count(&m.runs_finished, state);
        let event = run_event(run, state, "", error.unwrap_or_default());
        if let Err(e) = self
            .store
            .set_run_state(&run.id, state, error, &[event])
            .await
        {
            tracing::warn!(run = %run.id, error = %e, "finishing run failed");
        }
        self.relay.wake();
    }
}
