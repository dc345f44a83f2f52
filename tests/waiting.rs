//! Waiting jobs through real components, on both backends: `wait_for` / `deadline` /
//! `on_deadline` on submit and on a schedule's template, release by signals (API and `emits`),
//! the three deadline actions, a concurrency-1 runner free beside 10,000 waiting jobs, refusals,
//! a restart of the embedded store, and two API nodes on one Redis.

mod redis_support;
mod support;
mod wait_support;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Timelike};
use reqwest::StatusCode;
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::{error_of, gap, time_of, TestServer, WAIT};
use wait_support::{seqs, signal, still_waiting, RUNNERS};

fn rfc3339_now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Count 3 since a time: records before it do not count; the job starts after the third record
/// and not before, within 100 ms of it, and shows how it was released.
async fn count_and_since(ts: &TestServer) {
    signal(ts, "src.orders").await;
    signal(ts, "src.orders").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = rfc3339_now();
    let id = ts
        .submit_ok(json!({"type": "runyard.noop",
            "wait_for": [{"key": "src.orders", "count": 3, "since": since}]}))
        .await;
    let j = still_waiting(ts, &id, Duration::from_millis(300)).await;
    assert_eq!(j["wait"]["items"][0]["needed"], 3, "{j:#}");
    assert_eq!(
        j["wait"]["items"][0]["seen"], 0,
        "earlier records do not count: {j:#}"
    );
    assert_eq!(j["wait"]["released_by"], Value::Null);
    // Listed as WAITING.
    let listed = ts.list_all(&[("status", "WAITING")], 100).await;
    assert!(listed.iter().any(|x| x["id"] == id.as_str()), "{listed:?}");
    let a = signal(ts, "src.orders").await;
    let b = signal(ts, "src.orders").await;
    let j = still_waiting(ts, &id, Duration::from_millis(400)).await;
    assert_eq!(j["wait"]["items"][0]["seen"], 2, "{j:#}");
    let c = signal(ts, "src.orders").await;
    let j = ts.wait_status(&id, "SUCCESS", WAIT).await;
    let w = &j["wait"];
    assert_eq!(w["released_by"], "signals", "{j:#}");
    assert_eq!(w["items"][0]["seen"], 3);
    assert_eq!(
        seqs(&w["items"][0]["signal_ids"]),
        vec![
            a["seq"].as_u64().unwrap(),
            b["seq"].as_u64().unwrap(),
            c["seq"].as_u64().unwrap()
        ]
    );
    let lag = gap(time_of(&c["at"]), time_of(&w["released_at"]));
    eprintln!("signal to QUEUED: {lag:?}");
    // The contract is 100 ms; the bound leaves room for this shared, slow CI machine.
    assert!(
        lag < Duration::from_millis(500),
        "released {lag:?} after the last record"
    );
}

