//! The server log as an operator reads it: a real `runyard serve` process with its stderr
//! captured. One `job ended` line per job (type, id, attempt, status, duration, exit code or
//! error), a warning per retried attempt, `--log-format json` one JSON object per line with the
//! job's `job_id`, `type` and `attempt` on every line about a job, and no colour codes when stderr
//! is not a terminal.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");

const CONFIG: &str = r#"
[worker]
poll_interval = "100ms"
kill_grace = "200ms"
exit_grace = "200ms"

[[runners]]
kind = "local"
types = ["sh.*"]
command = ["/bin/sh", "-c", "echo working; case \"$JOB_TYPE\" in sh.fail) exit 3;; sh.hold) sleep 30;; esac"]
max_attempts = 2
backoff = { initial_ms = 100, max_ms = 100, multiplier = 1.0, jitter = false }

[[runners]]
kind = "local"
types = ["absent.*"]
command = ["/nonexistent/runyard-no-such-program", "arg"]
max_attempts = 3
backoff = { initial_ms = 100, max_ms = 100, multiplier = 1.0, jitter = false }

[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

struct Server {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(args: &[&str]) -> Server {
    serve_with("", args)
}

/// [`serve`] with more configuration after [`CONFIG`].
fn serve_with(extra: &str, args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(&cfg, format!("{extra}\n{CONFIG}")).unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let child = Command::new(BIN)
        .args(args)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUNYARD_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn submit(s: &Server, ty: &str) -> String {
    submit_body(s, json!({"type": ty})).await
}

/// Submits `body`; the job's id.
async fn submit_body(s: &Server, body: Value) -> String {
    let v: Value = http()
        .post(format!("{}/async/jobs", s.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["job_id"].as_str().expect("job_id").to_string()
}

async fn job(s: &Server, id: &str) -> Value {
    http()
        .get(format!("{}/async/jobs/{id}", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_status(s: &Server, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = job(s, id).await;
        if want.contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} never {want:?}: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one job of each outcome; returns (id, expected status) per job.
async fn run_jobs(s: &Server) -> Vec<(String, &'static str)> {
    let ok = submit(s, "sh.ok").await;
    let fail = submit(s, "sh.fail").await;
    let service = submit(s, "runyard.noop").await;
    let hold = submit(s, "sh.hold").await;
    wait_status(s, &hold, &["RUNNING"]).await;
    let r = http()
        .post(format!("{}/async/jobs/{hold}/cancel", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let out = vec![
        (ok, "SUCCESS"),
        (fail, "ERROR"),
        (service, "SUCCESS"),
        (hold, "CANCELLED"),
    ];
    for (id, st) in &out {
        wait_status(s, id, &[st]).await;
    }
    // Let the worker write its last lines (the cancelled process being stopped): until the log
    // has an outcome line for each job, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&s.log).unwrap_or_default();
        if out.iter().all(|(id, _)| {
            text.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("job ended"))
        }) || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And a moment more, so that a second outcome line (the worker's, once it has stopped the
    // cancelled process) would be caught.
    tokio::time::sleep(Duration::from_millis(800)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_has_one_outcome_line_per_job_and_the_job_on_every_job_line() {
    let s = serve(&["--log-format", "json"]);
    let jobs = run_jobs(&s).await;
    let text = std::fs::read_to_string(&s.log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file: {text}"
    );
    let mut ended: HashMap<String, Vec<&Value>> = HashMap::new();
    for l in &lines {
        if l["message"] == "job ended" {
            ended
                .entry(l["job_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(l);
        }
        // Every line about a job carries it, through its span.
        if l["span"]["name"] == "job" {
            for k in ["job_id", "type", "attempt"] {
                assert!(!l["span"][k].is_null(), "{k} missing: {l}");
            }
        }
    }
    assert_eq!(ended.len(), jobs.len(), "one outcome line per job: {text}");
    for (id, status) in &jobs {
        let got = ended
            .get(id)
            .unwrap_or_else(|| panic!("no outcome line for {id}: {text}"));
        assert_eq!(got.len(), 1, "exactly one outcome line for {id}: {got:?}");
        let l = got[0];
        assert_eq!(l["level"], "INFO", "{l}");
        assert_eq!(l["status"], *status, "{l}");
        for k in ["type", "attempt", "duration"] {
            assert!(!l[k].is_null(), "{k} missing: {l}");
        }
        assert_eq!(l["span"]["job_id"], *id, "{l}");
    }
    let fail = &jobs[1].0;
    let f = ended[fail][0];
    assert_eq!(f["exit_code"], 3, "{f}");
    assert_eq!(f["attempt"], 2, "{f}");
    assert!(f["error"].as_str().unwrap_or("").contains("code 3"), "{f}");
    assert_eq!(ended[&jobs[0].0][0]["exit_code"], 0);
    // The retry of the failing job's first attempt is a warning.
    let retries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "job attempt failed: retrying")
        .collect();
    assert_eq!(retries.len(), 1, "{text}");
    assert_eq!(retries[0]["level"], "WARN");
    assert_eq!(retries[0]["exit_code"], 3, "{text}");
    assert_eq!(retries[0]["job_id"], *fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_has_no_colour_codes_off_a_terminal() {
    let s = serve(&[]);
    let jobs = run_jobs(&s).await;
    let text = std::fs::read_to_string(&s.log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
    for (id, status) in &jobs {
        let n = text
            .lines()
            .filter(|l| l.contains("job ended") && l.contains(id.as_str()))
            .count();
        assert_eq!(n, 1, "one outcome line for {id}: {text}");
        assert!(
            text.lines()
                .any(|l| l.contains("job ended") && l.contains(id.as_str()) && l.contains(status)),
            "{text}"
        );
    }
}

/// The lines of a `--log-format json` log.
fn json_lines(s: &Server) -> Vec<Value> {
    std::fs::read_to_string(&s.log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A draining server answers readiness 503 on purpose (load balancers stop sending), to every
/// probe: no ERROR line for it. Nor for a stream refused at the node's cap (shedding: a
/// warning). ERROR is for faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_503s_of_a_drain_or_a_stream_cap_are_not_error_lines() {
    let s = serve_with("[events]\nmax_connections = 1", &["--log-format", "json"]);
    // One stream open fills the cap; the next is refused, 503 `too_many_streams`.
    let open = http()
        .get(format!("{}/async/events/sse", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let refused = http()
        .get(format!("{}/async/events/sse", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    drop(open);
    let hold = submit(&s, "sh.hold").await;
    wait_status(&s, &hold, &["RUNNING"]).await;
    // Safety: a plain syscall on this test's own child.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    // The job holds the drain (30s of sleep, 30s of grace): readiness says so meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http().get(format!("{}/health/ready", s.url)).send().await;
        if r.is_ok_and(|r| r.status() == 503) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never 503 while draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/health", "/health/ready", "/health"] {
        let r = http().get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "draining", "{body}");
    }
    // Every request has been answered, so its lines are written.
    let lines = json_lines(&s);
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.is_empty(),
        "ERROR lines for deliberate 503s: {errors:#?}"
    );
    let shed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["code"] == "too_many_streams")
        .collect();
    assert_eq!(shed.len(), 1, "one line for the refused stream: {lines:#?}");
    assert_eq!(shed[0]["level"], "WARN", "{:#}", shed[0]);
}

/// A local runner whose program does not exist (a spawner's start: `runyard serve` has them):
/// the job ends ERROR at its first attempt of three, its error naming the program and the
/// cause, and the operator reads one warning, not one per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_ends_its_job_at_once_with_one_warning() {
    let s = serve(&["--log-format", "json"]);
    let id = submit(&s, "absent.x").await;
    let job = wait_status(&s, &id, &["ERROR", "SUCCESS"]).await;
    assert_eq!(job["status"], "ERROR", "{job:#}");
    assert_eq!(job["attempt"], 1, "not retried: {job:#}");
    assert_eq!(job["max_attempts"], 3, "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`/nonexistent/runyard-no-such-program`")
            && error.contains("No such file or directory")
            && error.contains("not retried"),
        "{error}"
    );
    // Its outcome line is written once it ended.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = json_lines(&s);
        if lines
            .iter()
            .any(|l| l["message"] == "job ended" && l["job_id"] == id.as_str())
        {
            break lines;
        }
        assert!(Instant::now() < deadline, "no outcome line: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["job_id"] == id.as_str() || l["job_id"] == id.as_str())
        .collect();
    let launch: Vec<&&Value> = about
        .iter()
        .filter(|l| l["message"] == "launch failed")
        .collect();
    assert_eq!(launch.len(), 1, "one launch warning: {about:#?}");
    assert_eq!(launch[0]["level"], "WARN", "{about:#?}");
    assert!(
        launch[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("runyard-no-such-program")),
        "{about:#?}"
    );
    assert!(
        !about
            .iter()
            .any(|l| l["message"] == "job attempt failed: retrying"),
        "{about:#?}"
    );
}

/// A job's `errorMessage` is capped where it is kept: a 900 KB one, reported by each of its two
/// attempts, is stored cut to 16 KiB (at a character boundary, saying so and how long it was) in
/// the job's `error` and each `runs[].error`, and the server log's `job attempt failed` and `job
/// ended` lines carry at most about 1 KiB of it. Before, each copy and each of those lines held
/// the whole message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reported_error_is_capped_in_the_job_and_in_the_log() {
    const MASTER_KEY: &str = "server-log-test-master-key-0123456789ab";
    let s = serve_with(
        &format!("master_key = \"{MASTER_KEY}\""),
        &["--log-format", "json"],
    );
    // 899,999 bytes of which all but the first are two-byte characters: 16 KiB falls inside one.
    let huge = format!("x{}", "\u{e9}".repeat(449_999));
    let v: Value = http()
        .post(format!("{}/async/jobs", s.url))
        .json(&json!({"type": "sh.hold", "max_attempts": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["job_id"].as_str().expect("job_id").to_string();
    for attempt in 1..=2u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = job(&s, &id).await;
            if j["status"] == "RUNNING" && j["attempt"] == attempt {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "attempt {attempt} never ran: {j}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secret = runyard_hooks::derive_job_secret(MASTER_KEY.as_bytes(), &id, attempt);
        let client = runyard_hooks::JobClient::new(id.clone(), secret, &format!("{}/async", s.url))
            .expect("job client");
        client
            .error(huge.clone())
            .await
            .expect("the report is taken");
    }
    let j = wait_status(&s, &id, &["ERROR"]).await;
    let check = |what: &str, e: &str| {
        assert!(e.len() <= 16 * 1024, "{what}: {} bytes", e.len());
        assert!(e.starts_with("x\u{e9}\u{e9}"), "{what}: {e:.40}");
        assert!(
            e.contains("899999 bytes"),
            "{what}: the cut says how long it was: {}",
            &e[e.len().saturating_sub(200)..]
        );
    };
    check("error", j["error"].as_str().unwrap_or_default());
    let runs = j["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{j:.2000}");
    for r in runs {
        check("runs[].error", r["error"].as_str().unwrap_or_default());
    }
    assert!(
        j.to_string().len() < 64 * 1024,
        "the job is {} bytes",
        j.to_string().len()
    );
    // The log: the attempt's warning and the outcome line, each carrying a short error.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = json_lines(&s);
        let about = |m: &str| {
            lines
                .iter()
                .any(|l| l["message"] == m && l["job_id"] == id.as_str())
        };
        if (about("job ended") && about("job attempt failed: retrying"))
            || Instant::now() > deadline
        {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seen = 0;
    for l in &lines {
        let text = l.to_string();
        assert!(
            text.len() < 4096,
            "a log line of {} bytes: {text:.300}",
            text.len()
        );
        if l["job_id"] == id.as_str()
            && (l["message"] == "job ended" || l["message"] == "job attempt failed: retrying")
        {
            let e = l["error"].as_str().unwrap_or_default();
            assert!(e.len() <= 1024, "{} bytes of error in {text:.300}", e.len());
            assert!(
                e.starts_with("x\u{e9}") && e.contains("899999 bytes"),
                "{text}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "one warning and one outcome line");
}

/// A server that cannot start says why in its log's own format: one JSON object with level
/// `ERROR` under `--log-format json` (a log shipper parses it), `error: ...` as text; and also
/// with the log filter off.
#[test]
fn a_start_up_error_is_a_json_line_under_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(&cfg, "[notify]\nhorizon = \"0s\"\n").unwrap();
    let run = |format: &str, filter: &str| {
        let out = Command::new(BIN)
            .args(["--log-format", format, "serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .env("RUNYARD_LOG", filter)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    for filter in ["info", "off"] {
        let text = run("json", filter);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("nothing said: {text}"));
        assert_eq!(last["level"], "ERROR", "{last}");
        let message = last["message"].as_str().unwrap_or_default();
        assert!(message.contains("notify.horizon"), "{last}");
        assert!(
            last["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{last}"
        );
    }
    let text = run("text", "info");
    assert!(
        text.contains("error: ") && text.contains("notify.horizon"),
        "{text}"
    );
}

/// Webhook lines are lines about a job: `webhook attempt failed; retrying` and `webhook delivery
/// given up: ...` carry the job's span (`job_id`, `type`, `attempt`) under `--log-format json`,
/// as every other line about a job does, so a pipeline routing by `span.type` or `span.job_id`
/// keeps them. Before, they had a bare `job_id` field and no span (probe s53c F6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_lines_carry_the_jobs_span() {
    // The receiver: 500 (retried) on /fail, 410 (given up) on /gone.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/fail",
            axum::routing::post(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/gone",
            axum::routing::post(|| async { axum::http::StatusCode::GONE }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let notify = "[notify]\nallow_private = true\nretry_initial = \"100ms\"\nretry_max = \"200ms\"";
    let s = serve_with(notify, &["--log-format", "json"]);
    let mut ids = HashMap::new();
    for path in ["fail", "gone"] {
        let body = json!({"type": "sh.ok", "notify": {"url": format!("{base}/{path}")}});
        ids.insert(path, submit_body(&s, body).await);
    }
    let wanted = [
        ("fail", "webhook attempt failed; retrying"),
        (
            "gone",
            "webhook delivery given up: the receiver answered 410 Gone",
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let found: Vec<Value> = loop {
        let lines = json_lines(&s);
        let found: Vec<Value> = wanted
            .iter()
            .filter_map(|(path, m)| {
                let id = ids[path].as_str();
                lines
                    .iter()
                    .find(|l| {
                        l["message"] == *m && (l["span"]["job_id"] == id || l["job_id"] == id)
                    })
                    .cloned()
            })
            .collect();
        if found.len() == wanted.len() {
            break found;
        }
        assert!(Instant::now() < deadline, "no webhook lines: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for ((path, _), l) in wanted.iter().zip(&found) {
        assert_eq!(l["span"]["name"], "job", "{l}");
        assert_eq!(l["span"]["job_id"], ids[path].as_str(), "{l}");
        assert_eq!(l["span"]["type"], "sh.ok", "{l}");
        assert_eq!(l["span"]["attempt"], 1, "{l}");
    }
}

/// A `retention.finished` shorter than `notify.horizon` deletes jobs whose webhook deliveries
/// may still be pending (their log, read through the job, with them): the server says so at
/// start, once, as a warning; with the defaults (7 days, 24 hours) it says nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_shorter_than_the_webhook_horizon_is_warned_of_at_start() {
    let said = |s: &Server| -> Vec<Value> {
        json_lines(s)
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("shorter than notify.horizon"))
            })
            .collect()
    };
    let short = serve_with("[retention]\nfinished = \"1h\"", &["--log-format", "json"]);
    let usual = serve(&["--log-format", "json"]);
    // Both started (listening): their start-up lines are written.
    for s in [&short, &usual] {
        let r = http().get(format!("{}/health", s.url)).send().await;
        assert!(r.unwrap().status().is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = said(&short);
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{}", lines[0]);
    assert!(said(&usual).is_empty());
}
