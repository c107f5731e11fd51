//! Alertmanager's silences API on Firebreak's HTTP port, so that `amtool silence
//! add|query|expire --alertmanager.url=http://firebreak…` works unchanged:
//! `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}`, the same JSON
//! (`postableSilence`, `gettableSilence`). Calls carry a token (`Authorization: Bearer`, as
//! amtool sends with `--http.config.file`): reading takes `incidents.read`, writing
//! `silences.manage`. Silences are kept in intake's database; intake's `silences` module
//! checks, keeps and expires them for this API and for gRPC alike. Every write, allowed or
//! refused, goes into the audit log as a gRPC call's does (`POST /api/v2/silences`,
//! target `silence:ID`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use firebreak_domain::access::{Permission, Principal};
use firebreak_domain::silence::{MatchOp, Matcher, Silence};
use firebreak_domain::{Clock, Micros, ServiceError};
use firebreak_intake::silencer::Silencer;
use firebreak_intake::silences::{Draft, SilenceError, Silences};
use firebreak_proto::access::RemoteAddr;
use serde::{Deserialize, Serialize};

use crate::auth::{HttpCall, Verifier};
use crate::feeds::{authorize, check};

/// The most bytes a silence's body may hold.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
struct Api {
    silences: Silences,
    verifier: Arc<Verifier>,
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
        .with_state(Api {
            silences: Silences::new(silencer, clock),
            verifier,
        })
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

/// A refused or failed call's answer: its code's HTTP status and its caller message.
fn failed(e: &SilenceError) -> Response {
    if let SilenceError::Storage(s) = e {
        tracing::warn!(error = %s, "the silences store failed");
    }
    let status = StatusCode::from_u16(e.error_code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, format!("{}\n", e.caller_message())).into_response()
}

/// A write's caller, verified and allowed `silences.manage`, or the refusal (audited).
async fn writer(api: &Api, call: &HttpCall<'_>, target: &str) -> Result<Arc<Principal>, Response> {
    match check(
        &api.verifier,
        call.headers,
        None,
        Permission::SilencesManage,
        "intake",
    )
    .await
    {
        Ok(p) => Ok(p),
        Err(refused) => {
            api.verifier.audit_http(
                call,
                refused.who.as_deref(),
                target,
                Some(refused.code),
                &refused.reason,
            );
            Err(refused.response)
        }
    }
}

/// Records an allowed write's outcome.
fn audited<T>(
    api: &Api,
    call: &HttpCall<'_>,
    who: &Principal,
    target: &str,
    done: &Result<T, SilenceError>,
) {
    let outcome = done.as_ref().err().map(ServiceError::error_code);
    api.verifier
        .audit_http(call, Some(who), target, outcome, "");
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

async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
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
    let now = api.silences.now();
    match api.silences.list().await {
        Ok(all) => Json(
            all.iter()
                .map(|c| gettable(&c.silence, now))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => failed(&e),
    }
}

async fn one(State(api): State<Api>, Path(id): Path<String>, headers: HeaderMap) -> Response {
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
    match api.silences.get(&id).await {
        Ok(s) => Json(gettable(&s, api.silences.now())).into_response(),
        Err(e) => failed(&e),
    }
}

/// `POST /api/v2/silences`: a new silence, or an edit of the one `id` names. Answers
/// `{"silenceID": ID}`.
async fn create(
    State(api): State<Api>,
    remote: Option<Extension<RemoteAddr>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let call = HttpCall {
        method: "POST /api/v2/silences",
        headers: &headers,
        source: remote.map(|Extension(RemoteAddr(a))| a),
    };
    let posted: Result<Postable, _> = serde_json::from_slice(&body);
    // An edit names its silence; a new one is named once it is made.
    let edited = match &posted {
        Ok(p) => p.id.as_deref().filter(|id| !id.is_empty()),
        Err(_) => None,
    };
    let target = edited.map_or_else(String::new, |id| format!("silence:{id}"));
    let principal = match writer(&api, &call, &target).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let done = match posted {
        Ok(posted) => match draft(posted) {
            Ok(d) => api.silences.put(d, &principal.actor()).await,
            Err(why) => Err(SilenceError::Invalid(why)),
        },
        Err(e) => Err(SilenceError::Invalid(format!(
            "the body is not a postableSilence: {e}"
        ))),
    };
    let target = match &done {
        Ok(s) => format!("silence:{}", s.id),
        Err(_) => target,
    };
    audited(&api, &call, &principal, &target, &done);
    match done {
        Ok(s) => Json(serde_json::json!({ "silenceID": s.id })).into_response(),
        Err(e) => failed(&e),
    }
}

/// A `postableSilence` as intake takes it; errors name the field.
fn draft(posted: Postable) -> Result<Draft, String> {
    let starts_at = parse_time("startsAt", &posted.starts_at)?;
    let ends_at = parse_time("endsAt", &posted.ends_at)?;
    Ok(Draft {
        id: posted.id.filter(|id| !id.is_empty()),
        matchers: posted
            .matchers
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                op: MatchOp::from_flags(m.is_regex, m.is_equal),
                value: m.value.clone(),
            })
            .collect(),
        starts_at: Some(starts_at),
        ends_at,
        created_by: posted.created_by,
        comment: posted.comment,
    })
}

/// `DELETE /api/v2/silence/{id}`: expires it now (a pending one never starts).
async fn expire(
    State(api): State<Api>,
    remote: Option<Extension<RemoteAddr>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = HttpCall {
        method: "DELETE /api/v2/silence",
        headers: &headers,
        source: remote.map(|Extension(RemoteAddr(a))| a),
    };
    let target = format!("silence:{id}");
    let principal = match writer(&api, &call, &target).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let done = api.silences.expire(&id, &principal.actor()).await;
    audited(&api, &call, &principal, &target, &done);
    match done {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => failed(&e),
    }
}
