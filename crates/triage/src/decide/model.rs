//! Property test: random interleavings of alerts and commands, decided by `decide` and
//! applied to an in-memory model, leave the same incidents, attachments, timelines and
//! processed marks as the same inputs decided and applied through each storage adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use firebreak_domain::{Action, Taxonomy};
use firebreak_proto::v1;
use firebreak_storage::postgres::PgTriageStore;
use firebreak_storage::sqlite::SqliteTriageStore;
use firebreak_storage::{
    AlertLink, ChangeRecord, IncidentRecord, SnapshotRequest, TimelineRecord, TriageChangeset,
    TriageSnapshot, TriageStore,
};
use proptest::prelude::*;

use super::*;

/// The store as a value: what the adapters must agree with.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    incidents: BTreeMap<String, IncidentRecord>,
    links: BTreeMap<String, AlertLink>,
    processed: BTreeSet<String>,
    changes: BTreeMap<String, ChangeRecord>,
    timeline: Vec<TimelineRecord>,
}

impl Model {
    fn snapshot(&self, r: &SnapshotRequest) -> TriageSnapshot {
        let mut s = TriageSnapshot::default();
        for a in &r.alert_ids {
            if let Some(l) = self.links.get(a) {
                s.links.insert(a.clone(), l.clone());
            }
        }
        for k in &r.dedup_keys {
            if let Some(i) = self
                .incidents
                .values()
                .find(|i| &i.dedup_key == k && matches!(i.state.as_str(), "open" | "acknowledged"))
            {
                s.active.insert(k.clone(), i.clone());
            }
        }
        let mut ids: Vec<&String> = r.incident_ids.iter().collect();
        if r.incidents_of_alerts {
            ids.extend(s.links.values().map(|l| &l.incident_id));
        }
        for id in ids {
            if let Some(i) = self.incidents.get(id) {
                s.incidents.insert(id.clone(), i.clone());
                if r.count_unresolved {
                    s.unresolved.insert(id.clone(), self.unresolved(id));
                }
            }
        }
        for e in &r.event_ids {
            if self.processed.contains(e) {
                s.processed.insert(e.clone());
            }
        }
        s
    }

    fn unresolved(&self, id: &str) -> i64 {
        self.links
            .values()
            .filter(|l| l.incident_id == id && !l.resolved)
            .count() as i64
    }

    fn apply(&mut self, ch: TriageChangeset) {
        for e in ch.processed {
            assert!(self.processed.insert(e), "a mark made twice");
        }
        for u in ch.updates {
            self.incidents.insert(u.record.id.clone(), u.record);
        }
        for i in ch.inserts {
            assert!(self.incidents.insert(i.id.clone(), i).is_none());
        }
        for l in ch.links {
            assert!(self.links.insert(l.alert_id.clone(), l).is_none());
        }
        for a in ch.resolved_alerts {
            let l = self.links.get_mut(&a).expect("cleared an unattached alert");
            assert!(!l.resolved, "cleared twice");
            l.resolved = true;
        }
        for c in ch.changes {
            self.changes.insert(c.id.clone(), c);
        }
        for e in ch.entries {
            self.timeline.push(TimelineRecord {
                seq: self.timeline.len() as i64 + 1,
                incident_id: e.incident_id,
                kind: e.kind,
                at: e.at,
                actor: e.actor,
                data: e.data,
            });
        }
    }

    fn timeline_of(&self, id: &str) -> Vec<TimelineRecord> {
        self.timeline
            .iter()
            .filter(|t| t.incident_id == id)
            .cloned()
            .collect()
    }
}

/// One step of a scenario. Numbers pick from small pools, so alerts share keys, commands
/// hit the same incidents and events are redelivered.
#[derive(Debug, Clone)]
enum Op {
    Alerts(Vec<(u8, u8, u8)>),
    Transition(u8, u8, bool),
    Note(u8),
    /// A person gives (true) or takes a role (from a pool) to or from a person (ditto).
    Role(u8, u8, u8, bool),
    Command(u8, u8, u8),
    Cleared(u8, u8, bool),
    Change(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..14u8, 0..3u8, 0..6u8), 1..5).prop_map(Op::Alerts),
        2 => (any::<u8>(), 0..3u8, any::<bool>()).prop_map(|(i, a, t)| Op::Transition(i, a, t)),
        1 => any::<u8>().prop_map(Op::Note),
        2 => (any::<u8>(), 0..3u8, 0..3u8, any::<bool>())
            .prop_map(|(i, r, p, a)| Op::Role(i, r, p, a)),
        2 => (0..8u8, any::<u8>(), 0..6u8).prop_map(|(e, i, k)| Op::Command(e, i, k)),
        2 => (0..8u8, 0..14u8, any::<bool>()).prop_map(|(e, a, t)| Op::Cleared(e, a, t)),
        1 => (0..3u8).prop_map(Op::Change),
    ]
}

