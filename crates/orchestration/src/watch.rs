//! `WatchRuns`: what the chosen runs did so far, rebuilt from the store, then each change as
//! it commits, read from the `runbooks` stream, so a watcher on any replica follows the runs
//! of every replica, embedded or distributed alike.
//!
//! The live subscription starts before the store is read, so nothing falls between the two;
//! what both carry (a change committed while the store was read) is recognised by its place
//! in the run's history and sent once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use firebreak_bus::Message;
use firebreak_domain::{Micros, RunPhase, RunState, StepStatus};
use firebreak_proto::WireState;
use firebreak_proto::v1::{self, RunChange, event::Payload};
use firebreak_runbook::PlannedStep;
use firebreak_storage::{JournalRecord, OrchestrationStore, RunQuery, RunRecord};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::executor::{plan_text, sleeping_detail};
use crate::limits::{MAX_DOCUMENT, MAX_PAGE_BYTES, clip, clip_json};

/// Watches open at once in one process; more are refused (`RESOURCE_EXHAUSTED`).
pub(crate) const MAX_WATCHES: usize = 256;
/// The runs of an incident whose history a watch sends first (the oldest).
pub(crate) const MAX_BACKLOG_RUNS: u32 = 100;
/// Changes a watch holds ready ahead of its caller: past it, it waits for the caller, and
/// the shared live buffer (`firebreak_bus::WATCH_BUFFER`) bounds how long.
pub(crate) const OUTBOUND: usize = 64;
/// Live message ids remembered, to send a message the bus delivered twice once.
const SEEN_IDS: usize = 1024;
/// Journal entries read from the store at a time for a run's history.
const JOURNAL_PAGE: u32 = 500;

/// Which runs a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Run(String),
    Incident(String),
    All,
}

impl Scope {
    fn covers(&self, c: &v1::RunChanged) -> bool {
        match self {
            Self::Run(id) => &c.run_id == id,
            Self::Incident(id) => &c.incident_id == id,
            Self::All => true,
        }
    }
}

/// Where a change sits in its run's history: its kind and, for steps, the step's number.
type Place = (RunChange, u32);

fn place(p: &v1::RunProgress) -> Place {
    (p.change(), p.step.as_ref().map_or(0, |s| s.seq))
}

fn progress(
    run: &RunRecord,
    change: RunChange,
    step: Option<v1::RunAction>,
    detail: String,
    at: Micros,
) -> v1::RunProgress {
    v1::RunProgress {
        run_id: run.id.clone(),
        runbook: run.runbook.clone(),
        incident_id: run.incident_id.clone(),
        change: change as i32,
        step,
        detail,
        live: run.live,
        at: Some(firebreak_proto::timestamp(at)),
        backlog: true,
    }
}

fn step(j: &JournalRecord, status: StepStatus, result: &Value) -> v1::RunAction {
    v1::RunAction {
        seq: j.seq,
        action: j.action.clone(),
        args: clip_json(&j.args, MAX_DOCUMENT),
        result: clip_json(result, MAX_DOCUMENT),
        status: status.wire(),
        idempotency_key: String::new(),
        at: None,
    }
}

/// Who decided an approval, as the `approved`/`rejected` event says it.
pub(crate) fn decided_detail(actor: &str, comment: &str) -> String {
    match comment {
        "" => actor.to_owned(),
        c => format!("{actor}: {c}"),
    }
}

/// The changes a run announced before its journal: it started, and (plan-approve) its plan
/// was recorded and approved.
pub(crate) fn opening(run: &RunRecord) -> Vec<v1::RunProgress> {
    let mut out = vec![progress(
        run,
        RunChange::Started,
        None,
        String::new(),
        run.started_at,
    )];
    if !run.plan.is_null() {
        let steps: Vec<PlannedStep> = serde_json::from_value(run.plan.clone()).unwrap_or_default();
        out.push(progress(
            run,
            RunChange::PlanReady,
            None,
            clip(&plan_text(&steps), MAX_DOCUMENT),
            run.started_at,
        ));
        if run.phase == RunPhase::Apply {
            // Who approved a plan is on the incident's timeline, not in the run.
            out.push(progress(
                run,
                RunChange::Approved,
                None,
                String::new(),
                run.started_at,
            ));
        }
    }
    out
}

