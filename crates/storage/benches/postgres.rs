//! The Postgres adapter's throughput on its hot paths, against the test server (a fresh
//! database per scenario): intake's write groups, triage's batched and one-by-one ingest (a
//! snapshot, the changeset triage would decide, one apply), the outbox relay, notification's
//! claims. Prints figures; a
//! benchmark, not a test, it asserts nothing about time.
//!
//! `cargo bench -p firebreak-storage --bench postgres`. `BENCH_ALERTS` changes the load,
//! `FIREBREAK_TEST_POSTGRES` the server.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use firebreak_domain::Micros;
use firebreak_storage::postgres::{PgIntakeStore, PgNotificationStore, PgTriageStore};
use firebreak_storage::{
    AlertLink, AlertRecord, DeliveryRecord, Error, IncidentRecord, IncidentUpdate, IntakeStore,
    NewIncident, NewTimelineEntry, NotificationStore, OutboxEvent, SnapshotRequest,
    TriageChangeset, TriageStore,
};
use firebreak_testkit::postgres::TestDatabase;
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let alerts = env_or("BENCH_ALERTS", 20_000);
    round_trips(alerts / 4).await;
    intake_groups(alerts, 100).await;
    for (keys, replicas, shuffled) in [
        (20, 1, false),
        (2_000, 1, false),
        (20, 2, false),
        (20, 2, true),
    ] {
        triage_batches(alerts, 500, keys, replicas, shuffled).await;
    }
    triage_one_by_one(alerts / 10, 20).await;
    notification_claims(alerts / 4).await;
}

fn report(what: &str, n: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<60} {n:>7} in {secs:>6.2} s = {:>8.0}/s",
        n as f64 / secs
    );
}

fn alert(n: usize, key: &str) -> AlertRecord {
    AlertRecord {
        id: format!("alert-{n:08}"),
        received_at: Micros::from_unix_micros(1_700_000_000_000_000 + n as i64),
        source: "prometheus".into(),
        title: format!("HighLatency on api-{}", n % 50),
        description: "p99 latency above 2 s for 5 minutes".into(),
        severity: 2,
        category: "performance".into(),
        labels: BTreeMap::from([
            ("alertname".into(), "HighLatency".into()),
            ("instance".into(), format!("api-{}", n % 50)),
            ("env".into(), "prod".into()),
        ]),
        dedup_key: key.into(),
        annotations: BTreeMap::from([("summary".into(), "latency".into())]),
        integration: "am".into(),
        alert_key: format!("fp-{n}"),
        silenced_by: String::new(),
    }
}

fn event(id: String) -> OutboxEvent {
    OutboxEvent {
        id,
        stream: "alerts".into(),
        subject: "alerts.received".into(),
        payload: vec![7; 300],
    }
}

/// The floor under everything: one indexed read per call, inside a transaction.
async fn round_trips(total: usize) {
    let db = TestDatabase::create().await;
    let store = PgTriageStore::connect(&db.url).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let started = Instant::now();
    for n in 0..total {
        let one = SnapshotRequest {
            alert_ids: vec![format!("alert-{n}")],
            ..Default::default()
        };
        tx.snapshot(&one).await.unwrap();
    }
    report(
        "round trip: a snapshot of one alert in one transaction",
        total,
        started,
    );
}

/// Intake's writer: per group, one read of the alert keys, their upsert, the alerts and
/// their events, one commit.
async fn intake_groups(total: usize, group: usize) {
    let db = TestDatabase::create().await;
    let store = PgIntakeStore::connect(&db.url).await.unwrap();
    let started = Instant::now();
    for g in 0..total / group {
        let batch: Vec<_> = (g * group..(g + 1) * group)
            .map(|n| alert(n, &format!("key-{}", n % 100)))
            .collect();
        let events: Vec<_> = batch.iter().map(|a| event(format!("e-{}", a.id))).collect();
        let pairs: Vec<_> = batch
            .iter()
            .map(|a| (a.integration.clone(), a.alert_key.clone()))
            .collect();
        let mut tx = store.begin().await.unwrap();
        tx.alert_keys(&pairs).await.unwrap();
        let rows: Vec<_> = batch
            .iter()
            .map(|a| {
                (
                    a.integration.clone(),
                    a.alert_key.clone(),
                    a.id.clone(),
                    "firing".to_owned(),
                )
            })
            .collect();
        tx.set_alert_keys(&rows).await.unwrap();
        tx.insert_alerts(batch, events).await.unwrap();
        tx.commit().await.unwrap();
    }
    report(
        &format!("intake: groups of {group}"),
        total / group * group,
        started,
    );
    relay(&store, "intake").await;
}

