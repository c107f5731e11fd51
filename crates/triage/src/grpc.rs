//! The gRPC `IncidentService`, and the internal `TriageIngestService` intake calls.

use std::pin::Pin;

use firebreak_domain::{Action, IncidentState, Micros};
use firebreak_proto::WireState;
use firebreak_proto::internal::v1::{self as internal, triage_ingest_service_server};
use firebreak_proto::page::{self, fit};
use firebreak_proto::v1::{self, incident_service_server::IncidentService};
use firebreak_storage::{AlertCursor, IncidentCursor};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::convert::{
    alert_to_proto, entry_to_proto, follow_up_state, follow_up_to_proto, incident_to_proto,
    review_markdown_bounded, review_to_proto,
};
use crate::decide::{FollowUpChange, Reclassification, RoleChange};
use crate::limits::{MAX_ACTOR, MAX_NAME, MAX_PAGE_BYTES, MAX_TEXT, checked};
use crate::{Error, Triage};

/// The gRPC face of triage.
pub struct IncidentApi {
    pub(crate) triage: Triage,
}

/// The actor of a call: the authenticated caller, never a request field, where the access
/// layer runs; otherwise (no access layer) the actor the caller states, checked: at most
/// [`MAX_ACTOR`] bytes, no NUL.
fn actor(caller: Option<String>, given: &str) -> Result<String, Error> {
    if let Some(a) = caller {
        return Ok(a);
    }
    Ok(match checked("actor", given.trim(), MAX_ACTOR)? {
        "" => "user:anonymous".into(),
        a if a.contains(':') => a.into(),
        a => format!("user:{a}"),
    })
}

/// A caller's free text (`field`), checked: at most [`MAX_TEXT`] bytes, no NUL.
fn text<'a>(field: &'static str, given: &'a str) -> Result<&'a str, Error> {
    Ok(checked(field, given, MAX_TEXT)?)
}

/// The page tokens' list names (`firebreak_proto::page`).
const INCIDENTS: &str = "incidents";
const TIMELINE: &str = "timeline";
const FOLLOW_UPS: &str = "follow_ups";
const INCIDENT_ALERTS: &str = "incident_alerts";

/// A keyset cursor `MICROS.ID` (a time and an id) out of a page token of `list`.
fn time_cursor(list: &str, token: &str) -> Result<Option<(Micros, String)>, Error> {
    let Some(c) = page::cursor(list, token)? else {
        return Ok(None);
    };
    let (at, id) = page::pair(&c, |a| a.parse::<i64>().ok())?;
    Ok(Some((Micros::from_unix_micros(at), id)))
}

impl IncidentApi {
    /// Today (UTC) by triage's clock: what a follow-up is overdue against.
    fn today(&self) -> time::Date {
        self.triage.clock.now().timestamp().date()
    }

