//! A typed client for Firebreak's gRPC API: one connection that sends a token with every
//! call, verifies the server against a CA of the caller's choosing, bounds each call with a
//! timeout, and retries raises on one idempotency key, so a retry never opens a second
//! incident.
//!
//! ```no_run
//! # async fn demo() -> Result<(), firebreak_client::Error> {
//! use firebreak_client::{Client, ClientConfig};
//! use firebreak_proto::v1;
//! let client = Client::connect(ClientConfig::new("http://127.0.0.1:7400").token("fb_…")).await?;
//! let raised = client
//!     .raise_incident(v1::AlertInput { title: "checkout down".into(), ..Default::default() })
//!     .await?;
//! let incident = client
//!     .incidents()
//!     .get_incident(v1::GetIncidentRequest { id: raised.incident_id })
//!     .await?;
//! # let _ = incident;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1;
use tonic::Code;

pub use firebreak_proto::v1 as proto;

/// The longest endpoint, token and CA certificate taken.
const MAX_ENDPOINT: usize = 2048;
const MAX_TOKEN: usize = 4096;
const MAX_CA: usize = 1024 * 1024;

/// How to reach Firebreak.
#[derive(Clone)]
pub struct ClientConfig {
    endpoint: String,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl ClientConfig {
    /// `http://host:port`, or `https://host:port` for TLS (the platform's roots, or
    /// [`ClientConfig::ca_pem`]'s). Calls time out after 10 s; transient failures are retried
    /// 4 times, backing off from 100 ms.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            ca_pem: None,
            timeout: Duration::from_secs(10),
            retries: 4,
            backoff: Duration::from_millis(100),
        }
    }

    /// The token sent with every call (`authorization: Bearer …`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The CA certificate (PEM) an `https://` server's certificate must chain to.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Each call's deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a transient failure (UNAVAILABLE, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED) is retried, and the first pause (doubled each time).
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }
}

/// What went wrong, naming the setting or carrying the server's answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

/// A connection to Firebreak; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    channel: AuthedChannel,
    retries: u32,
    backoff: Duration,
}

impl Client {
    /// Checks `config` and makes the connection (lazily: the first call connects, so a
    /// client made before the server is up works once it is).
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        if config.endpoint.is_empty() || config.endpoint.len() > MAX_ENDPOINT {
            return Err(invalid("endpoint", format!("1 to {MAX_ENDPOINT} bytes")));
        }
        let tls = config.endpoint.starts_with("https://");
        if !tls && !config.endpoint.starts_with("http://") {
            return Err(invalid("endpoint", "must start with http:// or https://"));
        }
        if let Some(t) = &config.token
            && (t.is_empty() || t.len() > MAX_TOKEN || t.bytes().any(|b| !b.is_ascii_graphic()))
        {
            return Err(invalid(
                "token",
                format!("1 to {MAX_TOKEN} printable ASCII characters"),
            ));
        }
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "must be more than zero"));
        }
        let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| invalid("endpoint", e.to_string()))?
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        match (&config.ca_pem, tls) {
            (Some(_), false) => return Err(invalid("ca_pem", "needs an https:// endpoint")),
            (Some(pem), true) if pem.len() > MAX_CA => {
                return Err(invalid("ca_pem", format!("at most {MAX_CA} bytes")));
            }
            (Some(pem), true) => {
                endpoint = endpoint.tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )?;
            }
            (None, true) => {
                endpoint = endpoint
                    .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())?;
            }
            (None, false) => {}
        }
        let channel = endpoint.connect_lazy();
        Ok(Self {
            channel: firebreak_proto::access::authed(channel, config.token.as_deref()),
            retries: config.retries,
            backoff: config.backoff,
        })
    }

    /// Raises an incident from `alert`, retrying transient failures with one idempotency key:
    /// however many attempts reach the server, one alert is stored and at most one incident
    /// opened.
    pub async fn raise_incident(
        &self,
        alert: v1::AlertInput,
    ) -> Result<v1::RaiseIncidentResponse, Error> {
        let request = v1::RaiseIncidentRequest {
            alert: Some(alert),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        let intake = self.intake();
        self.retrying(|| {
            let request = request.clone();
            let mut intake = intake.clone();
            async move { intake.raise_incident(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// Runs `call` until it succeeds, fails for good, or the retries are spent.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut pause = self.backoff;
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(s) if attempt < self.retries && transient(s.code()) => {
                    attempt += 1;
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2).min(Duration::from_secs(5));
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Raising alerts and resolving them.
    pub fn intake(&self) -> v1::intake_service_client::IntakeServiceClient<AuthedChannel> {
        v1::intake_service_client::IntakeServiceClient::new(self.channel.clone())
    }

    /// Incidents: list, read, acknowledge, resolve, assign, review, …
    pub fn incidents(&self) -> v1::incident_service_client::IncidentServiceClient<AuthedChannel> {
        v1::incident_service_client::IncidentServiceClient::new(self.channel.clone())
    }

    /// Runbooks, runs and approvals.
    pub fn runbooks(&self) -> v1::runbook_service_client::RunbookServiceClient<AuthedChannel> {
        v1::runbook_service_client::RunbookServiceClient::new(self.channel.clone())
    }

    /// Deliveries, schedules, maintenance windows, subscribers.
    pub fn notifications(
        &self,
    ) -> v1::notification_service_client::NotificationServiceClient<AuthedChannel> {
        v1::notification_service_client::NotificationServiceClient::new(self.channel.clone())
    }
}

/// Whether a failure may pass if the call is made again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(transient(c), "{c:?}");
        }
        for c in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::NotFound,
            Code::Internal,
        ] {
            assert!(!transient(c), "{c:?}");
        }
    }

    #[tokio::test]
    async fn bad_settings_are_refused_naming_the_field() {
        let field = |c: ClientConfig| async move {
            match Client::connect(c).await {
                Err(Error::Config { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(ClientConfig::new("")).await, "endpoint");
        assert_eq!(field(ClientConfig::new("127.0.0.1:7400")).await, "endpoint");
        assert_eq!(
            field(ClientConfig::new(format!("http://{}", "a".repeat(3000)))).await,
            "endpoint"
        );
        assert_eq!(
            field(ClientConfig::new("http://a:1").token("has space")).await,
            "token"
        );
        assert_eq!(
            field(ClientConfig::new("http://a:1").token("x".repeat(5000))).await,
            "token"
        );
        assert_eq!(
            field(ClientConfig::new("http://a:1").ca_pem(b"pem".to_vec())).await,
            "ca_pem"
        );
        assert_eq!(
            field(ClientConfig::new("http://a:1").timeout(Duration::ZERO)).await,
            "timeout"
        );
        let shown = format!("{:?}", ClientConfig::new("http://a:1").token("fb_secret"));
        assert!(!shown.contains("fb_secret"), "{shown}");
    }
}
