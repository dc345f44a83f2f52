//! The commit machinery: a job write ([`Write`]) as `lua/commit.lua` receives it, and the
//! group-commit task that sends the writes of every waiting caller in one script call (the
//! load-apply-commit loop every change of a job goes through, `update`, is in `start.rs`).

use std::sync::Weak;

use tokio::sync::oneshot;

use super::reply::parse_reply;
pub(super) use super::reply::Reply;
use super::write::{Packed, Write, DLVSEQ, SHARED};
use super::*;
use crate::store::FinishSlot;

/// How many times a change is loaded and applied again after compare-and-set conflicts.
pub(super) const CAS_TRIES: usize = 100;
/// Active jobs this process last wrote, kept to skip a load before its next write of them.
const CACHE_MAX: usize = 16_384;
/// Most job writes the committer sends in one `commit.lua` call.
const COMMIT_BATCH: usize = 128;
/// Callers whose writes may wait for the committer: one more waits for room (group commit
/// pushes back on overload instead of queueing without bound). Each caller holds one slot
/// whatever its number of writes, so at most this many callers' writes are held in memory.
pub(super) const COMMIT_QUEUE: usize = 1024;
/// How many times the committer lets ready tasks run before it builds a batch holding a start
/// whose finish is not offered yet (see [`committer`]).
const LATE_YIELDS: usize = 2;
/// The committer lets ready tasks run for a start's finish only when its batch holds at most
/// this many callers (see [`committer`]).
const LATE_BATCH_MAX: usize = 32;
/// Committer tasks: how many grouped `commit.lua` calls may be in flight at once.
pub(super) const COMMITTERS: usize = 1;

/// How long a process may go without refreshing a channel's TTL: 1/64 of
/// `retention.events`, when that is at least an hour and so long that the slack and a commit's
/// longest wait take little of it (else every event refreshes).
fn channel_ttl_slack(s: &RedisSettings) -> Option<Duration> {
    let ttl = s.channel_ttl;
    let slack = ttl / 64;
    (ttl >= Duration::from_secs(3600) && (slack * 2 + s.retry + s.command_timeout) * 4 < ttl)
        .then_some(slack)
}

/// A change the committer decides as it builds its batch: the finish of an attempt whose start
/// is the caller's write (its only one), taken from the attempt's [`FinishSlot`] at that moment
/// (the latest moment before the call is sent: a quick job's finish is there by then), see
/// `start.rs`. When there is one, the start and the finish go as ONE write of the job in place
/// of the start's: checked against the version before the start, the job written once as the
/// finish leaves it, both events appended in order (`event0` in `commit.lua`).
pub(super) struct Late {
    /// The job as stored before the caller's write (what it was computed from).
    pub(super) before: Job,
    /// The job as the caller's write leaves it.
    pub(super) after: Job,
    /// The caller's event and its webhook delivery (see [`Write`]).
    pub(super) event: Option<(EventKind, String)>,
    pub(super) delivery: String,
    /// Where the finish comes from.
    pub(super) finish: LateFinish,
}

/// Where a [`Late`] finish comes from.
pub(super) enum LateFinish {
    /// The attempt's slot, taken (and closed) when the batch is built.
    Slot(Arc<FinishSlot>),
    /// Taken by an earlier try whose start lost a compare-and-set.
    Taken(Command),
}

/// What became of a [`Late`] write.
pub(super) enum LateOutcome {
    /// No finish was offered (or the call carried no late write).
    None,
    /// The finish, refused by the status rules before anything of it was sent.
    Refused(Command, StoreError),
    /// The finish, sent in one write with the caller's (in its place): that write (the job as
    /// the finish leaves it, both events), and whether it refreshed the channel's TTL.
    /// Its reply is the caller's.
    Sent(Command, Box<Write>, bool),
}

