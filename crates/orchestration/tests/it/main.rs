//! Orchestration's integration tests: the executor against real stores (SQLite, Postgres),
//! and the actions a live run performs against local servers.

mod actions;
mod errors;
mod harness;
mod runs;
