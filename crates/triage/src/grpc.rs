//! The gRPC `IncidentService`.

use std::pin::Pin;

use firebreak_domain::{Action, IncidentState, Micros};
use firebreak_proto::v1::{self, incident_service_server::IncidentService};
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use firebreak_proto::Message;
use firebreak_storage::IncidentCursor;

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

fn invalid_token(reason: &str) -> Error {
    Error::Domain(firebreak_domain::Error::Invalid {
        field: "page_token",
        reason: reason.into(),
    })
}

/// The items of a page: at most `limit` of `items`, and no more than fit in
/// [`MAX_PAGE_BYTES`] encoded (but at least one). True as second value when more remain:
/// some were left out, or the store returned more than `limit`, or stopped at its own
/// byte bound (`read_bytes`).
fn page<T: Message>(items: Vec<T>, limit: usize, read_bytes: usize) -> (Vec<T>, bool) {
    let available = items.len();
    let mut out = Vec::with_capacity(available.min(limit));
    let mut bytes = 0;
    for item in items.into_iter().take(limit) {
        // The item's bytes plus its field tag and length prefix.
        let size = item.encoded_len() + 6;
        if !out.is_empty() && bytes + size > MAX_PAGE_BYTES {
            break;
        }
        bytes += size;
        out.push(item);
    }
    let more = out.len() < available || read_bytes >= MAX_PAGE_BYTES;
    (out, more)
}

/// A page size asked for: `default` for 0, at most 1000.
fn limit(asked: u32, default: u32) -> u32 {
    match asked {
        0 => default,
        n => n.min(1000),
    }
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

/// The most alerts `ListIncidentAlerts` lists (and no more than fit in 1 MiB).
const MAX_LISTED_ALERTS: u32 = 500;

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::TimelineEntry, Status>> + Send>>;

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
        let state = match req.state.trim() {
            "" => None,
            s => Some(s.parse::<IncidentState>().map_err(Error::from)?),
        };
        let limit = limit(req.limit, 100);
        let after = match req.page_token.trim() {
            "" => None,
            token => {
                let (at, id) = token
                    .split_once('.')
                    .ok_or_else(|| invalid_token("not a token this service gave"))?;
                firebreak_domain::IncidentId::parse(id)
                    .map_err(|_| invalid_token("not a token this service gave"))?;
                Some(IncidentCursor {
                    opened_at: Micros::from_unix_micros(
                        at.parse()
                            .map_err(|_| invalid_token("not a token this service gave"))?,
                    ),
                    id: id.to_owned(),
                })
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
        let cursors: Vec<String> = list
            .iter()
            .map(|i| format!("{}.{}", i.opened_at.unix_micros(), i.id))
            .collect();
        let (incidents, more) = page(
            list.iter()
                .map(|i| incident_to_proto(i, &self.triage.lifecycle))
                .collect(),
            limit as usize,
            read,
        );
        let next_page_token = match incidents.len() {
            n if more && n > 0 => cursors[n - 1].clone(),
            _ => String::new(),
        };
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
        let limit = limit(req.limit, 500);
        let after = match req.page_token.trim() {
            "" => 0,
            token => token
                .parse::<i64>()
                .map_err(|_| invalid_token("not a token this service gave"))?,
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
        let (entries, more) = page(
            list.iter().map(entry_to_proto).collect(),
            limit as usize,
            read,
        );
        let next_page_token = match entries.last() {
            Some(e) if more => e.seq.to_string(),
            _ => String::new(),
        };
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
        use firebreak_proto::WireState;
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
        Ok(Response::new(self.triage.report(&r.since, &r.by).await?))
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
        let after = match r.page_token.trim() {
            "" => None,
            token => {
                let (id, n) = token
                    .rsplit_once('.')
                    .ok_or_else(|| invalid_token("not a token this service gave"))?;
                firebreak_domain::IncidentId::parse(id)
                    .map_err(|_| invalid_token("not a token this service gave"))?;
                let n = n
                    .parse::<u32>()
                    .map_err(|_| invalid_token("not a token this service gave"))?;
                Some((id.to_owned(), n))
            }
        };
        let limit = limit(r.limit, 100);
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
        let next_page_token = match read.last() {
            Some(f) if more => format!("{}.{}", f.incident_id, f.number),
            _ => String::new(),
        };
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

    async fn ingest_alert(
        &self,
        req: Request<v1::IngestAlertRequest>,
    ) -> Result<Response<v1::IngestAlertResponse>, Status> {
        let alert = req.into_inner().alert.ok_or_else(|| {
            Error::Domain(firebreak_domain::Error::Invalid {
                field: "alert",
                reason: "missing".into(),
            })
        })?;
        let done = self.triage.ingest(alert).await?;
        Ok(Response::new(v1::IngestAlertResponse {
            incident_id: done.incident_id,
            deduplicated: done.deduplicated,
            grouped_by: done.grouped_by.unwrap_or_default(),
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
        let limit = match req.limit {
            0 => MAX_LISTED_ALERTS,
            n => n.min(MAX_LISTED_ALERTS),
        };
        // One more than listed: whether the list is cut.
        let alerts = self
            .triage
            .store
            .incident_alerts(&req.id, limit + 1)
            .await
            .map_err(Error::from)?;
        let (alerts, truncated) = page(
            alerts.iter().map(alert_to_proto).collect(),
            limit as usize,
            0,
        );
        Ok(Response::new(v1::ListIncidentAlertsResponse {
            alerts,
            truncated,
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
