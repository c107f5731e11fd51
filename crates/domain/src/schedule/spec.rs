//! The schedule as an operator writes it in configuration (YAML or JSON): plain data that
//! serde reads and writes, checked only for its syntax here; [`ScheduleSpec::validate`] turns
//! it into a [`Schedule`](super::Schedule) that can be resolved.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Problem, ScheduleError};

/// The most bytes of schedule text [`ScheduleSpec::from_yaml`] reads.
pub const MAX_SCHEDULE_BYTES: usize = 2 << 20;

/// One on-call schedule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The schedule's name: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    pub name: String,
    /// The IANA time zone of layers that name none (e.g. `Europe/Berlin`).
    pub time_zone: String,
    /// How the layers' people combine into who is on call.
    pub combine: Combine,
    /// The layers, lowest first: under `exclusive` the last layer with someone on call wins.
    pub layers: Vec<LayerSpec>,
    /// Time-bounded changes on top of the layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideSpec>,
}

/// How a schedule combines its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The highest layer (the last listed) that has someone on call decides alone, as in
    /// PagerDuty.
    Exclusive,
    /// Everyone on call in any layer is on call, as in Opsgenie.
    Additive,
}

/// One layer: a rotation of members, optionally restricted to windows of the week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The layer's name. Several consecutive layers of one name are versions of one roster:
    /// each newer version starts at its `effective_from`, where the older one ends.
    pub name: String,
    /// The users who take turns, in order; `null` is an empty slot (nobody on that turn).
    pub members: Vec<Option<String>>,
    /// When turns hand off and how long they last.
    pub rotation: RotationSpec,
    /// The windows of the week the layer is on call in; none means always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<RestrictionSpec>,
    /// Local time in the layer's zone from which this layer counts; before it, and before
    /// the rotation's first hand-off, the layer has nobody on call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<DateTime>,
}

/// A layer's rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSpec {
    /// The length of one turn: `12h`, `1d`, `2w`.
    pub every: TurnLength,
    /// The local wall-clock time turns hand off at (`HH:MM`).
    pub hand_off: ClockTime,
    /// The layer's IANA time zone (hand-offs, restrictions, `effective_from`); the
    /// schedule's when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The day of the first hand-off, which starts the first member's turn.
    pub start: Date,
}

/// A window of the week a layer is on call in, in the layer's zone.
///
/// Either a daily window (`from: "22:00", to: "06:00"`, optionally on some `days`: the days
/// the window starts on; a `to` at or before `from` ends the next day) or a weekly window
/// (`from: "fri 18:00", to: "mon 09:00"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionSpec {
    /// For a daily window, the days it starts on; every day when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Weekday>>,
    /// Where the window starts: `HH:MM`, or `ddd HH:MM` for a weekly window.
    pub from: WindowEdge,
    /// Where the window ends: `HH:MM` (`24:00` for the end of the day), or `ddd HH:MM`.
    pub to: WindowEdge,
}

/// A time-bounded change: `replace` a user `with` another, or `add` a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    /// The instant the override starts (RFC 3339 with an offset).
    pub from: Timestamp,
    /// The instant it ends, exclusive.
    pub to: Timestamp,
    /// The user taken off call while the override lasts (with `with`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// The user on call in `replace`'s place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// A user on call in addition to everyone else (alone, without `replace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
}

