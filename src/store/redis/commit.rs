//! The commit machinery: a job write ([`Write`]) as `lua/commit.lua` receives it, the group-commit
//! task that sends the writes of every waiting caller in one script call, and the
//! load-apply-commit loop ([`RedisStore::update`]) every change of a job goes through.

use std::collections::BTreeSet;
use std::sync::Weak;

use tokio::sync::oneshot;

use super::*;

/// How many times a change is loaded and applied again after compare-and-set conflicts.
const CAS_TRIES: usize = 100;
/// Active jobs this process last wrote, kept to skip a load before its next write of them.
const CACHE_MAX: usize = 16_384;
/// Most job writes the committer sends in one `commit.lua` call.
const COMMIT_BATCH: usize = 128;
/// Callers whose writes may wait for the committer: one more waits for room (group commit
/// pushes back on overload instead of queueing without bound). Each caller holds one slot
/// whatever its number of writes, so at most this many callers' writes are held in memory.
pub(super) const COMMIT_QUEUE: usize = 1024;
/// Committer tasks: how many grouped `commit.lua` calls may be in flight at once.
pub(super) const COMMITTERS: usize = 1;

/// One job write for `commit.lua`.
pub(super) struct Write {
    /// The version the job had when loaded; `None` for a new job.
    expected: Option<u64>,
    pub(super) job: Job,
    pub(super) body: String,
    files: String,
    pub(super) event: Option<(EventKind, String)>,
    /// The lease set already holds this job's lease expiry (active before and after, same
    /// expiry): `commit.lua` skips the write. Sound because the write only applies at the
    /// version it was computed from.
    lease_kept: bool,
    /// The webhook delivery of the event (`created_at` µs, newline, url), '' none: see
    /// `deliveries.rs`.
    delivery: String,
    /// The status of the job at version `expected` (`None` for a submit): the index keys it
    /// leaves are declared to `commit.lua`.
    old_status: Option<JobStatus>,
}

impl Write {
    pub(super) fn new(
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
            old_status: old.map(|o| o.status),
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
            self.wait_keys().count().to_string(),
            opt(j.wait.as_ref().and_then(|w| w.deadline)),
        ]
    }

    /// The signal keys of the job's wait when this write makes it start or stop waiting (the
    /// `P:waitk:{key}` sets it enters or leaves), else none.
    fn wait_keys(&self) -> impl Iterator<Item = &str> {
        let j = &self.job;
        let moves =
            (j.status == JobStatus::Waiting) != (self.old_status == Some(JobStatus::Waiting));
        j.wait
            .as_ref()
            .filter(|_| moves)
            .into_iter()
            .flat_map(|w| w.items.iter().map(|i| i.key.as_str()))
    }

    /// Appends the keys `commit.lua` touches for this write, after the shared ones
    /// ([`SharedKeys`]), in the order of the script's header. `args` are [`Self::args`].
    fn push_keys(&self, s: &RedisStore, args: &[String; WRITE_ARGS], keys: &mut Vec<String>) {
        let j = &self.job;
        let id = &args[0];
        let job_key = s.keyed("job:", id);
        let idem = match &args[10] {
            k if k.is_empty() => job_key.clone(),
            k => s.keyed("idem:", k),
        };
        let old_st = match self.old_status {
            Some(st) => s.keyed("st:", st.as_str()),
            None => job_key.clone(),
        };
        keys.extend([
            job_key,
            idem,
            old_st,
            s.keyed("st:", j.status.as_str()),
            s.keyed("qt:", &j.job_type),
            s.keyed("q:", &j.runner),
            s.keyed("evc:", &j.channel_id),
            s.keyed("dlv:job:", id),
        ]);
        keys.extend(self.files.split_whitespace().map(|h| s.keyed("fref:", h)));
        keys.extend(self.wait_keys().map(|k| s.keyed("waitk:", k)));
        for k in args[14].split('\n').filter(|k| !k.is_empty()) {
            keys.push(s.keyed("sig:", k));
            keys.push(s.keyed("sigid:", k));
            keys.push(s.keyed("waitk:", k));
        }
    }
}

