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
    (
        "/firebreak.v1.SilenceService/ListSilences",
        "intake",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.SilenceService/GetSilence",
        "intake",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.SilenceService/CreateSilence",
        "intake",
        Needs(P::SilencesManage),
    ),
    (
        "/firebreak.v1.SilenceService/ExpireSilence",
        "intake",
        Needs(P::SilencesManage),
    ),
    (
        "/firebreak.v1.SilenceService/PreviewSilence",
        "intake",
        Needs(P::IncidentsRead),
    ),
    // Silenced alerts for `firebreak report`: counts, read as incidents are.
    (
        "/firebreak.v1.IntegrationService/GetSilencedCounts",
        "intake",
        Needs(P::IncidentsRead),
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
        "/firebreak.internal.v1.TriageIngestService/IngestAlert",
        "triage",
        Needs(P::AlertsIngest),
    ),
    (
        "/firebreak.v1.IncidentService/WatchIncidents",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/GetChange",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/ListIncidentAlerts",
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
    // Mitigating and reopening are a responder's, as resolving is; a merge closes an
    // incident (checked on the incident merged away).
    (
        "/firebreak.v1.IncidentService/Mitigate",
        "triage",
        Needs(P::IncidentsResolve),
    ),
    (
        "/firebreak.v1.IncidentService/Reopen",
        "triage",
        Needs(P::IncidentsResolve),
    ),
    (
        "/firebreak.v1.IncidentService/Merge",
        "triage",
        Needs(P::IncidentsClose),
    ),
    (
        "/firebreak.v1.IncidentService/Reclassify",
        "triage",
        Needs(P::IncidentsClassify),
    ),
    // The post-incident review's follow-ups and summary.
    (
        "/firebreak.v1.IncidentService/AddFollowUp",
        "triage",
        Needs(P::IncidentsReview),
    ),
    (
        "/firebreak.v1.IncidentService/UpdateFollowUp",
        "triage",
        Needs(P::IncidentsReview),
    ),
    (
        "/firebreak.v1.IncidentService/SetReviewSummary",
        "triage",
        Needs(P::IncidentsReview),
    ),
    (
        "/firebreak.v1.IncidentService/ListFollowUps",
        "triage",
        Needs(P::IncidentsRead),
    ),
    (
        "/firebreak.v1.IncidentService/GetReport",
        "triage",
        Needs(P::IncidentsRead),
    ),
    // Status updates to stakeholders (docs/status-updates.md).
    (
        "/firebreak.v1.IncidentService/PostStatusUpdate",
        "triage",
        Needs(P::IncidentsUpdateStatus),
    ),
    (
        "/firebreak.v1.NotificationService/Subscribe",
        "notification",
        Needs(P::IncidentsSubscribe),
    ),
    (
        "/firebreak.v1.NotificationService/Unsubscribe",
        "notification",
        Needs(P::IncidentsSubscribe),
    ),
    (
        "/firebreak.v1.NotificationService/ListSubscribers",
        "notification",
        Needs(P::IncidentsRead),
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
    (
        "/firebreak.v1.RunbookService/WatchRuns",
        "orchestration",
        Needs(P::RunbooksRead),
    ),
    // Notification and the directory.
    (
        "/firebreak.v1.NotificationService/ListDeliveries",
        "notification",
        Needs(P::DeliveriesRead),
    ),
    (
        "/firebreak.v1.NotificationService/TestEscalation",
        "notification",
        Needs(P::DeliveriesRead),
    ),
    (
        "/firebreak.v1.NotificationService/WhoIsOnCall",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.NotificationService/ListShifts",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.NotificationService/PreviewTemplate",
        "notification",
        Needs(P::DeliveriesRead),
    ),
    (
        "/firebreak.v1.NotificationService/ListSchedules",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.NotificationService/PutSchedule",
        "notification",
        Needs(P::SchedulesManage),
    ),
    (
        "/firebreak.v1.NotificationService/DeleteSchedule",
        "notification",
        Needs(P::SchedulesManage),
    ),
    (
        "/firebreak.v1.NotificationService/AddOverride",
        "notification",
        Needs(P::SchedulesOverride),
    ),
    (
        "/firebreak.v1.NotificationService/RemoveOverride",
        "notification",
        Needs(P::SchedulesOverride),
    ),
    (
        "/firebreak.v1.NotificationService/ListMaintenanceWindows",
        "notification",
        Needs(P::DirectoryRead),
    ),
    (
        "/firebreak.v1.NotificationService/PutMaintenanceWindow",
        "notification",
        Needs(P::MaintenanceManage),
    ),
    (
        "/firebreak.v1.NotificationService/DeleteMaintenanceWindow",
        "notification",
        Needs(P::MaintenanceManage),
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
        "/firebreak.v1.AccessService/UpdateUser",
        "notification",
        Needs(P::DirectoryManage),
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
        "/firebreak.internal.v1.CredentialService/SyncCredentials",
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
    "/firebreak.internal.v1.CredentialService/SyncCredentials",
    "/firebreak.internal.v1.TriageIngestService/IngestAlert",
    "/firebreak.v1.IntakeService/RaiseIncident",
    "/firebreak.v1.IntakeService/RaiseAlerts",
    "/firebreak.v1.IntakeService/ResolveAlert",
];

/// Whether an allowed call to `path` goes into the audit log: a method that changes state
/// (every method but reads: `Get*`, `List*`, `WatchIncidents`, `WatchRuns`, `WhoAmI`, and `DryRun`,
/// which changes nothing, nor does `PreviewSilence`), unless it is internal. A method of a
/// new kind is audited until it is named a read here. Refused calls are audited whatever the method (health and reflection are never
/// refused).
pub fn audited_when_allowed(path: &str) -> bool {
    if PUBLIC_SERVICES.iter().any(|s| path.starts_with(s)) || INTERNAL.contains(&path) {
        return false;
    }
    let method = path.rsplit('/').next().unwrap_or(path);
    let read = method.starts_with("Get")
        || method.starts_with("List")
        || matches!(
            method,
            "WatchIncidents"
                | "WatchRuns"
                | "WhoAmI"
                | "DryRun"
                | "TestEscalation"
                | "WhoIsOnCall"
                | "PreviewTemplate"
                | "PreviewSilence"
        );
    !read
}

/// The gRPC services anyone may call: health (probes) and reflection (generic clients).
const PUBLIC_SERVICES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What a method acts on, read from its request: the audit log records it as `KIND:ID`, and
/// an incident (or a run, through its incident) is where incident roles grant permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Incident,
    Run,
    Token,
    User,
    Team,
    Integration,
    Schedule,
    Silence,
    Maintenance,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incident => "incident",
            Self::Run => "run",
            Self::Token => "token",
            Self::User => "user",
            Self::Team => "team",
            Self::Integration => "integration",
            Self::Schedule => "schedule",
            Self::Silence => "silence",
            Self::Maintenance => "maintenance",
        }
    }
}

