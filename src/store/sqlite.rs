//! The embedded backend: one SQLite database in WAL mode in `data_dir`.
//!
//! Writes go to one writer thread that batches whatever is waiting into one transaction (group
//! commit), each request in its own savepoint so one refusal does not undo the others. Replies
//! are sent only after the commit. Reads use a small pool of read-only connections, which WAL lets
//! run beside the writer.
//!
//! A checkpoint thread copies the WAL into the database every 100 ms, so no request ever waits on
//! a checkpoint inside a `COMMIT` (see [`checkpoint_loop`]).
//!
//! Durability: `synchronous = NORMAL` in WAL mode survives a crash of the process (`kill -9`) with
//! every committed transaction; only a power loss may drop the last ones. Set
//! `store.synchronous = "full"` to fsync every commit.
//!
//! The data dir is locked: one server process per embedded store. So at start every lease found
//! is an orphan of a dead process, and is expired at once for the reaper to recover.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use super::*;
use crate::job::{apply, now_us, ApplyCtx, Beat, Event, EventKind};

#[path = "sqlite_counts.rs"]
mod counts;
#[path = "sqlite_deliveries.rs"]
mod deliveries;
#[path = "sqlite_replay.rs"]
mod replay;
#[path = "sqlite_schedules.rs"]
mod schedules;
#[path = "sqlite_signals.rs"]
mod signals;
#[path = "sqlite_tail.rs"]
mod tail;
#[path = "sqlite_waits.rs"]
mod waits;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    runner TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    run_at INTEGER,
    lease_expires INTEGER,
    idem_key TEXT UNIQUE,
    queued_at INTEGER NOT NULL,
    finished_at INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(runner, queued_at, id) WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(run_at) WHERE status = 'SCHEDULED';
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_expires) WHERE status IN ('STARTING', 'RUNNING');
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_channel ON events(channel, id);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    ts INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trims (
    channel TEXT PRIMARY KEY,   -- '' is the global stream
    upto INTEGER NOT NULL       -- the highest event id removed
);
CREATE TABLE IF NOT EXISTS file_refs (
    hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (hash, job_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('token', 0);
"#;

type Done = Box<dyn FnOnce(Option<String>) + Send>;
type WriteOp = Box<dyn FnOnce(&mut WriteCtx<'_>) -> Done + Send>;

/// What a write request sees on the writer thread.
struct WriteCtx<'a> {
    conn: &'a Connection,
    notices: Vec<Notice>,
    settings: &'a StoreSettings,
}

/// The embedded store.
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<WriteOp>,
    readers: Arc<ReadPool>,
    notify: broadcast::Sender<Notice>,
    settings: StoreSettings,
    checkpoints: Arc<AtomicBool>,
    /// Hook replay memory (`sqlite_replay.rs`).
    replay: runyard_hooks::ReplayGuard,
    _lock: std::fs::File,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Ends the checkpoint thread at its next tick.
        self.checkpoints.store(false, Ordering::Release);
    }
}

