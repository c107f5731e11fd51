//! Channels: where notifications go — the log, signed JSON webhooks, email over SMTP, Slack
//! (Web API or incoming webhook), Mattermost (bot or incoming webhook), Microsoft Teams
//! (Workflows webhook with an Adaptive Card), Twilio SMS and voice, a generic HTTP SMS
//! gateway — each configured under `channels:`, and which events each wants.
//!
//! A [`Message`] goes to a channel (a broadcast: `to` is `None`) or to a person through one
//! of their contact methods ([`channel_for`] picks the channel for its kind), rendered by
//! the channel's templates. See `docs/channels.md`.

mod config;
mod email;
mod error;
mod gateway;
mod http;
mod mattermost;
mod message;
mod secrets;
mod slack;
mod teams;
mod templates;
mod twilio;
mod webhook;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use firebreak_domain::people::{ContactKind, ContactMethod};
use firebreak_storage::DeliveryRecord;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use config::Spec;
use secrets::Secrets;
use templates::{Escape, Part, PartSpec, Style, TemplateOverrides};

pub use error::{ChannelError, DeliveryError};
pub use message::{EventKind, Message, Receipt};
pub use secrets::SecretRef;
pub(crate) use slack::{ACK_ACTION as SLACK_ACK_ACTION, RESOLVE_ACTION as SLACK_RESOLVE_ACTION};
pub use templates::sample_incident;
pub use webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

/// What a channel delivers through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// A structured log line on the server.
    Log,
    /// An HTTP POST of the JSON payload, with `Idempotency-Key` and, with a signing secret,
    /// an HMAC-SHA256 signature.
    Webhook,
    /// Email over SMTP (STARTTLS, implicit TLS, or plain to a loopback server).
    Email,
    /// Slack's Web API with a bot token: `chat.postMessage`, `chat.update`.
    Slack,
    /// A Slack incoming webhook.
    SlackWebhook,
    /// Mattermost's REST API with a bot's token: posts, direct messages, post updates.
    Mattermost,
    /// A Mattermost incoming webhook.
    MattermostWebhook,
    /// A Microsoft Teams Workflows webhook, posting an Adaptive Card.
    Teams,
    /// Twilio: SMS (`Messages.json`) and voice calls (`Calls.json`).
    Twilio,
    /// Any HTTP SMS gateway, its request written as templates.
    SmsGateway,
}

impl ChannelKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::Log,
        Self::Webhook,
        Self::Email,
        Self::Slack,
        Self::SlackWebhook,
        Self::Mattermost,
        Self::MattermostWebhook,
        Self::Teams,
        Self::Twilio,
        Self::SmsGateway,
    ];

    /// The name configuration uses (`kind: slack_webhook`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Slack => "slack",
            Self::SlackWebhook => "slack_webhook",
            Self::Mattermost => "mattermost",
            Self::MattermostWebhook => "mattermost_webhook",
            Self::Teams => "teams",
            Self::Twilio => "twilio",
            Self::SmsGateway => "sms_gateway",
        }
    }

    /// Whether the provider's acceptance means the message reached where it goes (a post in
    /// a chat channel, a webhook's answer): `delivered` at once. Email (an SMTP relay took
    /// it) and texts and calls (Twilio, a gateway queued them) are only `sent` until the
    /// provider reports back.
    pub fn confirms_on_accept(self) -> bool {
        !matches!(self, Self::Email | Self::Twilio | Self::SmsGateway)
    }

    pub(crate) fn names() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a channel of this kind can reach a person's contact method of `contact`'s
    /// kind: email → email; SMS → twilio, sms_gateway; voice → twilio; a Slack member id →
    /// slack (a bot's direct message); a Mattermost user id → mattermost (a bot's direct
    /// message); a Teams Workflows URL → teams; a webhook URL → webhook.
    pub fn reaches(self, contact: ContactKind) -> bool {
        matches!(
            (contact, self),
            (ContactKind::Email, Self::Email)
                | (ContactKind::Sms, Self::Twilio | Self::SmsGateway)
                | (ContactKind::Voice, Self::Twilio)
                | (ContactKind::Slack, Self::Slack)
                | (ContactKind::Mattermost, Self::Mattermost)
                | (ContactKind::Teams, Self::Teams)
                | (ContactKind::Webhook, Self::Webhook)
        )
    }

    /// The parts a channel of this kind renders, their built-in style and their limit.
    pub(crate) fn parts(self) -> &'static [PartSpec] {
        const fn p(part: Part, style: Style, limit: usize) -> PartSpec {
            PartSpec { part, style, limit }
        }
        const EMAIL: &[PartSpec] = &[
            p(Part::Subject, Style::Email, 250),
            p(Part::Text, Style::Email, 100_000),
        ];
        // Slack truncates a message's text beyond 40,000 characters.
        const SLACK: &[PartSpec] = &[p(Part::Text, Style::Slack, 40_000)];
        // Mattermost's default maximum post size.
        const MATTERMOST: &[PartSpec] = &[p(Part::Text, Style::Markdown, 16_383)];
        // A Teams message carries at most about 28 KB.
        const TEAMS: &[PartSpec] = &[
            p(Part::Subject, Style::Teams, 500),
            p(Part::Text, Style::Teams, 20_000),
        ];
        // Twilio: a message body has at most 1,600 characters, TwiML at most 4,000.
        const TWILIO: &[PartSpec] = &[
            p(Part::Text, Style::Sms, 1_600),
            p(Part::Speech, Style::Voice, 2_000),
        ];
        const SMS: &[PartSpec] = &[p(Part::Text, Style::Sms, 1_600)];
        match self {
            Self::Log | Self::Webhook => &[],
            Self::Email => EMAIL,
            Self::Slack | Self::SlackWebhook => SLACK,
            Self::Mattermost | Self::MattermostWebhook => MATTERMOST,
            Self::Teams => TEAMS,
            Self::Twilio => TWILIO,
            Self::SmsGateway => SMS,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?} (one of {})", Self::names()))
    }
}

