//! Who is on call: one pure function of a validated [`Schedule`] and an instant
//! ([`on_call`]), and the final schedule over a range built on it ([`shifts`], [`gaps`],
//! [`shifts_of`]).
//!
//! Local wall-clock times (hand-offs, window edges) become instants through jiff's
//! `compatible` disambiguation, as RFC 5545 calendars do: a time in a gap moves forward by the
//! gap's length (02:30 on a day the clocks jump from 02:00 to 03:00 is 03:30), and a time in a
//! fold is its earlier occurrence.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use serde::{Serialize, Serializer};

use super::error::{Problem, ScheduleError};
use super::spec::{ClockTime, Combine, ScheduleSpec};

/// The longest range, in days of 24 hours, [`shifts`] and friends cover in one call.
pub const MAX_RANGE_DAYS: i64 = 400;

/// A schedule that passed [`ScheduleSpec::validate`]: its zones found, its local times
/// resolved, its users known. Only this type can be resolved.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(super) spec: ScheduleSpec,
    pub(super) zone: TimeZone,
    pub(super) layers: Vec<Layer>,
    pub(super) overrides: Vec<Override>,
}

impl Schedule {
    /// The schedule as written.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The schedule's default time zone (a calendar feed's zone, say).
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// How the layers combine.
    pub fn combine(&self) -> Combine {
        self.spec.combine
    }

    /// Who is on call at `t`, counting only `overrides` (a subset of the schedule's, for
    /// ranges that meet only some of them).
    fn resolve_at(&self, t: Timestamp, overrides: &[Override]) -> Vec<String> {
        let base: BTreeSet<&str> = match self.spec.combine {
            Combine::Exclusive => self
                .layers
                .iter()
                .rev()
                .find_map(|l| l.member_at(t))
                .into_iter()
                .collect(),
            Combine::Additive => self.layers.iter().filter_map(|l| l.member_at(t)).collect(),
        };
        let active: Vec<&Override> = overrides.iter().filter(|o| o.covers(t)).collect();
        // Replacements apply at once to the layers' people (validation keeps a user from
        // being replaced twice at a time), so chains do not follow: with alice→dave and
        // dave→erin both active, alice's place goes to dave.
        let mut users: BTreeSet<&str> = BTreeSet::new();
        for user in base {
            let replaced = active.iter().find_map(|o| match &o.action {
                Action::Replace { user: r, with } if r == user => Some(with.as_str()),
                _ => None,
            });
            users.insert(replaced.unwrap_or(user));
        }
        for o in &active {
            if let Action::Add(user) = &o.action {
                users.insert(user);
            }
        }
        users.into_iter().map(str::to_owned).collect()
    }
}

impl Serialize for Schedule {
    /// A schedule serializes as written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(s)
    }
}

/// One layer (one version of a roster), ready to resolve.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) members: Vec<Option<String>>,
    pub(super) zone: TimeZone,
    pub(super) rotation: Rotation,
    pub(super) windows: Vec<Window>,
    /// The first instant the layer counts: its first hand-off or its `effective_from`,
    /// whichever is later.
    pub(super) from: Timestamp,
    /// Where a newer version of the layer takes over.
    pub(super) until: Option<Timestamp>,
}

/// When turns hand off.
#[derive(Debug, Clone)]
pub(super) enum Rotation {
    /// Turns of a fixed number of absolute seconds from the first hand-off.
    Absolute { first: Timestamp, step_seconds: i64 },
    /// Turns of a number of calendar days, each handing off at `hand_off` local time.
    Civil {
        first: Timestamp,
        start: Date,
        hand_off: Time,
        step_days: i64,
    },
}

/// A window of the week, in the layer's zone: it starts on each day in `days` at `from`
/// and ends `end_days` days later at `to`.
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub(super) days: [bool; 7],
    pub(super) from: ClockTime,
    pub(super) end_days: i64,
    pub(super) to: ClockTime,
}

/// An override, checked.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub(super) from: Timestamp,
    pub(super) to: Timestamp,
    pub(super) action: Action,
}

/// What an override does.
#[derive(Debug, Clone)]
pub(super) enum Action {
    Replace { user: String, with: String },
    Add(String),
}

impl Override {
    fn covers(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }
}

