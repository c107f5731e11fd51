//! Where people answer pages from, over HTTP: a page's signed link (`GET` shows a button,
//! `POST /v1/respond/{token}` acts: mail scanners that fetch links act on nothing), Slack's
//! interactive callbacks (`POST /v1/slack/interactions`) and Twilio's inbound text messages
//! (`POST /v1/twilio/sms`); and Twilio's status callbacks (`POST /v1/twilio/status`), which
//! move a `sent` text or call to delivered or failed. Each is checked (the link's signature and expiry, Slack's or
//! Twilio's request signature), tied to a directory user, allowed by a rule, kept once by its
//! id, and becomes the same acknowledge or resolve as the CLI's: a command to triage, with
//! `user:NAME` as the actor and where it came from on the timeline.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use firebreak_bus::{outbox_event, streams};
use firebreak_domain::access::{Permission, Role, Target};
use firebreak_domain::people::ContactKind;
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_storage::ResponseRecord;
use serde::Deserialize;
use serde_json::Value;

use crate::Notification;
use crate::respond::{self, Answer, LinkClaims, Refused, Signer};

/// The most bytes a callback's body may hold (Slack's and Twilio's are a few KB).
const MAX_BODY: usize = 64 * 1024;

/// How people reach Firebreak to answer pages: configuration `responses:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesSpec {
    /// The base URL of Firebreak's HTTP listener as people and providers reach it
    /// (`https://firebreak.example.com`): links in pages start with it, and Twilio signs
    /// the URL it calls, which is this one plus the path.
    pub public_url: String,
    /// The key that signs links: `{secret: NAME}`. Without it, pages carry no links.
    #[serde(default)]
    pub signing_key: Option<crate::channels::SecretRef>,
    /// How long a link acts after its page was sent (default a day).
    #[serde(default = "default_ttl")]
    pub link_ttl_seconds: u64,
}

fn default_ttl() -> u64 {
    86_400
}

/// Responses as configured and given their secret.
pub struct Responses {
    public_url: String,
    signer: Option<Signer>,
    link_ttl: Duration,
}

impl std::fmt::Debug for Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responses")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl ResponsesSpec {
    /// Checks the spec and reads its secret through `lookup`; errors name the field.
    pub fn build(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Responses, String> {
        let url = self.public_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("responses.public_url: {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || url.len() > 512
        {
            return Err(format!(
                "responses.public_url: {url:?} must be an http(s) URL of at most 512 bytes without a query"
            ));
        }
        if !(60..=30 * 86_400).contains(&self.link_ttl_seconds) {
            return Err(
                "responses.link_ttl_seconds: from 60 (a minute) to 2592000 (30 days)".into(),
            );
        }
        let signer = match &self.signing_key {
            None => None,
            Some(name) => {
                let key = lookup(name.name()).filter(|k| !k.is_empty()).ok_or_else(|| {
                    format!(
                        "responses.signing_key: secret {:?} is not set (a file of that name in secrets_dir, or FIREBREAK_SECRET_{})",
                        name.name(),
                        name.name().to_ascii_uppercase().replace('-', "_")
                    )
                })?;
                if key.len() < 32 {
                    return Err("responses.signing_key: at least 32 bytes".into());
                }
                Some(Signer::new(key.as_bytes()))
            }
        };
        Ok(Responses {
            public_url: url.to_owned(),
            signer,
            link_ttl: Duration::from_secs(self.link_ttl_seconds),
        })
    }
}

impl Responses {
    /// The acknowledge and resolve links of a page to `user` about `incident_id`, sent at
    /// `now_secs` (none without a signing key).
    pub(crate) fn links(
        &self,
        incident_id: &str,
        user: &str,
        now_secs: i64,
    ) -> Option<(String, String)> {
        let signer = self.signer.as_ref()?;
        let token = signer.token(&LinkClaims {
            incident_id: incident_id.to_owned(),
            user: user.to_owned(),
            expires: now_secs + self.link_ttl.as_secs() as i64,
        });
        let base = format!("{}/v1/respond/{token}", self.public_url);
        Some((format!("{base}?do=ack"), format!("{base}?do=resolve")))
    }
}

/// The responses' routes (only those configured answer; the others are 404).
pub(crate) fn routes(n: Notification) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/respond/{token}",
            axum::routing::get(confirm_page).post(link_answer),
        )
        .route("/v1/slack/interactions", axum::routing::post(slack_answer))
        .route("/v1/twilio/sms", axum::routing::post(sms_answer))
        .route("/v1/twilio/status", axum::routing::post(twilio_status))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(n)
}

