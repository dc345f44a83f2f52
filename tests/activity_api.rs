//! The dashboard's aggregates over real HTTP (src/api/activity.rs): `GET /async/activity` (jobs
//! finished per minute of the last hour, by final status) and `GET /async/dead_letters`, checked
//! against the jobs the test ran; every bad query parameter is a 400 `bad_query` naming it; a
//! token confined to types counts its types only.

mod support;

use std::collections::BTreeMap;

use reqwest::StatusCode;
use runyard::auth::tokens::token_sha256;
use serde_json::{json, Value};
use support::*;

const NOOP_A_FAIL_B: &str = r#"
[[runners]]
kind = "service"
types = ["a.*"]
operation = "runyard.noop"

[[runners]]
kind = "service"
types = ["b.*"]
operation = "runyard.fail"
max_attempts = 1
"#;

/// The minute (RFC 3339, whole minute in UTC) of an RFC 3339 time.
fn minute_of(ts: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(ts).expect("rfc3339");
    let secs = t.timestamp().div_euclid(60) * 60;
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("time")
        .timestamp_micros()
        .to_string()
}

fn micros(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .expect("rfc3339")
        .timestamp_micros()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_and_dead_letters_count_the_jobs_that_ran() {
    let ts = TestServer::start(NOOP_A_FAIL_B).await;
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for t in ["a.fine", "a.fine", "a.fine", "b.broken", "b.broken"] {
        ids.push(ts.submit_ok(json!({"type": t})).await);
    }
    for id in &ids {
        let j = ts.wait_terminal(id, WAIT).await;
        let fin = j["finished_at"].as_str().expect("finished_at");
        *want
            .entry((minute_of(fin), status_of(&j).to_string()))
            .or_default() += 1;
    }
    let newest = ts.last_event_id().await;

    let (code, a) = ts.get("/async/activity").await;
    assert_eq!(code, StatusCode::OK, "{a}");
    let minutes = a["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60, "{a}");
    assert_eq!(a["since"], minutes[0]["at"]);
    assert_eq!(a["last_event_id"].as_str(), Some(newest.as_str()), "{a}");
    // Each job in the minute it finished, with its final status; nothing else.
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for m in minutes {
        for s in ["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"] {
            let n = m[s].as_u64().expect("a count");
            if n > 0 {
                got.insert((micros(m["at"].as_str().expect("at")), s.into()), n);
            }
        }
    }
    assert_eq!(got, want, "{a:#}");
    assert_eq!(a["totals"]["SUCCESS"], 3, "{a}");
    assert_eq!(a["totals"]["ERROR"], 2, "{a}");

    let (_, few) = ts.get("/async/activity?minutes=5").await;
    assert_eq!(few["minutes"].as_array().map(Vec::len), Some(5), "{few}");
    let (_, only_b) = ts.get("/async/activity?type=b.*").await;
    assert_eq!(only_b["totals"]["SUCCESS"], 0, "{only_b}");
    assert_eq!(only_b["totals"]["ERROR"], 2, "{only_b}");

    let (code, d) = ts.get("/async/dead_letters").await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d, json!({"count": 2, "by_type": {"b.broken": 2}}));
    let (_, none) = ts.get("/async/dead_letters?type=a.*").await;
    assert_eq!(none, json!({"count": 0, "by_type": {}}));
    // Retried, a dead letter leaves the count.
    let (code, r) = ts
        .post(&format!("/async/jobs/{}/retry", ids[3]), None)
        .await;
    assert!(code.is_success(), "{code} {r}");
    ts.wait_for(&ids[3], WAIT, |j| {
        status_of(j) == "ERROR" && j["attempt"].as_u64() == Some(2)
    })
    .await;
    let (_, after) = ts.get("/async/dead_letters").await;
    assert_eq!(after["count"], 2, "retried and dead again: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400_naming_the_field() {
    let ts = TestServer::start(NOOP_A_FAIL_B).await;
    let cases = [
        ("/async/activity?minutes=0", "minutes"),
        ("/async/activity?minutes=61", "minutes"),
        ("/async/activity?minutes=soon", "minutes"),
        ("/async/activity?minutes=-1", "minutes"),
        ("/async/activity?type=", "type"),
        ("/async/activity?colour=blue", "colour"),
        ("/async/dead_letters?type=", "type"),
        ("/async/dead_letters?limit=5", "limit"),
        ("/async/activity?type=a.%5Bx%5D", "type"),
        ("/async/dead_letters?type=%7Ba,b%7D", "type"),
        ("/async/activity?type=%ff", "UTF-8"),
        ("/async/stats?type=a.*", "no query parameter"),
    ];
    for (path, field) in cases {
        let (code, body) = ts.get(path).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}: {body}");
        let (c, m) = error_of(&body);
        assert_eq!(c, "bad_query", "{path}: {body}");
        assert!(
            m.contains(field),
            "{path}: the message names `{field}`: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_confined_to_types_counts_its_types_only() {
    let tokens = format!(
        "[[auth.tokens]]\nname = \"all\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         [[auth.tokens]]\nname = \"a-only\"\nsha256 = \"{}\"\nscopes = [\"jobs:read\"]\ntypes = [\"a.*\"]\n",
        token_sha256("token-for-everything-0123456789"),
        token_sha256("token-for-a-types-only-0123456789"),
    );
    let ts = TestServer::builder(NOOP_A_FAIL_B)
        .config(&tokens)
        .start()
        .await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = client.request(method, ts.at(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.expect("request");
            let code = res.status();
            (code, res.json::<Value>().await.expect("json"))
        }
    };
    let all = "token-for-everything-0123456789";
    for t in ["a.fine", "b.broken"] {
        let (code, j) = call(
            reqwest::Method::POST,
            "/async/jobs",
            all,
            Some(json!({"type": t})),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{j}");
        let id = j["job_id"].as_str().expect("job_id").to_string();
        eventually("the job ends", WAIT, || async {
            let (_, j) = call(
                reqwest::Method::GET,
                &format!("/async/jobs/{id}"),
                all,
                None,
            )
            .await;
            is_terminal(&j["status"]).then_some(())
        })
        .await;
    }
    let (_, everything) = call(reqwest::Method::GET, "/async/activity", all, None).await;
    assert_eq!(everything["totals"]["SUCCESS"], 1, "{everything}");
    assert_eq!(everything["totals"]["ERROR"], 1, "{everything}");
    let a_only = "token-for-a-types-only-0123456789";
    let (code, mine) = call(reqwest::Method::GET, "/async/activity", a_only, None).await;
    assert_eq!(code, StatusCode::OK, "{mine}");
    assert_eq!(mine["totals"]["SUCCESS"], 1, "{mine}");
    assert_eq!(
        mine["totals"]["ERROR"], 0,
        "another type's failure is not shown: {mine}"
    );
    // The global stream's newest id is the admin's to follow, not a types-confined token's
    // (it would tell how many events the other types make).
    assert!(everything["last_event_id"].is_string(), "{everything}");
    assert!(mine["last_event_id"].is_null(), "{mine}");
    let (_, dead) = call(reqwest::Method::GET, "/async/dead_letters", all, None).await;
    assert_eq!(dead["count"], 1, "{dead}");
    let (_, dead) = call(reqwest::Method::GET, "/async/dead_letters", a_only, None).await;
    assert_eq!(dead, json!({"count": 0, "by_type": {}}));
}
