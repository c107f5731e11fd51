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
    /// Messages fetched at once (and offered to a batch handler together).
    pub batch: u32,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_deliveries: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            batch: 64,
        }
    }
}

/// Consumes `stream` as the durable `consumer` until `shutdown` fires.
///
/// Messages are handled in stream order, one at a time, and acknowledged only after the
/// handler succeeded, so a crash at any point redelivers (at least once). Acknowledgement is
/// cumulative: one ack after a run of handled messages covers them all, which saves a write
/// per message; a crash before it redelivers that run, which idempotent handlers shrug off.
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
    run(
        bus,
        stream,
        consumer,
        options,
        shutdown,
        None::<NoBatch>,
        handler,
    )
    .await;
}

/// The batch handler of a consumer that has none.
type NoBatch = fn(Arc<[Delivery]>) -> std::future::Ready<Result<Batch, HandlerError>>;

/// What a batch handler made of a fetched batch.
pub enum Batch {
    /// Every message handled (in one transaction, typically).
    Handled,
    /// Not a batch it handles: take the messages one by one.
    OneByOne,
}

/// [`consume`] with a batch handler tried first on each fetched batch; when it declines or
/// fails, the messages go one by one through `handler`, with its retries and parking. The
/// batch handler must change nothing when it fails (one transaction).
pub async fn consume_batched<B, BFut, F, Fut>(
    bus: Arc<dyn Bus>,
    stream: &'static str,
    consumer: &'static str,
    options: ConsumerOptions,
    shutdown: CancellationToken,
    batch_handler: B,
    handler: F,
) where
    B: Fn(Arc<[Delivery]>) -> BFut + Send + Sync,
    BFut: Future<Output = Result<Batch, HandlerError>> + Send,
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    run(
        bus,
        stream,
        consumer,
        options,
        shutdown,
        Some(batch_handler),
        handler,
    )
    .await;
}

async fn run<B, BFut, F, Fut>(
    bus: Arc<dyn Bus>,
    stream: &'static str,
    consumer: &'static str,
    options: ConsumerOptions,
    shutdown: CancellationToken,
    batch_handler: Option<B>,
    handler: F,
) where
    B: Fn(Arc<[Delivery]>) -> BFut + Send + Sync,
    BFut: Future<Output = Result<Batch, HandlerError>> + Send,
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    while !shutdown.is_cancelled() {
        let batch = tokio::select! {
            b = bus.fetch(stream, consumer, options.batch.max(1), Duration::from_secs(1)) => b,
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
        let batch: Arc<[Delivery]> = batch.into();
        if let Some(batch_handler) = &batch_handler
            && batch.len() > 1
        {
            match batch_handler(batch.clone()).await {
                Ok(Batch::Handled) => {
                    if let Some(last) = batch.last()
                        && let Err(e) = bus.ack(stream, consumer, last).await
                    {
                        tracing::warn!(stream, consumer, error = %e, "acknowledging failed");
                    }
                    continue;
                }
                Ok(Batch::OneByOne) => {}
                Err(HandlerError::Retry(e) | HandlerError::Permanent(e)) => {
                    tracing::debug!(stream, consumer, error = %e, "batch failed; one by one");
                }
            }
        }
        let mut handled = None;
        for delivery in batch.iter().cloned() {
            match deliver(
                &*bus, stream, consumer, &options, &shutdown, &handler, delivery,
            )
            .await
            {
                Delivered::Handled(d) => handled = Some(d),
                // Parking moved the cursor past everything before it too.
                Delivered::Parked => handled = None,
                Delivered::Stopped => break,
            }
        }
        if let Some(last) = handled
            && let Err(e) = bus.ack(stream, consumer, &last).await
        {
            // Not acknowledged: the run comes again after the next fetch.
            tracing::warn!(stream, consumer, error = %e, "acknowledging failed");
        }
    }
}

/// How one delivery ended.
enum Delivered {
    /// The handler succeeded; the delivery awaits its (cumulative) ack.
    Handled(Delivery),
    /// Parked for operators.
    Parked,
    /// Shutting down, or parking failed: stop this batch.
    Stopped,
}

/// Handles one delivery to its end (handled or parked).
async fn deliver<F, Fut>(
    bus: &dyn Bus,
    stream: &'static str,
    consumer: &'static str,
    options: &ConsumerOptions,
    shutdown: &CancellationToken,
    handler: &F,
    delivery: Delivery,
) -> Delivered
where
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let mut backoff = options.backoff;
    for attempt in 1..=options.max_deliveries {
        let outcome = handler(delivery.clone()).await;
        let result = match outcome {
            Ok(()) => return Delivered::Handled(delivery),
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
                    () = shutdown.cancelled() => return Delivered::Stopped,
                }
                backoff = (backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        if let Err(e) = result {
            // Not parked: the message comes again after the next fetch.
            tracing::warn!(stream, consumer, error = %e, "parking failed");
            return Delivered::Stopped;
        }
        return Delivered::Parked;
    }
    Delivered::Stopped
}
