//! The outbox relay: publishes events that committed with a state change, then marks them.

use std::sync::Arc;
use std::time::Duration;

use firebreak_storage::Outbox;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Bus, Message};

/// Wakes a relay right after a commit, so events do not wait for the next poll. Cheap to clone.
#[derive(Clone, Default)]
pub struct RelayHandle {
    wake: Arc<Notify>,
}

impl RelayHandle {
    /// Tells the relay there is something to publish.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Moves one service's outbox to the bus.
pub struct Relay {
    pub outbox: Arc<dyn Outbox>,
    pub bus: Arc<dyn Bus>,
    pub handle: RelayHandle,
    /// Name for logs (the service).
    pub name: &'static str,
}

impl Relay {
    /// Publishes until `shutdown` fires, then publishes what is left once.
    ///
    /// A publish that fails leaves the row unpublished; it is retried on the next round. A
    /// crash between publish and mark publishes again after restart: the bus dedupes on the
    /// event id, so consumers see it once in the stream (and dedupe anyway).
    ///
    /// When the bus reads the outbox in place (the embedded bus), there is nothing to move:
    /// the relay only passes the wake-ups of commits on to the bus.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.bus.reads_in_place(&*self.outbox) {
            loop {
                tokio::select! {
                    () = self.handle.wake.notified() => self.bus.outbox_written(&*self.outbox),
                    () = shutdown.cancelled() => return,
                }
            }
        }
        let poll = Duration::from_millis(500);
        loop {
            let drained = match self.round().await {
                Ok(n) => n < BATCH,
                Err(e) => {
                    tracing::warn!(relay = self.name, error = %e, "outbox relay round failed");
                    true
                }
            };
            if shutdown.is_cancelled() {
                let _ = self.round().await;
                return;
            }
            if drained {
                tokio::select! {
                    () = self.handle.wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    async fn round(&self) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let pending = self.outbox.pending(BATCH as u32).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let messages = pending
            .iter()
            .map(|row| {
                let e = &row.event;
                (
                    e.stream.clone(),
                    Message {
                        id: e.id.clone(),
                        subject: e.subject.clone(),
                        payload: e.payload.clone(),
                    },
                )
            })
            .collect();
        self.bus.publish_batch(messages).await?;
        let done: Vec<i64> = pending.iter().map(|row| row.seq).collect();
        self.outbox.mark_published(&done).await?;
        Ok(pending.len())
    }
}

const BATCH: usize = 500;
