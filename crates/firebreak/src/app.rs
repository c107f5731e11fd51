//! The application: all four services in one process on SQLite and the embedded bus
//! (`firebreak up`), or one service on Postgres and NATS JetStream (`firebreak serve`); each
//! with one gRPC server (health, reflection) and one HTTP server (`/healthz`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::routing::get;
use axum::serve::ListenerExt;
use firebreak_bus::{Bus, EmbeddedBus, streams};
use firebreak_bus::{NatsBus, NatsOptions};
use firebreak_domain::{Clock, SystemClock};
use firebreak_intake::{Intake, Registry};
use firebreak_notification::{Channel, Notification};
use firebreak_orchestration::{Options, Orchestration, SecretSource};
use firebreak_runbook::{Catalog, Limits};
use firebreak_storage::postgres::{
    PgIntakeStore, PgNotificationStore, PgOrchestrationStore, PgTriageStore,
};
use firebreak_storage::sqlite::{
    SqliteBusLog, SqliteIntakeStore, SqliteNotificationStore, SqliteOrchestrationStore,
    SqliteTriageStore,
};
use firebreak_storage::{IntakeStore, NotificationStore, OrchestrationStore};
use firebreak_triage::Triage;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Which service `firebreak serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Intake,
    Triage,
    Orchestration,
    Notification,
}

impl Service {
    /// The service's name, as in database names and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Intake => "intake",
            Self::Triage => "triage",
            Self::Orchestration => "orchestration",
            Self::Notification => "notification",
        }
    }
}

/// Checks a dependency (a database, the bus) for health: `Err` says what is wrong.
type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

fn store_probe(name: &'static str, outbox: Arc<dyn firebreak_storage::Outbox>) -> Probe {
    Arc::new(move || {
        let outbox = outbox.clone();
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(3), outbox.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{name} database: {e}")),
                Err(_) => Err(format!("{name} database: no answer in 3 s")),
            }
        })
    })
}

/// A built, bound, not yet running stack: all four services (embedded mode) or one
/// (`firebreak serve`).
pub struct App {
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    intake: Option<Intake>,
    triage: Option<Triage>,
    orchestration: Option<Orchestration>,
    notification: Option<Notification>,
    runbooks: usize,
    probes: Vec<Probe>,
    /// Embedded mode's hold on its data directory, released when the process ends.
    _data_lock: Option<std::fs::File>,
}

/// Locks the data directory for this process: embedded databases have one owner, so a
/// second `firebreak up` on the same directory fails instead of sharing them.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("firebreak.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another firebreak process",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Connects to the configuration's NATS JetStream, creating or updating the streams.
pub(crate) async fn connect_nats(config: &Config) -> anyhow::Result<NatsBus> {
    let nats = config
        .nats
        .as_ref()
        .context("distributed mode needs `nats: {url: nats://…}` in the configuration")?;
    NatsBus::connect(
        &nats.url,
        NatsOptions {
            ack_wait: Duration::from_secs(nats.ack_wait_seconds.max(1)),
            ..NatsOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot reach NATS at {}", nats.url))
}

/// The listeners, bound before anything else so a taken port fails fast.
async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    Ok((grpc, http))
}

/// The runbooks in force: the built-in catalogue, `runbooks_dir`'s, or both (the
/// directory's replacing built-ins of the same name); parameter overrides checked against
/// them.
fn load_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let invalid = |errors: Vec<firebreak_runbook::LoadError>| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid runbooks:\n{}", lines.join("\n"))
    };
    let limits = Limits::default();
    let builtin = config
        .runbooks_builtin
        .unwrap_or(config.runbooks_dir.is_none());
    let mut catalog = if builtin {
        Catalog::builtin(&limits).map_err(invalid)?
    } else {
        Catalog::default()
    };
    if let Some(dir) = &config.runbooks_dir {
        catalog = catalog.overlay(Catalog::load(dir, &limits).map_err(invalid)?);
    }
    for (name, overrides) in &config.runbook_params {
        let rb = catalog
            .get(name)
            .with_context(|| format!("runbook_params: no runbook named {name:?}"))?;
        rb.params(Some(overrides))
            .map_err(|e| anyhow::anyhow!("runbook_params: {e}"))?;
    }
    Ok(catalog)
}

