//! Status updates to stakeholders end to end: `PostStatusUpdate` goes on the timeline and
//! the incident, and reaches each subscriber once: a channel subscribed to the incident (a
//! real local webhook), a channel subscribed by rule, and a person subscribed both ways (by
//! email through a real SMTP server). Hostile input changes nothing.

use std::time::Duration;

use firebreak_proto::v1;
use firebreak_testkit::smtp::SmtpServer;
use serde_json::Value;
use tonic::Code;

use crate::harness::{Recorder, Stack, empty_runbooks, eventually};

fn config(smtp_port: u16, hooks: &str) -> String {
    format!(
        "users:
  - {{ name: amy, contact_methods: [{{ name: work, kind: email, address: amy@example.com }}] }}
  - {{ name: bob, contact_methods: [{{ name: work, kind: email, address: bob@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {smtp_port}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
  - {{ name: status, kind: webhook, url: '{hooks}/status', events: [opened] }}
  - {{ name: execs, kind: webhook, url: '{hooks}/execs', events: [opened] }}
subscriptions:
  - {{ match: {{ max_severity: 5 }}, people: [amy], channels: [execs] }}
"
    )
}

fn update(id: &str, status: v1::UpdateStatus, message: &str) -> v1::PostStatusUpdateRequest {
    v1::PostStatusUpdateRequest {
        id: id.into(),
        status: status as i32,
        message: message.into(),
    }
}

/// The status updates a webhook path received, as (status, message).
fn received(hooks: &Recorder, path: &str) -> Vec<(String, String)> {
    hooks
        .on(path)
        .iter()
        .filter(|r| r.body["kind"] == "incident.status_updated")
        .map(|r| {
            let u = &r.body["incident"]["last_status_update"];
            (
                u["status"].as_str().unwrap_or_default().to_owned(),
                u["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The incident's status-update deliveries once `n` of them are delivered or sent, by
/// channel. A person's destination takes a message a minute (the pages' throttle): while
/// some are not done, the test's clock moves a minute on, so a deferred one comes due.
async fn delivered(s: &Stack, id: &str, n: usize) -> Vec<String> {
    eventually("the status updates delivered", || {
        let mut client = s.notifications.clone();
        let id = id.to_owned();
        let clock = s.clock.clone();
        async move {
            let list = client
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            // The log channel broadcasts every change: it is no subscriber.
            let updates: Vec<&v1::Delivery> = list
                .iter()
                .filter(|d| {
                    v1::DeliveryKind::shown(d.delivery_kind) == "incident.status_updated"
                        && d.channel != "log"
                })
                .collect();
            let done = updates.iter().all(|d| {
                matches!(
                    d.status(),
                    v1::DeliveryState::Delivered | v1::DeliveryState::Sent
                )
            });
            if !done {
                clock.advance(Duration::from_secs(61));
            }
            (done && updates.len() >= n).then(|| {
                let mut channels: Vec<String> = updates.iter().map(|d| d.channel.clone()).collect();
                channels.sort();
                channels
            })
        }
    })
    .await
}

#[tokio::test]
async fn a_status_update_reaches_each_subscriber_once_on_the_record() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let hooks = Recorder::start().await;
    let mut s = Stack::start(&empty_runbooks(), &config(smtp.port, &hooks.url)).await;
    let id = s.raise("checkout is down").await;
    let mut n = s.notifications.clone();
    for subscriber in ["channel:status", "person:amy"] {
        let r = n
            .subscribe(v1::SubscribeRequest {
                incident_id: id.clone(),
                ..subscribing(subscriber)
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.created, "{subscriber}");
    }
    // Twice is once.
    let again = n
        .subscribe(v1::SubscribeRequest {
            incident_id: id.clone(),
            ..subscribing("person:amy")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let listed = n
        .list_subscribers(v1::ListSubscribersRequest {
            incident_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    let names: Vec<(String, &str)> = listed
        .iter()
        .map(|s| {
            (
                format!(
                    "{}:{}",
                    v1::SubscriberKind::shown(s.subscriber_kind),
                    s.subscriber_name
                ),
                s.created_by.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("channel:status".to_owned(), "user:admin"),
            ("person:amy".to_owned(), "user:admin")
        ]
    );

    let inc = s
        .incidents
        .post_status_update(update(
            &id,
            v1::UpdateStatus::Investigating,
            "checkout errors; looking at the db",
        ))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let last = inc.last_status_update.clone().unwrap();
    assert_eq!(
        (last.status(), last.message.as_str(), last.by.as_str()),
        (
            v1::UpdateStatus::Investigating,
            "checkout errors; looking at the db",
            "user:admin"
        )
    );
    // A `resolved` update tells stakeholders; the incident itself stays open.
    let inc = s
        .incidents
        .post_status_update(update(&id, v1::UpdateStatus::Resolved, "checkout is back"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(
        inc.incident_state(),
        Some(firebreak_domain::IncidentState::Open)
    );
    let shown = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(
        shown.last_status_update.unwrap().message,
        "checkout is back"
    );

    // Three subscribers, two updates: six deliveries, each subscriber once per update (amy
    // is subscribed to the incident and by rule).
    let channels = delivered(&s, &id, 6).await;
    assert_eq!(
        channels,
        [
            "execs",
            "execs",
            "status",
            "status",
            "user:amy/work",
            "user:amy/work"
        ]
    );
    let want = [
        (
            "investigating".to_owned(),
            "checkout errors; looking at the db".to_owned(),
        ),
        ("resolved".to_owned(), "checkout is back".to_owned()),
    ];
    for path in ["/status", "/execs"] {
        let mut got = received(&hooks, path);
        got.sort();
        assert_eq!(got, want, "{path}");
    }
    let mut mails = Vec::new();
    for _ in 0..2 {
        let mail: Value = smtp.next().await;
        assert_eq!(
            mail["rcpt_tos"],
            serde_json::json!(["amy@example.com"]),
            "{mail:#}"
        );
        mails.push(mail.to_string());
    }
    assert!(
        mails.iter().any(|m| m.contains("looking at the db"))
            && mails.iter().any(|m| m.contains("checkout is back")),
        "{mails:?}"
    );
    assert!(
        !smtp.more(Duration::from_millis(500)).await,
        "bob gets nothing"
    );

    // On the timeline as the review reads them.
    let entries: Vec<(String, Value)> = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .filter(|e| e.kind == "status_update")
        .map(|e| (e.actor, serde_json::from_str(&e.data).unwrap()))
        .collect();
    assert_eq!(
        entries,
        [
            (
                "user:admin".to_owned(),
                serde_json::json!({"status": "investigating", "message": "checkout errors; looking at the db"})
            ),
            (
                "user:admin".to_owned(),
                serde_json::json!({"status": "resolved", "message": "checkout is back"})
            ),
        ]
    );

    // Unsubscribed, the channel hears no more; twice is NOT_FOUND.
    let (subscriber_kind, subscriber_name) = who("channel:status");
    let unsubscribe = v1::UnsubscribeRequest {
        incident_id: id.clone(),
        subscriber_kind,
        subscriber_name,
    };
    n.unsubscribe(unsubscribe.clone()).await.unwrap();
    let err = n.unsubscribe(unsubscribe).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    s.incidents
        .post_status_update(update(&id, v1::UpdateStatus::Monitoring, "watching"))
        .await
        .unwrap();
    let channels = delivered(&s, &id, 8).await;
    assert_eq!(channels.iter().filter(|c| *c == "status").count(), 2);
    assert_eq!(channels.len(), 8);
}

#[tokio::test]
async fn bad_updates_and_subscriptions_name_the_field_and_change_nothing() {
    let hooks = Recorder::start().await;
    let mut s = Stack::start(&empty_runbooks(), &config(1, &hooks.url)).await;
    let id = s.raise("checkout is down").await;
    let unknown = firebreak_domain::IncidentId::new().to_string();
    let long = "x".repeat(4097);
    for (req, code, field) in [
        (
            update(&id, v1::UpdateStatus::Unspecified, "m"),
            Code::InvalidArgument,
            "status",
        ),
        (
            v1::PostStatusUpdateRequest {
                status: 99,
                ..update(&id, v1::UpdateStatus::Identified, "m")
            },
            Code::InvalidArgument,
            "status",
        ),
        (
            update(&id, v1::UpdateStatus::Identified, ""),
            Code::InvalidArgument,
            "message",
        ),
        (
            update(&id, v1::UpdateStatus::Identified, "  "),
            Code::InvalidArgument,
            "message",
        ),
        (
            update(&id, v1::UpdateStatus::Identified, &long),
            Code::InvalidArgument,
            "message",
        ),
        (
            update(&id, v1::UpdateStatus::Identified, "a\0b"),
            Code::InvalidArgument,
            "message",
        ),
        (
            update("nope", v1::UpdateStatus::Identified, "m"),
            Code::InvalidArgument,
            "id",
        ),
        (
            update(&unknown, v1::UpdateStatus::Identified, "m"),
            Code::NotFound,
            &unknown,
        ),
    ] {
        let err = s
            .incidents
            .post_status_update(req.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().contains(field), "{req:?}: {}", err.message());
    }
    let mut n = s.notifications.clone();
    for (incident_id, subscriber, field) in [
        (id.as_str(), "person:zed", "subscriber_name"),
        (id.as_str(), "channel:nope", "subscriber_name"),
        (id.as_str(), "team:sre", "subscriber_kind"),
        (id.as_str(), "person:", "subscriber_name"),
        (id.as_str(), "", "subscriber_name"),
        ("nope", "person:amy", "incident_id"),
    ] {
        let err = n
            .subscribe(v1::SubscribeRequest {
                incident_id: incident_id.into(),
                ..subscribing(subscriber)
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{subscriber}: {err:?}");
        assert!(
            err.message().contains(field),
            "{subscriber}: {}",
            err.message()
        );
    }

    // Nothing changed: no update on the incident or its timeline, no subscriber, and no
    // status-update delivery (a valid update afterwards is the first).
    let inc = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(inc.last_status_update, None);
    let timeline = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!timeline.iter().any(|e| e.kind == "status_update"));
    let listed = n
        .list_subscribers(v1::ListSubscribersRequest {
            incident_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert!(listed.is_empty(), "{listed:?}");
    s.incidents
        .post_status_update(update(&id, v1::UpdateStatus::Identified, "found it"))
        .await
        .unwrap();
    // The rule's channel (execs) and person (amy, whose mail goes nowhere here): two.
    let _ = delivered_or_tried(&s, &id, 2).await;
    assert_eq!(received(&hooks, "/execs").len(), 1);
    // A closed incident takes no update.
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            summary: "fixed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            root_cause: "disk".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = s
        .incidents
        .post_status_update(update(&id, v1::UpdateStatus::Resolved, "done"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

/// The incident's status-update deliveries once `n` exist, whatever became of them.
async fn delivered_or_tried(s: &Stack, id: &str, n: usize) -> usize {
    eventually("the status updates planned", || {
        let mut client = s.notifications.clone();
        let id = id.to_owned();
        async move {
            let list = client
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            let updates = list
                .iter()
                .filter(|d| v1::DeliveryKind::shown(d.delivery_kind) == "incident.status_updated")
                .filter(|d| {
                    d.channel == "user:amy/work"
                        || (d.channel == "execs" && d.status() == v1::DeliveryState::Delivered)
                })
                .count();
            (updates >= n).then_some(updates)
        }
    })
    .await
}

/// The incident's status-reminder rows (`status.reminder`) and the reminders sent from
/// them (`incident.status_reminder`), once none of the rows due by now is pending.
async fn reminders(s: &Stack, id: &str) -> (Vec<v1::Delivery>, Vec<v1::Delivery>) {
    eventually("the due reminders run", || {
        let mut client = s.notifications.clone();
        let id = id.to_owned();
        let now = firebreak_domain::Clock::now(&*s.clock);
        async move {
            let list = client
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            let rows: Vec<v1::Delivery> = list
                .iter()
                .filter(|d| v1::DeliveryKind::shown(d.delivery_kind) == "status.reminder")
                .cloned()
                .collect();
            let sent: Vec<v1::Delivery> = list
                .iter()
                .filter(|d| v1::DeliveryKind::shown(d.delivery_kind) == "incident.status_reminder")
                .cloned()
                .collect();
            // A row is due when created before now and pending: a row pending whose time has
            // not come is the next period's.
            let settled = rows
                .iter()
                .all(|d| d.status() != v1::DeliveryState::Pending)
                || rows
                    .iter()
                    .filter(|d| d.status() == v1::DeliveryState::Pending)
                    .count()
                    == 1
                    && rows
                        .iter()
                        .filter(|d| d.status() == v1::DeliveryState::Pending)
                        .all(|d| {
                            d.created_at
                                .as_ref()
                                .map(firebreak_proto::micros)
                                .is_some_and(|c| c + Duration::from_secs(600) > now)
                        });
            let sent_done = sent
                .iter()
                .all(|d| d.status() != v1::DeliveryState::Pending);
            (settled && sent_done).then_some((rows, sent))
        }
    })
    .await
}

#[tokio::test]
async fn the_commander_is_reminded_once_per_quiet_period_and_an_update_re_arms_it() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"]).await;
    let config = format!(
        "users:
  - {{ name: amy, contact_methods: [{{ name: work, kind: email, address: amy@example.com }}] }}
channels:
  - {{ name: mail, kind: email, host: 127.0.0.1, port: {}, tls: none, from: 'Firebreak <firebreak@example.com>' }}
status_updates:
  reminders: [{{ max_severity: 5, after_seconds: 600 }}]
",
        smtp.port
    );
    let mut s = Stack::start(&empty_runbooks(), &config).await;
    let id = s.raise("checkout is down").await;
    let nobody = s.raise("search is slow").await;
    s.incidents
        .assign_role(v1::AssignRoleRequest {
            id: id.clone(),
            role: "commander".into(),
            person: "amy".into(),
        })
        .await
        .unwrap();
    // An update five minutes in starts a new quiet period.
    s.clock.advance(Duration::from_secs(300));
    s.incidents
        .post_status_update(update(&id, v1::UpdateStatus::Investigating, "on it"))
        .await
        .unwrap();
    // Notification has armed the update's period (opened, commander assigned, the update:
    // three rows) before the clock moves on.
    eventually("the update's period armed", || {
        let mut client = s.notifications.clone();
        let id = id.clone();
        async move {
            let list = client
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            (list
                .iter()
                .filter(|d| v1::DeliveryKind::shown(d.delivery_kind) == "status.reminder")
                .count()
                == 3)
                .then_some(())
        }
    })
    .await;
    // Ten minutes after the opening: the opening's period ended, but an update came in it,
    // so its rows are superseded and nobody is reminded.
    s.clock.advance(Duration::from_secs(301));
    let (rows, sent) = eventually("the opening's reminders superseded", || {
        let s = &s;
        let id = id.clone();
        async move {
            let (rows, sent) = reminders(s, &id).await;
            let cancelled = rows
                .iter()
                .filter(|d| d.status() == v1::DeliveryState::Cancelled)
                .count();
            (cancelled == 2).then_some((rows, sent))
        }
    })
    .await;
    assert_eq!(sent.len(), 0, "{sent:?}");
    // Opened (no commander yet), commander assigned, the update: three rows, one pending.
    assert_eq!(rows.len(), 3, "{rows:?}");

    // The incident without a commander reminds nobody, and says so on its timeline.
    let failed = eventually("the commanderless reminder failed", || {
        let s = &s;
        let nobody = nobody.clone();
        async move {
            let (rows, sent) = reminders(s, &nobody).await;
            assert!(sent.is_empty(), "{sent:?}");
            rows.into_iter()
                .find(|d| d.status() == v1::DeliveryState::Failed)
        }
    })
    .await;
    assert!(failed.last_error.contains("no commander"), "{failed:?}");
    eventually("the failure on the timeline", || {
        let mut incidents = s.incidents.clone();
        let nobody = nobody.clone();
        async move {
            let entries = incidents
                .get_timeline(v1::GetTimelineRequest {
                    id: nobody,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries;
            entries
                .iter()
                .any(|e| e.kind == "notification" && e.data.contains("no commander"))
                .then_some(())
        }
    })
    .await;

    // Ten minutes after the update, still nothing new: amy is reminded, once.
    s.clock.advance(Duration::from_secs(300));
    let mail = smtp.next().await;
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["amy@example.com"]),
        "{mail:#}"
    );
    assert!(
        mail.to_string().contains("no status update for 10 minutes"),
        "{mail:#}"
    );
    let (rows, sent) = reminders(&s, &id).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        rows.iter()
            .filter(|d| d.status() == v1::DeliveryState::Delivered)
            .count(),
        1
    );
    // No update since: no new period, no second reminder however long it stays quiet.
    s.clock.advance(Duration::from_secs(1200));
    let (rows, sent) = reminders(&s, &id).await;
    assert_eq!((rows.len(), sent.len()), (3, 1));
    assert!(!smtp.more(Duration::from_millis(500)).await);

    // Resolved, the incident arms a row that supersedes the rest and reminds nobody.
    s.incidents
        .post_status_update(update(&id, v1::UpdateStatus::Monitoring, "fix is out"))
        .await
        .unwrap();
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            summary: "fixed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let rows = eventually("the resolve's row", || {
        let s = &s;
        let id = id.clone();
        async move {
            let (rows, _) = reminders(s, &id).await;
            (rows.len() == 5).then_some(rows)
        }
    })
    .await;
    s.clock.advance(Duration::from_secs(601));
    let (after, sent) = eventually("the monitoring period's row superseded", || {
        let s = &s;
        let id = id.clone();
        async move {
            let (rows, sent) = reminders(s, &id).await;
            rows.iter()
                .all(|d| d.status() != v1::DeliveryState::Pending)
                .then_some((rows, sent))
        }
    })
    .await;
    assert_eq!(after.len(), rows.len());
    assert_eq!(sent.len(), 1, "{sent:?}");
}

/// A subscriber as people write it (`person:amy`, `channel:status`) as the API takes it: a
/// kind (an unknown one as a number no kind has, 99) and a name.
fn who(text: &str) -> (i32, String) {
    let (kind, name) = text.split_once(':').unwrap_or((text, ""));
    let kind = match kind {
        "" => 0,
        k => match v1::SubscriberKind::from_name(k) {
            v1::SubscriberKind::Unspecified => 99,
            k => k as i32,
        },
    };
    (kind, name.to_owned())
}

/// A subscribe request's subscriber fields ([`who`]).
fn subscribing(text: &str) -> v1::SubscribeRequest {
    let (subscriber_kind, subscriber_name) = who(text);
    v1::SubscribeRequest {
        subscriber_kind,
        subscriber_name,
        ..Default::default()
    }
}
