//! Configuration, layered: defaults → YAML file → environment (`FIREBREAK_`, `__` nests) → flags.
//! Unknown keys are errors everywhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use firebreak_domain::Taxonomy;
use firebreak_notification::Channel;
use serde::Deserialize;

mod origin;
// The reference and the schema walk that holds it to the types: docs and tests only.
#[cfg(test)]
mod reference;
mod secret_files;
#[cfg(test)]
mod walk;

pub use origin::ConfigError;
use origin::{KeyPath, Seg, Sources};

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
    /// A runbook directory. Without one, the runbooks shipped in the binary run; with one,
    /// its runbooks replace them (see `runbooks_builtin`).
    #[serde(default)]
    pub runbooks_dir: Option<PathBuf>,
    /// Keep the built-in runbooks beside `runbooks_dir`'s, which then replace built-ins of
    /// the same name and add the rest. Default: true without `runbooks_dir`, false with one.
    #[serde(default)]
    pub runbooks_builtin: Option<bool>,
    /// Let runbooks' side-effecting actions act for real; off means dry runs that record
    /// what they would have done.
    #[serde(default)]
    pub live: bool,
    /// Log lines as JSON instead of text.
    #[serde(default)]
    pub log_json: bool,
    /// OpenTelemetry export of traces (`otel:`); the standard `OTEL_*` variables fill what
    /// is unset, and nothing is exported without an endpoint.
    #[serde(default)]
    pub otel: OtelSection,
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
    /// Alerts per second keyless gRPC callers may raise together (a burst of one second's
    /// worth); 0 means no limit. Integrations have their own `rate_limit_per_second`.
    #[serde(default = "default_anonymous_rate")]
    pub intake_anonymous_rate_limit_per_second: u32,
    /// Alerts one call (a gRPC batch, an Alertmanager group) may hold; larger calls are
    /// refused (400 / 413) rather than holding intake's writer.
    #[serde(default = "default_max_alerts_per_call")]
    pub intake_max_alerts_per_call: usize,
    /// Escalation policies runbooks can page with `notify::send("POLICY", ..)`: steps of
    /// channels, each later step only if the incident is still unacknowledged.
    #[serde(default)]
    pub escalation_policies: Vec<firebreak_notification::EscalationPolicy>,
    /// On-call schedules: layers of rotations, restrictions and overrides (docs/schedules.md).
    #[serde(default)]
    pub schedules: Vec<firebreak_domain::schedule::ScheduleSpec>,
    /// Which escalation policy pages when an incident opens: the first route that matches.
    #[serde(default)]
    pub routes: Vec<firebreak_notification::routing::Route>,
    /// Who receives the status updates of which incidents, besides each incident's own
    /// subscribers: rules of a `match` (as a route's), `services`, and the `people` and
    /// `channels` they send to (docs/status-updates.md).
    #[serde(default)]
    pub subscriptions: Vec<firebreak_notification::subscriptions::SubscriptionRule>,
    /// Reminders to post status updates: `reminders` of `{max_severity, after_seconds}`,
    /// the commander of an active incident that severe reminded when it went that long
    /// without one (default: SEV1 after 30 minutes, SEV2 after an hour; `[]`: none).
    #[serde(default)]
    pub status_updates: firebreak_notification::StatusUpdatesSpec,
    /// Where people answer pages from: the public URL links in pages start with, and the
    /// key that signs them (docs/oncall.md, "Acknowledging from a page").
    #[serde(default)]
    pub responses: Option<firebreak_notification::ResponsesSpec>,
    /// Maintenance windows: recurring local hours (an RRULE in a time zone) during which
    /// incidents of some services, integrations or labels are recorded but page nobody;
    /// paging starts when the window ends (docs/maintenance.md).
    #[serde(default)]
    pub maintenance: Vec<firebreak_domain::maintenance::WindowSpec>,
    /// How many pages one destination (a number, an address) may receive in a window, per
    /// contact kind: `throttles: {sms: [{count: 1, per_seconds: 60}]}`. A kind left out
    /// keeps GoAlert's limits (SMS and voice 1 a minute and more over longer windows, email
    /// 1 a minute, chat and webhooks none); `[]` turns a kind's throttle off.
    #[serde(default)]
    pub throttles: firebreak_notification::throttle::Throttles,
    /// How long resolved incidents can reopen: by hand within `window_seconds` (an hour),
    /// and by a repeat alert within `repeat_alerts_seconds` (0, the default: a repeat after
    /// a resolve opens a new incident) or its integration's own window under `integrations`.
    #[serde(default)]
    pub reopen: ReopenConfig,
    /// Which incidents need an incident commander (`required_through_severity`: 2, SEV1–2,
    /// by default; 0 for none), flagged `needs_commander` while nobody holds the role, and
    /// the schedule whose on-call person becomes commander when one is needed.
    #[serde(default)]
    pub commander: CommanderConfig,
    /// Time-window grouping, Alertmanager-style: `rules`, the first that applies to an
    /// alert naming its group (its `group_by` labels' values); an alert whose dedup key has
    /// no active incident joins its group's incident opened less than the rule's `window`
    /// ago (docs/grouping.md). None by default: nothing is grouped.
    #[serde(default)]
    pub grouping: GroupingConfig,
    /// The post-incident review: `template`, the sections people write after the facts
    /// (each a `heading` and a `prompt`); the default is Root cause, What went well, What
    /// went wrong. A section headed `Root cause` shows the recorded root cause.
    #[serde(default)]
    pub review: ReviewConfig,
    /// People and service accounts declared here (GitOps): written into the directory at
    /// start-up, not deletable or changeable at run time.
    #[serde(default)]
    pub users: Vec<firebreak_notification::declared::DeclaredUser>,
    /// Teams declared here, with members (directory users).
    #[serde(default)]
    pub teams: Vec<firebreak_notification::declared::DeclaredTeam>,
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
    /// Distributed mode (`firebreak serve`): the service's Postgres database. `{service}` is
    /// replaced by the service's name, so one file can describe all four.
    #[serde(default)]
    pub database_url: Option<SecretText>,
    /// Distributed mode: the NATS JetStream server the services' events travel through.
    #[serde(default)]
    pub nats: Option<NatsConfig>,
    /// Distributed mode: where the services this one calls listen (intake calls triage).
    #[serde(default)]
    pub peers: Peers,
    /// Distributed mode: seconds a replica's lease on a run lasts unrenewed, so how soon
    /// another replica takes over the runs of one that died.
    #[serde(default = "default_lease")]
    pub run_lease_seconds: u64,
    /// Distributed mode: connections each process keeps to its database at most.
    #[serde(default = "default_db_connections")]
    pub database_max_connections: u32,
    /// Limits on the connections both servers (gRPC and HTTP) accept.
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// Authentication: the service credential and how often the credential copy syncs.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS for both servers and for the connections to peers.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The key the secrets Firebreak stores are encrypted with (run-time integrations'
    /// signing secrets).
    #[serde(default)]
    pub secrets_encryption: SecretsEncryption,
    /// `FIREBREAK_*` environment variables that name no configuration key (Kubernetes
    /// service links such as `FIREBREAK_INTAKE_SERVICE_HOST`), ignored; logged once tracing
    /// is up.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    /// Secrets read from files that `X_file` keys of `{secret: NAME}` fields name (a
    /// channel's `token_file`), by the name the field now gives (`channels.0.token_file`).
    #[serde(skip)]
    pub file_secrets: BTreeMap<String, SecretText>,
}

