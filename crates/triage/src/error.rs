//! Triage's error, and how it maps to gRPC statuses and consumer retries.

use firebreak_bus::HandlerError;
use firebreak_proto::ErrorCode;

/// What went wrong in triage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input or requested change broke a domain rule.
    #[error(transparent)]
    Domain(#[from] firebreak_domain::Error),
    #[error("incident {0} not found")]
    NotFound(String),
    #[error("change {0} not found")]
    ChangeNotFound(String),
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
}

impl Error {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Domain(firebreak_domain::Error::Invalid { .. }) => ErrorCode::InvalidArgument,
            Self::Domain(firebreak_domain::Error::Transition { .. }) => {
                ErrorCode::FailedPrecondition
            }
            Self::NotFound(_) | Self::ChangeNotFound(_) => ErrorCode::NotFound,
            Self::Storage(firebreak_storage::Error::Conflict(_)) => ErrorCode::AlreadyExists,
            Self::Storage(
                firebreak_storage::Error::Database(_)
                | firebreak_storage::Error::Sqlite(_)
                | firebreak_storage::Error::Stopped(_),
            ) => ErrorCode::Unavailable,
            Self::Storage(_) => ErrorCode::Internal,
        }
    }

    /// Storage trouble is worth a retry (an unreachable store is waited out); anything else
    /// will fail the same way again.
    pub(crate) fn into_handler(self) -> HandlerError {
        match self {
            Self::Storage(e) => e.into(),
            other => HandlerError::Permanent(other.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        if matches!(
            e.code(),
            firebreak_proto::ErrorCode::Unavailable | firebreak_proto::ErrorCode::Internal
        ) {
            tracing::error!(error = %e, "triage request failed");
        }
        e.code().status(e.to_string())
    }
}
