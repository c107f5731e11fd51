//! Runs end once: a replica acting on a stale list of due runs does not execute or finish a
//! run again, and a run whose executions keep dying with their process is given up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_orchestration::{MAX_EXECUTION_ATTEMPTS, Options};
use firebreak_storage::OrchestrationStore;
use firebreak_storage::postgres::PgOrchestrationStore;
use firebreak_storage::sqlite::SqliteOrchestrationStore;
use firebreak_testkit::postgres::TestDatabase;
use tokio::sync::Notify;

use crate::harness::{
    Hooked, RecordingBus, Running, catalog, pending_run, runbook, started, wait_for_run,
};

const NOTER: &str = "match: {}\ncapabilities: [incident]\n";
const NOTE: &str = "fn run(incident, params) { incident::note(\"contained\"); }\n";

/// Two orchestrators on one Postgres database. Replica b lists the due runs (runs left
/// running by a process that died, and a pending one), then stalls; replica a executes and
/// finishes them all and lets their leases go; then b acts on its stale list. Each run
/// finishes once, with one finish event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_list_of_due_runs_finishes_no_run_twice() {
    let db = TestDatabase::create().await;
    let a_store: Arc<dyn OrchestrationStore> =
        Arc::new(PgOrchestrationStore::connect(&db.url).await.unwrap());
    let b_store: Arc<dyn OrchestrationStore> =
        Arc::new(PgOrchestrationStore::connect(&db.url).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    runbook(dir.path(), "noter", NOTER, NOTE);
    let ids: Vec<String> = (0..5).map(|n| format!("r{n}")).collect();
    let runs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let mut run = pending_run(id, "noter", false);
            if n > 0 {
                run.state = firebreak_domain::RunState::Running;
            }
            (run, started(id))
        })
        .collect();
    assert_eq!(a_store.create_runs(&runs).await.unwrap(), 5);

    let (taken, gate, listed) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    );
    let lists = Arc::new(Mutex::new(0));
    let stale = Hooked {
        stale: Some((taken.clone(), gate.clone())),
        lists: lists.clone(),
        listed: listed.clone(),
        ..Hooked::new(b_store)
    };
    let bus = Arc::new(RecordingBus::default());
    let b = Running::start(
        Arc::new(stale),
        bus.clone(),
        catalog(dir.path()),
        Options::default(),
    );
    taken.notified().await;
    let a = Running::start(
        a_store.clone(),
        bus.clone(),
        catalog(dir.path()),
        Options::default(),
    );
    for id in &ids {
        wait_for_run(&*a_store, id, "a to finish the run", |r| {
            r.state.as_str() == "succeeded"
        })
        .await;
    }
    gate.notify_one();
    // b works through its stale list, then lists again.
    while *lists.lock().unwrap() < 2 {
        listed.notified().await;
    }
    b.stop().await;
    a.stop().await;

    for id in &ids {
        assert_eq!(
            bus.finishes(id),
            1,
            "finish events of {id}: {:?}",
            bus.run_changes()
        );
        let run = a_store.run(id).await.unwrap().unwrap();
        assert_eq!(run.state.as_str(), "succeeded");
        assert_eq!(a_store.journal(id).await.unwrap().len(), 1);
    }
}

