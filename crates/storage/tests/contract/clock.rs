//! The stores stamp rows (processed marks, attachments, outbox events, publication) with the
//! clock they were opened with, the one the services read, not a clock of their own.

use std::sync::Arc;
use std::time::Duration;

use firebreak_domain::{Clock, ManualClock};
use firebreak_storage::postgres::PgTriageStore;
use firebreak_storage::sqlite::SqliteTriageStore;
use firebreak_storage::{TriageChangeset, TriageStore};
use sqlx::{Connection, Row};

use crate::fixtures::{Adapter, Backend, apply, event, incident, link};

/// A year: far past anything the system clock could drift while a test runs.
const A_YEAR: Duration = Duration::from_secs(365 * 86_400);

#[tokio::test]
async fn sqlite_stamps_rows_with_the_injected_clock() {
    rows_are_stamped_with_the_injected_clock(Adapter::Sqlite).await;
}

#[tokio::test]
async fn postgres_stamps_rows_with_the_injected_clock() {
    rows_are_stamped_with_the_injected_clock(Adapter::Postgres).await;
}

async fn rows_are_stamped_with_the_injected_clock(adapter: Adapter) {
    let backend = Backend::new(adapter).await;
    let clock = Arc::new(ManualClock::default());
    clock.advance(A_YEAR);
    let store: Arc<dyn TriageStore> = match &backend {
        Backend::Sqlite { path, .. } => Arc::new(
            SqliteTriageStore::open_with_clock(path, false, clock.clone())
                .await
                .unwrap(),
        ),
        Backend::Postgres(db) => Arc::new(
            PgTriageStore::connect_with_clock(&db.url, 2, clock.clone())
                .await
                .unwrap(),
        ),
    };
    let before = clock.now_micros();
    apply(
        &*store,
        TriageChangeset {
            processed: vec!["ev-1".into()],
            inserts: vec![incident("i1", "k1", "open")],
            links: vec![link("a1", "i1", true)],
            events: vec![event("out-1")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pending = store.pending(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    store.mark_published(&[pending[0].seq]).await.unwrap();
    let after = clock.now_micros();

    for (what, sql) in [
        (
            "processed_at",
            "SELECT processed_at FROM processed_events WHERE event_id = 'ev-1'",
        ),
        (
            "attached_at",
            "SELECT attached_at FROM incident_alerts WHERE alert_id = 'a1'",
        ),
        (
            "created_at",
            "SELECT created_at FROM outbox WHERE id = 'out-1'",
        ),
        (
            "published_at",
            "SELECT published_at FROM outbox WHERE id = 'out-1'",
        ),
    ] {
        let stamp = read_i64(&backend, sql).await;
        // The system clock is a year behind `before`: only the injected clock lands here.
        assert!(
            (before..=after).contains(&stamp),
            "{what} = {stamp}, the injected clock read {before}..={after}"
        );
    }
}

/// One BIGINT/INTEGER value, read past the store.
async fn read_i64(backend: &Backend, sql: &str) -> i64 {
    match backend {
        Backend::Sqlite { path, .. } => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.query_row(sql, [], |r| r.get(0)).unwrap()
        }
        Backend::Postgres(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let v: i64 = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut conn)
                .await
                .unwrap()
                .get(0);
            let _ = conn.close().await;
            v
        }
    }
}
