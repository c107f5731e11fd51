//! The client against a real embedded Firebreak: a raise made before the server is up is
//! retried until it is, on one idempotency key, and opens exactly one incident; a bad token
//! is refused and not retried.

use std::time::Duration;

use firebreak_client::{Client, ClientConfig, Error, proto as v1};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A break-glass admin token, as `auth.admin_token` takes it.
const TOKEN: &str =
    "fb_adadadadadad_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_before_the_server_is_up_is_retried_into_one_incident() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let file = dir.path().join("firebreak.yaml");
    std::fs::write(&file, format!("auth:\n  admin_token: {TOKEN}\n")).unwrap();
    let mut config = firebreak::Config::load(Some(&file), Vec::new()).unwrap();
    config.data_dir = dir.path().join("data");
    config.grpc_addr = format!("127.0.0.1:{port}").parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();

    // Nothing listens yet: the first attempts fail UNAVAILABLE and are retried, each with
    // the raise's one idempotency key.
    let client = Client::connect(
        ClientConfig::new(&endpoint)
            .token(TOKEN)
            .retries(40, Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let early = client.clone();
    let pending = tokio::spawn(async move {
        early
            .raise_incident(v1::AlertInput {
                title: "raised before the server was up".into(),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "it waits for the server");
    let app = firebreak::App::build(config).await.unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let raised = pending.await.unwrap().unwrap();
    assert!(!raised.incident_id.is_empty());
    let listed = client
        .incidents()
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.incidents.len(), 1, "{listed:?}");
    assert_eq!(listed.incidents[0].id, raised.incident_id);

    // A refusal is not retried: a wrong token answers at once.
    let stranger = Client::connect(
        ClientConfig::new(&endpoint)
            .token(
                "fb_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
            )
            .retries(40, Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let refused = stranger
        .raise_incident(v1::AlertInput {
            title: "not allowed".into(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&refused, Err(Error::Status(s)) if s.code() == tonic::Code::Unauthenticated),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");
    shutdown.cancel();
}
