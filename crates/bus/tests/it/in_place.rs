//! The embedded bus reading a stream in place from its producer's outbox (a real SQLite
//! service database): delivery from the outbox, durable cursors, parking, wake-ups, and the
//! move from a log a relay filled before.

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, EmbeddedBus, Relay, RelayHandle};
use firebreak_storage::sqlite::{SqliteBusLog, SqliteIntakeStore};
use firebreak_storage::{BusLog, IntakeStore, Outbox, OutboxEvent};
use tokio_util::sync::CancellationToken;

use crate::msg;

const WAIT: Duration = Duration::from_millis(10);

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The producer's store, the bus's log, and a bus reading `alerts` in place.
    async fn open(&self) -> (Arc<SqliteIntakeStore>, SqliteBusLog, EmbeddedBus) {
        let store = Arc::new(
            SqliteIntakeStore::open(&self.dir.path().join("intake.db"), false)
                .await
                .unwrap(),
        );
        let log = SqliteBusLog::open(&self.dir.path().join("bus.db"), false)
            .await
            .unwrap();
        let bus = EmbeddedBus::new(Arc::new(log.clone())).read_in_place("alerts", store.clone());
        (store, log, bus)
    }
}

/// Commits events to the producer's outbox, as a service does with a state change.
async fn write(store: &SqliteIntakeStore, ids: &[&str]) {
    let mut tx = store.begin().await.unwrap();
    for id in ids {
        let m = msg(id);
        tx.enqueue(&OutboxEvent {
            id: m.id,
            stream: "alerts".into(),
            subject: m.subject,
            payload: m.payload,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn fetch_ids(bus: &EmbeddedBus, consumer: &str) -> Vec<String> {
    bus.fetch("alerts", consumer, 100, WAIT)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message.id)
        .collect()
}

#[tokio::test]
async fn consumers_read_the_outbox_in_place_and_resume_from_their_cursor() {
    let files = Files::new();
    let (store, _, bus) = files.open().await;
    write(&store, &["e1", "e2"]).await;
    write(&store, &["e3"]).await;

    let got = bus.fetch("alerts", "c", 100, WAIT).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    assert_eq!(got[1].message.payload, b"e2", "the event as committed");
    bus.ack("alerts", "c", &got[..2]).await.unwrap();
    // Not acknowledged yet: fetched again.
    assert_eq!(fetch_ids(&bus, "c").await, ["e3"]);

    // "Crash": a new bus over the same files resumes where the consumer acknowledged.
    drop(bus);
    let (store, _, bus) = files.open().await;
    assert_eq!(fetch_ids(&bus, "c").await, ["e3"]);
    // Another consumer has its own cursor and sees everything.
    assert_eq!(fetch_ids(&bus, "d").await, ["e1", "e2", "e3"]);
    // Nothing was copied or marked: the outbox is the stream.
    assert_eq!(store.pending(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn nothing_publishes_to_a_stream_read_in_place() {
    let files = Files::new();
    let (_store, log, bus) = files.open().await;
    let err = bus.publish("alerts", msg("x")).await.unwrap_err();
    assert!(err.to_string().contains("read in place"), "{err}");
    let err = bus
        .publish_batch(vec![
            ("incidents".into(), msg("y")),
            ("alerts".into(), msg("x")),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("read in place"), "{err}");
    // Refused whole: not even the other stream's message was appended.
    assert!(log.fetch("c", "incidents", 10).await.unwrap().is_empty());
    // Streams without a source still go through the log.
    bus.publish("incidents", msg("y")).await.unwrap();
    let got = bus.fetch("incidents", "c", 10, WAIT).await.unwrap();
    assert_eq!(got[0].message.id, "y");
}

#[tokio::test]
async fn parking_an_event_read_in_place_keeps_a_copy_and_moves_past_it() {
    let files = Files::new();
    let (store, log, bus) = files.open().await;
    write(&store, &["bad", "good"]).await;
    let got = bus.fetch("alerts", "c", 1, WAIT).await.unwrap();
    bus.park("alerts", "c", &got[0], "undecodable")
        .await
        .unwrap();
    assert_eq!(fetch_ids(&bus, "c").await, ["good"]);
    let parked = log.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (
            parked[0].message_id.as_str(),
            parked[0].error.as_str(),
            parked[0].stream.as_str()
        ),
        ("bad", "undecodable", "alerts")
    );
    // The cursor moved durably.
    drop(bus);
    let (_, _, bus) = files.open().await;
    assert_eq!(fetch_ids(&bus, "c").await, ["good"]);
}

#[tokio::test]
async fn the_producers_relay_wakes_a_waiting_consumer() {
    let files = Files::new();
    let (store, _, bus) = files.open().await;
    let outbox: Arc<dyn Outbox> = store.clone();
    assert!(bus.reads_in_place(&*outbox));
    let other: Arc<dyn Outbox> = Arc::new(
        SqliteIntakeStore::open(&files.dir.path().join("other.db"), false)
            .await
            .unwrap(),
    );
    assert!(!bus.reads_in_place(&*other));

    let handle = RelayHandle::default();
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay {
            outbox,
            bus: Arc::new(bus.clone()),
            handle: handle.clone(),
            name: "test",
        }
        .run(shutdown.clone()),
    );
    // A fetch waiting far longer than the test may take: only the wake-up ends it early with
    // the event (at its deadline it would return nothing).
    let waiter = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.fetch("alerts", "c", 10, Duration::from_secs(60))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&store, &["e1"]).await;
    handle.wake();
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the wake-up reached the waiting consumer")
        .unwrap();
    assert_eq!(got[0].message.id, "e1");
    shutdown.cancel();
    relay.await.unwrap();
    // The relay copied nothing into the log.
    assert_eq!(store.pending(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn consumers_drain_what_a_relay_copied_into_the_log_then_read_in_place() {
    let files = Files::new();
    // An earlier version: the relay copied e1 and e2 into the bus's log and marked them;
    // e3 committed but was not copied yet. Consumer c had handled e1.
    {
        let (store, log, _) = files.open().await;
        let old_bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(Arc::new(log.clone())));
        write(&store, &["e1", "e2"]).await;
        let pending = store.pending(10).await.unwrap();
        old_bus
            .publish_batch(
                pending
                    .iter()
                    .map(|r| ("alerts".to_owned(), msg(&r.event.id)))
                    .collect(),
            )
            .await
            .unwrap();
        store
            .mark_published(&pending.iter().map(|r| r.seq).collect::<Vec<_>>())
            .await
            .unwrap();
        write(&store, &["e3"]).await;
        let got = old_bus.fetch("alerts", "c", 1, WAIT).await.unwrap();
        assert_eq!(got[0].message.id, "e1");
        old_bus.ack("alerts", "c", &got).await.unwrap();
    }
    // This version reads the outbox in place: every event exactly once, in order.
    let (store, _, bus) = files.open().await;
    write(&store, &["e4"]).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = bus.fetch("alerts", "c", 100, WAIT).await.unwrap();
        seen.extend(got.iter().map(|d| d.message.id.clone()));
        bus.ack("alerts", "c", &got).await.unwrap();
    }
    assert_eq!(seen, ["e2", "e3", "e4"]);
    // A consumer that had handled nothing gets all four, once.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = bus.fetch("alerts", "d", 100, WAIT).await.unwrap();
        seen.extend(got.iter().map(|d| d.message.id.clone()));
        bus.ack("alerts", "d", &got).await.unwrap();
    }
    assert_eq!(seen, ["e1", "e2", "e3", "e4"]);
    // And after a restart, c goes on in the outbox.
    drop(bus);
    let (store, _, bus) = files.open().await;
    write(&store, &["e5"]).await;
    assert_eq!(fetch_ids(&bus, "c").await, ["e5"]);
}

async fn next(rx: &mut tokio::sync::broadcast::Receiver<firebreak_bus::Message>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a watched message")
        .unwrap()
        .id
}

/// A watch sees what commits after it began, in order, whether committed before or after a
/// second watcher joined; nothing from before; a watcher that falls a buffer behind is told.
#[tokio::test]
async fn watchers_see_what_commits_after_they_begin_in_order() {
    let files = Files::new();
    let (store, _, bus) = files.open().await;
    write(&store, &["before"]).await;
    let mut first = bus.watch("alerts").await.unwrap();
    write(&store, &["e1", "e2"]).await;
    bus.outbox_written(&*store);
    assert_eq!(next(&mut first).await, "e1");
    assert_eq!(next(&mut first).await, "e2");
    let mut second = bus.watch("alerts").await.unwrap();
    write(&store, &["e3"]).await;
    bus.outbox_written(&*store);
    assert_eq!(next(&mut first).await, "e3");
    assert_eq!(next(&mut second).await, "e3");
    // A stream not read in place cannot be watched.
    let err = bus.watch("incidents").await.unwrap_err();
    assert!(err.to_string().contains("incidents"), "{err}");
    // Past the buffer, a watcher that read nothing meanwhile is told how much it missed
    // (one that kept reading missed nothing).
    let mut reading = bus.watch("alerts").await.unwrap();
    let many: Vec<String> = (0..firebreak_bus::WATCH_BUFFER + 10)
        .map(|n| format!("m{n}"))
        .collect();
    let ids: Vec<&str> = many.iter().map(String::as_str).collect();
    write(&store, &ids).await;
    bus.outbox_written(&*store);
    for id in &many {
        assert_eq!(&next(&mut reading).await, id);
    }
    match second.recv().await {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 10),
        other => panic!("{other:?}"),
    }
}
