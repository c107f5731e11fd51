//! Notification's errors as its gRPC callers hear them, each with its code.

use firebreak_proto::{ErrorCode, ServiceError};

/// What `NotificationService` answers with when it does not answer with success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is not acceptable; the text names the field and why.
    #[error("{0}")]
    Invalid(String),
    #[error("page_token is not a token this service gave")]
    InvalidPageToken,
    #[error(transparent)]
    Domain(#[from] firebreak_domain::Error),
    #[error("{0} not found")]
    NotFound(String),
    /// Declared in configuration: changed there, not at run time.
    #[error("{0} is declared in configuration; change it there")]
    Declared(String),
    /// Not now, for a reason the text gives (a policy pages the schedule, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operating system's random generator failed (no token can be made).
    #[error("no randomness: {0}")]
    Random(String),
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
    /// What the store holds does not read (a value this build does not know): a fault of the
    /// server, never shown as some default.
    #[error("{0}")]
    Internal(String),
}

/// Callers hear [`ServiceError::caller_message`]'s default: an error in their request in its
/// own words; a storage fault (wrapped transparently) in general ones.
impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::InvalidPageToken => ErrorCode::InvalidArgument,
            Self::Domain(e) => e.error_code(),
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Declared(_) | Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::Random(_) | Self::Internal(_) => ErrorCode::Internal,
            Self::Storage(e) => e.error_code(),
        }
    }
}

firebreak_proto::impl_into_status!(Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_text_does_not_reach_a_caller() {
        let e = Error::Storage(firebreak_storage::Error::Corrupt(
            "deliveries.state \"bogus\" at row 17".into(),
        ));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
        let status = tonic::Status::from(Error::Invalid("channel: unknown kind".into()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "channel: unknown kind");
        let conflict = Error::Storage(firebreak_storage::Error::Conflict("delivery d-1".into()));
        assert_eq!(
            tonic::Status::from(conflict).message(),
            "conflict: delivery d-1"
        );
    }
}
