//! The Redis backend: many runyard processes (API nodes, worker nodes) share one Redis.
//!
//! The status rules stay in Rust: a change loads the job, runs [`crate::job::apply`] and commits
//! with `lua/commit.lua`, a compare-and-set on the job's `version` that also updates the index
//! keys and appends the event to the global and the channel stream, atomically. A conflict means
//! another process wrote the job in between: load and apply again.
//!
//! # Keys (all under the configured prefix `P`, so several deployments can share one Redis)
//! - `P:job:{id}` hash: `v` version, `s` status, `r` runner, `q` queued_at, `c` channel,
//!   `k` idempotency key, `f` file hashes, `b` the job as JSON.
//! - `P:all`, `P:st:{STATUS}` sorted sets (score 0, ordered by id: UUID v7 is time-ordered) for
//!   listing (none for STARTING/RUNNING: listed from `P:lease`); `P:q:{runner}` the runner's
//!   queue by queued_at; `P:sched` SCHEDULED jobs by run_at;
//!   `P:lease` active jobs by lease expiry (and claim reservations, see `lua/claim.lua`);
//!   `P:fin` finished jobs by finished_at (retention).
//! - `P:idem:{key}` the job of an idempotency key; `P:fref:{hash}` the jobs referencing a file,
//!   `P:fhashes` every referenced file hash.
//! - `P:log:{id}` list of log lines, `P:logn:{id}` their sequence counter.
//! - `P:ev` the global event stream, `P:evc:{channel}` a channel's stream (same ids), trimmed
//!   with `XADD MAXLEN ~` and, for channels, expiring after `retention.events` without events.
//! - `P:token` fencing tokens (`INCR`); `P:notices` pub/sub of [`Notice`]s between processes;
//!   `P:replay:{sha256}` hook replay memory (`SET NX PX`).
//! - `P:schedule:{name}` a cron schedule (`v` version, `b` JSON), `P:sched:wake` names by wake
//!   time, `P:sched:names` every name (see `schedules.rs`, `lua/schedule_cas.lua`).
//! - `P:sig:{key}`, `P:sigid:{key}`, `P:sigseq`, `P:sigkeys`: readiness signals (`signals.rs`).
//! - `P:dlv:{n}`, `P:dlvlog:{n}`, `P:dlv:due`, `P:dlv:job:{id}`, `P:dlv:done`, `P:dlv:seq`:
//!   webhook deliveries (`deliveries.rs`).
//! - `P:waitk:{key}`, `P:waitdl`, `P:waitdue`, `P:waitgen`: waiting jobs (`waits.rs`).
//!
//! Time: every time the store writes or compares (lease expiries, the reaper's "expired",
//! run records, events) is Redis's clock, read with `TIME` every [`CLOCK_RESYNC`] and carried
//! forward with this process's monotonic clock in between ([`RedisStore::now`]); a node whose
//! wall clock agrees with Redis's within [`CLOCK_AGREE`] uses its own reading, so the records of
//! the nodes of one host stay exactly ordered. Leases written by one node are judged by another,
//! so they must not depend on each node's wall clock: a node whose clock is stepped forward
//! would otherwise reap every other node's live leases, and one stepped back would write leases
//! already expired.
//!
//! Connection loss: every command is retried with backoff for up to `store.retry` (claims fail
//! at once instead, so a worker stops claiming while Redis is away and its claim loop backs off);
//! [`Maintenance::health`] answers within a second either way.

mod counts;
mod deliveries;
mod notices;
mod replay;
mod schedules;
mod signals;
mod tail;

pub use tail::EventTail;
mod waits;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, RedisResult, Script};
use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::*;
use crate::job::{apply, now_us, ApplyCtx, Beat, Event, EventKind};

/// How many times a change is loaded and applied again after compare-and-set conflicts.
const CAS_TRIES: usize = 100;
/// Jobs deleted per retention script call.
const RETENTION_CHUNK: usize = 500;
/// Retention script calls per [`Maintenance::retention`] (bounds one pass).
const RETENTION_CHUNKS: usize = 40;
/// Ids examined per page when listing with a type filter.
const LIST_SCAN: usize = 10_000;
/// Active jobs this process last wrote, kept to skip a load before its next write of them.
const CACHE_MAX: usize = 16_384;
/// Most job writes the committer sends in one `commit.lua` call.
const COMMIT_BATCH: usize = 128;
/// Committer tasks: how many grouped `commit.lua` calls may be in flight at once.
const COMMITTERS: usize = 1;
/// How often [`RedisStore::now`] reads Redis's clock again.
const CLOCK_RESYNC: Duration = Duration::from_secs(10);
/// A wall clock this close to Redis's is taken as it is (µs).
const CLOCK_AGREE: Micros = 100_000;

/// What the Redis backend needs.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// The knobs every backend has.
    pub store: StoreSettings,
    /// A channel's event stream is deleted after this long without an event.
    pub channel_ttl: Duration,
    /// How long a command is retried while Redis cannot be reached.
    pub retry: Duration,
    /// How long one command may take.
    pub command_timeout: Duration,
}

impl RedisSettings {
    /// Settings with defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "runyard".into(),
            store: StoreSettings::default(),
            channel_ttl: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5),
        }
    }
}

