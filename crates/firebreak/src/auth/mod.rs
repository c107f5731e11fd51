//! Authentication and authorization for every gRPC call, in one tower layer.
//!
//! Each process keeps a copy of the credential table (token hash → principal) and verifies
//! tokens against it locally: no call waits on another service. The copy follows the
//! directory (notification's store) by version: in embedded mode read in-process, in
//! distributed mode over the internal `CredentialService` with the service credential. It
//! syncs every second, and at once (at most a few times a second) when a token it does not
//! know is presented, so a new token works everywhere at its first use and a revocation
//! reaches every replica within the sync interval. The rule a method needs is in
//! [`rules::METHODS`]; the handlers never check roles, they read the verified
//! [`Principal`] the layer puts on the request.
//!
//! The layer also writes the audit log's entries: every refused call, and every allowed call
//! to a method that changes state ([`rules::audited_when_allowed`]). Entries wait in a bounded
//! buffer on the [`Verifier`] and travel with its next credential sync, so no call waits on
//! the log; an entry is lost if the process dies before that sync (within the sync interval),
//! or when more than [`MAX_AUDIT_BUFFER`] wait (the oldest go first, counted by
//! `firebreak_audit_dropped_total`).

pub mod rules;
mod throttle;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::http::{Request, Response};
use firebreak_domain::access::{
    Grant, Permission, PresentedToken, Principal, Role, Scope, SubjectKind, TOKEN_PREFIX, Target,
};
use firebreak_domain::{Clock, Micros};
use firebreak_proto::internal::v1 as internal;
use firebreak_proto::v1;
use tokio_util::sync::CancellationToken;

use rules::{Rule, Subject};

/// Why a caller was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No credentials, or ones that are not (or no longer) valid.
    Unauthenticated(&'static str),
    /// Valid credentials without the permission.
    Forbidden(String),
    /// The credential table has not been read yet (start-up): try again shortly.
    NotReady,
}

impl Denied {
    /// The outcome an audit entry records for the refusal.
    fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "denied",
            Self::NotReady => "unavailable",
        }
    }

    fn status(&self) -> tonic::Status {
        match self {
            Self::Unauthenticated(why) => tonic::Status::unauthenticated(*why),
            Self::Forbidden(why) => tonic::Status::permission_denied(why.clone()),
            Self::NotReady => {
                tonic::Status::unavailable("credentials are not loaded yet, retry shortly")
            }
        }
    }
}

/// One token in the copy.
struct Entry {
    principal: Arc<Principal>,
    expires_at: Option<Micros>,
    /// The last use seen here, and the last one reported to the directory.
    used: AtomicI64,
    reported: AtomicI64,
}

/// Where the copy comes from: the directory, in-process or over gRPC.
#[tonic::async_trait]
pub(crate) trait CredentialSource: Send + Sync {
    /// Reports `uses`, hands over `audit` entries, and returns the credentials and incident
    /// roles changed after `since`, by version.
    async fn sync(
        &self,
        since: i64,
        uses: Vec<(String, Micros)>,
        audit: Vec<v1::AuditEntry>,
    ) -> anyhow::Result<internal::SyncCredentialsResponse>;
}

/// Which incident a run belongs to (orchestration's store): a run's approvals are decided
/// with the roles held on its incident.
#[tonic::async_trait]
pub(crate) trait RunIncidents: Send + Sync {
    async fn incident_of(&self, run_id: &str) -> Option<String>;
}

#[tonic::async_trait]
impl RunIncidents for firebreak_orchestration::Orchestration {
    async fn incident_of(&self, run_id: &str) -> Option<String> {
        self.incident_of_run(run_id).await
    }
}

/// The directory in this process (embedded mode, and notification's own replicas).
#[tonic::async_trait]
impl CredentialSource for firebreak_notification::Directory {
    async fn sync(
        &self,
        since: i64,
        uses: Vec<(String, Micros)>,
        audit: Vec<v1::AuditEntry>,
    ) -> anyhow::Result<internal::SyncCredentialsResponse> {
        if !audit.is_empty() {
            self.append_audit(&audit).await?;
        }
        if !uses.is_empty() {
            self.mark_used(&uses).await?;
        }
        Ok(self.changes_since(since).await?)
    }
}

/// The directory of a notification replica, over the internal gRPC service.
pub(crate) struct RemoteSource(
    pub(crate)  internal::credential_service_client::CredentialServiceClient<
        firebreak_proto::access::AuthedChannel,
    >,
);

#[tonic::async_trait]
impl CredentialSource for RemoteSource {
    async fn sync(
        &self,
        since: i64,
        uses: Vec<(String, Micros)>,
        audit: Vec<v1::AuditEntry>,
    ) -> anyhow::Result<internal::SyncCredentialsResponse> {
        let uses = uses
            .into_iter()
            .map(|(id, at)| internal::TokenUse {
                id,
                at: Some(firebreak_proto::timestamp(at)),
            })
            .collect();
        let r = self
            .0
            .clone()
            .sync_credentials(internal::SyncCredentialsRequest {
                since_version: since,
                uses,
                audit,
            })
            .await?;
        Ok(r.into_inner())
    }
}

