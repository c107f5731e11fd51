//! The SQLite adapter: one database file per service, WAL, embedded migrations.

mod bus;
mod conn;
mod intake;
mod notification;
mod orchestration;
mod triage;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

pub use bus::SqliteBusLog;
pub use intake::SqliteIntakeStore;
pub use notification::SqliteNotificationStore;
pub use orchestration::SqliteOrchestrationStore;
pub use triage::SqliteTriageStore;

use crate::{Error, OutboxEvent, OutboxRecord, Result};

/// One schema change: applied once, in order, inside a transaction.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
}

/// The outbox every service database carries.
const OUTBOX: &str = "
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
";

/// Opens (creating if needed) the SQLite database at `path`, applies `migrations`, and
/// returns a pool for reads and a one-connection pool for writes.
///
/// WAL with `synchronous = NORMAL`: a committed transaction survives a crash of the process
/// (the guarantee Firebreak makes); `synchronous = FULL` (`durable_fsync`) also survives a
/// power loss at the cost of an fsync per commit. SQLite has one writer at a time: writers
/// queue for the single write connection in order instead of meeting `SQLITE_BUSY` and
/// sleeping in its busy handler, which is what made write latency's tail long.
pub(crate) async fn open(
    path: &Path,
    migrations: &[Migration],
    durable_fsync: bool,
) -> Result<(SqlitePool, SqlitePool)> {
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if durable_fsync {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    migrate(&write, migrations).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    Ok((read, write))
}

async fn migrate(pool: &SqlitePool, migrations: &[Migration]) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    for m in migrations.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
            .execute(&mut *tx)
            .await
            .map_err(|source| Error::Migration {
                version: m.version,
                source: source.into(),
            })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(m.version)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_micros() as i64
}

pub(crate) async fn enqueue(conn: &mut SqliteConnection, event: &OutboxEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, stream, subject, payload, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&event.id)
    .bind(&event.stream)
    .bind(&event.subject)
    .bind(&event.payload)
    .bind(now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn outbox_pending(pool: &SqlitePool, limit: u32) -> Result<Vec<OutboxRecord>> {
    let rows = sqlx::query(
        "SELECT seq, id, stream, subject, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(OutboxRecord {
                seq: r.try_get("seq")?,
                event: OutboxEvent {
                    id: r.try_get("id")?,
                    stream: r.try_get("stream")?,
                    subject: r.try_get("subject")?,
                    payload: r.try_get("payload")?,
                },
            })
        })
        .collect()
}

pub(crate) async fn outbox_mark(pool: &SqlitePool, seqs: &[i64]) -> Result<()> {
    let now = now_micros();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in seqs.chunks(1000) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE outbox SET published_at = ");
        q.push_bind(now).push(" WHERE seq IN (");
        let mut sep = q.separated(", ");
        for seq in chunk {
            sep.push_bind(*seq);
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
    }
    if sweep_due(seqs) {
        sqlx::query("DELETE FROM outbox WHERE published_at < ?")
            .bind(now - OUTBOX_KEPT_MICROS)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Published outbox rows are kept a day for operators, then swept.
pub(crate) const OUTBOX_KEPT_MICROS: i64 = 86_400_000_000;

/// Whether marking `seqs` published should sweep old rows too. The sweep scans the table, so
/// it runs about once per 4096 events rather than on every mark.
pub(crate) fn sweep_due(seqs: &[i64]) -> bool {
    seqs.iter().any(|s| s % 4096 == 0)
        || seqs
            .first()
            .zip(seqs.last())
            .is_some_and(|(a, b)| b / 4096 != a / 4096)
}

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(e.to_string()))
}

macro_rules! impl_outbox {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::Outbox for $store {
            async fn pending(&self, limit: u32) -> crate::Result<Vec<crate::OutboxRecord>> {
                super::outbox_pending(&self.pool, limit).await
            }
            async fn mark_published(&self, seqs: &[i64]) -> crate::Result<()> {
                super::outbox_mark(&self.write, seqs).await
            }
            async fn ping(&self) -> crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_outbox;
