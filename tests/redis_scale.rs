//! Scale-out on Redis, with real processes: one API (`serve --no-worker`) and worker nodes
//! (`runyard worker`) sharing one Redis.
//!
//! - `scale_out_survives_a_killed_worker`: 2,000 jobs (service and local), one worker `kill -9`'d
//!   mid-run: every job ends SUCCESS, none is lost, no two runs of a job overlap, and the killed
//!   worker's child processes do not live on.
//! - `redis_restart_loses_no_accepted_job`: Redis (appendonly yes) restarted mid-run: `/health`
//!   says 503 while it is away, the processes reconnect, every accepted job completes.
//! - `memory_returns_flat`: rounds of no-op jobs with short retention: Redis memory, key count and
//!   the processes' RSS come back to where they were (`RUNYARD_MEMORY_JOBS`, default 20,000;
//!   docs/benchmarks.md has the 100,000-job run).
//! - `a_dead_claimers_reservation_is_requeued`: a claim picked but never saved is not lost.
//! - `on_two_cores_a_worker_node_works_on_its_main_thread`: the runtime of `runyard worker` on
//!   up to 2 cores.
//! - `on_two_cores_the_api_node_answers_on_its_main_thread_and_batches_off_it`: the runtime of
//!   `serve --no-worker` on up to 2 cores, and where a batch submit's work runs.
//! - `an_idle_event_tail_says_it_failed_and_recovered_across_redis_outages`: an API node nobody
//!   listens to while Redis goes away twice: its event tail counts and logs each outage, says it
//!   reads again once Redis is back, and a stream opened after gets events.
//! - `a_steady_stream_of_single_jobs_is_claimed_several_at_a_time` and
//!   `a_full_slot_is_refilled_without_waiting_for_the_claim_interval`: `worker.claim_interval`.
//! - `a_cancelled_job_of_a_hung_worker_is_retried_only_once_its_process_is_gone` and its
//!   `..._while_starting_...` twin: a worker `SIGSTOP`ped with a cancelled job's process running
//!   (its start recorded, or not yet: `worker.quick_exit_wait` holds it back); the retry waits
//!   until another worker's reaper killed that process.
//!
//! Every wait is bounded; processes are killed by pid when the test ends (and by the kernel if
//! the test dies first).

mod redis_support;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runyard::job::{Job, JobStatus};
use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::{JobStore, ListQuery, Store};
use serde_json::{json, Value};
use uuid::Uuid;

use redis_support::TestRedis;

const MASTER_KEY: &str = "scale-test-master-key-0123456789abcdef";

/// A runyard process.
struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many lines of its log hold `text`.
    fn log_count(&self, text: &str) -> usize {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines().filter(|l| l.contains(text)).count()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(3000);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("--- {} log tail ---\n{}", self.name, &s[start..])
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    redis_url: String,
    prefix: String,
    port: u16,
    retention: String,
    global_limit: usize,
    procs: Vec<Proc>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn new(r: &TestRedis, retention: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            redis_url: r.url.clone(),
            prefix: r.prefix.clone(),
            port: free_port(),
            retention: retention.to_string(),
            global_limit: 100_000,
            procs: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn config(&self, name: &str) -> PathBuf {
        let d = self.dir.path();
        let text = format!(
            r#"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
data_dir = "{data}"
redis = "{redis}"
master_key = "{MASTER_KEY}"

[store]
prefix = "{prefix}"
retry = "30s"

[worker]
lease_ttl = "2s"
poll_interval = "200ms"
shutdown_grace = "2s"
kill_grace = "200ms"

[events]
progress_interval = "0s"
global_limit = {global_limit}

[retention]
{retention}

[[runners]]
name = "svc"
kind = "service"
types = ["runyard.*"]
concurrency = 64
max_attempts = 5

[[runners]]
name = "loc"
kind = "local"
types = ["loc.*"]
command = ["sleep", "0.1"]
concurrency = 8
max_attempts = 5

# Attempt 1 says its pid, then writes a line every 50 ms until killed; later attempts end.
[[runners]]
name = "stp"
kind = "local"
types = ["stp.*"]
command = ["/bin/sh", "-c", "echo started $JOB_ATTEMPT $$ >> {trace}; if [ $JOB_ATTEMPT = 1 ]; then while :; do echo tick >> {trace}.ticks; sleep 0.05; done; fi; echo done $JOB_ATTEMPT >> {trace}"]
"#,
            port = self.port,
            trace = d.join("trace").display(),
            data = d.join(format!("data-{name}")).display(),
            redis = self.redis_url,
            prefix = self.prefix,
            retention = self.retention,
            global_limit = self.global_limit,
        );
        let path = d.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        self.spawn_logging(name, args, "warn")
    }

    /// [`Cluster::spawn`] with this `RUNYARD_LOG` level.
    fn spawn_logging(&mut self, name: &str, args: &[&str], level: &str) -> usize {
        self.spawn_env(name, args, level, &[])
    }

    /// [`Cluster::spawn_logging`] with these environment variables.
    fn spawn_env(&mut self, name: &str, args: &[&str], level: &str, env: &[(&str, &str)]) -> usize {
        let cfg = self.config(name);
        let log = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
        cmd.args(args)
            .arg("--config")
            .arg(&cfg)
            .env("RUNYARD_LOG", level)
            .env_remove("RUNYARD_REDIS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f);
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("runyard starts");
        self.procs.push(Proc {
            child: Some(child),
            name: name.to_string(),
            log,
        });
        self.procs.len() - 1
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn wait_healthy(&self, http: &reqwest::Client) {
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.url())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "API never healthy\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn store(&self) -> Arc<RedisStore> {
        RedisStore::connect(RedisSettings {
            prefix: self.prefix.clone(),
            ..RedisSettings::new(self.redis_url.clone())
        })
        .await
        .expect("test connects to redis")
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Submits `bodies` with `conc` concurrent clients; returns the accepted ids (202) and the
/// number of refusals.
async fn submit_all(
    http: &reqwest::Client,
    url: &str,
    bodies: Vec<Value>,
    conc: usize,
) -> (Vec<String>, usize) {
    let bodies = Arc::new(parking_lot::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, url, bodies) = (http.clone(), url.to_string(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut refused = 0;
            loop {
                let Some(b) = bodies.lock().next() else { break };
                match http.post(format!("{url}/async/jobs")).json(&b).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let v: Value = r.json().await.unwrap();
                        ok.push(v["job_id"].as_str().unwrap().to_string());
                    }
                    _ => refused += 1,
                }
            }
            (ok, refused)
        }));
    }
    let mut ids = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (ok, r) = t.await.unwrap();
        ids.extend(ok);
        refused += r;
    }
    (ids, refused)
}

