//! Notification's tables in Postgres: deliveries, claimed by one replica at a time, and the
//! directory (users, teams, API tokens).

use std::sync::Arc;

use async_trait::async_trait;
use firebreak_domain::{Clock, DeliveryState, Micros};
use sqlx::postgres::{PgBindIterExt, PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::named;
use super::{
    Migration, OUTBOX, conflict, from_json, get_u32, impl_connect, impl_outbox, json_text,
};
use crate::directory::{grants_text, kind_text, parse_grants, parse_kind, role_changes};
use crate::{
    AuditCursor, AuditFilter, AuditRecord, DeliveryCursor, DeliveryRecord, DirectoryStore, Error,
    IncidentRoleRecord, NotificationStore, OutboxEvent, ResponseRecord, Result, SubscriptionRecord,
    TeamRecord, TokenRecord, UserRecord,
};
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
    Migration {
        version: 3,
        sql: DIRECTORY,
    },
    Migration {
        version: 4,
        sql: AUDIT,
    },
    Migration {
        version: 5,
        sql: INCIDENT_ROLES,
    },
    Migration {
        version: 6,
        sql: CONTACTS,
    },
    Migration {
        version: 7,
        sql: SENT,
    },
    Migration {
        version: 8,
        sql: RESPONSES,
    },
    Migration {
        version: 9,
        sql: SCHEDULES,
    },
    Migration {
        version: 10,
        sql: ACKNOWLEDGED,
    },
    Migration {
        version: 11,
        sql: SUBSCRIPTIONS,
    },
    Migration {
        version: 12,
        sql: MAINTENANCE,
    },
    // The trace each delivery attempt continues.
    Migration {
        version: 13,
        sql: "ALTER TABLE deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
    },
];

/// Who is subscribed to which incident's status updates (`person:NAME`, `channel:NAME`).
/// SQLite's migration 14 is the same.
const SUBSCRIPTIONS: &str = "
CREATE TABLE incident_subscriptions (
    incident_id TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, subscriber)
);
";

