//! A local job leads a session of its own (runners/src/session.rs): a server run in a terminal
//! does not lend it that terminal (`/dev/tty` fails at once, nothing reaches the operator's
//! screen, a prompt does not stop the job), and cancel and timeout stop what left the job's
//! process group too (GNU `timeout` puts itself in a group of its own), not only the group; so
//! does a job's end by itself.
//! A real `runyard serve` with its spawners, real child processes, a real pseudo-terminal.

mod support;

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::{free_port, serve_command};

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// A server killed (SIGKILL) and reaped when dropped, so a failing test leaves none behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a config with one local runner per `(type glob, shell script)`.
fn config(dir: &Path, runners: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = format!(
        "data_dir = {}\n[worker]\nspawners = 1\nkill_grace = \"1s\"\n",
        toml_str(&dir.join("data").to_string_lossy())
    );
    for (types, script) in runners {
        text.push_str(&format!(
            "[[runners]]\nkind = \"local\"\ntypes = [{}]\ncommand = [\"/bin/sh\", \"-c\", {}]\n\
             env_allow = [\"PATH\"]\n",
            toml_str(types),
            toml_str(script)
        ));
    }
    let c = dir.join("runyard.toml");
    std::fs::write(&c, text).expect("config");
    c
}

async fn wait_healthy(http: &reqwest::Client, url: &str, log: &Path) {
    let until = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < until,
            "server not healthy within 30s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(http: &reqwest::Client, url: &str, body: Value) -> String {
    let r: Value = http
        .post(format!("{url}/async/jobs"))
        .json(&body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    r["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id: {r}"))
        .to_string()
}

