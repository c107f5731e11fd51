//! Intake's store: alerts and their events, alert keys, idempotency keys, integrations.

use firebreak_domain::access::integration_key_hash;
use firebreak_storage::{Error, IntakeStore, IntegrationRecord};

use crate::fixtures::{Fixture, alert, event, micros, pending_ids};

crate::contract!(intake:
    alerts_and_their_events_commit_together,
    a_dropped_transaction_leaves_nothing,
    one_alert_is_stored_with_its_event,
    alert_keys_name_what_was_set_last,
    idempotency_keys_return_the_first_response,
    integrations_are_unique_by_name_and_key,
    sealed_secrets_are_replaced_only_from_what_they_were,
);

async fn alerts_and_their_events_commit_together(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let alerts = vec![alert("a1"), alert("a2"), alert("a3")];
    let events = vec![event("e1"), event("e2"), event("e3")];
    let mut tx = store.begin().await.unwrap();
    tx.insert_alerts(alerts.clone(), events).await.unwrap();
    // Nothing shows before the commit.
    assert_eq!(store.alert("a1").await.unwrap(), None);
    assert!(store.pending(10).await.unwrap().is_empty());
    tx.commit().await.unwrap();

    for a in &alerts {
        assert_eq!(store.alert(&a.id).await.unwrap().as_ref(), Some(a));
    }
    assert_eq!(store.alert("nope").await.unwrap(), None);
    assert_eq!(store.count_alerts().await.unwrap(), 3);
    assert_eq!(pending_ids(store).await, ["e1", "e2", "e3"]);

    // Empty batches are fine; a duplicate alert id fails the batch.
    let mut tx = store.begin().await.unwrap();
    tx.insert_alerts(vec![], vec![]).await.unwrap();
    tx.commit().await.unwrap();
    // (SQLite writes a group's alerts when it commits, so the error may come from either.)
    let mut tx = store.begin().await.unwrap();
    let dup = match tx
        .insert_alerts(vec![alert("a4"), alert("a1")], vec![])
        .await
    {
        Ok(()) => tx.commit().await,
        Err(e) => Err(e),
    };
    assert!(dup.is_err());
    assert_eq!(store.count_alerts().await.unwrap(), 3);
    assert_eq!(store.alert("a4").await.unwrap(), None);

    // Many alerts in one call (the batch path binds them as arrays).
    let many: Vec<_> = (0..1200).map(|n| alert(&format!("m{n}"))).collect();
    let many_events: Vec<_> = (0..1200).map(|n| event(&format!("me{n}"))).collect();
    let mut tx = store.begin().await.unwrap();
    tx.insert_alerts(many.clone(), many_events).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_alerts().await.unwrap(), 1203);
    assert_eq!(
        store.alert("m1199").await.unwrap().as_ref(),
        Some(&many[1199])
    );
    assert_eq!(store.pending(2000).await.unwrap().len(), 1203);
}

