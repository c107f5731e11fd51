//! The shipped runbooks in `runbooks/`: one per category, each loads, runs to success for an
//! incident of its category and calls exactly the actions listed here, in order, so any change
//! to what a runbook does shows up as a failing test to be updated on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use firebreak_runbook::{
    Catalog, Execution, Host, Limits, Mode, OnTimeout, Outcome, Recorded, Runbook, Step, StepError,
    StepOutcome, execute, is_side_effecting,
};
use serde_json::{Value, json};

/// The categories of the default taxonomy; each has exactly one shipped runbook of that name.
const CATEGORIES: [&str; 10] = [
    "malware",
    "phishing",
    "unauthorized-access",
    "denial-of-service",
    "data-breach",
    "insider-threat",
    "service-outage",
    "performance-degradation",
    "misconfiguration",
    "uncategorized",
];

/// How the recording host answers `approval.request`.
#[derive(Clone, Copy)]
enum Approval {
    Approve,
    Reject,
    /// Like the real host: journal the request as waiting and stop the run.
    Wait,
}

/// How the recording host answers HTTP calls, by URL.
type HttpAnswer = fn(&str) -> Result<u16, String>;

/// How the recording host answers Kubernetes calls, by action (`k8s.scale`): `Err` is what
/// the real host raises when the API server refuses or cannot be reached.
type KubeAnswer = fn(&str) -> Result<(), String>;

/// A host that records every step. By default it answers like a dry run: HTTP calls succeed
/// with `{"status": 200, "simulated": true}` (no body), Kubernetes calls with
/// `{"ok": true, "simulated": true}`, approvals are granted.
struct Recording {
    steps: Mutex<Vec<Step>>,
    approval: Approval,
    http: HttpAnswer,
    k8s: KubeAnswer,
}

impl Recording {
    fn new() -> Self {
        Self {
            steps: Mutex::new(Vec::new()),
            approval: Approval::Approve,
            http: |_| Ok(200),
            k8s: |_| Ok(()),
        }
    }

    fn approval(mut self, approval: Approval) -> Self {
        self.approval = approval;
        self
    }

    fn http(mut self, http: HttpAnswer) -> Self {
        self.http = http;
        self
    }

    fn k8s(mut self, k8s: KubeAnswer) -> Self {
        self.k8s = k8s;
        self
    }
}

impl Host for Recording {
    fn perform(&self, step: &Step) -> Result<StepOutcome, StepError> {
        self.steps.lock().unwrap().push(step.clone());
        let result = match step.action.as_str() {
            "approval.request" => match self.approval {
                Approval::Approve => json!({ "approved": true, "by": "alice" }),
                Approval::Reject => json!({ "approved": false, "by": "alice" }),
                Approval::Wait => return Ok(StepOutcome::Waiting),
            },
            a if a.starts_with("http.") => {
                let status = (self.http)(step.args["url"].as_str().unwrap_or_default())?;
                if status == 200 {
                    json!({ "status": 200, "simulated": true })
                } else {
                    json!({ "status": status, "body": "upstream error" })
                }
            }
            a if a.starts_with("k8s.") => {
                (self.k8s)(a)?;
                json!({ "ok": true, "simulated": true })
            }
            _ => json!({}),
        };
        Ok(StepOutcome::Done(result))
    }

    fn log(&self, _: &str) {}
}

fn runbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks")
}

fn catalog() -> Catalog {
    Catalog::load(&runbooks_dir(), &Limits::default())
        .unwrap_or_else(|errors| panic!("shipped runbooks do not load: {errors:#?}"))
}

/// An incident as orchestration hands it to a script.
fn incident(category: &str, severity: u32, alert_count: u32, labels: Value) -> Value {
    json!({
        "id": "inc-0001",
        "title": format!("sample {category} incident"),
        "description": "raised by the runbook tests",
        "category": category,
        "severity": severity,
        "priority": 2,
        "state": "open",
        "dedup_key": format!("test:{category}"),
        "alert_count": alert_count,
        "labels": labels,
        "source": "test-monitor",
    })
}

/// The labels of a typical incident of `category`: every target its runbook can act on.
fn labels(category: &str) -> Value {
    match category {
        "malware" => json!({ "host": "ws-042", "file_hash": "9f86d081884c7d65" }),
        "phishing" => json!({
            "sender": "billing@examp1e.com", "message_id": "<abc@examp1e.com>",
            "url": "https://examp1e.com/login", "user": "bob",
        }),
        "unauthorized-access" => json!({ "user": "bob", "source_ip": "203.0.113.9" }),
        "denial-of-service" => json!({ "service": "checkout", "source_ip": "198.51.100.7" }),
        "data-breach" => json!({ "bucket": "customer-exports", "access_key_id": "AKIA0001" }),
        "insider-threat" => json!({ "user": "mallory" }),
        "service-outage" | "performance-degradation" | "misconfiguration" | "uncategorized" => {
            json!({ "service": "checkout" })
        }
        other => panic!("no sample labels for {other}"),
    }
}

