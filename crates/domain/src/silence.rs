//! Silences, as Alertmanager has them: label matchers (`=`, `!=`, `=~`, `!~`; a regex is
//! anchored at both ends, as Alertmanager anchors it), a start, an end, who made it and why.
//! An alert whose labels every matcher of an active silence accepts is silenced. Pure: the
//! store keeps silences, intake's HTTP API serves them in Alertmanager's shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Micros;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }

    /// From Alertmanager's two flags.
    pub fn from_flags(is_regex: bool, is_equal: bool) -> Self {
        match (is_regex, is_equal) {
            (false, true) => Self::Equal,
            (false, false) => Self::NotEqual,
            (true, true) => Self::Regex,
            (true, false) => Self::NotRegex,
        }
    }

    pub fn is_regex(self) -> bool {
        matches!(self, Self::Regex | Self::NotRegex)
    }

    pub fn is_equal(self) -> bool {
        matches!(self, Self::Equal | Self::Regex)
    }
}

/// One condition on one label. A label an alert lacks has the empty value, as in
/// Alertmanager: `env=""` matches alerts without `env`, `env!=""` those with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// A matcher in amtool's syntax: `name=value`, `name!=value`, `name=~regex`,
    /// `name!~regex`, the value optionally in double quotes (`host=~"web-.*"`, with `\"`
    /// and `\\` inside). A bare word is `alertname=WORD`, as amtool reads a first matcher
    /// without an operator. Only the syntax is checked here; [`Matcher::compile`] checks
    /// the rest.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        let name_end = text
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(text.len());
        let (name, rest) = text.split_at(name_end);
        if rest.is_empty() && !name.is_empty() {
            return Ok(Matcher {
                name: "alertname".into(),
                op: MatchOp::Equal,
                value: name.into(),
            });
        }
        let (op, value) = [
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ]
        .into_iter()
        .find_map(|(sign, op)| rest.strip_prefix(sign).map(|v| (op, v)))
        .ok_or_else(|| {
            format!("{text:?} is not NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX")
        })?;
        if name.is_empty() {
            return Err(format!("{text:?} has no label name before its operator"));
        }
        Ok(Matcher {
            name: name.into(),
            op,
            value: unquote(value.trim())
                .ok_or_else(|| format!("{text:?}: the quoted value does not end with its quote"))?,
        })
    }
}

