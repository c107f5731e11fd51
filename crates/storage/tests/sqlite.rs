//! The SQLite adapter against real database files: the rules the database itself enforces.

use std::collections::BTreeMap;

use firebreak_storage::sqlite::SqliteTriageStore;
use firebreak_storage::{Error, IncidentRecord, NewTimelineEntry, TriageStore};

fn incident(id: &str, key: &str, state: &str) -> IncidentRecord {
    IncidentRecord {
        id: id.into(),
        title: "t".into(),
        description: String::new(),
        category: "uncategorized".into(),
        severity: 3,
        priority: 3,
        urgency: "medium".into(),
        state: state.into(),
        dedup_key: key.into(),
        alert_count: 1,
        labels: BTreeMap::new(),
        source: "test".into(),
        opened_at: 1,
        acknowledged_at: None,
        resolved_at: None,
        closed_at: None,
        resolution_summary: String::new(),
        root_cause: String::new(),
        review: String::new(),
        updated_at: 1,
    }
}

#[tokio::test]
async fn one_active_incident_per_dedup_key_is_enforced_by_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteTriageStore::open(&dir.path().join("t.db"), false)
        .await
        .unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A second active incident with the key is refused, whatever the caller believed.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_incident(&incident("b", "k", "acknowledged"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    drop(tx);

    // Once the first is resolved, the key may open a new incident.
    let mut tx = store.begin().await.unwrap();
    tx.update_incident(&incident("a", "k", "resolved"))
        .await
        .unwrap();
    tx.insert_incident(&incident("c", "k", "open"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.incidents(Some("open"), 10).await.unwrap().len(), 1);
    assert_eq!(store.incidents(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_timeline_is_append_only_and_processed_events_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteTriageStore::open(&path, false).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    let e = tx
        .append(&NewTimelineEntry {
            incident_id: "a".into(),
            kind: "opened".into(),
            at: 1,
            actor: "test".into(),
            data: serde_json::json!({ "x": 1 }),
        })
        .await
        .unwrap();
    assert!(tx.mark_processed("event-1").await.unwrap());
    assert!(!tx.mark_processed("event-1").await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.timeline("a").await.unwrap(), vec![e]);

    // Raw SQL cannot rewrite history either.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let err = sqlx::query("UPDATE timeline SET kind = 'forged'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM timeline")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // A reopened store remembers what was processed.
    drop(store);
    let store = SqliteTriageStore::open(&path, false).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.mark_processed("event-1").await.unwrap());
}
