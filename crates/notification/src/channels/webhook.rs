//! Webhooks: the message's JSON payload POSTed to a URL with an `Idempotency-Key`, and with
//! a signing secret an HMAC-SHA256 signature over `timestamp + "." + body` (the scheme
//! Firebreak's own intake verifies: `X-Firebreak-Signature: t=<unix seconds>,v1=<hex>`).

use std::time::{SystemTime, UNIX_EPOCH};

use firebreak_domain::people::{ContactKind, ContactMethod};
use ring::hmac;
use serde::Deserialize;

use super::config::{Scheme, check_url};
use super::secrets::{SecretRef, UrlOrSecret};
use super::{Channel, ChannelError, DeliveryError, Message, Receipt, http};

/// The header carrying the signature's time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Firebreak-Timestamp";
/// The header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Firebreak-Signature";

/// A webhook channel's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSpec {
    /// Where it POSTs: `http://` or `https://`, or `{secret: NAME}` holding it (a URL with a
    /// token in it).
    #[serde(default = "no_url")]
    pub(crate) url: UrlOrSecret,
    /// Signs every request with this secret: `{secret: NAME}`.
    #[serde(default)]
    pub(crate) signing_secret: Option<SecretRef>,
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<lowercase hex of HMAC-SHA256(secret, "<timestamp>." + body)>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn no_url() -> UrlOrSecret {
    UrlOrSecret::Value(String::new())
}

impl WebhookSpec {
    /// A URL written in the configuration is checked here; one held by a secret once its
    /// value is known ([`super::Channel::with_secrets`]).
    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        match &self.url {
            UrlOrSecret::Value(url) => check_url(url, Scheme::Any)
                .map(|_| ())
                .map_err(|e| ChannelError::new(channel, "url", format!("{url:?} {e}"))),
            UrlOrSecret::Secret(_) => Ok(()),
        }
    }

    pub(crate) async fn deliver(
        &self,
        ch: &Channel,
        client: &reqwest::Client,
        to: Option<&ContactMethod>,
        msg: &Message,
        key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let url = match to {
            None => ch.url(&self.url)?,
            Some(c) if c.kind == ContactKind::Webhook => c.address.as_str(),
            Some(c) => return Err(ch.unreachable(c)),
        };
        let body = serde_json::to_vec(&msg.payload())
            .map_err(|e| DeliveryError::Message(e.to_string()))?;
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key);
        if let Some(secret) = &self.signing_secret {
            let value = ch.secret("signing_secret", secret)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            req = req
                .header(TIMESTAMP_HEADER, now.to_string())
                .header(SIGNATURE_HEADER, signature(value.as_bytes(), now, &body));
        }
        http::call("webhook", req.body(body))
            .await?
            .success("webhook")
            .map(|_| Receipt::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is HMAC-SHA256 of exactly "<t>." and the body, in lowercase hex.
    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_and_the_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let sig = signature(b"Jefe", 1_700_000_000, b"{}");
        let hex = sig.strip_prefix("t=1700000000,v1=").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert!(hmac::verify(&key, b"1700000000.{}", &bytes).is_ok());
        assert!(hmac::verify(&key, b"1700000001.{}", &bytes).is_err());
        // docs/channels.md's example, computed with openssl.
        assert_eq!(
            signature(
                b"whsec-example",
                1_733_150_000,
                br#"{"kind":"incident.opened"}"#
            ),
            "t=1733150000,v1=d859143d7672e7f72b9da0a8449fbea4d79392a026ecb09726448a710168810e"
        );
    }
}
