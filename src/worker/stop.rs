//! The worker's stop, bounded whatever the store does (docs/reliability.md, "Stopping a server or
//! a worker node"). From the moment it begins (`Worker::begin_stopping`, at the first signal):
//!
//! - running jobs may finish within `worker.shutdown_grace`; a job whose work has ended or was
//!   stopped (by the fence, a cancel, ...) no longer holds the drain, only its writes are left;
//! - then the work still running is stopped (SIGTERM, SIGKILL after `worker.kill_grace`) and
//!   given back to the queue;
//! - the jobs' last writes (outcomes, releases) get until `shutdown_grace + kill_grace +`
//!   [`WRITES_MARGIN`]; what still waits for the store then (Redis away) is left: its lease runs
//!   out and the reaper recovers the job as after a crash. Nothing is lost, and the worker is
//!   gone within [`STOP_MARGIN`] of the graces, the node's background loops included.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{StopReason, Worker};

/// How long past `worker.shutdown_grace + worker.kill_grace` a stopping server or worker node
/// may take at most, whatever the store does: its jobs' last writes, its background loops and
/// (`serve`) its HTTP connections. docs/kubernetes.md and the chart's check count it in the
/// shutdown window.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// How long past `shutdown_grace + kill_grace` the jobs' stop and last writes may take before
/// what still waits for the store is left to the leases.
const WRITES_MARGIN: Duration = Duration::from_secs(5);

/// How long a claim in flight at the shutdown is waited for at least (within the grace's
/// [`WRITES_MARGIN`]: the stop's bound holds).
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// How long the worker's own loops (heartbeats, reaper, orphan sweep) get to end once told to;
/// one still waiting for the store then is dropped (nothing of a job depends on it).
const LOOPS_WAIT: Duration = Duration::from_secs(1);

impl Worker {
    /// From now on no finish claims a next job: the refills of the running jobs are closed
    /// (a finish already on its way with one still brings its job, run as one claimed in the
    /// worker's last moments is, or, once the grace's sweep is done, given back without being
    /// launched), and no new one is asked for. The first call starts the stop's
    /// clock. Called again by `run` when it sees the shutdown; more than once is harmless.
    pub(crate) fn begin_stopping(&self) {
        self.stop_began();
        self.stopping.store(true, Ordering::SeqCst);
        for r in self.running.lock().values() {
            if let Some(f) = &r.refill {
                f.close();
            }
        }
    }

    /// When the stop began (now, if it has not).
    fn stop_began(&self) -> Instant {
        *self.stop_began.get_or_init(Instant::now)
    }

    /// When the running jobs' grace is over.
    fn grace_over_at(&self) -> Instant {
        self.stop_began() + self.cfg.shutdown_grace
    }

    /// When the job tasks still waiting for the store are left to their leases.
    fn quit_at(&self) -> Instant {
        self.grace_over_at() + self.cfg.kill_grace + WRITES_MARGIN
    }

    /// Completes once `shutdown` is cancelled and the running jobs' grace is over, but not
    /// before [`CLAIM_WAIT`] from the stop's start (a grace of 0 would drop a claim the store
    /// answers in a moment, and its job would wait for the reaper): the claim in flight at the
    /// shutdown is not waited for longer.
    pub(super) async fn grace_over(&self, shutdown: &CancellationToken) {
        shutdown.cancelled().await;
        let at = self.grace_over_at().max(self.stop_began() + CLAIM_WAIT);
        tokio::time::sleep_until(at).await;
    }

