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
