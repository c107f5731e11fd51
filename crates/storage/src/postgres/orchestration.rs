//! Orchestration's tables in Postgres: runs (with the lease of the replica executing each),
//! the run journal and run logs.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgBindIterExt, PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::named;
use super::{
    Migration, OUTBOX, enqueue_all, from_json, get_u32, impl_connect, impl_outbox, json_text,
    lock_key,
};
use firebreak_domain::{Clock, Micros, RunState};

use crate::{JournalRecord, OrchestrationStore, OutboxEvent, Result, RunQuery, RunRecord};
use futures::TryStreamExt;

/// The Postgres schema starts where SQLite's stands today (its version 4).
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
    live BOOLEAN NOT NULL,
    error TEXT NOT NULL,
    input TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    phase TEXT NOT NULL DEFAULT 'apply',
    plan TEXT NOT NULL DEFAULT 'null',
    wake_at BIGINT,
    -- The replica executing the run, and until when (micros) it holds it.
    lease_owner TEXT,
    lease_until BIGINT,
    -- At most one run of a runbook per incident.
    UNIQUE (runbook, incident_id)
);
CREATE INDEX runs_incident ON runs (incident_id);
CREATE INDEX runs_state ON runs (state, wake_at);
CREATE TABLE journal (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq BIGINT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    args_digest TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE run_log (
    run_id TEXT NOT NULL REFERENCES runs (id),
    n BIGINT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, n)
);
",
    },
    // Executions begun since the run last stopped cleanly (`begin_attempt`).
    Migration {
        version: 3,
        sql: "ALTER TABLE runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;",
    },
    // The trace a run continues, whenever and wherever it executes.
    Migration {
        version: 4,
        sql: "ALTER TABLE runs ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
    },
];

/// The namespace of the advisory lock that orders appends to one run's log.
const RUN_LOG_LOCK: &str = "orchestration.run_log";

/// Orchestration's store on Postgres.
#[derive(Clone)]
pub struct PgOrchestrationStore {
    pool: PgPool,
    /// What rows are stamped with (`created_at`, `processed_at`…): the services' clock.
    clock: Arc<dyn Clock>,
}

impl_connect!(PgOrchestrationStore, "orchestration", MIGRATIONS);

impl_outbox!(PgOrchestrationStore);

