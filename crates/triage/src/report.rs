//! Reports over the incidents opened in a window: the store reads the facts
//! (`TriageStore::report_facts`), the domain computes the figures (`domain::report`), and
//! this turns them into the wire's `GetReportResponse`. Silenced alerts are intake's: they
//! stay 0 here (the CLI adds intake's counts).

use firebreak_domain::report::{GroupBy, Percentiles, Report, ReportGroup, parse_since};
use firebreak_proto::v1;

use crate::{Error, Triage};

/// The most incidents a report reads; past it the response says `truncated`.
pub(crate) const MAX_REPORT_INCIDENTS: u32 = 100_000;

impl Triage {
    /// The report over the incidents opened in the last `since` (`30d`…), grouped `by`.
    /// Bad `since` or `by` is refused naming the field, before the store is read.
    pub(crate) async fn report(
        &self,
        since: &str,
        by: &str,
    ) -> Result<v1::GetReportResponse, Error> {
        let window = parse_since(since)?;
        let by = GroupBy::parse(by)?;
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
            by: by.as_str().to_owned(),
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
