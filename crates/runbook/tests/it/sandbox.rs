//! The runbook engine on small runbooks in temp dirs: load errors name file, line and column;
//! hostile scripts end their own run; replay never repeats a journaled action and fails loudly
//! on divergence; approvals and waiting hosts stop a run durably.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_runbook::{
    Catalog, Execution, Host, Limits, LoadError, Outcome, Recorded, Runbook, Step, StepError,
    StepOutcome, digest, execute,
};
use serde_json::{Value, json};

/// A host that records every step and its log. HTTP answers `{"status": 200, "simulated":
/// true}`, approvals are granted, everything else answers `{}`, unless `answer` says otherwise.
pub(crate) struct Recording {
    steps: Mutex<Vec<Step>>,
    pub(crate) log: Mutex<Vec<String>>,
    answer: fn(&Step) -> Option<Result<StepOutcome, StepError>>,
}

impl Recording {
    pub(crate) fn new() -> Self {
        Self::answering(|_| None)
    }

    pub(crate) fn answering(answer: fn(&Step) -> Option<Result<StepOutcome, StepError>>) -> Self {
        Self {
            steps: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            answer,
        }
    }

    pub(crate) fn steps(&self) -> Vec<Step> {
        self.steps.lock().unwrap().clone()
    }
}

impl Host for Recording {
    fn perform(&self, step: &Step) -> Result<StepOutcome, StepError> {
        self.steps.lock().unwrap().push(step.clone());
        if let Some(answer) = (self.answer)(step) {
            return answer;
        }
        Ok(StepOutcome::Done(match step.action.as_str() {
            "approval.request" => json!({ "approved": true }),
            a if a.starts_with("http.") => json!({ "status": 200, "simulated": true }),
            _ => json!({}),
        }))
    }

    fn log(&self, line: &str) {
        self.log.lock().unwrap().push(line.to_owned());
    }
}

/// Writes runbook `t` (manifest `yaml`, script `script`) into `dir` and loads the catalog.
pub(crate) fn load_raw(dir: &Path, yaml: &str, script: &str) -> Result<Catalog, Vec<LoadError>> {
    std::fs::write(dir.join("t.yaml"), yaml).unwrap();
    std::fs::write(dir.join("t.rhai"), script).unwrap();
    Catalog::load(dir, &Limits::default())
}

/// Runbook `t` with `script` and these capabilities, which must load.
pub(crate) fn runbook(script: &str, capabilities: &str) -> Runbook {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("name: t\nmatch: {{}}\ncapabilities: [{capabilities}]\n");
    let catalog = load_raw(dir.path(), &yaml, script)
        .unwrap_or_else(|errors| panic!("does not load: {errors:#?}"));
    catalog.get("t").unwrap().clone()
}

/// The load errors of runbook `t` with `script`, which must not load.
pub(crate) fn load_errors(script: &str) -> Vec<LoadError> {
    let dir = tempfile::tempdir().unwrap();
    load_raw(dir.path(), "name: t\nmatch: {}\n", script).unwrap_err()
}

pub(crate) fn execute_with(
    rb: &Runbook,
    host: &Arc<Recording>,
    journal: Vec<Recorded>,
    limits: Limits,
) -> Outcome {
    execute(Execution {
        runbook: rb.clone(),
        run_id: "run-7".into(),
        incident: json!({ "id": "inc-1", "severity": 3, "labels": { "service": "api" } }),
        params: json!({ "target": "http://target.test" }),
        journal,
        host: host.clone(),
        limits,
    })
}

pub(crate) fn run(rb: &Runbook, journal: Vec<Recorded>) -> (Outcome, Arc<Recording>) {
    let host = Arc::new(Recording::new());
    let outcome = execute_with(rb, &host, journal, Limits::default());
    (outcome, host)
}

