//! What goes wrong with channels: a configuration refused at load ([`ChannelError`], naming the
//! channel and the field) and a delivery that failed ([`DeliveryError`], saying whether trying
//! again can help).

use std::fmt;
use std::time::Duration;

use firebreak_domain::people::ContactKind;

use super::ChannelKind;
use super::secrets::Secrets;

/// A channel's configuration refused: which channel, which field, and why. Never holds a
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ChannelError {
    /// The channel's name (empty when the configuration has none).
    pub channel: String,
    /// The field at fault, as written in the configuration (`url`, `templates.opened.text`,
    /// `to[1]`); empty when the fault is the channel as a whole.
    pub field: String,
    /// Why, in lowercase words.
    pub reason: String,
}

impl ChannelError {
    pub(crate) fn new(channel: &str, field: &str, reason: impl Into<String>) -> Self {
        Self {
            channel: channel.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {:?}", self.channel)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why a delivery attempt failed. [`DeliveryError::is_permanent`] says whether another attempt
/// can help; [`DeliveryError::retry_after`] how long the provider asked to wait. The text never
/// holds a secret's value (providers' answers are redacted) nor a URL a secret hides in.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The delivery names a channel the configuration no longer has: no retry can work.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The provider could not be reached, or its answer not read (no URL in the text: a
    /// webhook URL may hold a token).
    #[error("{provider} request failed: {detail}")]
    Request {
        provider: &'static str,
        detail: String,
        /// The request could not even be built (an invalid URL): trying again cannot help.
        permanent: bool,
    },
    /// A webhook answered with a status other than success (and other than 429).
    #[error("webhook answered {0}")]
    Status(reqwest::StatusCode),
    /// A provider answered with an error status; `detail` is what its answer says.
    #[error("{provider} answered {status}: {detail}")]
    Answered {
        provider: &'static str,
        status: reqwest::StatusCode,
        detail: String,
        /// A 503's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The provider asked to slow down (HTTP 429, Slack's `ratelimited`).
    #[error("{provider} rate limited the request{}", match retry_after {
        Some(d) => format!(" (retry after {} s)", d.as_secs()),
        None => String::new(),
    })]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    /// The provider answered success at the HTTP level but refused the message (Slack's
    /// `{"ok":false,"error":"channel_not_found"}`).
    #[error("{provider} refused the message: {reason}")]
    Refused {
        provider: &'static str,
        reason: String,
        permanent: bool,
    },
    /// The SMTP server refused the message or could not be reached; a 5xx reply is
    /// permanent, a 4xx reply or a connection failure is not.
    #[error("smtp: {detail}")]
    Smtp { detail: String, permanent: bool },
    /// A person's contact method of this kind cannot be reached through this channel.
    #[error("channel {channel:?} ({kind}) cannot reach a {contact} contact method")]
    Unreachable {
        channel: String,
        kind: ChannelKind,
        contact: ContactKind,
    },
    /// A broadcast to a channel configured for people only (no `to`, `channel`, ...).
    #[error("channel {channel:?} has no {field} to broadcast to; it reaches people only")]
    NoRecipient {
        channel: String,
        field: &'static str,
    },
    /// A contact method's address the provider cannot use.
    #[error("channel {channel:?}: contact address {address:?}: {reason}")]
    Address {
        channel: String,
        address: String,
        reason: String,
    },
    /// A template failed to render this message (checked with samples at load, so this is
    /// data the samples did not foresee).
    #[error("channel {channel:?}: {detail}")]
    Template { channel: String, detail: String },
    /// A secret the channel needs was not looked up ([`super::Channel::with_secrets`]).
    #[error(
        "channel {channel:?}: {field}: secret {secret:?} was not loaded (the channel was not given its secrets)"
    )]
    MissingSecret {
        channel: String,
        field: String,
        secret: String,
    },
    /// The delivery's stored payload is not a message this version can read.
    #[error("unreadable message: {0}")]
    Message(String),
    /// Notification's own store failed while preparing the message (tried again).
    #[error("notification's store: {0}")]
    Store(String),
}

impl DeliveryError {
    /// True when trying again cannot help: a refusal by configuration, address, template,
    /// or a provider's 4xx answer other than 408 and 429.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::UnknownChannel(_)
            | Self::Unreachable { .. }
            | Self::NoRecipient { .. }
            | Self::Address { .. }
            | Self::Template { .. }
            | Self::MissingSecret { .. }
            | Self::Message(_) => true,
            Self::Request { permanent, .. }
            | Self::Refused { permanent, .. }
            | Self::Smtp { permanent, .. } => *permanent,
            Self::Status(status) | Self::Answered { status, .. } => permanent_status(*status),
            Self::RateLimited { .. } | Self::Store(_) => false,
        }
    }

    /// How long the provider asked to wait before the next attempt (`Retry-After`), if it
    /// said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Answered { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The error with every value of `secrets` cut out of the provider's words.
    pub(crate) fn redacted(self, secrets: &Secrets) -> Self {
        let r = |s: String| secrets.redact(&s);
        match self {
            Self::Request {
                provider,
                detail,
                permanent,
            } => Self::Request {
                provider,
                detail: r(detail),
                permanent,
            },
            Self::Answered {
                provider,
                status,
                detail,
                retry_after,
            } => Self::Answered {
                provider,
                status,
                detail: r(detail),
                retry_after,
            },
            Self::Refused {
                provider,
                reason,
                permanent,
            } => Self::Refused {
                provider,
                reason: r(reason),
                permanent,
            },
            Self::Smtp { detail, permanent } => Self::Smtp {
                detail: r(detail),
                permanent,
            },
            Self::Template { channel, detail } => Self::Template {
                channel,
                detail: r(detail),
            },
            other => other,
        }
    }
}

/// Whether an HTTP status means the same request can never succeed: any status but success,
/// 5xx, 408 (request timeout) and 429 (too many requests).
pub(crate) fn permanent_status(status: reqwest::StatusCode) -> bool {
    !(status.is_success()
        || status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS)
}
