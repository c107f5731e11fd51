//! Notification's tables in Postgres: deliveries, claimed by one replica at a time.

use std::sync::Arc;

use async_trait::async_trait;
use firebreak_domain::{Clock, Micros};
use sqlx::Row;
use sqlx::postgres::{PgBindIterExt, PgPool, PgRow};

use super::named;
use super::{Migration, OUTBOX, from_json, get_u32, impl_connect, impl_outbox, json_text};
use crate::{DeliveryCursor, DeliveryRecord, NotificationStore, OutboxEvent, Result};
use futures::TryStreamExt;

/// The Postgres schema starts where SQLite's stands today (its version 4).
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
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    -- The step of an escalation policy it belongs to; 0 for none.
    escalation_step BIGINT NOT NULL DEFAULT 0,
    -- Until when (micros) a replica holds its claim on it.
    lease_until BIGINT,
    -- An event is delivered at most once per channel, however often it is consumed.
    UNIQUE (event_id, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_incident ON deliveries (incident_id);
",
    },
];

/// Notification's store on Postgres.
#[derive(Clone)]
pub struct PgNotificationStore {
    pool: PgPool,
    /// What rows are stamped with (`created_at`, `processed_at`…): the services' clock.
    clock: Arc<dyn Clock>,
}

impl_connect!(PgNotificationStore, "notification", MIGRATIONS);

impl_outbox!(PgNotificationStore);

#[async_trait]
impl NotificationStore for PgNotificationStore {
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<u32> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let payloads = deliveries
            .iter()
            .map(|d| json_text(&d.payload))
            .collect::<Result<Vec<_>>>()?;
        // Replicas consuming the same event at once: the second waits for the first's
        // transaction, then inserts nothing.
        let done = sqlx::query(
            "INSERT INTO deliveries (id, event_id, channel, incident_id, kind, payload, status, attempts,
                last_error, created_at, next_attempt_at, delivered_at, escalation_step)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int8[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[])
             ON CONFLICT (event_id, channel) DO NOTHING",
        )
        .bind(deliveries.iter().map(|d| &d.id).bind_iter())
        .bind(deliveries.iter().map(|d| &d.event_id).bind_iter())
        .bind(deliveries.iter().map(|d| &d.channel).bind_iter())
        .bind(deliveries.iter().map(|d| &d.incident_id).bind_iter())
        .bind(deliveries.iter().map(|d| &d.kind).bind_iter())
        .bind(&payloads)
        .bind(deliveries.iter().map(|d| d.status.as_str()).bind_iter())
        .bind(deliveries.iter().map(|d| i64::from(d.attempts)).bind_iter())
        .bind(deliveries.iter().map(|d| &d.last_error).bind_iter())
        .bind(deliveries.iter().map(|d| d.created_at.unix_micros()).bind_iter())
        .bind(deliveries.iter().map(|d| d.next_attempt_at.unix_micros()).bind_iter())
        .bind(deliveries.iter().map(|d| d.delivered_at.map(Micros::unix_micros)).bind_iter())
        .bind(deliveries.iter().map(|d| i64::from(d.escalation_step)).bind_iter())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() as u32)
    }

    async fn claim_due_deliveries(
        &self,
        now: Micros,
        lease_until: Micros,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        // Rows another claimer has locked are skipped, not waited for; a row it claimed and
        // committed meanwhile is re-checked on its new version (READ COMMITTED) and fails the
        // lease condition. Claimers never take the same delivery.
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_until = $2 WHERE id IN (
                SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1
                    AND (lease_until IS NULL OR lease_until < $1)
                ORDER BY next_attempt_at LIMIT $3
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(now.unix_micros())
        .bind(lease_until.unix_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut due = rows.iter().map(delivery_row).collect::<Result<Vec<_>>>()?;
        due.sort_by_key(|d| d.next_attempt_at);
        Ok(due)
    }

    async fn update_delivery(&self, d: &DeliveryRecord, event: Option<&OutboxEvent>) -> Result<()> {
        // One statement (atomic on its own): one round trip per attempt recorded.
        sqlx::query(
            "WITH updated AS (
                UPDATE deliveries SET status = $1, attempts = $2, last_error = $3,
                    next_attempt_at = $4, delivered_at = $5, lease_until = NULL
                WHERE id = $6
            )
            INSERT INTO outbox (id, stream, subject, payload, created_at)
            SELECT $7, $8, $9, $10, $11 WHERE $7::text IS NOT NULL",
        )
        .bind(d.status.as_str())
        .bind(i64::from(d.attempts))
        .bind(&d.last_error)
        .bind(d.next_attempt_at.unix_micros())
        .bind(d.delivered_at.map(Micros::unix_micros))
        .bind(&d.id)
        .bind(event.map(|e| &e.id))
        .bind(event.map(|e| &e.stream))
        .bind(event.map(|e| &e.subject))
        .bind(event.map(|e| &e.payload))
        .bind(self.clock.now_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deliveries_page(
        &self,
        incident_id: Option<&str>,
        after: Option<&DeliveryCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut rows = sqlx::query(
            "SELECT * FROM deliveries WHERE ($1::text IS NULL OR incident_id = $1)
                AND ($2::bigint IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(incident_id)
        .bind(after.map(|a| a.created_at.unix_micros()))
        .bind(after.map(|a| a.id.as_str()))
        .bind(i64::from(limit))
        .fetch(&self.pool);
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        // Rows stream in: past the byte bound the rest are never read.
        while bytes < max_bytes
            && let Some(row) = rows.try_next().await?
        {
            let d = delivery_row(&row)?;
            bytes += d.wire_size();
            out.push(d);
        }
        Ok(out)
    }

    async fn cancel_escalations(&self, incident_id: &str) -> Result<u32> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', last_error = 'the incident was acknowledged'
             WHERE incident_id = $1 AND status = 'pending' AND escalation_step >= 2",
        )
        .bind(incident_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() as u32)
    }
}

fn delivery_row(r: &PgRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        channel: r.try_get("channel")?,
        incident_id: r.try_get("incident_id")?,
        kind: r.try_get("kind")?,
        payload: from_json(r.try_get("payload")?)?,
        status: named(r, "status")?,
        attempts: get_u32(r, "attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: Micros::from_unix_micros(r.try_get("created_at")?),
        next_attempt_at: Micros::from_unix_micros(r.try_get("next_attempt_at")?),
        delivered_at: r
            .try_get::<Option<i64>, _>("delivered_at")?
            .map(Micros::from_unix_micros),
        escalation_step: get_u32(r, "escalation_step")?,
    })
}
