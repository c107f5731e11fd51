//! Answers to pages from where people are, checked before anything acts on them: signed,
//! expiring acknowledge/resolve links (Firebreak's own tokens), Slack's request signature on
//! its interactive callbacks, Twilio's on its webhooks, and the reply codes of text messages
//! (`4a` acknowledges the incident code 4 names, `4r` resolves it). Pure functions; the
//! HTTP side is `inbound`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What an answer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Acknowledge,
    Resolve,
}

impl Answer {
    /// The name stored and shown: `acknowledge`, `resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }

    /// From a link's or a button's word: `ack`/`acknowledge`, `resolve`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ack" | "acknowledge" => Some(Self::Acknowledge),
            "resolve" => Some(Self::Resolve),
            _ => None,
        }
    }
}

/// What a link's token says: who was paged for which incident, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    #[serde(rename = "i")]
    pub incident_id: String,
    #[serde(rename = "u")]
    pub user: String,
    /// Unix seconds after which the link no longer acts.
    #[serde(rename = "e")]
    pub expires: i64,
}

/// Why a link, a callback or a reply is refused. The text is safe to show the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this link is not one Firebreak made")]
    Malformed,
    #[error("this link's signature does not match")]
    BadSignature,
    #[error("this link has expired; use the CLI or a newer page")]
    Expired,
    #[error("the request's signature is missing or does not match")]
    Unsigned,
    #[error("the request's timestamp is missing or more than five minutes off")]
    Stale,
}

/// The longest token a link holds; anything longer is refused unread.
pub const MAX_TOKEN: usize = 1024;

/// Signs and checks link tokens with one key: `BASE64URL(claims JSON).BASE64URL(HMAC-SHA256)`.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The token for `claims`.
    pub fn token(&self, claims: &LinkClaims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of `token` if this key signed it and it has not expired at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<LinkClaims, Refused> {
        if token.len() > MAX_TOKEN {
            return Err(Refused::Malformed);
        }
        let (body, tag) = token.split_once('.').ok_or(Refused::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refused::Malformed)?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| Refused::BadSignature)?;
        let claims: LinkClaims = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refused::Malformed)?;
        if now_secs > claims.expires {
            return Err(Refused::Expired);
        }
        Ok(claims)
    }
}

/// How far a signed callback's timestamp may be from now (Slack's own advice).
const MAX_SKEW_SECS: i64 = 300;

/// Checks Slack's signature of a request: `X-Slack-Signature: v0=HEX(HMAC-SHA256(signing
/// secret, "v0:" + X-Slack-Request-Timestamp + ":" + body))`, with the timestamp within five
/// minutes of `now_secs` (a replayed request is refused).
pub fn verify_slack(
    signing_secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Refused> {
    let ts = timestamp.ok_or(Refused::Stale)?;
    let at: i64 = ts.trim().parse().map_err(|_| Refused::Stale)?;
    if (now_secs - at).abs() > MAX_SKEW_SECS {
        return Err(Refused::Stale);
    }
    let tag = signature
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(hex)
        .ok_or(Refused::Unsigned)?;
    let (key, signed) = slack_input(signing_secret, ts, body);
    hmac::verify(&key, &signed, &tag).map_err(|_| Refused::Unsigned)
}

/// What Slack signs: `v0:TIMESTAMP:BODY`, with the signing secret's key.
fn slack_input(signing_secret: &str, timestamp: &str, body: &[u8]) -> (hmac::Key, Vec<u8>) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, signing_secret.as_bytes());
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    (key, signed)
}

/// Slack's signature of `body` at `timestamp` (what a local Slack in tests sends).
pub fn slack_signature(signing_secret: &str, timestamp: i64, body: &[u8]) -> String {
    let (key, signed) = slack_input(signing_secret, &timestamp.to_string(), body);
    let tag = hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// Twilio's signature of a webhook: `X-Twilio-Signature: BASE64(HMAC-SHA1(auth token, the
/// full URL Twilio requested + each POST parameter's name and value, sorted by name))`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let (key, data) = twilio_input(auth_token, url, params);
    STANDARD.encode(hmac::sign(&key, &data).as_ref())
}

/// Checks Twilio's signature of a webhook to `url` with form `params` (see
/// [`twilio_signature`]), in constant time.
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> Result<(), Refused> {
    let given = signature
        .and_then(|s| STANDARD.decode(s.trim()).ok())
        .ok_or(Refused::Unsigned)?;
    let (key, data) = twilio_input(auth_token, url, params);
    hmac::verify(&key, &data, &given).map_err(|_| Refused::Unsigned)
}