/// The failure message of `script`, which must fail; the host must not have been asked to
/// do anything unless `actions_before` says how many steps may precede the failure.
pub(crate) fn failure(script: &str, capabilities: &str, actions_before: usize) -> String {
    let (outcome, host) = run(&runbook(script, capabilities), Vec::new());
    assert_eq!(host.steps().len(), actions_before, "{script}");
    match outcome {
        Outcome::Failed(message) => message,
        other => panic!("{script}: expected a failure, got {other:?}"),
    }
}

pub(crate) fn journal_of(steps: &[Step], result: impl Fn(&Step) -> Value) -> Vec<Recorded> {
    steps
        .iter()
        .map(|s| Recorded {
            seq: s.seq,
            action: s.action.clone(),
            digest: s.digest.clone(),
            status: "done".into(),
            result: result(s),
        })
        .collect()
}

// ---- (a) load errors -------------------------------------------------------------------

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let errors = load_errors("fn run(incident, params) {\n    let x = 1;\n    let = 2;\n}\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert!(e.file.ends_with("t.rhai"), "{e}");
    assert_eq!((e.line, e.column), (3, 9), "{e}");
    assert!(
        e.to_string()
            .ends_with(&format!("t.rhai:3:9: {}", e.message)),
        "{e}"
    );
}

#[test]
fn an_unknown_manifest_key_fails_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: t\nmatch:\n  categories: [malware]\ncapabilites: [http]\n";
    let errors = load_raw(dir.path(), yaml, "fn run(i, p) {}\n").unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].file.ends_with("t.yaml"), "{}", errors[0]);
    assert_eq!(errors[0].line, 4, "{}", errors[0]);
    assert!(errors[0].message.contains("capabilites"), "{}", errors[0]);

    // Unknown keys are rejected inside nested maps too.
    let yaml = "name: t\nmatch:\n  categories: [malware]\n  severty: { min: 1 }\n";
    let errors = load_raw(dir.path(), yaml, "fn run(i, p) {}\n").unwrap_err();
    assert_eq!(errors[0].line, 4, "{}", errors[0]);
    assert!(errors[0].message.contains("severty"), "{}", errors[0]);
}

#[test]
fn a_script_without_fn_run_of_two_parameters_fails() {
    for script in ["fn main() {}\n", "fn run(incident) {}\n", "print(1);\n"] {
        let errors = load_errors(script);
        assert_eq!(errors.len(), 1, "{script}: {errors:#?}");
        assert!(errors[0].file.ends_with("t.rhai"));
        assert!(
            errors[0].message.contains("fn run(incident, params)"),
            "{script}: {}",
            errors[0]
        );
    }
}

#[test]
fn eval_and_import_are_rejected_at_load() {
    let errors = load_errors("fn run(i, p) {\n    let x = 1;\n    eval(\"x + 1\");\n}\n");
    assert_eq!(errors[0].line, 3, "{}", errors[0]);
    assert!(errors[0].message.contains("eval"), "{}", errors[0]);

    let errors = load_errors("import \"helpers\" as h;\nfn run(i, p) {}\n");
    assert_eq!(errors[0].line, 1, "{}", errors[0]);
    assert!(errors[0].message.contains("import"), "{}", errors[0]);

    // Nor can a function pointer smuggle eval in at run time.
    let rb = runbook(
        "fn run(i, p) { let f = \"ev\" + \"al\"; Fn(f).call(\"1\") }\n",
        "",
    );
    let (outcome, _) = run(&rb, Vec::new());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.contains("eval")),
        "{outcome:?}"
    );
}

