//! Maintenance windows hold paging back: an escalation step that comes due while a window
//! covers its incident (its service, integration or labels) pages nobody. It is replaced by
//! the same step due when the window's occurrence ends, and the timeline is told which
//! window held it and until when (a `PagingSuppressed` event, in the same transaction). At
//! the end the step runs as usual, unless the incident was acknowledged, resolved or closed
//! meanwhile (which cancels it) or another window covers it then (which holds it again).
//! The incident itself is recorded as usual: windows decide paging only.

use std::collections::BTreeMap;

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::Micros;
use firebreak_domain::maintenance::{Occurrence, Subject, Window, suppressing};
use firebreak_proto::v1::{self, event::Payload};
use firebreak_storage::{DeliveryRecord, OutboxEvent};

use crate::Notification;
use crate::paging::{Step, StepError};

/// The most occurrences `ListMaintenanceWindows` lists per window.
pub(crate) const MAX_LISTED: usize = 20;

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
        if self.maintenance.is_empty() {
            return Ok(None);
        }
        let step: Step = serde_json::from_value(d.payload.clone())
            .map_err(|e| StepError::Invalid(format!("not an escalation step: {e}")))?;
        let Some(held) = hold(&self.maintenance, &step, now) else {
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
    pub(crate) fn list_maintenance(&self, at: Micros, n: usize) -> Vec<v1::MaintenanceWindow> {
        let occurrence = |o: Occurrence| v1::MaintenanceOccurrence {
            start: Some(firebreak_proto::timestamp(o.start)),
            end: Some(firebreak_proto::timestamp(o.end)),
        };
        self.maintenance
            .iter()
            .map(|w| {
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
                }
            })
            .collect()
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