/// Reads a method's target out of its encoded request message.
pub type ReadTarget = fn(&[u8]) -> Option<String>;

/// Decodes the request as `$message` and takes `$field` (a path of fields) from it.
macro_rules! read {
    ($message:ty, $($field:ident).+) => {
        (|b: &[u8]| {
            <$message as firebreak_proto::Message>::decode(b)
                .ok()
                .map(|m| m.$($field).+)
        }) as ReadTarget
    };
    ($message:ty, $first:ident ? . $($field:ident).+) => {
        (|b: &[u8]| {
            <$message as firebreak_proto::Message>::decode(b)
                .ok()
                .and_then(|m| m.$first)
                .map(|m| m.$($field).+)
        }) as ReadTarget
    };
}

use firebreak_proto::v1;

/// The methods whose target is known, and how it is read. Methods not here record no target
/// (reads and lists, and raising alerts, which are not audited when allowed).
const TARGETS: &[(&str, Subject, ReadTarget)] = &[
    (
        "/firebreak.v1.IncidentService/GetIncident",
        Subject::Incident,
        read!(v1::GetIncidentRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/GetTimeline",
        Subject::Incident,
        read!(v1::GetTimelineRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/GetReview",
        Subject::Incident,
        read!(v1::GetReviewRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/ListIncidentAlerts",
        Subject::Incident,
        read!(v1::ListIncidentAlertsRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Acknowledge",
        Subject::Incident,
        read!(v1::AcknowledgeRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Resolve",
        Subject::Incident,
        read!(v1::ResolveRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Close",
        Subject::Incident,
        read!(v1::CloseRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/AddNote",
        Subject::Incident,
        read!(v1::AddNoteRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/AssignRole",
        Subject::Incident,
        read!(v1::AssignRoleRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/UnassignRole",
        Subject::Incident,
        read!(v1::UnassignRoleRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Mitigate",
        Subject::Incident,
        read!(v1::MitigateRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Reopen",
        Subject::Incident,
        read!(v1::ReopenRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Merge",
        Subject::Incident,
        read!(v1::MergeRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/Reclassify",
        Subject::Incident,
        read!(v1::ReclassifyRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/AddFollowUp",
        Subject::Incident,
        read!(v1::AddFollowUpRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/UpdateFollowUp",
        Subject::Incident,
        read!(v1::UpdateFollowUpRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/SetReviewSummary",
        Subject::Incident,
        read!(v1::SetReviewSummaryRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/ListFollowUps",
        Subject::Incident,
        read!(v1::ListFollowUpsRequest, id),
    ),
    (
        "/firebreak.v1.IncidentService/PostStatusUpdate",
        Subject::Incident,
        read!(v1::PostStatusUpdateRequest, id),
    ),
    (
        "/firebreak.v1.NotificationService/Subscribe",
        Subject::Incident,
        read!(v1::SubscribeRequest, incident_id),
    ),
    (
        "/firebreak.v1.NotificationService/Unsubscribe",
        Subject::Incident,
        read!(v1::UnsubscribeRequest, incident_id),
    ),
    (
        "/firebreak.v1.NotificationService/ListSubscribers",
        Subject::Incident,
        read!(v1::ListSubscribersRequest, incident_id),
    ),
    (
        "/firebreak.v1.RunbookService/GetRun",
        Subject::Run,
        read!(v1::GetRunRequest, id),
    ),
    (
        "/firebreak.v1.RunbookService/Approve",
        Subject::Run,
        read!(v1::ApproveRequest, run_id),
    ),
    (
        "/firebreak.v1.RunbookService/Reject",
        Subject::Run,
        read!(v1::RejectRequest, run_id),
    ),
    (
        "/firebreak.v1.AccessService/CreateToken",
        Subject::User,
        read!(v1::CreateTokenRequest, subject),
    ),
    (
        "/firebreak.v1.AccessService/RevokeToken",
        Subject::Token,
        read!(v1::RevokeTokenRequest, id),
    ),
    (
        "/firebreak.v1.AccessService/CreateUser",
        Subject::User,
        read!(v1::CreateUserRequest, user?.name),
    ),
    (
        "/firebreak.v1.AccessService/UpdateUser",
        Subject::User,
        read!(v1::UpdateUserRequest, user?.name),
    ),
    (
        "/firebreak.v1.AccessService/DeleteUser",
        Subject::User,
        read!(v1::DeleteUserRequest, name),
    ),
    (
        "/firebreak.v1.AccessService/CreateTeam",
        Subject::Team,
        read!(v1::CreateTeamRequest, team?.name),
    ),
    (
        "/firebreak.v1.AccessService/DeleteTeam",
        Subject::Team,
        read!(v1::DeleteTeamRequest, name),
    ),
    (
        "/firebreak.v1.AccessService/SetTeamMember",
        Subject::Team,
        read!(v1::SetTeamMemberRequest, team),
    ),
    (
        "/firebreak.v1.IntegrationService/CreateIntegration",
        Subject::Integration,
        read!(v1::CreateIntegrationRequest, name),
    ),
    (
        "/firebreak.v1.IntegrationService/DeleteIntegration",
        Subject::Integration,
        read!(v1::DeleteIntegrationRequest, name),
    ),
    // A new silence has no id in its request: the answer names it (`TARGET_METADATA`).
    (
        "/firebreak.v1.SilenceService/CreateSilence",
        Subject::Silence,
        edited_silence,
    ),
    (
        "/firebreak.v1.SilenceService/ExpireSilence",
        Subject::Silence,
        read!(v1::ExpireSilenceRequest, id),
    ),
    (
        "/firebreak.v1.NotificationService/PutSchedule",
        Subject::Schedule,
        put_schedule_name,
    ),
    (
        "/firebreak.v1.NotificationService/DeleteSchedule",
        Subject::Schedule,
        read!(v1::DeleteScheduleRequest, name),
    ),
    (
        "/firebreak.v1.NotificationService/AddOverride",
        Subject::Schedule,
        read!(v1::AddOverrideRequest, schedule),
    ),
    (
        "/firebreak.v1.NotificationService/RemoveOverride",
        Subject::Schedule,
        read!(v1::RemoveOverrideRequest, schedule),
    ),
    (
        "/firebreak.v1.NotificationService/PutMaintenanceWindow",
        Subject::Maintenance,
        put_window_name,
    ),
    (
        "/firebreak.v1.NotificationService/DeleteMaintenanceWindow",
        Subject::Maintenance,
        read!(v1::DeleteMaintenanceWindowRequest, name),
    ),
];

/// A maintenance window put's name, read from its YAML (the audit log's target).
fn put_window_name(b: &[u8]) -> Option<String> {
    let req = <v1::PutMaintenanceWindowRequest as firebreak_proto::Message>::decode(b).ok()?;
    yaml_name(&req.yaml)
}

/// The `name:` of a YAML document, if it has one.
fn yaml_name(yaml: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    serde_yaml::from_str::<Named>(yaml).ok().map(|n| n.name)
}

/// The silence a create edits (none for a new one, whose id the answer carries).
fn edited_silence(b: &[u8]) -> Option<String> {
    <v1::CreateSilenceRequest as firebreak_proto::Message>::decode(b)
        .ok()
        .map(|r| r.id)
        .filter(|id| !id.is_empty())
}

/// A schedule put's name, read from its YAML (the audit log's target).
fn put_schedule_name(b: &[u8]) -> Option<String> {
    let req = <v1::PutScheduleRequest as firebreak_proto::Message>::decode(b).ok()?;
    yaml_name(&req.yaml)
}

/// What `path` acts on and how to read it from its request, when known.
pub fn target(path: &str) -> Option<(Subject, ReadTarget)> {
    static BY_PATH: std::sync::LazyLock<
        std::collections::HashMap<&'static str, (Subject, ReadTarget)>,
    > = std::sync::LazyLock::new(|| {
        TARGETS
            .iter()
            .map(|(p, subject, read)| (*p, (*subject, *read)))
            .collect()
    });
    BY_PATH.get(path).copied()
}

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
        let method = path
            .trim_start_matches("/firebreak.v1.")
            .trim_start_matches('/');
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
                "SilenceService/CreateSilence",
                "SilenceService/ExpireSilence",
                "IncidentService/Acknowledge",
                "IncidentService/Resolve",
                "IncidentService/Close",
                "IncidentService/AddNote",
                "IncidentService/AssignRole",
                "IncidentService/UnassignRole",
                "IncidentService/Mitigate",
                "IncidentService/Reopen",
                "IncidentService/Merge",
                "IncidentService/Reclassify",
                "IncidentService/AddFollowUp",
                "IncidentService/UpdateFollowUp",
                "IncidentService/SetReviewSummary",
                "IncidentService/PostStatusUpdate",
                "NotificationService/Subscribe",
                "NotificationService/Unsubscribe",
                "RunbookService/Approve",
                "RunbookService/Reject",
                "NotificationService/PutSchedule",
                "NotificationService/DeleteSchedule",
                "NotificationService/AddOverride",
                "NotificationService/RemoveOverride",
                "NotificationService/PutMaintenanceWindow",
                "NotificationService/DeleteMaintenanceWindow",
                "AccessService/CreateToken",
                "AccessService/RevokeToken",
                "AccessService/CreateUser",
                "AccessService/UpdateUser",
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

    /// Every audited method records what it acted on, and every target is read from a
    /// method that exists, out of the request message that method takes.
    #[test]
    fn every_audited_method_names_its_target_read_from_its_own_request() {
        for (path, _, _) in METHODS {
            if audited_when_allowed(path) {
                assert!(target(path).is_some(), "{path} records no target");
            }
        }
        for (path, _, _) in TARGETS {
            assert!(rule(path).is_some(), "{path} is not a method");
        }
        use firebreak_proto::Message as _;
        let (subject, read) = target("/firebreak.v1.IncidentService/Close").unwrap();
        let close = v1::CloseRequest {
            id: "i-1".into(),
            root_cause: "disk".into(),
            ..Default::default()
        };
        assert_eq!(
            (subject, read(&close.encode_to_vec())),
            (Subject::Incident, Some("i-1".into()))
        );
        let (subject, read) = target("/firebreak.v1.AccessService/CreateUser").unwrap();
        let create = v1::CreateUserRequest {
            user: Some(v1::User {
                name: "amy".into(),
                ..Default::default()
            }),
        };
        assert_eq!(
            (subject, read(&create.encode_to_vec())),
            (Subject::User, Some("amy".into()))
        );
        // A message that is not the method's reads as no target, never a panic.
        assert_eq!(read(&[0xff, 0xff, 0xff]), None);
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
