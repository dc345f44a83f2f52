//! The per-process fan-out of live events (see the module docs of [`crate::events`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Frame;
use crate::store::Store;

/// Events the tail reads per store call.
const TAIL_PAGE: usize = 1000;
/// While no stream is open on this node, the tail reads at most this often (on Redis only the
/// newest id, [`follow_tail`]: nobody here listens to the events in between), a stream that
/// opens wakes it at once, and it saves the store a read per commit that nobody here listens to
/// (on Redis an `XREAD` round trip per commit call).
const IDLE_PACE: Duration = Duration::from_millis(250);

/// The connections of the API's cap (`api.max_connections`, as clamped) that event streams and
/// long polls may never take, kept for ordinary requests (`/health`, submits): an eighth of the
/// cap, at least 16 (a handful of probes and clients at once), at most half of a small cap.
pub fn api_reserve(api_cap: usize) -> usize {
    (api_cap / 8).max(16).min(api_cap.div_ceil(2))
}

/// The streams this node admits: `events.max_connections`, but never more than the API's
/// connection cap less [`api_reserve`] (streams hold an API connection each).
pub fn stream_cap(events_max: usize, api_cap: usize) -> usize {
    events_max.min(api_cap - api_reserve(api_cap))
}

/// A long poll's place under the node's stream cap, given back when dropped.
pub struct PollSlot(Arc<Hub>);

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut g = self.0.chans.lock();
        g.polls = g.polls.saturating_sub(1);
    }
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `events.max_connections` streams are open on this node.
    Node,
    /// `events.max_per_channel` streams are open on this channel.
    Channel,
}

impl Refused {
    /// For a person (a close reason, an error message).
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Node => {
                "too many event streams on this node (events.max_connections, at most \
                 api.max_connections less the connections kept for other requests)"
            }
            Refused::Channel => "too many event streams on this channel (events.max_per_channel)",
        }
    }
}

/// Counters of the event transports (plain atomics; read with [`Hub::stats`]).
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) refused_node: AtomicU64,
    pub(crate) refused_channel: AtomicU64,
    pub(crate) slow_closed: AtomicU64,
    pub(crate) ping_timeouts: AtomicU64,
    pub(crate) shutdown_closed: AtomicU64,
    pub(crate) expired_closed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) tail_errors: AtomicU64,
}

/// A reading of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Streams open now (WebSocket and SSE).
    pub open: u64,
    /// Long polls waiting now ([`Hub::hold_poll`]), counted with `open` against the cap.
    pub polls: u64,
    /// Channels (and the global stream) with at least one stream open.
    pub channels: u64,
    /// Streams refused at `events.max_connections` (WebSocket close 1013, SSE 503).
    pub refused_node: u64,
    /// Streams refused at `events.max_per_channel`.
    pub refused_channel: u64,
    /// Streams closed as slow consumers (WebSocket close 1008).
    pub slow_closed: u64,
    /// WebSockets closed for a missed pong.
    pub ping_timeouts: u64,
    /// Streams closed because the server stopped (WebSocket close 1012).
    pub shutdown_closed: u64,
    /// Streams closed when the JWT they were opened with expired (WebSocket close 1008).
    pub expired_closed: u64,
    /// Events written to streams.
    pub delivered: u64,
    /// Failed reads of the global stream by the tail (retried).
    pub tail_errors: u64,
}

struct Chan {
    tx: broadcast::Sender<Arc<Frame>>,
    conns: usize,
}

#[derive(Default)]
struct Chans {
    by_name: HashMap<Box<str>, Chan>,
    global: Option<Chan>,
    open: usize,
    /// Long polls waiting ([`Hub::hold_poll`]), counted with `open` against the node's cap.
    polls: usize,
}