/// Why an answer did not act; its text is shown to the person.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("answers are not configured here")]
    NotConfigured,
    #[error("Firebreak could not record the answer; try again")]
    Store(#[from] firebreak_storage::Error),
}

impl AnswerError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Refused(_) => StatusCode::FORBIDDEN,
            Self::NotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotConfigured => StatusCode::NOT_FOUND,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acted {
    pub incident_id: String,
    pub user: String,
    pub answer: Answer,
    /// False when the same answer (by its id) was taken before: nothing was sent again.
    pub new: bool,
}

impl Acted {
    fn text(&self) -> String {
        let done = match self.answer {
            Answer::Acknowledge => "acknowledged",
            Answer::Resolve => "resolved",
        };
        format!("Incident {} {done} by {}.", self.incident_id, self.user)
    }
}

impl Notification {
    fn responses(&self) -> Result<&Responses, AnswerError> {
        self.responses.as_deref().ok_or(AnswerError::NotConfigured)
    }

    fn now_secs(&self) -> i64 {
        self.clock.now().unix_micros() / 1_000_000
    }

    /// Acts on `user`'s `answer` about `incident_id`, from `via`, once per `id`: checks the
    /// person may, then keeps the answer with the command triage applies.
    pub(crate) async fn answer(
        &self,
        id: &str,
        user: &str,
        incident_id: &str,
        answer: Answer,
        via: &str,
    ) -> Result<Acted, AnswerError> {
        firebreak_domain::IncidentId::parse(incident_id)
            .map_err(|e| AnswerError::Invalid(format!("incident: {e}")))?;
        self.may_answer(user, incident_id, answer).await?;
        let actor = format!("user:{user}");
        let command = match answer {
            Answer::Acknowledge => Command::Acknowledge(true),
            Answer::Resolve => Command::Resolve(format!("Resolved by {user} from {via}.")),
        };
        let event = outbox_event(
            streams::NOTIFICATIONS,
            "notifications.incident_command",
            Payload::IncidentCommand(v1::IncidentCommand {
                incident_id: incident_id.to_owned(),
                actor,
                command: Some(command),
                via: via.to_owned(),
                if_vacant: false,
            }),
        );
        let record = ResponseRecord {
            id: crate::clip(id, 256),
            incident_id: incident_id.to_owned(),
            user: user.to_owned(),
            action: answer.as_str().to_owned(),
            via: via.to_owned(),
            at: self.clock.now(),
        };
        let new = self.store.record_response(&record, &event).await?;
        if new {
            self.relay.wake();
        }
        tracing::info!(incident = %incident_id, user, via, answer = answer.as_str(), new, "a page was answered");
        Ok(Acted {
            incident_id: incident_id.to_owned(),
            user: user.to_owned(),
            answer,
            new,
        })
    }

    /// The rule: a directory user may answer a page about an incident they were paged for
    /// (as a responder may: acknowledge and resolve), or one a live token of theirs grants
    /// the permission on.
    async fn may_answer(
        &self,
        user: &str,
        incident_id: &str,
        answer: Answer,
    ) -> Result<(), AnswerError> {
        let directory = self.directory.as_ref().ok_or(AnswerError::NotConfigured)?;
        let store = &directory.store;
        if store.user(user).await?.is_none() {
            return Err(AnswerError::NotAllowed(format!(
                "{user:?} is not a Firebreak user any more"
            )));
        }
        let permission = match answer {
            Answer::Acknowledge => Permission::IncidentsAcknowledge,
            Answer::Resolve => Permission::IncidentsResolve,
        };
        let paged = self
            .store
            .deliveries(Some(incident_id), 1000)
            .await?
            .iter()
            .any(|d| crate::paging::user_of(d).as_deref() == Some(user));
        if paged && Role::Responder.grants(permission) {
            return Ok(());
        }
        let now = self.clock.now();
        let target = Target {
            service: "triage",
            team: None,
            incident: Some(incident_id),
        };
        let granted = store.tokens_since(0).await?.into_iter().any(|t| {
            t.subject == user
                && t.revoked_at.is_none()
                && t.expires_at.is_none_or(|e| e > now)
                && t.grants
                    .iter()
                    .any(|g| g.role.grants(permission) && g.scope.applies(target))
        });
        if granted {
            return Ok(());
        }
        Err(AnswerError::NotAllowed(format!(
            "{user} was not paged for incident {incident_id} and holds no role that may {} it",
            answer.as_str()
        )))
    }

