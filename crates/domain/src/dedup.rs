//! Dedup keys from label sets, canonical so that the same alert always gets the same key.
//!
//! Monitoring tools identify an alert by its labels, but render them in whatever order and
//! spacing they like (`{b="2", a="1"}`, `{a="1",b="2"}`). The canonical form sorts labels by
//! name, trims names and values, drops empty values (Prometheus treats an empty label as
//! absent) and renders `a="1",b="2"` with `\` and `"` escaped; the key is a digest of it.

use sha2::{Digest, Sha256};

use crate::signal::Labels;

/// The canonical rendering of a label set.
pub fn canonical_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect();
    pairs.sort_unstable();
    pairs.dedup_by(|a, b| a.0 == b.0);
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            if matches!(c, '\\' | '"') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out
}

/// `PREFIX:` and 24 hex digits of the canonical label set's digest.
pub fn dedup_key_for_labels<'a>(
    prefix: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let digest = Sha256::digest(canonical_labels(labels).as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

/// The dedup key of an Alertmanager group: its `groupKey` (`{}/{...}:{a="1", b="2"}`) read as
/// the label sets it is made of, each canonical, so a reformatted group key is the same group.
pub fn dedup_key_for_group_key(prefix: &str, group_key: &str) -> String {
    let sets: Vec<String> = label_sets(group_key)
        .iter()
        .map(|set| canonical_labels(set.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
        .collect();
    let digest = Sha256::digest(sets.join("/").as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

/// The `{name="value", ...}` sets of a text, in order; quoted values may hold `\"`, `\\`,
/// `,`, `{` and `}`.
fn label_sets(text: &str) -> Vec<Vec<(String, String)>> {
    let mut sets = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '{' {
            continue;
        }
        let mut set = Vec::new();
        let mut name = String::new();
        loop {
            match chars.next() {
                None | Some('}') => break,
                Some('"') => {
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next()),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    let key = name.trim().trim_end_matches('=').trim().to_owned();
                    set.push((key, value));
                    name.clear();
                }
                Some(',') => name.clear(),
                Some(c) => name.push(c),
            }
        }
        sets.push(set);
    }
    sets
}

/// The dedup key of a signal's labels (see [`dedup_key_for_labels`]).
pub fn dedup_key_of(prefix: &str, labels: &Labels) -> String {
    dedup_key_for_labels(prefix, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label_set() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map("[a-z_][a-z0-9_]{0,8}", "[!-~][ -~]{0,11}", 1..8)
            .prop_map(|m| m.into_iter().collect())
    }

    /// Renders a label set as a tool might: in `order`, with `space` after commas and
    /// around `=`.
    fn render(set: &[(String, String)], order: &[usize], space: &str) -> String {
        let parts: Vec<String> = order
            .iter()
            .map(|&i| {
                let (k, v) = &set[i];
                let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                format!("{k}{space}={space}\"{v}\"")
            })
            .collect();
        format!("{{{}}}", parts.join(&format!(",{space}")))
    }

    proptest! {
        #[test]
        fn label_order_does_not_change_the_key(set in label_set(), seed in any::<u64>()) {
            let mut order: Vec<usize> = (0..set.len()).collect();
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = dedup_key_for_labels("am", set.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let b = dedup_key_for_labels("am", order.iter().map(|&i| (set[i].0.as_str(), set[i].1.as_str())));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn group_key_formatting_does_not_change_the_key(set in label_set(), spaced in any::<bool>()) {
            let order: Vec<usize> = (0..set.len()).collect();
            let reversed: Vec<usize> = order.iter().rev().copied().collect();
            let tight = format!("{{}}:{}", render(&set, &order, ""));
            let loose = format!("{{}}:{}", render(&set, &reversed, if spaced { " " } else { "" }));
            prop_assert_eq!(
                dedup_key_for_group_key("am", &tight),
                dedup_key_for_group_key("am", &loose)
            );
        }

        #[test]
        fn a_different_value_gives_a_different_key(set in label_set(), extra in "[a-z]{1,6}") {
            let a = dedup_key_for_labels("am", set.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let mut changed = set.clone();
            changed[0].1.push_str(&extra);
            let b = dedup_key_for_labels("am", changed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            prop_assert_ne!(a, b);
        }
    }

    #[test]
    fn canonical_form_is_documented_by_example() {
        assert_eq!(
            canonical_labels([
                ("service", " checkout "),
                ("alertname", "High\"Latency"),
                ("empty", "")
            ]),
            r#"alertname="High\"Latency",service="checkout""#
        );
        assert_eq!(
            dedup_key_for_group_key("am", r#"{}/{team="sre"}:{alertname="A", service="b"}"#),
            dedup_key_for_group_key("am", r#"{}/{team = "sre"}:{service="b",alertname="A"}"#),
        );
        assert_ne!(
            dedup_key_for_group_key("am", r#"{}:{alertname="A"}"#),
            dedup_key_for_group_key("am", r#"{}:{alertname="B"}"#),
        );
    }
}
