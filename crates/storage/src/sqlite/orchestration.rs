//! Orchestration's tables in SQLite: runs, the run journal and run logs.

use std::path::Path;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{Migration, OUTBOX, enqueue, from_json, impl_outbox, json_text, now_micros};
use crate::{JournalRecord, OrchestrationStore, OutboxEvent, Result, RunRecord};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: OUTBOX,
    },
    Migration {
        version: 2,
        sql: "
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    runbook TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    state TEXT NOT NULL,
    live INTEGER NOT NULL,
    error TEXT NOT NULL,
    input TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    -- At most one run of a runbook per incident.
    UNIQUE (runbook, incident_id)
);
CREATE INDEX runs_incident ON runs (incident_id);
CREATE TABLE journal (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    args_digest TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE run_log (
    run_id TEXT NOT NULL REFERENCES runs (id),
    n INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, n)
);
",
    },
    Migration {
        version: 3,
        sql: "
ALTER TABLE runs ADD COLUMN phase TEXT NOT NULL DEFAULT 'apply';
ALTER TABLE runs ADD COLUMN plan TEXT NOT NULL DEFAULT 'null';
ALTER TABLE runs ADD COLUMN wake_at INTEGER;
CREATE INDEX runs_state ON runs (state, wake_at);
",
    },
    // Replicas lease the runs they execute.
    Migration {
        version: 4,
        sql: "
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
",
    },
];

/// Orchestration's store on SQLite.
#[derive(Clone)]
pub struct SqliteOrchestrationStore {
    pool: SqlitePool,
    /// The one connection that writes.
    write: SqlitePool,
}

impl SqliteOrchestrationStore {
    /// Opens `path`, creating and migrating it as needed.
    pub async fn open(path: &Path, durable_fsync: bool) -> Result<Self> {
        let (pool, write) = super::open(path, MIGRATIONS, durable_fsync).await?;
        // An embedded database belongs to one process (the app locks its data directory):
        // a lease found here was left by a crashed process and is void.
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
        )
        .execute(&write)
        .await?;
        Ok(Self { pool, write })
    }
}

impl_outbox!(SqliteOrchestrationStore);

#[async_trait]
impl OrchestrationStore for SqliteOrchestrationStore {
    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<u32> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let mut created = 0;
        for (r, event) in runs {
            let done = sqlx::query(
                "INSERT INTO runs (id, runbook, incident_id, state, live, error, input, started_at, finished_at, phase, plan, wake_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (runbook, incident_id) DO NOTHING",
            )
            .bind(&r.id)
            .bind(&r.runbook)
            .bind(&r.incident_id)
            .bind(&r.state)
            .bind(r.live)
            .bind(&r.error)
            .bind(json_text(&r.input)?)
            .bind(r.started_at)
            .bind(r.finished_at)
            .bind(&r.phase)
            .bind(json_text(&r.plan)?)
            .bind(r.wake_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                enqueue(&mut tx, event).await?;
                created += 1;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| run_row(&r))
            .transpose()
    }

    async fn runs(
        &self,
        incident_id: Option<&str>,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(incident_id)
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn due_runs(&self, now: i64) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE state IN ('pending', 'running')
                OR (state IN ('sleeping', 'waiting_approval') AND wake_at <= ?)
             ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn lease_run(&self, id: &str, owner: &str, until: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = ?1, lease_until = ?2
             WHERE id = ?3 AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until < ?4)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_run(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn transition(
        &self,
        r: &RunRecord,
        from: &str,
        journal: Option<&JournalRecord>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE runs SET state = ?, phase = ?, plan = ?, wake_at = ?, error = ?, finished_at = ?
             WHERE id = ? AND state = ?",
        )
        .bind(&r.state)
        .bind(&r.phase)
        .bind(json_text(&r.plan)?)
        .bind(r.wake_at)
        .bind(&r.error)
        .bind(r.finished_at)
        .bind(&r.id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(j) = journal {
            put_journal(&mut tx, j).await?;
        }
        for e in events {
            enqueue(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn set_run_state(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
        events: &[OutboxEvent],
    ) -> Result<()> {
        let finished = matches!(state, "succeeded" | "failed" | "rejected").then(now_micros);
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE runs SET state = ?, error = COALESCE(?, error), finished_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(error)
        .bind(finished)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        for e in events {
            enqueue(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalRecord>> {
        let rows = sqlx::query("SELECT * FROM journal WHERE run_id = ? ORDER BY seq")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JournalRecord {
                    run_id: r.try_get("run_id")?,
                    seq: r.try_get::<i64, _>("seq")? as u32,
                    action: r.try_get("action")?,
                    args: from_json(r.try_get("args")?)?,
                    args_digest: r.try_get("args_digest")?,
                    status: r.try_get("status")?,
                    result: from_json(r.try_get("result")?)?,
                    idempotency_key: r.try_get("idempotency_key")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    async fn put_journal(&self, j: &JournalRecord, events: &[OutboxEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        put_journal(&mut tx, j).await?;
        for e in events {
            enqueue(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn append_log(&self, run_id: &str, lines: &[String]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(n), 0) FROM run_log WHERE run_id = ?")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        for (i, line) in lines.iter().enumerate() {
            sqlx::query("INSERT INTO run_log (run_id, n, line) VALUES (?, ?, ?)")
                .bind(run_id)
                .bind(next + 1 + i as i64)
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log(&self, run_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT line FROM run_log WHERE run_id = ? ORDER BY n")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// Writes a journal entry, or replaces the status, result and attempts of a step that was
/// waiting or sleeping.
async fn put_journal(tx: &mut sqlx::SqliteConnection, j: &JournalRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO journal (run_id, seq, action, args, args_digest, status, result, idempotency_key, attempts, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, result = excluded.result,
            attempts = excluded.attempts, at = excluded.at",
    )
    .bind(&j.run_id)
    .bind(i64::from(j.seq))
    .bind(&j.action)
    .bind(json_text(&j.args)?)
    .bind(&j.args_digest)
    .bind(&j.status)
    .bind(json_text(&j.result)?)
    .bind(&j.idempotency_key)
    .bind(i64::from(j.attempts))
    .bind(j.at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn run_row(r: &SqliteRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.try_get("id")?,
        runbook: r.try_get("runbook")?,
        incident_id: r.try_get("incident_id")?,
        state: r.try_get("state")?,
        live: r.try_get("live")?,
        error: r.try_get("error")?,
        input: from_json(r.try_get("input")?)?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        phase: r.try_get("phase")?,
        plan: from_json(r.try_get("plan")?)?,
        wake_at: r.try_get("wake_at")?,
    })
}