/// A configured channel. Read from configuration (`channels:` entries), given its secrets
/// ([`Channel::with_secrets`]), checked ([`Channel::check`]); then it delivers
/// ([`Channel::deliver`]). Cheap to clone. `Debug` shows secrets' names, never values.
#[derive(Clone)]
pub struct Channel {
    /// The name runbooks and escalation policies use (`notify::send("NAME", ..)`).
    pub name: String,
    /// Incident changes it receives (opened, acknowledged, resolved, closed,
    /// severity_changed, alert_attached, escalated, category_changed, roles_changed, mitigated,
    /// reopened, merged, priority_changed, review_changed); empty
    /// means all but alert_attached and review_changed (the noisy and the after-the-fact).
    pub events: Vec<String>,
    /// Only incidents at least this severe (1 is the most severe); 0 means all.
    pub max_severity: u32,
    templates: TemplateOverrides,
    spec: Spec,
    secrets: Secrets,
    /// What is built once per channel: the SMTP transport, the Mattermost bot's user id.
    cache: Arc<Cache>,
}

#[derive(Default)]
struct Cache {
    smtp: OnceLock<email::Transport>,
    mattermost_bot: OnceLock<String>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("max_severity", &self.max_severity)
            .field("spec", &self.spec)
            .field("templates", &self.templates)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// Channels are equal when configured alike (secrets' values aside).
impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.events == other.events
            && self.max_severity == other.max_severity
            && self.templates == other.templates
            && self.spec == other.spec
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Channel::from_config(value).map_err(serde::de::Error::custom)
    }
}

impl Channel {
    /// The log channel every deployment has.
    pub fn log() -> Self {
        Self::new(
            "log",
            Vec::new(),
            0,
            TemplateOverrides::default(),
            Spec::Log,
        )
    }

    fn new(
        name: &str,
        events: Vec<String>,
        max_severity: u32,
        templates: TemplateOverrides,
        spec: Spec,
    ) -> Self {
        Self {
            name: name.to_owned(),
            events,
            max_severity,
            templates,
            spec,
            secrets: Secrets::default(),
            cache: Arc::default(),
        }
    }

    /// A channel from its configuration (a `channels:` entry as JSON), its fields read but not
    /// yet checked ([`Channel::check`]): unknown kinds and fields are refused here.
    pub fn from_config(value: Value) -> Result<Self, ChannelError> {
        let p = config::parse(value)?;
        Ok(Self::new(
            &p.name,
            p.events,
            p.max_severity,
            p.templates,
            p.spec,
        ))
    }

    /// What the channel delivers through.
    pub fn kind(&self) -> ChannelKind {
        self.spec.kind()
    }

    /// Whether it can reach a person's contact method of this kind.
    pub fn reaches(&self, contact: ContactKind) -> bool {
        self.kind().reaches(contact)
    }

