//! The embedded event tail against the store's own reading of the event table: the same events,
//! ids and order, in pages, also after it fell behind the writer's batches.

use std::sync::Arc;
use std::time::Duration;

use super::{
    tail::{CommitTail, BATCHES, PENDING_MAX},
    SqliteStore,
};
use crate::job::{now_us, Event, Job};
use crate::store::tail::{EventTail, TailReader};
use crate::store::{EventLog, JobStore, StoreSettings};

async fn submit(store: &SqliteStore, n: usize) {
    for _ in 0..n {
        store
            .submit(Job::new("t", "r", now_us()))
            .await
            .expect("submit");
    }
}

/// Reads pages of `max` from `cursor` until `want` events came (or a read waited in vain).
async fn follow(
    tail: &mut Box<dyn TailReader>,
    mut cursor: Option<String>,
    max: usize,
    want: usize,
) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < want {
        let page = tail
            .read(cursor.as_deref(), Duration::from_secs(5), max)
            .await
            .expect("read");
        assert!(page.len() <= max, "a page of {} over {max}", page.len());
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| e.id.clone());
        out.extend(page);
    }
    out
}

fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    (dir, Arc::new(store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_returns_what_the_store_reads_in_pages_and_waits_for_commits() {
    let (_dir, store) = open();
    submit(&store, 2).await;
    let mut tail = store.clone().event_tail().expect("tail");
    let start = store.last_event_id().await.expect("last id");
    submit(&store, 5).await;
    let got = follow(&mut tail, start.clone(), 2, 5).await;
    let want = store
        .events(None, start.as_deref(), 100)
        .await
        .expect("events");
    assert_eq!(want.len(), 5);
    assert_eq!(got, want);
    // Nothing new: the read waits, then returns empty.
    let last = got.last().map(|e| e.id.clone());
    let t = std::time::Instant::now();
    let none = tail
        .read(last.as_deref(), Duration::from_millis(300), 10)
        .await
        .expect("read");
    assert!(none.is_empty() && t.elapsed() >= Duration::from_millis(250));
    // A commit while it waits ends the wait with that commit's event.
    let s2 = store.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        submit(&s2, 1).await;
    });
    let one = tail
        .read(last.as_deref(), Duration::from_secs(10), 10)
        .await
        .expect("read");
    later.await.expect("join");
    assert_eq!(one, store.events(None, last.as_deref(), 10).await.unwrap());
    assert_eq!(one.len(), 1);
    // A cursor it did not return (from the start): read from the store.
    let all = tail.read(None, Duration::from_secs(1), 100).await.unwrap();
    assert_eq!(all, store.events(None, None, 100).await.unwrap());
    assert_eq!(all.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_behind_the_writers_batches_reads_the_store_without_a_gap() {
    let (_dir, store) = open();
    let mut tail = store.clone().event_tail().expect("tail");
    submit(&store, 1).await;
    // In step with the batches: it read all there was.
    let first = follow(&mut tail, None, 300, 1).await;
    assert_eq!(first.len(), 1);
    let start = first.last().map(|e| e.id.clone());
    // More commits than the batches it may be behind, while it does not read.
    let n = BATCHES + 50;
    submit(&store, n).await;
    let got = follow(&mut tail, start.clone(), 300, n).await;
    let want = store
        .events(None, start.as_deref(), 10_000)
        .await
        .expect("events");
    assert_eq!(want.len(), n);
    assert_eq!(got.len(), n);
    assert!(got == want, "the tail's events differ from the store's");
}

/// A reader slower than the writer (the hub's idle tail: 1,000 events per 250 ms) holds a
/// bounded number of events, however far behind it is, and still returns every event in order
/// (issue 14: its queue grew while jobs passed through faster than it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_holds_a_bounded_number_of_events_and_misses_none() {
    let (_dir, store) = open();
    let mut tail = CommitTail::new(store.clone());
    submit(&store, 1).await;
    let first = tail.read(None, Duration::from_secs(5), 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let start = first.last().map(|e| e.id.clone());
    // Few transactions (well under BATCHES), many events: the batches never lag.
    let per = 1000;
    let rounds = 3 * PENDING_MAX / per;
    for _ in 0..rounds {
        let jobs = (0..per).map(|_| Job::new("t", "r", now_us())).collect();
        let r = store.submit_many(jobs).await.expect("submit_many");
        assert!(r.iter().all(Result::is_ok));
    }
    let (total, max) = (rounds * per, 100);
    let mut cursor = start.clone();
    let mut got = Vec::new();
    let mut most_held = 0;
    while got.len() < total {
        let page = tail
            .read(cursor.as_deref(), Duration::from_secs(5), max)
            .await
            .expect("read");
        most_held = most_held.max(tail.pending_len());
        assert!(
            !page.is_empty(),
            "the tail stopped after {} events",
            got.len()
        );
        cursor = page.last().map(|e| e.id.clone());
        got.extend(page);
        if got.len() >= 5 * PENDING_MAX / 4 {
            break;
        }
    }
    assert!(
        most_held <= PENDING_MAX + per,
        "the tail held {most_held} events (bound {PENDING_MAX} + one transaction)"
    );
    let want = store
        .events(None, start.as_deref(), got.len())
        .await
        .expect("events");
    assert!(got == want, "the tail's events differ from the store's");
}

/// Event ids (the table has no AUTOINCREMENT in new databases) keep growing across retention,
/// even with limits that would trim every event: the newest is always kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_keep_growing_after_retention_trims_everything_it_may() {
    use crate::store::Maintenance;
    // A channel's limit deletes nothing (its readers start past its mark; the rows stay for the
    // global stream: retention.rs), the global one does.
    for (global, channel, deletes) in [(1, 1000, true), (1000, 1, false), (0, 0, true)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = StoreSettings {
            global_limit: global,
            channel_limit: channel,
            ..StoreSettings::default()
        };
        let store = SqliteStore::open(dir.path(), settings, false).expect("open");
        for _ in 0..3 {
            // One channel, so that the channel limit trims too.
            let mut job = Job::new("t", "r", now_us());
            job.channel_id = "c".into();
            store.submit(job).await.expect("submit");
        }
        let before: i64 = store
            .last_event_id()
            .await
            .unwrap()
            .expect("events")
            .parse()
            .unwrap();
        let report = store.retention(0).await.expect("retention");
        assert_eq!(
            report.events >= 2,
            deletes,
            "limits {global}/{channel}: {report:?}"
        );
        submit(&store, 1).await;
        let after = store
            .events(None, Some(&before.to_string()), 10)
            .await
            .unwrap();
        let ids: Vec<i64> = after.iter().map(|e| e.id.parse().unwrap()).collect();
        assert_eq!(ids, vec![before + 1], "limits {global}/{channel}");
    }
}

/// A follower that keeps one channel (the event hub with one stream open) gets that channel's
/// events, in order, and a cursor past every event read; the events it does not keep are not
/// copied out of the writer's batches (none held), and the next read goes on from the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeping_one_channel_gets_its_events_and_holds_no_other() {
    let (_dir, store) = open();
    let mut tail = CommitTail::new(store.clone());
    submit(&store, 1).await;
    let first = tail.read(None, Duration::from_secs(5), 10).await.unwrap();
    let start = first.last().map(|e| e.id.clone());
    let mine = Job::new("t", "r", now_us());
    let channel = mine.channel_id.clone();
    submit(&store, 10).await;
    store.submit(mine).await.expect("submit");
    submit(&store, 10).await;
    let keep = |e: &Event| e.channel_id == channel;
    let page = tail
        .read_kept(start.as_deref(), Duration::from_secs(5), 5, &keep)
        .await
        .expect("read");
    let want = store.events(None, start.as_deref(), 100).await.unwrap();
    assert_eq!(want.len(), 21);
    assert_eq!(page.read, 21, "every event committed was read");
    assert_eq!(page.last, want.last().map(|e| e.id.clone()), "the cursor");
    let kept: Vec<_> = want.iter().filter(|e| keep(e)).cloned().collect();
    assert_eq!(page.events, kept);
    assert_eq!(tail.pending_len(), 0, "nothing unkept held");
    // On from the cursor: the next commit only.
    submit(&store, 1).await;
    let next = tail
        .read(page.last.as_deref(), Duration::from_secs(5), 10)
        .await
        .unwrap();
    assert_eq!(
        next,
        store.events(None, page.last.as_deref(), 10).await.unwrap()
    );
    assert_eq!(next.len(), 1);
}

/// Events held from a page past `max` come at the next read, without waiting for another
/// commit (a quiet system may have none: a client following the stream would hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_held_past_a_page_come_without_a_new_commit() {
    let (_dir, store) = open();
    let mut tail = CommitTail::new(store.clone());
    submit(&store, 1).await;
    let first = tail
        .read(None, Duration::from_secs(5), 10)
        .await
        .expect("read");
    assert_eq!(first.len(), 1);
    let start = first.last().map(|e| e.id.clone());
    submit(&store, 5).await;
    let page = tail
        .read(start.as_deref(), Duration::from_secs(5), 2)
        .await
        .expect("read");
    assert_eq!(page.len(), 2);
    assert_eq!(tail.pending_len(), 3, "three held");
    let t = std::time::Instant::now();
    let next = tail
        .read(
            page.last().map(|e| e.id.as_str()),
            Duration::from_millis(500),
            10,
        )
        .await
        .expect("read");
    assert_eq!(
        next.len(),
        3,
        "the three held events, got {} after {:?}",
        next.len(),
        t.elapsed()
    );
}
