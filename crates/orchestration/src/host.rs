//! The runbook host: performs (or simulates) each action and journals it with its events.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_bus::{outbox_event, streams};
use firebreak_domain::{Micros, StepStatus};
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_runbook::{
    ActionError, ActionErrorKind, Host, Step, StepError, StepOutcome, is_side_effecting,
};
use firebreak_storage::{JournalRecord, OrchestrationStore, OutboxEvent, RunRecord};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;

use crate::executor::run_event;
use crate::k8s::Kube;
use crate::secrets::{SecretSource, carried, check_destination, inject, redact, redact_str};

/// What `exec` actions may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOptions {
    /// Commands (exact paths or names) runbooks may run; empty allows none.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A command still running after this is killed and the step fails.
    #[serde(default = "default_exec_timeout")]
    pub timeout_seconds: u64,
    /// Bytes of stdout and of stderr kept; the rest is discarded.
    #[serde(default = "default_exec_output")]
    pub max_output_bytes: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout_seconds: default_exec_timeout(),
            max_output_bytes: default_exec_output(),
        }
    }
}

fn default_exec_timeout() -> u64 {
    30
}
fn default_exec_output() -> usize {
    64 * 1024
}

/// What the actions that reach outside need, shared by every run.
pub(crate) struct Actions {
    pub(crate) http: reqwest::Client,
    /// For requests carrying a secret: follows no redirect, which could take the secret
    /// (in a header or the body) to a host it may not go to.
    pub(crate) http_direct: reqwest::Client,
    pub(crate) kube: Kube,
    pub(crate) exec: ExecOptions,
    pub(crate) secrets: SecretSource,
    /// Where `notify::send` may send.
    pub(crate) notify_targets: std::collections::BTreeSet<String>,
}

/// One run's host. Lives on the blocking thread that executes the script.
pub(crate) struct RunHost {
    pub(crate) store: Arc<dyn OrchestrationStore>,
    pub(crate) run: RunRecord,
    /// The secrets the runbook declares.
    pub(crate) secrets: Vec<firebreak_runbook::Secret>,
    pub(crate) actions: Arc<Actions>,
    pub(crate) clock: Arc<dyn firebreak_domain::Clock>,
    pub(crate) rt: Handle,
    pub(crate) log: Mutex<Vec<String>>,
    /// When this execution's time (the manifest's `timeout_seconds`) runs out: no action,
    /// retries and their waits included, runs past it.
    pub(crate) deadline: Instant,
    pub(crate) timeout_seconds: u32,
}

/// Bytes of an HTTP response body kept; the rest is not read.
const MAX_BODY: usize = 64 * 1024;

impl RunHost {
    fn journal(
        &self,
        step: &Step,
        status: StepStatus,
        result: Value,
        attempts: u32,
        extra: Option<OutboxEvent>,
    ) -> Result<(), StepError> {
        let record = JournalRecord {
            run_id: self.run.id.clone(),
            seq: step.seq,
            action: step.action.clone(),
            args: step.args.clone(),
            args_digest: step.digest.clone(),
            status,
            result: result.clone(),
            idempotency_key: step.idempotency_key.clone(),
            attempts,
            at: self.clock.now(),
        };
        let summary = json!({
            "seq": step.seq, "action": step.action, "args": step.args, "status": status, "result": result,
        });
        let change = if status == StepStatus::Waiting {
            v1::RunChange::WaitingApproval
        } else {
            v1::RunChange::Action
        };
        let mut events = vec![run_event(&self.run, change, &summary.to_string(), "")];
        events.extend(extra);
        self.rt
            .block_on(self.store.put_journal(&record, &events))
            .map_err(|e| StepError::Interrupted(format!("journal write failed: {e}")))
    }

    fn incident_command(&self, command: Command) -> OutboxEvent {
        outbox_event(
            streams::RUNBOOKS,
            "runbooks.incident_command",
            Payload::IncidentCommand(v1::IncidentCommand {
                incident_id: self.run.incident_id.clone(),
                actor: format!("runbook:{}", self.run.runbook),
                command: Some(command),
                via: String::new(),
                if_vacant: false,
            }),
        )
    }

