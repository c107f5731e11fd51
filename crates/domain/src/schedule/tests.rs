//! Table tests of schedules: one layer, layers combined, empty slots, restrictions, roster
//! versions, overrides, clock changes, and every kind of bad input naming its field.

use jiff::Timestamp;
use jiff::civil::DateTime;

use super::*;

/// A valid schedule from YAML where every user is known.
fn schedule(yaml: &str) -> Schedule {
    let spec = ScheduleSpec::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    spec.validate(&|_| true)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The instant of a local time in a zone (compatible: no test here asks for a gap).
fn local(zone: &str, at: &str) -> Timestamp {
    let dt: DateTime = at.parse().expect("a local date-time");
    time_zone(zone)
        .expect("a zone")
        .to_timestamp(dt)
        .expect("in range")
}

fn berlin(at: &str) -> Timestamp {
    local("Europe/Berlin", at)
}

/// Asserts who is on call at each local time (in Europe/Berlin).
fn assert_table(s: &Schedule, table: &[(&str, &[&str])]) {
    for (at, expected) in table {
        assert_eq!(on_call(s, berlin(at)), *expected, "at {at} (Europe/Berlin)");
    }
}

const WEEKLY: &str = r#"
name: payments-primary
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: weekdays
    members: [alice, bob, carol]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
"#;

#[test]
fn one_layer_rotates_weekly_at_the_hand_off_time() {
    let s = schedule(WEEKLY);
    assert_table(
        &s,
        &[
            ("2026-11-02T08:59:59", &[]),
            ("2026-11-02T09:00", &["alice"]),
            ("2026-11-09T08:59:59", &["alice"]),
            ("2026-11-09T09:00", &["bob"]),
            ("2026-11-16T09:00", &["carol"]),
            ("2026-11-23T09:00", &["alice"]),
            ("2027-11-01T09:00", &["bob"]), // 52 weeks: 52 % 3 == 1
        ],
    );
}

#[test]
fn day_turns_count_calendar_days_across_clock_changes() {
    // Europe/Berlin springs forward on 2026-03-29 and falls back on 2026-10-25.
    let s = schedule(
        r#"
name: daily
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: l
    members: [alice, bob, carol]
    rotation: { every: 1d, hand_off: "09:00", start: "2026-03-27" }
"#,
    );
    let shifts = shifts(&s, berlin("2026-03-27T09:00"), berlin("2026-03-30T09:00")).unwrap();
    let hours: Vec<(String, i64)> = shifts
        .iter()
        .map(|s| {
            let h = s.end.duration_since(s.start).as_hours();
            (s.users.join(","), h)
        })
        .collect();
    assert_eq!(
        hours,
        [
            ("alice".into(), 24),
            ("bob".into(), 23),
            ("carol".into(), 24)
        ]
    );
    let autumn = shifts_of(
        &s,
        "alice",
        berlin("2026-10-24T00:00"),
        berlin("2026-10-27T00:00"),
    )
    .unwrap();
    // Turn 210 (from 10-23, 210 % 3 == 0) is alice's, 211 bob's, 212 carol's, 213 alice's.
    assert_eq!(
        autumn,
        [
            Interval {
                start: berlin("2026-10-24T00:00"),
                end: berlin("2026-10-24T09:00")
            },
            Interval {
                start: berlin("2026-10-26T09:00"),
                end: berlin("2026-10-27T00:00")
            }
        ]
    );
    // Bob's turn holds the night the clocks fall back (03:00 CEST becomes 02:00 CET).
    let bob = shifts_of(
        &s,
        "bob",
        berlin("2026-10-24T00:00"),
        berlin("2026-10-27T00:00"),
    )
    .unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(
        bob[0].end.duration_since(bob[0].start).as_hours(),
        25,
        "{bob:?}"
    );
}

#[test]
fn hour_turns_count_absolute_time_across_clock_changes() {
    let s = schedule(
        r#"
name: halves
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: l
    members: [alice, bob]
    rotation: { every: 12h, hand_off: "20:00", start: "2026-03-28" }
"#,
    );
    // 20:00 CET is 19:00Z; twelve hours later is 07:00Z, which is 09:00 CEST.
    assert_table(
        &s,
        &[
            ("2026-03-28T20:00", &["alice"]),
            ("2026-03-29T08:59", &["alice"]),
            ("2026-03-29T09:00", &["bob"]),
            ("2026-03-29T20:59", &["bob"]),
            ("2026-03-29T21:00", &["alice"]),
        ],
    );
}

const TWO_LAYERS: &str = r#"
name: two
time_zone: Europe/Berlin
combine: COMBINE
layers:
  - name: base
    members: [alice, bob]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
  - name: nights
    members: [carol]
    rotation: { every: 1d, hand_off: "00:00", start: "2026-11-01" }
    restrictions: [ { from: "22:00", to: "06:00" } ]
"#;

#[test]
fn exclusive_takes_the_highest_layer_with_someone_additive_takes_everyone() {
    let exclusive = schedule(&TWO_LAYERS.replace("COMBINE", "exclusive"));
    assert_table(
        &exclusive,
        &[
            ("2026-11-03T12:00", &["alice"]),
            ("2026-11-03T22:00", &["carol"]),
            ("2026-11-04T05:59", &["carol"]),
            ("2026-11-04T06:00", &["alice"]),
            ("2026-11-10T23:00", &["carol"]),
        ],
    );
    let additive = schedule(&TWO_LAYERS.replace("COMBINE", "additive"));
    assert_table(
        &additive,
        &[
            ("2026-11-03T12:00", &["alice"]),
            ("2026-11-03T22:00", &["alice", "carol"]),
            ("2026-11-04T06:00", &["alice"]),
            ("2026-11-10T23:00", &["bob", "carol"]),
        ],
    );
}

#[test]
fn empty_slots_leave_a_layer_empty_and_exclusive_falls_through() {
    let yaml = r#"
name: slots
time_zone: Europe/Berlin
combine: COMBINE
layers:
  - name: base
    members: [bob]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
  - name: top
    members: [alice, null]
    rotation: { every: 1d, hand_off: "09:00", start: "2026-11-02" }
"#;
    let exclusive = schedule(&yaml.replace("COMBINE", "exclusive"));
    assert_table(
        &exclusive,
        &[
            ("2026-11-02T10:00", &["alice"]),
            ("2026-11-03T10:00", &["bob"]),
        ],
    );
    let additive = schedule(&yaml.replace("COMBINE", "additive"));
    assert_table(
        &additive,
        &[
            ("2026-11-02T10:00", &["alice", "bob"]),
            ("2026-11-03T10:00", &["bob"]),
        ],
    );

    let alone = schedule(
        r#"
name: alone
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: top
    members: [alice, null]
    rotation: { every: 1d, hand_off: "09:00", start: "2026-11-02" }
"#,
    );
    let holes = gaps(
        &alone,
        berlin("2026-11-01T00:00"),
        berlin("2026-11-05T00:00"),
    )
    .unwrap();
    let expected = [
        ("2026-11-01T00:00", "2026-11-02T09:00"), // before the start
        ("2026-11-03T09:00", "2026-11-04T09:00"),
    ];
    let expected: Vec<Interval> = expected
        .iter()
        .map(|(a, b)| Interval {
            start: berlin(a),
            end: berlin(b),
        })
        .collect();
    assert_eq!(holes, expected);
}

#[test]
fn restrictions_across_midnight_on_weekdays_and_weekly_windows() {
    let s = schedule(
        r#"
name: windows
time_zone: Europe/Berlin
combine: additive
layers:
  - name: friday-nights
    members: [alice]
    rotation: { every: 1w, hand_off: "00:00", start: "2026-11-02" }
    restrictions: [ { days: [fri], from: "22:00", to: "06:00" } ]
  - name: weekends
    members: [bob]
    rotation: { every: 1w, hand_off: "00:00", start: "2026-11-02" }
    restrictions: [ { from: "fri 18:00", to: "mon 09:00" } ]
  - name: office
    members: [carol]
    rotation: { every: 1w, hand_off: "00:00", start: "2026-11-02" }
    restrictions:
      - { days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00" }
      - { days: [sat], from: "00:00", to: "24:00" }
"#,
    );
    // 2026-11-06 is a Friday.
    assert_table(
        &s,
        &[
            ("2026-11-06T08:59", &[]),
            ("2026-11-06T09:00", &["carol"]),
            ("2026-11-06T17:59", &["carol"]),
            ("2026-11-06T18:00", &["bob"]),
            ("2026-11-06T22:00", &["alice", "bob"]),
            ("2026-11-07T00:00", &["alice", "bob", "carol"]),
            ("2026-11-07T05:59", &["alice", "bob", "carol"]),
            ("2026-11-07T06:00", &["bob", "carol"]),
            ("2026-11-07T22:00", &["bob", "carol"]),
            ("2026-11-08T00:00", &["bob"]),
            ("2026-11-09T08:59", &["bob"]),
            ("2026-11-09T09:00", &["carol"]),
            ("2026-11-11T20:00", &[]),
        ],
    );
}

#[test]
fn a_newer_roster_takes_over_at_its_effective_from() {
    let s = schedule(
        r#"
name: roster
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: primary
    members: [alice, bob]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
  - name: primary
    members: [carol, dave, erin]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
    effective_from: "2026-12-07T09:00"
  - name: primary
    members: [frank]
    rotation: { every: 1d, hand_off: "12:00", start: "2027-01-04" }
    effective_from: "2027-01-01T00:00"
"#,
    );
    assert_table(
        &s,
        &[
            ("2026-11-30T09:00", &["alice"]), // turn 4 of the first roster
            ("2026-12-07T08:59", &["alice"]),
            // Turn 5 of the second roster, counted from its own start: 5 % 3 == 2.
            ("2026-12-07T09:00", &["erin"]),
            ("2026-12-14T09:00", &["carol"]),
            ("2026-12-31T23:59", &["erin"]),
            // The third version counts from 2027-01-01 but its rotation starts later.
            ("2027-01-01T00:00", &[]),
            ("2027-01-04T12:00", &["frank"]),
        ],
    );
}

const OVERRIDES: &str = r#"
name: holidays
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: office
    members: [alice]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
    restrictions: [ { days: [mon, tue, wed, thu, fri], from: "09:00", to: "18:00" } ]
overrides:
  - { from: "2026-12-24T09:00:00+01:00", to: "2026-12-27T09:00:00+01:00", replace: alice, with: dave }
  - { from: "2026-12-26T12:00:00+01:00", to: "2026-12-26T14:00:00+01:00", add: erin }
  - { from: "2026-12-28T10:00:00+01:00", to: "2026-12-28T11:00:00+01:00", add: erin }
  - { from: "2026-12-28T20:00:00+01:00", to: "2026-12-28T21:00:00+01:00", replace: alice, with: bob }
"#;

#[test]
fn overrides_replace_and_add_even_when_the_layer_is_off() {
    let s = schedule(OVERRIDES);
    assert_table(
        &s,
        &[
            ("2026-12-23T12:00", &["alice"]),
            ("2026-12-24T09:00", &["dave"]), // Thursday, office hours: dave for alice
            ("2026-12-24T20:00", &[]),       // alice is off, so nobody is replaced
            ("2026-12-26T13:00", &["erin"]), // Saturday: the layer is off, the add counts
            ("2026-12-28T10:30", &["alice", "erin"]),
            ("2026-12-28T20:30", &[]), // replacing someone not on call does nothing
        ],
    );
    let week = shifts(&s, berlin("2026-12-24T00:00"), berlin("2026-12-25T00:00")).unwrap();
    let shape: Vec<(Timestamp, Timestamp, Vec<String>)> = week
        .into_iter()
        .map(|s| (s.start, s.end, s.users))
        .collect();
    assert_eq!(
        shape,
        [
            (
                berlin("2026-12-24T00:00"),
                berlin("2026-12-24T09:00"),
                vec![]
            ),
            (
                berlin("2026-12-24T09:00"),
                berlin("2026-12-24T18:00"),
                vec!["dave".to_owned()]
            ),
            (
                berlin("2026-12-24T18:00"),
                berlin("2026-12-25T00:00"),
                vec![]
            ),
        ]
    );
}

#[test]
fn a_hand_off_in_a_gap_on_a_later_day_moves_forward_by_the_gap() {
    // 02:30 exists on 2026-03-28 but not on 2026-03-29 in Europe/Berlin: that day the turn
    // hands off at 03:30 CEST (jiff's compatible, as RFC 5545), and the next day at 02:30.
    let s = schedule(
        r#"
name: early
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: l
    members: [alice, bob, carol]
    rotation: { every: 1d, hand_off: "02:30", start: "2026-03-28" }
"#,
    );
    let all = shifts(&s, berlin("2026-03-28T00:00"), berlin("2026-03-31T00:00")).unwrap();
    let starts: Vec<String> = all
        .iter()
        .map(|s| {
            let local = time_zone("Europe/Berlin").unwrap().to_datetime(s.start);
            format!("{local} {}", s.users.join(","))
        })
        .collect();
    assert_eq!(
        starts,
        [
            "2026-03-28T00:00:00 ",
            "2026-03-28T02:30:00 alice",
            "2026-03-29T03:30:00 bob",
            "2026-03-30T02:30:00 carol",
        ]
    );
}

#[test]
fn a_hand_off_in_a_fold_is_the_earlier_instant() {
    // 02:30 happens twice on 2026-10-25 in Europe/Berlin: first at +02 (00:30Z).
    let s = schedule(
        r#"
name: fold
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: l
    members: [alice]
    rotation: { every: 1d, hand_off: "02:30", start: "2026-10-25" }
"#,
    );
    let first: Timestamp = "2026-10-25T00:30:00Z".parse().unwrap();
    assert!(
        on_call(
            &s,
            first
                .checked_sub(jiff::SignedDuration::from_nanos(1))
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(on_call(&s, first), ["alice"]);
}

#[test]
fn a_nonexistent_local_time_is_refused_naming_the_field() {
    let yaml = r#"
name: gap
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: l
    members: [alice]
    rotation: { every: 1d, hand_off: "02:30", start: "2026-03-29" }
  - name: m
    members: [bob]
    rotation: { every: 1d, hand_off: "09:00", start: "2026-03-01", time_zone: America/New_York }
    effective_from: "2026-03-08T02:15"
"#;
    let errors = ScheduleSpec::from_yaml(yaml)
        .unwrap()
        .validate(&|_| true)
        .unwrap_err();
    let fields: Vec<&str> = errors.errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["layers[0].rotation.hand_off", "layers[1].effective_from"]
    );
    assert_eq!(
        errors.errors()[0].to_string(),
        "layers[0].rotation.hand_off: 2026-03-29T02:30:00 does not exist in Europe/Berlin: the \
         clocks jump from 2026-03-29T02:00:00 to 2026-03-29T03:00:00 there; choose a time \
         outside the gap"
    );
    assert!(matches!(
        &errors.errors()[1].problem,
        Problem::NonexistentLocalTime { zone, gap_from, .. }
            if zone == "America/New_York" && gap_from.to_string() == "2026-03-08T02:00:00"
    ));
}

/// A schedule that is valid, for the bad-input table to break one field at a time.
const GOOD: &str = r#"
name: good
time_zone: Europe/Berlin
combine: exclusive
layers:
  - name: base
    members: [alice, bob]
    rotation: { every: 1w, hand_off: "09:00", start: "2026-11-02" }
    restrictions: [ { days: [mon], from: "09:00", to: "18:00" } ]
overrides:
  - { from: "2026-12-24T09:00:00+01:00", to: "2026-12-27T09:00:00+01:00", replace: alice, with: dave }
"#;

#[test]
fn bad_input_is_refused_naming_the_field() {
    assert!(
        ScheduleSpec::from_yaml(GOOD)
            .unwrap()
            .validate(&|_| true)
            .is_ok()
    );
    let known = |u: &str| ["alice", "bob", "carol", "dave", "erin"].contains(&u);
    let cases: &[(&str, &str, &str)] = &[
        ("name: good", "name: Good!", "name"),
        ("name: good", "name: ''", "name"),
        (
            "time_zone: Europe/Berlin",
            "time_zone: Mars/Olympus",
            "time_zone",
        ),
        (
            "members: [alice, bob]",
            "members: [alice, zed]",
            "layers[0].members[1]",
        ),
        (
            "members: [alice, bob]",
            "members: [alice, 'Bob Smith']",
            "layers[0].members[1]",
        ),
        ("members: [alice, bob]", "members: []", "layers[0].members"),
        ("every: 1w", "every: 0h", "layers[0].rotation.every"),
        ("every: 1w", "every: 53w", "layers[0].rotation.every"),
        ("every: 1w", "every: 367d", "layers[0].rotation.every"),
        ("every: 1w", "every: 8785h", "layers[0].rotation.every"),
        (
            "hand_off: \"09:00\"",
            "hand_off: \"24:00\"",
            "layers[0].rotation.hand_off",
        ),
        (
            "start: \"2026-11-02\" }",
            "start: \"2026-11-02\", time_zone: Europe/Nowhere }",
            "layers[0].rotation.time_zone",
        ),
        ("days: [mon]", "days: []", "layers[0].restrictions[0].days"),
        (
            "days: [mon]",
            "days: [mon, mon]",
            "layers[0].restrictions[0].days",
        ),
        (
            "to: \"18:00\"",
            "to: \"09:00\"",
            "layers[0].restrictions[0]",
        ),
        (
            "from: \"09:00\", to",
            "from: \"24:00\", to",
            "layers[0].restrictions[0].from",
        ),
        (
            "to: \"18:00\"",
            "to: \"mon 18:00\"",
            "layers[0].restrictions[0].from",
        ),
        (
            "from: \"09:00\", to",
            "from: \"mon 09:00\", to",
            "layers[0].restrictions[0].to",
        ),
        (
            "days: [mon], from: \"09:00\", to: \"18:00\"",
            "days: [mon], from: \"mon 09:00\", to: \"fri 18:00\"",
            "layers[0].restrictions[0].days",
        ),
        (
            "days: [mon], from: \"09:00\", to: \"18:00\"",
            "from: \"fri 09:00\", to: \"fri 09:00\"",
            "layers[0].restrictions[0]",
        ),
        (
            "to: \"2026-12-27T09:00:00+01:00\"",
            "to: \"2026-12-24T09:00:00+01:00\"",
            "overrides[0].to",
        ),
        ("with: dave", "with: alice", "overrides[0].with"),
        ("with: dave", "with: zed", "overrides[0].with"),
        (
            "replace: alice, with: dave",
            "replace: alice",
            "overrides[0]",
        ),
        (
            "replace: alice, with: dave",
            "add: erin, replace: alice",
            "overrides[0]",
        ),
        (
            "replace: alice, with: dave",
            "replace: alice, with: dave, add: erin",
            "overrides[0]",
        ),
    ];
    for (from, to, field) in cases {
        assert!(GOOD.contains(from), "{from}");
        let yaml = GOOD.replacen(from, to, 1);
        let errors = ScheduleSpec::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            .validate(&known)
            .expect_err(&yaml);
        assert!(errors.names(field), "want {field}, got {errors}\n{yaml}");
        assert_eq!(errors.errors().len(), 1, "{errors}");
    }
}

#[test]
fn overlapping_replacements_of_one_user_are_refused() {
    let yaml = format!(
        "{GOOD}{}",
        r#"  - { from: "2026-12-26T09:00:00+01:00", to: "2026-12-28T09:00:00+01:00", replace: alice, with: erin }
  - { from: "2026-12-27T09:00:00+01:00", to: "2026-12-29T09:00:00+01:00", replace: bob, with: erin }
  - { from: "2026-12-27T09:00:00+01:00", to: "2026-12-29T09:00:00+01:00", add: erin }
  - { from: "2026-12-28T09:00:00+01:00", to: "2026-12-29T09:00:00+01:00", replace: alice, with: carol }
  - { from: "2026-12-01T09:00:00+01:00", to: "2026-12-31T09:00:00+01:00", replace: carol, with: dave }
  - { from: "2026-12-02T09:00:00+01:00", to: "2026-12-03T09:00:00+01:00", replace: carol, with: bob }
"#
    );
    let errors = ScheduleSpec::from_yaml(&yaml)
        .unwrap()
        .validate(&|_| true)
        .unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got,
        [
            "overrides[1].from: overlaps overrides[0], which also replaces \"alice\" from \
             2026-12-24T08:00:00Z to 2026-12-27T08:00:00Z",
            "overrides[6].from: overlaps overrides[5], which also replaces \"carol\" from \
             2026-12-01T08:00:00Z to 2026-12-31T08:00:00Z",
        ],
        "touching overrides (1 then 4) and other users' overlaps are fine"
    );
}

#[test]
fn layers_sizes_and_versions_are_checked() {
    let layer = "  - name: base\n    members: [alice]\n    rotation: { every: 1w, hand_off: \"09:00\", start: \"2026-11-02\" }\n";
    let head = "name: big\ntime_zone: UTC\ncombine: additive\n";
    let check = |yaml: String, field: &str| {
        let errors = ScheduleSpec::from_yaml(&yaml)
            .unwrap()
            .validate(&|_| true)
            .expect_err(&yaml);
        assert!(errors.names(field), "want {field}, got {errors}");
    };
    check(format!("{head}layers: []\n"), "layers");
    let many: String = (0..=MAX_LAYERS)
        .map(|i| layer.replace("base", &format!("l{i}")))
        .collect();
    check(format!("{head}layers:\n{many}"), "layers");
    let members = vec!["alice"; MAX_MEMBERS + 1].join(", ");
    check(
        format!(
            "{head}layers:\n{}",
            layer.replace("[alice]", &format!("[{members}]"))
        ),
        "layers[0].members",
    );
    let one = "  - { from: \"2026-12-24T09:00:00Z\", to: \"2026-12-24T10:00:00Z\", add: bob }\n";
    check(
        format!(
            "{head}layers:\n{layer}overrides:\n{}",
            one.repeat(MAX_OVERRIDES + 1)
        ),
        "overrides",
    );
    // Versions: listed apart, missing effective_from, or not newer.
    let other = layer.replace("base", "other");
    check(
        format!("{head}layers:\n{layer}{other}{layer}"),
        "layers[2].name",
    );
    check(
        format!("{head}layers:\n{layer}{layer}"),
        "layers[1].effective_from",
    );
    let v = |at: &str| format!("{layer}    effective_from: \"{at}\"\n");
    check(
        format!(
            "{head}layers:\n{}{}",
            v("2026-12-01T00:00"),
            v("2026-12-01T00:00")
        ),
        "layers[1].effective_from",
    );
    let ok = format!(
        "{head}layers:\n{}{}",
        v("2026-12-01T00:00"),
        v("2026-12-02T00:00")
    );
    assert!(
        ScheduleSpec::from_yaml(&ok)
            .unwrap()
            .validate(&|_| true)
            .is_ok()
    );
}

#[test]
fn syntax_errors_name_the_path() {
    let cases = [
        (
            "combine: exclusive",
            "combine: both",
            "combine: unknown variant `both`",
        ),
        (
            "days: [mon]",
            "days: [mo]",
            "layers[0].restrictions[0].days[0]: unknown variant `mo`",
        ),
        (
            "every: 1w",
            "every: 1 week",
            "layers[0].rotation.every: \"1 week\" is not a turn",
        ),
        (
            "hand_off: \"09:00\"",
            "hand_off: 9am",
            "layers[0].rotation.hand_off: \"9am\" is not",
        ),
        (
            "name: base",
            "name: base\n    colour: red",
            "layers[0]: unknown field `colour`",
        ),
        (
            "from: \"2026-12-24T09:00:00+01:00\"",
            "from: \"2026-12-24T09:00:00\"",
            "overrides[0].from: ",
        ),
    ];
    for (from, to, want) in cases {
        assert!(GOOD.contains(from), "{from}");
        let err = ScheduleSpec::from_yaml(&GOOD.replacen(from, to, 1)).unwrap_err();
        assert_eq!(err.field, "document");
        assert!(
            err.to_string().starts_with(&format!("document: {want}")),
            "{err}"
        );
    }
    let huge = "#".repeat(MAX_SCHEDULE_BYTES + 1);
    assert!(matches!(
        ScheduleSpec::from_yaml(&huge).unwrap_err().problem,
        Problem::TooLarge { .. }
    ));
}

#[test]
fn ranges_are_bounded() {
    let s = schedule(WEEKLY);
    let from = berlin("2026-11-02T00:00");
    let err = shifts(&s, from, from).unwrap_err();
    assert_eq!(err.field, "to");
    let too_far = from
        .checked_add(jiff::SignedDuration::from_hours(24 * MAX_RANGE_DAYS + 1))
        .unwrap();
    let err = gaps(&s, from, too_far).unwrap_err();
    assert!(
        matches!(err.problem, Problem::RangeTooLong { max_days: 400, .. }),
        "{err}"
    );
    let far_enough = from
        .checked_add(jiff::SignedDuration::from_hours(24 * MAX_RANGE_DAYS))
        .unwrap();
    assert!(shifts(&s, from, far_enough).is_ok());
}

#[test]
fn a_schedule_reads_back_what_it_writes() {
    for yaml in [
        GOOD,
        WEEKLY,
        OVERRIDES,
        &TWO_LAYERS.replace("COMBINE", "additive"),
    ] {
        let spec = ScheduleSpec::from_yaml(yaml).unwrap();
        assert_eq!(ScheduleSpec::from_yaml(&spec.to_yaml()).unwrap(), spec);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ScheduleSpec>(&json).unwrap(), spec);
    }
}

/// The guide's schedules, each in a ```yaml block holding `layers:`, are valid.
fn guide() -> &'static str {
    include_str!("../../../../docs/schedules.md")
}

