//! Tests of the real `firebreak` binary: crash recovery with `kill -9`, and the README's
//! walk-through run command by command.

mod grouping;
mod incident_alerts;
mod review;
mod secrets;
mod silences;
mod status_updates;
mod tls;
mod watch_runs;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_firebreak");

use firebreak_testkit::ports::free_port;

/// A `firebreak up` process on free ports over a data directory that outlives it.
struct Server {
    child: Child,
    grpc: String,
    /// An empty directory client commands run from: they must not need `./runbooks`.
    cwd: tempfile::TempDir,
    /// The server's data directory, where client commands find its admin token.
    data: PathBuf,
    /// The HTTP port.
    http: u16,
}

impl Server {
    fn start(data: &Path, runbooks: &Path, config: &Path) -> Self {
        let (data, runbooks, config) = (data.to_str(), runbooks.to_str(), config.to_str());
        Self::up(
            Path::new("."),
            &[
                "--data-dir",
                data.unwrap(),
                "--runbooks",
                runbooks.unwrap(),
                "--config",
                config.unwrap(),
            ],
        )
    }

    /// `firebreak up ARGS` run from `cwd`, on free ports.
    fn up(cwd: &Path, args: &[&str]) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(BIN)
            .current_dir(cwd)
            .arg("up")
            .args(args)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let data = args
            .iter()
            .position(|a| *a == "--data-dir")
            .map_or_else(|| cwd.join("firebreak-data"), |i| cwd.join(args[i + 1]));
        let s = Self {
            child,
            grpc: format!("http://127.0.0.1:{grpc}"),
            cwd: tempfile::tempdir().unwrap(),
            data,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            assert!(Instant::now() < deadline, "firebreak up did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Runs a client command against this server and returns its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert!(code == 0, "firebreak {args:?} failed: {err}");
        out
    }

    /// Runs a client command against this server: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .current_dir(self.cwd.path())
            .env("FIREBREAK_DATA_DIR", &self.data)
            .args(["--server", &self.grpc])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The admin token the server's first start wrote.
    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.cli(&all)).unwrap()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    key: String,
    body: Value,
}

/// A local HTTP server: `/slow` answers after a second (so a kill lands mid-action), the
/// rest at once. Every request is recorded.
fn target(rt: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let sink = hits.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let hit = Hit {
                    path: uri.path().to_owned(),
                    key: headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                };
                let slow = hit.path == "/slow";
                sink.lock().unwrap().push(hit);
                if slow {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "{}"
            }
        },
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_runbook(dir: &Path) {
    std::fs::write(
        dir.join("contain-outage.yaml"),
        "name: contain-outage\nmatch:\n  categories: [service-outage]\nparameters:\n  target:\n    default: http://unset.invalid\ncapabilities: [http, incident, notify]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("contain-outage.rhai"),
        "// Calls a slow target, then notes and notifies.\nfn run(incident, params) {\n    http::post(params.target + \"/slow\", #{ id: incident.id });\n    incident::note(\"target called\");\n    notify::send(\"ops\", \"contained\");\n}\n",
    )
    .unwrap();
}

#[test]
fn kill_9_after_an_accepted_raise_loses_and_doubles_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, hits) = target(&rt);
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir(&runbooks).unwrap();
    write_runbook(&runbooks);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("live: true\nchannels:\n  - name: ops\n    kind: webhook\n    url: {url}/hook\nrunbook_params:\n  contain-outage:\n    target: {url}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");

    let server = Server::start(&data, &runbooks, &config);
    let raised = server.json(&[
        "raise",
        "--title",
        "payments service down",
        "--label",
        "service=payments",
    ]);
    let id = raised["incident_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty());
    // Kill while the runbook's first action is in flight.
    wait_for("the runbook's first call", || {
        hits.lock()
            .unwrap()
            .iter()
            .any(|h| h.path == "/slow")
            .then_some(())
    });
    server.kill9();

    let server = Server::start(&data, &runbooks, &config);
    let runs = wait_for("the run to finish after restart", || {
        let runs = server.json(&["run", "list", "--incident", &id]);
        let done = runs.as_array()?.iter().all(|r| r["state"] == "succeeded");
        done.then_some(runs)
    });
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "one run per runbook and incident");
    let run_id = runs[0]["id"].as_str().unwrap();
    let actions: Vec<&str> = runs[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["http.post", "incident.note", "notify.send"]);

    // The interrupted call was retried with the same idempotency key, so the target can dedupe.
    let slow: Vec<Hit> = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.path == "/slow")
        .cloned()
        .collect();
    assert!(!slow.is_empty());
    assert!(
        slow.iter().all(|h| h.key == format!("{run_id}:1")),
        "{slow:?}"
    );

    // Notifications: the opened incident and the runbook's message each delivered, the
    // message once (it was produced once, after the restart).
    let hooks = wait_for("both notifications", || {
        let hooks: Vec<Hit> = hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == "/hook")
            .cloned()
            .collect();
        let kinds: Vec<&str> = hooks
            .iter()
            .filter_map(|h| h.body["kind"].as_str())
            .collect();
        (kinds.contains(&"incident.opened") && kinds.contains(&"runbook.message")).then_some(hooks)
    });
    let messages = hooks
        .iter()
        .filter(|h| h.body["kind"] == "runbook.message")
        .count();
    assert_eq!(messages, 1);

    // The incident exists once, with the runbook's note once.
    let incidents = server.json(&["incident", "list"]);
    assert_eq!(incidents.as_array().unwrap().len(), 1);
    let timeline = wait_for("the note on the timeline", || {
        let t = server.json(&["incident", "timeline", &id]);
        t.as_array()?
            .iter()
            .any(|e| e["kind"] == "note")
            .then_some(t)
    });
    let notes = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "note")
        .count();
    assert_eq!(notes, 1, "{timeline:#}");
    let opened = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "opened")
        .count();
    assert_eq!(opened, 1);
}

/// A runbook directory and configuration for one test, with `url` as the `target` parameter.
fn setup(dir: &Path, name: &str, yaml: &str, rhai: &str, url: &str) -> (PathBuf, PathBuf) {
    let runbooks = dir.join("runbooks");
    std::fs::create_dir_all(&runbooks).unwrap();
    std::fs::write(
        runbooks.join(format!("{name}.yaml")),
        format!("name: {name}\nmatch:\n  categories: [service-outage]\nparameters:\n  target:\n    default: http://unset.invalid\n{yaml}"),
    )
    .unwrap();
    std::fs::write(runbooks.join(format!("{name}.rhai")), rhai).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("live: true\nrunbook_params:\n  {name}:\n    target: {url}\n"),
    )
    .unwrap();
    (runbooks, config)
}

/// The one run of an incident once it is in `state`.
fn run_in(server: &Server, incident: &str, state: &str) -> Value {
    wait_for(&format!("the run to be {state}"), || {
        let runs = server.json(&["run", "list", "--incident", incident]);
        let run = runs.as_array()?.first()?.clone();
        (run["state"] == state).then_some(run)
    })
}

fn raise(server: &Server) -> String {
    let raised = server.json(&[
        "raise",
        "--title",
        "payments service down",
        "--category",
        "service-outage",
    ]);
    raised["incident_id"].as_str().unwrap().to_owned()
}

const SLEEPY: &str = "// Calls the target, sleeps durably, calls it again.\nfn run(incident, params) {\n    http::post(params.target + \"/one\", #{});\n    sleep(2);\n    http::post(params.target + \"/two\", #{});\n}\n";

/// The `SLEEPY` runbook's server, killed with `kill -9` while the run sleeps.
struct Crashed {
    hits: Arc<Mutex<Vec<Hit>>>,
    runbooks: PathBuf,
    config: PathBuf,
    data: PathBuf,
    incident: String,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn crash_while_sleeping() -> Crashed {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, hits) = target(&rt);
    let dir = tempfile::tempdir().unwrap();
    let (runbooks, config) = setup(
        dir.path(),
        "sleepy",
        "capabilities: [http, sleep]\n",
        SLEEPY,
        &url,
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, &runbooks, &config);
    let incident = raise(&server);
    let run = run_in(&server, &incident, "sleeping");
    assert!(run["wake_at"].is_string(), "{run:#}");
    server.kill9();
    Crashed {
        hits,
        runbooks,
        config,
        data,
        incident,
        _rt: rt,
        _dir: dir,
    }
}

