//! Readiness signals through real components, on both backends: `POST/GET /async/signals/{key}`
//! (idempotent by id, `since`), refusals, the signed job hook `POST {JOB_HOOK}/signal/{key}`
//! (through the Rust job client), the CLI, and retention.

mod redis_support;
mod support;

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use runyard_hooks::{derive_job_secret, JobClient};
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::{status_of, TestServer, WAIT};

const MASTER_KEY: &str = "signal-test-master-key-0123456789abcdef";

const RUNNERS: &str = r#"
[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]

[[runners]]
name = "bad"
kind = "local"
types = ["fail.*"]
command = ["false"]
max_attempts = 1

[[runners]]
name = "loc"
kind = "local"
types = ["loc.*"]
command = ["sleep", "30"]
"#;

fn code_msg(v: &Value) -> (String, String) {
    (
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

async fn records(ts: &TestServer, key_path: &str, query: &str) -> Vec<Value> {
    let (st, v) = ts.get(&format!("/async/signals/{key_path}{query}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["signals"].as_array().cloned().unwrap_or_default()
}

async fn suite(ts: &TestServer) {
    // Writes: 201 with increasing seq; the same id again is 200 with the first record.
    let (st, a) = ts
        .post(
            "/async/signals/src.orders",
            Some(&json!({"payload": {"rows": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!(
        (a["key"].as_str(), a["seq"].as_u64()),
        (Some("src.orders"), Some(1))
    );
    let (st, b) = ts.post("/async/signals/src.orders", None).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["seq"], 2);
    let (st, c) = ts
        .post(
            "/async/signals/src.orders",
            Some(&json!({"id": "load-3", "payload": [3]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(c["seq"], 3);
    let (st, again) = ts
        .post(
            "/async/signals/src.orders",
            Some(&json!({"id": "load-3", "payload": "other"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(
        (again["seq"].clone(), again["at"].clone()),
        (c["seq"].clone(), c["at"].clone())
    );

    let all = records(ts, "src.orders", "").await;
    assert_eq!(all.len(), 3, "no second record for a repeated id: {all:?}");
    assert_eq!(all[0]["payload"], json!({"rows": 1}));
    assert_eq!(all[1]["payload"], Value::Null);
    assert_eq!(all[2]["payload"], json!([3]));
    assert_eq!(all[2]["id"], "load-3");
    // since: records at or after it.
    let since = b["at"].as_str().unwrap().replace('+', "%2B");
    let later = records(ts, "src.orders", &format!("?since={since}")).await;
    assert_eq!(
        later
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(records(ts, "src.nothing", "").await.is_empty());
    // Keys are any text (percent-encoded in the path).
    let (st, v) = ts.post("/async/signals/db%2Forders%20eu", None).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["key"], "db/orders eu");

    // Refusals name the field; nothing is stored.
    let long = "k".repeat(201);
    for (path, body, field) in [
        (long.clone(), json!({}), "`key`"),
        ("bad%01key".to_string(), json!({}), "`key`"),
        // A zero-width space: shows as `src.orders`.
        ("src.%E2%80%8Borders".to_string(), json!({}), "invisible"),
        // A word joiner alone, and a soft hyphen: show as nothing (probe s53b).
        ("%E2%81%A0".to_string(), json!({}), "invisible"),
        ("src.or%C2%ADders".to_string(), json!({}), "invisible"),
        (
            "src.orders".to_string(),
            json!({"id": "run\u{3164}1"}),
            "invisible",
        ),
        ("src.orders".to_string(), json!({"id": ""}), "`id`"),
        // A right-to-left override: `run-\u{202e}2-a` shows as another id.
        (
            "src.orders".to_string(),
            json!({"id": "run-\u{202e}2-a"}),
            "invisible",
        ),
        ("src.orders".to_string(), json!({"colour": 1}), "colour"),
    ] {
        let (st, v) = ts
            .post(&format!("/async/signals/{path}"), Some(&body))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {v}");
        assert!(code_msg(&v).1.contains(field), "{path}: {v}");
    }
    let (st, _) = ts.post("/async/signals/", None).await;
    assert!(st.is_client_error(), "an empty key: {st}");
    let (st, v) = ts.post_raw("/async/signals/src.orders", "{").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = ts.get("/async/signals/src.orders?since=yesterday").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(code_msg(&v).1.contains("`since`"));
    assert_eq!(
        records(ts, "src.orders", "").await.len(),
        3,
        "refusals stored nothing"
    );
    let (st, _) = ts.get(&format!("/async/signals/{long}")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // The job hook: a running job signals through the Rust job client.
    let id = ts.submit_ok(json!({"type": "loc.wait"})).await;
    let job = ts.wait_status(&id, "RUNNING", WAIT).await;
    let attempt = job["attempt"].as_u64().unwrap() as u32;
    let secret = derive_job_secret(MASTER_KEY.as_bytes(), &id, attempt);
    let client = JobClient::new(id.clone(), secret, &ts.at("/async")).expect("client");
    let v = client
        .signal("src.hook", Some(json!({"from": "job"})), Some("h1"))
        .await
        .expect("a running job can signal");
    assert_eq!(v["seq"], 1, "{v}");
    let v = client
        .signal("src.hook", None, Some("h1"))
        .await
        .expect("idempotent");
    assert_eq!(v["seq"], 1, "{v}");
    let recs = records(ts, "src.hook", "").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["payload"], json!({"from": "job"}));
    // Unsigned: 401.
    let (st, v) = ts.post("/async/signal/src.hook", Some(&json!({}))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    // A job that ended can no longer signal.
    let (st, _) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK);
    ts.wait_status(&id, "CANCELLED", WAIT).await;
    let e = client
        .signal("src.hook", None, None)
        .await
        .expect_err("cancelled job");
    assert!(e.to_string().contains("409"), "{e}");
    assert_eq!(records(ts, "src.hook", "").await.len(), 1);

    // The CLI.
    let url = ts.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let run = || {
            Command::new(env!("CARGO_BIN_EXE_runyard"))
                .args([
                    "signal",
                    "src.cli/eu",
                    "--payload",
                    "{\"rows\": 7}",
                    "--id",
                    "x1",
                    "--server",
                    &url,
                ])
                .stdin(Stdio::null())
                .output()
                .expect("runyard runs")
        };
        (run(), run())
    })
    .await
    .unwrap();
    for o in [&out.0, &out.1] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).expect("JSON line");
        assert_eq!(
            (v["key"].as_str(), v["seq"].as_u64()),
            (Some("src.cli/eu"), Some(1))
        );
    }
    let recs = records(ts, "src.cli%2Feu", "").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["payload"], json!({"rows": 7}));

    // emits: a job that ends SUCCESS writes its signals with its final status; one that does not
    // writes none. A bad key is refused at submit.
    let ok = ts
        .submit_ok(json!({"type": "runyard.noop", "emits": ["chain.a", "chain.b"]}))
        .await;
    let j = ts.wait_terminal(&ok, WAIT).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["emits"], json!(["chain.a", "chain.b"]));
    for k in ["chain.a", "chain.b"] {
        let recs = records(ts, k, "").await;
        assert_eq!(recs.len(), 1, "{k}: {recs:?}");
        assert_eq!(recs[0]["payload"], json!({"job_id": ok}));
        assert_eq!(recs[0]["id"], format!("job:{ok}"));
    }
    let failing = ts
        .submit_ok(json!({"type": "fail.now", "emits": ["chain.fail"]}))
        .await;
    let j = ts.wait_terminal(&failing, WAIT).await;
    assert_ne!(j["status"], "SUCCESS", "{j}");
    let cancelled = ts
        .submit_ok(json!({"type": "loc.wait", "emits": ["chain.fail"]}))
        .await;
    ts.wait_status(&cancelled, "RUNNING", WAIT).await;
    ts.post(&format!("/async/jobs/{cancelled}/cancel"), None)
        .await;
    ts.wait_status(&cancelled, "CANCELLED", WAIT).await;
    assert!(
        records(ts, "chain.fail", "").await.is_empty(),
        "no SUCCESS, no signal"
    );
    for bad in [json!([""]), json!(["a\u{7}b"]), json!(["k".repeat(201)])] {
        let (st, v) = ts
            .submit(json!({"type": "runyard.noop", "emits": bad}))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert!(code_msg(&v).1.contains("`emits`"), "{v}");
    }

    // Every key with records, by name, with its count and newest time; paged; bad values 400.
    let (st, v) = ts.get("/async/signals?limit=1").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let first = v["keys"][0].clone();
    assert!(first["count"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(first["latest"].is_string(), "{v}");
    let after = v["next_after"].as_str().expect("more keys").to_string();
    let (_, all) = ts.get("/async/signals?limit=1000").await;
    let names: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert!(names.contains(&"src.orders"), "{all}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "by name: {all}");
    assert_eq!(names[0], first["key"], "{all}");
    assert_eq!(
        names[0], after,
        "the next page starts after the last key shown: {all}"
    );
    let (_, next) = ts
        .get(&format!("/async/signals?limit=1&after={after}"))
        .await;
    assert_eq!(next["keys"][0]["key"], names[1], "{next}");
    for q in ["limit=0", "limit=1001", "after=", "colour=red"] {
        let (st, v) = ts.get(&format!("/async/signals?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
    }

    // Retention: records older than the cut are deleted; sequence numbers are never reused.
    let store = ts.running().app.store.clone();
    let n = store
        .signals_trim(runyard::job::now_us() + 1)
        .await
        .expect("trim");
    assert!(n >= 8, "{n}");
    assert!(records(ts, "src.orders", "").await.is_empty());
    let (_, v) = ts.post("/async/signals/src.orders", None).await;
    assert_eq!(v["seq"], 4, "{v}");
}

/// Records of 900 KB: a `GET` answers about 4 MiB of them a page, `next_since` goes on; a waiting
/// job shown on them reads their numbers, not their payloads.
async fn large_records(ts: &TestServer) {
    let pad = "p".repeat(900_000);
    for i in 0..12 {
        let (st, v) = ts
            .post(
                "/async/signals/big.one",
                Some(&json!({"payload": {"i": i, "pad": pad}})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (mut seen, mut query, mut pages) = (vec![], String::new(), 0);
    loop {
        pages += 1;
        assert!(pages <= 12, "no end after 12 pages");
        let res = reqwest::get(ts.at(&format!("/async/signals/big.one{query}")))
            .await
            .expect("GET");
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.bytes().await.expect("body");
        assert!(body.len() < 6 << 20, "a page of {} bytes", body.len());
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        let recs = v["signals"].as_array().expect("signals");
        assert!(!recs.is_empty(), "{query}");
        for r in recs {
            assert_eq!(r["payload"]["pad"].as_str().map(str::len), Some(900_000));
            seen.push(r["seq"].as_u64().expect("seq"));
        }
        match v["next_since"].as_str() {
            Some(next) => {
                // One microsecond after the page's last record.
                let last = chrono::DateTime::parse_from_rfc3339(
                    recs[recs.len() - 1]["at"].as_str().expect("at"),
                )
                .expect("at")
                .timestamp_micros();
                let next_us = chrono::DateTime::parse_from_rfc3339(next)
                    .expect("next_since")
                    .timestamp_micros();
                assert_eq!(next_us, last + 1);
                query = format!("?since={}", next.replace('+', "%2B"));
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        (1..=12).collect::<Vec<u64>>(),
        "each record once, in order"
    );
    assert!(pages >= 3, "12 records of 900 KB in {pages} page(s)");
    // `limit` ends a page too, with its continuation; a page reaching the end has none.
    let (_, v) = ts.get("/async/signals/big.one?limit=2").await;
    assert_eq!(v["signals"].as_array().map(Vec::len), Some(2));
    assert!(v["next_since"].is_string(), "{}", v["next_since"]);
    let (_, v) = ts.get("/async/signals/src.orders?limit=1000").await;
    assert!(v["next_since"].is_null(), "{}", v["next_since"]);

    // A job waiting on the key: shown with every number, no payload read.
    let id = ts
        .submit_ok(
            json!({"type": "runyard.noop", "wait_for": [{"key": "big.one", "count": 100}],
            "deadline": "+1h"}),
        )
        .await;
    let (pages_before, seqs_before) = (
        ts.store_calls("signals_page").await,
        ts.store_calls("signal_seqs").await,
    );
    for _ in 0..3 {
        let (st, v) = ts.get(&format!("/async/jobs/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "WAITING", "{v}");
        assert_eq!(v["wait"]["items"][0]["seen"], 12, "{v}");
        assert_eq!(
            v["wait"]["items"][0]["signal_ids"],
            json!((1..=12).collect::<Vec<u64>>()),
            "{v}"
        );
    }
    assert_eq!(ts.store_calls("signals_page").await, pages_before);
    assert!(ts.store_calls("signal_seqs").await >= seqs_before + 3);
    let (st, _) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK);
}

/// The ids `job:{job_id}` are the records a job's `emits` writes: a client writing one first
/// (through the API or a job's hook) would make the job's own record a duplicate, dropped, and
/// stand for it. Refused (422), nothing written; the job's record is then its own.
async fn emit_ids_are_reserved(ts: &TestServer) {
    let x = ts
        .submit_ok(json!({"type": "runyard.noop", "emits": ["spoof.k"],
            "wait_for": [{"key": "gate.k"}]}))
        .await;
    // Another job's id too (any job's record); an id that only starts with `job:` is free.
    let (st, v) = ts
        .post(
            "/async/signals/free.k",
            Some(&json!({"id": format!("job:{x}:loaded")})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // In any case: `JOB:` and `Job:` read as the same reserved prefix.
    for id in [
        format!("job:{x}"),
        format!("job:{}", uuid::Uuid::now_v7()),
        format!("JOB:{x}"),
        format!("Job:{x}"),
    ] {
        let (st, v) = ts
            .post(
                "/async/signals/spoof.k",
                Some(&json!({"id": id, "payload": {"job_id": x}})),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{id}: {v}");
        let (code, msg) = code_msg(&v);
        assert_eq!(code, "invalid_request", "{v}");
        assert!(msg.contains("`job:`") && msg.contains("emits"), "{v}");
    }
    // A running job, through its hook.
    let y = ts.submit_ok(json!({"type": "loc.wait"})).await;
    let job = ts.wait_status(&y, "RUNNING", WAIT).await;
    let attempt = job["attempt"].as_u64().unwrap() as u32;
    let secret = derive_job_secret(MASTER_KEY.as_bytes(), &y, attempt);
    let client = JobClient::new(y.clone(), secret, &ts.at("/async")).expect("client");
    let e = client
        .signal("spoof.k", None, Some(&format!("job:{x}")))
        .await
        .expect_err("a job: id from the hook");
    assert!(e.to_string().contains("422"), "{e}");
    let e = client
        .signal("spoof.k", None, Some(&format!("JOB:{x}")))
        .await
        .expect_err("a JOB: id from the hook");
    assert!(e.to_string().contains("422"), "{e}");
    // A blank key from the hook too.
    let e = client
        .signal(" ", None, None)
        .await
        .expect_err("a blank key from the hook");
    assert!(e.to_string().contains("422"), "{e}");
    ts.post(&format!("/async/jobs/{y}/cancel"), None).await;
    assert!(
        records(ts, "spoof.k", "").await.is_empty(),
        "nothing written"
    );
    // X runs and succeeds: its record is written, with its own payload.
    let (st, v) = ts.post("/async/signals/gate.k", None).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let j = ts.wait_terminal(&x, WAIT).await;
    assert_eq!(j["status"], "SUCCESS", "{j}");
    let recs = records(ts, "spoof.k", "").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        (&recs[0]["id"], &recs[0]["payload"]),
        (&json!(format!("job:{x}")), &json!({"job_id": x}))
    );
}

/// A key of spaces, or one starting or ending with white space, shows as nothing or as another
/// key: refused to write, to wait for and to emit. White space inside a key is fine.
async fn blank_keys_are_refused(ts: &TestServer) {
    for path in ["%20", "%20%20", "%20k", "k%20", "k%C2%A0"] {
        let (st, v) = ts.post(&format!("/async/signals/{path}"), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {v}");
        assert!(code_msg(&v).1.contains("white space"), "{path}: {v}");
        // Still read as before (a key an older build stored).
        let (st, v) = ts.get(&format!("/async/signals/{path}")).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["signals"], json!([]), "{path}: nothing written: {v}");
    }
    for key in [" ", " k", "k "] {
        for (body, field) in [
            (
                json!({"type": "runyard.noop", "wait_for": [{"key": key}]}),
                "`wait_for[0].key`",
            ),
            (json!({"type": "runyard.noop", "emits": [key]}), "`emits`"),
        ] {
            let (st, v) = ts.submit(body.clone()).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
            let msg = code_msg(&v).1;
            assert!(msg.contains(field) && msg.contains("white space"), "{v}");
        }
    }
}

/// A key named twice in one `wait_for` would be met by one record for both items: refused (422
/// naming it) at submit, in a batch and in a schedule's job; two records are `count: 2`.
async fn a_key_named_twice_in_wait_for_is_refused(ts: &TestServer) {
    let dup = json!({"type": "runyard.noop",
        "wait_for": [{"key": "dup.k"}, {"key": "other.k"}, {"key": "dup.k", "count": 2}]});
    let (st, v) = ts.submit(dup.clone()).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let msg = code_msg(&v).1;
    assert!(
        msg.contains("`wait_for[2].key`") && msg.contains("\"dup.k\"") && msg.contains("count"),
        "{v}"
    );
    let (st, v) = ts
        .post(
            "/async/jobs/batch",
            Some(&json!({"jobs": [{"type": "runyard.noop"}, dup]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (
            &v["results"][0]["status_code"],
            &v["results"][1]["status_code"]
        ),
        (&json!(202), &json!(422)),
        "{v}"
    );
    let m = v["results"][1]["error"]["message"].as_str().unwrap_or("");
    assert!(m.contains("\"dup.k\""), "{v}");
    let (st, v) = ts
        .post(
            "/async/schedules",
            Some(&json!({"name": "dup-wait", "cron": "@daily", "job": dup})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(code_msg(&v).1.contains("\"dup.k\""), "{v}");
    let (st, _) = ts.get("/async/schedules/dup-wait").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing stored");
    // The same key with a count is taken; so is the same key with another `since` (two
    // conditions: one record lately, two in the last week).
    for wait_for in [
        json!([{"key": "dup.k", "count": 2}]),
        json!([{"key": "dup.k", "since": "+0s"}, {"key": "dup.k", "count": 2, "since": "-7d"}]),
    ] {
        let id = ts
            .submit_ok(json!({"type": "runyard.noop", "wait_for": wait_for}))
            .await;
        let (st, _) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
        assert_eq!(st, StatusCode::OK);
    }
}

/// `method path` on a raw connection, the path sent as written (an HTTP client would resolve a
/// `.` or `..` segment, also written `%2E`): (status, body as JSON).
async fn raw(ts: &TestServer, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::AsyncWriteExt;
    let addr = ts.url.trim_start_matches("http://").to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("request");
    let text = support::read_response(&mut s).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The keys `.` and `..`: a client building the key's URL resolves them as a path (`POST
/// /async/signals/..` is `POST /async`), so neither the CLI nor a client library could write or
/// read them, and a job waiting on one waited in vain. Refused as schedule names are (422
/// naming the rule), to write (in the path, plain or `%2E`), to wait for, to emit, in a
/// schedule's job; nothing stored. Reading one answers as for any key without records; keys
/// that only hold dots (`...`) or start with one are fine.
async fn dot_keys_are_refused(ts: &TestServer) {
    for path in ["%2E", "%2e%2E", ".", ".."] {
        let (st, v) = raw(ts, "POST", &format!("/async/signals/{path}")).await;
        assert_eq!(st, 422, "{path}: {v}");
        assert_eq!(code_msg(&v).0, "invalid_request", "{path}: {v}");
        assert!(code_msg(&v).1.contains("`.` or `..`"), "{path}: {v}");
        let (st, v) = raw(ts, "GET", &format!("/async/signals/{path}")).await;
        assert_eq!(st, 200, "{path}: {v}");
        assert_eq!(v["signals"], json!([]), "{path}: nothing written: {v}");
    }
    for key in [".", ".."] {
        for (body, field) in [
            (
                json!({"type": "runyard.noop", "wait_for": [{"key": key}]}),
                "`wait_for[0].key`",
            ),
            (json!({"type": "runyard.noop", "emits": [key]}), "`emits`"),
        ] {
            let (st, v) = ts.submit(body.clone()).await;
            assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
            let msg = code_msg(&v).1;
            assert!(msg.contains(field) && msg.contains("`.` or `..`"), "{v}");
        }
        let job = json!({"type": "runyard.noop", "wait_for": [{"key": key}]});
        let (st, v) = ts
            .post(
                "/async/schedules",
                Some(&json!({"name": "dot-wait", "cron": "@daily", "job": job})),
            )
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(code_msg(&v).1.contains("`.` or `..`"), "{v}");
        let (st, _) = ts.get("/async/schedules/dot-wait").await;
        assert_eq!(st, StatusCode::NOT_FOUND, "nothing stored");
    }
    for key in ["...", ".k", "k."] {
        let (st, v) = ts.post(&format!("/async/signals/{key}"), None).await;
        assert_eq!(st, StatusCode::CREATED, "{key}: {v}");
        assert_eq!(v["key"], key, "{v}");
    }
}

async fn holes(ts: &TestServer) {
    emit_ids_are_reserved(ts).await;
    blank_keys_are_refused(ts).await;
    dot_keys_are_refused(ts).await;
    a_key_named_twice_in_wait_for_is_refused(ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_ids_blank_keys_and_repeated_wait_keys_are_refused_embedded() {
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("master_key = \"{MASTER_KEY}\""))
        .start()
        .await;
    holes(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_ids_blank_keys_and_repeated_wait_keys_are_refused_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config(MASTER_KEY))
        .start()
        .await;
    holes(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_embedded() {
    let ts = TestServer::builder(RUNNERS)
        .config(&format!("master_key = \"{MASTER_KEY}\""))
        .start()
        .await;
    suite(&ts).await;
    large_records(&ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config(MASTER_KEY))
        .start()
        .await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    suite(&ts).await;
    large_records(&ts).await;
}

/// Only an active attempt that has not said how it ended can signal (docs/hooks.md): once it
/// reported `SUCCESS` or an `ERROR` (here a final one, `retry: false`), or once its time limit
/// ran out (the mark, while its process is being stopped), `POST {JOB_HOOK}/signal/{key}` is
/// refused `409` as its other calls are, and nothing is written. Before, such a signal answered
/// `201` with its seq while progress, results, uploads and `GET /job` got `409`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_reported_or_ran_out_of_time_cannot_signal() {
    let runners = format!(
        r#"{RUNNERS}
[[runners]]
name = "deaf"
kind = "local"
types = ["deaf.*"]
command = ["/bin/sh", "-c", "trap '' TERM; sleep 30"]
"#
    );
    // A reported outcome is committed `exit_grace` (10 s by default) after the report, a process
    // that ignores SIGTERM stopped `kill_grace` after the mark: windows the calls below fit in.
    let ts = TestServer::builder(&runners)
        .config(&format!(
            "master_key = \"{MASTER_KEY}\"\n[worker]\nkill_grace = \"3s\""
        ))
        .start()
        .await;
    let client_of = |id: &str, job: &Value| {
        let attempt = job["attempt"].as_u64().unwrap() as u32;
        let secret = derive_job_secret(MASTER_KEY.as_bytes(), id, attempt);
        JobClient::new(id.to_string(), secret, &ts.at("/async")).expect("client")
    };
    for (label, key) in [("SUCCESS", "after.success"), ("ERROR", "after.error")] {
        let id = ts.submit_ok(json!({"type": "loc.reports"})).await;
        let job = ts.wait_status(&id, "RUNNING", WAIT).await;
        let client = client_of(&id, &job);
        // A running job signals as before.
        let v = client
            .signal(key, Some(json!({"before": true})), None)
            .await
            .expect("a running job can signal");
        assert_eq!(v["seq"], 1, "{v}");
        if label == "SUCCESS" {
            client
                .success(Some(json!({"ok": 1})))
                .await
                .expect("report");
        } else {
            client.error_no_retry("bad input").await.expect("report");
        }
        let job = ts.get_job(&id).await;
        assert_eq!(status_of(&job), "RUNNING", "still stopping: {job:#}");
        assert_eq!(job["runs"][0]["reported"], label, "{job:#}");
        for id_arg in [None, Some("late-1")] {
            let e = client
                .signal(key, Some(json!({"after": label})), id_arg)
                .await
                .expect_err("a signal after the attempt reported");
            let text = e.to_string();
            assert!(
                text.contains("409") && text.contains(&format!("reported {label}")),
                "{label}: {text}"
            );
        }
        let recs = records(&ts, key, "").await;
        assert_eq!(
            recs.len(),
            1,
            "{label}: nothing written after the report: {recs:?}"
        );
    }

    let id = ts
        .submit_ok(json!({"type": "deaf.slow", "timeout": "1s", "max_attempts": 1}))
        .await;
    let job = ts.wait_status(&id, "RUNNING", WAIT).await;
    let client = client_of(&id, &job);
    let marked = ts
        .wait_for(&id, WAIT, |j| j["runs"][0]["reported"] == "TIMEOUT")
        .await;
    assert_eq!(status_of(&marked), "RUNNING", "{marked:#}");
    let e = client
        .signal("after.timeout", None, None)
        .await
        .expect_err("a signal after the time limit ran out");
    let text = e.to_string();
    assert!(
        text.contains("409") && text.contains("time limit"),
        "{text}"
    );
    assert!(records(&ts, "after.timeout", "").await.is_empty());
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
}
