//! The runbook manifest (`NAME.yaml`): what it matches, its parameters, limits and capabilities.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A runbook's manifest. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name; must equal the file stem.
    pub name: String,
    /// What the runbook does, for people.
    #[serde(default)]
    pub description: String,
    /// Which incidents it runs for.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Parameters the script receives as `params`, with their defaults.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Wall-clock limit of one execution of the script, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// The actions the script may call: a module (`http`) or one action (`http.post`).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Which incidents a runbook runs for: all conditions must hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Categories it handles; empty means any.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Severity levels it handles (1 is the most severe).
    #[serde(default)]
    pub severity: SeverityRange,
    /// Labels the incident must carry with exactly these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Severity levels `min..=max`, 1 (critical) to 5.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeverityRange {
    #[serde(default = "one")]
    pub min: u32,
    #[serde(default = "five")]
    pub max: u32,
}

impl Default for SeverityRange {
    fn default() -> Self {
        Self { min: 1, max: 5 }
    }
}

/// One parameter of a runbook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its value unless configuration overrides it.
    pub default: serde_json::Value,
}

fn default_timeout() -> u32 {
    300
}
fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}

impl Manifest {
    /// True when the runbook runs for an incident with these properties.
    pub fn matches(
        &self,
        category: &str,
        severity: u32,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let m = &self.matches;
        (m.categories.is_empty() || m.categories.iter().any(|c| c == category))
            && (m.severity.min..=m.severity.max).contains(&severity)
            && m.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// True when the manifest grants `action` (e.g. `http.post`).
    pub fn allows(&self, action: &str) -> bool {
        let module = action.split('.').next().unwrap_or(action);
        self.capabilities.iter().any(|c| c == action || c == module)
    }
}
