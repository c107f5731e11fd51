//! TLS end to end with certificates made here (rcgen): the CLI over `https://` to a TLS server
//! (embedded intake reaching its own server over TLS too), never a silent downgrade, client
//! certificates when the server requires them, and a renewed certificate served without a
//! restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::{Server, repo, run_in_dir};

/// A CA and what it signs, written as PEM files into `dir`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `names`, as (cert, key) files named `stem`.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// `firebreak up` with `extra` configuration (the shipped runbooks, its own data directory).
fn up(dir: &Path, extra: &str) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(&config, extra).unwrap();
    Server::start(&dir.join("data"), &repo("runbooks"), &config)
}

/// The server's gRPC port.
fn port(s: &Server) -> u16 {
    s.grpc.rsplit(':').next().unwrap().parse().unwrap()
}

fn cli(s: &Server, args: &[&str]) -> (i32, String, String) {
    let token = s.token();
    let mut all = vec!["--token", token.as_str()];
    all.extend_from_slice(args);
    run_in_dir(s.cwd.path(), &all, None)
}

#[test]
fn the_cli_speaks_tls_to_a_tls_server_and_never_falls_back_to_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test");
    let (cert, key) = ca.leaf(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let server = up(
        dir.path(),
        &format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n",
            cert.display(),
            key.display(),
            ca.pem.display()
        ),
    );
    let https = format!("https://localhost:{}", port(&server));
    let ca_file = ca.pem.to_str().unwrap();

    // A raise over TLS: intake stores it and asks triage, its own server, over TLS too, so
    // the incident id comes back.
    let (code, id, err) = cli(
        &server,
        &[
            "--server",
            &https,
            "--ca-file",
            ca_file,
            "raise",
            "--title",
            "tls works",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 36, "an incident id: {id:?} {err}");
    let (code, out, err) = cli(
        &server,
        &[
            "--server",
            &https,
            "--ca-file",
            ca_file,
            "incident",
            "show",
            &id,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls works"), "{out}");

    // Not trusted without the CA (the system roots do not know it): refused, not downgraded.
    let (code, _, err) = cli(&server, &["--server", &https, "incident", "list"]);
    assert_eq!(code, 3, "{err}");
    // Plaintext to the TLS port: no answer a client could mistake for success.
    let plain = format!("http://127.0.0.1:{}", port(&server));
    let (code, _, err) = cli(&server, &["--server", &plain, "incident", "list"]);
    assert_ne!(code, 0, "plaintext to a TLS server must fail: {err}");

    // HTTP speaks TLS too.
    let http_port = free_http_port(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca.pem).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        client
            .get(format!("https://localhost:{http_port}/livez"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
}

/// The HTTP port `firebreak up` was given (the test harness passes --http-addr).
fn free_http_port(s: &Server) -> u16 {
    s.http
}

#[test]
fn https_to_a_plaintext_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test");
    let server = up(dir.path(), "{}\n");
    let https = format!("https://127.0.0.1:{}", port(&server));
    let (code, out, err) = cli(
        &server,
        &[
            "--server",
            &https,
            "--ca-file",
            ca.pem.to_str().unwrap(),
            "incident",
            "list",
        ],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn client_certificates_are_required_when_configured_and_renewals_need_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let clients = Ca::new(dir.path(), "clients");
    let (cert, key) = ca.leaf(dir.path(), "server", &["localhost"]);
    let (ccert, ckey) = clients.leaf(dir.path(), "client", &["ops-laptop"]);
    let (self_cert, self_key) = clients.leaf(dir.path(), "self", &["firebreak"]);
    let server = up(
        dir.path(),
        &format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  client_ca_file: {}\n  client_cert_file: {}\n  client_key_file: {}\n",
            cert.display(),
            key.display(),
            ca.pem.display(),
            clients.pem.display(),
            self_cert.display(),
            self_key.display(),
        ),
    );
    let https = format!("https://localhost:{}", port(&server));
    let ca_file = ca.pem.to_str().unwrap();
    let (code, _, err) = cli(
        &server,
        &["--server", &https, "--ca-file", ca_file, "incident", "list"],
    );
    assert_ne!(code, 0, "no client certificate, yet served: {err}");
    let with_cert = |s: &Server, ca: &str| {
        cli(
            s,
            &[
                "--server",
                &https,
                "--ca-file",
                ca,
                "--client-cert",
                ccert.to_str().unwrap(),
                "--client-key",
                ckey.to_str().unwrap(),
                "raise",
                "--title",
                "mtls works",
            ],
        )
    };
    let (code, id, err) = with_cert(&server, ca_file);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        id.trim().len(),
        36,
        "intake reached triage with its own certificate: {id:?}"
    );

    // A renewed certificate from another CA, written over the files: served within seconds,
    // no restart; the old CA no longer verifies it.
    let renewed = Ca::new(dir.path(), "renewed");
    let (new_cert, new_key) = renewed.leaf(dir.path(), "server-new", &["localhost"]);
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let renewed_ca = renewed.pem.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, _, err) = with_cert(&server, renewed_ca);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate never served: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, _, _) = with_cert(&server, ca_file);
    assert_ne!(code, 0, "the old CA still verifies the server");
}
