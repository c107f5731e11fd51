//! Conversions between triage's records and the protobuf contracts.

use firebreak_proto::{WireState, v1};
use firebreak_storage::{IncidentRecord, TimelineRecord};

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
