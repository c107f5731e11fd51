//! Firebreak's Prometheus metrics: the families every service updates, the buckets of each
//! histogram, and the two renderings `/metrics` serves (OpenMetrics, Prometheus text 0.0.4).
//!
//! **Counters belong to the service that counts them.** A family of one service (intake's
//! acknowledgement latency, triage's incidents opened, …) is registered in a process only
//! once that process runs the service ([`Metrics::serve`]), so in distributed mode triage's
//! `/metrics` holds triage's families and never intake's zeros. The families every process
//! updates (build, process, dependencies, credentials refused, server requests) are always
//! there.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::gauges::Reading;
use crate::labels::BuildInfo;
pub use crate::labels::{
    AckLabels, AckOutcome, AlertToIncidentLabels, ChannelLabels, Dependency, GrpcLabels,
    HttpLabels, IncidentLabels, OutcomeLabel, RunLabels, StepLabels, Transport,
};

/// The services, as owners of metric families.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Intake,
    Triage,
    Orchestration,
    Notification,
}

impl Owner {
    /// Every service, as `firebreak up` runs them.
    pub const ALL: [Self; 4] = [
        Self::Intake,
        Self::Triage,
        Self::Orchestration,
        Self::Notification,
    ];
}

/// A histogram family with its buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A histogram per severity and category.
pub type IncidentHistogram = HistogramFamily<IncidentLabels>;

/// Time to acknowledge and to resolve: 10 s to a week (people answer pages in minutes,
/// incidents are resolved in hours, some in days).
pub const RESPONSE_BUCKETS: [f64; 15] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 28_800.0,
    86_400.0, 259_200.0, 604_800.0,
];

/// Intake's acknowledgement: 1 ms to 10 s. A call is answered after its group commit
/// (milliseconds); `RaiseIncident` also waits for triage's answer, which it gives up on
/// after 5 s, so that bound has a bucket.
pub const ACK_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Alert to incident: 5 ms to 15 min. Through the bus an alert is decided in milliseconds;
/// a backlog (a storm, triage down) shows as minutes.
pub const ALERT_TO_INCIDENT_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// A runbook step: 1 ms to 5 min. Incident operations and notifications are a journal
/// write (milliseconds); HTTP calls, Kubernetes operations and commands take seconds, with
/// retries up to their time limits (minutes).
pub const STEP_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A runbook run, from creation to its end: 100 ms to a day, as runs wait for approvals
/// and sleep durably (hours).
pub const RUN_BUCKETS: [f64; 13] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1_800.0, 3_600.0, 14_400.0, 86_400.0,
];

/// A delivery, from its creation to delivered or sent: 50 ms to an hour. A chat message or
/// webhook goes in well under a second; retries back off (with `Retry-After`) to minutes.
pub const DELIVERY_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0,
];

/// A gRPC or HTTP request to the servers: 1 ms to 30 s (the default request timeout).
pub const REQUEST_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn response_histogram() -> Histogram {
    Histogram::new(RESPONSE_BUCKETS)
}
fn ack_histogram() -> Histogram {
    Histogram::new(ACK_BUCKETS)
}
fn alert_to_incident_histogram() -> Histogram {
    Histogram::new(ALERT_TO_INCIDENT_BUCKETS)
}
fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}
fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}
fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_BUCKETS)
}
fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn histograms<L>(buckets: fn() -> Histogram) -> HistogramFamily<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(buckets)
}

