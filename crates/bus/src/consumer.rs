//! The consumer loop: fetch, handle, acknowledge; retry with backoff; park what keeps failing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Bus, Delivery};

/// Why a handler did not process a message.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later (a dependency is down, the database is busy).
    Retry(String),
    /// The message can never be processed (it does not decode): park it now.
    Permanent(String),
}

/// How a consumer retries.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Deliveries before a message is parked.
    pub max_deliveries: u32,
    /// The first retry's delay; each retry doubles it, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_deliveries: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Consumes `stream` as the durable `consumer` until `shutdown` fires.
///
/// Messages are handled in stream order, one at a time, and acknowledged only after the
/// handler succeeded, so a crash at any point redelivers (at least once).
pub async fn consume<F, Fut>(
    bus: Arc<dyn Bus>,
    stream: &'static str,
    consumer: &'static str,
    options: ConsumerOptions,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    while !shutdown.is_cancelled() {
        let batch = tokio::select! {
            b = bus.fetch(stream, consumer, 64, Duration::from_secs(1)) => b,
            () = shutdown.cancelled() => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(stream, consumer, error = %e, "fetch failed");
                tokio::time::sleep(options.backoff).await;
                continue;
            }
        };
        for delivery in batch {
            if !deliver(
                &*bus, stream, consumer, &options, &shutdown, &handler, delivery,
            )
            .await
            {
                break;
            }
        }
    }
}

/// Handles one delivery to its end (acknowledged or parked); false when shutting down first.
async fn deliver<F, Fut>(
    bus: &dyn Bus,
    stream: &'static str,
    consumer: &'static str,
    options: &ConsumerOptions,
    shutdown: &CancellationToken,
    handler: &F,
    delivery: Delivery,
) -> bool
where
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let mut backoff = options.backoff;
    for attempt in 1..=options.max_deliveries {
        let outcome = handler(delivery.clone()).await;
        let result = match outcome {
            Ok(()) => bus.ack(stream, consumer, &delivery).await,
            Err(HandlerError::Permanent(error)) => {
                tracing::error!(stream, consumer, id = %delivery.message.id, %error, "parking undeliverable event");
                bus.park(stream, consumer, &delivery, &error).await
            }
            Err(HandlerError::Retry(error)) if attempt == options.max_deliveries => {
                tracing::error!(stream, consumer, id = %delivery.message.id, attempt, %error, "parking event after its last delivery");
                bus.park(stream, consumer, &delivery, &error).await
            }
            Err(HandlerError::Retry(error)) => {
                tracing::warn!(stream, consumer, id = %delivery.message.id, attempt, %error, "event handling failed, will retry");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return false,
                }
                backoff = (backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        if let Err(e) = result {
            // Not acknowledged: the message comes again after the next fetch.
            tracing::warn!(stream, consumer, error = %e, "acknowledging failed");
            return false;
        }
        return true;
    }
    true
}
