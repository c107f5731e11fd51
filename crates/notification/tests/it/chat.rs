//! Slack, Mattermost and Microsoft Teams against local servers that speak their documented
//! request and answer shapes: auth headers, content types, bodies, message updates.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use firebreak_domain::people::ContactKind;
use firebreak_notification::{DeliveryError, EventKind};
use serde_json::json;

use crate::support::{Mock, Reply, assert_no_secret, channel, client, contact, message};

const SLACK_TOKEN: &str = "xoxb-1234-5678-s3cr3tt0ken";

/// Slack's Web API: `chat.postMessage` and `chat.update` with a bearer token; a channel
/// called `C0MISSING` does not exist, `C0LIMITED` is rate limited, `C0BROKEN` has an
/// internal error; a `ts` of `1000000000.000999` names a deleted message.
async fn slack() -> Mock {
    let n = AtomicU32::new(0);
    Mock::start(move |r| {
        if r.header("authorization") != Some(&format!("Bearer {SLACK_TOKEN}")) {
            return Reply::json(200, json!({"ok": false, "error": "invalid_auth"}));
        }
        let body = r.json();
        let channel = body["channel"].as_str().unwrap_or_default().to_owned();
        match (r.path.as_str(), channel.as_str()) {
            (_, "C0MISSING") => {
                Reply::json(200, json!({"ok": false, "error": "channel_not_found"}))
            }
            (_, "C0LIMITED") => Reply::text(429, "").with_header("retry-after", "7"),
            (_, "C0BROKEN") => Reply::json(200, json!({"ok": false, "error": "internal_error"})),
            ("/api/chat.postMessage", _) => {
                let i = n.fetch_add(1, Ordering::SeqCst) + 1;
                // A member id is answered with the direct message channel's id.
                let channel = if channel.starts_with('U') {
                    "D0DIRECT1".to_owned()
                } else {
                    channel
                };
                Reply::json(
                    200,
                    json!({
                        "ok": true, "channel": channel, "ts": format!("1700000000.00010{i}"),
                        "message": {"text": body["text"], "type": "message"},
                    }),
                )
            }
            ("/api/chat.update", _) if body["ts"] == "1000000000.000999" => {
                Reply::json(200, json!({"ok": false, "error": "message_not_found"}))
            }
            ("/api/chat.update", _) => Reply::json(
                200,
                json!({
                    "ok": true, "channel": channel, "ts": body["ts"], "text": body["text"],
                }),
            ),
            _ => Reply::json(200, json!({"ok": false, "error": "unknown_method"})),
        }
    })
    .await
}

fn slack_channel(mock: &Mock, broadcast: &str) -> firebreak_notification::Channel {
    channel(
        &format!(
            "{{ name: slack-incidents, kind: slack, token: {{secret: slack-bot}}, channel: {broadcast}, api_url: '{}' }}",
            mock.url("/api")
        ),
        &[("slack-bot", SLACK_TOKEN)],
    )
}

#[tokio::test]
async fn slack_posts_then_updates_the_same_message_when_the_incident_changes() {
    let mock = slack().await;
    let ch = slack_channel(&mock, "C024BE91L");
    let first = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k1")
        .await
        .unwrap();
    assert_eq!(
        first.provider_id.as_deref(),
        Some("C024BE91L:1700000000.000101")
    );
    let mut resolved = message(EventKind::Resolved);
    resolved.ack_url = None;
    resolved.previous_id = first.provider_id.clone();
    let second = ch.deliver(&client(), None, &resolved, "k2").await.unwrap();
    assert_eq!(second.provider_id, first.provider_id);

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let (post, update) = (&reqs[0], &reqs[1]);
    assert_eq!(post.path, "/api/chat.postMessage");
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body = post.json();
    assert_eq!(body["channel"], "C024BE91L");
    assert_eq!(body["unfurl_links"], false);
    assert_eq!(
        body["text"],
        ":rotating_light: *[SEV2] Incident opened*: payments: 502 from the card processor\n`01JINC0000000000000000000A` · open · P1 · by user:alice\n<https://firebreak.example.com/i/01JINC0000000000000000000A/ack|Acknowledge>"
    );
    assert_eq!(update.path, "/api/chat.update");
    assert_eq!(
        update.header("authorization"),
        Some(format!("Bearer {SLACK_TOKEN}").as_str())
    );
    let body = update.json();
    assert_eq!(body["channel"], "C024BE91L");
    assert_eq!(body["ts"], "1700000000.000101");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with(":white_check_mark: *[SEV2] Incident resolved*"),
        "{body}"
    );
}

