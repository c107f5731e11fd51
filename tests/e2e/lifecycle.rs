//! The life cycle beyond acknowledge and resolve, in the running stack: a repeat alert
//! inside its reopen window reopens, outside it opens anew; a merge moves alerts and closes
//! with a link; mitigate and reclassify go on the timeline; bad requests change nothing.

use std::time::Duration;

use firebreak_proto::v1;
use tonic::Code;

use crate::harness::{Stack, empty_runbooks};

fn resolve(id: &str) -> v1::ResolveRequest {
    v1::ResolveRequest {
        id: id.into(),
        summary: "fixed".into(),
        ..Default::default()
    }
}

async fn get(s: &Stack, id: &str) -> v1::Incident {
    s.incidents
        .clone()
        .get_incident(v1::GetIncidentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
}

/// The incident's timeline entry kinds, deliveries left out.
async fn kinds(s: &Stack, id: &str) -> Vec<String> {
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
        .map(|e| e.kind)
        // Deliveries land as they happen; the life cycle's entries are what is asserted.
        .filter(|k| k != "notification")
        .collect()
}

#[tokio::test]
async fn repeats_reopen_inside_the_window_merges_move_alerts_and_changes_are_recorded() {
    let mut s = Stack::start(&empty_runbooks(), "reopen:\n  repeat_alerts_seconds: 600\n").await;
    let first = s.raise("db down").await;
    s.incidents.resolve(resolve(&first)).await.unwrap();

    // Inside the window the repeat reopens the same incident, which counts it.
    s.clock.advance(Duration::from_secs(599));
    assert_eq!(s.raise("db down").await, first);
    let inc = get(&s, &first).await;
    assert_eq!(
        (inc.state(), inc.alert_count, inc.resolved_at),
        (v1::IncidentState::Open, 2, None)
    );
    let k = kinds(&s, &first).await;
    assert_eq!(k[k.len() - 2..], ["reopened", "alert_attached"]);

    // Outside it a repeat opens a new incident.
    s.incidents.resolve(resolve(&first)).await.unwrap();
    s.clock.advance(Duration::from_secs(601));
    let second = s.raise("db down").await;
    assert_ne!(second, first);

    // A merge moves the alerts and closes the merged incident with a link.
    let web = s.raise("web down").await;
    let merged = s
        .incidents
        .merge(v1::MergeRequest {
            id: second.clone(),
            into: web.clone(),
            reason: "one outage".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(merged.alerts_moved, 1);
    let gone = get(&s, &second).await;
    assert_eq!(
        (gone.state(), gone.merged_into.as_str()),
        (v1::IncidentState::Closed, web.as_str())
    );
    assert_eq!(get(&s, &web).await.alert_count, 2);
    assert_eq!(kinds(&s, &second).await.last().unwrap(), "merged_into");
    assert_eq!(kinds(&s, &web).await.last().unwrap(), "merged");

    // Mitigated, then reclassified by hand with a reason.
    let inc = s
        .incidents
        .mitigate(v1::MitigateRequest {
            id: web.clone(),
            summary: "rolled back".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(inc.state(), v1::IncidentState::Mitigated);
    assert!(inc.mitigated_at.is_some());
    let inc = s
        .incidents
        .reclassify(v1::ReclassifyRequest {
            id: web.clone(),
            severity: 1,
            reason: "customers see errors".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    // The priority follows from SEV1 and the stored (high) urgency.
    assert_eq!((inc.severity, inc.priority), (1, 1));

    // Refused naming the field, and nothing changes.
    let before = kinds(&s, &web).await.len();
    let refusals = [
        (
            s.incidents
                .reclassify(v1::ReclassifyRequest {
                    id: web.clone(),
                    severity: 2,
                    ..Default::default()
                })
                .await,
            "reason",
        ),
        (
            s.incidents
                .reclassify(v1::ReclassifyRequest {
                    id: web.clone(),
                    category: "no-such-category".into(),
                    reason: "x".into(),
                    ..Default::default()
                })
                .await,
            "category",
        ),
    ];
    for (got, field) in refusals {
        let e = got.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let e = s
        .incidents
        .merge(v1::MergeRequest {
            id: web.clone(),
            into: web.clone(),
            reason: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("into"), "{}", e.message());
    assert_eq!(kinds(&s, &web).await.len(), before);

    // A person reopens the first incident inside the hour; after it, no more.
    let inc = s
        .incidents
        .reopen(v1::ReopenRequest {
            id: first.clone(),
            reason: "still failing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(inc.state(), v1::IncidentState::Open);
    s.incidents.resolve(resolve(&first)).await.unwrap();
    s.clock.advance(Duration::from_secs(3601));
    let e = s
        .incidents
        .reopen(v1::ReopenRequest {
            id: first.clone(),
            reason: "again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("reopen.window"), "{}", e.message());
}
