//! Grouping in the decide step: which group's incident an alert joins when its dedup key has
//! no active incident (the rules themselves are `firebreak_domain::grouping`).
//!
//! An alert's group is that of the first rule that applies to it. It joins the group's
//! active incident opened last when that opened strictly less than the rule's window ago
//! (the window counts from the incident's opening, not from its latest alert, so a group
//! that keeps firing still starts a new incident every window); otherwise the incident it
//! opens carries the group key. A joined alert puts a `grouped` entry on the timeline naming
//! the rule and the group's labels; a batch grouping many alerts into one incident writes
//! one entry listing them all, as attachments do.

use firebreak_domain::Micros;
use firebreak_domain::Signal;
use firebreak_domain::grouping::{Group, Grouping, within_window};
use firebreak_proto::v1;
use serde_json::json;

use super::{Input, Work};

/// The group keys of the alerts among `inputs`, to read their incidents with the snapshot.
pub(crate) fn group_keys(inputs: &[Input], grouping: &Grouping) -> Vec<String> {
    if grouping.is_empty() {
        return Vec::new();
    }
    let mut keys: Vec<String> = inputs
        .iter()
        .filter_map(|input| match input {
            Input::Alert { alert, signal, .. } => {
                grouping.group_of(&alert.integration, &signal.labels)
            }
            _ => None,
        })
        .map(|g| g.key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What the timeline says about a group: its key, rule and labels.
pub(super) fn describe(g: &Group) -> serde_json::Value {
    json!({ "key": g.key, "rule": g.rule, "labels": g.labels })
}

impl Work<'_> {
    /// The id of `group`'s active incident an alert at `now` joins, if any: the one this
    /// batch opened, else the one the snapshot read, still active and inside the window.
    pub(super) fn group_incident(&mut self, group: &Group, now: Micros) -> Option<String> {
        let id = match self.groups.get(&group.key) {
            Some(held) => held.clone(),
            None => {
                let stored = self.snap.grouped.get(&group.key).map(|i| i.id.clone());
                self.groups.insert(group.key.clone(), stored.clone());
                stored
            }
        }?;
        let inc = self.incident(&id)?;
        (inc.state.is_active() && within_window(inc.opened_at, group.window, now)).then_some(id)
    }

    /// Puts a grouped alert on its incident's timeline: the first of a batch gets an entry
    /// of its own; the batch's later ones are added to its `alert_ids`.
    pub(super) fn grouped_entry(
        &mut self,
        id: &str,
        alert: &v1::AlertReceived,
        signal: &Signal,
        group: &Group,
        now: Micros,
    ) {
        if let Some(&at) = self.group_entries.get(id) {
            let data = &mut self.decision.changeset.entries[at].data;
            if let Some(ids) = data["alert_ids"].as_array_mut() {
                ids.push(json!(alert.alert_id));
            }
            return;
        }
        let data = json!({
            "alert_ids": [alert.alert_id],
            "dedup_key": signal.dedup_key,
            "rule": group.rule,
            "group": describe(group),
        });
        self.group_entries
            .insert(id.to_owned(), self.decision.changeset.entries.len());
        self.entry(id, "grouped", "triage", data, now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use firebreak_domain::Taxonomy;
    use firebreak_domain::grouping::GroupRuleSpec;
    use firebreak_storage::{IncidentRecord, NewIncident, TriageSnapshot};

    use super::*;
    use crate::decide::{Context, Decision, Lifecycle, decide};

    const NOW: Micros = Micros::from_unix_micros(1_800_000_000_000_000);

    fn rules(specs: &[(&str, &[&str], &[&str], &str)]) -> Grouping {
        let specs: Vec<GroupRuleSpec> = specs
            .iter()
            .map(|(name, matchers, group_by, window)| GroupRuleSpec {
                name: (*name).into(),
                integration: None,
                matchers: matchers.iter().map(|m| (*m).to_owned()).collect(),
                group_by: group_by.iter().map(|g| (*g).to_owned()).collect(),
                window: (*window).into(),
            })
            .collect();
        Grouping::compile(&specs).unwrap()
    }

    fn by_service() -> Grouping {
        rules(&[("by-service", &[], &["service"], "5m")])
    }

    /// An alert from `host` of `service` (no service: `None`), with its own dedup key.
    fn alert(alert_id: &str, host: &str, service: Option<&str>) -> Input {
        let mut labels = std::collections::HashMap::from([("host".into(), host.into())]);
        if let Some(s) = service {
            labels.insert("service".into(), s.into());
        }
        Input::alert(
            v1::AlertReceived {
                alert_id: alert_id.into(),
                title: "disk full".into(),
                source: "test".into(),
                dedup_key: format!("disk/{host}"),
                labels,
                integration: "prom".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap()
    }

    /// An active incident of `group`, opened `ago`, with the dedup key `disk/a`.
    fn group_incident(group: &str, ago: Duration) -> IncidentRecord {
        let mut i = IncidentRecord::from(NewIncident {
            id: "01900000-0000-7000-8000-000000000001".into(),
            title: "disk full".into(),
            description: String::new(),
            category: "uncategorized".into(),
            severity: 3,
            priority: 3,
            urgency: firebreak_domain::Urgency::Medium,
            dedup_key: "disk/a".into(),
            labels: Default::default(),
            source: "test".into(),
            integration: "prom".into(),
            opened_at: NOW - ago,
        });
        i.group_key = group.into();
        i
    }

    fn key_of(grouping: &Grouping, service: &str) -> String {
        let labels = [("service".to_owned(), service.to_owned())].into();
        grouping.group_of("prom", &labels).unwrap().key
    }

    fn run(grouping: &Grouping, snap: &TriageSnapshot, inputs: &[Input]) -> Decision {
        let taxonomy = Taxonomy::default();
        let mut n = 100;
        let mut new_id = || {
            n += 1;
            format!("01900000-0000-7000-8000-{n:012}")
        };
        decide(
            snap,
            inputs,
            &mut Context {
                taxonomy: &taxonomy,
                lifecycle: &Lifecycle::default(),
                grouping,
                now: NOW,
                new_id: &mut new_id,
            },
        )
        .unwrap()
    }

    /// A snapshot where the group of `service=api` has an incident opened `ago`.
    fn grouped_since(grouping: &Grouping, ago: Duration) -> TriageSnapshot {
        let mut snap = TriageSnapshot::default();
        let key = key_of(grouping, "api");
        snap.grouped.insert(key.clone(), group_incident(&key, ago));
        snap
    }

    fn kinds(d: &Decision) -> Vec<&str> {
        d.changeset
            .entries
            .iter()
            .map(|e| e.kind.as_str())
            .collect()
    }

    #[test]
    fn a_related_alert_inside_the_window_joins_the_groups_incident() {
        let g = by_service();
        let snap = grouped_since(&g, Duration::from_secs(299));
        let d = run(&g, &snap, &[alert("b1", "b", Some("api"))]);
        let joined = &d.ingested[0];
        assert_eq!(joined.incident_id, "01900000-0000-7000-8000-000000000001");
        assert!(joined.deduplicated);
        assert_eq!(joined.grouped_by.as_deref(), Some("by-service"));
        assert!(d.changeset.inserts.is_empty());
        assert_eq!(d.changeset.updates[0].record.alert_count, 2);
        assert_eq!(d.changeset.links[0].alert_id, "b1");
        assert_eq!(d.changeset.links[0].grouped_by, "by-service");
        assert_eq!(kinds(&d), ["grouped", "alert_attached"]);
        let data = &d.changeset.entries[0].data;
        assert_eq!(data["rule"], "by-service");
        assert_eq!(data["group"]["labels"], json!({ "service": "api" }));
        assert_eq!(data["dedup_key"], "disk/b");
        assert_eq!(data["alert_ids"], json!(["b1"]));
        // Asked again (the alerts event after the direct call), the answer is the same:
        // the attachment keeps the rule.
        let mut again = snap.clone();
        again
            .links
            .insert("b1".into(), d.changeset.links[0].clone());
        let d = run(&g, &again, &[alert("b1", "b", Some("api"))]);
        assert!(d.changeset.is_empty());
        assert!(d.ingested[0].before && d.ingested[0].deduplicated);
        assert_eq!(d.ingested[0].grouped_by.as_deref(), Some("by-service"));
    }

    /// At the window's end, and after it, the alert opens an incident of its own, which
    /// carries the group key (later related alerts join it).
    #[test]
    fn at_and_after_the_windows_end_a_new_incident_opens_for_the_group() {
        let g = by_service();
        for ago in [Duration::from_secs(300), Duration::from_secs(301)] {
            let d = run(
                &g,
                &grouped_since(&g, ago),
                &[alert("b1", "b", Some("api"))],
            );
            assert!(!d.ingested[0].deduplicated, "{ago:?}");
            assert_eq!(d.ingested[0].grouped_by, None);
            let opened = &d.changeset.inserts[0];
            assert_eq!(opened.group_key, key_of(&g, "api"));
            assert_eq!(opened.dedup_key, "disk/b");
            assert_eq!(kinds(&d), ["opened", "categorized", "prioritized"]);
            assert_eq!(d.changeset.entries[0].data["group"]["rule"], "by-service");
        }
    }

    /// A batch's first alert opens the group's incident, the rest join it: one `grouped`
    /// entry lists them. Another service's alert opens its own.
    #[test]
    fn in_one_batch_the_first_alert_opens_the_group_and_the_rest_join() {
        let g = by_service();
        let d = run(
            &g,
            &TriageSnapshot::default(),
            &[
                alert("a1", "a", Some("api")),
                alert("b1", "b", Some("api")),
                alert("c1", "c", Some("api")),
                alert("w1", "w", Some("web")),
            ],
        );
        assert_eq!(d.changeset.inserts.len(), 2);
        let first = d.ingested[0].incident_id.clone();
        assert_eq!(d.ingested[1].incident_id, first);
        assert_eq!(d.ingested[2].incident_id, first);
        assert_ne!(d.ingested[3].incident_id, first);
        let grouped: Vec<_> = d
            .changeset
            .entries
            .iter()
            .filter(|e| e.kind == "grouped")
            .collect();
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].data["alert_ids"], json!(["b1", "c1"]));
        assert_eq!(d.changeset.inserts[0].alert_count, 3);
    }

    /// The dedup key wins: an alert whose key has an active incident joins it, not the
    /// group's (and says nothing of a group).
    #[test]
    fn the_dedup_key_wins_over_the_group() {
        let g = by_service();
        let mut snap = grouped_since(&g, Duration::from_secs(10));
        let mut own = group_incident("", Duration::from_secs(3600));
        own.id = "01900000-0000-7000-8000-000000000002".into();
        own.dedup_key = "disk/b".into();
        snap.active.insert("disk/b".into(), own.clone());
        let d = run(&g, &snap, &[alert("b2", "b", Some("api"))]);
        assert_eq!(d.ingested[0].incident_id, own.id);
        assert_eq!(d.ingested[0].grouped_by, None);
        assert_eq!(kinds(&d), ["alert_attached"]);
    }

    /// Without the `group_by` label an alert is not grouped (and its incident has no group
    /// key); nor is one no rule's matchers accept; without rules nothing is grouped.
    #[test]
    fn a_missing_label_a_refusing_matcher_or_no_rules_leave_the_alert_ungrouped() {
        let g = by_service();
        let snap = grouped_since(&g, Duration::from_secs(10));
        let d = run(&g, &snap, &[alert("x1", "b", None)]);
        assert!(!d.ingested[0].deduplicated);
        assert_eq!(d.changeset.inserts[0].group_key, "");
        let prod = rules(&[("prod", &["env=prod"], &["service"], "5m")]);
        let labels = [
            ("service".to_owned(), "api".to_owned()),
            ("env".to_owned(), "prod".to_owned()),
        ]
        .into();
        let key = prod.group_of("prom", &labels).unwrap().key;
        let mut snap = TriageSnapshot::default();
        snap.grouped
            .insert(key.clone(), group_incident(&key, Duration::from_secs(10)));
        let d = run(&prod, &snap, &[alert("x1", "b", Some("api"))]);
        assert!(!d.ingested[0].deduplicated, "no env=prod label");
        let d = run(
            &Grouping::default(),
            &snap,
            &[alert("x1", "b", Some("api"))],
        );
        assert!(!d.ingested[0].deduplicated);
        assert_eq!(d.changeset.inserts[0].group_key, "");
    }

    /// The first rule that applies names the group, so its window is the one that counts.
    #[test]
    fn the_first_rule_that_applies_decides_the_group_and_its_window() {
        let g = rules(&[
            ("short", &["host=~\"[ab]\""], &["service"], "10s"),
            ("long", &[], &["service"], "1h"),
        ]);
        let key = key_of(&g, "api");
        assert!(key.starts_with("group/long:"), "no host label: {key}");
        let mut snap = TriageSnapshot::default();
        let labels = [
            ("service".to_owned(), "api".to_owned()),
            ("host".to_owned(), "a".to_owned()),
        ]
        .into();
        let short = g.group_of("prom", &labels).unwrap().key;
        assert!(short.starts_with("group/short:"));
        snap.grouped.insert(
            short.clone(),
            group_incident(&short, Duration::from_secs(60)),
        );
        // Host b falls under `short`, whose 10 s window has passed: a new incident.
        let d = run(&g, &snap, &[alert("b1", "b", Some("api"))]);
        assert!(!d.ingested[0].deduplicated);
        assert_eq!(d.changeset.inserts[0].group_key, short);
        // Host c falls under `long`: its own group, none yet.
        let d = run(&g, &snap, &[alert("c1", "c", Some("api"))]);
        assert_eq!(d.changeset.inserts[0].group_key, key);
    }

    #[test]
    fn the_snapshot_asks_for_each_alerts_group_once() {
        let g = by_service();
        let inputs = [
            alert("a1", "a", Some("api")),
            alert("b1", "b", Some("api")),
            alert("w1", "a", Some("web")),
            alert("x1", "a", None),
        ];
        let mut expected = vec![key_of(&g, "api"), key_of(&g, "web")];
        expected.sort();
        assert_eq!(group_keys(&inputs, &g), expected);
        assert!(group_keys(&inputs, &Grouping::default()).is_empty());
    }
}
