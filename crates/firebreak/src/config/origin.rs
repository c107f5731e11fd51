//! Where a configuration value came from — a line of the file, or an environment variable —
//! so that every configuration error names the key path and its line
//! (`channels[0].events[0]: … (line 12 of firebreak.yaml)`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path into the configuration: `channels[0].events`, `nats.url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// The path of an environment variable's key (`["nats", "url"]`).
    pub(crate) fn keys(keys: &[String]) -> Self {
        Self(keys.iter().cloned().map(Seg::Key).collect())
    }

    /// The path serde_path_to_error tracked to an error.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        Self(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }

    /// Reads `a.b[2].c` (keys of letters, digits, `_` and `-`); `None` for other text.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut segs = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                segs.push(Seg::Index(after[..end].parse().ok()?));
                rest = &after[end + 1..];
                continue;
            }
            let rest_key = if segs.is_empty() {
                rest
            } else {
                rest.strip_prefix('.')?
            };
            let end = rest_key.find(['.', '[']).unwrap_or(rest_key.len());
            let key = &rest_key[..end];
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            {
                return None;
            }
            segs.push(Seg::Key(key.to_owned()));
            rest = &rest_key[end..];
        }
        (!segs.is_empty()).then_some(Self(segs))
    }

    /// This path with `more` after it.
    pub(crate) fn join(&self, more: &KeyPath) -> Self {
        Self(self.0.iter().chain(&more.0).cloned().collect())
    }

    /// This path with one more key.
    pub(crate) fn key(&self, key: &str) -> Self {
        self.join(&Self(vec![Seg::Key(key.to_owned())]))
    }

    fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// What the configuration was read from: the file's text, and the key each environment
/// variable set.
#[derive(Default)]
pub(crate) struct Sources {
    file: Option<(PathBuf, String)>,
    env: Vec<(KeyPath, String)>,
    /// Values read from files their `X_file` key named, and where each was read from.
    read: Vec<(KeyPath, String)>,
}

impl Sources {
    pub(crate) fn new(file: Option<(&Path, &str)>) -> Self {
        Self {
            file: file.map(|(p, t)| (p.to_owned(), t.to_owned())),
            env: Vec::new(),
            read: Vec::new(),
        }
    }

    /// Records that the value at `path` was read from `file`, which the key `named_by`
    /// names.
    pub(crate) fn read_from(&mut self, path: KeyPath, file: &str, named_by: &KeyPath) {
        let by = match self.origin(named_by) {
            Some(origin) => format!("{named_by}, {origin}"),
            None => named_by.to_string(),
        };
        self.read.push((path, format!("read from {file} ({by})")));
    }

    /// Records that environment variable `var` set the value at `path`.
    pub(crate) fn set_by_env(&mut self, path: KeyPath, var: &str) {
        self.env.retain(|(p, _)| !p.starts_with(&path));
        self.env.push((path, var.to_owned()));
    }

    /// Where the value at `path` came from: the environment variable that set it (or a map
    /// or list around it), else the line of the file holding it or, when the file does not
    /// hold it (a default, a missing key), the nearest enclosing key that it holds.
    pub(crate) fn origin(&self, path: &KeyPath) -> Option<String> {
        if let Some((_, read)) = self.read.iter().find(|(p, _)| path.starts_with(p)) {
            return Some(read.clone());
        }
        if let Some((_, var)) = self
            .env
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.0.len())
        {
            return Some(format!("from {var}"));
        }
        let (file, text) = self.file.as_ref()?;
        (1..=path.0.len()).rev().find_map(|n| {
            locate(text, &path.0[..n]).map(|line| format!("line {line} of {}", file.display()))
        })
    }

    /// An error naming `path`, with where its value came from.
    pub(crate) fn error(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.to_string(),
            message: message.into(),
            origin: self.origin(path),
        }
    }

    /// `message` (a validation's, which names a key path somewhere in its text, such as
    /// `invalid grouping.rules[0].window: …`) with the origin of the first key path in it
    /// whose first key is one of `roots`.
    pub(crate) fn annotate(&self, message: &str, roots: &[&str]) -> ConfigError {
        let path = message
            .split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '(' | ')' | '`' | '"'))
            .filter_map(KeyPath::parse)
            .find(|p| matches!(p.0.first(), Some(Seg::Key(k)) if roots.contains(&k.as_str())));
        // "invalid grouping.rules[0].window: …" reads as the other errors do without it.
        let message = match &path {
            Some(p) => message
                .strip_prefix("invalid ")
                .filter(|rest| rest.starts_with(&p.to_string()))
                .unwrap_or(message),
            None => message,
        };
        ConfigError {
            path: String::new(),
            message: message.to_owned(),
            origin: path.and_then(|p| self.origin(&p)),
        }
    }
}

