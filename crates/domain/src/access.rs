//! Who may do what: permission roles, the permissions each grants, scopes, the principal a
//! verified credential stands for, and API tokens (made, parsed, hashed; never stored plain).
//!
//! Permission roles are policy (this file); incident roles (the commander of one incident)
//! are data on the incident, and grant the same role's permissions on that incident only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, invalid};
use crate::states::states;

states!(
    /// A permission role: a named set of [`Permission`]s. The guide's five incident roles,
    /// plus viewer and admin for people, integration for monitoring tools and service for
    /// Firebreak's own services calling each other.
    Role, "role", {
        /// Leads an incident: everything a responder does, plus close, severity, roles.
        IncidentCommander => "incident-commander",
        /// Works an incident: acknowledge, resolve, notes, approvals, dry runs.
        Responder => "responder",
        /// Runs the systems: a responder who also reads integrations.
        ItOperator => "it-operator",
        /// Oversees: a commander who also reads integrations and the audit log.
        Manager => "manager",
        /// Studies incidents: reads everything, writes notes, reads the audit log.
        Analyst => "analyst",
        /// Reads incidents, runs and deliveries.
        Viewer => "viewer",
        /// Everything people may do, including tokens, users and integrations.
        Admin => "admin",
        /// A monitoring tool: raises and resolves alerts, nothing else.
        Integration => "integration",
        /// Firebreak's own services: the internal calls (IngestAlert, credential sync).
        Service => "service",
    }
);

states!(
    /// One thing a caller may be allowed to do. Every gRPC method and HTTP endpoint needs
    /// exactly one (see `firebreak::auth`'s method table), or none when it is public.
    Permission, "permission", {
        /// Raise, batch-raise and resolve alerts.
        AlertsRaise => "alerts.raise",
        /// Hand an alert to triage synchronously (intake's internal call).
        AlertsIngest => "alerts.ingest",
        /// Read incidents, timelines, reviews, changes; watch timelines.
        IncidentsRead => "incidents.read",
        IncidentsAcknowledge => "incidents.acknowledge",
        IncidentsResolve => "incidents.resolve",
        /// Close with a root cause.
        IncidentsClose => "incidents.close",
        IncidentsNote => "incidents.note",
        /// Assign, hand off and remove incident roles (a commander's: the roles grant
        /// permissions, so a responder assigning them could grant themselves close).
        IncidentsAssign => "incidents.assign",
        /// Set severity, priority and category by hand, with a reason (a commander's call:
        /// a severity pages and starts runbooks).
        IncidentsClassify => "incidents.classify",
        /// Write the post-incident review: add and change follow-ups, set the summary.
        IncidentsReview => "incidents.review",
        /// Post status updates to an incident's stakeholders (docs/status-updates.md).
        IncidentsUpdateStatus => "incidents.update_status",
        /// Subscribe people and channels to an incident's status updates, and unsubscribe.
        IncidentsSubscribe => "incidents.subscribe",
        /// Read runbooks, runs and pending approvals.
        RunbooksRead => "runbooks.read",
        /// Plan a runbook against an incident without acting.
        RunbooksDryRun => "runbooks.dry_run",
        /// Approve or reject a run (also bound by the approval's required role).
        ApprovalsDecide => "approvals.decide",
        /// Read notification deliveries.
        DeliveriesRead => "deliveries.read",
        IntegrationsRead => "integrations.read",
        /// Create and delete integrations and their keys.
        IntegrationsManage => "integrations.manage",
        /// Read users and teams.
        DirectoryRead => "directory.read",
        /// Create and delete users, teams and memberships.
        DirectoryManage => "directory.manage",
        /// Create, list and revoke API tokens.
        TokensManage => "tokens.manage",
        /// Create, replace and delete schedules at run time (declared ones change only in
        /// configuration).
        SchedulesManage => "schedules.manage",
        /// Add and remove a schedule's overrides (swap a shift, cover for someone).
        SchedulesOverride => "schedules.override",
        /// Set, edit and expire silences (Alertmanager's API on Firebreak).
        SilencesManage => "silences.manage",
        /// Create, replace and delete maintenance windows at run time (configured ones
        /// change only in configuration): planned work that pages nobody.
        MaintenanceManage => "maintenance.manage",
        AuditRead => "audit.read",
        /// Read the credential table (each service's verifier keeps a copy).
        CredentialsSync => "credentials.sync",
    }
);

use Permission as P;

