//! Property tests of schedule resolution across clock changes in many zones: no gaps or
//! doubles the rules do not imply, hand-offs at the configured local time, `shifts` agreeing
//! with `on_call`, and layers combining as documented.

use std::sync::LazyLock;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Span, Timestamp};
use proptest::prelude::*;

use super::*;

/// Zones with daylight-saving time, odd offsets and odd rules: a 30-minute change
/// (Lord_Howe), a 45-minute offset (Chatham), Ramadan changes (Casablanca), a half-hour
/// offset (St_Johns, Kolkata), none at all (Kolkata, UTC).
const ZONES: [&str; 11] = [
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Africa/Casablanca",
    "America/St_Johns",
    "UTC",
];

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

/// Each zone's transitions from 2015 to 2031, to start schedules next to (from 2015 so
/// that America/Sao_Paulo, without daylight-saving time since 2019, brings its changes at
/// midnight).
static TRANSITIONS: LazyLock<Vec<Vec<Timestamp>>> = LazyLock::new(|| {
    let from: Timestamp = "2015-01-01T00:00:00Z".parse().expect("an instant");
    let to: Timestamp = "2031-01-01T00:00:00Z".parse().expect("an instant");
    ZONES
        .iter()
        .map(|name| {
            zone(name)
                .following(from)
                .map(|t| t.timestamp())
                .take_while(|&t| t < to)
                .collect()
        })
        .collect()
});

fn zone(name: &str) -> TimeZone {
    time_zone(name).expect("a zone in the database")
}

fn days(n: i64) -> Span {
    Span::new().days(n)
}

/// Where a generated schedule lives: a zone and a local moment near one of its clock
/// changes (or anywhere in 2024-2030 for a zone without any).
#[derive(Debug, Clone)]
struct Anchor {
    zone_name: &'static str,
    zone: TimeZone,
    /// The instant of the clock change (or the random instant).
    at: Timestamp,
    /// Its local reading.
    local: DateTime,
}

fn anchor() -> impl Strategy<Value = Anchor> {
    (0..ZONES.len(), any::<u32>()).prop_map(|(z, pick)| {
        let zone_name = ZONES[z];
        let zone = zone(zone_name);
        let transitions = &TRANSITIONS[z];
        let at = if transitions.is_empty() {
            let base: Timestamp = "2024-01-01T00:00:00Z".parse().expect("an instant");
            base + SignedDuration::from_mins(i64::from(pick % (7 * 365 * 24 * 60)))
        } else {
            transitions[pick as usize % transitions.len()]
        };
        let local = zone.to_datetime(at);
        Anchor {
            zone_name,
            zone,
            at,
            local,
        }
    })
}

/// A time of day: when `near`, within 75 minutes of the anchor's clock change (so in and
/// around its gap or fold), else anywhere.
fn clock_time(anchor_minute: i32, near: bool, jitter: i32, anywhere: u16) -> ClockTime {
    if near {
        clock(anchor_minute + jitter)
    } else {
        clock(i32::from(anywhere))
    }
}

fn minute_of(local: DateTime) -> i32 {
    i32::from(local.hour()) * 60 + i32::from(local.minute())
}

fn exists(zone: &TimeZone, local: DateTime) -> bool {
    !matches!(
        zone.to_ambiguous_timestamp(local).offset(),
        AmbiguousOffset::Gap { .. }
    )
}

/// A turn length: 1-72 hours, 1-14 days or 1-4 weeks.
fn turn() -> impl Strategy<Value = TurnLength> {
    prop_oneof![
        (1u32..=72).prop_map(|n| TurnLength::new(n, TurnUnit::Hours)),
        (1u32..=14).prop_map(|n| TurnLength::new(n, TurnUnit::Days)),
        (1u32..=4).prop_map(|n| TurnLength::new(n, TurnUnit::Weeks)),
    ]
}

