//! A worker's finish that claims the next job of its runner in its own transaction
//! (`store/handoff.rs`, `Refill`; `queue.rs`, `refill_in`): the oldest QUEUED job, for that
//! worker, after the finish is recorded; nothing when nothing is queued or the finish is refused;
//! given back to the queue when the worker is gone by the commit.

use std::sync::Arc;
use std::time::Duration;

use crate::job::{now_us, Command, FinishOutcome, Job, JobStatus};
use crate::store::handoff::Refill;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventLog, FinishSlot, JobQueue, JobStore, StoreSettings};

const LEASE: Duration = Duration::from_secs(30);

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    (dir, store)
}

async fn submit(s: &SqliteStore, runner: &str) -> Job {
    s.submit(Job::new("t.x", runner, now_us()))
        .await
        .expect("submit")
        .job
}

fn token(j: &Job) -> u64 {
    j.lease.as_ref().expect("a lease").token
}

fn done(j: &Job) -> Command {
    Command::Finish {
        token: token(j),
        outcome: FinishOutcome::Success(None),
    }
}

/// A job of runner `r` claimed by `w1`, then two more QUEUED behind it and one of another runner.
async fn running_with_a_queue(s: &SqliteStore) -> (Job, Job, Job) {
    submit(s, "r").await;
    let first = s.claim("r", "w1", 1, LEASE).await.unwrap().remove(0);
    let (second, third) = (submit(s, "r").await, submit(s, "r").await);
    submit(s, "other").await;
    (first, second, third)
}

async fn status(s: &SqliteStore, j: &Job) -> JobStatus {
    s.get(j.id).await.unwrap().expect("stored").status
}

/// `j`'s start, with its finish (a success) offered first: one write,
/// whose finish claims into `refill`: the finish's status.
async fn start_and_finish(s: &SqliteStore, j: &Job, refill: &Arc<Refill>) -> JobStatus {
    let slot = FinishSlot::refilling(Some(refill.clone()));
    slot.offer(token(j), FinishOutcome::Success(None))
        .expect("offered before the start");
    let (_, end) = s.apply_start(j.id, started(j), slot).await.expect("start");
    end.expect("finished with the start")
        .expect("finish")
        .status
}

fn started(j: &Job) -> Command {
    Command::Started {
        token: token(j),
        handle: None,
    }
}

#[tokio::test]
async fn a_finish_claims_the_oldest_queued_job_of_its_runner_for_its_worker() {
    let (_dir, s) = open();
    let (first, second, third) = running_with_a_queue(&s).await;
    let (refill, next) = s
        .refill("r", "w1", LEASE)
        .expect("the embedded store refills");
    let ended = s
        .finish(first.id, done(&first), Some(refill.clone()))
        .await
        .expect("finish");
    assert_eq!(ended.status, JobStatus::Success);
    let (got, _) = next
        .get(&refill)
        .await
        .expect("the next job, claimed with the finish");
    assert_eq!(got.id, second.id, "the oldest QUEUED job of the runner");
    assert_eq!(got.status, JobStatus::Starting);
    let lease = got.lease.clone().expect("a lease");
    assert_eq!(lease.worker, "w1");
    assert!(lease.token > token(&first), "a fresh fencing token");
    assert!(lease.expires_at > now_us() + 20_000_000, "{lease:?}");
    // Stored as handed over, with its events; the one behind it is still QUEUED.
    let stored = s.get(got.id).await.unwrap().expect("stored");
    assert_eq!(
        (stored.status, token(&stored)),
        (JobStatus::Starting, lease.token)
    );
    let events: Vec<_> = s
        .events(Some(&got.channel_id), None, 10)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.runyard_status)
        .collect();
    assert_eq!(events, [JobStatus::Queued, JobStatus::Starting]);
    assert_eq!(status(&s, &third).await, JobStatus::Queued);
    // It runs on with that token.
    let cmd = Command::Started {
        token: lease.token,
        handle: None,
    };
    assert_eq!(
        s.apply(got.id, cmd).await.unwrap().status,
        JobStatus::Running
    );
}