/// The metrics Firebreak exports at `/metrics`.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The services whose families are registered.
    served: Mutex<BTreeSet<Owner>>,

    // Every process.
    /// 1 while a dependency answers its health check, 0 while it does not.
    pub dependency_up: Family<Dependency, Gauge>,
    /// Calls refused by the access layer (no, bad or insufficient credentials).
    pub auth_failures: Counter,
    /// Audit entries dropped before they were shipped, because more waited than the
    /// buffer holds.
    pub audit_dropped: Counter,
    /// gRPC requests served, by service, method and status code.
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// Seconds from a gRPC request's arrival to its response's headers.
    pub grpc_duration: HistogramFamily<GrpcLabels>,
    /// HTTP requests served, by method, route and status class.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Seconds from an HTTP request's arrival to its response's headers.
    pub http_duration: HistogramFamily<HttpLabels>,

    // Intake.
    /// Alerts stored by intake.
    pub alerts_accepted: Counter,
    /// Calls intake turned away because too many were in flight.
    pub intake_overloaded: Counter,
    /// Seconds from a call or webhook carrying signals reaching intake to its answer.
    pub intake_ack: HistogramFamily<AckLabels>,

    // Triage.
    /// Incidents opened by triage.
    pub incidents_opened: Counter,
    /// Alerts attached to an open incident instead of opening one.
    pub alerts_deduplicated: Counter,
    /// Seconds from an incident's opening to its acknowledgement, observed by triage when it
    /// acknowledges one.
    pub time_to_acknowledge: IncidentHistogram,
    /// Seconds from an incident's opening to its resolve, observed by triage when it
    /// resolves one.
    pub time_to_resolve: IncidentHistogram,
    /// Seconds from an alert's arrival at intake to triage opening or joining its incident.
    pub alert_to_incident: HistogramFamily<AlertToIncidentLabels>,

    // Orchestration.
    /// Runbook runs that ended, by outcome (succeeded, failed, rejected).
    pub runs_finished: Family<OutcomeLabel, Counter>,
    /// Seconds from a run's creation to its end, by runbook and outcome.
    pub run_duration: HistogramFamily<RunLabels>,
    /// Seconds a runbook step took to perform, by action and outcome.
    pub step_duration: HistogramFamily<StepLabels>,

    // Notification.
    /// Delivery attempts, by outcome (delivered, sent, retry, failed, throttled).
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Seconds from a delivery's creation to its being delivered or sent, by channel kind.
    pub delivery_latency: HistogramFamily<ChannelLabels>,
}

/// A family as registered: its name, help, and a handle on it.
type Registered = (&'static str, &'static str, Boxed);

/// A handle on a family of any type, as the registry takes it.
#[derive(Debug)]
struct Boxed(Box<dyn Metric>);

