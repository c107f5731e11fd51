//! Table-driven tests of `decide`: snapshots in, changesets out, no database.

use std::collections::BTreeMap;
use std::time::Duration;

use firebreak_domain::{Action, Taxonomy};
use firebreak_proto::v1;
use firebreak_storage::{AlertLink, ChangeRecord, IncidentRecord, NewIncident, TriageSnapshot};

use firebreak_proto::{ErrorCode, ServiceError};

use super::*;

const NOW: Micros = Micros::from_unix_micros(1_800_000_000_000_000);

fn id(n: u32) -> String {
    format!("01900000-0000-7000-8000-{n:012}")
}

fn alert(alert_id: &str, key: &str, severity: u32) -> Input {
    Input::alert(
        v1::AlertReceived {
            alert_id: alert_id.into(),
            title: format!("{key} is down"),
            source: "test".into(),
            dedup_key: key.into(),
            severity: firebreak_proto::wire_level(severity),
            integration: "am-payments".into(),
            ..Default::default()
        },
        Some(format!("00-{:032x}-{:016x}-01", 7, alert_id.len())),
    )
    .unwrap()
}

fn incident(n: u32, key: &str, state: &str, severity: u32) -> IncidentRecord {
    IncidentRecord {
        state: state.parse().unwrap(),
        ..IncidentRecord::from(NewIncident {
            id: id(n),
            title: format!("{key} is down"),
            description: String::new(),
            category: "service-outage".into(),
            severity,
            priority: 3,
            urgency: firebreak_domain::Urgency::Medium,
            dedup_key: key.into(),
            labels: BTreeMap::new(),
            source: "test".into(),
            integration: String::new(),
            opened_at: NOW - Duration::from_millis(1),
        })
    }
}

/// A snapshot holding `incidents`, the active ones also by key, each with one unresolved
/// alert `al-<n>`.
fn holding(incidents: &[IncidentRecord]) -> TriageSnapshot {
    let mut s = TriageSnapshot::default();
    for (n, i) in incidents.iter().enumerate() {
        if i.state.is_active() {
            s.active.insert(i.dedup_key.clone(), i.clone());
        }
        s.incidents.insert(i.id.clone(), i.clone());
        s.unresolved.insert(i.id.clone(), 1);
        let alert_id = format!("al-{n}");
        s.links.insert(
            alert_id.clone(),
            AlertLink {
                alert_id,
                incident_id: i.id.clone(),
                opened: true,
                resolved: false,
                grouped_by: String::new(),
            },
        );
    }
    s
}

fn run(snapshot: &TriageSnapshot, inputs: &[Input]) -> Result<Decision> {
    run_with(&Lifecycle::default(), snapshot, inputs)
}

fn run_with(
    lifecycle: &Lifecycle,
    snapshot: &TriageSnapshot,
    inputs: &[Input],
) -> Result<Decision> {
    run_grouped(lifecycle, &Default::default(), NOW, snapshot, inputs)
}

fn run_grouped(
    lifecycle: &Lifecycle,
    grouping: &firebreak_domain::grouping::Grouping,
    now: Micros,
    snapshot: &TriageSnapshot,
    inputs: &[Input],
) -> Result<Decision> {
    let taxonomy = Taxonomy::default();
    let mut next = 100;
    let mut new_id = || {
        next += 1;
        id(next)
    };
    decide(
        snapshot,
        inputs,
        &mut Context {
            taxonomy: &taxonomy,
            lifecycle,
            grouping,
            now,
            new_id: &mut new_id,
        },
    )
}

fn kinds(d: &Decision) -> Vec<&str> {
    d.changeset
        .entries
        .iter()
        .map(|e| e.kind.as_str())
        .collect()
}

fn changes(d: &Decision) -> Vec<Change> {
    d.announcements.iter().map(|a| a.change).collect()
}

#[test]
fn a_new_key_opens_an_incident_categorized_and_prioritized() {
    let d = run(&TriageSnapshot::default(), &[alert("a1", "db", 2)]).unwrap();
    let cs = &d.changeset;
    assert_eq!(cs.inserts.len(), 1);
    let inc = &cs.inserts[0];
    assert_eq!(
        (inc.id.as_str(), inc.state.as_str()),
        (id(101).as_str(), "open")
    );
    assert_eq!((inc.severity, inc.alert_count, inc.opened_at), (2, 1, NOW));
    // Routes may choose a policy by the integration it came through.
    assert_eq!(inc.integration, "am-payments");
    assert!(cs.updates.is_empty());
    assert_eq!(
        cs.links,
        vec![AlertLink {
            alert_id: "a1".into(),
            incident_id: id(101),
            opened: true,
            resolved: false,
            grouped_by: String::new(),
        }]
    );
    assert_eq!(kinds(&d), ["opened", "categorized", "prioritized"]);
    assert_eq!(changes(&d), [Change::Opened]);
    assert_eq!(
        d.ingested,
        [Ingested {
            incident_id: id(101),
            deduplicated: false,
            before: false,
            grouped_by: None
        }]
    );
    assert!(cs.processed.is_empty() && cs.events.is_empty());
}

#[test]
fn an_alert_joins_the_active_incident_of_its_key() {
    // Table: the incident's severity, the alert's, and what the attach must do.
    let cases = [
        (3, 3, 3, vec!["alert_attached"], vec![Change::AlertAttached]),
        (3, 4, 3, vec!["alert_attached"], vec![Change::AlertAttached]),
        (
            3,
            1,
            1,
            vec!["alert_attached", "severity_changed"],
            vec![Change::SeverityChanged],
        ),
    ];
    for (stored, sent, after, entries, announced) in cases {
        let snap = holding(&[incident(1, "db", "acknowledged", stored)]);
        let d = run(&snap, &[alert("a9", "db", sent)]).unwrap();
        let cs = &d.changeset;
        assert!(cs.inserts.is_empty(), "{stored}/{sent}");
        assert_eq!(cs.updates.len(), 1);
        let u = &cs.updates[0];
        assert_eq!((u.record.alert_count, u.record.severity), (2, after));
        assert_eq!(u.record.state.as_str(), "acknowledged");
        assert!(!u.state_changed, "an attach keeps the state");
        assert_eq!(kinds(&d), entries, "{stored}/{sent}");
        assert_eq!(changes(&d), announced, "{stored}/{sent}");
        assert_eq!(cs.links[0].incident_id, id(1));
        assert!(!cs.links[0].opened);
        assert!(d.ingested[0].deduplicated);
    }
}

#[test]
fn a_batch_on_one_new_key_opens_once_and_announces_the_attach_once() {
    let inputs = [
        alert("a1", "db", 3),
        alert("a2", "db", 3),
        alert("a3", "db", 3),
    ];
    let d = run(&TriageSnapshot::default(), &inputs).unwrap();
    let cs = &d.changeset;
    assert_eq!(cs.inserts.len(), 1, "one incident for the key");
    assert!(
        cs.updates.is_empty(),
        "the new incident is inserted as it ends up"
    );
    assert_eq!(cs.inserts[0].alert_count, 3);
    assert_eq!(cs.links.len(), 3);
    // The attachments after the opening share one entry listing them.
    assert_eq!(
        kinds(&d),
        ["opened", "categorized", "prioritized", "alert_attached"]
    );
    let shared = &cs.entries[3].data;
    assert_eq!(shared["alert_ids"], serde_json::json!(["a2", "a3"]));
    assert_eq!(shared["alert_count"], 3);
    assert_eq!(changes(&d), [Change::Opened, Change::AlertAttached]);
    // The attach is announced with the incident's latest state, in the last alert's trace.
    let attach = &d.announcements[1];
    assert_eq!(attach.incident.alert_count, 3);
    let Input::Alert { traceparent, .. } = &inputs[2] else {
        unreachable!()
    };
    assert_eq!(&attach.traceparent, traceparent);
}