struct Scripts {
    commit: Script,
    claim: Script,
    expired: Script,
    events: Script,
    logs_append: Script,
    logs_read: Script,
    retention: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            commit: Script::new(include_str!("lua/commit.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            expired: Script::new(include_str!("lua/expired.lua")),
            events: Script::new(include_str!("lua/events.lua")),
            logs_append: Script::new(include_str!("lua/logs_append.lua")),
            logs_read: Script::new(include_str!("lua/logs_read.lua")),
            retention: Script::new(include_str!("lua/retention.lua")),
        }
    }
}

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    s: RedisSettings,
    scripts: Scripts,
    notify: broadcast::Sender<Notice>,
    relay: mpsc::UnboundedSender<Notice>,
    down: AtomicBool,
    /// This process's id on the notice channel (its own notices are not relayed back to it).
    origin: String,
    /// The active jobs this process committed last (a worker's claim -> started -> finish): the
    /// next change starts from the cached copy, and a stale copy only costs a CAS conflict.
    cache: parking_lot::Mutex<std::collections::HashMap<Uuid, Job>>,
    /// To the committer tasks (group commit, see [`RedisStore::commit`]).
    commits: mpsc::UnboundedSender<Pending>,
    /// Redis's clock (µs) at a moment of this process's monotonic clock (see [`Self::now`]).
    clock: parking_lot::Mutex<Option<(Micros, Instant)>>,
    /// The last time [`Self::now`] answered: it never goes back within a process.
    clock_last: std::sync::atomic::AtomicI64,
    _stop: DropGuard,
}

/// One job write for `commit.lua`.
struct Write {
    /// The version the job had when loaded; `None` for a new job.
    expected: Option<u64>,
    job: Job,
    body: String,
    files: String,
    event: Option<(EventKind, String)>,
    /// The lease set already holds this job's lease expiry (active before and after, same
    /// expiry): `commit.lua` skips the write. Sound because the write only applies at the
    /// version it was computed from.
    lease_kept: bool,
    /// The webhook delivery of the event (`created_at` µs, newline, url), '' none: see
    /// `deliveries.rs`.
    delivery: String,
}

impl Write {
    fn new(
        expected: Option<u64>,
        old: Option<&Job>,
        job: Job,
        ev: Option<EventKind>,
    ) -> Result<Self> {
        let body = serde_json::to_string(&job).map_err(json_err)?;
        let files = if !job.files.is_empty() && old.is_none_or(|o| o.files != job.files) {
            let set: BTreeSet<&str> = job
                .files
                .values()
                .flatten()
                .map(|f| f.hash.as_str())
                .collect();
            set.into_iter().collect::<Vec<_>>().join(" ")
        } else {
            String::new()
        };
        let event = match ev {
            Some(kind) => Some((
                kind,
                serde_json::to_string(&Event::for_job(&job, kind)).map_err(json_err)?,
            )),
            None => None,
        };
        let lease_of = |j: &Job| {
            j.lease
                .as_ref()
                .filter(|_| j.status.is_active())
                .map(|l| l.expires_at)
        };
        let lease_kept = expected.is_some()
            && old.is_some_and(|o| lease_of(o).is_some() && lease_of(o) == lease_of(&job));
        let delivery = deliveries::commit_arg(&job, ev);
        Ok(Self {
            expected,
            job,
            body,
            files,
            event,
            lease_kept,
            delivery,
        })
    }

    /// The `WRITE_ARGS` values `commit.lua` receives for this write (see the script's header).
    fn args(&self) -> [String; WRITE_ARGS] {
        let j = &self.job;
        let lease = if self.lease_kept {
            "=".to_string()
        } else {
            opt(j
                .lease
                .as_ref()
                .filter(|_| j.status.is_active())
                .map(|l| l.expires_at))
        };
        [
            j.id.to_string(),
            opt(self.expected),
            j.version.to_string(),
            j.status.as_str().to_string(),
            j.runner.clone(),
            j.channel_id.clone(),
            j.queued_at.to_string(),
            opt(j.run_at),
            lease,
            opt(j.finished_at),
            if self.expected.is_none() {
                j.idempotency_key.clone().unwrap_or_default()
            } else {
                String::new()
            },
            self.files.clone(),
            self.body.clone(),
            self.event.as_ref().map(|e| e.1.clone()).unwrap_or_default(),
            if j.status == JobStatus::Success {
                j.emits.join("\n")
            } else {
                String::new()
            },
            j.job_type.clone(),
            self.delivery.clone(),
        ]
    }
}

/// The values `commit.lua` receives for one job write: `job` as changed from `old` (loaded at
/// version `expected`; both `None` for a submit), with the event of kind `ev`. Exposed for the
/// fuzz targets (`fuzz/fuzz_targets/redis_codec.rs`), which decode them back.
pub fn commit_args(
    expected: Option<u64>,
    old: Option<&Job>,
    job: &Job,
    ev: Option<EventKind>,
) -> Result<Vec<String>> {
    Ok(Write::new(expected, old, job.clone(), ev)?.args().to_vec())
}

/// A log line as `logs_append.lua` receives it: `stream|ts|line` (the script prefixes `seq|`).
pub fn log_entry(stream: LogStream, ts: Micros, line: &str) -> String {
    format!("{}|{ts}|{line}", stream_name(stream))
}

