//! Why an action failed, typed: the host says what kind of failure it met, the script sees
//! the same catchable text it always has, and the journal keeps `{"error": text}`.

/// The kind of failure an action met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionErrorKind {
    /// Arguments the action cannot take: an unknown action, an invalid HTTP method.
    InvalidArgument,
    /// A capability the configuration does not grant: a command off the allowlist, a
    /// notification channel it lacks.
    Denied,
    /// Where the request would go is not allowed (a secret bound for a host it may not
    /// reach); nothing was sent.
    RefusedDestination,
    /// A secret the runbook declares is not available.
    Secret,
    /// The run's time (the manifest's `timeout_seconds`) ran out during the action.
    Deadline,
    /// The action ran past its own time limit (a command killed).
    Timeout,
    /// The target could not be reached, or its answer not read.
    Transport,
    /// The target's API answered with this error status.
    Status(u16),
    /// The action failed in its own way (a command that cannot start, a mocked failure).
    Failed,
}

/// Why an action failed: its kind, and the text the script catches and the journal keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub kind: ActionErrorKind,
    pub message: String,
}

impl ActionError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ActionErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when trying the action again may work: the target was unreachable, busy or
    /// failing on its side.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            ActionErrorKind::Transport => true,
            ActionErrorKind::Status(code) => code >= 500 || code == 429,
            _ => false,
        }
    }

    /// The same error with its text passed through `f` (redacting secrets from it).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        Self {
            message: f(&self.message),
            kind: self.kind,
        }
    }
}

/// A failure described only by its text: [`ActionErrorKind::Failed`].
impl From<String> for ActionError {
    fn from(message: String) -> Self {
        Self::new(ActionErrorKind::Failed, message)
    }
}

impl From<&str> for ActionError {
    fn from(message: &str) -> Self {
        Self::new(ActionErrorKind::Failed, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_and_server_side_statuses_are_retried() {
        let retryable = |kind| ActionError::new(kind, "x").is_retryable();
        assert!(retryable(ActionErrorKind::Transport));
        assert!(retryable(ActionErrorKind::Status(503)));
        assert!(retryable(ActionErrorKind::Status(429)));
        assert!(!retryable(ActionErrorKind::Status(404)));
        for kind in [
            ActionErrorKind::InvalidArgument,
            ActionErrorKind::Denied,
            ActionErrorKind::RefusedDestination,
            ActionErrorKind::Secret,
            ActionErrorKind::Deadline,
            ActionErrorKind::Timeout,
            ActionErrorKind::Failed,
        ] {
            assert!(!retryable(kind), "{kind:?}");
        }
    }

    #[test]
    fn the_text_is_the_message_alone() {
        let e = ActionError::new(ActionErrorKind::Status(403), "kubernetes answered 403: no");
        assert_eq!(e.to_string(), "kubernetes answered 403: no");
        let e = e.map_message(|m| m.replace("no", "[redacted]"));
        assert_eq!(e.to_string(), "kubernetes answered 403: [redacted]");
        assert_eq!(e.kind, ActionErrorKind::Status(403));
    }
}
