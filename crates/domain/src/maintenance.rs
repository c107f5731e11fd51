//! Maintenance windows: recurring stretches of local time (an RFC 5545 RRULE in an IANA time
//! zone) during which incidents of some services, integrations or labels page nobody. They
//! are recorded as usual: a window holds paging back, nothing else. Pure: the time zones
//! come from the database built into the binary (the one schedules use), and every question
//! takes the instant it is asked about.
//!
//! A window is a first start (`start`, a local date-time: the RRULE's DTSTART), a duration,
//! and a rule saying when it starts again. Every occurrence starts at the rule's local
//! date-time and ends `duration` later **in local time**: a 01:00–04:00 window is 01:00 to
//! 04:00 on the wall clock, so it lasts two real hours on the night the clocks spring
//! forward and four on the night they fall back. Precisely, an occurrence holds the
//! instants whose wall-clock time is within its local hours: an edge in a gap (a local time
//! that does not exist) is the instant the gap ends, an edge in a fold (a local time that
//! happens twice) the first of the two.
//!
//! The rule supports FREQ=DAILY|WEEKLY|MONTHLY, INTERVAL, COUNT, UNTIL, BYDAY (MO..SU; for
//! MONTHLY also with an ordinal, 1MO, -1FR), BYMONTHDAY (MONTHLY) and WKST=MO; anything else
//! is refused naming the part. Every question scans a bounded number of periods and
//! occurrences, so no rule can keep it busy.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

use crate::Micros;
use crate::silence::{Compiled, MAX_MATCHERS, MatchOp, Matcher};

/// The most windows a configuration holds.
pub const MAX_WINDOWS: usize = 1_000;
/// The most bytes of a window's name.
pub const MAX_NAME: usize = 64;
/// The most bytes of a rule.
pub const MAX_RULE: usize = 512;
/// The most occurrences a rule's COUNT may ask for.
pub const MAX_COUNT: u32 = 10_000;
/// The largest INTERVAL.
pub const MAX_INTERVAL: u32 = 1_000;
/// The longest window, in minutes of local time: a week.
pub const MAX_DURATION_MINUTES: i64 = 7 * 24 * 60;
/// The most services, and the most integrations, one window names.
pub const MAX_SCOPE: usize = 100;
/// The most bytes of a service or integration name, and of a matcher as written.
pub const MAX_SCOPE_NAME: usize = 256;
const MAX_MATCHER_TEXT: usize = 2048;
/// The most bytes of a comment.
pub const MAX_COMMENT: usize = 1024;
/// The most upcoming occurrences one question lists.
pub const MAX_UPCOMING: usize = 100;
/// The most occurrences one question generates (COUNT's bound fits, with room).
const MAX_SCAN: usize = 2 * MAX_COUNT as usize;
/// The most periods in a row without an occurrence before a question gives up (a rule that
/// can never match, such as the fifth Monday that is the first of its month).
const MAX_EMPTY_PERIODS: u32 = 1_000;
/// The most bytes of a refused value an error repeats.
const MAX_ECHO: usize = 64;

/// A maintenance window as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Names the window on the timeline and in `firebreak maintenance list`.
    pub name: String,
    /// The IANA time zone its local times are in (`Europe/Berlin`, `UTC`).
    pub time_zone: String,
    /// The first occurrence's start, a local date-time (`2026-03-01T01:00`): the DTSTART.
    pub start: String,
    /// How long each occurrence lasts, in local time: `3h`, `90m`, `1d12h`, `1w`.
    pub duration: String,
    /// When it starts again (`FREQ=WEEKLY;BYDAY=SA,SU`); empty: once.
    #[serde(default)]
    pub rrule: String,
    /// Incidents of these services (their `service` label, else their source).
    #[serde(default)]
    pub services: Vec<String>,
    /// Incidents whose first alert came through one of these integrations.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Incidents whose labels every matcher accepts: `env="prod"`, `job=~"web.*"`
    /// (Alertmanager's operators and anchored regexes).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Why the window exists.
    #[serde(default)]
    pub comment: String,
}

