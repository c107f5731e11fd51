//! `X_file` variants of the secret-bearing keys: `nats: {password_file: /run/secrets/nats}`
//! reads the secret from that file (a mounted Kubernetes Secret) instead of the
//! configuration. Resolved on the loaded YAML before it is read into [`super::Config`]:
//! `X_file` is replaced by `X`, so the typed configuration never knows which form was used.
//!
//! Rules, one for every such key (`secrets_encryption.key_file`, read when a service starts,
//! keeps only the second and third): the file's text is the value, less one trailing newline;
//! setting `X` and `X_file` in one layer is an error naming both; a later layer (the
//! environment over the file) setting one replaces the other; a file that is missing,
//! unreadable, not a regular file, larger than [`MAX_SECRET_FILE_BYTES`], not UTF-8 or
//! empty is an error naming the key and the path.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::SecretText;
use super::origin::{ConfigError, KeyPath, Seg, Sources};

/// The largest secret file read: secrets are keys, tokens and URLs, never this large.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// How a secret-bearing key takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// The secret's text itself (`nats.password`).
    Text,
    /// `{secret: NAME}`, as channels name their secrets: the file's text becomes a secret of
    /// its own, named after the key (`channels.0.token_file`).
    Named,
}

/// A secret-bearing key that has an `X_file` variant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecretKey {
    /// The map holding it: `nats`, `integrations[]` (each entry of a list), `` (the top).
    pub(crate) within: &'static str,
    /// The key; `*` for every key of the map (`channels[].secrets` of an SMS gateway).
    pub(crate) key: &'static str,
    pub(crate) form: Form,
    /// For channels: the kinds that have the key (another kind's `X_file` stays an
    /// unknown key).
    pub(crate) kinds: &'static [&'static str],
    /// Whether `X_file` is a field of the typed configuration itself, read when a service
    /// starts rather than here (`secrets_encryption.key_file`): only the rule that `X` and
    /// `X_file` exclude each other applies.
    pub(crate) file_key_in_schema: bool,
}

const fn text(within: &'static str, key: &'static str) -> SecretKey {
    SecretKey {
        within,
        key,
        form: Form::Text,
        kinds: &[],
        file_key_in_schema: false,
    }
}