/// `on_deadline` run / fail / skip each end as written; a job without a deadline keeps waiting
/// and can be cancelled.
async fn deadlines(ts: &TestServer) {
    let mut ids = vec![];
    for action in ["run", "fail", "skip"] {
        let id = ts
            .submit_ok(
                json!({"type": "runyard.noop", "wait_for": [{"key": "never.sent"}],
                "deadline": "+3s", "on_deadline": action}),
            )
            .await;
        ids.push(id);
    }
    let forever = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": "never.sent"}]}))
        .await;
    // Part of what it waits for came: the error names only the key short of its count, and the
    // job keeps the records it had.
    let (a, b) = (
        format!("part.a.{}", ids.len()),
        format!("part.b.{}", ids.len()),
    );
    let partial = ts
        .submit_ok(json!({"type": "runyard.noop",
            "wait_for": [{"key": a}, {"key": b, "count": 2}],
            "deadline": "+3s", "on_deadline": "fail"}))
        .await;
    let sa = signal(ts, &a).await["seq"].as_u64().expect("seq");
    let sb = signal(ts, &b).await["seq"].as_u64().expect("seq");
    // Not before the deadline: still waiting, or released at or after it (a loaded machine
    // may take the 3 s to get here).
    for id in &ids {
        let j = ts.get_job(id).await;
        if j["status"] != "WAITING" {
            let released = time_of(&j["wait"]["released_at"]);
            assert!(released >= time_of(&j["wait"]["deadline"]), "{j:#}");
        }
    }
    let run = ts.wait_status(&ids[0], "SUCCESS", WAIT).await;
    assert_eq!(run["wait"]["released_by"], "deadline", "{run:#}");
    let dl = time_of(&run["wait"]["deadline"]);
    let released = time_of(&run["wait"]["released_at"]);
    assert!(released >= dl, "{run:#}");
    assert!(gap(dl, released) < Duration::from_secs(2), "{run:#}");
    let fail = ts.wait_status(&ids[1], "ERROR", WAIT).await;
    assert!(
        fail["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("deadline_missed"),
        "{fail:#}"
    );
    assert_eq!(
        fail["runs"],
        json!([]),
        "a failed deadline never ran: {fail:#}"
    );
    let part = ts.wait_status(&partial, "ERROR", WAIT).await;
    let err = part["error"].as_str().unwrap_or("");
    assert!(err.starts_with("deadline_missed"), "{part:#}");
    assert!(
        err.contains(&b) && !err.contains(&a),
        "names {b} only: {err}"
    );
    let items = &part["wait"]["items"];
    assert_eq!(
        (items[0]["seen"].clone(), items[0]["signal_ids"].clone()),
        (json!(1), json!([sa]))
    );
    assert_eq!(
        (items[1]["seen"].clone(), items[1]["signal_ids"].clone()),
        (json!(1), json!([sb]))
    );
    let skip = ts.wait_status(&ids[2], "CANCELLED", WAIT).await;
    assert!(
        skip["error"].as_str().unwrap_or("").starts_with("skipped"),
        "{skip:#}"
    );
    assert_eq!(skip["wait"]["released_by"], "deadline");
    assert_eq!(ts.get_job(&forever).await["status"], "WAITING");
    let (st, v) = ts
        .post(&format!("/async/jobs/{forever}/cancel"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "CANCELLED");
    // A later signal changes nothing for a cancelled job.
    signal(ts, "never.sent").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ts.get_job(&forever).await["status"], "CANCELLED");
}

/// A emits k1; B waits for k1 and emits k2; C waits for k2.
async fn emits_chain(ts: &TestServer, tag: &str) {
    let (k1, k2) = (format!("chain.{tag}.k1"), format!("chain.{tag}.k2"));
    let c = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": k2}]}))
        .await;
    let b = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": k1}], "emits": [k2]}))
        .await;
    still_waiting(ts, &c, Duration::from_millis(300)).await;
    assert_eq!(ts.get_job(&b).await["status"], "WAITING");
    let a = ts
        .submit_ok(json!({"type": "runyard.noop", "emits": [k1]}))
        .await;
    let ja = ts.wait_status(&a, "SUCCESS", WAIT).await;
    let jb = ts.wait_status(&b, "SUCCESS", WAIT).await;
    let jc = ts.wait_status(&c, "SUCCESS", WAIT).await;
    assert_eq!(jb["wait"]["released_by"], "signals");
    assert_eq!(jc["wait"]["released_by"], "signals");
    assert!(time_of(&jb["wait"]["released_at"]) >= time_of(&ja["finished_at"]));
    assert!(time_of(&jc["wait"]["released_at"]) >= time_of(&jb["finished_at"]));
}

/// Bad input: 422 naming the field, nothing stored.
async fn refusals(ts: &TestServer) {
    let before = ts.count_jobs(None).await;
    let w = |extra: Value| {
        let mut b = json!({"type": "runyard.noop", "wait_for": [{"key": "k"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, field) in [
        (w(json!({"wait_for": [{"key": "k", "count": 0}]})), "count"),
        (
            w(json!({"wait_for": [{"key": "k", "count": 10001}]})),
            "count",
        ),
        (w(json!({"wait_for": [{"key": ""}]})), "key"),
        (w(json!({"wait_for": [{"key": "k".repeat(201)}]})), "key"),
        (w(json!({"wait_for": [{"key": "a\u{1}b"}]})), "key"),
        // Shows as `ready` and would wait for ever.
        (
            w(json!({"wait_for": [{"key": "rea\u{200B}dy"}]})),
            "invisible",
        ),
        (w(json!({"emits": ["\u{202E}ready"]})), "invisible"),
        // The Arabic letter mark is a direction mark too.
        (w(json!({"emits": ["ready\u{61C}"]})), "invisible"),
        (w(json!({"deadline": "2020-01-01T00:00:00Z"})), "deadline"),
        (
            w(json!({"deadline": "+1h", "on_deadline": "later"})),
            "on_deadline",
        ),
        (w(json!({"deadline": "soon"})), "deadline"),
        (
            w(json!({"wait_for": [{"key": "k", "since": "yesterday"}]})),
            "since",
        ),
        (
            json!({"type": "runyard.noop", "deadline": "+1h"}),
            "wait_for",
        ),
    ] {
        let (st, v) = ts.submit(body.clone()).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        let (_, msg) = error_of(&v);
        assert!(msg.contains(field), "{body}: {v}");
    }
    assert_eq!(ts.count_jobs(None).await, before, "refusals stored nothing");
}

/// 10,000 jobs wait; the runner (concurrency 1) runs an ordinary job at once.
async fn many_waiting(ts: &TestServer, n: usize) {
    let started = Instant::now();
    let url = ts.at("/async/jobs");
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    let per = n / 8;
    for _ in 0..8 {
        let (c, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for _ in 0..per {
                let r = c
                    .post(&url)
                    .json(&json!({"type": "runyard.noop", "wait_for": [{"key": "many.k"}]}))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("submitter");
    }
    eprintln!(
        "{} waiting jobs submitted in {:?}",
        per * 8,
        started.elapsed()
    );
    let t = Instant::now();
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_status(&id, "SUCCESS", Duration::from_secs(10))
        .await;
    eprintln!("an ordinary job beside them ran in {:?}", t.elapsed());
    let waiting = ts
        .list_all(&[("status", "WAITING"), ("type", "runyard.noop")], 1000)
        .await;
    assert!(waiting.len() >= per * 8, "{}", waiting.len());
}

/// A schedule's template: `"HH:MM"` since resolves against the fire time in its time zone.
async fn schedule_template(ts: &TestServer) {
    let tz = chrono_tz::Asia::Tokyo;
    let (st, v) = ts
        .post(
            "/async/schedules",
            Some(&json!({"name": "nightly", "cron": "0 0 1 1 *", "timezone": "Asia/Tokyo",
                "job": {"type": "runyard.noop", "wait_for": [{"key": "sched.src", "since": "18:00"}],
                        "deadline": "06:00", "on_deadline": "skip"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = ts.post("/async/schedules/nightly/trigger", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["job_id"]
        .as_str()
        .or(v["id"].as_str())
        .expect("job id")
        .to_string();
    let j = ts.get_job(&id).await;
    assert_eq!(j["status"], "WAITING", "{j:#}");
    let fire: chrono::DateTime<chrono::Utc> = time_of(&j["fire_time"]).into();
    let local = fire.with_timezone(&tz);
    let mut since = tz
        .with_ymd_and_hms(local.year_(), local.month_(), local.day_(), 18, 0, 0)
        .single()
        .unwrap();
    if since > local {
        since -= chrono::Duration::days(1);
    }
    let mut deadline = tz
        .with_ymd_and_hms(local.year_(), local.month_(), local.day_(), 6, 0, 0)
        .single()
        .unwrap();
    if deadline <= local {
        deadline += chrono::Duration::days(1);
    }
    let got_since: chrono::DateTime<chrono::Utc> = time_of(&j["wait"]["items"][0]["since"]).into();
    let got_deadline: chrono::DateTime<chrono::Utc> = time_of(&j["wait"]["deadline"]).into();
    assert_eq!(got_since, since.with_timezone(&chrono::Utc), "{j:#}");
    assert_eq!(got_deadline, deadline.with_timezone(&chrono::Utc), "{j:#}");
    assert_eq!(got_since.with_timezone(&tz).hour(), 18);
    signal(ts, "sched.src").await;
    let j = ts.wait_status(&id, "SUCCESS", WAIT).await;
    assert_eq!(j["wait"]["released_by"], "signals");
    // A bad template is refused at creation.
    let (st, v) = ts
        .post(
            "/async/schedules",
            Some(&json!({"name": "bad", "cron": "@daily",
                "job": {"type": "runyard.noop", "wait_for": [{"key": "k", "count": 0}]}})),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(error_of(&v).1.contains("count"), "{v}");
}

/// A backfilled fire whose deadline has passed: a record written after that deadline (now) counts
/// for nothing, so its deadline (`skip`) applies at once, with no record seen.
async fn a_late_fire_counts_no_record_after_its_deadline(ts: &TestServer, tag: &str) {
    let name = format!("late-{tag}");
    let key = format!("late.src.{tag}");
    let (st, v) = ts
        .post(
            "/async/schedules",
            Some(&json!({"name": name, "cron": "0 19 * * *", "paused": true,
                "job": {"type": "runyard.noop", "wait_for": [{"key": key, "since": "-1h"}],
                        "deadline": "+1h", "on_deadline": "skip"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    signal(ts, &key).await;
    let day = (chrono::Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d");
    let bf = json!({"from": format!("{day}T00:00:00Z"), "to": format!("{day}T23:00:00Z")});
    let (st, v) = ts
        .post(&format!("/async/schedules/{name}/backfill"), Some(&bf))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["fires"][0]["job_id"].as_str().expect("a job").to_string();
    let j = ts.wait_status(&id, "CANCELLED", WAIT).await;
    assert!(
        j["error"].as_str().unwrap_or("").starts_with("skipped"),
        "{j:#}"
    );
    assert_eq!(j["wait"]["released_by"], "deadline", "{j:#}");
    assert_eq!(j["wait"]["items"][0]["seen"], 0, "{j:#}");
    assert_eq!(j["wait"]["items"][0]["signal_ids"], json!([]), "{j:#}");
}

trait Ymd {
    fn year_(&self) -> i32;
    fn month_(&self) -> u32;
    fn day_(&self) -> u32;
}

impl<T: chrono::Datelike> Ymd for T {
    fn year_(&self) -> i32 {
        self.year()
    }
    fn month_(&self) -> u32 {
        self.month()
    }
    fn day_(&self) -> u32 {
        self.day()
    }
}

/// `runyard submit --wait-for KEY[:COUNT] --since --deadline --on-deadline`.
async fn cli_submit(ts: &TestServer) {
    let url = ts.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
            .args([
                "submit",
                "runyard.noop",
                "--wait-for",
                "cli.a:2",
                "--wait-for",
                "cli:b",
                "--since",
                "-1m",
                "--deadline",
                "+1h",
                "--on-deadline",
                "fail",
                "--server",
                &url,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("runyard runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let j = ts.get_job(&id).await;
    assert_eq!(j["status"], "WAITING", "{j:#}");
    let w = &j["wait"];
    assert_eq!(w["on_deadline"], "fail");
    assert_eq!(
        (
            w["items"][0]["key"].as_str(),
            w["items"][0]["needed"].as_u64()
        ),
        (Some("cli.a"), Some(2))
    );
    assert_eq!(
        (
            w["items"][1]["key"].as_str(),
            w["items"][1]["needed"].as_u64()
        ),
        (Some("cli:b"), Some(1))
    );
    let since = time_of(&w["items"][0]["since"]);
    let created = time_of(&j["created_at"]);
    assert_eq!(gap(since, created).as_secs(), 60, "{j:#}");
    let dl = time_of(&w["deadline"]);
    assert_eq!(gap(created, dl).as_secs(), 3600, "{j:#}");
    signal(ts, "cli.a").await;
    signal(ts, "cli:b").await;
    still_waiting(ts, &id, Duration::from_millis(200)).await;
    signal(ts, "cli.a").await;
    ts.wait_status(&id, "SUCCESS", WAIT).await;
}

async fn suite(ts: &TestServer, tag: &str) {
    count_and_since(ts).await;
    deadlines(ts).await;
    emits_chain(ts, tag).await;
    refusals(ts).await;
    schedule_template(ts).await;
    a_late_fire_counts_no_record_after_its_deadline(ts, tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_embedded() {
    let ts = TestServer::builder(RUNNERS).start().await;
    suite(&ts, "e").await;
    cli_submit(&ts).await;
    many_waiting(&ts, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config("waiting-test-master-key-0123456789"))
        .start()
        .await;
    assert_eq!(ts.get("/health").await.1["store"], "redis");
    suite(&ts, "r").await;
    many_waiting(&ts, 10_000).await;
}

/// Redis checks a waiting job after a signal's write, not in it (`P:waitdue`): a record that came
/// before the deadline while its check had not run yet (here written with no mark at all, as a
/// check stuck behind thousands of others) releases the job at its deadline, as the embedded
/// store would have at the record, instead of failing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_check_is_late_beats_the_deadline_on_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config("waiting-test-master-key-0123456789"))
        .start()
        .await;
    let id = ts
        .submit_ok(
            json!({"type": "runyard.noop", "wait_for": [{"key": "late.k"}],
            "deadline": "+5s", "on_deadline": "fail"}),
        )
        .await;
    // The job's own mark (set as it starts waiting) is checked first, so that the record below
    // is found by the deadline, not by that check.
    let due = format!("{}:waitdue", r.prefix);
    for _ in 0..100 {
        if r.cli(&["ZSCORE", &due, &id]).trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        r.cli(&["ZSCORE", &due, &id]).trim().is_empty(),
        "its mark was never checked"
    );
    let at = runyard::job::now_us().to_string();
    let rec = format!(r#"{{"key":"late.k","seq":1,"at":{at},"id":null,"payload":null}}"#);
    let key = format!("{}:sig:late.k", r.prefix);
    assert_eq!(r.cli(&["ZADD", &key, &at, &rec]).trim(), "1");
    let j = ts.wait_status(&id, "SUCCESS", WAIT).await;
    assert_eq!(j["wait"]["released_by"], "signals", "{j:#}");
    assert_eq!(j["wait"]["items"][0]["signal_ids"], json!([1]), "{j:#}");
}

/// A waiting job the store cannot read (its record spoiled by `spoil`, as one written by a build
/// this one cannot read) does not hold up the checks of the signals after it (on its own key and
/// another), nor the deadlines after its own.
async fn an_unreadable_waiting_job_holds_up_nothing(ts: &TestServer, spoil: impl FnOnce(&str)) {
    let bad = ts
        .submit_ok(
            json!({"type": "runyard.noop", "wait_for": [{"key": "blk.a"}],
            "deadline": "+1s"}),
        )
        .await;
    let later = ts
        .submit_ok(
            json!({"type": "runyard.noop", "wait_for": [{"key": "blk.never"}],
            "deadline": "+1500ms", "on_deadline": "fail"}),
        )
        .await;
    let same_key = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": "blk.a"}]}))
        .await;
    let other_key = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": "blk.b"}]}))
        .await;
    spoil(&bad);
    signal(ts, "blk.a").await;
    signal(ts, "blk.b").await;
    for good in [&same_key, &other_key] {
        let j = ts.wait_status(good, "SUCCESS", WAIT).await;
        assert_eq!(j["wait"]["released_by"], "signals", "{j:#}");
    }
    let j = ts.wait_status(&later, "ERROR", WAIT).await;
    assert_eq!(j["wait"]["released_by"], "deadline", "{j:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_waiting_job_does_not_hold_up_the_others_on_redis() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&r.server_config("waiting-test-master-key-0123456789"))
        .start()
        .await;
    an_unreadable_waiting_job_holds_up_nothing(&ts, |bad| {
        let job_key = format!("{}:job:{bad}", r.prefix);
        assert_eq!(r.cli(&["HSET", &job_key, "b", "not a job"]).trim(), "0");
    })
    .await;
}

/// The same on the embedded store. Before, every signal of the job's key was refused (500), and
/// once its deadline passed every deadline round failed (the ones after it never fired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_waiting_job_does_not_hold_up_the_others_embedded() {
    let ts = TestServer::builder(RUNNERS).start().await;
    an_unreadable_waiting_job_holds_up_nothing(&ts, |bad| {
        let c = rusqlite::Connection::open(ts.data_dir().join("runyard.db")).expect("open db");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        let n = c
            .execute("UPDATE jobs SET body = 'not a job' WHERE id = ?1", [bad])
            .expect("spoil the record");
        assert_eq!(n, 1);
    })
    .await;
}

/// The embedded store across a restart: a record written before and one after release the job;
/// a deadline that passed while the server was down fires at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_across_a_restart() {
    let mut ts = TestServer::builder(RUNNERS).start().await;
    let id = ts
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": "restart.k", "count": 2}]}))
        .await;
    let late = ts
        .submit_ok(
            json!({"type": "runyard.noop", "wait_for": [{"key": "restart.never"}],
            "deadline": "+1s", "on_deadline": "fail"}),
        )
        .await;
    signal(&ts, "restart.k").await;
    ts.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ts.restart(true).await;
    let j = ts.wait_status(&late, "ERROR", WAIT).await;
    assert!(
        j["error"].as_str().unwrap().starts_with("deadline_missed"),
        "{j:#}"
    );
    let j = still_waiting(&ts, &id, Duration::from_millis(300)).await;
    assert_eq!(j["wait"]["items"][0]["seen"], 1, "{j:#}");
    signal(&ts, "restart.k").await;
    let j = ts.wait_status(&id, "SUCCESS", WAIT).await;
    assert_eq!(j["wait"]["released_by"], "signals");
    assert_eq!(j["wait"]["items"][0]["seen"], 2);
}

/// Two API nodes on one Redis: a signal written on one releases a job submitted on the other;
/// deadlines fire exactly once (one QUEUED event per job) though both nodes' timers wake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_two_redis_nodes() {
    let r = TestRedis::start();
    let cfg = format!("redis = \"{}\"\nmaster_key = \"waiting-test-master-key-0123456789\"\n[store]\nprefix = \"{}\"\n", r.url, r.prefix);
    let a = TestServer::builder(RUNNERS).config(&cfg).start().await;
    let b = TestServer::builder(RUNNERS).config(&cfg).start().await;
    let id = a
        .submit_ok(json!({"type": "runyard.noop", "wait_for": [{"key": "nodes.k", "count": 2}]}))
        .await;
    signal(&b, "nodes.k").await;
    still_waiting(&a, &id, Duration::from_millis(300)).await;
    let last = signal(&b, "nodes.k").await;
    let j = a.wait_status(&id, "SUCCESS", WAIT).await;
    let lag = gap(time_of(&last["at"]), time_of(&j["wait"]["released_at"]));
    eprintln!("signal on node B to QUEUED on node A: {lag:?}");
    assert!(lag < Duration::from_millis(500), "{lag:?}");

    let mut ids = vec![];
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        ids.push(
            node.submit_ok(
                json!({"type": "runyard.noop", "wait_for": [{"key": "nodes.never"}],
                "deadline": "+1s", "on_deadline": "run", "channel": format!("dl{i}")}),
            )
            .await,
        );
    }
    for id in &ids {
        let j = a.wait_status(id, "SUCCESS", WAIT).await;
        assert_eq!(j["wait"]["released_by"], "deadline", "{j:#}");
        assert_eq!(j["attempt"], 1, "{j:#}");
    }
    let events = a.all_events("0").await;
    for id in &ids {
        let queued = events
            .iter()
            .filter(|e| e["job_id"] == id.as_str() && e["runyard_status"] == "QUEUED")
            .count();
        assert_eq!(queued, 1, "job {id}: one release");
    }
}
