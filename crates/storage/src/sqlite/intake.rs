//! Intake's tables in SQLite: alerts.

use async_trait::async_trait;
use firebreak_domain::Micros;
use firebreak_domain::access::integration_key_hash;
use rusqlite::{Connection, OptionalExtension};

use super::conn::{self, Db, Tx};
use super::{Migration, OUTBOX, OUTBOX_READ_IN_PLACE, from_json, json_text};
use super::{impl_open, impl_outbox};
use crate::{
    AlertKeyRow, AlertRecord, IntakeStore, IntakeTx, IntegrationRecord, MAX_SILENCED_GROUPS,
    OutboxEvent, Result, SilencedRecord,
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
    Migration {
        version: 5,
        sql: OUTBOX_READ_IN_PLACE,
    },
    // Integration keys are kept as SHA-256 only, and signing secrets sealed. SQLite has no
    // SHA-256 in SQL: `hash_plaintext_keys` hashes the keys of earlier versions when the
    // store opens, and drops the plaintext column.
    Migration {
        version: 6,
        sql: "
ALTER TABLE integrations ADD COLUMN key_hash TEXT;
ALTER TABLE integrations ADD COLUMN key_hint TEXT NOT NULL DEFAULT '';
ALTER TABLE integrations ADD COLUMN signing_secret TEXT;
",
    },
    Migration {
        version: 7,
        sql: SILENCES,
    },
    Migration {
        version: 8,
        sql: SILENCED_ALERTS,
    },
    Migration {
        version: 9,
        sql: SILENCED_COUNTS,
    },
];

/// Which silence silenced an alert, and what finds silenced and firing alerts; both indexes
/// are partial, so the alerts that are neither cost them nothing. Postgres' migration 5 is
/// the same.
const SILENCED_ALERTS: &str = "
ALTER TABLE alerts ADD COLUMN silenced_by TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_silenced_by ON alerts (silenced_by, received_at) WHERE silenced_by <> '';
CREATE INDEX alert_keys_current ON alert_keys (alert_id) WHERE state <> 'resolved';
";

/// Which stored alerts a silence kept from opening anything, with what they would have been
/// (reports count them). Postgres' migration 5 is the same.
const SILENCED_COUNTS: &str = "
CREATE TABLE silenced_alerts (
    alert_id TEXT PRIMARY KEY,
    silence_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    integration TEXT NOT NULL,
    service TEXT NOT NULL,
    category TEXT NOT NULL,
    severity INTEGER NOT NULL
);
CREATE INDEX silenced_alerts_received_at ON silenced_alerts (received_at);
";

/// Silences, Alertmanager's (`domain::silence`); matchers as JSON. Postgres' migration 4 is the same.
const SILENCES: &str = "
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX silences_ends_at ON silences (ends_at);
";

/// The integrations table as it stands once keys are hashed.
const INTEGRATIONS_HASHED: &str = "
CREATE TABLE integrations_hashed (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    key_hint TEXT NOT NULL,
    settings TEXT NOT NULL,
    signing_secret TEXT,
    created_at INTEGER NOT NULL
);
INSERT INTO integrations_hashed
    SELECT name, kind, key_hash, key_hint, settings, signing_secret, created_at FROM integrations;
DROP TABLE integrations;
ALTER TABLE integrations_hashed RENAME TO integrations;
";

/// Replaces the plaintext keys earlier versions stored (in the `key` column and in the
/// settings JSON) by their SHA-256 and first four characters, then rebuilds the table
/// without the `key` column. Runs at every open, in one write; does nothing once the column
/// is gone, so a crash half-way leaves the old table and the next open starts over.
///
/// Deleted content is overwritten while it runs (`secure_delete`), so the old keys do not
/// linger in the file's free pages.
pub(crate) fn hash_plaintext_keys(tx: &Connection) -> Result<()> {
    let plaintext: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('integrations') WHERE name = 'key')",
        [],
        |r| r.get(0),
    )?;
    if !plaintext {
        return Ok(());
    }
    tx.pragma_update(None, "secure_delete", true)?;
    let keys: Vec<(String, String)> = tx
        .prepare("SELECT name, key FROM integrations")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = tx.prepare(
        "UPDATE integrations SET key_hash = ?, key_hint = ?, settings = json_remove(settings, '$.key')
         WHERE name = ?",
    )?;
    for (name, key) in &keys {
        let hint: String = key.chars().take(4).collect();
        update.execute((integration_key_hash(key), hint, name))?;
    }
    drop(update);
    tx.execute_batch(INTEGRATIONS_HASHED)?;
    tx.pragma_update(None, "secure_delete", false)?;
    if !keys.is_empty() {
        tracing::info!(
            integrations = keys.len(),
            "integration keys are now stored as SHA-256 only"
        );
    }
    Ok(())
}

