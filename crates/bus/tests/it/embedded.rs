//! The embedded bus on a real SQLite log: dedup, at-least-once across restarts, parking.

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, EmbeddedBus};
use firebreak_storage::BusLog;
use firebreak_storage::sqlite::SqliteBusLog;

use crate::msg;

async fn bus(path: &std::path::Path) -> (EmbeddedBus, SqliteBusLog) {
    let log = SqliteBusLog::open(path, false).await.unwrap();
    (EmbeddedBus::new(Arc::new(log.clone())), log)
}

#[tokio::test]
async fn unacknowledged_messages_come_back_after_a_restart_and_duplicates_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.db");
    let (b, _) = bus(&path).await;
    b.publish("incidents", msg("e1")).await.unwrap();
    b.publish("incidents", msg("e1")).await.unwrap(); // a relay retry: same id
    b.publish("incidents", msg("e2")).await.unwrap();

    let got = b
        .fetch("incidents", "c", 10, Duration::from_millis(10))
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"]);
    b.ack("incidents", "c", &got[..1]).await.unwrap();

    // "Crash": a new bus over the same file redelivers what was not acknowledged.
    drop(b);
    let (b, _) = bus(&path).await;
    let got = b
        .fetch("incidents", "c", 10, Duration::from_millis(10))
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["e2"]);
    // Another consumer has its own cursor and sees everything.
    let other = b
        .fetch("incidents", "d", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(other.len(), 2);
}

#[tokio::test]
async fn parked_messages_are_kept_for_operators_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (b, log) = bus(&dir.path().join("bus.db")).await;
    b.publish("alerts", msg("bad")).await.unwrap();
    b.publish("alerts", msg("good")).await.unwrap();
    let got = b
        .fetch("alerts", "c", 1, Duration::from_millis(10))
        .await
        .unwrap();
    b.park("alerts", "c", &got[0], "undecodable").await.unwrap();
    let next = b
        .fetch("alerts", "c", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(next[0].message.id, "good");
    let parked = log.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].message_id.as_str(), parked[0].error.as_str()),
        ("bad", "undecodable")
    );
}

#[tokio::test]
async fn a_waiting_fetch_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = bus(&dir.path().join("bus.db")).await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.fetch("runbooks", "c", 10, Duration::from_secs(30))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.publish("runbooks", msg("r1")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got[0].message.id, "r1");
}

#[tokio::test]
async fn the_consume_loop_acknowledges_what_it_handled_and_parks_what_fails() {
    use firebreak_bus::{ConsumerOptions, HandlerError, Inbound, consume};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let (b, log) = bus(&dir.path().join("bus.db")).await;
    for id in ["a", "bad", "c"] {
        b.publish("alerts", msg(id)).await.unwrap();
    }
    let handled: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume(
        Arc::new(b.clone()),
        "alerts",
        "triage",
        ConsumerOptions {
            backoff: Duration::from_millis(1),
            ..ConsumerOptions::default()
        },
        shutdown.clone(),
        {
            let handled = handled.clone();
            move |d: Inbound| {
                let handled = handled.clone();
                async move {
                    assert_eq!(d.attempt, 1);
                    if d.message.id == "bad" {
                        return Err(HandlerError::Permanent("undecodable".into()));
                    }
                    handled.lock().unwrap().push(d.message.id);
                    Ok(())
                }
            }
        },
    ));
    crate::eventually(Duration::from_secs(10), "a and c handled", || async {
        (handled.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(*handled.lock().unwrap(), ["a", "c"]);
    assert_eq!(log.parked().await.unwrap().len(), 1);
    // The cursor moved past everything: nothing comes again.
    let rest = b
        .fetch("alerts", "triage", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_unavailable_store_is_waited_out_without_parking() {
    use firebreak_bus::{ConsumerOptions, HandlerError, Inbound, consume};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let (b, log) = bus(&dir.path().join("bus.db")).await;
    b.publish("alerts", msg("a")).await.unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let handled: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume(
        Arc::new(b.clone()),
        "alerts",
        "triage",
        ConsumerOptions {
            max_deliveries: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..ConsumerOptions::default()
        },
        shutdown.clone(),
        {
            let (calls, handled) = (calls.clone(), handled.clone());
            move |d: Inbound| {
                let (calls, handled) = (calls.clone(), handled.clone());
                async move {
                    // Ten outages in a row: more than the three deliveries before parking.
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 10 {
                        return Err(HandlerError::Unavailable("database down".into()));
                    }
                    handled.lock().unwrap().push(d.message.id);
                    Ok(())
                }
            }
        },
    ));
    crate::eventually(Duration::from_secs(10), "a handled", || async {
        (!handled.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(*handled.lock().unwrap(), ["a"]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 11);
    assert!(log.parked().await.unwrap().is_empty(), "nothing parked");
}

#[tokio::test]
async fn under_load_the_consume_loop_lingers_so_batches_fill() {
    use firebreak_bus::{Batch, ConsumerOptions, Inbound, consume_batched};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let (b, _) = bus(&dir.path().join("bus.db")).await;
    b.publish("alerts", msg("a")).await.unwrap();
    b.publish("alerts", msg("b")).await.unwrap();
    // The size of every batch handled: a batch handler sees two or more, the one-by-one
    // handler one.
    let sizes: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume_batched(
        Arc::new(b.clone()),
        "alerts",
        "triage",
        ConsumerOptions {
            linger: Duration::from_secs(2),
            ..ConsumerOptions::default()
        },
        shutdown.clone(),
        {
            let sizes = sizes.clone();
            move |batch: Arc<[Inbound]>| {
                let sizes = sizes.clone();
                async move {
                    sizes.lock().unwrap().push(batch.len());
                    Ok(Batch::Handled)
                }
            }
        },
        {
            let sizes = sizes.clone();
            move |_: Inbound| {
                let sizes = sizes.clone();
                async move {
                    sizes.lock().unwrap().push(1);
                    Ok(())
                }
            }
        },
    ));
    crate::eventually(Duration::from_secs(10), "the first batch", || async {
        (!sizes.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    // A batch of two but not a full one: the loop waits before fetching again, so two
    // messages published apart arrive together (without lingering, the first would be
    // fetched alone).
    b.publish("alerts", msg("c")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.publish("alerts", msg("d")).await.unwrap();
    crate::eventually(Duration::from_secs(10), "c and d handled", || async {
        (sizes.lock().unwrap().iter().sum::<usize>() == 4).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(*sizes.lock().unwrap(), [2, 2]);
}
