//! A waiting job stays small and cheap, on both backends (docs/api.md, "Waiting jobs"): a
//! `wait_for` of items counting 300 records each keeps at most 32 record numbers per item,
//! released at once or while it waits; and on the embedded store a record of a key many such
//! jobs wait on (from the API or a job's `emits`) reads none of their record numbers and counts
//! the key's records at most once (Redis counts with ZCOUNT, later, in its wait loop). The counts come from
//! `runyard_waiting_signal_reads_total`, kept per process: this binary holds this one test, so
//! no other server's reads mix in.

mod redis_support;
mod support;
mod wait_support;

use std::time::Duration;

use serde_json::{json, Value};

use redis_support::TestRedis;
use support::{TestServer, WAIT};
use wait_support::{seqs, signal, still_waiting, RUNNERS};

/// Records of each key a large `wait_for` counts.
const MANY: usize = 300;
/// Keys a large `wait_for` names (a key is named once in a `wait_for`), each counting [`MANY`].
const KEYS: usize = 4;
/// The bound of a job's JSON this test holds a large `wait_for` to (docs/api.md: each item keeps
/// at most 32 record numbers; an item kept every number it counted before).
const JOB_BYTES: usize = 64 * 1024;

/// The wait of a job as `GET` shows it, held to [`JOB_BYTES`]; each item on one of `keys`
/// counted `seen` records and shows the first numbers of its key (at most 32), marked truncated
/// when more counted.
async fn small_wait(ts: &TestServer, id: &str, keys: &[(String, Vec<u64>)], seen: usize) -> Value {
    let j = ts.get_job(id).await;
    let bytes = serde_json::to_vec(&j).unwrap().len();
    assert!(bytes < JOB_BYTES, "the job is {bytes} bytes");
    let mut checked = 0;
    for item in j["wait"]["items"].as_array().unwrap() {
        let Some((_, first)) = keys.iter().find(|(k, _)| item["key"] == k.as_str()) else {
            continue;
        };
        assert_eq!(item["seen"], seen, "{item}");
        assert_eq!(seqs(&item["signal_ids"]), *first, "{item}");
        assert_eq!(item["signal_ids_truncated"], seen > first.len(), "{item}");
        checked += 1;
    }
    assert_eq!(checked, keys.len(), "{j:#}");
    j
}

async fn wait_reads(ts: &TestServer, how: &str) -> u64 {
    let series = format!("runyard_waiting_signal_reads_total{{how=\"{how}\"}}");
    ts.metric(&series).await.map_or(0, |v| v as u64)
}

/// A `wait_for` of items counting 300 records each (a few hundred bytes) keeps the job small,
/// released at once or while it waits (read live); and a record for many such waiting jobs
/// neither reads their record numbers nor counts the key's records once per job and item.
async fn a_large_wait_for_stays_small(ts: &TestServer, tag: &str, embedded: bool) {
    let gate = format!("amp.gate.{tag}");
    let mut keys: Vec<(String, Vec<u64>)> = vec![];
    for i in 0..KEYS {
        let key = format!("amp.{tag}.{i}");
        let mut first = vec![];
        for _ in 0..MANY {
            let v = signal(ts, &key).await;
            if first.len() < 32 {
                first.push(v["seq"].as_u64().unwrap());
            }
        }
        keys.push((key, first));
    }
    let key = keys[0].0.clone();
    let items: Vec<Value> = keys
        .iter()
        .map(|(k, _)| json!({"key": k, "count": MANY}))
        .collect();
    let at_once = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": items}))
        .await;
    ts.wait_status(&at_once, "SUCCESS", WAIT).await;
    let j = small_wait(ts, &at_once, &keys, MANY).await;
    assert_eq!(j["wait"]["released_by"], "signals", "{j:#}");
    // The items on the keys and one on a gate: WAITING, shown live, small.
    let mut items = items;
    items.push(json!({"key": gate}));
    let mut held = vec![];
    for _ in 0..20 {
        let body = json!({"type": "runyard.noop", "wait_for": items});
        held.push(ts.submit_ok(body).await);
    }
    let j = small_wait(ts, &held[0], &keys, MANY).await;
    assert_eq!(j["status"], "WAITING", "{j:#}");
    assert_eq!(j["wait"]["items"][KEYS]["seen"], 0, "{j:#}");
    // One more record of the key checks the 20 jobs (embedded store: in the signal's own
    // transaction, so the counters below are the check's; Redis checks later, in its wait
    // loop, counting with ZCOUNT, which these counters do not see).
    if embedded {
        // No record number is read (none is released), and the key's records are counted at most
        // once (the gate is short first).
        let (counted, numbers) = (
            wait_reads(ts, "counted").await,
            wait_reads(ts, "numbers").await,
        );
        signal(ts, &key).await;
        let counted = wait_reads(ts, "counted").await - counted;
        let numbers = wait_reads(ts, "numbers").await - numbers;
        assert_eq!(numbers, 0, "record numbers read for jobs still waiting");
        assert!(counted <= MANY as u64, "counted {counted} records");
        // The same for a record a job's `emits` writes as it ends (in its finish's transaction on
        // the embedded store).
        let (counted, numbers) = (
            wait_reads(ts, "counted").await,
            wait_reads(ts, "numbers").await,
        );
        let emitter = ts
            .submit_ok(json!({"type": "runyard.noop", "emits": [key]}))
            .await;
        ts.wait_status(&emitter, "SUCCESS", WAIT).await;
        let counted = wait_reads(ts, "counted").await - counted;
        let numbers = wait_reads(ts, "numbers").await - numbers;
        assert_eq!(
            numbers, 0,
            "record numbers read for jobs still waiting (emits)"
        );
        assert!(counted <= MANY as u64, "counted {counted} records (emits)");
    } else {
        signal(ts, &key).await;
        let emitter = ts
            .submit_ok(json!({"type": "runyard.noop", "emits": [key]}))
            .await;
        ts.wait_status(&emitter, "SUCCESS", WAIT).await;
    }
    still_waiting(ts, &held[19], Duration::from_millis(300)).await;
    // The gate releases them all, each keeping at most 32 numbers per item.
    let g = signal(ts, &gate).await;
    for id in &held {
        ts.wait_status(id, "SUCCESS", WAIT).await;
        let j = small_wait(ts, id, &keys, MANY).await;
        assert_eq!(
            seqs(&j["wait"]["items"][KEYS]["signal_ids"]),
            vec![g["seq"].as_u64().unwrap()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_wait_for_stays_small_on_both_stores() {
    let ts = TestServer::builder(RUNNERS).start().await;
    a_large_wait_for_stays_small(&ts, "e", true).await;
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config("waiting-test-master-key-0123456789"))
        .start()
        .await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    a_large_wait_for_stays_small(&ts, "r", false).await;
}
