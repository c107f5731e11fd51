//! `/metrics` per process in distributed mode: each `firebreak serve` process exports the
//! families of the service it runs and the ones every process has (build, process,
//! dependencies, server requests), never another service's, not even as zeros; its gauges
//! are its own (triage's open incidents, orchestration's waiting runs, each process's bus
//! consumers); and `promtool check metrics` passes each page.

use std::io::Write;
use std::process::{Command, Stdio};

use firebreak_proto::v1;

use crate::harness::{self, Deployment, Recorder, eventually};

/// Whether `promtool check metrics` passes `text`, and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; tests/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The families each service's process, and only it, exports.
const OWN: [(&str, &[&str]); 4] = [
    (
        "intake",
        &[
            "firebreak_alerts_accepted_total",
            "firebreak_intake_overloaded_total",
            "firebreak_intake_ack_seconds",
        ],
    ),
    (
        "triage",
        &[
            "firebreak_incidents_opened_total",
            "firebreak_alerts_deduplicated_total",
            "firebreak_incident_time_to_acknowledge_seconds",
            "firebreak_incident_time_to_resolve_seconds",
            "firebreak_alert_to_incident_seconds",
            "firebreak_incidents_open",
        ],
    ),
    (
        "orchestration",
        &[
            "firebreak_runs_finished_total",
            "firebreak_runbook_run_duration_seconds",
            "firebreak_runbook_step_duration_seconds",
            "firebreak_approvals_pending",
            "firebreak_runs_sleeping",
        ],
    ),
    (
        "notification",
        &[
            "firebreak_deliveries_total",
            "firebreak_delivery_latency_seconds",
        ],
    ),
];

/// Every process's families.
const COMMON: [&str; 7] = [
    "firebreak_build_info",
    "firebreak_dependency_up",
    "firebreak_auth_failures_total",
    "firebreak_grpc_server_requests_total",
    "firebreak_grpc_server_request_duration_seconds",
    "firebreak_http_server_requests_total",
    "process_resident_memory_bytes",
];

/// The bus consumers each process runs, as `stream/consumer`.
const CONSUMERS: [(&str, &[&str]); 4] = [
    ("intake", &[]),
    (
        "triage",
        &["alerts/triage", "notifications/triage", "runbooks/triage"],
    ),
    ("orchestration", &["incidents/orchestration"]),
    (
        "notification",
        &["incidents/notification", "runbooks/notification"],
    ),
];

/// The families declared in `page` (`# TYPE` lines).
fn families(page: &str) -> Vec<&str> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

