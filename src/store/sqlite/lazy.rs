//! Write requests that may wait for the next commit ("lazy"): a worker's record of an attempt's
//! start (with its finish when the attempt had ended, `start.rs`). Nobody but the worker's slot
//! waits on it, so when submits are arriving one after another it rides in the next submit's
//! transaction instead of committing alone: with one producer submitting one job at a time, one
//! transaction per job instead of two (docs/benchmarks.md "Session 10: seq").
//!
//! Lazy requests do not go through the writer's channel: they wait in [`Lazy`], which wakes the
//! writer only when it sleeps without a deadline (nothing expected soon), so a start that will
//! ride in the next commit costs no wake-up of the writer thread either. The writer takes them
//! with the next urgent request (any other). While urgent requests arrive closer together than
//! [`Window::max`] (1 ms by default) it waits for one at most until twice the last gap between
//! them after the last one, never more than `max` from when it looks, then commits the lazy ones
//! alone. With an idle queue (submits further apart) nothing waits. Every guarantee stands as
//! before: a request is answered, its events published and its notices sent only after the
//! commit that holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::WriteOp;

/// The lazy requests waiting for the writer.
#[derive(Default)]
pub(super) struct Lazy {
    ops: Mutex<Vec<WriteOp>>,
    /// The writer sleeps without a deadline: a lazy request must wake it.
    asleep: AtomicBool,
    /// The writer thread, to wake it.
    writer: OnceLock<std::thread::Thread>,
}

impl Lazy {
    /// Queues a lazy request (waking the writer only when it sleeps without a deadline).
    pub(super) fn push(&self, op: WriteOp) {
        self.ops.lock().push(op);
        if self.asleep.load(Ordering::SeqCst) {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }

    /// How many lazy requests wait.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.ops.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.ops.lock().is_empty()
    }
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

/// Gathers the next batch into `batch` (which may hold give-backs already: urgent): waits for an
/// urgent request, or for lazy ones as the [`Window`] says (module docs), then takes whatever else
/// is waiting, the lazy requests too. False once the channel is closed and nothing is left.
pub(super) fn gather(
    (rx, lazy): (&mut mpsc::Receiver<WriteOp>, &Lazy),
    batch: &mut Vec<WriteOp>,
    window: &mut Window,
    max_batch: usize,
) -> bool {
    let me = lazy.writer.get_or_init(std::thread::current);
    let waker = Waker::from(Arc::new(Unpark(me.clone())));
    let mut cx = Context::from_waker(&waker);
    let mut urgent = !batch.is_empty();
    let mut closed = false;
    while !urgent {
        match rx.poll_recv(&mut cx) {
            Poll::Ready(Some(op)) => {
                batch.push(op);
                urgent = true;
                break;
            }
            Poll::Ready(None) => {
                closed = true;
                break;
            }
            Poll::Pending => {}
        }
        let now = Instant::now();
        let until = window.deadline(now);
        if until.is_none() && !lazy.is_empty() {
            break; // Nothing urgent expected soon: the lazy requests go alone.
        }
        match until {
            Some(until) => std::thread::park_timeout(until - now),
            None => {
                // Sleeps until woken: by an urgent request (the waker) or a lazy one (`push`).
                lazy.asleep.store(true, Ordering::SeqCst);
                if lazy.is_empty() {
                    std::thread::park();
                }
                lazy.asleep.store(false, Ordering::SeqCst);
            }
        }
    }
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    batch.append(&mut lazy.ops.lock());
    if urgent {
        window.urgent(Instant::now());
    }
    !(closed && batch.is_empty())
}

/// Wakes the writer thread parked in [`gather`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
#[path = "lazy_tests.rs"]
mod tests;
