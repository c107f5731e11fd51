//! The post-incident review's people-written parts: follow-up action items and the summary.
//! The rules, decided from the incident and its follow-ups as they stand: a follow-up has a
//! title (one line, 1-512 bytes), an owner (a person's name, as roles take), an optional due
//! date (`YYYY-MM-DD`, not before the day the incident opened) and a state (open or done,
//! either way round); an incident has at most [`MAX_FOLLOW_UPS`], numbered from 1; a
//! change that changes nothing writes nothing; an incident merged into another takes
//! neither (its review is the other's). Each change is a timeline entry: `follow_up_added`,
//! `follow_up_changed` (the fields changed, with what they were), `summary_edited`; and is
//! announced as `review_changed` (the incident itself does not change).
//!
//! Also here: the review's facts folded from the timeline (status updates, runbook runs,
//! the latest summary), shared by the draft stored at resolve and the review rendered on
//! request.

use firebreak_domain::access::parse_name;
use firebreak_domain::follow_up::{
    FollowUpState, MAX_FOLLOW_UPS, due_date, follow_up_title, format_date, overdue, review_summary,
};
use firebreak_domain::{
    Micros, ReviewFollowUp, ReviewInput, ReviewRun, ReviewSection, ReviewStatusUpdate, TimelineItem,
};
use firebreak_storage::{FollowUpRecord, FollowUpWrite, IncidentRecord, TimelineRecord};
use serde_json::{Map, Value, json};

use super::{Change, Work, first_page, roles, summarize};
use crate::Error;

/// A person's change to an incident's follow-ups, as given (checked by [`Work::follow_up`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FollowUpChange {
    Add {
        title: String,
        owner: String,
        /// `YYYY-MM-DD`; empty: no due date.
        due: String,
    },
    /// `None`: left as it is.
    Update {
        number: u32,
        title: Option<String>,
        owner: Option<String>,
        /// `Some("")` clears the due date.
        due: Option<String>,
        state: Option<FollowUpState>,
    },
}

/// The due date given: empty is none.
fn due_of(given: &str, inc: &IncidentRecord) -> Result<Option<time::Date>, Error> {
    Ok(match given.trim() {
        "" => None,
        d => Some(due_date(d, inc.opened_at.timestamp())?),
    })
}

/// Refuses an incident merged into another: its follow-ups and summary belong there.
fn not_merged(inc: &IncidentRecord) -> Result<(), Error> {
    if inc.merged_into.is_empty() {
        return Ok(());
    }
    Err(firebreak_domain::Error::Invalid {
        field: "id",
        reason: format!(
            "incident {} was merged into {}: its review is that one's",
            inc.id, inc.merged_into
        ),
    }
    .into())
}

