//! The runbook catalog: every `NAME.yaml` + `NAME.rhai` pair of a directory, validated at load.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::manifest::{Manifest, RunLimits};
use crate::sandbox::{ACTIONS, Limits, engine};

/// A runbook that loaded: its manifest and its compiled script.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub manifest: Manifest,
    pub script_path: PathBuf,
    pub source: Arc<str>,
    pub(crate) ast: Arc<rhai::AST>,
}

/// Why a runbook did not load, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the whole file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// The runbooks of one directory.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    runbooks: Vec<Runbook>,
}

impl Catalog {
    /// Loads every runbook in `dir`. Any error in any runbook fails the whole load, so that a
    /// broken runbook is noticed at start-up and not at 3 a.m.; every error is reported.
    pub fn load(dir: &Path, limits: &Limits) -> Result<Self, Vec<LoadError>> {
        let whole = |message: String| LoadError {
            file: dir.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| vec![whole(format!("cannot read the runbook directory: {e}"))])?;
        let paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        Self::from_files(
            paths,
            &|p| std::fs::read_to_string(p).map_err(|e| e.to_string()),
            limits,
        )
    }

    /// The runbooks shipped with Firebreak (`runbooks/` of its source), compiled into the
    /// binary: the catalogue when no directory is configured. Errors name them
    /// `<built-in>/NAME.yaml`.
    pub fn builtin(limits: &Limits) -> Result<Self, Vec<LoadError>> {
        const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
        let root = Path::new("<built-in>");
        let paths = BUILTIN.iter().map(|(name, _)| root.join(name)).collect();
        let read = |p: &Path| {
            BUILTIN
                .iter()
                .find(|(name, _)| root.join(name) == p)
                .map(|(_, text)| (*text).to_owned())
                .ok_or_else(|| "no such built-in file".to_owned())
        };
        Self::from_files(paths, &read, limits)
    }

    /// This catalogue with `other`'s runbooks added, each replacing the one of the same name.
    pub fn overlay(mut self, other: Catalog) -> Self {
        for rb in other.runbooks {
            self.runbooks
                .retain(|r| r.manifest.name != rb.manifest.name);
            self.runbooks.push(rb);
        }
        self.runbooks
            .sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        self
    }

