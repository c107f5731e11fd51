//! The CLI's post-incident review (`firebreak incident review|summary|follow-up`), over
//! triage's gRPC `IncidentService`: the review as Markdown or structured JSON, the summary,
//! and follow-up action items added, changed, marked done and listed (across incidents by
//! owner, open or overdue).

use clap::{Subcommand, ValueEnum};
use firebreak_proto::WireState as _;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{self, incident_service_client::IncidentServiceClient};
use serde_json::{Value, json};

use crate::cli_access::print_json;
use crate::output::{OutputFormat, rfc3339, say_raw, table, ts_json};

/// How `incident review` prints the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    /// The review document (the default).
    Markdown,
    /// The structured review: roles, durations, status updates, runs, follow-ups, summary.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum FollowUpCmd {
    /// Add a follow-up action item to incident ID; prints it with its number.
    Add {
        id: String,
        /// Who will do it (a person's name, as roles take it).
        #[arg(long)]
        owner: String,
        /// YYYY-MM-DD, not before the day the incident opened.
        #[arg(long, default_value = "")]
        due: String,
        /// What to do (one line, at most 512 bytes).
        title: String,
    },
    /// Mark follow-up NUMBER of incident ID done.
    Done { id: String, number: u32 },
    /// Open follow-up NUMBER of incident ID again.
    Reopen { id: String, number: u32 },
    /// Change follow-up NUMBER of incident ID: what is given changes, the rest stays.
    Edit {
        id: String,
        number: u32,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// YYYY-MM-DD; `none` removes the due date.
        #[arg(long)]
        due: Option<String>,
    },
    /// Follow-ups of incident ID, or of every incident; --owner, --open and --overdue narrow
    /// the list.
    List {
        id: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Only those still open.
        #[arg(long)]
        open: bool,
        /// Only those open past their due date.
        #[arg(long)]
        overdue: bool,
        /// At most this many (0: 100 per page, every page read).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

/// `incident review ID`: Markdown, or the structured review as JSON (`--format json`, or the
/// global `--output json`).
pub(crate) async fn review(
    channel: AuthedChannel,
    id: String,
    format: ReviewFormat,
    output: OutputFormat,
    status: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let r = IncidentServiceClient::new(channel)
        .get_review(v1::GetReviewRequest { id })
        .await
        .map_err(status)?
        .into_inner();
    if format == ReviewFormat::Json || matches!(output, OutputFormat::Json) {
        let mut v = review_json(&r.review.unwrap_or_default());
        v["generated_at"] = ts_json(r.generated_at.as_ref());
        print_json(v);
    } else {
        say_raw(&r.markdown);
    }
    Ok(())
}

/// `incident summary ID TEXT`: sets the review's summary.
pub(crate) async fn summary(
    channel: AuthedChannel,
    id: String,
    text: String,
    output: OutputFormat,
    status: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let r = IncidentServiceClient::new(channel)
        .set_review_summary(v1::SetReviewSummaryRequest { id, summary: text })
        .await
        .map_err(status)?
        .into_inner();
    let e = r.entry.unwrap_or_default();
    if matches!(output, OutputFormat::Json) {
        print_json(
            json!({ "incident_id": e.incident_id, "seq": e.seq, "at": ts_json(e.at.as_ref()) }),
        );
    } else {
        say_raw(&format!("summary of {} set\n", e.incident_id));
    }
    Ok(())
}

/// Runs a follow-up command against triage.
pub(crate) async fn follow_up(
    cmd: FollowUpCmd,
    channel: AuthedChannel,
    output: OutputFormat,
    status: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let json_out = matches!(output, OutputFormat::Json);
    let mut incidents = IncidentServiceClient::new(channel);
    let update = |id: String, number: u32| v1::UpdateFollowUpRequest {
        id,
        number,
        ..Default::default()
    };
    let changed = match cmd {
        FollowUpCmd::Add {
            id,
            owner,
            due,
            title,
        } => {
            incidents
                .add_follow_up(v1::AddFollowUpRequest {
                    id,
                    title,
                    owner,
                    due,
                })
                .await
                .map_err(status)?
                .into_inner()
                .follow_up
        }
        FollowUpCmd::Done { id, number } => {
            incidents
                .update_follow_up(v1::UpdateFollowUpRequest {
                    state: v1::FollowUpState::Done as i32,
                    ..update(id, number)
                })
                .await
                .map_err(status)?
                .into_inner()
                .follow_up
        }
        FollowUpCmd::Reopen { id, number } => {
            incidents
                .update_follow_up(v1::UpdateFollowUpRequest {
                    state: v1::FollowUpState::Open as i32,
                    ..update(id, number)
                })
                .await
                .map_err(status)?
                .into_inner()
                .follow_up
        }
        FollowUpCmd::Edit {
            id,
            number,
            title,
            owner,
            due,
        } => {
            let clear_due = due.as_deref() == Some("none");
            incidents
                .update_follow_up(v1::UpdateFollowUpRequest {
                    title: title.unwrap_or_default(),
                    owner: owner.unwrap_or_default(),
                    due: due.filter(|_| !clear_due).unwrap_or_default(),
                    clear_due,
                    ..update(id, number)
                })
                .await
                .map_err(status)?
                .into_inner()
                .follow_up
        }
        FollowUpCmd::List {
            id,
            owner,
            open,
            overdue,
            limit,
        } => {
            let mut listed = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = incidents
                    .list_follow_ups(v1::ListFollowUpsRequest {
                        id: id.clone().unwrap_or_default(),
                        owner: owner.clone().unwrap_or_default(),
                        state: if open {
                            v1::FollowUpState::Open as i32
                        } else {
                            0
                        },
                        overdue,
                        page_size: limit,
                        page_token,
                    })
                    .await
                    .map_err(&status)?
                    .into_inner();
                listed.extend(r.follow_ups);
                page_token = r.next_page_token;
                if page_token.is_empty() || limit > 0 {
                    break;
                }
            }
            if json_out {
                print_json(Value::Array(listed.iter().map(follow_up_json).collect()));
            } else {
                table(
                    &["incident", "#", "state", "owner", "due", "title"],
                    listed
                        .iter()
                        .map(|f| {
                            vec![
                                f.incident_id.clone(),
                                f.number.to_string(),
                                state_shown(f).into(),
                                f.owner.clone(),
                                if f.due.is_empty() {
                                    "-".into()
                                } else {
                                    f.due.clone()
                                },
                                f.title.clone(),
                            ]
                        })
                        .collect(),
                );
            }
            return Ok(());
        }
    };
    let f = changed.unwrap_or_default();
    if json_out {
        print_json(follow_up_json(&f));
    } else {
        let due = if f.due.is_empty() {
            String::new()
        } else {
            format!(", due {}", f.due)
        };
        say_raw(&format!(
            "{} #{} {} ({}{due}): {}\n",
            f.incident_id,
            f.number,
            state_shown(&f),
            f.owner,
            f.title
        ));
    }
    Ok(())
}

