//! Routes: which escalation policy pages for an incident when it opens, chosen by its
//! category, severity, source, labels and integration. The first route that matches wins; a
//! route without a `match` matches everything (a default at the end).

use std::collections::BTreeMap;

use firebreak_proto::v1;
use serde::Deserialize;

use crate::escalation::EscalationPolicy;

/// One routing rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Every condition given must hold; none given matches every incident.
    #[serde(default, rename = "match")]
    pub when: RouteMatch,
    /// The escalation policy that pages.
    pub policy: String,
}

/// What an incident must be for a route to take it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// One of these categories.
    #[serde(default)]
    pub categories: Vec<String>,
    /// At least this severe: 1 is SEV1 (0: any).
    #[serde(default)]
    pub max_severity: u32,
    /// One of these sources (the monitoring tool or service that raised it).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Each of these labels, with exactly this value.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// One of these integrations (the one its first alert came through).
    #[serde(default)]
    pub integrations: Vec<String>,
}

/// The most routes, and conditions of one route.
const MAX_ROUTES: usize = 1_000;
const MAX_CONDITIONS: usize = 100;

impl RouteMatch {
    /// Whether `incident` is what this match asks for.
    pub fn matches(&self, incident: &v1::Incident) -> bool {
        let severity = firebreak_proto::level(incident.severity);
        (self.categories.is_empty() || self.categories.contains(&incident.category))
            && (self.max_severity == 0 || (severity >= 1 && severity <= self.max_severity))
            && (self.sources.is_empty() || self.sources.contains(&incident.source))
            && (self.integrations.is_empty() || self.integrations.contains(&incident.integration))
            && self
                .labels
                .iter()
                .all(|(k, v)| incident.labels.get(k) == Some(v))
    }
}

/// The policy the first matching route names, if any.
pub fn route<'a>(routes: &'a [Route], incident: &v1::Incident) -> Option<&'a str> {
    routes
        .iter()
        .find(|r| r.when.matches(incident))
        .map(|r| r.policy.as_str())
}

/// Checks routes against the policies: each names one, within bounds.
pub(crate) fn validate(routes: &[Route], policies: &[EscalationPolicy]) -> Result<(), String> {
    if routes.len() > MAX_ROUTES {
        return Err(format!("routes: at most {MAX_ROUTES}"));
    }
    for (i, r) in routes.iter().enumerate() {
        if !policies.iter().any(|p| p.name == r.policy) {
            return Err(format!(
                "routes[{i}]: policy {:?} is not an escalation policy",
                r.policy
            ));
        }
        let w = &r.when;
        if w.categories.len() + w.sources.len() + w.labels.len() + w.integrations.len()
            > MAX_CONDITIONS
        {
            return Err(format!(
                "routes[{i}].match: at most {MAX_CONDITIONS} conditions"
            ));
        }
        if w.max_severity > 5 {
            return Err(format!("routes[{i}].match.max_severity: 0 to 5"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(category: &str, severity: u32, labels: &[(&str, &str)]) -> v1::Incident {
        v1::Incident {
            category: category.into(),
            severity: firebreak_proto::wire_level(severity),
            source: "prometheus".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_matching_route_chooses_the_policy() {
        let routes: Vec<Route> = serde_yaml::from_str(
            "- { match: { categories: [database], max_severity: 2 }, policy: dba }\n- { match: { labels: { team: payments } }, policy: payments }\n- { match: { sources: [grafana] }, policy: grafana }\n- { match: { integrations: [am-payments] }, policy: from-am }\n- { policy: default }\n",
        )
        .unwrap();
        assert_eq!(route(&routes, &incident("database", 1, &[])), Some("dba"));
        // Not severe enough for the DBAs: the next route that matches.
        assert_eq!(
            route(&routes, &incident("database", 3, &[("team", "payments")])),
            Some("payments")
        );
        assert_eq!(
            route(&routes, &incident("network", 3, &[])),
            Some("default")
        );
        // By the integration its first alert came through.
        let through = v1::Incident {
            integration: "am-payments".into(),
            ..incident("network", 3, &[])
        };
        assert_eq!(route(&routes, &through), Some("from-am"));
        let none: Vec<Route> =
            serde_yaml::from_str("- { match: { categories: [database] }, policy: dba }\n").unwrap();
        assert_eq!(route(&none, &incident("network", 1, &[])), None);
    }

    #[test]
    fn routes_name_a_policy_and_stay_within_bounds() {
        let policies: Vec<EscalationPolicy> =
            serde_yaml::from_str("- { name: dba, steps: [{ channels: [log] }] }").unwrap();
        let check = |yaml: &str| {
            validate(
                &serde_yaml::from_str::<Vec<Route>>(yaml).unwrap(),
                &policies,
            )
        };
        assert!(check("- { policy: dba }").is_ok());
        let e = check("- { policy: dba }\n- { policy: nobody }").unwrap_err();
        assert!(e.contains("routes[1]") && e.contains("nobody"), "{e}");
        let e = check("- { match: { max_severity: 9 }, policy: dba }").unwrap_err();
        assert!(e.contains("routes[0].match.max_severity"), "{e}");
        assert!(serde_yaml::from_str::<Vec<Route>>("- { policy: dba, when: {} }").is_err());
    }
}
