//! What a channel says: a [`Message`] (an incident's change or a runbook's words, with
//! optional links and the provider id of an earlier delivery to update), and what a
//! delivery returns ([`Receipt`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DeliveryError;

/// What happened, as channels tell it: an incident's change, or a runbook's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    AlertAttached,
    SeverityChanged,
    Acknowledged,
    Resolved,
    Closed,
    Escalated,
    CategoryChanged,
    RolesChanged,
    Mitigated,
    Reopened,
    Merged,
    PriorityChanged,
    /// A follow-up added or changed, or the review's summary edited.
    ReviewChanged,
    /// A status update to the incident's stakeholders (its subscribers).
    StatusUpdated,
    /// A reminder to the incident's commander that no status update came for a while.
    StatusReminder,
    /// A runbook's `notify::send(CHANNEL, text)`.
    RunbookMessage,
    /// An escalation step pages a person or a channel about an incident.
    Page,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::Opened,
        Self::AlertAttached,
        Self::SeverityChanged,
        Self::Acknowledged,
        Self::Resolved,
        Self::Closed,
        Self::Escalated,
        Self::CategoryChanged,
        Self::RolesChanged,
        Self::Mitigated,
        Self::Reopened,
        Self::Merged,
        Self::PriorityChanged,
        Self::ReviewChanged,
        Self::StatusUpdated,
        Self::StatusReminder,
        Self::RunbookMessage,
        Self::Page,
    ];

    /// The short name: a channel's `events` filter and its template overrides use it, and
    /// templates see it as `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::AlertAttached => "alert_attached",
            Self::SeverityChanged => "severity_changed",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
            Self::Escalated => "escalated",
            Self::CategoryChanged => "category_changed",
            Self::RolesChanged => "roles_changed",
            Self::Mitigated => "mitigated",
            Self::Reopened => "reopened",
            Self::Merged => "merged",
            Self::PriorityChanged => "priority_changed",
            Self::ReviewChanged => "review_changed",
            Self::StatusUpdated => "status_updated",
            Self::StatusReminder => "status_reminder",
            Self::RunbookMessage => "runbook_message",
            Self::Page => "page",
        }
    }

    /// The delivery's kind, as webhooks receive it: `incident.opened`, `runbook.message`.
    pub fn delivery_kind(self) -> String {
        match self {
            Self::RunbookMessage => "runbook.message".to_owned(),
            Self::Page => "escalation.page".to_owned(),
            other => format!("incident.{}", other.as_str()),
        }
    }

    /// The kind a delivery's kind (`incident.opened`, `runbook.message`) stands for.
    pub fn from_delivery_kind(kind: &str) -> Option<Self> {
        if kind == "runbook.message" {
            return Some(Self::RunbookMessage);
        }
        if kind == "escalation.page" {
            return Some(Self::Page);
        }
        kind.strip_prefix("incident.")
            .and_then(|k| k.parse().ok())
            .filter(|k| !matches!(k, Self::RunbookMessage | Self::Page))
    }

    /// A few words saying what happened, for templates (`headline`).
    pub fn headline(self) -> &'static str {
        match self {
            Self::Opened => "Incident opened",
            Self::AlertAttached => "Alerts attached",
            Self::SeverityChanged => "Severity changed",
            Self::Acknowledged => "Incident acknowledged",
            Self::Resolved => "Incident resolved",
            Self::Closed => "Incident closed",
            Self::Escalated => "Incident escalated",
            Self::CategoryChanged => "Category changed",
            Self::RolesChanged => "Roles changed",
            Self::Mitigated => "Incident mitigated",
            Self::Reopened => "Incident reopened",
            Self::Merged => "Incidents merged",
            Self::PriorityChanged => "Priority changed",
            Self::ReviewChanged => "Review changed",
            Self::StatusUpdated => "Status update",
            Self::StatusReminder => "No status update lately",
            Self::RunbookMessage => "Runbook message",
            Self::Page => "You are paged",
        }
    }

    /// Whether this is an incident's change (not a runbook's message).
    pub fn is_incident_change(self) -> bool {
        self != Self::RunbookMessage
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("{s:?} is not an event kind (one of {})", names.join(", "))
            })
    }
}

/// What to say. Templates render it per channel kind and event kind; webhooks receive it as
/// JSON ([`Message::payload`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The event this delivery comes from (webhooks receive it as `event_id`).
    pub event_id: String,
    pub event: EventKind,
    /// Who caused it (`user:alice`, `runbook:restart`), or empty.
    pub actor: String,
    pub incident_id: String,
    /// The incident's fields as JSON (`id`, `title`, `severity` 1-5, `priority` 1-5, `state`,
    /// `category`, `labels`, ...), as far as known: a runbook's message carries the id only.
    pub incident: Map<String, Value>,
    /// A runbook's words; empty for an incident's change.
    pub text: String,
    /// A link that acknowledges the incident, shown (or made a button) when set.
    pub ack_url: Option<String>,
    /// A link that resolves it.
    pub resolve_url: Option<String>,
    /// The provider id an earlier delivery of this incident to the same channel and person
    /// returned ([`Receipt::provider_id`]): Slack and Mattermost then update that message
    /// instead of posting another, email replies in its thread.
    pub previous_id: Option<String>,
    /// The code a text-message reply names the incident by (`4a` acknowledges it), when
    /// the person can answer by SMS.
    pub reply_code: Option<u32>,
}

