//! Hand-over at submit on Redis: the embedded store's direct hand-off (`store/handoff.rs`)
//! across processes. Without it, each job costs five script calls and three wake-ups: the
//! submit's commit announces the job to every process, a claim from each idle worker node (one
//! of them finds nothing), the claim's commit, the start with its finish
//! (docs/benchmarks.md "Session 29: where one producer's time goes on Redis").
//!
//! A worker whose claim found nothing, with free places, parks ([`JobQueue::park`]): in this
//! process's [`Handoffs`] registry, and in Redis as a member `<origin>|<park id>|<lease µs>` of
//! `P:park:{runner}` (score: when it stops counting, [`PARK_TTL`] after it was written) with its
//! free places in `P:parkn:{runner}`. The park goes to Redis, and leaves it, in the order the
//! worker parked and withdrew, through one task ([`sync`]).
//!
//! A commit that makes a job QUEUED, when nothing older of its runner is QUEUED, takes one place
//! of a live park instead of queueing the job (`hand` in commit.lua): a fencing token, a claim
//! reservation in the lease set (as `claim.lua`'s picks have), and the job's record pushed to
//! the parked process's list `P:hand:{origin}`. Nothing is announced. That process waits on the
//! list in a blocking pop on a connection of its own ([`read`]) and claims each job it gets for
//! the worker parked there (its commit replaces the reservation by the lease) before passing it
//! over: two script calls fewer per job, and one wake-up in place of three.
//!
//! What can go wrong, and what then:
//! - The process died before it claimed: the reservation expires and the reaper puts the job
//!   back in its queue (`expired.lua`), as for a claim that died between pick and commit. A dead
//!   process's park still takes at most its places' worth of jobs (each take counts one down),
//!   and stops counting after [`PARK_TTL`].
//! - The worker withdrew before its job arrived (its park leaves Redis a moment after it leaves
//!   the registry): the job is given back, QUEUED in its queue again and announced
//!   (`unhand.lua`); one the worker's claim already took, handed to a worker gone by then, is
//!   released ([`Command::Release`]), as at a graceful shutdown.
//! - The job changed before the claim (a cancel): the claim is refused and the worker told that
//!   nothing came, as when a submit's transaction rolled back on the embedded store.
//! - Nodes of builds without hand-over never park; their submits announce as before, and the
//!   parked workers of newer nodes, woken by the announcement, claim as before.

use std::time::Duration;

use super::queue::readable;
use super::*;
use crate::store::handoff::{Handoffs, Parked, Taken};
use crate::store::log_quiet::warn_unless_refused;

/// How long a park counts in Redis without being written again: longer than a worker stays
/// parked at the default poll interval (1 s, which ends every wait; a longer poll interval
/// lets the park lapse, and the worker is then woken by announcements as without hand-over). A
/// process that died takes at most its parks' places of jobs until then (each then waits out
/// its reservation).
const PARK_TTL: Duration = Duration::from_secs(5);

/// How long one blocking pop waits: the longest the reader takes to notice the store is gone.
const BLOCK: Duration = Duration::from_secs(1);

/// Most jobs the reader takes from its list at once (claimed in one commit).
const TAKE: usize = 64;

/// This process's side of the hand-over: its registry of parked workers and the way their parks
/// go to Redis.
pub(super) struct Handover {
    handoffs: Arc<Handoffs>,
    ops: mpsc::UnboundedSender<Op>,
}

/// A change of this process's parks in Redis.
enum Op {
    Park {
        runner: String,
        member: String,
        places: usize,
    },
    Leave {
        runner: String,
        member: String,
    },
}

