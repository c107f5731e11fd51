//! `firebreak silence add|list|show|expire` against a running server: a dry run lists
//! exactly the firing alerts a silence would catch and creates nothing; a silence catches
//! what it matches, counts and lists it; hostile input is refused naming the field, and
//! nothing is kept; a reader may look but not add; every write is audited, amtool's too.

use std::process::Command;

use serde_json::Value;

use super::{Server, repo, run_in_dir, wait_for};

/// A server whose audit entries reach the log within a moment.
fn server(dir: &std::path::Path) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(&config, "auth:\n  sync_interval_ms: 50\n").unwrap();
    Server::start(&dir.join("data"), &repo("runbooks"), &config)
}

/// Raises an alert with `labels` (and a sender's key, so it is firing until resolved);
/// its answer.
fn raise(server: &Server, title: &str, labels: &[&str], key: &str) -> Value {
    let mut args = vec!["raise", "--title", title];
    for l in labels {
        args.extend_from_slice(&["--label", l]);
    }
    if !key.is_empty() {
        args.extend_from_slice(&["--alert-key", key]);
    }
    server.json(&args)
}

/// Runs a command with `token`, JSON output: (exit code, stdout, stderr).
fn run_as(server: &Server, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "--server",
        server.grpc.as_str(),
        "--token",
        token,
        "--output",
        "json",
    ];
    all.extend_from_slice(args);
    run_in_dir(server.cwd.path(), &all, None)
}

/// Runs a command that must fail with `token`: (exit code, the JSON error's message).
fn refused(server: &Server, token: &str, args: &[&str]) -> (i32, String) {
    let (code, out, err) = run_as(server, token, args);
    assert!(out.is_empty(), "{args:?} printed {out}");
    let e: Value = serde_json::from_str(&err)
        .unwrap_or_else(|_| panic!("not JSON on stderr for {args:?}: {err}"));
    assert_eq!(e["exit"], code, "{e}");
    (code, e["message"].as_str().unwrap().to_owned())
}

