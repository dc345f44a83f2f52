//! A worker's claim whose reply is lost: Redis ran `commit.lua` (the job is STARTING under the
//! worker's lease) but the connection was cut before the reply came back, so the call sent again
//! conflicts with the claim's own write. The worker must recognise its own claim and run the job
//! once: before, it took the conflict for a lost race and dropped the job, which stayed STARTING
//! under its lease until a reaper spent its attempt (`ERROR` "worker lost" with one attempt).
//! Real processes: an API node and a worker (`runyard worker`) that reaches Redis through a TCP
//! proxy of this test, which forwards the claim's write, withholds its reply and then cuts the
//! connection (as `CLIENT KILL` does at the wrong moment).

mod redis_support;
mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use redis_support::TestRedis;
use support::child::free_port;

/// Killed (SIGKILL) when dropped, and by the kernel when the test dies.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], config: &Path, log: &Path, handover: bool) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        // "claim lost a race" is a debug line.
        .env("RUNYARD_LOG", "info,runyard::store::redis::queue=debug")
        .env_remove("RUNYARD_REDIS")
        .env(
            "RUNYARD_REDIS_HANDOVER",
            if handover { "on" } else { "off" },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out);
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Proc(cmd.spawn().expect("runyard starts"))
}

/// The proxy's shared state: the first request holding `marker` is forwarded, and every reply
/// on its connection is withheld from then on (`hit` is notified) until the connection is cut:
/// by `cut`, or (when `cut_on` is set) by the first later request holding `cut_on` and not
/// `marker`, which is not forwarded.
struct Trap {
    marker: Vec<u8>,
    armed: AtomicBool,
    hit: Notify,
    cut: Notify,
    cut_on: std::sync::Mutex<Option<Vec<u8>>>,
    /// The request holding `marker` is not forwarded either (never reaches Redis).
    swallow: AtomicBool,
}

impl Trap {
    fn new(marker: &str) -> Arc<Self> {
        Arc::new(Trap {
            marker: marker.as_bytes().to_vec(),
            armed: AtomicBool::new(true),
            hit: Notify::new(),
            cut: Notify::new(),
            cut_on: std::sync::Mutex::new(None),
            swallow: AtomicBool::new(false),
        })
    }
}

fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|s| s == needle)
}

/// Copies the requests `r` to `w` until either closes, looking for the trap's marker (across
/// reads): the first time, `mute` (the replies' direction) is set. Returns when the connection
/// is to be cut (see [`Trap`]).
async fn requests(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    t: Arc<Trap>,
    mute: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65536];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n: usize = r.read(&mut buf).await.unwrap_or_default();
        if n == 0 {
            return;
        }
        tail.extend_from_slice(&buf[..n]);
        let mut forward = true;
        if holds(&tail, &t.marker) && t.armed.swap(false, Ordering::SeqCst) {
            mute.store(true, Ordering::SeqCst);
            forward = !t.swallow.load(Ordering::SeqCst);
            t.hit.notify_one();
        } else if mute.load(Ordering::SeqCst) && !holds(&buf[..n], &t.marker) {
            let cut_on = t.cut_on.lock().unwrap().clone();
            if cut_on.is_some_and(|c| holds(&buf[..n], &c)) {
                return;
            }
        }
        let keep = tail.len().saturating_sub(t.marker.len());
        tail.drain(..keep);
        if forward && w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies the replies `r` to `w` until either closes; nothing once `mute` is set.
async fn replies(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mute: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n: usize = r.read(&mut buf).await.unwrap_or_default();
        if n == 0 {
            return;
        }
        if !mute.load(Ordering::SeqCst) && w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy to `upstream` on a free port, with `trap` on the requests.
async fn proxy(upstream: u16, trap: Arc<Trap>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let trap = trap.clone();
            tokio::spawn(async move {
                let Ok(u) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (cr, cw) = c.into_split();
                let (ur, uw) = u.into_split();
                let mute = Arc::new(AtomicBool::new(false));
                let mut up = tokio::spawn(requests(cr, uw, trap.clone(), mute.clone()));
                let down = tokio::spawn(replies(ur, cw, mute.clone()));
                // Cut (both sockets closed) when told, if this is the connection that carried
                // the claim, or when the requests say so.
                loop {
                    tokio::select! {
                        _ = trap.cut.notified() => {
                            if !mute.load(Ordering::SeqCst) {
                                continue;
                            }
                        }
                        _ = &mut up => {}
                    }
                    up.abort();
                    down.abort();
                    return;
                }
            });
        }
    });
    port
}

