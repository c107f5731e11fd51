//! The Postgres adapter: one database per service, shared by all of that service's replicas.
//!
//! Replicas write at the same time (READ COMMITTED), so the rules SQLite gets from having one
//! writer are held here by the database: unique indexes with `ON CONFLICT`, row locks
//! (`FOR UPDATE`) around read-modify-write, compare-and-set updates, `SKIP LOCKED` claims and
//! transaction-scoped advisory locks where no row exists yet to lock. Batch paths bind whole
//! columns as arrays (`unnest`), so a batch costs a few statements whatever its size, and each
//! statement text is fixed, so it is prepared once per connection.

mod follow_ups;
mod intake;
mod notification;
mod orchestration;
mod triage;

use std::str::FromStr;
use std::time::Duration;

use firebreak_domain::Clock;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};

pub use intake::PgIntakeStore;
pub use notification::PgNotificationStore;
pub use orchestration::PgOrchestrationStore;
pub use triage::PgTriageStore;

use crate::{Error, OutboxEvent, OutboxRecord, Result};

pub(crate) use crate::migration::Migration;

/// The outbox every service database carries.
///
/// Sequence numbers are assigned at insert, not at commit, so with several writers a relay can
/// see seq 10 before seq 9 commits; relays read unpublished rows rather than keep a cursor, so
/// seq 9 is published on a later pass.
const OUTBOX: &str = "
CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
-- The sweep of published rows reads this instead of the whole table.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
";

/// The most connections one store opens. Postgres' default `max_connections` is 100, which
/// four services with two replicas each stay under as long as their pools are not all full.
pub(crate) const MAX_CONNECTIONS: u32 = 16;

/// How long a caller waits for a connection; a dead server is noticed within this.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long opening a connection outside the pool (to create the database) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock migrations hold, so replicas starting together migrate one at a time.
/// Advisory locks are scoped to the database, and each service has its own.
const MIGRATION_LOCK: i64 = 0x6669_7265_6272_6b01;

/// Creates the database `url` names unless it exists, through the server's `postgres`
/// maintenance database. A concurrent creator winning the race is fine.
pub async fn create_database_if_missing(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    // Connecting first needs no rights on the maintenance database when the database exists,
    // as it will in production.
    match connect_one(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(e.into()),
    }
    let name = options
        .get_database()
        .unwrap_or_else(|| options.get_username())
        .to_owned();
    let mut conn = connect_one(&options.clone().database("postgres")).await?;
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(&name)
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // duplicate_database, or the catalog's unique index when both got that far at once.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn connect_one(options: &PgConnectOptions) -> std::result::Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to postgres timed out",
            ))
        })?
}

/// Double-quotes an identifier for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What opening a store does to its database's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// Creates the database if it is missing and applies the migrations it lacks, under an
    /// advisory lock (replicas starting together take turns).
    #[default]
    Migrate,
    /// Changes nothing: the database must exist and hold every migration this build knows
    /// (`firebreak migrate` applied them), else [`Error::NotMigrated`]. For deployments that
    /// migrate once per release (a Kubernetes Job) rather than at every replica's start.
    Require,
}

/// What `migrate` did to one service's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub service: &'static str,
    /// The newest migration applied before (0: none).
    pub from: i64,
    /// The newest migration applied now.
    pub to: i64,
}

/// Creates the database if needed, opens a pool on it and, as `schema` says, applies
/// `service`'s migrations or checks that they were applied.
///
/// Every connection is tested before it is handed out: after the server restarts, stale
/// connections are dropped instead of failing a caller's query, and while it is down callers
/// (and `ping`) fail after `ACQUIRE_TIMEOUT`. The pool reconnects on its own.
pub(crate) async fn open(
    url: &str,
    service: &'static str,
    migrations: &[Migration],
    max_connections: u32,
    clock: &dyn Clock,
    schema: Schema,
) -> Result<PgPool> {
    let pool = pool(url, service, migrations, max_connections, schema).await?;
    match schema {
        Schema::Migrate => {
            migrate(&pool, service, migrations, clock).await?;
        }
        Schema::Require => require(&pool, service, migrations).await?,
    }
    Ok(pool)
}

