//! Triage's store: incidents (one active per dedup key), their alerts, the append-only
//! timeline, processed events.

use firebreak_storage::{Error, TriageStore};
use serde_json::json;

use crate::fixtures::{Backend, Fixture, entry, event, incident, pending_ids, triage_store};

crate::contract!(triage:
    one_active_incident_per_dedup_key,
    the_timeline_is_append_only_and_in_order,
    processed_events_are_remembered,
    a_transaction_reads_its_own_writes,
    alerts_attach_once,
    resolving_alerts_counts_those_left,
    incidents_list_newest_first,
    writes_without_a_prior_read,
    a_dropped_transaction_leaves_nothing,
    prefetched_answers_are_the_reads_answers,
    incident_pages_follow_a_cursor_and_a_byte_bound,
    timeline_pages_follow_a_sequence_number_and_a_byte_bound,
    change_events_are_stored_once,
);

async fn incident_pages_follow_a_cursor_and_a_byte_bound(f: &Fixture<dyn TriageStore>) {
    use firebreak_storage::IncidentCursor;
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    for n in 0..7 {
        let mut i = incident(
            &format!("i{n}"),
            &format!("k{n}"),
            ["open", "closed"][n % 2],
        );
        // Two share an opening time: the cursor must tell them apart by id.
        i.opened_at = 100 + (n as i64).min(5);
        if n == 3 {
            i.resolution_summary = "s".repeat(100_000);
        }
        tx.insert_incident(&i).await.unwrap();
    }
    tx.commit().await.unwrap();
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
                opened_at: 105,
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
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.insert_incident(&incident("b", "k2", "open"))
        .await
        .unwrap();
    let mut written = Vec::new();
    for n in 0..5 {
        let text = if n == 2 {
            "x".repeat(100_000)
        } else {
            n.to_string()
        };
        written.push(
            tx.append(&entry("a", "note", json!({ "text": text })))
                .await
                .unwrap(),
        );
        tx.append(&entry("b", "note", json!({}))).await.unwrap();
    }
    tx.commit().await.unwrap();
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
    let change = firebreak_storage::ChangeRecord {
        id: "ev-1".into(),
        integration: "pd".into(),
        summary: "deploy 42".into(),
        source: "ci".into(),
        at: 9,
        details: r#"{"sha":"abc"}"#.into(),
    };
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_change(&change).await.unwrap());
    assert!(!tx.insert_change(&change).await.unwrap(), "stored once");
    tx.commit().await.unwrap();
    assert_eq!(store.change("ev-1").await.unwrap(), Some(change));
    assert_eq!(store.change("ev-2").await.unwrap(), None);
}