/// The job `id` as the API gives it.
async fn job(http: &reqwest::Client, url: &str, id: &str) -> Value {
    http.get(format!("{url}/async/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// How the claim's commit goes wrong.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Its reply is withheld, then the connection cut: the call sent again conflicts with it.
    ReplyLost,
    /// Its reply is withheld for longer than `store.retry` (the tries are withheld too): the
    /// commit fails; the connection is cut as the claim's jobs are read back.
    NoAnswer,
    /// As `NoAnswer`, but the claim's write never reaches Redis: read back, nothing was written.
    NotWritten,
}

/// What the test does to the claim's stored record (a raw Redis connection) while its reply is
/// withheld, and so what the worker finds when it reads its claim back.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    /// Nothing: the claim as written.
    None,
    /// The lease's end set a second in the past (the record only: the lease set's score, by
    /// which a reaper finds it, is left, so no reaper moves the job first): the claim was
    /// written, its lease ran out by the read-back.
    LeaseRanOut,
    /// The lease's fencing token changed: the job is STARTING under another claim.
    OtherToken,
}

/// Rewrites the lease of job `id`'s record as `t` says.
async fn tamper(redis: &TestRedis, id: &str, t: Tamper) {
    if t == Tamper::None {
        return;
    }
    let mut c = redis_support::raw_conn(redis).await;
    let key = format!("{}:job:{id}", redis.prefix);
    let body: String = ::redis::cmd("HGET")
        .arg(&key)
        .arg("b")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut j: Value = serde_json::from_str(&body).unwrap();
    let lease = &mut j["lease"];
    assert!(lease.is_object(), "no lease in {body}");
    match t {
        Tamper::None => {}
        Tamper::LeaseRanOut => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            lease["expires_at"] = json!(now - 1_000_000);
        }
        Tamper::OtherToken => {
            lease["token"] = json!(lease["token"].as_u64().unwrap() + 1000);
        }
    }
    let _: () = ::redis::cmd("HSET")
        .arg(&key)
        .arg("b")
        .arg(j.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
}

async fn claim_reply_lost(handover: bool, fault: Fault) {
    claim_found(handover, fault, Tamper::None).await;
}

async fn claim_found(handover: bool, fault: Fault, how: Tamper) {
    let redis = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    // The job's args carry the marker: the first write of the job the worker sends is its claim.
    let marker = format!("lost-claim-reply-{}", std::process::id());
    let trap = Trap::new(&marker);
    trap.swallow
        .store(fault == Fault::NotWritten, Ordering::SeqCst);
    let via = proxy(redis.port, trap.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let runs = dir.path().join("runs");
    let config = |redis_port: u16| {
        format!(
            r#"
listen = "127.0.0.1:{api_port}"
public_url = "http://127.0.0.1:{api_port}"
redis = "redis://127.0.0.1:{redis_port}"
master_key = "claim-reply-test-master-key-0123456789"

[store]
prefix = "{prefix}"
retry = "{retry}"
# The tests edit the stored lease in the JSON record form.
records = "json"

[worker]
lease_ttl = "6s"
poll_interval = "1s"
kill_grace = "200ms"

[[runners]]
name = "loc"
kind = "local"
types = ["lost.*"]
command = ["/bin/sh", "-c", "echo ran >> \"$RUNS\""]
env = {{ RUNS = {runs} }}
max_attempts = 1
"#,
            prefix = redis.prefix,
            retry = if fault != Fault::ReplyLost {
                "1s"
            } else {
                "30s"
            },
            runs = toml::Value::String(runs.to_string_lossy().into()),
        )
    };
    let api_cfg = dir.path().join("api.toml");
    std::fs::write(&api_cfg, config(redis.port)).unwrap();
    let worker_cfg = dir.path().join("worker.toml");
    std::fs::write(&worker_cfg, config(via)).unwrap();
    let data = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let _api = spawn(
        &["serve", "--no-worker", "--data-dir", &data("api-data")],
        &api_cfg,
        &dir.path().join("api.log"),
        handover,
    );
    let worker_log = dir.path().join("worker.log");
    let _worker = spawn(
        &["worker", "--data-dir", &data("worker-data")],
        &worker_cfg,
        &worker_log,
        handover,
    );
    let logs = || std::fs::read_to_string(&worker_log).unwrap_or_default();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{api_port}");
    if handover {
        // The worker parks once its claim found nothing: the job is then handed over to it.
        let mut c = redis_support::raw_conn(&redis).await;
        let park = format!("{}:park:loc", redis.prefix);
        let start = Instant::now();
        while ::redis::cmd("ZCARD")
            .arg(&park)
            .query_async::<u64>(&mut c)
            .await
            .unwrap()
            == 0
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the worker never parked\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let start = Instant::now();
    let id = loop {
        if let Ok(r) = http
            .post(format!("{url}/async/jobs"))
            .json(&json!({"type": "lost.echo", "args": {"mark": marker}, "max_attempts": 1}))
            .send()
            .await
        {
            if r.status().as_u16() == 202 {
                let v: Value = r.json().await.unwrap();
                break v["job_id"].as_str().unwrap().to_string();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "API never up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The read back of the job (`HGET P:job:<id> b`) holds its key without the marker.
    *trap.cut_on.lock().unwrap() =
        (fault != Fault::ReplyLost).then(|| format!("{}:job:{id}", redis.prefix).into_bytes());
    tokio::time::timeout(Duration::from_secs(30), trap.hit.notified())
        .await
        .unwrap_or_else(|_| panic!("the worker never sent its claim\n{}", logs()));
    // Redis ran the claim (its reply is withheld; not when it never reached Redis): then the
    // connection is cut.
    let start = Instant::now();
    let mut written = fault == Fault::NotWritten;
    while !written {
        let v = job(&http, &url, &id).await;
        written = v["status"] == "STARTING";
        if written {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the claim was never written: {v:#}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tamper(&redis, &id, how).await;
    match fault {
        Fault::ReplyLost => trap.cut.notify_waiters(),
        // The read back cuts it about `store.retry` after the claim: without one (before the
        // fix: the claim failed, the job was dropped), the connection is cut 2 s later, so the
        // worker's reaper gets to the job and shows its fate.
        Fault::NoAnswer | Fault::NotWritten => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            trap.cut.notify_waiters();
        }
    }

    let start = Instant::now();
    let v = loop {
        let v = job(&http, &url, &id).await;
        if matches!(v["status"].as_str(), Some("SUCCESS" | "ERROR" | "FAILED")) {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the job never ended: {v:#}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ran = std::fs::read_to_string(&runs).unwrap_or_default();
    let r = v["runs"].as_array().unwrap();
    match how {
        Tamper::None => {
            assert_eq!(v["status"], "SUCCESS", "{v:#}\n{}", logs());
            assert_eq!(v["attempt"], 1, "{v:#}");
            assert_eq!(r.len(), 1, "{v:#}");
            assert_eq!(r[0]["outcome"], "SUCCESS", "{v:#}");
        }
        // Given back at once (its attempt not spent), claimed again and run.
        Tamper::LeaseRanOut => {
            assert_eq!(v["status"], "SUCCESS", "{v:#}\n{}", logs());
            assert_eq!(v["attempt"], 2, "{v:#}");
            assert_eq!(v["max_attempts"], 2, "{v:#}");
            assert_eq!(r.len(), 2, "{v:#}");
            assert_eq!(r[0]["outcome"], "RELEASED", "{v:#}");
            assert_eq!(r[1]["outcome"], "SUCCESS", "{v:#}");
            assert!(
                logs().contains("a failed claim's job given back"),
                "{}",
                logs()
            );
        }
        // Another claim's: never run here; its lease ran out and a reaper ended it.
        Tamper::OtherToken => {
            assert_eq!(v["status"], "ERROR", "{v:#}\n{}", logs());
            assert!(ran.is_empty(), "the job's process ran {ran:?}");
            assert!(logs().contains("claim lost a race"), "{}", logs());
            return;
        }
    }
    assert_eq!(ran.lines().count(), 1, "the job's process ran {ran:?}");
    if fault == Fault::NotWritten {
        // Nothing was taken: the claim failed, as the worker says (its back-off follows).
        assert!(logs().contains("claim failed"), "{}", logs());
    }
    if fault != Fault::ReplyLost && how == Tamper::None {
        assert!(
            logs().contains("a claim's commit failed: read back"),
            "the claim's commit did not fail as meant\n{}",
            logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_is_lost_runs_its_job_once() {
    claim_reply_lost(false, Fault::ReplyLost).await;
}

/// The same with the hand-over at submit (`RUNYARD_REDIS_HANDOVER=on`): the worker's process
/// claims the job handed over to it (`handover.rs`), and that claim's reply is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_claim_whose_reply_is_lost_runs_its_job_once() {
    claim_reply_lost(true, Fault::ReplyLost).await;
}

/// A claim whose commit is not answered within `store.retry` (it failed) but was written: the
/// claim reads its jobs back and runs those it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_commit_failed_but_was_written_runs_its_job_once() {
    claim_reply_lost(false, Fault::NoAnswer).await;
}

/// A claim whose commit failed, written but read back after its lease ran out: the job is given
/// back at once (its attempt not spent) and runs once. Before, it was left to the reaper, which
/// spent its one attempt (`ERROR` "worker lost").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_read_back_after_its_lease_ran_out_gives_its_job_back() {
    claim_found(false, Fault::NoAnswer, Tamper::LeaseRanOut).await;
}

/// A claim whose reply was lost, found written with its lease run out: not taken (a reaper may
/// end it as it starts), given back at once, and run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_reply_found_with_its_lease_run_out_gives_its_job_back() {
    claim_found(false, Fault::ReplyLost, Tamper::LeaseRanOut).await;
}

/// A claim whose reply was lost, with the job STARTING under another token by then: not ours,
/// never run by this worker (a lost race); its lease runs out and a reaper ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_reply_with_the_job_under_another_token_is_not_run() {
    claim_found(false, Fault::ReplyLost, Tamper::OtherToken).await;
}

/// A claim whose commit failed and was not written: read back, nothing is taken, and the claim
/// counts as failed (the worker's "claim failed" warning and back-off; before, it looked like a
/// claim that found nothing). The reservation runs out and the job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_that_wrote_nothing_is_reported_failed() {
    claim_reply_lost(false, Fault::NotWritten).await;
}
