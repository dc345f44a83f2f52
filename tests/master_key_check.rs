//! A store is only ever started with the master key it was made with (real `runyard serve` /
//! `runyard worker` processes, on the embedded store and on a real Redis): every job secret,
//! signed URL and webhook signature is derived from that key, so another one would make all made
//! before stop verifying. The store remembers a check value of its key at its first start (never
//! the key); a start with another key is refused with a message naming where the key came from,
//! and nothing is changed. A configured key (`master_key`, `RUNYARD_MASTER_KEY`) that differs
//! from the data dir's `master.key` is refused the same way. A store made before the check (no
//! check value) takes the key in use and keeps it from then on.
//!
//! Before, any configured key was taken silently: the probe saw the webhook endpoint keys change
//! after a restart with `RUNYARD_MASTER_KEY` set to a key other than the file's.

mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_support::TestRedis;
use support::child::{free_port, serve_command};

const KEY1: &str = "the first master key, 32 characters and more";
const KEY2: &str = "another master key, also 32 characters and more";
const RUNNERS: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n";
/// How long a process gets to start, or to refuse and exit.
const WITHIN: Duration = Duration::from_secs(30);

/// A running `runyard` process; killed and reaped when dropped.
struct Node {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the process to end.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // Safety: a plain signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + WITHIN;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `runyard.toml` in `dir`: its data dir `dir/data`, a service runner and `extra`.
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n{extra}\n{RUNNERS}",
            data.display().to_string()
        ),
    )
    .unwrap();
    // Private, as a file holding a key should be (no warning in the logs read below).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// `runyard serve` (or `worker`, when `worker`) on `config` with `envs`, output to `log`.
fn command(config: &Path, worker: bool, envs: &[(&str, &str)], log: &Path) -> (Command, String) {
    let out = std::fs::File::create(log).unwrap();
    let port = free_port();
    let mut cmd = if worker {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runyard"));
        c.arg("worker").arg("--config").arg(config);
        c.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNYARD_") {
                c.env_remove(k);
            }
        }
        c
    } else {
        serve_command(config, port, out)
    };
    for (k, v) in envs {
        cmd.env(k, v);
    }
    (cmd, format!("http://127.0.0.1:{port}"))
}

/// Starts `runyard serve` and waits until `/health` answers; fails the test if it exits first.
async fn serve(config: &Path, envs: &[(&str, &str)], log: &Path) -> Node {
    let (mut cmd, url) = command(config, false, envs, log);
    let mut node = Node {
        child: Some(cmd.spawn().unwrap()),
        url,
        log: log.to_path_buf(),
    };
    let http = reqwest::Client::new();
    let until = Instant::now() + WITHIN;
    loop {
        if let Some(st) = node.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "the server exited ({st}) instead of starting:\n{}",
                node.log()
            );
        }
        let health = http
            .get(format!("{}/health", node.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if health.is_ok_and(|r| r.status().is_success()) {
            return node;
        }
        assert!(
            Instant::now() < until,
            "not healthy in time:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `runyard serve` (or `worker`) expecting it to refuse to start: it must exit by itself,
/// not successfully. Returns its output.
fn refused(config: &Path, worker: bool, envs: &[(&str, &str)], log: &Path) -> String {
    let (mut cmd, _) = command(config, worker, envs, log);
    let mut child = cmd.spawn().unwrap();
    let until = Instant::now() + WITHIN;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "it started (or hung) instead of refusing:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!status.success(), "must exit non-zero ({status}):\n{out}");
    out
}

/// The refusal names where the key came from and what another key breaks, and shows no key.
fn says(out: &str, source: &str, secrets: &[&str]) {
    for want in [source, "not the one", "stop verifying"] {
        assert!(out.contains(want), "the message says {want:?}:\n{out}");
    }
    for s in secrets {
        assert!(!out.contains(s), "the message shows no key:\n{out}");
    }
}

/// Every file of `data` with the SHA-256 of its content; SQLite's shared-memory index and an
/// empty write-ahead log aside (a read-only look at a WAL database, as every start takes, may
/// leave them, holding nothing).
fn snapshot(data: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with("-shm"))
        .filter(|p| !(p.to_string_lossy().ends_with("-wal") && p.metadata().unwrap().len() == 0))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let digest = sha2::Sha256::digest(std::fs::read(&p).unwrap());
            (name, hex::encode(digest))
        })
        .collect()
}

