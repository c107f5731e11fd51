//! `/metrics` as scrapers and tools read it: the Prometheus text format by default, which the
//! real `promtool check metrics` (Debian's `prometheus` package) passes after an incident's
//! whole path, with the process's own metrics and the build's, and OpenMetrics for a scraper
//! that asks for it.

use std::io::Write;
use std::process::{Command, Stdio};

use firebreak_proto::v1;

use crate::harness::{Stack, empty_runbooks};

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

#[tokio::test(flavor = "multi_thread")]
async fn promtool_passes_the_metrics_after_an_incidents_path_and_openmetrics_is_served_on_request()
{
    let mut s = Stack::start(&empty_runbooks(), "").await;
    let id = s.raise("checkout latency above SLO").await;
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

    let (kind, text) = scrape(&s, None).await;
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    for family in [
        "# TYPE firebreak_alerts_accepted_total counter",
        "# TYPE firebreak_incidents_opened_total counter",
        "# TYPE firebreak_incident_time_to_resolve_seconds histogram",
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
    assert!(
        text.contains("firebreak_incident_time_to_resolve_seconds_count{"),
        "the resolve was observed:\n{text}"
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
    assert!(
        open.contains("# TYPE firebreak_alerts_accepted counter"),
        "{open}"
    );
    let (passed, said) = promtool_check(&open);
    assert!(!passed, "promtool took the OpenMetrics form: {said}");
}
