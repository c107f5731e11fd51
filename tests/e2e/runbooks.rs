//! Runbooks in the running stack: approvals (roles, reject, timeout fallback), plan-approve,
//! Kubernetes actions against a local API server, secrets, retries, exec, hostile scripts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, Uri};
use firebreak_proto::v1::{self, AlertInput};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Recorder, Stack, eventually};

/// Writes `NAME.yaml` and `NAME.rhai` into `dir`.
fn runbook(dir: &Path, name: &str, yaml: &str, rhai: &str) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!("name: {name}\n{yaml}"),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.rhai")), rhai).unwrap();
}

/// Raises an incident of `category` and returns its id.
async fn raise(s: &mut Stack, category: &str, labels: &[(&str, &str)]) -> String {
    s.intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(AlertInput {
                title: format!("{category} test"),
                category: category.into(),
                severity: 2,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect::<HashMap<_, _>>(),
                source: "e2e".into(),
                dedup_key: format!("{category} {labels:?}"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

/// The run of `runbook` for `incident` once `done` holds for it.
async fn run_of(
    s: &Stack,
    incident: &str,
    runbook: &str,
    what: &str,
    done: impl Fn(&v1::Run) -> bool,
) -> v1::Run {
    eventually(what, || {
        let mut runs = s.runs.clone();
        let incident = incident.to_owned();
        let found = async move {
            runs.list_runs(v1::ListRunsRequest {
                incident_id: incident,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .runs
            .into_iter()
            .find(|r| r.runbook == runbook)
        };
        let done = &done;
        async move { found.await.filter(|r| done(r)) }
    })
    .await
}

async fn full_run(s: &Stack, id: &str) -> v1::Run {
    s.runs
        .clone()
        .get_run(v1::GetRunRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn timeline(s: &Stack, incident: &str) -> Vec<v1::TimelineEntry> {
    s.incidents
        .clone()
        .get_timeline(v1::GetTimelineRequest {
            id: incident.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

fn decide(run: &str, actor: &str, comment: &str) -> v1::ApproveRequest {
    v1::ApproveRequest {
        run_id: run.into(),
        actor: actor.into(),
        comment: comment.into(),
    }
}

fn decide_reject(run: &str, actor: &str, comment: &str) -> v1::RejectRequest {
    v1::RejectRequest {
        run_id: run.into(),
        actor: actor.into(),
        comment: comment.into(),
    }
}

const ASK_RHAI: &str = r#"
// Asks before acting and notes the answer.
fn run(incident, params) {
    if approval::request("restart the web tier?") {
        incident::note("approved: restarting");
    } else {
        incident::note("rejected: leaving it");
    }
}
"#;

#[tokio::test]
async fn approvals_need_the_role_and_record_who_and_why_and_time_out_to_their_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let caps = "match: { categories: [service-outage] }\ncapabilities: [approval, incident]\n";
    runbook(
        dir.path(),
        "ask",
        &format!("{caps}approval: {{ role: incident-commander }}\n"),
        ASK_RHAI,
    );
    runbook(
        dir.path(),
        "ask-timeout",
        &format!("{caps}approval: {{ timeout_seconds: 3600, on_timeout: approve }}\n"),
        ASK_RHAI,
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    // Alice commands; Bob responds: only a holder of the approval's role may decide.
    let mut alice = s.person("alice", v1::Role::IncidentCommander).await;
    let mut bob = s.person("bob", v1::Role::Responder).await;
    let id = raise(&mut s, "service-outage", &[]).await;

    let ask = run_of(&s, &id, "ask", "ask to wait", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    let pending = s
        .runs
        .list_approvals(v1::ListApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .approvals;
    let mine = pending.iter().find(|a| a.run_id == ask.id).unwrap();
    assert_eq!(mine.prompt, "restart the web tier?");
    assert_eq!(mine.role, "incident-commander");
    assert_eq!(mine.timeout_action(), v1::ApprovalTimeoutAction::Reject);

    // Pages of one approval each, oldest first, reach both waiting runs.
    run_of(&s, &id, "ask-timeout", "ask-timeout to wait", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    let (mut paged, mut page_token) = (Vec::new(), String::new());
    loop {
        let r = s
            .runs
            .list_approvals(v1::ListApprovalsRequest {
                page_size: 1,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.approvals.len(), 1);
        paged.extend(r.approvals.into_iter().map(|a| a.run_id));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    let mut oldest_first = paged.clone();
    oldest_first.sort();
    assert_eq!(paged, oldest_first);
    assert!(paged.len() == 2 && paged.contains(&ask.id), "{paged:?}");

    // Someone outside the role is refused and nothing changes.
    let denied = bob
        .runs
        .reject(decide_reject(&ask.id, "user:alice", "no"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        full_run(&s, &ask.id).await.state(),
        v1::RunState::WaitingApproval
    );
    // Bad input: an id that is not a run id.
    let bad = s
        .runs
        .approve(decide("not-a-run", "user:alice", ""))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Alice rejects; the script sees "no" and goes on.
    alice
        .runs
        .reject(decide_reject(&ask.id, "user:bob", "not during the sale"))
        .await
        .unwrap();
    let done = run_of(&s, &id, "ask", "ask to finish", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let answer = &done.actions[0];
    assert_eq!(answer.action, "approval.request");
    let result: Value = serde_json::from_str(&answer.result).unwrap();
    assert_eq!(result["approved"], false);
    assert_eq!(result["by"], "user:alice");
    assert_eq!(result["comment"], "not during the sale");
    // A second decision finds nothing waiting.
    let again = alice
        .runs
        .approve(decide(&ask.id, "user:alice", ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Nobody answers the other one: after its timeout (an hour, on the test's clock) the
    // fallback (approve) applies.
    run_of(&s, &id, "ask-timeout", "ask-timeout to wait", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    s.clock.advance(std::time::Duration::from_secs(3601));
    let timed = run_of(&s, &id, "ask-timeout", "the timeout fallback", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let result: Value = serde_json::from_str(&timed.actions[0].result).unwrap();
    assert_eq!(result["approved"], true);
    assert_eq!(result["by"], "firebreak:timeout");

    // The timeline says who decided what and why, and what the scripts did with it.
    let entries = eventually("both notes", || {
        let s = &s;
        let id = id.clone();
        async move {
            let t = timeline(s, &id).await;
            (t.iter().filter(|e| e.kind == "note").count() == 2).then_some(t)
        }
    })
    .await;
    let rejected = entries
        .iter()
        .find(|e| e.kind == "runbook_rejected")
        .expect("a rejection on the timeline");
    assert!(
        rejected.data.contains("user:alice: not during the sale"),
        "{}",
        rejected.data
    );
    assert!(
        entries
            .iter()
            .any(|e| e.kind == "runbook_approved" && e.data.contains("firebreak:timeout"))
    );
    let notes: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "note")
        .map(|e| e.data.as_str())
        .collect();
    assert!(notes.iter().any(|n| n.contains("rejected: leaving it")));
    assert!(notes.iter().any(|n| n.contains("approved: restarting")));
}

/// An approval that requires `incident-commander` is decided by the commander of the run's
/// own incident (by incident role, here a viewer otherwise), and not by a responder, nor by
/// the commander of another incident.
#[tokio::test]
async fn the_commander_of_a_runs_incident_decides_its_approval_and_no_other_commander_does() {
    let dir = tempfile::tempdir().unwrap();
    let caps = "match: { categories: [service-outage] }\ncapabilities: [approval, incident]\n";
    runbook(
        dir.path(),
        "ask",
        &format!("{caps}approval: {{ role: incident-commander }}\n"),
        ASK_RHAI,
    );
    let mut s = Stack::start(dir.path(), "auth: { sync_interval_ms: 50 }\n").await;
    let vic = s.person("vic", v1::Role::Viewer).await;
    let mut rita = s.person("rita", v1::Role::Responder).await;
    let id = raise(&mut s, "service-outage", &[]).await;
    let other = raise(&mut s, "misconfiguration", &[]).await;
    let ask = run_of(&s, &id, "ask", "ask to wait", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    let assign = |incident: &str, person: &str| v1::AssignRoleRequest {
        id: incident.into(),
        role: "commander".into(),
        person: person.into(),
    };
    // Rita commands the other incident: that does not make her this one's commander.
    s.incidents
        .assign_role(assign(&other, "rita"))
        .await
        .unwrap();
    s.incidents.assign_role(assign(&id, "vic")).await.unwrap();
    let refused = rita
        .runs
        .approve(decide(&ask.id, "", ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        full_run(&s, &ask.id).await.state(),
        v1::RunState::WaitingApproval
    );
    // Vic, a viewer, holds approvals on this incident once the role reaches the layer.
    eventually("vic's command to take effect", || {
        let (mut runs, req) = (vic.runs.clone(), decide(&ask.id, "", "go"));
        async move {
            match runs.approve(req).await {
                Ok(_) => Some(()),
                Err(e) if e.code() == Code::PermissionDenied => None,
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await;
    let done = run_of(&s, &id, "ask", "ask to finish", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let result: Value = serde_json::from_str(&done.actions[0].result).unwrap();
    assert_eq!(result["approved"], true);
    assert_eq!(result["by"], "user:vic");
}

#[tokio::test]
async fn a_plan_approve_runbook_acts_only_after_its_plan_is_approved() {
    let target = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "match: { categories: [misconfiguration] }\nmode: plan-approve\nparameters:\n  url: { default: http://unset.invalid }\ncapabilities: [http, incident]\n";
    let rhai = r#"
// Rolls back the config, then notes it.
fn run(incident, params) {
    let r = http::post(params.url + "/rollback", #{ service: incident.labels.service });
    incident::note(`rolled back: HTTP ${r.status}`);
}
"#;
    runbook(dir.path(), "rollback", yaml, rhai);
    runbook(dir.path(), "rollback-too", yaml, rhai);
    let config = format!(
        "live: true\nrunbook_params:\n  rollback: {{ url: {u} }}\n  rollback-too: {{ url: {u} }}\n",
        u = target.url
    );
    let mut s = Stack::start(dir.path(), &config).await;
    let id = raise(&mut s, "misconfiguration", &[("service", "checkout")]).await;

    let planned = run_of(&s, &id, "rollback", "the plan", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    assert_eq!(planned.phase(), v1::RunPhase::Plan);
    let plan: Value = serde_json::from_str(&planned.plan).unwrap();
    let actions: Vec<&str> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["http.post", "incident.note"]);
    assert_eq!(plan[0]["args"]["body"]["service"], "checkout");
    assert!(planned.actions.is_empty(), "planning journals nothing");
    run_of(&s, &id, "rollback-too", "the second plan", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    assert!(
        target.on("/rollback").is_empty(),
        "nothing acts before approval"
    );
    // Triage writes the plan on the timeline as it consumes the run's event: after the run
    // shows it, not necessarily at once.
    let shown = eventually("the plan on the timeline", || async {
        timeline(&s, &id)
            .await
            .into_iter()
            .find(|e| e.kind == "runbook_plan_ready")
    })
    .await;
    assert!(shown.data.contains("1. http.post"), "{}", shown.data);

    s.runs
        .approve(decide(&planned.id, "user:carol", "plan looks right"))
        .await
        .unwrap();
    s.runs
        .reject(decide_reject(
            &run_of(&s, &id, "rollback-too", "", |_| true).await.id,
            "user:carol",
            "one is enough",
        ))
        .await
        .unwrap();
    let applied = run_of(&s, &id, "rollback", "the apply", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    assert_eq!(applied.phase(), v1::RunPhase::Apply);
    assert_eq!(applied.actions.len(), 2);
    let rejected = run_of(&s, &id, "rollback-too", "the rejection", |r| {
        r.state() == v1::RunState::Rejected
    })
    .await;
    assert!(
        rejected.error.contains("one is enough"),
        "{}",
        rejected.error
    );
    assert!(rejected.actions.is_empty());
    let calls = target.on("/rollback");
    assert_eq!(calls.len(), 1, "only the approved plan acted");
    assert_eq!(calls[0].idempotency_key, format!("{}:1", applied.id));
}

/// One request the fake Kubernetes API received.
#[derive(Debug, Clone)]
struct KubeCall {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// A local server answering as the Kubernetes API does for the calls `k8s` actions make.
async fn fake_kubernetes() -> (String, Arc<Mutex<Vec<KubeCall>>>) {
    let calls: Arc<Mutex<Vec<KubeCall>>> = Arc::default();
    let sink = calls.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let path = uri.path().to_owned();
                sink.lock().unwrap().push(KubeCall {
                    method: method.to_string(),
                    path: path.clone(),
                    query: uri.query().unwrap_or_default().to_owned(),
                    content_type: headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                let object = if path.ends_with("/scale") {
                    json!({ "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": { "name": "web" }, "spec": { "replicas": 5 } })
                } else if path.contains("/nodes/") {
                    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } })
                } else if path.contains("/pods/") {
                    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name } })
                } else if path.contains("/networkpolicies/") {
                    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": { "name": name } })
                } else {
                    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name } })
                };
                (
                    [("content-type", "application/json")],
                    object.to_string(),
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test]
async fn kubernetes_actions_make_the_api_calls_kubectl_would() {
    let (api, calls) = fake_kubernetes().await;
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "k8s-all",
        "match: { categories: [service-outage] }\ncapabilities: [k8s]\n",
        r#"
// Every Kubernetes action once.
fn run(incident, params) {
    k8s::scale("prod", "deployment/web", 5);
    k8s::rollout_restart("prod", "deployment/web");
    k8s::cordon("node-1");
    k8s::uncordon("node-1");
    k8s::delete_pod("prod", "web-abc");
    let r = k8s::isolate("prod", #{ app: "web" });
    print(r.network_policy);
}
"#,
    );
    let config = format!("live: true\nkubernetes:\n  url: {api}\n");
    let mut s = Stack::start(dir.path(), &config).await;
    let id = raise(&mut s, "service-outage", &[]).await;
    let run = run_of(&s, &id, "k8s-all", "the run to end", |r| {
        matches!(r.state(), v1::RunState::Succeeded | v1::RunState::Failed)
    })
    .await;
    assert_eq!(run.state(), v1::RunState::Succeeded, "{}", run.error);
    let calls = calls.lock().unwrap().clone();
    let seen: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect();
    let policy = full_run(&s, &run.id).await.log[0].clone();
    assert!(policy.starts_with("firebreak-isolate-"), "{policy}");
    let want = [
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web/scale".to_owned(),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web".to_owned(),
        ),
        ("PATCH", "/api/v1/nodes/node-1".to_owned()),
        ("PATCH", "/api/v1/nodes/node-1".to_owned()),
        ("DELETE", "/api/v1/namespaces/prod/pods/web-abc".to_owned()),
        (
            "PATCH",
            format!("/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/{policy}"),
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(m, p)| ((*m).to_owned(), p.clone()))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(calls[0].content_type, "application/merge-patch+json");
    assert_eq!(calls[0].body, json!({ "spec": { "replicas": 5 } }));
    assert!(
        calls[1].body["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{}",
        calls[1].body
    );
    assert_eq!(calls[2].body, json!({ "spec": { "unschedulable": true } }));
    assert_eq!(calls[3].body, json!({ "spec": { "unschedulable": false } }));
    let np = &calls[5];
    assert_eq!(np.content_type, "application/apply-patch+yaml");
    assert!(np.query.contains("fieldManager=firebreak"), "{}", np.query);
    assert!(np.query.contains("force=true"), "{}", np.query);
    assert_eq!(
        np.body["spec"]["podSelector"]["matchLabels"],
        json!({ "app": "web" })
    );
    assert_eq!(np.body["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(np.body["spec"].get("ingress").is_none());
}

/// A server that fails twice with 503, then echoes the request's headers.
async fn flaky_echo() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let sink = sink.clone();
        async move {
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut seen = sink.lock().unwrap();
            seen.push((header("idempotency-key"), header("authorization")));
            let tries = seen.len();
            let status = if uri.path() == "/flaky" && tries <= 2 {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            };
            (
                status,
                json!({ "you_sent": header("authorization") }).to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

const TOKEN: &str = "tok-3xf1l7r4t3-me";

#[tokio::test]
async fn secrets_reach_requests_only_and_retries_keep_one_idempotency_key() {
    let (url, seen) = flaky_echo().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("api-token"), format!("{TOKEN}\n")).unwrap();
    runbook(
        dir.path(),
        "uses-secret",
        "match: { categories: [data-breach] }\nparameters:\n  url: { default: http://unset.invalid }\ncapabilities: [http, incident]\nsecrets: [{ name: api-token, hosts: [127.0.0.1] }]\nretry: { http: { attempts: 3, backoff_ms: 10 } }\n",
        r#"
// Calls a flaky API with a secret, then tries every way to leak the secret.
fn run(incident, params) {
    let token = secret("api-token");
    let r = http::request(#{ method: "POST", url: params.url + "/flaky", headers: #{ Authorization: "Bearer " + token } });
    print(`token ${token}, answer ${r.body.you_sent}`);
    incident::note(`status ${r.status}, token ${token}, echoed ${r.body.you_sent}`);
    throw `giving up with ${token} and ${r.body.you_sent}`;
}
"#,
    );
    let config = format!(
        "live: true\nsecrets_dir: {}\nrunbook_params:\n  uses-secret: {{ url: {url} }}\n",
        secrets.path().display()
    );
    let mut s = Stack::start(dir.path(), &config).await;
    let id = raise(&mut s, "data-breach", &[]).await;
    let run = run_of(&s, &id, "uses-secret", "the run to fail", |r| {
        r.state() == v1::RunState::Failed
    })
    .await;
    let run = full_run(&s, &run.id).await;

    // The target got the value, three times (two 503s, then 200), with one idempotency key.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(
            |(key, auth)| *key == format!("{}:1", run.id) && *auth == format!("Bearer {TOKEN}")
        )
    );
    let http = &run.actions[0];
    assert_eq!(http.status(), v1::StepStatus::Done);
    let result: Value = serde_json::from_str(&http.result).unwrap();
    assert_eq!(result["status"], 200);

    // Nothing the run recorded holds the value: not the journal, the log, the error, or the
    // incident's timeline.
    let entries = eventually("the note", || {
        let s = &s;
        let id = id.clone();
        async move {
            let t = timeline(s, &id).await;
            t.iter().any(|e| e.kind == "note").then_some(t)
        }
    })
    .await;
    let recorded = format!(
        "{:?} {:?} {} {:?}",
        run.actions, run.log, run.error, entries
    );
    assert!(!recorded.contains(TOKEN), "the secret leaked: {recorded}");
    assert!(recorded.contains("{{secret:api-token}}"));
    assert!(recorded.contains("[redacted]"));
    assert!(run.error.contains("giving up"), "{}", run.error);
}

#[tokio::test]
async fn exec_runs_only_allowlisted_commands_within_limits() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "shell",
        "match: { categories: [malware] }\ncapabilities: [exec, incident]\n",
        r#"
// An allowed command, a slow one and one not on the list.
fn run(incident, params) {
    let r = exec::run("/bin/echo", ["contained", incident.labels.host]);
    incident::note(`echo said ${r.stdout.trim()}`);
    let slow = "";
    try { exec::run("/bin/sleep", ["5"]); } catch (e) { slow = e; }
    incident::note(`sleep: ${slow}`);
    exec::run("/bin/sh", ["-c", "echo pwned"]);
}
"#,
    );
    let config = "live: true\nexec:\n  allow: [/bin/echo, /bin/sleep]\n  timeout_seconds: 1\n";
    let mut s = Stack::start(dir.path(), config).await;
    let id = raise(&mut s, "malware", &[("host", "web-7")]).await;
    let run = run_of(&s, &id, "shell", "the run to end", |r| {
        matches!(r.state(), v1::RunState::Succeeded | v1::RunState::Failed)
    })
    .await;
    assert_eq!(run.state(), v1::RunState::Failed);
    assert!(
        run.error.contains("\"/bin/sh\" is not allowed"),
        "{}",
        run.error
    );
    let echo: Value = serde_json::from_str(&run.actions[0].result).unwrap();
    assert_eq!(echo["stdout"], "contained web-7\n");
    assert_eq!(echo["status"], 0);
    assert_eq!(run.actions[2].status(), v1::StepStatus::Failed);
    assert!(
        run.actions[2].result.contains("ran longer than 1s"),
        "{}",
        run.actions[2].result
    );
}

/// Scripts that break each limit, and one that behaves, all for the same incident.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("loop", "loop { }", "operation limit exceeded"),
    (
        "recursion",
        "fn f(x) { f(x + 1) }\n",
        "call depth limit exceeded",
    ),
    (
        "strings",
        "let s = \"xxxxxxxx\"; loop { s += s; }",
        "size limit exceeded",
    ),
    (
        "arrays",
        "let a = []; loop { a.push(1); }",
        "size limit exceeded",
    ),
    (
        "maps",
        "let s = \"x\"; for j in 0..15 { s += s; } let m = #{}; let i = 0; loop { m[`k${i}`] = s + i; i += 1; }",
        "memory limit exceeded",
    ),
    (
        "capability",
        "http::post(\"http://127.0.0.1:9/x\", #{});",
        "capability denied",
    ),
    (
        "undeclared-secret",
        "print(secret(\"root\"));",
        "secret denied",
    ),
    (
        "nesting",
        "let m = #{}; for j in 0..6000 { m = #{ inner: m }; }",
        "operation limit exceeded",
    ),
    (
        "deep-arrays",
        "let a = []; for j in 0..100000 { a = [a]; }",
        "limit exceeded",
    ),
    ("sleep", "sleep(1);", "capability denied"),
    ("long-sleep", "sleep(999999999);", "seconds must be 0 to"),
];

#[tokio::test]
async fn hostile_scripts_end_their_own_runs_while_a_good_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "match: { categories: [malware] }\ncapabilities: [incident]\ntimeout_seconds: 20\n";
    for (name, body, _) in HOSTILE {
        let (fns, body) = match body.strip_prefix("fn ") {
            Some(_) => (*body, "f(0);"),
            None => ("", *body),
        };
        let caps = if *name == "long-sleep" {
            yaml.replace("[incident]", "[incident, sleep]")
        } else {
            yaml.to_owned()
        };
        runbook(
            dir.path(),
            name,
            &caps,
            &format!("// Hostile: {name}.\n{fns}fn run(incident, params) {{\n    {body}\n}}\n"),
        );
    }
    runbook(
        dir.path(),
        "flood",
        yaml,
        "// Prints far more than a run keeps.\nfn run(incident, params) {\n    for i in 0..20000 { print(i); }\n    incident::note(\"flooded\");\n}\n",
    );
    runbook(
        dir.path(),
        "good",
        yaml,
        "// Behaves.\nfn run(incident, params) {\n    incident::note(\"contained\");\n}\n",
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    let id = raise(&mut s, "malware", &[]).await;
    let good = run_of(&s, &id, "good", "the good run", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    assert_eq!(good.actions.len(), 1);
    for (name, _, error) in HOSTILE {
        let run = run_of(&s, &id, name, name, |r| r.state() == v1::RunState::Failed).await;
        assert!(
            run.error.contains(error),
            "{name}: {:?} lacks {error:?}",
            run.error
        );
        assert!(run.actions.is_empty(), "{name} acted: {:?}", run.actions);
    }
    let flood = run_of(&s, &id, "flood", "the flood", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let log = full_run(&s, &flood.id).await.log;
    assert_eq!(log.len(), 1001, "the log keeps 1000 lines and says it cut");
    assert!(log[1000].contains("log truncated"));

    // The service kept serving throughout.
    let health = reqwest_get(&format!("{}/healthz", s.http)).await;
    assert_eq!(health, 200);
}

async fn reqwest_get(url: &str) -> u16 {
    let uri: Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET {} HTTP/1.0\r\n\r\n", uri.path()).as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.unwrap();
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn max_running_caps_the_runs_of_a_runbook_executing_at_once() {
    // A target that takes 300 ms per call and remembers the most calls it saw at once.
    let state: Arc<Mutex<(usize, usize)>> = Arc::default();
    let s2 = state.clone();
    let app = axum::Router::new().fallback(move || {
        let state = s2.clone();
        async move {
            {
                let mut s = state.lock().unwrap();
                s.0 += 1;
                s.1 = s.1.max(s.0);
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            state.lock().unwrap().0 -= 1;
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "one-at-a-time",
        "match: { categories: [service-outage] }\nparameters:\n  url: { default: http://unset.invalid }\ncapabilities: [http]\nconcurrency: { max_running: 1 }\n",
        "// One slow call.\nfn run(incident, params) { http::post(params.url + \"/slow\", #{}); }\n",
    );
    let config = format!("live: true\nrunbook_params:\n  one-at-a-time: {{ url: {url} }}\n");
    let mut s = Stack::start(dir.path(), &config).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(raise(&mut s, "service-outage", &[("n", &i.to_string())]).await);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "three incidents, three runs");
    for id in &ids {
        run_of(&s, id, "one-at-a-time", "each run", |r| {
            r.state() == v1::RunState::Succeeded
        })
        .await;
    }
    assert_eq!(state.lock().unwrap().1, 1, "never two runs at once");
}

#[tokio::test]
async fn incident_operations_change_the_incident_and_its_timeline() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "triage-it",
        "match: { categories: [uncategorized] }\ncapabilities: [incident]\n",
        r#"
// Reclassify, staff and escalate the incident.
fn run(incident, params) {
    incident::set_category("phishing");
    incident::set_category("no-such-category");
    incident::assign("commander", "alice");
    incident::escalate("customers are affected");
}
"#,
    );
    runbook(
        dir.path(),
        "staff-badly",
        "match: { categories: [uncategorized] }\ncapabilities: [incident]\n",
        r#"
// Assigns a role name triage would refuse.
fn run(incident, params) {
    incident::assign("Scribe", "bob");
}
"#,
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    let id = raise(&mut s, "uncategorized", &[]).await;
    run_of(&s, &id, "triage-it", "the run", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    // The refused name fails its step and run, naming the field; the incident gets no role.
    let bad = run_of(&s, &id, "staff-badly", "the bad run to fail", |r| {
        r.state() == v1::RunState::Failed
    })
    .await;
    assert!(
        bad.error.contains("incident::assign") && bad.error.contains("invalid role"),
        "{bad:?}"
    );
    let entries = eventually("every change on the timeline", || {
        let s = &s;
        let id = id.clone();
        async move {
            let t = timeline(s, &id).await;
            t.iter().any(|e| e.kind == "severity_changed").then_some(t)
        }
    })
    .await;
    let kind = |k: &str| entries.iter().find(|e| e.kind == k).map(|e| e.data.clone());
    let category: Value = serde_json::from_str(&kind("category_changed").unwrap()).unwrap();
    assert_eq!(
        category,
        json!({ "from": "uncategorized", "to": "phishing" })
    );
    let role: Value = serde_json::from_str(&kind("role_assigned").unwrap()).unwrap();
    assert_eq!(
        role,
        json!({ "role": "commander", "person": "alice", "previous": null })
    );
    let severity: Value = serde_json::from_str(&kind("severity_changed").unwrap()).unwrap();
    assert_eq!(severity["from"], 2);
    assert_eq!(severity["to"], 1);
    assert_eq!(severity["reason"], "escalated: customers are affected");
    assert!(
        entries
            .iter()
            .any(|e| e.kind == "note"
                && e.data.contains("unknown category \\\"no-such-category\\\"")),
        "{entries:#?}"
    );
    let escalated: Value = serde_json::from_str(&kind("escalated").unwrap()).unwrap();
    assert_eq!(escalated["reason"], "customers are affected");
    let incident = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(incident.category, "phishing");
    assert_eq!(incident.severity, 1);
    let roles: Vec<(&str, &str, &str)> = incident
        .roles
        .iter()
        .map(|r| (r.role.as_str(), r.person.as_str(), r.assigned_by.as_str()))
        .collect();
    assert_eq!(roles, [("commander", "alice", "runbook:triage-it")]);
}

#[tokio::test]
async fn an_escalation_policy_pages_later_steps_only_while_nobody_acknowledges() {
    let target = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "page",
        "match: { categories: [service-outage, malware] }\ncapabilities: [notify]\n",
        "// Pages the on-call policy.\nfn run(incident, params) { notify::send(\"oncall\", `page for ${incident.category}`); }\n",
    );
    let config = format!(
        "channels:\n  - {{ name: primary, kind: webhook, url: {u}/primary }}\n  - {{ name: secondary, kind: webhook, url: {u}/secondary }}\nescalation_policies:\n  - name: oncall\n    steps:\n      - channels: [primary]\n      - after_seconds: 300\n        channels: [secondary, primary]\n",
        u = target.url
    );
    let mut s = Stack::start(dir.path(), &config).await;
    let messages = |path: &str, category: &str| {
        target
            .on(path)
            .into_iter()
            .filter(|r| {
                r.body["kind"] == "runbook.message"
                    && r.body["message"] == format!("page for {category}")
            })
            .count()
    };

    // Two incidents page the policy; the malware one is acknowledged after its first page.
    raise(&mut s, "service-outage", &[]).await;
    let id = raise(&mut s, "malware", &[]).await;
    eventually("both first pages", || async {
        (messages("/primary", "service-outage") == 1 && messages("/primary", "malware") == 1)
            .then_some(())
    })
    .await;
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: "user:erin".into(),
        })
        .await
        .unwrap();
    let cancelled = eventually("the later step cancelled", || {
        let mut n = s.notifications.clone();
        let id = id.clone();
        async move {
            let list = n
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            let cancelled = list
                .iter()
                .filter(|d| d.status() == v1::DeliveryState::Cancelled)
                .count();
            (cancelled == 2).then_some(cancelled)
        }
    })
    .await;
    assert_eq!(cancelled, 2);
    assert_eq!(
        messages("/secondary", "service-outage"),
        0,
        "not before its time"
    );

    // Five minutes later (on the test's clock) the unacknowledged outage escalates: step 2
    // pages secondary and primary again. The acknowledged incident's step 2 stays cancelled.
    s.clock.advance(std::time::Duration::from_secs(301));
    eventually("the second step", || async {
        (messages("/secondary", "service-outage") == 1
            && messages("/primary", "service-outage") == 2)
            .then_some(())
    })
    .await;
    assert_eq!(messages("/secondary", "malware"), 0);
    assert_eq!(messages("/primary", "malware"), 1);

    // Pages of one delivery each, following tokens, list what one page of all lists.
    let mut n = s.notifications.clone();
    let all: Vec<String> = n
        .list_deliveries(v1::ListDeliveriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deliveries
        .into_iter()
        .map(|d| d.id)
        .collect();
    let (mut paged, mut page_token) = (Vec::new(), String::new());
    loop {
        let r = n
            .list_deliveries(v1::ListDeliveriesRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.deliveries.len(), 1);
        paged.extend(r.deliveries.into_iter().map(|d| d.id));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    assert!(all.len() > 3, "{all:?}");
    assert_eq!(paged, all);
    let bad = n
        .list_deliveries(v1::ListDeliveriesRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_durable_sleep_of_an_hour_wakes_when_its_time_has_come() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "wait-and-see",
        "match: { categories: [service-outage] }\ncapabilities: [incident, sleep]\n",
        "// Contain, wait an hour, verify.\nfn run(incident, params) {\n    incident::note(\"contained\");\n    sleep(3600);\n    incident::note(\"verified an hour later\");\n}\n",
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    let id = raise(&mut s, "service-outage", &[]).await;
    let sleeping = run_of(&s, &id, "wait-and-see", "the sleep", |r| {
        r.state() == v1::RunState::Sleeping
    })
    .await;
    let wake = sleeping.wake_at.unwrap();
    let started = sleeping.started_at.unwrap();
    assert!(
        (wake.seconds - started.seconds - 3600).abs() <= 5,
        "{wake:?} {started:?}"
    );
    assert_eq!(sleeping.actions.len(), 2, "the sleep is journaled");
    assert_eq!(sleeping.actions[1].status(), v1::StepStatus::Sleeping);

    s.clock.advance(std::time::Duration::from_secs(3601));
    let done = run_of(&s, &id, "wait-and-see", "the wake-up", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let steps: Vec<(&str, v1::StepStatus)> = done
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.status()))
        .collect();
    assert_eq!(
        steps,
        [
            ("incident.note", v1::StepStatus::Done),
            ("sleep.for", v1::StepStatus::Done),
            ("incident.note", v1::StepStatus::Done)
        ]
    );
}

#[tokio::test]
async fn of_racing_decisions_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "ask",
        "match: { categories: [service-outage] }\ncapabilities: [approval, incident]\n",
        ASK_RHAI,
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    let id = raise(&mut s, "service-outage", &[]).await;
    let run = run_of(&s, &id, "ask", "the wait", |r| {
        r.state() == v1::RunState::WaitingApproval
    })
    .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let mut runs = s.person(&format!("p{i}"), v1::Role::Responder).await.runs;
        let run_id = run.id.clone();
        calls.spawn(async move {
            let r = if i % 2 == 0 {
                runs.approve(decide(&run_id, "user:someone-else", "me first"))
                    .await
                    .map(drop)
            } else {
                runs.reject(decide_reject(&run_id, "user:someone-else", "me first"))
                    .await
                    .map(drop)
            };
            (i, r.map(|_| ()).map_err(|e| e.code()))
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(code)) => assert_eq!(code, Code::FailedPrecondition),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let done = run_of(&s, &id, "ask", "the run", |r| {
        r.state() == v1::RunState::Succeeded
    })
    .await;
    let result: Value = serde_json::from_str(&done.actions[0].result).unwrap();
    assert_eq!(result["by"], format!("user:p{}", winners[0]));
    assert_eq!(result["approved"], winners[0] % 2 == 0);
    let t = eventually("the decision on the timeline", || {
        let s = &s;
        let id = id.clone();
        async move {
            let t = timeline(s, &id).await;
            t.iter().any(|e| e.kind == "note").then_some(t)
        }
    })
    .await;
    let decisions = t
        .iter()
        .filter(|e| e.kind == "runbook_approved" || e.kind == "runbook_rejected")
        .count();
    assert_eq!(decisions, 1);
}

/// Every page of runs, following tokens; each answer checked to be at most 1 MiB.
async fn all_runs(s: &Stack, incident: &str, limit: u32) -> (Vec<v1::Run>, usize) {
    use firebreak_proto::Message;
    let (mut runs, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let r = s
            .runs
            .clone()
            .list_runs(v1::ListRunsRequest {
                incident_id: incident.into(),
                page_size: limit,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.encoded_len() <= 1 << 20,
            "a page of {} bytes",
            r.encoded_len()
        );
        assert!(!r.runs.is_empty(), "a page is never empty");
        pages += 1;
        runs.extend(r.runs);
        if r.next_page_token.is_empty() {
            return (runs, pages);
        }
        page_token = r.next_page_token;
    }
}

/// A run's whole journal, page by page; each answer checked to be at most 1 MiB.
async fn whole_journal(s: &Stack, id: &str) -> (Vec<v1::RunAction>, usize) {
    use firebreak_proto::Message;
    let (mut actions, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let r = s
            .runs
            .clone()
            .get_run(v1::GetRunRequest {
                id: id.into(),
                page_size: 0,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.encoded_len() <= 1 << 20,
            "a page of {} bytes",
            r.encoded_len()
        );
        let run = r.run.unwrap();
        assert!(!run.actions.is_empty(), "a page is never empty");
        assert_eq!(run.next_actions_page_token, r.next_page_token);
        pages += 1;
        actions.extend(run.actions);
        if r.next_page_token.is_empty() {
            return (actions, pages);
        }
        page_token = r.next_page_token;
    }
}

#[tokio::test]
async fn a_journal_flood_leaves_runs_readable_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "match: { categories: [malware] }\ncapabilities: [incident]\ntimeout_seconds: 60\nlimits: { max_steps: 400 }\n";
    // 300 steps (past the default cap of 200, raised here) of 15 KB each: 4.5 MB of journal a run, past gRPC's 4 MiB decode limit.
    runbook(
        dir.path(),
        "flood",
        yaml,
        "// Journals 300 large notes.\nfn run(incident, params) {\n    let text = \"\";\n    for i in 0..15000 { text += \"x\"; }\n    for i in 0..300 { incident::note(`${i} ${text}`); }\n}\n",
    );
    let mut s = Stack::start(dir.path(), "{}\n").await;
    let mut incidents = Vec::new();
    for n in 0..5 {
        incidents.push(raise(&mut s, "malware", &[("host", &format!("h{n}"))]).await);
    }
    let mut ids = Vec::new();
    for incident in &incidents {
        // 300 steps of 15 KB each, five runs at once: minutes on a loaded 2-core machine.
        let run = crate::harness::eventually_within(
            "the flood to end",
            std::time::Duration::from_secs(120),
            || {
                let mut runs = s.runs.clone();
                let incident = incident.clone();
                async move {
                    runs.list_runs(v1::ListRunsRequest {
                        incident_id: incident,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .runs
                    .into_iter()
                    .find(|r| r.runbook == "flood" && r.state() == v1::RunState::Succeeded)
                }
            },
        )
        .await;
        // A list carries the first part of a run's journal and says where the rest is.
        assert!(!run.actions.is_empty() && run.actions.len() < 300);
        assert!(!run.next_actions_page_token.is_empty());
        ids.push(run.id);
    }

    // Every run is reachable through pages of at most 1 MiB, whatever the page size asked.
    for limit in [0, 1, 2] {
        let (runs, pages) = all_runs(&s, "", limit).await;
        let mut listed: Vec<String> = runs.into_iter().map(|r| r.id).collect();
        listed.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(listed, want, "limit {limit}");
        assert!(pages >= 2, "limit {limit}: {pages} page(s)");
    }

    // Each run's whole journal is reachable, in order, through pages of at most 1 MiB.
    for id in &ids {
        let (actions, pages) = whole_journal(&s, id).await;
        let seqs: Vec<u32> = actions.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
        assert!(pages >= 5, "{pages} page(s)");
        assert!(actions.iter().all(|a| a.args.len() > 15_000));
    }

    // A token this service did not give is refused.
    let bad = s
        .runs
        .clone()
        .get_run(v1::GetRunRequest {
            id: ids[0].clone(),
            page_size: 0,
            page_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"), "{}", bad.message());
}

#[tokio::test]
async fn run_requests_refuse_oversized_or_nul_text_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "good",
        "match: { categories: [malware] }\ncapabilities: [incident]\n",
        "// Behaves.\nfn run(incident, params) {\n    incident::note(\"contained\");\n}\n",
    );
    let s = Stack::start(dir.path(), "{}\n").await;
    let run = "01937f5e-0000-7000-8000-000000000000";
    let mut runs = s.runs.clone();
    let refused = |r: Result<(), tonic::Status>, field: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    };
    // The request's actor is not who decides (the token is): hostile text there is ignored,
    // and the unknown run is what the caller hears of.
    for actor in ["al\0ice".to_owned(), "a".repeat(300)] {
        let e = runs.approve(decide(run, &actor, "")).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
    refused(
        runs.reject(decide_reject(run, "alice", "no\0"))
            .await
            .map(drop),
        "comment",
    );
    refused(
        runs.reject(decide_reject(run, "alice", &"c".repeat(5000)))
            .await
            .map(drop),
        "comment",
    );
    refused(
        runs.approve(decide(&"r".repeat(100_000), "alice", ""))
            .await
            .map(drop),
        "run_id",
    );

    let incident = v1::Incident {
        id: "01937f5e-0000-7000-8000-000000000001".into(),
        title: "bad\0title".into(),
        category: "malware".into(),
        ..Default::default()
    };
    for (req, field) in [
        (
            v1::DryRunRequest {
                runbook: "go\0od".into(),
                incident: Some(incident.clone()),
            },
            "runbook",
        ),
        (
            v1::DryRunRequest {
                runbook: "good".into(),
                incident: Some(incident),
            },
            "incident.title",
        ),
    ] {
        let e = runs.dry_run(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }

    let e = runs
        .list_runs(v1::ListRunsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"), "{}", e.message());
    let e = runs
        .list_approvals(v1::ListApprovalsRequest {
            page_size: 0,
            page_token: "\0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"), "{}", e.message());
    let e = runs
        .get_run(v1::GetRunRequest {
            id: "x".repeat(100_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("id") && e.message().len() < 200,
        "{}",
        e.message()
    );
}

/// Routing without a runbook: an incident that opens pages through the policy its route
/// names, step by step on the test's clock, each page exactly once, with repeats; an
/// acknowledgement stops the rest; an incident no route takes pages nobody.
#[tokio::test]
async fn a_routed_policy_pages_an_opened_incident_until_someone_acknowledges() {
    let target = Recorder::start().await;
    let config = format!(
        "channels:\n  - {{ name: primary, kind: webhook, url: {u}/primary }}\n  - {{ name: secondary, kind: webhook, url: {u}/secondary }}\nescalation_policies:\n  - name: dba\n    repeat: 1\n    repeat_after_seconds: 600\n    steps:\n      - targets: [{{ channel: primary }}]\n      - after_seconds: 300\n        channels: [secondary]\nroutes:\n  - {{ match: {{ categories: [service-outage] }}, policy: dba }}\n",
        u = target.url
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let pages = |path: &str, incident: &str| {
        target
            .on(path)
            .into_iter()
            .filter(|r| r.body["kind"] == "escalation.page" && r.body["incident"]["id"] == incident)
            .count()
    };
    let acked = raise(&mut s, "service-outage", &[("db", "orders")]).await;
    let ignored = raise(&mut s, "malware", &[]).await;
    let full = raise(&mut s, "service-outage", &[("db", "users")]).await;
    eventually("both first steps", || async {
        (pages("/primary", &acked) == 1 && pages("/primary", &full) == 1).then_some(())
    })
    .await;
    s.incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: acked.clone(),
            actor: String::new(),
        })
        .await
        .unwrap();
    // The acknowledgement reaches notification before the clock moves on.
    crate::harness::escalation_cancelled(&s, &acked).await;

    // Step 2 at five minutes, the repeat's steps at 15 and 20 minutes.
    for (minutes, primary, secondary) in [(5, 1, 1), (15, 2, 1), (20, 2, 2)] {
        s.clock
            .advance(std::time::Duration::from_secs(if minutes == 5 {
                301
            } else {
                300
            }));
        if minutes == 15 {
            s.clock.advance(std::time::Duration::from_secs(300));
        }
        eventually(&format!("the pages at minute {minutes}"), || async {
            (pages("/primary", &full) == primary && pages("/secondary", &full) == secondary)
                .then_some(())
        })
        .await;
    }
    // Then nothing more, however long nobody answers; the acknowledged and the unrouted
    // incidents had their first page only, and none.
    s.clock.advance(std::time::Duration::from_secs(3600));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(pages("/primary", &full), 2);
    assert_eq!(pages("/secondary", &full), 2);
    assert_eq!(pages("/primary", &acked), 1);
    assert_eq!(pages("/secondary", &acked), 0);
    assert_eq!(
        pages("/primary", &ignored) + pages("/secondary", &ignored),
        0
    );
}

/// An incident that becomes SEV1 pages through its policy again (a new escalation, from
/// step 1); one that only joins alerts does not.
#[tokio::test]
async fn an_incident_raised_to_sev1_is_paged_again() {
    let target = Recorder::start().await;
    let config = format!(
        "channels:\n  - {{ name: pager, kind: webhook, url: {u}/page }}\nescalation_policies:\n  - name: sre\n    steps:\n      - channels: [pager]\nroutes:\n  - {{ policy: sre }}\n",
        u = target.url
    );
    let s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let raise_at = |severity: i32| {
        let mut intake = s.intake.clone();
        async move {
            intake
                .raise_incident(v1::RaiseIncidentRequest {
                    alert: Some(AlertInput {
                        title: "checkout slow".into(),
                        category: "performance-degradation".into(),
                        severity,
                        source: "e2e".into(),
                        dedup_key: "checkout-slow".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .incident_id
        }
    };
    let id = raise_at(3).await;
    let pages = || {
        target
            .on("/page")
            .into_iter()
            .filter(|r| r.body["kind"] == "escalation.page" && r.body["incident"]["id"] == id)
            .count()
    };
    eventually("the first page", || async { (pages() == 1).then_some(()) }).await;
    // The same key at SEV3 again: it joins, nothing more is paged.
    assert_eq!(raise_at(3).await, id);
    // At SEV1: the incident becomes SEV1 and is paged again.
    assert_eq!(raise_at(1).await, id);
    eventually("the SEV1 page", || async { (pages() == 2).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(pages(), 2);
}