/// Runs `runbook` (with its default parameters and no journal) and returns what happened.
fn run_with(rb: &Runbook, incident: Value, host: Recording) -> (Outcome, Vec<Step>) {
    run_journaled(rb, incident, host, Vec::new())
}

fn run_journaled(
    rb: &Runbook,
    incident: Value,
    host: Recording,
    journal: Vec<Recorded>,
) -> (Outcome, Vec<Step>) {
    let host = Arc::new(host);
    let outcome = execute(Execution {
        runbook: rb.clone(),
        run_id: "run-1".into(),
        incident,
        params: rb.params(None).unwrap(),
        journal,
        host: host.clone(),
        limits: Limits::default(),
    });
    let steps = host.steps.lock().unwrap().clone();
    (outcome, steps)
}

fn actions(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.action.as_str()).collect()
}

fn urls(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter(|s| s.action.starts_with("http."))
        .map(|s| s.args["url"].as_str().unwrap())
        .collect()
}

fn notes(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter(|s| s.action == "incident.note")
        .map(|s| s.args["text"].as_str().unwrap())
        .collect()
}

/// The journal a host would have written for `steps`, every step done with `result`.
fn journal_of(steps: &[Step], result: impl Fn(&Step) -> Value) -> Vec<Recorded> {
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

const POST: &str = "http.post";
const GET: &str = "http.get";
const REQUEST: &str = "http.request";
const RESTART: &str = "k8s.rollout_restart";
const SCALE: &str = "k8s.scale";
const ISOLATE: &str = "k8s.isolate";
const SLEEP: &str = "sleep.for";
const ESCALATE: &str = "incident.escalate";
const NOTE: &str = "incident.note";
const NOTIFY: &str = "notify.send";
const APPROVAL: &str = "approval.request";
const SEVERITY: &str = "incident.set_severity";

/// What each runbook does for the incident of `labels(category)`, SEV2, one alert, with every
/// target answering 200 and approvals granted: its actions in order, and its HTTP calls.
fn expected(category: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    match category {
        "malware" => (
            vec![POST, NOTE, POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY],
            vec![
                "http://edr.internal:8080/api/v1/hosts/ws-042/isolate",
                "http://edr.internal:8080/api/v1/blocklist",
                "http://edr.internal:8080/api/v1/hosts/ws-042/collect-evidence",
                "http://provisioner.internal:8080/api/v1/hosts/ws-042/reimage",
            ],
        ),
        "phishing" => (
            vec![
                POST, NOTE, POST, NOTE, POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY,
            ],
            vec![
                "http://mail-gateway.internal:8080/api/v1/quarantine",
                "http://mail-gateway.internal:8080/api/v1/blocklist",
                "http://proxy.internal:8080/api/v1/blocklist",
                "http://idp.internal:8080/api/v1/users/bob/sessions/revoke",
                "http://idp.internal:8080/api/v1/users/bob/password-reset",
            ],
        ),
        "unauthorized-access" => (
            vec![
                POST, NOTE, POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY, APPROVAL, POST, POST, NOTE,
                NOTIFY,
            ],
            vec![
                "http://idp.internal:8080/api/v1/users/bob/disable",
                "http://idp.internal:8080/api/v1/users/bob/sessions/revoke",
                "http://idp.internal:8080/api/v1/users/bob/tokens/revoke",
                "http://firewall.internal:8080/api/v1/block",
                "http://idp.internal:8080/api/v1/users/bob/reset-credentials",
                "http://idp.internal:8080/api/v1/users/bob/enable",
            ],
        ),
        "denial-of-service" => (
            vec![POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY, SLEEP, GET, NOTE],
            vec![
                "http://firewall.internal:8080/api/v1/block",
                "http://firewall.internal:8080/api/v1/rate-limits",
                "http://autoscaler.internal:8080/api/v1/services/checkout/scale",
                "http://status.internal:8080/api/v1/services/checkout/health",
            ],
        ),
        "data-breach" => (
            vec![
                POST, NOTE, REQUEST, NOTE, POST, NOTE, NOTIFY, APPROVAL, REQUEST, NOTE, NOTIFY,
            ],
            vec![
                "http://storage.internal:8080/api/v1/buckets/customer-exports/block-public-access",
                "http://secrets.internal:8080/api/v1/access-keys/AKIA0001/revoke",
                "http://storage.internal:8080/api/v1/buckets/customer-exports/access-log/snapshot",
                "http://secrets.internal:8080/api/v1/rotate",
            ],
        ),
        "insider-threat" => (
            vec![
                POST, NOTE, POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY, APPROVAL, POST, NOTE,
                NOTIFY,
            ],
            vec![
                "http://idp.internal:8080/api/v1/users/mallory/remove-privileged-groups",
                "http://idp.internal:8080/api/v1/users/mallory/tokens/revoke",
                "http://dlp.internal:8080/api/v1/users/mallory/block-egress",
                "http://dlp.internal:8080/api/v1/legal-holds",
                "http://secrets.internal:8080/api/v1/rotate",
            ],
        ),
        "service-outage" => (
            vec![POST, NOTE, RESTART, NOTE, SCALE, NOTE, NOTIFY],
            vec!["http://lb.internal:8080/api/v1/pools/checkout/drain-unhealthy"],
        ),
        "performance-degradation" => (
            vec![POST, POST, NOTE, POST, NOTE, NOTIFY],
            vec![
                "http://flags.internal:8080/api/v1/flags/recommendations/disable",
                "http://flags.internal:8080/api/v1/flags/search-suggestions/disable",
                "http://autoscaler.internal:8080/api/v1/services/checkout/scale-up",
            ],
        ),
        "misconfiguration" => (
            vec![POST, NOTE, POST, NOTE, POST, NOTE, NOTIFY],
            vec![
                "http://config.internal:8080/api/v1/services/checkout/freeze",
                "http://config.internal:8080/api/v1/services/checkout/restore",
                "http://deploy.internal:8080/api/v1/services/checkout/restart",
            ],
        ),
        "uncategorized" => (
            vec![POST, NOTE, GET, NOTE, NOTE, NOTIFY],
            vec![
                "http://logs.internal:8080/api/v1/holds",
                "http://status.internal:8080/api/v1/services/checkout/health",
            ],
        ),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn the_catalog_holds_exactly_one_runbook_per_category() {
    let catalog = catalog();
    let names: BTreeSet<&str> = catalog
        .all()
        .iter()
        .map(|r| r.manifest.name.as_str())
        .collect();
    assert_eq!(names, CATEGORIES.into_iter().collect());
    assert_eq!(catalog.all().len(), CATEGORIES.len());
    let no_labels = BTreeMap::new();
    for category in CATEGORIES {
        let matching: Vec<&str> = catalog
            .matching(category, 2, &no_labels)
            .iter()
            .map(|r| r.manifest.name.as_str())
            .collect();
        assert_eq!(
            matching,
            [category],
            "exactly its own runbook runs for {category}"
        );
    }
}

#[test]
fn severity_ranges_are_deliberate() {
    let catalog = catalog();
    let no_labels = BTreeMap::new();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        // Malware at SEV5 is adware and the like: isolating a laptop for it is left to a person.
        let max = if category == "malware" { 4 } else { 5 };
        for severity in 1..=5 {
            assert_eq!(
                rb.manifest.matches(category, severity, &no_labels),
                severity <= max,
                "{category} at SEV{severity}"
            );
        }
    }
}

#[test]
fn every_runbook_runs_its_expected_actions_in_order() {
    let catalog = catalog();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let (outcome, steps) = run_with(
            rb,
            incident(category, 2, 1, labels(category)),
            Recording::new(),
        );
        assert_eq!(
            outcome,
            Outcome::Succeeded {
                steps: steps.len() as u32
            },
            "{category}"
        );
        let (want_actions, want_urls) = expected(category);
        assert_eq!(actions(&steps), want_actions, "{category}: actions");
        assert_eq!(urls(&steps), want_urls, "{category}: http targets");
        // Every run leaves a trace on the incident and in the log channel.
        assert!(actions(&steps).contains(&NOTE), "{category}");
        assert!(
            steps
                .iter()
                .any(|s| s.action == NOTIFY && s.args["channel"] == "log"),
            "{category} notifies the log channel"
        );
        // Containment comes first: the first action touches the outside world.
        assert!(is_side_effecting(&steps[0].action), "{category}");
        // A clean run reports no failure anywhere.
        for step in &steps {
            let text = step.args.to_string();
            assert!(!text.contains("FAILED"), "{category}: {text}");
        }
    }
}

#[test]
fn every_http_call_goes_to_a_parameterised_target() {
    let catalog = catalog();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let bases: Vec<String> = rb
            .manifest
            .parameters
            .iter()
            .filter(|(name, _)| name.ends_with("_url"))
            .map(|(_, p)| p.default.as_str().unwrap().to_owned())
            .collect();
        for base in &bases {
            assert!(
                base.starts_with("http://") && base.contains(".internal:"),
                "{category}: {base} is an internal placeholder"
            );
        }
        let (_, steps) = run_with(
            rb,
            incident(category, 2, 1, labels(category)),
            Recording::new(),
        );
        for url in urls(&steps) {
            assert!(
                bases.iter().any(|b| url.starts_with(&format!("{b}/"))),
                "{category}: {url} is not under a parameter"
            );
        }
        // An operator's override of a target moves every call to it.
        let overrides: BTreeMap<String, Value> = rb
            .manifest
            .parameters
            .keys()
            .filter(|k| k.ends_with("_url"))
            .map(|k| (k.clone(), json!(format!("http://{k}.test"))))
            .collect();
        let host = Arc::new(Recording::new());
        execute(Execution {
            runbook: rb.clone(),
            run_id: "run-1".into(),
            incident: incident(category, 2, 1, labels(category)),
            params: rb.params(Some(&overrides)).unwrap(),
            journal: Vec::new(),
            host: host.clone(),
            limits: Limits::default(),
        });
        let steps = host.steps.lock().unwrap().clone();
        assert!(!urls(&steps).is_empty(), "{category}");
        for url in urls(&steps) {
            assert!(
                url.contains(".test/") && !url.contains(".internal"),
                "{category}: {url} ignores the override"
            );
        }
    }
}

