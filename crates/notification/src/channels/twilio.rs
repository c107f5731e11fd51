//! Twilio: SMS (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`,
//! `From`, `Body`) and voice calls (`.../Calls.json` with `Twiml` saying the message), with
//! HTTP basic authentication `AccountSid:AuthToken`.

use firebreak_domain::people::{ContactKind, ContactMethod};
use serde::Deserialize;
use serde_json::Value;

use super::config::{Scheme, check_e164, check_url};
use super::http::{self, Answer};
use super::secrets::SecretRef;
use super::{Channel, ChannelError, DeliveryError, Message, Receipt};

const PROVIDER: &str = "twilio";

/// How a Twilio channel's broadcasts reach `to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    #[default]
    Sms,
    Voice,
}

/// A Twilio channel's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TwilioSpec {
    /// `AC` and 32 hexadecimal digits.
    pub(crate) account_sid: String,
    /// `{secret: NAME}`.
    pub(crate) auth_token: SecretRef,
    /// The Twilio number messages and calls come from, in E.164 form.
    pub(crate) from: String,
    /// Where broadcasts go, in E.164 form; without it, the channel reaches people only.
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// Whether broadcasts text (`sms`, the default) or call (`voice`).
    #[serde(default)]
    pub(crate) broadcast_as: Mode,
    /// The REST API's base URL (tests point it at a local server).
    #[serde(default = "default_api")]
    pub(crate) api_url: String,
    /// Where Twilio reports what became of each message and call (Firebreak's status
    /// callback route), sent as `StatusCallback`; without it, texts and calls stay `sent`.
    #[serde(default)]
    pub(crate) status_callback: Option<String>,
}

/// The longest status callback URL taken (Twilio's own limit on a URL parameter is larger;
/// Firebreak's route with a signed query needs far less).
const MAX_STATUS_CALLBACK: usize = 2_048;

fn default_api() -> String {
    "https://api.twilio.com".to_owned()
}

impl TwilioSpec {
    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        let err = |field: &str, reason: String| ChannelError::new(channel, field, reason);
        let sid_ok = self.account_sid.len() == 34
            && self.account_sid.starts_with("AC")
            && self.account_sid[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !sid_ok {
            return Err(err(
                "account_sid",
                format!(
                    "{:?} is not an account SID (AC and 32 lowercase hexadecimal digits)",
                    self.account_sid
                ),
            ));
        }
        check_e164(&self.from).map_err(|e| err("from", e))?;
        if let Some(to) = &self.to {
            check_e164(to).map_err(|e| err("to", e))?;
        }
        check_url(&self.api_url, Scheme::Secure)
            .map_err(|e| err("api_url", format!("{:?} {e}", self.api_url)))?;
        if let Some(url) = &self.status_callback {
            if url.len() > MAX_STATUS_CALLBACK {
                return Err(err(
                    "status_callback",
                    format!("has {} bytes, more than {MAX_STATUS_CALLBACK}", url.len()),
                ));
            }
            check_url(url, Scheme::Secure)
                .map_err(|e| err("status_callback", format!("{url:?} {e}")))?;
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
        let (number, mode) = match to {
            None => match &self.to {
                Some(n) => (n.as_str(), self.broadcast_as),
                None => {
                    return Err(DeliveryError::NoRecipient {
                        channel: ch.name.clone(),
                        field: "to",
                    });
                }
            },
            Some(c) if c.kind == ContactKind::Sms => (c.address.as_str(), Mode::Sms),
            Some(c) if c.kind == ContactKind::Voice => (c.address.as_str(), Mode::Voice),
            Some(c) => return Err(ch.unreachable(c)),
        };
        check_e164(number).map_err(|reason| DeliveryError::Address {
            channel: ch.name.clone(),
            address: number.to_owned(),
            reason,
        })?;
        let token = ch.secret("auth_token", &self.auth_token)?;
        let r = ch.render(msg, to)?;
        let (resource, content) = match mode {
            Mode::Sms => ("Messages.json", ("Body", r.text)),
            Mode::Voice => ("Calls.json", ("Twiml", twiml(&r.speech))),
        };
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.api_url.trim_end_matches('/'),
            self.account_sid
        );
        let mut form = vec![
            ("To", number.to_owned()),
            ("From", self.from.clone()),
            (content.0, content.1),
        ];
        // Twilio then reports each message's and call's fate there (a call's `completed`,
        // `busy`, `no-answer`, `failed`, `canceled`; a message's `delivered`, `undelivered`,
        // `failed`, ...), against the SID the receipt holds.
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        let req = client
            .post(url)
            .basic_auth(&self.account_sid, Some(token))
            .form(&form);
        read(http::call(PROVIDER, req).await?)
    }
}

/// The most characters of TwiML Twilio takes in `Twiml`.
const MAX_TWIML: usize = 4_000;

/// TwiML that says `speech` (XML-escaped), twice so a sleepy listener catches it, or once
/// (and cut if need be) to stay within Twilio's 4,000 characters.
pub(crate) fn twiml(speech: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    };
    let said = escape(speech);
    let twice =
        format!("<Response><Say>{said}</Say><Pause length=\"1\"/><Say>{said}</Say></Response>");
    if twice.chars().count() <= MAX_TWIML {
        return twice;
    }
    let once = format!("<Response><Say>{said}</Say></Response>");
    if once.chars().count() <= MAX_TWIML {
        return once;
    }
    // Escaping grows a character to at most six.
    let said = escape(&super::templates::fit(speech, (MAX_TWIML - 40) / 6));
    format!("<Response><Say>{said}</Say></Response>")
}

/// Twilio's answer: `201` with the created resource's `sid`; an error's
/// `{"code":21211,"message":"...","more_info":"...","status":400}`.
pub(crate) fn read(answer: Answer) -> Result<Receipt, DeliveryError> {
    let json = answer.json();
    if !answer.status.is_success() {
        let detail = match (
            json.get("code").and_then(Value::as_u64),
            json.get("message").and_then(Value::as_str),
        ) {
            (Some(code), Some(m)) => format!("error {code}: {m}"),
            (None, Some(m)) => m.to_owned(),
            _ => answer.body.clone(),
        };
        return Err(answer.error(PROVIDER, &detail));
    }
    Ok(Receipt {
        provider_id: json.get("sid").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_stays_within_twilios_limit() {
        assert!(twiml(&"x".repeat(1_900)).contains("<Pause"));
        assert!(!twiml(&"x".repeat(2_000)).contains("<Pause"));
        assert!(twiml(&"'".repeat(2_000)).chars().count() <= MAX_TWIML);
    }

    #[test]
    fn twiml_escapes_what_it_says() {
        assert_eq!(
            twiml("a<b & 'c'"),
            "<Response><Say>a&lt;b &amp; &apos;c&apos;</Say><Pause length=\"1\"/><Say>a&lt;b &amp; &apos;c&apos;</Say></Response>"
        );
    }

    #[test]
    fn errors_carry_twilios_code() {
        let e = read(Answer {
            status: reqwest::StatusCode::BAD_REQUEST,
            retry_after: None,
            body: r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","status":400}"#.into(),
        })
        .unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(
            e.to_string(),
            "twilio answered 400 Bad Request: error 21211: The 'To' number +1555 is not a valid phone number."
        );
    }
}
