//! Triage: turns alerts into incidents (dedup, categorize, prioritize), owns their life cycle,
//! their append-only timeline and the post-incident review.
//!
//! Consumes `alerts` (new signals), `runbooks` (run progress and incident commands) and
//! `notifications` (delivery outcomes); publishes `incidents`.

mod convert;
mod decide;
mod error;
mod gauges;
mod grpc;
mod limits;
mod logic;
mod report;

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{
    Batch, Bus, ConsumerOptions, HandlerError, Relay, RelayHandle, consume_batched, streams,
};
use firebreak_domain::grouping::Grouping;
use firebreak_domain::{Clock, Taxonomy};
use firebreak_proto::v1::event::Payload;
use firebreak_storage::{TimelineRecord, TriageStore};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use decide::Lifecycle;
pub use error::Error;
pub use grpc::{IncidentApi, IngestApi};

/// The triage service. Cheap to clone.
#[derive(Clone)]
pub struct Triage {
    store: Arc<dyn TriageStore>,
    taxonomy: Arc<Taxonomy>,
    relay: RelayHandle,
    bus: Arc<dyn Bus>,
    watch: broadcast::Sender<TimelineRecord>,
    /// Where every time triage records is read: decisions get it as `Context::now`, so the
    /// pure `decide` never reads a clock itself.
    clock: Arc<dyn Clock>,
    /// How long resolved incidents can reopen (by hand, by a repeat alert).
    lifecycle: Arc<Lifecycle>,
    /// The grouping rules (none: nothing is grouped).
    grouping: Arc<Grouping>,
    /// Reports computing at once (each reads a window of incidents): past
    /// [`report::MAX_CONCURRENT_REPORTS`] a caller hears RESOURCE_EXHAUSTED.
    reports: Arc<tokio::sync::Semaphore>,
    /// The sections people write in a review (configuration `review.template`).
    review_template: Arc<Vec<firebreak_domain::ReviewSection>>,
}

