//! Triage's post-incident follow-ups in SQLite: their table (migration 13), read into a
//! snapshot, written by a changeset, listed by incident, owner and state.

use std::collections::HashMap;

use firebreak_domain::Micros;
use firebreak_domain::follow_up::{format_date, parse_date};
use rusqlite::Connection;

use super::conn;
use super::named;
use crate::{Error, FollowUpQuery, FollowUpRecord, FollowUpWrite, Result};

/// Follow-ups, numbered within their incident; the state is checked by the database as by
/// the code that reads it back. Listing by owner (open first) across incidents uses the
/// owner index; by state alone the state index. Postgres' migration 10 is the same.
pub(super) const MIGRATION: &str = "
CREATE TABLE follow_ups (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    number INTEGER NOT NULL CHECK (number >= 1),
    title TEXT NOT NULL,
    owner TEXT NOT NULL,
    due TEXT CHECK (due IS NULL OR due GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    state TEXT NOT NULL CHECK (state IN ('open', 'done')),
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (incident_id, number)
) WITHOUT ROWID;
CREATE INDEX follow_ups_of_owner ON follow_ups (owner, state, incident_id, number);
CREATE INDEX follow_ups_by_state ON follow_ups (state, incident_id, number);
";

const COLUMNS: &str =
    "incident_id, number, title, owner, due, state, created_at, created_by, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(FollowUpRecord, Option<String>)> {
    Ok((
        FollowUpRecord {
            incident_id: r.get(0)?,
            number: r.get(1)?,
            title: r.get(2)?,
            owner: r.get(3)?,
            due: None,
            state: named(r, 5)?,
            created_at: Micros::from_unix_micros(r.get(6)?),
            created_by: r.get(7)?,
            updated_at: Micros::from_unix_micros(r.get(8)?),
        },
        r.get(4)?,
    ))
}

/// The record with its due date read back: a date that does not parse is a corrupt row.
fn record((mut f, due): (FollowUpRecord, Option<String>)) -> Result<FollowUpRecord> {
    f.due = due
        .map(|d| parse_date(&d).map_err(|e| Error::Corrupt(format!("follow_ups.due: {e}"))))
        .transpose()?;
    Ok(f)
}

/// The follow-ups of `incident_ids`, by incident, each list by number.
pub(super) fn of_incidents(
    c: &Connection,
    incident_ids: &[&String],
) -> Result<HashMap<String, Vec<FollowUpRecord>>> {
    let mut out: HashMap<String, Vec<FollowUpRecord>> = HashMap::new();
    let mut q = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM follow_ups WHERE incident_id = ? ORDER BY number"
    ))?;
    for id in incident_ids {
        let list = q
            .query_map([id], row)?
            .map(|r| record(r?))
            .collect::<Result<Vec<_>>>()?;
        out.insert((*id).clone(), list);
    }
    Ok(out)
}

/// Writes a changeset's follow-ups: an insert whose number is taken, or an update of a
/// follow-up that is not there, is a conflict.
pub(super) fn write(c: &Connection, writes: &[FollowUpWrite]) -> Result<()> {
    for w in writes {
        let f = &w.record;
        let due = f.due.map(format_date);
        let n = if w.insert {
            c.prepare_cached(&format!(
                "INSERT INTO follow_ups ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))?
            .execute((
                &f.incident_id,
                f.number,
                &f.title,
                &f.owner,
                &due,
                f.state.as_str(),
                f.created_at.unix_micros(),
                &f.created_by,
                f.updated_at.unix_micros(),
            ))
            .map_err(|e| conn::conflict(e, "the follow-up's number was taken meanwhile"))?
        } else {
            c.prepare_cached(
                "UPDATE follow_ups SET title = ?, owner = ?, due = ?, state = ?, updated_at = ?
                 WHERE incident_id = ? AND number = ?",
            )?
            .execute((
                &f.title,
                &f.owner,
                &due,
                f.state.as_str(),
                f.updated_at.unix_micros(),
                &f.incident_id,
                f.number,
            ))?
        };
        if n != 1 {
            return Err(Error::Conflict(format!(
                "follow-up {} of {} changed meanwhile",
                f.number, f.incident_id
            )));
        }
    }
    Ok(())
}

/// Follow-ups as `query` says.
pub(super) fn query(c: &Connection, query: &FollowUpQuery) -> Result<Vec<FollowUpRecord>> {
    let mut sql = format!("SELECT {COLUMNS} FROM follow_ups WHERE 1 = 1");
    let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(id) = &query.incident_id {
        sql.push_str(" AND incident_id = ?");
        params.push(Box::new(id.clone()));
    }
    if let Some(owner) = &query.owner {
        sql.push_str(" AND owner = ?");
        params.push(Box::new(owner.clone()));
    }
    if let Some(state) = query.state {
        sql.push_str(" AND state = ?");
        params.push(Box::new(state.as_str()));
    }
    if let Some((id, number)) = &query.after {
        sql.push_str(" AND (incident_id, number) > (?, ?)");
        params.push(Box::new(id.clone()));
        params.push(Box::new(*number));
    }
    sql.push_str(" ORDER BY incident_id, number LIMIT ?");
    params.push(Box::new(i64::from(query.limit)));
    let mut stmt = c.prepare_cached(&sql)?;
    stmt.query_map(rusqlite::params_from_iter(params.iter()), row)?
        .map(|r| record(r?))
        .collect()
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::sqlite::SqliteTriageStore;
    use crate::{Error, FollowUpQuery, TriageStore};

    /// A state or due date no code wrote (the CHECKs switched off, as a hand edit might) is
    /// a corrupt row naming the column, never a default.
    #[tokio::test]
    async fn an_unknown_state_or_due_date_read_back_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.db");
        let store = SqliteTriageStore::open(&path, false).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             INSERT INTO incidents (id, title, description, category, severity, priority,
                urgency, state, dedup_key, alert_count, labels, source, opened_at,
                resolution_summary, root_cause, review, updated_at)
             VALUES ('a', 't', '', 'c', 3, 3, 'medium', 'open', 'k', 1, '{}', 's', 1, '', '', '', 1);",
        )
        .unwrap();
        for (state, due, names) in [
            ("paused", None, "paused"),
            ("open", Some("2026-02-30"), "due"),
        ] {
            raw.execute("DELETE FROM follow_ups", ()).unwrap();
            raw.execute(
                "INSERT INTO follow_ups (incident_id, number, title, owner, due, state,
                    created_at, created_by, updated_at)
                 VALUES ('a', 1, 't', 'amy', ?, ?, 1, 'user:amy', 1)",
                (due, state),
            )
            .unwrap();
            let err = store
                .follow_ups(&FollowUpQuery {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(names), "{err}");
        }
    }
}
