//! Maintenance windows hold paging back: an escalation step that comes due while a window
//! covers its incident (its service, integration or labels) pages nobody. It is replaced by
//! the same step due when the window's occurrence ends, and the timeline is told which
//! window held it and until when (a `PagingSuppressed` event, in the same transaction). At
//! the end the step runs as usual, unless the incident was acknowledged, resolved or closed
//! meanwhile (which cancels it) or another window covers it then (which holds it again).
//! The incident itself is recorded as usual: windows decide paging only.
//!
//! Windows come from the configuration (`maintenance:`, changed there) and from run time
//! (`PutMaintenanceWindow`, stored in notification's database beside the schedules and on
//! their version, so every replica sees a new window at its next due step).

use std::collections::BTreeMap;
use std::sync::Arc;

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::Micros;
use firebreak_domain::maintenance::{Occurrence, Subject, Window, WindowSpec, suppressing};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::{DeliveryRecord, MaintenanceRecord, OutboxEvent};

use crate::Notification;
use crate::error::Error;
use crate::paging::{Step, StepError};

/// The most occurrences `ListMaintenanceWindows` lists per window.
pub(crate) const MAX_LISTED: usize = 20;
/// The most bytes of a run-time window's YAML.
const MAX_YAML: usize = 16 * 1024;
/// The most windows made at run time.
const MAX_STORED: usize = 200;

/// A stored window, checked again as it is read (a row that no longer passes holds nothing).
fn stored_window(r: &MaintenanceRecord) -> Result<Window, String> {
    let spec: WindowSpec = serde_json::from_value(r.spec.clone()).map_err(|e| e.to_string())?;
    spec.check(&format!("maintenance window {:?}", r.name))
}

/// A step held back: by which window, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub window: String,
    pub until: Micros,
}

/// Whether a window holds `step` back at `now`, judged on the incident the step carries
/// (its `service` label, else its source; its integration; its labels). Pure.
pub(crate) fn hold(windows: &[Window], step: &Step, now: Micros) -> Option<Held> {
    if windows.is_empty() {
        return None;
    }
    let inc = &step.incident;
    let text = |key: &str| inc.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let labels: BTreeMap<String, String> = inc
        .get("labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let service = labels
        .get("service")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text("source"));
    let subject = Subject {
        service,
        integration: text("integration"),
        labels: &labels,
    };
    suppressing(windows, &subject, now).map(|(w, Occurrence { end, .. })| Held {
        window: w.name().to_owned(),
        until: end,
    })
}

impl Notification {
    /// Holds the due step `d` back if a window covers its incident now: inserts its
    /// replacement, due when the occurrence ends, and returns the event telling the
    /// timeline (to be stored with `d`'s completion). `None`: nothing holds it.
    pub(crate) async fn hold_for_maintenance(
        &self,
        d: &DeliveryRecord,
        now: Micros,
    ) -> Result<Option<OutboxEvent>, StepError> {
        let windows = self.windows().await;
        if windows.is_empty() {
            return Ok(None);
        }
        let step: Step = serde_json::from_value(d.payload.clone())
            .map_err(|e| StepError::Invalid(format!("not an escalation step: {e}")))?;
        let Some(held) = hold(&windows, &step, now) else {
            return Ok(None);
        };
        // Keyed by the step and the end it waits for: a step held twice by the same
        // occurrence (a retry, another replica) is replaced once.
        let mut later = self.step_delivery(&step, &d.incident_id, held.until, now);
        later.event_id = format!("{}~{}", d.event_id, held.until.unix_micros());
        self.store.insert_deliveries(&[later]).await?;
        tracing::info!(incident = %d.incident_id, window = %held.window, until = held.until.unix_micros(), "a maintenance window holds paging back");
        Ok(Some(outbox_event(
            streams::NOTIFICATIONS,
            "notifications.paging_suppressed",
            Payload::PagingSuppressed(v1::PagingSuppressed {
                incident_id: d.incident_id.clone(),
                window: held.window,
                until: Some(firebreak_proto::timestamp(held.until)),
                policy: step.policy.clone(),
                step: step.step as u32 + 1,
            }),
        )))
    }