/// The signing key of a webhook endpoint, as `POST /async/notify/keys` gives it.
async fn endpoint_key(node: &Node) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/async/notify/keys", node.url))
        .json(&serde_json::json!({"url": "https://hooks.example.com/runyard"}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
    body["key"].as_str().expect("a key").to_string()
}

/// The check value the embedded store keeps, if any.
fn stored_check(data: &Path) -> Option<String> {
    let c = rusqlite::Connection::open(data.join("runyard.db")).unwrap();
    c.query_row(
        "SELECT value FROM meta WHERE key = 'master_key_check'",
        [],
        |r| r.get::<_, String>(0),
    )
    .ok()
}

/// A data dir made with its generated `master.key`, restarted with another key in
/// `RUNYARD_MASTER_KEY` (or `master_key` in the file): refused, naming it, nothing changed. With
/// `RUNYARD_MASTER_KEY` set to the file's key (the move docs/configuration.md recommends) it
/// starts, and the webhook endpoint keys are the same.
#[tokio::test]
async fn a_data_dir_made_with_its_key_file_refuses_another_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data, log) = (
        config(dir.path(), "runyard.toml", ""),
        dir.path().join("data"),
        dir.path().join("log"),
    );
    let node = serve(&cfg, &[], &log).await;
    let before = endpoint_key(&node).await;
    node.stop();
    let file = std::fs::read_to_string(data.join("master.key")).unwrap();
    let file = file.trim().to_string();
    let snap = snapshot(&data);

    let out = refused(&cfg, false, &[("RUNYARD_MASTER_KEY", KEY2)], &log);
    says(&out, "RUNYARD_MASTER_KEY", &[KEY2, &file]);
    assert!(out.contains("master.key"), "names the file: {out}");
    assert_eq!(snapshot(&data), snap, "nothing changed in the data dir");

    let in_file = config(dir.path(), "keyed.toml", &format!("master_key = {KEY2:?}"));
    let out = refused(&in_file, false, &[], &log);
    says(&out, "`master_key` in the configuration", &[KEY2, &file]);
    assert_eq!(snapshot(&data), snap, "nothing changed in the data dir");

    let node = serve(&cfg, &[("RUNYARD_MASTER_KEY", &file)], &log).await;
    assert_eq!(endpoint_key(&node).await, before, "the same key");
    node.stop();
}

/// A store made with one key from the environment (no `master.key` then), restarted with
/// another: refused, nothing changed; with the first key again it starts.
#[tokio::test]
async fn a_store_made_with_one_configured_key_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data, log) = (
        config(dir.path(), "runyard.toml", ""),
        dir.path().join("data"),
        dir.path().join("log"),
    );
    let node = serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY1)], &log).await;
    let before = endpoint_key(&node).await;
    node.stop();
    assert!(!data.join("master.key").exists(), "no key file was made");
    assert!(
        stored_check(&data).is_some(),
        "the store keeps a check value"
    );
    let check = stored_check(&data).unwrap();
    assert!(!check.contains(KEY1), "never the key itself");
    let snap = snapshot(&data);

    let out = refused(&cfg, false, &[("RUNYARD_MASTER_KEY", KEY2)], &log);
    says(&out, "RUNYARD_MASTER_KEY", &[KEY1, KEY2, &check]);
    assert!(
        out.contains("made with"),
        "says the store was made with another: {out}"
    );
    assert_eq!(snapshot(&data), snap, "nothing changed in the data dir");

    let node = serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY1)], &log).await;
    assert_eq!(endpoint_key(&node).await, before, "the same key");
    node.stop();

    // A `master.key` left in the data dir by something else: the store's check value decides.
    std::fs::write(data.join("master.key"), "f".repeat(64)).unwrap();
    let node = serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY1)], &log).await;
    assert_eq!(
        endpoint_key(&node).await,
        before,
        "the store's key, not the file's"
    );
    node.stop();
}