/// The instant of a local time in `zone`: compatible disambiguation (a gap moves forward,
/// a fold takes the earlier instant). `None` only outside jiff's range of years.
pub(super) fn instant(zone: &TimeZone, local: DateTime) -> Option<Timestamp> {
    zone.to_ambiguous_timestamp(local).compatible().ok()
}

fn add_days(date: Date, days: i64) -> Option<Date> {
    date.checked_add(Span::new().try_days(days).ok()?).ok()
}

impl Rotation {
    fn first(&self) -> Timestamp {
        match self {
            Self::Absolute { first, .. } | Self::Civil { first, .. } => *first,
        }
    }

    /// The instant turn `k` (from 0) starts; `None` past the end of time.
    fn hand_off(&self, zone: &TimeZone, k: i64) -> Option<Timestamp> {
        match self {
            Self::Absolute {
                first,
                step_seconds,
            } => {
                let offset = SignedDuration::from_secs(step_seconds.checked_mul(k)?);
                first.checked_add(offset).ok()
            }
            Self::Civil {
                start,
                hand_off,
                step_days,
                ..
            } => {
                let date = add_days(*start, step_days.checked_mul(k)?)?;
                instant(zone, date.to_datetime(*hand_off))
            }
        }
    }

    /// The turn in progress at `t`: the last `k` whose hand-off is at or before `t`.
    fn turn_at(&self, zone: &TimeZone, t: Timestamp) -> Option<i64> {
        if t < self.first() {
            return None;
        }
        match self {
            Self::Absolute {
                first,
                step_seconds,
            } => {
                let elapsed = t.duration_since(*first).as_nanos();
                let step = i128::from(*step_seconds) * 1_000_000_000;
                i64::try_from(elapsed / step).ok()
            }
            Self::Civil {
                start, step_days, ..
            } => {
                // A first guess from the calendar, then the instants decide: near a fold or
                // a gap the local date and the instant order can disagree by a turn.
                let today = zone.to_datetime(t).date();
                let days = i64::from(start.until(today).ok()?.get_days());
                let mut k = days.div_euclid(*step_days).max(0);
                while self.hand_off(zone, k + 1).is_some_and(|h| h <= t) {
                    k += 1;
                }
                while k > 0 && self.hand_off(zone, k).is_none_or(|h| h > t) {
                    k -= 1;
                }
                Some(k)
            }
        }
    }
}

impl Window {
    /// How many days before the local date of an instant this window, containing it, may
    /// have started: its length in days, one more for a `24:00` end, one for clock changes.
    fn lookback_days(&self) -> i64 {
        self.end_days + 2
    }

    /// The window that starts on `date`, as instants; `None` when it does not start that
    /// day, or when a clock change leaves it empty.
    fn on(&self, zone: &TimeZone, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days[usize::from(date.weekday().to_monday_zero_offset() as u8)] {
            return None;
        }
        let start = instant(zone, self.from.on(date)?)?;
        let end = instant(zone, self.to.on(add_days(date, self.end_days)?)?)?;
        (start < end).then_some((start, end))
    }
}

impl Layer {
    /// The layer's member on call at `t`, if any.
    pub(super) fn member_at(&self, t: Timestamp) -> Option<&str> {
        if t < self.from || self.until.is_some_and(|u| t >= u) {
            return None;
        }
        if !self.windows.is_empty() && !self.in_window(t) {
            return None;
        }
        let k = self.rotation.turn_at(&self.zone, t)?;
        let slot = usize::try_from(k.rem_euclid(self.members.len() as i64)).ok()?;
        self.members.get(slot)?.as_deref()
    }

    fn in_window(&self, t: Timestamp) -> bool {
        let today = self.zone.to_datetime(t).date();
        self.windows.iter().any(|w| {
            (-w.lookback_days()..=1).any(|d| {
                add_days(today, d)
                    .and_then(|date| w.on(&self.zone, date))
                    .is_some_and(|(start, end)| start <= t && t < end)
            })
        })
    }

