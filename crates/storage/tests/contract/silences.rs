//! Silences: kept by id, replaced when put again, listed newest start first; the alerts
//! each silenced, counted and listed; the alerts firing now, as their keys say.

use firebreak_domain::silence::{MatchOp, Matcher, Silence};
use firebreak_storage::{AlertRecord, SilenceStore};

use crate::fixtures::{Fixture, alert, intake_store, micros};

crate::contract!(silences:
    silences_round_trip_and_a_put_of_the_same_id_replaces,
    silenced_alerts_are_counted_and_listed_per_silence_and_firing_ones_by_their_keys,
);

fn silence(id: &str, starts: i64) -> Silence {
    Silence {
        id: id.into(),
        matchers: vec![
            Matcher {
                name: "job".into(),
                op: MatchOp::Regex,
                value: "web|db".into(),
            },
            Matcher {
                name: "env".into(),
                op: MatchOp::NotEqual,
                value: "dev".into(),
            },
        ],
        starts_at: micros(starts),
        ends_at: micros(starts + 100),
        created_by: "amy".into(),
        comment: "deploy".into(),
        updated_at: micros(starts),
    }
}

async fn silences_round_trip_and_a_put_of_the_same_id_replaces(f: &Fixture<dyn SilenceStore>) {
    let store = &*f.store;
    assert_eq!(store.count_silences().await.unwrap(), 0);
    store.put_silence(&silence("a", 10)).await.unwrap();
    store.put_silence(&silence("b", 20)).await.unwrap();
    assert_eq!(
        store.silences().await.unwrap(),
        [silence("b", 20), silence("a", 10)]
    );
    // Expiring is a put with an earlier end.
    let expired = Silence {
        ends_at: micros(15),
        updated_at: micros(15),
        ..silence("a", 10)
    };
    store.put_silence(&expired).await.unwrap();
    assert_eq!(store.silence("a").await.unwrap(), Some(expired));
    assert_eq!(store.silence("nope").await.unwrap(), None);
    assert_eq!(store.count_silences().await.unwrap(), 2);
}

/// An alert received at `at`, silenced by `by` (empty: none).
fn received(id: &str, at: i64, by: &str) -> AlertRecord {
    AlertRecord {
        received_at: micros(at),
        silenced_by: by.into(),
        ..alert(id)
    }
}

async fn silenced_alerts_are_counted_and_listed_per_silence_and_firing_ones_by_their_keys(
    f: &Fixture<dyn SilenceStore>,
) {
    let store = &*f.store;
    let intake = intake_store(&f.backend).await;
    assert!(store.silenced_counts().await.unwrap().is_empty());
    assert!(store.firing_alerts("", 10).await.unwrap().is_empty());
    let mut tx = intake.begin().await.unwrap();
    tx.insert_alerts(
        vec![
            received("a1", 10, "s1"),
            received("a2", 30, "s1"),
            received("a3", 20, "s2"),
            received("a4", 40, ""),
            received("a5", 50, ""),
            received("a6", 60, ""),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    // a4 fires, a5 was acknowledged (still firing), a6 resolved.
    let key = |k: &str, id: &str, state: &str| {
        (
            "am".to_owned(),
            k.to_owned(),
            id.to_owned(),
            state.to_owned(),
        )
    };
    tx.set_alert_keys(&[
        key("k4", "a4", "firing"),
        key("k5", "a5", "acknowledged"),
        key("k6", "a6", "resolved"),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let counts = store.silenced_counts().await.unwrap();
    assert_eq!(counts, [("s1".to_owned(), 2), ("s2".to_owned(), 1)].into());
    let ids = |alerts: Vec<AlertRecord>| alerts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(store.count_silenced("s1").await.unwrap(), 2);
    assert_eq!(store.count_silenced("").await.unwrap(), 0);
    assert_eq!(store.count_silenced("nope").await.unwrap(), 0);
    // Newest first, bounded, each read back whole.
    let s1 = store.silenced_alerts("s1", 10).await.unwrap();
    assert_eq!(s1[0], received("a2", 30, "s1"));
    assert_eq!(ids(s1), ["a2", "a1"]);
    assert_eq!(ids(store.silenced_alerts("s1", 1).await.unwrap()), ["a2"]);
    assert!(store.silenced_alerts("", 10).await.unwrap().is_empty());
    assert!(store.silenced_alerts("nope", 10).await.unwrap().is_empty());
    // Firing: by alert id, paged.
    let firing = store.firing_alerts("", 10).await.unwrap();
    assert_eq!(firing[0], received("a4", 40, ""));
    assert_eq!(ids(firing), ["a4", "a5"]);
    assert_eq!(ids(store.firing_alerts("", 1).await.unwrap()), ["a4"]);
    assert_eq!(ids(store.firing_alerts("a4", 10).await.unwrap()), ["a5"]);
}
