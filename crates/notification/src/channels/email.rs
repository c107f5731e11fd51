//! Email over SMTP (lettre): STARTTLS (required, never opportunistic), implicit TLS, or
//! plain SMTP to a loopback server only; optional authentication; a `Message-ID` made from
//! the delivery's idempotency key, and replies threaded under an earlier message.

use std::path::PathBuf;
use std::time::Duration;

use firebreak_domain::people::{ContactKind, ContactMethod};
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::config::is_loopback;
use super::secrets::SecretRef;
use super::{Channel, ChannelError, DeliveryError, Message, Receipt};

pub(crate) type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte, SMTPS (port 465).
    Tls,
    /// No encryption: only to a loopback host (a local relay, tests).
    None,
}

/// An email channel's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailSpec {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub(crate) host: String,
    /// Default: 587 with starttls, 465 with tls, 25 with none.
    #[serde(default)]
    pub(crate) port: Option<u16>,
    #[serde(default)]
    pub(crate) tls: SmtpTls,
    /// Authenticates as this user, with `password`.
    #[serde(default)]
    pub(crate) username: Option<String>,
    /// `{secret: NAME}`.
    #[serde(default)]
    pub(crate) password: Option<SecretRef>,
    /// The sender: `firebreak@example.com` or `Firebreak <firebreak@example.com>`.
    pub(crate) from: String,
    /// Where broadcasts go; without any, the channel reaches people only.
    #[serde(default)]
    pub(crate) to: Vec<String>,
    /// PEM certificates to trust besides the system's roots (a private CA).
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    /// The name this client greets with (EHLO); default `localhost`.
    #[serde(default)]
    pub(crate) hello_name: Option<String>,
    /// Seconds a connection or a command may take.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    10
}

impl EmailSpec {
    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        let err = |field: &str, reason: String| ChannelError::new(channel, field, reason);
        let host = self.host.trim();
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(err("host", format!("{:?} is not a host name", self.host)));
        }
        if self.tls == SmtpTls::None && !is_loopback(host) {
            return Err(err(
                "tls",
                format!(
                    "none (plain SMTP) is allowed only to a loopback host, not {host:?}; use starttls or tls"
                ),
            ));
        }
        if self.port == Some(0) {
            return Err(err("port", "must be 1 to 65535".into()));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(_)) if u.is_empty() => {
                return Err(err("username", "is empty".into()));
            }
            (Some(_), None) => {
                return Err(err(
                    "password",
                    "is required with username ({secret: NAME})".into(),
                ));
            }
            (None, Some(_)) => return Err(err("username", "is required with password".into())),
            _ => {}
        }
        mailbox(&self.from).map_err(|e| err("from", e))?;
        for (i, to) in self.to.iter().enumerate() {
            mailbox(to).map_err(|e| err(&format!("to[{i}]"), e))?;
        }
        if let Some(path) = &self.ca_file {
            read_ca(path).map_err(|e| err("ca_file", e))?;
        }
        if let Some(name) = &self.hello_name
            && (name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()))
        {
            return Err(err("hello_name", format!("{name:?} is not a host name")));
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err(err("timeout_seconds", "must be 1 to 300".into()));
        }
        Ok(())
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }

    /// The SMTP transport, built once per channel.
    fn transport<'a>(&self, ch: &'a Channel) -> Result<&'a Transport, DeliveryError> {
        if let Some(t) = ch.cache.smtp.get() {
            return Ok(t);
        }
        let smtp_err = |detail: String| DeliveryError::Smtp {
            detail,
            permanent: true,
        };
        let tls = match self.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(self.host.clone());
                if let Some(path) = &self.ca_file {
                    params = params.add_root_certificate(read_ca(path).map_err(smtp_err)?);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| smtp_err(format!("tls setup: {e}")))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = Transport::builder_dangerous(self.host.clone())
            .port(self.port())
            .tls(tls)
            .timeout(Some(Duration::from_secs(self.timeout_seconds)));
        if let Some(name) = &self.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            let password = ch.secret("password", password)?;
            builder = builder.credentials(Credentials::new(user.clone(), password.to_owned()));
        }
        Ok(ch.cache.smtp.get_or_init(|| builder.build()))
    }

    pub(crate) async fn deliver(
        &self,
        ch: &Channel,
        to: Option<&ContactMethod>,
        msg: &Message,
        key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let recipients: Vec<Mailbox> = match to {
            None if self.to.is_empty() => {
                return Err(DeliveryError::NoRecipient {
                    channel: ch.name.clone(),
                    field: "to",
                });
            }
            None => self
                .to
                .iter()
                .map(|a| mailbox(a))
                .collect::<Result<_, _>>()
                .map_err(|reason| DeliveryError::Address {
                    channel: ch.name.clone(),
                    address: String::new(),
                    reason,
                })?,
            Some(c) if c.kind == ContactKind::Email => {
                vec![
                    mailbox(&c.address).map_err(|reason| DeliveryError::Address {
                        channel: ch.name.clone(),
                        address: c.address.clone(),
                        reason,
                    })?,
                ]
            }
            Some(c) => return Err(ch.unreachable(c)),
        };
        let rendered = ch.render(msg, to)?;
        let from = mailbox(&self.from).map_err(|reason| DeliveryError::Address {
            channel: ch.name.clone(),
            address: self.from.clone(),
            reason,
        })?;
        let message_id = message_id(key, from.email.domain());
        let mut builder = lettre::Message::builder()
            .from(from)
            .subject(rendered.subject)
            .message_id(Some(message_id.clone()))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        for r in recipients {
            builder = builder.to(r);
        }
        if let Some(previous) = msg.previous_id.as_deref().filter(|p| is_message_id(p)) {
            builder = builder
                .in_reply_to(previous.to_owned())
                .references(previous.to_owned());
        }
        let email = builder
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.text)
            .map_err(|e| DeliveryError::Smtp {
                detail: format!("building the message: {e}"),
                permanent: true,
            })?;
        let transport = self.transport(ch)?;
        match transport.send(email).await {
            Ok(_) => Ok(Receipt {
                provider_id: Some(message_id),
            }),
            Err(e) => Err(DeliveryError::Smtp {
                detail: e.to_string(),
                permanent: e.is_permanent(),
            }),
        }
    }
}

/// An address (`a@example.com` or `Name <a@example.com>`), or why it is not one.
fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse::<Mailbox>()
        .map_err(|e| format!("{text:?} is not an email address ({e})"))
}

/// The certificates of a CA file, or why they cannot be used.
fn read_ca(path: &std::path::Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// `<KEY@DOMAIN>`, the key kept to the characters a message id may hold.
fn message_id(key: &str, domain: &str) -> String {
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(128)
        .collect();
    let key = if key.is_empty() {
        "firebreak".into()
    } else {
        key
    };
    format!("<{key}@{domain}>")
}

/// Whether `id` looks like a `Message-ID` (`<left@right>`, printable, no spaces) and may go
/// into a header.
fn is_message_id(id: &str) -> bool {
    id.len() <= 256
        && id.starts_with('<')
        && id.ends_with('>')
        && id.contains('@')
        && id.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_come_from_the_key() {
        assert_eq!(message_id("d-1 2/3", "example.com"), "<d-123@example.com>");
        assert!(is_message_id("<d-1@example.com>"));
        assert!(!is_message_id("<d-1@example.com>\r\nBcc: x@y"));
        assert!(!is_message_id("C123:1.2"));
    }
}
