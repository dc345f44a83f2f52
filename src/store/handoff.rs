//! Direct hand-off of a new job to a worker waiting for work ([`JobQueue::park`]).
//!
//! A worker whose claim found nothing queued for a runner, with a free slot, parks itself here
//! ([`Handoffs::park`]). A store that supports it (the embedded one: `sqlite/jobs.rs`) then claims
//! the next job submitted for that runner in the submit's own transaction, for the parked worker
//! (fencing token, lease, the QUEUED and STARTING events), only when no older job of the runner is
//! QUEUED (first in, first out), and passes it over after the commit: one transaction and two
//! thread hops fewer per job than a submit, a notice, a wake-up and a claim of its own.
//!
//! The races, and who wins each:
//! - The store takes a parked worker out of the registry under its lock ([`Handoffs::take`]); a
//!   worker that stops waiting (woken for another reason, shutdown) withdraws under the same
//!   lock ([`Parked::withdraw`]). When the store took it first, the worker waits for what was
//!   given: the job after the commit, or nothing when the transaction rolled back.
//! - A hand-off whose worker is gone (its [`Parked`] dropped) cannot be delivered: the store
//!   gives the job back to the queue (`Release` with the hand-off's token: QUEUED again, a
//!   `RELEASED` run record, as at a graceful shutdown). Nothing is lost.
//!
//! [`JobQueue::park`]: crate::store::JobQueue::park

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::job::Job;

/// Called with each job a hand-off delivers (the metrics count it as claimed).
pub type Observer = Arc<dyn Fn(&Job) + Send + Sync>;

/// The workers parked for a hand-off, per store.
#[derive(Default)]
pub struct Handoffs {
    waiting: Mutex<Vec<Waiting>>,
    next: AtomicU64,
}

struct Waiting {
    id: u64,
    runner: String,
    taken: Taken,
}

/// A parked worker taken by the store for one job: who claims it, and where it goes.
pub struct Taken {
    /// The worker's id, as recorded on the lease.
    pub worker: String,
    /// The lease to give.
    pub lease_ttl: Duration,
    tx: oneshot::Sender<Job>,
}

impl Taken {
    /// Passes the claimed job over (after the commit); gives it back when the worker is gone.
    pub fn deliver(self, job: Job) -> Option<Job> {
        self.tx.send(job).err()
    }
}

impl Handoffs {
    /// A new, empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Parks `worker` for one job of `runner`, claimed with a lease of `lease_ttl`.
    pub fn park(self: &Arc<Self>, runner: &str, worker: &str, lease_ttl: Duration) -> Parked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().push(Waiting {
            id,
            runner: runner.to_string(),
            taken: Taken {
                worker: worker.to_string(),
                lease_ttl,
                tx,
            },
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

    /// Takes the longest-parked worker of `runner` out of the registry, if any.
    pub fn take(&self, runner: &str) -> Option<Taken> {
        let mut w = self.waiting.lock();
        let i = w.iter().position(|p| p.runner == runner)?;
        Some(w.remove(i).taken)
    }

    /// Removes a parked worker; false when the store took it first.
    fn withdraw(&self, id: u64) -> bool {
        let mut w = self.waiting.lock();
        match w.iter().position(|p| p.id == id) {
            Some(i) => {
                w.remove(i);
                true
            }
            None => false,
        }
    }
}

/// A worker's place in the registry; dropping it withdraws it (a job already taken for it is
/// then given back to the queue by the store).
pub struct Parked {
    id: u64,
    registry: Arc<Handoffs>,
    /// `None` once it answered.
    rx: Option<oneshot::Receiver<Job>>,
    observer: Option<Observer>,
}

impl Parked {
    /// Calls `f` with each job this hand-off delivers.
    pub fn observe(mut self, f: Observer) -> Self {
        self.observer = Some(f);
        self
    }

    /// Waits for a job handed over; `None` when the store took this worker but its transaction
    /// rolled back, or once it answered. Cancel-safe (for `select!`).
    pub async fn recv(&mut self) -> Option<Job> {
        let rx = self.rx.as_mut()?;
        let got = rx.await.ok();
        self.rx = None;
        self.seen(got)
    }

    /// Stops waiting: `None` when withdrawn in time; otherwise the store took this worker, and
    /// this waits for the end of that transaction (the job, or `None` if it rolled back).
    pub async fn withdraw(mut self) -> Option<Job> {
        let rx = self.rx.take()?;
        if self.registry.withdraw(self.id) {
            return None;
        }
        let got = rx.await.ok();
        self.seen(got)
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
        let p = h.park("r", "w", Duration::from_secs(1));
        assert!(h.any("r"));
        assert!(p.withdraw().await.is_none());
        assert!(!h.any("r"));
        assert!(h.take("r").is_none());
    }

    #[tokio::test]
    async fn taken_before_the_withdrawal_delivers_the_job() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1));
        let t = h.take("r").expect("parked");
        assert_eq!(t.worker, "w");
        let j = job();
        let id = j.id;
        let w = tokio::spawn(p.withdraw());
        assert!(t.deliver(j).is_none(), "the worker waits for it");
        assert_eq!(w.await.unwrap().map(|j| j.id), Some(id));
    }

    #[tokio::test]
    async fn a_dropped_worker_refuses_the_job_and_a_rolled_back_one_gets_none() {
        let h = Handoffs::new();
        let p = h.park("r", "w", Duration::from_secs(1));
        let t = h.take("r").expect("parked");
        drop(p);
        assert!(t.deliver(job()).is_some(), "given back to the store");
        let mut p = h.park("r", "w", Duration::from_secs(1));
        drop(h.take("r").expect("parked"));
        assert!(p.recv().await.is_none());
        assert!(p.recv().await.is_none(), "answers once");
    }
}
