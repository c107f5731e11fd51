//! Orchestration's store: runs (one per runbook and incident), compare-and-set transitions,
//! leases, the journal and run logs.

use firebreak_domain::{RunPhase, RunState};
use firebreak_storage::{OrchestrationStore, RunQuery};
use serde_json::json;

use crate::fixtures::{Fixture, event, journal, lease, micros, pending_ids, run};

crate::contract!(orchestration:
    one_run_per_runbook_and_incident,
    transitions_compare_and_set,
    leases_are_held_by_one_owner_until_they_run_out,
    journal_entries_of_waiting_steps_are_replaced,
    logs_append_in_order,
    run_states_are_set_with_their_events,
    due_runs_are_those_with_work_to_do,
    finished_runs_are_never_leased_or_finished_again,
    attempts_count_executions_until_the_run_stops_cleanly,
    runs_page_by_id_and_stop_at_a_byte_bound,
    journals_page_by_seq_and_stop_at_a_byte_bound,
);

async fn one_run_per_runbook_and_incident(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    assert_eq!(store.create_runs(&[]).await.unwrap(), 0);
    let created = store
        .create_runs(&[
            (run("r1", "restart", "inc-1"), event("e1")),
            (run("r2", "diagnose", "inc-1"), event("e2")),
            // The same runbook for the same incident, in the same call.
            (run("r3", "restart", "inc-1"), event("e3")),
            (run("r4", "restart", "inc-2"), event("e4")),
        ])
        .await
        .unwrap();
    assert_eq!(created, 3);
    assert_eq!(pending_ids(store).await, ["e1", "e2", "e4"]);
    assert_eq!(
        store.run("r1").await.unwrap(),
        Some(run("r1", "restart", "inc-1"))
    );
    assert_eq!(store.run("r3").await.unwrap(), None);

    // Later, too.
    assert!(
        !store
            .create_run(&run("r5", "restart", "inc-1"), &event("e5"))
            .await
            .unwrap()
    );
    assert!(
        store
            .create_run(&run("r6", "restart", "inc-3"), &event("e6"))
            .await
            .unwrap()
    );
    assert_eq!(pending_ids(store).await, ["e1", "e2", "e4", "e6"]);

    let ids = |runs: Vec<firebreak_storage::RunRecord>| {
        runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.runs(None, None, 10).await.unwrap()),
        ["r6", "r4", "r2", "r1"]
    );
    assert_eq!(ids(store.runs(None, None, 2).await.unwrap()), ["r6", "r4"]);
    assert_eq!(
        ids(store.runs(Some("inc-1"), None, 10).await.unwrap()),
        ["r2", "r1"]
    );
    assert_eq!(
        ids(store
            .runs(Some("inc-1"), Some(RunState::Pending), 10)
            .await
            .unwrap()),
        ["r2", "r1"]
    );
    assert!(
        store
            .runs(Some("inc-1"), Some(RunState::Running), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .runs(Some("inc-9"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.run("nope").await.unwrap(), None);
}

async fn transitions_compare_and_set(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    let mut next = run("r1", "restart", "inc-1");
    next.state = RunState::WaitingApproval;
    next.phase = RunPhase::Plan;
    next.plan = json!([{ "action": "restart", "target": "db-1" }]);
    next.wake_at = Some(micros(500));
    next.error = "none yet".into();
    // Fields a transition does not write.
    next.live = false;
    next.input = json!("ignored");
    let moved = store
        .transition(
            &next,
            RunState::Pending,
            Some(&journal("r1", 1, "waiting")),
            &[event("e1"), event("e2")],
        )
        .await
        .unwrap();
    assert!(moved);
    let mut expected = next.clone();
    expected.live = true;
    expected.input = run("r1", "restart", "inc-1").input;
    assert_eq!(store.run("r1").await.unwrap(), Some(expected.clone()));
    assert_eq!(
        store.journal("r1").await.unwrap(),
        vec![journal("r1", 1, "waiting")]
    );
    assert_eq!(pending_ids(store).await, ["e0", "e1", "e2"]);

    // From a state the run is no longer in: nothing is written.
    let mut stale = next.clone();
    stale.state = RunState::Running;
    let moved = store
        .transition(
            &stale,
            RunState::Pending,
            Some(&journal("r1", 2, "done")),
            &[event("e3")],
        )
        .await
        .unwrap();
    assert!(!moved);
    assert_eq!(store.run("r1").await.unwrap(), Some(expected));
    assert_eq!(store.journal("r1").await.unwrap().len(), 1);
    assert_eq!(pending_ids(store).await, ["e0", "e1", "e2"]);
    // Nor for a run that does not exist.
    assert!(
        !store
            .transition(&run("nope", "x", "y"), RunState::Pending, None, &[])
            .await
            .unwrap()
    );

    let mut done = next.clone();
    done.state = RunState::Succeeded;
    done.finished_at = Some(micros(900));
    done.wake_at = None;
    assert!(
        store
            .transition(&done, RunState::WaitingApproval, None, &[])
            .await
            .unwrap()
    );
    let r = store.run("r1").await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.finished_at, r.wake_at),
        (RunState::Succeeded, Some(micros(900)), None)
    );
    assert!(r.is_finished());
}

