//! A signal (alert) as raised by a caller, validated before anything is stored.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Result, invalid};
use crate::incident::Severity;

/// Labels, sorted by key so that their rendering is stable.
pub type Labels = BTreeMap<String, String>;

const MAX_TITLE: usize = 1024;
const MAX_DESCRIPTION: usize = 64 * 1024;
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 128;
const MAX_LABEL_VALUE: usize = 1024;
const MAX_SOURCE: usize = 128;
const MAX_DEDUP_KEY: usize = 255;
const MAX_CATEGORY: usize = 64;

/// A signal exactly as a caller sent it.
#[derive(Debug, Clone, Default)]
pub struct SignalInput {
    pub title: String,
    pub description: String,
    /// 0 means "let the rules decide".
    pub severity: u32,
    /// Empty means "let the rules decide".
    pub category: String,
    pub labels: Labels,
    pub source: String,
    pub dedup_key: String,
}

/// A validated signal: every field within its limits, a dedup key always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub title: String,
    pub description: String,
    pub severity: Option<Severity>,
    pub category: Option<String>,
    pub labels: Labels,
    pub source: String,
    pub dedup_key: String,
}

impl Signal {
    /// Validates `input`, naming the first field that is wrong.
    pub fn parse(input: SignalInput) -> Result<Self> {
        // NUL is no text: Postgres refuses it, and no monitoring tool means one.
        for (field, text) in [
            ("title", &input.title),
            ("description", &input.description),
            ("category", &input.category),
            ("source", &input.source),
            ("dedup_key", &input.dedup_key),
        ] {
            no_nul(field, text)?;
        }
        let title = input.title.trim().to_owned();
        if title.is_empty() {
            return Err(invalid("title", "must not be empty"));
        }
        if title.chars().count() > MAX_TITLE {
            return Err(invalid(
                "title",
                format!("longer than {MAX_TITLE} characters"),
            ));
        }
        if input.description.len() > MAX_DESCRIPTION {
            return Err(invalid(
                "description",
                format!("longer than {MAX_DESCRIPTION} bytes"),
            ));
        }
        let severity = match input.severity {
            0 => None,
            level => Some(Severity::new(level)?),
        };
        let category = match input.category.trim() {
            "" => None,
            c => Some(parse_category(c)?),
        };
        if input.labels.len() > MAX_LABELS {
            return Err(invalid("labels", format!("more than {MAX_LABELS} labels")));
        }
        for (key, value) in &input.labels {
            check_label(key, value)?;
        }
        let source = match input.source.trim() {
            "" => "grpc".to_owned(),
            s if s.len() > MAX_SOURCE => {
                return Err(invalid("source", format!("longer than {MAX_SOURCE} bytes")));
            }
            s => s.to_owned(),
        };
        let dedup_key = match input.dedup_key.trim() {
            "" => derive_dedup_key(&source, &title, &input.labels),
            k if k.len() > MAX_DEDUP_KEY => {
                return Err(invalid(
                    "dedup_key",
                    format!("longer than {MAX_DEDUP_KEY} bytes"),
                ));
            }
            k => k.to_owned(),
        };
        Ok(Self {
            title,
            description: input.description,
            severity,
            category,
            labels: input.labels,
            source,
            dedup_key,
        })
    }
}