async fn one_active_incident_per_dedup_key(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A second active incident with the key is refused, whatever the caller believed, and
    // the transaction stays usable.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_incident(&incident("b", "k", "acknowledged"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(tx.incident("a").await.unwrap().unwrap().state, "open");
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap().unwrap().id,
        "a"
    );
    drop(tx);
    assert_eq!(store.incident("b").await.unwrap(), None);

    // An inactive incident with the key is no conflict; nor is another key.
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("old", "k", "closed"))
        .await
        .unwrap();
    tx.insert_incident(&incident("other", "k2", "open"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Reusing an id is a conflict too.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_incident(&incident("a", "k3", "open"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    drop(tx);

    // Once the first is resolved (in the same transaction), the key may open a new incident.
    let mut tx = store.begin().await.unwrap();
    let mut a = tx.active_incident_by_key("k").await.unwrap().unwrap();
    a.state = "resolved".into();
    a.resolved_at = Some(7);
    tx.update_incident(&a).await.unwrap();
    assert_eq!(tx.active_incident_by_key("k").await.unwrap(), None);
    tx.insert_incident(&incident("c", "k", "open"))
        .await
        .unwrap();
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap().unwrap().id,
        "c"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store.incident("a").await.unwrap().unwrap().state,
        "resolved"
    );
    assert_eq!(store.incidents(Some("open"), 10).await.unwrap().len(), 2);
    assert_eq!(store.incidents(None, 10).await.unwrap().len(), 4);

    // Reopening the resolved one while "c" is active is refused.
    let mut tx = store.begin().await.unwrap();
    let mut a = tx.incident("a").await.unwrap().unwrap();
    a.state = "open".into();
    let reopened = async {
        tx.update_incident(&a).await?;
        tx.commit().await
    }
    .await;
    assert!(reopened.is_err());
    assert_eq!(
        store.incident("a").await.unwrap().unwrap().state,
        "resolved"
    );
}

async fn the_timeline_is_append_only_and_in_order(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.insert_incident(&incident("b", "k2", "open"))
        .await
        .unwrap();
    let mut written = Vec::new();
    for (n, id) in ["a", "b", "a", "a", "b"].into_iter().enumerate() {
        written.push(
            tx.append(&entry(id, "note", json!({ "n": n })))
                .await
                .unwrap(),
        );
    }
    assert!(
        written.windows(2).all(|w| w[0].seq < w[1].seq),
        "{written:?}"
    );
    tx.commit().await.unwrap();
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

    // A later transaction's entries come after, whether it read the incident first or not.
    let mut tx = store.begin().await.unwrap();
    tx.incident("a").await.unwrap().unwrap();
    let read_first = tx
        .append(&entry("a", "note", json!({ "n": "later" })))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let blind = tx
        .append(&entry("a", "note", json!({ "n": "blind" })))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let timeline = store.timeline("a").await.unwrap();
    assert_eq!(timeline.len(), 5);
    assert_eq!(timeline[3], read_first);
    assert_eq!(timeline[4], blind);
    assert!(timeline.windows(2).all(|w| w[0].seq < w[1].seq));

    // An entry needs its incident.
    let mut tx = store.begin().await.unwrap();
    let orphan = async {
        tx.append(&entry("nope", "note", json!({}))).await?;
        tx.commit().await
    }
    .await;
    assert!(orphan.is_err());

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

    // A transaction that does not commit leaves no entries; numbering goes on after it.
    let mut tx = store.begin().await.unwrap();
    tx.append(&entry("a", "note", json!({ "n": "dropped" })))
        .await
        .unwrap();
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let after = tx
        .append(&entry("a", "note", json!({ "n": "after" })))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let now = store.timeline("a").await.unwrap();
    assert_eq!(now.len(), 6);
    assert_eq!(now[5], after);
    assert!(after.seq > blind.seq);

    // Numbering holds across a read-ahead in the middle of a transaction.
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .append(&entry("a", "note", json!({ "n": "p1" })))
        .await
        .unwrap();
    tx.prefetch(&[], &["k".to_owned()]).await.unwrap();
    let second = tx
        .append(&entry("a", "note", json!({ "n": "p2" })))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(first.seq < second.seq);
    let now = store.timeline("a").await.unwrap();
    assert_eq!(now[now.len() - 2..], [first, second]);
}

async fn processed_events_are_remembered(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.mark_processed("event-1").await.unwrap());
    assert!(!tx.mark_processed("event-1").await.unwrap());
    assert!(tx.mark_processed("event-2").await.unwrap());
    tx.commit().await.unwrap();

    // A dropped transaction's mark is gone.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.mark_processed("event-3").await.unwrap());
    drop(tx);

    // A reopened store remembers what was processed.
    let store = triage_store(&f.backend).await;
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.mark_processed("event-1").await.unwrap());
    assert!(!tx.mark_processed("event-2").await.unwrap());
    assert!(tx.mark_processed("event-3").await.unwrap());
}

async fn a_transaction_reads_its_own_writes(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    let original = incident("a", "k", "open");
    tx.insert_incident(&original).await.unwrap();
    assert_eq!(tx.incident("a").await.unwrap(), Some(original.clone()));
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(tx.incident("nope").await.unwrap(), None);
    assert_eq!(tx.active_incident_by_key("nope").await.unwrap(), None);

    // An update writes what may change; the dedup key, source and opening time stay.
    let mut changed = original.clone();
    changed.title = "new title".into();
    changed.severity = 1;
    changed.priority = 1;
    changed.alert_count = 2;
    changed.labels.insert("team".into(), "db".into());
    changed.state = "acknowledged".into();
    changed.acknowledged_at = Some(9);
    changed.updated_at = 9;
    changed.dedup_key = "ignored".into();
    changed.source = "ignored".into();
    changed.opened_at = 99;
    tx.update_incident(&changed).await.unwrap();
    let mut expected = changed.clone();
    expected.dedup_key = "k".into();
    expected.source = "test".into();
    expected.opened_at = 1;
    assert_eq!(tx.incident("a").await.unwrap(), Some(expected.clone()));
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(tx.active_incident_by_key("ignored").await.unwrap(), None);
    // Not visible outside until the commit.
    assert_eq!(store.incident("a").await.unwrap(), None);
    tx.commit().await.unwrap();
    assert_eq!(store.incident("a").await.unwrap(), Some(expected.clone()));

    // A second transaction sees the first's commit, and its own further changes.
    let mut tx = store.begin().await.unwrap();
    let mut inc = tx.active_incident_by_key("k").await.unwrap().unwrap();
    assert_eq!(inc, expected);
    inc.alert_count += 1;
    tx.update_incident(&inc).await.unwrap();
    inc.alert_count += 1;
    tx.update_incident(&inc).await.unwrap();
    assert_eq!(tx.incident("a").await.unwrap().unwrap().alert_count, 4);
    tx.commit().await.unwrap();
    assert_eq!(store.incident("a").await.unwrap().unwrap().alert_count, 4);

    // Values out of range are refused (by the commit at the latest).
    let mut tx = store.begin().await.unwrap();
    let mut bad = tx.incident("a").await.unwrap().unwrap();
    bad.severity = 9;
    let refused = async {
        tx.update_incident(&bad).await?;
        tx.commit().await
    }
    .await;
    assert!(refused.is_err());
    assert_eq!(store.incident("a").await.unwrap().unwrap().severity, 1);
}

