//! Identity across processes: services call each other with the service credential, a public
//! caller cannot reach the internal IngestAlert, a token made on notification works on
//! triage at its first use, and its revocation reaches triage within the sync interval.

use std::time::{Duration, Instant};

use firebreak_proto::v1;
use tonic::Code;

use crate::harness::{ADMIN_TOKEN, Deployment, SERVICE_TOKEN, alert};

async fn connect(url: &str, token: Option<&str>) -> firebreak_proto::access::AuthedChannel {
    let c = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    firebreak_proto::access::authed(c, token)
}

#[tokio::test]
async fn services_use_the_service_credential_and_tokens_follow_the_directory() {
    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(runbooks.path(), "").await;
    d.start("notification", 1);
    d.start("triage", 1);
    d.start("intake", 1);

    // Intake reaches triage with the service credential: the caller gets the incident id.
    let mut intake = d.intake().await;
    let raised = intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(alert("checkout down", "checkout", "")),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!raised.incident_id.is_empty(), "{raised:?}");

    // IngestAlert is internal (intake's call above used it with the service credential):
    // refused to the admin and to anonymous callers.
    use firebreak_proto::internal::v1 as internal;
    let ingest = internal::IngestAlertRequest {
        alert: Some(v1::AlertReceived {
            alert_id: "01900000-0000-7000-8000-0000000000aa".into(),
            title: "forged".into(),
            source: "intruder".into(),
            dedup_key: "forged".into(),
            severity: 1,
            ..Default::default()
        }),
    };
    let triage_url = d.grpc("triage-1");
    for (token, want) in [
        (Some(ADMIN_TOKEN), Code::PermissionDenied),
        (None, Code::Unauthenticated),
    ] {
        let e = internal::triage_ingest_service_client::TriageIngestServiceClient::new(
            connect(&triage_url, token).await,
        )
        .ingest_alert(ingest.clone())
        .await
        .unwrap_err();
        assert_eq!(e.code(), want, "{token:?}: {e:?}");
    }
    let mut as_service = v1::incident_service_client::IncidentServiceClient::new(
        connect(&triage_url, Some(SERVICE_TOKEN)).await,
    );
    let list = as_service
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.incidents.iter().all(|i| i.title != "forged"),
        "a refused IngestAlert opened an incident"
    );

    // A person's token, made on notification, works on triage at its first use.
    let notification = connect(&d.grpc("notification-1"), Some(ADMIN_TOKEN)).await;
    let mut access = v1::access_service_client::AccessServiceClient::new(notification);
    access
        .create_user(v1::CreateUserRequest {
            user: Some(v1::User {
                name: "dana".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let made = access
        .create_token(v1::CreateTokenRequest {
            subject: "dana".into(),
            grants: vec![v1::Grant {
                role: v1::Role::Responder as i32,
                scope: "all".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut dana = v1::incident_service_client::IncidentServiceClient::new(
        connect(&triage_url, Some(&made.secret)).await,
    );
    let acked = dana
        .acknowledge(v1::AcknowledgeRequest {
            id: raised.incident_id.clone(),
            actor: "user:someone-else".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(acked.state(), v1::IncidentState::Acknowledged);
    let timeline = as_service
        .get_timeline(v1::GetTimelineRequest {
            id: raised.incident_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ack = timeline
        .entries
        .iter()
        .find(|e| e.kind == "acknowledged")
        .unwrap();
    assert_eq!(ack.actor, "user:dana");

    // Revoked on notification: refused by triage within the sync interval (200 ms here).
    access
        .revoke_token(v1::RevokeTokenRequest {
            id: made.token.unwrap().id,
        })
        .await
        .unwrap();
    let revoked_at = Instant::now();
    loop {
        let r = dana
            .list_incidents(v1::ListIncidentsRequest::default())
            .await;
        match r {
            Err(e) if e.code() == Code::Unauthenticated => break,
            _ => assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "a revoked token still works on triage"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "revocation reached triage in {} ms",
        revoked_at.elapsed().as_millis()
    );
}
