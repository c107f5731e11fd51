//! Benchmark: intake throughput and acknowledgement latency in embedded mode (durable:
//! every answer comes after its alerts are committed to SQLite).
//!
//! Scenarios: gRPC one alert per call, gRPC batches of 100, the Alertmanager webhook (groups
//! of 10), the PagerDuty v2 webhook (one event per call), each with 64 concurrent callers for
//! a few seconds; then gRPC single-alert calls paced at 5,000 alerts/s for the latency at
//! that load. A first line calls the gRPC health check the same way: what the transport
//! alone (client and server in this process) allows on this machine, the ceiling of one
//! alert per call. A last line sends gRPC single-alert calls to intake alone
//! ([`App::build_intake_alone`]: intake's database and the embedded bus, served as the full
//! stack serves them, with no triage, orchestration or notification consuming): intake's
//! durable acceptance rate with nothing downstream competing for the machine.
//!
//! Each line prints alerts/s, ack p50/p99, the process's CPU time per alert and its resident
//! memory: the peak during the line (`VmHWM`, reset at the line's start by writing 5 to
//! `/proc/self/clear_refs`; "not reset" when that fails, the peak then being the process's
//! since an earlier line or its start) and what is resident at the line's end (`VmRSS`).
//! Callers run in the same process, so both include them, and the allocator may keep pages
//! earlier lines freed. The first lines say how many cores the machine has and whether this
//! is a debug build, whose figures mean nothing.
//!
//! Run with `just bench`; arguments after `--` pick the lines whose name holds them.
//! `FIREBREAK_BENCH_SECONDS` shortens (or lengthens) each line's load, 4 s by default; a
//! smoke test may set it to 1.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firebreak::{App, Config};
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CALLERS: usize = 64;
/// Each line's load, unless `FIREBREAK_BENCH_SECONDS` says otherwise.
const SECONDS: u64 = 4;
const AM_KEY: &str = "bench-am-key-000000000001";
const PD_KEY: &str = "bench-pd-key-000000000001";

/// Each line's load in seconds: `FIREBREAK_BENCH_SECONDS`, else [`SECONDS`].
fn seconds() -> u64 {
    std::env::var("FIREBREAK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(SECONDS)
}

/// What a line runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stack {
    /// The embedded stack: all four services.
    Full,
    /// Intake alone: nothing consumes what it accepts.
    IntakeAlone,
    /// All four services, both servers speaking TLS (a certificate made at start).
    FullTls,
}

/// What one call sends.
#[derive(Clone, Copy)]
enum Call {
    /// The gRPC health check: the transport, no alert.
    Health,
    GrpcOne,
    GrpcBatch,
    Alertmanager,
    PagerDuty,
}

impl Call {
    fn alerts(self) -> u64 {
        match self {
            Self::Health | Self::GrpcOne | Self::PagerDuty => 1,
            Self::GrpcBatch => 100,
            Self::Alertmanager => 10,
        }
    }
}

struct Target {
    health: HealthClient<AuthedChannel>,
    grpc: IntakeServiceClient<AuthedChannel>,
    incidents: IncidentServiceClient<AuthedChannel>,
    http: reqwest::Client,
    base: String,
    seq: Arc<AtomicU64>,
}

