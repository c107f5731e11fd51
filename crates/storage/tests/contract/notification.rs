//! Notification's store: deliveries (one per event and channel), claims, escalations,
//! people's answers to pages and the reply codes of text messages.

use firebreak_storage::{DeliveryCursor, NotificationStore};

use crate::fixtures::{Fixture, delivery, event, micros, pending_ids};

crate::contract!(notification:
    one_delivery_per_event_and_channel,
    claims_are_held_until_they_run_out_or_the_attempt_is_recorded,
    acknowledging_cancels_later_escalation_steps,
    delivery_pages_follow_a_cursor_and_a_byte_bound,
    a_response_is_kept_once_with_its_event,
    an_incidents_pages_are_marked_acknowledged_once,
    reply_codes_are_stable_per_incident_and_reused_when_all_are_taken,
    a_sent_delivery_keeps_its_provider_id_and_is_never_claimed,
    a_providers_report_moves_a_sent_delivery_once,
    a_later_change_finds_the_first_provider_id_of_its_incident_and_channel,
    sends_to_a_destination_are_counted_in_a_window,
    subscriptions_are_kept_once_per_incident_and_subscriber,
);

async fn one_delivery_per_event_and_channel(f: &Fixture<dyn NotificationStore>) {
    let store = &*f.store;
    assert_eq!(store.insert_deliveries(&[]).await.unwrap(), 0);
    let inserted = store
        .insert_deliveries(&[
            delivery("d1", "e1", "slack", 10),
            delivery("d2", "e1", "email", 20),
            delivery("d3", "e1", "slack", 30),
        ])
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    // The event consumed again.
    let again = store
        .insert_deliveries(&[
            delivery("d4", "e1", "slack", 40),
            delivery("d5", "e2", "slack", 50),
        ])
        .await
        .unwrap();
    assert_eq!(again, 1);

    let ids = |list: Vec<firebreak_storage::DeliveryRecord>| {
        list.into_iter().map(|d| d.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.deliveries(None, 10).await.unwrap()),
        ["d5", "d2", "d1"]
    );
    assert_eq!(ids(store.deliveries(None, 1).await.unwrap()), ["d5"]);
    let mut other = delivery("d6", "e3", "slack", 60);
    other.incident_id = "inc-2".into();
    store.insert_deliveries(&[other.clone()]).await.unwrap();
    assert_eq!(
        ids(store.deliveries(Some("inc-1"), 10).await.unwrap()),
        ["d5", "d2", "d1"]
    );
    assert_eq!(
        store.deliveries(Some("inc-2"), 10).await.unwrap(),
        vec![other]
    );
    assert_eq!(
        store.deliveries(Some("inc-1"), 10).await.unwrap().pop(),
        Some(delivery("d1", "e1", "slack", 10))
    );
}

