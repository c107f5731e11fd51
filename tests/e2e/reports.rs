//! Reports over the running stack: incidents acknowledged and resolved by a person, one a
//! runbook resolves alone, alerts a silence kept quiet; GetReport and GetSilencedCounts answer
//! the figures the incidents' own records give, bad windows and groupings are refused naming
//! the field, and /metrics carries the response-time histograms.

use std::time::Duration;

use firebreak_proto::v1;
use tonic::Code;

use crate::harness::{Stack, eventually};

const AUTOFIX_YAML: &str = "
name: autofix
description: resolves reported phishing at once (a stand-in for quarantining the mail)
match:
  categories: [phishing]
capabilities: [incident.resolve]
";

const AUTOFIX_RHAI: &str = r#"
fn run(incident, params) {
    incident::resolve("quarantined");
}
"#;

fn alert(
    title: &str,
    category: &str,
    severity: v1::Severity,
    service: &str,
) -> v1::RaiseIncidentRequest {
    v1::RaiseIncidentRequest {
        alert: Some(v1::AlertInput {
            title: title.into(),
            category: category.into(),
            severity: severity as i32,
            labels: [("service".to_owned(), service.to_owned())].into(),
            source: "e2e".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `later - earlier` on the wire, as the report states durations.
fn between(
    earlier: &Option<prost_types::Timestamp>,
    later: &Option<prost_types::Timestamp>,
) -> prost_types::Duration {
    let (e, l) = (earlier.unwrap(), later.unwrap());
    let micros = (l.seconds - e.seconds) * 1_000_000 + i64::from(l.nanos - e.nanos) / 1_000;
    firebreak_proto::duration(Duration::from_micros(u64::try_from(micros).unwrap()))
}

fn percentiles(
    p50: prost_types::Duration,
    p90: prost_types::Duration,
) -> Option<v1::DurationPercentiles> {
    Some(v1::DurationPercentiles {
        p50: Some(p50),
        p90: Some(p90),
    })
}

#[tokio::test]
async fn reports_state_what_the_incidents_records_say_per_group() {
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(runbooks.path().join("autofix.yaml"), AUTOFIX_YAML).unwrap();
    std::fs::write(runbooks.path().join("autofix.rhai"), AUTOFIX_RHAI).unwrap();
    let s = Stack::start(runbooks.path(), "").await;
    let alice = s.person("alice", v1::Role::Responder).await;
    let mut intake = s.intake.clone();

    // A silence of the batch service, from an hour ago for two days (the clock moves on by
    // minutes only).
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let body = serde_json::json!({
        "matchers": [{ "name": "service", "value": "batch", "isRegex": false }],
        "startsAt": rfc(now - time::Duration::hours(1)),
        "endsAt": rfc(now + time::Duration::days(2)),
        "createdBy": "e2e", "comment": "nightly batch maintenance",
    });
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/silences", s.http))
        .bearer_auth(&s.admin_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for n in 0..2 {
        let r = intake
            .raise_incident(alert(
                &format!("batch job {n} failed"),
                "malware",
                v1::Severity::Sev2,
                "batch",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !r.silenced_by.is_empty() && r.incident_id.is_empty(),
            "{r:?}"
        );
    }

    // Two malware incidents (the first with a second alert), acknowledged and one resolved
    // by a person; a phishing one the runbook resolves alone.
    let raise = |title: &str| alert(title, "malware", v1::Severity::Sev1, "web");
    let m1 = intake
        .raise_incident(raise("malware on web-1"))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let again = intake
        .raise_incident(raise("malware on web-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.incident_id.as_str(), again.deduplicated),
        (m1.as_str(), true)
    );
    let m2 = intake
        .raise_incident(raise("malware on web-2"))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    s.clock.advance(Duration::from_secs(60));
    let mut incidents = alice.incidents.clone();
    incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: m1.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(240));
    incidents
        .resolve(v1::ResolveRequest {
            id: m1.clone(),
            summary: "cleaned".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.clock.advance(Duration::from_secs(120));
    incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: m2.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let p1 = intake
        .raise_incident(alert(
            "phishing email reported",
            "phishing",
            v1::Severity::Sev3,
            "mail",
        ))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let get = |id: String| {
        let mut incidents = s.incidents.clone();
        async move {
            incidents
                .get_incident(v1::GetIncidentRequest { id })
                .await
                .unwrap()
                .into_inner()
                .incident
                .unwrap()
        }
    };
    let p1 = eventually("the runbook resolves the phishing incident", || async {
        let i = get(p1.clone()).await;
        (i.state() == v1::IncidentState::Resolved).then_some(i)
    })
    .await;
    let (m1, m2) = (get(m1).await, get(m2).await);

    let mut report = s.incidents.clone();
    let r = report
        .get_report(v1::GetReportRequest {
            since: "30d".into(),
            group_by: v1::ReportGrouping::Category as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.group_by(), v1::ReportGrouping::Category);
    assert!(!r.truncated);
    let (tta1, tta2) = (
        between(&m1.opened_at, &m1.acknowledged_at),
        between(&m2.opened_at, &m2.acknowledged_at),
    );
    assert!(
        tta1.seconds >= 60 && tta2.seconds >= 420,
        "{tta1:?} {tta2:?}"
    );
    let ttr1 = between(&m1.opened_at, &m1.resolved_at);
    let ttr_p = between(&p1.opened_at, &p1.resolved_at);
    assert_eq!(
        r.groups,
        [
            v1::ReportGroup {
                key: "malware".into(),
                incidents: 2,
                acknowledged: 2,
                resolved: 1,
                // Two values: p50 is the 1st (nearest rank), p90 the 2nd.
                time_to_acknowledge: percentiles(tta1, tta2),
                time_to_resolve: percentiles(ttr1, ttr1),
                auto_remediated: 0,
                alerts: 3,
                silenced: 0,
            },
            v1::ReportGroup {
                key: "phishing".into(),
                incidents: 1,
                acknowledged: 0,
                resolved: 1,
                time_to_acknowledge: None,
                time_to_resolve: percentiles(ttr_p, ttr_p),
                auto_remediated: 1,
                alerts: 1,
                silenced: 0,
            },
        ]
    );
    let total = r.total.clone().unwrap();
    assert_eq!(
        (
            total.incidents,
            total.resolved,
            total.auto_remediated,
            total.alerts
        ),
        (3, 2, 1, 4)
    );

    // Intake's silenced alerts, from the window's start triage answered with.
    let mut integrations = s.integrations();
    let silenced = integrations
        .get_silenced_counts(v1::GetSilencedCountsRequest {
            since: r.since,
            group_by: v1::ReportGrouping::Category as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    assert_eq!(
        silenced,
        [v1::SilencedGroupCount {
            key: "malware".into(),
            count: 2
        }]
    );
    let by_service = integrations
        .get_silenced_counts(v1::GetSilencedCountsRequest {
            since: r.since,
            group_by: v1::ReportGrouping::Service as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    assert_eq!(
        by_service,
        [v1::SilencedGroupCount {
            key: "batch".into(),
            count: 2
        }]
    );
    let by_severity = report
        .get_report(v1::GetReportRequest {
            since: "2w".into(),
            group_by: v1::ReportGrouping::Severity as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<(&str, u64)> = by_severity
        .groups
        .iter()
        .map(|g| (g.key.as_str(), g.incidents))
        .collect();
    assert_eq!(keys, [("SEV1", 2), ("SEV3", 1)]);

    // Bad input is refused naming the field.
    let category = v1::ReportGrouping::Category as i32;
    for (since, by, field) in [
        ("yesterday", category, "invalid since"),
        ("30", category, "invalid since"),
        ("400d", category, "invalid since"),
        (&*"9".repeat(100_000), category, "invalid since"),
        // Groupings no value has.
        ("30d", 99, "invalid group_by"),
        ("30d", i32::MAX, "invalid group_by"),
        ("30d", -1, "invalid group_by"),
    ] {
        let e = report
            .get_report(v1::GetReportRequest {
                since: since.into(),
                group_by: by,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().starts_with(field) && e.message().len() < 200,
            "{}",
            e.message()
        );
    }
    let e = integrations
        .get_silenced_counts(v1::GetSilencedCountsRequest {
            since: None,
            group_by: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("since"), "{}", e.message());
    let e = integrations
        .get_silenced_counts(v1::GetSilencedCountsRequest {
            since: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            group_by: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("since"), "{}", e.message());

    // The histograms, in Prometheus' text format (the process's metrics are shared by the
    // tests of this binary, so only their shape and a lower bound are checked here).
    let metrics = reqwest::get(format!("{}/metrics", s.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["time_to_acknowledge", "time_to_resolve"] {
        let family = format!("firebreak_incident_{name}_seconds");
        assert!(
            metrics.contains(&format!("# TYPE {family} histogram")),
            "{metrics}"
        );
        let labels = "severity=\"1\",category=\"malware\"";
        assert!(
            metrics.contains(&format!("{family}_bucket{{le=\"+Inf\",{labels}}}")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("{family}_sum{{{labels}}} ")),
            "{metrics}"
        );
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_count{{{labels}}} ")))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(count >= 1, "{family}: {metrics}");
    }
}