/// The sum of the samples of `series` (a name, or a name and the start of its labels).
fn sum(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `stream/consumer` pairs of the bus backlog samples on `page`.
fn consumers(page: &str) -> Vec<String> {
    let mut found: Vec<String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("firebreak_bus_backlog{stream=\""))
        .filter_map(|l| {
            let (stream, rest) = l.split_once("\",consumer=\"")?;
            let (consumer, _) = rest.split_once('"')?;
            Some(format!("{stream}/{consumer}"))
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_process_exports_its_own_services_families_and_gauges() {
    let target = Recorder::start().await;
    let (runbooks, extra) = crate::setup(&target);
    let mut d = Deployment::new(runbooks.path(), &extra).await;
    d.start_all();
    let raised = d
        .intake()
        .await
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: "checkout service down".into(),
                labels: [("service".to_owned(), "checkout".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = raised.incident_id;
    assert!(!id.is_empty());
    eventually("the runbook's webhook delivery", 60, || {
        let ok = target
            .on("/hook")
            .iter()
            .any(|r| r.body["incident"]["id"] == id.as_str());
        async move { ok.then_some(()) }
    })
    .await;
    let page_of = |p: &str| format!("{}/metrics", d.http(p));
    // The open incident and its run are counted where they live.
    eventually("the run to finish and be counted", 60, || {
        let url = page_of("orchestration-1");
        async move {
            let page = harness::get(&url).await;
            (sum(&page, "firebreak_runbook_run_duration_seconds_count") >= 1.0).then_some(())
        }
    })
    .await;
    let triage = harness::get(&page_of("triage-1")).await;
    assert_eq!(
        sum(
            &triage,
            "firebreak_incidents_open{severity=\"1\",state=\"open\""
        ),
        1.0,
        "{triage}"
    );
    d.cli(&["incident", "ack", &id]);

    for (service, own) in OWN {
        let name = format!("{service}-1");
        let page = harness::get(&page_of(&name)).await;
        let declared = families(&page);
        for family in own.iter().chain(COMMON.iter()) {
            assert!(declared.contains(family), "{name} lacks {family}:\n{page}");
        }
        for (other, theirs) in OWN {
            if other == service {
                continue;
            }
            for family in theirs {
                assert!(
                    !declared.contains(family),
                    "{name} exports {other}'s {family}:\n{page}"
                );
            }
        }
        let wanted: Vec<String> = CONSUMERS
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, c)| c.iter().map(|c| (*c).to_owned()).collect())
            .unwrap();
        assert_eq!(consumers(&page), wanted, "{name}'s consumers:\n{page}");
        assert_eq!(
            declared.contains(&"firebreak_bus_parked"),
            !wanted.is_empty(),
            "{name}:\n{page}"
        );
        let (passed, said) = promtool_check(&page);
        assert!(passed && said.trim().is_empty(), "{name}: {said}\n{page}");
    }

    // What each process counted of this path.
    let page = |p: &str| {
        let url = page_of(p);
        async move { harness::get(&url).await }
    };
    let intake = page("intake-1").await;
    assert!(
        sum(
            &intake,
            "firebreak_intake_ack_seconds_count{transport=\"grpc\",outcome=\"accepted\""
        ) >= 1.0,
        "{intake}"
    );
    assert!(
        sum(
            &intake,
            "firebreak_grpc_server_requests_total{service=\"firebreak.v1.IntakeService\",method=\"RaiseIncident\",code=\"OK\""
        ) >= 1.0,
        "{intake}"
    );
    let triage = page("triage-1").await;
    assert!(
        sum(
            &triage,
            "firebreak_alert_to_incident_seconds_count{outcome=\"opened\""
        ) >= 1.0,
        "{triage}"
    );
    assert!(
        sum(
            &triage,
            "firebreak_incident_time_to_acknowledge_seconds_count"
        ) >= 1.0,
        "{triage}"
    );
    // Internal methods are methods the server has: labelled by name, not `other`.
    assert!(
        sum(
            &triage,
            "firebreak_grpc_server_requests_total{service=\"firebreak.internal.v1.TriageIngestService\",method=\"IngestAlert\",code=\"OK\""
        ) >= 1.0,
        "{triage}"
    );
    assert_eq!(
        sum(
            &triage,
            "firebreak_grpc_server_requests_total{service=\"other\""
        ),
        0.0,
        "{triage}"
    );
    // Gauges are read at most once a second: the acknowledgement shows at the next read.
    eventually("the acknowledged incident in triage's gauge", 10, || {
        let url = page_of("triage-1");
        async move {
            let page = harness::get(&url).await;
            (sum(
                &page,
                "firebreak_incidents_open{severity=\"1\",state=\"acknowledged\"",
            ) == 1.0
                && sum(
                    &page,
                    "firebreak_incidents_open{severity=\"1\",state=\"open\"",
                ) == 0.0)
                .then_some(())
        }
    })
    .await;
    let orchestration = page("orchestration-1").await;
    assert!(
        sum(
            &orchestration,
            "firebreak_runbook_step_duration_seconds_count{action=\"http.post\",outcome=\"done\""
        ) >= 1.0,
        "{orchestration}"
    );
    assert_eq!(sum(&orchestration, "firebreak_approvals_pending"), 0.0);
    let notification = page("notification-1").await;
    assert!(
        sum(
            &notification,
            "firebreak_delivery_latency_seconds_count{kind=\"webhook\""
        ) >= 1.0,
        "{notification}"
    );
}
