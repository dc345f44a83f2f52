//! An attempt that ends before its start is recorded: under load a no-op service job ends long
//! before the store's writer gets to its `Started`. The worker then leaves the attempt's finish in
//! a [`FinishSlot`], and [`JobStore::apply_start`](super::JobStore::apply_start) applies it right
//! after the start, in the same change where the backend can (the embedded store: one row write
//! instead of two, one write request instead of two). Both events (RUNNING, then the outcome) are
//! still appended, each status change notified.
//!
//! The slot is taken (and closed) by the backend when it applies the start: an offer made after
//! that is refused, and the worker records the finish on its own, as it always did. A start the
//! store refused with nothing written (a full disk, Redis out of memory) is tried again by the
//! worker, which first [restores](FinishSlot::restore) the slot: the finish that try took goes
//! with the next one. A slot made
//! with [`FinishSlot::refilling`] also carries the worker's [`Refill`]: the finish taken with the
//! start claims the runner's next QUEUED job in the same change (`store/handoff.rs`).

use std::sync::Arc;

use parking_lot::Mutex;

use super::handoff::Refill;
use crate::job::{Command, FinishOutcome};

/// Where a worker may leave an attempt's finish for the change that records its start.
#[derive(Debug, Default)]
pub struct FinishSlot {
    slot: Mutex<Slot>,
    refill: Option<Arc<Refill>>,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Offered(Command),
    /// Taken by a start (kept until it is known written: [`FinishSlot::restore`]).
    Taken(Command),
    Closed,
}

impl FinishSlot {
    /// An empty, open slot.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An empty, open slot whose finish, when taken with the start, claims the next job into
    /// `refill` (when there is one).
    pub fn refilling(refill: Option<Arc<Refill>>) -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::default(),
            refill,
        })
    }

    /// The refill a finish taken from this slot claims into.
    pub fn refill(&self) -> Option<&Refill> {
        self.refill.as_deref()
    }

    /// Leaves the finish of the attempt holding `token`; the outcome back when the start was
    /// already applied (or another finish offered): then the finish must be recorded on its own.
    pub fn offer(&self, token: u64, outcome: FinishOutcome) -> Result<(), FinishOutcome> {
        let mut s = self.slot.lock();
        if !matches!(*s, Slot::Empty) {
            return Err(outcome);
        }
        *s = Slot::Offered(Command::Finish { token, outcome });
        Ok(())
    }

    /// Whether a finish was offered and not taken yet.
    pub fn offered(&self) -> bool {
        matches!(*self.slot.lock(), Slot::Offered(_))
    }

    /// The finish offered so far, if any (a [`Command::Finish`]); closes the slot. Called by the
    /// backend as it applies the start.
    pub fn take(&self) -> Option<Command> {
        let mut s = self.slot.lock();
        match &*s {
            Slot::Offered(c) => {
                let c = c.clone();
                *s = Slot::Taken(c.clone());
                Some(c)
            }
            Slot::Empty => {
                *s = Slot::Closed;
                None
            }
            Slot::Taken(_) | Slot::Closed => None,
        }
    }

    /// The start that took (or closed) this slot was refused with nothing written, and is to be
    /// tried again: the finish it took is offered again, to go with the next try, and a slot it
    /// closed empty is open again. Nothing changes for a slot no start took.
    pub fn restore(&self) {
        let mut s = self.slot.lock();
        *s = match std::mem::take(&mut *s) {
            Slot::Taken(c) | Slot::Offered(c) => Slot::Offered(c),
            Slot::Empty | Slot::Closed => Slot::Empty,
        };
    }
}

/// [`JobStore::apply_start`](super::JobStore::apply_start) for a backend without a joint
/// change: the start, then the finish taken from the slot (if any), one after the other.
pub async fn one_by_one<S: super::JobStore + ?Sized>(
    store: &S,
    id: uuid::Uuid,
    start: Command,
    finish: &FinishSlot,
) -> super::Result<(crate::job::Job, Option<super::Result<crate::job::Job>>)> {
    let job = store.apply(id, start).await;
    // Closed even when the start was refused: an offer after this is recorded on its own.
    let end = finish.take();
    let job = job?;
    Ok(match end {
        Some(cmd) => (job, Some(store.apply(id, cmd).await)),
        None => (job, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_taken_once_and_none_after_the_take() {
        let s = FinishSlot::new();
        assert!(s.offer(7, FinishOutcome::Success(None)).is_ok());
        assert!(
            s.offer(7, FinishOutcome::Success(None)).is_err(),
            "one finish per slot"
        );
        assert!(matches!(s.take(), Some(Command::Finish { token: 7, .. })));
        assert!(s.take().is_none());
        let s = FinishSlot::new();
        assert!(s.take().is_none());
        assert!(
            s.offer(1, FinishOutcome::Success(None)).is_err(),
            "the start was applied: too late"
        );
    }

    #[test]
    fn a_finish_taken_by_a_refused_start_goes_with_the_next_try() {
        let s = FinishSlot::new();
        assert!(s.offer(7, FinishOutcome::Success(None)).is_ok());
        assert!(s.take().is_some());
        assert!(!s.offered());
        s.restore();
        assert!(s.offered(), "offered again");
        assert!(matches!(s.take(), Some(Command::Finish { token: 7, .. })));
        assert!(s.take().is_none(), "taken once per try");
        // Closed empty by a refused try: an attempt that ends before the next try goes with it.
        let s = FinishSlot::new();
        assert!(s.take().is_none());
        s.restore();
        assert!(s.offer(7, FinishOutcome::Success(None)).is_ok());
        assert!(s.take().is_some());
    }
}
