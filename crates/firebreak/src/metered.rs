//! A tower layer that counts and times each gRPC or HTTP request a server answers, in
//! `firebreak_{grpc,http}_server_requests_total` and `…_request_duration_seconds`: gRPC by
//! service, method and status code, HTTP by method, matched route and status class.
//!
//! Labels never hold what a caller chose: a gRPC method the server does not have is
//! `other`, and an HTTP request is labelled by the route pattern it matched (axum's
//! `MatchedPath`), never its path, which for a webhook holds an integration key.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};
use firebreak_telemetry::labels;

use crate::traced::Protocol;

/// Wraps a service in [`Metered`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeterLayer(pub(crate) Protocol);

impl<S> tower::Layer<S> for MeterLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            protocol: self.0,
        }
    }
}

/// A service whose requests are counted and timed.
#[derive(Debug, Clone)]
pub(crate) struct Metered<S> {
    inner: S,
    protocol: Protocol,
}

/// What is known of a request before it is answered.
enum Asked {
    /// The gRPC path, and whether the server has that method.
    Grpc { path: String, known: bool },
    /// The HTTP method and the matched route.
    Http {
        method: &'static str,
        route: Option<String>,
    },
}

/// The gRPC status of an answer: the `grpc-status` of a trailers-only answer (every error
/// tonic and the layers give), else OK (a unary success carries it in the trailers).
fn grpc_status<B>(response: &Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

/// Whether the gRPC server has the method at `path`: the access layer's method table has a
/// rule for each (and health and reflection, whose unknown methods tonic answers
/// UNIMPLEMENTED, which makes them `other` too).
fn known_grpc_method(path: &str) -> bool {
    crate::auth::rules::rule(path).is_some()
}

impl<S, B, RB> tower::Service<Request<B>> for Metered<S>
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
        let started = Instant::now();
        let asked = match self.protocol {
            Protocol::Grpc => {
                let path = req.uri().path();
                Asked::Grpc {
                    known: known_grpc_method(path),
                    path: path.to_owned(),
                }
            }
            Protocol::Http => Asked::Http {
                method: labels::http_method_label(req.method().as_str()),
                route: req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|m| m.as_str().to_owned()),
            },
        };
        let work = self.inner.call(req);
        Box::pin(async move {
            let answer = work.await;
            let took = started.elapsed();
            let m = firebreak_telemetry::metrics();
            match (&asked, &answer) {
                (Asked::Grpc { path, known }, Ok(response)) => {
                    m.observe_grpc(
                        labels::grpc_labels(path, *known, grpc_status(response)),
                        took,
                    );
                }
                (Asked::Http { method, route }, Ok(response)) => {
                    let labels =
                        labels::http_labels(method, route.as_deref(), response.status().as_u16());
                    m.observe_http(labels, took);
                }
                // A service error ends the connection, not with an answer: nothing to count.
                (_, Err(_)) => {}
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_firebreak_method_and_the_probes_are_known_and_nothing_else() {
        for path in [
            "/firebreak.v1.IntakeService/RaiseIncident",
            "/firebreak.v1.IncidentService/GetIncident",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(known_grpc_method(path), "{path}");
        }
        for path in [
            "/firebreak.v1.IntakeService/RaiseIncident2",
            "/evil.Service/Method",
            "/",
        ] {
            assert!(!known_grpc_method(path), "{path}");
        }
    }

    #[test]
    fn a_trailers_only_answer_carries_its_status() {
        let ok = Response::new(());
        assert_eq!(grpc_status(&ok), 0);
        let denied = tonic::Status::permission_denied("no").into_http::<()>();
        assert_eq!(grpc_status(&denied), 7);
    }
}
