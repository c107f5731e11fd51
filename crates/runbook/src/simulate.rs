//! Simulation: a host that performs nothing and records what a run would do — the plan of a
//! dry run, the first phase of a plan-approve run, and the engine behind runbook tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::Runbook;
use crate::sandbox::{Execution, Host, Limits, Outcome, Step, StepError, StepOutcome, execute};

/// One step of a plan: an action the script called, its arguments, the simulated result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub seq: u32,
    pub action: String,
    pub args: Value,
    pub result: Value,
    /// True when the result came from a fixture's mock rather than the default.
    #[serde(default)]
    pub mocked: bool,
}

/// A result a test gives an action instead of the default simulated one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mock {
    /// The action it answers (`http.post`).
    pub action: String,
    /// Only calls whose arguments contain these (a JSON subset) use this mock.
    #[serde(default)]
    pub args: Option<Value>,
    /// The result the script gets.
    #[serde(default)]
    pub result: Option<Value>,
    /// Fails the call with this message instead (as an unreachable target would).
    #[serde(default)]
    pub error: Option<String>,
}

/// A host that simulates every action. Each mock answers one call, in order.
pub struct Simulator {
    mocks: Mutex<Vec<Option<Mock>>>,
    approvals: Mutex<VecDeque<bool>>,
    steps: Mutex<Vec<PlannedStep>>,
    log: Mutex<Vec<String>>,
}

/// What a simulated execution did.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub outcome: Outcome,
    pub steps: Vec<PlannedStep>,
    pub log: Vec<String>,
}

impl Simulator {
    /// A simulator answering calls from `mocks` first and approvals from `approvals` (an
    /// approval with no answer left is granted).
    pub fn new(mocks: Vec<Mock>, approvals: Vec<bool>) -> Self {
        Self {
            mocks: Mutex::new(mocks.into_iter().map(Some).collect()),
            approvals: Mutex::new(approvals.into()),
            steps: Mutex::default(),
            log: Mutex::default(),
        }
    }

    fn mock_for(&self, step: &Step) -> Option<Mock> {
        let mut mocks = self.mocks.lock().ok()?;
        let slot = mocks.iter_mut().find(|m| {
            m.as_ref().is_some_and(|m| {
                m.action == step.action && m.args.as_ref().is_none_or(|a| contains(&step.args, a))
            })
        })?;
        slot.take()
    }

    fn default_result(&self, action: &str) -> Value {
        match action.split('.').next().unwrap_or_default() {
            "http" => json!({ "status": 200, "body": null, "simulated": true }),
            "k8s" => json!({ "ok": true, "simulated": true }),
            "exec" => json!({ "status": 0, "stdout": "", "stderr": "", "simulated": true }),
            "approval" => {
                let approved = self
                    .approvals
                    .lock()
                    .ok()
                    .and_then(|mut a| a.pop_front())
                    .unwrap_or(true);
                json!({ "approved": approved, "by": "simulation", "comment": "" })
            }
            _ => json!({}),
        }
    }
}

impl Host for Simulator {
    fn perform(&self, step: &Step) -> Result<StepOutcome, StepError> {
        let mock = self.mock_for(step);
        let mocked = mock.is_some();
        let result = match mock {
            Some(Mock { error: Some(e), .. }) => Err(e),
            Some(Mock {
                result: Some(r), ..
            }) => Ok(r),
            _ => Ok(self.default_result(&step.action)),
        };
        if let Ok(mut steps) = self.steps.lock() {
            steps.push(PlannedStep {
                seq: step.seq,
                action: step.action.clone(),
                args: step.args.clone(),
                result: match &result {
                    Ok(v) => v.clone(),
                    Err(e) => json!({ "error": e }),
                },
                mocked,
            });
        }
        result
            .map(StepOutcome::Done)
            .map_err(|e| StepError::Failed(e.into()))
    }

    fn log(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line.to_owned());
        }
    }
}

/// Runs `runbook` for `incident` with every action simulated. Blocking, like [`execute`].
pub fn simulate(
    runbook: &Runbook,
    incident: Value,
    params: Value,
    simulator: Simulator,
    limits: &Limits,
) -> Simulation {
    let host = Arc::new(simulator);
    let outcome = execute(Execution {
        runbook: runbook.clone(),
        run_id: "dry-run".into(),
        incident,
        params,
        journal: Vec::new(),
        host: host.clone(),
        limits: limits.clone(),
    });
    Simulation {
        outcome,
        steps: take(&host.steps),
        log: take(&host.log),
    }
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// True when `value` contains `subset`: every key of an object subset is in the value with a
/// containing value; other values are equal.
pub fn contains(value: &Value, subset: &Value) -> bool {
    match (value, subset) {
        (Value::Object(v), Value::Object(s)) => s
            .iter()
            .all(|(k, sv)| v.get(k).is_some_and(|vv| contains(vv, sv))),
        _ => value == subset,
    }
}