/// Creates the database if needed and applies `service`'s migrations, on a pool of its own
/// that is closed afterwards: what `firebreak migrate` does for each service.
pub(crate) async fn migrate_database(
    url: &str,
    service: &'static str,
    migrations: &[Migration],
    clock: &dyn Clock,
) -> Result<Migrated> {
    let pool = pool(url, service, migrations, 2, Schema::Migrate).await?;
    let migrated = migrate(&pool, service, migrations, clock).await;
    pool.close().await;
    let (from, to) = migrated?;
    Ok(Migrated { service, from, to })
}

/// The newest migration the code holds.
fn newest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Opens the pool of `open`; with `Schema::Migrate` the database is created first if missing,
/// with `Schema::Require` a missing one is `NotMigrated`.
async fn pool(
    url: &str,
    service: &'static str,
    migrations: &[Migration],
    max_connections: u32,
    schema: Schema,
) -> Result<PgPool> {
    if schema == Schema::Migrate {
        create_database_if_missing(url).await?;
    }
    let mut options = PgConnectOptions::from_str(url)?;
    if options.get_application_name().is_none() {
        options = options.application_name(&format!("firebreak-{service}"));
    }
    // The adapter's reasoning about concurrency assumes READ COMMITTED (a statement sees what
    // committed before it began), whatever the server's default; and a replica that froze
    // inside a transaction must not hold its row locks for ever.
    let idle_set = options
        .get_options()
        .is_some_and(|o| o.contains("idle_in_transaction_session_timeout"));
    options = options.options([("default_transaction_isolation", "read committed")]);
    if !idle_set {
        options = options.options([("idle_in_transaction_session_timeout", "60s")]);
    }
    match PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_with(options)
        .await
    {
        Ok(pool) => Ok(pool),
        // invalid_catalog_name: the database does not exist, so nothing migrated it.
        Err(sqlx::Error::Database(e))
            if schema == Schema::Require && e.code().as_deref() == Some("3D000") =>
        {
            Err(Error::NotMigrated {
                service: service.to_owned(),
                applied: None,
                required: newest(migrations),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks, changing nothing, that the database holds every one of `migrations` with its text
/// unchanged (newer ones, from a newer build, are fine) and no other service's tables.
async fn require(pool: &PgPool, service: &str, migrations: &[Migration]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    let exists: bool = sqlx::query("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let applied: Vec<(i64, Option<String>)> = if exists {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT version, service, checksum FROM schema_migrations ORDER BY version",
        )
        .fetch_all(&mut *conn)
        .await
        .or_else(|e| match &e {
            // A bookkeeping table from before checksums: `firebreak migrate` adds the column.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42703") => Ok(Vec::new()),
            _ => Err(e),
        })?;
        if let Some((_, other, _)) = rows.iter().find(|(_, s, _)| s != service) {
            return Err(Error::Migration {
                version: 0,
                source: format!(
                    "the database holds the {other} service's tables; {service} needs a database of its own"
                )
                .into(),
            });
        }
        rows.into_iter().map(|(v, _, c)| (v, c)).collect()
    } else {
        Vec::new()
    };
    // An edited migration is refused as at a migrating start; checksums still missing are
    // recorded by the next `firebreak migrate`, not here.
    crate::migration::verify(service, migrations, &applied)?;
    let missing = migrations
        .iter()
        .any(|m| !applied.iter().any(|(v, _)| *v == m.version));
    if missing {
        return Err(Error::NotMigrated {
            service: service.to_owned(),
            applied: Some(applied.iter().map(|(v, _)| *v).max().unwrap_or(0)),
            required: newest(migrations),
        });
    }
    Ok(())
}

/// Applies the migrations the database lacks; returns the newest applied before and after.
async fn migrate(
    pool: &PgPool,
    service: &str,
    migrations: &[Migration],
    clock: &dyn Clock,
) -> Result<(i64, i64)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    // Checked rather than `CREATE TABLE IF NOT EXISTS`, whose notice would be logged at
    // every start.
    let exists: bool = sqlx::query("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if !exists {
        // `checksum` is NULL only in rows written before checksums were kept (by an older
        // build, which names its columns and leaves it out); they are backfilled below.
        sqlx::query(
            "CREATE TABLE schema_migrations (
                version BIGINT PRIMARY KEY,
                service TEXT NOT NULL,
                applied_at BIGINT NOT NULL,
                checksum TEXT
            )",
        )
        .execute(&mut *tx)
        .await?;
    } else {
        // A table from before checksums gets the column; checked first, as above, rather
        // than `ADD COLUMN IF NOT EXISTS` and its notice at every start.
        let has_checksum: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'schema_migrations'
               AND column_name = 'checksum')",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if !has_checksum {
            sqlx::query("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")
                .execute(&mut *tx)
                .await?;
        }
    }
    // Each service needs its own database: two sharing one would share an outbox and
    // skip each other's migrations.
    let other: Option<String> =
        sqlx::query("SELECT service FROM schema_migrations WHERE service <> $1 LIMIT 1")
            .bind(service)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    if let Some(other) = other {
        return Err(Error::Migration {
            version: 0,
            source: format!(
                "the database holds the {other} service's tables; {service} needs a database of its own"
            )
            .into(),
        });
    }
    let applied: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
    let backfill = crate::migration::verify(service, migrations, &applied)?;
    for (version, checksum) in &backfill {
        sqlx::query("UPDATE schema_migrations SET checksum = $1 WHERE version = $2")
            .bind(checksum)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    if !backfill.is_empty() {
        tracing::info!(
            service,
            migrations = backfill.len(),
            "recorded the checksums of migrations applied before checksums were kept"
        );
    }
    let current = applied.last().map_or(0, |(v, _)| *v);
    let mut latest = current;
    for m in migrations.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql))
            .execute(&mut *tx)
            .await
            .map_err(|source| Error::Migration {
                version: m.version,
                source: source.into(),
            })?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, service, applied_at, checksum)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(service)
        .bind(clock.now_micros())
        .bind(m.checksum())
        .execute(&mut *tx)
        .await?;
        latest = m.version;
    }
    tx.commit().await?;
    Ok((current, latest))
}

