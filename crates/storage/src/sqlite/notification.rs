//! Notification's tables in SQLite: deliveries, and the directory (users, teams, API tokens).

use async_trait::async_trait;
use firebreak_domain::{DeliveryState, Micros};
use rusqlite::Row;

use super::conn::{self, Db};
use super::named;
use super::{Migration, OUTBOX, OUTBOX_READ_IN_PLACE, from_json, json_text};
use super::{impl_open, impl_outbox};
use crate::directory::{grants_text, kind_text, parse_grants, parse_kind, role_changes};
use crate::{
    AuditCursor, AuditFilter, AuditRecord, DeliveryCursor, DeliveryRecord, DirectoryStore, Error,
    IncidentRoleRecord, NotificationStore, OutboxEvent, ResponseRecord, Result, SubscriptionRecord,
    TeamRecord, TokenRecord, UserRecord,
};

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
    Migration {
        version: 6,
        sql: DIRECTORY,
    },
    Migration {
        version: 7,
        sql: AUDIT,
    },
    Migration {
        version: 8,
        sql: INCIDENT_ROLES,
    },
    Migration {
        version: 9,
        sql: CONTACTS,
    },
    Migration {
        version: 10,
        sql: SENT,
    },
    Migration {
        version: 11,
        sql: RESPONSES,
    },
    Migration {
        version: 12,
        sql: SCHEDULES,
    },
    Migration {
        version: 13,
        sql: ACKNOWLEDGED,
    },
    Migration {
        version: 14,
        sql: SUBSCRIPTIONS,
    },
    Migration {
        version: 15,
        sql: MAINTENANCE,
    },
    // The trace each delivery attempt continues.
    Migration {
        version: 16,
        sql: "ALTER TABLE deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
    },
];

/// Who is subscribed to which incident's status updates (`person:NAME`, `channel:NAME`).
/// Postgres' migration 11 is the same.
const SUBSCRIPTIONS: &str = "
CREATE TABLE incident_subscriptions (
    incident_id TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, subscriber)
) WITHOUT ROWID;
";

