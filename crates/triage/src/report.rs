//! Reports over the incidents opened in a window: the store reads the facts
//! (`TriageStore::report_facts`), the domain computes the figures (`domain::report`), and
//! this turns them into the wire's `GetReportResponse`. Silenced alerts are intake's: they
//! stay 0 here (the CLI adds intake's counts).

use firebreak_domain::report::{GroupBy, Percentiles, Report, ReportGroup, parse_since};
use firebreak_proto::v1;

use crate::{Error, Triage};

/// The most incidents a report reads; past it the response says `truncated`.
pub(crate) const MAX_REPORT_INCIDENTS: u32 = 100_000;
/// Reports a process computes at once (each may read that many incidents and their first
/// entries: about a second on Postgres); more are refused at once rather than queued.
pub(crate) const MAX_CONCURRENT_REPORTS: usize = 2;

impl Triage {
    /// The report over the incidents opened in the last `since` (`30d`…), grouped `by`.
    /// Bad `since` or `by` is refused naming the field, before the store is read.
    pub(crate) async fn report(
        &self,
        since: &str,
        by: GroupBy,
    ) -> Result<v1::GetReportResponse, Error> {
        let window = parse_since(since)?;
        let _permit = self
            .reports
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::ReportsBusy)?;
        let until = self.clock.now();
        let start = until - window;
        let facts = self
            .store
            .report_facts(start, MAX_REPORT_INCIDENTS + 1)
            .await?;
        let truncated = facts.len() > MAX_REPORT_INCIDENTS as usize;
        let facts = &facts[..facts.len().min(MAX_REPORT_INCIDENTS as usize)];
        let report = Report::build(by, facts);
        Ok(v1::GetReportResponse {
            group_by: firebreak_proto::wire_grouping(by) as i32,
            since: Some(firebreak_proto::timestamp(start)),
            until: Some(firebreak_proto::timestamp(until)),
            groups: report.groups.iter().map(group_to_proto).collect(),
            total: Some(group_to_proto(&report.total)),
            truncated,
        })
    }
}

fn percentiles(p: Option<Percentiles>) -> Option<v1::DurationPercentiles> {
    p.map(|p| v1::DurationPercentiles {
        p50: Some(firebreak_proto::duration(p.p50)),
        p90: Some(firebreak_proto::duration(p.p90)),
    })
}

pub(crate) fn group_to_proto(g: &ReportGroup) -> v1::ReportGroup {
    v1::ReportGroup {
        key: g.key.clone(),
        incidents: g.incidents,
        acknowledged: g.acknowledged,
        resolved: g.resolved,
        time_to_acknowledge: percentiles(g.mtta),
        time_to_resolve: percentiles(g.mttr),
        auto_remediated: g.auto_remediated,
        alerts: g.alerts,
        silenced: g.silenced,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use firebreak_bus::EmbeddedBus;
    use firebreak_storage::sqlite::{SqliteBusLog, SqliteTriageStore};

    use super::*;

    #[tokio::test]
    async fn reports_past_the_bound_are_refused_as_exhausted_and_bad_input_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteTriageStore::open(&dir.path().join("triage.db"), false)
            .await
            .unwrap();
        let log = SqliteBusLog::open(&dir.path().join("bus.db"), false)
            .await
            .unwrap();
        let triage = Triage::new(
            Arc::new(store),
            Arc::new(EmbeddedBus::new(Arc::new(log))),
            firebreak_domain::Taxonomy::default(),
            Arc::new(firebreak_domain::SystemClock),
        );
        let empty = triage.report("", GroupBy::Category).await.unwrap();
        assert_eq!(
            (empty.group_by(), empty.groups.len()),
            (v1::ReportGrouping::Category, 0)
        );
        assert_eq!(empty.total.unwrap().incidents, 0);
        let held: Vec<_> = (0..MAX_CONCURRENT_REPORTS)
            .map(|_| triage.reports.clone().try_acquire_owned().unwrap())
            .collect();
        let busy = triage.report("30d", GroupBy::Category).await.unwrap_err();
        assert!(matches!(busy, Error::ReportsBusy), "{busy:?}");
        assert_eq!(
            tonic::Status::from(busy).code(),
            tonic::Code::ResourceExhausted
        );
        // Bad input is refused naming the field, busy or not.
        let e = triage.report("soon", GroupBy::Category).await.unwrap_err();
        assert!(e.to_string().starts_with("invalid since"), "{e}");
        drop(held);
        assert!(triage.report("1h", GroupBy::Severity).await.is_ok());
    }
}
