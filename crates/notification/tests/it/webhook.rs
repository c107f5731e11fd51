//! Webhooks: the JSON payload with its `Idempotency-Key`, signed with HMAC-SHA256 over
//! `timestamp + "." + body` (verified here by recomputing it), to the channel's URL or a
//! person's; and the retry classification of every kind of answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firebreak_domain::people::ContactKind;
use firebreak_notification::{
    DeliveryError, EventKind, Message, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use ring::hmac;

use crate::support::{Mock, Reply, assert_no_secret, channel, client, contact, message};

const SIGNING_KEY: &str = "whsec-7Gf2kq0pZr4vXy1";

#[tokio::test]
async fn a_signed_webhook_can_be_verified_by_recomputing_the_signature() {
    let mock = Mock::start(|_| Reply::text(204, "")).await;
    let ch = channel(
        &format!(
            "{{ name: ops, kind: webhook, url: '{}', signing_secret: {{secret: ops-signing}} }}",
            mock.url("/hook")
        ),
        &[("ops-signing", SIGNING_KEY)],
    );
    let msg = message(EventKind::Opened);
    ch.deliver(&client(), None, &msg, "delivery-42")
        .await
        .unwrap();
    let r = mock.one();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("idempotency-key"), Some("delivery-42"));
    assert_eq!(r.json(), msg.payload());
    assert_eq!(r.json()["kind"], "incident.opened");
    assert_eq!(
        r.json()["ack_url"],
        "https://firebreak.example.com/i/01JINC0000000000000000000A/ack"
    );

    // The receiver's side: X-Firebreak-Timestamp, and X-Firebreak-Signature: t=<ts>,v1=<hex>.
    let ts: u64 = r.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts) < 60, "{ts} vs {now}");
    let sig = r.header(SIGNATURE_HEADER).unwrap();
    let (t, v1) = sig.split_once(',').unwrap();
    assert_eq!(t, format!("t={ts}"));
    let hex = v1.strip_prefix("v1=").unwrap();
    assert_eq!(hex.len(), 64);
    let tag: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, SIGNING_KEY.as_bytes());
    hmac::verify(&key, &signed, &tag).expect("the signature verifies");
    // Another key, or another body, does not verify.
    let other = hmac::Key::new(hmac::HMAC_SHA256, b"another-key");
    assert!(hmac::verify(&other, &signed, &tag).is_err());
    signed.push(b' ');
    assert!(hmac::verify(&key, &signed, &tag).is_err());
    assert_no_secret(&format!("{ch:?}"), &[SIGNING_KEY]);
}

/// A URL with a token in it can be a secret, as Slack's and Teams' are: delivered to, never
/// shown, and checked once known.
#[tokio::test]
async fn a_webhook_url_held_by_a_secret_is_delivered_to_and_never_shown() {
    let mock = Mock::start(|_| Reply::text(204, "")).await;
    let url = mock.url("/hook?token=hook-t0ken-123");
    let ch = channel(
        "{ name: ops, kind: webhook, url: {secret: ops-url} }",
        &[("ops-url", &url)],
    );
    assert_eq!(
        ch.secret_names(),
        [("url".to_owned(), "ops-url".to_owned())]
    );
    ch.deliver(&client(), None, &message(EventKind::Opened), "d-1")
        .await
        .unwrap();
    assert_eq!(mock.one().path, "/hook");
    assert_no_secret(&format!("{ch:?}"), &["hook-t0ken-123", "/hook"]);
    let bad = crate::support::with_secrets(
        crate::support::parse("{ name: ops, kind: webhook, url: {secret: ops-url} }").unwrap(),
        &[("ops-url", "ftp://x/hook-t0ken-123")],
    )
    .unwrap_err();
    assert!(
        bad.starts_with("channel \"ops\": url: the URL in secret \"ops-url\" must start with http:// or https://"),
        "{bad}"
    );
    assert_no_secret(&bad, &["hook-t0ken-123"]);
}

