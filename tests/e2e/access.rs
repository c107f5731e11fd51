//! The permission matrix, generated: every gRPC method of `firebreak.v1` (read from the
//! descriptors, so a new method without a rule fails here) called by every role's token, by
//! anonymous, malformed, expired, revoked, deleted-user and wrong-team tokens, and by the
//! service credential. Each call is allowed or refused exactly as the matrix says, and the
//! refused ones (sent with requests that would change things) change nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use firebreak::access_rules::{self, Rule};
use firebreak_domain::access::{Permission, Role};
use firebreak_proto::v1;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::harness::{Stack, eventually};

/// The service credential the stack is configured with.
const SERVICE_TOKEN: &str =
    "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Sends and receives encoded messages as they are.
#[derive(Default)]
struct Raw;
struct RawEncoder;
struct RawDecoder;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Every method of firebreak.v1 and of the internal firebreak.internal.v1 in the descriptors:
/// its path and whether it streams.
fn methods() -> Vec<(String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(firebreak_proto::INTERNAL_FILE_DESCRIPTOR_SET)
        .unwrap();
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package();
        if package != "firebreak.v1" && package != "firebreak.internal.v1" {
            continue;
        }
        for service in &file.service {
            for m in &service.method {
                out.push((
                    format!("/{package}.{}/{}", service.name(), m.name()),
                    m.server_streaming(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Calls `path` with `body`, sending `token`; the status code it ends with (`Ok` for an
/// answer or an opened stream).
async fn call(
    channel: &tonic::transport::Channel,
    path: &str,
    streaming: bool,
    body: Vec<u8>,
    token: Option<&str>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(body);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let path = axum::http::uri::PathAndQuery::try_from(path).unwrap();
    let result = if streaming {
        tokio::time::timeout(
            Duration::from_secs(5),
            grpc.server_streaming(req, path, Raw),
        )
        .await
        .map(|r| r.map(drop))
        .unwrap_or(Ok(()))
    } else {
        grpc.unary(req, path, Raw).await.map(drop)
    };
    match result {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Who calls.
#[derive(Debug, Clone)]
enum Caller {
    Anonymous,
    /// A token that is refused whatever the method: malformed, expired, revoked, of a deleted
    /// user.
    Invalid(&'static str, String),
    /// A valid token holding one role everywhere.
    Role(Role, String),
    /// A valid admin token scoped to a team that owns none of these methods' targets.
    WrongTeam(String),
    Service,
}

impl Caller {
    /// Who this is, for failure messages.
    fn describe(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".into(),
            Self::Invalid(why, _) => format!("a token {why}"),
            Self::Role(r, _) => format!("a {r}"),
            Self::WrongTeam(_) => "an admin of team db".into(),
            Self::Service => "the service credential".into(),
        }
    }

    fn token(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Invalid(_, t) | Self::Role(_, t) | Self::WrongTeam(t) => Some(t),
            Self::Service => Some(SERVICE_TOKEN),
        }
    }

    /// What the matrix says of this caller and `rule`: `None` allowed, else the code.
    fn expected(&self, rule: Rule) -> Option<Code> {
        let holds = |p: Permission| match self {
            Self::Role(r, _) => r.grants(p),
            Self::Service => Role::Service.grants(p),
            _ => false,
        };
        match (self, rule) {
            (_, Rule::Public) => None,
            (Self::Anonymous | Self::Invalid(..), _) => Some(Code::Unauthenticated),
            (_, Rule::Authenticated) => None,
            (_, Rule::Needs(p) | Rule::NeedsOrKey(p)) if holds(p) => None,
            _ => Some(Code::PermissionDenied),
        }
    }
}

/// What the stack holds, to compare before and after the refused calls.
async fn state(s: &mut Stack, incident: &str) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let inc = s
        .incidents
        .get_incident(v1::GetIncidentRequest {
            id: incident.into(),
        })
        .await
        .unwrap()
        .into_inner();
    out.insert("incident", format!("{:?}", inc.incident));
    let timeline = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: incident.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    out.insert("timeline", format!("{}", timeline.entries.len()));
    let list = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    out.insert("incidents", format!("{}", list.incidents.len()));
    let mut access = s.access();
    let tokens = access
        .list_tokens(v1::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    out.insert(
        "tokens",
        format!(
            "{:?}",
            tokens
                .iter()
                .map(|t| (t.id.clone(), t.revoked_at.is_some()))
                .collect::<Vec<_>>()
        ),
    );
    let users = access
        .list_users(v1::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users;
    out.insert(
        "users",
        format!("{:?}", users.iter().map(|u| &u.name).collect::<Vec<_>>()),
    );
    let teams = access
        .list_teams(v1::ListTeamsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .teams;
    out.insert("teams", format!("{teams:?}"));
    let integrations = s
        .integrations()
        .list_integrations(v1::ListIntegrationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .integrations;
    out.insert(
        "integrations",
        format!(
            "{:?}",
            integrations.iter().map(|i| &i.name).collect::<Vec<_>>()
        ),
    );
    let mut silences = Vec::new();
    for expired in [false, true] {
        let listed = s
            .silences()
            .list_silences(v1::ListSilencesRequest {
                expired,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .silences;
        silences.extend(listed.into_iter().map(|x| (x.id, x.ends_at)));
    }
    out.insert("silences", format!("{silences:?}"));
    out
}

/// A request for each mutating method that would change the stack if it were allowed; the
/// others get an empty message.
fn hostile_bodies(incident: &str, admin_token_id: &str) -> BTreeMap<&'static str, Vec<u8>> {
    let alert = || v1::AlertInput {
        title: "forged".into(),
        source: "intruder".into(),
        ..Default::default()
    };
    let mut b: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let id = incident.to_owned();
    b.insert(
        "/firebreak.v1.IntakeService/RaiseIncident",
        v1::RaiseIncidentRequest {
            alert: Some(alert()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IntakeService/RaiseAlerts",
        v1::RaiseAlertsRequest {
            alerts: vec![alert()],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IntegrationService/CreateIntegration",
        v1::CreateIntegrationRequest {
            name: "intruder".into(),
            integration_kind: v1::IntegrationKind::Grpc as i32,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.SilenceService/CreateSilence",
        v1::CreateSilenceRequest {
            matchers: vec![v1::SilenceMatcher {
                name: "alertname".into(),
                op: v1::MatchOperator::Equal.into(),
                value: "forged".into(),
            }],
            ends_at: Some(firebreak_proto::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            comment: "forged".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IncidentService/Acknowledge",
        v1::AcknowledgeRequest {
            id: id.clone(),
            actor: "user:anyone".into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IncidentService/Resolve",
        v1::ResolveRequest {
            id: id.clone(),
            actor: "user:anyone".into(),
            summary: "forged".into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IncidentService/AddNote",
        v1::AddNoteRequest {
            id: id.clone(),
            actor: "user:anyone".into(),
            text: "forged".into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.IncidentService/AssignRole",
        v1::AssignRoleRequest {
            id: id.clone(),
            role: "commander".into(),
            person: "intruder".into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.internal.v1.TriageIngestService/IngestAlert",
        firebreak_proto::internal::v1::IngestAlertRequest {
            alert: Some(v1::AlertReceived {
                alert_id: "01900000-0000-7000-8000-000000000001".into(),
                title: "forged".into(),
                source: "intruder".into(),
                dedup_key: "forged".into(),
                severity: 1,
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/CreateToken",
        v1::CreateTokenRequest {
            subject: "admin".into(),
            grants: vec![v1::Grant {
                role: v1::Role::Admin as i32,
                scope: "all".into(),
            }],
            ..Default::default()
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/RevokeToken",
        v1::RevokeTokenRequest {
            id: admin_token_id.into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/CreateUser",
        v1::CreateUserRequest {
            user: Some(v1::User {
                name: "intruder".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/DeleteUser",
        v1::DeleteUserRequest {
            name: "matrix".into(),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/CreateTeam",
        v1::CreateTeamRequest {
            team: Some(v1::Team {
                name: "intruders".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    );
    b.insert(
        "/firebreak.v1.AccessService/SetTeamMember",
        v1::SetTeamMemberRequest {
            team: "db".into(),
            user: "matrix".into(),
            member: true,
        }
        .encode_to_vec(),
    );
    b
}

#[tokio::test]
async fn every_method_allows_and_refuses_each_caller_as_the_matrix_says() {
    // Hundreds of refused calls from one address: the slowdown for guessing (tested on its
    // own below) is off here, or each would wait a second.
    let config = format!(
        "auth:\n  service_token: {SERVICE_TOKEN}\n  sync_interval_ms: 50\n  failures_per_minute: 0\n"
    );
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let methods = methods();
    // Every method has a rule, and every rule a method.
    for (path, _) in &methods {
        assert!(
            access_rules::rule(path).is_some(),
            "{path} has no access rule"
        );
    }
    assert_eq!(
        methods.len(),
        access_rules::METHODS.len(),
        "the rule table names methods that do not exist"
    );

    // The people and tokens: one per role, and the invalid kinds.
    let mut access = s.access();
    for name in ["matrix", "leaver"] {
        access
            .create_user(v1::CreateUserRequest {
                user: Some(v1::User {
                    name: name.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    access
        .create_team(v1::CreateTeamRequest {
            team: Some(v1::Team {
                name: "db".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut token = async |subject: &str, role: v1::Role, scope: &str, expires: u64| {
        access
            .create_token(v1::CreateTokenRequest {
                subject: subject.into(),
                grants: vec![v1::Grant {
                    role: role as i32,
                    scope: scope.into(),
                }],
                description: String::new(),
                expires_in_seconds: expires,
            })
            .await
            .unwrap()
            .into_inner()
    };
    let mut callers = vec![
        Caller::Anonymous,
        Caller::Service,
        Caller::Invalid("malformed", "fb_not-a-token".into()),
        Caller::Invalid("oversized", format!("fb_{}", "a".repeat(4096))),
        Caller::Invalid(
            "unknown",
            "fb_0123456789ab_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                .into(),
        ),
    ];
    for role in Role::ALL.iter().filter(|r| **r != Role::Service) {
        let wire = firebreak_proto::access::wire_role(*role);
        callers.push(Caller::Role(
            *role,
            token("matrix", wire, "all", 0).await.secret,
        ));
    }
    callers.push(Caller::WrongTeam(
        token("matrix", v1::Role::Admin, "team:db", 0).await.secret,
    ));
    let expired = token("matrix", v1::Role::Admin, "all", 60).await.secret;
    let revoked = token("matrix", v1::Role::Admin, "all", 0).await;
    let leaver = token("leaver", v1::Role::Admin, "all", 0).await.secret;
    let revoked_id = revoked.token.as_ref().unwrap().id.clone();
    access
        .revoke_token(v1::RevokeTokenRequest { id: revoked_id })
        .await
        .unwrap();
    access
        .delete_user(v1::DeleteUserRequest {
            name: "leaver".into(),
        })
        .await
        .unwrap();
    // The manual clock moves past the expiry; the copy syncs every 50 ms.
    s.clock.advance(Duration::from_secs(120));
    callers.push(Caller::Invalid("expired", expired));
    callers.push(Caller::Invalid("revoked", revoked.secret));
    callers.push(Caller::Invalid("of a deleted user", leaver));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let incident = s.raise("disk full on db-1").await;
    let admin_id = s.admin_token[3..15].to_owned();
    let bodies = hostile_bodies(&incident, &admin_id);
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The incident's own work settles first (its page to the log channel lands on the
    // timeline), so that what follows is the calls' doing alone.
    let incidents = s.incidents.clone();
    eventually("the incident's page on its timeline", || {
        let mut incidents = incidents.clone();
        let id = incident.clone();
        async move {
            let t = incidents
                .get_timeline(v1::GetTimelineRequest {
                    id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            t.entries
                .iter()
                .any(|e| e.kind == "notification")
                .then_some(())
        }
    })
    .await;
    // Refused calls first, then compare: they changed nothing.
    let before = state(&mut s, &incident).await;
    let mut refused = 0;
    for (path, streaming) in &methods {
        let (_, rule) = access_rules::rule(path).unwrap();
        let body = bodies.get(path.as_str()).cloned().unwrap_or_default();
        for caller in &callers {
            let Some(want) = caller.expected(rule) else {
                continue;
            };
            let got = call(&channel, path, *streaming, body.clone(), caller.token()).await;
            assert_eq!(got, want, "{path} by {}", caller.describe());
            refused += 1;
        }
    }
    let after = state(&mut s, &incident).await;
    assert_eq!(before, after, "a refused call changed something");

    // Allowed calls get past the access layer (the handlers may still refuse the input).
    let mut allowed = 0;
    for (path, streaming) in &methods {
        let (_, rule) = access_rules::rule(path).unwrap();
        for caller in &callers {
            if caller.expected(rule).is_some() {
                continue;
            }
            let got = call(&channel, path, *streaming, Vec::new(), caller.token()).await;
            assert!(
                !matches!(got, Code::Unauthenticated | Code::PermissionDenied),
                "{path} by {}: {got:?}",
                caller.describe()
            );
            allowed += 1;
        }
    }
    assert!(
        refused > 300 && allowed > 100,
        "{refused} refused, {allowed} allowed"
    );
    // Every refusal was counted.
    eventually("the refusals in the metrics", || async {
        let text = reqwest::get(format!("{}/metrics", s.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("firebreak_auth_failures_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= refused as f64)
    })
    .await;
}

#[tokio::test]
async fn the_timeline_names_the_tokens_identity_not_the_requests_actor() {
    let mut s = Stack::start(&crate::harness::empty_runbooks(), "").await;
    let mut alice = s.person("alice", v1::Role::IncidentCommander).await;
    let id = s.raise("checkout down").await;
    alice
        .incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: id.clone(),
            actor: "user:root".into(),
        })
        .await
        .unwrap();
    let t = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ack = t.entries.iter().find(|e| e.kind == "acknowledged").unwrap();
    assert_eq!(ack.actor, "user:alice");
    assert!(!t.entries.iter().any(|e| e.actor.contains("root")));
}

#[tokio::test]
async fn a_token_in_the_wrong_place_or_shape_is_unauthenticated() {
    let s = Stack::start(&crate::harness::empty_runbooks(), "").await;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = s.admin_token.clone();
    let cases: Vec<(&str, String)> = vec![
        ("x-api-key", token.clone()),
        ("authorization", format!("Basic {token}")),
        ("authorization", token.clone()),
        ("authorization", "Bearer ".to_owned()),
        ("authorization", format!("Bearer {token}x")),
        ("authorization", format!("Bearer {}", token.to_uppercase())),
        ("authorization", format!("Bearer {}", "f".repeat(8 * 1024))),
    ];
    for (header, value) in cases {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(Vec::new());
        req.metadata_mut().insert(
            axum::http::HeaderName::from_static(header)
                .as_str()
                .parse::<tonic::metadata::MetadataKey<_>>()
                .unwrap(),
            value.parse().unwrap(),
        );
        let path = axum::http::uri::PathAndQuery::from_static(
            "/firebreak.v1.IncidentService/ListIncidents",
        );
        let code = match grpc.unary(req, path, Raw).await {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        let shown: String = value.chars().take(40).collect();
        assert_eq!(code, Code::Unauthenticated, "{header}: {shown}…");
    }
}

#[tokio::test]
async fn a_source_that_keeps_failing_is_slowed_down_and_no_one_else_is() {
    let s = Stack::start(
        &crate::harness::empty_runbooks(),
        "auth:\n  failures_per_minute: 5\n  failure_delay_ms: 3000\n",
    )
    .await;
    let from = |ip: &str| {
        tonic::transport::Endpoint::from_shared(s.grpc.clone())
            .unwrap()
            .local_address(Some(ip.parse().unwrap()))
    };
    let guesser = from("127.0.0.1").connect().await.unwrap();
    let other = from("127.0.0.2").connect().await.unwrap();
    let path = "/firebreak.v1.IncidentService/ListIncidents";
    let guess = format!("fb_0123456789ab_{}", "7".repeat(64));
    let timed = async |channel: &tonic::transport::Channel, token: &str| {
        let started = std::time::Instant::now();
        let code = call(channel, path, false, Vec::new(), Some(token)).await;
        (code, started.elapsed())
    };
    for _ in 0..4 {
        let (code, took) = timed(&guesser, &guess).await;
        assert_eq!(code, Code::Unauthenticated);
        assert!(
            took < Duration::from_millis(2500),
            "{took:?} before the limit"
        );
    }
    // The fifth failure reaches the limit: from here on each failure waits 3 s. (A call
    // that is not held back takes milliseconds; 2.5 s leaves a loaded machine room.)
    for _ in 0..2 {
        let (code, took) = timed(&guesser, &guess).await;
        assert_eq!(code, Code::Unauthenticated);
        assert!(took >= Duration::from_secs(3), "{took:?}: not slowed down");
    }
    // The same address with a valid token, and another address guessing, are not slowed.
    let (code, took) = timed(&guesser, &s.admin_token).await;
    assert_eq!(code, Code::Ok);
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let (code, took) = timed(&other, &guess).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        took < Duration::from_millis(2500),
        "{took:?}: another source was slowed"
    );
}

/// Whether a call was refused for want of a permission (`None`), or its answer.
fn unless_denied<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> Option<T> {
    match answer {
        Ok(r) => Some(r.into_inner()),
        Err(e) if e.code() == Code::PermissionDenied => None,
        Err(e) => panic!("{e:?}"),
    }
}

/// An incident role is data on one incident, and grants its permission role there only: a
/// viewer made commander of one incident closes it, not another; an extra role (scribe)
/// grants nothing; the role taken away, the permission goes with it.
#[tokio::test]
async fn an_incident_role_grants_its_permissions_on_that_incident_only() {
    let config = format!("auth:\n  service_token: {SERVICE_TOKEN}\n  sync_interval_ms: 50\n");
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let vic = s.person("vic", v1::Role::Viewer).await;
    let (a, b) = (s.raise("checkout down").await, s.raise("search down").await);
    for id in [&a, &b] {
        s.incidents
            .resolve(v1::ResolveRequest {
                id: id.clone(),
                summary: "restarted".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let close = |id: &str| v1::CloseRequest {
        id: id.into(),
        root_cause: "a bad deploy".into(),
        ..Default::default()
    };
    let assign = |id: &str, role: &str| v1::AssignRoleRequest {
        id: id.into(),
        role: role.into(),
        person: "vic".into(),
    };
    let mut mine = vic.incidents.clone();
    assert!(unless_denied(mine.close(close(&a)).await).is_none());

    s.incidents
        .assign_role(assign(&a, "commander"))
        .await
        .unwrap();
    s.incidents.assign_role(assign(&b, "scribe")).await.unwrap();
    // The role reaches the access layer through the directory's copy.
    let closed = eventually("vic's command of the first incident", || {
        let (mut mine, req) = (vic.incidents.clone(), close(&a));
        async move { unless_denied(mine.close(req).await) }
    })
    .await;
    assert_eq!(closed.incident.unwrap().state(), v1::IncidentState::Closed);
    let timeline = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: a.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let entry = timeline.iter().find(|e| e.kind == "closed").unwrap();
    assert_eq!(entry.actor, "user:vic");

    // Not the other incident, where vic is only a scribe: refused, and it stays resolved.
    assert!(unless_denied(mine.close(close(&b)).await).is_none());
    let still = s
        .incidents
        .get_incident(v1::GetIncidentRequest { id: b.clone() })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(still.state(), v1::IncidentState::Resolved);

    // Taken away, the role grants nothing again.
    let c = s.raise("payments down").await;
    s.incidents
        .assign_role(assign(&c, "responder"))
        .await
        .unwrap();
    let note = |text: &str| v1::AddNoteRequest {
        id: c.clone(),
        text: text.into(),
        ..Default::default()
    };
    eventually("vic's responder role on the third incident", || {
        let (mut mine, req) = (vic.incidents.clone(), note("on it"));
        async move { unless_denied(mine.add_note(req).await) }
    })
    .await;
    s.incidents
        .unassign_role(v1::UnassignRoleRequest {
            id: c.clone(),
            role: "responder".into(),
            person: "vic".into(),
        })
        .await
        .unwrap();
    eventually("vic's responder role to end", || {
        let (mut mine, req) = (vic.incidents.clone(), note("still on it"));
        async move {
            unless_denied(mine.add_note(req).await)
                .is_none()
                .then_some(())
        }
    })
    .await;
    // The refused note changed nothing: the timeline holds notes from vic's allowed calls
    // only (one, unless a call raced the removal's sync).
    let notes: Vec<String> = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .filter(|e| e.kind == "note")
        .map(|e| e.data)
        .collect();
    assert!(notes.iter().any(|n| n.contains("on it")), "{notes:?}");
    assert_eq!(
        notes.iter().filter(|n| n.contains("\"on it\"")).count(),
        1,
        "{notes:?}"
    );
    // vic's refused attempts after the removal took effect are not on it.
    let after = unless_denied(mine.add_note(note("refused for sure")).await);
    assert!(after.is_none());
    let notes_after = s
        .incidents
        .get_timeline(v1::GetTimelineRequest {
            id: c.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        !notes_after
            .iter()
            .any(|e| e.data.contains("refused for sure"))
    );
}