#[test]
fn one_alert_keeps_its_origin_and_a_batch_on_a_stored_incident_shares_one_entry() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let mut one = alert("a1", "db", 3);
    if let Input::Alert { alert, .. } = &mut one {
        alert.integration = "am".into();
        alert.alert_key = "fp-1".into();
    }
    let d = run(&snap, &[one]).unwrap();
    let data = &d.changeset.entries[0].data;
    assert_eq!(data["alert_id"], "a1");
    assert_eq!(data["integration"], "am");
    assert_eq!(data["alert_key"], "fp-1");

    let batch: Vec<Input> = (0..50).map(|n| alert(&format!("b{n}"), "db", 3)).collect();
    let d = run(&snap, &batch).unwrap();
    assert_eq!(kinds(&d), ["alert_attached"], "one entry for the batch");
    let data = &d.changeset.entries[0].data;
    assert_eq!(data["alert_ids"].as_array().unwrap().len(), 50);
    assert_eq!(data["alert_count"], 51);
    assert_eq!(d.changeset.links.len(), 50, "each alert still attached");
    assert_eq!(d.changeset.updates[0].record.alert_count, 51);
}

#[test]
fn an_alert_ingested_before_changes_nothing() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    // `al-0` is attached in the snapshot; the second `x` repeats one earlier in the batch.
    let d = run(&snap, &[alert("al-0", "db", 3)]).unwrap();
    assert!(d.changeset.is_empty());
    assert_eq!(
        d.ingested,
        [Ingested {
            incident_id: id(1),
            deduplicated: false,
            before: true,
            grouped_by: None
        }]
    );
    let d = run(&snap, &[alert("x", "db", 3), alert("x", "db", 3)]).unwrap();
    assert_eq!(d.changeset.links.len(), 1);
    assert_eq!(d.changeset.updates[0].record.alert_count, 2);
    assert!(d.ingested[1].before);
}

#[test]
fn a_racing_open_decided_again_attaches_to_the_winner() {
    // The first decision saw no active incident; another replica's insert won, the apply
    // conflicted, and the fresh snapshot holds the winner.
    let first = run(&TriageSnapshot::default(), &[alert("a1", "db", 3)]).unwrap();
    assert_eq!(first.changeset.inserts.len(), 1);
    let winner = incident(7, "db", "open", 3);
    let again = run(&holding(&[winner]), &[alert("a1", "db", 3)]).unwrap();
    assert!(again.changeset.inserts.is_empty());
    assert_eq!(again.changeset.updates[0].record.id, id(7));
    assert_eq!(again.changeset.links[0].incident_id, id(7));
}

#[test]
fn an_alert_that_does_not_parse_is_refused_naming_the_field() {
    let bad = v1::AlertReceived {
        alert_id: "bad".into(),
        title: "  ".into(),
        dedup_key: "k".into(),
        ..Default::default()
    };
    let err = Input::alert(bad, None).unwrap_err();
    assert!(err.to_string().contains("title"), "{err}");
}

#[test]
fn transitions_follow_the_life_cycle() {
    // Table: stored state, action, text, the state after or the error it must name.
    let cases: [(&str, Action, &str, Result<&str, &str>); 16] = [
        ("open", Action::Acknowledge, "", Ok("acknowledged")),
        ("open", Action::Mitigate, "", Ok("mitigated")),
        (
            "acknowledged",
            Action::Mitigate,
            "rolled back",
            Ok("mitigated"),
        ),
        ("mitigated", Action::Resolve, "fixed", Ok("resolved")),
        ("mitigated", Action::Acknowledge, "", Err("acknowledge")),
        ("resolved", Action::Reopen, "it is back", Ok("open")),
        ("resolved", Action::Reopen, " ", Err("reason")),
        ("closed", Action::Reopen, "why", Err("reopen")),
        (
            "acknowledged",
            Action::Merge,
            "x",
            Err("merge names the incident"),
        ),
        ("open", Action::Resolve, "fixed", Ok("resolved")),
        ("acknowledged", Action::Resolve, "fixed", Ok("resolved")),
        ("resolved", Action::Close, "a bad deploy", Ok("closed")),
        ("acknowledged", Action::Acknowledge, "", Err("acknowledge")),
        ("resolved", Action::Close, "  ", Err("root cause")),
        ("closed", Action::Resolve, "x", Err("resolve")),
        ("open", Action::Close, "why", Err("close")),
    ];
    for (state, action, text, want) in cases {
        let snap = holding(&[incident(1, "db", state, 3)]);
        let input = Input::Transition {
            incident_id: id(1),
            action,
            actor: "user:alice".into(),
            text: text.into(),
            timeline: Vec::new(),
        };
        match (run(&snap, &[input]), want) {
            (Ok(d), Ok(to)) => {
                let u = &d.changeset.updates[0];
                assert_eq!(u.record.state.as_str(), to, "{state} {action:?}");
                assert!(u.state_changed);
                assert_eq!(d.transitioned[0].state.as_str(), to);
                assert_eq!(d.announcements[0].actor, "user:alice");
                if matches!(action, Action::Resolve | Action::Close) {
                    assert!(
                        u.record.review.contains("user:alice"),
                        "{}",
                        u.record.review
                    );
                }
            }
            (Err(e), Err(names)) => assert!(e.to_string().contains(names), "{e}"),
            (got, want) => panic!("{state} {action:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_resolve_drafts_the_review_and_frees_the_key_for_the_next_alert() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let resolve = Input::Transition {
        incident_id: id(1),
        action: Action::Resolve,
        actor: "user:alice".into(),
        text: "rolled back".into(),
        timeline: Vec::new(),
    };
    let d = run(&snap, &[resolve, alert("a2", "db", 3)]).unwrap();
    assert_eq!(
        kinds(&d),
        [
            "resolved",
            "review_drafted",
            "opened",
            "categorized",
            "prioritized"
        ]
    );
    assert_eq!(
        d.changeset.updates[0].record.resolution_summary,
        "rolled back"
    );
    assert_eq!(
        d.changeset.inserts.len(),
        1,
        "a new incident for the freed key"
    );
    assert_eq!(changes(&d), [Change::Resolved, Change::Opened]);
}

#[test]
fn closing_an_old_incident_leaves_the_active_one_of_its_key_alone() {
    let snap = holding(&[
        incident(1, "db", "resolved", 3),
        incident(2, "db", "open", 3),
    ]);
    let close = Input::Transition {
        incident_id: id(1),
        action: Action::Close,
        actor: "user:alice".into(),
        text: "disk".into(),
        timeline: Vec::new(),
    };
    let d = run(&snap, &[close, alert("a2", "db", 3)]).unwrap();
    assert!(d.changeset.inserts.is_empty());
    assert_eq!(d.ingested[0].incident_id, id(2));
}

#[test]
fn notes_are_checked_and_need_the_incident() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let note = |incident_id: String, text: &str| Input::Note {
        incident_id,
        actor: "user:alice".into(),
        text: text.into(),
    };
    let d = run(&snap, &[note(id(1), "  looking  ")]).unwrap();
    assert_eq!(d.changeset.entries[0].data["text"], "looking");
    assert!(d.changeset.updates.is_empty() && d.announcements.is_empty());
    for (input, names) in [
        (note(id(1), " "), "text"),
        (note(id(1), &"n".repeat(MAX_NOTE + 1)), "text"),
        (note(id(9), "hi"), "not found"),
        (note("INC-1".into(), "hi"), "incident_id"),
    ] {
        let err = run(&snap, &[input]).unwrap_err();
        assert!(err.to_string().contains(names), "{err}");
    }
}

fn command(event: &str, c: RunbookCommand) -> Input {
    Input::Command {
        event_id: event.into(),
        incident_id: id(1),
        actor: "runbook:contain".into(),
        command: c,
    }
}

/// A command case: the incident's state and severity, the command, the entries written and
/// the changes announced.
type CommandCase = (
    &'static str,
    u32,
    RunbookCommand,
    Vec<&'static str>,
    Vec<Change>,
);

#[test]
fn runbook_commands_change_active_incidents_once() {
    use RunbookCommand as C;
    // Table: the incident's state and severity, the command, the entries and announcements.
    let cases: Vec<CommandCase> = vec![
        ("open", 3, C::Note("hi".into()), vec!["note"], vec![]),
        (
            "open",
            3,
            C::Assign {
                role: "commander".into(),
                person: "alice".into(),
                if_vacant: false,
            },
            vec!["role_assigned"],
            vec![Change::RolesChanged],
        ),
        (
            "resolved",
            3,
            C::Assign {
                role: "scribe".into(),
                person: "alice".into(),
                if_vacant: false,
            },
            vec!["role_assigned"],
            vec![Change::RolesChanged],
        ),
        // A closed incident's roles stay: the command is only marked handled.
        (
            "closed",
            3,
            C::Assign {
                role: "scribe".into(),
                person: "alice".into(),
                if_vacant: false,
            },
            vec![],
            vec![],
        ),
        (
            "open",
            3,
            C::SetSeverity(1),
            vec!["severity_changed"],
            vec![Change::SeverityChanged],
        ),
        ("open", 3, C::SetSeverity(3), vec![], vec![]),
        ("resolved", 3, C::SetSeverity(1), vec![], vec![]),
        (
            "open",
            3,
            C::Escalate("slow".into()),
            vec!["severity_changed", "escalated"],
            vec![Change::Escalated],
        ),
        (
            "open",
            1,
            C::Escalate("worse".into()),
            vec!["escalated"],
            vec![Change::Escalated],
        ),
        ("resolved", 2, C::Escalate("late".into()), vec![], vec![]),
        (
            "open",
            3,
            C::SetCategory("malware".into()),
            vec!["category_changed"],
            vec![Change::CategoryChanged],
        ),
        (
            "open",
            3,
            C::SetCategory("service-outage".into()),
            vec![],
            vec![],
        ),
        (
            "open",
            3,
            C::SetCategory("no-such".into()),
            vec!["note"],
            vec![],
        ),
        (
            "acknowledged",
            3,
            C::SetCategory("malware".into()),
            vec!["category_changed"],
            vec![Change::CategoryChanged],
        ),
    ];
    for (state, severity, c, entries, announced) in cases {
        let snap = holding(&[incident(1, "db", state, severity)]);
        let d = run(&snap, &[command("ev-1", c.clone())]).unwrap();
        assert_eq!(kinds(&d), entries, "{state} {c:?}");
        assert_eq!(changes(&d), announced, "{state} {c:?}");
        assert_eq!(d.changeset.processed, ["ev-1"], "{state} {c:?}");
        // Redelivered: nothing at all.
        let mut seen = snap.clone();
        seen.processed.insert("ev-1".into());
        let again = run(&seen, &[command("ev-1", c.clone())]).unwrap();
        assert!(again.changeset.is_empty(), "{state} {c:?}");
    }
}

#[test]
fn an_escalation_recomputes_the_priority_from_the_stored_urgency() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let d = run(
        &snap,
        &[command("ev-1", RunbookCommand::Escalate("x".into()))],
    )
    .unwrap();
    let r = &d.changeset.updates[0].record;
    let want = firebreak_domain::Priority::from_impact_urgency(
        firebreak_domain::Severity::new(2).unwrap(),
        firebreak_domain::Urgency::Medium,
    );
    assert_eq!((r.severity, r.priority), (2, u32::from(want.level())));
}

