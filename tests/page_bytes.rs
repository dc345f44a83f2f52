//! Pages bounded by bytes (audit 18, M1): a log page of long control-byte lines and a listing of
//! jobs with large args each stay under the page budget whatever `limit` asks, and following
//! `next` / `next_cursor` returns every line and job exactly once. Real server on 127.0.0.1:0.

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
