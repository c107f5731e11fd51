//! A tower layer that runs each gRPC or HTTP request in the trace context its caller sent in
//! `traceparent` (or a new trace), so the events and calls it causes continue that trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::Request;

/// Wraps a service in [`Traced`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced(inner)
    }
}

/// A service whose requests run in their caller's trace context.
#[derive(Debug, Clone)]
pub(crate) struct Traced<S>(S);

impl<S, B> tower::Service<Request<B>> for Traced<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let work = self.0.call(req);
        Box::pin(firebreak_telemetry::trace::scope(
            traceparent.as_deref(),
            work,
        ))
    }
}
