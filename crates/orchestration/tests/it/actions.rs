//! Live actions against local servers: the run's deadline holds during a call that blocks,
//! a huge response is read no further than the cap, secrets go only to their hosts, and a
//! notification to an unknown channel fails its step.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use firebreak_orchestration::Options;
use firebreak_storage::OrchestrationStore;
use firebreak_storage::sqlite::SqliteOrchestrationStore;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::{RecordingBus, Running, catalog, pending_run, runbook, started, wait_for_run};

/// A store in a temporary directory, with one live pending run of `runbook`.
async fn store_with_run(data: &tempfile::TempDir, runbook: &str) -> Arc<dyn OrchestrationStore> {
    let store: Arc<dyn OrchestrationStore> = Arc::new(
        SqliteOrchestrationStore::open(&data.path().join("orchestration.db"), false)
            .await
            .unwrap(),
    );
    store
        .create_run(&pending_run("r1", runbook, true), &started("r1"))
        .await
        .unwrap();
    store
}

/// Executes the run `r1` of the runbook in `dir` to its end; returns it with the bus.
async fn run_to_end(dir: &tempfile::TempDir, runbook: &str, options: Options) -> Ended {
    let data = tempfile::tempdir().unwrap();
    let store = store_with_run(&data, runbook).await;
    let bus = Arc::new(RecordingBus::default());
    let orch = Running::start(
        store.clone(),
        bus.clone(),
        catalog(dir.path()),
        Options {
            live: true,
            ..options
        },
    );
    let run = wait_for_run(&*store, "r1", "the run to end", |r| r.is_finished()).await;
    orch.stop().await;
    Ended {
        run,
        store,
        bus,
        _data: data,
    }
}

/// A run that ended, with its store and what was published.
struct Ended {
    run: firebreak_storage::RunRecord,
    store: Arc<dyn OrchestrationStore>,
    bus: Arc<RecordingBus>,
    _data: tempfile::TempDir,
}

/// A target that accepts connections and never answers, counting them.
async fn silent_target() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

/// A run of 2 s whose request waits up to a minute for a target that never answers ends
/// at its deadline, not when the request would have given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_holds_during_a_call_that_blocks() {
    let (url, accepted) = silent_target().await;
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "waits",
        &format!(
            "match: {{}}\ntimeout_seconds: 2\ncapabilities: [http]\nparameters:\n  url: {{ default: \"{url}\" }}\n"
        ),
        "fn run(incident, params) {\n    http::request(#{ method: \"GET\", url: params.url, timeout_ms: 60000 });\n}\n",
    );
    let Ended {
        run, store, bus, ..
    } = run_to_end(&dir, "waits", Options::default()).await;
    assert_eq!(run.state.as_str(), "failed");
    assert!(run.error.contains("deadline exceeded"), "{}", run.error);
    // The request went out, and the target never answered it.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let journal = store.journal("r1").await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].status.as_str(), "failed");
    assert_eq!(bus.finishes("r1"), 1);
}

/// This process's resident set, and its peak, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A target answering 1 GB, generated as it is sent; counts the bytes it got out.
async fn huge_target() -> (String, Arc<AtomicU64>) {
    const SIZE: u64 = 1 << 30;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {SIZE}\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = SIZE;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                    count.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (url, sent)
}

/// A 1 GB response costs the 64 KiB kept, not its size: the process stays under 100 MB
/// resident and the step completes with the body cut and marked so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_is_read_no_further_than_the_cap() {
    let (url, sent) = huge_target().await;
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "downloads",
        &format!(
            "match: {{}}\ncapabilities: [http]\nparameters:\n  url: {{ default: \"{url}\" }}\n"
        ),
        "fn run(incident, params) {\n    let r = http::request(#{ method: \"GET\", url: params.url, timeout_ms: 60000 });\n    print(`truncated: ${r.truncated}`);\n}\n",
    );
    let Ended { run, store, .. } = run_to_end(&dir, "downloads", Options::default()).await;
    let (rss, peak) = rss_kib();
    assert!(
        peak < 100 * 1024,
        "peak resident set {peak} KiB (now {rss} KiB)"
    );
    assert_eq!(run.state.as_str(), "succeeded", "{}", run.error);
    assert_eq!(store.log("r1").await.unwrap(), ["truncated: true"]);
    let journal = store.journal("r1").await.unwrap();
    let result = &journal[0].result;
    assert_eq!(result["status"], 200);
    assert_eq!(result["truncated"], Value::Bool(true));
    assert_eq!(result["body"].as_str().unwrap().len(), 64 * 1024);
    assert!(
        peak < 100 * 1024,
        "peak resident set {peak} KiB (now {rss} KiB)"
    );
    // The target was stopped long before it got its gigabyte out.
    assert!(
        sent.load(Ordering::SeqCst) < 256 << 20,
        "{} bytes sent",
        sent.load(Ordering::SeqCst)
    );
}

const TOKEN: &str = "tok-v4lu3-never-elsewhere";

/// Options reading the secret `tok` from a directory.
fn with_secret(dir: &tempfile::TempDir) -> Options {
    std::fs::write(dir.path().join("tok"), TOKEN).unwrap();
    Options {
        secrets: firebreak_orchestration::SecretSource {
            dir: Some(dir.path().to_path_buf()),
        },
        ..Options::default()
    }
}

