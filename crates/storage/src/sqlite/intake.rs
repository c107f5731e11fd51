//! Intake's tables in SQLite: alerts.

use std::path::Path;

use async_trait::async_trait;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use super::{Migration, OUTBOX, conflict, enqueue, from_json, impl_outbox, json_text, now_micros};
use crate::{
    AlertKeyRow, AlertRecord, IntakeStore, IntakeTx, IntegrationRecord, OutboxEvent, Result,
};

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
    Migration {
        version: 3,
        sql: "
ALTER TABLE alerts ADD COLUMN annotations TEXT NOT NULL DEFAULT '{}';
ALTER TABLE alerts ADD COLUMN integration TEXT NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN alert_key TEXT NOT NULL DEFAULT '';
-- What each sender's alert key names now: follow-ups (resolve, acknowledge) and repeats
-- find their alert here; after a resolve, a new trigger points the key at a new alert.
CREATE TABLE alert_keys (
    integration TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (integration, alert_key)
);
-- Responses of calls made with an idempotency key, so a retry gets the first answer.
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    response BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE integrations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
",
    },
    // Nothing reads alerts by dedup key; the index only cost a write per alert.
    Migration {
        version: 4,
        sql: "DROP INDEX IF EXISTS alerts_dedup_key;",
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
        insert_alert(&mut tx, a).await?;
        enqueue(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn IntakeTx>> {
        Ok(Box::new(SqliteIntakeTx {
            tx: self.write.begin_with("BEGIN IMMEDIATE").await?,
        }))
    }

    async fn integrations(&self) -> Result<Vec<IntegrationRecord>> {
        let rows = sqlx::query("SELECT * FROM integrations ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IntegrationRecord {
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    key: r.try_get("key")?,
                    settings: from_json(r.try_get("settings")?)?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn create_integration(&self, i: &IntegrationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO integrations (name, kind, key, settings, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&i.name)
        .bind(&i.kind)
        .bind(&i.key)
        .bind(json_text(&i.settings)?)
        .bind(i.created_at)
        .execute(&self.write)
        .await
        .map_err(|e| conflict(e, &format!("integration {:?} or its key exists", i.name)))?;
        Ok(())
    }

    async fn delete_integration(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM integrations WHERE name = ?")
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
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

async fn insert_alert(tx: &mut SqliteConnection, a: &AlertRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO alerts (id, received_at, source, title, description, severity, category, labels,
            dedup_key, annotations, integration, alert_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(json_text(&a.annotations)?)
    .bind(&a.integration)
    .bind(&a.alert_key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

struct SqliteIntakeTx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl IntakeTx for SqliteIntakeTx {
    async fn alert_keys(&mut self, pairs: &[(String, String)]) -> Result<Vec<AlertKeyRow>> {
        let mut out = Vec::new();
        for chunk in pairs.chunks(500) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT integration, alert_key, alert_id, state FROM alert_keys
                 WHERE (integration, alert_key) IN (",
            );
            let mut sep = q.separated(", ");
            for (integration, key) in chunk {
                sep.push("(")
                    .push_bind_unseparated(integration)
                    .push_unseparated(", ")
                    .push_bind_unseparated(key)
                    .push_unseparated(")");
            }
            q.push(")");
            for r in q.build().fetch_all(&mut *self.tx).await? {
                out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
        }
        Ok(out)
    }

    async fn set_alert_keys(&mut self, rows: &[AlertKeyRow]) -> Result<()> {
        let now = now_micros();
        for chunk in rows.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO alert_keys (integration, alert_key, alert_id, state, updated_at) ",
            );
            q.push_values(chunk, |mut b, (integration, key, id, state)| {
                b.push_bind(integration)
                    .push_bind(key)
                    .push_bind(id)
                    .push_bind(state)
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (integration, alert_key) DO UPDATE SET alert_id = excluded.alert_id,
                    state = excluded.state, updated_at = excluded.updated_at",
            );
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn insert_alerts(
        &mut self,
        alerts: &[AlertRecord],
        events: &[OutboxEvent],
    ) -> Result<()> {
        // 12 and 5 bound variables a row: chunks stay far below SQLite's 32766.
        for chunk in alerts.chunks(500) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO alerts (id, received_at, source, title, description, severity, category, labels,
                    dedup_key, annotations, integration, alert_key) ",
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for a in chunk {
                rows.push((a, json_text(&a.labels)?, json_text(&a.annotations)?));
            }
            q.push_values(rows, |mut b, (a, labels, annotations)| {
                b.push_bind(&a.id)
                    .push_bind(a.received_at)
                    .push_bind(&a.source)
                    .push_bind(&a.title)
                    .push_bind(&a.description)
                    .push_bind(i64::from(a.severity))
                    .push_bind(&a.category)
                    .push_bind(labels)
                    .push_bind(&a.dedup_key)
                    .push_bind(annotations)
                    .push_bind(&a.integration)
                    .push_bind(&a.alert_key);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        let now = now_micros();
        for chunk in events.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO outbox (id, stream, subject, payload, created_at) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.id)
                    .push_bind(&e.stream)
                    .push_bind(&e.subject)
                    .push_bind(&e.payload)
                    .push_bind(now);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn idempotent(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT response FROM idempotency WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    async fn remember(&mut self, key: &str, response: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO idempotency (key, response, created_at) VALUES (?, ?, ?)")
            .bind(key)
            .bind(response)
            .bind(now_micros())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn enqueue(&mut self, event: &OutboxEvent) -> Result<()> {
        enqueue(&mut self.tx, event).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
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
        annotations: from_json(r.try_get("annotations")?)?,
        integration: r.try_get("integration")?,
        alert_key: r.try_get("alert_key")?,
    })
}