/// Intake's store on SQLite.
#[derive(Clone)]
pub struct SqliteIntakeStore {
    db: Db,
}

impl_open!(SqliteIntakeStore, MIGRATIONS, upgrade: hash_plaintext_keys);

impl_outbox!(SqliteIntakeStore);

#[async_trait]
impl IntakeStore for SqliteIntakeStore {
    async fn insert_alert(&self, a: &AlertRecord, event: &OutboxEvent) -> Result<()> {
        let (a, event) = (a.clone(), event.clone());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                insert_alerts(tx, std::slice::from_ref(&a))?;
                conn::enqueue(tx, &[event], clock.now_micros())
            })
            .await
    }

    async fn begin(&self) -> Result<Box<dyn IntakeTx>> {
        Ok(Box::new(SqliteIntakeTx {
            tx: self.db.begin().await,
            alerts: Vec::new(),
            silenced: Vec::new(),
            events: Vec::new(),
        }))
    }

    async fn integrations(&self) -> Result<Vec<IntegrationRecord>> {
        self.db
            .read(|c| {
                let mut q = c.prepare(
                    "SELECT name, kind, key_hash, key_hint, settings, signing_secret, created_at
                     FROM integrations ORDER BY name",
                )?;
                let rows = q.query_map([], |r| {
                    Ok((
                        IntegrationRecord {
                            name: r.get(0)?,
                            kind: r.get(1)?,
                            key_hash: r.get(2)?,
                            key_hint: r.get(3)?,
                            settings: serde_json::Value::Null,
                            signing_secret: r.get(5)?,
                            created_at: Micros::from_unix_micros(r.get(6)?),
                        },
                        r.get::<_, String>(4)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (record, settings) = row?;
                    out.push(IntegrationRecord {
                        settings: from_json(&settings)?,
                        ..record
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn create_integration(&self, i: &IntegrationRecord) -> Result<()> {
        let settings = json_text(&i.settings)?;
        let i = i.clone();
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO integrations (name, kind, key_hash, key_hint, settings, signing_secret, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        &i.name,
                        &i.kind,
                        &i.key_hash,
                        &i.key_hint,
                        &settings,
                        &i.signing_secret,
                        i.created_at.unix_micros(),
                    ),
                )
                .map_err(|e| {
                    conn::conflict(e, &format!("integration {:?} or its key exists", i.name))
                })?;
                Ok(())
            })
            .await
    }

    async fn reseal_integration(&self, name: &str, from: &str, to: &str) -> Result<bool> {
        let (name, from, to) = (name.to_owned(), from.to_owned(), to.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE integrations SET signing_secret = ? WHERE name = ? AND signing_secret = ?",
                    (&to, &name, &from),
                )? == 1)
            })
            .await
    }

    async fn delete_integration(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.db
            .write(move |tx| {
                Ok(tx.execute("DELETE FROM integrations WHERE name = ?", [&name])? == 1)
            })
            .await
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                let row = c
                    .query_row(
                        "SELECT id, received_at, source, title, description, severity, category,
                            labels, dedup_key, annotations, integration, alert_key, silenced_by
                         FROM alerts WHERE id = ?",
                        [&id],
                        AlertRow::read,
                    )
                    .optional()?;
                row.map(AlertRow::record).transpose()
            })
            .await
    }

    async fn count_alerts(&self) -> Result<i64> {
        self.db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?))
            .await
    }

    async fn silenced_tally(
        &self,
        since: Micros,
    ) -> Result<Vec<firebreak_domain::report::SilencedCount>> {
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT integration, service, category, severity, COUNT(*)
                     FROM silenced_alerts WHERE received_at >= ?
                     GROUP BY integration, service, category, severity
                     ORDER BY integration, service, category, severity LIMIT ?",
                )?;
                let rows =
                    stmt.query_map((since.unix_micros(), i64::from(MAX_SILENCED_GROUPS)), |r| {
                        Ok(firebreak_domain::report::SilencedCount {
                            integration: r.get(0)?,
                            service: r.get(1)?,
                            category: r.get(2)?,
                            severity: r.get(3)?,
                            count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        })
                    })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }
}

