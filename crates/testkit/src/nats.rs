//! A `nats-server -js` per test, on a free port, with its own store directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long a server may take to come up before the fixture gives up (and fails the test).
const STARTUP: Duration = Duration::from_secs(15);

/// A `nats-server` with JetStream, listening on 127.0.0.1 on a port from [`crate::ports`], storing
/// into a temporary directory. Killed, and its directory removed, on drop.
///
/// [`NatsServer::kill`] and [`NatsServer::restart`] simulate a crash: the server comes back on
/// the same port with the same store, so clients reconnect by themselves and JetStream data
/// survives.
pub struct NatsServer {
    /// Removed on drop, after `Drop::drop` has killed the process.
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// Starts so far, to give each run its own log file.
    starts: u32,
    /// Arguments added to every start (authentication, TLS).
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory, and waits until it
    /// accepts connections.
    pub async fn start() -> NatsServer {
        Self::start_with(&[]).await
    }

    /// [`NatsServer::start`] with more `nats-server` arguments (`--user`, `--tlscert`, …).
    pub async fn start_with(extra: &[&str]) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("firebreak-nats-")
            .tempdir()
            .expect("creating a temporary directory for nats-server");
        let mut server = NatsServer {
            dir,
            port: 0,
            child: None,
            starts: 0,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.spawn(None).await;
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (the same across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Kills the server with SIGKILL: no graceful shutdown, as in a crash. Its store stays.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // An error means the process is gone already, which is what we want.
            let _ = child.start_kill();
        }
    }

    /// Starts the server again on the same port with the same store directory (killing it
    /// first if it still runs), and waits until it accepts connections.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reaped before the port is bound again.
            let _ = child.wait().await;
        }
        self.spawn(Some(self.port)).await;
    }

    async fn spawn(&mut self, port: Option<u16>) {
        self.starts += 1;
        let dir = self.dir.path();
        let log = dir.join(format!("nats-{}.log", self.starts));
        // An explicit port outside the ephemeral range, so nothing takes it across restarts.
        let port = port.unwrap_or_else(crate::ports::free_port);
        let port_arg = port.to_string();
        let child = Command::new("nats-server")
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .arg("-sd")
            .arg(dir.join("js"))
            .arg("--ports_file_dir")
            .arg(dir)
            .arg("-l")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning nats-server (is it on PATH?)");
        let pid = child.id().expect("nats-server exited at once");
        self.child = Some(child);
        let ports_file = dir.join(format!("nats-server_{pid}.ports"));

        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited with {status} while starting; its log:\n{}",
                    read_log(&log)
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "nats-server did not come up within {STARTUP:?}; its log:\n{}",
                    read_log(&log)
                );
            }
            // The ports file says which port it picked; the log says when JetStream is up
            // (the listener opens before "Server is ready").
            if let Some(p) = read_port(&ports_file)
                && read_log(&log).contains("Server is ready")
                && tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
            {
                assert_eq!(p, port, "nats-server listens on another port");
                self.port = p;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The port in a ports file (`{"nats":["nats://127.0.0.1:PORT"], ...}`), once it is complete.
fn read_port(file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(file).ok()?;
    let start = text
        .find("nats://")
        .map(|i| i + "nats://".len())
        .or_else(|| text.find("tls://").map(|i| i + "tls://".len()))?;
    let rest = &text[start..];
    let end = rest.find('"')?;
    let (_, port) = rest[..end].rsplit_once(':')?;
    port.parse().ok()
}

fn read_log(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_a_complete_ports_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.ports");
        assert_eq!(read_port(&file), None);
        std::fs::write(&file, r#"{"nats":["nats://127.0.0.1:4"#).unwrap();
        assert_eq!(read_port(&file), None);
        std::fs::write(&file, r#"{"nats":["nats://127.0.0.1:43521"]}"#).unwrap();
        assert_eq!(read_port(&file), Some(43521));
    }

    #[tokio::test]
    async fn a_server_restarts_on_its_port_with_its_store() {
        let mut server = NatsServer::start().await;
        let port = server.port();
        assert!(server.store_dir().exists());
        server.kill();
        server.restart().await;
        assert_eq!(server.port(), port);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );
        let dir = server.dir.path().to_owned();
        drop(server);
        assert!(!dir.exists());
    }
}
