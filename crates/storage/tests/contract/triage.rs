//! Triage's store: incidents (one active per dedup key), their alerts, the append-only
//! timeline, processed events; what a snapshot reads and what apply refuses.

use firebreak_storage::{
    ChangeRecord, Error, SnapshotRequest, TimelineRecord, TriageChangeset, TriageStore,
};
use serde_json::json;

use crate::fixtures::{
    Backend, Fixture, apply, entry, event, incident, link, micros, pending_ids, snapshot,
    triage_store, update,
};

crate::contract!(triage:
    one_active_incident_per_dedup_key,
    the_timeline_is_append_only_and_in_order,
    entries_of_one_apply_are_numbered_in_the_changesets_order,
    processed_events_are_remembered,
    a_snapshot_reads_what_was_applied,
    alerts_attach_once,
    resolving_alerts_counts_those_left,
    incidents_list_newest_first,
    writes_without_a_prior_read,
    a_dropped_transaction_leaves_nothing,
    a_snapshot_answers_what_was_asked,
    apply_refuses_a_store_other_than_the_snapshot_said,
    incident_pages_follow_a_cursor_and_a_byte_bound,
    timeline_pages_follow_a_sequence_number_and_a_byte_bound,
    change_events_are_stored_once,
    incident_roles_round_trip_through_inserts_updates_and_reads,
    resolved_incidents_are_found_by_key_since_a_time_and_reopen,
    a_merge_moves_every_alert_and_its_unresolved_count,
    an_incident_lists_its_alerts_as_they_were_with_repeats_and_clearing,
    a_groups_active_incident_is_found_by_group_key_since_a_time,
    the_last_status_update_round_trips_and_a_bad_one_is_corrupt,
);

/// A changeset that writes `record`, its state changed.
fn updating(record: &firebreak_storage::IncidentRecord) -> TriageChangeset {
    TriageChangeset {
        updates: vec![update(record, true)],
        ..Default::default()
    }
}

/// The reopen window's read: the incident resolved last of a key, since a time, unless an
/// active one holds the key; a reopened incident holds its key again (a second active one
/// is refused).
async fn resolved_incidents_are_found_by_key_since_a_time_and_reopen(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let at = |n, mut i: firebreak_storage::IncidentRecord| {
        i.resolved_at = Some(micros(n));
        i
    };
    apply(
        store,
        opening([
            at(10, incident("r1", "k", "resolved")),
            at(20, incident("r2", "k", "resolved")),
            at(30, incident("m", "k3", "mitigated")),
            at(5, incident("old", "k2", "resolved")),
        ]),
    )
    .await
    .unwrap();
    let mut asked = by_keys(&["k", "k2", "k3"]);
    asked.resolved_since = Some(micros(8));
    let snap = snapshot(store, asked.clone()).await;
    let found: Vec<(&str, &str)> = {
        let mut v: Vec<_> = snap
            .resolved
            .iter()
            .map(|(k, i)| (k.as_str(), i.id.as_str()))
            .collect();
        v.sort();
        v
    };
    // The last of k; k2's is too old; k3 is held by its mitigated (active) incident.
    assert_eq!(found, [("k", "r2")]);
    assert_eq!(snap.active["k3"].id, "m");
    // Without a time, nothing resolved is read.
    assert!(snapshot(store, by_keys(&["k"])).await.resolved.is_empty());
    // Reopened, r2 is the key's active incident; r1 cannot be too.
    let mut r2 = snap.resolved["k"].clone();
    r2.state = "open".parse().unwrap();
    r2.resolved_at = None;
    apply(store, updating(&r2)).await.unwrap();
    assert_eq!(snapshot(store, by_keys(&["k"])).await.active["k"].id, "r2");
    let mut r1 = store.incident("r1").await.unwrap().unwrap();
    r1.state = "open".parse().unwrap();
    let err = apply(store, updating(&r1)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
}

/// A merge moves every alert of one incident to another, unresolved ones counted there.
async fn a_merge_moves_every_alert_and_its_unresolved_count(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut setup = opening([incident("a", "ka", "open"), incident("b", "kb", "open")]);
    setup.links = vec![
        link("a1", "a", true),
        link("a2", "a", false),
        link("b1", "b", true),
    ];
    apply(store, setup).await.unwrap();
    let clear = TriageChangeset {
        resolved_alerts: vec!["a2".into()],
        ..Default::default()
    };
    apply(store, clear).await.unwrap();
    let mut merged = store.incident("a").await.unwrap().unwrap();
    merged.state = "closed".parse().unwrap();
    merged.merged_into = "b".into();
    let mut changes = updating(&merged);
    changes.moves = vec![firebreak_storage::AlertMove {
        from: "a".into(),
        to: "b".into(),
    }];
    apply(store, changes).await.unwrap();
    let mut asked = by_ids(&["a", "b"]);
    asked.alert_ids = vec!["a1".into(), "a2".into(), "b1".into()];
    let snap = snapshot(store, asked).await;
    for alert in ["a1", "a2", "b1"] {
        assert_eq!(snap.links[alert].incident_id, "b", "{alert}");
    }
    assert_eq!((snap.unresolved["a"], snap.unresolved["b"]), (0, 2));
    assert_eq!(snap.incidents["a"].merged_into, "b");
    // The key of the merged incident is free.
    assert!(snapshot(store, by_keys(&["ka"])).await.active.is_empty());
}

/// A changeset that opens incidents.
fn opening(
    incidents: impl IntoIterator<Item = firebreak_storage::IncidentRecord>,
) -> TriageChangeset {
    TriageChangeset {
        inserts: incidents.into_iter().collect(),
        ..Default::default()
    }
}

/// A changeset that appends timeline entries.
fn appending(
    entries: impl IntoIterator<Item = firebreak_storage::NewTimelineEntry>,
) -> TriageChangeset {
    let mut changes = TriageChangeset::default();
    changes.entries.extend(entries);
    changes
}

/// A request naming `ids` in one of its lists.
fn asking(list: fn(&mut SnapshotRequest) -> &mut Vec<String>, ids: &[&str]) -> SnapshotRequest {
    let mut request = SnapshotRequest::default();
    *list(&mut request) = ids.iter().map(|&i| i.into()).collect();
    request
}

/// Incidents by id, with their unresolved alerts counted.
fn by_ids(ids: &[&str]) -> SnapshotRequest {
    SnapshotRequest {
        count_unresolved: true,
        ..asking(|r| &mut r.incident_ids, ids)
    }
}

fn by_keys(keys: &[&str]) -> SnapshotRequest {
    asking(|r| &mut r.dedup_keys, keys)
}

fn by_alerts(ids: &[&str]) -> SnapshotRequest {
    asking(|r| &mut r.alert_ids, ids)
}

fn by_events(ids: &[&str]) -> SnapshotRequest {
    asking(|r| &mut r.event_ids, ids)
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Conflict(_)))
}