fn lazy_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service address {url:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

async fn build_intake(
    config: &Config,
    store: Arc<dyn IntakeStore>,
    bus: Arc<dyn Bus>,
    triage: tonic::transport::Channel,
) -> anyhow::Result<Intake> {
    let registry = Registry::load(config.integrations.clone(), store.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("invalid integrations: {e}"))?
        .with_anonymous_rate_limit(config.intake_anonymous_rate_limit_per_second);
    Ok(Intake::new(store, bus, config.taxonomy(), triage, registry)
        .with_max_in_flight(config.intake_max_in_flight)
        .with_max_alerts_per_call(config.intake_max_alerts_per_call))
}

fn build_orchestration(
    config: &Config,
    store: Arc<dyn OrchestrationStore>,
    bus: Arc<dyn Bus>,
    catalog: Catalog,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Orchestration> {
    Orchestration::new(
        store,
        bus,
        catalog,
        Options {
            live: config.live,
            params: config.runbook_params.clone(),
            approvers: config.approvers.clone(),
            exec: config.exec.clone(),
            kubernetes: config.kubernetes.clone(),
            secrets: SecretSource {
                dir: config.secrets_dir.clone(),
            },
            clock,
            lease: Duration::from_secs(config.run_lease_seconds.max(1)),
            notify_targets: std::iter::once("log".to_owned())
                .chain(config.channels.iter().map(|c| c.name.clone()))
                .chain(config.escalation_policies.iter().map(|p| p.name.clone()))
                .collect(),
            ..Options::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("invalid runbook_params: {e}"))
}

fn build_notification(
    config: &Config,
    store: Arc<dyn NotificationStore>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Notification> {
    let mut channels = vec![Channel::log()];
    channels.extend(config.channels.iter().cloned());
    Ok(
        Notification::new(store, bus, channels, config.escalation_policies.clone())
            .map_err(|e| anyhow::anyhow!("invalid channels: {e}"))?
            .with_clock(clock),
    )
}

impl App {
    /// Opens the databases, loads the runbooks and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with timers due against `clock` (tests move a manual clock).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // reqwest's rustls needs a process-wide crypto provider before any client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Configuration is checked before anything is created on disk.
        let catalog = load_catalog(&config)?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let data_lock = lock_data_dir(&config.data_dir)?;
        let db = |name: &str| config.data_dir.join(format!("{name}.db"));
        let fsync = config.durable_fsync;
        let runbooks = catalog.all().len();
        let (grpc, http) = bind(&config).await?;
        let grpc_addr = grpc.local_addr()?;

        let triage_store = Arc::new(
            SqliteTriageStore::open(&db("triage"), fsync)
                .await
                .context("opening triage.db")?,
        );
        let intake_store = Arc::new(
            SqliteIntakeStore::open(&db("intake"), fsync)
                .await
                .context("opening intake.db")?,
        );
        let orchestration_store = Arc::new(
            SqliteOrchestrationStore::open(&db("orchestration"), fsync)
                .await
                .context("opening orchestration.db")?,
        );
        let notification_store = Arc::new(
            SqliteNotificationStore::open(&db("notification"), fsync)
                .await
                .context("opening notification.db")?,
        );
        // Each stream is read in place from the outbox of the one service producing it.
        let bus: Arc<dyn Bus> = Arc::new(
            EmbeddedBus::new(Arc::new(
                SqliteBusLog::open(&db("bus"), fsync)
                    .await
                    .context("opening bus.db")?,
            ))
            .read_in_place(streams::ALERTS, intake_store.clone())
            .read_in_place(streams::INCIDENTS, triage_store.clone())
            .read_in_place(streams::RUNBOOKS, orchestration_store.clone())
            .read_in_place(streams::NOTIFICATIONS, notification_store.clone()),
        );
        let probes = vec![
            store_probe("intake", intake_store.clone()),
            store_probe("triage", triage_store.clone()),
            store_probe("orchestration", orchestration_store.clone()),
            store_probe("notification", notification_store.clone()),
        ];
        let triage = Triage::new(triage_store, bus.clone(), config.taxonomy());
        // Intake reaches triage over gRPC, as it does in distributed mode; here that is
        // this process's own server.
        let intake = build_intake(
            &config,
            intake_store,
            bus.clone(),
            lazy_channel(&format!("http://{grpc_addr}"))?,
        )
        .await?;
        let orchestration = build_orchestration(
            &config,
            orchestration_store,
            bus.clone(),
            catalog,
            clock.clone(),
        )?;
        let notification = build_notification(&config, notification_store, bus, clock)?;
        Ok(Self {
            config,
            grpc,
            http,
            intake: Some(intake),
            triage: Some(triage),
            orchestration: Some(orchestration),
            notification: Some(notification),
            runbooks,
            probes,
            _data_lock: Some(data_lock),
        })
    }

    /// One service of a distributed deployment: its Postgres database, NATS JetStream, and
    /// the other services at the addresses in `peers`.
    pub async fn serve(config: Config, service: Service) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let name = service.name();
        let url = config.database_url_for(name)?;
        let nats_bus = Arc::new(connect_nats(&config).await?);
        let bus: Arc<dyn Bus> = nats_bus.clone();
        let bus_probe: Probe = Arc::new(move || {
            let bus = nats_bus.clone();
            Box::pin(async move {
                if bus.is_connected() {
                    Ok(())
                } else {
                    Err("NATS: not connected".to_owned())
                }
            })
        });
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let redacted = redact_url(&url);
        let mut runbooks = 0;
        let (mut intake, mut triage, mut orchestration, mut notification) =
            (None, None, None, None);
        let probe = match service {
            Service::Intake => {
                let store = Arc::new(
                    PgIntakeStore::connect_with(&url, config.database_max_connections)
                        .await
                        .with_context(|| format!("opening the intake database {redacted}"))?,
                );
                let triage_url = config.peers.triage.as_deref().context(
                    "intake calls triage: set `peers: {triage: http://…}` in the configuration",
                )?;
                intake = Some(
                    build_intake(&config, store.clone(), bus, lazy_channel(triage_url)?).await?,
                );
                store_probe(name, store)
            }
            Service::Triage => {
                let store = Arc::new(
                    PgTriageStore::connect_with(&url, config.database_max_connections)
                        .await
                        .with_context(|| format!("opening the triage database {redacted}"))?,
                );
                triage = Some(Triage::new(store.clone(), bus, config.taxonomy()));
                store_probe(name, store)
            }
            Service::Orchestration => {
                let catalog = load_catalog(&config)?;
                runbooks = catalog.all().len();
                let store = Arc::new(
                    PgOrchestrationStore::connect_with(&url, config.database_max_connections)
                        .await
                        .with_context(|| {
                            format!("opening the orchestration database {redacted}")
                        })?,
                );
                orchestration = Some(build_orchestration(
                    &config,
                    store.clone(),
                    bus,
                    catalog,
                    clock,
                )?);
                store_probe(name, store)
            }
            Service::Notification => {
                let store = Arc::new(
                    PgNotificationStore::connect_with(&url, config.database_max_connections)
                        .await
                        .with_context(|| format!("opening the notification database {redacted}"))?,
                );
                notification = Some(build_notification(&config, store.clone(), bus, clock)?);
                store_probe(name, store)
            }
        };
        // Intake keeps accepting while NATS is away (its outbox holds the events), so only
        // its database decides its health; the others cannot work without the bus.
        let probes = if service == Service::Intake {
            vec![probe]
        } else {
            vec![probe, bus_probe]
        };
        let (grpc, http) = bind(&config).await?;
        Ok(Self {
            config,
            grpc,
            http,
            intake,
            triage,
            orchestration,
            notification,
            runbooks,
            probes,
            _data_lock: None,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.config.http_addr)
    }

    /// How many runbooks loaded.
    pub fn runbook_count(&self) -> usize {
        self.runbooks
    }

    /// Serves until `shutdown` fires: health turns NOT_SERVING, listeners stop accepting,
    /// background work gets the grace period to finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let work = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut routes = tonic::service::RoutesBuilder::default();
        let mut router = axum::Router::new();
        if let Some(s) = &self.intake {
            s.spawn(&mut tasks, &work);
            routes.add_service(s.grpc());
            routes.add_service(s.integrations_grpc());
            router = router.merge(s.http_routes());
        }
        if let Some(s) = &self.triage {
            s.spawn(&mut tasks, &work);
            routes.add_service(s.grpc());
        }
        if let Some(s) = &self.orchestration {
            s.spawn(&mut tasks, &work);
            routes.add_service(s.grpc());
        }
        if let Some(s) = &self.notification {
            s.spawn(&mut tasks, &work);
            routes.add_service(s.grpc());
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(firebreak_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        routes.add_service(health_service).add_service(reflection);
        let grpc_shutdown = shutdown.clone();
        let grpc = tonic::transport::Server::builder()
            .layer(crate::traced::TraceLayer)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY, an answer written in more than one piece waits for the
                // peer's delayed acknowledgement (tens of ms) before its last piece goes out.
                tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                grpc_shutdown.cancelled_owned(),
            );
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
        tasks.spawn(monitor(
            self.probes.clone(),
            health.clone(),
            serving.clone(),
            work.clone(),
        ));
        let router = router
            .route(
                "/healthz",
                get(move || {
                    let serving = serving.load(std::sync::atomic::Ordering::Relaxed);
                    async move {
                        if serving {
                            (axum::http::StatusCode::OK, "ok\n")
                        } else {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                get(|| async {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        firebreak_telemetry::metrics().render(),
                    )
                }),
            );
        let router = router.layer(crate::traced::TraceLayer);
        let http_shutdown = shutdown.clone();
        let http_listener = self.http.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
        });
        let http = axum::serve(http_listener, router)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .into_future();

        let watch_health = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.cancelled().await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
        };
        let (grpc_result, http_result, ()) = tokio::join!(grpc, http, watch_health);
        grpc_result.context("gRPC server failed")?;
        http_result.context("HTTP server failed")?;

        work.cancel();
        let grace = Duration::from_secs(self.config.shutdown_grace_seconds);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "background work did not finish in the grace period; the journal and outbox keep it for the next start"
            );
            tasks.abort_all();
        }
        Ok(())
    }
}

/// Checks the probes every second and reports NOT_SERVING (gRPC health and `/healthz`) while
/// one fails, SERVING again once all pass; the services retry on their own meanwhile.
async fn monitor(
    probes: Vec<Probe>,
    health: tonic_health::server::HealthReporter,
    serving: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut was_ok = true;
    while !shutdown.is_cancelled() {
        let mut failure = None;
        for probe in &probes {
            if let Err(e) = probe().await {
                failure = Some(e);
                break;
            }
        }
        let ok = failure.is_none();
        if ok != was_ok {
            if let Some(e) = &failure {
                tracing::error!(error = %e, "a dependency failed: NOT_SERVING until it is back");
            } else {
                tracing::info!("dependencies are back: SERVING");
            }
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            serving.store(ok, std::sync::atomic::Ordering::Relaxed);
            was_ok = ok;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_has_one_embedded_process() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another firebreak process"), "{err}");
        drop(held);
        lock_data_dir(dir.path()).expect("free again once the holder is gone");
    }
}
