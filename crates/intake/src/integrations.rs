//! Integrations: how a monitoring tool authenticates to intake (a routing key or bearer
//! token), and how its alerts are read (severity mapping, category hint, auto-resolve, rate).
//! Declared in the configuration (GitOps) or created at run time.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_domain::Micros;
use firebreak_domain::access::integration_key_hash;
use firebreak_storage::{IntakeStore, IntegrationRecord};
use serde::{Deserialize, Serialize};

use crate::failures::FailureGate;
use crate::secrets::{Keyring, SealError, Secret, SignatureError};

/// The tools an integration serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationKind {
    /// Prometheus Alertmanager (and Grafana) webhooks.
    Alertmanager,
    /// PagerDuty Events API v2 and v1, and change events.
    Pagerduty,
    /// gRPC callers, with the key as `authorization: Bearer KEY` metadata.
    Grpc,
}

impl IntegrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::Pagerduty => "pagerduty",
            Self::Grpc => "grpc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alertmanager" => Some(Self::Alertmanager),
            "pagerduty" => Some(Self::Pagerduty),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// One integration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    pub name: String,
    pub kind: IntegrationKind,
    /// The routing key (PagerDuty), path key or bearer token (Alertmanager, gRPC): 16 to 128
    /// printable characters. A run-time integration's is known only when it is created: the
    /// store keeps its SHA-256, so one read back from the store holds none (empty).
    pub key: Secret,
    /// When set, every webhook call must be signed with it: `X-Firebreak-Signature:
    /// t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>` (16 to 256 bytes).
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// The label (Alertmanager) holding the severity.
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// Severity names to levels 1–5, over the defaults (critical 1, error 2, warning 3,
    /// info 4).
    #[serde(default)]
    pub severity_map: BTreeMap<String, u32>,
    /// A category for its alerts; empty lets the rules decide.
    #[serde(default)]
    pub category: String,
    /// Resolve an incident when all its alerts are resolved.
    #[serde(default = "yes")]
    pub auto_resolve: bool,
    /// Alerts per second it may send (bursts up to one second's worth); 0 means no limit.
    /// A call larger than one second's worth is admitted when the budget is full and
    /// borrows the rest, so the next calls wait until it is repaid.
    #[serde(default)]
    pub rate_limit_per_second: u32,
}

fn default_severity_label() -> String {
    "severity".into()
}
fn yes() -> bool {
    true
}

impl Integration {
    /// A runtime integration with defaults and a fresh key.
    pub fn generated(name: &str, kind: IntegrationKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            key: Secret::new(new_key()),
            signing_secret: None,
            severity_label: default_severity_label(),
            severity_map: BTreeMap::new(),
            category: String::new(),
            auto_resolve: true,
            rate_limit_per_second: 0,
        }
    }

    /// The level of a severity name: the integration's map, then the defaults.
    pub fn severity(&self, name: &str) -> Option<u32> {
        let name = name.trim().to_lowercase();
        if let Some(level) = self.severity_map.get(&name) {
            return Some(*level);
        }
        match name.as_str() {
            "critical" | "page" => Some(1),
            "error" | "high" => Some(2),
            "warning" | "warn" | "medium" => Some(3),
            "info" | "low" => Some(4),
            _ => None,
        }
    }

    /// Checks one integration on its own.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "integration name {:?} must be 1-64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        let key = self.key.expose();
        if key.len() < 16 || key.len() > 128 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "integration {}: the key must be 16 to 128 printable characters",
                self.name
            ));
        }
        if let Some(secret) = &self.signing_secret
            && !(16..=256).contains(&secret.expose().len())
        {
            return Err(format!(
                "integration {}: the signing secret must be 16 to 256 bytes",
                self.name
            ));
        }
        if let Some((k, v)) = self
            .severity_map
            .iter()
            .find(|(_, v)| !(1..=5).contains(*v))
        {
            return Err(format!(
                "integration {}: severity_map {k:?} = {v} must be 1 to 5",
                self.name
            ));
        }
        Ok(())
    }
}

/// A new random key: 32 hex digits from the OS's random source.
pub fn new_key() -> String {
    let a = uuid::Uuid::new_v4();
    a.simple().to_string()
}