fn guide_schedules() -> Vec<Schedule> {
    guide()
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|yaml| yaml.contains("layers:"))
        .map(schedule)
        .collect()
}

#[test]
fn the_guides_examples_are_valid() {
    assert_eq!(guide_schedules().len(), 6);
}

#[test]
fn the_guides_worked_example_says_what_the_guide_says() {
    let s = &guide_schedules()[0];
    assert_eq!(s.name(), "payments-primary");
    assert_table(
        s,
        &[
            ("2026-11-02T10:00", &["alice"]),
            ("2026-11-02T18:00", &["dave"]),
            ("2026-11-03T18:00", &["erin"]),
            ("2026-11-16T10:00", &[]),
            ("2026-12-24T10:00", &["dave"]),
            ("2026-12-24T20:00", &["dave"]),
            ("2026-12-31T18:00", &["erin"]), // day 59 is erin's anyway
            ("2026-12-31T19:00", &["erin"]),
        ],
    );
    // The week of 2026-11-16 has an empty slot: office hours are gaps.
    let holes = gaps(s, berlin("2026-11-16T00:00"), berlin("2026-11-21T00:00")).unwrap();
    let office: Vec<(Timestamp, Timestamp)> = ["16", "17", "18", "19", "20"]
        .iter()
        .map(|d| {
            (
                berlin(&format!("2026-11-{d}T09:00")),
                berlin(&format!("2026-11-{d}T18:00")),
            )
        })
        .collect();
    assert_eq!(
        holes.iter().map(|i| (i.start, i.end)).collect::<Vec<_>>(),
        office
    );
    // erin is added to whoever the layers say: on 2027-01-01, a Friday of week 8, alice.
    assert_eq!(on_call(s, berlin("2027-01-01T10:00")), ["alice", "erin"]);
    assert_eq!(on_call(s, berlin("2027-01-01T12:00")), ["alice"]);

    let sun = &guide_schedules()[4];
    assert_eq!(sun.name(), "platform-follow-the-sun");
    let utc = |at: &str| local("UTC", at);
    for (at, who) in [
        ("2026-11-03T15:00", "emma"), // Berlin and New York overlap: New York wins
        ("2026-11-03T10:00", "clara"),
        ("2026-11-03T23:00", "ava"), // 10:00 on Wednesday in Sydney
        ("2026-11-07T12:00", "oscar"),
    ] {
        assert_eq!(on_call(sun, utc(at)), [who], "at {at}Z");
    }
}

