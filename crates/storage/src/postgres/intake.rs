//! Intake's tables in Postgres: alerts, what each sender's alert key names, idempotency keys
//! and integrations.

use std::sync::Arc;

use async_trait::async_trait;
use firebreak_domain::{Clock, Micros};
use sqlx::postgres::{PgBindIterExt, PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{
    Migration, OUTBOX, conflict, enqueue, enqueue_all, from_json, get_u32, impl_connect,
    impl_outbox, json_text, lock_key,
};
use crate::{
    AlertKeyRow, AlertRecord, IntakeStore, IntakeTx, IntegrationRecord, OutboxEvent, Result,
};

/// The Postgres schema starts where SQLite's stands today (its version 4); JSON is kept as
/// text, as the services wrote it, since nothing queries inside it.
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
    received_at BIGINT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity BIGINT NOT NULL,
    category TEXT NOT NULL,
    labels TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    annotations TEXT NOT NULL DEFAULT '{}',
    integration TEXT NOT NULL DEFAULT '',
    alert_key TEXT NOT NULL DEFAULT ''
);
-- What each sender's alert key names now: follow-ups (resolve, acknowledge) and repeats
-- find their alert here; after a resolve, a new trigger points the key at a new alert.
CREATE TABLE alert_keys (
    integration TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (integration, alert_key)
);
-- Responses of calls made with an idempotency key, so a retry gets the first answer.
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    response BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE integrations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
",
    },
    // Integration keys are kept as SHA-256 only (built into Postgres since 11), out of the
    // settings JSON too, where earlier versions copied them; signing secrets sealed.
    Migration {
        version: 3,
        sql: "
ALTER TABLE integrations ADD COLUMN key_hash TEXT;
ALTER TABLE integrations ADD COLUMN key_hint TEXT NOT NULL DEFAULT '';
ALTER TABLE integrations ADD COLUMN signing_secret TEXT;
UPDATE integrations SET key_hash = encode(sha256(convert_to(key, 'UTF8')), 'hex'),
    key_hint = substr(key, 1, 4), settings = (settings::jsonb - 'key')::text;
ALTER TABLE integrations ALTER COLUMN key_hash SET NOT NULL;
ALTER TABLE integrations ADD CONSTRAINT integrations_key_hash_key UNIQUE (key_hash);
ALTER TABLE integrations DROP COLUMN key;
",
    },
    Migration {
        version: 4,
        sql: SILENCES,
    },
    Migration {
        version: 5,
        sql: SILENCED_ALERTS,
    },
    Migration {
        version: 6,
        sql: SILENCED_COUNTS,
    },
];

/// Which silence silenced an alert, and what finds silenced and firing alerts; both indexes
/// are partial, so the alerts that are neither cost them nothing. SQLite's migration 8 is
/// the same.
const SILENCED_ALERTS: &str = "
ALTER TABLE alerts ADD COLUMN silenced_by TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_silenced_by ON alerts (silenced_by, received_at) WHERE silenced_by <> '';
CREATE INDEX alert_keys_current ON alert_keys (alert_id) WHERE state <> 'resolved';
";

/// Which stored alerts a silence kept from opening anything, with what they would have been
/// (reports count them). SQLite's migration 9 is the same.
const SILENCED_COUNTS: &str = "
CREATE TABLE silenced_alerts (
    alert_id TEXT PRIMARY KEY,
    silence_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    integration TEXT NOT NULL,
    service TEXT NOT NULL,
    category TEXT NOT NULL,
    severity BIGINT NOT NULL
);
CREATE INDEX silenced_alerts_received_at ON silenced_alerts (received_at);
";

/// Silences, Alertmanager's (`domain::silence`); matchers as JSON. SQLite's migration 7 is the same.
const SILENCES: &str = "
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX silences_ends_at ON silences (ends_at);
";

/// Namespaces of intake's advisory locks.
const ALERT_KEY_LOCK: &str = "intake.alert_key";
const IDEMPOTENCY_LOCK: &str = "intake.idempotency";

/// Intake's store on Postgres.
#[derive(Clone)]
pub struct PgIntakeStore {
    pool: PgPool,
    /// What rows are stamped with (`created_at`, `processed_at`…): the services' clock.
    clock: Arc<dyn Clock>,
}

impl_connect!(PgIntakeStore, "intake", MIGRATIONS);

impl_outbox!(PgIntakeStore);

