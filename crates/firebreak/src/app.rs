//! The application: all four services in one process on SQLite and the embedded bus
//! (`firebreak up`), or one service on Postgres and NATS JetStream (`firebreak serve`); each
//! with one gRPC server (health, reflection) and one HTTP server (`/livez`, `/readyz`,
//! `/healthz`, `/metrics`), both under the connection limits of `net`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::routing::get;
use firebreak_bus::{Bus, EmbeddedBus, streams};
use firebreak_bus::{NatsBus, NatsOptions};
use firebreak_domain::{Clock, SystemClock};
use firebreak_intake::{Intake, Keyring, Registry};
use firebreak_notification::{Channel, Directory, Notification};
use firebreak_orchestration::{Options, Orchestration, SecretSource};
use firebreak_runbook::{Catalog, Limits};
use firebreak_storage::health::HealthCheck;
use firebreak_storage::postgres::{
    Migrated, PgIntakeStore, PgNotificationStore, PgOrchestrationStore, PgTriageStore, Schema,
};
use firebreak_storage::sqlite::{
    SqliteBusLog, SqliteIntakeStore, SqliteNotificationStore, SqliteOrchestrationStore,
    SqliteTriageStore,
};
use firebreak_storage::{BusLog, IntakeStore, NotificationStore, OrchestrationStore, OutboxLog};
use firebreak_triage::Triage;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, AuthLayer, Verifier};
use crate::config::Config;
use crate::health::{self, Dependency, Readiness};
use crate::net;
use crate::tls::{self, ClientTls, ServerTls};

/// Which service `firebreak serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Intake,
    Triage,
    Orchestration,
    Notification,
}

impl Service {
    /// Every service, as `firebreak up` runs them.
    pub const ALL: [Self; 4] = [
        Self::Intake,
        Self::Triage,
        Self::Orchestration,
        Self::Notification,
    ];

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

/// A database checked on a connection of its own (see [`HealthCheck`]).
fn database(name: impl Into<String>, check: HealthCheck) -> Dependency {
    let check = Arc::new(check);
    Dependency {
        name: name.into(),
        required: true,
        probe: Arc::new(move || {
            let check = check.clone();
            Box::pin(async move { check.check().await.map_err(|e| e.to_string()) })
        }),
    }
}

/// A bound, not yet running stack: all four services (embedded mode) or one (`firebreak
/// serve`).
pub struct App {
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    /// Verifies every gRPC call's credentials (`auth`).
    verifier: Option<Arc<Verifier>>,
    start: Start,
    runbooks: usize,
    /// Embedded mode's hold on its data directory, released when the process ends.
    _data_lock: Option<std::fs::File>,
}

/// What `run` starts from.
enum Start {
    /// Embedded mode: every service is built.
    Built(Box<Services>),
    /// Distributed mode: the service connects to Postgres and NATS once running, retrying
    /// until they answer, meanwhile live but not ready.
    Connect {
        service: Service,
        catalog: Option<Catalog>,
        /// Whether start-up migrates the database or waits for `firebreak migrate` to have.
        schema: Schema,
    },
}

/// The services of the process and what their readiness depends on.
struct Services {
    intake: Option<Intake>,
    triage: Option<Triage>,
    orchestration: Option<Orchestration>,
    notification: Option<Notification>,
    /// The directory's gRPC services, where this process holds the directory.
    directory: Option<Directory>,
    /// Silences, where this process holds intake's database: Alertmanager's API serves them.
    silences: Option<(Arc<firebreak_intake::silencer::Silencer>, Arc<dyn Clock>)>,
    /// Embedded mode: the bus's log and notification's outbox, where the `audit` stream is
    /// read in place with no consumer in Firebreak; its old events are swept.
    audit_outbox: Option<(Arc<dyn BusLog>, Arc<dyn OutboxLog>)>,
    /// The bus the services consume from, whose consumers' backlogs `/metrics` shows.
    bus: Option<Arc<dyn Bus>>,
    dependencies: Vec<Dependency>,
}

impl Services {
    /// The Firebreak services built, by name (gRPC health names them).
    fn names(&self) -> Vec<&'static str> {
        [
            (self.intake.is_some(), Service::Intake),
            (self.triage.is_some(), Service::Triage),
            (self.orchestration.is_some(), Service::Orchestration),
            (self.notification.is_some(), Service::Notification),
        ]
        .into_iter()
        .filter(|(built, _)| *built)
        .map(|(_, s)| s.name())
        .collect()
    }
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
    NatsBus::connect_with(
        &nats.url,
        NatsOptions {
            ack_wait: Duration::from_secs(nats.ack_wait_seconds.max(1)),
            ..NatsOptions::default()
        },
        nats.auth(),
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

/// Embedded intake's channel to this process's own server: over TLS when the server speaks
/// it (checked against `tls.server_name`, default `localhost`, and `tls.ca_file`).
fn self_channel(
    config: &Config,
    grpc_addr: SocketAddr,
) -> anyhow::Result<tonic::transport::Channel> {
    if config.tls.cert_file.is_none() {
        return lazy_channel(&format!("http://{grpc_addr}"), &ClientTls::default());
    }
    let mut tls = ClientTls::for_peers(&config.tls);
    tls.server_name = Some(
        config
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| "localhost".into()),
    );
    lazy_channel(&format!("https://{grpc_addr}"), &tls)
}

fn lazy_channel(url: &str, tls: &ClientTls) -> anyhow::Result<tonic::transport::Channel> {
    Ok(peer_endpoint(url, tls, None)?.connect_lazy())
}

fn peer_endpoint(
    url: &str,
    tls: &ClientTls,
    domain: Option<&str>,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service address {url:?}"))?
        .connect_timeout(Duration::from_secs(2));
    tls.apply(endpoint, domain)
}

/// How often a peer's host names are resolved again, so replicas that come and go (a
/// headless Service's addresses) join and leave the balanced set.
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// One peer address: its scheme, host and port.
struct PeerAddress {
    url: String,
    scheme: String,
    host: String,
    port: u16,
}

/// Parses a peer entry (one address or several, see [`crate::config::Peers`]).
fn peer_addresses(entry: &str) -> anyhow::Result<Vec<PeerAddress>> {
    let addresses = crate::config::split_addresses(entry);
    if addresses.is_empty() {
        bail!("no address in {entry:?}");
    }
    if addresses.len() > 64 {
        bail!(
            "{} addresses in one peer entry; at most 64",
            addresses.len()
        );
    }
    addresses
        .into_iter()
        .map(|url| {
            let uri: axum::http::Uri = url
                .parse()
                .with_context(|| format!("invalid service address {url:?}"))?;
            let scheme = uri.scheme_str().unwrap_or("http").to_owned();
            let host = uri
                .host()
                .filter(|h| !h.is_empty())
                .with_context(|| format!("service address {url:?} has no host"))?
                .trim_matches(|c| c == '[' || c == ']')
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            tonic::transport::Endpoint::from_shared(url.clone())
                .with_context(|| format!("invalid service address {url:?}"))?;
            Ok(PeerAddress {
                url,
                scheme,
                host,
                port,
            })
        })
        .collect()
}

/// A channel to a peer that spreads calls over every address of its entry and every
/// address their host names resolve to. One literal IP address is a plain channel.
fn peer_channel(entry: &str, tls: &ClientTls) -> anyhow::Result<tonic::transport::Channel> {
    let addresses = peer_addresses(entry)?;
    if let [one] = addresses.as_slice()
        && one.host.parse::<std::net::IpAddr>().is_ok()
    {
        return lazy_channel(&one.url, tls);
    }
    let (channel, changes) = tonic::transport::Channel::balance_channel::<String>(64);
    tokio::spawn(resolve_peers(addresses, changes, tls.clone()));
    Ok(channel)
}

/// Keeps a balanced channel's set of endpoints equal to what the peer's addresses resolve
/// to; ends when the channel is gone.
async fn resolve_peers(
    addresses: Vec<PeerAddress>,
    changes: tokio::sync::mpsc::Sender<
        tonic::transport::channel::Change<String, tonic::transport::Endpoint>,
    >,
    tls: ClientTls,
) {
    use tonic::transport::channel::Change;
    let mut current: std::collections::BTreeSet<String> = Default::default();
    loop {
        // Each resolved address keeps the host name it came from: TLS checks the peer's
        // certificate against the name, not the address.
        let mut found = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeMap::new();
        for a in &addresses {
            match tokio::net::lookup_host((a.host.as_str(), a.port)).await {
                Ok(resolved) => {
                    for ip in resolved {
                        let url = match ip {
                            std::net::SocketAddr::V4(v4) => format!("{}://{v4}", a.scheme),
                            std::net::SocketAddr::V6(v6) => format!("{}://{v6}", a.scheme),
                        };
                        names.insert(url.clone(), a.host.clone());
                        found.insert(url);
                    }
                }
                Err(e) => {
                    tracing::warn!(address = %a.url, error = %e, "cannot resolve a peer's address")
                }
            }
        }
        // Nothing resolved (DNS is down): keep what worked, or try the names themselves, so
        // calls fail fast instead of waiting for an endpoint that never comes.
        if found.is_empty() {
            if current.is_empty() {
                found = addresses.iter().map(|a| a.url.clone()).collect();
            } else {
                found = current.clone();
            }
        }
        for gone in current.difference(&found) {
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return;
            }
        }
        for new in found.difference(&current) {
            let Ok(endpoint) = peer_endpoint(new, &tls, names.get(new).map(String::as_str)) else {
                continue;
            };
            tracing::debug!(address = %new, "a peer address joins the balanced set");
            if changes
                .send(Change::Insert(new.clone(), endpoint))
                .await
                .is_err()
            {
                return;
            }
        }
        current = found;
        tokio::select! {
            () = tokio::time::sleep(RESOLVE_EVERY) => {}
            () = changes.closed() => return,
        }
    }
}