/// Every silence kept, whatever its state.
fn all_silences(server: &Server) -> Vec<Value> {
    let mut all = server
        .json(&["silence", "list"])
        .as_array()
        .unwrap()
        .clone();
    all.extend(
        server
            .json(&["silence", "list", "--expired"])
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    all
}

/// The audit log's entries whose method holds `method`.
fn silence_entries(server: &Server, method: &str) -> Vec<Value> {
    let all = server.json(&["audit", "list", "--limit", "1000"]);
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"].as_str().is_some_and(|m| m.contains(method)))
        .cloned()
        .collect()
}

fn ids(alerts: &Value) -> Vec<&str> {
    alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect()
}

#[test]
fn silence_dry_run_add_list_show_and_expire_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    // Firing: db-1 and web-1 (DiskFull), db-2 (HighCPU). Not firing: db-3 (resolved), and
    // db-5, sent without a key (it has no state of its own).
    let db1 = raise(
        &server,
        "disk full on db-1",
        &["alertname=DiskFull", "host=db-1"],
        "k1",
    );
    raise(
        &server,
        "disk full on web-1",
        &["alertname=DiskFull", "host=web-1"],
        "k2",
    );
    raise(
        &server,
        "cpu hot on db-2",
        &["alertname=HighCPU", "host=db-2"],
        "k3",
    );
    raise(
        &server,
        "disk full on db-3",
        &["alertname=DiskFull", "host=db-3"],
        "k4",
    );
    server.cli(&["resolve-alert", "k4"]);
    raise(
        &server,
        "disk full on db-5",
        &["alertname=DiskFull", "host=db-5"],
        "",
    );
    let matchers = ["alertname=DiskFull", "host=~\"db-.*\""];
    let add = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["silence", "add"];
        args.extend_from_slice(&matchers);
        args.extend_from_slice(&["--duration", "2h", "--comment", "resizing volumes"]);
        args.extend_from_slice(extra);
        args
    };

    // The dry run: exactly db-1 of the three firing alerts, and nothing created.
    let preview = server.json(&add(&["--dry-run"]));
    assert_eq!(preview["dry_run"], true);
    assert_eq!(
        (preview["matching"].as_u64(), preview["firing"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        ids(&preview["alerts"]),
        [db1["alert_id"].as_str().unwrap()],
        "{preview:#}"
    );
    assert_eq!(preview["alerts"][0]["labels"]["host"], "db-1");
    let text = server.cli(&add(&["--dry-run"]));
    assert!(text.contains(db1["alert_id"].as_str().unwrap()), "{text}");
    assert!(
        text.contains("1 of 3 firing alerts would be silenced; dry run: nothing was created"),
        "{text}"
    );
    let everything = server.json(&[
        "silence",
        "add",
        "host=~\".+\"",
        "--duration",
        "1h",
        "--comment",
        "x",
        "--dry-run",
    ]);
    assert_eq!(
        (
            everything["matching"].as_u64(),
            everything["firing"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert!(
        all_silences(&server).is_empty(),
        "a dry run created a silence"
    );

    // For real: the id alone on stdout; a matching alert is silenced, another opens.
    let id = server
        .cli(&add(&["--author", "deploy-bot"]))
        .trim()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?}");
    let silenced = raise(
        &server,
        "disk full on db-9",
        &["alertname=DiskFull", "host=db-9"],
        "k9",
    );
    assert_eq!(silenced["status"], "silenced", "{silenced}");
    assert_eq!(silenced["silenced_by"], id.as_str());
    assert_eq!(silenced["incident_id"], Value::Null);
    let opened = raise(
        &server,
        "cpu hot on db-9",
        &["alertname=HighCPU", "host=db-9"],
        "k10",
    );
    assert_eq!(opened["status"], "opened", "{opened}");

    let listed = server.json(&["silence", "list"]);
    let s = &listed[0];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["state"], "active");
    assert_eq!(s["silenced_alerts"], 1);
    assert_eq!(s["created_by"], "user:admin (deploy-bot)");
    assert_eq!(s["comment"], "resizing volumes");
    assert_eq!(
        s["matchers"][1],
        serde_json::json!({"name": "host", "op": "=~", "value": "db-.*"})
    );
    let table = server.cli(&["silence", "list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("active") && row.contains("alertname=\"DiskFull\", host=~\"db-.*\""),
        "{row}"
    );
    assert!(row.split_whitespace().any(|w| w == "1"), "the count: {row}");

    // The silence lists the alert it caught.
    let shown = server.json(&["silence", "show", &id]);
    assert_eq!(
        ids(&shown["alerts"]),
        [silenced["alert_id"].as_str().unwrap()],
        "{shown:#}"
    );
    assert_eq!(shown["alerts"][0]["silenced_by"], id.as_str());
    assert_eq!(shown["alerts"][0]["labels"]["host"], "db-9");
    let text = server.cli(&["silence", "show", &id]);
    assert!(text.contains("silenced_alerts      1"), "{text}");
    assert!(text.contains("disk full on db-9"), "{text}");

    // Expired: listed as such, and once only.
    assert_eq!(
        server.cli(&["silence", "expire", &id]),
        format!("expired silence {id}\n")
    );
    assert_eq!(server.json(&["silence", "list"]), serde_json::json!([]));
    let expired = server.json(&["silence", "list", "--expired"]);
    assert_eq!(expired[0]["state"], "expired", "{expired:#}");
    assert_eq!(expired[0]["silenced_alerts"], 1);
    let token = server.token();
    let (code, message) = refused(&server, &token, &["silence", "expire", &id]);
    assert_eq!(code, 6, "{message}");
    assert!(message.contains("has expired already"), "{message}");
    let after = raise(
        &server,
        "disk full on db-9",
        &["alertname=DiskFull", "host=db-9"],
        "k11",
    );
    assert_eq!(after["status"], "opened", "{after}");

    // Both writes are in the audit log, naming the silence.
    let entries = wait_for("the silence writes in the audit log", || {
        let list = silence_entries(&server, "/firebreak.v1.SilenceService/");
        (list.len() >= 3).then_some(list)
    });
    let mut seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["method"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("/firebreak.v1.")
                    .to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let target = format!("silence:{id}");
    assert_eq!(
        seen,
        [
            (
                "SilenceService/CreateSilence".to_owned(),
                target.clone(),
                "ok".to_owned()
            ),
            (
                "SilenceService/ExpireSilence".to_owned(),
                target.clone(),
                "failed_precondition".to_owned()
            ),
            (
                "SilenceService/ExpireSilence".to_owned(),
                target,
                "ok".to_owned()
            ),
        ],
        "{entries:#?}"
    );
}

#[test]
fn hostile_silences_are_refused_naming_the_field_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let token = server.token();
    let long_comment = "x".repeat(4097);
    let many: Vec<String> = (0..65).map(|i| format!("l{i}=v")).collect();
    let mut too_many = vec!["silence", "add"];
    too_many.extend(many.iter().map(String::as_str));
    too_many.extend_from_slice(&["--duration", "1h", "--comment", "x"]);
    let long_id = "i".repeat(200);
    let unknown = uuid::Uuid::now_v7().to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "silence",
                "add",
                "job=~\"(\"",
                "--duration",
                "1h",
                "--comment",
                "x",
            ],
            5,
            "matchers[0].value",
        ),
        (
            vec![
                "silence",
                "add",
                "job=~\"(\"",
                "--duration",
                "1h",
                "--comment",
                "x",
                "--dry-run",
            ],
            5,
            "matchers[0].value",
        ),
        (
            vec![
                "silence",
                "add",
                "job=web",
                "--starts",
                "2099-01-02T00:00:00Z",
                "--ends",
                "2099-01-01T00:00:00Z",
                "--comment",
                "x",
            ],
            5,
            "endsAt: must be after startsAt",
        ),
        (
            vec![
                "silence",
                "add",
                "job=web",
                "--ends",
                "2001-01-01T00:00:00Z",
                "--comment",
                "x",
            ],
            5,
            "endsAt: in the past",
        ),
        (too_many, 5, "matchers: 1 to 64"),
        (
            vec![
                "silence",
                "add",
                "job=web",
                "--duration",
                "1h",
                "--comment",
                &long_comment,
            ],
            5,
            "comment: at most 4096 bytes",
        ),
        (
            vec![
                "silence",
                "add",
                "job=~\".*\"",
                "--duration",
                "1h",
                "--comment",
                "x",
            ],
            5,
            "matchers: at least one must not match the empty label set",
        ),
        (
            vec![
                "silence",
                "add",
                "job~web",
                "--duration",
                "1h",
                "--comment",
                "x",
            ],
            2,
            "matchers[0]",
        ),
        (vec!["silence", "expire", &unknown], 4, "no silence"),
        (vec!["silence", "show", &unknown], 4, "no silence"),
        (vec!["silence", "show", &long_id], 5, "id: 1 to 128 bytes"),
        (
            vec!["silence", "show", &unknown, "--limit", "5000"],
            5,
            "limit: at most 1000",
        ),
    ];
    for (args, exit, field) in cases {
        let (code, message) = refused(&server, &token, &args);
        assert_eq!(code, exit, "{args:?}: {message}");
        assert!(
            message.contains(field),
            "{args:?}: {field} not in {message}"
        );
    }
    assert!(
        all_silences(&server).is_empty(),
        "a refused silence was kept"
    );
}