/// A secret goes only to a host its declaration lists: sent anywhere else (in the URL, or
/// in a header of a request to another host) the step is refused before any connection is
/// made; to a listed host it goes out with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_sent_only_to_its_hosts() {
    let (url, accepted) = silent_target().await;
    let secrets = tempfile::tempdir().unwrap();
    for (name, secrets_field, request) in [
        (
            "in-url",
            "[{ name: tok, hosts: [api.example.com] }]",
            "http::get(params.url + \"/?t=\" + secret(\"tok\"))",
        ),
        (
            "in-header",
            "[{ name: tok, hosts: [api.example.com] }]",
            "http::request(#{ method: \"GET\", url: params.url, headers: #{ Authorization: \"Bearer \" + secret(\"tok\") } })",
        ),
        (
            "in-body",
            "[{ name: tok, hosts: [\"127.0.0.1:1\"] }]",
            "http::post(params.url, #{ token: secret(\"tok\") })",
        ),
        // The plain form names no hosts: the secret goes nowhere.
        (
            "no-hosts",
            "[tok]",
            "http::get(params.url + \"/\" + secret(\"tok\"))",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        runbook(
            dir.path(),
            name,
            &format!(
                "match: {{}}\ncapabilities: [http]\nsecrets: {secrets_field}\nparameters:\n  url: {{ default: \"{url}\" }}\n"
            ),
            &format!("fn run(incident, params) {{\n    {request};\n}}\n"),
        );
        let Ended { run, store, .. } = run_to_end(&dir, name, with_secret(&secrets)).await;
        assert_eq!(run.state.as_str(), "failed", "{name}");
        assert!(
            run.error.contains("capability denied"),
            "{name}: {}",
            run.error
        );
        assert!(!run.error.contains(TOKEN), "{name}: {}", run.error);
        let journal = store.journal("r1").await.unwrap();
        assert_eq!(journal[0].status.as_str(), "failed", "{name}");
        assert_eq!(journal[0].attempts, 0, "{name}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a request went out");

    // To a listed host, the value goes out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 8192];
        let n = socket.read(&mut request).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        String::from_utf8_lossy(&request[..n]).into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "allowed",
        &format!(
            "match: {{}}\ncapabilities: [http]\nsecrets: [{{ name: tok, hosts: [\"127.0.0.1:{}\"] }}]\nparameters:\n  url: {{ default: \"http://{addr}\" }}\n",
            addr.port()
        ),
        "fn run(incident, params) {\n    http::request(#{ method: \"GET\", url: params.url, headers: #{ Authorization: \"Bearer \" + secret(\"tok\") } });\n}\n",
    );
    let Ended { run, .. } = run_to_end(&dir, "allowed", with_secret(&secrets)).await;
    assert_eq!(run.state.as_str(), "succeeded", "{}", run.error);
    let request = got.await.unwrap();
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {TOKEN}")),
        "{request}"
    );
}

/// A notification to a target the configuration does not have fails its step (and, not
/// caught, the run) instead of passing for sent; configured targets and `log` go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_to_an_unknown_channel_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "notifies",
        "match: {}\ncapabilities: [notify]\n",
        "fn run(incident, params) {\n    notify::send(\"log\", \"one\");\n    notify::send(\"ops\", \"two\");\n    notify::send(\"nowhere\", \"three\");\n}\n",
    );
    let options = Options {
        notify_targets: ["log".to_owned(), "ops".to_owned()].into(),
        ..Options::default()
    };
    let Ended {
        run, store, bus, ..
    } = run_to_end(&dir, "notifies", options).await;
    assert_eq!(run.state.as_str(), "failed");
    assert!(
        run.error
            .contains("unknown notification channel \"nowhere\""),
        "{}",
        run.error
    );
    assert_eq!(
        bus.notifications(),
        [("log".into(), "one".into()), ("ops".into(), "two".into())]
    );
    let journal = store.journal("r1").await.unwrap();
    let statuses: Vec<_> = journal.iter().map(|j| j.status.as_str()).collect();
    assert_eq!(statuses, ["done", "done", "failed"]);
    // The typed error is journaled as its text alone, the shape replays read back.
    let text = journal[2].result["error"].as_str().unwrap();
    assert!(
        text.starts_with("unknown notification channel \"nowhere\""),
        "{text}"
    );
    assert_eq!(journal[2].result.as_object().unwrap().len(), 1);
}

/// A secret's hosts are checked when the runbook loads: one that is not a host name or
/// address is an error naming the secret.
#[test]
fn a_secret_host_that_is_no_host_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    runbook(
        dir.path(),
        "bad",
        "match: {}\ncapabilities: [http]\nsecrets: [{ name: tok, hosts: [\"evil.example/x\"] }]\n",
        "fn run(incident, params) {}\n",
    );
    let errors = firebreak_runbook::Catalog::load(dir.path(), &Default::default()).unwrap_err();
    let text = format!("{errors:?}");
    assert!(
        text.contains("secret \\\"tok\\\": host \\\"evil.example/x\\\""),
        "{text}"
    );
}
