//! The method table: what every gRPC method needs. This is the whole permission matrix's
//! left column; `firebreak_domain::access::Role::grants` is the rest. A method missing here is
//! refused for everyone, and the matrix test (which reads the methods from the descriptors)
//! fails.

use firebreak_domain::access::Permission;

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, with or without credentials (health, reflection).
    Public,
    /// Any verified caller (who am I).
    Authenticated,
    /// A caller holding this permission for the method's service.
    Needs(Permission),
    /// As `Needs`, or an integration key in place of a token (`authorization: Bearer KEY`,
    /// as monitoring tools have always sent it), which intake itself checks.
    NeedsOrKey(Permission),
}

use Permission as P;
use Rule::{Authenticated, Needs, NeedsOrKey, Public};

/// Every method: its full path, the service it belongs to, and its rule.
pub const METHODS: &[(&str, &str, Rule)] = &[
    // Intake.
    (
        "/firebreak.v1.IntakeService/RaiseIncident",
        "intake",
        NeedsOrKey(P::AlertsRaise),
    ),
    (
        "/firebreak.v1.IntakeService/RaiseAlerts",
        "intake",
        NeedsOrKey(P::AlertsRaise),
    ),
    (
        "/firebreak.v1.IntakeService/ResolveAlert",
        "intake",
        NeedsOrKey(P::AlertsRaise),
    ),
    (
        "/firebreak.v1.IntegrationService/CreateIntegration",
        "intake",
        Needs(P::IntegrationsManage),
    ),
    (
        "/firebreak.v1.IntegrationService/ListIntegrations",
        "intake",
        Needs(P::IntegrationsRead),
    ),
    (
        "/firebreak.v1.IntegrationService/DeleteIntegration",
        "intake",
        Needs(P::IntegrationsManage),
    ),
    // Triage.
    (
        "/firebreak.v1.IncidentService/GetIncident",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/ListIncidents",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/GetTimeline",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/Acknowledge",
        "triage",
        Needs(P::IncidentsAcknowledge),
    ),
    (
        "/firebreak.v1.IncidentService/Resolve",
        "triage",
        Needs(P::IncidentsResolve),
    ),
    (
        "/firebreak.v1.IncidentService/Close",
        "triage",
        Needs(P::IncidentsClose),
    ),
    (
        "/firebreak.v1.IncidentService/AddNote",
        "triage",
        Needs(P::IncidentsNote),
    ),
    (
        "/firebreak.v1.IncidentService/GetReview",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/IngestAlert",
        "triage",
        Needs(P::AlertsIngest),
    ),
    (
        "/firebreak.v1.IncidentService/Watch",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/GetChange",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/AssignRole",
        "triage",
        Needs(P::IncidentsAssign),
    ),
    (
        "/firebreak.v1.IncidentService/UnassignRole",
        "triage",
        Needs(P::IncidentsAssign),
    ),
    // Orchestration.
    (
        "/firebreak.v1.RunbookService/ListRunbooks",
        "orchestration",
        Needs(P::RunbooksRead),
    ),
    (
        "/firebreak.v1.RunbookService/ListRuns",
        "orchestration",
        Needs(P::RunbooksRead),
    ),
    (
        "/firebreak.v1.RunbookService/GetRun",
        "orchestration",
        Needs(P::RunbooksRead),
    ),
    (
        "/firebreak.v1.RunbookService/Approve",
        "orchestration",
        Needs(P::ApprovalsDecide),
    ),
    (
        "/firebreak.v1.RunbookService/Reject",
        "orchestration",
        Needs(P::ApprovalsDecide),
    ),
    (
        "/firebreak.v1.RunbookService/ListApprovals",
        "orchestration",
        Needs(P::RunbooksRead),
    ),
    (
        "/firebreak.v1.RunbookService/DryRun",
        "orchestration",
        Needs(P::RunbooksDryRun),
    ),
    // Notification and the directory.
    (
        "/firebreak.v1.NotificationService/ListDeliveries",
        "notification",
        Needs(P::DeliveriesRead),
    ),
    (
        "/firebreak.v1.AccessService/WhoAmI",
        "notification",
        Authenticated,
    ),
    (
        "/firebreak.v1.AccessService/CreateToken",
        "notification",
        Needs(P::TokensManage),
    ),
    (
        "/firebreak.v1.AccessService/ListTokens",
        "notification",
        Needs(P::TokensManage),
    ),
    (
        "/firebreak.v1.AccessService/RevokeToken",
        "notification",
        Needs(P::TokensManage),
    ),
    (
        "/firebreak.v1.AccessService/CreateUser",
        "notification",
        Needs(P::DirectoryManage),
    ),
    (
        "/firebreak.v1.AccessService/ListUsers",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.AccessService/DeleteUser",
        "notification",
        Needs(P::DirectoryManage),
    ),
    (
        "/firebreak.v1.AccessService/CreateTeam",
        "notification",
        Needs(P::DirectoryManage),
    ),
    (
        "/firebreak.v1.AccessService/ListTeams",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.AccessService/DeleteTeam",
        "notification",
        Needs(P::DirectoryManage),
    ),
    (
        "/firebreak.v1.AccessService/SetTeamMember",
        "notification",
        Needs(P::DirectoryManage),
    ),
    (
        "/firebreak.v1.CredentialService/SyncCredentials",
        "notification",
        Needs(P::CredentialsSync),
    ),
    (
        "/firebreak.v1.AuditService/ListAudit",
        "notification",
        Needs(P::AuditRead),
    ),
];