/// The raw draws for one rotation, placed by [`rotation`] once the anchor is known.
#[derive(Debug, Clone)]
struct RawRotation {
    every: TurnLength,
    /// Start a whole number of turns (0-3) before the anchor's day, so that a day or week
    /// turn hands off on the day of the clock change; else some days around it.
    on_the_day: bool,
    turns_before: i64,
    start_shift: i64,
    near: bool,
    jitter: i32,
    anywhere: u16,
}

fn raw_rotation() -> impl Strategy<Value = RawRotation> {
    (
        turn(),
        (prop::bool::weighted(0.75), 0i64..=3, -10i64..=10),
        (prop::bool::weighted(0.75), -75i32..=75, any::<u16>()),
    )
        .prop_map(
            |(every, (on_the_day, turns_before, start_shift), (near, jitter, anywhere))| {
                RawRotation {
                    every,
                    on_the_day,
                    turns_before,
                    start_shift,
                    near,
                    jitter,
                    anywhere,
                }
            },
        )
}

fn rotation(a: &Anchor, raw: &RawRotation) -> RotationSpec {
    let step_days = match raw.every.unit {
        TurnUnit::Hours => None,
        TurnUnit::Days => Some(i64::from(raw.every.count)),
        TurnUnit::Weeks => Some(7 * i64::from(raw.every.count)),
    };
    let shift = match step_days {
        Some(step) if raw.on_the_day => -step * raw.turns_before,
        _ => raw.start_shift,
    };
    RotationSpec {
        every: raw.every,
        hand_off: clock_time(minute_of(a.local), raw.near, raw.jitter, raw.anywhere),
        time_zone: Some(a.zone_name.to_owned()),
        start: a.local.date().checked_add(days(shift)).expect("a date"),
    }
}

/// The raw draws for one restriction window.
#[derive(Debug, Clone)]
struct RawWindow {
    weekly: bool,
    days: Option<Vec<u8>>,
    from_day: u8,
    to_day: u8,
    from: (bool, i32, u16),
    to: (bool, i32, u16),
    to_end_of_day: bool,
}

fn raw_window() -> impl Strategy<Value = RawWindow> {
    (
        any::<bool>(),
        prop::option::of(prop::collection::btree_set(0u8..7, 1..=7)),
        (0u8..7, 0u8..7),
        (any::<bool>(), -90i32..=90, any::<u16>()),
        (any::<bool>(), -90i32..=90, any::<u16>()),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(weekly, days, (from_day, to_day), from, to, to_end_of_day)| RawWindow {
                weekly,
                days: days.map(|d| d.into_iter().collect()),
                from_day,
                to_day,
                from,
                to,
                to_end_of_day,
            },
        )
}

fn window(a: &Anchor, raw: &RawWindow) -> Option<RestrictionSpec> {
    let m = minute_of(a.local);
    let from = clock_time(m, raw.from.0, raw.from.1, raw.from.2);
    let mut to = clock_time(m, raw.to.0, raw.to.1, raw.to.2);
    if raw.to_end_of_day {
        to = ClockTime::END_OF_DAY;
    }
    let day = |i: u8| Weekday::ALL[usize::from(i)];
    let spec = if raw.weekly {
        RestrictionSpec {
            days: None,
            from: WindowEdge {
                day: Some(day(raw.from_day)),
                time: from,
            },
            to: WindowEdge {
                day: Some(day(raw.to_day)),
                time: to,
            },
        }
    } else {
        RestrictionSpec {
            days: raw
                .days
                .as_ref()
                .map(|d| d.iter().map(|&i| day(i)).collect()),
            from: WindowEdge {
                day: None,
                time: from,
            },
            to: WindowEdge {
                day: None,
                time: to,
            },
        }
    };
    // An empty window is refused by validation; the generator does not make one.
    (spec.from != spec.to).then_some(spec)
}