impl Message {
    /// An incident's change.
    pub fn incident(
        event_id: impl Into<String>,
        event: EventKind,
        actor: impl Into<String>,
        incident: Map<String, Value>,
    ) -> Self {
        let incident_id = incident
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            event_id: event_id.into(),
            event,
            actor: actor.into(),
            incident_id,
            incident,
            text: String::new(),
            ack_url: None,
            resolve_url: None,
            previous_id: None,
            reply_code: None,
        }
    }

    /// A runbook's message about an incident.
    pub fn runbook(
        event_id: impl Into<String>,
        actor: impl Into<String>,
        incident_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let incident_id = incident_id.into();
        let mut incident = Map::new();
        incident.insert("id".into(), Value::String(incident_id.clone()));
        Self {
            event_id: event_id.into(),
            event: EventKind::RunbookMessage,
            actor: actor.into(),
            incident_id,
            incident,
            text: text.into(),
            ack_url: None,
            resolve_url: None,
            previous_id: None,
            reply_code: None,
        }
    }

    /// The message a stored delivery holds: its kind (`incident.opened`, `runbook.message`)
    /// and the payload notification planned for it.
    pub fn from_payload(kind: &str, payload: &Value) -> Result<Self, DeliveryError> {
        let event = EventKind::from_delivery_kind(kind)
            .ok_or_else(|| DeliveryError::Message(format!("unknown delivery kind {kind:?}")))?;
        let text = |key: &str| {
            payload
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut msg = if event == EventKind::RunbookMessage {
            Self::runbook(
                text("event_id"),
                text("actor"),
                text("incident_id"),
                text("message"),
            )
        } else {
            let incident = payload
                .get("incident")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| {
                    DeliveryError::Message(format!("a {kind} payload without its incident"))
                })?;
            let mut msg = Self::incident(text("event_id"), event, text("actor"), incident);
            // A status update's words are what templates show as `message`:
            // `monitoring: the fix is out`.
            if event == EventKind::StatusUpdated
                && let Some(u) = msg.incident.get("last_status_update")
            {
                let field = |k: &str| u.get(k).and_then(Value::as_str).unwrap_or_default();
                msg.text = format!("{}: {}", field("status"), field("message"));
            }
            // A reminder says what to do.
            if event == EventKind::StatusReminder {
                msg.text = text("message");
            }
            msg
        };
        msg.ack_url = payload
            .get("ack_url")
            .and_then(Value::as_str)
            .map(str::to_owned);
        msg.resolve_url = payload
            .get("resolve_url")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(msg)
    }

    /// The JSON webhooks receive: `{event_id, kind, actor, incident}` for an incident's
    /// change, `{event_id, kind, actor, incident_id, message}` for a runbook's message, with
    /// `ack_url` and `resolve_url` when set. The same shape notification has always sent.
    pub fn payload(&self) -> Value {
        let mut out = if self.event == EventKind::RunbookMessage {
            json!({
                "event_id": self.event_id, "kind": self.event.delivery_kind(), "actor": self.actor,
                "incident_id": self.incident_id, "message": self.text,
            })
        } else {
            json!({
                "event_id": self.event_id, "kind": self.event.delivery_kind(), "actor": self.actor,
                "incident": self.incident,
            })
        };
        for (key, url) in [
            ("ack_url", &self.ack_url),
            ("resolve_url", &self.resolve_url),
        ] {
            if let (Some(url), Some(map)) = (url, out.as_object_mut()) {
                map.insert(key.into(), Value::String(url.clone()));
            }
        }
        out
    }
}

/// What a delivery returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of what was sent, to store and pass back as
    /// [`Message::previous_id`] for the incident's next change: Slack `CHANNEL:TS` (the
    /// message's channel and `ts`), a Mattermost post id, a Twilio message or call SID, an
    /// email's `Message-ID`. `None` where the provider gives none (webhooks, Teams).
    pub provider_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_incident_change_the_wire_names_is_an_event_kind() {
        for change in firebreak_proto::v1::IncidentChange::ALL {
            let kind = EventKind::from_delivery_kind(&format!("incident.{}", change.name()));
            assert_eq!(kind.map(|k| k.as_str()), Some(change.name()));
        }
        assert_eq!(
            EventKind::from_delivery_kind("runbook.message"),
            Some(EventKind::RunbookMessage)
        );
        assert_eq!(
            EventKind::from_delivery_kind("incident.runbook_message"),
            None
        );
        assert_eq!(EventKind::from_delivery_kind("incident.bogus"), None);
    }

    #[test]
    fn a_payload_reads_back_as_the_message_it_came_from() {
        let payload = json!({
            "event_id": "e1", "kind": "incident.opened", "actor": "user:a",
            "incident": { "id": "inc-1", "title": "db down", "severity": 2 },
        });
        let msg = Message::from_payload("incident.opened", &payload).unwrap();
        assert_eq!(msg.incident_id, "inc-1");
        assert_eq!(msg.payload(), payload);
        let payload = json!({
            "event_id": "e2", "kind": "runbook.message", "actor": "runbook:r",
            "incident_id": "inc-1", "message": "restarted",
        });
        let msg = Message::from_payload("runbook.message", &payload).unwrap();
        assert_eq!(msg.text, "restarted");
        assert_eq!(msg.payload(), payload);
        assert!(
            Message::from_payload("incident.opened", &json!({}))
                .unwrap_err()
                .is_permanent()
        );
    }
}
