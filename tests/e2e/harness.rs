//! The test harness: a running embedded stack and a recording HTTP server.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use firebreak::{App, Config};
use firebreak_domain::ManualClock;
use firebreak_proto::v1::{
    incident_service_client::IncidentServiceClient, intake_service_client::IntakeServiceClient,
    notification_service_client::NotificationServiceClient,
    runbook_service_client::RunbookServiceClient,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// One request the recording server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) idempotency_key: String,
    pub(crate) body: Value,
}

/// A local HTTP server that records every POST and answers 200.
pub(crate) struct Recorder {
    pub(crate) url: String,
    pub(crate) received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub(crate) async fn start() -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(Received {
                        path: uri.path().to_owned(),
                        idempotency_key: headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    "{\"ok\":true}"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    pub(crate) fn on(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

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
        config.runbooks_dir = runbooks.to_path_buf();
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