impl Work<'_> {
    /// The follow-ups of `id` as this batch left them (the snapshot's, then this batch's
    /// changes).
    fn follow_ups_of(&mut self, id: &str) -> Vec<FollowUpRecord> {
        if let Some(list) = self.follow_ups.get(id) {
            return list.clone();
        }
        let stored = self.snap.follow_ups.get(id).cloned().unwrap_or_default();
        self.follow_ups.insert(id.to_owned(), stored.clone());
        stored
    }

    /// A follow-up added or changed by `actor`; returns it as it then stands, changed or not.
    pub(super) fn follow_up(
        &mut self,
        id: &str,
        actor: &str,
        change: &FollowUpChange,
        now: Micros,
    ) -> Result<FollowUpRecord, Error> {
        firebreak_domain::IncidentId::parse(id)?;
        let inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        not_merged(&inc)?;
        let mut list = self.follow_ups_of(id);
        let (record, insert, kind, data) = match change {
            FollowUpChange::Add { title, owner, due } => {
                let title = follow_up_title(title)?;
                let owner = parse_name("owner", owner.trim())?;
                let due = due_of(due, &inc)?;
                if list.len() >= MAX_FOLLOW_UPS {
                    return Err(firebreak_domain::Error::Invalid {
                        field: "follow_ups",
                        reason: format!("an incident has at most {MAX_FOLLOW_UPS}"),
                    }
                    .into());
                }
                let number = list.iter().map(|f| f.number).max().unwrap_or(0) + 1;
                let f = FollowUpRecord {
                    incident_id: id.to_owned(),
                    number,
                    title,
                    owner,
                    due,
                    state: FollowUpState::Open,
                    created_at: now,
                    created_by: actor.to_owned(),
                    updated_at: now,
                };
                let data = json!({
                    "follow_up": number,
                    "title": f.title,
                    "owner": f.owner,
                    "due": f.due.map(format_date),
                    "state": f.state.as_str(),
                });
                (f, true, "follow_up_added", data)
            }
            FollowUpChange::Update {
                number,
                title,
                owner,
                due,
                state,
            } => {
                if title.is_none() && owner.is_none() && due.is_none() && state.is_none() {
                    return Err(firebreak_domain::Error::Invalid {
                        field: "update",
                        reason: "names nothing to change (title, owner, due or state)".into(),
                    }
                    .into());
                }
                let was = list
                    .iter()
                    .find(|f| f.number == *number)
                    .cloned()
                    .ok_or_else(|| Error::FollowUpNotFound {
                        incident: id.to_owned(),
                        number: *number,
                    })?;
                let mut f = was.clone();
                if let Some(t) = title {
                    f.title = follow_up_title(t)?;
                }
                if let Some(o) = owner {
                    f.owner = parse_name("owner", o.trim())?;
                }
                if let Some(d) = due {
                    f.due = due_of(d, &inc)?;
                }
                if let Some(s) = state {
                    f.state = *s;
                }
                let (mut to, mut from) = (Map::new(), Map::new());
                let mut differ = |field: &str, old: Value, new: Value| {
                    if old != new {
                        from.insert(field.to_owned(), old);
                        to.insert(field.to_owned(), new);
                    }
                };
                differ("title", json!(was.title), json!(f.title));
                differ("owner", json!(was.owner), json!(f.owner));
                differ(
                    "due",
                    json!(was.due.map(format_date)),
                    json!(f.due.map(format_date)),
                );
                differ("state", json!(was.state.as_str()), json!(f.state.as_str()));
                if to.is_empty() {
                    return Ok(was);
                }
                f.updated_at = now;
                let mut data = to;
                data.insert("follow_up".into(), json!(number));
                data.insert("from".into(), Value::Object(from));
                (f, false, "follow_up_changed", Value::Object(data))
            }
        };
        self.entry(id, kind, actor, data, now);
        self.announce(Change::ReviewChanged, inc, actor, None);
        match list.iter_mut().find(|f| f.number == record.number) {
            Some(f) => *f = record.clone(),
            None => list.push(record.clone()),
        }
        self.follow_ups.insert(id.to_owned(), list);
        self.decision.changeset.follow_ups.push(FollowUpWrite {
            record: record.clone(),
            insert,
        });
        Ok(record)
    }

    /// The review's summary set by `actor` (empty clears it): a `summary_edited` entry,
    /// which the review reads back (the latest one is the summary).
    pub(super) fn summary(
        &mut self,
        id: &str,
        actor: &str,
        text: &str,
        now: Micros,
    ) -> Result<(), Error> {
        firebreak_domain::IncidentId::parse(id)?;
        let summary = review_summary(text)?;
        let inc = self
            .incident(id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        not_merged(&inc)?;
        self.entry(
            id,
            "summary_edited",
            actor,
            json!({ "summary": summary }),
            now,
        );
        self.announce(Change::ReviewChanged, inc, actor, None);
        Ok(())
    }
}