/// A store made by an earlier build has no check value: it starts with the key in use (trust
/// on first use), records it, and refuses another key from then on.
#[tokio::test]
async fn a_store_without_a_check_value_takes_the_key_in_use_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data, log) = (
        config(dir.path(), "runyard.toml", ""),
        dir.path().join("data"),
        dir.path().join("log"),
    );
    serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY1)], &log)
        .await
        .stop();
    // As an earlier build left it: no check value.
    let c = rusqlite::Connection::open(data.join("runyard.db")).unwrap();
    c.execute("DELETE FROM meta WHERE key = 'master_key_check'", [])
        .unwrap();
    drop(c);
    assert_eq!(stored_check(&data), None);

    serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY2)], &log)
        .await
        .stop();
    assert!(stored_check(&data).is_some(), "the key in use was recorded");
    let out = refused(&cfg, false, &[("RUNYARD_MASTER_KEY", KEY1)], &log);
    says(&out, "RUNYARD_MASTER_KEY", &[KEY1, KEY2]);
}

/// Two nodes of one Redis deployment with different keys: the first one's is recorded (the
/// first node wins), the second is refused, as a worker and as an API node; a worker with the
/// first key starts.
#[tokio::test]
async fn two_redis_nodes_with_different_keys_the_second_is_refused() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let public = "public_url = \"http://127.0.0.1:9\"\n";
    let first = config(
        dir.path(),
        "first.toml",
        &redis
            .server_config(KEY1)
            .replace("[store]", &format!("{public}[store]")),
    );
    let second = config(
        dir.path(),
        "second.toml",
        &redis
            .server_config(KEY2)
            .replace("[store]", &format!("{public}[store]")),
    );
    let node = serve(&first, &[], &dir.path().join("first.log")).await;

    let out = refused(&second, true, &[], &dir.path().join("worker.log"));
    says(&out, "`master_key` in the configuration", &[KEY1, KEY2]);
    let out = refused(&second, false, &[], &dir.path().join("second.log"));
    says(&out, "`master_key` in the configuration", &[KEY1, KEY2]);

    // The first key starts a worker (it logs that it started, and runs on).
    let log = dir.path().join("worker1.log");
    let (mut cmd, _) = command(&first, true, &[], &log);
    let mut worker = Node {
        child: Some(cmd.spawn().unwrap()),
        url: String::new(),
        log: log.clone(),
    };
    let until = Instant::now() + WITHIN;
    while !worker.log().contains("worker started") {
        if let Some(st) = worker.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the worker exited ({st}):\n{}", worker.log());
        }
        assert!(Instant::now() < until, "no start:\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop();
    node.stop();
}

/// The check value `key` gives (`v1:` and hex, never the key).
fn check_of(key: &str) -> String {
    runyard::master_key::check_value(&runyard::security::MasterKey::new(key.as_bytes().to_vec()))
}

/// A private Redis (never the shared one: these tests flush and restart it) without persistence:
/// a restart loses its data.
fn private_redis() -> TestRedis {
    TestRedis::private(&["--save", "", "--appendonly", "no"])
}

/// `GET P:master_key_check` (empty when none).
fn redis_check(redis: &TestRedis) -> String {
    let key = format!("{}:master_key_check", redis.prefix);
    redis.cli(&["GET", &key]).trim().to_string()
}

