//! Maintenance windows: each frequency, BYDAY, COUNT/UNTIL, the nights the clocks change,
//! scopes, and rules refused naming their field.

use std::collections::BTreeMap;

use super::*;

fn spec(zone: &str, start: &str, duration: &str, rrule: &str) -> WindowSpec {
    WindowSpec {
        name: "db-upgrade".into(),
        time_zone: zone.into(),
        start: start.into(),
        duration: duration.into(),
        rrule: rrule.into(),
        services: vec!["checkout".into()],
        integrations: Vec::new(),
        matchers: Vec::new(),
        comment: String::new(),
    }
}

fn window(zone: &str, start: &str, duration: &str, rrule: &str) -> Window {
    spec(zone, start, duration, rrule).check("w").unwrap()
}

/// An instant written in UTC (`2026-03-29T00:00:00Z`).
fn utc(text: &str) -> Micros {
    Micros::from_unix_micros(text.parse::<Timestamp>().unwrap().as_microsecond())
}

fn occ(start: &str, end: &str) -> Occurrence {
    Occurrence {
        start: utc(start),
        end: utc(end),
    }
}

fn before(t: Micros) -> Micros {
    Micros::from_unix_micros(t.unix_micros() - 1)
}

/// Asserts that `w` is in force exactly over `o` around it: from its start to just before
/// its end, and not a microsecond either side.
fn in_force_exactly(w: &Window, o: Occurrence) {
    assert_eq!(w.in_force(before(o.start)), None, "before {o:?}");
    assert_eq!(w.in_force(o.start), Some(o), "at the start of {o:?}");
    assert_eq!(w.in_force(before(o.end)), Some(o), "at the end of {o:?}");
    assert_eq!(w.in_force(o.end), None, "after {o:?}");
}

#[test]
fn a_daily_window_across_both_berlin_dst_nights_suppresses_exactly_its_local_hours() {
    // 01:00-04:00 local every night. Europe/Berlin springs forward on 2026-03-29 at 02:00
    // CET (01:00 UTC) to 03:00 CEST, and falls back on 2026-10-25 at 03:00 CEST (01:00 UTC)
    // to 02:00 CET.
    let w = window("Europe/Berlin", "2026-03-01T01:00", "3h", "FREQ=DAILY");
    // The night before: CET, three hours.
    in_force_exactly(&w, occ("2026-03-28T00:00:00Z", "2026-03-28T03:00:00Z"));
    // Spring forward: 01:00 CET to 04:00 CEST is two real hours.
    let spring = occ("2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z");
    in_force_exactly(&w, spring);
    assert_eq!(
        spring.end.saturating_duration_since(spring.start).as_secs(),
        2 * 3600
    );
    // 03:30 CEST (01:30 UTC) is inside, 04:30 CEST (02:30 UTC) is not.
    assert!(w.in_force(utc("2026-03-29T01:30:00Z")).is_some());
    assert!(w.in_force(utc("2026-03-29T02:30:00Z")).is_none());
    // The night after: CEST, three hours again.
    in_force_exactly(&w, occ("2026-03-29T23:00:00Z", "2026-03-30T02:00:00Z"));
    // Fall back: 01:00 CEST to 04:00 CET is four real hours (02:00-03:00 happens twice).
    in_force_exactly(&w, occ("2026-10-23T23:00:00Z", "2026-10-24T02:00:00Z"));
    let fall = occ("2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z");
    in_force_exactly(&w, fall);
    assert_eq!(
        fall.end.saturating_duration_since(fall.start).as_secs(),
        4 * 3600
    );
    // Both 02:30s are inside: the CEST one (00:30 UTC) and the CET one (01:30 UTC).
    assert!(w.in_force(utc("2026-10-25T00:30:00Z")).is_some());
    assert!(w.in_force(utc("2026-10-25T01:30:00Z")).is_some());
    in_force_exactly(&w, occ("2026-10-26T00:00:00Z", "2026-10-26T03:00:00Z"));
}

#[test]
fn a_daily_window_across_both_new_york_dst_nights_suppresses_exactly_its_local_hours() {
    // America/New_York springs forward on 2026-03-08 at 02:00 EST (07:00 UTC) and falls back
    // on 2026-11-01 at 02:00 EDT (06:00 UTC): 01:00 happens twice then, and the window
    // starts at the first.
    let w = window("America/New_York", "2026-01-01T01:00", "3h", "FREQ=DAILY");
    in_force_exactly(&w, occ("2026-03-07T06:00:00Z", "2026-03-07T09:00:00Z"));
    in_force_exactly(&w, occ("2026-03-08T06:00:00Z", "2026-03-08T08:00:00Z"));
    in_force_exactly(&w, occ("2026-03-09T05:00:00Z", "2026-03-09T08:00:00Z"));
    in_force_exactly(&w, occ("2026-11-01T05:00:00Z", "2026-11-01T09:00:00Z"));
    in_force_exactly(&w, occ("2026-11-02T06:00:00Z", "2026-11-02T09:00:00Z"));
}

