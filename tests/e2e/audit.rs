//! The audit log end to end on the embedded stack: the access layer records refused calls and
//! calls that change state (never reads), with the authenticated actor, the outcome, the
//! caller's address, request and trace ids; entries reach the directory with the credential
//! sync; and no credential is ever written down.

use firebreak_proto::v1;
use tonic::Code;

use crate::harness::{Stack, eventually};

const SERVICE_TOKEN: &str =
    "fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Every entry, newest first, as the admin reads them.
async fn entries(s: &Stack, req: v1::ListAuditRequest) -> Vec<v1::AuditEntry> {
    s.audit()
        .list_audit(req)
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// The entry of `method` by `actor`, once shipped.
async fn shipped(s: &Stack, actor: &str, method: &str) -> v1::AuditEntry {
    let req = v1::ListAuditRequest {
        actor: actor.into(),
        action: method.into(),
        ..Default::default()
    };
    eventually(&format!("the audit entry of {actor} {method}"), || {
        let req = req.clone();
        async move { entries(s, req).await.into_iter().next() }
    })
    .await
}

#[tokio::test]
async fn changes_and_refusals_are_audited_with_who_what_how_and_where_and_reads_are_not() {
    let config = format!("auth:\n  service_token: {SERVICE_TOKEN}\n  sync_interval_ms: 50\n");
    let mut s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let mut rita = s.person("rita", v1::Role::Responder).await;
    let mut vic = s.person("vic", v1::Role::Viewer).await;
    let id = s.raise("checkout down").await;

    // A responder acknowledges, in a trace and with a request id of the caller's.
    let mut ack = tonic::Request::new(v1::AcknowledgeRequest {
        id: id.clone(),
        actor: String::new(),
    });
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    ack.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    ack.metadata_mut()
        .insert("x-request-id", "req-ack-1".parse().unwrap());
    rita.incidents.acknowledge(ack).await.unwrap();
    // Reads are not audited.
    rita.incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap();
    // A viewer may not close.
    let refused = vic
        .incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Nobody at all.
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = v1::incident_service_client::IncidentServiceClient::new(
        firebreak_proto::access::authed(channel, None),
    );
    let refused = anonymous
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // An allowed call the handler answers with an error is audited with its code.
    let missing = rita
        .incidents
        .acknowledge(v1::AcknowledgeRequest {
            id: "01900000-0000-7000-8000-000000000000".into(),
            actor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let all_rita = eventually("both of rita's acknowledgements", || async {
        let req = v1::ListAuditRequest {
            actor: "user:rita".into(),
            ..Default::default()
        };
        let e = entries(&s, req).await;
        (e.len() == 2).then_some(e)
    })
    .await;
    let (failed, ok) = (&all_rita[0], &all_rita[1]);
    assert_eq!(ok.method, "/firebreak.v1.IncidentService/Acknowledge");
    assert_eq!(ok.roles, "responder");
    assert_eq!(ok.outcome, "ok");
    assert_eq!(ok.reason, "");
    assert_eq!(ok.trace_id, TRACE_ID);
    assert_eq!(ok.request_id, "req-ack-1");
    let source: std::net::SocketAddr = ok.source.parse().unwrap();
    assert!(source.ip().is_loopback(), "{}", ok.source);
    assert!(ok.at.is_some());
    assert_eq!(failed.outcome, "not_found");
    // What each call acted on, read from its request.
    assert_eq!(ok.target, format!("incident:{id}"));
    assert_eq!(
        failed.target,
        "incident:01900000-0000-7000-8000-000000000000"
    );
    // Without a request id of the caller's, one is made; without a trace, one is begun.
    assert!(
        uuid::Uuid::parse_str(&failed.request_id).is_ok(),
        "{}",
        failed.request_id
    );
    assert_eq!(failed.trace_id.len(), 32);
    assert_ne!(failed.trace_id, TRACE_ID);

    let denied = shipped(&s, "user:vic", "Close").await;
    assert_eq!(denied.outcome, "denied");
    assert_eq!(denied.roles, "viewer");
    // A user refused an incident's method is asked whether a role on it allows the call,
    // so its target is known; an anonymous call's request is never read.
    assert_eq!(denied.target, format!("incident:{id}"));
    assert!(
        denied.reason.contains("user:vic may not incidents.close"),
        "{}",
        denied.reason
    );
    let unauthenticated = shipped(&s, "anonymous", "IncidentService/Resolve").await;
    assert_eq!(unauthenticated.outcome, "unauthenticated");
    assert_eq!(unauthenticated.roles, "");
    assert!(unauthenticated.reason.contains("no credentials"));
    assert_eq!(unauthenticated.target, "");

    let all = entries(
        &s,
        v1::ListAuditRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    for read in [
        "ListIncidents",
        "GetIncident",
        "ListAudit",
        "SyncCredentials",
        "IngestAlert",
        "RaiseIncident",
    ] {
        assert!(
            !all.iter().any(|e| e.method.ends_with(read)),
            "{read} was audited: {all:#?}"
        );
    }
    // The admin's changes are there too: the people made and their tokens (raising alerts
    // is the data plane, not audited when allowed).
    for change in ["CreateUser", "CreateToken"] {
        assert!(
            all.iter().any(|e| e.method.ends_with(change)
                && e.actor == "user:admin"
                && e.outcome == "ok"
                && e.target == "user:rita"),
            "{change} of rita is missing: {all:#?}"
        );
    }

    // No secret anywhere: not in an entry, not in any database file of the stack.
    let secrets = [
        rita.token.clone(),
        vic.token.clone(),
        s.admin_token.clone(),
        SERVICE_TOKEN.to_owned(),
    ];
    let text = format!("{all:?}");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(s.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".db"))
        {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(files.iter().any(|(p, _)| p.ends_with("notification.db")));
    for secret in &secrets {
        // The secret part: the token's id is public and is stored on purpose.
        let hidden = &secret[16..];
        assert!(!text.contains(hidden), "a token secret is in the audit log");
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(hidden.len()).any(|w| w == hidden.as_bytes()),
                "a token secret is in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn the_audit_log_answers_only_those_who_may_read_it() {
    let config = format!("auth:\n  service_token: {SERVICE_TOKEN}\n  sync_interval_ms: 50\n");
    let s = Stack::start(&crate::harness::empty_runbooks(), &config).await;
    let vic = s.person("vic", v1::Role::Viewer).await;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut as_vic = v1::audit_service_client::AuditServiceClient::new(
        firebreak_proto::access::authed(channel, Some(&vic.token)),
    );
    let refused = as_vic
        .list_audit(v1::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // And that refusal is itself audited.
    let entry = shipped(&s, "user:vic", "AuditService/ListAudit").await;
    assert_eq!(entry.outcome, "denied");
}
