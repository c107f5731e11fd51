//! The domain's error: always about the caller's input or a forbidden state change.

/// A domain rule that input or a requested change broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field's value is not acceptable; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The incident's state does not allow this action.
    #[error("cannot {action} an incident that is {state}")]
    Transition {
        action: &'static str,
        state: &'static str,
    },
    /// The run's state does not allow this move.
    #[error("cannot {action} a run that is {state}")]
    RunTransition {
        action: &'static str,
        state: &'static str,
    },
}

/// The domain's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}