#[test]
fn an_edge_in_the_gap_is_where_the_gap_ends_and_a_window_inside_it_is_empty() {
    // 02:30-03:30 local: on 2026-03-29 Berlin has no 02:xx, so the window holds the
    // instants the wall clock reads 03:00-03:30 CEST (01:00-01:30 UTC).
    let w = window("Europe/Berlin", "2026-03-27T02:30", "1h", "FREQ=DAILY");
    assert_eq!(
        w.upcoming(utc("2026-03-28T12:00:00Z"), 2),
        [
            occ("2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"),
            occ("2026-03-30T00:30:00Z", "2026-03-30T01:30:00Z"),
        ]
    );
    // 02:10-02:40 never happens that night: no occurrence, the next night's instead.
    let w = window("Europe/Berlin", "2026-03-27T02:10", "30m", "FREQ=DAILY");
    assert_eq!(
        w.upcoming(utc("2026-03-28T12:00:00Z"), 1),
        [occ("2026-03-30T00:10:00Z", "2026-03-30T00:40:00Z")]
    );
    assert!(w.in_force(utc("2026-03-29T01:00:00Z")).is_none());
}

#[test]
fn an_interval_skips_periods() {
    let w = window("UTC", "2026-01-01T10:00", "1h", "FREQ=DAILY;INTERVAL=3");
    assert_eq!(
        w.upcoming(utc("2026-01-01T00:00:00Z"), 3),
        [
            occ("2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"),
            occ("2026-01-04T10:00:00Z", "2026-01-04T11:00:00Z"),
            occ("2026-01-07T10:00:00Z", "2026-01-07T11:00:00Z"),
        ]
    );
    // Far later, found without walking from the start: 2030-05-31 is 1,611 days (537
    // intervals) on, so 2030-06-03 is next.
    assert_eq!(
        w.upcoming(utc("2030-06-01T00:00:00Z"), 1)[0].start,
        utc("2030-06-03T10:00:00Z")
    );
}

#[test]
fn daily_with_byday_keeps_those_days() {
    // 2026-01-05 is a Monday.
    let w = window("UTC", "2026-01-05T22:00", "4h", "FREQ=DAILY;BYDAY=MO,WE,FR");
    let starts: Vec<Micros> = w
        .upcoming(utc("2026-01-05T00:00:00Z"), 4)
        .iter()
        .map(|o| o.start)
        .collect();
    assert_eq!(
        starts,
        [
            utc("2026-01-05T22:00:00Z"),
            utc("2026-01-07T22:00:00Z"),
            utc("2026-01-09T22:00:00Z"),
            utc("2026-01-12T22:00:00Z"),
        ]
    );
    // Running past midnight into Tuesday: in force at 01:00 Tuesday.
    assert_eq!(
        w.in_force(utc("2026-01-06T01:00:00Z")),
        Some(occ("2026-01-05T22:00:00Z", "2026-01-06T02:00:00Z"))
    );
}

#[test]
fn weekly_windows_on_their_days_every_other_week() {
    // Saturday 2026-01-03; every other weekend, Saturday and Sunday 00:00 for 1d.
    let w = window(
        "UTC",
        "2026-01-03T00:00",
        "1d",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=SA,SU;WKST=MO",
    );
    let starts: Vec<Micros> = w
        .upcoming(utc("2026-01-01T00:00:00Z"), 4)
        .iter()
        .map(|o| o.start)
        .collect();
    assert_eq!(
        starts,
        [
            utc("2026-01-03T00:00:00Z"),
            utc("2026-01-04T00:00:00Z"),
            utc("2026-01-17T00:00:00Z"),
            utc("2026-01-18T00:00:00Z"),
        ]
    );
    assert!(
        w.in_force(utc("2026-01-10T12:00:00Z")).is_none(),
        "the week between"
    );
    // Without BYDAY: DTSTART's weekday.
    let w = window("UTC", "2026-01-06T09:00", "30m", "FREQ=WEEKLY");
    assert_eq!(
        w.upcoming(utc("2026-01-07T00:00:00Z"), 1),
        [occ("2026-01-13T09:00:00Z", "2026-01-13T09:30:00Z")]
    );
}