impl Handover {
    /// Starts the tasks that keep this process's parks in Redis and read its hand-over list;
    /// `None` when `s.handover` is off.
    pub(super) fn new(
        store: &Weak<RedisStore>,
        client: ::redis::Client,
        s: &RedisSettings,
        origin: &str,
        stop: &CancellationToken,
    ) -> Option<Self> {
        if !s.handover {
            return None;
        }
        let (ops, rx) = mpsc::unbounded_channel();
        let handoffs = Handoffs::new();
        let (tx, o) = (ops.clone(), origin.to_string());
        handoffs.on_withdraw(Box::new(move |id, runner, lease_ttl| {
            let _ = tx.send(Op::Leave {
                runner: runner.to_string(),
                member: member(&o, id, lease_ttl),
            });
        }));
        let list = format!("{}:hand:{origin}", s.prefix);
        tokio::spawn(sync(store.clone(), rx, stop.clone()));
        tokio::spawn(read(
            store.clone(),
            client,
            list,
            s.command_timeout,
            stop.clone(),
        ));
        Some(Self { handoffs, ops })
    }
}

/// A park's member in `P:park:{runner}` (see the module's doc).
fn member(origin: &str, id: u64, lease_ttl: Duration) -> String {
    format!("{origin}|{id}|{}", lease_ttl.as_micros())
}

impl RedisStore {
    /// [`JobQueue::park`] on Redis (see the module's doc).
    pub(super) fn park_here(
        &self,
        runner: &str,
        worker: &str,
        lease_ttl: Duration,
        max: usize,
    ) -> Option<Parked> {
        let h = self.handover.as_ref()?;
        let p = h.handoffs.park(runner, worker, lease_ttl, max);
        let _ = h.ops.send(Op::Park {
            runner: runner.to_string(),
            member: member(&self.origin, p.id(), lease_ttl),
            places: max.max(1),
        });
        Some(p)
    }

    /// Claims the jobs handed over to this process (`<park id>|<token>|<record>` each) for the
    /// workers parked here, and passes them over; gives back those whose worker withdrew.
    async fn take_handed(&self, entries: Vec<String>) {
        let Some(h) = &self.handover else { return };
        let now = self.now().await;
        let (mut writes, mut places) = (Vec::new(), Vec::new());
        for e in &entries {
            let mut it = e.splitn(3, '|');
            let (Some(pid), Some(token), Some(body)) = (it.next(), it.next(), it.next()) else {
                tracing::warn!("hand-over entry without its parts, dropped");
                continue;
            };
            let (Ok(pid), Ok(token)) = (pid.parse::<u64>(), token.parse::<u64>()) else {
                tracing::warn!("hand-over entry with a bad park id or token, dropped");
                continue;
            };
            // Unreadable: its reservation expires and the reaper puts it back in its queue.
            let Some(job) = readable(body, || "(handed over)".into(), "hand-over") else {
                continue;
            };
            let Some(taken) = h.handoffs.take_places(pid, 1).pop() else {
                Box::pin(self.unhand(&job)).await;
                continue;
            };
            // Not claimable (cancelled since): the worker hears nothing came.
            let lease_until = now + taken.lease_ttl.as_micros() as i64;
            match self.claim_write(job, &taken.worker, token, lease_until, now) {
                Ok(Some(w)) => {
                    writes.push(w);
                    places.push((taken, token));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "hand-over claim"),
            }
        }
        let replies = match self.commit(&writes).await {
            Ok(r) => r,
            Err(e) => {
                // Read back (claim_back.rs): the claims written all the same are passed over
                // (or given back); for the others the workers hear nothing came (they claim),
                // the reservations expire and the reaper requeues the jobs.
                warn_unless_refused!(e, "claiming the jobs handed over failed");
                let ttls: Vec<Duration> = places.iter().map(|(t, _)| t.lease_ttl).collect();
                let back = Box::pin(self.read_back_claims(&writes, &ttls)).await;
                for ((taken, token), job) in places.into_iter().zip(back) {
                    if let Some(job) = job {
                        self.pass(taken, job, token).await;
                    }
                }
                return;
            }
        };
        for ((w, (taken, token)), r) in writes.into_iter().zip(places).zip(replies) {
            let lease_ttl = taken.lease_ttl;
            if let Some(job) = self.claimed(w, r, &taken.worker, lease_ttl).await {
                self.pass(taken, job, token).await;
            }
        }
    }

