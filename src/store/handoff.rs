//! Direct hand-off of a new job to a worker waiting for work ([`JobQueue::park`]).
//!
//! A worker whose claim found nothing queued for a runner, with free slots, parks itself here
//! for up to as many jobs as it has free slots ([`Handoffs::park`]). A store that supports it
//! (the embedded one: `sqlite/jobs.rs`) then claims the next jobs submitted for that runner in
//! the submits' own transactions, for the parked worker (fencing token, lease, the QUEUED and
//! STARTING events), only when no older job of the runner is QUEUED (first in, first out), and
//! passes them over after the commit: one transaction and two thread hops fewer per job than a
//! submit, a notice, a wake-up and a claim of its own. With many submits in one group commit
//! (32 in flight, a batch), every one of them up to the worker's free slots is handed over, not
//! only the first (docs/benchmarks.md "Session 11: tput").
//!
//! The races, and who wins each:
//! - The store takes a parked worker's place for one job out of the registry under its lock
//!   ([`Handoffs::take`]); a worker that stops waiting (woken for another reason, shutdown)
//!   withdraws under the same lock ([`Parked::withdraw`]). For every job the store took before
//!   that, the worker waits for what is given: the job after the commit, or nothing when the
//!   transaction rolled back.
//! - A hand-off whose worker is gone (its [`Parked`] dropped) cannot be delivered: the store
//!   gives the job back to the queue (`Release` with the hand-off's token: QUEUED again in its
//!   place, a `RELEASED` run record, as at a graceful shutdown). Nothing is lost.
//!
//! A [`Refill`] is the same hand-off from a worker's finish instead of a submit: the finish's
//! transaction claims the runner's oldest QUEUED job for the worker. Its place is taken once,
//! under its lock, by whichever comes first: the store applying the finish ([`Refill::take`]),
//! or the worker closing it (stopping, or done waiting: [`Refill::close`], [`NextJob::get`]).
//! Taken by the store, it delivers the job after the commit or nothing when the transaction
//! rolled back, and the worker waits for that answer; a worker gone by then gets its job given
//! back as above.
//!
//! [`JobQueue::park`]: crate::store::JobQueue::park

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::job::Job;

/// Called with each job a hand-off delivers (the metrics count it as claimed).
pub type Observer = Arc<dyn Fn(&Job) + Send + Sync>;

/// One answer per job taken: the job, or `None` when its transaction rolled back.
type Answers = mpsc::UnboundedSender<Option<Job>>;

/// The workers parked for a hand-off, per store.
#[derive(Default)]
pub struct Handoffs {
    waiting: Mutex<Vec<Waiting>>,
    next: AtomicU64,
    /// Told of each worker that withdraws with places left (its id, runner and lease): the
    /// Redis store takes its park out of Redis (`redis/handover.rs`).
    on_withdraw: Mutex<Option<OnWithdraw>>,
}

/// See [`Handoffs::on_withdraw`].
pub type OnWithdraw = Box<dyn Fn(u64, &str, Duration) + Send + Sync>;

struct Waiting {
    id: u64,
    runner: String,
    /// Jobs the store may still take for this worker.
    left: usize,
    worker: String,
    lease_ttl: Duration,
    tx: Answers,
}

/// A parked worker taken by the store for one job: who claims it, and where it goes. Dropped
/// without [`Taken::deliver`] (a rolled-back transaction), it tells the worker nothing came.
pub struct Taken {
    /// The worker's id, as recorded on the lease.
    pub worker: String,
    /// The lease to give.
    pub lease_ttl: Duration,
    tx: Option<Answers>,
}

impl Taken {
    /// Passes the claimed job over (after the commit); gives it back when the worker is gone.
    pub fn deliver(mut self, job: Job) -> Option<Job> {
        let tx = self.tx.take()?;
        tx.send(Some(job)).err().and_then(|e| e.0)
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(None);
        }
    }
}

