//! The runbook engine's integration tests: the sandbox on small runbooks, and every shipped
//! runbook.

mod hostile;
mod sandbox;
mod shipped;

// The binary's allocator, so the sandbox's memory limit applies here as it does there.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