#[test]
fn every_manifest_mistake_of_a_directory_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("a.yaml", "name: b\nmatch: {}\n");
    write("a.rhai", "fn run(i, p) {}\n");
    write(
        "c.yaml",
        "name: c\nmatch:\n  severity: { min: 4, max: 2 }\ntimeout_seconds: 0\ncapabilities: [shell.exec]\n",
    );
    write("c.rhai", "fn run(i, p) {}\n");
    write("orphan.rhai", "fn run(i, p) {}\n");
    write("d.yaml", "name: d\nmatch: {}\n");
    let errors = Catalog::load(dir.path(), &Limits::default()).unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |file: &str, text: &str| {
        assert!(
            messages
                .iter()
                .any(|m| m.contains(file) && m.contains(text)),
            "no {text:?} for {file} in {messages:#?}"
        );
    };
    has("a.yaml:1:1", "must equal the file name");
    has("c.yaml", "match.severity 4..2");
    has("c.yaml", "timeout_seconds");
    has("c.yaml", "unknown capability \"shell.exec\"");
    has("orphan.rhai", "no manifest");
    has("d.rhai", "cannot read the script");
    assert_eq!(errors.len(), 6, "{messages:#?}");
}

// ---- (b) hostile scripts ---------------------------------------------------------------

#[test]
fn an_endless_loop_hits_the_operation_limit() {
    let message = failure("fn run(i, p) { loop {} }", "", 0);
    assert!(message.starts_with("operation limit exceeded"), "{message}");
    let message = failure("fn run(i, p) { let n = 0; while true { n += 1; } }", "", 0);
    assert!(message.starts_with("operation limit exceeded"), "{message}");
}

#[test]
fn unbounded_recursion_hits_the_call_depth_limit() {
    let message = failure(
        "fn down(n) { down(n + 1) }\nfn run(i, p) { down(0) }",
        "",
        0,
    );
    assert!(
        message.starts_with("call depth limit exceeded"),
        "{message}"
    );
}

#[test]
fn growing_data_hits_the_size_limits() {
    let message = failure("fn run(i, p) { let s = \"xx\"; loop { s += s; } }", "", 0);
    assert!(message.starts_with("size limit exceeded"), "{message}");
    assert!(message.to_lowercase().contains("string"), "{message}");

    let message = failure("fn run(i, p) { let a = []; loop { a.push(1); } }", "", 0);
    assert!(message.starts_with("size limit exceeded"), "{message}");
    assert!(message.to_lowercase().contains("array"), "{message}");

    let message = failure("fn run(i, p) { let a = [1]; loop { a += a; } }", "", 0);
    assert!(message.starts_with("size limit exceeded"), "{message}");

    // Rhai checks a map's size when the map is used, not on each `m[key] = value`: the
    // oversized map fails at its next use, and an endless fill at the operation limit.
    let message = failure(
        "fn run(i, p) { let m = #{}; for n in 0..20000 { m[`k${n}`] = n; } m.len() }",
        "",
        0,
    );
    assert!(message.starts_with("size limit exceeded"), "{message}");
    assert!(message.to_lowercase().contains("map"), "{message}");
    let message = failure(
        "fn run(i, p) { let m = #{}; let n = 0; loop { m[`k${n}`] = n; n += 1; } }",
        "",
        0,
    );
    assert!(message.starts_with("operation limit exceeded"), "{message}");
}

#[test]
fn the_wall_clock_deadline_ends_a_run_the_operation_limit_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: t\nmatch: {}\ntimeout_seconds: 1\n";
    let rb = load_raw(dir.path(), yaml, "fn run(i, p) { loop {} }")
        .unwrap()
        .get("t")
        .unwrap()
        .clone();
    let host = Arc::new(Recording::new());
    // No operation limit: only the one-second deadline can stop this loop.
    let limits = Limits {
        max_operations: 0,
        ..Limits::default()
    };
    let outcome = execute_with(&rb, &host, Vec::new(), limits);
    assert_eq!(
        outcome,
        Outcome::Failed("deadline exceeded: the script ran longer than 1s".into())
    );
}