    /// The windows, each with whether it is in force at `at` and its next `n` occurrences.
    pub(crate) async fn list_maintenance(
        &self,
        at: Micros,
        n: usize,
    ) -> Vec<v1::MaintenanceWindow> {
        let stored: BTreeMap<String, MaintenanceRecord> = match self.schedules.store() {
            Some(store) => store
                .maintenance_windows()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
            None => BTreeMap::new(),
        };
        self.windows()
            .await
            .iter()
            .map(|w| self.listed(w, stored.get(w.name()), at, n))
            .collect()
    }

    /// One window as `ListMaintenanceWindows` shows it; `record` when made at run time.
    fn listed(
        &self,
        w: &Window,
        record: Option<&MaintenanceRecord>,
        at: Micros,
        n: usize,
    ) -> v1::MaintenanceWindow {
        let occurrence = |o: Occurrence| v1::MaintenanceOccurrence {
            start: Some(firebreak_proto::timestamp(o.start)),
            end: Some(firebreak_proto::timestamp(o.end)),
        };
        let spec = w.spec();
        let current = w.in_force(at);
        v1::MaintenanceWindow {
            name: spec.name.clone(),
            time_zone: spec.time_zone.clone(),
            start: spec.start.clone(),
            duration: spec.duration.clone(),
            rrule: spec.rrule.clone(),
            services: spec.services.clone(),
            integrations: spec.integrations.clone(),
            matchers: spec.matchers.clone(),
            comment: spec.comment.clone(),
            in_force: current.is_some(),
            current: current.map(occurrence),
            occurrences: w
                .upcoming(at, n.min(MAX_LISTED))
                .into_iter()
                .map(occurrence)
                .collect(),
            declared: self.maintenance.iter().any(|d| d.name() == w.name()),
            updated_by: record.map(|r| r.updated_by.clone()).unwrap_or_default(),
            updated_at: record.map(|r| firebreak_proto::timestamp(r.updated_at)),
        }
    }

