//! OpenTelemetry end to end: the real binary exports spans over OTLP/gRPC to a real receiver
//! (the collector's TraceService), and an incident's path — intake, triage, orchestration with
//! a span per runbook step, notification — is one trace with unbroken parent links, embedded,
//! distributed, and across a `kill -9` of orchestration (a resumed run links to its origin).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_proto::v1;
use firebreak_testkit::otlp::{OtlpReceiver, ReceivedSpan};

use crate::harness::{BIN, Deployment, Recorder, eventually, free_port};

/// The caller's trace: every span of the incident's path must be in it.
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// A runbook of two steps (a containment call, a note) and, with `nap`, a durable sleep
/// between them.
fn runbooks(nap: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let caps = if nap {
        "[http.post, incident.note, sleep]"
    } else {
        "[http.post, incident.note]"
    };
    std::fs::write(
        dir.path().join("contain.yaml"),
        format!(
            "name: contain\ndescription: contain, then note\nmatch:\n  categories: [service-outage]\nparameters:\n  target:\n    description: the containment API\n    default: http://contain.invalid\ncapabilities: {caps}\n"
        ),
    )
    .unwrap();
    let nap = if nap { "    sleep(3);\n" } else { "" };
    std::fs::write(
        dir.path().join("contain.rhai"),
        format!(
            "// Contain, then note.\nfn run(incident, params) {{\n    http::post(params.target + \"/contain\", #{{ incident: incident.id }});\n{nap}    incident::note(\"contained\");\n}}\n"
        ),
    )
    .unwrap();
    dir
}

/// Export quickly, so a test waits a fraction of a second for its spans.
const EXPORT_ENV: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "100")];

