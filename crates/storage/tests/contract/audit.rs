//! The audit log in notification's store: append-only entries, each appended once with one
//! `audit` event in the outbox, listed newest first by filter and page, deleted by age.

use firebreak_storage::{AuditCursor, AuditFilter, AuditRecord, OutboxEvent};

use crate::fixtures::{AuditStore, Fixture, micros};

crate::contract!(audit:
    entries_list_newest_first_and_by_actor_since_and_action,
    pages_follow_the_cursor_without_gaps_or_repeats,
    an_entry_appended_again_is_skipped_with_its_event,
    deleting_before_a_time_removes_exactly_the_older_entries,
);

/// An entry numbered `n` (its id sorts by `n`) at `at` micros.
fn entry(n: u32, at: i64, actor: &str, method: &str) -> AuditRecord {
    AuditRecord {
        id: format!("01900000-0000-7000-8000-{n:012}"),
        at: micros(at),
        actor: actor.into(),
        roles: "responder,viewer".into(),
        method: method.into(),
        target: String::new(),
        outcome: "ok".into(),
        reason: String::new(),
        source: "127.0.0.1:5000".into(),
        request_id: format!("req-{n}"),
        trace_id: format!("{n:032x}"),
    }
}

/// An entry with the event that announces it.
fn with_event(r: AuditRecord) -> (AuditRecord, OutboxEvent) {
    let event = OutboxEvent {
        id: r.id.clone(),
        stream: "audit".into(),
        subject: "audit.recorded".into(),
        payload: r.id.as_bytes().to_vec(),
    };
    (r, event)
}

const ACK: &str = "/firebreak.v1.IncidentService/Acknowledge";
const CLOSE: &str = "/firebreak.v1.IncidentService/Close";
const TOKEN: &str = "/firebreak.v1.AccessService/CreateToken";

fn ids(entries: &[AuditRecord]) -> Vec<String> {
    entries.iter().map(|e| e.id[24..].to_owned()).collect()
}

fn n(list: &[u32]) -> Vec<String> {
    list.iter().map(|n| format!("{n:012}")).collect()
}

async fn list(store: &dyn AuditStore, filter: AuditFilter) -> Vec<String> {
    ids(&store.audit(&filter, None, 100).await.unwrap())
}

