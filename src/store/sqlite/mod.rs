//! The embedded backend: one SQLite database in WAL mode in `data_dir`.
//!
//! Writes go to one writer thread that batches whatever is waiting into one transaction (group
//! commit), each request in its own savepoint so one refusal does not undo the others. Replies
//! are sent only after the commit. The queue to the writer is bounded ([`WRITE_QUEUE`]): under
//! overload a request waits for room instead of memory growing without limit. Reads use a small
//! pool of read-only connections, which WAL lets run beside the writer.
//!
//! A checkpoint thread copies the WAL into the database every 100 ms, so no request ever waits on
//! a checkpoint inside a `COMMIT` (see [`checkpoint::checkpoint_loop`]).
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

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::handoff::{Handoffs, Taken};
use super::{Notice, Result, Store, StoreError, StoreSettings};
use crate::job::{Event, EventKind, Job, JobStatus, Micros};
use crate::store::job_record::json_err;

mod activity;
mod apply;
mod batch;
mod checkpoint;
#[cfg(test)]
mod compat_tests;
mod copy;
mod counts;
#[cfg(test)]
mod counts_tests;
mod ctx;
mod deliveries;
mod events;
mod handoff;
mod jobs;
mod keycheck;
#[cfg(test)]
mod list_tests;
mod lock;
mod logs;
mod notices;
#[cfg(test)]
mod page_tests;
#[cfg(test)]
mod plan_tests;
mod queue;
mod replay;
mod retention;
mod schedules;
mod schema;
mod signals;
mod sql;
mod start;
mod stored;
mod tail;
#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unreadable_tests;
mod waits;
mod walvfs;
mod whole;

use apply::{apply_in, apply_stored, save, save_row};
pub use copy::mark_copy;

/// Refuses (as the store's open would) a file that is not a runyard database or is one of a
/// newer format than this build's, through `conn` open on `path`: `runyard backup` checks its
/// source with it before copying.
pub fn refuse_unopenable(conn: &Connection, path: &Path) -> Result<()> {
    schema::refuse_foreign_on(conn, path)
}
pub use events::parse_event_id;
use sql::{exec, row, row_opt, rows};

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
-- Cancelled jobs whose worker still holds the lease while it stops the work (few, short-lived).
CREATE INDEX IF NOT EXISTS jobs_stopping ON jobs(lease_expires) WHERE status = 'CANCELLED' AND lease_expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);
-- Event ids only grow without AUTOINCREMENT (which rewrote `sqlite_sequence`, one more page per
-- transaction): a new row takes the largest id + 1, and retention never deletes the newest event
-- (retention.rs). Databases created with AUTOINCREMENT keep it; both read the same.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
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
    /// The events this transaction appended, with their ids, for the event tail (`tail.rs`).
    events: Vec<Event>,
    settings: &'a StoreSettings,
    /// Workers parked for a direct hand-off (`handoff.rs`, `jobs.rs`).
    handoffs: &'a Handoffs,
    /// The jobs this transaction claimed for parked workers, passed over after the commit.
    handed: Vec<(Taken, Job)>,
    /// Why the transaction must be rolled back whole (`whole.rs`): the rest of the batch does
    /// not run, and every request is answered with this error.
    doomed: Option<String>,
    /// The changes of the jobs' counts, written into `job_counts` before the `COMMIT`
    /// (`counts.rs`).
    counts: counts::Deltas,
    /// No event committed yet: an event is numbered by [`events::INSERT`] (the database's first
    /// id in an empty table), else by SQLite (one past the newest, [`events::INSERT_NEXT`]: the
    /// newest is never deleted, so the table never empties again, and the newest need not be
    /// looked up per event).
    events_maybe_empty: bool,
}