async fn alerts_attach_once(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.link_alert("al-1", "a", true).await.unwrap();
    tx.link_alert("al-2", "a", false).await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-1").await.unwrap(),
        Some(("a".to_owned(), true))
    );
    assert_eq!(
        tx.incident_of_alert("al-2").await.unwrap(),
        Some(("a".to_owned(), false))
    );
    assert_eq!(tx.incident_of_alert("al-3").await.unwrap(), None);
    let again = tx.link_alert("al-1", "a", false).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    drop(tx);

    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.link_alert("al-1", "a", true).await.unwrap();
    tx.commit().await.unwrap();

    // Attaching it again in a later transaction conflicts (at the latest on commit).
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-1").await.unwrap(),
        Some(("a".to_owned(), true))
    );
    tx.insert_incident(&incident("b", "k2", "open"))
        .await
        .unwrap();
    let again = async {
        tx.link_alert("al-1", "b", false).await?;
        tx.commit().await
    }
    .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    assert_eq!(store.incident("b").await.unwrap(), None);

    // An alert attaches only to an incident that exists.
    let mut tx = store.begin().await.unwrap();
    let orphan = async {
        tx.link_alert("al-9", "nope", false).await?;
        tx.commit().await
    }
    .await;
    assert!(orphan.is_err());
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.incident_of_alert("al-9").await.unwrap(), None);
}

async fn resolving_alerts_counts_those_left(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.insert_incident(&incident("b", "k2", "open"))
        .await
        .unwrap();
    for (alert, inc) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        tx.link_alert(alert, inc, alert.ends_with('1'))
            .await
            .unwrap();
    }
    // Within the transaction that attached them.
    assert_eq!(tx.resolve_alert("a1").await.unwrap(), Some(("a".into(), 2)));
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.resolve_alert("a2").await.unwrap(), Some(("a".into(), 1)));
    assert_eq!(tx.resolve_alert("nope").await.unwrap(), None);
    // Resolving one twice changes nothing.
    assert_eq!(tx.resolve_alert("a1").await.unwrap(), Some(("a".into(), 1)));
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.resolve_alert("a3").await.unwrap(), Some(("a".into(), 0)));
    drop(tx);
    // Dropped: a3 is still unresolved.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.resolve_alert("a3").await.unwrap(), Some(("a".into(), 0)));
    assert_eq!(tx.resolve_alert("b1").await.unwrap(), Some(("b".into(), 0)));
    // The incident is readable after a resolve (the store may have locked it).
    assert_eq!(tx.incident("a").await.unwrap().unwrap().id, "a");
    tx.commit().await.unwrap();
}

async fn incidents_list_newest_first(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    for (n, state) in ["open", "resolved", "open", "closed", "acknowledged"]
        .into_iter()
        .enumerate()
    {
        let mut i = incident(&format!("i{n}"), &format!("k{n}"), state);
        i.opened_at = 100 + n as i64;
        tx.insert_incident(&i).await.unwrap();
    }
    // Same opening time: the greater id first.
    let mut tie = incident("i9", "k9", "open");
    tie.opened_at = 104;
    tx.insert_incident(&tie).await.unwrap();
    tx.commit().await.unwrap();

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
        "resolved"
    );
}

