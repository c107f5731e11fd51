//! Secrets for runbooks: looked up by name, put into the requests a host sends, and redacted
//! from everything a run records.

use std::path::PathBuf;

use firebreak_runbook::{Secret, secret_placeholder};
use serde_json::Value;

/// Where secret values come from: a file per secret in `dir` (a mounted Kubernetes Secret),
/// else the environment variable `FIREBREAK_SECRET_<NAME>` (upper case, `-` as `_`).
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub dir: Option<PathBuf>,
}

impl SecretSource {
    /// The value of a secret, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(dir) = &self.dir
            && let Ok(v) = std::fs::read_to_string(dir.join(name))
        {
            return Some(v.trim_end_matches(['\n', '\r']).to_owned());
        }
        let var = format!(
            "FIREBREAK_SECRET_{}",
            name.to_ascii_uppercase().replace('-', "_")
        );
        std::env::var(var).ok()
    }
}

/// Puts the values of the `allowed` secrets in place of their placeholders in every string
/// of `args`. Returns the new arguments and the values used, to redact later.
pub(crate) fn inject(
    args: &Value,
    allowed: &[Secret],
    source: &SecretSource,
) -> Result<(Value, Vec<String>), String> {
    let mut used = Vec::new();
    let mut out = args.clone();
    for name in allowed.iter().map(|s| &s.name) {
        let placeholder = secret_placeholder(name);
        if !mentions(&out, &placeholder) {
            continue;
        }
        let value = source
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("secret {name:?} is not set"))?;
        replace(&mut out, &placeholder, &value);
        used.push(value);
    }
    Ok((out, used))
}

/// The declared secrets whose placeholders `args` carries.
pub(crate) fn carried<'a>(args: &Value, declared: &'a [Secret]) -> Vec<&'a Secret> {
    declared
        .iter()
        .filter(|s| mentions(args, &secret_placeholder(&s.name)))
        .collect()
}

/// Refuses, before anything is sent, a step that would carry `secrets` anywhere but to
/// their hosts: secrets go only in http requests, whose URL (`url`, with the values in
/// place, as the request goes out) names a host every carried secret lists.
pub(crate) fn check_destination(
    action: &str,
    url: &str,
    secrets: &[&Secret],
) -> Result<(), String> {
    let Some(first) = secrets.first() else {
        return Ok(());
    };
    if !action.starts_with("http.") {
        return Err(format!(
            "capability denied: secret {:?} may be sent only in http requests to its hosts, not by {action}",
            first.name
        ));
    }
    let url = reqwest::Url::parse(url).map_err(|e| {
        format!(
            "capability denied: a request carrying secret {:?} needs a valid url ({e})",
            first.name
        )
    })?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
    for s in secrets {
        let allowed = s
            .hosts
            .iter()
            .any(|h| *h == host || with_port.as_ref() == Some(h));
        if allowed {
            continue;
        }
        let name = &s.name;
        return Err(if s.hosts.is_empty() {
            format!(
                "capability denied: secret {name:?} names no hosts it may be sent to (declare them in the manifest: secrets: [{{name: {name}, hosts: [HOST]}}])"
            )
        } else {
            format!(
                "capability denied: secret {name:?} may not be sent to {host} (its hosts: {})",
                s.hosts.join(", ")
            )
        });
    }
    Ok(())
}

/// Replaces every value in `values` by `[redacted]` in the strings of `v`.
pub(crate) fn redact(v: &mut Value, values: &[String]) {
    for value in values {
        replace(v, value, "[redacted]");
    }
}

/// `text` with every value in `values` replaced by `[redacted]`.
pub(crate) fn redact_str(text: &str, values: &[String]) -> String {
    values
        .iter()
        .fold(text.to_owned(), |t, v| t.replace(v.as_str(), "[redacted]"))
}

fn mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.contains(needle),
        Value::Array(a) => a.iter().any(|x| mentions(x, needle)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k.contains(needle) || mentions(x, needle)),
        _ => false,
    }
}

fn replace(v: &mut Value, from: &str, to: &str) {
    if from.is_empty() {
        return;
    }
    match v {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(a) => a.iter_mut().for_each(|x| replace(x, from, to)),
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().filter(|k| k.contains(from)).cloned().collect();
            for k in keys {
                if let Some(x) = o.remove(&k) {
                    o.insert(k.replace(from, to), x);
                }
            }
            o.values_mut().for_each(|x| replace(x, from, to));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn injects_declared_secrets_and_redacts_them_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "s3cr3t-value\n").unwrap();
        let source = SecretSource {
            dir: Some(dir.path().to_path_buf()),
        };
        let args = json!({ "headers": { "Authorization": "Bearer {{secret:api-token}}" }, "url": "http://x/{{secret:other}}" });
        let declared = |name: &str| Secret {
            name: name.into(),
            hosts: vec!["x".into()],
        };
        let (out, used) = inject(&args, &[declared("api-token")], &source).unwrap();
        assert_eq!(out["headers"]["Authorization"], "Bearer s3cr3t-value");
        // Undeclared secrets stay placeholders.
        assert_eq!(out["url"], "http://x/{{secret:other}}");
        let mut echoed = json!({ "body": "you sent s3cr3t-value" });
        redact(&mut echoed, &used);
        assert_eq!(echoed["body"], "you sent [redacted]");
        assert_eq!(
            redact_str("error at http://s3cr3t-value/", &used),
            "error at http://[redacted]/"
        );
        let missing = inject(&json!("{{secret:gone}}"), &[declared("gone")], &source).unwrap_err();
        assert_eq!(missing, "secret \"gone\" is not set");
    }

    #[test]
    fn secrets_go_only_to_their_hosts() {
        let tok = Secret {
            name: "tok".into(),
            hosts: vec!["api.example.com".into(), "10.0.0.1:8443".into()],
        };
        let bare = Secret {
            name: "bare".into(),
            hosts: Vec::new(),
        };
        let ok = |action: &str, url: &str| check_destination(action, url, &[&tok]);
        assert_eq!(ok("http.get", "https://API.example.com/x?t=1"), Ok(()));
        assert_eq!(ok("http.post", "https://10.0.0.1:8443/"), Ok(()));
        // Another port, host, a look-alike, user info naming the allowed host.
        for url in [
            "https://10.0.0.1/",
            "https://evil.example/api.example.com",
            "https://api.example.com.evil.example/",
            "https://api.example.com@evil.example/",
            "not a url",
        ] {
            assert!(
                ok("http.get", url)
                    .unwrap_err()
                    .starts_with("capability denied"),
                "{url}"
            );
        }
        let e = ok("exec.run", "").unwrap_err();
        assert!(e.contains("only in http requests"), "{e}");
        let e =
            check_destination("http.get", "https://api.example.com/", &[&tok, &bare]).unwrap_err();
        assert!(e.contains("secret \"bare\" names no hosts"), "{e}");
        // Nothing carried, nothing to check.
        assert_eq!(check_destination("exec.run", "", &[]), Ok(()));
        let args = json!({ "url": "https://x/", "headers": { "A": "{{secret:tok}}" } });
        assert_eq!(carried(&args, &[tok.clone(), bare.clone()]), vec![&tok]);
    }
}
