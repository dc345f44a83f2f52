//! One cursor for every transport: replay from the store after `last_id`, then live from the
//! hub, with no gap and no duplicate at the handoff.
//!
//! Why no gap: the stream subscribes to its channel's ring *before* the replay reads the store,
//! and the replay waits until the hub's tail knows where it starts ([`super::Hub::tail_started`]),
//! so every event committed after that read reaches the ring; events committed before it are in
//! the replay. Why no duplicate: live events at or below the cursor (the replay's last id) are
//! skipped; the ring delivers a channel's events in id order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::types::TypeFilter;
use super::{EventId, Frame, Subscription, REPLAY_PAGE};
use crate::job::Event;
use crate::store::{Store, StoreError};

/// How often a stream waiting for the hub's tail to start checks that the store answers.
const TAIL_START_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves once `d` has passed (never for `None`): the end of a stream opened with a credential
/// that expires ([`crate::auth::tokens::Grant::remaining`]).
pub async fn until(d: Option<std::time::Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Why a stream stops.
#[derive(Debug)]
pub enum Stop {
    /// The store failed while replaying.
    Store(StoreError),
}

/// A page of the replay, and whether each of its events is shown.
type ShownPage = (Vec<Event>, Vec<bool>);

/// A stream's cursor and source (see the module docs).
pub struct Follower {
    store: Arc<dyn Store>,
    channel: Option<String>,
    cursor: Option<(EventId, String)>,
    sub: Subscription,
    replaying: bool,
    /// The hub's tail was seen started (see the module docs).
    tail_started: bool,
    /// The replay read in flight (a page, and for a caller confined to types which of its
    /// events are shown), kept across a cancelled [`Follower::next`] ([`finish_read`]).
    read: Option<JoinHandle<Result<ShownPage, StoreError>>>,
    /// The store probe in flight while the tail has not started, likewise.
    probe: Option<JoinHandle<Result<Option<String>, StoreError>>>,
    /// For a caller confined to job types: the events of its types' jobs only.
    types: Option<TypeFilter>,
    /// A live event taken from the ring whose job's type was being read when [`Follower::next`]
    /// was cancelled: handed on first by the next call, which awaits the same read (`learn`).
    held: Option<Arc<Frame>>,
    /// The read of `held`'s job type in flight, likewise.
    learn: Option<JoinHandle<Result<Vec<bool>, StoreError>>>,
}

/// Awaits the store read in `slot`, started by `start` if none is in flight. A transport calls
/// [`Follower::next`] inside `select!` (a WebSocket's ping tick cancels it): the read's task
/// stays in `slot` and the next call awaits the same one, so a slow read (the store away, retried
/// for up to `store.retry`) ends once, with its result or its error, instead of starting over at
/// every ping (with pings more often than `store.retry`, a stream opened while Redis was away
/// never closed).
async fn finish_read<T: Send + 'static>(
    slot: &mut Option<JoinHandle<Result<T, StoreError>>>,
    start: impl FnOnce() -> JoinHandle<Result<T, StoreError>>,
) -> Result<T, Stop> {
    let r = slot.get_or_insert_with(start).await;
    *slot = None;
    match r {
        Ok(r) => r.map_err(Stop::Store),
        Err(e) => Err(Stop::Store(StoreError::Backend(format!(
            "event stream read failed: {e}"
        )))),
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(h) = self.read.take() {
            h.abort();
        }
        if let Some(h) = self.probe.take() {
            h.abort();
        }
        if let Some(h) = self.learn.take() {
            h.abort();
        }
    }
}

impl Follower {
    /// Follows `channel` (`None`: the global stream) after `last_id` (exclusive; `None`: from the
    /// oldest kept). `last_id` must be an event id (checked by the handlers); one of
    /// another database gets a `resync` from the store, which moves the cursor back.
    pub fn new(
        store: Arc<dyn Store>,
        channel: Option<String>,
        last_id: Option<String>,
        sub: Subscription,
    ) -> Self {
        let cursor = last_id.and_then(|s| EventId::parse(&s).map(|id| (id, s)));
        Self {
            store,
            channel,
            cursor,
            sub,
            replaying: true,
            tail_started: false,
            read: None,
            probe: None,
            types: None,
            held: None,
            learn: None,
        }
    }

    /// Shows only the events `types` shows (a caller confined to job types).
    pub fn with_types(mut self, types: Option<TypeFilter>) -> Self {
        self.types = types;
        self
    }

