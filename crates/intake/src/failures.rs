//! Failed authentications counted per source address: a source that keeps presenting wrong
//! integration keys or signatures is held back for the rest of its minute, while every other
//! source goes on as before.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use firebreak_domain::Micros;

/// Failures a source may have in a window before its calls are refused.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most; past it the one whose window began first is forgotten.
pub const MAX_SOURCES: usize = 10_000;

/// One source's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    failures: u32,
}

/// Failed authentications by source address (fixed windows of [`WINDOW`]). A source with
/// [`MAX_FAILURES`] in its window is refused until the window ends, whatever it presents: a
/// success does not clear it, so a guesser holding one good key cannot reset its count.
#[derive(Debug)]
pub struct FailureGate {
    sources: Mutex<HashMap<IpAddr, Window>>,
    max_failures: u32,
    max_sources: usize,
}

impl Default for FailureGate {
    fn default() -> Self {
        Self::new(MAX_FAILURES, MAX_SOURCES)
    }
}

impl FailureGate {
    pub fn new(max_failures: u32, max_sources: usize) -> Self {
        Self {
            sources: Mutex::default(),
            max_failures: max_failures.max(1),
            max_sources: max_sources.max(1),
        }
    }

    fn window() -> i64 {
        WINDOW.as_micros() as i64
    }

    /// Whether `source` may try at `now`: `Err` with how long until it may.
    pub fn check(&self, source: IpAddr, now: Micros) -> Result<(), Duration> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        match sources.get(&source) {
            Some(w) if w.failures >= self.max_failures => {
                let left = w.start + Self::window() - now.unix_micros();
                if left > 0 {
                    Err(Duration::from_micros(left as u64))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure of `source` at `now`.
    pub fn fail(&self, source: IpAddr, now: Micros) {
        let now = now.unix_micros();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.contains_key(&source) && sources.len() >= self.max_sources {
            // Windows that ended first; if every one is current, the oldest goes.
            sources.retain(|_, w| now - w.start < Self::window());
            if sources.len() >= self.max_sources
                && let Some(oldest) = sources.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
            {
                sources.remove(&oldest);
            }
        }
        let w = sources.entry(source).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now - w.start >= Self::window() {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// How many sources are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Micros {
        Micros::from_unix_micros(1_700_000_000_000_000 + (seconds * 1e6) as i64)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_failing_source_is_held_back_for_its_minute_and_others_are_not() {
        let gate = FailureGate::default();
        for n in 0..MAX_FAILURES {
            assert_eq!(gate.check(ip(1), at(f64::from(n))), Ok(()), "failure {n}");
            gate.fail(ip(1), at(f64::from(n)));
        }
        let wait = gate.check(ip(1), at(10.0)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50), "until its window ends");
        assert_eq!(
            gate.check(ip(2), at(10.0)),
            Ok(()),
            "another source goes on"
        );
        assert!(gate.check(ip(1), at(59.0)).is_err());
        // A new window: it may try again, and counts from zero.
        assert_eq!(gate.check(ip(1), at(60.0)), Ok(()));
        gate.fail(ip(1), at(60.0));
        assert_eq!(gate.check(ip(1), at(61.0)), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let gate = FailureGate::new(1, 3);
        for n in 1..=3 {
            gate.fail(ip(n), at(f64::from(n)));
        }
        gate.fail(ip(4), at(4.0));
        assert_eq!(gate.len(), 3);
        assert_eq!(
            gate.check(ip(1), at(5.0)),
            Ok(()),
            "the oldest was forgotten"
        );
        assert!(gate.check(ip(2), at(5.0)).is_err());
        assert!(gate.check(ip(4), at(5.0)).is_err());
        // Ended windows go first.
        gate.fail(ip(5), at(63.5));
        assert_eq!(gate.len(), 2, "ip 2 and 3's windows had ended");
    }
}
