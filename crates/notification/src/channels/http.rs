//! One HTTP call to a provider: the answer read (at most 64 KiB), `Retry-After` understood
//! (seconds or an HTTP date), and errors that never carry the URL (webhook URLs hold tokens).

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::DeliveryError;

/// The most of an answer read: providers' answers are small, and a hostile endpoint must not
/// fill memory.
const MAX_ANSWER: usize = 64 * 1024;
/// The most characters of a provider's words kept in an error.
const MAX_DETAIL: usize = 300;
/// The longest wait a `Retry-After` is believed for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A provider's answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: String,
}

impl Answer {
    /// The error this answer stands for, `detail` being what it says: 429 is a rate limit,
    /// anything else the provider's refusal.
    pub(crate) fn error(&self, provider: &'static str, detail: &str) -> DeliveryError {
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            return DeliveryError::RateLimited {
                provider,
                retry_after: self.retry_after,
            };
        }
        DeliveryError::Answered {
            provider,
            status: self.status,
            detail: clip(detail),
            retry_after: self.retry_after,
        }
    }

    /// The answer when it is a success, else its error (the body as the detail).
    pub(crate) fn success(self, provider: &'static str) -> Result<Self, DeliveryError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.error(provider, &self.body))
        }
    }

    /// The body as JSON, or null.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Sends `req` and reads the answer.
pub(crate) async fn call(
    provider: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<Answer, DeliveryError> {
    let mut resp = req.send().await.map_err(|e| request_error(provider, e))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(provider, e))? {
        let room = MAX_ANSWER - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER {
            break;
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A failed request, its causes chained, without its URL.
pub(crate) fn request_error(provider: &'static str, e: reqwest::Error) -> DeliveryError {
    let permanent = e.is_builder();
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !detail.contains(&s_text) {
            detail.push_str(": ");
            detail.push_str(&s_text);
        }
        source = s.source();
    }
    DeliveryError::Request {
        provider,
        detail,
        permanent,
    }
}

/// The wait a `Retry-After` value asks for at `now`: seconds, or an HTTP date.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A provider's words as an error's detail: one line, at most a few hundred characters.
pub(crate) fn clip(text: &str) -> String {
    let line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    super::templates::fit(&line, MAX_DETAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        // RFC 9110's example date, 60 s after `now`.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(
            retry_after("99999999", now),
            Some(Duration::from_secs(24 * 3600))
        );
    }
}
