//! The `firebreak` binary's library: configuration, the embedded application and the CLI.

/// Every item of a paged List, following its page tokens: `$token` is the page token to
/// pass (empty first), `$call` the call answering one page (`next_page_token` and `$items`).
macro_rules! every_page {
    ($token:ident => $call:expr, $items:ident) => {{
        let mut all = Vec::new();
        let mut $token = String::new();
        loop {
            let r = $call;
            all.extend(r.$items);
            if r.next_page_token.is_empty() {
                break;
            }
            $token = r.next_page_token;
        }
        all
    }};
}

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