/// What every `commit.lua` call declares first (`KEYS[1..14]`, see the script's header) and the
/// two prefixes it passes: they depend on the store's prefix only, so they are built once.
pub(super) struct SharedKeys {
    keys: [String; 14],
    dlv_prefix: String,
    notices: String,
}

impl SharedKeys {
    pub(super) fn new(prefix: &str) -> Self {
        let key = |k: &str| format!("{prefix}:{k}");
        Self {
            keys: [
                "all", "jc", "lease", "fin", "sched", "fhashes", "waitdl", "waitdue", "waitgen",
                "sigseq", "sigkeys", "dlv:seq", "dlv:due", "ev",
            ]
            .map(key),
            dlv_prefix: key("dlv:"),
            notices: key("notices"),
        }
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

#[derive(Debug)]
pub(super) enum Reply {
    Ok,
    Conflict,
    Gone,
    Exists,
    Idem(String),
}

/// Values per job write in `commit.lua`'s arguments.
const WRITE_ARGS: usize = 19;

/// One caller's writes, waiting for the committer.
pub(super) struct Pending {
    /// `WRITE_ARGS` values per write.
    args: Vec<String>,
    /// The keys of the writes (after the shared ones), in order.
    keys: Vec<String>,
    n: usize,
    tx: oneshot::Sender<Result<Vec<String>>>,
    /// The caller's `store.retry` runs out: not sent after it, and the batch's tries end by then.
    deadline: Instant,
}

/// Group commit: takes every pending caller's writes (up to `COMMIT_BATCH`) and sends them in
/// one script call, until the store is dropped.
pub(super) async fn committer(
    store: Weak<RedisStore>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
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
    /// Commits writes (each its own compare-and-set) and tells listeners about the committed ones.
    ///
    /// The writes go to the committer task, which sends the writes of every caller waiting at
    /// that moment in one `commit.lua` call (group commit): each write is still version-checked
    /// and applied on its own, only the script call is shared.
    pub(super) async fn commit(&self, writes: &[Write]) -> Result<Vec<Reply>> {
        if writes.is_empty() {
            return Ok(vec![]);
        }
        let mut args = Vec::with_capacity(writes.len() * WRITE_ARGS);
        let mut keys = Vec::with_capacity(writes.len() * 8);
        for w in writes {
            let a = w.args();
            w.push_keys(self, &a, &mut keys);
            args.extend(a);
        }
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + self.s.retry.max(MIN_TRY);
        let pending = Pending {
            args,
            keys,
            n: writes.len(),
            tx,
            deadline,
        };
        // Waits for room (overload pushes back), as long as the caller would wait for Redis.
        tokio::time::timeout_at(deadline.into(), self.commits.send(pending))
            .await
            .map_err(|_| {
                StoreError::Unavailable("redis: the committer stayed full for `store.retry`".into())
            })?
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
        let shared = &self.shared;
        let raw: Vec<String> = self
            .exec_until(Some(deadline), |mut c| {
                let mut inv = self.scripts.commit.prepare_invoke();
                for k in &shared.keys {
                    inv.key(k);
                }
                inv.arg(p.store.global_limit)
                    .arg(p.store.channel_limit)
                    .arg(p.channel_ttl.as_millis() as u64)
                    .arg(n)
                    .arg(&self.origin)
                    .arg(&shared.dlv_prefix)
                    .arg(&shared.notices);
                for b in batch {
                    for k in &b.keys {
                        inv.key(k);
                    }
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

    /// Loads, changes with `f` and commits one job, again after each conflict.
    pub(super) async fn update<F>(&self, id: Uuid, mut f: F) -> Result<Job>
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

    pub(super) async fn apply_cmd(&self, id: Uuid, cmd: Command) -> Result<Job> {
        self.update(id, |job, now| {
            let ctx = self.actx(now);
            Ok(apply(job, cmd.clone(), &ctx)?)
        })
        .await
    }
}
