//! Postgres only: replicas racing on one database. Each test starts its contenders together
//! (a barrier) on a multi-threaded runtime, several store instances standing for replicas.

use firebreak_domain::RunState;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use firebreak_storage::postgres::{
    PgIntakeStore, PgNotificationStore, PgOrchestrationStore, PgTriageStore,
};
use firebreak_storage::{
    DirectoryStore, Error, IncidentRecord, IntakeStore, NotificationStore, OrchestrationStore,
    SnapshotRequest, TokenRecord, TriageChangeset, TriageStore,
};
use firebreak_testkit::postgres::TestDatabase;
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::fixtures::{
    alert, apply, delivery, entry, event, incident, link, micros, run, token, update, user,
};

/// Replicas (store instances) per test.
const REPLICAS: usize = 4;

async fn triage_replicas(db: &TestDatabase) -> Vec<Arc<dyn TriageStore>> {
    let mut out: Vec<Arc<dyn TriageStore>> = Vec::new();
    for _ in 0..REPLICAS {
        out.push(Arc::new(PgTriageStore::connect(&db.url).await.unwrap()));
    }
    out
}

/// Ingests alerts (alert id, dedup key) in one transaction, as triage's ingest does: a
/// snapshot of their attachments and of their keys' active incidents, decisions in key order
/// (an alert attached before is skipped; the others join their key's active incident, or
/// open one), one changeset. Decided again on a fresh snapshot when the store was not as the
/// snapshot said (another replica opened a key first). Returns how many incidents it opened.
async fn ingest(store: &dyn TriageStore, alerts: &[(String, String)]) -> usize {
    let mut alerts = alerts.to_vec();
    alerts.sort_by(|a, b| a.1.cmp(&b.1));
    let request = SnapshotRequest {
        count_unresolved: true,
        alert_ids: alerts.iter().map(|(a, _)| a.clone()).collect(),
        dedup_keys: alerts.iter().map(|(_, k)| k.clone()).collect(),
        ..Default::default()
    };
    for _ in 0..20 {
        let mut tx = store.begin().await.unwrap();
        let snap = tx.snapshot(&request).await.unwrap();
        let mut changes = TriageChangeset::default();
        // Each key's incident as the batch leaves it, and whether the batch opened it.
        let mut touched: BTreeMap<&str, (IncidentRecord, bool)> = BTreeMap::new();
        for (alert_id, key) in &alerts {
            if snap.links.contains_key(alert_id) {
                continue;
            }
            let (inc, opened) = match touched.entry(key) {
                Entry::Occupied(held) => {
                    let (inc, _) = held.into_mut();
                    inc.alert_count += 1;
                    (inc.clone(), false)
                }
                Entry::Vacant(new) => {
                    let (inc, opened) = match snap.active.get(key) {
                        Some(active) => {
                            let mut inc = active.clone();
                            inc.alert_count += 1;
                            (inc, false)
                        }
                        None => (incident(&format!("inc-{alert_id}"), key, "open"), true),
                    };
                    new.insert((inc.clone(), opened));
                    (inc, opened)
                }
            };
            let kind = if opened { "opened" } else { "alert_attached" };
            changes.links.push(link(alert_id, &inc.id, opened));
            changes.entries.push(entry(
                &inc.id,
                kind,
                json!({ "alert_count": inc.alert_count }),
            ));
            changes.events.push(event(&format!("{kind}-{alert_id}")));
        }
        let mut opened = 0;
        for (inc, new) in touched.into_values() {
            if new {
                opened += 1;
                changes.inserts.push(inc);
            } else {
                changes.updates.push(update(&inc, false));
            }
        }
        match tx.apply(changes).await {
            Ok(_) => return opened,
            Err(Error::Conflict(_)) => continue,
            Err(e) => panic!("ingest: {e}"),
        }
    }
    panic!("the batch kept conflicting");
}

fn by_id(id: &str) -> SnapshotRequest {
    SnapshotRequest {
        count_unresolved: true,
        incident_ids: vec![id.into()],
        ..Default::default()
    }
}

fn by_key(key: &str) -> SnapshotRequest {
    SnapshotRequest {
        count_unresolved: true,
        dedup_keys: vec![key.into()],
        ..Default::default()
    }
}

