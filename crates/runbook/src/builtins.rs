//! Action-free modules every script gets: `url` builds URLs with escaped parts, `validate`
//! checks incident labels before they reach an action.
//!
//! Labels come from whoever raised the alert, anonymous callers included, so a runbook must
//! never paste one into a URL or a request as it is: `../../admin?x#` in a path segment or
//! `0.0.0.0/0` as an address to block turns a containment step into an attack.

use std::net::IpAddr;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module};

/// Longest name `validate::name` accepts, as a label key.
const MAX_NAME: usize = 128;
/// Longest address `validate::email` accepts (RFC 5321).
const MAX_EMAIL: usize = 254;
/// Longest text `validate::text` accepts, as a label value.
const MAX_TEXT: usize = 1024;
/// Longest URL `url::join` builds.
const MAX_URL: usize = 8 * 1024;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

pub(crate) fn register(engine: &mut Engine) {
    let mut url = Module::new();
    url.set_native_fn("join", |base: ImmutableString, segments: rhai::Array| {
        join(&base, &segments, &Map::new())
    });
    url.set_native_fn(
        "join",
        |base: ImmutableString, segments: rhai::Array, query: Map| join(&base, &segments, &query),
    );
    url.set_native_fn("escape", |part: Dynamic| {
        Ok(escape(&scalar("url::escape", &part)?))
    });
    engine.register_static_module("url", url.into());

    let mut validate = Module::new();
    validate.set_native_fn("ip", |field: ImmutableString, value: Dynamic| {
        check(&field, value, ip)
    });
    validate.set_native_fn("name", |field: ImmutableString, value: Dynamic| {
        check(&field, value, name)
    });
    validate.set_native_fn("email", |field: ImmutableString, value: Dynamic| {
        check(&field, value, email)
    });
    validate.set_native_fn("text", |field: ImmutableString, value: Dynamic| {
        check(&field, value, text)
    });
    engine.register_static_module("validate", validate.into());
}

/// `base` + `/segment`... + `?key=value&...`, every segment and query part percent-escaped.
fn join(base: &str, segments: &[Dynamic], query: &Map) -> Fallible<ImmutableString> {
    let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
    if !scheme_ok || base.contains(['?', '#']) || base.chars().any(char::is_whitespace) {
        return Err(format!(
            "url::join: base {base:?} must be an http:// or https:// URL without query or fragment"
        )
        .into());
    }
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in segments {
        let segment = scalar("url::join: a path segment", segment)?;
        // "." and ".." stay special even escaped (%2E%2E is the same segment to a server).
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "url::join: the path segment {segment:?} is empty or a dot segment"
            )
            .into());
        }
        url.push('/');
        url.push_str(&escape(&segment));
    }
    let mut first = true;
    for (key, value) in query {
        if value.is_unit() {
            continue;
        }
        url.push(if first { '?' } else { '&' });
        first = false;
        url.push_str(&escape(key));
        url.push('=');
        url.push_str(&escape(&scalar("url::join: a query value", value)?));
    }
    if url.len() > MAX_URL {
        return Err(format!("url::join: the URL is longer than {MAX_URL} bytes").into());
    }
    Ok(url.into())
}

/// A string, number or boolean as text; anything else is refused.
fn scalar(what: &str, value: &Dynamic) -> Fallible<String> {
    if value.is_string() || value.is_int() || value.is_bool() || value.is_char() {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{what} must be a string, number or boolean, not {}",
            value.type_name()
        )
        .into())
    }
}

/// Percent-escapes everything but RFC 3986's unreserved characters.
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A missing label (`()`) passes through, so the script's own check reports it; a string is
/// checked by `rule`; anything else is refused. Errors name the field.
fn check(
    field: &str,
    value: Dynamic,
    rule: fn(&str) -> Result<String, String>,
) -> Fallible<Dynamic> {
    if value.is_unit() {
        return Ok(value);
    }
    let Ok(text) = value.into_immutable_string() else {
        return Err(format!("{field}: must be a string").into());
    };
    rule(&text)
        .map(Dynamic::from)
        .map_err(|why| format!("{field}: {:?} {why}", truncated(&text)).into())
}

/// One address to act on, IPv4 or IPv6, in its canonical form.
fn ip(text: &str) -> Result<String, String> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| "is not a single IP address (ranges and masks are refused)".to_owned())?;
    let addr = addr.to_canonical();
    let catch_all = addr.is_unspecified()
        || addr.is_multicast()
        || matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if catch_all {
        return Err("is an address that stands for many hosts".into());
    }
    Ok(addr.to_string())
}

/// A name as label keys are written: a letter, digit or `_` first, then letters, digits,
/// `_`, `-` and `.`; no `/`, no wildcard, at most [`MAX_NAME`] bytes.
fn name(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let head = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let tail = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if head && tail && text.len() <= MAX_NAME {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "is not a name: a letter, digit or _ first, then letters, digits, _ - . (at most {MAX_NAME})"
        ))
    }
}

/// One mail address: `local@domain`, no wildcard, no spaces or controls.
fn email(text: &str) -> Result<String, String> {
    let valid = text.len() <= MAX_EMAIL
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && name(domain).is_ok()
                && domain.contains('.')
                && !local.contains('@')
        })
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '%' | '/'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "is not one mail address (local@domain, at most {MAX_EMAIL} bytes, no wildcards)"
        ))
    }
}

/// Free text that names one thing: not empty, no wildcard, no control characters, at most
/// [`MAX_TEXT`] bytes.
fn text(text: &str) -> Result<String, String> {
    let valid = !text.trim().is_empty()
        && text.len() <= MAX_TEXT
        && !text.chars().any(|c| c.is_control() || c == '*');
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "is not one value: 1 to {MAX_TEXT} bytes, no wildcard (*), no control characters"
        ))
    }
}

/// A label as quoted in an error: at most 64 characters.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_only_unreserved_characters() {
        assert_eq!(
            escape("../../../admin/v1/purge-all?confirm=yes#"),
            "..%2F..%2F..%2Fadmin%2Fv1%2Fpurge-all%3Fconfirm%3Dyes%23"
        );
        assert_eq!(escape("a b*é"), "a%20b%2A%C3%A9");
        assert_eq!(escape("web-1.prod_x~"), "web-1.prod_x~");
    }

    #[test]
    fn addresses_must_be_one_host() {
        assert_eq!(ip("203.0.113.9").unwrap(), "203.0.113.9");
        assert_eq!(ip("2001:db8::1").unwrap(), "2001:db8::1");
        assert_eq!(ip("::ffff:198.51.100.7").unwrap(), "198.51.100.7");
        for bad in [
            "0.0.0.0/0",
            "0.0.0.0",
            "::",
            "::/0",
            "::ffff:0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "*",
            "10.0.0.0/8",
            "",
            " 203.0.113.9",
        ] {
            assert!(ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_refuse_paths_and_wildcards() {
        for good in ["checkout", "AKIA0001", "ws-042.corp", "_x", "3scale"] {
            assert!(name(good).is_ok(), "{good:?}");
        }
        let long = "a".repeat(MAX_NAME + 1);
        for bad in [
            "*",
            "../x",
            "a/b",
            "a b",
            "",
            "-x",
            ".hidden",
            "a?b",
            "a#",
            long.as_str(),
        ] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        assert!(email("billing@examp1e.com").is_ok());
        assert!(text("<abc@examp1e.com>").is_ok());
        for bad in ["*", "", "  ", "a\nb", "https://*.example.com"] {
            assert!(text(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "*@examp1e.com",
            "billing@*",
            "a@b",
            "@x.com",
            "a@@x.com",
            "a b@x.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
    }
}
