//! What client commands print: aligned tables for people, JSON for scripts.
#![allow(clippy::print_stdout)]

use std::io::Write;

use clap::ValueEnum;
use firebreak_proto::{WireState, v1};
use serde_json::{Value, json};

/// `println!` that ends the process quietly (exit 0) when stdout is a closed pipe
/// (`firebreak incident list | head -1`), as `head`'s reader would expect, instead of
/// panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::say_raw(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `text` to stdout; a closed pipe ends the process quietly, another write error
/// ends it with exit code 1.
pub(crate) fn say_raw(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
        std::process::exit(Exit::Failed.code());
    }
}

/// What a failed command's exit code says. The numbers are an interface for scripts:
/// stable, listed in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The command ran and what it checked failed (a runbook test, a simulated run), or an
    /// error of no other kind.
    Failed,
    /// The command line is wrong (clap's code too).
    Usage,
    /// The server could not be reached, did not answer in time, or is overloaded: a retry
    /// may work.
    Unavailable,
    /// What the command names does not exist.
    NotFound,
    /// The server refused the input as invalid.
    Invalid,
    /// The target is not in a state that allows it (already exists, wrong state).
    Conflict,
    /// The caller may not do this.
    Denied,
}

impl Exit {
    pub(crate) fn code(self) -> i32 {
        match self {
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Unavailable => 3,
            Exit::NotFound => 4,
            Exit::Invalid => 5,
            Exit::Conflict => 6,
            Exit::Denied => 7,
        }
    }

    /// The name in a JSON error's `code`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exit::Failed => "failed",
            Exit::Usage => "usage",
            Exit::Unavailable => "unavailable",
            Exit::NotFound => "not_found",
            Exit::Invalid => "invalid",
            Exit::Conflict => "conflict",
            Exit::Denied => "denied",
        }
    }

    /// The one place gRPC status codes become exit codes.
    pub(crate) fn of_status(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            // Cancelled is how tonic reports the request timeout.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled => Exit::Unavailable,
            Code::NotFound => Exit::NotFound,
            Code::InvalidArgument | Code::OutOfRange => Exit::Invalid,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => Exit::Conflict,
            Code::PermissionDenied | Code::Unauthenticated => Exit::Denied,
            Code::Ok | Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => {
                Exit::Failed
            }
        }
    }
}

/// A failure with its exit code; anything else that fails a command exits with
/// [`Exit::Failed`].
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Prints a failed command's error on stderr: a line of text, or under `--output json` one
/// JSON object `{"code", "message", "exit"}`.
pub(crate) fn report_error(format: OutputFormat, exit: Exit, message: &str) {
    let text = match format {
        OutputFormat::Json => {
            json!({ "code": exit.name(), "message": message, "exit": exit.code() }).to_string()
        }
        OutputFormat::Table => format!("error: {message}"),
    };
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

pub(crate) struct Out {
    format: OutputFormat,
}

fn ts(t: Option<&firebreak_proto::Timestamp>) -> Value {
    rfc3339(t).map_or(Value::Null, Value::String)
}

/// A protobuf timestamp as RFC 3339 text; `None` when unset (or out of range).
pub(crate) fn rfc3339(t: Option<&firebreak_proto::Timestamp>) -> Option<String> {
    let t = t?;
    time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
    )
    .ok()?
    .format(&time::format_description::well_known::Rfc3339)
    .ok()
}

/// A timestamp as JSON: RFC 3339 text, or null when unset.
pub(crate) fn ts_json(t: Option<&firebreak_proto::Timestamp>) -> Value {
    ts(t)
}

/// A state as a table shows it: its name, or "unknown" for one the server sent that this
/// build does not know.
fn shown<S: WireState>(state: Option<S>) -> &'static str {
    state.map_or("unknown", S::name)
}

