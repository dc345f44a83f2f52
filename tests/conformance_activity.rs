//! The dashboard's aggregates ([`runyard::store::ActivityStore`]) on both backends, the same
//! bodies against the embedded store and a real Redis: the jobs finished per minute of the last
//! hour by final status, and the dead letters by type, each checked against the jobs the test
//! made (their own `finished_at`, status and attempts), also past one read chunk (1,000 jobs).

mod redis_support;
#[macro_use]
mod store_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Backoff, Command, FinishOutcome, HookReport, Job, JobStatus};
use runyard::store::activity::{minute_of, window_start};
use runyard::store::{Store, StoreSettings};
use serde_json::json;

fn settings() -> StoreSettings {
    StoreSettings {
        progress_interval: Duration::ZERO,
        ..StoreSettings::default()
    }
}

both!(
    finished_jobs_are_counted_per_minute_by_final_status,
    many_finished_jobs_are_counted_past_one_chunk,
    dead_letters_are_counted_by_type,
    many_dead_letters_are_counted_past_one_chunk,
);

const LEASE: Duration = Duration::from_secs(30);

fn job(job_type: &str, runner: &str, max_attempts: u32) -> Job {
    Job {
        args: json!({"n": 1}),
        max_attempts,
        backoff: Backoff {
            initial_ms: 60_000,
            max_ms: 60_000,
            multiplier: 1.0,
            jitter: false,
        },
        ..Job::new(job_type, runner, now_us())
    }
}

async fn submit(s: &Arc<dyn Store>, j: Job) -> Job {
    s.submit(j).await.expect("submit").job
}

/// Claims the one QUEUED job of `runner`, starts it and ends its attempt with `outcome` (after a
/// hook report, when given).
async fn run(
    s: &Arc<dyn Store>,
    runner: &str,
    report: Option<HookReport>,
    outcome: FinishOutcome,
) -> Job {
    let mut v = s.claim(runner, "w", 1, LEASE).await.expect("claim");
    let j = v.pop().expect("a job claimed");
    let token = j.lease.as_ref().expect("a lease").token;
    s.apply(
        j.id,
        Command::Started {
            token,
            handle: None,
        },
    )
    .await
    .expect("started");
    if let Some(r) = report {
        s.apply(j.id, Command::Hook(r)).await.expect("hook");
    }
    s.apply(j.id, Command::Finish { token, outcome })
        .await
        .expect("finish")
}

fn failed() -> FinishOutcome {
    FinishOutcome::Failed {
        message: "boom".into(),
        exit_code: Some(3),
    }
}

/// An ERROR that must not be retried, with attempts left: ERROR, not a dead letter.
async fn error_without_retry(s: &Arc<dyn Store>, job_type: &str, runner: &str) -> Job {
    submit(s, job(job_type, runner, 3)).await;
    let report = HookReport {
        status: Some(JobStatus::Error),
        error: Some("do not retry".into()),
        retry: Some(false),
        ..Default::default()
    };
    let j = run(s, runner, Some(report), failed()).await;
    assert_eq!(j.status, JobStatus::Error);
    assert!(j.attempt < j.max_attempts, "{j:?}");
    j
}

/// (minute, type, status) -> count, as the store read it.
async fn read_finished(
    s: &Arc<dyn Store>,
    minutes: u32,
) -> (
    runyard::store::activity::Activity,
    BTreeMap<(i64, String, String), u64>,
) {
    let a = s.finished_per_minute(minutes).await.expect("activity");
    let mut got = BTreeMap::new();
    for f in &a.finished {
        assert!(
            f.minute >= a.since && f.minute <= a.as_of,
            "{f:?} outside the window {} ..= {}",
            a.since,
            a.as_of
        );
        *got.entry((f.minute, f.job_type.clone(), f.status.to_string()))
            .or_default() += f.count;
    }
    (a, got)
}

/// What the jobs themselves say: (minute of finished_at, type, status) -> count.
fn expected(jobs: &[Job], since: i64) -> BTreeMap<(i64, String, String), u64> {
    let mut want = BTreeMap::new();
    for j in jobs {
        let fin = j.finished_at.expect("finished");
        if fin >= since {
            *want
                .entry((minute_of(fin), j.job_type.clone(), j.status.to_string()))
                .or_default() += 1;
        }
    }
    want
}

