//! A step of one node's wall clock (NTP, a VM resumed, an operator) must not make a live job run
//! twice. Real processes; the stepped node runs under libfaketime (`apt-get install faketime`),
//! whose offset file is rewritten while it runs (CLOCK_MONOTONIC is left alone).
//!
//! - `a_worker_stepped_forward_does_not_reap_live_leases`: Redis, worker A runs a long job,
//!   worker B's clock is 20 s ahead: B's reaper must not take A's live lease for expired.
//! - `a_worker_stepped_back_does_not_write_expired_leases`: Redis, worker B (20 s behind) runs the
//!   job: the leases it writes must not look expired to worker A.
//! - `an_embedded_server_stepped_forward_keeps_its_running_job`: one `runyard serve` (SQLite)
//!   stepped 20 s forward while its job runs: its own reaper must not requeue the job.
//!
//! Each job writes its pid to `PIDS/<attempt>` and sleeps on its first attempt only: a second
//! attempt while the first is still alive is the failure.

mod redis_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use redis_support::TestRedis;

const LEASE: Duration = Duration::from_secs(2);
const FAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn faketime_lib() -> &'static str {
    FAKETIME
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is needed (apt-get install faketime)")
}

struct Setup {
    dir: tempfile::TempDir,
    api_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            api_port: free_port(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config; `redis` None is the embedded store.
    fn config(&self, name: &str, redis: Option<&TestRedis>) -> PathBuf {
        let script =
            r#"echo $$ > "$PIDS/$JOB_ATTEMPT"; if [ "$JOB_ATTEMPT" = 1 ]; then exec sleep 9; fi"#;
        let store = match redis {
            Some(r) => format!(
                "redis = \"{}\"\nmaster_key = \"clock-test-master-key-0123456789\"\n[store]\nprefix = \"{}\"\n",
                r.url, r.prefix
            ),
            None => String::new(),
        };
        let text = format!(
            r#"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
data_dir = {data}
{store}
[worker]
lease_ttl = "{lease}ms"
poll_interval = "100ms"
kill_grace = "200ms"

[[runners]]
name = "loc"
kind = "local"
types = ["clock.*"]
command = ["/bin/sh", "-c", {script}]
env = {{ PIDS = {pids} }}
max_attempts = 3
"#,
            port = self.api_port,
            data = toml::Value::String(self.path(&format!("data-{name}")).to_string_lossy().into()),
            lease = LEASE.as_millis(),
            script = toml::Value::String(script.into()),
            pids = toml::Value::String(self.dir.path().to_string_lossy().into()),
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `runyard ARGS --config CFG`; with `clock`, under libfaketime with that offset file.
    fn spawn(&self, name: &str, args: &[&str], cfg: &Path, clock: Option<&Path>) -> Proc {
        let out = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
        cmd.args(args)
            .arg("--config")
            .arg(cfg)
            .env("RUNYARD_LOG", "info")
            .env("HOSTNAME", name)
            .env_remove("RUNYARD_REDIS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        if let Some(clock) = clock {
            cmd.env("LD_PRELOAD", faketime_lib())
                .env("FAKETIME_TIMESTAMP_FILE", clock)
                .env("FAKETIME_NO_CACHE", "1")
                .env("DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Proc(cmd.spawn().expect("runyard starts"))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let s = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = s.lines().rev().take(25).collect();
                out.push_str(&format!("--- {} ---\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    async fn submit(&self, http: &reqwest::Client) -> String {
        let start = Instant::now();
        loop {
            if let Ok(r) = http
                .post(format!("{}/async/jobs", self.url()))
                .json(&json!({"type": "clock.sleep"}))
                .send()
                .await
            {
                if r.status().as_u16() == 202 {
                    let v: Value = r.json().await.unwrap();
                    return v["job_id"].as_str().unwrap().to_string();
                }
            }
            assert!(start.elapsed() < Duration::from_secs(30), "API never up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn first_pid(&self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(self.path("1"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "attempt 1 never started\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// For `secs`: attempt 1 stays alive and no attempt 2 starts (while 1 runs).
    async fn assert_single_run(&self, pid: i32, how_long: Duration) {
        let start = Instant::now();
        while start.elapsed() < how_long {
            assert!(
                !self.path("2").exists(),
                "attempt 2 started while attempt 1 (pid {pid}, alive: {}) ran\n{}",
                alive(pid),
                self.logs()
            );
            assert!(
                alive(pid),
                "attempt 1 (pid {pid}) was stopped: its lease was taken for expired\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn assert_succeeds_once(&self, http: &reqwest::Client, id: &str) {
        let start = Instant::now();
        let job = loop {
            let v: Value = http
                .get(format!("{}/async/jobs/{id}", self.url()))
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
                "the job never succeeded: {v:#}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(job["attempt"], 1, "{job:#}");
        assert_eq!(job["runs"].as_array().unwrap().len(), 1, "{job:#}");
    }
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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stepped_forward_does_not_reap_live_leases() {
    let redis = TestRedis::start();
    let s = Setup::new();
    let _api = s.spawn(
        "api",
        &["serve", "--no-worker"],
        &s.config("api", Some(&redis)),
        None,
    );
    let _a = s.spawn("worker-a", &["worker"], &s.config("a", Some(&redis)), None);
    let http = http();
    let id = s.submit(&http).await;
    let pid = s.first_pid().await;
    // Worker B joins with its clock 20 s ahead: to it, A's lease ran out long ago.
    let clock = s.path("clock-b");
    std::fs::write(&clock, "+20\n").unwrap();
    let _b = s.spawn(
        "worker-b",
        &["worker"],
        &s.config("b", Some(&redis)),
        Some(&clock),
    );
    s.assert_single_run(pid, LEASE * 5 / 2).await;
    s.assert_succeeds_once(&http, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stepped_back_does_not_write_expired_leases() {
    let redis = TestRedis::start();
    let s = Setup::new();
    let _api = s.spawn(
        "api",
        &["serve", "--no-worker"],
        &s.config("api", Some(&redis)),
        None,
    );
    // Only B (20 s behind) is there to claim the job.
    let clock = s.path("clock-b");
    std::fs::write(&clock, "-20\n").unwrap();
    let _b = s.spawn(
        "worker-b",
        &["worker"],
        &s.config("b", Some(&redis)),
        Some(&clock),
    );
    let http = http();
    let id = s.submit(&http).await;
    let pid = s.first_pid().await;
    // A joins: B's leases, written with B's clock, must not look expired to it.
    let _a = s.spawn("worker-a", &["worker"], &s.config("a", Some(&redis)), None);
    s.assert_single_run(pid, LEASE * 5 / 2).await;
    s.assert_succeeds_once(&http, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_stepped_forward_keeps_its_running_job() {
    let s = Setup::new();
    let clock = s.path("clock");
    std::fs::write(&clock, "+0\n").unwrap();
    let _srv = s.spawn(
        "server",
        &["serve"],
        &s.config("server", None),
        Some(&clock),
    );
    let http = http();
    let id = s.submit(&http).await;
    let pid = s.first_pid().await;
    // The running server's clock jumps 20 s ahead, six times: each time its own lease looks
    // expired to its reaper until the next heartbeat renews it (the reaper does not always run
    // first, hence the repeats).
    for k in 1..=6 {
        std::fs::write(&clock, format!("+{}\n", 20 * k)).unwrap();
        s.assert_single_run(pid, Duration::from_millis(800)).await;
    }
    s.assert_succeeds_once(&http, &id).await;
}