/// The raw draws for one layer, and maybe a newer version of it.
#[derive(Debug, Clone)]
struct RawLayer {
    members: Vec<Option<usize>>,
    rotation: RawRotation,
    windows: Vec<RawWindow>,
    effective: Option<(i64, i32)>,
    newer: Option<(Vec<Option<usize>>, RawRotation, i64, i32)>,
}

fn members() -> impl Strategy<Value = Vec<Option<usize>>> {
    prop::collection::vec(prop::option::weighted(0.8, 0..USERS.len()), 1..=5)
}

fn raw_layer() -> impl Strategy<Value = RawLayer> {
    (
        members(),
        raw_rotation(),
        prop::collection::vec(raw_window(), 0..=3),
        prop::option::of((-5i64..=10, 0i32..24 * 60)),
        prop::option::weighted(0.3, (members(), raw_rotation(), 1i64..=20, 0i32..24 * 60)),
    )
        .prop_map(|(members, rotation, windows, effective, newer)| RawLayer {
            members,
            rotation,
            windows,
            effective,
            newer,
        })
}

/// The time of day `minute` minutes after midnight (taken modulo a day).
fn clock(minute: i32) -> ClockTime {
    let minute = minute.rem_euclid(24 * 60);
    ClockTime::new((minute / 60) as u8, (minute % 60) as u8).expect("a time of day")
}

/// `minute` on `date`, moved forward off any gap (validation refuses a gap; that refusal
/// has its own property).
fn existing_local(zone: &TimeZone, date: Date, minute: i32) -> DateTime {
    let mut local = clock(minute).on(date).expect("a time");
    while !exists(zone, local) {
        local = local
            .checked_add(SignedDuration::from_mins(30))
            .expect("a time");
    }
    local
}

/// Layer specs from raw draws: `l{i}`, with a newer version after it when drawn. Hand-offs
/// that would fall in a gap on the start day are moved off it (validation refuses them;
/// that refusal has its own property).
fn layers(a: &Anchor, raw: &[RawLayer]) -> Vec<LayerSpec> {
    let names = |m: &[Option<usize>]| -> Vec<Option<String>> {
        m.iter().map(|u| u.map(|i| USERS[i].to_owned())).collect()
    };
    let placed = |raw: &RawRotation| {
        let mut r = rotation(a, raw);
        while !exists(&a.zone, r.hand_off.on(r.start).expect("a time")) {
            r.hand_off = clock(i32::from(r.hand_off.minutes()) + 30);
        }
        r
    };
    let day = |shift: i64| a.local.date().checked_add(days(shift)).expect("a date");
    let mut out = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let name = format!("l{i}");
        let windows: Vec<RestrictionSpec> = l.windows.iter().filter_map(|w| window(a, w)).collect();
        let effective = l.effective.map(|(d, m)| existing_local(&a.zone, day(d), m));
        out.push(LayerSpec {
            name: name.clone(),
            members: names(&l.members),
            rotation: placed(&l.rotation),
            restrictions: windows.clone(),
            effective_from: effective,
        });
        if let Some((members, rotation, after, minute)) = &l.newer {
            // At least a day after the older version's effective_from (or the anchor).
            let base = effective.unwrap_or(a.local).date();
            let date = base.checked_add(days(*after)).expect("a date");
            out.push(LayerSpec {
                name,
                members: names(members),
                rotation: placed(rotation),
                restrictions: windows,
                effective_from: Some(existing_local(&a.zone, date, *minute)),
            });
        }
    }
    out
}

/// Overrides over the range, without two replacing one user at overlapping times.
fn overrides(from: Timestamp, raw: &[(u32, u32, usize, usize, bool)]) -> Vec<OverrideSpec> {
    let mut out: Vec<OverrideSpec> = Vec::new();
    for &(start, len, a, b, add) in raw {
        let o_from = from + SignedDuration::from_mins(i64::from(start));
        let o_to = o_from + SignedDuration::from_mins(i64::from(len) + 1);
        let (user, with) = (USERS[a].to_owned(), USERS[b].to_owned());
        let o = if add {
            OverrideSpec {
                from: o_from,
                to: o_to,
                replace: None,
                with: None,
                add: Some(user),
            }
        } else {
            if user == with
                || out
                    .iter()
                    .any(|p| p.replace.as_ref() == Some(&user) && p.from < o_to && o_from < p.to)
            {
                continue;
            }
            OverrideSpec {
                from: o_from,
                to: o_to,
                replace: Some(user),
                with: Some(with),
                add: None,
            }
        };
        out.push(o);
    }
    out
}

