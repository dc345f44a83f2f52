//! The Redis backend: many runyard processes (API nodes, worker nodes) share one Redis.
//!
//! The status rules stay in Rust: a change loads the job, runs [`crate::job::apply`] and commits
//! with `lua/commit.lua`, a compare-and-set on the job's `version` that also updates the index
//! keys and appends the event to the global stream and the channel's, atomically. A conflict
//! means another process wrote the job in between: load and apply again.
//!
//! # Keys (all under the configured prefix `P`, so several deployments can share one Redis)
//! - `P:job:{id}` hash: `v` version, `s` status, `r` runner, `q` queued_at, `c` channel,
//!   `k` idempotency key, `f` file hashes, `b` the job as JSON.
//! - `P:all`, `P:st:{STATUS}` sorted sets (score 0, ordered by id: UUID v7 is time-ordered) for
//!   listing (none for STARTING/RUNNING: listed from `P:lease`); `P:q:{runner}` the runner's
//!   queue by queued_at; `P:sched` SCHEDULED jobs by run_at;
//!   `P:lease` active jobs by lease expiry (and cancelled jobs whose worker still holds the
//!   lease while it stops the work, and claim reservations, see `lua/claim.lua`);
//!   `P:fin` finished jobs by finished_at (retention).
//! - `P:jch:{channel}` the jobs of a channel that is not their own id (lex, as `P:all`), and
//!   `P:jchidx`, `P:jchidx:lock` how far it holds the global stream and its rebuild's lock: the
//!   channel index, derived from `P:ev` (see `chanidx.rs`, `lua/chanidx.lua`).
//! - `P:idem:{key}` the job of an idempotency key; `P:fref:{hash}` the jobs referencing a file,
//!   `P:fhashes` every referenced file hash.
//! - `P:log:{id}` list of log lines, `P:logn:{id}` their sequence counter.
//! - `P:ev` the global event stream (`XADD MAXLEN ~`); a channel's events (the global ids),
//!   expiring after `retention.events` without events: `P:evc:{channel}` its stream or
//!   `P:evl:{channel}` its list (`store.channel_events`; both read, see `lua/commit.lua`,
//!   `events.lua`), `P:evlsince`, `P:evcsweep`, `P:evcgone` (`evc_sweep.lua`).
//! - `P:token` fencing tokens (`INCR`); `P:notices` pub/sub of [`Notice`]s between processes;
//!   `P:replay:{sha256}` hook replay memory (`SET NX PX`); `P:master_key_check` the check value
//!   of the deployment's master key (`keycheck.rs`).
//! - `P:schedule:{name}` a cron schedule (`v` version, `b` JSON), `P:sched:wake` names by wake
//!   time, `P:sched:names` every name (see `schedules.rs`, `lua/schedule_cas.lua`).
//! - `P:sig:{key}`, `P:sigid:{key}`, `P:sigseq`, `P:sigkeys`: readiness signals (`signals.rs`).
//! - `P:dlv:{n}`, `P:dlvlog:{n}`, `P:dlv:pend`, `P:dlv:ep:{endpoint id}`, `P:dlv:eps`,
//!   `P:dlv:job:{id}`, `P:dlv:done`, `P:dlv:seq` (and the earlier layout's `P:dlv:due`, moved by
//!   the claims): webhook deliveries (`deliveries.rs`).
//! - `P:waitk:{key}`, `P:waitdl`, `P:waitdue`, `P:waitgen`: waiting jobs (`waits.rs`).
//!
//! Scripts (`lua/*.lua`) take the keys they touch through `KEYS`, named in Rust, and their
//! arguments in a fixed order documented in each script's header and read into named locals at
//! its top. Keys that only the script can know, because they are named by what it reads (the
//! jobs popped from a queue or found in an index, a delivery's number from its counter), are
//! built in the script from a prefix given as an argument: on Redis Cluster that needs every key
//! in one hash slot (a prefix with a hash tag, e.g. `{runyard}`).
//!
//! Time: every time the store writes or compares (lease expiries, the reaper's "expired",
//! run records, events) is Redis's clock, read with `TIME` every [`CLOCK_RESYNC`] and carried
//! forward with this process's monotonic clock in between ([`RedisStore::now`]); a node whose
//! wall clock agrees with Redis's within [`clock::CLOCK_AGREE`] uses its own reading, so the records of
//! the nodes of one host stay exactly ordered. Leases written by one node are judged by another,
//! so they must not depend on each node's wall clock: a node whose clock is stepped forward
//! would otherwise reap every other node's live leases, and one stepped back would write leases
//! already expired.
//!
//! Connection loss: every command is retried with backoff for up to `store.retry` (claims fail
//! at once instead, so a worker stops claiming while Redis is away and its claim loop backs off);
//! [`Maintenance::health`] answers within a second either way.