/// Where embedded mode keeps the secrets key it made, when none is configured.
pub(crate) const SECRETS_KEY_FILE: &str = "secrets.key";

/// The keys stored secrets are sealed with, from `secrets_encryption`; in embedded mode
/// (`data_dir`), without one configured, the data directory's `secrets.key`, made (mode
/// 0600) at the first start.
fn secrets_keyring(config: &Config, data_dir: Option<&std::path::Path>) -> anyhow::Result<Keyring> {
    let read = |path: &std::path::Path, what: &str| -> anyhow::Result<[u8; 32]> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} {}", path.display()))?;
        Keyring::parse_key(&text).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
    };
    let settings = &config.secrets_encryption;
    let current = match (&settings.key_file, &settings.key, data_dir) {
        (Some(file), _, _) => Some(read(file, "secrets_encryption.key_file")?),
        (None, Some(key), _) => {
            Some(Keyring::parse_key(&key.0).map_err(|e| {
                anyhow::anyhow!("secrets_encryption.key (FIREBREAK_SECRETS_KEY): {e}")
            })?)
        }
        (None, None, Some(dir)) => {
            let path = dir.join(SECRETS_KEY_FILE);
            if !path.exists() {
                let key = Keyring::generate_key()
                    .map_err(|e| anyhow::anyhow!("cannot make a secrets key: {e}"))?;
                auth::write_secret(&path, &key)?;
                tracing::info!(path = %path.display(), "first start: a secrets key was written here (mode 0600); stored signing secrets are encrypted with it");
            }
            Some(read(&path, "the secrets key")?)
        }
        (None, None, None) => None,
    };
    let previous = settings
        .previous_key_files
        .iter()
        .map(|f| read(f, "secrets_encryption.previous_key_files"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Keyring::new(current, &previous))
}

async fn build_intake(
    config: &Config,
    store: Arc<dyn IntakeStore>,
    bus: Arc<dyn Bus>,
    triage: firebreak_proto::access::AuthedChannel,
    clock: Arc<dyn Clock>,
    keyring: Keyring,
) -> anyhow::Result<Intake> {
    let registry = Registry::load(config.integrations.clone(), store.as_ref(), keyring)
        .await
        .map_err(|e| anyhow::anyhow!("invalid integrations: {e}"))?
        .with_anonymous_rate_limit(config.intake_anonymous_rate_limit_per_second);
    Ok(Intake::new(store, bus, config.taxonomy(), triage, registry)
        .with_max_in_flight(config.intake_max_in_flight)
        .with_max_alerts_per_call(config.intake_max_alerts_per_call)
        .with_clock(clock))
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
    .map_err(|e| anyhow::anyhow!("cannot start orchestration: {e}"))
}