    /// Passes a claimed job to its worker, or releases it when the worker is gone (that rare
    /// write boxed: this future is held at every hand-over).
    async fn pass(&self, taken: Taken, job: Job, token: u64) {
        if let Some(job) = taken.deliver(job) {
            if let Err(e) = Box::pin(self.apply_cmd(job.id, Command::Release { token })).await {
                tracing::warn!(job_id = %job.id, error = %e, "giving back a handed-over job");
            }
        }
    }

    /// Puts a job handed over to a worker that withdrew back in its queue, announced
    /// (`unhand.lua`); a job no longer QUEUED is left alone.
    async fn unhand(&self, job: &Job) {
        let keys = [
            self.keyed("job:", job.id.to_string()),
            self.key("lease"),
            self.keyed("q:", &job.runner),
        ];
        let (id, notices) = (job.id.to_string(), self.shared.notices.clone());
        let r: Result<i64> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.unhand.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(&id).arg(&notices);
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        match r {
            Ok(1) => self.hints.queued(&job.runner),
            Ok(_) => {}
            // The reservation expires and the reaper requeues it.
            Err(e) => tracing::warn!(job_id = %job.id, error = %e, "giving back a handed-over job"),
        }
    }
}

/// Writes this process's parks to Redis, and takes them out, in order, until `stop`: every
/// change waiting at a moment goes in one pipeline.
async fn sync(
    store: Weak<RedisStore>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            op = rx.recv() => match op { Some(op) => op, None => return },
            _ = stop.cancelled() => {
                leave_all(&store, &mut rx).await;
                return;
            }
        };
        let mut ops = vec![first];
        while let Ok(op) = rx.try_recv() {
            ops.push(op);
        }
        let Some(s) = store.upgrade() else { return };
        let until = s.now().await + PARK_TTL.as_micros() as i64;
        let mut pipe = ::redis::pipe();
        for op in &ops {
            match op {
                Op::Park {
                    runner,
                    member,
                    places,
                } => {
                    pipe.zadd(s.keyed("park:", runner), member, until).ignore();
                    pipe.hset(s.keyed("parkn:", runner), member, *places)
                        .ignore();
                }
                Op::Leave { runner, member } => {
                    pipe.zrem(s.keyed("park:", runner), member).ignore();
                    pipe.hdel(s.keyed("parkn:", runner), member).ignore();
                }
            }
        }
        let r: Result<()> = s
            .exec(true, |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut c).await }
            })
            .await;
        if let Err(e) = r {
            // A park not written: its worker's jobs are queued meanwhile. A leave not written:
            // what is handed to it is given back, until the park's expiry.
            warn_unless_refused!(e, "writing this process's parks to redis failed");
        }
    }
}

/// At the store's end: the leaves still waiting go to Redis once (without retries, at most a
/// second), so that no submit hands a job to a park of this process after it.
async fn leave_all(store: &Weak<RedisStore>, rx: &mut mpsc::UnboundedReceiver<Op>) {
    let Some(s) = store.upgrade() else { return };
    let mut pipe = ::redis::pipe();
    let mut any = false;
    while let Ok(op) = rx.try_recv() {
        if let Op::Leave { runner, member } = op {
            pipe.zrem(s.keyed("park:", &runner), &member).ignore();
            pipe.hdel(s.keyed("parkn:", &runner), &member).ignore();
            any = true;
        }
    }
    if any {
        let mut c = s.conn.get();
        let _ = tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(&mut c)).await;
    }
}