/// The `module::function` calls in a script's code (comment lines skipped), as capabilities.
fn calls_in(source: &str) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("::") {
            let module: String = line[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let function: String = line[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `url` and `validate` perform nothing, so they need no capability.
            if module != "url" && module != "validate" {
                calls.insert(format!("{module}.{function}"));
            }
        }
        // Durable sleep is a plain function; its capability is the module `sleep`.
        if line.match_indices("sleep(").any(|(at, _)| {
            !line[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }) {
            calls.insert("sleep".into());
        }
    }
    calls
}

/// The names a script passes to `secret("NAME")` (comment lines skipped).
fn secrets_in(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("secret(\"") {
            let rest = &line[at + "secret(\"".len()..];
            names.insert(rest.chars().take_while(|c| *c != '"').collect());
        }
    }
    names
}

/// The `params.NAME` a script's code reads (comment lines skipped).
fn params_in(source: &str) -> BTreeSet<String> {
    let mut params = BTreeSet::new();
    for line in source.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("params.") {
            let name: String = line[at + "params.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            params.insert(name);
        }
    }
    params
}

#[test]
fn manifests_declare_exactly_what_scripts_use() {
    let catalog = catalog();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let declared: BTreeSet<String> = rb.manifest.capabilities.iter().cloned().collect();
        assert_eq!(
            declared,
            calls_in(&rb.source),
            "{category}: capabilities must be exactly the actions the script calls"
        );
        assert_eq!(
            rb.manifest
                .secrets
                .iter()
                .map(|s| s.name.clone())
                .collect::<BTreeSet<_>>(),
            secrets_in(&rb.source),
            "{category}: secrets must be exactly the ones the script uses"
        );
        assert_eq!(
            rb.manifest
                .parameters
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>(),
            params_in(&rb.source),
            "{category}: parameters must be exactly the ones the script reads"
        );
        assert_eq!(
            rb.manifest.matches.categories,
            [category],
            "{category} matches its own category only"
        );
        assert!(!rb.manifest.description.is_empty(), "{category}");
        let first = rb.source.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("// {category}: ")),
            "{category}: the first line says what the script is for: {first:?}"
        );
    }
}

