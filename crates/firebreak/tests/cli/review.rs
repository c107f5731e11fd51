//! `firebreak incident follow-up|summary|review`: follow-ups added, marked done and listed,
//! the summary set, the review as Markdown and as structured JSON; bad input refused with
//! the invalid-input exit code, naming the field.

use serde_json::Value;

use super::{Server, repo, run_in_dir};

#[test]
fn follow_ups_and_the_summary_reach_the_review_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let id = server.json(&["raise", "--title", "checkout down"])["incident_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = server.cli(&[
        "incident",
        "follow-up",
        "add",
        &id,
        "--owner",
        "amy",
        "--due",
        "2099-12-20",
        "add a canary stage",
    ]);
    assert!(
        added.contains("#1 open (amy, due 2099-12-20): add a canary stage"),
        "{added}"
    );
    let second = server.json(&[
        "incident",
        "follow-up",
        "add",
        &id,
        "--owner",
        "bob",
        "alert on 5xx",
    ]);
    assert_eq!(second["number"], 2, "{second:#}");
    assert!(second["due"].is_null());
    let done = server.json(&["incident", "follow-up", "done", &id, "2"]);
    assert_eq!(done["state"], "done", "{done:#}");
    let open = server.json(&["incident", "follow-up", "list", "--open"]);
    let titles: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["add a canary stage"]);
    let table = server.cli(&["incident", "follow-up", "list", &id, "--owner", "bob"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(
        rows[0].contains("done") && rows[0].contains("alert on 5xx"),
        "{table}"
    );
    server.cli(&["incident", "summary", &id, "A bad deploy; rolled back."]);
    server.cli(&["incident", "resolve", &id, "--summary", "rolled back"]);

    let md = server.cli(&["incident", "review", &id]);
    for want in [
        "A bad deploy; rolled back.",
        "- [ ] #1 add a canary stage (amy, due 2099-12-20)",
        "- [x] #2 alert on 5xx (bob, no due date)",
        "## What went well",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    let structured: Value =
        serde_json::from_str(&server.cli(&["incident", "review", &id, "--format", "json"]))
            .unwrap();
    assert_eq!(structured["summary"], "A bad deploy; rolled back.");
    assert_eq!(
        structured["follow_ups"][1]["state"], "done",
        "{structured:#}"
    );
    assert!(
        structured["time_to_resolve_seconds"].is_i64(),
        "{structured:#}"
    );
    assert!(structured["time_to_acknowledge_seconds"].is_null());

    // A due date that is no date: exit 5, the field named, nothing added.
    let token = server.token();
    let (code, out, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "--output",
            "json",
            "incident",
            "follow-up",
            "add",
            &id,
            "--owner",
            "amy",
            "--due",
            "soon",
            "x",
        ],
        None,
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("due"), "{err}");
    let all = server.json(&["incident", "follow-up", "list", &id]);
    assert_eq!(all.as_array().unwrap().len(), 2);
}