/// The embedded store.
pub struct SqliteStore {
    writer: mpsc::Sender<WriteOp>,
    readers: Arc<ReadPool>,
    notify: Arc<notices::Listeners>,
    /// Each committed transaction's events, in commit order (`tail.rs`).
    committed: broadcast::Sender<tail::Batch>,
    settings: StoreSettings,
    handoffs: Arc<Handoffs>,
    checkpoints: Arc<AtomicBool>,
    /// Why the writer's last transaction failed to commit (disk full, I/O error), until one
    /// commits again: `health` reports it, so `/health/ready` is not "ok" while every write fails.
    write_failed: Arc<Mutex<Option<String>>>,
    /// The process's own hook replay memory, in front of table `replay` (`replay.rs`).
    replay: runyard_hooks::ReplayGuard,
    /// The database's first event id (`events.rs`, [`events::first_id`]).
    events_first: i64,
    /// Its copy id, when `runyard backup` made it (`copy.rs`).
    copy: Option<u64>,
    _lock: lock::DirLock,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Ends the checkpoint thread at its next tick.
        self.checkpoints.store(false, Ordering::Release);
    }
}

/// Write requests queued for the writer thread at most; a request past it waits (asynchronously)
/// for room. Two full group commits (`MAX_BATCH`): enough to keep the writer busy while the
/// previous batch's replies go out, and a bound on the memory held by requests (each holds its
/// job, a few KiB) of a few MiB whatever the load.
pub const WRITE_QUEUE: usize = 2 * MAX_BATCH;
/// Write requests committed in one transaction at most.
const MAX_BATCH: usize = 512;

/// Page size of new databases. Each write transaction writes every page it touched to the WAL
/// (about a dozen: the job row, its indexes, the event and its index), so a smaller page writes
/// fewer bytes per job: 2 KiB pages wrote 0.61x the WAL bytes of 4 KiB ones (docs/benchmarks.md
/// "Session 7: embedded store writes"). A row up to about 2 KiB (a finished no-op job's is about
/// 0.4 KiB) stays on its page; a larger one spills into overflow pages, as one over 4 KiB did
/// before. Databases made with 4 KiB pages keep them.
const PAGE_SIZE: i64 = 2048;

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