/// Waits (20 s at most) until `P:master_key_check` holds `want`.
async fn wait_redis_check(redis: &TestRedis, want: &str, node: &Node, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while redis_check(redis) != want {
        assert!(
            Instant::now() < until,
            "{what}: the running node did not record its check value again (found {:?}):\n{}",
            redis_check(redis),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /health/ready`: its status and body.
async fn ready(node: &Node) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/health/ready", node.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or_default())
}

/// A Redis that loses its data while a node runs (restarted without persistence, then
/// `FLUSHALL`): the running node records its check value again (after the reconnect, and on its
/// periodic look for a flush that drops no connection), so a node started next with another key
/// is still refused, and the node itself keeps serving. Before, the check value stayed gone and
/// the next node decided the key, even another one (probe s48, finding 3).
#[tokio::test]
async fn a_redis_that_lost_its_data_gets_the_running_nodes_check_value_again() {
    let mut redis = private_redis();
    let dir = tempfile::tempdir().unwrap();
    let first = config(dir.path(), "first.toml", &redis.server_config(KEY1));
    let second = config(dir.path(), "second.toml", &redis.server_config(KEY2));
    let node = serve(&first, &[], &dir.path().join("first.log")).await;
    let ours = check_of(KEY1);
    assert_eq!(redis_check(&redis), ours, "recorded at the start");

    // Restarted without its data: every connection drops and comes back. (The node may have
    // recorded its check value again already: a marker of the test's tells the data is gone.)
    assert_eq!(redis.cli(&["SET", "test-marker", "1"]).trim(), "OK");
    redis.restart();
    assert_eq!(
        redis.cli(&["GET", "test-marker"]).trim(),
        "",
        "the data is gone"
    );
    wait_redis_check(&redis, &ours, &node, "after a restart without data").await;
    let out = refused(&second, false, &[], &dir.path().join("second.log"));
    says(&out, "`master_key` in the configuration", &[KEY1, KEY2]);

    // Flushed: no connection drops.
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    wait_redis_check(&redis, &ours, &node, "after FLUSHALL").await;
    let out = refused(&second, false, &[], &dir.path().join("second2.log"));
    says(&out, "`master_key` in the configuration", &[KEY1, KEY2]);

    let (st, body) = ready(&node).await;
    assert_eq!(st, 200, "the node serves on: {body}\n{}", node.log());
    assert!(
        node.log().contains("recorded it again"),
        "the node says it recorded the check value again:\n{}",
        node.log()
    );
    node.stop();
}

/// A running node that finds another key's check value recorded (Redis lost its data and a
/// node with another key started first, or the value was changed by hand) says so at ERROR, is
/// not ready (503, naming the cause) and refuses the store's work (a submit answers 503 after
/// `store.retry`, as while Redis is away), so jobs of two keys do not mix; once the value is deleted it records its own again and serves.
/// Before, it went on as if nothing had happened.
#[tokio::test]
async fn a_running_node_that_finds_another_keys_check_value_stops_serving_until_it_is_gone() {
    let redis = private_redis();
    let dir = tempfile::tempdir().unwrap();
    // Its store calls wait as while Redis is away, for `store.retry`: 3 s here.
    let first = config(
        dir.path(),
        "first.toml",
        &(redis
            .server_config(KEY1)
            .replace("[store]\n", "[store]\nretry = \"3s\"\n")
            + "\n[api]\nrequest_timeout = \"2s\"\n"),
    );
    let node = serve(&first, &[], &dir.path().join("first.log")).await;
    let key = format!("{}:master_key_check", redis.prefix);
    let theirs = check_of(KEY2);
    assert_eq!(redis.cli(&["SET", &key, &theirs]).trim(), "OK");

    let until = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (st, body) = ready(&node).await;
        if st == 503 {
            break body;
        }
        assert!(
            Instant::now() < until,
            "still ready with another key's check value recorded: {st} {body}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let said = body["error"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("master key"), "readiness says why: {body}");
    let log = node.log();
    assert!(
        log.contains("ERROR") && log.contains("master key") && log.contains("another key"),
        "said at ERROR:\n{log}"
    );
    for secret in [KEY1, KEY2, theirs.as_str(), check_of(KEY1).as_str()] {
        assert!(
            !log.contains(secret) && !said.contains(secret),
            "no key nor check value shown:\n{log}"
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{}/async/jobs", node.url))
        .json(&serde_json::json!({"type": "runyard.noop"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let answer = r.text().await.unwrap_or_default();
    assert_eq!(status, 503, "the submit is refused: {answer}");
    // Refused, not unconfirmed: nothing was written, so the answer does not send the client to
    // look for a job that "may have been stored" (probe s49).
    assert!(
        answer.contains("refuses") && !answer.contains("may have been stored"),
        "{answer}"
    );
    assert!(
        !said.contains("does not answer") && said.contains("refuses"),
        "readiness says the node refuses, not that Redis is away: {body}"
    );
    // Said at ERROR once a minute by the check; the loops that meet the refusal (claims, the
    // reaper, waiting jobs' deadlines, schedules, retention, metrics, deliveries) and readiness
    // do not repeat it at WARN on every try: read after every loop has failed a few times
    // (each after `store.retry`, 3 s).
    // A scrape too (whatever it answers: it must not WARN either).
    let _ = reqwest::get(format!("{}/metrics", node.url)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = node.log();
    let repeated = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("master key"))
        .count();
    assert!(repeated <= 1, "the refusal repeated at WARN:\n{log}");
    assert_eq!(redis_check(&redis), theirs, "the node did not overwrite it");

    // Deleted (the fix security.md gives): the node records its own and serves again.
    redis.cli(&["DEL", &key]);
    wait_redis_check(&redis, &check_of(KEY1), &node, "after the DEL").await;
    let until = Instant::now() + Duration::from_secs(20);
    while ready(&node).await.0 != 200 {
        assert!(Instant::now() < until, "not ready again:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop();
}

/// A check value of a form this build cannot read (a newer build's `v2:`, garbage, an empty one,
/// a key of another Redis type) is refused as such at start, on Redis and on the embedded store:
/// not as "another key" (which would send an operator after the wrong fix after a rollback), nor
/// as a bare `WRONGTYPE` (probe s48, finding 11).
#[tokio::test]
async fn a_check_value_this_build_cannot_read_is_refused_as_such() {
    let redis = private_redis();
    let dir = tempfile::tempdir().unwrap();
    let public = "public_url = \"http://127.0.0.1:9\"\n";
    let first = config(
        dir.path(),
        "first.toml",
        &redis
            .server_config(KEY1)
            .replace("[store]", &format!("{public}[store]")),
    );
    let key = format!("{}:master_key_check", redis.prefix);
    let cannot = |out: &str, what: &str| {
        assert!(
            out.contains("cannot read") && !out.contains("not the one"),
            "{what}: refused as a value this build cannot read:\n{out}"
        );
        assert!(
            !out.contains(KEY1) && !out.contains("WRONGTYPE"),
            "{what}:\n{out}"
        );
    };
    for value in ["v2:abcd", "garbage", "v1:", "v1:zz"] {
        redis.cli(&["SET", &key, value]);
        let out = refused(&first, false, &[], &dir.path().join("r.log"));
        cannot(&out, value);
        assert_eq!(redis_check(&redis), value, "left as it was");
    }
    redis.cli(&["DEL", &key]);
    redis.cli(&["HSET", &key, "a", "b"]);
    let out = refused(&first, true, &[], &dir.path().join("w.log"));
    cannot(&out, "a hash");

    // The embedded store.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data, log) = (
        config(dir.path(), "embedded.toml", ""),
        dir.path().join("data"),
        dir.path().join("e.log"),
    );
    serve(&cfg, &[("RUNYARD_MASTER_KEY", KEY1)], &log)
        .await
        .stop();
    let c = rusqlite::Connection::open(data.join("runyard.db")).unwrap();
    c.execute(
        "UPDATE meta SET value = 'v2:abcd' WHERE key = 'master_key_check'",
        [],
    )
    .unwrap();
    drop(c);
    let snap = snapshot(&data);
    let out = refused(&cfg, false, &[("RUNYARD_MASTER_KEY", KEY1)], &log);
    cannot(&out, "embedded v2:");
    assert!(out.contains("master_key_check"), "says where it is:\n{out}");
    assert_eq!(snapshot(&data), snap, "nothing changed in the data dir");
}