/// The review's facts: the incident, and its timeline folded into roles, status updates,
/// runbook runs and the latest summary. The follow-ups are left empty and the template is
/// the built-in one; [`with_follow_ups`] adds the former.
pub(crate) fn review_input(inc: &IncidentRecord, timeline: &[TimelineRecord]) -> ReviewInput {
    ReviewInput {
        incident_id: inc.id.clone(),
        title: inc.title.clone(),
        category: inc.category.clone(),
        severity: inc.severity as u8,
        priority: inc.priority as u8,
        alert_count: inc.alert_count,
        opened_at: inc.opened_at.timestamp(),
        acknowledged_at: inc.acknowledged_at.map(Micros::timestamp),
        resolved_at: inc.resolved_at.map(Micros::timestamp),
        resolution_summary: inc.resolution_summary.clone(),
        root_cause: inc.root_cause.clone(),
        roles: roles::review_roles(inc, timeline),
        timeline: timeline
            .iter()
            .map(|t| TimelineItem {
                at: t.at.timestamp(),
                kind: t.kind.clone(),
                actor: t.actor.clone(),
                detail: summarize(&t.data),
            })
            .collect(),
        runs: runs(timeline),
        first_page: first_page(timeline),
        acknowledged_by: timeline.iter().find(|t| t.kind == "acknowledged").map(|t| {
            (
                t.actor.clone(),
                t.data["via"].as_str().unwrap_or_default().to_owned(),
            )
        }),
        mitigated_at: inc.mitigated_at.map(Micros::timestamp),
        closed_at: inc.closed_at.map(Micros::timestamp),
        merged_into: inc.merged_into.clone(),
        summary: timeline
            .iter()
            .rev()
            .find(|t| t.kind == "summary_edited")
            .and_then(|t| t.data["summary"].as_str())
            .unwrap_or_default()
            .to_owned(),
        status_updates: status_updates(timeline),
        follow_ups: Vec::new(),
        sections: firebreak_domain::default_review_template(),
    }
}

/// The review with its follow-ups (overdue as of `today`) and `template`'s sections.
pub(crate) fn with_follow_ups(
    mut review: ReviewInput,
    follow_ups: &[FollowUpRecord],
    template: &[ReviewSection],
    today: time::Date,
) -> ReviewInput {
    review.follow_ups = follow_ups
        .iter()
        .map(|f| ReviewFollowUp {
            number: f.number,
            title: f.title.clone(),
            owner: f.owner.clone(),
            due: f.due,
            state: f.state,
            overdue: overdue(f.state, f.due, today),
        })
        .collect();
    review.sections = template.to_vec();
    review
}

/// The status updates posted (`status_update` entries: `{"status", "message"}`).
fn status_updates(timeline: &[TimelineRecord]) -> Vec<ReviewStatusUpdate> {
    timeline
        .iter()
        .filter(|t| t.kind == "status_update")
        .map(|t| ReviewStatusUpdate {
            at: t.at.timestamp(),
            actor: t.actor.clone(),
            status: t.data["status"].as_str().unwrap_or_default().to_owned(),
            message: t.data["message"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// What each run did, from its `runbook_*` entries (one run per run id; entries naming none
/// are taken per runbook): its actions in order and where it got to.
fn runs(timeline: &[TimelineRecord]) -> Vec<ReviewRun> {
    let mut runs: Vec<ReviewRun> = Vec::new();
    for t in timeline.iter().filter(|t| t.kind.starts_with("runbook_")) {
        let name = t.data["runbook"].as_str().unwrap_or_default().to_owned();
        let run_id = t.data["run_id"].as_str().unwrap_or_default().to_owned();
        let idx = match runs
            .iter()
            .position(|r| r.run_id == run_id && (!run_id.is_empty() || r.runbook == name))
        {
            Some(i) => i,
            None => {
                runs.push(ReviewRun {
                    run_id,
                    runbook: name,
                    state: "running".into(),
                    live: t.data["live"].as_bool().unwrap_or(false),
                    actions: Vec::new(),
                });
                runs.len() - 1
            }
        };
        let run = &mut runs[idx];
        match t.kind.as_str() {
            "runbook_action" => {
                let a = &t.data["action"];
                run.actions.push(format!(
                    "`{}` {} → {}",
                    a["action"].as_str().unwrap_or("?"),
                    a["args"],
                    a["status"].as_str().unwrap_or("?")
                ));
            }
            "runbook_succeeded" => run.state = "succeeded".into(),
            "runbook_failed" => {
                run.state = format!("failed: {}", t.data["detail"].as_str().unwrap_or(""))
            }
            "runbook_waiting_approval" => run.state = "waiting for approval".into(),
            "runbook_plan_ready" => run.state = "plan ready, waiting for approval".into(),
            "runbook_approved" => run.state = "approved, running".into(),
            "runbook_rejected" => run.state = "rejected".into(),
            "runbook_sleeping" => run.state = "sleeping".into(),
            _ => {}
        }
    }
    runs
}