/// Submits `body` (202 asserted); returns the job's id.
async fn submit_one(http: &reqwest::Client, url: &str, body: Value) -> String {
    let r = http
        .post(format!("{url}/async/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    v["job_id"].as_str().unwrap().to_string()
}

/// Every job of the store (pages of 1000, bounded).
async fn all_jobs(s: &RedisStore) -> Vec<Job> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = s
            .list(ListQuery {
                limit: 1000,
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("listing did not end");
}

/// The JSON body of a GET of `url`.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn zcard(c: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(c)
        .await
        .unwrap_or(0)
}

/// Pids of the processes whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let pp = st
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            if pp == Some(ppid) {
                out.push(pid);
            }
        }
    }
    out
}

fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            matches!(state.as_deref(), Some("Z") | Some("X") | None)
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// No run of a job overlaps another (a run ends before the next is claimed).
fn assert_runs_do_not_overlap(j: &Job) {
    for w in j.runs.windows(2) {
        let end = w[0]
            .ended_at
            .unwrap_or_else(|| panic!("job {}: an earlier run never ended: {:?}", j.id, j.runs));
        assert!(
            end <= w[1].claimed_at,
            "job {}: run on {} overlaps run on {}: {:?}",
            j.id,
            w[0].worker,
            w[1].worker,
            j.runs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_survives_a_killed_worker() {
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    let wa = cl.spawn("worker-a", &["worker"]);
    cl.spawn("worker-b", &["worker"]);
    let n: usize = 2000;
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            if i % 5 == 0 {
                json!({"type": "loc.sleep"})
            } else {
                json!({"type": "runyard.sleep", "args": {"ms": 30}})
            }
        })
        .collect();
    let url = cl.url();
    let submitter = tokio::spawn({
        let http = http.clone();
        async move { submit_all(&http, &url, bodies, 16).await }
    });
    // Kill worker A once a quarter of the jobs are done, while it has work in hand.
    let mut rc = redis_conn(&cl.redis_url).await;
    let fin = format!("{}:fin", cl.prefix);
    let start = Instant::now();
    loop {
        let done = zcard(&mut rc, &fin).await;
        if done as usize >= n / 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {done} done\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_pid = cl.procs[wa].pid();
    // Its children (the spawners) and theirs (the local jobs they started).
    let mut kids = children_of(a_pid);
    let jobs: Vec<u32> = kids.iter().flat_map(|&k| children_of(k)).collect();
    kids.extend(jobs);
    cl.procs[wa].kill9();
    let killed_at = Instant::now();
    // None of them must live on.
    loop {
        let alive: Vec<u32> = kids.iter().copied().filter(|p| !pid_gone(*p)).collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(3),
            "children of the killed worker live on: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ids, refused) = submitter.await.unwrap();
    assert_eq!(refused, 0, "every submit accepted");
    assert_eq!(ids.len(), n);
    // Every job ends.
    let store = cl.store().await;
    let start = Instant::now();
    loop {
        let done = zcard(&mut rc, &fin).await;
        if done as usize >= n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "only {done} of {n} jobs finished\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), n, "no job lost, none duplicated");
    let want: HashSet<String> = ids.into_iter().collect();
    let got: HashSet<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    assert_eq!(want, got);
    let mut lost_runs = 0;
    let mut workers = HashSet::new();
    for j in &jobs {
        assert_eq!(
            j.status,
            JobStatus::Success,
            "job {} ended {}: {:?}",
            j.id,
            j.status,
            j.error
        );
        assert_runs_do_not_overlap(j);
        lost_runs += j
            .runs
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("LOST"))
            .count();
        workers.extend(j.runs.iter().map(|r| r.worker.clone()));
    }
    eprintln!(
        "scale-out: {n} jobs, {} workers seen, {lost_runs} runs lost with the killed worker and redone, {kids} child processes of it killed",
        workers.len(),
        kids = kids.len()
    );
    assert!(workers.len() >= 2, "both workers ran jobs");
    assert!(lost_runs > 0, "the killed worker had jobs in hand");
}

/// A job cancelled while its worker is hung (`SIGSTOP`: its job's process, in a session of its
/// own, runs on) is retried only once another worker has made sure that process is gone: after
/// the lease ran out, that worker's reaper kills it (same machine) and gives the lease up. The
/// second attempt never runs beside the first; the hung worker, resumed, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_of_a_hung_worker_is_retried_only_once_its_process_is_gone() {
    cancelled_on_a_hung_worker(false).await;
}

/// The same with the worker hung while the job is `STARTING`: it launched the process but had
/// not recorded its handle (its `worker.quick_exit_wait` of 60 s holds the start back). Worker
/// B's reaper finds the process by its `JOB_ID` and `JOB_ATTEMPT` on the machine worker A's id
/// names, kills it, and only then is the retry accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_while_starting_on_a_hung_worker_is_retried_only_once_its_process_is_gone()
{
    cancelled_on_a_hung_worker(true).await;
}

/// Worker A runs attempt 1 of an `stp.x` job and is `SIGSTOP`ped, when `starting` before it
/// recorded the start, else once the job is `RUNNING`; the job is cancelled; the retry must
/// wait until worker B has made sure attempt 1's process is gone.
async fn cancelled_on_a_hung_worker(starting: bool) {
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    let linger: &[(&str, &str)] = if starting {
        &[("RUNYARD_WORKER__QUICK_EXIT_WAIT", "60s")]
    } else {
        &[]
    };
    let wa = cl.spawn_env("worker-a", &["worker"], "warn", linger);
    let (url, trace) = (cl.url(), cl.dir.path().join("trace"));
    let ticks = cl.dir.path().join("trace.ticks");
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let id = submit_one(&http, &url, json!({"type": "stp.x"})).await;
    let job_url = format!("{url}/async/jobs/{id}");
    let start = Instant::now();
    let pid: u32 = loop {
        let t = read(&trace);
        if let Some(p) = t.strip_prefix("started 1 ") {
            break p.trim().parse().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "attempt 1 never started\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if starting {
        // Launched, its start (and the handle naming the process) not recorded.
        let j = get_json(&http, &job_url).await;
        assert_eq!(
            (&j["status"], &j["handle"]),
            (&json!("STARTING"), &Value::Null),
            "{j}"
        );
    } else {
        // Its start recorded (RUNNING: the handle, which names the process, is stored).
        let start = Instant::now();
        while get_json(&http, &job_url).await["status"] != "RUNNING" {
            assert!(start.elapsed() < Duration::from_secs(30), "never RUNNING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cl.spawn("worker-b", &["worker"]);
    let a_pid = cl.procs[wa].pid() as i32;
    unsafe {
        libc::kill(a_pid, libc::SIGSTOP);
    }
    let r = http.post(format!("{job_url}/cancel")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Refused while attempt 1 may run (its lease of 2 s holds, then until worker B's reaper
    // has killed it), accepted then.
    let start = Instant::now();
    let mut refused = 0;
    loop {
        let r = http.post(format!("{job_url}/retry")).send().await.unwrap();
        if r.status().as_u16() == 202 {
            break;
        }
        let body: Value = r.json().await.unwrap();
        assert!(body.to_string().contains("still being stopped"), "{body}");
        refused += 1;
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the retry never accepted\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused > 0, "the first retry came while attempt 1 ran");
    assert!(pid_gone(pid), "attempt 1 (pid {pid}) runs beside the retry");
    let n = read(&ticks).lines().count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(&ticks).lines().count(), n, "attempt 1 still writes");
    // Attempt 2 runs (on worker B) and ends; worker A, resumed, changes nothing.
    let start = Instant::now();
    let job = loop {
        let j = get_json(&http, &job_url).await;
        if j["status"] == "SUCCESS" {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "attempt 2 never ended: {j}\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["attempt"], 2, "{job}");
    unsafe {
        libc::kill(a_pid, libc::SIGCONT);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let j = get_json(&http, &job_url).await;
    assert_eq!(
        (&j["status"], &j["attempt"]),
        (&json!("SUCCESS"), &json!(2)),
        "{j}"
    );
    let t = read(&trace);
    assert_eq!(t.matches("started").count(), 2, "{t}");
    assert!(t.contains("done 2"), "{t}");
}

/// A rolling update to compact job records (`store.records`, docs/redis.md): the API node
/// writes the job's JSON (the default), the worker node the compact form
/// (`RUNYARD_STORE__RECORDS=compact`). Every job runs once and ends; the records the worker
/// wrote last are compact and under 40% of the JSON's size; the API node reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_writing_json_and_compact_job_records_share_the_jobs() {
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    // Submitted before any worker runs: written by the API node only.
    let (queued, _) = submit_all(&http, &cl.url(), vec![json!({"type": "runyard.noop"})], 1).await;
    let mut rc = redis_conn(&cl.redis_url).await;
    let (prefix, conn) = (cl.prefix.clone(), rc.clone());
    let record = move |id: String| {
        let key = format!("{prefix}:job:{id}");
        let mut rc = conn.clone();
        async move {
            redis::cmd("HGET")
                .arg(&key)
                .arg("b")
                .query_async::<String>(&mut rc)
                .await
                .expect("record")
        }
    };
    let json_record = record(queued[0].clone()).await;
    assert!(json_record.starts_with(r#"{"id":"#), "{json_record}");
    cl.spawn_env(
        "worker",
        &["worker"],
        "warn",
        &[("RUNYARD_STORE__RECORDS", "compact")],
    );
    let n = 200;
    let bodies = (0..n)
        .map(|i| json!({"type": "runyard.noop", "args": {"i": i}}))
        .collect();
    let (mut ids, refused) = submit_all(&http, &cl.url(), bodies, 8).await;
    assert_eq!(refused, 0);
    ids.extend(queued);
    let fin = format!("{}:fin", cl.prefix);
    let start = Instant::now();
    while (zcard(&mut rc, &fin).await as usize) < ids.len() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "jobs left unfinished\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = cl.store().await;
    let (mut rec_bytes, mut json_bytes) = (0, 0);
    for id in &ids {
        let r = http
            .get(format!("{}/async/jobs/{id}", cl.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "SUCCESS", "{v}");
        assert_eq!(v["attempt"], 1, "{v}");
        let rec = record(id.clone()).await;
        assert!(rec.starts_with(r#"{"i":"#), "{rec}");
        let job: Job = store
            .get(id.parse().unwrap())
            .await
            .unwrap()
            .expect("stored");
        let json_len = serde_json::to_string(&job).unwrap().len();
        (rec_bytes, json_bytes) = (rec_bytes + rec.len(), json_bytes + json_len);
        assert!(
            rec.len() * 5 < json_len * 2,
            "{} against {json_len}: {rec}",
            rec.len()
        );
    }
    let listed = get_json(
        &http,
        &format!("{}/async/jobs?status=SUCCESS&limit=1000", cl.url()),
    )
    .await;
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(ids.len()),
        "{listed}"
    );
    eprintln!(
        "job records: {} bytes compact against {} bytes of JSON on average",
        rec_bytes / ids.len(),
        json_bytes / ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_no_accepted_job() {
    let mut redis = TestRedis::private(&["--appendonly", "yes", "--save", ""]);
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    cl.spawn("worker-a", &["worker"]);
    cl.spawn("worker-b", &["worker"]);
    let n = 600;
    let bodies: Vec<Value> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                json!({"type": "loc.sleep"})
            } else {
                json!({"type": "runyard.sleep", "args": {"ms": 20}})
            }
        })
        .collect();
    let url = cl.url();
    // A steady stream of submits, so some arrive while Redis is away.
    let submitter = tokio::spawn({
        let http = http.clone();
        async move {
            let mut ids = Vec::new();
            let mut refused = 0;
            for chunk in bodies.chunks(20) {
                let (ok, r) = submit_all(&http, &url, chunk.to_vec(), 4).await;
                ids.extend(ok);
                refused += r;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (ids, refused)
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.stop();
    // Health says what is wrong, quickly, while Redis is away.
    let t = Instant::now();
    let r = http
        .get(format!("{}/health", cl.url()))
        .send()
        .await
        .expect("health answers");
    let took = t.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["store"], "redis");
    assert!(
        body["error"].as_str().unwrap_or("").contains("redis"),
        "{body}"
    );
    assert!(took < Duration::from_secs(3), "health took {took:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let (ids, refused) = submitter.await.unwrap();
    assert!(!ids.is_empty());
    eprintln!(
        "restart: {} accepted, {refused} refused while redis was away",
        ids.len()
    );
    cl.wait_healthy(&http).await;
    if std::env::var("RUNYARD_TEST_SHOW_LOGS").is_ok() {
        eprintln!("{}", cl.logs());
    }
    let store = cl.store().await;
    let start = Instant::now();
    let mut pending: Vec<Uuid> = ids.iter().map(|s| Uuid::parse_str(s).unwrap()).collect();
    loop {
        let mut still = Vec::new();
        for id in &pending {
            match store.get(*id).await.unwrap() {
                Some(j) if j.status.is_terminal() => {
                    assert_eq!(j.status, JobStatus::Success, "job {id}: {:?}", j.error);
                    assert_runs_do_not_overlap(&j);
                }
                Some(_) => still.push(*id),
                None => panic!("accepted job {id} lost"),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} accepted jobs not finished\n{}",
            pending.len(),
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn used_memory(r: &TestRedis) -> u64 {
    r.info("used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dbsize(r: &TestRedis) -> u64 {
    r.cli(&["DBSIZE"]).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_flat() {
    let total: usize = std::env::var("RUNYARD_MEMORY_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .clamp(1000, 1_000_000);
    let rounds = 5;
    let per_round = total / rounds;
    // A private server, so its memory figures are ours alone.
    let redis = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let mut cl = Cluster::new(
        &redis,
        "finished = \"1s\"\ninterval = \"500ms\"\nevents = \"2s\"\nlog_lines_per_job = 100",
    );
    // Short retention of the global stream too (it is bounded by count).
    cl.global_limit = 5000;
    let api = cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    let w = cl.spawn("worker-a", &["worker"]);
    let mut rc = redis_conn(&cl.redis_url).await;
    let all = format!("{}:all", cl.prefix);
    let mut rows = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let bodies = vec![json!({"type": "runyard.noop"}); per_round];
        let (ids, refused) = submit_all(&http, &cl.url(), bodies, 32).await;
        assert_eq!(refused, 0);
        assert_eq!(ids.len(), per_round);
        // Wait until retention removed every job of the round (and their channel streams expired).
        let start = Instant::now();
        loop {
            let left = zcard(&mut rc, &all).await;
            if left == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "{left} jobs never went away\n{}",
                cl.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let row = (
            round,
            used_memory(&redis),
            dbsize(&redis),
            rss_kib(cl.procs[api].pid()),
            rss_kib(cl.procs[w].pid()),
        );
        eprintln!(
            "memory: round {} ({} jobs so far, {:.0}s): redis used_memory {} KiB, keys {}, api RSS {} KiB, worker RSS {} KiB",
            row.0 + 1,
            (round + 1) * per_round,
            started.elapsed().as_secs_f64(),
            row.1 / 1024,
            row.2,
            row.3,
            row.4
        );
        rows.push(row);
    }
    let first = rows[0];
    let last = rows[rows.len() - 1];
    // Flat: the last round ends where the first did (allowing allocator noise).
    assert!(last.2 <= first.2 + 5, "keys grew: {rows:?}");
    assert!(
        last.1 <= first.1 + first.1 / 2 + 2 * 1024 * 1024,
        "redis memory grew: {rows:?}"
    );
    assert!(
        last.3 <= first.3 + first.3 / 2 + 32 * 1024,
        "api RSS grew: {rows:?}"
    );
    assert!(
        last.4 <= first.4 + first.4 / 2 + 32 * 1024,
        "worker RSS grew: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_claimers_reservation_is_requeued() {
    let redis = TestRedis::start();
    let store = RedisStore::connect(RedisSettings {
        prefix: redis.prefix.clone(),
        ..RedisSettings::new(redis.url.clone())
    })
    .await
    .unwrap();
    let s: Arc<dyn Store> = store.clone();
    let job = redis_support::queued_job("r");
    let (id, now) = (job.id, job.created_at);
    s.submit(job.clone()).await.unwrap();
    // This process hears other processes' notices (its subscription is up), so a claim that
    // finds the queue empty is remembered as empty (src/store/redis/hints.rs) and the reaper's
    // requeue below must be known here at once, not only when its notice comes back.
    let peer = RedisStore::connect(RedisSettings {
        prefix: redis.prefix.clone(),
        ..RedisSettings::new(redis.url.clone())
    })
    .await
    .unwrap();
    let mut rx = s.subscribe();
    let heard = async {
        loop {
            let other = Job {
                id: Uuid::now_v7(),
                runner: "other".into(),
                ..job.clone()
            };
            peer.submit(other).await.unwrap();
            let wait = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    n = rx.recv() => {
                        if matches!(n, Ok(runyard::store::Notice::Queued { ref runner }) if runner == "other") {
                            return;
                        }
                    }
                    _ = &mut wait => break,
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .expect("the notice subscription comes up");
    // A worker runs the claim script, then dies before it saves the claim.
    let mut c = redis_conn(&redis.url).await;
    let claim = redis::Script::new(include_str!("../src/store/redis/lua/claim.lua"));
    let picked: Vec<redis::Value> = claim
        .prepare_invoke()
        .key(format!("{}:q:r", redis.prefix))
        .key(format!("{}:token", redis.prefix))
        .key(format!("{}:lease", redis.prefix))
        .arg("max")
        .arg(10)
        .arg("until")
        .arg(now + 1000)
        .arg("jobp")
        .arg(format!("{}:job:", redis.prefix))
        .invoke_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        picked.len(),
        5,
        "one job picked (first token, popped, id, version, body)"
    );
    assert!(s
        .claim("r", "w2", 10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The reaper's pass puts it back; it is not an active job, so it is not returned.
    assert!(s.expired(100).await.unwrap().is_empty());
    let got = s
        .claim("r", "w2", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(got[0].attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_replays_are_refused_across_api_nodes() {
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api-1", &["serve", "--no-worker"]);
    let port2 = free_port();
    let listen2 = format!("127.0.0.1:{port2}");
    cl.spawn("api-2", &["serve", "--no-worker", "--listen", &listen2]);
    let http = http();
    cl.wait_healthy(&http).await;
    let url2 = format!("http://{listen2}");
    let start = Instant::now();
    while !matches!(http.get(format!("{url2}/health")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "api-2 never healthy\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No worker: the job stays QUEUED, so an authenticated report is refused with 409.
    let id = submit_one(&http, &cl.url(), json!({"type": "loc.sleep"})).await;
    let secret = runyard_hooks::derive_job_secret(MASTER_KEY.as_bytes(), &id, 0);
    let body = br#"{"progress": 0.5}"#;
    let report = |base: String, headers: reqwest::header::HeaderMap| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/async/status"))
                .headers(headers)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let signed = runyard_hooks::signed_headers_now(
        &id,
        &secret,
        runyard_hooks::SigVersion::V2,
        "POST",
        "/async/status",
        body,
    )
    .unwrap();
    let (st, v) = report(cl.url(), signed.clone()).await;
    assert_eq!(st, 409, "authenticated on api-1: {v}");
    // The very same request on the other API node is a replay.
    let (st, v) = report(url2.clone(), signed).await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["error"]["code"], "replay", "{v}");
    // A fresh signature is fine there.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let fresh = runyard_hooks::signed_headers_now(
        &id,
        &secret,
        runyard_hooks::SigVersion::V2,
        "POST",
        "/async/status",
        body,
    )
    .unwrap();
    let (st, v) = report(url2, fresh).await;
    assert_eq!(st, 409, "{v}");
}

/// A process refreshes a channel's TTL at most once per 1/64 of `retention.events` (see
/// `RedisStore::ttl_due`): every channel stream (`store.channel_events` "stream", the default)
/// or list ("list") still gets its TTL, and every event its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_stream_expires_though_refreshes_are_skipped() {
    for lists in [false, true] {
        let redis = TestRedis::start();
        let store = RedisStore::connect(RedisSettings {
            prefix: redis.prefix.clone(),
            channel_lists: lists,
            ..RedisSettings::new(redis.url.clone())
        })
        .await
        .unwrap();
        assert_eq!(store.settings().channel_ttl, Duration::from_secs(24 * 3600));
        let s: Arc<dyn Store> = store.clone();
        let now = runyard::job::now_us();
        for chan in ["a", "a", "a", "b"] {
            let job = Job {
                channel_id: chan.into(),
                ..Job::new("t", "r", now)
            };
            s.submit(job).await.unwrap();
        }
        let mut c = redis_conn(&redis.url).await;
        let (kind, len_cmd) = if lists {
            ("evl", "LLEN")
        } else {
            ("evc", "XLEN")
        };
        for (chan, n) in [("a", 3), ("b", 1)] {
            let key = format!("{}:{kind}:{chan}", redis.prefix);
            let len: u64 = redis::cmd(len_cmd)
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(len, n, "every event in the channel's {kind} {chan}");
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(
                ttl > 23 * 3600 * 1000 && ttl <= 24 * 3600 * 1000,
                "channel {chan} ({kind}): PTTL {ttl} ms"
            );
        }
    }
}

/// CPU time (utime + stime, in clock ticks) in a `/proc` stat file: a thread's, or a process's
/// (all its threads, those that have ended too).
fn stat_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(14) + n(15)
}

/// CPU time of `pid`'s thread `tid`.
fn thread_ticks(pid: u32, tid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/task/{tid}/stat"))
}

/// CPU time of the process `pid`, every thread it ran (a blocking-pool thread that has ended
/// too), so it only grows.
fn process_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// On a machine of up to 2 cores a worker node runs on one thread, its main one (`top -H` shows
/// it): it shares the cores with redis-server, the API and the other nodes, and a second
/// runtime thread only cost wake-ups (docs/benchmarks.md "Session 14: redis"). Jobs run and
/// finish as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_cores_a_worker_node_works_on_its_main_thread() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    let w = cl.spawn("worker-a", &["worker"]);
    let n = 600;
    let bodies = (0..n)
        .map(|_| json!({"type": "runyard.sleep", "args": {"ms": 0}}))
        .collect();
    let (ids, refused) = submit_all(&http, &cl.url(), bodies, 8).await;
    assert_eq!((ids.len(), refused), (n, 0), "{}", cl.logs());
    let store = cl.store().await;
    let start = Instant::now();
    loop {
        let jobs = all_jobs(&store).await;
        let done = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Success)
            .count();
        if done == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{done} of {n} done\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = cl.procs[w].pid();
    let (main, all) = (thread_ticks(pid, pid), process_ticks(pid));
    assert!(all > 0, "the worker node used no CPU time");
    if cores <= 2 {
        assert!(
            main * 10 >= all * 6,
            "the worker node: its main thread did {main} of its {all} ticks of CPU: it should do the work"
        );
    } else {
        assert!(
            main * 2 < all,
            "the worker node: on {cores} cores the multi-thread runtime's workers do the work ({main} of {all})"
        );
    }
}

/// On a machine of up to 2 cores the API node on Redis (`serve --no-worker`) answers on one
/// thread, its main one: it shares the cores with redis-server and the worker nodes, and the
/// multi-thread runtime's second thread only cost wake-ups (docs/benchmarks.md "Session 15:
/// redis (the API node)"). A batch submit's work (parsing, checks, writes, answer) runs on a
/// thread of the blocking pool, so the main thread keeps answering. Every submit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_cores_the_api_node_answers_on_its_main_thread_and_batches_off_it() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    let api = cl.spawn("api", &["serve", "--no-worker"]);
    let http = http();
    cl.wait_healthy(&http).await;
    let pid = cl.procs[api].pid();
    // Single submits (no worker node: the jobs wait in the queue).
    let n = 3000;
    let bodies = (0..n)
        .map(|_| json!({"type": "runyard.sleep", "args": {"ms": 0}}))
        .collect();
    let (ids, refused) = submit_all(&http, &cl.url(), bodies, 4).await;
    assert_eq!((ids.len(), refused), (n, 0), "{}", cl.logs());
    let (main, all) = (thread_ticks(pid, pid), process_ticks(pid));
    assert!(all > 0, "the API node used no CPU time");
    // Batches of 1,000.
    for b in 0..20 {
        let jobs: Vec<Value> = (0..1000)
            .map(|_| json!({"type": "runyard.sleep", "args": {"ms": 0}}))
            .collect();
        let r = http
            .post(format!("{}/async/jobs/batch", cl.url()))
            .json(&json!({ "jobs": jobs }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "batch {b}\n{}", cl.logs());
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["accepted"].as_u64(), v["failed"].as_u64()),
            (Some(1000), Some(0)),
            "{v}"
        );
    }
    let (batch_main, batch_all) = (
        thread_ticks(pid, pid).saturating_sub(main),
        process_ticks(pid).saturating_sub(all),
    );
    assert!(batch_all > 0, "the batches used no CPU time");
    if cores <= 2 {
        assert!(
            main * 10 >= all * 6,
            "the API node: its main thread did {main} of its {all} ticks of CPU: it should answer"
        );
        assert!(
            batch_main * 2 < batch_all,
            "the API node: its main thread did {batch_main} of the batches' {batch_all} ticks: \
             a batch's work should run off it"
        );
    } else {
        assert!(
            main * 2 < all,
            "the API node: on {cores} cores the multi-thread runtime's workers answer ({main} of {all})"
        );
    }
}

/// Waits (bounded) until the API node's log holds `text` `n` times.
async fn until_logged(cl: &Cluster, api: usize, text: &str, n: usize, bound: Duration) {
    let start = Instant::now();
    while cl.procs[api].log_count(text) < n {
        assert!(
            start.elapsed() < bound,
            "`{text}` not logged {n} times within {bound:?}\n{}",
            cl.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `runyard_event_tail_errors_total` of the node at `url`.
async fn tail_errors(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("runyard_event_tail_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no runyard_event_tail_errors_total in\n{text}"))
}

/// An API node with no stream open (its event tail idle: it only reads the newest event id)
/// while Redis goes away and comes back, twice. What an operator sees: each outage warned once
/// in the log ("read failed") and counted (`runyard_event_tail_errors_total`), and "reading
/// again" once Redis is back, while still nobody listens (the idle tail resets its failure
/// state on a good newest-id read, commit bc7ba8e: before, it stayed "failing", so it never
/// said it read again and the second outage was not warned); then a stream opened after the
/// outages gets the events committed from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_event_tail_says_it_failed_and_recovered_across_redis_outages() {
    const FAILED: &str = "event tail: read failed; retrying";
    const AGAIN: &str = "event tail: reading again";
    let mut redis = TestRedis::private(&["--appendonly", "yes", "--save", ""]);
    let mut cl = Cluster::new(&redis, "");
    let api = cl.spawn_logging("api", &["serve", "--no-worker"], "info");
    let http = http();
    cl.wait_healthy(&http).await;
    let url = cl.url();
    assert_eq!(tail_errors(&http, &url).await, 0);
    for outage in 1..=2 {
        // Nobody listens: the tail paces on the newest id (every 250 ms).
        tokio::time::sleep(Duration::from_millis(600)).await;
        redis.stop();
        until_logged(&cl, api, FAILED, outage, Duration::from_secs(15)).await;
        // A few failed reads, backed off (100 ms, 200 ms, ...).
        tokio::time::sleep(Duration::from_millis(1000)).await;
        redis.restart();
        cl.wait_healthy(&http).await;
        until_logged(&cl, api, AGAIN, outage, Duration::from_secs(15)).await;
        let errors = tail_errors(&http, &url).await;
        assert!(
            errors >= outage as u64,
            "outage {outage}: {errors} tail errors counted"
        );
        assert_eq!(
            cl.procs[api].log_count(FAILED),
            outage,
            "warned once per outage"
        );
    }
    // A stream opened now gets what is committed from now on, through the tail.
    let mut sse = http
        .get(format!("{url}/async/events/sse"))
        .send()
        .await
        .expect("sse opens");
    assert_eq!(sse.status(), 200);
    let r = http
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": "runyard.noop", "channel": "after-the-outages"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["job_id"]
        .as_str()
        .expect("job_id")
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while !text.contains(&id) {
        let chunk = tokio::time::timeout_at(deadline, sse.chunk())
            .await
            .unwrap_or_else(|_| panic!("no event of {id} on the stream: {text}\n{}", cl.logs()))
            .expect("the stream reads")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("QUEUED"), "{text}");
}

/// Runs `n` no-op jobs one at a time (one producer) through an API node and two worker nodes
/// spawned with `env`; asserts each ends SUCCESS after one run, and returns the script calls
/// (`EVALSHA`) Redis ran per job.
async fn one_at_a_time(env: &[(&str, &str)], n: usize) -> f64 {
    let redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    cl.spawn_env("api", &["serve", "--no-worker"], "warn", env);
    let http = http();
    cl.wait_healthy(&http).await;
    cl.spawn_env("worker-a", &["worker"], "warn", env);
    cl.spawn_env("worker-b", &["worker"], "warn", env);
    // Both worker nodes up, idle and waiting: a first job each way.
    let url = cl.url();
    let wait_done = |id: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let start = Instant::now();
            loop {
                let j = get_json(&http, &format!("{url}/async/jobs/{id}")).await;
                if j["status"] == "SUCCESS" {
                    return j;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "{j:#}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let submit = || async {
        let (ids, refused) =
            submit_all(&http, &url, vec![json!({"type": "runyard.noop"})], 1).await;
        assert_eq!(refused, 0);
        ids.into_iter().next().unwrap()
    };
    for _ in 0..4 {
        wait_done(submit().await).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The nodes' own loops (reaper, promotions, schedules...) run scripts too, per second, not
    // per job: their rate, measured idle, is taken out of the jobs' window (on a loaded machine
    // that window is longer, and they would count more per job).
    let idle = Instant::now();
    let before = redis_support::calls(&redis.url, &["evalsha"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let background = (redis_support::calls(&redis.url, &["evalsha"]).await - before) as f64
        / idle.elapsed().as_secs_f64();
    let began = Instant::now();
    let before = redis_support::calls(&redis.url, &["evalsha"]).await;
    for _ in 0..n {
        let j = wait_done(submit().await).await;
        let runs = j["runs"].as_array().expect("runs");
        assert_eq!((runs.len(), &j["attempt"]), (1, &json!(1)), "{j:#}");
    }
    let after = redis_support::calls(&redis.url, &["evalsha"]).await;
    let jobs = (after - before) as f64 - background * began.elapsed().as_secs_f64();
    eprintln!(
        "background {background:.1} script calls/s over {:?}",
        began.elapsed()
    );
    jobs / n as f64
}

/// One producer, one job at a time, two worker nodes (`scripts/redis-bench.sh 2 --connections
/// 1`): an idle worker node parks in Redis and each submit hands its job over to it
/// (src/store/redis/handover.rs), so a job costs the submit, the claim's commit and the start
/// with its finish: about 3 script calls, where the submit's announcement, a claim from each
/// woken node and the claim's commit made about 5 (docs/benchmarks.md, "Session 29"). Without
/// it (the default), the same jobs take the old way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_at_a_time_is_handed_over_to_a_parked_worker_node() {
    let on = one_at_a_time(&[("RUNYARD_REDIS_HANDOVER", "on")], 150).await;
    let off = one_at_a_time(&[("RUNYARD_REDIS_HANDOVER", "off")], 150).await;
    eprintln!("script calls per job: hand-over {on:.2}, without {off:.2}");
    assert!(on < 3.6, "{on:.2} script calls per job with hand-over");
    assert!(off > 4.0, "{off:.2} script calls per job without");
}

/// The job once it is SUCCESS (bounded wait).
async fn until_success(store: &RedisStore, id: Uuid) -> Job {
    let start = Instant::now();
    loop {
        let j = store.get(id).await.unwrap().expect("the job");
        if j.status == JobStatus::Success {
            return j;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An API node and one worker node with `worker.claim_interval = "1s"`.
async fn paced_cluster(redis: &TestRedis) -> (Cluster, reqwest::Client) {
    let mut cl = Cluster::new(redis, "");
    let env = [("RUNYARD_WORKER__CLAIM_INTERVAL", "1s")];
    cl.spawn_env("api", &["serve", "--no-worker"], "warn", &env);
    let http = http();
    cl.wait_healthy(&http).await;
    cl.spawn_env("worker", &["worker"], "warn", &env);
    (cl, http)
}

/// `worker.claim_interval` (src/worker/claims.rs) with one producer: a worker node whose last claim
/// took one job claims again only once the interval has passed since it, so the jobs submitted
/// one at a time meanwhile are claimed together (one claim, two if the submits straddle it); a
/// job submitted after a quiet spell (only polls and job ends since) is claimed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_single_jobs_is_claimed_several_at_a_time() {
    let redis = TestRedis::start();
    let (cl, http) = paced_cluster(&redis).await;
    let (url, store) = (cl.url(), cl.store().await);
    let submit = || async {
        let (ids, refused) =
            submit_all(&http, &url, vec![json!({"type": "runyard.noop"})], 1).await;
        assert_eq!(refused, 0);
        Uuid::parse_str(&ids[0]).unwrap()
    };
    let done = |id: Uuid| until_success(&store, id);
    let claimed_at = |j: &Job| j.runs.last().expect("a run").claimed_at;
    // A first job: its claim took one job, so the next claim comes a second after it.
    let first = done(submit().await).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(submit().await);
    }
    let mut claims = HashSet::new();
    for id in ids {
        let j = done(id).await;
        assert_eq!(j.runs.len(), 1, "{j:?}");
        let at = claimed_at(&j);
        assert!(
            at >= claimed_at(&first) + 950_000,
            "claimed {} ms after the claim before it, within the 1s interval",
            (at - claimed_at(&first)) / 1000
        );
        claims.insert(at);
    }
    // The jobs of one claim share its time.
    assert!(claims.len() <= 2, "{} claims for 10 jobs", claims.len());
    // Quiet for longer than the interval: the next job is claimed at once.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let id = submit().await;
    let j = done(id).await;
    let waited = claimed_at(&j) - j.created_at;
    // (The polls and job ends that found nothing start no wait: if they did, it would wait for
    // the rest of a second after the last of them, about 700 ms here.)
    assert!(
        waited < 400_000,
        "claimed {} ms after its submit",
        waited / 1000
    );
}

/// `worker.claim_interval` does not hold back a slot's refill: a claim that filled its slot took
/// all it could, so the next claim (when a job of the slot ends) comes at once. 16 jobs of 100
/// ms on 8 places: the second 8 are claimed as the first end, not a second apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slot_is_refilled_without_waiting_for_the_claim_interval() {
    let redis = TestRedis::start();
    let (cl, http) = paced_cluster(&redis).await;
    let (url, store) = (cl.url(), cl.store().await);
    // One batch: all 16 QUEUED at once, so the first claim fills the 8 places.
    let jobs = vec![json!({"type": "loc.sleep"}); 16];
    let r = http
        .post(format!("{url}/async/jobs/batch"))
        .json(&json!({ "jobs": jobs }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 16, "{v:#}");
    let ids: Vec<String> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["job_id"].as_str().expect("a job id").to_string())
        .collect();
    let mut claims = Vec::new();
    for id in ids {
        let j = until_success(&store, Uuid::parse_str(&id).unwrap()).await;
        assert_eq!(j.runs.len(), 1, "{j:?}");
        claims.push(j.runs[0].claimed_at);
    }
    claims.sort_unstable();
    let gaps: Vec<i64> = claims.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    assert!(
        gaps.iter().all(|&g| g < 900),
        "ms between claims, sorted: {gaps:?}"
    );
}

/// While Redis refuses connections, a submit is answered 503 once `store.retry` has run out, with
/// what went wrong (the connection's last error: a broken pipe, a refused reconnect; not only
/// "no answer", which is all a try cut by its timeout knows), and nothing is stored: once
/// Redis is back the store holds no job and the same submit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_a_submit_is_refused_saying_why() {
    let mut redis = TestRedis::start();
    let mut cl = Cluster::new(&redis, "");
    let env = [("RUNYARD_STORE__RETRY", "1s")];
    cl.spawn_env("api", &["serve", "--no-worker"], "warn", &env);
    let http = http();
    cl.wait_healthy(&http).await;
    redis.stop();
    let submit = || async {
        let body = json!({"type": "runyard.sleep", "args": {"ms": 1}});
        let url = format!("{}/async/jobs", cl.url());
        http.post(url)
            .json(&body)
            .send()
            .await
            .expect("the API answers")
    };
    let r = submit().await;
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("redis: ") && !msg.starts_with("redis: no answer"),
        "the 503 names the connection's error: {msg}"
    );
    redis.restart();
    cl.wait_healthy(&http).await;
    let store = cl.store().await;
    assert!(all_jobs(&store).await.is_empty(), "a 503 stores nothing");
    let r = submit().await;
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
}