    async fn load(&self, id: &str) -> Result<firebreak_storage::IncidentRecord, Error> {
        firebreak_domain::IncidentId::parse(id)?;
        self.triage
            .store
            .incident(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// A role given or taken by the caller (the request names no actor: without an access
    /// layer it is `user:anonymous`).
    async fn roles(
        &self,
        id: &str,
        change: RoleChange,
        role: &str,
        person: &str,
        who: Option<String>,
    ) -> Result<Option<v1::Incident>, Status> {
        let inc = self
            .triage
            .change_role(id, change, role, person, &actor(who, "")?)
            .await?;
        Ok(Some(incident_to_proto(&inc, &self.triage.lifecycle)))
    }

    async fn change(
        &self,
        id: &str,
        action: Action,
        who: &str,
        text: &str,
    ) -> Result<Option<v1::Incident>, Status> {
        let inc = self.triage.transition(id, action, who, text).await?;
        Ok(Some(incident_to_proto(&inc, &self.triage.lifecycle)))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchIncidentsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn get_incident(
        &self,
        req: Request<v1::GetIncidentRequest>,
    ) -> Result<Response<v1::GetIncidentResponse>, Status> {
        let inc = self.load(&req.into_inner().id).await?;
        Ok(Response::new(v1::GetIncidentResponse {
            incident: Some(incident_to_proto(&inc, &self.triage.lifecycle)),
        }))
    }

    async fn list_incidents(
        &self,
        req: Request<v1::ListIncidentsRequest>,
    ) -> Result<Response<v1::ListIncidentsResponse>, Status> {
        let req = req.into_inner();
        let state = IncidentState::field("state_filter", req.state_filter).map_err(Error::from)?;
        let limit = page::list_size(req.page_size);
        let after = match time_cursor(INCIDENTS, &req.page_token)? {
            None => None,
            Some((opened_at, id)) => {
                firebreak_domain::IncidentId::parse(&id)
                    .map_err(|_| Error::from(page::invalid()))?;
                Some(IncidentCursor { opened_at, id })
            }
        };
        // One more than asked: whether another page follows.
        let list = self
            .triage
            .store
            .incidents_page(
                state.map(IncidentState::as_str),
                after.as_ref(),
                limit + 1,
                MAX_PAGE_BYTES,
            )
            .await
            .map_err(Error::from)?;
        let read: usize = list.iter().map(|i| i.wire_size()).sum();
        let (incidents, more) = fit(
            list.iter()
                .map(|i| incident_to_proto(i, &self.triage.lifecycle))
                .collect(),
            limit as usize,
            MAX_PAGE_BYTES,
            read,
        );
        let last = incidents.len().checked_sub(1).map(|n| &list[n]);
        let next_page_token = page::next(
            INCIDENTS,
            last.map(|i| format!("{}.{}", i.opened_at.unix_micros(), i.id)),
            more,
        );
        Ok(Response::new(v1::ListIncidentsResponse {
            incidents,
            next_page_token,
        }))
    }

    async fn get_timeline(
        &self,
        req: Request<v1::GetTimelineRequest>,
    ) -> Result<Response<v1::GetTimelineResponse>, Status> {
        let req = req.into_inner();
        let inc = self.load(&req.id).await?;
        let limit = page::size(req.page_size, 500, page::MAX_PAGE_SIZE);
        let after = match page::cursor(TIMELINE, &req.page_token).map_err(Error::from)? {
            None => 0,
            Some(c) => c.parse::<i64>().map_err(|_| Error::from(page::invalid()))?,
        };
        let list = self
            .triage
            .store
            .timeline_page(&inc.id, after, limit + 1, MAX_PAGE_BYTES)
            .await
            .map_err(Error::from)?;
        let read: usize = list
            .iter()
            .map(|e| e.kind.len() + e.actor.len() + e.data.to_string().len() + 32)
            .sum();
        let (entries, more) = fit(
            list.iter().map(entry_to_proto).collect(),
            limit as usize,
            MAX_PAGE_BYTES,
            read,
        );
        let next_page_token = page::next(TIMELINE, entries.last().map(|e| e.seq.to_string()), more);
        Ok(Response::new(v1::GetTimelineResponse {
            entries,
            next_page_token,
        }))
    }

    async fn acknowledge(
        &self,
        req: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        self.change(&r.id, Action::Acknowledge, &actor(who, &r.actor)?, "")
            .await
            .map(|incident| Response::new(v1::AcknowledgeResponse { incident }))
    }

    async fn resolve(
        &self,
        req: Request<v1::ResolveRequest>,
    ) -> Result<Response<v1::ResolveResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let summary = text("summary", &r.summary)?;
        self.change(&r.id, Action::Resolve, &actor(who, &r.actor)?, summary)
            .await
            .map(|incident| Response::new(v1::ResolveResponse { incident }))
    }

    async fn close(
        &self,
        req: Request<v1::CloseRequest>,
    ) -> Result<Response<v1::CloseResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let root_cause = text("root_cause", &r.root_cause)?;
        self.change(&r.id, Action::Close, &actor(who, &r.actor)?, root_cause)
            .await
            .map(|incident| Response::new(v1::CloseResponse { incident }))
    }

    async fn mitigate(
        &self,
        req: Request<v1::MitigateRequest>,
    ) -> Result<Response<v1::MitigateResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let summary = text("summary", &r.summary)?;
        self.change(&r.id, Action::Mitigate, &actor(who, &r.actor)?, summary)
            .await
            .map(|incident| Response::new(v1::MitigateResponse { incident }))
    }