/// A configuration refused: the key path at fault, why, and where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `channels[0].events[0]`; empty when the message names its own key path, or there is
    /// none (a file that is not YAML).
    pub path: String,
    pub message: String,
    /// `line 12 of firebreak.yaml`, `from FIREBREAK_NATS__URL`.
    pub origin: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Marks the error the walk raises where it finds the node: serde_yaml gives that error the
/// node's position.
const HERE: &str = "\u{1}firebreak-config-node";

/// The one-based line of the node at `path` in the YAML `text` (of the key, when the path
/// ends with one), or `None` when the text does not hold it.
pub(crate) fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    let de = serde_yaml::Deserializer::from_str(text);
    match Walk(path).deserialize(de) {
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The first key that a map of the YAML `text` repeats, and the one-based line of its
/// repetition.
pub(crate) fn find_repeated_key(text: &str) -> Option<(KeyPath, usize)> {
    let found = std::cell::RefCell::new(None);
    let de = serde_yaml::Deserializer::from_str(text);
    match (Repeats {
        at: KeyPath::default(),
        found: &found,
    })
    .deserialize(de)
    {
        Err(e) if e.to_string().contains(HERE) => {
            let line = e.location()?.line();
            found.into_inner().map(|path| (path, line))
        }
        _ => None,
    }
}

/// Walks a whole YAML document, failing on the first repeated key of a map.
struct Repeats<'a> {
    at: KeyPath,
    found: &'a std::cell::RefCell<Option<KeyPath>>,
}

impl<'de> DeserializeSeed<'de> for Repeats<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Repeats<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Repeats {
                at: self.at.join(&KeyPath(vec![Seg::Index(i)])),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key_seed(KeyText {
            seen: &seen,
            at: &self.at,
            found: self.found,
        })? {
            map.next_value_seed(Repeats {
                at: self.at.key(&key),
                found: self.found,
            })?;
            seen.insert(key);
        }
        Ok(())
    }
}

/// A map key as text (a key that is itself a map or list reads as nothing to compare);
/// fails on a key `seen` holds already, recording its path.
struct KeyText<'a> {
    seen: &'a std::collections::HashSet<String>,
    at: &'a KeyPath,
    found: &'a std::cell::RefCell<Option<KeyPath>>,
}

impl<'de> DeserializeSeed<'de> for KeyText<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyText<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.seen.contains(v) {
            *self.found.borrow_mut() = Some(self.at.key(v));
            return Err(E::custom(HERE));
        }
        Ok(v.to_owned())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.visit_str("~")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
}

/// Follows a key path through a YAML document and fails at its end, so that the error
/// carries the position.
struct Walk<'a>(&'a [Seg]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Reached only when the walk is at its end (any value is refused with this text) or
        // meets a scalar where the path goes on (a different message: not found).
        if self.0.is_empty() {
            f.write_str(HERE)
        } else {
            f.write_str("a map or a list")
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(if self.0.is_empty() { HERE } else { "" }));
        };
        while let Some(found) = map.next_key_seed(KeyMatch {
            want,
            last: rest.is_empty(),
        })? {
            if found {
                return map.next_value_seed(Walk(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(if self.0.is_empty() { HERE } else { "" }));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk(rest)).map(|_| ())
    }
}

/// Reads a map key: whether it is the one wanted; the last key of a path fails on the key
/// itself, so the position is the key's line.
struct KeyMatch<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.want, self.last) {
            (true, true) => Err(E::custom(HERE)),
            (found, _) => Ok(found),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> KeyPath {
        KeyPath::parse(text).unwrap()
    }

