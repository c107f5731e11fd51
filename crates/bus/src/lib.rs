//! Firebreak's event bus: the `Bus` trait, its embedded adapter, the outbox relay and the
//! consumer loop every service uses.
//!
//! Delivery is at least once: a message is acknowledged only after the consumer's handler
//! (and so its transaction) succeeded. Consumers dedupe on the event id. A message that keeps
//! failing is parked where operators can see it, never dropped silently.

mod consumer;
mod embedded;
mod relay;

use std::time::Duration;

use async_trait::async_trait;

pub use consumer::{Batch, ConsumerOptions, HandlerError, consume, consume_batched};
pub use embedded::EmbeddedBus;
pub use relay::{Relay, RelayHandle};

/// The streams, one per event family.
pub mod streams {
    pub const ALERTS: &str = "alerts";
    pub const INCIDENTS: &str = "incidents";
    pub const RUNBOOKS: &str = "runbooks";
    pub const NOTIFICATIONS: &str = "notifications";
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

/// A message handed to a consumer, with what is needed to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    /// The stream's sequence number of the message.
    pub seq: i64,
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
    ) -> Result<Vec<Delivery>>;
    /// Acknowledges a delivery and everything before it on this stream for this consumer.
    async fn ack(&self, stream: &str, consumer: &str, delivery: &Delivery) -> Result<()>;
    /// Gives up on a delivery: parks it for operators and moves on.
    async fn park(
        &self,
        stream: &str,
        consumer: &str,
        delivery: &Delivery,
        error: &str,
    ) -> Result<()>;
}

/// Builds an event envelope for the outbox: a fresh id, the time, and the payload.
pub fn outbox_event(
    stream: &str,
    subject: impl Into<String>,
    payload: firebreak_proto::v1::event::Payload,
) -> firebreak_storage::OutboxEvent {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = new_event_id();
    let event = firebreak_proto::v1::Event {
        id: id.clone(),
        occurred_at: Some(firebreak_proto::timestamp(now.as_micros() as i64)),
        traceparent: String::new(),
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
