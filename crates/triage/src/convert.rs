//! Conversions between triage's records and the protobuf contracts.

use firebreak_proto::{WireState, v1};
use firebreak_storage::{IncidentAlertRecord, IncidentRecord, TimelineRecord};

pub(crate) fn incident_to_proto(i: &IncidentRecord) -> v1::Incident {
    v1::Incident {
        id: i.id.clone(),
        title: i.title.clone(),
        description: i.description.clone(),
        category: i.category.clone(),
        severity: firebreak_proto::wire_level(i.severity),
        priority: firebreak_proto::wire_level(i.priority),
        state: i.state.wire(),
        state_name: i.state.as_str().to_owned(),
        dedup_key: i.dedup_key.clone(),
        alert_count: i.alert_count,
        labels: i.labels.clone().into_iter().collect(),
        source: i.source.clone(),
        integration: i.integration.clone(),
        opened_at: Some(firebreak_proto::timestamp(i.opened_at)),
        acknowledged_at: i.acknowledged_at.map(firebreak_proto::timestamp),
        resolved_at: i.resolved_at.map(firebreak_proto::timestamp),
        closed_at: i.closed_at.map(firebreak_proto::timestamp),
        mitigated_at: i.mitigated_at.map(firebreak_proto::timestamp),
        merged_into: i.merged_into.clone(),
        resolution_summary: i.resolution_summary.clone(),
        root_cause: i.root_cause.clone(),
        roles: i
            .roles
            .iter()
            .map(|r| v1::Assignment {
                role: r.role.clone(),
                person: r.person.clone(),
                assigned_at: Some(firebreak_proto::timestamp(r.assigned_at)),
                assigned_by: r.assigned_by.clone(),
            })
            .collect(),
        last_status_update: i.last_status_update.as_ref().map(Into::into),
    }
}

pub(crate) fn entry_to_proto(e: &TimelineRecord) -> v1::TimelineEntry {
    v1::TimelineEntry {
        seq: e.seq,
        incident_id: e.incident_id.clone(),
        kind: e.kind.clone(),
        at: Some(firebreak_proto::timestamp(e.at)),
        actor: e.actor.clone(),
        data: e.data.to_string(),
    }
}

pub(crate) fn alert_to_proto(a: &IncidentAlertRecord) -> v1::IncidentAlert {
    v1::IncidentAlert {
        alert_id: a.alert_id.clone(),
        title: a.title.clone(),
        labels: a.labels.clone().into_iter().collect(),
        status: if a.resolved {
            v1::AlertStatus::Resolved
        } else {
            v1::AlertStatus::Firing
        } as i32,
        fired: a.repeats.saturating_add(1),
        first_seen: Some(firebreak_proto::timestamp(a.first_seen)),
        last_seen: Some(firebreak_proto::timestamp(a.last_seen)),
        resolved_at: a.resolved_at.map(firebreak_proto::timestamp),
        opened: a.opened,
    }
}
