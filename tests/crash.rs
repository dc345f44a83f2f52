//! Crash recovery, end to end: a real `runyard serve` process is killed with SIGKILL while jobs
//! run, then started again on the same data dir. No job may be lost, every job must end in
//! SUCCESS, and no job may ever run twice at the same time: the killed attempt's process must be
//! gone before the next attempt starts (checked from a file the job script appends to, and from
//! the job's `runs` on the API).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::ChildServer as Server;

const LOCAL: &str = "crash.local";
const SVC: &str = "crash.svc";
const PER_TYPE: usize = 100;
const TERMINAL: &[&str] = &["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"];

/// The job script: one "start" line, a sleep taken from the args, one "end" line.
const SCRIPT: &str = r#"#!/bin/sh
ms=$(printf '%s' "$JOB_ARGS" | sed -n 's/.*"sleep_ms":\([0-9]*\).*/\1/p')
echo "start $JOB_ID $JOB_ATTEMPT $(date +%s%N) $$" >> "$RUNS_FILE"
sleep "$(printf '0.%03d' "${ms:-200}")"
echo "end $JOB_ID $JOB_ATTEMPT $(date +%s%N) $$" >> "$RUNS_FILE"
"#;

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

async fn submit(http: &reqwest::Client, url: &str, job_type: &str, args: Value) -> String {
    let r = http
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": job_type, "args": args}))
        .send()
        .await
        .expect("submit");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::ACCEPTED,
        "submit {job_type}"
    );
    let v: Value = r.json().await.expect("submit answer");
    v["job_id"].as_str().expect("job_id").to_string()
}

/// All jobs of a type (the test makes 100 per type: one page).
async fn list(http: &reqwest::Client, url: &str, job_type: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut q = format!("{url}/async/jobs?type={job_type}&limit=1000");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let v: Value = http
            .get(&q)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("list answer");
        out.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    out
}

fn count(jobs: &[Value], status: &str) -> usize {
    jobs.iter().filter(|j| j["status"] == status).count()
}

fn us(v: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(v.as_str()?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as i64)
}

/// One line of the runs file.
#[derive(Debug, Clone)]
struct Mark {
    attempt: u32,
    ns: u128,
    pid: i32,
}

/// Per job: attempt -> (start, end).
type Runs = HashMap<String, BTreeMap<u32, (Option<Mark>, Option<Mark>)>>;

fn read_runs(path: &Path) -> Runs {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: Runs = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "malformed runs line `{line}`");
        let m = Mark {
            attempt: f[2].parse().expect("attempt"),
            ns: f[3].parse().expect("time"),
            pid: f[4].parse().expect("pid"),
        };
        let slot = runs
            .entry(f[1].to_string())
            .or_default()
            .entry(m.attempt)
            .or_default();
        match f[0] {
            "start" => {
                assert!(slot.0.is_none(), "attempt started twice: `{line}`");
                slot.0 = Some(m);
            }
            "end" => {
                assert!(slot.1.is_none(), "attempt ended twice: `{line}`");
                slot.1 = Some(m);
            }
            other => panic!("unknown mark `{other}`"),
        }
    }
    runs
}