async fn leases_are_held_by_one_owner_until_they_run_out(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    assert!(lease(store, "r1", "a", 100, 10).await);
    // Another owner is refused while the lease lasts, also at its last instant.
    assert!(!lease(store, "r1", "b", 150, 50).await);
    assert!(!lease(store, "r1", "b", 150, 100).await);
    // The holder renews.
    assert!(lease(store, "r1", "a", 200, 60).await);
    assert!(!lease(store, "r1", "b", 250, 150).await);
    // Once it ran out, another takes it over.
    assert!(lease(store, "r1", "b", 300, 201).await);
    assert!(!lease(store, "r1", "a", 400, 250).await);
    // Only the holder can release.
    store.release_run("r1", "a").await.unwrap();
    assert!(!lease(store, "r1", "a", 400, 250).await);
    store.release_run("r1", "b").await.unwrap();
    assert!(lease(store, "r1", "a", 400, 250).await);
    // No run, no lease.
    assert!(!lease(store, "nope", "a", 400, 250).await);
    store.release_run("nope", "a").await.unwrap();
}

async fn journal_entries_of_waiting_steps_are_replaced(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    store
        .create_run(&run("r2", "restart", "inc-2"), &event("e1"))
        .await
        .unwrap();
    assert!(store.journal("r1").await.unwrap().is_empty());
    store
        .put_journal(&journal("r1", 2, "done"), &[])
        .await
        .unwrap();
    store
        .put_journal(&journal("r1", 1, "waiting"), &[event("e2")])
        .await
        .unwrap();
    store
        .put_journal(&journal("r2", 1, "done"), &[])
        .await
        .unwrap();
    assert_eq!(
        store.journal("r1").await.unwrap(),
        vec![journal("r1", 1, "waiting"), journal("r1", 2, "done")]
    );

    // The waiting step finishes: status, result, attempts and time are replaced, the rest
    // (what was asked) stays.
    let mut finished = journal("r1", 1, "done");
    finished.result = json!({ "status": 200, "body": "ok" });
    finished.attempts = 3;
    finished.at = micros(77);
    finished.action = "ignored".into();
    finished.args = json!("ignored");
    store.put_journal(&finished, &[event("e3")]).await.unwrap();
    let mut expected = journal("r1", 1, "done");
    expected.result = finished.result.clone();
    expected.attempts = 3;
    expected.at = micros(77);
    assert_eq!(
        store.journal("r1").await.unwrap(),
        vec![expected, journal("r1", 2, "done")]
    );
    assert_eq!(
        store.journal("r2").await.unwrap(),
        vec![journal("r2", 1, "done")]
    );
    assert_eq!(pending_ids(store).await, ["e0", "e1", "e2", "e3"]);
    // A journal entry needs its run.
    assert!(
        store
            .put_journal(&journal("nope", 1, "done"), &[])
            .await
            .is_err()
    );
}

