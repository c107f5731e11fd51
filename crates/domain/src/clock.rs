//! The clock services read the time from: the system's, or one that tests move by hand.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Where a service reads the current time (Unix microseconds). Timers — durable sleeps,
/// approval timeouts, escalation steps — are due against it, so tests can move time on
/// instead of waiting for it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_micros(&self) -> i64;
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
}
