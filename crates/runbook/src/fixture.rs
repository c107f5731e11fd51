//! Runbook tests: fixtures beside each runbook (`NAME.test.yaml`), each case an incident,
//! mocked action results and the action sequence it must produce.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::catalog::{Catalog, Runbook};
use crate::sandbox::{Limits, Outcome};
use crate::simulate::{Mock, Simulation, Simulator, contains, simulate};

/// A fixture file: the cases of one runbook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub cases: Vec<Case>,
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Fields of the incident, over a default one in the runbook's first category and most
    /// severe matching level.
    #[serde(default)]
    pub incident: serde_json::Map<String, Value>,
    /// Parameter overrides.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Results of action calls, each used once, in order; unmocked calls get the default
    /// simulated result.
    #[serde(default)]
    pub mocks: Vec<Mock>,
    /// Answers to approval requests in order; unanswered ones are granted.
    #[serde(default)]
    pub approvals: Vec<bool>,
    pub expect: Expect,
}

/// What a case must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `succeeded` (the default) or `failed`.
    #[serde(default = "succeeded")]
    pub outcome: String,
    /// A failed run's error must contain this.
    #[serde(default)]
    pub error: Option<String>,
    /// The exact sequence of actions called.
    pub actions: Vec<ExpectedAction>,
}

/// An expected call: the action alone, or the action with a subset of its arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ExpectedAction {
    Name(String),
    Full {
        action: String,
        #[serde(default)]
        args: Option<Value>,
    },
}

fn succeeded() -> String {
    "succeeded".into()
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub runbook: String,
    pub case: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// The fixture files of a directory, as (runbook name, path).
pub fn fixture_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".test.yaml") {
            out.push((stem.to_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Why a fixture could not be read or a case not run.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file is not a fixture; the error names its line and column.
    #[error("{}:{line}:{col}: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        col: usize,
        source: serde_yaml::Error,
    },
    #[error(transparent)]
    Params(#[from] crate::UnknownParameter),
}

/// Reads a fixture file; errors name the file, line and column.
pub fn read_fixture(path: &Path) -> Result<Fixture, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| {
        let (line, col) = source.location().map_or((0, 0), |l| (l.line(), l.column()));
        FixtureError::Parse {
            path: path.to_owned(),
            line,
            col,
            source,
        }
    })
}

/// The incident a case runs against: defaults, then the case's fields.
pub fn case_incident(runbook: &Runbook, fields: &serde_json::Map<String, Value>) -> Value {
    let m = &runbook.manifest.matches;
    let mut incident = json!({
        "id": "01900000-0000-7000-8000-000000000000",
        "title": format!("test incident for {}", runbook.manifest.name),
        "description": "",
        "category": m.categories.first().cloned().unwrap_or_else(|| "uncategorized".into()),
        "severity": m.severity.min,
        "priority": 1,
        "state": "open",
        "dedup_key": "test",
        "alert_count": 1,
        "labels": {},
        "source": "test",
    });
    if let Some(obj) = incident.as_object_mut() {
        for (k, v) in fields {
            obj.insert(k.clone(), v.clone());
        }
    }
    incident
}

/// Runs one case.
pub fn run_case(
    runbook: &Runbook,
    case: &Case,
    limits: &Limits,
) -> Result<Simulation, FixtureError> {
    let params = runbook.params(Some(&case.params))?;
    let incident = case_incident(runbook, &case.incident);
    let sim = Simulator::new(case.mocks.clone(), case.approvals.clone());
    Ok(simulate(runbook, incident, params, sim, limits))
}

/// Checks a simulation against a case's expectations; the error says what differed.
pub fn check(case: &Case, sim: &Simulation) -> Result<(), String> {
    let e = &case.expect;
    match (&sim.outcome, e.outcome.as_str()) {
        (Outcome::Succeeded { .. }, "succeeded") => {}
        (Outcome::Failed(err), "failed") => {
            if let Some(want) = &e.error
                && !err.contains(want.as_str())
            {
                return Err(format!("the run failed with {err:?}, which lacks {want:?}"));
            }
        }
        (got, want) => return Err(format!("expected the run to be {want}, it was {got:?}")),
    }
    let got: Vec<&str> = sim.steps.iter().map(|s| s.action.as_str()).collect();
    if got.len() != e.actions.len() {
        let want: Vec<&str> = e
            .actions
            .iter()
            .map(|a| match a {
                ExpectedAction::Name(n) | ExpectedAction::Full { action: n, .. } => n.as_str(),
            })
            .collect();
        return Err(format!(
            "expected {} action(s) [{}], the run called {} [{}]",
            want.len(),
            want.join(", "),
            got.len(),
            got.join(", ")
        ));
    }
    for (i, (want, step)) in e.actions.iter().zip(&sim.steps).enumerate() {
        let (action, args) = match want {
            ExpectedAction::Name(n) => (n, None),
            ExpectedAction::Full { action, args } => (action, args.as_ref()),
        };
        if *action != step.action {
            return Err(format!(
                "action {}: expected {action}, the run called {}",
                i + 1,
                step.action
            ));
        }
        if let Some(args) = args
            && !contains(&step.args, args)
        {
            return Err(format!(
                "action {} ({action}): arguments {} do not contain {args}",
                i + 1,
                step.args
            ));
        }
    }
    Ok(())
}

/// Runs every fixture of `dir` against the runbooks of `catalog`. `Err` is a fixture that
/// could not be read or names no runbook.
pub fn run_dir(
    dir: &Path,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Vec<CaseResult>, Vec<String>> {
    let files = fixture_files(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (name, path) in files {
        let Some(runbook) = catalog.get(&name) else {
            errors.push(format!("{}: no runbook named {name:?}", path.display()));
            continue;
        };
        let fixture = match read_fixture(&path) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if fixture.cases.is_empty() {
            errors.push(format!("{}: no cases", path.display()));
        }
        for case in &fixture.cases {
            let failure = run_case(runbook, case, limits)
                .map_err(|e| e.to_string())
                .and_then(|sim| check(case, &sim))
                .err();
            results.push(CaseResult {
                runbook: name.clone(),
                case: case.name.clone(),
                failure,
            });
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}