#[test]
fn monthly_windows_by_ordinal_weekday_month_day_and_dtstart_day() {
    let starts = |w: &Window, n: usize| -> Vec<Micros> {
        w.upcoming(utc("2026-01-01T00:00:00Z"), n)
            .iter()
            .map(|o| o.start)
            .collect()
    };
    // The first Monday of each month.
    let first_monday = window("UTC", "2026-01-01T02:00", "2h", "FREQ=MONTHLY;BYDAY=1MO");
    assert_eq!(
        starts(&first_monday, 3),
        [
            utc("2026-01-05T02:00:00Z"),
            utc("2026-02-02T02:00:00Z"),
            utc("2026-03-02T02:00:00Z"),
        ]
    );
    // The last Friday.
    let last_friday = window("UTC", "2026-01-01T18:00", "3h", "FREQ=MONTHLY;BYDAY=-1FR");
    assert_eq!(
        starts(&last_friday, 3),
        [
            utc("2026-01-30T18:00:00Z"),
            utc("2026-02-27T18:00:00Z"),
            utc("2026-03-27T18:00:00Z"),
        ]
    );
    // Every Tuesday of the month, every second month.
    let tuesdays = window(
        "UTC",
        "2026-01-01T00:00",
        "1h",
        "FREQ=MONTHLY;INTERVAL=2;BYDAY=TU",
    );
    let s = starts(&tuesdays, 6);
    assert_eq!(s[3], utc("2026-01-27T00:00:00Z"));
    assert_eq!(s[4], utc("2026-03-03T00:00:00Z"));
    // The last day of the month.
    let last_day = window(
        "UTC",
        "2026-01-01T23:00",
        "1h",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
    );
    assert_eq!(
        starts(&last_day, 3),
        [
            utc("2026-01-31T23:00:00Z"),
            utc("2026-02-28T23:00:00Z"),
            utc("2026-03-31T23:00:00Z"),
        ]
    );
    // DTSTART's day, the 31st: months without one are skipped.
    let the_31st = window("UTC", "2026-01-31T12:00", "1h", "FREQ=MONTHLY");
    assert_eq!(
        starts(&the_31st, 3),
        [
            utc("2026-01-31T12:00:00Z"),
            utc("2026-03-31T12:00:00Z"),
            utc("2026-05-31T12:00:00Z"),
        ]
    );
}

#[test]
fn count_and_until_end_the_rule() {
    let counted = window("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;COUNT=3");
    let all = counted.upcoming(utc("2025-01-01T00:00:00Z"), 10);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].start, utc("2026-01-03T00:00:00Z"));
    assert!(counted.in_force(utc("2026-01-03T00:30:00Z")).is_some());
    assert!(counted.in_force(utc("2026-01-04T00:30:00Z")).is_none());
    // COUNT counts from DTSTART, however late the question.
    assert!(counted.upcoming(utc("2026-02-01T00:00:00Z"), 10).is_empty());

    // UNTIL in UTC, in local time, and as a date (the whole local day).
    for rule in [
        "FREQ=DAILY;UNTIL=20260103T090000Z",
        "FREQ=DAILY;UNTIL=20260103T100000",
        "FREQ=DAILY;UNTIL=20260103",
    ] {
        let w = window("Europe/Berlin", "2026-01-01T10:00", "1h", rule);
        let all = w.upcoming(utc("2025-01-01T00:00:00Z"), 10);
        assert_eq!(all.len(), 3, "{rule}");
        assert_eq!(
            all[2],
            occ("2026-01-03T09:00:00Z", "2026-01-03T10:00:00Z"),
            "{rule}"
        );
    }
    // An UNTIL a second before the third start leaves two.
    let w = window(
        "UTC",
        "2026-01-01T10:00",
        "1h",
        "RRULE:FREQ=DAILY;UNTIL=20260103T095959Z",
    );
    assert_eq!(w.upcoming(utc("2025-01-01T00:00:00Z"), 10).len(), 2);
}

