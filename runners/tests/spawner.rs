//! The local runner through two spawner processes (runners/src/spawn.rs): output, exit codes and
//! signals, launch errors, stop killing the whole group and what left it, a job's end killing
//! what it left, jobs shared among the spawners, a stalled
//! spawner passed over, and what happens when a spawner dies, then the other. Without libtest's
//! harness: the spawners are forked first, while this process has one thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runyard_runners::local::{LocalConfig, LocalRunner};
use runyard_runners::{JobSpec, LogStream, Outcome, Reporter, Runner, Secret};
use serde_json::{json, Value};

#[derive(Default)]
struct Lines(Mutex<Vec<(LogStream, String)>>);

impl Reporter for Lines {
    fn log(&self, stream: LogStream, line: String) {
        self.0.lock().unwrap().push((stream, line));
    }
    fn progress(&self, _p: f64, _d: Option<Value>) {}
}

impl Lines {
    async fn value(&self, key: &str) -> i32 {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .0
                .lock()
                .unwrap()
                .iter()
                .find_map(|(_, l)| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()));
            if let Some(v) = v {
                return v;
            }
            assert!(Instant::now() < until, "no {key} line");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn spec() -> JobSpec {
    JobSpec {
        id: "0190-spawn".into(),
        job_type: "t.x".into(),
        args: json!({"a": 1}),
        attempt: 1,
        secret: Secret::from_string("s3cr3t".into()),
        hook_url: "http://127.0.0.1:1/async".into(),
        timeout: None,
        deployment: String::new(),
    }
}

fn sh(script: &str) -> LocalRunner {
    LocalRunner::new(LocalConfig {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env_allow: vec!["PATH".into()],
        ..Default::default()
    })
    .unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .is_some_and(|s| !s.contains(") Z"))
}

async fn wait_dead(pid: i32, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < until, "{what} (pid {pid}) still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn output_env_exit_codes_and_signals(spawners: &[u32]) {
    let lines = Arc::new(Lines::default());
    let r = sh("echo id=$JOB_ID args=$JOB_ARGS ppid=$PPID; echo oops >&2; exit 3");
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    let out = ex.wait().await;
    assert_eq!(
        out,
        Outcome::Failed {
            message: "process exited with code 3".into(),
            exit_code: Some(3)
        }
    );
    let got = lines.0.lock().unwrap().clone();
    let parent = got.iter().find_map(|(s, l)| {
        let ppid = l.strip_prefix("id=0190-spawn args={\"a\":1} ppid=")?;
        (*s == LogStream::Stdout).then(|| ppid.parse::<u32>().ok())?
    });
    assert!(
        parent.is_some_and(|p| spawners.contains(&p)),
        "not a spawner's job: {got:?}, spawners {spawners:?}"
    );
    assert!(got.contains(&(LogStream::Stderr, "oops".into())), "{got:?}");
    let mut ex = sh("kill -TERM $$")
        .launch(spec(), lines.clone())
        .await
        .unwrap();
    assert_eq!(
        ex.wait().await,
        Outcome::Failed {
            message: "process killed by signal 15".into(),
            exit_code: Some(143)
        }
    );
    let mut ex = sh("true").launch(spec(), lines).await.unwrap();
    assert_eq!(ex.wait().await, Outcome::Success { result: None });
}

async fn a_program_that_cannot_start_fails_the_launch() {
    let r = LocalRunner::new(LocalConfig {
        command: vec!["/nonexistent/program".into()],
        ..Default::default()
    })
    .unwrap();
    let err = r
        .launch(spec(), Arc::new(Lines::default()))
        .await
        .err()
        .expect("the launch must fail")
        .to_string();
    assert!(
        err.contains("cannot start `/nonexistent/program`") && err.contains("No such file"),
        "{err}"
    );
}

async fn stop_kills_the_whole_group() {
    let lines = Arc::new(Lines::default());
    let r = sh("sleep 300 & echo bg=$!; echo leader=$$; wait");
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    let (bg, leader) = (lines.value("bg=").await, lines.value("leader=").await);
    assert_eq!(ex.handle().id, leader.to_string());
    ex.stop(Duration::from_millis(200)).await;
    assert!(matches!(ex.wait().await, Outcome::Failed { .. }));
    wait_dead(leader, "stopped job").await;
    wait_dead(bg, "stopped job's background child").await;
}

/// What a job starts with, whatever the spawner does between its fork and exec: the program found
/// in the job's own `PATH`, no signal blocked or ignored, stdin from /dev/null, a process group of
/// its own; a script without `#!` runs through /bin/sh; a program not in `PATH` fails the launch.
async fn jobs_start_as_command_started_them() {
    let lines = Arc::new(Lines::default());
    let r = LocalRunner::new(LocalConfig {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo stdin=$(readlink /proc/$$/fd/0); echo pgrp=$(cut -d' ' -f5 /proc/$$/stat) \
             pid=$$; echo sid=$(cut -d' ' -f6 /proc/$$/stat); exec grep -E '^Sig(Blk|Ign)' /proc/self/status"
                .into(),
        ],
        env_allow: vec![],
        env: [("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())].into(),
        ..Default::default()
    })
    .unwrap();
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    assert_eq!(ex.wait().await, Outcome::Success { result: None });
    let got: Vec<String> = lines
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.1.clone())
        .collect();
    assert!(got.contains(&"SigBlk:\t0000000000000000".into()), "{got:?}");
    // SIGPIPE (bit 12) not ignored.
    let ign = got
        .iter()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap();
    assert_eq!(u64::from_str_radix(ign, 16).unwrap() & 0x1000, 0, "{got:?}");
    assert!(got.contains(&"stdin=/dev/null".into()), "{got:?}");
    let pgrp = got.iter().find(|l| l.starts_with("pgrp=")).unwrap();
    let (a, b) = pgrp.split_once(' ').unwrap();
    assert_eq!(a.strip_prefix("pgrp="), b.strip_prefix("pid="), "{pgrp}");
    // And a session of its own (no controlling terminal).
    let sid = got.iter().find(|l| l.starts_with("sid=")).unwrap();
    assert_eq!(sid.strip_prefix("sid="), b.strip_prefix("pid="), "{sid}");

    let dir = std::env::temp_dir().join(format!("runyard-spawner-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("no-shebang");
    std::fs::write(&script, "echo plain=$((40 + 2))\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let lines = Arc::new(Lines::default());
    let r = LocalRunner::new(LocalConfig {
        command: vec![script.to_string_lossy().into()],
        env_allow: vec!["PATH".into()],
        ..Default::default()
    })
    .unwrap();
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    assert_eq!(ex.wait().await, Outcome::Success { result: None });
    assert_eq!(lines.value("plain=").await, 42);
    let _ = std::fs::remove_dir_all(&dir);

    let r = LocalRunner::new(LocalConfig {
        command: vec!["runyard-no-such-program".into()],
        env_allow: vec!["PATH".into()],
        ..Default::default()
    })
    .unwrap();
    let err = r
        .launch(spec(), lines)
        .await
        .err()
        .expect("no such program")
        .to_string();
    assert!(err.contains("No such file"), "{err}");
}

/// Minor page faults of a process so far (field 10 of /proc/PID/stat).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(7).unwrap().parse().unwrap()
}

/// Each spawner holds its own two sockets and none of another's: they were all made before the
/// first fork.
fn each_spawner_holds_only_its_own_sockets(spawners: &[u32]) {
    let sockets = |pid: u32| -> std::collections::HashSet<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the spawner's descriptors")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .filter(|l| l.starts_with("socket:"))
            .collect()
    };
    // Each closes the others' once it runs (a spawner just forked may not have yet).
    let until = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held: Vec<_> = spawners.iter().map(|&p| sockets(p)).collect();
        if held.iter().all(|s| s.len() == 2) {
            break held;
        }
        assert!(
            Instant::now() < until,
            "the sockets of spawners {spawners:?}: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(held[0].is_disjoint(&held[1]), "{held:?}");
}

/// The spawner does not copy itself for each job: a `fork` would leave its writable pages
/// copy-on-write, so it would take page faults on its own stack and heap after every job.
async fn the_spawner_does_not_copy_itself_per_job(spawners: &[u32]) {
    let r = LocalRunner::new(LocalConfig {
        command: vec!["/bin/true".into()],
        ..Default::default()
    })
    .unwrap();
    let jobs = 100;
    // A few jobs first, to every spawner in turn: their buffers are grown once and for all.
    for _ in 0..2 * spawners.len() {
        let mut ex = r.launch(spec(), Arc::new(Lines::default())).await.unwrap();
        ex.wait().await;
    }
    let faults = || spawners.iter().map(|&p| minor_faults(p)).sum::<u64>();
    let before = faults();
    for _ in 0..jobs {
        let mut ex = r.launch(spec(), Arc::new(Lines::default())).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
    }
    let faults = faults() - before;
    assert!(
        faults < jobs / 2,
        "the spawners took {faults} page faults for {jobs} jobs"
    );
}

/// The start time a job's handle carries (what recovery after a restart matches the pid against)
/// is the one `/proc/PID/stat` gives for that process, for every job of a burst.
/// GNU `timeout` leaves the job's group (`setpgid`): a stop kills it and its command too.
async fn stop_kills_what_left_the_group() {
    let lines = Arc::new(Lines::default());
    let r = sh("timeout 1000 sleep 999 & echo bg=$!; wait");
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    let bg = lines.value("bg=").await;
    let until = Instant::now() + Duration::from_secs(10);
    let sleep: i32 = loop {
        let c = std::fs::read_to_string(format!("/proc/{bg}/task/{bg}/children")).unwrap();
        if let Some(c) = c.split_whitespace().next() {
            break c.parse().unwrap();
        }
        assert!(Instant::now() < until, "`timeout` started no child");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ex.stop(Duration::from_millis(200)).await;
    assert!(matches!(ex.wait().await, Outcome::Failed { .. }));
    let until = Instant::now() + Duration::from_secs(10);
    while (alive(bg) || alive(sleep)) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<i32> = [bg, sleep].into_iter().filter(|p| alive(*p)).collect();
    for p in &left {
        // Safety: plain syscall on a process this test's job started (none left behind).
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "`timeout` or its command still alive after stop: {left:?}"
    );
}

/// The start time of a live process (field 22 of /proc/PID/stat); `None` once it is gone or a
/// zombie.
fn start_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f.first() != Some(&"Z")).then(|| f.get(19)?.parse().ok())?
}

/// Field `i` of /proc/PID/stat after the command (0: state, 2: process group, 3: session).
fn stat_field(pid: i32, i: usize) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(i)?
        .parse()
        .ok()
}

/// Probe `session`: a job that ends by itself (SUCCESS) left running, reparented and with the
/// job's environment, GNU `timeout` and its command (a group of their own, `setpgid`), Python
/// after `os.setpgid(0, 0)`, and a `setsid` child whose parent, the job's shell, then exited; a
/// cancel killed them, a normal end did not. Now each is gone within seconds of the job's end
/// (checked by pid and start time: a pid reused meanwhile does not count as left alive).
async fn a_job_that_ends_leaves_no_process_behind() {
    let dir = std::env::temp_dir().join(format!("runyard-spawner-left-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let lines = Arc::new(Lines::default());
    let r = sh(&format!(
        "timeout 100 sleep 332 </dev/null >/dev/null 2>&1 & echo timeout=$!; \
         python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(327)' </dev/null >/dev/null 2>&1 & \
         echo py=$!; setsid sleep 323 </dev/null >/dev/null 2>&1 & echo setsid=$!; \
         for _ in $(seq 400); do [ -e {go} ] && exit 0; sleep 0.05; done; exit 9",
        go = go.display()
    ));
    let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
    let (timeout, py, setsid) = (
        lines.value("timeout=").await,
        lines.value("py=").await,
        lines.value("setsid=").await,
    );
    // Until each has left the job's group (and `setsid` its session) and `timeout` has started
    // its command.
    let until = Instant::now() + Duration::from_secs(20);
    let sleep = loop {
        let child = std::fs::read_to_string(format!("/proc/{timeout}/task/{timeout}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|c| c.parse::<i32>().ok());
        let left = stat_field(timeout, 2) == Some(timeout)
            && stat_field(py, 2) == Some(py)
            && stat_field(setsid, 3) == Some(setsid);
        if let (Some(c), true) = (child, left) {
            break c;
        }
        assert!(Instant::now() < until, "the job's children did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let procs: Vec<(i32, u64)> = [timeout, sleep, py, setsid]
        .into_iter()
        .map(|p| (p, start_of(p).expect("running")))
        .collect();
    std::fs::write(&go, b"").unwrap();
    assert_eq!(ex.wait().await, Outcome::Success { result: None });
    let alive = |(p, t): &(i32, u64)| start_of(*p) == Some(*t);
    let until = Instant::now() + Duration::from_secs(10);
    while procs.iter().any(alive) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<i32> = procs.iter().filter(|p| alive(p)).map(|p| p.0).collect();
    for p in &left {
        // Safety: plain syscall on a process this test's job started (none left behind).
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        left.is_empty(),
        "still running 10 s after the job ended: {left:?} of {procs:?}"
    );
}

async fn handles_carry_the_start_time_the_kernel_reports() {
    let r = sh("sleep 300");
    let mut jobs = Vec::new();
    for _ in 0..60 {
        jobs.push(r.launch(spec(), Arc::new(Lines::default())).await.unwrap());
    }
    for ex in &jobs {
        let h = ex.handle();
        let pid: u32 = h.id.parse().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let kernel: u64 = after.split_whitespace().nth(19).unwrap().parse().unwrap();
        assert_eq!(h.data["start_time"], json!(kernel), "pid {pid}");
    }
    for mut ex in jobs {
        ex.stop(Duration::from_millis(200)).await;
        ex.wait().await;
    }
}

/// A burst of jobs started at once (their starts come back a few to a message): each job's
/// output reaches its own execution, and each ends with its own exit code; every spawner starts
/// some of them.
async fn a_burst_of_jobs_each_gets_its_own_pipes_and_exit(spawners: &[u32]) {
    let launches = (0..48).map(|i| async move {
        let lines = Arc::new(Lines::default());
        let script = format!(
            "echo out={i}; echo err={i} >&2; echo ppid=$PPID; exit {}",
            i % 7
        );
        let mut ex = sh(&script).launch(spec(), lines.clone()).await.unwrap();
        // Bounded: an exit told before its start would be lost, and the wait would hang.
        let out = tokio::time::timeout(Duration::from_secs(30), ex.wait())
            .await
            .unwrap_or_else(|_| panic!("job {i} never reported its end"));
        (i, out, lines)
    });
    let mut parents = std::collections::HashSet::new();
    for (i, out, lines) in futures::future::join_all(launches).await {
        let code = i % 7;
        parents.insert(lines.value("ppid=").await as u32);
        match &out {
            Outcome::Success { .. } => assert_eq!(code, 0, "job {i}"),
            Outcome::Failed { exit_code, .. } => assert_eq!(*exit_code, Some(code), "job {i}"),
            other => panic!("job {i}: {other:?}"),
        }
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "job {i}: {got:?}");
        assert!(
            got.contains(&(LogStream::Stdout, format!("out={i}"))),
            "job {i}: {got:?}"
        );
        assert!(
            got.contains(&(LogStream::Stderr, format!("err={i}"))),
            "job {i}: {got:?}"
        );
    }
    let want: std::collections::HashSet<u32> = spawners.iter().copied().collect();
    assert_eq!(parents, want, "the spawners that started the burst's jobs");
}

/// A spawner killed: its job dies with it and fails, later jobs go to the other spawner; with
/// both gone, later jobs are forked by this process.
async fn a_dead_spawner_takes_its_jobs_and_later_jobs_still_run(spawners: &[u32]) {
    let lines = Arc::new(Lines::default());
    let mut ex = sh("echo leader=$$; echo ppid=$PPID; sleep 300")
        .launch(spec(), lines.clone())
        .await
        .unwrap();
    let leader = lines.value("leader=").await;
    let first = lines.value("ppid=").await as u32;
    assert!(spawners.contains(&first), "{first} of {spawners:?}");
    // Safety: plain syscall on our own child.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_dead(leader, "job of a killed spawner").await;
    let out = tokio::time::timeout(Duration::from_secs(10), ex.wait())
        .await
        .expect("wait returns");
    assert!(
        matches!(&out, Outcome::Failed { message, .. } if message.contains("spawner")),
        "{out:?}"
    );
    let until = Instant::now() + Duration::from_secs(10);
    while runyard_runners::spawn::spawner_pids().contains(&first) {
        assert!(Instant::now() < until, "the spawner's death went unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<u32> = spawners.iter().copied().filter(|&p| p != first).collect();
    assert_eq!(runyard_runners::spawn::spawner_pids(), left);
    // Later jobs: from the spawner left, every one of them.
    for _ in 0..4 {
        assert_eq!(parent_of_a_job().await as u32, left[0]);
    }
    // Safety: plain syscall on our own child.
    unsafe { libc::kill(left[0] as i32, libc::SIGKILL) };
    while !runyard_runners::spawn::spawner_pids().is_empty() {
        assert!(
            Instant::now() < until,
            "the last spawner's death went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(parent_of_a_job().await, std::process::id() as i32);
}

/// A spawner stopped (as one held by a hung mount while it starts a job): once its start has
/// gone unanswered for `STALLED_AFTER`, jobs go to the other one, even when that one is as busy;
/// when it goes on, its start completes.
async fn a_stalled_spawner_gets_no_jobs_while_another_answers(spawners: &[u32]) {
    let stopped = spawners[0];
    // Safety: plain syscall on our own child.
    unsafe { libc::kill(stopped as i32, libc::SIGSTOP) };
    // Jobs one at a time until one is held: it went to the stopped spawner (they take turns).
    let mut held = None;
    for _ in 0..6 {
        let mut job = tokio::spawn(parent_of_a_job());
        // A job the other spawner starts ends at once; 5 s leaves room for a loaded machine.
        match tokio::time::timeout(Duration::from_secs(5), &mut job).await {
            Ok(parent) => assert_eq!(parent.unwrap() as u32, spawners[1]),
            Err(_) => {
                held = Some(job);
                break;
            }
        }
    }
    let held = held.expect("no job went to the stopped spawner");
    tokio::time::sleep(runyard_runners::spawn::STALLED_AFTER + Duration::from_millis(300)).await;
    // A burst: the other spawner soon has as many starts under way as the stopped one, and
    // still takes every job (one sent to the stopped spawner would not start).
    let burst = futures::future::join_all((0..12).map(|_| parent_of_a_job()));
    let parents = tokio::time::timeout(Duration::from_secs(20), burst)
        .await
        .expect("a job of the burst went to the stalled spawner");
    assert!(
        parents.iter().all(|&p| p as u32 == spawners[1]),
        "{parents:?}"
    );
    // Safety: plain syscall on our own child.
    unsafe { libc::kill(stopped as i32, libc::SIGCONT) };
    let parent = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held job starts once its spawner goes on")
        .unwrap();
    assert_eq!(parent as u32, stopped);
}

/// Runs a job that prints its parent's pid; returns that pid once the job has succeeded.
async fn parent_of_a_job() -> i32 {
    let lines = Arc::new(Lines::default());
    let mut ex = sh("echo ppid=$PPID")
        .launch(spec(), lines.clone())
        .await
        .unwrap();
    assert_eq!(ex.wait().await, Outcome::Success { result: None });
    lines.value("ppid=").await
}

fn main() {
    // Safety: the only thread of this process so far, and the main one.
    unsafe { runyard_runners::spawn::start_early(2) }.expect("the spawners start");
    let spawners = runyard_runners::spawn::spawner_pids();
    assert_eq!(spawners.len(), 2, "{spawners:?}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    each_spawner_holds_only_its_own_sockets(&spawners);
    println!("each spawner holds only its own sockets ... ok");
    rt.block_on(async {
        output_env_exit_codes_and_signals(&spawners).await;
        println!("output, exit codes and signals ... ok");
        jobs_start_as_command_started_them().await;
        println!("jobs start as Command started them ... ok");
        the_spawner_does_not_copy_itself_per_job(&spawners).await;
        println!("the spawner does not copy itself per job ... ok");
        a_program_that_cannot_start_fails_the_launch().await;
        println!("a program that cannot start fails the launch ... ok");
        stop_kills_the_whole_group().await;
        println!("stop kills the whole group ... ok");
        stop_kills_what_left_the_group().await;
        println!("stop kills what left the group ... ok");
        a_job_that_ends_leaves_no_process_behind().await;
        println!("a job that ends leaves no process behind ... ok");
        handles_carry_the_start_time_the_kernel_reports().await;
        println!("handles carry the start time the kernel reports ... ok");
        a_burst_of_jobs_each_gets_its_own_pipes_and_exit(&spawners).await;
        println!("a burst of jobs each gets its own pipes and exit ... ok");
        a_stalled_spawner_gets_no_jobs_while_another_answers(&spawners).await;
        println!("a stalled spawner gets no jobs while another answers ... ok");
        a_dead_spawner_takes_its_jobs_and_later_jobs_still_run(&spawners).await;
        println!(
            "a dead spawner takes its jobs, later jobs go to the other, then to a fork ... ok"
        );
    });
}
