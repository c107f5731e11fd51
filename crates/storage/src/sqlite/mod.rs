//! The SQLite adapter: one database file per service, WAL, embedded migrations; each file is
//! served by connections on threads of their own (`conn`).

mod bus;
mod conn;
mod follow_ups;
mod intake;
mod notification;
mod orchestration;
mod triage;

pub use bus::SqliteBusLog;
pub use intake::SqliteIntakeStore;
pub use notification::SqliteNotificationStore;
pub use orchestration::SqliteOrchestrationStore;
pub use triage::SqliteTriageStore;

use crate::{Error, Result};

pub(crate) use crate::migration::Migration;

/// The outbox every service database carries.
const OUTBOX: &str = "
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
";

/// The outbox as the embedded bus reads it in place ([`crate::OutboxLog`]): without the
/// unique index on event ids (they are generated, and consumers dedupe on them anyway) and
/// the index of unpublished rows (nothing marks rows published any more), which cost two
/// index writes an event. The AUTOINCREMENT high-water mark carries over, so no sequence
/// number is used twice.
const OUTBOX_READ_IN_PLACE: &str = "
CREATE TABLE outbox_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    stream TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    published_at INTEGER
);
INSERT INTO outbox_v2 SELECT seq, id, stream, subject, payload, created_at, published_at FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v2', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
";

/// Published outbox rows are kept a day for operators, then swept.
pub(crate) const OUTBOX_KEPT_MICROS: i64 = 86_400_000_000;

/// Whether marking `seqs` published should sweep old rows too. The sweep scans the table, so
/// it runs about once per 4096 events rather than on every mark.
pub(crate) fn sweep_due(seqs: &[i64]) -> bool {
    seqs.iter().any(|s| s % 4096 == 0)
        || seqs
            .first()
            .zip(seqs.last())
            .is_some_and(|(a, b)| b / 4096 != a / 4096)
}

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Reads a column holding a state's name (`IncidentState`, `RunState`…): an unknown name is
/// a corrupt row naming the field, never a default.
pub(crate) fn named<T, I>(r: &rusqlite::Row<'_>, column: I) -> rusqlite::Result<T>
where
    T: std::str::FromStr<Err = firebreak_domain::Error>,
    I: rusqlite::RowIndex,
{
    let text: String = r.get(column)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(e.to_string()))
}

/// The `Outbox` of a store on a [`conn::Db`] field named `db`.
macro_rules! impl_outbox {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::Outbox for $store {
            async fn pending(&self, limit: u32) -> crate::Result<Vec<crate::OutboxRecord>> {
                super::conn::outbox_pending(&self.db, limit).await
            }
            async fn mark_published(&self, seqs: &[i64]) -> crate::Result<()> {
                super::conn::outbox_mark(&self.db, seqs).await
            }
            async fn ping(&self) -> crate::Result<()> {
                self.db
                    .read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
                    .await
            }
        }

        #[async_trait::async_trait]
        impl crate::OutboxLog for $store {
            async fn since(
                &self,
                stream: &str,
                after: i64,
                limit: u32,
            ) -> crate::Result<Vec<crate::OutboxRecord>> {
                super::conn::outbox_since(&self.db, stream, after, limit).await
            }
            async fn start(&self) -> crate::Result<i64> {
                super::conn::outbox_start(&self.db).await
            }
            async fn head(&self) -> crate::Result<i64> {
                super::conn::outbox_head(&self.db).await
            }
            async fn sweep(&self, stream: &str, upto: i64) -> crate::Result<()> {
                super::conn::outbox_sweep(&self.db, stream, upto).await
            }
            async fn count_since(&self, stream: &str, after: i64, cap: u64) -> crate::Result<u64> {
                super::conn::outbox_count_since(&self.db, stream, after, cap).await
            }
        }
    };
}
pub(crate) use impl_outbox;

/// `open` and `open_with_clock` for a store on a [`conn::Db`] field named `db`, migrated by
/// `$migrations`; each `on_open` statement, then the `upgrade` step (a function of the write
/// connection, for what SQL alone cannot do; it must be idempotent, as it runs at every
/// open), runs in one write before the store is handed out.
macro_rules! impl_open {
    ($store:ty, $migrations:expr $(, on_open: $sql:expr)? $(, upgrade: $step:path)?) => {
        impl $store {
            /// Opens `path`, creating and migrating it as needed; rows are stamped by the
            /// system clock.
            pub async fn open(path: &std::path::Path, durable_fsync: bool) -> crate::Result<Self> {
                let clock = std::sync::Arc::new(firebreak_domain::SystemClock);
                Self::open_with_clock(path, durable_fsync, clock).await
            }

            /// [`Self::open`] with rows stamped by `clock`, the clock the services read.
            pub async fn open_with_clock(
                path: &std::path::Path,
                durable_fsync: bool,
                clock: std::sync::Arc<dyn firebreak_domain::Clock>,
            ) -> crate::Result<Self> {
                let db = super::conn::Db::open(path, $migrations, durable_fsync, clock).await?;
                $(
                    db.write(|tx| {
                        tx.execute($sql, [])?;
                        Ok(())
                    })
                    .await?;
                )?
                $(
                    db.write($step).await?;
                )?
                Ok(Self { db })
            }
        }
    };
}
pub(crate) use impl_open;
