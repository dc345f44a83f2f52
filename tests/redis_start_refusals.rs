//! A Redis that refuses writes when `runyard serve` or `runyard worker` starts, for a reason of
//! its own (unable to persist, `MISCONF`; without the replicas `min-replicas-to-write` asks for,
//! `NOREPLICAS`; out of memory, `OOM`; a read-only replica, `READONLY`): the start stops saying
//! so in the words a running node uses ("the store refuses writes: ..."), not as a Redis user the
//! ACL does not allow a command (probe s51b: "the Redis user cannot run `HSET` ... an ACL with
//! `+@all` ... grants them" for all three). A replica's refusal is waited on within
//! `store.retry`, as a running node does (a failover behind one address ends within it): a
//! replica promoted meanwhile lets the node start. A user the ACL refuses a command keeps the
//! ACL's message.

mod redis_support;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use redis_support::TestRedis;

const BIN: &str = env!("CARGO_BIN_EXE_runyard");
const KEY: &str = "start-refusal-master-key-0123456789ab";
const RUNNERS: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n";

/// The most a refused start may take when it is not waited on: well under `store.retry` (20 s
/// here), so a start that waited it out fails the test.
const AT_ONCE: Duration = Duration::from_secs(10);

/// A private Redis whose configuration a test may change (`CONFIG SET dir`).
fn private_redis() -> TestRedis {
    TestRedis::private(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-protected-configs",
        "yes",
    ])
}

