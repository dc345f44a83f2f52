//! The counts the writer keeps in `job_counts` (`counts.rs`) against the `GROUP BY` of the rows
//! themselves, after every kind of row write: submits stored QUEUED and handed over, claims,
//! an attempt's start with its finish (one row write for two changes), heartbeats, a cancel, a
//! request rolled back after its row was written, retention; and the count at open of a
//! database an older build kept its index in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::job::{now_us, Command, FinishOutcome, Job, JobStatus};
use crate::store::counts::JobCountStore;
use crate::store::sqlite::{jobs::insert, SqliteStore};
use crate::store::{FinishSlot, JobQueue, JobStore, Maintenance, StoreError, StoreSettings};

const LEASE: Duration = Duration::from_secs(30);

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, StoreSettings::default(), false).expect("open")
}

/// `(type, status) -> jobs` from the rows, read by a connection of its own.
fn counted(dir: &std::path::Path) -> HashMap<(String, JobStatus), u64> {
    let c = rusqlite::Connection::open(dir.join("runyard.db")).expect("open db");
    let mut stmt = c
        .prepare("SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("query");
    rows.map(|r| {
        let (t, s, n) = r.expect("row");
        ((t, s.parse().expect("a status")), n as u64)
    })
    .collect()
}

async fn same(s: &SqliteStore, dir: &std::path::Path, when: &str) {
    let kept = s.job_counts().await.expect("counts").by_type_status;
    assert_eq!(kept, counted(dir), "{when}");
}

#[tokio::test]
async fn the_kept_counts_are_the_rows_counts_after_every_kind_of_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    same(&s, dir.path(), "empty").await;

    // Stored QUEUED, one by one and in a batch of two types.
    s.submit(Job::new("a", "r", now_us()))
        .await
        .expect("submit");
    let batch = (0..6)
        .map(|i| Job::new(if i % 2 == 0 { "a" } else { "b" }, "r", now_us()))
        .collect();
    s.submit_many(batch).await.expect("batch");
    same(&s, dir.path(), "submits").await;

    // Claimed (QUEUED -> STARTING).
    let claimed = s.claim("r", "w1", 4, LEASE).await.expect("claim");
    assert_eq!(claimed.len(), 4);
    same(&s, dir.path(), "claims").await;

    // Handed over at submit (written STARTING at once).
    let mut parked = s.park("h", "w2", LEASE, 2).expect("parked");
    s.submit(Job::new("a", "h", now_us()))
        .await
        .expect("submit");
    let handed = parked.recv().await.expect("handed over");
    assert_eq!(handed.status, JobStatus::Starting);
    same(&s, dir.path(), "hand-over").await;

    // Heartbeats (the lease only).
    let held: Vec<_> = claimed
        .iter()
        .map(|j| (j.id, j.lease.as_ref().expect("lease").token))
        .collect();
    assert!(s
        .heartbeat("w1", &held, LEASE)
        .await
        .expect("beat")
        .is_empty());
    same(&s, dir.path(), "heartbeats").await;

    // A start with its finish: STARTING -> SUCCESS in one row write; a start alone.
    let token = |j: &Job| j.lease.as_ref().expect("lease").token;
    let slot = FinishSlot::new();
    assert!(slot
        .offer(token(&claimed[0]), FinishOutcome::Success(None))
        .is_ok());
    let started = |j: &Job| Command::Started {
        token: token(j),
        handle: None,
    };
    let (_, end) = s
        .apply_start(claimed[0].id, started(&claimed[0]), slot)
        .await
        .expect("start");
    assert_eq!(
        end.expect("finished").expect("ok").status,
        JobStatus::Success
    );
    let (at, end) = s
        .apply_start(handed.id, started(&handed), FinishSlot::new())
        .await
        .expect("start");
    assert!(end.is_none());
    assert_eq!(at.status, JobStatus::Running);
    same(&s, dir.path(), "starts").await;

    // A cancel of a QUEUED job.
    let queued = s
        .submit(Job::new("b", "r2", now_us()))
        .await
        .expect("submit")
        .job;
    s.apply(queued.id, Command::Cancel).await.expect("cancel");
    same(&s, dir.path(), "cancel").await;

    // A request rolled back after it wrote a row (its savepoint) leaves the counts as they were.
    let r = s
        .write(|ctx| {
            insert(ctx, &Job::new("a", "r", now_us()))?;
            Err::<(), _>(StoreError::Backend("refused after the write".into()))
        })
        .await;
    assert!(r.is_err());
    same(&s, dir.path(), "rolled back").await;

    // Retention deletes the finished jobs.
    let report = s.retention(now_us() + 1).await.expect("retention");
    assert_eq!(report.jobs, 2, "the success and the cancel");
    same(&s, dir.path(), "retention").await;
    let kept = s.job_counts().await.expect("counts").by_type_status;
    assert!(
        !kept.contains_key(&("b".to_string(), JobStatus::Cancelled)),
        "a count that fell to 0 is left out: {kept:?}"
    );
}

#[tokio::test]
async fn a_database_an_older_build_wrote_since_is_counted_again_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = open(dir.path());
        let jobs = (0..3).map(|_| Job::new("a", "r", now_us())).collect();
        s.submit_many(jobs).await.expect("batch");
        s.claim("r", "w", 1, LEASE).await.expect("claim");
        same(&s, dir.path(), "before").await;
    }
    // What an older build does: it makes its index again, and changes rows without the table.
    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("open db");
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS jobs_type_status ON jobs(type, status);
         UPDATE jobs SET status = 'CANCELLED' WHERE status = 'QUEUED';",
    )
    .expect("older build's writes");
    drop(c);
    let s = Arc::new(open(dir.path()));
    same(&s, dir.path(), "after an older build").await;
    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("open db");
    let index: Option<String> = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE name = 'jobs_type_status'",
            [],
            |r| r.get(0),
        )
        .ok();
    assert_eq!(index, None, "the index is dropped again");
}

/// SQLite rolls a transaction back by itself on a full disk or an I/O error. When that happens
/// in the last request of a batch, the counts noted by the requests before it must not be
/// written (outside any transaction they would commit alone and count jobs that do not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_not_written_after_the_database_rolled_the_transaction_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    // Holds the writer, so that the next two requests share one transaction.
    let s1 = s.clone();
    let blocker = tokio::spawn(async move {
        s1.write(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s2 = s.clone();
    let submit = tokio::spawn(async move { s2.submit(Job::new("a", "r", now_us())).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s3 = s.clone();
    let last = tokio::spawn(async move {
        s3.write(|ctx| {
            // What SQLite does itself on SQLITE_FULL or SQLITE_IOERR.
            ctx.conn.execute_batch("ROLLBACK").expect("rollback");
            Err::<(), _>(StoreError::Backend("database or disk is full".into()))
        })
        .await
    });
    blocker.await.expect("join").expect("blocker");
    let submitted = submit.await.expect("join");
    let _ = last.await.expect("join");
    assert!(
        submitted.is_err(),
        "the submit was rolled back: {submitted:?}"
    );
    assert!(counted(dir.path()).is_empty());
    let kept = s.job_counts().await.expect("counts").by_type_status;
    assert!(kept.is_empty(), "the kept counts drifted: {kept:?}");
    drop(s);
    let kept = open(dir.path())
        .job_counts()
        .await
        .expect("counts")
        .by_type_status;
    assert!(
        kept.is_empty(),
        "the kept counts drifted (reopened): {kept:?}"
    );
}
