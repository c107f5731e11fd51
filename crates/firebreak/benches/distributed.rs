//! The distributed stack's throughput and latency: `firebreak serve` processes (release
//! build) on the machine's Postgres and a nats-server of their own, fed gRPC batches by
//! concurrent clients. Prints sustained alerts/s (accepted, and triaged into incidents) and
//! p50/p99 alert→incident latency. A benchmark, not a test: it asserts nothing about time.
//!
//! Two phases: flat out (`BENCH_ALERTS` as fast as intake takes them: throughput, with the
//! backlog triage builds showing in the latency), then paced (`BENCH_RATE` alerts/s for
//! `BENCH_PACED_SECONDS`: the latency of a stack that keeps up).
//!
//! `cargo bench -p firebreak --bench distributed` (or `just bench`). `BENCH_CLIENTS` and
//! `BENCH_REPLICAS` (of triage) change the load.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "../tests/distributed/harness.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod harness;

use std::time::{Duration, Instant};

use firebreak_proto::v1;
use harness::Deployment;
use sqlx::Row;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Alerts per gRPC batch, and the dedup keys they spread over.
const BATCH: usize = 100;
const KEYS: usize = 2_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env_or("BENCH_ALERTS", 60_000);
    let clients = env_or("BENCH_CLIENTS", 16);
    let replicas = env_or("BENCH_REPLICAS", 1) as u32;
    let rate = env_or("BENCH_RATE", 5_000);
    let paced_seconds = env_or("BENCH_PACED_SECONDS", 20);
    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(
        runbooks.path(),
        // Throughput, not the keyless callers' rate limit, is measured.
        "intake_anonymous_rate_limit_per_second: 0",
    )
    .await;
    d.start_all();
    for n in 2..=replicas {
        d.start("triage", n);
    }
    let url = d.grpc("intake-1");
    let triage = d.db("triage").await;
    let intake = d.db("intake").await;
    println!(
        "distributed: {clients} clients, batches of {BATCH}, {KEYS} keys, triage replicas {replicas}"
    );

    // Flat out: how fast the stack takes alerts in, and how fast triage turns them into
    // incidents (the backlog it builds shows in the latency).
    let since = now_micros();
    let started = Instant::now();
    let (sent, mut acks) = raise(&url, clients, total, None).await;
    let accepted_in = started.elapsed();
    wait_triaged(&triage, sent).await;
    let triaged_in = started.elapsed();
    let latency = latencies(&intake, &triage, since).await;
    println!("  flat out, {sent} alerts:");
    println!(
        "    accepted  {:>8.0} alerts/s   (batch ack p50 {:.1} ms, p99 {:.1} ms)",
        sent as f64 / accepted_in.as_secs_f64(),
        pct(&mut acks, 0.5) as f64 / 1e3,
        pct(&mut acks, 0.99) as f64 / 1e3,
    );
    println!(
        "    triaged   {:>8.0} alerts/s   (all in incidents after {:.1} s)",
        sent as f64 / triaged_in.as_secs_f64(),
        triaged_in.as_secs_f64(),
    );
    print_latency(latency);

    // Paced: `rate` alerts/s offered for `paced_seconds`, the latency of a stack keeping up.
    let paced = rate * paced_seconds;
    let since = now_micros();
    let started = Instant::now();
    let (sent, mut acks) = raise(&url, clients, paced, Some(rate)).await;
    wait_triaged(&triage, sent + total / clients * clients).await;
    let triaged_in = started.elapsed();
    let latency = latencies(&intake, &triage, since).await;
    println!("  paced at {rate} alerts/s, {sent} alerts:");
    println!(
        "    triaged   {:>8.0} alerts/s   (batch ack p50 {:.1} ms, p99 {:.1} ms)",
        sent as f64 / triaged_in.as_secs_f64(),
        pct(&mut acks, 0.5) as f64 / 1e3,
        pct(&mut acks, 0.99) as f64 / 1e3,
    );
    print_latency(latency);
}

fn now_micros() -> i64 {
    firebreak_domain::Clock::now_micros(&firebreak_domain::SystemClock)
}

/// Sends `total` alerts from `clients` concurrent clients in batches, flat out or at `rate`
/// alerts/s overall; returns how many were sent and each batch's ack time (µs).
async fn raise(url: &str, clients: usize, total: usize, rate: Option<usize>) -> (usize, Vec<i64>) {
    let per_client = total / clients;
    // A client's batches are this far apart when paced.
    let every = rate.map(|r| Duration::from_secs_f64((clients * BATCH) as f64 / r as f64));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let url = url.to_owned();
        tasks.spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut intake = v1::intake_service_client::IntakeServiceClient::new(
                firebreak_proto::access::authed(ch, Some(harness::ADMIN_TOKEN)),
            );
            let mut ticker = every.map(|e| {
                // Clients spread over the interval instead of sending together.
                let offset = e.mul_f64(c as f64 / clients as f64);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, e);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let mut acks = Vec::new();
            let mut sent = 0;
            while sent < per_client {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let n = BATCH.min(per_client - sent);
                let alerts: Vec<_> = (sent..sent + n)
                    .map(|i| {
                        let k = (c * per_client + i) % KEYS;
                        v1::AlertInput {
                            title: format!("service {k} latency above SLO"),
                            dedup_key: format!("bench-{k}"),
                            category: "service-outage".into(),
                            source: "bench".into(),
                            ..Default::default()
                        }
                    })
                    .collect();
                let t = Instant::now();
                loop {
                    match intake
                        .raise_alerts(v1::RaiseAlertsRequest {
                            alerts: alerts.clone(),
                            idempotency_key: String::new(),
                        })
                        .await
                    {
                        Ok(_) => break,
                        // Overload answers RESOURCE_EXHAUSTED: back off, as a client should.
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(s) => panic!("raise_alerts: {s}"),
                    }
                }
                acks.push(t.elapsed().as_micros() as i64);
                sent += n;
            }
            acks
        });
    }
    let mut acks = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acks.extend(r.unwrap());
    }
    (per_client * clients, acks)
}

/// Waits until triage holds `n` alerts in incidents.
async fn wait_triaged(triage: &sqlx::PgPool, n: usize) {
    loop {
        let held: i64 = sqlx::query("SELECT COUNT(*) FROM incident_alerts")
            .fetch_one(triage)
            .await
            .unwrap()
            .get(0);
        if held as usize >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Alert→incident latency (µs) of the alerts received since `since`: intake's receive time
/// to triage's attach time (one machine, one clock).
async fn latencies(intake: &sqlx::PgPool, triage: &sqlx::PgPool, since: i64) -> Vec<i64> {
    let received: std::collections::HashMap<String, i64> =
        sqlx::query("SELECT id, received_at FROM alerts WHERE received_at >= $1")
            .bind(since)
            .fetch_all(intake)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    sqlx::query("SELECT alert_id, attached_at FROM incident_alerts")
        .fetch_all(triage)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            let id: String = r.get(0);
            Some(r.get::<i64, _>(1) - received.get(&id)?)
        })
        .collect()
}

fn pct(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn print_latency(mut latency: Vec<i64>) {
    println!(
        "    alert→incident latency p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut latency, 0.5) as f64 / 1e3,
        pct(&mut latency, 0.99) as f64 / 1e3,
    );
}