/// The changes journal entries announced, in order: each step (an approval as the wait and
/// its answer; a durable sleep as the step and the sleep).
pub(crate) fn steps(run: &RunRecord, journal: &[JournalRecord]) -> Vec<v1::RunProgress> {
    let mut out = Vec::new();
    for j in journal {
        if j.action == "approval.request" {
            out.push(progress(
                run,
                RunChange::WaitingApproval,
                Some(step(j, StepStatus::Waiting, &Value::Null)),
                String::new(),
                j.at,
            ));
            if j.status == StepStatus::Done {
                let text = |k: &str| j.result[k].as_str().unwrap_or_default().to_owned();
                let change = if j.result["approved"].as_bool() == Some(true) {
                    RunChange::Approved
                } else {
                    RunChange::Rejected
                };
                let detail = decided_detail(&text("by"), &text("comment"));
                out.push(progress(run, change, None, detail, j.at));
            }
            continue;
        }
        // A durable sleep was announced sleeping, `until` its wake time; when it wakes, its
        // entry becomes done, `slept_until` the same time.
        let until = (j.action == "sleep.for")
            .then(|| {
                j.result["until"]
                    .as_i64()
                    .or_else(|| j.result["slept_until"].as_i64())
            })
            .flatten();
        let announced = match until {
            Some(until) => step(
                j,
                StepStatus::Sleeping,
                &serde_json::json!({ "until": until }),
            ),
            None => step(j, j.status, &j.result),
        };
        out.push(progress(
            run,
            RunChange::Action,
            Some(announced),
            String::new(),
            j.at,
        ));
        if let Some(until) = until {
            let detail = sleeping_detail(j.seq, Micros::from_unix_micros(until));
            out.push(progress(run, RunChange::Sleeping, None, detail, j.at));
        }
    }
    out
}

/// The change that ended a finished run; none for one still going.
pub(crate) fn ending(run: &RunRecord) -> Option<v1::RunProgress> {
    let at = run.finished_at.unwrap_or(run.started_at);
    let (change, detail) = match run.state {
        RunState::Succeeded => (RunChange::Succeeded, String::new()),
        RunState::Failed => (RunChange::Failed, run.error.clone()),
        // Only a rejected plan ends a run (a rejected step is the script's to handle).
        RunState::Rejected => (
            RunChange::Rejected,
            run.error
                .strip_prefix("plan rejected by ")
                .unwrap_or(&run.error)
                .to_owned(),
        ),
        RunState::Pending | RunState::Running | RunState::Sleeping | RunState::WaitingApproval => {
            return None;
        }
    };
    Some(progress(run, change, None, detail, at))
}

