//! Gauges read when scraped: each service of a process hands its [`Gauges`] a source (triage
//! its open incidents, orchestration its waiting runs, the bus its consumers' backlogs), and
//! `/metrics` reads them all, at most once a second and each within a time limit, so a
//! process shows the state of what it runs, and only that.
//!
//! The sources count with indexes (or ask NATS, which keeps the counts): a scrape never
//! scans a table. A source that fails or is late is left out of that scrape (its families
//! are absent, which Prometheus marks stale) rather than shown with old values;
//! `firebreak_dependency_up` says why.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// A gauge family some service reports.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum GaugeFamily {
    /// Triage: incidents not yet resolved, by `severity` and `state`.
    IncidentsOpen,
    /// Orchestration: runs waiting for a person's approval.
    ApprovalsPending,
    /// Orchestration: runs in a durable sleep.
    RunsSleeping,
    /// The bus: messages a consumer has not acknowledged yet, by `stream` and `consumer`.
    BusBacklog,
    /// The bus: messages a consumer gave up on (parked), by `stream` and `consumer`.
    BusParked,
}

impl GaugeFamily {
    /// Every family, in the order they are rendered.
    pub const ALL: [Self; 5] = [
        Self::IncidentsOpen,
        Self::ApprovalsPending,
        Self::RunsSleeping,
        Self::BusBacklog,
        Self::BusParked,
    ];

    /// The family's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::IncidentsOpen => "firebreak_incidents_open",
            Self::ApprovalsPending => "firebreak_approvals_pending",
            Self::RunsSleeping => "firebreak_runs_sleeping",
            Self::BusBacklog => "firebreak_bus_backlog",
            Self::BusParked => "firebreak_bus_parked",
        }
    }

    /// The family's help text.
    pub fn help(self) -> &'static str {
        match self {
            Self::IncidentsOpen => {
                "Incidents not yet resolved (open, acknowledged, mitigated), by severity and state"
            }
            Self::ApprovalsPending => "Runbook runs waiting for a person's approval",
            Self::RunsSleeping => "Runbook runs in a durable sleep",
            Self::BusBacklog => {
                "Messages of a stream its consumer has not acknowledged yet (JetStream: pending plus in flight)"
            }
            Self::BusParked => "Messages of a stream its consumer gave up on and parked",
        }
    }
}

/// One sample of a gauge family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub family: GaugeFamily,
    /// The labels, in the order they are rendered.
    pub labels: Vec<(&'static str, String)>,
    pub value: i64,
}

impl Reading {
    /// A sample of `family` with `labels`.
    pub fn new(family: GaugeFamily, labels: &[(&'static str, &str)], value: i64) -> Self {
        Self {
            family,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        }
    }
}

/// What a source's read returns: its samples, or why it has none.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Reading>, String>> + Send + 'a>>;

/// Something a service knows the state of.
pub trait GaugeSource: Send + Sync {
    /// Who reads (for logs): `triage`, `bus`, ….
    fn name(&self) -> &'static str;
    /// Reads the state now; cheap (indexed counts, a few requests).
    fn read(&self) -> ReadFuture<'_>;
}

/// How long one scrape's readings are served to the next scrapes.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// How long a source may take before a scrape goes on without it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The gauge sources of one process (one per service and bus it runs). Cheap to share.
#[derive(Default)]
pub struct Gauges {
    sources: Mutex<Vec<Arc<dyn GaugeSource>>>,
    /// The last readings and when they were made; held while reading, so scrapes that
    /// arrive together read once.
    last: tokio::sync::Mutex<Option<(Instant, Vec<Reading>)>>,
}

impl Gauges {
    /// Adds a source, read from the next scrape on.
    pub fn add(&self, source: Arc<dyn GaugeSource>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
        // The next scrape reads the new source at once.
        if let Ok(mut last) = self.last.try_lock() {
            *last = None;
        }
    }

    /// Every source's readings: those of the last scrape when it was less than [`MAX_AGE`]
    /// ago, else read now (all sources at once, each within [`READ_TIMEOUT`]).
    pub async fn read(&self) -> Vec<Reading> {
        let mut last = self.last.lock().await;
        if let Some((at, readings)) = &*last
            && at.elapsed() < MAX_AGE
        {
            return readings.clone();
        }
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let reads = sources.iter().map(|s| async move {
            match tokio::time::timeout(READ_TIMEOUT, s.read()).await {
                Ok(Ok(readings)) => readings,
                Ok(Err(e)) => {
                    tracing::warn!(source = s.name(), error = %e, "reading gauges failed; left out of this scrape");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(
                        source = s.name(),
                        timeout_ms = READ_TIMEOUT.as_millis() as u64,
                        "reading gauges timed out; left out of this scrape"
                    );
                    Vec::new()
                }
            }
        });
        let readings: Vec<Reading> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        *last = Some((Instant::now(), readings.clone()));
        readings
    }
}

/// A registry holding `readings` as gauge families (each family once, its samples in the
/// order read), to encode after the process's own.
pub(crate) fn registry_of(readings: &[Reading]) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(readings.to_vec())));
    registry
}