#[test]
fn every_runbook_replays_from_its_journal_without_acting_again() {
    let catalog = catalog();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let inc = incident(category, 2, 1, labels(category));
        let (first, steps) = run_with(rb, inc.clone(), Recording::new());
        let journal = journal_of(&steps, |s| match s.action.as_str() {
            APPROVAL => json!({ "approved": true }),
            a if a.starts_with("http.") => json!({ "status": 200, "simulated": true }),
            _ => json!({}),
        });
        let (again, performed) = run_journaled(rb, inc, Recording::new(), journal);
        assert_eq!(again, first, "{category}: a replay ends the same way");
        assert!(
            performed.is_empty(),
            "{category}: a replay repeats nothing: {:?}",
            actions(&performed)
        );
    }
}

#[test]
fn failing_targets_are_written_down_and_never_crash_a_run() {
    let catalog = catalog();
    let answers: [(&str, HttpAnswer); 2] = [
        ("HTTP 503", |_| Ok(503)),
        ("target unreachable", |_| Err("connection refused".into())),
    ];
    for (why, answer) in answers {
        for category in CATEGORIES {
            let rb = catalog.get(category).unwrap();
            let host = Recording::new().http(answer);
            let (outcome, steps) = run_with(rb, incident(category, 2, 1, labels(category)), host);
            assert!(
                matches!(outcome, Outcome::Succeeded { .. }),
                "{category} with {why}: {outcome:?}"
            );
            let notes = notes(&steps);
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains("FAILED") && n.contains(why)),
                "{category} with {why}: {notes:#?}"
            );
            // The log channel hears about the failure too, not only the timeline.
            let last = steps.iter().rev().find(|s| s.action == NOTIFY).unwrap();
            assert!(
                last.args["message"].as_str().unwrap().contains("FAILED"),
                "{category} with {why}: {}",
                last.args["message"]
            );
        }
    }
}

