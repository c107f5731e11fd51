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

/// The most shifts [`shifts`] returns for one range; a schedule that changes more often
/// is asked for a shorter range.
pub const MAX_SHIFTS: usize = 100_000;

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
        let members: Vec<Option<&str>> = self.layers.iter().map(|l| l.member_at(t)).collect();
        let active: Vec<&Override> = overrides.iter().filter(|o| o.covers(t)).collect();
        decide(self.spec.combine, &members, &active)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

/// Who is on call, given each layer's member (lowest layer first) and the overrides in
/// force: the one step [`on_call`] and [`shifts`] share after the layers.
fn decide<'a>(
    combine: Combine,
    members: &[Option<&'a str>],
    active: &[&'a Override],
) -> Vec<&'a str> {
    let base: BTreeSet<&str> = match combine {
        Combine::Exclusive => members.iter().rev().find_map(|m| *m).into_iter().collect(),
        Combine::Additive => members.iter().flatten().copied().collect(),
    };
    // Replacements apply at once to the layers' people (validation keeps a user from being
    // replaced twice at a time), so chains do not follow: with alice→dave and dave→erin both
    // active, alice's place goes to dave.
    let mut users: BTreeSet<&str> = BTreeSet::new();
    for user in base {
        let replaced = active.iter().find_map(|o| match &o.action {
            Action::Replace { user: r, with } if r == user => Some(with.as_str()),
            _ => None,
        });
        users.insert(replaced.unwrap_or(user));
    }
    for o in active {
        if let Action::Add(user) = &o.action {
            users.insert(user);
        }
    }
    users.into_iter().collect()
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
        self.member_given(t, || self.in_window(t))
    }

    /// The layer's member on call at `t`, with `in_window` saying whether `t` is in one of
    /// its windows (asked only when the layer has windows).
    fn member_given(&self, t: Timestamp, in_window: impl FnOnce() -> bool) -> Option<&str> {
        if t < self.from || self.until.is_some_and(|u| t >= u) {
            return None;
        }
        if !self.windows.is_empty() && !in_window() {
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

    /// The layer over [`from`, `to`): its member at `from` and at every later instant where
    /// it may change (hand-offs, window edges, where it starts and ends), in order.
    ///
    /// Each answer is [`Layer::member_given`], as for [`on_call`]; only the window test is
    /// read from the windows of the range, made once, instead of made again per instant.
    fn timeline(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Option<&str>)> {
        let mut points = vec![from, self.from];
        points.extend(self.until);
        let mut windows: Vec<(Timestamp, Timestamp)> = Vec::new();
        let counts = self.from < to && self.until.is_none_or(|u| u > from);
        if counts {
            let mut k = self.rotation.turn_at(&self.zone, from).unwrap_or(0);
            while let Some(h) = self.rotation.hand_off(&self.zone, k) {
                if h >= to {
                    break;
                }
                points.push(h);
                k += 1;
            }
            // Every window that may hold an instant of the range: from the look-back before
            // the range's first local date (one day more, as a fold can put a later instant
            // on an earlier date) to a day past its last.
            let first = self.zone.to_datetime(from).date();
            let last = add_days(self.zone.to_datetime(to).date(), 2).unwrap_or(Date::MAX);
            for w in &self.windows {
                let mut date = add_days(first, -w.lookback_days() - 1).unwrap_or(Date::MIN);
                while date <= last {
                    windows.extend(w.on(&self.zone, date));
                    match date.tomorrow() {
                        Ok(next) => date = next,
                        Err(_) => break,
                    }
                }
            }
        }
        points.extend(windows.iter().flat_map(|&(start, end)| [start, end]));
        points.retain(|&p| from <= p && p < to);
        points.sort_unstable();
        points.dedup();
        let windows = union(windows);
        points
            .into_iter()
            .map(|p| (p, self.member_given(p, || in_union(&windows, p))))
            .collect()
    }
}

/// Intervals merged into disjoint ones, in order.
fn union(mut intervals: Vec<(Timestamp, Timestamp)>) -> Vec<(Timestamp, Timestamp)> {
    intervals.sort_unstable();
    let mut out: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Whether `t` is in one of the disjoint, ordered `intervals`.
fn in_union(intervals: &[(Timestamp, Timestamp)], t: Timestamp) -> bool {
    let i = intervals.partition_point(|&(start, _)| start <= t);
    i > 0 && t < intervals[i - 1].1
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
/// No sampling: every instant where the answer may change (hand-offs, window edges, where
/// layers start and end, override edges) is a candidate, and at each the people are decided
/// by `on_call`'s own steps (each layer's rule for its member, then combining and the
/// overrides). Only the window test differs in form: each layer's windows over the range are
/// made once and looked up, rather than made again per instant.
///
/// The range must not be empty nor longer than [`MAX_RANGE_DAYS`], and the answer holds at
/// most [`MAX_SHIFTS`] stretches; else the error names `to`.
pub fn shifts(
    schedule: &Schedule,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Shift>, ScheduleError> {
    check_range(from, to)?;
    let overrides: Vec<&Override> = schedule
        .overrides
        .iter()
        .filter(|o| o.from < to && o.to > from)
        .collect();
    let timelines: Vec<Vec<(Timestamp, Option<&str>)>> = schedule
        .layers
        .iter()
        .map(|l| l.timeline(from, to))
        .collect();
    let mut override_edges: Vec<Timestamp> = overrides
        .iter()
        .flat_map(|o| [o.from, o.to])
        .filter(|&e| from <= e && e < to)
        .collect();
    override_edges.sort_unstable();
    override_edges.dedup();
    let mut cuts: Vec<Timestamp> = timelines
        .iter()
        .flat_map(|t| t.iter().map(|&(at, _)| at))
        .chain(override_edges.iter().copied())
        .chain([from])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();

    // One sweep: each layer's answer changes only at its own points, the overrides in force
    // only at their edges.
    let mut next = vec![0usize; timelines.len()];
    let mut members: Vec<Option<&str>> = vec![None; timelines.len()];
    let mut next_edge = 0;
    let mut active: Vec<&Override> = Vec::new();
    let mut out: Vec<Shift> = Vec::new();
    for (i, &start) in cuts.iter().enumerate() {
        for (layer, timeline) in timelines.iter().enumerate() {
            while let Some(&(at, member)) = timeline.get(next[layer])
                && at <= start
            {
                members[layer] = member;
                next[layer] += 1;
            }
        }
        let mut edge = i == 0;
        while override_edges.get(next_edge).is_some_and(|&e| e <= start) {
            next_edge += 1;
            edge = true;
        }
        if edge {
            active = overrides
                .iter()
                .copied()
                .filter(|o| o.covers(start))
                .collect();
        }
        let end = cuts.get(i + 1).copied().unwrap_or(to);
        let users = decide(schedule.spec.combine, &members, &active);
        match out.last_mut() {
            Some(last)
                if last
                    .users
                    .iter()
                    .map(String::as_str)
                    .eq(users.iter().copied()) =>
            {
                last.end = end;
            }
            _ => {
                if out.len() == MAX_SHIFTS {
                    return Err(ScheduleError::new(
                        "to",
                        Problem::TooManyShifts {
                            from: from.to_string(),
                            to: to.to_string(),
                            max: MAX_SHIFTS,
                        },
                    ));
                }
                out.push(Shift {
                    start,
                    end,
                    users: users.into_iter().map(str::to_owned).collect(),
                });
            }
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