#[tokio::test]
async fn slack_messages_a_person_directly_and_updates_in_their_direct_channel() {
    let mock = slack().await;
    // No broadcast channel: this one reaches people only.
    let ch = channel(
        &format!(
            "{{ name: slack-dm, kind: slack, token: {{secret: slack-bot}}, api_url: '{}' }}",
            mock.url("/api")
        ),
        &[("slack-bot", SLACK_TOKEN)],
    );
    assert!(!ch.broadcasts());
    let alice = contact(ContactKind::Slack, "U024BE7LH");
    let r = ch
        .deliver(&client(), Some(&alice), &message(EventKind::Opened), "k1")
        .await
        .unwrap();
    assert_eq!(
        r.provider_id.as_deref(),
        Some("D0DIRECT1:1700000000.000101")
    );
    let mut acked = message(EventKind::Acknowledged);
    acked.previous_id = r.provider_id;
    ch.deliver(&client(), Some(&alice), &acked, "k2")
        .await
        .unwrap();
    let reqs = mock.requests();
    assert_eq!(reqs[0].json()["channel"], "U024BE7LH");
    assert_eq!(reqs[1].path, "/api/chat.update");
    assert_eq!(reqs[1].json()["channel"], "D0DIRECT1");
    // A broadcast has nowhere to go.
    let e = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k3")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert!(e.to_string().contains("no channel to broadcast to"), "{e}");
}

#[tokio::test]
async fn slack_refusals_are_classified_and_a_vanished_message_is_posted_again() {
    let mock = slack().await;
    let e = slack_channel(&mock, "C0MISSING")
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "slack refused the message: channel_not_found"
    );
    let e = slack_channel(&mock, "C0BROKEN")
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    let e = slack_channel(&mock, "C0LIMITED")
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(!e.is_permanent());
    assert_eq!(
        e.to_string(),
        "slack rate limited the request (retry after 7 s)"
    );

    // The message to update is gone: a new one is posted.
    let ch = slack_channel(&mock, "C024BE91L");
    let mut msg = message(EventKind::Resolved);
    msg.previous_id = Some("C024BE91L:1000000000.000999".into());
    let r = ch.deliver(&client(), None, &msg, "k").await.unwrap();
    assert!(r.provider_id.unwrap().starts_with("C024BE91L:1700000000"));
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        &paths[paths.len() - 2..],
        ["/api/chat.update", "/api/chat.postMessage"]
    );

    // A token Slack does not know.
    let wrong = channel(
        &format!(
            "{{ name: s, kind: slack, token: {{secret: t}}, channel: C1, api_url: '{}' }}",
            mock.url("/api")
        ),
        &[("t", "xoxb-wrong-t0ken-value")],
    );
    let e = wrong
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(e.to_string(), "slack refused the message: invalid_auth");
    assert_no_secret(&format!("{e} {e:?} {wrong:?}"), &["xoxb-wrong-t0ken-value"]);
}

#[tokio::test]
async fn a_slack_incoming_webhook_gets_the_text_and_its_url_stays_secret() {
    // Slack answers `ok`, or an error status with its reason as plain text.
    let mock = Mock::start(|r| match r.path.as_str() {
        "/services/T000/B000/XXXXsecretXXXX" => Reply::text(200, "ok"),
        _ => Reply::text(404, "no_service"),
    })
    .await;
    let url = mock.url("/services/T000/B000/XXXXsecretXXXX");
    let ch = channel(
        "{ name: slack-hook, kind: slack_webhook, url: {secret: slack-hook-url} }",
        &[("slack-hook-url", &url)],
    );
    ch.deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap();
    let r = mock.one();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("*[SEV2] Incident opened*")
    );
    // A person cannot be reached through an incoming webhook.
    let e = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Slack, "U024BE7LH")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());

    let gone = channel(
        "{ name: slack-hook, kind: slack_webhook, url: {secret: slack-hook-url} }",
        &[(
            "slack-hook-url",
            &mock.url("/services/T000/B000/XXXXrevokedXXXX"),
        )],
    );
    let e = gone
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "slack webhook answered 404 Not Found: no_service"
    );
    // Nobody listening: the request error does not show the URL either.
    let dead_url = "http://127.0.0.1:9/services/T000/B000/XXXXdeadXXXX";
    let dead = channel(
        "{ name: slack-hook, kind: slack_webhook, url: {secret: slack-hook-url} }",
        &[("slack-hook-url", dead_url)],
    );
    let e = dead
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(!e.is_permanent());
    assert_no_secret(
        &format!("{e} {e:?} {dead:?} {gone:?}"),
        &["XXXXdeadXXXX", "XXXXrevokedXXXX", "/services/"],
    );
}