    #[test]
    fn key_paths_read_and_print_alike() {
        for text in [
            "nats",
            "nats.url",
            "channels[0].events[12]",
            "a-b.c_d[3][4]",
        ] {
            assert_eq!(path(text).to_string(), text);
        }
        for bad in ["", ".a", "a.", "a..b", "a[x]", "a[1", "a b", "[0]x", "a.b!"] {
            assert_eq!(KeyPath::parse(bad), None, "{bad}");
        }
        assert_eq!(
            KeyPath::parse("[0]"),
            Some(KeyPath(vec![Seg::Index(0)])),
            "a bare index"
        );
    }

    const YAML: &str = "\
live: true
nats:
  url: nats://x:4222
  # a comment
  ack_wait_seconds: 5
channels:
  - name: ops
    kind: webhook
  - { name: page, kind: slack,
      events: [opened, bogus] }
empty:
\"7\": seven
";

    #[test]
    fn nodes_are_found_at_their_lines() {
        for (p, line) in [
            ("live", 1),
            ("nats", 2),
            ("nats.url", 3),
            ("nats.ack_wait_seconds", 5),
            ("channels", 6),
            ("channels[0]", 7),
            ("channels[0].kind", 8),
            ("channels[1]", 9),
            ("channels[1].events", 10),
            ("channels[1].events[1]", 10),
            ("empty", 11),
            ("7", 12),
        ] {
            assert_eq!(locate(YAML, &path(p).0), Some(line), "{p}");
        }
        for absent in [
            "nats.user",
            "channels[2]",
            "channels[0].kind.x",
            "live.x",
            "x",
            "channels.x",
            "nats[0]",
        ] {
            assert_eq!(locate(YAML, &path(absent).0), None, "{absent}");
        }
        assert_eq!(locate("[a: 1", &path("a").0), None, "not YAML");
    }

    #[test]
    fn a_repeated_key_is_found_at_its_repetition() {
        let text = "live: true\nnats:\n  url: a\n  user: u\n  url: b\nlive: false\n";
        assert_eq!(find_repeated_key(text), Some((path("nats.url"), 5)));
        let text = "channels:\n  - {name: a, kind: log}\n  - {name: b, kind: log,\n     name: c}\n";
        assert_eq!(find_repeated_key(text), Some((path("channels[1].name"), 4)));
        assert_eq!(find_repeated_key(YAML), None);
        assert_eq!(find_repeated_key("a: [\n"), None);
    }

    #[test]
    fn origins_prefer_the_environment_then_the_nearest_line() {
        let mut s = Sources::new(Some((Path::new("f.yaml"), YAML)));
        s.set_by_env(path("nats.url"), "FIREBREAK_NATS__URL");
        assert_eq!(
            s.origin(&path("nats.url")).as_deref(),
            Some("from FIREBREAK_NATS__URL")
        );
        assert_eq!(
            s.origin(&path("nats.ack_wait_seconds")).as_deref(),
            Some("line 5 of f.yaml")
        );
        // Not in the file: the nearest enclosing key that is.
        assert_eq!(
            s.origin(&path("channels[0].url")).as_deref(),
            Some("line 7 of f.yaml")
        );
        assert_eq!(s.origin(&path("grpc_addr")), None);
        // A later variable setting a whole map replaces what earlier ones set inside it.
        s.set_by_env(path("nats"), "FIREBREAK_NATS");
        assert_eq!(
            s.origin(&path("nats.url")).as_deref(),
            Some("from FIREBREAK_NATS")
        );
        let e = s.annotate(
            "invalid channels[1].events[1]: \"bogus\" is not an event",
            &["channels"],
        );
        assert_eq!(
            e.to_string(),
            "channels[1].events[1]: \"bogus\" is not an event (line 10 of f.yaml)"
        );
        assert_eq!(
            s.error(&path("channels[1].events[1]"), "bad").to_string(),
            "channels[1].events[1]: bad (line 10 of f.yaml)"
        );
    }
}
