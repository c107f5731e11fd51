//! The `firebreak` binary's library: configuration, the embedded application and the CLI.

pub mod app;
mod auth;
mod authoring;
pub mod cli;
pub mod cli_access;
pub mod cli_review;
pub mod cli_silence;
mod cli_updates;
pub mod config;
mod feeds;
mod health;
mod metered;
mod net;
mod output;
mod silences;
mod tls;
mod traced;

pub use app::App;
pub use auth::rules as access_rules;
pub use config::Config;