#[test]
fn a_reader_lists_silences_but_may_not_add_or_expire_one_even_with_amtool() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    server.cli(&["user", "create", "vic"]);
    let vic = server.cli(&["token", "create", "--subject", "vic", "--role", "viewer"]);
    let vic = vic.trim();
    let id = server
        .cli(&[
            "silence",
            "add",
            "alertname=DiskFull",
            "--duration",
            "1h",
            "--comment",
            "ok",
        ])
        .trim()
        .to_owned();
    let (code, message) = refused(
        &server,
        vic,
        &[
            "silence",
            "add",
            "job=web",
            "--duration",
            "1h",
            "--comment",
            "x",
        ],
    );
    assert_eq!(code, 7, "{message}");
    assert!(message.contains("silences.manage"), "{message}");
    let (code, message) = refused(&server, vic, &["silence", "expire", &id]);
    assert_eq!(code, 7, "{message}");
    // The reader reads, and previews (a dry run changes nothing).
    let (code, out, err) = run_as(&server, vic, &["silence", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&listed), [id.as_str()]);
    let dry_run = [
        "silence",
        "add",
        "job=web",
        "--duration",
        "1h",
        "--comment",
        "x",
        "--dry-run",
    ];
    let (code, _, err) = run_as(&server, vic, &dry_run);
    assert_eq!(code, 0, "{err}");
    assert_eq!(all_silences(&server).len(), 1);
    assert_eq!(all_silences(&server)[0]["state"], "active");

    // amtool's writes are audited too: the viewer refused, the admin allowed.
    let amtool = |token: &str, args: &[&str]| {
        let config = dir.path().join("amtool-http.yaml");
        std::fs::write(
            &config,
            format!("authorization:\n  type: Bearer\n  credentials: {token}\n"),
        )
        .unwrap();
        Command::new("amtool")
            .arg(format!(
                "--alertmanager.url=http://127.0.0.1:{}",
                server.http
            ))
            .arg(format!("--http.config.file={}", config.display()))
            .args(args)
            .output()
            .expect("amtool (Debian's prometheus-alertmanager) is installed")
    };
    let out = amtool(
        vic,
        &["silence", "add", "job=web", "--comment=x", "--duration=1h"],
    );
    assert!(!out.status.success());
    let admin = server.token();
    let out = amtool(
        &admin,
        &["silence", "add", "job=db", "--comment=x", "--duration=1h"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = amtool(&admin, &["silence", "expire", &made]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = wait_for("amtool's writes in the audit log", || {
        let list = silence_entries(&server, "/api/v2/silence");
        (list.len() >= 3).then_some(list)
    });
    let mut seen: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap().to_owned();
            (
                field("method"),
                field("actor"),
                field("target"),
                field("outcome"),
            )
        })
        .collect();
    seen.sort();
    let target = format!("silence:{made}");
    assert_eq!(
        seen,
        [
            (
                "DELETE /api/v2/silence".to_owned(),
                "user:admin".to_owned(),
                target.clone(),
                "ok".to_owned()
            ),
            (
                "POST /api/v2/silences".to_owned(),
                "user:admin".to_owned(),
                target,
                "ok".to_owned()
            ),
            (
                "POST /api/v2/silences".to_owned(),
                "user:vic".to_owned(),
                String::new(),
                "permission_denied".to_owned()
            ),
        ],
        "{entries:#?}"
    );
}
