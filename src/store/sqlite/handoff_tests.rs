//! Direct hand-off at submit (`store/handoff.rs`, `jobs.rs`), seen from inside: the submit's
//! transaction claims the job for a parked worker, first in first out, and a job whose worker is
//! gone by the commit goes back to the queue.

use std::time::Duration;

use crate::job::{now_us, Command, Job, JobStatus};
use crate::store::sqlite::{jobs::submit_in, SqliteStore};
use crate::store::{EventLog, JobQueue, JobStore, StoreError, StoreSettings};

const LEASE: Duration = Duration::from_secs(30);

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    (dir, store)
}

fn job(runner: &str) -> Job {
    Job::new("t.x", runner, now_us())
}

/// The statuses of the job's events, in order (its own channel).
async fn statuses(s: &SqliteStore, j: &Job) -> Vec<JobStatus> {
    s.events(Some(&j.channel_id), None, 100)
        .await
        .expect("events")
        .iter()
        .filter_map(|e| e.runyard_status)
        .collect()
}

async fn status(s: &SqliteStore, id: uuid::Uuid) -> JobStatus {
    s.get(id).await.unwrap().expect("stored").status
}

fn token(j: &Job) -> u64 {
    j.lease.as_ref().expect("a lease").token
}

#[tokio::test]
async fn a_parked_worker_gets_the_next_submit_claimed_in_its_transaction() {
    let (_dir, s) = open();
    let mut parked = s
        .park("r", "w1", LEASE, 1)
        .expect("the embedded store hands jobs over");
    let other = s.park("other", "w2", LEASE, 1).expect("parked");
    let sub = s.submit(job("r")).await.expect("submit");
    assert!(sub.created);
    assert_eq!(
        sub.job.status,
        JobStatus::Queued,
        "the submit answers QUEUED"
    );
    let got = parked.recv().await.expect("handed over");
    assert_eq!(got.id, sub.job.id);
    assert_eq!(got.status, JobStatus::Starting);
    assert_eq!(got.attempt, 1);
    let lease = got.lease.clone().expect("a lease");
    assert_eq!(lease.worker, "w1");
    assert!(lease.expires_at > now_us() + 20_000_000, "{lease:?}");
    assert_eq!(got.runs.len(), 1);
    assert_eq!(
        (got.runs[0].worker.as_str(), got.runs[0].token),
        ("w1", lease.token)
    );
    // What is stored is what the worker got; both events are there, in order.
    let stored = s.get(got.id).await.unwrap().expect("stored");
    assert_eq!(stored.status, JobStatus::Starting);
    assert_eq!(token(&stored), lease.token);
    assert_eq!(
        statuses(&s, &got).await,
        [JobStatus::Queued, JobStatus::Starting]
    );
    // Nothing is left to claim; the next claim takes a fresh token.
    assert!(s.claim("r", "w3", 10, LEASE).await.unwrap().is_empty());
    s.submit(job("r")).await.expect("submit");
    let next = s.claim("r", "w3", 10, LEASE).await.unwrap();
    assert_eq!(next.len(), 1, "not handed over: nobody parked any more");
    assert!(token(&next[0]) > lease.token);
    // The worker parked for another runner got nothing and withdraws cleanly.
    assert!(other.withdraw().await.is_empty());
    // The job runs on with the hand-off's token.
    let t = lease.token;
    let started = s
        .apply(
            got.id,
            Command::Started {
                token: t,
                handle: None,
            },
        )
        .await
        .expect("started with the hand-off's token");
    assert_eq!(started.status, JobStatus::Running);
}

#[tokio::test]
async fn an_older_queued_job_goes_first() {
    let (_dir, s) = open();
    let older = s.submit(job("r")).await.expect("submit").job;
    let parked = s.park("r", "w1", LEASE, 1).expect("parked");
    let newer = s.submit(job("r")).await.expect("submit").job;
    assert!(
        parked.withdraw().await.is_empty(),
        "no hand-off past a QUEUED job"
    );
    assert_eq!(
        s.get(newer.id).await.unwrap().expect("stored").status,
        JobStatus::Queued
    );
    let ids: Vec<_> = s
        .claim("r", "w1", 10, LEASE)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, [older.id, newer.id]);
}