fn state_shown(f: &v1::FollowUp) -> &'static str {
    match (f.state(), f.overdue) {
        (_, true) => "overdue",
        (v1::FollowUpState::Open, false) => "open",
        (v1::FollowUpState::Done, false) => "done",
        (v1::FollowUpState::Unspecified, false) => "unknown",
    }
}

fn state_name(s: v1::FollowUpState) -> Value {
    match s {
        v1::FollowUpState::Open => json!("open"),
        v1::FollowUpState::Done => json!("done"),
        v1::FollowUpState::Unspecified => Value::Null,
    }
}

fn follow_up_json(f: &v1::FollowUp) -> Value {
    json!({
        "incident_id": f.incident_id, "number": f.number, "title": f.title, "owner": f.owner,
        "due": (!f.due.is_empty()).then_some(f.due.as_str()), "state": state_name(f.state()),
        "overdue": f.overdue, "created_at": ts_json(f.created_at.as_ref()),
        "created_by": (!f.created_by.is_empty()).then_some(f.created_by.as_str()),
        "updated_at": ts_json(f.updated_at.as_ref()),
    })
}

fn seconds(d: Option<&firebreak_proto::WireDuration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.seconds))
}

/// The structured review as JSON: times as RFC 3339, durations in whole seconds.
fn review_json(r: &v1::Review) -> Value {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    json!({
        "incident_id": r.incident_id, "title": r.title, "category": r.category,
        "severity": r.severity, "priority": r.priority, "alert_count": r.alert_count,
        "opened_at": ts_json(r.opened_at.as_ref()),
        "acknowledged_at": ts_json(r.acknowledged_at.as_ref()),
        "mitigated_at": ts_json(r.mitigated_at.as_ref()),
        "resolved_at": ts_json(r.resolved_at.as_ref()),
        "closed_at": ts_json(r.closed_at.as_ref()),
        "time_to_acknowledge_seconds": seconds(r.time_to_acknowledge.as_ref()),
        "time_to_mitigate_seconds": seconds(r.time_to_mitigate.as_ref()),
        "time_to_resolve_seconds": seconds(r.time_to_resolve.as_ref()),
        "summary": text(&r.summary), "resolution_summary": text(&r.resolution_summary),
        "root_cause": text(&r.root_cause), "merged_into": text(&r.merged_into),
        "acknowledged_by": text(&r.acknowledged_by),
        "roles": r.roles.iter().map(|h| json!({
            "role": h.role, "person": h.person, "from": rfc3339(h.from.as_ref()),
            "until": rfc3339(h.until.as_ref()),
        })).collect::<Vec<_>>(),
        "status_updates": r.status_updates.iter().map(|u| json!({
            "at": rfc3339(u.at.as_ref()), "actor": u.actor,
            "status": firebreak_domain::UpdateStatus::from_wire(u.update_status).map(|s| s.as_str()),
            "message": u.message,
        })).collect::<Vec<_>>(),
        "runs": r.runs.iter().map(|run| json!({
            "run_id": run.run_id, "runbook": run.runbook,
            "state": firebreak_domain::RunState::from_wire(run.run_state).map(|s| s.as_str()),
            "live": run.live,
            "actions": run.actions,
        })).collect::<Vec<_>>(),
        "follow_ups": r.follow_ups.iter().map(|f| json!({
            "number": f.number, "title": f.title, "owner": f.owner,
            "due": (!f.due.is_empty()).then_some(f.due.as_str()),
            "state": state_name(f.state()), "overdue": f.overdue,
        })).collect::<Vec<_>>(),
        "sections": r.sections.iter().map(|s| json!({
            "heading": s.heading, "prompt": s.prompt,
        })).collect::<Vec<_>>(),
        "truncated": r.truncated,
    })
}