    /// The directory user one of whose contact methods of `kind` has `address`.
    async fn user_reached_at(
        &self,
        kind: ContactKind,
        address: &str,
    ) -> Result<Option<String>, AnswerError> {
        let directory = self.directory.as_ref().ok_or(AnswerError::NotConfigured)?;
        Ok(directory
            .store
            .users()
            .await?
            .into_iter()
            .find(|u| {
                u.contact_methods
                    .iter()
                    .any(|m| m.kind == kind && m.address == address)
            })
            .map(|u| u.name))
    }
}

#[derive(Deserialize)]
struct DoQuery {
    #[serde(rename = "do")]
    action: Option<String>,
}

/// `GET /v1/respond/{token}?do=ack`: a page with one button that posts the answer. Nothing
/// acts on a GET: mail scanners and link previews fetch links.
async fn confirm_page(
    State(n): State<Notification>,
    Path(token): Path<String>,
    Query(q): Query<DoQuery>,
) -> Response {
    let claims = match link_claims(&n, &token) {
        Ok(c) => c,
        Err(e) => return html(e.status(), "Not accepted", &e.to_string()),
    };
    let answer = q
        .action
        .as_deref()
        .and_then(Answer::parse)
        .unwrap_or(Answer::Acknowledge);
    let (word, value) = match answer {
        Answer::Acknowledge => ("Acknowledge", "ack"),
        Answer::Resolve => ("Resolve", "resolve"),
    };
    let body = format!(
        "<p>{word} incident <b>{}</b> as <b>{}</b>?</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"do\" value=\"{value}\">\
         <button type=\"submit\">{word}</button></form>",
        escape(&claims.incident_id),
        escape(&claims.user)
    );
    html(StatusCode::OK, word, &body)
}

/// `POST /v1/respond/{token}` with `do=ack|resolve`.
async fn link_answer(
    State(n): State<Notification>,
    Path(token): Path<String>,
    Query(q): Query<DoQuery>,
    body: Bytes,
) -> Response {
    let form = form(&body);
    let action = field(&form, "do").or(q.action.as_deref()).unwrap_or("ack");
    let result = async {
        let claims = link_claims(&n, &token)?;
        let answer = Answer::parse(action)
            .ok_or_else(|| AnswerError::Invalid("do: ack or resolve".into()))?;
        let id = format!("link:{}", firebreak_domain::new_id());
        n.answer(&id, &claims.user, &claims.incident_id, answer, "link")
            .await
    }
    .await;
    match result {
        Ok(acted) => html(StatusCode::OK, "Done", &escape(&acted.text())),
        Err(e) => html(e.status(), "Not accepted", &escape(&e.to_string())),
    }
}

fn link_claims(n: &Notification, token: &str) -> Result<LinkClaims, AnswerError> {
    let signer = n
        .responses()?
        .signer
        .as_ref()
        .ok_or(AnswerError::NotConfigured)?;
    Ok(signer.verify(token, n.now_secs())?)
}

