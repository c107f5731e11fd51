//! The post-incident review: what it is made of (the incident, its timeline folded into
//! roles, status updates and runbook runs, the follow-ups and the summary people wrote, the
//! template's sections) and its Markdown rendering.

use std::fmt::Write;

use crate::Timestamp;
use crate::follow_up::{FollowUpState, format_date};

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
    pub mitigated_at: Option<Timestamp>,
    pub closed_at: Option<Timestamp>,
    /// The incident it was merged into (it closed then); empty when not merged.
    pub merged_into: String,
    /// The summary people wrote (`SetReviewSummary`); empty: none yet.
    pub summary: String,
    /// The status updates posted to stakeholders, in order.
    pub status_updates: Vec<ReviewStatusUpdate>,
    /// The follow-up action items, by number.
    pub follow_ups: Vec<ReviewFollowUp>,
    /// The template's sections for people to write (configuration `review.template`).
    pub sections: Vec<ReviewSection>,
}

/// A status update as the review shows it (a `status_update` timeline entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewStatusUpdate {
    pub at: Timestamp,
    pub actor: String,
    /// investigating, identified, monitoring or resolved.
    pub status: String,
    pub message: String,
}

/// A follow-up action item as the review shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewFollowUp {
    /// Its number within the incident, from 1.
    pub number: u32,
    pub title: String,
    pub owner: String,
    pub due: Option<time::Date>,
    pub state: FollowUpState,
    /// Open and due before the day the review was made.
    pub overdue: bool,
}

/// A section of the review template: a heading and what to write under it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSection {
    pub heading: String,
    #[serde(default)]
    pub prompt: String,
}

/// The heading of the template section that shows the recorded root cause, when one is.
pub const ROOT_CAUSE_HEADING: &str = "Root cause";
/// The most sections a review template has, and the most bytes of a heading and a prompt.
pub const MAX_TEMPLATE_SECTIONS: usize = 20;
pub const MAX_SECTION_HEADING: usize = 128;
pub const MAX_SECTION_PROMPT: usize = 1024;

/// The built-in review template: what people write after the draft's facts.
pub fn default_review_template() -> Vec<ReviewSection> {
    [
        (
            ROOT_CAUSE_HEADING,
            "To be written by the incident commander.",
        ),
        (
            "What went well",
            "What helped detect, contain or resolve it?",
        ),
        (
            "What went wrong",
            "What slowed the response, and where did we get lucky?",
        ),
    ]
    .into_iter()
    .map(|(heading, prompt)| ReviewSection {
        heading: heading.into(),
        prompt: prompt.into(),
    })
    .collect()
}

