//! Hostile runbooks of issue #12: scripts that nest values deeply, copy large values under a
//! small operation budget, flood effects, declare too many variables; each ends its own run
//! with a clear error, and the test process (a 2 MiB test thread) survives every one.

use std::sync::Arc;

use firebreak_runbook::{Limits, MAX_NOTE_BYTES, Outcome, Recorded, execute};
use serde_json::json;

use crate::sandbox::{
    Recording, execute_with, failure, journal_of, load_errors, load_raw, run, runbook, runbook_with,
};

/// A run's failure message must start with one of the sandbox's limit errors.
fn assert_limit(script: &str, message: &str) {
    let known = [
        "operation limit exceeded",
        "size limit exceeded",
        "memory limit exceeded",
    ];
    assert!(
        known.iter().any(|k| message.starts_with(k)),
        "{script}: {message}"
    );
}

const SIX_THOUSAND_LEVELS: &str =
    "fn run(incident, params) { let m = #{}; for j in 0..6000 { m = #{ inner: m }; } }";

/// Each builds a value nested 100,000 levels deep in its own way.
const DEEP: &[&str] = &[
    "fn run(i, p) { let m = #{}; for j in 0..100000 { m = #{ inner: m }; } }",
    "fn run(i, p) { let a = []; for j in 0..100000 { a = [a]; } }",
    "fn run(i, p) { let a = []; for j in 0..100000 { let b = []; b.push(a); a = b; } }",
    "fn run(i, p) { let m = #{}; for j in 0..100000 { let n = #{}; n.inner = m; m = n; } }",
    "fn run(i, p) { let m = #{}; for j in 0..100000 { let n = #{}; n[\"inner\"] = m; m = n; } }",
    "fn run(i, p) { let a = []; for j in 0..100000 { let b = [0]; b[0] = a; a = b; } }",
    "fn run(i, p) { let v = (); for j in 0..100000 { v = #{ x: [v, 1], y: \"s\" }; } }",
    "fn wrap(v) { #{ inner: v } }\nfn run(i, p) { let m = (); for j in 0..100000 { m = wrap(m); } }",
    "fn run(i, p) { let m = #{}; for j in 0..100000 { m = #{ inner: m }; print(m); } }",
    "fn run(i, p) { let m = #{}; for j in 0..100000 { m = #{ inner: m }; if m == #{} { break; } } }",
];

#[test]
fn the_six_thousand_level_script_of_the_issue_ends_its_own_run() {
    let message = failure(SIX_THOUSAND_LEVELS, "", 0);
    assert_limit(SIX_THOUSAND_LEVELS, &message);
}

#[test]
fn values_nested_100_000_deep_end_their_runs_whatever_builds_them() {
    for script in DEEP {
        let message = failure(script, "", 0);
        assert_limit(script, &message);
    }
}