const MM_TOKEN: &str = "mm-bot-t0ken-9f8e7d";
const BOT: &str = "b0t0000000000000000000000a";
const ALICE: &str = "a11ce000000000000000000000";
const TOWN: &str = "t0wnsquare0000000000000000";
const DIRECT: &str = "d1rect00000000000000000000";

/// Mattermost's REST API v4 with a bearer token.
async fn mattermost() -> Mock {
    let n = AtomicU32::new(0);
    Mock::start(move |r| {
        if r.header("authorization") != Some(&format!("Bearer {MM_TOKEN}")) {
            return Reply::json(
                401,
                json!({"id": "api.context.session_expired.app_error", "message": "Invalid or expired session, please login again.", "status_code": 401}),
            );
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/api/v4/users/me") => Reply::json(200, json!({"id": BOT, "username": "firebreak"})),
            ("POST", "/api/v4/channels/direct") => {
                assert_eq!(r.json(), json!([BOT, ALICE]));
                Reply::json(201, json!({"id": DIRECT, "type": "D"}))
            }
            ("POST", "/api/v4/posts") => {
                let body = r.json();
                if body["channel_id"] == "f0rbidden00000000000000000" {
                    return Reply::json(403, json!({"id": "api.context.permissions.app_error", "message": "You do not have the appropriate permissions.", "status_code": 403}));
                }
                let i = n.fetch_add(1, Ordering::SeqCst);
                Reply::json(201, json!({"id": format!("p0st{i:022}"), "channel_id": body["channel_id"], "message": body["message"]}))
            }
            ("PUT", p) if p.starts_with("/api/v4/posts/") && p.ends_with("/patch") => {
                let id = &p["/api/v4/posts/".len()..p.len() - "/patch".len()];
                if id == "g0ne0000000000000000000000" {
                    return Reply::json(404, json!({"id": "app.post.get.app_error", "message": "Unable to get the post.", "status_code": 404}));
                }
                Reply::json(200, json!({"id": id, "message": r.json()["message"]}))
            }
            _ => Reply::json(404, json!({"message": "no such route", "status_code": 404})),
        }
    })
    .await
}

#[tokio::test]
async fn mattermost_posts_to_a_channel_updates_the_post_and_messages_a_person_directly() {
    let mock = mattermost().await;
    let ch = channel(
        &format!(
            "{{ name: mm, kind: mattermost, url: '{}', token: {{secret: mm-bot}}, channel_id: {TOWN} }}",
            mock.url("")
        ),
        &[("mm-bot", MM_TOKEN)],
    );
    let first = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k1")
        .await
        .unwrap();
    assert_eq!(
        first.provider_id.as_deref(),
        Some("p0st0000000000000000000000")
    );
    let mut acked = message(EventKind::Acknowledged);
    acked.previous_id = first.provider_id.clone();
    let second = ch.deliver(&client(), None, &acked, "k2").await.unwrap();
    assert_eq!(second.provider_id, first.provider_id);

    let alice = contact(ContactKind::Mattermost, ALICE);
    for key in ["k3", "k4"] {
        ch.deliver(&client(), Some(&alice), &message(EventKind::Opened), key)
            .await
            .unwrap();
    }
    let reqs = mock.requests();
    let calls: Vec<String> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /api/v4/posts",
            "PUT /api/v4/posts/p0st0000000000000000000000/patch",
            // The bot's own id is asked once, the direct channel each time.
            "GET /api/v4/users/me",
            "POST /api/v4/channels/direct",
            "POST /api/v4/posts",
            "POST /api/v4/channels/direct",
            "POST /api/v4/posts",
        ]
    );
    let post = reqs[0].json();
    assert_eq!(post["channel_id"], TOWN);
    assert!(
        post["message"]
            .as_str()
            .unwrap()
            .starts_with("**[SEV2] Incident opened**: payments: 502 from the card processor\n"),
        "{post}"
    );
    assert!(
        post["message"].as_str().unwrap().contains(
            "[Acknowledge](https://firebreak.example.com/i/01JINC0000000000000000000A/ack)"
        )
    );
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    assert!(
        reqs[1].json()["message"]
            .as_str()
            .unwrap()
            .starts_with("**[SEV2] Incident acknowledged**")
    );
    assert_eq!(reqs[4].json()["channel_id"], DIRECT);
}

