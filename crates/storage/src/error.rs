//! The storage layer's error.

/// What went wrong talking to a database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A uniqueness rule held: the row exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or answered with an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite answered with an error (on a connection of the adapter's own threads).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