/// Refuses schedules naming someone the directory does not have.
async fn check_schedules(config: &Config, directory: &Directory) -> anyhow::Result<()> {
    let schedules = firebreak_notification::schedules::Schedules::new(&config.schedules)
        .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
    directory
        .check_schedule_members(&schedules.members())
        .await
        .context("invalid schedules")
}

/// Notification as configured. Its schedules (the configuration's and those made at run time)
/// live in `schedules`: [`Notification::declare_schedules`] writes and loads them, and
/// checks the policies against them, before it serves.
fn build_notification(
    config: &Config,
    store: Arc<dyn NotificationStore>,
    schedules: Arc<dyn firebreak_storage::ScheduleStore>,
    bus: Arc<dyn Bus>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Notification> {
    // Channels name their secrets; each is read once, here (the runbooks' source: a file in
    // `secrets_dir`, else FIREBREAK_SECRET_<NAME>).
    let secrets = firebreak_orchestration::SecretSource {
        dir: config.secrets_dir.clone(),
    };
    // Secrets read from `X_file` keys come first.
    let lookup = |name: &str| config.file_secret(name).or_else(|| secrets.get(name));
    let mut channels = vec![Channel::log()];
    for c in &config.channels {
        channels.push(
            c.clone()
                .with_secrets(&lookup)
                .map_err(|e| anyhow::anyhow!("invalid channels: {e}"))?,
        );
    }
    let responses = config
        .responses
        .as_ref()
        .map(|spec| spec.build(&lookup))
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
    let notification = Notification::new(store, bus, channels, config.escalation_policies.clone())
        .and_then(|n| n.with_routes(config.routes.clone()))
        .and_then(|n| n.with_subscriptions(config.subscriptions.clone()))
        .and_then(|n| n.with_status_updates(&config.status_updates))
        .and_then(|n| n.with_throttles(config.throttles.clone()))
        .and_then(|n| n.with_maintenance(&config.maintenance))
        .map_err(|e| anyhow::anyhow!("invalid channels: {e}"))?
        .with_schedule_store(schedules)
        .with_commander_schedule(config.commander.schedule.clone())
        .with_clock(clock);
    Ok(match responses {
        Some(r) => notification.with_responses(r),
        None => notification,
    })
}

impl App {
    /// Opens the databases, loads the runbooks and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with timers due against `clock` (tests move a manual clock).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::build_embedded(config, clock, false).await
    }

    /// Embedded mode with intake alone: intake's database and the embedded bus (its `alerts`
    /// stream read in place from intake's outbox), built and served as [`App::build`] does,
    /// but no triage, orchestration or notification, so nothing consumes what intake
    /// accepts, and `RaiseIncident` answers without an incident id (its call to triage
    /// fails). For measuring intake's own rate (the intake benchmark), not for running
    /// Firebreak.
    pub async fn build_intake_alone(config: Config) -> anyhow::Result<Self> {
        Self::build_embedded(config, Arc::new(SystemClock), true).await
    }

    /// Embedded mode: all four services, or intake alone.
    async fn build_embedded(
        config: Config,
        clock: Arc<dyn Clock>,
        intake_alone: bool,
    ) -> anyhow::Result<Self> {
        // reqwest's rustls needs a process-wide crypto provider before any client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Spans carry trace context even when the caller set up no telemetry (a library use).
        firebreak_telemetry::ensure_trace_context();
        config.log_ignored_env();
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
        let intake_store = Arc::new(
            SqliteIntakeStore::open_with_clock(&db("intake"), fsync, clock.clone())
                .await
                .context("opening intake.db")?,
        );
        let bus_log: Arc<dyn BusLog> = Arc::new(
            SqliteBusLog::open_with_clock(&db("bus"), fsync, clock.clone())
                .await
                .context("opening bus.db")?,
        );
        // Notification's database holds the directory (users, tokens), which every mode
        // verifies calls against, intake alone included, and the audit log.
        let notification_store = Arc::new(
            SqliteNotificationStore::open_with_clock(&db("notification"), fsync, clock.clone())
                .await
                .context("opening notification.db")?,
        );
        // Each stream is read in place from the outbox of the one service producing it.
        let mut bus = EmbeddedBus::new(bus_log.clone())
            .read_in_place(streams::ALERTS, intake_store.clone())
            .read_in_place(streams::AUDIT, notification_store.clone());
        let directory = Directory::new(notification_store.clone()).with_clock(clock.clone());
        directory
            .declare(&config.users, &config.teams)
            .await
            .context("declaring the configuration's users and teams")?;
        check_schedules(&config, &directory).await?;
        let service_token = match &config.auth.service_token {
            Some(t) => t.0.clone(),
            None => auth::generate_token()?,
        };
        let verifier = Arc::new(
            Verifier::new(
                &service_token,
                config.auth.admin_token.as_ref().map(|t| t.0.as_str()),
                clock.clone(),
            )
            .with_failure_limit(
                config.auth.failures_per_minute,
                Duration::from_millis(config.auth.failure_delay_ms),
            ),
        );
        verifier.set_source(Arc::new(directory.clone()));
        auth::bootstrap(&directory, &config.data_dir).await?;
        verifier
            .sync_now()
            .await
            .context("reading the credential table")?;
        // Bound once the admin token is written: a client that reaches the port finds it.
        let (grpc, http) = bind(&config).await?;
        let grpc_addr = grpc.local_addr()?;
        let downstream = if intake_alone {
            None
        } else {
            let triage_store = Arc::new(
                SqliteTriageStore::open_with_clock(&db("triage"), fsync, clock.clone())
                    .await
                    .context("opening triage.db")?,
            );
            let orchestration_store = Arc::new(
                SqliteOrchestrationStore::open_with_clock(
                    &db("orchestration"),
                    fsync,
                    clock.clone(),
                )
                .await
                .context("opening orchestration.db")?,
            );
            bus = bus
                .read_in_place(streams::INCIDENTS, triage_store.clone())
                .read_in_place(streams::RUNBOOKS, orchestration_store.clone())
                .read_in_place(streams::NOTIFICATIONS, notification_store.clone());
            Some((triage_store, orchestration_store))
        };
        let bus: Arc<dyn Bus> = Arc::new(bus);
        let names: &[&str] = if intake_alone {
            &["intake", "bus"]
        } else {
            &["intake", "triage", "orchestration", "notification", "bus"]
        };
        let dependencies = names
            .iter()
            .map(|name| database(format!("{name}.db"), HealthCheck::sqlite(db(name))))
            .collect();
        // Intake reaches triage over gRPC, as it does in distributed mode; here that is
        // this process's own server.
        let intake = build_intake(
            &config,
            intake_store,
            bus.clone(),
            firebreak_proto::access::authed(
                self_channel(&config, grpc_addr)?,
                Some(&service_token),
            ),
            clock.clone(),
            secrets_keyring(&config, Some(&config.data_dir))?,
        )
        .await?;
        let silencer = intake.silencer();
        let mut services = Services {
            intake: Some(intake),
            triage: None,
            orchestration: None,
            notification: None,
            directory: None,
            silences: Some((silencer, clock.clone())),
            audit_outbox: Some((bus_log, notification_store.clone())),
            bus: Some(bus.clone()),
            dependencies,
        };
        if let Some((triage_store, orchestration_store)) = downstream {
            services.triage = Some(
                Triage::new(triage_store, bus.clone(), config.taxonomy(), clock.clone())
                    .with_lifecycle(config.lifecycle())
                    .with_grouping(config.grouping.grouping()?)
                    .with_review_template(config.review.template.clone())?,
            );
            services.orchestration = Some(build_orchestration(
                &config,
                orchestration_store,
                bus.clone(),
                catalog,
                clock.clone(),
            )?);
            let notification = build_notification(
                &config,
                notification_store.clone(),
                notification_store,
                bus,
                clock,
            )?
            .with_directory(directory.clone());
            notification
                .declare_schedules(&config.schedules)
                .await
                .map_err(|e| anyhow::anyhow!("invalid schedules: {e}"))?;
            services.notification = Some(notification);
        }
        services.directory = Some(directory);
        Ok(Self {
            config,
            grpc,
            http,
            verifier: Some(verifier),
            start: Start::Built(Box::new(services)),
            runbooks,
            _data_lock: Some(data_lock),
        })
    }

    /// One service of a distributed deployment: its Postgres database, NATS JetStream, and
    /// the other services at the addresses in `peers`. The configuration and the runbooks are
    /// checked and the listeners bound now; Postgres and NATS are reached once running, and
    /// waited for while they do not answer.
    pub async fn serve(config: Config, service: Service) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Spans carry trace context even when the caller set up no telemetry (a library use).
        firebreak_telemetry::ensure_trace_context();
        config.log_ignored_env();
        config.database_url_for(service.name())?;
        config
            .nats
            .as_ref()
            .context("distributed mode needs `nats: {url: nats://…}` in the configuration")?;
        let service_token = config
            .auth
            .service_token
            .as_ref()
            .map(|t| t.0.clone())
            .context("distributed mode needs `auth: {service_token: …}`, the same in every service (make one with `firebreak token generate`)")?;
        let verifier = Arc::new(
            Verifier::new(
                &service_token,
                config.auth.admin_token.as_ref().map(|t| t.0.as_str()),
                Arc::new(SystemClock),
            )
            .with_failure_limit(
                config.auth.failures_per_minute,
                Duration::from_millis(config.auth.failure_delay_ms),
            ),
        );
        if service != Service::Notification {
            // The directory is notification's: the copy follows it over gRPC.
            let notification = config.peers.notification.as_deref().context(
                "every service verifies tokens against notification's directory: set `peers: {notification: http://…}` in the configuration",
            )?;
            let channel = firebreak_proto::access::authed(
                peer_channel(notification, &ClientTls::for_peers(&config.tls))
                    .context("invalid peers.notification")?,
                Some(&service_token),
            );
            verifier.set_source(Arc::new(auth::RemoteSource(
                firebreak_proto::internal::v1::credential_service_client::CredentialServiceClient::new(
                    channel,
                ),
            )));
        }
        if matches!(service, Service::Orchestration | Service::Notification) {
            // Runbooks' http actions and the channels speak HTTPS.
            tls::check_system_roots()?;
        }
        let mut catalog = None;
        let mut runbooks = 0;
        match service {
            Service::Intake => {
                let triage = config.peers.triage.as_deref().context(
                    "intake calls triage: set `peers: {triage: http://…}` in the configuration",
                )?;
                peer_addresses(triage).context("invalid peers.triage")?;
            }
            Service::Orchestration => {
                let c = load_catalog(&config)?;
                runbooks = c.all().len();
                catalog = Some(c);
            }
            Service::Triage | Service::Notification => {}
        }
        let (grpc, http) = bind(&config).await?;
        Ok(Self {
            config,
            grpc,
            http,
            verifier: Some(verifier),
            start: Start::Connect {
                service,
                catalog,
                schema: Schema::Migrate,
            },
            runbooks,
            _data_lock: None,
        })
    }

    /// Distributed mode: whether start-up applies the database's migrations (the default) or
    /// only checks that `firebreak migrate` did, waiting (live, not ready) until it has
    /// (`Schema::Require`, `serve --no-migrate`). Embedded mode always migrates.
    pub fn with_schema(mut self, schema: Schema) -> Self {
        if let Start::Connect { schema: s, .. } = &mut self.start {
            *s = schema;
        }
        self
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

    /// Serves until `shutdown` fires: readiness turns NOT_SERVING, listeners stop accepting,
    /// background work gets the grace period to finish. In distributed mode both servers
    /// answer from the start (liveness, and `UNAVAILABLE` / 503 "starting" for the rest)
    /// while the service waits for its database and NATS.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            config,
            grpc,
            http,
            start,
            verifier,
            ..
        } = self;
        let limits = config.connections.clone();
        let (grpc_cap, http_cap) = net::fit_caps(
            limits.grpc_max_connections,
            limits.http_max_connections,
            net::raise_fd_limit(),
        );
        let server_limits = |max_connections: usize| net::Limits {
            max_connections: max_connections.max(1),
            header_timeout: Duration::from_secs(limits.header_timeout_seconds.max(1)),
            idle_timeout: Duration::from_secs(limits.idle_timeout_seconds.max(1)),
            tcp_keepalive: seconds(limits.keepalive_interval_seconds),
        };
        let header_timeout = Duration::from_secs(limits.header_timeout_seconds.max(1));
        let grpc_tls =
            ServerTls::from_config(&config.tls, b"h2", header_timeout).context("invalid tls")?;
        let http_tls = ServerTls::from_config(&config.tls, b"http/1.1", header_timeout)
            .context("invalid tls")?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health_names = match &start {
            Start::Built(services) => services.names(),
            Start::Connect { service, .. } => vec![service.name()],
        };
        let readiness = Readiness::start(reporter, &health_names).await;
        // Reflection lists the public services this process serves: all of them embedded,
        // one service's in distributed mode; never the internal ones.
        let served: Vec<Service> = match &start {
            Start::Built(_) => Service::ALL.to_vec(),
            Start::Connect { service, .. } => vec![*service],
        };
        let mut base = tonic::service::RoutesBuilder::default();
        base.add_service(health_service)
            .add_service(reflection(&served).build_v1()?)
            .add_service(reflection(&served).build_v1alpha()?);
        let grpc_routes = Late::new(base.routes());
        // The gauges of the services this process runs, read when `/metrics` is scraped.
        let gauges = Arc::new(firebreak_telemetry::Gauges::default());
        let http_routes = LateHttp::new(health_routes(&readiness, &gauges));

        // Stops both servers: the shutdown signal, or a start-up that failed.
        let stop = CancellationToken::new();
        let work = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(v) = &verifier {
            let every = Duration::from_millis(config.auth.sync_interval_ms.max(50));
            tasks.spawn(v.clone().run(every, work.clone()));
        }
        let startup = Startup {
            readiness: readiness.clone(),
            gauges,
            verifier: verifier.clone(),
            audit_retention_days: config.auth.audit_retention_days,
            grpc_routes: grpc_routes.clone(),
            http_routes: http_routes.clone(),
            work: work.clone(),
        };
        // Embedded mode is ready before it accepts its first connection.
        let start = match start {
            Start::Built(services) => {
                startup.finish(*services, &mut tasks).await;
                None
            }
            Start::Connect {
                service,
                catalog,
                schema,
            } => Some((service, catalog, schema)),
        };

        let grpc_server = {
            let mut builder = tonic::transport::Server::builder()
                .max_concurrent_streams(limits.max_concurrent_streams.max(1))
                .http2_keepalive_interval(seconds(limits.keepalive_interval_seconds))
                .http2_keepalive_timeout(seconds(limits.keepalive_timeout_seconds))
                .http2_max_header_list_size(MAX_HEADER_LIST_BYTES);
            if let Some(t) = seconds(limits.request_timeout_seconds) {
                builder = builder.timeout(t);
            }
            let connections = net::Connections::new("grpc", server_limits(grpc_cap));
            let incoming = grpc_incoming(grpc, connections, grpc_tls);
            let stop = stop.clone();
            let auth = tower::util::option_layer(verifier.clone().map(AuthLayer));
            async move {
                let served = builder
                    .layer(crate::metered::MeterLayer(crate::traced::Protocol::Grpc))
                    .layer(crate::traced::TraceLayer(crate::traced::Protocol::Grpc))
                    .layer(net::CountCallsLayer)
                    .layer(auth)
                    .serve_with_incoming_shutdown(
                        grpc_routes,
                        incoming,
                        stop.clone().cancelled_owned(),
                    )
                    .await;
                stop.cancel();
                served.context("gRPC server failed")
            }
        };
        let http_server = {
            let connections = net::Connections::new("http", server_limits(http_cap));
            let stop = stop.clone();
            let request_timeout = seconds(limits.request_timeout_seconds);
            let header_timeout = Duration::from_secs(limits.header_timeout_seconds.max(1));
            async move {
                let served = serve_http(
                    http,
                    connections,
                    http_tls,
                    http_routes,
                    request_timeout,
                    header_timeout,
                    stop.clone(),
                )
                .await;
                stop.cancel();
                served.context("HTTP server failed")
            }
        };
        let main = async {
            let started = match start {
                None => Ok(()),
                Some((service, catalog, schema)) => tokio::select! {
                    built = connect(&config, service, catalog, schema, &readiness) => match built {
                        Ok(services) => {
                            startup.finish(services, &mut tasks).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    () = shutdown.cancelled() => Ok(()),
                    () = stop.cancelled() => Ok(()),
                },
            };
            if started.is_ok() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = stop.cancelled() => {}
                }
            }
            work.cancel();
            readiness.set(false, vec!["shutting down".to_owned()]).await;
            stop.cancel();
            started
        };
        let (grpc_result, http_result, started) = tokio::join!(grpc_server, http_server, main);
        started?;
        grpc_result?;
        http_result?;

        let grace = Duration::from_secs(config.shutdown_grace_seconds);
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

