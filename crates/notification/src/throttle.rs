//! Throttles per destination: how many pages one phone number, address or account may
//! receive in a window, per contact kind (configuration's `throttles:`, GoAlert's limits by
//! default). The decision is one pure function over the times earlier pages were sent
//! ([`decide`]); the dispatcher reads those times from the store and defers a page the
//! decision holds back, so limits hold across restarts and replicas.

use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_domain::people::ContactKind;
use serde::{Deserialize, Serialize};

/// At most `count` pages to one destination in any `per_seconds` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Pages the window allows, 1 to [`MAX_COUNT`].
    pub count: u32,
    /// The window's length in seconds, 1 to [`MAX_WINDOW_SECONDS`].
    pub per_seconds: u64,
}

/// The most pages a limit may allow in its window.
pub const MAX_COUNT: u32 = 1_000;
/// The longest window: a day.
pub const MAX_WINDOW_SECONDS: u64 = 86_400;
/// The most limits one contact kind may have.
pub const MAX_LIMITS: usize = 10;

const fn limit(count: u32, per_seconds: u64) -> Limit {
    Limit { count, per_seconds }
}

/// The limits per contact kind (`throttles: {sms: [{count: 1, per_seconds: 60}], ...}`). A
/// kind left out keeps its default; an empty list turns its throttle off. The defaults are
/// GoAlert's per-contact-method limits for alert notifications: SMS and voice at most one a
/// minute, SMS 5 in 15 minutes, 11 an hour and 21 in 3 hours, voice 3 in 15 minutes, 7 an
/// hour and 15 in 3 hours, email one a minute; chat and webhooks unthrottled (their
/// providers answer 429 with `Retry-After`, which retries honour). GoAlert spreads its
/// longer windows evenly ("smooth"); these are plain sliding windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttles {
    pub email: Vec<Limit>,
    pub sms: Vec<Limit>,
    pub voice: Vec<Limit>,
    pub slack: Vec<Limit>,
    pub mattermost: Vec<Limit>,
    pub teams: Vec<Limit>,
    pub webhook: Vec<Limit>,
}

