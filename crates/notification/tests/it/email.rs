//! Email against a real SMTP server (Python's aiosmtpd, started per test): what arrives —
//! envelope, headers, body, the acknowledge link — over plain SMTP to loopback, STARTTLS and
//! implicit TLS with authentication, and how refusals are classified.

use std::time::Duration;

use firebreak_domain::people::ContactKind;
use firebreak_notification::{DeliveryError, EventKind};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;

use crate::support::{channel, client, contact, message};

/// A running aiosmtpd (testkit's), with the TLS material it was started with; killed on
/// drop.
struct SmtpServer {
    port: u16,
    inner: firebreak_testkit::smtp::SmtpServer,
    _dir: Option<tempfile::TempDir>,
}

/// TLS material: a CA and a certificate it signed for `localhost` and 127.0.0.1.
struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl SmtpServer {
    async fn start(args: &[&str], tls: Option<Tls>) -> Self {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if let Some(tls) = &tls {
            all.extend(["--cert".into(), tls.path("server.pem")]);
            all.extend(["--key".into(), tls.path("server.key")]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let inner = firebreak_testkit::smtp::SmtpServer::start(&all).await;
        Self {
            port: inner.port,
            inner,
            _dir: tls.map(|t| t.dir),
        }
    }

    async fn next(&mut self) -> Value {
        self.inner.next().await
    }

    /// Whether another message arrived (waiting a moment).
    async fn more(&mut self) -> bool {
        self.inner.more(Duration::from_millis(300)).await
    }
}

#[tokio::test]
async fn a_person_gets_an_email_with_subject_body_and_ack_link_over_plain_smtp_to_loopback() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"], None).await;
    let ch = channel(
        &format!(
            "{{ name: mail, kind: email, host: 127.0.0.1, port: {}, tls: none, from: 'Firebreak <firebreak@example.com>' }}",
            smtp.port
        ),
        &[],
    );
    assert!(!ch.broadcasts(), "no `to`: people only");
    let to = contact(ContactKind::Email, "alice@example.com");
    let msg = message(EventKind::Opened);
    let receipt = ch
        .deliver(&client(), Some(&to), &msg, "delivery-0001")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert_eq!(got["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert_eq!(got["mail_from"], "firebreak@example.com");
    assert_eq!(got["from"], "Firebreak <firebreak@example.com>");
    assert_eq!(got["to"], "alice@example.com");
    assert_eq!(
        got["subject"],
        "[SEV2] Incident opened: payments: 502 from the card processor"
    );
    assert_eq!(got["content_type"], "text/plain");
    assert_eq!(got["auto_submitted"], "auto-generated");
    assert_eq!(got["message_id"], "<delivery-0001@example.com>");
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("<delivery-0001@example.com>")
    );
    let body = got["body"].as_str().unwrap();
    assert!(
        body.starts_with("Incident opened by user:alice.\n\nIncident: payments: 502 from the card processor\nID:       01JINC0000000000000000000A\nSeverity: SEV2\n"),
        "{body}"
    );
    assert!(
        body.contains(
            "Acknowledge: https://firebreak.example.com/i/01JINC0000000000000000000A/ack\n"
        ),
        "{body}"
    );
    assert_eq!(got["tls"], false);
    assert!(!smtp.more().await);

    // The resolution, as a reply in the same thread.
    let mut resolved = message(EventKind::Resolved);
    resolved.ack_url = None;
    resolved.previous_id = receipt.provider_id.clone();
    ch.deliver(&client(), Some(&to), &resolved, "delivery-0002")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert_eq!(
        got["subject"],
        "[SEV2] Incident resolved: payments: 502 from the card processor"
    );
    assert_eq!(got["in_reply_to"], "<delivery-0001@example.com>");
    assert_eq!(got["references"], "<delivery-0001@example.com>");
    assert!(!got["body"].as_str().unwrap().contains("Acknowledge:"));
}

#[tokio::test]
async fn a_broadcast_goes_to_every_configured_recipient_with_an_overridden_template() {
    let mut smtp = SmtpServer::start(&["--mode", "plain"], None).await;
    let ch = channel(
        &format!(
            r#"
name: oncall-mail
kind: email
host: localhost
port: {}
tls: none
from: firebreak@example.com
to: [sre@example.com, "Duty Manager <duty@example.com>"]
templates:
  subject: "{{{{ incident.title|default(incident_id) }}}} is {{{{ incident.state|default('news') }}}}"
  by_event:
    opened:
      text: "Look at {{{{ incident_id }}}} now: {{{{ ack_url }}}}"
"#,
            smtp.port
        ),
        &[],
    );
    assert!(ch.broadcasts());
    ch.deliver(&client(), None, &message(EventKind::Opened), "k1")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert_eq!(
        got["rcpt_tos"],
        serde_json::json!(["sre@example.com", "duty@example.com"])
    );
    assert_eq!(
        got["subject"],
        "payments: 502 from the card processor is open"
    );
    assert_eq!(
        got["body"].as_str().unwrap().trim_end(),
        "Look at 01JINC0000000000000000000A now: https://firebreak.example.com/i/01JINC0000000000000000000A/ack"
    );
    // Other events keep the built-in body.
    ch.deliver(&client(), None, &message(EventKind::Acknowledged), "k2")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert!(
        got["body"]
            .as_str()
            .unwrap()
            .starts_with("Incident acknowledged by user:alice.")
    );
}

#[tokio::test]
async fn starttls_with_authentication_and_a_private_ca() {
    let tls = Tls::new();
    let ca = tls.path("ca.pem");
    let mut smtp = SmtpServer::start(
        &[
            "--mode",
            "starttls",
            "--user",
            "firebreak",
            "--password",
            "smtp-pa55word",
        ],
        Some(tls),
    )
    .await;
    let port = smtp.port;
    let yaml = |password_secret: &str| {
        format!(
            "{{ name: mail, kind: email, host: localhost, port: {port}, tls: starttls, username: firebreak, password: {{secret: {password_secret}}}, from: firebreak@example.com, ca_file: '{ca}' }}"
        )
    };
    let ch = channel(
        &yaml("smtp-password"),
        &[("smtp-password", "smtp-pa55word")],
    );
    let to = contact(ContactKind::Email, "bob@example.com");
    ch.deliver(&client(), Some(&to), &message(EventKind::Opened), "k1")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert_eq!(got["tls"], true);
    assert_eq!(got["authenticated"], true);
    assert_eq!(got["login"], "firebreak");
    assert_eq!(got["rcpt_tos"], serde_json::json!(["bob@example.com"]));

    // A wrong password: the server's 535 is permanent, and the text holds no password.
    let wrong = channel(
        &yaml("smtp-password"),
        &[("smtp-password", "not-the-pa55word")],
    );
    let e = wrong
        .deliver(&client(), Some(&to), &message(EventKind::Opened), "k2")
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("535"), "{e}");
    let text = format!("{e} {e:?} {wrong:?}");
    crate::support::assert_no_secret(&text, &["not-the-pa55word"]);
}

#[tokio::test]
async fn implicit_tls_with_authentication() {
    let tls = Tls::new();
    let ca = tls.path("ca.pem");
    let mut smtp = SmtpServer::start(
        &[
            "--mode",
            "tls",
            "--user",
            "firebreak",
            "--password",
            "s3cret-smtps",
        ],
        Some(tls),
    )
    .await;
    let ch = channel(
        &format!(
            "{{ name: mail, kind: email, host: localhost, port: {}, tls: tls, username: firebreak, password: {{secret: smtps}}, from: firebreak@example.com, to: [ops@example.com], ca_file: '{ca}' }}",
            smtp.port
        ),
        &[("smtps", "s3cret-smtps")],
    );
    ch.deliver(&client(), None, &message(EventKind::Escalated), "k1")
        .await
        .unwrap();
    let got = smtp.next().await;
    assert_eq!(got["tls"], true);
    assert_eq!(got["authenticated"], true);
    assert_eq!(
        got["subject"],
        "[SEV2] Incident escalated: payments: 502 from the card processor"
    );
}

#[tokio::test]
async fn a_server_certificate_nobody_trusts_is_refused() {
    let tls = Tls::new();
    let smtp = SmtpServer::start(&["--mode", "starttls"], Some(tls)).await;
    // No ca_file: the private CA is not among the system's roots.
    let ch = channel(
        &format!(
            "{{ name: mail, kind: email, host: localhost, port: {}, from: firebreak@example.com, to: [ops@example.com] }}",
            smtp.port
        ),
        &[],
    );
    let e = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k1")
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Smtp { .. }), "{e:?}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test]
async fn starttls_is_required_never_a_plain_fallback() {
    // A server that offers no STARTTLS.
    let mut smtp = SmtpServer::start(&["--mode", "plain"], None).await;
    let ch = channel(
        &format!(
            "{{ name: mail, kind: email, host: 127.0.0.1, port: {}, tls: starttls, from: firebreak@example.com, to: [ops@example.com] }}",
            smtp.port
        ),
        &[],
    );
    let e = ch
        .deliver(&client(), None, &message(EventKind::Opened), "k1")
        .await
        .unwrap_err();
    assert!(matches!(e, DeliveryError::Smtp { .. }), "{e:?}");
    assert!(!smtp.more().await, "nothing was sent in the clear");
}

#[tokio::test]
async fn a_refused_recipient_is_permanent_a_busy_one_and_a_dead_server_are_not() {
    let smtp = SmtpServer::start(&["--mode", "plain"], None).await;
    let ch = channel(
        &format!(
            "{{ name: mail, kind: email, host: 127.0.0.1, port: {}, tls: none, from: firebreak@example.com }}",
            smtp.port
        ),
        &[],
    );
    let send = |address: &'static str| {
        let ch = ch.clone();
        async move {
            ch.deliver(
                &client(),
                Some(&contact(ContactKind::Email, address)),
                &message(EventKind::Opened),
                "k",
            )
            .await
            .unwrap_err()
        }
    };
    let rejected = send("reject@example.com").await;
    assert!(rejected.is_permanent(), "{rejected}");
    assert!(rejected.to_string().contains("550"), "{rejected}");
    let busy = send("busy@example.com").await;
    assert!(!busy.is_permanent(), "{busy}");
    assert!(busy.to_string().contains("451"), "{busy}");

    // Nobody listens any more.
    let port = smtp.port;
    drop(smtp);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dead = channel(
        &format!(
            "{{ name: mail, kind: email, host: 127.0.0.1, port: {port}, tls: none, from: firebreak@example.com, to: [ops@example.com] }}"
        ),
        &[],
    );
    let e = dead
        .deliver(&client(), None, &message(EventKind::Opened), "k")
        .await
        .unwrap_err();
    assert!(!e.is_permanent(), "{e}");

    // A contact method of another kind: this channel cannot reach it.
    let e = ch
        .deliver(
            &client(),
            Some(&contact(ContactKind::Sms, "+15551234567")),
            &message(EventKind::Opened),
            "k",
        )
        .await
        .unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(
        e.to_string(),
        "channel \"mail\" (email) cannot reach a sms contact method"
    );
}
