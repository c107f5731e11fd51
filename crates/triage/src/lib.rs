//! firebreak-triage