mod activity;
mod batch;
mod chanidx;
mod claim_back;
mod client;
mod clock;
mod commit;
mod conn;
use conn::transient;
mod counts;
mod deliveries;
mod dlv_list;
mod events;
mod handover;
mod hints;
mod jobs;
mod keycheck;
pub use keycheck::KeyJudge;
mod logs;
mod notices;
mod queue;
mod records;
mod replay;
mod reply;
mod retention;
mod schedules;
mod server_info;
mod settings;
mod signals;
mod start;
mod tail;

use commit::{committer, Pending, CAS_TRIES, COMMITTERS, COMMIT_QUEUE};
pub use events::parse_event_id;
pub use logs::{log_entry, parse_log_entry};
pub use records::read_job_record;
use server_info::{check_at_start, redact, server_version, warn_if_evicting};
pub use settings::RedisSettings;
pub use tail::EventTail;
pub use write::{commit_args, read_event_record};
mod waits;
mod write;

use clock::clock_anchor;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, RedisResult, Script};
use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::*;
use crate::job::{apply, now_us, ApplyCtx, Beat, Event, EventKind};
use crate::store::job_record::json_err;

/// Notices waiting for the publisher (`notices.rs`), which folds up to 4096 into one message:
/// beyond, a notice is dropped rather than queued (notices are hints).
const RELAY_QUEUE: usize = 8192;
/// How long "no webhook delivery stored" is believed without asking again (see
/// [`RedisStore::dlv_idle`]): the delivery loop's idle poll.
const DLV_IDLE: Duration = Duration::from_secs(1);
/// How often [`RedisStore::now`] reads Redis's clock again.
const CLOCK_RESYNC: Duration = Duration::from_secs(10);
/// How long [`RedisStore::now`] waits for Redis's clock before it carries the last reading.
const CLOCK_READ_WAIT: Duration = Duration::from_millis(500);

/// Redis's time now, from a reading `at` taken at `when`, carried by this node's monotonic clock.
fn carried((at, when): (Micros, Instant)) -> Micros {
    at.saturating_add(when.elapsed().as_micros() as i64)
}

struct Scripts {
    commit: Script,
    claim: Script,
    expired: Script,
    events: Script,
    logs_append: Script,
    logs_read: Script,
    retention: Script,
    chanidx: Script,
    unhand: Script,
}

impl Scripts {
    fn load() -> Self {
        Self {
            commit: Script::new(concat!(
                include_str!("lua/sig_ids.lua"),
                include_str!("lua/commit.lua")
            )),
            claim: Script::new(include_str!("lua/claim.lua")),
            expired: Script::new(include_str!("lua/expired.lua")),
            events: Script::new(include_str!("lua/events.lua")),
            logs_append: Script::new(include_str!("lua/logs_append.lua")),
            logs_read: Script::new(include_str!("lua/logs_read.lua")),
            retention: Script::new(include_str!("lua/retention.lua")),
            chanidx: Script::new(include_str!("lua/chanidx.lua")),
            unhand: Script::new(include_str!("lua/unhand.lua")),
        }
    }
}