/// Checks a review template (`field` names it in errors): 1 to [`MAX_TEMPLATE_SECTIONS`]
/// sections with distinct one-line headings of 1 to [`MAX_SECTION_HEADING`] bytes and
/// prompts of at most [`MAX_SECTION_PROMPT`] bytes.
pub fn check_review_template(sections: &[ReviewSection]) -> crate::Result<()> {
    let bad = |reason: String| crate::error::invalid("review.template", reason);
    if sections.is_empty() || sections.len() > MAX_TEMPLATE_SECTIONS {
        return Err(bad(format!(
            "must hold 1 to {MAX_TEMPLATE_SECTIONS} sections ({} given)",
            sections.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for s in sections {
        let h = s.heading.trim();
        if h.is_empty() || h.len() > MAX_SECTION_HEADING || h.chars().any(char::is_control) {
            return Err(bad(format!(
                "heading {h:?} must be one line of 1 to {MAX_SECTION_HEADING} bytes"
            )));
        }
        if s.prompt.len() > MAX_SECTION_PROMPT || s.prompt.contains('\0') {
            return Err(bad(format!(
                "the prompt of {h:?} must hold at most {MAX_SECTION_PROMPT} bytes and no NUL"
            )));
        }
        if !seen.insert(h.to_lowercase()) {
            return Err(bad(format!("heading {h:?} appears twice")));
        }
    }
    Ok(())
}

impl ReviewInput {
    /// Time to acknowledge, to mitigate and to resolve, from the opening; `None` where the
    /// incident did not get there.
    pub fn durations(&self) -> [Option<time::Duration>; 3] {
        [self.acknowledged_at, self.mitigated_at, self.resolved_at]
            .map(|t| t.map(|t| (t - self.opened_at).max(time::Duration::ZERO)))
    }
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
    /// The run's id (empty when the timeline did not name it).
    pub run_id: String,
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
    if !r.summary.is_empty() {
        let _ = writeln!(md, "{}\n", r.summary);
    }
    let _ = writeln!(md, "- Incident: `{}`", r.incident_id);
    if !r.merged_into.is_empty() {
        let _ = writeln!(
            md,
            "- Merged into `{}`: its alerts and its review continue there",
            r.merged_into
        );
    }
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
        "- Time to mitigate: {}",
        duration_between(r.opened_at, r.mitigated_at)
    );
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
    let _ = writeln!(md, "\n## Status updates\n");
    if r.status_updates.is_empty() {
        let _ = writeln!(md, "No status update was posted.");
    } else {
        let _ = writeln!(
            md,
            "| at | status | who | message |\n| --- | --- | --- | --- |"
        );
    }
    for u in &r.status_updates {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            rfc3339(u.at),
            cell(&u.status),
            cell(&u.actor),
            cell(&u.message)
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
    for s in &r.sections {
        let _ = writeln!(md, "\n## {}\n", s.heading.trim());
        if s.heading.trim() == ROOT_CAUSE_HEADING && !r.root_cause.is_empty() {
            let _ = writeln!(md, "{}", r.root_cause);
        } else if !s.prompt.trim().is_empty() {
            let _ = writeln!(md, "_{}_", s.prompt.trim());
        }
    }
    let _ = writeln!(md, "\n## Follow-up items\n");
    if r.follow_ups.is_empty() {
        let _ = writeln!(md, "- [ ] _Add follow-ups._");
    }
    for f in &r.follow_ups {
        let check = match f.state {
            FollowUpState::Open => ' ',
            FollowUpState::Done => 'x',
        };
        let due = f.due.map_or_else(
            || "no due date".into(),
            |d| format!("due {}", format_date(d)),
        );
        let late = if f.overdue { " (overdue)" } else { "" };
        let _ = writeln!(
            md,
            "- [{check}] #{} {} ({}, {due}{late})",
            f.number, f.title, f.owner
        );
    }
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
                run_id: "r-1".into(),
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
            mitigated_at: Some(opened + time::Duration::seconds(600)),
            closed_at: None,
            merged_into: String::new(),
            summary: String::new(),
            status_updates: Vec::new(),
            follow_ups: Vec::new(),
            sections: default_review_template(),
        });
        for want in [
            "Time to mitigate: 10m 0s",
            "No status update was posted.",
            "_To be written by the incident commander._",
            "## What went well",
            "- [ ] _Add follow-ups._",
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

    fn bare(opened: Timestamp) -> ReviewInput {
        ReviewInput {
            incident_id: "abc".into(),
            title: "API down".into(),
            category: "service-outage".into(),
            severity: 2,
            priority: 2,
            alert_count: 1,
            opened_at: opened,
            acknowledged_at: None,
            resolved_at: None,
            resolution_summary: String::new(),
            root_cause: String::new(),
            roles: Vec::new(),
            timeline: Vec::new(),
            runs: Vec::new(),
            first_page: None,
            acknowledged_by: None,
            mitigated_at: None,
            closed_at: None,
            merged_into: String::new(),
            summary: String::new(),
            status_updates: Vec::new(),
            follow_ups: Vec::new(),
            sections: Vec::new(),
        }
    }

    #[test]
    fn people_written_parts_show_in_the_review() {
        let opened = time::macros::datetime!(2026-11-28 10:00 UTC);
        let mut r = bare(opened);
        r.summary = "The API was down for 3 minutes.".into();
        r.merged_into = "def".into();
        r.root_cause = "a bad deploy".into();
        r.status_updates = vec![ReviewStatusUpdate {
            at: opened + time::Duration::seconds(60),
            actor: "user:amy".into(),
            status: "identified".into(),
            message: "bad deploy | rolling back".into(),
        }];
        r.follow_ups = vec![
            ReviewFollowUp {
                number: 1,
                title: "add a canary".into(),
                owner: "amy".into(),
                due: Some(time::macros::date!(2026 - 12 - 20)),
                state: FollowUpState::Open,
                overdue: true,
            },
            ReviewFollowUp {
                number: 2,
                title: "alert on 5xx".into(),
                owner: "bob".into(),
                due: None,
                state: FollowUpState::Done,
                overdue: false,
            },
        ];
        r.sections = vec![
            ReviewSection {
                heading: "Root cause".into(),
                prompt: "Why?".into(),
            },
            ReviewSection {
                heading: "Customer impact".into(),
                prompt: "Who noticed?".into(),
            },
        ];
        let md = review_markdown(&r);
        for want in [
            "## Summary\n\nThe API was down for 3 minutes.\n",
            "- Merged into `def`",
            "- Time to mitigate: not reached",
            "| 2026-11-28T10:01:00Z | identified | user:amy | bad deploy \\| rolling back |",
            "## Root cause\n\na bad deploy\n",
            "## Customer impact\n\n_Who noticed?_",
            "- [ ] #1 add a canary (amy, due 2026-12-20 (overdue))",
            "- [x] #2 alert on 5xx (bob, no due date)",
        ] {
            assert!(md.contains(want), "missing {want:?} in\n{md}");
        }
        assert!(!md.contains("_Why?_"), "{md}");
        assert!(!md.contains("_Add follow-ups._"), "{md}");
        assert_eq!(
            r.durations(),
            [None, None, None],
            "nothing reached: no durations"
        );
        r.acknowledged_at = Some(opened + time::Duration::seconds(5));
        r.resolved_at = Some(opened + time::Duration::seconds(65));
        assert_eq!(
            r.durations(),
            [
                Some(time::Duration::seconds(5)),
                None,
                Some(time::Duration::seconds(65))
            ]
        );
    }

    #[test]
    fn templates_are_checked() {
        assert!(check_review_template(&default_review_template()).is_ok());
        let s = |h: &str, p: &str| ReviewSection {
            heading: h.into(),
            prompt: p.into(),
        };
        for bad in [
            vec![],
            vec![s("", "x")],
            vec![s("a\nb", "")],
            vec![s("Impact", ""), s("impact", "")],
            vec![s("x", &"p".repeat(MAX_SECTION_PROMPT + 1))],
            vec![s(&"h".repeat(MAX_SECTION_HEADING + 1), "")],
            (0..=MAX_TEMPLATE_SECTIONS)
                .map(|n| s(&n.to_string(), ""))
                .collect(),
        ] {
            let e = check_review_template(&bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid review.template"), "{e}");
        }
    }
}
