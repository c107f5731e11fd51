//! The runbook host: performs (or simulates) each action and journals it with its events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_bus::{outbox_event, streams};
use firebreak_proto::v1::{self, event::Payload, incident_command::Command};
use firebreak_runbook::{Host, Step, StepOutcome, is_side_effecting};
use firebreak_storage::{JournalRecord, OrchestrationStore, OutboxEvent, RunRecord};
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::executor::{now_micros, run_event};

/// One run's host. Lives on the blocking thread that executes the script.
pub(crate) struct RunHost {
    pub(crate) store: Arc<dyn OrchestrationStore>,
    pub(crate) run: RunRecord,
    pub(crate) http: reqwest::Client,
    pub(crate) rt: Handle,
    pub(crate) log: Mutex<Vec<String>>,
}

const MAX_BODY: usize = 64 * 1024;

impl RunHost {
    fn journal(
        &self,
        step: &Step,
        status: &str,
        result: Value,
        extra: Option<OutboxEvent>,
    ) -> Result<(), String> {
        let record = JournalRecord {
            run_id: self.run.id.clone(),
            seq: step.seq,
            action: step.action.clone(),
            args: step.args.clone(),
            args_digest: step.digest.clone(),
            status: status.to_owned(),
            result: result.clone(),
            idempotency_key: step.idempotency_key.clone(),
            attempts: 1,
            at: now_micros(),
        };
        let summary = json!({
            "seq": step.seq, "action": step.action, "args": step.args, "status": status, "result": result,
        });
        let change = if status == "waiting" {
            "waiting_approval"
        } else {
            "action"
        };
        let mut events = vec![run_event(&self.run, change, &summary.to_string(), "")];
        events.extend(extra);
        self.rt
            .block_on(self.store.put_journal(&record, &events))
            .map_err(|e| format!("journal write failed: {e}"))
    }

    fn incident_command(&self, command: Command) -> OutboxEvent {
        outbox_event(
            streams::RUNBOOKS,
            "runbooks.incident_command",
            Payload::IncidentCommand(v1::IncidentCommand {
                incident_id: self.run.incident_id.clone(),
                actor: format!("runbook:{}", self.run.runbook),
                command: Some(command),
            }),
        )
    }

    fn http(&self, step: &Step) -> Result<Value, String> {
        let a = &step.args;
        let method = a["method"].as_str().unwrap_or("GET").to_uppercase();
        let url = a["url"].as_str().unwrap_or_default();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("invalid http method {method:?}"))?;
        let timeout = a["timeout_ms"].as_u64().unwrap_or(10_000).min(60_000);
        let mut req = self
            .http
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
        self.rt.block_on(async move {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("http request failed: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(|e| format!("http body: {e}"))?;
            let bytes = &bytes[..bytes.len().min(MAX_BODY)];
            let body = serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
            Ok(json!({ "status": status, "body": body }))
        })
    }
}

impl Host for RunHost {
    fn perform(&self, step: &Step) -> Result<StepOutcome, String> {
        let a = &step.args;
        let (status, result, extra) = match step.action.as_str() {
            "approval.request" => {
                self.journal(step, "waiting", Value::Null, None)?;
                return Ok(StepOutcome::Waiting);
            }
            "incident.note" => {
                let cmd = Command::Note(a["text"].as_str().unwrap_or_default().to_owned());
                ("done", json!({}), Some(self.incident_command(cmd)))
            }
            "incident.set_severity" => {
                let level = a["severity"].as_u64().unwrap_or(3) as u32;
                (
                    "done",
                    json!({}),
                    Some(self.incident_command(Command::SetSeverity(level))),
                )
            }
            "incident.resolve" => {
                let cmd = Command::Resolve(a["summary"].as_str().unwrap_or_default().to_owned());
                ("done", json!({}), Some(self.incident_command(cmd)))
            }
            "notify.send" => {
                let event = outbox_event(
                    streams::RUNBOOKS,
                    "runbooks.notify",
                    Payload::NotifyRequested(v1::NotifyRequested {
                        incident_id: self.run.incident_id.clone(),
                        channel: a["channel"].as_str().unwrap_or_default().to_owned(),
                        message: a["message"].as_str().unwrap_or_default().to_owned(),
                        actor: format!("runbook:{}", self.run.runbook),
                    }),
                );
                ("done", json!({}), Some(event))
            }
            action if is_side_effecting(action) && !self.run.live => (
                "simulated",
                json!({ "status": 200, "simulated": true }),
                None,
            ),
            action if action.starts_with("http.") => match self.http(step) {
                Ok(v) => ("done", v, None),
                Err(e) => {
                    self.journal(step, "failed", json!({ "error": e }), None)?;
                    return Err(e);
                }
            },
            other => return Err(format!("unknown action {other}")),
        };
        self.journal(step, status, result.clone(), extra)?;
        Ok(StepOutcome::Done(result))
    }

    fn log(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line.to_owned());
        }
    }
}
