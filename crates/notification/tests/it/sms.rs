//! Twilio (SMS and voice) and a generic HTTP SMS gateway against local servers speaking
//! their request and answer shapes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use firebreak_domain::people::ContactKind;
use firebreak_notification::EventKind;
use serde_json::json;

use crate::support::{
    Mock, Reply, assert_no_secret, base64, channel, client, contact, message, refusal,
};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "tw1lio-auth-t0ken-abcdef";

/// Twilio's REST API: Messages.json and Calls.json, form-encoded, basic authentication.
async fn twilio() -> Mock {
    let n = AtomicU32::new(0);
    Mock::start(move |r| {
        let auth = format!("Basic {}", base64(format!("{SID}:{TWILIO_TOKEN}").as_bytes()));
        if r.header("authorization") != Some(auth.as_str()) {
            return Reply::json(401, json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}));
        }
        let form = r.form();
        let to = form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone()).unwrap_or_default();
        if to == "+15550000429" {
            return Reply::json(429, json!({"code": 20429, "message": "Too Many Requests", "status": 429})).with_header("retry-after", "12");
        }
        if to == "+15550000500" {
            return Reply::json(500, json!({"code": 20500, "message": "Internal Server Error", "status": 500}));
        }
        if to == "+15550000999" {
            return Reply::json(400, json!({"code": 21211, "message": "The 'To' number +15550000999 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}));
        }
        let i = n.fetch_add(1, Ordering::SeqCst);
        let prefix = if r.path.ends_with("/Calls.json") { "CA" } else { "SM" };
        Reply::json(201, json!({
            "sid": format!("{prefix}{i:032x}"), "account_sid": SID, "to": to, "status": "queued",
        }))
    })
    .await
}

fn twilio_channel(mock: &Mock, extra: &str) -> firebreak_notification::Channel {
    channel(
        &format!(
            "{{ name: phone, kind: twilio, account_sid: {SID}, auth_token: {{secret: twilio-token}}, from: '+15557654321', api_url: '{}'{extra} }}",
            mock.url("")
        ),
        &[("twilio-token", TWILIO_TOKEN)],
    )
}

#[tokio::test]
async fn twilio_texts_a_person_and_calls_them_with_twiml() {
    let mock = twilio().await;
    let ch = twilio_channel(&mock, "");
    assert!(!ch.broadcasts());
    let sms = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Sms, "+4915112345678")),
            &message(EventKind::Opened),
            "k1",
        )
        .await
        .unwrap();
    assert_eq!(
        sms.provider_id.as_deref(),
        Some("SM00000000000000000000000000000000")
    );
    let call = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Voice, "+4915112345678")),
            &message(EventKind::Escalated),
            "k2",
        )
        .await
        .unwrap();
    assert_eq!(
        call.provider_id.as_deref(),
        Some("CA00000000000000000000000000000001")
    );
    let reqs = mock.requests();
    let (text, voice) = (&reqs[0], &reqs[1]);
    assert_eq!(text.method, "POST");
    assert_eq!(
        text.path,
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(
        text.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        text.form(),
        [
            ("To".to_owned(), "+4915112345678".to_owned()),
            ("From".to_owned(), "+15557654321".to_owned()),
            (
                "Body".to_owned(),
                "[SEV2] Incident opened: payments: 502 from the card processor (01JINC0000000000000000000A)\nAck: https://firebreak.example.com/i/01JINC0000000000000000000A/ack".to_owned()
            ),
        ]
    );
    assert_eq!(voice.path, format!("/2010-04-01/Accounts/{SID}/Calls.json"));
    let form = voice.form();
    assert_eq!(form[0], ("To".to_owned(), "+4915112345678".to_owned()));
    assert_eq!(form[2].0, "Twiml");
    let said = "This is Firebreak. Severity 2. Incident escalated: payments: 502 from the card processor.\nPlease check Firebreak.";
    assert_eq!(
        form[2].1,
        format!("<Response><Say>{said}</Say><Pause length=\"1\"/><Say>{said}</Say></Response>")
    );
    // Email is not Twilio's.
    let e = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Email, "a@example.com")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());
}