#[tokio::test]
async fn the_existing_webhook_configuration_keeps_working_unsigned() {
    let mock = Mock::start(|_| Reply::text(200, "")).await;
    // As README documents it.
    let ch = channel(
        &format!(
            "{{ name: ops, kind: webhook, url: '{}', events: [opened, severity_changed, resolved], max_severity: 2 }}",
            mock.url("/firebreak")
        ),
        &[],
    );
    let msg = Message::runbook(
        "e-7",
        "runbook:restart",
        "01JINC0000000000000000000A",
        "restarted checkout",
    );
    ch.deliver(&client(), None, &msg, "d-7").await.unwrap();
    let r = mock.one();
    assert!(r.header(SIGNATURE_HEADER).is_none());
    assert!(r.header(TIMESTAMP_HEADER).is_none());
    assert_eq!(
        r.json(),
        serde_json::json!({
            "event_id": "e-7", "kind": "runbook.message", "actor": "runbook:restart",
            "incident_id": "01JINC0000000000000000000A", "message": "restarted checkout",
        })
    );
}

#[tokio::test]
async fn a_person_webhook_goes_to_their_url_signed_with_the_channels_key() {
    let mock = Mock::start(|_| Reply::text(200, "")).await;
    let ch = channel(
        &format!(
            "{{ name: hooks, kind: webhook, url: '{}', signing_secret: {{secret: k}} }}",
            mock.url("/team")
        ),
        &[("k", SIGNING_KEY)],
    );
    let carol = contact(ContactKind::Webhook, &mock.url("/people/carol"));
    ch.deliver(&client(), Some(&carol), &message(EventKind::Escalated), "d")
        .await
        .unwrap();
    let r = mock.one();
    assert_eq!(r.path, "/people/carol");
    assert!(r.header(SIGNATURE_HEADER).is_some());
}

#[tokio::test]
async fn permanent_and_retryable_answers_are_told_apart() {
    let mock = Mock::start(|r| {
        let status: u16 = r.path.trim_start_matches('/').parse().unwrap();
        let reply = Reply::text(status, &format!("answer {status}"));
        match status {
            429 => reply.with_header("retry-after", "17"),
            503 => reply.with_header("retry-after", "Wed, 21 Oct 2099 07:28:00 GMT"),
            _ => reply,
        }
    })
    .await;
    for (status, permanent) in [
        (400, true),
        (401, true),
        (403, true),
        (404, true),
        (409, true),
        (410, true),
        (422, true),
        (408, false),
        (429, false),
        (500, false),
        (502, false),
        (503, false),
        (504, false),
    ] {
        let ch = channel(
            &format!(
                "{{ name: ops, kind: webhook, url: '{}' }}",
                mock.url(&format!("/{status}"))
            ),
            &[],
        );
        let e = ch
            .deliver(&client(), None, &message(EventKind::Opened), "k")
            .await
            .unwrap_err();
        assert_eq!(e.is_permanent(), permanent, "{status}: {e}");
        match status {
            429 => {
                assert!(matches!(e, DeliveryError::RateLimited { .. }), "{e:?}");
                assert_eq!(e.retry_after(), Some(Duration::from_secs(17)));
            }
            503 => {
                let wait = e.retry_after().expect("a date is a wait too");
                assert!(wait > Duration::from_secs(3600), "{wait:?}");
            }
            _ => {
                assert_eq!(e.retry_after(), None);
                assert!(
                    e.to_string()
                        .starts_with(&format!("webhook answered {status} ")),
                    "{e}"
                );
                assert!(
                    e.to_string().ends_with(&format!(": answer {status}")),
                    "{e}"
                );
            }
        }
    }
    // Nobody listening: retryable, and the text names no URL.
    let ch = channel(
        "{ name: ops, kind: webhook, url: 'http://127.0.0.1:9/hook-with-token-abc123' }",
        &[],
    );
    let e = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    assert!(e.to_string().starts_with("webhook request failed: "), "{e}");
    assert_no_secret(&e.to_string(), &["hook-with-token-abc123"]);
}