/// The fan-out.
pub struct Hub {
    chans: parking_lot::Mutex<Chans>,
    max_connections: usize,
    max_per_channel: usize,
    buffer: usize,
    pub(crate) stats: Stats,
    /// Woken when a stream opens (the tail stops pacing, see [`IDLE_PACE`]).
    opened: tokio::sync::Notify,
    /// True once the tail knows where it starts ([`tail_loop`]). A stream replays only after
    /// that ([`Hub::tail_started`]), so every event its replay does not see is one the tail
    /// publishes: a stream opened before the tail task ran (a loaded machine at start-up)
    /// missed the events committed between its replay and the tail's start.
    started: tokio::sync::watch::Sender<bool>,
    /// The job types read for callers confined to types, shared by every stream and poll.
    pub types: Arc<super::types::JobTypes>,
}

impl Hub {
    /// A hub with these caps and ring size.
    pub fn new(max_connections: usize, max_per_channel: usize, buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            chans: Default::default(),
            max_connections,
            max_per_channel,
            buffer: buffer.max(1),
            stats: Stats::default(),
            opened: tokio::sync::Notify::new(),
            started: tokio::sync::watch::Sender::new(false),
            types: Default::default(),
        })
    }

    /// Waits until the tail knows where it starts (at once after that): before a stream's
    /// first replay ([`super::follow`]).
    pub async fn tail_started(&self) {
        let mut rx = self.started.subscribe();
        // Err only if the sender is gone, and the hub holds it.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The tail knows where it starts, or cannot open (live events are then off, and a stream
    /// still replays from the store).
    fn mark_started(&self) {
        self.started.send_replace(true);
    }

    /// The hub of a server whose API admits `api_cap` connections: at most [`stream_cap`]
    /// streams, logged when that is below `events.max_connections`.
    pub fn for_server(c: &crate::config::EventsConfig, api_cap: usize) -> Arc<Self> {
        let cap = stream_cap(c.max_connections, api_cap);
        // Said at INFO only for a value someone set: the default is meant to be capped so.
        if cap < c.max_connections
            && c.max_connections != crate::config::EventsConfig::default().max_connections
        {
            tracing::info!(
                configured = c.max_connections,
                cap,
                api_max_connections = api_cap,
                kept_for_requests = api_reserve(api_cap),
                "events.max_connections lowered to keep API connections for other requests"
            );
        } else if cap < c.max_connections {
            tracing::debug!(
                cap,
                "events.max_connections (default) capped by api.max_connections"
            );
        }
        Self::new(cap, c.max_per_channel, c.send_buffer)
    }

    /// How many events a stream may fall behind.
    pub fn buffer(&self) -> usize {
        self.buffer
    }

    /// Admits a stream of `channel` (`None`: the global stream) or refuses it at a cap.
    pub fn subscribe(self: &Arc<Self>, channel: Option<&str>) -> Result<Subscription, Refused> {
        let mut g = self.chans.lock();
        if g.open + g.polls >= self.max_connections {
            self.stats.refused_node.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Node);
        }
        let buffer = self.buffer;
        let new_chan = || Chan {
            tx: broadcast::channel(buffer).0,
            conns: 0,
        };
        let chan = match channel {
            Some(c) => {
                if !g.by_name.contains_key(c) {
                    g.by_name.insert(c.into(), new_chan());
                }
                g.by_name.get_mut(c).expect("just inserted")
            }
            None => g.global.get_or_insert_with(new_chan),
        };
        if chan.conns >= self.max_per_channel {
            self.stats.refused_channel.fetch_add(1, Ordering::Relaxed);
            // A channel entry made just now for nobody is not kept.
            if chan.conns == 0 {
                drop_if_idle(&mut g, channel);
            }
            return Err(Refused::Channel);
        }
        chan.conns += 1;
        let rx = chan.tx.subscribe();
        g.open += 1;
        self.opened.notify_waiters();
        Ok(Subscription {
            hub: self.clone(),
            channel: channel.map(Into::into),
            rx,
        })
    }

    /// Lets a long poll wait for events, holding its connection, while streams and waiting polls
    /// leave room under the node's cap; `None`: the poll answers at once instead.
    pub fn hold_poll(self: &Arc<Self>) -> Option<PollSlot> {
        let mut g = self.chans.lock();
        if g.open + g.polls >= self.max_connections {
            return None;
        }
        g.polls += 1;
        Some(PollSlot(self.clone()))
    }

    /// Hands committed events to the streams listening to their channels.
    pub fn publish(&self, frames: &[Arc<Frame>]) {
        let g = self.chans.lock();
        for f in frames {
            if let Some(c) = g.by_name.get(&*f.channel) {
                let _ = c.tx.send(f.clone());
            }
            if let Some(c) = &g.global {
                let _ = c.tx.send(f.clone());
            }
        }
    }

    /// Whether no stream is open on this node.
    fn idle(&self) -> bool {
        self.chans.lock().open == 0
    }

    /// Whether a stream open now receives the events of `channel` (its own ring, or the global
    /// stream's).
    fn listens(&self, channel: &str) -> bool {
        let g = self.chans.lock();
        g.global.is_some() || g.by_name.contains_key(channel)
    }

    /// Tells every stream to re-read from the store (the tail may have missed events).
    pub fn reset_all(&self) {
        let g = self.chans.lock();
        let f = Arc::new(Frame::reset());
        for c in g.by_name.values().chain(g.global.iter()) {
            let _ = c.tx.send(f.clone());
        }
    }

    /// The counters and gauges.
    pub fn stats(&self) -> StatsSnapshot {
        let (open, polls, channels) = {
            let g = self.chans.lock();
            let channels = g.by_name.len() + usize::from(g.global.is_some());
            (g.open, g.polls, channels)
        };
        let s = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            open: open as u64,
            polls: polls as u64,
            channels: channels as u64,
            refused_node: r(&s.refused_node),
            refused_channel: r(&s.refused_channel),
            slow_closed: r(&s.slow_closed),
            ping_timeouts: r(&s.ping_timeouts),
            shutdown_closed: r(&s.shutdown_closed),
            expired_closed: r(&s.expired_closed),
            delivered: r(&s.delivered),
            tail_errors: r(&s.tail_errors),
        }
    }

    fn leave(&self, channel: Option<&str>) {
        let mut g = self.chans.lock();
        g.open = g.open.saturating_sub(1);
        let chan = match channel {
            Some(c) => g.by_name.get_mut(c),
            None => g.global.as_mut(),
        };
        if let Some(chan) = chan {
            chan.conns = chan.conns.saturating_sub(1);
            if chan.conns == 0 {
                drop_if_idle(&mut g, channel);
            }
        }
    }
}