impl Handoffs {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Parks `worker` for up to `max` jobs of `runner` (at least one), each claimed with a lease
    /// of `lease_ttl`.
    pub fn park(
        self: &Arc<Self>,
        runner: &str,
        worker: &str,
        lease_ttl: Duration,
        max: usize,
    ) -> Parked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting.lock().push(Waiting {
            id,
            runner: runner.to_string(),
            left: max.max(1),
            worker: worker.to_string(),
            lease_ttl,
            tx,
        });
        Parked {
            id,
            registry: self.clone(),
            rx: Some(rx),
            observer: None,
        }
    }

    /// True when some worker is parked for `runner` (it may withdraw before [`Handoffs::take`]).
    pub fn any(&self, runner: &str) -> bool {
        let w = self.waiting.lock();
        !w.is_empty() && w.iter().any(|p| p.runner == runner)
    }

    /// Takes one job's place of the longest-parked worker of `runner`, if any; the worker leaves
    /// the registry with its last place.
    pub fn take(&self, runner: &str) -> Option<Taken> {
        let mut w = self.waiting.lock();
        let i = w.iter().position(|p| p.runner == runner)?;
        let p = &mut w[i];
        p.left -= 1;
        let taken = Taken {
            worker: p.worker.clone(),
            lease_ttl: p.lease_ttl,
            tx: Some(p.tx.clone()),
        };
        if p.left == 0 {
            w.remove(i);
        }
        Some(taken)
    }

    /// The runner of the parked worker `id` and how many places it has left; `None` once it has
    /// withdrawn or every place was taken.
    pub fn places(&self, id: u64) -> Option<(String, usize)> {
        let w = self.waiting.lock();
        w.iter()
            .find(|p| p.id == id)
            .map(|p| (p.runner.clone(), p.left))
    }

    /// Takes up to `n` places of the parked worker `id` (fewer when it has fewer left, none once
    /// it has withdrawn); it leaves the registry with its last place.
    pub fn take_places(&self, id: u64, n: usize) -> Vec<Taken> {
        let mut w = self.waiting.lock();
        let Some(i) = w.iter().position(|p| p.id == id) else {
            return Vec::new();
        };
        let p = &mut w[i];
        let n = n.min(p.left);
        p.left -= n;
        let taken = (0..n)
            .map(|_| Taken {
                worker: p.worker.clone(),
                lease_ttl: p.lease_ttl,
                tx: Some(p.tx.clone()),
            })
            .collect();
        if p.left == 0 {
            w.remove(i);
        }
        taken
    }

    /// Calls `f` with each worker that withdraws while it has places left.
    pub fn on_withdraw(&self, f: OnWithdraw) {
        *self.on_withdraw.lock() = Some(f);
    }

    /// Removes a parked worker (if the store has not taken all its places).
    fn withdraw(&self, id: u64) {
        let mut w = self.waiting.lock();
        if let Some(i) = w.iter().position(|p| p.id == id) {
            let p = w.remove(i);
            drop(w);
            if let Some(f) = &*self.on_withdraw.lock() {
                f(p.id, &p.runner, p.lease_ttl);
            }
        }
    }
}

/// A worker's finish that may claim the next job of its runner in its own transaction (BullMQ's
/// `moveToFinished`): when a job of `runner` is QUEUED as the store records the finish, the
/// oldest is claimed for the worker there (fencing token, lease, its events) and passed over
/// after the commit ([`NextJob`]), instead of a wake-up of the claim loop and a claim of its own.
/// Its place is taken once: by the first finish written with it, or by the worker closing it
/// ([`Refill::close`]). Made by [`JobQueue::refill`].
///
/// [`JobQueue::refill`]: crate::store::JobQueue::refill
pub struct Refill {
    /// The runner whose oldest QUEUED job is claimed.
    pub runner: String,
    taken: Mutex<Option<Taken>>,
    /// When the store took the place (until then, when the refill was made): before the lease
    /// of the job it claims was asked for.
    taken_at: Mutex<std::time::Instant>,
    observer: Mutex<Option<Observer>>,
}

impl std::fmt::Debug for Refill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refill")
            .field("runner", &self.runner)
            .finish()
    }
}

/// Where a [`Refill`]'s job arrives.
pub struct NextJob(mpsc::UnboundedReceiver<Option<Job>>);