#[test]
fn a_command_text_is_clipped_and_a_command_for_a_gone_incident_is_only_marked() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let d = run(
        &snap,
        &[command(
            "ev-1",
            RunbookCommand::Note("n".repeat(MAX_TEXT * 2)),
        )],
    )
    .unwrap();
    assert!(d.changeset.entries[0].data["text"].as_str().unwrap().len() <= MAX_TEXT);
    let d = run(
        &TriageSnapshot::default(),
        &[command("ev-2", RunbookCommand::Note("hi".into()))],
    )
    .unwrap();
    assert_eq!(d.changeset.processed, ["ev-2"]);
    assert!(d.changeset.entries.is_empty());
}

fn cleared(event: &str, alert_id: &str, auto_resolve: bool) -> Input {
    Input::AlertResolved {
        event_id: event.into(),
        alert_id: alert_id.into(),
        integration: "am".into(),
        auto_resolve,
    }
}

#[test]
fn the_last_alert_clearing_resolves_an_auto_resolving_incident() {
    let mut snap = holding(&[incident(1, "db", "open", 3)]);
    snap.unresolved.insert(id(1), 2);
    snap.links.insert(
        "al-x".into(),
        AlertLink {
            alert_id: "al-x".into(),
            incident_id: id(1),
            opened: false,
            resolved: false,
            grouped_by: String::new(),
        },
    );
    // One of two clears: counted, no resolve.
    let d = run(&snap, &[cleared("ev-1", "al-0", true)]).unwrap();
    assert_eq!(d.changeset.resolved_alerts, ["al-0"]);
    assert_eq!(d.changeset.entries[0].data["unresolved_alerts"], 1);
    assert!(d.auto_resolve.is_empty());
    // Both in one batch: the second is the last.
    let d = run(
        &snap,
        &[cleared("ev-1", "al-0", true), cleared("ev-2", "al-x", true)],
    )
    .unwrap();
    assert_eq!(d.changeset.entries[1].data["unresolved_alerts"], 0);
    assert_eq!(d.auto_resolve, [(id(1), "integration:am".to_owned())]);
    // Without auto-resolve the incident stays as it is.
    let d = run(
        &snap,
        &[
            cleared("ev-1", "al-0", false),
            cleared("ev-2", "al-x", false),
        ],
    )
    .unwrap();
    assert!(d.auto_resolve.is_empty());
    // Redelivered after the flip: no entry, no second flip; the resolve is asked again
    // (and refused by the life cycle if it happened).
    let mut after = snap.clone();
    after.processed.insert("ev-2".into());
    after.unresolved.insert(id(1), 0);
    after.links.get_mut("al-x").unwrap().resolved = true;
    let d = run(&after, &[cleared("ev-2", "al-x", true)]).unwrap();
    assert!(d.changeset.entries.is_empty() && d.changeset.resolved_alerts.is_empty());
    assert_eq!(d.auto_resolve.len(), 1);
    // An alert no incident holds: only the mark.
    let d = run(&snap, &[cleared("ev-3", "nobody", true)]).unwrap();
    assert_eq!(d.changeset.processed, ["ev-3"]);
    assert!(d.changeset.entries.is_empty());
}

#[test]
fn records_and_changes_land_once() {
    let snap = holding(&[incident(1, "db", "open", 3), incident(2, "api", "open", 3)]);
    let record = |incident_id: String| Input::Record {
        event_id: "ev-1".into(),
        incident_id,
        kind: "runbook_action".into(),
        actor: "runbook:contain".into(),
        data: serde_json::json!({ "run_id": "r" }),
    };
    let d = run(&snap, &[record(id(1)), record(id(1))]).unwrap();
    assert_eq!(kinds(&d), ["runbook_action"], "one entry per event");
    let d = run(&snap, &[record(id(9))]).unwrap();
    assert_eq!(d.changeset.processed, ["ev-1"]);
    assert!(
        d.changeset.entries.is_empty(),
        "an unknown incident gets nothing"
    );

    let change = ChangeRecord {
        id: "ev-c".into(),
        integration: "deploys".into(),
        summary: "v2 rolled out".into(),
        source: "ci".into(),
        at: NOW,
        details: "{}".into(),
    };
    let input = Input::Change {
        change: change.clone(),
        concerned: vec![id(1), id(2)],
    };
    let d = run(&snap, std::slice::from_ref(&input)).unwrap();
    assert_eq!(d.changeset.changes, [change]);
    assert_eq!(kinds(&d), ["change", "change"]);
    assert_eq!(d.changeset.entries[0].actor, "integration:deploys");
    let mut seen = snap.clone();
    seen.processed.insert("ev-c".into());
    assert!(run(&seen, &[input]).unwrap().changeset.is_empty());
}

fn role(change: RoleChange, role: &str, person: &str) -> Input {
    Input::Role {
        incident_id: id(1),
        actor: "user:carol".into(),
        change,
        role: role.into(),
        person: person.into(),
    }
}

