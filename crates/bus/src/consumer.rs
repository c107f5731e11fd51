//! The consumer loop: fetch, handle, acknowledge; retry with backoff; park what keeps failing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{Bus, Inbound};

/// Why a handler did not process a message.
#[derive(Debug)]
pub enum HandlerError {
    /// Try again later (a dependency is down, the database is busy).
    Retry(String),
    /// The message can never be processed (it does not decode): park it now.
    Permanent(String),
    /// The handler's own store is unreachable (an outage, not this message's fault): retry
    /// with backoff until it is back, without counting toward parking.
    Unavailable(String),
}

impl From<firebreak_storage::Error> for HandlerError {
    /// A store that cannot be reached is waited out; any other storage error is retried.
    fn from(e: firebreak_storage::Error) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Retry(e.to_string())
        }
    }
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
    /// Under load, how long to let messages gather before the next fetch: after a batch of
    /// more than one message but not a full one, the loop waits this long, so a steady
    /// stream is handled in fewer, larger batches (fewer commits) at the cost of this much
    /// latency. Zero: fetch again at once. A quiet stream (batches of one) never waits.
    pub linger: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_deliveries: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            batch: 64,
            linger: Duration::ZERO,
        }
    }
}

/// Consumes `stream` as the durable `consumer` until `shutdown` fires.
///
/// Messages are handled in stream order, one at a time, and acknowledged only after the
/// handler succeeded, so a crash at any point redelivers (at least once). After each fetched
/// batch one call acknowledges exactly the deliveries this loop handled, which saves a round
/// trip per message and never covers a message another replica of the same durable consumer
/// is still working on; a crash before it redelivers that run, which idempotent handlers
/// shrug off.
///
/// A failing handler is retried in process with exponential backoff while the loop tells the
/// bus the batch is still in progress; an unavailable store is waited out for as long as it
/// takes, without counting attempts; after `max_deliveries` attempts, counting earlier
/// deliveries of the message by the bus, or at once on a permanent error, the message is
/// parked. A message the bus has delivered more than `max_deliveries` times already (it
/// crashed its consumers, or they kept missing the acknowledgement deadline) is parked without
/// calling the handler again.
pub async fn consume<F, Fut>(
    bus: Arc<dyn Bus>,
    stream: &'static str,
    consumer: &'static str,
    options: ConsumerOptions,
    shutdown: CancellationToken,
    handler: F,
) where
    F: Fn(Inbound) -> Fut + Send + Sync,
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
type NoBatch = fn(Arc<[Inbound]>) -> std::future::Ready<Result<Batch, HandlerError>>;

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
    B: Fn(Arc<[Inbound]>) -> BFut + Send + Sync,
    BFut: Future<Output = Result<Batch, HandlerError>> + Send,
    F: Fn(Inbound) -> Fut + Send + Sync,
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
    B: Fn(Arc<[Inbound]>) -> BFut + Send + Sync,
    BFut: Future<Output = Result<Batch, HandlerError>> + Send,
    F: Fn(Inbound) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let mut fetch_backoff = options.backoff;
    let mut last = 0;
    while !shutdown.is_cancelled() {
        if !options.linger.is_zero() && last > 1 && last < options.batch.max(1) as usize {
            tokio::select! {
                () = tokio::time::sleep(options.linger) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let batch = tokio::select! {
            b = bus.fetch(stream, consumer, options.batch.max(1), Duration::from_secs(1)) => b,
            () = shutdown.cancelled() => return,
        };
        let batch = match batch {
            Ok(b) => {
                fetch_backoff = options.backoff;
                b
            }
            Err(e) => {
                tracing::warn!(stream, consumer, error = %e, "fetch failed");
                tokio::select! {
                    () = tokio::time::sleep(fetch_backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                fetch_backoff = (fetch_backoff * 2).min(options.max_backoff);
                continue;
            }
        };
        last = batch.len();
        if batch.is_empty() {
            continue;
        }
        let batch: Arc<[Inbound]> = batch.into();
        let work = handle_batch(
            &*bus,
            stream,
            consumer,
            &options,
            &shutdown,
            batch_handler.as_ref(),
            &handler,
            batch.clone(),
        );
        keep_in_progress(&*bus, stream, consumer, &batch, work).await;
    }
}

/// Runs `work` on `batch`, telling the bus every [`Bus::progress_interval`] that the batch's
/// deliveries are still being worked on, so that retries with backoff or a slow batch do not
/// let their acknowledgement deadline pass (and the messages go to another replica meanwhile).
/// Deliveries acknowledged or parked already are covered too; the bus ignores those.
async fn keep_in_progress(
    bus: &dyn Bus,
    stream: &'static str,
    consumer: &'static str,
    batch: &[Inbound],
    work: impl Future<Output = ()>,
) {
    let Some(every) = bus.progress_interval() else {
        return work.await;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => return,
            _ = ticker.tick() => {
                if let Err(e) = bus.in_progress(stream, consumer, batch).await {
                    tracing::warn!(stream, consumer, error = %e, "extending the acknowledgement deadline failed");
                }
            }
        }
    }
}

/// Handles one fetched batch to its end: every delivery handled and acknowledged, parked, or
/// (when stopping) released back to the bus.
#[allow(clippy::too_many_arguments)]
async fn handle_batch<B, BFut, F, Fut>(
    bus: &dyn Bus,
    stream: &'static str,
    consumer: &'static str,
    options: &ConsumerOptions,
    shutdown: &CancellationToken,
    batch_handler: Option<&B>,
    handler: &F,
    batch: Arc<[Inbound]>,
) where
    B: Fn(Arc<[Inbound]>) -> BFut + Send + Sync,
    BFut: Future<Output = Result<Batch, HandlerError>> + Send,
    F: Fn(Inbound) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    // A batch holding a message that is due for parking goes one by one, so that it is parked
    // in its place in stream order.
    if let Some(batch_handler) = batch_handler
        && batch.len() > 1
        && batch.iter().all(|d| d.attempt <= max_deliveries(options))
    {
        match batch_handler(batch.clone()).await {
            Ok(Batch::Handled) => {
                if let Err(e) = bus.ack(stream, consumer, &batch).await {
                    // Not acknowledged: the batch comes again, and is deduped then.
                    tracing::warn!(stream, consumer, error = %e, "acknowledging failed");
                }
                return;
            }
            Ok(Batch::OneByOne) => {}
            Err(
                HandlerError::Retry(e) | HandlerError::Permanent(e) | HandlerError::Unavailable(e),
            ) => {
                tracing::debug!(stream, consumer, error = %e, "batch failed; one by one");
            }
        }
    }
    let mut handled = Vec::with_capacity(batch.len());
    let mut stopped_at = None;
    for (i, delivery) in batch.iter().enumerate() {
        // Draining on shutdown: finish the delivery at hand, hand the rest back.
        if shutdown.is_cancelled() {
            stopped_at = Some(i);
            break;
        }
        match deliver(
            bus,
            stream,
            consumer,
            options,
            shutdown,
            handler,
            delivery.clone(),
        )
        .await
        {
            Delivered::Handled(d) => handled.push(d),
            // Parking acknowledged it.
            Delivered::Parked => {}
            Delivered::Stopped => {
                stopped_at = Some(i);
                break;
            }
        }
    }
    if !handled.is_empty()
        && let Err(e) = bus.ack(stream, consumer, &handled).await
    {
        // Not acknowledged: the run comes again after the next fetch (or, on JetStream, after
        // the acknowledgement deadline), and is deduped then.
        tracing::warn!(stream, consumer, error = %e, "acknowledging failed");
    }
    if let Some(i) = stopped_at
        && let Err(e) = bus.release(stream, consumer, &batch[i..]).await
    {
        tracing::debug!(stream, consumer, error = %e, "releasing unhandled deliveries failed");
    }
}

fn max_deliveries(options: &ConsumerOptions) -> u32 {
    options.max_deliveries.max(1)
}

/// How one delivery ended.
enum Delivered {
    /// The handler succeeded; the delivery awaits its acknowledgement.
    Handled(Inbound),
    /// Parked for operators (and so acknowledged).
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
    delivery: Inbound,
) -> Delivered
where
    F: Fn(Inbound) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    let max = max_deliveries(options);
    if delivery.attempt > max {
        let error = format!(
            "delivered {} times without being acknowledged (limit {max})",
            delivery.attempt
        );
        tracing::error!(stream, consumer, id = %delivery.message.id, attempt = delivery.attempt, "parking event delivered too often");
        return park(bus, stream, consumer, &delivery, &error).await;
    }
    let mut backoff = options.backoff;
    // Earlier deliveries by the bus count against the limit: each of them ran the handler at
    // least once.
    let mut attempt = delivery.attempt.max(1);
    // The handler works in a span of the trace the event carries, one per attempt.
    let traceparent = firebreak_proto::event_traceparent(&delivery.message.payload);
    loop {
        let span = firebreak_telemetry::trace::follow(
            tracing::info_span!(
                "consume",
                otel.name = format!("{stream} process"),
                otel.kind = "consumer",
                messaging.system = "nats",
                messaging.operation.type = "process",
                messaging.destination.name = stream,
                messaging.consumer.group.name = consumer,
                messaging.message.id = %delivery.message.id,
                firebreak.attempt = attempt,
            ),
            Some(&traceparent),
        );
        let outcome = handler(delivery.clone()).instrument(span).await;
        match outcome {
            Ok(()) => return Delivered::Handled(delivery),
            Err(HandlerError::Permanent(error)) => {
                tracing::error!(stream, consumer, id = %delivery.message.id, %error, "parking undeliverable event");
                return park(bus, stream, consumer, &delivery, &error).await;
            }
            Err(HandlerError::Retry(error)) if attempt >= max => {
                tracing::error!(stream, consumer, id = %delivery.message.id, attempt, %error, "parking event after its last delivery");
                return park(bus, stream, consumer, &delivery, &error).await;
            }
            Err(HandlerError::Retry(error)) => {
                tracing::warn!(stream, consumer, id = %delivery.message.id, attempt, %error, "event handling failed, will retry");
                attempt += 1;
            }
            Err(HandlerError::Unavailable(error)) => {
                tracing::warn!(stream, consumer, id = %delivery.message.id, %error, "store unavailable, waiting for it");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Delivered::Stopped,
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

async fn park(
    bus: &dyn Bus,
    stream: &'static str,
    consumer: &'static str,
    delivery: &Inbound,
    error: &str,
) -> Delivered {
    match bus.park(stream, consumer, delivery, error).await {
        Ok(()) => Delivered::Parked,
        Err(e) => {
            // Not parked: the message comes again after the next fetch.
            tracing::warn!(stream, consumer, error = %e, "parking failed");
            Delivered::Stopped
        }
    }
}