impl std::fmt::Display for Matcher {
    /// As amtool writes it: `name=~"value"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// A value as typed: in double quotes (escapes `\"` and `\\`), or bare. `None` for an
/// opening quote without its closing one.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            },
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// The most matchers a silence holds, and bytes of a name, a value (or regex), a comment and
/// a creator.
pub const MAX_MATCHERS: usize = 64;
pub const MAX_NAME: usize = 256;
pub const MAX_VALUE: usize = 1024;
pub const MAX_COMMENT: usize = 4096;
pub const MAX_CREATOR: usize = 256;
/// The most a compiled regex may take (it bounds the work of every match too).
const REGEX_SIZE: usize = 64 * 1024;

/// A matcher ready to match: its regex compiled once.
#[derive(Debug, Clone)]
pub struct Compiled {
    matcher: Matcher,
    regex: Option<regex::Regex>,
}

impl Matcher {
    /// Checks the matcher and compiles its regex (anchored); errors name the field given.
    pub fn compile(&self, field: &str) -> Result<Compiled, String> {
        if self.name.is_empty() || self.name.len() > MAX_NAME {
            return Err(format!("{field}.name: 1 to {MAX_NAME} bytes"));
        }
        let valid_name = self
            .name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid_name {
            return Err(format!(
                "{field}.name: {:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                self.name
            ));
        }
        if self.value.len() > MAX_VALUE || self.value.contains('\0') {
            return Err(format!("{field}.value: at most {MAX_VALUE} bytes, no NUL"));
        }
        let regex = if self.op.is_regex() {
            Some(
                regex::RegexBuilder::new(&format!("^(?:{})$", self.value))
                    .size_limit(REGEX_SIZE)
                    .build()
                    .map_err(|e| {
                        format!(
                            "{field}.value: {:?} is not a regex: {}",
                            self.value,
                            e.to_string().lines().last().unwrap_or("invalid")
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(Compiled {
            matcher: self.clone(),
            regex,
        })
    }
}

impl Compiled {
    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.matcher.name).map_or("", String::as_str);
        match (&self.regex, self.matcher.op) {
            (Some(r), MatchOp::Regex) => r.is_match(value),
            (Some(r), MatchOp::NotRegex) => !r.is_match(value),
            (_, MatchOp::NotEqual) => value != self.matcher.value,
            _ => value == self.matcher.value,
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

/// A silence as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: Micros,
    pub ends_at: Micros,
    pub created_by: String,
    pub comment: String,
    pub updated_at: Micros,
}

/// Where a silence is at an instant, as Alertmanager names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

impl Silence {
    /// Its state at `now`: pending before it starts, expired from its end on.
    pub fn state(&self, now: Micros) -> SilenceState {
        if now >= self.ends_at {
            SilenceState::Expired
        } else if now < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Checks a silence before it is kept: at least one matcher, and one that an empty
    /// label set does not satisfy (a silence of everything is refused, as Alertmanager
    /// refuses it); every regex compiles; it ends after it starts; the comment and creator
    /// fit. Errors name the field.
    pub fn check(&self) -> Result<Vec<Compiled>, String> {
        if self.matchers.is_empty() || self.matchers.len() > MAX_MATCHERS {
            return Err(format!("matchers: 1 to {MAX_MATCHERS}"));
        }
        let compiled = self
            .matchers
            .iter()
            .enumerate()
            .map(|(i, m)| m.compile(&format!("matchers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let empty = BTreeMap::new();
        if compiled.iter().all(|c| c.matches(&empty)) {
            return Err(
                "matchers: at least one must not match the empty label set (this would silence everything)"
                    .into(),
            );
        }
        if self.ends_at <= self.starts_at {
            return Err("endsAt: must be after startsAt".into());
        }
        if self.comment.len() > MAX_COMMENT || self.comment.contains('\0') {
            return Err(format!("comment: at most {MAX_COMMENT} bytes, no NUL"));
        }
        if self.created_by.len() > MAX_CREATOR || self.created_by.contains('\0') {
            return Err(format!("createdBy: at most {MAX_CREATOR} bytes, no NUL"));
        }
        Ok(compiled)
    }
}

/// Whether every matcher accepts `labels`.
pub fn silences(matchers: &[Compiled], labels: &BTreeMap<String, String>) -> bool {
    !matchers.is_empty() && matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn matchers_compare_as_alertmanager_does() {
        use MatchOp::*;
        let web = labels(&[("job", "web"), ("instance", "web-1:9100")]);
        // Table: matcher, whether it matches `web`.
        let table = [
            (m("job", Equal, "web"), true),
            (m("job", Equal, "we"), false),
            (m("job", NotEqual, "db"), true),
            (m("job", NotEqual, "web"), false),
            // Regexes are anchored at both ends: `we` is not `web`.
            (m("job", Regex, "we"), false),
            (m("job", Regex, "we.*"), true),
            (m("job", Regex, "db|web"), true),
            (m("instance", Regex, "web-[0-9]+:9100"), true),
            (m("instance", NotRegex, "web-.*"), false),
            (m("instance", NotRegex, "db-.*"), true),
            // A missing label is the empty value.
            (m("env", Equal, ""), true),
            (m("env", NotEqual, ""), false),
            (m("env", Regex, ".*"), true),
            (m("env", Regex, ".+"), false),
            (m("job", Equal, ""), false),
        ];
        for (matcher, want) in table {
            let c = matcher.compile("m").unwrap();
            assert_eq!(
                c.matches(&web),
                want,
                "{} {} {:?}",
                matcher.name,
                matcher.op.as_str(),
                matcher.value
            );
        }
    }

    #[test]
    fn matchers_parse_in_amtools_syntax() {
        use MatchOp::*;
        for (text, want) in [
            ("alertname=DiskFull", m("alertname", Equal, "DiskFull")),
            ("job!=batch", m("job", NotEqual, "batch")),
            ("host=~\"web-.*\"", m("host", Regex, "web-.*")),
            ("a!~b", m("a", NotRegex, "b")),
            ("env=\"\"", m("env", Equal, "")),
            ("env=", m("env", Equal, "")),
            ("msg=\"say \\\"hi\\\"\"", m("msg", Equal, "say \"hi\"")),
            ("path=~\"a\\.b\"", m("path", Regex, "a\\.b")),
            ("DiskFull", m("alertname", Equal, "DiskFull")),
            ("x=a=b", m("x", Equal, "a=b")),
        ] {
            assert_eq!(Matcher::parse(text).unwrap(), want, "{text}");
        }
        // Written back as amtool writes it, it parses to the same matcher.
        let back = m("host", Regex, "web-\"1\".*").to_string();
        assert_eq!(
            Matcher::parse(&back).unwrap(),
            m("host", Regex, "web-\"1\".*")
        );
        for bad in [
            "",
            "=web",
            "job\"=x",
            "job=\"web",
            "job=\"a\"b",
            "job~web",
            "-x",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn silence(matchers: Vec<Matcher>, starts: i64, ends: i64) -> Silence {
        Silence {
            id: "s1".into(),
            matchers,
            starts_at: Micros::from_unix_micros(starts),
            ends_at: Micros::from_unix_micros(ends),
            created_by: "amy".into(),
            comment: "deploy".into(),
            updated_at: Micros::from_unix_micros(0),
        }
    }

    #[test]
    fn a_silence_is_pending_active_then_expired_and_bad_ones_are_refused_naming_the_field() {
        let s = silence(vec![m("job", MatchOp::Equal, "web")], 10, 20);
        assert_eq!(s.state(Micros::from_unix_micros(9)), SilenceState::Pending);
        assert_eq!(s.state(Micros::from_unix_micros(10)), SilenceState::Active);
        assert_eq!(s.state(Micros::from_unix_micros(20)), SilenceState::Expired);
        let compiled = s.check().unwrap();
        assert!(silences(&compiled, &labels(&[("job", "web")])));
        assert!(!silences(&compiled, &labels(&[("job", "db")])));
        for (bad, field) in [
            (silence(vec![], 10, 20), "matchers"),
            (
                silence(vec![m("job", MatchOp::Regex, "(")], 10, 20),
                "matchers[0].value",
            ),
            (
                silence(vec![m("job", MatchOp::Regex, ".*")], 10, 20),
                "matchers: at least one",
            ),
            (
                silence(vec![m("env", MatchOp::Equal, "")], 10, 20),
                "matchers: at least one",
            ),
            (
                silence(vec![m("job", MatchOp::Equal, "web")], 20, 10),
                "endsAt",
            ),
            (
                silence(vec![m("job", MatchOp::Equal, "web")], 10, 10),
                "endsAt",
            ),
            (
                silence(vec![m("1job", MatchOp::Equal, "web")], 10, 20),
                "matchers[0].name",
            ),
            (
                silence(
                    vec![m("job", MatchOp::Regex, &"a{1000}".repeat(20))],
                    10,
                    20,
                ),
                "matchers[0].value",
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}
