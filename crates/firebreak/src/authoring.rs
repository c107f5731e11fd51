//! Runbook authoring commands that need no server state: `runbook test` and `runbook dry-run`.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use firebreak_proto::v1::{self, incident_service_client::IncidentServiceClient};
use firebreak_runbook::fixture::{fixture_files, read_fixture, run_case, run_dir};
use firebreak_runbook::{Catalog, Limits, Simulator, simulate};
use tonic::transport::Channel;

use crate::output::Out;

fn load(dir: &Path) -> anyhow::Result<Catalog> {
    Catalog::load(dir, &Limits::default()).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!("{} runbook error(s) in {}", errors.len(), dir.display())
    })
}

/// `firebreak runbook test DIR`: every case of every fixture, a line each. Exit code 1 when
/// a case fails, a fixture is broken, or (with `require_tests`) a runbook has no tests.
pub(crate) fn test(dir: &Path, require_tests: bool, out: &Out) -> i32 {
    let catalog = match load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let results = match run_dir(dir, &catalog, &Limits::default()) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return 1;
        }
    };
    out.test_results(&results);
    let mut code = i32::from(results.iter().any(|r| r.failure.is_some()));
    let tested: Vec<String> = fixture_files(dir)
        .map(|f| f.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default();
    for rb in catalog.all() {
        if !tested.contains(&rb.manifest.name) {
            eprintln!(
                "{}: runbook {} has no tests ({}.test.yaml)",
                if require_tests { "error" } else { "warning" },
                rb.manifest.name,
                rb.manifest.name
            );
            if require_tests {
                code = 1;
            }
        }
    }
    code
}

/// Where a dry run takes its incident from.
pub(crate) enum Source {
    Incident {
        id: String,
        channel: Channel,
        request_timeout: std::time::Duration,
    },
    Fixture {
        path: PathBuf,
        case: Option<String>,
    },
}

/// `firebreak runbook dry-run NAME`: runs the script with every action simulated and prints
/// the plan. Nothing is recorded and nothing acts.
pub(crate) async fn dry_run(
    dir: &Path,
    name: &str,
    source: Source,
    out: &Out,
) -> anyhow::Result<i32> {
    let catalog = load(dir)?;
    let runbook = catalog
        .get(name)
        .with_context(|| format!("no runbook named {name:?} in {}", dir.display()))?
        .clone();
    let limits = Limits::default();
    let sim = match source {
        Source::Incident {
            id,
            channel,
            request_timeout,
        } => {
            let incident = IncidentServiceClient::new(channel)
                .get_incident(v1::GetIncidentRequest { id })
                .await
                .map_err(|s| crate::cli::status(s, request_timeout))?
                .into_inner()
                .incident
                .context("the server returned no incident")?;
            let input = firebreak_orchestration::incident_input(&incident);
            let params = runbook.params(None).map_err(anyhow::Error::msg)?;
            tokio::task::spawn_blocking(move || {
                simulate(
                    &runbook,
                    input,
                    params,
                    Simulator::new(Vec::new(), Vec::new()),
                    &limits,
                )
            })
            .await?
        }
        Source::Fixture { path, case } => {
            let fixture = read_fixture(&path).map_err(anyhow::Error::msg)?;
            let chosen = match &case {
                Some(c) => fixture.cases.into_iter().find(|x| &x.name == c),
                None => fixture.cases.into_iter().next(),
            };
            let Some(chosen) = chosen else {
                bail!("{}: no case {:?}", path.display(), case.unwrap_or_default());
            };
            tokio::task::spawn_blocking(move || run_case(&runbook, &chosen, &limits))
                .await?
                .map_err(anyhow::Error::msg)?
        }
    };
    out.simulation(name, &sim);
    Ok(i32::from(matches!(
        sim.outcome,
        firebreak_runbook::Outcome::Failed(_)
    )))
}
