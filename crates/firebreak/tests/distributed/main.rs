//! Distributed mode end to end: `firebreak serve` processes (the real binary) on Postgres and
//! NATS JetStream, with replicas, `kill -9`, a NATS restart and a Postgres outage.

mod access;
mod chart;
mod clients;
mod harness;
mod metrics;
mod nats_config;
mod platform;
mod traces;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use firebreak_proto::v1;
use harness::{Deployment, Recorder, alert, eventually};
use sqlx::Row;

const CONTAIN_YAML: &str = "
name: contain
description: call the containment API once per incident, then note it
match:
  categories: [service-outage]
parameters:
  target:
    description: the containment API
    default: http://contain.invalid
capabilities: [http.post, incident.note]
";

const CONTAIN_RHAI: &str = r#"
// One containment call, then a note on the timeline.
fn run(incident, params) {
    http::post(params.target + "/contain", #{ incident: incident.id });
    incident::note("contained");
}
"#;

/// A runbook directory with `contain`, and the config lines that point it and the `ops`
/// webhook channel at `target`.
fn setup(target: &Recorder) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contain.yaml"), CONTAIN_YAML).unwrap();
    std::fs::write(dir.path().join("contain.rhai"), CONTAIN_RHAI).unwrap();
    let extra = format!(
        "live: true\nchannels:\n  - name: ops\n    kind: webhook\n    url: {url}/hook\nrunbook_params:\n  contain:\n    target: {url}\n",
        url = target.url
    );
    (dir, extra)
}

fn outage(title: &str, key: &str) -> v1::AlertInput {
    v1::AlertInput {
        category: "service-outage".into(),
        ..alert(title, key, "")
    }
}