fn assign(r: &str, person: &str) -> Input {
    role(RoleChange::Assign, r, person)
}

fn unassign(r: &str, person: &str) -> Input {
    role(RoleChange::Unassign, r, person)
}

/// Who holds which role, as `role=person`, in order.
fn holders(i: &IncidentRecord) -> Vec<String> {
    i.roles
        .iter()
        .map(|h| format!("{}={}", h.role, h.person))
        .collect()
}

/// An open incident whose roles are `held` (`role=person`), assigned at 1 by `user:admin`.
fn holding_roles(state: &str, held: &[&str]) -> TriageSnapshot {
    let mut inc = incident(1, "db", state, 3);
    inc.roles = held
        .iter()
        .map(|h| {
            let (role, person) = h.split_once('=').unwrap();
            firebreak_storage::RoleHolder {
                role: role.into(),
                person: person.into(),
                assigned_at: Micros::from_unix_micros(1),
                assigned_by: "user:admin".into(),
            }
        })
        .collect();
    holding(&[inc])
}

#[test]
fn assigning_a_role_stores_it_on_the_timeline_and_announces_all_roles() {
    let snap = holding_roles("open", &["responder=bob"]);
    let d = run(&snap, &[assign("commander", "alice")]).unwrap();
    let u = &d.changeset.updates[0];
    assert!(!u.state_changed);
    assert_eq!(holders(&u.record), ["responder=bob", "commander=alice"]);
    let alice = &u.record.roles[1];
    assert_eq!(
        (alice.assigned_at, alice.assigned_by.as_str()),
        (NOW, "user:carol")
    );
    assert_eq!(u.record.updated_at, NOW);
    assert_eq!(kinds(&d), ["role_assigned"]);
    let e = &d.changeset.entries[0];
    assert_eq!(e.actor, "user:carol");
    assert_eq!(
        e.data,
        serde_json::json!({ "role": "commander", "person": "alice", "previous": null })
    );
    assert_eq!(changes(&d), [Change::RolesChanged]);
    assert_eq!(d.announcements[0].actor, "user:carol");
    assert_eq!(
        d.announcements[0].incident, u.record,
        "the incident with all its roles"
    );
    assert_eq!(d.assigned, std::slice::from_ref(&u.record));
}

#[test]
fn a_new_commander_takes_over_and_other_roles_have_several_holders() {
    let snap = holding_roles("acknowledged", &["commander=alice", "responder=bob"]);
    let d = run(
        &snap,
        &[
            assign("commander", "dave"),
            assign("responder", "erin"),
            // The permission role's name is the same incident role.
            assign("incident-commander", "frank"),
        ],
    )
    .unwrap();
    assert_eq!(
        holders(&d.assigned[2]),
        ["responder=bob", "responder=erin", "commander=frank"]
    );
    let data: Vec<_> = d.changeset.entries.iter().map(|e| &e.data).collect();
    assert_eq!(data[0]["previous"], "alice");
    assert_eq!(data[1]["previous"], serde_json::Value::Null);
    assert_eq!(
        (&data[2]["role"], &data[2]["previous"]),
        (&"commander".into(), &"dave".into())
    );
    assert_eq!(
        d.changeset.updates.len(),
        1,
        "one update, as the batch left it"
    );
    assert_eq!(d.changeset.updates[0].record, d.assigned[2]);
    assert_eq!(changes(&d), [Change::RolesChanged; 3]);
}

#[test]
fn assigning_a_role_held_already_changes_nothing() {
    let snap = holding_roles("open", &["commander=alice", "responder=bob"]);
    for input in [
        assign("responder", "bob"),
        assign("commander", "alice"),
        assign("incident-commander", "alice"),
    ] {
        let d = run(&snap, std::slice::from_ref(&input)).unwrap();
        assert!(d.changeset.is_empty(), "{input:?}");
        assert!(d.announcements.is_empty(), "{input:?}");
        assert_eq!(
            d.assigned,
            std::slice::from_ref(&snap.incidents[&id(1)]),
            "{input:?}"
        );
    }
}

#[test]
fn unassigning_removes_a_held_role_and_refuses_one_not_held() {
    let snap = holding_roles("resolved", &["commander=alice", "responder=bob"]);
    let d = run(&snap, &[unassign("incident-commander", "alice")]).unwrap();
    assert_eq!(holders(&d.assigned[0]), ["responder=bob"]);
    assert_eq!(kinds(&d), ["role_removed"]);
    assert_eq!(
        d.changeset.entries[0].data,
        serde_json::json!({ "role": "commander", "person": "alice" })
    );
    assert_eq!(changes(&d), [Change::RolesChanged]);

    for input in [
        unassign("responder", "alice"),
        unassign("scribe", "bob"),
        unassign("commander", "bob"),
    ] {
        let err = run(&snap, std::slice::from_ref(&input)).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::NotFound, "{input:?}: {err}");
        let Input::Role { role, person, .. } = &input else {
            unreachable!()
        };
        let text = err.to_string();
        assert!(
            text.contains(role.as_str()) && text.contains(person.as_str()),
            "{text}"
        );
    }
    // Taken twice in one batch: the second finds it gone.
    let err = run(
        &snap,
        &[unassign("responder", "bob"), unassign("responder", "bob")],
    );
    assert!(matches!(err, Err(Error::RoleNotHeld { .. })), "{err:?}");
}

#[test]
fn a_closed_incident_keeps_its_roles() {
    let snap = holding_roles("closed", &["commander=alice"]);
    for input in [assign("responder", "bob"), unassign("commander", "alice")] {
        let err = run(&snap, std::slice::from_ref(&input)).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("closed"), "{err}");
    }
}

#[test]
fn an_incident_holds_at_most_fifty_roles() {
    let mut held: Vec<String> = (0..49).map(|n| format!("responder=p{n}")).collect();
    held.push("commander=alice".into());
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let snap = holding_roles("open", &held);
    let err = run(&snap, &[assign("scribe", "zed")]).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("roles"), "{err}");
    // A hand-off needs no room; one taken makes room for the next.
    let d = run(&snap, &[assign("commander", "bob")]).unwrap();
    assert_eq!(d.assigned[0].roles.len(), 50);
    let d = run(
        &snap,
        &[unassign("responder", "p0"), assign("scribe", "zed")],
    )
    .unwrap();
    assert_eq!(d.assigned[1].roles.len(), 50);
}