impl Triage {
    /// A triage service over its store and the bus, reading the time from `clock` (the one
    /// the other services and the stores get).
    pub fn new(
        store: Arc<dyn TriageStore>,
        bus: Arc<dyn Bus>,
        taxonomy: Taxonomy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            taxonomy: Arc::new(taxonomy),
            relay: RelayHandle::default(),
            bus,
            watch: broadcast::channel(1024).0,
            clock,
            lifecycle: Arc::new(Lifecycle::default()),
            grouping: Arc::new(Grouping::default()),
            reports: Arc::new(tokio::sync::Semaphore::new(report::MAX_CONCURRENT_REPORTS)),
            review_template: Arc::new(firebreak_domain::default_review_template()),
        }
    }

    /// The same service with `template`'s sections in its reviews (checked: see
    /// [`firebreak_domain::check_review_template`]).
    pub fn with_review_template(
        mut self,
        template: Vec<firebreak_domain::ReviewSection>,
    ) -> Result<Self, Error> {
        firebreak_domain::check_review_template(&template)?;
        self.review_template = Arc::new(template);
        Ok(self)
    }

    /// The same service with `lifecycle`'s reopen windows (the default: people reopen within
    /// an hour; a repeat alert opens a new incident).
    pub fn with_lifecycle(mut self, lifecycle: Lifecycle) -> Self {
        self.lifecycle = Arc::new(lifecycle);
        self
    }

    /// The same service with `grouping`'s rules (the default: none, nothing is grouped).
    pub fn with_grouping(mut self, grouping: Grouping) -> Self {
        self.grouping = Arc::new(grouping);
        self
    }

    /// The gRPC `IncidentService`.
    pub fn grpc(
        &self,
    ) -> firebreak_proto::v1::incident_service_server::IncidentServiceServer<IncidentApi> {
        firebreak_proto::v1::incident_service_server::IncidentServiceServer::new(IncidentApi {
            triage: self.clone(),
        })
    }

    /// The internal gRPC `TriageIngestService` (service credentials only).
    pub fn ingest_grpc(
        &self,
    ) -> firebreak_proto::internal::v1::triage_ingest_service_server::TriageIngestServiceServer<
        IngestApi,
    > {
        firebreak_proto::internal::v1::triage_ingest_service_server::TriageIngestServiceServer::new(
            IngestApi {
                triage: self.clone(),
            },
        )
    }

    /// Starts the outbox relay and the consumers; they stop when `shutdown` fires.
    pub fn spawn(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let relay = Relay {
            outbox: self.store.clone(),
            bus: self.bus.clone(),
            handle: self.relay.clone(),
            name: "triage",
        };
        tasks.spawn(relay.run(shutdown.clone()));
        for stream in [streams::ALERTS, streams::RUNBOOKS, streams::NOTIFICATIONS] {
            let me = self.clone();
            let batch_me = self.clone();
            tasks.spawn(consume_batched(
                self.bus.clone(),
                stream,
                "triage",
                // Alert storms come in large runs: bigger batches, fewer transactions. Under
                // load the next fetch waits 10 ms to let a batch fill: at 10,000 alerts/s, about
                // a hundred alerts a transaction instead of a few (the intake benchmark spent
                // 10-25% less CPU per alert with it).
                ConsumerOptions {
                    batch: 500,
                    linger: Duration::from_millis(10),
                    ..ConsumerOptions::default()
                },
                shutdown.clone(),
                // An alert storm: a fetched run of alerts is ingested in one transaction.
                move |batch: std::sync::Arc<[firebreak_bus::Inbound]>| {
                    let me = batch_me.clone();
                    async move {
                        if stream != streams::ALERTS {
                            return Ok(Batch::OneByOne);
                        }
                        let mut alerts = Vec::with_capacity(batch.len());
                        let mut repeats = Vec::new();
                        for d in batch.iter() {
                            match firebreak_proto::decode_event(&d.message.payload) {
                                Ok(firebreak_proto::v1::Event {
                                    payload: Some(Payload::AlertReceived(a)),
                                    traceparent,
                                    ..
                                }) => alerts.push((traceparent, a)),
                                Ok(firebreak_proto::v1::Event {
                                    payload: Some(Payload::AlertRepeated(r)),
                                    id,
                                    ..
                                }) => repeats.push((id, r)),
                                _ => return Ok(Batch::OneByOne),
                            }
                        }
                        me.ingest_batch(&alerts, &repeats)
                            .await
                            .map(|()| Batch::Handled)
                            .map_err(Error::into_handler)
                    }
                },
                move |inbound| {
                    let me = me.clone();
                    async move {
                        let event = firebreak_proto::decode_event(&inbound.message.payload)
                            .map_err(|e| {
                                HandlerError::Permanent(format!("undecodable event: {e}"))
                            })?;
                        let id = event.id.clone();
                        match event.payload {
                            Some(Payload::AlertReceived(alert)) => me
                                .ingest(alert)
                                .await
                                .map(|_| ())
                                .map_err(Error::into_handler),
                            Some(Payload::AlertResolved(r)) => {
                                me.alert_resolved(&id, r).await.map_err(Error::into_handler)
                            }
                            Some(Payload::AlertRepeated(r)) => me
                                .alert_repeated(&id, &r)
                                .await
                                .map_err(Error::into_handler),
                            Some(Payload::AlertAcknowledged(a)) => {
                                me.alert_acknowledged(a).await.map_err(Error::into_handler)
                            }
                            Some(Payload::ChangeReceived(c)) => me
                                .change_received(&id, c)
                                .await
                                .map_err(Error::into_handler),
                            Some(Payload::RunChanged(run)) => {
                                me.record_run(&id, run).await.map_err(Error::into_handler)
                            }
                            Some(Payload::IncidentCommand(cmd)) => me
                                .apply_command(&id, cmd)
                                .await
                                .map_err(Error::into_handler),
                            Some(Payload::DeliveryChanged(d)) => me
                                .record_delivery(&id, d)
                                .await
                                .map_err(Error::into_handler),
                            Some(Payload::PagingSuppressed(p)) => me
                                .record_paging_suppressed(&id, p)
                                .await
                                .map_err(Error::into_handler),
                            // Other events on these streams are not triage's business.
                            _ => Ok(()),
                        }
                    }
                },
            ));
        }
    }

    /// New timeline entries as they commit.
    pub fn subscribe(&self) -> broadcast::Receiver<TimelineRecord> {
        self.watch.subscribe()
    }
}
