//! The sandbox and replay: hostile scripts end their own run, load errors name file:line:col,
//! a replay never repeats a journaled action, a diverging replay fails loudly.

use std::path::Path;
use std::sync::{Arc, Mutex};

use firebreak_runbook::{
    Catalog, Execution, Host, Limits, Outcome, Recorded, Step, StepOutcome, execute,
};
use serde_json::json;

#[derive(Default)]
struct Recording(Mutex<Vec<Step>>);

impl Host for Recording {
    fn perform(&self, step: &Step) -> Result<StepOutcome, String> {
        self.0.lock().unwrap().push(step.clone());
        Ok(StepOutcome::Done(json!({ "status": 200 })))
    }
    fn log(&self, _: &str) {}
}

fn catalog(
    dir: &Path,
    script: &str,
    caps: &str,
) -> Result<Catalog, Vec<firebreak_runbook::LoadError>> {
    std::fs::write(
        dir.join("t.yaml"),
        format!("name: t\nmatch: {{}}\ncapabilities: [{caps}]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("t.rhai"), script).unwrap();
    Catalog::load(dir, &Limits::default())
}

fn exec(c: &Catalog, journal: Vec<Recorded>) -> (Outcome, Arc<Recording>) {
    let host = Arc::new(Recording::default());
    let outcome = execute(Execution {
        runbook: c.get("t").unwrap().clone(),
        run_id: "r".into(),
        incident: json!({ "id": "i" }),
        params: json!({}),
        journal,
        host: host.clone(),
        limits: Limits::default(),
    });
    (outcome, host)
}

fn failed(script: &str, caps: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let c = catalog(dir.path(), script, caps).unwrap();
    match exec(&c, Vec::new()).0 {
        Outcome::Failed(msg) => msg,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn hostile_scripts_end_their_own_run() {
    assert!(failed("fn run(i, p) { loop {} }", "").contains("operation limit"));
    assert!(failed("fn f(n) { f(n + 1) } fn run(i, p) { f(0) }", "").contains("call depth"));
    assert!(failed("fn run(i, p) { let s = \"xx\"; loop { s += s; } }", "").contains("size limit"));
    assert!(failed("fn run(i, p) { let a = []; loop { a.push(1); } }", "").contains("limit"));
    let denied = failed("fn run(i, p) { http::get(\"http://x\"); }", "incident.note");
    assert!(denied.contains("capability denied at step 1"), "{denied}");
}

#[test]
fn load_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let errs = catalog(
        dir.path(),
        "fn run(i, p) {\n  let x = 1;\n  let = ;\n}\n",
        "",
    )
    .unwrap_err();
    assert_eq!(errs[0].line, 3, "{errs:?}");
    assert!(errs[0].file.ends_with("t.rhai"));
    assert!(errs[0].to_string().contains("t.rhai:3:"), "{}", errs[0]);
    let errs = catalog(dir.path(), "fn run(i, p) {\n  eval(\"1\");\n}\n", "").unwrap_err();
    assert_eq!(errs[0].line, 2, "eval is rejected at load: {errs:?}");
    let errs = catalog(dir.path(), "import \"x\" as y;\nfn run(i, p) {}\n", "").unwrap_err();
    assert_eq!(errs[0].line, 1, "import is rejected at load: {errs:?}");
    let errs = catalog(dir.path(), "fn main() {}\n", "").unwrap_err();
    assert!(errs[0].message.contains("fn run(incident, params)"));
    std::fs::write(
        dir.path().join("t.yaml"),
        "name: t\nmatch: {}\ncapabilites: []\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("t.rhai"), "fn run(i, p) {}\n").unwrap();
    let errs = Catalog::load(dir.path(), &Limits::default()).unwrap_err();
    assert_eq!(errs[0].line, 3, "{errs:?}");
    assert!(errs[0].message.contains("capabilites"));
}

#[test]
fn replay_returns_recorded_results_and_detects_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let script = "fn run(i, p) { let r = http::post(\"http://x\", #{ a: 1 }); incident::note(`got ${r.status}`); }";
    let c = catalog(dir.path(), script, "http, incident").unwrap();
    let (outcome, host) = exec(&c, Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    let steps = host.0.lock().unwrap().clone();
    assert_eq!(steps[0].idempotency_key, "r:1");
    let journal: Vec<Recorded> = steps
        .iter()
        .map(|s| Recorded {
            seq: s.seq,
            action: s.action.clone(),
            digest: s.digest.clone(),
            status: "done".into(),
            result: json!({ "status": 200 }),
        })
        .collect();

    // Replaying the whole journal performs nothing again.
    let (outcome, host) = exec(&c, journal.clone());
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    assert!(host.0.lock().unwrap().is_empty());

    // A journal from another script fails loudly at the step that differs.
    let mut other = journal.clone();
    other[0].digest = "0000".into();
    match exec(&c, other).0 {
        Outcome::Failed(msg) => assert!(msg.contains("non-determinism at step 1"), "{msg}"),
        o => panic!("{o:?}"),
    }

    // A step recorded as waiting (an approval nobody answered yet) stops the run there.
    let mut waiting = journal;
    waiting[1].status = "waiting".into();
    assert_eq!(exec(&c, waiting).0, Outcome::Waiting { seq: 2 });
}