/// How often the checkpoint thread copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL size (in 4 KiB frames, so about 64 MiB) past which the checkpoint thread restarts the WAL
/// from its beginning, so it stays bounded under a sustained load.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the WAL off the writer's path. With SQLite's automatic checkpoint, every ~1000
/// pages one `COMMIT` also fsyncs the WAL, copies it and fsyncs the database: a 4-13 ms stall of
/// the writer (and so of every request waiting on it). Here a passive checkpoint runs every
/// 100 ms on its own connection, never waiting for the writer; a restart (which needs a moment
/// without a writer, and is tried without waiting) bounds the WAL.
fn checkpoint_loop(path: PathBuf, running: Arc<AtomicBool>) {
    let conn = match open_conn(&path, false) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the checkpoint connection; the WAL will grow");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::ZERO);
    let frames = |mode: &str| -> Option<i64> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        })
        .ok()
    };
    while running.load(Ordering::Acquire) {
        std::thread::sleep(CHECKPOINT_EVERY);
        match frames("PASSIVE") {
            Some(n) if n > 4 * WAL_RESTART_FRAMES => {
                // Restarts keep missing a gap between writes: wait a little for one.
                let _ = conn.busy_timeout(Duration::from_millis(100));
                let _ = frames("RESTART");
                let _ = conn.busy_timeout(Duration::ZERO);
            }
            Some(n) if n > WAL_RESTART_FRAMES => {
                let _ = frames("RESTART");
            }
            _ => {}
        }
    }
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.idle.lock().pop() {
            Some(c) => c,
            None => open_conn(&self.path, true)?,
        };
        let r = f(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < 8 {
            idle.push(conn);
        }
        r
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("corrupt record: {e}"))
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)
            .map_err(db_err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, locking it for this process.
    pub fn open(dir: &Path, settings: StoreSettings, synchronous_full: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data_dir {}: {e}", dir.display()))
        })?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("runyard.lock"))
            .map_err(|e| StoreError::Unavailable(format!("cannot open lock file: {e}")))?;
        use fs4::fs_std::FileExt;
        if !lock.try_lock_exclusive().unwrap_or(false) {
            return Err(StoreError::Unavailable(format!(
                "data_dir {} is in use by another runyard process",
                dir.display()
            )));
        }
        let path = dir.join("runyard.db");
        let conn = open_conn(&path, false)?;
        conn.pragma_update(
            None,
            "synchronous",
            if synchronous_full { "FULL" } else { "NORMAL" },
        )
        .map_err(db_err)?;
        // Checkpoints are the checkpoint thread's job; savepoint journals stay in memory.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(db_err)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.execute_batch(schedules::SCHEMA).map_err(db_err)?;
        conn.execute_batch(signals::SCHEMA).map_err(db_err)?;
        conn.execute_batch(counts::SCHEMA).map_err(db_err)?;
        conn.execute_batch(deliveries::SCHEMA).map_err(db_err)?;
        conn.execute_batch(waits::SCHEMA).map_err(db_err)?;
        orphan_leases(&conn)?;
        deliveries::orphan_claims(&conn)?;
        let checkpoints = Arc::new(AtomicBool::new(true));
        let (cp_path, cp_run) = (path.clone(), checkpoints.clone());
        std::thread::Builder::new()
            .name("runyard-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(cp_path, cp_run))
            .map_err(|e| StoreError::Unavailable(format!("cannot start checkpoints: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (notify, _) = broadcast::channel(4096);
        let n2 = notify.clone();
        let s2 = settings.clone();
        std::thread::Builder::new()
            .name("runyard-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, n2, s2))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReadPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            notify,
            settings,
            checkpoints,
            replay: runyard_hooks::ReplayGuard::new(),
            _lock: lock,
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let op: WriteOp = Box::new(move |ctx| {
            let mark = ctx.notices.len();
            let r = match ctx.conn.execute_batch("SAVEPOINT op") {
                Ok(()) => {
                    let r = f(ctx);
                    let end = if r.is_ok() {
                        "RELEASE op"
                    } else {
                        "ROLLBACK TO op; RELEASE op"
                    };
                    match (r, ctx.conn.execute_batch(end)) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(db_err(e)),
                    }
                }
                Err(e) => Err(db_err(e)),
            };
            if r.is_err() {
                ctx.notices.truncate(mark);
            }
            Box::new(move |commit_err: Option<String>| {
                let _ = tx.send(match commit_err {
                    None => r,
                    Some(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                });
            })
        });
        self.writer
            .send(op)
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    notify: broadcast::Sender<Notice>,
    settings: StoreSettings,
) {
    let mut batch: Vec<WriteOp> = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut ctx = WriteCtx {
            conn: &conn,
            notices: Vec::new(),
            settings: &settings,
        };
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Reply to everyone with the failure; nothing ran.
            let msg = e.to_string();
            for op in batch.drain(..) {
                let done = op(&mut ctx);
                done(Some(msg.clone()));
            }
            let _ = conn.execute_batch("ROLLBACK");
            continue;
        }
        let dones: Vec<Done> = batch.drain(..).map(|op| op(&mut ctx)).collect();
        let commit = conn.execute_batch("COMMIT").err().map(|e| e.to_string());
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
            ctx.notices.clear();
        }
        let notices = std::mem::take(&mut ctx.notices);
        for d in dones {
            d(commit.clone());
        }
        let mut events = false;
        for n in notices {
            events |= matches!(n, Notice::Changed { .. });
            let _ = notify.send(n);
        }
        if events {
            let _ = notify.send(Notice::Events);
        }
    }
}

fn orphan_leases(conn: &Connection) -> Result<()> {
    let mut stmt = conn
        .prepare("SELECT body FROM jobs WHERE status IN ('STARTING','RUNNING')")
        .map_err(db_err)?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(db_err)?
        .collect::<std::result::Result<_, _>>()
        .map_err(db_err)?;
    let actx = ApplyCtx::at(now_us(), 0);
    for body in rows {
        let mut job: Job = serde_json::from_str(&body).map_err(json_err)?;
        // No event: the reaper's `LeaseExpired` (or `Adopt`) that follows makes the change seen.
        if apply(&mut job, Command::OrphanLease, &actx).is_ok() {
            save(conn, &job)?;
        }
    }
    Ok(())
}

fn load(conn: &Connection, id: &str) -> Result<Option<Job>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM jobs WHERE id = ?1")
        .map_err(db_err)?
        .query_row([id], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    body.map(|b| serde_json::from_str(&b).map_err(json_err))
        .transpose()
}

fn save(conn: &Connection, job: &Job) -> Result<()> {
    let body = serde_json::to_string(job).map_err(json_err)?;
    conn.prepare_cached(
        "UPDATE jobs SET status = ?2, run_at = ?3, lease_expires = ?4, queued_at = ?5,
                finished_at = ?6, body = ?7 WHERE id = ?1",
    )
    .map_err(db_err)?
    .execute(params![
        job.id.to_string(),
        job.status.as_str(),
        job.run_at,
        job.lease.as_ref().map(|l| l.expires_at),
        job.queued_at,
        job.finished_at,
        body
    ])
    .map_err(db_err)?;
    save_file_refs(conn, job)
}

/// Records which blobs the job references (for blob garbage collection).
fn save_file_refs(conn: &Connection, job: &Job) -> Result<()> {
    if job.files.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT OR IGNORE INTO file_refs(hash, job_id) VALUES (?1, ?2)")
        .map_err(db_err)?;
    let id = job.id.to_string();
    for f in job.files.values().flatten() {
        stmt.execute(params![f.hash, id]).map_err(db_err)?;
    }
    Ok(())
}

fn append_event(ctx: &mut WriteCtx<'_>, job: &Job, kind: EventKind) -> Result<()> {
    let ev = Event::for_job(job, kind);
    let body = serde_json::to_string(&ev).map_err(json_err)?;
    ctx.conn
        .prepare_cached("INSERT INTO events(channel, body) VALUES (?1, ?2)")
        .map_err(db_err)?
        .execute(params![job.channel_id, body])
        .map_err(db_err)?;
    // A webhook delivery of this event, in the same transaction (notify).
    deliveries::enqueue_in(ctx.conn, job, kind, ctx.conn.last_insert_rowid(), &body)?;
    Ok(())
}

fn notices_for(ctx: &mut WriteCtx<'_>, job: &Job) {
    if job.status == JobStatus::Queued {
        ctx.notices.push(Notice::Queued {
            runner: job.runner.clone(),
        });
    }
    ctx.notices.push(Notice::Changed {
        job_id: job.id,
        status: job.status,
    });
}

fn apply_in(ctx: &mut WriteCtx<'_>, job: &mut Job, cmd: Command, now: Micros) -> Result<()> {
    let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
    let was = job.status;
    let ev = apply(job, cmd, &actx)?;
    save(ctx.conn, job)?;
    if was == JobStatus::Waiting && job.status != JobStatus::Waiting {
        waits::leave_in(ctx.conn, &job.id.to_string())?;
        crate::waiting::counters().count_release(job);
    }
    let emitted = job.status == JobStatus::Success && was != JobStatus::Success;
    if emitted && !job.emits.is_empty() {
        signals::emit_in(ctx.conn, job, now)?;
    }
    if let Some(kind) = ev {
        append_event(ctx, job, kind)?;
        if kind == EventKind::Status {
            notices_for(ctx, job);
        } else {
            ctx.notices.push(Notice::Events);
        }
    }
    if emitted {
        // The jobs these signals complete are released in this same transaction.
        for key in job.emits.clone() {
            waits::on_signal(ctx, &key)?;
        }
    }
    Ok(())
}

/// Parses an event id (`last_id`) of the embedded store: a non-negative integer.
pub fn parse_event_id(s: &str) -> Result<i64> {
    s.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        StoreError::BadInput(format!(
            "invalid event id `{s}`: expected a non-negative integer"
        ))
    })
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        self.write(move |ctx| {
            if let Some(key) = &job.idempotency_key {
                let existing: Option<String> = ctx
                    .conn
                    .prepare_cached("SELECT body FROM jobs WHERE idem_key = ?1")
                    .map_err(db_err)?
                    .query_row([key], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if let Some(b) = existing {
                    return Ok(Submitted {
                        job: serde_json::from_str(&b).map_err(json_err)?,
                        created: false,
                    });
                }
            }
            let body = serde_json::to_string(&job).map_err(json_err)?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO jobs(id, type, runner, status, channel, run_at, lease_expires, idem_key,
                                      queued_at, finished_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, NULL, ?9)",
                )
                .map_err(db_err)?
                .execute(params![
                    job.id.to_string(),
                    job.job_type,
                    job.runner,
                    job.status.as_str(),
                    job.channel_id,
                    job.run_at,
                    job.idempotency_key,
                    job.queued_at,
                    body
                ])
                .map_err(db_err)?;
            save_file_refs(ctx.conn, &job)?;
            append_event(ctx, &job, EventKind::Status)?;
            notices_for(ctx, &job);
            let mut job = job;
            if job.status == JobStatus::Waiting {
                waits::enter_in(ctx, &mut job)?;
            }
            Ok(Submitted { job, created: true })
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        self.read(move |c| load(c, &id.to_string())).await
    }

    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        self.read(move |c| {
            let mut sql = String::from("SELECT id, body FROM jobs WHERE 1=1");
            let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            if let Some(s) = q.status {
                sql.push_str(" AND status = ?");
                args.push(Box::new(s.as_str()));
            }
            if let Some(t) = &q.job_type {
                sql.push_str(" AND type GLOB ?");
                args.push(Box::new(t.clone()));
            }
            if let Some(cur) = q.cursor {
                sql.push_str(" AND id < ?");
                args.push(Box::new(cur.to_string()));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            args.push(Box::new((q.limit + 1) as i64));
            let mut stmt = c.prepare_cached(&sql).map_err(db_err)?;
            let mut rows: Vec<(String, String)> = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            let more = rows.len() > q.limit;
            rows.truncate(q.limit);
            let next_cursor = if more {
                rows.last().and_then(|(id, _)| Uuid::parse_str(id).ok())
            } else {
                None
            };
            // A record that no longer reads as a job is reported, never a reason to fail the page.
            let jobs = rows
                .iter()
                .filter_map(|(id, b)| match serde_json::from_str::<Job>(b) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        tracing::error!(job_id = %id, error = %e, "unreadable job record left out of a listing");
                        None
                    }
                })
                .collect();
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.write(move |ctx| {
            let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
            apply_in(ctx, &mut job, cmd, now_us())?;
            Ok(job)
        })
        .await
    }
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn claim(
        &self,
        runner: &str,
        worker: &str,
        max: usize,
        lease_ttl: Duration,
    ) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(vec![]);
        }
        let runner = runner.to_string();
        let worker = worker.to_string();
        self.write(move |ctx| {
            let bodies: Vec<String> = ctx
                .conn
                .prepare_cached(
                    "SELECT body FROM jobs WHERE runner = ?1 AND status = 'QUEUED'
                     ORDER BY queued_at, id LIMIT ?2",
                )
                .map_err(db_err)?
                .query_map(params![runner, max as i64], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            if bodies.is_empty() {
                return Ok(vec![]);
            }
            let last: i64 = ctx
                .conn
                .prepare_cached(
                    "UPDATE meta SET value = value + ?1 WHERE key = 'token' RETURNING value",
                )
                .map_err(db_err)?
                .query_row([bodies.len() as i64], |r| r.get(0))
                .map_err(db_err)?;
            let first = last as u64 - bodies.len() as u64 + 1;
            let now = now_us();
            let lease_until = now + lease_ttl.as_micros() as i64;
            let mut out = Vec::with_capacity(bodies.len());
            for (i, b) in bodies.iter().enumerate() {
                let mut job: Job = serde_json::from_str(b).map_err(json_err)?;
                let cmd = Command::Claim {
                    worker: worker.clone(),
                    token: first + i as u64,
                    lease_until,
                };
                apply_in(ctx, &mut job, cmd, now)?;
                out.push(job);
            }
            Ok(out)
        })
        .await
    }

    async fn adopt(&self, id: Uuid, worker: &str, lease_ttl: Duration) -> Result<Job> {
        let worker = worker.to_string();
        self.write(move |ctx| {
            let mut job = load(ctx.conn, &id.to_string())?.ok_or(StoreError::NotFound)?;
            let token: i64 = ctx
                .conn
                .prepare_cached(
                    "UPDATE meta SET value = value + 1 WHERE key = 'token' RETURNING value",
                )
                .map_err(db_err)?
                .query_row([], |r| r.get(0))
                .map_err(db_err)?;
            let now = now_us();
            let cmd = Command::Adopt {
                worker,
                token: token as u64,
                lease_until: now + lease_ttl.as_micros() as i64,
            };
            apply_in(ctx, &mut job, cmd, now)?;
            Ok(job)
        })
        .await
    }

    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>> {
        let held = held.to_vec();
        let worker = worker.to_string();
        self.write(move |ctx| {
            let now = now_us();
            let until = now + lease_ttl.as_micros() as i64;
            let mut lost = Vec::new();
            let actx = ApplyCtx::at(now, ctx.settings.progress_interval.as_micros() as i64);
            for (id, token) in held {
                let Some(mut job) = load(ctx.conn, &id.to_string())? else {
                    lost.push(id);
                    continue;
                };
                match crate::job::heartbeat(&mut job, &worker, token, until, &actx) {
                    Beat::Renewed => save(ctx.conn, &job)?,
                    Beat::Finishing => {}
                    Beat::Lost => lost.push(id),
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn promote_due(&self, max: usize) -> Result<usize> {
        self.write(move |ctx| {
            let now = now_us();
            let ids: Vec<String> = ctx
                .conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE status = 'SCHEDULED' AND run_at <= ?1 ORDER BY run_at LIMIT ?2",
                )
                .map_err(db_err)?
                .query_map(params![now, max as i64], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            for id in &ids {
                if let Some(mut job) = load(ctx.conn, id)? {
                    apply_in(ctx, &mut job, Command::Promote, now)?;
                }
            }
            Ok(ids.len())
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Micros>> {
        self.read(|c| {
            c.prepare_cached("SELECT MIN(run_at) FROM jobs WHERE status = 'SCHEDULED'")
                .map_err(db_err)?
                .query_row([], |r| r.get::<_, Option<i64>>(0))
                .map_err(db_err)
        })
        .await
    }

    async fn expired(&self, max: usize) -> Result<Vec<Job>> {
        self.read(move |c| {
            let now = now_us();
            let bodies: Vec<String> = c
                .prepare_cached(
                    "SELECT body FROM jobs WHERE status IN ('STARTING','RUNNING') AND lease_expires < ?1
                     ORDER BY lease_expires LIMIT ?2",
                )
                .map_err(db_err)?
                .query_map(params![now, max as i64], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            bodies
                .iter()
                .map(|b| serde_json::from_str(b).map_err(json_err))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let keep = self.settings.log_lines_per_job as i64;
        self.write(move |ctx| {
            let id = id.to_string();
            let last: i64 = ctx
                .conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job_id = ?1")
                .map_err(db_err)?
                .query_row([&id], |r| r.get(0))
                .map_err(db_err)?;
            let mut ins = ctx
                .conn
                .prepare_cached(
                    "INSERT INTO logs(job_id, seq, stream, ts, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err)?;
            let n = lines.len() as i64;
            for (i, (stream, ts, line)) in lines.into_iter().enumerate() {
                let s = match stream {
                    LogStream::Stdout => "stdout",
                    LogStream::Stderr => "stderr",
                    LogStream::Job => "job",
                };
                ins.execute(params![id, last + 1 + i as i64, s, ts, line])
                    .map_err(db_err)?;
            }
            if last + n > keep {
                ctx.conn
                    .prepare_cached("DELETE FROM logs WHERE job_id = ?1 AND seq <= ?2")
                    .map_err(db_err)?
                    .execute(params![id, last + n - keep])
                    .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT seq, stream, ts, line FROM logs WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(db_err)?
            .query_map(params![id.to_string(), after as i64, limit as i64], |r| {
                let stream: String = r.get(1)?;
                Ok(LogLine {
                    seq: r.get::<_, i64>(0)? as u64,
                    stream: match stream.as_str() {
                        "stdout" => LogStream::Stdout,
                        "stderr" => LogStream::Stderr,
                        _ => LogStream::Job,
                    },
                    ts: r.get(2)?,
                    line: r.get(3)?,
                })
            })
            .map_err(db_err)?
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err)
        })
        .await
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let after = last_id.map(parse_event_id).transpose()?;
        let channel = channel.map(str::to_string);
        self.read(move |c| {
            let mut out = Vec::new();
            if let Some(after) = after {
                let trimmed: i64 = c
                    .prepare_cached("SELECT COALESCE(MAX(upto), 0) FROM trims WHERE channel IN ('', ?1)")
                    .map_err(db_err)?
                    .query_row([channel.clone().unwrap_or_default()], |r| r.get(0))
                    .map_err(db_err)?;
                if after < trimmed {
                    let mut ev = Event::resync(channel.as_deref().unwrap_or(""));
                    ev.id = trimmed.to_string();
                    out.push(ev);
                }
            }
            let after = after.unwrap_or(0);
            let rows: Vec<(i64, String)> = match &channel {
                Some(ch) => c
                    .prepare_cached(
                        "SELECT id, body FROM events WHERE channel = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )
                    .map_err(db_err)?
                    .query_map(params![ch, after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(db_err)?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(db_err)?,
                None => c
                    .prepare_cached("SELECT id, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
                    .map_err(db_err)?
                    .query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(db_err)?
                    .collect::<std::result::Result<_, _>>()
                    .map_err(db_err)?,
            };
            for (id, body) in rows {
                let mut ev: Event = serde_json::from_str(&body).map_err(json_err)?;
                ev.id = id.to_string();
                out.push(ev);
            }
            Ok(out)
        })
        .await
    }

    async fn last_event_id(&self) -> Result<Option<String>> {
        self.read(|c| {
            let id: Option<i64> = c
                .prepare_cached("SELECT MAX(id) FROM events")
                .map_err(db_err)?
                .query_row([], |r| r.get(0))
                .map_err(db_err)?;
            Ok(id.map(|i| i.to_string()))
        })
        .await
    }
}

#[async_trait]
impl Maintenance for SqliteStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        let global = self.settings.global_limit as i64;
        let per_channel = self.settings.channel_limit as i64;
        self.write(move |ctx| {
            let c = ctx.conn;
            let mut report = RetentionReport::default();
            // Finished jobs past retention, in bounded chunks, with their logs.
            let ids: Vec<String> = c
                .prepare_cached("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 LIMIT 5000")
                .map_err(db_err)?
                .query_map([finished_before], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            for id in &ids {
                c.prepare_cached("DELETE FROM logs WHERE job_id = ?1")
                    .map_err(db_err)?
                    .execute([id])
                    .map_err(db_err)?;
                c.prepare_cached("DELETE FROM file_refs WHERE job_id = ?1")
                    .map_err(db_err)?
                    .execute([id])
                    .map_err(db_err)?;
                c.prepare_cached("DELETE FROM jobs WHERE id = ?1")
                    .map_err(db_err)?
                    .execute([id])
                    .map_err(db_err)?;
            }
            report.jobs = ids.len() as u64;
            // The global stream.
            let max: i64 = c
                .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(db_err)?;
            let cut = max - global;
            if cut > 0 {
                let n = c
                    .execute("DELETE FROM events WHERE id <= ?1", [cut])
                    .map_err(db_err)?;
                if n > 0 {
                    report.events += n as u64;
                    c.execute(
                        "INSERT INTO trims(channel, upto) VALUES ('', ?1)
                         ON CONFLICT(channel) DO UPDATE SET upto = MAX(upto, excluded.upto)",
                        [cut],
                    )
                    .map_err(db_err)?;
                }
            }
            // Channels over their limit.
            let over: Vec<(String, i64)> = c
                .prepare("SELECT channel, COUNT(*) FROM events GROUP BY channel HAVING COUNT(*) > ?1")
                .map_err(db_err)?
                .query_map([per_channel], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            for (ch, _) in over {
                let upto: i64 = c
                    .query_row(
                        "SELECT id FROM events WHERE channel = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                        params![ch, per_channel],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                let n = c
                    .execute("DELETE FROM events WHERE channel = ?1 AND id <= ?2", params![ch, upto])
                    .map_err(db_err)?;
                report.events += n as u64;
                c.execute(
                    "INSERT INTO trims(channel, upto) VALUES (?1, ?2)
                     ON CONFLICT(channel) DO UPDATE SET upto = MAX(upto, excluded.upto)",
                    params![ch, upto],
                )
                .map_err(db_err)?;
            }
            Ok(report)
        })
        .await
    }

    async fn file_hashes(&self) -> Result<std::collections::HashSet<String>> {
        self.read(|c| {
            c.prepare("SELECT DISTINCT hash FROM file_refs")
                .map_err(db_err)?
                .query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(db_err)
                .map(|_| ())
        })
        .await
    }
}

impl Store for SqliteStore {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notify.subscribe()
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}
