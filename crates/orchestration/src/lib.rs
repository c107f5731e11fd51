//! Orchestration: runs the runbooks that match each incident, durably, in the Rhai sandbox.
//!
//! A run is created (once per runbook and incident) when an incident opens or its severity
//! changes into a runbook's range. The executor runs the script off the async runtime; each
//! action is journaled before the script sees its result, with its events in the same
//! transaction. After a crash, or when a person answers an approval, the run is replayed
//! against its journal: completed actions return their recorded results.

mod approvals;
mod error;
mod executor;
mod gauges;
mod grpc;
mod host;
mod k8s;
mod limits;
mod secrets;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use firebreak_bus::{
    Batch, Bus, ConsumerOptions, HandlerError, Relay, RelayHandle, consume_batched, streams,
};
use firebreak_domain::{Clock, Micros, SystemClock};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_runbook::{Catalog, Limits};
use firebreak_storage::{OrchestrationStore, OutboxEvent, RunRecord};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use executor::{MAX_EXECUTION_ATTEMPTS, incident_input};
pub use grpc::RunbookApi;
pub use host::ExecOptions;
pub use k8s::KubeOptions;
pub use secrets::SecretSource;

use crate::host::Actions;

/// How the orchestrator runs runbooks.
#[derive(Clone, Debug)]
pub struct Options {
    /// Side-effecting actions act for real; otherwise they are simulated and recorded.
    pub live: bool,
    /// Parameter overrides per runbook.
    pub params: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    pub limits: Limits,
    /// Runs executing at once.
    pub concurrency: usize,
    /// Members of each approver role: `{incident-commander: [alice, bob]}`.
    pub approvers: BTreeMap<String, Vec<String>>,
    /// What `exec` actions may run.
    pub exec: ExecOptions,
    /// The cluster `k8s` actions act on.
    pub kubernetes: KubeOptions,
    /// Where secrets come from.
    pub secrets: SecretSource,
    /// The time timers are due against (durable sleeps, approval timeouts).
    pub clock: Arc<dyn Clock>,
    /// How long a run's lease lasts without renewal: how soon another replica takes over
    /// the runs of a process that died.
    pub lease: std::time::Duration,
    /// Where `notify::send` may send: the configured channels and escalation policies
    /// (`log` always exists). Any other target fails the step.
    pub notify_targets: std::collections::BTreeSet<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            live: false,
            params: BTreeMap::new(),
            limits: Limits::default(),
            concurrency: 8,
            approvers: BTreeMap::new(),
            exec: ExecOptions::default(),
            kubernetes: KubeOptions::default(),
            secrets: SecretSource::default(),
            clock: Arc::new(SystemClock),
            lease: std::time::Duration::from_secs(30),
            notify_targets: ["log".to_owned()].into(),
        }
    }
}

/// The orchestration service. Cheap to clone.
#[derive(Clone)]
pub struct Orchestration {
    store: Arc<dyn OrchestrationStore>,
    bus: Arc<dyn Bus>,
    relay: RelayHandle,
    catalog: Arc<Catalog>,
    options: Arc<Options>,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    actions: Arc<Actions>,
    /// Runs claimed by this process: run id → runbook, and whether its lease is held.
    running: Arc<std::sync::Mutex<std::collections::HashMap<String, executor::Claim>>>,
    /// This process's name on the run leases it holds.
    owner: Arc<str>,
    /// Room for `WatchRuns` calls open at once.
    watches: Arc<Semaphore>,
    /// Cancelled when the service stops: open watches end then, or the gRPC server, which
    /// waits for every call in flight, would never finish shutting down.
    stopping: CancellationToken,
}

impl Orchestration {
    /// An orchestrator over its store, the bus and a loaded catalog.
    pub fn new(
        store: Arc<dyn OrchestrationStore>,
        bus: Arc<dyn Bus>,
        catalog: Catalog,
        options: Options,
    ) -> Result<Self, SetupError> {
        // Parameter overrides are checked now, not when a run needs them.
        for (name, overrides) in &options.params {
            let rb = catalog
                .get(name)
                .ok_or_else(|| SetupError::UnknownRunbook(name.clone()))?;
            rb.params(Some(overrides))?;
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(SetupError::HttpClient)?;
        let http_direct = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(SetupError::HttpClient)?;
        Ok(Self {
            store,
            bus,
            relay: RelayHandle::default(),
            catalog: Arc::new(catalog),
            slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
            wake: Arc::new(Notify::new()),
            actions: Arc::new(Actions {
                http,
                http_direct,
                kube: k8s::Kube::new(options.kubernetes.clone()),
                exec: options.exec.clone(),
                secrets: options.secrets.clone(),
                notify_targets: options.notify_targets.clone(),
            }),
            options: Arc::new(options),
            running: Arc::default(),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7()).into(),
            watches: Arc::new(Semaphore::new(watch::MAX_WATCHES)),
            stopping: CancellationToken::new(),
        })
    }

    /// Now, by the configured clock.
    pub(crate) fn now(&self) -> Micros {
        self.options.clock.now()
    }

