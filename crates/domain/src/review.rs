//! The post-incident review draft: Markdown generated from the incident and its timeline.

use std::fmt::Write;

use crate::Timestamp;

/// What the draft is made from.
#[derive(Debug, Clone)]
pub struct ReviewInput {
    pub incident_id: String,
    pub title: String,
    pub category: String,
    pub severity: u8,
    pub priority: u8,
    pub alert_count: u32,
    pub opened_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub resolution_summary: String,
    /// Empty until a person records it at close.
    pub root_cause: String,
    /// Who held which incident role, in the order they took it.
    pub roles: Vec<ReviewRole>,
    pub timeline: Vec<TimelineItem>,
    pub runs: Vec<ReviewRun>,
    /// The first page that reached a person: time to acknowledge counts from it too.
    pub first_page: Option<FirstPage>,
    /// Who acknowledged, and from where (`slack`, `sms`, `link`; empty: the CLI or API).
    pub acknowledged_by: Option<(String, String)>,
}

/// The first page handed to a person's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstPage {
    pub at: Timestamp,
    pub user: String,
    /// The channel it went through.
    pub channel: String,
}

/// One timeline entry, as the review shows it.
#[derive(Debug, Clone)]
pub struct TimelineItem {
    pub at: Timestamp,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

/// A person's time in an incident role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRole {
    pub role: String,
    pub person: String,
    pub from: Timestamp,
    /// When they handed it off or it was taken from them; `None`: they hold it still.
    pub until: Option<Timestamp>,
}

/// One runbook run and the actions it journaled.
#[derive(Debug, Clone)]
pub struct ReviewRun {
    pub runbook: String,
    pub state: String,
    pub live: bool,
    /// `action: summary` lines.
    pub actions: Vec<String>,
}

/// Renders the draft. Root cause and follow-ups are left for people to fill in.
pub fn review_markdown(r: &ReviewInput) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Post-incident review: {}\n", r.title);
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "- Incident: `{}`", r.incident_id);
    let _ = writeln!(
        md,
        "- Category: {}; severity SEV{}; priority P{}",
        r.category, r.severity, r.priority
    );
    let _ = writeln!(md, "- Alerts: {}", r.alert_count);
    let _ = writeln!(md, "- Opened: {}", rfc3339(r.opened_at));
    let _ = writeln!(
        md,
        "- Time to acknowledge: {}",
        duration_between(r.opened_at, r.acknowledged_at)
    );
    if let Some(p) = &r.first_page {
        let _ = writeln!(
            md,
            "- Time to acknowledge from the first page ({} through {} at {}): {}",
            p.user,
            p.channel,
            rfc3339(p.at),
            duration_between(p.at, r.acknowledged_at)
        );
    }
    if let Some((who, via)) = &r.acknowledged_by {
        let via = if via.is_empty() {
            "the CLI or API"
        } else {
            via
        };
        let _ = writeln!(md, "- Acknowledged by {who} from {via}");
    }
    let _ = writeln!(
        md,
        "- Time to resolve: {}",
        duration_between(r.opened_at, r.resolved_at)
    );
    if !r.resolution_summary.is_empty() {
        let _ = writeln!(md, "- Resolution: {}", r.resolution_summary);
    }
    let _ = writeln!(md, "\n## Roles\n");
    if r.roles.is_empty() {
        let _ = writeln!(md, "No roles were assigned.");
    } else {
        let _ = writeln!(
            md,
            "| role | who | from | until |\n| --- | --- | --- | --- |"
        );
    }
    for held in &r.roles {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            cell(&held.role),
            cell(&held.person),
            rfc3339(held.from),
            held.until.map_or_else(|| "holds it".into(), rfc3339)
        );
    }
    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(
        md,
        "| at | what | who | detail |\n| --- | --- | --- | --- |"
    );
    for item in &r.timeline {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            rfc3339(item.at),
            item.kind,
            item.actor,
            cell(&item.detail)
        );
    }
    let _ = writeln!(md, "\n## Runbook actions\n");
    if r.runs.is_empty() {
        let _ = writeln!(md, "No runbook ran.");
    }
    for run in &r.runs {
        let mode = if run.live { "live" } else { "dry run" };
        let _ = writeln!(md, "### {} ({}, {mode})\n", run.runbook, run.state);
        if run.actions.is_empty() {
            let _ = writeln!(md, "No actions.");
        }
        for action in &run.actions {
            let _ = writeln!(md, "1. {action}");
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\n## Root cause\n\n{}\n\n## Follow-up items\n\n- [ ] _Add follow-ups._",
        if r.root_cause.is_empty() {
            "_To be written by the incident commander._"
        } else {
            &r.root_cause
        }
    );
    md
}

/// Text as one table cell: its bars escaped, its lines joined.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn rfc3339(t: Timestamp) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn duration_between(start: Timestamp, end: Option<Timestamp>) -> String {
    let Some(end) = end else {
        return "not reached".into();
    };
    let secs = (end - start).whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_has_every_section_and_the_durations() {
        let opened = time::macros::datetime!(2026-11-28 10:00 UTC);
        let md = review_markdown(&ReviewInput {
            incident_id: "abc".into(),
            title: "API down".into(),
            category: "service-outage".into(),
            severity: 1,
            priority: 1,
            alert_count: 3,
            opened_at: opened,
            acknowledged_at: Some(opened + time::Duration::seconds(90)),
            resolved_at: Some(opened + time::Duration::seconds(3 * 3600 + 120)),
            resolution_summary: "rolled back".into(),
            root_cause: String::new(),
            roles: vec![
                ReviewRole {
                    role: "commander".into(),
                    person: "alice".into(),
                    from: opened,
                    until: Some(opened + time::Duration::seconds(60)),
                },
                ReviewRole {
                    role: "commander".into(),
                    person: "bob".into(),
                    from: opened + time::Duration::seconds(60),
                    until: None,
                },
            ],
            timeline: vec![TimelineItem {
                at: opened,
                kind: "opened".into(),
                actor: "triage".into(),
                detail: "a|b".into(),
            }],
            runs: vec![ReviewRun {
                runbook: "service-outage".into(),
                state: "succeeded".into(),
                live: false,
                actions: vec!["http.post: simulated".into()],
            }],
            first_page: Some(FirstPage {
                at: opened + time::Duration::seconds(30),
                user: "amy".into(),
                channel: "email".into(),
            }),
            acknowledged_by: Some(("user:amy".into(), "slack".into())),
        });
        for want in [
            "# Post-incident review: API down",
            "Time to acknowledge: 1m 30s",
            "Time to acknowledge from the first page (amy through email at 2026-11-28T10:00:30Z): 1m 0s",
            "Acknowledged by user:amy from slack",
            "Time to resolve: 3h 2m",
            "| opened | triage | a\\|b |",
            "## Roles",
            "| commander | alice | 2026-11-28T10:00:00Z | 2026-11-28T10:01:00Z |",
            "| commander | bob | 2026-11-28T10:01:00Z | holds it |",
            "### service-outage (succeeded, dry run)",
            "1. http.post: simulated",
            "## Root cause",
            "## Follow-up items",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
    }
}
