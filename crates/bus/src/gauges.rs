//! The bus's gauges for `/metrics`: each consumer's backlog and parked messages, as
//! [`Bus::standing`] reads them, labelled by stream and consumer (both names from code).

use std::sync::Arc;

use firebreak_telemetry::gauges::{GaugeFamily, GaugeSource, ReadFuture, Reading};

use crate::{Bus, Standing};

/// The most events an embedded consumer's backlog counts: past it the count would walk too
/// many rows for a scrape (the gauge then stays at the cap until the consumer catches up).
pub const BACKLOG_CAP: u64 = 100_000;

/// The gauge source of `bus`: the consumers it has served in this process.
pub fn gauges(bus: Arc<dyn Bus>) -> Arc<dyn GaugeSource> {
    Arc::new(BusGauges(bus))
}

struct BusGauges(Arc<dyn Bus>);

impl GaugeSource for BusGauges {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn read(&self) -> ReadFuture<'_> {
        Box::pin(async move {
            let standing = self.0.standing().await.map_err(|e| e.to_string())?;
            Ok(readings(&standing))
        })
    }
}

/// The backlog and parked samples of each consumer, in stream then consumer order.
fn readings(standing: &[Standing]) -> Vec<Reading> {
    let mut sorted: Vec<&Standing> = standing.iter().collect();
    sorted.sort_by(|a, b| (&a.stream, &a.consumer).cmp(&(&b.stream, &b.consumer)));
    let mut out = Vec::with_capacity(sorted.len() * 2);
    for (family, value) in [
        (
            GaugeFamily::BusBacklog,
            (|s: &Standing| s.backlog) as fn(&Standing) -> u64,
        ),
        (GaugeFamily::BusParked, |s: &Standing| s.parked),
    ] {
        for s in &sorted {
            out.push(Reading::new(
                family,
                &[("stream", &s.stream), ("consumer", &s.consumer)],
                i64::try_from(value(s)).unwrap_or(i64::MAX),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_consumer_has_a_backlog_and_a_parked_sample() {
        let standing = [
            Standing {
                stream: "incidents".into(),
                consumer: "orchestration".into(),
                backlog: 2,
                parked: 0,
            },
            Standing {
                stream: "alerts".into(),
                consumer: "triage".into(),
                backlog: 0,
                parked: 1,
            },
        ];
        let r = readings(&standing);
        let sample = |family, stream: &str, consumer: &str, value| {
            Reading::new(family, &[("stream", stream), ("consumer", consumer)], value)
        };
        assert_eq!(
            r,
            vec![
                sample(GaugeFamily::BusBacklog, "alerts", "triage", 0),
                sample(GaugeFamily::BusBacklog, "incidents", "orchestration", 2),
                sample(GaugeFamily::BusParked, "alerts", "triage", 1),
                sample(GaugeFamily::BusParked, "incidents", "orchestration", 0),
            ]
        );
        assert!(readings(&[]).is_empty());
    }
}
