//! Every List pages (docs/contracts.md): walked with pages smaller than the list, each one
//! reaches every item exactly once and in the order a single page gives them; a token from
//! another list, or one that is not a token, is INVALID_ARGUMENT naming `page_token`.
//! (ListIncidents, GetTimeline, ListRuns, ListApprovals, ListFollowUps and ListAudit are walked
//! in their own modules and unit tests; ListDeliveries here.)

use std::future::Future;

use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1;
use tonic::Code;

use crate::harness::{Stack, eventually};

/// Walks a list with `page` (given the page token, it answers the page's item keys and its
/// next token): the keys in order, and the number of pages.
async fn walk<F, Fut>(mut page: F) -> (Vec<String>, usize)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<String>, String)>,
{
    let (mut keys, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let (items, next) = page(token).await;
        pages += 1;
        assert!(pages < 1_000, "a listing that never ends");
        keys.extend(items);
        if next.is_empty() {
            return (keys, pages);
        }
        token = next;
    }
}

/// The list walked with pages of `small` against the whole of it in one page (`whole`): the
/// same keys in the same order, each once, over more than one page, at least `at_least`.
fn same_list(what: &str, whole: &[String], paged: &(Vec<String>, usize), at_least: usize) {
    let (keys, pages) = paged;
    assert!(whole.len() >= at_least, "{what}: {whole:?}");
    assert!(*pages > 1, "{what}: one page of {}", keys.len());
    assert_eq!(keys, whole, "{what}: pages differ from the whole");
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "{what}: an item twice: {keys:?}");
}

/// Runs one list walked in pages of 2 and whole (a page of 1000).
macro_rules! check_list {
    ($what:expr, $at_least:expr, |$size:ident, $token:ident| $call:expr) => {{
        let whole = {
            let $size = 1000u32;
            let $token = String::new();
            let (keys, next): (Vec<String>, String) = $call.await;
            assert!(next.is_empty(), "{}: a page of 1000 continues", $what);
            keys
        };
        let paged = walk(|$token: String| {
            let $size = 2u32;
            $call
        })
        .await;
        same_list($what, &whole, &paged, $at_least);
    }};
}

fn config() -> String {
    let users: String = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|n| {
            format!(
                "  - {{ name: {n}, contact_methods: [{{ name: work, kind: webhook, address: 'https://example.com/{n}' }}] }}\n"
            )
        })
        .collect();
    format!(
        "users:
{users}schedules:
  - name: daily
    time_zone: UTC
    combine: exclusive
    layers:
      - {{ name: all, members: [alice, bob, carol], rotation: {{ every: 1d, hand_off: '00:00', start: '2020-01-01' }} }}
  - name: weekly
    time_zone: UTC
    combine: exclusive
    layers:
      - {{ name: all, members: [dave, erin], rotation: {{ every: 1w, hand_off: '09:00', start: '2020-01-06' }} }}
"
    )
}

fn at(seconds: i64) -> Option<firebreak_proto::Timestamp> {
    Some(firebreak_proto::Timestamp { seconds, nanos: 0 })
}

