//! Slows down guessing: a source address whose calls keep failing authentication has its
//! further failures answered only after a delay, and its unknown tokens no longer make the
//! credential copy sync. Valid credentials from the same address are never held up, and
//! other addresses are not affected. The table is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long failures are counted together.
const WINDOW: Duration = Duration::from_secs(60);
/// The most sources remembered; the oldest window goes first.
const MAX_SOURCES: usize = 10_000;

/// Failed authentications per source address.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Failures within [`WINDOW`] after which a source is slowed down; 0: never.
    limit: u32,
    /// How long each further failure of a slowed-down source waits before it is answered.
    pub(crate) delay: Duration,
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    pub(crate) fn new(limit: u32, delay: Duration) -> Self {
        Self {
            limit,
            delay,
            sources: Mutex::default(),
        }
    }

    /// Whether `source` has failed too often lately.
    pub(crate) fn is_slowed(&self, source: IpAddr) -> bool {
        if self.limit == 0 {
            return false;
        }
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources
            .get(&source)
            .is_some_and(|(since, n)| since.elapsed() < WINDOW && *n >= self.limit)
    }

    /// Counts a failure of `source`; returns whether it is slowed down now.
    pub(crate) fn failed(&self, source: IpAddr) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            // Expired windows first; if none, the oldest.
            sources.retain(|_, (since, _)| since.elapsed() < WINDOW);
            if sources.len() >= MAX_SOURCES
                && let Some(oldest) = sources
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(ip, _)| *ip)
            {
                sources.remove(&oldest);
            }
        }
        let entry = sources.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_is_slowed_after_the_limit_and_others_are_not() {
        const LIMIT: u32 = 10;
        let t = Throttle::new(LIMIT, Duration::from_secs(1));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..LIMIT - 1 {
            assert!(!t.failed(a));
        }
        assert!(!t.is_slowed(a));
        assert!(t.failed(a));
        assert!(t.is_slowed(a));
        assert!(!t.is_slowed(b));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::new(1, Duration::from_secs(1));
        for i in 0..(MAX_SOURCES as u32 + 500) {
            t.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.sources.lock().unwrap().len() <= MAX_SOURCES);
    }
}

#[cfg(test)]
mod off {
    use super::*;

    #[test]
    fn a_limit_of_zero_never_slows_anyone() {
        let t = Throttle::new(0, Duration::from_secs(1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!t.failed(a));
        }
        assert!(!t.is_slowed(a));
    }
}
