//! A recording HTTP server: the real local webhook target and outside API tests point at.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::HeaderMap;
use serde_json::Value;

/// One request the recording server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: String,
    pub body: Value,
    /// The body as text (a form body, which `body` holds as null).
    pub text: String,
    /// The `Authorization` header, if any.
    pub authorization: String,
    /// When it arrived (the wall clock, comparable with the times Firebreak records).
    pub at: SystemTime,
}

/// A local HTTP server that records every request and answers 200 (with Slack's `ok` and a
/// Twilio-like `sid`, or what [`Recorder::answering`] says): the webhook target and the
/// outside API of tests.
pub struct Recorder {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    /// Listens on a free local port; serves until the runtime ends.
    pub async fn start() -> Self {
        // Slack's `ok`, and a provider id as Twilio answers one (`sid`).
        Self::answering(|n, _| serde_json::json!({ "ok": true, "sid": format!("SM{n:032}") })).await
    }

    /// Like [`Recorder::start`], answering each request with the JSON `answer` makes of it
    /// and of how many came before it (a provider's answer shape: Slack's
    /// `{"ok":true,"channel":..,"ts":..}`).
    pub async fn answering(answer: fn(usize, &Received) -> Value) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let r = Received {
                        path: uri.path().to_owned(),
                        idempotency_key: headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        text: String::from_utf8_lossy(&body).into_owned(),
                        authorization: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        at: SystemTime::now(),
                    };
                    let mut received = sink.lock().unwrap();
                    let reply = answer(received.len(), &r).to_string();
                    received.push(r);
                    reply
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    /// The requests received on `path`, in order.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}
