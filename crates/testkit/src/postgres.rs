//! Fresh Postgres databases per test, and throwaway Postgres clusters.
//!
//! `TestDatabase` creates a uniquely named database on the server `FIREBREAK_TEST_POSTGRES`
//! names (the machine's server by default) and drops it, and any sibling handed out with
//! `url_for`, when it drops. `PgCluster` runs a server of its own in a temporary directory,
//! for tests that stop and start Postgres.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// The server tests create their databases on unless `FIREBREAK_TEST_POSTGRES` names another.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test, dropped (with its siblings) when this drops.
pub struct TestDatabase {
    /// The URL of the fresh database.
    pub url: String,
    /// Its name.
    pub name: String,
    /// The URL of the server's maintenance database.
    server: String,
    /// Siblings handed out by `url_for`, dropped too.
    siblings: Mutex<Vec<String>>,
}

impl TestDatabase {
    /// Creates `fb_test_<uuid>` on the test server. Panics when the server cannot be reached:
    /// a test cannot go on without it.
    pub async fn create() -> TestDatabase {
        let server =
            std::env::var("FIREBREAK_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
        Self::create_on(&server).await
    }

    /// Creates a fresh database on the server whose maintenance database `server` names.
    pub async fn create_on(server: &str) -> TestDatabase {
        let name = format!("fb_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test postgres server {server}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let _ = conn.close().await;
        TestDatabase {
            url: with_database(server, &name),
            name,
            server: server.to_owned(),
            siblings: Mutex::new(Vec::new()),
        }
    }

    /// The URL of a sibling database, `<name>_<suffix>` (a suffix of up to 22 bytes), for a
    /// test that needs several (one per service). It is not created here (the stores create their database on connect),
    /// but it is dropped with this one.
    pub fn url_for(&self, suffix: &str) -> String {
        // Postgres cuts names at 63 bytes; 41 are taken.
        assert!(
            suffix.len() <= 22,
            "suffix {suffix:?} is longer than 22 bytes"
        );
        let name = format!("{}_{suffix}", self.name);
        let url = with_database(&self.server, &name);
        if let Ok(mut siblings) = self.siblings.lock()
            && !siblings.contains(&name)
        {
            siblings.push(name);
        }
        url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let mut names = vec![self.name.clone()];
        if let Ok(mut siblings) = self.siblings.lock() {
            names.append(&mut siblings);
        }
        let server = self.server.clone();
        // Drop cannot await, and may run inside a runtime: a thread of its own does the work.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let drop_all = async {
                let Ok(mut conn) = PgConnection::connect(&server).await else {
                    return;
                };
                for name in names {
                    // FORCE ends the connections pools of the test still hold.
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
                let _ = conn.close().await;
            };
            // Bounded, so a server that went away cannot hang the test; the timer must be made
            // inside the runtime.
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(30), drop_all).await;
            });
        });
        let _ = dropped.join();
    }
}

/// `url` with its path (the database) replaced by `name`, its query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A Postgres server of its own: a cluster in a temporary directory, listening on a free
/// port of 127.0.0.1, which a test may stop and start. Killed and removed when it drops.
///
/// As root (as on this machine's test runs) the cluster belongs to the `postgres` user,
/// since Postgres refuses to run as root; otherwise to the current user.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// (uid, gid) to run as, when running as root.
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
}

impl PgCluster {
    /// Creates a cluster (`initdb`) and starts its server. Panics when it cannot: the test
    /// cannot go on without it.
    pub async fn new() -> PgCluster {
        let bin = postgres_bin().expect("no initdb found under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("fb-pg-")
            .tempdir()
            .expect("creating the cluster's directory");
        let run_as = if is_root() {
            let ids = user_ids("postgres").expect("running as root needs a postgres user");
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("handing the cluster's directory to postgres");
            Some(ids)
        } else {
            None
        };
        let mut cluster = PgCluster {
            port: crate::ports::free_port(),
            dir,
            bin,
            run_as,
            server: None,
        };
        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--locale=C",
                "--encoding=UTF8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = tokio::task::spawn_blocking(move || initdb.output())
            .await
            .expect("initdb's thread")
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start().await;
        cluster
    }

    /// The URL of database `dbname` on this server.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The port it listens on; it keeps it across stops and starts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn start(&mut self) {
        if self.server.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("opening the server's log");
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(
                self.dir.path().join("postgres.log"),
                Some(uid),
                Some(gid),
            );
        }
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"])
            // A throwaway server: durability buys nothing here.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server's log"))
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.server = Some(server);
        let url = self.url("postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(conn) = PgConnection::connect(&url).await {
                let _ = conn.close().await;
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                self.server = None;
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (fast shutdown: connections are cut, nothing is waited for) and
    /// waits until it exited.
    pub async fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        signal(&server, "INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(server.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = server.kill();
        let _ = server.wait();
    }

    /// Whether the server is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: the server ends its backends and frees its shared memory,
            // which a SIGKILL would leave behind.
            signal(&server, "QUIT");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(server.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The directory of the newest Postgres' binaries installed.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn is_root() -> bool {
    Path::new("/proc/self")
        .metadata()
        .is_ok_and(|m| m.uid() == 0)
}

/// A user's (uid, gid), from `/etc/passwd`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_another_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    async fn databases(server: &str) -> Vec<String> {
        let mut conn = PgConnection::connect(server).await.unwrap();
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'fb_test_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_cluster_stops_and_starts_and_its_test_databases_are_dropped() {
        let mut cluster = PgCluster::new().await;
        let server = cluster.url("postgres");
        let db = TestDatabase::create_on(&server).await;
        let sibling = db.url_for("other");
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        drop(conn);
        // The sibling is created by whoever connects first; here, by hand.
        let mut admin = PgConnection::connect(&server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{}_other\"",
            db.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        drop(admin);
        assert_eq!(databases(&server).await.len(), 2);

        cluster.stop().await;
        assert!(!cluster.is_running());
        assert!(PgConnection::connect(&db.url).await.is_err());
        cluster.start().await;
        PgConnection::connect(&sibling).await.unwrap();

        drop(db);
        assert!(databases(&server).await.is_empty());
    }
}