/// Whether `pid` is a live (non-zombie) process still running the job script.
fn script_alive(pid: i32, script: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.trim().chars().next());
    if state == Some('Z') || state == Some('X') {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(&*script.to_string_lossy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_job_and_never_overlaps_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("job.sh");
    let runs_file = dir.path().join("runs.txt");
    let log = dir.path().join("server.log");
    std::fs::write(&script, SCRIPT).expect("script");
    std::fs::File::create(&runs_file).expect("runs file");
    let config = dir.path().join("runyard.toml");
    let mut f = std::fs::File::create(&config).expect("config");
    write!(
        f,
        r#"data_dir = {data}

[worker]
lease_ttl = "1s"
shutdown_grace = "2s"

[[runners]]
name = "crash-local"
kind = "local"
types = ["{LOCAL}"]
command = ["/bin/sh", {script}]
concurrency = 8
max_attempts = 5
env = {{ RUNS_FILE = {runs} }}

[[runners]]
name = "crash-svc"
kind = "service"
types = ["{SVC}"]
operation = "runyard.sleep"
concurrency = 32
max_attempts = 5
"#,
        data = toml_str(&dir.path().join("data").to_string_lossy()),
        script = toml_str(&script.to_string_lossy()),
        runs = toml_str(&runs_file.to_string_lossy()),
    )
    .expect("config");
    drop(f);

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut server = Server::start(&config, &log);
    server.wait_healthy(Duration::from_secs(20)).await;
    let url = server.url.clone();

    // Local jobs first (they take seconds), then, once some succeeded, the service jobs (they
    // take a fraction of a second), so the crash hits both kinds mid-run.
    let mut local_ids = HashSet::new();
    for i in 0..PER_TYPE {
        let ms = 100 + (i * 37) % 401; // 100..=500
        local_ids.insert(submit(&http, &url, LOCAL, json!({"sleep_ms": ms})).await);
    }
    let until = Instant::now() + Duration::from_secs(30);
    while count(&list(&http, &url, LOCAL).await, "SUCCESS") == 0 {
        assert!(
            Instant::now() < until,
            "no local job succeeded within 30s:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut svc_ids = HashSet::new();
    for i in 0..PER_TYPE {
        let ms = 50 + (i * 53) % 251; // 50..=300
        svc_ids.insert(submit(&http, &url, SVC, json!({"ms": ms})).await);
    }
    assert_eq!(local_ids.len() + svc_ids.len(), 2 * PER_TYPE);

    // Wait for SUCCESS and RUNNING jobs of both kinds (the service ones may all finish before we
    // look: then the crash still hits running local jobs, which is what is asserted).
    let until = Instant::now() + Duration::from_secs(30);
    let (local_now, svc_now) = loop {
        let l = list(&http, &url, LOCAL).await;
        let s = list(&http, &url, SVC).await;
        let both = count(&s, "SUCCESS") > 0 && count(&s, "RUNNING") > 0;
        let svc_over = s
            .iter()
            .all(|j| TERMINAL.contains(&j["status"].as_str().unwrap_or("")));
        if count(&l, "RUNNING") > 0 && (both || svc_over) {
            break (l, s);
        }
        assert!(
            Instant::now() < until,
            "no moment with running jobs within 30s:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let all_now: Vec<Value> = local_now.iter().chain(svc_now.iter()).cloned().collect();
    assert!(count(&all_now, "SUCCESS") > 0 && count(&all_now, "RUNNING") > 0);

    let crash_before = now_ns();
    let old_pid = server.pid();
    server.kill9();
    let crash_after = now_ns();
    eprintln!(
        "killed server {old_pid}: local SUCCESS {} RUNNING {}, service SUCCESS {} RUNNING {}",
        count(&local_now, "SUCCESS"),
        count(&local_now, "RUNNING"),
        count(&svc_now, "SUCCESS"),
        count(&svc_now, "RUNNING"),
    );

    // The processes of the interrupted local runs must die with the server, before anything can
    // start them again.
    let interrupted: Vec<i32> = read_runs(&runs_file)
        .values()
        .flat_map(|m| m.values())
        .filter(|(s, e)| s.is_some() && e.is_none())
        .filter_map(|(s, _)| s.as_ref().map(|m| m.pid))
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<i32> = interrupted
            .iter()
            .copied()
            .filter(|p| script_alive(*p, &script))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "job processes {alive:?} outlived the killed server by 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Start again on the same data dir and wait (bounded) for every job to end.
    let mut server = Server::start(&config, &log);
    server.wait_healthy(Duration::from_secs(20)).await;
    let url = server.url.clone();
    let until = Instant::now() + Duration::from_secs(120);
    let (locals, svcs) = loop {
        let l = list(&http, &url, LOCAL).await;
        let s = list(&http, &url, SVC).await;
        let done = l
            .iter()
            .chain(s.iter())
            .all(|j| TERMINAL.contains(&j["status"].as_str().unwrap_or("")));
        if done && l.len() >= PER_TYPE && s.len() >= PER_TYPE {
            break (l, s);
        }
        assert!(
            Instant::now() < until,
            "jobs not terminal within 120s of the restart:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // None lost, none extra, all SUCCESS.
    let got_local: HashSet<String> = locals
        .iter()
        .map(|j| j["id"].as_str().unwrap_or("").to_string())
        .collect();
    let got_svc: HashSet<String> = svcs
        .iter()
        .map(|j| j["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(got_local, local_ids, "local jobs lost or invented");
    assert_eq!(got_svc, svc_ids, "service jobs lost or invented");
    for j in locals.iter().chain(svcs.iter()) {
        assert_eq!(j["status"], "SUCCESS", "job did not succeed: {j:#}");
    }

    // The API's run records: every run ended, and no two runs of a job overlap.
    let mut rerun = 0;
    for j in locals.iter().chain(svcs.iter()) {
        let runs = j["runs"].as_array().expect("runs");
        assert!(!runs.is_empty(), "a SUCCESS job without a run: {j:#}");
        if runs.len() > 1 {
            rerun += 1;
        }
        let spans: Vec<(i64, i64)> = runs
            .iter()
            .map(|r| {
                let start = us(&r["started_at"]).or_else(|| us(&r["claimed_at"]));
                let end = us(&r["ended_at"]);
                match (start, end) {
                    (Some(s), Some(e)) if s <= e => (s, e),
                    _ => panic!("run without a proper [start, end]: {r:#} in {j:#}"),
                }
            })
            .collect();
        for (a, x) in spans.iter().enumerate() {
            for y in &spans[a + 1..] {
                assert!(
                    x.1 <= y.0 || y.1 <= x.0,
                    "runs overlap in {}: {x:?} and {y:?}: {:#}",
                    j["id"],
                    j["runs"]
                );
            }
        }
        assert_eq!(
            runs.last().expect("a run")["outcome"],
            "SUCCESS",
            "the last run is not the successful one: {j:#}"
        );
    }
    assert!(
        rerun > 0,
        "the crash interrupted no job: nothing was tested"
    );

    // The job script's own record of every local run.
    let runs = read_runs(&runs_file);
    for id in &local_ids {
        let attempts = runs.get(id).unwrap_or_else(|| panic!("job {id} never ran"));
        let unended = attempts.values().filter(|(_, e)| e.is_none()).count();
        assert!(
            unended <= 1,
            "job {id}: {unended} runs without an end: {attempts:?}"
        );
        let mut prev: Option<(u32, u128)> = None; // (attempt, when it was over)
        for (attempt, (start, end)) in attempts {
            let start = start
                .as_ref()
                .unwrap_or_else(|| panic!("job {id} attempt {attempt}: an end without a start"));
            if let Some((pa, over)) = prev {
                assert!(
                    start.ns > over,
                    "job {id}: attempt {attempt} started at {} before attempt {pa} was over at {over}",
                    start.ns
                );
            }
            let over = match end {
                Some(e) => e.ns,
                None => {
                    // Killed with the server: it started before the crash, and nothing may start
                    // again before the server was dead.
                    assert!(
                        start.ns < crash_after,
                        "job {id} attempt {attempt}: a run without an end that started after the crash"
                    );
                    crash_after
                }
            };
            prev = Some((*attempt, over));
        }
        let (last_attempt, (_, last_end)) = attempts.iter().next_back().expect("a run");
        assert!(
            last_end.is_some(),
            "job {id}: the last run (attempt {last_attempt}) has no end"
        );
        // Any run still going when the server died ended before the crash was over, or never.
        for (attempt, (s, e)) in attempts {
            if let (Some(s), Some(e)) = (s, e) {
                assert!(
                    !(s.ns < crash_before && e.ns > crash_after),
                    "job {id} attempt {attempt} (pid {}) outlived the killed server",
                    s.pid
                );
            }
        }
        let api = locals
            .iter()
            .find(|j| j["id"] == id.as_str())
            .expect("listed");
        assert_eq!(
            api["attempt"].as_u64(),
            Some(*last_attempt as u64),
            "job {id}: the API's last attempt is not the last one that ran"
        );
    }
    eprintln!(
        "after the restart: {} jobs ran more than once, {} local runs were interrupted",
        rerun,
        interrupted.len()
    );
}

const NOOP: &str = "crash.noop";

/// One producer submitting one no-op job at a time (the shape where the embedded store's group
/// commit, direct hand-off and joint start+finish all come into play), killed with SIGKILL three
/// times mid-stream: every job seen SUCCESS before a kill is still SUCCESS after it, with the same
/// finish time, and every job answered `202` is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_success_a_sequential_producer_saw() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let config = dir.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data}

[worker]
shutdown_grace = "2s"

[[runners]]
name = "crash-noop"
kind = "service"
types = ["{NOOP}"]
operation = "runyard.noop"
concurrency = 256
max_attempts = 1
"#,
            data = toml_str(&dir.path().join("data").to_string_lossy()),
        ),
    )
    .expect("config");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut accepted: Vec<String> = Vec::new();
    let mut seen: HashMap<String, Value> = HashMap::new();
    for round in 1..=3usize {
        let mut server = Server::start(&config, &log);
        server.wait_healthy(Duration::from_secs(20)).await;
        let url = server.url.clone();
        // The producer: one submit at a time until the server is gone (at most 3,000).
        let producer = {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..3_000 {
                    let r = http
                        .post(format!("{url}/async/jobs"))
                        .json(&json!({"type": NOOP}))
                        .send()
                        .await;
                    let Ok(r) = r else { break };
                    if r.status() != reqwest::StatusCode::ACCEPTED {
                        break;
                    }
                    let Ok(v) = r.json::<Value>().await else {
                        break;
                    };
                    ids.push(v["job_id"].as_str().expect("job_id").to_string());
                }
                ids
            })
        };
        // Watch until this round's successes pass 100 more than the last, then kill at once.
        let until = Instant::now() + Duration::from_secs(60);
        let mut now_seen;
        loop {
            now_seen = list(&http, &url, NOOP).await;
            if count(&now_seen, "SUCCESS") >= seen.len() + 100 {
                break;
            }
            assert!(
                Instant::now() < until,
                "no successes within 60s:\n{}",
                server.log_tail()
            );
            // Listings are not free for the server under test: a pause between them.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill9();
        for j in now_seen.iter().filter(|j| j["status"] == "SUCCESS") {
            seen.insert(j["id"].as_str().unwrap_or("").to_string(), j.clone());
        }
        accepted.extend(producer.await.expect("producer"));
        eprintln!(
            "round {round}: {} accepted, {} seen SUCCESS",
            accepted.len(),
            seen.len()
        );
    }

    let mut server = Server::start(&config, &log);
    server.wait_healthy(Duration::from_secs(20)).await;
    let after: HashMap<String, Value> = list(&http, &server.url, NOOP)
        .await
        .into_iter()
        .map(|j| (j["id"].as_str().unwrap_or("").to_string(), j))
        .collect();
    for id in &accepted {
        assert!(after.contains_key(id), "job {id} answered 202 is lost");
    }
    for (id, was) in &seen {
        let now = &after[id];
        assert_eq!(
            now["status"], "SUCCESS",
            "job {id} seen SUCCESS is now {now:#}"
        );
        assert_eq!(
            now["finished_at"], was["finished_at"],
            "job {id} seen SUCCESS has another finish now"
        );
    }
}
