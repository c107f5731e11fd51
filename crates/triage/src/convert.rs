//! Conversions between triage's records and the protobuf contracts.

use firebreak_domain::follow_up::{FollowUpState, format_date, overdue};
use firebreak_domain::{Micros, ReviewInput};
use firebreak_proto::{WireState, v1};
use firebreak_storage::{FollowUpRecord, IncidentAlertRecord, IncidentRecord, TimelineRecord};

use crate::limits::MAX_PAGE_BYTES;

use crate::Lifecycle;

/// The incident on the wire; `policy` says whether it needs a commander.
pub(crate) fn incident_to_proto(i: &IncidentRecord, policy: &Lifecycle) -> v1::Incident {
    v1::Incident {
        needs_commander: policy.needs_commander(i),
        id: i.id.clone(),
        title: i.title.clone(),
        description: i.description.clone(),
        category: i.category.clone(),
        severity: firebreak_proto::wire_level(i.severity),
        priority: firebreak_proto::wire_level(i.priority),
        state: i.state.wire(),
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
        group_key: i.group_key.clone(),
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

/// A follow-up state on the wire.
pub(crate) fn follow_up_state_to_proto(s: FollowUpState) -> v1::FollowUpState {
    match s {
        FollowUpState::Open => v1::FollowUpState::Open,
        FollowUpState::Done => v1::FollowUpState::Done,
    }
}

/// A follow-up state from the wire: `None` when unspecified; a value the contract does not
/// have is refused naming `state`.
pub(crate) fn follow_up_state(
    value: i32,
) -> Result<Option<FollowUpState>, firebreak_domain::Error> {
    match v1::FollowUpState::try_from(value) {
        Ok(v1::FollowUpState::Unspecified) => Ok(None),
        Ok(v1::FollowUpState::Open) => Ok(Some(FollowUpState::Open)),
        Ok(v1::FollowUpState::Done) => Ok(Some(FollowUpState::Done)),
        Err(_) => Err(firebreak_domain::Error::Invalid {
            field: "state",
            reason: format!("{value} is not a follow-up state (open or done)"),
        }),
    }
}

/// A stored follow-up on the wire, overdue as of `today`.
pub(crate) fn follow_up_to_proto(f: &FollowUpRecord, today: time::Date) -> v1::FollowUp {
    v1::FollowUp {
        incident_id: f.incident_id.clone(),
        number: f.number,
        title: f.title.clone(),
        owner: f.owner.clone(),
        due: f.due.map(format_date).unwrap_or_default(),
        state: follow_up_state_to_proto(f.state) as i32,
        created_at: Some(firebreak_proto::timestamp(f.created_at)),
        created_by: f.created_by.clone(),
        updated_at: Some(firebreak_proto::timestamp(f.updated_at)),
        overdue: overdue(f.state, f.due, today),
    }
}

/// The most bytes of status updates, and of runbook actions, a structured review carries:
/// a flood of either is cut (`truncated`: the newest updates and the first actions kept), so
/// with the Markdown's 1 MiB the answer stays well under gRPC's 4 MiB message limit.
const MAX_REVIEW_PART_BYTES: usize = 512 * 1024;

fn wire_time(t: firebreak_domain::Timestamp) -> firebreak_proto::Timestamp {
    firebreak_proto::timestamp(Micros::from_unix_micros(
        i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX),
    ))
}

/// The review, structured, for the wire.
pub(crate) fn review_to_proto(r: &ReviewInput) -> v1::Review {
    let [tta, ttm, ttr] = r
        .durations()
        .map(|d| d.map(|d| firebreak_proto::duration(d.unsigned_abs())));
    // The newest updates that fit.
    let mut bytes = 0;
    let kept = r
        .status_updates
        .iter()
        .rev()
        .take_while(|u| {
            bytes += u.actor.len() + u.status.len() + u.message.len() + 32;
            bytes <= MAX_REVIEW_PART_BYTES
        })
        .count();
    let skipped = r.status_updates.len() - kept;
    let mut truncated = skipped > 0;
    let mut action_bytes = 0;
    v1::Review {
        incident_id: r.incident_id.clone(),
        title: r.title.clone(),
        category: r.category.clone(),
        severity: firebreak_proto::wire_level(u32::from(r.severity)),
        priority: firebreak_proto::wire_level(u32::from(r.priority)),
        alert_count: r.alert_count,
        opened_at: Some(wire_time(r.opened_at)),
        acknowledged_at: r.acknowledged_at.map(wire_time),
        mitigated_at: r.mitigated_at.map(wire_time),
        resolved_at: r.resolved_at.map(wire_time),
        closed_at: r.closed_at.map(wire_time),
        time_to_acknowledge: tta,
        time_to_mitigate: ttm,
        time_to_resolve: ttr,
        summary: r.summary.clone(),
        resolution_summary: r.resolution_summary.clone(),
        root_cause: r.root_cause.clone(),
        merged_into: r.merged_into.clone(),
        acknowledged_by: r
            .acknowledged_by
            .as_ref()
            .map(|(who, _)| who.clone())
            .unwrap_or_default(),
        roles: r
            .roles
            .iter()
            .map(|h| v1::ReviewRoleHeld {
                role: h.role.clone(),
                person: h.person.clone(),
                from: Some(wire_time(h.from)),
                until: h.until.map(wire_time),
            })
            .collect(),
        status_updates: r.status_updates[skipped..]
            .iter()
            .map(|u| v1::ReviewStatusUpdate {
                at: Some(wire_time(u.at)),
                actor: u.actor.clone(),
                // A status the review names that this build lacks is unspecified.
                update_status: u
                    .status
                    .parse::<firebreak_domain::UpdateStatus>()
                    .map_or(0, WireState::wire),
                message: u.message.clone(),
            })
            .collect(),
        runs: r
            .runs
            .iter()
            .map(|run| {
                let fit = run
                    .actions
                    .iter()
                    .take_while(|a| {
                        action_bytes += a.len() + 8;
                        action_bytes <= MAX_REVIEW_PART_BYTES
                    })
                    .count();
                truncated |= fit < run.actions.len();
                v1::ReviewRun {
                    run_id: run.run_id.clone(),
                    runbook: run.runbook.clone(),
                    run_state: run
                        .state
                        .parse::<firebreak_domain::RunState>()
                        .map_or(0, WireState::wire),
                    live: run.live,
                    actions: run.actions.iter().take(fit).cloned().collect(),
                }
            })
            .collect(),
        follow_ups: r
            .follow_ups
            .iter()
            .map(|f| v1::FollowUp {
                incident_id: r.incident_id.clone(),
                number: f.number,
                title: f.title.clone(),
                owner: f.owner.clone(),
                due: f.due.map(format_date).unwrap_or_default(),
                state: follow_up_state_to_proto(f.state) as i32,
                overdue: f.overdue,
                ..Default::default()
            })
            .collect(),
        sections: r
            .sections
            .iter()
            .map(|s| v1::ReviewSection {
                heading: s.heading.clone(),
                prompt: s.prompt.clone(),
            })
            .collect(),
        truncated,
    }
}

/// The review in Markdown, at most [`MAX_PAGE_BYTES`]: a flooded timeline must not make it
/// unreadable (gRPC's 4 MiB message limit).
pub(crate) fn review_markdown_bounded(r: &ReviewInput) -> String {
    crate::limits::clip(&firebreak_domain::review_markdown(r), MAX_PAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_domain::{ReviewRun, ReviewStatusUpdate};
    use firebreak_proto::Message;

    /// A review flooded with status updates and runbook actions still fits in a message:
    /// the newest updates and the first actions are kept, and it says so.
    #[test]
    fn a_flooded_review_is_cut_to_fit_and_says_so() {
        let at = time::macros::datetime!(2026-11-28 10:00 UTC);
        let big = "m".repeat(16 * 1024);
        let review = ReviewInput {
            incident_id: "i".into(),
            title: "t".into(),
            category: "c".into(),
            severity: 1,
            priority: 1,
            alert_count: 1,
            opened_at: at,
            acknowledged_at: None,
            resolved_at: None,
            resolution_summary: String::new(),
            root_cause: String::new(),
            roles: Vec::new(),
            timeline: Vec::new(),
            runs: vec![ReviewRun {
                run_id: "r-1".into(),
                runbook: "r".into(),
                state: "succeeded".into(),
                live: true,
                actions: (0..200).map(|n| format!("{n}:{big}")).collect(),
            }],
            first_page: None,
            acknowledged_by: None,
            mitigated_at: None,
            closed_at: None,
            merged_into: String::new(),
            summary: String::new(),
            status_updates: (0..500)
                .map(|n| ReviewStatusUpdate {
                    at,
                    actor: "user:a".into(),
                    status: "investigating".into(),
                    message: format!("{n}:{big}"),
                })
                .collect(),
            follow_ups: Vec::new(),
            sections: Vec::new(),
        };
        let wire = review_to_proto(&review);
        assert!(wire.truncated);
        assert!(
            wire.encoded_len() <= 2 * MAX_REVIEW_PART_BYTES + 4096,
            "{} bytes",
            wire.encoded_len()
        );
        assert!(
            wire.status_updates
                .last()
                .unwrap()
                .message
                .starts_with("499:")
        );
        assert!(wire.runs[0].actions[0].starts_with("0:"));
        // A small review is whole.
        let small = ReviewInput {
            status_updates: review.status_updates[..3].to_vec(),
            runs: vec![ReviewRun {
                actions: vec!["a".into()],
                ..review.runs[0].clone()
            }],
            ..review
        };
        let wire = review_to_proto(&small);
        assert!(!wire.truncated);
        assert_eq!(
            (wire.status_updates.len(), wire.runs[0].actions.len()),
            (3, 1)
        );
    }
}