#[test]
fn runbooks_do_not_act_on_targets_they_were_not_given() {
    let catalog = catalog();
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let (outcome, steps) = run_with(rb, incident(category, 2, 1, json!({})), Recording::new());
        assert!(
            matches!(outcome, Outcome::Succeeded { .. }),
            "{category}: {outcome:?}"
        );
        assert!(
            !notes(&steps).is_empty(),
            "{category} says what it did not do"
        );
        if category == "uncategorized" {
            // Only the evidence hold, which needs no target.
            assert_eq!(urls(&steps), ["http://logs.internal:8080/api/v1/holds"]);
        } else {
            assert!(urls(&steps).is_empty(), "{category}: {:?}", urls(&steps));
            assert!(
                notes(&steps)[0].contains("label"),
                "{category}: {:?}",
                notes(&steps)
            );
        }
    }
}

#[test]
fn service_outage_escalates_to_sev1_only_on_three_or_more_alerts() {
    let catalog = catalog();
    let rb = catalog.get("service-outage").unwrap();
    for (alert_count, escalates) in [(0, false), (1, false), (2, false), (3, true), (10, true)] {
        let inc = incident("service-outage", 3, alert_count, labels("service-outage"));
        let (outcome, steps) = run_with(rb, inc, Recording::new());
        assert!(matches!(outcome, Outcome::Succeeded { .. }));
        let severity: Vec<&Step> = steps.iter().filter(|s| s.action == SEVERITY).collect();
        if escalates {
            assert_eq!(severity.len(), 1, "{alert_count} alerts");
            assert_eq!(severity[0].args, json!({ "severity": 1 }));
            // Paging the right people comes before anything else.
            assert_eq!(steps[0].action, SEVERITY);
            assert!(notes(&steps)[0].contains("SEV1"), "{:?}", notes(&steps));
        } else {
            assert!(
                severity.is_empty(),
                "{alert_count} alerts must not escalate"
            );
            assert_eq!(actions(&steps), expected("service-outage").0);
        }
    }
    // Already SEV1: nothing to escalate.
    let inc = incident("service-outage", 1, 5, labels("service-outage"));
    let (_, steps) = run_with(rb, inc, Recording::new());
    assert!(!actions(&steps).contains(&SEVERITY));
    // No alert count at all never escalates by accident.
    let mut inc = incident("service-outage", 3, 5, labels("service-outage"));
    inc.as_object_mut().unwrap().remove("alert_count");
    let (outcome, steps) = run_with(rb, inc, Recording::new());
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert!(!actions(&steps).contains(&SEVERITY));
}

#[test]
fn service_outage_rolls_back_when_the_restart_fails() {
    let catalog = catalog();
    let rb = catalog.get("service-outage").unwrap();
    let inc = incident("service-outage", 2, 1, labels("service-outage"));
    let refuse_restart: KubeAnswer = |action| {
        if action == RESTART {
            Err("kubernetes answered 403: forbidden".into())
        } else {
            Ok(())
        }
    };
    let host = Recording::new().k8s(refuse_restart);
    let (outcome, steps) = run_with(rb, inc.clone(), host);
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert_eq!(
        actions(&steps),
        [POST, NOTE, RESTART, NOTE, POST, NOTE, SCALE, NOTE, NOTIFY]
    );
    assert_eq!(
        urls(&steps),
        [
            "http://lb.internal:8080/api/v1/pools/checkout/drain-unhealthy",
            "http://deploy.internal:8080/api/v1/services/checkout/rollback",
        ]
    );
    assert!(
        notes(&steps)
            .iter()
            .any(|n| n.contains("FAILED") && n.contains("403")),
        "{:?}",
        notes(&steps)
    );
    assert!(
        notes(&steps)
            .iter()
            .any(|n| n.contains("rolled checkout back"))
    );

    // Both refused: nothing is scaled, and the last note tells the responder that nothing
    // automatic is left.
    let host = Recording::new()
        .k8s(refuse_restart)
        .http(|url| Ok(if url.contains("deploy") { 500 } else { 200 }));
    let (_, steps) = run_with(rb, inc, host);
    assert!(!actions(&steps).contains(&SCALE), "{:?}", actions(&steps));
    let notes = notes(&steps);
    assert!(
        notes.last().unwrap().contains("page the owners"),
        "{notes:?}"
    );
}

