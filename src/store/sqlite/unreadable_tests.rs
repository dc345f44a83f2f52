//! A job record this build cannot read (a newer build's, a hand edit, bytes that are not text)
//! costs that job only: every read of a queue, of the due jobs, of the expired leases and of the
//! active jobs at open passes it over (`queue.rs` `readable_jobs`), as Redis's rounds do
//! (`tests/redis_unreadable_records.rs`). Before, the first such record stopped its runner's
//! queue, the promotion of every due job, the reaper, and the store's opening.

use std::time::Duration;

use uuid::Uuid;

use super::SqliteStore;
use crate::job::{now_us, Job, JobStatus};
use crate::store::{JobQueue, JobStore, StoreSettings};

const LEASE: Duration = Duration::from_secs(30);

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, StoreSettings::default(), false).expect("open")
}

/// Job `id`'s status column, read without its record (which does not read).
pub(super) async fn stored_status(s: &SqliteStore, id: Uuid) -> String {
    let id = id.to_string();
    s.write(move |ctx| {
        ctx.conn
            .query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .map_err(super::db_err)
    })
    .await
    .expect("read the status column")
}

async fn submit(s: &SqliteStore, job: Job) -> Job {
    s.submit(job).await.expect("submit").job
}

#[tokio::test]
async fn a_claim_passes_over_an_unreadable_queued_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    let bad = submit(&s, Job::new("t", "r", now_us())).await;
    let (a, b) = (
        submit(&s, Job::new("t", "r", now_us())).await,
        submit(&s, Job::new("t", "r", now_us())).await,
    );
    super::tests::spoil_record(&s, bad.id).await;
    let got: Vec<Uuid> = s
        .claim("r", "w1", 5, LEASE)
        .await
        .expect("the claim is not refused")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![a.id, b.id], "the jobs behind it, in order");
    assert_eq!(stored_status(&s, bad.id).await, "QUEUED", "left as it was");
    assert!(s
        .claim("r", "w1", 5, LEASE)
        .await
        .expect("claim")
        .is_empty());
}

#[tokio::test]
async fn the_promotion_passes_over_an_unreadable_due_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    let now = now_us();
    let due = |at| Job {
        status: JobStatus::Scheduled,
        run_at: Some(at),
        ..Job::new("t", "r", now)
    };
    let bad = submit(&s, due(now - 3_000)).await;
    let good = submit(&s, due(now - 2_000)).await;
    let later = submit(&s, due(now - 1_000)).await;
    super::tests::spoil_record(&s, bad.id).await;
    // One promoted per round asked for one: the unreadable one first in the index is not counted.
    assert_eq!(s.promote_due(1).await.expect("promotion not refused"), 1);
    assert_eq!(
        s.get(good.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        s.get(later.id).await.unwrap().unwrap().status,
        JobStatus::Scheduled
    );
    assert_eq!(s.promote_due(10).await.expect("promote"), 1);
    assert_eq!(
        s.get(later.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(stored_status(&s, bad.id).await, "SCHEDULED");
}

#[tokio::test]
async fn the_reaper_passes_over_an_unreadable_active_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    for _ in 0..2 {
        submit(&s, Job::new("t", "r", now_us())).await;
    }
    let short = Duration::from_millis(50);
    let claimed = s.claim("r", "w1", 2, short).await.expect("claim");
    let (bad, good) = (claimed[0].id, claimed[1].id);
    super::tests::spoil_record(&s, bad).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expired: Vec<Uuid> = s
        .expired(10)
        .await
        .expect("the reaper's read is not refused")
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(expired, vec![good]);
}

/// Reopened (as after a crash): the active jobs' leases are orphaned at open; an unreadable one
/// is passed over, not the opening (before, the server could not start on this database).
#[tokio::test]
async fn the_store_opens_with_an_unreadable_active_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    for _ in 0..2 {
        submit(&s, Job::new("t", "r", now_us())).await;
    }
    let claimed = s.claim("r", "w1", 2, LEASE).await.expect("claim");
    let (bad, good) = (claimed[0].id, claimed[1].id);
    super::tests::spoil_record(&s, bad).await;
    drop(s);
    let s =
        SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("the store opens");
    assert_eq!(stored_status(&s, bad).await, "STARTING");
    let good = s.get(good).await.unwrap().expect("the readable job");
    assert_eq!(good.status, JobStatus::Starting);
    let lease = good.lease.expect("its lease");
    assert!(lease.expires_at <= now_us(), "orphaned at open: {lease:?}");
}

/// A worker's heartbeat over a held job whose record does not read: that job is reported lost
/// (as on Redis), the others' leases renewed. Before, the whole heartbeat failed.
#[tokio::test]
async fn a_heartbeat_reports_an_unreadable_held_job_lost_and_renews_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    for _ in 0..2 {
        submit(&s, Job::new("t", "r", now_us())).await;
    }
    let claimed = s.claim("r", "w1", 2, LEASE).await.expect("claim");
    let token = |j: &Job| j.lease.as_ref().expect("lease").token;
    let held = [
        (claimed[0].id, token(&claimed[0])),
        (claimed[1].id, token(&claimed[1])),
    ];
    let before = claimed[1].lease.as_ref().expect("lease").expires_at;
    super::tests::spoil_record(&s, claimed[0].id).await;
    let lost = s
        .heartbeat("w1", &held, LEASE * 2)
        .await
        .expect("the heartbeat is not refused");
    assert_eq!(lost, vec![claimed[0].id]);
    let renewed = s.get(claimed[1].id).await.unwrap().expect("readable job");
    assert!(renewed.lease.expect("lease").expires_at > before, "renewed");
}
