//! Firebreak's runbook engine: manifests, the catalog loaded from a directory, and the Rhai
//! sandbox that runs scripts durably against a journal.
//!
//! The engine knows nothing of databases or networks: the orchestration service implements
//! [`Host`], which performs (or simulates) each action and journals it before the script
//! sees its result. Replaying a script against its journal returns recorded results instead
//! of acting again, which is what makes runs survive crashes and wait for approvals.

mod action_error;
mod builtins;
mod catalog;
pub mod fixture;
mod manifest;
mod sandbox;
mod simulate;

pub use action_error::{ActionError, ActionErrorKind};
pub use catalog::{Catalog, LoadError, Runbook, UnknownParameter};
pub use manifest::{
    Approval, Concurrency, Manifest, Match, Mode, OnTimeout, Parameter, Retry, RunLimits, Secret,
    SeverityRange,
};
pub use sandbox::{
    ACTIONS, BYTES_PER_OPERATION, Execution, Host, Limits, MAX_ARGS_BYTES, MAX_NOTE_BYTES,
    MAX_SLEEP_SECONDS, MAX_VALUE_DEPTH, Outcome, Recorded, SCRIPT_STACK_BYTES, Step, StepError,
    StepOutcome, digest, execute, is_side_effecting, secret_placeholder,
};
pub use simulate::{Mock, PlannedStep, Simulation, Simulator, contains, simulate};