impl Target {
    /// Sends one call; the latency of its answer.
    async fn send(&mut self, call: Call) -> Duration {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // A few hundred dedup keys: alerts mostly join incidents, as in a real storm.
        let alert = |i: u64| v1::AlertInput {
            title: format!("bench alert {}", i % 300),
            source: "bench".into(),
            dedup_key: format!("bench-{}", i % 300),
            labels: [("instance".to_owned(), format!("host-{i}"))].into(),
            ..Default::default()
        };
        let start = Instant::now();
        match call {
            Call::Health => {
                let r = self
                    .health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                assert!(r.is_ok(), "{r:?}");
            }
            Call::GrpcOne | Call::GrpcBatch => {
                let alerts = (0..call.alerts())
                    .map(|i| alert(n * call.alerts() + i))
                    .collect();
                let r = self
                    .grpc
                    .raise_alerts(v1::RaiseAlertsRequest {
                        alerts,
                        idempotency_key: String::new(),
                    })
                    .await;
                assert!(r.is_ok(), "{r:?}");
            }
            Call::Alertmanager => {
                let alerts: Vec<_> = (0..10)
                    .map(|i| json!({
                        "status": "firing",
                        "labels": { "alertname": "BenchAlert", "instance": format!("host-{n}-{i}") },
                        "annotations": { "summary": "bench" },
                        "fingerprint": format!("{:016x}", n * 10 + i),
                    }))
                    .collect();
                let body = json!({
                    "version": "4", "groupKey": format!("{{}}:{{alertname=\"BenchAlert\", shard=\"{}\"}}", n % 300),
                    "status": "firing", "alerts": alerts,
                });
                let r = self
                    .http
                    .post(format!("{}/v1/webhooks/alertmanager/{AM_KEY}", self.base))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            Call::PagerDuty => {
                let body = json!({
                    "routing_key": PD_KEY, "event_action": "trigger", "dedup_key": format!("bench-{n}"),
                    "payload": { "summary": "bench", "source": "bench", "severity": "warning" },
                });
                let r = self
                    .http
                    .post(format!("{}/v2/enqueue", self.base))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }
        start.elapsed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs `call` from `CALLERS` callers for [`seconds`], or paced at `rate` alerts/s in all.
/// `rss_reset` says whether the peak resident memory was reset at the line's start.
async fn scenario(
    name: &str,
    targets: &[Target],
    call: Call,
    rate: Option<u64>,
    stack: Stack,
    rss_reset: bool,
) {
    let cpu_before = cpu_seconds();
    let until = Instant::now() + Duration::from_secs(seconds());
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        let mut t = Target {
            health: t.health.clone(),
            grpc: t.grpc.clone(),
            incidents: t.incidents.clone(),
            http: t.http.clone(),
            base: t.base.clone(),
            seq: t.seq.clone(),
        };
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            // Paced: each caller sends its share of the rate on a fixed schedule.
            let mut tick = rate.map(|r| {
                let per_caller = r as f64 / CALLERS as f64 / call.alerts() as f64;
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / per_caller));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while Instant::now() < until {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                latencies.push(t.send(call).await);
            }
            latencies
        });
    }
    let started = Instant::now();
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    all.sort_unstable();
    let alerts = all.len() as u64 * call.alerts();
    // Downstream: how fast triage turns the backlog into incidents (alerts attached per
    // second over the next 3 s). The PagerDuty scenario opens an incident per event, too many
    // to count here. Intake alone has no triage to ask.
    let downstream = match call {
        _ if stack == Stack::IntakeAlone => String::new(),
        Call::Health | Call::PagerDuty => String::new(),
        _ => {
            let mut incidents = targets[0].incidents.clone();
            let mut attached = async || -> u64 {
                incidents
                    .list_incidents(v1::ListIncidentsRequest {
                        state: String::new(),
                        limit: 1000,
                        page_token: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .incidents
                    .iter()
                    .map(|i| u64::from(i.alert_count))
                    .sum()
            };
            let before = attached().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = attached().await;
            format!(
                "  triage {:>6.0} alerts/s ({} of {alerts} attached)",
                (after - before) as f64 / 3.0,
                after
            )
        }
    };
    let unit = match call {
        Call::Health => "call",
        _ => "alert",
    };
    println!(
        "  {name:<34} {:>8.0} {unit}s/s  ack p50 {:>6.2} ms  p99 {:>7.2} ms  ({} calls)  cpu {:>4.0} µs/{unit}  {}{downstream}",
        alerts as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len(),
        cpu * 1e6 / alerts as f64,
        rss(rss_reset),
    );
}

/// Resets the process's peak resident memory (`VmHWM`) to what is resident now; false when
/// the kernel refused (not Linux, or no write access to `clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory since the last reset, and what is resident now, from
/// `/proc/self/status`: callers, stack and allocator together.
fn rss(reset: bool) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mib = |field: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "?".to_owned(),
                |kib| format!("{:.0}", kib as f64 / 1024.0),
            )
    };
    let peak = if reset { "peak" } else { "peak (not reset)" };
    format!(
        "rss {peak} {} MiB, now {} MiB",
        mib("VmHWM:"),
        mib("VmRSS:")
    )
}

/// CPU time (user and system) this process has used, in seconds: callers, the stack and
/// its downstream work together. Steadier than alerts/s on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// A CA (its PEM) and a TLS configuration for `localhost` signed by it, written under `dir`.
fn certificates(dir: &std::path::Path) -> (Vec<u8>, firebreak::config::TlsConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let tls = firebreak::config::TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ca_file: Some(ca_file),
        ..Default::default()
    };
    (ca.pem().into_bytes(), tls)
}

