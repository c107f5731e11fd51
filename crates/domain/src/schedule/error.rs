//! What can be wrong with a schedule or a question about one: each error names the field it
//! is about (`layers[0].rotation.hand_off`) and says what is wrong in a typed [`Problem`].

use std::fmt;

use jiff::civil::DateTime;

use crate::service_error::{ErrorCode, ServiceError};

/// One thing wrong with a schedule, or with a range asked of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ScheduleError {
    /// The path of the field, as written: `layers[0].rotation.hand_off`, `overrides[3].to`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl ScheduleError {
    /// The error `problem` at `field`.
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self {
            field: field.into(),
            problem,
        }
    }
}

impl ServiceError for ScheduleError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

/// Everything wrong with a schedule, found in one pass (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScheduleErrors(pub Vec<ScheduleError>);

impl ScheduleErrors {
    /// The errors, schedule fields first, then layer by layer, then the overrides.
    pub fn errors(&self) -> &[ScheduleError] {
        &self.0
    }

    /// True when one of the errors is about `field`.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for ScheduleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ServiceError for ScheduleErrors {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The text is not a schedule (serde's words, which start with the field's path).
    #[error("{0}")]
    Syntax(String),
    /// A name breaks the naming rule.
    #[error("{0}")]
    BadName(String),
    /// A list that needs an entry has none.
    #[error("must not be empty")]
    Empty,
    /// More entries (or bytes) than allowed.
    #[error("{got} {what} is more than the {max} allowed")]
    TooLarge {
        what: &'static str,
        max: usize,
        got: usize,
    },
    /// The time zone database has no such zone.
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/Berlin or UTC")]
    UnknownTimeZone(String),
    /// A local time falls in a daylight-saving (or other) gap of its zone.
    #[error(
        "{local} does not exist in {zone}: the clocks jump from {gap_from} to {gap_to} there; \
         choose a time outside the gap"
    )]
    NonexistentLocalTime {
        local: DateTime,
        zone: String,
        gap_from: DateTime,
        gap_to: DateTime,
    },
    /// A date or time beyond the years the calendar covers.
    #[error("{0} is out of range")]
    OutOfRange(String),
    /// The directory has no such user.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// A turn length of zero, or longer than allowed.
    #[error("turn length {given} is out of range: 1 to {max}")]
    TurnLength { given: String, max: String },
    /// `24:00` where only a time within the day makes sense.
    #[error("24:00 is the end of a day; write 00:00")]
    EndOfDay,
    /// A restriction window that covers no time.
    #[error("the window from {from} to {to} is empty")]
    EmptyWindow { from: String, to: String },
    /// A restriction window that mixes or misuses its forms.
    #[error("{0}")]
    BadWindow(String),
    /// A weekday listed twice.
    #[error("{0} is listed twice")]
    DuplicateDay(String),
    /// An interval whose end is not after its start.
    #[error("{to} is not after {from}")]
    NotAfter { from: String, to: String },
    /// An override that is neither `replace` + `with` nor `add`.
    #[error("an override either replaces a user (`replace` and `with`) or adds one (`add` alone)")]
    OverrideShape,
    /// An override that replaces a user with the same user.
    #[error("replaces {0:?} with itself")]
    SelfReplacement(String),
    /// Two overrides replace the same user at overlapping times.
    #[error("overlaps overrides[{other}], which also replaces {user:?} from {from} to {to}")]
    OverlappingOverrides {
        other: usize,
        user: String,
        from: String,
        to: String,
    },
    /// Versions of a layer that are not listed together, in order.
    #[error("{0}")]
    LayerVersions(String),
    /// A range in which a schedule changes too often to list.
    #[error(
        "the schedule changes more than {max} times from {from} to {to}; ask for a shorter range"
    )]
    TooManyShifts {
        from: String,
        to: String,
        max: usize,
    },
    /// A range asked of a schedule that is too long.
    #[error("the range from {from} to {to} is longer than {max_days} days")]
    RangeTooLong {
        from: String,
        to: String,
        max_days: i64,
    },
}
