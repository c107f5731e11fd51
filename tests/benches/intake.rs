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
//! `FIREBREAK_BENCH_OTEL=RATIO` exports spans at that sample ratio (0.01, 1.0) to an
//! OTLP/gRPC receiver in this process (which costs this process its CPU too, as a collector
//! on the same machine would); unset, nothing is exported (spans still carry trace context,
//! as in production without an endpoint). The tracing overhead is two runs compared.
//!
//! Run with `just bench`; arguments after `--` pick the lines whose name holds them.
//! `FIREBREAK_BENCH_SECONDS` shortens (or lengthens) each line's load, 4 s by default; a
//! smoke test may set it to 1.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firebreak::App;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_client::HealthClient;

use support::{CALLERS, Caller, reset_peak_rss, rss, seconds};

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const AM_KEY: &str = "bench-am-key-000000000001";
const PD_KEY: &str = "bench-pd-key-000000000001";

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
                support::Health(self.health.clone()).call().await;
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

/// A caller of a line: its target, making its line's call.
struct Calling {
    target: Target,
    call: Call,
}

impl Caller for Calling {
    fn call(&mut self) -> impl Future<Output = Duration> + Send {
        self.target.send(self.call)
    }
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
    let callers = targets
        .iter()
        .map(|t| Calling {
            target: Target {
                health: t.health.clone(),
                grpc: t.grpc.clone(),
                incidents: t.incidents.clone(),
                http: t.http.clone(),
                base: t.base.clone(),
                seq: t.seq.clone(),
            },
            call,
        })
        .collect();
    // Paced: each caller sends its share of the rate on a fixed schedule.
    let every =
        rate.map(|r| Duration::from_secs_f64(CALLERS as f64 * call.alerts() as f64 / r as f64));
    let load = support::drive(callers, seconds(), every).await;
    let alerts = load.latencies.len() as u64 * call.alerts();
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
                        page_size: 1000,
                        ..Default::default()
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
        "{}  {}{downstream}",
        load.line(name, call.alerts(), unit),
        rss(rss_reset)
    );
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
    let mut config = support::config(
        dir.path(),
        &format!(
            "integrations:\n  - {{ name: bench-am, kind: alertmanager, key: {AM_KEY} }}\n  - {{ name: bench-pd, kind: pagerduty, key: {PD_KEY} }}\n"
        ),
    );
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
    let (token, shutdown) = support::serve(app, &dir.path().join("data"));
    let seq = Arc::new(AtomicU64::new(0));
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
        let channel = firebreak_proto::access::authed(channel, Some(&token));
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
    // Telemetry is the process's: set up once, before any stack, as `firebreak up` does.
    let receiver = match std::env::var("FIREBREAK_BENCH_OTEL") {
        Ok(ratio) => {
            let receiver = firebreak_testkit::otlp::OtlpReceiver::counting().await;
            firebreak_telemetry::init(firebreak_telemetry::TelemetryOptions {
                service: "firebreak".into(),
                otel: firebreak_telemetry::OtelConfig {
                    endpoint: Some(receiver.endpoint()),
                    sample_ratio: Some(ratio.parse().expect("FIREBREAK_BENCH_OTEL: a ratio")),
                    ..Default::default()
                },
                default_log_filter: "off".into(),
                ..Default::default()
            })
            .expect("telemetry");
            println!(
                "tracing: spans exported at sample ratio {ratio} to an in-process OTLP receiver"
            );
            Some(receiver)
        }
        Err(_) => {
            println!("tracing: nothing exported (spans carry context only)");
            None
        }
    };
    println!(
        "intake, embedded mode (SQLite WAL, committed before each answer; triage, orchestration and notification run alongside unless intake is alone), {CALLERS} callers, {} s each, a fresh stack per line; rss is the whole process, callers included",
        seconds()
    );
    println!("{}", support::machine());
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
    if let Some(r) = receiver {
        // The last batch leaves within the batch delay.
        tokio::time::sleep(Duration::from_secs(6)).await;
        println!("spans received: {}", r.count());
    }
}