#[test]
fn an_undeclared_action_is_denied_and_never_performed() {
    let message = failure("fn run(i, p) { http::get(p.target); }", "incident.note", 0);
    assert_eq!(
        message,
        "capability denied at step 1: runbook t does not declare http.get"
    );

    // A function-level capability grants that function only.
    let message = failure(
        "fn run(i, p) { http::get(p.target); http::post(p.target, #{}); }",
        "http.get",
        1,
    );
    assert!(
        message.starts_with("capability denied at step 2"),
        "{message}"
    );
    assert!(message.ends_with("does not declare http.post"), "{message}");

    // A denial cannot be caught and ignored: the run ends there.
    let message = failure(
        "fn run(i, p) { try { http::post(p.target, #{}); } catch { incident::note(\"caught\"); } incident::note(\"after\"); }",
        "incident",
        0,
    );
    assert!(
        message.starts_with("capability denied at step 1"),
        "{message}"
    );
}

#[test]
fn a_module_capability_grants_every_action_of_the_module() {
    let rb = runbook(
        "fn run(i, p) { http::get(p.target); http::post(p.target, #{}); http::request(#{ method: \"PUT\", url: p.target }); }",
        "http",
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 3 });
    let actions: Vec<String> = host.steps().into_iter().map(|s| s.action).collect();
    assert_eq!(actions, ["http.get", "http.post", "http.request"]);
}

#[test]
fn a_flood_of_prints_is_truncated() {
    let rb = runbook("fn run(i, p) { for n in 0..5000 { print(n); } }", "");
    let (outcome, host) = run(&rb, Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 0 });
    let log = host.log.lock().unwrap().clone();
    let max = Limits::default().max_log_lines;
    assert_eq!(log.len(), max + 1);
    assert_eq!(log[0], "0");
    assert_eq!(log[max - 1], (max - 1).to_string());
    assert!(log[max].contains("log truncated"), "{}", log[max]);
}

// ---- (c) replay ------------------------------------------------------------------------

const REPLAYED: &str = "fn run(incident, params) {
    let r = http::post(params.target + \"/block\", #{ ip: \"203.0.113.9\" });
    incident::note(`block answered ${r.status}`);
    if approval::request(\"restart api?\") {
        http::post(params.target + \"/restart\", #{ service: incident.labels.service });
    }
    notify::send(\"log\", \"done\");
}";
const REPLAYED_CAPS: &str = "http.post, incident.note, approval.request, notify.send";

#[test]
fn a_first_execution_performs_and_describes_every_step() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let (outcome, host) = run(&rb, Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 5 });
    let steps = host.steps();
    let seqs: Vec<u32> = steps.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(steps[0].action, "http.post");
    assert_eq!(
        steps[0].args,
        json!({ "method": "POST", "url": "http://target.test/block", "body": { "ip": "203.0.113.9" } })
    );
    assert_eq!(steps[0].digest, digest("http.post", &steps[0].args));
    assert_eq!(steps[1].args, json!({ "text": "block answered 200" }));
    assert_eq!(steps[3].args["body"], json!({ "service": "api" }));
    // The idempotency key is stable per run and step, so targets can dedupe retries.
    let keys: Vec<&str> = steps.iter().map(|s| s.idempotency_key.as_str()).collect();
    assert_eq!(
        keys,
        ["run-7:1", "run-7:2", "run-7:3", "run-7:4", "run-7:5"]
    );
}

#[test]
fn replaying_a_complete_journal_performs_nothing() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let (_, first) = run(&rb, Vec::new());
    let steps = first.steps();
    let journal = journal_of(&steps, |s| match s.action.as_str() {
        "http.post" => json!({ "status": 200, "simulated": true }),
        "approval.request" => json!({ "approved": true }),
        _ => json!({}),
    });
    let (outcome, host) = run(&rb, journal);
    assert_eq!(outcome, Outcome::Succeeded { steps: 5 });
    assert!(
        host.steps().is_empty(),
        "the host was called: {:?}",
        host.steps()
    );
}

