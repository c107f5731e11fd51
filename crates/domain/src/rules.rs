//! Categorization and prioritization: the taxonomy is configuration, these are its rules.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Result, invalid};
use crate::incident::{Priority, Severity, Urgency};
use crate::signal::Signal;

/// The category every signal that matches no rule lands in.
pub const UNCATEGORIZED: &str = "uncategorized";

/// The categories and the rules that map signals to them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    /// Label whose value, when it names a known category, sets the category outright.
    #[serde(default = "default_category_label")]
    pub category_label: String,
    /// Label whose value (high, medium, low) sets the urgency.
    #[serde(default = "default_urgency_label")]
    pub urgency_label: String,
    /// Label whose value, mapped through `severity_values`, sets the severity.
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// Label values (lowercase) to severity levels 1–5.
    #[serde(default)]
    pub severity_values: BTreeMap<String, u32>,
    /// The categories, tried in order; the first whose rule matches wins.
    pub categories: Vec<CategoryRule>,
}

/// One category and what selects it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoryRule {
    /// Lowercase name, e.g. `denial-of-service`.
    pub name: String,
    /// What the category means, for people.
    #[serde(default)]
    pub description: String,
    /// Severity (1–5) when the signal states none.
    #[serde(default = "default_severity")]
    pub severity: u32,
    /// Urgency when the signal states none.
    #[serde(default)]
    pub urgency: Urgency,
    /// Label matchers: the rule matches when any listed label has any listed value.
    #[serde(default)]
    pub labels: BTreeMap<String, Vec<String>>,
    /// Words or phrases matched against the title's words, case-insensitively.
    #[serde(default)]
    pub keywords: Vec<String>,
}

fn default_category_label() -> String {
    "category".into()
}
fn default_urgency_label() -> String {
    "urgency".into()
}
fn default_severity_label() -> String {
    "severity".into()
}
fn default_severity() -> u32 {
    3
}

/// What the rules decided about a signal, and why (the reasons go on the timeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub category: String,
    pub category_reason: String,
    pub severity: Severity,
    pub severity_reason: String,
    pub urgency: Urgency,
    pub priority: Priority,
}

impl Default for Taxonomy {
    fn default() -> Self {
        serde_yaml::from_str(DEFAULT_TAXONOMY).expect("the shipped taxonomy is valid")
    }
}

/// The shipped taxonomy, as YAML: the ten categories of the incident process.
pub const DEFAULT_TAXONOMY: &str = include_str!("default_taxonomy.yaml");

