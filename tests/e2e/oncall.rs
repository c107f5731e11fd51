//! On call end to end: an incident opens, its route picks a policy, step 1 pages whoever the
//! schedule has on call by email through a real SMTP server, step 2 pages the next person if
//! nobody acknowledges, and an acknowledgement stops the rest. On the test's clock.

use firebreak_proto::v1;
use firebreak_testkit::smtp::SmtpServer;

use crate::harness::{Stack, escalation_cancelled};

#[tokio::test]
async fn the_person_on_call_is_emailed_then_the_next_step_until_someone_acknowledges() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let config = format!(
        "users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
  - {{ name: bob, contact_methods: [{{ name: work, kind: email, address: bob@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {port}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
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
      - {{ after_seconds: 600, targets: [{{ user: bob }}, {{ user: alice }}] }}
routes:
  - {{ policy: sre }}
",
        port = smtp.port
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let id = s.raise("checkout is down").await;

    // Step 1: the schedule's person, by email.
    let first = smtp.next().await;
    assert_eq!(
        first["rcpt_tos"],
        serde_json::json!(["alice@example.com"]),
        "{first:#}"
    );
    assert!(
        first["subject"]
            .as_str()
            .unwrap_or_default()
            .contains("checkout is down"),
        "{first:#}"
    );
    assert!(!smtp.more(std::time::Duration::from_millis(500)).await);

    // Nobody acknowledges: five minutes later step 2 pages bob.
    s.clock.advance(std::time::Duration::from_secs(301));
    let second = smtp.next().await;
    assert_eq!(
        second["rcpt_tos"],
        serde_json::json!(["bob@example.com"]),
        "{second:#}"
    );

    // Bob acknowledges: step 3 never comes.
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: String::new(),
        })
        .await
        .unwrap();
    escalation_cancelled(&s, &id).await;
    s.clock.advance(std::time::Duration::from_secs(600));
    assert!(
        !smtp.more(std::time::Duration::from_secs(2)).await,
        "nothing after the acknowledgement"
    );
}

/// On call's read methods take names from callers: each is bounded, and a hostile one is
/// INVALID_ARGUMENT naming its field (an unknown one NOT_FOUND), never a panic.
#[tokio::test]
async fn hostile_on_call_requests_are_refused_naming_the_field() {
    let s = Stack::start(&crate::harness::empty_runbooks(), "{}\n").await;
    let mut n = s.notifications.clone();
    let long = "x".repeat(300);
    let code_and = |r: Result<tonic::Response<()>, tonic::Status>| match r {
        Ok(_) => (tonic::Code::Ok, String::new()),
        Err(e) => (e.code(), e.message().to_owned()),
    };
    let cases: Vec<(&str, tonic::Code, (tonic::Code, String))> = vec![
        (
            "policy",
            tonic::Code::InvalidArgument,
            code_and(
                n.test_escalation(v1::TestEscalationRequest {
                    policy: long.clone(),
                    at: None,
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "schedule",
            tonic::Code::InvalidArgument,
            code_and(
                n.who_is_on_call(v1::WhoIsOnCallRequest {
                    schedule: "a\u{0}b".into(),
                    at: None,
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "user",
            tonic::Code::InvalidArgument,
            code_and(
                n.list_shifts(v1::ListShiftsRequest {
                    schedule: String::new(),
                    user: long.clone(),
                    ..Default::default()
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "schedule",
            tonic::Code::NotFound,
            code_and(
                n.list_shifts(v1::ListShiftsRequest {
                    schedule: "nope".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "kind",
            tonic::Code::InvalidArgument,
            code_and(
                n.preview_template(v1::PreviewTemplateRequest {
                    channel: "log".into(),
                    // A kind no value has, and one of the paging engine's rows.
                    kind: 99,
                    incident: Some(v1::Incident::default()),
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "incident",
            tonic::Code::InvalidArgument,
            code_and(
                n.preview_template(v1::PreviewTemplateRequest {
                    channel: "log".into(),
                    kind: 0,
                    incident: None,
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "channel",
            tonic::Code::InvalidArgument,
            code_and(
                n.preview_template(v1::PreviewTemplateRequest {
                    channel: long.clone(),
                    kind: 0,
                    incident: Some(v1::Incident::default()),
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
        (
            "status",
            tonic::Code::InvalidArgument,
            code_and(
                n.list_deliveries(v1::ListDeliveriesRequest {
                    status: 99,
                    ..Default::default()
                })
                .await
                .map(|r| r.map(|_| ())),
            ),
        ),
    ];
    for (field, want, (got, message)) in cases {
        assert_eq!(got, want, "{field}: {message}");
        assert!(message.contains(field), "{field}: {message}");
    }
}
