//! A worker node stopped while Redis is away is gone within its shutdown window
//! (`worker.shutdown_grace + worker.kill_grace` + 10 s: docs/reliability.md, "Stopping a server
//! or a worker node"; the chart's `terminationGracePeriodSeconds` is checked against it), whatever
//! `store.retry` is; its job, which it could not give back, is recovered by its lease once Redis
//! is back. Before, the stop waited `store.retry` for each of its writes and loops (about 65 s
//! with the defaults, 35 s documented): Kubernetes would have killed the pod first. Real
//! processes: `runyard worker` nodes and a redis-server (appendonly, so that a restart keeps the
//! job).

mod redis_support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runyard::job::JobStatus;

use redis_support::TestRedis;

/// Killed (SIGKILL) when dropped, and by the kernel when the test dies.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(config: &Path, data: &Path, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.arg("worker")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
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

const GRACE: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_secs(1);
/// What docs/reliability.md allows past the graces.
const MARGIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_while_redis_is_away_is_gone_within_its_shutdown_window() {
    let mut redis = TestRedis::private(&["--save", "", "--appendonly", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    // Attempt 1 writes its pid and sleeps; later attempts end at once.
    let script =
        r#"echo $$ > "$PIDS/$JOB_ATTEMPT"; if [ "$JOB_ATTEMPT" = 1 ]; then exec sleep 300; fi"#;
    // `store.retry` is its default (30 s): far longer than the window. A short lease so that
    // the job is recovered soon after Redis is back; the fence (the lease not renewed for
    // 4 - 1 - 0.4 s) stops the job during the grace, and a job stopped so must not hold the
    // drain.
    let config = format!(
        r#"
public_url = "http://127.0.0.1:9"
redis = "{url}"
master_key = "worker-stop-test-master-key-0123456789"

[store]
prefix = "{prefix}"

[worker]
lease_ttl = "4s"
poll_interval = "100ms"
shutdown_grace = "{grace}ms"
kill_grace = "{kill}ms"

[[runners]]
name = "loc"
kind = "local"
types = ["stop.*"]
command = ["/bin/sh", "-c", {script}]
env = {{ PIDS = {pids} }}
max_attempts = 3
"#,
        url = redis.url,
        prefix = redis.prefix,
        grace = GRACE.as_millis(),
        kill = KILL_GRACE.as_millis(),
        script = toml::Value::String(script.into()),
        pids = toml::Value::String(dir.path().to_string_lossy().into()),
    );
    let cfg = dir.path().join("worker.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.path().join("worker.log");
    let logs = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut worker = spawn_worker(&cfg, &dir.path().join("data-1"), &log);

    let store = redis_support::open_store(&redis).await;
    let mut job = redis_support::queued_job("loc");
    job.job_type = "stop.sleep".into();
    job.max_attempts = 3;
    let id = store.submit(job).await.expect("submit").job.id;
    let pid = wait_pid(&dir.path().join("1"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("attempt 1 never started\n{}", logs(&log)));

    // Redis goes away (as the probe did it: redis-server stopped); a second later the worker is
    // asked to stop.
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = GRACE + KILL_GRACE + MARGIN;
    let asked = Instant::now();
    unsafe {
        libc::kill(worker.0.id() as i32, libc::SIGTERM);
    }
    let took = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            assert!(status.success(), "{status}\n{}", logs(&log));
            break asked.elapsed();
        }
        assert!(
            asked.elapsed() < window + Duration::from_secs(60),
            "the worker still runs {:?} after SIGTERM\n{}",
            asked.elapsed(),
            logs(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = logs(&log);
    assert!(
        took <= window,
        "the worker took {took:?} to stop with Redis away, past its window \
         (shutdown_grace + kill_grace + 10 s = {window:?})\n{text}"
    );
    assert!(
        !alive(pid),
        "attempt 1 (pid {pid}) outlived its worker\n{text}"
    );
    // Stopped by the fence during the grace: nothing of it was left to stop at the grace's end.
    assert!(
        !text.contains("shutdown grace over"),
        "a job whose work had stopped held the drain to the grace's end\n{text}"
    );
    assert!(
        text.contains("the reaper recovers the job as after a crash"),
        "the log does not say what becomes of the job it could not give back\n{text}"
    );

    // Redis back, and a worker: the expired lease is reaped and attempt 2 runs to the end.
    redis.restart();
    let log2 = dir.path().join("worker-2.log");
    let _worker2 = spawn_worker(&cfg, &dir.path().join("data-2"), &log2);
    let start = Instant::now();
    let job = loop {
        if let Ok(Some(j)) = store.get(id).await {
            if j.status.is_terminal() {
                break j;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job was never recovered after Redis came back\n{}",
            logs(&log2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job.status, JobStatus::Success, "{job:#?}\n{}", logs(&log2));
    assert_eq!(job.attempt, 2, "{job:#?}");
    assert_eq!(job.runs[0].outcome.as_deref(), Some("LOST"), "{job:#?}");
    eprintln!("stopped {took:?} after SIGTERM with Redis away (window {window:?})");
}