/// One occurrence of a window: from `start` (inclusive) to `end` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Occurrence {
    pub start: Micros,
    pub end: Micros,
}

/// What a window's scope is compared with: an incident's service, integration and labels.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub service: &'a str,
    pub integration: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A window checked and ready to answer questions.
#[derive(Debug, Clone)]
pub struct Window {
    spec: WindowSpec,
    zone: TimeZone,
    start: DateTime,
    minutes: i64,
    rule: Rule,
    matchers: Vec<Compiled>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freq {
    Once,
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByDay {
    /// For MONTHLY: the nth (1..5) or nth-from-last (-1..-5) of the month.
    nth: Option<i8>,
    day: Weekday,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Never,
    Count(u32),
    Until(Timestamp),
}

#[derive(Debug, Clone)]
struct Rule {
    freq: Freq,
    interval: u32,
    by_day: Vec<ByDay>,
    by_month_day: Vec<i8>,
    end: End,
}

impl WindowSpec {
    /// Checks the window and makes it ready; errors name the field under `field`
    /// (`maintenance[0]`): `maintenance[0].rrule: ...`.
    pub fn check(&self, field: &str) -> Result<Window, String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(format!(
                "{field}.name: 1 to {MAX_NAME} bytes of letters, digits, '.', '_' or '-'"
            ));
        }
        let zone = crate::schedule::time_zone(&self.time_zone).ok_or_else(|| {
            format!(
                "{field}.time_zone: {:?} is not an IANA time zone (Europe/Berlin, UTC, ...)",
                echo(&self.time_zone)
            )
        })?;
        let start = local_datetime(&self.start).ok_or_else(|| {
            format!(
                "{field}.start: {:?} is not a local date-time like 2026-03-01T01:00 (no offset: the time zone says where)",
                echo(&self.start)
            )
        })?;
        let minutes =
            duration_minutes(&self.duration).map_err(|e| format!("{field}.duration: {e}"))?;
        let rule = parse_rule(&self.rrule, &zone).map_err(|e| format!("{field}.rrule: {e}"))?;
        for (key, list) in [
            ("services", &self.services),
            ("integrations", &self.integrations),
        ] {
            if list.len() > MAX_SCOPE {
                return Err(format!("{field}.{key}: at most {MAX_SCOPE}"));
            }
            for (i, s) in list.iter().enumerate() {
                if s.trim().is_empty()
                    || s.len() > MAX_SCOPE_NAME
                    || s.chars().any(char::is_control)
                {
                    return Err(format!(
                        "{field}.{key}[{i}]: 1 to {MAX_SCOPE_NAME} bytes, no control characters"
                    ));
                }
            }
        }
        if self.matchers.len() > MAX_MATCHERS {
            return Err(format!("{field}.matchers: at most {MAX_MATCHERS}"));
        }
        let matchers = self
            .matchers
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let at = format!("{field}.matchers[{i}]");
                parse_matcher(text)
                    .map_err(|e| format!("{at}: {e}"))?
                    .compile(&at)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.services.is_empty() && self.integrations.is_empty() {
            let empty = BTreeMap::new();
            if matchers.iter().all(|m| m.matches(&empty)) {
                return Err(format!(
                    "{field}: give services, integrations or a matcher that not every incident satisfies (a window over everything would page nobody for anything)"
                ));
            }
        }
        if self.comment.len() > MAX_COMMENT || self.comment.contains('\0') {
            return Err(format!(
                "{field}.comment: at most {MAX_COMMENT} bytes, no NUL"
            ));
        }
        let window = Window {
            spec: self.clone(),
            zone,
            start,
            minutes,
            rule,
            matchers,
        };
        if window.occurrences_from(0).next().is_none() {
            return Err(format!(
                "{field}.rrule: the rule gives no occurrence from {} on",
                self.start
            ));
        }
        Ok(window)
    }
}

