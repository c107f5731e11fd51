//! Escalation policies: page the channels of the first step at once, and those of each later
//! step after its delay unless the incident has been acknowledged by then.

use serde::Deserialize;

use crate::channels::Channel;

/// A named policy; runbooks page it with `notify::send("POLICY", message)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    pub name: String,
    /// In order; the first step's delay must be 0.
    pub steps: Vec<EscalationStep>,
}

/// One step: who is paged, and how long after the first page.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Seconds after the first page; a step runs only if nobody acknowledged by then.
    #[serde(default)]
    pub after_seconds: u64,
    /// Channels paged at this step.
    pub channels: Vec<String>,
}

/// Checks policies against each other and the channels.
pub(crate) fn validate(policies: &[EscalationPolicy], channels: &[Channel]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for p in policies {
        let name = &p.name;
        if name.trim().is_empty() {
            return Err("an escalation policy needs a name".into());
        }
        if !names.insert(name.as_str()) || channels.iter().any(|c| &c.name == name) {
            return Err(format!(
                "escalation policy {name:?}: the name is already a channel or another policy"
            ));
        }
        if p.steps.is_empty() {
            return Err(format!("escalation policy {name:?} has no steps"));
        }
        if p.steps[0].after_seconds != 0 {
            return Err(format!(
                "escalation policy {name:?}: the first step pages at once (after_seconds: 0)"
            ));
        }
        let mut last = 0;
        for (i, step) in p.steps.iter().enumerate() {
            if step.after_seconds < last || (i > 0 && step.after_seconds == 0) {
                return Err(format!(
                    "escalation policy {name:?}: step {} must come after the one before it",
                    i + 1
                ));
            }
            last = step.after_seconds;
            if step.channels.is_empty() {
                return Err(format!(
                    "escalation policy {name:?}: step {} pages no channel",
                    i + 1
                ));
            }
            if let Some(c) = step
                .channels
                .iter()
                .find(|c| !channels.iter().any(|ch| &ch.name == *c))
            {
                return Err(format!(
                    "escalation policy {name:?}: step {} names the unknown channel {c:?}",
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Vec<EscalationPolicy> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn mistakes_in_policies_are_refused_with_the_reason() {
        let channels = [Channel::log()];
        let check = |yaml: &str| validate(&policy(yaml), &channels);
        assert_eq!(
            check(
                "- { name: p, steps: [{ channels: [log] }, { after_seconds: 60, channels: [log] }] }"
            ),
            Ok(())
        );
        assert_eq!(
            check("- { name: p, steps: [{ channels: [pager] }] }").unwrap_err(),
            "escalation policy \"p\": step 1 names the unknown channel \"pager\""
        );
        assert_eq!(
            check("- { name: log, steps: [{ channels: [log] }] }").unwrap_err(),
            "escalation policy \"log\": the name is already a channel or another policy"
        );
        assert_eq!(
            check("- { name: p, steps: [{ after_seconds: 5, channels: [log] }] }").unwrap_err(),
            "escalation policy \"p\": the first step pages at once (after_seconds: 0)"
        );
        assert_eq!(
            check(
                "- { name: p, steps: [{ channels: [log] }, { after_seconds: 0, channels: [log] }] }"
            )
            .unwrap_err(),
            "escalation policy \"p\": step 2 must come after the one before it"
        );
        assert!(check("- { name: p, steps: [] }").is_err());
        assert!(
            serde_yaml::from_str::<Vec<EscalationPolicy>>("- { name: p, steps: [], extra: 1 }")
                .is_err()
        );
    }
}
