//! `POST /async/jobs/batch` over real HTTP: each item gets its own result in order (stored,
//! replayed, or its own error with nothing stored for it), idempotency keys hold inside a batch,
//! across batches and against the single submit, a body that is not a list of 1-1000 jobs is
//! refused whole, the caller's types and channels are checked per item, and every stored job has its event
//! and runs.

mod redis_support;
mod support;

use std::time::Duration;

use redis_support::TestRedis;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const BUILTINS: &str = r#"
[[runners]]
name = "builtins"
kind = "service"
types = ["runyard.*"]
"#;

const BATCH: &str = "/async/jobs/batch";

/// The `results` of a batch answer, which must be 200 with one result per item.
fn results(st: StatusCode, v: &Value, items: usize) -> Vec<Value> {
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(r.len(), items, "one result per item: {v}");
    r.clone()
}

fn code(r: &Value) -> u64 {
    r["status_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status_code: {r}"))
}

fn job_id(r: &Value) -> String {
    r["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id: {r}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_gets_its_own_result_and_bad_items_store_nothing() {
    let ts = TestServer::start(BUILTINS).await;
    let before = ts.last_event_id().await;
    let keyed = json!({"type": "runyard.echo", "args": {"n": 1}, "idempotency_key": "k-1"});
    let items = vec![
        json!({"type": "runyard.echo", "args": {"n": 0}, "channel": "batch-ch"}),
        json!({"type": "nobody.handles.this"}),
        json!({"type": "runyard.noop", "args": [1, 2]}),
        keyed.clone(),
        // The same key and body again in the same batch: the first job.
        json!({"idempotency_key": "k-1", "args": {"n": 1}, "type": "runyard.echo"}),
        // The same key with another body: 409, nothing stored.
        json!({"type": "runyard.echo", "args": {"n": 2}, "idempotency_key": "k-1"}),
        json!("not an object"),
        json!({"type": "runyard.noop", "colour": "blue"}),
    ];
    let (st, v) = ts.post(BATCH, Some(&json!({"jobs": items}))).await;
    let r = results(st, &v, 8);
    assert_eq!(
        r.iter().map(code).collect::<Vec<_>>(),
        vec![202, 422, 422, 202, 200, 409, 422, 422],
        "{v:#}"
    );
    assert_eq!(
        (v["accepted"].as_u64(), v["failed"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(r[1]["error"]["code"], "unknown_type", "{}", r[1]);
    assert!(r[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nobody.handles.this"));
    assert!(
        r[2]["error"]["message"].as_str().unwrap().contains("args"),
        "{}",
        r[2]
    );
    assert_eq!(r[5]["error"]["code"], "idempotency_conflict", "{}", r[5]);
    assert!(
        r[7]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        r[7]
    );
    assert_eq!(r[0]["channel_id"], "batch-ch");
    assert_eq!(r[0]["status"], "QUEUED");
    assert_eq!(r[3]["idempotent_replayed"], false);
    assert_eq!(r[4]["idempotent_replayed"], true);
    assert_eq!(job_id(&r[3]), job_id(&r[4]), "a replay is the first job");

    // Two jobs stored, each with its QUEUED event, and each runs.
    assert_eq!(ts.count_jobs(None).await, 2);
    let events = ts.all_events(&before).await;
    for id in [job_id(&r[0]), job_id(&r[3])] {
        assert!(
            events
                .iter()
                .any(|e| e["job_id"] == id.as_str() && e["runyard_status"] == "QUEUED"),
            "no QUEUED event for {id}: {events:#?}"
        );
        let job = ts.wait_terminal(&id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    }

    // Across batches, and against the single submit: the same key and body is the first job.
    let (st, v) = ts
        .post(BATCH, Some(&json!({"jobs": [keyed.clone()]})))
        .await;
    let again = results(st, &v, 1);
    assert_eq!((code(&again[0]), job_id(&again[0])), (200, job_id(&r[3])));
    let (st, single) = ts.submit(keyed).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{single}");
    assert_eq!(single["job_id"].as_str(), Some(job_id(&r[3]).as_str()));
    // A key first used by a single submit is replayed by a batch.
    let first = ts
        .submit_ok(json!({"type": "runyard.noop", "idempotency_key": "single"}))
        .await;
    let (st, v) = ts
        .post(
            BATCH,
            Some(&json!({"jobs": [{"type": "runyard.noop", "idempotency_key": "single"}]})),
        )
        .await;
    assert_eq!(job_id(&results(st, &v, 1)[0]), first);
    assert_eq!(ts.count_jobs(None).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_list_of_1_to_1000_jobs_is_refused_whole() {
    let ts = TestServer::start(BUILTINS).await;
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    // Its run over first: its own later events must not count as the refused batches'.
    ts.wait_status(&id, "SUCCESS", Duration::from_secs(30))
        .await;
    let before = ts.last_event_id().await;
    let one = json!({"type": "runyard.noop"});
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "1001 jobs",
            json!({"jobs": vec![one.clone(); 1001]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1001",
        ),
        (
            "no jobs",
            json!({"jobs": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "jobs",
        ),
        (
            "jobs an object",
            json!({"jobs": one.clone()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "jobs",
        ),
        (
            "a bare list",
            json!([one.clone()]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "object",
        ),
        (
            "missing jobs",
            json!({"job": [one.clone()]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "job",
        ),
    ];
    for (what, body, status, names) in cases {
        let (st, v) = ts.post(BATCH, Some(&body)).await;
        assert_eq!(st, status, "{what}: {v}");
        let (_, message) = error_of(&v);
        assert!(message.contains(names), "{what}: {message}");
    }
    let (st, v) = ts.post_raw(BATCH, "{\"jobs\": [").await;
    assert_eq!((st, error_of(&v).0), (StatusCode::BAD_REQUEST, "bad_json"));
    let res = ts
        .client
        .post(ts.at(BATCH))
        .body("{\"jobs\": []}")
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing stored, no event.
    assert_eq!(ts.count_jobs(None).await, 1);
    assert_eq!(ts.last_event_id().await, before);
    // 1000 is the limit, not over it.
    let (st, v) = ts
        .post(BATCH, Some(&json!({"jobs": vec![one; 1000]})))
        .await;
    let r = results(st, &v, 1000);
    assert!(r.iter().all(|x| code(x) == 202), "{v}");
    assert_eq!(ts.count_jobs(None).await, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_outside_the_callers_types_or_channels_gets_403_in_its_slot() {
    a_confined_callers_batch("").await;
}

/// On Redis, a server on a single-thread runtime (the API node on up to 2 cores, `cli/mod.rs`)
/// runs a batch on the blocking pool (`api/batch.rs`): the caller's types and channels are checked
/// there too.
#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_with_redis_an_item_outside_the_callers_types_or_channels_gets_403_in_its_slot(
) {
    let r = TestRedis::start();
    let store = format!(
        "redis = {:?}\nmaster_key = \"batch-test-master-key-0123456789\"\n[store]\nprefix = {:?}\n",
        r.url, r.prefix
    );
    a_confined_callers_batch(&store).await;
}

/// A token confined to `runyard.*` sends a batch with one of its types and one outside them;
/// a token confined to the channel `tenant-a` sends one with a job on `tenant-a`, one on
/// `tenant-b` and one naming no channel; then a token without `jobs:submit` sends a batch.
async fn a_confined_callers_batch(store: &str) {
    let sha = runyard::auth::tokens::token_sha256;
    let auth = format!(
        "{store}\n[auth]\n\
         [[auth.tokens]]\nname = \"confined\"\nsha256 = \"{}\"\nscopes = [\"jobs:submit\", \"jobs:read\"]\ntypes = [\"runyard.*\"]\n\
         [[auth.tokens]]\nname = \"channeled\"\nsha256 = \"{}\"\nscopes = [\"jobs:submit\"]\nchannels = [\"tenant-a\"]\n\
         [[auth.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"jobs:read\"]\n",
        sha("ry_confined"),
        sha("ry_channeled"),
        sha("ry_reader"),
    );
    let runners = format!(
        "{BUILTINS}\n[[runners]]\nname = \"other\"\nkind = \"local\"\ntypes = [\"other.*\"]\ncommand = [\"true\"]\n"
    );
    let ts = TestServer::builder(&runners).config(&auth).start().await;
    let post = |bearer: &'static str, body: Value| {
        let req = ts.client.post(ts.at(BATCH)).bearer_auth(bearer).json(&body);
        async move {
            let res = req.send().await.expect("post");
            let st = res.status();
            (st, res.json::<Value>().await.expect("json"))
        }
    };
    let body = json!({"jobs": [{"type": "runyard.noop"}, {"type": "other.kind"}]});
    let (st, v) = post("ry_confined", body.clone()).await;
    let r = results(st, &v, 2);
    assert_eq!((code(&r[0]), code(&r[1])), (202, 403), "{v}");
    assert_eq!(r[1]["error"]["code"], "forbidden");
    let (st, v) = post(
        "ry_channeled",
        json!({"jobs": [
            {"type": "runyard.noop", "channel": "tenant-a"},
            {"type": "runyard.noop", "channel": "tenant-b"},
            {"type": "runyard.noop"},
        ]}),
    )
    .await;
    let c = results(st, &v, 3);
    assert_eq!(
        (code(&c[0]), code(&c[1]), code(&c[2])),
        (202, 403, 403),
        "{v}"
    );
    assert_eq!(c[0]["channel_id"], "tenant-a", "{v}");
    for refused in &c[1..] {
        assert_eq!(refused["error"]["code"], "forbidden", "{v}");
    }
    // Without `jobs:submit`: one 403 for the whole batch.
    let (st, v) = post("ry_reader", body).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // Only the allowed job exists.
    let res = ts
        .client
        .get(ts.at("/async/jobs"))
        .bearer_auth("ry_reader")
        .send()
        .await
        .expect("list");
    let list: Value = res.json().await.expect("json");
    let mut ids: Vec<&str> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    ids.sort();
    let mut allowed = [job_id(&r[0]), job_id(&c[0])];
    allowed.sort();
    assert_eq!(ids, allowed, "only the allowed jobs exist: {list}");
}

/// Each item is read from its own text, exactly as `POST /async/jobs` reads that text: a key
/// given twice in an item is refused in its slot as the single submit refuses it (not silently
/// the last value), and an idempotent replay does not depend on spacing or key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_read_from_their_own_text_as_a_single_submit_reads_it() {
    let ts = TestServer::start(BUILTINS).await;
    let twice = r#"{"type": "runyard.noop", "type": "runyard.echo"}"#;
    let (st, single) = ts.post_raw("/async/jobs", twice).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{single}");
    let before = ts.last_event_id().await;
    let body = format!(
        r#"{{"jobs": [{twice},
            {{ "idempotency_key" : "spaced", "args":{{"b":2, "a":1}}, "type":"runyard.noop" }},
            {{"type": "runyard.noop"}}]}}"#
    );
    let (st, v) = ts.post_raw(BATCH, body).await;
    let r = results(st, &v, 3);
    assert_eq!(
        r.iter().map(code).collect::<Vec<_>>(),
        vec![422, 202, 202],
        "{v:#}"
    );
    assert_eq!(r[0]["error"]["code"], single["error"]["code"], "{v:#}");
    assert!(
        r[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate field `type`"),
        "{}",
        r[0]
    );
    // Only the two good items are stored, each with its QUEUED event, and each runs.
    assert_eq!(ts.count_jobs(None).await, 2);
    let events = ts.all_events(&before).await;
    for x in &r[1..] {
        let id = job_id(x);
        let queued = events
            .iter()
            .filter(|e| e["job_id"] == id.as_str() && e["runyard_status"] == "QUEUED")
            .count();
        assert_eq!(queued, 1, "one QUEUED event for {id}: {events:#?}");
        let job = ts.wait_terminal(&id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    }
    // The same key with the same body, spaced and ordered otherwise: the first job, replayed.
    let (st, again) = ts
        .post_raw(
            "/async/jobs",
            r#"{"type":"runyard.noop","args":{"a":1,"b":2},"idempotency_key":"spaced"}"#,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["job_id"].as_str(), Some(job_id(&r[1]).as_str()));
    assert_eq!(ts.count_jobs(None).await, 2);
}

/// `item` in a batch after a good one: refused in its own slot with the `status` and error a
/// single submit of it gets; nothing stored for it, the good one stored. Returns the results.
async fn refused_in_its_slot(ts: &TestServer, item: &str, status: StatusCode) -> Vec<Value> {
    let (st, single) = ts.post_raw("/async/jobs", item.to_string()).await;
    assert_eq!(st, status, "{single}");
    let body = format!(r#"{{"jobs": [{{"type": "runyard.noop"}}, {item}]}}"#);
    let (st, v) = ts.post_raw(BATCH, body).await;
    let r = results(st, &v, 2);
    assert_eq!(
        r.iter().map(code).collect::<Vec<_>>(),
        vec![202, u64::from(status.as_u16())],
        "{v:#}"
    );
    assert_eq!(r[1]["error"], single["error"], "{v:#}");
    assert_eq!(ts.count_jobs(None).await, 1);
    r
}

/// An item that is well-formed JSON but that a single submit cannot read (a number out of range)
/// gets the single submit's `400 bad_json` in its own slot, as docs/api.md says; nothing is
/// stored for it and the other items are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_a_single_submit_cannot_read_gets_bad_json_in_its_slot() {
    let ts = TestServer::start(BUILTINS).await;
    let huge = r#"{"type": "runyard.noop", "args": {"x": 1e400}}"#;
    let r = refused_in_its_slot(&ts, huge, StatusCode::BAD_REQUEST).await;
    let job = ts.wait_terminal(&job_id(&r[0]), WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
}

/// An item with an integer past 64 bits gets the single submit's `422` in its own slot; the
/// other items are stored (the whole batch was refused, the good items with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_with_an_integer_past_64_bits_gets_422_in_its_slot() {
    let ts = TestServer::start(BUILTINS).await;
    let big = r#"{"type": "runyard.noop", "args": {"n": 99999999999999999999}}"#;
    refused_in_its_slot(&ts, big, StatusCode::UNPROCESSABLE_ENTITY).await;
}