/// Checks every window of a configuration (`maintenance[i]`), their number and that their
/// names differ.
pub fn check_all(specs: &[WindowSpec]) -> Result<Vec<Window>, String> {
    if specs.len() > MAX_WINDOWS {
        return Err(format!("maintenance: at most {MAX_WINDOWS} windows"));
    }
    let mut out: Vec<Window> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let w = spec.check(&format!("maintenance[{i}]"))?;
        if out.iter().any(|o| o.spec.name == w.spec.name) {
            return Err(format!(
                "maintenance[{i}].name: {:?} names another window too",
                w.spec.name
            ));
        }
        out.push(w);
    }
    Ok(out)
}

/// The window whose occurrence holds paging back for `subject` at `at`, with that
/// occurrence: of several, the one that ends last (paging waits for all of them).
pub fn suppressing<'a>(
    windows: &'a [Window],
    subject: &Subject<'_>,
    at: Micros,
) -> Option<(&'a Window, Occurrence)> {
    windows
        .iter()
        .filter(|w| w.covers(subject))
        .filter_map(|w| w.in_force(at).map(|o| (w, o)))
        .max_by_key(|(_, o)| o.end)
}

impl Window {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The window as written.
    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// Whether the window's scope takes `subject`: one of its services (if it names any),
    /// one of its integrations (if any), and every matcher.
    pub fn covers(&self, subject: &Subject<'_>) -> bool {
        (self.spec.services.is_empty() || self.spec.services.iter().any(|s| s == subject.service))
            && (self.spec.integrations.is_empty()
                || self
                    .spec
                    .integrations
                    .iter()
                    .any(|i| i == subject.integration))
            && self.matchers.iter().all(|m| m.matches(subject.labels))
    }

    /// The occurrence in force at `at`, if any (of overlapping ones, the one ending last).
    pub fn in_force(&self, at: Micros) -> Option<Occurrence> {
        let mut found: Option<Occurrence> = None;
        for o in self.occurrences_from(self.period_before(at)) {
            if o.start > at {
                break;
            }
            if o.end > at && found.is_none_or(|f| o.end > f.end) {
                found = Some(o);
            }
        }
        found
    }

    /// The first `n` (at most [`MAX_UPCOMING`]) occurrences that have not ended at `from`:
    /// the one in force, if any, then those to come.
    pub fn upcoming(&self, from: Micros, n: usize) -> Vec<Occurrence> {
        self.occurrences_from(self.period_before(from))
            .filter(|o| o.end > from)
            .take(n.min(MAX_UPCOMING))
            .collect()
    }

    /// A period at or before every occurrence that could still hold `at`: the one holding
    /// the local date a longest window (and a day for offsets) earlier. From the first
    /// period when the rule counts its occurrences.
    fn period_before(&self, at: Micros) -> i64 {
        if matches!(self.rule.end, End::Count(_)) {
            return 0;
        }
        let Ok(t) = Timestamp::from_microsecond(at.unix_micros()) else {
            return 0;
        };
        let local = self.zone.to_datetime(t).date();
        let back = MAX_DURATION_MINUTES / (24 * 60) + 1;
        let Some(target) = add_days(local, -back) else {
            return 0;
        };
        let interval = i64::from(self.rule.interval);
        let k = match self.rule.freq {
            Freq::Once => 0,
            Freq::Daily => days_between(self.start.date(), target).div_euclid(interval),
            Freq::Weekly => {
                let (a, b) = (monday_of(self.start.date()), monday_of(target));
                match (a, b) {
                    (Some(a), Some(b)) => days_between(a, b).div_euclid(7).div_euclid(interval),
                    _ => 0,
                }
            }
            Freq::Monthly => {
                let months = |d: Date| i64::from(d.year()) * 12 + i64::from(d.month()) - 1;
                (months(target) - months(self.start.date())).div_euclid(interval)
            }
        };
        k.max(0)
    }