async fn finished_jobs_are_counted_per_minute_by_final_status(s: Arc<dyn Store>) {
    let mut done = Vec::new();
    for _ in 0..2 {
        submit(&s, job("act.ok", "ok", 1)).await;
        done.push(run(&s, "ok", None, FinishOutcome::Success(None)).await);
    }
    submit(&s, job("act.bad", "bad", 1)).await;
    done.push(run(&s, "bad", None, failed()).await);
    let stop = submit(&s, job("act.stop", "stop", 1)).await;
    done.push(s.apply(stop.id, Command::Cancel).await.expect("cancel"));
    // Not finished: a failure with attempts left (SCHEDULED for its retry), a QUEUED job, and a
    // job retried after its ERROR (QUEUED again).
    submit(&s, job("act.again", "again", 2)).await;
    let again = run(&s, "again", None, failed()).await;
    assert_eq!(again.status, JobStatus::Scheduled);
    submit(&s, job("act.idle", "idle", 1)).await;
    submit(&s, job("act.back", "back", 1)).await;
    let back = run(&s, "back", None, failed()).await;
    assert_eq!(back.status, JobStatus::Error);
    s.apply(back.id, Command::Retry { runner: None })
        .await
        .expect("retry");

    let (a, got) = read_finished(&s, 60).await;
    assert_eq!(a.since, window_start(a.as_of, 60));
    assert!(a.as_of >= done.iter().filter_map(|j| j.finished_at).max().unwrap());
    assert_eq!(got, expected(&done, a.since), "{a:?}");
    let by_status: HashMap<String, u64> = got.iter().fold(HashMap::new(), |mut m, (k, n)| {
        *m.entry(k.2.clone()).or_default() += n;
        m
    });
    assert_eq!(by_status.get("SUCCESS"), Some(&2));
    assert_eq!(by_status.get("ERROR"), Some(&1));
    assert_eq!(by_status.get("CANCELLED"), Some(&1));
    assert_eq!(by_status.len(), 3, "{by_status:?}");

    // One minute: only the current minute's finishes.
    let (one, got) = read_finished(&s, 1).await;
    assert_eq!(one.since, minute_of(one.as_of));
    assert_eq!(got, expected(&done, one.since));
}

async fn many_finished_jobs_are_counted_past_one_chunk(s: Arc<dyn Store>) {
    const N: usize = 1_050;
    let jobs: Vec<Job> = (0..N).map(|_| job("bulk.stop", "nobody", 1)).collect();
    let stored = s.submit_many(jobs).await.expect("submit many");
    let mut done = Vec::with_capacity(N);
    for r in stored {
        let id = r.expect("stored").job.id;
        done.push(s.apply(id, Command::Cancel).await.expect("cancel"));
    }
    let (a, got) = read_finished(&s, 60).await;
    assert_eq!(got, expected(&done, a.since));
    assert_eq!(got.values().sum::<u64>(), N as u64);
}

async fn dead_letters_are_counted_by_type(s: Arc<dyn Store>) {
    assert!(s.dead_letters().await.expect("dead").is_empty());
    let mut dead_a = Vec::new();
    for _ in 0..3 {
        submit(&s, job("dl.a", "a", 1)).await;
        dead_a.push(run(&s, "a", None, failed()).await);
    }
    submit(&s, job("dl.b", "b", 1)).await;
    run(&s, "b", None, failed()).await;
    // Not dead letters: an ERROR with attempts left, a success, a failure that retries.
    error_without_retry(&s, "dl.a", "a").await;
    submit(&s, job("dl.a", "a", 1)).await;
    run(&s, "a", None, FinishOutcome::Success(None)).await;
    submit(&s, job("dl.c", "c", 2)).await;
    assert_eq!(
        run(&s, "c", None, failed()).await.status,
        JobStatus::Scheduled
    );
    let want = |a: u64| BTreeMap::from([("dl.a".to_string(), a), ("dl.b".to_string(), 1)]);
    assert_eq!(s.dead_letters().await.expect("dead"), want(3));
    // Retried, a dead letter is one no more.
    s.apply(dead_a[0].id, Command::Retry { runner: None })
        .await
        .expect("retry");
    assert_eq!(s.dead_letters().await.expect("dead"), want(2));
}

async fn many_dead_letters_are_counted_past_one_chunk(s: Arc<dyn Store>) {
    const N: usize = 1_010;
    let jobs: Vec<Job> = (0..N).map(|_| job("bulk.dead", "bulk", 1)).collect();
    for r in s.submit_many(jobs).await.expect("submit many") {
        r.expect("stored");
    }
    let mut ended = 0;
    while ended < N {
        let claimed = s.claim("bulk", "w", 100, LEASE).await.expect("claim");
        assert!(
            !claimed.is_empty(),
            "{ended} of {N} ended, none left to claim"
        );
        for j in claimed {
            let token = j.lease.as_ref().expect("a lease").token;
            let j = s
                .apply(
                    j.id,
                    Command::Finish {
                        token,
                        outcome: failed(),
                    },
                )
                .await
                .expect("failed");
            assert_eq!(j.status, JobStatus::Error);
            ended += 1;
        }
    }
    // Among them, ERRORs that are no dead letters (read in the same chunks).
    error_without_retry(&s, "bulk.dead", "other").await;
    assert_eq!(
        s.dead_letters().await.expect("dead"),
        BTreeMap::from([("bulk.dead".to_string(), N as u64)])
    );
}
