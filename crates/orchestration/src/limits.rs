//! Limits on the free text reaching orchestration and on the pages it answers with. A
//! caller's text past a limit, or holding NUL, is refused naming the field; text orchestration
//! makes itself (a run's error) is clipped when stored, and what a script produced (plan, log,
//! action arguments and results) is clipped on the wire, so a run always fits in a page and a
//! page always decodes.

use serde_json::Value;

use crate::error::Error;

/// Who decides an approval: `user:NAME`.
pub(crate) const MAX_ACTOR: usize = 256;
/// A decision's comment.
pub(crate) const MAX_COMMENT: usize = 4096;
/// A runbook's name, as a caller gives it.
pub(crate) const MAX_NAME: usize = 128;
/// A run's error, as stored and sent; an approval's prompt as sent.
pub(crate) const MAX_TEXT: usize = 16 * 1024;
/// A run's plan, its log, and each action's arguments and result, as sent.
pub(crate) const MAX_DOCUMENT: usize = 128 * 1024;
/// The part of each run's journal a list of runs carries; the rest is paged by `GetRun`.
pub(crate) const MAX_LISTED_JOURNAL: usize = 256 * 1024;
/// The encoded size a page of a list may reach: a quarter of gRPC's default 4 MiB message
/// limit, so a page always decodes, whatever its items hold.
pub(crate) const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// `text` if it holds no NUL and at most `max` bytes; else INVALID_ARGUMENT naming `field`.
pub(crate) fn checked<'a>(field: &str, text: &'a str, max: usize) -> Result<&'a str, Error> {
    if text.contains('\0') {
        return Err(Error::Invalid(format!("{field} must not contain NUL")));
    }
    if text.len() > max {
        return Err(Error::Invalid(format!(
            "{field} is longer than {max} bytes ({} bytes given)",
            text.len()
        )));
    }
    Ok(text)
}

pub(crate) use firebreak_domain::clip;

/// A JSON document's text, at most about `max` bytes: as is when it fits, else
/// `{"truncated": <the text clipped>}`, still JSON for whoever parses it.
pub(crate) fn clip_json(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.len() <= max {
        return text;
    }
    serde_json::json!({ "truncated": clip(&text, max.saturating_sub(32)) }).to_string()
}

/// Log lines totalling at most about `max` bytes (each clipped to [`MAX_TEXT`]), then one
/// line saying how many were left out; true as second value when some were.
pub(crate) fn clip_lines(lines: Vec<String>, max: usize) -> (Vec<String>, bool) {
    let total = lines.len();
    let mut out = Vec::new();
    let mut bytes = 0;
    for line in lines {
        let line = clip(&line, MAX_TEXT);
        if bytes + line.len() > max {
            break;
        }
        bytes += line.len();
        out.push(line);
    }
    let cut = out.len() < total;
    if cut {
        let left = total - out.len();
        out.push(format!("… {left} more line(s) not shown"));
    }
    (out, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_refused_or_clipped_at_its_bound() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("a\0b", 10), "a\u{fffd}b");
        let cut = clip(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert!(checked("actor", "a\0", 10).is_err());
        let e = tonic::Status::from(checked("comment", "abcd", 3).unwrap_err());
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("comment"), "{}", e.message());
        let doc = clip_json(&serde_json::json!({ "body": "x".repeat(10_000) }), 1000);
        assert!(doc.len() <= 1100, "{}", doc.len());
        assert!(serde_json::from_str::<Value>(&doc).unwrap()["truncated"].is_string());
        let (lines, cut) = clip_lines(vec!["y".repeat(100); 50], 1000);
        assert!(cut);
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[10], "… 40 more line(s) not shown");
    }
}
