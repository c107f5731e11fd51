//! `firebreak run watch`: a run's changes so far, then each as it happens, one line each; the
//! same sequence whether read back from the store or followed live; refusals by field and by
//! permission.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BIN, Server, raise, run_in, run_in_dir, setup};

/// Notes, asks, notes again, sleeps durably, notes once more.
const STEPWISE: &str = "// Several steps, an approval and a sleep.\nfn run(incident, params) {\n    incident::note(\"looking\");\n    if approval::request(\"restart the worker?\") {\n        incident::note(\"restarting\");\n    }\n    sleep(1);\n    incident::note(\"done\");\n}\n";

/// `firebreak --output json run watch ARGS` on `server`, with its lines as they come.
fn watch(server: &Server, args: &[&str]) -> (Child, Receiver<Value>) {
    let token = server.token();
    let mut child = Command::new(BIN)
        .args(["--server", &server.grpc, "--token", &token])
        .args(["--output", "json", "run", "watch"])
        .args(args)
        .env_remove("FIREBREAK_SERVER")
        .env_remove("FIREBREAK_OUTPUT")
        .env_remove("FIREBREAK_CLIENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line}: {e}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next `n` lines of a watch.
fn take(rx: &Receiver<Value>, n: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    while lines.len() < n {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => lines.push(v),
            Err(_) => panic!("{} of {n} lines came: {lines:#?}", lines.len()),
        }
    }
    lines
}

/// What a line says, without when it happened or where it was read from.
fn said(v: &Value) -> (String, String, Value, String) {
    let step = &v["step"];
    let step = if step.is_null() {
        Value::Null
    } else {
        serde_json::json!([step["seq"], step["action"], step["status"], step["result"]])
    };
    (
        v["run_id"].as_str().unwrap().to_owned(),
        v["change"].as_str().unwrap().to_owned(),
        step,
        v["detail"].as_str().unwrap().to_owned(),
    )
}

/// A run with several steps, an approval and a durable sleep, watched three ways: one run
/// from the middle (its history, then live, ending when the run does), every run from
/// before it started (all live), and its incident after it ended (all history). Each sees
/// the same changes in the same order, and the exact sequence is the script's.
#[test]
fn run_watch_streams_a_runs_changes_in_order_from_history_and_live_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (runbooks, config) = setup(
        dir.path(),
        "stepwise",
        "capabilities: [incident, approval, sleep]\n",
        STEPWISE,
        "http://unused.invalid",
    );
    let server = Server::start(&dir.path().join("data"), &runbooks, &config);
    // Every run, from now on. It is open once a run started after it shows up: incidents
    // are raised (each starting a run that waits for approval) until one does.
    let (mut all, all_rx) = watch(&server, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        server.cli(&[
            "raise",
            "--title",
            &format!("warm-up {n}"),
            "--category",
            "service-outage",
        ]);
        if let Ok(v) = all_rx.recv_timeout(Duration::from_secs(1)) {
            assert_eq!(v["change"], "started", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch of every run never printed"
        );
    }
    while all_rx.recv_timeout(Duration::from_millis(300)).is_ok() {}

    let raised = server.json(&[
        "raise",
        "--title",
        "checkout workers stuck",
        "--category",
        "service-outage",
    ]);
    let id = raised["incident_id"].as_str().unwrap().to_owned();
    let run = run_in(&server, &id, "waiting_approval");
    let run_id = run["id"].as_str().unwrap().to_owned();

    // One run, from the middle: what happened so far comes first, from the store.
    let (mut one, one_rx) = watch(&server, &[&run_id]);
    let history = take(&one_rx, 3);
    assert!(history.iter().all(|v| v["backlog"] == true), "{history:#?}");
    server.cli(&["run", "approve", &run_id, "--comment", "go"]);
    // The rest comes live, and the watch ends with the run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = one.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "run watch did not end with the run"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    let mut one_lines = history;
    one_lines.extend(one_rx.try_iter());
    let one_said: Vec<_> = one_lines.iter().map(said).collect();
    let changes: Vec<&str> = one_said.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        changes,
        [
            "started",
            "action",
            "waiting_approval",
            "approved",
            "action",
            "action",
            "sleeping",
            "action",
            "succeeded"
        ],
        "{one_lines:#?}"
    );
    let steps: Vec<&Value> = one_said.iter().map(|s| &s.2).collect();
    let step = |seq: u32, action: &str, status: &str, result: Value| {
        serde_json::json!([seq, action, status, result])
    };
    assert_eq!(
        steps[1],
        &step(1, "incident.note", "done", serde_json::json!({}))
    );
    assert_eq!(
        steps[2],
        &step(2, "approval.request", "waiting", Value::Null)
    );
    assert_eq!(
        steps[4],
        &step(3, "incident.note", "done", serde_json::json!({}))
    );
    assert_eq!(steps[5][1], "sleep.for");
    assert_eq!(steps[5][2], "sleeping");
    assert_eq!(
        steps[7],
        &step(5, "incident.note", "done", serde_json::json!({}))
    );
    assert!(one_said[3].3.ends_with(": go"), "{:?}", one_said[3]);
    assert!(
        one_said[6].3.starts_with("step 4 sleeps until "),
        "{:?}",
        one_said[6]
    );
    assert!(one_said.iter().all(|s| s.0 == run_id));
    // History first, then live: the flags say which was which.
    let backlog: Vec<bool> = one_lines.iter().map(|v| v["backlog"] == true).collect();
    assert_eq!(
        backlog,
        [true, true, true, false, false, false, false, false, false]
    );

    // The watch of every run saw the same, all live.
    let mut all_lines: Vec<Value> = Vec::new();
    while !all_lines.iter().any(|v| v["change"] == "succeeded") {
        let v = all_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the run's end never came live: {all_lines:#?}"));
        if v["run_id"] == run_id.as_str() {
            all_lines.push(v);
        }
    }
    assert!(
        all_lines.iter().all(|v| v["backlog"] == false),
        "{all_lines:#?}"
    );
    assert_eq!(
        all_lines.iter().map(said).collect::<Vec<_>>(),
        one_said,
        "live and history differ"
    );
    let _ = all.kill();
    let _ = all.wait();

    // Its incident, after the end: all history, and the watch stays open for later runs.
    let (mut of_incident, incident_rx) = watch(&server, &["--incident", &id]);
    let lines = take(&incident_rx, one_said.len());
    assert!(lines.iter().all(|v| v["backlog"] == true), "{lines:#?}");
    assert_eq!(lines.iter().map(said).collect::<Vec<_>>(), one_said);
    assert!(
        of_incident.try_wait().unwrap().is_none(),
        "an incident's watch ended"
    );
    let _ = of_incident.kill();
    let _ = of_incident.wait();
}

