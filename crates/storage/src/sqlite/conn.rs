//! SQLite connections on threads of their own: a call hands its thread a closure that runs a
//! whole transaction, so a transaction costs one hand-over between threads.
//!
//! sqlx's SQLite driver, which this adapter used before, hands every statement to its
//! connection's thread and back; under load those hand-overs, not SQLite, took most of the
//! CPU. A store on [`Db`] writes through one connection, serialised by a lock that a
//! transaction spanning calls holds from begin to end, and reads through another, which sees
//! only committed data.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use firebreak_domain::Clock;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use super::Migration;
use crate::{Error, Result};

/// A call, and whether it may leave a transaction open (for the next call of a
/// [`Tx`]).
type Work = (Box<dyn FnOnce(&mut Connection) + Send>, bool);

/// One connection on its own thread. Cheap to clone; the thread ends with the last clone.
#[derive(Clone)]
pub(crate) struct Conn {
    work: mpsc::Sender<Work>,
    name: Arc<str>,
}

/// WAL pages after which a checkpoint is due (SQLite's own default for auto-checkpoints).
const CHECKPOINT_PAGES: i32 = 1000;

/// WAL pages after which the writer checkpoints itself, between transactions.
const MAX_WAL_PAGES: i32 = 4 * CHECKPOINT_PAGES;

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// The writing connection's WAL hook (in place of auto-checkpoints): notes the WAL's size.
fn note_wal(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Where a writing connection's checkpoints run: on another connection's thread, so that
/// copying the WAL back into the database does not delay commits (it took the tail of the
/// commit latency), with at most one checkpoint queued.
///
/// The WAL starts over only when a checkpoint copied all of it before the writer's next
/// transaction began. A writer that keeps a transaction open most of the time (triage's
/// batches under load) leaves the other thread no such moment, and its WAL would grow
/// without end; past [`MAX_WAL_PAGES`] the writer checkpoints itself between transactions,
/// as SQLite's auto-checkpoints did.
struct Checkpoints {
    on: Conn,
    queued: Arc<AtomicBool>,
}

impl Checkpoints {
    /// After a call on the writing connection `conn`: queues a checkpoint when the last
    /// commit left the WAL past [`CHECKPOINT_PAGES`], or checkpoints right here past
    /// [`MAX_WAL_PAGES`].
    fn after_call(&self, conn: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        if pages >= MAX_WAL_PAGES && conn.is_autocommit() {
            WAL_PAGES.with(|p| p.set(0));
            checkpoint(conn);
            return;
        }
        if pages < CHECKPOINT_PAGES || self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let queued = self.queued.clone();
        let job: Box<dyn FnOnce(&mut Connection) + Send> = Box::new(move |c| {
            checkpoint(c);
            queued.store(false, Ordering::Release);
        });
        if self.on.work.send((job, false)).is_err() {
            self.queued.store(false, Ordering::Release);
        }
    }
}

/// A passive checkpoint: copies what no reader still needs, never waits for anyone.
fn checkpoint(c: &Connection) {
    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "SQLite checkpoint failed");
    }
}

impl Conn {
    fn spawn(conn: Connection, name: String) -> Result<Self> {
        Self::spawn_with(conn, name, None)
    }

    fn spawn_with(
        mut conn: Connection,
        name: String,
        checkpoints: Option<Checkpoints>,
    ) -> Result<Self> {
        let (work, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || {
                while let Ok((job, keep_open)) = queue.recv() {
                    // A panicking call loses its answer (the caller hears `Stopped`), not the
                    // connection.
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                    if !keep_open && !conn.is_autocommit() {
                        // A call must not leave a transaction open for the next one.
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    if let Some(c) = &checkpoints {
                        c.after_call(&conn);
                    }
                }
            })
            .map_err(|e| Error::Stopped(format!("{name}: {e}")))?;
        Ok(Self {
            work,
            name: name.into(),
        })
    }

    /// Runs `f` on the connection's thread.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.run(f, false).await
    }

