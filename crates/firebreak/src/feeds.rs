//! iCalendar feeds of on-call shifts over HTTP, for calendar apps:
//! `GET /v1/oncall/schedules/{name}.ics` (a schedule's shifts) and
//! `GET /v1/oncall/users/{name}.ics` (one person's shifts in every schedule), from a week ago
//! to 60 days ahead. Calendar apps cannot send headers, so the token may come as `?token=`
//! as well as `Authorization: Bearer`; either way it needs `directory.read`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firebreak_domain::access::{Permission, Target};
use firebreak_domain::schedule;
use firebreak_notification::Notification;

use crate::auth::Verifier;

/// How far back and ahead a feed reaches.
const BEHIND: Duration = Duration::from_secs(7 * 86_400);
const AHEAD: Duration = Duration::from_secs(60 * 86_400);

#[derive(Clone)]
struct Feeds {
    notification: Notification,
    verifier: Arc<Verifier>,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The feeds' routes.
pub(crate) fn routes(notification: Notification, verifier: Arc<Verifier>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/oncall/schedules/{file}",
            axum::routing::get(schedule_feed),
        )
        .route("/v1/oncall/users/{file}", axum::routing::get(user_feed))
        .with_state(Feeds {
            notification,
            verifier,
        })
}

async fn schedule_feed(
    State(f): State<Feeds>,
    Path(file): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = allowed(&f, &headers, q.token.as_deref()).await {
        return refused;
    }
    let Some(name) = ics_name(&file) else {
        return (StatusCode::NOT_FOUND, "feeds are NAME.ics\n").into_response();
    };
    let Some(s) = f.notification.schedules().await.get(name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no schedule {name:?}\n")).into_response();
    };
    let (from, to) = range(&f);
    let name = name.to_owned();
    let laid_out = tokio::task::spawn_blocking(move || {
        schedule::shifts(&s, from, to).map(|shifts| {
            firebreak_notification::ical::calendar(&name, &shifts, jiff::Timestamp::now())
        })
    })
    .await;
    respond(laid_out)
}

async fn user_feed(
    State(f): State<Feeds>,
    Path(file): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = allowed(&f, &headers, q.token.as_deref()).await {
        return refused;
    }
    let Some(user) = ics_name(&file) else {
        return (StatusCode::NOT_FOUND, "feeds are NAME.ics\n").into_response();
    };
    let schedules: Vec<schedule::Schedule> = f
        .notification
        .schedules()
        .await
        .all()
        .into_iter()
        .cloned()
        .collect();
    let (from, to) = range(&f);
    let user = user.to_owned();
    let laid_out = tokio::task::spawn_blocking(move || {
        let mut shifts = Vec::new();
        for s in &schedules {
            for i in schedule::shifts_of(s, &user, from, to)? {
                shifts.push(schedule::Shift {
                    start: i.start,
                    end: i.end,
                    users: vec![format!("{user} ({})", s.name())],
                });
            }
        }
        shifts.sort_by_key(|s| s.start);
        Ok(firebreak_notification::ical::calendar(
            &user,
            &shifts,
            jiff::Timestamp::now(),
        ))
    })
    .await;
    respond(laid_out)
}

/// `NAME` of `NAME.ics`, when it is a name.
fn ics_name(file: &str) -> Option<&str> {
    let name = file.strip_suffix(".ics")?;
    firebreak_domain::access::parse_name("name", name)
        .ok()
        .map(|_| name)
}

fn range(f: &Feeds) -> (jiff::Timestamp, jiff::Timestamp) {
    let now = f.verifier.now();
    (
        firebreak_notification::schedules::instant(now - BEHIND),
        firebreak_notification::schedules::instant(now + AHEAD),
    )
}

fn respond(
    laid_out: Result<Result<String, schedule::ScheduleError>, tokio::task::JoinError>,
) -> Response {
    match laid_out {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, "text/calendar; charset=utf-8")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "laying out the schedule failed\n",
        )
            .into_response(),
    }
}

/// Whether the caller's token (bearer header, else `?token=`) may read the directory.
async fn allowed(f: &Feeds, headers: &HeaderMap, query: Option<&str>) -> Result<(), Response> {
    authorize(
        &f.verifier,
        headers,
        query,
        Permission::DirectoryRead,
        "notification",
    )
    .await
    .map(drop)
}

/// The caller of an HTTP endpoint, verified from its token (a bearer header, else `query`),
/// when it holds `permission` on `service`; otherwise the answer refusing it (401 without a
/// valid token, 403 without the permission).
pub(crate) async fn authorize(
    verifier: &Verifier,
    headers: &HeaderMap,
    query: Option<&str>,
    permission: Permission,
    service: &str,
) -> Result<Arc<firebreak_domain::access::Principal>, Response> {
    check(verifier, headers, query, permission, service)
        .await
        .map_err(|r| r.response)
}

/// A refused HTTP caller: the answer, and what the audit log records of it.
pub(crate) struct Refused {
    pub(crate) response: Response,
    /// Who it was, when its token was valid.
    pub(crate) who: Option<Arc<firebreak_domain::access::Principal>>,
    pub(crate) code: firebreak_domain::ErrorCode,
    pub(crate) reason: String,
}

/// [`authorize`], saying who was refused and why.
pub(crate) async fn check(
    verifier: &Verifier,
    headers: &HeaderMap,
    query: Option<&str>,
    permission: Permission,
    service: &str,
) -> Result<Arc<firebreak_domain::access::Principal>, Refused> {
    use firebreak_domain::ErrorCode;
    let unauthenticated = |why: &str| Refused {
        response: (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response(),
        who: None,
        code: ErrorCode::Unauthenticated,
        reason: why.to_owned(),
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(token) = bearer.or(query) else {
        return Err(unauthenticated(
            "no credentials: send authorization: Bearer <token> or ?token=",
        ));
    };
    let principal = match verifier.verify(token, None).await {
        Ok(p) => p,
        Err(_) => {
            firebreak_telemetry::metrics().auth_failures.inc();
            return Err(unauthenticated("the token is not valid"));
        }
    };
    let target = Target {
        service,
        team: None,
        incident: None,
    };
    if principal.may(permission, target) {
        Ok(principal)
    } else {
        let reason = format!("{} may not {}", principal.actor(), permission.as_str());
        Err(Refused {
            response: (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response(),
            who: Some(principal),
            code: ErrorCode::PermissionDenied,
            reason,
        })
    }
}