/// A refill for `worker`'s place in `runner`, each job claimed with a lease of `lease_ttl`.
pub fn refill(runner: &str, worker: &str, lease_ttl: Duration) -> (Arc<Refill>, NextJob) {
    let (tx, rx) = mpsc::unbounded_channel();
    let taken = Taken {
        worker: worker.to_string(),
        lease_ttl,
        tx: Some(tx),
    };
    let refill = Refill {
        runner: runner.to_string(),
        taken: Mutex::new(Some(taken)),
        taken_at: Mutex::new(std::time::Instant::now()),
        observer: Mutex::new(None),
    };
    (Arc::new(refill), NextJob(rx))
}

impl Refill {
    /// The worker's place, once: the store claims a job into it, or drops it (nothing readable
    /// queued).
    pub fn take(&self) -> Option<Taken> {
        let taken = self.taken.lock().take()?;
        *self.taken_at.lock() = std::time::Instant::now();
        Some(taken)
    }

    /// No finish may claim into this refill any more (the worker is stopping). A finish that
    /// took it already still delivers its job.
    pub fn close(&self) {
        drop(self.taken.lock().take());
    }

    /// Calls `f` with the job this refill delivers.
    pub fn observe(&self, f: Observer) {
        *self.observer.lock() = Some(f);
    }
}

impl NextJob {
    /// The job claimed with the finish, once the finish has been answered, and a moment before
    /// its lease was asked for: `None` when nothing was queued, the store did not take the
    /// place, or its transaction rolled back.
    pub async fn get(mut self, refill: &Refill) -> Option<(Job, std::time::Instant)> {
        // Not taken by the finish: nothing will come.
        refill.close();
        let job = self.0.recv().await.flatten()?;
        if let Some(f) = &*refill.observer.lock() {
            f(&job);
        }
        let at = *refill.taken_at.lock();
        Some((job, at))
    }
}

/// A worker's place in the registry; dropping it withdraws it (a job already taken for it is
/// then given back to the queue by the store).
pub struct Parked {
    id: u64,
    registry: Arc<Handoffs>,
    /// `None` once withdrawn.
    rx: Option<mpsc::UnboundedReceiver<Option<Job>>>,
    observer: Option<Observer>,
}

impl Parked {
    /// Its id in the registry ([`JobQueue::claim_parked`]).
    ///
    /// [`JobQueue::claim_parked`]: crate::store::JobQueue::claim_parked
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Calls `f` with each job this hand-off delivers.
    pub fn observe(mut self, f: Observer) -> Self {
        self.observer = Some(f);
        self
    }

    /// Waits for the next answer of a job taken: the job handed over, or `None` when the store
    /// took this worker but its transaction rolled back (or after the last place's answer).
    /// Cancel-safe (for `select!`).
    pub async fn recv(&mut self) -> Option<Job> {
        self.answer().await.flatten()
    }

    /// The next answer of a job taken: `Some(Some(job))` handed over, `Some(None)` its
    /// transaction rolled back, `None` when no more can come (every place taken and answered,
    /// or withdrawn). Cancel-safe (for `select!`).
    pub async fn answer(&mut self) -> Option<Option<Job>> {
        let got = self.rx.as_mut()?.recv().await?;
        Some(self.seen(got))
    }

    /// Stops waiting: the jobs handed over and not yet received, after waiting for the end of
    /// the transactions of every job the store took before the withdrawal (none when withdrawn
    /// before any was taken).
    pub async fn withdraw(mut self) -> Vec<Job> {
        let Some(mut rx) = self.rx.take() else {
            return Vec::new();
        };
        // Out of the registry, its sender goes: the channel closes once every job taken has
        // been answered (each `Taken` answers once, delivered or dropped).
        self.registry.withdraw(self.id);
        let mut out = Vec::new();
        while let Some(got) = rx.recv().await {
            if let Some(job) = self.seen(got) {
                out.push(job);
            }
        }
        out
    }

