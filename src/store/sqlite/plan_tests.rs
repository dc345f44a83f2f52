//! The scheduler's and the lease reaper's queries read their partial indexes (`jobs_due`,
//! `jobs_lease`), not every scheduled or active job: SQLite's planner, without statistics, took
//! `jobs_status` for them, so each call read the row of every scheduled job (the scheduler asks
//! after each commit) and sorted them.

use super::queue::{DUE_SQL, EXPIRED_SQL, EXPIRED_STOPPING_SQL, NEXT_DUE_SQL};
use super::SqliteStore;
use crate::job::{now_us, Job, JobStatus};
use crate::store::{JobQueue, JobStore, StoreSettings};

fn plan(c: &rusqlite::Connection, sql: &str) -> String {
    let mut st = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let n = st.parameter_count();
    let rows = st
        .query_map(
            rusqlite::params_from_iter([1i64, 10].into_iter().take(n)),
            |r| r.get::<_, String>(3),
        )
        .expect("plan")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("plan rows");
    rows.join("; ")
}

#[tokio::test]
async fn due_and_expired_read_their_partial_index_and_find_the_right_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    let now = now_us();
    // Many scheduled jobs far ahead, one due now, one due a little later.
    let at = |run_at| Job {
        status: JobStatus::Scheduled,
        run_at: Some(run_at),
        ..Job::new("t", "r", now)
    };
    let far: Vec<Job> = (0..300).map(|i| at(now + 3_600_000_000 + i)).collect();
    s.submit_many(far).await.expect("far jobs");
    let due = s.submit(at(now - 1_000)).await.expect("due").job;
    s.submit(at(now + 60_000_000)).await.expect("soon");
    assert_eq!(s.next_due().await.expect("next due"), Some(now - 1_000));
    assert_eq!(s.promote_due(10).await.expect("promote"), 1);
    let promoted = s.get(due.id).await.expect("get").expect("the due job");
    assert_eq!(promoted.status, JobStatus::Queued);
    assert_eq!(
        s.next_due().await.expect("next due"),
        Some(now + 60_000_000)
    );
    assert!(s.expired(10).await.expect("expired").is_empty());

    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
    for (sql, index) in [
        (DUE_SQL, "jobs_due"),
        (NEXT_DUE_SQL, "jobs_due"),
        (EXPIRED_SQL, "jobs_lease"),
        (EXPIRED_STOPPING_SQL, "jobs_stopping"),
    ] {
        let p = plan(&c, sql);
        assert!(p.contains(index), "{sql}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "{sql}: {p}");
    }
}

/// `/metrics`' oldest QUEUED job per type is one seek into the partial index
/// `jobs_queued_type` per type, not a read of every QUEUED job's row, and is the right one.
#[tokio::test]
async fn the_oldest_queued_job_per_type_is_read_from_its_partial_index() {
    use crate::store::counts::JobCountStore;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    let now = now_us();
    let queued = |ty: &str, at| Job {
        queued_at: at,
        ..Job::new(ty, "r", now)
    };
    let mut jobs: Vec<Job> = (0..200).map(|i| queued("a", now + 1_000 + i)).collect();
    jobs.push(queued("a", now - 5_000));
    jobs.push(queued("b", now - 7_000));
    s.submit_many(jobs).await.expect("jobs");
    let counts = s.job_counts().await.expect("counts");
    assert_eq!(counts.oldest_queued.get("a"), Some(&(now - 5_000)));
    assert_eq!(counts.oldest_queued.get("b"), Some(&(now - 7_000)));
    assert_eq!(counts.oldest_queued.len(), 2);

    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
    let p = plan(&c, super::counts::OLDEST_QUEUED_SQL);
    assert!(p.contains("jobs_queued_type"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}
