//! A channel's configuration: read from YAML (`kind` picks the provider, each with its own
//! fields, unknown ones refused), then checked at load — URLs, hosts, numbers, templates
//! rendered with samples of every event — with errors naming the channel and the field.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::email::EmailSpec;
use super::gateway::GatewaySpec;
use super::mattermost::MattermostSpec;
use super::secrets::{SecretRef, UrlOrSecret};
use super::slack::SlackSpec;
use super::twilio::TwilioSpec;
use super::webhook::WebhookSpec;
use super::{ChannelError, ChannelKind};

/// What each kind of channel is configured with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Spec {
    Log,
    Webhook(WebhookSpec),
    Email(EmailSpec),
    Slack(SlackSpec),
    SlackWebhook(HookSpec),
    Mattermost(MattermostSpec),
    MattermostWebhook(HookSpec),
    Teams(HookSpec),
    Twilio(TwilioSpec),
    SmsGateway(GatewaySpec),
}

/// A log channel has nothing to configure.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {}

/// An incoming webhook of Slack, Mattermost or a Teams Workflow: its URL, which holds the
/// token that lets anyone post, so it may (and should) be a secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSpec {
    /// `https://hooks.slack.com/services/...`, or `{secret: NAME}` holding it.
    pub(crate) url: UrlOrSecret,
}

impl Spec {
    pub(crate) fn kind(&self) -> ChannelKind {
        match self {
            Self::Log => ChannelKind::Log,
            Self::Webhook(_) => ChannelKind::Webhook,
            Self::Email(_) => ChannelKind::Email,
            Self::Slack(_) => ChannelKind::Slack,
            Self::SlackWebhook(_) => ChannelKind::SlackWebhook,
            Self::Mattermost(_) => ChannelKind::Mattermost,
            Self::MattermostWebhook(_) => ChannelKind::MattermostWebhook,
            Self::Teams(_) => ChannelKind::Teams,
            Self::Twilio(_) => ChannelKind::Twilio,
            Self::SmsGateway(_) => ChannelKind::SmsGateway,
        }
    }

    /// Every secret the channel names, with the field naming it.
    pub(crate) fn secret_refs(&self) -> Vec<(String, &SecretRef)> {
        fn one<'a>(field: &str, r: &'a SecretRef) -> Vec<(String, &'a SecretRef)> {
            vec![(field.to_owned(), r)]
        }
        match self {
            Self::Log => Vec::new(),
            Self::Webhook(s) => match &s.url {
                UrlOrSecret::Secret(r) => one("url", r),
                UrlOrSecret::Value(_) => Vec::new(),
            }
            .into_iter()
            .chain(
                s.signing_secret
                    .iter()
                    .map(|r| ("signing_secret".to_owned(), r)),
            )
            .collect(),
            Self::Email(s) => s
                .password
                .iter()
                .map(|r| ("password".to_owned(), r))
                .collect(),
            Self::Slack(s) => std::iter::once(("token".to_owned(), &s.token))
                .chain(
                    s.signing_secret
                        .iter()
                        .map(|r| ("signing_secret".to_owned(), r)),
                )
                .collect(),
            Self::Mattermost(s) => one("token", &s.token),
            Self::SlackWebhook(h) | Self::MattermostWebhook(h) | Self::Teams(h) => match &h.url {
                UrlOrSecret::Secret(r) => one("url", r),
                UrlOrSecret::Value(_) => Vec::new(),
            },
            Self::Twilio(s) => one("auth_token", &s.auth_token),
            Self::SmsGateway(s) => s
                .secrets
                .iter()
                .map(|(alias, r)| (format!("secrets.{alias}"), r))
                .collect(),
        }
    }

    /// Whether the channel has somewhere to broadcast to (a channel for people only, such as
    /// an email channel without `to`, receives no broadcasts).
    pub(crate) fn broadcasts(&self) -> bool {
        match self {
            Self::Log
            | Self::Webhook(_)
            | Self::SlackWebhook(_)
            | Self::MattermostWebhook(_)
            | Self::Teams(_) => true,
            Self::Email(s) => !s.to.is_empty(),
            Self::Slack(s) => s.channel.is_some(),
            Self::Mattermost(s) => s.channel_id.is_some(),
            Self::Twilio(s) => s.to.is_some(),
            Self::SmsGateway(s) => s.to.is_some(),
        }
    }
}

/// What a channel's YAML holds, read: the common fields and the kind's own.
pub(crate) struct Parsed {
    pub(crate) name: String,
    pub(crate) events: Vec<String>,
    pub(crate) max_severity: u32,
    pub(crate) templates: super::templates::TemplateOverrides,
    pub(crate) spec: Spec,
}