/// The outbox relay: reads pending events and marks them published.
async fn relay(store: &dyn firebreak_storage::Outbox, what: &str) {
    let started = Instant::now();
    let mut n = 0;
    loop {
        let pending = store.pending(500).await.unwrap();
        if pending.is_empty() {
            break;
        }
        n += pending.len();
        let seqs: Vec<_> = pending.iter().map(|r| r.seq).collect();
        store.mark_published(&seqs).await.unwrap();
    }
    report(
        &format!("outbox relay ({what}): pending(500) + mark"),
        n,
        started,
    );
}

fn new_incident(id: String, key: &str) -> IncidentRecord {
    IncidentRecord::from(NewIncident {
        id,
        title: "HighLatency".into(),
        description: String::new(),
        category: "performance".into(),
        severity: 2,
        priority: 2,
        urgency: "high".parse().unwrap(),
        dedup_key: key.into(),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        source: "prometheus".into(),
        integration: String::new(),
        opened_at: Micros::from_unix_micros(1),
    })
}

fn entry(incident: &str, kind: &str) -> NewTimelineEntry {
    NewTimelineEntry {
        incident_id: incident.into(),
        kind: kind.into(),
        at: Micros::from_unix_micros(1),
        actor: "triage".into(),
        data: json!({ "alert_id": "x", "title": "HighLatency", "source": "prometheus" }),
    }
}

/// What triage decides for a run of alerts, roughly: each alert not attached yet joins its
/// key's active incident (one entry) or opens one (three entries and an event); each incident
/// joined is written once, with one event.
async fn ingest_batch(store: &dyn TriageStore, alerts: &[AlertRecord]) -> Result<(), Error> {
    let mut alerts: Vec<&AlertRecord> = alerts.iter().collect();
    // In key order, as triage decides: replicas insert new keys in one order.
    alerts.sort_by(|a, b| a.dedup_key.cmp(&b.dedup_key));
    let mut tx = store.begin().await?;
    let snapshot = tx
        .snapshot(&SnapshotRequest {
            alert_ids: alerts.iter().map(|a| a.id.clone()).collect(),
            dedup_keys: alerts.iter().map(|a| a.dedup_key.clone()).collect(),
            ..Default::default()
        })
        .await?;
    let mut joined: BTreeMap<String, IncidentRecord> = BTreeMap::new();
    let mut opened: BTreeMap<String, IncidentRecord> = BTreeMap::new();
    let mut changes = TriageChangeset::default();
    for a in alerts {
        if snapshot.links.contains_key(&a.id) {
            continue;
        }
        let key = &a.dedup_key;
        if !joined.contains_key(key)
            && let Some(active) = snapshot.active.get(key)
        {
            joined.insert(key.clone(), active.clone());
        }
        let (incident_id, first) = match (opened.get_mut(key), joined.get_mut(key)) {
            (Some(inc), _) | (None, Some(inc)) => {
                inc.alert_count += 1;
                (inc.id.clone(), false)
            }
            (None, None) => {
                let inc = new_incident(format!("inc-{}", a.id), key);
                changes.events.push(event(format!("opened-{}", a.id)));
                let id = inc.id.clone();
                opened.insert(key.clone(), inc);
                (id, true)
            }
        };
        changes.links.push(AlertLink {
            alert_id: a.id.clone(),
            incident_id: incident_id.clone(),
            opened: first,
            resolved: false,
            grouped_by: String::new(),
        });
        let kinds: &[&str] = if first {
            &["opened", "categorized", "prioritized"]
        } else {
            &["alert_attached"]
        };
        changes
            .entries
            .extend(kinds.iter().map(|kind| entry(&incident_id, kind)));
    }
    changes.inserts = opened.into_values().collect();
    for inc in joined.into_values() {
        changes.events.push(event(format!(
            "attached-{}-{}",
            inc.id, changes.links[0].alert_id
        )));
        changes.updates.push(IncidentUpdate {
            record: inc,
            state_changed: false,
        });
    }
    tx.apply(changes).await.map(drop)
}