#[test]
fn hostile_role_and_person_names_are_refused_naming_the_field() {
    let snap = holding_roles("open", &[]);
    let long = "a".repeat(65);
    let at_limit = "a".repeat(64);
    for bad in [
        "",
        long.as_str(),
        "Commander",
        "on call",
        "a\0b",
        " alice",
        "ali/ce",
        "é",
    ] {
        for (input, field) in [
            (assign(bad, "alice"), "role"),
            (assign("responder", bad), "person"),
            (unassign(bad, "alice"), "role"),
            (unassign("responder", bad), "person"),
        ] {
            let err = run(&snap, &[input]).unwrap_err();
            assert_eq!(
                err.error_code(),
                ErrorCode::InvalidArgument,
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(field), "{bad:?}: {err}");
        }
    }
    let d = run(&snap, &[assign(&at_limit, &at_limit)]).unwrap();
    assert_eq!(d.assigned[0].roles[0].role, at_limit);
    // The incident is checked too.
    let mut bad_id = assign("responder", "bob");
    if let Input::Role { incident_id, .. } = &mut bad_id {
        *incident_id = "INC-1".into();
    }
    let err = run(&snap, &[bad_id]).unwrap_err();
    assert!(err.to_string().contains("incident_id"), "{err}");
    let err = run(&TriageSnapshot::default(), &[assign("responder", "bob")]).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[test]
fn a_runbook_assigns_through_the_same_rule() {
    let snap = holding_roles("open", &["commander=alice"]);
    let cmd = |role: &str, person: &str| {
        command(
            "ev-1",
            RunbookCommand::Assign {
                role: role.into(),
                person: person.into(),
                if_vacant: false,
            },
        )
    };
    let d = run(&snap, &[cmd("incident-commander", "bob")]).unwrap();
    assert_eq!(holders(&d.changeset.updates[0].record), ["commander=bob"]);
    let e = &d.changeset.entries[0];
    assert_eq!(
        (e.kind.as_str(), e.actor.as_str()),
        ("role_assigned", "runbook:contain")
    );
    assert_eq!(e.data["previous"], "alice");
    assert_eq!(
        d.changeset.updates[0].record.roles[0].assigned_by,
        "runbook:contain"
    );
    assert_eq!(changes(&d), [Change::RolesChanged]);
    // Held already: only the mark.
    let d = run(&snap, &[cmd("commander", "alice")]).unwrap();
    assert_eq!(d.changeset.processed, ["ev-1"]);
    assert!(d.changeset.entries.is_empty() && d.announcements.is_empty());
    // A name the rule refuses fails the command, as a severity out of range does.
    for (role, person, field) in [("Commander", "bob", "role"), ("commander", "", "person")] {
        let err = run(&snap, &[cmd(role, person)]).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = run(&snap, &[command("ev-2", RunbookCommand::SetSeverity(0))]).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::InvalidArgument);
}

#[test]
fn an_assignment_if_vacant_fills_an_empty_role_and_never_hands_one_off() {
    let vacant = |role: &str, person: &str| {
        command(
            "ev-9",
            RunbookCommand::Assign {
                role: role.into(),
                person: person.into(),
                if_vacant: true,
            },
        )
    };
    // Held (under either of the role's names): only the mark, the holder stays.
    let held = holding_roles("open", &["commander=bob"]);
    for role in ["commander", "incident-commander"] {
        let d = run(&held, &[vacant(role, "alice")]).unwrap();
        assert_eq!(d.changeset.processed, ["ev-9"]);
        assert!(d.changeset.updates.is_empty() && d.announcements.is_empty());
    }
    // Another role held does not count; an empty one is filled.
    for snap in [
        holding_roles("open", &[]),
        holding_roles("open", &["responder=bob"]),
    ] {
        let d = run(&snap, &[vacant("commander", "alice")]).unwrap();
        assert!(holders(&d.changeset.updates[0].record).contains(&"commander=alice".to_owned()));
        assert_eq!(changes(&d), [Change::RolesChanged]);
    }
}

#[test]
fn an_incident_needs_a_commander_when_severe_active_and_uncommanded() {
    let policy = |through| Lifecycle {
        commander_through: through,
        ..Lifecycle::default()
    };
    assert_eq!(Lifecycle::default().commander_through, 2);
    // Table: policy, severity, state, roles held, needs a commander.
    let cases = [
        (2, 1, "open", &[][..], true),
        (2, 2, "acknowledged", &[], true),
        (2, 2, "mitigated", &["responder=bob"], true),
        (2, 3, "open", &[], false),
        (2, 1, "open", &["commander=bob"], false),
        (2, 1, "resolved", &[], false),
        (2, 1, "closed", &[], false),
        (1, 2, "open", &[], false),
        (5, 5, "open", &[], true),
        (0, 1, "open", &[], false),
    ];
    for (through, severity, state, held, needs) in cases {
        let mut inc = holding_roles(state, held)
            .incidents
            .into_values()
            .next()
            .unwrap();
        inc.severity = severity;
        assert_eq!(
            policy(through).needs_commander(&inc),
            needs,
            "{through} {severity} {state} {held:?}"
        );
    }
}

#[test]
fn the_review_lists_who_held_which_role_and_until_when() {
    let at = |s: i64| Micros::from_unix_micros(1_800_000_000_000_000 + s * 1_000_000);
    let entry = |s: i64, kind: &str, data: serde_json::Value| TimelineRecord {
        seq: s,
        incident_id: id(1),
        kind: kind.into(),
        at: at(s),
        actor: "user:admin".into(),
        data,
    };
    let timeline = vec![
        entry(
            1,
            "role_assigned",
            serde_json::json!({ "role": "commander", "person": "alice", "previous": null }),
        ),
        entry(
            2,
            "role_assigned",
            serde_json::json!({ "role": "scribe", "person": "carol", "previous": null }),
        ),
        entry(
            3,
            "role_assigned",
            serde_json::json!({ "role": "commander", "person": "bob", "previous": "alice" }),
        ),
        entry(
            4,
            "role_removed",
            serde_json::json!({ "role": "scribe", "person": "carol" }),
        ),
    ];
    let mut snap = holding_roles("acknowledged", &["commander=bob"]);
    snap.incidents.get_mut(&id(1)).unwrap().roles[0].assigned_at = at(3);
    let resolve = Input::Transition {
        incident_id: id(1),
        action: Action::Resolve,
        actor: "user:bob".into(),
        text: "fixed".into(),
        timeline,
    };
    let d = run(&snap, &[resolve]).unwrap();
    let review = &d.changeset.updates[0].record.review;
    for row in [
        "| commander | alice | 2027-01-15T08:00:01Z | 2027-01-15T08:00:03Z |",
        "| scribe | carol | 2027-01-15T08:00:02Z | 2027-01-15T08:00:04Z |",
        "| commander | bob | 2027-01-15T08:00:03Z | holds it |",
    ] {
        assert!(review.contains(row), "missing {row:?} in\n{review}");
    }
    // A holder the timeline does not show (stored roles are what holds now) is listed too.
    let mut snap = holding_roles("open", &["responder=dave"]);
    snap.incidents.get_mut(&id(1)).unwrap().roles[0].assigned_at = at(5);
    let resolve = Input::Transition {
        incident_id: id(1),
        action: Action::Resolve,
        actor: "user:bob".into(),
        text: "fixed".into(),
        timeline: Vec::new(),
    };
    let d = run(&snap, &[resolve]).unwrap();
    let review = &d.changeset.updates[0].record.review;
    assert!(
        review.contains("| responder | dave | 2027-01-15T08:00:05Z | holds it |"),
        "{review}"
    );
}

fn transition(n: u32, action: Action, text: &str) -> Input {
    Input::Transition {
        incident_id: id(n),
        action,
        actor: "user:alice".into(),
        text: text.into(),
        timeline: Vec::new(),
    }
}

/// A resolved incident `n` with key `key`, resolved `ago` before NOW.
fn resolved_ago(n: u32, key: &str, ago: Duration) -> IncidentRecord {
    let mut i = incident(n, key, "resolved", 3);
    i.resolved_at = Some(Micros::from_unix_micros(
        NOW.unix_micros() - ago.as_micros() as i64,
    ));
    i
}

#[test]
fn mitigating_stops_paging_but_keeps_the_key_and_resolving_keeps_its_time() {
    let snap = holding(&[incident(1, "db", "acknowledged", 3)]);
    let d = run(
        &snap,
        &[
            transition(1, Action::Mitigate, "rolled back"),
            alert("a2", "db", 3),
        ],
    )
    .unwrap();
    assert_eq!(kinds(&d), ["mitigated", "alert_attached"]);
    assert_eq!(changes(&d), [Change::Mitigated, Change::AlertAttached]);
    // The alert joined the mitigated incident: mitigated is active.
    assert_eq!(d.ingested[0].incident_id, id(1));
    assert!(d.changeset.inserts.is_empty());
    let inc = &d.changeset.updates[0].record;
    assert_eq!(
        (inc.mitigated_at, inc.state.as_str()),
        (Some(NOW), "mitigated")
    );
}

#[test]
fn people_reopen_inside_the_window_only() {
    let hour = Duration::from_secs(3600);
    let inside = holding(&[resolved_ago(1, "db", hour - Duration::from_secs(1))]);
    let d = run(&inside, &[transition(1, Action::Reopen, "it is back")]).unwrap();
    let inc = &d.changeset.updates[0].record;
    assert_eq!((inc.state.as_str(), inc.resolved_at), ("open", None));
    assert_eq!(kinds(&d), ["reopened"]);
    assert_eq!(changes(&d), [Change::Reopened]);
    assert_eq!(d.changeset.entries[0].data["reason"], "it is back");
    let outside = holding(&[resolved_ago(1, "db", hour + Duration::from_secs(1))]);
    let err = run(&outside, &[transition(1, Action::Reopen, "late")]).unwrap_err();
    assert!(err.to_string().contains("reopen.window"), "{err}");
    // A zero window turns reopening off.
    let off = Lifecycle {
        reopen_window: Duration::ZERO,
        ..Lifecycle::default()
    };
    assert!(run_with(&off, &inside, &[transition(1, Action::Reopen, "x")]).is_err());
}

#[test]
fn a_repeat_alert_reopens_inside_its_integrations_window_and_opens_anew_outside() {
    let lifecycle = Lifecycle {
        repeat_window: Duration::from_secs(600),
        repeat_windows: HashMap::from([("quiet".to_owned(), Duration::ZERO)]),
        ..Lifecycle::default()
    };
    let mut snap = TriageSnapshot::default();
    let recent = resolved_ago(1, "db", Duration::from_secs(599));
    // As the store reads it: by key only (not among the incidents asked by id).
    snap.resolved.insert("db".into(), recent);
    // Inside: the same incident opens again, and the alert joins it.
    let d = run_with(&lifecycle, &snap, &[alert("a2", "db", 3)]).unwrap();
    assert!(d.changeset.inserts.is_empty());
    assert_eq!(
        (
            d.ingested[0].incident_id.as_str(),
            d.ingested[0].deduplicated
        ),
        (id(1).as_str(), true)
    );
    assert_eq!(kinds(&d), ["reopened", "alert_attached"]);
    assert_eq!(changes(&d), [Change::Reopened, Change::AlertAttached]);
    let inc = &d.changeset.updates[0].record;
    assert_eq!((inc.state.as_str(), inc.alert_count), ("open", 2));
    assert!(d.changeset.updates[0].state_changed);
    // A second alert of the batch joins it too: one reopen.
    let d = run_with(
        &lifecycle,
        &snap,
        &[alert("a2", "db", 3), alert("a3", "db", 3)],
    )
    .unwrap();
    assert_eq!(kinds(&d).iter().filter(|k| **k == "reopened").count(), 1);
    assert_eq!(d.ingested[1].incident_id, id(1));
    // The default (no repeat window) and an integration without one open a new incident.
    for l in [
        Lifecycle::default(),
        Lifecycle {
            repeat_windows: HashMap::from([("am-payments".to_owned(), Duration::ZERO)]),
            ..lifecycle.clone()
        },
    ] {
        let d = run_with(&l, &snap, &[alert("a2", "db", 3)]).unwrap();
        assert_eq!(d.changeset.inserts.len(), 1, "{l:?}");
    }
    // Outside the window: a new incident.
    let mut late = TriageSnapshot::default();
    late.resolved
        .insert("db".into(), resolved_ago(1, "db", Duration::from_secs(601)));
    let d = run_with(&lifecycle, &late, &[alert("a2", "db", 3)]).unwrap();
    assert_eq!(d.changeset.inserts.len(), 1);
}

fn merge(n: u32, into: u32, reason: &str) -> Input {
    Input::Merge {
        incident_id: id(n),
        into: id(into),
        actor: "user:alice".into(),
        reason: reason.into(),
    }
}

#[test]
fn a_merge_moves_the_alerts_and_closes_with_a_link() {
    let mut source = incident(1, "web-1", "acknowledged", 3);
    source.alert_count = 3;
    let mut snap = holding(&[source, incident(2, "web-2", "open", 2)]);
    snap.unresolved.insert(id(1), 2);
    let d = run(
        &snap,
        &[merge(1, 2, "same outage"), alert("a9", "web-1", 3)],
    )
    .unwrap();
    assert_eq!(
        d.changeset.moves,
        [AlertMove {
            from: id(1),
            to: id(2)
        }]
    );
    let (merged, into, moved) = &d.merged[0];
    assert_eq!(moved, &3);
    assert_eq!(
        (
            merged.state.as_str(),
            merged.merged_into.as_str(),
            merged.closed_at
        ),
        ("closed", id(2).as_str(), Some(NOW))
    );
    assert!(merged.root_cause.contains("same outage"));
    assert_eq!(into.alert_count, 4);
    assert_eq!(kinds(&d)[..2], ["merged_into", "merged"]);
    assert_eq!(changes(&d)[..2], [Change::Merged, Change::Merged]);
    // The merged incident's key is free: its next alert opens a new incident.
    assert_eq!(d.changeset.inserts.len(), 1);
}

#[test]
fn a_merge_is_refused_naming_the_field() {
    let snap = holding(&[
        incident(1, "a", "open", 3),
        incident(2, "b", "resolved", 3),
        incident(3, "c", "closed", 3),
        incident(4, "d", "open", 3),
    ]);
    let cases = [
        (merge(1, 1, "x"), "into"),
        (merge(1, 2, "x"), "into"),
        (merge(3, 4, "x"), "merge"),
        (merge(1, 4, "  "), "reason"),
        (merge(1, 9, "x"), "not found"),
    ];
    for (input, names) in cases {
        let err = run(&snap, &[input]).unwrap_err();
        assert!(err.to_string().contains(names), "{names}: {err}");
    }
}

fn set(
    severity: Option<u32>,
    priority: Option<u32>,
    category: Option<&str>,
    reason: &str,
) -> Input {
    Input::Reclassify {
        incident_id: id(1),
        actor: "user:ic".into(),
        change: Reclassification {
            severity,
            priority,
            category: category.map(str::to_owned),
            reason: reason.into(),
        },
    }
}

#[test]
fn a_reclassification_needs_a_reason_and_goes_on_the_timeline() {
    let snap = holding(&[incident(1, "db", "acknowledged", 3)]);
    let d = run(
        &snap,
        &[set(Some(1), None, Some("data-breach"), "customer data")],
    )
    .unwrap();
    assert_eq!(
        kinds(&d),
        ["severity_changed", "priority_changed", "category_changed"]
    );
    assert_eq!(
        changes(&d),
        [Change::SeverityChanged, Change::CategoryChanged]
    );
    let inc = &d.transitioned[0];
    // SEV1 at the stored medium urgency: P2.
    assert_eq!(
        (inc.severity, inc.priority, inc.category.as_str()),
        (1, 2, "data-breach")
    );
    assert!(
        d.changeset
            .entries
            .iter()
            .all(|e| e.data["reason"] == "customer data")
    );
    let d = run(&snap, &[set(None, Some(1), None, "board asked")]).unwrap();
    assert_eq!(changes(&d), [Change::PriorityChanged]);
    assert_eq!(d.transitioned[0].priority, 1);
    // What is already set changes nothing.
    let d = run(&snap, &[set(Some(3), None, None, "same")]).unwrap();
    assert!(d.changeset.is_empty());
    let closed = holding(&[incident(1, "db", "closed", 3)]);
    let refusals = [
        (&snap, set(Some(2), None, None, " "), "reason"),
        (&snap, set(None, None, None, "why"), "severity"),
        (&snap, set(Some(0), None, None, "why"), "severity"),
        (&snap, set(None, Some(6), None, "why"), "priority"),
        (&snap, set(None, None, Some("nope"), "why"), "category"),
        (&closed, set(Some(2), None, None, "why"), "reclassify"),
    ];
    for (snap, input, names) in refusals {
        let err = run(snap, &[input]).unwrap_err();
        assert!(err.to_string().contains(names), "{names}: {err}");
    }
}

/// An attached alert's repeats are counted once per event (a redelivery counts nothing), a
/// repeat of an alert attached in the same batch counts, one attached nowhere (silenced)
/// only marks its event; what each attached alert was is kept with its attachment.
#[test]
fn repeats_of_attached_alerts_count_once_and_attachments_keep_what_the_alert_was() {
    let snap = holding(&[incident(1, "db", "open", 3)]);
    let repeated = |event: &str, alert: &str, micros: i64| {
        Input::repeated(
            event,
            &v1::AlertRepeated {
                alert_id: alert.into(),
                integration: "am-payments".into(),
                at: Some(firebreak_proto::timestamp(Micros::from_unix_micros(micros))),
            },
            NOW,
        )
    };
    let mut labelled = alert("a2", "db", 3);
    if let Input::Alert { signal, .. } = &mut labelled {
        signal.labels.insert("host".into(), "b".into());
    }
    let inputs = [
        repeated("e1", "al-0", 5),
        repeated("e1", "al-0", 5),
        labelled,
        repeated("e2", "a2", 7),
        repeated("e3", "silenced", 8),
    ];
    let d = run(&snap, &inputs).unwrap();
    let cs = &d.changeset;
    let counted: Vec<(&str, i64)> = cs
        .repeats
        .iter()
        .map(|r| (r.alert_id.as_str(), r.at.unix_micros()))
        .collect();
    assert_eq!(counted, [("al-0", 5), ("a2", 7)]);
    assert_eq!(cs.processed, ["e1", "e2", "e3"]);
    assert_eq!(
        cs.seen,
        [AlertSeen {
            alert_id: "a2".into(),
            title: "db is down".into(),
            labels: [("host".to_owned(), "b".to_owned())].into(),
            fired_at: NOW,
        }]
    );
    // Handled before: nothing.
    let mut snap = snap;
    snap.processed.insert("e1".into());
    let d = run(&snap, &[repeated("e1", "al-0", 5)]).unwrap();
    assert!(d.changeset.is_empty(), "{:?}", d.changeset);
}

// The review's follow-ups and summary.

fn add(n: u32, title: &str, owner: &str, due: &str) -> Input {
    Input::FollowUp {
        incident_id: id(n),
        actor: "user:amy".into(),
        change: FollowUpChange::Add {
            title: title.into(),
            owner: owner.into(),
            due: due.into(),
        },
    }
}

fn update(n: u32, number: u32, f: impl FnOnce(&mut FollowUpChange)) -> Input {
    let mut change = FollowUpChange::Update {
        number,
        title: None,
        owner: None,
        due: None,
        state: None,
    };
    f(&mut change);
    Input::FollowUp {
        incident_id: id(n),
        actor: "user:bob".into(),
        change,
    }
}

fn set_state(
    state: firebreak_domain::follow_up::FollowUpState,
) -> impl FnOnce(&mut FollowUpChange) {
    move |c| {
        if let FollowUpChange::Update { state: s, .. } = c {
            *s = Some(state);
        }
    }
}

/// A snapshot holding `inc` with the follow-ups an earlier decision wrote.
fn with_follow_ups(inc: &IncidentRecord, d: &Decision) -> TriageSnapshot {
    let mut s = holding(std::slice::from_ref(inc));
    s.follow_ups.insert(
        inc.id.clone(),
        d.changeset
            .follow_ups
            .iter()
            .map(|w| w.record.clone())
            .collect(),
    );
    s
}

#[test]
fn follow_ups_are_numbered_on_the_timeline_and_need_the_snapshots_list() {
    use firebreak_domain::follow_up::FollowUpState;
    let inc = incident(1, "db", "resolved", 2);
    assert!(request_for(&[add(1, "t", "amy", "")]).follow_ups);
    let d = run(
        &holding(std::slice::from_ref(&inc)),
        &[
            add(1, " add a canary ", "amy", "2027-02-01"),
            add(1, "alert on 5xx", "bob", ""),
        ],
    )
    .unwrap();
    assert_eq!(kinds(&d), ["follow_up_added", "follow_up_added"]);
    let made: Vec<(u32, &str, &str, bool)> = d
        .changeset
        .follow_ups
        .iter()
        .map(|w| {
            (
                w.record.number,
                w.record.title.as_str(),
                w.record.owner.as_str(),
                w.insert,
            )
        })
        .collect();
    assert_eq!(
        made,
        [
            (1, "add a canary", "amy", true),
            (2, "alert on 5xx", "bob", true)
        ]
    );
    assert_eq!(d.changeset.follow_ups[0].record.state, FollowUpState::Open);
    assert_eq!(
        d.changeset.entries[0].data,
        json!({"follow_up": 1, "title": "add a canary", "owner": "amy", "due": "2027-02-01", "state": "open"})
    );
    assert_eq!(d.changeset.entries[0].actor, "user:amy");
    // Nothing about the incident itself changes; each addition is announced.
    assert!(d.changeset.updates.is_empty());
    assert_eq!(changes(&d), [Change::ReviewChanged, Change::ReviewChanged]);
    assert_eq!(d.announcements[0].actor, "user:amy");

    // Done, and back to open: both allowed, each an entry naming what it was.
    let snap = with_follow_ups(&inc, &d);
    let d = run(&snap, &[update(1, 2, set_state(FollowUpState::Done))]).unwrap();
    assert_eq!(kinds(&d), ["follow_up_changed"]);
    assert_eq!(
        d.changeset.entries[0].data,
        json!({"follow_up": 2, "state": "done", "from": {"state": "open"}})
    );
    let w = &d.changeset.follow_ups[0];
    assert_eq!(
        (w.record.state, w.insert, w.record.updated_at),
        (FollowUpState::Done, false, NOW)
    );
    let snap = with_follow_ups(&inc, &d);
    let again = run(&snap, &[update(1, 2, set_state(FollowUpState::Done))]).unwrap();
    assert!(again.changeset.is_empty(), "done twice changes nothing");
    assert!(again.announcements.is_empty());
    assert_eq!(again.follow_ups[0].state, FollowUpState::Done);
    let reopened = run(&snap, &[update(1, 2, set_state(FollowUpState::Open))]).unwrap();
    assert_eq!(reopened.follow_ups[0].state, FollowUpState::Open);

    // Owner, title and due change together; the due date clears.
    let d = run(
        &snap,
        &[update(1, 2, |c| {
            if let FollowUpChange::Update {
                title, owner, due, ..
            } = c
            {
                *title = Some("alert on 5xx and 4xx".into());
                *owner = Some("carol".into());
                *due = Some("2027-03-01".into());
            }
        })],
    )
    .unwrap();
    assert_eq!(
        d.changeset.entries[0].data,
        json!({"follow_up": 2, "title": "alert on 5xx and 4xx", "owner": "carol",
            "due": "2027-03-01",
            "from": {"title": "alert on 5xx", "owner": "bob", "due": null}})
    );
}

#[test]
fn bad_follow_ups_are_refused_naming_the_field_and_change_nothing() {
    let inc = incident(1, "db", "open", 2);
    let snap = holding(std::slice::from_ref(&inc));
    // The incident opened a millisecond before NOW (2027-01-15): the 14th is too early.
    for (input, field) in [
        (add(1, "", "amy", ""), "title"),
        (add(1, &"x".repeat(513), "amy", ""), "title"),
        (add(1, "two\nlines", "amy", ""), "title"),
        (add(1, "t", "Amy Smith", ""), "owner"),
        (add(1, "t", "", ""), "owner"),
        (add(1, "t", "amy", "2027-01-14"), "due"),
        (add(1, "t", "amy", "15/01/2027"), "due"),
        (add(1, "t", "amy", "2027-02-30"), "due"),
        (update(1, 1, |_| {}), "update"),
    ] {
        let err = run(&snap, &[input]).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::InvalidArgument, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(run(&snap, &[add(1, "t", "amy", "2027-01-15")]).is_ok());
    // An unknown incident, an unknown follow-up.
    let err = run(&snap, &[add(9, "t", "amy", "")]).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::NotFound, "{err}");
    let err = run(
        &snap,
        &[update(
            1,
            3,
            set_state(firebreak_domain::follow_up::FollowUpState::Done),
        )],
    )
    .unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::NotFound, "{err}");
    assert!(err.to_string().contains("follow-up 3"), "{err}");
    // A merged incident's review is the other's.
    let mut merged = incident(2, "db2", "closed", 2);
    merged.merged_into = id(1);
    let snap = holding(&[inc, merged]);
    for input in [
        add(2, "t", "amy", ""),
        Input::Summary {
            incident_id: id(2),
            actor: "user:amy".into(),
            text: "s".into(),
        },
    ] {
        let err = run(&snap, &[input]).unwrap_err();
        assert!(err.to_string().contains("merged into"), "{err}");
    }
}