fn incident_json(i: &v1::Incident) -> Value {
    json!({
        "id": i.id, "title": i.title, "description": i.description, "category": i.category,
        "severity": i.severity, "priority": i.priority,
        "state": i.incident_state().map(WireState::name),
        "dedup_key": i.dedup_key, "alert_count": i.alert_count,
        "labels": i.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "source": i.source,
        "opened_at": ts(i.opened_at.as_ref()), "acknowledged_at": ts(i.acknowledged_at.as_ref()),
        "mitigated_at": ts(i.mitigated_at.as_ref()),
        "resolved_at": ts(i.resolved_at.as_ref()), "closed_at": ts(i.closed_at.as_ref()),
        "merged_into": (!i.merged_into.is_empty()).then_some(i.merged_into.as_str()),
        "group_key": (!i.group_key.is_empty()).then_some(i.group_key.as_str()),
        "resolution_summary": i.resolution_summary, "root_cause": i.root_cause,
        "roles": i.roles.iter().map(|r| json!({
            "role": r.role, "person": r.person, "assigned_at": ts(r.assigned_at.as_ref()),
            "assigned_by": r.assigned_by,
        })).collect::<Vec<_>>(),
        "needs_commander": i.needs_commander,
        "last_status_update": i.last_status_update.as_ref().map(status_update_json),
    })
}

/// A status update to stakeholders: its status by name (null for one this build lacks).
fn status_update_json(u: &v1::StatusUpdate) -> Value {
    json!({
        "status": firebreak_domain::UpdateStatus::from_wire(u.status).map(WireState::name),
        "message": u.message, "at": ts(u.at.as_ref()), "by": u.by,
    })
}

fn entry_json(e: &v1::TimelineEntry) -> Value {
    json!({
        "seq": e.seq, "incident_id": e.incident_id, "kind": e.kind, "at": ts(e.at.as_ref()),
        "actor": e.actor, "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
    })
}

fn run_json(r: &v1::Run) -> Value {
    json!({
        "id": r.id, "runbook": r.runbook, "incident_id": r.incident_id,
        "state": r.run_state().map(WireState::name),
        "live": r.live, "error": r.error, "started_at": ts(r.started_at.as_ref()),
        "finished_at": ts(r.finished_at.as_ref()),
        "actions": r.actions.iter().map(|a| json!({
            "seq": a.seq, "action": a.action,
            "status": a.step_status().map(WireState::name),
            "args": serde_json::from_str::<Value>(&a.args).unwrap_or(Value::Null),
            "result": serde_json::from_str::<Value>(&a.result).unwrap_or(Value::Null),
            "idempotency_key": a.idempotency_key,
        })).collect::<Vec<_>>(),
        "log": r.log,
        "phase": r.run_phase().map(WireState::name),
        "plan": serde_json::from_str::<Value>(&r.plan).unwrap_or(Value::Null),
        "wake_at": ts(r.wake_at.as_ref()),
    })
}

/// Where an integration is declared, as the CLI has always shown it.
fn origin(i: &v1::Integration) -> &'static str {
    if i.declared {
        "configuration"
    } else {
        "runtime"
    }
}

/// A subscriber as people write it: `person:amy`, `channel:status-page`.
fn subscriber(s: &v1::Subscription) -> String {
    format!(
        "{}:{}",
        v1::SubscriberKind::shown(s.subscriber_kind),
        s.subscriber_name
    )
}

pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(60);
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let c: String = c.chars().take(*w).collect();
                format!("{c:<w$}")
            })
            .collect();
        say!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

impl Out {
    pub(crate) fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    fn json(&self, v: Value) {
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }

    /// A raise's answer. Stdout holds the incident id and nothing else (`ID=$(firebreak raise
    /// …)`); when the incident is not known yet, stdout stays empty and the status goes to
    /// stderr. JSON always has `status`: `opened`, `attached`, `silenced` (stored, no incident:
    /// `silenced_by` names the silence), `grouped` (joined its group's incident: `grouped_by` names the
    /// grouping rule) or `accepted` (no incident yet).
    pub(crate) fn raised(&self, r: &v1::RaiseIncidentResponse) {
        let known = !r.incident_id.is_empty();
        let silenced = !r.silenced_by.is_empty();
        let status = match (known, r.deduplicated) {
            (false, _) if silenced => "silenced",
            (false, _) => "accepted",
            (true, true) if !r.grouped_by.is_empty() => "grouped",
            (true, true) => "attached",
            (true, false) => "opened",
        };
        match self.format {
            OutputFormat::Json => self.json(json!({
                "status": status,
                "incident_id": if known { Value::from(r.incident_id.as_str()) } else { Value::Null },
                "alert_id": r.alert_id, "deduplicated": r.deduplicated,
                "silenced_by": if silenced { Value::from(r.silenced_by.as_str()) } else { Value::Null },
                "grouped_by": if r.grouped_by.is_empty() { Value::Null } else { Value::from(r.grouped_by.as_str()) },
            })),
            OutputFormat::Table if known => say!("{}", r.incident_id),
            OutputFormat::Table if silenced => {
                let _ = writeln!(
                    std::io::stderr(),
                    "alert {} silenced by silence {}: stored, no incident, nobody paged (`firebreak silence show {}` lists it)",
                    r.alert_id, r.silenced_by, r.silenced_by
                );
            }
            OutputFormat::Table => {
                let _ = writeln!(
                    std::io::stderr(),
                    "alert {} accepted; its incident opens once triage is reachable (`firebreak incident list` shows it)",
                    r.alert_id
                );
            }
        }
    }

