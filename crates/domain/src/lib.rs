//! Firebreak's domain model: the words of the incident process as types, with no IO.
//!
//! Everything here is pure: parsing and validating input, the incident state machine,
//! categorization and prioritization rules, and the post-incident review draft.

mod clock;
mod dedup;
mod error;
mod ids;
mod incident;
mod review;
mod rules;
mod service_error;
mod signal;
mod states;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dedup::{canonical_labels, dedup_key_for_group_key, dedup_key_for_labels, dedup_key_of};
pub use error::{Error, Result};
pub use ids::{AlertId, EventId, IncidentId, RunId, new_id};
pub use incident::{Action, IncidentState, Priority, Severity, Urgency};
pub use review::{ReviewInput, ReviewRun, TimelineItem, review_markdown};
pub use rules::{CategoryRule, Classification, DEFAULT_TAXONOMY, Taxonomy, UNCATEGORIZED};
pub use service_error::{ErrorCode, ServiceError};
pub use signal::{Labels, Signal, SignalInput, clip, derive_dedup_key, no_nul, parse_label};
pub use states::{AlertState, DeliveryState, RunEvent, RunPhase, RunState, StepStatus};

/// Seconds since the Unix epoch in UTC, the unit of every stored timestamp.
pub type Timestamp = time::OffsetDateTime;

/// The current time, truncated to microseconds so that it survives a round trip through storage.
pub fn now() -> Timestamp {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}