/// OpenTelemetry export (`otel:`): docs/observability.md.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSection {
    /// The OTLP/gRPC collector, `http://collector:4317` (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// `grpc`, the only protocol spoken (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: Option<String>,
    /// The share of new traces exported, 0.0–1.0 (default 1.0; `OTEL_TRACES_SAMPLER_ARG`).
    pub sample_ratio: Option<f64>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`), e.g. `deployment.environment`.
    pub resource_attributes: BTreeMap<String, String>,
}

impl From<&OtelSection> for firebreak_telemetry::OtelConfig {
    fn from(s: &OtelSection) -> Self {
        Self {
            endpoint: s.endpoint.clone(),
            protocol: s.protocol.clone(),
            sample_ratio: s.sample_ratio,
            resource_attributes: s.resource_attributes.clone(),
        }
    }
}

/// The post-incident review (`review:`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// The sections people write, in order: 1 to 20, distinct one-line headings of at most
    /// 128 bytes, prompts of at most 1 KiB.
    pub template: Vec<firebreak_domain::ReviewSection>,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            template: firebreak_domain::default_review_template(),
        }
    }
}

/// The reopen windows (`reopen:`), in seconds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReopenConfig {
    pub window_seconds: u64,
    pub repeat_alerts_seconds: u64,
    /// A repeat alert's window per integration (by name), overriding `repeat_alerts_seconds`.
    pub integrations: BTreeMap<String, u64>,
}

impl Default for ReopenConfig {
    fn default() -> Self {
        Self {
            window_seconds: 3600,
            repeat_alerts_seconds: 0,
            integrations: BTreeMap::new(),
        }
    }
}

/// Who commands incidents (`commander:`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CommanderConfig {
    /// Incidents of this severity or worse need a commander (1: SEV1 only; 0: none).
    pub required_through_severity: u32,
    /// A schedule whose on-call person (the first when several are) is made commander of an
    /// incident that needs one and has none, when it opens, reopens, or becomes severe enough.
    pub schedule: Option<String>,
}

impl Default for CommanderConfig {
    fn default() -> Self {
        Self {
            required_through_severity: 2,
            schedule: None,
        }
    }
}

impl CommanderConfig {
    /// Checks the severity is 0–5 and the schedule a name, naming the field.
    fn check(&self) -> anyhow::Result<()> {
        if self.required_through_severity > 5 {
            bail!(
                "commander.required_through_severity: 0 (none) to 5, not {}",
                self.required_through_severity
            );
        }
        if let Some(name) = &self.schedule {
            firebreak_domain::access::parse_name("commander.schedule", name)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    }
}

/// The longest reopen window: 30 days.
const MAX_REOPEN_SECONDS: u64 = 30 * 24 * 3600;

impl ReopenConfig {
    /// Checks each window is at most 30 days, naming the field.
    fn check(&self) -> anyhow::Result<()> {
        let windows = [
            ("reopen.window_seconds".to_owned(), self.window_seconds),
            (
                "reopen.repeat_alerts_seconds".to_owned(),
                self.repeat_alerts_seconds,
            ),
        ]
        .into_iter()
        .chain(
            self.integrations
                .iter()
                .map(|(name, s)| (format!("reopen.integrations.{name}"), *s)),
        );
        for (field, seconds) in windows {
            if seconds > MAX_REOPEN_SECONDS {
                bail!("{field}: at most {MAX_REOPEN_SECONDS} seconds (30 days), not {seconds}");
            }
        }
        if self.integrations.len() > 1000 {
            bail!("reopen.integrations: at most 1000 integrations");
        }
        Ok(())
    }

    /// Triage's policy (with the default commander requirement; [`Config::lifecycle`] has
    /// the configured one).
    pub fn lifecycle(&self) -> firebreak_triage::Lifecycle {
        use std::time::Duration;
        firebreak_triage::Lifecycle {
            commander_through: CommanderConfig::default().required_through_severity,
            reopen_window: Duration::from_secs(self.window_seconds),
            repeat_window: Duration::from_secs(self.repeat_alerts_seconds),
            repeat_windows: self
                .integrations
                .iter()
                .map(|(name, s)| (name.clone(), Duration::from_secs(*s)))
                .collect(),
        }
    }
}

/// The grouping rules (`grouping:`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupingConfig {
    /// In order; the first rule that applies to an alert groups it. Each has a `name`, an
    /// optional `integration` and `matchers` (amtool syntax) choosing its alerts, the
    /// `group_by` labels and a `window` (`30s`, `5m`, `2h`; 1 second to 24 hours).
    pub rules: Vec<firebreak_domain::grouping::GroupRuleSpec>,
}

impl GroupingConfig {
    /// Triage's rules, checked; an error names the field (`grouping.rules[0].window`).
    pub fn grouping(&self) -> anyhow::Result<firebreak_domain::grouping::Grouping> {
        firebreak_domain::grouping::Grouping::compile(&self.rules)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))
    }
}

/// Limits on the connections each server accepts, so a flood of connections or streams
/// cannot take the process's memory or file descriptors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// gRPC connections open at once; at the cap the oldest idle one is closed for a new one,
    /// or the new one waits when none is idle.
    pub grpc_max_connections: usize,
    /// HTTP connections open at once (health, metrics, webhooks), with the same rule; a
    /// cap of its own, so a gRPC flood never keeps a health probe out.
    pub http_max_connections: usize,
    /// Streams (calls) one HTTP/2 connection may have open at once, advertised to clients
    /// as SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// Seconds a new connection has to send its first complete request (HTTP headers, a
    /// gRPC call's headers); a slow sender is closed after this.
    pub header_timeout_seconds: u64,
    /// Seconds a connection with no call in flight stays open.
    pub idle_timeout_seconds: u64,
    /// Seconds a request (headers and body) may take until its answer starts; 0: no limit.
    pub request_timeout_seconds: u64,
    /// Seconds between HTTP/2 keep-alive pings on a connection that is quiet, and TCP
    /// keep-alive probes; 0: none.
    pub keepalive_interval_seconds: u64,
    /// Seconds a keep-alive ping may go unanswered before the connection is closed.
    pub keepalive_timeout_seconds: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            grpc_max_connections: 4096,
            http_max_connections: 512,
            max_concurrent_streams: 200,
            header_timeout_seconds: 10,
            idle_timeout_seconds: 300,
            request_timeout_seconds: 60,
            keepalive_interval_seconds: 60,
            keepalive_timeout_seconds: 20,
        }
    }
}

/// How calls are authenticated (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The credential Firebreak's services call each other with (a token as `firebreak
    /// token generate` prints one). Distributed mode needs the same one in every service;
    /// embedded mode makes one at each start when none is set.
    pub service_token: Option<SecretText>,
    /// A break-glass admin credential every service verifies from its configuration alone
    /// (as `user:admin`, admin everywhere): how a distributed deployment's first tokens are
    /// made. Take it out once people have tokens of their own.
    pub admin_token: Option<SecretText>,
    /// Milliseconds between syncs of each process's credential copy: the longest a
    /// revoked token keeps working on another replica.
    pub sync_interval_ms: u64,
    /// Failed authentications from one address in a minute after which each further failure
    /// from it is answered a second late (valid tokens from it are not); 0: never.
    pub failures_per_minute: u32,
    /// How late, in milliseconds, each further failure of such an address is answered.
    pub failure_delay_ms: u64,
    /// Days the audit log keeps an entry; 0 keeps entries for ever. Notification (the
    /// embedded process, or the notification service) deletes older ones every hour.
    pub audit_retention_days: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            service_token: None,
            admin_token: None,
            sync_interval_ms: 1000,
            failures_per_minute: 10,
            failure_delay_ms: 1000,
            audit_retention_days: 365,
        }
    }
}

/// TLS (docs/security.md). With `cert_file` and `key_file` both servers speak TLS only;
/// the files are read again when they change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The servers' certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// The CA that `https://` peers' certificates are checked against; the system roots
    /// when unset. Embedded mode reaches its own server with it too.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key presented to peers that require client certificates.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Embedded mode: the name its own certificate is checked against when intake calls
    /// this process's server (default `localhost`).
    pub server_name: Option<String>,
}

/// The key stored secrets are sealed with (AES-256-GCM): 32 bytes written as 64 hex digits,
/// in `key_file` or in `key` (`FIREBREAK_SECRETS_KEY`). Without one, run-time integrations
/// cannot have signing secrets (declared ones can); embedded mode makes `secrets.key` in its
/// data directory at its first start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsEncryption {
    /// A file holding the key (64 hex digits), readable by Firebreak only; read when a
    /// service starts.
    pub key_file: Option<PathBuf>,
    /// The key itself, usually from the `FIREBREAK_SECRETS_KEY` environment variable.
    /// Setting both `key` and `key_file` in one place is an error; the environment's
    /// replaces the file's.
    pub key: Option<SecretText>,
    /// Files of keys used before: secrets sealed under them are still read, and sealed
    /// again under the current key when a service starts. Drop one once every service
    /// started with its successor.
    pub previous_key_files: Vec<PathBuf>,
}

/// Configuration text that is a secret: never shown by `Debug` (a logged configuration).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The NATS JetStream connection of distributed mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222`.
    pub url: String,
    /// Seconds before a message handed to a replica that did not acknowledge it goes to
    /// another (a replica that died).
    #[serde(default = "default_ack_wait")]
    pub ack_wait_seconds: u64,
    /// Credentials, at most one kind: `user` and `password`, `token`, `nkey_seed`, or
    /// `credentials_file` (a `.creds` file: JWT and seed).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<SecretText>,
    #[serde(default)]
    pub token: Option<SecretText>,
    #[serde(default)]
    pub nkey_seed: Option<SecretText>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// TLS: required (also with a `tls://` URL), the CA to check the server against, and a
    /// client certificate where the server requires one.
    #[serde(default)]
    pub require_tls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl NatsConfig {
    /// Checks what the connection would refuse later: one kind of credentials at most, a
    /// password with its user, a client certificate with its key.
    fn check(&self) -> anyhow::Result<()> {
        let kinds: Vec<&str> = [
            (self.user.is_some(), "user"),
            (self.token.is_some(), "token"),
            (self.nkey_seed.is_some(), "nkey_seed"),
            (self.credentials_file.is_some(), "credentials_file"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if kinds.len() > 1 {
            bail!(
                "nats.{}: give one kind of credentials (user and password, token, nkey_seed or credentials_file), not {}",
                kinds[1],
                kinds.join(" and ")
            );
        }
        if self.password.is_some() && self.user.is_none() {
            bail!("nats.password: needs nats.user");
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            bail!("nats.client_cert_file: goes with nats.client_key_file; set both or neither");
        }
        if let Some(seed) = &self.nkey_seed
            && !(seed.0.starts_with("SU") && seed.0.len() == 58)
        {
            bail!(
                "nats.nkey_seed: not a user NKey seed (58 characters starting SU; `nk -gen user`)"
            );
        }
        Ok(())
    }

    /// The credentials and TLS the bus connects with.
    pub fn auth(&self) -> firebreak_bus::NatsAuth {
        let secret = |s: &Option<SecretText>| s.as_ref().map(|s| s.0.clone());
        firebreak_bus::NatsAuth {
            user: self.user.clone(),
            password: secret(&self.password),
            token: secret(&self.token),
            nkey_seed: secret(&self.nkey_seed),
            credentials_file: self.credentials_file.clone(),
            require_tls: self.require_tls || self.url.starts_with("tls://"),
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
        }
    }
}

/// The gRPC addresses of the four services (`http://host:port`): in a server's
/// configuration, the ones it calls; for the CLI (`--client-config`), where each is.
///
/// A server reaches a peer at every address given (a list, or one string with commas) and
/// at every address each host name resolves to, re-resolved as replicas come and go, and
/// spreads its calls over them: name a headless Service to reach every replica.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    #[serde(default, deserialize_with = "addresses")]
    pub intake: Option<String>,
    #[serde(default, deserialize_with = "addresses")]
    pub triage: Option<String>,
    pub orchestration: Option<String>,
    pub notification: Option<String>,
}

/// One address, or a list of them kept as one comma-separated string (the form the
/// environment can give too).
fn addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s),
        Some(OneOrMany::Many(list)) => Some(list.join(",")),
    })
}

