//! Maintenance windows end to end: an incident raised inside a window opens and is on the
//! timeline but pages nobody until the window ends; one outside it pages at once, once.
//! Emails reach a real SMTP server; time moves on the test's clock. And windows the
//! configuration gets wrong are refused naming the field. Windows made at run time hold paging
//! the same way, until deleted; bad ones are refused and change nothing.

use std::time::Duration;

use firebreak_proto::v1;
use firebreak_testkit::smtp::SmtpServer;

use crate::harness::{Stack, eventually};

/// `now - back`, as a local date-time in UTC to the minute (a window's `start`).
fn local_start(back: Duration) -> String {
    let t = time::OffsetDateTime::now_utc() - back;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn subject_of(mail: &serde_json::Value) -> String {
    mail["subject"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_incident_inside_a_window_is_recorded_but_pages_nobody_until_it_ends() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    // A daily two-hour window that began an hour ago, over the checkout service.
    let config = format!(
        "users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {port}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
escalation_policies:
  - name: sre
    steps:
      - targets: [{{ user: alice }}]
routes:
  - {{ policy: sre }}
maintenance:
  - name: checkout-db
    time_zone: UTC
    start: '{start}'
    duration: 2h
    rrule: FREQ=DAILY
    services: [checkout]
    comment: nightly database upgrade
",
        port = smtp.port,
        start = local_start(Duration::from_secs(3600)),
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;

    // Inside the window: the incident opens, the timeline says which window holds paging
    // back and until when, and nobody is emailed.
    let held = s
        .raise_with_labels("checkout is down", &[("service", "checkout")])
        .await;
    assert!(!held.is_empty(), "the incident opened");
    let entry = eventually("the timeline to say paging is suppressed", || {
        let mut incidents = s.incidents.clone();
        let id = held.clone();
        async move {
            incidents
                .get_timeline(v1::GetTimelineRequest {
                    id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries
                .into_iter()
                .find(|e| e.kind == "paging_suppressed")
        }
    })
    .await;
    let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
    assert_eq!(data["window"], "checkout-db", "{data}");
    assert_eq!(data["policy"], "sre", "{data}");
    assert_eq!(data["step"], 1, "{data}");
    assert_eq!(entry.actor, "notification");
    let incident = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: held.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(incident.state(), v1::IncidentState::Open);
    assert!(
        !smtp.more(Duration::from_secs(1)).await,
        "nobody is paged inside the window"
    );

    // The window is listed as in force, ending where the timeline says.
    let windows = s
        .notifications
        .list_maintenance_windows(v1::ListMaintenanceWindowsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .windows;
    assert_eq!(windows.len(), 1);
    let w = &windows[0];
    assert!(w.in_force);
    assert_eq!(w.occurrences.len(), 3);
    // More occurrences than a window lists is refused naming the field.
    let refused = s
        .notifications
        .list_maintenance_windows(v1::ListMaintenanceWindowsRequest {
            occurrences: 21,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("occurrences"), "{refused:?}");
    let end = w.current.as_ref().and_then(|c| c.end).unwrap();
    let until = time::OffsetDateTime::from_unix_timestamp(end.seconds).unwrap();
    assert_eq!(
        data["until"],
        until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        "{data}"
    );

    // Outside the window's scope: paged at once, once.
    s.raise_with_labels("search is down", &[("service", "search")])
        .await;
    let page = smtp.next().await;
    assert_eq!(page["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert!(subject_of(&page).contains("search is down"), "{page:#}");
    assert!(
        !smtp.more(Duration::from_secs(1)).await,
        "one page for the incident outside the window"
    );

    // The window ends with the checkout incident still open: it is paged then, once.
    s.clock.advance(Duration::from_secs(2 * 3600));
    let late = smtp.next().await;
    assert_eq!(late["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert!(subject_of(&late).contains("checkout is down"), "{late:#}");
    assert!(
        !smtp.more(Duration::from_secs(2)).await,
        "nothing more after the window"
    );
    let after = s
        .notifications
        .list_maintenance_windows(v1::ListMaintenanceWindowsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .windows;
    assert!(!after[0].in_force);
}

#[tokio::test]
async fn an_incident_acknowledged_inside_a_window_is_never_paged() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let config = format!(
        "users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {port}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
escalation_policies:
  - name: sre
    steps:
      - targets: [{{ user: alice }}]
routes:
  - {{ policy: sre }}
maintenance:
  - name: staging
    time_zone: UTC
    start: '{start}'
    duration: 2h
    rrule: FREQ=WEEKLY
    matchers: ['env=~\"stag.*\"']
",
        port = smtp.port,
        start = local_start(Duration::from_secs(3600)),
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let id = s
        .raise_with_labels("staging is slow", &[("env", "staging")])
        .await;
    eventually("the held step", || {
        let mut n = s.notifications.clone();
        let id = id.clone();
        async move {
            let list = n
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            // The step that came due is done and its replacement waits for the window's end.
            (list
                .iter()
                .filter(|d| v1::DeliveryKind::shown(d.delivery_kind) == "escalation.step")
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: String::new(),
        })
        .await
        .unwrap();
    crate::harness::escalation_cancelled(&s, &id).await;
    s.clock.advance(Duration::from_secs(3 * 3600));
    assert!(
        !smtp.more(Duration::from_secs(2)).await,
        "an acknowledged incident is not paged when the window ends"
    );
}

#[tokio::test]
async fn windows_the_configuration_gets_wrong_are_refused_naming_the_field() {
    let window = |fields: &str| {
        format!(
            "maintenance:\n  - {{ name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 3h, services: [checkout], {fields} }}\n"
        )
    };
    let cases = [
        (
            window("rrule: 'FREQ=HOURLY'"),
            "maintenance[0].rrule: FREQ=HOURLY is not supported",
        ),
        (
            window("rrule: 'FREQ=DAILY;BYSETPOS=-1'"),
            "maintenance[0].rrule: BYSETPOS is not supported",
        ),
        (
            window("rrule: 'FREQ=DAILY;COUNT=3;UNTIL=20270101'"),
            "maintenance[0].rrule: COUNT and UNTIL",
        ),
        (
            "maintenance:\n  - { name: w, time_zone: Mars/Olympus_Mons, start: '2026-01-01T01:00', duration: 3h, services: [checkout] }\n".to_owned(),
            "maintenance[0].time_zone",
        ),
        (
            "maintenance:\n  - { name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 0h, services: [checkout] }\n".to_owned(),
            "maintenance[0].duration: must be more than zero",
        ),
        (
            "maintenance:\n  - { name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 8d, services: [checkout] }\n".to_owned(),
            "maintenance[0].duration",
        ),
        (
            "maintenance:\n  - { name: w, time_zone: UTC, start: '2026-01-01T01:00Z', duration: 1h, services: [checkout] }\n".to_owned(),
            "maintenance[0].start",
        ),
        (
            window("matchers: ['job=~\"(\"']"),
            "maintenance[0].matchers[0].value",
        ),
        (
            "maintenance:\n  - { name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 1h }\n".to_owned(),
            "maintenance[0]: give services",
        ),
        (
            window("hours: 3"),
            "unknown field `hours`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    for (yaml, want) in cases {
        std::fs::write(&file, &yaml).unwrap();
        let e = firebreak::Config::load(Some(&file), Vec::new()).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// A run-time window over checkout, from a minute ago for two hours, as YAML.
fn checkout_deploy() -> String {
    format!(
        "name: checkout-deploy\ntime_zone: UTC\nstart: '{}'\nduration: 2h\nservices: [checkout]\ncomment: release 42\n",
        local_start(Duration::from_secs(60))
    )
}

#[tokio::test]
async fn a_window_made_at_run_time_holds_paging_until_it_is_deleted_and_bad_ones_change_nothing() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let config = format!(
        "users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {port}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
escalation_policies:
  - name: sre
    steps:
      - targets: [{{ user: alice }}]
routes:
  - {{ policy: sre }}
maintenance:
  - {{ name: frozen, time_zone: UTC, start: '2020-01-01T00:00', duration: 1h, services: [billing] }}
",
        port = smtp.port,
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let operator = s.person("otto", v1::Role::ItOperator).await;
    let responder = s.person("rita", v1::Role::Responder).await;
    let mut as_operator = operator.notifications(&s).await;
    let mut as_responder = responder.notifications(&s).await;
    let put = |yaml: String| v1::PutMaintenanceWindowRequest { yaml };

    // A responder may not make one; an IT operator may.
    let denied = as_responder
        .put_maintenance_window(put(checkout_deploy()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let made = as_operator
        .put_maintenance_window(put(checkout_deploy()))
        .await
        .unwrap()
        .into_inner()
        .window
        .unwrap();
    assert!(made.in_force && !made.declared, "{made:?}");
    assert_eq!(
        (made.name.as_str(), made.updated_by.as_str()),
        ("checkout-deploy", "user:otto")
    );

    // It holds paging back as a configured one does: recorded, nobody emailed.
    let held = s
        .raise_with_labels("checkout is down", &[("service", "checkout")])
        .await;
    let entry = eventually("the timeline to say paging is suppressed", || {
        let mut incidents = s.incidents.clone();
        let id = held.clone();
        async move {
            incidents
                .get_timeline(v1::GetTimelineRequest {
                    id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries
                .into_iter()
                .find(|e| e.kind == "paging_suppressed")
        }
    })
    .await;
    let data: serde_json::Value = serde_json::from_str(&entry.data).unwrap();
    assert_eq!(data["window"], "checkout-deploy", "{data}");
    assert!(!smtp.more(Duration::from_secs(1)).await, "nobody is paged");

    // Bad windows are refused naming the field, and change nothing.
    let listed = |n: &mut v1::notification_service_client::NotificationServiceClient<_>| {
        let mut n = n.clone();
        async move {
            n.list_maintenance_windows(v1::ListMaintenanceWindowsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .windows
                .into_iter()
                .map(|w| (w.name, w.declared, w.duration))
                .collect::<Vec<_>>()
        }
    };
    let before = listed(&mut s.notifications).await;
    assert_eq!(
        before,
        [
            ("frozen".to_owned(), true, "1h".to_owned()),
            ("checkout-deploy".to_owned(), false, "2h".to_owned())
        ]
    );
    let cases = [
        (
            checkout_deploy().replace("checkout-deploy", "frozen"),
            tonic::Code::FailedPrecondition,
            "frozen",
        ),
        (
            format!("{}comment: {}\n", checkout_deploy(), "x".repeat(17 * 1024)),
            tonic::Code::InvalidArgument,
            "yaml",
        ),
        (
            format!("{}owner: bob\n", checkout_deploy()),
            tonic::Code::InvalidArgument,
            "owner",
        ),
        (
            checkout_deploy().replace("services: [checkout]\n", ""),
            tonic::Code::InvalidArgument,
            "services, integrations or a matcher",
        ),
        (
            format!("{}rrule: FREQ=SECONDLY\n", checkout_deploy()),
            tonic::Code::InvalidArgument,
            "yaml.rrule",
        ),
        (
            checkout_deploy().replace("duration: 2h", "duration: 2h; DROP TABLE"),
            tonic::Code::InvalidArgument,
            "yaml.duration",
        ),
        (
            checkout_deploy()
                .replace("2h", "3h")
                .replace("[checkout]", "[\"\"]"),
            tonic::Code::InvalidArgument,
            "yaml.services[0]",
        ),
    ];
    for (yaml, code, field) in cases {
        let e = as_operator
            .put_maintenance_window(put(yaml))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(field), "{field}: {e:?}");
    }
    for (name, code) in [
        ("frozen", tonic::Code::FailedPrecondition),
        ("nope", tonic::Code::NotFound),
        ("", tonic::Code::InvalidArgument),
    ] {
        let e = as_operator
            .delete_maintenance_window(v1::DeleteMaintenanceWindowRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e:?}");
    }
    assert_eq!(listed(&mut s.notifications).await, before);

    // Deleted, it holds nothing more: the next checkout incident pages at once, once.
    as_operator
        .delete_maintenance_window(v1::DeleteMaintenanceWindowRequest {
            name: "checkout-deploy".into(),
        })
        .await
        .unwrap();
    s.raise_with_labels("checkout is down again", &[("service", "checkout")])
        .await;
    let page = smtp.next().await;
    assert!(
        subject_of(&page).contains("checkout is down again"),
        "{page:#}"
    );
    assert!(!smtp.more(Duration::from_secs(1)).await, "one page");
    assert_eq!(listed(&mut s.notifications).await, before[..1]);

    // Both writes are in the audit log under the window's name, by the operator.
    let written = eventually("the writes to be audited", || {
        let mut audit = s.audit();
        async move {
            let entries = audit
                .list_audit(v1::ListAuditRequest {
                    actor: "user:otto".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries;
            let mut ok: Vec<String> = entries
                .into_iter()
                .filter(|e| e.outcome == "ok" && e.target == "maintenance:checkout-deploy")
                .map(|e| e.method.rsplit('/').next().unwrap_or_default().to_owned())
                .collect();
            ok.sort();
            (ok.len() == 2).then_some(ok)
        }
    })
    .await;
    assert_eq!(written, ["DeleteMaintenanceWindow", "PutMaintenanceWindow"]);
}