fn appending(entries: Vec<firebreak_storage::NewTimelineEntry>) -> TriageChangeset {
    TriageChangeset {
        entries,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_replicas_open_exactly_one_incident_per_dedup_key() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            ingest(&*store, &[(format!("al-{n:02}"), "same-key".into())]).await
        });
    }
    let opened: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(opened, 1);

    let store = &*stores[0];
    let all = store.incidents(None, 100).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let inc = &all[0];
    assert_eq!((inc.state.as_str(), inc.alert_count), ("open", 16));
    // Every alert attached to it, and the timeline counts 1..=16 in sequence order.
    let mut tx = store.begin().await.unwrap();
    let alert_ids: Vec<String> = (0..16).map(|n| format!("al-{n:02}")).collect();
    let snap = tx
        .snapshot(&SnapshotRequest {
            count_unresolved: true,
            alert_ids: alert_ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(tx);
    for id in &alert_ids {
        assert_eq!(snap.links[id].incident_id, inc.id);
    }
    let counts: Vec<_> = store
        .timeline(&inc.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.data["alert_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, (1..=16).collect::<Vec<_>>());
    assert_eq!(store.pending(100).await.unwrap().len(), 16);
}

/// Alerts of one group with distinct dedup keys (hosts of one service), raced by replicas as
/// triage's grouping does: a snapshot of the group's active incident since a time, then
/// join it or open one carrying the group key. The group's advisory lock makes them take
/// turns: exactly one incident opens, and every alert is counted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_one_group_open_one_incident() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let barrier = Arc::new(Barrier::new(12));
    let mut tasks = JoinSet::new();
    for n in 0..12 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let request = SnapshotRequest {
                dedup_keys: vec![format!("host-{n}")],
                group_keys: vec!["group/by-service:api".into()],
                grouped_since: Some(micros(0)),
                ..Default::default()
            };
            let mut tx = store.begin().await.unwrap();
            let snap = tx.snapshot(&request).await.unwrap();
            assert!(snap.active.is_empty());
            let (changes, opened) = match snap.grouped.get("group/by-service:api") {
                Some(held) => {
                    let mut inc = held.clone();
                    inc.alert_count += 1;
                    let changes = TriageChangeset {
                        updates: vec![update(&inc, false)],
                        links: vec![link(&format!("al-{n}"), &inc.id, false)],
                        ..Default::default()
                    };
                    (changes, 0)
                }
                None => {
                    let mut inc = incident(&format!("inc-{n}"), &format!("host-{n}"), "open");
                    inc.group_key = "group/by-service:api".into();
                    let changes = TriageChangeset {
                        links: vec![link(&format!("al-{n}"), &inc.id, true)],
                        inserts: vec![inc],
                        ..Default::default()
                    };
                    (changes, 1)
                }
            };
            tx.apply(changes).await.unwrap();
            opened
        });
    }
    let opened: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(opened, 1);
    let all = stores[0].incidents(None, 100).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].alert_count, 12);
    assert_eq!(all[0].group_key, "group/by-service:api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_replicas_attaching_to_one_incident_lose_no_update() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let setup = TriageChangeset {
        inserts: vec![incident("inc", "k", "open")],
        entries: vec![entry("inc", "opened", json!({ "alert_count": 1 }))],
        ..Default::default()
    };
    apply(&*stores[0], setup).await.unwrap();

    // Each task attaches 10 alerts, one transaction each, half reading the incident by id
    // and half by dedup key; the batch-like ones attach two per transaction.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for t in 0..8 {
        let store = stores[t % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut n = 0;
            while n < 10 {
                let mut tx = store.begin().await.unwrap();
                let mut inc = if t % 2 == 0 {
                    tx.snapshot(&by_id("inc")).await.unwrap().incidents["inc"].clone()
                } else {
                    tx.snapshot(&by_key("k")).await.unwrap().active["k"].clone()
                };
                let mut changes = TriageChangeset::default();
                for _ in 0..if t % 4 == 3 { 2 } else { 1 } {
                    inc.alert_count += 1;
                    changes.links.push(link(&format!("t{t}-{n}"), "inc", false));
                    changes.entries.push(entry(
                        "inc",
                        "alert_attached",
                        json!({ "alert_count": inc.alert_count }),
                    ));
                    n += 1;
                }
                changes.updates.push(update(&inc, false));
                tx.apply(changes).await.unwrap();
            }
        });
    }
    tasks.join_all().await;

    let store = &*stores[0];
    assert_eq!(
        store.incident("inc").await.unwrap().unwrap().alert_count,
        81
    );
    // Entries in sequence order carry the counts in the order the updates happened.
    let counts: Vec<_> = store
        .timeline("inc")
        .await
        .unwrap()
        .iter()
        .map(|e| e.data["alert_count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, (1..=81).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_resolving_an_incidents_alerts_leave_exactly_one_seeing_none_left() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let setup = TriageChangeset {
        inserts: vec![incident("inc", "k", "open")],
        links: (0..8)
            .map(|n| link(&format!("al-{n}"), "inc", n == 0))
            .collect(),
        ..Default::default()
    };
    apply(&*stores[0], setup).await.unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let alert_id = format!("al-{n}");
            let mut tx = store.begin().await.unwrap();
            let snap = tx
                .snapshot(&SnapshotRequest {
                    count_unresolved: true,
                    alert_ids: vec![alert_id.clone()],
                    incidents_of_alerts: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(!snap.links[&alert_id].resolved);
            let open = snap.unresolved["inc"] - 1;
            let changes = TriageChangeset {
                resolved_alerts: vec![alert_id],
                entries: vec![entry("inc", "alert_resolved", json!({ "open": open }))],
                ..Default::default()
            };
            tx.apply(changes).await.unwrap();
            open
        });
    }
    let mut left: Vec<i64> = tasks.join_all().await;
    left.sort_unstable();
    // Each resolver counted after the ones before it committed: 7, 6, ..., 0.
    assert_eq!(left, (0..8).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_is_processed_by_one_replica() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut tx = store.begin().await.unwrap();
            let request = SnapshotRequest {
                count_unresolved: true,
                event_ids: vec!["event-1".into()],
                ..Default::default()
            };
            if !tx.snapshot(&request).await.unwrap().processed.is_empty() {
                return false;
            }
            let marking = TriageChangeset {
                processed: vec!["event-1".into()],
                events: vec![event(&format!("handled-{n}"))],
                ..Default::default()
            };
            match tx.apply(marking).await {
                Ok(_) => true,
                // Another replica marked it between the snapshot and the apply.
                Err(Error::Conflict(_)) => false,
                Err(e) => panic!("mark: {e}"),
            }
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|f| *f).count(), 1);
    assert_eq!(stores[0].pending(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_claimers_take_disjoint_deliveries_covering_all() {
    let db = TestDatabase::create().await;
    let a: Arc<dyn NotificationStore> =
        Arc::new(PgNotificationStore::connect(&db.url).await.unwrap());
    let b: Arc<dyn NotificationStore> =
        Arc::new(PgNotificationStore::connect(&db.url).await.unwrap());
    let all: Vec<_> = (0..100)
        .map(|n| delivery(&format!("d{n:03}"), &format!("e{n}"), "slack", n))
        .collect();
    assert_eq!(a.insert_deliveries(&all).await.unwrap(), 100);

    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = JoinSet::new();
    for store in [a.clone(), b.clone()] {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_due_deliveries(micros(1000), micros(5000), 7)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break mine;
                }
                assert!(
                    claimed
                        .windows(2)
                        .all(|w| w[0].next_attempt_at <= w[1].next_attempt_at)
                );
                mine.extend(claimed.into_iter().map(|d| d.id));
            }
        });
    }
    let claims = tasks.join_all().await;
    let (first, second): (HashSet<_>, HashSet<_>) = (
        claims[0].iter().cloned().collect(),
        claims[1].iter().cloned().collect(),
    );
    assert_eq!(first.len(), claims[0].len(), "a claimer got one twice");
    assert_eq!(second.len(), claims[1].len(), "a claimer got one twice");
    assert!(
        first.is_disjoint(&second),
        "{:?}",
        first.intersection(&second).collect::<Vec<_>>()
    );
    let union: BTreeSet<_> = first.union(&second).cloned().collect();
    assert_eq!(union, all.iter().map(|d| d.id.clone()).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_consuming_one_event_insert_its_deliveries_once() {
    let db = TestDatabase::create().await;
    let mut stores: Vec<Arc<dyn NotificationStore>> = Vec::new();
    for _ in 0..REPLICAS {
        stores.push(Arc::new(
            PgNotificationStore::connect(&db.url).await.unwrap(),
        ));
    }
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .insert_deliveries(&[
                    delivery(&format!("slack-{n}"), "e1", "slack", 1),
                    delivery(&format!("email-{n}"), "e1", "email", 1),
                ])
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().sum::<u32>(), 2);
    assert_eq!(stores[0].deliveries(None, 100).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_leases_and_transitions_have_one_winner() {
    let db = TestDatabase::create().await;
    let mut stores: Vec<Arc<dyn OrchestrationStore>> = Vec::new();
    for _ in 0..REPLICAS {
        stores.push(Arc::new(
            PgOrchestrationStore::connect(&db.url).await.unwrap(),
        ));
    }
    // Creating the same run.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let store = stores[n % REPLICAS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .create_runs(&[(
                    run(&format!("r{n}"), "restart", "inc-1"),
                    event(&format!("e{n}")),
                )])
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().sum::<u32>(), 1);
    let created = stores[0].runs(None, None, 10).await.unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(stores[0].pending(10).await.unwrap().len(), 1);
    let id = created[0].id.clone();

    // Leasing it.
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier, id) = (stores[n % REPLICAS].clone(), barrier.clone(), id.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .lease_run(&id, &format!("owner-{n}"), micros(1000), micros(10))
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|l| *l).count(), 1);

    // Moving it out of pending.
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier) = (stores[n % REPLICAS].clone(), barrier.clone());
        let mut next = created[0].clone();
        next.state = RunState::Running;
        next.error = format!("by {n}");
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .transition(
                    &next,
                    RunState::Pending,
                    None,
                    &[event(&format!("moved-{n}"))],
                )
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|m| *m).count(), 1);
    assert_eq!(stores[0].pending(10).await.unwrap().len(), 2);

    // Finishing it: one finish, one event.
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier, id) = (stores[n % REPLICAS].clone(), barrier.clone(), id.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .set_run_state(
                    &id,
                    RunState::Running,
                    RunState::Succeeded,
                    None,
                    &[event(&format!("done-{n}"))],
                )
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|m| *m).count(), 1);
    assert_eq!(stores[0].pending(10).await.unwrap().len(), 3);

    // Appending to its log: no line lost, none numbered twice.
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier, id) = (stores[n % REPLICAS].clone(), barrier.clone(), id.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            for k in 0..5 {
                store
                    .append_log(&id, &[format!("{n}.{k}a"), format!("{n}.{k}b")])
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    let log = stores[0].log(&id).await.unwrap();
    assert_eq!(log.len(), 80);
    // Each call's two lines stay together.
    for pair in log.chunks(2) {
        assert_eq!(
            pair[0].trim_end_matches('a'),
            pair[1].trim_end_matches('b'),
            "{log:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_replicas_decide_about_one_key_in_turn() {
    let db = TestDatabase::create().await;
    // The stores work in READ COMMITTED whatever the database's default: under REPEATABLE
    // READ a transaction that waited for another would not see what it committed.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
        db.name
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut stores: Vec<Arc<dyn IntakeStore>> = Vec::new();
    for _ in 0..REPLICAS {
        stores.push(Arc::new(PgIntakeStore::connect(&db.url).await.unwrap()));
    }
    // The same alert key triggered at 8 replicas at once: one alert, 7 repeats of it.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier) = (stores[n % REPLICAS].clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut tx = store.begin().await.unwrap();
            let pairs = [
                ("am".to_owned(), "fp".to_owned()),
                ("am".to_owned(), format!("own-{n}")),
            ];
            let known = tx.alert_keys(&pairs).await.unwrap();
            let fresh = !known.iter().any(|(_, k, _, _)| k == "fp");
            if fresh {
                let id = format!("a{n}");
                tx.set_alert_keys(&[("am".into(), "fp".into(), id.clone(), "firing".into())])
                    .await
                    .unwrap();
                tx.insert_alerts(vec![alert(&id)], vec![event(&id)])
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            fresh
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|f| *f).count(), 1);
    assert_eq!(stores[0].count_alerts().await.unwrap(), 1);

    // The same idempotency key at 8 replicas at once: every call gets the first response.
    let mut tasks = JoinSet::new();
    for n in 0..8 {
        let (store, barrier) = (stores[n % REPLICAS].clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut tx = store.begin().await.unwrap();
            let response = match tx.idempotent("idem-1").await.unwrap() {
                Some(first) => first,
                None => {
                    let mine = format!("response-{n}").into_bytes();
                    tx.insert_alerts(vec![alert(&format!("idem-{n}"))], vec![])
                        .await
                        .unwrap();
                    tx.remember("idem-1", &mine).await.unwrap();
                    mine
                }
            };
            tx.commit().await.unwrap();
            response
        });
    }
    let responses: HashSet<_> = tasks.join_all().await.into_iter().collect();
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(stores[0].count_alerts().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_create_and_migrate_the_database_once() {
    let db = TestDatabase::create().await;
    let url = db.url_for("fresh");
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (url, barrier) = (url.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            PgTriageStore::connect(&url).await.map(|_| ())
        });
    }
    for started in tasks.join_all().await {
        started.unwrap();
    }
    let store = PgTriageStore::connect(&url).await.unwrap();
    let opening = TriageChangeset {
        inserts: vec![incident("a", "k", "open")],
        ..Default::default()
    };
    apply(&store, opening).await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, service FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        versions,
        [
            (1, "triage".to_owned()),
            (2, "triage".to_owned()),
            (3, "triage".to_owned()),
            (4, "triage".to_owned()),
            (5, "triage".to_owned()),
            (6, "triage".to_owned()),
            (7, "triage".to_owned()),
            (8, "triage".to_owned()),
            (9, "triage".to_owned()),
            (10, "triage".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_database_serves_one_service() {
    let db = TestDatabase::create().await;
    PgIntakeStore::connect(&db.url).await.unwrap();
    let err = PgTriageStore::connect(&db.url).await.err().unwrap();
    assert!(
        matches!(err, Error::Migration { .. }) && err.to_string().contains("intake"),
        "{err}"
    );
    // The owner reconnects fine.
    PgIntakeStore::connect(&db.url).await.unwrap();
}

#[tokio::test]
async fn timeline_entries_follow_the_order_their_incident_was_held_in() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let setup = TriageChangeset {
        inserts: vec![incident("x", "kx", "open"), incident("y", "ky", "open")],
        ..Default::default()
    };
    apply(&*stores[0], setup).await.unwrap();

    // A holds y first.
    let mut a = stores[0].begin().await.unwrap();
    a.snapshot(&by_id("y")).await.unwrap();
    // Meanwhile B adds to x and commits.
    let mut b = stores[1].begin().await.unwrap();
    b.snapshot(&by_id("x")).await.unwrap();
    let by_b = b
        .apply(appending(vec![entry("x", "note", json!({ "by": "b" }))]))
        .await
        .unwrap()
        .remove(0);
    // A then holds x too and adds to both: its entry of x comes after B's, although A
    // began (and held an incident) before B did.
    a.snapshot(&by_id("x")).await.unwrap();
    let by_a = a
        .apply(appending(vec![
            entry("y", "note", json!({ "by": "a" })),
            entry("x", "note", json!({ "by": "a" })),
        ]))
        .await
        .unwrap()
        .remove(1);
    assert!(by_a.seq > by_b.seq, "{} <= {}", by_a.seq, by_b.seq);
    assert_eq!(stores[0].timeline("x").await.unwrap(), vec![by_b, by_a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_an_incident_numbers_its_entries_after_the_holders() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    let setup = TriageChangeset {
        inserts: vec![incident("x", "kx", "open")],
        ..Default::default()
    };
    apply(&*stores[0], setup).await.unwrap();

    let mut a = stores[0].begin().await.unwrap();
    a.snapshot(&by_id("x")).await.unwrap();
    // B asks for x by its key and waits for A.
    let store = stores[1].clone();
    let b = tokio::spawn(async move {
        let mut b = store.begin().await.unwrap();
        assert_eq!(
            b.snapshot(&by_key("kx")).await.unwrap().active["kx"].id,
            "x"
        );
        b.apply(appending(vec![entry("x", "note", json!({ "by": "b" }))]))
            .await
            .unwrap()
            .remove(0)
    });
    wait_for_a_lock_wait(&db.url).await;
    // A's entries are numbered while B waits; B's still come after all of them.
    let by_a = a
        .apply(appending(
            (0..10)
                .map(|n| entry("x", "note", json!({ "by": "a", "n": n })))
                .collect(),
        ))
        .await
        .unwrap();
    let by_b = b.await.unwrap();
    let mut expected = by_a.clone();
    expected.push(by_b);
    assert_eq!(stores[0].timeline("x").await.unwrap(), expected);
}

/// Waits until a session of the database waits for a lock (polling `pg_stat_activity`).
async fn wait_for_a_lock_wait(url: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session waited for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_with_overlapping_batches_neither_deadlock_nor_lose_updates() {
    let db = TestDatabase::create().await;
    let stores = triage_replicas(&db).await;
    // Every replica's batches name the same 20 keys, each replica in another order: locks
    // taken and incidents opened in the order alerts come would deadlock. Any error but a
    // conflict fails the test.
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let mut tasks = JoinSet::new();
    for (r, store) in stores.iter().enumerate() {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            for b in 0..5 {
                let mut batch: Vec<(String, String)> = (0..20)
                    .map(|k| (format!("al-{r}-{b}-{k}"), format!("key-{k:02}")))
                    .collect();
                if r % 2 == 1 {
                    batch.reverse();
                }
                batch.rotate_left(r * 5);
                ingest(&*store, &batch).await;
            }
        });
    }
    tasks.join_all().await;
    let all = stores[0].incidents(None, 1000).await.unwrap();
    assert_eq!(all.len(), 20, "one incident per key");
    let alerts: u32 = all.iter().map(|i| i.alert_count).sum();
    assert_eq!(alerts as usize, REPLICAS * 5 * 20, "no attachment lost");
}

async fn directory_replicas(db: &TestDatabase) -> Vec<Arc<dyn DirectoryStore>> {
    let mut out: Vec<Arc<dyn DirectoryStore>> = Vec::new();
    for _ in 0..REPLICAS {
        out.push(Arc::new(
            PgNotificationStore::connect(&db.url).await.unwrap(),
        ));
    }
    out
}

/// Replicas making and revoking tokens at once take distinct versions, in commit order: a
/// follower copying `tokens_since` its last version meanwhile, as each service's verifier
/// does, ends up with every token as it is, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_changing_tokens_take_distinct_versions_a_follower_never_skips() {
    let db = TestDatabase::create().await;
    let stores = directory_replicas(&db).await;
    stores[0].insert_user(&user("amy")).await.unwrap();
    let barrier = Arc::new(Barrier::new(REPLICAS + 1));
    let done = Arc::new(AtomicBool::new(false));

    let follower = {
        let (store, barrier, done) = (stores[0].clone(), barrier.clone(), done.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let (mut copy, mut at) = (BTreeMap::<String, TokenRecord>::new(), 0);
            loop {
                // Read before polling: the last poll starts after every writer finished.
                let finished = done.load(Ordering::Acquire);
                for t in store.tokens_since(at).await.unwrap() {
                    assert!(t.version > at, "{t:?} listed after version {at}");
                    at = t.version;
                    copy.insert(t.id.clone(), t);
                }
                if finished {
                    break copy;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = JoinSet::new();
    for (r, store) in stores.iter().enumerate() {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut versions = Vec::new();
            for n in 0..5 {
                let made = token(&format!("t{r}-{n}"), "amy", n);
                versions.push(store.insert_token(&made).await.unwrap().version);
            }
            let first = format!("t{r}-0");
            let revoked = store.revoke_token(&first, micros(100)).await.unwrap();
            versions.push(revoked.unwrap().version);
            versions
        });
    }
    let versions: Vec<i64> = tasks.join_all().await.concat();
    done.store(true, Ordering::Release);
    let copy = follower.await.unwrap();

    // 20 tokens made and 4 revoked: 24 changes, each its own version.
    let distinct: BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(versions.len(), REPLICAS * 6);
    assert_eq!(distinct.len(), versions.len(), "{versions:?}");
    let all = stores[1].tokens_since(0).await.unwrap();
    assert_eq!(all.len(), REPLICAS * 5);
    assert!(
        all.windows(2).all(|w| w[0].version < w[1].version),
        "{all:?}"
    );
    assert_eq!(all.last().map(|t| t.version), distinct.last().copied());
    let revoked: Vec<&str> = all
        .iter()
        .filter(|t| t.revoked_at.is_some())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(revoked.len(), REPLICAS, "{revoked:?}");
    assert!(revoked.iter().all(|id| id.ends_with("-0")), "{revoked:?}");
    let now: BTreeMap<String, TokenRecord> = all.into_iter().map(|t| (t.id.clone(), t)).collect();
    assert_eq!(copy, now, "the follower's copy differs");
}

/// A token made while its user is deleted is either refused (the user is gone) or made
/// first and revoked with the user: no live token outlives its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_made_while_its_user_is_deleted_is_refused_or_revoked() {
    let db = TestDatabase::create().await;
    let stores = directory_replicas(&db).await;
    stores[0].insert_user(&user("amy")).await.unwrap();
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let mut tasks = JoinSet::new();
    for (r, store) in stores.iter().enumerate().skip(1) {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut made = 0;
            for n in 0..20 {
                match store
                    .insert_token(&token(&format!("t{r}-{n}"), "amy", n))
                    .await
                {
                    Ok(_) => made += 1,
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("insert_token: {e}"),
                }
            }
            made
        });
    }
    let deleter = stores[0].clone();
    barrier.wait().await;
    // Some tokens first, so the deletion meets inserts under way.
    while deleter.tokens().await.unwrap().len() < 3 {
        tokio::task::yield_now().await;
    }
    assert!(deleter.delete_user("amy", micros(1000)).await.unwrap());
    let made: usize = tasks.join_all().await.into_iter().sum();

    let all = deleter.tokens().await.unwrap();
    assert_eq!(all.len(), made);
    assert!(made >= 3, "{made}");
    let live: Vec<&str> = all
        .iter()
        .filter(|t| t.revoked_at != Some(micros(1000)))
        .map(|t| t.id.as_str())
        .collect();
    assert!(live.is_empty(), "live tokens of a deleted user: {live:?}");
}

/// Replicas reporting uses of the same tokens in different orders, while tokens are revoked,
/// wait for each other rather than deadlock, and each token keeps its latest use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_marking_overlapping_uses_keep_the_latest_without_deadlock() {
    let db = TestDatabase::create().await;
    let stores = directory_replicas(&db).await;
    stores[0].insert_user(&user("amy")).await.unwrap();
    let ids: Vec<String> = (0..20).map(|n| format!("t{n:02}")).collect();
    for (n, id) in ids.iter().enumerate() {
        stores[0]
            .insert_token(&token(id, "amy", n as i64))
            .await
            .unwrap();
    }
    const ROUNDS: i64 = 30;
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let mut tasks = JoinSet::new();
    for (r, store) in stores.iter().enumerate() {
        let (store, barrier, ids) = (store.clone(), barrier.clone(), ids.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            for round in 0..ROUNDS {
                let mut batch: Vec<(String, firebreak_domain::Micros)> = ids
                    .iter()
                    .map(|id| (id.clone(), micros(round * 10 + r as i64)))
                    .collect();
                if r % 2 == 1 {
                    batch.reverse();
                }
                batch.rotate_left(r * 5);
                store.mark_used(&batch).await.unwrap();
                if round == ROUNDS / 2 {
                    let id = &ids[r * 5];
                    store.revoke_token(id, micros(500)).await.unwrap().unwrap();
                }
            }
        });
    }
    tasks.join_all().await;
    let latest = micros((ROUNDS - 1) * 10 + REPLICAS as i64 - 1);
    let all = stores[0].tokens().await.unwrap();
    assert_eq!(all.len(), 20);
    for t in &all {
        assert_eq!(t.last_used_at, Some(latest), "{t:?}");
    }
    let revoked = all.iter().filter(|t| t.revoked_at.is_some()).count();
    assert_eq!(revoked, REPLICAS);
}