const VIEWER: &[Permission] = &[
    P::IncidentsRead,
    P::RunbooksRead,
    P::DeliveriesRead,
    P::DirectoryRead,
];
const RESPONDER: &[Permission] = &[
    P::AlertsRaise,
    P::IncidentsAcknowledge,
    P::IncidentsResolve,
    P::IncidentsNote,
    P::RunbooksDryRun,
    P::ApprovalsDecide,
    P::SchedulesOverride,
    P::SilencesManage,
    P::IncidentsReview,
    // Status updates: whoever works the incident tells stakeholders and adds them.
    P::IncidentsUpdateStatus,
    P::IncidentsSubscribe,
];
const COMMANDER: &[Permission] = &[P::IncidentsClose, P::IncidentsAssign, P::IncidentsClassify];
const OPERATOR: &[Permission] = &[P::IntegrationsRead, P::MaintenanceManage];
const MANAGER: &[Permission] = &[
    P::IntegrationsRead,
    P::AuditRead,
    P::SchedulesManage,
    P::MaintenanceManage,
];
const ANALYST: &[Permission] = &[P::IncidentsNote, P::AuditRead];
const ADMIN: &[Permission] = &[
    P::IntegrationsRead,
    P::IntegrationsManage,
    P::DirectoryManage,
    P::TokensManage,
    P::SchedulesManage,
    P::MaintenanceManage,
    P::AuditRead,
    P::IncidentsClose,
    P::IncidentsAssign,
    P::IncidentsClassify,
];

impl Role {
    /// The permission role an incident role grants on its incident: the guide's five
    /// (`commander` or `incident-commander`, `responder`, `it-operator`, `manager`,
    /// `analyst`); `None` for extra roles (a scribe reads and writes what their own grants
    /// allow).
    pub fn of_incident_role(name: &str) -> Option<Self> {
        match name {
            "commander" | "incident-commander" => Some(Self::IncidentCommander),
            "responder" => Some(Self::Responder),
            "it-operator" => Some(Self::ItOperator),
            "manager" => Some(Self::Manager),
            "analyst" => Some(Self::Analyst),
            _ => None,
        }
    }

    /// Whether this role grants `p`: the permission matrix (docs/security.md shows it).
    pub fn grants(self, p: Permission) -> bool {
        let sets: &[&[Permission]] = match self {
            Self::Viewer => &[VIEWER],
            Self::Analyst => &[VIEWER, ANALYST],
            Self::Responder => &[VIEWER, RESPONDER],
            Self::ItOperator => &[VIEWER, RESPONDER, OPERATOR],
            Self::IncidentCommander => &[VIEWER, RESPONDER, COMMANDER],
            Self::Manager => &[VIEWER, RESPONDER, COMMANDER, MANAGER],
            Self::Admin => &[VIEWER, RESPONDER, ADMIN],
            Self::Integration => &[&[P::AlertsRaise]],
            // Services read incidents (to answer each other) and make the internal calls.
            Self::Service => &[&[P::AlertsIngest, P::CredentialsSync, P::IncidentsRead]],
        };
        sets.iter().any(|s| s.contains(&p))
    }
}

/// Which of Firebreak's services a method belongs to (what a service-scoped token reaches).
pub type ServiceName = &'static str;

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Everywhere.
    All,
    /// Resources that belong to this team.
    Team(String),
    /// The methods of one service (intake, triage, orchestration, notification).
    Service(String),
    /// One incident (and its runs): what an incident role grants its holder.
    Incident(String),
}

impl Scope {
    /// Whether a grant with this scope applies to `target`.
    pub fn applies(&self, target: Target<'_>) -> bool {
        match self {
            Self::All => true,
            Self::Service(s) => s == target.service,
            Self::Team(t) => target.team == Some(t.as_str()),
            Self::Incident(i) => target.incident == Some(i.as_str()),
        }
    }
}

/// The services a service scope may name.
pub const SERVICES: [&str; 4] = ["intake", "triage", "orchestration", "notification"];

/// The most bytes a scope's text holds (`team:` and a name).
const MAX_SCOPE: usize = 80;

impl FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() > MAX_SCOPE {
            return Err(invalid("scope", format!("longer than {MAX_SCOPE} bytes")));
        }
        match s.split_once(':') {
            None if s == "all" => Ok(Self::All),
            Some(("team", name)) => Ok(Self::Team(parse_name("scope", name)?)),
            Some(("incident", id)) => Ok(Self::Incident(
                crate::IncidentId::parse(id)
                    .map_err(|_| invalid("scope", format!("{id:?} is not an incident id")))?
                    .to_string(),
            )),
            Some(("service", name)) if SERVICES.contains(&name) => {
                Ok(Self::Service(name.to_owned()))
            }
            _ => Err(invalid(
                "scope",
                format!(
                    "{s:?} is not all, team:NAME, incident:ID or service:{}",
                    SERVICES.join("|")
                ),
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Team(t) => write!(f, "team:{t}"),
            Self::Service(s) => write!(f, "service:{s}"),
            Self::Incident(i) => write!(f, "incident:{i}"),
        }
    }
}