    /// The occurrences from period `first` on, in order of start, bounded.
    fn occurrences_from(&self, first: i64) -> Occurrences<'_> {
        Occurrences {
            w: self,
            period: first,
            pending: Vec::new(),
            emitted: 0,
            scanned: 0,
            empty_run: 0,
            done: false,
        }
    }

    /// The local start times of period `k`, in order (those before DTSTART left out);
    /// `None` past the end of the calendar.
    fn period(&self, k: i64) -> Option<Vec<DateTime>> {
        let step = k.checked_mul(i64::from(self.rule.interval))?;
        let start = self.start.date();
        let dates: Vec<Date> = match self.rule.freq {
            Freq::Once => {
                if k > 0 {
                    return None;
                }
                vec![start]
            }
            Freq::Daily => {
                let d = add_days(start, step)?;
                if self.rule.by_day.is_empty()
                    || self.rule.by_day.iter().any(|b| b.day == d.weekday())
                {
                    vec![d]
                } else {
                    Vec::new()
                }
            }
            Freq::Weekly => {
                let monday = add_days(monday_of(start)?, step.checked_mul(7)?)?;
                let mut offsets: Vec<i8> = if self.rule.by_day.is_empty() {
                    vec![start.weekday().to_monday_zero_offset()]
                } else {
                    self.rule
                        .by_day
                        .iter()
                        .map(|b| b.day.to_monday_zero_offset())
                        .collect()
                };
                offsets.sort_unstable();
                offsets.dedup();
                offsets
                    .into_iter()
                    .map(|o| add_days(monday, i64::from(o)))
                    .collect::<Option<Vec<_>>>()?
            }
            Freq::Monthly => {
                let index = i64::from(start.year()) * 12 + i64::from(start.month()) - 1 + step;
                let year = i16::try_from(index.div_euclid(12)).ok()?;
                let month = i8::try_from(index.rem_euclid(12) + 1).ok()?;
                let first = Date::new(year, month, 1).ok()?;
                self.month_days(first)
            }
        };
        Some(
            dates
                .into_iter()
                .map(|d| d.to_datetime(self.start.time()))
                .filter(|dt| *dt >= self.start)
                .collect(),
        )
    }

    /// The days of the month starting `first` the rule picks, in order.
    fn month_days(&self, first: Date) -> Vec<Date> {
        let len = first.days_in_month();
        let rule = &self.rule;
        let mut days: Vec<i8> = if rule.by_day.is_empty() && rule.by_month_day.is_empty() {
            // The DTSTART's day of the month; months without it have no occurrence.
            let d = self.start.day();
            if d <= len { vec![d] } else { Vec::new() }
        } else {
            (1..=len)
                .filter(|&d| {
                    let Ok(date) = Date::new(first.year(), first.month(), d) else {
                        return false;
                    };
                    let by_month_day = rule.by_month_day.is_empty()
                        || rule
                            .by_month_day
                            .iter()
                            .any(|&m| if m > 0 { m == d } else { len + 1 + m == d });
                    let by_day = rule.by_day.is_empty()
                        || rule.by_day.iter().any(|b| match b.nth {
                            None => date.weekday() == b.day,
                            Some(n) => first.nth_weekday_of_month(n, b.day).ok() == Some(date),
                        });
                    by_month_day && by_day
                })
                .collect()
        };
        days.sort_unstable();
        days.dedup();
        days.into_iter()
            .filter_map(|d| Date::new(first.year(), first.month(), d).ok())
            .collect()
    }

    /// The occurrence starting at local `start`: its end `minutes` later on the wall clock.
    /// `None` when it is empty (its end, moved by a gap, is not after its start) or outside
    /// the calendar.
    fn occurrence(&self, start: DateTime) -> Option<Occurrence> {
        let end = start
            .checked_add(jiff::Span::new().try_minutes(self.minutes).ok()?)
            .ok()?;
        let s = instant(&self.zone, start)?;
        let e = instant(&self.zone, end)?;
        (e > s).then_some(Occurrence { start: s, end: e })
    }
}

