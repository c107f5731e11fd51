//! Health checks of a service's database on a connection of their own, so a readiness probe
//! never waits behind the users' queries for a pooled connection (Postgres) or for the
//! reading connection's thread (SQLite).

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::{Error, Result};

/// A database a readiness probe checks.
pub enum HealthCheck {
    /// A Postgres database, through one connection kept for the checks (reopened after a
    /// failure).
    Postgres {
        options: Box<PgConnectOptions>,
        conn: tokio::sync::Mutex<Option<PgConnection>>,
    },
    /// A SQLite file, opened read-only for each check.
    Sqlite(PathBuf),
}

impl HealthCheck {
    /// Checks the Postgres database at `url`.
    pub fn postgres(url: &str, service: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("firebreak-{service}-health"))
            .disable_statement_logging();
        Ok(Self::Postgres {
            options: Box::new(options),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Checks the SQLite file at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// Runs `SELECT 1` on the check's own connection.
    pub async fn check(&self) -> Result<()> {
        match self {
            Self::Postgres { options, conn } => {
                let mut conn = conn.lock().await;
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(PgConnection::connect_with(options).await?),
                };
                let result = sqlx::query("SELECT 1").execute(&mut *c).await;
                if result.is_err() {
                    // A broken connection is not reused; the next check opens another.
                    *conn = None;
                }
                result.map(drop).map_err(Error::from)
            }
            Self::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let c = rusqlite::Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.query_row("SELECT 1", [], |_| Ok(()))?;
                    Ok(())
                })
                .await
                .map_err(|e| Error::Stopped(format!("the health check's thread: {e}")))?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_answers_for_a_live_database_and_fails_for_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        rusqlite::Connection::open(&path).unwrap();
        HealthCheck::sqlite(&path).check().await.unwrap();
        assert!(
            HealthCheck::sqlite(dir.path().join("missing.db"))
                .check()
                .await
                .is_err()
        );

        let db = firebreak_testkit::postgres::TestDatabase::create().await;
        let check = HealthCheck::postgres(&db.url, "test").unwrap();
        check.check().await.unwrap();
        // The kept connection serves the next check.
        check.check().await.unwrap();
        let gone = HealthCheck::postgres(
            &firebreak_testkit::postgres::with_database(&db.url, "fb_no_such_database"),
            "test",
        )
        .unwrap();
        assert!(gone.check().await.is_err());
    }
}