    /// Every window in force: the configuration's, then those made at run time, read again
    /// only when the schedule store's version moved (one cheap read otherwise). A store that
    /// does not answer leaves the last set in force.
    pub(crate) async fn windows(&self) -> Arc<Vec<Window>> {
        let Some(store) = self.schedules.store() else {
            return self.maintenance.clone();
        };
        let (held_version, held) = {
            let h = self.windows.read().unwrap_or_else(|e| e.into_inner());
            (h.0, h.1.clone())
        };
        let fallback = |held: Arc<Vec<Window>>| {
            if held_version < 0 {
                self.maintenance.clone()
            } else {
                held
            }
        };
        let version = match store.schedules_version().await {
            Ok(v) if v == held_version => return held,
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading the maintenance windows' version failed; the last ones stay in force");
                return fallback(held);
            }
        };
        let records = match store.maintenance_windows().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the maintenance windows failed; the last ones stay in force");
                return fallback(held);
            }
        };
        let mut all: Vec<Window> = self.maintenance.to_vec();
        for r in &records {
            match stored_window(r) {
                Ok(w) if all.iter().all(|o| o.name() != w.name()) => all.push(w),
                Ok(_) => {
                    tracing::warn!(window = %r.name, "a stored maintenance window has a configured one's name; the configured one holds")
                }
                Err(e) => {
                    tracing::warn!(window = %r.name, error = %e, "a stored maintenance window is not valid; it holds nothing")
                }
            }
        }
        let all = Arc::new(all);
        *self.windows.write().unwrap_or_else(|e| e.into_inner()) = (version, all.clone());
        all
    }

    fn maintenance_store(&self) -> Result<&Arc<dyn firebreak_storage::ScheduleStore>, Error> {
        self.schedules
            .store()
            .ok_or_else(|| Error::Invalid("maintenance windows are configuration-only here".into()))
    }

    /// Creates or replaces the run-time window `yaml` describes (a `maintenance:` entry's
    /// fields), as `actor`; checked whole, changing nothing when anything is wrong.
    pub(crate) async fn put_maintenance_yaml(
        &self,
        yaml: &str,
        actor: &str,
    ) -> Result<v1::MaintenanceWindow, Error> {
        if yaml.len() > MAX_YAML {
            return Err(Error::Invalid(format!("yaml: at most {MAX_YAML} bytes")));
        }
        let spec: WindowSpec =
            serde_yaml::from_str(yaml).map_err(|e| Error::Invalid(format!("yaml: {e}")))?;
        let window = spec.check("yaml").map_err(Error::Invalid)?;
        if self.maintenance.iter().any(|w| w.name() == spec.name) {
            return Err(Error::Declared(format!(
                "maintenance window {:?}",
                spec.name
            )));
        }
        let store = self.maintenance_store()?;
        let stored = store.maintenance_windows().await?;
        if stored.len() >= MAX_STORED && stored.iter().all(|r| r.name != spec.name) {
            return Err(Error::Invalid(format!(
                "maintenance windows: at most {MAX_STORED} made at run time"
            )));
        }
        let record = MaintenanceRecord {
            name: spec.name.clone(),
            spec: serde_json::to_value(&spec).map_err(|e| Error::Invalid(e.to_string()))?,
            updated_at: self.clock.now(),
            updated_by: actor.to_owned(),
        };
        store.put_maintenance_window(&record).await?;
        tracing::info!(window = %record.name, actor, "a maintenance window was put");
        Ok(self.listed(&window, Some(&record), self.clock.now(), 3))
    }

    /// Deletes a run-time window: the next step that comes due no longer sees it (a step it
    /// held already stays due at the end of the occurrence it was held to).
    pub(crate) async fn delete_maintenance_named(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::Invalid("name: required".into()));
        }
        if self.maintenance.iter().any(|w| w.name() == name) {
            return Err(Error::Declared(format!("maintenance window {name:?}")));
        }
        if !self
            .maintenance_store()?
            .delete_maintenance_window(name)
            .await?
        {
            return Err(Error::NotFound(format!("maintenance window {name:?}")));
        }
        tracing::info!(window = %name, "a maintenance window was deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_domain::maintenance::{WindowSpec, check_all};
    use serde_json::json;

    fn at(text: &str) -> Micros {
        Micros::from_unix_micros(text.parse::<jiff::Timestamp>().unwrap().as_microsecond())
    }

    fn step(incident: serde_json::Value) -> Step {
        Step {
            policy: "sre".into(),
            step: 0,
            repeat: 0,
            root: "ev".into(),
            reached: false,
            incident,
            at: 0,
        }
    }

    #[test]
    fn a_step_is_held_by_the_window_covering_its_incident_until_the_occurrence_ends() {
        let spec = |name: &str, f: &dyn Fn(&mut WindowSpec)| {
            let mut s = WindowSpec {
                name: name.into(),
                time_zone: "Europe/Berlin".into(),
                start: "2026-01-01T01:00".into(),
                duration: "3h".into(),
                rrule: "FREQ=DAILY".into(),
                services: Vec::new(),
                integrations: Vec::new(),
                matchers: Vec::new(),
                comment: String::new(),
            };
            f(&mut s);
            s
        };
        let windows = check_all(&[
            spec("checkout", &|s| s.services = vec!["checkout".into()]),
            spec("am", &|s| s.integrations = vec!["am-prod".into()]),
            spec("staging", &|s| s.matchers = vec![r#"env=~"stag.*""#.into()]),
        ])
        .unwrap();
        // 01:30 Berlin on the spring-forward night (00:30 UTC): in force until 02:00 UTC.
        let night = at("2026-03-29T00:30:00Z");
        let until = at("2026-03-29T02:00:00Z");
        let held = |incident| hold(&windows, &step(incident), night);
        // By the service label.
        assert_eq!(
            held(json!({ "labels": { "service": "checkout" }, "source": "prometheus" })),
            Some(Held {
                window: "checkout".into(),
                until
            })
        );
        // By the source when there is no service label.
        assert_eq!(
            held(json!({ "labels": {}, "source": "checkout" })).map(|h| h.window),
            Some("checkout".into())
        );
        // By integration, and by labels.
        assert_eq!(
            held(json!({ "integration": "am-prod" })).map(|h| h.window),
            Some("am".into())
        );
        assert_eq!(
            held(json!({ "labels": { "env": "staging" } })).map(|h| h.window),
            Some("staging".into())
        );
        // Nothing covers it, or no occurrence is in force: not held.
        assert_eq!(
            held(json!({ "labels": { "service": "search", "env": "prod" } })),
            None
        );
        assert_eq!(
            hold(
                &windows,
                &step(json!({ "labels": { "service": "checkout" } })),
                until
            ),
            None
        );
    }
}
