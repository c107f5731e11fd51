//! Silences: kept by id, replaced when put again, listed newest start first.

use firebreak_domain::silence::{MatchOp, Matcher, Silence};
use firebreak_storage::SilenceStore;

use crate::fixtures::{Fixture, micros};

crate::contract!(silences:
    silences_round_trip_and_a_put_of_the_same_id_replaces,
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