fn insert_silenced(tx: &Connection, silenced: &[SilencedRecord]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO silenced_alerts (alert_id, silence_id, received_at, integration, service,
            category, severity)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?;
    for s in silenced {
        insert.execute(rusqlite::params![
            s.alert_id,
            s.silence_id,
            s.received_at.unix_micros(),
            s.integration,
            s.service,
            s.category,
            s.severity,
        ])?;
    }
    Ok(())
}

/// An alert row as stored, its JSON columns not yet parsed.
struct AlertRow {
    record: AlertRecord,
    labels: String,
    annotations: String,
}

impl AlertRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            record: AlertRecord {
                id: r.get(0)?,
                received_at: Micros::from_unix_micros(r.get(1)?),
                source: r.get(2)?,
                title: r.get(3)?,
                description: r.get(4)?,
                severity: r.get(5)?,
                category: r.get(6)?,
                labels: Default::default(),
                dedup_key: r.get(8)?,
                annotations: Default::default(),
                integration: r.get(10)?,
                alert_key: r.get(11)?,
                silenced_by: r.get(12)?,
            },
            labels: r.get(7)?,
            annotations: r.get(9)?,
        })
    }

    fn record(self) -> Result<AlertRecord> {
        Ok(AlertRecord {
            labels: from_json(&self.labels)?,
            annotations: from_json(&self.annotations)?,
            ..self.record
        })
    }
}

fn insert_alerts(tx: &Connection, alerts: &[AlertRecord]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO alerts (id, received_at, source, title, description, severity, category, labels,
            dedup_key, annotations, integration, alert_key, silenced_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for a in alerts {
        insert.execute(rusqlite::params![
            a.id,
            a.received_at.unix_micros(),
            a.source,
            a.title,
            a.description,
            a.severity,
            a.category,
            json_text(&a.labels)?,
            a.dedup_key,
            json_text(&a.annotations)?,
            a.integration,
            a.alert_key,
            a.silenced_by,
        ])?;
    }
    Ok(())
}

/// A group's transaction: each read is one hand-over to the writing connection's thread.
/// The alerts and events, which nothing reads inside the transaction, are written in the
/// call that commits, so a group of alerts without keys costs one hand-over in all (a
/// duplicate alert id fails the commit).
struct SqliteIntakeTx {
    tx: Tx,
    alerts: Vec<AlertRecord>,
    silenced: Vec<SilencedRecord>,
    /// In the order they were added.
    events: Vec<OutboxEvent>,
}

#[async_trait]
impl IntakeTx for SqliteIntakeTx {
    async fn alert_keys(&mut self, pairs: &[(String, String)]) -> Result<Vec<AlertKeyRow>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = pairs.to_vec();
        self.tx
            .call(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT alert_id, state FROM alert_keys WHERE integration = ? AND alert_key = ?",
                )?;
                let mut out = Vec::new();
                for (integration, key) in pairs {
                    let row = q
                        .query_row((&integration, &key), |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })
                        .optional()?;
                    if let Some((id, state)) = row {
                        out.push((integration, key, id, state));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn set_alert_keys(&mut self, rows: &[AlertKeyRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        let now = self.tx.now();
        self.tx
            .call(move |c| {
                let mut set = c.prepare_cached(
                    "INSERT INTO alert_keys (integration, alert_key, alert_id, state, updated_at)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (integration, alert_key) DO UPDATE SET alert_id = excluded.alert_id,
                        state = excluded.state, updated_at = excluded.updated_at",
                )?;
                for (integration, key, id, state) in &rows {
                    set.execute((integration, key, id, state, now))?;
                }
                Ok(())
            })
            .await
    }

    async fn insert_alerts(
        &mut self,
        alerts: Vec<AlertRecord>,
        events: Vec<OutboxEvent>,
    ) -> Result<()> {
        self.alerts.extend(alerts);
        self.events.extend(events);
        Ok(())
    }

    async fn idempotent(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.tx
            .call(move |c| {
                Ok(
                    c.prepare_cached("SELECT response FROM idempotency WHERE key = ?")?
                        .query_row([&key], |r| r.get(0))
                        .optional()?,
                )
            })
            .await
    }

    async fn remember(&mut self, key: &str, response: &[u8]) -> Result<()> {
        let (key, response) = (key.to_owned(), response.to_vec());
        let now = self.tx.now();
        self.tx
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO idempotency (key, response, created_at) VALUES (?, ?, ?)",
                )?
                .execute((&key, &response, now))?;
                Ok(())
            })
            .await
    }

    async fn insert_silenced(&mut self, silenced: Vec<SilencedRecord>) -> Result<()> {
        self.silenced.extend(silenced);
        Ok(())
    }

    async fn enqueue(&mut self, event: &OutboxEvent) -> Result<()> {
        self.events.push(event.clone());
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let Self {
            tx,
            alerts,
            silenced,
            events,
        } = *self;
        let now = tx.now();
        tx.commit_with(move |c| {
            insert_alerts(c, &alerts)?;
            insert_silenced(c, &silenced)?;
            conn::enqueue(c, &events, now)
        })
        .await
    }
}

