//! The whole incident path: raise → categorize → prioritize → runbook → notify → acknowledge
//! → resolve → review → close, plus dedup and bad input.

use std::collections::HashMap;

use firebreak_proto::v1::{self, AlertInput};
use tonic::Code;

use crate::harness::{Recorder, Stack, eventually};

const RUNBOOK_YAML: &str = "
name: restart-service
description: restart the failing service, then tell the on-call channel
match:
  categories: [service-outage]
  severity: { min: 1, max: 2 }
parameters:
  deploy_url:
    description: the deploy API
    default: http://deploy.invalid
capabilities: [http.post, incident.note, notify.send]
";

const RUNBOOK_RHAI: &str = r#"
// Restart the service named by the incident's labels.
fn run(incident, params) {
    let r = http::post(params.deploy_url + "/restart", #{ service: incident.labels.service });
    incident::note(`restart requested: HTTP ${r.status}`);
    notify::send("ops", `restarted ${incident.labels.service}`);
}
"#;

fn alert(title: &str, labels: &[(&str, &str)]) -> v1::RaiseIncidentRequest {
    v1::RaiseIncidentRequest {
        alert: Some(AlertInput {
            title: title.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect::<HashMap<_, _>>(),
            source: "e2e".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_whole_incident_path() {
    let target = Recorder::start().await;
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(runbooks.path().join("restart-service.yaml"), RUNBOOK_YAML).unwrap();
    std::fs::write(runbooks.path().join("restart-service.rhai"), RUNBOOK_RHAI).unwrap();
    let config = format!(
        "live: true\nchannels:\n  - name: ops\n    kind: webhook\n    url: {}/hook\nrunbook_params:\n  restart-service:\n    deploy_url: {}\n",
        target.url, target.url
    );
    let mut s = Stack::start(runbooks.path(), &config).await;
    // Alice commands the incident with her own token.
    let mut alice = s.person("alice", v1::Role::IncidentCommander).await;

    // Identify + log: the incident exists when the caller gets OK.
    let raised = s
        .intake
        .raise_incident(alert("checkout service down", &[("service", "checkout")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!raised.deduplicated);
    let id = raised.incident_id.clone();
    let inc = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    // Categorize + prioritize: "down" → service-outage, SEV1 by the category, P1.
    assert_eq!(inc.category, "service-outage");
    assert_eq!((inc.severity, inc.priority), (1, 1));
    assert_eq!((inc.state(), inc.alert_count), (v1::IncidentState::Open, 1));

    // Respond: the matching runbook ran to the end, every action journaled, live.
    let run = eventually("the runbook run to succeed", || {
        let mut runs = s.runs.clone();
        let id = id.clone();
        async move {
            let r = runs
                .list_runs(v1::ListRunsRequest {
                    incident_id: id,
                    page_size: 0,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            r.runs
                .into_iter()
                .find(|r| r.state() == v1::RunState::Succeeded)
        }
    })
    .await;
    assert_eq!(run.runbook, "restart-service");
    assert!(run.live);
    let actions: Vec<(&str, v1::StepStatus)> = run
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.status()))
        .collect();
    assert_eq!(
        actions,
        [
            ("http.post", v1::StepStatus::Done),
            ("incident.note", v1::StepStatus::Done),
            ("notify.send", v1::StepStatus::Done)
        ]
    );
    // The target saw the action once, with the run's stable idempotency key.
    let restarts = target.on("/restart");
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0].idempotency_key, format!("{}:1", run.id));
    assert_eq!(restarts[0].body["service"], "checkout");

    // Notify: the webhook got the opened incident and the runbook's message.
    let hooks = eventually("two webhook deliveries", || {
        let got = target.on("/hook");
        let kinds: Vec<String> = got
            .iter()
            .map(|r| r.body["kind"].as_str().unwrap_or("").to_owned())
            .collect();
        let done = (kinds.contains(&"incident.opened".to_owned())
            && kinds.contains(&"runbook.message".to_owned()))
        .then_some(got);
        async move { done }
    })
    .await;
    let opened = hooks
        .iter()
        .find(|r| r.body["kind"] == "incident.opened")
        .unwrap();
    assert_eq!(opened.body["incident"]["id"], id.as_str());
    // The payload's shape channels rely on: the state by name, severity and priority as
    // levels (not the wire's enum values or names).
    assert_eq!(opened.body["incident"]["state"], "open");
    for level in ["severity", "priority"] {
        let n = opened.body["incident"][level].as_u64();
        assert!(n.is_some_and(|n| (1..=5).contains(&n)), "{level}: {n:?}");
    }
    let message = hooks
        .iter()
        .find(|r| r.body["kind"] == "runbook.message")
        .unwrap();
    assert_eq!(message.body["message"], "restarted checkout");

    // Dedup: the same signal joins the open incident.
    let again = s
        .intake
        .raise_incident(alert("checkout service down", &[("service", "checkout")]))
        .await
        .unwrap()
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.incident_id, id);
    assert_ne!(again.alert_id, raised.alert_id);

    // Bad input: a clear error naming the field, and nothing stored.
    let before = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .incidents
        .len();
    let bad = [
        (alert("  ", &[]), "title"),
        (
            v1::RaiseIncidentRequest {
                alert: Some(AlertInput {
                    title: "x".into(),
                    severity: 9,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "severity",
        ),
        (alert("x", &[("9bad", "v")]), "labels"),
        (alert("nul \0 inside", &[]), "title"),
        (
            v1::RaiseIncidentRequest {
                alert: Some(AlertInput {
                    title: "x".into(),
                    category: "nope".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "category",
        ),
        (
            v1::RaiseIncidentRequest {
                alert: None,
                ..Default::default()
            },
            "alert",
        ),
    ];
    for (req, field) in bad {
        let err = s.intake.raise_incident(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let after = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .incidents
        .len();
    assert_eq!(before, after);
    let err = s
        .incidents
        .get_incident(v1::GetIncidentRequest {
            id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let unknown = firebreak_domain_free_id();
    let err = s
        .incidents
        .get_incident(v1::GetIncidentRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = s
        .incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: unknown,
            actor: "sre".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = s
        .incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            actor: "sre".into(),
            root_cause: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "close before resolve");
    let err = s
        .incidents
        .get_review(v1::GetReviewRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "review before resolve"
    );

    // Close: acknowledge, resolve (review drafted), close with a root cause.
    let acked = alice
        .incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(acked.state(), v1::IncidentState::Acknowledged);
    assert!(acked.acknowledged_at.is_some());
    let err = alice
        .incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "acknowledging twice");
    let resolved = alice
        .incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            actor: "alice".into(),
            summary: "restarted checkout".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(resolved.state(), v1::IncidentState::Resolved);
    let review = s
        .incidents
        .get_review(v1::GetReviewRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .markdown;
    for want in [
        "# Post-incident review: checkout service down",
        "Time to acknowledge:",
        "Time to resolve:",
        "Resolution: restarted checkout",
        "### restart-service (succeeded, live)",
        "`http.post`",
        "## Root cause",
    ] {
        assert!(review.contains(want), "review lacks {want:?}:\n{review}");
    }
    let err = alice
        .incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            actor: "alice".into(),
            root_cause: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("root_cause"));
    let closed = alice
        .incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            actor: "alice".into(),
            root_cause: "a bad deploy".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(
        (closed.state(), closed.root_cause.as_str()),
        (v1::IncidentState::Closed, "a bad deploy")
    );
    let review = s
        .incidents
        .get_review(v1::GetReviewRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .markdown;
    assert!(review.contains("a bad deploy"));

    // Every step is on the timeline, in order.
    let timeline = eventually("the runbook note on the timeline", || {
        let mut incidents = s.incidents.clone();
        let id = id.clone();
        async move {
            let t = incidents
                .get_timeline(v1::GetTimelineRequest {
                    id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .entries;
            t.iter().any(|e| e.kind == "note").then_some(t)
        }
    })
    .await;
    let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
    let order = [
        "opened",
        "categorized",
        "prioritized",
        "runbook_started",
        "alert_attached",
        "acknowledged",
        "resolved",
        "review_drafted",
        "closed",
    ];
    let mut at = 0;
    for want in order {
        let pos = kinds[at..]
            .iter()
            .position(|k| *k == want)
            .unwrap_or_else(|| panic!("{want} missing after position {at} in {kinds:?}"));
        at += pos + 1;
    }
    for kind in [
        "runbook_action",
        "runbook_succeeded",
        "note",
        "notification",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing in {kinds:?}");
    }
    let ack = timeline.iter().find(|e| e.kind == "acknowledged").unwrap();
    assert_eq!(ack.actor, "user:alice");

    // Health and metrics on the HTTP port.
    let metrics = http_get(&format!("{}/metrics", s.http)).await;
    assert!(
        metrics.contains("firebreak_incidents_opened_total"),
        "{metrics}"
    );
    assert_eq!(http_get(&format!("{}/healthz", s.http)).await, "ok\n");
    drop(
        s.notifications
            .list_deliveries(v1::ListDeliveriesRequest::default())
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn dry_run_records_without_acting() {
    let target = Recorder::start().await;
    let runbooks = tempfile::tempdir().unwrap();
    std::fs::write(runbooks.path().join("restart-service.yaml"), RUNBOOK_YAML).unwrap();
    std::fs::write(runbooks.path().join("restart-service.rhai"), RUNBOOK_RHAI).unwrap();
    let config = format!(
        "channels:\n  - name: ops\n    kind: webhook\n    url: {}/hook\nrunbook_params:\n  restart-service:\n    deploy_url: {}\n",
        target.url, target.url
    );
    let mut s = Stack::start(runbooks.path(), &config).await;
    let id = s
        .intake
        .raise_incident(alert("api down", &[("service", "api")]))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let run = eventually("the dry run to finish", || {
        let mut runs = s.runs.clone();
        let id = id.clone();
        async move {
            let r = runs
                .list_runs(v1::ListRunsRequest {
                    incident_id: id,
                    page_size: 0,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            r.runs
                .into_iter()
                .find(|r| r.state() == v1::RunState::Succeeded)
        }
    })
    .await;
    assert!(!run.live);
    assert_eq!(run.actions[0].status(), v1::StepStatus::Simulated);
    assert!(
        target.on("/restart").is_empty(),
        "a dry run must not call the target"
    );
    let _ = s
        .runs
        .get_run(v1::GetRunRequest {
            id: run.id,
            ..Default::default()
        })
        .await
        .unwrap();
}

fn firebreak_domain_free_id() -> String {
    // A syntactically valid id that no incident has.
    "01a2215d-0000-7000-8000-000000000000".into()
}

async fn http_get(url: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let (host, path) = addr.split_once('/').unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.unwrap();
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
