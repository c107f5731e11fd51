//! The error code every server maps to a gRPC code and an HTTP status, and the trait that
//! gives an error its code (after quickwit's `ServiceError`).
//!
//! It lives here, in the crate with no IO that every other crate depends on, so that storage
//! errors, runbook errors and each service's errors all carry a code; the proto crate turns
//! it into a `tonic::Status`, the HTTP edges into a status line.

/// The few error kinds callers must be able to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [Self; 9] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::PermissionDenied,
        Self::Unauthenticated,
        Self::ResourceExhausted,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The one mapping: the gRPC status code (its number, as `google.rpc.Code` defines it)
    /// and the HTTP status of this kind of error.
    pub const fn codes(self) -> (i32, u16) {
        match self {
            Self::InvalidArgument => (3, 400),
            Self::NotFound => (5, 404),
            Self::AlreadyExists => (6, 409),
            Self::FailedPrecondition => (9, 409),
            Self::PermissionDenied => (7, 403),
            Self::Unauthenticated => (16, 401),
            Self::ResourceExhausted => (8, 429),
            Self::Unavailable => (14, 503),
            Self::Internal => (13, 500),
        }
    }

    /// The gRPC status code, as its number.
    pub const fn grpc_code(self) -> i32 {
        self.codes().0
    }

    /// The HTTP status code.
    pub const fn http_status(self) -> u16 {
        self.codes().1
    }

    /// True for the server's own trouble (`Unavailable`, `Internal`): logged where it is
    /// answered, and told to the caller only in general words.
    pub const fn is_server_fault(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal)
    }
}

/// An error a server answers a caller with: its code, and the text the caller may see.
pub trait ServiceError: std::error::Error {
    /// What kind of error this is for the caller.
    fn error_code(&self) -> ErrorCode;

    /// The message sent to the caller. By default the error's text, except for the server's
    /// own faults, whose detail (a database's words, a path) stays in the log: those say only
    /// what happened in general.
    fn caller_message(&self) -> String {
        match self.error_code() {
            ErrorCode::Unavailable => "service unavailable, retry shortly".into(),
            ErrorCode::Internal => "internal error".into(),
            _ => self.to_string(),
        }
    }
}

/// The domain's own errors are always about the caller's request.
impl ServiceError for crate::Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid { .. } => ErrorCode::InvalidArgument,
            Self::Transition { .. } | Self::RunTransition { .. } => ErrorCode::FailedPrecondition,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("pool timed out talking to 10.0.0.7")]
    struct Down;

    impl ServiceError for Down {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::Unavailable
        }
    }

    #[test]
    fn a_server_fault_tells_the_caller_nothing_of_its_detail() {
        let message = Down.caller_message();
        assert!(!message.contains("10.0.0.7"), "{message}");
        assert_eq!(message, "service unavailable, retry shortly");
        let invalid = crate::Error::Invalid {
            field: "title",
            reason: "is empty".into(),
        };
        assert_eq!(invalid.caller_message(), "invalid title: is empty");
        assert_eq!(invalid.error_code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn only_unavailable_and_internal_are_server_faults() {
        let faults: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.is_server_fault())
            .collect();
        assert_eq!(faults, [ErrorCode::Unavailable, ErrorCode::Internal]);
    }
}