#[test]
fn replay_uses_recorded_results_and_performs_only_what_is_new() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let (_, first) = run(&rb, Vec::new());
    let steps = first.steps();
    let journal = journal_of(&steps[..1], |_| json!({ "status": 503 }));
    // The script sees the recorded 503, not what the host would answer now (200), and only
    // the steps after the journal reach the host.
    let (outcome, host) = run(&rb, journal);
    assert_eq!(outcome, Outcome::Succeeded { steps: 5 });
    let new = host.steps();
    assert_eq!(new.len(), 4);
    assert_eq!(new[0].seq, 2);
    assert_eq!(new[0].args, json!({ "text": "block answered 503" }));
}

#[test]
fn a_failed_step_replays_as_the_same_catchable_error() {
    let rb = runbook(
        "fn run(i, p) { try { http::post(p.target, #{}); } catch (e) { incident::note(`failed: ${e}`); } }",
        "http.post, incident.note",
    );
    let journal = vec![Recorded {
        seq: 1,
        action: "http.post".into(),
        digest: digest(
            "http.post",
            &json!({ "method": "POST", "url": "http://target.test", "body": {} }),
        ),
        status: "failed".into(),
        result: json!({ "error": "connection refused" }),
    }];
    let (outcome, host) = run(&rb, journal);
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    let new = host.steps();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].args, json!({ "text": "failed: connection refused" }));
}

