//! Time-window grouping, Alertmanager-style: rules that bring related alerts (one service's
//! alerts from several hosts) into one incident for a while.
//!
//! A rule applies to an alert when its `integration` (if set) is the alert's, every matcher
//! accepts the alert's labels (the silences' matchers: `=`, `!=`, `=~`, `!~`, regexes
//! anchored) and the alert carries every `group_by` label with a value. The first rule that
//! applies names the alert's [`Group`]: the rule and the values of its `group_by` labels.
//! Triage (its decide step) then lets an alert whose dedup key has no active incident join
//! the active incident of its group opened less than the rule's window ago. An alert missing
//! a `group_by` label is not grouped by that rule (the next rule may group it): grouping on
//! an empty value would lump unrelated alerts together, which is what the default dedup key
//! stopped doing. Pure: no IO, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signal::Labels;
use crate::silence::{Compiled, Matcher};

/// The most rules, `group_by` labels and matchers per rule, and bytes of a rule's name and
/// of its window as typed.
pub const MAX_RULES: usize = 100;
pub const MAX_GROUP_BY: usize = 16;
pub const MAX_MATCHERS: usize = 16;
pub const MAX_RULE_NAME: usize = 64;
const MAX_WINDOW_TEXT: usize = 16;
/// The bytes of a `group_by` label name, and of an integration's name.
const MAX_LABEL_NAME: usize = 128;
/// The shortest and longest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A grouping rule as configured (`grouping.rules[N]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRuleSpec {
    /// Names the rule in the group key and on the timeline (`[a-z0-9_-]`, 1 to 64).
    pub name: String,
    /// Only alerts that came through this integration (absent: any).
    #[serde(default)]
    pub integration: Option<String>,
    /// Only alerts whose labels every matcher accepts, in amtool's syntax
    /// (`env="prod"`, `service=~"api|web"`); none: every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// The labels whose values make the group (`[service]`): at least one.
    pub group_by: Vec<String>,
    /// How long after a group's incident opens its related alerts join it: `30s`, `5m`,
    /// `2h` (1 second to 24 hours).
    pub window: String,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct GroupRule {
    pub name: String,
    pub integration: Option<String>,
    matchers: Vec<Compiled>,
    pub group_by: Vec<String>,
    pub window: Duration,
}

/// The rules, in order (the first that applies wins). Empty: nothing is grouped.
#[derive(Debug, Clone, Default)]
pub struct Grouping {
    rules: Vec<GroupRule>,
}

/// The group an alert belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `group/RULE:` and 24 hex digits of the digest of the group's labels, canonical:
    /// stored on the incident the group opened.
    pub key: String,
    /// The rule's name.
    pub rule: String,
    /// The `group_by` labels and the alert's values of them.
    pub labels: BTreeMap<String, String>,
    /// The rule's window.
    pub window: Duration,
}

