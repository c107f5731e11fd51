//! Notification's tables in SQLite: deliveries.

use std::path::Path;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{Migration, OUTBOX, enqueue, from_json, impl_outbox, json_text};
use crate::{DeliveryRecord, NotificationStore, OutboxEvent, Result};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: OUTBOX,
    },
    Migration {
        version: 2,
        sql: "
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    -- An event is delivered at most once per channel, however often it is consumed.
    UNIQUE (event_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_incident ON deliveries (incident_id);
",
    },
    // Escalation policies: a delivery may belong to a step of one, and a later step is
    // cancelled once the incident is acknowledged. SQLite cannot change a CHECK in place, so
    // the table is rebuilt.
    Migration {
        version: 3,
        sql: "
CREATE TABLE deliveries_new (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    escalation_step INTEGER NOT NULL DEFAULT 0,
    UNIQUE (event_id, channel)
);
INSERT INTO deliveries_new (id, event_id, channel, incident_id, kind, payload, status, attempts,
    last_error, created_at, next_attempt_at, delivered_at)
SELECT id, event_id, channel, incident_id, kind, payload, status, attempts, last_error,
    created_at, next_attempt_at, delivered_at FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_incident ON deliveries (incident_id);
",
    },
    // Replicas claim deliveries for a while before attempting them.
    Migration {
        version: 4,
        sql: "ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;",
    },
];

/// Notification's store on SQLite.
#[derive(Clone)]
pub struct SqliteNotificationStore {
    pool: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteNotificationStore {
    /// Opens `path`, creating and migrating it as needed.
    pub async fn open(path: &Path, durable_fsync: bool) -> Result<Self> {
        let (pool, write) = super::open(path, MIGRATIONS, durable_fsync).await?;
        // An embedded database belongs to one process (the app locks its data directory):
        // a claim found here was left by a crashed process and is void.
        sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
            .execute(&write)
            .await?;
        Ok(Self { pool, write })
    }
}

impl_outbox!(SqliteNotificationStore);

#[async_trait]
impl NotificationStore for SqliteNotificationStore {
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<u32> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut inserted = 0;
        for d in deliveries {
            let done = sqlx::query(
                "INSERT INTO deliveries (id, event_id, channel, incident_id, kind, payload, status, attempts,
                    last_error, created_at, next_attempt_at, delivered_at, escalation_step)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, channel) DO NOTHING",
            )
            .bind(&d.id)
            .bind(&d.event_id)
            .bind(&d.channel)
            .bind(&d.incident_id)
            .bind(&d.kind)
            .bind(json_text(&d.payload)?)
            .bind(&d.status)
            .bind(i64::from(d.attempts))
            .bind(&d.last_error)
            .bind(d.created_at)
            .bind(d.next_attempt_at)
            .bind(d.delivered_at)
            .bind(i64::from(d.escalation_step))
            .execute(&mut *tx)
            .await?;
            inserted += done.rows_affected() as u32;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim_due_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = ?1 WHERE id IN (
                SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?2
                    AND (lease_until IS NULL OR lease_until < ?2)
                ORDER BY next_attempt_at LIMIT ?3)
             RETURNING *",
        )
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        let mut due = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        due.sort_by_key(|d| d.next_attempt_at);
        Ok(due)
    }

    async fn update_delivery(&self, d: &DeliveryRecord, event: Option<&OutboxEvent>) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE deliveries SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ?, delivered_at = ?,
                lease_until = NULL
             WHERE id = ?",
        )
        .bind(&d.status)
        .bind(i64::from(d.attempts))
        .bind(&d.last_error)
        .bind(d.next_attempt_at)
        .bind(d.delivered_at)
        .bind(&d.id)
        .execute(&mut *tx)
        .await?;
        if let Some(e) = event {
            enqueue(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(
        &self,
        incident_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM deliveries WHERE (?1 IS NULL OR incident_id = ?1)
             ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(incident_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn cancel_escalations(&self, incident_id: &str) -> Result<u32> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', last_error = 'the incident was acknowledged'
             WHERE incident_id = ? AND status = 'pending' AND escalation_step >= 2",
        )
        .bind(incident_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() as u32)
    }
}

fn delivery_row(r: &SqliteRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        channel: r.try_get("channel")?,
        incident_id: r.try_get("incident_id")?,
        kind: r.try_get("kind")?,
        payload: from_json(r.try_get("payload")?)?,
        status: r.try_get("status")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
        escalation_step: r.try_get::<i64, _>("escalation_step")? as u32,
    })
}