/// Triage's batched ingest: `replicas` store instances each taking batches of the alert
/// stream at once. A batch that fails (a deadlock between replicas holding incidents in
/// opposite orders, or a lost race on a new key) is retried alert by alert, as triage's
/// consumer does. Keys come round robin, or `shuffled` (so batches meet them in different
/// orders).
async fn triage_batches(total: usize, batch: usize, keys: usize, replicas: usize, shuffled: bool) {
    let db = TestDatabase::create().await;
    let key = |n: usize| {
        if shuffled {
            // A fixed pseudo-random permutation (splitmix64), so runs compare.
            let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % keys as u64) as usize
        } else {
            (n * 7919) % keys
        }
    };
    let all: Vec<_> = (0..total)
        .map(|n| alert(n, &format!("key-{}", key(n))))
        .collect();
    let all = Arc::new(all);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..replicas {
        let store: Arc<dyn TriageStore> = Arc::new(PgTriageStore::connect(&db.url).await.unwrap());
        let all = all.clone();
        tasks.spawn(async move {
            let mut failed = 0;
            for chunk in all.chunks(batch).skip(r).step_by(replicas) {
                if let Err(e) = ingest_batch(&*store, chunk).await {
                    println!("  a batch failed: {e}");
                    failed += 1;
                    for a in chunk {
                        ingest_single(&*store, a).await;
                    }
                }
            }
            failed
        });
    }
    let failed: usize = tasks.join_all().await.into_iter().sum();
    report(
        &format!(
            "triage: batches of {batch}, {keys} keys{}, {replicas} replica(s), {failed} failed",
            if shuffled { " shuffled" } else { "" }
        ),
        total,
        started,
    );
}

async fn ingest_single(store: &dyn TriageStore, a: &AlertRecord) {
    for _ in 0..10 {
        match ingest_batch(store, std::slice::from_ref(a)).await {
            Ok(()) => return,
            Err(Error::Conflict(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("kept conflicting");
}

/// Triage's ingest of one alert per transaction.
async fn triage_one_by_one(total: usize, keys: usize) {
    let db = TestDatabase::create().await;
    let store = PgTriageStore::connect(&db.url).await.unwrap();
    let started = Instant::now();
    for n in 0..total {
        ingest_single(&store, &alert(n, &format!("key-{}", n % keys))).await;
    }
    report(
        &format!("triage: one alert per transaction, {keys} keys"),
        total,
        started,
    );
    relay(&store, "triage").await;
}

/// Notification: deliveries inserted per event, claimed in hundreds, each attempt recorded.
async fn notification_claims(total: usize) {
    let db = TestDatabase::create().await;
    let store = PgNotificationStore::connect(&db.url).await.unwrap();
    let deliveries: Vec<_> = (0..total)
        .map(|n| DeliveryRecord {
            id: format!("d-{n:08}"),
            event_id: format!("e-{n}"),
            channel: "slack".into(),
            incident_id: format!("inc-{}", n % 100),
            kind: "opened".into(),
            payload: json!({ "text": "HighLatency on api-1" }),
            status: "pending".parse().unwrap(),
            attempts: 0,
            last_error: String::new(),
            created_at: Micros::from_unix_micros(n as i64),
            next_attempt_at: Micros::from_unix_micros(n as i64),
            delivered_at: None,
            escalation_step: 0,
            provider_id: None,
            destination: String::new(),
            sent_at: None,
            acknowledged_at: None,
            acknowledged_by: String::new(),
            traceparent: String::new(),
        })
        .collect();
    let started = Instant::now();
    for chunk in deliveries.chunks(100) {
        store.insert_deliveries(chunk).await.unwrap();
    }
    report("notification: insert_deliveries of 100", total, started);
    let started = Instant::now();
    let mut n = 0;
    loop {
        let claimed = store
            .claim_due_deliveries(
                Micros::from_unix_micros(i64::MAX - 1),
                Micros::from_unix_micros(i64::MAX),
                100,
            )
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for mut d in claimed {
            d.status = "delivered".parse().unwrap();
            d.attempts = 1;
            d.delivered_at = Some(Micros::from_unix_micros(1));
            store.update_delivery(&d, None).await.unwrap();
            n += 1;
        }
    }
    report("notification: claim 100 + update_delivery each", n, started);
}
