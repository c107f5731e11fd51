//! Firebreak's telemetry: the tracing subscriber (logs, OpenTelemetry spans and their export),
//! W3C trace context, and the Prometheus metrics every service updates.

mod logs;
pub mod otel;
mod process;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use otel::{OtelConfig, SettingError};

/// How the process's telemetry is set up.
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// Log lines as JSON (with trace and span ids) instead of text.
    pub json: bool,
    /// The `service` of log lines and the default `service.name` of exported spans.
    pub service: String,
    /// The `otel:` configuration section.
    pub otel: OtelConfig,
    /// The environment's `OTEL_*` variables (and any others; the rest are ignored).
    pub env: BTreeMap<String, String>,
    /// The log filter when `RUST_LOG` is unset (`info`); `off` for none.
    pub default_log_filter: String,
}

/// The process's telemetry once set up: [`Telemetry::shutdown`] exports what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The export decided, or `None` when nothing is exported.
    pub export: Option<otel::Export>,
}

impl Telemetry {
    /// Exports the spans still buffered, waiting at most `timeout` for the collector.
    pub fn shutdown(&self, timeout: Duration) {
        if let (Some(p), Some(_)) = (&self.provider, &self.export)
            && let Err(e) = p.shutdown_with_timeout(timeout)
        {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// Firebreak's own spans (the `firebreak*` targets, at info and above): always made, whatever
/// the log filter, as they carry the trace context.
fn traced_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && *meta.level() <= tracing::Level::INFO
        && meta.target().starts_with("firebreak")
}

/// The one filter of the subscriber: Firebreak's spans, and whatever `RUST_LOG` asks for.
///
/// It is global on purpose. With per-layer filters, a library that asks `enabled!` and then
/// logs nothing (sqlx does, per query) leaves the per-layer state of its thread set, and the
/// next span there is then filtered out of OpenTelemetry's layer: its context is lost, and
/// the trace breaks (seen in distributed mode, on Postgres).
struct Wanted {
    log: EnvFilter,
}

impl<S> tracing_subscriber::Layer<S> for Wanted
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if traced_span(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing_subscriber::Layer::<S>::register_callsite(&self.log, meta)
        }
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        traced_span(meta) || tracing_subscriber::Layer::<S>::enabled(&self.log, meta, ctx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let log = tracing_subscriber::Layer::<S>::max_level_hint(&self.log);
        Some(log.map_or(tracing::level_filters::LevelFilter::TRACE, |l| {
            l.max(tracing::level_filters::LevelFilter::INFO)
        }))
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.log.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.log.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.log.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.log.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.log.on_close(id, ctx);
    }
}

/// Installs the global tracing subscriber: the log (`RUST_LOG` filters, text or JSON lines
/// with trace ids) and OpenTelemetry's layer, which gives every span a trace context and
/// exports the sampled ones when [`otel::decide`] finds an endpoint. A subscriber installed
/// already (a test's) is kept; the telemetry returned then exports nothing.
pub fn init(options: TelemetryOptions) -> Result<Telemetry, SettingError> {
    let export = otel::decide(&options.otel, &options.env, &options.service)?;
    let provider = otel::provider(export.as_ref())?;
    let tracer = provider.tracer("firebreak");
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_level(false)
        .with_target(false);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&options.default_log_filter));
    let log = if options.json {
        tracing_subscriber::fmt::layer()
            .event_format(logs::JsonLines {
                service: options.service.clone(),
            })
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(Wanted { log: filter })
        .with(otel_layer)
        .with(log)
        .try_init()
        .is_ok();
    if !installed {
        return Ok(Telemetry {
            provider: None,
            export: None,
        });
    }
    // The provider must outlive every span.
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    let _ = PROVIDER.set(provider.clone());
    Ok(Telemetry {
        provider: Some(provider),
        export,
    })
}

/// Installs a subscriber that gives spans their trace context, exporting nothing and logging
/// only what `RUST_LOG` asks for, unless one is installed already: for Firebreak run as a
/// library (tests), whose traces must still propagate.
pub fn ensure_trace_context() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = init(TelemetryOptions {
            service: "firebreak".to_owned(),
            default_log_filter: "off".to_owned(),
            ..Default::default()
        });
    });
}

/// A label set of one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// The running build, as `firebreak_build_info` labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    version: String,
}

/// A label set naming one dependency of a service (its database, the bus).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Dependency {
    pub dependency: String,
}

