//! Every shipped runbook loads and runs to success for an incident of its category, with the
//! host recording the actions it asked for (containment before recovery, as scripted).

use std::path::Path;
use std::sync::{Arc, Mutex};

use firebreak_runbook::{Catalog, Execution, Host, Limits, Outcome, Step, StepOutcome, execute};
use serde_json::json;

#[derive(Default)]
struct Recording {
    steps: Mutex<Vec<Step>>,
    approve: bool,
}

impl Host for Recording {
    fn perform(&self, step: &Step) -> Result<StepOutcome, String> {
        self.steps.lock().unwrap().push(step.clone());
        Ok(StepOutcome::Done(match step.action.as_str() {
            "approval.request" => json!({ "approved": self.approve }),
            a if a.starts_with("http.") => json!({ "status": 200, "simulated": true }),
            _ => json!({}),
        }))
    }
    fn log(&self, _: &str) {}
}

fn run(catalog: &Catalog, name: &str, alert_count: u32, approve: bool) -> Vec<String> {
    let rb = catalog.get(name).unwrap().clone();
    let host = Arc::new(Recording {
        approve,
        ..Default::default()
    });
    let outcome = execute(Execution {
        params: rb.params(None).unwrap(),
        runbook: rb,
        run_id: "run".into(),
        incident: json!({
            "id": "i", "title": "t", "category": name, "severity": 2, "priority": 2,
            "state": "open", "alert_count": alert_count, "source": "test",
            "labels": { "service": "api", "host": "h1", "user": "bob", "source_ip": "203.0.113.9",
                        "bucket": "b", "sender": "x@example.com" },
        }),
        journal: Vec::new(),
        host: host.clone(),
        limits: Limits::default(),
    });
    assert_eq!(
        outcome,
        Outcome::Succeeded {
            steps: host.steps.lock().unwrap().len() as u32
        },
        "{name}"
    );
    host.steps
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.action.clone())
        .collect()
}

#[test]
fn every_category_has_a_runbook_that_succeeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let catalog = Catalog::load(&dir, &Limits::default()).unwrap();
    let categories = [
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
    for category in categories {
        let labels = Default::default();
        let matching = catalog.matching(category, 2, &labels);
        assert!(!matching.is_empty(), "no runbook for {category}");
        let actions = run(&catalog, &matching[0].manifest.name, 1, true);
        assert!(
            actions.iter().any(|a| a == "incident.note"),
            "{category}: {actions:?}"
        );
        assert!(
            actions.iter().any(|a| a == "notify.send"),
            "{category}: {actions:?}"
        );
        if category != "uncategorized" {
            assert_eq!(
                actions[0].split('.').next(),
                Some("http"),
                "{category} contains first: {actions:?}"
            );
        }
    }
}

#[test]
fn service_outage_escalates_repeated_alerts_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let catalog = Catalog::load(&dir, &Limits::default()).unwrap();
    assert!(
        !run(&catalog, "service-outage", 1, true).contains(&"incident.set_severity".to_owned())
    );
    assert!(run(&catalog, "service-outage", 3, true).contains(&"incident.set_severity".to_owned()));
}

#[test]
fn data_breach_rotates_keys_only_when_approved() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let catalog = Catalog::load(&dir, &Limits::default()).unwrap();
    let approved = run(&catalog, "data-breach", 1, true);
    let rejected = run(&catalog, "data-breach", 1, false);
    assert!(approved.contains(&"approval.request".to_owned()));
    assert_eq!(
        approved.iter().filter(|a| a.starts_with("http.")).count(),
        3
    );
    assert_eq!(
        rejected.iter().filter(|a| a.starts_with("http.")).count(),
        2
    );
}