    pub(crate) fn incidents(&self, list: &[v1::Incident]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(list.iter().map(incident_json).collect())),
            OutputFormat::Table => table(
                &["id", "state", "sev", "pri", "category", "alerts", "title"],
                list.iter()
                    .map(|i| {
                        vec![
                            i.id.clone(),
                            shown(i.incident_state()).to_owned(),
                            format!("SEV{}", i.severity),
                            format!("P{}", i.priority),
                            i.category.clone(),
                            i.alert_count.to_string(),
                            i.title.clone(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn incident(&self, i: Option<&v1::Incident>) {
        let Some(i) = i else { return };
        match self.format {
            OutputFormat::Json => self.json(incident_json(i)),
            OutputFormat::Table => {
                if let Value::Object(map) = incident_json(i) {
                    for (k, v) in map {
                        let v = match v {
                            // Who holds what, in the order assigned: `commander=alice, ...`.
                            Value::Array(_) if k == "roles" => match i.roles.as_slice() {
                                [] => "-".into(),
                                roles => roles
                                    .iter()
                                    .map(|r| format!("{}={}", r.role, r.person))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            },
                            // Said only when it is so, loud enough to be seen.
                            Value::Bool(false) if k == "needs_commander" => continue,
                            Value::Bool(true) if k == "needs_commander" => {
                                "YES: nobody commands this incident (incident assign ID --role commander PERSON)".into()
                            }
                            // `monitoring: the fix is out (2026-12-04T00:10:00Z, user:amy)`.
                            Value::Object(_) if k == "last_status_update" => {
                                match &i.last_status_update {
                                    Some(u) => format!(
                                        "{}: {} ({}, {})",
                                        firebreak_domain::UpdateStatus::from_wire(u.status)
                                            .map_or("unknown", WireState::name),
                                        u.message,
                                        rfc3339(u.at.as_ref()).unwrap_or_default(),
                                        u.by
                                    ),
                                    None => "-".into(),
                                }
                            }
                            Value::String(s) => s,
                            Value::Null => "-".into(),
                            other => other.to_string(),
                        };
                        say!("{k:<20} {v}");
                    }
                }
            }
        }
    }

    /// A merge's answer: the incident merged into (as `incident` shows it), after a line
    /// naming the one merged away and the alerts moved; JSON holds both.
    pub(crate) fn merged(&self, r: &v1::MergeResponse) {
        match self.format {
            OutputFormat::Json => self.json(json!({
                "merged": r.merged.as_ref().map(incident_json),
                "into": r.into.as_ref().map(incident_json),
                "alerts_moved": r.alerts_moved,
            })),
            OutputFormat::Table => {
                let id = |i: &Option<v1::Incident>| i.as_ref().map(|i| i.id.clone());
                say!(
                    "merged {} into {}: {} alerts moved",
                    id(&r.merged).unwrap_or_default(),
                    id(&r.into).unwrap_or_default(),
                    r.alerts_moved
                );
                self.incident(r.into.as_ref());
            }
        }
    }

    pub(crate) fn timeline(&self, entries: &[v1::TimelineEntry]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(entries.iter().map(entry_json).collect())),
            OutputFormat::Table => table(
                &["seq", "at", "kind", "actor", "data"],
                entries
                    .iter()
                    .map(|e| {
                        let at = ts(e.at.as_ref());
                        vec![
                            e.seq.to_string(),
                            at.as_str().unwrap_or("-").to_owned(),
                            e.kind.clone(),
                            e.actor.clone(),
                            e.data.clone(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    /// An incident's alerts, all of them (the CLI follows the pages).
    pub(crate) fn incident_alerts(&self, alerts: &[v1::IncidentAlert]) {
        let status = |a: &v1::IncidentAlert| match a.status() {
            v1::AlertStatus::Firing => "firing",
            v1::AlertStatus::Resolved => "resolved",
            v1::AlertStatus::Unspecified => "-",
        };
        fn labels(a: &v1::IncidentAlert) -> std::collections::BTreeMap<&String, &String> {
            a.labels.iter().collect()
        }
        match self.format {
            OutputFormat::Json => self.json(json!({
                "alerts": alerts.iter().map(|a| json!({
                    "alert_id": a.alert_id, "title": a.title, "labels": labels(a),
                    "status": status(a), "fired": a.fired, "opened": a.opened,
                    "first_seen": ts(a.first_seen.as_ref()), "last_seen": ts(a.last_seen.as_ref()),
                    "resolved_at": ts(a.resolved_at.as_ref()),
                })).collect::<Vec<_>>(),
                // Every page is followed: the list is never cut.
                "truncated": false,
            })),
            OutputFormat::Table => table(
                &[
                    "alert",
                    "status",
                    "fired",
                    "first seen",
                    "last seen",
                    "title",
                    "labels",
                ],
                alerts
                    .iter()
                    .map(|a| {
                        let labels: Vec<String> =
                            labels(a).iter().map(|(k, v)| format!("{k}={v}")).collect();
                        vec![
                            a.alert_id.clone(),
                            status(a).to_owned(),
                            a.fired.to_string(),
                            ts(a.first_seen.as_ref()).as_str().unwrap_or("-").to_owned(),
                            ts(a.last_seen.as_ref()).as_str().unwrap_or("-").to_owned(),
                            a.title.clone(),
                            labels.join(","),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    /// One entry as it arrives: a line each (JSON lines with --output json), flushed.
    pub(crate) fn watched(&self, e: &v1::TimelineEntry) {
        use std::io::Write as _;
        let line = match self.format {
            OutputFormat::Json => entry_json(e).to_string(),
            OutputFormat::Table => format!(
                "{}  {}  {}  {}  {}",
                ts(e.at.as_ref()).as_str().unwrap_or("-"),
                e.incident_id,
                e.kind,
                e.actor,
                e.data
            ),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// One change of a run as it arrives: a line each (JSON lines with --output json),
    /// flushed.
    pub(crate) fn run_progress(&self, p: &v1::RunProgress) {
        use std::io::Write as _;
        let change = p.change().name();
        let step = p.step.as_ref();
        let line = match self.format {
            OutputFormat::Json => json!({
                "run_id": p.run_id, "runbook": p.runbook, "incident_id": p.incident_id,
                "change": change, "at": ts(p.at.as_ref()), "live": p.live,
                "backlog": p.backlog, "detail": p.detail,
                "step": step.map(|a| json!({
                    "seq": a.seq, "action": a.action,
                    "status": a.step_status().map(WireState::name),
                    "args": serde_json::from_str::<Value>(&a.args).unwrap_or(Value::Null),
                    "result": serde_json::from_str::<Value>(&a.result).unwrap_or(Value::Null),
                })),
            })
            .to_string(),
            OutputFormat::Table => {
                let mut line = format!(
                    "{}  {}  {}  {change}",
                    ts(p.at.as_ref()).as_str().unwrap_or("-"),
                    p.run_id,
                    p.runbook,
                );
                if let Some(a) = step {
                    let status = a.step_status().map_or("-", WireState::name);
                    line.push_str(&format!("  #{} {} {status} {}", a.seq, a.action, a.args));
                }
                if !p.detail.is_empty() {
                    line.push_str(&format!("  {}", p.detail));
                }
                line
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// The format chosen (`--output`), for commands that print for themselves.
    pub(crate) fn format(&self) -> OutputFormat {
        self.format
    }

    pub(crate) fn runbooks(&self, list: &[v1::Runbook]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(
                list.iter()
                    .map(|r| json!({
                        "name": r.name, "description": r.description, "categories": r.categories,
                        "min_severity": r.min_severity, "max_severity": r.max_severity,
                        "capabilities": r.capabilities, "timeout_seconds": r.timeout_seconds,
                        "mode": v1::RunbookMode::shown(r.run_mode),
                        "approval_required": r.approval_required,
                        "approver_role": r.approver_role,
                    }))
                    .collect(),
            )),
            OutputFormat::Table => table(
                &["name", "categories", "severity", "mode", "capabilities"],
                list.iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.categories.join(","),
                            format!("{}-{}", r.min_severity, r.max_severity),
                            v1::RunbookMode::shown(r.run_mode).to_owned(),
                            r.capabilities.join(","),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn runs(&self, list: &[v1::Run]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(list.iter().map(run_json).collect())),
            OutputFormat::Table => table(
                &["id", "runbook", "incident", "state", "mode", "actions"],
                list.iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.runbook.clone(),
                            r.incident_id.clone(),
                            shown(r.run_state()).to_owned(),
                            if r.live { "live" } else { "dry-run" }.into(),
                            // A `+` when the list carries only the first part of the journal.
                            if r.next_actions_page_token.is_empty() {
                                r.actions.len().to_string()
                            } else {
                                format!("{}+", r.actions.len())
                            },
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn run(&self, r: Option<&v1::Run>) {
        let Some(r) = r else { return };
        match self.format {
            OutputFormat::Json => self.json(run_json(r)),
            OutputFormat::Table => {
                say!(
                    "run      {}\nrunbook  {}\nincident {}\nstate    {}\nmode     {}",
                    r.id,
                    r.runbook,
                    r.incident_id,
                    shown(r.run_state()),
                    if r.live { "live" } else { "dry-run" }
                );
                if !r.error.is_empty() {
                    say!("error    {}", r.error);
                }
                if let Some(at) = ts(r.wake_at.as_ref()).as_str() {
                    let what = if r.run_state() == Some(firebreak_domain::RunState::Sleeping) {
                        "wakes"
                    } else {
                        "expires"
                    };
                    say!("{what:<8} {at}");
                }
                if let Ok(Value::Array(plan)) = serde_json::from_str::<Value>(&r.plan) {
                    say!("\nplan ({}):", shown(r.run_phase()));
                    for step in &plan {
                        say!(
                            "  {}. {} {}",
                            step["seq"],
                            step["action"].as_str().unwrap_or_default(),
                            step["args"]
                        );
                    }
                }
                say!("");
                table(
                    &["seq", "action", "status", "args", "result"],
                    r.actions
                        .iter()
                        .map(|a| {
                            vec![
                                a.seq.to_string(),
                                a.action.clone(),
                                shown(a.step_status()).to_owned(),
                                a.args.clone(),
                                a.result.clone(),
                            ]
                        })
                        .collect(),
                );
                for line in &r.log {
                    say!("log: {line}");
                }
            }
        }
    }

    pub(crate) fn check_ok(&self, names: &[&str]) {
        match self.format {
            OutputFormat::Json => self.json(json!({ "ok": true, "runbooks": names })),
            OutputFormat::Table => say!("{} runbook(s) ok: {}", names.len(), names.join(", ")),
        }
    }

    pub(crate) fn approvals(&self, list: &[v1::PendingApproval]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(
                list.iter()
                    .map(|a| {
                        json!({
                            "run_id": a.run_id, "runbook": a.runbook, "incident_id": a.incident_id,
                            "seq": a.seq, "prompt": a.prompt, "role": a.role,
                            "requested_at": ts(a.requested_at.as_ref()),
                            "expires_at": ts(a.expires_at.as_ref()),
                            "on_timeout": v1::ApprovalTimeoutAction::shown(a.timeout_action),
                        })
                    })
                    .collect(),
            )),
            OutputFormat::Table => table(
                &[
                    "run", "runbook", "incident", "prompt", "role", "expires", "then",
                ],
                list.iter()
                    .map(|a| {
                        vec![
                            a.run_id.clone(),
                            a.runbook.clone(),
                            a.incident_id.clone(),
                            a.prompt.clone(),
                            a.role.clone(),
                            ts(a.expires_at.as_ref())
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            v1::ApprovalTimeoutAction::shown(a.timeout_action).to_owned(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    /// A simulated run: outcome (`succeeded`, `failed: WHY`, …), the plan, and the log.
    pub(crate) fn simulation(
        &self,
        runbook: &str,
        outcome: &str,
        steps: &[firebreak_runbook::PlannedStep],
        log: &[String],
    ) {
        match self.format {
            OutputFormat::Json => self.json(json!({
                "runbook": runbook, "outcome": outcome, "plan": steps, "log": log,
            })),
            OutputFormat::Table => {
                say!("dry run of {runbook}: {outcome}\n");
                table(
                    &["seq", "action", "args", "result"],
                    steps
                        .iter()
                        .map(|s| {
                            vec![
                                s.seq.to_string(),
                                s.action.clone(),
                                s.args.to_string(),
                                s.result.to_string(),
                            ]
                        })
                        .collect(),
                );
                for line in log {
                    say!("log: {line}");
                }
            }
        }
    }

    /// Runbook test results, a line per case.
    pub(crate) fn test_results(&self, results: &[firebreak_runbook::fixture::CaseResult]) {
        let failed = results.iter().filter(|r| r.failure.is_some()).count();
        match self.format {
            OutputFormat::Json => self.json(json!({
                "passed": results.len() - failed, "failed": failed,
                "cases": results.iter().map(|r| json!({
                    "runbook": r.runbook, "case": r.case, "ok": r.failure.is_none(), "failure": r.failure,
                })).collect::<Vec<_>>(),
            })),
            OutputFormat::Table => {
                for r in results {
                    match &r.failure {
                        None => say!("ok    {}: {}", r.runbook, r.case),
                        Some(why) => say!("FAIL  {}: {}: {why}", r.runbook, r.case),
                    }
                }
                say!(
                    "\n{} case(s): {} passed, {failed} failed",
                    results.len(),
                    results.len() - failed
                );
            }
        }
    }

    pub(crate) fn resolved_alert(&self, alert_id: &str) {
        match self.format {
            OutputFormat::Json => {
                self.json(json!({ "alert_id": alert_id, "resolved": !alert_id.is_empty() }))
            }
            OutputFormat::Table if alert_id.is_empty() => {
                say!("no firing alert has that key; nothing changed")
            }
            OutputFormat::Table => say!("resolved alert {alert_id}"),
        }
    }

    /// Integrations; `created` prints the one new key alone in table form, for scripts.
    pub(crate) fn integrations(&self, list: &[v1::Integration], created: bool) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(
                list.iter()
                    .map(|i| {
                        json!({
                            "name": i.name, "kind": v1::IntegrationKind::shown(i.integration_kind),
                            "key": i.key, "origin": origin(i),
                        })
                    })
                    .collect(),
            )),
            OutputFormat::Table if created => {
                for i in list {
                    say!("{}", i.key);
                }
            }
            OutputFormat::Table => table(
                &["name", "kind", "key", "origin"],
                list.iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            v1::IntegrationKind::shown(i.integration_kind).to_owned(),
                            i.key.clone(),
                            origin(i).to_owned(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn parked(&self, list: &[firebreak_bus::ParkedMessage]) {
        let at = |p: &firebreak_bus::ParkedMessage| {
            time::OffsetDateTime::from(p.parked_at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        match self.format {
            OutputFormat::Json => self.json(Value::Array(
                list.iter()
                    .map(|p| {
                        json!({
                            "seq": p.seq, "stream": p.stream, "stream_seq": p.stream_seq,
                            "consumer": p.consumer, "event_id": p.event_id,
                            "subject": p.subject, "error": p.error, "parked_at": at(p),
                        })
                    })
                    .collect(),
            )),
            OutputFormat::Table => table(
                &[
                    "seq", "stream", "consumer", "subject", "event", "parked", "error",
                ],
                list.iter()
                    .map(|p| {
                        vec![
                            p.seq.to_string(),
                            format!("{}#{}", p.stream, p.stream_seq),
                            p.consumer.clone(),
                            p.subject.clone(),
                            p.event_id.clone(),
                            at(p),
                            p.error.clone(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn replayed(&self, seq: u64) {
        match self.format {
            OutputFormat::Json => self.json(json!({ "replayed": seq })),
            OutputFormat::Table => say!("replayed parked event {seq}"),
        }
    }

    /// A subscription's change: `subscribed person:amy to INC` (or `already subscribed`).
    pub(crate) fn subscription(&self, action: &str, incident_id: &str, subscriber: &str) {
        match self.format {
            OutputFormat::Json => self.json(json!({
                "incident_id": incident_id, "subscriber": subscriber, "result": action,
            })),
            OutputFormat::Table => say!("{action} {subscriber} to {incident_id}"),
        }
    }

    /// An incident's own subscribers, oldest first (all of them: the CLI follows the pages).
    pub(crate) fn subscribers(&self, list: &[v1::Subscription]) {
        match self.format {
            OutputFormat::Json => self.json(Value::Array(
                list.iter()
                    .map(|s| {
                        json!({
                            "subscriber": subscriber(s), "created_at": ts(s.created_at.as_ref()),
                            "created_by": s.created_by,
                        })
                    })
                    .collect(),
            )),
            OutputFormat::Table => table(
                &["subscriber", "since", "by"],
                list.iter()
                    .map(|s| {
                        vec![
                            subscriber(s),
                            rfc3339(s.created_at.as_ref()).unwrap_or_default(),
                            s.created_by.clone(),
                        ]
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn deleted(&self, name: &str) {
        match self.format {
            OutputFormat::Json => self.json(json!({ "deleted": name })),
            OutputFormat::Table => say!("deleted {name}"),
        }
    }

    /// `firebreak report`: a row per group and the total (docs/reports.md).
    pub(crate) fn report(&self, r: &v1::GetReportResponse) {
        match self.format {
            OutputFormat::Json => self.json(report_json(r)),
            OutputFormat::Table => {
                say!(
                    "incidents opened from {} to {}, by {}{}",
                    rfc3339(r.since.as_ref()).unwrap_or_default(),
                    rfc3339(r.until.as_ref()).unwrap_or_default(),
                    v1::ReportGrouping::shown(r.group_by),
                    if r.truncated {
                        " (truncated: the oldest 100,000 only)"
                    } else {
                        ""
                    }
                );
                let row = |key: &str, g: &v1::ReportGroup| {
                    let p = |d: &Option<v1::DurationPercentiles>,
                             f: fn(
                        &v1::DurationPercentiles,
                    )
                        -> &Option<firebreak_proto::WireDuration>| {
                        d.as_ref()
                            .and_then(|d| f(d).as_ref())
                            .map_or_else(|| "-".to_owned(), span)
                    };
                    vec![
                        if key.is_empty() {
                            "-".to_owned()
                        } else {
                            key.to_owned()
                        },
                        g.incidents.to_string(),
                        p(&g.time_to_acknowledge, |d| &d.p50),
                        p(&g.time_to_acknowledge, |d| &d.p90),
                        p(&g.time_to_resolve, |d| &d.p50),
                        p(&g.time_to_resolve, |d| &d.p90),
                        ratio(g.auto_remediated, g.incidents)
                            .map_or_else(|| "-".to_owned(), |s| format!("{:.0}%", s * 100.0)),
                        ratio(g.alerts, g.incidents)
                            .map_or_else(|| "-".to_owned(), |a| format!("{a:.2}")),
                        g.silenced.to_string(),
                    ]
                };
                let mut rows: Vec<Vec<String>> = r.groups.iter().map(|g| row(&g.key, g)).collect();
                if let Some(total) = &r.total {
                    rows.push(row("TOTAL", total));
                }
                table(
                    &[
                        v1::ReportGrouping::shown(r.group_by),
                        "incidents",
                        "mtta p50",
                        "mtta p90",
                        "mttr p50",
                        "mttr p90",
                        "auto",
                        "alerts/inc",
                        "silenced",
                    ],
                    rows,
                );
            }
        }
    }
}

/// `n` over `of`; `None` when `of` is 0.
fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn seconds(d: &firebreak_proto::WireDuration) -> f64 {
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

/// A duration for people: `1d2h`, `3h5m`, `4m10s`, `12s`, `0.25s`.
fn span(d: &firebreak_proto::WireDuration) -> String {
    let total = d.seconds.max(0);
    if total < 10 && d.nanos > 0 {
        return format!("{}s", (seconds(d) * 100.0).round() / 100.0);
    }
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total % 86_400 / 3_600,
        total % 3_600 / 60,
        total % 60,
    );
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.concat()
    }
}

fn percentiles_json(p: Option<&v1::DurationPercentiles>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "p50": p.p50.as_ref().map(seconds), "p90": p.p90.as_ref().map(seconds),
        }),
    }
}

fn report_group_json(g: &v1::ReportGroup) -> Value {
    json!({
        "key": g.key, "incidents": g.incidents, "acknowledged": g.acknowledged,
        "resolved": g.resolved,
        "mtta_seconds": percentiles_json(g.time_to_acknowledge.as_ref()),
        "mttr_seconds": percentiles_json(g.time_to_resolve.as_ref()),
        "auto_remediated": g.auto_remediated,
        "auto_remediated_share": ratio(g.auto_remediated, g.incidents),
        "alerts": g.alerts, "alerts_per_incident": ratio(g.alerts, g.incidents),
        "silenced": g.silenced,
    })
}

/// A report as JSON: times in seconds, shares and ratios as numbers (null without
/// incidents), the window in RFC 3339.
pub(crate) fn report_json(r: &v1::GetReportResponse) -> Value {
    json!({
        "by": v1::ReportGrouping::shown(r.group_by), "since": ts(r.since.as_ref()),
        "until": ts(r.until.as_ref()),
        "truncated": r.truncated,
        "groups": r.groups.iter().map(report_group_json).collect::<Vec<_>>(),
        "total": r.total.as_ref().map_or(Value::Null, report_group_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        let d = |seconds, nanos| firebreak_proto::WireDuration { seconds, nanos };
        for (given, want) in [
            (d(0, 0), "0s"),
            (d(0, 250_000_000), "0.25s"),
            (d(12, 0), "12s"),
            (d(250, 0), "4m10s"),
            (d(3_600, 0), "1h"),
            (d(3 * 3_600 + 5 * 60 + 7, 0), "3h5m"),
            (d(86_400 + 2 * 3_600, 0), "1d2h"),
        ] {
            assert_eq!(span(&given), want, "{given:?}");
        }
    }

    #[test]
    fn every_status_code_has_its_exit_code() {
        use tonic::Code;
        let cases = [
            (Code::Unavailable, 3),
            (Code::DeadlineExceeded, 3),
            (Code::ResourceExhausted, 3),
            (Code::Cancelled, 3),
            (Code::NotFound, 4),
            (Code::InvalidArgument, 5),
            (Code::OutOfRange, 5),
            (Code::AlreadyExists, 6),
            (Code::FailedPrecondition, 6),
            (Code::Aborted, 6),
            (Code::PermissionDenied, 7),
            (Code::Unauthenticated, 7),
            (Code::Internal, 1),
            (Code::Unknown, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(Exit::of_status(code).code(), exit, "{code:?}");
        }
    }
}
