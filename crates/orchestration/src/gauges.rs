//! Orchestration's gauges for `/metrics`: runs waiting for a person's approval and runs in a
//! durable sleep, as the store counts them through the index of run states.

use std::sync::Arc;

use firebreak_domain::RunState;
use firebreak_storage::OrchestrationStore;
use firebreak_telemetry::gauges::{GaugeFamily, GaugeSource, ReadFuture, Reading};

use crate::Orchestration;

impl Orchestration {
    /// The gauge source of this orchestration: its waiting and sleeping runs.
    pub fn gauges(&self) -> Arc<dyn GaugeSource> {
        Arc::new(WaitingRuns(self.store.clone()))
    }
}

struct WaitingRuns(Arc<dyn OrchestrationStore>);

/// Which gauge counts the runs in which state.
const COUNTED: [(GaugeFamily, RunState); 2] = [
    (GaugeFamily::ApprovalsPending, RunState::WaitingApproval),
    (GaugeFamily::RunsSleeping, RunState::Sleeping),
];

impl GaugeSource for WaitingRuns {
    fn name(&self) -> &'static str {
        "orchestration"
    }

    fn read(&self) -> ReadFuture<'_> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(COUNTED.len());
            for (family, state) in COUNTED {
                let n = self.0.count_runs(state).await.map_err(|e| e.to_string())?;
                out.push(Reading::new(
                    family,
                    &[],
                    i64::try_from(n).unwrap_or(i64::MAX),
                ));
            }
            Ok(out)
        })
    }
}
