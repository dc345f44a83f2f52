//! The one buffered [`Reporter`]: what a job says is kept in memory and handed on in batches (at
//! most one batch per `delay`), so a chatty job costs a few writes per second, not one per line.
//! The worker sends batches to the store (`src/worker/reporter.rs`), `runyard launch` through the
//! job's signed hook (`src/cli/launch.rs`): each gives its own [`BatchSink`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;

use crate::{LogStream, Reporter, Room};

/// How long a pipe reader waits, at most, for room in a full buffer ([`Reporter::room`]) before
/// the oldest lines are dropped instead: the sink (the store) has not taken a batch for that
/// long. Once given up, nobody waits until a flush makes room again.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// What one flush hands on: the lines in the order they were said, and the latest progress.
#[derive(Debug, Default)]
pub struct Batch {
    /// Log lines with their stream and the time they were received.
    pub lines: Vec<(LogStream, SystemTime, String)>,
    /// The latest progress (and details) reported since the last batch.
    pub progress: Option<(f64, Option<Value>)>,
}

/// Where a [`BufferedReporter`]'s batches go. Batches are sent one at a time, in order.
#[async_trait]
pub trait BatchSink: Send + Sync + 'static {
    /// Sends one non-empty batch; failures are the sink's to log.
    async fn send(&self, batch: Batch);
}

/// The stderr line that stands where `n` of a job's lines were dropped (the oldest of those
/// waiting: the newest, the job's last word, are kept).
pub fn dropped_note(n: u64) -> String {
    format!(
        "[runyard] {n} line(s) dropped here: the job wrote them faster than they could be \
         stored (the newest are kept)"
    )
}

/// The stderr line that stands where a job's lines may be missing because they could not be
/// read (`why`), e.g. a container's output after its engine stayed out of reach.
pub fn lost_note(why: &str) -> String {
    format!("[runyard] line(s) dropped here: {why}")
}

/// What is buffered: lines (the newest `max_lines`), how many older ones were dropped since the
/// last batch, and the latest progress.
#[derive(Default)]
struct Pending {
    lines: VecDeque<(LogStream, SystemTime, String)>,
    /// How many of `lines` each stream has ([`stream_slot`]).
    per_stream: [usize; 3],
    dropped: u64,
    progress: Option<(f64, Option<Value>)>,
    /// Since when a reader has found the buffer full (reset when a flush takes it).
    full_since: Option<tokio::time::Instant>,
}

/// A [`Reporter`] that buffers and flushes at most `delay` after the first unsent report (at most
/// one batch per `delay`, however fast the job writes). A full buffer (`max_lines`) holds the
/// pipe readers back ([`Reporter::room`]): the job waits in its write until the next batch is
/// taken. Only when the sink has taken nothing for `max_wait` (a store down or far too slow), or
/// for a writer that does not wait, are the oldest waiting lines dropped rather than memory
/// growing without bound, and the next batch starts with a line saying how many: a job's last
/// lines, its final error, are never the ones lost, and no gap is silent.
pub struct BufferedReporter<S> {
    sink: S,
    /// Itself, for the delayed flush task (which must not keep the reporter alive).
    me: Weak<Self>,
    delay: Duration,
    max_lines: usize,
    max_wait: Duration,
    /// Woken when a flush takes the buffer (room again for waiting readers).
    room: tokio::sync::Notify,
    pending: Mutex<Pending>,
    scheduled: AtomicBool,
    /// Serialises flushes so batches reach the sink in order.
    flushing: tokio::sync::Mutex<()>,
}

impl<S: BatchSink> BufferedReporter<S> {
    /// A reporter sending to `sink`, at most every `delay`, keeping at most `max_lines` lines
    /// (readers wait for room up to [`MAX_WAIT`]).
    pub fn new(sink: S, delay: Duration, max_lines: usize) -> Arc<Self> {
        Self::with_max_wait(sink, delay, max_lines, MAX_WAIT)
    }

    /// [`Self::new`] with readers waiting for room up to `max_wait`.
    pub fn with_max_wait(
        sink: S,
        delay: Duration,
        max_lines: usize,
        max_wait: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            sink,
            me: me.clone(),
            delay,
            max_lines: max_lines.max(1),
            max_wait,
            room: tokio::sync::Notify::new(),
            pending: Mutex::new(Pending::default()),
            scheduled: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends whatever is buffered now (the attempt's last word goes through here).
    pub async fn flush(&self) {
        let _order = self.flushing.lock().await;
        let p = std::mem::take(&mut *self.pending.lock());
        self.room.notify_waiters();
        let mut lines = Vec::with_capacity(p.lines.len() + 1);
        if p.dropped > 0 {
            let first = p.lines.front().map_or_else(SystemTime::now, |l| l.1);
            lines.push((LogStream::Stderr, first, dropped_note(p.dropped)));
        }
        lines.extend(p.lines);
        let batch = Batch {
            lines,
            progress: p.progress,
        };
        if !batch.lines.is_empty() || batch.progress.is_some() {
            self.sink.send(batch).await;
        }
    }

    /// True when everything reported so far has reached the sink: nothing buffered, no flush
    /// under way. (The worker then may record the attempt's end without a flush first.)
    pub fn is_idle(&self) -> bool {
        // Held while looking: a flush that took the buffer has finished sending it.
        let Ok(_order) = self.flushing.try_lock() else {
            return false;
        };
        let p = self.pending.lock();
        p.lines.is_empty() && p.progress.is_none() && p.dropped == 0
    }

    /// Waits until the buffer has room, or until it has been full for `max_wait` (then returns:
    /// the line is taken, the oldest dropped).
    async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let give_up = {
                let mut p = self.pending.lock();
                if p.lines.len() < self.max_lines {
                    return;
                }
                *p.full_since.get_or_insert_with(tokio::time::Instant::now) + self.max_wait
            };
            if tokio::time::timeout_at(give_up, notified).await.is_err() {
                return;
            }
        }
    }