fn drop_if_idle(g: &mut Chans, channel: Option<&str>) {
    match channel {
        Some(c) => {
            g.by_name.remove(c);
            if g.by_name.capacity() > 64 && g.by_name.len() < g.by_name.capacity() / 4 {
                g.by_name.shrink_to_fit();
            }
        }
        None => g.global = None,
    }
}

/// A stream's place in the hub: its ring receiver; leaving (drop) frees the slot and collects
/// the channel's ring when it was the last.
pub struct Subscription {
    hub: Arc<Hub>,
    channel: Option<Box<str>>,
    pub(crate) rx: broadcast::Receiver<Arc<Frame>>,
}

impl Subscription {
    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.channel.as_deref());
    }
}

/// Reads every event committed from now on and publishes it, until `stop`, through the store's
/// tail ([`crate::store::EventTail`]: on Redis every node sees every node's commits).
pub async fn tail_loop(hub: Arc<Hub>, store: Arc<dyn Store>, stop: CancellationToken) {
    // Open the tail before reading the start, so no commit in between is missed.
    let tail = match store.clone().event_tail() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "event tail: cannot open; live events off");
            hub.mark_started();
            return;
        }
    };
    let mut delay = Duration::from_millis(100);
    let cursor = loop {
        match store.last_event_id().await {
            Ok(c) => break c,
            Err(e) => {
                hub.stats.tail_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "event tail: cannot read the newest event id; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    };
    hub.mark_started();
    follow_tail(hub, tail, cursor, stop).await;
}

/// [`tail_loop`] once the tail is open and its start (`cursor`) read.
async fn follow_tail(
    hub: Arc<Hub>,
    mut tail: Box<dyn crate::store::tail::TailReader>,
    mut cursor: Option<String>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    let mut failing = false;
    // Only the events a stream listens to now are taken (the embedded store's tail then copies
    // no other event out of the writer's batches); the others are replayed from the store by a
    // stream that opens later, as for `frames_of`.
    let keep = |e: &crate::job::Event| hub.listens(&e.channel_id);
    loop {
        // No stream open here: move the cursor to the newest event instead of reading what
        // nobody here listens to (when the store can tell it cheaply: Redis). The newest id is
        // read *before* the check, so a stream that opens after the check replays from the
        // store everything up to it (it subscribes before it replays, `follow.rs`), and one
        // that opened before it keeps the tail reading from where it was.
        if hub.idle() {
            let newest = tokio::select! {
                r = tail.newest() => r,
                _ = stop.cancelled() => return,
            };
            match newest {
                Ok(Some(id)) => {
                    recovered(&mut failing, &mut delay);
                    if hub.idle() {
                        cursor = Some(id);
                        idle_pace(&hub, &stop).await;
                        continue;
                    }
                }
                // The store is away: counted, logged and retried as a failed read.
                Err(e) => {
                    if !read_failed(&hub, &e, &mut failing, &mut delay, &stop).await {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
            }
        }
        let page = tokio::select! {
            r = tail.read_kept(cursor.as_deref(), Duration::from_secs(1), TAIL_PAGE, &keep) => r,
            _ = stop.cancelled() => return,
        };
        let page = match page {
            Ok(p) => {
                recovered(&mut failing, &mut delay);
                p
            }
            Err(e) => {
                if !read_failed(&hub, &e, &mut failing, &mut delay, &stop).await {
                    return;
                }
                continue;
            }
        };
        let full = reads_on(page.read, tail.as_ref());
        let frames = frames_of(&hub, page.events, &mut cursor);
        if page.last.is_some() {
            cursor = page.last;
        }
        hub.publish(&frames);
        if !full {
            idle_pace(&hub, &stop).await;
        }
    }
}

/// A read of the tail (or of its newest id) succeeded: said once after failures, and the retry
/// delay back to its start.
fn recovered(failing: &mut bool, delay: &mut Duration) {
    if *failing {
        tracing::info!("event tail: reading again");
        *failing = false;
    }
    *delay = Duration::from_millis(100);
}

/// A read of the tail failed: counted, logged once until a read succeeds, and waited for with a
/// backoff (up to 2 s). False when the tail is to stop.
async fn read_failed(
    hub: &Hub,
    e: &crate::store::StoreError,
    failing: &mut bool,
    delay: &mut Duration,
    stop: &CancellationToken,
) -> bool {
    hub.stats.tail_errors.fetch_add(1, Ordering::Relaxed);
    if !*failing {
        tracing::warn!(error = %e, "event tail: read failed; retrying");
    }
    *failing = true;
    tokio::select! {
        _ = tokio::time::sleep(*delay) => {}
        _ = stop.cancelled() => return false,
    }
    *delay = (*delay * 2).min(Duration::from_secs(2));
    true
}

/// The frames of a page of events for the streams open now, the cursor moved past the page. An
/// event of a channel nobody listens to here (no ring of its own, no global stream) is not
/// serialized (issue 14: that was 2-3% of the server's CPU under load with no stream open). A
/// stream that opens after this look replays these events from the store: it subscribes before
/// it replays ([`super::follow`]).
fn frames_of(
    hub: &Hub,
    page: Vec<crate::job::Event>,
    cursor: &mut Option<String>,
) -> Vec<Arc<Frame>> {
    let mut frames = Vec::new();
    for ev in page {
        if ev.kind == "resync" {
            // The tail fell behind the global stream's retention: streams re-read their
            // channels from the store (which tells them of the gap).
            hub.reset_all();
        } else if hub.listens(&ev.channel_id) {
            if let Some(f) = Frame::of(&ev) {
                frames.push(Arc::new(f));
            }
        }
        *cursor = Some(ev.id);
    }
    frames
}

/// Whether the tail reads on at once after a page of `len` events, even while no stream is open:
/// a full page means it is behind the writer, and a reader that holds what it has not read yet
/// must catch up (issue 14); one whose store keeps the events for it (Redis) keeps its idle pace,
/// or an idle API node would read and parse every event of a burst while the burst runs.
fn reads_on(len: usize, tail: &dyn crate::store::tail::TailReader) -> bool {
    len >= TAIL_PAGE && tail.read_on_when_behind()
}

/// While no stream is open, waits up to [`IDLE_PACE`] or until one opens.
async fn idle_pace(hub: &Hub, stop: &CancellationToken) {
    let opened = hub.opened.notified();
    tokio::pin!(opened);
    // Registered before the check: a stream opening in between still wakes us.
    opened.as_mut().enable();
    if hub.chans.lock().open > 0 {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(IDLE_PACE) => {}
        _ = opened => {}
        _ = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_and_idle_channels_are_collected() {
        let hub = Hub::new(3, 2, 8);
        let a1 = hub.subscribe(Some("a")).unwrap();
        let a2 = hub.subscribe(Some("a")).unwrap();
        assert_eq!(hub.subscribe(Some("a")).err(), Some(Refused::Channel));
        let b = hub.subscribe(Some("b")).unwrap();
        assert_eq!(hub.subscribe(Some("c")).err(), Some(Refused::Node));
        let s = hub.stats();
        assert_eq!(
            (s.open, s.channels, s.refused_node, s.refused_channel),
            (3, 2, 1, 1)
        );
        drop((a1, a2, b));
        let s = hub.stats();
        assert_eq!((s.open, s.channels), (0, 0), "idle channels collected");
    }

    struct Reader(bool);

    #[async_trait::async_trait]
    impl crate::store::tail::TailReader for Reader {
        async fn read(
            &mut self,
            _: Option<&str>,
            _: Duration,
            _: usize,
        ) -> crate::store::Result<Vec<crate::job::Event>> {
            Ok(vec![])
        }
        fn read_on_when_behind(&self) -> bool {
            self.0
        }
    }

    /// A tail whose log ends at `newest`, with one event after it: reports each call.
    struct Skipping {
        newest: &'static str,
        calls: tokio::sync::mpsc::UnboundedSender<String>,
    }

    #[async_trait::async_trait]
    impl crate::store::tail::TailReader for Skipping {
        async fn read(
            &mut self,
            after: Option<&str>,
            _: Duration,
            _: usize,
        ) -> crate::store::Result<Vec<crate::job::Event>> {
            let _ = self.calls.send(format!("read after {after:?}"));
            // The event committed after the newest one (once), then nothing for a while.
            if after == Some(self.newest) {
                return Ok(vec![event(6, "a")]);
            }
            std::future::pending::<()>().await;
            Ok(vec![])
        }
        async fn newest(&mut self) -> crate::store::Result<Option<String>> {
            let _ = self.calls.send("newest".into());
            Ok(Some(self.newest.into()))
        }
        fn read_on_when_behind(&self) -> bool {
            false
        }
    }

    /// With no stream open, the tail reads no event (it moves its cursor to the newest one);
    /// a stream that opens then gets the events committed after that from the tail, and those
    /// before from its replay (`follow.rs`: it subscribes before it replays).
    #[tokio::test]
    async fn an_idle_tail_skips_to_the_newest_event_and_reads_on_from_there() {
        let hub = Hub::new(8, 8, 8);
        let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
        let tail = Box::new(Skipping {
            newest: "5",
            calls: tx,
        });
        let stop = CancellationToken::new();
        let t = tokio::spawn(follow_tail(
            hub.clone(),
            tail,
            Some("1".into()),
            stop.clone(),
        ));
        // Two idle rounds: the newest id each time, no read.
        assert_eq!(calls.recv().await.as_deref(), Some("newest"));
        assert_eq!(calls.recv().await.as_deref(), Some("newest"));
        let mut sub = hub.subscribe(Some("a")).unwrap();
        let first_read = loop {
            match calls.recv().await {
                Some(c) if c == "newest" => continue,
                other => break other,
            }
        };
        assert_eq!(
            first_read.as_deref(),
            Some("read after Some(\"5\")"),
            "the tail reads on from the newest event it saw while idle, not from its start"
        );
        let f = sub
            .rx
            .recv()
            .await
            .expect("the event after the newest reaches the stream");
        assert_eq!(f.id.0, 6);
        stop.cancel();
        let _ = t.await;
    }

    fn event(id: u64, channel: &str) -> crate::job::Event {
        crate::job::Event {
            id: id.to_string(),
            channel_id: channel.into(),
            job_id: channel.into(),
            user_id: None,
            kind: "status".into(),
            status: "pending".into(),
            runyard_status: Some(crate::job::JobStatus::Queued),
            progress: 0.0,
            errors: vec![],
            result_url: None,
            attempt: 0,
            ts: "2026-12-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_tail_serializes_only_the_events_a_stream_listens_to() {
        let hub = Hub::new(8, 8, 8);
        let page = || vec![event(1, "a"), event(2, "b"), event(3, "a")];
        let ids = |frames: Vec<Arc<Frame>>| frames.iter().map(|f| f.id.0).collect::<Vec<_>>();
        let mut cursor = None;
        assert!(
            frames_of(&hub, page(), &mut cursor).is_empty(),
            "nobody listens"
        );
        assert_eq!(
            cursor.as_deref(),
            Some("3"),
            "the cursor moves past the page"
        );
        let a = hub.subscribe(Some("a")).unwrap();
        assert_eq!(ids(frames_of(&hub, page(), &mut cursor)), [1, 3]);
        let all = hub.subscribe(None).unwrap();
        assert_eq!(ids(frames_of(&hub, page(), &mut cursor)), [1, 2, 3]);
        drop((a, all));
        assert!(frames_of(&hub, page(), &mut cursor).is_empty());
    }

    #[test]
    fn an_idle_tail_reads_on_after_a_full_page_only_where_the_reader_needs_it() {
        // The embedded store's reader holds the writer's events: it catches up at once.
        assert!(reads_on(TAIL_PAGE, &Reader(true)));
        assert!(!reads_on(TAIL_PAGE - 1, &Reader(true)), "not behind");
        // Redis keeps them in the stream: the idle tail keeps its pace.
        assert!(!reads_on(TAIL_PAGE, &Reader(false)));
    }

    /// A burst of more events than a page reaches an open stream whole, with no later commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_larger_than_a_page_reaches_an_open_stream() {
        use crate::store::JobStore;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            crate::store::sqlite::SqliteStore::open(
                dir.path(),
                crate::store::StoreSettings::default(),
                false,
            )
            .expect("open"),
        );
        let hub = Hub::new(8, 8, 8192);
        let mut all = hub.subscribe(None).expect("subscribe");
        let stop = CancellationToken::new();
        let t = tokio::spawn(tail_loop(hub.clone(), store.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = TAIL_PAGE + 500;
        let jobs = (0..n)
            .map(|_| crate::job::Job::new("t", "r", crate::job::now_us()))
            .collect();
        store.submit_many(jobs).await.expect("submit");
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got < n {
            match tokio::time::timeout_at(deadline, all.rx.recv()).await {
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        stop.cancel();
        let _ = t.await;
        assert_eq!(
            got, n,
            "frames of the burst's {n} events received within 5 s"
        );
    }

    #[test]
    fn streams_leave_a_reserve_of_the_api_connections() {
        use super::{api_reserve, stream_cap};
        // An eighth, at least 16, at most half.
        assert_eq!((api_reserve(4096), stream_cap(20_000, 4096)), (512, 3584));
        assert_eq!((api_reserve(40), stream_cap(20_000, 40)), (16, 24));
        assert_eq!((api_reserve(10), stream_cap(20_000, 10)), (5, 5));
        assert_eq!((api_reserve(1), stream_cap(20_000, 1)), (1, 0));
        // The events cap wins when it is the lower.
        assert_eq!(stream_cap(100, 4096), 100);
    }
}
