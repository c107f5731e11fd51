//! What intake's gRPC edge adds to tonic: `RetryInfo` details on RESOURCE_EXHAUSTED,
//! INVALID_ARGUMENT instead of INTERNAL for a request that is not valid protobuf, and the
//! acknowledgement latency of the calls that carry signals.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Code, Status};

/// Whether a call to `path` carries signals: a method of `IntakeService`.
fn carries_signals(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(firebreak_proto::v1::intake_service_server::SERVICE_NAME))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `google.rpc.Status`, the message `grpc-status-details-bin` carries.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`: when the client may retry.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

/// The type URL of [`RetryInfo`] in an `Any`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A RESOURCE_EXHAUSTED status telling the client, in the standard detail gRPC clients
/// read, to retry after `delay`.
pub(crate) fn exhausted(message: String, delay: Duration) -> Status {
    let retry = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: retry.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::ResourceExhausted,
        message,
        details.encode_to_vec().into(),
    )
}

/// Wraps a generated gRPC server: tonic answers a request body that does not decode with
/// INTERNAL, which tells the caller the server is at fault and is worth retrying; it is the
/// caller's input, so it becomes INVALID_ARGUMENT. A call to `IntakeService` (signals) is
/// timed from here to its answer in `firebreak_intake_ack_seconds`.
#[derive(Clone)]
pub struct InvalidProtobuf<S>(pub(crate) S);

impl<S: NamedService> NamedService for InvalidProtobuf<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for InvalidProtobuf<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let signals = carries_signals(req.uri().path()).then(std::time::Instant::now);
        let answer = self.0.call(req);
        Box::pin(async move {
            let response = answer.await?;
            // A decode failure is answered before the handler runs, as a trailers-only
            // response: its status is in the headers.
            let status = Status::from_header_map(response.headers());
            let response = match status {
                Some(s)
                    if s.code() == Code::Internal
                        && s.message().starts_with("failed to decode Protobuf message") =>
                {
                    Status::invalid_argument(format!("invalid request: {}", s.message()))
                        .into_http()
                }
                _ => response,
            };
            if let Some(started) = signals {
                // A unary success carries its OK in the trailers: no status here is OK.
                let code =
                    Status::from_header_map(response.headers()).map_or(0, |s| s.code() as i32);
                firebreak_telemetry::metrics().observe_ack(
                    firebreak_telemetry::Transport::Grpc,
                    firebreak_telemetry::AckOutcome::of_grpc(code),
                    started.elapsed(),
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intake_service_calls_carry_signals() {
        assert!(carries_signals("/firebreak.v1.IntakeService/RaiseIncident"));
        assert!(carries_signals("/firebreak.v1.IntakeService/RaiseAlerts"));
        assert!(!carries_signals(
            "/firebreak.v1.IntakeServiceX/RaiseIncident"
        ));
        assert!(!carries_signals(
            "/firebreak.v1.IntegrationService/ListIntegrations"
        ));
        assert!(!carries_signals(
            "/firebreak.v1.SilenceService/ListSilences"
        ));
        assert!(!carries_signals("firebreak.v1.IntakeService/RaiseIncident"));
    }
}
