//! Firebreak's event bus: the `Bus` trait, its embedded and NATS JetStream adapters, the
//! outbox relay and the consumer loop every service uses.
//!
//! Inbound is at least once: a message is acknowledged only after the consumer's handler
//! (and so its transaction) succeeded. Consumers dedupe on the event id. A message that keeps
//! failing is parked where operators can see it, never dropped silently.

mod consumer;
mod embedded;
mod gauges;
mod nats;
mod relay;
mod watch;

use std::time::Duration;

use async_trait::async_trait;

pub use consumer::{Batch, ConsumerOptions, HandlerError, consume, consume_batched};
pub use embedded::EmbeddedBus;
pub use gauges::{BACKLOG_CAP, gauges};
pub use nats::{NatsAuth, NatsBus, NatsOptions, ParkedMessage};
pub use relay::{Relay, RelayHandle};
pub use watch::WATCH_BUFFER;

/// The streams, one per event family.
pub mod streams {
    pub const ALERTS: &str = "alerts";
    pub const INCIDENTS: &str = "incidents";
    pub const RUNBOOKS: &str = "runbooks";
    pub const NOTIFICATIONS: &str = "notifications";
    /// The audit log's entries as they are appended, for a SIEM: nothing in Firebreak
    /// consumes it.
    pub const AUDIT: &str = "audit";
}

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bus's storage failed.
    #[error("bus storage: {0}")]
    Storage(#[from] firebreak_storage::Error),
    /// The bus is shutting down.
    #[error("bus closed")]
    Closed,
    /// NATS or JetStream failed (not connected, timed out, refused the request).
    #[error("nats: {0}")]
    Nats(String),
    /// What was asked for does not exist (a parked message that was replayed already).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request cannot be served as asked (a reserved stream name).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The bus's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A message on the bus: an encoded `firebreak.v1.Event` with its id and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub subject: String,
    pub payload: Vec<u8>,
}

/// A message handed to a consumer, with what is needed to acknowledge it. (Named so that
/// "delivery" means one thing in Firebreak: a notification sent on a channel.)
#[derive(Debug, Clone)]
pub struct Inbound {
    pub message: Message,
    /// The stream's sequence number of the message.
    pub seq: i64,
    /// How many times the bus has delivered this message, this delivery included: 1 the first
    /// time, more after a consumer crashed or let its acknowledgement deadline pass. The
    /// embedded bus does not count redeliveries and always says 1. On JetStream it is the
    /// server's count, which is a guide rather than exact: nats-server 2.9 miscounts when a
    /// redelivery races the expiry of a pull request.
    pub attempt: u32,
    /// What the NATS adapter needs to acknowledge this delivery; `None` from the embedded bus.
    pub(crate) nats: Option<std::sync::Arc<nats::Handle>>,
}

impl Inbound {
    /// A first delivery that carries no adapter handle, as the embedded bus hands out; for
    /// exercising handlers in tests.
    pub fn new(message: Message, seq: i64) -> Self {
        Self {
            message,
            seq,
            attempt: 1,
            nats: None,
        }
    }
}

