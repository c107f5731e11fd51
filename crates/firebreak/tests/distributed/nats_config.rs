//! NATS credentials and TLS as the configuration gives them (docs/configuration.md, "NATS"),
//! against real `nats-server`s that require them: an NKey user, TLS with a CA made here, a
//! client certificate with a token, and an operator-mode server's `.creds` file. Each
//! connects through Firebreak's own configuration path — the `firebreak` binary loading a
//! file (and the environment) and reaching JetStream (`parked list` creates and reads the
//! parked stream) — and the wrong or missing credential is refused.

use std::path::{Path, PathBuf};

use firebreak_testkit::nats::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::harness::BIN;

/// `firebreak parked list --config FILE` with `env`: whether it connected, and its stderr.
async fn parked_list(config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["--output", "json", "parked", "list", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed, serde_json::json!([]), "nothing is parked yet");
    }
    (out.status.success(), stderr)
}

/// Writes `text` to `dir/name`, returning its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Connects with `yaml` as the configuration, expecting it to work or to be refused.
async fn expect(dir: &Path, yaml: &str, env: &[(&str, &str)], connects: bool) -> String {
    let config = write(dir, "firebreak.yaml", yaml);
    let (ok, stderr) = parked_list(&config, env).await;
    assert_eq!(ok, connects, "{yaml}\n{env:?}\n{stderr}");
    stderr
}