/// A stored log entry (`seq|stream|ts|line`, as `logs_read.lua` returns it) read back.
pub fn parse_log_entry(e: &str) -> Result<LogLine> {
    let mut it = e.splitn(4, '|');
    let bad = || StoreError::Backend("corrupt log entry".into());
    let seq = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let stream = match it.next().ok_or_else(bad)? {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => LogStream::Job,
    };
    let ts = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let line = it.next().unwrap_or("").to_string();
    Ok(LogLine {
        seq,
        stream,
        ts,
        line,
    })
}

#[derive(Debug)]
enum Reply {
    Ok,
    Conflict,
    Gone,
    Exists,
    Idem(String),
}

/// A listed job record, or `None` (reported) when it no longer reads as a job: one bad record
/// never fails a listing.
fn listable(body: &str) -> Option<Job> {
    match serde_json::from_str::<Job>(body) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(error = %e, "unreadable job record left out of a listing");
            None
        }
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("corrupt record: {e}"))
}

/// Errors worth retrying: the connection, or a Redis that is starting or failing over.
fn transient(e: &RedisError) -> bool {
    use ::redis::ErrorKind::*;
    matches!(
        e.kind(),
        IoError | BusyLoadingError | TryAgain | ClusterDown | MasterDown | ReadOnly
    ) || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Normalises an event id (`last_id`) of the Redis store to `ms-seq` (`ms` alone is `ms-0`).
pub fn parse_event_id(s: &str) -> Result<String> {
    let bad = || {
        StoreError::BadInput(format!(
            "invalid event id `{s}`: expected a stream id such as 1700000000000-0"
        ))
    };
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    let ms: u64 = ms.parse().map_err(|_| bad())?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    Ok(format!("{ms}-{seq}"))
}

/// The shortest try of a command, however little of `store.retry` is left.
const MIN_TRY: Duration = Duration::from_millis(250);

/// Values per job write in `commit.lua`'s arguments.
const WRITE_ARGS: usize = 17;

/// One caller's writes, waiting for the committer.
struct Pending {
    /// `WRITE_ARGS` values per write.
    args: Vec<String>,
    n: usize,
    tx: oneshot::Sender<Result<Vec<String>>>,
    /// The caller's `store.retry` runs out: not sent after it, and the batch's tries end by then.
    deadline: Instant,
}

/// Group commit: takes every pending caller's writes (up to `COMMIT_BATCH`) and sends them in
/// one script call, until the store is dropped.
async fn committer(
    store: Weak<RedisStore>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>>,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut n = first.n;
            let mut batch = vec![first];
            while n < COMMIT_BATCH {
                match rx.try_recv() {
                    Ok(p) => {
                        n += p.n;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        // A caller whose wait is over has been answered "unavailable": its writes must not be
        // sent any more.
        let now = Instant::now();
        let (batch, late): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| p.deadline > now);
        for p in late {
            let _ = p.tx.send(Err(StoreError::Unavailable(
                "redis: `store.retry` ran out before the write could be sent".into(),
            )));
        }
        let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
            continue;
        };
        let Some(store) = store.upgrade() else { return };
        let r = store.commit_batch(&batch, deadline).await;
        drop(store);
        match r {
            Ok(raw) => {
                let mut it = raw.into_iter();
                for p in batch {
                    let _ = p.tx.send(Ok(it.by_ref().take(p.n).collect()));
                }
            }
            Err(e) => {
                for p in batch {
                    let e = match &e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        other => StoreError::Backend(other.to_string()),
                    };
                    let _ = p.tx.send(Err(e));
                }
            }
        }
    }
}

