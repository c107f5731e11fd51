//! A tower layer that runs each gRPC or HTTP request in a server span, a child of the trace
//! context its caller sent in `traceparent` (or the root of a new trace), so the events and
//! calls it causes continue that trace. Health checks and scrapes get no span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use tracing::Instrument as _;

/// Which protocol the wrapped server speaks, for the span's semantic-convention attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    Http,
}

/// Wraps a service in [`Traced`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceLayer(pub(crate) Protocol);

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            protocol: self.0,
        }
    }
}

/// A service whose requests run in server spans of their caller's trace.
#[derive(Debug, Clone)]
pub(crate) struct Traced<S> {
    inner: S,
    protocol: Protocol,
}

/// Paths probed, scraped or polled every few seconds (replicas syncing credentials): a span
/// each would drown the traces.
fn untraced(path: &str) -> bool {
    matches!(
        path,
        "/livez"
            | "/readyz"
            | "/healthz"
            | "/metrics"
            | "/firebreak.internal.v1.CredentialService/SyncCredentials"
    ) || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
}

/// The server span of a request to `path`: `rpc.*` for gRPC (`/package.Service/Method`),
/// `http.*` otherwise, named by its route (`route`, the matched pattern). An HTTP path is
/// never recorded: a webhook's path may hold its integration key, and span fields reach logs.
fn server_span(protocol: Protocol, method: &str, path: &str, route: Option<&str>) -> tracing::Span {
    match protocol {
        Protocol::Grpc => {
            let (service, rpc) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("unknown", "unknown"));
            tracing::info_span!(
                "grpc.server",
                otel.name = format!("{service}/{rpc}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = rpc,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        }
        Protocol::Http => tracing::info_span!(
            "http.server",
            otel.name = format!("{method} {}", route.unwrap_or_default())
                .trim_end()
                .to_owned(),
            http.route = route,
            otel.kind = "server",
            http.request.method = method,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        ),
    }
}

/// Records the answer on the span: the gRPC status when the server answered trailers-only
/// (every error), else OK; the HTTP status code.
fn record_answer<B>(span: &tracing::Span, protocol: Protocol, response: &Response<B>) {
    match protocol {
        Protocol::Grpc => {
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            // Server errors are the server's: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
            // INTERNAL, UNAVAILABLE, DATA_LOSS.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                span.record("otel.status_code", "ERROR");
            }
        }
        Protocol::Http => {
            let status = response.status().as_u16();
            span.record("http.response.status_code", i64::from(status));
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if untraced(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let traceparent = req
            .headers()
            .get(firebreak_telemetry::trace::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let span = firebreak_telemetry::trace::follow(
            server_span(
                self.protocol,
                req.method().as_str(),
                req.uri().path(),
                req.extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|m| m.as_str()),
            ),
            traceparent,
        );
        let protocol = self.protocol;
        let work = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let answer = work.await;
                if let Ok(response) = &answer {
                    record_answer(&tracing::Span::current(), protocol, response);
                }
                answer
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_scrapes_are_not_traced_and_calls_are() {
        for path in [
            "/livez",
            "/readyz",
            "/metrics",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/firebreak.internal.v1.CredentialService/SyncCredentials",
        ] {
            assert!(untraced(path), "{path}");
        }
        for path in [
            "/firebreak.v1.IntakeService/RaiseIncident",
            "/v1/alertmanager",
            "/metricsx",
        ] {
            assert!(!untraced(path), "{path}");
        }
    }
}
