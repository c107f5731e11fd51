//! Orchestration's tables in SQLite: runs, the run journal and run logs.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row};

use super::conn::{self, Db};
use super::named;
use super::{Migration, OUTBOX, OUTBOX_READ_IN_PLACE, json_text};
use super::{impl_open, impl_outbox};
use firebreak_domain::{Micros, RunState};

use crate::{JournalRecord, OrchestrationStore, OutboxEvent, Result, RunQuery, RunRecord};

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
    Migration {
        version: 5,
        sql: OUTBOX_READ_IN_PLACE,
    },
    // Executions begun since the run last stopped cleanly (`begin_attempt`).
    Migration {
        version: 6,
        sql: "ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
    },
    // The trace a run continues, whenever and wherever it executes.
    Migration {
        version: 7,
        sql: "ALTER TABLE runs ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';",
    },
];

/// Orchestration's store on SQLite.
#[derive(Clone)]
pub struct SqliteOrchestrationStore {
    db: Db,
}

// An embedded database belongs to one process (the app locks its data directory):
// a lease found here was left by a crashed process and is void.
impl_open!(
    SqliteOrchestrationStore,
    MIGRATIONS,
    on_open: "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL"
);

impl_outbox!(SqliteOrchestrationStore);

#[async_trait]
impl OrchestrationStore for SqliteOrchestrationStore {
    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<u32> {
        let runs = runs.to_vec();
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO runs (id, runbook, incident_id, state, live, error, input, started_at, finished_at, phase, plan, wake_at, traceparent)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (runbook, incident_id) DO NOTHING",
                )?;
                let mut created = 0;
                for (r, event) in &runs {
                    let done = insert.execute(rusqlite::params![
                        r.id,
                        r.runbook,
                        r.incident_id,
                        r.state.as_str(),
                        r.live,
                        r.error,
                        json_text(&r.input)?,
                        r.started_at.unix_micros(),
                        r.finished_at.map(Micros::unix_micros),
                        r.phase.as_str(),
                        json_text(&r.plan)?,
                        r.wake_at.map(Micros::unix_micros),
                        r.traceparent,
                    ])?;
                    if done == 1 {
                        conn::enqueue(tx, std::slice::from_ref(event), clock.now_micros())?;
                        created += 1;
                    }
                }
                Ok(created)
            })
            .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let id = id.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached("SELECT * FROM runs WHERE id = ?")?
                    .query_row([&id], run_row)
                    .optional()?)
            })
            .await
    }

    async fn runs_page(
        &self,
        query: &RunQuery<'_>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<RunRecord>> {
        let (incident_id, state, after) = (
            query.incident_id.map(str::to_owned),
            query.state.map(|s| s.as_str().to_owned()),
            query.after.map(str::to_owned),
        );
        let sql = if query.oldest_first {
            "SELECT * FROM runs WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR state = ?2)
                AND (?3 IS NULL OR id > ?3)
             ORDER BY id LIMIT ?4"
        } else {
            "SELECT * FROM runs WHERE (?1 IS NULL OR incident_id = ?1) AND (?2 IS NULL OR state = ?2)
                AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        };
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query((incident_id, state, after, i64::from(limit)))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                // Rows are stepped one by one: past the byte bound the rest are never read.
                while bytes < max_bytes
                    && let Some(row) = rows.next()?
                {
                    let run = run_row(row)?;
                    bytes += run.wire_size();
                    out.push(run);
                }
                Ok(out)
            })
            .await
    }

    async fn due_runs(&self, now: Micros) -> Result<Vec<RunRecord>> {
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT * FROM runs WHERE state IN ('pending', 'running')
                        OR (state IN ('sleeping', 'waiting_approval') AND wake_at <= ?)
                     ORDER BY id",
                )?
                .query_map([now.unix_micros()], run_row)?
                .collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn lease_run(&self, id: &str, owner: &str, until: Micros, now: Micros) -> Result<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.db
            .write(move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET lease_owner = ?1, lease_until = ?2
                         WHERE id = ?3 AND state IN ('pending', 'running', 'sleeping')
                            AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until < ?4)",
                    )?
                    .execute((&owner, until.unix_micros(), &id, now.unix_micros()))?;
                Ok(n == 1)
            })
            .await
    }

    async fn renew_run(&self, id: &str, owner: &str, until: Micros) -> Result<bool> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.db
            .write(move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                    )?
                    .execute((until.unix_micros(), &id, &owner))?;
                Ok(n == 1)
            })
            .await
    }

    async fn release_run(&self, id: &str, owner: &str) -> Result<()> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                )?
                .execute((&id, &owner))?;
                Ok(())
            })
            .await
    }

    async fn begin_attempt(&self, id: &str, owner: &str) -> Result<Option<u32>> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.db
            .write(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE runs SET attempts = attempts + 1
                         WHERE id = ? AND lease_owner = ? AND state IN ('pending', 'running', 'sleeping')
                         RETURNING attempts",
                    )?
                    .query_row((&id, &owner), |r| r.get(0))
                    .optional()?)
            })
            .await
    }

    async fn transition(
        &self,
        r: &RunRecord,
        from: RunState,
        journal: Option<&JournalRecord>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        let (r, from, journal, events) =
            (r.clone(), from.as_str(), journal.cloned(), events.to_vec());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET state = ?1, phase = ?2, plan = ?3, wake_at = ?4, error = ?5, finished_at = ?6,
                            attempts = CASE WHEN ?1 = 'running' THEN attempts ELSE 0 END
                         WHERE id = ?7 AND state = ?8 AND state NOT IN ('succeeded', 'failed', 'rejected')",
                    )?
                    .execute(rusqlite::params![
                        r.state.as_str(),
                        r.phase.as_str(),
                        json_text(&r.plan)?,
                        r.wake_at.map(Micros::unix_micros),
                        r.error,
                        r.finished_at.map(Micros::unix_micros),
                        r.id,
                        from,
                    ])?;
                if n != 1 {
                    return Ok(false);
                }
                if let Some(j) = &journal {
                    put_journal(tx, j)?;
                }
                conn::enqueue(tx, &events, clock.now_micros())?;
                Ok(true)
            })
            .await
    }

    async fn set_run_state(
        &self,
        id: &str,
        from: RunState,
        state: RunState,
        error: Option<&str>,
        events: &[OutboxEvent],
    ) -> Result<bool> {
        let finished = state.is_finished().then(|| self.db.clock().now_micros());
        let (id, from, state, error, events) = (
            id.to_owned(),
            from.as_str(),
            state.as_str(),
            error.map(str::to_owned),
            events.to_vec(),
        );
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE runs SET state = ?1, error = COALESCE(?2, error), finished_at = ?3,
                            attempts = CASE WHEN ?1 = 'running' THEN attempts ELSE 0 END
                         WHERE id = ?4 AND state = ?5 AND state NOT IN ('succeeded', 'failed', 'rejected')",
                    )?
                    .execute((&state, &error, finished, &id, &from))?;
                if n != 1 {
                    return Ok(false);
                }
                conn::enqueue(tx, &events, clock.now_micros())?;
                Ok(true)
            })
            .await
    }

    async fn journal_page(
        &self,
        run_id: &str,
        after_seq: u32,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<JournalRecord>> {
        let run_id = run_id.to_owned();
        self.db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT * FROM journal WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                )?;
                let mut rows = stmt.query((&run_id, after_seq, i64::from(limit)))?;
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while bytes < max_bytes
                    && let Some(r) = rows.next()?
                {
                    let j = journal_row(r)?;
                    bytes += j.wire_size();
                    out.push(j);
                }
                Ok(out)
            })
            .await
    }

    async fn waiting_step(&self, run_id: &str) -> Result<Option<JournalRecord>> {
        let run_id = run_id.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT * FROM journal WHERE run_id = ? AND status = 'waiting'
                     ORDER BY seq DESC LIMIT 1",
                )?
                .query_row([&run_id], journal_row)
                .optional()?)
            })
            .await
    }

    async fn put_journal(&self, j: &JournalRecord, events: &[OutboxEvent]) -> Result<()> {
        let (j, events) = (j.clone(), events.to_vec());
        let clock = self.db.clock();
        self.db
            .write(move |tx| {
                put_journal(tx, &j)?;
                conn::enqueue(tx, &events, clock.now_micros())
            })
            .await
    }

    async fn append_log(&self, run_id: &str, lines: &[String]) -> Result<()> {
        let (run_id, lines) = (run_id.to_owned(), lines.to_vec());
        self.db
            .write(move |tx| {
                let next: i64 = tx
                    .prepare_cached("SELECT COALESCE(MAX(n), 0) FROM run_log WHERE run_id = ?")?
                    .query_row([&run_id], |r| r.get(0))?;
                let mut insert =
                    tx.prepare_cached("INSERT INTO run_log (run_id, n, line) VALUES (?, ?, ?)")?;
                for (i, line) in lines.iter().enumerate() {
                    insert.execute((&run_id, next + 1 + i as i64, line))?;
                }
                Ok(())
            })
            .await
    }

    async fn log(&self, run_id: &str) -> Result<Vec<String>> {
        let run_id = run_id.to_owned();
        self.db
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT line FROM run_log WHERE run_id = ? ORDER BY n")?
                        .query_map([&run_id], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                )
            })
            .await
    }

    async fn count_runs(&self, state: RunState) -> Result<u64> {
        self.db
            .read(move |c| {
                let n: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM runs INDEXED BY runs_state WHERE state = ?",
                    )?
                    .query_row([state.as_str()], |r| r.get(0))?;
                Ok(n.max(0) as u64)
            })
            .await
    }
}

