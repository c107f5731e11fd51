//! Schedules at run time: a schedule made over the API answers who is on call and persists
//! in the directory's store; an override on a declared schedule changes who is paged;
//! overlapping overrides, unknown people, nonexistent local times and declared schedules are
//! refused naming why, and nothing changes; only those allowed may write.

use firebreak_domain::Clock;
use firebreak_proto::v1;
use firebreak_testkit::smtp::SmtpServer;

use crate::harness::Stack;

fn config(smtp: u16) -> String {
    format!(
        "users:
  - {{ name: alice, contact_methods: [{{ name: work, kind: email, address: alice@example.com }}] }}
  - {{ name: bob, contact_methods: [{{ name: work, kind: email, address: bob@example.com }}] }}
  - {{ name: carol, contact_methods: [{{ name: work, kind: email, address: carol@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {smtp}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
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
routes:
  - {{ policy: sre }}
"
    )
}

const NIGHT: &str = "name: night
time_zone: Europe/Berlin
combine: exclusive
layers:
  - { name: week, members: [bob, carol], rotation: { every: 1w, hand_off: '09:00', start: '2020-01-06' } }
";

async fn on_call(
    n: &mut v1::notification_service_client::NotificationServiceClient<
        firebreak_proto::access::AuthedChannel,
    >,
    schedule: &str,
) -> Result<Vec<String>, tonic::Status> {
    n.who_is_on_call(v1::WhoIsOnCallRequest {
        schedule: schedule.into(),
        at: None,
    })
    .await
    .map(|r| r.into_inner().schedules.remove(0).users)
}

#[tokio::test]
async fn schedules_and_overrides_change_at_run_time_and_bad_ones_change_nothing() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config(smtp.port)).await;
    let mut n = s.notifications.clone();

    // A run-time schedule, next to the declared one.
    n.put_schedule(v1::PutScheduleRequest { yaml: NIGHT.into() })
        .await
        .unwrap();
    let listed = n
        .list_schedules(v1::ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules;
    let names: Vec<(&str, bool)> = listed
        .iter()
        .map(|s| (s.name.as_str(), s.declared))
        .collect();
    assert_eq!(names, [("night", false), ("primary", true)]);
    assert_eq!(listed[0].updated_by, "user:admin");
    assert_eq!(on_call(&mut n, "night").await.unwrap().len(), 1);

    // Refused, naming why; nothing changes.
    let refused = |r: Result<tonic::Response<v1::PutScheduleResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err()
    };
    let declared = refused(
        n.put_schedule(v1::PutScheduleRequest {
            yaml: NIGHT.replace("name: night", "name: primary"),
        })
        .await,
    );
    assert_eq!(
        declared.code(),
        tonic::Code::FailedPrecondition,
        "{declared:?}"
    );
    assert!(declared.message().contains("declared in configuration"));
    let unknown = refused(
        n.put_schedule(v1::PutScheduleRequest {
            yaml: NIGHT.replace("[bob, carol]", "[bob, mallory]"),
        })
        .await,
    );
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("mallory"), "{unknown:?}");
    let no_such_time = refused(
        n.put_schedule(v1::PutScheduleRequest {
            yaml: NIGHT
                .replace("'09:00'", "'02:30'")
                .replace("2020-01-06", "2026-03-29"),
        })
        .await,
    );
    assert_eq!(no_such_time.code(), tonic::Code::InvalidArgument);
    assert!(
        no_such_time.message().contains("hand_off"),
        "{no_such_time:?}"
    );
    let huge = refused(
        n.put_schedule(v1::PutScheduleRequest {
            yaml: "x".repeat(300 * 1024),
        })
        .await,
    );
    assert!(huge.message().contains("yaml"), "{huge:?}");

    // Carol covers for alice for an hour: she is on call, and she is paged.
    let now = s.clock.now();
    let at = |secs: i64| {
        firebreak_proto::timestamp(firebreak_domain::Micros::from_unix_micros(
            now.unix_micros() + secs * 1_000_000,
        ))
    };
    let cover = n
        .add_override(v1::AddOverrideRequest {
            schedule: "primary".into(),
            r#override: Some(v1::ScheduleOverride {
                from: Some(at(-60)),
                to: Some(at(3_600)),
                replace: "alice".into(),
                with: "carol".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .r#override
        .unwrap();
    assert_eq!(on_call(&mut n, "primary").await.unwrap(), ["carol"]);
    // An overlapping override for alice is refused, and carol stays on call.
    let overlap = n
        .add_override(v1::AddOverrideRequest {
            schedule: "primary".into(),
            r#override: Some(v1::ScheduleOverride {
                from: Some(at(600)),
                to: Some(at(1_200)),
                replace: "alice".into(),
                with: "bob".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(overlap.code(), tonic::Code::InvalidArgument, "{overlap:?}");
    assert!(overlap.message().contains("overrides"), "{overlap:?}");
    assert_eq!(on_call(&mut n, "primary").await.unwrap(), ["carol"]);
    s.raise("checkout is down").await;
    let page = smtp.next().await;
    assert_eq!(page["rcpt_tos"], serde_json::json!(["carol@example.com"]));

    // The override removed, alice again; a removed one is not found twice.
    n.remove_override(v1::RemoveOverrideRequest {
        schedule: "primary".into(),
        id: cover.id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(on_call(&mut n, "primary").await.unwrap(), ["alice"]);
    let again = n
        .remove_override(v1::RemoveOverrideRequest {
            schedule: "primary".into(),
            id: cover.id,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);

    // Deleting: not a declared one (a policy pages it too); a run-time one goes.
    let e = n
        .delete_schedule(v1::DeleteScheduleRequest {
            name: "primary".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    n.delete_schedule(v1::DeleteScheduleRequest {
        name: "night".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        on_call(&mut n, "night").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn only_managers_write_schedules_and_responders_may_override() {
    let s = Stack::start(&crate::harness::empty_runbooks(), "users: [{ name: alice }]\nschedules:\n  - name: primary\n    time_zone: UTC\n    combine: exclusive\n    layers:\n      - { name: always, members: [alice], rotation: { every: 1d, hand_off: '00:00', start: '2020-01-01' } }\n").await;
    let viewer = s.person("vic", v1::Role::Viewer).await;
    let responder = s.person("rita", v1::Role::Responder).await;
    let mut as_viewer = viewer.notifications(&s).await;
    let mut as_responder = responder.notifications(&s).await;
    let put = v1::PutScheduleRequest {
        yaml: NIGHT.replace("[bob, carol]", "[alice]"),
    };
    let denied = as_viewer.put_schedule(put.clone()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let denied = as_responder.put_schedule(put).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A viewer reads; a responder swaps a shift.
    assert_eq!(
        as_viewer
            .list_schedules(v1::ListSchedulesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .schedules
            .len(),
        1
    );
    let now = s.clock.now();
    let at = |secs: i64| {
        firebreak_proto::timestamp(firebreak_domain::Micros::from_unix_micros(
            now.unix_micros() + secs * 1_000_000,
        ))
    };
    let added = as_responder
        .add_override(v1::AddOverrideRequest {
            schedule: "primary".into(),
            r#override: Some(v1::ScheduleOverride {
                from: Some(at(0)),
                to: Some(at(60)),
                add: "rita".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .r#override
        .unwrap();
    assert_eq!(added.created_by, "user:rita");
    let denied = as_viewer
        .remove_override(v1::RemoveOverrideRequest {
            schedule: "primary".into(),
            id: added.id,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}
