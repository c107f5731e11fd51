//! The embedded bus: in-process delivery, durable in SQLite, for `firebreak up`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use firebreak_storage::{BusLog, BusMessage, Outbox, OutboxLog};
use tokio::sync::{broadcast, watch};

use crate::watch::{WATCH_BUFFER, Watchers};
use crate::{BACKLOG_CAP, Bus, Error, Inbound, Message, Result, Standing};

/// The in-process bus. Messages are durable in SQLite, so a crash loses none: consumers
/// resume from their durable cursor. Cheap to clone.
///
/// A stream given its producer's outbox ([`EmbeddedBus::read_in_place`]) is served straight
/// from that service's database: the events committed with a state change are the stream,
/// and nothing copies them. Other streams live in the bus's own log, where a relay publishes.
/// A consumer of a stream read in place first drains what a relay copied into the log before
/// (a data directory of an earlier version), then moves to the outbox where that relay
/// stopped.
#[derive(Clone)]
pub struct EmbeddedBus {
    log: Arc<dyn BusLog>,
    /// Streams read in place, each from the outbox of the one service producing it.
    sources: Arc<HashMap<String, Arc<dyn OutboxLog>>>,
    /// Where each consumer of a stream read in place is, as far as this process knows.
    places: Arc<Mutex<HashMap<(String, String), Place>>>,
    /// Per stream, ticks when messages were appended to it: a consumer waiting on one stream
    /// is not woken (to query for nothing) by appends to the others.
    appended: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// The live readers of watched streams.
    watchers: Arc<Watchers>,
    /// The (stream, consumer) pairs fetched for, whose standing `/metrics` shows.
    served: Arc<Mutex<BTreeSet<(String, String)>>>,
}

/// Where a consumer of a stream read in place reads.
#[derive(Clone, Copy)]
enum Place {
    /// Still in the bus's log: messages a relay copied there before.
    Log,
    /// In the outbox, past this sequence number.
    Outbox(i64),
}

/// Acknowledgements crossing a multiple of this sweep the outbox of old, consumed events.
const SWEEP_EVERY: i64 = 4096;

impl EmbeddedBus {
    /// A bus over `log`.
    pub fn new(log: Arc<dyn BusLog>) -> Self {
        Self {
            log,
            sources: Arc::default(),
            places: Arc::default(),
            appended: Arc::default(),
            watchers: Arc::default(),
            served: Arc::default(),
        }
    }

