//! End-to-end tests: the embedded stack in-process on free ports, driven over gRPC, with a
//! real local HTTP server standing in for webhook and runbook targets.

mod access;
mod answers;
mod audit;
mod command;
mod grouping;
mod harness;
mod lifecycle;
mod maintenance;
mod metrics;
mod oncall;
mod paging;
mod path;
mod reports;
mod review;
mod roles;
mod runbooks;
mod schedules;
mod silences;
mod updates;
mod webhooks;

// The binary's allocator, so the runbook sandbox's memory limit applies as it does there.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
