//! Silences as callers set and read them: the one place that checks a silence before it is
//! kept, keeps, expires and previews silences, and lists the alerts each silenced.
//! Alertmanager's HTTP API (in the `firebreak` crate) and the gRPC `SilenceService` here both
//! call it, so both refuse the same input with the same words, naming the field as
//! Alertmanager's JSON names it (`matchers[0].value`, `endsAt`, `comment`).

use std::sync::Arc;

use firebreak_domain::silence::{Compiled, MAX_CREATOR, Matcher, Silence, SilenceState, silences};
use firebreak_domain::{Clock, ErrorCode, Micros, ServiceError};
use firebreak_proto::v1::{self, silence_service_server::SilenceService};
use firebreak_storage::AlertRecord;
use tonic::{Request, Response, Status};

use crate::silencer::Silencer;

/// The most silences kept at once (expired ones included: they are history).
pub const MAX_SILENCES: u64 = 10_000;
/// The longest silence id a caller may name.
pub const MAX_ID: usize = 128;
/// Alerts a listing returns unless told, and at most.
const DEFAULT_ALERTS: u32 = 100;
const MAX_ALERTS: u32 = 1000;
/// Firing alerts a preview reads at most, a page at a time.
const PREVIEW_SCAN: usize = 100_000;
const PREVIEW_PAGE: u32 = 1000;
/// The most bytes of silences or alerts one gRPC answer carries (the client's limit is 4 MiB).
const MAX_ANSWER: usize = 3 * 1024 * 1024;
/// The latest time a silence may name: the end of year 9999.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Why a silence call was refused.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// The input is not acceptable; the text names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("no silence {0:?}")]
    NotFound(String),
    #[error("silence {0:?} has expired already")]
    Expired(String),
    #[error(transparent)]
    Storage(#[from] firebreak_storage::Error),
}

impl ServiceError for SilenceError {
    fn error_code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Expired(_) => ErrorCode::FailedPrecondition,
            Self::Storage(e) => e.error_code(),
        }
    }

    fn caller_message(&self) -> String {
        match self {
            Self::Storage(e) => e.caller_message(),
            other => other.to_string(),
        }
    }
}

impl From<SilenceError> for Status {
    fn from(e: SilenceError) -> Self {
        firebreak_proto::status(&e)
    }
}

type Result<T> = std::result::Result<T, SilenceError>;

/// A silence as a caller asks for it, before it is checked.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The silence it edits; `None` makes a new one.
    pub id: Option<String>,
    pub matchers: Vec<Matcher>,
    /// `None`: now.
    pub starts_at: Option<Micros>,
    pub ends_at: Micros,
    /// What the caller wrote as its creator, kept beside the authenticated actor.
    pub created_by: String,
    pub comment: String,
}

/// A silence with how many alerts it silenced.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub silence: Silence,
    pub silenced_alerts: u64,
}

/// What a silence would match among the alerts firing now.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The first matching alerts by id, at most the limit asked for.
    pub alerts: Vec<AlertRecord>,
    pub matching: u64,
    pub firing: u64,
    /// More alerts were firing than a preview reads; the counts cover those read.
    pub truncated: bool,
}

/// Silences: kept in intake's database, held in force by its [`Silencer`]. Cheap to clone.
#[derive(Clone)]
pub struct Silences {
    silencer: Arc<Silencer>,
    clock: Arc<dyn Clock>,
}

impl Silences {
    pub fn new(silencer: Arc<Silencer>, clock: Arc<dyn Clock>) -> Self {
        Self { silencer, clock }
    }

    /// The time silences are judged at.
    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Every silence, newest start first, with how many alerts each silenced.
    pub async fn list(&self) -> Result<Vec<Counted>> {
        let store = self.silencer.store();
        let counts = store.silenced_counts().await?;
        Ok(store
            .silences()
            .await?
            .into_iter()
            .map(|silence| Counted {
                silenced_alerts: counts.get(&silence.id).copied().unwrap_or(0),
                silence,
            })
            .collect())
    }

