//! Post-incident follow-ups: the action items a review tracks (a title, an owner, a due date,
//! open or done), the words they are made of, and the limits on them.

use std::fmt;
use std::str::FromStr;

use time::Date;

use crate::error::invalid;
use crate::{Error, Result, Timestamp};

/// The most bytes a follow-up's title holds.
pub const MAX_FOLLOW_UP_TITLE: usize = 512;
/// The most bytes a review's summary holds.
pub const MAX_REVIEW_SUMMARY: usize = 16 * 1024;
/// The most follow-ups one incident has: its review lists them all.
pub const MAX_FOLLOW_UPS: usize = 200;

/// Whether a follow-up is still to do. Either way round is allowed: a follow-up marked done
/// by mistake opens again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowUpState {
    Open,
    Done,
}

impl FollowUpState {
    pub const ALL: [Self; 2] = [Self::Open, Self::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Done => "done",
        }
    }
}

impl fmt::Display for FollowUpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FollowUpState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| invalid("state", format!("{s:?} is not open or done")))
    }
}

/// A follow-up's title: trimmed, one line, 1 to [`MAX_FOLLOW_UP_TITLE`] bytes, no control
/// characters.
pub fn follow_up_title(given: &str) -> Result<String> {
    let title = given.trim();
    if title.is_empty() || title.len() > MAX_FOLLOW_UP_TITLE {
        return Err(invalid(
            "title",
            format!(
                "must hold 1 to {MAX_FOLLOW_UP_TITLE} bytes ({} given)",
                title.len()
            ),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(invalid(
            "title",
            "holds a control character or a line break",
        ));
    }
    Ok(title.to_owned())
}

/// A review's summary: trimmed, at most [`MAX_REVIEW_SUMMARY`] bytes, no NUL (empty clears
/// it).
pub fn review_summary(given: &str) -> Result<String> {
    crate::no_nul("summary", given)?;
    let summary = given.trim();
    if summary.len() > MAX_REVIEW_SUMMARY {
        return Err(invalid(
            "summary",
            format!(
                "longer than {MAX_REVIEW_SUMMARY} bytes ({} bytes given)",
                summary.len()
            ),
        ));
    }
    Ok(summary.to_owned())
}

/// A due date, `YYYY-MM-DD`, not before the day (UTC) the incident opened.
pub fn due_date(given: &str, opened_at: Timestamp) -> Result<Date> {
    let due = parse_date(given.trim())?;
    let opened = opened_at.to_offset(time::UtcOffset::UTC).date();
    if due < opened {
        return Err(invalid(
            "due",
            format!(
                "{} is before the incident opened ({})",
                format_date(due),
                format_date(opened)
            ),
        ));
    }
    Ok(due)
}

/// A date as `YYYY-MM-DD` (what [`format_date`] writes); else an error naming `due`.
pub fn parse_date(given: &str) -> Result<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if given.len() != 10 {
        return Err(invalid(
            "due",
            format!("{given:?} is not a YYYY-MM-DD date"),
        ));
    }
    Date::parse(given, &format)
        .map_err(|_| invalid("due", format!("{given:?} is not a YYYY-MM-DD date")))
}

/// A date as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Whether a follow-up is overdue on `today`: open, and due before it.
pub fn overdue(state: FollowUpState, due: Option<Date>, today: Date) -> bool {
    state == FollowUpState::Open && due.is_some_and(|d| d < today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn states_round_trip_and_unknown_ones_are_refused() {
        for s in FollowUpState::ALL {
            assert_eq!(s.as_str().parse::<FollowUpState>().unwrap(), s);
        }
        let e = "closed".parse::<FollowUpState>().unwrap_err();
        assert!(e.to_string().starts_with("invalid state"), "{e}");
        assert!("".parse::<FollowUpState>().is_err());
        assert!("OPEN".parse::<FollowUpState>().is_err());
    }

    #[test]
    fn due_dates_are_days_not_before_the_opening() {
        let opened = datetime!(2026-12-04 23:30 UTC);
        assert_eq!(
            due_date("2026-12-04", opened).unwrap(),
            date!(2026 - 12 - 04)
        );
        assert_eq!(
            due_date(" 2027-01-31 ", opened).unwrap(),
            date!(2027 - 01 - 31)
        );
        for bad in [
            "2026-12-03",
            "2026-13-01",
            "2026-02-30",
            "tomorrow",
            "",
            "2026-12-4",
            "+2026-12-04",
            "2026-12-04T00:00:00Z",
        ] {
            let e = due_date(bad, opened).unwrap_err();
            assert!(e.to_string().starts_with("invalid due"), "{bad}: {e}");
        }
        assert_eq!(format_date(date!(2026 - 01 - 05)), "2026-01-05");
    }

    #[test]
    fn titles_are_one_bounded_line() {
        assert_eq!(follow_up_title("  add a canary ").unwrap(), "add a canary");
        assert_eq!(
            follow_up_title(&"é".repeat(MAX_FOLLOW_UP_TITLE / 2))
                .unwrap()
                .len(),
            MAX_FOLLOW_UP_TITLE
        );
        for bad in [
            String::new(),
            "   ".into(),
            "x".repeat(MAX_FOLLOW_UP_TITLE + 1),
            "two\nlines".into(),
            "nul\0".into(),
        ] {
            let e = follow_up_title(&bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid title"), "{e}");
        }
    }

    #[test]
    fn summaries_are_bounded_and_may_be_cleared() {
        assert_eq!(review_summary("  ").unwrap(), "");
        assert!(review_summary(&"x".repeat(MAX_REVIEW_SUMMARY)).is_ok());
        let e = review_summary(&"x".repeat(MAX_REVIEW_SUMMARY + 1)).unwrap_err();
        assert!(e.to_string().starts_with("invalid summary"), "{e}");
        assert!(review_summary("a\0b").is_err());
    }

    #[test]
    fn only_open_follow_ups_past_their_day_are_overdue() {
        let today = date!(2026 - 12 - 10);
        assert!(overdue(
            FollowUpState::Open,
            Some(date!(2026 - 12 - 09)),
            today
        ));
        assert!(!overdue(FollowUpState::Open, Some(today), today));
        assert!(!overdue(
            FollowUpState::Done,
            Some(date!(2026 - 12 - 01)),
            today
        ));
        assert!(!overdue(FollowUpState::Open, None, today));
    }
}