#[async_trait]
impl crate::SilenceStore for SqliteIntakeStore {
    async fn put_silence(&self, s: &firebreak_domain::silence::Silence) -> Result<()> {
        let s = s.clone();
        let matchers = json_text(&s.matchers)?;
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET matchers = ?2, starts_at = ?3, ends_at = ?4,
                        created_by = ?5, comment = ?6, updated_at = ?7",
                )?
                .execute(rusqlite::params![
                    s.id,
                    matchers,
                    s.starts_at.unix_micros(),
                    s.ends_at.unix_micros(),
                    s.created_by,
                    s.comment,
                    s.updated_at.unix_micros()
                ])?;
                Ok(())
            })
            .await
    }

    async fn silences(&self) -> Result<Vec<firebreak_domain::silence::Silence>> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at
                     FROM silences ORDER BY starts_at DESC, id",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(silence_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn silence(&self, id: &str) -> Result<Option<firebreak_domain::silence::Silence>> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at
                     FROM silences WHERE id = ?",
                )?;
                let mut rows = stmt.query([&id])?;
                match rows.next()? {
                    Some(r) => Ok(Some(silence_row(r)?)),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn count_silences(&self) -> Result<u64> {
        self.db
            .read(|c| {
                Ok(c.prepare_cached("SELECT COUNT(*) FROM silences")?
                    .query_row([], |r| r.get::<_, i64>(0))? as u64)
            })
            .await
    }

    async fn silenced_counts(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.db
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT silenced_by, COUNT(*) FROM alerts WHERE silenced_by <> ''
                     GROUP BY silenced_by",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn count_silenced(&self, silence: &str) -> Result<u64> {
        let silence = silence.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT COUNT(*) FROM alerts WHERE silenced_by = ? AND silenced_by <> ''",
                )?
                .query_row([&silence], |r| r.get::<_, i64>(0))? as u64)
            })
            .await
    }

    async fn silenced_alerts(&self, silence: &str, limit: u32) -> Result<Vec<AlertRecord>> {
        let silence = silence.to_owned();
        self.db
            .read(move |c| {
                // The literal `<> ''` lets the partial index serve the query.
                let mut stmt = c.prepare_cached(
                    "SELECT id, received_at, source, title, description, severity, category,
                        labels, dedup_key, annotations, integration, alert_key, silenced_by
                     FROM alerts WHERE silenced_by = ? AND silenced_by <> ''
                     ORDER BY received_at DESC, id DESC LIMIT ?",
                )?;
                let rows = stmt.query_map((&silence, limit), AlertRow::read)?;
                rows.map(|r| r?.record()).collect()
            })
            .await
    }

    async fn firing_alerts(&self, after: &str, limit: u32) -> Result<Vec<AlertRecord>> {
        let after = after.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT a.id, a.received_at, a.source, a.title, a.description, a.severity,
                        a.category, a.labels, a.dedup_key, a.annotations, a.integration,
                        a.alert_key, a.silenced_by
                     FROM alert_keys k JOIN alerts a ON a.id = k.alert_id
                     WHERE k.state <> 'resolved' AND k.alert_id > ?
                     ORDER BY k.alert_id LIMIT ?",
                )?;
                let rows = stmt.query_map((&after, limit), AlertRow::read)?;
                rows.map(|r| r?.record()).collect()
            })
            .await
    }
}