#[tokio::test]
async fn nothing_is_claimed_when_nothing_is_queued_or_the_finish_is_refused() {
    let (_dir, s) = open();
    submit(&s, "r").await;
    let only = s.claim("r", "w1", 1, LEASE).await.unwrap().remove(0);
    submit(&s, "other").await;
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    s.finish(only.id, done(&only), Some(refill.clone()))
        .await
        .expect("finish");
    assert!(
        next.get(&refill).await.is_none(),
        "nothing of runner r queued"
    );

    // A refused finish (a stale token) claims nothing: the queued job stays for a claim.
    let (first, second, _) = running_with_a_queue(&s).await;
    let stale = Command::Finish {
        token: token(&first) + 100,
        outcome: FinishOutcome::Success(None),
    };
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    assert!(s
        .finish(first.id, stale, Some(refill.clone()))
        .await
        .is_err());
    assert!(next.get(&refill).await.is_none());
    assert_eq!(status(&s, &second).await, JobStatus::Queued);
    // Without a refill, a finish is only a finish.
    s.finish(first.id, done(&first), None)
        .await
        .expect("finish");
    assert_eq!(status(&s, &second).await, JobStatus::Queued);
}

#[tokio::test]
async fn a_finish_written_with_its_start_claims_the_next_job_too() {
    let (_dir, s) = open();
    let (first, second, _) = running_with_a_queue(&s).await;
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    assert_eq!(
        start_and_finish(&s, &first, &refill).await,
        JobStatus::Success
    );
    let (got, _) = next.get(&refill).await.expect("claimed with the finish");
    assert_eq!((got.id, got.status), (second.id, JobStatus::Starting));
    // A start whose attempt has not ended claims nothing.
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    s.apply_start(
        got.id,
        started(&got),
        FinishSlot::refilling(Some(refill.clone())),
    )
    .await
    .expect("start");
    assert!(next.get(&refill).await.is_none());
}

/// The worker stopped waiting (its task ended) before the finish: the job claimed for it goes
/// back to the queue, claimed again later with a new token. Nothing is lost.
#[tokio::test]
async fn a_job_claimed_for_a_worker_gone_is_given_back() {
    let (_dir, s) = open();
    let (first, second, _) = running_with_a_queue(&s).await;
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    drop(next);
    s.finish(first.id, done(&first), Some(refill))
        .await
        .expect("finish");
    // The give-back is the writer's next write: done by the time this one is.
    s.write(|_| Ok(())).await.expect("a write after it");
    let back = s.get(second.id).await.unwrap().expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:?}");
    assert_eq!(back.runs.len(), 1);
    assert_eq!(back.runs[0].outcome.as_deref(), Some("RELEASED"));
    // QUEUED again in its place (as a release at shutdown leaves it): the next claim's first.
    let again = s.claim("r", "w2", 2, LEASE).await.unwrap();
    let again = again.first().expect("claimed again");
    assert_eq!(again.id, second.id);
    assert!(token(again) > back.runs[0].token);
}

/// The oldest QUEUED job's record cannot be read (a newer build's, a hand edit): the finish is
/// recorded and claims the next readable job behind it; the unreadable one stays QUEUED.
#[tokio::test]
async fn an_unreadable_queued_job_is_passed_over_by_the_finish() {
    let (_dir, s) = open();
    let (first, second, third) = running_with_a_queue(&s).await;
    super::super::tests::spoil_record(&s, second.id).await;
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    let ended = s.finish(first.id, done(&first), Some(refill.clone())).await;
    assert_eq!(ended.expect("the finish stands").status, JobStatus::Success);
    let (claimed, _) = next.get(&refill).await.expect("the next readable job");
    assert_eq!(
        (claimed.id, claimed.status),
        (third.id, JobStatus::Starting)
    );
    assert_eq!(status(&s, &first).await, JobStatus::Success);
    assert_eq!(
        super::super::unreadable_tests::stored_status(&s, second.id).await,
        "QUEUED"
    );
    // With the start too: nothing readable left QUEUED, the joint write stands.
    submit(&s, "r2").await;
    let other = s.claim("r2", "w1", 1, LEASE).await.unwrap().remove(0);
    let (refill, next) = s.refill("r", "w1", LEASE).expect("refill");
    assert_eq!(
        start_and_finish(&s, &other, &refill).await,
        JobStatus::Success
    );
    assert!(next.get(&refill).await.is_none());
}
