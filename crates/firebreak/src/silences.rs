//! Alertmanager's silences API on Firebreak's HTTP port, so that `amtool silence
//! add|query|expire --alertmanager.url=http://firebreak…` works unchanged:
//! `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}`, the same JSON
//! (`postableSilence`, `gettableSilence`). Calls carry a token (`Authorization: Bearer`, as
//! amtool sends with `--http.config.file`): reading takes `incidents.read`, writing
//! `silences.manage`. Silences are kept in intake's database; `domain::silence` checks them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use firebreak_domain::access::Permission;
use firebreak_domain::silence::{MatchOp, Matcher, Silence};
use firebreak_domain::{Clock, Micros};
use firebreak_intake::silencer::Silencer;
use firebreak_storage::SilenceStore;
use serde::{Deserialize, Serialize};

use crate::auth::Verifier;
use crate::feeds::authorize;

/// The most bytes a silence's body may hold, and silences kept at once.
const MAX_BODY: usize = 256 * 1024;
const MAX_SILENCES: u64 = 10_000;

#[derive(Clone)]
struct Silences {
    store: Arc<dyn SilenceStore>,
    /// Intake's silences in force, reloaded after each change here.
    silencer: Arc<Silencer>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
}

/// The silences API's routes.
pub(crate) fn routes(
    silencer: Arc<Silencer>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
) -> axum::Router {
    axum::Router::new()
        .route("/api/v2/silences", axum::routing::get(list).post(create))
        .route(
            "/api/v2/silence/{id}",
            axum::routing::get(one).delete(expire),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Silences {
            store: silencer.store().clone(),
            silencer,
            verifier,
            clock,
        })
}

impl Silences {
    /// This process's intake takes a change at once (other replicas within a second).
    async fn reload(&self, now: Micros) {
        if let Err(e) = self.silencer.reload(now).await {
            tracing::warn!(error = %e, "reloading the silences failed; they reload within a second");
        }
    }
}

/// A matcher as Alertmanager's API has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiMatcher {
    name: String,
    value: String,
    is_regex: bool,
    #[serde(default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

/// `postableSilence`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Postable {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<ApiMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Gettable {
    id: String,
    status: Status,
    updated_at: String,
    matchers: Vec<ApiMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

#[derive(Serialize)]
struct Status {
    state: &'static str,
}

fn rfc3339(t: Micros) -> String {
    jiff::Timestamp::from_microsecond(t.unix_micros())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn parse_time(field: &str, s: &str) -> Result<Micros, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| Micros::from_unix_micros(t.as_microsecond()))
        .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time: {e}"))
}

fn bad(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn store_failed(e: firebreak_storage::Error) -> Response {
    tracing::warn!(error = %e, "the silences store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the silences store failed; try again\n",
    )
        .into_response()
}

fn gettable(s: &Silence, now: Micros) -> Gettable {
    Gettable {
        id: s.id.clone(),
        status: Status {
            state: s.state(now).as_str(),
        },
        updated_at: rfc3339(s.updated_at),
        matchers: s
            .matchers
            .iter()
            .map(|m| ApiMatcher {
                name: m.name.clone(),
                value: m.value.clone(),
                is_regex: m.op.is_regex(),
                is_equal: m.op.is_equal(),
            })
            .collect(),
        starts_at: rfc3339(s.starts_at),
        ends_at: rfc3339(s.ends_at),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    }
}

async fn list(State(api): State<Silences>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(
        &api.verifier,
        &headers,
        None,
        Permission::IncidentsRead,
        "intake",
    )
    .await
    {
        return refused;
    }
    let now = api.clock.now();
    match api.store.silences().await {
        Ok(all) => Json(all.iter().map(|s| gettable(s, now)).collect::<Vec<_>>()).into_response(),
        Err(e) => store_failed(e),
    }
}

async fn one(State(api): State<Silences>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(
        &api.verifier,
        &headers,
        None,
        Permission::IncidentsRead,
        "intake",
    )
    .await
    {
        return refused;
    }
    match api.store.silence(&id).await {
        Ok(Some(s)) => Json(gettable(&s, api.clock.now())).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no silence {id:?}\n")).into_response(),
        Err(e) => store_failed(e),
    }
}

/// `POST /api/v2/silences`: a new silence, or an edit of the one `id` names. Answers
/// `{"silenceID": ID}`.
async fn create(
    State(api): State<Silences>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let principal = match authorize(
        &api.verifier,
        &headers,
        None,
        Permission::SilencesManage,
        "intake",
    )
    .await
    {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let posted: Postable = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("the body is not a postableSilence: {e}")),
    };
    let now = api.clock.now();
    let (starts_at, ends_at) = match (
        parse_time("startsAt", &posted.starts_at),
        parse_time("endsAt", &posted.ends_at),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(why), _) | (_, Err(why)) => return bad(why),
    };
    if ends_at <= now {
        return bad("endsAt: in the past: the silence would silence nothing".into());
    }
    let existing = match posted.id.as_deref().filter(|id| !id.is_empty()) {
        None => None,
        Some(id) => match api.store.silence(id).await {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                return (StatusCode::NOT_FOUND, format!("no silence {id:?}\n")).into_response();
            }
            Err(e) => return store_failed(e),
        },
    };
    if existing.is_none() {
        match api.store.count_silences().await {
            Ok(n) if n >= MAX_SILENCES => {
                return bad(format!(
                    "silences: at most {MAX_SILENCES} are kept; expire some"
                ));
            }
            Ok(_) => {}
            Err(e) => return store_failed(e),
        }
    }
    // The creator is who the token says, with what the caller wrote beside it.
    let created_by = match posted.created_by.trim() {
        "" => principal.actor(),
        said => format!("{} ({said})", principal.actor()),
    };
    let silence = Silence {
        id: existing
            .as_ref()
            .map_or_else(|| firebreak_domain::new_id().to_string(), |s| s.id.clone()),
        matchers: posted
            .matchers
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                op: MatchOp::from_flags(m.is_regex, m.is_equal),
                value: m.value.clone(),
            })
            .collect(),
        starts_at,
        ends_at,
        created_by: firebreak_domain::clip(&created_by, firebreak_domain::silence::MAX_CREATOR),
        comment: posted.comment,
        updated_at: now,
    };
    if let Err(why) = silence.check() {
        return bad(why);
    }
    if let Err(e) = api.store.put_silence(&silence).await {
        return store_failed(e);
    }
    api.reload(now).await;
    tracing::info!(silence = %silence.id, by = %principal.actor(), "a silence was set");
    Json(serde_json::json!({ "silenceID": silence.id })).into_response()
}

/// `DELETE /api/v2/silence/{id}`: expires it now (a pending one never starts).
async fn expire(
    State(api): State<Silences>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let principal = match authorize(
        &api.verifier,
        &headers,
        None,
        Permission::SilencesManage,
        "intake",
    )
    .await
    {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let now = api.clock.now();
    let mut s = match api.store.silence(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no silence {id:?}\n")).into_response(),
        Err(e) => return store_failed(e),
    };
    if s.state(now) == firebreak_domain::silence::SilenceState::Expired {
        return bad(format!("silence {id:?} has expired already"));
    }
    s.starts_at = s.starts_at.min(now);
    s.ends_at = now;
    s.updated_at = now;
    if let Err(e) = api.store.put_silence(&s).await {
        return store_failed(e);
    }
    api.reload(now).await;
    tracing::info!(silence = %id, by = %principal.actor(), "a silence was expired");
    StatusCode::OK.into_response()
}