#[test]
fn an_incident_has_at_most_two_hundred_follow_ups() {
    let inc = incident(1, "db", "closed", 2);
    let mut d = Decision::default();
    for _ in 0..firebreak_domain::follow_up::MAX_FOLLOW_UPS {
        let snap = with_follow_ups(&inc, &d);
        let next = run(&snap, &[add(1, "t", "amy", "")]).unwrap();
        d.changeset.follow_ups.extend(next.changeset.follow_ups);
    }
    assert_eq!(d.changeset.follow_ups.last().unwrap().record.number, 200);
    let err = run(&with_follow_ups(&inc, &d), &[add(1, "t", "amy", "")]).unwrap_err();
    assert!(err.to_string().contains("follow_ups"), "{err}");
}

#[test]
fn a_summary_is_an_entry_the_review_reads_back() {
    let inc = incident(1, "db", "resolved", 2);
    let snap = holding(std::slice::from_ref(&inc));
    let summary = |text: &str| Input::Summary {
        incident_id: id(1),
        actor: "user:amy".into(),
        text: text.into(),
    };
    let d = run(&snap, &[summary("  first  "), summary("second")]).unwrap();
    assert_eq!(kinds(&d), ["summary_edited", "summary_edited"]);
    assert_eq!(changes(&d), [Change::ReviewChanged, Change::ReviewChanged]);
    assert_eq!(d.changeset.entries[0].data, json!({"summary": "first"}));
    let err = run(&snap, &[summary(&"s".repeat(16 * 1024 + 1))]).unwrap_err();
    assert!(err.to_string().starts_with("invalid summary"), "{err}");
    let timeline: Vec<TimelineRecord> = d
        .changeset
        .entries
        .iter()
        .enumerate()
        .map(|(n, e)| TimelineRecord {
            seq: n as i64 + 1,
            incident_id: e.incident_id.clone(),
            kind: e.kind.clone(),
            at: e.at,
            actor: e.actor.clone(),
            data: e.data.clone(),
        })
        .collect();
    assert_eq!(review_input(&inc, &timeline).summary, "second");
}

