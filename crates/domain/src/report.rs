//! Incident reports: counts, time to acknowledge and resolve (nearest-rank p50/p90), the
//! share a runbook remediated alone, alerts per incident and silenced alerts, per group.
//!
//! The definitions live here, once, and docs/reports.md repeats them:
//! - an incident belongs to the window when it **opened** at or after its start;
//! - **time to acknowledge** is `acknowledged_at - opened_at`, over the incidents that were
//!   acknowledged; **time to resolve** is `resolved_at - opened_at`, over those resolved
//!   (closed ones included: they keep their resolve time);
//! - percentiles are **nearest-rank**: of `n` values sorted ascending, the p-th percentile
//!   is the value at rank `ceil(p × n / 100)` (1-based), so it is always a value that was
//!   observed; with no values there is none;
//! - an incident is **auto-remediated** when its first `resolved` timeline entry was written
//!   by a runbook (actor `runbook:NAME`) and no person (actor `user:NAME`) wrote any entry
//!   before it (acknowledged, noted, assigned a role, changed anything). Integrations,
//!   triage itself and service accounts are not people. The share is of all the group's
//!   incidents, resolved or not;
//! - **alerts per incident** is the alerts attached to the group's incidents (the opening
//!   one included) divided by its incidents;
//! - **silenced alerts** are triggers a silence kept from opening anything, received in the
//!   window, grouped by what they would have been: the category and severity the taxonomy
//!   gives them, their service and their integration.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Micros;
use crate::error::{Result, invalid};

/// The actor prefix of a person: their entries on a timeline mean a human acted.
pub const PERSON_ACTOR_PREFIX: &str = "user:";
/// The actor prefix of a runbook's entries.
pub const RUNBOOK_ACTOR_PREFIX: &str = "runbook:";
/// The label naming an incident's service; without it, its source is its service.
pub const SERVICE_LABEL: &str = "service";
/// The window a report covers unless asked otherwise.
pub const DEFAULT_SINCE: &str = "30d";
/// The longest window a report covers: a year and a day.
pub const MAX_SINCE: Duration = Duration::from_secs(366 * 86_400);
/// The most bytes of `since` or `by` read; longer text is refused unread.
const MAX_ARG: usize = 32;

/// What a report's rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GroupBy {
    #[default]
    Category,
    Severity,
    Service,
    Integration,
}

impl GroupBy {
    pub const ALL: [GroupBy; 4] = [
        GroupBy::Category,
        GroupBy::Severity,
        GroupBy::Service,
        GroupBy::Integration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Category => "category",
            Self::Severity => "severity",
            Self::Service => "service",
            Self::Integration => "integration",
        }
    }

    /// One of the names above (empty: category); anything else is refused naming `by`.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(Self::default());
        }
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == t)
            .ok_or_else(|| {
                invalid(
                    "by",
                    format!(
                        "{:?} is not category, severity, service or integration",
                        crate::clip(t, MAX_ARG)
                    ),
                )
            })
    }
}

/// A report's window, as text: a whole number of minutes, hours, days or weeks (`90m`,
/// `12h`, `30d`, `2w`), at least a minute and at most [`MAX_SINCE`]; empty means
/// [`DEFAULT_SINCE`]. Anything else is refused naming `since`.
pub fn parse_since(text: &str) -> Result<Duration> {
    let t = text.trim();
    let t = if t.is_empty() { DEFAULT_SINCE } else { t };
    let bad = || {
        invalid(
            "since",
            format!(
                "{:?} is not a window such as 90m, 12h, 30d or 2w",
                crate::clip(t, MAX_ARG)
            ),
        )
    };
    if t.len() > MAX_ARG {
        return Err(bad());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let unit = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let window = n
        .checked_mul(unit)
        .map(Duration::from_secs)
        .filter(|w| *w <= MAX_SINCE)
        .ok_or_else(|| invalid("since", format!("{t:?} is longer than 366 days")))?;
    if window.is_zero() {
        return Err(invalid("since", "the window must be at least a minute"));
    }
    Ok(window)
}

/// An incident's or alert's service: its `service` label, else its source.
pub fn service_of<'a>(labels: &'a BTreeMap<String, String>, source: &'a str) -> &'a str {
    labels
        .get(SERVICE_LABEL)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(source)
}

/// The group key of a severity level: `SEV1`…`SEV5` (they sort in order).
pub fn severity_key(level: u32) -> String {
    format!("SEV{level}")
}

/// What a report needs to know of one incident, as triage's store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentFacts {
    pub id: String,
    pub category: String,
    pub severity: u32,
    /// [`service_of`] its labels and source.
    pub service: String,
    pub integration: String,
    pub opened_at: Micros,
    pub acknowledged_at: Option<Micros>,
    pub resolved_at: Option<Micros>,
    /// Alerts attached to it, the opening one included.
    pub alert_count: u32,
    /// The sequence number and actor of its first `resolved` timeline entry.
    pub first_resolve: Option<(i64, String)>,
    /// The sequence number of its first timeline entry by a person
    /// ([`PERSON_ACTOR_PREFIX`]).
    pub first_person_entry: Option<i64>,
}

