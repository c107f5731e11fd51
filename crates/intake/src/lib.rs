//! Intake: where signals enter Firebreak — gRPC calls, Alertmanager and PagerDuty-style
//! webhooks. Validates them, stores them durably with their `alerts` events (one
//! transaction per call), and answers only after that commit.
//!
//! An alert is accepted once it is stored: `RaiseIncident` then asks triage for the incident
//! so the caller gets its id at once; if triage cannot be reached the caller still gets OK,
//! and the `alerts` event opens the incident later. Work in flight is bounded: past the bound
//! callers get `RESOURCE_EXHAUSTED` / HTTP 429 rather than a growing queue.

mod edge;
mod failures;
mod grpc;
pub mod http;
mod ingest;
mod integrations;
mod secrets;
pub mod silencer;
pub mod silences;

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, Relay, RelayHandle};
use firebreak_domain::{Clock, SystemClock, Taxonomy};
use firebreak_proto::internal::v1::triage_ingest_service_client::TriageIngestServiceClient;
use firebreak_proto::{ErrorCode, ServiceError};
use firebreak_storage::IntakeStore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use edge::{InvalidProtobuf, RETRY_INFO_TYPE, RetryInfo, RpcStatus};
pub use failures::{FailureGate, MAX_FAILURES, MAX_SOURCES, WINDOW};
pub use grpc::IntegrationApi;
pub use ingest::{Incoming, SignalAction, SignalResult, Source};
pub use integrations::{
    AuthError, Integration, IntegrationKind, Listed, LoadError, Registry, new_key,
};
pub use secrets::{
    Keyring, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECONDS, SealError, Secret, SignatureError, sign,
};

/// Calls (gRPC or HTTP) storing at once by default; more wait for nothing and are told to
/// retry.
pub const MAX_IN_FLIGHT: usize = 512;
/// Calls queued for the writer.
const MAX_QUEUED: usize = 1024;
/// Alerts one call (a gRPC batch, an Alertmanager group) may hold by default.
pub const MAX_ALERTS_PER_CALL: usize = 1000;
/// What an overloaded intake tells callers to wait.
const OVERLOAD_RETRY: Duration = Duration::from_secs(1);

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("overloaded: too many calls in flight, retry shortly")]
    Overloaded,
    #[error("rate limit of {integration} exceeded, retry in {:.1} s", retry_after.as_secs_f64())]
    RateLimited {
        /// The integration, or `anonymous gRPC callers`.
        integration: String,
        retry_after: Duration,
    },
    /// The store failed; one failed transaction answers every call of its group, so they
    /// share the error.
    #[error("alerts not stored: {0}")]
    Storage(#[source] Arc<firebreak_storage::Error>),
    /// Intake's writer task is gone (the service is stopping).
    #[error("alerts not stored: intake's writer stopped")]
    WriterStopped,
}

impl IngestError {
    /// How long the caller should wait before retrying, when a retry may work soon.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded => Some(OVERLOAD_RETRY),
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Storage(_) | Self::WriterStopped => None,
        }
    }

    fn storage(e: firebreak_storage::Error) -> Self {
        Self::Storage(Arc::new(e))
    }
}

impl ServiceError for IngestError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Overloaded | Self::RateLimited { .. } => ErrorCode::ResourceExhausted,
            Self::Storage(e) => e.error_code(),
            Self::WriterStopped => ErrorCode::Unavailable,
        }
    }
}

/// What intake answers a gRPC or HTTP caller with, when it does not answer with success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is not acceptable; the text says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("integration {0} exists")]
    IntegrationExists(String),
    #[error("integration {0} not found")]
    IntegrationNotFound(String),
    #[error("integration {0} is declared in the configuration; remove it there")]
    IntegrationDeclared(String),
    /// A signing secret given with no secrets key configured to store it encrypted.
    #[error(
        "cannot store a signing secret: configure secrets_encryption (key_file, or FIREBREAK_SECRETS_KEY) so it is stored encrypted, or declare the integration in the configuration"
    )]
    NoSecretsKey,
    /// An alert the store said it holds could not be read back.
    #[error("the stored alert {0} is gone")]
    AlertGone(String),
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
}

impl ServiceError for Error {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Auth(e) => e.error_code(),
            Self::Ingest(e) => e.error_code(),
            Self::IntegrationExists(_) => ErrorCode::AlreadyExists,
            Self::IntegrationNotFound(_) => ErrorCode::NotFound,
            Self::IntegrationDeclared(_) | Self::NoSecretsKey => ErrorCode::FailedPrecondition,
            Self::AlertGone(_) => ErrorCode::Internal,
            Self::Storage(e) => e.error_code(),
        }
    }

    fn caller_message(&self) -> String {
        match self {
            Self::Ingest(e) => e.caller_message(),
            Self::Storage(e) => e.caller_message(),
            Self::AlertGone(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        // Throttled callers are told when to come back, in the detail gRPC clients read.
        if let Error::Ingest(i) = &e
            && let Some(delay) = i.retry_after()
        {
            return edge::exhausted(i.caller_message(), delay);
        }
        if let Error::Auth(a @ AuthError::TooManyFailures { retry_after }) = &e {
            return edge::exhausted(a.to_string(), *retry_after);
        }
        firebreak_proto::status(&e)
    }
}

/// The intake service. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn IntakeStore>,
    bus: Arc<dyn Bus>,
    relay: RelayHandle,
    taxonomy: Arc<Taxonomy>,
    triage: TriageIngestServiceClient<firebreak_proto::access::AuthedChannel>,
    registry: Registry,
    in_flight: Arc<Semaphore>,
    /// Alerts one call may hold.
    max_alerts_per_call: usize,
    /// Calls waiting for the writer; bounded, so overload is refused, not queued.
    jobs: mpsc::Sender<ingest::Job>,
    /// Where intake reads the time (alerts' `received_at`, integrations' `created_at`).
    clock: Arc<dyn Clock>,
    /// The silences in force: a silenced alert is stored, and opens and pages nothing.
    silencer: Arc<silencer::Silencer>,
}

