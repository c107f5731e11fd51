//! Integration tests of the bus crate: the embedded adapter on SQLite (its own log, and
//! streams read in place from a service's outbox), the NATS adapter on a
//! real `nats-server` per test, and the consumer loop on both.

mod embedded;
mod in_place;
mod nats;
mod nats_auth;
mod standing;

use std::future::Future;
use std::time::Duration;

use firebreak_bus::Message;

/// Tracing output for a test, only with `TEST_LOG=1`.
fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "debug".into()),
            )
            .with_test_writer()
            .try_init();
    }
}

/// A message whose payload is its id (not an encoded event: the bus does not care).
fn msg(id: &str) -> Message {
    Message {
        id: id.into(),
        subject: "incidents.opened".into(),
        payload: id.as_bytes().to_vec(),
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
