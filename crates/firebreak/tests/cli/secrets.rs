//! No token secret is kept anywhere: after tokens are made, used (well and badly), listed
//! and revoked, neither the data directory's files (databases and their write-ahead logs)
//! nor the debug log hold a secret's text; and `firebreak login` keeps a token for its server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_testkit::ports::free_port;

use super::{BIN, Server, repo, run_in_dir};

/// Every file under `dir`, as bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn no_token_secret_reaches_a_file_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("up.log");
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["up", "--data-dir", data.to_str().unwrap()])
        .args(["--runbooks", repo("runbooks").to_str().unwrap()])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        grpc: format!("http://127.0.0.1:{grpc}"),
        cwd: tempfile::tempdir().unwrap(),
        data: data.clone(),
        http,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "firebreak up did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let admin = server.token();
    server.cli(&["user", "create", "erin"]);
    let erin = server
        .cli(&[
            "token",
            "create",
            "--subject",
            "erin",
            "--role",
            "responder",
        ])
        .trim()
        .to_owned();
    // Used well, used where it may not, used revoked; a made-up token too.
    let id = server
        .cli(&["--token", &erin, "raise", "--title", "disk full"])
        .trim()
        .to_owned();
    let as_erin = |args: &[&str]| {
        let mut all = vec!["--server", server.grpc.as_str(), "--token", erin.as_str()];
        all.extend_from_slice(args);
        run_in_dir(server.cwd.path(), &all, None)
    };
    let (code, _, _) = as_erin(&["incident", "close", &id, "--root-cause", "x"]);
    assert_eq!(code, 7, "a responder may not close");
    server.cli(&["token", "list"]);
    server.cli(&["token", "revoke", &erin[..15]]);
    std::thread::sleep(Duration::from_millis(1500));
    let (code, _, _) = as_erin(&["incident", "list"]);
    assert_eq!(code, 7, "revoked");
    let madeup = format!("fb_0123456789ab_{}", "9".repeat(64));
    let (code, _, _) = run_in_dir(
        server.cwd.path(),
        &[
            "--server",
            &server.grpc,
            "--token",
            &madeup,
            "incident",
            "list",
        ],
        None,
    );
    assert_eq!(code, 7);
    drop(server);

    // The secrets: everything after the id.
    let secrets: Vec<String> = [&admin, &erin, &madeup]
        .iter()
        .map(|t| t[16..].to_owned())
        .collect();
    let log = std::fs::read(&log_path).unwrap();
    assert!(!log.is_empty(), "the debug log was written");
    for s in &secrets {
        assert!(!holds(&log, s), "a token secret in the log");
    }
    let kept = files(&data);
    assert!(kept.iter().any(|(p, _)| p.ends_with("notification.db")));
    for (path, bytes) in &kept {
        if path.ends_with("admin.token") {
            continue;
        }
        for s in &secrets {
            assert!(!holds(bytes, s), "a token secret in {path}");
        }
    }
}

#[test]
fn login_keeps_a_token_for_its_server_and_the_cli_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let server = Server::start(&dir.path().join("data"), &repo("runbooks"), &config);
    let creds = dir.path().join("credentials");
    let token = server.token();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .current_dir(server.cwd.path())
            .env("FIREBREAK_CREDENTIALS", &creds)
            .env_remove("FIREBREAK_TOKEN")
            .args(["--server", &server.grpc])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Before: no token anywhere (the data directory is elsewhere).
    assert_eq!(run(&["incident", "list"]).0, 7);
    let bad = format!("fb_0123456789ab_{}", "9".repeat(64));
    let (code, _, err) = run(&["login", "--with-token", &bad]);
    assert_eq!(code, 7, "a token the server refuses is not kept: {err}");
    assert!(!creds.exists());
    let (code, out, err) = run(&["login", "--with-token", &token]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("user:admin"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (code, out, err) = run(&["whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("user:admin"), "{out}");
}