/// The first instant whose local time in `zone` is `local` or later, as records hold
/// times: the instant itself; in a fold (the clock goes back), the earlier; in a gap (the
/// clock jumps over it), the instant the gap ends. So an occurrence holds exactly the
/// instants whose wall-clock time is within its local hours.
fn instant(zone: &TimeZone, local: DateTime) -> Option<Micros> {
    let t = match zone.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok()?,
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok()?,
        AmbiguousOffset::Gap { after, .. } => {
            // `after`'s reading is the earlier of the two, before the gap starts: the
            // transition that follows it is where the wall clock jumps past `local`.
            let early = after.to_timestamp(local).ok()?;
            zone.following(early).next()?.timestamp()
        }
    };
    Some(Micros::from_unix_micros(t.as_microsecond()))
}

/// A window's occurrences in order, from one period on: bounded by COUNT, UNTIL, the
/// calendar, [`MAX_SCAN`] occurrences and [`MAX_EMPTY_PERIODS`] empty periods in a row.
struct Occurrences<'a> {
    w: &'a Window,
    period: i64,
    /// The rest of the current period's starts, in reverse (the next one last).
    pending: Vec<DateTime>,
    /// Occurrences given so far (from period 0 when COUNT applies).
    emitted: u32,
    scanned: usize,
    empty_run: u32,
    done: bool,
}

impl Iterator for Occurrences<'_> {
    type Item = Occurrence;

    fn next(&mut self) -> Option<Occurrence> {
        while !self.done {
            if let Some(start) = self.pending.pop() {
                if let End::Count(n) = self.w.rule.end
                    && self.emitted >= n
                {
                    self.done = true;
                    break;
                }
                self.emitted += 1;
                self.scanned += 1;
                if self.scanned > MAX_SCAN {
                    self.done = true;
                    break;
                }
                let Some(o) = self.w.occurrence(start) else {
                    continue;
                };
                if let End::Until(until) = self.w.rule.end
                    && o.start.unix_micros() > until.as_microsecond()
                {
                    self.done = true;
                    break;
                }
                return Some(o);
            }
            match self.w.period(self.period) {
                None => self.done = true,
                Some(starts) => {
                    self.period += 1;
                    if starts.is_empty() {
                        self.empty_run += 1;
                        if self.empty_run > MAX_EMPTY_PERIODS {
                            self.done = true;
                        }
                    } else {
                        self.empty_run = 0;
                        self.pending = starts.into_iter().rev().collect();
                    }
                }
            }
        }
        None
    }
}

fn add_days(d: Date, days: i64) -> Option<Date> {
    d.checked_add(jiff::Span::new().try_days(days).ok()?).ok()
}

fn monday_of(d: Date) -> Option<Date> {
    add_days(d, -i64::from(d.weekday().to_monday_zero_offset()))
}

/// Whole days from `a` to `b` (negative when `b` is earlier).
fn days_between(a: Date, b: Date) -> i64 {
    a.until(b).map_or(0, |s| i64::from(s.get_days()))
}

fn echo(text: &str) -> String {
    crate::clip(text, MAX_ECHO)
}

/// A local date-time (`2026-03-01T01:00`, seconds optional); refused with an offset or a
/// zone, which the window's `time_zone` gives instead.
fn local_datetime(text: &str) -> Option<DateTime> {
    let (_, time) = text.split_once(['T', 't', ' '])?;
    if !time
        .chars()
        .all(|c| c.is_ascii_digit() || c == ':' || c == '.')
    {
        return None;
    }
    text.parse::<DateTime>().ok()
}

/// A duration as written (`90m`, `3h`, `1h30m`, `2d`, `1w`) in minutes; more than zero and
/// at most [`MAX_DURATION_MINUTES`].
fn duration_minutes(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{:?} is not a duration like 90m, 3h, 1h30m, 2d or 1w",
            echo(text)
        )
    };
    let t = text.trim();
    if t.is_empty() || t.len() > 32 {
        return Err(bad());
    }
    let (mut total, mut digits) = (0i64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            'w' => 7 * 24 * 60,
            'd' => 24 * 60,
            'h' => 60,
            'm' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|m| total.checked_add(m))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total <= 0 {
        return Err("must be more than zero".into());
    }
    if total > MAX_DURATION_MINUTES {
        return Err(format!(
            "{:?} is longer than the longest window, 7 days",
            echo(text)
        ));
    }
    Ok(total)
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Monday,
        "TU" => Weekday::Tuesday,
        "WE" => Weekday::Wednesday,
        "TH" => Weekday::Thursday,
        "FR" => Weekday::Friday,
        "SA" => Weekday::Saturday,
        "SU" => Weekday::Sunday,
        _ => return None,
    })
}