#[test]
fn the_ends_of_time_answer_without_panicking() {
    let s = schedule(&TWO_LAYERS.replace("COMBINE", "additive"));
    assert!(on_call(&s, Timestamp::MIN).is_empty());
    assert_eq!(on_call(&s, Timestamp::MAX).len(), 1);
    let week = jiff::SignedDuration::from_hours(7 * 24);
    for (from, to) in [
        (Timestamp::MIN, Timestamp::MIN + week),
        (Timestamp::MAX - week, Timestamp::MAX),
    ] {
        let all = shifts(&s, from, to).unwrap();
        assert_eq!((all[0].start, all[all.len() - 1].end), (from, to));
        for shift in &all {
            assert_eq!(on_call(&s, shift.start), shift.users);
        }
    }
}

#[test]
fn a_range_with_too_many_changes_is_refused() {
    // Twenty hourly layers of their own people handing off at different minutes, added up:
    // 20 changes an hour, 192,000 in 400 days.
    let layers: String = (0..20)
        .map(|l| {
            format!(
                "  - name: l{l}\n    members: [a{l}, b{l}]\n    rotation: {{ every: 1h, hand_off: \"00:{:02}\", start: \"2026-01-01\" }}\n",
                l * 3
            )
        })
        .collect();
    let s = schedule(&format!(
        "name: busy\ntime_zone: UTC\ncombine: additive\nlayers:\n{layers}"
    ));
    let from = local("UTC", "2026-01-01T00:00");
    let to = from + jiff::SignedDuration::from_hours(24 * MAX_RANGE_DAYS);
    match shifts(&s, from, to) {
        Err(e) => {
            assert_eq!(e.field, "to");
            assert!(
                matches!(
                    e.problem,
                    Problem::TooManyShifts {
                        max: MAX_SHIFTS,
                        ..
                    }
                ),
                "{e}"
            );
        }
        Ok(all) => panic!("{} shifts", all.len()),
    }
    let month = from + jiff::SignedDuration::from_hours(24 * 30);
    assert_eq!(shifts(&s, from, month).map(|a| a.len()), Ok(30 * 24 * 20));
}