/// The inputs of `op` against the incidents there are now (`ids`, in order); `timeline`
/// gives an incident's timeline as the side deciding sees it.
fn inputs(op: &Op, ids: &[String], timeline: Vec<TimelineRecord>) -> Vec<Input> {
    let pick = |n: u8| (!ids.is_empty()).then(|| ids[n as usize % ids.len()].clone());
    match op {
        Op::Alerts(alerts) => alerts
            .iter()
            .map(|(a, k, sev)| {
                Input::alert(
                    v1::AlertReceived {
                        alert_id: format!("alert-{a}"),
                        title: format!("key {k} failing"),
                        source: "prop".into(),
                        dedup_key: format!("key-{k}"),
                        severity: i32::from(*sev),
                        ..Default::default()
                    },
                    None,
                )
                .expect("the model's alerts parse")
            })
            .collect(),
        Op::Transition(n, a, with_text) => pick(*n)
            .map(|incident_id| Input::Transition {
                incident_id,
                action: [Action::Acknowledge, Action::Resolve, Action::Close][*a as usize],
                actor: "user:prop".into(),
                text: if *with_text {
                    "because".into()
                } else {
                    String::new()
                },
                timeline,
            })
            .into_iter()
            .collect(),
        Op::Note(n) => pick(*n)
            .map(|incident_id| Input::Note {
                incident_id,
                actor: "user:prop".into(),
                text: "looked".into(),
            })
            .into_iter()
            .collect(),
        Op::Role(n, r, p, give) => pick(*n)
            .map(|incident_id| Input::Role {
                incident_id,
                actor: "user:prop".into(),
                change: if *give {
                    RoleChange::Assign
                } else {
                    RoleChange::Unassign
                },
                role: ["commander", "responder", "incident-commander"][*r as usize].into(),
                person: ["alice", "bob", "carol"][*p as usize].into(),
            })
            .into_iter()
            .collect(),
        Op::Command(e, n, k) => pick(*n)
            .map(|incident_id| Input::Command {
                event_id: format!("cmd-{e}"),
                incident_id,
                actor: "runbook:prop".into(),
                command: match k {
                    0 => RunbookCommand::Note("from a runbook".into()),
                    1 => RunbookCommand::SetSeverity(1 + u32::from(*e % 5)),
                    2 => RunbookCommand::Escalate("worse".into()),
                    3 => RunbookCommand::SetCategory("malware".into()),
                    4 => RunbookCommand::SetCategory("no-such-category".into()),
                    _ => RunbookCommand::Assign {
                        role: "commander".into(),
                        person: "alice".into(),
                        if_vacant: *e % 2 == 0,
                    },
                },
            })
            .into_iter()
            .collect(),
        Op::Cleared(e, a, auto) => vec![Input::AlertResolved {
            event_id: format!("clear-{e}"),
            alert_id: format!("alert-{a}"),
            integration: "prop".into(),
            auto_resolve: *auto,
        }],
        Op::Change(c) => vec![Input::Change {
            change: ChangeRecord {
                id: format!("change-{c}"),
                integration: "prop".into(),
                summary: "deployed".into(),
                source: "ci".into(),
                at: Micros::from_unix_micros(1),
                details: "{}".into(),
            },
            concerned: ids.to_vec(),
        }],
    }
}

/// Decides with a clock and ids fixed by the step, so every side decides alike.
fn decided(snap: &TriageSnapshot, inputs: &[Input], step: usize) -> Result<Decision> {
    let taxonomy = Taxonomy::default();
    let mut n = 0;
    let mut new_id = || {
        n += 1;
        format!("01900000-0000-7000-8000-{:06}{n:06}", step)
    };
    decide(
        snap,
        inputs,
        &mut Context {
            taxonomy: &taxonomy,
            lifecycle: &Lifecycle::default(),
            grouping: &firebreak_domain::grouping::Grouping::default(),
            now: Micros::from_unix_micros(1_800_000_000_000_000 + step as i64 * 1_000),
            new_id: &mut new_id,
        },
    )
}

