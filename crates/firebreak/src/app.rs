//! The embedded application: all four services in one process, SQLite storage, the
//! embedded bus, one gRPC server (with health and reflection) and one HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use firebreak_bus::{Bus, EmbeddedBus};
use firebreak_domain::{Clock, SystemClock};
use firebreak_intake::{Intake, Registry};
use firebreak_notification::{Channel, Notification};
use firebreak_orchestration::{Options, Orchestration, SecretSource};
use firebreak_runbook::{Catalog, Limits};
use firebreak_storage::sqlite::{
    SqliteBusLog, SqliteIntakeStore, SqliteNotificationStore, SqliteOrchestrationStore,
    SqliteTriageStore,
};
use firebreak_triage::Triage;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A built, bound, not yet running embedded stack.
pub struct App {
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    intake: Intake,
    triage: Triage,
    orchestration: Orchestration,
    notification: Notification,
    runbooks: usize,
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
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let db = |name: &str| config.data_dir.join(format!("{name}.db"));
        let fsync = config.durable_fsync;
        let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(Arc::new(
            SqliteBusLog::open(&db("bus"), fsync)
                .await
                .context("opening bus.db")?,
        )));
        let catalog =
            Catalog::load(&config.runbooks_dir, &Limits::default()).map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("invalid runbooks:\n{}", lines.join("\n"))
            })?;
        let runbooks = catalog.all().len();

        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_addr))?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
        let grpc_addr = grpc.local_addr()?;

        let triage = Triage::new(
            Arc::new(
                SqliteTriageStore::open(&db("triage"), fsync)
                    .await
                    .context("opening triage.db")?,
            ),
            bus.clone(),
            config.taxonomy(),
        );
        // Intake reaches triage over gRPC, as it does in distributed mode; here that is
        // this process's own server.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let intake_store = Arc::new(
            SqliteIntakeStore::open(&db("intake"), fsync)
                .await
                .context("opening intake.db")?,
        );
        let registry = Registry::load(config.integrations.clone(), intake_store.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("invalid integrations: {e}"))?;
        let intake = Intake::new(
            intake_store,
            bus.clone(),
            config.taxonomy(),
            channel,
            registry,
        )
        .with_max_in_flight(config.intake_max_in_flight);
        let orchestration = Orchestration::new(
            Arc::new(
                SqliteOrchestrationStore::open(&db("orchestration"), fsync)
                    .await
                    .context("opening orchestration.db")?,
            ),
            bus.clone(),
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
                clock: clock.clone(),
                ..Options::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("invalid runbook_params: {e}"))?;
        let mut channels = vec![Channel::log()];
        channels.extend(config.channels.iter().cloned());
        let notification = Notification::new(
            Arc::new(
                SqliteNotificationStore::open(&db("notification"), fsync)
                    .await
                    .context("opening notification.db")?,
            ),
            bus,
            channels,
            config.escalation_policies.clone(),
        )
        .map_err(|e| anyhow::anyhow!("invalid channels: {e}"))?
        .with_clock(clock);
        Ok(Self {
            config,
            grpc,
            http,
            intake,
            triage,
            orchestration,
            notification,
            runbooks,
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
        self.intake.spawn(&mut tasks, &work);
        self.triage.spawn(&mut tasks, &work);
        self.orchestration.spawn(&mut tasks, &work);
        self.notification.spawn(&mut tasks, &work);

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(firebreak_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let grpc_shutdown = shutdown.clone();
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(self.intake.grpc())
            .add_service(self.intake.integrations_grpc())
            .add_service(self.triage.grpc())
            .add_service(self.orchestration.grpc())
            .add_service(self.notification.grpc())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(self.grpc),
                grpc_shutdown.cancelled_owned(),
            );
        let router = axum::Router::new()
            .merge(self.intake.http_routes())
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/metrics",
                get(|| async {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        firebreak_telemetry::metrics().render(),
                    )
                }),
            );
        let http_shutdown = shutdown.clone();
        let http = axum::serve(self.http, router)
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
