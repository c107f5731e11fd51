//! Notification's errors as its gRPC callers hear them, each with its code.

use firebreak_proto::{ErrorCode, ServiceError};

/// What `NotificationService` answers with when it does not answer with success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The request itself is not acceptable; the text names the field and why.
    #[error("{0}")]
    Invalid(String),
    #[error("page_token is not a token this service gave")]
    InvalidPageToken,
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::InvalidPageToken => ErrorCode::InvalidArgument,
            Self::Storage(e) => e.error_code(),
        }
    }

    fn caller_message(&self) -> String {
        match self {
            Self::Storage(e) => e.caller_message(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        firebreak_proto::status(&e)
    }
}