async fn incident_pages_follow_a_cursor_and_a_byte_bound(f: &Fixture<dyn TriageStore>) {
    use firebreak_storage::IncidentCursor;
    let store = &*f.store;
    let all = (0..7).map(|n| {
        let mut i = incident(
            &format!("i{n}"),
            &format!("k{n}"),
            ["open", "closed"][n % 2],
        );
        // Two share an opening time: the cursor must tell them apart by id.
        i.opened_at = micros(100 + (n as i64).min(5));
        if n == 3 {
            i.resolution_summary = "s".repeat(100_000);
        }
        i
    });
    apply(store, opening(all)).await.unwrap();
    let ids = |list: &[firebreak_storage::IncidentRecord]| {
        list.iter().map(|i| i.id.clone()).collect::<Vec<_>>()
    };
    let cursor = |i: &firebreak_storage::IncidentRecord| IncidentCursor {
        opened_at: i.opened_at,
        id: i.id.clone(),
    };
    // Pages of 3, then from where each ended: every incident once, newest first.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .incidents_page(None, after.as_ref(), 3, usize::MAX)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(ids(&page));
        after = page.last().map(cursor);
    }
    assert_eq!(seen, ["i6", "i5", "i4", "i3", "i2", "i1", "i0"]);
    // Of one state, after a cursor.
    let page = store
        .incidents_page(
            Some("open"),
            Some(&IncidentCursor {
                opened_at: micros(105),
                id: "i5".into(),
            }),
            10,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["i4", "i2", "i0"]);
    // The byte bound: reading stops at the incident crossing it (i3's 100 kB summary).
    let page = store.incidents_page(None, None, 10, 50_000).await.unwrap();
    assert_eq!(ids(&page), ["i6", "i5", "i4", "i3"]);
    let page = store.incidents_page(None, None, 10, 1).await.unwrap();
    assert_eq!(ids(&page), ["i6"], "a page holds at least one incident");
}

async fn timeline_pages_follow_a_sequence_number_and_a_byte_bound(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open"), incident("b", "k2", "open")]);
    for n in 0..5 {
        let text = if n == 2 {
            "x".repeat(100_000)
        } else {
            n.to_string()
        };
        changes
            .entries
            .push(entry("a", "note", json!({ "text": text })));
        changes.entries.push(entry("b", "note", json!({})));
    }
    let written: Vec<TimelineRecord> = apply(store, changes)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.incident_id == "a")
        .collect();
    let page = store.timeline_page("a", 0, 2, usize::MAX).await.unwrap();
    assert_eq!(page, written[..2]);
    let page = store
        .timeline_page("a", page[1].seq, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page, written[2..]);
    let page = store.timeline_page("a", 0, 10, 50_000).await.unwrap();
    assert_eq!(page, written[..3], "stops at the entry crossing the bound");
    let page = store
        .timeline_page("a", written[4].seq, 10, usize::MAX)
        .await
        .unwrap();
    assert!(page.is_empty());
}

async fn change_events_are_stored_once(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let change = ChangeRecord {
        id: "ev-1".into(),
        integration: "pd".into(),
        summary: "deploy 42".into(),
        source: "ci".into(),
        at: micros(9),
        details: r#"{"sha":"abc"}"#.into(),
    };
    let storing = |change: &ChangeRecord| TriageChangeset {
        changes: vec![change.clone()],
        ..Default::default()
    };
    apply(store, storing(&change)).await.unwrap();
    // Once: storing it again is a conflict, and changes nothing.
    let mut other = change.clone();
    other.summary = "deploy 43".into();
    let again = apply(store, storing(&other)).await;
    assert!(is_conflict(&again), "{again:?}");
    assert_eq!(store.change("ev-1").await.unwrap(), Some(change));
    assert_eq!(store.change("ev-2").await.unwrap(), None);
}