/// A 64-bit FNV-1a hash, for advisory lock keys: stable across builds and releases, so
/// replicas of different versions (a rolling upgrade) still take the same lock for a name.
pub(crate) fn lock_key(namespace: &str, parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(namespace.as_bytes());
    for p in parts {
        // A separator no name contains keeps ("a", "bc") and ("ab", "c") apart.
        eat(&[0xff]);
        eat(p.as_bytes());
    }
    h as i64
}

/// Inserts events into the outbox with one statement, created at `now`.
pub(crate) async fn enqueue_all(
    conn: &mut PgConnection,
    events: &[OutboxEvent],
    now: i64,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    use sqlx::postgres::PgBindIterExt;
    sqlx::query(
        "INSERT INTO outbox (id, stream, subject, payload, created_at)
         SELECT id, stream, subject, payload, $5
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS e(id, stream, subject, payload)",
    )
    .bind(events.iter().map(|e| &e.id).bind_iter())
    .bind(events.iter().map(|e| &e.stream).bind_iter())
    .bind(events.iter().map(|e| &e.subject).bind_iter())
    .bind(events.iter().map(|e| &e.payload).bind_iter())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts one event into the outbox, created at `now`.
pub(crate) async fn enqueue(conn: &mut PgConnection, event: &OutboxEvent, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, stream, subject, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.id)
    .bind(&event.stream)
    .bind(&event.subject)
    .bind(&event.payload)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn outbox_pending(pool: &PgPool, limit: u32) -> Result<Vec<OutboxRecord>> {
    let rows = sqlx::query(
        "SELECT seq, id, stream, subject, payload FROM outbox WHERE published_at IS NULL
         ORDER BY seq LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(OutboxRecord {
                seq: r.try_get("seq")?,
                event: OutboxEvent {
                    id: r.try_get("id")?,
                    stream: r.try_get("stream")?,
                    subject: r.try_get("subject")?,
                    payload: r.try_get("payload")?,
                },
            })
        })
        .collect()
}

