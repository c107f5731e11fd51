//! Triage's tables in SQLite: incidents, the alerts attached to them, the timeline.

use std::collections::HashMap;

use async_trait::async_trait;
use firebreak_domain::Micros;
use rusqlite::{Connection, OptionalExtension};

use super::conn::{self, Db, Tx};
use super::named;
use super::{Migration, OUTBOX, OUTBOX_READ_IN_PLACE, from_json, json_text};
use super::{impl_open, impl_outbox};
use crate::{
    AlertCursor, AlertLink, AlertSeen, ChangeRecord, Error, FollowUpQuery, FollowUpRecord,
    IncidentAlertRecord, IncidentCursor, IncidentRecord, Result, SnapshotRequest, TimelineRecord,
    TriageChangeset, TriageSnapshot, TriageStore, TriageTx,
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
    Migration {
        version: 4,
        sql: OUTBOX_READ_IN_PLACE,
    },
    // An incident's unresolved alerts are counted on every resolve: without an index that
    // scanned every attachment ever made. They are kept counted, a row per incident: an
    // index of unresolved attachments would take a write in a different place for every
    // attachment (in a storm, a page per incident and batch), the counts a few hot pages.
    // The attachments are keyed by alert id alone (WITHOUT ROWID: one b-tree, not a table
    // and its key's index).
    Migration {
        version: 5,
        sql: "
CREATE TABLE incident_alerts_v2 (
    alert_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    opened INTEGER NOT NULL,
    attached_at INTEGER NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO incident_alerts_v2 (alert_id, incident_id, opened, attached_at, resolved)
    SELECT alert_id, incident_id, opened, attached_at, resolved FROM incident_alerts;
DROP TABLE incident_alerts;
ALTER TABLE incident_alerts_v2 RENAME TO incident_alerts;
CREATE TABLE unresolved_alerts (
    incident_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO unresolved_alerts (incident_id, count)
    SELECT incident_id, SUM(resolved = 0) FROM incident_alerts GROUP BY incident_id;
",
    },
    // A change event is stored once; each timeline it concerns refers to it by id.
    Migration {
        version: 6,
        sql: "
CREATE TABLE changes (
    id TEXT PRIMARY KEY,
    integration TEXT NOT NULL,
    summary TEXT NOT NULL,
    source TEXT NOT NULL,
    at INTEGER NOT NULL,
    details TEXT NOT NULL
);
",
    },
    // Who holds which incident role: a JSON list of `RoleHolder`s, read and written with
    // the row (at most 50, so a column, not a table joined on every read).
    Migration {
        version: 7,
        sql: "ALTER TABLE incidents ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';",
    },
    // Postgres' migration 5 is the same.
    Migration {
        version: 8,
        sql: "ALTER TABLE incidents ADD COLUMN integration TEXT NOT NULL DEFAULT '';",
    },
    // The `mitigated` state, and merges. A CHECK cannot be altered in SQLite: the state
    // moves to a new column with the wider CHECK (the old one, and its CHECK, dropped), and
    // the indexes on it are made again, `mitigated` counting as active. Resolved incidents
    // are found by key for the reopen window. Postgres' migration 6 is the same.
    Migration {
        version: 9,
        sql: "
DROP INDEX incidents_one_active_per_key;
DROP INDEX incidents_state;
ALTER TABLE incidents RENAME COLUMN state TO state_v1;
ALTER TABLE incidents ADD COLUMN state TEXT NOT NULL DEFAULT 'open'
    CHECK (state IN ('open', 'acknowledged', 'mitigated', 'resolved', 'closed'));
UPDATE incidents SET state = state_v1;
ALTER TABLE incidents DROP COLUMN state_v1;
CREATE UNIQUE INDEX incidents_one_active_per_key ON incidents (dedup_key)
    WHERE state IN ('open', 'acknowledged', 'mitigated');
CREATE INDEX incidents_state ON incidents (state, opened_at);
CREATE INDEX incidents_resolved_by_key ON incidents (dedup_key, resolved_at)
    WHERE state = 'resolved';
ALTER TABLE incidents ADD COLUMN mitigated_at INTEGER;
ALTER TABLE incidents ADD COLUMN merged_into TEXT NOT NULL DEFAULT '';
",
    },
    // An incident lists its alerts (`ListIncidentAlerts`): each attachment keeps what the
    // alert was (title, labels, first trigger), how often it was triggered again while
    // firing, when last, and when it cleared; an index finds an incident's attachments.
    // Postgres' migration 7 is the same.
    Migration {
        version: 10,
        sql: "
ALTER TABLE incident_alerts ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE incident_alerts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE incident_alerts ADD COLUMN fired_at INTEGER;
ALTER TABLE incident_alerts ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incident_alerts ADD COLUMN last_seen_at INTEGER;
ALTER TABLE incident_alerts ADD COLUMN resolved_at INTEGER;
CREATE INDEX incident_alerts_of_incident ON incident_alerts (incident_id, attached_at);
",
    },
    // Grouping: the group a rule put an incident in when it opened, and an index finding
    // the active incidents of a group opened since a time. Postgres' migration 8 is the same.
    Migration {
        version: 11,
        sql: "
ALTER TABLE incidents ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
ALTER TABLE incident_alerts ADD COLUMN grouped_by TEXT NOT NULL DEFAULT '';
CREATE INDEX incidents_active_by_group ON incidents (group_key, opened_at)
    WHERE state IN ('open', 'acknowledged', 'mitigated') AND group_key <> '';
",
    },
    // The last status update to stakeholders, as JSON (NULL before the first): read with
    // the incident, so `incident show` and the events carry it. Postgres' migration 9 is
    // the same.
    Migration {
        version: 12,
        sql: "ALTER TABLE incidents ADD COLUMN last_status_update TEXT;",
    },
    // Post-incident follow-ups (`follow_ups.rs`). Postgres' migration 10 is the same.
    Migration {
        version: 13,
        sql: super::follow_ups::MIGRATION,
    },
];

/// Triage's store on SQLite.
#[derive(Clone)]
pub struct SqliteTriageStore {
    db: Db,
}

impl_open!(SqliteTriageStore, MIGRATIONS);

impl_outbox!(SqliteTriageStore);

/// A query of incidents: the columns [`IncidentRow::read`] reads, then `$rest`.
macro_rules! incidents {
    ($rest:literal) => {
        concat!(
            "SELECT id, title, description, category, severity, priority, urgency, state,
                dedup_key, alert_count, labels, source, opened_at, acknowledged_at, resolved_at,
                closed_at, resolution_summary, root_cause, review, updated_at, roles, integration,
                mitigated_at, merged_into, group_key, last_status_update
                FROM incidents ",
            $rest
        )
    };
}

#[async_trait]
impl TriageStore for SqliteTriageStore {
    async fn begin(&self) -> Result<Box<dyn TriageTx>> {
        Ok(Box::new(SqliteTriageTx {
            tx: self.db.begin().await,
        }))
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>> {
        let id = id.to_owned();
        self.db.read(move |c| incident_by_id(c, &id)).await
    }

    async fn incidents_page(
        &self,
        state: Option<&str>,
        after: Option<&IncidentCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<IncidentRecord>> {
        let state = state.map(str::to_owned);
        let after = after.cloned();
        self.db
            .read(move |c| {
                let mut sql = String::from(incidents!("WHERE 1 = 1"));
                let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
                if let Some(state) = state {
                    sql.push_str(" AND state = ?");
                    params.push(Box::new(state));
                }
                if let Some(after) = after {
                    sql.push_str(" AND (opened_at, id) < (?, ?)");
                    params.push(Box::new(after.opened_at.unix_micros()));
                    params.push(Box::new(after.id));
                }
                sql.push_str(" ORDER BY opened_at DESC, id DESC LIMIT ?");
                params.push(Box::new(i64::from(limit)));
                let mut stmt = c.prepare_cached(&sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while bytes < max_bytes
                    && let Some(row) = rows.next()?
                {
                    let i = IncidentRow::read(row)?.record()?;
                    bytes += i.wire_size();
                    out.push(i);
                }
                Ok(out)
            })
            .await
    }

    async fn timeline_page(
        &self,
        incident_id: &str,
        after_seq: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<TimelineRecord>> {
        let incident_id = incident_id.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT seq, incident_id, kind, at, actor, data FROM timeline
                     WHERE incident_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )?;
                let mut rows = stmt.query((&incident_id, after_seq, i64::from(limit)))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while bytes < max_bytes
                    && let Some(r) = rows.next()?
                {
                    let (kind, actor, data): (String, String, String) =
                        (r.get(2)?, r.get(4)?, r.get(5)?);
                    bytes += kind.len() + actor.len() + data.len() + 32;
                    out.push(TimelineRecord {
                        seq: r.get(0)?,
                        incident_id: r.get(1)?,
                        kind,
                        at: Micros::from_unix_micros(r.get(3)?),
                        actor,
                        data: from_json(&data)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn incident_alerts(
        &self,
        incident_id: &str,
        after: Option<&AlertCursor>,
        limit: u32,
    ) -> Result<Vec<IncidentAlertRecord>> {
        let id = incident_id.to_owned();
        let after = after.map(|a| (a.attached_at.unix_micros(), a.alert_id.clone()));
        self.db
            .read(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT alert_id, incident_id, opened, resolved, title, labels, fired_at,
                        last_seen_at, repeats, attached_at, resolved_at
                     FROM incident_alerts INDEXED BY incident_alerts_of_incident
                     WHERE incident_id = ?1
                        AND (?2 IS NULL OR (attached_at, alert_id) > (?2, ?3))
                     ORDER BY attached_at, alert_id LIMIT ?4",
                )?;
                let (at, alert) = after.unzip();
                let rows = q.query_map(
                    (&id, at, alert.unwrap_or_default(), i64::from(limit)),
                    |r| {
                        Ok((
                            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                            (r.get::<_, bool>(2)?, r.get::<_, bool>(3)?),
                            (r.get::<_, String>(4)?, r.get::<_, String>(5)?),
                            (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<i64>>(7)?),
                            (r.get::<_, i64>(8)?, r.get::<_, i64>(9)?),
                            r.get::<_, Option<i64>>(10)?,
                        ))
                    },
                )?;
                let mut out = Vec::new();
                for row in rows {
                    let (
                        (alert_id, incident_id),
                        (opened, resolved),
                        (title, labels),
                        (fired, last),
                        (repeats, attached),
                        cleared,
                    ) = row?;
                    let first = fired.unwrap_or(attached);
                    out.push(IncidentAlertRecord {
                        alert_id,
                        incident_id,
                        opened,
                        resolved,
                        title,
                        labels: from_json(&labels)?,
                        first_seen: Micros::from_unix_micros(first),
                        last_seen: Micros::from_unix_micros(last.unwrap_or(first)),
                        repeats: u32::try_from(repeats).unwrap_or(u32::MAX),
                        attached_at: Micros::from_unix_micros(attached),
                        resolved_at: cleared.map(Micros::from_unix_micros),
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn follow_ups(&self, query: &FollowUpQuery) -> Result<Vec<FollowUpRecord>> {
        let query = query.clone();
        self.db
            .read(move |c| super::follow_ups::query(c, &query))
            .await
    }

    async fn change(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT id, integration, summary, source, at, details FROM changes WHERE id = ?",
                )?
                .query_row([&id], |r| {
                    Ok(ChangeRecord {
                        id: r.get(0)?,
                        integration: r.get(1)?,
                        summary: r.get(2)?,
                        source: r.get(3)?,
                        at: Micros::from_unix_micros(r.get(4)?),
                        details: r.get(5)?,
                    })
                })
                .optional()?)
            })
            .await
    }

    async fn report_facts(
        &self,
        since: Micros,
        limit: u32,
    ) -> Result<Vec<firebreak_domain::report::IncidentFacts>> {
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(REPORT_FACTS)?;
                let mut rows = stmt.query(rusqlite::params![
                    since.unix_micros(),
                    firebreak_domain::report::PERSON_ACTOR_PREFIX,
                    i64::from(limit),
                ])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(report_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn count_active(&self) -> Result<Vec<(u32, firebreak_domain::IncidentState, u64)>> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(COUNT_ACTIVE)?;
                let rows = stmt.query_map([], |r| {
                    let severity: i64 = r.get(0)?;
                    let count: i64 = r.get(2)?;
                    Ok((
                        u32::try_from(severity).unwrap_or(0),
                        named(r, 1)?,
                        count.max(0) as u64,
                    ))
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }
}

/// Active incidents per severity and state, through the index of states.
const COUNT_ACTIVE: &str =
    "SELECT severity, state, count(*) FROM incidents INDEXED BY incidents_state
    WHERE state IN ('open', 'acknowledged', 'mitigated') GROUP BY severity, state";

/// What a report reads of each incident opened in its window: the incident's columns, its
/// first `resolved` entry (seq, actor) and the seq of its first entry by a person (`?2` is
/// the actor prefix of a person). Both timeline reads walk the incident's own entries
/// (`timeline_incident`).
const REPORT_FACTS: &str = "
SELECT i.id, i.category, i.severity, i.labels, i.source, i.integration, i.opened_at,
    i.acknowledged_at, i.resolved_at, i.alert_count, r.seq, r.actor,
    (SELECT MIN(p.seq) FROM timeline p
        WHERE p.incident_id = i.id AND substr(p.actor, 1, length(?2)) = ?2)
FROM incidents i
LEFT JOIN timeline r ON r.seq = (SELECT MIN(t.seq) FROM timeline t
    WHERE t.incident_id = i.id AND t.kind = 'resolved')
WHERE i.opened_at >= ?1 AND i.merged_into = ''
ORDER BY i.opened_at, i.id
LIMIT ?3";

fn report_row(r: &rusqlite::Row<'_>) -> Result<firebreak_domain::report::IncidentFacts> {
    let labels: std::collections::BTreeMap<String, String> = from_json(&r.get::<_, String>(3)?)?;
    let source: String = r.get(4)?;
    let resolve: (Option<i64>, Option<String>) = (r.get(10)?, r.get(11)?);
    Ok(firebreak_domain::report::IncidentFacts {
        id: r.get(0)?,
        category: r.get(1)?,
        severity: r.get(2)?,
        service: firebreak_domain::report::service_of(&labels, &source).to_owned(),
        integration: r.get(5)?,
        opened_at: Micros::from_unix_micros(r.get(6)?),
        acknowledged_at: r.get::<_, Option<i64>>(7)?.map(Micros::from_unix_micros),
        resolved_at: r.get::<_, Option<i64>>(8)?.map(Micros::from_unix_micros),
        alert_count: r.get(9)?,
        first_resolve: match resolve {
            (Some(seq), Some(actor)) => Some((seq, actor)),
            _ => None,
        },
        first_person_entry: r.get(12)?,
    })
}

/// A triage write transaction. It holds the database's one write lock from `begin` to
/// `apply` (or its drop), so what its snapshot read cannot change under it, and it numbers
/// its timeline entries itself, from where AUTOINCREMENT would go on. The snapshot is one
/// hand-over to the connection's thread, the changeset another, which commits.
struct SqliteTriageTx {
    tx: Tx,
}

/// Writes attachments (unresolved) with what their alerts were (`seen`), counting them
/// among their incidents' unresolved alerts.
fn write_links(c: &Connection, links: &[AlertLink], seen: &[AlertSeen], now: i64) -> Result<()> {
    let mut insert = c.prepare_cached(
        "INSERT INTO incident_alerts (alert_id, incident_id, opened, attached_at, title, labels,
            fired_at, last_seen_at, grouped_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let seen: HashMap<&str, &AlertSeen> = seen.iter().map(|s| (s.alert_id.as_str(), s)).collect();
    let mut added: HashMap<&str, i64> = HashMap::new();
    for l in links {
        let alert = seen.get(l.alert_id.as_str());
        let labels = match alert {
            Some(a) => json_text(&a.labels)?,
            None => "{}".to_owned(),
        };
        let fired = alert.map(|a| a.fired_at.unix_micros());
        insert
            .execute((
                &l.alert_id,
                &l.incident_id,
                l.opened,
                now,
                alert.map_or("", |a| a.title.as_str()),
                labels,
                fired,
                fired,
                &l.grouped_by,
            ))
            .map_err(|e| conn::conflict(e, "alert already attached"))?;
        *added.entry(l.incident_id.as_str()).or_default() += 1;
    }
    let mut count = c.prepare_cached(
        "INSERT INTO unresolved_alerts (incident_id, count) VALUES (?, ?)
         ON CONFLICT (incident_id) DO UPDATE SET count = count + excluded.count",
    )?;
    for (incident_id, n) in added {
        count.execute((incident_id, n))?;
    }
    Ok(())
}

/// Reads a triage snapshot (see [`TriageTx::snapshot`]); SQLite has one writer at a time,
/// so nothing needs locking.
fn read_snapshot(c: &Connection, req: &SnapshotRequest) -> Result<TriageSnapshot> {
    let mut snap = TriageSnapshot::default();
    if !req.alert_ids.is_empty() {
        let ids = json_text(&req.alert_ids)?;
        let mut links = c.prepare_cached(
            "SELECT alert_id, incident_id, opened, resolved, grouped_by FROM incident_alerts
             WHERE alert_id IN (SELECT value FROM json_each(?))",
        )?;
        let rows = links.query_map([&ids], |r| {
            Ok(AlertLink {
                alert_id: r.get(0)?,
                incident_id: r.get(1)?,
                opened: r.get(2)?,
                resolved: r.get(3)?,
                grouped_by: r.get(4)?,
            })
        })?;
        for link in rows {
            let link = link?;
            snap.links.insert(link.alert_id.clone(), link);
        }
    }
    if !req.dedup_keys.is_empty() {
        let keys = json_text(&req.dedup_keys)?;
        // Without the hint SQLite walks every active incident (by state).
        let mut active = c.prepare_cached(incidents!(
            "INDEXED BY incidents_one_active_per_key
             WHERE state IN ('open', 'acknowledged', 'mitigated')
             AND dedup_key IN (SELECT value FROM json_each(?))"
        ))?;
        for row in active.query_map([&keys], IncidentRow::read)? {
            let i = row?.record()?;
            snap.active.insert(i.dedup_key.clone(), i);
        }
        if let Some(since) = req.resolved_since {
            // The last resolved of each key without an active one (an active one wins).
            let mut resolved = c.prepare_cached(incidents!(
                "INDEXED BY incidents_resolved_by_key
                 WHERE state = 'resolved' AND resolved_at >= ?1
                 AND dedup_key IN (SELECT value FROM json_each(?2))
                 ORDER BY resolved_at"
            ))?;
            for row in resolved.query_map((since.unix_micros(), &keys), IncidentRow::read)? {
                let i = row?.record()?;
                if !snap.active.contains_key(&i.dedup_key) {
                    snap.resolved.insert(i.dedup_key.clone(), i);
                }
            }
        }
    }
    if let (false, Some(since)) = (req.group_keys.is_empty(), req.grouped_since) {
        // The active incident of each group opened last (in order, the last one stays).
        let keys = json_text(&req.group_keys)?;
        let mut grouped = c.prepare_cached(incidents!(
            "INDEXED BY incidents_active_by_group
             WHERE state IN ('open', 'acknowledged', 'mitigated') AND group_key <> ''
             AND group_key IN (SELECT value FROM json_each(?1)) AND opened_at >= ?2
             ORDER BY group_key, opened_at, id"
        ))?;
        for row in grouped.query_map((&keys, since.unix_micros()), IncidentRow::read)? {
            let i = row?.record()?;
            snap.grouped.insert(i.group_key.clone(), i);
        }
    }
    let mut ids: Vec<&String> = req.incident_ids.iter().collect();
    if req.incidents_of_alerts {
        ids.extend(snap.links.values().map(|l| &l.incident_id));
    }
    ids.sort_unstable();
    ids.dedup();
    if req.follow_ups {
        snap.follow_ups = super::follow_ups::of_incidents(c, &ids)?;
    }
    for id in ids {
        if let Some(i) = incident_by_id(c, id)? {
            if req.count_unresolved {
                let open: i64 = c
                    .prepare_cached("SELECT count FROM unresolved_alerts WHERE incident_id = ?")?
                    .query_row([id], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                snap.unresolved.insert(i.id.clone(), open);
            }
            snap.incidents.insert(i.id.clone(), i);
        }
    }
    if let [id] = req.event_ids.as_slice() {
        // One event (every input but an alert batch): a lookup, not a JSON list.
        let seen = c
            .prepare_cached("SELECT 1 FROM processed_events WHERE event_id = ?")?
            .exists([id])?;
        if seen {
            snap.processed.insert(id.clone());
        }
    } else if !req.event_ids.is_empty() {
        let ids = json_text(&req.event_ids)?;
        let mut seen = c.prepare_cached(
            "SELECT event_id FROM processed_events WHERE event_id IN (SELECT value FROM json_each(?))",
        )?;
        for id in seen.query_map([&ids], |r| r.get::<_, String>(0))? {
            snap.processed.insert(id?);
        }
    }
    Ok(snap)
}

/// Writes a triage changeset (see [`TriageTx::apply`]), numbering its timeline entries;
/// processed marks, attachments and events are stamped `now`.
fn write_changeset(c: &Connection, ch: &TriageChangeset, now: i64) -> Result<Vec<TimelineRecord>> {
    let mut mark = c.prepare_cached(
        "INSERT INTO processed_events (event_id, processed_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
    )?;
    for id in &ch.processed {
        if mark.execute((id, now))? != 1 {
            return Err(Error::Conflict(format!("event {id} was handled meanwhile")));
        }
    }
    // Updates first: an incident resolved here frees its dedup key for an insert.
    for u in &ch.updates {
        update_row(c, &u.record, !u.state_changed)?;
    }
    for i in &ch.inserts {
        insert_row(c, i)?;
    }
    for m in &ch.moves {
        c.prepare_cached("UPDATE incident_alerts SET incident_id = ?2 WHERE incident_id = ?1")?
            .execute((&m.from, &m.to))?;
        let moved: i64 = c
            .prepare_cached("DELETE FROM unresolved_alerts WHERE incident_id = ? RETURNING count")?
            .query_row([&m.from], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        c.prepare_cached(
            "INSERT INTO unresolved_alerts (incident_id, count) VALUES (?, ?)
             ON CONFLICT (incident_id) DO UPDATE SET count = count + excluded.count",
        )?
        .execute((&m.to, moved))?;
    }
    write_links(c, &ch.links, &ch.seen, now)?;
    super::follow_ups::write(c, &ch.follow_ups)?;
    for r in &ch.repeats {
        c.prepare_cached(
            "UPDATE incident_alerts SET repeats = repeats + 1,
                last_seen_at = MAX(COALESCE(last_seen_at, fired_at, attached_at), ?)
             WHERE alert_id = ?",
        )?
        .execute((r.at.unix_micros(), &r.alert_id))?;
    }
    for alert_id in &ch.resolved_alerts {
        let incident_id: Option<String> = c
            .prepare_cached(
                "UPDATE incident_alerts SET resolved = 1, resolved_at = ?
                 WHERE alert_id = ? AND resolved = 0 RETURNING incident_id",
            )?
            .query_row((now, alert_id), |r| r.get(0))
            .optional()?;
        let Some(incident_id) = incident_id else {
            return Err(Error::Conflict(format!(
                "alert {alert_id} is not an unresolved attached alert"
            )));
        };
        c.prepare_cached("UPDATE unresolved_alerts SET count = count - 1 WHERE incident_id = ?")?
            .execute([&incident_id])?;
    }
    for change in &ch.changes {
        let n = c
            .prepare_cached(
                "INSERT INTO changes (id, integration, summary, source, at, details)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?
            .execute((
                &change.id,
                &change.integration,
                &change.summary,
                &change.source,
                change.at.unix_micros(),
                &change.details,
            ))?;
        if n != 1 {
            return Err(Error::Conflict(format!("change {} is stored", change.id)));
        }
    }
    let mut written = Vec::with_capacity(ch.entries.len());
    if !ch.entries.is_empty() {
        let first = next_timeline_seq(c)?;
        let mut append = c.prepare_cached(
            "INSERT INTO timeline (seq, incident_id, kind, at, actor, data) VALUES (?, ?, ?, ?, ?, ?)",
        )?;
        for (n, e) in ch.entries.iter().enumerate() {
            let seq = first + n as i64;
            append.execute((
                seq,
                &e.incident_id,
                &e.kind,
                e.at.unix_micros(),
                &e.actor,
                json_text(&e.data)?,
            ))?;
            written.push(e.recorded(seq));
        }
    }
    conn::enqueue(c, &ch.events, now)?;
    Ok(written)
}

/// Inserts an incident's row; a conflict when an active incident holds its dedup key.
fn insert_row(c: &Connection, i: &IncidentRecord) -> Result<()> {
    let (labels, roles) = (json_text(&i.labels)?, json_text(&i.roles)?);
    let update = status_update_text(i)?;
    c.prepare_cached(
        "INSERT INTO incidents (id, title, description, category, severity, priority, urgency, state,
            dedup_key, alert_count, labels, source, opened_at, acknowledged_at, resolved_at, closed_at,
            resolution_summary, root_cause, review, updated_at, roles, integration, mitigated_at,
            merged_into, group_key, last_status_update)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(rusqlite::params![
        i.id,
        i.title,
        i.description,
        i.category,
        i.severity,
        i.priority,
        i.urgency.as_str(),
        i.state.as_str(),
        i.dedup_key,
        i.alert_count,
        labels,
        i.source,
        i.opened_at.unix_micros(),
        i.acknowledged_at.map(Micros::unix_micros),
        i.resolved_at.map(Micros::unix_micros),
        i.closed_at.map(Micros::unix_micros),
        i.resolution_summary,
        i.root_cause,
        i.review,
        i.updated_at.unix_micros(),
        roles,
        i.integration,
        i.mitigated_at.map(Micros::unix_micros),
        i.merged_into,
        i.group_key,
        update,
    ])
    .map_err(|e| conn::conflict(e, "an active incident holds this dedup key"))?;
    Ok(())
}

#[async_trait]
impl TriageTx for SqliteTriageTx {
    async fn snapshot(&mut self, request: &SnapshotRequest) -> Result<TriageSnapshot> {
        let request = request.clone();
        self.tx.call(move |c| read_snapshot(c, &request)).await
    }

    async fn apply(self: Box<Self>, changes: TriageChangeset) -> Result<Vec<TimelineRecord>> {
        let now = self.tx.now();
        self.tx
            .commit_with(move |c| write_changeset(c, &changes, now))
            .await
    }
}

/// What AUTOINCREMENT would number the next timeline entry: past every number ever used.
fn next_timeline_seq(c: &Connection) -> Result<i64> {
    Ok(c.prepare_cached(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'timeline'), 0),
            COALESCE((SELECT MAX(seq) FROM timeline), 0)) + 1",
    )?
    .query_row([], |r| r.get(0))?)
}

fn incident_by_id(c: &Connection, id: &str) -> Result<Option<IncidentRecord>> {
    c.prepare_cached(incidents!("WHERE id = ?"))?
        .query_row([id], IncidentRow::read)
        .optional()?
        .map(IncidentRow::record)
        .transpose()
}

/// Writes an incident's row. With `keep_state` (the state as stored is unchanged) the state
/// is not assigned, and SQLite leaves the two indexes on it (by state, one active incident
/// per key) alone.
fn update_row(c: &Connection, i: &IncidentRecord, keep_state: bool) -> Result<()> {
    let (labels, roles) = (json_text(&i.labels)?, json_text(&i.roles)?);
    let (urgency, state) = (i.urgency.as_str(), i.state.as_str());
    let mitigated_at = i.mitigated_at.map(Micros::unix_micros);
    let update = status_update_text(i)?;
    let (acknowledged_at, resolved_at, closed_at, updated_at) = (
        i.acknowledged_at.map(Micros::unix_micros),
        i.resolved_at.map(Micros::unix_micros),
        i.closed_at.map(Micros::unix_micros),
        i.updated_at.unix_micros(),
    );
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![
        &i.title,
        &i.description,
        &i.category,
        &i.severity,
        &i.priority,
        &urgency,
        &i.alert_count,
        &labels,
        &acknowledged_at,
        &resolved_at,
        &closed_at,
        &i.resolution_summary,
        &i.root_cause,
        &i.review,
        &updated_at,
        &roles,
        &mitigated_at,
        &i.merged_into,
        &update,
    ];
    if !keep_state {
        params.push(&state);
    }
    params.push(&i.id);
    c.prepare_cached(if keep_state {
        "UPDATE incidents SET title = ?, description = ?, category = ?, severity = ?, priority = ?,
            urgency = ?, alert_count = ?, labels = ?, acknowledged_at = ?, resolved_at = ?,
            closed_at = ?, resolution_summary = ?, root_cause = ?, review = ?, updated_at = ?,
            roles = ?, mitigated_at = ?, merged_into = ?, last_status_update = ?
         WHERE id = ?"
    } else {
        "UPDATE incidents SET title = ?, description = ?, category = ?, severity = ?, priority = ?,
            urgency = ?, alert_count = ?, labels = ?, acknowledged_at = ?, resolved_at = ?,
            closed_at = ?, resolution_summary = ?, root_cause = ?, review = ?, updated_at = ?,
            roles = ?, mitigated_at = ?, merged_into = ?, last_status_update = ?, state = ?
         WHERE id = ?"
    })?
    .execute(params.as_slice())
    // A reopened incident whose key another holds.
    .map_err(|e| conn::conflict(e, "an active incident holds this dedup key"))?;
    Ok(())
}

/// An incident's last status update as its column holds it (NULL: none yet).
fn status_update_text(i: &IncidentRecord) -> Result<Option<String>> {
    i.last_status_update.as_ref().map(json_text).transpose()
}

/// An incident row as stored, its labels, roles and last status update not yet parsed.
struct IncidentRow {
    record: IncidentRecord,
    labels: String,
    roles: String,
    update: Option<String>,
}

impl IncidentRow {
    /// Reads a row of an [`incidents!`] query.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            record: IncidentRecord {
                id: r.get(0)?,
                title: r.get(1)?,
                description: r.get(2)?,
                category: r.get(3)?,
                severity: r.get(4)?,
                priority: r.get(5)?,
                urgency: named(r, 6)?,
                state: named(r, 7)?,
                dedup_key: r.get(8)?,
                alert_count: r.get(9)?,
                labels: Default::default(),
                source: r.get(11)?,
                integration: r.get(21)?,
                opened_at: Micros::from_unix_micros(r.get(12)?),
                acknowledged_at: r.get::<_, Option<i64>>(13)?.map(Micros::from_unix_micros),
                resolved_at: r.get::<_, Option<i64>>(14)?.map(Micros::from_unix_micros),
                closed_at: r.get::<_, Option<i64>>(15)?.map(Micros::from_unix_micros),
                mitigated_at: r.get::<_, Option<i64>>(22)?.map(Micros::from_unix_micros),
                merged_into: r.get(23)?,
                group_key: r.get(24)?,
                resolution_summary: r.get(16)?,
                root_cause: r.get(17)?,
                review: r.get(18)?,
                updated_at: Micros::from_unix_micros(r.get(19)?),
                roles: Vec::new(),
                last_status_update: None,
            },
            labels: r.get(10)?,
            roles: r.get(20)?,
            update: r.get(25)?,
        })
    }

    fn record(self) -> Result<IncidentRecord> {
        Ok(IncidentRecord {
            labels: from_json(&self.labels)?,
            roles: serde_json::from_str(&self.roles)
                .map_err(|e| Error::Corrupt(format!("roles: {e}")))?,
            last_status_update: self
                .update
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| Error::Corrupt(format!("last_status_update: {e}")))?,
            ..self.record
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use firebreak_domain::SystemClock;

    use super::*;
    use crate::TriageStore;

    /// A state or urgency the code does not know (written by a newer version, or by hand
    /// past the CHECK) is a corrupt row naming the field, never read as some default state.
    #[tokio::test]
    async fn an_unknown_stored_state_or_urgency_is_a_corrupt_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.db");
        let store = SqliteTriageStore::open(&path, false).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("PRAGMA ignore_check_constraints = ON")
            .unwrap();
        for (id, urgency, state, names) in [
            ("a", "medium", "paused", "paused"),
            ("b", "whenever", "open", "whenever"),
        ] {
            raw.execute(
                "INSERT INTO incidents (id, title, description, category, severity, priority,
                    urgency, state, dedup_key, alert_count, labels, source, opened_at,
                    resolution_summary, root_cause, review, updated_at)
                 VALUES (?1, 't', '', 'c', 3, 3, ?2, ?3, ?1, 1, '{}', 's', 1, '', '', '', 1)",
                (id, urgency, state),
            )
            .unwrap();
            let err = store.incident(id).await.unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(names), "{err}");
        }
    }

    /// Attachments made before their unresolved ones were counted are counted by the
    /// migration that starts counting.
    #[tokio::test]
    async fn the_migration_counts_the_unresolved_alerts_already_attached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.db");
        {
            let before = Db::open(&path, &MIGRATIONS[..4], false, Arc::new(SystemClock))
                .await
                .unwrap();
            before
                .write(|c| {
                    c.execute_batch(
                        "INSERT INTO incidents (id, title, description, category, severity,
                            priority, urgency, state, dedup_key, alert_count, labels, source,
                            opened_at, resolution_summary, root_cause, review, updated_at)
                         VALUES ('a', 't', '', 'uncategorized', 3, 3, 'medium', 'open', 'k', 3,
                            '{}', 's', 0, '', '', '', 0);
                         INSERT INTO incident_alerts (alert_id, incident_id, opened, attached_at, resolved)
                         VALUES ('a1', 'a', 1, 0, 1), ('a2', 'a', 0, 0, 0), ('a3', 'a', 0, 0, 0);",
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        let store = SqliteTriageStore::open(&path, false).await.unwrap();
        let unresolved = |store: SqliteTriageStore| async move {
            let mut tx = store.begin().await.unwrap();
            let request = SnapshotRequest {
                count_unresolved: true,
                incident_ids: vec!["a".into()],
                ..Default::default()
            };
            tx.snapshot(&request).await.unwrap().unresolved["a"]
        };
        let clear = |store: SqliteTriageStore, alert: &str| {
            let changes = TriageChangeset {
                resolved_alerts: vec![alert.to_owned()],
                ..Default::default()
            };
            async move { store.begin().await.unwrap().apply(changes).await }
        };
        assert_eq!(unresolved(store.clone()).await, 2);
        clear(store.clone(), "a2").await.unwrap();
        assert_eq!(unresolved(store.clone()).await, 1);
        let again = clear(store.clone(), "a1").await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        assert_eq!(unresolved(store.clone()).await, 1);
        clear(store.clone(), "a3").await.unwrap();
        assert_eq!(unresolved(store).await, 0);
    }
}
