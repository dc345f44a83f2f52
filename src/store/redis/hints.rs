//! Which runner queues this process knows to be empty, so a claim of one of them costs no round
//! trip (a worker asks every runner for work each time it wakes: after each job that ends, each
//! new QUEUED job of any runner, each poll).
//!
//! A claim whose pick emptied a runner's queue (`lua/claim.lua` says so) records it as empty,
//! with the notice sequence number read before the pick was sent. Every job that becomes QUEUED
//! is announced (`lua/commit.lua`, `lua/expired.lua` on the notice channel; this process's own
//! commits locally), and each announcement received bumps the sequence and the runner's mark
//! BEFORE the listeners are told (the worker wakes on them). A later claim is answered "nothing"
//! without asking Redis only while no announcement for that runner (nor a "every runner", sent
//! after the notice subscription came back) was received since that pick was sent, and for at
//! most [`EMPTY_FOR`]. A job queued after the pick is announced after the pick ran, so after
//! the sequence number was read: its announcement invalidates the record. A lost announcement
//! (notices are hints) costs at most [`EMPTY_FOR`] more than it did before: the next claim after
//! that asks Redis again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long "this queue is empty" is believed without any announcement for it.
pub(super) const EMPTY_FOR: Duration = Duration::from_millis(250);
/// Most runners remembered (a bound against unbounded runner names; cleared beyond).
const MAX_RUNNERS: usize = 4096;

/// The announcements received and the queues known empty (see the module docs).
#[derive(Default)]
pub(super) struct QueueHints {
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Whether announcements are received at all: until the notice subscription is up (and
    /// while it is lost) no queue is believed empty.
    live: bool,
    /// Bumped by every announcement received.
    seq: u64,
    /// The sequence number of the last "every runner" announcement.
    all: u64,
    /// Per runner: the sequence number of its last announcement.
    last: HashMap<String, u64>,
    /// Per runner: the queue was emptied by a pick sent at sequence number `.0`, at `.1`.
    empty: HashMap<String, (u64, Instant)>,
}

impl QueueHints {
    /// A job became QUEUED for `runner` (`*`: for any runner, or announcements may be lost).
    pub(super) fn queued(&self, runner: &str) {
        let mut i = self.inner.lock();
        i.seq += 1;
        let seq = i.seq;
        if runner == "*" {
            i.all = seq;
            i.empty.clear();
        } else {
            if i.last.len() >= MAX_RUNNERS {
                i.last.clear();
                i.empty.clear();
                i.all = seq;
            }
            i.last.insert(runner.to_string(), seq);
            i.empty.remove(runner);
        }
    }

    /// The notice subscription is up (`true`) or lost: either way what was known is forgotten,
    /// picks sent before count for nothing (announcements may have been missed meanwhile).
    pub(super) fn live(&self, up: bool) {
        let mut i = self.inner.lock();
        i.live = up;
        i.empty.clear();
        i.seq += 1;
        i.all = i.seq;
    }

    /// The sequence number to read before a pick of `runner` is sent.
    pub(super) fn before_pick(&self) -> u64 {
        self.inner.lock().seq
    }

    /// The pick of `runner` sent at sequence number `seq` left its queue empty.
    pub(super) fn emptied(&self, runner: &str, seq: u64) {
        let mut i = self.inner.lock();
        if i.empty.len() >= MAX_RUNNERS {
            i.empty.clear();
        }
        i.empty.insert(runner.to_string(), (seq, Instant::now()));
    }

    /// Whether `runner`'s queue is known to be empty (see the module docs).
    pub(super) fn known_empty(&self, runner: &str) -> bool {
        let i = self.inner.lock();
        let Some(&(seq, at)) = i.empty.get(runner) else {
            return false;
        };
        i.live
            && at.elapsed() < EMPTY_FOR
            && i.all <= seq
            && i.last.get(runner).is_none_or(|&l| l <= seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_queue_is_empty_until_announced() {
        let h = QueueHints::default();
        h.live(true);
        assert!(!h.known_empty("r"));
        let s = h.before_pick();
        h.emptied("r", s);
        assert!(h.known_empty("r"));
        assert!(!h.known_empty("other"));
        // Another runner's announcement changes nothing for this one.
        h.queued("other");
        assert!(h.known_empty("r"));
        h.queued("r");
        assert!(!h.known_empty("r"));
        // Every runner at once.
        let s = h.before_pick();
        h.emptied("r", s);
        h.queued("*");
        assert!(!h.known_empty("r"));
    }

    #[test]
    fn an_announcement_during_the_pick_wins() {
        let h = QueueHints::default();
        h.live(true);
        let s = h.before_pick();
        // The job is announced while the (empty) pick is on its way back.
        h.queued("r");
        h.emptied("r", s);
        assert!(!h.known_empty("r"));
        let s = h.before_pick();
        h.queued("*");
        h.emptied("r", s);
        assert!(!h.known_empty("r"));
    }

    #[test]
    fn empty_is_believed_for_a_short_while_only() {
        let h = QueueHints::default();
        h.live(true);
        let s = h.before_pick();
        h.emptied("r", s);
        h.inner.lock().empty.get_mut("r").unwrap().1 = Instant::now() - EMPTY_FOR;
        assert!(!h.known_empty("r"));
    }

    #[test]
    fn nothing_is_empty_while_announcements_are_not_received() {
        let h = QueueHints::default();
        let s = h.before_pick();
        h.emptied("r", s);
        assert!(!h.known_empty("r"), "before the subscription is up");
        h.live(true);
        assert!(!h.known_empty("r"), "a pick from before the subscription");
        let s = h.before_pick();
        h.live(false);
        h.live(true);
        h.emptied("r", s);
        assert!(
            !h.known_empty("r"),
            "a pick sent before a loss, answered after"
        );
        let s = h.before_pick();
        h.emptied("r", s);
        assert!(h.known_empty("r"));
        h.live(false);
        assert!(!h.known_empty("r"), "subscription lost");
        h.live(true);
        assert!(!h.known_empty("r"), "records from before the loss are gone");
    }
}