/// Executions of a run that began and never ended (the process died under them) are
/// counted; past the bound the run fails, once, without executing, instead of taking every
/// restart down again. A run under the bound is executed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_keeps_crashing_the_process_fails_at_the_bound() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn OrchestrationStore> = Arc::new(
        SqliteOrchestrationStore::open(&data.path().join("orchestration.db"), false)
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    runbook(dir.path(), "noter", NOTER, NOTE);
    let mut crashing = pending_run("crashing", "noter", false);
    crashing.state = firebreak_domain::RunState::Running;
    let mut unlucky = pending_run("unlucky", "noter", false);
    unlucky.state = firebreak_domain::RunState::Running;
    store
        .create_runs(&[
            (crashing, started("crashing")),
            (unlucky, started("unlucky")),
        ])
        .await
        .unwrap();
    // Earlier processes each began an execution and died in it (their leases ran out).
    let crash = |id: &'static str, times: u32| {
        let store = store.clone();
        async move {
            for k in 1..=times {
                let owner = format!("dead-{k}");
                let now = Micros::from_unix_micros(i64::from(k) * 10);
                let until = now + Duration::from_micros(1);
                assert!(store.lease_run(id, &owner, until, now).await.unwrap());
                assert_eq!(store.begin_attempt(id, &owner).await.unwrap(), Some(k));
            }
        }
    };
    crash("crashing", MAX_EXECUTION_ATTEMPTS).await;
    crash("unlucky", MAX_EXECUTION_ATTEMPTS - 1).await;

    let bus = Arc::new(RecordingBus::default());
    let orch = Running::start(
        store.clone(),
        bus.clone(),
        catalog(dir.path()),
        Options::default(),
    );
    let failed = wait_for_run(&*store, "crashing", "the run to fail", |r| r.is_finished()).await;
    let done = wait_for_run(&*store, "unlucky", "the run to succeed", |r| {
        r.is_finished()
    })
    .await;
    orch.stop().await;

    assert_eq!(failed.state.as_str(), "failed");
    assert!(
        failed.error.contains(&format!(
            "the run crashed the process {MAX_EXECUTION_ATTEMPTS} times"
        )),
        "{}",
        failed.error
    );
    // Given up without executing the script again.
    assert!(store.journal("crashing").await.unwrap().is_empty());
    assert_eq!(bus.finishes("crashing"), 1);
    assert_eq!(done.state.as_str(), "succeeded", "{}", done.error);
    assert_eq!(bus.finishes("unlucky"), 1);
}

/// A process renews only the leases it holds: while it is still asking for a run's lease
/// (held by another replica), its renewals leave that run alone, so they neither take the
/// lease nor report it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_held_leases_are_renewed() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn OrchestrationStore> = Arc::new(
        SqliteOrchestrationStore::open(&data.path().join("orchestration.db"), false)
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    runbook(dir.path(), "noter", NOTER, NOTE);
    store
        .create_run(&pending_run("r1", "noter", false), &started("r1"))
        .await
        .unwrap();
    // Another replica holds it for an hour.
    let now = firebreak_domain::Clock::now(&firebreak_domain::SystemClock);
    assert!(
        store
            .lease_run("r1", "other", now + Duration::from_secs(3600), now)
            .await
            .unwrap()
    );
    let hooked = Hooked {
        // Renewals run every 10 ms; the first lease is held up for twenty of them.
        lease_stall: Some(Duration::from_millis(200)),
        ..Hooked::new(store.clone())
    };
    let (leases, lists, listed) = (
        hooked.leases.clone(),
        hooked.lists.clone(),
        hooked.listed.clone(),
    );
    let orch = Running::start(
        Arc::new(hooked),
        Arc::new(RecordingBus::default()),
        catalog(dir.path()),
        Options {
            lease: Duration::from_millis(30),
            ..Options::default()
        },
    );
    // The executor listed the run, asked for its lease (refused), and listed again.
    while *lists.lock().unwrap() < 2 {
        listed.notified().await;
    }
    orch.stop().await;
    let (calls, during_stall) = {
        let l = leases.lock().unwrap();
        (l.calls, l.during_stall)
    };
    assert!(calls >= 1, "lease calls: {calls}");
    assert_eq!(during_stall, 0, "lease calls while the first was held up");
    let run = store.run("r1").await.unwrap().unwrap();
    assert_eq!(run.state.as_str(), "pending");
}

/// A script's error is as long as the script makes it: the run stores it clipped (16 KiB,
/// marked), so the run and its finish event stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stores_its_error_clipped() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn OrchestrationStore> = Arc::new(
        SqliteOrchestrationStore::open(&data.path().join("orchestration.db"), false)
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "loud",
        NOTER,
        "fn run(incident, params) {\n    let t = \"\";\n    for i in 0..60000 { t += \"e\"; }\n    throw t;\n}\n",
    );
    store
        .create_run(&pending_run("loud", "loud", false), &started("loud"))
        .await
        .unwrap();
    let orch = Running::start(
        store.clone(),
        Arc::new(RecordingBus::default()),
        catalog(dir.path()),
        Options::default(),
    );
    let failed = wait_for_run(&*store, "loud", "the run to fail", |r| r.is_finished()).await;
    orch.stop().await;
    assert_eq!(failed.state.as_str(), "failed");
    assert!(failed.error.contains("eeee"), "{}", failed.error);
    assert!(
        failed.error.len() <= 16 * 1024 && failed.error.ends_with('…'),
        "{} bytes",
        failed.error.len()
    );
}