impl Grouping {
    /// Checks and compiles the rules; an error names the field (`grouping.rules[2].window`).
    pub fn compile(specs: &[GroupRuleSpec]) -> Result<Self, String> {
        if specs.len() > MAX_RULES {
            return Err(format!("grouping.rules: at most {MAX_RULES} rules"));
        }
        let mut rules: Vec<GroupRule> = Vec::with_capacity(specs.len());
        for (n, spec) in specs.iter().enumerate() {
            let field = format!("grouping.rules[{n}]");
            let name = spec.name.trim();
            let name_ok = !name.is_empty()
                && name.len() <= MAX_RULE_NAME
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
                });
            if !name_ok {
                return Err(format!(
                    "{field}.name: {:?} must be 1 to {MAX_RULE_NAME} of a-z 0-9 - _",
                    crate::clip(name, MAX_RULE_NAME + 8)
                ));
            }
            if rules.iter().any(|r| r.name == name) {
                return Err(format!("{field}.name: {name:?} names an earlier rule too"));
            }
            let integration = match spec.integration.as_deref().map(str::trim) {
                None => None,
                Some(i) if i.is_empty() || i.len() > MAX_LABEL_NAME => {
                    return Err(format!(
                        "{field}.integration: 1 to {MAX_LABEL_NAME} bytes when given"
                    ));
                }
                Some(i) => Some(i.to_owned()),
            };
            if spec.matchers.len() > MAX_MATCHERS {
                return Err(format!("{field}.matchers: at most {MAX_MATCHERS} matchers"));
            }
            let matchers = spec
                .matchers
                .iter()
                .enumerate()
                .map(|(m, text)| {
                    let at = format!("{field}.matchers[{m}]");
                    Matcher::parse(text)
                        .map_err(|e| format!("{at}: {e}"))?
                        .compile(&at)
                })
                .collect::<Result<Vec<_>, String>>()?;
            if spec.group_by.is_empty() || spec.group_by.len() > MAX_GROUP_BY {
                return Err(format!("{field}.group_by: 1 to {MAX_GROUP_BY} label names"));
            }
            let mut group_by = Vec::with_capacity(spec.group_by.len());
            for (l, label) in spec.group_by.iter().enumerate() {
                let label = label.trim();
                if !is_label_name(label) {
                    return Err(format!(
                        "{field}.group_by[{l}]: {:?} is not a label name (a letter or _, then letters, digits, _ - . /; at most {MAX_LABEL_NAME} bytes)",
                        crate::clip(label, MAX_LABEL_NAME + 8)
                    ));
                }
                if group_by.iter().any(|g: &String| g == label) {
                    return Err(format!("{field}.group_by[{l}]: {label:?} is listed twice"));
                }
                group_by.push(label.to_owned());
            }
            let window = parse_window(&spec.window).map_err(|e| format!("{field}.window: {e}"))?;
            rules.push(GroupRule {
                name: name.to_owned(),
                integration,
                matchers,
                group_by,
                window,
            });
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[GroupRule] {
        &self.rules
    }

    /// The longest window of any rule: how far back triage looks for a group's incident.
    pub fn longest_window(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.window)
            .max()
            .unwrap_or_default()
    }

    /// The group of an alert that came through `integration` (empty: none) with `labels`:
    /// that of the first rule that applies, if any.
    pub fn group_of(&self, integration: &str, labels: &Labels) -> Option<Group> {
        self.rules
            .iter()
            .find_map(|r| r.group_of(integration, labels))
    }
}

