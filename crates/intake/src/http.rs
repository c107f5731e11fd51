//! Webhook intake over HTTP: Prometheus Alertmanager (and Grafana), PagerDuty Events API v2
//! (alerts and change events) and the v1 generic events API Alertmanager's `pagerduty_configs`
//! speak. Each answers 2xx only after its alerts are committed, 4xx for what a retry cannot
//! fix (nothing stored), 429 with `Retry-After` under overload, 503 when a retry may work.
//!
//! An integration with a signing secret accepts only calls signed with it
//! (`X-Firebreak-Signature`, checked over the raw body before anything is stored), and a
//! source address with too many wrong keys or
//! signatures in a minute is answered 429 until its minute ends.
// Helpers return the ready error `Response` for handlers to answer with at once; it lives
// for one request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{Labels, SignalInput, dedup_key_for_group_key, dedup_key_for_labels};
use firebreak_proto::ServiceError;
use firebreak_proto::access::RemoteAddr;
use firebreak_proto::v1::{self, event::Payload};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    AuthError, Incoming, IngestError, Intake, Integration, IntegrationKind, SignalAction, Source,
};

/// PagerDuty's limit on an event's body.
const PAGERDUTY_MAX_BODY: usize = 512 * 1024;
/// A change event's details (`custom_details` as JSON) at most.
const MAX_CHANGE_DETAILS: usize = 64 * 1024;
/// Alertmanager sends whole groups; allow large ones.
const ALERTMANAGER_MAX_BODY: usize = 8 * 1024 * 1024;

impl Intake {
    /// The webhook routes, to merge into the HTTP server's router.
    pub fn http_routes(&self) -> Router {
        Router::new()
            .route(
                "/v1/webhooks/alertmanager/{key}",
                post(alertmanager_keyed).layer(DefaultBodyLimit::max(ALERTMANAGER_MAX_BODY)),
            )
            .route(
                "/v1/webhooks/alertmanager",
                post(alertmanager_bearer).layer(DefaultBodyLimit::max(ALERTMANAGER_MAX_BODY)),
            )
            .route(
                "/v2/enqueue",
                post(pagerduty_v2).layer(DefaultBodyLimit::max(PAGERDUTY_MAX_BODY)),
            )
            .route(
                "/v2/change/enqueue",
                post(pagerduty_change).layer(DefaultBodyLimit::max(PAGERDUTY_MAX_BODY)),
            )
            .route(
                "/generic/2010-04-15/create_event.json",
                post(pagerduty_v1).layer(DefaultBodyLimit::max(PAGERDUTY_MAX_BODY)),
            )
            .route_layer(axum::middleware::from_fn(acknowledged))
            .with_state(self.clone())
    }
}

/// Times a webhook from reaching intake to its answer, in `firebreak_intake_ack_seconds`.
async fn acknowledged(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    firebreak_telemetry::metrics().observe_ack(
        firebreak_telemetry::Transport::Http,
        firebreak_telemetry::AckOutcome::of_http(response.status().as_u16()),
        started.elapsed(),
    );
    response
}

/// An error answer in PagerDuty's shape, which Alertmanager's log shows as is.
fn error(status: StatusCode, kind: &str, message: &str, errors: Vec<String>) -> Response {
    (
        status,
        axum::Json(json!({ "status": kind, "message": message, "errors": errors })),
    )
        .into_response()
}

fn invalid(errors: Vec<String>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid event",
        "Event object is invalid",
        errors,
    )
}

/// The answer to an error, its status from the same [`ServiceError`] mapping the gRPC edge
/// uses; `kind` is PagerDuty's word for it. The server's own faults are logged here and
/// told in general words.
fn service_error(e: &(impl ServiceError + ?Sized), kind: &str) -> Response {
    let code = e.error_code();
    if code.is_server_fault() {
        tracing::error!(code = ?code, error = %e, "webhook failed");
    }
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, kind, &e.caller_message(), Vec::new())
}

fn auth_error(e: &AuthError) -> Response {
    match e {
        AuthError::TooManyFailures { retry_after } => {
            let mut response = service_error(e, "throttled");
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert("retry-after", seconds.max(1).into());
            response
        }
        _ => service_error(e, "unauthorized"),
    }
}