async fn a_dropped_transaction_leaves_nothing(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    tx.insert_alerts(vec![alert("a1")], vec![event("e1")])
        .await
        .unwrap();
    tx.set_alert_keys(&[("am".into(), "fp".into(), "a1".into(), "firing".into())])
        .await
        .unwrap();
    tx.remember("idem", b"response").await.unwrap();
    tx.enqueue(&event("e2")).await.unwrap();
    drop(tx);

    assert_eq!(store.count_alerts().await.unwrap(), 0);
    assert_eq!(store.alert("a1").await.unwrap(), None);
    assert!(store.pending(10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.alert_keys(&[("am".into(), "fp".into())])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(tx.idempotent("idem").await.unwrap(), None);
}

async fn one_alert_is_stored_with_its_event(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let a = alert("single");
    store.insert_alert(&a, &event("e-single")).await.unwrap();
    assert_eq!(store.alert("single").await.unwrap(), Some(a.clone()));
    assert_eq!(pending_ids(store).await, ["e-single"]);
    // A second alert of the same id fails, and its event is not written either.
    assert!(store.insert_alert(&a, &event("e-again")).await.is_err());
    assert_eq!(pending_ids(store).await, ["e-single"]);
}

async fn alert_keys_name_what_was_set_last(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let row = |i: &str, k: &str, a: &str, s: &str| {
        (i.to_owned(), k.to_owned(), a.to_owned(), s.to_owned())
    };
    let pair = |i: &str, k: &str| (i.to_owned(), k.to_owned());

    let mut tx = store.begin().await.unwrap();
    assert!(tx.alert_keys(&[]).await.unwrap().is_empty());
    tx.set_alert_keys(&[]).await.unwrap();
    tx.set_alert_keys(&[
        row("am", "k1", "a1", "firing"),
        row("am", "k2", "a2", "firing"),
        row("pd", "k1", "a3", "acknowledged"),
    ])
    .await
    .unwrap();
    // Visible inside the transaction that set them.
    assert_eq!(
        tx.alert_keys(&[pair("am", "k1")]).await.unwrap(),
        vec![row("am", "k1", "a1", "firing")]
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let mut found = tx
        .alert_keys(&[
            pair("am", "k1"),
            pair("am", "k2"),
            pair("pd", "k1"),
            pair("pd", "k9"),
            pair("xx", "k1"),
        ])
        .await
        .unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![
            row("am", "k1", "a1", "firing"),
            row("am", "k2", "a2", "firing"),
            row("pd", "k1", "a3", "acknowledged"),
        ]
    );
    // Setting again replaces: a resolve, then a new trigger pointing the key at a new alert.
    // Within one call the last row of a pair wins.
    tx.set_alert_keys(&[
        row("am", "k1", "a1", "resolved"),
        row("am", "k2", "a2", "resolved"),
        row("am", "k2", "a9", "firing"),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let mut found = tx
        .alert_keys(&[pair("am", "k1"), pair("am", "k2")])
        .await
        .unwrap();
    found.sort();
    assert_eq!(
        found,
        vec![
            row("am", "k1", "a1", "resolved"),
            row("am", "k2", "a9", "firing")
        ]
    );
    // The state is one of three.
    let bad = async {
        tx.set_alert_keys(&[row("am", "k3", "a3", "exploded")])
            .await?;
        tx.commit().await
    }
    .await;
    assert!(bad.is_err());
}

async fn idempotency_keys_return_the_first_response(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.idempotent("k1").await.unwrap(), None);
    tx.remember("k1", b"first").await.unwrap();
    tx.remember("k2", &[0, 159, 255]).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.idempotent("k1").await.unwrap(), Some(b"first".to_vec()));
    assert_eq!(tx.idempotent("k2").await.unwrap(), Some(vec![0, 159, 255]));
    assert_eq!(tx.idempotent("k3").await.unwrap(), None);
}

async fn integrations_are_unique_by_name_and_key(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    let integration = |name: &str, key: &str| record(name, key, None);
    assert!(store.integrations().await.unwrap().is_empty());
    store
        .create_integration(&integration("b", "kb"))
        .await
        .unwrap();
    store
        .create_integration(&integration("a", "ka"))
        .await
        .unwrap();
    assert_eq!(
        store.integrations().await.unwrap(),
        vec![integration("a", "ka"), integration("b", "kb")]
    );

    let same_name = store.create_integration(&integration("a", "kz")).await;
    assert!(
        matches!(same_name, Err(Error::Conflict(_))),
        "{same_name:?}"
    );
    let same_key = store.create_integration(&integration("c", "ka")).await;
    assert!(matches!(same_key, Err(Error::Conflict(_))), "{same_key:?}");

    assert!(store.delete_integration("a").await.unwrap());
    assert!(!store.delete_integration("a").await.unwrap());
    assert_eq!(
        store.integrations().await.unwrap(),
        vec![integration("b", "kb")]
    );
    // Its key is free again.
    store
        .create_integration(&integration("c", "ka"))
        .await
        .unwrap();
}

/// A run-time integration as intake stores it: its key hashed, its secret sealed.
fn record(name: &str, key: &str, sealed: Option<&str>) -> IntegrationRecord {
    IntegrationRecord {
        name: name.into(),
        kind: "alertmanager".into(),
        key_hash: integration_key_hash(key),
        key_hint: key.chars().take(4).collect(),
        settings: serde_json::json!({ "auto_resolve": true, "labels": { "team": "db" } }),
        signing_secret: sealed.map(str::to_owned),
        created_at: micros(42),
    }
}

async fn sealed_secrets_are_replaced_only_from_what_they_were(f: &Fixture<dyn IntakeStore>) {
    let store = &*f.store;
    store
        .create_integration(&record("signed", "key-signed-0000001", Some("v1:aaaa:01")))
        .await
        .unwrap();
    store
        .create_integration(&record("plain", "key-plain-00000001", None))
        .await
        .unwrap();
    // Read back as written, hash, hint and sealed secret included.
    assert_eq!(
        store.integrations().await.unwrap(),
        vec![
            record("plain", "key-plain-00000001", None),
            record("signed", "key-signed-0000001", Some("v1:aaaa:01")),
        ]
    );
    // Resealed from what it holds; a second replica resealing from the same old text, an
    // integration without a secret and one that is gone change nothing.
    assert!(
        store
            .reseal_integration("signed", "v1:aaaa:01", "v1:bbbb:02")
            .await
            .unwrap()
    );
    assert!(
        !store
            .reseal_integration("signed", "v1:aaaa:01", "v1:cccc:03")
            .await
            .unwrap()
    );
    assert!(
        !store
            .reseal_integration("plain", "v1:aaaa:01", "v1:cccc:03")
            .await
            .unwrap()
    );
    assert!(
        !store
            .reseal_integration("gone", "v1:aaaa:01", "v1:cccc:03")
            .await
            .unwrap()
    );
    assert_eq!(
        store.integrations().await.unwrap(),
        vec![
            record("plain", "key-plain-00000001", None),
            record("signed", "key-signed-0000001", Some("v1:bbbb:02")),
        ]
    );
}