impl GroupRule {
    fn group_of(&self, integration: &str, labels: &Labels) -> Option<Group> {
        if self
            .integration
            .as_deref()
            .is_some_and(|i| i != integration)
        {
            return None;
        }
        if !self.matchers.iter().all(|m| m.matches(labels)) {
            return None;
        }
        let mut values = BTreeMap::new();
        for name in &self.group_by {
            let value = labels.get(name).map(|v| v.trim()).unwrap_or_default();
            if value.is_empty() {
                return None;
            }
            values.insert(name.clone(), value.to_owned());
        }
        let canonical =
            crate::canonical_labels(values.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let digest = Sha256::digest(canonical.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Some(Group {
            key: format!("group/{}:{hex}", self.name),
            rule: self.name.clone(),
            labels: values,
            window: self.window,
        })
    }
}

/// Whether an alert at `now` joins a group incident opened at `opened_at`: strictly less
/// than `window` after it (at the boundary a new incident opens).
pub fn within_window(opened_at: crate::Micros, window: Duration, now: crate::Micros) -> bool {
    now.saturating_duration_since(opened_at) < window
}

/// A label name as alerts carry them (see `Signal`'s label check).
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let head = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    head && name.len() <= MAX_LABEL_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// A window as typed: a whole number of seconds, minutes or hours (`30s`, `5m`, `2h`),
/// 1 second to 24 hours.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{:?} is not a window such as 30s, 5m or 2h",
            crate::clip(t, MAX_WINDOW_TEXT)
        )
    };
    if t.len() > MAX_WINDOW_TEXT {
        return Err(bad());
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let window = n
        .checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(bad)?;
    if window < MIN_WINDOW || window > MAX_WINDOW {
        return Err(format!("{t:?} is not between 1s and 24h"));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, group_by: &[&str], window: &str) -> GroupRuleSpec {
        GroupRuleSpec {
            name: name.into(),
            integration: None,
            matchers: Vec::new(),
            group_by: group_by.iter().map(|s| (*s).to_owned()).collect(),
            window: window.into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn hosts_of_one_service_share_a_group_and_services_do_not() {
        let g = Grouping::compile(&[rule("by-service", &["service"], "5m")]).unwrap();
        let a = g
            .group_of("", &labels(&[("service", "api"), ("host", "a")]))
            .unwrap();
        let b = g
            .group_of("", &labels(&[("service", "api"), ("host", "b")]))
            .unwrap();
        let web = g
            .group_of("", &labels(&[("service", "web"), ("host", "a")]))
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a.key, web.key);
        assert!(a.key.starts_with("group/by-service:"), "{}", a.key);
        assert_eq!(a.rule, "by-service");
        assert_eq!(a.labels, labels(&[("service", "api")]));
        assert_eq!(a.window, Duration::from_secs(300));
    }

    /// A missing or empty `group_by` label: this rule does not group the alert, the next
    /// may.
    #[test]
    fn an_alert_missing_a_group_by_label_falls_to_the_next_rule() {
        let g = Grouping::compile(&[
            rule("by-service-env", &["service", "env"], "5m"),
            rule("by-service", &["service"], "1m"),
        ])
        .unwrap();
        let both = g.group_of("", &labels(&[("service", "api"), ("env", "prod")]));
        assert_eq!(both.unwrap().rule, "by-service-env");
        let empty = g.group_of("", &labels(&[("service", "api"), ("env", " ")]));
        assert_eq!(empty.unwrap().rule, "by-service");
        assert_eq!(g.group_of("", &labels(&[("host", "a")])), None);
        assert_eq!(
            Grouping::default().group_of("", &labels(&[("service", "a")])),
            None
        );
    }

    /// The first rule that applies wins, even when a later one would group on more.
    #[test]
    fn rules_are_tried_in_order() {
        let g = Grouping::compile(&[
            rule("wide", &["service"], "1m"),
            rule("narrow", &["service", "env"], "5m"),
        ])
        .unwrap();
        let got = g.group_of("", &labels(&[("service", "api"), ("env", "prod")]));
        assert_eq!(got.unwrap().rule, "wide");
        assert_eq!(g.longest_window(), Duration::from_secs(300));
    }

    /// Matchers as silences have them: `=`, `!=`, `=~` and `!~`, regexes anchored, a missing
    /// label the empty value; and an integration limits a rule to its alerts.
    #[test]
    fn matchers_and_the_integration_pick_the_alerts_a_rule_groups() {
        let g = Grouping::compile(&[GroupRuleSpec {
            integration: Some("prom".into()),
            matchers: vec![
                "env=prod".into(),
                "team!=db".into(),
                "service=~\"api|web\"".into(),
                "zone!~\"eu-.*\"".into(),
            ],
            ..rule("prod", &["service"], "5m")
        }])
        .unwrap();
        let ok = [("env", "prod"), ("service", "api")];
        assert!(g.group_of("prom", &labels(&ok)).is_some());
        assert!(g.group_of("grafana", &labels(&ok)).is_none());
        assert!(g.group_of("", &labels(&ok)).is_none());
        for bad in [
            &[("env", "dev"), ("service", "api")][..],
            &[("env", "prod"), ("service", "api"), ("team", "db")],
            // Anchored: `api|web` does not match `api-gateway`.
            &[("env", "prod"), ("service", "api-gateway")],
            &[("env", "prod"), ("service", "web"), ("zone", "eu-west")],
            &[("service", "api")],
        ] {
            assert!(g.group_of("prom", &labels(bad)).is_none(), "{bad:?}");
        }
        let us = [("env", "prod"), ("service", "web"), ("zone", "us-east")];
        assert!(g.group_of("prom", &labels(&us)).is_some());
    }

    /// Strictly inside: at the window's end a new incident opens.
    #[test]
    fn the_window_ends_at_its_boundary() {
        let opened = crate::Micros::from_unix_micros(1_000_000);
        let w = Duration::from_secs(60);
        let at = |s: i64| crate::Micros::from_unix_micros(1_000_000 + s * 1_000_000);
        assert!(within_window(opened, w, at(0)));
        assert!(within_window(
            opened,
            w,
            crate::Micros::from_unix_micros(60_999_999)
        ));
        assert!(!within_window(opened, w, at(60)));
        assert!(!within_window(opened, w, at(3600)));
    }

    #[test]
    fn windows_parse_within_bounds() {
        assert_eq!(parse_window("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_window(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_window("24h"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "5",
            "m",
            "0s",
            "25h",
            "-5m",
            "5 m",
            "1.5h",
            "5d",
            "99999999999999999999s",
            "1000000000000000h",
        ] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
        let long = parse_window(&"9".repeat(10_000)).unwrap_err();
        assert!(long.len() < 100, "{long}");
    }

    /// Every refusal names its field.
    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let cases: Vec<(Vec<GroupRuleSpec>, &str)> = vec![
            (vec![rule("a", &[], "5m")], "grouping.rules[0].group_by"),
            (
                vec![rule("a", &["s"; 17], "5m")],
                "grouping.rules[0].group_by",
            ),
            (
                vec![rule("a", &["service", "service"], "5m")],
                "grouping.rules[0].group_by[1]",
            ),
            (
                vec![rule("a", &["1bad"], "5m")],
                "grouping.rules[0].group_by[0]",
            ),
            (
                vec![rule("a", &[&"x".repeat(129)], "5m")],
                "grouping.rules[0].group_by[0]",
            ),
            (vec![rule("a", &["s"], "soon")], "grouping.rules[0].window"),
            (vec![rule("a", &["s"], "0s")], "grouping.rules[0].window"),
            (vec![rule("a", &["s"], "48h")], "grouping.rules[0].window"),
            (vec![rule("", &["s"], "5m")], "grouping.rules[0].name"),
            (
                vec![rule("Bad Name", &["s"], "5m")],
                "grouping.rules[0].name",
            ),
            (
                vec![rule("a", &["s"], "5m"), rule("a", &["s"], "5m")],
                "grouping.rules[1].name",
            ),
            (
                vec![GroupRuleSpec {
                    matchers: vec!["service=~\"(\"".into()],
                    ..rule("a", &["s"], "5m")
                }],
                "grouping.rules[0].matchers[0]",
            ),
            (
                vec![GroupRuleSpec {
                    matchers: vec!["=x".into()],
                    ..rule("a", &["s"], "5m")
                }],
                "grouping.rules[0].matchers[0]",
            ),
            (
                vec![GroupRuleSpec {
                    matchers: vec!["a=b".into(); 17],
                    ..rule("a", &["s"], "5m")
                }],
                "grouping.rules[0].matchers",
            ),
            (
                vec![GroupRuleSpec {
                    integration: Some(" ".into()),
                    ..rule("a", &["s"], "5m")
                }],
                "grouping.rules[0].integration",
            ),
            (
                (0..101)
                    .map(|n| rule(&format!("r{n}"), &["s"], "5m"))
                    .collect(),
                "grouping.rules",
            ),
        ];
        for (specs, field) in cases {
            let err = Grouping::compile(&specs).unwrap_err();
            let named = err.starts_with(&format!("{field}:"))
                || err.starts_with(&format!("{field}.value:"));
            assert!(named, "{field}: {err}");
        }
    }
}