/// Marks events published at `now`. Several relays may mark the same rows; the first mark
/// stands.
pub(crate) async fn outbox_mark(pool: &PgPool, seqs: &[i64], now: i64) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq = ANY($2) AND published_at IS NULL")
        .bind(now)
        .bind(seqs)
        .execute(pool)
        .await?;
    // Published rows are kept a day for operators, then swept, about once per 4096 events.
    let crossed = seqs.iter().any(|s| s % 4096 == 0)
        || seqs
            .first()
            .zip(seqs.last())
            .is_some_and(|(a, b)| b / 4096 != a / 4096);
    if crossed {
        sqlx::query("DELETE FROM outbox WHERE published_at < $1")
            .bind(now - 86_400_000_000)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Maps a unique-constraint violation to `Error::Conflict`.
pub(crate) fn conflict(e: sqlx::Error, what: &str) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(what.to_owned()),
        _ => Error::Database(e),
    }
}

/// Reads a BIGINT column holding a count or level the records keep as `u32`.
/// Reads a column holding a state's name (`IncidentState`, `RunState`…): an unknown name is
/// a corrupt row naming the column, never a default.
pub(crate) fn named<T>(r: &sqlx::postgres::PgRow, column: &str) -> Result<T>
where
    T: std::str::FromStr<Err = firebreak_domain::Error>,
{
    let text: String = r.try_get(column)?;
    text.parse()
        .map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn get_u32(r: &sqlx::postgres::PgRow, column: &str) -> Result<u32> {
    let v: i64 = r.try_get(column)?;
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("{column} = {v} is out of range")))
}

