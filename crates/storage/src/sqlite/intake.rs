//! Intake's tables in SQLite: alerts.

use std::path::Path;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{Migration, OUTBOX, enqueue, from_json, impl_outbox, json_text};
use crate::{AlertRecord, IntakeStore, OutboxEvent, Result};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: OUTBOX,
    },
    Migration {
        version: 2,
        sql: "
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity INTEGER NOT NULL,
    category TEXT NOT NULL,
    labels TEXT NOT NULL,
    dedup_key TEXT NOT NULL
);
CREATE INDEX alerts_dedup_key ON alerts (dedup_key, received_at);
",
    },
];

/// Intake's store on SQLite.
#[derive(Clone)]
pub struct SqliteIntakeStore {
    pool: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteIntakeStore {
    /// Opens `path`, creating and migrating it as needed.
    pub async fn open(path: &Path, durable_fsync: bool) -> Result<Self> {
        let (pool, write) = super::open(path, MIGRATIONS, durable_fsync).await?;
        Ok(Self { pool, write })
    }
}

impl_outbox!(SqliteIntakeStore);

#[async_trait]
impl IntakeStore for SqliteIntakeStore {
    async fn insert_alert(&self, a: &AlertRecord, event: &OutboxEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO alerts (id, received_at, source, title, description, severity, category, labels, dedup_key)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.id)
        .bind(a.received_at)
        .bind(&a.source)
        .bind(&a.title)
        .bind(&a.description)
        .bind(i64::from(a.severity))
        .bind(&a.category)
        .bind(json_text(&a.labels)?)
        .bind(&a.dedup_key)
        .execute(&mut *tx)
        .await?;
        enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        sqlx::query("SELECT * FROM alerts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| alert_row(&r))
            .transpose()
    }

    async fn count_alerts(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM alerts")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}

fn alert_row(r: &SqliteRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        received_at: r.try_get("received_at")?,
        source: r.try_get("source")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        severity: r.try_get::<i64, _>("severity")? as u32,
        category: r.try_get("category")?,
        labels: from_json(r.try_get("labels")?)?,
        dedup_key: r.try_get("dedup_key")?,
    })
}
