//! Integrations: how a monitoring tool authenticates to intake (a routing key or bearer
//! token), and how its alerts are read (severity mapping, category hint, auto-resolve, rate).
//! Declared in the configuration (GitOps) or created at run time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_storage::{IntakeStore, IntegrationRecord};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    pub name: String,
    pub kind: IntegrationKind,
    /// The routing key (PagerDuty), path key or bearer token (Alertmanager, gRPC): at least
    /// 16 characters.
    pub key: String,
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
            key: new_key(),
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
        if self.key.len() < 16
            || self.key.len() > 128
            || !self.key.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "integration {}: the key must be 16 to 128 printable characters",
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
}

impl firebreak_proto::ServiceError for AuthError {
    fn error_code(&self) -> firebreak_proto::ErrorCode {
        match self {
            Self::WrongKind { .. } => firebreak_proto::ErrorCode::PermissionDenied,
            Self::Missing | Self::Unknown => firebreak_proto::ErrorCode::Unauthenticated,
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

/// Every integration: the configuration's, fixed, and the runtime ones from the store.
#[derive(Clone)]
pub struct Registry {
    declared: Arc<Vec<Integration>>,
    runtime: Arc<Mutex<HashMap<String, Integration>>>,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
    /// Alerts per second keyless gRPC callers may send together; 0 means no limit.
    anonymous_rate: u32,
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
    /// The registry of the configuration's integrations plus those in `store`.
    pub async fn load(
        declared: Vec<Integration>,
        store: &dyn IntakeStore,
    ) -> Result<Self, LoadError> {
        let mut names = std::collections::BTreeSet::new();
        let mut keys = std::collections::BTreeSet::new();
        for i in &declared {
            i.validate().map_err(LoadError::Invalid)?;
            if !names.insert(i.name.clone()) || !keys.insert(i.key.clone()) {
                return Err(LoadError::Invalid(format!(
                    "integration {}: its name or key is used twice",
                    i.name
                )));
            }
        }
        let mut runtime = HashMap::new();
        for r in store.integrations().await? {
            let i = from_record(&r).map_err(|reason| LoadError::Stored {
                name: r.name.clone(),
                reason,
            })?;
            runtime.insert(i.key.clone(), i);
        }
        Ok(Self {
            declared: Arc::new(declared),
            runtime: Arc::new(Mutex::new(runtime)),
            buckets: Arc::default(),
            anonymous_rate: 0,
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
        let found = self
            .declared
            .iter()
            .find(|i| constant_time_eq(&i.key, key))
            .cloned()
            .or_else(|| self.runtime.lock().ok().and_then(|r| r.get(key).cloned()))
            .ok_or(AuthError::Unknown)?;
        if found.kind != kind {
            return Err(AuthError::WrongKind {
                name: found.name,
                kind: found.kind,
            });
        }
        Ok(found)
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

    /// Every integration, declared ones first.
    pub fn all(&self) -> Vec<(Integration, bool)> {
        let mut out: Vec<(Integration, bool)> =
            self.declared.iter().cloned().map(|i| (i, true)).collect();
        let mut runtime: Vec<Integration> = self
            .runtime
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        runtime.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(runtime.into_iter().map(|i| (i, false)));
        out
    }

    /// True when a declared integration has this name.
    pub fn is_declared(&self, name: &str) -> bool {
        self.declared.iter().any(|i| i.name == name)
    }

    pub(crate) fn add_runtime(&self, i: Integration) {
        if let Ok(mut r) = self.runtime.lock() {
            r.insert(i.key.clone(), i);
        }
    }

    pub(crate) fn remove_runtime(&self, name: &str) {
        if let Ok(mut r) = self.runtime.lock() {
            r.retain(|_, i| i.name != name);
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

pub(crate) fn to_record(i: &Integration, now: firebreak_domain::Micros) -> IntegrationRecord {
    IntegrationRecord {
        name: i.name.clone(),
        kind: i.kind.as_str().to_owned(),
        key: i.key.clone(),
        settings: serde_json::to_value(i).unwrap_or_default(),
        created_at: now,
    }
}

fn from_record(r: &IntegrationRecord) -> Result<Integration, String> {
    serde_json::from_value(r.settings.clone()).map_err(|e| e.to_string())
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
        i.key = "short".into();
        assert!(i.validate().is_err());
    }

    fn registry() -> Registry {
        Registry {
            declared: Arc::new(Vec::new()),
            runtime: Arc::default(),
            buckets: Arc::default(),
            anonymous_rate: 0,
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
