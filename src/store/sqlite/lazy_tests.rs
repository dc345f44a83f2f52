//! Lazy requests (`lazy.rs`): a worker's start waits for the next submit's commit, and when the
//! writer waits at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::SqliteStore;
use super::Window;
use crate::job::{now_us, Command, FinishOutcome, Job, JobStatus};
use crate::store::{FinishSlot, JobQueue, JobStore, StoreSettings};

const MS: Duration = Duration::from_millis(1);

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

#[test]
fn nothing_waits_before_two_urgent_requests_were_seen() {
    let t = Instant::now();
    let mut w = Window::new(MS);
    assert_eq!(w.deadline(t), None);
    w.urgent(t);
    assert_eq!(
        w.deadline(t + us(10)),
        None,
        "one submit says nothing of the next"
    );
}

#[test]
fn an_idle_queue_never_waits() {
    // Submits 20 ms apart (the compare run's idle shape: 50 a second).
    let t = Instant::now();
    let mut w = Window::new(MS);
    w.urgent(t);
    w.urgent(t + 20 * MS);
    assert_eq!(w.deadline(t + 20 * MS + us(50)), None);
    // 1.5 ms apart: still more than the window.
    w.urgent(t + 20 * MS + us(1500));
    assert_eq!(w.deadline(t + 20 * MS + us(1550)), None);
}

#[test]
fn back_to_back_submits_wait_twice_their_gap_at_most() {
    let t = Instant::now();
    let mut w = Window::new(MS);
    w.urgent(t);
    w.urgent(t + us(250));
    // The worker's start 40 us after the second submit: waits until twice the gap after it.
    assert_eq!(w.deadline(t + us(290)), Some(t + us(750)));
    // Past that, the producer has stopped: no wait.
    assert_eq!(w.deadline(t + us(800)), None);
    // Never more than the window from now.
    w.urgent(t + us(1200));
    assert_eq!(w.deadline(t + us(1210)), Some(t + us(1210) + MS));
}

/// Waits until the start is with the writer: waiting as a lazy request, or (not lazy) committed.
async fn start_is_with_the_writer<T>(s: &SqliteStore, started: &tokio::task::JoinHandle<T>) {
    for _ in 0..10_000 {
        if s.lazy.pending() == 1 || started.is_finished() {
            return;
        }
        tokio::time::sleep(MS).await;
    }
    panic!("the start did not reach the writer");
}

/// What a user of the one-producer shape gets: the worker's record of a finished job's start and
/// success is committed with the next submit, one transaction for both, and answered only once
/// that commit is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_start_and_finish_ride_in_the_next_submits_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Arc::new(
        SqliteStore::open_with(
            dir.path(),
            StoreSettings::default(),
            false,
            Window::fixed(Duration::from_secs(60)),
        )
        .expect("open"),
    );
    let a = s
        .submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit")
        .job;
    let claimed = s
        .claim("r", "w", 1, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let token = claimed[0].lease.as_ref().expect("a lease").token;
    let mut commits = s.committed.subscribe();

    let finish = FinishSlot::new();
    assert!(finish.offer(token, FinishOutcome::Success(None)));
    let start = Command::Started {
        token,
        handle: None,
    };
    let s2 = s.clone();
    let started = tokio::spawn(async move { s2.apply_start(a.id, start, finish).await });
    // The writer holds the start (alone, it would be committed now).
    start_is_with_the_writer(&s, &started).await;
    let b = s
        .submit(Job::new("t.x", "r", now_us()))
        .await
        .expect("submit")
        .job;
    let (job, done) = started.await.expect("join").expect("started");
    assert_eq!(job.status, JobStatus::Running);
    let done = done.expect("the finish went with the start").expect("done");
    assert_eq!(done.status, JobStatus::Success);

    let batch = commits.recv().await.expect("a commit");
    let ids: Vec<(String, Option<JobStatus>)> = batch
        .iter()
        .map(|e| (e.job_id.clone(), e.runyard_status))
        .collect();
    let (a, b) = (a.id.to_string(), b.id.to_string());
    assert_eq!(
        ids,
        vec![
            (b, Some(JobStatus::Queued)),
            (a.clone(), Some(JobStatus::Running)),
            (a, Some(JobStatus::Success)),
        ],
        "the start, the success and the next submit in one commit"
    );
    assert!(commits.try_recv().is_err(), "nothing committed on its own");
}