/// `POST /v1/slack/interactions`: a button of a Slack message (`block_actions`), signed with
/// a Slack channel's signing secret. Slack shows nothing of the answer's body; the message
/// itself changes when the incident does.
async fn slack_answer(State(n): State<Notification>, headers: HeaderMap, body: Bytes) -> Response {
    let secrets: Vec<&str> = n
        .channels
        .iter()
        .filter_map(|c| c.slack_signing_secret())
        .collect();
    if secrets.is_empty() {
        return plain(AnswerError::NotConfigured);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = n.now_secs();
    let checked = secrets.iter().map(|s| {
        respond::verify_slack(
            s,
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
            &body,
            now,
        )
    });
    // Stale wins over a bad signature only when no secret signs it.
    let mut outcome = Err(Refused::Unsigned);
    for c in checked {
        match c {
            Ok(()) => {
                outcome = Ok(());
                break;
            }
            Err(e) => outcome = Err(e),
        }
    }
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "a Slack callback was refused");
        return plain(AnswerError::Refused(e));
    }
    let result = async {
        let form = form(&body);
        let payload: Value = field(&form, "payload")
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| AnswerError::Invalid("payload: not JSON".into()))?;
        if payload["type"] != "block_actions" {
            return Err(AnswerError::Invalid(format!(
                "type: {} is not an interaction Firebreak takes",
                crate::clip(&payload["type"].to_string(), 64)
            )));
        }
        let action = &payload["actions"][0];
        let answer = match action["action_id"].as_str() {
            Some(crate::channels::SLACK_ACK_ACTION) => Answer::Acknowledge,
            Some(crate::channels::SLACK_RESOLVE_ACTION) => Answer::Resolve,
            _ => {
                return Err(AnswerError::Invalid(
                    "actions[0].action_id: not a Firebreak button".into(),
                ));
            }
        };
        let incident_id = action["value"].as_str().unwrap_or_default();
        let slack_user = payload["user"]["id"].as_str().unwrap_or_default();
        if slack_user.is_empty() || slack_user.len() > 64 {
            return Err(AnswerError::Invalid("user.id: missing".into()));
        }
        let user = n
            .user_reached_at(ContactKind::Slack, slack_user)
            .await?
            .ok_or_else(|| {
                AnswerError::NotAllowed(format!(
                    "Slack user {slack_user} is not a Firebreak user's Slack contact method"
                ))
            })?;
        // One interaction, one answer, however often Slack retries it.
        let id = format!(
            "slack:{}",
            payload["trigger_id"]
                .as_str()
                .or(action["action_ts"].as_str())
                .unwrap_or_default()
        );
        n.answer(&id, &user, incident_id, answer, "slack").await
    }
    .await;
    match result {
        Ok(acted) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "response_type": "ephemeral", "text": acted.text() })),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = %e, "a Slack answer did not act");
            // Slack shows a failure to the clicker only for non-2xx answers.
            plain(e)
        }
    }
}

/// `POST /v1/twilio/sms`: a text message to a Twilio number, signed with a Twilio channel's
/// auth token over `responses.public_url` + the path. `4a` acknowledges the incident code
/// 4 names for the sender, `4r` resolves it; the answer is sent back as TwiML.
async fn sms_answer(State(n): State<Notification>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(responses) = n.responses() else {
        return plain(AnswerError::NotConfigured);
    };
    let tokens: Vec<&str> = n
        .channels
        .iter()
        .filter_map(|c| c.twilio_auth_token())
        .collect();
    if tokens.is_empty() {
        return plain(AnswerError::NotConfigured);
    }
    let params = form(&body);
    let url = format!("{}/v1/twilio/sms", responses.public_url);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if !tokens
        .iter()
        .any(|t| respond::verify_twilio(t, &url, &params, signature).is_ok())
    {
        tracing::warn!("a Twilio callback was refused: its signature does not match");
        return plain(AnswerError::Refused(Refused::Unsigned));
    }
    let result = async {
        let from = field(&params, "From").unwrap_or_default();
        let text = field(&params, "Body").unwrap_or_default();
        let (code, answer) = respond::parse_reply(text).ok_or_else(|| {
            AnswerError::Invalid("Reply with the code and a or r, e.g. 1a or 1r.".into())
        })?;
        let user = n
            .user_reached_at(ContactKind::Sms, from)
            .await?
            .ok_or_else(|| {
                AnswerError::NotAllowed("This number is not a Firebreak user's.".into())
            })?;
        let incident = n
            .store
            .reply_incident(from, code)
            .await?
            .ok_or_else(|| AnswerError::Invalid(format!("No incident has code {code}.")))?;
        let id = format!(
            "sms:{}",
            field(&params, "MessageSid").unwrap_or(&firebreak_domain::new_id().to_string())
        );
        n.answer(&id, &user, &incident, answer, "sms").await
    }
    .await;
    let text = match &result {
        Ok(acted) => acted.text(),
        Err(e) => e.to_string(),
    };
    // Twilio wants 200 with TwiML; the reply is the message it texts back.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{}</Message></Response>",
            escape(&text)
        ),
    )
        .into_response()
}