/// Waits for jobs handed over to this process on `list`, in a blocking pop on a connection of
/// its own, and claims them for the workers parked here (each pop's in a task of its own), until
/// `stop`. A lost connection is
/// opened again after a second (the jobs wait in the list meanwhile).
async fn read(
    store: Weak<RedisStore>,
    client: ::redis::Client,
    list: String,
    timeout: Duration,
    stop: CancellationToken,
) {
    let cfg = ::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(timeout + BLOCK);
    let mut conn = None;
    while !stop.is_cancelled() {
        if conn.is_none() {
            match client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "hand-over reader cannot connect; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Up to TAKE at once (a burst's jobs claimed in one commit), in one round trip.
        let pop = ::redis::cmd("BLMPOP")
            .arg(BLOCK.as_secs_f64())
            .arg(1)
            .arg(&list)
            .arg("LEFT")
            .arg("COUNT")
            .arg(TAKE)
            .to_owned();
        let popped: ::redis::RedisResult<Option<(String, Vec<String>)>> = tokio::select! {
            r = pop.query_async(c) => r,
            _ = stop.cancelled() => return,
        };
        let entries = match popped {
            Ok(Some((_, e))) => e,
            Ok(None) => continue,
            Err(e) => {
                // (Redis loading, a replica, a user without blocking commands: not in a loop.)
                tracing::warn!(error = %e, "hand-over reader: the blocking pop failed; again in a second");
                conn = None;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        // Claimed beside the next pop: a burst's claims go in the store's group commits.
        let Some(s) = store.upgrade() else { return };
        tokio::spawn(async move { s.take_handed(entries).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::commit::Reply;
    use crate::store::redis::write::Write;
    use crate::store::FinishSlot;

    /// The size of the future `call` would return, without a store (`call` is never run).
    fn future_size<Fut>(_call: impl FnOnce(&'static RedisStore) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// [`future_size`] of a call taking an `A` (none is made: its type is the closure's).
    fn future_size_of<A, Fut>(_call: impl FnOnce(&'static RedisStore, A) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// A job's futures on Redis are copied whole where they are boxed (every `JobStore` call) and
    /// spawned (the hand-over's claims): with the rare paths inline (a conflict's read-back, a
    /// cache miss's load, the clock's `TIME`, a full committer's wait, a claim answered CONFLICT)
    /// the start was 20.8 KB, the hand-over's claims 18.9 KB, a claim 16.4 KB, a change 12.2 KB,
    /// a submit 11 KB, a claim's answer 7.7 KB, a commit 8.2 KB and the clock 4.1 KB
    /// (docs/benchmarks.md, "Session 56"). Those paths are boxed at their call; this keeps the
    /// sizes, with room (5.9, 6.7, 4.9, 3.4 KB, 1,176, 584 and 72 bytes when this was written;
    /// a layout is decided before optimization, so the test build's sizes are the release
    /// build's). The submit's body is a method of its own (`submit_job`) for this: an
    /// `async_trait` body cannot be sized. The claim's is not sized: its one boxed path (the
    /// read-back after a failed commit) adds 224 bytes inline, its own Redis call being most of
    /// its 4.5 KB.
    #[test]
    fn a_jobs_futures_on_redis_stay_small() {
        let id = Uuid::nil();
        let start = future_size(|s| {
            s.start_and_finish(id, Command::Release { token: 1 }, FinishSlot::new())
        });
        let handed = future_size(|s| s.take_handed(Vec::new()));
        let apply = future_size(|s| s.apply_cmd(id, Command::Release { token: 1 }));
        let claimed = future_size_of(|s, w: Write| s.claimed(w, Reply::Ok, "w", Duration::ZERO));
        let submit = future_size_of(|s, j: Job| s.submit_job(j));
        let commit = future_size(|s| s.commit(&[]));
        let now = future_size(|s| s.now());
        println!(
            "start {start}, hand-over {handed}, apply {apply}, claimed {claimed}, \
             submit {submit}, commit {commit}, now {now}"
        );
        assert!(start <= 8 * 1024, "the start's future is {start} bytes");
        assert!(
            handed <= 8 * 1024,
            "the hand-over's claims are {handed} bytes"
        );
        assert!(apply <= 6 * 1024, "a change's future is {apply} bytes");
        assert!(
            claimed <= 2 * 1024,
            "a claim's answer's future is {claimed} bytes"
        );
        assert!(submit <= 5 * 1024, "a submit's future is {submit} bytes");
        assert!(commit <= 1024, "a commit's future is {commit} bytes");
        assert!(now <= 256, "the clock's future is {now} bytes");
    }
}
