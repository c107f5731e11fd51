//! On-call shifts as an iCalendar feed (RFC 5545): one VEVENT per shift, times in UTC, so
//! that any calendar shows them in its viewer's zone.

use std::fmt::Write as _;

use firebreak_domain::schedule::Shift;

/// The calendar of `shifts` named `name`: nobody's stretches are left out.
pub fn calendar(name: &str, shifts: &[Shift], stamp: jiff::Timestamp) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//Firebreak//On call//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, &format!("X-WR-CALNAME:{}", escape(name)));
    for s in shifts.iter().filter(|s| !s.users.is_empty()) {
        line(&mut out, "BEGIN:VEVENT");
        line(
            &mut out,
            &format!("UID:{}-{}@firebreak", escape(name), s.start.as_second()),
        );
        line(&mut out, &format!("DTSTAMP:{}", utc(stamp)));
        line(&mut out, &format!("DTSTART:{}", utc(s.start)));
        line(&mut out, &format!("DTEND:{}", utc(s.end)));
        line(
            &mut out,
            &format!(
                "SUMMARY:On call ({}): {}",
                escape(name),
                escape(&s.users.join(", "))
            ),
        );
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

/// `20261102T080000Z`.
fn utc(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Text with RFC 5545's escapes: backslash, semicolon, comma, newline.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A content line, folded at 75 octets (never inside a character), ended with CRLF.
fn line(out: &mut String, text: &str) {
    let mut width = 0;
    for c in text.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    let _ = write!(out, "\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn shifts_become_events_in_utc_folded_and_escaped() {
        let shifts = vec![
            Shift {
                start: t("2026-11-02T08:00:00Z"),
                end: t("2026-11-02T17:00:00Z"),
                users: vec!["alice".into(), "bob".into()],
            },
            Shift {
                start: t("2026-11-02T17:00:00Z"),
                end: t("2026-11-03T08:00:00Z"),
                users: vec![],
            },
        ];
        let cal = calendar("primary", &shifts, t("2026-12-01T00:00:00Z"));
        assert!(
            cal.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"),
            "{cal}"
        );
        assert!(cal.ends_with("END:VCALENDAR\r\n"));
        assert_eq!(
            cal.matches("BEGIN:VEVENT").count(),
            1,
            "nobody's stretch is no event"
        );
        assert!(cal.contains("DTSTART:20261102T080000Z\r\nDTEND:20261102T170000Z\r\n"));
        assert!(
            cal.contains("SUMMARY:On call (primary): alice\\, bob\r\n"),
            "{cal}"
        );
        let long = calendar(&"x".repeat(200), &shifts, t("2026-12-01T00:00:00Z"));
        assert!(long.lines().all(|l| l.len() <= 76), "{long}");
        assert!(long.contains("\r\n x"));
    }
}