    /// Firebreak's own actions: they always run, dry or live.
    fn internal(&self, step: &Step) -> Result<Option<OutboxEvent>, ActionError> {
        let a = &step.args;
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
        let cmd = |c| Ok(Some(self.incident_command(c)));
        match step.action.as_str() {
            "incident.note" => cmd(Command::Note(s("text"))),
            "incident.set_severity" => {
                // The sandbox lets only an integer 1-5 through; anything else is the
                // caller's error, never a default.
                let level = a["severity"]
                    .as_u64()
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|l| (1..=5).contains(l))
                    .ok_or_else(|| {
                        ActionError::new(
                            ActionErrorKind::InvalidArgument,
                            "incident.set_severity: severity must be an integer 1-5",
                        )
                    })?;
                cmd(Command::SetSeverity(firebreak_proto::wire_level(level)))
            }
            "incident.set_category" => cmd(Command::SetCategory(s("category"))),
            "incident.assign" => {
                // Triage holds the rule and refuses what breaks it; a name it would refuse
                // fails the step here, where the runbook sees why, as a severity does.
                let name = |field: &'static str| {
                    firebreak_domain::access::parse_name(field, &s(field)).map_err(|e| {
                        ActionError::new(
                            ActionErrorKind::InvalidArgument,
                            format!("incident.assign: {e}"),
                        )
                    })
                };
                cmd(Command::Assign(v1::Assignment {
                    role: name("role")?,
                    person: name("person")?,
                    ..Default::default()
                }))
            }
            "incident.escalate" => cmd(Command::Escalate(s("reason"))),
            "incident.resolve" => cmd(Command::Resolve(s("summary"))),
            "notify.send" if !self.actions.notify_targets.contains(&s("channel")) => {
                let known: Vec<&str> = self
                    .actions
                    .notify_targets
                    .iter()
                    .map(String::as_str)
                    .collect();
                Err(ActionError::new(
                    ActionErrorKind::Denied,
                    format!(
                        "unknown notification channel {:?}: the configuration has channels and escalation policies {}",
                        s("channel"),
                        known.join(", ")
                    ),
                ))
            }
            "notify.send" => Ok(Some(outbox_event(
                streams::RUNBOOKS,
                "runbooks.notify",
                Payload::NotifyRequested(v1::NotifyRequested {
                    incident_id: self.run.incident_id.clone(),
                    channel: s("channel"),
                    message: s("message"),
                    actor: format!("runbook:{}", self.run.runbook),
                }),
            ))),
            other => Err(ActionError::new(
                ActionErrorKind::InvalidArgument,
                format!("unknown action {other}"),
            )),
        }
    }

    /// An action that acts outside Firebreak, tried as the runbook's retry policy says.
    /// Returns the result (or error) with secrets redacted, and the tries made.
    fn external(&self, step: &Step) -> (Result<Value, ActionError>, u32) {
        let (args, used) = match inject(&step.args, &self.secrets, &self.actions.secrets) {
            Ok(x) => x,
            Err(e) => return (Err(ActionError::new(ActionErrorKind::Secret, e)), 0),
        };
        // Where the request goes is judged as it would go out, values in place; the error
        // names no value.
        let carried = carried(&step.args, &self.secrets);
        let url = args["url"].as_str().unwrap_or_default();
        if let Err(e) = check_destination(&step.action, url, &carried) {
            let e = ActionError::new(ActionErrorKind::RefusedDestination, redact_str(&e, &used));
            return (Err(e), 0);
        }
        let direct = !carried.is_empty();
        let attempts = step.retry.attempts.max(1);
        let mut tries = 0;
        let result = loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(self.deadline_exceeded(step));
            }
            tries += 1;
            // A call that blocks (a target that never answers) ends with the run's time.
            let outcome = self.rt.block_on(async {
                tokio::time::timeout(left, self.attempt(step, &args, direct))
                    .await
                    .unwrap_or_else(|_| Err(self.deadline_exceeded(step)))
            });
            let again = match &outcome {
                Ok(v) => {
                    v["status"].as_u64().is_some_and(|s| s >= 500 || s == 429)
                        && step.action.starts_with("http.")
                }
                Err(e) => e.is_retryable(),
            };
            if !again || tries >= attempts {
                break outcome;
            }
            let backoff = step
                .retry
                .backoff_ms
                .saturating_mul(1 << (tries - 1).min(10));
            let left = self.deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_millis(backoff.min(60_000)).min(left));
        };
        let result = match result {
            Ok(mut v) => {
                redact(&mut v, &used);
                Ok(v)
            }
            Err(e) => Err(e.map_message(|m| redact_str(m, &used))),
        };
        (result, tries)
    }

    fn deadline_exceeded(&self, step: &Step) -> ActionError {
        ActionError::new(
            ActionErrorKind::Deadline,
            format!(
                "deadline exceeded: the run's {}s ran out during {}",
                self.timeout_seconds, step.action
            ),
        )
    }

    async fn attempt(&self, step: &Step, args: &Value, direct: bool) -> Result<Value, ActionError> {
        match step.action.split('.').next().unwrap_or_default() {
            "http" => self.http(step, args, direct).await,
            "k8s" => self.actions.kube.perform(&step.action, args).await,
            "exec" => self.exec(args).await,
            _ => Err(ActionError::new(
                ActionErrorKind::InvalidArgument,
                format!("unknown action {}", step.action),
            )),
        }
    }

    async fn http(&self, step: &Step, a: &Value, direct: bool) -> Result<Value, ActionError> {
        let method = a["method"].as_str().unwrap_or("GET").to_uppercase();
        let url = a["url"].as_str().unwrap_or_default();
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
            ActionError::new(
                ActionErrorKind::InvalidArgument,
                format!("invalid http method {method:?}"),
            )
        })?;
        let timeout = a["timeout_ms"].as_u64().unwrap_or(10_000).min(60_000);
        let client = if direct {
            &self.actions.http_direct
        } else {
            &self.actions.http
        };
        let mut req = client
            .request(method, url)
            .timeout(Duration::from_millis(timeout))
            .header("Idempotency-Key", &step.idempotency_key);
        if let Some(headers) = a["headers"].as_object() {
            for (k, v) in headers {
                if let Some(v) = v.as_str() {
                    req = req.header(k, v);
                }
            }
        }
        if !a["body"].is_null() {
            req = req.json(&a["body"]);
        }
        let resp = req.send().await.map_err(|e| {
            ActionError::new(
                ActionErrorKind::Transport,
                format!("http request failed: {}", e.without_url()),
            )
        })?;
        let status = resp.status().as_u16();
        // The body is read as it comes and no further than the cap: a huge response costs
        // the cap in memory, not its size.
        let mut resp = resp;
        let mut kept = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            ActionError::new(
                ActionErrorKind::Transport,
                format!("http body: {}", e.without_url()),
            )
        })? {
            let room = MAX_BODY - kept.len();
            if chunk.len() > room {
                kept.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            kept.extend_from_slice(&chunk);
        }
        drop(resp);
        let body = serde_json::from_slice(&kept)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&kept).into_owned()));
        if truncated {
            return Ok(json!({ "status": status, "body": body, "truncated": true }));
        }
        Ok(json!({ "status": status, "body": body }))
    }

    async fn exec(&self, a: &Value) -> Result<Value, ActionError> {
        let opts = &self.actions.exec;
        let command = a["command"].as_str().unwrap_or_default();
        if !opts.allow.iter().any(|c| c == command) {
            return Err(ActionError::new(
                ActionErrorKind::Denied,
                format!(
                    "command {command:?} is not allowed: add it to exec.allow in the configuration"
                ),
            ));
        }
        let args: Vec<&str> = a["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut child = tokio::process::Command::new(command)
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ActionError::new(
                    ActionErrorKind::Failed,
                    format!("cannot run {command:?}: {e}"),
                )
            })?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let limit = opts.max_output_bytes;
        let run = async {
            let (stdout, stderr, status) =
                tokio::join!(bounded(out, limit), bounded(err, limit), child.wait());
            (stdout, stderr, status)
        };
        let (stdout, stderr, status) =
            tokio::time::timeout(Duration::from_secs(opts.timeout_seconds), run)
                .await
                .map_err(|_| {
                    ActionError::new(
                        ActionErrorKind::Timeout,
                        format!(
                            "{command:?} ran longer than {}s and was killed",
                            opts.timeout_seconds
                        ),
                    )
                })?;
        let status = status
            .map_err(|e| ActionError::new(ActionErrorKind::Failed, format!("{command:?}: {e}")))?;
        Ok(json!({
            "status": status.code().unwrap_or(-1),
            "stdout": stdout.0,
            "stderr": stderr.0,
            "truncated": stdout.1 || stderr.1,
        }))
    }
}