#[test]
fn a_journal_from_another_script_fails_at_the_first_step_that_differs() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let (_, first) = run(&rb, Vec::new());
    let journal = journal_of(
        &first.steps(),
        |_| json!({ "status": 200, "approved": true }),
    );

    // Same action, other arguments.
    let mut other_digest = journal.clone();
    other_digest[0].digest = digest("http.post", &json!({ "url": "http://elsewhere.test" }));
    let (outcome, host) = run(&rb, other_digest);
    match outcome {
        Outcome::Failed(m) => {
            assert!(m.starts_with("non-determinism at step 1"), "{m}");
            assert!(m.contains("other arguments"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(host.steps().is_empty());

    // Another action.
    let mut other_action = journal.clone();
    other_action[0].action = "http.get".into();
    let (outcome, host) = run(&rb, other_action);
    match outcome {
        Outcome::Failed(m) => {
            assert!(m.starts_with("non-determinism at step 1"), "{m}");
            assert!(
                m.contains("recorded http.get but the script now calls http.post"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(host.steps().is_empty());

    // A divergence later on stops the run there, after the matching steps replayed.
    let mut late = journal;
    late[2].digest = "0".repeat(32);
    let (outcome, host) = run(&rb, late);
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("non-determinism at step 3")),
        "{outcome:?}"
    );
    assert!(host.steps().is_empty());
}

#[test]
fn a_recorded_waiting_approval_keeps_the_run_waiting() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let (_, first) = run(&rb, Vec::new());
    let mut journal = journal_of(&first.steps()[..3], |_| json!({ "status": 200 }));
    journal[2].status = "waiting".into();
    journal[2].result = Value::Null;
    let (outcome, host) = run(&rb, journal.clone());
    assert_eq!(outcome, Outcome::Waiting { seq: 3 });
    assert!(host.steps().is_empty(), "nothing after the approval runs");

    // Rejected: the script takes the other branch and performs only what follows.
    journal[2].status = "done".into();
    journal[2].result = json!({ "approved": false, "by": "alice" });
    let (outcome, host) = run(&rb, journal);
    assert_eq!(outcome, Outcome::Succeeded { steps: 4 });
    let actions: Vec<String> = host.steps().into_iter().map(|s| s.action).collect();
    assert_eq!(actions, ["notify.send"]);
}

// ---- (d) hosts that wait or fail -------------------------------------------------------

#[test]
fn a_host_that_waits_stops_the_run_at_that_step() {
    let rb = runbook(REPLAYED, REPLAYED_CAPS);
    let host = Arc::new(Recording::answering(|step| {
        (step.action == "approval.request").then_some(Ok(StepOutcome::Waiting))
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Waiting { seq: 3 });
    let actions: Vec<String> = host.steps().into_iter().map(|s| s.action).collect();
    assert_eq!(actions, ["http.post", "incident.note", "approval.request"]);
}

#[test]
fn a_script_cannot_catch_a_wait_and_carry_on() {
    let rb = runbook(
        "fn run(i, p) { try { approval::request(\"go?\"); } catch { http::post(p.target, #{}); } http::post(p.target, #{}); }",
        "approval, http",
    );
    let host = Arc::new(Recording::answering(|step| {
        (step.action == "approval.request").then_some(Ok(StepOutcome::Waiting))
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Waiting { seq: 1 });
    assert_eq!(
        host.steps().len(),
        1,
        "nothing after the wait was performed"
    );
}

#[test]
fn a_host_error_is_catchable_and_fails_the_run_when_not_caught() {
    let refuse: fn(&Step) -> Option<Result<StepOutcome, StepError>> = |step| {
        step.action
            .starts_with("http.")
            .then(|| Err("connection refused".into()))
    };

    let rb = runbook(
        "fn run(i, p) { try { http::get(p.target); } catch (e) { incident::note(`unreachable: ${e}`); } }",
        "http.get, incident.note",
    );
    let host = Arc::new(Recording::answering(refuse));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    assert_eq!(
        host.steps()[1].args,
        json!({ "text": "unreachable: connection refused" })
    );

    let rb = runbook(
        "fn run(i, p) { http::get(p.target); incident::note(\"after\"); }",
        "http.get, incident.note",
    );
    let host = Arc::new(Recording::answering(refuse));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("script error") && m.contains("connection refused")),
        "{outcome:?}"
    );
    assert_eq!(host.steps().len(), 1, "the note after the error never ran");
}

#[test]
fn a_step_the_host_could_not_journal_stops_the_execution_uncatchably() {
    let store_away: fn(&Step) -> Option<Result<StepOutcome, StepError>> = |step| {
        (step.seq == 2).then(|| Err(StepError::Interrupted("database: pool timed out".into())))
    };
    // The script tries to catch everything and carry on; an interruption is not its to catch.
    let rb = runbook(
        "fn run(i, p) { incident::note(\"one\"); try { incident::note(\"two\"); } catch (e) { incident::note(`caught ${e}`); } incident::note(\"three\"); }",
        "incident.note",
    );
    let host = Arc::new(Recording::answering(store_away));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(
        outcome,
        Outcome::Interrupted {
            seq: 2,
            reason: "database: pool timed out".into()
        }
    );
    assert_eq!(
        host.steps().len(),
        2,
        "nothing after the interrupted step ran"
    );
}

#[test]
fn actions_check_their_arguments_before_anything_is_performed() {
    let rb = runbook("fn run(i, p) { incident::set_severity(0); }", "incident");
    let (outcome, host) = run(&rb, Vec::new());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.contains("severity must be 1 to 5")),
        "{outcome:?}"
    );
    assert!(host.steps().is_empty());

    for (call, field) in [
        (r#"incident::assign("Scribe", "bob")"#, "invalid role"),
        (r#"incident::assign("scribe", "")"#, "invalid person"),
        (
            r#"incident::assign("scribe", "bob smith")"#,
            "invalid person",
        ),
    ] {
        let rb = runbook(&format!("fn run(i, p) {{ {call}; }}"), "incident");
        let (outcome, host) = run(&rb, Vec::new());
        assert!(
            matches!(&outcome, Outcome::Failed(m) if m.contains(field)),
            "{call}: {outcome:?}"
        );
        assert!(host.steps().is_empty(), "{call}");
    }
    let rb = runbook(
        r#"fn run(i, p) { incident::assign("incident-commander", "alice"); }"#,
        "incident",
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 1 });
    assert_eq!(host.steps().len(), 1);

    let rb = runbook(
        "fn run(i, p) { http::request(#{ url: p.target }); }",
        "http",
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.contains("needs a map with method and url")),
        "{outcome:?}"
    );
    assert!(host.steps().is_empty());
}

/// Runbook `t` with a full manifest body (after `name: t`), which must load.
pub(crate) fn runbook_with(yaml: &str, script: &str) -> Runbook {
    let dir = tempfile::tempdir().unwrap();
    let catalog = load_raw(dir.path(), &format!("name: t\nmatch: {{}}\n{yaml}"), script)
        .unwrap_or_else(|errors| panic!("does not load: {errors:#?}"));
    catalog.get("t").unwrap().clone()
}

#[test]
fn a_script_that_ends_before_its_journal_does_fails_as_non_deterministic() {
    let rb = runbook(
        "fn run(incident, params) { incident::note(\"a\"); }",
        "incident",
    );
    let (_, first) = run(
        &runbook(
            "fn run(incident, params) { incident::note(\"a\"); incident::note(\"b\"); }",
            "incident",
        ),
        Vec::new(),
    );
    let journal = journal_of(&first.steps(), |_| json!({}));
    let (outcome, host) = run(&rb, journal);
    assert_eq!(
        outcome,
        Outcome::Failed(
            "non-determinism at step 2: the journal recorded incident.note but the script ended"
                .into()
        )
    );
    assert!(host.steps().is_empty());
}

#[test]
fn limit_errors_without_a_position_do_not_say_none() {
    let message = failure("fn run(incident, params) { loop {} }", "", 0);
    assert!(!message.contains("none"), "{message}");
}

#[test]
fn actions_named_for_approval_wait_for_it_and_a_rejection_is_catchable() {
    let script = r#"
fn run(incident, params) {
    try {
        http::post("http://target.test/scale", #{ n: 3 });
    } catch (e) {
        incident::note(`not scaled: ${e}`);
    }
}"#;
    let rb = runbook_with(
        "capabilities: [http, incident]\napproval: { actions: [http.post] }\n",
        script,
    );
    // First execution: the implicit approval step comes before the gated call.
    let host = Arc::new(Recording::answering(|s| {
        (s.action == "approval.request").then_some(Ok(StepOutcome::Waiting))
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Waiting { seq: 1 });
    let steps = host.steps();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].args["action"], "http.post");
    // Rejected: the call is never made and the script handles the error.
    let journal = journal_of(&steps, |_| json!({ "approved": false }));
    let (outcome, host) = run(&rb, journal);
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let performed: Vec<String> = host.steps().iter().map(|s| s.action.clone()).collect();
    assert_eq!(performed, ["incident.note"]);
    assert!(
        host.steps()[0].args["text"]
            .as_str()
            .unwrap()
            .contains("approval rejected: http.post was not allowed")
    );
}

#[test]
fn a_durable_sleep_stops_the_run_until_its_time() {
    let rb = runbook_with(
        "capabilities: [sleep, incident]\n",
        "fn run(incident, params) { sleep(60); incident::note(\"after\"); }",
    );
    // 2100-01-01: far in the future.
    const UNTIL: Micros = Micros::from_unix_micros(4_102_444_800_000_000);
    let until = UNTIL;
    let host = Arc::new(Recording::answering(|s| {
        (s.action == "sleep.for").then_some(Ok(StepOutcome::Sleeping { until: UNTIL }))
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Sleeping { seq: 1, until });
    let sleeping = |until: Micros| Recorded {
        seq: 1,
        action: "sleep.for".into(),
        digest: digest("sleep.for", &json!({ "seconds": 60 })),
        status: "sleeping".into(),
        result: json!({ "until": until.unix_micros() }),
    };
    // Replayed early, it sleeps on; replayed late, the script goes on.
    let (outcome, host) = run(&rb, vec![sleeping(until)]);
    assert_eq!(outcome, Outcome::Sleeping { seq: 1, until });
    assert!(host.steps().is_empty());
    let (outcome, host) = run(
        &rb,
        vec![sleeping(
            firebreak_domain::Clock::now(&firebreak_domain::SystemClock) - Duration::from_micros(1),
        )],
    );
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    assert_eq!(host.steps().len(), 1);
}

#[test]
fn secrets_are_placeholders_and_undeclared_ones_end_the_run() {
    let rb = runbook_with(
        "capabilities: [incident]\nsecrets: [db-password]\n",
        "fn run(incident, params) { let s = secret(\"db-password\"); print(s); incident::note(s); }",
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    assert_eq!(host.steps()[0].args["text"], "{{secret:db-password}}");
    assert_eq!(*host.log.lock().unwrap(), ["{{secret:db-password}}"]);
    let message = failure(
        "fn run(incident, params) { try { secret(\"root\"); } catch { } incident::note(\"x\"); }",
        "incident",
        0,
    );
    assert_eq!(
        message,
        "secret denied: runbook t does not declare the secret \"root\""
    );
}

#[test]
fn new_manifest_fields_are_validated_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: t\nmatch: {}\ncapabilities: [incident]\napproval:\n  actions: [http.post]\nretry:\n  http: { attempts: 50 }\nsecrets: [\"bad name\"]\n";
    let errors = load_raw(dir.path(), yaml, "fn run(incident, params) {}").unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|e| e
            .contains("t.yaml:4:1: approval.actions: \"http.post\" is not among the capabilities")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains(":6:1:") && e.contains("attempts must be 1 to 10")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("t.yaml:8:1: secret name \"bad name\"")),
        "{text:#?}"
    );
    let unknown = load_raw(
        dir.path(),
        "name: t\nmatch: {}\nmode: yolo\n",
        "fn run(incident, params) {}",
    )
    .unwrap_err();
    assert_eq!(unknown[0].line, 3, "{unknown:?}");
}

#[test]
fn fixtures_check_the_action_sequence_and_say_what_differed() {
    use firebreak_runbook::fixture::{Fixture, check, run_case};
    let rb = runbook_with(
        "capabilities: [http, incident]\n",
        "fn run(incident, params) { let r = http::post(\"http://t/x\", #{}); if r.status == 200 { incident::note(\"ok\"); } }",
    );
    let fixture: Fixture = serde_yaml::from_str(
        "cases:\n  - name: happy\n    expect: { actions: [{ action: http.post, args: { url: \"http://t/x\" } }, incident.note] }\n  - name: target down\n    mocks: [{ action: http.post, result: { status: 503 } }]\n    expect: { actions: [http.post] }\n  - name: wrong\n    expect: { actions: [http.post] }\n",
    )
    .unwrap();
    let results: Vec<Result<(), String>> = fixture
        .cases
        .iter()
        .map(|c| check(c, &run_case(&rb, c, &Limits::default()).unwrap()))
        .collect();
    assert_eq!(results[0], Ok(()));
    assert_eq!(results[1], Ok(()));
    assert_eq!(
        results[2],
        Err("expected 1 action(s) [http.post], the run called 2 [http.post, incident.note]".into())
    );
}

#[test]
fn a_map_grown_by_index_assignment_hits_the_memory_limit() {
    let script = r#"
fn run(incident, params) {
    let s = "x";
    for j in 0..15 { s += s; }
    let m = #{};
    let i = 0;
    loop { m[`k${i}`] = s + i; i += 1; }
}"#;
    let message = failure(script, "", 0);
    assert_eq!(
        message,
        "memory limit exceeded: the script held too much memory"
    );
}

#[test]
fn an_expression_nesting_bomb_is_rejected_at_load_with_its_position() {
    let bomb = format!(
        "fn run(incident, params) {{\n    let x = {}1{};\n}}\n",
        "(".repeat(500),
        ")".repeat(500)
    );
    let errors = load_errors(&bomb);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 2, "{errors:?}");
    assert!(
        errors[0].message == "Expression exceeds maximum complexity",
        "{errors:?}"
    );
}
