//! The clock services read the time from: the system's, or one that tests move by hand.

use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Where a service reads the current time (Unix microseconds). Timers — durable sleeps,
/// approval timeouts, escalation steps — are due against it, so tests can move time on
/// instead of waiting for it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_micros(&self) -> i64;

    /// [`Clock::now_micros`] as the type records hold.
    fn now(&self) -> Micros {
        Micros::from_unix_micros(self.now_micros())
    }
}

/// A point in time as records hold it: microseconds since the Unix epoch (UTC), what a
/// [`Clock`] reads and what the stores keep in a 64-bit integer column. A type of its own so
/// that a record's time is not one more `i64` beside counts and sequence numbers. In JSON
/// (a record's JSON column) it is that integer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Micros(i64);

impl Micros {
    /// The time `micros` microseconds after the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch, as stored.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// The same time as a [`crate::Timestamp`] (the Unix epoch when out of its range).
    pub fn timestamp(self) -> crate::Timestamp {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// How long after `earlier` this time is; zero when `earlier` is not before it.
    pub fn saturating_duration_since(self, earlier: Micros) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A duration in whole microseconds (finer precision dropped), at most `i64::MAX`.
fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The time `rhs` later, saturating at the end of the range instead of overflowing.
impl Add<Duration> for Micros {
    type Output = Micros;

    fn add(self, rhs: Duration) -> Micros {
        Micros(self.0.saturating_add(duration_micros(rhs)))
    }
}

/// The time `rhs` earlier, saturating at the start of the range instead of overflowing.
impl Sub<Duration> for Micros {
    type Output = Micros;

    fn sub(self, rhs: Duration) -> Micros {
        Micros(self.0.saturating_sub(duration_micros(rhs)))
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }
}

/// A clock that follows the system clock plus an offset that only [`ManualClock::advance`]
/// changes: tests jump over timers without sleeping, and time still moves forward.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: AtomicI64,
}

impl ManualClock {
    /// Moves the clock `by` into the future.
    pub fn advance(&self, by: Duration) {
        self.offset
            .fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        SystemClock.now_micros() + self.offset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_jumps_forward_when_advanced() {
        let clock = ManualClock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let moved = clock.now().saturating_duration_since(before);
        assert!(moved >= Duration::from_secs(3600), "{moved:?}");
        assert!(moved < Duration::from_secs(3660), "{moved:?}");
    }

    #[test]
    fn micros_are_microseconds_since_the_epoch() {
        let t = Micros::from_unix_micros(1_700_000_000_123_456).timestamp();
        assert_eq!(t.unix_timestamp(), 1_700_000_000);
        assert_eq!(t.microsecond(), 123_456);
        assert_eq!(Micros::from_unix_micros(-1).unix_micros(), -1);
    }

    #[test]
    fn adding_and_subtracting_durations_moves_the_time() {
        let t = Micros::from_unix_micros(1_000_000);
        assert_eq!(
            t + Duration::from_secs(2),
            Micros::from_unix_micros(3_000_000)
        );
        assert_eq!(
            t - Duration::from_millis(1),
            Micros::from_unix_micros(999_000)
        );
        assert_eq!(
            t + Duration::from_nanos(999),
            t,
            "finer than a microsecond is dropped"
        );
    }

    #[test]
    fn adding_and_subtracting_durations_saturates() {
        let max = Micros::from_unix_micros(i64::MAX);
        let min = Micros::from_unix_micros(i64::MIN);
        assert_eq!(max + Duration::from_micros(1), max);
        assert_eq!(min - Duration::from_micros(1), min);
        assert_eq!(Micros::default() + Duration::MAX, max);
        assert_eq!(
            Micros::default() - Duration::MAX,
            Micros::from_unix_micros(-i64::MAX)
        );
    }

    #[test]
    fn the_duration_since_an_earlier_time_is_never_negative() {
        let a = Micros::from_unix_micros(1_000);
        let b = Micros::from_unix_micros(3_500);
        assert_eq!(b.saturating_duration_since(a), Duration::from_micros(2_500));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.saturating_duration_since(a), Duration::ZERO);
        let max = Micros::from_unix_micros(i64::MAX);
        let min = Micros::from_unix_micros(i64::MIN);
        assert_eq!(
            max.saturating_duration_since(min),
            Duration::from_micros(i64::MAX as u64)
        );
    }
}