impl Taxonomy {
    /// Checks the taxonomy itself: names, severities, duplicates, and `uncategorized` present.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.categories {
            if rule.name.is_empty()
                || !rule
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(invalid(
                    "taxonomy",
                    format!(
                        "category name {:?} must be lowercase letters, digits and -",
                        rule.name
                    ),
                ));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(invalid(
                    "taxonomy",
                    format!("category {:?} is listed twice", rule.name),
                ));
            }
            Severity::new(rule.severity).map_err(|_| {
                invalid(
                    "taxonomy",
                    format!(
                        "category {:?} has severity {} outside 1-5",
                        rule.name, rule.severity
                    ),
                )
            })?;
        }
        if !seen.contains(UNCATEGORIZED) {
            return Err(invalid(
                "taxonomy",
                "the category \"uncategorized\" must exist",
            ));
        }
        for (value, level) in &self.severity_values {
            Severity::new(*level).map_err(|_| {
                invalid(
                    "taxonomy",
                    format!("severity value {value:?} maps to {level}, outside 1-5"),
                )
            })?;
        }
        Ok(())
    }

    /// True when `name` is one of the categories.
    pub fn has(&self, name: &str) -> bool {
        self.rule(name).is_some()
    }

    fn rule(&self, name: &str) -> Option<&CategoryRule> {
        self.categories.iter().find(|r| r.name == name)
    }

    /// The names of all categories, in rule order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(|r| r.name.as_str())
    }

    /// Categorizes and prioritizes a signal.
    ///
    /// Category: an explicit category wins (it must exist), then the category label, then the
    /// first rule whose labels match, then the first whose keywords occur in the title, else
    /// `uncategorized`. Severity: explicit, then the severity label, then the category's.
    pub fn classify(&self, signal: &Signal) -> Result<Classification> {
        let (category, category_reason) = self.categorize(signal)?;
        let rule = self.rule(&category);
        let (severity, severity_reason) = match signal.severity {
            Some(s) => (s, "stated by the signal".to_owned()),
            None => match self.severity_from_label(signal) {
                Some((s, value)) => (s, format!("label {}={value}", self.severity_label)),
                None => {
                    let level = rule.map_or(3, |r| r.severity);
                    (
                        Severity::new(level)?,
                        format!("default of category {category}"),
                    )
                }
            },
        };
        let urgency = signal
            .labels
            .get(&self.urgency_label)
            .and_then(|u| u.parse().ok())
            .or(rule.map(|r| r.urgency))
            .unwrap_or_default();
        Ok(Classification {
            priority: Priority::from_impact_urgency(severity, urgency),
            category,
            category_reason,
            severity,
            severity_reason,
            urgency,
        })
    }

    fn categorize(&self, signal: &Signal) -> Result<(String, String)> {
        if let Some(c) = &signal.category {
            if !self.has(c) {
                let known: Vec<_> = self.names().collect();
                return Err(invalid(
                    "category",
                    format!("{c:?} is not one of {}", known.join(", ")),
                ));
            }
            return Ok((c.clone(), "stated by the signal".into()));
        }
        if let Some(c) = signal.labels.get(&self.category_label)
            && self.has(c)
        {
            return Ok((c.clone(), format!("label {}={c}", self.category_label)));
        }
        for rule in &self.categories {
            for (key, values) in &rule.labels {
                if let Some(v) = signal.labels.get(key)
                    && values.iter().any(|want| want == v)
                {
                    return Ok((rule.name.clone(), format!("label {key}={v}")));
                }
            }
        }
        let words = words(&signal.title);
        for rule in &self.categories {
            if let Some(k) = rule.keywords.iter().find(|k| contains_phrase(&words, k)) {
                return Ok((rule.name.clone(), format!("keyword {k:?} in the title")));
            }
        }
        Ok((UNCATEGORIZED.into(), "no rule matched".into()))
    }

    fn severity_from_label<'a>(&self, signal: &'a Signal) -> Option<(Severity, &'a str)> {
        let value = signal.labels.get(&self.severity_label)?;
        let level = value
            .parse::<u32>()
            .ok()
            .or_else(|| self.severity_values.get(&value.to_lowercase()).copied())?;
        Severity::new(level).ok().map(|s| (s, value.as_str()))
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether the phrase's words occur in a row in `words` (lowercase). Runs for every keyword
/// of every category on every alert, so it allocates nothing.
fn contains_phrase(words: &[String], phrase: &str) -> bool {
    let want = || {
        phrase
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
    };
    let n = want().count();
    n > 0
        && words.windows(n).any(|w| {
            w.iter()
                .zip(want())
                .all(|(have, want)| want.chars().flat_map(char::to_lowercase).eq(have.chars()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::SignalInput;

    fn signal(title: &str, labels: &[(&str, &str)]) -> Signal {
        Signal::parse(SignalInput {
            title: title.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn default_taxonomy_has_the_ten_categories_and_is_valid() {
        let t = Taxonomy::default();
        t.validate().unwrap();
        let names: Vec<_> = t.names().collect();
        assert_eq!(
            names,
            [
                "malware",
                "phishing",
                "unauthorized-access",
                "denial-of-service",
                "data-breach",
                "insider-threat",
                "service-outage",
                "performance-degradation",
                "misconfiguration",
                "uncategorized"
            ]
        );
        let dos = t.rule("denial-of-service").unwrap();
        assert!(dos.keywords.contains(&"syn flood".to_owned()));
        assert_eq!(dos.urgency, Urgency::High);
        assert_eq!(t.severity_values["warning"], 3);
    }

    #[test]
    fn categorization_follows_precedence() {
        let t = Taxonomy::default();
        let c = |s: &Signal| t.classify(s).unwrap().category;
        // Keywords match whole words and phrases, not substrings ("dos" is not in "windows").
        assert_eq!(
            c(&signal("SYN flood against edge", &[])),
            "denial-of-service"
        );
        assert_eq!(c(&signal("Windows update pending", &[])), "uncategorized");
        assert_eq!(
            c(&signal("checkout latency above SLO", &[])),
            "performance-degradation"
        );
        // Label matchers beat keywords; the category label beats both.
        assert_eq!(
            c(&signal("ransomware", &[("alertname", "ServiceDown")])),
            "service-outage"
        );
        assert_eq!(
            c(&signal(
                "ransomware",
                &[("category", "phishing"), ("alertname", "ServiceDown")]
            )),
            "phishing"
        );
        // An unknown category label is ignored, an unknown explicit category is an error.
        assert_eq!(
            c(&signal("ransomware found", &[("category", "nope")])),
            "malware"
        );
        let mut explicit = signal("x", &[]);
        explicit.category = Some("nope".into());
        let err = t.classify(&explicit).unwrap_err();
        assert!(err.to_string().starts_with("invalid category"), "{err}");
        explicit.category = Some("data-breach".into());
        assert_eq!(c(&explicit), "data-breach");
    }

    #[test]
    fn severity_and_priority_follow_precedence() {
        let t = Taxonomy::default();
        // Category default: denial-of-service is SEV1, urgency high -> P1.
        let c = t.classify(&signal("ddos on api", &[])).unwrap();
        assert_eq!((c.severity.level(), c.priority.level()), (1, 1));
        // The severity label wins over the category's default.
        let c = t
            .classify(&signal("ddos on api", &[("severity", "warning")]))
            .unwrap();
        assert_eq!((c.severity.level(), c.priority.level()), (3, 2));
        assert_eq!(c.severity_reason, "label severity=warning");
        // An explicit severity wins over the label; the urgency label lowers priority.
        let mut s = signal(
            "ddos on api",
            &[("severity", "warning"), ("urgency", "low")],
        );
        s.severity = Some(Severity::MINOR);
        let c = t.classify(&s).unwrap();
        assert_eq!((c.severity.level(), c.priority.level()), (4, 5));
    }

    #[test]
    fn invalid_taxonomies_are_rejected() {
        let mut t = Taxonomy::default();
        t.categories.retain(|r| r.name != UNCATEGORIZED);
        assert!(t.validate().is_err());
        let mut t = Taxonomy::default();
        t.categories[0].severity = 9;
        assert!(t.validate().is_err());
        let mut t = Taxonomy::default();
        let dup = t.categories[0].clone();
        t.categories.push(dup);
        assert!(t.validate().is_err());
    }
}
