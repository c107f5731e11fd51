//! Limits on the free text reaching triage and on the pages it answers with. A caller's text
//! past a limit, or holding NUL, is refused naming the field; text arriving in events from
//! other services (which cannot be answered) is clipped to the same limits instead, so no
//! stored field can grow past what a read can carry.

use firebreak_domain::Error as DomainError;
use serde_json::Value;

/// Who did something: `user:NAME`, `runbook:NAME`, `integration:NAME`.
pub(crate) const MAX_ACTOR: usize = 256;
/// A note, a resolution summary, a root cause, a reason, a detail.
pub(crate) const MAX_TEXT: usize = 16 * 1024;
/// A short name (a runbook, a channel, a role, a category, an id).
pub(crate) const MAX_NAME: usize = 256;
/// A JSON document carried onto a timeline entry (a runbook action, an alert's annotations).
pub(crate) const MAX_DOCUMENT: usize = 64 * 1024;
/// A change event's summary and source.
pub(crate) const MAX_CHANGE_SUMMARY: usize = 1024;
/// A change event's details, stored once.
pub(crate) const MAX_CHANGE_DETAILS: usize = 64 * 1024;
/// The encoded size a page of a list may reach: a quarter of gRPC's default 4 MiB message
/// limit, so a page always decodes, whatever its items hold.
pub(crate) const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// `text` if it holds no NUL and at most `max` bytes; else why not, naming `field`.
pub(crate) fn checked<'a>(
    field: &'static str,
    text: &'a str,
    max: usize,
) -> Result<&'a str, DomainError> {
    firebreak_domain::no_nul(field, text)?;
    if text.len() > max {
        return Err(DomainError::Invalid {
            field,
            reason: format!("longer than {max} bytes ({} bytes given)", text.len()),
        });
    }
    Ok(text)
}

pub(crate) use firebreak_domain::clip;

/// A JSON document whose text takes at most about `max` bytes: kept as is when it does;
/// else each large member of an object is replaced by its clipped text, and what is still
/// too large by `{"truncated": <clipped text>}`.
pub(crate) fn clip_json(value: Value, max: usize) -> Value {
    let text = value.to_string();
    if text.len() <= max && !text.contains("\\u0000") {
        return value;
    }
    if let Value::Object(map) = &value {
        let share = max / map.len().max(1);
        let clipped: serde_json::Map<String, Value> = map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => Value::String(clip(s, share)),
                    other => {
                        let t = other.to_string();
                        if t.len() > share {
                            Value::String(clip(&t, share))
                        } else {
                            other.clone()
                        }
                    }
                };
                (clip(k, MAX_NAME), v)
            })
            .collect();
        let clipped = Value::Object(clipped);
        if clipped.to_string().len() <= max + 1024 {
            return clipped;
        }
    }
    serde_json::json!({ "truncated": clip(&text, max) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_characters_whole_and_drops_nul() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("a\0b", 10), "a\u{fffd}b");
        let cut = clip(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert!(checked("summary", "a\0", 10).is_err());
        let e = checked("summary", "abcd", 3).unwrap_err().to_string();
        assert!(e.contains("summary"), "{e}");
    }

    #[test]
    fn large_documents_are_clipped_member_by_member() {
        let v = serde_json::json!({ "action": "http", "result": "x".repeat(100_000) });
        let c = clip_json(v, 1000);
        assert_eq!(c["action"], "http");
        assert!(c.to_string().len() < 2100, "{}", c.to_string().len());
        let big = Value::Array(vec![Value::String("y".repeat(10_000)); 10]);
        let c = clip_json(big, 1000);
        assert!(c["truncated"].is_string());
    }
}