macro_rules! impl_outbox {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::Outbox for $store {
            async fn pending(&self, limit: u32) -> crate::Result<Vec<crate::OutboxRecord>> {
                super::outbox_pending(&self.pool, limit).await
            }
            async fn mark_published(&self, seqs: &[i64]) -> crate::Result<()> {
                super::outbox_mark(&self.pool, seqs, self.clock.now_micros()).await
            }
            async fn ping(&self) -> crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_outbox;

/// `connect`, `connect_with` and `connect_with_clock` for a store with fields `pool` and
/// `clock`, on the database of `$service`, migrated by `$migrations`.
macro_rules! impl_connect {
    ($store:ty, $service:literal, $migrations:expr) => {
        impl $store {
            /// Connects to the database `url` names, creating and migrating it as needed.
            pub async fn connect(url: &str) -> crate::Result<Self> {
                Self::connect_with(url, super::MAX_CONNECTIONS).await
            }

            /// [`Self::connect`] with a pool of at most `max_connections`; rows are stamped by
            /// the system clock.
            pub async fn connect_with(url: &str, max_connections: u32) -> crate::Result<Self> {
                let clock = std::sync::Arc::new(firebreak_domain::SystemClock);
                Self::connect_with_clock(url, max_connections, clock).await
            }

            /// [`Self::connect_with`] with rows stamped by `clock`, the clock the services read.
            pub async fn connect_with_clock(
                url: &str,
                max_connections: u32,
                clock: std::sync::Arc<dyn firebreak_domain::Clock>,
            ) -> crate::Result<Self> {
                Self::connect_with_schema(url, max_connections, clock, super::Schema::Migrate).await
            }

            /// [`Self::connect_with_clock`], migrating the database or only checking that it
            /// was migrated, as `schema` says.
            pub async fn connect_with_schema(
                url: &str,
                max_connections: u32,
                clock: std::sync::Arc<dyn firebreak_domain::Clock>,
                schema: super::Schema,
            ) -> crate::Result<Self> {
                let pool = super::open(
                    url,
                    $service,
                    $migrations,
                    max_connections,
                    clock.as_ref(),
                    schema,
                )
                .await?;
                Ok(Self { pool, clock })
            }

            /// Creates the database `url` names if needed and applies this service's
            /// migrations, then lets go of it (`firebreak migrate`).
            pub async fn migrate(
                url: &str,
                clock: &dyn firebreak_domain::Clock,
            ) -> crate::Result<super::Migrated> {
                super::migrate_database(url, $service, $migrations, clock).await
            }
        }
    };
}
pub(crate) use impl_connect;

#[cfg(test)]
mod tests {
    use firebreak_domain::SystemClock;

    use super::*;
    use crate::migration::testing::{assert_refused_edit, checksums};

    #[test]
    fn lock_keys_are_stable_and_keep_parts_apart() {
        // Fixed value: replicas of different builds must agree on it.
        assert_eq!(lock_key("", &[]), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(lock_key("k", &["a", "bc"]), lock_key("k", &["ab", "c"]));
        assert_ne!(lock_key("k", &["a"]), lock_key("i", &["a"]));
    }

    const APPLIED: &[Migration] = &[
        Migration {
            version: 1,
            sql: "CREATE TABLE t (n BIGINT PRIMARY KEY);",
        },
        Migration {
            version: 2,
            sql: "CREATE TABLE u (n BIGINT PRIMARY KEY);",
        },
    ];

    /// `APPLIED` with version 2's text edited after it was applied.
    const EDITED: &[Migration] = &[
        Migration {
            version: 1,
            sql: "CREATE TABLE t (n BIGINT PRIMARY KEY);",
        },
        Migration {
            version: 2,
            sql: "CREATE TABLE u (n BIGINT PRIMARY KEY, m TEXT);",
        },
    ];

    /// The checksums the bookkeeping table holds, by version.
    async fn recorded(url: &str) -> Vec<(i64, Option<String>)> {
        let mut c = PgConnection::connect(url).await.unwrap();
        let rows =
            sqlx::query_as("SELECT version, checksum FROM schema_migrations ORDER BY version")
                .fetch_all(&mut c)
                .await
                .unwrap();
        let _ = c.close().await;
        rows
    }

    /// Opening with a migration edited since it was applied is refused, naming the service,
    /// the version and both checksums; the texts as applied open as before.
    #[tokio::test]
    async fn an_edited_applied_migration_is_refused_at_start() {
        let db = firebreak_testkit::postgres::TestDatabase::create().await;
        open(&db.url, "triage", APPLIED, 2, &SystemClock, Schema::Migrate)
            .await
            .unwrap()
            .close()
            .await;
        assert_eq!(recorded(&db.url).await, checksums(APPLIED));

        let refused = open(&db.url, "triage", EDITED, 2, &SystemClock, Schema::Migrate)
            .await
            .err();
        assert_refused_edit(refused.as_ref(), "triage", &APPLIED[1], &EDITED[1]);
        // Refusing changed nothing.
        assert_eq!(recorded(&db.url).await, checksums(APPLIED));

        let pool = open(&db.url, "triage", APPLIED, 2, &SystemClock, Schema::Migrate)
            .await
            .unwrap();
        sqlx::query("SELECT n FROM u").execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// A database migrated before checksums were kept (a bookkeeping table without the
    /// column, or rows without a value) has them recorded from the code at start, and is held
    /// to them from then on.
    #[tokio::test]
    async fn migrations_applied_before_checksums_are_backfilled_not_refused() {
        for before in [
            "ALTER TABLE schema_migrations DROP COLUMN checksum",
            "UPDATE schema_migrations SET checksum = NULL",
        ] {
            let db = firebreak_testkit::postgres::TestDatabase::create().await;
            open(
                &db.url,
                "intake",
                &APPLIED[..1],
                2,
                &SystemClock,
                Schema::Migrate,
            )
            .await
            .unwrap()
            .close()
            .await;
            let mut c = PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(before).execute(&mut c).await.unwrap();
            let _ = c.close().await;

            open(&db.url, "intake", APPLIED, 2, &SystemClock, Schema::Migrate)
                .await
                .unwrap()
                .close()
                .await;
            assert_eq!(recorded(&db.url).await, checksums(APPLIED), "{before}");
            let refused = open(&db.url, "intake", EDITED, 2, &SystemClock, Schema::Migrate)
                .await
                .err();
            assert!(
                matches!(refused, Some(Error::MigrationEdited { version: 2, .. })),
                "{before}: {refused:?}"
            );
        }
    }

    /// Without migrating (`Schema::Require`), opening changes nothing and is refused until
    /// `migrate_database` (what `firebreak migrate` runs) applied every migration the build
    /// knows; a database a newer build migrated further opens, an edited migration does not.
    #[tokio::test]
    async fn a_required_schema_is_checked_and_migrate_applies_it() {
        let db = firebreak_testkit::postgres::TestDatabase::create().await;
        let require = |url: String, migrations: &'static [Migration]| async move {
            open(&url, "triage", migrations, 2, &SystemClock, Schema::Require)
                .await
                .map(drop)
        };
        let not_migrated = |r: Result<()>| match r {
            Err(Error::NotMigrated {
                service,
                applied,
                required,
            }) => (service, applied, required),
            other => panic!("not refused as not migrated: {other:?}"),
        };

        // A database nobody created is not created.
        let missing = db.url_for("missing");
        assert_eq!(
            not_migrated(require(missing.clone(), APPLIED).await),
            ("triage".to_owned(), None, 2)
        );
        let e = require(missing.clone(), APPLIED)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("triage database does not exist") && e.contains("firebreak migrate"),
            "{e}"
        );
        let mut c = PgConnection::connect(&db.url).await.unwrap();
        let created: bool =
            sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(format!("{}_missing", db.name))
                .fetch_one(&mut c)
                .await
                .unwrap()
                .get(0);
        assert!(!created);

        // An empty database, then one a migration behind.
        assert_eq!(
            not_migrated(require(db.url.clone(), APPLIED).await),
            ("triage".to_owned(), Some(0), 2)
        );
        let url = db.url.clone();
        let m = migrate_database(&url, "triage", &APPLIED[..1], &SystemClock)
            .await
            .unwrap();
        assert_eq!((m.service, m.from, m.to), ("triage", 0, 1));
        let e = require(db.url.clone(), APPLIED).await.unwrap_err();
        assert_eq!(not_migrated(Err(e)), ("triage".to_owned(), Some(1), 2));
        let u: bool = sqlx::query("SELECT to_regclass('u') IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get(0);
        assert!(!u, "a required schema was migrated");

        // Migrated: it opens, again and again; a second migrate applies nothing.
        let m = migrate_database(&url, "triage", APPLIED, &SystemClock)
            .await
            .unwrap();
        assert_eq!((m.from, m.to), (1, 2));
        require(db.url.clone(), APPLIED).await.unwrap();
        let m = migrate_database(&url, "triage", APPLIED, &SystemClock)
            .await
            .unwrap();
        assert_eq!((m.from, m.to), (2, 2));
        // An older build (a rolling upgrade's old replicas) opens a newer schema.
        require(db.url.clone(), &APPLIED[..1]).await.unwrap();
        // An edited migration, or another service's database, is refused as when migrating.
        let refused = require(db.url.clone(), EDITED).await.err();
        assert_refused_edit(refused.as_ref(), "triage", &APPLIED[1], &EDITED[1]);
        let other = open(&db.url, "intake", APPLIED, 2, &SystemClock, Schema::Require)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            other.contains("holds the triage service's tables"),
            "{other}"
        );
        let _ = c.close().await;
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("fb_test"), "\"fb_test\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