/// The most bytes a user, team or service account name holds.
pub const MAX_NAME: usize = 64;

/// A user, team or service account name: 1-64 of `a-z 0-9 . _ -`, starting with a letter or
/// digit (it appears in URLs, scopes and the timeline as `user:NAME`).
pub fn parse_name(field: &'static str, s: &str) -> Result<String, Error> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(invalid(field, format!("must be 1-{MAX_NAME} bytes")));
    }
    let ok_first = s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit();
    let ok_rest = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok_first || !ok_rest {
        return Err(invalid(
            field,
            format!(
                "{s:?} may hold only a-z, 0-9, '.', '_' and '-', and starts with a letter or digit"
            ),
        ));
    }
    Ok(s.to_owned())
}

/// One role, where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

/// What kind of identity a credential stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    /// A person (a user of the directory).
    User,
    /// A non-person account of the directory (a monitoring tool, a CI job).
    ServiceAccount,
    /// One of Firebreak's own services, by the configured service credential.
    Service,
}

impl SubjectKind {
    /// The prefix of the actor name: `user:alice`, `account:grafana`, `service:intake`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ServiceAccount => "account",
            Self::Service => "service",
        }
    }
}

/// The verified identity behind a call: who (the actor recorded everywhere), by which token,
/// with which grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: SubjectKind,
    pub name: String,
    /// The token's public id; empty for the service credential.
    pub token_id: String,
    pub grants: Vec<Grant>,
}

/// What an authorization decision needs to know about the call's target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The service the method belongs to.
    pub service: &'a str,
    /// The team the targeted resource belongs to, when it belongs to one.
    pub team: Option<&'a str>,
    /// The incident the call is about (directly, or through one of its runs), when known.
    pub incident: Option<&'a str>,
}

impl Principal {
    /// The actor name recorded on timelines, journals, approvals and the audit log.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind.prefix(), self.name)
    }

    /// The roles this principal holds anywhere, deduplicated, in declaration order.
    pub fn roles(&self) -> Vec<Role> {
        Role::ALL
            .iter()
            .copied()
            .filter(|r| self.grants.iter().any(|g| g.role == *r))
            .collect()
    }

    /// Whether a grant gives `permission` on `target`.
    pub fn may(&self, permission: Permission, target: Target<'_>) -> bool {
        self.grants
            .iter()
            .any(|g| g.role.grants(permission) && g.scope.applies(target))
    }

    /// Whether a grant scoped to one incident gives `permission` (on some incident): then
    /// a call it is refused on may be allowed once its incident is known.
    pub fn may_on_some_incident(&self, permission: Permission) -> bool {
        self.grants
            .iter()
            .any(|g| matches!(g.scope, Scope::Incident(_)) && g.role.grants(permission))
    }

    /// Whether this principal holds `role` (for an approval that requires it) on `target`.
    pub fn holds(&self, role: Role, target: Target<'_>) -> bool {
        self.grants
            .iter()
            .any(|g| (g.role == role || g.role == Role::Admin) && g.scope.applies(target))
    }
}

/// The prefix every Firebreak API token starts with.
pub const TOKEN_PREFIX: &str = "fb_";
/// The most bytes a presented token may hold; anything longer is refused unread.
pub const MAX_TOKEN: usize = 128;
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 64;

/// A token as presented by a caller, checked for shape (not yet for validity).
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedToken<'a> {
    /// The public id (12 hex digits), shown masked in listings.
    pub id: &'a str,
    whole: &'a str,
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret part never reaches a log.
        write!(f, "PresentedToken({})", mask_token_id(self.id))
    }
}

