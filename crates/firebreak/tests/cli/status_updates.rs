//! `firebreak incident update|subscribe|unsubscribe|subscribers`: a status update on the
//! incident as `incident show` prints it, subscriptions as listed, and refusals that name
//! the flag or field and change nothing.

use serde_json::Value;

use super::{Server, repo, run_in_dir};

#[test]
fn incident_update_and_subscriptions_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "users:\n  - { name: amy }\nchannels:\n  - { name: status, kind: log, events: [opened] }\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let raised = server.json(&["raise", "--title", "checkout is down"]);
    let id = raised["incident_id"].as_str().unwrap().to_owned();

    let inc = server.json(&[
        "incident",
        "update",
        &id,
        "--status",
        "monitoring",
        "the fix is out",
    ]);
    let last = &inc["last_status_update"];
    assert_eq!(
        (&last["status"], &last["message"], &last["by"]),
        (
            &Value::from("monitoring"),
            &Value::from("the fix is out"),
            &Value::from("user:admin")
        ),
        "{inc:#}"
    );
    let shown = server.cli(&["incident", "show", &id]);
    let line = shown
        .lines()
        .find(|l| l.starts_with("last_status_update"))
        .unwrap_or_default();
    assert!(
        line.contains("monitoring: the fix is out") && line.contains("user:admin"),
        "{shown}"
    );

    let sub = server.json(&["incident", "subscribe", &id, "--person", "amy"]);
    assert_eq!(sub["result"], "subscribed", "{sub:#}");
    let again = server.cli(&["incident", "subscribe", &id, "--person", "amy"]);
    assert_eq!(
        again.trim(),
        format!("already subscribed person:amy to {id}")
    );
    server.cli(&["incident", "subscribe", &id, "--channel", "status"]);
    let listed = server.json(&["incident", "subscribers", &id]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subscriber"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["person:amy", "channel:status"], "{listed:#}");
    server.cli(&["incident", "unsubscribe", &id, "--channel", "status"]);
    assert_eq!(
        server
            .json(&["incident", "subscribers", &id])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Refusals: the flag or field named, the exit code of the kind, nothing changed.
    let token = server.token();
    let refused = |args: &[&str]| {
        let mut all = vec![
            "--server",
            &server.grpc,
            "--token",
            &token,
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = run_in_dir(dir.path(), &all, None);
        assert!(out.is_empty(), "{out}");
        let e: Value = serde_json::from_str(&err).unwrap_or_else(|_| Value::from(err.clone()));
        let message = e["message"].as_str().map_or(err.clone(), str::to_owned);
        (code, message)
    };
    let (code, message) = refused(&["incident", "update", &id, "--status", "fixed", "x"]);
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("--status"), "{message}");
    let (code, message) = refused(&["incident", "update", &id, "--status", "resolved", ""]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("message"), "{message}");
    let (code, message) = refused(&["incident", "subscribe", &id, "--person", "zed"]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("subscriber"), "{message}");
    let (code, message) = refused(&["incident", "unsubscribe", &id, "--channel", "status"]);
    assert_eq!(code, 4, "{message}");
    let after = server.json(&["incident", "show", &id]);
    assert_eq!(after["last_status_update"]["message"], "the fix is out");
}
