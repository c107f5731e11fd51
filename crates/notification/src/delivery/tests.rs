//! Delivery tests: a notification service on a real store (SQLite) and a manual clock, with
//! local HTTP servers playing Slack and Twilio, its dispatcher run by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use firebreak_bus::EmbeddedBus;
use firebreak_domain::people::{ContactKind, ContactMethod};
use firebreak_domain::{Clock, DeliveryState, ManualClock};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::sqlite::{SqliteBusLog, SqliteNotificationStore};
use firebreak_storage::{DeliveryRecord, DirectoryStore, NotificationStore, Outbox, UserRecord};
use serde_json::{Value, json};

use super::*;
use crate::{Channel, Directory, EscalationPolicy};

const SID: &str = "AC0123456789abcdef0123456789abcdef";

/// A local server answering as `respond` says (status, headers, JSON body), recording each
/// request's path and body.
struct Mock {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Mock {
    async fn start(
        respond: impl Fn(&str, &str) -> (u16, Vec<(&'static str, String)>, Value)
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let respond = Arc::new(respond);
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, _: HeaderMap, body: Bytes| {
            let (log, respond) = (log.clone(), respond.clone());
            async move {
                let body = String::from_utf8_lossy(&body).into_owned();
                let (status, headers, answer) = respond(uri.path(), &body);
                log.lock().unwrap().push((uri.path().to_owned(), body));
                let mut resp =
                    (StatusCode::from_u16(status).unwrap(), answer.to_string()).into_response();
                for (k, v) in headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Slack's Web API: posts answer with the channel and a `ts`, updates with the same; a
/// member id `UFAIL` is not found.
async fn slack() -> Mock {
    Mock::start(|path, body| {
        let body: Value = serde_json::from_str(body).unwrap_or_default();
        if body["channel"] == "UFAIL" {
            return (200, vec![], json!({"ok": false, "error": "user_not_found"}));
        }
        if body["channel"] == "CBUSY" {
            return (
                429,
                vec![("retry-after", "120".into())],
                json!({"ok": false, "error": "ratelimited"}),
            );
        }
        let ts = if path.ends_with("chat.update") {
            body["ts"].as_str().unwrap_or_default().to_owned()
        } else {
            "1503435956.000247".to_owned()
        };
        (
            200,
            vec![],
            json!({"ok": true, "channel": body["channel"], "ts": ts}),
        )
    })
    .await
}

/// Twilio's REST API: a message or call SID per request, or error 21211 for `+15550000999`.
async fn twilio() -> Mock {
    let n = std::sync::atomic::AtomicU32::new(0);
    Mock::start(move |path, body| {
        if body.contains("To=%2B15550000999") {
            return (
                400,
                vec![],
                json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
            );
        }
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let prefix = if path.ends_with("Calls.json") { "CA" } else { "SM" };
        (201, vec![], json!({"sid": format!("{prefix}{i:032x}"), "status": "queued"}))
    })
    .await
}

struct Rig {
    n: Notification,
    store: Arc<SqliteNotificationStore>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(
        channels: &[String],
        policies: &str,
        users: &[(&str, Vec<ContactMethod>)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteNotificationStore::open(&dir.path().join("n.db"), false)
                .await
                .unwrap(),
        );
        let log = SqliteBusLog::open(&dir.path().join("bus.db"), false)
            .await
            .unwrap();
        let bus = Arc::new(EmbeddedBus::new(Arc::new(log)));
        let mut all = vec![Channel::log()];
        for c in channels {
            let c: Channel = serde_yaml::from_str(c).unwrap();
            all.push(c.with_secrets(&|_| Some("s3cret".into())).unwrap());
        }
        let policies: Vec<EscalationPolicy> = serde_yaml::from_str(policies).unwrap();
        let clock = Arc::new(ManualClock::default());
        for (name, methods) in users {
            store
                .insert_user(&UserRecord {
                    name: (*name).into(),
                    display_name: String::new(),
                    email: String::new(),
                    time_zone: String::new(),
                    kind: firebreak_domain::access::SubjectKind::User,
                    declared: false,
                    created_at: clock.now(),
                    contact_methods: methods.clone(),
                    notification_rules: Vec::new(),
                })
                .await
                .unwrap();
        }
        let n = Notification::new(store.clone(), bus, all, policies)
            .unwrap()
            .with_directory(Directory::new(store.clone()))
            .with_clock(clock.clone());
        Self {
            n,
            store,
            clock,
            _dir: dir,
        }
    }

    /// Runs the dispatcher until nothing is due.
    async fn settle(&self) {
        while self.n.dispatch_due().await.unwrap() > 0 {}
    }

    async fn all(&self) -> Vec<DeliveryRecord> {
        let mut all = self.store.deliveries(None, 1000).await.unwrap();
        all.reverse();
        all
    }

    async fn pages(&self) -> Vec<DeliveryRecord> {
        let mut pages: Vec<_> = self
            .all()
            .await
            .into_iter()
            .filter(|d| d.kind == paging::PAGE)
            .collect();
        pages.sort_by_key(|d| d.event_id.len());
        pages
    }

    /// The `DeliveryChanged` events waiting in the outbox, as `STATUS channel`.
    async fn events(&self) -> Vec<String> {
        self.store
            .pending(1000)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| match firebreak_proto::decode_event(&r.event.payload) {
                Ok(v1::Event {
                    payload: Some(Payload::DeliveryChanged(c)),
                    ..
                }) => Some(format!(
                    "{} {}",
                    c.delivery_state().map_or("unknown", |s| s.as_str()),
                    c.channel
                )),
                _ => None,
            })
            .collect()
    }

    /// Pages `user` through the policy `p` (its first step, due now).
    async fn page(&self, event: &str) {
        let step = self.n.first_step(
            "p",
            event,
            "inc-1",
            json!({"id": "inc-1", "title": "db down"}),
            self.clock.now(),
        );
        self.store.insert_deliveries(&[step]).await.unwrap();
    }
}

fn method(name: &str, kind: ContactKind, address: &str) -> ContactMethod {
    ContactMethod {
        name: name.into(),
        kind,
        address: address.into(),
    }
}

fn twilio_channel(mock: &Mock) -> String {
    format!(
        "{{ name: phone, kind: twilio, account_sid: {SID}, auth_token: {{secret: tw}}, from: '+15557654321', api_url: '{}' }}",
        mock.url
    )
}

fn slack_channel(mock: &Mock, channel: &str) -> String {
    format!(
        "{{ name: ops, kind: slack, token: {{secret: slack-bot}}, {channel} api_url: '{}' }}",
        mock.url
    )
}

const ALICE_POLICY: &str = "- { name: p, steps: [{ targets: [{ user: alice }] }] }";

fn incident_event(id: &str, kind: v1::IncidentChange) -> v1::Event {
    v1::Event {
        id: id.into(),
        payload: Some(Payload::IncidentChanged(v1::IncidentChanged {
            incident: Some(v1::Incident {
                id: "inc-1".into(),
                title: "db down".into(),
                severity: 2,
                ..Default::default()
            }),
            actor: "user:alice".into(),
            kind: kind as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_incidents_slack_message_is_posted_once_then_updated_as_it_changes() {
    let slack = slack().await;
    let rig = Rig::start(&[slack_channel(&slack, "channel: C1,")], "[]", &[]).await;
    for (id, kind) in [
        ("e-open", v1::IncidentChange::Opened),
        ("e-ack", v1::IncidentChange::Acknowledged),
    ] {
        let planned = rig.n.plan(&incident_event(id, kind));
        rig.store.insert_deliveries(&planned).await.unwrap();
        rig.settle().await;
    }
    let seen = slack.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].0, "/chat.postMessage");
    assert_eq!(seen[1].0, "/chat.update");
    let update: Value = serde_json::from_str(&seen[1].1).unwrap();
    assert_eq!(update["channel"], "C1");
    assert_eq!(update["ts"], "1503435956.000247");
    assert!(
        update["text"].as_str().unwrap().contains("acknowledged"),
        "{update}"
    );
    // Both delivered, both holding the message's id; the list shows it.
    let ops: Vec<_> = rig
        .all()
        .await
        .into_iter()
        .filter(|d| d.channel == "ops")
        .collect();
    assert_eq!(ops.len(), 2);
    for d in &ops {
        assert_eq!(d.status, DeliveryState::Delivered);
        assert_eq!(d.provider_id.as_deref(), Some("C1:1503435956.000247"));
        assert!(d.sent_at.is_some() && d.delivered_at == d.sent_at);
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let slack = slack().await;
    let rig = Rig::start(&[slack_channel(&slack, "channel: CBUSY,")], "[]", &[]).await;
    let planned = rig
        .n
        .plan(&incident_event("e-open", v1::IncidentChange::Opened));
    rig.store.insert_deliveries(&planned).await.unwrap();
    let before = rig.clock.now();
    rig.settle().await;
    let d = rig
        .all()
        .await
        .into_iter()
        .find(|d| d.channel == "ops")
        .unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryState::Pending, 1));
    let wait = d.next_attempt_at.saturating_duration_since(before);
    assert!(
        wait >= Duration::from_secs(120) && wait < Duration::from_secs(125),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_failed_page_fails_over_once_through_each_next_method_until_the_last() {
    let (tw, slack) = (twilio().await, slack().await);
    let rig = Rig::start(
        &[twilio_channel(&tw), slack_channel(&slack, "")],
        ALICE_POLICY,
        &[(
            "alice",
            vec![
                method("bad-sms", ContactKind::Sms, "+15550000999"),
                // No Teams channel is configured: skipped.
                method("desk", ContactKind::Teams, "https://example.com/teams"),
                method("phone", ContactKind::Voice, "+15551230000"),
                method("chat", ContactKind::Slack, "UFAIL"),
            ],
        )],
    )
    .await;
    rig.page("e1").await;
    rig.settle().await;

    // The text is refused for good; the call is placed (sent: Twilio took it).
    let pages = rig.pages().await;
    let summary = |pages: &[DeliveryRecord]| {
        pages
            .iter()
            .map(|d| format!("{} {}", d.channel, d.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary(&pages),
        ["user:alice/bad-sms failed", "user:alice/phone sent"]
    );
    let call = &pages[1];
    assert_eq!(call.event_id, format!("{}+failover", pages[0].event_id));
    assert_eq!(call.destination, "voice:+15551230000");
    let sid = call.provider_id.clone().unwrap();
    assert!(sid.starts_with("CA"), "{sid}");

    // Failing over again (a retry, a replica, a restart) inserts nothing.
    assert_eq!(rig.n.fail_over(&pages[0]).await.unwrap(), 0);

    // Twilio reports the call unanswered: the next method, Slack, is paged, once.
    let failed = ProviderReport::Failed("twilio: no-answer".into());
    assert!(rig.n.provider_report(&sid, failed.clone()).await.unwrap());
    assert!(!rig.n.provider_report(&sid, failed).await.unwrap());
    assert!(
        !rig.n
            .provider_report(&sid, ProviderReport::Delivered)
            .await
            .unwrap()
    );
    rig.settle().await;
    let pages = rig.pages().await;
    assert_eq!(
        summary(&pages),
        [
            "user:alice/bad-sms failed",
            "user:alice/phone failed",
            "user:alice/chat failed"
        ]
    );
    assert_eq!(pages[1].last_error, "twilio: no-answer");
    // The last method failing ends it: nothing more, now or later.
    rig.clock.advance(Duration::from_secs(3600));
    rig.settle().await;
    assert_eq!(rig.pages().await.len(), 3);
    assert_eq!(tw.requests().len(), 2);
    assert_eq!(slack.requests().len(), 1);
    assert_eq!(
        rig.events().await,
        [
            "failed user:alice/bad-sms",
            "sent user:alice/phone",
            "failed user:alice/phone",
            "failed user:alice/chat"
        ]
    );
}

/// Acknowledged meanwhile: the call's failure report is recorded, and nobody else is paged.
#[tokio::test]
async fn a_page_failing_after_the_acknowledgement_fails_over_to_nobody() {
    let (tw, slack) = (twilio().await, slack().await);
    let rig = Rig::start(
        &[twilio_channel(&tw), slack_channel(&slack, "")],
        ALICE_POLICY,
        &[(
            "alice",
            vec![
                method("phone", ContactKind::Voice, "+15551230000"),
                method("chat", ContactKind::Slack, "U0ALICE"),
            ],
        )],
    )
    .await;
    rig.page("e1").await;
    rig.settle().await;
    let call = rig.pages().await.pop().unwrap();
    assert_eq!(call.status, DeliveryState::Sent);
    assert_eq!(
        rig.store
            .mark_acknowledged(&call.incident_id, rig.clock.now(), "user:alice")
            .await
            .unwrap(),
        1
    );
    let sid = call.provider_id.clone().unwrap();
    let failed = ProviderReport::Failed("twilio: no-answer".into());
    assert!(rig.n.provider_report(&sid, failed).await.unwrap());
    rig.settle().await;
    let pages = rig.pages().await;
    assert_eq!(pages.len(), 1, "no failover page");
    assert_eq!(pages[0].status, DeliveryState::Failed);
    assert_eq!(pages[0].acknowledged_by, "user:alice");
    assert!(slack.requests().is_empty());
}

#[tokio::test]
async fn a_providers_delivered_report_moves_a_sent_page_once() {
    let tw = twilio().await;
    let rig = Rig::start(
        &[twilio_channel(&tw)],
        ALICE_POLICY,
        &[(
            "alice",
            vec![
                method("phone", ContactKind::Sms, "+15551230000"),
                method("home", ContactKind::Voice, "+15551230001"),
            ],
        )],
    )
    .await;
    rig.page("e1").await;
    rig.settle().await;
    let sent = rig.pages().await.pop().unwrap();
    assert_eq!(sent.status, DeliveryState::Sent);
    let sid = sent.provider_id.clone().unwrap();
    // Sent is final for retries: much later, nothing is attempted again.
    rig.clock.advance(Duration::from_secs(3600));
    assert_eq!(rig.n.dispatch_due().await.unwrap(), 0);

    assert!(
        rig.n
            .provider_report(&sid, ProviderReport::Delivered)
            .await
            .unwrap()
    );
    assert!(
        !rig.n
            .provider_report(&sid, ProviderReport::Delivered)
            .await
            .unwrap()
    );
    // A contrary report after the fact changes nothing and pages nobody else.
    assert!(
        !rig.n
            .provider_report(&sid, ProviderReport::Failed("late".into()))
            .await
            .unwrap()
    );
    let pages = rig.pages().await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].status, DeliveryState::Delivered);
    assert!(pages[0].delivered_at.is_some());
    assert_eq!(
        rig.events().await,
        ["sent user:alice/phone", "delivered user:alice/phone"]
    );
    assert!(
        !rig.n
            .provider_report("SM-nobody", ProviderReport::Delivered)
            .await
            .unwrap()
    );

    // Bounded input, the field named.
    let long = "x".repeat(513);
    for (id, report, why) in [
        ("", ProviderReport::Delivered, "provider_id: required"),
        (
            long.as_str(),
            ProviderReport::Delivered,
            "provider_id: at most 512 bytes",
        ),
        (
            "SM\n1",
            ProviderReport::Delivered,
            "provider_id: must not hold control characters",
        ),
        (
            "SM1",
            ProviderReport::Failed("r".repeat(1025)),
            "reason: at most 1024 bytes",
        ),
    ] {
        let e = rig.n.provider_report(id, report).await.unwrap_err();
        assert_eq!(e.to_string(), why);
    }
}

#[tokio::test]
async fn pages_to_one_number_are_throttled_not_dropped_and_their_attempts_not_counted() {
    let tw = twilio().await;
    let rig = Rig::start(
        &[twilio_channel(&tw)],
        ALICE_POLICY,
        &[(
            "alice",
            vec![method("phone", ContactKind::Sms, "+15551230000")],
        )],
    )
    .await;
    // Two incidents page alice at once.
    rig.page("e1").await;
    rig.page("e2").await;
    rig.settle().await;
    assert_eq!(tw.requests().len(), 1);
    let pages = rig.pages().await;
    let (sent, held): (Vec<_>, Vec<_>) = pages
        .into_iter()
        .partition(|d| d.status == DeliveryState::Sent);
    let (sent, held) = (&sent[0], &held[0]);
    assert_eq!((held.status, held.attempts), (DeliveryState::Pending, 0));
    assert!(
        held.last_error.starts_with("throttled"),
        "{}",
        held.last_error
    );
    assert_eq!(
        held.next_attempt_at,
        sent.sent_at.unwrap() + Duration::from_secs(60)
    );
    // Before the minute is out it stays held; then it goes.
    rig.clock.advance(Duration::from_secs(30));
    rig.settle().await;
    assert_eq!(tw.requests().len(), 1);
    rig.clock.advance(Duration::from_secs(31));
    rig.settle().await;
    assert_eq!(tw.requests().len(), 2);
    assert!(
        rig.pages()
            .await
            .iter()
            .all(|d| d.status == DeliveryState::Sent && d.attempts == 1)
    );
}

#[test]
fn the_next_method_skips_what_no_channel_reaches_and_ends_at_the_last() {
    let methods = [
        method("a", ContactKind::Sms, "+15550000001"),
        method("b", ContactKind::Teams, "https://example.com/t"),
        method("c", ContactKind::Email, "a@example.com"),
    ];
    let no_teams = |k: ContactKind| k != ContactKind::Teams;
    assert_eq!(
        next_method(&methods, "a", no_teams).map(|m| m.name.as_str()),
        Some("c")
    );
    assert_eq!(
        next_method(&methods, "a", |_| true).map(|m| m.name.as_str()),
        Some("b")
    );
    assert_eq!(next_method(&methods, "c", |_| true), None);
    assert_eq!(next_method(&methods, "gone", |_| true), None);
}