/// Maintenance windows made at run time (those of the configuration are not stored).
/// Postgres' migration 12 is the same.
const MAINTENANCE: &str = "
CREATE TABLE maintenance_windows (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
";

/// A page remembers when its incident was acknowledged and by whom (time to acknowledge
/// from the page). Postgres' migration 10 is the same.
const ACKNOWLEDGED: &str = "
ALTER TABLE deliveries ADD COLUMN acknowledged_at INTEGER;
ALTER TABLE deliveries ADD COLUMN acknowledged_by TEXT NOT NULL DEFAULT '';
";

/// Deliveries may be `sent` (handed to a provider that has not confirmed), remember the
/// provider's id and when they were sent, and who a page reaches (throttles count by it).
/// SQLite cannot change a CHECK in place, so the table is rebuilt. Postgres' migration 7 is
/// the same schema.
const SENT: &str = "
CREATE TABLE deliveries_new (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'delivered', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    escalation_step INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    provider_id TEXT,
    destination TEXT NOT NULL DEFAULT '',
    sent_at INTEGER,
    UNIQUE (event_id, channel)
);
INSERT INTO deliveries_new (id, event_id, channel, incident_id, kind, payload, status, attempts,
    last_error, created_at, next_attempt_at, delivered_at, escalation_step, lease_until, sent_at)
SELECT id, event_id, channel, incident_id, kind, payload, status, attempts, last_error,
    created_at, next_attempt_at, delivered_at, escalation_step, lease_until, delivered_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_incident ON deliveries (incident_id, channel);
CREATE INDEX deliveries_provider_id ON deliveries (provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX deliveries_destination ON deliveries (destination, sent_at) WHERE destination <> '';
";

/// Schedules kept at run time, their overrides, and the version every change takes.
/// Postgres' migration 9 is the same.
const SCHEDULES: &str = "
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    declared INTEGER NOT NULL CHECK (declared IN (0, 1)),
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE schedule_overrides (
    id TEXT PRIMARY KEY,
    schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX schedule_overrides_schedule ON schedule_overrides (schedule, created_at);
CREATE TABLE schedule_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO schedule_version (id, version) VALUES (1, 0);
";

/// People's answers to pages, and the codes SMS replies name incidents by. Postgres'
/// migration 8 is the same.
const RESPONSES: &str = "
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    via TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX responses_incident ON responses (incident_id);
CREATE TABLE reply_codes (
    address TEXT NOT NULL,
    code INTEGER NOT NULL,
    incident_id TEXT NOT NULL,
    assigned_at INTEGER NOT NULL,
    PRIMARY KEY (address, code)
);
CREATE UNIQUE INDEX reply_codes_incident ON reply_codes (address, incident_id);
";

/// How each person is reached (JSON lists). Postgres' migration 6 is the same.
const CONTACTS: &str = "
ALTER TABLE users ADD COLUMN contact_methods TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN notification_rules TEXT NOT NULL DEFAULT '[]';
";

/// Incident roles as the directory copies them (see `IncidentRoleRecord`). Postgres'
/// migration 5 is the same schema.
const INCIDENT_ROLES: &str = "
CREATE TABLE incident_roles (
    incident_id TEXT NOT NULL,
    role TEXT NOT NULL,
    person TEXT NOT NULL,
    removed INTEGER NOT NULL CHECK (removed IN (0, 1)),
    version INTEGER NOT NULL,
    PRIMARY KEY (incident_id, role, person)
);
CREATE INDEX incident_roles_version ON incident_roles (version);
";

/// The audit log: append-only (no statement updates it), listed newest first, by actor, and
/// deleted by age. Postgres' migration 4 is the same schema.
const AUDIT: &str = "
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
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
/// every change to a token. Postgres' migration 3 is the same schema.
const DIRECTORY: &str = "
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service_account')),
    declared INTEGER NOT NULL CHECK (declared IN (0, 1)),
    created_at INTEGER NOT NULL
);
CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    declared INTEGER NOT NULL CHECK (declared IN (0, 1)),
    created_at INTEGER NOT NULL
);
-- Deleting a team or a user deletes its memberships (the connections enable foreign keys).
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
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER,
    version INTEGER NOT NULL
);
CREATE INDEX api_tokens_version ON api_tokens (version);
CREATE INDEX api_tokens_subject ON api_tokens (subject) WHERE revoked_at IS NULL;
CREATE TABLE directory_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);
";

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
                        last_error, created_at, next_attempt_at, delivered_at, escalation_step,
                        provider_id, destination, sent_at, traceparent)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, channel) DO NOTHING",
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
                        d.provider_id,
                        d.destination,
                        d.sent_at.map(Micros::unix_micros),
                        d.traceparent,
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
                        provider_id = ?, sent_at = ?, lease_until = NULL
                     WHERE id = ?",
                )?
                .execute(rusqlite::params![
                    d.status.as_str(),
                    d.attempts,
                    d.last_error,
                    d.next_attempt_at.unix_micros(),
                    d.delivered_at.map(Micros::unix_micros),
                    d.provider_id,
                    d.sent_at.map(Micros::unix_micros),
                    d.id,
                ])?;
                conn::enqueue(tx, event.as_slice(), clock.now_micros())
            })
            .await
    }

    async fn transition_delivery(
        &self,
        d: &DeliveryRecord,
        from: DeliveryState,
        event: Option<&OutboxEvent>,
    ) -> Result<bool> {
        let (d, event) = (d.clone(), event.cloned());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let moved =
                    tx.prepare_cached(
                        "UPDATE deliveries SET status = ?, last_error = ?, delivered_at = ?
                         WHERE id = ? AND status = ?",
                    )?
                    .execute(rusqlite::params![
                        d.status.as_str(),
                        d.last_error,
                        d.delivered_at.map(Micros::unix_micros),
                        d.id,
                        from.as_str(),
                    ])? > 0;
                if moved {
                    conn::enqueue(tx, event.as_slice(), clock.now_micros())?;
                }
                Ok(moved)
            })
            .await
    }

    async fn delivery_by_provider_id(
        &self,
        provider_id: &str,
        status: DeliveryState,
    ) -> Result<Option<DeliveryRecord>> {
        let provider_id = provider_id.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT * FROM deliveries WHERE provider_id = ? AND status = ?
                     ORDER BY sent_at, id LIMIT 1",
                )?;
                let mut rows = stmt.query((provider_id, status.as_str()))?;
                Ok(match rows.next()? {
                    Some(r) => Some(delivery_row(r)?),
                    None => None,
                })
            })
            .await
    }

    async fn first_provider_id(
        &self,
        incident_id: &str,
        channel: &str,
        kind_prefix: &str,
    ) -> Result<Option<String>> {
        let (incident_id, channel) = (incident_id.to_owned(), channel.to_owned());
        let kind_prefix = kind_prefix.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT provider_id FROM deliveries WHERE incident_id = ?1 AND channel = ?2
                        AND substr(kind, 1, length(?3)) = ?3 AND provider_id IS NOT NULL
                        AND status IN ('sent', 'delivered')
                     ORDER BY sent_at, id LIMIT 1",
                )?;
                let mut rows = stmt.query((incident_id, channel, kind_prefix))?;
                Ok(match rows.next()? {
                    Some(r) => r.get(0)?,
                    None => None,
                })
            })
            .await
    }

    async fn sent_to(&self, destination: &str, since: Micros, limit: u32) -> Result<Vec<Micros>> {
        let destination = destination.to_owned();
        let mut sent: Vec<Micros> = self
            .db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT sent_at FROM deliveries WHERE destination = ? AND sent_at >= ?
                     ORDER BY sent_at DESC LIMIT ?",
                )?
                .query_map((destination, since.unix_micros(), i64::from(limit)), |r| {
                    r.get::<_, i64>(0).map(Micros::from_unix_micros)
                })?
                .collect::<rusqlite::Result<_>>()?)
            })
            .await?;
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
        let incident_id = incident_id.map(str::to_owned);
        let status = status.map(DeliveryState::as_str);
        let (after_at, after_id) = after
            .map(|a| (a.created_at.unix_micros(), a.id.clone()))
            .unzip();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT * FROM deliveries WHERE (?1 IS NULL OR incident_id = ?1)
                        AND (?2 IS NULL OR (created_at, id) < (?2, ?3))
                        AND (?5 IS NULL OR status = ?5)
                     ORDER BY created_at DESC, id DESC LIMIT ?4",
                )?;
                let mut rows =
                    stmt.query((incident_id, after_at, after_id, i64::from(limit), status))?;
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
                         WHERE incident_id = ? AND status = 'pending'
                            AND (escalation_step >= 2 OR kind IN ('escalation.step', 'escalation.page'))",
                    )?
                    .execute([&incident_id])? as u32)
            })
            .await
    }

    async fn mark_acknowledged(&self, incident_id: &str, at: Micros, by: &str) -> Result<u32> {
        let (incident_id, by) = (incident_id.to_owned(), by.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE deliveries SET acknowledged_at = ?, acknowledged_by = ?
                         WHERE incident_id = ? AND kind = 'escalation.page'
                            AND acknowledged_at IS NULL",
                    )?
                    .execute(rusqlite::params![at.unix_micros(), by, incident_id])?
                    as u32)
            })
            .await
    }

    async fn record_response(&self, r: &ResponseRecord, event: &OutboxEvent) -> Result<bool> {
        let (r, event) = (r.clone(), event.clone());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let new =
                    tx.prepare_cached(
                        "INSERT INTO responses (id, incident_id, user_name, action, via, at)
                         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    )?
                    .execute(rusqlite::params![
                        r.id,
                        r.incident_id,
                        r.user,
                        r.action,
                        r.via,
                        r.at.unix_micros()
                    ])? == 1;
                if new {
                    conn::enqueue(tx, std::slice::from_ref(&event), clock.now_micros())?;
                }
                Ok(new)
            })
            .await
    }

    async fn reply_code(&self, address: &str, incident_id: &str, now: Micros) -> Result<u32> {
        let (address, incident_id) = (address.to_owned(), incident_id.to_owned());
        self.db
            .write(move |tx| {
                let taken = tx
                    .prepare_cached(
                        "SELECT code, incident_id, assigned_at FROM reply_codes WHERE address = ?",
                    )?
                    .query_map([&address], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<(u32, String, i64)>>>()?;
                let (code, kept) = crate::choose_reply_code(&taken, &incident_id);
                if !kept {
                    tx.prepare_cached(
                        "INSERT INTO reply_codes (address, code, incident_id, assigned_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (address, code) DO UPDATE SET incident_id = ?3, assigned_at = ?4",
                    )?
                    .execute(rusqlite::params![address, code, incident_id, now.unix_micros()])?;
                }
                Ok(code)
            })
            .await
    }

    async fn reply_incident(&self, address: &str, code: u32) -> Result<Option<String>> {
        let address = address.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT incident_id FROM reply_codes WHERE address = ? AND code = ?",
                )?;
                let mut rows = stmt.query(rusqlite::params![address, code])?;
                Ok(match rows.next()? {
                    Some(r) => Some(r.get(0)?),
                    None => None,
                })
            })
            .await
    }

    async fn subscribe(&self, s: &SubscriptionRecord) -> Result<bool> {
        let s = s.clone();
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "INSERT INTO incident_subscriptions
                            (incident_id, subscriber, created_at, created_by)
                         VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    )?
                    .execute(rusqlite::params![
                        s.incident_id,
                        s.subscriber,
                        s.created_at.unix_micros(),
                        s.created_by
                    ])?
                    == 1)
            })
            .await
    }

    async fn unsubscribe(&self, incident_id: &str, subscriber: &str) -> Result<bool> {
        let (incident_id, subscriber) = (incident_id.to_owned(), subscriber.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "DELETE FROM incident_subscriptions
                         WHERE incident_id = ? AND subscriber = ?",
                    )?
                    .execute([&incident_id, &subscriber])?
                    == 1)
            })
            .await
    }

    async fn subscriptions_page(
        &self,
        incident_id: &str,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>> {
        let incident_id = incident_id.to_owned();
        let (at, subscriber) = after
            .map(|(at, s)| (at.unix_micros(), s.to_owned()))
            .unzip();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT incident_id, subscriber, created_at, created_by
                     FROM incident_subscriptions WHERE incident_id = ?1
                        AND (?2 IS NULL OR (created_at, subscriber) > (?2, ?3))
                     ORDER BY created_at, subscriber LIMIT ?4",
                )?;
                let rows = stmt.query_map(
                    (
                        &incident_id,
                        at,
                        subscriber.unwrap_or_default(),
                        i64::from(limit),
                    ),
                    |r| {
                        Ok(SubscriptionRecord {
                            incident_id: r.get(0)?,
                            subscriber: r.get(1)?,
                            created_at: Micros::from_unix_micros(r.get(2)?),
                            created_by: r.get(3)?,
                        })
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn subscriptions(&self, incident_id: &str) -> Result<Vec<SubscriptionRecord>> {
        let incident_id = incident_id.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT incident_id, subscriber, created_at, created_by
                     FROM incident_subscriptions WHERE incident_id = ?
                     ORDER BY created_at, subscriber",
                )?;
                let rows = stmt.query_map([&incident_id], |r| {
                    Ok(SubscriptionRecord {
                        incident_id: r.get(0)?,
                        subscriber: r.get(1)?,
                        created_at: Micros::from_unix_micros(r.get(2)?),
                        created_by: r.get(3)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        provider_id: r.get("provider_id")?,
        destination: r.get("destination")?,
        sent_at: r
            .get::<_, Option<i64>>("sent_at")?
            .map(Micros::from_unix_micros),
        acknowledged_at: r
            .get::<_, Option<i64>>("acknowledged_at")?
            .map(Micros::from_unix_micros),
        acknowledged_by: r.get("acknowledged_by")?,
        traceparent: r.get("traceparent")?,
    })
}

/// One writer at a time: every change to a token takes the next version of the counter in its
/// transaction, so versions follow commit order.
#[async_trait]
impl DirectoryStore for SqliteNotificationStore {
    async fn insert_user(&self, user: &UserRecord) -> Result<()> {
        let user = user.clone();
        let kind = kind_text(user.kind)?;
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO users (name, display_name, email, time_zone, kind, declared, created_at,
                        contact_methods, notification_rules)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(rusqlite::params![
                    user.name,
                    user.display_name,
                    user.email,
                    user.time_zone,
                    kind,
                    user.declared,
                    user.created_at.unix_micros(),
                    json_text(&user.contact_methods)?,
                    json_text(&user.notification_rules)?,
                ])
                .map_err(|e| conn::conflict(e, &format!("user {:?} exists", user.name)))?;
                Ok(())
            })
            .await
    }

    async fn users_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>> {
        let after = after.map(str::to_owned);
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT * FROM users WHERE (?1 IS NULL OR name > ?1) ORDER BY name LIMIT ?2",
                )?
                .query_and_then((after, i64::from(limit)), user_row)?
                .collect()
            })
            .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        self.db
            .read(|c| {
                c.prepare_cached("SELECT * FROM users ORDER BY name")?
                    .query_and_then([], user_row)?
                    .collect()
            })
            .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let name = name.to_owned();
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT * FROM users WHERE name = ?")?
                    .query_and_then([&name], user_row)?
                    .next()
                    .transpose()
            })
            .await
    }

    async fn update_user(&self, user: &UserRecord) -> Result<bool> {
        let user = user.clone();
        let methods = json_text(&user.contact_methods)?;
        let rules = json_text(&user.notification_rules)?;
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE users SET display_name = ?, email = ?, time_zone = ?, declared = ?,
                            contact_methods = ?, notification_rules = ?
                         WHERE name = ?",
                    )?
                    .execute(rusqlite::params![
                        user.display_name,
                        user.email,
                        user.time_zone,
                        user.declared,
                        methods,
                        rules,
                        user.name,
                    ])?
                    > 0)
            })
            .await
    }

    async fn update_team(&self, team: &TeamRecord) -> Result<bool> {
        let team = team.clone();
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE teams SET display_name = ?, declared = ? WHERE name = ?",
                    )?
                    .execute(rusqlite::params![
                        team.display_name,
                        team.declared,
                        team.name
                    ])?
                    > 0)
            })
            .await
    }

    async fn delete_user(&self, name: &str, now: Micros) -> Result<bool> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                // Memberships go with the user (ON DELETE CASCADE).
                if tx
                    .prepare_cached("DELETE FROM users WHERE name = ?")?
                    .execute([&name])?
                    == 0
                {
                    return Ok(false);
                }
                let ids: Vec<String> = tx
                    .prepare_cached(
                        "SELECT id FROM api_tokens WHERE subject = ? AND revoked_at IS NULL ORDER BY id",
                    )?
                    .query_map([&name], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                if ids.is_empty() {
                    return Ok(true);
                }
                // Each revocation is a change of its own, with a version of its own.
                let first = bump_version(tx, ids.len())? - ids.len() as i64 + 1;
                let mut revoke = tx.prepare_cached(
                    "UPDATE api_tokens SET revoked_at = ?, version = ? WHERE id = ?",
                )?;
                for (version, id) in (first..).zip(&ids) {
                    revoke.execute(rusqlite::params![now.unix_micros(), version, id])?;
                }
                Ok(true)
            })
            .await
    }

    async fn insert_team(&self, team: &TeamRecord) -> Result<()> {
        let team = team.clone();
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO teams (name, display_name, declared, created_at) VALUES (?, ?, ?, ?)",
                )?
                .execute(rusqlite::params![
                    team.name,
                    team.display_name,
                    team.declared,
                    team.created_at.unix_micros(),
                ])
                .map_err(|e| conn::conflict(e, &format!("team {:?} exists", team.name)))?;
                Ok(())
            })
            .await
    }

    async fn teams(&self) -> Result<Vec<TeamRecord>> {
        self.teams_page(None, u32::MAX).await
    }

    async fn teams_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<TeamRecord>> {
        let after = after.map(str::to_owned);
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT t.name, t.display_name, t.declared, t.created_at, m.user_name
                     FROM (SELECT * FROM teams WHERE ?1 IS NULL OR name > ?1
                           ORDER BY name LIMIT ?2) t
                     LEFT JOIN team_members m ON m.team = t.name
                     ORDER BY t.name, m.user_name",
                )?;
                let mut rows = stmt.query((after, i64::from(limit)))?;
                let mut teams: Vec<TeamRecord> = Vec::new();
                while let Some(r) = rows.next()? {
                    let name: String = r.get("name")?;
                    if teams.last().is_none_or(|t| t.name != name) {
                        teams.push(TeamRecord {
                            name,
                            display_name: r.get("display_name")?,
                            declared: r.get("declared")?,
                            created_at: Micros::from_unix_micros(r.get("created_at")?),
                            members: Vec::new(),
                        });
                    }
                    if let (Some(team), Some(member)) =
                        (teams.last_mut(), r.get::<_, Option<String>>("user_name")?)
                    {
                        team.members.push(member);
                    }
                }
                Ok(teams)
            })
            .await
    }

    async fn delete_team(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                // Memberships go with the team (ON DELETE CASCADE).
                Ok(tx
                    .prepare_cached("DELETE FROM teams WHERE name = ?")?
                    .execute([&name])?
                    > 0)
            })
            .await
    }

    async fn set_member(&self, team: &str, user: &str, member: bool) -> Result<bool> {
        let (team, user) = (team.to_owned(), user.to_owned());
        self.db
            .write(move |tx| {
                if !exists(tx, "SELECT EXISTS (SELECT 1 FROM teams WHERE name = ?)", &team)? {
                    return Err(Error::NotFound(format!("team {team}")));
                }
                if !exists(tx, "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?)", &user)? {
                    return Err(Error::NotFound(format!("user {user}")));
                }
                let sql = if member {
                    "INSERT INTO team_members (team, user_name) VALUES (?, ?) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM team_members WHERE team = ? AND user_name = ?"
                };
                Ok(tx.prepare_cached(sql)?.execute([&team, &user])? > 0)
            })
            .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<TokenRecord> {
        let mut token = token.clone();
        let grants = grants_text(&token.grants);
        self.db
            .write(move |tx| {
                let subject = &token.subject;
                if !exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?)",
                    subject,
                )? {
                    return Err(Error::NotFound(format!("user {subject}")));
                }
                token.version = bump_version(tx, 1)?;
                tx.prepare_cached(
                    "INSERT INTO api_tokens (id, hash, subject, grants, description, created_by,
                        created_at, expires_at, revoked_at, last_used_at, version)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(rusqlite::params![
                    token.id,
                    token.hash,
                    token.subject,
                    grants,
                    token.description,
                    token.created_by,
                    token.created_at.unix_micros(),
                    token.expires_at.map(Micros::unix_micros),
                    token.revoked_at.map(Micros::unix_micros),
                    token.last_used_at.map(Micros::unix_micros),
                    token.version,
                ])
                .map_err(|e| {
                    conn::conflict(
                        e,
                        &format!("a token with id {:?} or its hash exists", token.id),
                    )
                })?;
                Ok(token)
            })
            .await
    }

    async fn tokens_page(
        &self,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>> {
        let (at, id) = after
            .map(|(at, id)| (at.unix_micros(), id.to_owned()))
            .unzip();
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT * FROM api_tokens WHERE ?1 IS NULL OR (created_at, id) < (?1, ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3",
                )?
                .query_and_then((at, id.unwrap_or_default(), i64::from(limit)), token_row)?
                .collect()
            })
            .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.db
            .read(|c| {
                c.prepare_cached("SELECT * FROM api_tokens ORDER BY created_at DESC, id DESC")?
                    .query_and_then([], token_row)?
                    .collect()
            })
            .await
    }

    async fn revoke_token(&self, id: &str, now: Micros) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.db
            .write(move |tx| {
                let Some(mut token) = tx
                    .prepare_cached("SELECT * FROM api_tokens WHERE id = ?")?
                    .query_and_then([&id], token_row)?
                    .next()
                    .transpose()?
                else {
                    return Ok(None);
                };
                if token.revoked_at.is_some() {
                    return Ok(Some(token));
                }
                token.revoked_at = Some(now);
                token.version = bump_version(tx, 1)?;
                tx.prepare_cached(
                    "UPDATE api_tokens SET revoked_at = ?, version = ? WHERE id = ?",
                )?
                .execute(rusqlite::params![
                    now.unix_micros(),
                    token.version,
                    id
                ])?;
                Ok(Some(token))
            })
            .await
    }

    async fn tokens_since(&self, version: i64) -> Result<Vec<TokenRecord>> {
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT * FROM api_tokens WHERE version > ? ORDER BY version, id")?
                    .query_and_then([version], token_row)?
                    .collect()
            })
            .await
    }

    async fn set_incident_roles(
        &self,
        incident_id: &str,
        holders: &[(String, String)],
    ) -> Result<bool> {
        let (incident_id, holders) = (incident_id.to_owned(), holders.to_vec());
        self.db
            .write(move |tx| {
                let current: Vec<(String, String, bool)> = tx
                    .prepare_cached(
                        "SELECT role, person, removed FROM incident_roles WHERE incident_id = ?",
                    )?
                    .query_map([&incident_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let changes = role_changes(&current, &holders);
                if changes.is_empty() {
                    return Ok(false);
                }
                let last = bump_version(tx, changes.len())?;
                let first = last - changes.len() as i64 + 1;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO incident_roles (incident_id, role, person, removed, version)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (incident_id, role, person)
                     DO UPDATE SET removed = excluded.removed, version = excluded.version",
                )?;
                for (version, (role, person, removed)) in (first..).zip(&changes) {
                    upsert.execute(rusqlite::params![
                        incident_id,
                        role,
                        person,
                        removed,
                        version
                    ])?;
                }
                Ok(true)
            })
            .await
    }

    async fn incident_roles_since(&self, version: i64) -> Result<Vec<IncidentRoleRecord>> {
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT * FROM incident_roles WHERE version > ? ORDER BY version")?
                    .query_and_then([version], |r| {
                        Ok(IncidentRoleRecord {
                            incident_id: r.get("incident_id")?,
                            role: r.get("role")?,
                            person: r.get("person")?,
                            removed: r.get("removed")?,
                            version: r.get("version")?,
                        })
                    })?
                    .collect()
            })
            .await
    }

    async fn mark_used(&self, uses: &[(String, Micros)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses = uses.to_vec();
        self.db
            .write(move |tx| {
                let mut mark = tx.prepare_cached(
                    "UPDATE api_tokens SET last_used_at = ?1
                     WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                )?;
                for (id, at) in &uses {
                    mark.execute(rusqlite::params![at.unix_micros(), id])?;
                }
                Ok(())
            })
            .await
    }

    async fn append_audit(&self, entries: &[(AuditRecord, OutboxEvent)]) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let entries = entries.to_vec();
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO audit_log (id, at, actor, roles, method, target, outcome, reason,
                        source, request_id, trace_id)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                )?;
                let mut appended = Vec::new();
                for (a, event) in &entries {
                    let n = insert.execute(rusqlite::params![
                        a.id,
                        a.at.unix_micros(),
                        a.actor,
                        a.roles,
                        a.method,
                        a.target,
                        a.outcome,
                        a.reason,
                        a.source,
                        a.request_id,
                        a.trace_id,
                    ])?;
                    // An entry sent again (a sync retried) is in the log, and its event in
                    // the outbox, already.
                    if n > 0 {
                        appended.push(event.clone());
                    }
                }
                conn::enqueue(tx, &appended, clock.now_micros())?;
                Ok(appended.len() as u64)
            })
            .await
    }

    async fn audit(
        &self,
        filter: &AuditFilter,
        after: Option<&AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let f = filter.clone();
        let (after_at, after_id) = after.map(|a| (a.at.unix_micros(), a.id.clone())).unzip();
        self.db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT * FROM audit_log WHERE (?1 IS NULL OR actor = ?1)
                        AND (?2 IS NULL OR at >= ?2)
                        AND (?3 IS NULL OR method = ?3
                             OR substr(method, -length(?3) - 1) IN ('/' || ?3, '.' || ?3))
                        AND (?4 IS NULL OR (at, id) < (?4, ?5))
                     ORDER BY at DESC, id DESC LIMIT ?6",
                )?
                .query_and_then(
                    rusqlite::params![
                        f.actor,
                        f.since.map(Micros::unix_micros),
                        f.action,
                        after_at,
                        after_id,
                        i64::from(limit),
                    ],
                    audit_row,
                )?
                .collect()
            })
            .await
    }

    async fn delete_audit_before(&self, before: Micros) -> Result<u64> {
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached("DELETE FROM audit_log WHERE at < ?")?
                    .execute([before.unix_micros()])? as u64)
            })
            .await
    }
}

