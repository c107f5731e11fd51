//! Benchmark: what 1,000 active silences, none matching, cost on intake → incident latency.
//!
//! One embedded stack (all four services, SQLite, durable). Callers send gRPC
//! `RaiseIncident`, which answers once triage has opened or joined the incident: its latency
//! is raise → incident. Lines alternate between no silences and 1,000 active ones (made and
//! then expired over the gRPC `SilenceService`), twice, on the same stack, so each pair
//! differs only in the silences intake checks every alert against. Each silence has two
//! matchers, a regex first, that no bench alert satisfies, so every alert is checked against
//! all 1,000. A line says the silences in force, alerts/s, raise → incident p50/p99, the
//! calls and CPU time per alert. Before them, the transport ceiling (the gRPC health check,
//! flat out) and, after them, the matching alone: one alert against 1,000 compiled silences,
//! in this process, without the service around it.
//!
//! Run with `cargo bench -p firebreak-e2e --bench silences`; `FIREBREAK_BENCH_SECONDS`
//! sets each line's length (4 s by default).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use firebreak::App;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{
    self, intake_service_client::IntakeServiceClient, silence_service_client::SilenceServiceClient,
};
use support::{Caller, seconds};

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Concurrent callers, and the rate they share: well under what the stack takes flat out,
/// so latency is the work of one alert, not a queue.
const CALLERS: usize = 8;
const RATE: f64 = 200.0;
/// Silences in force on the loaded lines.
const SILENCES: usize = 1000;

/// A caller raising one alert per call; asserts it opened or joined an incident.
struct Raise {
    intake: IntakeServiceClient<AuthedChannel>,
    seq: Arc<AtomicU64>,
}