/// Refusals: an unknown run (NOT_FOUND naming it), a malformed one or incident (invalid,
/// naming the field), both at once (usage), and a caller without `runbooks.read`.
#[test]
fn run_watch_refuses_unknown_and_malformed_ids_and_callers_without_the_permission() {
    let dir = tempfile::tempdir().unwrap();
    let (runbooks, config) = setup(
        dir.path(),
        "stepwise",
        "capabilities: [incident, approval, sleep]\n",
        STEPWISE,
        "http://unused.invalid",
    );
    let server = Server::start(&dir.path().join("data"), &runbooks, &config);
    let token = server.token();
    let run = |token: &str, args: &[&str]| {
        let mut all = vec![
            "--server",
            server.grpc.as_str(),
            "--token",
            token,
            "--output",
            "json",
            "run",
            "watch",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = run_in_dir(dir.path(), &all, None);
        assert!(out.is_empty(), "{out}");
        let e: Value = serde_json::from_str(&err)
            .unwrap_or_else(|_| panic!("not JSON on stderr for {args:?}: {err}"));
        (
            code,
            e["code"].as_str().unwrap().to_owned(),
            e["message"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, kind, message) = run(&token, &[&unknown]);
    assert_eq!((code, kind.as_str()), (4, "not_found"), "{message}");
    assert!(
        message.contains(&format!("run {unknown} not found")),
        "{message}"
    );
    let (code, kind, message) = run(&token, &["nope"]);
    assert_eq!((code, kind.as_str()), (5, "invalid"), "{message}");
    assert!(message.contains("run_id"), "{message}");
    let (code, kind, message) = run(&token, &["--incident", "nope"]);
    assert_eq!((code, kind.as_str()), (5, "invalid"), "{message}");
    assert!(message.contains("incident_id"), "{message}");
    let (code, kind, _) = run(&token, &[&unknown, "--incident", &unknown]);
    assert_eq!((code, kind.as_str()), (2, "usage"));
    let long = "x".repeat(100_000);
    let (code, kind, message) = run(&token, &[&long]);
    assert_eq!((code, kind.as_str()), (5, "invalid"), "{message}");
    assert!(message.contains("run_id"), "{message}");

    // An integration's token may raise alerts, not read runs.
    server.cli(&["user", "create", "pager"]);
    let pager = server.cli(&[
        "token",
        "create",
        "--subject",
        "pager",
        "--role",
        "integration",
    ]);
    let (code, kind, message) = run(pager.trim(), &[]);
    assert_eq!((code, kind.as_str()), (7, "denied"), "{message}");
    assert!(message.contains("runbooks.read"), "{message}");
    // A viewer may.
    server.cli(&["user", "create", "vera"]);
    let vera = server.cli(&["token", "create", "--subject", "vera", "--role", "viewer"]);
    let id = raise(&server);
    let run_id = run_in(&server, &id, "waiting_approval")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut child = Command::new(BIN)
        .args(["--server", &server.grpc, "--token", vera.trim()])
        .args(["--output", "json", "run", "watch", &run_id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("\"started\""), "{first}");

    // An open watch does not hold the server up when it stops: the watch ends, told the
    // server went away (exit 3), and the server exits.
    let mut server = server;
    let stopped = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let (watch_code, server_code) = loop {
        if let (Some(w), Some(s)) = (child.try_wait().unwrap(), server.child.try_wait().unwrap()) {
            break (w, s);
        }
        assert!(
            Instant::now() < deadline,
            "an open watch held the server up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(watch_code.code(), Some(3));
    assert!(server_code.success(), "{server_code:?}");
}
