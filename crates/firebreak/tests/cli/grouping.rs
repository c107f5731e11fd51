//! Grouping through the CLI: two hosts of one service raised without a dedup key join one
//! incident by the grouping rule (`raise` says `grouped`), and `incident alerts` lists both
//! hosts' labels; a bad rule stops `up` naming the field, before anything is made.

use serde_json::Value;

use super::{Server, repo, run_in_dir};

#[test]
fn hosts_of_one_service_group_into_one_incident_listing_both_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "grouping:\n  rules:\n  - name: by-service\n    group_by: [service]\n    window: 1h\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let raise = |host: &str, service: &str| {
        server.json(&[
            "raise",
            "--title",
            "disk full",
            "--label",
            &format!("host={host}"),
            "--label",
            &format!("service={service}"),
        ])
    };
    let a = raise("a", "api");
    assert_eq!(a["status"], "opened", "{a:#}");
    let id = a["incident_id"].as_str().unwrap().to_owned();
    let b = raise("b", "api");
    assert_eq!(
        (&b["status"], &b["grouped_by"], &b["incident_id"]),
        (
            &Value::from("grouped"),
            &Value::from("by-service"),
            &Value::from(id.as_str())
        ),
        "{b:#}"
    );
    // Another service: its own incident.
    let web = raise("a", "web");
    assert_eq!(web["status"], "opened", "{web:#}");
    assert_ne!(web["incident_id"], id.as_str());

    let listed = server.json(&["incident", "alerts", &id]);
    let mut hosts: Vec<(String, String)> = listed["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["host"].as_str().unwrap().to_owned(),
                a["labels"]["service"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        [
            ("a".to_owned(), "api".to_owned()),
            ("b".into(), "api".into())
        ]
    );
    let shown = server.json(&["incident", "show", &id]);
    assert!(
        shown["group_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("group/by-service:")),
        "{shown:#}"
    );
    let text = server.cli(&["incident", "alerts", &id]);
    assert!(text.contains("host=a,service=api"), "{text}");
    assert!(text.contains("host=b,service=api"), "{text}");
}

#[test]
fn up_refuses_bad_grouping_rules_naming_the_field() {
    let many = vec!["a"; 17].join(", ");
    let long = "x".repeat(100_000);
    for (rule, field) in [
        (
            "group_by: [service]\n    window: soon",
            "grouping.rules[0].window",
        ),
        (
            "group_by: [service]\n    window: 48h",
            "grouping.rules[0].window",
        ),
        ("group_by: []\n    window: 5m", "grouping.rules[0].group_by"),
        (
            &format!("group_by: [{many}]\n    window: 5m") as &str,
            "grouping.rules[0].group_by",
        ),
        (
            &format!("group_by: [{long}]\n    window: 5m") as &str,
            "grouping.rules[0].group_by[0]",
        ),
        (
            "matchers: ['service=~\"(\"']\n    group_by: [service]\n    window: 5m",
            "grouping.rules[0].matchers[0]",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!("grouping:\n  rules:\n  - name: r\n    {rule}\n"),
        )
        .unwrap();
        let (code, _, err) = run_in_dir(
            dir.path(),
            &[
                "up",
                "--config",
                config.to_str().unwrap(),
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ],
            None,
        );
        assert_ne!(code, 0, "{rule}");
        assert!(err.contains(field), "{rule}: {err}");
        assert!(err.len() < 2000, "the error quotes at most a little: {err}");
        assert!(!dir.path().join("firebreak-data").exists(), "{rule}");
    }
}