/// A fresh embedded stack (all of it, or intake alone) and `CALLERS` connected callers, so
/// no scenario inherits the previous one's downstream backlog.
async fn start(stack: Stack) -> (Vec<Target>, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "integrations:\n  - {{ name: bench-am, kind: alertmanager, key: {AM_KEY} }}\n  - {{ name: bench-pd, kind: pagerduty, key: {PD_KEY} }}\n"
        ),
    )
    .unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir(&runbooks).unwrap();
    let mut config = Config::load(Some(&file), Vec::new()).unwrap();
    config.data_dir = dir.path().join("data");
    config.runbooks_dir = Some(runbooks);
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    // The benchmark measures throughput, not the keyless callers' rate limit.
    config.intake_anonymous_rate_limit_per_second = 0;
    let ca = (stack == Stack::FullTls).then(|| {
        let (ca, tls) = certificates(dir.path());
        config.tls = tls;
        ca
    });
    let app = match stack {
        Stack::Full | Stack::FullTls => App::build(config).await.unwrap(),
        Stack::IntakeAlone => App::build_intake_alone(config).await.unwrap(),
    };
    let grpc = match &ca {
        None => format!("http://{}", app.grpc_addr()),
        Some(_) => format!("https://localhost:{}", app.grpc_addr().port()),
    };
    let base = format!("http://{}", app.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let seq = Arc::new(AtomicU64::new(0));
    // Every call carries the admin token the first start wrote (verified in memory).
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let mut targets = Vec::new();
    for _ in 0..CALLERS {
        let mut endpoint = tonic::transport::Endpoint::from_shared(grpc.clone()).unwrap();
        if let Some(ca) = &ca {
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                )
                .unwrap();
        }
        let channel = endpoint.connect().await.unwrap();
        let channel = firebreak_proto::access::authed(channel, Some(token.trim()));
        targets.push(Target {
            health: HealthClient::new(channel.clone()),
            grpc: IntakeServiceClient::new(channel.clone()),
            incidents: IncidentServiceClient::new(channel),
            http: reqwest::Client::new(),
            base: base.clone(),
            seq: seq.clone(),
        });
    }
    (targets, shutdown, dir)
}

#[tokio::main]
async fn main() {
    println!(
        "intake, embedded mode (SQLite WAL, committed before each answer; triage, orchestration and notification run alongside unless intake is alone), {CALLERS} callers, {} s each, a fresh stack per line; rss is the whole process, callers included",
        seconds()
    );
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let build = if cfg!(debug_assertions) {
        "debug (debug assertions on: figures mean nothing)"
    } else {
        "release (no debug assertions)"
    };
    println!("machine: {cores} cores; build: {build}");
    let runs: [(&str, Call, Option<u64>, Stack); 10] = [
        (
            "gRPC health check (transport only)",
            Call::Health,
            None,
            Stack::Full,
        ),
        (
            "gRPC RaiseAlerts, 1 alert per call",
            Call::GrpcOne,
            None,
            Stack::Full,
        ),
        (
            "gRPC RaiseAlerts, batches of 100",
            Call::GrpcBatch,
            None,
            Stack::Full,
        ),
        (
            "Alertmanager webhook, groups of 10",
            Call::Alertmanager,
            None,
            Stack::Full,
        ),
        (
            "PagerDuty v2 webhook, 1 per call",
            Call::PagerDuty,
            None,
            Stack::Full,
        ),
        (
            "gRPC 1 per call, paced at 5,000/s",
            Call::GrpcOne,
            Some(5_000),
            Stack::Full,
        ),
        (
            "gRPC 1 per call, intake alone",
            Call::GrpcOne,
            None,
            Stack::IntakeAlone,
        ),
        (
            "gRPC RaiseAlerts, 1 alert per call, TLS",
            Call::GrpcOne,
            None,
            Stack::FullTls,
        ),
        (
            "gRPC RaiseAlerts, batches of 100, TLS",
            Call::GrpcBatch,
            None,
            Stack::FullTls,
        ),
        (
            "gRPC 1 per call, paced at 5,000/s, TLS",
            Call::GrpcOne,
            Some(5_000),
            Stack::FullTls,
        ),
    ];
    // `cargo bench --bench intake -- paced` runs only the lines whose name holds "paced".
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (name, call, rate, stack) in runs {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        // The peak is the line's own: its stack, its callers and their load.
        let rss_reset = reset_peak_rss();
        let (targets, shutdown, dir) = start(stack).await;
        scenario(name, &targets, call, rate, stack, rss_reset).await;
        shutdown.cancel();
        drop(targets);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(dir);
    }
}