#[test]
fn a_window_without_a_rule_happens_once() {
    let w = window("UTC", "2026-05-01T20:00", "90m", "");
    assert_eq!(
        w.upcoming(utc("2026-01-01T00:00:00Z"), 5),
        [occ("2026-05-01T20:00:00Z", "2026-05-01T21:30:00Z")]
    );
    assert!(w.upcoming(utc("2026-05-02T00:00:00Z"), 5).is_empty());
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_scope_takes_services_integrations_and_labels_together() {
    let mut s = spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY");
    s.services = vec!["checkout".into(), "payments".into()];
    s.integrations = vec!["am-prod".into()];
    s.matchers = vec![r#"env="prod""#.into(), r#"instance=~"web-[0-9]+""#.into()];
    let w = s.check("w").unwrap();
    let prod = labels(&[("env", "prod"), ("instance", "web-1")]);
    let subject = |service, integration, labels| Subject {
        service,
        integration,
        labels,
    };
    assert!(w.covers(&subject("payments", "am-prod", &prod)));
    assert!(!w.covers(&subject("search", "am-prod", &prod)));
    assert!(!w.covers(&subject("payments", "am-dev", &prod)));
    // Anchored: web-1x is not web-[0-9]+.
    let near = labels(&[("env", "prod"), ("instance", "web-1x")]);
    assert!(!w.covers(&subject("payments", "am-prod", &near)));

    // Of two windows in force, the one ending last holds paging back.
    let mut long = spec("UTC", "2026-01-01T00:00", "3h", "FREQ=DAILY");
    long.name = "long".into();
    let windows = check_all(&[spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY"), long]).unwrap();
    let none = BTreeMap::new();
    let (w, o) = suppressing(
        &windows,
        &subject("checkout", "", &none),
        utc("2026-02-01T00:30:00Z"),
    )
    .unwrap();
    assert_eq!(w.name(), "long");
    assert_eq!(o.end, utc("2026-02-01T03:00:00Z"));
    assert!(
        suppressing(
            &windows,
            &subject("search", "", &none),
            utc("2026-02-01T00:30:00Z")
        )
        .is_none()
    );
}

#[test]
fn matchers_are_written_as_alertmanager_writes_them() {
    let m = parse_matcher(r#"job =~ "web\"s.*""#).unwrap();
    assert_eq!(
        (m.name.as_str(), m.op, m.value.as_str()),
        ("job", MatchOp::Regex, "web\"s.*")
    );
    let m = parse_matcher("env!=dev").unwrap();
    assert_eq!(
        (m.name.as_str(), m.op, m.value.as_str()),
        ("env", MatchOp::NotEqual, "dev")
    );
    let m = parse_matcher(r#"env!~"dev|test""#).unwrap();
    assert_eq!(m.op, MatchOp::NotRegex);
    let m = parse_matcher(r#"team="""#).unwrap();
    assert_eq!((m.op, m.value.as_str()), (MatchOp::Equal, ""));
    for bad in ["env", "=prod", r#"env="prod"#, "env ~ prod", r#"env="a"b""#] {
        assert!(parse_matcher(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_windows_are_refused_naming_the_field() {
    let cases: Vec<(WindowSpec, &str)> = vec![
        (
            spec("Mars/Olympus", "2026-01-01T00:00", "1h", ""),
            "w.time_zone",
        ),
        (spec("UTC", "2026-01-01T00:00Z", "1h", ""), "w.start"),
        (spec("UTC", "2026-01-01T00:00+01:00", "1h", ""), "w.start"),
        (spec("UTC", "yesterday", "1h", ""), "w.start"),
        (
            spec("UTC", "2026-01-01T00:00", "0m", ""),
            "w.duration: must be more than zero",
        ),
        (spec("UTC", "2026-01-01T00:00", "8d", ""), "w.duration"),
        (spec("UTC", "2026-01-01T00:00", "1w1m", ""), "w.duration"),
        (spec("UTC", "2026-01-01T00:00", "3x", ""), "w.duration"),
        (
            spec("UTC", "2026-01-01T00:00", "99999999999999999999h", ""),
            "w.duration",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=HOURLY"),
            "w.rrule: FREQ=HOURLY is not supported",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=YEARLY"),
            "w.rrule: FREQ=YEARLY",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;BYSETPOS=1"),
            "w.rrule: BYSETPOS is not supported",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;BYHOUR=3"),
            "w.rrule: BYHOUR",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "INTERVAL=2"),
            "w.rrule: FREQ is required",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;INTERVAL=0"),
            "w.rrule: INTERVAL",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;COUNT=0"),
            "w.rrule: COUNT",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;COUNT=10001"),
            "w.rrule: COUNT",
        ),
        (
            spec(
                "UTC",
                "2026-01-01T00:00",
                "1h",
                "FREQ=DAILY;COUNT=2;UNTIL=20260201",
            ),
            "w.rrule: COUNT and UNTIL",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;UNTIL=soon"),
            "w.rrule: UNTIL",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;FREQ=WEEKLY"),
            "w.rrule: FREQ is given twice",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=WEEKLY;BYDAY=1MO"),
            "w.rrule: BYDAY",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=MONTHLY;BYDAY=6MO"),
            "w.rrule: BYDAY",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=MONTHLY;BYDAY=XX"),
            "w.rrule: BYDAY",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;BYMONTHDAY=1"),
            "w.rrule: BYMONTHDAY",
        ),
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=WEEKLY;WKST=SU"),
            "w.rrule: WKST",
        ),
        (spec("UTC", "2026-01-01T00:00", "1h", "FREQ"), "w.rrule"),
        (
            spec(
                "UTC",
                "2026-01-01T00:00",
                "1h",
                &format!("FREQ=DAILY;{}", "X".repeat(600)),
            ),
            "w.rrule: at most",
        ),
        // A fifth Monday is never the first of its month: no occurrence, found in bounds.
        (
            spec(
                "UTC",
                "2026-01-01T00:00",
                "1h",
                "FREQ=MONTHLY;BYDAY=5MO;BYMONTHDAY=1",
            ),
            "w.rrule: the rule gives no occurrence",
        ),
        // Its only occurrence ended before DTSTART's first... a COUNT that ran out is fine,
        // but UNTIL before DTSTART gives nothing.
        (
            spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;UNTIL=20251231"),
            "w.rrule: the rule gives no occurrence",
        ),
    ];
    for (s, want) in cases {
        let e = s.check("w").unwrap_err();
        assert!(e.starts_with(want), "{want}: {e}");
    }
    let scoped = |f: &dyn Fn(&mut WindowSpec)| {
        let mut s = spec("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY");
        f(&mut s);
        s.check("w").unwrap_err()
    };
    assert!(scoped(&|s| s.name = "no spaces".into()).starts_with("w.name"));
    assert!(scoped(&|s| s.name = String::new()).starts_with("w.name"));
    assert!(scoped(&|s| s.services.clear()).starts_with("w: give services"));
    assert!(
        scoped(&|s| {
            s.services.clear();
            s.matchers = vec!["env=~\".*\"".into()];
        })
        .starts_with("w: give services")
    );
    assert!(scoped(&|s| s.matchers = vec!["job=~\"(\"".into()]).starts_with("w.matchers[0].value"));
    assert!(scoped(&|s| s.matchers = vec!["job".into()]).starts_with("w.matchers[0]:"));
    assert!(scoped(&|s| s.services = vec!["a\nb".into()]).starts_with("w.services[0]"));
    assert!(scoped(&|s| s.integrations = vec!["x".repeat(300)]).starts_with("w.integrations[0]"));
    assert!(scoped(&|s| s.services = vec!["s".into(); 101]).starts_with("w.services: at most"));
    assert!(scoped(&|s| s.comment = "x".repeat(2000)).starts_with("w.comment"));

    // Names differ, and the number is bounded.
    let e = check_all(&[
        spec("UTC", "2026-01-01T00:00", "1h", ""),
        spec("UTC", "2026-01-01T00:00", "1h", ""),
    ])
    .unwrap_err();
    assert!(e.starts_with("maintenance[1].name"), "{e}");
    let e = check_all(&vec![
        spec("UTC", "2026-01-01T00:00", "1h", "");
        MAX_WINDOWS + 1
    ])
    .unwrap_err();
    assert!(e.starts_with("maintenance: at most"), "{e}");
}

#[test]
fn hostile_rules_end_within_their_bounds() {
    // The most occurrences COUNT allows, asked about far past them: walked from the start
    // once, bounded.
    let w = window("UTC", "2000-01-01T00:00", "1m", "FREQ=DAILY;COUNT=10000");
    assert!(w.in_force(utc("2099-01-01T00:00:00Z")).is_none());
    assert_eq!(
        w.upcoming(utc("2000-01-01T00:00:00Z"), 1000).len(),
        MAX_UPCOMING
    );
    // A rule matching rarely (29 February, every 12 months from a leap day).
    let leap = window(
        "UTC",
        "2024-02-29T00:00",
        "1h",
        "FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=29",
    );
    assert_eq!(
        leap.upcoming(utc("2024-03-01T00:00:00Z"), 1),
        [occ("2028-02-29T00:00:00Z", "2028-02-29T01:00:00Z")]
    );
    // Questions at the ends of time answer instead of overflowing.
    let daily = window("UTC", "2026-01-01T00:00", "1h", "FREQ=DAILY;INTERVAL=1000");
    assert!(daily.in_force(Micros::from_unix_micros(i64::MAX)).is_none());
    assert!(daily.in_force(Micros::from_unix_micros(i64::MIN)).is_none());
    assert!(
        daily
            .upcoming(Micros::from_unix_micros(i64::MAX), 3)
            .is_empty()
    );
}