/// A `runyard serve` or `runyard worker` process on a Redis; killed and reaped when dropped.
struct Node {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// `runyard COMMAND` (`serve` or `worker`) on `url` (a Redis URL, maybe with a user and
    /// password: it goes in the config file) with `store.retry` = `retry`, its output to a file.
    /// `serve` listens on a port of the system's choosing (one picked beforehand and released
    /// could be taken meanwhile by a test's Redis: CI, stop 64); [`Node::port`] reads it.
    fn start(command: &str, url: &str, prefix: &str, retry: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("runyard.toml");
        std::fs::write(
            &config,
            format!(
                "redis = \"{url}\"\nmaster_key = \"{KEY}\"\npublic_url = \"http://127.0.0.1\"\n\
                 [store]\nprefix = \"{prefix}\"\nretry = \"{retry}\"\n{RUNNERS}"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let log = dir.path().join("out.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg(command).arg("--config").arg(&config);
        if command == "serve" {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir").arg(dir.path().join("data"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNYARD_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("runyard starts");
        Self {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// What the process wrote so far.
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// The port `serve` listens on, from its "runyard listening" line (waited on, bounded).
    fn port(&mut self) -> u16 {
        self.wait_said("runyard listening", Duration::from_secs(30));
        let said = self.said();
        let line = said
            .lines()
            .find(|l| l.contains("runyard listening"))
            .expect("the listening line");
        let at = line.find("127.0.0.1:").expect("its address") + "127.0.0.1:".len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("a port")
    }

    /// Waits (30 s at most) until `serve` on `port` answers `/health/ready` 200; fails the test
    /// if it exits first (`when` says what it waited on).
    async fn wait_ready(&mut self, port: u16, when: &str) {
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{port}/health/ready");
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!("exited ({st}):\n{}", self.said());
            }
            let ok = http
                .get(&ready)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|a| a.status().is_success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not ready {when}:\n{}",
                self.said()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until it exits (at most `within`, else fails the test): its status, what it said
    /// and how long it ran.
    fn wait_exit(&mut self, within: Duration, started: Instant) -> (ExitStatus, String, Duration) {
        loop {
            if let Some(st) = self.exited() {
                return (st, self.said(), started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "still running after {within:?}:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until its output contains `what`; fails the test if it exits first.
    fn wait_said(&mut self, what: &str, within: Duration) {
        let start = Instant::now();
        while !self.said().contains(what) {
            if let Some(st) = self.exited() {
                panic!("exited ({st}) before saying {what:?}:\n{}", self.said());
            }
            assert!(
                start.elapsed() < within,
                "{what:?} not said within {within:?}:\n{}",
                self.said()
            );
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

/// `serve` and `worker` on `r` stop at once with exit code 1, saying the store refuses writes
/// and `why` (each of `why`'s words), nothing of an ACL or of a Redis user.
fn refused_at_once(r: &TestRedis, why: &[&str]) {
    for command in ["serve", "worker"] {
        let started = Instant::now();
        let mut node = Node::start(command, &r.url, &r.prefix, "20s");
        let (st, said, took) = node.wait_exit(Duration::from_secs(60), started);
        assert_eq!(st.code(), Some(1), "{command}: {st}\n{said}");
        assert!(took < AT_ONCE, "{command}: stopped after {took:?}\n{said}");
        assert!(
            said.contains("the store refuses writes: "),
            "{command}: {said}"
        );
        for w in why {
            assert!(said.contains(w), "{command}: names {w:?}: {said}");
        }
        assert!(
            !said.contains("ACL") && !said.contains("Redis user"),
            "{command}: not an ACL problem: {said}"
        );
    }
}

#[test]
fn a_redis_that_cannot_persist_at_start_is_named_so() {
    let r = private_redis();
    for set in [
        ["save", "3600 1"],
        ["stop-writes-on-bgsave-error", "yes"],
        ["dir", "/proc"],
    ] {
        assert!(r.cli(&["CONFIG", "SET", set[0], set[1]]).contains("OK"));
    }
    r.cli(&["BGSAVE"]);
    let start = Instant::now();
    while r.info("rdb_last_bgsave_status").as_deref() != Some("err")
        || r.info("rdb_bgsave_in_progress").as_deref() != Some("0")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no failed BGSAVE"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    refused_at_once(&r, &["cannot persist to disk", "MISCONF"]);
}

#[test]
fn a_redis_without_its_replicas_at_start_is_named_so() {
    let r = private_redis();
    assert!(r
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .contains("OK"));
    refused_at_once(&r, &["fewer good replicas", "NOREPLICAS"]);
}

#[test]
fn a_redis_out_of_memory_at_start_is_named_so() {
    let r = private_redis();
    assert!(r.cli(&["CONFIG", "SET", "maxmemory", "1"]).contains("OK"));
    refused_at_once(&r, &["out of memory", "maxmemory"]);
}

/// The ACL's refusal (`NOPERM`) keeps its message: the Redis user, the command, the ACL hint.
#[test]
fn a_redis_user_the_acl_refuses_a_command_at_start_is_still_told_so() {
    let r = private_redis();
    let out = r.cli(&[
        "ACL",
        "SETUSER",
        "nopub",
        "on",
        ">pw-s3cret",
        "~*",
        "&*",
        "+@all",
        "-publish",
    ]);
    assert!(out.contains("OK"), "{out}");
    let url = r.url.replacen("redis://", "redis://nopub:pw-s3cret@", 1);
    for command in ["serve", "worker"] {
        let started = Instant::now();
        let mut node = Node::start(command, &url, &r.prefix, "20s");
        let (st, said, took) = node.wait_exit(Duration::from_secs(60), started);
        assert_eq!(st.code(), Some(1), "{command}: {st}\n{said}");
        assert!(took < AT_ONCE, "{command}: stopped after {took:?}\n{said}");
        assert!(
            said.contains("Redis user") && said.contains("PUBLISH") && said.contains("ACL"),
            "{command}: {said}"
        );
        assert!(
            !said.contains("the store refuses writes") && !said.contains("s3cret"),
            "{command}: {said}"
        );
    }
}

/// Starts `serve` and `worker` against `r` with `store.retry` 3 s: each waits on the refusal
/// for `store.retry`, as a running node waits on a replica's, then stops naming it in `words`
/// (all of them), not as an ACL problem.
fn waited_on_then_named(r: &TestRedis, words: &[&str]) {
    for command in ["serve", "worker"] {
        let started = Instant::now();
        let mut node = Node::start(command, &r.url, &r.prefix, "3s");
        let (st, said, took) = node.wait_exit(Duration::from_secs(60), started);
        assert_eq!(st.code(), Some(1), "{command}: {st}\n{said}");
        assert!(
            took >= Duration::from_secs(2),
            "{command}: not waited on within store.retry (stopped after {took:?})\n{said}"
        );
        assert!(words.iter().all(|w| said.contains(w)), "{command}: {said}");
        assert!(
            !said.contains("ACL") && !said.contains("Redis user"),
            "{command}: not an ACL problem: {said}"
        );
    }
}

/// A replica (of a primary that is not there) at start: waited on, then named.
#[test]
fn a_replica_at_start_is_waited_on_within_store_retry_then_named() {
    let r = private_redis();
    assert!(r.cli(&["REPLICAOF", "127.0.0.1", "1"]).contains("OK"));
    waited_on_then_named(
        &r,
        &[
            "the store refuses writes: redis answered as a read-only replica",
            "READONLY",
        ],
    );
}

/// A replica whose link to its primary is down and that serves no stale data (`MASTERDOWN`: the
/// old primary resyncing during a failover) refuses even a script that only reads: the start
/// had stopped at once, blaming the ACL (review rev52c). It is waited on within `store.retry`
/// as a replica's `READONLY` is, then named.
#[test]
fn a_replica_without_its_primary_at_start_is_waited_on_then_named() {
    let r = private_redis();
    assert!(r.cli(&["REPLICAOF", "127.0.0.1", "1"]).contains("OK"));
    assert!(r
        .cli(&["CONFIG", "SET", "replica-serve-stale-data", "no"])
        .contains("OK"));
    waited_on_then_named(&r, &["MASTERDOWN"]);
}

/// A failover at start: the address names a replica (the old primary) for a few seconds, then
/// the primary again (here: the replica promoted): the node waits, within `store.retry`, and
/// starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_within_store_retry_lets_the_node_start() {
    let r = private_redis();
    assert!(r.cli(&["REPLICAOF", "127.0.0.1", "1"]).contains("OK"));
    let mut node = Node::start("serve", &r.url, &r.prefix, "30s");
    // It waits on the replica (says so), rather than stopping.
    node.wait_said("read-only replica", Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.exited().is_none(), "stopped:\n{}", node.said());
    assert!(r.cli(&["REPLICAOF", "NO", "ONE"]).contains("OK"));
    let port = node.port();
    node.wait_ready(port, "after the promotion").await;
    let said = node.said();
    assert!(!said.contains("ACL"), "{said}");
}

/// A Redis busy running a script at start (`BUSY` to every other client until it ends): the
/// start stopped at once at its `INFO` ("redis INFO: BUSY ..."). It is waited on within
/// `store.retry`, and the node starts once the script ends (killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_busy_with_a_script_at_start_is_waited_on() {
    let r = private_redis();
    let script = r.busy();
    let mut node = Node::start("serve", &r.url, &r.prefix, "30s");
    node.wait_said("BUSY", Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.exited().is_none(), "stopped:\n{}", node.said());
    r.unbusy(script);
    let port = node.port();
    node.wait_ready(port, "after the script ended").await;
}