#[test]
fn kill_9_during_a_durable_sleep_repeats_no_call() {
    let Crashed {
        hits,
        runbooks,
        config,
        data,
        incident: id,
        _rt,
        _dir,
    } = crash_while_sleeping();

    let server = Server::start(&data, &runbooks, &config);
    let run = run_in(&server, &id, "succeeded");
    let run_id = run["id"].as_str().unwrap();
    let actions: Vec<(&str, &str)> = run["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("http.post", "done"),
            ("sleep.for", "done"),
            ("http.post", "done")
        ]
    );
    let hits = hits.lock().unwrap().clone();
    let keys: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| (h.path.as_str(), h.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("/one", format!("{run_id}:1").as_str()),
            ("/two", format!("{run_id}:3").as_str())
        ],
        "each idempotency key exactly once"
    );
}

#[test]
fn an_approval_survives_a_crash_and_the_run_resumes_when_approved() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, hits) = target(&rt);
    let dir = tempfile::tempdir().unwrap();
    let rhai = "// Asks before the risky call.\nfn run(incident, params) {\n    if approval::request(\"fail over to the standby?\") {\n        http::post(params.target + \"/failover\", #{});\n    }\n}\n";
    let (runbooks, config) = setup(
        dir.path(),
        "failover",
        "capabilities: [http, approval]\n",
        rhai,
        &url,
    );
    let data = dir.path().join("data");

    let server = Server::start(&data, &runbooks, &config);
    let id = raise(&server);
    let run = run_in(&server, &id, "waiting_approval");
    let run_id = run["id"].as_str().unwrap().to_owned();
    server.kill9();

    let server = Server::start(&data, &runbooks, &config);
    let pending = server.json(&["run", "approvals"]);
    assert_eq!(pending[0]["run_id"], run_id.as_str(), "{pending:#}");
    assert_eq!(pending[0]["prompt"], "fail over to the standby?");
    assert!(
        hits.lock().unwrap().is_empty(),
        "nothing acted before the approval"
    );
    // Dana approves with her own token: the timeline names her, whatever a request says.
    server.cli(&["user", "create", "dana"]);
    let dana = server.cli(&[
        "token",
        "create",
        "--subject",
        "dana",
        "--role",
        "responder",
    ]);
    server.cli(&[
        "--token",
        dana.trim(),
        "run",
        "approve",
        &run_id,
        "--comment",
        "standby is healthy",
    ]);
    run_in(&server, &id, "succeeded");
    let failovers = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.path == "/failover")
        .count();
    assert_eq!(failovers, 1);
    let timeline = wait_for("the approval on the timeline", || {
        let t = server.json(&["incident", "timeline", &id]);
        t.as_array()?
            .iter()
            .find(|e| e["kind"] == "runbook_approved")
            .cloned()
    });
    assert_eq!(timeline["data"]["detail"], "user:dana: standby is healthy");
}

#[test]
fn a_script_changed_between_crash_and_replay_fails_naming_the_step() {
    let Crashed {
        hits,
        runbooks,
        config,
        data,
        incident: id,
        _rt,
        _dir,
    } = crash_while_sleeping();
    // Someone edits the script while the run sleeps: the first call now goes elsewhere.
    std::fs::write(runbooks.join("sleepy.rhai"), SLEEPY.replace("/one", "/uno")).unwrap();

    let server = Server::start(&data, &runbooks, &config);
    let run = run_in(&server, &id, "failed");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.starts_with("non-determinism at step 1: the journal recorded http.post but the script now calls http.post with other arguments"),
        "{error}"
    );
    let paths: Vec<String> = hits
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.path.clone())
        .collect();
    assert_eq!(paths, ["/one"], "the changed script acted on nothing");
}

/// The issue's runbook that aborted the process: nesting maps 6,000 deep overflowed a
/// worker's stack, and the run, resumed at start-up, took the server down again after every
/// restart. Each of these ends its own run; the server serves on, and after a `kill -9` and a
/// restart no run is tried again.
const NESTING: &[(&str, &str)] = &[
    (
        "nest-maps",
        "fn run(incident, params) { let m = #{}; for j in 0..6000 { m = #{ inner: m }; } }\n",
    ),
    (
        "nest-deep",
        "fn run(incident, params) { let m = #{}; for j in 0..100000 { m = #{ inner: m }; } }\n",
    ),
    (
        "nest-arrays",
        "fn run(incident, params) { let a = []; for j in 0..100000 { a = [a]; } incident::note(`${a}`); }\n",
    ),
];

#[test]
fn nesting_scripts_end_their_own_runs_and_the_server_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir(&runbooks).unwrap();
    for (name, script) in NESTING {
        std::fs::write(
            runbooks.join(format!("{name}.yaml")),
            format!("name: {name}\nmatch:\n  categories: [service-outage]\ncapabilities: [incident.note]\n"),
        )
        .unwrap();
        std::fs::write(runbooks.join(format!("{name}.rhai")), script).unwrap();
    }
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "live: true\n").unwrap();
    let data = dir.path().join("data");

    let mut server = Server::start(&data, &runbooks, &config);
    let id = raise(&server);
    let failed = wait_for("every run to fail", || {
        let runs = server.json(&["run", "list", "--incident", &id]);
        let runs = runs.as_array()?.clone();
        (runs.len() == NESTING.len() && runs.iter().all(|r| r["state"] == "failed")).then_some(runs)
    });
    for run in &failed {
        let error = run["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty(),
            "a run failed without saying why: {run:#}"
        );
    }
    wait_for("a finish of each run on the timeline", || {
        (finishes(&server, &id) == NESTING.len()).then_some(())
    });
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    server.kill9();

    let server = Server::start(&data, &runbooks, &config);
    // A run started after the restart proves the executor has looked at the old ones.
    let again = raise(&server);
    wait_for("the new incident's runs to fail", || {
        let runs = server.json(&["run", "list", "--incident", &again]);
        let runs = runs.as_array()?.clone();
        (runs.len() == NESTING.len() && runs.iter().all(|r| r["state"] == "failed")).then_some(())
    });
    wait_for("a finish of each new run on the timeline", || {
        (finishes(&server, &again) == NESTING.len()).then_some(())
    });
    assert_eq!(
        finishes(&server, &id),
        NESTING.len(),
        "the restart finished an old run again"
    );
    server.cli(&["incident", "list"]);
}

/// How many `runbook_failed` entries an incident's timeline holds.
fn finishes(server: &Server, incident: &str) -> usize {
    let timeline = server.json(&["incident", "timeline", incident]);
    timeline.as_array().map_or(0, |t| {
        t.iter().filter(|e| e["kind"] == "runbook_failed").count()
    })
}

/// Runs the binary without a server; returns (exit code, stdout, stderr).
fn offline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn every_shipped_runbook_has_tests_and_they_pass() {
    let dir = repo("runbooks");
    let (code, out, err) = offline(&["runbook", "test", dir.to_str().unwrap(), "--require-tests"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("FAIL"), "{out}");
    let cases = out.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(cases >= 20, "{out}");
}

#[test]
fn runbook_test_prints_a_line_per_case_and_fails_on_a_failing_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("note.yaml"),
        "name: note\nmatch: {}\ncapabilities: [incident]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("note.rhai"),
        "// Notes once.\nfn run(incident, params) { incident::note(`hello ${incident.labels.who}`); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("note.test.yaml"),
        "cases:\n  - name: greets\n    incident: { labels: { who: sre } }\n    expect: { actions: [{ action: incident.note, args: { text: hello sre } }] }\n  - name: wrong on purpose\n    expect: { actions: [] }\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, out, _) = offline(&["runbook", "test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    note: greets"), "{out}");
    assert!(
        out.contains("FAIL  note: wrong on purpose: expected 0 action(s) [], the run called 1 [incident.note]"),
        "{out}"
    );
    assert!(out.contains("2 case(s): 1 passed, 1 failed"), "{out}");

    // The dry run of a fixture's case prints the plan.
    let fixture = dir.path().join("note.test.yaml");
    let (code, out, err) = offline(&[
        "--output",
        "json",
        "runbook",
        "dry-run",
        "note",
        "--fixture",
        fixture.to_str().unwrap(),
        "--case",
        "greets",
        "--runbooks",
        path,
    ]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["outcome"], "succeeded");
    assert_eq!(plan["plan"][0]["args"]["text"], "hello sre");

    // A broken fixture is an error with its line, and nothing runs.
    std::fs::write(
        dir.path().join("note.test.yaml"),
        "cases:\n  - name: x\n    expct: {}\n",
    )
    .unwrap();
    let (code, out, err) = offline(&["runbook", "test", path]);
    assert_eq!(code, 1);
    assert!(err.contains("note.test.yaml:3:"), "{err}");
    assert!(!out.contains("ok "), "{out}");
}

