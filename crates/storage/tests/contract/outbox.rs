//! The outbox every store carries: events wait in order until marked published.

use firebreak_storage::IntakeStore;

use crate::fixtures::{Backend, Fixture, event, pending_ids};

crate::contract!(intake: pending_events_come_oldest_first_until_marked, events_of_a_dropped_transaction_never_appear, ping_answers);

async fn pending_events_come_oldest_first_until_marked(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    assert!(store.pending(10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    for id in ["e1", "e2", "e3"] {
        tx.enqueue(&event(id)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&event("e4")).await.unwrap();
    tx.commit().await.unwrap();

    let all = store.pending(10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| &r.event).cloned().collect::<Vec<_>>(),
        vec![event("e1"), event("e2"), event("e3"), event("e4")]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "{all:?}");
    let first_two = store.pending(2).await.unwrap();
    assert_eq!(
        first_two
            .iter()
            .map(|r| r.event.id.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );

    // Marked events leave the pending list; marking again or nothing at all is harmless.
    store
        .mark_published(&[all[0].seq, all[2].seq])
        .await
        .unwrap();
    assert_eq!(pending_ids(store).await, ["e2", "e4"]);
    store.mark_published(&[all[0].seq]).await.unwrap();
    store.mark_published(&[]).await.unwrap();
    assert_eq!(pending_ids(store).await, ["e2", "e4"]);
    store
        .mark_published(&all.iter().map(|r| r.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(store.pending(10).await.unwrap().is_empty());

    // Events enqueued later come after, with higher sequence numbers.
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&event("e5")).await.unwrap();
    tx.commit().await.unwrap();
    let later = store.pending(10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert!(later[0].seq > all[3].seq);
}

async fn events_of_a_dropped_transaction_never_appear(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&event("gone")).await.unwrap();
    drop(tx);
    assert!(store.pending(10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&event("once")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(pending_ids(store).await, ["once"]);
    // Event ids are generated, so they do not repeat. Postgres' outbox also refuses a repeat
    // (the relay publishes from it); SQLite's, read in place by the embedded bus, saves
    // itself that index write.
    if matches!(f.backend, Backend::Sqlite { .. }) {
        return;
    }
    let mut tx = store.begin().await.unwrap();
    let twice = async {
        tx.enqueue(&event("once")).await?;
        tx.commit().await
    }
    .await;
    assert!(twice.is_err());
    assert_eq!(pending_ids(store).await, ["once"]);
}

async fn ping_answers(f: &Fixture<dyn IntakeStore>) {
    f.store.ping().await.unwrap();
}
