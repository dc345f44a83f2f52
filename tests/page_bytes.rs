//! Pages bounded by bytes (audit 18, M1): a log page of long control-byte lines and a listing of
//! jobs with large args each stay under the page budget whatever `limit` asks, and following
//! `next` / `next_cursor` returns every line and job exactly once. Real server on 127.0.0.1:0.
//!
//! And a page cut after a second read of the store (audit 19): 8 small jobs, then large and
//! small ones alternating, on both backends: the read after the 8 small jobs stops once its
//! jobs pass 4 MiB as stored (it read every job left), the page is cut within the budget, and the pages list each
//! job once; the jobs read per page are seen in `/metrics` (`runyard_store_listed_jobs_total`,
//! and the reads in `runyard_store_operation_seconds_count{op="list"}`). Small jobs behind
//! large ones, read one at a time, end a page after `pages::MAX_READS` reads.

mod redis_support;
mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::*;

/// `runyard::api::pages::PAGE_BYTES`.
const BUDGET: usize = runyard::api::pages::PAGE_BYTES;

const RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["lines.*"]
command = ["python3", "-c", "import sys\nfor i in range(200):\n    sys.stdout.write('%05d' % (i + 1) + '\\x01' * 15995 + '\\n')\n"]

[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

/// `GET path`: the size of the answer and its JSON.
async fn get_sized(ts: &TestServer, path: &str) -> (usize, Value) {
    let res = reqwest::get(ts.at(path)).await.expect("GET");
    assert_eq!(res.status(), 200, "{path}");
    let body = res.bytes().await.expect("body");
    (body.len(), serde_json::from_slice(&body).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_page_of_long_control_byte_lines_stays_under_the_budget_and_next_returns_each_line_once(
) {
    let ts = TestServer::start(RUNNERS).await;
    let id = ts.submit_ok(json!({"type": "lines.many"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    // 200 lines of 16,000 bytes, each escaped to ~96 KB: ~19 MB in all.
    let mut after = 0u64;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (size, v) = get_sized(
            &ts,
            &format!("/async/jobs/{id}/logs?limit=10000&after={after}"),
        )
        .await;
        assert!(size <= BUDGET, "a page of {size} bytes");
        let lines = v["lines"].as_array().expect("lines");
        if lines.is_empty() {
            assert_eq!(v["next"], after, "an empty page stays where it was");
            break;
        }
        pages += 1;
        for l in lines {
            let text = l["line"].as_str().expect("line");
            assert_eq!(text.len(), 16_000, "the line is whole");
            assert!(text[5..].bytes().all(|b| b == 1));
            seen.push(text[..5].parse::<u32>().expect("number"));
        }
        assert_eq!(v["next"], lines.last().unwrap()["seq"], "{}", v["next"]);
        after = v["next"].as_u64().expect("next");
        assert!(pages < 100, "no end");
    }
    assert!(pages >= 4, "19 MB in pages of 4 MiB: {pages} pages");
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "each line once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_jobs_with_large_args_stays_under_the_budget_and_the_cursor_returns_each_once()
{
    let ts = TestServer::start(RUNNERS).await;
    // 12 jobs of ~900 KB of args each (control bytes, escaped as sent), kept pending.
    let big = "\u{1}".repeat(150_000);
    let mut ids = BTreeSet::new();
    for i in 0..12 {
        ids.insert(
            ts.submit_ok(
                json!({"type": "runyard.noop", "run_at": "2099-01-01T00:00:00Z",
                "args": {"i": i, "big": big}}),
            )
            .await,
        );
    }
    let small = ts
        .submit_ok(json!({"type": "runyard.noop", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    ids.insert(small);
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (size, v) = get_sized(&ts, &format!("/async/jobs?limit=1000{q}")).await;
        assert!(size <= BUDGET, "a page of {size} bytes");
        pages += 1;
        for j in v["jobs"].as_array().expect("jobs") {
            listed.push(j["id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 50, "no end");
    }
    assert!(pages >= 3, "~11 MB in pages of 4 MiB: {pages} pages");
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "no job twice: {listed:?}");
    assert_eq!(unique, ids, "every job listed");
}

/// The jobs the store's listing reads returned and the reads made, from `/metrics`.
async fn reads(ts: &TestServer) -> (u64, u64) {
    (
        // Always there (0 before any listing): a missing counter must not read as 0.
        ts.metric("runyard_store_listed_jobs_total")
            .await
            .expect("the listed-jobs counter in /metrics") as u64,
        // Absent until the first listing.
        ts.store_calls("list").await,
    )
}

async fn a_page_cut_after_a_second_read(redis: Option<redis_support::TestRedis>) {
    let config = redis.as_ref().map_or_else(String::new, |r| {
        format!(
            "redis = {:?}\nmaster_key = \"page-bytes-test-master-key-0123456789\"\n\
             [store]\nprefix = {:?}\nretry = \"5s\"\n",
            r.url, r.prefix
        )
    });
    let ts = TestServer::builder(RUNNERS).config(&config).start().await;
    // Oldest first: 16 pairs of a large job (~900 KB of JSON) and a small one, then 8 small.
    let big = "\u{1}".repeat(150_000);
    let pending = "2099-01-01T00:00:00Z";
    let mut ids = BTreeSet::new();
    for i in 0..16 {
        for args in [json!({"i": i, "big": big}), json!({"i": i})] {
            ids.insert(
                ts.submit_ok(json!({"type": "runyard.noop", "run_at": pending, "args": args}))
                    .await,
            );
        }
    }
    for i in 0..8 {
        ids.insert(
            ts.submit_ok(json!({"type": "runyard.noop", "run_at": pending, "args": {"s": i}}))
                .await,
        );
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (jobs0, reads0) = reads(&ts).await;
        let (size, v) = get_sized(&ts, &format!("/async/jobs?limit=1000{q}")).await;
        let (jobs1, reads1) = reads(&ts).await;
        let (read, calls) = (jobs1 - jobs0, reads1 - reads0);
        assert!(size <= BUDGET, "a page of {size} bytes");
        let jobs = v["jobs"].as_array().expect("jobs");
        pages += 1;
        if pages == 1 {
            // The 8 small jobs (the first read), then a second read, cut by the budget.
            assert!(jobs.len() > 8, "{} jobs", jobs.len());
            assert!(calls >= 2, "{calls} reads");
            assert!(size > BUDGET - 1_000_000, "cut by the budget: {size} bytes");
            assert_eq!(v["next_cursor"], jobs.last().unwrap()["id"]);
            // The second read stops once its jobs pass 4 MiB as stored (the fifth large job of
            // ~900 KB, with the small ones between): not the ~1,000 the room left holds at the
            // mean size of 8 small jobs.
            assert!(
                read <= 8 + 12,
                "the page of {} jobs read {read} jobs in {calls} reads",
                jobs.len()
            );
        }
        // What is read beyond the page is at most one read, cut at its bytes.
        assert!(
            read as usize <= 3 * jobs.len() + 8,
            "page {pages}: {} jobs, {read} read",
            jobs.len()
        );
        for j in jobs {
            listed.push(j["id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 50, "no end");
    }
    assert!(pages >= 4, "~14 MB in pages of 4 MiB: {pages} pages");
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "no job twice: {listed:?}");
    assert_eq!(unique, ids, "every job listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_then_large_jobs_alternating_are_cut_after_a_second_read_and_listed_once_embedded() {
    a_page_cut_after_a_second_read(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_then_large_jobs_alternating_are_cut_after_a_second_read_and_listed_once_redis() {
    a_page_cut_after_a_second_read(Some(redis_support::TestRedis::start())).await;
}

/// 7 jobs of ~590 KB of JSON (newest) in front of 60 small ones: after the first read the room
/// left holds no job at their mean size, so each read asks 1; a page takes at most
/// `pages::MAX_READS` reads (without that bound this page took 60, one per small job), then ends
/// short with its last job as cursor, and the pages list each job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_jobs_behind_large_ones_take_at_most_max_reads_a_page() {
    let ts = TestServer::start(RUNNERS).await;
    let pending = "2099-01-01T00:00:00Z";
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        ids.insert(
            ts.submit_ok(json!({"type": "runyard.noop", "run_at": pending, "args": {"s": i}}))
                .await,
        );
    }
    let big = "\u{1}".repeat(98_000);
    for i in 0..7 {
        ids.insert(
            ts.submit_ok(
                json!({"type": "runyard.noop", "run_at": pending, "args": {"i": i, "big": big}}),
            )
            .await,
        );
    }
    let max = runyard::api::pages::MAX_READS as u64;
    let (_, reads0) = reads(&ts).await;
    let (size, v) = get_sized(&ts, "/async/jobs?limit=1000").await;
    let (_, reads1) = reads(&ts).await;
    assert!(size <= BUDGET, "a page of {size} bytes");
    assert_eq!(reads1 - reads0, max, "reads behind the first page");
    let jobs = v["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 8 + (max as usize - 1), "8, then 1 a read");
    assert_eq!(v["next_cursor"], jobs.last().unwrap()["id"]);
    let mut listed: Vec<String> = jobs
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = v["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let (_, v) = get_sized(&ts, &format!("/async/jobs?limit=1000&cursor={c}")).await;
        for j in v["jobs"].as_array().expect("jobs") {
            listed.push(j["id"].as_str().unwrap().to_string());
        }
        cursor = v["next_cursor"].as_str().map(String::from);
        assert!(listed.len() <= 2 * ids.len(), "no end");
    }
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "no job twice");
    assert_eq!(unique, ids, "every job listed");
}