fn raw_overrides() -> impl Strategy<Value = Vec<(u32, u32, usize, usize, bool)>> {
    prop::collection::vec(
        (
            0u32..30 * 24 * 60,
            0u32..3 * 24 * 60,
            0..USERS.len(),
            0..USERS.len(),
            any::<bool>(),
        ),
        0..=4,
    )
}

fn valid(spec: &ScheduleSpec) -> Schedule {
    spec.validate(&|u| USERS.contains(&u))
        .unwrap_or_else(|e| panic!("{e}\n{}", spec.to_yaml()))
}

/// A range of up to 40 days starting up to 5 days before the anchor.
fn range(a: &Anchor, before_minutes: u32, length_minutes: u32) -> (Timestamp, Timestamp) {
    let from = a.at - SignedDuration::from_mins(i64::from(before_minutes));
    (
        from,
        from + SignedDuration::from_mins(i64::from(length_minutes) + 1),
    )
}

/// Instants spread over [from, to) by fractions drawn as u32.
fn instants(from: Timestamp, to: Timestamp, fractions: &[u32]) -> Vec<Timestamp> {
    let span = to.duration_since(from).as_nanos();
    fractions
        .iter()
        .map(|&f| {
            from + SignedDuration::from_nanos_i128(
                span * i128::from(f) / (i128::from(u32::MAX) + 1),
            )
        })
        .collect()
}

/// The turn a civil rotation hands off to on each date, its instant read independently of
/// `compatible()`: the local time itself when it exists once, its earlier instant in a fold,
/// and the local time read with the offset before the gap (so later by the gap's length)
/// in a gap.
fn expected_hand_off(zone: &TimeZone, local: DateTime) -> Timestamp {
    let offset = match zone.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Fold { before, .. } | AmbiguousOffset::Gap { before, .. } => before,
    };
    offset.to_timestamp(local).expect("in range")
}

