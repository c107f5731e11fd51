//! Triage's post-incident follow-ups in Postgres: their table (migration 10), read into a
//! snapshot (after the incidents' row locks, so a replica sees what the last holder wrote),
//! written by a changeset, listed by incident, owner and state.

use std::collections::HashMap;

use firebreak_domain::Micros;
use firebreak_domain::follow_up::{format_date, parse_date};
use sqlx::postgres::{PgBindIterExt, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use super::{conflict, get_u32, named};
use crate::{Error, FollowUpQuery, FollowUpRecord, FollowUpWrite, Result};

/// SQLite's migration 13, in Postgres' words.
pub(super) const MIGRATION: &str = "
CREATE TABLE follow_ups (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    number BIGINT NOT NULL CHECK (number >= 1),
    title TEXT NOT NULL,
    owner TEXT NOT NULL,
    due TEXT CHECK (due IS NULL OR due ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'),
    state TEXT NOT NULL CHECK (state IN ('open', 'done')),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (incident_id, number)
);
CREATE INDEX follow_ups_of_owner ON follow_ups (owner, state, incident_id, number);
CREATE INDEX follow_ups_by_state ON follow_ups (state, incident_id, number);
";

fn row(r: &PgRow) -> Result<FollowUpRecord> {
    Ok(FollowUpRecord {
        incident_id: r.try_get("incident_id")?,
        number: get_u32(r, "number")?,
        title: r.try_get("title")?,
        owner: r.try_get("owner")?,
        due: r
            .try_get::<Option<String>, _>("due")?
            .map(|d| parse_date(&d).map_err(|e| Error::Corrupt(format!("follow_ups.due: {e}"))))
            .transpose()?,
        state: named(r, "state")?,
        created_at: Micros::from_unix_micros(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        updated_at: Micros::from_unix_micros(r.try_get("updated_at")?),
    })
}

/// The follow-ups of `incident_ids`, by incident, each list by number.
pub(super) async fn of_incidents(
    conn: &mut PgConnection,
    incident_ids: &[&str],
) -> Result<HashMap<String, Vec<FollowUpRecord>>> {
    let mut out: HashMap<String, Vec<FollowUpRecord>> = incident_ids
        .iter()
        .map(|id| ((*id).to_owned(), Vec::new()))
        .collect();
    let rows = sqlx::query(
        "SELECT * FROM follow_ups WHERE incident_id = ANY($1) ORDER BY incident_id, number",
    )
    .bind(incident_ids.iter().copied().bind_iter())
    .fetch_all(conn)
    .await?;
    for r in &rows {
        let f = row(r)?;
        out.entry(f.incident_id.clone()).or_default().push(f);
    }
    Ok(out)
}

/// Writes a changeset's follow-ups: an insert whose number is taken, or an update of a
/// follow-up that is not there, is a conflict.
pub(super) async fn write(conn: &mut PgConnection, writes: &[FollowUpWrite]) -> Result<()> {
    for w in writes {
        let f = &w.record;
        let due = f.due.map(format_date);
        let done = if w.insert {
            sqlx::query(
                "INSERT INTO follow_ups (incident_id, number, title, owner, due, state,
                    created_at, created_by, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&f.incident_id)
            .bind(i64::from(f.number))
            .bind(&f.title)
            .bind(&f.owner)
            .bind(&due)
            .bind(f.state.as_str())
            .bind(f.created_at.unix_micros())
            .bind(&f.created_by)
            .bind(f.updated_at.unix_micros())
            .execute(&mut *conn)
            .await
            .map_err(|e| conflict(e, "the follow-up's number was taken meanwhile"))?
        } else {
            sqlx::query(
                "UPDATE follow_ups SET title = $3, owner = $4, due = $5, state = $6,
                    updated_at = $7
                 WHERE incident_id = $1 AND number = $2",
            )
            .bind(&f.incident_id)
            .bind(i64::from(f.number))
            .bind(&f.title)
            .bind(&f.owner)
            .bind(&due)
            .bind(f.state.as_str())
            .bind(f.updated_at.unix_micros())
            .execute(&mut *conn)
            .await?
        };
        if done.rows_affected() != 1 {
            return Err(Error::Conflict(format!(
                "follow-up {} of {} changed meanwhile",
                f.number, f.incident_id
            )));
        }
    }
    Ok(())
}

/// Follow-ups as `query` says; a filter not given is a NULL parameter that holds for all.
pub(super) async fn query(pool: &PgPool, query: &FollowUpQuery) -> Result<Vec<FollowUpRecord>> {
    let (after_id, after_number) = match &query.after {
        Some((id, n)) => (Some(id.as_str()), Some(i64::from(*n))),
        None => (None, None),
    };
    let rows = sqlx::query(
        "SELECT * FROM follow_ups
         WHERE ($1::text IS NULL OR incident_id = $1)
           AND ($2::text IS NULL OR owner = $2)
           AND ($3::text IS NULL OR state = $3)
           AND ($4::text IS NULL OR (incident_id, number) > ($4, $5::int8))
         ORDER BY incident_id, number LIMIT $6",
    )
    .bind(query.incident_id.as_deref())
    .bind(query.owner.as_deref())
    .bind(query.state.map(|s| s.as_str()))
    .bind(after_id)
    .bind(after_number)
    .bind(i64::from(query.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}