/// The parts of a rule this module understands.
const SUPPORTED: &str =
    "FREQ=DAILY|WEEKLY|MONTHLY, INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY, WKST=MO";

/// Parses an RRULE (`FREQ=...;...`, an `RRULE:` prefix allowed); empty: a single occurrence.
fn parse_rule(text: &str, zone: &TimeZone) -> Result<Rule, String> {
    if text.len() > MAX_RULE {
        return Err(format!("at most {MAX_RULE} bytes"));
    }
    let text = text.trim();
    let text = text
        .strip_prefix("RRULE:")
        .or_else(|| text.strip_prefix("rrule:"))
        .unwrap_or(text);
    let mut rule = Rule {
        freq: Freq::Once,
        interval: 1,
        by_day: Vec::new(),
        by_month_day: Vec::new(),
        end: End::Never,
    };
    if text.is_empty() {
        return Ok(rule);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut freq = None;
    let (mut count, mut until) = (None, None);
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{:?} is not KEY=VALUE", echo(part)))?;
        let key = key.trim().to_ascii_uppercase();
        let value = value.trim().to_ascii_uppercase();
        if seen.contains(&key) {
            return Err(format!("{} is given twice", echo(&key)));
        }
        seen.push(key.clone());
        match key.as_str() {
            "FREQ" => {
                freq = Some(match value.as_str() {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    other => {
                        return Err(format!(
                            "FREQ={} is not supported (supported: {SUPPORTED})",
                            echo(other)
                        ));
                    }
                });
            }
            "INTERVAL" => {
                rule.interval = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_INTERVAL).contains(n))
                    .ok_or_else(|| {
                        format!("INTERVAL: 1 to {MAX_INTERVAL}, not {:?}", echo(&value))
                    })?;
            }
            "COUNT" => {
                count = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_COUNT).contains(n))
                        .ok_or_else(|| {
                            format!("COUNT: 1 to {MAX_COUNT}, not {:?}", echo(&value))
                        })?,
                );
            }
            "UNTIL" => {
                until = Some(parse_until(&value, zone).ok_or_else(|| {
                    format!(
                        "UNTIL: {:?} is not a date (20261231), a local date-time (20261231T235959) or a UTC one (20261231T235959Z)",
                        echo(&value)
                    )
                })?);
            }
            "BYDAY" => {
                for item in value.split(',') {
                    let item = item.trim();
                    let bad = || {
                        format!(
                            "BYDAY: {:?} is not MO..SU, or for MONTHLY 1MO..5MO, -1MO..-5MO",
                            echo(item)
                        )
                    };
                    let (nth, code) = item.split_at(item.len().saturating_sub(2));
                    let day = weekday(code).ok_or_else(bad)?;
                    let nth = match nth {
                        "" => None,
                        n => Some(
                            n.trim_start_matches('+')
                                .parse::<i8>()
                                .ok()
                                .filter(|n| (1..=5).contains(&n.abs()))
                                .ok_or_else(bad)?,
                        ),
                    };
                    if rule.by_day.len() >= 35 {
                        return Err("BYDAY: at most 35 days".into());
                    }
                    rule.by_day.push(ByDay { nth, day });
                }
            }
            "BYMONTHDAY" => {
                for item in value.split(',') {
                    let item = item.trim();
                    let d = item
                        .trim_start_matches('+')
                        .parse::<i8>()
                        .ok()
                        .filter(|d| (1..=31).contains(&d.abs()))
                        .ok_or_else(|| {
                            format!("BYMONTHDAY: {:?} is not 1..31 or -31..-1", echo(item))
                        })?;
                    if rule.by_month_day.len() >= 62 {
                        return Err("BYMONTHDAY: at most 62 days".into());
                    }
                    rule.by_month_day.push(d);
                }
            }
            "WKST" => {
                if value != "MO" {
                    return Err(format!(
                        "WKST={} is not supported: weeks start on Monday (WKST=MO)",
                        echo(&value)
                    ));
                }
            }
            other => {
                return Err(format!(
                    "{} is not supported (supported: {SUPPORTED})",
                    echo(other)
                ));
            }
        }
    }
    rule.freq = freq.ok_or("FREQ is required (DAILY, WEEKLY or MONTHLY)")?;
    rule.end = match (count, until) {
        (Some(_), Some(_)) => return Err("COUNT and UNTIL exclude each other".into()),
        (Some(n), None) => End::Count(n),
        (None, Some(t)) => End::Until(t),
        (None, None) => End::Never,
    };
    if rule.freq != Freq::Monthly {
        if rule.by_day.iter().any(|b| b.nth.is_some()) {
            return Err("BYDAY: an ordinal (1MO, -1FR) needs FREQ=MONTHLY".into());
        }
        if !rule.by_month_day.is_empty() {
            return Err("BYMONTHDAY needs FREQ=MONTHLY".into());
        }
    }
    Ok(rule)
}