/// The largest header block a gRPC call may send (h2 would allow 16 MiB).
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// `Some` duration, or `None` for 0 (off).
fn seconds(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

/// The reflection service's configuration, for both protocol versions: v1 and v1alpha (the
/// only one some generic clients speak, e.g. Python's grpc-requests). It knows the public
/// contracts only (`firebreak.v1`, never `firebreak.internal.v1`) and lists the public
/// services of `served`, health and reflection itself.
fn reflection(served: &[Service]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(firebreak_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Every service listed resolves: generic clients (grpc-requests) describe each one.
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for (kind, services) in firebreak_proto::PUBLIC_SERVICES {
        if served.iter().any(|s| s.name() == *kind) {
            for name in *services {
                builder = builder.with_service_name(*name);
            }
        }
    }
    builder
}

/// What start-up hands the running servers once the services are built.
struct Startup {
    readiness: Readiness,
    gauges: Arc<firebreak_telemetry::Gauges>,
    verifier: Option<Arc<Verifier>>,
    /// `auth.audit_retention_days`, for the directory's retention task.
    audit_retention_days: u64,
    grpc_routes: Late,
    http_routes: LateHttp,
    work: CancellationToken,
}

impl Startup {
    /// Starts the services' background work, routes calls to them, and checks readiness
    /// once before the monitor takes over.
    async fn finish(&self, services: Services, tasks: &mut JoinSet<()>) {
        let mut routes = tonic::service::RoutesBuilder::default();
        let mut router = health_routes(&self.readiness, &self.gauges);
        let m = firebreak_telemetry::metrics();
        if let Some(s) = &services.intake {
            m.serve(firebreak_telemetry::Owner::Intake);
            s.spawn(tasks, &self.work);
            routes.add_service(s.grpc());
            routes.add_service(s.integrations_grpc());
            routes.add_service(s.silences_grpc());
            router = router.merge(s.http_routes());
        }
        if let (Some((store, clock)), Some(v)) = (&services.silences, &self.verifier) {
            router = router.merge(crate::silences::routes(
                store.clone(),
                v.clone(),
                clock.clone(),
            ));
        }
        if let Some(s) = &services.triage {
            m.serve(firebreak_telemetry::Owner::Triage);
            self.gauges.add(s.gauges());
            s.spawn(tasks, &self.work);
            routes.add_service(s.grpc());
            routes.add_service(s.ingest_grpc());
        }
        if let Some(s) = &services.orchestration {
            m.serve(firebreak_telemetry::Owner::Orchestration);
            self.gauges.add(s.gauges());
            s.spawn(tasks, &self.work);
            routes.add_service(s.grpc());
            // Approvals are decided with the roles held on the run's incident.
            if let Some(v) = &self.verifier {
                v.set_runs(Arc::new(s.clone()));
            }
        }
        if let Some(s) = &services.notification {
            m.serve(firebreak_telemetry::Owner::Notification);
            s.spawn(tasks, &self.work);
            routes.add_service(s.grpc());
            // Answers to pages carry their own proof (a signed link, Slack's or Twilio's
            // signature), not a token.
            router = router.merge(s.http_routes());
            if let Some(v) = &self.verifier {
                router = router.merge(crate::feeds::routes(s.clone(), v.clone()));
            }
        }
        if let Some(d) = &services.directory {
            routes.add_service(d.grpc());
            routes.add_service(d.credentials_grpc());
            routes.add_service(d.audit_grpc());
            tasks.spawn(
                d.clone()
                    .keep_audit(self.audit_retention_days, self.work.clone()),
            );
            // Notification's replicas follow their own database.
            if let Some(v) = &self.verifier
                && !v.has_source()
            {
                v.set_source(Arc::new(d.clone()));
            }
        }
        if let Some(bus) = &services.bus {
            self.gauges.add(firebreak_bus::gauges(bus.clone()));
        }
        if let Some((log, outbox)) = services.audit_outbox.clone() {
            tasks.spawn(sweep_unconsumed(
                log,
                outbox,
                streams::AUDIT,
                self.work.clone(),
            ));
        }
        self.grpc_routes.set(routes.routes());
        self.http_routes.set(router);
        let (ready, problems) = health::check(&services.dependencies).await;
        self.readiness.set(ready, problems).await;
        tasks.spawn(health::monitor(
            services.dependencies,
            self.readiness.clone(),
            self.work.clone(),
        ));
    }
}

/// Every minute until `stop`, sweeps the events of `stream` (read in place from `outbox`)
/// that every consumer is past and that are more than a day old. A stream no consumer in this
/// process reads (`audit`, kept for consumers outside Firebreak, which an embedded bus has
/// none of) would otherwise grow for ever: without a consumer, every old event goes. (A sweep
/// looks at the oldest 8,192 rows of the outbox, so it runs often.)
async fn sweep_unconsumed(
    log: Arc<dyn BusLog>,
    outbox: Arc<dyn OutboxLog>,
    stream: &'static str,
    stop: CancellationToken,
) {
    loop {
        let swept = match log.min_outbox_cursor(stream).await {
            Ok(upto) => outbox.sweep(stream, upto.unwrap_or(i64::MAX)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = swept {
            tracing::warn!(stream, error = %e, "sweeping the outbox failed; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Reaches the service's database and NATS, retrying each until it answers (start-up must
/// not fail because a dependency starts later), then builds the service.
async fn connect(
    config: &Config,
    service: Service,
    catalog: Option<Catalog>,
    schema: Schema,
    readiness: &Readiness,
) -> anyhow::Result<Services> {
    let name = service.name();
    let url = config.database_url_for(name)?;
    let redacted = redact_url(&url);
    let max = config.database_max_connections;
    let waiting = Waiting::new(readiness.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nats = retry(&waiting, "nats", || connect_nats(config));
    let context = || format!("opening the {name} database {redacted}");
    let mut services = Services {
        intake: None,
        triage: None,
        orchestration: None,
        notification: None,
        directory: None,
        silences: None,
        audit_outbox: None,
        bus: None,
        dependencies: Vec::new(),
    };
    let nats_bus: Arc<NatsBus> = match service {
        Service::Intake => {
            let (nats, store) = bus_and_store(nats, &waiting, &context, || {
                PgIntakeStore::connect_with_schema(&url, max, clock.clone(), schema)
            })
            .await;
            let triage = config.peers.triage.as_deref().unwrap_or_default();
            let intake = build_intake(
                config,
                Arc::new(store),
                nats.clone(),
                firebreak_proto::access::authed(
                    peer_channel(triage, &ClientTls::for_peers(&config.tls))?,
                    config.auth.service_token.as_ref().map(|t| t.0.as_str()),
                ),
                clock.clone(),
                secrets_keyring(config, None)?,
            )
            .await?;
            services.silences = Some((intake.silencer(), clock));
            services.intake = Some(intake);
            nats
        }
        Service::Triage => {
            let (nats, store) = bus_and_store(nats, &waiting, &context, || {
                PgTriageStore::connect_with_schema(&url, max, clock.clone(), schema)
            })
            .await;
            services.triage = Some(
                Triage::new(Arc::new(store), nats.clone(), config.taxonomy(), clock)
                    .with_lifecycle(config.lifecycle())
                    .with_grouping(config.grouping.grouping()?)
                    .with_review_template(config.review.template.clone())?,
            );
            nats
        }
        Service::Orchestration => {
            let (nats, store) = bus_and_store(nats, &waiting, &context, || {
                PgOrchestrationStore::connect_with_schema(&url, max, clock.clone(), schema)
            })
            .await;
            let catalog = match catalog {
                Some(c) => c,
                None => load_catalog(config)?,
            };
            services.orchestration = Some(build_orchestration(
                config,
                Arc::new(store),
                nats.clone(),
                catalog,
                clock,
            )?);
            nats
        }
        Service::Notification => {
            let (nats, store) = bus_and_store(nats, &waiting, &context, || {
                PgNotificationStore::connect_with_schema(&url, max, clock.clone(), schema)
            })
            .await;
            let store = Arc::new(store);
            let directory = Directory::new(store.clone()).with_clock(clock.clone());
            directory
                .declare(&config.users, &config.teams)
                .await
                .context("declaring the configuration's users and teams")?;
            check_schedules(config, &directory).await?;
            services.directory = Some(directory.clone());
            let notification =
                build_notification(config, store.clone(), store, nats.clone(), clock)?
                    .with_directory(directory);
            notification
                .declare_schedules(&config.schedules)
                .await
                .map_err(|e| anyhow::anyhow!("invalid schedules: {e}"))?;
            services.notification = Some(notification);
            nats
        }
    };
    services.bus = Some(nats_bus.clone());
    services.dependencies.push(database(
        "database",
        HealthCheck::postgres(&url, name).context("invalid database_url")?,
    ));
    // Intake keeps accepting while NATS is away (its outbox holds the events until the relay
    // can publish them), so NATS does not decide its readiness; it is still reported, in
    // `/readyz` and `firebreak_dependency_up`. The others cannot work without the bus.
    services.dependencies.push(Dependency {
        name: "nats".to_owned(),
        required: service != Service::Intake,
        probe: Arc::new(move || {
            let bus = nats_bus.clone();
            Box::pin(async move {
                if bus.is_connected() {
                    Ok(())
                } else {
                    Err("not connected".to_owned())
                }
            })
        }),
    });
    tracing::info!(service = name, "connected to the database and NATS");
    Ok(services)
}

/// `firebreak migrate`: creates each service's Postgres database if it is missing and applies
/// the migrations it lacks, one service after the other (a database's advisory lock keeps a
/// migrating replica of an older release, or a second Job, from racing it).
pub async fn migrate(config: &Config, services: &[Service]) -> anyhow::Result<Vec<Migrated>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = SystemClock;
    let mut done = Vec::new();
    for &service in services {
        let name = service.name();
        let url = config.database_url_for(name)?;
        let migrated = match service {
            Service::Intake => PgIntakeStore::migrate(&url, &clock).await,
            Service::Triage => PgTriageStore::migrate(&url, &clock).await,
            Service::Orchestration => PgOrchestrationStore::migrate(&url, &clock).await,
            Service::Notification => PgNotificationStore::migrate(&url, &clock).await,
        }
        .with_context(|| format!("migrating the {name} database {}", redact_url(&url)))?;
        tracing::info!(
            service = name,
            from = migrated.from,
            to = migrated.to,
            "database migrated"
        );
        done.push(migrated);
    }
    Ok(done)
}

/// What start-up is waiting for, shown by `/readyz`.
#[derive(Clone)]
struct Waiting {
    readiness: Readiness,
    waits: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Waiting {
    fn new(readiness: Readiness) -> Self {
        Self {
            readiness,
            waits: Default::default(),
        }
    }

    async fn update(&self, what: &'static str, state: Option<String>) {
        let problems: Vec<String> = {
            let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
            match state {
                Some(s) => waits.insert(what, s),
                None => waits.remove(what),
            };
            waits.iter().map(|(k, v)| format!("{k}: {v}")).collect()
        };
        let problems = if problems.is_empty() {
            vec!["starting".to_owned()]
        } else {
            problems
        };
        self.readiness.set(false, problems).await;
    }
}

/// The first wait after a failed attempt, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// NATS and the service's store (`connect`), each retried until it answers, reached at once.
async fn bus_and_store<S, C, Fut>(
    nats: impl std::future::Future<Output = NatsBus>,
    waiting: &Waiting,
    context: &(dyn Fn() -> String + Sync),
    connect: C,
) -> (Arc<NatsBus>, S)
where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = firebreak_storage::Result<S>>,
{
    let store = retry(waiting, "database", || async {
        connect().await.with_context(context)
    });
    let (nats, store) = tokio::join!(nats, store);
    (Arc::new(nats), store)
}

/// Runs `attempt` until it succeeds, waiting longer after each failure (to 10 s) and logging
/// each one.
async fn retry<T, F, Fut>(waiting: &Waiting, what: &'static str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut delay = RETRY_FIRST;
    for n in 1u64.. {
        match attempt().await {
            Ok(v) => {
                if n > 1 {
                    tracing::info!(dependency = what, attempts = n, "connected");
                }
                waiting.update(what, None).await;
                return v;
            }
            Err(e) => {
                tracing::warn!(
                    dependency = what,
                    attempt = n,
                    retry_in_ms = delay.as_millis() as u64,
                    error = format!("{e:#}"),
                    "cannot connect yet; retrying"
                );
                waiting
                    .update(what, Some(format!("waiting (attempt {n}): {e:#}")))
                    .await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
    unreachable!("the attempts never run out")
}

/// `/livez`, `/readyz`, `/healthz` (an alias of `/readyz`) and `/metrics` (with the process's
/// `gauges`).
fn health_routes(readiness: &Readiness, gauges: &Arc<firebreak_telemetry::Gauges>) -> axum::Router {
    let ready = {
        let readiness = readiness.clone();
        move || {
            let answer = readiness.http();
            async move { answer }
        }
    };
    axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready.clone()))
        .route("/healthz", get(ready))
        .route("/metrics", get(metrics).with_state(gauges.clone()))
}

/// `/metrics`: OpenMetrics for a scraper that asks for it (Prometheus does, in `Accept`),
/// else the Prometheus text format 0.0.4 that every tool reads (`promtool check metrics`);
/// the gauges of the process's services are read for it (at most once a second).
async fn metrics(
    axum::extract::State(gauges): axum::extract::State<Arc<firebreak_telemetry::Gauges>>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let open_metrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let m = firebreak_telemetry::metrics();
    let readings = gauges.read().await;
    if open_metrics {
        (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.render_with(&readings),
        )
    } else {
        (
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            m.render_text_with(&readings),
        )
    }
}

/// The gRPC routes: health and reflection from the start, the services once built (until
/// then their calls are `UNAVAILABLE`, which clients retry).
#[derive(Clone)]
struct Late {
    base: tonic::service::Routes,
    full: Arc<std::sync::OnceLock<tonic::service::Routes>>,
}

impl Late {
    fn new(base: tonic::service::Routes) -> Self {
        Self {
            base,
            full: Default::default(),
        }
    }

    fn set(&self, routes: tonic::service::Routes) {
        let _ = self.full.set(routes);
    }
}

impl tower::Service<axum::http::Request<tonic::body::Body>> for Late {
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Routes (an axum router) are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        let always = path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.");
        let routes = match self.full.get() {
            _ if always => self.base.clone(),
            Some(full) => full.clone(),
            None => {
                return Box::pin(async {
                    Ok(
                        tonic::Status::unavailable("starting: waiting for the database and NATS")
                            .into_http(),
                    )
                });
            }
        };
        Box::pin(tower::ServiceExt::oneshot(routes, req))
    }
}

/// The HTTP routes: health and metrics from the start, intake's webhooks once built (503
/// until then).
#[derive(Clone)]
struct LateHttp {
    starting: axum::Router,
    full: Arc<std::sync::OnceLock<axum::Router>>,
}

impl LateHttp {
    fn new(base: axum::Router) -> Self {
        Self {
            starting: base
                .fallback(|| async {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "starting: waiting for the database and NATS\n",
                    )
                })
                .layer(crate::traced::TraceLayer(crate::traced::Protocol::Http))
                .layer(crate::metered::MeterLayer(crate::traced::Protocol::Http)),
            full: Default::default(),
        }
    }

    fn set(&self, router: axum::Router) {
        let _ = self.full.set(
            router
                .layer(crate::traced::TraceLayer(crate::traced::Protocol::Http))
                .layer(crate::metered::MeterLayer(crate::traced::Protocol::Http)),
        );
    }

    fn router(&self) -> axum::Router {
        self.full.get().unwrap_or(&self.starting).clone()
    }
}

/// Serves HTTP/1 on `listener` under the connection limits until `stop`: headers must arrive
/// within `header_timeout`, and a request must be answered within `request_timeout` (408
/// otherwise, body included); connections are then given the time of one request to finish.
/// The gRPC server's connections: accepted under the limits, and (with TLS) each handshake
/// on a task of its own, so a client that stalls its handshake holds up no other.
fn grpc_incoming(
    listener: TcpListener,
    connections: net::Connections,
    tls: Option<ServerTls>,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<tls::Stream>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(futures::stream::unfold(
            (listener, connections),
            |(l, c)| async move {
                let next = c.accept(&l).await.map(tls::Stream::Plain);
                Some((next, (l, c)))
            },
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = connections.accept(&listener) => a,
                () = tx.closed() => return,
            };
            match accepted {
                Ok(conn) => {
                    let (tls, tx) = (tls.clone(), tx.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = tls.accept(conn).await {
                            let _ = tx.send(Ok(stream)).await;
                        }
                    });
                }
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|next| (next, rx))
    }))
}

async fn serve_http(
    listener: TcpListener,
    connections: net::Connections,
    tls: Option<ServerTls>,
    routes: LateHttp,
    request_timeout: Option<Duration>,
    header_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let io = tokio::select! {
            () = stop.cancelled() => break,
            io = connections.accept(&listener) => io,
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "accepting an HTTP connection failed");
                continue;
            }
        };
        let info = io.info();
        let routes = routes.clone();
        let service =
            hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
                let guard = info.begin();
                let router = routes.router();
                let mut req = req.map(axum::body::Body::new);
                // Where the call came from, for handlers that tell sources apart.
                req.extensions_mut()
                    .insert(firebreak_proto::access::RemoteAddr(info.remote()));
                async move {
                    let call = tower::ServiceExt::oneshot(router, req);
                    let response = match request_timeout {
                        None => call.await,
                        Some(t) => match tokio::time::timeout(t, call).await {
                            Ok(r) => r,
                            Err(_) => Ok(axum::response::IntoResponse::into_response((
                                axum::http::StatusCode::REQUEST_TIMEOUT,
                                "request timeout\n",
                            ))),
                        },
                    };
                    response.map(|r| r.map(|body| net::Guarded::new(body, Some(guard))))
                }
            });
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let io = match &tls {
                None => tls::Stream::Plain(io),
                Some(t) => match t.accept(io).await {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "an HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let wait = request_timeout.unwrap_or(Duration::from_secs(10));
    if tokio::time::timeout(wait, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open at shutdown were closed");
    }
    Ok(())
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

    #[tokio::test]
    async fn a_peer_entry_resolves_to_every_address() {
        use tonic::transport::channel::Change;
        let addresses = peer_addresses("http://localhost:7410, http://127.0.0.2:7411").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let task = tokio::spawn(resolve_peers(addresses, tx, ClientTls::default()));
        let mut seen = std::collections::BTreeSet::new();
        while !(seen.contains("http://127.0.0.1:7410") && seen.contains("http://127.0.0.2:7411")) {
            match rx.recv().await {
                Some(Change::Insert(key, _)) => seen.insert(key),
                other => panic!("unexpected {other:?} after {seen:?}"),
            };
        }
        drop(rx);
        task.await.unwrap();

        let err = |entry: &str| format!("{:#}", peer_addresses(entry).err().unwrap());
        assert!(err(" , ").contains("no address"));
        assert!(err("http://:7400").contains("has no host"));
        let many = vec!["http://a:1"; 65].join(",");
        assert!(err(&many).contains("at most 64"));
    }

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
