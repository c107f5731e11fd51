//! The embedded bus's durable log in SQLite: streams, consumer cursors, parked messages.

use async_trait::async_trait;
use firebreak_domain::Micros;

use super::conn::Db;
use super::{Migration, impl_open};
use crate::{BusLog, BusMessage, ParkedRecord, Result};

const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    // Streams read in place from their producer's outbox: a cursor per consumer in the
    // outbox's sequence numbers, and parked events kept as copies (the outbox sweeps its own).
    Migration {
        version: 2,
        sql: "
CREATE TABLE outbox_cursors (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream)
);
CREATE TABLE parked_events (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    error TEXT NOT NULL,
    parked_at INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (consumer, stream, seq)
);
",
    },
];

/// The embedded bus's log on SQLite.
#[derive(Clone)]
pub struct SqliteBusLog {
    db: Db,
}

impl_open!(SqliteBusLog, MIGRATIONS);

const APPEND: &str = "INSERT INTO messages (stream, id, subject, payload, appended_at)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING";

const MOVE_OUTBOX_CURSOR: &str =
    "INSERT INTO outbox_cursors (consumer, stream, seq) VALUES (?, ?, ?)
    ON CONFLICT (consumer, stream) DO UPDATE SET seq = MAX(seq, excluded.seq)";

const MOVE_CURSOR: &str = "INSERT INTO cursors (consumer, stream, acked_seq) VALUES (?, ?, ?)
    ON CONFLICT (consumer, stream) DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)";

#[async_trait]
impl BusLog for SqliteBusLog {
    async fn append(&self, stream: &str, m: &BusMessage) -> Result<bool> {
        let (stream, m) = (stream.to_owned(), m.clone());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let n = tx.prepare_cached(APPEND)?.execute((
                    &stream,
                    &m.id,
                    &m.subject,
                    &m.payload,
                    clock.now_micros(),
                ))?;
                Ok(n == 1)
            })
            .await
    }

    async fn append_batch(&self, batch: &[(String, BusMessage)]) -> Result<u64> {
        let batch = batch.to_vec();
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let now = clock.now_micros();
                let mut append = tx.prepare_cached(APPEND)?;
                let mut appended = 0;
                for (stream, m) in &batch {
                    appended += append.execute((stream, &m.id, &m.subject, &m.payload, now))?;
                }
                Ok(appended as u64)
            })
            .await
    }

    async fn fetch(
        &self,
        consumer: &str,
        stream: &str,
        limit: u32,
    ) -> Result<Vec<(i64, BusMessage)>> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        self.db
            .read(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT seq, id, subject, payload FROM messages
                     WHERE stream = ?1 AND seq > COALESCE(
                        (SELECT acked_seq FROM cursors WHERE consumer = ?2 AND stream = ?1), 0)
                     ORDER BY seq LIMIT ?3",
                )?;
                let rows = q.query_map((&stream, &consumer, i64::from(limit)), |r| {
                    Ok((
                        r.get(0)?,
                        BusMessage {
                            id: r.get(1)?,
                            subject: r.get(2)?,
                            payload: r.get(3)?,
                        },
                    ))
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn ack(&self, consumer: &str, stream: &str, seq: i64) -> Result<()> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached(MOVE_CURSOR)?
                    .execute((&consumer, &stream, seq))?;
                Ok(())
            })
            .await
    }

    async fn park(&self, consumer: &str, stream: &str, seq: i64, error: &str) -> Result<()> {
        let (consumer, stream, error) = (consumer.to_owned(), stream.to_owned(), error.to_owned());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO parked (consumer, stream, seq, error, parked_at) VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT DO NOTHING",
                    (&consumer, &stream, seq, &error, clock.now_micros()),
                )?;
                tx.execute(MOVE_CURSOR, (&consumer, &stream, seq))?;
                Ok(())
            })
            .await
    }

    async fn parked(&self) -> Result<Vec<ParkedRecord>> {
        self.db
            .read(|c| {
                let mut q = c.prepare(
                    "SELECT p.consumer, p.stream, p.seq, p.error, p.parked_at, m.id, m.subject
                     FROM parked p JOIN messages m ON m.seq = p.seq
                     UNION ALL
                     SELECT consumer, stream, seq, error, parked_at, message_id, subject
                     FROM parked_events
                     ORDER BY 5",
                )?;
                let rows = q.query_map([], |r| {
                    Ok(ParkedRecord {
                        consumer: r.get(0)?,
                        stream: r.get(1)?,
                        seq: r.get(2)?,
                        error: r.get(3)?,
                        parked_at: Micros::from_unix_micros(r.get(4)?),
                        message_id: r.get(5)?,
                        subject: r.get(6)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn outbox_cursor(&self, consumer: &str, stream: &str) -> Result<Option<i64>> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        self.db
            .read(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT seq FROM outbox_cursors WHERE consumer = ? AND stream = ?",
                )?;
                let mut rows = q.query_map((&consumer, &stream), |r| r.get(0))?;
                Ok(rows.next().transpose()?)
            })
            .await
    }

    async fn move_outbox_cursor(&self, consumer: &str, stream: &str, seq: i64) -> Result<()> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached(MOVE_OUTBOX_CURSOR)?
                    .execute((&consumer, &stream, seq))?;
                Ok(())
            })
            .await
    }

    async fn min_outbox_cursor(&self, stream: &str) -> Result<Option<i64>> {
        let stream = stream.to_owned();
        self.db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT MIN(seq) FROM outbox_cursors WHERE stream = ?",
                    [&stream],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    async fn park_event(
        &self,
        consumer: &str,
        stream: &str,
        seq: i64,
        msg: &BusMessage,
        error: &str,
    ) -> Result<()> {
        let (consumer, stream, error, msg) = (
            consumer.to_owned(),
            stream.to_owned(),
            error.to_owned(),
            msg.clone(),
        );
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO parked_events
                        (consumer, stream, seq, error, parked_at, message_id, subject, payload)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        &consumer,
                        &stream,
                        seq,
                        &error,
                        clock.now_micros(),
                        &msg.id,
                        &msg.subject,
                        &msg.payload,
                    ),
                )?;
                tx.execute(MOVE_OUTBOX_CURSOR, (&consumer, &stream, seq))?;
                Ok(())
            })
            .await
    }
    async fn count_unacked(&self, consumer: &str, stream: &str, cap: u64) -> Result<u64> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                let n: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM (SELECT 1 FROM messages
                         WHERE stream = ?1 AND seq > COALESCE(
                            (SELECT acked_seq FROM cursors WHERE consumer = ?2 AND stream = ?1), 0)
                         LIMIT ?3)",
                    )?
                    .query_row((&stream, &consumer, cap), |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn count_parked(&self, consumer: &str, stream: &str) -> Result<u64> {
        let (consumer, stream) = (consumer.to_owned(), stream.to_owned());
        self.db
            .read(move |c| {
                let n: i64 = c
                    .prepare_cached(
                        "SELECT (SELECT count(*) FROM parked WHERE consumer = ?1 AND stream = ?2)
                              + (SELECT count(*) FROM parked_events WHERE consumer = ?1 AND stream = ?2)",
                    )?
                    .query_row((&consumer, &stream), |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await
    }
}
