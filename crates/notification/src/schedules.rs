//! On-call schedules: the configuration's and those made at run time, checked when they are
//! written and resolved by the domain's one pure function
//! (`firebreak_domain::schedule::on_call`) whenever paging asks who is on call. [`Live`]
//! keeps the set current: with a store, it reloads when the store's schedule version moved,
//! so every replica sees a change on its next read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use firebreak_domain::Micros;
use firebreak_domain::schedule::{Schedule, ScheduleSpec, on_call};

use crate::paging::OnCall;

/// Every schedule, by name.
#[derive(Debug, Default)]
pub struct Schedules(HashMap<String, Schedule>);

/// The most schedules a configuration holds.
const MAX_SCHEDULES: usize = 1_000;

impl Schedules {
    /// Checks `specs` (each schedule's own rules, and names used once); members are checked
    /// against the directory when the service starts ([`Schedules::members`]).
    pub fn new(specs: &[ScheduleSpec]) -> Result<Self, String> {
        if specs.len() > MAX_SCHEDULES {
            return Err(format!("schedules: at most {MAX_SCHEDULES}"));
        }
        let mut out = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let schedule = spec
                .validate(&|_| true)
                .map_err(|e| format!("schedules[{i}] ({:?}): {e}", spec.name))?;
            if out.insert(spec.name.clone(), schedule).is_some() {
                return Err(format!("schedules[{i}] ({:?}): declared twice", spec.name));
            }
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.0.get(name)
    }

    /// The schedules, by name.
    pub fn all(&self) -> Vec<&Schedule> {
        let mut all: Vec<&Schedule> = self.0.values().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Every (schedule, user) a layer or an override names, for checking them against the
    /// directory.
    pub fn members(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in self.all() {
            let spec = s.spec();
            for layer in &spec.layers {
                for m in layer.members.iter().flatten() {
                    out.push((spec.name.clone(), m.clone()));
                }
            }
            for o in &spec.overrides {
                for m in [&o.replace, &o.with, &o.add].into_iter().flatten() {
                    out.push((spec.name.clone(), m.clone()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Schedules {
    /// The stored schedules with their run-time overrides. One that no longer checks (it
    /// was valid when written) is left out, with a warning, rather than taking the rest down.
    pub fn from_records(records: &[firebreak_storage::ScheduleRecord]) -> Self {
        let mut out = HashMap::new();
        for r in records {
            match spec_of(r).and_then(|spec| spec.validate(&|_| true).map_err(|e| e.to_string())) {
                Ok(s) => {
                    out.insert(r.name.clone(), s);
                }
                Err(e) => {
                    tracing::warn!(schedule = %r.name, error = %e, "a stored schedule does not check; it is left out")
                }
            }
        }
        Self(out)
    }
}

/// A stored schedule's spec with its run-time overrides appended.
pub(crate) fn spec_of(r: &firebreak_storage::ScheduleRecord) -> Result<ScheduleSpec, String> {
    let mut spec: ScheduleSpec = serde_json::from_value(r.spec.clone())
        .map_err(|e| format!("schedule {:?} as stored: {e}", r.name))?;
    for o in &r.overrides {
        spec.overrides.push(
            serde_json::from_value(o.spec.clone())
                .map_err(|e| format!("override {:?} as stored: {e}", o.id))?,
        );
    }
    Ok(spec)
}

/// The schedules in force, kept current from the store when there is one.
pub struct Live {
    current: RwLock<(i64, Arc<Schedules>)>,
    store: Option<Arc<dyn firebreak_storage::ScheduleStore>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Schedules that never change (no store).
    pub fn fixed(schedules: Schedules) -> Self {
        Self {
            current: RwLock::new((-1, Arc::new(schedules))),
            store: None,
        }
    }

    /// Schedules read from `store`, starting from `schedules` until the first read.
    pub fn stored(store: Arc<dyn firebreak_storage::ScheduleStore>, schedules: Schedules) -> Self {
        Self {
            current: RwLock::new((-1, Arc::new(schedules))),
            store: Some(store),
        }
    }

    pub(crate) fn store(&self) -> Option<&Arc<dyn firebreak_storage::ScheduleStore>> {
        self.store.as_ref()
    }

    fn cached(&self) -> (i64, Arc<Schedules>) {
        let held = self.current.read().unwrap_or_else(|e| e.into_inner());
        (held.0, held.1.clone())
    }

    /// The schedules as they stand: reloaded when the store's version moved (one cheap read
    /// otherwise). A store that does not answer leaves the last set in force.
    pub async fn now(&self) -> Arc<Schedules> {
        let (version, held) = self.cached();
        let Some(store) = &self.store else {
            return held;
        };
        match store.schedules_version().await {
            Ok(v) if v == version => held,
            Ok(_) => self.reload().await.unwrap_or(held),
            Err(e) => {
                tracing::warn!(error = %e, "reading the schedule version failed; using the schedules held");
                held
            }
        }
    }

    /// Reads every schedule from the store now.
    pub async fn reload(&self) -> Option<Arc<Schedules>> {
        let store = self.store.as_ref()?;
        match store.schedules().await {
            Ok((version, records)) => {
                let fresh = Arc::new(Schedules::from_records(&records));
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (version, fresh.clone());
                Some(fresh)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the schedules failed; using the schedules held");
                None
            }
        }
    }
}

/// `at` as the schedule functions take it.
pub fn instant(at: Micros) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(at.unix_micros()).unwrap_or(jiff::Timestamp::MAX)
}

impl OnCall for Schedules {
    fn on_call(&self, schedule: &str, at: Micros) -> Option<Vec<String>> {
        self.0.get(schedule).map(|s| on_call(s, instant(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "name: primary\ntime_zone: Europe/Berlin\ncombine: exclusive\nlayers:\n  - name: week\n    members: [alice, bob]\n    rotation: { every: 1w, hand_off: \"09:00\", start: \"2026-11-02\" }\n";

    #[test]
    fn schedules_resolve_who_is_on_call_and_refuse_bad_ones_naming_them() {
        let spec = ScheduleSpec::from_yaml(PRIMARY).unwrap();
        let s = Schedules::new(std::slice::from_ref(&spec)).unwrap();
        // Monday 2 November 2026, 09:00 in Berlin is 08:00 UTC: alice's week, then bob's.
        let at = |rfc: &str| {
            let t: jiff::Timestamp = rfc.parse().unwrap();
            Micros::from_unix_micros(t.as_microsecond())
        };
        assert_eq!(
            s.on_call("primary", at("2026-11-02T08:00:00Z")),
            Some(vec!["alice".into()])
        );
        assert_eq!(
            s.on_call("primary", at("2026-11-09T08:00:00Z")),
            Some(vec!["bob".into()])
        );
        assert_eq!(s.on_call("other", at("2026-11-09T08:00:00Z")), None);
        assert_eq!(
            s.members(),
            [
                ("primary".into(), "alice".into()),
                ("primary".into(), "bob".into())
            ]
        );
        let e = Schedules::new(&[spec.clone(), spec]).unwrap_err();
        assert!(e.contains("schedules[1]") && e.contains("twice"), "{e}");
        let gap = ScheduleSpec::from_yaml(
            &PRIMARY
                .replace("\"09:00\"", "\"02:30\"")
                .replace("2026-11-02", "2026-03-29"),
        )
        .unwrap();
        let e = Schedules::new(&[gap]).unwrap_err();
        assert!(e.contains("schedules[0]") && e.contains("hand_off"), "{e}");
    }
}