#[tokio::test]
async fn the_directory_and_notification_lists_page_through_each_item_once() {
    let s = Stack::start(&crate::harness::empty_runbooks(), &config()).await;
    let mut access = s.access();
    for n in 0..5 {
        let name = format!("pager-{n}");
        access
            .create_team(v1::CreateTeamRequest {
                team: Some(v1::Team {
                    name: name.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        access
            .create_token(v1::CreateTokenRequest {
                subject: "alice".into(),
                grants: vec![v1::Grant {
                    role: v1::Role::Viewer as i32,
                    scope: "all".into(),
                }],
                description: name,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    check_list!("users", 5, |size, token| {
        let mut c = s.access();
        async move {
            let r = c
                .list_users(v1::ListUsersRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.users.into_iter().map(|u| u.name).collect(),
                r.next_page_token,
            )
        }
    });
    check_list!("teams", 5, |size, token| {
        let mut c = s.access();
        async move {
            let r = c
                .list_teams(v1::ListTeamsRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.teams.into_iter().map(|t| t.name).collect(),
                r.next_page_token,
            )
        }
    });
    check_list!("tokens", 5, |size, token| {
        let mut c = s.access();
        async move {
            let r = c
                .list_tokens(v1::ListTokensRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.tokens.into_iter().map(|t| t.id).collect(),
                r.next_page_token,
            )
        }
    });

    // Schedules: two declared, three made at run time.
    let mut n = s.notifications.clone();
    for i in 0..3 {
        n.put_schedule(v1::PutScheduleRequest {
            yaml: format!(
                "name: extra-{i}\ntime_zone: UTC\ncombine: exclusive\nlayers:\n  - {{ name: l, members: [carol], rotation: {{ every: 1d, hand_off: '00:00', start: '2020-01-01' }} }}\n"
            ),
        })
        .await
        .unwrap();
    }
    check_list!("schedules", 5, |size, token| {
        let mut c = s.notifications.clone();
        async move {
            let r = c
                .list_schedules(v1::ListSchedulesRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.schedules.into_iter().map(|s| s.name).collect(),
                r.next_page_token,
            )
        }
    });
    // Ten days of a daily rotation: ten shifts.
    let (from, to) = (1_704_067_200, 1_704_067_200 + 10 * 86_400);
    check_list!("shifts", 10, |size, token| {
        let mut c = s.notifications.clone();
        async move {
            let r = c
                .list_shifts(v1::ListShiftsRequest {
                    schedule: "daily".into(),
                    from: at(from),
                    to: at(to),
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.time_zone, "UTC");
            let keys = r
                .shifts
                .into_iter()
                .map(|sh| format!("{} {:?}", sh.start.unwrap().seconds, sh.users))
                .collect();
            (keys, r.next_page_token)
        }
    });
    for i in 0..5 {
        n.put_maintenance_window(v1::PutMaintenanceWindowRequest {
            yaml: format!(
                "name: window-{i}\ntime_zone: UTC\nstart: '2030-01-0{}T02:00'\nduration: 1h\nservices: [checkout]\n",
                i + 1
            ),
        })
        .await
        .unwrap();
    }
    check_list!("maintenance windows", 5, |size, token| {
        let mut c = s.notifications.clone();
        async move {
            let r = c
                .list_maintenance_windows(v1::ListMaintenanceWindowsRequest {
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.windows.into_iter().map(|w| w.name).collect(),
                r.next_page_token,
            )
        }
    });

    // An incident's own subscribers: five people and a channel.
    let mut s = s;
    let id = s.raise("checkout is down").await;
    for who in ["alice", "bob", "carol", "dave", "erin"] {
        n.subscribe(v1::SubscribeRequest {
            incident_id: id.clone(),
            subscriber_kind: v1::SubscriberKind::Person as i32,
            subscriber_name: who.into(),
        })
        .await
        .unwrap();
        // Apart in time: oldest first is a visible order.
        s.clock.advance(std::time::Duration::from_secs(1));
    }
    n.subscribe(v1::SubscribeRequest {
        incident_id: id.clone(),
        subscriber_kind: v1::SubscriberKind::Channel as i32,
        subscriber_name: "log".into(),
    })
    .await
    .unwrap();
    check_list!("subscribers", 6, |size, token| {
        let mut c = s.notifications.clone();
        let id = id.clone();
        async move {
            let r = c
                .list_subscribers(v1::ListSubscribersRequest {
                    incident_id: id,
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            let keys = r
                .subscriptions
                .into_iter()
                .map(|s| {
                    format!(
                        "{}:{}",
                        v1::SubscriberKind::shown(s.subscriber_kind),
                        s.subscriber_name
                    )
                })
                .collect();
            (keys, r.next_page_token)
        }
    });
    // Deliveries: the log channel hears each incident's opening.
    for i in 0..4 {
        s.raise(&format!("another outage {i}")).await;
    }
    eventually("five deliveries", || {
        let mut c = s.notifications.clone();
        async move {
            let r = c
                .list_deliveries(v1::ListDeliveriesRequest::default())
                .await
                .ok()?
                .into_inner();
            (r.deliveries.len() >= 5).then_some(())
        }
    })
    .await;
    check_list!("deliveries", 5, |size, token| {
        let mut c = s.notifications.clone();
        async move {
            let r = c
                .list_deliveries(v1::ListDeliveriesRequest {
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.deliveries.into_iter().map(|d| d.id).collect(),
                r.next_page_token,
            )
        }
    });

    // A token of one list is refused by another, naming the field; so is a made-up one.
    let users_token = s
        .access()
        .list_users(v1::ListUsersRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    for bad in [users_token.clone(), "bm90IGEgdG9rZW4".into(), "%%%".into()] {
        let e = s
            .access()
            .list_teams(v1::ListTeamsRequest {
                page_size: 1,
                page_token: bad.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("page_token"), "{bad}: {e:?}");
        let e = n
            .list_schedules(v1::ListSchedulesRequest {
                page_size: 1,
                page_token: bad.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("page_token"), "{bad}: {e:?}");
    }
    // A page size over the maximum is taken as the maximum.
    let all = s
        .access()
        .list_users(v1::ListUsersRequest {
            page_size: u32::MAX,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.next_page_token.is_empty() && all.users.len() >= 5);
}

#[tokio::test]
async fn intake_triage_and_orchestration_lists_page_through_each_item_once() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(
            dir.path().join(format!("note-{i}.yaml")),
            format!(
                "name: note-{i}\nmatch: {{ categories: [service-outage] }}\ncapabilities: [incident]\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("note-{i}.rhai")),
            "// Notes that it ran.\nfn run(incident, params) { incident::note(\"ran\"); }\n",
        )
        .unwrap();
    }
    let mut s = Stack::start(dir.path(), "{}\n").await;

    let mut integrations = s.integrations();
    for i in 0..5 {
        integrations
            .create_integration(v1::CreateIntegrationRequest {
                name: format!("prom-{i}"),
                integration_kind: v1::IntegrationKind::Alertmanager as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    check_list!("integrations", 5, |size, token| {
        let mut c = s.integrations();
        async move {
            let r = c
                .list_integrations(v1::ListIntegrationsRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.integrations.into_iter().map(|i| i.name).collect(),
                r.next_page_token,
            )
        }
    });
    let mut silences = s.silences();
    for i in 0..5 {
        silences
            .create_silence(v1::CreateSilenceRequest {
                matchers: vec![v1::SilenceMatcher {
                    name: "job".into(),
                    op: v1::MatchOperator::Equal.into(),
                    value: format!("batch-{i}"),
                }],
                // Two start together: their ids order them.
                starts_at: at(4_000_000_000 + i64::from(i / 2)),
                ends_at: at(4_100_000_000),
                comment: format!("silence {i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    check_list!("silences", 5, |size, token| {
        let mut c = s.silences();
        async move {
            let r = c
                .list_silences(v1::ListSilencesRequest {
                    expired: false,
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.silences.into_iter().map(|s| s.id).collect(),
                r.next_page_token,
            )
        }
    });

    // Five alerts of one incident (one dedup key).
    let mut incident = String::new();
    for i in 0..5 {
        incident = s
            .intake
            .raise_incident(v1::RaiseIncidentRequest {
                alert: Some(v1::AlertInput {
                    title: format!("checkout down on host {i}"),
                    category: "service-outage".into(),
                    dedup_key: "checkout".into(),
                    alert_key: format!("host-{i}"),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .incident_id;
        s.clock.advance(std::time::Duration::from_secs(1));
    }
    check_list!("incident alerts", 5, |size, token| {
        let mut c = s.incidents.clone();
        let id = incident.clone();
        async move {
            let r = c
                .list_incident_alerts(v1::ListIncidentAlertsRequest {
                    id,
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.alerts.into_iter().map(|a| a.title).collect(),
                r.next_page_token,
            )
        }
    });

    check_list!("runbooks", 5, |size, token| {
        let mut c = s.runs.clone();
        async move {
            let r = c
                .list_runbooks(v1::ListRunbooksRequest {
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.runbooks.into_iter().map(|r| r.name).collect(),
                r.next_page_token,
            )
        }
    });
    // Each runbook ran once for the incident.
    eventually("five runs", || {
        let mut c = s.runs.clone();
        let id = incident.clone();
        async move {
            let r = c
                .list_runs(v1::ListRunsRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (r.runs.len() == 5).then_some(())
        }
    })
    .await;
    check_list!("runs", 5, |size, token| {
        let mut c = s.runs.clone();
        let id = incident.clone();
        async move {
            let r = c
                .list_runs(v1::ListRunsRequest {
                    incident_id: id,
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.runs.into_iter().map(|r| r.id).collect(),
                r.next_page_token,
            )
        }
    });
    for title in ["a", "b", "c", "d", "e"] {
        s.incidents
            .add_follow_up(v1::AddFollowUpRequest {
                id: incident.clone(),
                title: format!("follow-up {title}"),
                owner: "amy".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    check_list!("follow-ups", 5, |size, token| {
        let mut c = s.incidents.clone();
        async move {
            let r = c
                .list_follow_ups(v1::ListFollowUpsRequest {
                    page_size: size,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.follow_ups.into_iter().map(|f| f.title).collect(),
                r.next_page_token,
            )
        }
    });

    // A runbooks token means nothing to the runs list, nor the incidents list.
    let runbooks_token = s
        .runs
        .list_runbooks(v1::ListRunbooksRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let e = s
        .runs
        .list_runs(v1::ListRunsRequest {
            page_token: runbooks_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("page_token"), "{e:?}");
    let e = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest {
            page_token: runbooks_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("page_token"), "{e:?}");
}

/// The typed filters: an unknown state is refused naming the field; a known one lists only
/// its items.
#[tokio::test]
async fn list_filters_are_typed_and_unknown_values_are_refused_by_name() {
    let mut s = Stack::start(&crate::harness::empty_runbooks(), "{}\n").await;
    let open = s.raise("disk full").await;
    let acked = s.raise("cpu hot").await;
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: acked.clone(),
            actor: String::new(),
        })
        .await
        .unwrap();
    let listed = |state: v1::IncidentState| {
        let mut c = s.incidents.clone();
        async move {
            c.list_incidents(v1::ListIncidentsRequest {
                state_filter: state as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .incidents
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(v1::IncidentState::Open).await,
        std::slice::from_ref(&open)
    );
    assert_eq!(listed(v1::IncidentState::Acknowledged).await, [acked]);
    assert_eq!(listed(v1::IncidentState::Unspecified).await.len(), 2);
    let e = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest {
            state_filter: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("state_filter"), "{e:?}");
    let e = s
        .runs
        .list_runs(v1::ListRunsRequest {
            state_filter: -3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("state_filter"), "{e:?}");
    // Required enums: unspecified is refused naming the field.
    let e = s
        .integrations()
        .create_integration(v1::CreateIntegrationRequest {
            name: "nameless-kind".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("integration_kind"), "{e:?}");
    let mut n: v1::notification_service_client::NotificationServiceClient<AuthedChannel> =
        s.notifications.clone();
    let e = n
        .subscribe(v1::SubscribeRequest {
            incident_id: open,
            subscriber_kind: 0,
            subscriber_name: "amy".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("subscriber_kind"), "{e:?}");
}