const fn channel(key: &'static str, kinds: &'static [&'static str]) -> SecretKey {
    SecretKey {
        within: "channels[]",
        key,
        form: Form::Named,
        kinds,
        file_key_in_schema: false,
    }
}

/// Every secret-bearing key of the configuration. A test checks each names a key of the
/// schema; docs/configuration.md lists their `_file` variants from here.
pub(crate) const SECRET_KEYS: &[SecretKey] = &[
    text("", "database_url"),
    text("integrations[]", "key"),
    text("integrations[]", "signing_secret"),
    SecretKey {
        form: Form::Named,
        ..text("responses", "signing_key")
    },
    text("nats", "password"),
    text("nats", "token"),
    text("nats", "nkey_seed"),
    text("auth", "service_token"),
    text("auth", "admin_token"),
    SecretKey {
        file_key_in_schema: true,
        ..text("secrets_encryption", "key")
    },
    channel(
        "url",
        &["webhook", "slack_webhook", "mattermost_webhook", "teams"],
    ),
    channel("signing_secret", &["webhook", "slack"]),
    channel("password", &["email"]),
    channel("token", &["slack", "mattermost"]),
    channel("auth_token", &["twilio"]),
    SecretKey {
        within: "channels[].secrets",
        key: "*",
        form: Form::Named,
        kinds: &["sms_gateway"],
        file_key_in_schema: false,
    },
];

/// The suffix of a file variant.
const SUFFIX: &str = "_file";

/// Replaces every `X_file` of a secret-bearing key in `value` by `X`, read from the file;
/// returns the secrets of [`Form::Named`] keys by the names they were given. Records in
/// `sources` where each value was read from.
pub(crate) fn resolve(
    value: &mut Value,
    sources: &mut Sources,
) -> Result<BTreeMap<String, SecretText>, ConfigError> {
    let mut named = BTreeMap::new();
    for secret in SECRET_KEYS {
        for at in maps_within(value, secret.within) {
            if !secret.kinds.is_empty() && !channel_kind_in(value, &at, secret.kinds) {
                continue;
            }
            let Some(Value::Mapping(map)) = get_mut(value, &at) else {
                continue;
            };
            let keys: Vec<String> = if secret.key == "*" {
                map.keys()
                    .filter_map(Value::as_str)
                    .filter_map(|k| k.strip_suffix(SUFFIX))
                    .map(str::to_owned)
                    .collect()
            } else {
                vec![secret.key.to_owned()]
            };
            for key in keys {
                resolve_one(map, &at, &key, secret, sources, &mut named)?;
            }
        }
    }
    Ok(named)
}

/// Resolves `key_file` of the map at `at`, if it is set.
fn resolve_one(
    map: &mut Mapping,
    at: &KeyPath,
    key: &str,
    secret: &SecretKey,
    sources: &mut Sources,
    named: &mut BTreeMap<String, SecretText>,
) -> Result<(), ConfigError> {
    let file_key = format!("{key}{SUFFIX}");
    let Some(file) = map.get(file_key.as_str()) else {
        return Ok(());
    };
    let in_schema = secret.file_key_in_schema;
    let file_path = at.key(&file_key);
    if map.contains_key(key) {
        return Err(sources.error(
            &file_path,
            format!(
                "{} is set too: give the secret or the file holding it, not both",
                at.key(key)
            ),
        ));
    }
    if in_schema {
        return Ok(());
    }
    let Value::String(file) = file else {
        return Err(sources.error(&file_path, "must be a file's path"));
    };
    let file = file.clone();
    let text = read_secret_file(Path::new(&file)).map_err(|e| sources.error(&file_path, e))?;
    let value = match secret.form {
        Form::Text => Value::String(text),
        Form::Named => {
            let name = secret_name(&file_path);
            named.insert(name.clone(), SecretText(text));
            let mut m = Mapping::new();
            m.insert("secret".into(), Value::String(name));
            Value::Mapping(m)
        }
    };
    sources.read_from(at.key(key), &file, &file_path);
    map.remove(file_key.as_str());
    map.insert(Value::String(key.to_owned()), value);
    Ok(())
}

/// The name a [`Form::Named`] secret read from a file goes by: its `X_file` key's path with
/// indexes as keys (`channels.0.token_file`), a valid secret name that says where it is from.
fn secret_name(path: &KeyPath) -> String {
    path.0
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A secret file's text, less one trailing newline (`\n` or `\r\n`); why not, in words that
/// name the path.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    // Follows symbolic links: a mounted Kubernetes Secret is one.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let too_large = || format!("{shown} is larger than {} KiB", MAX_SECRET_FILE_BYTES >> 10);
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    if text.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(text)
}

/// The key an environment variable setting `path` replaces, when `path` is a secret-bearing
/// key or its file variant: the other form of the same secret.
pub(crate) fn other_form(path: &[String]) -> Option<Vec<String>> {
    let (last, parent) = path.split_last()?;
    let within = parent.join(".");
    let (key, other) = match last.strip_suffix(SUFFIX) {
        Some(key) => (key.to_owned(), key.to_owned()),
        None => (last.clone(), format!("{last}{SUFFIX}")),
    };
    SECRET_KEYS
        .iter()
        .any(|s| s.within == within && s.key == key)
        .then(|| parent.iter().cloned().chain([other]).collect())
}

/// The paths of the maps `pattern` names in `value`: `nats`, `integrations[]` (each entry),
/// `channels[].secrets`, `` (the top).
fn maps_within(value: &Value, pattern: &str) -> Vec<KeyPath> {
    let mut found = vec![(KeyPath::default(), value)];
    for part in pattern.split('.').filter(|p| !p.is_empty()) {
        let (key, each) = match part.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for (at, v) in found {
            let Some(child) = v.get(key) else { continue };
            let at = at.key(key);
            match (each, child) {
                (false, _) => next.push((at, child)),
                (true, Value::Sequence(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        next.push((at.join(&KeyPath(vec![Seg::Index(i)])), item));
                    }
                }
                (true, _) => {}
            }
        }
        found = next;
    }
    found
        .into_iter()
        .filter(|(_, v)| v.is_mapping())
        .map(|(at, _)| at)
        .collect()
}

/// Whether the channel `at` is in (`channels[i]` or below) has one of `kinds`.
fn channel_kind_in(value: &Value, at: &KeyPath, kinds: &[&str]) -> bool {
    let Some(Seg::Index(i)) = at.0.get(1) else {
        return false;
    };
    value
        .get("channels")
        .and_then(|c| c.get(*i))
        .and_then(|c| c.get("kind"))
        .and_then(Value::as_str)
        .is_some_and(|k| kinds.contains(&k))
}

/// The value at `path`, to change.
fn get_mut<'a>(value: &'a mut Value, path: &KeyPath) -> Option<&'a mut Value> {
    path.0.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_secret_file_loses_one_trailing_newline_and_hostile_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        for (bytes, want) in [
            (&b"s3cret"[..], "s3cret"),
            (b"s3cret\n", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret\n\n", "s3cret\n"),
            (b" s3cret \n", " s3cret "),
            (b"line1\nline2\n", "line1\nline2"),
        ] {
            assert_eq!(read_secret_file(&at("ok", bytes)).unwrap(), want);
        }
        // A mounted Kubernetes Secret is a symbolic link to the file.
        let target = at("target", b"linked\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_secret_file(&link).unwrap(), "linked");

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        let cases = [
            (dir.path().join("missing"), "cannot read "),
            (dangling, "cannot read "),
            (dir.path().to_owned(), "is not a regular file"),
            (fifo, "is not a regular file"),
            (PathBuf::from("/dev/zero"), "is not a regular file"),
            (
                at("big", &vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1]),
                "is larger than 64 KiB",
            ),
            (at("binary", b"\xff\xfe\x00"), "is not UTF-8 text"),
            (at("empty", b""), "is empty"),
            (at("newline", b"\n"), "is empty"),
        ];
        for (path, want) in cases {
            let e = read_secret_file(&path).unwrap_err();
            assert!(
                e.contains(want) && e.contains(&path.display().to_string()),
                "{}: {e}",
                path.display()
            );
        }
        // At the limit is fine.
        let limit = at("limit", &vec![b'x'; MAX_SECRET_FILE_BYTES as usize]);
        assert_eq!(
            read_secret_file(&limit).unwrap().len() as u64,
            MAX_SECRET_FILE_BYTES
        );
    }

    #[test]
    fn the_environment_replaces_the_other_form_of_a_secret_only() {
        let p = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            other_form(&p("nats.password_file")),
            Some(p("nats.password"))
        );
        assert_eq!(
            other_form(&p("nats.password")),
            Some(p("nats.password_file"))
        );
        assert_eq!(other_form(&p("database_url")), Some(p("database_url_file")));
        assert_eq!(
            other_form(&p("secrets_encryption.key_file")),
            Some(p("secrets_encryption.key"))
        );
        for not_secret in ["nats.url", "tls.ca_file", "nats.credentials_file", "live"] {
            assert_eq!(other_form(&p(not_secret)), None, "{not_secret}");
        }
    }
}