/// Who calls: the source address the server put on the request, if any.
type Remote = Option<Extension<RemoteAddr>>;

/// The integration a webhook call authenticates as, or the answer refusing it: the source
/// must not be held back, the key must name an integration of `kind`, and the call must be
/// signed when the integration signs its calls. Wrong keys and signatures count against
/// the source.
fn authenticate(
    intake: &Intake,
    remote: &Remote,
    key: &str,
    kind: IntegrationKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Integration, Response> {
    let source = remote.as_ref().map(|Extension(RemoteAddr(a))| a.ip());
    let now = intake.clock.now();
    let registry = &intake.registry;
    registry
        .admit_source(source, now)
        .and_then(|()| {
            let found = registry.authenticate(key, kind).and_then(|i| {
                let signature = headers.get(crate::SIGNATURE_HEADER).map(|v| v.as_bytes());
                registry.check_signature(&i, signature, body, now)?;
                Ok(i)
            });
            registry.note(source, now, found)
        })
        .map_err(|e| auth_error(&e))
}

fn ingest_error(e: &IngestError) -> Response {
    match e.retry_after() {
        Some(delay) => {
            let mut response = service_error(e, "throttled");
            // Whole seconds, rounded up: a client retrying sooner would be refused again.
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert("retry-after", seconds.max(1).into());
            response
        }
        None => service_error(e, "unavailable"),
    }
}

/// The PagerDuty integration a routing (or service) key names, or the answer refusing it.
fn pagerduty_integration(
    intake: &Intake,
    remote: &Remote,
    field: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Integration, Response> {
    if key.trim().is_empty() {
        return Err(invalid(vec![format!("'{field}' is missing or blank")]));
    }
    authenticate(
        intake,
        remote,
        key,
        IntegrationKind::Pagerduty,
        headers,
        body,
    )
}

/// Parses a JSON body into `T`, or answers 400 saying why.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| invalid(vec![format!("body: {e}")]))
}

/// Stores `batch` for `integration`, all or nothing: one invalid signal refuses the call.
async fn store(
    intake: &Intake,
    integration: &Integration,
    batch: Vec<Incoming>,
) -> Result<Vec<crate::SignalResult>, Response> {
    let _permit = intake
        .admit_for(integration, batch.len())
        .map_err(|e| ingest_error(&e))?;
    let items = intake.validate(batch);
    let errors: Vec<String> = items
        .iter()
        .enumerate()
        .filter_map(|(i, (_, checked))| checked.as_ref().err().map(|e| format!("alert {i}: {e}")))
        .collect();
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let source = Source {
        integration: &integration.name,
        auto_resolve: integration.auto_resolve,
    };
    intake
        .ingest_checked(source, items, None)
        .await
        .map_err(|e| ingest_error(&e))
}

// ---------------------------------------------------------------- Alertmanager

/// Alertmanager's webhook payload, version 4. Other fields (Grafana adds several) are
/// ignored.
#[derive(Debug, Deserialize)]
struct AmPayload {
    version: String,
    #[serde(rename = "groupKey")]
    group_key: String,
    #[serde(default, rename = "truncatedAlerts")]
    truncated_alerts: u32,
    alerts: Vec<AmAlert>,
    /// Grafana's contact point sends its own payload version ("1") with an `orgId`.
    #[serde(default, rename = "orgId")]
    org_id: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct AmAlert {
    status: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: String,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: String,
}

async fn alertmanager_keyed(
    State(intake): State<Intake>,
    remote: Remote,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    alertmanager(&intake, &remote, &key, &headers, &body).await
}

async fn alertmanager_bearer(
    State(intake): State<Intake>,
    remote: Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(crate::integrations::bearer_token)
        .unwrap_or_default();
    alertmanager(&intake, &remote, token, &headers, &body).await
}

async fn alertmanager(
    intake: &Intake,
    remote: &Remote,
    key: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let integration = match authenticate(
        intake,
        remote,
        key,
        IntegrationKind::Alertmanager,
        headers,
        body,
    ) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let payload: AmPayload = match parse(body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let grafana = payload.org_id.is_some() && payload.version == "1";
    if payload.version != "4" && !grafana {
        return invalid(vec![format!(
            "version: {:?} is not supported; Alertmanager webhook payloads are version \"4\"",
            payload.version
        )]);
    }
    if payload.alerts.is_empty() {
        return invalid(vec!["alerts: the group holds no alert".into()]);
    }
    let max = intake.max_alerts_per_call;
    if payload.alerts.len() > max {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid event",
            "Too many alerts in one call",
            vec![format!(
                "alerts: the group holds {} alerts, more than {max} in one call; set `max_alerts: {max}` in the webhook receiver (Alertmanager then reports the rest as truncatedAlerts)",
                payload.alerts.len()
            )],
        );
    }
    // One incident per Alertmanager group: its group key, canonical, is the dedup key.
    let dedup_key =
        dedup_key_for_group_key(&format!("am/{}", integration.name), &payload.group_key);
    let mut batch = Vec::with_capacity(payload.alerts.len());
    for a in payload.alerts {
        let action = match a.status.as_str() {
            "firing" => SignalAction::Trigger,
            "resolved" => SignalAction::Resolve,
            other => {
                return invalid(vec![format!(
                    "alerts: status {other:?} is neither firing nor resolved"
                )]);
            }
        };
        let key = if a.fingerprint.trim().is_empty() {
            dedup_key_for_labels(
                "labels",
                a.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        } else {
            a.fingerprint.trim().to_owned()
        };
        let title = a
            .annotations
            .get("summary")
            .or_else(|| a.labels.get("alertname"))
            .cloned()
            .unwrap_or_else(|| "alert from Alertmanager".into());
        let severity = a
            .labels
            .get(&integration.severity_label)
            .and_then(|s| integration.severity(s))
            .unwrap_or(0);
        let mut annotations: Labels = a.annotations.clone();
        if !a.generator_url.is_empty() {
            annotations.insert("generatorURL".into(), a.generator_url.clone());
        }
        if !a.starts_at.is_empty() {
            annotations.insert("startsAt".into(), a.starts_at.clone());
        }
        batch.push(Incoming {
            action,
            alert_key: key,
            input: SignalInput {
                title: title.chars().take(1024).collect(),
                description: a
                    .annotations
                    .get("description")
                    .cloned()
                    .unwrap_or_default(),
                severity,
                category: integration.category.clone(),
                labels: a.labels,
                source: format!(
                    "{}/{}",
                    if grafana { "grafana" } else { "alertmanager" },
                    integration.name
                ),
                dedup_key: dedup_key.clone(),
            },
            annotations,
            truncated: payload.truncated_alerts,
        });
    }
    let n = batch.len();
    match store(intake, &integration, batch).await {
        Ok(outcomes) => {
            let new = outcomes.iter().filter(|o| o.received.is_some()).count();
            (
                StatusCode::OK,
                axum::Json(json!({ "status": "success", "alerts": n, "new": new })),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- PagerDuty v2

#[derive(Debug, Deserialize)]
struct PdEvent {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    event_action: String,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    payload: Option<PdPayload>,
}

#[derive(Debug, Deserialize)]
struct PdPayload {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    custom_details: Option<Value>,
}

/// The incident dedup key of a PagerDuty dedup key: one incident per dedup key and
/// integration.
fn pd_incident_key(integration: &Integration, dedup_key: &str) -> String {
    dedup_key_for_labels(
        &format!("pd/{}", integration.name),
        [("dedup_key", dedup_key)],
    )
}

/// `custom_details` as annotations: strings as they are, other values as JSON.
fn details(v: Option<&Value>) -> Labels {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect(),
        Some(Value::Null) | None => Labels::new(),
        Some(other) => [("details".to_owned(), other.to_string())].into(),
    }
}

async fn pagerduty_v2(
    State(intake): State<Intake>,
    remote: Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event: PdEvent = match parse(&body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let key = &event.routing_key;
    let integration =
        match pagerduty_integration(&intake, &remote, "routing_key", key, &headers, &body) {
            Ok(i) => i,
            Err(r) => return r,
        };
    let mut errors = Vec::new();
    let action = match event.event_action.as_str() {
        "trigger" => SignalAction::Trigger,
        "acknowledge" => SignalAction::Acknowledge,
        "resolve" => SignalAction::Resolve,
        other => {
            errors.push(format!(
                "'event_action' {other:?} is not one of trigger, acknowledge, resolve"
            ));
            SignalAction::Trigger
        }
    };
    let given_key = event.dedup_key.clone().filter(|k| !k.trim().is_empty());
    if given_key.as_ref().is_some_and(|k| k.len() > 255) {
        errors.push("Length of 'dedup_key' is greater than 255 bytes".into());
    }
    if action != SignalAction::Trigger && given_key.is_none() {
        errors.push(format!(
            "'dedup_key' is required for event_action {:?}",
            event.event_action
        ));
    }
    let mut input = SignalInput::default();
    let mut annotations = Labels::new();
    if action == SignalAction::Trigger {
        match &event.payload {
            None => errors.push("'payload' is missing".into()),
            Some(p) => {
                if p.summary.trim().is_empty() {
                    errors.push("'payload.summary' is missing or blank".into());
                } else if p.summary.chars().count() > 1024 {
                    errors
                        .push("Length of 'payload.summary' is greater than 1024 characters".into());
                }
                if p.source.trim().is_empty() {
                    errors.push("'payload.source' is missing or blank".into());
                }
                let severity = match p.severity.as_str() {
                    "critical" | "error" | "warning" | "info" => {
                        integration.severity(&p.severity).unwrap_or(0)
                    }
                    other => {
                        errors.push(format!(
                            "'payload.severity' {other:?} is not one of critical, error, warning, info"
                        ));
                        0
                    }
                };
                let mut labels = Labels::new();
                labels.insert("source".into(), p.source.clone());
                for (k, v) in [
                    ("component", &p.component),
                    ("group", &p.group),
                    ("class", &p.class),
                ] {
                    if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                        labels.insert(k.into(), v.clone());
                    }
                }
                annotations = details(p.custom_details.as_ref());
                input = SignalInput {
                    title: p.summary.clone(),
                    description: String::new(),
                    severity,
                    category: integration.category.clone(),
                    labels,
                    source: format!("pagerduty/{}", integration.name),
                    dedup_key: String::new(),
                };
            }
        }
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let dedup_key = given_key.unwrap_or_else(crate::new_key);
    input.dedup_key = pd_incident_key(&integration, &dedup_key);
    let item = Incoming {
        action,
        alert_key: dedup_key.clone(),
        input,
        annotations,
        truncated: 0,
    };
    match store(&intake, &integration, vec![item]).await {
        Ok(_) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "success", "message": "Event processed", "dedup_key": dedup_key })),
        )
            .into_response(),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- PagerDuty change events

#[derive(Debug, Deserialize)]
struct PdChange {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    payload: Option<PdChangePayload>,
}

#[derive(Debug, Deserialize)]
struct PdChangePayload {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    custom_details: Option<Value>,
}

async fn pagerduty_change(
    State(intake): State<Intake>,
    remote: Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let change: PdChange = match parse(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let key = &change.routing_key;
    let integration =
        match pagerduty_integration(&intake, &remote, "routing_key", key, &headers, &body) {
            Ok(i) => i,
            Err(r) => return r,
        };
    let Some(p) = change.payload else {
        return invalid(vec!["'payload' is missing".into()]);
    };
    if p.summary.trim().is_empty() || p.summary.chars().count() > 1024 {
        return invalid(vec![
            "'payload.summary' must hold 1 to 1024 characters".into(),
        ]);
    }
    // Stored once by triage, and referred to from every incident it concerns: bounded here.
    let details = p.custom_details.map(|d| d.to_string()).unwrap_or_default();
    let mut errors = Vec::new();
    if details.len() > MAX_CHANGE_DETAILS {
        errors.push(format!(
            "'payload.custom_details' is {} bytes as JSON, more than {MAX_CHANGE_DETAILS}",
            details.len()
        ));
    }
    if p.source.len() > 255 {
        errors.push("Length of 'payload.source' is greater than 255 bytes".into());
    }
    for (field, text) in [
        ("payload.summary", &p.summary),
        ("payload.source", &p.source),
        ("payload.custom_details", &details),
    ] {
        // JSON escapes a NUL in the details; the text fields hold it raw.
        if text.contains('\0') || text.contains("\\u0000") {
            errors.push(format!("'{field}' must not contain NUL characters"));
        }
    }
    if !errors.is_empty() {
        return invalid(errors);
    }
    let _permit = match intake.admit_for(&integration, 1) {
        Ok(p) => p,
        Err(e) => return ingest_error(&e),
    };
    let event = outbox_event(
        streams::ALERTS,
        "alerts.change",
        Payload::ChangeReceived(v1::ChangeReceived {
            integration: integration.name.clone(),
            summary: p.summary,
            source: p.source,
            at: Some(firebreak_proto::timestamp(intake.clock.now())),
            details,
        }),
    );
    match intake.record_event(&event).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "success", "message": "Change event processed" })),
        )
            .into_response(),
        Err(e) => ingest_error(&e),
    }
}

// ---------------------------------------------------------------- PagerDuty v1 (generic)

#[derive(Debug, Deserialize)]
struct PdV1 {
    #[serde(default)]
    service_key: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    details: Option<Value>,
    #[serde(default)]
    client: Option<String>,
}

async fn pagerduty_v1(
    State(intake): State<Intake>,
    remote: Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event: PdV1 = match parse(&body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let key = &event.service_key;
    let integration =
        match pagerduty_integration(&intake, &remote, "service_key", key, &headers, &body) {
            Ok(i) => i,
            Err(r) => return r,
        };
    let action = match event.event_type.as_str() {
        "trigger" => SignalAction::Trigger,
        "acknowledge" => SignalAction::Acknowledge,
        "resolve" => SignalAction::Resolve,
        other => {
            return invalid(vec![format!(
                "'event_type' {other:?} is not one of trigger, acknowledge, resolve"
            )]);
        }
    };
    let given = event.incident_key.clone().filter(|k| !k.trim().is_empty());
    if given.as_ref().is_some_and(|k| k.len() > 255) {
        return invalid(vec![
            "Length of 'incident_key' is greater than 255 bytes".into(),
        ]);
    }
    if action != SignalAction::Trigger && given.is_none() {
        return invalid(vec![
            "'incident_key' is required to acknowledge or resolve".into(),
        ]);
    }
    if action == SignalAction::Trigger
        && (event.description.trim().is_empty() || event.description.chars().count() > 1024)
    {
        return invalid(vec!["'description' must hold 1 to 1024 characters".into()]);
    }
    let key = given.unwrap_or_else(crate::new_key);
    let mut labels = Labels::new();
    if let Some(c) = event.client.filter(|c| !c.is_empty()) {
        labels.insert("client".into(), c);
    }
    let item = Incoming {
        action,
        alert_key: key.clone(),
        input: SignalInput {
            title: event.description,
            description: String::new(),
            severity: 0,
            category: integration.category.clone(),
            labels,
            source: format!("pagerduty/{}", integration.name),
            dedup_key: pd_incident_key(&integration, &key),
        },
        annotations: details(event.details.as_ref()),
        truncated: 0,
    };
    match store(&intake, &integration, vec![item]).await {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(
                json!({ "status": "success", "message": "Event processed", "incident_key": key }),
            ),
        )
            .into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    async fn body(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The webhooks answer with the HTTP status of the same error code the gRPC edge sends.
    #[tokio::test]
    async fn webhook_errors_take_their_status_from_the_error_code() {
        let wrong = AuthError::WrongKind {
            name: "am".into(),
            kind: IntegrationKind::Alertmanager,
        };
        assert_eq!(auth_error(&wrong).status(), StatusCode::FORBIDDEN);
        assert_eq!(
            auth_error(&AuthError::Unknown).status(),
            StatusCode::UNAUTHORIZED
        );
        let throttled = ingest_error(&IngestError::RateLimited {
            integration: "integration am".into(),
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()["retry-after"], "2");
        assert_eq!(body(throttled).await["status"], "throttled");
    }

    #[tokio::test]
    async fn a_storage_failure_is_503_without_the_database_words() {
        let e = IngestError::Storage(Arc::new(firebreak_storage::Error::Stopped(
            "/var/lib/firebreak/intake.db".into(),
        )));
        let r = ingest_error(&e);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body(r).await;
        assert_eq!(body["status"], "unavailable");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("intake.db"), "{message}");
    }
}
