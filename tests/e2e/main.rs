//! End-to-end tests: the embedded stack in-process on free ports, driven over gRPC, with a
//! real local HTTP server standing in for webhook and runbook targets.

mod harness;
mod path;
mod runbooks;
