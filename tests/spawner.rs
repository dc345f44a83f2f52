//! Local jobs are started by the spawner processes (runners/src/spawn.rs), not forked from the
//! server, and every guarantee of the local runner holds through it: the job's environment is
//! scrubbed (no master key, only its own secret), cancel kills the job's whole process group, and
//! `kill -9` of the server takes the spawners and the jobs they started with it. A server that
//! runs no job starts no spawner.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::serve_command;

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`, when the process exists.
fn stat_field(pid: i64, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    after.split_whitespace().nth(n - 3).map(str::to_string)
}

/// Alive and not a zombie.
fn alive(pid: i64) -> bool {
    stat_field(pid, 3).is_some_and(|st| st != "Z")
}

fn wait_dead(pid: i64, within: Duration, what: &str) {
    let until = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < until, "{what} (pid {pid}) still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn submit(http: &reqwest::Client, url: &str) -> String {
    let r: Value = http
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": "sp.job", "args": {}, "max_attempts": 1}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    r["job_id"].as_str().expect("job_id").to_string()
}

/// The job's log lines once one starts with `until` (bounded).
async fn lines(http: &reqwest::Client, url: &str, id: &str, until: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r: Value = http
            .get(format!("{url}/async/jobs/{id}/logs"))
            .send()
            .await
            .expect("logs")
            .json()
            .await
            .expect("json");
        let got: Vec<String> = r["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["line"].as_str().map(str::to_string))
            .collect();
        if got.iter().any(|l| l.starts_with(until)) {
            return got;
        }
        assert!(
            Instant::now() < end,
            "no `{until}` line within 30s: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(lines: &[String], key: &str) -> i64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

fn config(dir: &Path) -> std::path::PathBuf {
    let script = "echo ppid=$PPID; echo leader=$$; sleep 300 & echo bg=$!; env; echo ready=1; wait";
    let c = dir.join("runyard.toml");
    std::fs::write(
        &c,
        format!(
            "data_dir = {}\n[worker]\nspawners = 2\n[[runners]]\nkind = \"local\"\ntypes = [\"sp.*\"]\n\
             command = [\"/bin/sh\", \"-c\", {}]\nenv_allow = [\"PATH\"]\n",
            toml_str(&dir.join("data").to_string_lossy()),
            toml_str(script)
        ),
    )
    .expect("config");
    c
}

/// The children of a process.
fn children(pid: i64) -> Vec<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the server's children")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < until, "server not healthy within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `serve --no-worker` runs no job: it starts no spawner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_without_a_worker_starts_no_spawner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::child::free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
    let mut server = serve_command(&config(dir.path()), port, log)
        .arg("--no-worker")
        .env("RUNYARD_MASTER_KEY", "no-worker-test-key-0123456789abcdef")
        .spawn()
        .expect("serve");
    wait_healthy(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}")).await;
    let got = children(i64::from(server.id()));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        got,
        Vec::<i64>::new(),
        "the children of `serve --no-worker`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_come_from_the_spawner_scrubbed_cancellable_and_die_with_a_killed_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = format!("spawner-test-key-{:016x}", rand::random::<u64>());
    let port = support::child::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
    let mut server = serve_command(&config(dir.path()), port, log)
        .env("RUNYARD_MASTER_KEY", &key)
        .spawn()
        .expect("serve");
    let http = reqwest::Client::new();
    wait_healthy(&http, &url).await;
    let server_pid = i64::from(server.id());
    // `worker.spawners = 2`: two children of the server, made before its first thread.
    let spawners = children(server_pid);
    assert_eq!(spawners.len(), 2, "the server's children: {spawners:?}");

    // The job's parent is the spawner, a child of the server, not the server itself.
    let a = submit(&http, &url).await;
    let got = lines(&http, &url, &a, "ready=").await;
    let spawner = value(&got, "ppid=");
    assert_ne!(spawner, server_pid, "the job was forked by the server");
    assert!(spawners.contains(&spawner), "{spawner} of {spawners:?}");
    assert_eq!(
        stat_field(spawner, 4).as_deref(),
        Some(server_pid.to_string().as_str()),
        "the job's parent is not the server's spawner"
    );
    // Neither the spawners nor the job hold the master key; the job has its own secret only.
    for s in &spawners {
        match std::fs::read(format!("/proc/{s}/environ")) {
            Ok(environ) => assert!(!String::from_utf8_lossy(&environ).contains(&key)),
            // Non-dumpable (docs/security.md): only root reads it.
            // Safety: plain syscall.
            Err(e) if unsafe { libc::geteuid() } != 0 => {
                eprintln!("not root: the spawner's environment is not checked ({e})")
            }
            Err(e) => panic!("the environment of spawner {s}: {e}"),
        }
    }
    assert!(
        got.iter()
            .all(|l| !l.contains(&key) && !l.starts_with("RUNYARD_")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|l| l.starts_with("JOB_SECRET_KEY=")),
        "{got:?}"
    );

    // Cancel kills the job's whole group: the leader and what it started in the background.
    let (leader, bg) = (value(&got, "leader="), value(&got, "bg="));
    let r = http
        .post(format!("{url}/async/jobs/{a}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert!(r.status().is_success(), "cancel: {}", r.status());
    wait_dead(leader, Duration::from_secs(15), "cancelled job");
    wait_dead(
        bg,
        Duration::from_secs(15),
        "cancelled job's background child",
    );

    // A SIGTERM while the server runs (systemd's stop sends one to every process of the unit)
    // is not the server's end: the spawners stay, and start the next job below.
    for s in &spawners {
        // Safety: plain syscall on a child of the server this test started.
        unsafe { libc::kill(*s as i32, libc::SIGTERM) };
    }
    std::thread::sleep(Duration::from_millis(300));
    for s in &spawners {
        assert!(
            alive(*s),
            "spawner {s} left on a SIGTERM while the server ran"
        );
    }

    // kill -9 of the server: the spawners die with it, and the job one started with them.
    let b = submit(&http, &url).await;
    let got = lines(&http, &url, &b, "ready=").await;
    let (leader, bg) = (value(&got, "leader="), value(&got, "bg="));
    assert!(spawners.contains(&value(&got, "ppid=")), "{got:?}");
    let _ = server.kill();
    let _ = server.wait();
    for s in spawners {
        wait_dead(s, Duration::from_secs(5), "spawner of a killed server");
    }
    wait_dead(leader, Duration::from_secs(5), "job of a killed server");
    // And the rest of the job's group (a spawner kills its jobs' groups as it leaves); the
    // test kills it itself if not, before it fails.
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !alive(bg)
    });
    if !gone {
        // Safety: plain syscall on the job's group.
        unsafe { libc::kill(-(leader as i32), libc::SIGKILL) };
    }
    assert!(
        gone,
        "the background child of a killed server's job outlived it"
    );
}