/// Parses a `key=value` label as typed on a command line.
pub fn parse_label(s: &str) -> Result<(String, String)> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| invalid("labels", format!("{s:?} is not key=value")))?;
    check_label(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Refuses text holding a NUL character.
pub fn no_nul(field: &'static str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// `text` with NUL replaced and cut to at most `max` bytes (on a character boundary), marked
/// with `…` when cut: for text a service stores or shows but cannot refuse (it came in an
/// event, or the service made it).
pub fn clip(text: &str, max: usize) -> String {
    let text = if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn check_label(key: &str, value: &str) -> Result<()> {
    no_nul("labels", value)?;
    let mut chars = key.chars();
    let head_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let tail_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if !head_ok || !tail_ok || key.len() > MAX_LABEL_KEY {
        return Err(invalid(
            "labels",
            format!(
                "key {key:?} must start with a letter or _ and hold only letters, digits, _ - . / (at most {MAX_LABEL_KEY})"
            ),
        ));
    }
    if value.len() > MAX_LABEL_VALUE {
        return Err(invalid(
            "labels",
            format!("value of {key:?} is longer than {MAX_LABEL_VALUE} bytes"),
        ));
    }
    Ok(())
}

fn parse_category(c: &str) -> Result<String> {
    let ok = c.len() <= MAX_CATEGORY
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
    if ok {
        Ok(c.to_owned())
    } else {
        Err(invalid(
            "category",
            format!("{c:?} must be lowercase letters, digits and - (at most {MAX_CATEGORY})"),
        ))
    }
}

/// The dedup key of a signal that brought none: the same source, title (in any case) and
/// label set, the same key. The labels are in it so that alerts of one title from different
/// hosts (`host=a`, `host=b`) are separate alerts, each with its labels on record, rather
/// than silently merged into the first one's incident; a grouping rule (`grouping.rules`,
/// docs/grouping.md) is how related alerts are brought into one incident on purpose. The
/// label set is canonical (`crate::canonical_labels`): the order labels come in, spacing
/// and empty values do not change the key.
pub fn derive_dedup_key(source: &str, title: &str, labels: &Labels) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0]);
    hash.update(title.to_lowercase().as_bytes());
    hash.update([0]);
    hash.update(
        crate::canonical_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))).as_bytes(),
    );
    let digest = hash.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{source}:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_what_fits_and_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 16), "short");
        assert_eq!(clip("a\0b", 16), "a\u{fffd}b");
        // 'é' is two bytes: a cut inside it moves back before it.
        let cut = clip("ééééé", 6);
        assert!(cut.len() <= 6, "{cut:?}");
        assert_eq!(cut, "é…");
    }

    fn input(title: &str) -> SignalInput {
        SignalInput {
            title: title.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(SignalInput, &str)> = vec![
            (input("  "), "title"),
            (input(&"x".repeat(1025)), "title"),
            (
                SignalInput {
                    severity: 6,
                    ..input("t")
                },
                "severity",
            ),
            (
                SignalInput {
                    category: "Not Valid".into(),
                    ..input("t")
                },
                "category",
            ),
            (
                SignalInput {
                    labels: [("1bad".to_owned(), "v".to_owned())].into(),
                    ..input("t")
                },
                "labels",
            ),
            (
                SignalInput {
                    dedup_key: "k".repeat(256),
                    ..input("t")
                },
                "dedup_key",
            ),
            (input("a\0b"), "title"),
            (
                SignalInput {
                    description: "nul \0".into(),
                    ..input("t")
                },
                "description",
            ),
            (
                SignalInput {
                    labels: [("k".to_owned(), "v\0".to_owned())].into(),
                    ..input("t")
                },
                "labels",
            ),
        ];
        for (signal, field) in cases {
            match Signal::parse(signal) {
                Err(crate::Error::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn dedup_key_is_derived_from_source_and_title() {
        let a = Signal::parse(input("Disk full")).unwrap();
        let b = Signal::parse(input("disk full")).unwrap();
        let c = Signal::parse(input("Disk nearly full")).unwrap();
        assert_eq!(a.dedup_key, b.dedup_key);
        assert_ne!(a.dedup_key, c.dedup_key);
        assert!(a.dedup_key.starts_with("grpc:"));
    }

    /// Two hosts raising one title are two alerts with two keys (neither hides the other's
    /// labels); the label set counts as a set: order and empty values change nothing; an
    /// explicit key still wins over all of it.
    #[test]
    fn the_derived_dedup_key_holds_the_label_set() {
        let with = |labels: &[(&str, &str)], key: &str| {
            Signal::parse(SignalInput {
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                dedup_key: key.into(),
                ..input("Disk full")
            })
            .unwrap()
            .dedup_key
        };
        let a = with(&[("host", "a"), ("service", "api")], "");
        let b = with(&[("host", "b"), ("service", "api")], "");
        assert_ne!(a, b);
        assert_eq!(a, with(&[("service", "api"), ("host", "a")], ""));
        assert_eq!(
            a,
            with(&[("host", "a"), ("service", "api"), ("zone", "")], "")
        );
        assert_ne!(a, with(&[], ""));
        assert_eq!(with(&[("host", "a")], "disk/api"), "disk/api");
        assert_eq!(with(&[("host", "b")], "disk/api"), "disk/api");
    }

    #[test]
    fn labels_parse_from_key_value() {
        assert_eq!(
            parse_label("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
    }
}