/// A change read off the bus, as a watcher receives it.
pub(crate) fn live(c: &v1::RunChanged, at: Option<firebreak_proto::Timestamp>) -> v1::RunProgress {
    let change = c.change_kind();
    let step = matches!(change, RunChange::Action | RunChange::WaitingApproval)
        .then(|| serde_json::from_str::<Value>(&c.action).ok())
        .flatten()
        .map(|s| {
            let status = s["status"]
                .as_str()
                .and_then(|n| n.parse::<StepStatus>().ok());
            v1::RunAction {
                seq: s["seq"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                action: s["action"].as_str().unwrap_or_default().to_owned(),
                args: clip_json(&s["args"], MAX_DOCUMENT),
                result: clip_json(&s["result"], MAX_DOCUMENT),
                status: status.map_or(0, WireState::wire),
                idempotency_key: String::new(),
                at: None,
            }
        });
    v1::RunProgress {
        run_id: c.run_id.clone(),
        runbook: c.runbook.clone(),
        incident_id: c.incident_id.clone(),
        change: change as i32,
        step,
        detail: clip(&c.detail, MAX_DOCUMENT),
        live: c.live,
        at,
        backlog: false,
    }
}

/// One watch: sends the history of `scope`'s runs, then what `bus` delivers for them, into
/// `out`, until the caller leaves (or, for one run, the run ends) or the service stops
/// (`stopping`: the caller is told to watch again). Holds `_permit` (one of
/// [`MAX_WATCHES`]) while it lasts.
pub(crate) async fn follow(
    store: Arc<dyn OrchestrationStore>,
    scope: Scope,
    mut bus: broadcast::Receiver<Message>,
    out: mpsc::Sender<Result<v1::RunProgress, Status>>,
    stopping: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let stopped = || {
        let out = out.clone();
        async move {
            let _ = out.try_send(Err(Status::unavailable(
                "the server is shutting down; watch again",
            )));
        }
    };
    // False when the caller left or the service stops (then `stopped` tells a caller still
    // there why the stream ends).
    let send = |p| {
        let (out, stopping) = (out.clone(), stopping.clone());
        async move {
            tokio::select! {
                sent = out.send(Ok(p)) => sent.is_ok(),
                () = stopping.cancelled() => false,
            }
        }
    };
    // What each run's history held, for the live changes that repeat it.
    let mut sent: HashMap<String, VecDeque<Place>> = HashMap::new();
    let runs = match history_runs(&*store, &scope).await {
        Ok(runs) => runs,
        Err(e) => {
            let _ = out.send(Err(crate::error::Error::from(e).into())).await;
            return;
        }
    };
    for run in &runs {
        let places = sent.entry(run.id.clone()).or_default();
        for p in opening(run) {
            places.push_back(place(&p));
            if !send(p).await {
                stopped().await;
                return;
            }
        }
        let mut after = 0;
        loop {
            let page = match store
                .journal_page(&run.id, after, JOURNAL_PAGE, MAX_PAGE_BYTES)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    let _ = out.send(Err(crate::error::Error::from(e).into())).await;
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for p in steps(run, &page) {
                places.push_back(place(&p));
                if !send(p).await {
                    stopped().await;
                    return;
                }
            }
        }
        if let Some(p) = ending(run) {
            places.push_back(place(&p));
            if !send(p).await {
                stopped().await;
                return;
            }
        }
    }
    if matches!(scope, Scope::Run(_)) && runs.iter().all(RunRecord::is_finished) {
        return;
    }
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut seen_set: HashSet<String> = HashSet::new();
    loop {
        let m = tokio::select! {
            () = out.closed() => return,
            () = stopping.cancelled() => {
                stopped().await;
                return;
            }
            m = bus.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = out
                    .send(Err(Status::data_loss(format!(
                        "the watch fell {n} changes behind; watch again"
                    ))))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = out
                    .send(Err(Status::unavailable("the bus stopped; watch again")))
                    .await;
                return;
            }
        };
        if !seen_set.insert(m.id.clone()) {
            continue;
        }
        seen.push_back(m.id);
        if seen.len() > SEEN_IDS
            && let Some(old) = seen.pop_front()
        {
            seen_set.remove(&old);
        }
        let Ok(event) = firebreak_proto::decode_event(&m.payload) else {
            continue;
        };
        let Some(Payload::RunChanged(c)) = event.payload else {
            continue;
        };
        if !scope.covers(&c) {
            continue;
        }
        let p = live(&c, event.occurred_at);
        // A change the history sent already: skip it and what preceded it there.
        if let Some(places) = sent.get_mut(&c.run_id) {
            if let Some(at) = places.iter().position(|q| *q == place(&p)) {
                places.drain(..=at);
                continue;
            }
            sent.remove(&c.run_id);
        }
        let change = p.change();
        if !send(p).await {
            stopped().await;
            return;
        }
        if let Scope::Run(id) = &scope
            && ends(&*store, id, change).await
        {
            return;
        }
    }
}

/// Whether `change` ended the run: a success or failure does; a rejection only when it was
/// the plan's (the store says).
async fn ends(store: &dyn OrchestrationStore, run_id: &str, change: RunChange) -> bool {
    match change {
        RunChange::Succeeded | RunChange::Failed => true,
        RunChange::Rejected => matches!(store.run(run_id).await, Ok(Some(r)) if r.is_finished()),
        _ => false,
    }
}

