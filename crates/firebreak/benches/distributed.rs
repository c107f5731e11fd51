//! The distributed stack's throughput and latency: `firebreak serve` processes (release
//! build) on the machine's Postgres and a nats-server of their own, fed gRPC batches by
//! concurrent clients. Prints sustained alerts/s (accepted, and triaged into incidents) and
//! p50/p99 alert→incident latency. A benchmark, not a test: it asserts nothing about time.
//!
//! `cargo bench -p firebreak --bench distributed` (or `just bench`). `BENCH_ALERTS`,
//! `BENCH_CLIENTS`, `BENCH_REPLICAS` (of triage) change the load.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "../tests/distributed/harness.rs"]
#[allow(dead_code, unreachable_pub)]
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env_or("BENCH_ALERTS", 60_000);
    let clients = env_or("BENCH_CLIENTS", 16);
    let replicas = env_or("BENCH_REPLICAS", 1) as u32;
    let batch = 100;
    let keys = 2_000;
    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(runbooks.path(), "").await;
    d.start_all();
    for n in 2..=replicas {
        d.start("triage", n);
    }
    let url = d.grpc("intake-1");

    let started = Instant::now();
    let per_client = total / clients;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let url = url.clone();
        tasks.spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut intake = v1::intake_service_client::IntakeServiceClient::new(ch);
            let mut acks = Vec::new();
            let mut sent = 0;
            while sent < per_client {
                let n = batch.min(per_client - sent);
                let alerts = (sent..sent + n)
                    .map(|i| {
                        let k = (c * per_client + i) % keys;
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
                            alerts: Vec::clone(&alerts),
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
                acks.push(t.elapsed());
                sent += n;
            }
            acks
        });
    }
    let mut acks = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acks.extend(r.unwrap());
    }
    let accepted_in = started.elapsed();
    let sent = per_client * clients;

    let triage = d.db("triage").await;
    loop {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM incident_alerts")
            .fetch_one(&triage)
            .await
            .unwrap()
            .get(0);
        if n as usize >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let triaged_in = started.elapsed();

    // Alert→incident latency: intake's receive time to triage's attach time (one clock).
    let received: std::collections::HashMap<String, i64> =
        sqlx::query("SELECT id, received_at FROM alerts")
            .fetch_all(&d.db("intake").await)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let mut latency: Vec<i64> = sqlx::query("SELECT alert_id, attached_at FROM incident_alerts")
        .fetch_all(&triage)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            let id: String = r.get(0);
            Some(r.get::<i64, _>(1) - received.get(&id)?)
        })
        .collect();
    latency.sort_unstable();
    acks.sort_unstable();
    let pct = |v: &[i64], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    let ack_pct = |p: f64| acks[((acks.len() as f64 * p) as usize).min(acks.len() - 1)];
    println!(
        "distributed: {sent} alerts, {clients} clients, batches of {batch}, {keys} keys, triage replicas {replicas}"
    );
    println!(
        "  accepted  {:>8.0} alerts/s   (batch ack p50 {:.1} ms, p99 {:.1} ms)",
        sent as f64 / accepted_in.as_secs_f64(),
        ack_pct(0.5).as_secs_f64() * 1e3,
        ack_pct(0.99).as_secs_f64() * 1e3,
    );
    println!(
        "  triaged   {:>8.0} alerts/s   (all {sent} in incidents after {:.1} s)",
        sent as f64 / triaged_in.as_secs_f64(),
        triaged_in.as_secs_f64(),
    );
    println!(
        "  alert→incident latency p50 {:.1} ms, p99 {:.1} ms",
        pct(&latency, 0.5) as f64 / 1e3,
        pct(&latency, 0.99) as f64 / 1e3,
    );
}