#[test]
fn service_outage_restarts_and_scales_the_deployment_named_by_the_service_label() {
    let catalog = catalog();
    let rb = catalog.get("service-outage").unwrap();
    let inc = incident("service-outage", 2, 1, labels("service-outage"));
    let (_, steps) = run_with(rb, inc.clone(), Recording::new());
    let restart = steps.iter().find(|s| s.action == RESTART).unwrap();
    assert_eq!(
        restart.args,
        json!({ "namespace": "production", "kind": "deployment", "name": "checkout" })
    );
    let scale = steps.iter().find(|s| s.action == SCALE).unwrap();
    assert_eq!(scale.args["replicas"], 6);
    // Kubernetes steps are retried on transient errors, like HTTP ones.
    assert_eq!(restart.retry.attempts, 3);

    // A failing scale-out is noted and reported; the restart stands.
    let host = Recording::new().k8s(|action| {
        if action == SCALE {
            Err("kubernetes answered 500: etcd timeout".into())
        } else {
            Ok(())
        }
    });
    let (outcome, steps) = run_with(rb, inc, host);
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert!(notes(&steps).last().unwrap().contains("FAILED"));
    let last = steps.last().unwrap();
    assert_eq!(last.action, NOTIFY);
    assert!(last.args["message"].as_str().unwrap().contains("scale out"));
}

#[test]
fn data_breach_rotates_keys_only_when_a_person_approves() {
    let catalog = catalog();
    let rb = catalog.get("data-breach").unwrap();
    let inc = incident("data-breach", 1, 1, labels("data-breach"));
    let rotate = "http://secrets.internal:8080/api/v1/rotate";

    let (outcome, approved) = run_with(rb, inc.clone(), Recording::new());
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert_eq!(urls(&approved).last(), Some(&rotate));
    let prompt = approved.iter().find(|s| s.action == APPROVAL).unwrap();
    assert!(
        prompt.args["prompt"]
            .as_str()
            .unwrap()
            .contains("customer-exports")
    );

    let (outcome, rejected) = run_with(rb, inc, Recording::new().approval(Approval::Reject));
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert!(!urls(&rejected).contains(&rotate), "{:?}", urls(&rejected));
    // Containment happened all the same, and the rejection is on the record.
    assert_eq!(urls(&rejected), urls(&approved)[..3]);
    assert_eq!(rejected.last().unwrap().action, NOTE);
    assert!(notes(&rejected).last().unwrap().contains("rejected"));
}

#[test]
fn data_breach_waits_for_the_approval_then_resumes_from_its_journal() {
    let catalog = catalog();
    let rb = catalog.get("data-breach").unwrap();
    let inc = incident("data-breach", 1, 1, labels("data-breach"));

    // The real host journals the approval as waiting: the run stops at that step.
    let (outcome, before) = run_with(rb, inc.clone(), Recording::new().approval(Approval::Wait));
    let approval_seq = before.last().unwrap().seq;
    assert_eq!(before.last().unwrap().action, APPROVAL);
    assert_eq!(outcome, Outcome::Waiting { seq: approval_seq });
    assert!(!urls(&before).contains(&"http://secrets.internal:8080/api/v1/rotate"));

    // A person approves; the next execution replays everything up to the decision and only
    // performs what comes after it.
    let journal = journal_of(&before, |s| match s.action.as_str() {
        APPROVAL => json!({ "approved": true, "by": "alice" }),
        a if a.starts_with("http.") => json!({ "status": 200, "simulated": true }),
        _ => json!({}),
    });
    let (outcome, after) = run_journaled(rb, inc, Recording::new(), journal);
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    assert_eq!(actions(&after), [REQUEST, NOTE, NOTIFY]);
    assert_eq!(after[0].seq, approval_seq + 1);
    assert_eq!(urls(&after), ["http://secrets.internal:8080/api/v1/rotate"]);
}