#[test]
fn deep_scripts_end_cleanly_when_called_from_a_small_stack() {
    // The orchestrator calls `execute` from a blocking-pool thread (2 MiB): the script
    // must not need the caller's stack.
    let rb = runbook(SIX_THOUSAND_LEVELS, "");
    let outcome = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            execute_with(
                &rb,
                &Arc::new(Recording::new()),
                Vec::new(),
                Limits::default(),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    match outcome {
        Outcome::Failed(m) => assert_limit(SIX_THOUSAND_LEVELS, &m),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nesting_is_bounded_by_the_size_limits_even_without_an_operation_budget() {
    // Every level is an element or an entry, so the size limits bound the depth: with no
    // operation limit at all, the 100,000-level scripts stop at the size limit.
    let limits = Limits {
        max_operations: 0,
        max_array_size: 500,
        max_map_size: 500,
        ..Limits::default()
    };
    for script in &DEEP[..7] {
        let host = Arc::new(Recording::new());
        let outcome = execute_with(&runbook(script, ""), &host, Vec::new(), limits.clone());
        match outcome {
            Outcome::Failed(m) => assert!(m.starts_with("size limit exceeded"), "{script}: {m}"),
            other => panic!("{script}: {other:?}"),
        }
    }
}

#[test]
fn unlimited_or_larger_sizes_are_held_to_what_the_stack_is_sized_for() {
    // 0 is "unlimited" to Rhai; the sandbox keeps 10,000, which bounds nesting.
    let limits = Limits {
        max_array_size: 0,
        ..Limits::default()
    };
    let rb = runbook(
        "fn run(i, p) { let a = []; for n in 0..10001 { a.push(n); } }",
        "",
    );
    let outcome = execute_with(&rb, &Arc::new(Recording::new()), Vec::new(), limits);
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("size limit exceeded")),
        "{outcome:?}"
    );
}

#[test]
fn a_deep_value_never_reaches_an_action_or_the_journal() {
    // 70 levels: within every size limit, deeper than an action's arguments may be.
    let script = "fn run(i, p) { let m = 1; for j in 0..70 { m = [m]; } http::post(p.target, m); }";
    let message = failure(script, "http", 0);
    assert!(
        message.contains("nested deeper than 64 levels"),
        "{message}"
    );

    // A deep result is refused at the step, as a catchable error.
    let rb = runbook(
        "fn run(i, p) { try { http::get(p.target); } catch (e) { incident::note(`${e}`); } }",
        "http, incident",
    );
    let host = Arc::new(Recording::answering(|step| {
        (step.action == "http.get").then(|| {
            let mut body = json!(1);
            for _ in 0..100 {
                body = json!([body]);
            }
            Ok(firebreak_runbook::StepOutcome::Done(
                json!({ "status": 200, "body": body }),
            ))
        })
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    let note = host.steps()[1].args["text"].as_str().unwrap().to_owned();
    assert!(
        note.contains("the result of http.get at step 1 is nested deeper than 64 levels"),
        "{note}"
    );

    // So are deep parameters (or a deep incident), before the script starts.
    let rb = runbook("fn run(i, p) {}", "");
    let mut labels = json!("x");
    for _ in 0..100 {
        labels = json!({ "x": labels });
    }
    let outcome = execute(firebreak_runbook::Execution {
        runbook: rb,
        run_id: "run-1".into(),
        incident: json!({}),
        params: json!({ "deep": labels }),
        journal: Vec::new(),
        host: Arc::new(Recording::new()),
        limits: Limits::default(),
    });
    assert_eq!(
        outcome,
        Outcome::Failed("the parameters are nested deeper than 64 levels".into())
    );
}

#[test]
fn closures_are_refused_at_load() {
    // A closure holds what it captures beyond the size checks that bound nesting.
    let errors = load_errors("fn run(i, p) {\n    let f = |x| x + 1;\n}\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 2, "{errors:?}");
}

// ---- item 4: the operation limit bounds copies by their size ----------------------------

#[test]
fn copying_a_large_value_in_a_loop_is_charged_by_its_size() {
    // 50,000 operations once allowed ~12,000 copies of this 10,000-element array (about 2 GB
    // copied); charged by size, a few dozen. Each copy prints a line, which the log keeps.
    let script = "fn run(i, p) {
        let big = [];
        for n in 0..10000 { big.push(n); }
        let copies = 0;
        loop { let c = big; copies += 1; print(copies); }
    }";
    let rb = runbook(script, "");
    let host = Arc::new(Recording::new());
    let limits = Limits {
        max_operations: 50_000,
        ..Limits::default()
    };
    let outcome = execute_with(&rb, &host, Vec::new(), limits);
    let copies = host.log.lock().unwrap().len();
    assert!(copies < 100, "{copies} copies ran within 50,000 operations");
    match outcome {
        Outcome::Failed(m) => assert!(
            m.starts_with("operation limit exceeded")
                && m.contains("copies of large values count by their size"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_the_host_allocates_performing_steps_is_not_charged_to_the_script() {
    // A live HTTP step reads and parses its response on the script's thread; 150 steps of
    // 8 MiB each would be 4.9 million operations if they were charged.
    let rb = runbook(
        "fn run(i, p) { for n in 0..150 { http::get(p.target); } }",
        "http",
    );
    let host = Arc::new(Recording::answering(|_| {
        let response = std::hint::black_box(vec![1u8; 8 << 20]);
        Some(Ok(firebreak_runbook::StepOutcome::Done(
            json!({ "status": 200, "bytes": response.len() }),
        )))
    }));
    let outcome = execute_with(&rb, &host, Vec::new(), Limits::default());
    assert_eq!(outcome, Outcome::Succeeded { steps: 150 });
}

// ---- item 7: caps on effects ------------------------------------------------------------

#[test]
fn a_run_takes_at_most_max_steps_steps() {
    let script = "fn run(i, p) { for n in 0..1000 { incident::note(`step ${n}`); } }";
    let (outcome, host) = run(&runbook(script, "incident"), Vec::new());
    assert_eq!(
        outcome,
        Outcome::Failed(
            "step limit exceeded at step 201: runbook t may take at most 200 steps a run (limits.max_steps)"
                .into()
        )
    );
    assert_eq!(host.steps().len(), 200);

    let rb = runbook_with(
        "capabilities: [incident]\nlimits: { max_steps: 3 }\n",
        script,
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("step limit exceeded at step 4")),
        "{outcome:?}"
    );
    assert_eq!(host.steps().len(), 3);
}

#[test]
fn pages_and_notifications_are_capped_per_run_and_cannot_be_caught() {
    let script =
        "fn run(i, p) { for n in 0..200 { try { incident::escalate(`page ${n}`); } catch { } } }";
    let (outcome, host) = run(&runbook(script, "incident"), Vec::new());
    assert_eq!(
        outcome,
        Outcome::Failed(
            "page limit exceeded at step 6: runbook t may page at most 5 times a run (limits.max_pages)"
                .into()
        )
    );
    assert_eq!(host.steps().len(), 5);

    let script = "fn run(i, p) { for n in 0..2000 { notify::send(\"log\", `n ${n}`); } }";
    let (outcome, host) = run(&runbook(script, "notify"), Vec::new());
    assert_eq!(
        outcome,
        Outcome::Failed(
            "notification limit exceeded at step 21: runbook t may send at most 20 times a run (limits.max_notifications)"
                .into()
        )
    );
    assert_eq!(host.steps().len(), 20);

    // Zero forbids the effect; other steps go on counting toward max_steps only.
    let rb = runbook_with(
        "capabilities: [incident, notify]\nlimits: { max_pages: 0, max_notifications: 2 }\n",
        "fn run(i, p) { incident::note(\"a\"); notify::send(\"log\", \"b\"); incident::escalate(\"c\"); }",
    );
    let (outcome, host) = run(&rb, Vec::new());
    assert!(
        matches!(&outcome, Outcome::Failed(m) if m.starts_with("page limit exceeded at step 3")),
        "{outcome:?}"
    );
    assert_eq!(host.steps().len(), 2);
}

#[test]
fn a_replay_counts_its_journaled_pages() {
    let rb = runbook_with(
        "capabilities: [incident]\nlimits: { max_pages: 2 }\n",
        "fn run(i, p) { incident::escalate(\"a\"); incident::escalate(\"b\"); incident::escalate(\"c\"); }",
    );
    let (first, host) = run(&rb, Vec::new());
    assert!(matches!(&first, Outcome::Failed(m) if m.starts_with("page limit exceeded at step 3")));
    // Resumed from the journal of its two pages, it stops at the same step and pages nobody.
    let journal: Vec<Recorded> = journal_of(&host.steps(), |_| json!({}));
    let (again, host) = run(&rb, journal);
    assert_eq!(again, first);
    assert!(host.steps().is_empty());
}

#[test]
fn a_note_longer_than_the_note_limit_is_refused_in_the_run() {
    let script = format!(
        "fn run(i, p) {{ let s = \"x\"; for n in 0..15 {{ s += s; }} incident::note(s.sub_string(0, {}) ); }}",
        MAX_NOTE_BYTES + 1
    );
    let message = failure(&script, "incident", 0);
    assert!(
        message.contains("incident::note: the text is 16385 bytes; a note holds 1 to 16384 bytes"),
        "{message}"
    );
    let script = format!(
        "fn run(i, p) {{ let s = \"x\"; for n in 0..15 {{ s += s; }} incident::note(s.sub_string(0, {MAX_NOTE_BYTES})); }}"
    );
    let (outcome, host) = run(&runbook(&script, "incident"), Vec::new());
    assert_eq!(outcome, Outcome::Succeeded { steps: 1 });
    assert_eq!(
        host.steps()[0].args["text"].as_str().unwrap().len(),
        MAX_NOTE_BYTES
    );
}

#[test]
fn caps_out_of_range_are_load_errors_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: t\nmatch: {}\nlimits:\n  max_steps: 0\n  max_pages: 101\n";
    let errors = load_raw(dir.path(), yaml, "fn run(i, p) {}\n").unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{messages:#?}");
    assert!(
        messages[0].ends_with("t.yaml:4:3: limits.max_steps must be 1 to 10000, not 0"),
        "{messages:#?}"
    );
    assert!(
        messages[1].ends_with("t.yaml:5:3: limits.max_pages must be 0 to 100, not 101"),
        "{messages:#?}"
    );
}

// ---- item 12: compile limits match the run's ---------------------------------------------

#[test]
fn too_many_variables_are_refused_at_load_with_their_line() {
    // `run` has two parameters, so the 255th `let` would be the 257th variable in scope.
    let lets: String = (0..300).map(|n| format!("    let v{n} = {n};\n")).collect();
    let errors = load_errors(&format!("fn run(incident, params) {{\n{lets}}}\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].file.ends_with("t.rhai"));
    assert_eq!(errors[0].line, 256, "{}", errors[0]);
    assert!(
        errors[0].message.contains("too many variables") && errors[0].message.contains("256"),
        "{}",
        errors[0]
    );

    // Variables of blocks that ended are out of scope, at load as when the script runs.
    let blocks: String = (0..300)
        .map(|n| format!("    if true {{ let v{n} = {n}; }}\n"))
        .collect();
    let rb = runbook(&format!("fn run(incident, params) {{\n{blocks}}}\n"), "");
    assert_eq!(run(&rb, Vec::new()).0, Outcome::Succeeded { steps: 0 });
}

#[test]
fn a_script_over_the_size_limit_is_refused_before_it_compiles() {
    let filler = "// padding\n".repeat(7_000);
    let errors = load_errors(&format!("fn run(i, p) {{}}\n{filler}"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].file.ends_with("t.rhai"));
    assert!(
        errors[0]
            .message
            .starts_with("the script is 77016 bytes, more than 65536"),
        "{}",
        errors[0]
    );
}

// ---- item 5: URLs built from labels -------------------------------------------------------

#[test]
fn url_join_escapes_every_segment_and_query_value() {
    let rb = runbook(
        r#"fn run(i, p) {
            http::get(url::join("http://autoscaler.internal:8080/", ["api", "v1", "services", i.labels.service, "scale"]));
            http::get(url::join("https://status.test", ["health", 7], #{ q: "a b&c=d#", skip: () }));
        }"#,
        "http",
    );
    let host = Arc::new(Recording::new());
    let outcome = execute(firebreak_runbook::Execution {
        runbook: rb,
        run_id: "run-1".into(),
        incident: json!({ "labels": { "service": "../../../admin/v1/purge-all?confirm=yes#" } }),
        params: json!({}),
        journal: Vec::new(),
        host: host.clone(),
        limits: Limits::default(),
    });
    assert_eq!(outcome, Outcome::Succeeded { steps: 2 });
    let urls: Vec<String> = host
        .steps()
        .iter()
        .map(|s| s.args["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "http://autoscaler.internal:8080/api/v1/services/..%2F..%2F..%2Fadmin%2Fv1%2Fpurge-all%3Fconfirm%3Dyes%23/scale",
            "https://status.test/health/7?q=a%20b%26c%3Dd%23",
        ]
    );

    for (script, error) in [
        ("url::join(\"http://x.test\", [\"..\"])", "dot segment"),
        ("url::join(\"http://x.test\", [\"\"])", "dot segment"),
        (
            "url::join(\"file:///etc\", [\"passwd\"])",
            "must be an http:// or https:// URL",
        ),
        (
            "url::join(\"http://x.test/?a=1\", [\"b\"])",
            "without query or fragment",
        ),
        (
            "url::join(\"http://x.test\", [#{}])",
            "must be a string, number or boolean",
        ),
        (
            "validate::ip(\"source_ip\", \"0.0.0.0/0\")",
            "source_ip: \"0.0.0.0/0\" is not a single IP address",
        ),
        (
            "validate::ip(\"source_ip\", \"::\")",
            "source_ip: \"::\" is an address that stands for many hosts",
        ),
        (
            "validate::name(\"user\", \"*\")",
            "user: \"*\" is not a name",
        ),
        ("validate::name(\"user\", 7)", "user: must be a string"),
    ] {
        let message = failure(&format!("fn run(i, p) {{ {script}; }}"), "", 0);
        assert!(message.contains(error), "{script}: {message}");
    }
    // A missing label passes through, for the script's own check.
    let rb = runbook(
        "fn run(i, p) { if validate::ip(\"x\", i.labels.nothing) != () { throw \"no\"; } }",
        "",
    );
    assert_eq!(run(&rb, Vec::new()).0, Outcome::Succeeded { steps: 0 });
}