/// Reads a stream to its end, keeping at most `limit` bytes; true when it cut.
async fn bounded(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> (String, bool) {
    let Some(mut stream) = stream else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        cut |= n > room;
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

impl Host for RunHost {
    /// Performs a step in a span of its own, a child of the run's.
    fn perform(&self, step: &Step) -> Result<StepOutcome, StepError> {
        let span = tracing::info_span!(
            "runbook.step",
            otel.name = format!("step {} {}", step.seq, step.action),
            run.id = %self.run.id,
            incident.id = %self.run.incident_id,
            step.seq = step.seq,
            step.action = %step.action,
            step.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let outcome = self.perform_step(step);
        let label = match &outcome {
            Ok(StepOutcome::Done(_)) => "done",
            Ok(StepOutcome::Waiting) => "waiting",
            Ok(StepOutcome::Sleeping { .. }) => "sleeping",
            Err(_) => "failed",
        };
        let action = firebreak_telemetry::labels::bounded(&step.action, firebreak_runbook::ACTIONS);
        firebreak_telemetry::metrics().observe_step(action, label, started.elapsed());
        span.record("step.outcome", label);
        if outcome.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        outcome
    }

    fn log(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line.to_owned());
        }
    }

    fn now(&self) -> Micros {
        self.clock.now()
    }
}

impl RunHost {
    fn perform_step(&self, step: &Step) -> Result<StepOutcome, StepError> {
        match step.action.as_str() {
            "approval.request" => {
                self.journal(step, StepStatus::Waiting, Value::Null, 1, None)?;
                return Ok(StepOutcome::Waiting);
            }
            "sleep.for" => {
                let seconds = step.args["seconds"].as_i64().unwrap_or(0);
                if seconds > 0 {
                    let until = self.clock.now() + Duration::from_secs(seconds.unsigned_abs());
                    self.journal(
                        step,
                        StepStatus::Sleeping,
                        json!({ "until": until.unix_micros() }),
                        1,
                        None,
                    )?;
                    return Ok(StepOutcome::Sleeping { until });
                }
                self.journal(step, StepStatus::Done, json!({}), 1, None)?;
                return Ok(StepOutcome::Done(json!({})));
            }
            _ => {}
        }
        if !is_side_effecting(&step.action) {
            let event = match self.internal(step) {
                Ok(event) => event,
                Err(e) => {
                    self.journal(
                        step,
                        StepStatus::Failed,
                        json!({ "error": e.message }),
                        1,
                        None,
                    )?;
                    return Err(StepError::Failed(e));
                }
            };
            self.journal(step, StepStatus::Done, json!({}), 1, event)?;
            return Ok(StepOutcome::Done(json!({})));
        }
        if !self.run.live {
            let result = match step.action.split('.').next() {
                Some("http") => json!({ "status": 200, "body": null, "simulated": true }),
                Some("exec") => {
                    json!({ "status": 0, "stdout": "", "stderr": "", "simulated": true })
                }
                _ => json!({ "ok": true, "simulated": true }),
            };
            self.journal(step, StepStatus::Simulated, result.clone(), 0, None)?;
            return Ok(StepOutcome::Done(result));
        }
        match self.external(step) {
            (Ok(v), tries) => {
                self.journal(step, StepStatus::Done, v.clone(), tries, None)?;
                Ok(StepOutcome::Done(v))
            }
            (Err(e), tries) => {
                self.journal(
                    step,
                    StepStatus::Failed,
                    json!({ "error": e.message }),
                    tries,
                    None,
                )?;
                Err(StepError::Failed(e))
            }
        }
    }
}