async fn claims_are_held_until_they_run_out_or_the_attempt_is_recorded(
    f: &Fixture<dyn NotificationStore>,
) {
    let store = &*f.store;
    let mut delivered = delivery("done", "e0", "slack", 5);
    delivered.status = "delivered".parse().unwrap();
    delivered.delivered_at = Some(micros(6));
    store
        .insert_deliveries(&[
            delivery("d30", "e3", "slack", 30),
            delivery("d10", "e1", "slack", 10),
            delivery("d20", "e2", "slack", 20),
            delivery("d100", "e4", "slack", 100),
            delivered,
        ])
        .await
        .unwrap();

    // Due at 50: three, oldest first, up to the limit.
    let ids = |list: Vec<firebreak_storage::DeliveryRecord>| {
        list.into_iter().map(|d| d.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store
            .claim_due_deliveries(micros(50), micros(1000), 2)
            .await
            .unwrap()),
        ["d10", "d20"]
    );
    assert_eq!(
        ids(store
            .claim_due_deliveries(micros(50), micros(1000), 10)
            .await
            .unwrap()),
        ["d30"]
    );
    // All claimed until 1000: nothing for anyone else, even once d100 is due.
    assert!(
        store
            .claim_due_deliveries(micros(60), micros(1000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store
            .claim_due_deliveries(micros(999), micros(1000), 10)
            .await
            .unwrap()),
        ["d100"]
    );
    assert!(
        store
            .claim_due_deliveries(micros(1000), micros(2000), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Recording an attempt lets the claim go: a retry is due at its time, a success never.
    let mut retry = delivery("d10", "e1", "slack", 10);
    retry.attempts = 1;
    retry.last_error = "timeout".into();
    retry.next_attempt_at = micros(500);
    store
        .update_delivery(&retry, Some(&event("changed-1")))
        .await
        .unwrap();
    let mut ok = delivery("d20", "e2", "slack", 20);
    ok.status = "delivered".parse().unwrap();
    ok.attempts = 1;
    ok.delivered_at = Some(micros(600));
    store.update_delivery(&ok, None).await.unwrap();
    assert_eq!(pending_ids(store).await, ["changed-1"]);
    let claimed = store
        .claim_due_deliveries(micros(600), micros(2000), 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec![retry]);

    // A claim that ran out (its holder died) is taken by the next claimer.
    assert_eq!(
        ids(store
            .claim_due_deliveries(micros(1001), micros(3000), 10)
            .await
            .unwrap()),
        ["d30", "d100"]
    );
    let all = store.deliveries(None, 10).await.unwrap();
    let d20 = all.iter().find(|d| d.id == "d20").unwrap();
    assert_eq!(
        (d20.status.as_str(), d20.delivered_at),
        ("delivered", Some(micros(600)))
    );
}

async fn acknowledging_cancels_later_escalation_steps(f: &Fixture<dyn NotificationStore>) {
    let store = &*f.store;
    let step = |id: &str, n: u32, status: &str| {
        let mut d = delivery(id, &format!("e-{id}"), "page", 10 + i64::from(n));
        d.escalation_step = n;
        d.status = status.parse().unwrap();
        d
    };
    let mut elsewhere = step("other-2", 2, "pending");
    elsewhere.incident_id = "inc-2".into();
    store
        .insert_deliveries(&[
            step("s0", 0, "pending"),
            step("s1", 1, "pending"),
            step("s2", 2, "pending"),
            step("s3", 3, "pending"),
            step("s2-sent", 2, "delivered"),
            elsewhere,
        ])
        .await
        .unwrap();
    assert_eq!(store.cancel_escalations("inc-1").await.unwrap(), 2);
    assert_eq!(store.cancel_escalations("inc-1").await.unwrap(), 0);
    let status = |list: &[firebreak_storage::DeliveryRecord], id: &str| {
        list.iter().find(|d| d.id == id).map(|d| d.status).unwrap()
    };
    let all = store.deliveries(None, 10).await.unwrap();
    assert_eq!(status(&all, "s0"), firebreak_domain::DeliveryState::Pending);
    assert_eq!(status(&all, "s1"), firebreak_domain::DeliveryState::Pending);
    assert_eq!(
        status(&all, "s2"),
        firebreak_domain::DeliveryState::Cancelled
    );
    assert_eq!(
        status(&all, "s3"),
        firebreak_domain::DeliveryState::Cancelled
    );
    assert_eq!(
        status(&all, "s2-sent"),
        firebreak_domain::DeliveryState::Delivered
    );
    assert_eq!(
        status(&all, "other-2"),
        firebreak_domain::DeliveryState::Pending
    );
    // Cancelled deliveries are never claimed.
    let claimed: Vec<_> = store
        .claim_due_deliveries(micros(100), micros(200), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(claimed, ["s0", "s1", "other-2"]);
}

async fn delivery_pages_follow_a_cursor_and_a_byte_bound(f: &Fixture<dyn NotificationStore>) {
    let store = &*f.store;
    // Seven deliveries, two at the same instant, each with a 100 KB error.
    let list: Vec<_> = (0..7)
        .map(|i| {
            let mut d = delivery(
                &format!("d{i}"),
                &format!("e{i}"),
                "slack",
                10 + i64::from(i / 2),
            );
            d.last_error = "x".repeat(100_000);
            d
        })
        .collect();
    store.insert_deliveries(&list).await.unwrap();

    let (mut seen, mut after) = (Vec::new(), None::<DeliveryCursor>);
    loop {
        let page = store
            .deliveries_page(Some("inc-1"), None, after.as_ref(), 100, 250_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3, "a page stops at the bound: {}", page.len());
        after = Some(DeliveryCursor {
            created_at: last.created_at,
            id: last.id.clone(),
        });
        seen.extend(page.iter().map(|d| d.id.clone()));
    }
    assert_eq!(seen, ["d6", "d5", "d4", "d3", "d2", "d1", "d0"]);
    let one = store
        .deliveries_page(None, None, None, 100, 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let after = DeliveryCursor {
        created_at: micros(12),
        id: "d5".into(),
    };
    let page = store
        .deliveries_page(None, None, Some(&after), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d4", "d3"]
    );
    // One state only: d2 failed, the others are pending.
    let mut failed = list[2].clone();
    failed.status = firebreak_domain::DeliveryState::Failed;
    failed.attempts = 8;
    store.update_delivery(&failed, None).await.unwrap();
    let only = |s| async move {
        store
            .deliveries_page(None, Some(s), None, 100, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(only(firebreak_domain::DeliveryState::Failed).await, ["d2"]);
    assert_eq!(
        only(firebreak_domain::DeliveryState::Pending).await.len(),
        6
    );
    assert!(
        only(firebreak_domain::DeliveryState::Delivered)
            .await
            .is_empty()
    );
}

async fn a_response_is_kept_once_with_its_event(f: &Fixture<dyn NotificationStore>) {
    let store = &*f.store;
    let answer = firebreak_storage::ResponseRecord {
        id: "sms:SM1".into(),
        incident_id: "inc-1".into(),
        user: "amy".into(),
        action: "acknowledge".into(),
        via: "sms".into(),
        at: micros(10),
    };
    let before = store.pending(1000).await.unwrap().len();
    assert!(store.record_response(&answer, &event("e1")).await.unwrap());
    // Twilio retrying the same message: kept once, and no second command.
    assert!(!store.record_response(&answer, &event("e2")).await.unwrap());
    let pending = store.pending(1000).await.unwrap();
    assert_eq!(pending.len(), before + 1);
    assert_eq!(pending.last().unwrap().event.id, "e1");
}

async fn reply_codes_are_stable_per_incident_and_reused_when_all_are_taken(
    f: &Fixture<dyn NotificationStore>,
) {
    let store = &*f.store;
    let code =
        |inc: String, at: i64| async move { store.reply_code("+15550001", &inc, micros(at)).await };
    assert_eq!(code("inc-a".into(), 1).await.unwrap(), 1);
    assert_eq!(code("inc-b".into(), 2).await.unwrap(), 2);
    assert_eq!(
        code("inc-a".into(), 3).await.unwrap(),
        1,
        "an incident keeps its code"
    );
    // Another number has codes of its own.
    assert_eq!(
        store
            .reply_code("+15550002", "inc-b", micros(4))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .reply_incident("+15550001", 2)
            .await
            .unwrap()
            .as_deref(),
        Some("inc-b")
    );
    assert_eq!(store.reply_incident("+15550001", 7).await.unwrap(), None);
    assert_eq!(store.reply_incident("+15550003", 1).await.unwrap(), None);
    // All 99 taken: the one assigned longest ago is taken over.
    for n in 3..=firebreak_storage::MAX_REPLY_CODE {
        code(format!("inc-{n}"), 10 + i64::from(n)).await.unwrap();
    }
    assert_eq!(code("inc-new".into(), 1_000).await.unwrap(), 1);
    assert_eq!(
        store
            .reply_incident("+15550001", 1)
            .await
            .unwrap()
            .as_deref(),
        Some("inc-new")
    );
    assert_eq!(code("inc-newer".into(), 1_001).await.unwrap(), 2);
}

async fn a_sent_delivery_keeps_its_provider_id_and_is_never_claimed(
    f: &Fixture<dyn NotificationStore>,
) {
    let store = &*f.store;
    store
        .insert_deliveries(&[delivery("d1", "e1", "sms", 10)])
        .await
        .unwrap();
    let mut sent = delivery("d1", "e1", "sms", 10);
    sent.status = firebreak_domain::DeliveryState::Sent;
    sent.attempts = 1;
    sent.provider_id = Some("SM0123".into());
    sent.sent_at = Some(micros(11));
    store.update_delivery(&sent, None).await.unwrap();
    let read = store.deliveries(None, 10).await.unwrap();
    assert_eq!(read, vec![sent.clone()]);
    // Sent is final for retries: due or not, nobody claims it.
    assert!(
        store
            .claim_due_deliveries(micros(1000), micros(2000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let only_sent = store
        .deliveries_page(
            None,
            Some(firebreak_domain::DeliveryState::Sent),
            None,
            10,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(only_sent, vec![sent]);
}

async fn a_providers_report_moves_a_sent_delivery_once(f: &Fixture<dyn NotificationStore>) {
    use firebreak_domain::DeliveryState::{Delivered, Failed, Pending, Sent};
    let store = &*f.store;
    let mut sent = delivery("d1", "e1", "sms", 10);
    sent.status = Sent;
    sent.provider_id = Some("SM1".into());
    sent.sent_at = Some(micros(11));
    let mut pending = delivery("d2", "e2", "sms", 10);
    pending.provider_id = Some("SM2".into());
    store
        .insert_deliveries(&[sent.clone(), pending])
        .await
        .unwrap();
    assert_eq!(
        store.delivery_by_provider_id("SM1", Sent).await.unwrap(),
        Some(sent.clone())
    );
    assert_eq!(
        store.delivery_by_provider_id("SM2", Sent).await.unwrap(),
        None
    );
    assert_eq!(
        store.delivery_by_provider_id("SM9", Sent).await.unwrap(),
        None
    );
    assert!(
        store
            .delivery_by_provider_id("SM2", Pending)
            .await
            .unwrap()
            .is_some()
    );

    let mut delivered = sent.clone();
    delivered.status = Delivered;
    delivered.delivered_at = Some(micros(20));
    assert!(
        store
            .transition_delivery(&delivered, Sent, Some(&event("reported-1")))
            .await
            .unwrap()
    );
    // The same report again, or a contrary one: the delivery is no longer sent.
    assert!(
        !store
            .transition_delivery(&delivered, Sent, Some(&event("reported-2")))
            .await
            .unwrap()
    );
    let mut failed = sent.clone();
    failed.status = Failed;
    failed.last_error = "undelivered".into();
    assert!(
        !store
            .transition_delivery(&failed, Sent, Some(&event("reported-3")))
            .await
            .unwrap()
    );
    assert_eq!(pending_ids(store).await, ["reported-1"]);
    let d1 = store.deliveries(None, 10).await.unwrap();
    let d1 = d1.iter().find(|d| d.id == "d1").unwrap();
    assert_eq!(d1, &delivered);
}

async fn a_later_change_finds_the_first_provider_id_of_its_incident_and_channel(
    f: &Fixture<dyn NotificationStore>,
) {
    use firebreak_domain::DeliveryState::{Delivered, Failed, Pending, Sent};
    let store = &*f.store;
    let d = |id: &str, channel: &str, kind: &str, status, provider: Option<&str>, sent: i64| {
        let mut d = delivery(id, &format!("e-{id}"), channel, 10);
        d.kind = kind.into();
        d.status = status;
        d.provider_id = provider.map(str::to_owned);
        d.sent_at = (status != Pending).then(|| micros(sent));
        d
    };
    let mut other_incident = d("o", "ops", "incident.opened", Delivered, Some("C1:9.9"), 1);
    other_incident.incident_id = "inc-2".into();
    store
        .insert_deliveries(&[
            other_incident,
            d("f", "ops", "incident.opened", Failed, Some("C1:0.1"), 2),
            d("r", "ops", "runbook.message", Delivered, Some("C1:0.5"), 3),
            d(
                "a",
                "ops",
                "incident.acknowledged",
                Delivered,
                Some("C1:2.0"),
                20,
            ),
            d("p", "ops", "incident.opened", Delivered, Some("C1:1.0"), 10),
            d("n", "ops", "incident.resolved", Delivered, None, 5),
            d("m", "mail", "incident.opened", Sent, Some("<m@x>"), 30),
            d("q", "chat", "incident.opened", Pending, None, 0),
        ])
        .await
        .unwrap();
    let first = |channel: &'static str| async move {
        store
            .first_provider_id("inc-1", channel, "incident.")
            .await
            .unwrap()
    };
    // The first sent or delivered incident change with an id: not the failed one, not the
    // runbook's message, not another incident's.
    assert_eq!(first("ops").await.as_deref(), Some("C1:1.0"));
    assert_eq!(first("mail").await.as_deref(), Some("<m@x>"));
    assert_eq!(first("chat").await, None);
    assert_eq!(
        store
            .first_provider_id("inc-1", "ops", "runbook.")
            .await
            .unwrap()
            .as_deref(),
        Some("C1:0.5")
    );
}

async fn sends_to_a_destination_are_counted_in_a_window(f: &Fixture<dyn NotificationStore>) {
    use firebreak_domain::DeliveryState::{Delivered, Failed, Pending, Sent};
    let store = &*f.store;
    let d = |id: &str, destination: &str, status, sent: Option<i64>| {
        let mut d = delivery(id, &format!("e-{id}"), "user:a/phone", 10);
        d.destination = destination.into();
        d.status = status;
        d.sent_at = sent.map(micros);
        d
    };
    store
        .insert_deliveries(&[
            d("1", "sms:+15550001", Sent, Some(100)),
            d("2", "sms:+15550001", Delivered, Some(200)),
            d("3", "sms:+15550001", Failed, Some(300)),
            d("4", "sms:+15550001", Pending, None),
            d("5", "sms:+15550002", Sent, Some(250)),
            d("6", "voice:+15550001", Sent, Some(260)),
            d("7", "sms:+15550001", Failed, None),
        ])
        .await
        .unwrap();
    let sent = |since: i64, limit: u32| async move {
        store
            .sent_to("sms:+15550001", micros(since), limit)
            .await
            .unwrap()
    };
    // Every handed-over one counts, whatever became of it; oldest first.
    assert_eq!(sent(0, 10).await, [micros(100), micros(200), micros(300)]);
    assert_eq!(sent(200, 10).await, [micros(200), micros(300)]);
    // The newest `limit`.
    assert_eq!(sent(0, 2).await, [micros(200), micros(300)]);
    assert!(sent(301, 10).await.is_empty());
}

async fn an_incidents_pages_are_marked_acknowledged_once(f: &Fixture<dyn NotificationStore>) {
    let store = &*f.store;
    let page = |id: &str, incident: &str, kind: &str| {
        let mut d = delivery(id, &format!("e-{id}"), "user:amy/work", 10);
        d.incident_id = incident.into();
        d.kind = kind.into();
        d
    };
    store
        .insert_deliveries(&[
            page("p1", "inc-1", "escalation.page"),
            page("p2", "inc-1", "escalation.page"),
            page("s1", "inc-1", "escalation.step"),
            page("p3", "inc-2", "escalation.page"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .mark_acknowledged("inc-1", micros(50), "user:bob")
            .await
            .unwrap(),
        2
    );
    // A later resolve marks nothing already marked.
    assert_eq!(
        store
            .mark_acknowledged("inc-1", micros(90), "user:carol")
            .await
            .unwrap(),
        0
    );
    let all = store.deliveries(None, 100).await.unwrap();
    let ack = |id: &str| {
        let d = all.iter().find(|d| d.id == id).unwrap();
        (d.acknowledged_at, d.acknowledged_by.clone())
    };
    assert_eq!(ack("p1"), (Some(micros(50)), "user:bob".to_owned()));
    assert_eq!(ack("p2"), (Some(micros(50)), "user:bob".to_owned()));
    assert_eq!(ack("s1"), (None, String::new()), "steps are not pages");
    assert_eq!(ack("p3"), (None, String::new()), "another incident");
}

async fn subscriptions_are_kept_once_per_incident_and_subscriber(
    f: &Fixture<dyn NotificationStore>,
) {
    use firebreak_storage::SubscriptionRecord;
    let store = &*f.store;
    let sub = |incident: &str, subscriber: &str, at: i64| SubscriptionRecord {
        incident_id: incident.into(),
        subscriber: subscriber.into(),
        created_at: micros(at),
        created_by: "user:amy".into(),
    };
    assert!(store.subscriptions("i1").await.unwrap().is_empty());
    assert!(store.subscribe(&sub("i1", "person:bob", 2)).await.unwrap());
    assert!(
        store
            .subscribe(&sub("i1", "channel:status", 1))
            .await
            .unwrap()
    );
    assert!(store.subscribe(&sub("i2", "person:bob", 3)).await.unwrap());
    // Subscribing again keeps the first (its time and actor).
    let mut again = sub("i1", "person:bob", 9);
    again.created_by = "user:zed".into();
    assert!(!store.subscribe(&again).await.unwrap());
    assert_eq!(
        store.subscriptions("i1").await.unwrap(),
        [sub("i1", "channel:status", 1), sub("i1", "person:bob", 2)]
    );
    assert!(store.unsubscribe("i1", "person:bob").await.unwrap());
    assert!(!store.unsubscribe("i1", "person:bob").await.unwrap());
    assert!(!store.unsubscribe("i9", "channel:status").await.unwrap());
    assert_eq!(
        store.subscriptions("i1").await.unwrap(),
        [sub("i1", "channel:status", 1)]
    );
    assert_eq!(
        store.subscriptions("i2").await.unwrap(),
        [sub("i2", "person:bob", 3)]
    );

    // Pages: oldest first, then by subscriber (several made in the same microsecond are
    // neither skipped nor repeated), each once, only the incident's own.
    for (who, at) in [("person:zed", 7), ("person:amy", 7), ("channel:ops", 5)] {
        store.subscribe(&sub("i1", who, at)).await.unwrap();
    }
    let want = ["channel:status", "channel:ops", "person:amy", "person:zed"];
    for size in [1, 2, 3, 4, 9] {
        let (mut seen, mut after) = (Vec::new(), None::<(firebreak_domain::Micros, String)>);
        loop {
            let page = store
                .subscriptions_page("i1", after.as_ref().map(|(at, s)| (*at, s.as_str())), size)
                .await
                .unwrap();
            assert!(page.len() <= size as usize);
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.subscriber.clone()));
            seen.extend(page.into_iter().map(|s| s.subscriber));
        }
        assert_eq!(seen, want, "pages of {size}");
    }
}