async fn one_active_incident_per_dedup_key(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    apply(store, opening([incident("a", "k", "open")]))
        .await
        .unwrap();

    // A second active incident with the key is refused, whatever the decision believed.
    let second = apply(store, opening([incident("b", "k", "acknowledged")])).await;
    assert!(is_conflict(&second), "{second:?}");
    assert_eq!(store.incident("b").await.unwrap(), None);
    assert_eq!(snapshot(store, by_keys(&["k"])).await.active["k"].id, "a");

    // An inactive incident with the key is no conflict; nor is another key.
    let more = opening([
        incident("old", "k", "closed"),
        incident("other", "k2", "open"),
    ]);
    apply(store, more).await.unwrap();

    // Reusing an id is a conflict too.
    let reused = apply(store, opening([incident("a", "k3", "open")])).await;
    assert!(is_conflict(&reused), "{reused:?}");

    // Resolving the first frees the key for an incident the same changeset opens.
    let mut a = store.incident("a").await.unwrap().unwrap();
    a.state = "resolved".parse().unwrap();
    a.resolved_at = Some(micros(7));
    let mut changes = opening([incident("c", "k", "open")]);
    changes.updates.push(update(&a, true));
    apply(store, changes).await.unwrap();
    assert_eq!(snapshot(store, by_keys(&["k"])).await.active["k"].id, "c");
    assert_eq!(
        store.incident("a").await.unwrap().unwrap().state,
        firebreak_domain::IncidentState::Resolved
    );
    assert_eq!(store.incidents(Some("open"), 10).await.unwrap().len(), 2);
    assert_eq!(store.incidents(None, 10).await.unwrap().len(), 4);

    // Reopening the resolved one while "c" is active is refused.
    a.state = "open".parse().unwrap();
    let reopening = TriageChangeset {
        updates: vec![update(&a, true)],
        ..Default::default()
    };
    assert!(apply(store, reopening).await.is_err());
    assert_eq!(
        store.incident("a").await.unwrap().unwrap().state,
        firebreak_domain::IncidentState::Resolved
    );
}