async fn logs_append_in_order(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    store
        .create_run(&run("r2", "restart", "inc-2"), &event("e1"))
        .await
        .unwrap();
    assert!(store.log("r1").await.unwrap().is_empty());
    store
        .append_log("r1", &["one".into(), "two".into()])
        .await
        .unwrap();
    store.append_log("r2", &["other".into()]).await.unwrap();
    store.append_log("r1", &[]).await.unwrap();
    store.append_log("r1", &["three".into()]).await.unwrap();
    assert_eq!(store.log("r1").await.unwrap(), ["one", "two", "three"]);
    assert_eq!(store.log("r2").await.unwrap(), ["other"]);
    assert!(store.append_log("nope", &["x".into()]).await.is_err());
}

async fn run_states_are_set_with_their_events(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    assert!(
        store
            .set_run_state(
                "r1",
                RunState::Pending,
                RunState::Running,
                None,
                &[event("e1")]
            )
            .await
            .unwrap()
    );
    let r = store.run("r1").await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.error.as_str(), r.finished_at),
        (RunState::Running, "", None)
    );
    // From a state the run is no longer in: nothing is written.
    assert!(
        !store
            .set_run_state(
                "r1",
                RunState::Pending,
                RunState::Failed,
                Some("late"),
                &[event("x")]
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_run_state(
                "r1",
                RunState::Running,
                RunState::Sleeping,
                Some("boom"),
                &[]
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_run_state(
                "r1",
                RunState::Sleeping,
                RunState::Failed,
                None,
                &[event("e2"), event("e3")]
            )
            .await
            .unwrap()
    );
    let r = store.run("r1").await.unwrap().unwrap();
    // No error given: the last one stays.
    assert_eq!((r.state, r.error.as_str()), (RunState::Failed, "boom"));
    assert!(r.finished_at.is_some_and(|t| t > micros(0)));
    assert!(
        !store
            .set_run_state(
                "nope",
                RunState::Pending,
                RunState::Failed,
                None,
                &[event("y")]
            )
            .await
            .unwrap()
    );
    assert_eq!(pending_ids(store).await, ["e0", "e1", "e2", "e3"]);
}

/// A replica acting on a stale list of due runs, after another finished the run and gave
/// its lease up, neither executes nor finishes it again: one finish, one event.
async fn finished_runs_are_never_leased_or_finished_again(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    for (id, incident) in [("r1", "inc-1"), ("r2", "inc-2"), ("r3", "inc-3")] {
        store
            .create_run(&run(id, "restart", incident), &event(&format!("c-{id}")))
            .await
            .unwrap();
    }
    let stale = store.due_runs(micros(0)).await.unwrap();
    assert_eq!(stale.len(), 3);

    // Replica a executes and finishes each, each its own way, and lets go.
    for id in ["r1", "r2", "r3"] {
        assert!(lease(store, id, "a", 100, 10).await);
        assert!(
            store
                .set_run_state(id, RunState::Pending, RunState::Running, None, &[])
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .set_run_state(
                "r1",
                RunState::Running,
                RunState::Succeeded,
                None,
                &[event("done-1")]
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_run_state(
                "r2",
                RunState::Running,
                RunState::Failed,
                Some("boom"),
                &[event("done-2")]
            )
            .await
            .unwrap()
    );
    let mut rejected = run("r3", "restart", "inc-3");
    rejected.state = RunState::Rejected;
    assert!(
        store
            .transition(&rejected, RunState::Running, None, &[event("done-3")])
            .await
            .unwrap()
    );
    for id in ["r1", "r2", "r3"] {
        store.release_run(id, "a").await.unwrap();
    }

    // Replica b, with its stale snapshot, is refused the lease, a finish and a transition,
    // even naming the finished state as where it moves from.
    for r in &stale {
        assert!(!lease(store, &r.id, "b", 300, 200).await);
        assert!(!lease(store, &r.id, "a", 300, 200).await);
        assert_eq!(store.begin_attempt(&r.id, "b").await.unwrap(), None);
        for from in [
            RunState::Pending,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Rejected,
        ] {
            assert!(
                !store
                    .set_run_state(&r.id, from, RunState::Succeeded, None, &[event("again")])
                    .await
                    .unwrap()
            );
            let mut again = r.clone();
            again.state = RunState::Running;
            assert!(
                !store
                    .transition(&again, from, None, &[event("again")])
                    .await
                    .unwrap()
            );
        }
    }
    assert!(store.due_runs(micros(1_000)).await.unwrap().is_empty());
    assert_eq!(
        pending_ids(store).await,
        ["c-r1", "c-r2", "c-r3", "done-1", "done-2", "done-3"]
    );
    let states: Vec<_> = store
        .runs(None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.state, r.error))
        .collect();
    assert_eq!(
        states,
        [
            ("r3".into(), RunState::Rejected, "".into()),
            ("r2".into(), RunState::Failed, "boom".into()),
            ("r1".into(), RunState::Succeeded, "".into()),
        ] as [(String, RunState, String); 3]
    );
    // A run waiting for a person is not leased either: a decision moves it on.
    let mut waiting = run("r4", "restart", "inc-4");
    waiting.state = RunState::WaitingApproval;
    store.create_run(&waiting, &event("c-r4")).await.unwrap();
    assert!(!lease(store, "r4", "a", 100, 10).await);
    // A holder renews whatever the state, and nobody else does.
    let mut sleeping = run("r5", "restart", "inc-5");
    sleeping.state = RunState::Sleeping;
    store.create_run(&sleeping, &event("c-r5")).await.unwrap();
    assert!(!store.renew_run("r5", "a", micros(100)).await.unwrap());
    assert!(lease(store, "r5", "a", 100, 10).await);
    assert!(store.renew_run("r5", "a", micros(200)).await.unwrap());
    assert!(!store.renew_run("r5", "b", micros(300)).await.unwrap());
    assert!(!lease(store, "r5", "b", 300, 150).await);
    store.release_run("r5", "a").await.unwrap();
    assert!(!store.renew_run("r5", "a", micros(400)).await.unwrap());
    assert!(lease(store, "r5", "b", 300, 150).await);
}

/// Executions begun and never ended (their process died) add up; one that stops cleanly
/// (waits, sleeps, finishes) starts the count over.
async fn attempts_count_executions_until_the_run_stops_cleanly(
    f: &Fixture<dyn OrchestrationStore>,
) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e0"))
        .await
        .unwrap();
    // Only the lease holder counts.
    assert_eq!(store.begin_attempt("r1", "a").await.unwrap(), None);
    assert!(lease(store, "r1", "a", 100, 10).await);
    assert_eq!(store.begin_attempt("r1", "a").await.unwrap(), Some(1));
    assert!(
        store
            .set_run_state("r1", RunState::Pending, RunState::Running, None, &[])
            .await
            .unwrap()
    );
    // The process dies; its lease runs out; another takes over, and dies too.
    assert!(lease(store, "r1", "b", 300, 200).await);
    assert_eq!(store.begin_attempt("r1", "b").await.unwrap(), Some(2));
    assert_eq!(store.begin_attempt("r1", "a").await.unwrap(), None);
    assert!(lease(store, "r1", "c", 500, 400).await);
    assert_eq!(store.begin_attempt("r1", "c").await.unwrap(), Some(3));
    // A run that sleeps stopped cleanly: its next execution is its first again.
    let mut sleeping = run("r1", "restart", "inc-1");
    sleeping.state = RunState::Sleeping;
    sleeping.wake_at = Some(micros(50));
    assert!(
        store
            .transition(&sleeping, RunState::Running, None, &[])
            .await
            .unwrap()
    );
    assert_eq!(store.begin_attempt("r1", "c").await.unwrap(), Some(1));
    assert!(
        store
            .set_run_state("r1", RunState::Sleeping, RunState::Running, None, &[])
            .await
            .unwrap()
    );
    assert_eq!(store.begin_attempt("r1", "c").await.unwrap(), Some(2));
    assert!(
        store
            .set_run_state(
                "r1",
                RunState::Running,
                RunState::Failed,
                Some("crashed"),
                &[]
            )
            .await
            .unwrap()
    );
    assert_eq!(store.begin_attempt("r1", "c").await.unwrap(), None);
}

async fn due_runs_are_those_with_work_to_do(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    let with = |id: &str, state: RunState, wake_at: Option<i64>| {
        let mut r = run(id, id, "inc-1");
        r.state = state;
        r.wake_at = wake_at.map(micros);
        (r, event(&format!("e-{id}")))
    };
    store
        .create_runs(&[
            with("a-pending", RunState::Pending, None),
            with("b-running", RunState::Running, None),
            with("c-sleeping-due", RunState::Sleeping, Some(100)),
            with("d-sleeping-later", RunState::Sleeping, Some(101)),
            with("e-approval-timed-out", RunState::WaitingApproval, Some(50)),
            with("f-approval-waiting", RunState::WaitingApproval, None),
            with("g-succeeded", RunState::Succeeded, Some(10)),
            with("h-failed", RunState::Failed, None),
        ])
        .await
        .unwrap();
    let due: Vec<_> = store
        .due_runs(micros(100))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        due,
        [
            "a-pending",
            "b-running",
            "c-sleeping-due",
            "e-approval-timed-out"
        ]
    );
}