/// A label set of an incident's severity (`1`…`5`) and category: both bounded, by the scale
/// and by the configured taxonomy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    pub severity: String,
    pub category: String,
}

/// A histogram per severity and category.
pub type IncidentHistogram = Family<IncidentLabels, Histogram, fn() -> Histogram>;

/// The bucket bounds, in seconds, of time to acknowledge and to resolve: 10 s to a week.
pub const RESPONSE_BUCKETS: [f64; 15] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 28_800.0,
    86_400.0, 259_200.0, 604_800.0,
];

fn response_histogram() -> Histogram {
    Histogram::new(RESPONSE_BUCKETS)
}

/// The counters Firebreak exports at `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Alerts stored by intake.
    pub alerts_accepted: Counter,
    /// Calls intake turned away because too many were in flight.
    pub intake_overloaded: Counter,
    /// Incidents opened by triage.
    pub incidents_opened: Counter,
    /// Alerts attached to an open incident instead of opening one.
    pub alerts_deduplicated: Counter,
    /// Runbook runs that ended, by outcome (succeeded, failed).
    pub runs_finished: Family<OutcomeLabel, Counter>,
    /// Delivery attempts, by outcome (delivered, retry, failed).
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// 1 while a dependency answers its health check, 0 while it does not.
    pub dependency_up: Family<Dependency, Gauge>,
    /// Calls refused by the access layer (no, bad or insufficient credentials).
    pub auth_failures: Counter,
    /// Audit entries dropped before they were shipped, because more waited than the
    /// buffer holds.
    pub audit_dropped: Counter,
    /// Seconds from an incident's opening to its acknowledgement, observed by triage when it
    /// acknowledges one.
    pub time_to_acknowledge: IncidentHistogram,
    /// Seconds from an incident's opening to its resolve, observed by triage when it
    /// resolves one.
    pub time_to_resolve: IncidentHistogram,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        // Firebreak's own under `firebreak_`; the process's under the conventional `process_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("firebreak");
        let build_info = Family::<BuildInfo, Gauge>::default();
        build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the running build's version",
            build_info,
        );
        let m = Metrics {
            alerts_accepted: Counter::default(),
            intake_overloaded: Counter::default(),
            incidents_opened: Counter::default(),
            alerts_deduplicated: Counter::default(),
            runs_finished: Family::default(),
            deliveries: Family::default(),
            dependency_up: Family::default(),
            auth_failures: Counter::default(),
            audit_dropped: Counter::default(),
            time_to_acknowledge: Family::new_with_constructor(response_histogram),
            time_to_resolve: Family::new_with_constructor(response_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "alerts_accepted",
            "Alerts stored by intake",
            m.alerts_accepted.clone(),
        );
        registry.register(
            "intake_overloaded",
            "Calls intake turned away (RESOURCE_EXHAUSTED / 429) because too many were in flight",
            m.intake_overloaded.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened by triage",
            m.incidents_opened.clone(),
        );
        registry.register(
            "alerts_deduplicated",
            "Alerts attached to an open incident",
            m.alerts_deduplicated.clone(),
        );
        registry.register(
            "runs_finished",
            "Runbook runs that ended",
            m.runs_finished.clone(),
        );
        registry.register(
            "deliveries",
            "Notification delivery attempts",
            m.deliveries.clone(),
        );
        registry.register(
            "dependency_up",
            "1 while a dependency (database, NATS) answers the service's health check, else 0",
            m.dependency_up.clone(),
        );
        registry.register(
            "auth_failures",
            "Calls refused for missing, invalid or insufficient credentials",
            m.auth_failures.clone(),
        );
        registry.register(
            "audit_dropped",
            "Audit entries dropped unshipped because the buffer was full",
            m.audit_dropped.clone(),
        );
        registry.register(
            "incident_time_to_acknowledge_seconds",
            "Seconds from an incident's opening to its acknowledgement, by severity and category",
            m.time_to_acknowledge.clone(),
        );
        registry.register(
            "incident_time_to_resolve_seconds",
            "Seconds from an incident's opening to its resolve, by severity and category",
            m.time_to_resolve.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
    })
}

impl Metrics {
    /// Every metric in the OpenMetrics text format (`application/openmetrics-text;
    /// version=1.0.0`), what Prometheus asks for first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Every metric in the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), for
    /// scrapers and tools that ask for no OpenMetrics (`promtool check metrics`, curl).
    pub fn render_text(&self) -> String {
        prometheus_text(&self.render())
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
}
