//! Which alerts are silenced: the silences in force, compiled once and held in memory so the
//! ingest path decides without reading the store. Reloaded every second (other replicas'
//! changes) and at once after this process changes one (the silences API calls
//! [`Silencer::reload`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use firebreak_domain::Micros;
use firebreak_domain::silence::{Compiled, silences};
use firebreak_storage::SilenceStore;
use tokio_util::sync::CancellationToken;

/// How often the silences are read again.
const RELOAD: Duration = Duration::from_secs(1);

/// A silence in force (or to come), ready to match.
struct Held {
    id: String,
    starts_at: Micros,
    ends_at: Micros,
    /// Compiled once: a reload compiles a silence again only when its matchers changed.
    matchers: Arc<Vec<Compiled>>,
}

/// The silences held at one moment.
pub struct InForce(Arc<Vec<Held>>);

impl InForce {
    /// The silence that silences an alert with `labels` at `at`, if one does (with none held,
    /// nothing is scanned).
    pub fn silenced_by(&self, labels: &BTreeMap<String, String>, at: Micros) -> Option<String> {
        self.0
            .iter()
            .find(|h| h.starts_at <= at && at < h.ends_at && silences(&h.matchers, labels))
            .map(|h| h.id.clone())
    }
}

/// The silences intake consults.
pub struct Silencer {
    store: Arc<dyn SilenceStore>,
    held: RwLock<Arc<Vec<Held>>>,
}

impl std::fmt::Debug for Silencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silencer").finish_non_exhaustive()
    }
}

impl Silencer {
    pub fn new(store: Arc<dyn SilenceStore>) -> Self {
        Self {
            store,
            held: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// Where silences are kept.
    pub fn store(&self) -> &Arc<dyn SilenceStore> {
        &self.store
    }

    /// Reads the silences that have not ended by `now` and holds them. A silence held
    /// already with the same matchers keeps them compiled: a reload compiles only what
    /// changed, so a thousand silences cost a read, not a thousand regex compilations, every
    /// second.
    pub async fn reload(&self, now: Micros) -> Result<(), firebreak_storage::Error> {
        let kept: HashMap<String, Arc<Vec<Compiled>>> = self
            .snapshot()
            .0
            .iter()
            .map(|h| (h.id.clone(), h.matchers.clone()))
            .collect();
        let held: Vec<Held> = self
            .store
            .silences()
            .await?
            .into_iter()
            .filter(|s| s.ends_at > now)
            .filter_map(|s| {
                let same = kept.get(&s.id).filter(|compiled| {
                    compiled.iter().map(Compiled::matcher).eq(s.matchers.iter())
                });
                let matchers = match same {
                    Some(compiled) => compiled.clone(),
                    // Each was checked when it was set; one that no longer compiles
                    // silences nothing rather than everything.
                    None => Arc::new(s.check().ok()?),
                };
                Some(Held {
                    id: s.id,
                    starts_at: s.starts_at,
                    ends_at: s.ends_at,
                    matchers,
                })
            })
            .collect();
        *self.held.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(held);
        Ok(())
    }

    /// The silences held now: one read of the lock for a whole call's alerts.
    pub fn snapshot(&self) -> InForce {
        InForce(self.held.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Reloads every second until `stop`.
    pub async fn run(
        self: Arc<Self>,
        clock: Arc<dyn firebreak_domain::Clock>,
        stop: CancellationToken,
    ) {
        loop {
            if let Err(e) = self.reload(clock.now()).await {
                tracing::warn!(error = %e, "reading the silences failed; the ones held stay in force");
            }
            tokio::select! {
                () = tokio::time::sleep(RELOAD) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