    /// Whether it has somewhere to broadcast to: a channel for people only (an email channel
    /// without `to`, a Slack bot without `channel`, ...) receives no broadcasts.
    pub fn broadcasts(&self) -> bool {
        self.spec.broadcasts()
    }

    /// The names of the secrets it needs, with the field naming each.
    pub fn secret_names(&self) -> Vec<(String, String)> {
        self.spec
            .secret_refs()
            .into_iter()
            .map(|(field, r)| (field, r.name().to_owned()))
            .collect()
    }

    /// The channel with its secrets' values, read once from `lookup` (by name: a file in
    /// `secrets_dir`, or `FIREBREAK_SECRET_<NAME>`). A secret that is not set, or empty, is
    /// an error naming the channel, the field and the secret. Rotating a secret takes a
    /// restart.
    pub fn with_secrets(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ChannelError> {
        let mut secrets = Secrets::default();
        for (field, r) in self.spec.secret_refs() {
            let value = lookup(r.name()).filter(|v| !v.is_empty()).ok_or_else(|| {
                ChannelError::new(
                    &self.name,
                    &field,
                    format!(
                        "secret {:?} is not set (a file of that name in secrets_dir, or FIREBREAK_SECRET_{})",
                        r.name(),
                        r.name().to_ascii_uppercase().replace('-', "_")
                    ),
                )
            })?;
            secrets.insert(r.name(), value);
        }
        self.secrets = secrets;
        self.cache = Arc::default();
        self.check_secret_urls()?;
        Ok(self)
    }

    /// Checks the configuration's values: URLs, hosts, addresses, numbers, the events, and
    /// every template, rendered with a sample of every event kind (a template that fails or
    /// renders too much is refused here, not at send time). Errors name the channel and the
    /// field. Secrets are checked by [`Channel::with_secrets`].
    pub fn check(&self) -> Result<(), ChannelError> {
        let err = |field: &str, reason: String| ChannelError::new(&self.name, field, reason);
        if self.name.trim().is_empty() {
            return Err(err("name", "is required".into()));
        }
        if self.name.len() > 64 || self.name.chars().any(char::is_control) {
            return Err(err(
                "name",
                "has at most 64 characters, none of them control characters".into(),
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            match e.parse::<EventKind>() {
                Ok(k) if k.is_incident_change() => {}
                _ => {
                    let names: Vec<&str> = EventKind::ALL
                        .iter()
                        .filter(|k| k.is_incident_change())
                        .map(|k| k.as_str())
                        .collect();
                    return Err(err(
                        &format!("events[{i}]"),
                        format!(
                            "{e:?} is not an incident change (one of {})",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        if self.max_severity > 5 {
            return Err(err("max_severity", "must be 0 (all) to 5".into()));
        }
        let name = self.name.as_str();
        match &self.spec {
            Spec::Log => Ok(()),
            Spec::Webhook(s) => s.check(name),
            Spec::Email(s) => s.check(name),
            Spec::Slack(s) => s.check(name),
            Spec::Mattermost(s) => s.check(name),
            Spec::SlackWebhook(h) | Spec::MattermostWebhook(h) | Spec::Teams(h) => match &h.url {
                secrets::UrlOrSecret::Value(url) => config::check_url(url, config::Scheme::Secure)
                    .map(|_| ())
                    .map_err(|e| err("url", e)),
                secrets::UrlOrSecret::Secret(_) => Ok(()),
            },
            Spec::Twilio(s) => s.check(name),
            Spec::SmsGateway(s) => s.check(name, &self.templates),
        }?;
        self.check_templates()
    }

    /// A URL held by a secret is checked once its value is known, without showing it.
    fn check_secret_urls(&self) -> Result<(), ChannelError> {
        let (url, scheme) = match &self.spec {
            Spec::SlackWebhook(h) | Spec::MattermostWebhook(h) | Spec::Teams(h) => {
                (&h.url, config::Scheme::Secure)
            }
            Spec::Webhook(w) => (&w.url, config::Scheme::Any),
            _ => return Ok(()),
        };
        if let secrets::UrlOrSecret::Secret(r) = url
            && let Some(url) = self.secrets.get(r)
            && let Err(e) = config::check_url(url, scheme)
        {
            let e = self.secrets.redact(&e);
            return Err(ChannelError::new(
                &self.name,
                "url",
                format!("the URL in secret {:?} {e}", r.name()),
            ));
        }
        Ok(())
    }

    /// Every template the channel uses renders, within its limits, for samples of every
    /// event kind; overrides name only parts this kind sends.
    fn check_templates(&self) -> Result<(), ChannelError> {
        let kind = self.kind();
        let parts = kind.parts();
        for (field, part, src) in self.templates.written() {
            if parts.is_empty() {
                return Err(ChannelError::new(
                    &self.name,
                    &field,
                    format!("a {kind} channel has no templates (it sends the JSON payload)"),
                ));
            }
            if !parts.iter().any(|p| p.part == part) {
                let sends: Vec<&str> = parts.iter().map(|p| p.part.as_str()).collect();
                return Err(ChannelError::new(
                    &self.name,
                    &field,
                    format!(
                        "a {kind} channel renders no {} (it renders {})",
                        part.as_str(),
                        sends.join(", ")
                    ),
                ));
            }
            if src.len() > templates::MAX_SOURCE {
                return Err(ChannelError::new(
                    &self.name,
                    &field,
                    format!(
                        "the template has {} bytes, more than {}",
                        src.len(),
                        templates::MAX_SOURCE
                    ),
                ));
            }
        }
        for &event in EventKind::ALL {
            for &spec in parts {
                let (field, src) = self.templates.source(event, spec);
                for msg in templates::samples(event) {
                    let ctx = Value::Object(templates::context(&self.name, &msg, None));
                    let out =
                        templates::render(&field, src, &ctx, Escape::None).map_err(|e| {
                            let hint = if event == EventKind::RunbookMessage
                                && e.contains("undefined")
                            {
                                " (a runbook's message carries the incident's id only: write {{ incident.title|default(incident_id) }}, or override templates.by_event.runbook_message)"
                            } else {
                                ""
                            };
                            ChannelError::new(
                                &self.name,
                                &field,
                                format!("{e}, rendering a sample {event} event{hint}"),
                            )
                        })?;
                    let n = out.trim().chars().count();
                    if n == 0 {
                        return Err(ChannelError::new(
                            &self.name,
                            &field,
                            format!("renders nothing for a sample {event} event"),
                        ));
                    }
                    if n > spec.limit {
                        return Err(ChannelError::new(
                            &self.name,
                            &field,
                            format!(
                                "renders {n} characters for a sample {event} event, more than the {} a {kind} {} may have",
                                spec.limit,
                                spec.part.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the secrets it names were looked up.
    fn check_secrets_loaded(&self) -> Result<(), ChannelError> {
        for (field, r) in self.spec.secret_refs() {
            if !self.secrets.has(r) {
                return Err(ChannelError::new(
                    &self.name,
                    &field,
                    format!(
                        "secret {:?} was not loaded (the channel was not given its secrets)",
                        r.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn wants(&self, change: &str, severity: u32) -> bool {
        let event_ok = if self.events.is_empty() {
            !matches!(change, "alert_attached" | "review_changed")
        } else {
            self.events.iter().any(|e| e == change)
        };
        event_ok && (self.max_severity == 0 || severity <= self.max_severity) && self.broadcasts()
    }

    /// Delivers a stored delivery (a broadcast of its payload), updating or threading under
    /// the message `previous_id` names when given.
    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        d: &DeliveryRecord,
        previous_id: Option<String>,
    ) -> Result<Receipt, DeliveryError> {
        let mut msg = Message::from_payload(&d.kind, &d.payload)?;
        msg.previous_id = previous_id;
        self.deliver(http, None, &msg, &d.id).await
    }

    /// Delivers `msg`: a broadcast to the channel when `to` is `None`, else to a person's
    /// contact method (which this channel must reach). `idempotency_key` is the same on
    /// every attempt of one delivery (webhooks send it as `Idempotency-Key`, email derives
    /// its `Message-ID` from it, gateways may use it). With `msg.previous_id`, Slack and
    /// Mattermost update the message that id names.
    pub async fn deliver(
        &self,
        http: &reqwest::Client,
        to: Option<&ContactMethod>,
        msg: &Message,
        idempotency_key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let outcome = match &self.spec {
            Spec::Log => {
                self.to_nobody(to)?;
                tracing::info!(channel = %self.name, incident = %msg.incident_id, kind = %msg.event.delivery_kind(), payload = %msg.payload(), "notification");
                Ok(Receipt::default())
            }
            Spec::Webhook(s) => s.deliver(self, http, to, msg, idempotency_key).await,
            Spec::Email(s) => s.deliver(self, to, msg, idempotency_key).await,
            Spec::Slack(s) => s.deliver(self, http, to, msg).await,
            Spec::SlackWebhook(h) => {
                self.to_nobody(to)?;
                slack::deliver_webhook(self, h, http, msg).await
            }
            Spec::Mattermost(s) => s.deliver(self, http, to, msg).await,
            Spec::MattermostWebhook(h) => {
                self.to_nobody(to)?;
                mattermost::deliver_webhook(self, h, http, msg).await
            }
            Spec::Teams(h) => teams::deliver(self, h, http, to, msg).await,
            Spec::Twilio(s) => s.deliver(self, http, to, msg).await,
            Spec::SmsGateway(s) => s.deliver(self, http, to, msg, idempotency_key).await,
        };
        outcome.map_err(|e| e.redacted(&self.secrets))
    }

    /// The rendered parts of `msg` (as sent to `to`), each cut to its limit.
    pub(crate) fn render(
        &self,
        msg: &Message,
        to: Option<&ContactMethod>,
    ) -> Result<Rendered, DeliveryError> {
        let ctx = Value::Object(templates::context(&self.name, msg, to));
        let mut out = Rendered::default();
        for &spec in self.kind().parts() {
            let (field, src) = self.templates.source(msg.event, spec);
            let text = templates::render(&field, src, &ctx, Escape::None).map_err(|e| {
                DeliveryError::Template {
                    channel: self.name.clone(),
                    detail: format!("{field}: {e}"),
                }
            })?;
            let mut text = text.trim().to_owned();
            if spec.part == Part::Subject {
                text = text.replace(|c: char| c.is_control(), " ");
            }
            let text = templates::fit(&text, spec.limit);
            match spec.part {
                Part::Subject => out.subject = text,
                Part::Text => out.text = text,
                Part::Speech => out.speech = text,
            }
        }
        Ok(out)
    }

    /// The value of a secret the channel names in `field`.
    /// The Slack app's signing secret, for a Slack channel that has one.
    pub(crate) fn slack_signing_secret(&self) -> Option<&str> {
        match &self.spec {
            Spec::Slack(s) => s.signing_secret.as_ref().and_then(|r| self.secrets.get(r)),
            _ => None,
        }
    }

    /// A Twilio channel's auth token (what Twilio signs its webhooks with).
    pub(crate) fn twilio_auth_token(&self) -> Option<&str> {
        match &self.spec {
            Spec::Twilio(s) => self.secrets.get(&s.auth_token),
            _ => None,
        }
    }

    pub(crate) fn secret(
        &self,
        field: &str,
        r: &secrets::SecretRef,
    ) -> Result<&str, DeliveryError> {
        self.secrets
            .get(r)
            .ok_or_else(|| DeliveryError::MissingSecret {
                channel: self.name.clone(),
                field: field.to_owned(),
                secret: r.name().to_owned(),
            })
    }

    /// A URL written in configuration or held by a secret.
    pub(crate) fn url<'a>(
        &'a self,
        url: &'a secrets::UrlOrSecret,
    ) -> Result<&'a str, DeliveryError> {
        match url {
            secrets::UrlOrSecret::Value(u) => Ok(u),
            secrets::UrlOrSecret::Secret(r) => self.secret("url", r),
        }
    }

    /// The refusal of a contact method this channel does not reach.
    pub(crate) fn unreachable(&self, contact: &ContactMethod) -> DeliveryError {
        DeliveryError::Unreachable {
            channel: self.name.clone(),
            kind: self.kind(),
            contact: contact.kind,
        }
    }

    /// Refuses a person's contact method: this kind broadcasts only.
    fn to_nobody(&self, to: Option<&ContactMethod>) -> Result<(), DeliveryError> {
        match to {
            Some(c) => Err(self.unreachable(c)),
            None => Ok(()),
        }
    }
}

/// The parts of a rendered message (empty when the kind has no such part).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) speech: String,
}

/// The channel a person's contact method of `kind` goes through: the first configured
/// channel (in configuration order) that reaches it ([`ChannelKind::reaches`]).
pub fn channel_for(channels: &[Channel], kind: ContactKind) -> Option<&Channel> {
    channels.iter().find(|c| c.reaches(kind))
}

/// What `channel` would send for an `event` of `incident` (its fields as JSON, as
/// [`Message::incident`] takes them): the rendered parts, labelled, or for webhooks and the
/// log the JSON payload. For `firebreak template preview CHANNEL --incident ID`. Pure: nothing
/// is sent.
pub fn preview(
    channel: &Channel,
    event: EventKind,
    incident: &Map<String, Value>,
) -> Result<String, ChannelError> {
    let id = incident
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let msg = if event == EventKind::RunbookMessage {
        Message::runbook("preview", "runbook:preview", id, "(the runbook's message)")
    } else {
        Message::incident("preview", event, "user:preview", incident.clone())
    };
    if channel.kind().parts().is_empty() {
        return serde_json::to_string_pretty(&msg.payload())
            .map_err(|e| ChannelError::new(&channel.name, "", e.to_string()));
    }
    let r = channel
        .render(&msg, None)
        .map_err(|e| ChannelError::new(&channel.name, "templates", e.to_string()))?;
    Ok(match channel.kind() {
        ChannelKind::Email => format!("Subject: {}\n\n{}", r.subject, r.text),
        ChannelKind::Teams => format!("Title: {}\n\n{}", r.subject, r.text),
        ChannelKind::Twilio => format!("SMS:\n{}\n\nVoice:\n{}", r.text, r.speech),
        _ => r.text,
    })
}

/// Checks channels together (names unique) and each alone ([`Channel::check`]), and that
/// each was given the secrets it names.
pub(crate) fn validate(channels: &[Channel]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for c in channels {
        if !names.insert(c.name.as_str()) {
            return Err(format!("channel {:?} is defined twice", c.name));
        }
        c.check().map_err(|e| e.to_string())?;
        c.check_secrets_loaded().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_domain::{DeliveryState, Micros};
    use serde_json::json;

    fn record(kind: &str, payload: Value) -> DeliveryRecord {
        DeliveryRecord {
            id: "d-1".into(),
            event_id: "e-1".into(),
            channel: "log".into(),
            incident_id: "i-1".into(),
            kind: kind.into(),
            payload,
            status: DeliveryState::Pending,
            attempts: 0,
            last_error: String::new(),
            created_at: Micros::default(),
            next_attempt_at: Micros::default(),
            delivered_at: None,
            escalation_step: 0,
            provider_id: None,
            destination: String::new(),
            sent_at: None,
            acknowledged_at: None,
            acknowledged_by: String::new(),
            traceparent: String::new(),
        }
    }

    #[tokio::test]
    async fn a_stored_delivery_is_sent_as_its_message() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let log = Channel::log();
        let opened = json!({"event_id": "e-1", "kind": "incident.opened", "actor": "", "incident": {"id": "i-1"}});
        log.send(&http, &record("incident.opened", opened), None)
            .await
            .unwrap();
        let e = log
            .send(&http, &record("incident.unheard_of", json!({})), None)
            .await
            .unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "unreadable message: unknown delivery kind \"incident.unheard_of\""
        );
    }

    #[test]
    fn a_channel_for_people_only_wants_no_broadcast() {
        let parse = |v: Value| Channel::from_config(v).unwrap();
        let people = parse(json!({
            "name": "mail", "kind": "email", "host": "smtp.example.com", "from": "a@example.com",
        }));
        assert!(!people.wants("opened", 1));
        let team = parse(json!({
            "name": "mail", "kind": "email", "host": "smtp.example.com", "from": "a@example.com",
            "to": ["ops@example.com"], "events": ["resolved"], "max_severity": 2,
        }));
        assert!(team.wants("resolved", 2));
        assert!(!team.wants("resolved", 3));
        assert!(!team.wants("opened", 1));
        assert!(Channel::log().wants("opened", 5));
        assert!(!Channel::log().wants("alert_attached", 5));
        assert!(!Channel::log().wants("review_changed", 5));
    }

    #[test]
    fn channels_are_checked_together_and_must_have_their_secrets() {
        let slack = Channel::from_config(json!({
            "name": "s", "kind": "slack", "token": {"secret": "slack-bot"}, "channel": "C1",
        }))
        .unwrap();
        assert_eq!(
            validate(&[Channel::log(), slack.clone()]).unwrap_err(),
            "channel \"s\": token: secret \"slack-bot\" was not loaded (the channel was not given its secrets)"
        );
        let slack = slack.with_secrets(&|_| Some("xoxb-1".into())).unwrap();
        assert_eq!(validate(&[Channel::log(), slack.clone()]), Ok(()));
        assert_eq!(
            validate(&[slack.clone(), slack]).unwrap_err(),
            "channel \"s\" is defined twice"
        );
    }
}