    /// The id of the last event handed out (what a client resumes from).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_ref().map(|(_, s)| s.as_str())
    }

    /// True when the stream is more than `events.send_buffer` events behind its channel's ring.
    pub fn lagging(&self) -> bool {
        self.sub.rx.len() > self.sub.hub().buffer()
    }

    /// Counts `n` events written to the client.
    pub fn delivered(&self, n: usize) {
        self.sub
            .hub()
            .stats
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Waits until the hub's tail has started (see the module docs), or the store fails.
    async fn await_tail(&mut self) -> Result<(), Stop> {
        while !self.tail_started {
            // The tail retries its start while the store is away (Redis down at start-up): the
            // stream asks the store meanwhile, so a client is told (a WebSocket closes 1011, as
            // a failed replay does) rather than left waiting in silence.
            let hub = self.sub.hub().clone();
            let store = self.store.clone();
            tokio::select! {
                // A tail that started wins over a probe that failed at the same time.
                biased;
                _ = hub.tail_started() => self.tail_started = true,
                r = finish_read(&mut self.probe, || tokio::spawn(async move {
                    tokio::time::sleep(TAIL_START_PROBE).await;
                    store.last_event_id().await
                })) => {
                    r?;
                }
            }
        }
        if let Some(h) = self.probe.take() {
            h.abort();
        }
        Ok(())
    }

    /// The next events, in id order (waits for live ones).
    pub async fn next(&mut self) -> Result<Vec<Arc<Frame>>, Stop> {
        self.await_tail().await?;
        loop {
            if self.replaying {
                let (store, channel) = (self.store.clone(), self.channel.clone());
                let after = self.cursor().map(str::to_string);
                let types = self.types.clone();
                let (page, shown) = finish_read(&mut self.read, || {
                    tokio::spawn(async move {
                        let page = store
                            .events(channel.as_deref(), after.as_deref(), REPLAY_PAGE)
                            .await?;
                        let shown = match types {
                            Some(t) => {
                                let ids: Vec<&str> =
                                    page.iter().map(|e| e.job_id.as_str()).collect();
                                t.shown(&ids).await?
                            }
                            None => vec![true; page.len()],
                        };
                        Ok((page, shown))
                    })
                })
                .await?;
                let real = page.iter().filter(|e| e.kind != "resync").count();
                let mut out = Vec::with_capacity(page.len());
                for (ev, shown) in page.iter().zip(shown) {
                    let Some(f) = Frame::of(ev) else { continue };
                    // A resync moves the cursor, backwards too: one below it says the cursor is
                    // of another database and where this one goes on from.
                    let resync = ev.kind == "resync";
                    if !resync && self.cursor.as_ref().is_some_and(|(c, _)| f.id <= *c) {
                        continue;
                    }
                    self.cursor = Some((f.id, f.id_text.to_string()));
                    if shown {
                        out.push(Arc::new(f));
                    }
                }
                if real < REPLAY_PAGE {
                    self.replaying = false;
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                continue;
            }
            let live = match self.held.take() {
                Some(f) => Ok(f),
                None => self.sub.rx.recv().await,
            };
            match live {
                Ok(f) if f.reset => self.replaying = true,
                Ok(f) => {
                    if self.cursor.as_ref().is_some_and(|(c, _)| f.id <= *c) {
                        continue;
                    }
                    let shown = self.live_shown(&f).await?;
                    self.cursor = Some((f.id, f.id_text.to_string()));
                    if !shown {
                        continue;
                    }
                    return Ok(vec![f]);
                }
                // Behind the ring (a burst, or a replay that took a while): read on from the
                // store. A client that does not take its events is caught by the transport
                // (a write that waits while the stream is behind, see `ws.rs`).
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    self.sub.rx = self.sub.rx.resubscribe();
                    self.replaying = true;
                }
            }
        }
    }

    /// Whether the live event `f` is shown (a caller confined to types). Its job's type is read
    /// in a task kept with `f` ([`Self::held`]) across a cancelled [`Self::next`], so the read
    /// ends once, with its answer or its error, however often the transport cancels.
    async fn live_shown(&mut self, f: &Arc<Frame>) -> Result<bool, Stop> {
        let Some(t) = &self.types else {
            return Ok(true);
        };
        if self.learn.is_none() {
            if let Some(shown) = t.known(&f.job_id) {
                return Ok(shown);
            }
        }
        self.held = Some(f.clone());
        let (t, id) = (t.clone(), f.job_id.to_string());
        let shown = finish_read(&mut self.learn, || {
            tokio::spawn(async move { t.shown(&[id]).await })
        })
        .await;
        self.held = None;
        Ok(shown?.first() == Some(&true))
    }

    /// Counts a slow-consumer close decided outside [`Self::next`] (a write that stalled).
    pub fn count_slow(&self) {
        self.sub
            .hub()
            .stats
            .slow_closed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The hub's counters.
    pub fn stats(&self) -> &super::hub::Stats {
        &self.sub.hub().stats
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::events::hub::{tail_loop, Hub};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{JobStore, StoreSettings};

    /// A stream opened before the hub's tail task ran (a loaded machine at start-up: CI saw
    /// a WebSocket miss the burst's first events) still gets every event committed before the
    /// tail started: its replay waits for the tail's start, so it reads them from the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_opened_before_the_tail_started_misses_no_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
        let hub = Hub::new(8, 8, 64);
        let mut f = Follower::new(store.clone(), None, None, hub.subscribe(None).expect("sub"));
        let reader = tokio::spawn(async move {
            let mut ids = Vec::new();
            while ids.len() < 2 {
                ids.extend(f.next().await.expect("next").iter().map(|fr| fr.id.0));
            }
            ids
        });
        // The stream is open and asking for events; the first job's event is committed before
        // the tail starts, the second's after.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job = || crate::job::Job::new("t", "r", crate::job::now_us());
        store.submit(job()).await.expect("submit");
        let stop = CancellationToken::new();
        let tail = tokio::spawn(tail_loop(hub.clone(), store.clone(), stop.clone()));
        hub.tail_started().await;
        store.submit(job()).await.expect("submit");
        let ids = tokio::time::timeout(Duration::from_secs(5), reader).await;
        stop.cancel();
        let _ = tail.await;
        let ids = ids
            .expect("both events reach the stream within 5 s")
            .expect("reader");
        // The store's two events, in order (each database numbers from a first id of its own).
        let stored: Vec<u64> = crate::store::EventLog::events(store.as_ref(), None, None, 10)
            .await
            .expect("events")
            .iter()
            .map(|e| e.id.parse().expect("an embedded id"))
            .collect();
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert_eq!(ids, stored, "no gap, no duplicate");
    }
}