/// `POST /v1/twilio/status`: Twilio's report on a message or call it accepted, signed like
/// an inbound message over `responses.public_url` + the path (a Twilio channel's
/// `status_callback` points here). `delivered` (a text) or `completed` (a call) marks it
/// delivered; `undelivered`, `failed`, `busy`, `no-answer` and `canceled` mark it failed, and
/// a failed page fails over to the person's next contact method. Other states (queued,
/// ringing, ...) change nothing.
async fn twilio_status(State(n): State<Notification>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(responses) = n.responses() else {
        return plain(AnswerError::NotConfigured);
    };
    let params = form(&body);
    let url = format!("{}/v1/twilio/status", responses.public_url);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    let signed = n
        .channels
        .iter()
        .filter_map(|c| c.twilio_auth_token())
        .any(|t| respond::verify_twilio(t, &url, &params, signature).is_ok());
    if !signed {
        tracing::warn!("a Twilio status callback was refused: its signature does not match");
        return plain(AnswerError::Refused(Refused::Unsigned));
    }
    let sid = field(&params, "MessageSid")
        .or(field(&params, "CallSid"))
        .unwrap_or_default();
    let status = field(&params, "MessageStatus")
        .or(field(&params, "CallStatus"))
        .unwrap_or_default();
    let report = match status {
        "delivered" | "completed" => crate::delivery::ProviderReport::Delivered,
        "undelivered" | "failed" | "busy" | "no-answer" | "canceled" => {
            let code = field(&params, "ErrorCode").unwrap_or_default();
            crate::delivery::ProviderReport::Failed(crate::clip(
                &format!(
                    "twilio: {status}{}",
                    if code.is_empty() {
                        String::new()
                    } else {
                        format!(" (error {code})")
                    }
                ),
                256,
            ))
        }
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    match n.provider_report(sid, report).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(crate::error::Error::Invalid(why)) => {
            (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording a Twilio status failed");
            // Twilio does not retry; say so in the log, and answer that it failed.
            (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response()
        }
    }
}

/// A form body's fields, in order (at most 64 of them).
fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .take(64)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn plain(e: AnswerError) -> Response {
    (e.status(), format!("{e}\n")).into_response()
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\"><title>Firebreak: {title}</title></head><body>{body}</body></html>"
        ),
    )
        .into_response()
}

/// Text made safe inside HTML and XML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ResponsesSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn responses_are_checked_at_load_naming_the_field() {
        let key = "k".repeat(32);
        let lookup = |name: &str| (name == "links").then(|| key.clone());
        let ok = spec("{ public_url: 'https://fb.example.com/', signing_key: { secret: links } }")
            .build(&lookup)
            .unwrap();
        let (ack, resolve) = ok.links("INC", "amy", 0).unwrap();
        assert!(ack.starts_with("https://fb.example.com/v1/respond/") && ack.ends_with("?do=ack"));
        assert!(resolve.ends_with("?do=resolve"));
        // Without a signing key there are no links (Slack and SMS answers still work).
        let bare = spec("{ public_url: 'https://fb.example.com' }")
            .build(&lookup)
            .unwrap();
        assert_eq!(bare.links("INC", "amy", 0), None);
        for (yaml, field) in [
            (
                "{ public_url: 'ftp://fb.example.com' }",
                "responses.public_url",
            ),
            ("{ public_url: 'not a url' }", "responses.public_url"),
            (
                "{ public_url: 'https://fb.example.com/?a=b' }",
                "responses.public_url",
            ),
            (
                "{ public_url: 'https://fb.example.com', link_ttl_seconds: 5 }",
                "responses.link_ttl_seconds",
            ),
            (
                "{ public_url: 'https://fb.example.com', signing_key: { secret: missing } }",
                "responses.signing_key",
            ),
        ] {
            let e = spec(yaml).build(&lookup).unwrap_err();
            assert!(e.starts_with(field), "{yaml}: {e}");
        }
        let short = |_: &str| Some("short".to_owned());
        let e = spec("{ public_url: 'https://fb.example.com', signing_key: { secret: links } }")
            .build(&short)
            .unwrap_err();
        assert!(e.contains("at least 32 bytes"), "{e}");
        // A key's value in the configuration is refused: secrets are named, never written.
        assert!(
            serde_yaml::from_str::<ResponsesSpec>(
                "{ public_url: 'https://fb.example.com', signing_key: 'hunter2' }"
            )
            .is_err()
        );
    }

    #[test]
    fn text_is_escaped_for_html_and_xml() {
        assert_eq!(
            escape("<b a=\"1\">'&'</b>"),
            "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }
}
