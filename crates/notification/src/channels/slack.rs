//! Slack: the Web API with a bot token (`chat.postMessage` to a channel or, for a person, to
//! their member id — a direct message from the bot; `chat.update` of the message an earlier
//! delivery posted), and incoming webhooks.

use firebreak_domain::people::{ContactKind, ContactMethod};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{HookSpec, Scheme, check_url};
use super::http::{self, Answer};
use super::secrets::SecretRef;
use super::{Channel, ChannelError, DeliveryError, Message, Receipt};

const PROVIDER: &str = "slack";

/// A Slack bot channel's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlackSpec {
    /// The bot token (`xoxb-...`): `{secret: NAME}`. Needs the `chat:write` scope.
    pub(crate) token: SecretRef,
    /// Where broadcasts go: a channel id (`C024BE91L`) or name (updates use the id Slack
    /// answers with); without it, the channel reaches people only.
    #[serde(default)]
    pub(crate) channel: Option<String>,
    /// The Web API's base URL (tests point it at a local server).
    #[serde(default = "default_api")]
    pub(crate) api_url: String,
    /// The Slack app's signing secret: `{secret: NAME}`. With it, messages about an open
    /// incident carry Acknowledge and Resolve buttons, and Firebreak takes the app's
    /// interactive callbacks at `/v1/slack/interactions` (signature checked with it).
    #[serde(default)]
    pub(crate) signing_secret: Option<SecretRef>,
}

/// The `action_id`s of the buttons, as Slack sends them back.
pub(crate) const ACK_ACTION: &str = "firebreak.acknowledge";
pub(crate) const RESOLVE_ACTION: &str = "firebreak.resolve";

/// The most characters of a section block's text (Slack's limit is 3,000).
const MAX_SECTION: usize = 2_900;

/// Blocks showing `text` with the buttons that still make sense in the incident's state
/// (none once it is resolved or closed); `None` when no button does.
fn blocks(text: &str, msg: &Message) -> Option<Value> {
    let state = msg.incident.get("state").and_then(Value::as_str);
    let buttons: Vec<Value> = [
        (
            ACK_ACTION,
            "Acknowledge",
            matches!(state, None | Some("open")),
        ),
        (
            RESOLVE_ACTION,
            "Resolve",
            matches!(state, None | Some("open" | "acknowledged")),
        ),
    ]
    .into_iter()
    .filter(|(_, _, shown)| *shown)
    .map(|(id, label, _)| {
        json!({
            "type": "button", "action_id": id, "value": msg.incident_id,
            "text": { "type": "plain_text", "text": label },
        })
    })
    .collect();
    if buttons.is_empty() || msg.incident_id.is_empty() {
        return None;
    }
    Some(json!([
        { "type": "section", "text": { "type": "mrkdwn", "text": crate::clip(text, MAX_SECTION) } },
        { "type": "actions", "block_id": "firebreak", "elements": buttons },
    ]))
}

fn default_api() -> String {
    "https://slack.com/api".to_owned()
}

/// Slack's errors that another attempt may get past; any other `error` is permanent.
const TRANSIENT: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
    "rate_limited",
];

/// Errors of `chat.update` after which a new message is posted instead.
const GONE: &[&str] = &[
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
];

impl SlackSpec {
    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        check_url(&self.api_url, Scheme::Secure).map_err(|e| {
            ChannelError::new(channel, "api_url", format!("{:?} {e}", self.api_url))
        })?;
        if let Some(c) = &self.channel
            && (c.trim().is_empty() || c.len() > 80 || c.contains(char::is_whitespace))
        {
            return Err(ChannelError::new(
                channel,
                "channel",
                format!("{c:?} is not a Slack channel id or name"),
            ));
        }
        Ok(())
    }

    pub(crate) async fn deliver(
        &self,
        ch: &Channel,
        client: &reqwest::Client,
        to: Option<&ContactMethod>,
        msg: &Message,
    ) -> Result<Receipt, DeliveryError> {
        let target = match to {
            None => self.channel.as_deref().ok_or(DeliveryError::NoRecipient {
                channel: ch.name.clone(),
                field: "channel",
            })?,
            Some(c) if c.kind == ContactKind::Slack => c.address.as_str(),
            Some(c) => return Err(ch.unreachable(c)),
        };
        let token = ch.secret("token", &self.token)?;
        let text = ch.render(msg, to)?.text;
        let blocks = self
            .signing_secret
            .as_ref()
            .and_then(|_| blocks(&text, msg));
        let api = self.api_url.trim_end_matches('/');
        if let Some((channel, ts)) = msg
            .previous_id
            .as_deref()
            .and_then(|p| message_ref(p, target))
        {
            // Without blocks, an update removes the buttons the message had.
            let body = json!({
                "channel": channel, "ts": ts, "text": text,
                "blocks": blocks.clone().unwrap_or_else(|| json!([])),
            });
            match post(client, &format!("{api}/chat.update"), token, &body).await {
                Err(DeliveryError::Refused { reason, .. }) if GONE.contains(&reason.as_str()) => {
                    tracing::info!(channel = %ch.name, reason, "slack message not updatable; posting a new one");
                }
                other => return other,
            }
        }
        let mut body = json!({
            "channel": target, "text": text, "unfurl_links": false, "unfurl_media": false,
        });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks;
        }
        post(client, &format!("{api}/chat.postMessage"), token, &body).await
    }
}