#[async_trait]
impl IntakeStore for PgIntakeStore {
    async fn insert_alert(&self, a: &AlertRecord, event: &OutboxEvent) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_alerts(&mut tx, std::slice::from_ref(a)).await?;
        enqueue(&mut tx, event, self.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn IntakeTx>> {
        Ok(Box::new(PgIntakeTx {
            tx: self.pool.begin().await?,
            clock: self.clock.clone(),
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
                    key_hash: r.try_get("key_hash")?,
                    key_hint: r.try_get("key_hint")?,
                    settings: from_json(r.try_get("settings")?)?,
                    signing_secret: r.try_get("signing_secret")?,
                    created_at: Micros::from_unix_micros(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn create_integration(&self, i: &IntegrationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO integrations (name, kind, key_hash, key_hint, settings, signing_secret, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&i.name)
        .bind(&i.kind)
        .bind(&i.key_hash)
        .bind(&i.key_hint)
        .bind(json_text(&i.settings)?)
        .bind(&i.signing_secret)
        .bind(i.created_at.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, &format!("integration {:?} or its key exists", i.name)))?;
        Ok(())
    }

    async fn reseal_integration(&self, name: &str, from: &str, to: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE integrations SET signing_secret = $1 WHERE name = $2 AND signing_secret = $3",
        )
        .bind(to)
        .bind(name)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_integration(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM integrations WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        sqlx::query("SELECT * FROM alerts WHERE id = $1")
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

    async fn silenced_tally(
        &self,
        since: Micros,
    ) -> Result<Vec<firebreak_domain::report::SilencedCount>> {
        let rows = sqlx::query(
            "SELECT integration, service, category, severity, COUNT(*) AS count
             FROM silenced_alerts WHERE received_at >= $1
             GROUP BY integration, service, category, severity
             ORDER BY integration, service, category, severity LIMIT $2",
        )
        .bind(since.unix_micros())
        .bind(i64::from(crate::MAX_SILENCED_GROUPS))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let count: i64 = r.try_get("count")?;
                Ok(firebreak_domain::report::SilencedCount {
                    integration: r.try_get("integration")?,
                    service: r.try_get("service")?,
                    category: r.try_get("category")?,
                    severity: get_u32(r, "severity")?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }
}

/// Records silenced alerts with one statement, whatever their number.
async fn insert_silenced(
    conn: &mut sqlx::PgConnection,
    silenced: &[crate::SilencedRecord],
) -> Result<()> {
    if silenced.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO silenced_alerts (alert_id, silence_id, received_at, integration, service,
            category, severity)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
            $6::text[], $7::int8[])",
    )
    .bind(silenced.iter().map(|s| &s.alert_id).bind_iter())
    .bind(silenced.iter().map(|s| &s.silence_id).bind_iter())
    .bind(
        silenced
            .iter()
            .map(|s| s.received_at.unix_micros())
            .bind_iter(),
    )
    .bind(silenced.iter().map(|s| &s.integration).bind_iter())
    .bind(silenced.iter().map(|s| &s.service).bind_iter())
    .bind(silenced.iter().map(|s| &s.category).bind_iter())
    .bind(silenced.iter().map(|s| i64::from(s.severity)).bind_iter())
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts alerts with one statement, whatever their number.
async fn insert_alerts(conn: &mut sqlx::PgConnection, alerts: &[AlertRecord]) -> Result<()> {
    if alerts.is_empty() {
        return Ok(());
    }
    let mut labels = Vec::with_capacity(alerts.len());
    let mut annotations = Vec::with_capacity(alerts.len());
    for a in alerts {
        labels.push(json_text(&a.labels)?);
        annotations.push(json_text(&a.annotations)?);
    }
    sqlx::query(
        "INSERT INTO alerts (id, received_at, source, title, description, severity, category, labels,
            dedup_key, annotations, integration, alert_key, silenced_by)
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])",
    )
    .bind(alerts.iter().map(|a| &a.id).bind_iter())
    .bind(alerts.iter().map(|a| a.received_at.unix_micros()).bind_iter())
    .bind(alerts.iter().map(|a| &a.source).bind_iter())
    .bind(alerts.iter().map(|a| &a.title).bind_iter())
    .bind(alerts.iter().map(|a| &a.description).bind_iter())
    .bind(alerts.iter().map(|a| i64::from(a.severity)).bind_iter())
    .bind(alerts.iter().map(|a| &a.category).bind_iter())
    .bind(&labels)
    .bind(alerts.iter().map(|a| &a.dedup_key).bind_iter())
    .bind(&annotations)
    .bind(alerts.iter().map(|a| &a.integration).bind_iter())
    .bind(alerts.iter().map(|a| &a.alert_key).bind_iter())
    .bind(alerts.iter().map(|a| &a.silenced_by).bind_iter())
    .execute(conn)
    .await?;
    Ok(())
}

/// One intake write transaction.
///
/// Several replicas take signals at once, and a signal's outcome depends on what its alert key
/// (or idempotency key) named before: `alert_keys` and `idempotent` take a transaction-scoped
/// advisory lock per key, so two transactions deciding about the same key run one after the
/// other, as they would on SQLite's single writer, even when no row exists yet to lock.
struct PgIntakeTx {
    tx: Transaction<'static, Postgres>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl IntakeTx for PgIntakeTx {
    async fn alert_keys(&mut self, pairs: &[(String, String)]) -> Result<Vec<AlertKeyRow>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        // All locks in one statement, in key order, so two transactions naming overlapping
        // keys cannot deadlock on each other.
        let mut locks: Vec<i64> = pairs
            .iter()
            .map(|(integration, key)| lock_key(ALERT_KEY_LOCK, &[integration, key]))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k")
            .bind(&locks)
            .execute(&mut *self.tx)
            .await?;
        // A new statement, so it sees what the transactions it waited for committed.
        let rows = sqlx::query(
            "SELECT integration, alert_key, alert_id, state FROM alert_keys
             WHERE (integration, alert_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        )
        .bind(pairs.iter().map(|(i, _)| i).bind_iter())
        .bind(pairs.iter().map(|(_, k)| k).bind_iter())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    async fn set_alert_keys(&mut self, rows: &[AlertKeyRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // One upsert may not touch a row twice: the last row for a pair wins, as it would
        // applied one by one.
        let mut last = std::collections::HashMap::with_capacity(rows.len());
        for (n, (integration, key, _, _)) in rows.iter().enumerate() {
            last.insert((integration, key), n);
        }
        let rows: Vec<&AlertKeyRow> = rows
            .iter()
            .enumerate()
            .filter(|(n, (i, k, _, _))| last.get(&(i, k)) == Some(n))
            .map(|(_, r)| r)
            .collect();
        sqlx::query(
            "INSERT INTO alert_keys (integration, alert_key, alert_id, state, updated_at)
             SELECT i, k, a, s, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(i, k, a, s)
             ON CONFLICT (integration, alert_key) DO UPDATE SET alert_id = excluded.alert_id,
                state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(rows.iter().map(|r| &r.0).bind_iter())
        .bind(rows.iter().map(|r| &r.1).bind_iter())
        .bind(rows.iter().map(|r| &r.2).bind_iter())
        .bind(rows.iter().map(|r| &r.3).bind_iter())
        .bind(self.clock.now_micros())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_alerts(
        &mut self,
        alerts: Vec<AlertRecord>,
        events: Vec<OutboxEvent>,
    ) -> Result<()> {
        insert_alerts(&mut self.tx, &alerts).await?;
        enqueue_all(&mut self.tx, &events, self.clock.now_micros()).await
    }

    async fn insert_silenced(&mut self, silenced: Vec<crate::SilencedRecord>) -> Result<()> {
        insert_silenced(&mut self.tx, &silenced).await
    }

    async fn idempotent(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        // A retry arriving at another replica while the first call is still being stored
        // waits here for it, then finds its response.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(IDEMPOTENCY_LOCK, &[key]))
            .execute(&mut *self.tx)
            .await?;
        let row = sqlx::query("SELECT response FROM idempotency WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    async fn remember(&mut self, key: &str, response: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency (key, response, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(response)
        .bind(self.clock.now_micros())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn enqueue(&mut self, event: &OutboxEvent) -> Result<()> {
        enqueue(&mut self.tx, event, self.clock.now_micros()).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

fn alert_row(r: &PgRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        received_at: Micros::from_unix_micros(r.try_get("received_at")?),
        source: r.try_get("source")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        severity: get_u32(r, "severity")?,
        category: r.try_get("category")?,
        labels: from_json(r.try_get("labels")?)?,
        dedup_key: r.try_get("dedup_key")?,
        annotations: from_json(r.try_get("annotations")?)?,
        integration: r.try_get("integration")?,
        alert_key: r.try_get("alert_key")?,
        silenced_by: r.try_get("silenced_by")?,
    })
}

#[async_trait]
impl crate::SilenceStore for PgIntakeStore {
    async fn put_silence(&self, s: &firebreak_domain::silence::Silence) -> Result<()> {
        sqlx::query(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET matchers = $2, starts_at = $3, ends_at = $4,
                created_by = $5, comment = $6, updated_at = $7",
        )
        .bind(&s.id)
        .bind(json_text(&s.matchers)?)
        .bind(s.starts_at.unix_micros())
        .bind(s.ends_at.unix_micros())
        .bind(&s.created_by)
        .bind(&s.comment)
        .bind(s.updated_at.unix_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn silences(&self) -> Result<Vec<firebreak_domain::silence::Silence>> {
        sqlx::query("SELECT * FROM silences ORDER BY starts_at DESC, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(silence_row)
            .collect()
    }

    async fn silence(&self, id: &str) -> Result<Option<firebreak_domain::silence::Silence>> {
        sqlx::query("SELECT * FROM silences WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(silence_row)
            .transpose()
    }

    async fn count_silences(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM silences")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn silenced_counts(&self) -> Result<std::collections::HashMap<String, u64>> {
        sqlx::query(
            "SELECT silenced_by, COUNT(*) FROM alerts WHERE silenced_by <> '' GROUP BY silenced_by",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
        .collect()
    }

    async fn count_silenced(&self, silence: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM alerts WHERE silenced_by = $1 AND silenced_by <> ''",
        )
        .bind(silence)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn silenced_alerts(&self, silence: &str, limit: u32) -> Result<Vec<AlertRecord>> {
        // The literal `<> ''` lets the partial index serve the query.
        sqlx::query(
            "SELECT * FROM alerts WHERE silenced_by = $1 AND silenced_by <> ''
             ORDER BY received_at DESC, id DESC LIMIT $2",
        )
        .bind(silence)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(alert_row)
        .collect()
    }

    async fn firing_alerts(&self, after: &str, limit: u32) -> Result<Vec<AlertRecord>> {
        sqlx::query(
            "SELECT a.* FROM alert_keys k JOIN alerts a ON a.id = k.alert_id
             WHERE k.state <> 'resolved' AND k.alert_id > $1
             ORDER BY k.alert_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(alert_row)
        .collect()
    }
}

fn silence_row(r: &PgRow) -> Result<firebreak_domain::silence::Silence> {
    Ok(firebreak_domain::silence::Silence {
        id: r.try_get("id")?,
        matchers: from_json(r.try_get("matchers")?)?,
        starts_at: Micros::from_unix_micros(r.try_get("starts_at")?),
        ends_at: Micros::from_unix_micros(r.try_get("ends_at")?),
        created_by: r.try_get("created_by")?,
        comment: r.try_get("comment")?,
        updated_at: Micros::from_unix_micros(r.try_get("updated_at")?),
    })
}

#[cfg(test)]
mod tests {
    use firebreak_domain::SystemClock;
    use firebreak_domain::access::integration_key_hash;

    use super::*;

    /// Keys stored in plaintext by version 2 are hashed by migration 3, out of the settings
    /// too, the plaintext column dropped: no row holds them.
    #[tokio::test]
    async fn plaintext_keys_of_earlier_versions_are_hashed_by_the_migration() {
        let db = firebreak_testkit::postgres::TestDatabase::create().await;
        let pool = super::super::open(
            &db.url,
            "intake",
            &MIGRATIONS[..2],
            2,
            &SystemClock,
            super::super::Schema::Migrate,
        )
        .await
        .unwrap();
        let key = "plain-key-aaaaaaaa01";
        sqlx::query(
            "INSERT INTO integrations (name, kind, key, settings, created_at)
             VALUES ('i0', 'alertmanager', $1, $2, 7)",
        )
        .bind(key)
        .bind(serde_json::json!({ "name": "i0", "key": key, "auto_resolve": true }).to_string())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = PgIntakeStore::connect(&db.url).await.unwrap();
        assert_eq!(
            store.integrations().await.unwrap(),
            vec![IntegrationRecord {
                name: "i0".into(),
                kind: "alertmanager".into(),
                key_hash: integration_key_hash(key),
                key_hint: "plai".into(),
                settings: serde_json::json!({ "name": "i0", "auto_resolve": true }),
                signing_secret: None,
                created_at: Micros::from_unix_micros(7),
            }]
        );
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT row_to_json(i)::text FROM integrations i")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].contains(key), "{}", rows[0]);
        assert!(!rows[0].contains("\"key\""), "{}", rows[0]);
    }
}
