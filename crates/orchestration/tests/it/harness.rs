//! Test parts: a bus that records what is published, runbooks written to a temporary
//! directory, an orchestrator started over a store, and a store whose list of due runs goes
//! stale on purpose.

use firebreak_domain::{Micros, RunPhase, RunState};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use firebreak_bus::{Bus, Inbound, Message};
use firebreak_orchestration::{Options, Orchestration};
use firebreak_proto::v1::event::Payload;
use firebreak_runbook::{Catalog, Limits};
use firebreak_storage::{
    JournalRecord, OrchestrationStore, Outbox, OutboxEvent, OutboxRecord, Result, RunQuery,
    RunRecord,
};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A bus that keeps every published message and delivers nothing.
#[derive(Default)]
pub(crate) struct RecordingBus {
    published: Mutex<Vec<Message>>,
}

impl RecordingBus {
    /// The `runbooks.*` changes published so far: (run id, change, detail). The change is read
    /// from the typed field alone ("unspecified" if a producer left it out).
    pub(crate) fn run_changes(&self) -> Vec<(String, String, String)> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(|m| {
                let event = firebreak_proto::decode_event(&m.payload).ok()?;
                match event.payload? {
                    Payload::RunChanged(c) => {
                        let kind = firebreak_proto::v1::RunChange::try_from(c.kind);
                        let change = kind.unwrap_or_default().name().to_owned();
                        Some((c.run_id, change, c.detail))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// How many finish events (succeeded, failed, rejected) each run got.
    pub(crate) fn finishes(&self, run_id: &str) -> usize {
        self.run_changes()
            .iter()
            .filter(|(id, change, _)| {
                id == run_id && matches!(change.as_str(), "succeeded" | "failed" | "rejected")
            })
            .count()
    }

    /// The `runbooks.notify` requests published so far: (channel, message).
    pub(crate) fn notifications(&self) -> Vec<(String, String)> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .filter_map(
                |m| match firebreak_proto::decode_event(&m.payload).ok()?.payload? {
                    Payload::NotifyRequested(n) => Some((n.channel, n.message)),
                    _ => None,
                },
            )
            .collect()
    }
}

#[async_trait]
impl Bus for RecordingBus {
    async fn publish(&self, _stream: &str, message: Message) -> firebreak_bus::Result<()> {
        self.published.lock().unwrap().push(message);
        Ok(())
    }

    async fn fetch(
        &self,
        _stream: &str,
        _consumer: &str,
        _max: u32,
        wait: Duration,
    ) -> firebreak_bus::Result<Vec<Inbound>> {
        tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        Ok(Vec::new())
    }

    async fn ack(&self, _: &str, _: &str, _: &[Inbound]) -> firebreak_bus::Result<()> {
        Ok(())
    }

    async fn park(&self, _: &str, _: &str, _: &Inbound, _: &str) -> firebreak_bus::Result<()> {
        Ok(())
    }
}

/// Writes the runbook `name` (manifest and script) into `dir`.
pub(crate) fn runbook(dir: &Path, name: &str, manifest: &str, script: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!("name: {name}\n{manifest}"),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.rhai")), script).unwrap();
}

pub(crate) fn catalog(dir: &Path) -> Catalog {
    Catalog::load(dir, &Limits::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A pending run of `runbook` for a made-up incident, as orchestration creates it.
pub(crate) fn pending_run(id: &str, runbook: &str, live: bool) -> RunRecord {
    RunRecord {
        id: id.into(),
        runbook: runbook.into(),
        incident_id: format!("inc-{id}"),
        state: RunState::Pending,
        live,
        error: String::new(),
        input: serde_json::json!({ "id": format!("inc-{id}"), "labels": {} }),
        started_at: Micros::from_unix_micros(1),
        finished_at: None,
        phase: RunPhase::Apply,
        plan: serde_json::Value::Null,
        wake_at: None,
        traceparent: String::new(),
    }
}

pub(crate) fn started(id: &str) -> OutboxEvent {
    OutboxEvent {
        id: format!("started-{id}"),
        stream: "test".into(),
        subject: "test.started".into(),
        payload: Vec::new(),
    }
}

/// An orchestrator running over `store`, publishing to `bus`, until dropped or stopped.
pub(crate) struct Running {
    pub(crate) shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    pub(crate) fn start(
        store: Arc<dyn OrchestrationStore>,
        bus: Arc<RecordingBus>,
        catalog: Catalog,
        options: Options,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let orch = Orchestration::new(store, bus, catalog, options).unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        orch.spawn(&mut tasks, &shutdown);
        Self { shutdown, tasks }
    }

    /// Stops it: executions finish their current step, the relay publishes what is left.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (up to a minute, polling) until `check` holds for the run `id`; returns the run.
pub(crate) async fn wait_for_run(
    store: &dyn OrchestrationStore,
    id: &str,
    what: &str,
    check: impl Fn(&RunRecord) -> bool,
) -> RunRecord {
    for _ in 0..1200 {
        if let Some(run) = store.run(id).await.unwrap()
            && check(&run)
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "gave up waiting for {what}: {:?}",
        store.run(id).await.unwrap()
    );
}

/// A store with hooks: its first list of due runs can be taken at once but handed out only
/// when the test opens a gate (a replica acting on a snapshot that went stale meanwhile),
/// and its first lease can be held up while the calls made meanwhile are counted.
pub(crate) struct Hooked {
    pub(crate) inner: Arc<dyn OrchestrationStore>,
    /// Told when the first list is taken, and the gate the test opens to hand it out.
    pub(crate) stale: Option<(Arc<Notify>, Arc<Notify>)>,
    /// Lists of due runs handed out.
    pub(crate) lists: Arc<Mutex<u32>>,
    /// Told after each list handed out.
    pub(crate) listed: Arc<Notify>,
    /// How long the first `lease_run` is held up.
    pub(crate) lease_stall: Option<Duration>,
    pub(crate) leases: Arc<Mutex<LeaseCalls>>,
}

/// Calls taking or renewing leases.
#[derive(Default, Debug)]
pub(crate) struct LeaseCalls {
    pub(crate) calls: u32,
    stalled: bool,
    /// Made while the first was held up.
    pub(crate) during_stall: u32,
}

impl Hooked {
    pub(crate) fn new(inner: Arc<dyn OrchestrationStore>) -> Self {
        Self {
            inner,
            stale: None,
            lists: Arc::default(),
            listed: Arc::default(),
            lease_stall: None,
            leases: Arc::default(),
        }
    }

    /// Counts a lease call; true when it is the first and is to be held up.
    fn lease_call(&self) -> bool {
        let mut l = self.leases.lock().unwrap();
        l.calls += 1;
        if l.stalled {
            l.during_stall += 1;
        }
        let stall = l.calls == 1 && self.lease_stall.is_some();
        l.stalled |= stall;
        stall
    }
}

#[async_trait]
impl Outbox for Hooked {
    async fn pending(&self, limit: u32) -> Result<Vec<OutboxRecord>> {
        self.inner.pending(limit).await
    }
    async fn mark_published(&self, seqs: &[i64]) -> Result<()> {
        self.inner.mark_published(seqs).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl OrchestrationStore for Hooked {
    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<u32> {
        self.inner.create_runs(runs).await
    }
    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.inner.run(id).await
    }
    async fn runs(
        &self,
        incident_id: Option<&str>,
        state: Option<RunState>,
        limit: u32,
    ) -> Result<Vec<RunRecord>> {
        self.inner.runs(incident_id, state, limit).await
    }
    async fn runs_page(
        &self,
        query: &RunQuery<'_>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<RunRecord>> {
        self.inner.runs_page(query, limit, max_bytes).await
    }
    async fn count_runs(&self, state: RunState) -> Result<u64> {
        self.inner.count_runs(state).await
    }
    async fn due_runs(&self, now: Micros) -> Result<Vec<RunRecord>> {
        let first = *self.lists.lock().unwrap() == 0;
        let due = self.inner.due_runs(now).await?;
        if let (true, Some((taken, gate))) = (first, &self.stale) {
            taken.notify_one();
            gate.notified().await;
        }
        *self.lists.lock().unwrap() += 1;
        self.listed.notify_one();
        Ok(due)
    }
    async fn lease_run(&self, id: &str, owner: &str, until: Micros, now: Micros) -> Result<bool> {
        if self.lease_call()
            && let Some(stall) = self.lease_stall
        {
            tokio::time::sleep(stall).await;
            self.leases.lock().unwrap().stalled = false;
        }
        self.inner.lease_run(id, owner, until, now).await
    }
    async fn renew_run(&self, id: &str, owner: &str, until: Micros) -> Result<bool> {
        self.lease_call();
        self.inner.renew_run(id, owner, until).await
    }
    async fn release_run(&self, id: &str, owner: &str) -> Result<()> {
        self.inner.release_run(id, owner).await
    }
    async fn begin_attempt(&self, id: &str, owner: &str) -> Result<Option<u32>> {
        self.inner.begin_attempt(id, owner).await
    }
    async fn transition(
        &self,
        run: &RunRecord,
        from: RunState,
        journal: Option<&JournalRecord>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        self.inner.transition(run, from, journal, events).await
    }
    async fn set_run_state(
        &self,
        id: &str,
        from: RunState,
        state: RunState,
        error: Option<&str>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        self.inner
            .set_run_state(id, from, state, error, events)
            .await
    }
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalRecord>> {
        self.inner.journal(run_id).await
    }
    async fn journal_page(
        &self,
        run_id: &str,
        after_seq: u32,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<JournalRecord>> {
        self.inner
            .journal_page(run_id, after_seq, limit, max_bytes)
            .await
    }
    async fn waiting_step(&self, run_id: &str) -> Result<Option<JournalRecord>> {
        self.inner.waiting_step(run_id).await
    }
    async fn put_journal(&self, entry: &JournalRecord, events: &[OutboxEvent]) -> Result<()> {
        self.inner.put_journal(entry, events).await
    }
    async fn append_log(&self, run_id: &str, lines: &[String]) -> Result<()> {
        self.inner.append_log(run_id, lines).await
    }
    async fn log(&self, run_id: &str) -> Result<Vec<String>> {
        self.inner.log(run_id).await
    }
}
