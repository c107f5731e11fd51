//! Configuration, layered: defaults → YAML file → environment (`FIREBREAK_`, `__` nests) → flags.
//! Unknown keys are errors everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use firebreak_domain::Taxonomy;
use firebreak_notification::Channel;
use serde::Deserialize;

/// Everything `firebreak up` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite databases live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The gRPC listen address (all services in embedded mode).
    #[serde(default = "default_grpc_addr")]
    pub grpc_addr: SocketAddr,
    /// The HTTP listen address: `/healthz`, `/metrics`.
    #[serde(default = "default_http_addr")]
    pub http_addr: SocketAddr,
    /// The runbook directory.
    #[serde(default = "default_runbooks")]
    pub runbooks_dir: PathBuf,
    /// Let runbooks' side-effecting actions act for real; off means dry runs that record
    /// what they would have done.
    #[serde(default)]
    pub live: bool,
    /// Log lines as JSON instead of text.
    #[serde(default)]
    pub log_json: bool,
    /// fsync every commit (survives power loss, not only process crashes).
    #[serde(default)]
    pub durable_fsync: bool,
    /// The categories and their rules; the default is the ten of the incident process.
    #[serde(default)]
    pub taxonomy: Option<Taxonomy>,
    /// Notification channels besides `log`, which always exists.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Integrations monitoring tools authenticate with (Alertmanager, PagerDuty, gRPC); more
    /// can be created at run time with `firebreak integration create`.
    #[serde(default)]
    pub integrations: Vec<firebreak_intake::Integration>,
    /// Calls intake stores at once; more are answered 429 / RESOURCE_EXHAUSTED at once.
    #[serde(default = "default_max_in_flight")]
    pub intake_max_in_flight: usize,
    /// Escalation policies runbooks can page with `notify::send("POLICY", ..)`: steps of
    /// channels, each later step only if the incident is still unacknowledged.
    #[serde(default)]
    pub escalation_policies: Vec<firebreak_notification::EscalationPolicy>,
    /// Parameter overrides per runbook: `runbook_params: {NAME: {PARAM: VALUE}}`.
    #[serde(default)]
    pub runbook_params: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Who may approve runbook steps, per role: `approvers: {incident-commander: [alice]}`.
    #[serde(default)]
    pub approvers: BTreeMap<String, Vec<String>>,
    /// Commands runbooks may run through `exec::run`, with limits.
    #[serde(default)]
    pub exec: firebreak_orchestration::ExecOptions,
    /// The cluster the `k8s` actions act on (absent: in-cluster or `KUBECONFIG`).
    #[serde(default)]
    pub kubernetes: firebreak_orchestration::KubeOptions,
    /// A directory with one file per secret (a mounted Kubernetes Secret); secrets are also
    /// read from `FIREBREAK_SECRET_<NAME>`.
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// Seconds to finish in-flight work after a shutdown signal.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
}

fn default_data_dir() -> PathBuf {
    "./firebreak-data".into()
}
fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}
fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7401))
}
fn default_runbooks() -> PathBuf {
    "./runbooks".into()
}
fn default_max_in_flight() -> usize {
    firebreak_intake::MAX_IN_FLIGHT
}
fn default_grace() -> u64 {
    10
}

/// Environment variables that belong to the CLI client, not to the server's configuration.
const CLIENT_ENV: &[&str] = &["FIREBREAK_SERVER", "FIREBREAK_OUTPUT", "FIREBREAK_USER"];

impl Default for Config {
    fn default() -> Self {
        Self::layered(serde_yaml::Value::Mapping(Default::default())).expect("defaults are valid")
    }
}

impl Config {
    /// Loads the file (if any) and the environment over the defaults.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut value = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let v: serde_yaml::Value = serde_yaml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?;
                match v {
                    serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
                    v @ serde_yaml::Value::Mapping(_) => v,
                    _ => bail!(
                        "config file {}: the top level must be a map",
                        path.display()
                    ),
                }
            }
            None => serde_yaml::Value::Mapping(Default::default()),
        };
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("FIREBREAK_") else {
                continue;
            };
            // Secret values are read by name when a runbook uses them, never as configuration.
            if CLIENT_ENV.contains(&key.as_str()) || rest.starts_with("SECRET_") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            let parsed: serde_yaml::Value =
                serde_yaml::from_str(&raw).unwrap_or(serde_yaml::Value::String(raw.clone()));
            set_path(&mut value, &path, parsed);
        }
        let config = Self::layered(value).context(match file {
            Some(p) => format!(
                "invalid configuration (file {} and FIREBREAK_ environment)",
                p.display()
            ),
            None => "invalid configuration (FIREBREAK_ environment)".to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn layered(value: serde_yaml::Value) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_value(value)
    }

    /// Checks what serde cannot: the taxonomy's own rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.taxonomy {
            t.validate().context("invalid taxonomy")?;
        }
        if self.channels.iter().any(|c| c.name == "log") {
            bail!("channel \"log\" is built in; name yours differently");
        }
        Ok(())
    }

    /// The taxonomy in force.
    pub fn taxonomy(&self) -> Taxonomy {
        self.taxonomy.clone().unwrap_or_default()
    }
}

fn set_path(value: &mut serde_yaml::Value, path: &[String], leaf: serde_yaml::Value) {
    let Some((head, rest)) = path.split_first() else {
        *value = leaf;
        return;
    };
    if !value.is_mapping() {
        *value = serde_yaml::Value::Mapping(Default::default());
    }
    if let serde_yaml::Value::Mapping(map) = value {
        let key = serde_yaml::Value::String(head.clone());
        let child = map
            .entry(key)
            .or_insert(serde_yaml::Value::Mapping(Default::default()));
        set_path(child, rest, leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_readme_configuration_example_loads() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let section = readme.split("## Configuration").nth(1).unwrap();
        let yaml = section
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("readme.yaml");
        std::fs::write(&file, yaml).unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.escalation_policies[0].name, "sre-oncall");
        assert_eq!(c.approvers["incident-commander"], ["alice", "bob"]);
        assert_eq!(c.exec.allow, ["/usr/local/bin/flush-cdn"]);
        assert!(c.kubernetes.url.is_some());
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.grpc_addr.port(), 7400);
        assert_eq!(c.http_addr.port(), 7401);
        assert!(!c.live);
        assert_eq!(c.taxonomy().names().count(), 10);
    }

    #[test]
    fn environment_overrides_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "live: false\ngrpc_addr: 127.0.0.1:9000\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("FIREBREAK_LIVE", "true"),
                ("FIREBREAK_SERVER", "http://x"),
                ("OTHER", "1"),
            ]),
        )
        .unwrap();
        assert!(c.live);
        assert_eq!(c.grpc_addr.port(), 9000);

        std::fs::write(&file, "liev: true\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(err.contains("unknown field `liev`"), "{err}");
        let err = format!(
            "{:#}",
            Config::load(None, env(&[("FIREBREAK_NOPE", "1")])).unwrap_err()
        );
        assert!(err.contains("unknown field `nope`"), "{err}");
    }

    #[test]
    fn channels_and_taxonomy_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        std::fs::write(
            &file,
            "channels:\n  - name: ops\n    kind: webhook\n    url: ftp://x\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.channels.len(), 1);
        std::fs::write(&file, "taxonomy:\n  categories:\n    - name: only-one\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(err.contains("uncategorized"), "{err}");
    }
}