#[async_trait]
impl OrchestrationStore for PgOrchestrationStore {
    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<u32> {
        if runs.is_empty() {
            return Ok(0);
        }
        let mut inputs = Vec::with_capacity(runs.len());
        let mut plans = Vec::with_capacity(runs.len());
        for (r, _) in runs {
            inputs.push(json_text(&r.input)?);
            plans.push(json_text(&r.plan)?);
        }
        let mut tx = self.pool.begin().await?;
        // A replica creating the same run at the same moment makes this wait for its
        // transaction, then skip the run.
        let rows = sqlx::query(
            "INSERT INTO runs (id, runbook, incident_id, state, live, error, input, started_at,
                finished_at, phase, plan, wake_at, traceparent)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                $6::text[], $7::text[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::int8[],
                $13::text[])
             ON CONFLICT (runbook, incident_id) DO NOTHING
             RETURNING id",
        )
        .bind(runs.iter().map(|(r, _)| &r.id).bind_iter())
        .bind(runs.iter().map(|(r, _)| &r.runbook).bind_iter())
        .bind(runs.iter().map(|(r, _)| &r.incident_id).bind_iter())
        .bind(runs.iter().map(|(r, _)| r.state.as_str()).bind_iter())
        .bind(runs.iter().map(|(r, _)| r.live).bind_iter())
        .bind(runs.iter().map(|(r, _)| &r.error).bind_iter())
        .bind(&inputs)
        .bind(runs.iter().map(|(r, _)| r.started_at.unix_micros()).bind_iter())
        .bind(runs.iter().map(|(r, _)| r.finished_at.map(Micros::unix_micros)).bind_iter())
        .bind(runs.iter().map(|(r, _)| r.phase.as_str()).bind_iter())
        .bind(&plans)
        .bind(runs.iter().map(|(r, _)| r.wake_at.map(Micros::unix_micros)).bind_iter())
        .bind(runs.iter().map(|(r, _)| &r.traceparent).bind_iter())
        .fetch_all(&mut *tx)
        .await?;
        let created = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<std::collections::HashSet<_>, _>>()?;
        // Events in the order of their runs.
        let events: Vec<OutboxEvent> = runs
            .iter()
            .filter(|(r, _)| created.contains(&r.id))
            .map(|(_, e)| e.clone())
            .collect();
        enqueue_all(&mut tx, &events, self.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(created.len() as u32)
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| run_row(&r))
            .transpose()
    }

    async fn runs_page(
        &self,
        query: &RunQuery<'_>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<RunRecord>> {
        let sql = if query.oldest_first {
            "SELECT * FROM runs WHERE ($1::text IS NULL OR incident_id = $1)
                AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        } else {
            "SELECT * FROM runs WHERE ($1::text IS NULL OR incident_id = $1)
                AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        };
        let mut rows = sqlx::query(sql)
            .bind(query.incident_id)
            .bind(query.state.map(|s| s.as_str()))
            .bind(query.after)
            .bind(i64::from(limit))
            .fetch(&self.pool);
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        // Rows stream in: past the byte bound the rest are never read.
        while bytes < max_bytes
            && let Some(row) = rows.try_next().await?
        {
            let run = run_row(&row)?;
            bytes += run.wire_size();
            out.push(run);
        }
        Ok(out)
    }

    async fn due_runs(&self, now: Micros) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE state IN ('pending', 'running')
                OR (state IN ('sleeping', 'waiting_approval') AND wake_at <= $1)
             ORDER BY id",
        )
        .bind(now.unix_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_row).collect()
    }

    async fn lease_run(&self, id: &str, owner: &str, until: Micros, now: Micros) -> Result<bool> {
        // Two replicas asking at once: the second waits for the first's row lock, then
        // re-checks the condition against what the first wrote, and is refused. So does a
        // replica asking after the run finished.
        let done = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND state IN ('pending', 'running', 'sleeping')
                AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
        )
        .bind(owner)
        .bind(until.unix_micros())
        .bind(id)
        .bind(now.unix_micros())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew_run(&self, id: &str, owner: &str, until: Micros) -> Result<bool> {
        let done =
            sqlx::query("UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
                .bind(until.unix_micros())
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_run(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn begin_attempt(&self, id: &str, owner: &str) -> Result<Option<u32>> {
        let row = sqlx::query(
            "UPDATE runs SET attempts = attempts + 1
             WHERE id = $1 AND lease_owner = $2 AND state IN ('pending', 'running', 'sleeping')
             RETURNING attempts",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| get_u32(&r, "attempts")).transpose()
    }

    async fn transition(
        &self,
        r: &RunRecord,
        from: RunState,
        journal: Option<&JournalRecord>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Compare-and-set: a concurrent transition of the run makes this wait, then find
        // the state moved on and change nothing.
        let done = sqlx::query(
            "UPDATE runs SET state = $1, phase = $2, plan = $3, wake_at = $4, error = $5, finished_at = $6,
                attempts = CASE WHEN $1 = 'running' THEN attempts ELSE 0 END
             WHERE id = $7 AND state = $8 AND state NOT IN ('succeeded', 'failed', 'rejected')",
        )
        .bind(r.state.as_str())
        .bind(r.phase.as_str())
        .bind(json_text(&r.plan)?)
        .bind(r.wake_at.map(Micros::unix_micros))
        .bind(&r.error)
        .bind(r.finished_at.map(Micros::unix_micros))
        .bind(&r.id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(j) = journal {
            put_journal(&mut tx, j).await?;
        }
        enqueue_all(&mut tx, events, self.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_run_state(
        &self,
        id: &str,
        from: RunState,
        state: RunState,
        error: Option<&str>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        let finished = state.is_finished().then(|| self.clock.now_micros());
        let mut tx = self.pool.begin().await?;
        // Compare-and-set, as `transition`: of two executors finishing the same run, the
        // second waits for the first's row lock, then finds the state moved on.
        let done = sqlx::query(
            "UPDATE runs SET state = $1, error = COALESCE($2, error), finished_at = $3,
                attempts = CASE WHEN $1 = 'running' THEN attempts ELSE 0 END
             WHERE id = $4 AND state = $5 AND state NOT IN ('succeeded', 'failed', 'rejected')",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(finished)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        enqueue_all(&mut tx, events, self.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn journal_page(
        &self,
        run_id: &str,
        after_seq: u32,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<JournalRecord>> {
        let mut rows = sqlx::query(
            "SELECT * FROM journal WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id)
        .bind(i64::from(after_seq))
        .bind(i64::from(limit))
        .fetch(&self.pool);
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while bytes < max_bytes
            && let Some(row) = rows.try_next().await?
        {
            let j = journal_row(&row)?;
            bytes += j.wire_size();
            out.push(j);
        }
        Ok(out)
    }

    async fn waiting_step(&self, run_id: &str) -> Result<Option<JournalRecord>> {
        sqlx::query(
            "SELECT * FROM journal WHERE run_id = $1 AND status = 'waiting'
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(journal_row)
        .transpose()
    }

    async fn put_journal(&self, j: &JournalRecord, events: &[OutboxEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        put_journal(&mut tx, j).await?;
        enqueue_all(&mut tx, events, self.clock.now_micros()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_log(&self, run_id: &str, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // Appends to one run's log take turns (a lease taken over from a process that is
        // slow rather than dead may leave two writers), then number on from the last line
        // in a new statement, which sees what the one before committed.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(RUN_LOG_LOCK, &[run_id]))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO run_log (run_id, n, line)
             SELECT $1, (SELECT COALESCE(MAX(n), 0) FROM run_log WHERE run_id = $1) + u.n, u.line
             FROM unnest($2::text[]) WITH ORDINALITY AS u(line, n)",
        )
        .bind(run_id)
        .bind(lines)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn log(&self, run_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT line FROM run_log WHERE run_id = $1 ORDER BY n")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn count_runs(&self, state: RunState) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = $1")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }
}

/// Writes a journal entry, or replaces the status, result and attempts of a step that was
/// waiting or sleeping.
async fn put_journal(conn: &mut PgConnection, j: &JournalRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO journal (run_id, seq, action, args, args_digest, status, result, idempotency_key, attempts, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, result = excluded.result,
            attempts = excluded.attempts, at = excluded.at",
    )
    .bind(&j.run_id)
    .bind(i64::from(j.seq))
    .bind(&j.action)
    .bind(json_text(&j.args)?)
    .bind(&j.args_digest)
    .bind(j.status.as_str())
    .bind(json_text(&j.result)?)
    .bind(&j.idempotency_key)
    .bind(i64::from(j.attempts))
    .bind(j.at.unix_micros())
    .execute(conn)
    .await?;
    Ok(())
}

fn journal_row(r: &PgRow) -> Result<JournalRecord> {
    Ok(JournalRecord {
        run_id: r.try_get("run_id")?,
        seq: get_u32(r, "seq")?,
        action: r.try_get("action")?,
        args: from_json(r.try_get("args")?)?,
        args_digest: r.try_get("args_digest")?,
        status: named(r, "status")?,
        result: from_json(r.try_get("result")?)?,
        idempotency_key: r.try_get("idempotency_key")?,
        attempts: get_u32(r, "attempts")?,
        at: Micros::from_unix_micros(r.try_get("at")?),
    })
}

fn run_row(r: &PgRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.try_get("id")?,
        runbook: r.try_get("runbook")?,
        incident_id: r.try_get("incident_id")?,
        state: named(r, "state")?,
        live: r.try_get("live")?,
        error: r.try_get("error")?,
        input: from_json(r.try_get("input")?)?,
        started_at: Micros::from_unix_micros(r.try_get("started_at")?),
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at")?
            .map(Micros::from_unix_micros),
        phase: named(r, "phase")?,
        plan: from_json(r.try_get("plan")?)?,
        wake_at: r
            .try_get::<Option<i64>, _>("wake_at")?
            .map(Micros::from_unix_micros),
        traceparent: r.try_get("traceparent")?,
    })
}
