//! The embedded bus: in-process delivery, durable in a SQLite log, for `firebreak up`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use firebreak_storage::{BusLog, BusMessage};
use tokio::sync::watch;

use crate::{Bus, Delivery, Message, Result};

/// The in-process bus. Messages live in a SQLite log so that a crash loses none: consumers
/// resume from their durable cursor. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    log: Arc<dyn BusLog>,
    /// Per stream, ticks when messages were appended to it: a consumer waiting on one stream
    /// is not woken (to query the log for nothing) by appends to the others.
    appended: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl EmbeddedBus {
    /// A bus over `log`.
    pub fn new(log: Arc<dyn BusLog>) -> Self {
        Self {
            log,
            appended: Arc::default(),
        }
    }

    fn tick(&self, stream: &str) {
        let mut streams = self.appended.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = streams.get(stream) {
            tx.send_modify(|n| *n += 1);
        } else {
            streams.insert(stream.to_owned(), watch::channel(1).0);
        }
    }

    fn subscribe(&self, stream: &str) -> watch::Receiver<u64> {
        let mut streams = self.appended.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .entry(stream.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, stream: &str, m: Message) -> Result<()> {
        let msg = BusMessage {
            id: m.id,
            subject: m.subject,
            payload: m.payload,
        };
        if self.log.append(stream, &msg).await? {
            self.tick(stream);
        }
        Ok(())
    }

    async fn publish_batch(&self, messages: Vec<(String, Message)>) -> Result<()> {
        let mut streams: Vec<String> = messages.iter().map(|(s, _)| s.clone()).collect();
        streams.sort_unstable();
        streams.dedup();
        let batch: Vec<(String, BusMessage)> = messages
            .into_iter()
            .map(|(stream, m)| {
                (
                    stream,
                    BusMessage {
                        id: m.id,
                        subject: m.subject,
                        payload: m.payload,
                    },
                )
            })
            .collect();
        if self.log.append_batch(&batch).await? > 0 {
            for stream in &streams {
                self.tick(stream);
            }
        }
        Ok(())
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let mut appended = self.subscribe(stream);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            appended.borrow_and_update();
            let batch = self.log.fetch(consumer, stream, max).await?;
            if !batch.is_empty() {
                return Ok(batch
                    .into_iter()
                    .map(|(seq, m)| {
                        Delivery::new(
                            Message {
                                id: m.id,
                                subject: m.subject,
                                payload: m.payload,
                            },
                            seq,
                        )
                    })
                    .collect());
            }
            if tokio::time::timeout_at(deadline, appended.changed())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    /// The log keeps one cursor per consumer: it moves to the highest of `deliveries` (never
    /// backwards: the log takes the maximum). That acknowledges exactly them because the
    /// consumer loop acknowledges a gap-free run in stream order; one process consumes an
    /// embedded bus, so there is no other replica whose deliveries it could cover.
    async fn ack(&self, stream: &str, consumer: &str, deliveries: &[Delivery]) -> Result<()> {
        match deliveries.iter().map(|d| d.seq).max() {
            Some(seq) => Ok(self.log.ack(consumer, stream, seq).await?),
            None => Ok(()),
        }
    }

    async fn park(&self, stream: &str, consumer: &str, d: &Delivery, error: &str) -> Result<()> {
        Ok(self.log.park(consumer, stream, d.seq, error).await?)
    }
}
