//! Runbook authoring commands that need no server: `runbook test` and `runbook dry-run
//! --fixture`.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use firebreak_runbook::fixture::{fixture_files, read_fixture, run_case, run_dir};
use firebreak_runbook::{Catalog, Limits, Outcome};

use crate::output::Out;

/// Errors found in files, one `file:line:col: message` a line after a summary: the message
/// of one error, so that `--output json` prints them as one object.
pub(crate) fn file_errors(what: &str, errors: &[impl std::fmt::Display]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    crate::output::Failure::new(
        crate::output::Exit::Failed,
        format!("{} {what} error(s):\n{}", lines.len(), lines.join("\n")),
    )
    .into()
}

pub(crate) fn load(dir: &Path) -> anyhow::Result<Catalog> {
    Catalog::load(dir, &Limits::default()).map_err(|errors| file_errors("runbook", &errors))
}

/// `firebreak runbook test DIR`: every case of every fixture, a line each. Exit code 1 when
/// a case fails, a fixture is broken, or (with `require_tests`) a runbook has no tests.
pub(crate) fn test(dir: &Path, require_tests: bool, out: &Out) -> anyhow::Result<i32> {
    let catalog = load(dir)?;
    let results = run_dir(dir, &catalog, &Limits::default())
        .map_err(|errors| file_errors("fixture", &errors))?;
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
    Ok(code)
}

/// `firebreak runbook dry-run NAME --fixture FILE`: runs a fixture's case against the
/// runbook of a local directory with every action simulated and prints the plan. Nothing is
/// recorded and nothing acts. (With `--incident` the server simulates: see the CLI.)
pub(crate) async fn dry_run(
    dir: &Path,
    name: &str,
    path: PathBuf,
    case: Option<String>,
    out: &Out,
) -> anyhow::Result<i32> {
    let catalog = load(dir)?;
    let runbook = catalog
        .get(name)
        .with_context(|| format!("no runbook named {name:?} in {}", dir.display()))?
        .clone();
    let limits = Limits::default();
    let fixture = read_fixture(&path).map_err(anyhow::Error::msg)?;
    let chosen = match &case {
        Some(c) => fixture.cases.into_iter().find(|x| &x.name == c),
        None => fixture.cases.into_iter().next(),
    };
    let Some(chosen) = chosen else {
        bail!("{}: no case {:?}", path.display(), case.unwrap_or_default());
    };
    let sim = tokio::task::spawn_blocking(move || run_case(&runbook, &chosen, &limits))
        .await?
        .map_err(anyhow::Error::msg)?;
    let (outcome, failed) = match &sim.outcome {
        Outcome::Succeeded { .. } => ("succeeded".to_owned(), false),
        Outcome::Failed(e) => (format!("failed: {e}"), true),
        Outcome::Waiting { .. } => ("waiting".to_owned(), false),
        Outcome::Sleeping { .. } => ("sleeping".to_owned(), false),
        Outcome::Interrupted { reason, .. } => (format!("interrupted: {reason}"), true),
    };
    out.simulation(name, &outcome, &sim.steps, &sim.log);
    Ok(i32::from(failed))
}