    /// One silence.
    pub async fn get(&self, id: &str) -> Result<Silence> {
        check_id(id)?;
        self.silencer
            .store()
            .silence(id)
            .await?
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))
    }

    /// One silence with how many alerts it silenced, and the newest of them (at most
    /// `limit`: 0 means 100, more than 1000 is refused).
    pub async fn get_with_alerts(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<(Counted, Vec<AlertRecord>)> {
        let limit = alert_limit(limit)?;
        let silence = self.get(id).await?;
        let store = self.silencer.store();
        let alerts = store.silenced_alerts(id, limit).await?;
        Ok((
            Counted {
                silenced_alerts: store.count_silenced(id).await?,
                silence,
            },
            alerts,
        ))
    }

    /// Checks `draft` as `actor` would keep it: the silence, its matchers compiled, and
    /// whether it edits one that exists. Nothing is kept.
    async fn checked(
        &self,
        draft: Draft,
        actor: &str,
        now: Micros,
    ) -> Result<(Silence, Vec<Compiled>, bool)> {
        let existing = match draft.id.as_deref().filter(|id| !id.is_empty()) {
            None => None,
            Some(id) => Some(self.get(id).await?),
        };
        if draft.ends_at <= now {
            return Err(SilenceError::Invalid(
                "endsAt: in the past: the silence would silence nothing".into(),
            ));
        }
        // The creator is who the token says, with what the caller wrote beside it.
        let created_by = match draft.created_by.trim() {
            "" => actor.to_owned(),
            said => format!("{actor} ({said})"),
        };
        let silence = Silence {
            id: existing
                .as_ref()
                .map_or_else(|| firebreak_domain::new_id().to_string(), |s| s.id.clone()),
            matchers: draft.matchers,
            starts_at: draft.starts_at.unwrap_or(now),
            ends_at: draft.ends_at,
            created_by: firebreak_domain::clip(&created_by, MAX_CREATOR),
            comment: draft.comment,
            updated_at: now,
        };
        let compiled = silence.check().map_err(SilenceError::Invalid)?;
        Ok((silence, compiled, existing.is_some()))
    }

    /// Keeps a new silence, or an edit of the one `draft.id` names, made by `actor`; intake
    /// takes it at once.
    pub async fn put(&self, draft: Draft, actor: &str) -> Result<Silence> {
        let now = self.clock.now();
        let (silence, _, edit) = self.checked(draft, actor, now).await?;
        if !edit && self.silencer.store().count_silences().await? >= MAX_SILENCES {
            return Err(SilenceError::Invalid(format!(
                "silences: at most {MAX_SILENCES} are kept; expire some"
            )));
        }
        self.silencer.store().put_silence(&silence).await?;
        self.reload(now).await;
        tracing::info!(silence = %silence.id, by = actor, edit, "a silence was set");
        Ok(silence)
    }

    /// Ends a silence now (a pending one never starts); with how many alerts it silenced.
    pub async fn expire(&self, id: &str, actor: &str) -> Result<Counted> {
        let now = self.clock.now();
        let mut s = self.get(id).await?;
        if s.state(now) == SilenceState::Expired {
            return Err(SilenceError::Expired(id.to_owned()));
        }
        s.starts_at = s.starts_at.min(now);
        s.ends_at = now;
        s.updated_at = now;
        self.silencer.store().put_silence(&s).await?;
        self.reload(now).await;
        tracing::info!(silence = %id, by = actor, "a silence was expired");
        Ok(Counted {
            silenced_alerts: self.silencer.store().count_silenced(id).await?,
            silence: s,
        })
    }

    /// Which alerts firing now `draft` would match, checked as [`Silences::put`] checks it
    /// and kept nowhere: at most `limit` of them (0 means 100, more than 1000 is refused),
    /// and how many in all.
    pub async fn preview(&self, draft: Draft, actor: &str, limit: u32) -> Result<Preview> {
        let limit = alert_limit(limit)? as usize;
        let (_, matchers, _) = self.checked(draft, actor, self.clock.now()).await?;
        let store = self.silencer.store();
        let mut preview = Preview {
            alerts: Vec::new(),
            matching: 0,
            firing: 0,
            truncated: false,
        };
        let mut after = String::new();
        loop {
            let page = store.firing_alerts(&after, PREVIEW_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            let full = page.len() == PREVIEW_PAGE as usize;
            for alert in page {
                preview.firing += 1;
                if silences(&matchers, &alert.labels) {
                    preview.matching += 1;
                    if preview.alerts.len() < limit {
                        preview.alerts.push(alert);
                    }
                }
            }
            if !full {
                break;
            }
            if preview.firing as usize >= PREVIEW_SCAN {
                preview.truncated = !store.firing_alerts(&after, 1).await?.is_empty();
                break;
            }
        }
        Ok(preview)
    }

    /// This process's intake takes a change at once (other replicas within a second).
    async fn reload(&self, now: Micros) {
        if let Err(e) = self.silencer.reload(now).await {
            tracing::warn!(error = %e, "reloading the silences failed; they reload within a second");
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID || id.contains('\0') {
        return Err(SilenceError::Invalid(format!(
            "id: 1 to {MAX_ID} bytes, no NUL"
        )));
    }
    Ok(())
}

fn alert_limit(limit: u32) -> Result<u32> {
    match limit {
        0 => Ok(DEFAULT_ALERTS),
        n if n > MAX_ALERTS => Err(SilenceError::Invalid(format!(
            "limit: at most {MAX_ALERTS}"
        ))),
        n => Ok(n),
    }
}

/// The gRPC face of silences.
pub struct SilenceApi {
    pub(crate) silences: Silences,
}

/// A wire time as records hold it; `field` names it when it is out of range.
fn wire_time(field: &str, t: &firebreak_proto::Timestamp) -> Result<Micros> {
    if !(0..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(SilenceError::Invalid(format!(
            "{field}: out of range (1970 to 9999)"
        )));
    }
    Ok(firebreak_proto::micros(t))
}

/// A create (or preview) request as a draft; errors name the field.
fn draft(req: v1::CreateSilenceRequest) -> Result<Draft> {
    let matchers = req
        .matchers
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let op = firebreak_proto::silence::wire_op(m.op).ok_or_else(|| {
                SilenceError::Invalid(format!("matchers[{i}].op: one of =, !=, =~, !~"))
            })?;
            Ok(Matcher {
                name: m.name,
                op,
                value: m.value,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ends_at = req
        .ends_at
        .as_ref()
        .ok_or_else(|| SilenceError::Invalid("endsAt: required".into()))
        .and_then(|t| wire_time("endsAt", t))?;
    let starts_at = req
        .starts_at
        .as_ref()
        .map(|t| wire_time("startsAt", t))
        .transpose()?;
    let id = Some(req.id).filter(|id| !id.is_empty());
    if let Some(id) = &id {
        check_id(id)?;
    }
    Ok(Draft {
        id,
        matchers,
        starts_at,
        ends_at,
        created_by: req.created_by,
        comment: req.comment,
    })
}

fn silence_wire(s: &Silence, silenced_alerts: u64, now: Micros) -> v1::Silence {
    v1::Silence {
        id: s.id.clone(),
        matchers: s
            .matchers
            .iter()
            .map(|m| v1::SilenceMatcher {
                name: m.name.clone(),
                op: firebreak_proto::silence::op_wire(m.op).into(),
                value: m.value.clone(),
            })
            .collect(),
        starts_at: Some(firebreak_proto::timestamp(s.starts_at)),
        ends_at: Some(firebreak_proto::timestamp(s.ends_at)),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        updated_at: Some(firebreak_proto::timestamp(s.updated_at)),
        state: match s.state(now) {
            SilenceState::Pending => v1::SilenceState::Pending,
            SilenceState::Active => v1::SilenceState::Active,
            SilenceState::Expired => v1::SilenceState::Expired,
        }
        .into(),
        silenced_alerts,
    }
}

fn alert_wire(a: AlertRecord) -> v1::SilencedAlert {
    v1::SilencedAlert {
        id: a.id,
        received_at: Some(firebreak_proto::timestamp(a.received_at)),
        title: a.title,
        source: a.source,
        labels: a.labels.into_iter().collect(),
        integration: a.integration,
        alert_key: a.alert_key,
        silenced_by: a.silenced_by,
    }
}

/// Items while they fit in one answer ([`MAX_ANSWER`] bytes); whether some were left out.
fn fitting<T: prost::Message>(items: impl IntoIterator<Item = T>) -> (Vec<T>, bool) {
    let mut out = Vec::new();
    let mut size = 0;
    for item in items {
        size += item.encoded_len() + 8;
        if size > MAX_ANSWER {
            return (out, true);
        }
        out.push(item);
    }
    (out, false)
}

/// The page tokens' list name (`firebreak_proto::page`).
const SILENCES: &str = "silences";

#[tonic::async_trait]
impl SilenceService for SilenceApi {
    async fn list_silences(
        &self,
        req: Request<v1::ListSilencesRequest>,
    ) -> std::result::Result<Response<v1::ListSilencesResponse>, Status> {
        use std::cmp::Reverse;
        let req = req.into_inner();
        // Silences are few (at most MAX_SILENCES kept) and which are expired depends on the
        // time of the call, not on a column: they are paged in memory, newest start first
        // then by id, a token holding the last one's start and id.
        let after = firebreak_proto::page::cursor(SILENCES, &req.page_token)
            .and_then(|c| {
                c.map(|c| firebreak_proto::page::pair(&c, |a| a.parse::<i64>().ok()))
                    .transpose()
            })
            .map_err(|e| SilenceError::Invalid(e.to_string()))?
            .map(|(at, id)| (Reverse(at), id));
        let now = self.silences.now();
        let mut all: Vec<v1::Silence> = self
            .silences
            .list()
            .await?
            .iter()
            .filter(|c| (c.silence.state(now) == SilenceState::Expired) == req.expired)
            .map(|c| silence_wire(&c.silence, c.silenced_alerts, now))
            .collect();
        let start = |s: &v1::Silence| {
            s.starts_at
                .as_ref()
                .map_or(0, |t| firebreak_proto::micros(t).unix_micros())
        };
        all.sort_by_key(|s| (Reverse(start(s)), s.id.clone()));
        let (silences, next_page_token) = firebreak_proto::page::in_memory(
            SILENCES,
            all,
            |s| (Reverse(start(s)), s.id.clone()),
            after,
            firebreak_proto::page::list_size(req.page_size),
            |s| format!("{}.{}", start(s), s.id),
        );
        Ok(Response::new(v1::ListSilencesResponse {
            silences,
            next_page_token,
        }))
    }

    async fn get_silence(
        &self,
        req: Request<v1::GetSilenceRequest>,
    ) -> std::result::Result<Response<v1::GetSilenceResponse>, Status> {
        let req = req.into_inner();
        let (counted, alerts) = self
            .silences
            .get_with_alerts(&req.id, req.alert_limit)
            .await?;
        let (alerts, truncated) = fitting(alerts.into_iter().map(alert_wire));
        Ok(Response::new(v1::GetSilenceResponse {
            silence: Some(silence_wire(
                &counted.silence,
                counted.silenced_alerts,
                self.silences.now(),
            )),
            alerts,
            truncated,
        }))
    }

    async fn create_silence(
        &self,
        req: Request<v1::CreateSilenceRequest>,
    ) -> std::result::Result<Response<v1::CreateSilenceResponse>, Status> {
        let actor = firebreak_proto::access::actor(&req);
        let draft = draft(req.into_inner())?;
        let silence = self.silences.put(draft, &actor).await?;
        let mut response = Response::new(v1::CreateSilenceResponse {
            silence: Some(silence_wire(&silence, 0, self.silences.now())),
        });
        // The audit log names what the call made, which its request could not.
        if let Ok(id) = silence.id.parse() {
            response
                .metadata_mut()
                .insert(firebreak_proto::access::TARGET_METADATA, id);
        }
        Ok(response)
    }

    async fn expire_silence(
        &self,
        req: Request<v1::ExpireSilenceRequest>,
    ) -> std::result::Result<Response<v1::ExpireSilenceResponse>, Status> {
        let actor = firebreak_proto::access::actor(&req);
        let id = req.into_inner().id;
        let c = self.silences.expire(&id, &actor).await?;
        Ok(Response::new(v1::ExpireSilenceResponse {
            silence: Some(silence_wire(
                &c.silence,
                c.silenced_alerts,
                self.silences.now(),
            )),
        }))
    }

    async fn preview_silence(
        &self,
        req: Request<v1::PreviewSilenceRequest>,
    ) -> std::result::Result<Response<v1::PreviewSilenceResponse>, Status> {
        let actor = firebreak_proto::access::actor(&req);
        let req = req.into_inner();
        let draft = draft(req.silence.unwrap_or_default())?;
        let preview = self.silences.preview(draft, &actor, req.limit).await?;
        let (alerts, cut) = fitting(preview.alerts.into_iter().map(alert_wire));
        Ok(Response::new(v1::PreviewSilenceResponse {
            alerts,
            matching: preview.matching,
            firing: preview.firing,
            truncated: preview.truncated || cut,
        }))
    }
}
