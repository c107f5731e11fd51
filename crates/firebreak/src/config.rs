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
    pub database_url: Option<String>,
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
    /// A file holding the key (64 hex digits), readable by Firebreak only.
    pub key_file: Option<PathBuf>,
    /// The key itself, usually from the `FIREBREAK_SECRETS_KEY` environment variable;
    /// `key_file` wins when both are set.
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
        let mut ignored = Vec::new();
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("FIREBREAK_") else {
                continue;
            };
            // Secret values are read by name when a runbook uses them, never as configuration.
            if CLIENT_ENV.contains(&key.as_str()) || rest.starts_with("SECRET_") {
                continue;
            }
            if key == SECRETS_KEY_ENV {
                // Kept as text: hex digits may read as a YAML number.
                set_path(
                    &mut value,
                    &["secrets_encryption".to_owned(), "key".to_owned()],
                    serde_yaml::Value::String(raw),
                );
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            // Kubernetes gives every pod service-link variables for every Service
            // (`FIREBREAK_INTAKE_SERVICE_HOST`, `FIREBREAK_INTAKE_PORT_7400_TCP_ADDR`, ...);
            // a variable naming no top-level key is not meant for us. Files stay strict.
            if !KEYS.contains(&path[0].as_str()) {
                ignored.push(key);
                continue;
            }
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
        ignored.sort();
        Ok(Self {
            ignored_env: ignored,
            ..config
        })
    }

    fn layered(value: serde_yaml::Value) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_value(value)
    }

    /// Checks what serde cannot: the taxonomy's own rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = &self.taxonomy {
            t.validate().context("invalid taxonomy")?;
        }
        firebreak_notification::declared::validate(&self.users, &self.teams)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        firebreak_notification::schedules::Schedules::new(&self.schedules)
            .map_err(|e| anyhow::anyhow!("invalid {e}"))?;
        if self.channels.iter().any(|c| c.name == "log") {
            bail!("channel \"log\" is built in; name yours differently");
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
        for (key, t) in [
            ("service_token", &self.auth.service_token),
            ("admin_token", &self.auth.admin_token),
        ] {
            if let Some(t) = t {
                firebreak_domain::access::PresentedToken::parse(&t.0).map_err(|_| {
                    anyhow::anyhow!(
                        "auth.{key} is not a Firebreak token (fb_<12 hex>_<64 hex>); make one with `firebreak token generate`"
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The database URL of `service` in distributed mode.
    pub fn database_url_for(&self, service: &str) -> anyhow::Result<String> {
        let url = self
            .database_url
            .as_deref()
            .context("distributed mode needs `database_url` (postgres://…) in the configuration")?;
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            bail!("database_url must be a postgres:// URL, not {url:?}");
        }
        Ok(url.replace("{service}", service))
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
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.channels.len(), 1);
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
}
