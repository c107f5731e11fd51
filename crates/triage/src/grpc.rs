//! The gRPC `IncidentService`.

use std::pin::Pin;

use firebreak_domain::{Action, IncidentState};
use firebreak_proto::v1::{self, incident_service_server::IncidentService};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::convert::{entry_to_proto, incident_to_proto, now_micros};
use crate::{Error, Triage};

/// The gRPC face of triage.
pub struct IncidentApi {
    pub(crate) triage: Triage,
}

fn actor(given: &str) -> String {
    match given.trim() {
        "" => "user:anonymous".into(),
        a if a.contains(':') => a.into(),
        a => format!("user:{a}"),
    }
}

impl IncidentApi {
    async fn load(&self, id: &str) -> Result<firebreak_storage::IncidentRecord, Error> {
        firebreak_domain::IncidentId::parse(id)?;
        self.triage
            .store
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn change(
        &self,
        id: &str,
        action: Action,
        who: &str,
        text: &str,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let inc = self
            .triage
            .transition(id, action, &actor(who), text)
            .await?;
        Ok(Response::new(v1::IncidentResponse {
            incident: Some(incident_to_proto(&inc)),
        }))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::TimelineEntry, Status>> + Send>>;

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn get_incident(
        &self,
        req: Request<v1::GetIncidentRequest>,
    ) -> Result<Response<v1::GetIncidentResponse>, Status> {
        let inc = self.load(&req.into_inner().id).await?;
        Ok(Response::new(v1::GetIncidentResponse {
            incident: Some(incident_to_proto(&inc)),
        }))
    }

    async fn list_incidents(
        &self,
        req: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        let req = req.into_inner();
        let state = match req.state.trim() {
            "" => None,
            s => Some(s.parse::<IncidentState>().map_err(Error::from)?),
        };
        let limit = match req.limit {
            0 => 100,
            n => n.min(1000),
        };
        let list = self
            .triage
            .store
            .incidents(state.map(IncidentState::as_str), limit)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::ListIncidentsResponse {
            incidents: list.iter().map(incident_to_proto).collect(),
        }))
    }

    async fn get_timeline(
        &self,
        req: Request<v1::GetTimelineRequest>,
    ) -> Result<Response<v1::GetTimelineResponse>, Status> {
        let inc = self.load(&req.into_inner().id).await?;
        let entries = self
            .triage
            .store
            .timeline(&inc.id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::GetTimelineResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
        }))
    }

    async fn acknowledge(
        &self,
        req: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let r = req.into_inner();
        self.change(&r.id, Action::Acknowledge, &r.actor, "").await
    }

    async fn resolve(
        &self,
        req: Request<v1::ResolveRequest>,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let r = req.into_inner();
        self.change(&r.id, Action::Resolve, &r.actor, &r.summary)
            .await
    }

    async fn close(
        &self,
        req: Request<v1::CloseRequest>,
    ) -> Result<Response<v1::IncidentResponse>, Status> {
        let r = req.into_inner();
        self.change(&r.id, Action::Close, &r.actor, &r.root_cause)
            .await
    }

    async fn add_note(
        &self,
        req: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let r = req.into_inner();
        let e = self
            .triage
            .add_note(&r.id, &actor(&r.actor), &r.text)
            .await?;
        Ok(Response::new(v1::AddNoteResponse {
            entry: Some(entry_to_proto(&e)),
        }))
    }

    async fn get_review(
        &self,
        req: Request<v1::GetReviewRequest>,
    ) -> Result<Response<v1::GetReviewResponse>, Status> {
        let id = req.into_inner().id;
        let markdown = self.triage.review(&id).await?;
        Ok(Response::new(v1::GetReviewResponse {
            incident_id: id,
            markdown,
            generated_at: Some(firebreak_proto::timestamp(now_micros())),
        }))
    }

    async fn ingest_alert(
        &self,
        req: Request<v1::IngestAlertRequest>,
    ) -> Result<Response<v1::IngestAlertResponse>, Status> {
        let alert = req
            .into_inner()
            .alert
            .ok_or_else(|| Status::invalid_argument("invalid alert: missing"))?;
        let done = self.triage.ingest(alert).await?;
        Ok(Response::new(v1::IngestAlertResponse {
            incident_id: done.incident_id,
            deduplicated: done.deduplicated,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = req.into_inner().incident_id;
        if !id.is_empty() {
            self.load(&id).await?;
        }
        let stream = BroadcastStream::new(self.triage.subscribe()).filter_map(move |item| {
            match item {
                Ok(e) if id.is_empty() || e.incident_id == id => Some(Ok(entry_to_proto(&e))),
                Ok(_) => None,
                // A slow watcher missed entries; it can re-read the timeline.
                Err(_) => Some(Err(Status::data_loss(
                    "watcher fell behind; re-read the timeline",
                ))),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