    async fn reopen(
        &self,
        req: Request<v1::ReopenRequest>,
    ) -> Result<Response<v1::ReopenResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let reason = text("reason", &r.reason)?;
        self.change(&r.id, Action::Reopen, &actor(who, &r.actor)?, reason)
            .await
            .map(|incident| Response::new(v1::ReopenResponse { incident }))
    }

    async fn merge(
        &self,
        req: Request<v1::MergeRequest>,
    ) -> Result<Response<v1::MergeResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let reason = text("reason", &r.reason)?;
        let (merged, into, moved) = self
            .triage
            .merge(&r.id, &r.into, &actor(who, &r.actor)?, reason)
            .await?;
        Ok(Response::new(v1::MergeResponse {
            merged: Some(incident_to_proto(&merged, &self.triage.lifecycle)),
            into: Some(incident_to_proto(&into, &self.triage.lifecycle)),
            alerts_moved: moved,
        }))
    }

    async fn reclassify(
        &self,
        req: Request<v1::ReclassifyRequest>,
    ) -> Result<Response<v1::ReclassifyResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let level = |v: i32| (v != 0).then(|| firebreak_proto::level(v));
        let change = Reclassification {
            severity: level(r.severity),
            priority: level(r.priority),
            category: match checked("category", r.category.trim(), MAX_NAME).map_err(Error::from)? {
                "" => None,
                c => Some(c.to_owned()),
            },
            reason: text("reason", &r.reason)?.to_owned(),
        };
        let inc = self
            .triage
            .reclassify(&r.id, &actor(who, &r.actor)?, change)
            .await?;
        Ok(Response::new(v1::ReclassifyResponse {
            incident: Some(incident_to_proto(&inc, &self.triage.lifecycle)),
        }))
    }

    async fn add_note(
        &self,
        req: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let e = self
            .triage
            .add_note(&r.id, &actor(who, &r.actor)?, text("text", &r.text)?)
            .await?;
        Ok(Response::new(v1::AddNoteResponse {
            entry: Some(entry_to_proto(&e)),
        }))
    }

    async fn post_status_update(
        &self,
        req: Request<v1::PostStatusUpdateRequest>,
    ) -> Result<Response<v1::PostStatusUpdateResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let status = firebreak_domain::UpdateStatus::from_wire(r.status).ok_or_else(|| {
            Error::Domain(firebreak_domain::Error::Invalid {
                field: "status",
                reason: "one of investigating, identified, monitoring, resolved is required".into(),
            })
        })?;
        let inc = self
            .triage
            .post_status_update(&r.id, status, &r.message, &actor(who, "")?)
            .await?;
        Ok(Response::new(v1::PostStatusUpdateResponse {
            incident: Some(incident_to_proto(&inc, &self.triage.lifecycle)),
        }))
    }

    async fn assign_role(
        &self,
        req: Request<v1::AssignRoleRequest>,
    ) -> Result<Response<v1::AssignRoleResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        self.roles(&r.id, RoleChange::Assign, &r.role, &r.person, who)
            .await
            .map(|incident| Response::new(v1::AssignRoleResponse { incident }))
    }

    async fn unassign_role(
        &self,
        req: Request<v1::UnassignRoleRequest>,
    ) -> Result<Response<v1::UnassignRoleResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        self.roles(&r.id, RoleChange::Unassign, &r.role, &r.person, who)
            .await
            .map(|incident| Response::new(v1::UnassignRoleResponse { incident }))
    }

    async fn get_report(
        &self,
        req: Request<v1::GetReportRequest>,
    ) -> Result<Response<v1::GetReportResponse>, Status> {
        let r = req.into_inner();
        let by = firebreak_proto::grouping("group_by", r.group_by).map_err(Error::from)?;
        Ok(Response::new(self.triage.report(&r.since, by).await?))
    }

    async fn get_review(
        &self,
        req: Request<v1::GetReviewRequest>,
    ) -> Result<Response<v1::GetReviewResponse>, Status> {
        let id = req.into_inner().id;
        let review = self.triage.review(&id).await?;
        Ok(Response::new(v1::GetReviewResponse {
            incident_id: id,
            markdown: review_markdown_bounded(&review),
            generated_at: Some(firebreak_proto::timestamp(self.triage.clock.now())),
            review: Some(review_to_proto(&review)),
        }))
    }

    async fn add_follow_up(
        &self,
        req: Request<v1::AddFollowUpRequest>,
    ) -> Result<Response<v1::AddFollowUpResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let change = FollowUpChange::Add {
            title: checked("title", &r.title, MAX_TEXT)
                .map_err(Error::from)?
                .to_owned(),
            owner: checked("owner", &r.owner, MAX_NAME)
                .map_err(Error::from)?
                .to_owned(),
            due: checked("due", &r.due, MAX_NAME)
                .map_err(Error::from)?
                .to_owned(),
        };
        let f = self
            .triage
            .follow_up(&r.id, &actor(who, "")?, change)
            .await?;
        Ok(Response::new(v1::AddFollowUpResponse {
            follow_up: Some(follow_up_to_proto(&f, self.today())),
        }))
    }

    async fn update_follow_up(
        &self,
        req: Request<v1::UpdateFollowUpRequest>,
    ) -> Result<Response<v1::UpdateFollowUpResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let given = |field: &'static str, v: &str, max: usize| -> Result<Option<String>, Error> {
            Ok(match checked(field, v, max)? {
                "" => None,
                v => Some(v.to_owned()),
            })
        };
        if r.clear_due && !r.due.is_empty() {
            return Err(Error::Domain(firebreak_domain::Error::Invalid {
                field: "due",
                reason: "given with clear_due".into(),
            })
            .into());
        }
        let change = FollowUpChange::Update {
            number: r.number,
            title: given("title", &r.title, MAX_TEXT)?,
            owner: given("owner", &r.owner, MAX_NAME)?,
            due: if r.clear_due {
                Some(String::new())
            } else {
                given("due", &r.due, MAX_NAME)?
            },
            state: follow_up_state(r.state).map_err(Error::from)?,
        };
        let f = self
            .triage
            .follow_up(&r.id, &actor(who, "")?, change)
            .await?;
        Ok(Response::new(v1::UpdateFollowUpResponse {
            follow_up: Some(follow_up_to_proto(&f, self.today())),
        }))
    }

    async fn list_follow_ups(
        &self,
        req: Request<v1::ListFollowUpsRequest>,
    ) -> Result<Response<v1::ListFollowUpsResponse>, Status> {
        let r = req.into_inner();
        let incident_id = match r.id.trim() {
            "" => None,
            id => Some(self.load(id).await?.id),
        };
        let owner = match r.owner.trim() {
            "" => None,
            o => Some(firebreak_domain::access::parse_name("owner", o).map_err(Error::from)?),
        };
        let mut state = follow_up_state(r.state).map_err(Error::from)?;
        if r.overdue {
            state = Some(firebreak_domain::follow_up::FollowUpState::Open);
        }
        let after = match page::cursor(FOLLOW_UPS, &r.page_token).map_err(Error::from)? {
            None => None,
            Some(c) => {
                let (id, n) = c
                    .rsplit_once('.')
                    .ok_or_else(|| Error::from(page::invalid()))?;
                firebreak_domain::IncidentId::parse(id)
                    .map_err(|_| Error::from(page::invalid()))?;
                let n = n.parse::<u32>().map_err(|_| Error::from(page::invalid()))?;
                Some((id.to_owned(), n))
            }
        };
        let limit = page::list_size(r.page_size);
        // One more than asked: whether another page follows.
        let read = self
            .triage
            .store
            .follow_ups(&firebreak_storage::FollowUpQuery {
                incident_id,
                owner,
                state,
                after,
                limit: limit + 1,
            })
            .await
            .map_err(Error::from)?;
        let more = read.len() > limit as usize;
        let read = &read[..read.len().min(limit as usize)];
        let next_page_token = page::next(
            FOLLOW_UPS,
            read.last()
                .map(|f| format!("{}.{}", f.incident_id, f.number)),
            more,
        );
        let today = self.today();
        let follow_ups = read
            .iter()
            .map(|f| follow_up_to_proto(f, today))
            .filter(|f| !r.overdue || f.overdue)
            .collect();
        Ok(Response::new(v1::ListFollowUpsResponse {
            follow_ups,
            next_page_token,
        }))
    }

    async fn set_review_summary(
        &self,
        req: Request<v1::SetReviewSummaryRequest>,
    ) -> Result<Response<v1::SetReviewSummaryResponse>, Status> {
        let who = firebreak_proto::access::caller(&req).map(|p| p.actor());
        let r = req.into_inner();
        let e = self
            .triage
            .set_summary(&r.id, &actor(who, "")?, &r.summary)
            .await?;
        Ok(Response::new(v1::SetReviewSummaryResponse {
            entry: Some(entry_to_proto(&e)),
        }))
    }

    async fn get_change(
        &self,
        req: Request<v1::GetChangeRequest>,
    ) -> Result<Response<v1::GetChangeResponse>, Status> {
        let id = req.into_inner().id;
        let c = self
            .triage
            .store
            .change(&id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::ChangeNotFound(id.clone()))?;
        Ok(Response::new(v1::GetChangeResponse {
            id: c.id,
            integration: c.integration,
            summary: c.summary,
            source: c.source,
            at: Some(firebreak_proto::timestamp(c.at)),
            details: c.details,
        }))
    }

    async fn list_incident_alerts(
        &self,
        req: Request<v1::ListIncidentAlertsRequest>,
    ) -> Result<Response<v1::ListIncidentAlertsResponse>, Status> {
        let req = req.into_inner();
        self.load(&req.id).await?;
        let limit = page::list_size(req.page_size);
        let after =
            time_cursor(INCIDENT_ALERTS, &req.page_token)?.map(|(attached_at, alert_id)| {
                AlertCursor {
                    attached_at,
                    alert_id,
                }
            });
        // One more than asked: whether another page follows.
        let list = self
            .triage
            .store
            .incident_alerts(&req.id, after.as_ref(), limit + 1)
            .await
            .map_err(Error::from)?;
        let (alerts, more) = fit(
            list.iter().map(alert_to_proto).collect(),
            limit as usize,
            MAX_PAGE_BYTES,
            0,
        );
        let last = alerts.len().checked_sub(1).map(|n| list[n].cursor());
        let next_page_token = page::next(
            INCIDENT_ALERTS,
            last.map(|c| format!("{}.{}", c.attached_at.unix_micros(), c.alert_id)),
            more,
        );
        Ok(Response::new(v1::ListIncidentAlertsResponse {
            alerts,
            next_page_token,
        }))
    }

    type WatchIncidentsStream = WatchStream;

    async fn watch_incidents(
        &self,
        req: Request<v1::WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let id = req.into_inner().incident_id;
        if !id.is_empty() {
            self.load(&id).await?;
        }
        let stream = BroadcastStream::new(self.triage.subscribe()).filter_map(move |item| {
            match item {
                Ok(e) if id.is_empty() || e.incident_id == id => {
                    Some(Ok(v1::WatchIncidentsResponse {
                        entry: Some(entry_to_proto(&e)),
                    }))
                }
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

/// The internal face of triage: intake's synchronous hand-over of a stored alert (service
/// credentials only; the access layer checks).
pub struct IngestApi {
    pub(crate) triage: Triage,
}

#[tonic::async_trait]
impl triage_ingest_service_server::TriageIngestService for IngestApi {
    async fn ingest_alert(
        &self,
        req: Request<internal::IngestAlertRequest>,
    ) -> Result<Response<internal::IngestAlertResponse>, Status> {
        let alert = req.into_inner().alert.ok_or_else(|| {
            Error::Domain(firebreak_domain::Error::Invalid {
                field: "alert",
                reason: "missing".into(),
            })
        })?;
        let done = self.triage.ingest(alert).await?;
        Ok(Response::new(internal::IngestAlertResponse {
            incident_id: done.incident_id,
            deduplicated: done.deduplicated,
            grouped_by: done.grouped_by.unwrap_or_default(),
        }))
    }
}