/// A connection; one that writes (the writer's) writes each transaction's WAL frames at once
/// (`walvfs.rs`).
fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let conn = if !read_only && walvfs::register() {
        Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), walvfs::NAME)
    } else {
        Connection::open(path)
    }
    .map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    if !read_only {
        // Only a new (empty) database takes it, before WAL mode writes its first page; an existing
        // one keeps the page size it was made with.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(db_err)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)
            .map_err(db_err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    sql::stable_plans(&conn)?;
    sql::register_glob(&conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, locking it for this process.
    pub fn open(dir: &Path, settings: StoreSettings, synchronous_full: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data_dir {}: {e}", dir.display()))
        })?;
        let lock = lock::lock(dir)?;
        let path = dir.join("runyard.db");
        schema::refuse_foreign(&path)?;
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
        schema::create(&conn, &path)?;
        schema::mark_format(&conn)?;
        events::migrate(&conn)?;
        let events_first = events::first_id(&conn)?;
        counts::migrate(&conn)?;
        queue::orphan_leases(&conn)?;
        let handoffs = Handoffs::new();
        copy::release_inherited(&conn, &settings, &handoffs)?;
        let copy = copy::copy_id(&conn)?;
        deliveries::migrate(&conn)?;
        deliveries::orphan_claims(&conn)?;
        let checkpoints = Arc::new(AtomicBool::new(true));
        let (cp_path, cp_run) = (path.clone(), checkpoints.clone());
        std::thread::Builder::new()
            .name("runyard-sqlite-checkpoint".into())
            .spawn(move || checkpoint::checkpoint_loop(cp_path, cp_run))
            .map_err(|e| StoreError::Unavailable(format!("cannot start checkpoints: {e}")))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let notify = Arc::new(notices::Listeners::new());
        let (committed, _) = broadcast::channel(tail::BATCHES);
        let (n2, c2, h2) = (notify.clone(), committed.clone(), handoffs.clone());
        let s2 = settings.clone();
        let write_failed = Arc::new(Mutex::new(None));
        let w2 = write_failed.clone();
        std::thread::Builder::new()
            .name("runyard-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, (n2, c2), s2, h2, w2))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReadPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            notify,
            committed,
            settings,
            handoffs,
            checkpoints,
            write_failed,
            replay: runyard_hooks::ReplayGuard::new(),
            events_first,
            copy,
            _lock: lock,
        })
    }

    /// The id `runyard backup` gave this database, a copy (`copy.rs`); `None`: no copy.
    pub fn copy_id(&self) -> Option<u64> {
        self.copy
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.request(move |ctx| {
            let mark = ctx.mark();
            let r = match whole::savepoint(ctx) {
                Ok(()) => {
                    let r = f(ctx);
                    let end = if r.is_ok() {
                        sql::control(ctx.conn, "RELEASE op")
                    } else {
                        sql::control(ctx.conn, "ROLLBACK TO op")
                            .and_then(|()| sql::control(ctx.conn, "RELEASE op"))
                    };
                    match (r, end) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(db_err(e)),
                    }
                }
                Err(e) => Err(e),
            };
            if r.is_err() {
                ctx.undo(mark);
            }
            r
        })
        .await
    }

    /// Runs `f` on the writer in the next transaction; its result once that has committed (the
    /// commit's failure instead when it did not).
    async fn request<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let op: WriteOp = Box::new(move |ctx| {
            let r = f(ctx);
            Box::new(move |commit_err: Option<String>| {
                let _ = tx.send(match commit_err {
                    None => r,
                    Some(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                });
            })
        });
        self.enqueue(op).await?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }

    /// Queues one request for the writer, waiting for room when [`WRITE_QUEUE`] are queued.
    async fn enqueue(&self, op: WriteOp) -> Result<()> {
        self.writer
            .send(op)
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))
    }

    /// The one nullable integer `sql` selects: a `MIN(...)`, when the next thing is due.
    async fn read_min(&self, sql: &'static str) -> Result<Option<Micros>> {
        self.read(move |c| row(c, sql, [], |r| r.get(0))).await
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

/// Where a request's records start in a [`WriteCtx`] ([`WriteCtx::mark`]).
#[derive(Clone, Copy)]
struct Mark(usize, usize, usize, usize);

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<WriteOp>,
    (notify, committed): (Arc<notices::Listeners>, broadcast::Sender<tail::Batch>),
    settings: StoreSettings,
    handoffs: Arc<Handoffs>,
    write_failed: Arc<Mutex<Option<String>>>,
) {
    let mut batch: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    let mut counts = counts::Deltas::default();
    let mut events_maybe_empty = events::none_yet(&conn);
    loop {
        // A batch may start with the give-backs of undelivered hand-offs (`handoff::deliver`).
        if batch.is_empty() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            batch.push(first);
        }
        while batch.len() < MAX_BATCH {
            let Ok(op) = rx.try_recv() else { break };
            batch.push(op);
        }
        let counts_before = std::mem::take(&mut counts);
        let mut ctx = WriteCtx::new(
            &conn,
            &settings,
            &handoffs,
            counts_before,
            events_maybe_empty,
        );
        if let Err(e) = sql::control(&conn, "BEGIN IMMEDIATE") {
            // Reply to everyone with the failure. Each request is called only for its reply: in
            // a doomed transaction it fails before its first statement (`whole.rs`), which
            // here, outside a transaction, would commit on its own.
            let msg = e.to_string();
            ctx.doomed = Some(msg.clone());
            for op in batch.drain(..) {
                let done = op(&mut ctx);
                done(Some(msg.clone()));
            }
            let _ = conn.execute_batch("ROLLBACK");
            ctx.undo(Mark(0, 0, 0, 0));
            counts = ctx.counts;
            *write_failed.lock() = Some(msg);
            continue;
        }
        let changes_before = conn.total_changes();
        let dones: Vec<Done> = batch
            .drain(..)
            .map(|op| {
                // SQLite may roll the whole transaction back itself (a full disk, an I/O error):
                // the requests after must not run outside one, where each would commit alone.
                if ctx.doomed.is_none() && conn.is_autocommit() {
                    ctx.doomed = Some("the database rolled the transaction back".into());
                }
                op(&mut ctx)
            })
            .collect();
        let commit = match ctx.doomed.take() {
            Some(e) => Some(e),
            // Rolled back by SQLite itself during the last request: the counts' sums must not
            // be written outside a transaction, where they would commit alone.
            None if conn.is_autocommit() => Some("the database rolled the transaction back".into()),
            None => match ctx.counts.flush(&conn) {
                Err(e) => Some(e.to_string()),
                Ok(()) => sql::control(&conn, "COMMIT").err().map(|e| e.to_string()),
            },
        };
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
            ctx.undo(Mark(0, 0, 0, 0));
        } else {
            // Events committed? (A rolled-back savepoint took its own out of the list.)
            events_maybe_empty &= ctx.events.is_empty();
        }
        {
            // Cleared only by a commit that wrote: one with nothing to write (an empty claim,
            // every poll) commits even on a full disk.
            let mut failed = write_failed.lock();
            if commit.is_some() || (failed.is_some() && conn.total_changes() != changes_before) {
                failed.clone_from(&commit);
            }
        }
        counts = std::mem::take(&mut ctx.counts);
        // The committed hand-offs first: the worker starts while the replies go out.
        handoff::deliver(std::mem::take(&mut ctx.handed), &mut batch);
        let mut notices = std::mem::take(&mut ctx.notices);
        // Before the notices: a tail woken by `Notice::Events` finds the batch already sent.
        if !ctx.events.is_empty() && committed.receiver_count() > 0 {
            let _ = committed.send(std::mem::take(&mut ctx.events).into());
        }
        for d in dones {
            d(commit.clone());
        }
        if notices.iter().any(|n| matches!(n, Notice::Changed { .. })) {
            notices.push(Notice::Events);
        }
        notify.send(&notices);
    }
}