fn audit_row(r: &Row<'_>) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: r.get("id")?,
        at: Micros::from_unix_micros(r.get("at")?),
        actor: r.get("actor")?,
        roles: r.get("roles")?,
        method: r.get("method")?,
        target: r.get("target")?,
        outcome: r.get("outcome")?,
        reason: r.get("reason")?,
        source: r.get("source")?,
        request_id: r.get("request_id")?,
        trace_id: r.get("trace_id")?,
    })
}

/// Moves the directory's version on by `n` (the changes one transaction makes) and returns
/// the new version: the changes take the `n` versions up to it.
fn bump_version(tx: &rusqlite::Connection, n: usize) -> Result<i64> {
    Ok(tx
        .prepare_cached("UPDATE directory_version SET version = version + ? RETURNING version")?
        .query_row([n as i64], |r| r.get(0))?)
}

/// Whether the one-row `SELECT EXISTS (...)` query `sql` answers true for `name`.
fn exists(tx: &rusqlite::Connection, sql: &str, name: &str) -> Result<bool> {
    Ok(tx.prepare_cached(sql)?.query_row([name], |r| r.get(0))?)
}

fn user_row(r: &Row<'_>) -> Result<UserRecord> {
    Ok(UserRecord {
        name: r.get("name")?,
        display_name: r.get("display_name")?,
        email: r.get("email")?,
        time_zone: r.get("time_zone")?,
        kind: parse_kind(&r.get::<_, String>("kind")?)?,
        declared: r.get("declared")?,
        created_at: Micros::from_unix_micros(r.get("created_at")?),
        contact_methods: from_json(&r.get::<_, String>("contact_methods")?)?,
        notification_rules: from_json(&r.get::<_, String>("notification_rules")?)?,
    })
}