fn raise_request() -> tonic::Request<v1::RaiseIncidentRequest> {
    let mut raise = tonic::Request::new(v1::RaiseIncidentRequest {
        alert: Some(v1::AlertInput {
            title: "checkout service down".into(),
            category: "service-outage".into(),
            labels: [("service".to_owned(), "checkout".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    raise.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    raise
}

/// Waits until the receiver holds spans of `CALLER_TRACE` whose names include every one of
/// `names` (each a prefix) and whose parents have all arrived (or the deadline passes: the
/// caller's assertions then say what is missing), and returns that trace's spans.
async fn trace_with(receiver: &OtlpReceiver, names: &[&str]) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == CALLER_TRACE)
            .collect();
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !spans.iter().any(|s| s.name.starts_with(**n)))
            .collect();
        // A span is exported when it ends, its parent later: wait for the whole tree too (a
        // step ends before its run, and may leave in an earlier batch).
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let whole = spans
            .iter()
            .all(|s| s.parent_span_id == CALLER_SPAN || ids.contains(s.parent_span_id.as_str()));
        if missing.is_empty() && (whole || Instant::now() >= deadline) {
            return spans;
        }
        let all: BTreeSet<String> = receiver
            .spans()
            .iter()
            .map(|s| format!("{} {} ({})", s.trace_id, s.name, s.service))
            .collect();
        assert!(
            Instant::now() < deadline,
            "no spans named {missing:?} in the caller's trace; received:\n{all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every span's parent is in the trace (or is the caller's span), so the trace is one tree.
fn assert_one_tree(spans: &[ReceivedSpan]) {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in spans {
        assert!(
            s.parent_span_id == CALLER_SPAN || ids.contains(s.parent_span_id.as_str()),
            "{} ({}) has parent {:?}, which is not in the trace: {spans:#?}",
            s.name,
            s.service,
            s.parent_span_id
        );
    }
}

fn named<'a>(spans: &'a [ReceivedSpan], prefix: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.span_id == id).unwrap()
}

/// The path's shape: the raise is a server span of the caller's; the run is a child of an
/// orchestration consumer span; each step is a child of the run and names its `step.seq`;
/// the delivery is a span of notification's.
fn assert_the_path(spans: &[ReceivedSpan]) {
    assert_one_tree(spans);
    let raise = named(spans, "firebreak.v1.IntakeService/RaiseIncident");
    assert_eq!(raise.len(), 1, "{spans:#?}");
    assert_eq!(raise[0].parent_span_id, CALLER_SPAN);
    assert_eq!(raise[0].kind, 2, "a server span");
    assert_eq!(raise[0].attributes["rpc.system"], "grpc");
    // A decision whose write lost a race (intake's call and the alert's event both reach
    // triage) is marked and retried; one decision opened the incident.
    let decide: Vec<&ReceivedSpan> = named(spans, "triage opened")
        .into_iter()
        .filter(|s| {
            s.attributes
                .get("firebreak.applied")
                .is_none_or(|a| a != "false")
        })
        .collect();
    assert_eq!(
        decide.len(),
        1,
        "one decision opened the incident: {spans:#?}"
    );
    let incident = decide[0].attributes["incident.id"].clone();
    let runs = named(spans, "run contain");
    assert!(!runs.is_empty());
    for run in &runs {
        assert_eq!(run.attributes["incident.id"], incident);
        let parent = by_id(spans, &run.parent_span_id);
        assert_eq!(
            parent.kind, 5,
            "the run's parent consumes an event: {parent:?}"
        );
        assert_eq!(parent.attributes["messaging.system"], "nats");
    }
    let steps = named(spans, "step ");
    let seqs: BTreeSet<&str> = steps
        .iter()
        .map(|s| s.attributes["step.seq"].as_str())
        .collect();
    assert!(seqs.contains("1") && seqs.contains("2"), "{steps:#?}");
    for step in &steps {
        let parent = by_id(spans, &step.parent_span_id);
        assert!(
            parent.name.starts_with("run contain"),
            "{step:?} under {parent:?}"
        );
    }
    let deliveries = named(spans, "deliver ");
    assert!(!deliveries.is_empty());
    assert!(
        deliveries.iter().any(|d| d.attributes["channel"] == "ops"),
        "{deliveries:#?}"
    );
}

/// `firebreak up`, exporting to `receiver`, killed on drop.
struct Up {
    child: Child,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(runbooks: &std::path::Path, config: &str, receiver: &OtlpReceiver) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (free_port(), free_port());
        let file = dir.path().join("firebreak.yaml");
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let child = Command::new(BIN)
            .arg("up")
            .arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--runbooks")
            .arg(runbooks)
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .envs(EXPORT_ENV)
            .env("RUST_LOG", "info")
            .env("FIREBREAK_LOG_JSON", "true")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let token_file = dir.path().join("data/admin.token");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(token_file.exists() && std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok()) {
            assert!(Instant::now() < deadline, "firebreak up did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            grpc,
            _dir: dir,
        }
    }

    /// The log so far, one JSON object per line.
    fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self._dir.path().join("up.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    async fn channel(&self) -> firebreak_proto::access::AuthedChannel {
        let token = std::fs::read_to_string(self._dir.path().join("data/admin.token")).unwrap();
        let c = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        firebreak_proto::access::authed(c, Some(token.trim()))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incident_is_one_trace_in_embedded_mode() {
    let receiver = OtlpReceiver::start().await;
    let target = Recorder::start().await;
    let books = runbooks(false);
    let config = format!(
        "live: true\nchannels:\n  - name: ops\n    kind: webhook\n    url: {url}/hook\nrunbook_params:\n  contain:\n    target: {url}\n",
        url = target.url
    );
    let up = Up::start(books.path(), &config, &receiver);
    let channel = up.channel().await;
    v1::intake_service_client::IntakeServiceClient::new(channel)
        .raise_incident(raise_request())
        .await
        .unwrap();
    let spans = trace_with(
        &receiver,
        &[
            "firebreak.v1.IntakeService/RaiseIncident",
            "triage opened",
            "run contain",
            "step 2",
            "deliver ",
        ],
    )
    .await;
    assert_the_path(&spans);
    assert!(spans.iter().all(|s| s.service == "firebreak"), "{spans:#?}");

    // JSON logs: the banner is a JSON line, and the run's lines carry the incident's trace.
    let log = up.log();
    let banner = log
        .iter()
        .find(|l| l["message"] == "firebreak is up")
        .expect("a JSON banner");
    assert_eq!(banner["mode"], "embedded");
    assert_eq!(banner["service"], "firebreak");
    let run = named(&spans, "run contain")[0];
    let succeeded = log
        .iter()
        .find(|l| l["message"] == "run succeeded")
        .expect("the run's line");
    assert_eq!(succeeded["trace_id"], CALLER_TRACE);
    assert_eq!(succeeded["span_id"], run.span_id.as_str());
    assert_eq!(succeeded["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incident_is_one_trace_across_four_processes_and_a_kill_9_resume_links_to_its_origin() {
    let receiver = OtlpReceiver::start().await;
    let target = Recorder::start().await;
    let books = runbooks(true);
    let extra = format!(
        "live: true\nchannels:\n  - name: ops\n    kind: webhook\n    url: {url}/hook\nrunbook_params:\n  contain:\n    target: {url}\notel:\n  endpoint: {endpoint}\n  resource_attributes:\n    deployment.environment: test\n",
        url = target.url,
        endpoint = receiver.endpoint(),
    );
    let mut d = Deployment::new(books.path(), &extra).await;
    for service in ["intake", "triage", "orchestration", "notification"] {
        d.start_with_env(service, 1, &EXPORT_ENV);
    }
    d.intake()
        .await
        .raise_incident(raise_request())
        .await
        .unwrap();

    // The run contains, then sleeps: its first execution's spans are exported before
    // orchestration dies.
    let before = trace_with(
        &receiver,
        &[
            "firebreak.v1.IntakeService/RaiseIncident",
            "triage opened",
            "run contain",
            "step 2 sleep",
            "deliver ",
        ],
    )
    .await;
    let origin = named(&before, "run contain")[0].clone();
    d.kill9("orchestration-1");
    d.start_with_env("orchestration", 1, &EXPORT_ENV);

    // After the sleep, the new process resumes the run in the same trace, linked to the run's
    // origin (the context it was created in, read back from the database).
    let runs = d.runs().await;
    eventually("the run to succeed", 60, || {
        let mut runs = runs.clone();
        async move {
            let list = runs
                .list_runs(v1::ListRunsRequest::default())
                .await
                .ok()?
                .into_inner();
            list.runs
                .into_iter()
                .find(|r| r.state() == v1::RunState::Succeeded)
                .map(drop)
        }
    })
    .await;
    let spans = trace_with(&receiver, &["step 3 incident.note"]).await;
    assert_the_path(&spans);
    let resumed: Vec<&ReceivedSpan> = named(&spans, "run contain")
        .into_iter()
        .filter(|s| s.attributes.contains_key("firebreak.resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "{spans:#?}");
    let resumed = resumed[0];
    assert_eq!(resumed.attributes["firebreak.resumed"], "sleep");
    assert_eq!(
        resumed.parent_span_id, origin.parent_span_id,
        "under the same origin"
    );
    assert_eq!(
        resumed.links,
        vec![(CALLER_TRACE.to_owned(), origin.parent_span_id.clone())],
        "linked to the context the run was created in"
    );
    assert_ne!(resumed.span_id, origin.span_id);
    // Each service exported its own spans, under its own name and the configured attribute.
    let services: BTreeMap<&str, usize> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.service.as_str()).or_default() += 1;
        m
    });
    for service in [
        "firebreak-intake",
        "firebreak-triage",
        "firebreak-orchestration",
        "firebreak-notification",
    ] {
        assert!(services.contains_key(service), "{services:?}");
    }
    let step3 = named(&spans, "step 3")[0];
    assert_eq!(step3.service, "firebreak-orchestration");
    assert_eq!(
        by_id(&spans, &step3.parent_span_id).span_id,
        resumed.span_id
    );
}
