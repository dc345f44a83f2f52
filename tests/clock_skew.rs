//! One node's wall clock off from the others' (a VM resumed, NTP broken) must not change what
//! the cluster does with its stored times: retention and cron schedules go by the store's clock
//! (Redis's `TIME` as each node carries it), as leases do (`tests/clock_step.rs`). Real
//! `runyard serve` processes on a real redis-server: node A on the real clock, node B under
//! libfaketime with a fixed offset (`apt-get install faketime`; `CLOCK_REALTIME` moved,
//! `CLOCK_MONOTONIC` left alone), as the probe `redissched` ran it.
//!
//! - `a_node_ahead_deletes_nothing_early`: B 15 minutes ahead, `retention.finished` 10 minutes:
//!   the jobs A finished, their idempotency keys, the signals A wrote and the webhook
//!   deliveries A made are all still there after B's retention passes and trims.
//! - `a_node_ahead_fires_and_runs_nothing_early`: B 20 s ahead: a schedule's fire is made no
//!   earlier than its time, a `run_at` submitted through B is not run before it, and a signal
//!   written through B is stamped with the store's time.
//! - `an_api_node_behind_stamps_the_store_time`: B 10 minutes behind: a schedule created through
//!   B (`misfire = "all"`, a catch-up window of an hour) is created now and fires for no time
//!   before it, and a `+60s` deadline submitted through B is a minute from now.
//! - `jobs_made_by_skewed_nodes_are_listed_by_their_created_at`: B 10 minutes ahead, C 10
//!   minutes behind: a job submitted through each (and one through A) carries the store's time
//!   in its id as in its `created_at`, so `created_after` / `created_before` around the real
//!   submit time find all three, and the listing (newest first) follows `created_at`.
//!
//! - `a_node_ahead_judges_hook_requests_by_the_store_clock`: B 4 minutes ahead: a hook request
//!   B accepts is remembered by Redis for its whole window (not the minute B's clock left it,
//!   after which another node took the same request again), and one signed 4.5 minutes ago is
//!   within B's window (B's clock made it 8.5).
//! - `a_node_behind_judges_signed_urls_by_the_store_clock`: B a minute behind: a signed upload
//!   URL B took once is still refused (403) once it has expired by the store's clock and Redis
//!   has forgotten its use (B's clock made it good for another minute), a signed download URL
//!   alike, and A refuses both too; the URLs B hands out expire 5 minutes from the store's now
//!   (not 4) and work on A.
//!
//! Every time the tests compare is the real clock's (this process, Redis and A agree on it).

mod redis_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use redis_support::TestRedis;
use serde_json::{json, Value};
use support::child::{ChildServer, Client};
use support::{time_of, WAIT};

const MASTER_KEY: &str = "clock-skew-test-master-key-0123456789";
const FAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

fn faketime_lib() -> &'static str {
    FAKETIME
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is needed (apt-get install faketime)")
}

/// The nodes of one test: their configs and logs in one temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    redis: TestRedis,
}

impl Cluster {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            redis: TestRedis::start(),
        }
    }

    /// Starts node `name` (`runyard serve`, a service runner for `runyard.*`, retention every
    /// second of jobs finished 10 minutes ago); with `offset_s`, its wall clock that many
    /// seconds off.
    async fn node(&self, name: &str, offset_s: Option<i64>) -> ChildServer {
        let data = self.dir.path().join(format!("data-{name}"));
        let text = format!(
            "data_dir = {data:?}\n{store}\n[worker]\npoll_interval = \"200ms\"\n\
             [retention]\nfinished = \"10m\"\ninterval = \"1s\"\n\
             [notify]\nallow_private = true\n\
             [[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
            data = data.display().to_string(),
            store = self.redis.server_config(MASTER_KEY),
        );
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("config");
        let log = self.log(name);
        let mut node = match offset_s {
            None => ChildServer::start(&config, &log),
            Some(s) => {
                let offset = format!("{s:+}");
                ChildServer::start_with_env(
                    &config,
                    &log,
                    &[
                        ("LD_PRELOAD", faketime_lib()),
                        ("FAKETIME", &offset),
                        ("DONT_FAKE_MONOTONIC", "1"),
                        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                    ],
                )
            }
        };
        node.wait_healthy(WAIT).await;
        node
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The tail of every node's log, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["a", "b", "c"] {
            let Ok(s) = std::fs::read_to_string(self.log(name)) else {
                continue;
            };
            let lines: Vec<&str> = s.lines().collect();
            out.push_str(&format!("--- {name} ---\n"));
            out.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// `ZCARD` of the key `P:{rest}`.
    async fn zcard(&self, rest: &str) -> u64 {
        let mut c = redis_support::raw_conn(&self.redis).await;
        ::redis::cmd("ZCARD")
            .arg(format!("{}:{rest}", self.redis.prefix))
            .query_async(&mut c)
            .await
            .expect("ZCARD")
    }
}