    /// Every instant in (`from`, `to`) where this layer's answer may change.
    fn changes(&self, from: Timestamp, to: Timestamp, out: &mut Vec<Timestamp>) {
        out.push(self.from);
        out.extend(self.until);
        if self.until.is_some_and(|u| u <= from) || self.from >= to {
            return;
        }
        let mut k = self.rotation.turn_at(&self.zone, from).unwrap_or(0);
        while let Some(h) = self.rotation.hand_off(&self.zone, k) {
            if h >= to {
                break;
            }
            out.push(h);
            k += 1;
        }
        if self.windows.is_empty() {
            return;
        }
        // Every window that may hold an instant of the range: from the lookback before the
        // range's first local date (one more day, as a fold can put a later instant on an
        // earlier date) to a day past its last.
        let first = self.zone.to_datetime(from).date();
        let last = self.zone.to_datetime(to).date();
        for w in &self.windows {
            let (Some(mut date), Some(last)) =
                (add_days(first, -w.lookback_days() - 1), add_days(last, 2))
            else {
                continue;
            };
            while date <= last {
                if let Some((start, end)) = w.on(&self.zone, date) {
                    out.push(start);
                    out.push(end);
                }
                match date.tomorrow() {
                    Ok(next) => date = next,
                    Err(_) => break,
                }
            }
        }
    }
}

/// Who is on call for `schedule` at `at`: user names, sorted, each once.
///
/// Each layer has at most one person at a time (the member whose turn it is, if the layer
/// counts at `at`, the turn's slot is not empty and `at` falls in one of its windows).
/// `exclusive` keeps the last layer in the list that has someone; `additive` keeps everyone.
/// Then the overrides covering `at` apply: each `replace` swaps its user (when on call) for
/// its `with`, and each `add` adds its user.
pub fn on_call(schedule: &Schedule, at: Timestamp) -> Vec<String> {
    schedule.resolve_at(at, &schedule.overrides)
}

/// One stretch of the final schedule: the same people from `start` to `end` (exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Who is on call, sorted; empty for a gap.
    pub users: Vec<String>,
}

/// A stretch of time, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The final schedule over [`from`, `to`): the longest stretches with the same people, in
/// order, covering the range exactly (stretches with nobody included). Each stretch's people
/// are [`on_call`]'s answer at every instant in it.
///
/// The range must not be empty nor longer than [`MAX_RANGE_DAYS`].
pub fn shifts(
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Shift>, ScheduleError> {
    check_range(from, to)?;
    let overrides: Vec<Override> = schedule
        .overrides
        .iter()
        .filter(|o| o.from < to && o.to > from)
        .cloned()
        .collect();
    let mut cuts = vec![from];
    for layer in &schedule.layers {
        layer.changes(from, to, &mut cuts);
    }
    for o in &overrides {
        cuts.push(o.from);
        cuts.push(o.to);
    }
    cuts.retain(|&c| from <= c && c < to);
    cuts.sort_unstable();
    cuts.dedup();

    let mut out: Vec<Shift> = Vec::new();
    for (i, &start) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(to);
        let users = schedule.resolve_at(start, &overrides);
        match out.last_mut() {
            Some(last) if last.users == users => last.end = end,
            _ => out.push(Shift { start, end, users }),
        }
    }
    Ok(out)
}

/// Where nobody is on call in [`from`, `to`), as the longest stretches.
pub fn gaps(
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Interval>, ScheduleError> {
    Ok(shifts(schedule, from, to)?
        .into_iter()
        .filter(|s| s.users.is_empty())
        .map(|s| Interval {
            start: s.start,
            end: s.end,
        })
        .collect())
}

/// When `user` is on call in [`from`, `to`), as the longest stretches (a person's calendar).
pub fn shifts_of(
    schedule: &Schedule,
    user: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Interval>, ScheduleError> {
    let mut out: Vec<Interval> = Vec::new();
    for s in shifts(schedule, from, to)? {
        if !s.users.iter().any(|u| u == user) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == s.start => last.end = s.end,
            _ => out.push(Interval {
                start: s.start,
                end: s.end,
            }),
        }
    }
    Ok(out)
}

fn check_range(from: Timestamp, to: Timestamp) -> Result<(), ScheduleError> {
    if to <= from {
        return Err(ScheduleError::new(
            "to",
            Problem::NotAfter {
                from: from.to_string(),
                to: to.to_string(),
            },
        ));
    }
    if to.duration_since(from) > SignedDuration::from_hours(24 * MAX_RANGE_DAYS) {
        return Err(ScheduleError::new(
            "to",
            Problem::RangeTooLong {
                from: from.to_string(),
                to: to.to_string(),
                max_days: MAX_RANGE_DAYS,
            },
        ));
    }
    Ok(())
}