/// A day of the week, written `mon` … `sun` (or in full, `monday` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    #[serde(alias = "monday")]
    Mon,
    #[serde(alias = "tuesday")]
    Tue,
    #[serde(alias = "wednesday")]
    Wed,
    #[serde(alias = "thursday")]
    Thu,
    #[serde(alias = "friday")]
    Fri,
    #[serde(alias = "saturday")]
    Sat,
    #[serde(alias = "sunday")]
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Self; 7] = [
        Self::Mon,
        Self::Tue,
        Self::Wed,
        Self::Thu,
        Self::Fri,
        Self::Sat,
        Self::Sun,
    ];

    /// The short name, as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }

    /// Days since Monday (0-6).
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The same day as jiff names it.
    pub const fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Self::Mon => jiff::civil::Weekday::Monday,
            Self::Tue => jiff::civil::Weekday::Tuesday,
            Self::Wed => jiff::civil::Weekday::Wednesday,
            Self::Thu => jiff::civil::Weekday::Thursday,
            Self::Fri => jiff::civil::Weekday::Friday,
            Self::Sat => jiff::civil::Weekday::Saturday,
            Self::Sun => jiff::civil::Weekday::Sunday,
        }
    }

    /// The day of a jiff weekday.
    pub const fn from_jiff(day: jiff::civil::Weekday) -> Self {
        match day {
            jiff::civil::Weekday::Monday => Self::Mon,
            jiff::civil::Weekday::Tuesday => Self::Tue,
            jiff::civil::Weekday::Wednesday => Self::Wed,
            jiff::civil::Weekday::Thursday => Self::Thu,
            jiff::civil::Weekday::Friday => Self::Fri,
            jiff::civil::Weekday::Saturday => Self::Sat,
            jiff::civil::Weekday::Sunday => Self::Sun,
        }
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Weekday {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "mon" | "monday" => Self::Mon,
            "tue" | "tuesday" => Self::Tue,
            "wed" | "wednesday" => Self::Wed,
            "thu" | "thursday" => Self::Thu,
            "fri" | "friday" => Self::Fri,
            "sat" | "saturday" => Self::Sat,
            "sun" | "sunday" => Self::Sun,
            _ => {
                return Err(format!(
                    "unknown weekday {s:?}: expected mon, tue, wed, thu, fri, sat or sun"
                ));
            }
        })
    }
}

/// The unit of a turn length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnUnit {
    /// Absolute hours: a 12-hour turn is 12 hours long whatever the clocks do.
    Hours,
    /// Calendar days: a turn hands off at the same local time; 23 or 25 hours across a
    /// daylight-saving change.
    Days,
    /// Calendar weeks of 7 calendar days.
    Weeks,
}

impl TurnUnit {
    const fn suffix(self) -> char {
        match self {
            Self::Hours => 'h',
            Self::Days => 'd',
            Self::Weeks => 'w',
        }
    }
}

/// The length of one turn of a rotation: `count` hours, days or weeks, written `12h`, `1d`,
/// `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TurnLength {
    pub count: u32,
    pub unit: TurnUnit,
}

impl TurnLength {
    /// A turn of `count` units.
    pub const fn new(count: u32, unit: TurnUnit) -> Self {
        Self { count, unit }
    }
}

impl fmt::Display for TurnLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

impl FromStr for TurnLength {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a turn length: expected a count and h, d or w (12h, 1d, 2w)");
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let unit = match unit {
            "h" => TurnUnit::Hours,
            "d" => TurnUnit::Days,
            "w" => TurnUnit::Weeks,
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let count = digits.parse().map_err(|_| bad())?;
        Ok(Self { count, unit })
    }
}

/// A local wall-clock time of day, `HH:MM`, from `00:00` to `24:00` (the end of the day,
/// allowed only where a window ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClockTime {
    minutes: u16,
}

impl ClockTime {
    /// The end of the day, `24:00`.
    pub const END_OF_DAY: Self = Self { minutes: 24 * 60 };

    /// `hour:minute`; `None` unless it is 00:00-23:59 or exactly 24:00.
    pub const fn new(hour: u8, minute: u8) -> Option<Self> {
        if minute >= 60 || hour > 24 || (hour == 24 && minute != 0) {
            return None;
        }
        Some(Self {
            minutes: hour as u16 * 60 + minute as u16,
        })
    }

    /// Minutes since midnight (0-1440).
    pub const fn minutes(self) -> u16 {
        self.minutes
    }

    /// True for `24:00`.
    pub const fn is_end_of_day(self) -> bool {
        self.minutes == Self::END_OF_DAY.minutes
    }

