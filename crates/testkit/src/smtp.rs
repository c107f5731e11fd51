//! A real SMTP server for tests: Python's aiosmtpd running notification's
//! `tests/smtp_server.py`, which prints `PORT <n>` once it listens and one `MESSAGE <json>`
//! line per message it accepts (envelope, headers, text body). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running SMTP server.
pub struct SmtpServer {
    pub port: u16,
    messages: mpsc::UnboundedReceiver<Value>,
    _child: Child,
}

/// A Python that has aiosmtpd (Debian's `python3-aiosmtpd` is under /usr/bin; a pyenv shim
/// on PATH may not see it).
fn python() -> PathBuf {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = std::process::Command::new(candidate)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.into();
        }
    }
    panic!("no python3 with aiosmtpd: install python3-aiosmtpd (tests/run does)");
}

impl SmtpServer {
    /// Starts a plain SMTP server on 127.0.0.1 (`args` are the script's, e.g. `--mode plain`).
    pub async fn start(args: &[&str]) -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../notification/tests/smtp_server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the SMTP server {script:?}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with("PORT ") => line[5..].parse().unwrap(),
            other => panic!("the SMTP server did not start: {other:?}"),
        };
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("MESSAGE ") {
                    let _ = tx.send(serde_json::from_str::<Value>(json).unwrap_or(Value::Null));
                }
            }
        });
        Self {
            port,
            messages,
            _child: child,
        }
    }

    /// The next message, within 20 seconds.
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.messages.recv())
            .await
            .expect("no message reached the SMTP server in 20 s")
            .expect("the SMTP server stopped")
    }

    /// Whether another message arrives within `wait`.
    pub async fn more(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.messages.recv())
            .await
            .is_ok()
    }
}