/// The channel and `ts` an earlier delivery's provider id names (`CHANNEL:TS`, or a bare
/// `TS` in `target`), if it has the shape of one: anything else is not updated but posted
/// anew.
fn message_ref<'a>(previous: &'a str, target: &'a str) -> Option<(&'a str, &'a str)> {
    let (channel, ts) = previous.split_once(':').unwrap_or((target, previous));
    let is_ts = ts.split_once('.').is_some_and(|(s, f)| {
        !s.is_empty() && !f.is_empty() && (s.bytes().chain(f.bytes())).all(|b| b.is_ascii_digit())
    });
    let is_channel = !channel.is_empty()
        && channel.len() <= 80
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'#'));
    (is_ts && is_channel).then_some((channel, ts))
}

/// Calls a Web API method with a JSON body; the receipt names the message (`CHANNEL:TS`).
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<Receipt, DeliveryError> {
    let req = client
        .post(url)
        .bearer_auth(token)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_string());
    read(http::call(PROVIDER, req).await?)
}

/// A Web API answer: `{"ok":true,"channel":"C..","ts":".."}`, or `{"ok":false,"error":".."}`.
pub(crate) fn read(answer: Answer) -> Result<Receipt, DeliveryError> {
    let answer = answer.success(PROVIDER)?;
    let json = answer.json();
    match json.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            let channel = json.get("channel").and_then(Value::as_str);
            let ts = json.get("ts").and_then(Value::as_str);
            Ok(Receipt {
                provider_id: match (channel, ts) {
                    (Some(c), Some(ts)) => Some(format!("{c}:{ts}")),
                    (None, Some(ts)) => Some(ts.to_owned()),
                    _ => None,
                },
            })
        }
        Some(false) => {
            let error = json
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error")
                .to_owned();
            if error == "ratelimited" || error == "rate_limited" {
                return Err(DeliveryError::RateLimited {
                    provider: PROVIDER,
                    retry_after: answer.retry_after,
                });
            }
            Err(DeliveryError::Refused {
                provider: PROVIDER,
                permanent: !TRANSIENT.contains(&error.as_str()),
                reason: http::clip(&error),
            })
        }
        None => Err(DeliveryError::Refused {
            provider: PROVIDER,
            reason: format!("an answer without \"ok\": {}", http::clip(&answer.body)),
            permanent: false,
        }),
    }
}

/// A Slack incoming webhook: `{"text": ...}`; Slack answers `ok`, or an error status with
/// its reason as text (`invalid_payload`, `channel_not_found`, ...).
pub(crate) async fn deliver_webhook(
    ch: &Channel,
    hook: &HookSpec,
    client: &reqwest::Client,
    msg: &Message,
) -> Result<Receipt, DeliveryError> {
    let url = ch.url(&hook.url)?;
    let text = ch.render(msg, None)?.text;
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({ "text": text }).to_string());
    http::call("slack webhook", req)
        .await?
        .success("slack webhook")
        .map(|_| Receipt::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            body: body.into(),
        }
    }

    #[test]
    fn only_an_id_of_a_slack_message_is_updated() {
        assert_eq!(
            message_ref("C1:1503435956.000247", "C9"),
            Some(("C1", "1503435956.000247"))
        );
        assert_eq!(
            message_ref("1503435956.000247", "C9"),
            Some(("C9", "1503435956.000247"))
        );
        assert_eq!(message_ref("<d-1@example.com>", "C9"), None);
        assert_eq!(message_ref("SM0123", "C9"), None);
    }

    #[test]
    fn web_api_answers_are_read() {
        let ok = read(answer(
            200,
            r#"{"ok":true,"channel":"C1","ts":"1503435956.000247"}"#,
        ));
        assert_eq!(
            ok.unwrap().provider_id.as_deref(),
            Some("C1:1503435956.000247")
        );
        let e = read(answer(200, r#"{"ok":false,"error":"channel_not_found"}"#)).unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "slack refused the message: channel_not_found"
        );
        let e = read(answer(200, r#"{"ok":false,"error":"internal_error"}"#)).unwrap_err();
        assert!(!e.is_permanent());
        let e = read(answer(200, r#"{"ok":false,"error":"ratelimited"}"#)).unwrap_err();
        assert!(matches!(e, DeliveryError::RateLimited { .. }));
        assert!(!read(answer(200, "<html>")).unwrap_err().is_permanent());
        assert!(!read(answer(502, "bad gateway")).unwrap_err().is_permanent());
    }
}
