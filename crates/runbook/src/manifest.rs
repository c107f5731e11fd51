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
    /// Secrets the script may use through `secret("NAME")`, each with the hosts live
    /// requests carrying it may go to.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// `auto` runs at once; `plan-approve` first records a plan (every action simulated)
    /// that a person approves before the run applies it.
    #[serde(default)]
    pub mode: Mode,
    /// Which actions need a person's approval, who may give it, and what a timeout means.
    #[serde(default)]
    pub approval: Approval,
    /// Retry policy per action (`http.post`) or module (`http`).
    #[serde(default)]
    pub retry: BTreeMap<String, Retry>,
    /// How many runs of this runbook may execute at once.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Caps on what one run may do.
    #[serde(default)]
    pub limits: RunLimits,
}

/// Caps on the effects of one run, counted by the sandbox (replayed steps included).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunLimits {
    /// Steps (actions, approvals and sleeps) a run may take: 1 to 10,000.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Pages (`incident::escalate`) a run may send: 0 to 100.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Notifications (`notify::send`) a run may send: 0 to 1,000.
    #[serde(default = "default_max_notifications")]
    pub max_notifications: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_steps: default_max_steps(),
            max_pages: default_max_pages(),
            max_notifications: default_max_notifications(),
        }
    }
}

impl RunLimits {
    /// The largest value each cap may be set to.
    pub const MAX: Self = Self {
        max_steps: 10_000,
        max_pages: 100,
        max_notifications: 1_000,
    };
}

fn default_max_steps() -> u32 {
    200
}
fn default_max_pages() -> u32 {
    5
}
fn default_max_notifications() -> u32 {
    20
}

/// A secret a runbook declares: `{name: NAME, hosts: [HOST, ...]}`. A live request carrying
/// it goes only to these hosts (`host` or `host:port`); the plain `NAME` form still loads,
/// with no hosts, so the secret can be used in dry runs and fixtures but sent nowhere.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "SecretForm")]
pub struct Secret {
    pub name: String,
    /// Lower case.
    pub hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a secret name, or {name: NAME, hosts: [HOST, ...]}"
)]
enum SecretForm {
    Name(String),
    Full(SecretFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFull {
    name: String,
    #[serde(default)]
    hosts: Vec<String>,
}

/// Hosts one secret may name.
const MAX_SECRET_HOSTS: usize = 32;

impl TryFrom<SecretForm> for Secret {
    type Error = String;

    fn try_from(form: SecretForm) -> Result<Self, String> {
        let (name, hosts) = match form {
            SecretForm::Name(name) => (name, Vec::new()),
            SecretForm::Full(f) => (f.name, f.hosts),
        };
        if hosts.len() > MAX_SECRET_HOSTS {
            return Err(format!(
                "secret {name:?}: hosts lists at most {MAX_SECRET_HOSTS} hosts"
            ));
        }
        let hosts = hosts
            .into_iter()
            .map(|h| {
                let valid = (1..=260).contains(&h.len())
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
                if valid {
                    Ok(h.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "secret {name:?}: host {h:?} must be a host name or address, with an optional :port"
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { name, hosts })
    }
}

/// How a run starts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Auto,
    PlanApprove,
}

/// Approvals of a runbook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Actions (`k8s.scale`) or modules (`k8s`) that wait for a person before each call.
    #[serde(default)]
    pub actions: Vec<String>,
    /// The role whose members may approve; empty means anyone may.
    #[serde(default)]
    pub role: String,
    /// How long a request waits for a decision.
    #[serde(default = "default_approval_timeout")]
    pub timeout_seconds: u64,
    /// What a request that timed out becomes.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

impl Default for Approval {
    fn default() -> Self {
        Self {
            actions: Vec::new(),
            role: String::new(),
            timeout_seconds: default_approval_timeout(),
            on_timeout: OnTimeout::Reject,
        }
    }
}

/// The fallback of an approval nobody answered in time.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

/// How often an action is tried when it fails (transport error, HTTP 5xx or 429).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, first included: 1 to 10.
    pub attempts: u32,
    /// The wait before the second try; it doubles for each try after.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

/// Concurrency of a runbook. A runbook runs at most once per incident, always (the database
/// enforces it); `max_running` caps its runs executing at once across incidents.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// 0 means no cap beyond the orchestrator's own.
    #[serde(default)]
    pub max_running: u32,
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
fn default_approval_timeout() -> u64 {
    24 * 3600
}
fn default_backoff() -> u64 {
    500
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
        covers(&self.capabilities, action)
    }

    /// True when each call of `action` waits for a person's approval.
    pub fn needs_approval(&self, action: &str) -> bool {
        covers(&self.approval.actions, action)
    }

    /// The retry policy of `action`: its own, else its module's, else one try.
    pub fn retry(&self, action: &str) -> Retry {
        let module = action.split('.').next().unwrap_or(action);
        self.retry
            .get(action)
            .or_else(|| self.retry.get(module))
            .copied()
            .unwrap_or(Retry {
                attempts: 1,
                backoff_ms: default_backoff(),
            })
    }
}

/// True when a list of actions and modules names `action`.
pub(crate) fn covers(list: &[String], action: &str) -> bool {
    let module = action.split('.').next().unwrap_or(action);
    list.iter().any(|c| c == action || c == module)
}
