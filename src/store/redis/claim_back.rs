//! Claims on Redis whose commit was not answered OK (`queue.rs` `claim`, `handover.rs`): the
//! write may have been made all the same (its reply lost, or Redis answering after
//! `store.retry`). A job found as such a claim left it ([`own_claim`]) is taken when its lease
//! has enough left to start on ([`enough_lease`]); one found so but not taken is given back at
//! once ([`Command::Release`], checked on the claim's token, its attempt not spent), not left to
//! the reaper, which would spend its attempt (`ERROR` "worker lost" with one attempt).

use std::time::Duration;

use super::clock::CLOCK_AGREE;
use super::queue::readable;
use super::write::Write;
use super::*;
use crate::job::Lease;

impl RedisStore {
    /// Our own claim `w`, found `stored` (see [`own_claim`]) after its commit was not answered
    /// OK: it was written. What follows a committed write follows (notices, cache); the job is
    /// taken as stored when its lease has enough left ([`enough_lease`] by `lease_ttl`);
    /// `None` otherwise, when the caller gives it back ([`Self::release_claims`]).
    pub(super) fn take_own_claim(
        &self,
        w: &Write,
        stored: Job,
        lease_ttl: Duration,
        now: Micros,
    ) -> Option<Job> {
        tracing::debug!(job_id = %stored.id, "claim found written after its commit failed");
        self.committed(w, None, false);
        if w.event.is_some() {
            // As after a write answered OK (commit.rs): this process's event listeners.
            let _ = self.notify.send(Notice::Events);
        }
        if stored
            .lease
            .as_ref()
            .is_some_and(|l| enough_lease(l, lease_ttl, now))
        {
            self.remember(&stored);
            return Some(stored);
        }
        None
    }

    /// The claims `writes` (with the lease time of each, `ttls`) whose commit failed (Redis away
    /// past `store.retry`, or a reply lost and the tries run out), read back (for up to the
    /// longest lease: past it, nothing read back would be taken): they may have been written
    /// all the same. Those found written are taken or given back (see
    /// [`Self::take_own_claim`]); the others were not claimed (their reservations expire and
    /// the reaper puts them back in their queues). When they cannot be read back, each is given
    /// back all the same where it was written (the release is refused where it was not).
    pub(super) async fn read_back_claims(
        &self,
        writes: &[Write],
        ttls: &[Duration],
    ) -> Vec<Option<Job>> {
        let bound = ttls.iter().copied().max().unwrap_or_default();
        let ids: Vec<Uuid> = writes.iter().map(|w| w.job.id).collect();
        let bodies = match tokio::time::timeout(bound, self.load_many(&ids)).await {
            Ok(Ok(b)) => b,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {bound:?}"),
                };
                tracing::warn!(%error, of = writes.len(),
                    "a failed claim could not be read back: its jobs are given back where it wrote them");
                self.release_claims(writes.iter(), bound).await;
                return vec![None; writes.len()];
            }
        };
        let now = self.now().await;
        let (mut out, mut back) = (Vec::with_capacity(writes.len()), Vec::new());
        for ((w, body), ttl) in writes.iter().zip(bodies).zip(ttls) {
            let stored = body.and_then(|b| readable(&b, || w.job.id.to_string(), "claim"));
            out.push(match stored {
                Some(j) if own_claim(&j, w) => {
                    let taken = self.take_own_claim(w, j, *ttl, now);
                    if taken.is_none() {
                        back.push(w);
                    }
                    taken
                }
                _ => None,
            });
        }
        if !back.is_empty() {
            self.release_claims(back.into_iter(), bound).await;
        }
        out
    }

    /// Gives back the jobs of the claims `writes` ([`Command::Release`] with each one's token:
    /// refused when the job is not, or no longer, as the claim left it: never written, or moved
    /// on by a reaper or another worker), all at once, for up to `bound`; what fails is logged
    /// and left to its lease, as after a worker's crash.
    pub(super) async fn release_claims(
        &self,
        writes: impl Iterator<Item = &Write>,
        bound: Duration,
    ) {
        let releases = writes.filter_map(|w| {
            let token = w.job.lease.as_ref()?.token;
            Some(async move {
                (
                    w.job.id,
                    self.apply_cmd(w.job.id, Command::Release { token }).await,
                )
            })
        });
        let Ok(done) = tokio::time::timeout(bound, futures::future::join_all(releases)).await
        else {
            tracing::warn!(
                "giving back the jobs of a failed claim: no answer in time, left to their leases"
            );
            return;
        };
        for (id, r) in done {
            match r {
                Ok(_) => tracing::info!(job_id = %id, "a failed claim's job given back"),
                // Not as the claim left it (or deleted since): not ours to give back.
                Err(StoreError::Transition(_) | StoreError::NotFound) => {}
                Err(e) => tracing::warn!(job_id = %id, error = %e,
                    "giving back a failed claim's job: left to its lease"),
            }
        }
    }
}

/// Whether `stored` is as the claim `w` left it: STARTING under its lease (the same worker and
/// fencing token: tokens are unique per claim, and a takeover or a fence changes it).
pub(super) fn own_claim(stored: &Job, w: &Write) -> bool {
    let (Some(l), Some(mine)) = (&stored.lease, &w.job.lease) else {
        return false;
    };
    stored.status == JobStatus::Starting && l.token == mine.token && l.worker == mine.worker
}

/// Whether a claim's lease `l` (of `lease_ttl`) has enough left at `now` to be taken: half the
/// lease, beyond how far two clocks may disagree ([`CLOCK_AGREE`]). The worker's own fence
/// (`worker/leases.rs`) stops a job whose lease was not renewed within `lease_ttl` less
/// `kill_grace` and a tenth, never less than half of it, counted from when it asked for the
/// claim: a job taken with less than half its lease left could already be past that, and be
/// stopped (its attempt spent) before its first heartbeat renews it.
pub(super) fn enough_lease(l: &Lease, lease_ttl: Duration, now: Micros) -> bool {
    let ttl = i64::try_from(lease_ttl.as_micros()).unwrap_or(i64::MAX);
    l.expires_at.saturating_sub(now) >= ttl / 2 + CLOCK_AGREE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_with_half_of_it_left_beyond_the_clocks_margin() {
        let lease = |expires_at| Lease {
            worker: "w".into(),
            token: 1,
            expires_at,
        };
        let ttl = Duration::from_secs(30);
        let now = 1_000_000_000;
        let need = 15_000_000 + CLOCK_AGREE;
        assert!(enough_lease(&lease(now + 30_000_000), ttl, now));
        assert!(enough_lease(&lease(now + need), ttl, now));
        assert!(!enough_lease(&lease(now + need - 1), ttl, now));
        assert!(!enough_lease(&lease(now - 5_000_000), ttl, now));
        assert!(!enough_lease(&lease(i64::MIN), ttl, now));
    }
}
