//! Firebreak's domain model: the words of the incident process as types, with no IO.
//!
//! Everything here is pure: parsing and validating input, the incident state machine,
//! categorization and prioritization rules, and the post-incident review draft.

pub mod access;
mod clock;
mod dedup;
mod error;
pub mod follow_up;
pub mod grouping;
mod ids;
mod incident;
pub mod maintenance;
pub mod people;
pub mod report;
mod review;
mod rules;
pub mod schedule;
mod service_error;
mod signal;
pub mod silence;
mod states;
pub mod status_update;

pub use clock::{Clock, ManualClock, Micros, SystemClock};
pub use dedup::{canonical_labels, dedup_key_for_group_key, dedup_key_for_labels, dedup_key_of};
pub use error::{Error, Result};
pub use ids::{AlertId, EventId, IncidentId, RunId, new_id};
pub use incident::{Action, IncidentState, Priority, Severity, Urgency};
pub use review::{
    FirstPage, MAX_SECTION_HEADING, MAX_SECTION_PROMPT, MAX_TEMPLATE_SECTIONS, ROOT_CAUSE_HEADING,
    ReviewFollowUp, ReviewInput, ReviewRole, ReviewRun, ReviewSection, ReviewStatusUpdate,
    TimelineItem, check_review_template, default_review_template, review_markdown,
};
pub use rules::{CategoryRule, Classification, DEFAULT_TAXONOMY, Taxonomy, UNCATEGORIZED};
pub use service_error::{ErrorCode, ServiceError};
pub use signal::{Labels, Signal, SignalInput, clip, derive_dedup_key, no_nul, parse_label};
pub use states::{AlertState, DeliveryState, RunEvent, RunPhase, RunState, StepStatus};
pub use status_update::{StatusUpdate, UpdateStatus};

/// A point in time (UTC) as the review computes with it (durations, RFC 3339 text). Records
/// hold times as [`Micros`] (microseconds since the Unix epoch), read from a [`Clock`]; a
/// `Timestamp` is made from one ([`Micros::timestamp`]) and holds no finer precision.
pub type Timestamp = time::OffsetDateTime;
