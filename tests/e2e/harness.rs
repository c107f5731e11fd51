//! The test harness: a running embedded stack and a recording HTTP server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use firebreak::{App, Config};
use firebreak_domain::ManualClock;
use firebreak_proto::access::AuthedChannel as Channel;
use firebreak_proto::v1::{
    self, incident_service_client::IncidentServiceClient,
    intake_service_client::IntakeServiceClient,
    notification_service_client::NotificationServiceClient,
    runbook_service_client::RunbookServiceClient,
};
use tokio_util::sync::CancellationToken;

pub(crate) use firebreak_testkit::recorder::Recorder;

/// A running embedded stack with clients.
pub(crate) struct Stack {
    pub(crate) intake: IntakeServiceClient<Channel>,
    pub(crate) incidents: IncidentServiceClient<Channel>,
    pub(crate) runs: RunbookServiceClient<Channel>,
    pub(crate) notifications: NotificationServiceClient<Channel>,
    pub(crate) http: String,
    pub(crate) grpc: String,
    /// The admin token of the stack's data directory.
    pub(crate) admin_token: String,
    /// A connection sending the admin token, for more clients.
    channel: Channel,
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
        let data_dir = config.data_dir.clone();
        config.grpc_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.runbooks_dir = Some(runbooks.to_path_buf());
        let clock = Arc::new(ManualClock::default());
        let app = App::build_with_clock(config, clock.clone()).await.unwrap();
        let grpc = format!("http://{}", app.grpc_addr());
        let http = format!("http://{}", app.http_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        // The admin token the first start wrote: every client call sends it.
        let admin_token = std::fs::read_to_string(data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let channel = tonic::transport::Endpoint::from_shared(grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let channel = firebreak_proto::access::authed(channel, Some(&admin_token));
        Self {
            admin_token,
            intake: IntakeServiceClient::new(channel.clone()),
            incidents: IncidentServiceClient::new(channel.clone()),
            runs: RunbookServiceClient::new(channel.clone()),
            notifications: NotificationServiceClient::new(channel.clone()),
            channel,
            http,
            grpc,
            clock,
            shutdown,
            _data: data,
        }
    }
}

impl Stack {
    /// The directory's service, as the admin.
    pub(crate) fn access(&self) -> v1::access_service_client::AccessServiceClient<Channel> {
        v1::access_service_client::AccessServiceClient::new(self.channel.clone())
    }

    /// Clients acting as a new user `name` holding `role` everywhere (made here, with a
    /// token of their own).
    pub(crate) async fn person(&self, name: &str, role: v1::Role) -> Person {
        let mut access = self.access();
        access
            .create_user(v1::CreateUserRequest {
                user: Some(v1::User {
                    name: name.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let token = access
            .create_token(v1::CreateTokenRequest {
                subject: name.into(),
                grants: vec![v1::Grant {
                    role: role as i32,
                    scope: "all".into(),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        let channel = tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let channel = firebreak_proto::access::authed(channel, Some(&token));
        Person {
            incidents: IncidentServiceClient::new(channel.clone()),
            runs: RunbookServiceClient::new(channel),
            token,
        }
    }

    /// The audit log, as the admin.
    pub(crate) fn audit(&self) -> v1::audit_service_client::AuditServiceClient<Channel> {
        v1::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }

    /// The stack's data directory (its databases).
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self._data.path().join("data")
    }

    /// Raises an alert titled `title` as the admin; the id of its incident.
    pub(crate) async fn raise(&mut self, title: &str) -> String {
        self.raise_with_labels(title, &[]).await
    }

    /// [`Stack::raise`] with labels.
    pub(crate) async fn raise_with_labels(
        &mut self,
        title: &str,
        labels: &[(&str, &str)],
    ) -> String {
        self.intake
            .raise_incident(v1::RaiseIncidentRequest {
                alert: Some(v1::AlertInput {
                    title: title.into(),
                    source: "e2e".into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .incident_id
    }

    /// Intake's integrations, as the admin.
    pub(crate) fn integrations(
        &self,
    ) -> v1::integration_service_client::IntegrationServiceClient<Channel> {
        v1::integration_service_client::IntegrationServiceClient::new(self.channel.clone())
    }

    /// Intake's silences, as the admin.
    pub(crate) fn silences(&self) -> v1::silence_service_client::SilenceServiceClient<Channel> {
        v1::silence_service_client::SilenceServiceClient::new(self.channel.clone())
    }
}

impl Person {
    /// Notification's service, as this person.
    pub(crate) async fn notifications(&self, s: &Stack) -> NotificationServiceClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        NotificationServiceClient::new(firebreak_proto::access::authed(channel, Some(&self.token)))
    }
}

/// A person's clients: every call sends their token.
pub(crate) struct Person {
    pub(crate) incidents: IncidentServiceClient<Channel>,
    pub(crate) runs: RunbookServiceClient<Channel>,
    /// Their token's secret.
    pub(crate) token: String,
}

/// A directory without runbooks, for tests that are not about them.
pub(crate) fn empty_runbooks() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("firebreak-e2e-no-runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until one of the incident's pending deliveries (a later escalation step, a page)
/// has been cancelled: an acknowledgement reached notification.
pub(crate) async fn escalation_cancelled(s: &Stack, incident: &str) {
    eventually("the pending escalation cancelled", || {
        let mut n = s.notifications.clone();
        let id = incident.to_owned();
        async move {
            let list = n
                .list_deliveries(v1::ListDeliveriesRequest {
                    incident_id: id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .deliveries;
            list.iter()
                .any(|d| d.status() == v1::DeliveryState::Cancelled)
                .then_some(())
        }
    })
    .await;
}

/// Polls `check` until it returns Some, for at most 10 seconds.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(10), check).await
}

/// Polls `check` until it returns Some, for at most `patience` (for work that is slow by
/// design, such as a flood; never a timing assertion).
pub(crate) async fn eventually_within<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
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
