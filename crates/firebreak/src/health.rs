//! Liveness and readiness. `/livez` answers 200 while the process serves HTTP; `/readyz` (and
//! `/healthz`, its alias) answers 200 only while every dependency the service needs answers
//! its check, each on a connection of its own, and gRPC health says the same.
//!
//! gRPC health names, for probes that ask per service (Kubernetes' native gRPC probe): `""`
//! and, for each Firebreak service the process runs, its name (`intake`, `triage`,
//! `orchestration`, `notification`) follow readiness; `NAME.live` is SERVING while the gRPC
//! server serves (liveness, as `/livez`). A name the process does not run is NOT_FOUND, so a
//! probe aimed at the wrong Deployment fails instead of passing.

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
    /// The gRPC health names that follow readiness: `""` and the services' names.
    names: Arc<Vec<String>>,
}

/// The gRPC health name of a service's liveness: `NAME.live`.
pub(crate) fn live_name(service: &str) -> String {
    format!("{service}.live")
}

struct Report {
    ready: bool,
    /// One line per dependency that is not fine, or what start-up is waiting for.
    problems: Vec<String>,
}

impl Readiness {
    /// Not ready until start-up says otherwise. Registers the gRPC health names of
    /// `services` (the Firebreak services this process runs): each NOT_SERVING, as `""`, and
    /// each `NAME.live` SERVING.
    pub(crate) async fn start(
        grpc: tonic_health::server::HealthReporter,
        services: &[&str],
    ) -> Self {
        let mut names = vec![String::new()];
        for s in services {
            names.push((*s).to_owned());
            grpc.set_service_status(live_name(s), tonic_health::ServingStatus::Serving)
                .await;
        }
        for n in &names {
            grpc.set_service_status(n, tonic_health::ServingStatus::NotServing)
                .await;
        }
        Self {
            report: Arc::new(RwLock::new(Report {
                ready: false,
                problems: vec!["starting".to_owned()],
            })),
            grpc,
            names: Arc::new(names),
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
            for name in self.names.iter() {
                self.grpc.set_service_status(name, status).await;
            }
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

    /// gRPC health's answer for `name`: its status, or the call's error code.
    async fn grpc_status(
        service: &tonic_health::server::HealthService,
        name: &str,
    ) -> Result<ServingStatus, tonic::Code> {
        use tonic_health::pb::health_server::Health;
        service
            .check(tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: name.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| s.code())
    }

    use tonic_health::pb::health_check_response::ServingStatus;

    #[tokio::test]
    async fn each_service_name_follows_readiness_and_its_live_name_serves() {
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let readiness = Readiness::start(reporter, &["triage", "notification"]).await;
        let all = [
            "",
            "triage",
            "notification",
            "triage.live",
            "notification.live",
        ];
        let statuses = || async {
            let mut v = Vec::new();
            for name in all {
                v.push(grpc_status(&service, name).await);
            }
            v
        };
        use ServingStatus::{NotServing, Serving};
        assert_eq!(
            statuses().await,
            [
                Ok(NotServing),
                Ok(NotServing),
                Ok(NotServing),
                Ok(Serving),
                Ok(Serving)
            ]
        );
        readiness.set(true, Vec::new()).await;
        assert_eq!(statuses().await, [Ok(Serving); 5]);
        readiness.set(false, vec!["nats: down".to_owned()]).await;
        assert_eq!(
            statuses().await,
            [
                Ok(NotServing),
                Ok(NotServing),
                Ok(NotServing),
                Ok(Serving),
                Ok(Serving)
            ]
        );
        // A service this process does not run is unknown, not SERVING.
        for other in [
            "intake",
            "intake.live",
            "orchestration",
            "firebreak.v1.IncidentService",
        ] {
            assert_eq!(
                grpc_status(&service, other).await,
                Err(tonic::Code::NotFound),
                "{other}"
            );
        }
    }

    #[tokio::test]
    async fn only_required_dependencies_decide_readiness() {
        let (reporter, _svc) = tonic_health::server::health_reporter();
        let readiness = Readiness::start(reporter, &["intake"]).await;
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