/// POSTs `body` to `path`: the status, the `idempotent-replayed` header, the JSON answer.
async fn post(c: &Client, path: &str, body: Value) -> (u16, bool, Value) {
    let r = c
        .http
        .post(format!("{}{path}", c.url))
        .timeout(Duration::from_secs(30))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let replayed = r.headers().contains_key("idempotent-replayed");
    (
        r.status().as_u16(),
        replayed,
        r.json().await.unwrap_or_default(),
    )
}

async fn get(c: &Client, path: &str) -> (u16, Value) {
    c.call(reqwest::Method::GET, path, None).await
}

/// Waits (bounded) until job `id` has status `status`; its JSON.
async fn wait_status(c: &Client, id: &str, status: &str, cl: &Cluster) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let job = c.job(id).await;
        if job["status"] == status {
            return job;
        }
        assert!(
            Instant::now() < until,
            "job {id} not {status}: {job:#}\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// `t` as whole seconds since the epoch.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_deletes_nothing_early() {
    let cl = Cluster::new();
    let a = cl.node("a", None).await;
    let ca = Client::new(&a.url);
    let recv = Receiver::start().await;
    // Three jobs with keys, finished on A, each with its webhook deliveries; two signals.
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({"type": "runyard.noop", "idempotency_key": format!("skew-{i}"),
            "notify": {"url": recv.url}});
        let (status, _, v) = post(&ca, "/async/jobs", body).await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["job_id"].as_str().expect("job_id").to_string());
    }
    for id in &ids {
        wait_status(&ca, id, "SUCCESS", &cl).await;
    }
    for i in 0..2 {
        let (status, _, v) = post(
            &ca,
            "/async/signals/skew-sig",
            json!({"id": format!("s{i}")}),
        )
        .await;
        assert_eq!(status, 201, "{v}");
    }
    let until = Instant::now() + WAIT;
    while cl.zcard("dlv:pend").await > 0 || cl.zcard("dlv:done").await < 3 {
        assert!(
            Instant::now() < until,
            "deliveries never ended\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = cl.zcard("dlv:done").await;

    // B joins, its clock 15 minutes ahead: to its wall clock, everything above ended more than
    // `retention.finished` (10 minutes) ago.
    let b = cl.node("b", Some(900)).await;
    let b_started = Instant::now();
    // Retention runs every second: five passes of B's.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (i, id) in ids.iter().enumerate() {
        let (status, v) = get(&ca, &format!("/async/jobs/{id}")).await;
        assert_eq!(status, 200, "job {id} deleted early: {v}\n{}", cl.logs());
        // Its key still names it: a retry of the submit is the same job, not a second run.
        let body = json!({"type": "runyard.noop", "idempotency_key": format!("skew-{i}"),
            "notify": {"url": recv.url}});
        let (status, replayed, v) = post(&ca, "/async/jobs", body).await;
        assert_eq!(status, 202, "{v}");
        assert!(replayed, "a new job for key skew-{i}: {v}");
        assert_eq!(v["job_id"], id.as_str(), "{v}");
    }
    // Signals and ended deliveries are trimmed once a minute (the first trim a minute after
    // B started): wait past B's first.
    tokio::time::sleep(Duration::from_secs(70).saturating_sub(b_started.elapsed())).await;
    let (status, v) = get(&ca, "/async/signals/skew-sig").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["signals"].as_array().map(Vec::len),
        Some(2),
        "signals deleted early: {v}\n{}",
        cl.logs()
    );
    assert_eq!(
        cl.zcard("dlv:done").await,
        delivered,
        "ended webhook deliveries deleted early\n{}",
        cl.logs()
    );
    for id in &ids {
        let (status, v) = get(&ca, &format!("/async/jobs/{id}")).await;
        assert_eq!(status, 200, "job {id} deleted early: {v}\n{}", cl.logs());
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_fires_and_runs_nothing_early() {
    let cl = Cluster::new();
    let a = cl.node("a", None).await;
    let b = cl.node("b", Some(20)).await;
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));

    // A signal written through B carries the store's time, not B's (20 s ahead).
    let (status, _, v) = post(&cb, "/async/signals/skew-at", json!({})).await;
    assert_eq!(status, 201, "{v}");
    let at = time_of(&v["at"]);
    assert!(
        at <= SystemTime::now() + Duration::from_secs(1),
        "a signal stamped by B's clock: {v}"
    );

    // A job to run 10 s from now, submitted through B: to B's clock that time is past.
    let run_at = SystemTime::now() + Duration::from_secs(10);
    let body = json!({"type": "runyard.noop", "run_at": rfc3339(run_at)});
    let (status, _, v) = post(&cb, "/async/jobs", body).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "SCHEDULED", "{v}");
    let delayed = v["job_id"].as_str().expect("job_id").to_string();

    // A schedule firing once a minute at a second 30 s from now (whole seconds).
    let due = secs(SystemTime::now()) + 30;
    let fire = SystemTime::UNIX_EPOCH + Duration::from_secs(due);
    let body = json!({"name": "skew-ahead", "cron": format!("{} * * * * *", due % 60),
        "job": {"type": "runyard.noop"}});
    let (status, _, v) = post(&ca, "/async/schedules", body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(time_of(&v["next_fires"][0]), fire, "{v}");
    // Its job is made at its time, by whichever node: B's clock reaches it 20 s early.
    let until = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (status, v) = get(&ca, "/async/jobs?schedule=skew-ahead").await;
        assert_eq!(status, 200, "{v}");
        if let Some(j) = v["jobs"].as_array().and_then(|j| j.first()) {
            break j.clone();
        }
        assert!(
            Instant::now() < until,
            "the schedule never fired\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seen = SystemTime::now();
    assert!(
        seen + Duration::from_secs(1) >= fire,
        "fired {:?} before its time {}: {job:#}\n{}",
        fire.duration_since(seen).unwrap_or_default(),
        rfc3339(fire),
        cl.logs()
    );
    assert_eq!(time_of(&job["fire_time"]), fire, "{job:#}");

    // The delayed job ran at its `run_at`, not when B took it for due.
    let job = wait_status(&ca, &delayed, "SUCCESS", &cl).await;
    let claimed = time_of(&job["runs"][0]["claimed_at"]);
    assert!(
        claimed + Duration::from_secs(1) >= run_at,
        "claimed {:?} before its run_at: {job:#}",
        run_at.duration_since(claimed).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_behind_stamps_the_store_time() {
    let cl = Cluster::new();
    let _a = cl.node("a", None).await;
    let b = cl.node("b", Some(-600)).await;
    let cb = Client::new(&b.url);
    let before = SystemTime::now() - Duration::from_secs(1);

    // Created through B, 10 minutes behind: every minute, every missed time fired for an hour.
    let body = json!({"name": "skew-behind", "cron": "0 * * * * *", "misfire": "all",
        "catchup_window": "1h", "job": {"type": "runyard.noop"}});
    let (status, _, v) = post(&cb, "/async/schedules", body).await;
    assert_eq!(status, 201, "{v}");
    let created = time_of(&v["created_at"]);
    assert!(created >= before, "created by B's clock: {v:#}");
    assert!(time_of(&v["next_fires"][0]) > before, "{v:#}");

    // A `+60s` deadline through B: a minute from now, not nine minutes ago.
    let body = json!({"type": "runyard.noop", "wait_for": [{"key": "skew-never"}],
        "deadline": "+60s", "on_deadline": "fail"});
    let (status, _, v) = post(&cb, "/async/jobs", body).await;
    assert_eq!(status, 202, "{v}");
    let waiting = v["job_id"].as_str().expect("job_id").to_string();

    // A (the real clock) and B have had three seconds to fire and to apply deadlines.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, v) = get(&cb, "/async/jobs?schedule=skew-behind").await;
    assert_eq!(status, 200, "{v}");
    for j in v["jobs"].as_array().expect("jobs") {
        assert!(
            time_of(&j["fire_time"]) >= before,
            "a fire for a time before the schedule existed: {j:#}\n{}",
            cl.logs()
        );
    }
    let job = cb.job(&waiting).await;
    assert_eq!(job["status"], "WAITING", "{job:#}\n{}", cl.logs());
    let deadline = time_of(&job["wait"]["deadline"]);
    assert!(
        deadline >= before + Duration::from_secs(59),
        "a deadline by B's clock: {job:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_made_by_skewed_nodes_are_listed_by_their_created_at() {
    let cl = Cluster::new();
    let a = cl.node("a", None).await;
    let b = cl.node("b", Some(600)).await;
    let c = cl.node("c", Some(-600)).await;
    let clients = [
        Client::new(&b.url),
        Client::new(&a.url),
        Client::new(&c.url),
    ];
    let t0 = SystemTime::now() - Duration::from_secs(1);

    // One job through B (10 minutes ahead), then A, then C (10 minutes behind), over a second
    // apart: by the store's clock, B's is the oldest and C's the newest.
    let mut ids = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let (status, _, v) = post(client, "/async/jobs", json!({"type": "runyard.noop"})).await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["job_id"].as_str().expect("job_id").to_string());
    }
    let t1 = SystemTime::now() + Duration::from_secs(1);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let ca = &clients[1];

    // Around the real submit time, each bound alone and both: all three, newest first (every
    // query checked before the test fails, so that its message names each one that is wrong).
    let name = |id: &str| match ids.iter().position(|i| i == id) {
        Some(0) => "B's",
        Some(1) => "A's",
        Some(_) => "C's",
        None => "another",
    };
    let mut wrong = Vec::new();
    for query in [
        format!("created_after={}", rfc3339(t0)),
        format!("created_before={}", rfc3339(t1)),
        format!(
            "created_after={}&created_before={}",
            rfc3339(t0),
            rfc3339(t1)
        ),
        String::new(),
    ] {
        let (status, v) = get(ca, &format!("/async/jobs?type=runyard.noop&{query}")).await;
        assert_eq!(status, 200, "{v}");
        let listed: Vec<String> = v["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().expect("id").to_string())
            .collect();
        if listed != newest_first || !v["next_cursor"].is_null() {
            let names: Vec<&str> = listed.iter().map(|id| name(id)).collect();
            wrong.push(format!(
                "`{query}`: {names:?}, next_cursor {}",
                v["next_cursor"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "not the three jobs newest first by created_at (C's, A's, B's):\n{}\n{}",
        wrong.join("\n"),
        cl.logs()
    );

    // A batch through C and a schedule's trigger through B make their ids the same way.
    let (status, _, v) = post(
        &clients[2],
        "/async/jobs/batch",
        json!({"jobs": [{"type": "runyard.noop"}, {"type": "runyard.noop"}]}),
    )
    .await;
    assert_eq!((status, &v["accepted"]), (200, &json!(2)), "{v}");
    for r in v["results"].as_array().expect("results") {
        ids.push(r["job_id"].as_str().expect("job_id").to_string());
    }
    let body = json!({"name": "skew-ids", "cron": "0 0 0 1 1 *", "job": {"type": "runyard.noop"}});
    let (status, _, v) = post(&clients[0], "/async/schedules", body).await;
    assert_eq!(status, 201, "{v}");
    let (status, _, v) = post(&clients[0], "/async/schedules/skew-ids/trigger", json!({})).await;
    assert_eq!(status, 202, "{v}");
    ids.push(v["job_id"].as_str().expect("job_id").to_string());
    let t1 = SystemTime::now() + Duration::from_secs(1);

    // Each id carries its created_at's time (the store's), whichever node's clock made it.
    for id in &ids {
        let job = ca.job(id).await;
        let created = time_of(&job["created_at"]);
        assert!(
            created >= t0 && created < t1,
            "created_at not by the store's clock: {job:#}"
        );
        let (secs, nanos) = uuid::Uuid::parse_str(id)
            .expect("a UUID")
            .get_timestamp()
            .expect("a v7 id")
            .to_unix();
        let id_ms = Duration::new(secs, nanos).as_millis();
        let created_ms = created
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        assert_eq!(
            id_ms, created_ms,
            "the id's time is not its created_at's: {job:#}"
        );
    }

    drop((b, c));
}

/// A webhook receiver on 127.0.0.1 that accepts everything.
struct Receiver {
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|| async { axum::http::StatusCode::OK }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url }
    }
}

/// A job submitted through `c` that sleeps two minutes, once RUNNING: its id, its attempt and the
/// attempt's secret (to sign its hook requests).
async fn a_running_job(c: &Client, cl: &Cluster) -> (String, u32, runyard_hooks::Secret) {
    let (status, _, v) = post(
        c,
        "/async/jobs",
        json!({"type": "runyard.sleep", "args": {"ms": 120000}}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let id = v["job_id"].as_str().expect("job_id").to_string();
    let job = wait_status(c, &id, "RUNNING", cl).await;
    let attempt = job["attempt"].as_u64().expect("attempt") as u32;
    let secret = runyard_hooks::derive_job_secret(MASTER_KEY.as_bytes(), &id, attempt);
    (id, attempt, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_judges_hook_requests_by_the_store_clock() {
    use runyard_hooks::{signed_headers, SigVersion};
    let cl = Cluster::new();
    let a = cl.node("a", None).await;
    let b = cl.node("b", Some(240)).await;
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));
    let (id, _, secret) = a_running_job(&ca, &cl).await;
    let real_ms = |back: Duration| {
        (SystemTime::now() - back)
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64
    };
    let report = |time_ms: i64, progress: f64| {
        let body = serde_json::to_vec(&json!({"progress": progress})).expect("json");
        let h = signed_headers(
            &id,
            &secret,
            SigVersion::V2,
            "POST",
            "/async/status",
            &body,
            time_ms,
        )
        .expect("signed");
        (h, body)
    };
    let send = |c: &Client, h: reqwest::header::HeaderMap, body: Vec<u8>| {
        let req = c
            .http
            .post(format!("{}/async/status", c.url))
            .headers(h)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.expect("sent");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // Signed now, accepted by B: Redis keeps it for the whole window (5 minutes).
    let (h, body) = report(real_ms(Duration::ZERO), 0.25);
    let (status, text) = send(&cb, h, body).await;
    assert_eq!(status, 200, "{text}\n{}", cl.logs());
    let mut c = redis_support::raw_conn(&cl.redis).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}:replay:*", cl.redis.prefix))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .expect("PTTL");
    assert!(
        ttl > 290_000,
        "the replay memory lasts {ttl} ms, not the window"
    );
    // Signed 4.5 minutes ago: within the window by the store's clock (B's own says 8.5).
    let (h, body) = report(real_ms(Duration::from_secs(270)), 0.5);
    let (status, text) = send(&cb, h, body).await;
    assert_eq!(status, 200, "{text}\n{}", cl.logs());
    let job = ca.job(&id).await;
    assert_eq!(job["progress"], 0.5, "{job:#}");
}

/// The seconds since the epoch of now, by the real clock (this process's, Redis's and A's).
fn now_secs() -> i64 {
    secs(SystemTime::now()) as i64
}

/// The `exp` of a signed URL, and its path and query (to send to another node).
fn exp_of(url: &str) -> (i64, String) {
    let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let exp = u
        .query_pairs()
        .find(|(k, _)| k == "exp")
        .map(|(_, v)| v.to_string());
    let exp = exp.and_then(|e| e.parse().ok());
    let exp = exp.unwrap_or_else(|| panic!("no exp in {url}"));
    (
        exp,
        format!("{}?{}", u.path(), u.query().unwrap_or_default()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_judges_signed_urls_by_the_store_clock() {
    use base64::Engine;
    use md5::Digest;
    use runyard::api::signed_url::{UrlSigner, URL_TTL_SECS};
    use runyard_hooks::{signed_headers, SigVersion};
    let cl = Cluster::new();
    let a = cl.node("a", None).await;
    let b = cl.node("b", Some(-60)).await;
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));
    let (id, attempt, secret) = a_running_job(&ca, &cl).await;
    // A hook call to B, signed now (v2).
    let hook = |method: &'static str, path: String, body: Vec<u8>| {
        let time_ms = now_secs() * 1000;
        let h = signed_headers(&id, &secret, SigVersion::V2, method, &path, &body, time_ms)
            .expect("signed");
        let req = cb
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", cb.url),
            )
            .headers(h)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.expect("hook call");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let md5_hex = |b: &[u8]| hex::encode(md5::Md5::digest(b));
    let send = |method: reqwest::Method, url: String, body: &'static [u8]| {
        let req = ca.http.request(method, url).body(body);
        async move {
            let r = req.send().await.expect("sent");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let on = |c: &Client, path: &str| format!("{}{path}", c.url);
    let mut wrong = Vec::new();

    // An upload URL and a download URL as a node made them 5 minutes ago, a few seconds left
    // (signed here with the key runyard derives from the master key, as it does).
    let signer = UrlSigner::new(MASTER_KEY.as_bytes());
    let content: &'static [u8] = b"used once, whatever the node's clock";
    let hash = md5_hex(content);
    let exp = (now_secs() + 5).to_string();
    let meta = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"name":"late.txt"}"#);
    let (job_id, att) = (id.as_str(), attempt.to_string());
    let put_sig = signer.sign(&["put", job_id, &att, "outputs", &hash, &exp, &meta]);
    let upload = format!(
        "/async/blobs/upload?job={id}&attempt={att}&property=outputs&hash={hash}&exp={exp}&meta={meta}&sig={put_sig}"
    );
    let sig = signer.sign(&["get", &hash, &exp]);
    let download = format!("/async/blobs/{hash}?exp={exp}&sig={sig}");
    let (status, text) = send(reqwest::Method::PUT, on(&cb, &upload), content).await;
    assert_eq!(status, 200, "the first use: {text}\n{}", cl.logs());
    let (status, text) = send(reqwest::Method::PUT, on(&cb, &upload), content).await;
    assert_eq!(status, 403, "the second use: {text}");
    assert!(text.contains("url_used"), "{text}");
    let (status, text) = send(reqwest::Method::GET, on(&cb, &download), b"").await;
    assert_eq!(status, 200, "the download before its expiry: {text}");

    // Past the expiry and the 1 s + 2 s Redis keeps the use beyond it: Redis has forgotten
    // the URL (to B's clock, it has another minute to run).
    let gone = exp.parse::<i64>().expect("exp") + 4;
    let until = Instant::now() + Duration::from_secs(30);
    while now_secs() <= gone {
        assert!(Instant::now() < until, "the clock did not reach {gone}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let digest = hex::encode(sha2::Sha256::digest(format!("upload-url:{put_sig}")));
    let mut c = redis_support::raw_conn(&cl.redis).await;
    let kept: bool = ::redis::cmd("EXISTS")
        .arg(format!("{}:replay:{digest}", cl.redis.prefix))
        .query_async(&mut c)
        .await
        .expect("EXISTS");
    assert!(!kept, "Redis still remembers the upload URL's use");
    for (node, c) in [("B", &cb), ("A", &ca)] {
        let (status, text) = send(reqwest::Method::PUT, on(c, &upload), content).await;
        if status != 403 {
            wrong.push(format!(
                "{node} took the expired upload URL again: {status} {text}"
            ));
        }
        let (status, text) = send(reqwest::Method::GET, on(c, &download), b"").await;
        if status != 403 {
            wrong.push(format!(
                "{node} served the expired download URL: {status} {text}"
            ));
        }
    }
    let files = ca.job(&id).await["files"]["outputs"]
        .as_array()
        .map(Vec::len);
    if files != Some(1) {
        wrong.push(format!("the job has {files:?} outputs, not 1"));
    }

    // The URLs B hands out expire 5 minutes from the store's now (B's clock says 4), and A
    // takes them.
    let before = now_secs();
    let (status, v) = hook(
        "GET",
        format!("/async/download/jobs/{id}/outputs/0"),
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let got = v["Location"].as_str().expect("Location").to_string();
    let (stamped, path) = exp_of(&got);
    // Whole seconds of a clock B carries from Redis's `TIME`: a second either way.
    if stamped < before + URL_TTL_SECS - 1 || stamped > now_secs() + URL_TTL_SECS + 1 {
        wrong.push(format!(
            "B's download URL expires at {stamped}, {} s from now",
            stamped - before
        ));
    }
    // Its signature and expiry hold on A (checked first: 403 otherwise); the bytes are B's
    // alone, these nodes keeping their files in data dirs of their own (404 on A).
    let (status, text) = send(reqwest::Method::GET, on(&ca, &path), b"").await;
    if status == 403 {
        wrong.push(format!("A refused B's download URL: {status} {text}"));
    }
    let fresh: &'static [u8] = b"a fresh upload, stamped by B";
    let hash = md5_hex(fresh);
    let challenge = md5_hex(&[b"WEBDA".as_slice(), fresh].concat());
    let body = json!({"hash": hash, "challenge": challenge, "metadata": {"name": "fresh.txt"}});
    let before = now_secs();
    let (status, v) = hook(
        "PUT",
        format!("/async/upload/jobs/{id}/outputs"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let got = v["url"].as_str().expect("an upload url").to_string();
    let (stamped, path) = exp_of(&got);
    if stamped < before + URL_TTL_SECS - 1 || stamped > now_secs() + URL_TTL_SECS + 1 {
        wrong.push(format!(
            "B's upload URL expires at {stamped}, {} s from now",
            stamped - before
        ));
    }
    let (status, text) = send(reqwest::Method::PUT, on(&ca, &path), fresh).await;
    if status != 200 {
        wrong.push(format!("A refused B's upload URL: {status} {text}"));
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), cl.logs());
}