    fn seen(&self, got: Option<Job>) -> Option<Job> {
        if let (Some(job), Some(f)) = (&got, &self.observer) {
            f(job);
        }
        got
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.registry.withdraw(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::new("t.x", "r", 0)
    }

    #[tokio::test]
    async fn withdrawn_in_time_gets_nothing_and_is_not_taken() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1), 1);
        assert!(h.any("r"));
        assert!(p.withdraw().await.is_empty());
        assert!(!h.any("r"));
        assert!(h.take("r").is_none());
    }

    #[tokio::test]
    async fn taken_before_the_withdrawal_delivers_the_job() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1), 1);
        let t = h.take("r").expect("parked");
        assert_eq!(t.worker, "w");
        let j = job();
        let id = j.id;
        let w = tokio::spawn(p.withdraw());
        assert!(t.deliver(j).is_none(), "the worker waits for it");
        assert_eq!(ids(w.await.unwrap()), [id]);
    }

    #[tokio::test]
    async fn a_dropped_worker_refuses_the_job_and_a_rolled_back_one_gets_none() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1), 1);
        let t = h.take("r").expect("parked");
        drop(p);
        assert!(t.deliver(job()).is_some(), "given back to the store");
        let mut p = h.park("r", "w", Duration::from_secs(1), 1);
        drop(h.take("r").expect("parked"));
        assert!(p.recv().await.is_none());
        assert!(p.recv().await.is_none(), "answers once");
    }

    #[tokio::test]
    async fn a_refill_brings_the_job_delivered_into_it_and_nothing_otherwise() {
        let (r, next) = refill("r", "w", Duration::from_secs(1));
        let t = r.take().expect("the place, once");
        assert!(r.take().is_none());
        assert_eq!((t.worker.as_str(), r.runner.as_str()), ("w", "r"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        r.observe(Arc::new(move |j: &Job| s.lock().push(j.id)));
        let j = job();
        let id = j.id;
        assert!(t.deliver(j).is_none(), "the worker waits for it");
        assert_eq!(next.get(&r).await.map(|(j, _)| j.id), Some(id));
        assert_eq!(*seen.lock(), [id], "observed once");
        // Not taken by any finish, or taken and dropped (nothing queued, or rolled back).
        let (r, next) = refill("r", "w", Duration::from_secs(1));
        assert!(next.get(&r).await.is_none());
        let (r, next) = refill("r", "w", Duration::from_secs(1));
        drop(r.take());
        assert!(next.get(&r).await.is_none());
        // The worker gone: the job is given back to the store.
        let (r, next) = refill("r", "w", Duration::from_secs(1));
        drop(next);
        assert!(r.take().expect("place").deliver(job()).is_some());
    }

    #[tokio::test]
    async fn a_withdrawal_with_places_left_is_told_and_one_without_is_not() {
        let h = Handoffs::new();
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        h.on_withdraw(Box::new(move |id, runner, lease| {
            t.lock().push((id, runner.to_string(), lease))
        }));
        let p = h.park("r", "w", Duration::from_secs(3), 2);
        let id = p.id();
        drop(h.take("r").expect("one place of two"));
        assert!(p.withdraw().await.is_empty());
        assert_eq!(
            *told.lock(),
            [(id, "r".to_string(), Duration::from_secs(3))]
        );
        // Every place taken: it left the registry with its last place, nothing to tell.
        let p = h.park("r", "w", Duration::from_secs(3), 1);
        drop(h.take("r").expect("its one place"));
        assert!(p.withdraw().await.is_empty());
        assert_eq!(told.lock().len(), 1);
    }

    fn ids(jobs: Vec<Job>) -> Vec<uuid::Uuid> {
        jobs.iter().map(|j| j.id).collect()
    }

    #[tokio::test]
    async fn a_worker_parked_for_three_is_taken_three_times_then_leaves() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1), 3);
        let (a, c) = (job(), job());
        let (ta, tb, tc) = (h.take("r"), h.take("r"), h.take("r"));
        assert!(h.take("r").is_none(), "three places only");
        assert!(!h.any("r"));
        drop(tb.expect("second place")); // its transaction rolled back
        let want = [a.id, c.id];
        assert!(ta.expect("first place").deliver(a).is_none());
        let w = tokio::spawn(p.withdraw());
        assert!(tc.expect("third place").deliver(c).is_none());
        assert_eq!(ids(w.await.unwrap()), want, "both delivered, in order");
    }
}