/// Why a caller was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key or token given.
    #[error("no integration key or bearer token given")]
    Missing,
    /// No integration has this key.
    #[error("unknown integration key")]
    Unknown,
    /// The key belongs to an integration of another kind.
    #[error("integration {name} is of kind {}, not for this endpoint", kind.as_str())]
    WrongKind { name: String, kind: IntegrationKind },
    /// The integration signs its webhooks, and this call's signature does not hold.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The caller's address failed to authenticate too often lately.
    #[error(
        "too many failed authentications from this address: retry in {} s",
        retry_after.as_secs().max(1)
    )]
    TooManyFailures { retry_after: Duration },
}

impl AuthError {
    /// Whether this is a wrong credential (a guess), which counts against its source. A
    /// missing key or a key of the wrong kind is a mistake, not a guess.
    fn is_guess(&self) -> bool {
        matches!(self, Self::Unknown | Self::Signature(_))
    }
}

impl firebreak_proto::ServiceError for AuthError {
    fn error_code(&self) -> firebreak_proto::ErrorCode {
        match self {
            Self::WrongKind { .. } => firebreak_proto::ErrorCode::PermissionDenied,
            Self::Missing | Self::Unknown | Self::Signature(_) => {
                firebreak_proto::ErrorCode::Unauthenticated
            }
            Self::TooManyFailures { .. } => firebreak_proto::ErrorCode::ResourceExhausted,
        }
    }
}

/// Why the integrations could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A declared integration is not valid; the text names it and says why.
    #[error("{0}")]
    Invalid(String),
    #[error("reading integrations: {0}")]
    Storage(#[from] firebreak_storage::Error),
    /// A stored (runtime) integration does not read back.
    #[error("stored integration {name}: {reason}")]
    Stored { name: String, reason: String },
}

/// A run-time integration as the registry holds it: found by its key's hash.
#[derive(Debug, Clone)]
struct Stored {
    integration: Integration,
    /// The first characters of its key, for listings.
    key_hint: String,
}

/// An integration as listed: its key masked.
#[derive(Debug, Clone)]
pub struct Listed {
    pub integration: Integration,
    /// Declared in the configuration, not created at run time.
    pub declared: bool,
    /// The key's first four characters and `…`.
    pub masked_key: String,
}

/// Every integration: the configuration's, fixed, and the runtime ones from the store.
#[derive(Clone)]
pub struct Registry {
    declared: Arc<Vec<Integration>>,
    /// Run-time integrations by the SHA-256 of their key.
    runtime: Arc<Mutex<HashMap<String, Stored>>>,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
    /// Alerts per second keyless gRPC callers may send together; 0 means no limit.
    anonymous_rate: u32,
    /// Seals run-time integrations' signing secrets.
    keyring: Arc<Keyring>,
    /// Failed authentications by source.
    failures: Arc<FailureGate>,
}

/// A key's first four characters and `…`: enough to tell keys apart, nothing to guess with.
fn mask(hint: &str) -> String {
    format!("{}…", hint.chars().take(4).collect::<String>())
}

/// The bucket of keyless gRPC callers; no integration name holds a NUL.
const ANONYMOUS: &str = "\0anonymous";

/// The bearer token of an `authorization` value: the scheme is case-insensitive
/// (RFC 9110), the token follows it after white space.
pub(crate) fn bearer_token(value: &str) -> &str {
    match value.trim().split_once(char::is_whitespace) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    }
}

