//! TLS (rustls, ring) for both servers and for the connections Firebreak opens: the server
//! certificate and key come from files and are read again when they change, client
//! certificates can be required (mTLS), and `https://` peers and CLI servers are reached with
//! the system roots or a given CA, never in plaintext.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::TlsConfig;
use crate::net::{ConnInfo, Limited};

/// How often a handshake may look at the certificate files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds a certificate that does not parse", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The server's certificate and key, read again when either file changes (a renewed
/// certificate, cert-manager rewriting a Secret) without a restart. A change that does not
/// load keeps the previous pair and says so in the log.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloading {
    fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
        let chain = certs(cert)?;
        let der = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read a private key from {}", key.display()))?;
        let signing = provider()
            .key_provider
            .load_private_key(der)
            .with_context(|| format!("{} is not a usable private key", key.display()))?;
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }

    fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let loaded = Loaded {
            key: Self::load(&cert, &key)?,
            modified: (modified(&cert), modified(&key)),
            checked: Instant::now(),
        };
        Ok(Self {
            cert,
            key,
            state: Mutex::new(loaded),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let now = (modified(&self.cert), modified(&self.key));
            if now != s.modified {
                s.modified = now;
                match Self::load(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        s.key = k;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the changed TLS certificate or key does not load; keeping the previous one");
                    }
                }
            }
        }
        s.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server's TLS: its acceptor, and how long a handshake may take.
#[derive(Clone)]
pub(crate) struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// The TLS of a server speaking `alpn` (`h2` for gRPC, `http/1.1` for HTTP), from
    /// `config`; `None` when no certificate is configured.
    pub(crate) fn from_config(
        config: &TlsConfig,
        alpn: &[u8],
        handshake_timeout: Duration,
    ) -> anyhow::Result<Option<Self>> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            if config.cert_file.is_some() || config.key_file.is_some() {
                anyhow::bail!("tls needs both cert_file and key_file");
            }
            if config.client_ca_file.is_some() {
                anyhow::bail!("tls.client_ca_file needs tls.cert_file and tls.key_file");
            }
            return Ok(None);
        };
        let resolver = Arc::new(Reloading::new(cert.clone(), key.clone())?);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &config.client_ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .with_context(|| format!("{} holds an unusable CA", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .context("client certificate verifier")?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(resolver);
        server.alpn_protocols = vec![alpn.to_vec()];
        Ok(Some(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            handshake_timeout,
        }))
    }

    /// Completes the handshake on an accepted connection, within the handshake timeout (a
    /// client that stalls it is dropped like a slow sender of headers).
    pub(crate) async fn accept(&self, conn: Limited) -> io::Result<Stream> {
        let remote = conn.info();
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(conn)).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
            Ok(Err(e)) => {
                tracing::debug!(remote = ?remote, error = %e, "TLS handshake failed");
                Err(e)
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no TLS handshake within the header timeout",
            )),
        }
    }
}

/// A served connection, in plaintext or TLS.
pub(crate) enum Stream {
    Plain(Limited),
    Tls(Box<tokio_rustls::server::TlsStream<Limited>>),
}

impl Stream {
    pub(crate) fn info(&self) -> ConnInfo {
        match self {
            Self::Plain(l) => l.info(),
            Self::Tls(t) => t.get_ref().0.info(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info()
    }
}

/// How Firebreak reaches an `https://` address: the CA to trust (else the system roots),
/// and a client certificate to present where the server requires one.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTls {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    /// The name to check the server's certificate against, when not the URL's host.
    pub(crate) server_name: Option<String>,
}

impl ClientTls {
    /// How the services of this configuration reach their peers.
    pub(crate) fn for_peers(config: &TlsConfig) -> Self {
        Self {
            ca_file: config.ca_file.clone(),
            cert_file: config.client_cert_file.clone(),
            key_file: config.client_key_file.clone(),
            server_name: None,
        }
    }
}

impl ClientTls {
    /// `endpoint` with TLS when its URL is `https://` (the certificate checked against
    /// `domain`, else the URL's host); plaintext `http://` is left alone.
    pub(crate) fn apply(
        &self,
        endpoint: tonic::transport::Endpoint,
        domain: Option<&str>,
    ) -> anyhow::Result<tonic::transport::Endpoint> {
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(d) = domain.or(self.server_name.as_deref()) {
            tls = tls.domain_name(d);
        }
        tls = match &self.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
                tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let cert =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint
            .tls_config(tls)
            .context("TLS configuration for the connection")
    }
}

/// Checks that HTTPS clients can be built: runbooks' `http` actions and notification's
/// channels verify servers against the system's CA certificates, and building a client fails
/// when there are none (an image without ca-certificates). Checked at start so the process
/// exits at once saying what to install, before it waits for its database.
pub(crate) fn check_system_roots() -> anyhow::Result<()> {
    let e = match reqwest::Client::builder().build() {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    // reqwest says only "builder error"; the cause is further down the chain.
    let mut msg = format!("http client: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    anyhow::bail!(
        "no CA certificates to verify HTTPS servers with ({msg}): install the ca-certificates package, or point SSL_CERT_FILE at a PEM bundle"
    )
}