/// Raises `total` alerts over `keys` dedup keys from `clients` concurrent clients in batches
/// of `batch`; returns the ids of the alerts intake accepted. A batch that fails (a process
/// was killed) is retried with the same idempotency key, as a real client would.
async fn storm(
    d: &Deployment,
    total: usize,
    keys: usize,
    clients: usize,
    batch: usize,
) -> Vec<String> {
    let per_client = total / clients;
    // Idempotency keys are unique to this storm: a later storm's batches are new alerts.
    let storm_id = uuid::Uuid::new_v4();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let url = d.grpc("intake-1");
        tasks.spawn(async move {
            let mut accepted = Vec::new();
            let mut sent = 0;
            let mut b = 0;
            while sent < per_client {
                let n = batch.min(per_client - sent);
                let alerts: Vec<_> = (sent..sent + n)
                    .map(|i| {
                        let k = (c * per_client + i) % keys;
                        outage(&format!("service {k} down"), &format!("key-{k}"))
                    })
                    .collect();
                let idem = format!("{storm_id}-client-{c}-batch-{b}");
                let results = loop {
                    let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())
                        .unwrap()
                        .connect()
                        .await
                    else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let mut intake = v1::intake_service_client::IntakeServiceClient::new(
                        firebreak_proto::access::authed(ch, Some(harness::ADMIN_TOKEN)),
                    );
                    match intake
                        .raise_alerts(v1::RaiseAlertsRequest {
                            alerts: alerts.clone(),
                            idempotency_key: idem.clone(),
                        })
                        .await
                    {
                        Ok(r) => break r.into_inner().results,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                for r in results {
                    assert!(r.error.is_empty(), "refused: {}", r.error);
                    accepted.push(r.alert_id);
                }
                sent += n;
                b += 1;
            }
            accepted
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// Waits until triage holds every accepted alert, then checks the invariants: each alert in
/// exactly one incident, one open incident per key, alert counts summing to the alerts, one
/// run per incident, one containment call per run, a delivery of each opened incident.
async fn assert_nothing_lost_or_doubled(
    d: &Deployment,
    target: &Recorder,
    accepted: &[String],
    keys: usize,
) {
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "intake gave an alert id twice"
    );
    let triage = d.db("triage").await;
    let want = accepted.len() as i64;
    eventually("triage to hold every accepted alert", 180, || {
        let triage = triage.clone();
        async move {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM incident_alerts")
                .fetch_one(&triage)
                .await
                .ok()?
                .get(0);
            (n >= want).then_some(())
        }
    })
    .await;
    let in_triage: BTreeSet<String> = sqlx::query("SELECT alert_id FROM incident_alerts")
        .fetch_all(&triage)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing = unique.iter().filter(|a| !in_triage.contains(**a)).count();
    assert_eq!(missing, 0, "accepted alerts that never reached an incident");

    let rows = sqlx::query(
        "SELECT dedup_key, COUNT(*), SUM(alert_count)::BIGINT FROM incidents
         WHERE state IN ('open', 'acknowledged') GROUP BY dedup_key",
    )
    .fetch_all(&triage)
    .await
    .unwrap();
    assert_eq!(rows.len(), keys, "open incidents per key");
    let mut alerts_in_incidents = 0;
    for r in &rows {
        let (key, n, sum): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(n, 1, "two open incidents for {key}");
        alerts_in_incidents += sum;
    }
    assert_eq!(alerts_in_incidents, want, "alert counts sum to the alerts");

    let orchestration = d.db("orchestration").await;
    let runs = eventually("every run to finish", 180, || {
        let o = orchestration.clone();
        async move {
            let rows = sqlx::query("SELECT incident_id, state FROM runs")
                .fetch_all(&o)
                .await
                .ok()?;
            (rows.len() >= keys && rows.iter().all(|r| r.get::<String, _>(1) == "succeeded"))
                .then_some(rows)
        }
    })
    .await;
    let per_incident: BTreeSet<String> = runs.iter().map(|r| r.get(0)).collect();
    assert_eq!(runs.len(), keys, "runs");
    assert_eq!(per_incident.len(), keys, "one run per incident");

    // Each run finished once: one `runbooks.succeeded` event per run, however many
    // replicas listed it as due and whoever was killed under it.
    let mut finishes: BTreeMap<String, usize> = BTreeMap::new();
    for r in sqlx::query("SELECT payload FROM outbox WHERE subject = 'runbooks.succeeded'")
        .fetch_all(&orchestration)
        .await
        .unwrap()
    {
        let event = firebreak_proto::decode_event(&r.get::<Vec<u8>, _>(0)).unwrap();
        if let Some(v1::event::Payload::RunChanged(c)) = event.payload {
            *finishes.entry(c.run_id).or_default() += 1;
        }
    }
    assert_eq!(finishes.len(), keys, "runs with a finish event");
    let twice: Vec<_> = finishes.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "runs finished more than once: {twice:?}");

    // Each run called the containment API under one idempotency key (run:1), so the target
    // applied each containment once; a call cut off by a kill was repeated with that key.
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for r in target.on("/contain") {
        *calls.entry(r.idempotency_key).or_default() += 1;
    }
    assert_eq!(calls.len(), keys, "distinct containment actions");
    assert!(calls.keys().all(|k| k.ends_with(":1")), "{calls:?}");

    // Every opened incident was delivered to the webhook at least once.
    let opened: BTreeSet<String> = sqlx::query("SELECT id FROM incidents")
        .fetch_all(&triage)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    eventually("a delivery of every opened incident", 120, || {
        let delivered: BTreeSet<String> = target
            .on("/hook")
            .iter()
            .filter(|r| r.body["kind"] == "incident.opened")
            .filter_map(|r| r.body["incident"]["id"].as_str().map(str::to_owned))
            .collect();
        let done = opened.is_subset(&delivered);
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_incident_path_across_four_processes() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    for p in ["intake-1", "triage-1", "orchestration-1", "notification-1"] {
        assert_eq!(d.health(p).await, "SERVING", "{p}");
    }

    // The caller's trace context, which the incident's events continue.
    let mut raise = tonic::Request::new(v1::RaiseIncidentRequest {
        alert: Some(v1::AlertInput {
            title: "checkout service down".into(),
            labels: [("service".to_owned(), "checkout".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    raise
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let raised = d
        .intake()
        .await
        .raise_incident(raise)
        .await
        .unwrap()
        .into_inner();
    let id = raised.incident_id.clone();
    assert!(!raised.deduplicated);
    let mut incidents = d.incidents().await;
    let inc = incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(inc.category, "service-outage");
    assert_eq!(
        (inc.severity, inc.priority, inc.state()),
        (1, 1, v1::IncidentState::Open)
    );

    // The runbook ran in the orchestration process, once, live.
    let runs = d.runs().await;
    let run = eventually("the run to succeed", 60, || {
        let mut runs = runs.clone();
        let id = id.clone();
        async move {
            runs.list_runs(v1::ListRunsRequest {
                incident_id: id,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .runs
            .into_iter()
            .find(|r| r.state() == v1::RunState::Succeeded)
        }
    })
    .await;
    assert_eq!(run.runbook, "contain");
    // One trace from the caller through intake, triage and orchestration: every event of
    // the alert, the incident and the run's creation carries it in its NATS headers.
    for (stream, at_least) in [
        ("FIREBREAK_ALERTS", 1),
        ("FIREBREAK_INCIDENTS", 1),
        ("FIREBREAK_RUNBOOKS", 1),
    ] {
        let traces = trace_ids(&d.nats.url(), stream).await;
        let in_trace = traces.iter().filter(|t| *t == TRACE_ID).count();
        assert!(in_trace >= at_least, "{stream}: {traces:?}");
        if stream != "FIREBREAK_RUNBOOKS" {
            assert_eq!(in_trace, traces.len(), "{stream}: {traces:?}");
        }
    }
    let calls = target.on("/contain");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].idempotency_key, format!("{}:1", run.id));

    // The runbook's note reached triage's timeline over the bus; notification delivered.
    eventually("the runbook's note on the timeline", 60, || {
        let mut incidents = incidents.clone();
        let id = id.clone();
        async move {
            let t = incidents
                .get_timeline(v1::GetTimelineRequest {
                    id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            t.entries
                .iter()
                .any(|e| e.kind == "note" && e.data.contains("contained"))
                .then_some(())
        }
    })
    .await;
    eventually("the webhook delivery", 60, || {
        let ok = target.on("/hook").iter().any(|r| {
            r.body["kind"] == "incident.opened" && r.body["incident"]["id"] == id.as_str()
        });
        async move { ok.then_some(()) }
    })
    .await;

    // Dedup across the wire, then the life cycle through the CLI's client configuration.
    let again = d
        .intake()
        .await
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: "checkout service down".into(),
                labels: [("service".to_owned(), "checkout".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.incident_id, id);
    d.cli(&["incident", "ack", &id]);
    d.cli(&["incident", "resolve", &id, "--summary", "restarted"]);
    d.cli(&["incident", "close", &id, "--root-cause", "a bad deploy"]);
    let shown: serde_json::Value =
        serde_json::from_str(&d.cli(&["--output", "json", "incident", "show", &id])).unwrap();
    assert_eq!(shown["state"], "closed", "{shown}");
    let listed = d.cli(&["run", "list", "--incident", &id]);
    assert!(listed.contains("contain"), "{listed}");
    let review = d.cli(&["incident", "review", &id]);
    assert!(review.contains("a bad deploy"), "{review}");

    // Bad input over the wire: a clear error, nothing stored.
    let err = d
        .intake()
        .await
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: " ".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM alerts")
        .fetch_one(&d.db("intake").await)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_open_one_incident_per_key_and_run_each_runbook_once() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    d.start("triage", 2);
    d.start("orchestration", 2);
    let accepted = storm(&d, 10_000, 1_000, 8, 50).await;
    assert_eq!(accepted.len(), 10_000);
    assert_nothing_lost_or_doubled(&d, &target, &accepted, 1_000).await;
    // Both replicas of each took part.
    for p in ["triage-1", "triage-2"] {
        let m = harness::get(&format!("{}/metrics", d.http(p))).await;
        let handled =
            metric(&m, "incidents_opened_total") + metric(&m, "alerts_deduplicated_total");
        assert!(handled > 0.0, "{p} triaged nothing:\n{m}");
    }
    for p in ["orchestration-1", "orchestration-2"] {
        let m = harness::get(&format!("{}/metrics", d.http(p))).await;
        assert!(
            metric(&m, "runs_finished_total") > 0.0,
            "{p} ran none:\n{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_each_service_in_flight_loses_and_doubles_nothing() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    let mut accepted = Vec::new();
    for victim in ["triage-1", "orchestration-1", "notification-1", "intake-1"] {
        // Work in flight everywhere, then the kill, then more work while it is down (not
        // for intake: its callers retry), then the restart.
        accepted.extend(storm(&d, 400, 100, 4, 20).await);
        d.kill9(victim);
        if victim != "intake-1" {
            accepted.extend(storm(&d, 200, 100, 4, 20).await);
        }
        d.restart(victim);
    }
    accepted.extend(storm(&d, 200, 100, 4, 20).await);
    assert_nothing_lost_or_doubled(&d, &target, &accepted, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_restart_mid_flow_loses_and_doubles_nothing() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    let mut accepted = storm(&d, 1_000, 100, 4, 50).await;
    d.nats.kill();
    // Intake still accepts: events wait in its outbox until NATS is back.
    accepted.extend(storm(&d, 500, 100, 4, 50).await);
    d.nats.restart().await;
    accepted.extend(storm(&d, 500, 100, 4, 50).await);
    assert_nothing_lost_or_doubled(&d, &target, &accepted, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_reports_not_serving_and_work_resumes() {
    let mut cluster = firebreak_testkit::postgres::PgCluster::new().await;
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let server = cluster.url("postgres");
    let server = server.rsplit_once('/').unwrap().0.to_owned();
    let mut d = Deployment::on(server, runbooks.path(), &extra).await;
    d.start_all();
    let mut accepted = storm(&d, 500, 50, 4, 25).await;

    cluster.stop().await;
    for p in ["intake-1", "triage-1", "orchestration-1", "notification-1"] {
        let name = p.to_owned();
        eventually(&format!("{p} NOT_SERVING"), 30, || {
            let d = &d;
            let name = name.clone();
            async move { (d.health(&name).await == "NOT_SERVING").then_some(()) }
        })
        .await;
    }
    // While the database is away, intake refuses instead of pretending: nothing accepted.
    let refused = d
        .intake()
        .await
        .raise_alerts(v1::RaiseAlertsRequest {
            alerts: vec![outage("during the outage", "key-0")],
            idempotency_key: String::new(),
        })
        .await;
    assert!(refused.is_err(), "{refused:?}");

    cluster.start().await;
    for p in ["intake-1", "triage-1", "orchestration-1", "notification-1"] {
        let name = p.to_owned();
        eventually(&format!("{p} SERVING again"), 60, || {
            let d = &d;
            let name = name.clone();
            async move { (d.health(&name).await == "SERVING").then_some(()) }
        })
        .await;
    }
    accepted.extend(storm(&d, 500, 50, 4, 25).await);
    assert_nothing_lost_or_doubled(&d, &target, &accepted, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_no_consumer_can_handle_is_parked_listed_and_replayable() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start("triage", 1);
    d.start("intake", 1);
    // Something that is not an event, on the alerts stream.
    let nats = async_nats::connect(d.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage-1");
    js.publish_with_headers(
        "firebreak.alerts.alerts.received",
        headers,
        "not protobuf".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let config = d.config.to_str().unwrap().to_owned();
    let list = |d: &Deployment| -> serde_json::Value {
        serde_json::from_str(&d.cli(&["--output", "json", "parked", "list", "--config", &config]))
            .unwrap()
    };
    let parked = eventually("the garbage parked", 30, || {
        let l = list(&d);
        async move { (l.as_array()?.len() == 1).then_some(l) }
    })
    .await;
    let p = &parked[0];
    assert_eq!(p["stream"], "alerts", "{p}");
    assert_eq!(p["consumer"], "triage", "{p}");
    assert!(p["error"].as_str().unwrap().contains("undecodable"), "{p}");
    // Triage went on serving: a real alert after it opens an incident.
    let raised = d
        .intake()
        .await
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(outage("after the garbage", "key-after")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!raised.incident_id.is_empty(), "{raised:?}");

    let seq = p["seq"].as_u64().unwrap().to_string();
    let replayed = d.cli(&["parked", "replay", &seq, "--config", &config]);
    assert!(
        replayed.contains(&format!("replayed parked event {seq}")),
        "{replayed}"
    );
    // The replay took it off the parked stream; still garbage, it is parked again, under a
    // new sequence (nothing dropped).
    let again = eventually("the replay parked again", 30, || {
        let l = list(&d);
        let seq = p["seq"].clone();
        async move {
            let l = l.as_array()?;
            (l.len() == 1 && l[0]["seq"] != seq).then(|| l[0].clone())
        }
    })
    .await;
    assert_eq!(again["event_id"], p["event_id"], "{again}");
    assert_eq!(again["consumer"], "triage", "{again}");
    // A parked sequence that does not exist is a clear error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["parked", "replay", "999", "--config", &config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The trace id in the `traceparent` header of each message in `stream` ("" for none).
async fn trace_ids(nats: &str, stream: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let mut stream = js.get_stream(stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut ids = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let header = m
            .headers
            .get("traceparent")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        ids.push(header.split('-').nth(1).unwrap_or_default().to_owned());
    }
    ids
}

/// The sum of a Prometheus metric's samples in a `/metrics` page (`name` without the
/// `firebreak_` prefix).
fn metric(page: &str, name: &str) -> f64 {
    let name = format!("firebreak_{name}");
    page.lines()
        .filter(|l| {
            l.strip_prefix(&name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_to_triage_is_audited_by_notification_and_published_on_the_audit_stream() {
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start("notification", 1);
    d.start("triage", 1);
    // An allowed change that fails in the handler: triage's access layer records it, and its
    // credential sync carries the entry to notification.
    let missing = d
        .incidents()
        .await
        .acknowledge(v1::AcknowledgeRequest {
            id: "01900000-0000-7000-8000-000000000000".into(),
            actor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let list = |d: &Deployment| -> serde_json::Value {
        serde_json::from_str(&d.cli(&[
            "--output",
            "json",
            "audit",
            "list",
            "--actor",
            "user:admin",
            "--action",
            "IncidentService/Acknowledge",
        ]))
        .unwrap()
    };
    let entries = eventually("triage's entry in notification's log", 30, || {
        let l = list(&d);
        async move { (l.as_array()?.len() == 1).then_some(l) }
    })
    .await;
    let e = &entries[0];
    assert_eq!(e["outcome"], "not_found", "{e}");
    assert_eq!(e["roles"], "admin", "{e}");
    assert!(
        e["source"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{e}"
    );

    // The entry is on the audit stream for a SIEM, as an AuditRecorded event.
    let nats = async_nats::connect(d.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let stream = js.get_stream("FIREBREAK_AUDIT").await.unwrap();
    let msg = eventually("the audit event on NATS", 30, || {
        let stream = stream.clone();
        async move {
            stream
                .get_last_raw_message_by_subject("firebreak.audit.audit.recorded")
                .await
                .ok()
        }
    })
    .await;
    let event = firebreak_proto::decode_event(&msg.payload).unwrap();
    let Some(v1::event::Payload::AuditRecorded(recorded)) = event.payload else {
        panic!("not an AuditRecorded event: {event:?}");
    };
    assert_eq!(recorded.entry.unwrap().id, event.id);
}

/// Every message body of a NATS stream, as text.
async fn stream_text(nats: &str, stream: &str) -> String {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await.unwrap());
    let Ok(mut stream) = js.get_stream(stream).await else {
        return String::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut text = String::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            text.push_str(&String::from_utf8_lossy(&m.payload));
            text.push_str(&format!("{:?}\n", m.headers));
        }
    }
    text
}

/// Integration keys and signing secrets, declared and created at run time, reach no stored
/// row (every table of every service's database, read with `SELECT *`), no event on the bus
/// and no log line (at debug), after good and bad calls with them; nor does the secrets key.
#[tokio::test]
async fn no_key_or_secret_reaches_rows_events_or_logs() {
    const DECLARED_KEY: &str = "declared-key-7f3a9c1e55";
    const DECLARED_SECRET: &str = "declared-secret-b81d44e2a0";
    const RUNTIME_SECRET: &str = "runtime-secret-c93e17f6b2";
    const SECRETS_KEY: &str = "5e8f0c2b7a9d41e6b3c8f05a2d7e9b1c4f6a8d0e2b5c7f9a1d3e5b7c9f0a2d4e";
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let extra = format!(
        "{extra}\nintegrations:\n  - {{ name: decl, kind: alertmanager, key: {DECLARED_KEY}, signing_secret: {DECLARED_SECRET} }}\n"
    );
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    let env = [
        ("RUST_LOG", "debug"),
        ("FIREBREAK_SECRETS_KEY", SECRETS_KEY),
    ];
    for s in harness::SERVICES {
        d.start_with_env(s, 1, &env);
    }
    let secret_file = d.dir.path().join("runtime.secret");
    std::fs::write(&secret_file, RUNTIME_SECRET).unwrap();
    let created: serde_json::Value = serde_json::from_str(&d.cli(&[
        "--output",
        "json",
        "integration",
        "create",
        "rt",
        "--kind",
        "pagerduty",
        "--signing-secret-file",
        secret_file.to_str().unwrap(),
    ]))
    .unwrap();
    let runtime_key = created[0]["key"].as_str().unwrap().to_owned();
    let plain: serde_json::Value = serde_json::from_str(&d.cli(&[
        "--output",
        "json",
        "integration",
        "create",
        "plain",
        "--kind",
        "alertmanager",
    ]))
    .unwrap();
    let plain_key = plain[0]["key"].as_str().unwrap().to_owned();

    // Good and bad calls with each.
    let http = d.http("intake-1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sign = |secret: &str, body: &[u8]| {
        firebreak_intake::sign(&firebreak_intake::Secret::new(secret), now, body)
    };
    let am = |name: &str| {
        serde_json::to_vec(&serde_json::json!({
            "version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"), "status": "firing",
            "alerts": [{ "status": "firing", "labels": { "alertname": name, "severity": "critical" },
                "annotations": { "summary": format!("{name} is down") } }],
        }))
        .unwrap()
    };
    let pd = |key: &str, summary: &str| {
        serde_json::to_vec(&serde_json::json!({
            "routing_key": key, "event_action": "trigger",
            "payload": { "summary": summary, "source": "db-1", "severity": "critical" },
        }))
        .unwrap()
    };
    let mut calls: Vec<(String, Vec<u8>, Option<String>, u16)> = Vec::new();
    let body = am("declared-good");
    calls.push((
        format!("/v1/webhooks/alertmanager/{DECLARED_KEY}"),
        body.clone(),
        Some(sign(DECLARED_SECRET, &body)),
        200,
    ));
    calls.push((
        format!("/v1/webhooks/alertmanager/{DECLARED_KEY}"),
        am("declared-bad"),
        Some(sign("not-the-secret-000000", &body)),
        401,
    ));
    let body = pd(&runtime_key, "runtime good");
    let signed = sign(RUNTIME_SECRET, &body);
    calls.push(("/v2/enqueue".into(), body, Some(signed), 202));
    calls.push((
        "/v2/enqueue".into(),
        pd(&runtime_key, "runtime unsigned"),
        None,
        401,
    ));
    calls.push((
        format!("/v1/webhooks/alertmanager/{plain_key}"),
        am("plain-good"),
        None,
        200,
    ));
    calls.push((
        format!(
            "/v1/webhooks/alertmanager/{}x",
            &plain_key[..plain_key.len() - 1]
        ),
        am("plain-wrong"),
        None,
        401,
    ));
    for (path, body, signature, want) in calls {
        let mut req = client
            .post(format!("{http}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("x-firebreak-signature", s);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, want, "{path}: {}", resp.text().await.unwrap());
    }
    let mut incidents = d.incidents().await;
    eventually("the three good calls' incidents", 30, || {
        let mut incidents = incidents.clone();
        async move {
            let list = incidents
                .list_incidents(v1::ListIncidentsRequest::default())
                .await
                .ok()?
                .into_inner()
                .incidents;
            (list.len() >= 3).then_some(())
        }
    })
    .await;
    let _ = incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await;

    let needles = [
        DECLARED_KEY,
        DECLARED_SECRET,
        RUNTIME_SECRET,
        SECRETS_KEY,
        runtime_key.as_str(),
        plain_key.as_str(),
    ];
    let check = |where_: &str, text: &str| {
        for n in needles {
            assert!(!text.contains(n), "{n} found in {where_}");
        }
    };
    // Every row of every table of every service's database.
    for service in harness::SERVICES {
        let db = d.db(service).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert!(!tables.is_empty(), "{service} has tables");
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text FROM (SELECT * FROM \"{table}\") t"
            )))
            .fetch_all(&db)
            .await
            .unwrap();
            check(&format!("{service}.{table}"), &rows.join("\n"));
        }
        db.close().await;
    }
    // The run-time integration's secret is stored sealed, and its key hashed.
    let db = d.db("intake").await;
    let row = sqlx::query("SELECT key_hash, signing_secret FROM integrations WHERE name = 'rt'")
        .fetch_one(&db)
        .await
        .unwrap();
    let hash: String = row.get(0);
    let sealed: Option<String> = row.get(1);
    assert_eq!(
        hash,
        firebreak_domain::access::integration_key_hash(&runtime_key)
    );
    assert!(sealed.unwrap().starts_with("v1:"));
    db.close().await;
    // Every event on the bus.
    for stream in [
        "FIREBREAK_ALERTS",
        "FIREBREAK_INCIDENTS",
        "FIREBREAK_RUNBOOKS",
        "FIREBREAK_NOTIFICATIONS",
    ] {
        let text = stream_text(&d.nats.url(), stream).await;
        if stream == "FIREBREAK_ALERTS" {
            assert!(text.contains("declared-good"), "the alerts were read");
        }
        check(stream, &text);
    }
    // Every log line, at debug.
    for s in harness::SERVICES {
        let log = d.log(&format!("{s}-1"));
        assert!(log.contains("DEBUG"), "{s} logs at debug");
        check(&format!("{s}'s log"), &log);
    }
}

/// Without a secrets key, a run-time integration with a signing secret is refused naming
/// `secrets_encryption`; with one it is stored sealed; started with a new key and the old
/// one as previous, intake seals it again under the new key, and the old key can go.
#[tokio::test]
async fn signing_secrets_need_a_key_and_follow_its_rotation() {
    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const SECRET: &str = "rotating-secret-00000001";
    let target = Recorder::start().await;
    let (runbooks, extra) = setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    let secret_file = d.dir.path().join("signing.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let (old_file, new_file) = (d.dir.path().join("old.key"), d.dir.path().join("new.key"));
    std::fs::write(&old_file, OLD).unwrap();
    std::fs::write(&new_file, NEW).unwrap();
    let create = |d: &Deployment| {
        std::process::Command::new(harness::BIN)
            .args(["--token", harness::ADMIN_TOKEN, "--output", "json"])
            .arg("--client-config")
            .arg(d.client_config())
            .args(["integration", "create", "rot", "--kind", "alertmanager"])
            .arg("--signing-secret-file")
            .arg(&secret_file)
            .output()
            .unwrap()
    };

    d.start("intake", 1);
    let refused = create(&d);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("secrets_encryption"), "{said}");
    assert!(said.contains("FailedPrecondition"), "{said}");

    d.kill9("intake-1");
    let old_key = ("FIREBREAK_SECRETS_KEY", OLD);
    d.start_with_env("intake", 1, &[old_key]);
    let made = create(&d);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = serde_json::from_slice::<serde_json::Value>(&made.stdout).unwrap()[0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = |hex: &str| {
        let bytes: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        firebreak_domain::access::sha256_hex(&bytes)[..8].to_owned()
    };
    assert!(sealed(&d).await.starts_with(&format!("v1:{}:", id(OLD))));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let signed_call = |http: String| {
        let key = key.clone();
        async move {
            let body = serde_json::to_vec(&serde_json::json!({
                "version": "4", "groupKey": "{}:{alertname=\"rot\"}", "status": "firing",
                "alerts": [{ "status": "firing", "labels": { "alertname": "rot" } }],
            }))
            .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let sig = firebreak_intake::sign(&firebreak_intake::Secret::new(SECRET), now, &body);
            reqwest::Client::new()
                .post(format!("{http}/v1/webhooks/alertmanager/{key}"))
                .header("content-type", "application/json")
                .header("x-firebreak-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(signed_call(d.http("intake-1")).await, 200);

    // A new key, the old one previous: sealed again under the new key at start.
    d.kill9("intake-1");
    let previous = format!("[{}]", old_file.display());
    d.start_with_env(
        "intake",
        1,
        &[
            (
                "FIREBREAK_SECRETS_ENCRYPTION__KEY_FILE",
                new_file.to_str().unwrap(),
            ),
            (
                "FIREBREAK_SECRETS_ENCRYPTION__PREVIOUS_KEY_FILES",
                &previous,
            ),
        ],
    );
    assert!(sealed(&d).await.starts_with(&format!("v1:{}:", id(NEW))));
    assert_eq!(signed_call(d.http("intake-1")).await, 200);
    // The old key can go now.
    d.kill9("intake-1");
    d.start_with_env(
        "intake",
        1,
        &[(
            "FIREBREAK_SECRETS_ENCRYPTION__KEY_FILE",
            new_file.to_str().unwrap(),
        )],
    );
    assert_eq!(signed_call(d.http("intake-1")).await, 200);
}

/// The sealed signing secret of intake's integration `rot`.
async fn sealed(d: &Deployment) -> String {
    let db = d.db("intake").await;
    let s: String =
        sqlx::query_scalar("SELECT signing_secret FROM integrations WHERE name = 'rot'")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    s
}

/// Two notification replicas share the paging: every incident a route takes is paged
/// exactly once per step, whichever replica consumed its event and claimed its step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_notification_replicas_page_each_incident_once() {
    let target = Recorder::start().await;
    let (runbooks, _) = setup(&target);
    let extra = format!(
        "channels:\n  - {{ name: pager, kind: webhook, url: {url}/page }}\nescalation_policies:\n  - name: sre\n    steps:\n      - channels: [pager]\nroutes:\n  - {{ match: {{ categories: [service-outage] }}, policy: sre }}\n",
        url = target.url
    );
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    d.start("notification", 2);
    let accepted = storm(&d, 400, 200, 4, 50).await;
    assert_eq!(accepted.len(), 400);
    let pages = |t: &Recorder| {
        let mut by_incident = std::collections::HashMap::<String, usize>::new();
        for r in t.on("/page") {
            if r.body["kind"] == "escalation.page" {
                let id = r.body["incident"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                *by_incident.entry(id).or_default() += 1;
            }
        }
        by_incident
    };
    let paged = eventually("a page for each of the 200 incidents", 60, || async {
        let p = pages(&target);
        (p.len() >= 200).then_some(p)
    })
    .await;
    // Settle, then count again: no incident was paged twice.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let paged_again = pages(&target);
    assert_eq!(paged_again.len(), 200, "one incident per key");
    let doubled: Vec<_> = paged_again.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "paged twice: {doubled:?}");
    assert_eq!(paged.len(), paged_again.len());
}

/// A schedule override written through one notification replica is what the other pages
/// from: each replica reloads schedules when the store's version moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_override_made_on_one_replica_is_in_force_on_the_other() {
    let target = Recorder::start().await;
    let (runbooks, _) = setup(&target);
    let extra = "users:\n  - { name: alice }\n  - { name: carol }\nschedules:\n  - name: primary\n    time_zone: UTC\n    combine: exclusive\n    layers:\n      - { name: always, members: [alice], rotation: { every: 1d, hand_off: '00:00', start: '2020-01-01' } }\n";
    let mut d = Deployment::new(runbooks.path(), extra).await;
    d.start("notification", 1);
    d.start("notification", 2);
    let client = |name: &str| {
        let url = d.grpc(name);
        async move {
            v1::notification_service_client::NotificationServiceClient::new(
                harness::channel(&url).await,
            )
        }
    };
    let (mut one, two) = (
        client("notification-1").await,
        client("notification-2").await,
    );
    let who = |n: &v1::notification_service_client::NotificationServiceClient<_>| {
        let mut n = n.clone();
        async move {
            n.who_is_on_call(v1::WhoIsOnCallRequest {
                schedule: "primary".into(),
                at: None,
            })
            .await
            .unwrap()
            .into_inner()
            .schedules
            .remove(0)
            .users
        }
    };
    eventually("both replicas serving", 60, || async {
        let mut n = two.clone();
        n.who_is_on_call(v1::WhoIsOnCallRequest::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert_eq!(who(&two).await, ["alice"]);
    let now = firebreak_domain::Clock::now(&firebreak_domain::SystemClock);
    let at = |secs: i64| {
        firebreak_proto::timestamp(firebreak_domain::Micros::from_unix_micros(
            now.unix_micros() + secs * 1_000_000,
        ))
    };
    one.add_override(v1::AddOverrideRequest {
        schedule: "primary".into(),
        r#override: Some(v1::ScheduleOverride {
            from: Some(at(-60)),
            to: Some(at(3_600)),
            replace: "alice".into(),
            with: "carol".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    // The other replica's very next read sees it (no waiting for a timer).
    assert_eq!(who(&two).await, ["carol"]);
}
