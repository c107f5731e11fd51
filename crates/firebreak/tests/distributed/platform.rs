//! The platform under hostile connections and a hostile start: stream and connection limits,
//! slow senders, file descriptors, liveness against readiness, waiting for Postgres and NATS,
//! reflection v1 and v1alpha per process, balanced peers, Kubernetes' environment.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_proto::v1;
use firebreak_testkit::postgres::PgCluster;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{BIN, Deployment, eventually, free_port};

/// `firebreak up` in a temporary directory, killed on drop.
struct Embedded {
    dir: tempfile::TempDir,
    child: Child,
    grpc: u16,
    http: u16,
}

impl Embedded {
    /// The admin token the first start wrote to the data directory.
    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Starts `firebreak up` with `config` (YAML) under `prlimit` arguments, if any, and
    /// waits until `/livez` answers.
    fn start(config: &str, prlimit: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let file = dir.path().join("firebreak.yaml");
        std::fs::write(&file, config).unwrap();
        let runbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/../../runbooks");
        let mut cmd = match prlimit {
            Some(limit) => {
                let mut c = Command::new("prlimit");
                c.arg(limit).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let child = cmd
            .arg("up")
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--runbooks", runbooks])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut e = Self {
            dir,
            child,
            grpc,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = e.child.try_wait().unwrap() {
                panic!("firebreak up exited with {status}:\n{}", e.log());
            }
            if http_get(http, "/livez").is_some_and(|(code, _)| code == 200) {
                return e;
            }
            assert!(Instant::now() < deadline, "no /livez:\n{}", e.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over a fresh connection: status and body, or `None` when there is no answer within
/// 10 s (a test that expects one fails on `None`).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// Whether the server closes a connection that stays silent from our side: reads until EOF
/// or an error, for at most `within`.
async fn closed_by_server(mut s: tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.is_ok()
}

#[tokio::test]
async fn grpc_advertises_and_holds_a_stream_limit() {
    let up = Embedded::start("connections:\n  max_concurrent_streams: 4\n", None);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", up.grpc))
        .await
        .unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    // A round trip: the server's SETTINGS came before its PONG.
    tokio::select! {
        r = ping.ping(h2::Ping::opaque()) => drop(r.unwrap()),
        _ = &mut connection => panic!("the connection ended"),
    }
    assert_eq!(connection.max_concurrent_send_streams(), 4);
    tokio::spawn(async move {
        let _ = connection.await;
    });

    let token = up.token();
    let call = || {
        axum::http::Request::post(format!(
            "http://127.0.0.1:{}/firebreak.v1.IncidentService/ListIncidents",
            up.grpc
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
    };
    // Four calls whose request bodies never end hold four streams open.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = send.clone().ready().await.unwrap();
        let (response, body) = s.send_request(call(), false).unwrap();
        open.push((response, body));
    }
    // A round trip: the four are open on both sides.
    ping.ping(h2::Ping::opaque()).await.unwrap();
    // A fifth is queued until a stream closes: its handle is not ready for another.
    let mut s = send.clone().ready().await.unwrap();
    let (fifth, _fifth_body) = s.send_request(call(), false).unwrap();
    ping.ping(h2::Ping::opaque()).await.unwrap();
    let mut next = std::pin::pin!(s.ready());
    assert!(
        next.as_mut().now_or_never().is_none(),
        "a fifth stream opened beside four open ones"
    );
    // One ends: the fifth opens.
    drop(open.pop());
    tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("the fifth stream never opened")
        .unwrap();
    drop(fifth);
}

#[tokio::test]
async fn slow_senders_are_closed_after_the_header_timeout() {
    let up = Embedded::start("connections:\n  header_timeout_seconds: 1\n", None);
    // HTTP: half a request head, then nothing.
    let mut http = tokio::net::TcpStream::connect(("127.0.0.1", up.http))
        .await
        .unwrap();
    http.write_all(b"GET /livez HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    // gRPC: half the HTTP/2 preface; and a full preface with half a HEADERS frame.
    let mut grpc = tokio::net::TcpStream::connect(("127.0.0.1", up.grpc))
        .await
        .unwrap();
    grpc.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut grpc_headers = tokio::net::TcpStream::connect(("127.0.0.1", up.grpc))
        .await
        .unwrap();
    grpc_headers
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // A HEADERS frame header announcing 100 bytes, of which 3 come.
    grpc_headers
        .write_all(b"\x00\x00\x64\x01\x04\x00\x00\x00\x01abc")
        .await
        .unwrap();
    let within = Duration::from_secs(20);
    assert!(
        closed_by_server(http, within).await,
        "a half-sent HTTP request head was held"
    );
    assert!(
        closed_by_server(grpc, within).await,
        "a half-sent HTTP/2 preface was held"
    );
    assert!(
        closed_by_server(grpc_headers, within).await,
        "a half-sent gRPC call was held"
    );
    // Served connections are not the slow ones.
    assert_eq!(http_get(up.http, "/livez").map(|r| r.0), Some(200));
}

#[tokio::test]
async fn an_idle_grpc_connection_is_closed_after_the_idle_timeout() {
    let up = Embedded::start("connections:\n  idle_timeout_seconds: 1\n", None);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", up.grpc))
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut connection = tokio::spawn(connection);
    // One call (a health check: an empty message), answered in full.
    let request = axum::http::Request::post(format!(
        "http://127.0.0.1:{}/grpc.health.v1.Health/Check",
        up.grpc
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let mut send = send.ready().await.unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let mut answer = response.await.unwrap().into_body();
    while let Some(chunk) = answer.data().await {
        chunk.unwrap();
    }
    answer.trailers().await.unwrap();
    // Then nothing: the server ends the connection (its keep-alive pings are answered, so
    // only the idle timeout can).
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut connection).await;
    assert!(ended.is_ok(), "an idle connection was kept open");
}

/// Reads "Max open files" (soft, hard) of a process.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_leave_health_working() {
    // 256 descriptors, as few as a small container might give; the soft limit starts lower.
    let up = Embedded::start("", Some("--nofile=200:256"));
    // prlimit execs firebreak: the same process.
    assert_eq!(
        open_files_limit(up.child.id()),
        ("256".to_owned(), "256".to_owned()),
        "the soft limit was not raised to the hard one"
    );
    // 300 idle connections on each port: more than the process has descriptors.
    let mut idle = Vec::new();
    for port in [up.grpc, up.http] {
        for _ in 0..300 {
            // A full backlog drops SYNs: stop there.
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(s)) => idle.push(s),
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
    }
    let http = up.http;
    let answer = tokio::task::spawn_blocking(move || http_get(http, "/healthz"))
        .await
        .unwrap();
    assert_eq!(
        answer.map(|(code, _)| code),
        Some(200),
        "/healthz did not answer beside idle connections:\n{}",
        up.log()
    );
    // gRPC too: a new connection gets in (an idle one makes room).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", up.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("no new gRPC connection beside idle ones");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("gRPC health did not answer beside idle connections")
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    drop(idle);
}

/// The services reflection lists on `port`, by protocol version (v1, else v1alpha), sorted;
/// and whether it describes the internal `firebreak.internal.v1.TriageIngestService`.
async fn reflected(port: u16, v1: bool) -> (Vec<String>, bool) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let internal = "firebreak.internal.v1.TriageIngestService".to_owned();
    let (mut names, internal_known) = if v1 {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, ServerReflectionResponse,
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(internal),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut answers = client
            .server_reflection_info(futures::stream::iter(requests))
            .await
            .expect("v1 reflection is not served")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        // An unknown symbol ends the stream with NOT_FOUND.
        let known = matches!(
            answers.message().await,
            Ok(Some(ServerReflectionResponse {
                message_response: Some(MessageResponse::FileDescriptorResponse(_)),
                ..
            }))
        );
        (
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
            known,
        )
    } else {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, ServerReflectionResponse,
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(internal),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut answers = client
            .server_reflection_info(futures::stream::iter(requests))
            .await
            .expect("v1alpha reflection is not served")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        // An unknown symbol ends the stream with NOT_FOUND.
        let known = matches!(
            answers.message().await,
            Ok(Some(ServerReflectionResponse {
                message_response: Some(MessageResponse::FileDescriptorResponse(_)),
                ..
            }))
        );
        (
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
            known,
        )
    };
    names.sort();
    (names, internal_known)
}

/// What a process serving `kinds` should list: their public services, health and both
/// reflection services; never an internal one.
fn expected_services(kinds: &[&str]) -> Vec<String> {
    let mut want: Vec<String> = firebreak_proto::PUBLIC_SERVICES
        .iter()
        .filter(|(kind, _)| kinds.contains(kind))
        .flat_map(|(_, names)| names.iter().map(|n| (*n).to_owned()))
        .chain(
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
            .map(str::to_owned),
        )
        .collect();
    want.sort();
    want
}

/// Reflection v1 and v1alpha (Python's grpc-requests speaks only v1alpha) list exactly the
/// services the process serves: all four services' embedded, one service's per `serve`
/// process; the internal services are neither listed nor described.
#[tokio::test]
async fn reflection_lists_exactly_the_services_each_process_serves() {
    let up = Embedded::start("", None);
    let all = ["intake", "triage", "orchestration", "notification"];
    for v1 in [true, false] {
        let (names, internal) = reflected(up.grpc, v1).await;
        assert_eq!(names, expected_services(&all), "embedded, v1: {v1}");
        assert!(
            !internal,
            "embedded describes an internal service (v1: {v1})"
        );
    }
    drop(up);

    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(runbooks.path(), "").await;
    for kind in all {
        // Reflection answers from the start, before the service's database is reached.
        let name = d.start_unready(kind, 1);
        let port: u16 = d.grpc(&name).rsplit(':').next().unwrap().parse().unwrap();
        for v1 in [true, false] {
            let (names, internal) = reflected(port, v1).await;
            assert_eq!(names, expected_services(&[kind]), "{kind}, v1: {v1}");
            assert!(!internal, "{kind} describes an internal service (v1: {v1})");
        }
    }
}

#[tokio::test]
async fn a_missing_certificate_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--runbooks",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../runbooks"),
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        // As in an image without ca-certificates: no certificate anywhere.
        .env("SSL_CERT_FILE", dir.path().join("none.pem"))
        .env("SSL_CERT_DIR", dir.path().join("none"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ca-certificates") && stderr.contains("http client"),
        "{stderr}"
    );
}

/// The `firebreak serve` readiness, liveness and gRPC health of a process.
async fn probes(d: &Deployment, name: &str) -> (Option<u16>, Option<(u16, String)>, String) {
    let port = d.procs[name].http;
    let (live, ready) = tokio::task::spawn_blocking(move || {
        (
            http_get(port, "/livez").map(|r| r.0),
            http_get(port, "/readyz"),
        )
    })
    .await
    .unwrap();
    (live, ready, d.health(name).await)
}

#[tokio::test]
async fn readiness_follows_nats_and_liveness_does_not() {
    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(runbooks.path(), "").await;
    d.start("triage", 1);
    // Kubernetes' service links for a Service named firebreak-intake, as in every pod.
    d.start_with_env(
        "intake",
        1,
        &[
            ("FIREBREAK_INTAKE_SERVICE_HOST", "10.96.0.12"),
            ("FIREBREAK_INTAKE_SERVICE_PORT", "7400"),
            ("FIREBREAK_INTAKE_SERVICE_PORT_GRPC", "7400"),
            ("FIREBREAK_INTAKE_PORT", "tcp://10.96.0.12:7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP", "tcp://10.96.0.12:7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_PROTO", "tcp"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_PORT", "7400"),
            ("FIREBREAK_INTAKE_PORT_7400_TCP_ADDR", "10.96.0.12"),
        ],
    );
    for name in ["triage-1", "intake-1"] {
        eventually(&format!("{name} ready"), 30, || async {
            let (_, ready, grpc) = probes(&d, name).await;
            (ready.is_some_and(|r| r.0 == 200) && grpc == "SERVING").then_some(())
        })
        .await;
    }

    d.nats.kill();
    eventually("triage unready without NATS", 30, || async {
        let (live, ready, grpc) = probes(&d, "triage-1").await;
        assert_eq!(live, Some(200), "liveness failed with NATS down");
        let ready = ready.unwrap();
        (ready.0 == 503 && ready.1.contains("nats") && grpc == "NOT_SERVING").then_some(())
    })
    .await;
    // Intake keeps accepting into its outbox, and says what it is missing.
    eventually("intake reporting NATS down", 30, || async {
        let (live, ready, _) = probes(&d, "intake-1").await;
        assert_eq!(live, Some(200));
        let (code, body) = ready.unwrap();
        assert_eq!(code, 200, "{body}");
        body.contains("nats: not connected (serving without it)")
            .then_some(())
    })
    .await;
    let mut intake = d.intake().await;
    intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(crate::harness::alert("disk full", "disk", "")),
            idempotency_key: String::new(),
        })
        .await
        .expect("intake refused an alert while NATS was down");

    d.nats.restart().await;
    eventually("triage ready again", 60, || async {
        let (_, ready, grpc) = probes(&d, "triage-1").await;
        (ready.is_some_and(|r| r.0 == 200) && grpc == "SERVING").then_some(())
    })
    .await;
}

#[tokio::test]
async fn serve_waits_for_postgres_and_nats() {
    let mut pg = PgCluster::new().await;
    let runbooks = tempfile::tempdir().unwrap();
    let server = pg.url("postgres");
    let server = server.rsplit_once('/').unwrap().0.to_owned();
    let mut d = Deployment::on(server, runbooks.path(), "").await;
    pg.stop().await;
    d.nats.kill();
    d.start_unready("triage", 1);
    eventually("triage live and waiting", 30, || async {
        let (live, ready, grpc) = probes(&d, "triage-1").await;
        let ready = ready?;
        (live == Some(200)
            && ready.0 == 503
            && ready.1.contains("database: waiting")
            && ready.1.contains("nats: waiting")
            && grpc == "NOT_SERVING")
            .then_some(())
    })
    .await;
    assert!(
        d.log("triage-1").contains("cannot connect yet; retrying"),
        "{}",
        d.log("triage-1")
    );

    pg.start().await;
    d.nats.restart().await;
    eventually("triage ready once both are up", 60, || async {
        let (_, ready, grpc) = probes(&d, "triage-1").await;
        (ready.is_some_and(|r| r.0 == 200) && grpc == "SERVING").then_some(())
    })
    .await;
    // And it works.
    let mut incidents = d.incidents().await;
    incidents
        .list_incidents(v1::ListIncidentsRequest::default())
        .await
        .unwrap();
}

/// A TCP proxy to `to` counting the bytes clients sent through it.
async fn counting_proxy(to: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (port, sent)
}

#[tokio::test]
async fn intake_spreads_raises_over_every_triage_address() {
    use std::sync::atomic::Ordering;
    let runbooks = tempfile::tempdir().unwrap();
    let mut d = Deployment::new(runbooks.path(), "").await;
    d.start("triage", 1);
    // Two addresses for triage (here two proxies to one process, to count what each carries).
    let (a, sent_a) = counting_proxy(d.triage_port()).await;
    let (b, sent_b) = counting_proxy(d.triage_port()).await;
    let config = std::fs::read_to_string(&d.config).unwrap();
    let config = config.replace(
        &format!("  triage: http://127.0.0.1:{}\n", d.triage_port()),
        &format!("  triage: [http://127.0.0.1:{a}, \"http://localhost:{b}\"]\n"),
    );
    std::fs::write(&d.config, config).unwrap();
    d.start("intake", 1);
    let mut intake = d.intake().await;
    let mut opened = 0;
    for i in 0..60 {
        let r = intake
            .raise_incident(v1::RaiseIncidentRequest {
                alert: Some(crate::harness::alert(
                    &format!("service {i} down"),
                    &format!("key-{i}"),
                    "",
                )),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if !r.incident_id.is_empty() {
            opened += 1;
        }
    }
    assert_eq!(opened, 60, "triage did not answer every raise");
    let (a, b) = (
        sent_a.load(Ordering::Relaxed),
        sent_b.load(Ordering::Relaxed),
    );
    // One call's request is a few hundred bytes; a share of 60 calls is well past 2 KB.
    assert!(a > 2_000 && b > 2_000, "bytes sent through a: {a}, b: {b}");
}
