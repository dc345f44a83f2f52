//! The worker's wait for work: parked for a direct hand-off (`store/handoff.rs`) in every slot
//! with room, starting each job handed over at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::job::Job;
use crate::runner_set::RunnerSlot;
use crate::store::Parked;

impl Worker {
    /// Waits for work: parked for a hand-off in every slot with room (`store/handoff.rs`, where
    /// the store can), for as many jobs as the slot has room, until a free slot that is not
    /// parked, a rolled-back hand-off or the last place taken wakes the loop, the poll interval
    /// passes or shutdown. New work (a job QUEUED) is claimed into the parked places when every
    /// slot is parked (none full) and the claim leaves a place in each; otherwise it too wakes
    /// the loop. Each job handed over meanwhile starts at
    /// once, and the worker stays parked: with 32 requests in flight a job ends and a hand-off
    /// comes every few dozen microseconds, and a worker that left the registry for each of them
    /// left most submits QUEUED, for a claim of their own. True when the next round must claim
    /// (the poll interval, a rolled-back hand-off, or a store that cannot park). `behind`: the
    /// last round filled a slot, so jobs may still be QUEUED (and no submit hands over past
    /// them): then any free slot wakes the loop to claim them.
    pub(super) async fn wait_for_work(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        behind: bool,
    ) -> bool {
        let mut must_claim = false;
        let asked = tokio::time::Instant::now();
        let mut parked = Vec::new();
        for slot in self.runners.iter() {
            let free = slot
                .concurrency
                .saturating_sub(slot.active.load(Ordering::Acquire));
            if free == 0 {
                continue;
            }
            // For every free slot: a group commit of many submits hands each of them over.
            match self
                .store
                .park(&slot.name, &self.id, self.cfg.lease_ttl, free)
            {
                Some(p) => parked.push((slot.clone(), p)),
                None => must_claim = true,
            }
        }
        let poll = tokio::time::sleep(self.cfg.poll_interval);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                _ = self.wake.notified() => {
                    // A job ended: its slot's parked places stay (the next park counts it). Room
                    // in a slot that is not parked needs a round.
                    if behind || must_claim || self.unparked_room(&parked) {
                        break;
                    }
                    if !self.queued.load(Ordering::Acquire) {
                        continue;
                    }
                    // New work. Every slot parked: claimed into their places, and the worker
                    // stays parked (the submits after that claim are handed over again).
                    // Otherwise a round (a full slot's jobs are claimed when it has room).
                    if parked.len() < self.runners.iter().count() || shutdown.is_cancelled() {
                        break;
                    }
                    // (A notice during the claim sets the flag again.)
                    self.queued.store(false, Ordering::Release);
                    let ids: Vec<u64> = parked.iter().map(|(_, p)| p.id()).collect();
                    match self.store.claim_parked(&ids).await {
                        Ok(true) => {}
                        // A place ran out: jobs may still be QUEUED; a round claims them.
                        Ok(false) => {
                            self.queued.store(true, Ordering::Release);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "claim into the parked places failed");
                            must_claim = true;
                            break;
                        }
                    }
                }
                _ = &mut poll => {
                    must_claim = true;
                    break;
                }
                _ = shutdown.cancelled() => break,
                (slot, answer) = handed(&mut parked) => match answer {
                    Some(Some(job)) => self.spawn_job(job, &slot, asked),
                    // Taken by a submit that rolled back.
                    Some(None) => {
                        must_claim = true;
                        break;
                    }
                    // Its last place was taken: park again.
                    None => break,
                },
            }
        }
        // Whatever woke this loop: the jobs the store took for this worker meanwhile.
        for (slot, p) in parked {
            for job in p.withdraw().await {
                self.spawn_job(job, &slot, asked);
            }
        }
        must_claim
    }

    /// True when a slot that is not parked has room (it was full when the others parked).
    fn unparked_room(&self, parked: &[(Arc<RunnerSlot>, Parked)]) -> bool {
        self.runners.iter().any(|slot| {
            slot.concurrency > slot.active.load(Ordering::Acquire)
                && !parked.iter().any(|(p, _)| Arc::ptr_eq(p, slot))
        })
    }
}

/// The first of the parked slots to get an answer: its slot and the answer (`Some(None)`: the
/// submit that took it rolled back; `None`: its places are all taken and answered). Never
/// resolves when nothing is parked.
async fn handed(
    parked: &mut [(Arc<RunnerSlot>, Parked)],
) -> (Arc<RunnerSlot>, Option<Option<Job>>) {
    if parked.is_empty() {
        return std::future::pending().await;
    }
    let waits = parked
        .iter_mut()
        .map(|(slot, p)| Box::pin(async move { (slot.clone(), p.answer().await) }));
    futures::future::select_all(waits).await.0
}
