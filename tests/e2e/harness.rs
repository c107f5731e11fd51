//! The test harness: a running embedded stack and a recording HTTP server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use firebreak::{App, Config};
use firebreak_domain::ManualClock;
use firebreak_proto::v1::{
    incident_service_client::IncidentServiceClient, intake_service_client::IntakeServiceClient,
    notification_service_client::NotificationServiceClient,
    runbook_service_client::RunbookServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub(crate) use firebreak_testkit::recorder::Recorder;

/// A running embedded stack with clients.
pub(crate) struct Stack {
    pub(crate) intake: IntakeServiceClient<Channel>,
    pub(crate) incidents: IncidentServiceClient<Channel>,
    pub(crate) runs: RunbookServiceClient<Channel>,
    pub(crate) notifications: NotificationServiceClient<Channel>,
    pub(crate) http: String,
    pub(crate) grpc: String,
    /// Timers are due against this clock: tests advance it instead of sleeping.
    pub(crate) clock: Arc<ManualClock>,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Stack {
    /// Starts the stack with `yaml` configuration over a fresh data directory.
    pub(crate) async fn start(runbooks: &Path, yaml: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut config = Config::load(Some(&file), Vec::new()).unwrap();
        config.data_dir = data.path().join("data");
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.runbooks_dir = Some(runbooks.to_path_buf());
        let clock = Arc::new(ManualClock::default());
        let app = App::build_with_clock(config, clock.clone()).await.unwrap();
        let grpc = format!("http://{}", app.grpc_addr());
        let http = format!("http://{}", app.http_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            intake: IntakeServiceClient::new(channel.clone()),
            incidents: IncidentServiceClient::new(channel.clone()),
            runs: RunbookServiceClient::new(channel.clone()),
            notifications: NotificationServiceClient::new(channel),
            http,
            grpc,
            clock,
            shutdown,
            _data: data,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it returns Some, for at most 10 seconds.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