impl Intake {
    /// An intake service; `triage` is a (lazily connecting) channel to triage's gRPC server.
    pub fn new(
        store: Arc<dyn IntakeStore>,
        bus: Arc<dyn Bus>,
        taxonomy: Taxonomy,
        triage: firebreak_proto::access::AuthedChannel,
        registry: Registry,
    ) -> Self {
        let relay = RelayHandle::default();
        let (jobs, queue) = mpsc::channel(MAX_QUEUED);
        // The writer ends when the last clone of this service is gone.
        tokio::spawn(ingest::writer(store.clone(), relay.clone(), queue));
        let silences: Arc<dyn firebreak_storage::SilenceStore> = store.clone();
        Self {
            silencer: Arc::new(silencer::Silencer::new(silences)),
            store,
            bus,
            relay,
            taxonomy: Arc::new(taxonomy),
            triage: TriageIngestServiceClient::new(triage),
            registry,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            max_alerts_per_call: MAX_ALERTS_PER_CALL,
            jobs,
            clock: Arc::new(SystemClock),
        }
    }

    /// The silences this intake consults (the silences API reloads them after a change).
    pub fn silencer(&self) -> Arc<silencer::Silencer> {
        self.silencer.clone()
    }

    /// The gRPC `SilenceService`.
    pub fn silences_grpc(
        &self,
    ) -> InvalidProtobuf<
        firebreak_proto::v1::silence_service_server::SilenceServiceServer<silences::SilenceApi>,
    > {
        InvalidProtobuf(
            firebreak_proto::v1::silence_service_server::SilenceServiceServer::new(
                silences::SilenceApi {
                    silences: silences::Silences::new(self.silencer.clone(), self.clock.clone()),
                },
            ),
        )
    }

    /// Reads the time from `clock` (the one the other services and the stores get) instead
    /// of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Bounds the calls storing at once to `n` (at least 1).
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// Bounds the alerts of one call (a gRPC batch, an Alertmanager group) to `n` (at
    /// least 1): one huge call would hold the writer, which every caller waits on.
    pub fn with_max_alerts_per_call(mut self, n: usize) -> Self {
        self.max_alerts_per_call = n.max(1);
        self
    }

    /// The integrations this intake knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts the outbox relay; it stops when `shutdown` fires.
    pub fn spawn(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let relay = Relay {
            outbox: self.store.clone(),
            bus: self.bus.clone(),
            handle: self.relay.clone(),
            name: "intake",
        };
        tasks.spawn(relay.run(shutdown.clone()));
        tasks.spawn(
            self.silencer
                .clone()
                .run(self.clock.clone(), shutdown.clone()),
        );
    }

    /// A slot for one call, or `Overloaded` at once when all are taken.
    fn admit(&self) -> Result<OwnedSemaphorePermit, IngestError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            firebreak_telemetry::metrics().intake_overloaded.inc();
            IngestError::Overloaded
        })
    }

    /// Stores one event on its own (a change event), committed before this returns.
    async fn record_event(
        &self,
        event: &firebreak_storage::OutboxEvent,
    ) -> Result<(), IngestError> {
        let mut tx = self.store.begin().await.map_err(IngestError::storage)?;
        tx.enqueue(event).await.map_err(IngestError::storage)?;
        tx.commit().await.map_err(IngestError::storage)?;
        self.relay.wake();
        Ok(())
    }

    /// Admission for an integration's batch of `n`: its rate budget, then a slot.
    fn admit_for(
        &self,
        integration: &Integration,
        n: usize,
    ) -> Result<OwnedSemaphorePermit, IngestError> {
        self.registry
            .admit(integration, n)
            .map_err(|retry_after| IngestError::RateLimited {
                integration: format!("integration {}", integration.name),
                retry_after,
            })?;
        self.admit()
    }

    /// Admission for a keyless gRPC caller's batch of `n`: the budget they share, then a
    /// slot.
    fn admit_anonymous(&self, n: usize) -> Result<OwnedSemaphorePermit, IngestError> {
        self.registry
            .admit_anonymous(n)
            .map_err(|retry_after| IngestError::RateLimited {
                integration: "anonymous gRPC callers".into(),
                retry_after,
            })?;
        self.admit()
    }
}