/// What Twilio signs: the URL, then each parameter's name and value sorted by name, with the
/// auth token's key.
fn twilio_input(auth_token: &str, url: &str, params: &[(String, String)]) -> (hmac::Key, Vec<u8>) {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    (
        hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_token.as_bytes()),
        data.into_bytes(),
    )
}

/// A text message's reply: `4a`, `4 ack`, `4r`, `4 resolve` (any case, spaces around).
pub fn parse_reply(body: &str) -> Option<(u32, Answer)> {
    let body = body.trim().to_ascii_lowercase();
    if body.len() > 32 {
        return None;
    }
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 2 {
        return None;
    }
    let code: u32 = body[..digits].parse().ok()?;
    let answer = match body[digits..].trim() {
        "a" | "ack" | "acknowledge" => Answer::Acknowledge,
        "r" | "res" | "resolve" => Answer::Resolve,
        _ => return None,
    };
    (code > 0).then_some((code, answer))
}

/// Bytes from lowercase or uppercase hex.
fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: i64) -> LinkClaims {
        LinkClaims {
            incident_id: "INC-1".into(),
            user: "amy".into(),
            expires,
        }
    }

    #[test]
    fn a_link_acts_until_it_expires_and_only_as_signed() {
        let signer = Signer::new(b"key one");
        let token = signer.token(&claims(1_000));
        assert_eq!(signer.verify(&token, 999), Ok(claims(1_000)));
        assert_eq!(signer.verify(&token, 1_000), Ok(claims(1_000)));
        assert_eq!(signer.verify(&token, 1_001), Err(Refused::Expired));
        // Another key, a changed body, a cut tag, junk and a flood are refused.
        assert_eq!(
            Signer::new(b"key two").verify(&token, 0),
            Err(Refused::BadSignature)
        );
        let (body, tag) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&LinkClaims {
                user: "mallory".into(),
                ..claims(1_000)
            })
            .unwrap(),
        );
        assert_eq!(
            signer.verify(&format!("{forged}.{tag}"), 0),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            signer.verify(&format!("{body}.{}", &tag[..12]), 0),
            Err(Refused::BadSignature)
        );
        assert_eq!(signer.verify("no-dot", 0), Err(Refused::Malformed));
        assert_eq!(signer.verify("a.!!!", 0), Err(Refused::Malformed));
        assert_eq!(
            signer.verify(&"a".repeat(MAX_TOKEN + 1), 0),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn slack_requests_are_taken_only_signed_and_fresh() {
        // Slack's documented example: secret, timestamp, body and signature.
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let ts = 1_531_420_618;
        assert_eq!(
            verify_slack(secret, Some("1531420618"), Some(sig), body, ts + 10),
            Ok(())
        );
        assert_eq!(slack_signature(secret, ts, body), sig);
        assert_eq!(
            verify_slack(secret, Some("1531420618"), Some(sig), body, ts + 301),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify_slack(secret, None, Some(sig), body, ts),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify_slack("another", Some("1531420618"), Some(sig), body, ts),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_slack(secret, Some("1531420618"), Some(sig), b"token=changed", ts),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_slack(secret, Some("1531420618"), None, body, ts),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_slack(secret, Some("1531420618"), Some("v0=zz"), body, ts),
            Err(Refused::Unsigned)
        );
    }

    #[test]
    fn twilio_requests_are_taken_only_signed() {
        // Twilio's documented example (security page): URL, parameters, token, signature.
        let token = "12345";
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let sig = twilio_signature(token, url, &params);
        assert_eq!(sig, "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert_eq!(verify_twilio(token, url, &params, Some(&sig)), Ok(()));
        let mut changed = params.clone();
        changed[2].1 = "9999".into();
        assert_eq!(
            verify_twilio(token, url, &changed, Some(&sig)),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_twilio("other", url, &params, Some(&sig)),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_twilio(token, url, &params, None),
            Err(Refused::Unsigned)
        );
        assert_eq!(
            verify_twilio(token, url, &params, Some("not base64 !")),
            Err(Refused::Unsigned)
        );
    }

    #[test]
    fn replies_name_a_code_and_an_answer() {
        assert_eq!(parse_reply("1a"), Some((1, Answer::Acknowledge)));
        assert_eq!(parse_reply(" 12 R "), Some((12, Answer::Resolve)));
        assert_eq!(parse_reply("4 ack"), Some((4, Answer::Acknowledge)));
        assert_eq!(parse_reply("4resolve"), Some((4, Answer::Resolve)));
        for bad in ["", "a", "0a", "123a", "1x", "1 a b", "yes", &"1".repeat(40)] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
    }
}
