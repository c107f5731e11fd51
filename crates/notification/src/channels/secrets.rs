//! Secrets of channels (SMTP passwords, API tokens, signing keys, webhook URLs that hold a
//! token): named in configuration as `{secret: NAME}`, never written there, looked up once
//! by name when the channel is given its secrets, and cut out of every error text.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A reference to a secret by name: `{secret: smtp-password}` in configuration. The value
/// comes from the secret lookup (a file in `secrets_dir`, or `FIREBREAK_SECRET_<NAME>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef(String);

impl SecretRef {
    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The most characters a secret's name has.
const MAX_NAME: usize = 128;

/// Why `name` cannot name a secret: it is also a file name in `secrets_dir`, so no path
/// separators, no leading dot, nothing but letters, digits, `-`, `_` and `.`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a secret's name has 1 to {MAX_NAME} characters"));
    }
    if name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{name:?} is not a secret's name (letters, digits, '-', '_' and '.', not first)"
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{secret: NAME} naming a secret")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                // The text is not echoed: it may be the value someone pasted in.
                Err(E::custom(
                    "expects {secret: NAME} naming a secret (a file in secrets_dir or FIREBREAK_SECRET_<NAME>), never the value itself",
                ))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "secret" || name.is_some() {
                        return Err(de::Error::custom(format!(
                            "unknown or repeated key {key:?}: expects {{secret: NAME}}"
                        )));
                    }
                    name = Some(map.next_value::<String>()?);
                }
                let name = name.ok_or_else(|| de::Error::custom("expects {secret: NAME}"))?;
                check_name(&name).map_err(de::Error::custom)?;
                Ok(SecretRef(name))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A URL written in configuration, or the name of a secret holding it: webhook URLs of
/// Slack, Mattermost and Teams carry the token that lets anyone post, so either
/// `url: https://...` or `url: {secret: NAME}`. `Debug` shows a written URL's scheme and
/// host only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlOrSecret {
    Value(String),
    Secret(SecretRef),
}

impl fmt::Debug for UrlOrSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(url) => write!(f, "Value({:?})", origin(url)),
            Self::Secret(r) => write!(f, "Secret({:?})", r.name()),
        }
    }
}

/// `scheme://host[:port]/…` of `url`: enough to say where it goes, nothing of the token in
/// its path or query.
pub(crate) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl<'de> Deserialize<'de> for UrlOrSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = UrlOrSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or {secret: NAME} naming a secret")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UrlOrSecret, E> {
                Ok(UrlOrSecret::Value(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<UrlOrSecret, A::Error> {
                SecretRef::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(UrlOrSecret::Secret)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The values of a channel's secrets, by name, once looked up. `Debug` shows names only.
#[derive(Clone, Default)]
pub(crate) struct Secrets(BTreeMap<String, SecretString>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    pub(crate) fn insert(&mut self, name: &str, value: String) {
        self.0.insert(name.to_owned(), SecretString::from(value));
    }

    pub(crate) fn get(&self, r: &SecretRef) -> Option<&str> {
        self.0.get(r.name()).map(|s| s.expose_secret())
    }

    pub(crate) fn has(&self, r: &SecretRef) -> bool {
        self.0.contains_key(r.name())
    }

    /// `text` with every secret value replaced by `[redacted]`. Values shorter than four
    /// characters are left alone: cutting them would mangle ordinary words without hiding
    /// anything worth hiding.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.0
            .values()
            .map(|v| v.expose_secret())
            .filter(|v| v.len() >= 4)
            .fold(text.to_owned(), |t, v| t.replace(v, "[redacted]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_named_never_written() {
        let r: SecretRef =
            serde_json::from_value(serde_json::json!({"secret": "smtp-pass"})).unwrap();
        assert_eq!(r.name(), "smtp-pass");
        let e = serde_json::from_value::<SecretRef>(serde_json::json!("hunter2-value"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("never the value") && !e.contains("hunter2"),
            "{e}"
        );
        for bad in ["../etc/passwd", ".hidden", "a/b", ""] {
            assert!(
                serde_json::from_value::<SecretRef>(serde_json::json!({ "secret": bad })).is_err(),
                "{bad}"
            );
        }
        let i: UrlOrSecret = serde_json::from_value(serde_json::json!({"secret": "hook"})).unwrap();
        assert_eq!(i, UrlOrSecret::Secret(SecretRef("hook".into())));
        let i: UrlOrSecret = serde_json::from_value(serde_json::json!(
            "https://hooks.slack.com/services/T/B/tok"
        ))
        .unwrap();
        assert_eq!(format!("{i:?}"), "Value(\"https://hooks.slack.com/…\")");
        let mut s = Secrets::default();
        s.insert("tok", "xoxb-123-abc".into());
        assert_eq!(s.redact("bad token xoxb-123-abc!"), "bad token [redacted]!");
        assert!(!format!("{s:?}").contains("xoxb"));
    }
}
