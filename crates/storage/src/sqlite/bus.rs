//! The embedded bus's durable log in SQLite: streams, consumer cursors, parked messages.

use std::path::Path;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{Migration, now_micros};
use crate::{BusLog, BusMessage, ParkedRecord, Result};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    appended_at INTEGER NOT NULL
);
CREATE INDEX messages_stream ON messages (stream, seq);
CREATE TABLE cursors (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    acked_seq INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream)
);
CREATE TABLE parked (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    error TEXT NOT NULL,
    parked_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream, seq)
);
",
}];

/// The embedded bus's log on SQLite.
#[derive(Clone)]
pub struct SqliteBusLog {
    pool: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteBusLog {
    /// Opens `path`, creating and migrating it as needed.
    pub async fn open(path: &Path, durable_fsync: bool) -> Result<Self> {
        let (pool, write) = super::open(path, MIGRATIONS, durable_fsync).await?;
        Ok(Self { pool, write })
    }
}

#[async_trait]
impl BusLog for SqliteBusLog {
    async fn append(&self, stream: &str, m: &BusMessage) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO messages (stream, id, subject, payload, appended_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(stream)
        .bind(&m.id)
        .bind(&m.subject)
        .bind(&m.payload)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_batch(&self, batch: &[(String, BusMessage)]) -> Result<u64> {
        let now = now_micros();
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut appended = 0;
        for chunk in batch.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO messages (stream, id, subject, payload, appended_at) ",
            );
            q.push_values(chunk, |mut b, (stream, m)| {
                b.push_bind(stream)
                    .push_bind(&m.id)
                    .push_bind(&m.subject)
                    .push_bind(&m.payload)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            appended += q.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(appended)
    }

    async fn fetch(
        &self,
        consumer: &str,
        stream: &str,
        limit: u32,
    ) -> Result<Vec<(i64, BusMessage)>> {
        let rows = sqlx::query(
            "SELECT seq, id, subject, payload FROM messages
             WHERE stream = ? AND seq > COALESCE((SELECT acked_seq FROM cursors WHERE consumer = ? AND stream = ?), 0)
             ORDER BY seq LIMIT ?",
        )
        .bind(stream)
        .bind(consumer)
        .bind(stream)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("seq")?,
                    BusMessage {
                        id: r.try_get("id")?,
                        subject: r.try_get("subject")?,
                        payload: r.try_get("payload")?,
                    },
                ))
            })
            .collect()
    }

    async fn ack(&self, consumer: &str, stream: &str, seq: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO cursors (consumer, stream, acked_seq) VALUES (?, ?, ?)
             ON CONFLICT (consumer, stream) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
        )
        .bind(consumer)
        .bind(stream)
        .bind(seq)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn park(&self, consumer: &str, stream: &str, seq: i64, error: &str) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO parked (consumer, stream, seq, error, parked_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(stream)
        .bind(seq)
        .bind(error)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO cursors (consumer, stream, acked_seq) VALUES (?, ?, ?)
             ON CONFLICT (consumer, stream) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
        )
        .bind(consumer)
        .bind(stream)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<ParkedRecord>> {
        let rows = sqlx::query(
            "SELECT p.consumer, p.stream, p.seq, p.error, p.parked_at, m.id, m.subject
             FROM parked p JOIN messages m ON m.seq = p.seq ORDER BY p.parked_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ParkedRecord {
                    consumer: r.try_get("consumer")?,
                    stream: r.try_get("stream")?,
                    seq: r.try_get("seq")?,
                    message_id: r.try_get("id")?,
                    subject: r.try_get("subject")?,
                    error: r.try_get("error")?,
                    parked_at: r.try_get("parked_at")?,
                })
            })
            .collect()
    }
}
