//! The NATS JetStream bus: one stream per event family, durable pull consumers shared by a
//! service's replicas, and a `FIREBREAK_PARKED` stream for what consumers gave up on.
//!
//! Layout on the server:
//! - family `alerts` → stream `FIREBREAK_ALERTS` on `firebreak.alerts.>`; a message with
//!   subject `alerts.received` goes to `firebreak.alerts.alerts.received`. File storage, a
//!   two-minute duplicate window keyed on `Nats-Msg-Id` (the event id).
//! - stream `FIREBREAK_PARKED` on `firebreak.parked.>`: parked messages with the
//!   `Firebreak-*` headers saying where they came from and why they were parked, on
//!   `firebreak.parked.<family>.<consumer>` (so each consumer's parked messages are counted
//!   by subject; those parked by releases before the consumer was in the subject are on
//!   `firebreak.parked.<family>`, listed and replayed as the others, counted by none).
//! - one durable pull consumer per (stream, consumer name), explicit acks; every replica of
//!   a service binds to the same durable, and JetStream hands each message to one of them.
//!
//! Every published message carries `Firebreak-Event-Id` and `Firebreak-Subject` (the
//! original subject: the NATS subject holds a sanitized copy), and `traceparent` when the
//! event has one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{
    Config as StreamConfig, LastRawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, ConnectOptions, Event, HeaderMap, Subject};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::watch::{WATCH_BUFFER, Watchers};
use crate::{Bus, Error, Inbound, Message, Result, Standing, streams};

/// The stream parked messages go to.
const PARKED_STREAM: &str = "FIREBREAK_PARKED";
/// The subject prefix of parked messages; the original stream's family and the consumer
/// follow.
const PARKED_PREFIX: &str = "firebreak.parked";
/// The family name that would collide with the parked stream.
const RESERVED_FAMILY: &str = "parked";

const HEADER_EVENT_ID: &str = "Firebreak-Event-Id";
const HEADER_SUBJECT: &str = "Firebreak-Subject";
const HEADER_STREAM: &str = "Firebreak-Stream";
const HEADER_STREAM_SEQ: &str = "Firebreak-Stream-Seq";
const HEADER_CONSUMER: &str = "Firebreak-Consumer";
const HEADER_ERROR: &str = "Firebreak-Error";
const HEADER_REPLAY_OF: &str = "Firebreak-Replay-Of";
const HEADER_TRACEPARENT: &str = "traceparent";
const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Publishes awaiting their acknowledgement at once in a batch: enough to keep the
/// connection busy, below the client's limit of pending acknowledgements.
const PUBLISH_WINDOW: usize = 1024;
/// How long past its expiry a pull request may go unanswered before the consumer is
/// suspected gone. The client gives up on it 5 s past its expiry.
const UNANSWERED_FETCH: Duration = Duration::from_secs(2);
/// How long acknowledging may take before it fails (the server is away).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// A parking reason longer than this is cut (headers are not meant for stack traces).
const MAX_ERROR_LEN: usize = 2048;

