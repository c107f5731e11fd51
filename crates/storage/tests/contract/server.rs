//! Postgres only: the server goes away and comes back (a throwaway cluster of its own).

use std::time::{Duration, Instant};

use firebreak_storage::postgres::PgTriageStore;
use firebreak_storage::{Outbox, SnapshotRequest, TriageChangeset, TriageStore};
use firebreak_testkit::postgres::PgCluster;

use crate::fixtures::{apply, event, incident};

#[tokio::test]
async fn ping_fails_while_the_server_is_down_and_the_store_recovers_by_itself() {
    let mut cluster = PgCluster::new().await;
    let store = PgTriageStore::connect(&cluster.url("triage"))
        .await
        .unwrap();
    store.ping().await.unwrap();
    // Connections in the pool that the restart will cut.
    let opening = TriageChangeset {
        inserts: vec![incident("a", "k", "open")],
        events: vec![event("e1")],
        ..Default::default()
    };
    apply(&store, opening).await.unwrap();

    cluster.stop().await;
    // Health fails, within the pool's acquire timeout (3 s) rather than hanging.
    let asked = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(store.begin().await.is_err());

    cluster.start().await;
    // The cut connections are replaced without a caller seeing them fail.
    store.ping().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let snap = tx
        .snapshot(&SnapshotRequest {
            incident_ids: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(snap.incidents["a"].state.as_str(), "open");
    let opening = TriageChangeset {
        inserts: vec![incident("b", "k2", "open")],
        ..Default::default()
    };
    tx.apply(opening).await.unwrap();
    assert_eq!(store.incidents(None, 10).await.unwrap().len(), 2);
    assert_eq!(store.pending(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn connecting_to_a_server_that_is_down_fails() {
    let mut cluster = PgCluster::new().await;
    let url = cluster.url("triage");
    cluster.stop().await;
    assert!(PgTriageStore::connect(&url).await.is_err());
    cluster.start().await;
    PgTriageStore::connect(&url)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}