/// Maintenance windows made at run time (those of the configuration are not stored).
/// SQLite's migration 15 is the same.
const MAINTENANCE: &str = "
CREATE TABLE maintenance_windows (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
";

/// A page remembers when its incident was acknowledged and by whom (time to acknowledge
/// from the page). SQLite's migration 13 is the same.
const ACKNOWLEDGED: &str = "
ALTER TABLE deliveries ADD COLUMN acknowledged_at BIGINT;
ALTER TABLE deliveries ADD COLUMN acknowledged_by TEXT NOT NULL DEFAULT '';
";

/// Deliveries may be `sent` (handed to a provider that has not confirmed), remember the
/// provider's id and when they were sent, and who a page reaches (throttles count by it).
/// SQLite's migration 10 is the same schema.
const SENT: &str = "
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'sent', 'delivered', 'failed', 'cancelled'));
ALTER TABLE deliveries ADD COLUMN provider_id TEXT;
ALTER TABLE deliveries ADD COLUMN destination TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries ADD COLUMN sent_at BIGINT;
UPDATE deliveries SET sent_at = delivered_at WHERE delivered_at IS NOT NULL;
DROP INDEX deliveries_incident;
CREATE INDEX deliveries_incident ON deliveries (incident_id, channel);
CREATE INDEX deliveries_provider_id ON deliveries (provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX deliveries_destination ON deliveries (destination, sent_at) WHERE destination <> '';
";

/// Schedules kept at run time, their overrides, and the version every change takes.
/// SQLite's migration 12 is the same.
const SCHEDULES: &str = "
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    declared BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE schedule_overrides (
    id TEXT PRIMARY KEY,
    schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX schedule_overrides_schedule ON schedule_overrides (schedule, created_at);
CREATE TABLE schedule_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO schedule_version (id, version) VALUES (1, 0);
";

/// People's answers to pages, and the codes SMS replies name incidents by. SQLite's
/// migration 11 is the same.
const RESPONSES: &str = "
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    via TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX responses_incident ON responses (incident_id);
CREATE TABLE reply_codes (
    address TEXT NOT NULL,
    code BIGINT NOT NULL,
    incident_id TEXT NOT NULL,
    assigned_at BIGINT NOT NULL,
    PRIMARY KEY (address, code)
);
CREATE UNIQUE INDEX reply_codes_incident ON reply_codes (address, incident_id);
";

/// How each person is reached (JSON lists). SQLite's migration 9 is the same.
const CONTACTS: &str = "
ALTER TABLE users ADD COLUMN contact_methods TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN notification_rules TEXT NOT NULL DEFAULT '[]';
";

/// Incident roles as the directory copies them (see `IncidentRoleRecord`). SQLite's
/// migration 8 is the same schema.
const INCIDENT_ROLES: &str = "
CREATE TABLE incident_roles (
    incident_id TEXT NOT NULL,
    role TEXT NOT NULL,
    person TEXT NOT NULL,
    removed BOOLEAN NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (incident_id, role, person)
);
CREATE INDEX incident_roles_version ON incident_roles (version);
";

/// The audit log: append-only (no statement updates it), listed newest first, by actor, and
/// deleted by age. SQLite's migration 7 is the same schema.
const AUDIT: &str = "
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    roles TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    request_id TEXT NOT NULL,
    trace_id TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
";

/// The directory: users, teams and their members, API tokens, and the counter that versions
/// every change to a token. SQLite's migration 6 is the same schema.
const DIRECTORY: &str = "
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service_account')),
    declared BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    declared BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
-- Deleting a team or a user deletes its memberships.
CREATE TABLE team_members (
    team TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    PRIMARY KEY (team, user_name)
);
CREATE INDEX team_members_user ON team_members (user_name);
-- A token outlives its subject (revoked, for the record), so `subject` is no foreign key.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    grants TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT,
    version BIGINT NOT NULL
);
CREATE INDEX api_tokens_version ON api_tokens (version);
CREATE INDEX api_tokens_subject ON api_tokens (subject) WHERE revoked_at IS NULL;
-- One row, locked by each transaction that changes a token until it commits: writers take
-- versions one after another, in the order they commit.
CREATE TABLE directory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);
";

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
                last_error, created_at, next_attempt_at, delivered_at, escalation_step, provider_id,
                destination, sent_at, traceparent)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int8[], $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[],
                $14::text[], $15::text[], $16::int8[], $17::text[])
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
        .bind(deliveries.iter().map(|d| d.provider_id.as_deref()).bind_iter())
        .bind(deliveries.iter().map(|d| &d.destination).bind_iter())
        .bind(deliveries.iter().map(|d| d.sent_at.map(Micros::unix_micros)).bind_iter())
        .bind(deliveries.iter().map(|d| &d.traceparent).bind_iter())
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
                    next_attempt_at = $4, delivered_at = $5, provider_id = $12, sent_at = $13,
                    lease_until = NULL
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
        .bind(d.provider_id.as_deref())
        .bind(d.sent_at.map(Micros::unix_micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn transition_delivery(
        &self,
        d: &DeliveryRecord,
        from: DeliveryState,
        event: Option<&OutboxEvent>,
    ) -> Result<bool> {
        // One statement: the event is written only when the row moved, and a second report
        // racing the first waits for its row lock, then finds the state changed.
        let done = sqlx::query(
            "WITH moved AS (
                UPDATE deliveries SET status = $1, last_error = $2, delivered_at = $3
                WHERE id = $4 AND status = $5
                RETURNING id
            ), written AS (
                INSERT INTO outbox (id, stream, subject, payload, created_at)
                SELECT $6, $7, $8, $9, $10 FROM moved WHERE $6::text IS NOT NULL
            )
            SELECT count(*) AS n FROM moved",
        )
        .bind(d.status.as_str())
        .bind(&d.last_error)
        .bind(d.delivered_at.map(Micros::unix_micros))
        .bind(&d.id)
        .bind(from.as_str())
        .bind(event.map(|e| &e.id))
        .bind(event.map(|e| &e.stream))
        .bind(event.map(|e| &e.subject))
        .bind(event.map(|e| &e.payload))
        .bind(self.clock.now_micros())
        .fetch_one(&self.pool)
        .await?;
        Ok(done.try_get::<i64, _>("n")? > 0)
    }

    async fn delivery_by_provider_id(
        &self,
        provider_id: &str,
        status: DeliveryState,
    ) -> Result<Option<DeliveryRecord>> {
        sqlx::query(
            "SELECT * FROM deliveries WHERE provider_id = $1 AND status = $2
             ORDER BY sent_at, id LIMIT 1",
        )
        .bind(provider_id)
        .bind(status.as_str())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(delivery_row)
        .transpose()
    }

    async fn first_provider_id(
        &self,
        incident_id: &str,
        channel: &str,
        kind_prefix: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT provider_id FROM deliveries WHERE incident_id = $1 AND channel = $2
                AND starts_with(kind, $3) AND provider_id IS NOT NULL
                AND status IN ('sent', 'delivered')
             ORDER BY sent_at, id LIMIT 1",
        )
        .bind(incident_id)
        .bind(channel)
        .bind(kind_prefix)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get("provider_id")?,
            None => None,
        })
    }

    async fn sent_to(&self, destination: &str, since: Micros, limit: u32) -> Result<Vec<Micros>> {
        let rows = sqlx::query(
            "SELECT sent_at FROM deliveries WHERE destination = $1 AND sent_at >= $2
             ORDER BY sent_at DESC LIMIT $3",
        )
        .bind(destination)
        .bind(since.unix_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut sent = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("sent_at").map(Micros::from_unix_micros))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        sent.reverse();
        Ok(sent)
    }

    async fn deliveries_page(
        &self,
        incident_id: Option<&str>,
        status: Option<DeliveryState>,
        after: Option<&DeliveryCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let mut rows = sqlx::query(
            "SELECT * FROM deliveries WHERE ($1::text IS NULL OR incident_id = $1)
                AND ($2::bigint IS NULL OR (created_at, id) < ($2, $3))
                AND ($5::text IS NULL OR status = $5)
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(incident_id)
        .bind(after.map(|a| a.created_at.unix_micros()))
        .bind(after.map(|a| a.id.as_str()))
        .bind(i64::from(limit))
        .bind(status.map(DeliveryState::as_str))
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
             WHERE incident_id = $1 AND status = 'pending'
                AND (escalation_step >= 2 OR kind IN ('escalation.step', 'escalation.page'))",
        )
        .bind(incident_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() as u32)
    }

    async fn mark_acknowledged(&self, incident_id: &str, at: Micros, by: &str) -> Result<u32> {
        let done = sqlx::query(
            "UPDATE deliveries SET acknowledged_at = $1, acknowledged_by = $2
             WHERE incident_id = $3 AND kind = 'escalation.page' AND acknowledged_at IS NULL",
        )
        .bind(at.unix_micros())
        .bind(by)
        .bind(incident_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() as u32)
    }

    async fn record_response(&self, r: &ResponseRecord, event: &OutboxEvent) -> Result<bool> {
        // One statement: the event is written only with a response that is new.
        let new: Option<String> = sqlx::query_scalar(
            "WITH kept AS (
                INSERT INTO responses (id, incident_id, user_name, action, via, at)
                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING id
            ), queued AS (
                INSERT INTO outbox (id, stream, subject, payload, created_at)
                SELECT $7, $8, $9, $10, $11 FROM kept
            )
            SELECT id FROM kept",
        )
        .bind(&r.id)
        .bind(&r.incident_id)
        .bind(&r.user)
        .bind(&r.action)
        .bind(&r.via)
        .bind(r.at.unix_micros())
        .bind(&event.id)
        .bind(&event.stream)
        .bind(&event.subject)
        .bind(&event.payload)
        .bind(self.clock.now_micros())
        .fetch_optional(&self.pool)
        .await?;
        Ok(new.is_some())
    }

    async fn reply_code(&self, address: &str, incident_id: &str, now: Micros) -> Result<u32> {
        let mut tx = self.pool.begin().await?;
        // Replicas paging one number at once take its codes one after the other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('reply_codes:' || $1, 0))")
            .bind(address)
            .execute(&mut *tx)
            .await?;
        let taken: Vec<(u32, String, i64)> = sqlx::query(
            "SELECT code, incident_id, assigned_at FROM reply_codes WHERE address = $1",
        )
        .bind(address)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok((
                get_u32(r, "code")?,
                r.try_get("incident_id")?,
                r.try_get("assigned_at")?,
            ))
        })
        .collect::<Result<_>>()?;
        let (code, kept) = crate::choose_reply_code(&taken, incident_id);
        if !kept {
            sqlx::query(
                "INSERT INTO reply_codes (address, code, incident_id, assigned_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (address, code) DO UPDATE SET incident_id = $3, assigned_at = $4",
            )
            .bind(address)
            .bind(i64::from(code))
            .bind(incident_id)
            .bind(now.unix_micros())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(code)
    }

    async fn reply_incident(&self, address: &str, code: u32) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT incident_id FROM reply_codes WHERE address = $1 AND code = $2",
        )
        .bind(address)
        .bind(i64::from(code))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn subscribe(&self, s: &SubscriptionRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO incident_subscriptions (incident_id, subscriber, created_at, created_by)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&s.incident_id)
        .bind(&s.subscriber)
        .bind(s.created_at.unix_micros())
        .bind(&s.created_by)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn unsubscribe(&self, incident_id: &str, subscriber: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM incident_subscriptions WHERE incident_id = $1 AND subscriber = $2",
        )
        .bind(incident_id)
        .bind(subscriber)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn subscriptions_page(
        &self,
        incident_id: &str,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>> {
        let rows = sqlx::query(
            "SELECT incident_id, subscriber, created_at, created_by
             FROM incident_subscriptions WHERE incident_id = $1
                AND ($2::BIGINT IS NULL OR (created_at, subscriber) > ($2, $3))
             ORDER BY created_at, subscriber LIMIT $4",
        )
        .bind(incident_id)
        .bind(after.map(|(at, _)| at.unix_micros()))
        .bind(after.map_or("", |(_, s)| s))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionRecord {
                    incident_id: r.try_get("incident_id")?,
                    subscriber: r.try_get("subscriber")?,
                    created_at: Micros::from_unix_micros(r.try_get("created_at")?),
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
    }

    async fn subscriptions(&self, incident_id: &str) -> Result<Vec<SubscriptionRecord>> {
        let rows = sqlx::query(
            "SELECT incident_id, subscriber, created_at, created_by
             FROM incident_subscriptions WHERE incident_id = $1
             ORDER BY created_at, subscriber",
        )
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubscriptionRecord {
                    incident_id: r.try_get("incident_id")?,
                    subscriber: r.try_get("subscriber")?,
                    created_at: Micros::from_unix_micros(r.try_get("created_at")?),
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect()
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
        provider_id: r.try_get("provider_id")?,
        destination: r.try_get("destination")?,
        sent_at: r
            .try_get::<Option<i64>, _>("sent_at")?
            .map(Micros::from_unix_micros),
        acknowledged_at: r
            .try_get::<Option<i64>, _>("acknowledged_at")?
            .map(Micros::from_unix_micros),
        acknowledged_by: r.try_get("acknowledged_by")?,
        traceparent: r.try_get("traceparent")?,
    })
}

/// Replicas change the directory at once. Every transaction that changes a token locks the
/// one row of `directory_version` to take its version and holds it until it commits, so
/// versions follow commit order: a reader that sees version `v` committed has seen every
/// change numbered below it, and [`DirectoryStore::tokens_since`] never skips one.
///
/// Locks are taken in one order, user, then tokens (by id), then the version row, so writers
/// wait for each other and never deadlock.
#[async_trait]
impl DirectoryStore for PgNotificationStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (name, display_name, email, time_zone, kind, declared, created_at,
                contact_methods, notification_rules)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&user.name)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(&user.time_zone)
        .bind(kind_text(user.kind)?)
        .bind(user.declared)
        .bind(user.created_at.unix_micros())
        .bind(json_text(&user.contact_methods)?)
        .bind(json_text(&user.notification_rules)?)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, &format!("user {:?} exists", user.name)))?;
        Ok(())
    }

    async fn users_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>> {
        sqlx::query(
            "SELECT * FROM users WHERE ($1::TEXT IS NULL OR name > $1) ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user_row)
        .collect()
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_row)
            .transpose()
    }

    async fn delete_user(&self, name: &str, now: Micros) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Memberships go with the user (ON DELETE CASCADE). The deleted row stays locked
        // until commit: an `insert_token` that locked it first has committed its token
        // before this goes on (and the select below sees it), one that comes after finds no
        // user.
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM api_tokens WHERE subject = $1 AND revoked_at IS NULL
             ORDER BY id FOR UPDATE",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !ids.is_empty() {
            // Each revocation is a change of its own, with a version of its own.
            let last = bump_version(&mut tx, ids.len()).await?;
            sqlx::query(
                "UPDATE api_tokens t SET revoked_at = $1, version = $2 + r.n
                 FROM unnest($3::text[]) WITH ORDINALITY AS r(id, n) WHERE t.id = r.id",
            )
            .bind(now.unix_micros())
            .bind(last - ids.len() as i64)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn update_user(&self, user: &UserRecord) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET display_name = $1, email = $2, time_zone = $3, declared = $4,
                contact_methods = $5, notification_rules = $6
             WHERE name = $7",
        )
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(&user.time_zone)
        .bind(user.declared)
        .bind(json_text(&user.contact_methods)?)
        .bind(json_text(&user.notification_rules)?)
        .bind(&user.name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn update_team(&self, team: &TeamRecord) -> Result<bool> {
        let done = sqlx::query("UPDATE teams SET display_name = $1, declared = $2 WHERE name = $3")
            .bind(&team.display_name)
            .bind(team.declared)
            .bind(&team.name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_team(&self, team: &TeamRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO teams (name, display_name, declared, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&team.name)
        .bind(&team.display_name)
        .bind(team.declared)
        .bind(team.created_at.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, &format!("team {:?} exists", team.name)))?;
        Ok(())
    }

    async fn teams(&self) -> Result<Vec<TeamRecord>> {
        self.teams_page(None, u32::MAX).await
    }

    async fn teams_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<TeamRecord>> {
        let rows = sqlx::query(
            "SELECT t.name, t.display_name, t.declared, t.created_at, m.user_name
             FROM (SELECT * FROM teams WHERE $1::TEXT IS NULL OR name > $1
                   ORDER BY name LIMIT $2) t
             LEFT JOIN team_members m ON m.team = t.name
             ORDER BY t.name, m.user_name",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut teams: Vec<TeamRecord> = Vec::new();
        for r in &rows {
            let name: String = r.try_get("name")?;
            if teams.last().is_none_or(|t| t.name != name) {
                teams.push(TeamRecord {
                    name,
                    display_name: r.try_get("display_name")?,
                    declared: r.try_get("declared")?,
                    created_at: Micros::from_unix_micros(r.try_get("created_at")?),
                    members: Vec::new(),
                });
            }
            if let (Some(team), Some(member)) = (
                teams.last_mut(),
                r.try_get::<Option<String>, _>("user_name")?,
            ) {
                team.members.push(member);
            }
        }
        Ok(teams)
    }

    async fn delete_team(&self, name: &str) -> Result<bool> {
        // Memberships go with the team (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM teams WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_member(&self, team: &str, user: &str, member: bool) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Both rows stay locked against deletion until the membership is written.
        if !locked(
            &mut tx,
            "SELECT 1 FROM teams WHERE name = $1 FOR KEY SHARE",
            team,
        )
        .await?
        {
            return Err(Error::NotFound(format!("team {team}")));
        }
        if !locked(
            &mut tx,
            "SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE",
            user,
        )
        .await?
        {
            return Err(Error::NotFound(format!("user {user}")));
        }
        let sql = if member {
            "INSERT INTO team_members (team, user_name) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM team_members WHERE team = $1 AND user_name = $2"
        };
        let done = sqlx::query(sql)
            .bind(team)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<TokenRecord> {
        let mut tx = self.pool.begin().await?;
        // The subject's row stays locked against deletion until the token is committed, so
        // a `delete_user` running meanwhile waits and then revokes it.
        let query = "SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE";
        if !locked(&mut tx, query, &token.subject).await? {
            return Err(Error::NotFound(format!("user {}", token.subject)));
        }
        let mut token = token.clone();
        token.version = bump_version(&mut tx, 1).await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, hash, subject, grants, description, created_by,
                created_at, expires_at, revoked_at, last_used_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&token.id)
        .bind(&token.hash)
        .bind(&token.subject)
        .bind(grants_text(&token.grants))
        .bind(&token.description)
        .bind(&token.created_by)
        .bind(token.created_at.unix_micros())
        .bind(token.expires_at.map(Micros::unix_micros))
        .bind(token.revoked_at.map(Micros::unix_micros))
        .bind(token.last_used_at.map(Micros::unix_micros))
        .bind(token.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict(
                e,
                &format!("a token with id {:?} or its hash exists", token.id),
            )
        })?;
        tx.commit().await?;
        Ok(token)
    }

    async fn tokens_page(
        &self,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>> {
        sqlx::query(
            "SELECT * FROM api_tokens WHERE $1::BIGINT IS NULL OR (created_at, id) < ($1, $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(after.map(|(at, _)| at.unix_micros()))
        .bind(after.map_or("", |(_, id)| id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(token_row)
        .collect()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_token(&self, id: &str, now: Micros) -> Result<Option<TokenRecord>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM api_tokens WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut token = token_row(&row)?;
        if token.revoked_at.is_some() {
            return Ok(Some(token));
        }
        token.revoked_at = Some(now);
        token.version = bump_version(&mut tx, 1).await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = $1, version = $2 WHERE id = $3")
            .bind(now.unix_micros())
            .bind(token.version)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    async fn tokens_since(&self, version: i64) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM api_tokens WHERE version > $1 ORDER BY version, id")
            .bind(version)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn set_incident_roles(
        &self,
        incident_id: &str,
        holders: &[(String, String)],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The version row is locked first: two replicas writing roles take turns, and the
        // second sees the first's rows.
        sqlx::query("SELECT version FROM directory_version FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let current: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT role, person, removed FROM incident_roles WHERE incident_id = $1 FOR UPDATE",
        )
        .bind(incident_id)
        .fetch_all(&mut *tx)
        .await?;
        let changes = role_changes(&current, holders);
        if changes.is_empty() {
            return Ok(false);
        }
        let last = bump_version(&mut tx, changes.len()).await?;
        let first = last - changes.len() as i64 + 1;
        for (version, (role, person, removed)) in (first..).zip(&changes) {
            sqlx::query(
                "INSERT INTO incident_roles (incident_id, role, person, removed, version)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (incident_id, role, person)
                 DO UPDATE SET removed = excluded.removed, version = excluded.version",
            )
            .bind(incident_id)
            .bind(role)
            .bind(person)
            .bind(removed)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn incident_roles_since(&self, version: i64) -> Result<Vec<IncidentRoleRecord>> {
        sqlx::query("SELECT * FROM incident_roles WHERE version > $1 ORDER BY version")
            .bind(version)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(IncidentRoleRecord {
                    incident_id: r.try_get("incident_id")?,
                    role: r.try_get("role")?,
                    person: r.try_get("person")?,
                    removed: r.try_get("removed")?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }

    async fn mark_used(&self, uses: &[(String, Micros)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // The rows are locked in id order (a `delete_user` takes them in that order too), so
        // replicas marking overlapping batches wait for each other instead of deadlocking.
        sqlx::query(
            "WITH used AS (
                SELECT id, max(at) AS at FROM unnest($1::text[], $2::int8[]) AS u(id, at)
                GROUP BY id
            ), locked AS MATERIALIZED (
                SELECT t.id FROM api_tokens t JOIN used USING (id) ORDER BY t.id FOR UPDATE OF t
            )
            UPDATE api_tokens t SET last_used_at = used.at FROM used
            WHERE t.id = used.id AND t.id IN (SELECT id FROM locked)
              AND (t.last_used_at IS NULL OR t.last_used_at < used.at)",
        )
        .bind(uses.iter().map(|(id, _)| id).bind_iter())
        .bind(uses.iter().map(|(_, at)| at.unix_micros()).bind_iter())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn append_audit(&self, entries: &[(AuditRecord, OutboxEvent)]) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let a = |f: fn(&AuditRecord) -> &String| entries.iter().map(move |(r, _)| f(r)).bind_iter();
        // One statement: the entries not stored yet go in, and the events of exactly those go
        // into the outbox (an entry sent again by a retried sync has its event there already).
        let done = sqlx::query(
            "WITH input AS (
                SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                    $12::text[], $13::text[], $14::text[], $15::bytea[])
                    WITH ORDINALITY AS i(id, at, actor, roles, method, target, outcome, reason,
                        source, request_id, trace_id, event_id, stream, subject, payload, n)
            ), appended AS (
                INSERT INTO audit_log (id, at, actor, roles, method, target, outcome, reason,
                    source, request_id, trace_id)
                SELECT id, at, actor, roles, method, target, outcome, reason, source,
                    request_id, trace_id FROM input ORDER BY n
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            )
            INSERT INTO outbox (id, stream, subject, payload, created_at)
            SELECT i.event_id, i.stream, i.subject, i.payload, $16 FROM input i
            WHERE i.id IN (SELECT id FROM appended) ORDER BY i.n",
        )
        .bind(a(|r| &r.id))
        .bind(entries.iter().map(|(r, _)| r.at.unix_micros()).bind_iter())
        .bind(a(|r| &r.actor))
        .bind(a(|r| &r.roles))
        .bind(a(|r| &r.method))
        .bind(a(|r| &r.target))
        .bind(a(|r| &r.outcome))
        .bind(a(|r| &r.reason))
        .bind(a(|r| &r.source))
        .bind(a(|r| &r.request_id))
        .bind(a(|r| &r.trace_id))
        .bind(entries.iter().map(|(_, e)| &e.id).bind_iter())
        .bind(entries.iter().map(|(_, e)| &e.stream).bind_iter())
        .bind(entries.iter().map(|(_, e)| &e.subject).bind_iter())
        .bind(entries.iter().map(|(_, e)| &e.payload).bind_iter())
        .bind(self.clock.now_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn audit(
        &self,
        filter: &AuditFilter,
        after: Option<&AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        sqlx::query(
            "SELECT * FROM audit_log WHERE ($1::text IS NULL OR actor = $1)
                AND ($2::bigint IS NULL OR at >= $2)
                AND ($3::text IS NULL OR method = $3
                     OR right(method, length($3) + 1) IN ('/' || $3, '.' || $3))
                AND ($4::bigint IS NULL OR (at, id) < ($4, $5))
             ORDER BY at DESC, id DESC LIMIT $6",
        )
        .bind(filter.actor.as_deref())
        .bind(filter.since.map(Micros::unix_micros))
        .bind(filter.action.as_deref())
        .bind(after.map(|a| a.at.unix_micros()))
        .bind(after.map(|a| a.id.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(audit_row)
        .collect()
    }

    async fn delete_audit_before(&self, before: Micros) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before.unix_micros())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn audit_row(r: &PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.try_get("id")?,
        at: Micros::from_unix_micros(r.try_get("at")?),
        actor: r.try_get("actor")?,
        roles: r.try_get("roles")?,
        method: r.try_get("method")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        reason: r.try_get("reason")?,
        source: r.try_get("source")?,
        request_id: r.try_get("request_id")?,
        trace_id: r.try_get("trace_id")?,
    })
}

/// Moves the directory's version on by `n` (the changes one transaction makes) and returns
/// the new version: the changes take the `n` versions up to it. The version row stays locked
/// until the transaction ends.
async fn bump_version(tx: &mut PgConnection, n: usize) -> Result<i64> {
    Ok(
        sqlx::query_scalar("UPDATE directory_version SET version = version + $1 RETURNING version")
            .bind(n as i64)
            .fetch_one(tx)
            .await?,
    )
}

/// Whether the locking one-row query `sql` finds `name`.
async fn locked(tx: &mut PgConnection, sql: &'static str, name: &str) -> Result<bool> {
    Ok(sqlx::query(sql)
        .bind(name)
        .fetch_optional(tx)
        .await?
        .is_some())
}

fn user_row(r: &PgRow) -> Result<UserRecord> {
    Ok(UserRecord {
        name: r.try_get("name")?,
        display_name: r.try_get("display_name")?,
        email: r.try_get("email")?,
        time_zone: r.try_get("time_zone")?,
        kind: parse_kind(r.try_get("kind")?)?,
        declared: r.try_get("declared")?,
        created_at: Micros::from_unix_micros(r.try_get("created_at")?),
        contact_methods: from_json(r.try_get("contact_methods")?)?,
        notification_rules: from_json(r.try_get("notification_rules")?)?,
    })
}

fn token_row(r: &PgRow) -> Result<TokenRecord> {
    let at = |column: &str| -> Result<Option<Micros>> {
        Ok(r.try_get::<Option<i64>, _>(column)?
            .map(Micros::from_unix_micros))
    };
    Ok(TokenRecord {
        id: r.try_get("id")?,
        hash: r.try_get("hash")?,
        subject: r.try_get("subject")?,
        grants: parse_grants(r.try_get("grants")?)?,
        description: r.try_get("description")?,
        created_by: r.try_get("created_by")?,
        created_at: Micros::from_unix_micros(r.try_get("created_at")?),
        expires_at: at("expires_at")?,
        revoked_at: at("revoked_at")?,
        last_used_at: at("last_used_at")?,
        version: r.try_get("version")?,
    })
}

/// Takes the next schedule version (inside the change's transaction).
async fn bump_schedules(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("UPDATE schedule_version SET version = version + 1 WHERE id = 1")
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl crate::ScheduleStore for PgNotificationStore {
    async fn schedules(&self) -> Result<(i64, Vec<crate::ScheduleRecord>)> {
        // One snapshot: the version and the rows agree.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM schedule_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let mut overrides: std::collections::HashMap<String, Vec<crate::OverrideRecord>> =
            Default::default();
        for r in sqlx::query(
            "SELECT id, schedule, spec, created_at, created_by FROM schedule_overrides
             ORDER BY created_at, id",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let o = crate::OverrideRecord {
                id: r.try_get("id")?,
                schedule: r.try_get("schedule")?,
                spec: from_json(r.try_get("spec")?)?,
                created_at: Micros::from_unix_micros(r.try_get("created_at")?),
                created_by: r.try_get("created_by")?,
            };
            overrides.entry(o.schedule.clone()).or_default().push(o);
        }
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT name, spec, declared, updated_at, updated_by FROM schedules ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let name: String = r.try_get("name")?;
            out.push(crate::ScheduleRecord {
                overrides: overrides.remove(&name).unwrap_or_default(),
                name,
                spec: from_json(r.try_get("spec")?)?,
                declared: r.try_get("declared")?,
                updated_at: Micros::from_unix_micros(r.try_get("updated_at")?),
                updated_by: r.try_get("updated_by")?,
            });
        }
        tx.commit().await?;
        Ok((version, out))
    }

    async fn schedules_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT version FROM schedule_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn put_schedule(&self, s: &crate::ScheduleRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO schedules (name, spec, declared, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET spec = $2, declared = $3, updated_at = $4,
                updated_by = $5",
        )
        .bind(&s.name)
        .bind(json_text(&s.spec)?)
        .bind(s.declared)
        .bind(s.updated_at.unix_micros())
        .bind(&s.updated_by)
        .execute(&mut *tx)
        .await?;
        bump_schedules(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if gone {
            bump_schedules(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn add_override(&self, o: &crate::OverrideRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query(
            "INSERT INTO schedule_overrides (id, schedule, spec, created_at, created_by)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM schedules WHERE name = $2)",
        )
        .bind(&o.id)
        .bind(&o.schedule)
        .bind(json_text(&o.spec)?)
        .bind(o.created_at.unix_micros())
        .bind(&o.created_by)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added == 0 {
            return Err(Error::NotFound(format!("schedule {:?}", o.schedule)));
        }
        bump_schedules(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_override(&self, schedule: &str, id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM schedule_overrides WHERE schedule = $1 AND id = $2")
            .bind(schedule)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if gone {
            bump_schedules(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn maintenance_windows(&self) -> Result<Vec<crate::MaintenanceRecord>> {
        let rows = sqlx::query(
            "SELECT name, spec, updated_at, updated_by FROM maintenance_windows ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::MaintenanceRecord {
                    name: r.try_get("name")?,
                    spec: from_json(&r.try_get::<String, _>("spec")?)?,
                    updated_at: Micros::from_unix_micros(r.try_get("updated_at")?),
                    updated_by: r.try_get("updated_by")?,
                })
            })
            .collect()
    }

    async fn put_maintenance_window(&self, w: &crate::MaintenanceRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO maintenance_windows (name, spec, updated_at, updated_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET spec = $2, updated_at = $3, updated_by = $4",
        )
        .bind(&w.name)
        .bind(json_text(&w.spec)?)
        .bind(w.updated_at.unix_micros())
        .bind(&w.updated_by)
        .execute(&mut *tx)
        .await?;
        bump_schedules(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_maintenance_window(&self, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM maintenance_windows WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if gone {
            bump_schedules(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }
}