fn token_row(r: &Row<'_>) -> Result<TokenRecord> {
    let at = |column: &str| -> rusqlite::Result<Option<Micros>> {
        Ok(r.get::<_, Option<i64>>(column)?
            .map(Micros::from_unix_micros))
    };
    Ok(TokenRecord {
        id: r.get("id")?,
        hash: r.get("hash")?,
        subject: r.get("subject")?,
        grants: parse_grants(&r.get::<_, String>("grants")?)?,
        description: r.get("description")?,
        created_by: r.get("created_by")?,
        created_at: Micros::from_unix_micros(r.get("created_at")?),
        expires_at: at("expires_at")?,
        revoked_at: at("revoked_at")?,
        last_used_at: at("last_used_at")?,
        version: r.get("version")?,
    })
}

/// Takes the next schedule version (inside the change's transaction).
fn bump_schedules(tx: &rusqlite::Connection) -> Result<()> {
    tx.prepare_cached("UPDATE schedule_version SET version = version + 1 WHERE id = 1")?
        .execute([])?;
    Ok(())
}

#[async_trait]
impl crate::ScheduleStore for SqliteNotificationStore {
    async fn schedules(&self) -> Result<(i64, Vec<crate::ScheduleRecord>)> {
        self.db
            .read(|c| {
                let version: i64 = c
                    .prepare_cached("SELECT version FROM schedule_version WHERE id = 1")?
                    .query_row([], |r| r.get(0))?;
                let mut overrides: std::collections::HashMap<String, Vec<crate::OverrideRecord>> =
                    Default::default();
                let mut stmt = c.prepare_cached(
                    "SELECT id, schedule, spec, created_at, created_by FROM schedule_overrides
                     ORDER BY created_at, id",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let o = crate::OverrideRecord {
                        id: r.get(0)?,
                        schedule: r.get(1)?,
                        spec: from_json(&r.get::<_, String>(2)?)?,
                        created_at: Micros::from_unix_micros(r.get(3)?),
                        created_by: r.get(4)?,
                    };
                    overrides.entry(o.schedule.clone()).or_default().push(o);
                }
                let mut stmt = c.prepare_cached(
                    "SELECT name, spec, declared, updated_at, updated_by FROM schedules ORDER BY name",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let name: String = r.get(0)?;
                    out.push(crate::ScheduleRecord {
                        overrides: overrides.remove(&name).unwrap_or_default(),
                        name,
                        spec: from_json(&r.get::<_, String>(1)?)?,
                        declared: r.get(2)?,
                        updated_at: Micros::from_unix_micros(r.get(3)?),
                        updated_by: r.get(4)?,
                    });
                }
                Ok((version, out))
            })
            .await
    }

    async fn schedules_version(&self) -> Result<i64> {
        self.db
            .read(|c| {
                Ok(
                    c.prepare_cached("SELECT version FROM schedule_version WHERE id = 1")?
                        .query_row([], |r| r.get(0))?,
                )
            })
            .await
    }

    async fn put_schedule(&self, s: &crate::ScheduleRecord) -> Result<()> {
        let s = s.clone();
        let spec = json_text(&s.spec)?;
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO schedules (name, spec, declared, updated_at, updated_by)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET spec = ?2, declared = ?3, updated_at = ?4,
                        updated_by = ?5",
                )?
                .execute(rusqlite::params![
                    s.name,
                    spec,
                    s.declared,
                    s.updated_at.unix_micros(),
                    s.updated_by
                ])?;
                bump_schedules(tx)
            })
            .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                tx.prepare_cached("DELETE FROM schedule_overrides WHERE schedule = ?")?
                    .execute([&name])?;
                let gone = tx
                    .prepare_cached("DELETE FROM schedules WHERE name = ?")?
                    .execute([&name])?
                    > 0;
                if gone {
                    bump_schedules(tx)?;
                }
                Ok(gone)
            })
            .await
    }

    async fn add_override(&self, o: &crate::OverrideRecord) -> Result<()> {
        let o = o.clone();
        let spec = json_text(&o.spec)?;
        self.db
            .write(move |tx| {
                let exists = tx
                    .prepare_cached("SELECT 1 FROM schedules WHERE name = ?")?
                    .exists([&o.schedule])?;
                if !exists {
                    return Err(Error::NotFound(format!("schedule {:?}", o.schedule)));
                }
                tx.prepare_cached(
                    "INSERT INTO schedule_overrides (id, schedule, spec, created_at, created_by)
                     VALUES (?, ?, ?, ?, ?)",
                )?
                .execute(rusqlite::params![
                    o.id,
                    o.schedule,
                    spec,
                    o.created_at.unix_micros(),
                    o.created_by
                ])?;
                bump_schedules(tx)
            })
            .await
    }

    async fn remove_override(&self, schedule: &str, id: &str) -> Result<bool> {
        let (schedule, id) = (schedule.to_owned(), id.to_owned());
        self.db
            .write(move |tx| {
                let gone = tx
                    .prepare_cached("DELETE FROM schedule_overrides WHERE schedule = ? AND id = ?")?
                    .execute([&schedule, &id])?
                    > 0;
                if gone {
                    bump_schedules(tx)?;
                }
                Ok(gone)
            })
            .await
    }

    async fn maintenance_windows(&self) -> Result<Vec<crate::MaintenanceRecord>> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT name, spec, updated_at, updated_by FROM maintenance_windows ORDER BY name",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(crate::MaintenanceRecord {
                        name: r.get(0)?,
                        spec: from_json(&r.get::<_, String>(1)?)?,
                        updated_at: Micros::from_unix_micros(r.get(2)?),
                        updated_by: r.get(3)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn put_maintenance_window(&self, w: &crate::MaintenanceRecord) -> Result<()> {
        let w = w.clone();
        let spec = json_text(&w.spec)?;
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO maintenance_windows (name, spec, updated_at, updated_by)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET spec = ?2, updated_at = ?3, updated_by = ?4",
                )?
                .execute(rusqlite::params![
                    w.name,
                    spec,
                    w.updated_at.unix_micros(),
                    w.updated_by
                ])?;
                bump_schedules(tx)
            })
            .await
    }

    async fn delete_maintenance_window(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                let gone = tx
                    .prepare_cached("DELETE FROM maintenance_windows WHERE name = ?")?
                    .execute([&name])?
                    > 0;
                if gone {
                    bump_schedules(tx)?;
                }
                Ok(gone)
            })
            .await
    }
}
