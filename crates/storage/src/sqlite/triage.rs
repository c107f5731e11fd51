//! Triage's tables in SQLite: incidents, the alerts attached to them, the timeline.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};

use super::{Migration, OUTBOX, conflict, from_json, impl_outbox, json_text, now_micros};
use crate::{
    IncidentRecord, NewTimelineEntry, OutboxEvent, Result, TimelineRecord, TriageStore, TriageTx,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: OUTBOX,
    },
    Migration {
        version: 2,
        sql: "
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 5),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    urgency TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved', 'closed')),
    dedup_key TEXT NOT NULL,
    alert_count INTEGER NOT NULL,
    labels TEXT NOT NULL,
    source TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    acknowledged_at INTEGER,
    resolved_at INTEGER,
    closed_at INTEGER,
    resolution_summary TEXT NOT NULL,
    root_cause TEXT NOT NULL,
    review TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
-- One active incident per dedup key, enforced by the database.
CREATE UNIQUE INDEX incidents_one_active_per_key ON incidents (dedup_key)
    WHERE state IN ('open', 'acknowledged');
CREATE INDEX incidents_state ON incidents (state, opened_at);
CREATE TABLE incident_alerts (
    alert_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    opened INTEGER NOT NULL,
    attached_at INTEGER NOT NULL
);
CREATE TABLE timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX timeline_incident ON timeline (incident_id, seq);
-- The timeline is append-only.
CREATE TRIGGER timeline_no_update BEFORE UPDATE ON timeline
    BEGIN SELECT RAISE(ABORT, 'the timeline is append-only'); END;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
    BEGIN SELECT RAISE(ABORT, 'the timeline is append-only'); END;
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    processed_at INTEGER NOT NULL
);
",
    },
    Migration {
        version: 3,
        sql: "ALTER TABLE incident_alerts ADD COLUMN resolved INTEGER NOT NULL DEFAULT 0;",
    },
];