/// What a store holds, as the model holds it (timeline numbers aside).
async fn read_back(store: &dyn TriageStore, alerts: &[String], events: &[String]) -> Model {
    let mut m = Model::default();
    for i in store.incidents(None, 10_000).await.unwrap() {
        m.incidents.insert(i.id.clone(), i);
    }
    let mut tx = store.begin().await.unwrap();
    let snap = tx
        .snapshot(&SnapshotRequest {
            alert_ids: alerts.to_vec(),
            event_ids: events.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(tx);
    m.links = snap.links.into_iter().collect();
    m.processed = snap.processed.into_iter().collect();
    for id in m.incidents.keys().cloned().collect::<Vec<_>>() {
        m.timeline.extend(store.timeline(&id).await.unwrap());
    }
    for c in 0..3 {
        if let Some(c) = store.change(&format!("change-{c}")).await.unwrap() {
            m.changes.insert(c.id.clone(), c);
        }
    }
    m
}

/// Runs `ops` through the model and through `store` in lockstep.
async fn scenario(store: Arc<dyn TriageStore>, ops: &[Op]) {
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let ids: Vec<String> = model.incidents.keys().cloned().collect();
        let target = match op {
            Op::Transition(n, ..) if !ids.is_empty() => Some(ids[*n as usize % ids.len()].clone()),
            _ => None,
        };
        let model_inputs = inputs(
            op,
            &ids,
            target
                .as_deref()
                .map(|t| model.timeline_of(t))
                .unwrap_or_default(),
        );
        let store_timeline = match &target {
            Some(t) => store.timeline(t).await.unwrap(),
            None => Vec::new(),
        };
        let store_inputs = inputs(op, &ids, store_timeline);
        let request = request_for(&model_inputs);

        let on_model = decided(&model.snapshot(&request), &model_inputs, step);
        let mut tx = store.begin().await.unwrap();
        let snap = tx.snapshot(&request_for(&store_inputs)).await.unwrap();
        let on_store = decided(&snap, &store_inputs, step);
        let (on_model, on_store) = match (on_model, on_store) {
            (Ok(m), Ok(s)) => (m, s),
            (Err(m), Err(s)) => {
                assert_eq!(m.to_string(), s.to_string(), "step {step}: {op:?}");
                continue;
            }
            (m, s) => panic!("step {step} {op:?}: the model decided {m:?}, the store {s:?}"),
        };
        assert_eq!(
            on_model.changeset, on_store.changeset,
            "step {step}: {op:?}"
        );
        let follow_ups = on_model.auto_resolve.clone();
        model.apply(on_model.changeset);
        tx.apply(on_store.changeset).await.unwrap();
        // An auto-resolve is the shell's next transaction.
        for (incident_id, actor) in follow_ups {
            let input = |timeline| Input::Transition {
                incident_id: incident_id.clone(),
                action: Action::Resolve,
                actor: actor.clone(),
                text: "all its alerts resolved".into(),
                timeline,
            };
            let m_in = [input(model.timeline_of(&incident_id))];
            let s_in = [input(store.timeline(&incident_id).await.unwrap())];
            let m = decided(&model.snapshot(&request_for(&m_in)), &m_in, step + 10_000);
            let mut tx = store.begin().await.unwrap();
            let snap = tx.snapshot(&request_for(&s_in)).await.unwrap();
            let s = decided(&snap, &s_in, step + 10_000);
            if let (Ok(m), Ok(s)) = (m, s) {
                assert_eq!(m.changeset, s.changeset, "auto-resolve after step {step}");
                model.apply(m.changeset);
                tx.apply(s.changeset).await.unwrap();
            }
        }
    }
    let alerts: Vec<String> = (0..14).map(|a| format!("alert-{a}")).collect();
    let events: Vec<String> = (0..8)
        .flat_map(|e| [format!("cmd-{e}"), format!("clear-{e}")])
        .chain((0..3).map(|c| format!("change-{c}")))
        .collect();
    let stored = read_back(&*store, &alerts, &events).await;
    assert_eq!(stored.incidents, model.incidents);
    assert_eq!(stored.links, model.links);
    assert_eq!(stored.processed, model.processed);
    assert_eq!(stored.changes, model.changes);
    // Timelines per incident, in order (numbers differ between stores; order does not).
    let strip = |t: &[TimelineRecord]| -> BTreeMap<String, Vec<(String, String, firebreak_domain::Micros, String)>> {
        let mut by: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for e in t {
            by.entry(e.incident_id.clone()).or_default().push((
                e.kind.clone(),
                e.actor.clone(),
                e.at,
                e.data.to_string(),
            ));
        }
        by
    };
    assert_eq!(strip(&stored.timeline), strip(&model.timeline));
    for id in model.incidents.keys() {
        let got = snapshot_of(&*store, id).await;
        assert_eq!(got, model.unresolved(id), "unresolved alerts of {id}");
    }
}

async fn snapshot_of(store: &dyn TriageStore, id: &str) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let snap = tx
        .snapshot(&SnapshotRequest {
            incident_ids: vec![id.to_owned()],
            count_unresolved: true,
            ..Default::default()
        })
        .await
        .unwrap();
    snap.unresolved.get(id).copied().unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sqlite_applies_what_the_model_does(ops in prop::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteTriageStore::open(&dir.path().join("triage.db"), false)
                .await
                .unwrap();
            scenario(Arc::new(store), &ops).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 50,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn postgres_applies_what_the_model_does(ops in prop::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            let db = firebreak_testkit::postgres::TestDatabase::create().await;
            let store = PgTriageStore::connect_with(&db.url, 2).await.unwrap();
            scenario(Arc::new(store), &ops).await;
        });
    }
}
