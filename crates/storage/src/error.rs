//! The storage layer's error.

use firebreak_domain::{ErrorCode, ServiceError};

/// What went wrong talking to a database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A uniqueness rule held: the row exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row the change needs does not exist (a token's subject, a membership's team).
    #[error("not found: {0}")]
    NotFound(String),
    /// The database could not be reached or answered with an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite answered with an error (on a connection of the adapter's own threads).
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// A SQLite connection's thread has stopped: the store is gone.
    #[error("database: the connection to {0} has stopped")]
    Stopped(String),
    /// A stored value did not parse back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A schema migration failed.
    #[error("migration {version}: {source}")]
    Migration {
        version: i64,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A migration the database applied is not the one the code holds under its version: its
    /// text was edited afterwards, so the schema may not be what the code expects.
    #[error(
        "{service}: migration {version} was edited after it was applied \
         (applied sha256 {applied}, code sha256 {code}); restore its text and make the change \
         in a new migration"
    )]
    MigrationEdited {
        /// The service (on SQLite, its database file).
        service: String,
        version: i64,
        /// The checksum recorded when the migration was applied.
        applied: String,
        /// The checksum of the migration's text in this build.
        code: String,
    },
    /// The store was opened without migrating (`Schema::Require`), and the database lacks a
    /// migration this build needs: `firebreak migrate` has not run for this release yet.
    #[error("{}", not_migrated(service, applied, required))]
    NotMigrated {
        service: String,
        /// The newest migration the database holds; `None` when the database does not exist.
        applied: Option<i64>,
        /// The newest migration this build knows.
        required: i64,
    },
}

/// The words of [`Error::NotMigrated`].
fn not_migrated(service: &str, applied: &Option<i64>, required: &i64) -> String {
    let state = match applied {
        None => "does not exist".to_owned(),
        Some(v) => format!("is at schema version {v}"),
    };
    format!(
        "the {service} database {state} and this build needs version {required}: run `firebreak migrate` (in Kubernetes, the migrate Job)"
    )
}

/// How a caller hears of a storage error: a conflict is theirs to know of; anything else is
/// the server's fault, and [`ServiceError::caller_message`]'s general words stand in for the
/// database's own (a query, a table, a path), which stay in the log.
impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Conflict(_) => ErrorCode::AlreadyExists,
            Self::NotFound(_) => ErrorCode::NotFound,
            // Whether the database is down or answered with an error, a retry may work once
            // it is back; the caller cannot tell the two apart and need not.
            Self::Database(_) | Self::Sqlite(_) | Self::Stopped(_) => ErrorCode::Unavailable,
            // The migrate Job is on its way: a retry works once it has run.
            Self::NotMigrated { .. } => ErrorCode::Unavailable,
            Self::Corrupt(_) | Self::Migration { .. } | Self::MigrationEdited { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

/// A value SQLite returned that does not convert (an unknown state name, say) is a corrupt
/// row, not an unreachable database.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, cause) => {
                Self::Corrupt(cause.to_string())
            }
            other => Self::Sqlite(other),
        }
    }
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the database could not be reached (down, restarting, the network): worth
    /// waiting out however long it takes, unlike an error in the request itself.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            Self::Database(e) => e,
            Self::Stopped(_) => return true,
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            // SQLSTATE class 08 (connection exception) and 57P (operator intervention: the
            // server shutting down or starting).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_is_unavailable_without_its_text() {
        let e = Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(1),
            Some("no such table: secret_incidents".into()),
        ));
        assert_eq!(e.error_code(), ErrorCode::Unavailable);
        assert!(e.to_string().contains("secret_incidents"));
        assert!(!e.caller_message().contains("secret_incidents"));
        let corrupt = Error::Corrupt("runs.state \"bogus\"".into());
        assert_eq!(corrupt.error_code(), ErrorCode::Internal);
        assert!(!corrupt.caller_message().contains("bogus"));
        let conflict = Error::Conflict("alert already attached".into());
        assert_eq!(conflict.error_code(), ErrorCode::AlreadyExists);
        assert_eq!(
            conflict.caller_message(),
            "conflict: alert already attached"
        );
    }
}