#[tokio::test]
async fn mattermost_errors_carry_its_message_and_a_gone_post_is_posted_again() {
    let mock = mattermost().await;
    let ch = |token: &str, channel_id: &str| {
        channel(
            &format!(
                "{{ name: mm, kind: mattermost, url: '{}', token: {{secret: mm-bot}}, channel_id: {channel_id}, bot_user_id: {BOT} }}",
                mock.url("")
            ),
            &[("mm-bot", token)],
        )
    };
    let e = ch(MM_TOKEN, "f0rbidden00000000000000000")
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "mattermost answered 403 Forbidden: You do not have the appropriate permissions."
    );
    let e = ch("mm-wrong-t0ken-1234", TOWN)
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert!(e.to_string().contains("401 Unauthorized"), "{e}");
    assert_no_secret(&format!("{e} {e:?}"), &["mm-wrong-t0ken-1234"]);

    let mut msg = message(EventKind::Resolved);
    msg.previous_id = Some("g0ne0000000000000000000000".into());
    let r = ch(MM_TOKEN, TOWN)
        .deliver(&client(), None, &msg, "k")
        .await
        .unwrap();
    assert!(r.provider_id.unwrap().starts_with("p0st"));
}

#[tokio::test]
async fn a_mattermost_incoming_webhook_gets_the_text() {
    let mock = Mock::start(|_| Reply::text(200, "ok")).await;
    let ch = channel(
        &format!(
            "{{ name: mm-hook, kind: mattermost_webhook, url: '{}' }}",
            mock.url("/hooks/xxx-generatedkey-xxx")
        ),
        &[],
    );
    ch.deliver(&client(), None, &message(EventKind::Closed), "k")
        .await
        .unwrap();
    let r = mock.one();
    assert_eq!(r.path, "/hooks/xxx-generatedkey-xxx");
    assert!(
        r.json()["text"]
            .as_str()
            .unwrap()
            .starts_with("**[SEV2] Incident closed**")
    );
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_with_the_acknowledge_link_as_a_button() {
    // A Workflows webhook accepts with 202.
    let mock = Mock::start(|r| match r.path.as_str() {
        "/workflows/broken" => Reply::text(503, "try later").with_header("retry-after", "30"),
        "/workflows/bad" => Reply::json(400, json!({"error": {"code": "InvalidRequestContent", "message": "The input body for trigger 'manual' of type 'Request' did not match its schema definition."}})),
        _ => Reply::text(202, ""),
    })
    .await;
    let ch = channel(
        "{ name: teams-ops, kind: teams, url: {secret: teams-url}, templates: { by_event: { opened: { subject: 'NEW: {{ incident.title }}' } } } }",
        &[("teams-url", &mock.url("/workflows/ops?sig=s1gnature"))],
    );
    ch.deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap();
    let r = mock.one();
    assert_eq!(r.path, "/workflows/ops");
    assert_eq!(r.query.as_deref(), Some("sig=s1gnature"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(
        card["body"][0]["text"],
        "NEW: payments: 502 from the card processor"
    );
    assert_eq!(
        card["body"][1]["text"],
        "Incident opened by user:alice.\n\nID: 01JINC0000000000000000000A · State: open · P1 · service-outage"
    );
    assert_eq!(
        card["actions"],
        json!([{"type": "Action.OpenUrl", "title": "Acknowledge", "url": "https://firebreak.example.com/i/01JINC0000000000000000000A/ack"}])
    );

    // A person's Teams contact method is their own Workflows URL.
    let bob = contact(ContactKind::Teams, &mock.url("/workflows/bob"));
    ch.deliver(&client(), Some(&bob), &message(EventKind::Resolved), "k")
        .await
        .unwrap();
    let last = mock.requests().pop().unwrap();
    assert_eq!(last.path, "/workflows/bob");
    assert_eq!(
        last.json()["attachments"][0]["content"]["body"][0]["text"],
        "[SEV2] Incident resolved: payments: 502 from the card processor"
    );

    let broken = contact(ContactKind::Teams, &mock.url("/workflows/broken"));
    let e = ch
        .deliver(&client(), Some(&broken), &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(!e.is_permanent());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    let bad = contact(ContactKind::Teams, &mock.url("/workflows/bad"));
    let e = ch
        .deliver(&client(), Some(&bad), &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert!(e.to_string().contains("InvalidRequestContent"), "{e}");
    assert_no_secret(&format!("{ch:?}"), &["s1gnature"]);
}