#[tokio::test]
async fn an_nkey_user_connects_with_its_seed_file_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let server_conf = write(
        dir.path(),
        "nats.conf",
        &format!(
            "authorization {{\n  users = [\n    {{ nkey: {} }}\n  ]\n}}\n",
            user.public_key()
        ),
    );
    let server = NatsServer::start_with(&["-c", server_conf.to_str().unwrap()]).await;
    let seed = write(dir.path(), "seed", &format!("{}\n", user.seed().unwrap()));
    let url = server.url();
    let d = dir.path();

    expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  nkey_seed_file: {}\n",
            seed.display()
        ),
        &[],
        true,
    )
    .await;
    // The seed from the environment, over a file that has none.
    let seed_text = user.seed().unwrap();
    expect(
        d,
        &format!("nats:\n  url: {url}\n"),
        &[("FIREBREAK_NATS__NKEY_SEED", &seed_text)],
        true,
    )
    .await;
    // Another user's seed, and no credentials at all, are refused by the server.
    let stranger = write(
        dir.path(),
        "stranger",
        &nkeys::KeyPair::new_user().seed().unwrap(),
    );
    let refused = expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  nkey_seed_file: {}\n",
            stranger.display()
        ),
        &[],
        false,
    )
    .await;
    assert!(refused.contains("cannot reach NATS"), "{refused}");
    assert!(
        !refused.contains(&seed_text[4..]),
        "a seed shown: {refused}"
    );
    expect(d, &format!("nats:\n  url: {url}\n"), &[], false).await;
    // An account's seed is not a user's: refused before connecting, naming the key.
    let account = write(
        dir.path(),
        "account",
        &nkeys::KeyPair::new_account().seed().unwrap(),
    );
    let refused = expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  nkey_seed_file: {}\n",
            account.display()
        ),
        &[],
        false,
    )
    .await;
    assert!(
        refused.contains("nats.nkey_seed: not a user NKey seed"),
        "{refused}"
    );
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir` with `name`.
struct Pki {
    ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca: write(dir, "ca.pem", &cert.pem()),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and key signed by the CA, for `names`.
    fn issue(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            write(dir, &format!("{name}.pem"), &cert.pem()),
            write(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

#[tokio::test]
async fn a_tls_server_is_reached_with_the_configured_ca_and_never_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let (cert, key) = pki.issue(d, "server", &["127.0.0.1", "localhost"]);
    let server_conf = write(
        d,
        "nats.conf",
        &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
            cert.display(),
            key.display()
        ),
    );
    let server = NatsServer::start_with(&["-c", server_conf.to_str().unwrap()]).await;
    let port = server.port();
    let ca = pki.ca.display().to_string();

    // tls:// requires TLS; the CA from the file, then from the environment.
    expect(
        d,
        &format!("nats:\n  url: tls://127.0.0.1:{port}\n  ca_file: {ca}\n"),
        &[],
        true,
    )
    .await;
    expect(
        d,
        &format!("nats:\n  url: nats://127.0.0.1:{port}\n  require_tls: true\n"),
        &[("FIREBREAK_NATS__CA_FILE", &ca)],
        true,
    )
    .await;
    // The system's roots do not know this CA: refused, not downgraded.
    expect(
        d,
        &format!("nats:\n  url: tls://127.0.0.1:{port}\n"),
        &[],
        false,
    )
    .await;
    // Another CA neither.
    let other_dir = d.join("other-ca");
    std::fs::create_dir(&other_dir).unwrap();
    let other = Pki::new(&other_dir);
    expect(
        d,
        &format!(
            "nats:\n  url: tls://127.0.0.1:{port}\n  ca_file: {}\n",
            other.ca.display()
        ),
        &[],
        false,
    )
    .await;

    // A plain server with TLS required: refused rather than spoken to in plain text.
    let plain = NatsServer::start().await;
    expect(
        d,
        &format!(
            "nats:\n  url: {}\n  require_tls: true\n  ca_file: {ca}\n",
            plain.url()
        ),
        &[],
        false,
    )
    .await;
    expect(d, &format!("nats:\n  url: {}\n", plain.url()), &[], true).await;
}

#[tokio::test]
async fn a_server_verifying_clients_takes_the_configured_certificate_and_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    let (cert, key) = pki.issue(d, "server", &["127.0.0.1"]);
    let (client_cert, client_key) = pki.issue(d, "client", &["firebreak"]);
    let server_conf = write(
        d,
        "nats.conf",
        &format!(
            "authorization {{\n  token: \"s3cret-nats-token\"\n}}\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n",
            cert.display(),
            key.display(),
            pki.ca.display()
        ),
    );
    let server = NatsServer::start_with(&["-c", server_conf.to_str().unwrap()]).await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let token = write(d, "token", "s3cret-nats-token\n");
    let tls = format!(
        "  ca_file: {}\n  client_cert_file: {}\n  client_key_file: {}\n",
        pki.ca.display(),
        client_cert.display(),
        client_key.display()
    );

    expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  token_file: {}\n{tls}",
            token.display()
        ),
        &[],
        true,
    )
    .await;
    // Without the client certificate, or with the wrong token, refused.
    expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  token_file: {}\n  ca_file: {}\n",
            token.display(),
            pki.ca.display()
        ),
        &[],
        false,
    )
    .await;
    let stderr = expect(
        d,
        &format!("nats:\n  url: {url}\n  token: wrong-token\n{tls}"),
        &[],
        false,
    )
    .await;
    assert!(!stderr.contains("s3cret-nats-token"), "{stderr}");
}

/// An operator-mode server (`operator`, `resolver: MEMORY`) and a `.creds` file of one of its
/// users, made here as `nsc` would: JWTs signed with the operator's and the account's NKeys.
#[tokio::test]
async fn an_operator_mode_server_takes_the_configured_creds_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let operator = nkeys::KeyPair::new_operator();
    // JetStream needs the server's own account besides Firebreak's.
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({
            "type": "operator", "version": 2, "system_account": system.public_key()
        }),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"type": "account", "version": 2}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({
            "type": "account",
            "version": 2,
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
                "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
            }
        }),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({
            "type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1
        }),
    );
    let server_conf = write(
        d,
        "nats.conf",
        &format!(
            "operator: {operator_jwt}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {system_jwt}\n  {}: {account_jwt}\n}}\n",
            system.public_key(),
            system.public_key(),
            account.public_key()
        ),
    );
    let server = NatsServer::start_with(&["-c", server_conf.to_str().unwrap()]).await;
    let creds = write(
        d,
        "firebreak.creds",
        &format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    );
    let url = server.url();
    expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  credentials_file: {}\n",
            creds.display()
        ),
        &[],
        true,
    )
    .await;
    // Without them, refused; a missing file is said so.
    expect(d, &format!("nats:\n  url: {url}\n"), &[], false).await;
    let stderr = expect(
        d,
        &format!(
            "nats:\n  url: {url}\n  credentials_file: {}\n",
            d.join("missing.creds").display()
        ),
        &[],
        false,
    )
    .await;
    assert!(stderr.contains("credentials_file"), "{stderr}");
}

/// A NATS JWT: `claims` (`nats`) about `subject`, issued and signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": "firebreak-test",
        "sub": subject,
        "nats": nats,
    });
    let body = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&sig))
}