    /// No job of this worker runs: none tracked, and none spawned but not yet tracked (a job
    /// handed over or claimed at shutdown counts in its slot's `active` before its task runs).
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.running.lock().is_empty()
            && self
                .runners
                .iter()
                .all(|s| s.active.load(Ordering::Acquire) == 0)
    }

    /// The jobs whose work may still run: every job task counted in its slot (tracked or not
    /// yet), less those whose work has ended (`Worker::work_ended`), which are only writing.
    pub(super) fn live(&self) -> usize {
        // The slots first: a job that ends between the two reads then counts too many (one
        // more wait), never too few (a running job stopped before its grace was over).
        let active: usize = self
            .runners
            .iter()
            .map(|s| s.active.load(Ordering::Acquire))
            .sum();
        let ended = self.running.lock().values().filter(|r| r.work_over).count();
        active.saturating_sub(ended)
    }

    /// The attempt's work has ended or was stopped: what is left of its task (its outcome, its
    /// release, its logs) are writes to the store, which do not hold the drain.
    pub(super) fn work_ended(&self, id: Uuid, token: u64) {
        if let Some(r) = self.running.lock().get_mut(&id) {
            if r.token == token {
                r.work_over = true;
            }
        }
    }

    /// Waits (up to `shutdown_grace` from the stop's start) for the work of the running jobs to
    /// end, then stops the rest, to be given back, and waits for their work to end. Either way a
    /// job that arrives after this (a finish's claim on its way) is given back at once, not
    /// launched (`Worker::execute`).
    pub(super) async fn drain(&self) {
        let deadline = self.grace_over_at();
        while self.live() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        {
            let running = self.running.lock();
            // Under the lock: a job tracked after this sees the flag (`run_job`).
            self.swept.store(true, Ordering::SeqCst);
            for r in running.values().filter(|r| !r.work_over) {
                *r.reason.lock() = StopReason::Release;
                r.stop.cancel();
            }
        }
        if self.live() == 0 {
            return;
        }
        tracing::info!(
            jobs = self.live(),
            "shutdown grace over: stopping and requeueing running jobs"
        );
        let hard = self.quit_at();
        while self.live() > 0 && Instant::now() < hard {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After the drain: waits for the job tasks' last writes until the stop's bound, leaves the
    /// rest to their leases (saying so for each), then ends the worker's own loops.
    pub(super) async fn end_tasks(&self, bg: CancellationToken, loops: Vec<JoinHandle<()>>) {
        self.jobs.close();
        if tokio::time::timeout_at(self.quit_at(), self.jobs.wait())
            .await
            .is_err()
        {
            for r in self.running.lock().values() {
                r.span.in_scope(|| {
                    if r.work_over {
                        tracing::warn!(
                            "the store did not answer before the stop's end: the job's outcome \
                             or release is not confirmed; if it was not recorded, its lease runs \
                             out and the reaper recovers the job as after a crash"
                        )
                    } else {
                        tracing::warn!(
                            "the job's work was still stopping at the stop's end: it is left to \
                             its lease, and the reaper stops what is left and recovers the job"
                        )
                    }
                });
            }
            self.quit.cancel();
            if tokio::time::timeout(LOOPS_WAIT, self.jobs.wait())
                .await
                .is_err()
            {
                tracing::warn!(worker = %self.id, "some job tasks did not end after the shutdown");
            }
        }
        bg.cancel();
        let until = Instant::now() + LOOPS_WAIT;
        for mut t in loops {
            if tokio::time::timeout_at(until, &mut t).await.is_err() {
                tracing::info!("a worker loop still waits for the store: dropping it");
                t.abort();
            }
        }
    }

    /// Runs `task` with the worker's job tasks, until it ends or the stop leaves it
    /// ([`Worker::end_tasks`]).
    pub(super) fn spawn_task(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.jobs.spawn(UntilQuit {
            task,
            quit: self.quit.clone().cancelled_owned(),
        })
    }
}

pin_project_lite::pin_project! {
    /// A job task that ends at the stop's bound ([`Worker::end_tasks`]). A future of its own
    /// rather than an `async` block with a `select!`: that holds the task twice (captured, then
    /// moved into the select), and a job's task is copied whole at its spawn and its first poll
    /// (docs/benchmarks.md, "Session 45").
    struct UntilQuit<F> {
        #[pin]
        task: F,
        #[pin]
        quit: tokio_util::sync::WaitForCancellationFutureOwned,
    }
}

impl<F: std::future::Future<Output = ()>> std::future::Future for UntilQuit<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        this.quit.poll(cx)
    }
}
