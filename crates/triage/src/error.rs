//! Triage's error, and how it maps to gRPC statuses and consumer retries.

use firebreak_bus::HandlerError;
use firebreak_proto::{ErrorCode, ServiceError};

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
    /// An unassignment named a role the person does not hold.
    #[error("person {person} does not hold role {role}")]
    RoleNotHeld { role: String, person: String },
    /// A follow-up change named a number the incident has no follow-up with.
    #[error("incident {incident} has no follow-up {number}")]
    FollowUpNotFound { incident: String, number: u32 },
    /// As many reports as a process computes at once are being computed.
    #[error("too many reports are being computed; retry shortly")]
    ReportsBusy,
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
}

/// Callers hear [`ServiceError::caller_message`]'s default: an error in their request in its
/// own words; a storage fault (wrapped transparently) in general ones.
impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Domain(e) => e.error_code(),
            Self::NotFound(_)
            | Self::ChangeNotFound(_)
            | Self::RoleNotHeld { .. }
            | Self::FollowUpNotFound { .. } => ErrorCode::NotFound,
            Self::ReportsBusy => ErrorCode::ResourceExhausted,
            Self::Storage(e) => e.error_code(),
        }
    }
}

impl Error {
    /// Storage trouble is worth a retry (an unreachable store is waited out); anything else
    /// will fail the same way again.
    pub(crate) fn into_handler(self) -> HandlerError {
        match self {
            Self::Storage(e) => e.into(),
            other => HandlerError::Permanent(other.to_string()),
        }
    }
}

firebreak_proto::impl_into_status!(Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_text_does_not_reach_a_caller() {
        let e = Error::Storage(firebreak_storage::Error::Stopped(
            "/var/lib/firebreak/triage.db".into(),
        ));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            !status.message().contains("triage.db"),
            "{}",
            status.message()
        );
        let status = tonic::Status::from(Error::NotFound("inc-1".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "incident inc-1 not found");
    }
}
