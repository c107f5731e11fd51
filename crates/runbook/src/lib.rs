//! Firebreak's runbook engine: manifests, the catalog loaded from a directory, and the Rhai
//! sandbox that runs scripts durably against a journal.
//!
//! The engine knows nothing of databases or networks: the orchestration service implements
//! [`Host`], which performs (or simulates) each action and journals it before the script
//! sees its result. Replaying a script against its journal returns recorded results instead
//! of acting again, which is what makes runs survive crashes and wait for approvals.

mod catalog;
mod manifest;
mod sandbox;

pub use catalog::{Catalog, LoadError, Runbook};
pub use manifest::{Manifest, Match, Parameter, SeverityRange};
pub use sandbox::{
    ACTIONS, Execution, Host, Limits, Outcome, Recorded, Step, StepOutcome, digest, execute,
    is_side_effecting,
};