/// Methods that change state but are the machine path, repeated per alert and per second:
/// the credential sync (which carries the audit entries themselves), intake handing each
/// alert to triage, and raising alerts (the data plane: each alert is stored by intake with
/// its integration and source, and auditing thousands a second would double every write).
/// Refused calls to them are audited like any other.
const INTERNAL: &[&str] = &[
    "/firebreak.v1.CredentialService/SyncCredentials",
    "/firebreak.v1.IncidentService/IngestAlert",
    "/firebreak.v1.IntakeService/RaiseIncident",
    "/firebreak.v1.IntakeService/RaiseAlerts",
    "/firebreak.v1.IntakeService/ResolveAlert",
];

/// Whether an allowed call to `path` goes into the audit log: a method that changes state
/// (every method but reads: `Get*`, `List*`, `Watch`, `WhoAmI`, and `DryRun`, which changes
/// nothing), unless it is internal. A method of a new kind is audited until it is named a
/// read here. Refused calls are audited whatever the method (health and reflection are never
/// refused).
pub fn audited_when_allowed(path: &str) -> bool {
    if PUBLIC_SERVICES.iter().any(|s| path.starts_with(s)) || INTERNAL.contains(&path) {
        return false;
    }
    let method = path.rsplit('/').next().unwrap_or(path);
    let read = method.starts_with("Get")
        || method.starts_with("List")
        || matches!(method, "Watch" | "WhoAmI" | "DryRun");
    !read
}

/// The gRPC services anyone may call: health (probes) and reflection (generic clients).
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The rule for a request path and the service it belongs to; `None` for a path with no rule
/// (refused).
pub fn rule(path: &str) -> Option<(&'static str, Rule)> {
    if PUBLIC_SERVICES.iter().any(|s| path.starts_with(s)) {
        return Some(("", Public));
    }
    static BY_PATH: std::sync::LazyLock<
        std::collections::HashMap<&'static str, (&'static str, Rule)>,
    > = std::sync::LazyLock::new(|| {
        METHODS
            .iter()
            .map(|(p, service, rule)| (*p, (*service, *rule)))
            .collect()
    });
    BY_PATH.get(path).copied()
}

/// The permission matrix as docs/security.md shows it: each method, its permission, and the
/// roles holding it (a test keeps the document equal to this).
pub fn markdown() -> String {
    use firebreak_domain::access::Role;
    let mut out = String::from("| method | needs | roles | audited |\n| --- | --- | --- | --- |\n");
    for (path, _, rule) in METHODS {
        let method = path.trim_start_matches("/firebreak.v1.");
        let (needs, roles) = match rule {
            Public => ("nothing".to_owned(), "anyone".to_owned()),
            Authenticated => ("a valid token".to_owned(), "any".to_owned()),
            Needs(p) | NeedsOrKey(p) => {
                let roles: Vec<&str> = Role::ALL
                    .iter()
                    .filter(|r| r.grants(*p))
                    .map(|r| r.as_str())
                    .collect();
                let mut needs = format!("`{p}`");
                if matches!(rule, NeedsOrKey(_)) {
                    needs.push_str(" or an integration key");
                }
                (needs, roles.join(", "))
            }
        };
        let audited = if audited_when_allowed(path) {
            "always"
        } else {
            "when refused"
        };
        out.push_str(&format!("| `{method}` | {needs} | {roles} | {audited} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/security.md shows the matrix this code enforces.
    #[test]
    fn the_security_doc_shows_the_matrix_in_force() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc.find("<!-- matrix:begin -->\n").unwrap() + 22;
        let end = doc.find("<!-- matrix:end -->").unwrap();
        let want = markdown();
        if std::env::var_os("FIREBREAK_WRITE_DOCS").is_some() {
            std::fs::write(path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
            return;
        }
        assert_eq!(
            &doc[start..end],
            want,
            "docs/security.md's matrix is stale: run this test with FIREBREAK_WRITE_DOCS=1"
        );
    }

    /// The methods whose allowed calls are audited, named one by one: a method that moves
    /// between the lists is a decision this test makes visible.
    #[test]
    fn allowed_calls_are_audited_exactly_for_the_methods_that_change_state() {
        let audited: Vec<&str> = METHODS
            .iter()
            .map(|(p, _, _)| *p)
            .filter(|p| audited_when_allowed(p))
            .map(|p| p.trim_start_matches("/firebreak.v1."))
            .collect();
        assert_eq!(
            audited,
            [
                "IntegrationService/CreateIntegration",
                "IntegrationService/DeleteIntegration",
                "IncidentService/Acknowledge",
                "IncidentService/Resolve",
                "IncidentService/Close",
                "IncidentService/AddNote",
                "RunbookService/Approve",
                "RunbookService/Reject",
                "AccessService/CreateToken",
                "AccessService/RevokeToken",
                "AccessService/CreateUser",
                "AccessService/DeleteUser",
                "AccessService/CreateTeam",
                "AccessService/DeleteTeam",
                "AccessService/SetTeamMember",
            ]
        );
        assert!(!audited_when_allowed("/grpc.health.v1.Health/Check"));
        // A path without a rule (refused, and audited as such) would count as a change.
        assert!(audited_when_allowed("/firebreak.v1.IncidentService/Nope"));
    }

    #[test]
    fn paths_without_a_rule_are_refused_and_health_is_public() {
        assert_eq!(rule("/firebreak.v1.IncidentService/Nope"), None);
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Some(("", Public)));
        assert_eq!(
            rule("/firebreak.v1.IncidentService/Close"),
            Some(("triage", Needs(P::IncidentsClose)))
        );
    }
}
