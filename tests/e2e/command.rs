//! Incident command in the running stack: a severe incident carries `needs_commander` until
//! someone commands it, and with `commander.schedule` the schedule's on-call person is made
//! commander, once, and never in place of someone a person chose.

use firebreak_proto::v1;

use crate::harness::{Stack, empty_runbooks, eventually};

const ON_CALL: &str = "users: [{ name: alice }, { name: bob }]
schedules:
  - name: primary
    time_zone: UTC
    combine: exclusive
    layers:
      - { name: always, members: [alice], rotation: { every: 1d, hand_off: '00:00', start: '2020-01-01' } }
commander:
  schedule: primary
";

async fn raise(s: &mut Stack, title: &str, severity: v1::Severity) -> String {
    s.intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: title.into(),
                source: "e2e".into(),
                severity: severity as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

async fn incident(s: &Stack, id: &str) -> v1::Incident {
    s.incidents
        .clone()
        .get_incident(v1::GetIncidentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
}

/// The incident's commander entries: (kind, actor, person).
async fn commander_entries(s: &Stack, id: &str) -> Vec<(String, String, String)> {
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
        .filter_map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            (data["role"] == "commander")
                .then(|| (e.kind, e.actor, data["person"].as_str().unwrap().to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_severe_incident_needs_a_commander_until_one_commands_it() {
    let mut s = Stack::start(&empty_runbooks(), "").await;
    let sev1 = raise(&mut s, "payments down", v1::Severity::Sev1).await;
    let sev2 = raise(&mut s, "payments slow", v1::Severity::Sev2).await;
    let sev3 = raise(&mut s, "one replica slow", v1::Severity::Sev3).await;
    // By default SEV1–2 need a commander; nobody is made one without a schedule.
    assert!(incident(&s, &sev1).await.needs_commander);
    assert!(incident(&s, &sev2).await.needs_commander);
    assert!(!incident(&s, &sev3).await.needs_commander);

    let assign = |id: &str, role: &str| v1::AssignRoleRequest {
        id: id.into(),
        role: role.into(),
        person: "bob".into(),
    };
    // Another role does not lift it; the commander does, and removing them brings it back.
    let inc = s
        .incidents
        .assign_role(assign(&sev1, "responder"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(inc.needs_commander);
    let inc = s
        .incidents
        .assign_role(assign(&sev1, "commander"))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(!inc.needs_commander);
    let inc = s
        .incidents
        .unassign_role(v1::UnassignRoleRequest {
            id: sev1.clone(),
            role: "commander".into(),
            person: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(inc.needs_commander);
    // A SEV3 made SEV2 by hand needs one; a resolved incident no longer does.
    let inc = s
        .incidents
        .reclassify(v1::ReclassifyRequest {
            id: sev3.clone(),
            severity: 2,
            reason: "customers notice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(inc.needs_commander);
    let inc = s
        .incidents
        .resolve(v1::ResolveRequest {
            id: sev2.clone(),
            summary: "recovered".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert!(!inc.needs_commander);
    assert!(commander_entries(&s, &sev2).await.is_empty());
}

#[tokio::test]
async fn the_schedules_on_call_person_commands_severe_incidents_once_and_never_over_a_person() {
    let mut s = Stack::start(&empty_runbooks(), ON_CALL).await;
    let minor = raise(&mut s, "disk 80%", v1::Severity::Sev4).await;
    // Bob takes command of a minor incident by hand before it becomes severe.
    s.incidents
        .assign_role(v1::AssignRoleRequest {
            id: minor.clone(),
            role: "commander".into(),
            person: "bob".into(),
        })
        .await
        .unwrap();
    let later = raise(&mut s, "disk 85%", v1::Severity::Sev4).await;
    let severe = raise(&mut s, "database down", v1::Severity::Sev1).await;

    // Alice is on call: she commands the SEV1, by the schedule's hand.
    let inc = eventually("the on-call person commands the SEV1", || async {
        let inc = incident(&s, &severe).await;
        (!inc.roles.is_empty()).then_some(inc)
    })
    .await;
    assert!(!inc.needs_commander);
    assert_eq!(
        commander_entries(&s, &severe).await,
        [(
            "role_assigned".to_owned(),
            "schedule:primary".to_owned(),
            "alice".to_owned()
        )]
    );
    // Opened before the SEV1 (its event handled first), the SEV4s got nobody from the
    // schedule: one needs no commander, the other has Bob's.
    assert!(incident(&s, &later).await.roles.is_empty());

    // Made SEV1 by hand, the one Bob commands stays his; the other gets Alice.
    for id in [&minor, &later] {
        s.incidents
            .reclassify(v1::ReclassifyRequest {
                id: id.clone(),
                severity: 1,
                reason: "worse".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    eventually(
        "the on-call person commands the incident made SEV1",
        || async { (!incident(&s, &later).await.roles.is_empty()).then_some(()) },
    )
    .await;
    let holders = |inc: v1::Incident| {
        inc.roles
            .into_iter()
            .map(|r| (r.role, r.person))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        holders(incident(&s, &later).await),
        [("commander".to_owned(), "alice".to_owned())]
    );
    assert_eq!(
        holders(incident(&s, &minor).await),
        [("commander".to_owned(), "bob".to_owned())]
    );
    assert_eq!(commander_entries(&s, &minor).await.len(), 1);
    // Each assignment happened once, whatever the events' redelivery.
    assert_eq!(commander_entries(&s, &severe).await.len(), 1);
    assert_eq!(commander_entries(&s, &later).await.len(), 1);
}
