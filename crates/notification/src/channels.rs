//! Channels: where notifications go (the log, a JSON webhook), and which events each wants.

use serde::Deserialize;

use firebreak_storage::DeliveryRecord;

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The delivery names a channel the configuration no longer has: no retry can work.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The webhook could not be reached, or its answer not read.
    #[error("webhook request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The webhook answered with a status other than success.
    #[error("webhook answered {0}")]
    Status(reqwest::StatusCode),
}

impl DeliveryError {
    /// True when trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::UnknownChannel(_) => true,
            Self::Request(_) | Self::Status(_) => false,
        }
    }
}

/// A configured channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The name runbooks and people use (`notify::send("NAME", ..)`).
    pub name: String,
    /// `log` or `webhook`.
    pub kind: ChannelKind,
    /// Where a webhook POSTs.
    #[serde(default)]
    pub url: String,
    /// Incident changes it receives (opened, acknowledged, resolved, closed, severity_changed,
    /// alert_attached); empty means all but alert_attached.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only incidents at least this severe (1 is the most severe); 0 means all.
    #[serde(default)]
    pub max_severity: u32,
}

/// What a channel delivers to.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A structured log line on the server.
    Log,
    /// An HTTP POST of the JSON payload to `url`, with an `Idempotency-Key` header.
    Webhook,
}

impl Channel {
    /// The log channel every deployment has.
    pub fn log() -> Self {
        Self {
            name: "log".into(),
            kind: ChannelKind::Log,
            url: String::new(),
            events: Vec::new(),
            max_severity: 0,
        }
    }

    pub(crate) fn wants(&self, change: &str, severity: u32) -> bool {
        let event_ok = if self.events.is_empty() {
            change != "alert_attached"
        } else {
            self.events.iter().any(|e| e == change)
        };
        event_ok && (self.max_severity == 0 || severity <= self.max_severity)
    }

    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        d: &DeliveryRecord,
    ) -> Result<(), DeliveryError> {
        match &self.kind {
            ChannelKind::Log => {
                tracing::info!(channel = %self.name, incident = %d.incident_id, kind = %d.kind, payload = %d.payload, "notification");
                Ok(())
            }
            ChannelKind::Webhook => {
                let resp = http
                    .post(&self.url)
                    .header("Idempotency-Key", &d.id)
                    .json(&d.payload)
                    .send()
                    .await
                    .map_err(DeliveryError::Request)?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(DeliveryError::Status(resp.status()))
                }
            }
        }
    }
}

pub(crate) fn validate(channels: &[Channel]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for c in channels {
        if c.name.trim().is_empty() {
            return Err("a channel needs a name".into());
        }
        if !names.insert(c.name.as_str()) {
            return Err(format!("channel {:?} is defined twice", c.name));
        }
        let url = &c.url;
        if c.kind == ChannelKind::Webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "channel {:?}: url {url:?} must start with http:// or https://",
                c.name
            ));
        }
        if c.max_severity > 5 {
            return Err(format!("channel {:?}: max_severity must be 0 to 5", c.name));
        }
    }
    Ok(())
}
