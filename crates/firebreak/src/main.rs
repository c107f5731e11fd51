//! The `firebreak` binary: parses the command line and runs it.

use clap::Parser;

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
