//! Liveness and readiness. `/livez` answers 200 while the process serves HTTP; `/readyz` (and
//! `/healthz`, its alias) answers 200 only while every dependency the service needs answers
//! its check, each on a connection of its own, and gRPC health (`""`) says the same.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// Checks a dependency: `Err` says what is wrong.
pub(crate) type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Something a service depends on, and whether it is ready without it.
#[derive(Clone)]
pub(crate) struct Dependency {
    /// As in `/readyz` and the `firebreak_dependency_up` metric: `database`, `nats`, ...
    pub(crate) name: String,
    /// Unready while it fails; otherwise it is reported, and the service keeps serving.
    pub(crate) required: bool,
    pub(crate) probe: Probe,
}

/// The readiness the HTTP and gRPC health endpoints report.
#[derive(Clone)]
pub(crate) struct Readiness {
    report: Arc<RwLock<Report>>,
    grpc: tonic_health::server::HealthReporter,
}

struct Report {
    ready: bool,
    /// One line per dependency that is not fine, or what start-up is waiting for.
    problems: Vec<String>,
}

impl Readiness {
    /// Not ready until start-up says otherwise.
    pub(crate) fn new(grpc: tonic_health::server::HealthReporter) -> Self {
        Self {
            report: Arc::new(RwLock::new(Report {
                ready: false,
                problems: vec!["starting".to_owned()],
            })),
            grpc,
        }
    }

    /// Records readiness and the problems seen; gRPC health follows.
    pub(crate) async fn set(&self, ready: bool, problems: Vec<String>) {
        let changed = {
            let mut report = self.report.write().unwrap_or_else(|e| e.into_inner());
            let changed = report.ready != ready;
            *report = Report { ready, problems };
            changed
        };
        if changed {
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            self.grpc.set_service_status("", status).await;
        }
    }

    /// The answer of `/readyz`: `ok` (then any dependency the service serves without), or
    /// `not ready` and what is missing.
    pub(crate) fn http(&self) -> (StatusCode, String) {
        let report = self.report.read().unwrap_or_else(|e| e.into_inner());
        let mut body = if report.ready {
            "ok\n".to_owned()
        } else {
            "not ready\n".to_owned()
        };
        for p in &report.problems {
            body.push_str(p);
            body.push('\n');
        }
        let status = if report.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body)
    }
}

/// Checks every dependency at once; returns readiness and the problems.
pub(crate) async fn check(dependencies: &[Dependency]) -> (bool, Vec<String>) {
    let results = futures::future::join_all(dependencies.iter().map(|d| async move {
        match tokio::time::timeout(CHECK_TIMEOUT, (d.probe)()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer in {} s", CHECK_TIMEOUT.as_secs())),
        }
    }))
    .await;
    let mut ready = true;
    let mut problems = Vec::new();
    for (d, result) in dependencies.iter().zip(results) {
        firebreak_telemetry::metrics().set_dependency_up(&d.name, result.is_ok());
        if let Err(e) = result {
            if d.required {
                ready = false;
                problems.push(format!("{}: {e}", d.name));
            } else {
                problems.push(format!("{}: {e} (serving without it)", d.name));
            }
        }
    }
    (ready, problems)
}

/// Checks the dependencies every second until `shutdown`, logging each change.
pub(crate) async fn monitor(
    dependencies: Vec<Dependency>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut last: Vec<String> = Vec::new();
    while !shutdown.is_cancelled() {
        let (ready, problems) = check(&dependencies).await;
        if problems != last {
            for p in problems.iter().filter(|p| !last.contains(p)) {
                tracing::error!(problem = %p, ready, "a dependency failed");
            }
            if problems.is_empty() {
                tracing::info!("every dependency answers: ready");
            }
            last = problems.clone();
        }
        readiness.set(ready, problems).await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, required: bool, ok: bool) -> Dependency {
        Dependency {
            name: name.to_owned(),
            required,
            probe: Arc::new(move || {
                Box::pin(async move { if ok { Ok(()) } else { Err("down".to_owned()) } })
            }),
        }
    }

    #[tokio::test]
    async fn only_required_dependencies_decide_readiness() {
        let (reporter, _svc) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter);
        assert_eq!(readiness.http().0, StatusCode::SERVICE_UNAVAILABLE);

        let (ready, problems) =
            check(&[dep("database", true, true), dep("nats", false, false)]).await;
        readiness.set(ready, problems).await;
        let (status, body) = readiness.http();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok\nnats: down (serving without it)\n");

        let (ready, problems) =
            check(&[dep("database", true, false), dep("nats", true, true)]).await;
        readiness.set(ready, problems).await;
        assert_eq!(
            readiness.http(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\ndatabase: down\n".to_owned()
            )
        );
    }
}
