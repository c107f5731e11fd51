//! Orchestration's errors as its gRPC callers hear them, each with its code.

use firebreak_proto::{ErrorCode, ServiceError};

use crate::approvals::DecideError;

/// What `RunbookService` answers with when it does not answer with success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The request itself is not acceptable; the text names the field and why.
    #[error("{0}")]
    Invalid(String),
    #[error("page_token is not a token this service gave")]
    InvalidPageToken,
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("no runbook named {0:?} on this server")]
    RunbookNotFound(String),
    /// The configuration's parameter overrides do not fit the runbook.
    #[error(transparent)]
    Params(#[from] firebreak_runbook::UnknownParameter),
    #[error("too many dry runs at once; retry shortly")]
    DryRunsBusy,
    #[error("the dry run's thread failed")]
    DryRunThread(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Decide(#[from] DecideError),
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
    #[error("too many watches at once; retry shortly")]
    WatchesBusy,
    /// The bus could not be subscribed to (NATS away).
    #[error("the event bus is unavailable")]
    Bus(#[source] firebreak_bus::Error),
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) | Self::InvalidPageToken => ErrorCode::InvalidArgument,
            Self::RunNotFound(_) | Self::RunbookNotFound(_) => ErrorCode::NotFound,
            Self::Params(_) => ErrorCode::FailedPrecondition,
            Self::DryRunsBusy | Self::WatchesBusy => ErrorCode::ResourceExhausted,
            Self::Bus(_) => ErrorCode::Unavailable,
            Self::DryRunThread(_) => ErrorCode::Internal,
            Self::Decide(e) => e.error_code(),
            Self::Storage(e) => e.error_code(),
        }
    }

    fn caller_message(&self) -> String {
        match self {
            Self::Decide(e) => e.caller_message(),
            Self::Storage(e) => e.caller_message(),
            Self::DryRunThread(_) => "the dry run's thread failed".into(),
            other => other.to_string(),
        }
    }
}

impl ServiceError for DecideError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::NotWaiting(..) => ErrorCode::FailedPrecondition,
            Self::Forbidden(_) => ErrorCode::PermissionDenied,
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

firebreak_proto::impl_into_status!(Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storage_error_in_a_decision_does_not_reach_the_caller() {
        let e = Error::Decide(DecideError::Storage(firebreak_storage::Error::Corrupt(
            "runs.state \"bogus\" at row 17".into(),
        )));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("bogus"), "{}", status.message());
        let status = tonic::Status::from(Error::Decide(DecideError::Forbidden(
            "user:bob is not an approver".into(),
        )));
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "user:bob is not an approver");
    }
}