impl Registry {
    /// The registry of the configuration's integrations plus those in `store`, whose signing
    /// secrets `keyring` opens. Secrets sealed under a previous key are sealed again under
    /// the current one and stored so.
    pub async fn load(
        declared: Vec<Integration>,
        store: &dyn IntakeStore,
        keyring: Keyring,
    ) -> Result<Self, LoadError> {
        let mut names = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for i in &declared {
            i.validate().map_err(LoadError::Invalid)?;
            if !names.insert(i.name.clone()) || !keys.insert(i.key.expose().to_owned()) {
                return Err(LoadError::Invalid(format!(
                    "integration {}: its name or key is used twice",
                    i.name
                )));
            }
        }
        let mut runtime = HashMap::new();
        for r in store.integrations().await? {
            let stored = |reason: String| LoadError::Stored {
                name: r.name.clone(),
                reason,
            };
            let mut i = from_record(&r).map_err(stored)?;
            if let Some(sealed) = &r.signing_secret {
                let secret = keyring
                    .open(&r.name, sealed)
                    .map_err(|e| stored(format!("its signing secret: {e}")))?;
                if !keyring.is_current(sealed) && keyring.can_seal() {
                    let resealed = keyring
                        .seal(&r.name, &secret)
                        .map_err(|e| stored(format!("its signing secret: {e}")))?;
                    // False: another replica sealed it again first, which is as good.
                    store.reseal_integration(&r.name, sealed, &resealed).await?;
                    tracing::info!(
                        integration = %r.name,
                        key = keyring.current_id().unwrap_or_default(),
                        "sealed a signing secret again under the current secrets key"
                    );
                }
                i.signing_secret = Some(secret);
            }
            runtime.insert(
                r.key_hash.clone(),
                Stored {
                    integration: i,
                    key_hint: r.key_hint.clone(),
                },
            );
        }
        Ok(Self {
            declared: Arc::new(declared),
            runtime: Arc::new(Mutex::new(runtime)),
            buckets: Arc::default(),
            anonymous_rate: 0,
            keyring: Arc::new(keyring),
            failures: Arc::default(),
        })
    }

    /// Limits keyless gRPC callers, together, to `per_second` alerts (0: no limit).
    pub fn with_anonymous_rate_limit(mut self, per_second: u32) -> Self {
        self.anonymous_rate = per_second;
        self
    }