#[tokio::test]
async fn a_withdrawn_worker_is_not_given_jobs() {
    let (_dir, s) = open();
    let parked = s.park("r", "w1", LEASE, 1).expect("parked");
    assert!(parked.withdraw().await.is_empty());
    let j = s.submit(job("r")).await.expect("submit").job;
    assert_eq!(
        s.get(j.id).await.unwrap().expect("stored").status,
        JobStatus::Queued
    );
    // Dropped is withdrawn too.
    drop(s.park("r", "w1", LEASE, 1).expect("parked"));
    let k = s.submit(job("r")).await.expect("submit").job;
    assert_eq!(
        s.get(k.id).await.unwrap().expect("stored").status,
        JobStatus::Queued
    );
}

/// The worker stops waiting after the store took it, before the commit: its job is given back to
/// the queue (a RELEASED run) and claimed again with a new token.
#[tokio::test]
async fn a_job_handed_to_a_worker_gone_by_the_commit_is_requeued() {
    let (_dir, s) = open();
    let parked = s.park("r", "w1", LEASE, 1).expect("parked");
    let j = job("r");
    let id = j.id;
    s.write(move |ctx| {
        let r = submit_in(ctx, j);
        assert!(ctx.handed.len() == 1, "taken in this transaction");
        drop(parked);
        r
    })
    .await
    .expect("submit");
    // The give-back is the writer's next write: done by the time this one is.
    s.write(|_| Ok(())).await.expect("a write after it");
    let back = s.get(id).await.unwrap().expect("stored");
    assert_eq!(back.status, JobStatus::Queued, "{back:?}");
    assert_eq!(back.runs.len(), 1);
    assert_eq!(back.runs[0].outcome.as_deref(), Some("RELEASED"));
    assert_eq!(
        statuses(&s, &back).await,
        [JobStatus::Queued, JobStatus::Starting, JobStatus::Queued]
    );
    let again = s.claim("r", "w2", 1, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(token(&again[0]) > back.runs[0].token);
}

/// A submit that rolls back after taking the worker tells it that nothing came; nothing is
/// stored.
#[tokio::test]
async fn a_rolled_back_hand_off_tells_the_worker_nothing_came() {
    let (_dir, s) = open();
    let mut parked = s.park("r", "w1", LEASE, 1).expect("parked");
    let j = job("r");
    let id = j.id;
    let r = s
        .write(move |ctx| {
            submit_in(ctx, j)?;
            Err::<(), _>(StoreError::Backend("refused on purpose".into()))
        })
        .await;
    assert!(r.is_err());
    assert!(parked.recv().await.is_none());
    assert!(s.get(id).await.unwrap().is_none());
}

/// A worker parked for three free slots gets each of the three jobs of one batch submit (one
/// transaction), claimed for it in that transaction: none is left QUEUED for a claim of its own.
#[tokio::test]
async fn a_worker_parked_for_three_gets_all_three_jobs_of_one_transaction() {
    let (_dir, s) = open();
    let parked = s.park("r", "w1", LEASE, 3).expect("parked");
    let jobs = vec![job("r"), job("r"), job("r"), job("r")];
    let want: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let subs = s.submit_many(jobs).await.expect("batch");
    assert!(subs.iter().all(|r| r.as_ref().is_ok_and(|s| s.created)));
    let got = parked.withdraw().await;
    assert_eq!(
        got.iter().map(|j| j.id).collect::<Vec<_>>(),
        want[..3],
        "the first three, in order"
    );
    for j in &got {
        assert_eq!(j.status, JobStatus::Starting);
        assert_eq!(j.lease.as_ref().expect("a lease").worker, "w1");
        let stored = s.get(j.id).await.unwrap().expect("stored");
        assert_eq!(stored.status, JobStatus::Starting);
        assert_eq!(token(&stored), token(j));
    }
    let tokens: std::collections::BTreeSet<_> = got.iter().map(token).collect();
    assert_eq!(tokens.len(), 3, "a fencing token each");
    // The fourth found no place: QUEUED, for a claim.
    let rest = s.claim("r", "w2", 10, LEASE).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), want[3..]);
}