/// Writes a journal entry, or replaces the status, result and attempts of a step that was
/// waiting or sleeping.
fn put_journal(tx: &Connection, j: &JournalRecord) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO journal (run_id, seq, action, args, args_digest, status, result, idempotency_key, attempts, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, result = excluded.result,
            attempts = excluded.attempts, at = excluded.at",
    )?
    .execute(rusqlite::params![
        j.run_id,
        j.seq,
        j.action,
        json_text(&j.args)?,
        j.args_digest,
        j.status.as_str(),
        json_text(&j.result)?,
        j.idempotency_key,
        j.attempts,
        j.at.unix_micros(),
    ])?;
    Ok(())
}

fn journal_row(r: &Row<'_>) -> rusqlite::Result<JournalRecord> {
    Ok(JournalRecord {
        run_id: r.get("run_id")?,
        seq: r.get("seq")?,
        action: r.get("action")?,
        args: r.get("args")?,
        args_digest: r.get("args_digest")?,
        status: named(r, "status")?,
        result: r.get("result")?,
        idempotency_key: r.get("idempotency_key")?,
        attempts: r.get("attempts")?,
        at: Micros::from_unix_micros(r.get("at")?),
    })
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get("id")?,
        runbook: r.get("runbook")?,
        incident_id: r.get("incident_id")?,
        state: named(r, "state")?,
        live: r.get("live")?,
        error: r.get("error")?,
        input: r.get("input")?,
        started_at: Micros::from_unix_micros(r.get("started_at")?),
        finished_at: r
            .get::<_, Option<i64>>("finished_at")?
            .map(Micros::from_unix_micros),
        phase: named(r, "phase")?,
        plan: r.get("plan")?,
        wake_at: r
            .get::<_, Option<i64>>("wake_at")?
            .map(Micros::from_unix_micros),
        traceparent: r.get("traceparent")?,
    })
}