    /// The integration a key names, if it is of `kind`.
    pub fn authenticate(&self, key: &str, kind: IntegrationKind) -> Result<Integration, AuthError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(AuthError::Missing);
        }
        // Declared keys are compared in constant time; stored ones are found by their hash,
        // which says nothing of the key through timing.
        let found = self
            .declared
            .iter()
            .find(|i| constant_time_eq(i.key.expose(), key))
            .cloned()
            .or_else(|| {
                let hash = integration_key_hash(key);
                self.runtime
                    .lock()
                    .ok()
                    .and_then(|r| r.get(&hash).map(|s| s.integration.clone()))
            })
            .ok_or(AuthError::Unknown)?;
        if found.kind != kind {
            return Err(AuthError::WrongKind {
                name: found.name,
                kind: found.kind,
            });
        }
        Ok(found)
    }

    /// Checks a webhook call's signature when the integration signs its calls: `header` is
    /// [`crate::SIGNATURE_HEADER`]'s value, if any, `body` the raw body, `now` the time.
    pub fn check_signature(
        &self,
        integration: &Integration,
        header: Option<&[u8]>,
        body: &[u8],
        now: Micros,
    ) -> Result<(), AuthError> {
        let Some(secret) = &integration.signing_secret else {
            return Ok(());
        };
        let seconds = now.unix_micros().div_euclid(1_000_000);
        crate::secrets::verify(secret, header, body, seconds).map_err(AuthError::from)
    }

    /// Whether `source` may try to authenticate at `now`: refused for the rest of its
    /// window once it failed too often. Unknown sources (no server said) are not held.
    pub fn admit_source(&self, source: Option<IpAddr>, now: Micros) -> Result<(), AuthError> {
        match source {
            Some(ip) => self
                .failures
                .check(ip, now)
                .map_err(|retry_after| AuthError::TooManyFailures { retry_after }),
            None => Ok(()),
        }
    }

    /// Notes how an authentication of `source` at `now` ended: a wrong key or signature
    /// counts against the source and in `firebreak_auth_failures_total`.
    pub fn note<T>(
        &self,
        source: Option<IpAddr>,
        now: Micros,
        outcome: Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        if let Err(e) = &outcome
            && e.is_guess()
        {
            firebreak_telemetry::metrics().auth_failures.inc();
            if let Some(ip) = source {
                self.failures.fail(ip, now);
            }
            tracing::debug!(source = ?source, reason = %e, "integration authentication failed");
        }
        outcome
    }

    /// The record storing a new run-time integration: its key hashed, its signing secret
    /// sealed (`SealError::NoKey` when there is a secret and no key to seal it with).
    pub(crate) fn record(
        &self,
        i: &Integration,
        now: Micros,
    ) -> Result<IntegrationRecord, SealError> {
        let signing_secret = i
            .signing_secret
            .as_ref()
            .map(|s| self.keyring.seal(&i.name, s))
            .transpose()?;
        Ok(IntegrationRecord {
            name: i.name.clone(),
            kind: i.kind.as_str().to_owned(),
            key_hash: integration_key_hash(i.key.expose()),
            key_hint: i.key.expose().chars().take(4).collect(),
            settings: serde_json::to_value(StoredSettings::of(i)).unwrap_or_default(),
            signing_secret,
            created_at: now,
        })
    }

    /// Takes `n` alerts from the integration's rate budget, or says how long to wait.
    pub fn admit(&self, integration: &Integration, n: usize) -> Result<(), Duration> {
        self.take(
            &integration.name,
            integration.rate_limit_per_second,
            n,
            Instant::now(),
        )
    }

    /// Takes `n` alerts from the budget keyless gRPC callers share.
    pub fn admit_anonymous(&self, n: usize) -> Result<(), Duration> {
        self.take(ANONYMOUS, self.anonymous_rate, n, Instant::now())
    }

    /// A token bucket holding up to one second's worth (`rate`), refilled continuously.
    /// A call of `n` alerts needs `n` tokens, or a full bucket when `n` exceeds it: it then
    /// borrows the rest (the bucket goes below zero), so a call larger than the burst is
    /// admitted instead of refused forever, and the average rate still holds.
    fn take(&self, bucket: &str, rate: u32, n: usize, now: Instant) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        let rate = f64::from(rate);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = buckets.entry(bucket.to_owned()).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now.max(*last);
        let n = n as f64;
        let needed = n.min(rate);
        if *tokens >= needed {
            *tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((needed - *tokens) / rate))
        }
    }

    /// Every integration, declared ones first, keys masked.
    pub fn all(&self) -> Vec<Listed> {
        let mut out: Vec<Listed> = self
            .declared
            .iter()
            .map(|i| Listed {
                integration: i.clone(),
                declared: true,
                masked_key: mask(i.key.expose()),
            })
            .collect();
        let mut runtime: Vec<Listed> = self
            .runtime
            .lock()
            .map(|r| {
                r.values()
                    .map(|s| Listed {
                        integration: s.integration.clone(),
                        declared: false,
                        masked_key: mask(&s.key_hint),
                    })
                    .collect()
            })
            .unwrap_or_default();
        runtime.sort_by(|a, b| a.integration.name.cmp(&b.integration.name));
        out.extend(runtime);
        out
    }

    /// True when a declared integration has this name.
    pub fn is_declared(&self, name: &str) -> bool {
        self.declared.iter().any(|i| i.name == name)
    }

    /// Adds a run-time integration just stored as `record`; the key is not kept.
    pub(crate) fn add_runtime(&self, i: &Integration, record: &IntegrationRecord) {
        if let Ok(mut r) = self.runtime.lock() {
            r.insert(
                record.key_hash.clone(),
                Stored {
                    integration: Integration {
                        key: Secret::default(),
                        ..i.clone()
                    },
                    key_hint: record.key_hint.clone(),
                },
            );
        }
    }

    pub(crate) fn remove_runtime(&self, name: &str) {
        if let Ok(mut r) = self.runtime.lock() {
            r.retain(|_, s| s.integration.name != name);
        }
    }
}

/// Compares keys without stopping at the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The settings a run-time integration stores as JSON: never its key or signing secret.
/// Rows of earlier versions also hold its name and kind (the columns hold them too), which
/// reading skips.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSettings {
    #[serde(default = "default_severity_label")]
    severity_label: String,
    #[serde(default)]
    severity_map: BTreeMap<String, u32>,
    #[serde(default)]
    category: String,
    #[serde(default = "yes")]
    auto_resolve: bool,
    #[serde(default)]
    rate_limit_per_second: u32,
}

impl StoredSettings {
    fn of(i: &Integration) -> Self {
        Self {
            severity_label: i.severity_label.clone(),
            severity_map: i.severity_map.clone(),
            category: i.category.clone(),
            auto_resolve: i.auto_resolve,
            rate_limit_per_second: i.rate_limit_per_second,
        }
    }
}