impl IncidentFacts {
    pub fn time_to_acknowledge(&self) -> Option<Duration> {
        self.acknowledged_at
            .map(|at| at.saturating_duration_since(self.opened_at))
    }

    pub fn time_to_resolve(&self) -> Option<Duration> {
        self.resolved_at
            .map(|at| at.saturating_duration_since(self.opened_at))
    }

    /// Resolved first by a runbook, before any person acted on it.
    pub fn auto_remediated(&self) -> bool {
        match &self.first_resolve {
            Some((seq, actor)) => {
                actor.starts_with(RUNBOOK_ACTOR_PREFIX)
                    && self.first_person_entry.is_none_or(|p| p > *seq)
            }
            None => false,
        }
    }

    /// The group it falls in.
    pub fn key(&self, by: GroupBy) -> String {
        match by {
            GroupBy::Category => self.category.clone(),
            GroupBy::Severity => severity_key(self.severity),
            GroupBy::Service => self.service.clone(),
            GroupBy::Integration => self.integration.clone(),
        }
    }
}

/// Silenced alerts of one kind, as intake's store counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilencedCount {
    pub integration: String,
    pub service: String,
    /// What the taxonomy would have made of them.
    pub category: String,
    pub severity: u32,
    pub count: u64,
}

impl SilencedCount {
    pub fn key(&self, by: GroupBy) -> String {
        match by {
            GroupBy::Category => self.category.clone(),
            GroupBy::Severity => severity_key(self.severity),
            GroupBy::Service => self.service.clone(),
            GroupBy::Integration => self.integration.clone(),
        }
    }
}

/// Silenced alerts per group key.
pub fn silenced_by_group(by: GroupBy, counts: &[SilencedCount]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in counts {
        *out.entry(c.key(by)).or_insert(0) += c.count;
    }
    out
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of values sorted ascending: the value
/// at rank `ceil(p × n / 100)`, counting from 1. `None` without values.
pub fn nearest_rank(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p.clamp(1, 100)) * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

/// p50 and p90 of some durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
}

impl Percentiles {
    /// Of `values` in any order; `None` without values.
    pub fn of(mut values: Vec<Duration>) -> Option<Self> {
        values.sort_unstable();
        Some(Self {
            p50: nearest_rank(&values, 50)?,
            p90: nearest_rank(&values, 90)?,
        })
    }
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportGroup {
    /// The category, `SEV1`…, service or integration (empty: none).
    pub key: String,
    pub incidents: u64,
    pub acknowledged: u64,
    pub resolved: u64,
    /// Time to acknowledge, over the acknowledged incidents.
    pub mtta: Option<Percentiles>,
    /// Time to resolve, over the resolved incidents.
    pub mttr: Option<Percentiles>,
    pub auto_remediated: u64,
    /// Alerts attached to the group's incidents.
    pub alerts: u64,
    /// Silenced alerts of the group.
    pub silenced: u64,
}

impl ReportGroup {
    /// Auto-remediated incidents over all incidents; `None` without incidents.
    pub fn auto_remediated_share(&self) -> Option<f64> {
        (self.incidents > 0).then(|| self.auto_remediated as f64 / self.incidents as f64)
    }

    /// Alerts over incidents; `None` without incidents.
    pub fn alerts_per_incident(&self) -> Option<f64> {
        (self.incidents > 0).then(|| self.alerts as f64 / self.incidents as f64)
    }

    fn of<'a>(key: String, incidents: impl IntoIterator<Item = &'a IncidentFacts>) -> Self {
        let mut g = Self {
            key,
            ..Self::default()
        };
        let (mut tta, mut ttr) = (Vec::new(), Vec::new());
        for i in incidents {
            g.incidents += 1;
            g.alerts += u64::from(i.alert_count);
            g.auto_remediated += u64::from(i.auto_remediated());
            tta.extend(i.time_to_acknowledge());
            ttr.extend(i.time_to_resolve());
        }
        g.acknowledged = tta.len() as u64;
        g.resolved = ttr.len() as u64;
        g.mtta = Percentiles::of(tta);
        g.mttr = Percentiles::of(ttr);
        g
    }
}

/// A report: one group per key, in key order, and the total over all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub by: GroupBy,
    pub groups: Vec<ReportGroup>,
    pub total: ReportGroup,
}

