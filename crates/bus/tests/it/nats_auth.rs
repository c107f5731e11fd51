//! Connecting to a NATS server that requires credentials and TLS: the right ones work, wrong
//! or missing ones are refused, and TLS is never silently skipped.

use std::time::Duration;

use firebreak_bus::{Bus, NatsAuth, NatsBus, NatsOptions, streams};
use firebreak_testkit::nats::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::{init_tracing, msg};

/// Publishes and fetches one message: the connection really works.
async fn round_trip(bus: &NatsBus) {
    bus.publish(streams::INCIDENTS, msg("auth-1"))
        .await
        .unwrap();
    let got = bus
        .fetch(streams::INCIDENTS, "c", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn a_password_protected_server_takes_the_right_password_only() {
    init_tracing();
    let server = NatsServer::start_with(&["--user", "firebreak", "--pass", "s3cret-pass"]).await;
    let with = |user: Option<&str>, pass: Option<&str>| NatsAuth {
        user: user.map(str::to_owned),
        password: pass.map(str::to_owned),
        ..NatsAuth::default()
    };
    let bus = NatsBus::connect_with(
        &server.url(),
        NatsOptions::default(),
        with(Some("firebreak"), Some("s3cret-pass")),
    )
    .await
    .unwrap();
    round_trip(&bus).await;
    for (user, pass) in [(Some("firebreak"), Some("wrong")), (None, None)] {
        let refused =
            NatsBus::connect_with(&server.url(), NatsOptions::default(), with(user, pass)).await;
        assert!(refused.is_err(), "connected with {user:?}/{pass:?}");
    }
    // Two kinds of credentials at once is a configuration error, said before connecting.
    let both = NatsAuth {
        token: Some("t".into()),
        ..with(Some("firebreak"), Some("s3cret-pass"))
    };
    let e = NatsBus::connect_with(&server.url(), NatsOptions::default(), both)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("one of"), "{e}");
    // No secret in Debug.
    assert!(!format!("{:?}", with(Some("u"), Some("s3cret-pass"))).contains("s3cret"));
}

#[tokio::test]
async fn a_tls_server_is_reached_with_its_ca_and_refused_without_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert_pem.to_str().unwrap(),
        "--tlskey",
        key_pem.to_str().unwrap(),
    ])
    .await;
    let tls = |ca: Option<std::path::PathBuf>| NatsAuth {
        require_tls: true,
        ca_file: ca,
        ..NatsAuth::default()
    };
    let bus = NatsBus::connect_with(&server.url(), NatsOptions::default(), tls(Some(ca_pem)))
        .await
        .unwrap();
    round_trip(&bus).await;
    // The system roots do not know this CA: refused, not downgraded.
    let refused = NatsBus::connect_with(&server.url(), NatsOptions::default(), tls(None)).await;
    assert!(refused.is_err());
}