proptest! {
    // Cheap cases, many of them: about one in ten hands off in a gap or a fold.
    #![proptest_config(ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) and (c): one unrestricted layer without empty slots has exactly one person at
    /// every instant from its first hand-off (nobody before), every turn comes once and in
    /// order, and each day or week turn hands off at the configured local time (moved by the
    /// gap's length on a day that time does not exist, the earlier instant on a day it
    /// happens twice); hour turns are exactly N hours apart.
    #[test]
    fn one_layer_has_one_person_at_a_time_and_hands_off_on_time(
        a in anchor(),
        raw in raw_rotation(),
        n in 1usize..=USERS.len(),
        before in 0u32..5 * 24 * 60,
        length in 0u32..40 * 24 * 60,
        fractions in prop::collection::vec(any::<u32>(), 16),
    ) {
        let rotation = rotation(&a, &raw);
        let start_local = rotation.hand_off.on(rotation.start).expect("a time");
        let spec = ScheduleSpec {
            name: "p".into(),
            time_zone: a.zone_name.into(),
            combine: Combine::Exclusive,
            layers: vec![LayerSpec {
                name: "l".into(),
                members: USERS[..n].iter().map(|u| Some((*u).to_owned())).collect(),
                rotation: rotation.clone(),
                restrictions: vec![],
                effective_from: None,
            }],
            overrides: vec![],
        };
        // (e) The first hand-off is refused exactly when it does not exist.
        let checked = spec.validate(&|_| true);
        prop_assert_eq!(checked.is_err(), !exists(&a.zone, start_local));
        let s = match checked {
            Ok(s) => s,
            Err(errors) => {
                prop_assert_eq!(errors.errors().len(), 1);
                prop_assert_eq!(&errors.errors()[0].field, "layers[0].rotation.hand_off");
                let gap = matches!(errors.errors()[0].problem, Problem::NonexistentLocalTime { .. });
                prop_assert!(gap);
                return Ok(());
            }
        };
        let first = a.zone.to_ambiguous_timestamp(start_local).earlier().expect("in range");
        let (from, to) = range(&a, before, length);
        let all = shifts(&s, from, to).expect("a range");

        for t in instants(from, to, &fractions) {
            let who = on_call(&s, t);
            prop_assert_eq!(who.len(), usize::from(t >= first), "at {}", t);
        }
        let mut hand_offs = Vec::new();
        for (i, shift) in all.iter().enumerate() {
            if shift.end <= first {
                prop_assert!(shift.users.is_empty());
                continue;
            }
            prop_assert_eq!(shift.users.len(), 1, "{:?}", shift);
            if i > 0 {
                hand_offs.push((shift.start, shift.users[0].clone()));
            }
        }
        if n < 2 {
            // One member: a single shift from the first hand-off on.
            prop_assert!(all.iter().filter(|s| !s.users.is_empty()).count() <= 1);
            return Ok(());
        }
        // With distinct members every turn is a shift: turn k starts at hand_offs[..] and
        // belongs to member k % n.
        let k0 = (0i64..).find(|&k| {
            hand_off_of(&a.zone, &rotation, first, k) > from
        }).expect("a turn");
        for (j, (at, user)) in hand_offs.iter().enumerate() {
            let k = k0 + j as i64;
            prop_assert_eq!(*at, hand_off_of(&a.zone, &rotation, first, k), "turn {}", k);
            prop_assert_eq!(user.as_str(), USERS[(k as usize) % n], "turn {}", k);
        }
        // And no turn in the range was left out.
        let next = hand_off_of(&a.zone, &rotation, first, k0 + hand_offs.len() as i64);
        prop_assert!(next >= to, "turn {} at {} is missing before {}", k0 + hand_offs.len() as i64, next, to);
    }

}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (b) `shifts` partitions [from, to): in order, contiguous, non-empty, each different
    /// from the one before, and each agreeing with `on_call` at its start, just before its
    /// end, and at random instants.
    #[test]
    fn shifts_partition_the_range_and_agree_with_on_call(
        a in anchor(),
        raw in prop::collection::vec(raw_layer(), 1..=4),
        additive in any::<bool>(),
        raw_overrides in raw_overrides(),
        before in 0u32..5 * 24 * 60,
        length in 0u32..30 * 24 * 60,
        fractions in prop::collection::vec(any::<u32>(), 32),
    ) {
        let (from, to) = range(&a, before, length);
        let spec = ScheduleSpec {
            name: "p".into(),
            time_zone: a.zone_name.into(),
            combine: if additive { Combine::Additive } else { Combine::Exclusive },
            layers: layers(&a, &raw),
            overrides: overrides(from, &raw_overrides),
        };
        let s = valid(&spec);
        let all = shifts(&s, from, to).expect("a range");
        prop_assert!(!all.is_empty());
        prop_assert_eq!(all[0].start, from);
        prop_assert_eq!(all[all.len() - 1].end, to);
        for pair in all.windows(2) {
            prop_assert_eq!(pair[0].end, pair[1].start);
            prop_assert_ne!(&pair[0].users, &pair[1].users);
        }
        for shift in &all {
            prop_assert!(shift.start < shift.end);
            prop_assert_eq!(&on_call(&s, shift.start), &shift.users);
            let last = shift.end - SignedDuration::from_nanos(1);
            prop_assert_eq!(&on_call(&s, last), &shift.users, "just before {}", shift.end);
            let mut sorted = shift.users.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, &shift.users);
        }
        for t in instants(from, to, &fractions) {
            let i = all.partition_point(|s| s.end <= t);
            prop_assert_eq!(&on_call(&s, t), &all[i].users, "at {}", t);
        }
        let holes = gaps(&s, from, to).expect("a range");
        let empty: Vec<Interval> = all
            .iter()
            .filter(|s| s.users.is_empty())
            .map(|s| Interval { start: s.start, end: s.end })
            .collect();
        prop_assert_eq!(holes, empty);
    }

    /// (d) `additive` is the union of the layers' people; `exclusive` is the people of the
    /// last layer (the bottom of the list, as PagerDuty draws it) that has someone. Each
    /// layer's people are those of a schedule holding that layer (all its versions) alone.
    #[test]
    fn layers_combine_as_union_or_the_last_with_someone(
        a in anchor(),
        raw in prop::collection::vec(raw_layer(), 1..=4),
        before in 0u32..5 * 24 * 60,
        length in 0u32..20 * 24 * 60,
        fractions in prop::collection::vec(any::<u32>(), 16),
    ) {
        let layers = layers(&a, &raw);
        let spec = |combine: Combine, layers: Vec<LayerSpec>| ScheduleSpec {
            name: "p".into(),
            time_zone: a.zone_name.into(),
            combine,
            layers,
            overrides: vec![],
        };
        let additive = valid(&spec(Combine::Additive, layers.clone()));
        let exclusive = valid(&spec(Combine::Exclusive, layers.clone()));
        let mut names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        names.dedup();
        let alone: Vec<Schedule> = names
            .iter()
            .map(|name| {
                let group = layers.iter().filter(|l| l.name == *name).cloned().collect();
                valid(&spec(Combine::Exclusive, group))
            })
            .collect();

        let (from, to) = range(&a, before, length);
        let mut probes = instants(from, to, &fractions);
        for s in [&additive, &exclusive] {
            probes.extend(shifts(s, from, to).expect("a range").iter().map(|s| s.start));
        }
        for t in probes {
            let each: Vec<Vec<String>> = alone.iter().map(|s| on_call(s, t)).collect();
            let mut union: Vec<String> = each.iter().flatten().cloned().collect();
            union.sort();
            union.dedup();
            prop_assert_eq!(&on_call(&additive, t), &union, "additive at {}", t);
            let top = each.iter().rev().find(|p| !p.is_empty()).cloned().unwrap_or_default();
            prop_assert!(top.len() <= 1);
            prop_assert_eq!(&on_call(&exclusive, t), &top, "exclusive at {}", t);
        }
    }
}

