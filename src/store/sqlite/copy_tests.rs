//! A copy marked by `runyard backup` ([`mark_copy`]) opens as a store of its own.

use std::time::Duration;

use super::*;
use crate::job::{Job, JobStatus};
use crate::store::sqlite::SqliteStore;
use crate::store::{EventLog, JobQueue, JobStore};

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, StoreSettings::default(), false).expect("open")
}

/// A snapshot of the live store in `from` written into `to/runyard.db`, as `runyard backup`
/// takes it (`VACUUM INTO` beside the store's writer).
fn snapshot(from: &Path, to: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let target = to.join("runyard.db");
    let c = Connection::open_with_flags(
        from.join("runyard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.execute("VACUUM INTO ?1", [target.to_str().unwrap()])
        .unwrap();
    target
}

/// The jobs active in the original at the backup's moment (one claimed, one cancelled while its
/// worker still stops it) have their leases released at the copy's first open, without anything
/// looking for their work: requeued (the attempt lost) and given up; the copy has an id of its
/// own and the original none. A lease the copy hands out itself is an orphan at its next open as
/// in any store (crash recovery unchanged): not released again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copys_first_open_releases_the_originals_leases_and_only_them() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = open(a.path());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut job = Job::new("t", "r", now_us());
        job.max_attempts = 3;
        ids.push(job.id);
        original.submit(job).await.unwrap();
    }
    let claimed = original
        .claim("r", "w1@node", 2, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let cancelled = original.apply(ids[1], Command::Cancel).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.lease.is_some(), "kept while its worker stops it");
    let copy_db = snapshot(a.path(), b.path());
    let id = mark_copy(&copy_db).expect("marked");

    let copy = open(b.path());
    assert_eq!(copy.copy_id(), Some(id));
    assert_eq!(original.copy_id(), None);
    let requeued = copy.get(ids[0]).await.unwrap().expect("job");
    assert_eq!(requeued.status, JobStatus::Queued, "{requeued:?}");
    assert!(requeued.lease.is_none());
    assert_eq!(
        requeued.runs.last().unwrap().outcome.as_deref(),
        Some("LOST")
    );
    let given_up = copy.get(ids[1]).await.unwrap().expect("job");
    assert_eq!(given_up.status, JobStatus::Cancelled);
    assert!(given_up.lease.is_none(), "{given_up:?}");
    // The original's own jobs are untouched (its lease goes on).
    let live = original.get(ids[0]).await.unwrap().expect("job");
    assert_eq!(live.status, JobStatus::Starting);

    // The copy's own claim, then a restart of the copy: an orphan of its own, for its reaper.
    let again = copy
        .claim("r", "w2@node", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    drop(copy);
    let copy = open(b.path());
    let own = copy.get(ids[0]).await.unwrap().expect("job");
    assert_eq!(own.status, JobStatus::Starting, "not released: {own:?}");
    assert_eq!(own.lease.as_ref().map(|l| l.expires_at), Some(0));
    assert_eq!(copy.copy_id(), Some(id), "the id stays");
}

/// The copy numbers its events from a first id of its own, far from the original's: every
/// cursor of the original (one the copy holds an event for, and one the original handed out
/// after the backup) gets a resync on the copy, while reading the copy from 0 gives every event
/// it holds, in order, with no resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copys_events_are_numbered_apart_from_the_originals() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let original = open(a.path());
    for _ in 0..3 {
        original.submit(Job::new("t", "r", now_us())).await.unwrap();
    }
    let at_backup = original.last_event_id().await.unwrap().expect("events");
    let copy_db = snapshot(a.path(), b.path());
    mark_copy(&copy_db).expect("marked");
    for _ in 0..3 {
        original.submit(Job::new("t", "r", now_us())).await.unwrap();
    }
    let later = original.last_event_id().await.unwrap().expect("events");

    let copy = open(b.path());
    let all = copy.events(None, Some("0"), 100).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|e| e.kind != "resync"), "{all:?}");
    let first: i64 = all[0].id.parse().unwrap();
    let top: i64 = later.parse().unwrap();
    assert!(
        (first >> 32) - (top >> 32) > 1,
        "{first} above the original's ids (up to {top}), a block apart"
    );
    for _ in 0..10 {
        copy.submit(Job::new("t", "r", now_us())).await.unwrap();
    }
    let newest = copy.last_event_id().await.unwrap().expect("events");
    for cursor in [&at_backup, &later] {
        let page = copy.events(None, Some(cursor), 100).await.unwrap();
        assert_eq!(page.len(), 1, "{cursor}: {page:?}");
        assert_eq!(page[0].kind, "resync", "{cursor}: {page:?}");
        assert_eq!(page[0].id, newest, "{cursor}");
    }
}