impl<'a> PresentedToken<'a> {
    /// Checks a token's shape: `fb_` + 12 hex id + `_` + 64 hex secret.
    pub fn parse(s: &'a str) -> Result<Self, Error> {
        if s.len() > MAX_TOKEN {
            return Err(invalid("token", format!("longer than {MAX_TOKEN} bytes")));
        }
        let bad = || invalid("token", "is not a Firebreak API token (fb_<id>_<secret>)");
        let rest = s.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
        let hex = |t: &str, n: usize| {
            t.len() == n
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(id, ID_HEX) || !hex(secret, SECRET_HEX) {
            return Err(bad());
        }
        Ok(Self { id, whole: s })
    }

    /// What the store keeps in place of the token: SHA-256 of the whole token, in hex. The
    /// secret holds 256 random bits, so a fast hash is enough (no dictionary to try).
    pub fn hash(&self) -> String {
        token_hash(self.whole)
    }
}

fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// What intake's store keeps in place of an integration key: its SHA-256, in lowercase hex.
/// Keys intake makes hold 128 random bits, so a fast hash is enough (no dictionary to try);
/// keys an operator chose are declared in the configuration, which is not stored.
pub fn integration_key_hash(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// A newly made token: shown once to its creator, then only its hash is kept.
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub hash: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewToken({})", mask_token_id(&self.id))
    }
}

impl NewToken {
    /// Makes a token from `random` bytes (38: 6 for the id, 32 for the secret), which the
    /// caller draws from the operating system's generator.
    pub fn from_random(random: &[u8; 38]) -> Self {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let id = hex(&random[..6]);
        let token = format!("{TOKEN_PREFIX}{id}_{}", hex(&random[6..]));
        let hash = token_hash(&token);
        Self { id, token, hash }
    }
}

