//! Grouping and the default dedup key in the running stack: alerts from two hosts of one
//! service join one incident inside the grouping rule's window (both hosts' labels listed
//! on it) and open a new one once the window has passed; without a rule, or without the
//! `group_by` label, two hosts are two incidents (the default key holds the labels).

use std::time::Duration;

use firebreak_proto::v1;

use crate::harness::{Stack, empty_runbooks};

const RULES: &str = "grouping:
  rules:
  - name: by-service
    group_by: [service]
    window: 5m
";

/// Raises `disk full` from `host` (and `service`, if any) with no dedup key of its own.
async fn raise(s: &Stack, host: &str, service: Option<&str>) -> v1::RaiseIncidentResponse {
    let mut labels = vec![("host".to_owned(), host.to_owned())];
    labels.extend(service.map(|v| ("service".to_owned(), v.to_owned())));
    s.intake
        .clone()
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: "disk full".into(),
                source: "e2e".into(),
                labels: labels.into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn get(s: &Stack, id: &str) -> v1::Incident {
    s.incidents
        .clone()
        .get_incident(v1::GetIncidentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap()
}

/// The hosts of an incident's alerts, as `ListIncidentAlerts` gives them.
async fn hosts(s: &Stack, id: &str) -> Vec<String> {
    let listed = s
        .incidents
        .clone()
        .list_incident_alerts(v1::ListIncidentAlertsRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut hosts: Vec<String> = listed
        .alerts
        .iter()
        .map(|a| a.labels.get("host").cloned().unwrap_or_default())
        .collect();
    hosts.sort();
    hosts
}

async fn timeline(s: &Stack, id: &str) -> Vec<v1::TimelineEntry> {
    s.incidents
        .clone()
        .get_timeline(v1::GetTimelineRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn two_hosts_of_one_service_group_inside_the_window_and_not_after_it() {
    let s = Stack::start(&empty_runbooks(), RULES).await;
    let a = raise(&s, "a", Some("api")).await;
    assert!(!a.deduplicated && a.grouped_by.is_empty(), "{a:?}");
    let opened = get(&s, &a.incident_id).await;
    assert!(
        opened.group_key.starts_with("group/by-service:"),
        "{opened:?}"
    );

    // Host b, a minute later: its own dedup key, the same group: it joins, and says why.
    s.clock.advance(Duration::from_secs(60));
    let b = raise(&s, "b", Some("api")).await;
    assert_eq!(b.incident_id, a.incident_id);
    assert!(b.deduplicated);
    assert_eq!(b.grouped_by, "by-service");
    let inc = get(&s, &a.incident_id).await;
    assert_eq!(inc.alert_count, 2);
    assert_eq!(hosts(&s, &a.incident_id).await, ["a", "b"]);
    let entries = timeline(&s, &a.incident_id).await;
    let grouped: Vec<_> = entries.iter().filter(|e| e.kind == "grouped").collect();
    assert_eq!(grouped.len(), 1, "{entries:?}");
    let data: serde_json::Value = serde_json::from_str(&grouped[0].data).unwrap();
    assert_eq!(data["rule"], "by-service");
    assert_eq!(
        data["group"]["labels"],
        serde_json::json!({ "service": "api" })
    );
    assert_eq!(data["alert_ids"], serde_json::json!([b.alert_id]));

    // Another service is another group.
    let web = raise(&s, "a", Some("web")).await;
    assert_ne!(web.incident_id, a.incident_id);
    assert!(!web.deduplicated);

    // Five minutes after the group's incident opened, the window is over: host c opens a
    // new incident of the group; host a's own key still joins the first (the key wins).
    s.clock.advance(Duration::from_secs(240));
    let c = raise(&s, "c", Some("api")).await;
    assert_ne!(c.incident_id, a.incident_id);
    assert!(!c.deduplicated && c.grouped_by.is_empty(), "{c:?}");
    assert_eq!(get(&s, &c.incident_id).await.group_key, opened.group_key);
    assert_eq!(hosts(&s, &c.incident_id).await, ["c"]);
    // Host d, inside the new incident's window, joins that one.
    let d = raise(&s, "d", Some("api")).await;
    assert_eq!(
        (d.incident_id.as_str(), d.grouped_by.as_str()),
        (c.incident_id.as_str(), "by-service")
    );
    // The sender repeats host a's alert (same labels, same key): the first incident's alert,
    // counted as a repeat, not a new alert.
    let again = raise(&s, "a", Some("api")).await;
    assert_eq!(again.incident_id, a.incident_id);
    assert!(again.grouped_by.is_empty());
}

/// Without a rule (or without the rule's label), the default dedup key keeps hosts apart:
/// each is its incident with its labels, and the same host again joins its own.
#[tokio::test]
async fn without_grouping_two_hosts_are_two_incidents_by_the_default_key() {
    let s = Stack::start(&empty_runbooks(), RULES).await;
    let a = raise(&s, "a", None).await;
    let b = raise(&s, "b", None).await;
    assert_ne!(a.incident_id, b.incident_id);
    assert!(!b.deduplicated);
    assert_eq!(hosts(&s, &a.incident_id).await, ["a"]);
    assert_eq!(hosts(&s, &b.incident_id).await, ["b"]);
    assert_ne!(
        get(&s, &a.incident_id).await.dedup_key,
        get(&s, &b.incident_id).await.dedup_key
    );
    assert!(get(&s, &a.incident_id).await.group_key.is_empty());
    let again = raise(&s, "a", None).await;
    assert_eq!(again.incident_id, a.incident_id);
    assert!(again.deduplicated && again.grouped_by.is_empty());
}
