//! Microsoft Teams: a Workflows webhook ("When a Teams webhook request is received")
//! receiving a message with one Adaptive Card 1.4 attachment: the title, the text, and the
//! acknowledge/resolve links as `Action.OpenUrl` buttons.

use firebreak_domain::people::{ContactKind, ContactMethod};
use serde_json::{Value, json};

use super::config::HookSpec;
use super::http;
use super::{Channel, DeliveryError, Message, Receipt};

/// The documented message shape a Workflows webhook takes: `{"type":"message",
/// "attachments":[{"contentType":"application/vnd.microsoft.card.adaptive","content":CARD}]}`.
pub(crate) fn card(
    title: &str,
    text: &str,
    ack_url: Option<&str>,
    resolve_url: Option<&str>,
) -> Value {
    let actions: Vec<Value> = [("Acknowledge", ack_url), ("Resolve", resolve_url)]
        .into_iter()
        .filter_map(|(label, url)| {
            url.map(|u| json!({ "type": "Action.OpenUrl", "title": label, "url": u }))
        })
        .collect();
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            { "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true },
            { "type": "TextBlock", "text": text, "wrap": true },
        ],
    });
    if !actions.is_empty()
        && let Some(map) = content.as_object_mut()
    {
        map.insert("actions".into(), Value::Array(actions));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

pub(crate) async fn deliver(
    ch: &Channel,
    hook: &HookSpec,
    client: &reqwest::Client,
    to: Option<&ContactMethod>,
    msg: &Message,
) -> Result<Receipt, DeliveryError> {
    let url = match to {
        None => ch.url(&hook.url)?,
        Some(c) if c.kind == ContactKind::Teams => c.address.as_str(),
        Some(c) => return Err(ch.unreachable(c)),
    };
    let r = ch.render(msg, to)?;
    let body = card(
        &r.subject,
        &r.text,
        msg.ack_url.as_deref(),
        msg.resolve_url.as_deref(),
    );
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    http::call("teams", req)
        .await?
        .success("teams")
        .map(|_| Receipt::default())
}