/// The runs whose history a watch sends first.
async fn history_runs(
    store: &dyn OrchestrationStore,
    scope: &Scope,
) -> firebreak_storage::Result<Vec<RunRecord>> {
    match scope {
        Scope::Run(id) => Ok(store.run(id).await?.into_iter().collect()),
        Scope::Incident(id) => {
            let query = RunQuery {
                incident_id: Some(id),
                state: None,
                after: None,
                oldest_first: true,
            };
            store
                .runs_page(&query, MAX_BACKLOG_RUNS, MAX_PAGE_BYTES)
                .await
        }
        Scope::All => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use firebreak_bus::{Bus, NatsBus, NatsOptions};
    use firebreak_domain::{Micros, RunPhase, RunState};
    use firebreak_proto::v1::{self, RunChange, runbook_service_server::RunbookService};
    use firebreak_runbook::{Catalog, Limits};
    use firebreak_storage::postgres::PgOrchestrationStore;
    use firebreak_storage::{OrchestrationStore, RunRecord};
    use firebreak_testkit::nats::NatsServer;
    use firebreak_testkit::postgres::TestDatabase;
    use tokio_stream::StreamExt as _;
    use tokio_util::sync::CancellationToken;

    use crate::{Options, Orchestration, RunbookApi};

    /// A replica on the shared Postgres database and NATS server.
    async fn replica(
        db: &TestDatabase,
        nats: &NatsServer,
        runbooks: &std::path::Path,
    ) -> Orchestration {
        let store: Arc<dyn OrchestrationStore> =
            Arc::new(PgOrchestrationStore::connect(&db.url).await.unwrap());
        let bus: Arc<dyn Bus> = Arc::new(
            NatsBus::connect(&nats.url(), NatsOptions::default())
                .await
                .unwrap(),
        );
        let catalog = Catalog::load(runbooks, &Limits::default()).unwrap();
        Orchestration::new(store, bus, catalog, Options::default()).unwrap()
    }

    /// What a streamed change says, without its time or source.
    fn said(p: &v1::RunProgress) -> (RunChange, Option<(u32, String, i32)>, String) {
        (
            p.change(),
            p.step.as_ref().map(|s| (s.seq, s.action.clone(), s.status)),
            p.detail.clone(),
        )
    }

    /// Distributed mode: a watch served by one replica follows, live, a run that another
    /// replica executes (its events reach the watcher over NATS); watched again afterwards,
    /// the run reads the same from Postgres.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_on_one_replica_follows_a_run_another_executes() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (db, nats) = (TestDatabase::create().await, NatsServer::start().await);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("steps.yaml"),
            "name: steps\nmatch:\n  categories: [service-outage]\ncapabilities: [incident]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("steps.rhai"),
            "// Two notes.\nfn run(incident, params) {\n    incident::note(\"one\");\n    incident::note(\"two\");\n}\n",
        )
        .unwrap();
        let watching = replica(&db, &nats, dir.path()).await;
        let api = RunbookApi {
            orch: watching.clone(),
        };
        let mut live = api
            .watch_runs(tonic::Request::new(v1::WatchRunsRequest::default()))
            .await
            .unwrap()
            .into_inner();

        let executing = replica(&db, &nats, dir.path()).await;
        let id = firebreak_domain::RunId::new().to_string();
        let run = RunRecord {
            id: id.clone(),
            runbook: "steps".into(),
            incident_id: firebreak_domain::IncidentId::new().to_string(),
            state: RunState::Pending,
            live: false,
            error: String::new(),
            input: serde_json::json!({ "id": "i", "labels": {} }),
            started_at: Micros::from_unix_micros(1),
            finished_at: None,
            phase: RunPhase::Apply,
            plan: serde_json::Value::Null,
            wake_at: None,
            traceparent: String::new(),
        };
        let started = crate::executor::run_event(&run, RunChange::Started, "", "");
        executing.store.create_run(&run, &started).await.unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        executing.spawn(&mut tasks, &shutdown);
        executing.relay.wake();

        let mut seen = Vec::new();
        while seen.last().map(v1::RunProgress::change) != Some(RunChange::Succeeded) {
            let p = tokio::time::timeout(Duration::from_secs(30), live.next())
                .await
                .unwrap_or_else(|_| panic!("the run's changes stopped at {seen:#?}"))
                .unwrap()
                .unwrap()
                .progress
                .unwrap();
            seen.push(p);
        }
        assert!(seen.iter().all(|p| !p.backlog && p.run_id == id));
        let done = i32::from(firebreak_proto::v1::StepStatus::Done);
        let note = |seq| Some((seq, "incident.note".to_owned(), done));
        let expected = vec![
            (RunChange::Started, None, String::new()),
            (RunChange::Action, note(1), String::new()),
            (RunChange::Action, note(2), String::new()),
            (RunChange::Succeeded, None, String::new()),
        ];
        assert_eq!(seen.iter().map(said).collect::<Vec<_>>(), expected);

        // Watched again, the run is history, the same, and the stream ends with it.
        let again: Vec<v1::RunProgress> = api
            .watch_runs(tonic::Request::new(v1::WatchRunsRequest {
                run_id: id.clone(),
                incident_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .map(|r| r.unwrap().progress.unwrap())
            .collect()
            .await;
        assert!(again.iter().all(|p| p.backlog));
        assert_eq!(again.iter().map(said).collect::<Vec<_>>(), expected);
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
    }
}
