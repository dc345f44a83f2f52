//! The claimed jobs the writer keeps for their start (`recent.rs`): a kept job is never one its
//! row no longer holds, whoever changed the row and whatever was rolled back.

use std::time::Duration;

use crate::job::{now_us, Command, FinishOutcome, Job, JobStatus, TransitionError};
use crate::store::sqlite::{apply_in, row, SqliteStore};
use crate::store::{FinishSlot, JobQueue, JobStore, StoreError, StoreSettings};

const LEASE: Duration = Duration::from_secs(30);

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    (dir, store)
}

fn started(token: u64) -> Command {
    Command::Started {
        token,
        handle: None,
    }
}

fn token_expiry(j: &Job) -> i64 {
    j.lease.as_ref().expect("a lease").expires_at
}

fn token(j: &Job) -> u64 {
    j.lease.as_ref().expect("a lease").token
}

/// A claimed job starts and finishes as its row says; the start after a claim and after a
/// hand-over both take what the claim wrote.
#[tokio::test]
async fn a_claimed_job_starts_and_finishes_from_what_the_claim_wrote() {
    let (_dir, s) = open();
    s.submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit");
    let claimed = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let j = &claimed[0];
    let slot = FinishSlot::new();
    assert!(slot.offer(token(j), FinishOutcome::Success(None)));
    let (at_start, end) = s
        .apply_start(j.id, started(token(j)), slot)
        .await
        .expect("start");
    assert_eq!(at_start.status, JobStatus::Running);
    assert_eq!(at_start.attempt, 1);
    let done = end.expect("finish taken").expect("finished");
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(s.get(j.id).await.unwrap().expect("stored"), done);
}

/// The lease ran out after the claim (the job went back to the queue): the start under the old
/// token is fenced off, not applied to the job as the claim left it.
#[tokio::test]
async fn a_start_after_the_lease_expired_is_fenced_off() {
    let (_dir, s) = open();
    let mut job = Job::new("t.x", "r", now_us());
    job.max_attempts = 3;
    s.submit(job).await.expect("submit");
    let claimed = s
        .claim("r", "w", 10, Duration::from_millis(1))
        .await
        .expect("claim");
    let j = &claimed[0];
    while now_us() <= token_expiry(j) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let after = s
        .apply(j.id, Command::LeaseExpired)
        .await
        .expect("lease expired");
    assert_ne!(after.status, JobStatus::Starting, "{:?}", after.status);
    let e = s
        .apply_start(j.id, started(token(j)), FinishSlot::new())
        .await
        .expect_err("the old lease's start");
    assert!(matches!(e, StoreError::Transition(_)), "{e:?}");
    assert_eq!(s.get(j.id).await.unwrap().expect("stored"), after);
}

/// A claim rolled back with its request (a savepoint): the job is QUEUED again, and a start
/// under the rolled-back claim's token is refused.
#[tokio::test]
async fn a_claim_rolled_back_is_not_started() {
    let (_dir, s) = open();
    let sub = s
        .submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit");
    let id = sub.job.id;
    let tok = 7_000_000;
    let r = s
        .write(move |ctx| {
            let mut job = super::super::load(ctx.conn, &id.to_string())?.expect("stored");
            let cmd = Command::Claim {
                worker: "w".into(),
                token: tok,
                lease_until: now_us() + 30_000_000,
            };
            apply_in(ctx, &mut job, cmd, now_us())?;
            let rowid: i64 = row(
                ctx.conn,
                "SELECT rowid FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )?;
            // As a claim keeps what it wrote; then the request fails and is rolled back.
            ctx.recent.keep(rowid, &job);
            Err::<(), _>(StoreError::Backend("failed after the claim".into()))
        })
        .await;
    assert!(r.is_err());
    assert_eq!(
        s.get(id).await.unwrap().expect("stored").status,
        JobStatus::Queued
    );
    let e = s
        .apply_start(id, started(tok), FinishSlot::new())
        .await
        .expect_err("the rolled-back claim's start");
    assert!(
        matches!(
            e,
            StoreError::Transition(TransitionError::Illegal { .. } | TransitionError::StaleLease)
        ),
        "{e:?}"
    );
    assert_eq!(
        s.get(id).await.unwrap().expect("stored").status,
        JobStatus::Queued
    );
}

/// Whether the writer keeps job `id` now (taken out to look, put back).
async fn kept(s: &SqliteStore, id: uuid::Uuid) -> Option<Job> {
    s.write_whole(move |ctx| {
        let j = ctx.recent.take(id);
        if let Some(j) = &j {
            let rowid: i64 = row(
                ctx.conn,
                "SELECT rowid FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )?;
            ctx.recent.keep(rowid, j);
        }
        Ok(j)
    })
    .await
    .expect("look")
}

/// A claim and a hand-over keep the job they wrote, as its row reads; a cancel of it (another
/// write of the row) drops it, and the start then reads the row.
#[tokio::test]
async fn claimed_and_handed_over_jobs_are_kept_until_their_row_changes() {
    let (_dir, s) = open();
    let a = s
        .submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit");
    let claimed = s.claim("r", "w", 10, LEASE).await.expect("claim");
    assert_eq!(kept(&s, a.job.id).await.as_ref(), Some(&claimed[0]));
    assert_eq!(
        s.get(a.job.id).await.unwrap().as_ref(),
        Some(&claimed[0]),
        "kept as its row reads"
    );
    let mut parked = s.park("r", "w2", LEASE, 1).expect("parked");
    let b = s
        .submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit");
    let handed = parked.recv().await.expect("handed over");
    assert_eq!(handed.id, b.job.id);
    assert_eq!(kept(&s, b.job.id).await.as_ref(), Some(&handed));
    let cancelled = s.apply(b.job.id, Command::Cancel).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        kept(&s, b.job.id).await,
        None,
        "dropped at the row's change"
    );
    let e = s
        .apply_start(b.job.id, started(token(&handed)), FinishSlot::new())
        .await
        .expect_err("a cancelled job does not start");
    assert!(matches!(e, StoreError::Transition(_)), "{e:?}");
}