/// The instant turn `k` starts, computed apart from the resolver: hour turns are `k * N`
/// hours after the first hand-off; day and week turns are `k * N` calendar days after the
/// start date at the hand-off time, read by [`expected_hand_off`].
fn hand_off_of(zone: &TimeZone, rotation: &RotationSpec, first: Timestamp, k: i64) -> Timestamp {
    let count = i64::from(rotation.every.count);
    match rotation.every.unit {
        TurnUnit::Hours => first + SignedDuration::from_hours(count * k),
        TurnUnit::Days | TurnUnit::Weeks => {
            let step = if rotation.every.unit == TurnUnit::Weeks {
                7 * count
            } else {
                count
            };
            let date: Date = rotation.start.checked_add(days(step * k)).expect("a date");
            let local = rotation.hand_off.on(date).expect("a time");
            let at = expected_hand_off(zone, local);
            // The hand-off shows the configured local time, or (in a gap) that time moved
            // forward by exactly the gap's length.
            let shown = zone.to_datetime(at);
            let moved = shown.duration_since(local);
            match zone.to_ambiguous_timestamp(local).offset() {
                AmbiguousOffset::Gap { before, after } => assert_eq!(
                    moved,
                    SignedDuration::from_secs(i64::from(after.seconds() - before.seconds()))
                ),
                _ => assert_eq!(moved, SignedDuration::ZERO),
            }
            at
        }
    }
}
