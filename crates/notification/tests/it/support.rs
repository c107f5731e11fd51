//! Test support: channels read from YAML as configuration is, local HTTP servers that record
//! each request and answer as the provider would, and sample messages and contacts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use firebreak_domain::people::{ContactKind, ContactMethod};
use firebreak_notification::{Channel, EventKind, Message, sample_incident};

/// Installs the process-wide crypto provider reqwest's rustls needs, once.
pub(crate) fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client as notification builds one.
pub(crate) fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A channel from a `channels:` entry, given `secrets`, checked.
pub(crate) fn channel(yaml: &str, secrets: &[(&str, &str)]) -> Channel {
    let c = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let c = with_secrets(c, secrets).unwrap_or_else(|e| panic!("{e}"));
    c.check().unwrap_or_else(|e| panic!("{e}"));
    c
}

/// A channel from YAML, as configuration loading reads it (unknown kinds and fields fail here).
pub(crate) fn parse(yaml: &str) -> Result<Channel, String> {
    serde_yaml::from_str::<Channel>(yaml).map_err(|e| e.to_string())
}

pub(crate) fn with_secrets(c: Channel, secrets: &[(&str, &str)]) -> Result<Channel, String> {
    let map: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    c.with_secrets(&|name| map.get(name).cloned())
        .map_err(|e| e.to_string())
}

/// The error a channel's configuration is refused with: at reading, secrets or checks.
pub(crate) fn refusal(yaml: &str, secrets: &[(&str, &str)]) -> String {
    match parse(yaml).and_then(|c| with_secrets(c, secrets)) {
        Err(e) => e,
        Ok(c) => match c.check() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {yaml}"),
        },
    }
}

pub(crate) fn contact(kind: ContactKind, address: &str) -> ContactMethod {
    ContactMethod {
        name: format!("my-{kind}"),
        kind,
        address: address.to_owned(),
    }
}

/// An incident's change, with an acknowledge link.
pub(crate) fn message(event: EventKind) -> Message {
    let mut incident = sample_incident();
    incident.insert("id".into(), "01JINC0000000000000000000A".into());
    incident.insert(
        "title".into(),
        "payments: 502 from the card processor".into(),
    );
    let mut msg = Message::incident("event-1", event, "user:alice", incident);
    msg.ack_url = Some("https://firebreak.example.com/i/01JINC0000000000000000000A/ack".into());
    msg
}

/// A request a mock provider received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as a form, in order.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        form_urlencoded(&self.body)
    }
}

/// What a mock answers: status, headers and body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: vec![("content-type", "text/plain".into())],
            body: body.to_owned(),
        }
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A local HTTP server speaking a provider's API as `respond` says, recording every request.
pub(crate) struct Mock {
    pub(crate) addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Mock {
    pub(crate) async fn start(
        respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        init();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let respond: Responder = Arc::new(respond);
        let seen = requests.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                let respond = respond.clone();
                async move {
                    let r = Recorded {
                        method,
                        path: uri.path().to_owned(),
                        query: uri.query().map(str::to_owned),
                        headers,
                        body,
                    };
                    let reply = respond(&r);
                    seen.lock().unwrap().push(r);
                    let mut resp: Response = (reply.status, reply.body).into_response();
                    for (name, value) in reply.headers {
                        resp.headers_mut().insert(name, value.parse().unwrap());
                    }
                    resp
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            requests,
            _server: server,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received.
    pub(crate) fn one(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }
}

/// `application/x-www-form-urlencoded`, decoded.
pub(crate) fn form_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Standard base64, for checking basic authentication.
pub(crate) fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Asserts no secret value appears in `text`.
pub(crate) fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} in: {text}");
    }
}