    async fn run<R, F>(&self, f: F, keep_open: bool) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(move |c: &mut Connection| {
            let _ = reply.send(f(c));
        });
        self.work
            .send((job, keep_open))
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> Error {
        Error::Stopped(self.name.to_string())
    }
}

/// A database file: one writing connection, one reading.
#[derive(Clone)]
pub(crate) struct Db {
    read: Conn,
    write: Conn,
    /// Held by whoever writes; a transaction spanning calls holds it throughout.
    lock: Arc<Mutex<()>>,
    /// What the store stamps rows with (`created_at`, `processed_at`, `applied_at`…): the
    /// clock the services read, so a test that moves it moves these too.
    clock: Arc<dyn Clock>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `migrations`.
    ///
    /// WAL with `synchronous = NORMAL`: a committed transaction survives a crash of the
    /// process (the guarantee Firebreak makes); `synchronous = FULL` (`durable_fsync`) also
    /// survives a power loss at the cost of an fsync per commit. SQLite has one writer at a
    /// time: writers queue for the lock in order instead of meeting `SQLITE_BUSY` and
    /// sleeping in its busy handler, which made write latency's tail long.
    pub(crate) async fn open(
        path: &Path,
        migrations: &'static [Migration],
        durable_fsync: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut write = connect(path, durable_fsync)?;
        migrate(&mut write, &name, migrations, clock.as_ref())?;
        // The hook replaces SQLite's auto-checkpoints, which ran in the committing call.
        write.wal_hook(Some(note_wal));
        let read = Conn::spawn(connect(path, durable_fsync)?, format!("{name}-r"))?;
        let checkpoints = Checkpoints {
            on: read.clone(),
            queued: Arc::default(),
        };
        Ok(Self {
            write: Conn::spawn_with(write, name, Some(checkpoints))?,
            read,
            lock: Arc::default(),
            clock,
        })
    }

