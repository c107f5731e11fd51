//! Where each consumer stands, as `/metrics` shows it: on the embedded bus (a stream read in
//! place from a service's outbox, and one in the bus's own log) and on a real `nats-server`
//! (JetStream's pending and in-flight counts, parked messages counted per consumer by
//! subject).

use std::sync::Arc;
use std::time::Duration;

use firebreak_bus::{Bus, EmbeddedBus, NatsBus, NatsOptions, Standing, streams};
use firebreak_storage::sqlite::{SqliteBusLog, SqliteIntakeStore};
use firebreak_storage::{IntakeStore, OutboxEvent};
use firebreak_testkit::nats::NatsServer;

use crate::msg;

const WAIT: Duration = Duration::from_millis(10);

fn sorted(mut s: Vec<Standing>) -> Vec<(String, String, u64, u64)> {
    s.sort_by(|a, b| (&a.stream, &a.consumer).cmp(&(&b.stream, &b.consumer)));
    s.into_iter()
        .map(|s| (s.stream, s.consumer, s.backlog, s.parked))
        .collect()
}

fn row(stream: &str, consumer: &str, backlog: u64, parked: u64) -> (String, String, u64, u64) {
    (stream.into(), consumer.into(), backlog, parked)
}

#[tokio::test]
async fn embedded_consumers_stand_where_their_cursors_and_parked_events_say() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteIntakeStore::open(&dir.path().join("intake.db"), false)
            .await
            .unwrap(),
    );
    let log = SqliteBusLog::open(&dir.path().join("bus.db"), false)
        .await
        .unwrap();
    let bus = EmbeddedBus::new(Arc::new(log)).read_in_place("alerts", store.clone());
    assert!(
        bus.standing().await.unwrap().is_empty(),
        "nobody fetched yet"
    );

    let mut tx = store.begin().await.unwrap();
    for id in ["e1", "e2", "e3", "e4"] {
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
    // Another stream's events in the same outbox are no one's backlog here.
    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&OutboxEvent {
        id: "other".into(),
        stream: "audit".into(),
        subject: "audit.entry".into(),
        payload: Vec::new(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // And a stream in the bus's own log.
    bus.publish("incidents", msg("i1")).await.unwrap();
    bus.publish("incidents", msg("i2")).await.unwrap();

    let got = bus.fetch("alerts", "triage", 100, WAIT).await.unwrap();
    assert_eq!(got.len(), 4);
    bus.ack("alerts", "triage", &got[..1]).await.unwrap();
    bus.park("alerts", "triage", &got[1], "bad").await.unwrap();
    let slow = bus.fetch("alerts", "slow", 1, WAIT).await.unwrap();
    assert_eq!(slow.len(), 1);
    let i = bus
        .fetch("incidents", "orchestration", 1, WAIT)
        .await
        .unwrap();
    bus.ack("incidents", "orchestration", &i).await.unwrap();

    assert_eq!(
        sorted(bus.standing().await.unwrap()),
        [
            // Past e1 (acked) and e2 (parked): e3 and e4 are left.
            row("alerts", "slow", 4, 0),
            row("alerts", "triage", 2, 1),
            row("incidents", "orchestration", 1, 0),
        ]
    );
}

#[tokio::test]
async fn jetstream_consumers_report_pending_and_in_flight_and_their_own_parked_messages() {
    let server = NatsServer::start().await;
    let bus = NatsBus::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    assert!(
        bus.standing().await.unwrap().is_empty(),
        "no consumer bound"
    );
    for id in ["a1", "a2", "a3", "a4"] {
        bus.publish(streams::ALERTS, msg(id)).await.unwrap();
    }
    bus.publish(streams::INCIDENTS, msg("i1")).await.unwrap();

    let got = bus
        .fetch(streams::ALERTS, "triage", 2, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    bus.ack(streams::ALERTS, "triage", &got[..1]).await.unwrap();
    bus.park(streams::ALERTS, "triage", &got[1], "bad")
        .await
        .unwrap();
    let i = bus
        .fetch(
            streams::INCIDENTS,
            "orchestration",
            1,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(i.len(), 1, "held, unacknowledged");

    // Acknowledgements are flushed, not confirmed: wait for the server to count them.
    let want = [
        row("alerts", "triage", 2, 1),
        row("incidents", "orchestration", 1, 0),
    ];
    crate::eventually(Duration::from_secs(10), "the server's counts", || async {
        let got = sorted(bus.standing().await.unwrap());
        (got == want).then_some(())
    })
    .await;

    // Another process (replica or service) counts its own consumers only.
    let other = NatsBus::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    other
        .fetch(streams::ALERTS, "notification", 1, Duration::from_secs(1))
        .await
        .unwrap();
    let theirs = sorted(other.standing().await.unwrap());
    assert_eq!(theirs.len(), 1);
    assert_eq!((theirs[0].1.as_str(), theirs[0].3), ("notification", 0));
}