    /// The gRPC `RunbookService`.
    /// The incident a run belongs to; `None` for an id that is not a run's (or when the
    /// store cannot be read: the caller then decides without it).
    pub async fn incident_of_run(&self, run_id: &str) -> Option<String> {
        let id = firebreak_domain::RunId::parse(run_id).ok()?.to_string();
        match self.store.run(&id).await {
            Ok(run) => run.map(|r| r.incident_id),
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "reading a run's incident failed");
                None
            }
        }
    }

    pub fn grpc(&self) -> v1::runbook_service_server::RunbookServiceServer<RunbookApi> {
        v1::runbook_service_server::RunbookServiceServer::new(RunbookApi { orch: self.clone() })
    }

    /// Starts the relay, the `incidents` consumer and the executor.
    pub fn spawn(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let (stop, stopping) = (shutdown.clone(), self.stopping.clone());
        tasks.spawn(async move {
            stop.cancelled().await;
            stopping.cancel();
        });
        tasks.spawn(
            Relay {
                outbox: self.store.clone(),
                bus: self.bus.clone(),
                handle: self.relay.clone(),
                name: "orchestration",
            }
            .run(shutdown.clone()),
        );
        let me = self.clone();
        let batch_me = self.clone();
        tasks.spawn(consume_batched(
            self.bus.clone(),
            streams::INCIDENTS,
            "orchestration",
            ConsumerOptions::default(),
            shutdown.clone(),
            // Runs for a fetched run of incident events, created in one transaction.
            move |batch: Arc<[firebreak_bus::Inbound]>| {
                let me = batch_me.clone();
                async move {
                    let mut runs = Vec::new();
                    for d in batch.iter() {
                        let Ok(event) = firebreak_proto::decode_event(&d.message.payload) else {
                            return Ok(Batch::OneByOne);
                        };
                        if let Some(Payload::IncidentChanged(c)) = event.payload
                            && starts_runs(&c)
                        {
                            runs.extend(me.runs_for(c));
                        }
                    }
                    me.create_runs(&runs).await.map(|()| Batch::Handled)
                }
            },
            move |inbound| {
                let me = me.clone();
                async move {
                    let event = firebreak_proto::decode_event(&inbound.message.payload)
                        .map_err(|e| HandlerError::Permanent(format!("undecodable event: {e}")))?;
                    match event.payload {
                        Some(Payload::IncidentChanged(c)) if starts_runs(&c) => {
                            me.start_runs(c).await
                        }
                        _ => Ok(()),
                    }
                }
            },
        ));
        let me = self.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { me.executor(shutdown).await });
    }

    /// Creates a run for every matching runbook that has none yet for this incident.
    async fn start_runs(&self, change: v1::IncidentChanged) -> Result<(), HandlerError> {
        let runs = self.runs_for(change);
        self.create_runs(&runs).await
    }

    /// The runs an incident change calls for: one per matching runbook (the store skips
    /// those that exist).
    fn runs_for(&self, change: v1::IncidentChanged) -> Vec<(RunRecord, OutboxEvent)> {
        let Some(incident) = change.incident else {
            return Vec::new();
        };
        if !incident.incident_state().is_some_and(|s| s.is_active()) {
            return Vec::new();
        }
        let labels = incident.labels.clone().into_iter().collect();
        self.catalog
            .matching(
                &incident.category,
                firebreak_proto::level(incident.severity),
                &labels,
            )
            .into_iter()
            .map(|rb| {
                let run = executor::new_run(rb, &incident, self.options.live, self.now());
                let event = executor::run_event(&run, v1::RunChange::Started, "", "");
                (run, event)
            })
            .collect()
    }

    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<(), HandlerError> {
        if runs.is_empty() {
            return Ok(());
        }
        self.store
            .create_runs(runs)
            .await
            .map_err(HandlerError::from)?;
        self.relay.wake();
        self.wake.notify_one();
        Ok(())
    }
}

/// Why orchestration could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("parameters given for unknown runbook {0:?}")]
    UnknownRunbook(String),
    #[error(transparent)]
    Params(#[from] firebreak_runbook::UnknownParameter),
    /// Its text carries the whole chain, which says what to install.
    #[error("{}", client_error(.0))]
    HttpClient(reqwest::Error),
}

/// What building an HTTP client failed on. reqwest says only "builder error"; the cause (no
/// CA certificates to trust, as in an image without ca-certificates) is further down the chain.
fn client_error(e: &reqwest::Error) -> String {
    let mut msg = format!("http client: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    format!(
        "{msg} (HTTPS needs the system's CA certificates: install the ca-certificates package, or point SSL_CERT_FILE at a bundle)"
    )
}

/// Whether an incident change starts the runbooks that match the incident: its opening, and
/// a severity change (a runbook may match only the new severity).
fn starts_runs(c: &v1::IncidentChanged) -> bool {
    matches!(
        c.change_kind(),
        v1::IncidentChange::Opened | v1::IncidentChange::SeverityChanged
    )
}
