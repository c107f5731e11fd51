//! `/metrics` as scrapers and tools read it: the Prometheus text format by default, which the
//! real `promtool check metrics` (Debian's `prometheus` package) passes after an incident's
//! whole path, with the process's own metrics and the build's, and OpenMetrics for a scraper
//! that asks for it. Every family Firebreak documents is there after the path, with values
//! the path explains: intake's acknowledgements by transport, alert to incident, runbook steps
//! and runs, deliveries, response times, the gauges of open incidents, waiting and sleeping
//! runs and the bus's consumers, and the servers' requests by method and route (never a
//! webhook's key).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use firebreak_proto::v1;

use crate::harness::{Stack, eventually};

/// The Alertmanager integration's key: it is in the webhook's path, and must never be in a
/// label.
const AM_KEY: &str = "am-key-metrics-00000000000001";

/// What `promtool check metrics` says of `text`: whether it passed, and its output.
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

async fn scrape(s: &Stack, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", s.http));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (kind, resp.text().await.unwrap())
}

/// The value of the sample `series` (its name and labels exactly as rendered) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// The value of `series`, which must be there.
fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The sum of the samples of gauge `family` whose labels include `labels`.
fn sum_of(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Asks before it goes on, telling the log channel first: a step of each kind, and a run
/// that waits for a person.
const ASK_RHAI: &str = r#"
// Notes, notifies, then waits for an approval.
fn run(incident, params) {
    incident::note("asking");
    notify::send("log", `asking about ${incident.id}`);
    if approval::request("contain?") {
        incident::note("approved");
    }
}
"#;

/// Sleeps for an hour: a run in a durable sleep (the stack's clock does not move).
const NAP_RHAI: &str = r#"
// Sleeps durably, then notes it.
fn run(incident, params) {
    sleep(3600);
    incident::note("woke");
}
"#;

fn runbooks() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, caps: &str, rhai: &str| {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "name: {name}\nmatch: {{ categories: [service-outage] }}\ncapabilities: [{caps}]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join(format!("{name}.rhai")), rhai).unwrap();
    };
    write("ask", "approval, incident, notify", ASK_RHAI);
    write("nap", "sleep, incident", NAP_RHAI);
    dir
}

/// POSTs an Alertmanager webhook with `key` in its path; the answer's status.
async fn alertmanager(s: &Stack, key: &str) -> u16 {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/intake/tests/data/alertmanager-firing.json"),
    )
    .unwrap();
    reqwest::Client::new()
        .post(format!("{}/v1/webhooks/alertmanager/{key}", s.http))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The runs of `incident`, by runbook, once `done` holds for them.