/// The Redis store.
pub struct RedisStore {
    conn: conn::SharedConn,
    /// What every connection of the store is made from (`client.rs`: the URL, TLS's roots).
    client: ::redis::Client,
    s: RedisSettings,
    scripts: Scripts,
    notify: broadcast::Sender<Notice>,
    /// To the notice publisher (bounded by [`RELAY_QUEUE`]).
    relay: mpsc::Sender<Notice>,
    down: AtomicBool,
    /// This process's id on the notice channel (its own notices are not relayed back to it).
    origin: String,
    /// The active jobs this process committed last (a worker's claim -> started -> finish): the
    /// next change starts from the cached copy, and a stale copy only costs a CAS conflict.
    cache: parking_lot::Mutex<std::collections::HashMap<Uuid, Job>>,
    /// To the committer tasks (group commit, see [`RedisStore::commit`]).
    commits: mpsc::Sender<Pending>,
    /// The keys and key prefixes every `commit.lua` call declares (built once, see
    /// `write::SharedKeys`).
    shared: write::SharedKeys,
    /// When the delivery loop last found no webhook delivery stored, and [`Self::dlv_gen`] then:
    /// the loop asks after every commit, and until this process commits a delivery (which bumps
    /// the generation) or [`DLV_IDLE`] passes the answer stays "none" without a round trip.
    /// Another process's new delivery is taken by that process at once, by this one within
    /// [`DLV_IDLE`].
    dlv_idle: parking_lot::Mutex<Option<(Instant, u64)>>,
    /// The channels whose stream TTL this process refreshed, and when (see
    /// `RedisStore::ttl_due` in commit.rs).
    ttl_set: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
    /// The runner queues known to be empty (see `hints.rs`): a claim of one costs no round trip.
    hints: Arc<hints::QueueHints>,
    /// When this process last set `P:evwant` (see `RedisStore::want_events` in events.rs).
    ev_want: parking_lot::Mutex<Option<Instant>>,
    /// When this process last swept channel streams (`RedisStore::sweep_due`, retention.rs).
    sweep_at: parking_lot::Mutex<Option<Instant>>,
    /// Bumped by each commit of this process that stores a webhook delivery.
    dlv_gen: std::sync::atomic::AtomicU64,
    /// Redis's clock (µs) at a moment of this process's monotonic clock (see [`Self::now`]).
    clock: parking_lot::Mutex<Option<(Micros, Instant)>>,
    /// The last time [`Self::now`] answered: it never goes back within a process.
    clock_last: std::sync::atomic::AtomicI64,
    /// Parked workers and jobs handed over to them (`handover.rs`), unless switched off.
    handover: Option<handover::Handover>,
    /// The running node's watch over the master key check value (`keycheck.rs`).
    key_watch: keycheck::KeyWatch,
    /// The last write probe of `health` (retention.rs `takes_writes`): when, and its refusal.
    write_probe: parking_lot::Mutex<Option<(Instant, Option<&'static str>)>>,
    _stop: DropGuard,
}

/// The shortest try of a command, however little of `store.retry` is left.
const MIN_TRY: Duration = Duration::from_millis(250);

impl RedisStore {
    /// Connects (retrying for up to `settings.retry`), checks the server, and starts relaying
    /// notices between processes.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>> {
        let client = client::client(&settings)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(settings.command_timeout)
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(1000);
        // The start waits for Redis within `store.retry` in all: reachable (the connection),
        // then taking writes (the check).
        let start_deadline = Instant::now() + settings.retry;
        let conn =
            conn::SharedConn::connect(client.clone(), cfg, settings.retry, &redact(&settings.url))
                .await?;
        let version = server_version(&conn, start_deadline).await?;
        let origin = Uuid::now_v7().simple().to_string();
        check_at_start(&conn, &settings.prefix, &origin, start_deadline).await?;
        warn_if_evicting(&mut conn.get()).await;
        let (notify, _) = broadcast::channel(4096);
        let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let stop = CancellationToken::new();
        let hints = Arc::new(hints::QueueHints::default());
        let key_wake = Arc::new(tokio::sync::Notify::new());
        let to = notices::Listeners {
            notify: notify.clone(),
            hints: hints.clone(),
            resubscribed: key_wake.clone(),
        };
        notices::start(
            conn.clone(),
            client.clone(),
            &settings.prefix,
            &origin,
            relay_rx,
            to,
            &stop,
        );
        tracing::info!(url = %redact(&settings.url), prefix = %settings.prefix, %version, "redis store connected");
        let (commits, commits_rx) = mpsc::channel(COMMIT_QUEUE);
        let commits_rx = Arc::new(tokio::sync::Mutex::new(commits_rx));
        Ok(Arc::new_cyclic(|me: &Weak<Self>| {
            for _ in 0..COMMITTERS {
                tokio::spawn(committer(me.clone(), commits_rx.clone()));
            }
            if settings.channel_index {
                tokio::spawn(chanidx::maintain(me.clone(), stop.clone()));
            }
            Self {
                conn,
                shared: write::SharedKeys::new(&settings.prefix),
                handover: handover::Handover::new(me, client.clone(), &settings, &origin, &stop),
                client,
                s: settings,
                scripts: Scripts::load(),
                notify,
                relay,
                down: AtomicBool::new(false),
                origin,
                cache: parking_lot::Mutex::new(std::collections::HashMap::new()),
                commits,
                dlv_idle: parking_lot::Mutex::new(None),
                ttl_set: parking_lot::Mutex::new(std::collections::HashMap::new()),
                hints,
                ev_want: parking_lot::Mutex::new(None),
                sweep_at: parking_lot::Mutex::new(None),
                dlv_gen: std::sync::atomic::AtomicU64::new(0),
                clock: parking_lot::Mutex::new(None),
                clock_last: std::sync::atomic::AtomicI64::new(0),
                key_watch: keycheck::KeyWatch::new(key_wake, stop.clone()),
                write_probe: parking_lot::Mutex::new(None),
                _stop: stop.drop_guard(),
            }
        }))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.s.prefix)
    }

    /// `P:{kind}{rest}` in one allocation (the hot paths' keys, e.g. `keyed("job:", id)`).
    fn keyed(&self, kind: &str, rest: impl std::fmt::Display) -> String {
        format!("{}:{kind}{rest}", self.s.prefix)
    }

    /// The store's time (µs since the epoch): Redis's clock, read with `TIME` at most every
    /// [`CLOCK_RESYNC`] and carried forward with the monotonic clock in between, so a step of
    /// this node's wall clock changes nothing. When this node's wall clock agrees with Redis's
    /// within [`clock::CLOCK_AGREE`] plus half the reading's round trip, the wall clock's reading is the
    /// anchor instead (the processes of one host then agree exactly). While Redis cannot be
    /// read, the last anchor is carried forward; before any, the wall clock is used. Never goes
    /// back within a process.
    async fn now(&self) -> Micros {
        let anchor = *self.clock.lock();
        let t = match anchor {
            Some(a) if a.1.elapsed() < CLOCK_RESYNC => carried(a),
            _ => {
                let sent = Instant::now();
                // Bounded short: callers on the request path (a submit's times) must not wait
                // a command's whole timeout for the clock before their own call.
                // Boxed: every caller's future holds this rare read as 8 bytes, not ~4 KB.
                let read: Result<(i64, i64)> = Box::pin(tokio::time::timeout(
                    CLOCK_READ_WAIT,
                    self.exec(false, |mut c| async move {
                        ::redis::cmd("TIME").query_async(&mut c).await
                    }),
                ))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("TIME not answered".into())));
                match read {
                    Ok((secs, us)) => {
                        let rtt = sent.elapsed();
                        let when = sent + rtt / 2;
                        let wall = now_us().saturating_sub(when.elapsed().as_micros() as i64);
                        let redis = secs.saturating_mul(1_000_000).saturating_add(us);
                        let at = clock_anchor(redis, wall, rtt);
                        *self.clock.lock() = Some((at, when));
                        carried((at, when))
                    }
                    Err(_) => match anchor {
                        Some(a) => {
                            // Carried, and anchored anew: the next read in CLOCK_RESYNC, not at
                            // every caller's while Redis does not answer.
                            let t = carried(a);
                            *self.clock.lock() = Some((t, Instant::now()));
                            t
                        }
                        // No reading yet: this node's clock for this once, not kept as the
                        // store's latest time (a node's clock ahead would hold it there).
                        None => return now_us().max(self.clock_last.load(Ordering::Acquire)),
                    },
                }
            }
        };
        let last = self.clock_last.fetch_max(t, Ordering::AcqRel);
        t.max(last)
    }

    /// [`Self::now`] without a read of Redis: the last anchor carried forward (this node's wall
    /// clock before any), for a judgement that must not wait for a `TIME` (the committer's).
    fn now_carried(&self) -> Micros {
        let t = match *self.clock.lock() {
            Some(a) => carried(a),
            None => now_us(),
        };
        t.max(self.clock_last.load(Ordering::Acquire))
    }

    fn mark(&self, up: bool, err: &str) {
        let was_down = self.down.swap(!up, Ordering::AcqRel);
        if was_down && up {
            tracing::info!("redis reachable again");
            // Redis may have come back without its data: the check value is looked at now.
            self.key_watch.wake.notify_one();
        } else if !was_down && !up {
            tracing::warn!(error = %err, "redis unavailable: retrying with backoff");
        }
    }

    /// Members of the sorted set `key` scored from `min` to `max` (`-inf`/`+inf` allowed), lowest
    /// score first: `limit` at most, after the first `skip`.
    pub(crate) async fn zrange_by_score<T: ::redis::FromRedisValue>(
        &self,
        key: &str,
        min: impl ::redis::ToRedisArgs + Clone + Send + Sync,
        max: impl ::redis::ToRedisArgs + Clone + Send + Sync,
        (skip, limit): (usize, usize),
    ) -> Result<Vec<T>> {
        self.exec(true, |mut c| {
            let cmd = ::redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(min.clone())
                .arg(max.clone())
                .arg("LIMIT")
                .arg(skip)
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

    /// Removes `member` from the sorted set `key`.
    pub(crate) async fn zrem(&self, key: String, member: String) -> Result<()> {
        let _: i64 = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("ZREM").arg(&key).arg(&member).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    /// Runs `script` with `keys` (its `KEYS`) and `args` (its `ARGV`), retrying like
    /// [`Self::exec`].
    pub(crate) async fn run_script<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T> {
        self.exec(true, |mut c| {
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            for a in args {
                inv.arg(a);
            }
            async move { inv.invoke_async(&mut c).await }
        })
        .await
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
        // The last error given: a try cut by its timeout says little (the reconnects failed).
        let mut said: Option<String> = None;
        // Every try refused `BUSY` so far: nothing of it ran (`conn::BUSY_ALL_ALONG`).
        let mut busy_all_along = true;
        loop {
            // A node whose master key is not the one the store keeps now does none of its work:
            // its commands wait as while Redis is away, and fail with the reason (`keycheck.rs`).
            if let Some(why) = self.key_watch.refused() {
                let left = conn::left(deadline);
                if left.is_zero() {
                    return Err(StoreError::node_refuses(&why));
                }
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
            let per_try = match deadline {
                Some(d) => self
                    .s
                    .command_timeout
                    .min(d.saturating_duration_since(Instant::now()))
                    .max(MIN_TRY.min(self.s.command_timeout)),
                None => self.s.command_timeout,
            };
            let r = tokio::time::timeout(per_try, f(self.conn.get())).await;
            busy_all_along &= matches!(&r, Ok(Err(e)) if conn::busy(e));
            let err = match r {
                Ok(Ok(v)) => {
                    if self.down.load(Ordering::Relaxed) {
                        self.mark(true, "");
                    }
                    return Ok(v);
                }
                // A replica's refusal: a failover behind the address may be under way (a new
                // connection, one a second at most, reaches the primary it names by then), so it
                // is tried again within the deadline, as Redis away is; past it, refused as the
                // others below (nothing of it was written), not "no answer" nor "may have been
                // stored". Not marked down: Redis answers.
                Ok(Err(e)) if e.kind() == ::redis::ErrorKind::ReadOnly => {
                    self.conn.heal(&e).await;
                    let left = conn::left(deadline);
                    if left.is_zero() {
                        let said = conn::write_refusal(&e).unwrap_or_default();
                        return Err(self.writes_refused(said));
                    }
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
                // Refused before any of it was written (`conn::write_refusal`).
                Ok(Err(e)) if conn::write_refusal(&e).is_some() => {
                    let said = conn::write_refusal(&e).unwrap_or_default();
                    return Err(self.writes_refused(said));
                }
                Ok(Err(e)) if !transient(&e) => return Err(StoreError::Backend(e.to_string())),
                Ok(Err(e)) => {
                    self.conn.heal(&e).await;
                    let e = e.to_string();
                    said = Some(e.clone());
                    e
                }
                Err(_) => match &said {
                    Some(e) => format!("{e}; no answer within {} ms since", per_try.as_millis()),
                    None => format!("no answer within {} ms", per_try.as_millis()),
                },
            };
            self.mark(false, &err);
            let left = conn::left(deadline);
            if left.is_zero() && busy_all_along {
                return Err(StoreError::not_run(conn::BUSY_ALL_ALONG));
            } else if left.is_zero() {
                return Err(StoreError::Unavailable(format!("redis: {err}")));
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn next_token(&self) -> Result<u64> {
        let key = self.key("token");
        self.exec(true, |mut c| {
            let key = key.clone();
            async move { ::redis::cmd("INCR").arg(key).query_async(&mut c).await }
        })
        .await
    }

    /// Tells this process's listeners, and the other processes through the publisher. Notices
    /// are hints (see `notices.rs`): when the publisher is [`RELAY_QUEUE`] behind, the notice
    /// is not relayed (the other processes poll), and this caller never waits for it.
    fn tell(&self, n: Notice) {
        if notices::crosses(&n) {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.relay.try_send(n.clone()) {
                tracing::debug!("notice publisher behind: a notice is not relayed");
            }
        }
        let _ = self.notify.send(n);
    }

    fn actx(&self, now: Micros) -> ApplyCtx {
        ApplyCtx::at(now, self.s.store.progress_interval.as_micros() as i64)
    }

    /// The settings in use.
    pub fn settings(&self) -> &RedisSettings {
        &self.s
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