/// How soon after one sync a token this copy does not know may cause another.
const MISS_SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// The most audit entries waiting to be shipped; past it the oldest are dropped (and
/// counted).
pub(crate) const MAX_AUDIT_BUFFER: usize = 10_000;
/// The most audit entries one sync call carries: an entry is at most about 2 KiB, so a call
/// stays well inside gRPC's 4 MiB message limit.
const MAX_AUDIT_BATCH: usize = 1_000;
/// The most audit batches one sync ships beyond its first call, so a flood of entries does
/// not keep a sync (and the verifications waiting on it) going.
const MAX_AUDIT_ROUNDS: usize = 10;

/// The process's credential copy, and the credentials its configuration declares.
pub(crate) struct Verifier {
    table: RwLock<HashMap<String, Arc<Entry>>>,
    version: AtomicI64,
    /// Credentials from the configuration, by hash: the service credential Firebreak's own
    /// services call each other with, and the break-glass admin token if one is set.
    declared: HashMap<String, Arc<Principal>>,
    /// The directory the copy follows; set once known (distributed notification replicas
    /// open theirs after start-up).
    source: RwLock<Option<Arc<dyn CredentialSource>>>,
    clock: Arc<dyn Clock>,
    /// Whether the copy has been read once; until then user tokens get [`Denied::NotReady`].
    loaded: std::sync::atomic::AtomicBool,
    /// One sync at a time, and when the last one started.
    syncing: tokio::sync::Mutex<Option<Instant>>,
    /// Failed authentications per source address.
    throttle: throttle::Throttle,
    /// Audit entries waiting for the next sync to ship them, oldest first.
    audit: Mutex<VecDeque<v1::AuditEntry>>,
    /// Incident roles as the directory copied them: user name → (incident id, role).
    incident_roles: RwLock<HashMap<String, Vec<(String, String)>>>,
    /// Where a run's incident is found (set where orchestration runs).
    runs: RwLock<Option<Arc<dyn RunIncidents>>>,
}

impl Verifier {
    /// A verifier accepting `service_token` as Firebreak's services and `admin_token` (if
    /// any) as `user:admin`, and whatever the directory holds once a source is set.
    pub(crate) fn new(
        service_token: &str,
        admin_token: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut declared = HashMap::new();
        declared.insert(hash(service_token), service_principal());
        if let Some(t) = admin_token {
            declared.insert(
                hash(t),
                Arc::new(Principal {
                    kind: SubjectKind::User,
                    name: "admin".into(),
                    token_id: String::new(),
                    grants: vec![Grant {
                        role: Role::Admin,
                        scope: Scope::All,
                    }],
                }),
            );
        }
        Self {
            table: RwLock::default(),
            version: AtomicI64::new(0),
            declared,
            source: RwLock::new(None),
            clock,
            loaded: false.into(),
            syncing: tokio::sync::Mutex::new(None),
            throttle: throttle::Throttle::new(10, Duration::from_secs(1)),
            audit: Mutex::default(),
            incident_roles: RwLock::default(),
            runs: RwLock::new(None),
        }
    }

    /// The time on the verifier's clock (the process's clock).
    pub(crate) fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Finds runs' incidents through `runs` from now on.
    pub(crate) fn set_runs(&self, runs: Arc<dyn RunIncidents>) {
        *self.runs.write().unwrap_or_else(|e| e.into_inner()) = Some(runs);
    }

    /// The incident a run belongs to, when this process knows its runs.
    async fn run_incident(&self, run_id: &str) -> Option<String> {
        let runs = self
            .runs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        runs.incident_of(run_id).await
    }