fn load(conn: &Connection, id: &str) -> Result<Option<Job>> {
    row_opt(conn, stored::LOAD, [id], stored::JobRow::read)?
        .map(stored::JobRow::into_job)
        .transpose()
}

/// Job `id` as [`load`] reads it, for a round over several jobs: `Ok(None)` also when its record
/// does not read (a newer build's, a hand edit), logged as met by `what` and passed over (as
/// Redis's rounds pass it); `Err` only when the database fails. `Some(None)`: not stored.
fn load_readable(conn: &Connection, id: &str, what: &str) -> Result<Option<Option<Job>>> {
    match load(conn, id) {
        Ok(job) => Ok(Some(job)),
        Err(e) if crate::store::job_record::is_corrupt(&e) => {
            crate::store::job_record::log_unreadable(id, what, &e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn append_event(ctx: &mut WriteCtx<'_>, job: &Job, kind: EventKind) -> Result<()> {
    let mut ev = Event::for_job(job, kind);
    let insert = if ctx.events_maybe_empty {
        events::INSERT
    } else {
        events::INSERT_NEXT
    };
    exec(
        ctx.conn,
        insert,
        params![
            events::ChannelKey::of(&job.channel_id),
            stored::event_body(&ev, job.updated_at)?
        ],
    )?;
    let id = ctx.conn.last_insert_rowid();
    // A webhook delivery of this event, in the same transaction (notify): the full event.
    if crate::job::notify_spec::wants(job, kind) {
        let body = serde_json::to_string(&ev).map_err(json_err)?;
        deliveries::enqueue_in(ctx.conn, job, kind, id, &body)?;
    }
    // As `events` reads it back (`stored::read_event`), for the event tail.
    ev.id = id.to_string();
    ctx.events.push(ev);
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

impl Store for SqliteStore {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notify.subscribe()
    }

    fn subscribe_to(&self, wants: super::NoticeFilter) -> broadcast::Receiver<Notice> {
        self.notify.subscribe_to(wants)
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}