/// A parked worker's own claim (`JobQueue::claim_parked`) takes the QUEUED jobs into its places,
/// oldest first, each claimed for it, and leaves it parked with the places left: the next
/// submit is handed over instead of stored QUEUED behind them. A worker whose places are all
/// taken, or that withdrew, gets nothing more.
#[tokio::test]
async fn a_claim_into_the_parked_places_takes_the_queue_and_the_next_submit_is_handed_over() {
    let (_dir, s) = open();
    // Queued while nobody was parked.
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(s.submit(job("r")).await.expect("submit").job);
    }
    let mut parked = s.park("r", "w1", LEASE, 2).expect("parked");
    // Older jobs wait: a submit now is stored QUEUED behind them (first in, first out).
    let d = s.submit(job("r")).await.expect("submit").job;
    assert_eq!(status(&s, d.id).await, JobStatus::Queued);
    let drained = s.claim_parked(&[parked.id()]).await.expect("claim");
    assert!(!drained, "every place taken: more may wait");
    // Two places: the two oldest, in order, claimed for it as a claim would.
    for want in &queued[..2] {
        let got = parked.recv().await.expect("claimed into a place");
        assert_eq!(got.id, want.id);
        assert_eq!(got.status, JobStatus::Starting);
        assert_eq!(got.lease.as_ref().expect("lease").worker, "w1");
        assert_eq!(status(&s, got.id).await, JobStatus::Starting);
        assert_eq!(
            statuses(&s, &got).await,
            [JobStatus::Queued, JobStatus::Starting]
        );
    }
    assert!(parked.answer().await.is_none(), "no place left");
    assert_eq!(status(&s, queued[2].id).await, JobStatus::Queued);
    assert_eq!(status(&s, d.id).await, JobStatus::Queued);

    // Parked with room to spare: its claim takes both, and it stays parked for the next submit.
    let mut parked = s.park("r", "w2", LEASE, 4).expect("parked");
    let drained = s.claim_parked(&[parked.id()]).await.expect("claim");
    assert!(drained, "places left: nothing of its runner still QUEUED");
    for want in [&queued[2], &d] {
        assert_eq!(parked.recv().await.expect("claimed").id, want.id);
    }
    let e = s.submit(job("r")).await.expect("submit").job;
    let got = parked.recv().await.expect("handed over");
    assert_eq!((got.id, got.status), (e.id, JobStatus::Starting));
    // Withdrawn: a claim into its places takes nothing.
    let id = parked.id();
    assert!(parked.withdraw().await.is_empty());
    let f = s.submit(job("r")).await.expect("submit").job;
    assert!(!s.claim_parked(&[id]).await.expect("claim"), "no places");
    assert_eq!(status(&s, f.id).await, JobStatus::Queued);
    // Nothing queued: nothing taken, the worker still parked.
    let mut other = s.park("empty", "w3", LEASE, 1).expect("parked");
    assert!(
        s.claim_parked(&[other.id()]).await.expect("claim"),
        "nothing queued"
    );
    let g = s.submit(job("empty")).await.expect("submit").job;
    assert_eq!(other.recv().await.expect("handed over").id, g.id);
}

/// One parked runner's only QUEUED record cannot be read (a newer build's, a hand edit): the
/// claim into the places still takes the other runner's jobs, passes that record over (it
/// stays QUEUED), and says the queues are drained: nothing readable is left.
#[tokio::test]
async fn an_unreadable_queued_record_leaves_the_other_runners_claim_standing() {
    let (_dir, s) = open();
    let good = s.submit(job("r")).await.expect("submit").job;
    let bad = s.submit(job("bad")).await.expect("submit").job;
    super::super::tests::spoil_record(&s, bad.id).await;
    let mut first = s.park("r", "w1", LEASE, 2).expect("parked");
    let second = s.park("bad", "w1", LEASE, 2).expect("parked");
    let drained = s
        .claim_parked(&[first.id(), second.id()])
        .await
        .expect("the claim stands");
    assert!(drained, "nothing readable is left QUEUED");
    let got = first.recv().await.expect("claimed into a place");
    assert_eq!((got.id, got.status), (good.id, JobStatus::Starting));
    assert!(second.withdraw().await.is_empty());
    assert_eq!(
        super::super::unreadable_tests::stored_status(&s, bad.id).await,
        "QUEUED"
    );
}