impl RedisStore {
    /// Connects (retrying for up to `settings.retry`), checks the server, and starts relaying
    /// notices between processes.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>> {
        let client = ::redis::Client::open(settings.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("`redis`: {e}")))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(settings.command_timeout)
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(1000);
        let start = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut conn = loop {
            match ConnectionManager::new_with_config(client.clone(), cfg.clone()).await {
                Ok(c) => break c,
                Err(e) if transient(&e) && start.elapsed() + delay < settings.retry => {
                    tracing::warn!(error = %e, "redis not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to redis at {}: {e}",
                        redact(&settings.url)
                    )))
                }
            }
        };
        let info: String = ::redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis INFO: {e}")))?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("0")
            .trim()
            .to_string();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(StoreError::Unavailable(format!(
                "redis {version} is too old: runyard needs Redis 7.0 or later (stream trimming \
                 metadata used to detect gaps in event streams)"
            )));
        }
        let (notify, _) = broadcast::channel(4096);
        let (relay, relay_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let origin = Uuid::now_v7().simple().to_string();
        let channel = format!("{}:notices", settings.prefix);
        tokio::spawn(notices::publish(
            conn.clone(),
            channel.clone(),
            origin.clone(),
            relay_rx,
            stop.clone(),
        ));
        tokio::spawn(notices::subscribe(
            client,
            channel,
            origin.clone(),
            notify.clone(),
            stop.clone(),
        ));
        tracing::info!(url = %redact(&settings.url), prefix = %settings.prefix, %version, "redis store connected");
        let (commits, commits_rx) = mpsc::unbounded_channel();
        let commits_rx = Arc::new(tokio::sync::Mutex::new(commits_rx));
        Ok(Arc::new_cyclic(|me: &Weak<Self>| {
            for _ in 0..COMMITTERS {
                tokio::spawn(committer(me.clone(), commits_rx.clone()));
            }
            Self {
                conn,
                s: settings,
                scripts: Scripts::load(),
                notify,
                relay,
                down: AtomicBool::new(false),
                origin,
                cache: parking_lot::Mutex::new(std::collections::HashMap::new()),
                commits,
                clock: parking_lot::Mutex::new(None),
                clock_last: std::sync::atomic::AtomicI64::new(0),
                _stop: stop.drop_guard(),
            }
        }))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.s.prefix)
    }

    /// The store's time (µs since the epoch): Redis's clock, read with `TIME` at most every
    /// [`CLOCK_RESYNC`] and carried forward with the monotonic clock in between, so a step of
    /// this node's wall clock changes nothing. When this node's wall clock agrees with Redis's
    /// within [`CLOCK_AGREE`] at a reading, the wall clock's reading is the anchor instead (the
    /// processes of one host then agree exactly). While Redis cannot be read, the last anchor is
    /// carried forward; before any, the wall clock is used. Never goes back within a process.
    async fn now(&self) -> Micros {
        let anchor = *self.clock.lock();
        let t = match anchor {
            Some((at, when)) if when.elapsed() < CLOCK_RESYNC => {
                at.saturating_add(when.elapsed().as_micros() as i64)
            }
            _ => {
                let sent = Instant::now();
                let read: Result<(i64, i64)> = self
                    .exec(false, |mut c| async move {
                        ::redis::cmd("TIME").query_async(&mut c).await
                    })
                    .await;
                match read {
                    Ok((secs, us)) => {
                        let when = sent + sent.elapsed() / 2;
                        let wall = now_us().saturating_sub(when.elapsed().as_micros() as i64);
                        let redis = secs.saturating_mul(1_000_000).saturating_add(us);
                        let at = if redis.abs_diff(wall) <= CLOCK_AGREE as u64 {
                            wall
                        } else {
                            redis
                        };
                        *self.clock.lock() = Some((at, when));
                        at.saturating_add(when.elapsed().as_micros() as i64)
                    }
                    Err(_) => match anchor {
                        Some((at, when)) => at.saturating_add(when.elapsed().as_micros() as i64),
                        None => now_us(),
                    },
                }
            }
        };
        let last = self.clock_last.fetch_max(t, Ordering::AcqRel);
        t.max(last)
    }

    fn mark(&self, up: bool, err: &str) {
        let was_down = self.down.swap(!up, Ordering::AcqRel);
        if was_down && up {
            tracing::info!("redis reachable again");
        } else if !was_down && !up {
            tracing::warn!(error = %err, "redis unreachable: retrying with backoff");
        }
    }

    /// Members of the sorted set `key` scored from `min` to `max` (`-inf`/`+inf` allowed), at most
    /// `limit`, lowest score first.
    pub(crate) async fn zrange_by_score<T: ::redis::FromRedisValue>(
        &self,
        key: &str,
        min: impl ::redis::ToRedisArgs + Clone + Send + Sync,
        max: impl ::redis::ToRedisArgs + Clone + Send + Sync,
        limit: usize,
    ) -> Result<Vec<T>> {
        self.exec(true, |mut c| {
            let cmd = ::redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(min.clone())
                .arg(max.clone())
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .clone();
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// Every member of the sorted set `key`, lowest score first.
    pub(crate) async fn zset_members(&self, key: &str) -> Result<Vec<String>> {
        self.exec(true, |mut c| {
            let cmd = ::redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).clone();
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// The lowest score in the sorted set `key` (a due time), none when it is empty.
    pub(crate) async fn first_score(&self, key: &str) -> Result<Option<Micros>> {
        let first: Vec<(String, f64)> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(first.first().map(|(_, s)| *s as Micros))
    }

    /// Runs a command, retrying transient failures with backoff for up to `store.retry` (not
    /// at all when `retry` is false).
    async fn exec<T, F, Fut>(&self, retry: bool, f: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = retry.then(|| Instant::now() + self.s.retry);
        self.exec_until(deadline, f).await
    }

    /// Runs a command, retrying transient failures until `deadline` (once when `None`). The
    /// deadline bounds the whole wait, the tries themselves included: each try is cut at the
    /// time left (never more than `command_timeout`).
    async fn exec_until<T, F, Fut>(&self, deadline: Option<Instant>, mut f: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut delay = Duration::from_millis(25);
        loop {
            let per_try = match deadline {
                Some(d) => self
                    .s
                    .command_timeout
                    .min(d.saturating_duration_since(Instant::now()))
                    .max(MIN_TRY.min(self.s.command_timeout)),
                None => self.s.command_timeout,
            };
            let r = tokio::time::timeout(per_try, f(self.conn.clone())).await;
            let err = match r {
                Ok(Ok(v)) => {
                    if self.down.load(Ordering::Relaxed) {
                        self.mark(true, "");
                    }
                    return Ok(v);
                }
                Ok(Err(e)) if !transient(&e) => return Err(StoreError::Backend(e.to_string())),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "command timed out".to_string(),
            };
            self.mark(false, &err);
            let left = deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!("redis: {err}")));
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn load(&self, id: Uuid) -> Result<Option<(Job, String)>> {
        let key = self.key(&format!("job:{id}"));
        let body: Option<String> = self
            .exec(true, |mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("HGET")
                        .arg(key)
                        .arg("b")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        match body {
            None => Ok(None),
            Some(b) => Ok(Some((serde_json::from_str(&b).map_err(json_err)?, b))),
        }
    }

    async fn load_many(&self, ids: &[Uuid]) -> Result<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("job:{id}")))
            .collect();
        self.exec(true, |mut c| {
            let mut p = ::redis::pipe();
            for k in &keys {
                p.cmd("HGET").arg(k).arg("b");
            }
            async move { p.query_async(&mut c).await }
        })
        .await
    }

    /// Commits writes (each its own compare-and-set) and tells listeners about the committed ones.
    ///
    /// The writes go to the committer task, which sends the writes of every caller waiting at
    /// that moment in one `commit.lua` call (group commit): each write is still version-checked
    /// and applied on its own, only the script call is shared.
    async fn commit(&self, writes: &[Write]) -> Result<Vec<Reply>> {
        if writes.is_empty() {
            return Ok(vec![]);
        }
        let mut args = Vec::with_capacity(writes.len() * WRITE_ARGS);
        for w in writes {
            args.extend(w.args());
        }
        let (tx, rx) = oneshot::channel();
        self.commits
            .send(Pending {
                args,
                n: writes.len(),
                tx,
                deadline: Instant::now() + self.s.retry.max(MIN_TRY),
            })
            .map_err(|_| StoreError::Unavailable("redis: store closed".into()))?;
        let raw = rx
            .await
            .map_err(|_| StoreError::Unavailable("redis: committer stopped".into()))??;
        let mut out = Vec::with_capacity(raw.len());
        let mut any = false;
        for (w, r) in writes.iter().zip(raw) {
            let reply = if r.starts_with("OK:") {
                Reply::Ok
            } else if let Some(other) = r.strip_prefix("IDEM:") {
                Reply::Idem(other.to_string())
            } else {
                match r.as_str() {
                    "CONFLICT" => Reply::Conflict,
                    "GONE" => Reply::Gone,
                    "EXISTS" => Reply::Exists,
                    other => {
                        return Err(StoreError::Backend(format!("commit: unexpected `{other}`")))
                    }
                }
            };
            if matches!(reply, Reply::Ok) {
                self.remember(&w.job);
            } else {
                self.cache.lock().remove(&w.job.id);
            }
            if matches!(reply, Reply::Ok) {
                if let Some((kind, _)) = &w.event {
                    any = true;
                    if *kind == EventKind::Status {
                        if w.job.status == JobStatus::Queued {
                            // Other processes heard of it from commit.lua itself.
                            let _ = self.notify.send(Notice::Queued {
                                runner: w.job.runner.clone(),
                            });
                        }
                        self.tell(Notice::Changed {
                            job_id: w.job.id,
                            status: w.job.status,
                        });
                    }
                }
            }
            out.push(reply);
        }
        if any {
            self.tell(Notice::Events);
        }
        Ok(out)
    }

    /// Sends the writes of several callers in one `commit.lua` call; one reply per write.
    async fn commit_batch(&self, batch: &[Pending], deadline: Instant) -> Result<Vec<String>> {
        let p = &self.s;
        let n: usize = batch.iter().map(|b| b.n).sum();
        let raw: Vec<String> = self
            .exec_until(Some(deadline), |mut c| {
                let mut inv = self.scripts.commit.prepare_invoke();
                inv.arg(&p.prefix)
                    .arg(p.store.global_limit)
                    .arg(p.store.channel_limit)
                    .arg(p.channel_ttl.as_millis() as u64)
                    .arg(n)
                    .arg(&self.origin);
                for b in batch {
                    for a in &b.args {
                        inv.arg(a);
                    }
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if raw.len() != n {
            return Err(StoreError::Backend(format!(
                "commit: {} replies for {n} writes",
                raw.len()
            )));
        }
        Ok(raw)
    }

    fn remember(&self, job: &Job) {
        let mut c = self.cache.lock();
        if job.status.is_active() {
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(job.id, job.clone());
        } else {
            c.remove(&job.id);
        }
    }

    fn tell(&self, n: Notice) {
        let _ = self.relay.send(n.clone());
        let _ = self.notify.send(n);
    }

    fn actx(&self, now: Micros) -> ApplyCtx {
        ApplyCtx::at(now, self.s.store.progress_interval.as_micros() as i64)
    }

    /// Loads, changes with `f` and commits one job, again after each conflict.
    async fn update<F>(&self, id: Uuid, mut f: F) -> Result<Job>
    where
        F: FnMut(&mut Job, Micros) -> Result<Option<EventKind>>,
    {
        let mut mine: Option<(String, Job)> = None;
        for _ in 0..CAS_TRIES {
            let cached = self.cache.lock().get(&id).cloned();
            let (job, raw) = match cached {
                Some(j) => (j, String::new()),
                None => match self.load(id).await? {
                    Some(v) => v,
                    None => return Err(StoreError::NotFound),
                },
            };
            // A commit whose reply was lost (connection dropped) and that was sent again: the
            // stored job is exactly what we wrote.
            if let Some((body, j)) = mine.take() {
                if body == raw {
                    return Ok(j);
                }
            }
            let from_cache = raw.is_empty();
            let mut next = job.clone();
            let ev = match f(&mut next, self.now().await) {
                Ok(ev) => ev,
                // A refusal must come from the stored job, not from a stale copy.
                Err(_) if from_cache => {
                    self.cache.lock().remove(&id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let w = Write::new(Some(job.version), Some(&job), next, ev)?;
            match self.commit(std::slice::from_ref(&w)).await?.pop() {
                Some(Reply::Ok) => return Ok(w.job),
                Some(Reply::Gone) => return Err(StoreError::NotFound),
                _ => {
                    mine = Some((w.body, w.job));
                    tokio::task::yield_now().await;
                }
            }
        }
        Err(StoreError::Backend(format!(
            "job {id}: gave up after {CAS_TRIES} conflicting writes"
        )))
    }

    async fn apply_cmd(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.update(id, |job, now| {
            let ctx = self.actx(now);
            Ok(apply(job, cmd.clone(), &ctx)?)
        })
        .await
    }

    async fn next_token(&self) -> Result<u64> {
        let key = self.key("token");
        self.exec(true, |mut c| {
            let key = key.clone();
            async move { ::redis::cmd("INCR").arg(key).query_async(&mut c).await }
        })
        .await
    }

    /// Lists STARTING or RUNNING jobs. They have no status index (it would cost four writes
    /// per job): every active job is in the lease set, which is small (at most the jobs the
    /// workers hold, plus claim reservations), so its ids are read whole, sorted newest first,
    /// and the jobs loaded a page at a time and filtered by status.
    async fn list_active(&self, q: ListQuery) -> Result<JobPage> {
        let ids = self.zset_members(&self.key("lease")).await?;
        let mut ids: Vec<Uuid> = ids
            .iter()
            .filter_map(|s| Uuid::parse_str(s).ok())
            .filter(|id| q.cursor.is_none_or(|c| *id < c))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let want = q.limit + 1;
        let mut jobs: Vec<Job> = Vec::new();
        for chunk in ids.chunks((q.limit + 1).clamp(16, 1000)) {
            for b in self.load_many(chunk).await?.into_iter().flatten() {
                let Some(j) = listable(&b) else { continue };
                if Some(j.status) == q.status
                    && q.job_type
                        .as_deref()
                        .is_none_or(|g| runyard_runners::glob_match(g, &j.job_type))
                {
                    jobs.push(j);
                    if jobs.len() >= want {
                        break;
                    }
                }
            }
            if jobs.len() >= want {
                break;
            }
        }
        let next_cursor = if jobs.len() > q.limit {
            jobs.truncate(q.limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// The settings in use.
    pub fn settings(&self) -> &RedisSettings {
        &self.s
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn submit(&self, job: Job) -> Result<Submitted> {
        for _ in 0..3 {
            let w = Write::new(None, None, job.clone(), Some(EventKind::Status))?;
            match self.commit(std::slice::from_ref(&w)).await?.pop() {
                Some(Reply::Ok) => {
                    if w.job.status == JobStatus::Waiting {
                        crate::waiting::counters()
                            .entered
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(Submitted {
                        job: w.job,
                        created: true,
                    });
                }
                // Our own submit, sent again after a lost reply.
                Some(Reply::Exists) => {
                    if let Some((j, _)) = self.load(job.id).await? {
                        return Ok(Submitted {
                            job: j,
                            created: true,
                        });
                    }
                }
                Some(Reply::Idem(other)) => {
                    let other = Uuid::parse_str(&other)
                        .map_err(|_| StoreError::Backend("corrupt idempotency key".into()))?;
                    if let Some((j, _)) = self.load(other).await? {
                        return Ok(Submitted {
                            job: j,
                            created: false,
                        });
                    }
                    // Deleted by retention in between: try again.
                }
                other => return Err(StoreError::Backend(format!("submit: unexpected {other:?}"))),
            }
        }
        Err(StoreError::Backend(
            "submit: the idempotency key keeps changing".into(),
        ))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>> {
        Ok(self.load(id).await?.map(|(j, _)| j))
    }

    async fn list(&self, q: ListQuery) -> Result<JobPage> {
        if q.status.is_some_and(|s| s.is_active()) {
            return self.list_active(q).await;
        }
        let key = match q.status {
            Some(s) => self.key(&format!("st:{}", s.as_str())),
            None => self.key("all"),
        };
        let mut jobs: Vec<Job> = Vec::new();
        let mut cursor = q.cursor.map(|c| c.to_string());
        let mut scanned = 0usize;
        let want = q.limit + 1;
        let batch = (q.limit + 1).clamp(16, 1000);
        loop {
            let max = match &cursor {
                Some(c) => format!("({c}"),
                None => "+".to_string(),
            };
            let ids: Vec<String> = self
                .exec(true, |mut c| {
                    let (key, max) = (key.clone(), max.clone());
                    async move {
                        ::redis::cmd("ZRANGE")
                            .arg(key)
                            .arg(max)
                            .arg("-")
                            .arg("BYLEX")
                            .arg("REV")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(batch)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            let uuids: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
            let bodies = self.load_many(&uuids).await?;
            for b in bodies.into_iter().flatten() {
                let Some(j) = listable(&b) else { continue };
                if q.job_type
                    .as_deref()
                    .is_none_or(|g| runyard_runners::glob_match(g, &j.job_type))
                {
                    jobs.push(j);
                    if jobs.len() >= want {
                        break;
                    }
                }
            }
            scanned += ids.len();
            if jobs.len() >= want || ids.len() < batch {
                break;
            }
            cursor = ids.last().cloned();
            if scanned >= LIST_SCAN {
                // A sparse filter: return a short page and let the client continue from here.
                let next = cursor.as_deref().and_then(|c| Uuid::parse_str(c).ok());
                return Ok(JobPage {
                    jobs,
                    next_cursor: next,
                });
            }
        }
        let next_cursor = if jobs.len() > q.limit {
            jobs.truncate(q.limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn apply(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.apply_cmd(id, cmd).await
    }
}

#[async_trait]
impl JobQueue for RedisStore {
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
        let reserve_until = self.now().await + lease_ttl.as_micros() as i64;
        // While Redis is away, fail at once: the worker backs off instead of piling up claims.
        let retry = !self.down.load(Ordering::Relaxed);
        let picked: Vec<::redis::Value> = self
            .exec(retry, |mut c| {
                let mut inv = self.scripts.claim.prepare_invoke();
                inv.arg(&self.s.prefix)
                    .arg(runner)
                    .arg(max)
                    .arg(reserve_until);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if picked.is_empty() {
            return Ok(vec![]);
        }
        // The claim's time is taken once the jobs are picked: a job requeued (its previous run
        // ended) while the pick waited for Redis is never recorded as claimed before that end.
        let now = self.now().await;
        let lease_until = now + lease_ttl.as_micros() as i64;
        let first: u64 = ::redis::from_redis_value(&picked[0])
            .map_err(|e| StoreError::Backend(format!("claim: {e}")))?;
        let mut writes = Vec::new();
        for (i, chunk) in picked[1..].chunks(3).enumerate() {
            let body: String = ::redis::from_redis_value(&chunk[2])
                .map_err(|e| StoreError::Backend(format!("claim: {e}")))?;
            let job: Job = serde_json::from_str(&body).map_err(json_err)?;
            let mut next = job.clone();
            let cmd = Command::Claim {
                worker: worker.to_string(),
                token: first + i as u64,
                lease_until,
            };
            match apply(&mut next, cmd, &self.actx(now)) {
                Ok(ev) => writes.push(Write::new(Some(job.version), Some(&job), next, ev)?),
                // Not QUEUED any more: the reaper drops the reservation.
                Err(e) => tracing::debug!(job_id = %job.id, error = %e, "picked job not claimable"),
            }
        }
        let replies = self.commit(&writes).await?;
        let mut out = Vec::with_capacity(writes.len());
        for (w, r) in writes.into_iter().zip(replies) {
            match r {
                Reply::Ok => out.push(w.job),
                Reply::Conflict => {
                    // Written in between (e.g. a file attached): claim again if still QUEUED.
                    let token = w.job.lease.as_ref().map(|l| l.token).unwrap_or_default();
                    let cmd = Command::Claim {
                        worker: worker.to_string(),
                        token,
                        lease_until,
                    };
                    match self.apply_cmd(w.job.id, cmd).await {
                        Ok(j) => out.push(j),
                        Err(e) => {
                            tracing::debug!(job_id = %w.job.id, error = %e, "claim lost a race")
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        worker: &str,
        held: &[(Uuid, u64)],
        lease_ttl: Duration,
    ) -> Result<Vec<Uuid>> {
        let mut lost = Vec::new();
        let mut todo: Vec<(Uuid, u64)> = held.to_vec();
        for _ in 0..10 {
            if todo.is_empty() {
                break;
            }
            let ids: Vec<Uuid> = todo.iter().map(|(id, _)| *id).collect();
            let bodies = self.load_many(&ids).await?;
            let now = self.now().await;
            let until = now + lease_ttl.as_micros() as i64;
            let mut writes = Vec::new();
            for ((id, token), body) in todo.iter().zip(bodies) {
                let Some(body) = body else {
                    lost.push(*id);
                    continue;
                };
                let job: Job = serde_json::from_str(&body).map_err(json_err)?;
                let mut next = job.clone();
                match crate::job::heartbeat(&mut next, worker, *token, until, &self.actx(now)) {
                    Beat::Renewed => {
                        writes.push(Write::new(Some(job.version), Some(&job), next, None)?)
                    }
                    Beat::Finishing => {}
                    Beat::Lost => lost.push(*id),
                }
            }
            let replies = self.commit(&writes).await?;
            let mut again = Vec::new();
            for (w, r) in writes.iter().zip(replies) {
                match r {
                    Reply::Ok => {}
                    Reply::Gone => lost.push(w.job.id),
                    _ => again.push((
                        w.job.id,
                        w.job.lease.as_ref().map(|l| l.token).unwrap_or_default(),
                    )),
                }
            }
            todo = again;
        }
        Ok(lost)
    }

    async fn adopt(&self, id: Uuid, worker: &str, lease_ttl: Duration) -> Result<Job> {
        let token = self.next_token().await?;
        self.update(id, |job, now| {
            let cmd = Command::Adopt {
                worker: worker.to_string(),
                token,
                lease_until: now + lease_ttl.as_micros() as i64,
            };
            Ok(apply(job, cmd, &self.actx(now))?)
        })
        .await
    }

    async fn promote_due(&self, max: usize) -> Result<usize> {
        let key = self.key("sched");
        let now = self.now().await;
        let ids: Vec<String> = self.zrange_by_score(&key, "-inf", now, max).await?;
        let mut n = 0;
        for id in ids.iter().filter_map(|s| Uuid::parse_str(s).ok()) {
            // Several nodes promote at once: the losers are refused, which is fine.
            match self.apply_cmd(id, Command::Promote).await {
                Ok(_) => n += 1,
                Err(StoreError::Transition(_)) => {}
                Err(StoreError::NotFound) => {
                    // An entry without its job (deleted by hand): drop it, or it comes back.
                    let (key, id) = (key.clone(), id.to_string());
                    let _: i64 = self
                        .exec(true, |mut c| {
                            let (key, id) = (key.clone(), id.clone());
                            async move {
                                ::redis::cmd("ZREM")
                                    .arg(key)
                                    .arg(id)
                                    .query_async(&mut c)
                                    .await
                            }
                        })
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    async fn next_due(&self) -> Result<Option<Micros>> {
        self.first_score(&self.key("sched")).await
    }

    async fn expired(&self, max: usize) -> Result<Vec<Job>> {
        let now = self.now().await;
        let raw: Vec<String> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.expired.prepare_invoke();
                inv.arg(&self.s.prefix).arg(now).arg(max);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        raw.chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| serde_json::from_str(&c[1]).map_err(json_err))
            .collect()
    }
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::Job => "job",
    }
}

#[async_trait]
impl LogStore for RedisStore {
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let entries: Vec<String> = lines
            .into_iter()
            .map(|(s, ts, line)| log_entry(s, ts, &line))
            .collect();
        let keep = self.s.store.log_lines_per_job.max(1);
        let _: i64 = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.logs_append.prepare_invoke();
                inv.arg(&self.s.prefix).arg(id.to_string()).arg(keep);
                for e in &entries {
                    inv.arg(e);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let raw: Vec<String> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.logs_read.prepare_invoke();
                inv.arg(&self.s.prefix)
                    .arg(id.to_string())
                    .arg(after)
                    .arg(limit);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        raw.iter().map(|e| parse_log_entry(e)).collect()
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let last = last_id.map(parse_event_id).transpose()?.unwrap_or_default();
        let chan = channel.unwrap_or("").to_string();
        let now_ms = self.now().await / 1000;
        let raw: Vec<String> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.events.prepare_invoke();
                inv.arg(&self.s.prefix)
                    .arg(&chan)
                    .arg(&last)
                    .arg(limit.max(1))
                    .arg(now_ms)
                    .arg(self.s.channel_ttl.as_millis() as u64);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let mut out = Vec::with_capacity(raw.len() / 2 + 1);
        let mut it = raw.into_iter();
        if let Some(resync) = it.next().filter(|r| !r.is_empty()) {
            let mut ev = Event::resync(&chan);
            ev.id = resync;
            out.push(ev);
        }
        while let (Some(id), Some(body)) = (it.next(), it.next()) {
            let mut ev: Event = serde_json::from_str(&body).map_err(json_err)?;
            ev.id = id;
            out.push(ev);
        }
        Ok(out)
    }

    async fn last_event_id(&self) -> Result<Option<String>> {
        self.newest_event_id().await.map(Some)
    }
}

#[async_trait]
impl Maintenance for RedisStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        for _ in 0..RETENTION_CHUNKS {
            let n: u64 = self
                .exec(true, |mut c| {
                    let mut inv = self.scripts.retention.prepare_invoke();
                    inv.arg(&self.s.prefix)
                        .arg(finished_before)
                        .arg(RETENTION_CHUNK);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
            report.jobs += n;
            if (n as usize) < RETENTION_CHUNK {
                break;
            }
        }
        // `MAXLEN ~` at append keeps the global stream near its limit; trim it exactly here.
        let key = self.key("ev");
        let limit = self.s.store.global_limit;
        report.events = self
            .exec(true, |mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("XTRIM")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(report)
    }

    async fn file_hashes(&self) -> Result<HashSet<String>> {
        let key = self.key("fhashes");
        let mut out = HashSet::new();
        let mut cursor: u64 = 0;
        // Bounded: a set of a million hashes takes a thousand calls.
        for _ in 0..1_000_000 {
            let (next, batch): (u64, Vec<String>) = self
                .exec(true, |mut c| {
                    let key = key.clone();
                    async move {
                        ::redis::cmd("SSCAN")
                            .arg(key)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            out.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn health(&self) -> Result<()> {
        let mut c = self.conn.clone();
        match tokio::time::timeout(
            Duration::from_secs(1),
            ::redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.mark(true, "");
                Ok(())
            }
            Ok(Err(e)) => {
                self.mark(false, &e.to_string());
                Err(StoreError::Unavailable(format!("redis: {e}")))
            }
            Err(_) => {
                self.mark(false, "ping timed out");
                Err(StoreError::Unavailable(
                    "redis: no answer to PING within 1s".into(),
                ))
            }
        }
    }
}

impl Store for RedisStore {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notify.subscribe()
    }

    fn backend_name(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("17").unwrap(), "17-0");
        assert_eq!(
            parse_event_id("1700000000000-3").unwrap(),
            "1700000000000-3"
        );
        assert!(parse_event_id("x-1").is_err());
        assert!(parse_event_id("-1").is_err());
    }
}
