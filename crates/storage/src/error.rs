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
    /// A stored value did not parse back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A schema migration failed.
    #[error("migration {version}: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