#[test]
fn unauthorized_access_re_enables_only_after_approval_and_a_credential_reset() {
    let catalog = catalog();
    let rb = catalog.get("unauthorized-access").unwrap();
    let inc = incident("unauthorized-access", 2, 1, labels("unauthorized-access"));
    let enable = "http://idp.internal:8080/api/v1/users/bob/enable";

    let (_, rejected) = run_with(rb, inc.clone(), Recording::new().approval(Approval::Reject));
    assert!(!urls(&rejected).contains(&enable));
    assert!(notes(&rejected).last().unwrap().contains("stays disabled"));

    // A failed reset keeps the account disabled even though a person approved.
    let host = Recording::new().http(|url| {
        Ok(if url.ends_with("/reset-credentials") {
            500
        } else {
            200
        })
    });
    let (_, failed_reset) = run_with(rb, inc.clone(), host);
    assert!(!urls(&failed_reset).contains(&enable));

    // If the account could not even be disabled, nobody is asked to re-enable it.
    let host = Recording::new().http(|url| Ok(if url.ends_with("/disable") { 500 } else { 200 }));
    let (_, failed_disable) = run_with(rb, inc, host);
    assert!(!actions(&failed_disable).contains(&APPROVAL));
    assert!(notes(&failed_disable)[0].contains("NOW"));
}

#[test]
fn malware_never_re_images_a_host_it_could_not_isolate_or_preserve() {
    let catalog = catalog();
    let rb = catalog.get("malware").unwrap();
    let inc = incident("malware", 2, 1, labels("malware"));

    let host = Recording::new().http(|url| Ok(if url.ends_with("/isolate") { 502 } else { 200 }));
    let (_, steps) = run_with(rb, inc.clone(), host);
    assert_eq!(actions(&steps), [POST, NOTE, NOTIFY]);
    assert!(notes(&steps)[0].contains("HTTP 502"));

    let host = Recording::new().http(|url| {
        Ok(if url.ends_with("/collect-evidence") {
            500
        } else {
            200
        })
    });
    let (_, steps) = run_with(rb, inc, host);
    assert!(
        !urls(&steps).iter().any(|u| u.ends_with("/reimage")),
        "{:?}",
        urls(&steps)
    );
    assert!(notes(&steps).last().unwrap().contains("NOT re-imaged"));
}

#[test]
fn performance_degradation_sheds_the_configured_features() {
    let catalog = catalog();
    let rb = catalog.get("performance-degradation").unwrap();
    let overrides = BTreeMap::from([("shed_flags".to_owned(), json!(["video-previews"]))]);
    let host = Arc::new(Recording::new());
    let outcome = execute(Execution {
        runbook: rb.clone(),
        run_id: "run-1".into(),
        incident: incident(
            "performance-degradation",
            2,
            1,
            labels("performance-degradation"),
        ),
        params: rb.params(Some(&overrides)).unwrap(),
        journal: Vec::new(),
        host: host.clone(),
        limits: Limits::default(),
    });
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    let steps = host.steps.lock().unwrap().clone();
    assert_eq!(
        urls(&steps),
        [
            "http://flags.internal:8080/api/v1/flags/video-previews/disable",
            "http://autoscaler.internal:8080/api/v1/services/checkout/scale-up",
        ]
    );
    assert_eq!(steps[0].args["body"]["service"], "checkout");
}

#[test]
fn data_breach_authenticates_to_the_secrets_manager_with_a_placeholder_only() {
    let catalog = catalog();
    let rb = catalog.get("data-breach").unwrap();
    assert_eq!(
        rb.manifest.secrets,
        [firebreak_runbook::Secret {
            name: "secrets-api-token".into(),
            hosts: vec!["secrets.internal".into()],
        }]
    );
    let inc = incident("data-breach", 1, 1, labels("data-breach"));
    let (_, steps) = run_with(rb, inc, Recording::new());
    let requests: Vec<&Step> = steps.iter().filter(|s| s.action == REQUEST).collect();
    assert_eq!(requests.len(), 2, "revoke and rotate");
    for r in requests {
        assert!(
            r.args["url"]
                .as_str()
                .unwrap()
                .starts_with("http://secrets.internal:8080/")
        );
        assert_eq!(r.args["method"], "POST");
        assert_eq!(
            r.args["headers"]["Authorization"],
            "Bearer {{secret:secrets-api-token}}"
        );
        assert_eq!(r.retry.attempts, 3);
    }
    // An exposed bucket is not left public because of one transient error.
    let block = steps.iter().find(|s| s.action == POST).unwrap();
    assert_eq!((block.retry.attempts, block.retry.backoff_ms), (3, 200));
}