/// Triage's store on SQLite.
#[derive(Clone)]
pub struct SqliteTriageStore {
    pool: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteTriageStore {
    /// Opens `path`, creating and migrating it as needed.
    pub async fn open(path: &Path, durable_fsync: bool) -> Result<Self> {
        let (pool, write) = super::open(path, MIGRATIONS, durable_fsync).await?;
        Ok(Self { pool, write })
    }
}

impl_outbox!(SqliteTriageStore);

#[async_trait]
impl TriageStore for SqliteTriageStore {
    async fn begin(&self) -> Result<Box<dyn TriageTx>> {
        Ok(Box::new(SqliteTriageTx {
            tx: self.write.begin_with("BEGIN IMMEDIATE").await?,
            attached: HashMap::new(),
            active: HashMap::new(),
            dirty: HashMap::new(),
            links: Vec::new(),
            next_seq: None,
            entries: Vec::new(),
            events: Vec::new(),
        }))
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>> {
        sqlx::query("SELECT * FROM incidents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| incident_row(&r))
            .transpose()
    }

    async fn incidents(&self, state: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>> {
        let rows = match state {
            Some(state) => sqlx::query(
                "SELECT * FROM incidents WHERE state = ? ORDER BY opened_at DESC, id DESC LIMIT ?",
            )
            .bind(state)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?,
            None => {
                sqlx::query("SELECT * FROM incidents ORDER BY opened_at DESC, id DESC LIMIT ?")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(incident_row).collect()
    }

    async fn timeline(&self, incident_id: &str) -> Result<Vec<TimelineRecord>> {
        let rows = sqlx::query("SELECT * FROM timeline WHERE incident_id = ? ORDER BY seq")
            .bind(incident_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(timeline_row).collect()
    }
}

/// A triage write transaction. SQLite has one writer, and `BEGIN IMMEDIATE` makes this
/// transaction it: what it read cannot change under it, so what `prefetch` read is kept and
/// kept current as the transaction writes, and answers later reads without a statement
/// (each costs two thread switches through sqlx's SQLite worker). For the same reason it can
/// number its timeline entries itself: they and its outbox events, which nothing reads
/// inside the transaction, are written at commit, a few statements for a whole batch.
struct SqliteTriageTx {
    tx: Transaction<'static, Sqlite>,
    /// Prefetched alerts: alert id → its (incident id, opened), or `None` when unattached.
    attached: HashMap<String, Option<(String, bool)>>,
    /// Prefetched dedup keys: key → its active incident, or `None`.
    active: HashMap<String, Option<IncidentRecord>>,
    /// Updates of prefetched incidents not written yet: id → the incident as last updated.
    dirty: HashMap<String, IncidentRecord>,
    /// Attachments of prefetched alerts not written yet: (alert id, incident id, opened).
    links: Vec<(String, String, bool)>,
    /// The sequence number the next timeline entry gets, once read.
    next_seq: Option<i64>,
    /// Timeline entries not written yet, numbered.
    entries: Vec<TimelineRecord>,
    /// Outbox events not written yet, in order.
    events: Vec<OutboxEvent>,
}

impl SqliteTriageTx {
    /// Writes the deferred updates of the incidents of `dedup_key` (all, for `None`).
    async fn flush_incidents(&mut self, dedup_key: Option<&str>) -> Result<()> {
        let ids: Vec<String> = self
            .dirty
            .values()
            .filter(|i| dedup_key.is_none_or(|k| i.dedup_key == k))
            .map(|i| i.id.clone())
            .collect();
        for id in ids {
            if let Some(i) = self.dirty.remove(&id) {
                update_row(&mut self.tx, &i).await?;
            }
        }
        Ok(())
    }

    /// Writes the deferred attachments, in one statement.
    async fn flush_links(&mut self) -> Result<()> {
        if self.links.is_empty() {
            return Ok(());
        }
        let links = std::mem::take(&mut self.links);
        sqlx::query(
            "INSERT INTO incident_alerts (alert_id, incident_id, opened, attached_at)
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                 json_extract(value, '$[2]'), ?
             FROM json_each(?)",
        )
        .bind(now_micros())
        .bind(json_text(&links)?)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| conflict(e, "alert already attached"))?;
        Ok(())
    }

    /// Writes the deferred timeline entries and outbox events.
    async fn flush_appends(&mut self) -> Result<()> {
        // 6 and 5 bound variables a row: chunks stay far below SQLite's 32766.
        for chunk in std::mem::take(&mut self.entries).chunks(1000) {
            let mut rows = Vec::with_capacity(chunk.len());
            for e in chunk {
                rows.push((e, json_text(&e.data)?));
            }
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO timeline (seq, incident_id, kind, at, actor, data) ",
            );
            q.push_values(rows, |mut b, (e, data)| {
                b.push_bind(e.seq)
                    .push_bind(&e.incident_id)
                    .push_bind(&e.kind)
                    .push_bind(e.at)
                    .push_bind(&e.actor)
                    .push_bind(data);
            });
            q.build().execute(&mut *self.tx).await?;
        }
        let now = now_micros();
        for chunk in std::mem::take(&mut self.events).chunks(1000) {
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

    /// Keeps the prefetched active incident of `i`'s key current after `i` was written.
    fn track(&mut self, i: &IncidentRecord) {
        let Some(current) = self.active.get_mut(&i.dedup_key) else {
            return;
        };
        let is_active = matches!(i.state.as_str(), "open" | "acknowledged");
        match current {
            Some(c) if c.id == i.id => *current = is_active.then(|| i.clone()),
            Some(_) => {}
            None if is_active => *current = Some(i.clone()),
            None => {}
        }
    }
}

#[async_trait]
impl TriageTx for SqliteTriageTx {
    async fn resolve_alert(&mut self, alert_id: &str) -> Result<Option<(String, i64)>> {
        self.flush_links().await?;
        let row = sqlx::query(
            "UPDATE incident_alerts SET resolved = 1 WHERE alert_id = ? RETURNING incident_id",
        )
        .bind(alert_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let incident_id: String = row.try_get(0)?;
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) FROM incident_alerts WHERE incident_id = ? AND resolved = 0",
        )
        .bind(&incident_id)
        .fetch_one(&mut *self.tx)
        .await?
        .try_get(0)?;
        Ok(Some((incident_id, open)))
    }

    async fn prefetch(&mut self, alert_ids: &[String], dedup_keys: &[String]) -> Result<()> {
        let rows = sqlx::query(
            "SELECT alert_id, incident_id, opened FROM incident_alerts
             WHERE alert_id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_text(&alert_ids)?)
        .fetch_all(&mut *self.tx)
        .await?;
        for id in alert_ids {
            self.attached.insert(id.clone(), None);
        }
        for r in &rows {
            self.attached
                .insert(r.try_get(0)?, Some((r.try_get(1)?, r.try_get(2)?)));
        }
        let rows = sqlx::query(
            "SELECT * FROM incidents WHERE state IN ('open', 'acknowledged')
             AND dedup_key IN (SELECT value FROM json_each(?))",
        )
        .bind(json_text(&dedup_keys)?)
        .fetch_all(&mut *self.tx)
        .await?;
        for key in dedup_keys {
            self.active.insert(key.clone(), None);
        }
        for r in &rows {
            let i = incident_row(r)?;
            self.active.insert(i.dedup_key.clone(), Some(i));
        }
        Ok(())
    }

    async fn incident_of_alert(&mut self, alert_id: &str) -> Result<Option<(String, bool)>> {
        if let Some(known) = self.attached.get(alert_id) {
            return Ok(known.clone());
        }
        self.flush_links().await?;
        let row = sqlx::query("SELECT incident_id, opened FROM incident_alerts WHERE alert_id = ?")
            .bind(alert_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        })
    }

    async fn active_incident_by_key(&mut self, dedup_key: &str) -> Result<Option<IncidentRecord>> {
        if let Some(known) = self.active.get(dedup_key) {
            return Ok(known.clone());
        }
        self.flush_incidents(Some(dedup_key)).await?;
        sqlx::query(
            "SELECT * FROM incidents WHERE dedup_key = ? AND state IN ('open', 'acknowledged')",
        )
        .bind(dedup_key)
        .fetch_optional(&mut *self.tx)
        .await?
        .map(|r| incident_row(&r))
        .transpose()
    }

    async fn incident(&mut self, id: &str) -> Result<Option<IncidentRecord>> {
        if let Some(i) = self.dirty.get(id) {
            return Ok(Some(i.clone()));
        }
        sqlx::query("SELECT * FROM incidents WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| incident_row(&r))
            .transpose()
    }

    async fn insert_incident(&mut self, i: &IncidentRecord) -> Result<()> {
        // The unique index must see this transaction's updates of the key's incidents.
        self.flush_incidents(Some(&i.dedup_key)).await?;
        sqlx::query(
            "INSERT INTO incidents (id, title, description, category, severity, priority, urgency, state,
                dedup_key, alert_count, labels, source, opened_at, acknowledged_at, resolved_at, closed_at,
                resolution_summary, root_cause, review, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&i.id)
        .bind(&i.title)
        .bind(&i.description)
        .bind(&i.category)
        .bind(i64::from(i.severity))
        .bind(i64::from(i.priority))
        .bind(&i.urgency)
        .bind(&i.state)
        .bind(&i.dedup_key)
        .bind(i64::from(i.alert_count))
        .bind(json_text(&i.labels)?)
        .bind(&i.source)
        .bind(i.opened_at)
        .bind(i.acknowledged_at)
        .bind(i.resolved_at)
        .bind(i.closed_at)
        .bind(&i.resolution_summary)
        .bind(&i.root_cause)
        .bind(&i.review)
        .bind(i.updated_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| conflict(e, "an active incident holds this dedup key"))?;
        self.track(i);
        Ok(())
    }

    async fn update_incident(&mut self, i: &IncidentRecord) -> Result<()> {
        self.track(i);
        if self.active.contains_key(&i.dedup_key) {
            // Prefetched: written once, at the latest at commit, however often updated.
            self.dirty.insert(i.id.clone(), i.clone());
            return Ok(());
        }
        update_row(&mut self.tx, i).await
    }

    async fn link_alert(&mut self, alert_id: &str, incident_id: &str, opened: bool) -> Result<()> {
        if let Some(known) = self.attached.get_mut(alert_id) {
            // Prefetched: whether it is attached is known here; written at commit.
            if known.is_some() {
                return Err(crate::Error::Conflict("alert already attached".into()));
            }
            *known = Some((incident_id.to_owned(), opened));
            self.links
                .push((alert_id.to_owned(), incident_id.to_owned(), opened));
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO incident_alerts (alert_id, incident_id, opened, attached_at) VALUES (?, ?, ?, ?)",
        )
        .bind(alert_id)
        .bind(incident_id)
        .bind(opened)
        .bind(now_micros())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| conflict(e, "alert already attached"))?;
        Ok(())
    }

    async fn append(&mut self, e: &NewTimelineEntry) -> Result<TimelineRecord> {
        let seq = match self.next_seq {
            Some(seq) => seq,
            // What AUTOINCREMENT would give: past every number ever used.
            None => sqlx::query(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'timeline'), 0),
                    COALESCE((SELECT MAX(seq) FROM timeline), 0)) + 1",
            )
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?,
        };
        self.next_seq = Some(seq + 1);
        let entry = TimelineRecord {
            seq,
            incident_id: e.incident_id.clone(),
            kind: e.kind.clone(),
            at: e.at,
            actor: e.actor.clone(),
            data: e.data.clone(),
        };
        self.entries.push(entry.clone());
        Ok(entry)
    }

    async fn mark_processed(&mut self, event_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO processed_events (event_id, processed_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(event_id)
        .bind(now_micros())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn enqueue(&mut self, event: &OutboxEvent) -> Result<()> {
        self.events.push(event.clone());
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush_incidents(None).await?;
        self.flush_links().await?;
        self.flush_appends().await?;
        self.tx.commit().await?;
        Ok(())
    }
}

async fn update_row(tx: &mut Transaction<'static, Sqlite>, i: &IncidentRecord) -> Result<()> {
    sqlx::query(
            "UPDATE incidents SET title = ?, description = ?, category = ?, severity = ?, priority = ?,
                urgency = ?, state = ?, alert_count = ?, labels = ?, acknowledged_at = ?, resolved_at = ?,
                closed_at = ?, resolution_summary = ?, root_cause = ?, review = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&i.title)
        .bind(&i.description)
        .bind(&i.category)
        .bind(i64::from(i.severity))
        .bind(i64::from(i.priority))
        .bind(&i.urgency)
        .bind(&i.state)
        .bind(i64::from(i.alert_count))
        .bind(json_text(&i.labels)?)
        .bind(i.acknowledged_at)
        .bind(i.resolved_at)
        .bind(i.closed_at)
        .bind(&i.resolution_summary)
        .bind(&i.root_cause)
        .bind(&i.review)
        .bind(i.updated_at)
        .bind(&i.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn incident_row(r: &SqliteRow) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        category: r.try_get("category")?,
        severity: r.try_get::<i64, _>("severity")? as u32,
        priority: r.try_get::<i64, _>("priority")? as u32,
        urgency: r.try_get("urgency")?,
        state: r.try_get("state")?,
        dedup_key: r.try_get("dedup_key")?,
        alert_count: r.try_get::<i64, _>("alert_count")? as u32,
        labels: from_json(r.try_get("labels")?)?,
        source: r.try_get("source")?,
        opened_at: r.try_get("opened_at")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        resolved_at: r.try_get("resolved_at")?,
        closed_at: r.try_get("closed_at")?,
        resolution_summary: r.try_get("resolution_summary")?,
        root_cause: r.try_get("root_cause")?,
        review: r.try_get("review")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn timeline_row(r: &SqliteRow) -> Result<TimelineRecord> {
    Ok(TimelineRecord {
        seq: r.try_get("seq")?,
        incident_id: r.try_get("incident_id")?,
        kind: r.try_get("kind")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        data: from_json(r.try_get("data")?)?,
    })
}