    fn schedule(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.scheduled.store(false, Ordering::Release);
            return;
        };
        // Weak: once the work is over (its final flush done), a pending delayed flush has
        // nothing to do and must not keep the reporter (and what its sink holds) alive.
        let me = self.me.clone();
        let delay = self.delay;
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(me) = me.upgrade() {
                me.scheduled.store(false, Ordering::Release);
                me.flush().await;
            }
        });
    }
}

/// A stream's place in [`Pending::per_stream`].
fn stream_slot(s: LogStream) -> usize {
    match s {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
        LogStream::Job => 2,
    }
}

impl Pending {
    /// The sink is slower than the job: the oldest line goes, not the newest; but never the only
    /// line of its stream (the pipes are read apart: a job's last word on stderr, read while
    /// thousands of its stdout lines still sat in their pipe, was pushed out by them).
    fn drop_one(&mut self) {
        let at = (0..self.lines.len().min(4))
            .find(|&i| self.per_stream[stream_slot(self.lines[i].0)] > 1)
            .unwrap_or(0);
        if let Some((s, _, _)) = self.lines.remove(at) {
            self.per_stream[stream_slot(s)] -= 1;
            self.dropped += 1;
        }
    }
}

impl<S: BatchSink> Reporter for BufferedReporter<S> {
    fn log(&self, stream: LogStream, line: String) {
        {
            let mut p = self.pending.lock();
            p.lines.push_back((stream, SystemTime::now(), line));
            p.per_stream[stream_slot(stream)] += 1;
            if p.lines.len() > self.max_lines {
                p.drop_one();
            }
        }
        self.schedule();
    }

    fn progress(&self, progress: f64, details: Option<Value>) {
        self.pending.lock().progress = Some((progress, details));
        self.schedule();
    }

    fn room(&self) -> Room<'_> {
        if self.pending.lock().lines.len() < self.max_lines {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(self.wait_for_room())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Batch>>);

    impl Collect {
        /// Every line sent, in order, over all batches.
        fn texts(&self) -> Vec<String> {
            let batches = self.0.lock();
            batches
                .iter()
                .flat_map(|b| b.lines.iter().map(|l| l.2.clone()))
                .collect()
        }
    }

    #[async_trait]
    impl BatchSink for Arc<Collect> {
        async fn send(&self, batch: Batch) {
            self.0.lock().push(batch);
        }
    }

    #[tokio::test]
    async fn batches_lines_after_the_delay() {
        let sink = Arc::new(Collect::default());
        let r = BufferedReporter::new(sink.clone(), Duration::from_millis(50), 10);
        for i in 0..5 {
            r.log(LogStream::Stdout, format!("l{i}"));
        }
        r.progress(0.5, None);
        assert!(sink.0.lock().is_empty(), "nothing is sent before the delay");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let batches = sink.0.lock();
        assert_eq!(batches.len(), 1, "one batch for a burst");
        let texts: Vec<&str> = batches[0].lines.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(texts, ["l0", "l1", "l2", "l3", "l4"]);
        assert_eq!(batches[0].progress.as_ref().map(|p| p.0), Some(0.5));
    }

    /// Lines written faster than the sink takes them (here, all before any flush can run, on a
    /// current-thread runtime): the oldest are dropped, the newest, the job's last word, kept,
    /// and the batch says how many went.
    #[tokio::test]
    async fn a_full_buffer_keeps_the_newest_lines_and_says_how_many_went() {
        let sink = Arc::new(Collect::default());
        let r = BufferedReporter::new(sink.clone(), Duration::from_secs(3600), 3);
        for i in 0..5 {
            r.log(LogStream::Stdout, format!("l{i}"));
        }
        r.log(LogStream::Stderr, "FATAL".into());
        r.flush().await;
        let texts = sink.texts();
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert!(
            texts[0].contains("3 line(s) dropped"),
            "the gap is said: {texts:?}"
        );
        assert_eq!(&texts[1..], ["l3", "l4", "FATAL"]);
    }