/// One caller's writes, waiting for the committer.
pub(super) struct Pending {
    /// The writes' name/value pairs, in order.
    args: Packed,
    /// The writes' own keys (after the shared ones), in order.
    keys: Packed,
    /// The shared keys the writes touch (a bit per `SHARED` entry).
    shared: u32,
    n: usize,
    /// A change decided when the batch is built, whose write then replaces the caller's (see
    /// [`Late`]).
    late: Option<Box<Late>>,
    tx: oneshot::Sender<Result<(Vec<String>, LateOutcome)>>,
    /// The caller's `store.retry` runs out: not sent after it, and the batch's tries end by then.
    deadline: Instant,
}

impl Pending {
    /// Carries a start whose finish may still come: its slot is open and holds nothing yet.
    fn awaits_finish(&self) -> bool {
        (self.late.as_deref())
            .is_some_and(|l| matches!(&l.finish, LateFinish::Slot(s) if !s.offered()))
    }
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
        // A start whose attempt is still running here (a quick service job's task is ready
        // to run on this runtime): let the ready tasks run first, so that its finish is in the
        // slot when the batch is built and goes in the same write (see `start.rs`). A yield may
        // last until the worker thread has polled dozens of tasks, and it delays every write of
        // the batch and every caller behind it: not for a large batch (a burst of heartbeats or
        // submits), and no longer once the finish is there. (Yielding only when nobody waits
        // behind the batch cost 5-13% more CPU per job at 32 in flight: the yields also let the
        // next batch fill, see docs/benchmarks.md.)
        if batch.len() <= LATE_BATCH_MAX && batch.iter().any(Pending::awaits_finish) {
            for _ in 0..LATE_YIELDS {
                tokio::task::yield_now().await;
                if !batch.iter().any(Pending::awaits_finish) {
                    break;
                }
            }
        }
        let Some(store) = store.upgrade() else { return };
        let mut batch = batch;
        let mut lates = Vec::with_capacity(batch.len());
        for p in &mut batch {
            lates.push(match p.late.take() {
                Some(l) => store.late_write(p, *l).await,
                None => LateOutcome::None,
            });
        }
        let r = store.commit_batch(&batch, deadline).await;
        drop(store);
        match r {
            Ok(raw) => {
                let mut it = raw.into_iter();
                for (p, late) in batch.into_iter().zip(lates) {
                    let _ = p.tx.send(Ok((it.by_ref().take(p.n).collect(), late)));
                }
            }
            Err(e) => {
                for p in batch {
                    let e = match &e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        // A refused write keeps its words (`StoreError::is_write_refusal`).
                        StoreError::Backend(m) if e.is_write_refusal() => {
                            StoreError::Backend(m.clone())
                        }
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
        Ok(self.commit_late(writes, None).await?.0)
    }

    /// [`Self::commit`], with a change decided by the committer as it builds its batch (see
    /// [`Late`]; `writes` is then one write): the replies and what became of the change (when it
    /// was sent, the one reply is that of the write carrying both).
    pub(super) async fn commit_late(
        &self,
        writes: &[Write],
        late: Option<Box<Late>>,
    ) -> Result<(Vec<Reply>, LateOutcome)> {
        if late.is_some() && writes.len() != 1 {
            return Err(StoreError::Backend(
                "commit: a late change goes with one write".into(),
            ));
        }
        let mut args = Packed::default();
        let mut keys = Packed::default();
        let mut shared = 0;
        let sent = Instant::now();
        let mut ttl = Vec::with_capacity(writes.len());
        let now = self.now_carried();
        for w in writes {
            ttl.push(w.event.is_some() && self.ttl_due(w, now));
            let (a, k, sh) = w
                .parts(
                    &self.s.prefix,
                    *ttl.last().unwrap_or(&true),
                    self.s.channel_lists,
                )
                .into_packed();
            if writes.len() == 1 {
                (args, keys) = (a, k);
            } else {
                args.extend(&a);
                keys.extend(&k);
            }
            shared |= sh;
        }
        let (tx, rx) = oneshot::channel();
        let mut deadline = Instant::now() + self.s.retry.max(MIN_TRY);
        if let Some(by) = crate::store::answer_by() {
            deadline = deadline.min(by);
        }
        let pending = Pending {
            args,
            keys,
            shared,
            n: writes.len(),
            late,
            tx,
            deadline,
        };
        self.enqueue(pending, deadline).await?;
        let (raw, late) = rx
            .await
            .map_err(|_| StoreError::Unavailable("redis: committer stopped".into()))??;
        let mut out = Vec::with_capacity(raw.len());
        let mut any = false;
        let mut raw = raw.into_iter();
        for (w, ttl) in writes.iter().zip(ttl) {
            let reply = match &late {
                // The caller's write went within the finish's: one reply for both.
                LateOutcome::Sent(_, w2, ttl2) => {
                    let reply = parse_reply(raw.next().as_deref(), w.job.id)?;
                    if matches!(reply, Reply::Ok) {
                        self.told(w, false);
                        self.committed(w2, ttl2.then_some(sent), false);
                    } else {
                        self.cache.lock().remove(&w.job.id);
                    }
                    reply
                }
                _ => self.settle_reply(w, raw.next().as_deref(), ttl.then_some(sent))?,
            };
            any |= matches!(reply, Reply::Ok) && w.event.is_some();
            out.push(reply);
        }
        if any {
            // Other processes heard of them from commit.lua itself.
            let _ = self.notify.send(Notice::Events);
        }
        Ok((out, late))
    }

    /// The reply `r` of commit.lua to `w`, and what follows it in this process (see
    /// [`Self::committed`]; a write not committed leaves the cache).
    fn settle_reply(&self, w: &Write, r: Option<&str>, ttl: Option<Instant>) -> Result<Reply> {
        let reply = parse_reply(r, w.job.id)?;
        if matches!(reply, Reply::Ok) {
            // "OKH:": handed over to a parked worker (handover.rs), not queued.
            self.committed(w, ttl, r.is_some_and(|r| r.starts_with("OKH:")));
        } else {
            self.cache.lock().remove(&w.job.id);
        }
        Ok(reply)
    }

    /// Hands `pending` to the committer, waiting for room (overload pushes back) as long as the
    /// caller would wait for Redis. The wait is boxed: with room (the usual case) the callers'
    /// futures hold no send future (docs/benchmarks.md, "Session 56").
    async fn enqueue(&self, pending: Pending, deadline: Instant) -> Result<()> {
        let closed = || StoreError::Unavailable("redis: store closed".into());
        let Err(e) = self.commits.try_send(pending) else {
            return Ok(());
        };
        let mpsc::error::TrySendError::Full(p) = e else {
            return Err(closed());
        };
        let send = Box::pin(tokio::time::timeout_at(
            deadline.into(),
            self.commits.send(p),
        ));
        send.await
            .map_err(|_| {
                StoreError::Unavailable("redis: the committer stayed full for `store.retry`".into())
            })?
            .map_err(|_| closed())
    }

    /// Decides `late` for the pending call `p` as its batch is built: the finish is taken from
    /// its slot (or was taken before) and applied to the job as `p`'s write leaves it; `p`'s
    /// write is then replaced by one write of both changes (see [`Late`]).
    async fn late_write(&self, p: &mut Pending, late: Late) -> LateOutcome {
        let cmd = match late.finish {
            LateFinish::Slot(slot) => match slot.take() {
                Some(c) => c,
                None => return LateOutcome::None,
            },
            LateFinish::Taken(c) => c,
        };
        let mut next = late.after;
        let now = self.now().await;
        let ev = match apply(&mut next, cmd.clone(), &self.actx(now)) {
            Ok(ev) => ev,
            Err(e) => return LateOutcome::Refused(cmd, e.into()),
        };
        // From the stored job to the finished one: one version check, one write of the job, its
        // indexes moved from the stored status to the last; the start's event first.
        let before = late.before;
        let mut w = match self.write(Some(before.version), Some(&before), next, ev) {
            Ok(w) => w,
            Err(e) => return LateOutcome::Refused(cmd, e),
        };
        w.event0 = late.event;
        w.delivery0 = late.delivery;
        let ttl = (w.event.is_some() || w.event0.is_some()) && self.ttl_due(&w, now);
        let (a, k, sh) = w
            .parts(&self.s.prefix, ttl, self.s.channel_lists)
            .into_packed();
        (p.args, p.keys, p.shared) = (a, k, sh);
        LateOutcome::Sent(cmd, Box::new(w), ttl)
    }

    /// What follows a committed write in this process: the cache, the TTL refreshed at `ttl`
    /// (when sent), the delivery generation, the notices of its status event.
    pub(super) fn committed(&self, w: &Write, ttl: Option<Instant>, handed: bool) {
        self.remember(&w.job);
        if let Some(sent) = ttl {
            self.ttl_refreshed(&w.job.channel_id, sent);
        }
        if !w.delivery.is_empty() || !w.delivery0.is_empty() {
            self.dlv_gen.fetch_add(1, Ordering::AcqRel);
        }
        self.told(w, handed);
    }

    /// The notices of a committed write's status event here (no wake-up for a job handed over).
    fn told(&self, w: &Write, handed: bool) {
        if let Some((EventKind::Status, _)) = &w.event {
            if w.job.status == JobStatus::Queued && !handed {
                // Other processes heard of it from commit.lua itself.
                self.hints.queued(&w.job.runner);
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

    /// Sends the writes of several callers in one `commit.lua` call; one reply per write.
    async fn commit_batch(&self, batch: &[Pending], deadline: Instant) -> Result<Vec<String>> {
        let n: usize = batch.iter().map(|b| b.n).sum();
        let cmd = self.commit_cmd(batch);
        let script = &self.scripts.commit;
        let raw: Vec<String> = self
            .exec_until(Some(deadline), |mut c| {
                let cmd = &cmd;
                async move {
                    match cmd.query_async(&mut c).await {
                        // Not loaded (a restarted or flushed Redis): load it and call again,
                        // as `ScriptInvocation::invoke_async` does.
                        Err(e) if e.kind() == ::redis::ErrorKind::NoScriptError => {
                            script.load_async(&mut c).await?;
                            cmd.query_async(&mut c).await
                        }
                        r => r,
                    }
                }
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

    /// The `EVALSHA` of `commit.lua` for `batch`: one command built straight from the writes'
    /// packed arguments (not a `ScriptInvocation`, which keeps a buffer per argument and
    /// copies them all again).
    fn commit_cmd(&self, batch: &[Pending]) -> ::redis::Cmd {
        let p = &self.s;
        let sk = &self.shared;
        let shared = batch.iter().fold(0, |m, b| m | b.shared);
        let mut names = String::new();
        let mut nshared = 0;
        for (i, (name, _)) in SHARED.iter().enumerate() {
            if shared & (1 << i) != 0 {
                if !names.is_empty() {
                    names.push(' ');
                }
                names.push_str(name);
                nshared += 1;
            }
        }
        let nkeys = nshared + batch.iter().map(|b| b.keys.len()).sum::<usize>();
        let nargs = 3 + nkeys + 16 + batch.iter().map(|b| b.args.len()).sum::<usize>();
        let bytes = 256
            + batch
                .iter()
                .map(|b| b.keys.bytes() + b.args.bytes())
                .sum::<usize>();
        let mut cmd = ::redis::Cmd::with_capacity(nargs, bytes);
        cmd.arg("EVALSHA")
            .arg(self.scripts.commit.get_hash())
            .arg(nkeys);
        for (i, k) in sk.keys.iter().enumerate() {
            if shared & (1 << i) != 0 {
                cmd.arg(k);
            }
        }
        for k in batch.iter().flat_map(|b| b.keys.iter()) {
            cmd.arg(k);
        }
        cmd.arg("shared")
            .arg(&names)
            .arg("glimit")
            .arg(p.store.global_limit)
            .arg("climit")
            .arg(p.store.channel_limit)
            .arg("cttl")
            .arg(p.channel_ttl.as_millis() as u64)
            .arg("origin")
            .arg(&self.origin)
            .arg("notices")
            .arg(&sk.notices);
        if shared & (1 << DLVSEQ) != 0 {
            cmd.arg("dlvp").arg(&sk.dlv_prefix);
        }
        if p.handover {
            cmd.arg("handp").arg(&sk.hand_prefix);
        }
        if let Some(slack) = channel_ttl_slack(p).filter(|_| p.channel_lists) {
            let min = p.channel_ttl.saturating_sub(slack * 2);
            cmd.arg("cmin").arg(min.as_millis() as u64);
        }
        for a in batch.iter().flat_map(|b| b.args.iter()) {
            cmd.arg(a);
        }
        cmd
    }

    /// Whether a write's event should refresh its channel's TTL. Each event used to
    /// (a `PEXPIRE` per event); now a process refreshes a channel at most once per
    /// [`channel_ttl_slack`] (when the TTL is long enough for that, see there), and not at all
    /// for a change of a job created less than half that slack ago (by its time `created_at`,
    /// the store's time at its submit, against `now`, the store's time; a job submitted by a
    /// build that stamped it with its node's wall clock is allowed a skew of the clocks up to
    /// half the slack): its submit refreshed the channel, or its process had within the slack
    /// before (a worker's claim, start and finish of a quick job send none). With lists, a
    /// push that creates the list sets its TTL whatever this says (`commit.lua`): a stream
    /// writer's submit set it on the channel's stream, not on the list. For the same reason a
    /// write that skips the refresh has `commit.lua` check the list's PTTL (`cmin`: refreshed
    /// when under the TTL less twice the slack), and a refresh also refreshes the channel's
    /// stream (a stream writer changing the young job relies on its submit for that). A
    /// channel's stream or list so lives at least `retention.events` minus twice that slack
    /// after its last event, which `events.lua` is told ([`RedisStore::channel_ttl_read`]).
    fn ttl_due(&self, w: &Write, now: Micros) -> bool {
        let Some(slack) = channel_ttl_slack(&self.s) else {
            return true;
        };
        let age = now.saturating_sub(w.job.created_at);
        if w.expected.is_some() && age < (slack / 2).as_micros() as i64 {
            return false;
        }
        !matches!(self.ttl_set.lock().get(&w.job.channel_id), Some(t) if t.elapsed() < slack)
    }

    /// A refresh of `channel`'s TTL sent at `sent` was committed.
    fn ttl_refreshed(&self, channel: &str, sent: Instant) {
        if channel_ttl_slack(&self.s).is_none() {
            return;
        }
        let mut m = self.ttl_set.lock();
        if m.len() >= CACHE_MAX {
            m.clear();
        }
        m.insert(channel.to_string(), sent);
    }

    /// The channel TTL `events.lua` reads with: `retention.events` less what a stream may lose
    /// to refreshes skipped (twice the slack, see [`Self::ttl_due`], and a commit's longest
    /// wait: `store.retry` plus a try).
    pub(super) fn channel_ttl_read(&self) -> Duration {
        let ttl = self.s.channel_ttl;
        match channel_ttl_slack(&self.s) {
            Some(slack) => ttl.saturating_sub(slack * 2 + self.s.retry + self.s.command_timeout),
            None => ttl,
        }
    }

    pub(super) fn remember(&self, job: &Job) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_ttl_is_refreshed_less_often_only_when_long() {
        let mut s = RedisSettings::new("redis://127.0.0.1");
        // Default: 24 h, 30 s retry, 5 s per try.
        assert_eq!(
            channel_ttl_slack(&s),
            Some(Duration::from_secs(24 * 3600 / 64))
        );
        // Short TTLs (tests, small deployments): every event refreshes.
        s.channel_ttl = Duration::from_secs(2);
        assert_eq!(channel_ttl_slack(&s), None);
        s.channel_ttl = Duration::from_secs(3599);
        assert_eq!(channel_ttl_slack(&s), None);
        // An hour, but a retry so long that a commit may wait longer than the slack allows for.
        s.channel_ttl = Duration::from_secs(3600);
        s.retry = Duration::from_secs(900);
        assert_eq!(channel_ttl_slack(&s), None);
    }
}