impl Caller for Raise {
    async fn call(&mut self) -> Duration {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        // A few hundred dedup keys: alerts mostly join incidents, as in a storm.
        let alert = v1::AlertInput {
            title: format!("bench alert {}", n % 300),
            source: "bench".into(),
            dedup_key: format!("bench-{}", n % 300),
            labels: [
                ("alertname".to_owned(), "BenchAlert".to_owned()),
                ("job".to_owned(), "web".to_owned()),
                ("instance".to_owned(), format!("host-{n}")),
            ]
            .into(),
            ..Default::default()
        };
        let start = Instant::now();
        let r = self
            .intake
            .raise_incident(v1::RaiseIncidentRequest {
                alert: Some(alert),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let took = start.elapsed();
        assert!(r.silenced_by.is_empty(), "a bench alert was silenced");
        assert!(!r.incident_id.is_empty(), "no incident: {r:?}");
        took
    }
}

/// Silence `n`'s matchers: `job=~"batch-N-.*"`, `alertname="Never-N"` (no bench alert's).
fn matchers(n: usize) -> Vec<v1::SilenceMatcher> {
    vec![
        v1::SilenceMatcher {
            name: "job".into(),
            op: v1::MatchOperator::Regex.into(),
            value: format!("batch-{n}-.*"),
        },
        v1::SilenceMatcher {
            name: "alertname".into(),
            op: v1::MatchOperator::Equal.into(),
            value: format!("Never-{n}"),
        },
    ]
}

/// Makes [`SILENCES`] silences lasting an hour; their ids.
async fn silence(silences: &mut SilenceServiceClient<AuthedChannel>) -> Vec<String> {
    let ends = firebreak_proto::Timestamp {
        seconds: unix_now() + 3600,
        nanos: 0,
    };
    let mut ids = Vec::with_capacity(SILENCES);
    for n in 0..SILENCES {
        let r = silences
            .create_silence(v1::CreateSilenceRequest {
                matchers: matchers(n),
                ends_at: Some(ends),
                comment: "bench".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(r.silence.unwrap().id);
    }
    ids
}

/// The Unix time now, in seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How many silences are in force (active) on the server.
async fn active(silences: &mut SilenceServiceClient<AuthedChannel>) -> usize {
    silences
        .list_silences(v1::ListSilencesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .silences
        .len()
}

/// The matching alone: one alert's labels against [`SILENCES`] compiled silences, as
/// intake checks them (in force now, then every matcher), per alert.
fn matching_alone() -> String {
    use firebreak_domain::Micros;
    use firebreak_domain::silence::{MatchOp, Matcher, Silence, silences};
    let held: Vec<_> = (0..SILENCES)
        .map(|n| {
            let s = Silence {
                id: n.to_string(),
                matchers: vec![
                    Matcher {
                        name: "job".into(),
                        op: MatchOp::Regex,
                        value: format!("batch-{n}-.*"),
                    },
                    Matcher {
                        name: "alertname".into(),
                        op: MatchOp::Equal,
                        value: format!("Never-{n}"),
                    },
                ],
                starts_at: Micros::from_unix_micros(0),
                ends_at: Micros::from_unix_micros(i64::MAX),
                created_by: "bench".into(),
                comment: "bench".into(),
                updated_at: Micros::from_unix_micros(0),
            };
            let compiled = s.check().unwrap();
            (s, compiled)
        })
        .collect();
    let labels: BTreeMap<String, String> = [
        ("alertname".to_owned(), "BenchAlert".to_owned()),
        ("job".to_owned(), "web".to_owned()),
        ("instance".to_owned(), "host-1".to_owned()),
    ]
    .into();
    let now = Micros::from_unix_micros(1);
    let alerts = 20_000;
    let start = Instant::now();
    let mut hits = 0;
    for _ in 0..alerts {
        hits += held
            .iter()
            .filter(|(s, c)| s.starts_at <= now && now < s.ends_at && silences(c, &labels))
            .count();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / alerts as f64;
    assert_eq!(hits, 0);
    format!("  matching alone: one alert against {SILENCES} silences (none matching) {per:>8.1} µs")
}

#[tokio::main]
async fn main() {
    println!(
        "silences on intake → incident latency: embedded mode (SQLite, durable), gRPC RaiseIncident (answered once triage opened or joined the incident), {CALLERS} callers paced at {RATE:.0} alerts/s in all, {} s a line, one stack, lines alternating 0 and {SILENCES} active silences (none matching)",
        seconds()
    );
    println!("{}", support::machine());
    let dir = tempfile::tempdir().unwrap();
    let config = support::config(dir.path(), "{}\n");
    let app = App::build(config).await.unwrap();
    let grpc = format!("http://{}", app.grpc_addr());
    let (token, shutdown) = support::serve(app, &dir.path().join("data"));
    println!("{}", support::transport_ceiling(&grpc, &token).await);
    let mut silences = SilenceServiceClient::new(support::connect(&grpc, &token).await);
    let seq = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        callers.push(IntakeServiceClient::new(
            support::connect(&grpc, &token).await,
        ));
    }
    let every = Duration::from_secs_f64(CALLERS as f64 / RATE);
    // A first line to warm the stack (incidents opened, caches filled), not reported.
    let warm = callers
        .iter()
        .map(|c| Raise {
            intake: c.clone(),
            seq: seq.clone(),
        })
        .collect();
    support::drive(warm, 1, Some(every)).await;
    for round in 1..=2 {
        for loaded in [false, true] {
            let ids = if loaded {
                let made = Instant::now();
                let ids = silence(&mut silences).await;
                println!(
                    "  (made {SILENCES} silences in {:.1} s)",
                    made.elapsed().as_secs_f64()
                );
                ids
            } else {
                Vec::new()
            };
            let in_force = active(&mut silences).await;
            assert_eq!(in_force, if loaded { SILENCES } else { 0 });
            let raises = callers
                .iter()
                .map(|c| Raise {
                    intake: c.clone(),
                    seq: seq.clone(),
                })
                .collect();
            let load = support::drive(raises, seconds(), Some(every)).await;
            println!(
                "{}",
                load.line(
                    &format!("round {round}, {in_force:>4} silences"),
                    1,
                    "alert"
                )
                .replace("ack p50", "raise→incident p50")
            );
            for id in ids {
                silences
                    .expire_silence(v1::ExpireSilenceRequest { id })
                    .await
                    .unwrap();
            }
        }
    }
    println!("{}", matching_alone());
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
}
