//! The cost of a confined caller's listing (docs/auth.md, "Session 17: confined listings" in
//! docs/benchmarks.md): 3 jobs of its own, the oldest, behind N of another tenant's (`COST_N`,
//! default 50,000), listed through the store with the caller's visibility, best of 3 per query.
//! A benchmark, not run by CI:
//!
//!     COST_N=50000 cargo test --release --test confined_listing_cost -- --ignored --nocapture
//!
//! It checks what each answer must be (the caller's own jobs only) and prints the times.
//! `COST_REDIS_INDEX=off` runs the Redis store without its channel index (docs/redis.md).

mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use runyard::job::{now_us, Job};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::sqlite::SqliteStore;
use runyard::store::{ListQuery, Names, Store, StoreSettings, Visibility};
use serde_json::json;

use redis_support::TestRedis;

fn others() -> usize {
    std::env::var("COST_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000)
}

async fn fill(s: &Arc<dyn Store>) {
    for i in 0..3 {
        let mut j = Job::new("a.job", "r", now_us());
        j.channel_id = "tenant-a".into();
        j.args = json!({"mine": i});
        s.submit(j).await.expect("submit");
    }
    let n = others();
    let mut batch = Vec::new();
    for i in 0..n {
        let mut j = Job::new("b.job", "r", now_us());
        j.channel_id = "tenant-b".into();
        j.args = json!({"api_key": "s3cret-XYZ", "i": i, "pad": "x".repeat(200)});
        batch.push(j);
        if batch.len() == 1000 || i + 1 == n {
            for r in s
                .submit_many(std::mem::take(&mut batch))
                .await
                .expect("batch")
            {
                r.expect("submit");
            }
        }
    }
}

fn sees(types: Option<&str>, channel: Option<(&str, bool)>) -> Option<Visibility> {
    let names = |s: &str, exact| Names {
        list: vec![s.to_string()],
        exact,
    };
    Some(Visibility {
        types: types.map(|t| names(t, false)),
        channels: channel.map(|(c, exact)| names(c, exact)),
    })
}

/// Lists `q` three times; `want`: how many jobs the answer must hold (none: any).
async fn time(s: &Arc<dyn Store>, label: &str, q: ListQuery, want: Option<usize>) {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let p = s.list(q.clone()).await.expect("list");
        best = best.min(t.elapsed());
        if let Some(n) = want {
            assert_eq!(p.jobs.len(), n, "{label}");
            assert!(p.jobs.iter().all(|j| j.channel_id == "tenant-a"), "{label}");
            assert!(p.next_cursor.is_none() || n == 1, "{label}");
        }
    }
    println!("cost {label}: best of 3 {best:?}");
}

async fn run(s: Arc<dyn Store>, backend: &str) {
    let t = Instant::now();
    fill(&s).await;
    println!(
        "cost {backend}: {} jobs of others stored in {:?}",
        others(),
        t.elapsed()
    );
    for limit in [1usize, 100] {
        let q = |visible| ListQuery {
            limit,
            visible,
            ..Default::default()
        };
        let own = Some(limit.min(3));
        time(
            &s,
            &format!("{backend} unconfined limit={limit}"),
            q(None),
            None,
        )
        .await;
        let literal = sees(None, Some(("tenant-a", true)));
        time(
            &s,
            &format!("{backend} literal channel limit={limit}"),
            q(literal),
            own,
        )
        .await;
        let glob = sees(None, Some(("tenant-a*", false)));
        time(
            &s,
            &format!("{backend} channel glob limit={limit}"),
            q(glob),
            own,
        )
        .await;
        let types = sees(Some("a.*"), None);
        time(
            &s,
            &format!("{backend} type glob limit={limit}"),
            q(types),
            own,
        )
        .await;
        // Dense: a caller that sees nearly every job (the other tenant's channel).
        let dense = sees(None, Some(("tenant-b", true)));
        time(
            &s,
            &format!("{backend} dense limit={limit}"),
            q(dense),
            None,
        )
        .await;
    }
    let other = ListQuery {
        limit: 1,
        channel: Some("tenant-b".into()),
        visible: sees(None, Some(("tenant-a", true))),
        ..Default::default()
    };
    time(
        &s,
        &format!("{backend} literal channel asking channel=tenant-b"),
        other,
        Some(0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn embedded() {
    let dir = tempfile::tempdir().expect("dir");
    let s: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
    run(s, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn redis() {
    let r = TestRedis::start();
    let s: Arc<dyn Store> = RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        retry: Duration::from_secs(5),
        // `COST_REDIS_INDEX=off`: without the channel index (as before session 18).
        channel_index: std::env::var("COST_REDIS_INDEX").as_deref() != Ok("off"),
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect");
    run(s, "redis").await;
}
