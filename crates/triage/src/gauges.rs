//! Triage's gauge for `/metrics`: its incidents not yet resolved, by severity and state, as
//! the store counts them through the index of states.

use std::sync::Arc;

use firebreak_domain::IncidentState;
use firebreak_storage::TriageStore;
use firebreak_telemetry::gauges::{GaugeFamily, GaugeSource, ReadFuture, Reading};

use crate::Triage;

impl Triage {
    /// The gauge source of this triage: its active incidents.
    pub fn gauges(&self) -> Arc<dyn GaugeSource> {
        Arc::new(OpenIncidents(self.store.clone()))
    }
}

struct OpenIncidents(Arc<dyn TriageStore>);

impl GaugeSource for OpenIncidents {
    fn name(&self) -> &'static str {
        "triage"
    }

    fn read(&self) -> ReadFuture<'_> {
        Box::pin(async move {
            let counts = self.0.count_active().await.map_err(|e| e.to_string())?;
            Ok(readings(&counts))
        })
    }
}

/// A sample for every severity (1…5) and active state, zero where the store counted none:
/// a series that vanished at zero would read as "no data" rather than "none open".
fn readings(counts: &[(u32, IncidentState, u64)]) -> Vec<Reading> {
    let mut out = Vec::with_capacity(15);
    for severity in 1..=5u32 {
        for state in IncidentState::ALL.into_iter().filter(|s| s.is_active()) {
            let n = counts
                .iter()
                .filter(|(sev, st, _)| *sev == severity && *st == state)
                .map(|(_, _, n)| *n)
                .sum::<u64>();
            out.push(Reading::new(
                GaugeFamily::IncidentsOpen,
                &[
                    ("severity", &severity.to_string()),
                    ("state", state.as_str()),
                ],
                i64::try_from(n).unwrap_or(i64::MAX),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_severity_and_active_state_has_a_sample_zero_filled() {
        let r = readings(&[
            (1, IncidentState::Open, 2),
            (3, IncidentState::Mitigated, 1),
            // Outside the scale: counted nowhere rather than as a new series.
            (9, IncidentState::Open, 4),
        ]);
        assert_eq!(r.len(), 15);
        let value = |severity: &str, state: &str| {
            r.iter()
                .find(|s| {
                    s.labels
                        == [
                            ("severity", severity.to_owned()),
                            ("state", state.to_owned()),
                        ]
                })
                .map(|s| s.value)
        };
        assert_eq!(value("1", "open"), Some(2));
        assert_eq!(value("3", "mitigated"), Some(1));
        assert_eq!(value("5", "acknowledged"), Some(0));
        assert_eq!(value("1", "resolved"), None);
        assert_eq!(value("9", "open"), None);
        assert_eq!(r.iter().map(|s| s.value).sum::<i64>(), 3);
    }
}
