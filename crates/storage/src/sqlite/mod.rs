//! The SQLite adapter: one database file per service, WAL, embedded migrations; each file is
//! served by connections on threads of their own (`conn`).

mod bus;
mod conn;
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

/// One schema change: applied once, in order, inside a transaction.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sql: &'static str,
}

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

pub(crate) fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_micros() as i64
}

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
    };
}
pub(crate) use impl_outbox;
