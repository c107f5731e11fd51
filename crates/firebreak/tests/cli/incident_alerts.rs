//! `firebreak incident alerts`: an incident's alerts with their labels, status and counts,
//! and a clear refusal for an incident that does not exist.

use serde_json::{Value, json};

use super::{Server, repo, run_in_dir, wait_for};

/// Three alerts of one dedup key from three hosts join one incident; the sender repeats
/// one while it fires (counted, not a new alert) and clears another.
#[test]
fn incident_alerts_lists_labels_status_and_how_often_each_fired() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let raise = |host: &str| {
        let r = server.json(&[
            "raise",
            "--title",
            &format!("disk full on {host}"),
            "--dedup-key",
            "disk-full",
            "--label",
            &format!("host={host}"),
            "--label",
            "team=storage",
            "--alert-key",
            &format!("disk-{host}"),
        ]);
        r["incident_id"].as_str().unwrap().to_owned()
    };
    let id = raise("db-1");
    assert_eq!(raise("db-2"), id);
    assert_eq!(raise("db-3"), id);
    // The sender says db-1 again while it fires, and that db-3 cleared.
    assert_eq!(raise("db-1"), id);
    server.cli(&["resolve-alert", "disk-db-3"]);

    let listed = wait_for("the repeat and the clearing to be counted", || {
        let l = server.json(&["incident", "alerts", &id]);
        let alerts = l["alerts"].as_array()?;
        (alerts.len() == 3 && alerts[0]["fired"] == 2 && alerts[2]["status"] == "resolved")
            .then_some(l)
    });
    assert_eq!(listed["truncated"], false);
    let alerts = listed["alerts"].as_array().unwrap();
    let what: Vec<Value> = alerts
        .iter()
        .map(|a| {
            json!([
                a["title"],
                a["labels"],
                a["status"],
                a["fired"],
                a["opened"]
            ])
        })
        .collect();
    let labels = |host: &str| json!({ "host": host, "team": "storage" });
    assert_eq!(
        what,
        [
            json!(["disk full on db-1", labels("db-1"), "firing", 2, true]),
            json!(["disk full on db-2", labels("db-2"), "firing", 1, false]),
            json!(["disk full on db-3", labels("db-3"), "resolved", 1, false]),
        ]
    );
    // Seen first and last: the repeat moved db-1's last sighting past its first; the others
    // were seen once. Times are RFC 3339 in UTC, which sort as text.
    let seen = |a: &Value| {
        (
            a["first_seen"].as_str().unwrap().to_owned(),
            a["last_seen"].as_str().unwrap().to_owned(),
        )
    };
    let (first, last) = seen(&alerts[0]);
    assert!(first < last, "{first} {last}");
    for a in &alerts[1..] {
        let (first, last) = seen(a);
        assert_eq!(first, last);
    }
    assert!(alerts[0]["resolved_at"].is_null());
    assert!(alerts[2]["resolved_at"].is_string(), "{:#}", alerts[2]);
    // The repeat was one alert: the incident counts three.
    let inc = server.json(&["incident", "show", &id]);
    assert_eq!(inc["alert_count"], 3, "{inc:#}");

    // As text: a row per alert with its labels.
    let text = server.cli(&["incident", "alerts", &id]);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains("firing") && rows[0].contains("host=db-1,team=storage"),
        "{text}"
    );
    assert!(rows[2].contains("resolved"), "{text}");

    // An incident that does not exist is NOT_FOUND naming it; a malformed id names the field.
    let token = server.token();
    let refused = |id: &str| {
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
                "alerts",
                id,
            ],
            None,
        );
        assert!(out.is_empty(), "{out}");
        let e: Value = serde_json::from_str(&err).unwrap();
        (code, e["message"].as_str().unwrap().to_owned())
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, message) = refused(&unknown);
    assert_eq!(code, 4, "{message}");
    assert!(message.contains(&unknown), "{message}");
    let (code, message) = refused("nope");
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("incident_id"), "{message}");
}