/// A token id as listings show it: `fb_3f9a…`, enough to tell tokens apart.
pub fn mask_token_id(id: &str) -> String {
    let shown: String = id.chars().take(6).collect();
    format!("{TOKEN_PREFIX}{shown}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: &[(Role, Scope)]) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: "alice".into(),
            token_id: "0123456789ab".into(),
            grants: grants
                .iter()
                .map(|(role, scope)| Grant {
                    role: *role,
                    scope: scope.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_matrix_gives_each_role_what_the_guide_says() {
        use Role::*;
        // Table: permission, the roles that hold it (every other role must not).
        let table: &[(Permission, &[Role])] = &[
            (
                P::IncidentsRead,
                &[
                    IncidentCommander,
                    Responder,
                    ItOperator,
                    Manager,
                    Analyst,
                    Viewer,
                    Admin,
                    Service,
                ],
            ),
            (
                P::IncidentsAcknowledge,
                &[IncidentCommander, Responder, ItOperator, Manager, Admin],
            ),
            (P::IncidentsClose, &[IncidentCommander, Manager, Admin]),
            (P::IncidentsAssign, &[IncidentCommander, Manager, Admin]),
            (P::IncidentsClassify, &[IncidentCommander, Manager, Admin]),
            (
                P::IncidentsReview,
                &[IncidentCommander, Responder, ItOperator, Manager, Admin],
            ),
            (
                P::IncidentsNote,
                &[
                    IncidentCommander,
                    Responder,
                    ItOperator,
                    Manager,
                    Analyst,
                    Admin,
                ],
            ),
            (
                P::AlertsRaise,
                &[
                    IncidentCommander,
                    Responder,
                    ItOperator,
                    Manager,
                    Admin,
                    Integration,
                ],
            ),
            (P::AlertsIngest, &[Service]),
            (
                P::ApprovalsDecide,
                &[IncidentCommander, Responder, ItOperator, Manager, Admin],
            ),
            (P::TokensManage, &[Admin]),
            (P::IntegrationsManage, &[Admin]),
            (P::MaintenanceManage, &[ItOperator, Manager, Admin]),
            (P::AuditRead, &[Manager, Analyst, Admin]),
            (P::CredentialsSync, &[Service]),
        ];
        for (p, holders) in table {
            for r in Role::ALL {
                assert_eq!(r.grants(*p), holders.contains(r), "{r} / {p}");
            }
        }
    }

    #[test]
    fn scopes_bound_where_a_grant_applies() {
        let team = principal(&[(Role::Responder, Scope::Team("payments".into()))]);
        let on = |team| Target {
            service: "triage",
            team,
            incident: None,
        };
        assert!(team.may(P::IncidentsAcknowledge, on(Some("payments"))));
        assert!(!team.may(P::IncidentsAcknowledge, on(Some("search"))));
        assert!(!team.may(P::IncidentsAcknowledge, on(None)));
        let svc = principal(&[(Role::Admin, Scope::Service("intake".into()))]);
        assert!(svc.may(
            P::IntegrationsManage,
            Target {
                service: "intake",
                team: None,
                incident: None,
            }
        ));
        assert!(!svc.may(P::IncidentsClose, on(None)));
        let viewer = principal(&[(Role::Viewer, Scope::All)]);
        assert!(!viewer.may(P::IncidentsAcknowledge, on(None)));
        assert_eq!(viewer.actor(), "user:alice");
    }

    #[test]
    fn an_incident_role_grants_its_permissions_on_that_incident_only() {
        let commander_of = |id: &str| Grant {
            role: Role::of_incident_role("commander").unwrap(),
            scope: Scope::Incident(id.into()),
        };
        let p = principal(&[(Role::Viewer, Scope::All)]);
        let p = Principal {
            grants: [p.grants, vec![commander_of("INC-42")]].concat(),
            ..p
        };
        let on = |incident| Target {
            service: "triage",
            team: None,
            incident,
        };
        assert!(p.may(P::IncidentsClose, on(Some("INC-42"))));
        assert!(p.may(P::IncidentsAssign, on(Some("INC-42"))));
        assert!(!p.may(P::IncidentsClose, on(Some("INC-43"))));
        assert!(!p.may(P::IncidentsClose, on(None)));
        assert!(p.may_on_some_incident(P::IncidentsClose));
        assert!(!p.may_on_some_incident(P::TokensManage));
        // Reading was the viewer's anyway; the incident grant adds nothing elsewhere.
        assert!(p.may(P::IncidentsRead, on(Some("INC-43"))));
        assert!(p.holds(Role::IncidentCommander, on(Some("INC-42"))));
        assert!(!p.holds(Role::IncidentCommander, on(Some("INC-43"))));
        for (name, role) in [
            ("commander", Role::IncidentCommander),
            ("incident-commander", Role::IncidentCommander),
            ("responder", Role::Responder),
            ("it-operator", Role::ItOperator),
            ("manager", Role::Manager),
            ("analyst", Role::Analyst),
        ] {
            assert_eq!(Role::of_incident_role(name), Some(role));
        }
        for extra in ["scribe", "admin", "service", "viewer", ""] {
            assert_eq!(Role::of_incident_role(extra), None, "{extra}");
        }
    }

    #[test]
    fn scopes_and_names_parse_strictly() {
        assert_eq!("all".parse::<Scope>().unwrap(), Scope::All);
        assert_eq!(
            "team:db-oncall".parse::<Scope>().unwrap(),
            Scope::Team("db-oncall".into())
        );
        assert_eq!(
            "service:intake".parse::<Scope>().unwrap(),
            Scope::Service("intake".into())
        );
        let id = crate::IncidentId::new().to_string();
        assert_eq!(
            format!("incident:{id}").parse::<Scope>().unwrap(),
            Scope::Incident(id.clone())
        );
        assert_eq!(
            Scope::Incident(id.clone()).to_string(),
            format!("incident:{id}")
        );
        for bad in [
            "",
            "everything",
            "incident:INC-42",
            "incident:",
            "team:",
            "team:Bad Name",
            "service:billing",
            &"x".repeat(200),
        ] {
            let e = bad.parse::<Scope>().unwrap_err();
            assert!(e.to_string().contains("scope"), "{bad:?}: {e}");
        }
        assert!(parse_name("user", "-alice").is_err());
        assert!(parse_name("user", "alice\0").is_err());
        assert!(parse_name("user", &"a".repeat(65)).is_err());
        assert_eq!(parse_name("user", "alice.b_c-1").unwrap(), "alice.b_c-1");
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .to_string()
                .contains("role")
        );
    }

    #[test]
    fn a_token_is_parsed_by_shape_and_stored_only_as_its_hash() {
        let t = NewToken::from_random(&[7; 38]);
        assert_eq!(t.token.len(), 3 + 12 + 1 + 64);
        let p = PresentedToken::parse(&t.token).unwrap();
        assert_eq!(p.id, t.id);
        assert_eq!(p.hash(), t.hash);
        assert!(
            !format!("{p:?}{t:?}").contains(&t.token[16..]),
            "no secret in Debug"
        );
        let hostile = [
            String::new(),
            "Bearer x".into(),
            "fb_".into(),
            t.token.to_uppercase(),
            format!("{}0", t.token),
            "fb_0123456789ab_".to_owned() + &"g".repeat(64),
            "x".repeat(100_000),
            t.token.replace('_', "\0"),
        ];
        for h in &hostile {
            let e = PresentedToken::parse(h).unwrap_err();
            assert!(e.to_string().contains("token"), "{e}");
        }
        assert_eq!(mask_token_id(&t.id), "fb_070707…");
    }
}
