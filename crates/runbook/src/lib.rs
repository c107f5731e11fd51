//! firebreak-runbook