async fn the_timeline_is_append_only_and_in_order(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open"), incident("b", "k2", "open")]);
    changes.entries = ["a", "b", "a", "a", "b"]
        .into_iter()
        .enumerate()
        .map(|(n, id)| entry(id, "note", json!({ "n": n })))
        .collect();
    let written = apply(store, changes).await.unwrap();
    assert!(
        written.windows(2).all(|w| w[0].seq < w[1].seq),
        "{written:?}"
    );
    let of = |id: &str| {
        written
            .iter()
            .filter(|e| e.incident_id == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(store.timeline("a").await.unwrap(), of("a"));
    assert_eq!(store.timeline("b").await.unwrap(), of("b"));
    assert!(store.timeline("nope").await.unwrap().is_empty());

    // A later transaction's entries come after, whether it took a snapshot first or not.
    let mut tx = store.begin().await.unwrap();
    tx.snapshot(&by_ids(&["a"])).await.unwrap();
    let read_first = tx
        .apply(appending([entry("a", "note", json!({ "n": "later" }))]))
        .await
        .unwrap()
        .remove(0);
    // A note on "a" in a changeset of its own.
    let note = |n: &'static str| async move {
        let changes = appending([entry("a", "note", json!({ "n": n }))]);
        apply(store, changes).await.unwrap().remove(0)
    };
    let blind = note("blind").await;
    let timeline = store.timeline("a").await.unwrap();
    assert_eq!(timeline.len(), 5);
    assert_eq!(timeline[3], read_first);
    assert_eq!(timeline[4], blind);
    assert!(timeline.windows(2).all(|w| w[0].seq < w[1].seq));

    // Raw SQL cannot rewrite history either.
    let err = f
        .backend
        .exec_raw("UPDATE timeline SET kind = 'forged'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = f
        .backend
        .exec_raw("DELETE FROM timeline")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    if matches!(f.backend, Backend::Postgres(_)) {
        let err = f.backend.exec_raw("TRUNCATE timeline").await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert_eq!(store.timeline("a").await.unwrap(), timeline);

    // An entry needs its incident: a changeset whose last entry has none leaves none of its
    // entries, and numbering goes on after it.
    let orphaned = appending([
        entry("a", "note", json!({ "n": "dropped" })),
        entry("nope", "note", json!({})),
    ]);
    assert!(apply(store, orphaned).await.is_err());
    assert_eq!(store.timeline("a").await.unwrap(), timeline);
    let after = note("after").await;
    let now = store.timeline("a").await.unwrap();
    assert_eq!(now.len(), 6);
    assert_eq!(now[5], after);
    assert!(after.seq > blind.seq);
}

async fn entries_of_one_apply_are_numbered_in_the_changesets_order(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open"), incident("b", "k2", "open")]);
    changes.entries = (0..40)
        .map(|n| entry(["a", "b", "b", "a", "a"][n % 5], "note", json!({ "n": n })))
        .collect();
    let asked = changes.entries.clone();
    let written = apply(store, changes).await.unwrap();
    // Returned in the changeset's order, as asked, numbered upwards.
    let returned: Vec<_> = written
        .iter()
        .map(|e| entry(&e.incident_id, &e.kind, e.data.clone()))
        .collect();
    assert_eq!(returned, asked);
    assert!(
        written.windows(2).all(|w| w[0].seq < w[1].seq),
        "{written:?}"
    );
    // As stored: each incident's timeline holds its entries in that order, with those numbers.
    for id in ["a", "b"] {
        let mine: Vec<_> = written
            .iter()
            .filter(|e| e.incident_id == id)
            .cloned()
            .collect();
        assert_eq!(store.timeline(id).await.unwrap(), mine);
    }
    // The next changeset's entries come after all of them.
    let next = apply(store, appending([entry("b", "note", json!({}))]))
        .await
        .unwrap();
    assert!(next[0].seq > written.last().unwrap().seq);
}

async fn processed_events_are_remembered(f: &Fixture<dyn TriageStore>) {
    use std::collections::HashSet;
    let store = &*f.store;
    let marking = |ids: &[&str]| TriageChangeset {
        processed: ids.iter().map(|&i| i.into()).collect(),
        ..Default::default()
    };
    let asked = by_events(&["event-1", "event-2", "event-3"]);
    let handled = HashSet::from(["event-1".to_owned(), "event-2".to_owned()]);
    apply(store, marking(&["event-1", "event-2"]))
        .await
        .unwrap();
    assert_eq!(snapshot(store, asked.clone()).await.processed, handled);

    // Marking one again is a conflict, and the changeset's other marks are not kept.
    let again = apply(store, marking(&["event-3", "event-1"])).await;
    assert!(is_conflict(&again), "{again:?}");

    // A reopened store remembers what was processed.
    let store = triage_store(&f.backend).await;
    assert_eq!(snapshot(&*store, asked.clone()).await.processed, handled);
    apply(&*store, marking(&["event-3"])).await.unwrap();
    assert_eq!(snapshot(&*store, asked).await.processed.len(), 3);
}

/// A holder of `role`, assigned at `at` by an actor with quotes and non-ASCII in its name
/// (what JSON text must carry unchanged).
fn holder(role: &str, person: &str, at: i64) -> firebreak_storage::RoleHolder {
    firebreak_storage::RoleHolder {
        role: role.into(),
        person: person.into(),
        assigned_at: micros(at),
        assigned_by: "runbook:\"triage\" ✓".into(),
    }
}

async fn incident_roles_round_trip_through_inserts_updates_and_reads(f: &Fixture<dyn TriageStore>) {
    use std::collections::HashMap;
    let store = &*f.store;
    let mut a = incident("a", "k", "open");
    a.roles = vec![
        holder("commander", "alice", 1_700_000_000_000_001),
        holder("responder", "bob", 2),
        holder("responder", "carol", 3),
    ];
    apply(store, opening([a.clone(), incident("b", "k2", "open")]))
        .await
        .unwrap();
    // Every read gives them back, in order.
    let reads = async || {
        let asked = SnapshotRequest {
            dedup_keys: vec!["k".into()],
            incident_ids: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let snap = snapshot(store, asked).await;
        let page = store
            .incidents_page(None, None, 10, usize::MAX)
            .await
            .unwrap();
        let listed: HashMap<String, firebreak_storage::IncidentRecord> =
            page.into_iter().map(|i| (i.id.clone(), i)).collect();
        (
            store.incident("a").await.unwrap().unwrap(),
            snap.incidents["a"].clone(),
            snap.active["k"].clone(),
            listed["a"].clone(),
            listed["b"].roles.clone(),
        )
    };
    let (by_id, in_snapshot, active, listed, none) = reads().await;
    for (what, got) in [
        ("incident", &by_id),
        ("snapshot", &in_snapshot),
        ("active", &active),
        ("page", &listed),
    ] {
        assert_eq!(got, &a, "{what}");
    }
    assert!(none.is_empty(), "{none:?}");

    // An update keeping the state writes the roles (a hand-off: the commander changes).
    a.roles.remove(0);
    a.roles.push(holder("commander", "dave", 4));
    apply(
        store,
        TriageChangeset {
            updates: vec![update(&a, false)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(reads().await.0, a);
    // So does one changing it; the roles can go back to none.
    a.state = "acknowledged".parse().unwrap();
    a.roles.clear();
    apply(
        store,
        TriageChangeset {
            updates: vec![update(&a, true)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (by_id, in_snapshot, ..) = reads().await;
    assert_eq!((&by_id, &in_snapshot), (&a, &a));

    // A row written before roles existed (no roles column in its INSERT) has none.
    f.backend
        .exec_raw(
            "INSERT INTO incidents (id, title, description, category, severity, priority,
                urgency, state, dedup_key, alert_count, labels, source, opened_at,
                resolution_summary, root_cause, review, updated_at)
             VALUES ('old', 't', '', 'c', 3, 3, 'medium', 'closed', 'old', 1, '{}', 's', 1,
                '', '', '', 1)",
        )
        .await
        .unwrap();
    assert_eq!(
        store.incident("old").await.unwrap().unwrap().roles,
        Vec::new()
    );
    // Roles that do not read back as holders are a corrupt row naming them, never none.
    f.backend
        .exec_raw("UPDATE incidents SET roles = '[{\"role\": 1}]' WHERE id = 'old'")
        .await
        .unwrap();
    let err = store.incident("old").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("roles"), "{err}");
}

async fn a_snapshot_reads_what_was_applied(f: &Fixture<dyn TriageStore>) {
    use std::collections::HashMap;
    let store = &*f.store;
    let original = incident("a", "k", "open");
    apply(store, opening([original.clone()])).await.unwrap();
    let asked = SnapshotRequest {
        count_unresolved: true,
        dedup_keys: vec!["k".into(), "nope".into(), "ignored".into()],
        incident_ids: vec!["a".into(), "nope".into()],
        ..Default::default()
    };
    let snap = snapshot(store, asked.clone()).await;
    assert_eq!(
        snap.incidents,
        HashMap::from([("a".into(), original.clone())])
    );
    assert_eq!(snap.active, HashMap::from([("k".into(), original.clone())]));
    assert_eq!(snap.unresolved, HashMap::from([("a".into(), 0)]));

    // An update writes what may change; the dedup key, source and opening time stay.
    let mut changed = original.clone();
    changed.title = "new title".into();
    changed.severity = 1;
    changed.priority = 1;
    changed.alert_count = 2;
    changed.labels.insert("team".into(), "db".into());
    changed.state = "acknowledged".parse().unwrap();
    changed.acknowledged_at = Some(micros(9));
    changed.updated_at = micros(9);
    changed.dedup_key = "ignored".into();
    changed.source = "ignored".into();
    changed.opened_at = micros(99);
    let updating = |i: &firebreak_storage::IncidentRecord, state_changed| TriageChangeset {
        updates: vec![update(i, state_changed)],
        ..Default::default()
    };
    apply(store, updating(&changed, true)).await.unwrap();
    let mut expected = changed.clone();
    expected.dedup_key = "k".into();
    expected.source = "test".into();
    expected.opened_at = micros(1);
    let snap = snapshot(store, asked.clone()).await;
    assert_eq!(
        snap.incidents,
        HashMap::from([("a".into(), expected.clone())])
    );
    assert_eq!(snap.active, HashMap::from([("k".into(), expected.clone())]));
    assert_eq!(store.incident("a").await.unwrap(), Some(expected.clone()));

    // An update that keeps the state writes the rest all the same.
    let mut kept = expected.clone();
    kept.alert_count = 4;
    kept.title = "newer title".into();
    apply(store, updating(&kept, false)).await.unwrap();
    assert_eq!(snapshot(store, asked).await.active["k"], kept);

    // Values out of range are refused, and nothing changes.
    let mut bad = kept.clone();
    bad.severity = 9;
    bad.alert_count = 5;
    assert!(apply(store, updating(&bad, false)).await.is_err());
    assert_eq!(store.incident("a").await.unwrap(), Some(kept));
}

async fn alerts_attach_once(f: &Fixture<dyn TriageStore>) {
    use std::collections::HashMap;
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open")]);
    changes.links = vec![link("al-1", "a", true), link("al-2", "a", false)];
    apply(store, changes).await.unwrap();
    let snap = snapshot(store, by_alerts(&["al-1", "al-2", "al-3"])).await;
    assert_eq!(
        snap.links,
        HashMap::from([
            ("al-1".into(), link("al-1", "a", true)),
            ("al-2".into(), link("al-2", "a", false)),
        ])
    );

    // Attaching one twice in a changeset is a conflict, and nothing of it is written.
    let mut twice = opening([incident("b", "k2", "open")]);
    twice.links = vec![link("al-3", "b", true), link("al-3", "b", false)];
    let twice = apply(store, twice).await;
    assert!(is_conflict(&twice), "{twice:?}");
    assert_eq!(store.incident("b").await.unwrap(), None);

    // So is attaching one attached before.
    let mut again = opening([incident("b", "k2", "open")]);
    again.links = vec![link("al-1", "b", false)];
    let again = apply(store, again).await;
    assert!(is_conflict(&again), "{again:?}");
    assert_eq!(store.incident("b").await.unwrap(), None);
    let snap = snapshot(store, by_alerts(&["al-1", "al-3"])).await;
    assert_eq!(
        snap.links,
        HashMap::from([("al-1".into(), link("al-1", "a", true))])
    );

    // An alert attaches only to an incident that exists.
    let orphan = TriageChangeset {
        links: vec![link("al-9", "nope", false)],
        ..Default::default()
    };
    assert!(apply(store, orphan).await.is_err());
    assert!(snapshot(store, by_alerts(&["al-9"])).await.links.is_empty());
}

async fn resolving_alerts_counts_those_left(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open"), incident("b", "k2", "open")]);
    changes.links = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")]
        .map(|(alert, inc)| link(alert, inc, alert.ends_with('1')))
        .into();
    // Cleared in the changeset that attached it.
    changes.resolved_alerts = vec!["a1".into()];
    apply(store, changes).await.unwrap();
    let left = |snap: firebreak_storage::TriageSnapshot| {
        (
            snap.unresolved.get("a").copied(),
            snap.unresolved.get("b").copied(),
        )
    };
    assert_eq!(
        left(snapshot(store, by_ids(&["a", "b"])).await),
        (Some(2), Some(1))
    );

    let clearing = |ids: &[&str]| TriageChangeset {
        resolved_alerts: ids.iter().map(|&i| i.into()).collect(),
        ..Default::default()
    };
    apply(store, clearing(&["a2"])).await.unwrap();
    // Clearing one cleared before, or one never attached, is a conflict that clears nothing.
    for refused in [&["a3", "a1"], &["a3", "nope"]] {
        let r = apply(store, clearing(refused)).await;
        assert!(is_conflict(&r), "{refused:?}: {r:?}");
    }
    // The incidents of the alerts asked, with what is left of each.
    let asked = SnapshotRequest {
        count_unresolved: true,
        alert_ids: vec!["a1".into(), "a3".into(), "b1".into()],
        incidents_of_alerts: true,
        ..Default::default()
    };
    let snap = snapshot(store, asked).await;
    assert!(snap.links["a1"].resolved && !snap.links["a3"].resolved);
    let mut ids: Vec<_> = snap.incidents.keys().cloned().collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(left(snap), (Some(1), Some(1)));

    apply(store, clearing(&["a3", "b1"])).await.unwrap();
    assert_eq!(
        left(snapshot(store, by_ids(&["a", "b"])).await),
        (Some(0), Some(0))
    );
}

async fn incidents_list_newest_first(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut all: Vec<_> = ["open", "resolved", "open", "closed", "acknowledged"]
        .into_iter()
        .enumerate()
        .map(|(n, state)| {
            let mut i = incident(&format!("i{n}"), &format!("k{n}"), state);
            i.opened_at = micros(100 + n as i64);
            i
        })
        .collect();
    // Same opening time: the greater id first.
    let mut tie = incident("i9", "k9", "open");
    tie.opened_at = micros(104);
    all.push(tie);
    apply(store, opening(all)).await.unwrap();

    let ids = |list: Vec<firebreak_storage::IncidentRecord>| {
        list.into_iter().map(|i| i.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.incidents(None, 10).await.unwrap()),
        ["i9", "i4", "i3", "i2", "i1", "i0"]
    );
    assert_eq!(ids(store.incidents(None, 2).await.unwrap()), ["i9", "i4"]);
    assert_eq!(
        ids(store.incidents(Some("open"), 10).await.unwrap()),
        ["i9", "i2", "i0"]
    );
    assert_eq!(
        ids(store.incidents(Some("closed"), 10).await.unwrap()),
        ["i3"]
    );
    assert!(store.incidents(Some("nope"), 10).await.unwrap().is_empty());
    assert_eq!(
        store.incident("i1").await.unwrap().unwrap().state,
        firebreak_domain::IncidentState::Resolved
    );
}

async fn writes_without_a_prior_read(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    apply(store, opening([incident("a", "k", "open")]))
        .await
        .unwrap();

    // Updating, attaching and appending to an incident no snapshot read.
    let mut a = incident("a", "k", "acknowledged");
    a.alert_count = 5;
    let changes = TriageChangeset {
        updates: vec![update(&a, true)],
        links: vec![link("al-1", "a", false)],
        entries: vec![entry("a", "acknowledged", json!({}))],
        events: vec![event("ev-1")],
        ..Default::default()
    };
    let written = apply(store, changes).await.unwrap();
    assert_eq!(store.incident("a").await.unwrap(), Some(a));
    assert_eq!(store.timeline("a").await.unwrap(), written);
    assert_eq!(pending_ids(store).await, ["ev-1"]);
    assert_eq!(
        snapshot(store, by_alerts(&["al-1"])).await.links["al-1"],
        link("al-1", "a", false)
    );
}

async fn a_dropped_transaction_leaves_nothing(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    apply(store, opening([incident("a", "k", "open")]))
        .await
        .unwrap();
    // A transaction dropped after its snapshot (its decision wrote nothing) changes nothing,
    // and lets go of what it locked: the update below would wait for it otherwise.
    let mut tx = store.begin().await.unwrap();
    let read = tx
        .snapshot(&SnapshotRequest {
            count_unresolved: true,
            dedup_keys: vec!["k".into()],
            incident_ids: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(read.active["k"].id, "a");
    drop(tx);

    // A changeset failing at its last entry leaves nothing of the rest.
    let mut changes = opening([incident("b", "k2", "open")]);
    changes.processed = vec!["ev".into()];
    changes.links = vec![link("al-1", "b", true)];
    changes.entries = vec![
        entry("b", "opened", json!({})),
        entry("nope", "note", json!({})),
    ];
    changes.events = vec![event("ev-1")];
    assert!(apply(store, changes).await.is_err());
    assert_eq!(store.incident("b").await.unwrap(), None);
    assert!(store.timeline("b").await.unwrap().is_empty());
    assert!(store.pending(10).await.unwrap().is_empty());
    let left = snapshot(
        store,
        SnapshotRequest {
            count_unresolved: true,
            alert_ids: vec!["al-1".into()],
            event_ids: vec!["ev".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(
        left.links.is_empty() && left.processed.is_empty(),
        "{left:?}"
    );

    // What an applied changeset enqueued is pending, in order.
    let mut a = store.incident("a").await.unwrap().unwrap();
    a.alert_count = 2;
    let changes = TriageChangeset {
        processed: vec!["ev".into()],
        updates: vec![update(&a, false)],
        events: vec![event("ev-2"), event("ev-3")],
        ..Default::default()
    };
    apply(store, changes).await.unwrap();
    assert_eq!(pending_ids(store).await, ["ev-2", "ev-3"]);
    assert_eq!(store.incident("a").await.unwrap(), Some(a));
}

async fn a_snapshot_answers_what_was_asked(f: &Fixture<dyn TriageStore>) {
    use firebreak_storage::TriageSnapshot;
    use std::collections::{HashMap, HashSet};
    let store = &*f.store;
    let mut changes = opening([incident("a", "k", "open"), incident("old", "k2", "closed")]);
    changes.links = vec![link("al-1", "a", true)];
    changes.processed = vec!["ev-1".into()];
    apply(store, changes).await.unwrap();
    let a = store.incident("a").await.unwrap().unwrap();
    let old = store.incident("old").await.unwrap().unwrap();

    let mut asked = SnapshotRequest {
        count_unresolved: true,
        alert_ids: vec!["al-1".into(), "al-2".into()],
        dedup_keys: ["k", "k2", "k3", "k"].map(String::from).into(),
        incident_ids: vec!["old".into(), "nope".into()],
        incidents_of_alerts: true,
        event_ids: vec!["ev-1".into(), "ev-2".into()],
        resolved_since: None,
        group_keys: Vec::new(),
        grouped_since: None,
        follow_ups: false,
    };
    let snap = snapshot(store, asked.clone()).await;
    assert_eq!(
        snap,
        TriageSnapshot {
            links: HashMap::from([("al-1".into(), link("al-1", "a", true))]),
            active: HashMap::from([("k".into(), a.clone())]),
            incidents: HashMap::from([("a".into(), a), ("old".into(), old.clone())]),
            unresolved: HashMap::from([("a".into(), 1), ("old".into(), 0)]),
            processed: HashSet::from(["ev-1".into()]),
            resolved: HashMap::new(),
            grouped: HashMap::new(),
            follow_ups: HashMap::new(),
        }
    );
    // Without the incidents of the alerts, those asked by id alone.
    asked.incidents_of_alerts = false;
    let snap = snapshot(store, asked).await;
    assert_eq!(snap.incidents, HashMap::from([("old".into(), old)]));
    assert_eq!(snap.unresolved, HashMap::from([("old".into(), 0)]));
    // Asked nothing, it reads nothing.
    assert_eq!(
        snapshot(store, SnapshotRequest::default()).await,
        TriageSnapshot::default()
    );
}

async fn apply_refuses_a_store_other_than_the_snapshot_said(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut setup = opening([incident("a", "k", "open")]);
    setup.links = vec![link("al-1", "a", true), link("al-2", "a", false)];
    setup.resolved_alerts = vec!["al-2".into()];
    setup.processed = vec!["ev-1".into()];
    setup.entries = vec![entry("a", "opened", json!({}))];
    apply(store, setup).await.unwrap();
    let incidents = store.incidents(None, 10).await.unwrap();
    let timeline = store.timeline("a").await.unwrap();

    // Each conflicting changeset also carries what a decision writes alongside: an incident
    // opened, an alert attached, an entry, a mark, an event.
    let alongside = |mut c: TriageChangeset| {
        c.inserts.push(incident("side", "side-key", "open"));
        c.links.push(link("al-side", "side", true));
        c.entries.push(entry("a", "note", json!({})));
        c.processed.push("ev-side".into());
        c.events.push(event("side"));
        c
    };
    let cases = [
        (
            "a processed mark already present",
            TriageChangeset {
                processed: vec!["ev-1".into()],
                ..Default::default()
            },
        ),
        (
            "an alert already attached",
            TriageChangeset {
                links: vec![link("al-1", "a", false)],
                ..Default::default()
            },
        ),
        (
            "an active dedup key taken",
            opening([incident("b", "k", "open")]),
        ),
        (
            "an alert already cleared",
            TriageChangeset {
                resolved_alerts: vec!["al-2".into()],
                ..Default::default()
            },
        ),
    ];
    let asked = SnapshotRequest {
        count_unresolved: true,
        alert_ids: vec!["al-1".into(), "al-side".into()],
        incident_ids: vec!["a".into()],
        event_ids: vec!["ev-side".into()],
        ..Default::default()
    };
    for (what, conflicting) in cases {
        let refused = apply(store, alongside(conflicting)).await;
        assert!(is_conflict(&refused), "{what}: {refused:?}");
        assert_eq!(
            store.incidents(None, 10).await.unwrap(),
            incidents,
            "{what}"
        );
        assert_eq!(store.timeline("a").await.unwrap(), timeline, "{what}");
        assert!(pending_ids(store).await.is_empty(), "{what}");
        let snap = snapshot(store, asked.clone()).await;
        assert_eq!(snap.links.len(), 1, "{what}: {:?}", snap.links);
        assert_eq!(snap.links["al-1"], link("al-1", "a", true), "{what}");
        assert_eq!(snap.unresolved["a"], 1, "{what}");
        assert!(snap.processed.is_empty(), "{what}");
    }
    // What went alongside is no conflict by itself.
    apply(store, alongside(TriageChangeset::default()))
        .await
        .unwrap();
    assert_eq!(snapshot(store, asked).await.links.len(), 2);
}

/// Each attachment keeps what its alert was; repeats count and move its last sighting (two
/// repeats of one alert in one changeset included); clearing stamps it; attachments from
/// before any of this was kept read as seen when attached.
async fn an_incident_lists_its_alerts_as_they_were_with_repeats_and_clearing(
    f: &Fixture<dyn TriageStore>,
) {
    use firebreak_domain::Micros;
    use firebreak_storage::{AlertRepeat, AlertSeen};
    let store = &*f.store;
    let at = Micros::from_unix_micros;
    let seen = |id: &str, fired: i64, host: &str| AlertSeen {
        alert_id: id.into(),
        title: format!("disk full on {host}"),
        labels: [("host".to_owned(), host.to_owned())].into(),
        fired_at: at(fired),
    };
    let repeat = |id: &str, when: i64| AlertRepeat {
        alert_id: id.into(),
        at: at(when),
    };
    let mut changes = opening([incident("a", "k", "open"), incident("b", "k2", "open")]);
    changes.links = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a")]
        .map(|(alert, inc)| link(alert, inc, alert == "a1"))
        .into();
    // a3 has nothing seen: as an attachment made before this was kept.
    changes.seen = vec![seen("a1", 10, "x"), seen("a2", 20, "y"), seen("b1", 5, "z")];
    apply(store, changes).await.unwrap();
    let repeats = TriageChangeset {
        repeats: vec![repeat("a1", 30), repeat("a1", 25)],
        ..Default::default()
    };
    apply(store, repeats).await.unwrap();
    let cleared = TriageChangeset {
        repeats: vec![repeat("a2", 40)],
        resolved_alerts: vec!["a2".into()],
        ..Default::default()
    };
    apply(store, cleared).await.unwrap();

    let listed = store.incident_alerts("a", None, 10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3"]);
    let (a1, a2, a3) = (&listed[0], &listed[1], &listed[2]);
    assert_eq!(
        (
            a1.title.as_str(),
            a1.labels["host"].as_str(),
            a1.opened,
            a1.resolved
        ),
        ("disk full on x", "x", true, false)
    );
    assert_eq!(
        (a1.repeats, a1.first_seen, a1.last_seen),
        (2, at(10), at(30))
    );
    assert_eq!(a1.resolved_at, None);
    assert_eq!(
        (a2.repeats, a2.first_seen, a2.last_seen),
        (1, at(20), at(40))
    );
    assert!(a2.resolved && a2.resolved_at.is_some(), "{a2:?}");
    assert_eq!((a3.title.as_str(), a3.labels.len(), a3.repeats), ("", 0, 0));
    assert_eq!(
        (a3.first_seen, a3.last_seen),
        (a3.attached_at, a3.attached_at)
    );
    assert!(listed.iter().all(|a| a.incident_id == "a"));

    assert_eq!(store.incident_alerts("a", None, 2).await.unwrap().len(), 2);
    // Keyset pages of one: every alert once, in order, then an empty page.
    let (mut paged, mut after) = (Vec::new(), None);
    loop {
        let page = store.incident_alerts("a", after.as_ref(), 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        paged.extend(page.into_iter().map(|a| a.alert_id));
    }
    assert_eq!(paged, ["a1", "a2", "a3"]);
    let b = store.incident_alerts("b", None, 10).await.unwrap();
    assert_eq!((b.len(), b[0].repeats, b[0].first_seen), (1, 0, at(5)));
    assert!(
        store
            .incident_alerts("nope", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Grouping's read: the active incident of a group opened last, at or after a time; the
/// group key is kept as the incident opened with it (an update does not change it).
async fn a_groups_active_incident_is_found_by_group_key_since_a_time(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let grouped = |id: &str, key: &str, state: &str, group: &str, opened: i64| {
        let mut i = incident(id, key, state);
        i.group_key = group.into();
        i.opened_at = micros(opened);
        i.updated_at = micros(opened);
        i
    };
    apply(
        store,
        opening([
            grouped("g1", "k1", "open", "group/a:1", 10),
            grouped("g2", "k2", "acknowledged", "group/a:1", 20),
            grouped("g3", "k3", "resolved", "group/a:1", 30),
            grouped("g4", "k4", "closed", "group/a:1", 40),
            grouped("h", "k5", "mitigated", "group/a:2", 5),
            grouped("none", "k6", "open", "", 50),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(
        store.incident("g1").await.unwrap().unwrap().group_key,
        "group/a:1"
    );
    let asking = |since: Option<i64>, ids: &[&str]| SnapshotRequest {
        group_keys: ["group/a:1", "group/a:2", "group/x:3", ""]
            .map(String::from)
            .into(),
        grouped_since: since.map(micros),
        incident_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let found = |snap: &firebreak_storage::TriageSnapshot| {
        let mut v: Vec<(String, String)> = snap
            .grouped
            .iter()
            .map(|(k, i)| (k.clone(), i.id.clone()))
            .collect();
        v.sort();
        v
    };
    // Since 8: g2 is the group's latest active one (g3 resolved, g4 closed); h opened before.
    let snap = snapshot(store, asking(Some(8), &[])).await;
    assert_eq!(found(&snap), [("group/a:1".into(), "g2".into())]);
    assert!(snap.incidents.is_empty(), "{:?}", snap.incidents);
    assert_eq!(snap.grouped["group/a:1"].state.as_str(), "acknowledged");
    let snap = snapshot(store, asking(Some(1), &[])).await;
    assert_eq!(
        found(&snap),
        [
            ("group/a:1".into(), "g2".into()),
            ("group/a:2".into(), "h".into())
        ]
    );
    // Exactly at the time counts; after it, nothing.
    let snap = snapshot(store, asking(Some(20), &[])).await;
    assert_eq!(found(&snap), [("group/a:1".into(), "g2".into())]);
    assert!(
        snapshot(store, asking(Some(21), &[]))
            .await
            .grouped
            .is_empty()
    );
    // Without a time, nothing grouped is read; asked by id too, it is in both.
    assert!(snapshot(store, asking(None, &[])).await.grouped.is_empty());
    let snap = snapshot(store, asking(Some(8), &["g2"])).await;
    assert_eq!(snap.incidents["g2"], snap.grouped["group/a:1"]);
    // Resolved, g2 leaves the group's reads; g1 is the active one left.
    let mut g2 = store.incident("g2").await.unwrap().unwrap();
    g2.state = "resolved".parse().unwrap();
    g2.group_key = "changed".into();
    apply(store, updating(&g2)).await.unwrap();
    let snap = snapshot(store, asking(Some(8), &[])).await;
    assert_eq!(found(&snap), [("group/a:1".into(), "g1".into())]);
    assert_eq!(
        store.incident("g2").await.unwrap().unwrap().group_key,
        "group/a:1"
    );
    // An attachment keeps the rule that grouped it.
    let mut joined = link("al-g", "g1", false);
    joined.grouped_by = "by-service".into();
    apply(
        store,
        TriageChangeset {
            links: vec![joined.clone(), link("al-h", "h", false)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let snap = snapshot(store, by_alerts(&["al-g", "al-h"])).await;
    assert_eq!(snap.links["al-g"], joined);
    assert_eq!(snap.links["al-h"].grouped_by, "");
}

/// The last status update is written with the incident and read back by every read; a
/// stored one that does not parse is a corrupt row naming it.
async fn the_last_status_update_round_trips_and_a_bad_one_is_corrupt(f: &Fixture<dyn TriageStore>) {
    use firebreak_domain::{StatusUpdate, UpdateStatus};
    let store = &*f.store;
    let mut a = incident("a", "k", "open");
    apply(store, opening([a.clone()])).await.unwrap();
    assert_eq!(
        store
            .incident("a")
            .await
            .unwrap()
            .unwrap()
            .last_status_update,
        None
    );
    for (state_changed, status, message) in [
        (false, UpdateStatus::Investigating, "looking at the db"),
        (
            true,
            UpdateStatus::Monitoring,
            "failover done; \u{2764} watching",
        ),
    ] {
        a.last_status_update = Some(StatusUpdate {
            status,
            message: message.into(),
            at: micros(7),
            by: "user:amy".into(),
        });
        if state_changed {
            a.state = "mitigated".parse().unwrap();
        }
        apply(
            store,
            TriageChangeset {
                updates: vec![update(&a, state_changed)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let asked = SnapshotRequest {
            incident_ids: vec!["a".into()],
            ..Default::default()
        };
        let page = store
            .incidents_page(None, None, 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(store.incident("a").await.unwrap().unwrap(), a);
        assert_eq!(snapshot(store, asked).await.incidents["a"], a);
        assert_eq!(page[0], a);
    }
    f.backend
        .exec_raw("UPDATE incidents SET last_status_update = '{\"status\": \"fixed\"}'")
        .await
        .unwrap();
    let err = store.incident("a").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("last_status_update"), "{err}");
}