    /// The clock rows are stamped with, for a call to read inside its closure.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Runs `f` on the reading connection: it sees what was committed when it started.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.read.call(f).await
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`), committed when it returns `Ok`
    /// and rolled back when it fails.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let _held = self.lock.lock().await;
        self.write.call(|c| transaction(c, f)).await
    }

    /// Starts a write transaction spanning several calls: nothing else writes until it
    /// ends. `BEGIN IMMEDIATE` goes with its first call.
    pub(crate) async fn begin(&self) -> Tx {
        Tx {
            conn: self.write.clone(),
            _held: self.lock.clone().lock_owned().await,
            ended: false,
            clock: self.clock.clone(),
        }
    }
}

/// A write transaction spanning calls; rolled back unless committed. Each call is one
/// hand-over to the writing connection's thread, however many statements it runs.
pub(crate) struct Tx {
    conn: Conn,
    _held: OwnedMutexGuard<()>,
    ended: bool,
    clock: Arc<dyn Clock>,
}

impl Tx {
    /// The time by the store's clock. The transaction holds the write lock, so a stamp read
    /// here is taken inside it, as one read in a closure would be.
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    /// Runs `f` inside the transaction.
    pub(crate) async fn call<R, F>(&mut self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.conn
            .run(
                |c| {
                    if c.is_autocommit() {
                        run(c, "BEGIN IMMEDIATE")?;
                    }
                    // A call that fails changes nothing, as one statement would not.
                    run(c, "SAVEPOINT call")?;
                    let out = f(c);
                    if out.is_err() {
                        run(c, "ROLLBACK TO call")?;
                    }
                    run(c, "RELEASE call")?;
                    out
                },
                true,
            )
            .await
    }

    /// Runs `f` (the writes a transaction kept for last) and commits, in one call; when `f`
    /// fails, nothing of the transaction is kept.
    pub(crate) async fn commit_with<R, F>(mut self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.ended = true;
        self.conn
            .call(|c| {
                if c.is_autocommit() {
                    run(c, "BEGIN IMMEDIATE")?;
                }
                // On failure the thread rolls back what this call leaves open.
                let r = f(c)?;
                run(c, "COMMIT")?;
                Ok(r)
            })
            .await
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.ended {
            // Queued before the lock is released, so it runs before the next writer's calls;
            // the thread rolls back what a call without `keep_open` leaves open.
            let _ = self.conn.work.send((Box::new(|_| {}), false));
        }
    }
}

/// Runs one statement without parameters through the statement cache (`execute_batch`
/// would compile it again on every call).
fn run(c: &Connection, sql: &str) -> Result<()> {
    c.prepare_cached(sql)?.raw_execute()?;
    Ok(())
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction on `c`.
pub(crate) fn transaction<R>(
    c: &mut Connection,
    f: impl FnOnce(&Connection) -> Result<R>,
) -> Result<R> {
    run(c, "BEGIN IMMEDIATE")?;
    match f(c) {
        Ok(out) => {
            run(c, "COMMIT")?;
            Ok(out)
        }
        Err(e) => {
            let _ = run(c, "ROLLBACK");
            Err(e)
        }
    }
}

fn connect(path: &Path, durable_fsync: bool) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(
        None,
        "synchronous",
        if durable_fsync { "FULL" } else { "NORMAL" },
    )?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // The connection keeps more pages than SQLite's default 2 MiB, so the hot tables'
    // indexes stay in memory as they grow. (A memory map was tried: it tripled the resident
    // set for no measurable gain.)
    c.pragma_update(None, "cache_size", -8 * 1024)?;
    // A WAL that grew in a storm is cut back to this when it starts over.
    c.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

/// Applies the migrations `c`'s database lacks, after checking that those it applied are the
/// code's (`name`, the database file, stands for the service in errors).
fn migrate(
    c: &mut Connection,
    name: &str,
    migrations: &[Migration],
    clock: &dyn Clock,
) -> Result<()> {
    transaction(c, |tx| {
        // `checksum` is NULL only in rows written before checksums were kept; a table from
        // then gets the column here, and its rows are backfilled below.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL, checksum TEXT)",
        )?;
        let has_checksum: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('schema_migrations') WHERE name = 'checksum')",
            [],
            |r| r.get(0),
        )?;
        if !has_checksum {
            tx.execute_batch("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")?;
        }
        let applied: Vec<(i64, Option<String>)> = tx
            .prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let backfill = crate::migration::verify(name, migrations, &applied)?;
        for (version, checksum) in &backfill {
            tx.execute(
                "UPDATE schema_migrations SET checksum = ? WHERE version = ?",
                (checksum, version),
            )?;
        }
        if !backfill.is_empty() {
            tracing::info!(
                database = name,
                migrations = backfill.len(),
                "recorded the checksums of migrations applied before checksums were kept"
            );
        }
        let current = applied.last().map_or(0, |(v, _)| *v);
        for m in migrations.iter().filter(|m| m.version > current) {
            tx.execute_batch(m.sql).map_err(|source| Error::Migration {
                version: m.version,
                source: source.into(),
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at, checksum) VALUES (?, ?, ?)",
                (m.version, clock.now_micros(), m.checksum()),
            )?;
        }
        Ok(())
    })
}

/// Maps a uniqueness violation to `Error::Conflict`.
pub(crate) fn conflict(e: rusqlite::Error, what: &str) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => Error::Conflict(what.to_owned()),
        _ => Error::Sqlite(e),
    }
}

/// Appends events to the outbox of the transaction `tx`, created at `now`.
pub(crate) fn enqueue(tx: &Connection, events: &[crate::OutboxEvent], now: i64) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (id, stream, subject, payload, created_at) VALUES (?, ?, ?, ?, ?)",
    )?;
    for e in events {
        insert.execute((&e.id, &e.stream, &e.subject, &e.payload, now))?;
    }
    Ok(())
}

/// Unpublished outbox rows, oldest first.
pub(crate) async fn outbox_pending(db: &Db, limit: u32) -> Result<Vec<crate::OutboxRecord>> {
    db.read(move |c| {
        let mut q = c.prepare_cached(
            "SELECT seq, id, stream, subject, payload FROM outbox WHERE published_at IS NULL
             ORDER BY seq LIMIT ?",
        )?;
        let rows = q.query_map([i64::from(limit)], outbox_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })
    .await
}

/// Committed outbox rows of `stream` after `after`, oldest first.
pub(crate) async fn outbox_since(
    db: &Db,
    stream: &str,
    after: i64,
    limit: u32,
) -> Result<Vec<crate::OutboxRecord>> {
    let stream = stream.to_owned();
    db.read(move |c| {
        let mut q = c.prepare_cached(
            "SELECT seq, id, stream, subject, payload FROM outbox WHERE seq > ? AND stream = ?
             ORDER BY seq LIMIT ?",
        )?;
        let rows = q.query_map((after, &stream, i64::from(limit)), outbox_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })
    .await
}

/// How many rows of `stream` come after `after`, at most `cap`: a walk of the primary key
/// from `after` on (the rows of every stream after it, which a swept outbox keeps few).
pub(crate) async fn outbox_count_since(db: &Db, stream: &str, after: i64, cap: u64) -> Result<u64> {
    let stream = stream.to_owned();
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    db.read(move |c| {
        let n: i64 = c
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE seq > ? AND stream = ? LIMIT ?)",
            )?
            .query_row((after, &stream, cap), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    })
    .await
}

/// Where reading the outbox in place starts: before its first row a relay did not mark
/// published (nothing marks rows when the outbox is read in place), or at its highest
/// sequence number when every row was published.
pub(crate) async fn outbox_start(db: &Db) -> Result<i64> {
    db.read(|c| {
        Ok(c.query_row(
            "SELECT COALESCE(
                (SELECT seq - 1 FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1),
                (SELECT seq FROM sqlite_sequence WHERE name = 'outbox'),
                0)",
            [],
            |r| r.get(0),
        )?)
    })
    .await
}

/// The highest sequence number of a committed row (0 when none).
pub(crate) async fn outbox_head(db: &Db) -> Result<i64> {
    db.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))?))
        .await
}

/// Deletes rows of `stream` up to `upto` older than a day, at most a few thousand of the
/// oldest at a time (rows are in the order they were written, so this never scans the day's
/// rows that are kept).
pub(crate) async fn outbox_sweep(db: &Db, stream: &str, upto: i64) -> Result<()> {
    let stream = stream.to_owned();
    let clock = db.clock();
    db.write(move |tx| {
        tx.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= ?1 ORDER BY seq LIMIT 8192)
               AND stream = ?2 AND created_at < ?3",
            (upto, &stream, clock.now_micros() - super::OUTBOX_KEPT_MICROS),
        )?;
        Ok(())
    })
    .await
}

fn outbox_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<crate::OutboxRecord> {
    Ok(crate::OutboxRecord {
        seq: r.get(0)?,
        event: crate::OutboxEvent {
            id: r.get(1)?,
            stream: r.get(2)?,
            subject: r.get(3)?,
            payload: r.get(4)?,
        },
    })
}

/// Marks outbox rows published; now and then sweeps rows published more than a day ago.
pub(crate) async fn outbox_mark(db: &Db, seqs: &[i64]) -> Result<()> {
    let seqs = seqs.to_vec();
    let clock = db.clock();
    db.write(move |tx| {
        let now = clock.now_micros();
        let mut mark = tx.prepare_cached("UPDATE outbox SET published_at = ? WHERE seq = ?")?;
        for seq in &seqs {
            mark.execute((now, seq))?;
        }
        if super::sweep_due(&seqs) {
            tx.execute(
                "DELETE FROM outbox WHERE published_at < ?",
                [now - super::OUTBOX_KEPT_MICROS],
            )?;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use firebreak_domain::SystemClock;

    use super::*;
    use crate::migration::testing::{assert_refused_edit, checksums};

    const SCHEMA: &[Migration] = &[Migration {
        version: 1,
        sql: "CREATE TABLE t (n INTEGER PRIMARY KEY);",
    }];

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            &dir.path().join("t.db"),
            SCHEMA,
            false,
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        (db, dir)
    }

    async fn rows(db: &Db) -> Vec<i64> {
        db.read(|c| {
            Ok(c.prepare("SELECT n FROM t ORDER BY n")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
        .unwrap()
    }

    fn insert(n: i64) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t (n) VALUES (?)", [n])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_transaction_spanning_calls_commits_all_or_nothing() {
        let (db, _dir) = db().await;
        let mut tx = db.begin().await;
        tx.call(insert(1)).await.unwrap();
        tx.call(insert(2)).await.unwrap();
        // The reading connection never sees what is not committed.
        assert!(rows(&db).await.is_empty());
        tx.commit_with(|_| Ok(())).await.unwrap();
        assert_eq!(rows(&db).await, [1, 2]);

        // Dropped uncommitted: nothing stays, and the next writer does not find itself
        // inside the abandoned transaction.
        let mut tx = db.begin().await;
        tx.call(insert(3)).await.unwrap();
        drop(tx);
        db.write(|tx| insert(4)(tx)).await.unwrap();
        assert_eq!(rows(&db).await, [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_failed_call_changes_nothing_and_the_transaction_goes_on() {
        let (db, _dir) = db().await;
        let mut tx = db.begin().await;
        tx.call(insert(1)).await.unwrap();
        // 5 goes in, then 1 fails: the call is undone as a whole.
        let failed = tx
            .call(|c| {
                insert(5)(c)?;
                insert(1)(c)
            })
            .await;
        assert!(matches!(failed, Err(Error::Sqlite(_))), "{failed:?}");
        tx.call(insert(2)).await.unwrap();
        tx.commit_with(|_| Ok(())).await.unwrap();
        assert_eq!(rows(&db).await, [1, 2]);

        // A failing last write keeps nothing of its transaction.
        let mut tx = db.begin().await;
        tx.call(insert(7)).await.unwrap();
        assert!(tx.commit_with(insert(2)).await.is_err());
        let written = db.write(|tx| insert(8)(tx)).await;
        assert!(written.is_ok(), "{written:?}");
        assert_eq!(rows(&db).await, [1, 2, 8]);
    }

    #[tokio::test]
    async fn writers_wait_for_an_open_transaction() {
        let (db, _dir) = db().await;
        let mut tx = db.begin().await;
        tx.call(insert(1)).await.unwrap();
        let other = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|tx| {
                    // Runs after the transaction: it sees 1 and adds 2.
                    let seen: i64 = tx.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?;
                    insert(seen + 1)(tx)
                })
                .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!other.is_finished());
        tx.commit_with(|_| Ok(())).await.unwrap();
        other.await.unwrap().unwrap();
        assert_eq!(rows(&db).await, [1, 2]);
    }

    #[tokio::test]
    async fn a_panicking_call_loses_its_answer_not_the_connection() {
        let (db, _dir) = db().await;
        let lost = db
            .write(|tx| -> Result<()> {
                insert(1)(tx)?;
                panic!("a bug in a call");
            })
            .await;
        assert!(matches!(lost, Err(Error::Stopped(_))), "{lost:?}");
        db.write(|tx| insert(2)(tx)).await.unwrap();
        assert_eq!(rows(&db).await, [2]);
    }

    const APPLIED: &[Migration] = &[
        Migration {
            version: 1,
            sql: "CREATE TABLE t (n INTEGER PRIMARY KEY);",
        },
        Migration {
            version: 2,
            sql: "CREATE TABLE u (n INTEGER PRIMARY KEY);",
        },
    ];

    /// `APPLIED` with version 2's text edited after it was applied.
    const EDITED: &[Migration] = &[
        Migration {
            version: 1,
            sql: "CREATE TABLE t (n INTEGER PRIMARY KEY);",
        },
        Migration {
            version: 2,
            sql: "CREATE TABLE u (n INTEGER PRIMARY KEY, m TEXT);",
        },
    ];

    /// The checksums the bookkeeping table holds, by version.
    fn recorded(path: &Path) -> Vec<(i64, Option<String>)> {
        let c = Connection::open(path).unwrap();
        c.prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Opening with a migration edited since it was applied is refused, naming the database,
    /// the version and both checksums; the texts as applied open as before.
    #[tokio::test]
    async fn an_edited_applied_migration_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.db");
        drop(
            Db::open(&path, APPLIED, false, Arc::new(SystemClock))
                .await
                .unwrap(),
        );
        assert_eq!(recorded(&path), checksums(APPLIED));

        let refused = Db::open(&path, EDITED, false, Arc::new(SystemClock))
            .await
            .err();
        assert_refused_edit(refused.as_ref(), "triage.db", &APPLIED[1], &EDITED[1]);
        // Refusing changed nothing.
        assert_eq!(recorded(&path), checksums(APPLIED));

        let db = Db::open(&path, APPLIED, false, Arc::new(SystemClock))
            .await
            .unwrap();
        db.read(|c| Ok(c.execute_batch("SELECT n FROM u")?))
            .await
            .unwrap();
    }

    /// A database migrated before checksums were kept (a bookkeeping table without the
    /// column, or rows without a value) has them recorded from the code at open, and is held
    /// to them from then on.
    #[tokio::test]
    async fn migrations_applied_before_checksums_are_backfilled_not_refused() {
        for before in [
            "ALTER TABLE schema_migrations DROP COLUMN checksum",
            "UPDATE schema_migrations SET checksum = NULL",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("intake.db");
            drop(
                Db::open(&path, &APPLIED[..1], false, Arc::new(SystemClock))
                    .await
                    .unwrap(),
            );
            Connection::open(&path)
                .unwrap()
                .execute_batch(before)
                .unwrap();

            drop(
                Db::open(&path, APPLIED, false, Arc::new(SystemClock))
                    .await
                    .unwrap(),
            );
            assert_eq!(recorded(&path), checksums(APPLIED), "{before}");
            let refused = Db::open(&path, EDITED, false, Arc::new(SystemClock))
                .await
                .err();
            assert!(
                matches!(refused, Some(Error::MigrationEdited { version: 2, .. })),
                "{before}: {refused:?}"
            );
        }
    }

    /// An outbox of an earlier version, moved to reading in place: rows and their sequence
    /// numbers kept, numbering never reused, and reading starts after what a relay copied.
    #[tokio::test]
    async fn the_outbox_read_in_place_keeps_rows_numbering_and_where_the_relay_stopped() {
        use super::super::{OUTBOX, OUTBOX_READ_IN_PLACE};
        const OLD: &[Migration] = &[Migration {
            version: 1,
            sql: OUTBOX,
        }];
        const NEW: &[Migration] = &[
            Migration {
                version: 1,
                sql: OUTBOX,
            },
            Migration {
                version: 2,
                sql: OUTBOX_READ_IN_PLACE,
            },
        ];
        let event = |id: &str| crate::OutboxEvent {
            id: id.into(),
            stream: "alerts".into(),
            subject: "alerts.received".into(),
            payload: id.as_bytes().to_vec(),
        };
        let ids = |rows: Vec<crate::OutboxRecord>| -> Vec<(i64, String)> {
            rows.into_iter().map(|r| (r.seq, r.event.id)).collect()
        };
        for (published, swept, start) in [(2, 1, 2), (4, 4, 4)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("o.db");
            {
                let db = Db::open(&path, OLD, false, Arc::new(SystemClock))
                    .await
                    .unwrap();
                let events: Vec<_> = ["e1", "e2", "e3", "e4"].map(event).into();
                db.write(move |tx| enqueue(tx, &events, SystemClock.now_micros()))
                    .await
                    .unwrap();
                outbox_mark(&db, &(1..=published).collect::<Vec<_>>())
                    .await
                    .unwrap();
                db.write(move |tx| {
                    tx.execute("DELETE FROM outbox WHERE seq <= ?", [swept])?;
                    Ok(())
                })
                .await
                .unwrap();
            }
            let db = Db::open(&path, NEW, false, Arc::new(SystemClock))
                .await
                .unwrap();
            assert_eq!(
                outbox_start(&db).await.unwrap(),
                start,
                "{published} published"
            );
            let kept: Vec<(i64, String)> = (swept + 1..=4).map(|s| (s, format!("e{s}"))).collect();
            assert_eq!(ids(outbox_since(&db, "alerts", 0, 10).await.unwrap()), kept);
            db.write(move |tx| enqueue(tx, &[event("e5")], SystemClock.now_micros()))
                .await
                .unwrap();
            let after = outbox_since(&db, "alerts", 4, 10).await.unwrap();
            assert_eq!(ids(after), [(5, "e5".to_owned())], "numbering goes on");
            // Read in place, nothing is marked published: the start stays put.
            assert_eq!(outbox_start(&db).await.unwrap(), start);
        }
    }

    /// Commits never checkpoint (that took the tail of their latency): past 1000 pages of
    /// WAL, the reading connection's thread does, and the WAL starts over.
    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_committing_thread() {
        let (db, _dir) = db().await;
        // About 1,500 pages in one commit.
        db.write(|c| {
            c.execute_batch("CREATE TABLE b (x BLOB NOT NULL)")?;
            let mut insert = c.prepare("INSERT INTO b (x) VALUES (zeroblob(4000))")?;
            for _ in 0..1_500 {
                insert.execute([])?;
            }
            Ok(())
        })
        .await
        .unwrap();
        // Once the queued checkpoint ran, the next commit starts the WAL over; without it,
        // every commit would add to the WAL instead.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut n = 1_000_000;
        loop {
            n += 1;
            db.write(insert(n)).await.unwrap();
            let pages = db.write(|_| Ok(WAL_PAGES.with(Cell::get))).await.unwrap();
            if pages < 10 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL never started over: {pages} pages"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows(&db).await.len(), (n - 1_000_000) as usize);
    }

    /// A writer that leaves the other thread no moment to checkpoint (here: that thread is
    /// busy) checkpoints itself past 4,000 pages, so its WAL does not grow without end.
    #[tokio::test]
    async fn past_4000_pages_the_writer_checkpoints_itself() {
        let (db, _dir) = db().await;
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let reader = {
            let db = db.clone();
            tokio::spawn(async move {
                db.read(move |_| {
                    let _ = blocked.recv();
                    Ok(())
                })
                .await
            })
        };
        db.write(|c| {
            c.execute_batch("CREATE TABLE b (x BLOB NOT NULL)")?;
            let mut insert = c.prepare("INSERT INTO b (x) VALUES (zeroblob(4000))")?;
            for _ in 0..4_500 {
                insert.execute([])?;
            }
            Ok(())
        })
        .await
        .unwrap();
        // That call was followed by the writer's own checkpoint; the next commit starts the
        // WAL over, though the reading thread never got to run one.
        db.write(insert(1)).await.unwrap();
        let pages = db.write(|_| Ok(WAL_PAGES.with(Cell::get))).await.unwrap();
        assert!(pages < 10, "the WAL did not start over: {pages} pages");
        release.send(()).unwrap();
        reader.await.unwrap().unwrap();
        assert_eq!(rows(&db).await, [1]);
    }

    /// Sweeping keeps what a consumer has not passed and what is less than a day old.
    #[tokio::test]
    async fn the_sweep_deletes_only_old_events_every_consumer_is_past() {
        use super::super::{OUTBOX, OUTBOX_READ_IN_PLACE};
        const SCHEMA: &[Migration] = &[
            Migration {
                version: 1,
                sql: OUTBOX,
            },
            Migration {
                version: 2,
                sql: OUTBOX_READ_IN_PLACE,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            &dir.path().join("o.db"),
            SCHEMA,
            false,
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let old = SystemClock.now_micros() - super::super::OUTBOX_KEPT_MICROS - 1;
        db.write(move |c| {
            // 1-3 are more than a day old, 4 is new, 5 is old again (a clock step).
            for (seq, created_at) in [
                (1, old),
                (2, old),
                (3, old),
                (4, SystemClock.now_micros()),
                (5, old),
            ] {
                c.execute(
                    "INSERT INTO outbox (seq, id, stream, subject, payload, created_at)
                     VALUES (?, ?, 'alerts', 's', x'00', ?)",
                    (seq, format!("e{seq}"), created_at),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        // The slowest consumer is past 4.
        outbox_sweep(&db, "alerts", 4).await.unwrap();
        let left: Vec<i64> = outbox_since(&db, "alerts", 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, [4, 5]);
    }
}
