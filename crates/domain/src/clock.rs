//! The clock services read the time from: the system's, or one that tests move by hand.

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
/// that a record's time is not one more `i64` beside counts and sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
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
        let before = clock.now_micros();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now_micros();
        assert!(after - before >= 3_600_000_000, "{before} -> {after}");
        assert!(after - before < 3_660_000_000);
    }

    #[test]
    fn micros_are_microseconds_since_the_epoch() {
        let t = Micros::from_unix_micros(1_700_000_000_123_456).timestamp();
        assert_eq!(t.unix_timestamp(), 1_700_000_000);
        assert_eq!(t.microsecond(), 123_456);
        assert_eq!(Micros::from_unix_micros(-1).unix_micros(), -1);
    }
}
