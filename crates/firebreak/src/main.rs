//! The `firebreak` binary: parses the command line and runs it.

use clap::Parser;

/// jemalloc: fast under many threads, and it counts each thread's allocations, which is how
/// the runbook sandbox bounds a script's memory.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = firebreak::cli::Cli::parse();
    match cli.run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