async fn runs_when(
    s: &Stack,
    incident: &str,
    what: &str,
    done: impl Fn(&HashMap<String, v1::Run>) -> bool,
) -> HashMap<String, v1::Run> {
    eventually(what, || {
        let mut runs = s.runs.clone();
        let incident = incident.to_owned();
        let done = &done;
        async move {
            let listed = runs
                .list_runs(v1::ListRunsRequest {
                    incident_id: incident,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .runs;
            let by_name: HashMap<String, v1::Run> =
                listed.into_iter().map(|r| (r.runbook.clone(), r)).collect();
            done(&by_name).then_some(by_name)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_passes_the_metrics_after_an_incidents_path_and_openmetrics_is_served_on_request()
{
    let dir = runbooks();
    let config =
        format!("integrations:\n  - {{ name: prom, kind: alertmanager, key: {AM_KEY} }}\n");
    let mut s = Stack::start(dir.path(), &config).await;
    let id = s
        .intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: "checkout service down".into(),
                category: "service-outage".into(),
                source: "e2e".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let runs = runs_when(&s, &id, "ask to wait and nap to sleep", |r| {
        r.get("ask")
            .is_some_and(|r| r.state() == v1::RunState::WaitingApproval)
            && r.get("nap")
                .is_some_and(|r| r.state() == v1::RunState::Sleeping)
    })
    .await;
    // The gauges are read at the scrape: one run waits for a person, one sleeps.
    let text = eventually("the gauges to show the waiting runs", || async {
        let (_, text) = scrape(&s, None).await;
        (value(&text, "firebreak_approvals_pending") == Some(1.0)
            && value(&text, "firebreak_runs_sleeping") == Some(1.0))
        .then_some(text)
    })
    .await;
    assert_eq!(
        sum_of(&text, "firebreak_incidents_open", "state=\"open\""),
        1.0,
        "{text}"
    );
    s.runs
        .approve(v1::ApproveRequest {
            run_id: runs["ask"].id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    runs_when(&s, &id, "ask to finish", |r| {
        r.get("ask")
            .is_some_and(|r| r.state() == v1::RunState::Succeeded)
    })
    .await;
    // A webhook from Alertmanager (one accepted, one with a wrong key refused).
    assert_eq!(alertmanager(&s, AM_KEY).await, 200);
    assert_eq!(alertmanager(&s, "not-the-key-000000000000").await, 401);
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            summary: "rolled back".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The webhook's two alerts open one incident (their group's) through the bus.
    eventually(
        "the approval to leave the gauge and the webhook's incident to open",
        || async {
            let (_, text) = scrape(&s, None).await;
            (value(&text, "firebreak_approvals_pending") == Some(0.0)
                && sum_of(&text, "firebreak_incidents_open", "state=\"open\"") == 1.0)
                .then_some(())
        },
    )
    .await;
    let (kind, text) = scrape(&s, None).await;
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    for family in [
        "# TYPE firebreak_alerts_accepted_total counter",
        "# TYPE firebreak_incidents_opened_total counter",
        "# TYPE firebreak_incident_time_to_acknowledge_seconds histogram",
        "# TYPE firebreak_incident_time_to_resolve_seconds histogram",
        "# TYPE firebreak_intake_ack_seconds histogram",
        "# TYPE firebreak_alert_to_incident_seconds histogram",
        "# TYPE firebreak_runbook_step_duration_seconds histogram",
        "# TYPE firebreak_runbook_run_duration_seconds histogram",
        "# TYPE firebreak_delivery_latency_seconds histogram",
        "# TYPE firebreak_incidents_open gauge",
        "# TYPE firebreak_approvals_pending gauge",
        "# TYPE firebreak_runs_sleeping gauge",
        "# TYPE firebreak_bus_backlog gauge",
        "# TYPE firebreak_bus_parked gauge",
        "# TYPE firebreak_grpc_server_requests_total counter",
        "# TYPE firebreak_grpc_server_request_duration_seconds histogram",
        "# TYPE firebreak_http_server_requests_total counter",
        "# TYPE firebreak_http_server_request_duration_seconds histogram",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        &format!(
            "firebreak_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    // Counters and histograms are the process's (other tests' stacks share it): at least
    // what this path did. Gauges are this stack's own.
    for (series, at_least) in [
        (
            "firebreak_intake_ack_seconds_count{transport=\"grpc\",outcome=\"accepted\"}",
            1.0,
        ),
        (
            "firebreak_intake_ack_seconds_count{transport=\"http\",outcome=\"accepted\"}",
            1.0,
        ),
        (
            "firebreak_intake_ack_seconds_count{transport=\"http\",outcome=\"rejected\"}",
            1.0,
        ),
        (
            "firebreak_alert_to_incident_seconds_count{outcome=\"opened\"}",
            2.0,
        ),
        (
            "firebreak_alert_to_incident_seconds_count{outcome=\"attached\"}",
            1.0,
        ),
        (
            "firebreak_runbook_step_duration_seconds_count{action=\"incident.note\",outcome=\"done\"}",
            2.0,
        ),
        (
            "firebreak_runbook_step_duration_seconds_count{action=\"notify.send\",outcome=\"done\"}",
            1.0,
        ),
        (
            "firebreak_runbook_step_duration_seconds_count{action=\"approval.request\",outcome=\"waiting\"}",
            1.0,
        ),
        (
            "firebreak_runbook_step_duration_seconds_count{action=\"sleep.for\",outcome=\"sleeping\"}",
            1.0,
        ),
        (
            "firebreak_runbook_run_duration_seconds_count{runbook=\"ask\",outcome=\"succeeded\"}",
            1.0,
        ),
        (
            "firebreak_delivery_latency_seconds_count{kind=\"log\"}",
            1.0,
        ),
        (
            "firebreak_grpc_server_requests_total{service=\"firebreak.v1.IntakeService\",method=\"RaiseIncident\",code=\"OK\"}",
            1.0,
        ),
        (
            "firebreak_grpc_server_request_duration_seconds_count{service=\"firebreak.v1.IncidentService\",method=\"Resolve\",code=\"OK\"}",
            1.0,
        ),
        (
            "firebreak_http_server_requests_total{method=\"POST\",route=\"/v1/webhooks/alertmanager/{key}\",status=\"2xx\"}",
            1.0,
        ),
        (
            "firebreak_http_server_requests_total{method=\"POST\",route=\"/v1/webhooks/alertmanager/{key}\",status=\"4xx\"}",
            1.0,
        ),
        (
            "firebreak_http_server_requests_total{method=\"GET\",route=\"/metrics\",status=\"2xx\"}",
            1.0,
        ),
    ] {
        let got = must(&text, series);
        assert!(got >= at_least, "{series} = {got}, want ≥ {at_least}");
    }
    for family in [
        "firebreak_incident_time_to_acknowledge_seconds_count",
        "firebreak_incident_time_to_resolve_seconds_count",
    ] {
        let n = sum_of(&text, family, "category=\"service-outage\"");
        assert!(n >= 1.0, "{family}: {n}");
    }
    // Gauges: the resolved incident left; the webhook's incident is open; the nap sleeps.
    assert_eq!(must(&text, "firebreak_runs_sleeping"), 1.0);
    assert_eq!(must(&text, "firebreak_approvals_pending"), 0.0);
    assert_eq!(
        sum_of(&text, "firebreak_incidents_open", "state=\"open\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("firebreak_incidents_open{"))
            .count(),
        15,
        "every severity and active state: {text}"
    );
    for consumer in [
        "stream=\"alerts\",consumer=\"triage\"",
        "stream=\"incidents\",consumer=\"orchestration\"",
        "stream=\"incidents\",consumer=\"notification\"",
        "stream=\"runbooks\",consumer=\"triage\"",
    ] {
        let backlog = must(&text, &format!("firebreak_bus_backlog{{{consumer}}}"));
        assert!(backlog >= 0.0, "{consumer}: {backlog}");
        assert_eq!(
            must(&text, &format!("firebreak_bus_parked{{{consumer}}}")),
            0.0
        );
    }
    assert!(!text.contains(AM_KEY), "the webhook's key is in\n{text}");
    assert!(
        !text.contains("not-the-key"),
        "a caller's path is in\n{text}"
    );
    let (passed, said) = promtool_check(&text);
    assert!(passed && said.trim().is_empty(), "promtool: {said}\n{text}");

    // The check can fail: the OpenMetrics form (counter families named without `_total`)
    // is what promtool's text linter refuses.
    let (kind, open) = scrape(
        &s,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(
        kind,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert_eq!(open.matches("# EOF").count(), 1, "{open}");
    assert!(
        open.contains("# TYPE firebreak_alerts_accepted counter"),
        "{open}"
    );
    assert!(
        open.contains("# TYPE firebreak_bus_backlog gauge"),
        "{open}"
    );
    let (passed, said) = promtool_check(&open);
    assert!(!passed, "promtool took the OpenMetrics form: {said}");
}
