//! The `firebreak` binary: parses the command line and runs it.

/// jemalloc: fast under many threads, and it counts each thread's allocations, which is how
/// the runbook sandbox bounds a script's memory.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let code = firebreak::cli::parse().main().await;
    std::process::exit(code);
}