async fn writes_without_a_prior_read(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Updating, attaching and appending to an incident the transaction never read.
    let mut tx = store.begin().await.unwrap();
    let mut a = incident("a", "k", "acknowledged");
    a.alert_count = 5;
    tx.update_incident(&a).await.unwrap();
    tx.link_alert("al-1", "a", false).await.unwrap();
    let e = tx
        .append(&entry("a", "acknowledged", json!({})))
        .await
        .unwrap();
    tx.enqueue(&event("ev-1")).await.unwrap();
    assert_eq!(tx.incident("a").await.unwrap(), Some(a.clone()));
    tx.commit().await.unwrap();
    assert_eq!(store.incident("a").await.unwrap(), Some(a));
    assert_eq!(store.timeline("a").await.unwrap(), vec![e]);
    assert_eq!(pending_ids(store).await, ["ev-1"]);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-1").await.unwrap(),
        Some(("a".to_owned(), false))
    );
}

async fn a_dropped_transaction_leaves_nothing(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.link_alert("al-1", "a", true).await.unwrap();
    tx.append(&entry("a", "opened", json!({}))).await.unwrap();
    tx.mark_processed("ev").await.unwrap();
    tx.enqueue(&event("ev-1")).await.unwrap();
    drop(tx);
    assert_eq!(store.incident("a").await.unwrap(), None);
    assert!(store.timeline("a").await.unwrap().is_empty());
    assert!(store.pending(10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.incident_of_alert("al-1").await.unwrap(), None);
    assert!(tx.mark_processed("ev").await.unwrap());

    // What a committed transaction enqueued is pending, in order.
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.enqueue(&event("ev-2")).await.unwrap();
    tx.enqueue(&event("ev-3")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(pending_ids(store).await, ["ev-2", "ev-3"]);
}

async fn prefetched_answers_are_the_reads_answers(f: &Fixture<dyn TriageStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_incident(&incident("a", "k", "open"))
        .await
        .unwrap();
    tx.insert_incident(&incident("old", "k2", "closed"))
        .await
        .unwrap();
    tx.link_alert("al-1", "a", true).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let ids = ["al-1", "al-2"].map(String::from);
    let keys = ["k", "k2", "k3", "k"].map(String::from);
    tx.prefetch(&ids, &keys).await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-1").await.unwrap(),
        Some(("a".to_owned(), true))
    );
    assert_eq!(tx.incident_of_alert("al-2").await.unwrap(), None);
    assert_eq!(tx.incident_of_alert("al-3").await.unwrap(), None);
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap().unwrap().id,
        "a"
    );
    assert_eq!(tx.active_incident_by_key("k2").await.unwrap(), None);
    assert_eq!(tx.active_incident_by_key("k3").await.unwrap(), None);
    // What the transaction does after the prefetch is what later calls see.
    tx.link_alert("al-2", "a", false).await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-2").await.unwrap(),
        Some(("a".to_owned(), false))
    );
    tx.insert_incident(&incident("n", "k3", "open"))
        .await
        .unwrap();
    assert_eq!(
        tx.active_incident_by_key("k3").await.unwrap().unwrap().id,
        "n"
    );
    let again = tx.link_alert("al-2", "n", false).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    let mut a = tx.active_incident_by_key("k").await.unwrap().unwrap();
    a.alert_count = 7;
    tx.update_incident(&a).await.unwrap();
    assert_eq!(
        tx.active_incident_by_key("k")
            .await
            .unwrap()
            .unwrap()
            .alert_count,
        7
    );
    assert_eq!(tx.incident("a").await.unwrap().unwrap().alert_count, 7);
    a.state = "resolved".into();
    tx.update_incident(&a).await.unwrap();
    assert_eq!(tx.active_incident_by_key("k").await.unwrap(), None);
    // A new incident of the resolved one's key is no conflict.
    tx.insert_incident(&incident("a2", "k", "open"))
        .await
        .unwrap();
    assert_eq!(
        tx.active_incident_by_key("k").await.unwrap().unwrap().id,
        "a2"
    );
    tx.commit().await.unwrap();
    let a = store.incident("a").await.unwrap().unwrap();
    assert_eq!((a.state.as_str(), a.alert_count), ("resolved", 7));

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.incident_of_alert("al-2").await.unwrap(),
        Some(("a".to_owned(), false))
    );
    assert_eq!(
        tx.active_incident_by_key("k3").await.unwrap().unwrap().id,
        "n"
    );
}
