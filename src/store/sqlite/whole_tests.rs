//! Hot write requests without a savepoint (`whole.rs`): a submit, a batch, a claim and a start
//! with its finish open none, and one that fails after writing undoes its whole transaction.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::StatementStatus;

use super::super::tests::hold_writer;
use super::super::{jobs::insert, SqliteStore};
use crate::job::{now_us, Command, FinishOutcome, Job, JobStatus};
use crate::store::{FinishSlot, JobQueue, JobStore, StoreError, StoreSettings};

fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    (dir, Arc::new(store))
}

/// How many times the writer has run `SAVEPOINT op` (a request's savepoint, `SqliteStore::write`)
/// and `SAVEPOINT batch_job`, read on the writer's own connection.
async fn savepoints(s: &SqliteStore) -> i32 {
    s.write_whole(|ctx| {
        let run = |sql: &str| -> i32 {
            ctx.conn
                .prepare_cached(sql)
                .map(|st| st.get_status(StatementStatus::Run))
                .unwrap_or(0)
        };
        Ok(run("SAVEPOINT op") + run("SAVEPOINT batch_job"))
    })
    .await
    .expect("read")
}

#[tokio::test]
async fn submits_claims_and_starts_open_no_savepoint() {
    let (_dir, s) = open();
    let before = savepoints(&s).await;
    for _ in 0..3 {
        s.submit(Job::new("t.x", "r", now_us()))
            .await
            .expect("submit");
    }
    let batch = (0..3).map(|_| Job::new("t.x", "r", now_us())).collect();
    for r in s.submit_many(batch).await.expect("batch") {
        r.expect("stored");
    }
    let claimed = s
        .claim("r", "w", 10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 6);
    for job in claimed {
        let token = job.lease.as_ref().expect("a lease").token;
        let finish = FinishSlot::new();
        assert!(finish.offer(token, FinishOutcome::Success(None)).is_ok());
        let start = Command::Started {
            token,
            handle: None,
        };
        let (started, done) = s.apply_start(job.id, start, finish).await.expect("start");
        assert_eq!(started.status, JobStatus::Running);
        let done = done
            .expect("the finish went with the start")
            .expect("finished");
        assert_eq!(done.status, JobStatus::Success);
        let stored = s.get(job.id).await.expect("get").expect("stored");
        assert_eq!(stored.status, JobStatus::Success);
    }
    assert_eq!(savepoints(&s).await, before, "no savepoint was opened");
}

/// A request run without a savepoint that fails after it wrote: nothing of its transaction is
/// kept, and every request of it is told so (none is answered "done" for an undone write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_request_failing_after_a_write_undoes_its_transaction() {
    let (_dir, s) = open();
    // Hold the writer, so the next three requests go in one transaction.
    let release_tx = hold_writer(&s).await;
    let first = Job::new("t.x", "r", now_us());
    let broken = Job::new("t.x", "r", now_us());
    let last = Job::new("t.x", "r", now_us());
    let (s1, s2, s3) = (s.clone(), s.clone(), s.clone());
    let (j1, j2, j3) = (first.clone(), broken.clone(), last.clone());
    let a = tokio::spawn(async move { s1.submit(j1).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = tokio::spawn(async move {
        s2.write_whole(move |ctx| {
            insert(ctx, &j2)?;
            Err::<(), _>(StoreError::Backend("failed after a write".into()))
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = tokio::spawn(async move { s3.submit(j3).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    release_tx.send(()).expect("release");
    for (name, r) in [
        ("the submit before", a.await.expect("join").map(|_| ())),
        ("the failed request", b.await.expect("join")),
        ("the submit after", c.await.expect("join").map(|_| ())),
    ] {
        let e = r.expect_err(name);
        assert!(
            e.to_string().contains("failed after a write"),
            "{name}: {e}"
        );
    }
    for j in [&first, &broken, &last] {
        assert!(s.get(j.id).await.expect("get").is_none(), "nothing kept");
    }
    // The writer goes on.
    s.submit(first.clone()).await.expect("submit again");
    assert!(s.get(first.id).await.expect("get").is_some());
}

/// A request refused before it wrote anything leaves the others of its transaction alone.
#[tokio::test]
async fn a_whole_request_refused_before_writing_fails_alone() {
    let (_dir, s) = open();
    let job = Job::new("t.x", "r", now_us());
    let missing = uuid::Uuid::now_v7();
    let start = Command::Started {
        token: 1,
        handle: None,
    };
    let (a, b) = tokio::join!(
        s.apply_start(missing, start, FinishSlot::new()),
        s.submit(job.clone())
    );
    assert!(matches!(a, Err(StoreError::NotFound)), "{a:?}");
    b.expect("the submit beside it is stored");
    assert!(s.get(job.id).await.expect("get").is_some());
}

/// A transaction that cannot begin (the database locked past the writer's busy timeout) runs none
/// of its requests: each is answered with the failure and nothing of it is stored, also when the
/// lock is gone by the time the request would have run (outside a transaction each statement
/// would have committed on its own while the request was told it failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_cannot_begin_runs_none_of_its_requests() {
    let (dir, s) = open();
    let path = dir.path().join("runyard.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    // Another connection holds the write lock for 12 s: the writer's `BEGIN IMMEDIATE` gives up
    // after its 10 s busy timeout, and a statement run after that would get the lock at 12 s.
    let holder = std::thread::spawn(move || {
        let other = rusqlite::Connection::open(path).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let _ = locked_tx.send(());
        std::thread::sleep(Duration::from_secs(12));
        other.execute_batch("ROLLBACK").expect("unlock");
    });
    tokio::task::spawn_blocking(move || locked_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("locked");
    let job = Job::new("t.x", "r", now_us());
    let e = s.submit(job.clone()).await.expect_err("the submit fails");
    assert!(e.to_string().contains("locked"), "{e}");
    holder.join().expect("holder");
    assert!(
        s.get(job.id).await.expect("get").is_none(),
        "a submit answered with an error is not stored"
    );
    s.submit(job.clone()).await.expect("the writer goes on");
    assert!(s.get(job.id).await.expect("get").is_some());
}

/// A request during which SQLite rolled the whole transaction back (as it may on a full disk or
/// an I/O error; here the request rolls it back itself): the requests after it in the batch do
/// not run outside a transaction, so nothing of the batch is stored and all are told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_a_transaction_rolled_back_by_the_database_do_not_run() {
    let (_dir, s) = open();
    let release_tx = hold_writer(&s).await;
    let after = Job::new("t.x", "r", now_us());
    let (s1, s2) = (s.clone(), s.clone());
    let a = tokio::spawn(async move {
        s1.write(|ctx| {
            ctx.conn
                .execute_batch("ROLLBACK")
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            Err::<(), _>(StoreError::Backend("disk full".into()))
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let j = after.clone();
    let b = tokio::spawn(async move { s2.submit(j).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    release_tx.send(()).expect("release");
    a.await.expect("join").expect_err("the failed request");
    b.await.expect("join").expect_err("the submit after it");
    assert!(
        s.get(after.id).await.expect("get").is_none(),
        "a submit answered with an error is not stored"
    );
    s.submit(after.clone()).await.expect("the writer goes on");
    assert!(s.get(after.id).await.expect("get").is_some());
}
