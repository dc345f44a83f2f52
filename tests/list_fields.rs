//! `GET /async/jobs?fields=...` (probe dash2 F4: the dashboard re-read whole jobs of ~900 KB
//! each to show six short columns, and a page cut at 4 MiB showed 4 of them): the answer's jobs
//! hold only the members named and `id`; the page's 4 MiB are counted on those, so a page of
//! such jobs holds every one of them, and following `next_cursor` with `fields` (also when a
//! page is cut by its bytes) returns every job exactly once, with the filters applying as
//! without. An empty, unknown or repeated name is `400 bad_query` naming it. Real server on
//! 127.0.0.1:0.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::*;

/// `runyard::api::pages::PAGE_BYTES`.
const BUDGET: usize = runyard::api::pages::PAGE_BYTES;

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

/// `GET path`: the size of the answer and its JSON (a 200).
async fn get_sized(ts: &TestServer, path: &str) -> (usize, Value) {
    let res = reqwest::get(ts.at(path)).await.expect("GET");
    assert_eq!(res.status(), 200, "{path}");
    let body = res.bytes().await.expect("body");
    (body.len(), serde_json::from_slice(&body).expect("JSON"))
}

/// Every page of `GET /async/jobs?{query}` (following `next_cursor`), each within the budget.
async fn walk(ts: &TestServer, query: &str) -> (Vec<Value>, usize) {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=100 {
        let c = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (size, v) = get_sized(ts, &format!("/async/jobs?{query}{c}")).await;
        assert!(size <= BUDGET, "a page of {size} bytes");
        jobs.extend(v["jobs"].as_array().expect("jobs").iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (jobs, pages),
        }
    }
    panic!("no end to {query}");
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect()
}

fn keys(job: &Value) -> BTreeSet<&str> {
    job.as_object()
        .expect("a job object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_list_lean_jobs_and_page_over_large_ones_returning_each_once() {
    let ts = TestServer::start(RUNNERS).await;
    // 12 jobs of ~900 KB of args (control bytes, escaped as sent), kept pending, then a small
    // one on a channel of its own.
    let big = "\u{1}".repeat(150_000);
    let pending = "2099-01-01T00:00:00Z";
    for i in 0..12 {
        ts.submit_ok(
            json!({"type": "runyard.noop", "run_at": pending, "args": {"i": i, "big": big}}),
        )
        .await;
    }
    let small = ts
        .submit_ok(json!({"type": "runyard.noop", "run_at": pending, "channel": "lean-one"}))
        .await;

    // Whole jobs: a page of 100 is cut by its bytes (4 of ~900 KB).
    let (_, whole) = get_sized(&ts, "/async/jobs?limit=100").await;
    let cut = whole["jobs"].as_array().expect("jobs").len();
    assert!(cut < 13, "whole jobs: {cut} on the first page");
    assert!(whole["next_cursor"].is_string(), "{}", whole["next_cursor"]);
    let (all, _) = walk(&ts, "limit=100").await;
    assert_eq!(all.len(), 13);

    // The dashboard's columns: every job on one page, each with only those members and `id`.
    let asked = "type,status,attempt,max_attempts,updated_at,worker";
    let (size, lean) = get_sized(&ts, &format!("/async/jobs?limit=100&fields={asked}")).await;
    assert!(size < 10_000, "13 lean jobs in {size} bytes");
    assert_eq!(lean["next_cursor"], Value::Null, "one page");
    let jobs = lean["jobs"].as_array().expect("jobs");
    assert_eq!(ids(jobs), ids(&all), "the same jobs, in the same order");
    let mut want: BTreeSet<&str> = asked.split(',').collect();
    want.insert("id");
    for (j, full) in jobs.iter().zip(&all) {
        assert_eq!(keys(j), want, "{j}");
        for k in &want {
            assert_eq!(j[k], full[k], "{k} of {}", j["id"]);
        }
    }

    // Paging with `fields`: 5 a page, and pages of members that are large themselves (`args`:
    // cut by the budget, counted on the lean jobs): every job once, newest first.
    for (query, member) in [
        ("limit=5&fields=status", "status"),
        ("limit=1000&fields=args", "args"),
    ] {
        let (listed, pages) = walk(&ts, query).await;
        assert_eq!(ids(&listed), ids(&all), "{query}");
        assert!(pages >= 3, "{query}: {pages} pages");
        for j in &listed {
            assert_eq!(keys(j), BTreeSet::from(["id", member]), "{query}");
        }
    }
    // `id` alone, and filters as without `fields`.
    let (listed, _) = walk(&ts, "fields=id").await;
    assert!(listed.iter().all(|j| keys(j) == BTreeSet::from(["id"])));
    let (one, _) = walk(&ts, "channel=lean-one&fields=channel_id,type").await;
    assert_eq!(
        one,
        vec![json!({"id": small, "channel_id": "lean-one", "type": "runyard.noop"})]
    );
    let (typed, _) = walk(&ts, "type=runyard.n*&status=SCHEDULED&fields=type&limit=3").await;
    assert_eq!(ids(&typed), ids(&all));

    // A bad name: 400 naming it (an empty or unknown one with the names listed), whatever else
    // the query says.
    for (fields, named) in [
        ("bogus", "`bogus` is not a member of a job"),
        ("type,Status", "`Status` is not a member of a job"),
        ("", "an empty name"),
        ("id,,type", "an empty name"),
        ("type,", "an empty name"),
        ("type,status,type", "`type` is named twice"),
    ] {
        let (st, v) = ts
            .get(&format!(
                "/async/jobs?limit=5&status=SCHEDULED&fields={fields}"
            ))
            .await;
        assert_eq!(st, 400, "{fields}: {v}");
        let (code, message) = error_of(&v);
        assert_eq!(code, "bad_query", "{v}");
        assert!(message.contains(named), "{fields}: {message}");
        if !named.ends_with("twice") {
            assert!(message.contains("max_attempts, timeout_ms"), "{message}");
        }
    }
    // Nothing changed: the listing is as it was.
    let (again, _) = walk(&ts, "limit=100").await;
    assert_eq!(again, all);
}
