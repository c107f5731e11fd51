//! The storage contract: each check is written once against the store traits and runs on both
//! adapters, SQLite (a file in a temporary directory) and Postgres (a fresh database per test).
//! Postgres-only modules race replicas against one database and take the server away.

mod audit;
mod clock;
mod directory;
mod fixtures;
mod follow_ups;
mod gauges;
mod intake;
mod notification;
mod orchestration;
mod outbox;
mod races;
mod reports;
mod schedules;
mod schema;
mod server;
mod silences;
mod triage;

/// Runs each listed check (an `async fn(&Fixture<dyn Store>)` of the calling module) on both
/// adapters, as `<module>::sqlite::<check>` and `<module>::postgres::<check>`, with the store
/// `crate::fixtures::$open` opens.
macro_rules! contract {
    ($open:ident: $($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let f = crate::fixtures::$open(crate::fixtures::Adapter::Sqlite).await;
                    super::$check(&f).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let f = crate::fixtures::$open(crate::fixtures::Adapter::Postgres).await;
                    super::$check(&f).await;
                }
            )*
        }
    };
}
pub(crate) use contract;