impl Default for Throttles {
    fn default() -> Self {
        Self {
            email: vec![limit(1, 60)],
            sms: vec![
                limit(1, 60),
                limit(5, 15 * 60),
                limit(11, 3_600),
                limit(21, 3 * 3_600),
            ],
            voice: vec![
                limit(1, 60),
                limit(3, 15 * 60),
                limit(7, 3_600),
                limit(15, 3 * 3_600),
            ],
            slack: Vec::new(),
            mattermost: Vec::new(),
            teams: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

impl Throttles {
    /// No throttle at all (tests that page one person many times quickly).
    pub fn none() -> Self {
        Self {
            email: Vec::new(),
            sms: Vec::new(),
            voice: Vec::new(),
            ..Self::default()
        }
    }

    /// The limits of a contact kind.
    pub fn of(&self, kind: ContactKind) -> &[Limit] {
        match kind {
            ContactKind::Email => &self.email,
            ContactKind::Sms => &self.sms,
            ContactKind::Voice => &self.voice,
            ContactKind::Slack => &self.slack,
            ContactKind::Mattermost => &self.mattermost,
            ContactKind::Teams => &self.teams,
            ContactKind::Webhook => &self.webhook,
        }
    }

    /// Every limit within bounds; the error names the field (`throttles.sms[1].count`).
    pub fn check(&self) -> Result<(), String> {
        for kind in ContactKind::ALL {
            let limits = self.of(*kind);
            if limits.len() > MAX_LIMITS {
                return Err(format!(
                    "throttles.{kind}: at most {MAX_LIMITS} limits, not {}",
                    limits.len()
                ));
            }
            for (i, l) in limits.iter().enumerate() {
                if !(1..=MAX_COUNT).contains(&l.count) {
                    return Err(format!(
                        "throttles.{kind}[{i}].count: must be 1 to {MAX_COUNT}, not {}",
                        l.count
                    ));
                }
                if !(1..=MAX_WINDOW_SECONDS).contains(&l.per_seconds) {
                    return Err(format!(
                        "throttles.{kind}[{i}].per_seconds: must be 1 to {MAX_WINDOW_SECONDS}, not {}",
                        l.per_seconds
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the store must be asked for `limits` at `now`: sends since the returned instant,
/// at most the returned number (the newest): enough for every limit.
pub(crate) fn lookback(limits: &[Limit], now: Micros) -> Option<(Micros, u32)> {
    let longest = limits.iter().map(|l| l.per_seconds).max()?;
    let most = limits.iter().map(|l| l.count).max()?;
    Some((now - Duration::from_secs(longest), most))
}

/// When a page to a destination may go, given when earlier pages to it were sent (`sent`,
/// oldest first) and its `limits`: `None` for now, else the first instant every limit allows
/// it. A limit of `count` per `per` holds back while `count` pages lie in the window
/// `(t - per, t]`, so the page may go once the `count`-th newest of them leaves it.
pub fn decide(limits: &[Limit], sent: &[Micros], now: Micros) -> Option<Micros> {
    let mut at: Option<Micros> = None;
    for l in limits {
        let per = Duration::from_secs(l.per_seconds);
        let in_window: Vec<Micros> = sent.iter().copied().filter(|s| *s + per > now).collect();
        let count = l.count as usize;
        if count == 0 || in_window.len() < count {
            continue;
        }
        let free = in_window[in_window.len() - count] + per;
        at = Some(at.map_or(free, |a| a.max(free)));
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: i64) -> Micros {
        Micros::from_unix_micros(secs * 1_000_000)
    }

    #[test]
    fn the_decision_table() {
        let sms = Throttles::default().sms;
        let one_a_minute = [limit(1, 60)];
        let two_in_ten = [limit(2, 10)];
        #[allow(clippy::type_complexity)]
        let table: &[(&str, &[Limit], &[i64], i64, Option<i64>)] = &[
            ("nothing sent", &one_a_minute, &[], 1000, None),
            ("no limits", &[], &[999, 1000], 1000, None),
            ("sent a minute ago", &one_a_minute, &[940], 1000, None),
            ("sent 59 s ago", &one_a_minute, &[941], 1000, Some(1001)),
            ("sent just now", &one_a_minute, &[1000], 1000, Some(1060)),
            ("one of two", &two_in_ten, &[995], 1000, None),
            ("two of two", &two_in_ten, &[993, 995], 1000, Some(1003)),
            (
                "three, oldest gone",
                &two_in_ten,
                &[985, 993, 995],
                1000,
                Some(1003),
            ),
            // GoAlert's SMS: the minute allows it, but 5 in 15 minutes do not.
            (
                "five in 15 min",
                &sms,
                &[100, 200, 300, 400, 500],
                900,
                Some(1000),
            ),
            ("four in 15 min", &sms, &[200, 300, 400, 500], 900, None),
            // 11 an hour: the oldest of the 11 newest leaves at 3600 s after it.
            (
                "eleven in an hour",
                &sms,
                &[0, 300, 600, 1200, 1500, 1800, 2100, 2400, 2700, 3000, 3100],
                3200,
                Some(3600),
            ),
            // A clock behind another replica's: a send "in the future" still counts.
            (
                "sent ahead of now",
                &one_a_minute,
                &[1010],
                1000,
                Some(1070),
            ),
        ];
        for (name, limits, sent, now, want) in table {
            let sent: Vec<Micros> = sent.iter().map(|t| s(*t)).collect();
            assert_eq!(decide(limits, &sent, s(*now)), want.map(s), "{name}");
        }
    }

    #[test]
    fn the_decision_is_never_now_while_a_window_is_full_and_always_frees_it() {
        let limits = Throttles::default().voice;
        let mut sent = Vec::new();
        let mut now = s(0);
        // Page as fast as the limits allow for 6 hours: every limit holds at every send.
        while now < s(6 * 3600) {
            match decide(&limits, &sent, now) {
                None => sent.push(now),
                Some(at) => {
                    assert!(at > now);
                    now = at;
                    continue;
                }
            }
            for l in &limits {
                let per = Duration::from_secs(l.per_seconds);
                let in_window = sent.iter().filter(|t| **t + per > now).count();
                assert!(in_window <= l.count as usize, "{l:?} at {now:?}");
            }
            now = now + Duration::from_secs(1);
        }
        // 15 in any 3 hours: about 30 in 6.
        assert!((28..=32).contains(&sent.len()), "{}", sent.len());
    }

    #[test]
    fn limits_are_bounded_naming_the_field() {
        assert_eq!(Throttles::default().check(), Ok(()));
        let mut t = Throttles::default();
        t.sms[1].count = 0;
        assert_eq!(
            t.check().unwrap_err(),
            "throttles.sms[1].count: must be 1 to 1000, not 0"
        );
        let mut t = Throttles::default();
        t.voice[0].per_seconds = 90_000;
        assert_eq!(
            t.check().unwrap_err(),
            "throttles.voice[0].per_seconds: must be 1 to 86400, not 90000"
        );
        let t = Throttles {
            email: vec![limit(1, 1); 11],
            ..Throttles::default()
        };
        assert_eq!(
            t.check().unwrap_err(),
            "throttles.email: at most 10 limits, not 11"
        );
        // Configuration: a kind left out keeps its default, unknown kinds and fields fail.
        let t: Throttles = serde_yaml::from_str("sms: []\n").unwrap();
        assert!(t.sms.is_empty());
        assert_eq!(t.voice, Throttles::default().voice);
        assert!(serde_yaml::from_str::<Throttles>("pager: []\n").is_err());
        assert!(serde_yaml::from_str::<Throttles>("sms: [{ count: 1, per: 60 }]\n").is_err());
    }

    #[test]
    fn lookback_covers_every_limit() {
        let now = s(10_800);
        assert_eq!(lookback(&Throttles::default().sms, now), Some((s(0), 21)));
        assert_eq!(lookback(&[], now), None);
    }
}
