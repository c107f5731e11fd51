//! Benchmark: runbook step overhead and runs per second in embedded mode.
//!
//! Raises incidents that each start a 5-step runbook whose actions are Firebreak's own
//! (`incident.note`, no outside time), so the gap between consecutive journal entries of a
//! run is the engine's overhead per step: script dispatch, the journal write with its outbox
//! event (one SQLite transaction), and the return to the script. Prints p50/p99 of those gaps
//! and runs completed per second. Run with `just bench` (release build).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use firebreak::{App, Config};
use firebreak_proto::v1::{
    self, intake_service_client::IntakeServiceClient, runbook_service_client::RunbookServiceClient,
};

mod support;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const RUNS: usize = 400;

struct Measured {
    p50: f64,
    p99: f64,
    max: f64,
    gaps: usize,
    runs_per_second: f64,
}

/// Raises `n` incidents (tagged `tag`), `batch` at a time, waiting for each batch's runs to
/// succeed; returns the gaps between consecutive journal entries and the run throughput.
async fn measure(
    intake: &mut IntakeServiceClient<firebreak_proto::access::AuthedChannel>,
    runs: &mut RunbookServiceClient<firebreak_proto::access::AuthedChannel>,
    tag: &str,
    n: usize,
    batch: usize,
) -> Measured {
    let mut finished = Vec::new();
    let mut raised = 0;
    while raised < n {
        let mut ids = Vec::new();
        for _ in 0..batch.min(n - raised) {
            let r = intake
                .raise_incident(v1::RaiseIncidentRequest {
                    alert: Some(v1::AlertInput {
                        title: format!("bench outage {tag} {raised}"),
                        category: "service-outage".into(),
                        dedup_key: format!("bench-{tag}-{raised}"),
                        source: "bench".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            ids.push(r.incident_id);
            raised += 1;
        }
        let started = Instant::now();
        loop {
            // Every run, page by page: a page holds at most 1 MiB.
            let mut list = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = runs
                    .list_runs(v1::ListRunsRequest {
                        page_size: 1000,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                list.extend(page.runs);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let done: Vec<v1::Run> = list
                .into_iter()
                .filter(|r| ids.contains(&r.incident_id) && r.state() == v1::RunState::Succeeded)
                .collect();
            if done.len() == ids.len() {
                finished.extend(done);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "runs did not finish"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let micros = |t: &Option<firebreak_proto::Timestamp>| {
        t.as_ref()
            .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
    };
    let mut gaps = Vec::new();
    for run in &finished {
        let at: Vec<i64> = run.actions.iter().map(|a| micros(&a.at)).collect();
        assert_eq!(at.len(), 5);
        gaps.extend(at.windows(2).map(|w| w[1] - w[0]));
    }
    gaps.sort_unstable();
    let busy: i64 = if batch == 1 {
        // Runs one after another: count only the time they ran.
        finished
            .iter()
            .map(|r| micros(&r.finished_at) - micros(&r.started_at))
            .sum()
    } else {
        let first = finished
            .iter()
            .map(|r| micros(&r.started_at))
            .min()
            .unwrap();
        let last = finished
            .iter()
            .map(|r| micros(&r.finished_at))
            .max()
            .unwrap();
        last - first
    };
    Measured {
        p50: percentile(&gaps, 0.50),
        p99: percentile(&gaps, 0.99),
        max: percentile(&gaps, 1.0),
        gaps: gaps.len(),
        runs_per_second: finished.len() as f64 / (busy as f64 / 1e6),
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir(&runbooks).unwrap();
    std::fs::write(
        runbooks.join("five-steps.yaml"),
        "name: five-steps\nmatch: { categories: [service-outage] }\ncapabilities: [incident]\n",
    )
    .unwrap();
    std::fs::write(
        runbooks.join("five-steps.rhai"),
        "// Five journaled steps.\nfn run(incident, params) {\n    for i in 0..5 { incident::note(`step ${i}`); }\n}\n",
    )
    .unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        runbooks_dir: Some(runbooks),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let app = App::build(config).await.unwrap();
    let grpc = format!("http://{}", app.grpc_addr());
    let (token, shutdown) = support::serve(app, &dir.path().join("data"));
    let channel = support::connect(&grpc, &token).await;
    let mut intake = IntakeServiceClient::new(channel.clone());
    let mut runs = RunbookServiceClient::new(channel);

    // One run at a time: the overhead of a step with nothing else going on.
    let alone = measure(&mut intake, &mut runs, "alone", 50, 1).await;
    // Everything at once: 400 incidents raised back to back, their runs contending.
    let busy = measure(&mut intake, &mut runs, "busy", RUNS, RUNS).await;
    println!("runbook step overhead, embedded mode (SQLite WAL, in-process bus), 5-step runbook");
    for (name, m) in [("one run at a time", alone), ("400 runs at once", busy)] {
        println!(
            "  {name:<18} step p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} gaps)  runs/s {:.0}",
            m.p50, m.p99, m.max, m.gaps, m.runs_per_second
        );
    }
    shutdown.cancel();
}