/// The review's facts from a timeline as the services write it: roles handed off, status
/// updates (as the status-update RPC writes them), a runbook's actions, and the durations.
#[test]
fn the_review_folds_roles_updates_runs_and_durations_from_the_timeline() {
    let mut inc = incident(1, "db", "resolved", 2);
    let at = |s: i64| Micros::from_unix_micros(inc.opened_at.unix_micros() + s * 1_000_000);
    inc.acknowledged_at = Some(at(90));
    inc.mitigated_at = Some(at(600));
    inc.resolved_at = Some(at(3600));
    let e = |s, kind: &str, actor: &str, data| TimelineRecord {
        seq: s,
        incident_id: inc.id.clone(),
        kind: kind.into(),
        at: at(s),
        actor: actor.into(),
        data,
    };
    let timeline = vec![
        e(1, "opened", "triage", json!({})),
        e(
            2,
            "role_assigned",
            "user:amy",
            json!({"role": "commander", "person": "amy"}),
        ),
        e(
            3,
            "status_update",
            "user:amy",
            json!({"status": "investigating", "message": "looking"}),
        ),
        e(
            4,
            "runbook_started",
            "runbook:db",
            json!({"runbook": "db", "live": true}),
        ),
        e(
            5,
            "runbook_action",
            "runbook:db",
            json!({"runbook": "db", "action": {"action": "k8s.restart", "args": {"d": "db"}, "status": "succeeded"}}),
        ),
        e(
            6,
            "runbook_succeeded",
            "runbook:db",
            json!({"runbook": "db"}),
        ),
        e(
            6,
            "runbook_started",
            "runbook:db",
            json!({"runbook": "db", "run_id": "r-2", "live": false}),
        ),
        e(
            6,
            "runbook_rejected",
            "runbook:db",
            json!({"runbook": "db", "run_id": "r-2"}),
        ),
        e(
            7,
            "role_assigned",
            "user:amy",
            json!({"role": "commander", "person": "bob", "previous": "amy"}),
        ),
        e(
            8,
            "status_update",
            "user:bob",
            json!({"status": "resolved", "message": "fixed"}),
        ),
    ];
    let r = review_input(&inc, &timeline);
    let held: Vec<(&str, Option<i64>)> = r
        .roles
        .iter()
        .map(|h| {
            (
                h.person.as_str(),
                h.until.map(|u| (u - h.from).whole_seconds()),
            )
        })
        .collect();
    assert_eq!(held, [("amy", Some(5)), ("bob", None)]);
    let updates: Vec<(&str, &str, &str)> = r
        .status_updates
        .iter()
        .map(|u| (u.status.as_str(), u.message.as_str(), u.actor.as_str()))
        .collect();
    assert_eq!(
        updates,
        [
            ("investigating", "looking", "user:amy"),
            ("resolved", "fixed", "user:bob")
        ]
    );
    // Two runs of one runbook are two runs.
    let runs: Vec<(&str, &str, bool)> = r
        .runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.state.as_str(), r.live))
        .collect();
    assert_eq!(runs, [("", "succeeded", true), ("r-2", "rejected", false)]);
    assert_eq!(
        r.runs[0].actions,
        ["`k8s.restart` {\"d\":\"db\"} → succeeded"]
    );
    assert_eq!(
        r.durations(),
        [90, 600, 3600].map(|s| Some(time::Duration::seconds(s)))
    );
    let md = review_markdown(&r);
    for want in [
        "Time to acknowledge: 1m 30s",
        "Time to mitigate: 10m 0s",
        "Time to resolve: 1h 0m",
        "| investigating | user:amy | looking |",
        "### db (succeeded, live)",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
}

