//! Mattermost: the REST API v4 with a bot's token (`POST /api/v4/posts` to a channel; for a
//! person, `POST /api/v4/channels/direct` with the bot's and their user ids first; an earlier
//! post updated with `PUT /api/v4/posts/{id}/patch`), and incoming webhooks.

use firebreak_domain::people::{ContactKind, ContactMethod};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{HookSpec, Scheme, check_url};
use super::http::{self, Answer};
use super::secrets::SecretRef;
use super::{Channel, ChannelError, DeliveryError, Message, Receipt};

const PROVIDER: &str = "mattermost";

/// A Mattermost bot channel's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MattermostSpec {
    /// The server: `https://mattermost.example.com`.
    pub(crate) url: String,
    /// The bot's access token: `{secret: NAME}`.
    pub(crate) token: SecretRef,
    /// Where broadcasts go (26 characters); without it, the channel reaches people only.
    #[serde(default)]
    pub(crate) channel_id: Option<String>,
    /// The bot's own user id, for direct messages; asked of the server (`/users/me`) once
    /// when not given.
    #[serde(default)]
    pub(crate) bot_user_id: Option<String>,
}

/// Whether `id` has the shape of Mattermost's ids: 26 lowercase letters and digits.
fn is_id(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl MattermostSpec {
    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        check_url(&self.url, Scheme::Secure)
            .map_err(|e| ChannelError::new(channel, "url", format!("{:?} {e}", self.url)))?;
        for (field, id) in [
            ("channel_id", &self.channel_id),
            ("bot_user_id", &self.bot_user_id),
        ] {
            if let Some(id) = id
                && !is_id(id)
            {
                return Err(ChannelError::new(
                    channel,
                    field,
                    format!("{id:?} is not a Mattermost id (26 lowercase letters and digits)"),
                ));
            }
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
        // Decided before anything is sent: whom it goes to.
        let person = match to {
            None if self.channel_id.is_none() => {
                return Err(DeliveryError::NoRecipient {
                    channel: ch.name.clone(),
                    field: "channel_id",
                });
            }
            None => None,
            Some(c) if c.kind == ContactKind::Mattermost => {
                if !is_id(&c.address) {
                    return Err(DeliveryError::Address {
                        channel: ch.name.clone(),
                        address: c.address.clone(),
                        reason: "not a Mattermost user id".into(),
                    });
                }
                Some(c.address.as_str())
            }
            Some(c) => return Err(ch.unreachable(c)),
        };
        let token = ch.secret("token", &self.token)?;
        let text = ch.render(msg, to)?.text;
        let api = format!("{}/api/v4", self.url.trim_end_matches('/'));
        let call = |method: reqwest::Method, path: String, body: Option<Value>| {
            let mut req = client
                .request(method, format!("{api}{path}"))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            http::call(PROVIDER, req)
        };
        if let Some(post_id) = msg.previous_id.as_deref().filter(|p| is_id(p)) {
            let answer = call(
                reqwest::Method::PUT,
                format!("/posts/{post_id}/patch"),
                Some(json!({ "message": text })),
            )
            .await?;
            if answer.status != reqwest::StatusCode::NOT_FOUND {
                return id_of(answer).map(|id| Receipt {
                    provider_id: Some(id),
                });
            }
            tracing::info!(channel = %ch.name, "mattermost post gone; posting a new one");
        }
        let channel_id = match person {
            None => self.channel_id.clone().unwrap_or_default(),
            Some(user) => {
                let bot = match (&self.bot_user_id, ch.cache.mattermost_bot.get()) {
                    (Some(id), _) | (None, Some(id)) => id.clone(),
                    (None, None) => {
                        let id =
                            id_of(call(reqwest::Method::GET, "/users/me".into(), None).await?)?;
                        ch.cache.mattermost_bot.get_or_init(|| id).clone()
                    }
                };
                id_of(
                    call(
                        reqwest::Method::POST,
                        "/channels/direct".into(),
                        Some(json!([bot, user])),
                    )
                    .await?,
                )?
            }
        };
        let answer = call(
            reqwest::Method::POST,
            "/posts".into(),
            Some(json!({ "channel_id": channel_id, "message": text })),
        )
        .await?;
        id_of(answer).map(|id| Receipt {
            provider_id: Some(id),
        })
    }
}

/// The `id` of what a call created or read; an error answer's `message` as the detail
/// (`{"id":"api.context.session_expired.app_error","message":"Invalid or expired session",
/// "status_code":401}`).
pub(crate) fn id_of(answer: Answer) -> Result<String, DeliveryError> {
    let json = answer.json();
    if !answer.status.is_success() {
        let detail = json
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or(&answer.body);
        return Err(answer.error(PROVIDER, detail));
    }
    json.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DeliveryError::Refused {
            provider: PROVIDER,
            reason: format!("an answer without an id: {}", http::clip(&answer.body)),
            permanent: false,
        })
}

/// A Mattermost incoming webhook: `{"text": ...}`; Mattermost answers `ok`.
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
    http::call("mattermost webhook", req)
        .await?
        .success("mattermost webhook")
        .map(|_| Receipt::default())
}
