//! The post-incident review in the running stack: follow-ups added, changed and listed by the
//! authenticated caller, the summary, the configured template, and the review stating roles,
//! time to acknowledge, mitigate and resolve, follow-ups and summary; hostile input refused
//! naming the field, changing nothing; a merged incident's review naming where it went.

use std::time::Duration;

use firebreak_proto::WireState as _;
use firebreak_proto::v1;
use serde_json::Value;
use tonic::Code;

use crate::harness::{Recorder, Stack, empty_runbooks, eventually};

const TEMPLATE: &str = "review:
  template:
    - {heading: Customer impact, prompt: Who noticed and how?}
    - {heading: Root cause}
";

fn add(id: &str, title: &str, owner: &str, due: &str) -> v1::AddFollowUpRequest {
    v1::AddFollowUpRequest {
        id: id.into(),
        title: title.into(),
        owner: owner.into(),
        due: due.into(),
    }
}

fn set_state(id: &str, number: u32, state: v1::FollowUpState) -> v1::UpdateFollowUpRequest {
    v1::UpdateFollowUpRequest {
        id: id.into(),
        number,
        state: state as i32,
        ..Default::default()
    }
}

/// The incident's timeline entries of `kinds`: kind, actor and data.
async fn entries(s: &Stack, id: &str, kinds: &[&str]) -> Vec<(String, String, Value)> {
    s.incidents
        .clone()
        .get_timeline(v1::GetTimelineRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .filter(|e| kinds.contains(&e.kind.as_str()))
        .map(|e| (e.kind, e.actor, serde_json::from_str(&e.data).unwrap()))
        .collect()
}

async fn list(s: &Stack, req: v1::ListFollowUpsRequest) -> Vec<(String, u32, String)> {
    s.incidents
        .clone()
        .list_follow_ups(req)
        .await
        .unwrap()
        .into_inner()
        .follow_ups
        .into_iter()
        .map(|f| (f.incident_id, f.number, f.title))
        .collect()
}

/// A day `days` after the day (UTC) of `at`, as `YYYY-MM-DD`.
fn day_after(at: &firebreak_proto::Timestamp, days: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(at.seconds).unwrap() + time::Duration::days(days);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn seconds(d: Option<firebreak_proto::WireDuration>) -> i64 {
    d.expect("a duration").seconds
}

fn between(a: Option<firebreak_proto::Timestamp>, b: Option<firebreak_proto::Timestamp>) -> i64 {
    let (a, b) = (a.unwrap(), b.unwrap());
    let micros = |t: firebreak_proto::Timestamp| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000;
    (micros(b) - micros(a)).div_euclid(1_000_000)
}

#[tokio::test]
async fn the_review_states_roles_durations_follow_ups_summary_and_the_template() {
    // A channel that wants the review's changes (no channel gets them unless it asks).
    let hook = Recorder::start().await;
    let config = format!(
        "{TEMPLATE}channels:\n  - name: reviews\n    kind: webhook\n    url: {}/hook\n    events: [review_changed]\n",
        hook.url
    );
    let mut s = Stack::start(&empty_runbooks(), &config).await;
    let id = s.raise("checkout down").await;
    let other = s.raise("search slow").await;
    let opened = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
        .opened_at
        .unwrap();
    s.incidents
        .assign_role(v1::AssignRoleRequest {
            id: id.clone(),
            role: "commander".into(),
            person: "alice".into(),
        })
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(90));
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The commander tells stakeholders twice (through the status-update RPC).
    let mut alice = s
        .person("alice", v1::Role::IncidentCommander)
        .await
        .incidents;
    for (status, message) in [
        (
            v1::UpdateStatus::Investigating,
            "checkout returns 503 for everyone",
        ),
        (v1::UpdateStatus::Identified, "a bad deploy; rolling back"),
    ] {
        alice
            .post_status_update(v1::PostStatusUpdateRequest {
                id: id.clone(),
                status: status as i32,
                message: message.into(),
            })
            .await
            .unwrap();
    }
    s.clock.advance(Duration::from_secs(510));
    s.incidents
        .mitigate(v1::MitigateRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A responder writes the follow-ups, during the incident already.
    let mut bob = s.person("bob", v1::Role::Responder).await.incidents;
    let due = day_after(&opened, 30);
    let first = bob
        .add_follow_up(add(&id, "add a canary stage", "amy", &due))
        .await
        .unwrap()
        .into_inner()
        .follow_up
        .unwrap();
    assert_eq!(
        (
            first.number,
            first.state(),
            first.due.as_str(),
            first.created_by.as_str()
        ),
        (1, v1::FollowUpState::Open, due.as_str(), "user:bob")
    );
    bob.add_follow_up(add(&id, "alert on 5xx ratio", "bob", ""))
        .await
        .unwrap();
    bob.add_follow_up(add(&other, "tune the search cache", "amy", ""))
        .await
        .unwrap();
    let done = bob
        .update_follow_up(set_state(&id, 2, v1::FollowUpState::Done))
        .await
        .unwrap()
        .into_inner()
        .follow_up
        .unwrap();
    assert_eq!(done.state(), v1::FollowUpState::Done);
    bob.set_review_summary(v1::SetReviewSummaryRequest {
        id: id.clone(),
        summary: "Checkout was down after a bad deploy; rolled back.".into(),
    })
    .await
    .unwrap();
    s.clock.advance(Duration::from_secs(3000));
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            summary: "rolled back".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let got = s
        .incidents
        .get_review(v1::GetReviewRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let r = got.review.clone().unwrap();
    // The durations are the incident's own times apart, and at least what the clock was
    // moved (the clock also runs on by itself).
    let (tta, ttm, ttr) = (
        seconds(r.time_to_acknowledge),
        seconds(r.time_to_mitigate),
        seconds(r.time_to_resolve),
    );
    assert_eq!(tta, between(r.opened_at, r.acknowledged_at));
    assert_eq!(ttm, between(r.opened_at, r.mitigated_at));
    assert_eq!(ttr, between(r.opened_at, r.resolved_at));
    assert!((90..150).contains(&tta), "{tta}");
    assert!((600..660).contains(&ttm), "{ttm}");
    assert!((3600..3660).contains(&ttr), "{ttr}");
    let roles: Vec<(&str, &str)> = r
        .roles
        .iter()
        .map(|h| (h.role.as_str(), h.person.as_str()))
        .collect();
    assert_eq!(roles, [("commander", "alice")]);
    let updates: Vec<(&str, &str, &str)> = r
        .status_updates
        .iter()
        .map(|u| {
            (
                firebreak_domain::UpdateStatus::from_wire(u.update_status)
                    .map_or("unknown", |s| s.as_str()),
                u.actor.as_str(),
                u.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        updates,
        [
            (
                "investigating",
                "user:alice",
                "checkout returns 503 for everyone"
            ),
            ("identified", "user:alice", "a bad deploy; rolling back"),
        ]
    );
    let follow_ups: Vec<(u32, &str, &str, v1::FollowUpState)> = r
        .follow_ups
        .iter()
        .map(|f| (f.number, f.title.as_str(), f.owner.as_str(), f.state()))
        .collect();
    assert_eq!(
        follow_ups,
        [
            (1, "add a canary stage", "amy", v1::FollowUpState::Open),
            (2, "alert on 5xx ratio", "bob", v1::FollowUpState::Done),
        ]
    );
    assert_eq!(
        r.summary,
        "Checkout was down after a bad deploy; rolled back."
    );
    let headings: Vec<&str> = r.sections.iter().map(|s| s.heading.as_str()).collect();
    assert_eq!(headings, ["Customer impact", "Root cause"]);
    assert_eq!(r.acknowledged_by, "user:admin");
    assert!(r.merged_into.is_empty());
    let md = &got.markdown;
    for want in [
        "Checkout was down after a bad deploy; rolled back.",
        "| commander | alice |",
        &format!("- [ ] #1 add a canary stage (amy, due {due})"),
        "- [x] #2 alert on 5xx ratio (bob, no due date)",
        "## Customer impact\n\n_Who noticed and how?_",
        "## Status updates",
        "| identified | user:alice | a bad deploy; rolling back |",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    assert!(!md.contains("## What went well"), "{md}");

    // Each change is on the timeline, by the caller.
    let kinds = ["follow_up_added", "follow_up_changed", "summary_edited"];
    let written: Vec<(String, String)> = entries(&s, &id, &kinds)
        .await
        .into_iter()
        .map(|(k, a, _)| (k, a))
        .collect();
    let by_bob = |k: &str| (k.to_owned(), "user:bob".to_owned());
    assert_eq!(
        written,
        [
            by_bob("follow_up_added"),
            by_bob("follow_up_added"),
            by_bob("follow_up_changed"),
            by_bob("summary_edited"),
        ]
    );

    // Listed across incidents, by owner and state; overdue once the clock passes the day.
    let all = |f: fn(&mut v1::ListFollowUpsRequest)| {
        let mut r = v1::ListFollowUpsRequest::default();
        f(&mut r);
        r
    };
    let mut amy_open = list(
        &s,
        all(|r| {
            r.owner = "amy".into();
            r.state = v1::FollowUpState::Open as i32;
        }),
    )
    .await;
    amy_open.sort();
    let mut want = vec![
        (id.clone(), 1, "add a canary stage".to_owned()),
        (other.clone(), 1, "tune the search cache".to_owned()),
    ];
    want.sort();
    assert_eq!(amy_open, want);
    let done_ones = list(&s, all(|r| r.state = v1::FollowUpState::Done as i32)).await;
    assert_eq!(
        done_ones,
        [(id.clone(), 2, "alert on 5xx ratio".to_owned())]
    );
    assert!(list(&s, all(|r| r.overdue = true)).await.is_empty());
    s.clock.advance(Duration::from_secs(32 * 86_400));
    assert_eq!(
        list(&s, all(|r| r.overdue = true)).await,
        [(id.clone(), 1, "add a canary stage".to_owned())]
    );
    // A page of one, and the next.
    let page = s
        .incidents
        .list_follow_ups(v1::ListFollowUpsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.follow_ups.len(), 1);
    assert!(!page.next_page_token.is_empty());

    // Each change was announced: three additions, a change, the summary.
    let posted = eventually("the review's changes at the webhook", || async {
        let got = hook.on("/hook");
        (got.len() >= 5).then_some(got)
    })
    .await;
    let kinds: Vec<&str> = posted
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["incident.review_changed"; 5], "{posted:?}");
    assert_eq!(posted[0].body["actor"], "user:bob", "{:?}", posted[0].body);

    // The writes are audited with their target; the list, a read, is not.
    let audited = |action: &'static str| {
        let s = &s;
        async move {
            let req = v1::ListAuditRequest {
                actor: "user:bob".into(),
                action: action.into(),
                ..Default::default()
            };
            s.audit()
                .list_audit(req)
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    let added = eventually("bob's follow-ups in the audit log", || async {
        let e = audited("IncidentService/AddFollowUp").await;
        (e.len() == 3).then_some(e)
    })
    .await;
    assert!(
        added
            .iter()
            .any(|e| e.target == format!("incident:{id}") && e.outcome == "ok"),
        "{added:?}"
    );
    for action in [
        "IncidentService/UpdateFollowUp",
        "IncidentService/SetReviewSummary",
    ] {
        eventually(action, || async {
            (audited(action).await.len() == 1).then_some(())
        })
        .await;
    }

    // Reading is not writing: a viewer lists but may not add.
    let mut viewer = s.person("vic", v1::Role::Viewer).await.incidents;
    let refused = viewer
        .add_follow_up(add(&id, "sneak one in", "vic", ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = viewer
        .set_review_summary(v1::SetReviewSummaryRequest {
            id: id.clone(),
            summary: "mine now".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let seen = viewer
        .list_follow_ups(v1::ListFollowUpsRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .follow_ups;
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn hostile_review_input_is_refused_naming_the_field_and_changes_nothing() {
    let mut s = Stack::start(&empty_runbooks(), "").await;
    let id = s.raise("checkout down").await;
    s.incidents
        .add_follow_up(add(&id, "keep me", "amy", ""))
        .await
        .unwrap();
    let before = entries(
        &s,
        &id,
        &["follow_up_added", "follow_up_changed", "summary_edited"],
    )
    .await
    .len();
    let opened = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
        .opened_at
        .unwrap();
    let unknown = "01900000-0000-7000-8000-000000000042";
    let mut c = s.incidents.clone();
    let adds = [
        (add(unknown, "t", "amy", ""), Code::NotFound, unknown),
        (
            add("not-an-id", "t", "amy", ""),
            Code::InvalidArgument,
            "id",
        ),
        (add(&id, "", "amy", ""), Code::InvalidArgument, "title"),
        (
            add(&id, &"x".repeat(513), "amy", ""),
            Code::InvalidArgument,
            "title",
        ),
        (
            add(&id, "two\nlines", "amy", ""),
            Code::InvalidArgument,
            "title",
        ),
        (
            add(&id, "t", "Amy Smith", ""),
            Code::InvalidArgument,
            "owner",
        ),
        (
            add(&id, "t", "amy", "2026-13-01"),
            Code::InvalidArgument,
            "due",
        ),
        (
            add(&id, "t", "amy", "next week"),
            Code::InvalidArgument,
            "due",
        ),
        (
            add(&id, "t", "amy", &day_after(&opened, -1)),
            Code::InvalidArgument,
            "due",
        ),
    ];
    for (req, code, names) in adds {
        let err = c.add_follow_up(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().contains(names), "{names}: {}", err.message());
    }
    let updates = [
        (
            v1::UpdateFollowUpRequest {
                state: 7,
                ..set_state(&id, 1, v1::FollowUpState::Done)
            },
            Code::InvalidArgument,
            "state",
        ),
        (
            set_state(&id, 9, v1::FollowUpState::Done),
            Code::NotFound,
            "follow-up 9",
        ),
        (
            set_state(unknown, 1, v1::FollowUpState::Done),
            Code::NotFound,
            unknown,
        ),
        (
            v1::UpdateFollowUpRequest {
                id: id.clone(),
                number: 1,
                ..Default::default()
            },
            Code::InvalidArgument,
            "nothing to change",
        ),
        (
            v1::UpdateFollowUpRequest {
                id: id.clone(),
                number: 1,
                due: "1999-01-01".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "due",
        ),
    ];
    for (req, code, names) in updates {
        let err = c.update_follow_up(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().contains(names), "{names}: {}", err.message());
    }
    for (summary, target, code, names) in [
        (
            "s".repeat(16 * 1024 + 1),
            id.as_str(),
            Code::InvalidArgument,
            "summary",
        ),
        (
            "nul\0".into(),
            id.as_str(),
            Code::InvalidArgument,
            "summary",
        ),
        ("fine".into(), unknown, Code::NotFound, unknown),
    ] {
        let err = c
            .set_review_summary(v1::SetReviewSummaryRequest {
                id: target.into(),
                summary,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(names), "{names}: {}", err.message());
    }
    let err = c
        .list_follow_ups(v1::ListFollowUpsRequest {
            state: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("state"), "{err:?}");
    let err = c
        .list_follow_ups(v1::ListFollowUpsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("page_token"), "{err:?}");

    // Nothing changed: the one follow-up as it was, no entry more.
    let kept = c
        .list_follow_ups(v1::ListFollowUpsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .follow_ups;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (
            kept[0].title.as_str(),
            kept[0].owner.as_str(),
            kept[0].state()
        ),
        ("keep me", "amy", v1::FollowUpState::Open)
    );
    let after = entries(
        &s,
        &id,
        &["follow_up_added", "follow_up_changed", "summary_edited"],
    )
    .await
    .len();
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_merged_incidents_review_names_the_incident_it_went_into() {
    let mut s = Stack::start(&empty_runbooks(), "").await;
    let into = s.raise("web down").await;
    let merged = s.raise("web 502s").await;
    s.incidents
        .merge(v1::MergeRequest {
            id: merged.clone(),
            into: into.clone(),
            reason: "one outage".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = s
        .incidents
        .get_review(v1::GetReviewRequest { id: merged.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.review.unwrap().merged_into, into);
    assert!(
        got.markdown.contains(&format!("- Merged into `{into}`")),
        "{}",
        got.markdown
    );
    // Its follow-ups go on the incident it went into.
    let err = s
        .incidents
        .add_follow_up(add(&merged, "t", "amy", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(&into), "{err:?}");
}