/// How Firebreak proves itself to NATS and protects the connection: user and password, a
/// token, an NKey seed or a credentials file (JWT and seed), and TLS with a CA and an
/// optional client certificate. Secrets never reach `Debug`.
#[derive(Clone, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub nkey_seed: Option<String>,
    pub credentials_file: Option<std::path::PathBuf>,
    /// Refuse a connection without TLS (also implied by a `tls://` URL).
    pub require_tls: bool,
    /// The CA the server's certificate is checked against (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "***"))
            .field("credentials_file", &self.credentials_file)
            .field("require_tls", &self.require_tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl NatsAuth {
    async fn apply(self, mut o: ConnectOptions) -> Result<ConnectOptions> {
        let kinds = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.nkey_seed.is_some(),
            self.credentials_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(Error::Nats(
                "give one of user/password, token, nkey_seed or credentials_file".into(),
            ));
        }
        if let Some(user) = self.user {
            o = o.user_and_password(user, self.password.unwrap_or_default());
        }
        if let Some(token) = self.token {
            o = o.token(token);
        }
        if let Some(seed) = self.nkey_seed {
            o = o.nkey(seed);
        }
        if let Some(path) = self.credentials_file {
            o = o.credentials_file(&path).await.map_err(|e| {
                Error::Nats(format!(
                    "cannot read credentials_file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(ca) = self.ca_file {
            o = o.add_root_certificates(ca);
        }
        match (self.client_cert_file, self.client_key_file) {
            (Some(cert), Some(key)) => o = o.add_client_certificate(cert, key),
            (None, None) => {}
            _ => {
                return Err(Error::Nats(
                    "client_cert_file and client_key_file go together".into(),
                ));
            }
        }
        Ok(o.require_tls(self.require_tls))
    }
}

/// How the NATS bus sets up its streams and consumers.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// How long JetStream waits for a delivery's acknowledgement before it hands the message
    /// out again (to any replica). The consumer loop extends it while a delivery is being
    /// retried, so it only needs to cover one handler call and a crash's detection.
    pub ack_wait: Duration,
    /// Deliveries after which JetStream stops delivering a message. Keep it above the
    /// consumer loop's `ConsumerOptions::max_deliveries`, which parks a message delivered
    /// that often: at or below it, a message that keeps crashing its consumer would be
    /// neither delivered nor parked.
    pub max_deliver: i64,
    /// Deliveries of a durable consumer awaiting acknowledgement at once, over all replicas;
    /// fetches wait while it is reached. Keep it at or above the replicas' summed
    /// `ConsumerOptions::batch`.
    pub max_ack_pending: i64,
    /// How long the streams remember message ids to drop a republished message (the outbox
    /// relay republishes after a crash between publish and mark).
    pub duplicate_window: Duration,
    /// How long the event streams keep messages; zero keeps them until removed by hand. A
    /// message older than this is gone whether or not every consumer has seen it.
    pub max_age: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 16,
            max_ack_pending: 1000,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

/// A message parked in `FIREBREAK_PARKED`, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedMessage {
    /// Its sequence in `FIREBREAK_PARKED`: what [`NatsBus::replay`] takes.
    pub seq: u64,
    /// The family stream it was consumed from (`alerts`).
    pub stream: String,
    /// Its sequence in that stream.
    pub stream_seq: u64,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Why.
    pub error: String,
    pub event_id: String,
    pub subject: String,
    /// The encoded `firebreak.v1.Event`, as published.
    pub payload: Vec<u8>,
    pub parked_at: SystemTime,
}

/// What acknowledging a JetStream delivery takes.
#[derive(Debug)]
pub(crate) struct Handle {
    /// The delivery's `$JS.ACK…` reply subject.
    reply: Subject,
    /// The parked sequence this message is a replay of, if it is one.
    replay_of: Option<String>,
}

/// The bus on NATS JetStream. Cheap to clone; clones share the connection.
///
/// The client reconnects forever: a restarted server is picked up without the caller doing
/// anything, and calls made while it is away fail (and are retried by the relay and the
/// consumer loop) rather than block.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    options: NatsOptions,
    /// Families whose stream was created or updated by this process.
    streams: Mutex<HashSet<String>>,
    /// Durable consumers bound to, by (family, consumer).
    consumers: Mutex<HashMap<(String, String), PullConsumer>>,
    /// The live readers of watched families: a core NATS subscription each.
    watchers: Arc<Watchers>,
}

impl NatsBus {
    /// Connects to the NATS server(s) at `url` (comma-separated for several) and creates or
    /// updates the streams of every event family and the parked stream. Connecting again with
    /// the same options changes nothing on the server.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self> {
        Self::connect_with(url, options, NatsAuth::default()).await
    }

    /// [`NatsBus::connect`] with credentials and TLS.
    pub async fn connect_with(url: &str, options: NatsOptions, auth: NatsAuth) -> Result<Self> {
        let connect = auth.apply(ConnectOptions::new()).await?;
        let client = connect
            .name("firebreak")
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    Event::Connected => tracing::info!("nats connected"),
                    Event::Disconnected => tracing::warn!("nats disconnected, reconnecting"),
                    Event::SlowConsumer(sid) => tracing::warn!(sid, "nats slow consumer"),
                    other => tracing::warn!(event = %other, "nats event"),
                }
            })
            .connect(url)
            .await
            .map_err(nats("connecting"))?;
        let js = jetstream::new(client.clone());
        let bus = Self {
            inner: Arc::new(Inner {
                client,
                js,
                options,
                streams: Mutex::new(HashSet::new()),
                consumers: Mutex::new(HashMap::new()),
                watchers: Arc::default(),
            }),
        };
        bus.inner
            .js
            .create_or_update_stream(StreamConfig {
                name: PARKED_STREAM.to_owned(),
                description: Some("Firebreak: messages consumers gave up on".to_owned()),
                subjects: vec![format!("{PARKED_PREFIX}.>")],
                storage: StorageType::File,
                retention: RetentionPolicy::Limits,
                num_replicas: 1,
                duplicate_window: bus.inner.options.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(nats("creating stream FIREBREAK_PARKED"))?;
        for family in [
            streams::ALERTS,
            streams::INCIDENTS,
            streams::RUNBOOKS,
            streams::NOTIFICATIONS,
            streams::AUDIT,
        ] {
            bus.ensure_stream(family).await?;
        }
        Ok(bus)
    }

    /// Whether the client is connected right now (it reconnects by itself when not).
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == State::Connected
    }

    /// Up to `limit` parked messages, oldest first.
    pub async fn parked(&self, limit: usize) -> Result<Vec<ParkedMessage>> {
        let stream = self
            .inner
            .js
            .get_stream_no_info(PARKED_STREAM)
            .await
            .map_err(nats("opening FIREBREAK_PARKED"))?;
        let mut out = Vec::new();
        let mut seq = 1;
        let filter = format!("{PARKED_PREFIX}.>");
        while out.len() < limit {
            match stream.get_first_raw_message_by_subject(&filter, seq).await {
                Ok(m) => {
                    seq = m.sequence + 1;
                    out.push(parked_message(m));
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(nats("reading FIREBREAK_PARKED")(e)),
            }
        }
        Ok(out)
    }

    /// Publishes parked message `parked_seq` to its stream again, then removes it from the
    /// parked stream.
    ///
    /// Every consumer of that stream receives it again, not only the one that parked it:
    /// consumers dedupe on the event id, so those that handled it skip it, and the one that
    /// never did handles it now. The republished message has `Nats-Msg-Id`
    /// `<event id>:replay:<parked seq>`, so the stream's duplicate window does not drop it as
    /// the original, while replaying the same parked message twice stores it once.
    pub async fn replay(&self, parked_seq: u64) -> Result<()> {
        let stream = self
            .inner
            .js
            .get_stream_no_info(PARKED_STREAM)
            .await
            .map_err(nats("opening FIREBREAK_PARKED"))?;
        let raw = match stream.get_raw_message(parked_seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Err(Error::NotFound(format!("parked message {parked_seq}")));
            }
            Err(e) => return Err(nats("reading FIREBREAK_PARKED")(e)),
        };
        let parked = parked_message(raw);
        if parked.stream.is_empty() {
            return Err(Error::Invalid(format!(
                "parked message {parked_seq} does not say which stream it came from"
            )));
        }
        self.ensure_stream(&parked.stream).await?;
        let message = Message {
            id: parked.event_id.clone(),
            subject: parked.subject.clone(),
            payload: parked.payload,
        };
        let (subject, mut publish) = outbound(&parked.stream, &message);
        publish = publish
            .header(
                HEADER_MSG_ID,
                header_value(&format!("{}:replay:{parked_seq}", parked.event_id)),
            )
            .header(HEADER_REPLAY_OF, parked_seq.to_string());
        self.inner
            .js
            .send_publish(subject, publish)
            .await
            .map_err(nats("replaying"))?
            .await
            .map_err(nats("replaying"))?;
        match stream.delete_message(parked_seq).await {
            Ok(_) => Ok(()),
            // Gone already: another operator's replay of it raced this one, and the duplicate
            // window stored the message once.
            Err(e) if e.to_string().contains("no message found") => Ok(()),
            Err(e) => Err(nats("removing a replayed message from FIREBREAK_PARKED")(e)),
        }
    }

    /// Creates or updates the stream of `family` unless this process did already.
    async fn ensure_stream(&self, family: &str) -> Result<()> {
        if self.lock_streams().contains(family) {
            return Ok(());
        }
        let name = stream_name(family)?;
        let config = StreamConfig {
            name: name.clone(),
            description: Some(format!("Firebreak: the {family} event family")),
            subjects: vec![format!("{}.>", subject_prefix(family))],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            num_replicas: 1,
            duplicate_window: self.inner.options.duplicate_window,
            max_age: self.inner.options.max_age,
            ..Default::default()
        };
        self.inner
            .js
            .create_or_update_stream(config)
            .await
            .map_err(|e| Error::Nats(format!("creating stream {name}: {e}")))?;
        self.lock_streams().insert(family.to_owned());
        Ok(())
    }

    /// The durable pull consumer `consumer` on `family`'s stream, created or updated on first
    /// use by this process.
    async fn consumer(&self, family: &str, consumer: &str) -> Result<PullConsumer> {
        let key = (family.to_owned(), consumer.to_owned());
        if let Some(c) = self.lock_consumers().get(&key) {
            return Ok(c.clone());
        }
        self.ensure_stream(family).await?;
        let stream = stream_name(family)?;
        let durable = name_token(consumer);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("Firebreak consumer {consumer}")),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.inner.options.ack_wait,
            max_deliver: self.inner.options.max_deliver,
            max_ack_pending: self.inner.options.max_ack_pending,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let c: PullConsumer = match self
            .inner
            .js
            .create_consumer_on_stream(config, &stream)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // Perhaps the stream is gone: make sure of it next time.
                self.forget(family, None);
                return Err(Error::Nats(format!(
                    "creating consumer {durable} on {stream}: {e}"
                )));
            }
        };
        self.lock_consumers().insert(key, c.clone());
        Ok(c)
    }

    /// Forgets what this process created, so the next call creates it again (the server may
    /// have lost it).
    fn forget(&self, family: &str, consumer: Option<&str>) {
        match consumer {
            Some(c) => {
                self.lock_consumers()
                    .remove(&(family.to_owned(), c.to_owned()));
            }
            None => {
                self.lock_streams().remove(family);
                self.lock_consumers().retain(|(f, _), _| f != family);
            }
        }
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_consumers(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PullConsumer>> {
        self.inner
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `messages` pipelined: every publish is sent before their acknowledgements are
    /// awaited (at most [`PUBLISH_WINDOW`] outstanding), and it returns once the server has
    /// stored (or deduplicated) them all. On failure it says whether a stream was missing.
    async fn publish_all(
        &self,
        messages: &[(String, Message)],
    ) -> std::result::Result<(), (Error, bool)> {
        let mut pending = FuturesUnordered::new();
        for (family, message) in messages {
            self.ensure_stream(family).await.map_err(|e| (e, false))?;
            let (subject, publish) = outbound(family, message);
            let ack = self
                .inner
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| self.publish_error(family, e))?;
            pending.push(acked(family, ack));
            if pending.len() >= PUBLISH_WINDOW
                && let Some(Err((family, e))) = pending.next().await
            {
                return Err(self.publish_error(family, e));
            }
        }
        while let Some(result) = pending.next().await {
            if let Err((family, e)) = result {
                return Err(self.publish_error(family, e));
            }
        }
        Ok(())
    }

    fn publish_error(
        &self,
        family: &str,
        e: async_nats::error::Error<PublishErrorKind>,
    ) -> (Error, bool) {
        let missing = e.kind() == PublishErrorKind::StreamNotFound;
        if missing {
            // The server lost the stream (a fresh server without its store): forget it, so
            // that it is created again.
            self.forget(family, None);
        }
        (Error::Nats(format!("publishing to {family}: {e}")), missing)
    }

    /// Sends `kind` for each delivery, then flushes, so that the acknowledgements have left
    /// for the server when it returns.
    ///
    /// Bounded by [`ACK_TIMEOUT`]: while the client is reconnecting, acknowledgements queue
    /// and the flush waits for the connection; the caller must not wait for ever (the message
    /// is redelivered if the acknowledgement never lands).
    async fn send_acks(&self, deliveries: &[Inbound], kind: AckKind) -> Result<()> {
        let handles = deliveries.iter().map(handle).collect::<Result<Vec<_>>>()?;
        let send = async {
            for h in handles {
                self.inner
                    .client
                    .publish(h.reply.clone(), kind.into())
                    .await
                    .map_err(nats("acknowledging"))?;
            }
            self.inner
                .client
                .flush()
                .await
                .map_err(nats("acknowledging"))
        };
        tokio::time::timeout(ACK_TIMEOUT, send)
            .await
            .unwrap_or_else(|_| Err(Error::Nats("acknowledging: timed out".to_owned())))
    }
}

async fn acked(
    family: &str,
    ack: PublishAckFuture,
) -> std::result::Result<(), (&str, async_nats::error::Error<PublishErrorKind>)> {
    match ack.await {
        Ok(_) => Ok(()),
        Err(e) => Err((family, e)),
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, stream: &str, message: Message) -> Result<()> {
        self.publish_batch(vec![(stream.to_owned(), message)]).await
    }

    async fn publish_batch(&self, messages: Vec<(String, Message)>) -> Result<()> {
        match self.publish_all(&messages).await {
            Ok(()) => Ok(()),
            // The stream was missing and is forgotten now: one more try creates it. Messages
            // stored by the first try are dropped as duplicates.
            Err((e, true)) => {
                tracing::warn!(error = %e, "stream missing on the server; creating it again");
                self.publish_all(&messages).await.map_err(|(e, _)| e)
            }
            Err((e, false)) => Err(e),
        }
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Inbound>> {
        let pull = self.consumer(stream, consumer).await?;
        let mut request = pull.fetch().max_messages(max.max(1) as usize);
        if !wait.is_zero() {
            request = request.expires(wait);
        }
        let mut batch = match request.messages().await {
            Ok(b) => b,
            Err(e) => {
                self.forget(stream, Some(consumer));
                return Err(Error::Nats(format!("fetching from {stream}: {e}")));
            }
        };
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        while let Some(item) = batch.next().await {
            match item {
                Ok(m) => {
                    if let Some(d) = delivery(stream, m) {
                        out.push(d);
                    }
                }
                Err(e) if out.is_empty() => {
                    self.forget(stream, Some(consumer));
                    return Err(Error::Nats(format!("fetching from {stream}: {e}")));
                }
                Err(e) => {
                    // What arrived before the error is handed out; the rest comes next time.
                    tracing::debug!(stream, consumer, error = %e, "fetch ended early");
                    break;
                }
            }
        }
        if out.is_empty() && started.elapsed() > wait + UNANSWERED_FETCH {
            // The server never answered the pull request, not even with its timeout status:
            // the consumer is gone (deleted, or a server without its store), or the
            // connection is. Binding anew next time costs one request and recreates it.
            tracing::debug!(
                stream,
                consumer,
                "pull request unanswered; binding the consumer anew"
            );
            self.forget(stream, Some(consumer));
        }
        Ok(out)
    }

    async fn ack(&self, _stream: &str, _consumer: &str, deliveries: &[Inbound]) -> Result<()> {
        self.send_acks(deliveries, AckKind::Ack).await
    }

    async fn in_progress(
        &self,
        _stream: &str,
        _consumer: &str,
        deliveries: &[Inbound],
    ) -> Result<()> {
        self.send_acks(deliveries, AckKind::Progress).await
    }

    fn progress_interval(&self) -> Option<Duration> {
        Some((self.inner.options.ack_wait / 3).max(Duration::from_millis(100)))
    }

    async fn release(&self, _stream: &str, _consumer: &str, deliveries: &[Inbound]) -> Result<()> {
        self.send_acks(deliveries, AckKind::Nak(None)).await
    }

    /// Each consumer this process bound: its `num_pending` and `num_ack_pending` (one
    /// request each), and its parked messages, counted by subject (one request for all).
    async fn standing(&self) -> Result<Vec<Standing>> {
        let consumers: Vec<((String, String), PullConsumer)> = self
            .lock_consumers()
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        if consumers.is_empty() {
            return Ok(Vec::new());
        }
        let parked_stream = self
            .inner
            .js
            .get_stream_no_info(PARKED_STREAM)
            .await
            .map_err(nats("opening FIREBREAK_PARKED"))?;
        let mut subjects = parked_stream
            .info_with_subjects(format!("{PARKED_PREFIX}.>"))
            .await
            .map_err(nats("counting parked messages"))?;
        let mut parked: HashMap<String, u64> = HashMap::new();
        while let Some(next) = subjects.next().await {
            let (subject, n) = next.map_err(nats("counting parked messages"))?;
            parked.insert(subject, n as u64);
        }
        let mut out = Vec::with_capacity(consumers.len());
        for ((family, consumer), c) in consumers {
            let info = c
                .get_info()
                .await
                .map_err(nats("reading a consumer's state"))?;
            out.push(Standing {
                backlog: info.num_pending + info.num_ack_pending as u64,
                parked: parked
                    .get(&parked_subject(&family, &consumer))
                    .copied()
                    .unwrap_or(0),
                stream: family,
                consumer,
            });
        }
        Ok(out)
    }

    /// A core NATS subscription to the family's subjects: it receives what is published
    /// there while it exists, as the stream does, and nothing from before.
    async fn watch(&self, stream: &str) -> Result<tokio::sync::broadcast::Receiver<Message>> {
        if let Some(rx) = self.inner.watchers.join(stream) {
            return Ok(rx);
        }
        stream_name(stream)?;
        let client = &self.inner.client;
        let sub = client
            .subscribe(format!("{}.>", subject_prefix(stream)))
            .await
            .map_err(nats("subscribing"))?;
        // The server has the subscription once the flush returns: from then on nothing
        // published is missed.
        client
            .flush()
            .await
            .map_err(nats("flushing a subscription"))?;
        let (tx, _) = tokio::sync::broadcast::channel(WATCH_BUFFER);
        let (rx, started) = self.inner.watchers.start(stream, tx.clone());
        if started {
            tokio::spawn(read_live(
                self.inner.watchers.clone(),
                stream.to_owned(),
                sub,
                tx,
            ));
        }
        Ok(rx)
    }

    async fn park(&self, stream: &str, consumer: &str, d: &Inbound, error: &str) -> Result<()> {
        let handle = handle(d)?;
        // The same delivery parked twice (the first acknowledgement got lost) is stored once;
        // a replay that fails again is parked anew.
        let mut msg_id = format!("{consumer}:{}", d.message.id);
        if let Some(replay_of) = &handle.replay_of {
            msg_id.push_str(":replay:");
            msg_id.push_str(replay_of);
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, header_value(&msg_id));
        headers.insert(HEADER_STREAM, header_value(stream));
        headers.insert(HEADER_CONSUMER, header_value(consumer));
        headers.insert(HEADER_ERROR, header_value(truncate(error, MAX_ERROR_LEN)));
        headers.insert(HEADER_EVENT_ID, header_value(&d.message.id));
        headers.insert(HEADER_SUBJECT, header_value(&d.message.subject));
        headers.insert(HEADER_STREAM_SEQ, d.seq.to_string());
        if let Some(traceparent) = traceparent(&d.message.payload) {
            headers.insert(HEADER_TRACEPARENT, traceparent);
        }
        let subject = parked_subject(stream, consumer);
        let publish = Publish::build()
            .payload(d.message.payload.clone().into())
            .headers(headers);
        // Stored in the parked stream before the original is let go: a failure here leaves
        // the delivery unacknowledged, to come again.
        self.inner
            .js
            .send_publish(subject, publish)
            .await
            .map_err(nats("parking"))?
            .await
            .map_err(nats("parking"))?;
        self.send_acks(std::slice::from_ref(d), AckKind::Term).await
    }
}

/// The handle of a delivery from this adapter.
/// Hands what `sub` receives (every message published on a family's subjects, as the
/// stream stores it) to the family's watchers, until nobody watches or the client closes.
async fn read_live(
    watchers: Arc<Watchers>,
    family: String,
    mut sub: async_nats::Subscriber,
    tx: tokio::sync::broadcast::Sender<Message>,
) {
    let prefix = format!("{}.", subject_prefix(&family));
    loop {
        match tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            Ok(Some(m)) => {
                let header = |name: &str| {
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                let Some(id) = header(HEADER_EVENT_ID) else {
                    continue;
                };
                let subject = header(HEADER_SUBJECT).unwrap_or_else(|| {
                    m.subject
                        .as_str()
                        .strip_prefix(&prefix)
                        .unwrap_or(m.subject.as_str())
                        .to_owned()
                });
                // Nobody listening right now is not an error: the check below ends the reader.
                let _ = tx.send(Message {
                    id,
                    subject,
                    payload: m.payload.to_vec(),
                });
            }
            Ok(None) => {
                watchers.forget(&family, &tx);
                return;
            }
            Err(_) => {}
        }
        if !watchers.still_watched(&family, &tx) {
            return;
        }
    }
}

fn handle(d: &Inbound) -> Result<&Handle> {
    d.nats.as_deref().ok_or_else(|| {
        Error::Invalid(format!(
            "delivery of {} did not come from the NATS bus",
            d.message.id
        ))
    })
}

/// The NATS subject and the publish (headers included) of `message` on `family`'s stream.
fn outbound(family: &str, message: &Message) -> (String, Publish) {
    let subject = format!(
        "{}.{}",
        subject_prefix(family),
        subject_tokens(&message.subject)
    );
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, header_value(&message.id));
    headers.insert(HEADER_EVENT_ID, header_value(&message.id));
    headers.insert(HEADER_SUBJECT, header_value(&message.subject));
    if let Some(traceparent) = traceparent(&message.payload) {
        headers.insert(HEADER_TRACEPARENT, traceparent);
    }
    let publish = Publish::build()
        .payload(message.payload.clone().into())
        .headers(headers);
    (subject, publish)
}

/// The W3C traceparent of an encoded event, when it decodes and has one.
fn traceparent(payload: &[u8]) -> Option<String> {
    let traceparent = firebreak_proto::event_traceparent(payload);
    (!traceparent.is_empty()).then(|| header_value(&traceparent))
}

/// A fetched JetStream message as a delivery; `None` (logged) for one that cannot be
/// acknowledged, which a JetStream consumer never hands out.
fn delivery(family: &str, m: jetstream::Message) -> Option<Inbound> {
    let (seq, attempt) = match m.info() {
        Ok(info) => (
            i64::try_from(info.stream_sequence).unwrap_or(i64::MAX),
            u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
        ),
        Err(e) => {
            tracing::warn!(stream = family, subject = %m.subject, error = %e, "skipping a message without JetStream metadata");
            return None;
        }
    };
    let reply = m.message.reply.clone()?;
    let header = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let id = header(HEADER_EVENT_ID)
        .or_else(|| header(HEADER_MSG_ID))
        .unwrap_or_else(|| format!("{}:{seq}", stream_name_or_family(family)));
    let subject = header(HEADER_SUBJECT).unwrap_or_else(|| {
        let prefix = format!("{}.", subject_prefix(family));
        m.subject
            .as_str()
            .strip_prefix(&prefix)
            .unwrap_or(m.subject.as_str())
            .to_owned()
    });
    let replay_of = header(HEADER_REPLAY_OF);
    Some(Inbound {
        message: Message {
            id,
            subject,
            payload: m.payload.to_vec(),
        },
        seq,
        attempt,
        nats: Some(Arc::new(Handle { reply, replay_of })),
    })
}

fn parked_message(m: StreamMessage) -> ParkedMessage {
    let header = |name: &str| {
        m.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    ParkedMessage {
        seq: m.sequence,
        stream: header(HEADER_STREAM),
        stream_seq: header(HEADER_STREAM_SEQ).parse().unwrap_or_default(),
        consumer: header(HEADER_CONSUMER),
        error: header(HEADER_ERROR),
        event_id: header(HEADER_EVENT_ID),
        subject: header(HEADER_SUBJECT),
        payload: m.payload.to_vec(),
        parked_at: m.time.into(),
    }
}

/// Where `consumer` parks what it gave up on of `family`.
fn parked_subject(family: &str, consumer: &str) -> String {
    format!("{PARKED_PREFIX}.{}.{}", token(family), token(consumer))
}

/// `FIREBREAK_ALERTS` for family `alerts`; the parked stream's family is refused.
fn stream_name(family: &str) -> Result<String> {
    if family == RESERVED_FAMILY {
        return Err(Error::Invalid(format!(
            "stream family {family:?} is reserved for parked messages"
        )));
    }
    Ok(format!("FIREBREAK_{}", name_token(family).to_uppercase()))
}

fn stream_name_or_family(family: &str) -> String {
    stream_name(family).unwrap_or_else(|_| family.to_owned())
}

/// `firebreak.alerts` for family `alerts`.
fn subject_prefix(family: &str) -> String {
    format!("firebreak.{}", token(family))
}

/// A subject as NATS subject tokens: each dot-separated part made a valid token, empty parts
/// (and an empty subject) filled in.
fn subject_tokens(subject: &str) -> String {
    subject.split('.').map(token).collect::<Vec<_>>().join(".")
}

/// One valid NATS subject token: no separators, wildcards, whitespace or control characters,
/// and not empty.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if t.is_empty() { "_".to_owned() } else { t }
}

/// A valid stream or consumer name: letters, digits, `-` and `_` only.
fn name_token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".to_owned() } else { t }
}

/// A valid header value: no line breaks or other control characters (the client would panic).
fn header_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Maps a NATS error to the bus's, saying what was being done.
fn nats<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Nats(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_made_of_valid_tokens() {
        assert_eq!(subject_tokens("alerts.received"), "alerts.received");
        assert_eq!(subject_tokens("a b.*.>"), "a_b._._");
        assert_eq!(subject_tokens("a..b."), "a._.b._");
        assert_eq!(subject_tokens(""), "_");
        assert_eq!(subject_prefix("alerts"), "firebreak.alerts");
    }

    #[test]
    fn stream_and_consumer_names_are_sanitized_and_parked_is_reserved() {
        assert_eq!(stream_name("alerts").unwrap(), "FIREBREAK_ALERTS");
        assert_eq!(stream_name("a.b c").unwrap(), "FIREBREAK_A_B_C");
        assert!(matches!(stream_name("parked"), Err(Error::Invalid(_))));
        assert_eq!(name_token("orchestration.v2"), "orchestration_v2");
    }

    #[test]
    fn header_values_lose_line_breaks_and_long_errors_are_cut() {
        assert_eq!(header_value("a\r\nb"), "a  b");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