impl Report {
    /// The figures of `incidents` grouped `by`.
    pub fn build(by: GroupBy, incidents: &[IncidentFacts]) -> Self {
        let mut keyed: BTreeMap<String, Vec<&IncidentFacts>> = BTreeMap::new();
        for i in incidents {
            keyed.entry(i.key(by)).or_default().push(i);
        }
        Self {
            by,
            groups: keyed
                .into_iter()
                .map(|(key, list)| ReportGroup::of(key, list))
                .collect(),
            total: ReportGroup::of(String::new(), incidents),
        }
    }

    /// Adds silenced alerts per group key: to the group of that key, or to a new group of no
    /// incidents (in key order); and to the total.
    pub fn add_silenced(&mut self, silenced: &BTreeMap<String, u64>) {
        for (key, n) in silenced {
            match self.groups.binary_search_by(|g| g.key.as_str().cmp(key)) {
                Ok(i) => self.groups[i].silenced += n,
                Err(i) => self.groups.insert(
                    i,
                    ReportGroup {
                        key: key.clone(),
                        silenced: *n,
                        ..ReportGroup::default()
                    },
                ),
            }
            self.total.silenced += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nearest_rank_percentiles_are_observed_values() {
        let ten: Vec<Duration> = (1..=10).map(secs).collect();
        // rank = ceil(p × n / 100)
        let cases: &[(&[Duration], u32, Option<Duration>)] = &[
            (&[], 50, None),
            (&ten[..1], 50, Some(secs(1))),
            (&ten[..1], 90, Some(secs(1))),
            (&ten[..2], 50, Some(secs(1))),
            (&ten[..2], 90, Some(secs(2))),
            (&ten[..3], 50, Some(secs(2))),
            (&ten[..4], 50, Some(secs(2))),
            (&ten[..4], 90, Some(secs(4))),
            (&ten[..5], 50, Some(secs(3))),
            (&ten, 50, Some(secs(5))),
            (&ten, 90, Some(secs(9))),
            (&ten, 100, Some(secs(10))),
            (&ten, 1, Some(secs(1))),
        ];
        for (values, p, want) in cases {
            assert_eq!(
                nearest_rank(values, *p),
                *want,
                "p{p} of {} values",
                values.len()
            );
        }
        let eleven: Vec<Duration> = (1..=11).map(secs).collect();
        assert_eq!(nearest_rank(&eleven, 90), Some(secs(10)));
        assert_eq!(
            Percentiles::of(vec![secs(30), secs(10), secs(20)]),
            Some(Percentiles {
                p50: secs(20),
                p90: secs(30)
            })
        );
    }

    #[test]
    fn windows_parse_and_garbage_is_refused_naming_since() {
        assert_eq!(parse_since("30d").unwrap(), secs(30 * 86_400));
        assert_eq!(parse_since("").unwrap(), secs(30 * 86_400));
        assert_eq!(parse_since(" 90m ").unwrap(), secs(5_400));
        assert_eq!(parse_since("12h").unwrap(), secs(43_200));
        assert_eq!(parse_since("2w").unwrap(), secs(14 * 86_400));
        assert_eq!(parse_since("366d").unwrap(), MAX_SINCE);
        let long = "9".repeat(10_000) + "d";
        for bad in [
            "30",
            "d",
            "-1d",
            "1.5d",
            "30 d",
            "30D",
            "30s",
            "0d",
            "367d",
            "99999999999999999999d",
            "1d1h",
            "yesterday",
            "30d\0",
            long.as_str(),
        ] {
            let e = parse_since(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid since: "), "{bad:?}: {e}");
            assert!(e.len() < 120, "{bad:?}: the message echoes too much: {e}");
        }
    }

    #[test]
    fn groupings_parse_and_unknown_ones_are_refused_naming_by() {
        for g in GroupBy::ALL {
            assert_eq!(GroupBy::parse(g.as_str()).unwrap(), g);
        }
        assert_eq!(GroupBy::parse("").unwrap(), GroupBy::Category);
        for bad in ["team", "Category", "category,severity", &"x".repeat(5000)] {
            let e = GroupBy::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid by: "), "{bad:?}: {e}");
            assert!(e.len() < 140, "{e}");
        }
    }

    fn at(s: i64) -> Micros {
        Micros::from_unix_micros(s * 1_000_000)
    }

    fn facts(id: &str, category: &str, severity: u32) -> IncidentFacts {
        IncidentFacts {
            id: id.into(),
            category: category.into(),
            severity,
            service: "web".into(),
            integration: "am".into(),
            opened_at: at(1_000),
            acknowledged_at: None,
            resolved_at: None,
            alert_count: 1,
            first_resolve: None,
            first_person_entry: None,
        }
    }

    #[test]
    fn auto_remediation_needs_a_runbook_resolve_before_any_person() {
        let resolved = |actor: &str, person: Option<i64>| IncidentFacts {
            first_resolve: Some((10, actor.into())),
            first_person_entry: person,
            ..facts("i", "malware", 2)
        };
        assert!(resolved("runbook:contain", None).auto_remediated());
        assert!(resolved("runbook:contain", Some(11)).auto_remediated());
        assert!(!resolved("runbook:contain", Some(9)).auto_remediated());
        assert!(!resolved("user:alice", Some(10)).auto_remediated());
        assert!(!resolved("integration:am", None).auto_remediated());
        assert!(!resolved("runbook", None).auto_remediated());
        assert!(!facts("i", "malware", 2).auto_remediated());
    }

    #[test]
    fn a_report_groups_and_counts_exactly() {
        let mut list = Vec::new();
        // Malware: acknowledged after 10, 20, 30, 40 s; resolved after 100, 200, 300 s.
        for (n, (ack, res)) in [
            (Some(10), Some(100)),
            (Some(20), Some(200)),
            (Some(30), Some(300)),
            (Some(40), None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = facts(&format!("m{n}"), "malware", 1 + n as u32 % 2);
            f.acknowledged_at = ack.map(|s| at(1_000 + s));
            f.resolved_at = res.map(|s| at(1_000 + s));
            f.alert_count = 1 + n as u32;
            list.push(f);
        }
        // Phishing: a runbook resolved one after 5 s; nothing else.
        let mut p = facts("p0", "phishing", 3);
        p.resolved_at = Some(at(1_005));
        p.first_resolve = Some((4, "runbook:quarantine".into()));
        list.push(p);
        list.push(facts("p1", "phishing", 3));

        let mut r = Report::build(GroupBy::Category, &list);
        assert_eq!(r.groups.len(), 2);
        let m = &r.groups[0];
        assert_eq!(
            (m.key.as_str(), m.incidents, m.acknowledged, m.resolved),
            ("malware", 4, 4, 3)
        );
        assert_eq!(
            m.mtta,
            Some(Percentiles {
                p50: secs(20),
                p90: secs(40)
            })
        );
        assert_eq!(
            m.mttr,
            Some(Percentiles {
                p50: secs(200),
                p90: secs(300)
            })
        );
        assert_eq!((m.alerts, m.alerts_per_incident()), (10, Some(2.5)));
        assert_eq!(m.auto_remediated_share(), Some(0.0));
        let p = &r.groups[1];
        assert_eq!(
            (p.key.as_str(), p.incidents, p.auto_remediated),
            ("phishing", 2, 1)
        );
        assert_eq!(p.auto_remediated_share(), Some(0.5));
        assert_eq!(p.mtta, None);
        assert_eq!(
            p.mttr,
            Some(Percentiles {
                p50: secs(5),
                p90: secs(5)
            })
        );
        assert_eq!(
            (r.total.incidents, r.total.alerts, r.total.resolved),
            (6, 12, 4)
        );
        assert_eq!(
            r.total.mttr,
            Some(Percentiles {
                p50: secs(100),
                p90: secs(300)
            })
        );

        let silenced = silenced_by_group(
            GroupBy::Category,
            &[
                SilencedCount {
                    integration: "am".into(),
                    service: "web".into(),
                    category: "phishing".into(),
                    severity: 3,
                    count: 4,
                },
                SilencedCount {
                    integration: "pd".into(),
                    service: "db".into(),
                    category: "phishing".into(),
                    severity: 2,
                    count: 1,
                },
                SilencedCount {
                    integration: "am".into(),
                    service: "web".into(),
                    category: "denial-of-service".into(),
                    severity: 1,
                    count: 2,
                },
            ],
        );
        r.add_silenced(&silenced);
        let keys: Vec<_> = r
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.incidents, g.silenced))
            .collect();
        assert_eq!(
            keys,
            [
                ("denial-of-service", 0, 2),
                ("malware", 4, 0),
                ("phishing", 2, 5)
            ]
        );
        assert_eq!(r.total.silenced, 7);
        assert_eq!(r.groups[0].auto_remediated_share(), None);

        let by_sev = Report::build(GroupBy::Severity, &list);
        let keys: Vec<_> = by_sev
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.incidents))
            .collect();
        assert_eq!(keys, [("SEV1", 2), ("SEV2", 2), ("SEV3", 2)]);
    }

    #[test]
    fn the_service_is_the_label_else_the_source() {
        let mut labels = BTreeMap::new();
        assert_eq!(service_of(&labels, "grafana"), "grafana");
        labels.insert("service".to_owned(), String::new());
        assert_eq!(service_of(&labels, "grafana"), "grafana");
        labels.insert("service".to_owned(), "checkout".to_owned());
        assert_eq!(service_of(&labels, "grafana"), "checkout");
    }
}