/// Reads a channel from its configuration: `name`, `kind`, the common `events`,
/// `max_severity` and `templates`, and the kind's own fields (unknown ones refused).
pub(crate) fn parse(value: Value) -> Result<Parsed, ChannelError> {
    let Value::Object(mut map) = value else {
        return Err(ChannelError::new(
            "",
            "",
            "a channel is a map with name, kind and the kind's fields",
        ));
    };
    let name = match map.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ChannelError::new("", "name", "must be a string")),
        None => return Err(ChannelError::new("", "name", "is required")),
    };
    let kind = match map.remove("kind") {
        Some(Value::String(s)) => s
            .parse::<ChannelKind>()
            .map_err(|e| ChannelError::new(&name, "kind", e))?,
        Some(_) => return Err(ChannelError::new(&name, "kind", "must be a string")),
        None => {
            return Err(ChannelError::new(
                &name,
                "kind",
                format!("is required (one of {})", ChannelKind::names()),
            ));
        }
    };
    let events: Vec<String> = take(&name, &mut map, "events")?.unwrap_or_default();
    let max_severity: u32 = take(&name, &mut map, "max_severity")?.unwrap_or(0);
    let templates = take(&name, &mut map, "templates")?.unwrap_or_default();
    let rest = Value::Object(map);
    let spec = match kind {
        ChannelKind::Log => typed::<LogSpec>(&name, rest).map(|_| Spec::Log)?,
        ChannelKind::Webhook => Spec::Webhook(typed(&name, rest)?),
        ChannelKind::Email => Spec::Email(typed(&name, rest)?),
        ChannelKind::Slack => Spec::Slack(typed(&name, rest)?),
        ChannelKind::SlackWebhook => Spec::SlackWebhook(typed(&name, rest)?),
        ChannelKind::Mattermost => Spec::Mattermost(typed(&name, rest)?),
        ChannelKind::MattermostWebhook => Spec::MattermostWebhook(typed(&name, rest)?),
        ChannelKind::Teams => Spec::Teams(typed(&name, rest)?),
        ChannelKind::Twilio => Spec::Twilio(typed(&name, rest)?),
        ChannelKind::SmsGateway => Spec::SmsGateway(typed(&name, rest)?),
    };
    Ok(Parsed {
        name,
        events,
        max_severity,
        templates,
        spec,
    })
}

/// Takes `field` out of `map`, read as `T`.
fn take<T: DeserializeOwned>(
    channel: &str,
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<T>, ChannelError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(channel, field, v).map(Some),
    }
}

/// `value` read as `T`, a failure naming the field it came from.
fn read<T: DeserializeOwned>(channel: &str, field: &str, value: Value) -> Result<T, ChannelError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = match (field, path.as_str()) {
            ("", ".") => String::new(),
            (f, ".") => f.to_owned(),
            ("", p) => p.to_owned(),
            (f, p) => format!("{f}.{p}"),
        };
        ChannelError::new(channel, &at, e.into_inner().to_string())
    })
}

/// The kind's own fields, read.
fn typed<T: DeserializeOwned>(channel: &str, rest: Value) -> Result<T, ChannelError> {
    read(channel, "", rest)
}

/// Which URLs a field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http://` or `https://`.
    Any,
    /// `https://`, or `http://` to a loopback address (tests): a token travels with it.
    Secure,
}

/// Why `url` is not a URL requests can go to under `scheme`.
pub(crate) fn check_url(url: &str, scheme: Scheme) -> Result<reqwest::Url, String> {
    if url.trim().is_empty() {
        return Err("is required".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must start with http:// or https://".into());
    }
    let host = parsed.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err("names no host".into());
    }
    if scheme == Scheme::Secure && parsed.scheme() == "http" && !is_loopback(host) {
        return Err("must start with https:// (plain http only to a loopback address)".into());
    }
    Ok(parsed)
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why `number` is not a phone number in E.164 form (`+4915112345678`).
pub(crate) fn check_e164(number: &str) -> Result<(), String> {
    let digits = number.strip_prefix('+').unwrap_or("");
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(())
        .ok_or_else(|| format!("{number:?} is not a phone number in E.164 form (+4915112345678)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_numbers_are_checked() {
        assert!(check_url("https://hooks.example.com/x", Scheme::Secure).is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", Scheme::Secure).is_ok());
        assert!(check_url("http://[::1]:8080/x", Scheme::Secure).is_ok());
        assert!(check_url("http://localhost/x", Scheme::Secure).is_ok());
        assert!(check_url("http://hooks.example.com/x", Scheme::Any).is_ok());
        for (url, want) in [
            ("http://hooks.example.com/x", "must start with https://"),
            ("ftp://x/y", "must start with http:// or https://"),
            ("not a url", "is not a URL"),
            ("", "is required"),
        ] {
            let e = check_url(url, Scheme::Secure).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        assert!(check_e164("+15551234567").is_ok());
        for bad in ["15551234567", "+0555123", "+1 555 123", "+123"] {
            assert!(check_e164(bad).is_err(), "{bad}");
        }
    }
}
