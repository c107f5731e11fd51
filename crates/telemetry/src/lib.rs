//! Firebreak's telemetry: the tracing subscriber (logs, OpenTelemetry spans and their export),
//! W3C trace context, and the Prometheus metrics every service updates.

pub mod gauges;
pub mod labels;
mod logs;
mod metrics;
pub mod otel;
mod process;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use gauges::{GaugeFamily, GaugeSource, Gauges, Reading};
pub use metrics::*;
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
