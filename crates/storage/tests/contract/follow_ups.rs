//! Triage's post-incident follow-ups: written by a changeset with the timeline entry that
//! says so, read into a snapshot by incident, listed across incidents by owner and state; a
//! number taken meanwhile or a follow-up that is not there fails the whole changeset.

use firebreak_domain::follow_up::FollowUpState;
use firebreak_storage::{
    Error, FollowUpQuery, FollowUpRecord, FollowUpWrite, SnapshotRequest, TriageChangeset,
    TriageStore,
};
use serde_json::json;

use crate::fixtures::{Fixture, apply, entry, incident, micros, snapshot};

crate::contract!(triage:
    follow_ups_round_trip_and_list_by_incident_owner_and_state,
    a_taken_number_or_a_missing_follow_up_changes_nothing,
);

fn follow_up(incident_id: &str, number: u32, owner: &str, state: FollowUpState) -> FollowUpRecord {
    FollowUpRecord {
        incident_id: incident_id.into(),
        number,
        title: format!("item {number} of {incident_id}"),
        owner: owner.into(),
        due: Some(time::macros::date!(2026 - 12 - 20)),
        state,
        created_at: micros(10),
        created_by: "user:amy".into(),
        updated_at: micros(10),
    }
}

fn writes(records: &[FollowUpRecord], insert: bool) -> Vec<FollowUpWrite> {
    records
        .iter()
        .map(|r| FollowUpWrite {
            record: r.clone(),
            insert,
        })
        .collect()
}

fn query(f: impl FnOnce(&mut FollowUpQuery)) -> FollowUpQuery {
    let mut q = FollowUpQuery {
        limit: 100,
        ..Default::default()
    };
    f(&mut q);
    q
}

fn keys(list: &[FollowUpRecord]) -> Vec<(&str, u32)> {
    list.iter()
        .map(|f| (f.incident_id.as_str(), f.number))
        .collect()
}

async fn follow_ups_round_trip_and_list_by_incident_owner_and_state(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    apply(
        store,
        TriageChangeset {
            inserts: vec![incident("a", "ka", "resolved"), incident("b", "kb", "open")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut no_due = follow_up("b", 1, "amy", FollowUpState::Done);
    no_due.due = None;
    let made = [
        follow_up("a", 1, "amy", FollowUpState::Open),
        follow_up("a", 2, "bob", FollowUpState::Open),
        no_due,
    ];
    let written = apply(
        store,
        TriageChangeset {
            follow_ups: writes(&made, true),
            entries: vec![entry("a", "follow_up_added", json!({ "follow_up": 1 }))],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(written.len(), 1);

    // A snapshot asked for them reads each incident's by number; one not asked reads none.
    let asked = SnapshotRequest {
        incident_ids: vec!["a".into(), "b".into()],
        follow_ups: true,
        ..Default::default()
    };
    let snap = snapshot(store, asked.clone()).await;
    assert_eq!(snap.follow_ups["a"], made[..2]);
    assert_eq!(snap.follow_ups["b"], made[2..]);
    let plain = snapshot(
        store,
        SnapshotRequest {
            follow_ups: false,
            ..asked.clone()
        },
    )
    .await;
    assert!(plain.follow_ups.is_empty());

    // A change rewrites the row; the creation stays.
    let mut done = made[1].clone();
    done.state = FollowUpState::Done;
    done.owner = "carol".into();
    done.due = None;
    done.title = "renamed".into();
    done.updated_at = micros(20);
    apply(
        store,
        TriageChangeset {
            follow_ups: writes(std::slice::from_ref(&done), false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(snapshot(store, asked).await.follow_ups["a"][1], done);

    // Listed by incident, owner, state, and pages past a cursor.
    let all = store.follow_ups(&query(|_| {})).await.unwrap();
    assert_eq!(keys(&all), [("a", 1), ("a", 2), ("b", 1)]);
    let of_a = store
        .follow_ups(&query(|q| q.incident_id = Some("a".into())))
        .await
        .unwrap();
    assert_eq!(keys(&of_a), [("a", 1), ("a", 2)]);
    let amy = store
        .follow_ups(&query(|q| q.owner = Some("amy".into())))
        .await
        .unwrap();
    assert_eq!(keys(&amy), [("a", 1), ("b", 1)]);
    let amy_open = store
        .follow_ups(&query(|q| {
            q.owner = Some("amy".into());
            q.state = Some(FollowUpState::Open);
        }))
        .await
        .unwrap();
    assert_eq!(amy_open, made[..1]);
    let done_ones = store
        .follow_ups(&query(|q| q.state = Some(FollowUpState::Done)))
        .await
        .unwrap();
    assert_eq!(keys(&done_ones), [("a", 2), ("b", 1)]);
    let page = store
        .follow_ups(&query(|q| {
            q.after = Some(("a".into(), 1));
            q.limit = 1;
        }))
        .await
        .unwrap();
    assert_eq!(keys(&page), [("a", 2)]);
    let none = store
        .follow_ups(&query(|q| q.owner = Some("zed".into())))
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn a_taken_number_or_a_missing_follow_up_changes_nothing(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    apply(
        store,
        TriageChangeset {
            inserts: vec![incident("a", "ka", "open")],
            follow_ups: writes(&[follow_up("a", 1, "amy", FollowUpState::Open)], true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = store.timeline("a").await.unwrap().len();
    // The number another writer took.
    let again = apply(
        store,
        TriageChangeset {
            follow_ups: writes(&[follow_up("a", 1, "bob", FollowUpState::Open)], true),
            entries: vec![entry("a", "follow_up_added", json!({}))],
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    // A change of one that is not there.
    let missing = apply(
        store,
        TriageChangeset {
            follow_ups: writes(&[follow_up("a", 2, "bob", FollowUpState::Done)], false),
            entries: vec![entry("a", "follow_up_changed", json!({}))],
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(missing, Err(Error::Conflict(_))), "{missing:?}");
    let listed = store.follow_ups(&query(|_| {})).await.unwrap();
    assert_eq!(listed, [follow_up("a", 1, "amy", FollowUpState::Open)]);
    assert_eq!(store.timeline("a").await.unwrap().len(), before);
}