    /// Whether `p` is a user holding an incident role somewhere (as the copy knows).
    fn has_incident_roles(&self, p: &Principal) -> bool {
        p.kind == SubjectKind::User
            && self
                .incident_roles
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&p.name)
    }

    /// `p` with the grants its incident roles on `incident` give (the same principal when
    /// it holds none there).
    fn on_incident(&self, p: &Arc<Principal>, incident: &str) -> Arc<Principal> {
        if p.kind != SubjectKind::User {
            return p.clone();
        }
        let extra: Vec<Grant> = self
            .incident_roles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.name)
            .into_iter()
            .flatten()
            .filter(|(i, _)| i == incident)
            .filter_map(|(_, role)| Role::of_incident_role(role))
            .map(|role| Grant {
                role,
                scope: Scope::Incident(incident.to_owned()),
            })
            .collect();
        if extra.is_empty() {
            return p.clone();
        }
        let mut with = Principal::clone(p);
        with.grants.extend(extra);
        Arc::new(with)
    }

    /// Decides again a call to `path` refused to user `p` for want of a permission, with
    /// the incident roles `p` holds on `incident`. The copy syncs first (at most a few times
    /// a second, shared with unknown tokens): a role assigned a moment ago counts.
    async fn by_incident_role(
        &self,
        path: &str,
        p: Arc<Principal>,
        incident: &str,
        why: String,
    ) -> Result<Arc<Principal>, Refusal> {
        let refused = |p| Refusal {
            denied: Denied::Forbidden(why.clone()),
            who: Some(p),
        };
        let Some((service, Rule::Needs(permission) | Rule::NeedsOrKey(permission))) =
            rules::rule(path)
        else {
            return Err(refused(p));
        };
        self.sync_after(Instant::now()).await;
        let with = self.on_incident(&p, incident);
        match allow_on(&with, permission, service, Some(incident)) {
            Ok(()) => Ok(with),
            Err(_) => Err(refused(p)),
        }
    }

    /// Applies changed incident roles to the copy.
    fn apply_roles(&self, changed: Vec<internal::IncidentGrant>) {
        if changed.is_empty() {
            return;
        }
        let mut roles = self
            .incident_roles
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for g in changed {
            self.version.fetch_max(g.version, Ordering::AcqRel);
            let held = roles.entry(g.person.clone()).or_default();
            held.retain(|(i, r)| !(*i == g.incident_id && *r == g.role));
            if !g.removed {
                held.push((g.incident_id, g.role));
            }
            if held.is_empty() {
                roles.remove(&g.person);
            }
        }
    }

    /// Slows down a source address after `per_minute` failed authentications (0: never):
    /// each further failure is answered `delay` late.
    pub(crate) fn with_failure_limit(mut self, per_minute: u32, delay: Duration) -> Self {
        self.throttle = throttle::Throttle::new(per_minute, delay);
        self
    }

    /// Queues an audit entry for the next sync; when the buffer is full the oldest entry is
    /// dropped and counted.
    pub(crate) fn record(&self, entry: v1::AuditEntry) {
        let mut buffer = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() >= MAX_AUDIT_BUFFER {
            buffer.pop_front();
            firebreak_telemetry::metrics().audit_dropped.inc();
        }
        buffer.push_back(entry);
    }

    /// The oldest waiting entries, at most [`MAX_AUDIT_BATCH`].
    fn take_audit(&self) -> Vec<v1::AuditEntry> {
        let mut buffer = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        let n = buffer.len().min(MAX_AUDIT_BATCH);
        buffer.drain(..n).collect()
    }

    /// Puts entries a failed sync did not ship back in front of the buffer, keeping within
    /// its bound (the oldest go, counted).
    fn restore_audit(&self, entries: Vec<v1::AuditEntry>) {
        let mut buffer = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries.into_iter().rev() {
            buffer.push_front(e);
        }
        let over = buffer.len().saturating_sub(MAX_AUDIT_BUFFER);
        if over > 0 {
            buffer.drain(..over);
            firebreak_telemetry::metrics()
                .audit_dropped
                .inc_by(over as u64);
        }
    }

    /// How many audit entries wait.
    fn audit_waiting(&self) -> usize {
        self.audit.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Follows `source` from now on.
    pub(crate) fn set_source(&self, source: Arc<dyn CredentialSource>) {
        *self.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Whether a source is set.
    pub(crate) fn has_source(&self) -> bool {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Verifies a bearer token against the copy: the principal, or why not. A token the copy
    /// does not know is `Ok(None)` (the caller may sync and look again).
    fn lookup(&self, token: &str) -> Result<Option<Arc<Principal>>, Denied> {
        let presented = PresentedToken::parse(token)
            .map_err(|_| Denied::Unauthenticated("the token is malformed"))?;
        let h = presented.hash();
        if let Some(p) = self.declared.get(&h) {
            return Ok(Some(p.clone()));
        }
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = table.get(&h) else {
            return Ok(None);
        };
        let now = self.clock.now();
        if entry.expires_at.is_some_and(|at| at <= now) {
            return Err(Denied::Unauthenticated("the token has expired"));
        }
        entry.used.fetch_max(now.unix_micros(), Ordering::Relaxed);
        Ok(Some(entry.principal.clone()))
    }

    /// Verifies `token`, syncing once when the copy does not know it (a token made a moment
    /// ago on another replica).
    pub(crate) async fn verify(
        &self,
        token: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Arc<Principal>, Denied> {
        if let Some(p) = self.lookup(token)? {
            return Ok(p);
        }
        // A source that keeps failing makes no more syncs: it is guessing.
        if source.is_some_and(|ip| self.throttle.is_slowed(ip)) {
            return Err(Denied::Unauthenticated("the token is unknown or revoked"));
        }
        let asked = Instant::now();
        self.sync_after(asked).await;
        if !self.loaded.load(Ordering::Acquire) {
            return Err(Denied::NotReady);
        }
        self.lookup(token)?
            .ok_or(Denied::Unauthenticated("the token is unknown or revoked"))
    }

    /// Syncs unless one started at or after `asked`; waits so that misses sync at most once
    /// per [`MISS_SYNC_INTERVAL`] (callers waiting meanwhile share the next sync).
    async fn sync_after(&self, asked: Instant) {
        let mut last = self.syncing.lock().await;
        if let Some(at) = *last {
            if at >= asked {
                // A sync that started after the miss has run: it saw what there was.
                return;
            }
            // Unknown tokens cause a sync at most every MISS_SYNC_INTERVAL: a flood of
            // made-up tokens waits here instead of reading the directory.
            let wait = MISS_SYNC_INTERVAL.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        *last = Some(Instant::now());
        if let Err(e) = self.sync_now().await {
            tracing::warn!(error = %e, "syncing credentials failed");
        }
    }

    /// Reports uses, ships waiting audit entries, and applies every change since the copy's
    /// version.
    pub(crate) async fn sync_now(&self) -> anyhow::Result<()> {
        let source = self
            .source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the directory is not reachable yet"))?;
        let uses = self.take_uses();
        let mut first = true;
        let mut rounds = 0;
        loop {
            let since = self.version.load(Ordering::Acquire);
            let audit = self.take_audit();
            let page = source
                .sync(
                    since,
                    if first { uses.clone() } else { Vec::new() },
                    audit.clone(),
                )
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // Not reported: report them next time.
                    self.restore_uses(&uses);
                    self.restore_audit(audit);
                    return Err(e);
                }
            };
            first = false;
            rounds += 1;
            let full = page.more;
            self.apply(page.credentials);
            self.apply_roles(page.incident_grants);
            let more_audit = self.audit_waiting() > 0 && rounds <= MAX_AUDIT_ROUNDS;
            if !full && !more_audit {
                break;
            }
        }
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Applies changed credentials to the copy.
    fn apply(&self, changed: Vec<internal::Credential>) {
        if changed.is_empty() {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        for c in changed {
            self.version.fetch_max(c.version, Ordering::AcqRel);
            // A token's hash never changes: the entry it had, if any, is under it.
            table.remove(&c.hash);
            if c.revoked {
                continue;
            }
            let Some(principal) = principal_of(&c) else {
                tracing::warn!(token = %firebreak_domain::access::mask_token_id(&c.id), "a credential that does not parse is left out");
                continue;
            };
            table.insert(
                c.hash,
                Arc::new(Entry {
                    principal: Arc::new(principal),
                    expires_at: c.expires_at.as_ref().map(firebreak_proto::micros),
                    used: AtomicI64::new(0),
                    reported: AtomicI64::new(0),
                }),
            );
        }
    }

    fn take_uses(&self) -> Vec<(String, Micros)> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .values()
            .filter_map(|e| {
                let used = e.used.load(Ordering::Relaxed);
                let before = e.reported.swap(used, Ordering::Relaxed);
                (used > before)
                    .then(|| (e.principal.token_id.clone(), Micros::from_unix_micros(used)))
            })
            .collect()
    }

    fn restore_uses(&self, uses: &[(String, Micros)]) {
        let ids: std::collections::HashSet<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        for e in table.values() {
            if ids.contains(e.principal.token_id.as_str()) {
                e.reported.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Syncs every `every` until `stop`: revocations reach this copy within that time.
    pub(crate) async fn run(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        loop {
            {
                let mut last = self.syncing.lock().await;
                *last = Some(Instant::now());
                if let Err(e) = self.sync_now().await {
                    tracing::warn!(error = %e, "syncing credentials failed; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// A new token from the operating system's random generator (the service credential of an
/// embedded process, `firebreak token generate`).
pub(crate) fn generate_token() -> anyhow::Result<String> {
    let mut random = [0u8; 38];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(firebreak_domain::access::NewToken::from_random(&random).token)
}

/// Where embedded mode writes the first admin token, and the CLI looks for it.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The first start of an embedded data directory: when the directory holds no token yet,
/// makes the user `admin` and an admin token for it, and writes the token (mode 0600) to
/// `data_dir/admin.token`, where the CLI finds it when it talks to a local server.
pub(crate) async fn bootstrap(
    directory: &firebreak_notification::Directory,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    if directory.has_tokens().await? {
        return Ok(());
    }
    directory
        .ensure_user(firebreak_storage::UserRecord {
            name: "admin".into(),
            display_name: "Administrator".into(),
            email: String::new(),
            time_zone: String::new(),
            kind: SubjectKind::User,
            declared: false,
            created_at: Micros::from_unix_micros(0),
            contact_methods: Vec::new(),
            notification_rules: Vec::new(),
        })
        .await?;
    let (_, secret) = directory
        .create_token(
            "admin",
            vec![Grant {
                role: Role::Admin,
                scope: Scope::All,
            }],
            "made by the first start of this data directory",
            None,
            "service:firebreak",
        )
        .await?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &secret)?;
    tracing::info!(path = %path.display(), "first start: an admin token was written here (mode 0600); the CLI uses it for a local server");
    Ok(())
}

/// Writes `secret` to `path`, readable by its owner only, replacing what was there.
pub(crate) fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn hash(token: &str) -> String {
    PresentedToken::parse(token).map_or_else(|_| String::from("-"), |t| t.hash())
}

/// Firebreak's own services, as they call each other.
fn service_principal() -> Arc<Principal> {
    static P: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        Arc::new(Principal {
            kind: SubjectKind::Service,
            name: "firebreak".into(),
            token_id: String::new(),
            grants: vec![Grant {
                role: Role::Service,
                scope: Scope::All,
            }],
        })
    })
    .clone()
}

fn principal_of(c: &internal::Credential) -> Option<Principal> {
    Some(Principal {
        kind: firebreak_proto::access::kind(c.kind).ok()?,
        name: c.subject.clone(),
        token_id: c.id.clone(),
        grants: c
            .grants
            .iter()
            .map(firebreak_proto::access::grant)
            .collect::<Result<_, _>>()
            .ok()?,
    })
}

/// The bearer token in an `authorization: Bearer <token>` header.
fn bearer(header: Option<&axum::http::HeaderValue>) -> Result<&str, Denied> {
    let value = header.ok_or(Denied::Unauthenticated(
        "no credentials: send authorization: Bearer <token>",
    ))?;
    let text = value
        .to_str()
        .map_err(|_| Denied::Unauthenticated("the authorization header is not text"))?;
    let (scheme, token) = text.split_once(' ').ok_or(Denied::Unauthenticated(
        "the authorization header is not Bearer <token>",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::Unauthenticated(
            "the authorization header is not Bearer <token>",
        ));
    }
    Ok(token.trim())
}

/// Why a call was refused, and who made it when the token was valid (the audit log names
/// them).
struct Refusal {
    denied: Denied,
    who: Option<Arc<Principal>>,
}

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Self {
        Self { denied, who: None }
    }
}

/// Decides a call to `path` with `authorization`: the principal to run it as (none for a
/// public method), or why not.
async fn decide(
    verifier: &Verifier,
    path: &str,
    authorization: Option<&axum::http::HeaderValue>,
    source: Option<std::net::IpAddr>,
) -> Result<Option<Arc<Principal>>, Refusal> {
    let Some((service, rule)) = rules::rule(path) else {
        return Err(Denied::Forbidden(format!("{path} has no access rule")).into());
    };
    if rule == Rule::Public {
        return Ok(None);
    }
    let token = bearer(authorization)?;
    if matches!(rule, Rule::NeedsOrKey(_)) && !token.starts_with(TOKEN_PREFIX) {
        // An integration key: intake checks it and refuses an unknown one.
        return Ok(None);
    }
    let principal = verifier.verify(token, source).await?;
    if let Rule::Needs(permission) | Rule::NeedsOrKey(permission) = rule
        && let Err(denied) = allow(&principal, permission, service)
    {
        return Err(Refusal {
            denied,
            who: Some(principal),
        });
    }
    Ok(Some(principal))
}

fn allow(p: &Principal, permission: Permission, service: &str) -> Result<(), Denied> {
    allow_on(p, permission, service, None)
}

/// Whether `p` may have `permission` on `service`'s methods, about `incident` when known.
fn allow_on(
    p: &Principal,
    permission: Permission,
    service: &str,
    incident: Option<&str>,
) -> Result<(), Denied> {
    let target = Target {
        service,
        team: None,
        incident,
    };
    if p.may(permission, target) {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "{} may not {permission} (roles: {})",
            p.actor(),
            p.roles()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Wraps the gRPC router in [`Authorized`].
#[derive(Clone)]
pub(crate) struct AuthLayer(pub(crate) Arc<Verifier>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized {
            inner,
            verifier: self.0.clone(),
        }
    }
}

/// A gRPC service whose calls are authenticated and authorized before they reach it.
#[derive(Clone)]
pub(crate) struct Authorized<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S> tower::Service<Request<tonic::body::Body>> for Authorized<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        // The clone is the one made ready next; this call uses the one made ready now.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let path = req.uri().path().to_owned();
        let authorization = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .cloned();
        let source = req
            .extensions()
            .get::<crate::net::ConnInfo>()
            .map(|c| c.remote().ip());
        // What the audit entry needs from the request; never the credentials or the body.
        let call = Call::of(&req);
        Box::pin(async move {
            let decided = decide(&verifier, &path, authorization.as_ref(), source).await;
            // The call's target is read from its request when the audit log records it, or
            // when incident roles may decide the call: a user refused here may command this
            // incident, and one allowed may hold the role an approval requires on it.
            let mut target = String::new();
            let wanted = rules::target(&path).filter(|(subject, _)| {
                let by_incident = matches!(subject, Subject::Incident | Subject::Run)
                    && match &decided {
                        Ok(Some(p)) => verifier.has_incident_roles(p),
                        Err(Refusal {
                            denied: Denied::Forbidden(_),
                            who: Some(p),
                        }) => p.kind == SubjectKind::User,
                        _ => false,
                    };
                by_incident || (decided.is_ok() && rules::audited_when_allowed(&path))
            });
            let mut req = req;
            let mut incident = None;
            if let Some((subject, read)) = wanted {
                let (parts, body) = req.into_parts();
                let bytes = match read_body(body).await {
                    Ok(b) => b,
                    Err(status) => return Ok(status.into_http()),
                };
                let id = grpc_message(&bytes).and_then(read);
                req = Request::from_parts(
                    parts,
                    tonic::body::Body::new(http_body_util::Full::new(bytes)),
                );
                if let Some(id) = id {
                    target = clip(&format!("{}:{id}", subject.as_str()), MAX_TARGET);
                    incident = match subject {
                        Subject::Incident => Some(id),
                        Subject::Run => verifier.run_incident(&id).await,
                        _ => None,
                    };
                }
            }
            let decided = match (decided, incident) {
                (Ok(Some(p)), Some(incident)) => Ok(Some(verifier.on_incident(&p, &incident))),
                (
                    Err(Refusal {
                        denied: Denied::Forbidden(why),
                        who: Some(p),
                    }),
                    Some(incident),
                ) => verifier
                    .by_incident_role(&path, p, &incident, why)
                    .await
                    .map(Some),
                (decided, _) => decided,
            };
            let principal = match decided {
                Ok(p) => p,
                Err(Refusal { denied, who }) => {
                    firebreak_telemetry::metrics().auth_failures.inc();
                    // Guessing slows down: a source over the limit waits for each failure.
                    if let (Denied::Unauthenticated(_), Some(ip)) = (&denied, source)
                        && verifier.throttle.failed(ip)
                    {
                        tokio::time::sleep(verifier.throttle.delay).await;
                    }
                    tracing::info!(path, denied = ?denied, "call refused");
                    let reason = match &denied {
                        Denied::Unauthenticated(why) => (*why).to_owned(),
                        Denied::Forbidden(why) => why.clone(),
                        Denied::NotReady => "credentials are not loaded yet".to_owned(),
                    };
                    let who = who.as_deref().map(Actor::Principal);
                    verifier.record(call.entry(&path, &target, who, denied.outcome(), &reason));
                    return Ok(denied.status().into_http());
                }
            };
            if let Some(p) = &principal {
                req.extensions_mut().insert(Arc::clone(p));
            }
            if !rules::audited_when_allowed(&path) {
                return inner.call(req).await;
            }
            let answered = inner.call(req).await;
            let outcome = match &answered {
                Ok(response) => outcome_of(response.headers()),
                Err(_) => "internal".to_owned(),
            };
            // A method that makes what it acts on (a new silence) names it in its answer.
            if let (Some((subject, _)), true, Ok(response)) = (wanted, target.is_empty(), &answered)
                && let Some(id) = response
                    .headers()
                    .get(firebreak_proto::access::TARGET_METADATA)
                    .and_then(|v| v.to_str().ok())
            {
                target = clip(&format!("{}:{id}", subject.as_str()), MAX_TARGET);
            }
            let who = principal.as_deref().map_or(Actor::Key, Actor::Principal);
            verifier.record(call.entry(&path, &target, Some(who), &outcome, ""));
            answered
        })
    }
}

/// A call to an HTTP endpoint that changes something (Alertmanager's silences API), as the
/// audit log records it: the same entry, written through the same buffer, as a gRPC call's.
pub(crate) struct HttpCall<'a> {
    /// What was called: `POST /api/v2/silences`.
    pub(crate) method: &'a str,
    pub(crate) headers: &'a axum::http::HeaderMap,
    pub(crate) source: Option<std::net::SocketAddr>,
}

impl Verifier {
    /// Records `call` by `who` (`None`: nobody verified) on `target` (`silence:ID`, or empty
    /// when it named none): `outcome` is `None` when it went through, else the code it was
    /// answered with; `reason` says why a refused call was refused.
    pub(crate) fn audit_http(
        &self,
        call: &HttpCall<'_>,
        who: Option<&Principal>,
        target: &str,
        outcome: Option<firebreak_domain::ErrorCode>,
        reason: &str,
    ) {
        let outcome = outcome.map_or_else(
            || "ok".to_owned(),
            |code| code_name(firebreak_proto::grpc_code(code)),
        );
        let entry = Call::from_headers(call.headers, call.source).entry(
            call.method,
            &clip(target, MAX_TARGET),
            who.map(Actor::Principal),
            &outcome,
            reason,
        );
        self.record(entry);
    }
}

/// Who made an allowed call, as the audit log names them.
#[derive(Clone, Copy)]
enum Actor<'a> {
    Principal(&'a Principal),
    /// An integration key in place of a token (intake checks it; the key is not recorded).
    Key,
}

/// The parts of a request an audit entry records, read before the request moves on. Only
/// copied here (every call pays for this); made into text when an entry is written.
struct Call {
    at: std::time::SystemTime,
    source: Option<std::net::SocketAddr>,
    request_id: Option<axum::http::HeaderValue>,
    traceparent: Option<axum::http::HeaderValue>,
}

/// The longest `x-request-id` recorded, the longest target, method path and refusal reason.
const MAX_REQUEST_ID: usize = 128;
const MAX_TARGET: usize = 160;
const MAX_METHOD: usize = 256;
const MAX_REASON: usize = 512;

impl Call {
    fn of(req: &Request<tonic::body::Body>) -> Self {
        Self::from_headers(
            req.headers(),
            req.extensions()
                .get::<crate::net::ConnInfo>()
                .map(crate::net::ConnInfo::remote),
        )
    }

    fn from_headers(headers: &axum::http::HeaderMap, source: Option<std::net::SocketAddr>) -> Self {
        Self {
            at: std::time::SystemTime::now(),
            source,
            request_id: headers.get("x-request-id").cloned(),
            traceparent: headers.get("traceparent").cloned(),
        }
    }

    /// The entry of this call to `path` by `who` (`None`: nobody verified), ending in
    /// `outcome`.
    fn entry(
        &self,
        path: &str,
        target: &str,
        who: Option<Actor<'_>>,
        outcome: &str,
        reason: &str,
    ) -> v1::AuditEntry {
        let (actor, roles) = match who {
            Some(Actor::Principal(p)) => (
                p.actor(),
                p.roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(Actor::Key) => ("integration-key".to_owned(), String::new()),
            None => ("anonymous".to_owned(), String::new()),
        };
        // The trace the call runs in (the trace layer set it from `traceparent`, or began one).
        let trace_id = firebreak_telemetry::trace::current_trace_id()
            .or_else(|| {
                self.traceparent
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .and_then(firebreak_telemetry::trace::trace_id_of)
            })
            .unwrap_or_default();
        let at = Micros::from_unix_micros(
            self.at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        );
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map_or_else(
                || firebreak_domain::new_id().to_string(),
                |id| clip(id, MAX_REQUEST_ID),
            );
        v1::AuditEntry {
            id: firebreak_domain::new_id().to_string(),
            at: Some(firebreak_proto::timestamp(at)),
            actor,
            roles,
            method: clip(path, MAX_METHOD),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            reason: clip(reason, MAX_REASON),
            source: self.source.map(|a| a.to_string()).unwrap_or_default(),
            request_id,
            trace_id,
        }
    }
}

/// The most bytes of a request read to find its target: gRPC's default message limit and
/// its frame header. A larger request is refused as the server would refuse it.
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024 + 5;

/// A request body, read whole (within [`MAX_REQUEST_BODY`]).
async fn read_body(body: tonic::body::Body) -> Result<bytes::Bytes, tonic::Status> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(tonic::Status::resource_exhausted(format!(
                "the request is larger than {MAX_REQUEST_BODY} bytes"
            )))
        }
        Err(e) => Err(tonic::Status::cancelled(format!(
            "reading the request failed: {e}"
        ))),
    }
}

/// The message of a unary request's body: one uncompressed gRPC frame (a flag byte, a
/// four-byte length, the message). A compressed message is not read here (no target).
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 {
        return None;
    }
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..4usize.checked_add(len)?)
}

/// A call's outcome from its response headers: a handler's error is answered trailers-only,
/// so its `grpc-status` is among them; none means the call went through.
fn outcome_of(headers: &axum::http::HeaderMap) -> String {
    let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return "ok".to_owned();
    };
    code_name(tonic::Code::from_i32(code))
}

/// A gRPC code as the audit log names it: `not_found`, `invalid_argument`, `ok`.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> v1::AuditEntry {
        v1::AuditEntry {
            request_id: n.to_string(),
            ..Default::default()
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(
            "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            None,
            Arc::new(firebreak_domain::SystemClock),
        )
    }

    #[test]
    fn incident_roles_in_the_copy_grant_their_holder_permissions_on_that_incident_only() {
        let v = verifier();
        let grant =
            |incident: &str, role: &str, person: &str, removed, version| internal::IncidentGrant {
                incident_id: incident.into(),
                role: role.into(),
                person: person.into(),
                removed,
                version,
            };
        let amy = Arc::new(Principal {
            kind: SubjectKind::User,
            name: "amy".into(),
            token_id: "0123456789ab".into(),
            grants: vec![Grant {
                role: Role::Viewer,
                scope: Scope::All,
            }],
        });
        assert!(!v.has_incident_roles(&amy));
        v.apply_roles(vec![
            grant("i1", "commander", "amy", false, 7),
            grant("i2", "scribe", "amy", false, 8),
        ]);
        assert_eq!(v.version.load(Ordering::Acquire), 8);
        assert!(v.has_incident_roles(&amy));
        let on_i1 = v.on_incident(&amy, "i1");
        assert!(allow_on(&on_i1, Permission::IncidentsClose, "triage", Some("i1")).is_ok());
        assert!(allow_on(&on_i1, Permission::IncidentsClose, "triage", Some("i2")).is_err());
        // An extra role grants nothing; the same principal comes back.
        assert!(Arc::ptr_eq(&v.on_incident(&amy, "i2"), &amy));
        // A service is never given incident roles, whatever its name.
        let service = service_principal();
        assert!(Arc::ptr_eq(&v.on_incident(&service, "i1"), &service));
        // Removed, the role grants nothing again.
        v.apply_roles(vec![grant("i1", "commander", "amy", true, 9)]);
        let on_i1 = v.on_incident(&amy, "i1");
        assert!(allow_on(&on_i1, Permission::IncidentsClose, "triage", Some("i1")).is_err());
        v.apply_roles(vec![grant("i2", "scribe", "amy", true, 10)]);
        assert!(!v.has_incident_roles(&amy));
    }

    #[test]
    fn a_request_message_is_read_from_one_uncompressed_frame_only() {
        let frame = |flag: u8, len: u32, body: &[u8]| {
            let mut f = vec![flag];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(body);
            f
        };
        assert_eq!(grpc_message(&frame(0, 3, b"abc")), Some(&b"abc"[..]));
        assert_eq!(grpc_message(&frame(0, 0, b"")), Some(&b""[..]));
        // Compressed, short, or claiming more than it holds: not read.
        assert_eq!(grpc_message(&frame(1, 3, b"abc")), None);
        assert_eq!(grpc_message(&frame(0, 4, b"abc")), None);
        assert_eq!(grpc_message(&frame(0, u32::MAX, b"abc")), None);
        assert_eq!(grpc_message(&[0, 0, 0]), None);
        assert_eq!(grpc_message(&[]), None);
    }

    fn waiting(v: &Verifier) -> Vec<String> {
        let buffer = v.audit.lock().unwrap();
        buffer.iter().map(|e| e.request_id.clone()).collect()
    }

    #[test]
    fn a_full_audit_buffer_drops_its_oldest_entries_and_counts_them() {
        let v = Verifier::new(
            "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            None,
            Arc::new(firebreak_domain::SystemClock),
        );
        let dropped = || firebreak_telemetry::metrics().audit_dropped.get();
        let before = dropped();
        for n in 0..MAX_AUDIT_BUFFER + 3 {
            v.record(entry(n));
        }
        // Other tests in this process may drop too: at least these three were counted.
        assert!(dropped() >= before + 3);
        let kept = waiting(&v);
        assert_eq!(kept.len(), MAX_AUDIT_BUFFER);
        assert_eq!(kept[0], "3");
        assert_eq!(
            kept[MAX_AUDIT_BUFFER - 1],
            (MAX_AUDIT_BUFFER + 2).to_string()
        );

        // A batch taken is the oldest; one a failed sync gives back goes in front again,
        // and what no longer fits is dropped from the oldest end.
        let batch = v.take_audit();
        assert_eq!(batch.len(), MAX_AUDIT_BATCH);
        assert_eq!(batch[0].request_id, "3");
        v.record(entry(100_000));
        v.record(entry(100_001));
        let before = dropped();
        v.restore_audit(batch);
        assert!(dropped() >= before + 2);
        let kept = waiting(&v);
        assert_eq!(kept.len(), MAX_AUDIT_BUFFER);
        assert_eq!(kept[0], "5");
        assert_eq!(kept[MAX_AUDIT_BUFFER - 1], "100001");
    }

    #[test]
    fn outcomes_are_read_from_the_grpc_status_of_the_answer() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(outcome_of(&headers), "ok");
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(outcome_of(&headers), "not_found");
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(outcome_of(&headers), "invalid_argument");
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(outcome_of(&headers), "ok");
        assert_eq!(
            code_name(tonic::Code::FailedPrecondition),
            "failed_precondition"
        );
        assert_eq!(clip("héllo", 2), "h");
    }
}