/// UNTIL: `YYYYMMDD` (that whole local day), `YYYYMMDDTHHMMSS` (local) or `...Z` (UTC).
fn parse_until(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    let num = |s: &str| -> Option<i32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let date_part = text.get(0..8)?;
    let date = Date::new(
        i16::try_from(num(date_part.get(0..4)?)?).ok()?,
        i8::try_from(num(date_part.get(4..6)?)?).ok()?,
        i8::try_from(num(date_part.get(6..8)?)?).ok()?,
    )
    .ok()?;
    let rest = &text[8..];
    if rest.is_empty() {
        let local = date.to_datetime(Time::new(23, 59, 59, 999_999_999).ok()?);
        return zone.to_ambiguous_timestamp(local).later().ok();
    }
    let (time, utc) = match rest.strip_suffix('Z') {
        Some(t) => (t, true),
        None => (rest, false),
    };
    let time = time.strip_prefix('T')?;
    if time.len() != 6 {
        return None;
    }
    let t = Time::new(
        i8::try_from(num(&time[0..2])?).ok()?,
        i8::try_from(num(&time[2..4])?).ok()?,
        i8::try_from(num(&time[4..6])?).ok()?,
        0,
    )
    .ok()?;
    let local = date.to_datetime(t);
    if utc {
        TimeZone::UTC
            .to_ambiguous_timestamp(local)
            .compatible()
            .ok()
    } else {
        zone.to_ambiguous_timestamp(local).compatible().ok()
    }
}

/// A matcher as Alertmanager writes one: `name OP value`, OP one of `=`, `!=`, `=~`, `!~`,
/// the value bare or in double quotes (`\"` and `\\` escaped).
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    if text.len() > MAX_MATCHER_TEXT {
        return Err(format!("at most {MAX_MATCHER_TEXT} bytes"));
    }
    let t = text.trim();
    let bad = || {
        format!(
            "{:?} is not a matcher like env=\"prod\" or job=~\"web.*\"",
            echo(t)
        )
    };
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(bad)?;
    let (name, rest) = t.split_at(end);
    if name.is_empty() {
        return Err(bad());
    }
    let rest = rest.trim_start();
    let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
        (MatchOp::Regex, v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (MatchOp::NotRegex, v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (MatchOp::NotEqual, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (MatchOp::Equal, v)
    } else {
        return Err(bad());
    };
    let value = value.trim();
    let value = match value.strip_prefix('"') {
        None => value.to_owned(),
        Some(quoted) => {
            let inner = quoted.strip_suffix('"').ok_or_else(bad)?;
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(e @ ('"' | '\\')) => out.push(e),
                        _ => return Err(bad()),
                    },
                    '"' => return Err(bad()),
                    c => out.push(c),
                }
            }
            out
        }
    };
    Ok(Matcher {
        name: name.to_owned(),
        op,
        value,
    })
}

#[cfg(test)]
mod tests;
