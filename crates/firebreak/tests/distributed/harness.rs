//! A distributed deployment for tests: its own `nats-server`, fresh Postgres databases, and
//! `firebreak serve` processes (the real binary) that tests kill and restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_proto::access::AuthedChannel as Channel;
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient, runbook_service_client::RunbookServiceClient,
};
use firebreak_testkit::nats::NatsServer;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_firebreak");

pub(crate) const SERVICES: [&str; 4] = ["intake", "triage", "orchestration", "notification"];

pub(crate) use firebreak_testkit::ports::free_port;

pub(crate) use firebreak_testkit::recorder::Recorder;

/// One `firebreak serve` process.
pub(crate) struct Proc {
    pub(crate) grpc: u16,
    pub(crate) http: u16,
    child: Option<Child>,
}

impl Proc {
    pub(crate) fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
}

/// A distributed deployment: NATS, four Postgres databases, and replicas of each service.
pub(crate) struct Deployment {
    pub(crate) nats: NatsServer,
    /// The Postgres server's URL without a database (`postgres://postgres@127.0.0.1:5432`).
    pub(crate) pg_server: String,
    /// The databases' shared prefix; each service's is `{prefix}_{service}`.
    pub(crate) prefix: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    /// Processes by name: `triage-1`, `triage-2`, …
    pub(crate) procs: BTreeMap<String, Proc>,
    /// The gRPC port of `triage-1`, which intake calls.
    triage_port: u16,
    /// The gRPC port of `notification-1`, whose directory every service's token copy follows.
    notification_port: u16,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Deployments run one at a time: each is several processes on two cores, and Postgres
/// allows a hundred connections.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Postgres server tests use: `FIREBREAK_TEST_POSTGRES` names it, without a database.
pub(crate) fn pg_server() -> String {
    std::env::var("FIREBREAK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        .rsplit_once('/')
        .map(|(server, _)| server.to_owned())
        .unwrap()
}

impl Deployment {
    /// NATS and the configuration; no process yet. `extra` is appended to the config file.
    pub(crate) async fn new(runbooks: &Path, extra: &str) -> Self {
        Self::on(pg_server(), runbooks, extra).await
    }

    /// [`Deployment::new`] on another Postgres server.
    pub(crate) async fn on(pg_server: String, runbooks: &Path, extra: &str) -> Self {
        let serial = SERIAL.lock().await;
        let nats = NatsServer::start().await;
        let prefix = format!("fbt_{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("firebreak.yaml");
        let d = Self {
            nats,
            pg_server,
            prefix,
            dir,
            config,
            procs: BTreeMap::new(),
            triage_port: free_port(),
            notification_port: free_port(),
            _serial: serial,
        };
        let text = format!(
            "database_url: {}/{}_{{service}}\nnats:\n  url: {}\n  ack_wait_seconds: 5\npeers:\n  triage: http://127.0.0.1:{}\n  notification: http://127.0.0.1:{}\nauth:\n  service_token: {SERVICE_TOKEN}\n  admin_token: {ADMIN_TOKEN}\n  sync_interval_ms: 200\nrun_lease_seconds: 3\ndatabase_max_connections: 4\nrunbooks_dir: {}\nshutdown_grace_seconds: 2\n{extra}\n",
            d.pg_server,
            d.prefix,
            d.nats.url(),
            d.triage_port,
            d.notification_port,
            runbooks.display(),
        );
        std::fs::write(&d.config, text).unwrap();
        d
    }

    /// Starts replica `n` of `service` and waits until it listens.
    pub(crate) fn start(&mut self, service: &'static str, n: u32) -> String {
        self.start_with_env(service, n, &[])
    }

    /// The gRPC port of `triage-1`, which the configuration's `peers.triage` names.
    pub(crate) fn triage_port(&self) -> u16 {
        self.triage_port
    }

    /// [`Deployment::start`] with extra environment variables.
    pub(crate) fn start_with_env(
        &mut self,
        service: &'static str,
        n: u32,
        env: &[(&str, &str)],
    ) -> String {
        self.spawn(service, n, env, true)
    }

    /// Starts replica `n` of `service` and returns once it listens, ready or not (it waits
    /// for its database and NATS on its own).
    pub(crate) fn start_unready(&mut self, service: &'static str, n: u32) -> String {
        self.spawn(service, n, &[], false)
    }

    /// Starts a process; waits until it is ready (`/readyz` 200), or only listens.
    fn spawn(
        &mut self,
        service: &'static str,
        n: u32,
        env: &[(&str, &str)],
        ready: bool,
    ) -> String {
        let name = format!("{service}-{n}");
        let (grpc, http) = match self.procs.get(&name) {
            Some(p) => (p.grpc, p.http),
            None if service == "triage" && n == 1 => (self.triage_port, free_port()),
            None if service == "notification" && n == 1 => (self.notification_port, free_port()),
            None => (free_port(), free_port()),
        };
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(["serve", service, "--config"])
            .arg(&self.config)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Proc {
            grpc,
            http,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ready || std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok())
            || (ready && !is_ready(http))
        {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited with {status}:\n{}", self.log(&name));
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen:\n{}",
                self.log(&name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.procs.insert(name.clone(), p);
        name
    }

    /// One replica of each service.
    pub(crate) fn start_all(&mut self) {
        for s in SERVICES {
            self.start(s, 1);
        }
    }

    /// `kill -9`.
    pub(crate) fn kill9(&mut self, name: &str) {
        let p = self.procs.get_mut(name).expect("no such process");
        if let Some(mut c) = p.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts a killed process again on the same ports.
    pub(crate) fn restart(&mut self, name: &str) {
        let (service, n) = name.rsplit_once('-').unwrap();
        let service = SERVICES.into_iter().find(|s| *s == service).unwrap();
        self.start(service, n.parse().unwrap());
    }

    /// The log of a process so far.
    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub(crate) fn grpc(&self, name: &str) -> String {
        self.procs[name].grpc_url()
    }

    pub(crate) fn http(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.procs[name].http)
    }

    pub(crate) async fn intake(&self) -> IntakeServiceClient<Channel> {
        IntakeServiceClient::new(channel(&self.grpc("intake-1")).await)
    }

    pub(crate) async fn incidents(&self) -> IncidentServiceClient<Channel> {
        IncidentServiceClient::new(channel(&self.grpc("triage-1")).await)
    }

    pub(crate) async fn runs(&self) -> RunbookServiceClient<Channel> {
        RunbookServiceClient::new(channel(&self.grpc("orchestration-1")).await)
    }

    /// The gRPC health status of a process ("" service): SERVING, NOT_SERVING, or the error.
    pub(crate) async fn health(&self, name: &str) -> String {
        let Ok(c) = tonic::transport::Endpoint::from_shared(self.grpc(name))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
        else {
            return "unreachable".into();
        };
        let mut h = tonic_health::pb::health_client::HealthClient::new(c);
        match h
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
        {
            Ok(r) => match r.into_inner().status() {
                tonic_health::pb::health_check_response::ServingStatus::Serving => "SERVING",
                tonic_health::pb::health_check_response::ServingStatus::NotServing => "NOT_SERVING",
                _ => "UNKNOWN",
            }
            .into(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// A connection to a service's database, for assertions.
    pub(crate) async fn db(&self, service: &str) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&format!("{}/{}_{service}", self.pg_server, self.prefix))
            .await
            .unwrap()
    }

    /// A client configuration naming each service's first replica.
    pub(crate) fn client_config(&self) -> PathBuf {
        let path = self.dir.path().join("client.yaml");
        let text: String = SERVICES
            .iter()
            .filter(|s| self.procs.contains_key(&format!("{s}-1")))
            .map(|s| format!("{s}: {}\n", self.grpc(&format!("{s}-1"))))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the CLI against this deployment through a client configuration; stdout.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(["--token", ADMIN_TOKEN])
            .arg("--client-config")
            .arg(self.client_config())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "firebreak {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::env::var_os("KEEP_LOGS").is_some() {
            let kept = self.dir.path().to_owned();
            eprintln!("logs kept in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
        // Drop the databases from a thread of its own: Drop cannot await.
        let server = self.pg_server.clone();
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect(&format!("{server}/postgres"))
                    .await
                else {
                    return;
                };
                for s in SERVICES {
                    let sql = format!("DROP DATABASE IF EXISTS {prefix}_{s} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// A connection to `url` sending the deployment's admin token.
pub(crate) async fn channel(url: &str) -> Channel {
    let c = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    firebreak_proto::access::authed(c, Some(ADMIN_TOKEN))
}

/// The service credential every process of a test deployment shares.
pub(crate) const SERVICE_TOKEN: &str =
    "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The deployment's break-glass admin token (`auth.admin_token`).
pub(crate) const ADMIN_TOKEN: &str =
    "fb_adadadadadad_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// Whether the process with HTTP port `port` answers `/readyz` with 200.
fn is_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Waits up to `secs` for `f` to give a value.
pub(crate) async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An alert for RaiseAlerts.
pub(crate) fn alert(title: &str, dedup_key: &str, alert_key: &str) -> v1::AlertInput {
    v1::AlertInput {
        title: title.into(),
        dedup_key: dedup_key.into(),
        alert_key: alert_key.into(),
        source: "distributed-test".into(),
        ..Default::default()
    }
}

/// GETs a page's text.
pub(crate) async fn get(url: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url).await.unwrap().text().await.unwrap()
}