#[test]
fn the_authoring_guide_example_loads_and_its_tests_pass() {
    let guide = std::fs::read_to_string(repo("docs/runbooks.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("```")
            .and_then(|info| info.split_once(" file="))
            .map(|(_, f)| f.trim().to_owned())
        else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        std::fs::write(dir.path().join(&name), body.join("\n") + "\n").unwrap();
        files.push(name);
    }
    assert!(files.len() >= 3, "the guide's example files: {files:?}");
    let path = dir.path().to_str().unwrap();
    let (code, out, err) = offline(&["runbook", "check", path]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = offline(&["runbook", "test", path, "--require-tests"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 failed"), "{out}");
}

/// The README's walk-through, run as written (commands between the tested markers).
#[test]
fn the_readme_walkthrough_works() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let block = readme
        .split("<!-- walkthrough:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- walkthrough:end -->").next())
        .expect("README has a walkthrough block");
    // `ID=$(firebreak raise ...)` keeps the id for the later `$ID`s.
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.trim().trim_start_matches("ID=$(").trim_end_matches(')'))
        .filter(|l| l.starts_with("firebreak ") && !l.starts_with("firebreak up"))
        .collect();
    assert!(commands.len() >= 6, "{commands:?}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let runbooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let server = Server::start(&dir.path().join("data"), &runbooks, &config);
    let mut id = String::new();
    for line in commands {
        let line = line.replace("$ID", &id);
        let args = shell_words(&line[("firebreak ".len())..]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = server.cli(&args);
        if args[0] == "raise" && id.is_empty() {
            id = out.trim().to_owned();
        }
        // Runbooks run asynchronously; the walk-through's later steps expect the first run.
        if args[0] == "raise" {
            wait_for("the first run", || {
                let runs = server.json(&["run", "list", "--incident", &id]);
                (!runs.as_array()?.is_empty()).then_some(())
            });
        }
    }
    let inc = server.json(&["incident", "show", &id]);
    assert_eq!(
        inc["state"], "closed",
        "the walk-through ends with a closed incident"
    );
}

/// Splits a command line on spaces, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Runs the binary from `cwd` with `args`; returns (exit code, stdout, stderr). A command
/// still running after a minute is killed and fails the test, so a hang cannot stall the
/// suite (the commands under test time out in seconds).
fn run_in_dir(cwd: &Path, args: &[&str], stdout: Option<Stdio>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("FIREBREAK_SERVER")
        .env_remove("FIREBREAK_OUTPUT")
        .env_remove("FIREBREAK_CLIENT_CONFIG")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let piped = stdout.is_none();
    cmd.stdout(stdout.unwrap_or_else(Stdio::piped));
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("firebreak {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            r.read_to_string(&mut s).unwrap();
        }
        s
    };
    let out = if piped {
        read(child.stdout.as_mut().map(|o| o as &mut dyn std::io::Read))
    } else {
        String::new()
    };
    let err = read(child.stderr.as_mut().map(|o| o as &mut dyn std::io::Read));
    (status.code().unwrap_or(-1), out, err)
}

/// An embedded server with the shipped runbooks, and a directory to run commands from.
fn shipped_server(dir: &Path) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    Server::start(&dir.join("data"), &repo("runbooks"), &config)
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let server = shipped_server(dir.path());
    for n in 0..3 {
        server.cli(&["raise", "--title", &format!("disk full on db-{n}")]);
    }
    // `firebreak incident list | head -1` where head has already gone: every write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let token = server.token();
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "incident",
            "list",
        ],
        Some(Stdio::from(writer)),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}

/// A client configuration sending triage and orchestration calls to a port nobody
/// listens on.
fn dead_peers(dir: &Path) -> PathBuf {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let path = dir.join("client.yaml");
    std::fs::write(&path, format!("triage: {dead}\norchestration: {dead}\n")).unwrap();
    path
}

#[test]
fn raise_needs_only_intake_and_prints_only_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = shipped_server(dir.path());
    let client = dead_peers(dir.path());
    let client = client.to_str().unwrap();
    let token = server.token();
    let (code, out, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "--client-config",
            client,
            "raise",
            "--title",
            "checkout latency above SLO",
            "--severity",
            "2",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // Stdout is the id alone, as `ID=$(firebreak raise …)` takes it.
    let id = out.strip_suffix('\n').unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{out:?}");
    let shown = server.json(&["incident", "show", id]);
    assert_eq!(shown["id"], id);
    // SEV2 with nobody in command: flagged, in JSON and loudly in the table; gone once
    // someone commands it.
    assert_eq!(
        (shown["severity"].as_i64(), &shown["needs_commander"]),
        (Some(2), &Value::Bool(true))
    );
    let table = server.cli(&["incident", "show", id]);
    assert!(
        table.contains("needs_commander      YES: nobody commands this incident"),
        "{table}"
    );
    server.cli(&["incident", "assign", id, "--role", "commander", "alice"]);
    assert_eq!(
        server.json(&["incident", "show", id])["needs_commander"],
        false
    );
    let table = server.cli(&["incident", "show", id]);
    assert!(!table.contains("needs_commander"), "{table}");
    // A triage command with that configuration says triage is unreachable, exit code 3.
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--client-config",
            client,
            "--output",
            "json",
            "incident",
            "list",
        ],
        None,
    );
    assert_eq!(code, 3, "{err}");
    let e: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(e["exit"], 3);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach triage"),
        "{e}"
    );
}

#[test]
fn a_silent_server_times_out_as_unavailable() {
    // Accepts connections (the kernel does, into the backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &url,
            "--connect-timeout",
            "1s",
            "--request-timeout",
            "1s",
            "--output",
            "json",
            "incident",
            "list",
        ],
        None,
    );
    assert_eq!(code, 3, "{out}{err}");
    let e: Value = serde_json::from_str(&err).unwrap();
    assert_eq!(e["code"], "unavailable", "{e}");
    drop(silent);
}

#[test]
fn failures_have_their_own_exit_codes_and_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = shipped_server(dir.path());
    let id = server.cli(&["raise", "--title", "checkout latency above SLO"]);
    let id = id.trim();
    let token = server.token();
    let run = |args: &[&str]| {
        let mut all = vec![
            "--server",
            server.grpc.as_str(),
            "--token",
            &token,
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = run_in_dir(dir.path(), &all, None);
        let e: Value = serde_json::from_str(&err)
            .unwrap_or_else(|_| panic!("not JSON on stderr for {args:?}: {err}"));
        assert_eq!(e["exit"], code, "{e}");
        assert!(out.is_empty(), "{out}");
        (code, e["code"].as_str().unwrap().to_owned())
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        run(&["incident", "show", &unknown]),
        (4, "not_found".into())
    );
    assert_eq!(run(&["incident", "show", "nope"]), (5, "invalid".into()));
    assert_eq!(
        run(&["incident", "close", id, "--root-cause", "x"]),
        (6, "conflict".into())
    );
    assert_eq!(
        run(&["raise", "--title", "x", "--label", "no-equals-sign"]),
        (2, "usage".into())
    );
    assert_eq!(run(&["incident", "shwo", id]), (2, "usage".into()));
    // Without --output json the error is a line of text, with the same code.
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "incident",
            "show",
            &unknown,
        ],
        None,
    );
    assert_eq!(code, 4);
    assert!(err.starts_with("error: NotFound: "), "{err}");
    // No token (none given, none found): denied, and said so.
    let (code, _, err) = run_in_dir(
        dir.path(),
        &["--server", &server.grpc, "incident", "show", &unknown],
        None,
    );
    assert_eq!(code, 7, "{err}");
    assert!(
        err.starts_with("error: Unauthenticated: no credentials"),
        "{err}"
    );
}

/// `incident assign` and `unassign` give and take roles (text and JSON like their neighbours),
/// `incident show` lists them, and refusals exit with their codes naming what was wrong.
#[test]
fn incident_roles_are_assigned_shown_and_removed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = shipped_server(dir.path());
    let id = server.cli(&["raise", "--title", "disk full on db-1"]);
    let id = id.trim();
    let roles_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("roles "))
            .map(|l| l["roles".len()..].trim().to_owned())
            .unwrap_or_else(|| panic!("no roles line in\n{text}"))
    };
    assert_eq!(roles_line(&server.cli(&["incident", "show", id])), "-");

    let out = server.cli(&["incident", "assign", id, "--role", "commander", "alice"]);
    assert_eq!(roles_line(&out), "commander=alice");
    let inc = server.json(&["incident", "assign", id, "--role", "responder", "bob"]);
    let roles = inc["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2, "{inc:#}");
    assert_eq!(roles[1]["role"], "responder");
    assert_eq!(roles[1]["person"], "bob");
    assert_eq!(roles[1]["assigned_by"], "user:admin");
    assert!(
        roles[1]["assigned_at"].as_str().unwrap().ends_with('Z'),
        "{inc:#}"
    );
    // The permission role's name hands the commander role off.
    server.cli(&[
        "incident",
        "assign",
        id,
        "--role",
        "incident-commander",
        "carol",
    ]);
    assert_eq!(
        roles_line(&server.cli(&["incident", "show", id])),
        "responder=bob, commander=carol"
    );
    let out = server.cli(&["incident", "unassign", id, "--role", "responder", "bob"]);
    assert_eq!(roles_line(&out), "commander=carol");
    let shown = server.json(&["incident", "show", id]);
    let people: Vec<(&str, &str)> = shown["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["role"].as_str().unwrap(), r["person"].as_str().unwrap()))
        .collect();
    assert_eq!(people, [("commander", "carol")]);
    // The timeline says who did it.
    let timeline = server.json(&["incident", "timeline", id]);
    let entries: Vec<(&str, &str, &str)> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("role_"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["data"]["person"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("role_assigned", "user:admin", "alice"),
            ("role_assigned", "user:admin", "bob"),
            ("role_assigned", "user:admin", "carol"),
            ("role_removed", "user:admin", "bob"),
        ]
    );

    // Refusals: exit code, JSON error, and the message naming the field or the holder.
    let token = server.token();
    let run = |args: &[&str]| {
        let mut all = vec![
            "--server",
            server.grpc.as_str(),
            "--token",
            &token,
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        let (code, out, err) = run_in_dir(dir.path(), &all, None);
        assert!(out.is_empty(), "{out}");
        let e: Value = serde_json::from_str(&err)
            .unwrap_or_else(|_| panic!("not JSON on stderr for {args:?}: {err}"));
        (code, e["message"].as_str().unwrap().to_owned())
    };
    let (code, message) = run(&["incident", "unassign", id, "--role", "responder", "bob"]);
    assert_eq!(code, 4, "{message}");
    assert!(
        message.contains("bob") && message.contains("responder"),
        "{message}"
    );
    let (code, message) = run(&["incident", "assign", id, "--role", "Scribe", "dan"]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("role"), "{message}");
    let (code, message) = run(&["incident", "assign", id, "--role", "scribe", "dan smith"]);
    assert_eq!(code, 5, "{message}");
    assert!(message.contains("person"), "{message}");
    let (code, _, err) = run_in_dir(dir.path(), &["incident", "assign", id, "alice"], None);
    assert_eq!(code, 2, "--role is required: {err}");
}

#[test]
fn report_prints_the_groups_as_a_table_and_json_and_refuses_bad_windows_and_groupings() {
    let dir = tempfile::tempdir().unwrap();
    let server = shipped_server(dir.path());
    let id = server.cli(&[
        "raise",
        "--title",
        "disk full on db-1",
        "--category",
        "misconfiguration",
        "--label",
        "service=db",
    ]);
    let id = id.trim();
    server.cli(&["incident", "ack", id]);

    let r = server.json(&["report", "--since", "1d", "--by", "service"]);
    assert_eq!(r["by"], "service", "{r:#}");
    assert!(r["since"].as_str().unwrap().ends_with('Z'), "{r:#}");
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{r:#}");
    let g = &groups[0];
    assert_eq!(
        (
            &g["key"],
            &g["incidents"],
            &g["acknowledged"],
            &g["alerts"],
            &g["silenced"]
        ),
        (
            &Value::from("db"),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(0)
        ),
        "{r:#}"
    );
    assert_eq!(g["alerts_per_incident"], 1.0, "{r:#}");
    // One value: p50 and p90 are that value.
    let mtta = &g["mtta_seconds"];
    assert!(mtta["p50"].as_f64().unwrap() >= 0.0, "{r:#}");
    assert_eq!(mtta["p50"], mtta["p90"], "{r:#}");
    assert_eq!(r["total"]["incidents"], 1, "{r:#}");

    let table = server.cli(&["report", "--by", "service"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("incidents opened from "), "{table}");
    assert!(
        lines[1].starts_with("SERVICE") && lines[1].contains("MTTA P50"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("db ") && lines[3].starts_with("TOTAL "),
        "{table}"
    );

    // Refused before any call, naming the flag and the field; JSON errors under --output json.
    for (args, field) in [
        (
            &["report", "--since", "yesterday"][..],
            "--since: invalid since",
        ),
        (&["report", "--since", "30"][..], "--since: invalid since"),
        (&["report", "--since", "367d"][..], "--since: invalid since"),
        (&["report", "--by", "team"][..], "--by: invalid by"),
    ] {
        let mut all = vec!["--server", server.grpc.as_str(), "--output", "json"];
        all.extend_from_slice(args);
        let (code, out, err) = run_in_dir(dir.path(), &all, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
        let e: Value = serde_json::from_str(&err).unwrap();
        assert!(
            e["message"].as_str().unwrap().starts_with(field),
            "{args:?}: {err}"
        );
    }
}

const SERVICE_TOKEN: &str =
    "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str =
    "fb_adadadadadad_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[test]
fn raise_while_triage_is_down_is_accepted_without_an_id_on_stdout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats = rt.block_on(firebreak_testkit::nats::NatsServer::start());
    let db = rt.block_on(firebreak_testkit::postgres::TestDatabase::create());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("intake.yaml");
    let dead = free_port();
    std::fs::write(
        &config,
        format!(
            "database_url: {}\nnats:\n  url: {}\npeers:\n  triage: http://127.0.0.1:{dead}\n  notification: http://127.0.0.1:{dead}\nauth:\n  service_token: {SERVICE_TOKEN}\n  admin_token: {ADMIN_TOKEN}\n",
            db.url_for("intake"),
            nats.url()
        ),
    )
    .unwrap();
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "intake", "--config"])
        .arg(&config)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let intake = Server {
        child,
        grpc: format!("http://127.0.0.1:{grpc}"),
        cwd: tempfile::tempdir().unwrap(),
        data: PathBuf::new(),
        http,
    };
    // `serve` listens before it has connected to Postgres and NATS; it is ready after.
    wait_for("intake to be ready", || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    let client = dead_peers(dir.path());
    let client = client.to_str().unwrap();
    let raise = |json: bool| {
        // The configured admin token: intake verifies it without the directory, which is
        // as unreachable as triage here.
        let mut args = vec![
            "--server",
            intake.grpc.as_str(),
            "--token",
            ADMIN_TOKEN,
            "--client-config",
            client,
        ];
        if json {
            args.extend(["--output", "json"]);
        }
        args.extend(["raise", "--title", "payments service down"]);
        run_in_dir(dir.path(), &args, None)
    };
    // `ID=$(firebreak raise …)` captures nothing rather than a sentence; the status is on
    // stderr and the alert is accepted (exit 0).
    let (code, out, err) = raise(false);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "stdout holds an id or nothing");
    assert!(err.contains("accepted"), "{err}");
    let (code, out, err) = raise(true);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert!(answer["incident_id"].is_null(), "{answer}");
    assert!(uuid::Uuid::parse_str(answer["alert_id"].as_str().unwrap()).is_ok());
}

#[test]
fn up_from_an_empty_directory_runs_the_built_in_runbooks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::up(dir.path(), &[]);
    let runbooks = server.json(&["runbook", "list"]);
    let names: Vec<&str> = runbooks
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let shipped = std::fs::read_dir(repo("runbooks"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().ends_with(".rhai")
        })
        .count();
    assert_eq!(names.len(), shipped, "{names:?}");
    assert!(names.contains(&"denial-of-service"), "{names:?}");
    assert!(dir.path().join("firebreak-data").is_dir());
}

#[test]
fn up_with_invalid_runbooks_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "up",
            "--runbooks",
            "./missing",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot read the runbook directory"), "{err}");
    assert!(
        !dir.path().join("firebreak-data").exists(),
        "configuration is checked before the data directory is made"
    );
}

#[test]
fn dry_run_of_an_incident_uses_the_servers_runbooks_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (runbooks, config) = setup(
        dir.path(),
        "page-payments",
        "capabilities: [http, incident]\n",
        "// Calls the target, then notes.\nfn run(incident, params) {\n    http::post(params.target + \"/page\", #{ id: incident.id });\n    incident::note(\"paged\");\n}\n",
        "http://server-side.invalid",
    );
    let server = Server::start(&dir.path().join("data"), &runbooks, &config);
    let id = raise(&server);
    // Run from an empty directory: no `./runbooks` to read.
    let plan = server.json(&["runbook", "dry-run", "page-payments", "--incident", &id]);
    assert_eq!(plan["outcome"], "succeeded", "{plan:#}");
    assert_eq!(plan["plan"][0]["action"], "http.post", "{plan:#}");
    assert_eq!(
        plan["plan"][0]["args"]["url"], "http://server-side.invalid/page",
        "the server's parameters: {plan:#}"
    );
    assert_eq!(plan["plan"][0]["args"]["body"]["id"], id.as_str());
    assert_eq!(plan["plan"][1]["action"], "incident.note");
    // A runbook the server does not have is not found, whatever the local directory holds.
    let token = server.token();
    let (code, _, err) = run_in_dir(
        &repo("."),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "runbook",
            "dry-run",
            "malware",
            "--incident",
            &id,
        ],
        None,
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("no runbook named \"malware\" on this server"),
        "{err}"
    );
}

#[test]
fn runbook_errors_are_one_json_object_under_output_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "name: bad\nmatch: {}\ncapabilities: [teleport]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.rhai"),
        "// Bad.\nfn run(incident, params) {}\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, out, err) = offline(&["--output", "json", "runbook", "check", path]);
    assert_eq!(code, 1, "{out}{err}");
    let e: Value =
        serde_json::from_str(&err).unwrap_or_else(|_| panic!("not one JSON object: {err}"));
    assert_eq!(e["code"], "failed", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("bad.yaml:3:1: unknown capability"),
        "{message}"
    );
}

/// A journal flood (runs of 300 steps of 15 KB: 4.5 MB each, past gRPC's 4 MiB limit) leaves
/// `run show` whole (it follows every page of the journal) and `run list` paged with
/// `--limit` and `--page-token`.
#[test]
fn run_show_and_run_list_survive_a_journal_flood() {
    let dir = tempfile::tempdir().unwrap();
    let rhai = "// Journals 300 large notes.\nfn run(incident, params) {\n    let text = \"\";\n    for i in 0..15000 { text += \"x\"; }\n    for i in 0..300 { incident::note(`${i} ${text}`); }\n}\n";
    let (runbooks, config) = setup(
        dir.path(),
        "flood",
        "capabilities: [incident]\ntimeout_seconds: 60\nlimits: { max_steps: 400 }\n",
        rhai,
        "http://unused.invalid",
    );
    let server = Server::start(&dir.path().join("data"), &runbooks, &config);
    let mut runs = Vec::new();
    for host in ["db-1", "db-2"] {
        let raised = server.json(&[
            "raise",
            "--title",
            &format!("{host} down"),
            "--category",
            "service-outage",
        ]);
        let incident = raised["incident_id"].as_str().unwrap().to_owned();
        let run = run_in(&server, &incident, "succeeded");
        runs.push(run["id"].as_str().unwrap().to_owned());
    }

    for id in &runs {
        let run = server.json(&["run", "show", id]);
        let seqs: Vec<u64> = run["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=300).collect::<Vec<_>>(),
            "the whole journal of {id}"
        );
    }

    // One run a page: the first says where the next starts, the last says nothing more.
    let grpc = server.grpc.clone();
    let token = server.token();
    let list = |extra: &[&str]| {
        let mut args = vec![
            "--server",
            grpc.as_str(),
            "--token",
            &token,
            "run",
            "list",
            "--limit",
            "1",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run_in_dir(server.cwd.path(), &args, None);
        assert_eq!(code, 0, "{err}");
        (out, err)
    };
    let (first, err) = list(&[]);
    let token = err
        .trim()
        .strip_prefix("more runs: --page-token ")
        .unwrap_or_else(|| panic!("no token: {err}"))
        .to_owned();
    let (second, err) = list(&["--page-token", &token]);
    assert!(
        first.contains(&runs[1]) && second.contains(&runs[0]),
        "{first}\n{second}"
    );
    // The list carries the first part of each journal, marked with a `+`.
    assert!(first.contains("+"), "{first}");
    assert!(err.is_empty(), "the second page is the last: {err}");
    // Tokens are opaque: a run's id is not one, and is refused naming the field.
    let admin = server.token();
    let mut args = vec!["--server", grpc.as_str(), "--token", &admin, "run", "list"];
    args.extend(["--page-token", runs[0].as_str()]);
    let (code, _, err) = run_in_dir(server.cwd.path(), &args, None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("page_token"), "{err}");
}

#[test]
fn audit_list_shows_who_changed_what_filtered_by_actor_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "auth:\n  sync_interval_ms: 50\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let id = raise(&server);
    server.cli(&["user", "create", "dana"]);
    let dana = server.cli(&[
        "token",
        "create",
        "--subject",
        "dana",
        "--role",
        "responder",
    ]);
    server.cli(&["--token", dana.trim(), "incident", "ack", &id]);
    let entries = wait_for("dana's acknowledgement in the audit log", || {
        let list = server.json(&["audit", "list", "--actor", "user:dana"]);
        (list.as_array()?.len() == 1).then_some(list)
    });
    let ack = &entries[0];
    assert_eq!(ack["actor"], "user:dana", "{entries:#}");
    assert_eq!(ack["method"], "/firebreak.v1.IncidentService/Acknowledge");
    assert_eq!(ack["roles"], "responder");
    assert_eq!(ack["outcome"], "ok");
    assert!(ack["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!ack["at"].as_str().unwrap().is_empty());
    // The admin's changes are there, and filters narrow them.
    let admin = server.json(&[
        "audit",
        "list",
        "--actor",
        "user:admin",
        "--action",
        "CreateUser",
        "--since",
        "1h",
    ]);
    assert_eq!(admin.as_array().unwrap().len(), 1, "{admin:#}");
    let limited = server.json(&["audit", "list", "--limit", "1"]);
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let none = server.json(&["audit", "list", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(none, serde_json::json!([]));
    // The table names the method without its package.
    let table = server.cli(&["audit", "list", "--actor", "user:dana"]);
    assert!(table.contains("IncidentService/Acknowledge"), "{table}");
    // A responder may not read the log.
    let out = Command::new(BIN)
        .current_dir(server.cwd.path())
        .args([
            "--server",
            &server.grpc,
            "--token",
            dana.trim(),
            "audit",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Embedded mode (SQLite): integration keys and signing secrets, declared and created at
/// run time, are in no byte of the data directory's files (every database and its log)
/// and no line of the debug log, after good and bad calls with them.
#[test]
fn no_key_or_secret_reaches_the_data_directory_or_the_log() {
    const DECLARED_KEY: &str = "declared-key-0a1b2c3d4e";
    const DECLARED_SECRET: &str = "declared-secret-9f8e7d6c5b";
    const RUNTIME_SECRET: &str = "runtime-secret-5a4b3c2d1e";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("integrations:\n  - {{ name: decl, kind: alertmanager, key: {DECLARED_KEY}, signing_secret: {DECLARED_SECRET} }}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let runbooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let log = dir.path().join("server.log");
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .arg("--runbooks")
        .arg(&runbooks)
        .arg("--config")
        .arg(&config)
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", grpc)).ok()
    });
    let client = |args: &[&str]| -> Value {
        let out = Command::new(BIN)
            .env("FIREBREAK_DATA_DIR", &data)
            .args([
                "--server",
                &format!("http://127.0.0.1:{grpc}"),
                "--output",
                "json",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let secret_file = dir.path().join("secret.txt");
    std::fs::write(&secret_file, RUNTIME_SECRET).unwrap();
    let created = client(&[
        "integration",
        "create",
        "rt",
        "--kind",
        "alertmanager",
        "--signing-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let runtime_key = created[0]["key"].as_str().unwrap().to_owned();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let post = |key: &str, name: &str, secret: Option<&str>| {
        let body = serde_json::to_vec(&serde_json::json!({
            "version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"), "status": "firing",
            "alerts": [{ "status": "firing", "labels": { "alertname": name } }],
        }))
        .unwrap();
        let mut req = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{http}/v1/webhooks/alertmanager/{key}"
            ))
            .body(body.clone());
        if let Some(s) = secret {
            let sig = firebreak_intake::sign(&firebreak_intake::Secret::new(s), now, &body);
            req = req.header("x-firebreak-signature", sig);
        }
        rt.block_on(async { req.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(post(DECLARED_KEY, "d-good", Some(DECLARED_SECRET)), 200);
    assert_eq!(
        post(DECLARED_KEY, "d-bad", Some("wrong-secret-000000000")),
        401
    );
    assert_eq!(post(&runtime_key, "r-good", Some(RUNTIME_SECRET)), 200);
    assert_eq!(post(&runtime_key, "r-unsigned", None), 401);
    assert_eq!(post("not-a-key-0000000000", "nobody", None), 401);
    wait_for("the incidents of the good calls", || {
        let list = client(&["incident", "list"]);
        (list.as_array().map_or(0, Vec::len) >= 2).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();

    let secrets_key = std::fs::read_to_string(data.join("secrets.key")).unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "secrets.key") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        files += 1;
        for needle in [
            DECLARED_KEY,
            DECLARED_SECRET,
            RUNTIME_SECRET,
            runtime_key.as_str(),
            secrets_key.trim(),
        ] {
            assert!(!text.contains(needle), "{needle} in {}", path.display());
        }
    }
    assert!(files >= 5, "the databases were read");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "the log is at debug");
    for needle in [
        DECLARED_KEY,
        DECLARED_SECRET,
        RUNTIME_SECRET,
        runtime_key.as_str(),
        secrets_key.trim(),
    ] {
        assert!(!logged.contains(needle), "{needle} in the log");
    }
}

#[test]
fn people_are_declared_in_configuration_or_made_with_contact_methods_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "users:\n  - name: olga\n    email: olga@example.com\n    time_zone: Europe/Berlin\n    contact_methods:\n      - { name: work, kind: email, address: olga@example.com }\n      - { name: phone, kind: sms, address: '+4915112345678' }\n    notification_rules:\n      - { after_minutes: 0, method: work }\n      - { after_minutes: 5, method: phone }\nteams:\n  - { name: payments, members: [olga] }\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    server.cli(&[
        "user",
        "create",
        "dana",
        "--contact",
        "email:work=dana@example.com",
        "--contact",
        "sms:phone=+14155550100",
        "--rule",
        "0:work",
        "--rule",
        "10:phone",
    ]);
    server.cli(&["user", "update", "dana", "--time-zone", "America/New_York"]);
    let users = server.json(&["user", "list"]);
    let find = |name: &str| {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .unwrap()
            .clone()
    };
    let olga = find("olga");
    assert_eq!(olga["declared"], true, "{olga}");
    assert_eq!(olga["contact_methods"][1]["kind"], "sms", "{olga}");
    assert_eq!(olga["notification_rules"][1]["after_minutes"], 5, "{olga}");
    let dana = find("dana");
    assert_eq!(dana["declared"], false);
    assert_eq!(dana["time_zone"], "America/New_York");
    // The update kept what it was not told to change.
    assert_eq!(
        dana["contact_methods"][1]["address"], "+14155550100",
        "{dana}"
    );
    assert_eq!(dana["notification_rules"][1]["method"], "phone", "{dana}");
    let teams = server.json(&["team", "list"]);
    assert_eq!(teams[0]["members"], serde_json::json!(["olga"]), "{teams}");
    assert_eq!(teams[0]["declared"], true, "{teams}");

    // A declared person is changed in the configuration only; bad contacts name the field.
    let token = server.token();
    let refused = |args: &[&str]| {
        let mut all = vec!["--server", server.grpc.as_str(), "--token", &token];
        all.extend_from_slice(args);
        let (code, _, err) = run_in_dir(dir.path(), &all, None);
        assert_ne!(code, 0, "{args:?}");
        err
    };
    let err = refused(&["user", "update", "olga", "--email", "o@example.com"]);
    assert!(err.contains("configuration"), "{err}");
    let err = refused(&["user", "delete", "olga"]);
    assert!(err.contains("configuration"), "{err}");
    let err = refused(&["user", "create", "erin", "--contact", "sms:phone=12"]);
    assert!(err.contains("contact_methods: [0].address"), "{err}");
    let err = refused(&["user", "create", "erin", "--contact", "pager:x=1"]);
    assert!(err.contains("contact_methods.kind"), "{err}");
    // Nothing was made.
    let users = server.json(&["user", "list"]);
    assert!(
        !users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "erin")
    );
    assert_eq!(find("olga")["email"], "olga@example.com");
}

#[test]
fn escalation_test_dry_runs_who_would_be_paged_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "channels:\n  - { name: mail, kind: email, host: 127.0.0.1, tls: none, from: 'Firebreak <firebreak@example.com>' }\nescalation_policies:\n  - name: sre\n    repeat: 1\n    steps:\n      - channels: [log]\n      - { after_seconds: 120, targets: [{ channel: log }] }\nroutes:\n  - { match: { categories: [service-outage] }, policy: sre }\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let pages = server.json(&["escalation", "test", "sre", "--at", "2026-12-01T00:00:00Z"]);
    let rows: Vec<(u64, u64, String)> = pages
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["step"].as_u64().unwrap(),
                p["repeat"].as_u64().unwrap(),
                p["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |step, repeat, at: &str| (step, repeat, at.to_owned());
    assert_eq!(
        rows,
        [
            row(1, 0, "2026-12-01T00:00:00Z"),
            row(2, 0, "2026-12-01T00:02:00Z"),
            // The repeat begins repeat_after_seconds (300 by default) after the last step.
            row(1, 1, "2026-12-01T00:07:00Z"),
            row(2, 1, "2026-12-01T00:09:00Z"),
        ],
        "{pages:#}"
    );
    assert!(
        pages[0]["via"] == "log" && pages[0]["kind"] == "channel",
        "{pages:#}"
    );
    // The dry run opened no incident.
    assert_eq!(server.json(&["incident", "list"]), serde_json::json!([]));
    let token = server.token();
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "escalation",
            "test",
            "nobody",
        ],
        None,
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("nobody"), "{err}");

    // A routed incident pages at once: its first step ran and paged the log channel, and
    // `delivery list` shows both; nothing failed.
    let id = raise(&server);
    let listed = wait_for("the first step's page", || {
        let list = server.json(&["delivery", "list", "--incident", &id]);
        let kinds: Vec<String> = list
            .as_array()?
            .iter()
            .filter(|d| d["status"] == "delivered")
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        (kinds.contains(&"escalation.step".to_owned())
            && kinds.contains(&"escalation.page".to_owned()))
        .then_some(list)
    });
    let page = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "escalation.page")
        .unwrap();
    assert_eq!(page["channel"], "log", "{listed:#}");
    assert_eq!(page["attempts"], 1, "{listed:#}");
    // The log gives no provider id; the page was handed over when it was delivered.
    assert_eq!(page["provider_id"], "", "{listed:#}");
    assert_eq!(page["sent_at"], page["delivered_at"], "{listed:#}");
    assert!(page["sent_at"].is_string(), "{listed:#}");
    assert_eq!(
        server.json(&["delivery", "list", "--failed"]),
        serde_json::json!([])
    );
    // What a channel would send, rendered, nothing sent.
    let preview = server.cli(&[
        "template",
        "preview",
        "mail",
        "--incident",
        &id,
        "--event",
        "page",
    ]);
    assert!(preview.starts_with("Subject: "), "{preview}");
    assert!(preview.contains("payments service down"), "{preview}");
    let token = server.token();
    for (args, code) in [
        (
            vec!["template", "preview", "nope", "--incident", id.as_str()],
            4,
        ),
        (
            vec![
                "template",
                "preview",
                "mail",
                "--incident",
                id.as_str(),
                "--event",
                "party",
            ],
            5,
        ),
    ] {
        let mut all = vec!["--server", server.grpc.as_str(), "--token", token.as_str()];
        all.extend(args.iter().copied());
        let (got, _, err) = run_in_dir(dir.path(), &all, None);
        assert_eq!(got, code, "{args:?}: {err}");
    }
    // The second step waits its two minutes: pending, listed by state. So does the reminder
    // to post a status update (a SEV1-2 incident's, docs/status-updates.md).
    let pending = server.json(&["delivery", "list", "--status", "pending", "--incident", &id]);
    let mut kinds: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["escalation.step", "status.reminder"], "{pending:#}");
}

#[test]
fn schedules_say_who_is_on_call_their_shifts_and_their_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "users:\n  - { name: alice, contact_methods: [{ name: work, kind: email, address: alice@example.com }] }\n  - { name: bob }\nschedules:\n  - name: primary\n    time_zone: Europe/Berlin\n    combine: exclusive\n    layers:\n      - name: week\n        members: [alice, bob]\n        rotation: { every: 1w, hand_off: \"09:00\", start: \"2026-11-02\" }\n        restrictions: [{ days: [mon, tue, wed, thu, fri], from: \"09:00\", to: \"18:00\" }]\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let now = server.json(&["oncall"]);
    assert_eq!(now[0]["schedule"], "primary", "{now:#}");
    assert_eq!(now[0]["time_zone"], "Europe/Berlin", "{now:#}");
    // Monday 2 November, 09:00-18:00 Berlin (08:00-17:00 UTC) is alice's; then nobody
    // until Tuesday 09:00.
    let shifts = server.json(&[
        "schedule",
        "show",
        "primary",
        "--from",
        "2026-11-02T00:00:00Z",
        "--to",
        "2026-11-03T12:00:00Z",
    ]);
    let rows: Vec<(String, String, Value)> = shifts
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start"].as_str().unwrap().to_owned(),
                s["end"].as_str().unwrap().to_owned(),
                s["users"].clone(),
            )
        })
        .collect();
    let row = |a: &str, b: &str, who: Value| (a.to_owned(), b.to_owned(), who);
    assert_eq!(
        rows,
        [
            row(
                "2026-11-02T00:00:00Z",
                "2026-11-02T08:00:00Z",
                serde_json::json!([])
            ),
            row(
                "2026-11-02T08:00:00Z",
                "2026-11-02T17:00:00Z",
                serde_json::json!(["alice"])
            ),
            row(
                "2026-11-02T17:00:00Z",
                "2026-11-03T08:00:00Z",
                serde_json::json!([])
            ),
            row(
                "2026-11-03T08:00:00Z",
                "2026-11-03T12:00:00Z",
                serde_json::json!(["alice"])
            ),
        ],
        "{shifts:#}"
    );
    // In text, times are in the schedule's zone, or --tz.
    let text = server.cli(&[
        "schedule",
        "show",
        "primary",
        "--from",
        "2026-11-02T00:00:00Z",
        "--to",
        "2026-11-03T00:00:00Z",
        "--tz",
        "America/New_York",
    ]);
    assert!(text.contains("2026-11-02 03:00 -05:00"), "{text}");
    // Evenings and weekends are gaps, every one of them.
    let gaps = server.json(&["schedule", "gaps", "primary", "--days", "14"]);
    let n = gaps.as_array().unwrap().len();
    assert!((10..=12).contains(&n), "{n}: {gaps:#}");
    assert!(
        gaps.as_array()
            .unwrap()
            .iter()
            .all(|g| g["users"] == serde_json::json!([]))
    );
    let token = server.token();
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "schedule",
            "show",
            "nope",
        ],
        None,
    );
    assert_eq!(code, 4, "{err}");

    // The iCalendar feeds, for calendar apps: the token in the query or as a bearer.
    let get = |path: &str, bearer: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.http)).unwrap();
        let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let feed = get(
        &format!("/v1/oncall/schedules/primary.ics?token={token}"),
        None,
    );
    assert!(feed.starts_with("HTTP/1.1 200"), "{feed}");
    assert!(feed.contains("content-type: text/calendar"), "{feed}");
    assert!(
        feed.contains("BEGIN:VCALENDAR") && feed.contains("BEGIN:VEVENT"),
        "{feed}"
    );
    assert!(feed.contains("SUMMARY:On call (primary): "), "{feed}");
    let mine = get("/v1/oncall/users/alice.ics", Some(&token));
    assert!(mine.starts_with("HTTP/1.1 200"), "{mine}");
    assert!(mine.contains("alice (primary)"), "{mine}");
    assert!(!mine.contains("bob"), "{mine}");
    // Nobody, a made-up token, a bad name, a missing schedule.
    assert!(get("/v1/oncall/schedules/primary.ics", None).starts_with("HTTP/1.1 401"));
    let fake = "fb_000000000000_0000000000000000000000000000000000000000000000000000000000000000";
    assert!(get("/v1/oncall/schedules/primary.ics", Some(fake)).starts_with("HTTP/1.1 401"));
    assert!(
        get(
            &format!("/v1/oncall/schedules/Bad%20Name.ics?token={token}"),
            None
        )
        .starts_with("HTTP/1.1 404")
    );
    assert!(
        get(
            &format!("/v1/oncall/schedules/nope.ics?token={token}"),
            None
        )
        .starts_with("HTTP/1.1 404")
    );
}

/// Escalation timers are durable: the server is killed (`kill -9`) after step 1 paged and
/// before step 2 is due; after the restart step 2 pages exactly once, when due, and step 1
/// is not repeated. (Step 2 is a minute after step 1, the least a policy allows, so this
/// test waits a real minute.)
#[test]
fn kill_9_between_escalation_steps_pages_the_next_step_once_and_repeats_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, hits) = target(&rt);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "channels:\n  - {{ name: first, kind: webhook, url: {url}/first }}\n  - {{ name: second, kind: webhook, url: {url}/second }}\nescalation_policies:\n  - name: sre\n    steps:\n      - channels: [first]\n      - {{ after_seconds: 60, channels: [second] }}\nroutes:\n  - {{ policy: sre }}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let empty = dir.path().join("no-runbooks");
    std::fs::create_dir(&empty).unwrap();
    let server = Server::start(&data, &empty, &config);
    let id = raise(&server);
    let pages = |path: &str| {
        hits.lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path && h.body["kind"] == "escalation.page")
            .count()
    };
    wait_for("step 1's page", || (pages("/first") == 1).then_some(()));
    let opened = Instant::now();
    server.kill9();
    assert_eq!(pages("/second"), 0);

    let server = Server::start(&data, &empty, &config);
    // Step 2 comes due a minute after step 1 ran: wait past it, then a little more for any
    // double.
    while opened.elapsed() < Duration::from_secs(58) {
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for("step 2's page after the restart", || {
        (pages("/second") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pages("/second"), 1, "step 2 paged exactly once");
    assert_eq!(pages("/first"), 1, "step 1 was not repeated");
    let list = server.json(&["delivery", "list", "--incident", &id]);
    let steps = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "escalation.step" && d["status"] == "delivered")
        .count();
    assert_eq!(steps, 2, "{list:#}");
}

#[test]
fn schedules_made_at_run_time_and_their_overrides_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "users:\n  - { name: alice }\n  - { name: bob }\n  - { name: carol }\nschedules:\n  - name: primary\n    time_zone: UTC\n    combine: exclusive\n    layers:\n      - { name: always, members: [alice], rotation: { every: 1d, hand_off: '00:00', start: '2020-01-01' } }\n",
    )
    .unwrap();
    let night = dir.path().join("night.yaml");
    std::fs::write(
        &night,
        "name: night\ntime_zone: UTC\ncombine: exclusive\nlayers:\n  - { name: always, members: [bob], rotation: { every: 1d, hand_off: '00:00', start: '2020-01-01' } }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &repo("runbooks"), &config);
    server.cli(&["schedule", "put", night.to_str().unwrap()]);
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let added = server.json(&[
        "schedule",
        "override",
        "add",
        "primary",
        "--from",
        &fmt(now - time::Duration::minutes(1)),
        "--to",
        &fmt(now + time::Duration::hours(1)),
        "--replace",
        "alice",
        "--with",
        "carol",
    ]);
    let id = added["id"].as_str().unwrap().to_owned();
    let who = |server: &Server| {
        let now = server.json(&["oncall"]);
        now.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["schedule"].as_str().unwrap().to_owned(),
                    s["users"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = vec![
        ("night".to_owned(), serde_json::json!(["bob"])),
        ("primary".to_owned(), serde_json::json!(["carol"])),
    ];
    assert_eq!(who(&server), expected);
    drop(server);

    // After a restart: the same schedules, the same override.
    let server = Server::start(&data, &repo("runbooks"), &config);
    assert_eq!(who(&server), expected);
    let listed = server.json(&["schedule", "list"]);
    assert_eq!(listed[0]["name"], "night", "{listed:#}");
    assert_eq!(listed[0]["declared"], false, "{listed:#}");
    assert_eq!(listed[1]["overrides"][0]["id"], id.as_str(), "{listed:#}");
    server.cli(&["schedule", "override", "remove", "primary", &id]);
    server.cli(&["schedule", "delete", "night"]);
    assert_eq!(
        who(&server),
        [("primary".to_owned(), serde_json::json!(["alice"]))]
    );
    // A declared schedule is not deleted at run time, and the CLI says why.
    let token = server.token();
    let (code, _, err) = run_in_dir(
        dir.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &token,
            "schedule",
            "delete",
            "primary",
        ],
        None,
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("declared in configuration"), "{err}");
}

#[test]
fn incident_watch_prints_each_timeline_entry_as_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let raised = server.json(&["raise", "--title", "queue backing up"]);
    let id = raised["incident_id"].as_str().unwrap().to_owned();
    let token = server.token();
    let mut watch = Command::new(BIN)
        .args([
            "--server",
            server.grpc.as_str(),
            "--token",
            token.as_str(),
            "--output",
            "json",
            "incident",
            "watch",
            id.as_str(),
        ])
        .env_remove("FIREBREAK_SERVER")
        .env_remove("FIREBREAK_OUTPUT")
        .env_remove("FIREBREAK_CLIENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    // The stream is open once a note written now comes through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.cli(&["incident", "note", &id, "ping"]);
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the watch never printed");
    }
    // Entries arrive as they are written, in order, one JSON line each.
    server.cli(&["incident", "note", &id, "first look"]);
    server.cli(&["incident", "ack", &id]);
    let mut seen: Vec<(String, Value)> = Vec::new();
    while !seen.iter().any(|(k, _)| k == "acknowledged") {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no more entries after {seen:?}"));
        assert_eq!(v["incident_id"], id.as_str(), "{v}");
        // The person's entries (the shipped runbook writes its own meanwhile).
        let by_person = v["actor"].as_str().is_some_and(|a| a.starts_with("user:"));
        if by_person && v["data"]["text"] != "ping" {
            seen.push((
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["data"].clone(),
            ));
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["note", "acknowledged"], "{seen:?}");
    assert_eq!(seen[0].1["text"], "first look");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn maintenance_list_shows_each_window_in_force_or_not_with_its_next_occurrences() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    // `always` holds every instant (a day long, every day); `once` ended long ago;
    // `weekends` is in Berlin time.
    std::fs::write(
        &config,
        "maintenance:\n  - { name: always, time_zone: UTC, start: '2020-01-01T00:00', duration: 1d, rrule: FREQ=DAILY, services: [checkout], comment: frozen }\n  - { name: once, time_zone: UTC, start: '2020-01-01T00:00', duration: 1h, integrations: [am-prod] }\n  - { name: weekends, time_zone: Europe/Berlin, start: '2026-01-03T00:00', duration: 2d, rrule: 'FREQ=WEEKLY;BYDAY=SA', matchers: ['env=\"staging\"'] }\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let list = server.json(&["maintenance", "list", "--occurrences", "5"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["always", "once", "weekends"], "{list:#}");
    assert_eq!(list[0]["in_force"], true, "{list:#}");
    assert_eq!(list[0]["occurrences"].as_array().unwrap().len(), 5);
    assert_eq!(list[0]["current"], list[0]["occurrences"][0], "{list:#}");
    assert!(
        list[0]["current"]["end"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z"),
        "{list:#}"
    );
    assert_eq!(list[1]["in_force"], false);
    assert!(list[1]["current"].is_null());
    assert_eq!(list[1]["occurrences"], serde_json::json!([]));
    assert_eq!(list[2]["matchers"][0], "env=\"staging\"");
    assert_eq!(list[2]["occurrences"].as_array().unwrap().len(), 5);

    let text = server.cli(&["maintenance", "list"]);
    assert!(text.contains("always  in force until "), "{text}");
    assert!(
        text.contains("  rule:  FREQ=DAILY from 2020-01-01T00:00 for 1d"),
        "{text}"
    );
    assert!(text.contains("  scope: services checkout"), "{text}");
    assert!(text.contains("  note:  frozen"), "{text}");
    assert!(
        text.contains("once  not in force  (UTC, configured)"),
        "{text}"
    );
    assert!(
        text.contains("  next:  none (the rule has ended)"),
        "{text}"
    );
    assert!(text.contains("weekends  "), "{text}");
    // Berlin's Saturdays at 00:00 local, with the offset of the day.
    assert!(
        text.contains(" 00:00 +01:00 – ") || text.contains(" 00:00 +02:00 – "),
        "{text}"
    );

    // Out of bounds: a usage error, nothing asked.
    let (code, _, _) = offline(&["maintenance", "list", "--occurrences", "21"]);
    assert_eq!(code, 2);

    // A one-off window from now, made and deleted at run time; configured ones stay.
    let made = server.json(&[
        "maintenance",
        "start",
        "deploy-42",
        "--for",
        "90m",
        "--service",
        "checkout",
        "--matcher",
        "env=\"prod\"",
        "--comment",
        "release 42",
    ]);
    assert_eq!(
        (
            &made["in_force"],
            &made["declared"],
            &made["duration"],
            &made["time_zone"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!("90m"),
            &serde_json::json!("UTC")
        ),
        "{made:#}"
    );
    assert_eq!(made["matchers"], serde_json::json!(["env=\"prod\""]));
    let text = server.cli(&["maintenance", "list"]);
    assert!(text.contains("deploy-42  in force until "), "{text}");
    assert!(text.contains("(UTC, made by user:"), "{text}");
    let (code, _, err) = server.run(&[
        "maintenance",
        "start",
        "deploy-43",
        "--for",
        "forever",
        "--service",
        "checkout",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("yaml.duration"), "{err}");
    let (code, _, err) = server.run(&["maintenance", "delete", "always"]);
    assert_ne!(code, 0);
    assert!(err.contains("declared in configuration"), "{err}");
    server.cli(&["maintenance", "delete", "deploy-42"]);
    let names: Vec<String> = server
        .json(&["maintenance", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["always", "once", "weekends"]);

    // A window the configuration gets wrong stops `up` before anything is made, naming it.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "maintenance:\n  - { name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 3h, rrule: 'FREQ=MINUTELY', services: [checkout] }\n",
    )
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in_dir(
        empty.path(),
        &[
            "up",
            "--config",
            bad.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("maintenance[0].rrule: FREQ=MINUTELY is not supported"),
        "{err}"
    );
    assert!(!empty.path().join("firebreak-data").exists());
}

/// Embedded mode runs all four services: gRPC health answers for each one's name (readiness)
/// and `NAME.live` (liveness), as the Kubernetes probes ask, and NOT_FOUND for any other.
#[test]
fn embedded_mode_answers_grpc_health_for_each_of_its_four_services() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::up(dir.path(), &["--data-dir", "data"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut status = async |service: &str| {
            let request = tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            };
            match health.check(request).await {
                Ok(r) => r.into_inner().status().as_str_name().to_owned(),
                Err(s) => format!("{:?}", s.code()),
            }
        };
        let mut names = vec![String::new()];
        for s in ["intake", "triage", "orchestration", "notification"] {
            names.push(s.to_owned());
            names.push(format!("{s}.live"));
        }
        for name in &names {
            assert_eq!(status(name).await, "SERVING", "{name:?}");
        }
        for other in ["firebreak", "intake.ready", "firebreak.v1.IncidentService"] {
            assert_eq!(status(other).await, "NotFound", "{other}");
        }
    });
}
