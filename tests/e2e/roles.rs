//! Incident roles over gRPC in the running stack: assigned, handed off and removed by the
//! authenticated caller; on the incident, its timeline, its events and its review; refused
//! where the rules say.

use firebreak_proto::v1;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Stack, empty_runbooks, eventually};

fn assign(id: &str, role: &str, person: &str) -> v1::AssignRoleRequest {
    v1::AssignRoleRequest {
        id: id.into(),
        role: role.into(),
        person: person.into(),
    }
}

fn unassign(id: &str, role: &str, person: &str) -> v1::UnassignRoleRequest {
    v1::UnassignRoleRequest {
        id: id.into(),
        role: role.into(),
        person: person.into(),
    }
}

/// An incident's roles as `(role, person, assigned_by)`, in order.
fn held(inc: &v1::Incident) -> Vec<(&str, &str, &str)> {
    inc.roles
        .iter()
        .map(|r| (r.role.as_str(), r.person.as_str(), r.assigned_by.as_str()))
        .collect()
}

/// The incident's role entries: kind, actor and data.
async fn role_entries(s: &Stack, id: &str) -> Vec<(String, String, Value)> {
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
        .filter(|e| e.kind.starts_with("role_"))
        .map(|e| (e.kind, e.actor, serde_json::from_str(&e.data).unwrap()))
        .collect()
}

#[tokio::test]
async fn roles_are_assigned_handed_off_and_removed_by_the_caller_on_the_record() {
    let mut s = Stack::start(&empty_runbooks(), "").await;
    let id = s.raise("checkout down").await;

    // The admin staffs the incident; the answer is the incident with all its roles.
    let inc = s
        .incidents
        .assign_role(assign(&id, "commander", "alice"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(held(&inc), [("commander", "alice", "user:admin")]);
    let assigned_at = inc.roles[0].assigned_at.unwrap();
    assert!(assigned_at.seconds > 0, "{assigned_at:?}");
    s.incidents
        .assign_role(assign(&id, "responder", "bob"))
        .await
        .unwrap();
    s.incidents
        .assign_role(assign(&id, "scribe", "carol"))
        .await
        .unwrap();
    // A person holding the commander role by token hands it off (the permission role's name
    // is the same incident role): the timeline names them, not the admin.
    let mut dave = s
        .person("dave", v1::Role::IncidentCommander)
        .await
        .incidents;
    dave.assign_role(assign(&id, "incident-commander", "dave"))
        .await
        .unwrap();
    // Assigning a role held already changes nothing.
    let again = s
        .incidents
        .assign_role(assign(&id, "responder", "bob"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let removed = s
        .incidents
        .unassign_role(unassign(&id, "scribe", "carol"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(
        held(&removed),
        [
            ("responder", "bob", "user:admin"),
            ("commander", "dave", "user:dave"),
        ]
    );
    assert_eq!(
        again.roles.len(),
        3,
        "the repeat answered the incident as it was"
    );

    let read = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(read.roles, removed.roles);

    assert_eq!(
        role_entries(&s, &id).await,
        [
            (
                "role_assigned".into(),
                "user:admin".into(),
                json!({ "role": "commander", "person": "alice", "previous": null })
            ),
            (
                "role_assigned".into(),
                "user:admin".into(),
                json!({ "role": "responder", "person": "bob", "previous": null })
            ),
            (
                "role_assigned".into(),
                "user:admin".into(),
                json!({ "role": "scribe", "person": "carol", "previous": null })
            ),
            (
                "role_assigned".into(),
                "user:dave".into(),
                json!({ "role": "commander", "person": "dave", "previous": "alice" })
            ),
            (
                "role_removed".into(),
                "user:admin".into(),
                json!({ "role": "scribe", "person": "carol" })
            ),
        ]
    );

    // Each change was announced (the log channel got one delivery each); the repeat was not.
    let notifications = s.notifications.clone();
    eventually("a delivery per role change", || {
        let mut n = notifications.clone();
        let id = id.clone();
        async move {
            let kinds: Vec<&str> = n
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries
                .into_iter()
                .map(|d| v1::DeliveryKind::shown(d.delivery_kind))
                .filter(|k| *k == "incident.roles_changed")
                .collect();
            (kinds.len() == 5).then_some(())
        }
    })
    .await;

    // What the rules refuse, each with its code and the field or names it concerns.
    let refused = [
        (
            s.incidents
                .unassign_role(unassign(&id, "scribe", "carol"))
                .await
                .map(drop),
            Code::NotFound,
            "carol",
        ),
        (
            s.incidents
                .assign_role(assign(&id, "Scribe", "carol"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "role",
        ),
        (
            s.incidents
                .assign_role(assign(&id, "scribe", &"c".repeat(65)))
                .await
                .map(drop),
            Code::InvalidArgument,
            "person",
        ),
        (
            s.incidents
                .assign_role(assign(&id, "scribe", "carol\0"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "person",
        ),
        (
            s.incidents
                .assign_role(assign("not-an-id", "scribe", "carol"))
                .await
                .map(drop),
            Code::InvalidArgument,
            "incident_id",
        ),
        (
            s.incidents
                .assign_role(assign(
                    "01900000-0000-7000-8000-000000000009",
                    "scribe",
                    "carol",
                ))
                .await
                .map(drop),
            Code::NotFound,
            "not found",
        ),
    ];
    for (got, code, names) in refused {
        let err = got.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(names), "{names}: {err:?}");
    }
    // A responder may not hand out roles (their permissions would follow).
    let mut erin = s.person("erin", v1::Role::Responder).await.incidents;
    let denied = erin
        .assign_role(assign(&id, "commander", "erin"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The review lists who held which role; a closed incident's roles are frozen.
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
    assert!(review.contains("## Roles"), "{review}");
    for who in [
        "| commander | alice |",
        "| commander | dave |",
        "| scribe | carol |",
    ] {
        assert!(review.contains(who), "{who} missing in\n{review}");
    }
    assert!(
        review.contains("| commander | dave |") && review.contains("| holds it |"),
        "{review}"
    );
    s.incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            root_cause: "a bad deploy".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = s
        .incidents
        .assign_role(assign(&id, "analyst", "frank"))
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition, "{closed:?}");
    let closed = s
        .incidents
        .unassign_role(unassign(&id, "responder", "bob"))
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition, "{closed:?}");
}