    /// Serves `stream` from `outbox`, the outbox of the service producing it: consumers read
    /// its committed events in place. The service's relay then only passes on wake-ups.
    #[must_use]
    pub fn read_in_place(mut self, stream: &str, outbox: Arc<dyn OutboxLog>) -> Self {
        Arc::make_mut(&mut self.sources).insert(stream.to_owned(), outbox);
        self
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

    fn refuse_in_place(&self, stream: &str) -> Result<()> {
        if self.sources.contains_key(stream) {
            return Err(Error::Invalid(format!(
                "stream {stream} is read in place from its producer's outbox; nothing publishes to it"
            )));
        }
        Ok(())
    }

    /// Where `consumer` reads `stream` (read in place): known, or its durable cursor.
    async fn place(&self, consumer: &str, stream: &str) -> Result<Place> {
        let key = (consumer.to_owned(), stream.to_owned());
        if let Some(p) = self.places().get(&key) {
            return Ok(*p);
        }
        let place = match self.log.outbox_cursor(consumer, stream).await? {
            Some(seq) => Place::Outbox(seq),
            None => Place::Log,
        };
        self.places().insert(key, place);
        Ok(place)
    }

    fn places(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Place>> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `consumer` is past `seq` in `stream`'s outbox (never backwards).
    fn moved(&self, consumer: &str, stream: &str, seq: i64) {
        let mut places = self.places();
        let place = places
            .entry((consumer.to_owned(), stream.to_owned()))
            .or_insert(Place::Outbox(seq));
        *place = match *place {
            Place::Outbox(before) => Place::Outbox(before.max(seq)),
            Place::Log => Place::Outbox(seq),
        };
    }

    /// Up to `max` deliveries of `stream`, read in place from `source`, for `consumer`.
    async fn fetch_in_place(
        &self,
        source: &dyn OutboxLog,
        stream: &str,
        consumer: &str,
        max: u32,
    ) -> Result<Vec<Inbound>> {
        match self.place(consumer, stream).await? {
            Place::Log => {
                let batch = self.log.fetch(consumer, stream, max).await?;
                if !batch.is_empty() {
                    return Ok(from_log(batch));
                }
                // The log is drained: on into the outbox, where the relay stopped copying.
                let start = source.start().await?;
                self.log.move_outbox_cursor(consumer, stream, start).await?;
                self.moved(consumer, stream, start);
                Box::pin(self.fetch_in_place(source, stream, consumer, max)).await
            }
            Place::Outbox(after) => Ok(source
                .since(stream, after, max)
                .await?
                .into_iter()
                .map(|row| {
                    Inbound::new(
                        Message {
                            id: row.event.id,
                            subject: row.event.subject,
                            payload: row.event.payload,
                        },
                        row.seq,
                    )
                })
                .collect()),
        }
    }

    /// Moves `consumer`'s cursor in `stream` (read in place) to `seq`; now and then sweeps
    /// the outbox of the events every consumer is past.
    async fn ack_in_place(
        &self,
        source: &dyn OutboxLog,
        stream: &str,
        consumer: &str,
        seq: i64,
    ) -> Result<()> {
        let before = match self.place(consumer, stream).await? {
            Place::Log => return Ok(self.log.ack(consumer, stream, seq).await?),
            Place::Outbox(before) => before,
        };
        self.log.move_outbox_cursor(consumer, stream, seq).await?;
        self.moved(consumer, stream, seq);
        if before / SWEEP_EVERY != seq / SWEEP_EVERY {
            // The acknowledgement stands; a sweep that failed is done by the next one.
            let swept = match self.log.min_outbox_cursor(stream).await {
                Ok(Some(upto)) => source.sweep(stream, upto).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = swept {
                tracing::warn!(stream, error = %e, "sweeping the outbox failed");
            }
        }
        Ok(())
    }
}

/// Rows a live reader takes from an outbox at a time.
const LIVE_BATCH: u32 = 256;

/// Hands `stream`'s rows committed after `after` to its watchers as they commit, until
/// nobody watches.
async fn read_live(
    watchers: Arc<Watchers>,
    stream: String,
    source: Arc<dyn OutboxLog>,
    mut appended: watch::Receiver<u64>,
    mut after: i64,
    tx: broadcast::Sender<Message>,
) {
    loop {
        appended.borrow_and_update();
        let rows = match source.since(&stream, after, LIVE_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(stream, error = %e, "reading the outbox for watchers failed");
                Vec::new()
            }
        };
        let full = rows.len() == LIVE_BATCH as usize;
        for row in rows {
            after = row.seq;
            // Nobody listening right now is not an error: the check below ends the reader.
            let _ = tx.send(Message {
                id: row.event.id,
                subject: row.event.subject,
                payload: row.event.payload,
            });
        }
        if !watchers.still_watched(&stream, &tx) {
            return;
        }
        if !full {
            // Woken by commits; at least every second, to notice that nobody watches.
            let _ = tokio::time::timeout(Duration::from_secs(1), appended.changed()).await;
        }
    }
}

fn from_log(batch: Vec<(i64, BusMessage)>) -> Vec<Inbound> {
    batch
        .into_iter()
        .map(|(seq, m)| {
            Inbound::new(
                Message {
                    id: m.id,
                    subject: m.subject,
                    payload: m.payload,
                },
                seq,
            )
        })
        .collect()
}

/// Whether `source` is `outbox` (the same store).
fn same(source: &Arc<dyn OutboxLog>, outbox: &dyn Outbox) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(source), std::ptr::from_ref(outbox))
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, stream: &str, m: Message) -> Result<()> {
        self.refuse_in_place(stream)?;
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
        for stream in &streams {
            self.refuse_in_place(stream)?;
        }
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
    ) -> Result<Vec<Inbound>> {
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((stream.to_owned(), consumer.to_owned()));
        let mut appended = self.subscribe(stream);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            appended.borrow_and_update();
            let batch = match self.sources.get(stream) {
                Some(source) => {
                    self.fetch_in_place(&**source, stream, consumer, max)
                        .await?
                }
                None => from_log(self.log.fetch(consumer, stream, max).await?),
            };
            if !batch.is_empty() {
                return Ok(batch);
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
    async fn ack(&self, stream: &str, consumer: &str, deliveries: &[Inbound]) -> Result<()> {
        let Some(seq) = deliveries.iter().map(|d| d.seq).max() else {
            return Ok(());
        };
        match self.sources.get(stream) {
            Some(source) => self.ack_in_place(&**source, stream, consumer, seq).await,
            None => Ok(self.log.ack(consumer, stream, seq).await?),
        }
    }

    async fn park(&self, stream: &str, consumer: &str, d: &Inbound, error: &str) -> Result<()> {
        if self.sources.contains_key(stream)
            && let Place::Outbox(_) = self.place(consumer, stream).await?
        {
            let m = &d.message;
            let copy = BusMessage {
                id: m.id.clone(),
                subject: m.subject.clone(),
                payload: m.payload.clone(),
            };
            self.log
                .park_event(consumer, stream, d.seq, &copy, error)
                .await?;
            self.moved(consumer, stream, d.seq);
            return Ok(());
        }
        Ok(self.log.park(consumer, stream, d.seq, error).await?)
    }

    /// Streams read in place only: the rows committed after the outbox's head, read by one
    /// task per stream whenever the producer commits.
    async fn watch(&self, stream: &str) -> Result<broadcast::Receiver<Message>> {
        if let Some(rx) = self.watchers.join(stream) {
            return Ok(rx);
        }
        let Some(source) = self.sources.get(stream).cloned() else {
            return Err(Error::Invalid(format!(
                "stream {stream} is not read in place; it cannot be watched"
            )));
        };
        // Subscribed to commits before the head is read: none after it goes unnoticed.
        let appended = self.subscribe(stream);
        let after = source.head().await?;
        let (tx, _) = broadcast::channel(WATCH_BUFFER);
        let (rx, started) = self.watchers.start(stream, tx.clone());
        if started {
            tokio::spawn(read_live(
                self.watchers.clone(),
                stream.to_owned(),
                source,
                appended,
                after,
                tx,
            ));
        }
        Ok(rx)
    }

    /// Each consumer's events after its cursor, in the outbox read in place (a walk of the
    /// rows after the cursor, at most [`BACKLOG_CAP`]) or in the log, and its parked ones.
    async fn standing(&self) -> Result<Vec<Standing>> {
        let served: Vec<(String, String)> = self
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(served.len());
        for (stream, consumer) in served {
            let backlog = match self.sources.get(&stream) {
                None => {
                    self.log
                        .count_unacked(&consumer, &stream, BACKLOG_CAP)
                        .await?
                }
                Some(source) => match self.place(&consumer, &stream).await? {
                    Place::Outbox(after) => source.count_since(&stream, after, BACKLOG_CAP).await?,
                    // Still draining the log: the outbox follows from where the relay stopped.
                    Place::Log => {
                        let in_log = self
                            .log
                            .count_unacked(&consumer, &stream, BACKLOG_CAP)
                            .await?;
                        let start = source.start().await?;
                        let in_outbox = source.count_since(&stream, start, BACKLOG_CAP).await?;
                        (in_log + in_outbox).min(BACKLOG_CAP)
                    }
                },
            };
            let parked = self.log.count_parked(&consumer, &stream).await?;
            out.push(Standing {
                stream,
                consumer,
                backlog,
                parked,
            });
        }
        Ok(out)
    }

    fn reads_in_place(&self, outbox: &dyn Outbox) -> bool {
        self.sources.values().any(|s| same(s, outbox))
    }

    fn outbox_written(&self, outbox: &dyn Outbox) {
        for (stream, source) in self.sources.iter() {
            if same(source, outbox) {
                self.tick(stream);
            }
        }
    }
}