/// The addresses in a peer's entry: split at commas, trimmed, empty ones dropped.
pub fn split_addresses(entry: &str) -> Vec<String> {
    entry
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Peers {
    /// Reads a client configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client config {}", path.display()))?;
        serde_yaml::from_str(&text)
            .with_context(|| format!("invalid client config {}", path.display()))
    }
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
fn default_max_in_flight() -> usize {
    firebreak_intake::MAX_IN_FLIGHT
}
fn default_anonymous_rate() -> u32 {
    10_000
}
fn default_max_alerts_per_call() -> usize {
    firebreak_intake::MAX_ALERTS_PER_CALL
}
fn default_grace() -> u64 {
    10
}
fn default_db_connections() -> u32 {
    10
}
fn default_lease() -> u64 {
    30
}
fn default_ack_wait() -> u64 {
    30
}

/// Environment variables that belong to the CLI client, not to the server's configuration.
const CLIENT_ENV: &[&str] = &[
    "FIREBREAK_SERVER",
    "FIREBREAK_OUTPUT",
    "FIREBREAK_USER",
    "FIREBREAK_TOKEN",
    "FIREBREAK_CLIENT_CONFIG",
    "FIREBREAK_CONNECT_TIMEOUT",
    "FIREBREAK_REQUEST_TIMEOUT",
];

/// The top-level configuration keys, which the environment may set (`FIREBREAK_KEY`,
/// `FIREBREAK_KEY__NESTED`); a test keeps it equal to `Config`'s fields.
const KEYS: &[&str] = &[
    "data_dir",
    "grpc_addr",
    "http_addr",
    "runbooks_dir",
    "runbooks_builtin",
    "live",
    "log_json",
    "otel",
    "durable_fsync",
    "taxonomy",
    "channels",
    "integrations",
    "intake_max_in_flight",
    "intake_anonymous_rate_limit_per_second",
    "intake_max_alerts_per_call",
    "escalation_policies",
    "schedules",
    "routes",
    "subscriptions",
    "status_updates",
    "responses",
    "maintenance",
    "throttles",
    "reopen",
    "commander",
    "grouping",
    "review",
    "users",
    "teams",
    "runbook_params",
    "approvers",
    "exec",
    "kubernetes",
    "secrets_dir",
    "shutdown_grace_seconds",
    "database_url",
    "nats",
    "peers",
    "run_lease_seconds",
    "database_max_connections",
    "connections",
    "auth",
    "tls",
    "secrets_encryption",
];

/// The environment variable holding the secrets key, short for
/// `FIREBREAK_SECRETS_ENCRYPTION__KEY`.
const SECRETS_KEY_ENV: &str = "FIREBREAK_SECRETS_KEY";

impl Default for Config {
    fn default() -> Self {
        Self::layered(serde_yaml::Value::Mapping(Default::default())).expect("defaults are valid")
    }
}

impl Config {
    /// Loads the file (if any) and the environment over the defaults. An error names the key
    /// path at fault and where its value came from: the file's line, or the environment
    /// variable ([`ConfigError`]).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let text = file.map(read_file).transpose()?;
        let mut sources = Sources::new(file.zip(text.as_deref()));
        let mut value = match (file, &text) {
            (Some(path), Some(text)) => parse_file(path, text)?,
            _ => serde_yaml::Value::Mapping(Default::default()),
        };
        let mut ignored = Vec::new();
        // What each variable set, to refuse a secret's two forms both set by the environment
        // (the order of variables is no order).
        let mut set_by: BTreeMap<Vec<String>, String> = BTreeMap::new();
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("FIREBREAK_") else {
                continue;
            };
            // Secret values are read by name when a runbook uses them, never as configuration.
            if CLIENT_ENV.contains(&key.as_str()) || rest.starts_with("SECRET_") {
                continue;
            }
            let (path, parsed) = if key == SECRETS_KEY_ENV {
                // Kept as text: hex digits may read as a YAML number.
                let path = vec!["secrets_encryption".to_owned(), "key".to_owned()];
                (path, serde_yaml::Value::String(raw))
            } else {
                let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
                // Kubernetes gives every pod service-link variables for every Service
                // (`FIREBREAK_INTAKE_SERVICE_HOST`, `FIREBREAK_INTAKE_PORT_7400_TCP_ADDR`,
                // ...); a variable naming no top-level key is not meant for us. Files stay
                // strict. `FIREBREAK_DATABASE_URL_FILE` names a top-level key too: the file
                // form of one.
                if !KEYS.contains(&path[0].as_str()) && secret_files::other_form(&path).is_none() {
                    ignored.push(key);
                    continue;
                }
                let parsed = serde_yaml::from_str(&raw).unwrap_or(serde_yaml::Value::String(raw));
                (path, parsed)
            };
            set_path(&mut value, &path, parsed);
            // The environment's secret replaces the file's, whichever form each has.
            if let Some(other) = secret_files::other_form(&path) {
                if let Some(other_var) = set_by.get(&other) {
                    let (a, b) = if other_var < &key {
                        (other_var, &key)
                    } else {
                        (&key, other_var)
                    };
                    return Err(ConfigError {
                        path: KeyPath::keys(&path).to_string(),
                        message: format!(
                            "{a} and {b} are both set: give the secret or the file holding it, not both"
                        ),
                        origin: None,
                    }
                    .into());
                }
                remove_path(&mut value, &other);
            }
            sources.set_by_env(KeyPath::keys(&path), &key);
            set_by.insert(path, key);
        }
        let file_secrets = secret_files::resolve(&mut value, &mut sources)?;
        check_channels(&value, &sources)?;
        let config: Self =
            serde_path_to_error::deserialize(value).map_err(|e| serde_error(&e, &sources))?;
        ignored.sort();
        let config = Self {
            ignored_env: ignored,
            file_secrets,
            ..config
        };
        config
            .validate()
            .map_err(|e| sources.annotate(&format!("{e:#}"), KEYS))?;
        Ok(config)
    }

    fn layered(value: serde_yaml::Value) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_value(value)
    }

    /// Checks what serde cannot (the taxonomy's rules, channels' URLs and templates, names,
    /// bounds); each error's text starts with, or names, the key path at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.taxonomy {
            // The domain's error says "invalid taxonomy: …" itself.
            t.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        firebreak_notification::declared::validate(&self.users, &self.teams)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        firebreak_notification::schedules::Schedules::new(&self.schedules)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            if c.name == "log" {
                bail!("channels[{i}].name: channel \"log\" is built in; name yours differently");
            }
            if !names.insert(c.name.as_str()) {
                bail!("channels[{i}].name: channel {:?} is defined twice", c.name);
            }
            let fault = |e: firebreak_notification::ChannelError| {
                let (path, message) = channel_fault(i, &e);
                anyhow::anyhow!("{path}: {message}")
            };
            c.check().map_err(fault)?;
            // Secrets read from `X_file` keys are known now: a URL among them is checked here
            // when they are all the channel has (the rest come from secrets_dir at start).
            let names = c.secret_names();
            if !names.is_empty() && names.iter().all(|(_, n)| self.file_secrets.contains_key(n)) {
                c.clone()
                    .with_secrets(&|n| self.file_secret(n))
                    .map_err(fault)?;
            }
        }
        self.throttles
            .check()
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        self.reopen.check()?;
        self.commander.check()?;
        self.grouping.grouping()?;
        firebreak_domain::check_review_template(&self.review.template)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        firebreak_domain::maintenance::check_all(&self.maintenance)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        if let Some(nats) = &self.nats {
            nats.check()?;
        }
        if let Some(key) = &self.secrets_encryption.key {
            firebreak_intake::Keyring::parse_key(&key.0)
                .map_err(|e| anyhow::anyhow!("secrets_encryption.key: {e}"))?;
        }
        for (key, t) in [
            ("service_token", &self.auth.service_token),
            ("admin_token", &self.auth.admin_token),
        ] {
            if let Some(t) = t {
                firebreak_domain::access::PresentedToken::parse(&t.0).map_err(|_| {
                    anyhow::anyhow!(
                        "auth.{key}: not a Firebreak token (fb_<12 hex>_<64 hex>); make one with `firebreak token generate`"
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The database URL of `service` in distributed mode.
    pub fn database_url_for(&self, service: &str) -> anyhow::Result<String> {
        let url =
            self.database_url.as_ref().map(|u| u.0.as_str()).context(
                "distributed mode needs `database_url` (postgres://…) in the configuration",
            )?;
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            // Not the URL itself: it may hold a password.
            let scheme = url.split_once("://").map_or("(none)", |(s, _)| s);
            bail!("database_url must be a postgres:// URL, not one of scheme {scheme:?}");
        }
        Ok(url.replace("{service}", service))
    }

    /// A secret an `X_file` key of a `{secret: NAME}` field was read from, by the name the
    /// field now gives; the secrets of `secrets_dir` and `FIREBREAK_SECRET_<NAME>` are
    /// looked up after these.
    pub fn file_secret(&self, name: &str) -> Option<String> {
        self.file_secrets.get(name).map(|s| s.0.clone())
    }

    /// The taxonomy in force.
    pub fn taxonomy(&self) -> Taxonomy {
        self.taxonomy.clone().unwrap_or_default()
    }
}

/// Whether an environment variable has the shape of a Kubernetes service link
/// (`NAME_SERVICE_HOST`, `NAME_SERVICE_PORT[_PORTNAME]`, `NAME_PORT[_N_PROTO[_FIELD]]`).
fn is_service_link(key: &str) -> bool {
    let parts: Vec<&str> = key.split('_').collect();
    parts.iter().enumerate().skip(1).any(|(i, part)| {
        let rest = &parts[i + 1..];
        match *part {
            "SERVICE" => matches!(rest.first(), Some(&"HOST") | Some(&"PORT")),
            "PORT" => match rest {
                [] => true,
                [n, proto, field @ ..] => {
                    n.chars().all(|c| c.is_ascii_digit())
                        && matches!(*proto, "TCP" | "UDP" | "SCTP")
                        && field.len() <= 1
                }
                _ => false,
            },
            _ => false,
        }
    })
}

impl Config {
    /// Triage's life-cycle policy: the reopen windows and who needs a commander.
    pub fn lifecycle(&self) -> firebreak_triage::Lifecycle {
        firebreak_triage::Lifecycle {
            commander_through: self.commander.required_through_severity,
            ..self.reopen.lifecycle()
        }
    }

    /// Logs the environment variables the loader ignored: service links at debug, anything
    /// else at warn (a misspelt key is not silently lost).
    pub fn log_ignored_env(&self) {
        for key in &self.ignored_env {
            if is_service_link(key) {
                tracing::debug!(variable = %key, "ignoring a Kubernetes service-link variable: it names no configuration key");
            } else {
                tracing::warn!(variable = %key, "ignoring an environment variable that names no configuration key");
            }
        }
    }
}

/// Removes the key at `path` (of maps only), if it is there.
fn remove_path(value: &mut serde_yaml::Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents.iter().try_fold(value, |v, k| v.get_mut(k.as_str()));
    if let Some(serde_yaml::Value::Mapping(map)) = parent {
        map.remove(last.as_str());
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

/// The largest configuration file read: a file named by mistake (a log, a dump) is refused
/// rather than parsed.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The configuration file's text, at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "config file {}: larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    Ok(text)
}

/// The file's YAML: a map (or nothing). A syntax error says its line and column.
fn parse_file(path: &Path, text: &str) -> Result<serde_yaml::Value, ConfigError> {
    let refuse = |message: String| ConfigError {
        path: String::new(),
        message,
        origin: None,
    };
    let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        // serde_yaml says where a syntax error is, but not where a repeated key is.
        match origin::find_repeated_key(text) {
            Some((key, line)) => ConfigError {
                path: key.to_string(),
                message: format!("{e}"),
                origin: Some(format!("line {line} of {}", path.display())),
            },
            None => refuse(format!("config file {} is not YAML: {e}", path.display())),
        }
    })?;
    match v {
        serde_yaml::Value::Null => Ok(serde_yaml::Value::Mapping(Default::default())),
        v @ serde_yaml::Value::Mapping(_) => Ok(v),
        _ => Err(refuse(format!(
            "config file {}: the top level must be a map of keys (line 1)",
            path.display()
        ))),
    }
}

/// A serde error as a [`ConfigError`]: the path serde_path_to_error tracked (with the key
/// an `unknown field` error is about), and its origin.
fn serde_error(
    e: &serde_path_to_error::Error<serde_yaml::Error>,
    sources: &Sources,
) -> ConfigError {
    let mut path = KeyPath::from_serde(e.path());
    let message = e.inner().to_string();
    // serde_path_to_error's path ends at the unknown key in some places and at the map
    // holding it in others.
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        && path.0.last() != Some(&Seg::Key(field.to_owned()))
    {
        path = path.key(field);
    }
    sources.error(&path, message)
}

/// Reads each `channels:` entry as the channel parser does, so that an error names the
/// entry's index and field (`channels[0].events`) rather than only the channel.
fn check_channels(value: &serde_yaml::Value, sources: &Sources) -> Result<(), ConfigError> {
    let Some(serde_yaml::Value::Sequence(items)) = value.get("channels") else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let at = KeyPath(vec![Seg::Key("channels".into()), Seg::Index(i)]);
        let json = serde_json::to_value(item).map_err(|e| sources.error(&at, e.to_string()))?;
        Channel::from_config(json).map_err(|e| {
            let (path, message) = channel_fault(i, &e);
            sources.error(&path, message)
        })?;
    }
    Ok(())
}

/// The key path of a channel's error (`channels[2].templates.text`) and its reason.
fn channel_fault(index: usize, e: &firebreak_notification::ChannelError) -> (KeyPath, String) {
    let at = KeyPath(vec![Seg::Key("channels".into()), Seg::Index(index)]);
    if e.field.is_empty() {
        return (at, e.reason.clone());
    }
    match KeyPath::parse(&e.field) {
        Some(field) => (at.join(&field), e.reason.clone()),
        None => (at, format!("{}: {}", e.field, e.reason)),
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
    fn the_readme_on_call_example_loads_and_pages_whoever_is_on_call() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let section = readme.split("## Getting a team on call").nth(1).unwrap();
        let yaml = section
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oncall.yaml");
        std::fs::write(&file, yaml).unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.schedules[0].name, "payments-primary");
        assert_eq!(c.routes[0].policy, "payments-oncall");
        let links = c.responses.as_ref().unwrap();
        links
            .build(&|_| Some("k".repeat(32)))
            .unwrap_or_else(|e| panic!("{e}"));
        // Its channels take their secrets as named.
        for ch in &c.channels {
            ch.clone()
                .with_secrets(&|_| Some("s3cret".into()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let schedules = firebreak_notification::schedules::Schedules::new(&c.schedules).unwrap();
        let at = firebreak_domain::Micros::from_unix_micros(
            "2026-11-02T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_microsecond(),
        );
        use firebreak_notification::OnCall as _;
        assert_eq!(
            schedules.on_call("payments-primary", at),
            Some(vec!["alice".to_owned()])
        );
    }

    /// `FIREBREAK_SECRETS_KEY` is the secrets key, kept as text; a printed configuration
    /// shows no key or secret.
    #[test]
    fn the_secrets_key_comes_from_the_environment_and_secrets_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        std::fs::write(
            &file,
            "integrations:\n  - { name: am, kind: alertmanager, key: am-key-0000000000000001, signing_secret: am-secret-00000000000001 }\n",
        )
        .unwrap();
        let key = "1234567890123456789012345678901234567890123456789012345678901234";
        let c = Config::load(Some(&file), env(&[("FIREBREAK_SECRETS_KEY", key)])).unwrap();
        assert_eq!(c.secrets_encryption.key, Some(SecretText(key.into())));
        assert!(c.ignored_env.is_empty(), "{:?}", c.ignored_env);
        let printed = format!("{c:?}");
        for secret in [key, "am-key-0000000000000001", "am-secret-00000000000001"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
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
        // A nested key under a known one is still checked.
        let err = format!(
            "{:#}",
            Config::load(None, env(&[("FIREBREAK_NATS__URLL", "x")])).unwrap_err()
        );
        assert!(err.contains("unknown field `urll`"), "{err}");
    }

    #[test]
    fn kubernetes_service_links_are_ignored() {
        let links = env(&[
            ("FIREBREAK_INTAKE_SERVICE_HOST", "10.0.0.7"),
            ("FIREBREAK_INTAKE_SERVICE_PORT", "7400"),
            ("FIREBREAK_INTAKE_SERVICE_PORT_GRPC", "7400"),
            ("FIREBREAK_INTAKE_PORT", "tcp://10.0.0.7:7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP", "tcp://10.0.0.7:7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_PROTO", "tcp"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_PORT", "7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_ADDR", "10.0.0.7"),
            ("FIREBREAK_NATS_PORT", "tcp://10.0.0.9:4222"),
            ("FIREBREAK_LIVE", "true"),
        ]);
        let c = Config::load(None, links).unwrap();
        assert!(c.live);
        assert_eq!(c.ignored_env.len(), 9);
        assert!(
            c.ignored_env
                .contains(&"FIREBREAK_INTAKE_PORT_7400_TCP_ADDR".to_owned())
        );
        assert!(is_service_link("FIREBREAK_INTAKE_PORT_7400_TCP_ADDR"));
        assert!(is_service_link("FIREBREAK_TRIAGE_SERVICE_HOST"));
        assert!(!is_service_link("FIREBREAK_LIEV"));
    }

    #[test]
    fn subscriptions_default_to_none_load_rules_and_refuse_unknown_keys() {
        assert!(Config::default().subscriptions.is_empty());
        let c = Config::layered(
            serde_yaml::from_str(
                "subscriptions:\n  - { match: { max_severity: 2 }, services: [checkout], people: [amy], channels: [status] }\n",
            )
            .unwrap(),
        )
        .unwrap();
        let rule = &c.subscriptions[0];
        assert_eq!(
            (
                rule.when.max_severity,
                &rule.services,
                &rule.people,
                &rule.channels
            ),
            (
                2,
                &vec!["checkout".to_owned()],
                &vec!["amy".to_owned()],
                &vec!["status".to_owned()]
            )
        );
        let err = Config::layered(
            serde_yaml::from_str("subscriptions:\n  - { persons: [amy] }\n").unwrap(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("persons"), "{err:#}");
    }

    #[test]
    fn status_update_reminders_default_to_sev1_and_sev2_and_refuse_unknown_keys() {
        let defaults = Config::default().status_updates;
        let rules: Vec<(u32, u64)> = defaults
            .reminders
            .iter()
            .map(|r| (r.max_severity, r.after_seconds))
            .collect();
        assert_eq!(rules, [(1, 1800), (2, 3600)]);
        let c =
            Config::layered(serde_yaml::from_str("status_updates:\n  reminders: []\n").unwrap())
                .unwrap();
        assert!(c.status_updates.reminders.is_empty());
        for bad in [
            "status_updates:\n  reminder: []\n",
            "status_updates:\n  reminders: [{ max_severity: 1, after: 30m }]\n",
        ] {
            let err = Config::layered(serde_yaml::from_str(bad).unwrap()).unwrap_err();
            assert!(
                format!("{err:#}").contains("unknown field"),
                "{bad}: {err:#}"
            );
        }
    }

    #[test]
    fn the_environment_keys_are_the_configuration_keys() {
        // serde names every field it expects when it meets an unknown one.
        let err = Config::layered(serde_yaml::from_str("\"?\": 1").unwrap())
            .unwrap_err()
            .to_string();
        let expected = err.split("expected one of").nth(1).unwrap();
        let fields: Vec<&str> = expected
            .split(',')
            .map(|f| f.trim().trim_matches('`'))
            .map(|f| f.split('`').next().unwrap())
            .collect();
        assert_eq!(fields, KEYS);
    }

    #[test]
    fn a_peer_may_be_several_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "peers:\n  triage: [http://a:7400, http://b:7400]\n").unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        let triage = c.peers.triage.unwrap();
        assert_eq!(split_addresses(&triage), ["http://a:7400", "http://b:7400"]);
        let c = Config::load(
            None,
            env(&[("FIREBREAK_PEERS__TRIAGE", "http://a:1, http://b:2,")]),
        )
        .unwrap();
        assert_eq!(
            split_addresses(&c.peers.triage.unwrap()),
            ["http://a:1", "http://b:2"]
        );
    }

    #[test]
    fn sev1_and_sev2_need_a_commander_by_default_and_the_policy_is_checked() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            (c.lifecycle().commander_through, c.commander.schedule),
            (2, None)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "commander:
  required_through_severity: 1
  schedule: ic-primary
",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.lifecycle().commander_through, 1);
        assert_eq!(c.commander.schedule.as_deref(), Some("ic-primary"));
        // The environment sets it too, as every key.
        let c = Config::load(
            None,
            env(&[("FIREBREAK_COMMANDER__REQUIRED_THROUGH_SEVERITY", "0")]),
        )
        .unwrap();
        assert_eq!(c.lifecycle().commander_through, 0);
        for (yaml, names) in [
            (
                "commander:\n  required_through_severity: 6\n",
                "commander.required_through_severity",
            ),
            (
                "commander:\n  schedule: 'IC Primary'\n",
                "commander.schedule",
            ),
            (
                &*format!("commander:\n  schedule: {}\n", "s".repeat(300)),
                "commander.schedule",
            ),
            ("commander:\n  schedules: x\n", "schedules"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
            assert!(err.contains(names), "{yaml}: {err}");
        }
    }

    #[test]
    fn reopen_windows_default_to_an_hour_by_hand_and_none_for_repeats_and_are_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        let l = c.reopen.lifecycle();
        assert_eq!(
            (
                l.reopen_window.as_secs(),
                l.repeat_window_of("any").as_secs()
            ),
            (3600, 0)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "reopen:\n  repeat_alerts_seconds: 600\n  integrations: {grafana: 60}\n",
        )
        .unwrap();
        let l = Config::load(Some(&file), env(&[]))
            .unwrap()
            .reopen
            .lifecycle();
        assert_eq!(l.repeat_window_of("grafana").as_secs(), 60);
        assert_eq!(l.repeat_window_of("other").as_secs(), 600);
        assert_eq!(l.longest_repeat_window().as_secs(), 600);
        for (yaml, names) in [
            (
                "reopen:\n  window_seconds: 2592001\n",
                "reopen.window_seconds",
            ),
            (
                "reopen:\n  integrations: {grafana: 99999999999}\n",
                "reopen.integrations.grafana",
            ),
            ("reopen:\n  window: 60\n", "window"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
            assert!(err.contains(names), "{yaml}: {err}");
        }
    }

    #[test]
    fn grouping_has_no_rules_by_default_and_refuses_bad_ones_naming_the_field() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.grouping.rules.is_empty());
        assert!(c.grouping.grouping().unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "grouping:\n  rules:\n  - name: by-service\n    integration: prom\n    matchers: ['env=prod']\n    group_by: [service]\n    window: 5m\n",
        )
        .unwrap();
        let g = Config::load(Some(&file), env(&[]))
            .unwrap()
            .grouping
            .grouping()
            .unwrap();
        assert_eq!(g.rules().len(), 1);
        assert_eq!(g.longest_window().as_secs(), 300);
        assert_eq!(g.rules()[0].integration.as_deref(), Some("prom"));
        let rule = |rest: &str| format!("grouping:\n  rules:\n  - name: r\n{rest}");
        for (yaml, names) in [
            (
                rule("    group_by: [service]\n    window: soon\n"),
                "grouping.rules[0].window",
            ),
            (
                rule("    group_by: [service]\n    window: 0s\n"),
                "grouping.rules[0].window",
            ),
            (
                rule("    group_by: [service]\n    window: 25h\n"),
                "grouping.rules[0].window",
            ),
            (
                rule("    group_by: []\n    window: 5m\n"),
                "grouping.rules[0].group_by",
            ),
            (
                rule(&format!(
                    "    group_by: [{}]\n    window: 5m\n",
                    vec!["a"; 17].join(", ")
                )),
                "grouping.rules[0].group_by",
            ),
            (
                rule(&format!(
                    "    group_by: [{}]\n    window: 5m\n",
                    "x".repeat(10_000)
                )),
                "grouping.rules[0].group_by[0]",
            ),
            (
                rule("    matchers: ['service=~\"(\"']\n    group_by: [service]\n    window: 5m\n"),
                "grouping.rules[0].matchers[0]",
            ),
            (rule("    window: 5m\n"), "group_by"),
            (
                rule("    group_by: [service]\n    window: 5m\n    wait: 1m\n"),
                "wait",
            ),
            ("grouping:\n  rule: []\n".to_owned(), "rule"),
        ] {
            std::fs::write(&file, &yaml).unwrap();
            let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
            assert!(err.contains(names), "{yaml}: {err}");
        }
    }

    #[test]
    fn the_review_template_defaults_to_the_built_in_one_and_is_checked() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            c.review.template,
            firebreak_domain::default_review_template()
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "review:\n  template:\n    - {heading: Customer impact, prompt: Who noticed?}\n    - {heading: Root cause}\n",
        )
        .unwrap();
        let t = Config::load(Some(&file), env(&[])).unwrap().review.template;
        let headings: Vec<(&str, &str)> = t
            .iter()
            .map(|s| (s.heading.as_str(), s.prompt.as_str()))
            .collect();
        assert_eq!(
            headings,
            [("Customer impact", "Who noticed?"), ("Root cause", "")]
        );
        for (yaml, names) in [
            ("review:\n  template: []\n", "review.template"),
            (
                "review:\n  template: [{heading: A}, {heading: a}]\n",
                "appears twice",
            ),
            ("review:\n  template: [{heading: A, hint: x}]\n", "hint"),
            ("review:\n  templates: []\n", "templates"),
        ] {
            std::fs::write(&file, yaml).unwrap();
            let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
            assert!(err.contains(names), "{yaml}: {err}");
        }
    }

    #[test]
    fn throttles_keep_goalerts_defaults_per_kind_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        let defaults = firebreak_notification::throttle::Throttles::default();
        assert_eq!(Config::load(None, env(&[])).unwrap().throttles, defaults);
        std::fs::write(
            &file,
            "throttles:\n  sms: [{ count: 2, per_seconds: 60 }]\n  email: []\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.throttles.sms.len(), 1);
        assert!(c.throttles.email.is_empty());
        assert_eq!(c.throttles.voice, defaults.voice);
        std::fs::write(
            &file,
            "throttles:\n  sms: [{ count: 0, per_seconds: 60 }]\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(
            err.contains("throttles.sms[0].count: must be 1 to 1000, not 0"),
            "{err}"
        );
        std::fs::write(&file, "throttles:\n  pager: []\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(err.contains("pager"), "{err}");
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
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert_eq!(
            err,
            format!(
                "channels[0].url: \"ftp://x\" must start with http:// or https:// (line 4 of {})",
                file.display()
            )
        );
        std::fs::write(&file, "taxonomy:\n  categories:\n    - name: only-one\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(err.contains("uncategorized"), "{err}");
    }

    #[test]
    fn the_shipped_distributed_configurations_load() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
        let c = Config::load(
            Some(&Path::new(root).join("deploy/distributed.yaml")),
            env(&[]),
        )
        .unwrap();
        assert_eq!(
            c.database_url_for("triage").unwrap(),
            "postgres://postgres@127.0.0.1:5432/firebreak_triage"
        );
        assert_eq!(c.nats.unwrap().url, "nats://127.0.0.1:4222");
        assert_eq!(c.peers.triage.as_deref(), Some("http://127.0.0.1:7410"));
        let client = Peers::load(&Path::new(root).join("deploy/client.yaml")).unwrap();
        assert_eq!(
            client.notification.as_deref(),
            Some("http://127.0.0.1:7430")
        );

        // The Kubernetes ConfigMaps' files (the base's and the production overlay's), with
        // the URL from the Secret in the environment.
        for file in [
            "deploy/kubernetes/base/firebreak.yaml",
            "deploy/kubernetes/overlays/production/firebreak.yaml",
        ] {
            let c = Config::load(
                Some(&Path::new(root).join(file)),
                env(&[(
                    "FIREBREAK_DATABASE_URL",
                    "postgres://fb:pw@pg:5432/firebreak_{service}",
                )]),
            )
            .unwrap();
            assert_eq!(
                c.database_url_for("intake").unwrap(),
                "postgres://fb:pw@pg:5432/firebreak_intake"
            );
            assert!(c.log_json, "{file}");
        }
    }

    #[test]
    fn distributed_mode_needs_a_postgres_url() {
        let c = Config::load(None, env(&[])).unwrap();
        let err = format!("{:#}", c.database_url_for("triage").unwrap_err());
        assert!(err.contains("database_url"), "{err}");
        let c = Config::load(None, env(&[("FIREBREAK_DATABASE_URL", "sqlite://x.db")])).unwrap();
        let err = format!("{:#}", c.database_url_for("triage").unwrap_err());
        assert!(err.contains("postgres://"), "{err}");
    }

    /// Hostile configuration files: every error names the key path and the line (or the
    /// environment variable) its value came from.
    #[test]
    fn every_error_names_the_key_path_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("firebreak.yaml");
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "live: true\n\nliev: true\n",
                &[],
                "liev: unknown field `liev`, expected one of `data_dir`, …(line 3 of F)",
            ),
            (
                "nats:\n  url: nats://x\n  urll: y\n",
                &[],
                "nats.urll: unknown field `urll`, expected one of `url`, `ack_wait_seconds`, …(line 3 of F)",
            ),
            (
                "grpc_addr: not-an-addr\n",
                &[],
                "grpc_addr: invalid socket address syntax (line 1 of F)",
            ),
            (
                "channels:\n  - name: ops\n    kind: webhook\n    url: https://x\n    events: [opened, bogus]\n",
                &[],
                "channels[0].events[1]: \"bogus\" is not an incident change (one of opened, …(line 5 of F)",
            ),
            (
                "channels:\n  - name: ops\n    kind: webhook\n    url: https://x\n  - name: two\n",
                &[],
                "channels[1].kind: is required (one of log, …(line 5 of F)",
            ),
            (
                "channels:\n  - {name: ops, kind: webhook, url: 'https://x', tries: 3}\n",
                &[],
                "channels[0].tries: unknown field `tries`, …(line 2 of F)",
            ),
            (
                "channels:\n  - {name: a, kind: webhook, url: 'https://x'}\n  - {name: a, kind: webhook, url: 'https://y'}\n",
                &[],
                "channels[1].name: channel \"a\" is defined twice (line 3 of F)",
            ),
            (
                "channels:\n  - {name: log, kind: webhook, url: 'https://x'}\n",
                &[],
                "channels[0].name: channel \"log\" is built in; name yours differently (line 2 of F)",
            ),
            (
                "channels:\n  - name: t\n    kind: teams\n    url: http://teams.example.com/x\n",
                &[],
                "channels[0].url: must start with https:// (plain http only to a loopback address) (line 4 of F)",
            ),
            (
                "integrations:\n  - name: am\n    kind: alertmanagr\n    key: 0123456789abcdef0\n",
                &[],
                "integrations[0].kind: unknown variant `alertmanagr`, expected one of `alertmanager`, `pagerduty`, `grpc` (line 3 of F)",
            ),
            (
                "integrations:\n  - name: am\n    kind: alertmanager\n    key: 0123456789abcdef0\n    severity_map: {x: nope}\n",
                &[],
                "integrations[0].severity_map.x: invalid type: string \"nope\", expected u32 (line 5 of F)",
            ),
            (
                "schedules:\n  - name: s\n    time_zone: UTC\n    layers:\n      - name: l\n        members: [a]\n        rotation: {every: 1 fortnight, hand_off: '09:00', start: 2026-01-01}\n",
                &[],
                "schedules[0].layers[0].rotation.every: \"1 fortnight\" is not a turn length: expected a count and h, d or w (12h, 1d, 2w) (line 7 of F)",
            ),
            (
                "a: [\n",
                &[],
                "config file F is not YAML: did not find expected node content at line 2 column 1, while parsing a flow node",
            ),
            (
                "- a\n",
                &[],
                "config file F: the top level must be a map of keys (line 1)",
            ),
            (
                "live: true\nlive: false\n",
                &[],
                "live: duplicate entry with key \"live\" (line 2 of F)",
            ),
            (
                "",
                &[
                    ("FIREBREAK_NATS__ACK_WAIT_SECONDS", "abc"),
                    ("FIREBREAK_NATS__URL", "nats://x"),
                ],
                "nats.ack_wait_seconds: invalid type: string \"abc\", expected u64 (from FIREBREAK_NATS__ACK_WAIT_SECONDS)",
            ),
            (
                "nats:\n  url: nats://x\n",
                &[("FIREBREAK_NATS__PORT", "4222")],
                "nats.port: unknown field `port`, expected one of `url`, …(from FIREBREAK_NATS__PORT)",
            ),
            (
                "",
                &[("FIREBREAK_CHANNELS", "[{name: a, kind: pager}]")],
                "channels[0].kind: unknown kind \"pager\" (one of log, …(from FIREBREAK_CHANNELS)",
            ),
            (
                "nats:\n  ack_wait_seconds: 5\n",
                &[],
                "nats: missing field `url` (line 1 of F)",
            ),
            (
                "reopen:\n  window_seconds: 99999999\n",
                &[],
                "reopen.window_seconds: at most 2592000 seconds (30 days), not 99999999 (line 2 of F)",
            ),
            (
                "escalation_policies:\n  - name: p\n    steps:\n      - channels: [x]\n        targets: [{robot: x}]\n",
                &[],
                "escalation_policies[0].steps[0].targets[0].robot: unknown variant `robot`, expected one of `user`, …(line 5 of F)",
            ),
            (
                "taxonomy:\n  categories:\n    - name: only-one\n",
                &[],
                "taxonomy: the category \"uncategorized\" must exist (line 1 of F)",
            ),
            (
                "users:\n  - name: amy\n  - name: amy\n",
                &[],
                "users[1] (\"amy\"): declared twice (line 3 of F)",
            ),
            (
                "grouping:\n  rules:\n  - name: r\n    group_by: [s]\n    window: soon\n",
                &[],
                "grouping.rules[0].window: \"soon\" is not a window such as 30s, 5m or 2h (line 5 of F)",
            ),
            (
                "maintenance:\n  - name: w\n",
                &[],
                "maintenance[0]: missing field `time_zone` (line 2 of F)",
            ),
            (
                "auth:\n  service_token: nope\n",
                &[],
                "auth.service_token: not a Firebreak token (fb_<12 hex>_<64 hex>); make one with `firebreak token generate` (line 2 of F)",
            ),
            (
                "throttles:\n  sms: [{count: 0, per_seconds: 60}]\n",
                &[],
                "throttles.sms[0].count: must be 1 to 1000, not 0 (line 2 of F)",
            ),
            (
                "review:\n  template: []\n",
                &[],
                "review.template: must hold 1 to 20 sections (0 given) (line 2 of F)",
            ),
            (
                "routes:\n  - policy: p\n    match: {max_severity: x}\n",
                &[],
                "routes[0].match.max_severity: invalid type: string \"x\", expected u32 (line 3 of F)",
            ),
            (
                "data_dir: [1]\n",
                &[],
                "data_dir: invalid type: sequence, expected path string (line 1 of F)",
            ),
            (
                "responses:\n  public_url: https://x\n  signing_key: plain\n",
                &[],
                "responses.signing_key: expects {secret: NAME} naming a secret (a file in secrets_dir or FIREBREAK_SECRET_<NAME>), never the value itself (line 3 of F)",
            ),
        ];
        for (yaml, vars, want) in cases {
            std::fs::write(&file, yaml).unwrap();
            let err = format!("{:#}", Config::load(Some(&file), env(vars)).unwrap_err());
            let err = err.replace(&file.display().to_string(), "F");
            let ok = match want.split_once('…') {
                Some((head, tail)) => err.starts_with(head) && err.ends_with(tail),
                None => err == *want,
            };
            assert!(ok, "{yaml:?}\n got: {err}\nwant: {want}");
        }
        // A file too large to be a configuration is refused before it is parsed.
        std::fs::write(&file, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let err = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
        assert!(err.ends_with("larger than 4 MiB"), "{err}");
    }

    /// A Firebreak token (`fb_<12 hex>_<64 hex>`), made of `c`.
    fn token(c: char) -> String {
        format!(
            "fb_{}_{}",
            c.to_string().repeat(12),
            c.to_string().repeat(64)
        )
    }

    /// Every secret-bearing key takes its value from a file instead: `X_file`.
    #[test]
    fn every_secret_bearing_key_reads_its_file_variant() {
        let dir = tempfile::tempdir().unwrap();
        let secret = |name: &str, value: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{value}\n")).unwrap();
            p.display().to_string()
        };
        let values = [
            ("db", "postgres://fb:db-pass-1@pg/firebreak_{service}"),
            ("ikey", "integration-key-0001"),
            ("isig", "integration-signing-0001"),
            ("links", "link-signing-key-00000000000000000001"),
            ("svc", &*token('a')),
            ("adm", &*token('b')),
            (
                "seal",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            ),
            ("hook", "https://hooks.example.com/webhook-token-0001"),
            ("hsig", "webhook-signing-0001"),
            ("smtp", "smtp-pass-0001"),
            ("slack", "xoxb-slack-token-0001"),
            ("ssig", "slack-signing-0001"),
            ("mm", "mattermost-token-0001"),
            ("teams", "https://teams.example.com/workflow-token-0001"),
            (
                "slackhook",
                "https://hooks.slack.com/services/T/B/slackhook-0001",
            ),
            ("mmhook", "https://mm.example.com/hooks/mmhook-0001"),
            ("twilio", "twilio-auth-0001"),
            ("gw", "gateway-api-key-0001"),
        ];
        let f: BTreeMap<&str, String> = values.iter().map(|(n, v)| (*n, secret(n, v))).collect();
        let yaml = format!(
            "database_url_file: {db}
integrations:
  - {{name: am, kind: alertmanager, key_file: {ikey}, signing_secret_file: {isig}}}
responses:
  public_url: https://firebreak.example.com
  signing_key_file: {links}
auth:
  service_token_file: {svc}
  admin_token_file: {adm}
secrets_encryption:
  key_file: {seal}
channels:
  - {{name: hook, kind: webhook, url_file: {hook}, signing_secret_file: {hsig}}}
  - {{name: mail, kind: email, host: smtp.example.com, from: fb@example.com, to: [ops@example.com], username: fb, password_file: {smtp}}}
  - {{name: slack, kind: slack, channel: C1, token_file: {slack}, signing_secret_file: {ssig}}}
  - {{name: mm, kind: mattermost, url: 'https://mm.example.com', channel_id: abcdefghijklmnopqrstuvwxyz, token_file: {mm}}}
  - {{name: teams, kind: teams, url_file: {teams}}}
  - {{name: slackhook, kind: slack_webhook, url_file: {slackhook}}}
  - {{name: mmhook, kind: mattermost_webhook, url_file: {mmhook}}}
  - {{name: sms, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, from: '+15550000000', to: '+15551111111', auth_token_file: {twilio}}}
  - name: gw
    kind: sms_gateway
    url: https://sms.example.com/send
    to: '+15551111111'
    body: '{{\"key\": {{{{ secrets.api_key }}}}, \"text\": {{{{ text }}}}}}'
    secrets: {{api_key_file: {gw}}}
",
            db = f["db"],
            ikey = f["ikey"],
            isig = f["isig"],
            links = f["links"],
            svc = f["svc"],
            adm = f["adm"],
            seal = f["seal"],
            hook = f["hook"],
            hsig = f["hsig"],
            smtp = f["smtp"],
            slack = f["slack"],
            ssig = f["ssig"],
            mm = f["mm"],
            teams = f["teams"],
            slackhook = f["slackhook"],
            mmhook = f["mmhook"],
            twilio = f["twilio"],
            gw = f["gw"],
        );
        let file = dir.path().join("firebreak.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let c = Config::load(Some(&file), env(&[])).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            c.database_url_for("triage").unwrap(),
            "postgres://fb:db-pass-1@pg/firebreak_triage"
        );
        use firebreak_intake::Secret;
        let i = &c.integrations[0];
        assert_eq!(
            (i.key.clone(), i.signing_secret.clone()),
            (
                Secret::new("integration-key-0001"),
                Some(Secret::new("integration-signing-0001"))
            )
        );
        assert_eq!(c.auth.service_token, Some(SecretText(token('a'))));
        assert_eq!(c.auth.admin_token, Some(SecretText(token('b'))));
        // Read when a service starts, as before.
        assert_eq!(
            c.secrets_encryption.key_file.as_deref(),
            Some(Path::new(&f["seal"]))
        );
        // Channels and links find their secrets by the names their fields now give, with
        // nothing else to look in.
        let lookup = |name: &str| c.file_secret(name);
        for ch in &c.channels {
            let given = ch.clone().with_secrets(&lookup);
            assert!(given.is_ok(), "{}: {:?}", ch.name, given.err());
        }
        assert_eq!(
            c.channels[2].secret_names(),
            [
                ("token".to_owned(), "channels.2.token_file".to_owned()),
                (
                    "signing_secret".to_owned(),
                    "channels.2.signing_secret_file".to_owned()
                )
            ]
        );
        assert_eq!(
            c.file_secret("channels.8.secrets.api_key_file").as_deref(),
            Some("gateway-api-key-0001")
        );
        c.responses.as_ref().unwrap().build(&lookup).unwrap();
        // No secret shows in a printed configuration.
        let printed = format!("{c:?}");
        for (name, value) in values {
            assert!(!printed.contains(value), "{name}'s secret printed");
        }

        // NATS, one kind of credentials at a time.
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        for (kind, value, read) in [
            ("password", "nats-pass-0001", "password"),
            ("token", "nats-token-0001", "token"),
            ("nkey_seed", seed.as_str(), "nkey_seed"),
        ] {
            let user = if kind == "password" {
                "\n  user: fb"
            } else {
                ""
            };
            let path = secret("nats", value);
            std::fs::write(
                &file,
                format!("nats:\n  url: nats://n:4222{user}\n  {kind}_file: {path}\n"),
            )
            .unwrap();
            let c = Config::load(Some(&file), env(&[])).unwrap_or_else(|e| panic!("{e:#}"));
            let auth = c.nats.unwrap().auth();
            let got = match read {
                "password" => auth.password,
                "token" => auth.token,
                _ => auth.nkey_seed,
            };
            assert_eq!(got.as_deref(), Some(value), "{kind}");
        }
    }

    /// `X_file` refused: set with `X`, a file that cannot be a secret, a kind without `X`;
    /// each error names the key, the path and the line.
    #[test]
    fn hostile_secret_files_are_refused_naming_the_key_the_path_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("firebreak.yaml");
        let good = dir.path().join("good");
        std::fs::write(&good, "nats-pass\n").unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(64 * 1024 + 1)).unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let (f, g, b, e, m, d) = (
            file.display().to_string(),
            good.display(),
            big.display(),
            empty.display(),
            missing.display(),
            dir.path().display(),
        );
        let cases = [
            (
                format!(
                    "nats:\n  url: nats://n\n  user: fb\n  password: inline\n  password_file: {g}\n"
                ),
                format!(
                    "nats.password_file: nats.password is set too: give the secret or the file holding it, not both (line 5 of {f})"
                ),
            ),
            (
                format!("database_url: postgres://x\ndatabase_url_file: {g}\n"),
                format!(
                    "database_url_file: database_url is set too: give the secret or the file holding it, not both (line 2 of {f})"
                ),
            ),
            (
                format!("secrets_encryption:\n  key: '00'\n  key_file: {g}\n"),
                format!(
                    "secrets_encryption.key_file: secrets_encryption.key is set too: give the secret or the file holding it, not both (line 3 of {f})"
                ),
            ),
            (
                format!(
                    "channels:\n  - name: s\n    kind: slack\n    token: {{secret: t}}\n    token_file: {g}\n"
                ),
                format!(
                    "channels[0].token_file: channels[0].token is set too: give the secret or the file holding it, not both (line 5 of {f})"
                ),
            ),
            (
                format!("auth:\n  admin_token_file: {m}\n"),
                format!(
                    "auth.admin_token_file: cannot read {m}: No such file or directory (os error 2) (line 2 of {f})"
                ),
            ),
            (
                format!("integrations:\n  - name: am\n    kind: alertmanager\n    key_file: {d}\n"),
                format!("integrations[0].key_file: {d} is not a regular file (line 4 of {f})"),
            ),
            (
                format!("channels:\n  - name: t\n    kind: teams\n    url_file: {b}\n"),
                format!("channels[0].url_file: {b} is larger than 64 KiB (line 4 of {f})"),
            ),
            (
                format!("responses:\n  public_url: https://x\n  signing_key_file: {e}\n"),
                format!("responses.signing_key_file: {e} is empty (line 3 of {f})"),
            ),
            (
                "database_url_file: [a, b]\n".to_owned(),
                format!("database_url_file: must be a file's path (line 1 of {f})"),
            ),
            // A kind without the key: its file variant is an unknown key like any other.
            (
                format!(
                    "channels:\n  - name: t\n    kind: teams\n    token_file: {g}\n    url: https://t.example.com\n"
                ),
                format!(
                    "channels[0].token_file: unknown field `token_file`, expected `url` (line 4 of {f})"
                ),
            ),
            (
                format!("nats:\n  url: nats://n\n  urls_file: {g}\n"),
                "nats.urls_file: unknown field `urls_file`, expected one of ".to_owned(),
            ),
            // A value read from a file that is not what the key takes says where it was read.
            (
                format!("auth:\n  service_token_file: {g}\n"),
                format!(
                    "auth.service_token: not a Firebreak token (fb_<12 hex>_<64 hex>); make one with `firebreak token generate` (read from {g} (auth.service_token_file, line 2 of {f}))"
                ),
            ),
            (
                "secrets_encryption:\n  key: '00'\n".to_owned(),
                format!(
                    "secrets_encryption.key: a secrets key is 64 hex digits (32 bytes) (line 2 of {f})"
                ),
            ),
            (
                format!("channels:\n  - name: h\n    kind: slack_webhook\n    url_file: {g}\n"),
                format!(
                    "channels[0].url: the URL in secret \"channels.0.url_file\" is not a URL (relative URL without a base) (read from {g} (channels[0].url_file, line 4 of {f}))"
                ),
            ),
        ];
        for (yaml, want) in cases {
            std::fs::write(&file, &yaml).unwrap();
            let got = format!("{:#}", Config::load(Some(&file), env(&[])).unwrap_err());
            assert!(
                got == want || (want.ends_with("one of ") && got.starts_with(&want)),
                "{yaml}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains("nats-pass"), "a secret shown: {got}");
        }
    }

    /// The environment's form of a secret replaces the file's, whichever each is.
    #[test]
    fn the_environment_overrides_a_secret_in_either_form() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("firebreak.yaml");
        let from_file = dir.path().join("pass");
        std::fs::write(&from_file, "from-file\n").unwrap();
        let nats = |c: Config| c.nats.unwrap().auth().password.unwrap();
        // The file's value, the environment's file.
        std::fs::write(
            &file,
            "nats:\n  url: nats://n\n  user: fb\n  password: from-yaml\n",
        )
        .unwrap();
        let pass_file = from_file.display().to_string();
        let c = Config::load(
            Some(&file),
            env(&[("FIREBREAK_NATS__PASSWORD_FILE", &pass_file)]),
        )
        .unwrap();
        assert_eq!(nats(c), "from-file");
        // The file's file (missing: never read), the environment's value.
        std::fs::write(
            &file,
            "nats:\n  url: nats://n\n  user: fb\n  password_file: /nonexistent/pass\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[("FIREBREAK_NATS__PASSWORD", "from-env")]),
        )
        .unwrap();
        assert_eq!(nats(c), "from-env");
        // An error in the environment's file names the variable.
        let err = format!(
            "{:#}",
            Config::load(
                Some(&file),
                env(&[("FIREBREAK_NATS__PASSWORD_FILE", "/nonexistent/other")])
            )
            .unwrap_err()
        );
        assert_eq!(
            err,
            "nats.password_file: cannot read /nonexistent/other: No such file or directory (os error 2) (from FIREBREAK_NATS__PASSWORD_FILE)"
        );
        // The two forms both in the environment are refused, whatever the variables' order.
        for vars in [
            [
                ("FIREBREAK_NATS__PASSWORD", "a"),
                ("FIREBREAK_NATS__PASSWORD_FILE", "/x"),
            ],
            [
                ("FIREBREAK_NATS__PASSWORD_FILE", "/x"),
                ("FIREBREAK_NATS__PASSWORD", "a"),
            ],
        ] {
            let err = format!("{:#}", Config::load(Some(&file), env(&vars)).unwrap_err());
            assert!(
                err.ends_with(": FIREBREAK_NATS__PASSWORD and FIREBREAK_NATS__PASSWORD_FILE are both set: give the secret or the file holding it, not both"),
                "{err}"
            );
        }
        let err = format!(
            "{:#}",
            Config::load(
                None,
                env(&[
                    ("FIREBREAK_SECRETS_ENCRYPTION__KEY_FILE", "/k"),
                    ("FIREBREAK_SECRETS_KEY", "ab")
                ])
            )
            .unwrap_err()
        );
        assert!(
            err.contains(
                "FIREBREAK_SECRETS_ENCRYPTION__KEY_FILE and FIREBREAK_SECRETS_KEY are both set"
            ),
            "{err}"
        );
        // FIREBREAK_SECRETS_KEY replaces a key_file.
        std::fs::write(&file, "secrets_encryption:\n  key_file: /nonexistent/key\n").unwrap();
        let key = "ab".repeat(32);
        let c = Config::load(Some(&file), env(&[("FIREBREAK_SECRETS_KEY", &key)])).unwrap();
        assert_eq!(c.secrets_encryption.key, Some(SecretText(key)));
    }

    #[test]
    fn nats_credentials_are_checked_at_load() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        assert_eq!(seed.len(), 58);
        let nats = |rest: &str| {
            Config::load(
                None,
                env(&[("FIREBREAK_NATS", &format!("{{url: nats://n, {rest}}}"))]),
            )
        };
        nats(&format!("nkey_seed: {seed}")).unwrap();
        nats("user: fb, password: p").unwrap();
        nats("credentials_file: /x.creds, require_tls: true, ca_file: /ca.pem").unwrap();
        for (rest, want) in [
            (
                "user: fb, password: p, token: t".to_owned(),
                "nats.token: give one kind of credentials (user and password, token, nkey_seed or credentials_file), not user and token (from FIREBREAK_NATS)",
            ),
            (
                format!("token: t, nkey_seed: {seed}"),
                "nats.nkey_seed: give one kind of credentials (user and password, token, nkey_seed or credentials_file), not token and nkey_seed (from FIREBREAK_NATS)",
            ),
            (
                "password: p".to_owned(),
                "nats.password: needs nats.user (from FIREBREAK_NATS)",
            ),
            (
                "client_cert_file: /c.pem".to_owned(),
                "nats.client_cert_file: goes with nats.client_key_file; set both or neither (from FIREBREAK_NATS)",
            ),
            (
                format!("nkey_seed: {account}"),
                "nats.nkey_seed: not a user NKey seed (58 characters starting SU; `nk -gen user`) (from FIREBREAK_NATS)",
            ),
        ] {
            let err = format!("{:#}", nats(&rest).unwrap_err());
            assert_eq!(err, want, "{rest}");
            assert!(!err.contains(&account[4..]), "a seed shown");
        }
    }

    #[test]
    fn a_top_level_secret_file_may_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://db.example/firebreak_{service}\n").unwrap();
        let c = Config::load(
            None,
            vec![
                (
                    "FIREBREAK_DATABASE_URL_FILE".to_owned(),
                    f.display().to_string(),
                ),
                (
                    "FIREBREAK_INTAKE_SERVICE_HOST".to_owned(),
                    "10.0.0.7".to_owned(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            c.database_url_for("triage").unwrap(),
            "postgres://db.example/firebreak_triage"
        );
        assert_eq!(c.ignored_env, ["FIREBREAK_INTAKE_SERVICE_HOST"]);
    }
}