impl EncodeMetric for Boxed {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Metrics {
    fn new() -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            served: Mutex::new(BTreeSet::new()),
            dependency_up: Family::default(),
            auth_failures: Counter::default(),
            audit_dropped: Counter::default(),
            grpc_requests: Family::default(),
            grpc_duration: histograms(request_histogram),
            http_requests: Family::default(),
            http_duration: histograms(request_histogram),
            alerts_accepted: Counter::default(),
            intake_overloaded: Counter::default(),
            intake_ack: histograms(ack_histogram),
            incidents_opened: Counter::default(),
            alerts_deduplicated: Counter::default(),
            time_to_acknowledge: histograms(response_histogram),
            time_to_resolve: histograms(response_histogram),
            alert_to_incident: histograms(alert_to_incident_histogram),
            runs_finished: Family::default(),
            run_duration: histograms(run_histogram),
            step_duration: histograms(step_histogram),
            deliveries: Family::default(),
            delivery_latency: histograms(delivery_histogram),
        }
    }

    /// The families every process exports.
    fn common(&self) -> Vec<Registered> {
        vec![
            (
                "firebreak_dependency_up",
                "1 while a dependency (database, NATS) answers the service's health check, else 0",
                Boxed(Box::new(self.dependency_up.clone())),
            ),
            (
                "firebreak_auth_failures",
                "Calls refused for missing, invalid or insufficient credentials",
                Boxed(Box::new(self.auth_failures.clone())),
            ),
            (
                "firebreak_audit_dropped",
                "Audit entries dropped unshipped because the buffer was full",
                Boxed(Box::new(self.audit_dropped.clone())),
            ),
            (
                "firebreak_grpc_server_requests",
                "gRPC requests served, by service, method and status code",
                Boxed(Box::new(self.grpc_requests.clone())),
            ),
            (
                "firebreak_grpc_server_request_duration_seconds",
                "Seconds from a gRPC request's arrival to its response headers, by service, method and status code",
                Boxed(Box::new(self.grpc_duration.clone())),
            ),
            (
                "firebreak_http_server_requests",
                "HTTP requests served, by method, matched route and status class",
                Boxed(Box::new(self.http_requests.clone())),
            ),
            (
                "firebreak_http_server_request_duration_seconds",
                "Seconds from an HTTP request's arrival to its response headers, by method, matched route and status class",
                Boxed(Box::new(self.http_duration.clone())),
            ),
        ]
    }

    /// The families of `owner`.
    fn owned(&self, owner: Owner) -> Vec<Registered> {
        match owner {
            Owner::Intake => vec![
                (
                    "firebreak_alerts_accepted",
                    "Alerts stored by intake",
                    Boxed(Box::new(self.alerts_accepted.clone())),
                ),
                (
                    "firebreak_intake_overloaded",
                    "Calls intake turned away (RESOURCE_EXHAUSTED / 429) because too many were in flight",
                    Boxed(Box::new(self.intake_overloaded.clone())),
                ),
                (
                    "firebreak_intake_ack_seconds",
                    "Seconds from a call or webhook carrying signals reaching intake to its answer, by transport and outcome",
                    Boxed(Box::new(self.intake_ack.clone())),
                ),
            ],
            Owner::Triage => vec![
                (
                    "firebreak_incidents_opened",
                    "Incidents opened by triage",
                    Boxed(Box::new(self.incidents_opened.clone())),
                ),
                (
                    "firebreak_alerts_deduplicated",
                    "Alerts attached to an open incident",
                    Boxed(Box::new(self.alerts_deduplicated.clone())),
                ),
                (
                    "firebreak_incident_time_to_acknowledge_seconds",
                    "Seconds from an incident's opening to its acknowledgement, by severity and category",
                    Boxed(Box::new(self.time_to_acknowledge.clone())),
                ),
                (
                    "firebreak_incident_time_to_resolve_seconds",
                    "Seconds from an incident's opening to its resolve, by severity and category",
                    Boxed(Box::new(self.time_to_resolve.clone())),
                ),
                (
                    "firebreak_alert_to_incident_seconds",
                    "Seconds from an alert's arrival at intake to triage opening or joining its incident, by outcome",
                    Boxed(Box::new(self.alert_to_incident.clone())),
                ),
            ],
            Owner::Orchestration => vec![
                (
                    "firebreak_runs_finished",
                    "Runbook runs that ended",
                    Boxed(Box::new(self.runs_finished.clone())),
                ),
                (
                    "firebreak_runbook_run_duration_seconds",
                    "Seconds from a runbook run's creation to its end, by runbook and outcome",
                    Boxed(Box::new(self.run_duration.clone())),
                ),
                (
                    "firebreak_runbook_step_duration_seconds",
                    "Seconds a runbook step took to perform, by action and outcome",
                    Boxed(Box::new(self.step_duration.clone())),
                ),
            ],
            Owner::Notification => vec![
                (
                    "firebreak_deliveries",
                    "Notification delivery attempts",
                    Boxed(Box::new(self.deliveries.clone())),
                ),
                (
                    "firebreak_delivery_latency_seconds",
                    "Seconds from a delivery's creation to its being delivered or sent, by channel kind",
                    Boxed(Box::new(self.delivery_latency.clone())),
                ),
            ],
        }
    }

    /// Exports `owner`'s families from now on: the process runs that service. Once per
    /// service; later calls change nothing.
    pub fn serve(&self, owner: Owner) {
        let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
        if !served.insert(owner) {
            return;
        }
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, help, metric) in self.owned(owner) {
            registry.register(name, help, metric);
        }
    }

    /// The services whose families this process exports.
    pub fn served(&self) -> Vec<Owner> {
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Every metric in the OpenMetrics text format (`application/openmetrics-text;
    /// version=1.0.0`), what Prometheus asks for first.
    pub fn render(&self) -> String {
        self.render_with(&[])
    }

    /// [`Metrics::render`] with the gauges read for this scrape after the process's own.
    pub fn render_with(&self, gauges: &[Reading]) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = {
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            encode_registry(&mut out, &registry)
        }
        .and_then(|()| encode_registry(&mut out, &crate::gauges::registry_of(gauges)))
        .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }

    /// Every metric in the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), for
    /// scrapers and tools that ask for no OpenMetrics (`promtool check metrics`, curl).
    pub fn render_text(&self) -> String {
        prometheus_text(&self.render())
    }

    /// [`Metrics::render_text`] with the gauges read for this scrape.
    pub fn render_text_with(&self, gauges: &[Reading]) -> String {
        prometheus_text(&self.render_with(gauges))
    }

    /// Records whether `dependency` answers.
    pub fn set_dependency_up(&self, dependency: &str, up: bool) {
        self.dependency_up
            .get_or_create(&Dependency {
                dependency: dependency.to_owned(),
            })
            .set(i64::from(up));
    }

    /// Observes `seconds` in `family` for an incident of `severity` (its level) and
    /// `category`.
    pub fn observe_incident(
        family: &IncidentHistogram,
        severity: u32,
        category: &str,
        seconds: f64,
    ) {
        family
            .get_or_create(&IncidentLabels {
                severity: severity.to_string(),
                category: category.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts one outcome in `family`.
    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Observes intake answering a call or webhook of `transport` with `outcome` after
    /// `took`.
    pub fn observe_ack(&self, transport: Transport, outcome: AckOutcome, took: Duration) {
        self.intake_ack
            .get_or_create(&AckLabels {
                transport: transport.as_str(),
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Observes an alert received at `received_at` (seconds since the epoch, by intake's
    /// clock) having opened (`opened`) or joined its incident at `now` (by triage's). A
    /// clock behind intake's counts as no time at all.
    pub fn observe_alert_to_incident(&self, opened: bool, received_at: f64, now: f64) {
        self.alert_to_incident
            .get_or_create(&AlertToIncidentLabels {
                outcome: if opened { "opened" } else { "attached" },
            })
            .observe(elapsed(received_at, now));
    }

    /// Observes a runbook step of `action` (already bounded) ending with `outcome` after
    /// `took`.
    pub fn observe_step(&self, action: &'static str, outcome: &'static str, took: Duration) {
        self.step_duration
            .get_or_create(&StepLabels { action, outcome })
            .observe(took.as_secs_f64());
    }

    /// Observes a run of `runbook` finishing in state `outcome`, `seconds` after it was
    /// created.
    pub fn observe_run(&self, runbook: &str, outcome: &str, seconds: f64) {
        self.run_duration
            .get_or_create(&RunLabels {
                runbook: runbook.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    /// Observes a delivery on a channel of `kind` delivered or sent `seconds` after it was
    /// created.
    pub fn observe_delivery(&self, kind: &str, seconds: f64) {
        self.delivery_latency
            .get_or_create(&ChannelLabels {
                kind: kind.to_owned(),
            })
            .observe(seconds.max(0.0));
    }

    /// Counts and times a gRPC request.
    pub fn observe_grpc(&self, labels: GrpcLabels, took: Duration) {
        self.grpc_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.grpc_requests.get_or_create(&labels).inc();
    }

    /// Counts and times an HTTP request.
    pub fn observe_http(&self, labels: HttpLabels, took: Duration) {
        self.http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
    }
}

/// Seconds from `from` to `to`, none when `to` is earlier (clocks of two machines).
fn elapsed(from: f64, to: f64) -> f64 {
    let d = to - from;
    if d.is_finite() && d > 0.0 { d } else { 0.0 }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = Metrics::new();
        {
            let mut registry = m.registry.lock().unwrap_or_else(PoisonError::into_inner);
            // Firebreak's own under `firebreak_`; the process's under the conventional
            // `process_`.
            registry.register_collector(Box::new(crate::process::ProcessCollector));
            let build_info = Family::<BuildInfo, Gauge>::default();
            build_info
                .get_or_create(&BuildInfo {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                })
                .set(1);
            registry.register(
                "firebreak_build_info",
                "1, labelled with the running build's version",
                build_info,
            );
            for (name, help, metric) in m.common() {
                registry.register(name, help, metric);
            }
        }
        m
    })
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition: a counter family is
/// named as its samples are (`x_total`: OpenMetrics names the family `x`), `# UNIT` lines and
/// the closing `# EOF` go, everything else is the same in both formats.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_text_names_counter_families_as_their_samples_and_ends_without_eof() {
        let om = "# HELP firebreak_x Things.\n# TYPE firebreak_x counter\n# UNIT firebreak_x things\nfirebreak_x_total{a=\"1\"} 2\n# HELP firebreak_up Up.\n# TYPE firebreak_up gauge\nfirebreak_up 1\n# HELP firebreak_done_total Done.\n# TYPE firebreak_done_total counter\nfirebreak_done_total 3\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP firebreak_x_total Things.\n# TYPE firebreak_x_total counter\nfirebreak_x_total{a=\"1\"} 2\n# HELP firebreak_up Up.\n# TYPE firebreak_up gauge\nfirebreak_up 1\n# HELP firebreak_done_total Done.\n# TYPE firebreak_done_total counter\nfirebreak_done_total 3\n"
        );
        // The process's own: every counter family named with `_total`, no `# EOF`.
        metrics().serve(Owner::Intake);
        let text = metrics().render_text();
        assert!(
            text.contains("# TYPE firebreak_alerts_accepted_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert!(metrics().render().ends_with("# EOF\n"));
    }

    #[test]
    fn response_times_are_prometheus_histograms_by_severity_and_category() {
        let m = metrics();
        m.serve(Owner::Triage);
        Metrics::observe_incident(&m.time_to_acknowledge, 2, "malware-test", 45.0);
        Metrics::observe_incident(&m.time_to_acknowledge, 2, "malware-test", 700.0);
        let text = m.render();
        let family = "firebreak_incident_time_to_acknowledge_seconds";
        let labels = "severity=\"2\",category=\"malware-test\"";
        assert!(
            text.contains(&format!("# TYPE {family} histogram")),
            "{text}"
        );
        for (le, count) in [
            ("30.0", 0),
            ("60.0", 1),
            ("600.0", 1),
            ("900.0", 2),
            ("+Inf", 2),
        ] {
            let want = format!("{family}_bucket{{le=\"{le}\",{labels}}} {count}\n");
            assert!(text.contains(&want), "{want} in {text}");
        }
        assert!(
            text.contains(&format!("{family}_sum{{{labels}}} 745.0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{family}_count{{{labels}}} 2\n")),
            "{text}"
        );
        Metrics::observe_incident(&m.time_to_resolve, 1, "malware-test", 7_200.0);
        let text = m.render();
        let family = "firebreak_incident_time_to_resolve_seconds";
        let labels = "severity=\"1\",category=\"malware-test\"";
        assert!(
            text.contains(&format!("# TYPE {family} histogram")),
            "{text}"
        );
        for (le, count) in [("3600.0", 0), ("7200.0", 1), ("+Inf", 1)] {
            let want = format!("{family}_bucket{{le=\"{le}\",{labels}}} {count}\n");
            assert!(text.contains(&want), "{want} in {text}");
        }
    }

    #[test]
    fn dependency_state_is_exported() {
        metrics().set_dependency_up("nats", false);
        metrics().set_dependency_up("postgres", true);
        let text = metrics().render();
        assert!(
            text.contains("firebreak_dependency_up{dependency=\"nats\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("firebreak_dependency_up{dependency=\"postgres\"} 1"),
            "{text}"
        );
    }

    /// Every bucket list is what Prometheus needs (finite, positive, strictly increasing)
    /// and small (each bucket is a series per label set).
    #[test]
    fn bucket_bounds_are_increasing_and_few() {
        let lists: [(&str, &[f64]); 7] = [
            ("response", &RESPONSE_BUCKETS),
            ("ack", &ACK_BUCKETS),
            ("alert_to_incident", &ALERT_TO_INCIDENT_BUCKETS),
            ("step", &STEP_BUCKETS),
            ("run", &RUN_BUCKETS),
            ("delivery", &DELIVERY_BUCKETS),
            ("request", &REQUEST_BUCKETS),
        ];
        for (name, bounds) in lists {
            assert!(bounds.len() <= 16, "{name}: {} buckets", bounds.len());
            assert!(bounds.iter().all(|b| b.is_finite() && *b > 0.0), "{name}");
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }

    /// The bounds that matter to someone reading each histogram are bucket edges: intake's
    /// wait for triage (5 s), a step's default HTTP timeout scale (30 s), a day of a run, a
    /// request timeout (30 s), an hour of a delivery's retries.
    #[test]
    fn the_bounds_people_ask_about_are_bucket_edges() {
        assert!(ACK_BUCKETS.contains(&5.0));
        assert!(ACK_BUCKETS.contains(&0.01), "10 ms: the commit budget");
        assert!(ALERT_TO_INCIDENT_BUCKETS.contains(&1.0));
        assert!(ALERT_TO_INCIDENT_BUCKETS.contains(&60.0));
        assert!(STEP_BUCKETS.contains(&30.0));
        assert!(RUN_BUCKETS.contains(&86_400.0));
        assert!(REQUEST_BUCKETS.contains(&30.0));
        assert!(DELIVERY_BUCKETS.contains(&3_600.0));
        assert!(RESPONSE_BUCKETS.contains(&300.0), "5 min to acknowledge");
    }

    #[test]
    fn alert_to_incident_counts_no_negative_time() {
        assert_eq!(elapsed(10.0, 12.5), 2.5);
        assert_eq!(elapsed(10.0, 9.0), 0.0, "triage's clock behind intake's");
        assert_eq!(elapsed(f64::NAN, 9.0), 0.0);
    }

    /// A process exports the families of the services it runs and the common ones, never
    /// another service's: checked on a fresh `Metrics`, as a `firebreak serve triage`
    /// process starts.
    #[test]
    fn a_process_exports_only_the_families_of_the_services_it_runs() {
        let m = Metrics::new();
        {
            let mut registry = m.registry.lock().unwrap();
            for (name, help, metric) in m.common() {
                registry.register(name, help, metric);
            }
        }
        m.serve(Owner::Triage);
        m.serve(Owner::Triage);
        m.alerts_accepted.inc();
        m.incidents_opened.inc();
        let text = m.render_text();
        assert!(text.contains("# TYPE firebreak_incidents_opened_total counter"));
        assert!(text.contains("# TYPE firebreak_alert_to_incident_seconds histogram"));
        assert!(text.contains("# TYPE firebreak_grpc_server_requests_total counter"));
        assert_eq!(
            text.matches("# TYPE firebreak_incidents_opened_total ")
                .count(),
            1,
            "registered once however often served"
        );
        for other in [
            "firebreak_alerts_accepted",
            "firebreak_intake_ack_seconds",
            "firebreak_runs_finished",
            "firebreak_deliveries",
        ] {
            assert!(!text.contains(other), "{other} in\n{text}");
        }
        assert_eq!(m.served(), vec![Owner::Triage]);
    }
}