/// A durable, at-least-once event bus.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Appends a message to `stream`; a message whose id was seen already is dropped (dedup).
    async fn publish(&self, stream: &str, message: Message) -> Result<()>;
    /// Publishes messages in order, as a relay does with an outbox batch; an adapter that
    /// can write them together should.
    async fn publish_batch(&self, messages: Vec<(String, Message)>) -> Result<()> {
        for (stream, m) in messages {
            self.publish(&stream, m).await?;
        }
        Ok(())
    }
    /// Up to `max` messages of `stream` that the durable `consumer` has not acknowledged,
    /// waiting at most `wait` for the first.
    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Inbound>>;
    /// Acknowledges exactly `deliveries` (handled by this consumer). On JetStream it returns
    /// once the acknowledgements are flushed to the server, which does not confirm them: one
    /// lost to a disconnect means a redelivery, which consumers dedupe.
    ///
    /// The consumer loop handles a fetched batch in stream order and acknowledges only a
    /// gap-free prefix of it (what it parked excepted), so an adapter with one cursor per
    /// consumer, like the embedded one, may move its cursor to the highest of them. Replicas
    /// sharing a durable consumer on JetStream each acknowledge their own deliveries only.
    async fn ack(&self, stream: &str, consumer: &str, deliveries: &[Inbound]) -> Result<()>;
    /// Tells the bus that `deliveries` are still being worked on (a handler retrying with
    /// backoff, a long batch), so it does not hand them to another replica meanwhile. The
    /// consumer loop calls it every [`Bus::progress_interval`].
    async fn in_progress(
        &self,
        _stream: &str,
        _consumer: &str,
        _deliveries: &[Inbound],
    ) -> Result<()> {
        Ok(())
    }
    /// How often a consumer holding deliveries must call [`Bus::in_progress`]; `None` for an
    /// adapter that never takes a delivery back (the embedded one).
    fn progress_interval(&self) -> Option<Duration> {
        None
    }
    /// Hands back deliveries this consumer fetched but will not handle now (it is stopping),
    /// so that they are redelivered soon, to this or another replica, instead of after the
    /// acknowledgement deadline. An adapter that redelivers from a cursor anyway does nothing.
    async fn release(&self, _stream: &str, _consumer: &str, _deliveries: &[Inbound]) -> Result<()> {
        Ok(())
    }
    /// Gives up on a delivery: parks it where operators see it, then acknowledges it. When it
    /// cannot be parked it returns the error and acknowledges nothing, so the message comes
    /// again rather than vanish.
    async fn park(
        &self,
        stream: &str,
        consumer: &str,
        delivery: &Inbound,
        error: &str,
    ) -> Result<()>;
    /// Whether this bus reads `outbox` in place (the embedded bus does, for the streams it
    /// was given one for): a relay then has nothing to copy and only passes on, through
    /// [`Bus::outbox_written`], that new events committed.
    fn reads_in_place(&self, _outbox: &dyn firebreak_storage::Outbox) -> bool {
        false
    }
    /// New events committed to an outbox this bus reads in place.
    fn outbox_written(&self, _outbox: &dyn firebreak_storage::Outbox) {}
    /// The messages of `stream` committed from now on, for people following progress live
    /// (`WatchRuns`): nothing durable and nothing acknowledged. One reader per stream and
    /// process serves every watcher through a buffer of [`WATCH_BUFFER`] messages; a watcher
    /// further behind gets `Lagged` and should start over from the store. What committed
    /// before the call is not delivered; what commits after it is, in order, possibly twice
    /// (a relay republishing after a crash, a watcher joining a reader that is catching up),
    /// so watchers dedupe on the message id.
    async fn watch(&self, stream: &str) -> Result<tokio::sync::broadcast::Receiver<Message>> {
        Err(Error::Invalid(format!(
            "stream {stream} cannot be watched on this bus"
        )))
    }
    /// Where each durable consumer this bus has fetched for stands (for `/metrics`): what it
    /// has not acknowledged yet, and what it parked. Cheap: counts the adapter keeps, or reads
    /// through indexes. An adapter that cannot tell returns none.
    async fn standing(&self) -> Result<Vec<Standing>> {
        Ok(Vec::new())
    }
}

/// Where a durable consumer stands in its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub stream: String,
    pub consumer: String,
    /// Messages not acknowledged yet: not yet delivered, or delivered and in hand. Embedded:
    /// the events after the consumer's cursor (at most [`BACKLOG_CAP`]); JetStream: the
    /// consumer's `num_pending` plus `num_ack_pending`.
    pub backlog: u64,
    /// Messages the consumer gave up on and parked, still there to replay.
    pub parked: u64,
}

/// Builds an event envelope for the outbox: a fresh id, the time, the payload, and the trace
/// context of the work that caused it (a new trace outside any).
///
/// `occurred_at` is read from the system clock, not an injected one: it is informational
/// (nothing is due against it), and threading a clock through the nine callers, intake's
/// among them, which has none, would cost more than it proves. The records an event
/// announces carry the injected clock's times.
pub fn outbox_event(
    stream: &str,
    subject: impl Into<String>,
    payload: firebreak_proto::v1::event::Payload,
) -> firebreak_storage::OutboxEvent {
    use firebreak_domain::Clock as _;
    let id = new_event_id();
    let event = firebreak_proto::v1::Event {
        id: id.clone(),
        occurred_at: Some(firebreak_proto::timestamp(
            firebreak_domain::SystemClock.now(),
        )),
        traceparent: firebreak_telemetry::trace::outgoing(),
        payload: Some(payload),
    };
    firebreak_storage::OutboxEvent {
        id,
        stream: stream.to_owned(),
        subject: subject.into(),
        payload: firebreak_proto::encode_event(&event),
    }
}

fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