    /// The job's last stderr line read before the rest of its stdout (the pipes are read apart,
    /// and thousands of stdout lines can still sit in theirs): the stdout flood that follows
    /// pushes out older stdout lines, not that stderr line, the only one of its stream.
    #[tokio::test]
    async fn a_flood_of_one_stream_never_pushes_out_another_streams_last_line() {
        let sink = Arc::new(Collect::default());
        let r = BufferedReporter::new(sink.clone(), Duration::from_secs(3600), 3);
        r.log(LogStream::Stdout, "l0".into());
        r.log(LogStream::Stderr, "FATAL".into());
        for i in 1..10 {
            r.log(LogStream::Stdout, format!("l{i}"));
        }
        r.flush().await;
        let texts = sink.texts();
        assert!(texts[0].contains("8 line(s) dropped"), "{texts:?}");
        assert_eq!(&texts[1..], ["FATAL", "l8", "l9"]);
    }

    #[tokio::test]
    async fn flush_sends_at_once_and_an_empty_flush_sends_nothing() {
        let sink = Arc::new(Collect::default());
        let r = BufferedReporter::new(sink.clone(), Duration::from_secs(3600), 10);
        r.flush().await;
        assert!(sink.0.lock().is_empty());
        r.log(LogStream::Stderr, "x".into());
        r.flush().await;
        assert_eq!(sink.0.lock().len(), 1);
    }

    /// A sink that holds each batch until told to go on.
    struct Gate(Arc<tokio::sync::Semaphore>);

    #[async_trait]
    impl BatchSink for Gate {
        async fn send(&self, _batch: Batch) {
            let _ = self.0.acquire().await.map(|p| p.forget());
        }
    }

    #[tokio::test]
    async fn idle_only_once_everything_reported_was_sent() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let r = BufferedReporter::new(Gate(gate.clone()), Duration::from_secs(3600), 10);
        assert!(r.is_idle(), "nothing reported");
        r.progress(0.5, None);
        assert!(!r.is_idle(), "progress buffered");
        let flushing = tokio::spawn({
            let r = r.clone();
            async move { r.flush().await }
        });
        // The flush took the buffer and waits on the sink: still not idle.
        for _ in 0..100 {
            if r.pending.lock().progress.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!r.is_idle(), "a flush is under way");
        gate.add_permits(1);
        flushing.await.unwrap();
        assert!(r.is_idle(), "sent");
        r.log(LogStream::Stdout, "l".into());
        assert!(!r.is_idle(), "a line buffered");
    }

    /// Every line a reader writes once there is room ([`Reporter::room`], as the pipe readers
    /// do), on the sink's pace: a job far faster than one batch per delay loses nothing, in order.
    #[tokio::test]
    async fn a_reader_that_waits_for_room_loses_nothing_while_the_sink_keeps_up() {
        let sink = Arc::new(Collect::default());
        let r = BufferedReporter::new(sink.clone(), Duration::from_millis(5), 10);
        for i in 0..1000 {
            r.room().await;
            r.log(LogStream::Stdout, format!("l{i}"));
        }
        r.flush().await;
        let texts = sink.texts();
        let want: Vec<String> = (0..1000).map(|i| format!("l{i}")).collect();
        assert_eq!(texts, want);
        assert!(
            sink.0.lock().iter().all(|b| b.lines.len() <= 10),
            "bounded batches"
        );
    }

    /// A sink that collects each batch once let through.
    struct GatedCollect(Arc<tokio::sync::Semaphore>, Arc<Collect>);

    #[async_trait]
    impl BatchSink for GatedCollect {
        async fn send(&self, batch: Batch) {
            let _ = self.0.acquire().await.map(|p| p.forget());
            self.1 .0.lock().push(batch);
        }
    }

    /// A sink that takes nothing (a store down): a reader waits at most `max_wait` for room,
    /// then the oldest waiting lines go (never waiting again until a batch is taken), and the
    /// next batch says how many.
    #[tokio::test]
    async fn a_sink_that_takes_nothing_for_max_wait_drops_the_oldest_with_the_note() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let got = Arc::new(Collect::default());
        let sink = GatedCollect(gate.clone(), got.clone());
        let wait = Duration::from_millis(50);
        let r = BufferedReporter::with_max_wait(sink, Duration::from_millis(5), 3, wait);
        let write = async {
            for i in 0..10 {
                r.room().await;
                r.log(LogStream::Stdout, format!("l{i}"));
            }
        };
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the reader waits a bounded time");
        gate.add_permits(100);
        r.flush().await;
        let texts = got.texts();
        assert_eq!(texts.len(), 7, "{texts:?}");
        assert_eq!(
            &texts[..3],
            ["l0", "l1", "l2"],
            "taken before the sink stalled"
        );
        assert!(texts[3].contains("4 line(s) dropped"), "{texts:?}");
        assert_eq!(&texts[4..], ["l7", "l8", "l9"]);
    }
}