    /// The runbooks among `paths` (manifests and scripts; other files are ignored), read
    /// through `read`.
    fn from_files(
        mut paths: Vec<PathBuf>,
        read: &dyn Fn(&Path) -> Result<String, String>,
        limits: &Limits,
    ) -> Result<Self, Vec<LoadError>> {
        paths.sort();
        let mut runbooks = Vec::new();
        let mut errors = Vec::new();
        let manifests: Vec<&PathBuf> = paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .filter(|p| !p.to_string_lossy().ends_with(".test.yaml"))
            .collect();
        for path in &paths {
            if path.extension().is_some_and(|e| e == "rhai")
                && !manifests.iter().any(|m| m.file_stem() == path.file_stem())
            {
                errors.push(LoadError {
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    message: "script has no manifest (NAME.yaml) beside it".into(),
                });
            }
        }
        for path in manifests {
            match load_one(path, read, limits) {
                Ok(rb) => runbooks.push(rb),
                Err(e) => errors.extend(e),
            }
        }
        let mut names = BTreeMap::new();
        for rb in &runbooks {
            if let Some(other) = names.insert(rb.manifest.name.clone(), rb.script_path.clone()) {
                errors.push(LoadError {
                    file: rb.script_path.clone(),
                    line: 0,
                    column: 0,
                    message: format!(
                        "runbook name {:?} is used by {} too",
                        rb.manifest.name,
                        other.display()
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(Self { runbooks })
        } else {
            Err(errors)
        }
    }

    /// All runbooks, by name.
    pub fn all(&self) -> &[Runbook] {
        &self.runbooks
    }

    /// One runbook by name.
    pub fn get(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.manifest.name == name)
    }

    /// The runbooks that run for an incident with these properties.
    pub fn matching(
        &self,
        category: &str,
        severity: u32,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&Runbook> {
        self.runbooks
            .iter()
            .filter(|r| r.manifest.matches(category, severity, labels))
            .collect()
    }
}

/// An override of a parameter the runbook's manifest does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("runbook {runbook} has no parameter {name:?}")]
pub struct UnknownParameter {
    pub runbook: String,
    pub name: String,
}

impl Runbook {
    /// The parameters a run receives: the manifest's defaults, with `overrides` applied.
    /// An override of a parameter the manifest does not declare is an error.
    pub fn params(
        &self,
        overrides: Option<&BTreeMap<String, serde_json::Value>>,
    ) -> Result<serde_json::Value, UnknownParameter> {
        let mut params: serde_json::Map<String, serde_json::Value> = self
            .manifest
            .parameters
            .iter()
            .map(|(k, p)| (k.clone(), p.default.clone()))
            .collect();
        for (k, v) in overrides.into_iter().flatten() {
            if !params.contains_key(k) {
                return Err(UnknownParameter {
                    runbook: self.manifest.name.clone(),
                    name: k.clone(),
                });
            }
            params.insert(k.clone(), v.clone());
        }
        Ok(serde_json::Value::Object(params))
    }
}

fn load_one(
    path: &Path,
    read: &dyn Fn(&Path) -> Result<String, String>,
    limits: &Limits,
) -> Result<Runbook, Vec<LoadError>> {
    let at = |line: usize, column: usize, message: String| {
        vec![LoadError {
            file: path.to_path_buf(),
            line,
            column,
            message,
        }]
    };
    let text = read(path).map_err(|e| at(0, 0, format!("cannot read: {e}")))?;
    let manifest: Manifest = serde_yaml::from_str(&text).map_err(|e| {
        let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        at(line, col, e.to_string())
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let mut errors = Vec::new();
    if manifest.name != stem {
        errors.push(
            at(
                1,
                1,
                format!("name {:?} must equal the file name {stem:?}", manifest.name),
            )
            .remove(0),
        );
    }
    // Errors about a field point at the line of its key.
    let field = |key: &str, message: String| {
        let (line, column) = line_of(&text, key);
        LoadError {
            file: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let sev = manifest.matches.severity;
    if !(1..=5).contains(&sev.min) || !(1..=5).contains(&sev.max) || sev.min > sev.max {
        errors.push(field(
            "severity",
            format!(
                "match.severity {}..{} must lie within 1..5 with min <= max",
                sev.min, sev.max
            ),
        ));
    }
    if manifest.timeout_seconds == 0 {
        errors.push(field(
            "timeout_seconds",
            "timeout_seconds must be at least 1".into(),
        ));
    }
    let known = |name: &str| {
        ACTIONS
            .iter()
            .any(|a| *a == name || a.split('.').next() == Some(name))
    };
    for cap in &manifest.capabilities {
        if !known(cap) {
            errors.push(field(
                "capabilities",
                format!(
                    "unknown capability {cap:?}; known actions: {}",
                    ACTIONS.join(", ")
                ),
            ));
        }
    }
    for action in &manifest.approval.actions {
        if !known(action) || action.starts_with("approval") {
            errors.push(field(
                "approval",
                format!("approval.actions: {action:?} is not an action that can need approval"),
            ));
        } else if !manifest.allows(action) {
            errors.push(field(
                "approval",
                format!("approval.actions: {action:?} is not among the capabilities"),
            ));
        }
    }
    if manifest.approval.timeout_seconds == 0 {
        errors.push(field(
            "timeout_seconds",
            "approval.timeout_seconds must be at least 1".into(),
        ));
    }
    for (action, retry) in &manifest.retry {
        if !known(action) {
            errors.push(field(
                "retry",
                format!("retry: {action:?} is not a known action or module"),
            ));
        }
        if !(1..=10).contains(&retry.attempts) || retry.backoff_ms > 60_000 {
            errors.push(field(
                "retry",
                format!("retry of {action}: attempts must be 1 to 10 and backoff_ms at most 60000"),
            ));
        }
    }
    for name in manifest.secrets.iter().map(|s| &s.name) {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            errors.push(field(
                "secrets",
                format!("secret name {name:?} may hold only letters, digits, '_' and '-'"),
            ));
        }
    }
    for (cap, value, max) in [
        (
            "max_steps",
            manifest.limits.max_steps,
            RunLimits::MAX.max_steps,
        ),
        (
            "max_pages",
            manifest.limits.max_pages,
            RunLimits::MAX.max_pages,
        ),
        (
            "max_notifications",
            manifest.limits.max_notifications,
            RunLimits::MAX.max_notifications,
        ),
    ] {
        let min = u32::from(cap == "max_steps");
        if !(min..=max).contains(&value) {
            errors.push(field(
                cap,
                format!("limits.{cap} must be {min} to {max}, not {value}"),
            ));
        }
    }
    let script_path = path.with_extension("rhai");
    // The size is checked before the script is read whole or compiled (a built-in script
    // has no file to measure, and is ours).
    let size = std::fs::metadata(&script_path).map_or(0, |m| m.len());
    if size > limits.max_script_bytes as u64 {
        errors.push(LoadError {
            file: script_path.clone(),
            line: 0,
            column: 0,
            message: format!(
                "the script is {size} bytes, more than {} (split it, or move data into parameters)",
                limits.max_script_bytes
            ),
        });
        return Err(errors);
    }
    let source = match read(&script_path) {
        Ok(s) => s,
        Err(e) => {
            errors.push(LoadError {
                file: script_path.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read the script: {e}"),
            });
            return Err(errors);
        }
    };
    let engine = engine(limits);
    let ast = match engine.compile(&source) {
        Ok(ast) => ast,
        Err(e) => {
            errors.push(LoadError {
                file: script_path.clone(),
                line: e.1.line().unwrap_or(0),
                column: e.1.position().unwrap_or(0),
                message: match e.err_type() {
                    // The only variables the engine forbids are those past the limit.
                    rhai::ParseErrorType::ForbiddenVariable(name) => format!(
                        "too many variables: `{name}` would be more than {} in scope at once (parameters included)",
                        limits.max_variables
                    ),
                    other => other.to_string(),
                },
            });
            return Err(errors);
        }
    };
    let has_run = ast
        .iter_functions()
        .any(|f| f.name == "run" && f.params.len() == 2);
    if !has_run {
        errors.push(LoadError {
            file: script_path.clone(),
            line: 1,
            column: 1,
            message: "the script must define fn run(incident, params)".into(),
        });
    }
    if errors.is_empty() {
        Ok(Runbook {
            manifest,
            script_path,
            source: source.into(),
            ast: Arc::new(ast),
        })
    } else {
        Err(errors)
    }
}

/// The 1-based line and column of the first `key:` in a YAML text; (0, 0) when absent.
fn line_of(text: &str, key: &str) -> (usize, usize) {
    let pat = format!("{key}:");
    text.lines()
        .enumerate()
        .find_map(|(i, l)| {
            let trimmed = l.trim_start();
            trimmed
                .starts_with(&pat)
                .then(|| (i + 1, l.len() - trimmed.len() + 1))
        })
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Catalog) -> Vec<&str> {
        c.all().iter().map(|r| r.manifest.name.as_str()).collect()
    }

    #[test]
    fn the_builtin_catalogue_is_the_shipped_directory_and_a_directory_overlays_it() {
        let limits = Limits::default();
        let builtin = Catalog::builtin(&limits).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
        let shipped = Catalog::load(&dir, &limits).unwrap();
        assert_eq!(names(&builtin), names(&shipped));
        for (b, s) in builtin.all().iter().zip(shipped.all()) {
            assert_eq!(b.source, s.source);
        }
        assert!(names(&builtin).contains(&"denial-of-service"));

        let mine = tempfile::tempdir().unwrap();
        std::fs::write(
            mine.path().join("malware.yaml"),
            "name: malware\nmatch: {}\ncapabilities: [incident]\n",
        )
        .unwrap();
        std::fs::write(
            mine.path().join("malware.rhai"),
            "// Mine.\nfn run(incident, params) { incident::note(\"mine\"); }\n",
        )
        .unwrap();
        let overlaid = builtin.overlay(Catalog::load(mine.path(), &limits).unwrap());
        assert_eq!(names(&overlaid), names(&shipped), "replaced, not added");
        assert!(overlaid.get("malware").unwrap().source.contains("mine"));
    }
}
