//! The counts `/metrics` reads, on both adapters: active incidents per severity and state
//! (never the resolved or closed), runs per state. (On SQLite the statements name their
//! index with `INDEXED BY`, so SQLite fails them rather than scan the table; so these
//! checks also prove the index serves them.)

mod active_incidents {
    use firebreak_domain::IncidentState;
    use firebreak_storage::{TriageChangeset, TriageStore};

    use crate::fixtures::{Fixture, apply, incident};

    crate::contract!(triage: active_incidents_are_counted_by_severity_and_state);

    async fn active_incidents_are_counted_by_severity_and_state(f: &Fixture<dyn TriageStore>) {
        let store = &*f.store;
        assert!(store.count_active().await.unwrap().is_empty());
        let critical = |mut i: firebreak_storage::IncidentRecord| {
            i.severity = 1;
            i
        };
        apply(
            store,
            TriageChangeset {
                inserts: vec![
                    incident("o1", "k1", "open"),
                    incident("o2", "k2", "open"),
                    incident("a1", "k3", "acknowledged"),
                    critical(incident("m1", "k4", "mitigated")),
                    incident("r1", "k5", "resolved"),
                    critical(incident("c1", "k6", "closed")),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut counts = store.count_active().await.unwrap();
        counts.sort_by_key(|(severity, state, _)| (*severity, state.as_str()));
        assert_eq!(
            counts,
            [
                (1, IncidentState::Mitigated, 1),
                (3, IncidentState::Acknowledged, 1),
                (3, IncidentState::Open, 2),
            ]
        );
    }
}

mod runs_by_state {
    use firebreak_domain::RunState;
    use firebreak_storage::OrchestrationStore;

    use crate::fixtures::{Fixture, event, run};

    crate::contract!(orchestration: runs_are_counted_by_state);

    async fn runs_are_counted_by_state(f: &Fixture<dyn OrchestrationStore>) {
        let store = &*f.store;
        assert_eq!(store.count_runs(RunState::Sleeping).await.unwrap(), 0);
        for (id, to) in [
            ("r1", RunState::WaitingApproval),
            ("r2", RunState::WaitingApproval),
            ("r3", RunState::Sleeping),
            ("r4", RunState::Pending),
        ] {
            store
                .create_run(&run(id, id, "inc-1"), &event(&format!("e-{id}")))
                .await
                .unwrap();
            if to != RunState::Pending {
                assert!(
                    store
                        .set_run_state(id, RunState::Pending, to, None, &[])
                        .await
                        .unwrap()
                );
            }
        }
        assert_eq!(
            store.count_runs(RunState::WaitingApproval).await.unwrap(),
            2
        );
        assert_eq!(store.count_runs(RunState::Sleeping).await.unwrap(), 1);
        assert_eq!(store.count_runs(RunState::Pending).await.unwrap(), 1);
        assert_eq!(store.count_runs(RunState::Failed).await.unwrap(), 0);
    }
}