/// Readings as gauge families, in the order of [`GaugeFamily::ALL`] and, within one, as read
/// (a registered family would order its samples by hash).
#[derive(Debug)]
struct Snapshot(Vec<Reading>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in GaugeFamily::ALL {
            let samples: Vec<&Reading> = self.0.iter().filter(|r| r.family == family).collect();
            if samples.is_empty() {
                continue;
            }
            let help = format!("{}.", family.help());
            let mut metric =
                encoder.encode_descriptor(family.name(), &help, None, MetricType::Gauge)?;
            if let [one] = samples.as_slice()
                && one.labels.is_empty()
            {
                ConstGauge::new(one.value).encode(metric)?;
                continue;
            }
            for r in samples {
                let labels: Vec<(&str, &str)> =
                    r.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                ConstGauge::new(r.value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Counting {
        reads: AtomicU32,
        fail: bool,
        slow: bool,
    }

    impl GaugeSource for Counting {
        fn name(&self) -> &'static str {
            "test"
        }

        fn read(&self) -> ReadFuture<'_> {
            Box::pin(async move {
                let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
                if self.slow {
                    tokio::time::sleep(READ_TIMEOUT * 2).await;
                }
                if self.fail {
                    return Err("the database is away".to_owned());
                }
                Ok(vec![Reading::new(
                    GaugeFamily::RunsSleeping,
                    &[],
                    i64::from(n),
                )])
            })
        }
    }

    fn source(fail: bool, slow: bool) -> Arc<Counting> {
        Arc::new(Counting {
            reads: AtomicU32::new(0),
            fail,
            slow,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn scrapes_within_a_second_share_one_read_and_failing_sources_are_left_out() {
        let gauges = Gauges::default();
        let good = source(false, false);
        gauges.add(good.clone());
        gauges.add(source(true, false));
        gauges.add(source(false, true));
        let first = gauges.read().await;
        assert_eq!(
            first,
            vec![Reading::new(GaugeFamily::RunsSleeping, &[], 1)],
            "the failing and the late source are left out"
        );
        assert_eq!(gauges.read().await, first);
        assert_eq!(good.reads.load(Ordering::SeqCst), 1);
        tokio::time::advance(MAX_AGE).await;
        assert_eq!(
            gauges.read().await,
            vec![Reading::new(GaugeFamily::RunsSleeping, &[], 2)]
        );
    }

    #[test]
    fn readings_render_as_one_gauge_family_each() {
        let readings = [
            Reading::new(
                GaugeFamily::BusBacklog,
                &[("stream", "alerts"), ("consumer", "triage")],
                3,
            ),
            Reading::new(GaugeFamily::ApprovalsPending, &[], 0),
            Reading::new(
                GaugeFamily::BusBacklog,
                &[("stream", "incidents"), ("consumer", "orchestration")],
                0,
            ),
        ];
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry_of(&readings)).unwrap();
        assert_eq!(
            text,
            "# HELP firebreak_approvals_pending Runbook runs waiting for a person's approval.\n\
             # TYPE firebreak_approvals_pending gauge\n\
             firebreak_approvals_pending 0\n\
             # HELP firebreak_bus_backlog Messages of a stream its consumer has not acknowledged yet (JetStream: pending plus in flight).\n\
             # TYPE firebreak_bus_backlog gauge\n\
             firebreak_bus_backlog{stream=\"alerts\",consumer=\"triage\"} 3\n\
             firebreak_bus_backlog{stream=\"incidents\",consumer=\"orchestration\"} 0\n\
             # EOF\n"
        );
    }
}