async fn entries_list_newest_first_and_by_actor_since_and_action(f: &Fixture<dyn AuditStore>) {
    let store = &*f.store;
    let all = [
        entry(1, 10, "user:alice", ACK),
        entry(2, 20, "user:bob", CLOSE),
        entry(3, 30, "anonymous", CLOSE),
        entry(4, 40, "user:alice", TOKEN),
        // The same time as 4: the id breaks the tie.
        entry(5, 40, "user:alice", CLOSE),
    ];
    let appended = store
        .append_audit(&all.iter().cloned().map(with_event).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(appended, 5);
    // Stored as given, every field.
    let stored = store
        .audit(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(stored.last(), Some(&all[0]));
    assert_eq!(ids(&stored), n(&[5, 4, 3, 2, 1]));

    let actor = |a: &str| AuditFilter {
        actor: Some(a.into()),
        ..AuditFilter::default()
    };
    assert_eq!(list(store, actor("user:alice")).await, n(&[5, 4, 1]));
    // Exactly: no prefix or pattern matching.
    assert_eq!(list(store, actor("user:ali")).await, n(&[]));
    assert_eq!(list(store, actor("user:%")).await, n(&[]));

    let since = AuditFilter {
        since: Some(micros(30)),
        ..AuditFilter::default()
    };
    assert_eq!(list(store, since).await, n(&[5, 4, 3]));

    let action = |a: &str| AuditFilter {
        action: Some(a.into()),
        ..AuditFilter::default()
    };
    // A whole path, the service and method, or the method alone.
    assert_eq!(list(store, action(CLOSE)).await, n(&[5, 3, 2]));
    assert_eq!(
        list(store, action("IncidentService/Close")).await,
        n(&[5, 3, 2])
    );
    assert_eq!(list(store, action("Close")).await, n(&[5, 3, 2]));
    // Not a part of a name, and no pattern characters.
    assert_eq!(list(store, action("Service/Close")).await, n(&[]));
    assert_eq!(list(store, action("lose")).await, n(&[]));
    assert_eq!(list(store, action("%")).await, n(&[]));
    assert_eq!(list(store, action("_lose")).await, n(&[]));

    // Filters combine.
    let both = AuditFilter {
        actor: Some("user:alice".into()),
        since: Some(micros(20)),
        action: Some("IncidentService/Close".into()),
    };
    assert_eq!(list(store, both).await, n(&[5]));
}

async fn pages_follow_the_cursor_without_gaps_or_repeats(f: &Fixture<dyn AuditStore>) {
    let store = &*f.store;
    // Seven entries, several sharing a time.
    let all: Vec<_> = (1..=7)
        .map(|i| with_event(entry(i, i64::from(i / 2), "user:alice", ACK)))
        .collect();
    store.append_audit(&all).await.unwrap();
    let filter = AuditFilter::default();
    let mut seen = Vec::new();
    let mut after: Option<AuditCursor> = None;
    loop {
        let page = store.audit(&filter, after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(AuditCursor {
            at: last.at,
            id: last.id.clone(),
        });
        seen.extend(ids(&page));
    }
    assert_eq!(seen, n(&[7, 6, 5, 4, 3, 2, 1]));
    // The cursor combines with a filter.
    let page = store
        .audit(
            &AuditFilter {
                since: Some(micros(2)),
                ..AuditFilter::default()
            },
            Some(&AuditCursor {
                at: micros(3),
                id: entry(6, 3, "", "").id,
            }),
            10,
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), n(&[5, 4]));
}

async fn an_entry_appended_again_is_skipped_with_its_event(f: &Fixture<dyn AuditStore>) {
    let store = &*f.store;
    let first = vec![
        with_event(entry(1, 10, "user:alice", ACK)),
        with_event(entry(2, 20, "user:bob", CLOSE)),
    ];
    assert_eq!(store.append_audit(&first).await.unwrap(), 2);
    // A sync retried: entry 2 again (changed, which must not overwrite it) and a new one.
    let changed = AuditRecord {
        outcome: "denied".into(),
        ..entry(2, 20, "user:bob", CLOSE)
    };
    let again = vec![
        with_event(changed),
        with_event(entry(3, 30, "user:carol", ACK)),
    ];
    assert_eq!(store.append_audit(&again).await.unwrap(), 1);
    assert_eq!(store.append_audit(&[]).await.unwrap(), 0);
    let stored = store
        .audit(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&stored), n(&[3, 2, 1]));
    assert_eq!(stored[1], entry(2, 20, "user:bob", CLOSE));

    // One `audit` event per entry, in order, with the entry's id.
    let events = store.pending(100).await.unwrap();
    let audit: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.event.stream.as_str(),
                e.event.subject.as_str(),
                &e.event.id[24..],
            )
        })
        .collect();
    let want = n(&[1, 2, 3]);
    assert_eq!(
        audit,
        want.iter()
            .map(|id| ("audit", "audit.recorded", id.as_str()))
            .collect::<Vec<_>>()
    );
}

async fn deleting_before_a_time_removes_exactly_the_older_entries(f: &Fixture<dyn AuditStore>) {
    let store = &*f.store;
    let all: Vec<_> = [10, 20, 30, 40]
        .iter()
        .zip(1..)
        .map(|(at, i)| with_event(entry(i, *at, "user:alice", ACK)))
        .collect();
    store.append_audit(&all).await.unwrap();
    assert_eq!(store.delete_audit_before(micros(30)).await.unwrap(), 2);
    assert_eq!(store.delete_audit_before(micros(30)).await.unwrap(), 0);
    assert_eq!(list(store, AuditFilter::default()).await, n(&[4, 3]));
    assert_eq!(
        store.delete_audit_before(micros(i64::MAX)).await.unwrap(),
        2
    );
    assert_eq!(list(store, AuditFilter::default()).await, n(&[]));
}
