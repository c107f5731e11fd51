//! Alertmanager's silences API on Firebreak, driven by the real `amtool` (Debian's
//! `prometheus-alertmanager`): add, query and expire a silence with a token; a silence that
//! cannot compile, or a caller without the right, is refused and nothing is kept.

use std::process::Command;

use firebreak_proto::v1;

use crate::harness::Stack;

/// Runs amtool against the stack with `token`; (exit code, stdout, stderr).
fn amtool(s: &Stack, dir: &std::path::Path, token: &str, args: &[&str]) -> (i32, String, String) {
    let config = dir.join(format!("http-{}.yaml", &token[..12.min(token.len())]));
    std::fs::write(
        &config,
        format!("authorization:\n  type: Bearer\n  credentials: {token}\n"),
    )
    .unwrap();
    let out = Command::new("amtool")
        .arg(format!("--alertmanager.url={}", s.http))
        .arg(format!("--http.config.file={}", config.display()))
        .args(args)
        .output()
        .expect("amtool (Debian's prometheus-alertmanager) is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Raises an alert named `alertname` over gRPC; intake's answer.
async fn raise(s: &Stack, alertname: &str, title: &str) -> v1::RaiseIncidentResponse {
    let alert = v1::AlertInput {
        title: title.into(),
        source: "e2e".into(),
        labels: [("alertname".to_owned(), alertname.to_owned())].into(),
        ..Default::default()
    };
    s.intake
        .clone()
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(alert),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// amtool blocks its thread: the stack serves it from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_adds_queries_and_expires_silences_on_firebreak() {
    let s = Stack::start(&crate::harness::empty_runbooks(), "{}\n").await;
    let dir = tempfile::tempdir().unwrap();
    let sam = s.person("sam", v1::Role::Responder).await;
    let vic = s.person("vic", v1::Role::Viewer).await;

    let (code, out, err) = amtool(
        &s,
        dir.path(),
        &sam.token,
        &[
            "silence",
            "add",
            "alertname=DiskFull",
            "instance=~\"db-[0-9]+\"",
            "--comment=resizing volumes",
            "--duration=2h",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_owned();
    assert!(!id.is_empty(), "amtool prints the new silence's id");

    let (code, out, err) = amtool(
        &s,
        dir.path(),
        &vic.token,
        &["silence", "query", "-o", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let silence = &listed[0];
    assert_eq!(silence["id"], id.as_str(), "{listed:#}");
    assert_eq!(silence["status"]["state"], "active");
    assert_eq!(silence["comment"], "resizing volumes");
    assert!(
        silence["createdBy"]
            .as_str()
            .unwrap_or_default()
            .starts_with("user:sam"),
        "{silence:#}"
    );
    let matchers = silence["matchers"].as_array().unwrap();
    assert!(
        matchers
            .iter()
            .any(|m| m["name"] == "instance" && m["isRegex"] == true && m["value"] == "db-[0-9]+"),
        "{matchers:?}"
    );

    // A viewer reads but may not expire; the responder does.
    let (code, _, err) = amtool(&s, dir.path(), &vic.token, &["silence", "expire", &id]);
    assert_ne!(code, 0, "a viewer expired a silence: {err}");
    let (code, out, err) = amtool(&s, dir.path(), &sam.token, &["silence", "expire", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = amtool(
        &s,
        dir.path(),
        &sam.token,
        &["silence", "query", "--expired", "-o", "json"],
    );
    let expired: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(expired[0]["id"], id.as_str(), "{expired:#}");
    assert_eq!(expired[0]["status"]["state"], "expired");

    // Refused, naming why, and nothing kept: a regex that does not compile (amtool checks
    // its own matchers, so this one is posted as another client would), a silence of
    // everything, one that ends before it starts, a viewer adding, no token at all.
    let web = reqwest::Client::new();
    for (body, why) in [
        (
            r#"{"matchers":[{"name":"job","value":"(","isRegex":true}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"x","comment":"x"}"#,
            "matchers[0].value",
        ),
        (
            r#"{"matchers":[{"name":"job","value":"web","isRegex":false}],"startsAt":"2099-01-02T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"x","comment":"x"}"#,
            "endsAt",
        ),
        (r#"{"matchers":"#, "postableSilence"),
    ] {
        let r = web
            .post(format!("{}/api/v2/silences", s.http))
            .bearer_auth(&sam.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
        let text = r.text().await.unwrap();
        assert!(text.contains(why), "{why}: {text}");
    }
    for (token, matcher, why) in [
        (&sam.token, "job=~\".*\"", "at least one must not match"),
        (&vic.token, "job=web", "403"),
    ] {
        let (code, out, err) = amtool(
            &s,
            dir.path(),
            token,
            &["silence", "add", matcher, "--comment=x", "--duration=1h"],
        );
        assert_ne!(code, 0, "{matcher}: {out}");
        assert!(
            err.contains(why) || out.contains(why),
            "{matcher}: {out}{err}"
        );
    }
    let anonymous = reqwest::get(format!("{}/api/v2/silences", s.http))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let (_, out, _) = amtool(
        &s,
        dir.path(),
        &sam.token,
        &["silence", "query", "--expired", "-o", "json"],
    );
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all:#}");
}

/// A silenced alert is stored and answered as silenced, opens no incident and pages
/// nobody; an alert the silence does not match opens as usual; after amtool expires the
/// silence, the same alert opens and pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_alert_opens_and_pages_nothing_until_the_silence_is_expired() {
    let hook = crate::harness::Recorder::start().await;
    let config = format!(
        "channels:\n  - {{ name: hook, kind: webhook, url: {}/hook }}\n",
        hook.url
    );
    let s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let dir = tempfile::tempdir().unwrap();
    let sam = s.person("sam", v1::Role::Responder).await;
    let (code, out, err) = amtool(
        &s,
        dir.path(),
        &sam.token,
        &[
            "silence",
            "add",
            "alertname=DiskFull",
            "--comment=resizing",
            "--duration=1h",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_owned();
    let raise = |alertname: &'static str, title: &'static str| raise(&s, alertname, title);
    let silenced = raise("DiskFull", "disk full on db-1").await;
    assert_eq!(silenced.silenced_by, id, "{silenced:?}");
    assert!(silenced.incident_id.is_empty() && !silenced.alert_id.is_empty());
    let opened = raise("HighCPU", "cpu hot on web-1").await;
    assert!(opened.silenced_by.is_empty() && !opened.incident_id.is_empty());
    crate::harness::eventually("the unsilenced incident's message", || async {
        (!hook.on("/hook").is_empty()).then_some(())
    })
    .await;
    // Expired: the same alert opens and is announced.
    let (code, out, err) = amtool(&s, dir.path(), &sam.token, &["silence", "expire", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let after = raise("DiskFull", "disk full on db-1").await;
    assert!(
        after.silenced_by.is_empty() && !after.incident_id.is_empty(),
        "{after:?}"
    );
    let announced = crate::harness::eventually("both incidents announced", || async {
        let ids: std::collections::BTreeSet<String> = hook
            .on("/hook")
            .iter()
            .filter_map(|r| r.body["incident"]["id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() >= 2).then_some(ids)
    })
    .await;
    assert_eq!(
        announced,
        [opened.incident_id.clone(), after.incident_id.clone()].into(),
        "the silenced alert was never announced"
    );
    // Only those two incidents exist.
    let listed = s
        .incidents
        .clone()
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .incidents;
    assert_eq!(listed.len(), 2);
}

/// An edit (Alertmanager's POST with the silence's id) takes its new matchers at once: intake
/// compiles a silence again when its version moves, and keeps nothing of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_silence_silences_by_its_new_matchers_at_once() {
    let s = Stack::start(&crate::harness::empty_runbooks(), "{}\n").await;
    let web = reqwest::Client::new();
    let post = |id: &str, alertname: &str| {
        let body = serde_json::json!({
            "id": id,
            "matchers": [{ "name": "alertname", "value": alertname, "isRegex": false }],
            "startsAt": "2000-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "e2e", "comment": "edit",
        });
        let request = web
            .post(format!("{}/api/v2/silences", s.http))
            .bearer_auth(&s.admin_token)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
            let v: serde_json::Value = r.json().await.unwrap();
            v["silenceID"].as_str().unwrap().to_owned()
        }
    };
    let raise = |alertname: &'static str| {
        let raised = raise(&s, alertname, "fired");
        async move { raised.await.silenced_by }
    };
    let id = post("", "DiskFull").await;
    assert_eq!(raise("DiskFull").await, id);
    assert_eq!(raise("HighCPU").await, "");
    assert_eq!(post(&id, "HighCPU").await, id, "an edit keeps its id");
    assert_eq!(
        raise("DiskFull").await,
        "",
        "the old matcher still silences"
    );
    assert_eq!(raise("HighCPU").await, id);
}