#[test]
fn denial_of_service_waits_then_escalates_if_the_service_is_still_down() {
    let catalog = catalog();
    let rb = catalog.get("denial-of-service").unwrap();
    let inc = incident("denial-of-service", 2, 1, labels("denial-of-service"));

    let (_, steps) = run_with(rb, inc.clone(), Recording::new());
    let sleep = steps.iter().position(|s| s.action == SLEEP).unwrap();
    assert_eq!(steps[sleep].args, json!({ "seconds": 60 }));
    // The wait comes after containment and before the verification.
    assert_eq!(
        steps[..sleep].iter().filter(|s| s.action == POST).count(),
        3
    );
    assert_eq!(steps[sleep + 1].action, GET);
    assert!(!actions(&steps).contains(&ESCALATE));

    let host = Recording::new().http(|url| Ok(if url.ends_with("/health") { 503 } else { 200 }));
    let (outcome, steps) = run_with(rb, inc, host);
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert_eq!(
        &actions(&steps)[sleep..],
        [SLEEP, GET, NOTE, ESCALATE, NOTIFY]
    );

    // Without a service there is nothing to verify, so nothing waits.
    let only_ip = incident(
        "denial-of-service",
        2,
        1,
        json!({ "source_ip": "198.51.100.7" }),
    );
    let (_, steps) = run_with(rb, only_ip, Recording::new());
    assert!(!actions(&steps).contains(&SLEEP), "{:?}", actions(&steps));
}

#[test]
fn malware_isolates_infected_pods_before_anything_else() {
    let catalog = catalog();
    let rb = catalog.get("malware").unwrap();
    let mut with_pods = labels("malware");
    with_pods["pod_app"] = json!("payments");
    let (outcome, steps) = run_with(rb, incident("malware", 2, 1, with_pods), Recording::new());
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert_eq!(steps[0].action, ISOLATE);
    assert_eq!(
        steps[0].args,
        json!({ "namespace": "production", "selector": { "app": "payments" } })
    );
    let (want, _) = expected("malware");
    assert_eq!(actions(&steps)[2..], want[..]);

    // Pods only, and Kubernetes refuses: noted, reported, no EDR call.
    let pods_only = json!({ "pod_app": "payments", "namespace": "shop" });
    let host = Recording::new().k8s(|_| Err("kubernetes answered 403: forbidden".into()));
    let (outcome, steps) = run_with(rb, incident("malware", 2, 1, pods_only), host);
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
    assert_eq!(actions(&steps), [ISOLATE, NOTE, NOTIFY]);
    assert_eq!(steps[0].args["namespace"], "shop");
    assert!(notes(&steps)[0].contains("FAILED"));
    assert!(urls(&steps).is_empty());
}

#[test]
fn misconfiguration_is_planned_and_approved_before_it_acts() {
    let catalog = catalog();
    let rb = catalog.get("misconfiguration").unwrap();
    assert_eq!(rb.manifest.mode, Mode::PlanApprove);
    assert_eq!(rb.manifest.approval.on_timeout, OnTimeout::Reject);
    for category in CATEGORIES {
        let mode = catalog.get(category).unwrap().manifest.mode;
        assert_eq!(
            mode == Mode::PlanApprove,
            category == "misconfiguration",
            "{category}"
        );
    }
}

#[test]
fn hostile_labels_of_the_issue_never_reach_an_action() {
    let catalog = catalog();
    let hostile = [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0",
        "../../../admin/v1/purge-all?confirm=yes#",
        "*",
        "a/b",
    ];
    for category in CATEGORIES {
        let rb = catalog.get(category).unwrap();
        let sample = labels(category);
        for key in sample.as_object().unwrap().keys() {
            for value in hostile {
                // The phishing link and message id are free text: only a wildcard is refused.
                let free_text = category == "phishing" && (key == "url" || key == "message_id");
                // "0.0.0.0" is a well-formed name: only an address label must refuse it.
                let plain_name = key != "source_ip" && value == "0.0.0.0";
                if (free_text && value != "*") || plain_name {
                    continue;
                }
                let mut labels = sample.clone();
                labels[key] = json!(value);
                let (outcome, steps) =
                    run_with(rb, incident(category, 2, 5, labels), Recording::new());
                assert!(
                    matches!(&outcome, Outcome::Failed(m) if m.contains(&format!("{key}: "))),
                    "{category} with {key}={value:?}: {outcome:?}"
                );
                assert!(
                    steps.is_empty(),
                    "{category} with {key}={value:?} acted: {:?}",
                    actions(&steps)
                );
            }
        }
    }
}

#[test]
fn every_shipped_fixture_passes() {
    let results =
        firebreak_runbook::fixture::run_dir(&runbooks_dir(), &catalog(), &Limits::default())
            .unwrap_or_else(|errors| panic!("{errors:#?}"));
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{}: {}: {f}", r.runbook, r.case))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(results.len() >= 50, "{} cases", results.len());
}