fn status_update(status: firebreak_domain::UpdateStatus, message: &str) -> Input {
    Input::StatusUpdate {
        incident_id: id(1),
        actor: "user:carol".into(),
        status,
        message: message.into(),
    }
}

#[test]
fn a_status_update_goes_on_the_timeline_and_is_announced_without_moving_the_state() {
    use firebreak_domain::UpdateStatus;
    for state in ["open", "acknowledged", "mitigated", "resolved"] {
        let snap = holding(&[incident(1, "db", state, 1)]);
        let d = run(
            &snap,
            &[status_update(UpdateStatus::Resolved, "  all clear  ")],
        )
        .unwrap();
        assert_eq!(kinds(&d), ["status_update"], "{state}");
        let entry = &d.changeset.entries[0];
        assert_eq!(
            (entry.actor.as_str(), &entry.data),
            (
                "user:carol",
                &json!({ "status": "resolved", "message": "all clear" })
            )
        );
        assert_eq!(changes(&d), [Change::StatusUpdated]);
        let inc = &d.updated[0];
        // A `resolved` update tells stakeholders; it does not resolve the incident.
        assert_eq!(inc.state.as_str(), state);
        let last = inc.last_status_update.as_ref().unwrap();
        assert_eq!(
            (
                last.status,
                last.message.as_str(),
                last.at,
                last.by.as_str()
            ),
            (UpdateStatus::Resolved, "all clear", NOW, "user:carol")
        );
        assert_eq!(d.announcements[0].incident, *inc);
    }
}

#[test]
fn a_status_update_is_refused_on_a_closed_or_unknown_incident_and_for_a_bad_message() {
    use firebreak_domain::UpdateStatus;
    let closed = holding(&[incident(1, "db", "closed", 1)]);
    let err = run(&closed, &[status_update(UpdateStatus::Monitoring, "x")]).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::FailedPrecondition, "{err}");
    let none = TriageSnapshot::default();
    let err = run(&none, &[status_update(UpdateStatus::Monitoring, "x")]).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::NotFound, "{err}");
    let open = holding(&[incident(1, "db", "open", 1)]);
    for bad in ["", "  ", &"x".repeat(4097), "a\0b"] {
        let err = run(&open, &[status_update(UpdateStatus::Identified, bad)]).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::InvalidArgument, "{err}");
        assert!(err.to_string().contains("message"), "{err}");
    }
}
