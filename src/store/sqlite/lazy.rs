//! Write requests that may wait for the next commit ("lazy"): a worker's record of an attempt's
//! start (with its finish when the attempt had ended, `start.rs`). Nobody but the worker's slot
//! waits on it, so when submits are arriving one after another it rides in the next submit's
//! transaction instead of committing alone: with one producer submitting one job at a time, one
//! transaction per job instead of two (docs/benchmarks.md "Session 10: seq").
//!
//! A batch holding only lazy requests waits for an urgent one (any other request) only while
//! urgent requests arrive closer together than [`Window::max`] (1 ms by default), and at most until
//! twice the last gap between them after the last one, never more than `max` from now. With an
//! idle queue (submits further apart) nothing waits. Every guarantee stands as before: a request
//! is answered, its events published and its notices sent only after the commit that holds it.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::WriteOp;

/// A write request as queued for the writer thread.
pub(super) struct Queued {
    pub(super) op: WriteOp,
    /// May wait for the next commit (see the module docs).
    pub(super) lazy: bool,
}

/// When a batch of lazy requests waits for an urgent one.
pub(super) struct Window {
    /// The longest a lazy batch waits, and the largest gap between urgent requests for which it
    /// waits at all.
    max: Duration,
    /// When the last batch with an urgent request was formed.
    last: Option<Instant>,
    /// The gap between the last two such batches.
    gap: Duration,
    /// Waits `max` whatever the gaps (tests: the merge without its timing).
    fixed: bool,
}

/// The default [`Window::max`].
const LAZY_WAIT: Duration = Duration::from_millis(1);

impl Default for Window {
    fn default() -> Self {
        Self::new(LAZY_WAIT)
    }
}

impl Window {
    pub(super) fn new(max: Duration) -> Self {
        Self {
            max,
            last: None,
            gap: Duration::MAX,
            fixed: false,
        }
    }

    /// A window where a lazy batch always waits `max` for an urgent request.
    #[cfg(test)]
    pub(super) fn fixed(max: Duration) -> Self {
        Self {
            fixed: true,
            ..Self::new(max)
        }
    }

    /// A batch with an urgent request was formed at `now`.
    fn urgent(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.gap = now.saturating_duration_since(last);
        }
        self.last = Some(now);
    }

    /// Until when a batch of lazy requests formed at `now` waits for an urgent one, if at all.
    fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.fixed {
            return Some(now + self.max);
        }
        let last = self.last?;
        if self.gap > self.max {
            return None;
        }
        let until = (last + self.gap * 2).min(now + self.max);
        (until > now).then_some(until)
    }
}

/// Gathers the next batch into `batch` (which may hold give-backs already: urgent): blocks for
/// the first request, takes whatever else is queued, and when all of it is lazy waits for an
/// urgent request within the [`Window`]. False once the channel is closed and nothing is left.
pub(super) fn gather(
    rx: &mut mpsc::Receiver<Queued>,
    batch: &mut Vec<WriteOp>,
    window: &mut Window,
    max_batch: usize,
) -> bool {
    let mut only_lazy = batch.is_empty();
    if batch.is_empty() {
        let Some(first) = rx.blocking_recv() else {
            return false;
        };
        only_lazy = first.lazy;
        batch.push(first.op);
    }
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(q) => {
                only_lazy &= q.lazy;
                batch.push(q.op);
            }
            Err(_) => break,
        }
    }
    if only_lazy {
        if let Some(until) = window.deadline(Instant::now()) {
            while only_lazy && batch.len() < max_batch {
                let Some(q) = recv_until(rx, until) else {
                    break;
                };
                only_lazy &= q.lazy;
                batch.push(q.op);
            }
            // What else came with the urgent request.
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(q) => batch.push(q.op),
                    Err(_) => break,
                }
            }
        }
    }
    if !only_lazy {
        window.urgent(Instant::now());
    }
    true
}

/// Wakes the writer thread parked in [`recv_until`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next request, waiting on this (non-async) thread until `until` at most; `None` when the
/// time ran out or the channel is closed.
fn recv_until(rx: &mut mpsc::Receiver<Queued>, until: Instant) -> Option<Queued> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match rx.poll_recv(&mut cx) {
            Poll::Ready(q) => return q,
            Poll::Pending => {
                let now = Instant::now();
                if now >= until {
                    return None;
                }
                std::thread::park_timeout(until - now);
            }
        }
    }
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;
