//! On-call schedules as data, and who is on call as one pure function.
//!
//! A schedule ([`ScheduleSpec`]) is written in YAML or JSON: layers of members taking turns
//! in a rotation, restricted to windows of the week, combined `exclusive` or `additive`, with
//! overrides on top. [`ScheduleSpec::validate`] checks it against the rules and the directory
//! and gives a [`Schedule`]; [`on_call`] says who is on call at an instant, and [`shifts`],
//! [`gaps`] and [`shifts_of`] render a range from the same rules. Nothing here reads a clock
//! or a file: the time zones come from the database built into the binary.
//!
//! The semantics, with examples, are in `docs/schedules.md`.

mod error;
mod resolve;
mod spec;
mod validate;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use error::{Problem, ScheduleError, ScheduleErrors};
pub use resolve::{
    Interval, MAX_RANGE_DAYS, MAX_SHIFTS, Schedule, Shift, gaps, on_call, shifts, shifts_of,
};
pub use spec::{
    ClockTime, Combine, LayerSpec, MAX_SCHEDULE_BYTES, OverrideSpec, RestrictionSpec, RotationSpec,
    ScheduleSpec, TurnLength, TurnUnit, Weekday, WindowEdge,
};
pub use validate::{
    MAX_LAYERS, MAX_MEMBERS, MAX_OVERRIDES, MAX_RESTRICTIONS, MAX_TURN_DAYS, MAX_TURN_HOURS,
    MAX_TURN_WEEKS, time_zone,
};