async fn get_job(http: &reqwest::Client, url: &str, id: &str) -> Value {
    http.get(format!("{url}/async/jobs/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// The job once its status is `status` (bounded).
async fn wait_status(http: &reqwest::Client, url: &str, id: &str, status: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let job = get_job(http, url, id).await;
        if job["status"] == status {
            return job;
        }
        assert!(Instant::now() < until, "not {status} within 30s: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The job's log lines.
async fn lines(http: &reqwest::Client, url: &str, id: &str) -> Vec<String> {
    let r: Value = http
        .get(format!("{url}/async/jobs/{id}/logs"))
        .send()
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    r["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["line"].as_str().map(str::to_string))
        .collect()
}

/// A new pseudo-terminal: its master, and its slave's path.
fn pty() -> (OwnedFd, String) {
    // Safety: plain libc calls; the master is owned from here, the name copied out.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        (master, name)
    }
}

/// Everything the terminal's screen got so far (the master's side, not blocking).
fn screen(master: &OwnedFd) -> String {
    let fd = master.as_raw_fd();
    // Safety: plain syscalls on our own descriptor, reads into a local buffer.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            got.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// The README's `serve` in a terminal: the server's controlling terminal is a pseudo-terminal
/// the test reads as the operator's screen. A job that writes a title escape to `/dev/tty` and
/// then reads it (a password prompt) finds no terminal at once (ENXIO), so nothing reaches the
/// screen and the job ends by itself, long before its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_server_in_a_terminal_cannot_reach_the_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "printf '\\033]0;pwned-title\\007' > /dev/tty && echo wrote=yes; \
                  cat /dev/tty; echo read=$?";
    let cfg = config(dir.path(), &[("tty.*", script)]);
    let (master, slave) = pty();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave)
        .expect("the pty's slave");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut cmd = serve_command(&cfg, port, log);
    cmd.stdin(tty);
    // Safety: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A session whose controlling terminal is the pty (on stdin), as a login shell's.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _server = Server(cmd.spawn().expect("serve"));
    let http = reqwest::Client::new();
    wait_healthy(&http, &url, &log_path).await;

    let id = submit(
        &http,
        &url,
        json!({"type": "tty.job", "max_attempts": 1, "timeout": 20}),
    )
    .await;
    let started = Instant::now();
    let until = Instant::now() + Duration::from_secs(40);
    let job = loop {
        let job = get_job(&http, &url, &id).await;
        if ["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"]
            .contains(&job["status"].as_str().unwrap_or(""))
        {
            break job;
        }
        assert!(Instant::now() < until, "not terminal within 40s: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = lines(&http, &url, &id).await;
    assert_eq!(job["status"], "SUCCESS", "{job} {got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the job was held by the terminal: {got:?}"
    );
    assert!(!got.iter().any(|l| l == "wrote=yes"), "{got:?}");
    assert!(got.iter().any(|l| l == "read=1"), "{got:?}");
    assert!(
        got.iter().any(|l| l.contains("No such device or address")),
        "{got:?}"
    );
    let seen = screen(&master);
    assert!(
        !seen.contains("pwned"),
        "the job wrote to the terminal: {seen:?}"
    );
}

/// The live processes whose environment holds `JOB_ID=<id>` (what every process of the job
/// inherits: the shell, GNU `timeout` and its `sleep`).
fn processes_of(id: &str) -> Vec<u32> {
    let needle = format!("JOB_ID={id}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Until `n` processes of the job run (bounded).
async fn wait_processes(id: &str, n: usize) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let got = processes_of(id);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < until, "{got:?}: fewer than {n} processes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until no process of the job is left (bounded); kills them before failing.
async fn wait_none_left(id: &str, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(id);
        if left.is_empty() {
            return;
        }
        if Instant::now() > until {
            for p in &left {
                // Safety: plain syscall on a process this test's job started.
                unsafe { libc::kill(*p as i32, libc::SIGKILL) };
            }
            panic!("{what}: processes of the job still running: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GNU `timeout` leaves the job's process group (`setpgid`): a cancel and a job's timeout stop
/// it and its command all the same, and no process of the job is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_stop_what_left_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "timeout 1000 sleep 999 & echo ready=1; wait";
    let cfg = config(dir.path(), &[("esc.*", script)]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _server = Server(serve_command(&cfg, port, log).spawn().expect("serve"));
    let http = reqwest::Client::new();
    wait_healthy(&http, &url, &log_path).await;

    let a = submit(&http, &url, json!({"type": "esc.job", "max_attempts": 1})).await;
    // The shell, `timeout` and `sleep`.
    let pids = wait_processes(&a, 3).await;
    let r = http
        .post(format!("{url}/async/jobs/{a}/cancel"))
        .send()
        .await
        .expect("cancel");
    assert!(r.status().is_success(), "cancel: {}", r.status());
    wait_status(&http, &url, &a, "CANCELLED").await;
    wait_none_left(&a, &format!("cancelled job (was {pids:?})")).await;

    let b = submit(
        &http,
        &url,
        json!({"type": "esc.job", "max_attempts": 1, "timeout": 1}),
    )
    .await;
    let pids = wait_processes(&b, 3).await;
    wait_status(&http, &url, &b, "TIMEOUT").await;
    wait_none_left(&b, &format!("timed-out job (was {pids:?})")).await;
}

/// Probe `session`: a job that ends by itself (SUCCESS) left running, with its environment,
/// GNU `timeout` and its command, Python after `os.setpgid(0, 0)` and a `setsid` child whose
/// parent, the job's shell, exited 0.3 s later; a cancel killed them, a normal end did not. Now
/// none of the job's processes is left within seconds of its end, and it still ends SUCCESS.
/// The job ends only once each has left its group (and `setsid` its session) and `timeout` has
/// started its command (`/proc`, bounded), and the test has seen them (a `go` file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ends_by_itself_leaves_no_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let go = dir.path().join("go");
    let script = format!(
        "timeout 100 sleep 332 </dev/null >/dev/null 2>&1 & t=$!; \
         python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(327)' \
         </dev/null >/dev/null 2>&1 & p=$!; \
         setsid sleep 323 </dev/null >/dev/null 2>&1 & s=$!; \
         f() {{ cut -d' ' -f$1 /proc/$2/stat; }}; \
         i=0; until [ \"$(f 5 $t)\" = $t ] && [ \"$(f 5 $p)\" = $p ] && [ \"$(f 6 $s)\" = $s ] \
         && [ -n \"$(cat /proc/$t/task/$t/children)\" ]; do \
         i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.05; done; : > {ready}; \
         i=0; until [ -e {go} ]; do i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.05; done",
        ready = shell_quote(&ready.to_string_lossy()),
        go = shell_quote(&go.to_string_lossy()),
    );
    let cfg = config(dir.path(), &[("left.*", &script)]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _server = Server(serve_command(&cfg, port, log).spawn().expect("serve"));
    let http = reqwest::Client::new();
    wait_healthy(&http, &url, &log_path).await;

    let id = submit(&http, &url, json!({"type": "left.job", "max_attempts": 1})).await;
    let until = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < until, "the job's children did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The shell, `timeout` and its `sleep`, Python and the `setsid` child.
    let pids = wait_processes(&id, 5).await;
    std::fs::write(&go, b"").expect("go");
    wait_status(&http, &url, &id, "SUCCESS").await;
    wait_none_left(&id, &format!("ended job (was {pids:?})")).await;
}

/// The live processes whose environment holds `entry` (`NAME=value`).
fn processes_with(entry: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z"));
            !zombie
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
        })
        .collect()
}

/// What a job left out of the sweeper's reach (it left the session and dropped the job's
/// environment, `env -i`, once its parent had exited) is its spawner's child (a subreaper): a
/// server killed with SIGKILL takes it with it, as it takes its running jobs. Before, it was
/// init's child and ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_job_left_dies_with_a_killed_server() {
    left_dies_with_a_killed_server("setsid sh -c ': >\"$1\"; exec sleep 341' sh", 1).await;
}

/// Review of the sweeper: a leftover with children of its own (a shell and its two `sleep`s,
/// all the spawner's descendants once the job's shell has exited). The spawner, leaving with
/// the server, killed the shell before its walk: the `sleep`s, reparented to the spawner
/// (their subreaper), were no longer descendants of a leftover, and went to init alive (3 of 4
/// runs). Now the leftovers' descendants are found before any signal, and every walk reads the
/// spawner's children again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_and_its_children_die_with_a_killed_server() {
    left_dies_with_a_killed_server(
        "setsid sh -c 'sleep 351 & sleep 352 & : >\"$1\"; wait' sh",
        3,
    )
    .await;
}

/// A job runs `env -i <mark> <leftover> <ready file>` in the background and exits 0 once the
/// file exists (bounded: 10 s): `leftover` writes it, its last argument, once it has left the
/// job's session (`setsid`) and forked what it forks, so it is out of the sweeper's reach when
/// the job ends. `n` processes carry the mark after the job's end; a SIGKILL of the server
/// leaves none.
async fn left_dies_with_a_killed_server(leftover: &str, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = format!("RUNYARD_TEST_LEFT={}-{n}", std::process::id());
    let ready = dir.path().join("ready");
    let ready = shell_quote(&ready.to_string_lossy());
    let script = format!(
        "env -i {mark} {leftover} {ready} </dev/null >/dev/null 2>&1 & \
         i=0; while [ ! -e {ready} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
    );
    let cfg = config(dir.path(), &[("gone.*", &script)]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut server = Server(serve_command(&cfg, port, log).spawn().expect("serve"));
    let http = reqwest::Client::new();
    wait_healthy(&http, &url, &log_path).await;

    let id = submit(&http, &url, json!({"type": "gone.job", "max_attempts": 1})).await;
    wait_status(&http, &url, &id, "SUCCESS").await;
    // Out of the sweeper's reach: still there a few of its rounds after the job's end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = processes_with(&mark);
    assert_eq!(left.len(), n, "what the job left: {left:?}");
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    let until = Instant::now() + Duration::from_secs(10);
    while !processes_with(&mark).is_empty() {
        if Instant::now() > until {
            for p in processes_with(&mark) {
                // Safety: plain syscall on a process this test's job started.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            panic!("what the job left outlived the server it ran under: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `s` quoted for the shell (single quotes).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