#[tokio::test]
async fn twilio_broadcasts_by_voice_when_told_and_classifies_its_errors() {
    let mock = twilio().await;
    let ch = twilio_channel(&mock, ", to: '+15551230000', broadcast_as: voice");
    assert!(ch.broadcasts());
    ch.deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap();
    assert!(mock.one().path.ends_with("/Calls.json"));

    let to = |n: &str| contact(ContactKind::Sms, n);
    let e = ch
        .deliver(
            &client(),
            Some(&to("+15550000999")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "twilio answered 400 Bad Request: error 21211: The 'To' number +15550000999 is not a valid phone number."
    );
    let e = ch
        .deliver(
            &client(),
            Some(&to("+15550000429")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(!e.is_permanent());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(12)));
    let e = ch
        .deliver(
            &client(),
            Some(&to("+15550000500")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(!e.is_permanent());
    // A number that is not E.164 is refused before anything is sent.
    let e = ch
        .deliver(
            &client(),
            Some(&to("0151 1234")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());

    let wrong = channel(
        &format!(
            "{{ name: phone, kind: twilio, account_sid: {SID}, auth_token: {{secret: t}}, from: '+15557654321', api_url: '{}' }}",
            mock.url("")
        ),
        &[("t", "wrong-twilio-t0ken")],
    );
    let e = wrong
        .deliver(
            &client(),
            Some(&to("+15551112222")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "twilio answered 401 Unauthorized: error 20003: Authenticate"
    );
    assert_no_secret(&format!("{e} {e:?} {wrong:?}"), &["wrong-twilio-t0ken"]);
}

#[tokio::test]
async fn an_sms_text_is_cut_to_1600_characters() {
    let mock = twilio().await;
    let ch = twilio_channel(&mock, "");
    let mut msg = message(EventKind::Opened);
    msg.incident
        .insert("title".into(), "x".repeat(5_000).into());
    ch.deliver(
        &client(),
        Some(&contact(ContactKind::Sms, "+15551112222")),
        &msg,
        "k",
    )
    .await
    .unwrap();
    let body = mock.one().form()[2].1.clone();
    assert_eq!(body.chars().count(), 1_600);
    assert!(body.ends_with('…'));
}

#[tokio::test]
async fn a_gateway_request_is_rendered_from_its_templates() {
    let mock = Mock::start(|r| {
        if r.header("authorization") != Some("Bearer gw-t0ken-123456") {
            return Reply::json(401, json!({"error": "bad token gw-t0ken-123456"}));
        }
        Reply::json(200, json!({"messages": [{"id": 4711, "status": "sent"}]}))
    })
    .await;
    let yaml = |token_name: &str| {
        format!(
            r#"
name: sms-gw
kind: sms_gateway
url: "{}/v1/send?to={{{{ to|urlencode }}}}"
method: POST
headers:
  Authorization: "Bearer {{{{ secrets.token }}}}"
  X-Request-Id: "{{{{ idempotency_key }}}}"
body: '{{"to": {{{{ to }}}}, "text": {{{{ text }}}}, "incident": {{{{ incident_id }}}}}}'
secrets:
  token: {{secret: {token_name}}}
id_pointer: /messages/0/id
templates:
  text: "{{{{ headline }}}}: {{{{ incident.title|default(message) }}}} \"quoted\""
"#,
            mock.url("")
        )
    };
    let ch = channel(&yaml("gw-token"), &[("gw-token", "gw-t0ken-123456")]);
    let r = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Sms, "+4915112345678")),
            &message(EventKind::Opened),
            "delivery-9",
        )
        .await
        .unwrap();
    assert_eq!(r.provider_id.as_deref(), Some("4711"));
    let req = mock.one();
    assert_eq!(req.path, "/v1/send");
    assert_eq!(req.query.as_deref(), Some("to=%2B4915112345678"));
    assert_eq!(req.header("x-request-id"), Some("delivery-9"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "to": "+4915112345678",
            "text": "Incident opened: payments: 502 from the card processor \"quoted\"",
            "incident": "01JINC0000000000000000000A",
        })
    );
    // The gateway echoes the token in its error: the error text does not.
    let wrong = channel(&yaml("gw-token"), &[("gw-token", "not-the-gw-t0ken")]);
    let mock_echo = wrong
        .deliver(
            &client(),
            Some(&contact(ContactKind::Sms, "+4915112345678")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(mock_echo.is_permanent());
    assert_no_secret(
        &format!("{mock_echo} {mock_echo:?} {wrong:?}"),
        &["not-the-gw-t0ken"],
    );
}

#[tokio::test]
async fn a_gateway_with_a_form_body_and_the_ways_its_templates_are_refused() {
    let mock = Mock::start(|_| Reply::text(200, "OK")).await;
    let ch = channel(
        &format!(
            r#"
name: sms-form
kind: sms_gateway
url: "{}/send"
content_type: application/x-www-form-urlencoded
body: "number={{{{ to|urlencode }}}}&message={{{{ text|urlencode }}}}"
to: "+15551230000"
"#,
            mock.url("")
        ),
        &[],
    );
    ch.deliver(&client(), None, &message(EventKind::Resolved), "k")
        .await
        .unwrap();
    let form = mock.one().form();
    assert_eq!(form[0], ("number".to_owned(), "+15551230000".to_owned()));
    assert!(
        form[1].1.starts_with("[SEV2] Incident resolved: payments"),
        "{form:?}"
    );

    let url = "url: 'https://sms.example.com/send'";
    for (fields, field, why) in [
        (
            format!("{url}, body: '{{\"text\": \"{{{{ text }}}}\"}}'"),
            "body",
            "renders invalid JSON",
        ),
        (
            format!("{url}, body: '{{{{ text|nope }}}}'"),
            "body",
            "unknown filter",
        ),
        (
            format!("{url}, headers: {{'Bad Header': x}}"),
            "headers.Bad Header",
            "is not a header name",
        ),
        (
            "url: 'ftp://x/{{ to }}'".to_owned(),
            "url",
            "must start with http",
        ),
        (
            format!("{url}, headers: {{A: '{{{{ secrets.token }}}}'}}"),
            "headers.A",
            "undefined",
        ),
        (
            format!("{url}, method: GET, body: x"),
            "body",
            "a GET request has no body",
        ),
        (format!("{url}, to: '12345'"), "to", "E.164"),
        (
            format!("{url}, id_pointer: messages"),
            "id_pointer",
            "JSON pointer",
        ),
    ] {
        let yaml = format!("{{ name: gw, kind: sms_gateway, {fields} }}");
        let e = refusal(&yaml, &[]);
        assert!(
            e.starts_with("channel \"gw\": ") && e.contains(field) && e.contains(why),
            "{yaml}: {e}"
        );
    }
}

#[tokio::test]
async fn twilio_is_told_where_to_report_each_text_and_call() {
    let mock = twilio().await;
    let hook = "https://firebreak.example.com/twilio/status";
    let ch = twilio_channel(&mock, &format!(", status_callback: '{hook}'"));
    for kind in [ContactKind::Sms, ContactKind::Voice] {
        ch.deliver(
            &client(),
            Some(&contact(kind, "+4915112345678")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap();
    }
    for r in mock.requests() {
        let form = r.form();
        let callbacks: Vec<_> = form.iter().filter(|(k, _)| k == "StatusCallback").collect();
        assert_eq!(
            callbacks,
            [&("StatusCallback".to_owned(), hook.to_owned())],
            "{}",
            r.path
        );
    }
    // Without one, no parameter.
    let plain = twilio().await;
    twilio_channel(&plain, "")
        .deliver(
            &client(),
            Some(&contact(ContactKind::Sms, "+4915112345678")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap();
    assert!(
        !plain
            .one()
            .form()
            .iter()
            .any(|(k, _)| k == "StatusCallback")
    );
    // A callback URL is checked at load, naming the field.
    let yaml = |url: &str| {
        format!(
            "{{ name: phone, kind: twilio, account_sid: {SID}, auth_token: {{secret: t}}, from: '+15557654321', status_callback: '{url}' }}"
        )
    };
    assert_eq!(
        refusal(&yaml("http://firebreak.example.com/s"), &[("t", "x")]),
        "channel \"phone\": status_callback: \"http://firebreak.example.com/s\" must start with https:// (plain http only to a loopback address)"
    );
    let long = format!("https://firebreak.example.com/{}", "a".repeat(2_100));
    assert!(
        refusal(&yaml(&long), &[("t", "x")])
            .starts_with("channel \"phone\": status_callback: has 2130 bytes, more than 2048"),
    );
}