async fn runs_page_by_id_and_stop_at_a_byte_bound(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    let runs: Vec<_> = (0..7)
        .map(|i| {
            let mut r = run(&format!("r{i}"), &format!("rb{i}"), "inc-1");
            // Every run holds a 100 KB error: a few of them pass the byte bound.
            r.error = "x".repeat(100_000);
            (r, event(&format!("e{i}")))
        })
        .collect();
    store.create_runs(&runs).await.unwrap();
    let ids = |runs: &[firebreak_storage::RunRecord]| {
        runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    };

    // Newest first, page after page, each stopping once it holds 250 KB.
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let query = RunQuery {
            incident_id: Some("inc-1"),
            after: after.as_deref(),
            ..RunQuery::default()
        };
        let page = store.runs_page(&query, 100, 250_000).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(
            page.len() <= 3,
            "a page stops at the bound: {:?}",
            ids(&page)
        );
        after = page.last().map(|r| r.id.clone());
        seen.extend(ids(&page));
    }
    assert_eq!(seen, ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]);

    // A bound smaller than one run still returns that run.
    let one = store.runs_page(&RunQuery::default(), 100, 1).await.unwrap();
    assert_eq!(ids(&one), ["r6"]);

    // Oldest first, of one state, after a cursor, at most `limit`.
    let query = RunQuery {
        state: Some(RunState::Pending),
        after: Some("r1"),
        oldest_first: true,
        ..RunQuery::default()
    };
    let page = store.runs_page(&query, 2, usize::MAX).await.unwrap();
    assert_eq!(ids(&page), ["r2", "r3"]);
    let query = RunQuery {
        state: Some(RunState::Running),
        ..RunQuery::default()
    };
    assert!(
        store
            .runs_page(&query, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn journals_page_by_seq_and_stop_at_a_byte_bound(f: &Fixture<dyn OrchestrationStore>) {
    let store = &*f.store;
    store
        .create_run(&run("r1", "restart", "inc-1"), &event("e1"))
        .await
        .unwrap();
    for seq in 1..=9 {
        let mut j = journal("r1", seq, "done");
        j.result = json!({ "body": "y".repeat(100_000) });
        store.put_journal(&j, &[]).await.unwrap();
    }
    store
        .put_journal(&journal("r1", 10, "waiting"), &[])
        .await
        .unwrap();

    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        let page = store.journal_page("r1", after, 100, 250_000).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3, "a page stops at the bound: {}", page.len());
        after = last.seq;
        seen.extend(page.iter().map(|j| j.seq));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    let page = store.journal_page("r1", 3, 2, usize::MAX).await.unwrap();
    assert_eq!(page.iter().map(|j| j.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(store.journal("r1").await.unwrap().len(), 10);

    let waiting = store.waiting_step("r1").await.unwrap().unwrap();
    assert_eq!((waiting.seq, waiting.status.as_str()), (10, "waiting"));
    assert!(store.waiting_step("r2").await.unwrap().is_none());
}