    /// The time on `date`: `24:00` is midnight starting the next day.
    pub(crate) fn on(self, date: Date) -> Option<DateTime> {
        if self.is_end_of_day() {
            return Some(
                date.tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight()),
            );
        }
        let time =
            jiff::civil::Time::new((self.minutes / 60) as i8, (self.minutes % 60) as i8, 0, 0)
                .ok()?;
        Some(date.to_datetime(time))
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl FromStr for ClockTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day: expected HH:MM, 00:00 to 24:00");
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
            return Err(bad());
        }
        let hour = (b[0] - b'0') * 10 + (b[1] - b'0');
        let minute = (b[3] - b'0') * 10 + (b[4] - b'0');
        Self::new(hour, minute).ok_or_else(bad)
    }
}

/// One end of a restriction window: a time of day, with a weekday for weekly windows
/// (`09:00`, `fri 18:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowEdge {
    pub day: Option<Weekday>,
    pub time: ClockTime,
}

impl fmt::Display for WindowEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.day {
            Some(day) => write!(f, "{day} {}", self.time),
            None => write!(f, "{}", self.time),
        }
    }
}

impl FromStr for WindowEdge {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(' ') {
            Some((day, time)) => Ok(Self {
                day: Some(day.parse()?),
                time: time.trim_start().parse()?,
            }),
            None => Ok(Self {
                day: None,
                time: s.parse()?,
            }),
        }
    }
}

/// Serde as text, through `Display` and `FromStr`, for the small value types above.
macro_rules! serde_as_text {
    ($($ty:ty => $expecting:literal),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    )*};
}

serde_as_text! {
    TurnLength => "a turn length such as 12h, 1d or 2w",
    ClockTime => "a time of day as HH:MM",
    WindowEdge => "a time of day (HH:MM) or a weekday and time (fri 18:00)",
}

impl ScheduleSpec {
    /// Reads a schedule from YAML (or JSON, which YAML includes). Only the syntax is checked
    /// here; [`ScheduleSpec::validate`] checks the rest.
    pub fn from_yaml(text: &str) -> Result<Self, ScheduleError> {
        if text.len() > MAX_SCHEDULE_BYTES {
            return Err(ScheduleError::new(
                "document",
                Problem::TooLarge {
                    what: "bytes",
                    max: MAX_SCHEDULE_BYTES,
                    got: text.len(),
                },
            ));
        }
        // serde_yaml's message starts with the path of the field it failed on.
        serde_yaml::from_str(text)
            .map_err(|e| ScheduleError::new("document", Problem::Syntax(e.to_string())))
    }

    /// The schedule as YAML, as an operator would write it.
    pub fn to_yaml(&self) -> String {
        // Every field serializes to a string, a list or a map, which cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_parse_and_print_back() {
        for s in ["12h", "1d", "2w", "0h", "400w"] {
            assert_eq!(
                s.parse::<TurnLength>().map(|t| t.to_string()),
                Ok(s.to_owned())
            );
        }
        for s in [
            "",
            "h",
            "1",
            "1x",
            "-1d",
            "1.5d",
            "+1d",
            "1 d",
            "99999999999h",
        ] {
            assert!(s.parse::<TurnLength>().is_err(), "{s:?}");
        }
        for s in ["00:00", "09:30", "23:59", "24:00"] {
            assert_eq!(
                s.parse::<ClockTime>().map(|t| t.to_string()),
                Ok(s.to_owned())
            );
        }
        for s in [
            "9:00",
            "24:01",
            "25:00",
            "12:60",
            "12:00:00",
            "",
            "ab:cd",
            "１２:00",
        ] {
            assert!(s.parse::<ClockTime>().is_err(), "{s:?}");
        }
        assert_eq!(
            "fri 18:00".parse::<WindowEdge>().map(|e| e.to_string()),
            Ok("fri 18:00".into())
        );
        assert_eq!(
            "friday 18:00".parse::<WindowEdge>().map(|e| e.day),
            Ok(Some(Weekday::Fri))
        );
        assert!("fr 18:00".parse::<WindowEdge>().is_err());
        assert!("fri".parse::<WindowEdge>().is_err());
    }
}
