//! Reports on a seeded history with known answers: what triage's store reads of each
//! incident in the window (`report_facts`) and what intake's counts of silenced alerts
//! (`silenced_tally`), put through the domain's report, give exactly the figures worked out
//! by hand, on both adapters.

use std::collections::BTreeMap;
use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_domain::report::{
    GroupBy, IncidentFacts, Percentiles, Report, ReportGroup, silenced_by_group,
};
use firebreak_storage::{
    IncidentRecord, IntakeStore, NewTimelineEntry, SilencedRecord, TriageChangeset, TriageStore,
};
use serde_json::json;

use crate::fixtures::{Adapter, Backend, Fixture, apply, incident};

crate::contract!(triage:
    a_seeded_history_reports_exact_figures_per_group,
);

/// The window's start: every time below is seconds after it.
const T0: i64 = 1_000_000;

fn at(seconds: i64) -> Micros {
    Micros::from_unix_micros((T0 + seconds) * 1_000_000)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn p(p50: u64, p90: u64) -> Option<Percentiles> {
    Some(Percentiles {
        p50: secs(p50),
        p90: secs(p90),
    })
}

/// An incident of the history: opened at `opened` (seconds after T0), with `alerts`.
#[allow(clippy::too_many_arguments)]
fn seeded(
    id: &str,
    category: &str,
    severity: u32,
    service: Option<&str>,
    integration: &str,
    opened: i64,
    acknowledged: Option<i64>,
    resolved: Option<i64>,
    alerts: u32,
) -> IncidentRecord {
    let state = match (acknowledged, resolved) {
        (_, Some(_)) => "resolved",
        (Some(_), None) => "acknowledged",
        (None, None) => "open",
    };
    let mut i = incident(id, &format!("key-{id}"), state);
    i.category = category.into();
    i.severity = severity;
    i.labels = service
        .map(|s| BTreeMap::from([("service".to_owned(), s.to_owned())]))
        .unwrap_or_default();
    i.source = "mailgw".into();
    i.integration = integration.into();
    i.opened_at = at(opened);
    i.acknowledged_at = acknowledged.map(|s| at(opened + s));
    i.resolved_at = resolved.map(|s| at(opened + s));
    i.alert_count = alerts;
    i
}

/// A timeline entry of `kind` by `actor`.
fn by(id: &str, kind: &str, actor: &str) -> NewTimelineEntry {
    NewTimelineEntry {
        incident_id: id.into(),
        kind: kind.into(),
        at: at(0),
        actor: actor.into(),
        data: json!({}),
    }
}

fn silenced(
    n: usize,
    received: i64,
    integration: &str,
    service: &str,
    category: &str,
    severity: u32,
) -> Vec<SilencedRecord> {
    (0..n)
        .map(|k| SilencedRecord {
            alert_id: format!("{category}-{received}-{k}"),
            silence_id: "s-1".into(),
            received_at: at(received),
            integration: integration.into(),
            service: service.into(),
            category: category.into(),
            severity,
        })
        .collect()
}

/// The history (times in seconds after T0; "by" is who wrote the entries, in order):
///
/// | id | category  | sev | service | integration | opened | ack (by)        | resolve (by)      | later        | alerts |
/// |----|-----------|-----|---------|-------------|--------|-----------------|-------------------|--------------|--------|
/// | a  | malware   | 1   | web     | am          | 0      | +60 alice       | +600 alice        |              | 3      |
/// | b  | malware   | 2   | web     | am          | 100    | +120 integration| +300 runbook      |              | 1      |
/// | c  | malware   | 1   | db      | pd          | 200    | +30 bob         | +900 runbook      |              | 2      |
/// | d  | phishing  | 3   | (mailgw)| pd          | 300    |                 | +45 runbook       | carol's note | 1      |
/// | e  | phishing  | 3   | (mailgw)| (none)      | 400    |                 |                   |              | 2      |
/// | g  | malware   | 1   | web     | am          | 500    | +90 alice       | +1200 alice, closed|             | 2      |
/// | f  | malware   | 1   | web     | am          | -1     | (before the window: not counted)                    | 9      |
async fn seed(store: &dyn TriageStore) {
    let mut g = seeded(
        "g",
        "malware",
        1,
        Some("web"),
        "am",
        500,
        Some(90),
        Some(1200),
        2,
    );
    g.state = "closed".parse().unwrap();
    g.closed_at = Some(at(2_000));
    let history = [
        (
            seeded(
                "a",
                "malware",
                1,
                Some("web"),
                "am",
                0,
                Some(60),
                Some(600),
                3,
            ),
            vec![
                by("a", "opened", "triage"),
                by("a", "acknowledged", "user:alice"),
                by("a", "resolved", "user:alice"),
            ],
        ),
        (
            seeded(
                "b",
                "malware",
                2,
                Some("web"),
                "am",
                100,
                Some(120),
                Some(300),
                1,
            ),
            vec![
                by("b", "opened", "triage"),
                by("b", "acknowledged", "integration:am"),
                by("b", "runbook_started", "runbook:contain"),
                by("b", "resolved", "runbook:contain"),
                by("b", "review_drafted", "triage"),
            ],
        ),
        (
            seeded(
                "c",
                "malware",
                1,
                Some("db"),
                "pd",
                200,
                Some(30),
                Some(900),
                2,
            ),
            vec![
                by("c", "opened", "triage"),
                by("c", "acknowledged", "user:bob"),
                by("c", "resolved", "runbook:contain"),
            ],
        ),
        (
            seeded("d", "phishing", 3, None, "pd", 300, None, Some(45), 1),
            vec![
                by("d", "opened", "triage"),
                by("d", "resolved", "runbook:quarantine"),
                by("d", "note", "user:carol"),
            ],
        ),
        (
            seeded("e", "phishing", 3, None, "", 400, None, None, 2),
            vec![by("e", "opened", "triage")],
        ),
        (
            g,
            vec![
                by("g", "opened", "triage"),
                by("g", "acknowledged", "user:alice"),
                by("g", "resolved", "user:alice"),
                by("g", "closed", "user:alice"),
            ],
        ),
        (
            seeded(
                "f",
                "malware",
                1,
                Some("web"),
                "am",
                -1,
                Some(1),
                Some(2),
                9,
            ),
            vec![
                by("f", "opened", "triage"),
                by("f", "resolved", "runbook:contain"),
            ],
        ),
    ];
    for (incident, entries) in history {
        let mut changes = TriageChangeset::default();
        changes.inserts.push(incident);
        changes.entries.extend(entries);
        apply(store, changes).await.unwrap();
    }
    // Merged into another: its alerts count there, so it is left out of every figure.
    let mut merged = seeded("m", "malware", 1, Some("web"), "am", 10, Some(20), None, 4);
    merged.state = "closed".parse().unwrap();
    merged.merged_into = "a".into();
    apply(
        store,
        TriageChangeset {
            inserts: vec![merged],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn seed_silenced(store: &dyn IntakeStore) {
    let mut tx = store.begin().await.unwrap();
    let mut rows = silenced(3, 10, "am", "web", "malware", 1);
    rows.extend(silenced(1, 20, "pd", "mailgw", "phishing", 3));
    rows.extend(silenced(2, 30, "am", "web", "denial-of-service", 2));
    // Before the window: not counted.
    rows.extend(silenced(4, -5, "am", "web", "malware", 1));
    tx.insert_silenced(rows).await.unwrap();
    tx.commit().await.unwrap();
}

fn group(
    key: &str,
    (incidents, acknowledged, resolved): (u64, u64, u64),
    mtta: Option<Percentiles>,
    mttr: Option<Percentiles>,
    (auto_remediated, alerts, silenced): (u64, u64, u64),
) -> ReportGroup {
    ReportGroup {
        key: key.into(),
        incidents,
        acknowledged,
        resolved,
        mtta,
        mttr,
        auto_remediated,
        alerts,
        silenced,
    }
}

fn report(
    by: GroupBy,
    facts: &[IncidentFacts],
    silenced: &[firebreak_domain::report::SilencedCount],
) -> Report {
    let mut r = Report::build(by, facts);
    r.add_silenced(&silenced_by_group(by, silenced));
    r
}

async fn a_seeded_history_reports_exact_figures_per_group(f: &Fixture<dyn TriageStore>) {
    seed(f.store.as_ref()).await;
    let adapter = match f.backend {
        Backend::Sqlite { .. } => Adapter::Sqlite,
        Backend::Postgres(_) => Adapter::Postgres,
    };
    let intake = crate::fixtures::intake(adapter).await;
    seed_silenced(intake.store.as_ref()).await;

    let facts = f.store.report_facts(at(0), 1_000).await.unwrap();
    let ids: Vec<&str> = facts.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "b", "c", "d", "e", "g"],
        "oldest first, f before the window"
    );
    // What the store reads of the timelines: the first resolve and the first person's entry.
    let first = |id: &str| {
        let i = facts.iter().find(|i| i.id == id).unwrap();
        (
            i.first_resolve.as_ref().map(|(_, actor)| actor.as_str()),
            i.first_resolve
                .as_ref()
                .zip(i.first_person_entry)
                .map(|((resolve, _), person)| person < *resolve),
            i.auto_remediated(),
        )
    };
    assert_eq!(first("a"), (Some("user:alice"), Some(true), false));
    assert_eq!(first("b"), (Some("runbook:contain"), None, true));
    assert_eq!(first("c"), (Some("runbook:contain"), Some(true), false));
    assert_eq!(first("d"), (Some("runbook:quarantine"), Some(false), true));
    assert_eq!(first("e"), (None, None, false));
    let d = facts.iter().find(|i| i.id == "d").unwrap();
    assert_eq!(
        (d.service.as_str(), d.integration.as_str()),
        ("mailgw", "pd")
    );
    // A limit keeps the oldest.
    let two = f.store.report_facts(at(0), 2).await.unwrap();
    assert_eq!(
        two.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );

    let counts = intake.store.silenced_tally(at(0)).await.unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 6, "{counts:?}");
    assert_eq!(
        intake
            .store
            .silenced_tally(at(-5))
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum::<u64>(),
        10
    );

    // By category (worked out by hand: nearest rank is ceil(p × n / 100)).
    let r = report(GroupBy::Category, &facts, &counts);
    assert_eq!(
        r.groups,
        [
            group("denial-of-service", (0, 0, 0), None, None, (0, 0, 2)),
            // TTA 30 60 90 120 → p50 the 2nd, p90 the 4th; TTR 300 600 900 1200 likewise.
            group("malware", (4, 4, 4), p(60, 120), p(600, 1200), (1, 8, 3)),
            group("phishing", (2, 0, 1), None, p(45, 45), (1, 3, 1)),
        ]
    );
    // TTR 45 300 600 900 1200 → p50 the 3rd, p90 the 5th.
    assert_eq!(
        r.total,
        group("", (6, 4, 5), p(60, 120), p(600, 1200), (2, 11, 6))
    );
    assert_eq!(r.groups[1].auto_remediated_share(), Some(0.25));
    assert_eq!(r.groups[1].alerts_per_incident(), Some(2.0));
    assert_eq!(r.groups[2].auto_remediated_share(), Some(0.5));
    assert_eq!(r.groups[2].alerts_per_incident(), Some(1.5));
    assert_eq!(r.groups[0].auto_remediated_share(), None);

    let r = report(GroupBy::Severity, &facts, &counts);
    assert_eq!(
        r.groups,
        [
            // a, c, g: TTA 60 30 90, TTR 600 900 1200.
            group("SEV1", (3, 3, 3), p(60, 90), p(900, 1200), (0, 7, 3)),
            group("SEV2", (1, 1, 1), p(120, 120), p(300, 300), (1, 1, 2)),
            group("SEV3", (2, 0, 1), None, p(45, 45), (1, 3, 1)),
        ]
    );

    let r = report(GroupBy::Service, &facts, &counts);
    assert_eq!(
        r.groups,
        [
            group("db", (1, 1, 1), p(30, 30), p(900, 900), (0, 2, 0)),
            group("mailgw", (2, 0, 1), None, p(45, 45), (1, 3, 1)),
            // a, b, g: TTA 60 120 90, TTR 600 300 1200.
            group("web", (3, 3, 3), p(90, 120), p(600, 1200), (1, 6, 5)),
        ]
    );

    let r = report(GroupBy::Integration, &facts, &counts);
    assert_eq!(
        r.groups,
        [
            group("", (1, 0, 0), None, None, (0, 2, 0)),
            group("am", (3, 3, 3), p(90, 120), p(600, 1200), (1, 6, 5)),
            // c, d: TTR 900 45 → p50 the 1st (45), p90 the 2nd (900).
            group("pd", (2, 1, 2), p(30, 30), p(45, 900), (1, 3, 1)),
        ]
    );
}
