//! Answering a page from where you are, end to end on the test's clock: step 1 emails the
//! person on call (with signed links), nobody answers, step 2 messages the next person on
//! Slack with buttons, their click (signed as Slack signs) acknowledges and stops step 3. A
//! page's link acknowledges only by POST and only as signed; a text message reply `1r`
//! resolves, signed as Twilio signs. Forged callbacks change nothing.

use std::time::Duration;

use firebreak_domain::Clock;
use firebreak_notification::respond::{slack_signature, twilio_signature};
use firebreak_proto::v1;
use firebreak_testkit::smtp::SmtpServer;

use crate::harness::{Recorder, Stack, escalation_cancelled, eventually};

const PUBLIC: &str = "https://firebreak.example.com";
const SLACK_SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";

/// Secrets in a directory of their own, and the configuration naming them.
fn secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("links", "a-link-signing-key-of-at-least-32-bytes!"),
        ("slack-token", "xoxb-test"),
        ("slack-signing", SLACK_SIGNING),
        ("twilio", TWILIO_TOKEN),
    ] {
        std::fs::write(dir.path().join(name), value).unwrap();
    }
    dir
}

fn config(secrets: &std::path::Path, smtp: u16, api: &str) -> String {
    format!(
        "secrets_dir: {dir}
responses: {{ public_url: '{PUBLIC}', signing_key: {{ secret: links }} }}
users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
  - {{ name: bob, contact_methods: [{{ name: chat, kind: slack, address: U0BOB }}] }}
  - {{ name: carol, contact_methods: [{{ name: work, kind: email, address: carol@example.com }}] }}
  - {{ name: dave, contact_methods: [{{ name: phone, kind: sms, address: '+15550100' }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {smtp}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
  - {{ name: slack, kind: slack, token: {{ secret: slack-token }}, signing_secret: {{ secret: slack-signing }}, api_url: '{api}/slack' }}
  - {{ name: sms, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {{ secret: twilio }}, from: '+15550199', api_url: '{api}/twilio' }}
schedules:
  - name: primary
    time_zone: UTC
    combine: exclusive
    layers:
      - {{ name: always, members: [alice], rotation: {{ every: 1d, hand_off: '00:00', start: '2020-01-01' }} }}
escalation_policies:
  - name: sre
    steps:
      - targets: [{{ schedule: primary }}]
      - {{ after_seconds: 300, targets: [{{ user: bob }}] }}
      - {{ after_seconds: 600, targets: [{{ user: carol }}] }}
  - name: texts
    steps:
      - targets: [{{ user: dave }}]
routes:
  - {{ policy: texts, match: {{ labels: {{ team: db }} }} }}
  - {{ policy: sre }}
",
        dir = secrets.display()
    )
}

/// A stack that takes answers, with its SMTP server, its providers' stand-in and its
/// secrets' directory (kept for as long as the stack runs).
async fn answering_stack() -> (SmtpServer, Recorder, tempfile::TempDir, Stack) {
    let smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let api = Recorder::start().await;
    let dir = secrets();
    let s = Stack::start(
        &crate::harness::empty_runbooks(),
        &config(dir.path(), smtp.port, &api.url),
    )
    .await;
    (smtp, api, dir, s)
}

/// Posts Twilio's webhook `path` (`sms`, `status`) with `params`, signed with `token` over
/// the public URL as Twilio signs it.
async fn twilio(s: &Stack, path: &str, token: &str, params: &[(&str, &str)]) -> reqwest::Response {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let signature = twilio_signature(token, &format!("{PUBLIC}/v1/twilio/{path}"), &params);
    reqwest::Client::new()
        .post(format!("{}/v1/twilio/{path}", s.http))
        .header("x-twilio-signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap()
}

/// Posts a Slack `block_actions` callback for `action_id` on `incident` by Slack user
/// `user`, signed with `secret` at the stack's time.
async fn click(
    s: &Stack,
    secret: &str,
    user: &str,
    action_id: &str,
    incident: &str,
) -> reqwest::Response {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": { "id": user, "username": "bob" },
        "trigger_id": format!("trigger-{user}-{action_id}"),
        "actions": [{ "action_id": action_id, "value": incident, "type": "button", "action_ts": "1.2" }],
    });
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = s.clock.now().unix_micros() / 1_000_000;
    reqwest::Client::new()
        .post(format!("{}/v1/slack/interactions", s.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            slack_signature(secret, ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn incident(s: &Stack, id: &str) -> v1::Incident {
    s.incidents
        .clone()
        .get_incident(v1::GetIncidentRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
}

async fn timeline(s: &Stack, id: &str) -> Vec<v1::TimelineEntry> {
    s.incidents
        .clone()
        .get_timeline(v1::GetTimelineRequest {
            id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn an_email_then_a_slack_page_and_the_slack_button_stops_the_escalation() {
    let (mut smtp, api, _dir, mut s) = answering_stack().await;
    let id = s.raise("checkout is down").await;

    // Step 1: alice, on call, by email, with links that act as her.
    let first = smtp.next().await;
    assert_eq!(first["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    let body = first["body"].as_str().unwrap_or_default();
    assert!(
        body.contains(&format!("{PUBLIC}/v1/respond/")) && body.contains("?do=ack"),
        "no acknowledge link in {first:#}"
    );

    // Nobody answers: five minutes on, step 2 messages bob on Slack with buttons.
    s.clock.advance(Duration::from_secs(301));
    let post = eventually("bob's Slack message", || async {
        api.on("/slack/chat.postMessage").into_iter().next()
    })
    .await;
    assert_eq!(post.body["channel"], "U0BOB", "{:#}", post.body);
    assert_eq!(post.authorization, "Bearer xoxb-test");
    let buttons = &post.body["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "firebreak.acknowledge");
    assert_eq!(buttons[0]["value"], id.as_str());

    // A click signed with another secret, or by a Slack user nobody has, changes nothing.
    let forged = click(
        &s,
        "not-the-signing-secret",
        "U0BOB",
        "firebreak.acknowledge",
        &id,
    )
    .await;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    let stranger = click(&s, SLACK_SIGNING, "U0NOBODY", "firebreak.acknowledge", &id).await;
    assert_eq!(stranger.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(
        incident(&s, &id).await.incident_state(),
        Some(firebreak_domain::IncidentState::Open)
    );

    // Bob's click acknowledges, as bob, from Slack; step 3 (carol) never comes.
    let ok = click(&s, SLACK_SIGNING, "U0BOB", "firebreak.acknowledge", &id).await;
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    escalation_cancelled(&s, &id).await;
    let acked = eventually("the acknowledgement on the timeline", || async {
        timeline(&s, &id)
            .await
            .into_iter()
            .find(|e| e.kind == "acknowledged")
    })
    .await;
    assert_eq!(acked.actor, "user:bob");
    assert!(acked.data.contains("\"via\":\"slack\""), "{}", acked.data);
    // Slack retrying the same click acts once: one acknowledgement.
    let again = click(&s, SLACK_SIGNING, "U0BOB", "firebreak.acknowledge", &id).await;
    assert_eq!(again.status(), reqwest::StatusCode::OK);
    s.clock.advance(Duration::from_secs(600));
    assert!(
        !smtp.more(Duration::from_secs(2)).await,
        "nothing after the acknowledgement"
    );
    let acks = timeline(&s, &id)
        .await
        .into_iter()
        .filter(|e| e.kind == "acknowledged")
        .count();
    assert_eq!(acks, 1);
    // Each page remembers who acknowledged: alice's email and bob's Slack message alike.
    let pages: Vec<v1::Delivery> = eventually("the pages marked acknowledged", || async {
        let list = s
            .notifications
            .clone()
            .list_deliveries(v1::ListDeliveriesRequest {
                incident_id: id.clone(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .deliveries;
        let pages: Vec<v1::Delivery> = list
            .into_iter()
            .filter(|d| {
                v1::DeliveryKind::shown(d.delivery_kind) == "escalation.page"
                    && d.status() != v1::DeliveryState::Cancelled
            })
            .collect();
        pages
            .iter()
            .all(|d| d.acknowledged_by == "user:bob" && d.acknowledged_at.is_some())
            .then_some(pages)
    })
    .await;
    assert_eq!(pages.len(), 2, "{pages:#?}");

    // The review counts time to acknowledge from the first page too, and says who
    // acknowledged from where.
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            summary: "rolled back".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let review = s
        .incidents
        .get_review(v1::GetReviewRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .markdown;
    for want in [
        "Time to acknowledge from the first page (alice through user:alice/work at",
        "Acknowledged by user:bob from slack",
    ] {
        assert!(review.contains(want), "missing {want:?} in\n{review}");
    }
}

#[tokio::test]
async fn a_pages_link_acts_only_when_posted_and_only_as_signed() {
    let (mut smtp, _api, _dir, mut s) = answering_stack().await;
    let id = s.raise("search is slow").await;
    let mail = smtp.next().await;
    let body = mail["body"].as_str().unwrap_or_default().to_owned();
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with(PUBLIC) && w.contains("?do=resolve"))
        .unwrap_or_else(|| panic!("no resolve link in {body}"))
        .replace(PUBLIC, &s.http);
    let web = reqwest::Client::new();

    // A GET (a mail scanner) shows a button and acts on nothing.
    let shown = web.get(&link).send().await.unwrap();
    assert_eq!(shown.status(), reqwest::StatusCode::OK);
    assert!(
        shown
            .text()
            .await
            .unwrap()
            .contains("<form method=\"post\"")
    );
    // A link with its signature changed is refused.
    let (front, _) = link.rsplit_once('?').unwrap();
    let forged = format!("{}x?do=resolve", &front[..front.len() - 1]);
    let refused = web.post(&forged).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(
        incident(&s, &id).await.incident_state(),
        Some(firebreak_domain::IncidentState::Open)
    );

    // The POST resolves, as alice, from the link.
    let done = web
        .post(&link)
        .form(&[("do", "resolve")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), reqwest::StatusCode::OK);
    eventually("the incident resolved", || async {
        let inc = incident(&s, &id).await;
        (inc.incident_state() == Some(firebreak_domain::IncidentState::Resolved)).then_some(())
    })
    .await;
    let entry = timeline(&s, &id)
        .await
        .into_iter()
        .find(|e| e.kind == "resolved")
        .unwrap();
    assert_eq!(entry.actor, "user:alice");

    // A day later the link has expired.
    s.clock.advance(Duration::from_secs(86_401));
    let expired = web.get(&link).send().await.unwrap();
    assert_eq!(expired.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(expired.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn a_text_message_reply_resolves_and_a_forged_one_does_nothing() {
    let (_smtp, api, _dir, mut s) = answering_stack().await;
    let id = s.raise_with_labels("replica lag", &[("team", "db")]).await;
    let text = eventually("dave's text message", || async {
        api.received
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.path.starts_with("/twilio/"))
            .cloned()
    })
    .await;
    let sent: Vec<(String, String)> = form_urlencoded::parse(text.text.as_bytes())
        .into_owned()
        .collect();
    let said = &sent.iter().find(|(k, _)| k == "Body").unwrap().1;
    assert!(
        said.contains("Reply 1a to acknowledge, 1r to resolve"),
        "{said}"
    );
    assert_eq!(
        sent.iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.as_str()),
        Some("+15550100")
    );

    // The text is `sent` (Twilio took it) with Twilio's id, until Twilio's status callback
    // says it was delivered; a forged callback changes nothing.
    let sid = text_sid(&s, &id).await;
    assert_eq!(
        twilio(
            &s,
            "status",
            "not-the-token",
            &[("MessageSid", &sid), ("MessageStatus", "delivered")]
        )
        .await
        .status(),
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        twilio(
            &s,
            "status",
            TWILIO_TOKEN,
            &[("MessageSid", &sid), ("MessageStatus", "delivered")]
        )
        .await
        .status(),
        reqwest::StatusCode::NO_CONTENT
    );
    eventually("the text delivered", || async {
        page_of(&s, &id)
            .await
            .filter(|d| d.status() == v1::DeliveryState::Delivered)
    })
    .await;

    let reply = |token: &'static str, body: &'static str, sid: &'static str| {
        let s = &s;
        async move {
            let params = [
                ("From", "+15550100"),
                ("To", "+15550199"),
                ("Body", body),
                ("MessageSid", sid),
            ];
            twilio(s, "sms", token, &params).await
        }
    };
    // Signed with another token: refused, nothing changes.
    let forged = reply("not-the-token", "1r", "SM0001").await;
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    // A reply naming no incident is answered, and acts on nothing.
    let unknown = reply(TWILIO_TOKEN, "7r", "SM0002").await;
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("No incident has code 7")
    );
    assert_eq!(
        incident(&s, &id).await.incident_state(),
        Some(firebreak_domain::IncidentState::Open)
    );
    // `1r` resolves, as dave, from SMS; the answer is texted back.
    let ok = reply(TWILIO_TOKEN, "1r", "SM0003").await;
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let twiml = ok.text().await.unwrap();
    assert!(
        twiml.contains("<Response><Message>") && twiml.contains("resolved by dave"),
        "{twiml}"
    );
    eventually("the incident resolved by dave", || async {
        timeline(&s, &id)
            .await
            .into_iter()
            .find(|e| e.kind == "resolved" && e.actor == "user:dave")
    })
    .await;
}

/// Hostile callbacks: too large, forged, stale, malformed, or naming what is not there. Each
/// is refused with a status that says so, and the incident stays as it was.
#[tokio::test]
async fn hostile_answers_are_refused_and_change_nothing() {
    let (_smtp, _api, _dir, mut s) = answering_stack().await;
    let id = s.raise("disk full").await;
    let web = reqwest::Client::new();
    let slack = |body: String, ts: i64, secret: &str| {
        let signature = slack_signature(secret, ts, body.as_bytes());
        web.post(format!("{}/v1/slack/interactions", s.http))
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", signature)
            .body(body)
            .send()
    };
    let now = s.clock.now().unix_micros() / 1_000_000;
    let payload = |p: serde_json::Value| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &p.to_string())
            .finish()
    };
    let button = |action: &str, value: &str| {
        payload(serde_json::json!({
            "type": "block_actions", "user": { "id": "U0BOB" }, "trigger_id": "t",
            "actions": [{ "action_id": action, "value": value }],
        }))
    };
    let cases: Vec<(&str, reqwest::StatusCode, reqwest::Response)> = vec![
        (
            "a body over 64 KiB",
            reqwest::StatusCode::PAYLOAD_TOO_LARGE,
            slack("x".repeat(100 * 1024), now, SLACK_SIGNING)
                .await
                .unwrap(),
        ),
        (
            "a callback ten minutes old (a replay)",
            reqwest::StatusCode::FORBIDDEN,
            slack(
                button("firebreak.acknowledge", &id),
                now - 600,
                SLACK_SIGNING,
            )
            .await
            .unwrap(),
        ),
        (
            "a payload that is not JSON",
            reqwest::StatusCode::BAD_REQUEST,
            slack("payload=%7Bnot".into(), now, SLACK_SIGNING)
                .await
                .unwrap(),
        ),
        (
            "an interaction that is not a button",
            reqwest::StatusCode::BAD_REQUEST,
            slack(
                payload(serde_json::json!({ "type": "view_submission" })),
                now,
                SLACK_SIGNING,
            )
            .await
            .unwrap(),
        ),
        (
            "a button Firebreak did not make",
            reqwest::StatusCode::BAD_REQUEST,
            slack(button("delete_everything", &id), now, SLACK_SIGNING)
                .await
                .unwrap(),
        ),
        (
            "a value that is not an incident id",
            reqwest::StatusCode::BAD_REQUEST,
            slack(
                button("firebreak.acknowledge", "../../etc/passwd"),
                now,
                SLACK_SIGNING,
            )
            .await
            .unwrap(),
        ),
        (
            "a link token of 2,000 bytes",
            reqwest::StatusCode::FORBIDDEN,
            web.post(format!("{}/v1/respond/{}", s.http, "a".repeat(2000)))
                .send()
                .await
                .unwrap(),
        ),
        (
            "a Twilio callback without a signature",
            reqwest::StatusCode::FORBIDDEN,
            web.post(format!("{}/v1/twilio/sms", s.http))
                .form(&[("From", "+15550100"), ("Body", "1a")])
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (what, want, got) in cases {
        assert_eq!(got.status(), want, "{what}: {:?}", got.text().await);
    }
    assert_eq!(
        incident(&s, &id).await.incident_state(),
        Some(firebreak_domain::IncidentState::Open)
    );
    let answered = timeline(&s, &id)
        .await
        .into_iter()
        .filter(|e| e.kind == "acknowledged" || e.kind == "resolved")
        .count();
    assert_eq!(answered, 0);
}

/// The page delivery of `incident`, if any.
async fn page_of(s: &Stack, incident: &str) -> Option<v1::Delivery> {
    s.notifications
        .clone()
        .list_deliveries(v1::ListDeliveriesRequest {
            incident_id: incident.to_owned(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .deliveries
        .into_iter()
        .find(|d| v1::DeliveryKind::shown(d.delivery_kind) == "escalation.page")
}

/// The Twilio id of `incident`'s text page, once it is `sent`.
async fn text_sid(s: &Stack, incident: &str) -> String {
    eventually("the text sent with Twilio's id", || async {
        page_of(s, incident)
            .await
            .filter(|d| d.status() == v1::DeliveryState::Sent && !d.provider_id.is_empty())
            .map(|d| d.provider_id)
    })
    .await
}
