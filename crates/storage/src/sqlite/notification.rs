//! Notification's tables in SQLite: deliveries.

use async_trait::async_trait;
use firebreak_domain::Micros;
use rusqlite::Row;

use super::conn::{self, Db};
use super::named;
use super::{Migration, OUTBOX, OUTBOX_READ_IN_PLACE, json_text};
use super::{impl_open, impl_outbox};
use crate::{DeliveryCursor, DeliveryRecord, NotificationStore, OutboxEvent, Result};

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
    Migration {
        version: 5,
        sql: OUTBOX_READ_IN_PLACE,
    },
];

/// Notification's store on SQLite.
#[derive(Clone)]
pub struct SqliteNotificationStore {
    db: Db,
}

// An embedded database belongs to one process (the app locks its data directory):
// a claim found here was left by a crashed process and is void.
impl_open!(
    SqliteNotificationStore,
    MIGRATIONS,
    on_open: "UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL"
);

impl_outbox!(SqliteNotificationStore);

#[async_trait]
impl NotificationStore for SqliteNotificationStore {
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<u32> {
        let deliveries = deliveries.to_vec();
        self.db
            .write(move |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO deliveries (id, event_id, channel, incident_id, kind, payload, status, attempts,
                        last_error, created_at, next_attempt_at, delivered_at, escalation_step)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, channel) DO NOTHING",
                )?;
                let mut inserted = 0;
                for d in &deliveries {
                    inserted += insert.execute(rusqlite::params![
                        d.id,
                        d.event_id,
                        d.channel,
                        d.incident_id,
                        d.kind,
                        json_text(&d.payload)?,
                        d.status.as_str(),
                        d.attempts,
                        d.last_error,
                        d.created_at.unix_micros(),
                        d.next_attempt_at.unix_micros(),
                        d.delivered_at.map(Micros::unix_micros),
                        d.escalation_step,
                    ])? as u32;
                }
                Ok(inserted)
            })
            .await
    }

    async fn claim_due_deliveries(
        &self,
        now: Micros,
        lease_until: Micros,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut due: Vec<DeliveryRecord> = self
            .db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE deliveries SET lease_until = ?1 WHERE id IN (
                            SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?2
                                AND (lease_until IS NULL OR lease_until < ?2)
                            ORDER BY next_attempt_at LIMIT ?3)
                         RETURNING *",
                    )?
                    .query_map(
                        (lease_until.unix_micros(), now.unix_micros(), i64::from(limit)),
                        delivery_row,
                    )?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        due.sort_by_key(|d| d.next_attempt_at);
        Ok(due)
    }

    async fn update_delivery(&self, d: &DeliveryRecord, event: Option<&OutboxEvent>) -> Result<()> {
        let (d, event) = (d.clone(), event.cloned());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "UPDATE deliveries SET status = ?, attempts = ?, last_error = ?, next_attempt_at = ?, delivered_at = ?,
                        lease_until = NULL
                     WHERE id = ?",
                )?
                .execute(rusqlite::params![
                    d.status.as_str(),
                    d.attempts,
                    d.last_error,
                    d.next_attempt_at.unix_micros(),
                    d.delivered_at.map(Micros::unix_micros),
                    d.id,
                ])?;
                conn::enqueue(tx, event.as_slice(), clock.now_micros())
            })
            .await
    }

    async fn deliveries_page(
        &self,
        incident_id: Option<&str>,
        after: Option<&DeliveryCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let incident_id = incident_id.map(str::to_owned);
        let (after_at, after_id) = after
            .map(|a| (a.created_at.unix_micros(), a.id.clone()))
            .unzip();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT * FROM deliveries WHERE (?1 IS NULL OR incident_id = ?1)
                        AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
                     ORDER BY created_at DESC, id DESC LIMIT ?4",
                )?;
                let mut rows = stmt.query((incident_id, after_at, after_id, i64::from(limit)))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                // Rows are stepped one by one: past the byte bound the rest are never read.
                while bytes < max_bytes
                    && let Some(row) = rows.next()?
                {
                    let d = delivery_row(row)?;
                    bytes += d.wire_size();
                    out.push(d);
                }
                Ok(out)
            })
            .await
    }

    async fn cancel_escalations(&self, incident_id: &str) -> Result<u32> {
        let incident_id = incident_id.to_owned();
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE deliveries SET status = 'cancelled', last_error = 'the incident was acknowledged'
                         WHERE incident_id = ? AND status = 'pending' AND escalation_step >= 2",
                    )?
                    .execute([&incident_id])? as u32)
            })
            .await
    }
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.get("id")?,
        event_id: r.get("event_id")?,
        channel: r.get("channel")?,
        incident_id: r.get("incident_id")?,
        kind: r.get("kind")?,
        payload: r.get("payload")?,
        status: named(r, "status")?,
        attempts: r.get("attempts")?,
        last_error: r.get("last_error")?,
        created_at: Micros::from_unix_micros(r.get("created_at")?),
        next_attempt_at: Micros::from_unix_micros(r.get("next_attempt_at")?),
        delivered_at: r
            .get::<_, Option<i64>>("delivered_at")?
            .map(Micros::from_unix_micros),
        escalation_step: r.get("escalation_step")?,
    })
}