fn silence_row(r: &rusqlite::Row<'_>) -> Result<firebreak_domain::silence::Silence> {
    Ok(firebreak_domain::silence::Silence {
        id: r.get(0)?,
        matchers: from_json(&r.get::<_, String>(1)?)?,
        starts_at: Micros::from_unix_micros(r.get(2)?),
        ends_at: Micros::from_unix_micros(r.get(3)?),
        created_by: r.get(4)?,
        comment: r.get(5)?,
        updated_at: Micros::from_unix_micros(r.get(6)?),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use firebreak_domain::SystemClock;

    use super::*;

    const KEYS: [&str; 2] = ["plain-key-aaaaaaaa01", "plain-key-bbbbbbbb02"];

    /// A database as version 5 left it: integrations with their keys in plaintext, in the
    /// `key` column and in the settings JSON.
    async fn version_5(path: &std::path::Path) {
        let db = Db::open(path, &MIGRATIONS[..5], false, Arc::new(SystemClock))
            .await
            .unwrap();
        db.write(|tx| {
            for (n, key) in KEYS.iter().enumerate() {
                let name = format!("i{n}");
                let settings = serde_json::json!({
                    "name": name, "kind": "alertmanager", "key": key, "auto_resolve": true,
                });
                tx.execute(
                    "INSERT INTO integrations (name, kind, key, settings, created_at)
                     VALUES (?, 'alertmanager', ?, ?, 7)",
                    (&name, key, settings.to_string()),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Every byte of the database's files (the database, its WAL), as text.
    fn file_text(path: &std::path::Path) -> String {
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            all.extend(std::fs::read(file).unwrap_or_default());
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    /// Keys stored in plaintext by earlier versions are hashed when the store opens, out of
    /// the settings too, the plaintext column dropped; opening again changes nothing.
    #[tokio::test]
    async fn plaintext_keys_of_earlier_versions_are_hashed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.db");
        version_5(&path).await;
        assert!(file_text(&path).contains(KEYS[0]), "the fixture holds them");

        let expected: Vec<IntegrationRecord> = KEYS
            .iter()
            .enumerate()
            .map(|(n, key)| IntegrationRecord {
                name: format!("i{n}"),
                kind: "alertmanager".into(),
                key_hash: integration_key_hash(key),
                key_hint: "plai".into(),
                settings: serde_json::json!({
                    "name": format!("i{n}"), "kind": "alertmanager", "auto_resolve": true,
                }),
                signing_secret: None,
                created_at: Micros::from_unix_micros(7),
            })
            .collect();
        for _ in 0..2 {
            let store = SqliteIntakeStore::open(&path, false).await.unwrap();
            assert_eq!(store.integrations().await.unwrap(), expected);
            let columns: Vec<String> = store
                .db
                .read(|c| {
                    let mut q = c.prepare("SELECT name FROM pragma_table_info('integrations')")?;
                    let names = q.query_map([], |r| r.get(0))?;
                    Ok(names.collect::<rusqlite::Result<_>>()?)
                })
                .await
                .unwrap();
            assert!(!columns.contains(&"key".to_owned()), "{columns:?}");
            // The old keys are not left in free pages or the log either.
            let c = Connection::open(&path).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            drop(c);
            let text = file_text(&path);
            for key in KEYS {
                assert!(!text.contains(key), "{key} is still in the file");
            }
        }
    }
}
