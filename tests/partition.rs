//! A worker cut off from Redis longer than its lease must stop its job before the lease can
//! expire: otherwise another worker's reaper requeues the job and a second run starts while the
//! first still runs. Real processes: an API node and a worker (`runyard worker`) that reaches
//! Redis through a TCP proxy of this test, which black-holes traffic (forwards nothing, closes
//! nothing) for longer than the lease.

mod redis_support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use redis_support::TestRedis;

const LEASE: Duration = Duration::from_secs(2);

/// Killed (SIGKILL) when dropped, and by the kernel when the test dies.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], config: &Path, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("RUNYARD_LOG", "info")
        .env_remove("RUNYARD_REDIS")
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A proxy to `upstream` on a free port. While `blocked` is set it forwards nothing and closes
/// nothing (new connections are held), like a network that silently drops every packet.
async fn proxy(upstream: u16, blocked: Arc<AtomicBool>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    async fn hold(b: &AtomicBool) {
        while b.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        b: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 65536];
        loop {
            let n: usize = r.read(&mut buf).await.unwrap_or_default();
            hold(&b).await;
            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let b = blocked.clone();
            tokio::spawn(async move {
                hold(&b).await;
                let Ok(u) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (cr, cw) = c.into_split();
                let (ur, uw) = u.into_split();
                tokio::spawn(pump(cr, uw, b.clone()));
                tokio::spawn(pump(ur, cw, b));
            });
        }
    });
    port
}

/// The pid in `path` once the job wrote it.
async fn wait_pid(path: &Path, bound: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < bound {
        if let Some(p) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(p);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_stops_its_job_before_its_lease_can_expire() {
    let redis = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let blocked = Arc::new(AtomicBool::new(false));
    let via = proxy(redis.port, blocked.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    // Attempt 1 writes its pid and sleeps; later attempts end at once.
    let script =
        r#"echo $$ > "$PIDS/$JOB_ATTEMPT"; if [ "$JOB_ATTEMPT" = 1 ]; then exec sleep 30; fi"#;
    let config = |redis_port: u16| {
        format!(
            r#"
listen = "127.0.0.1:{api_port}"
public_url = "http://127.0.0.1:{api_port}"
redis = "redis://127.0.0.1:{redis_port}"
master_key = "partition-test-master-key-0123456789"

[store]
prefix = "{prefix}"
retry = "30s"

[worker]
lease_ttl = "{lease}ms"
poll_interval = "100ms"
kill_grace = "200ms"

[[runners]]
name = "loc"
kind = "local"
types = ["part.*"]
command = ["/bin/sh", "-c", {script}]
env = {{ PIDS = {pids} }}
max_attempts = 3
"#,
            prefix = redis.prefix,
            lease = LEASE.as_millis(),
            script = toml::Value::String(script.into()),
            pids = toml::Value::String(dir.path().to_string_lossy().into()),
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
    );
    let worker_log = dir.path().join("worker.log");
    let _worker = spawn(
        &["worker", "--data-dir", &data("worker-data")],
        &worker_cfg,
        &worker_log,
    );
    let logs = || std::fs::read_to_string(&worker_log).unwrap_or_default();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{api_port}");
    let start = Instant::now();
    let id = loop {
        if let Ok(r) = http
            .post(format!("{url}/async/jobs"))
            .json(&json!({"type": "part.sleep"}))
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
    let pid = wait_pid(&dir.path().join("1"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("attempt 1 never started\n{}", logs()));
    // Let a heartbeat or two go through, then cut the worker off for 2.5 leases.
    tokio::time::sleep(LEASE / 2).await;
    blocked.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let mut died = None;
    while cut.elapsed() < LEASE * 5 / 2 {
        if died.is_none() && !alive(pid) {
            died = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let died =
        died.unwrap_or_else(|| panic!("the cut-off worker's job (pid {pid}) still runs after 2.5 leases: another worker may run it at the same time\n{}", logs()));
    // The lease was last renewed before the cut, so it may expire LEASE after it at the latest:
    // the job must be gone by then.
    assert!(
        died < LEASE,
        "the job died {died:?} after the cut, not within the lease ({LEASE:?})\n{}",
        logs()
    );
    blocked.store(false, Ordering::SeqCst);
    // Healed: the expired lease is reaped and attempt 2 runs to the end; nothing is lost.
    let start = Instant::now();
    let job = loop {
        let v: Value = http
            .get(format!("{url}/async/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "SUCCESS" {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never succeeded after the partition: {v:#}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let runs = job["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{job:#}");
    assert_eq!(runs[0]["outcome"], "LOST", "{job:#}");
    assert_eq!(job["attempt"], 2, "{job:#}");
    eprintln!("partition: the cut-off job died {died:?} after the cut (lease {LEASE:?})");
}