fn from_record(r: &IntegrationRecord) -> Result<Integration, String> {
    let kind =
        IntegrationKind::parse(&r.kind).ok_or_else(|| format!("unknown kind {:?}", r.kind))?;
    let s: StoredSettings =
        serde_json::from_value(r.settings.clone()).map_err(|e| e.to_string())?;
    Ok(Integration {
        name: r.name.clone(),
        kind,
        key: Secret::default(),
        signing_secret: None,
        severity_label: s.severity_label,
        severity_map: s.severity_map,
        category: s.category,
        auto_resolve: s.auto_resolve,
        rate_limit_per_second: s.rate_limit_per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(kind: IntegrationKind, rate: u32) -> Integration {
        Integration {
            rate_limit_per_second: rate,
            ..Integration::generated("prom", kind)
        }
    }

    #[test]
    fn severities_map_through_the_integration_then_the_defaults() {
        let mut i = integration(IntegrationKind::Alertmanager, 0);
        i.severity_map.insert("p1".into(), 1);
        i.severity_map.insert("warning".into(), 4);
        assert_eq!(i.severity("P1"), Some(1));
        assert_eq!(i.severity("warning"), Some(4));
        assert_eq!(i.severity("critical"), Some(1));
        assert_eq!(i.severity("info"), Some(4));
        assert_eq!(i.severity("whatever"), None);
    }

    #[test]
    fn keys_are_random_and_validated() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let mut i = integration(IntegrationKind::Grpc, 0);
        assert_eq!(i.validate(), Ok(()));
        i.key = Secret::new("short");
        assert!(i.validate().is_err());
    }

    fn registry() -> Registry {
        Registry {
            declared: Arc::new(Vec::new()),
            runtime: Arc::default(),
            buckets: Arc::default(),
            anonymous_rate: 0,
            keyring: Arc::default(),
            failures: Arc::default(),
        }
    }

    #[test]
    fn the_rate_budget_refills_over_time() {
        let r = registry();
        let i = integration(IntegrationKind::Pagerduty, 10);
        assert!(r.admit(&i, 10).is_ok());
        assert!(r.admit(&i, 1).is_err(), "the second's budget is spent");
        assert!(
            r.admit(&integration(IntegrationKind::Pagerduty, 0), 1_000_000)
                .is_ok()
        );
    }

    /// A call larger than the burst was refused forever: it needed more tokens than the
    /// bucket ever holds.
    #[test]
    fn a_call_larger_than_the_burst_borrows_and_the_rate_still_holds() {
        let r = registry();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            r.take("prom", 5, 6, at(0)),
            Ok(()),
            "a full bucket admits 6 at 5/s"
        );
        // It borrowed one: the bucket is full again 1.2 s later, not before.
        let wait = r.take("prom", 5, 6, at(1)).unwrap_err();
        assert!(
            (1.15..=1.2).contains(&wait.as_secs_f64()),
            "told to wait {wait:?}"
        );
        assert!(r.take("prom", 5, 6, at(1100)).is_err());
        assert_eq!(r.take("prom", 5, 6, at(1200)), Ok(()));
        // Over 10 s of calls of 6, what is admitted stays within the rate (plus one burst).
        let mut admitted = 12;
        for ms in (1300..=11_200).step_by(100) {
            if r.take("prom", 5, 6, at(ms)).is_ok() {
                admitted += 6;
            }
        }
        assert!(admitted <= 5 * 11 + 6, "{admitted} alerts in 11.2 s at 5/s");
        assert!(admitted >= 5 * 10, "{admitted} alerts in 11.2 s at 5/s");
    }

    /// Keyless callers skipped every rate limit.
    #[test]
    fn keyless_callers_share_the_anonymous_budget() {
        let r = registry().with_anonymous_rate_limit(3);
        assert_eq!(r.admit_anonymous(3), Ok(()));
        assert!(r.admit_anonymous(1).is_err());
        assert_eq!(registry().admit_anonymous(1_000_000), Ok(()), "0: no limit");
    }

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), "abc");
        assert_eq!(bearer_token("bearer abc"), "abc");
        assert_eq!(bearer_token("BEARER   abc "), "abc");
        assert_eq!(bearer_token("Basic abc"), "");
        assert_eq!(bearer_token("abc"), "");
    }
}
