//! The `docker` runner against a real Docker engine: success with logs, env, labels and limits;
//! a non-zero exit; the engine out of reach for a moment (no output line lost or repeated, lines
//! that cannot be read again marked); cancel and timeout stopping and removing the container; a
//! runyard process killed mid-job and restarted finding its container again; the image
//! allow-list at submit; and a container reporting through the signed hook with `runyard launch`
//! and uploading an output.
//!
//! The engine is `DOCKER_HOST`, else the private engine of `scripts/start-dockerd.sh`
//! (`unix:///tmp/rd/docker.sock`). Only when `DOCKER_HOST` is unset and that socket does not
//! answer do the tests print `SKIPPED: no docker engine` and pass; an engine that is named but
//! broken fails them. The images are built FROM scratch by `scripts/docker-image.sh` (busybox-static
//! and the runyard binary under test with its shared libraries): nothing is pulled.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const BUSYBOX: &str = "runyard-test-busybox:local";
/// A second tag of the busybox image, for a job that picks an allowed image.
const ALT: &str = "runyard-test-alt:local";
const RUNYARD: &str = "runyard:local";
const PRIVATE_SOCKET: &str = "/tmp/rd/docker.sock";

/// The engine to test against, or `None` (skip) when there is none.
fn engine_host() -> Option<String> {
    if let Ok(h) = std::env::var("DOCKER_HOST") {
        if !h.is_empty() {
            return Some(h);
        }
    }
    ping_unix(Path::new(PRIVATE_SOCKET)).then(|| format!("unix://{PRIVATE_SOCKET}"))
}

/// Whether a Docker API answers `GET /_ping` on this unix socket.
fn ping_unix(path: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ")
}

/// Runs the docker CLI against the engine; panics with its output when it fails.
fn docker(host: &str, args: &[&str]) -> String {
    docker_unless(host, args, |_| false)
}

/// [`docker`], a failure whose stderr `fine` takes for none aside: its stdout all the same.
fn docker_unless(host: &str, args: &[&str], fine: impl Fn(&str) -> bool) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || fine(&stderr),
        "`docker {}` failed: {}{stderr}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the test images once per test binary (the script skips images that are up to date).
fn images(host: &str) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/docker-image.sh"))
            .arg(env!("CARGO_BIN_EXE_runyard"))
            .env("DOCKER_HOST", host)
            .current_dir(root)
            .output()
            .expect("run scripts/docker-image.sh");
        assert!(
            out.status.success(),
            "scripts/docker-image.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        docker(host, &["tag", BUSYBOX, ALT]);
    });
}

/// The engine with the test images, or `None` after printing the skip line.
fn setup(test: &str) -> Option<String> {
    match engine_host() {
        Some(h) => {
            images(&h);
            Some(h)
        }
        None => {
            println!(
                "SKIPPED: no docker engine ({test}: DOCKER_HOST is unset and {PRIVATE_SOCKET} does \
                 not answer; run scripts/start-dockerd.sh)"
            );
            None
        }
    }
}

/// `id state` of every container (running or not) of a job.
fn containers_of(host: &str, job_id: &str) -> Vec<String> {
    docker(
        host,
        &[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=runyard.job-id={job_id}"),
            "--format",
            "{{.ID}} {{.State}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Waits (bounded) until the job has no container left.
async fn wait_removed(host: &str, job_id: &str) {
    let h = host.to_string();
    let j = job_id.to_string();
    eventually("the job's container is removed", WAIT, move || {
        let left = containers_of(&h, &j);
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

/// The id of the job's running container (bounded wait).
async fn running_container(host: &str, job_id: &str) -> String {
    let h = host.to_string();
    let j = job_id.to_string();
    eventually("the job's container runs", WAIT, move || {
        let found = containers_of(&h, &j)
            .into_iter()
            .find(|l| l.ends_with(" running"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string());
        async move { found }
    })
    .await
}

/// The job's log lines as `(stream, line)`.
async fn log_lines(ts: &TestServer, id: &str) -> Vec<(String, String)> {
    let (st, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    assert_eq!(st, StatusCode::OK, "{logs}");
    lines_of(&logs)
}

fn lines_of(logs: &Value) -> Vec<(String, String)> {
    logs["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {logs}"))
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap_or_default().to_string(),
                l["line"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) until the job's logs hold `line`.
async fn wait_log_line(ts: &TestServer, id: &str, line: &str) {
    eventually(&format!("log line `{line}`"), WAIT, || async {
        log_lines(ts, id)
            .await
            .iter()
            .any(|(_, l)| l == line)
            .then_some(())
    })
    .await;
}

fn runner_toml(host: &str, types: &str, image: &str, command: &[&str], extra: &str) -> String {
    format!(
        r#"
[[runners]]
name = "dock"
kind = "docker"
types = ["{types}"]
image = "{image}"
command = {command}
network = "host"
docker_host = "{host}"
max_attempts = 1
{extra}
"#,
        command = serde_json::to_string(command).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_job_succeeds_with_its_logs_env_and_limits_and_its_container_is_removed() {
    let Some(host) = setup("a_docker_job_succeeds") else {
        return;
    };
    let script = "echo hello from $JOB_TYPE; echo args=$JOB_ARGS; echo attempt=$JOB_ATTEMPT; \
                  echo id=$JOB_ID; echo hook=$JOB_HOOK; echo team=$TEAM; \
                  [ ${#JOB_SECRET_KEY} -ge 32 ] && echo secret-is-set; echo oops >&2; \
                  echo memory=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes)";
    let ts = TestServer::start(&runner_toml(
        &host,
        "dock.*",
        BUSYBOX,
        &["/bin/sh", "-c", script],
        "memory = \"64m\"\ncpus = 0.5\nenv = { TEAM = \"blue\" }",
    ))
    .await;
    let id = ts
        .submit_ok(json!({"type": "dock.greet", "args": {"n": 1}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    assert_eq!(job["runner"], "dock");
    assert_eq!(job["handle"]["kind"], "docker", "{job:#}");
    assert_eq!(
        job["handle"]["id"].as_str().map(str::len),
        Some(12),
        "{job:#}"
    );
    let lines = log_lines(&ts, &id).await;
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(
        stdout,
        vec![
            "hello from dock.greet".to_string(),
            r#"args={"n":1}"#.to_string(),
            "attempt=1".to_string(),
            format!("id={id}"),
            format!("hook={}/async", ts.url),
            "team=blue".to_string(),
            "secret-is-set".to_string(),
            format!("memory={}", 64 * 1024 * 1024),
        ],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&("stderr".to_string(), "oops".to_string())),
        "{lines:#?}"
    );
    wait_removed(&host, &id).await;
}

/// A worker that hung after it started the attempt's container but before it recorded the
/// handle (a job cancelled while `STARTING`): `unrecorded` names the container from the job id
/// and attempt, `recover` finds it running, and the reaper's stop removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_container_is_found_by_its_name_and_stopped() {
    use runyard_runners::docker::{DockerConfig, DockerRunner};
    use runyard_runners::{JobSpec, NullReporter, Recovered, Runner, Secret};
    let Some(host) = setup("an_unrecorded_container_is_found") else {
        return;
    };
    let r = DockerRunner::new(DockerConfig {
        name: "dock".into(),
        image: BUSYBOX.into(),
        command: vec!["sleep".into(), "60".into()],
        network: Some("host".into()),
        docker_host: Some(host.clone()),
        ..Default::default()
    })
    .expect("runner");
    let id = uuid::Uuid::now_v7().to_string();
    let spec = JobSpec {
        id: id.clone(),
        job_type: "t.sleep".into(),
        args: json!({}),
        attempt: 1,
        secret: Secret::from_string("s3cr3t".into()),
        hook_url: "http://127.0.0.1:9/async".into(),
        timeout: None,
        deployment: String::new(),
    };
    let launched = r
        .launch(spec.clone(), Arc::new(NullReporter))
        .await
        .expect("launch");
    running_container(&host, &id).await;
    // The worker hangs here: its execution is never heard from again, its handle not stored.
    std::mem::forget(launched);
    let h = r
        .unrecorded(&spec, None)
        .expect("a container is found by its name");
    assert!(r.reaches(&h));
    let mut ex = match r.recover(&h, spec, Arc::new(NullReporter)).await.unwrap() {
        Recovered::Running(e) => e,
        Recovered::Finished(o) => panic!("finished? {o:?}"),
        Recovered::Gone => panic!("not found without its handle"),
    };
    assert!(ex.stop(Duration::from_secs(1)).await);
    wait_removed(&host, &id).await;
}

/// A docker runner of the test image running `command` (host network), and the spec of a
/// job's first attempt, for the tests that drive the runner itself as a worker and reapers do.
fn bare_runner(
    host: &str,
    command: &[&str],
) -> (
    runyard_runners::docker::DockerRunner,
    runyard_runners::JobSpec,
) {
    use runyard_runners::docker::{DockerConfig, DockerRunner};
    let r = DockerRunner::new(DockerConfig {
        name: "dock".into(),
        image: BUSYBOX.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        network: Some("host".into()),
        docker_host: Some(host.to_string()),
        ..Default::default()
    })
    .expect("runner");
    let spec = runyard_runners::JobSpec {
        id: uuid::Uuid::now_v7().to_string(),
        job_type: "t.recover".into(),
        args: json!({}),
        attempt: 1,
        secret: runyard_runners::Secret::from_string("s3cr3t".into()),
        hook_url: "http://127.0.0.1:9/async".into(),
        timeout: None,
        deployment: String::new(),
    };
    (r, spec)
}

/// Two reapers (two worker processes on one Redis store) may `recover` the same container of a
/// lost worker: one that has exited is `Finished`, with its exit code, for each of them, by its
/// stored id or by its name (a worker lost in `STARTING`), and is left in place, its outcome
/// not recorded yet (the sweep removes it once its job is done with it). One that a reaper
/// recovered running and that exits meanwhile is still read by that reaper's `wait`. Before,
/// the first recovery of the exited container removed it: the next one found it `Gone` (the job
/// requeued `LOST` and run again, its outcome lost), and the running one's wait answered "the
/// container disappeared" (an exit 0 recorded as a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_container_is_recovered_finished_by_every_reaper_and_left_in_place() {
    use runyard_runners::{NullReporter, Outcome, Recovered, Runner};
    let Some(host) = setup("an_ended_container_is_recovered_by_every_reaper") else {
        return;
    };
    let (r, spec) = bare_runner(&host, &["/bin/sh", "-c", "sleep 2; exit 0"]);
    let launched = r
        .launch(spec.clone(), Arc::new(NullReporter))
        .await
        .expect("launch");
    let stored = launched.handle();
    let cid = running_container(&host, &spec.id).await;
    let _cleanup = Removed(host.clone(), cid.clone());
    // Its worker is lost: its execution is never heard from again.
    std::mem::forget(launched);
    let marks = r.unrecorded(&spec, None).expect("found by its name");
    // Reaper A recovers it while it still runs.
    let found = r.recover(&stored, spec.clone(), Arc::new(NullReporter));
    let mut a = match found.await.expect("recover") {
        Recovered::Running(e) => e,
        Recovered::Finished(o) => panic!("finished already? {o:?}"),
        Recovered::Gone => panic!("gone?"),
    };
    {
        let (h, j) = (host.clone(), spec.id.clone());
        eventually("the container exits by itself", WAIT, move || {
            let done = containers_of(&h, &j).iter().any(|l| l.ends_with(" exited"));
            async move { done.then_some(()) }
        })
        .await;
    }
    // Reaper B, by the stored id and by the container's name, and again: the same outcome.
    for (n, h) in [&stored, &marks, &stored].into_iter().enumerate() {
        match r.recover(h, spec.clone(), Arc::new(NullReporter)).await {
            Ok(Recovered::Finished(o)) => assert_eq!(o, Outcome::Success { result: None }),
            Ok(Recovered::Running(_)) => panic!("recovery {n}: running?"),
            Ok(Recovered::Gone) => {
                panic!("recovery {n}: gone (an earlier recovery removed the ended container)")
            }
            Err(e) => panic!("recovery {n}: {e}"),
        }
    }
    assert!(
        exists(&host, &cid),
        "left in place for the outcome's writer"
    );
    // Reaper A's wait reads the exit code, and removes the container.
    let o = tokio::time::timeout(WAIT, a.wait())
        .await
        .expect("the wait ends");
    assert_eq!(o, Outcome::Success { result: None });
    wait_removed(&host, &spec.id).await;
}

/// Counts the log lines a reporter is given.
#[derive(Default)]
struct CountedLines(std::sync::atomic::AtomicUsize);

impl runyard_runners::Reporter for CountedLines {
    fn log(&self, _stream: runyard_runners::LogStream, _line: String) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn progress(&self, _progress: f64, _details: Option<Value>) {}
}

/// A recovered execution dropped without a `wait` or a `stop` (its adoption refused while the
/// job is still on its attempt, or the reaper of a stopping worker, at every pass) leaves the
/// container running and stops copying its output: its log follower ends with it. Before, the
/// follower streamed on, into a reporter nobody read, for as long as the container ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_recovered_execution_stops_following_the_output() {
    use runyard_runners::{NullReporter, Recovered, Runner};
    let Some(host) = setup("a_dropped_recovered_execution") else {
        return;
    };
    let script = "while true; do echo tick; sleep 0.1; done";
    let (r, spec) = bare_runner(&host, &["/bin/sh", "-c", script]);
    let launched = r
        .launch(spec.clone(), Arc::new(NullReporter))
        .await
        .expect("launch");
    let stored = launched.handle();
    let cid = running_container(&host, &spec.id).await;
    let _cleanup = Removed(host.clone(), cid.clone());
    std::mem::forget(launched);
    let lines = Arc::new(CountedLines::default());
    let exec = match r.recover(&stored, spec.clone(), lines.clone()).await {
        Ok(Recovered::Running(e)) => e,
        Ok(_) => panic!("not running"),
        Err(e) => panic!("{e}"),
    };
    {
        let lines = lines.clone();
        eventually("its output is followed", WAIT, move || {
            let n = lines.0.load(Ordering::SeqCst);
            async move { (n > 1).then_some(()) }
        })
        .await;
    }
    drop(exec);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_drop = lines.0.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = lines.0.load(Ordering::SeqCst);
    assert_eq!(
        later, after_drop,
        "lines still copied 1 to 3 s after the execution was dropped"
    );
    assert_eq!(
        containers_of(&host, &spec.id),
        vec![format!("{cid} running")],
        "the container runs on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_is_an_error_with_the_exit_code() {
    let Some(host) = setup("a_non_zero_exit") else {
        return;
    };
    let ts = TestServer::start(&runner_toml(
        &host,
        "dock.*",
        BUSYBOX,
        &["/bin/sh", "-c", "echo failing; exit 3"],
        "",
    ))
    .await;
    let id = ts.submit_ok(json!({"type": "dock.fail"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["exit_code"], 3, "{job:#}");
    let err = job["error"].as_str().unwrap_or_default();
    assert!(err.contains("exited with code 3"), "{job:#}");
    assert!(
        log_lines(&ts, &id)
            .await
            .contains(&("stdout".into(), "failing".into())),
        "the output of a failing container is kept"
    );
    wait_removed(&host, &id).await;
}

/// A Unix-socket forwarder to the engine, standing for the engine socket a runner talks to: cut
/// (its connections closed, its socket gone: the engine cannot be reached) and restored.
struct Forwarder {
    path: PathBuf,
    engine: PathBuf,
    /// The accept loop and every forwarded connection, aborted by a cut.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    fn start(path: PathBuf, engine: PathBuf) -> Forwarder {
        let f = Forwarder {
            path,
            engine,
            tasks: Arc::default(),
        };
        f.restore();
        f
    }

    /// Serves the socket again.
    fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path).expect("bind the forwarder");
        let (engine, tasks) = (self.engine.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let engine = engine.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes every connection and removes the socket: the engine cannot be reached.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A server whose docker runner reaches the engine through a [`Forwarder`] the test can cut,
/// running `script` for type `dock.*` (with `extra` config); `None` (the test skipped) without an
/// engine on a unix socket. Also the engine's own address, and the forwarder's directory.
async fn behind_a_forwarder(
    test: &str,
    script: &str,
    extra: &str,
) -> Option<(String, TestServer, Forwarder, tempfile::TempDir)> {
    let host = setup(test)?;
    let Some(engine) = host.strip_prefix("unix://") else {
        println!("SKIPPED: {test} needs an engine on a unix socket, not {host}");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let fwd = Forwarder::start(dir.path().join("engine.sock"), PathBuf::from(engine));
    let via = format!("unix://{}", fwd.path.display());
    let runner = runner_toml(&via, "dock.*", BUSYBOX, &["/bin/sh", "-c", script], "");
    let ts = TestServer::builder(&runner).config(extra).start().await;
    Some((host, ts, fwd, dir))
}

/// The engine out of reach for a moment while a job writes: once it is back, the runner copies
/// the rest of the output, every line exactly once. Before, the copy stopped for good at the
/// first failed reconnection and the later lines were silently lost (the job still SUCCESS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_engine_outage_loses_and_repeats_no_output_line() {
    let script = "i=0; while [ $i -lt 16 ]; do echo tick-$i; i=$((i+1)); sleep 0.5; done";
    let Some((host, ts, fwd, _dir)) = behind_a_forwarder("a_short_engine_outage", script, "").await
    else {
        return;
    };
    let id = ts.submit_ok(json!({"type": "dock.ticks"})).await;
    wait_log_line(&ts, &id, "tick-4").await;
    let cid = running_container(&host, &id).await;
    fwd.cut();
    // Out of reach while the container writes two more lines (read from the engine itself).
    let (h, c) = (host.clone(), cid.clone());
    eventually("two lines written during the outage", WAIT, move || {
        let written = docker(&h, &["logs", &c]);
        async move { written.contains("tick-7\n").then_some(()) }
    })
    .await;
    fwd.restore();
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    let lines = log_lines(&ts, &id).await;
    let want: Vec<(String, String)> = (0..16)
        .map(|i| ("stdout".to_string(), format!("tick-{i}")))
        .collect();
    assert_eq!(lines, want, "every line exactly once, and nothing else");
    wait_removed(&host, &id).await;
}

/// Output that cannot be read again (the container removed while the engine was out of reach) is
/// not lost silently: a `[runyard] line(s) dropped here` line says so in the job's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lost_during_an_engine_outage_is_marked_in_the_logs() {
    let script = "echo started; i=0; while [ $i -lt 100 ]; do i=$((i+1)); sleep 0.2; done";
    let Some((host, ts, fwd, _dir)) =
        behind_a_forwarder("output_lost_during_an_engine_outage", script, "").await
    else {
        return;
    };
    let id = ts.submit_ok(json!({"type": "dock.lost"})).await;
    wait_log_line(&ts, &id, "started").await;
    let cid = running_container(&host, &id).await;
    fwd.cut();
    docker(&host, &["rm", "-f", &cid]);
    fwd.restore();
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    let lines = log_lines(&ts, &id).await;
    assert!(
        lines.iter().any(|(s, l)| s == "stderr"
            && l.starts_with("[runyard] line(s) dropped here")
            && l.contains("the container was removed")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_stop_and_remove_the_container() {
    let Some(host) = setup("cancel_and_timeout") else {
        return;
    };
    let ts = TestServer::start(&runner_toml(
        &host,
        "dock.*",
        BUSYBOX,
        &["/bin/sh", "-c", "echo started; sleep 300"],
        "memory = \"32m\"\ncpus = 0.5\nlabels = { team = \"tests\" }",
    ))
    .await;

    // Cancel.
    let id = ts.submit_ok(json!({"type": "dock.sleep"})).await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    wait_log_line(&ts, &id, "started").await;
    let cid = running_container(&host, &id).await;
    let inspected: Value = serde_json::from_str(&docker(&host, &["inspect", &cid])).unwrap();
    let c = &inspected[0];
    assert_eq!(c["Name"], format!("/runyard-{id}-1"));
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["runyard.job-id"], id.as_str(), "{labels:#}");
    assert_eq!(labels["runyard.attempt"], "1", "{labels:#}");
    assert_eq!(labels["runyard.job-type"], "dock.sleep", "{labels:#}");
    assert_eq!(labels["runyard.runner"], "dock", "{labels:#}");
    assert_eq!(labels["team"], "tests", "{labels:#}");
    assert_eq!(c["HostConfig"]["NetworkMode"], "host");
    assert_eq!(c["HostConfig"]["Memory"], 32 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    let started = Instant::now();
    let (st, body) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    wait_removed(&host, &id).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel took {:?}",
        started.elapsed()
    );
    let job = ts.get_job(&id).await;
    assert_eq!(status_of(&job), "CANCELLED", "{job:#}");

    // Timeout.
    let id = ts
        .submit_ok(json!({"type": "dock.sleep", "timeout": "2s"}))
        .await;
    ts.wait_status(&id, "RUNNING", WAIT).await;
    running_container(&host, &id).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    wait_removed(&host, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_outside_the_allow_list_are_refused_at_submit() {
    let Some(host) = setup("images_outside_the_allow_list") else {
        return;
    };
    let ts = TestServer::start(&runner_toml(
        &host,
        "dock.*",
        BUSYBOX,
        &["/bin/sh", "-c", "echo picked"],
        "allowed_images = [\"runyard-test-*:local\"]",
    ))
    .await;
    let before = ts.count_jobs(None).await;
    for bad in [
        json!("evil/miner:latest"),
        json!("runyard:local"),
        json!(42),
    ] {
        let (st, body) = ts
            .submit(json!({"type": "dock.pick", "args": {"image": bad}}))
            .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        let (code, message) = error_of(&body);
        assert_eq!(code, "runner_refused", "{body}");
        assert!(message.contains("image"), "{body}");
    }
    assert_eq!(
        ts.count_jobs(None).await,
        before,
        "refused jobs are not stored"
    );

    // An allowed image runs.
    let id = ts
        .submit_ok(json!({"type": "dock.pick", "args": {"image": ALT}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    wait_log_line(&ts, &id, "picked").await;

    // An allowed image that is nowhere to be found fails the job with the reason.
    let id = ts
        .submit_ok(json!({"type": "dock.pick", "args": {"image": "runyard-test-missing:local"}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    let err = job["error"].as_str().unwrap_or_default();
    assert!(err.contains("runyard-test-missing:local"), "{job:#}");
    assert!(containers_of(&host, &id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reports_through_the_hook_with_runyard_launch_and_uploads_an_output() {
    let Some(host) = setup("runyard_launch_in_a_container") else {
        return;
    };
    // runyard:local's entrypoint is runyard: the command is its arguments.
    let ts = TestServer::start(&runner_toml(
        &host,
        "dock.*",
        RUNYARD,
        &[
            "launch",
            "--output",
            "outputs=/tmp/out.txt",
            "--",
            "/bin/sh",
            "-c",
            "echo computing; echo result-$JOB_ID > /tmp/out.txt",
        ],
        "",
    ))
    .await;
    let id = ts.submit_ok(json!({"type": "dock.launch"})).await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    let outputs = job["files"]["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {job:#}"));
    assert_eq!(outputs.len(), 1, "{job:#}");
    assert_eq!(outputs[0]["name"], "out.txt", "{job:#}");
    let res = ts
        .client
        .get(ts.at(&format!("/async/jobs/{id}/files/outputs/0")))
        .send()
        .await
        .expect("download the output");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), format!("result-{id}\n"));
    // The line reached the job through the hook (and the container's stdout).
    wait_log_line(&ts, &id, "computing").await;
    // runyard launch reported RUNNING through the hook before it finished.
    assert!(job["started_at"].is_string(), "{job:#}");
    wait_removed(&host, &id).await;
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// A `runyard serve` child process (killed with SIGKILL on drop).
struct ServeProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ServeProcess {
    async fn start(config: &Path, log: &Path, url: &str) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log file");
        let child = Command::new(env!("CARGO_BIN_EXE_runyard"))
            .args(["serve", "--config"])
            .arg(config)
            // bollard prints request and response bodies (with the job's secret) at debug level:
            // the binary must drop them whatever RUNYARD_LOG asks for.
            .env(
                "RUNYARD_LOG",
                "debug,bollard=trace,hyper=info,hyper_util=info",
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start runyard serve");
        let p = Self {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let client = reqwest::Client::new();
        let health = format!("{url}/health");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = client.get(&health).send().await {
                if r.status().is_success() {
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "runyard serve did not answer; its log:\n{}",
                tail(&p.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runyard_killed_mid_job_finds_its_containers_after_a_restart_and_finishes_the_jobs() {
    let Some(host) = setup("restart_mid_job") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("runyard.toml");
    // `dock.long` outlives the downtime; `dock.short` ends while no runyard runs.
    let long = runner_toml(
        &host,
        "dock.long",
        BUSYBOX,
        &["/bin/sh", "-c", "echo before; sleep 10; echo after; exit 0"],
        "",
    );
    let short = runner_toml(
        &host,
        "dock.short",
        BUSYBOX,
        &["/bin/sh", "-c", "echo short; sleep 2; exit 4"],
        "",
    )
    .replace("name = \"dock\"", "name = \"dock-short\"");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[worker]
lease_ttl = "1s"
kill_grace = "500ms"
poll_interval = "200ms"
shutdown_grace = "5s"
sweep_interval = "300ms"
{long}
{short}"#,
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let client = reqwest::Client::new();
    let get_json = |path: String| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client.get(format!("{url}{path}")).send().await.unwrap();
            let st = r.status();
            let v: Value = r.json().await.unwrap();
            (st, v)
        }
    };
    let submit = |ty: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/async/jobs"))
                .json(&json!({ "type": ty }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            r.json::<Value>().await.unwrap()["job_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let logged = |id: String, line: &'static str| {
        let get_json = &get_json;
        async move {
            eventually(&format!("`{line}` is logged"), WAIT, || {
                let get = get_json(format!("/async/jobs/{id}/logs"));
                async move {
                    let (_, logs) = get.await;
                    lines_of(&logs).iter().any(|(_, l)| l == line).then_some(())
                }
            })
            .await
        }
    };

    let mut first = ServeProcess::start(&config, &log, &url).await;
    let id = submit("dock.long").await;
    let short_id = submit("dock.short").await;
    // A third one whose time limit runs out around the downtime.
    let r = client
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": "dock.long", "timeout": "4s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let timed_id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // They run, and their first lines are in the jobs' logs.
    logged(id.clone(), "before").await;
    logged(short_id.clone(), "short").await;
    logged(timed_id.clone(), "before").await;
    let cid = running_container(&host, &id).await;

    first.kill();
    // The container outlives the server.
    assert_eq!(containers_of(&host, &id), vec![format!("{cid} running")]);
    // The short one ends while nobody watches.
    {
        let h = host.clone();
        let s = short_id.clone();
        eventually("the short container exits", WAIT, move || {
            let done = containers_of(&h, &s).iter().any(|l| l.ends_with(" exited"));
            async move { done.then_some(()) }
        })
        .await;
    }

    let _second = ServeProcess::start(&config, &log, &url).await;
    let wait_done = |id: String| {
        let get_json = &get_json;
        let log = &log;
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let (st, job) = get_json(format!("/async/jobs/{id}")).await;
                assert_eq!(st, StatusCode::OK, "{job}");
                if is_terminal(&job["status"]) {
                    return job;
                }
                assert!(
                    Instant::now() < deadline,
                    "job not finished after the restart: {job:#}\nserver log:\n{}",
                    tail(log)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // The container that ended meanwhile: its exit code is recorded, nothing runs again. The
    // recovery leaves it in place (another reaper may recover it too); the sweep removes it once
    // its job has ended.
    let job = wait_done(short_id.clone()).await;
    assert_eq!(status_of(&job), "ERROR", "{job:#}");
    assert_eq!(job["exit_code"], 4, "{job:#}");
    assert_eq!(job["attempt"], 1, "{job:#}");
    wait_removed(&host, &short_id).await;

    // The adopted one out of time: TIMEOUT, saying its whole limit (not what was left of it when
    // it was adopted, which said "timed out after 0s" or a fraction).
    let job = wait_done(timed_id.clone()).await;
    assert_eq!(status_of(&job), "TIMEOUT", "{job:#}");
    assert_eq!(job["error"], "timed out after 4s", "{job:#}");
    wait_removed(&host, &timed_id).await;

    // The running container: adopted, followed, finished.
    let job = wait_done(id.clone()).await;
    assert_eq!(
        status_of(&job),
        "SUCCESS",
        "{job:#}\nserver log:\n{}",
        tail(&log)
    );
    // The same attempt, adopted: not run again.
    assert_eq!(job["attempt"], 1, "{job:#}");
    assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
    let (_, logs) = get_json(format!("/async/jobs/{id}/logs")).await;
    let lines = lines_of(&logs);
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        texts.iter().filter(|l| **l == "before").count(),
        1,
        "{texts:#?}"
    );
    assert!(
        texts.contains(&"after"),
        "output after the restart is followed: {texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|l| l.contains("still running after a restart")),
        "{texts:#?}"
    );
    wait_removed(&host, &id).await;

    // The job's secret never reached runyard's own log, even at debug/trace level.
    let server_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        server_log.contains("DEBUG"),
        "the server logged at debug level"
    );
    assert!(
        !server_log.contains("JOB_SECRET_KEY"),
        "the container's create body (with the secret) was logged"
    );
}

/// A Unix-socket forwarder to the engine that, while armed, holds back the engine's answer to
/// the first container start it forwards: the start reaches the engine (the container starts),
/// but the runyard process behind it never learns so, and is killed (`kill -9`) while it waits,
/// its handle not recorded: a worker lost in `STARTING` after its container started. The
/// connection to the engine is kept open (a client gone might cancel the start). Disarmed after
/// it fired: the next server's calls pass.
struct StartTrap {
    path: PathBuf,
    fired: Arc<tokio::sync::Notify>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// Whether `window` (the latest bytes a client sent) holds the request line of a container start
/// (`POST /v1.xx/containers/{id}/start`).
fn holds_a_start(window: &[u8]) -> bool {
    String::from_utf8_lossy(window).split("\r\n").any(|line| {
        let mut parts = line.split(' ');
        let (method, path) = (parts.next(), parts.next().unwrap_or_default());
        let path = path.split('?').next().unwrap_or_default();
        method == Some("POST") && path.contains("/containers/") && path.ends_with("/start")
    })
}

impl StartTrap {
    fn start(path: PathBuf, engine: PathBuf) -> StartTrap {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind the trap");
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fired = Arc::new(tokio::sync::Notify::new());
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (f, t) = (fired.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::UnixStream::connect(&engine).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (armed, fired, h) = (armed.clone(), f.clone(), held.clone());
                let up = tokio::spawn(async move {
                    let (mut buf, mut window) = (vec![0u8; 16 * 1024], Vec::new());
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        window.extend_from_slice(&buf[..n]);
                        let cut = window.len().saturating_sub(8 * 1024);
                        window.drain(..cut);
                        // Held before the start is forwarded: its answer cannot come first.
                        if holds_a_start(&window) && armed.swap(false, Ordering::SeqCst) {
                            h.store(true, Ordering::SeqCst);
                            fired.notify_one();
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    if h.load(Ordering::SeqCst) {
                        // Kept open: the engine finishes the start after its client died.
                        let _keep = uw;
                        std::future::pending::<()>().await;
                    }
                });
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if held.load(Ordering::SeqCst) {
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                t.lock().unwrap().extend([up, down]);
            }
        });
        tasks.lock().unwrap().push(accept);
        StartTrap { path, fired, tasks }
    }
}

impl Drop for StartTrap {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A `runyard serve` process (embedded store, docker runner `dock.*` with 2 attempts through a
/// [`StartTrap`]) killed with `kill -9` while its job (`script`) was `STARTING`: the job's
/// container started, its id never recorded (checked in the store). With `ended`, the container
/// exits by itself before runyard comes back; else it still runs. Then the server is restarted
/// and the job's end returned, with its logs and the server's log. `None`: skipped.
async fn a_job_whose_server_died_while_starting(
    test: &str,
    script: &str,
    ended: bool,
) -> Option<(Value, Vec<(String, String)>, String)> {
    let host = setup(test)?;
    let Some(engine) = host.strip_prefix("unix://") else {
        println!("SKIPPED: {test} needs an engine on a unix socket, not {host}");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let trap = StartTrap::start(dir.path().join("engine.sock"), PathBuf::from(engine));
    let via = format!("unix://{}", trap.path.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let runner = runner_toml(&via, "dock.*", BUSYBOX, &["/bin/sh", "-c", script], "")
        .replace("max_attempts = 1", "max_attempts = 2");
    let config = dir.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[worker]\nlease_ttl = \"1s\"\n\
             kill_grace = \"500ms\"\npoll_interval = \"200ms\"\nshutdown_grace = \"5s\"\n\
             sweep_interval = \"300ms\"\n{runner}",
            data.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let client = reqwest::Client::new();
    let mut first = ServeProcess::start(&config, &log, &url).await;
    let r = client
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": "dock.adopt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::timeout(WAIT, trap.fired.notified())
        .await
        .unwrap_or_else(|_| panic!("no container start seen; server log:\n{}", tail(&log)));
    first.kill();
    // The engine starts the container after its client died.
    running_container(&host, &id).await;
    if ended {
        let (h, j) = (host.clone(), id.clone());
        eventually("the container exits by itself", WAIT, move || {
            let done = containers_of(&h, &j).iter().any(|l| l.ends_with(" exited"));
            async move { done.then_some(()) }
        })
        .await;
    }
    {
        use runyard::store::sqlite::SqliteStore;
        use runyard::store::{JobStore, StoreSettings};
        let store = SqliteStore::open(&data, StoreSettings::default(), false).expect("open");
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        let job = store.get(uuid).await.unwrap().expect("stored");
        assert_eq!(
            (job.status.to_string(), job.handle.is_none(), job.attempt),
            ("STARTING".to_string(), true, 1),
            "the server died before it recorded the container: {job:#?}"
        );
    }
    let _second = ServeProcess::start(&config, &log, &url).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let job = loop {
        let r = client.get(format!("{url}/async/jobs/{id}")).send().await;
        let job: Value = r.unwrap().json().await.unwrap();
        if is_terminal(&job["status"]) {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "job not finished after the restart: {job:#}\nserver log:\n{}",
            tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs: Value = client
        .get(format!("{url}/async/jobs/{id}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The adopted container is removed as it ends; one that had exited is left by the recovery
    // and removed by the sweep once the job has ended.
    wait_removed(&host, &id).await;
    Some((job, lines_of(&logs), tail(&log)))
}

/// The container of a job whose runyard was killed in `STARTING` (after the engine got the start,
/// before runyard recorded the container) still runs when runyard is back: the reaper finds it by
/// its name, adopts it (same attempt, no second run; its id recorded), follows its output, and
/// the job ends SUCCESS. Before, the reaper stopped it and ran the job again (attempt 2; with
/// one attempt the job ended ERROR "worker lost").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_started_by_a_server_killed_while_starting_is_adopted() {
    let script = "echo run-$JOB_ATTEMPT; sleep 8; echo done-$JOB_ATTEMPT";
    let Some((job, lines, server_log)) =
        a_job_whose_server_died_while_starting("adopted_while_starting", script, false).await
    else {
        return;
    };
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        (status_of(&job), job["attempt"].as_u64()),
        ("SUCCESS", Some(1)),
        "{job:#}\n{texts:#?}\nserver log:\n{server_log}"
    );
    assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "SUCCESS", "{job:#}");
    assert_eq!(
        job["handle"]["kind"], "docker",
        "the handle found is recorded: {job:#}"
    );
    assert!(
        texts
            .iter()
            .any(|l| l.contains("still running after a restart")),
        "{texts:#?}"
    );
    assert!(texts.contains(&"done-1"), "{texts:#?}");
    assert!(!texts.iter().any(|l| l.starts_with("run-2")), "{texts:#?}");
}

/// The same, the container having exited 0 by itself before runyard is back: its exit is the
/// attempt's outcome (SUCCESS on attempt 1, nothing run again), where the reaper took the
/// attempt for lost and ran a second container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_ended_after_its_server_was_killed_while_starting_gives_its_outcome() {
    let script = "echo run-$JOB_ATTEMPT; sleep 1; echo done-$JOB_ATTEMPT";
    let Some((job, lines, server_log)) =
        a_job_whose_server_died_while_starting("ended_while_starting", script, true).await
    else {
        return;
    };
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        (status_of(&job), job["attempt"].as_u64()),
        ("SUCCESS", Some(1)),
        "{job:#}\n{texts:#?}\nserver log:\n{server_log}"
    );
    assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "SUCCESS", "{job:#}");
    assert!(
        !texts.iter().any(|l| l.starts_with("run-2")),
        "no second container: {texts:#?}"
    );
}

/// Config of the sweep tests: a sweep of work left behind every 300 ms.
const FAST_SWEEP: &str = "[worker]\nsweep_interval = \"300ms\"";

/// The labels of a container, as JSON.
fn labels_of(host: &str, cid: &str) -> Value {
    let inspected: Value = serde_json::from_str(&docker(host, &["inspect", cid])).unwrap();
    inspected[0]["Config"]["Labels"].clone()
}

/// Starts a container of the test image with these labels (`detach`: still running; else waits
/// for `true` to exit) and returns its id.
fn labelled_container(host: &str, labels: &[(&str, &str)], detach: bool) -> String {
    let mut args = vec![if detach { "run" } else { "create" }.to_string()];
    if detach {
        args.push("-d".into());
    }
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args.push(BUSYBOX.into());
    args.extend(if detach {
        ["/bin/sh", "-c", "sleep 300"].map(String::from).to_vec()
    } else {
        ["/bin/sh", "-c", "echo done"].map(String::from).to_vec()
    });
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = docker_before_the_sweep(host, &args).trim().to_string();
    if !detach {
        docker_before_the_sweep(host, &["start", "-a", &id]);
    }
    id
}

/// [`docker`] for a container the server's sweep may remove between its creation and its start
/// (its labels name a job that is done with it: `docker run` is a create then a start, and a
/// CI run saw "container is marked for removal and cannot be started"). That is no failure: the
/// stdout (the id, printed before the start) is returned, and the test's own checks say whether
/// the container should have been swept.
fn docker_before_the_sweep(host: &str, args: &[&str]) -> String {
    docker_unless(host, args, |stderr| {
        stderr.contains("marked for removal") || stderr.contains("No such container")
    })
}

/// Removes a container when dropped (a test that fails leaves nothing running).
struct Removed(String, String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .env("DOCKER_HOST", &self.0)
            .args(["rm", "-f", &self.1])
            .output();
    }
}

/// Whether a container exists (running or not).
fn exists(host: &str, cid: &str) -> bool {
    !docker(
        host,
        &["ps", "-aq", "--no-trunc", "--filter", &format!("id={cid}")],
    )
    .trim()
    .is_empty()
}

/// F3: a job cancelled while the engine is out of reach ends CANCELLED, but its container keeps
/// running (the runner's one bounded stop failed). Once the engine is back, the worker's sweep
/// removes it, and leaves alone the container of a job that runs meanwhile. Before, the
/// container ran for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_left_running_by_a_cancel_during_an_engine_outage_is_swept_once_it_is_back() {
    let Some((host, ts, fwd, _dir)) = behind_a_forwarder(
        "cancel_during_an_engine_outage",
        "echo started; sleep 300",
        FAST_SWEEP,
    )
    .await
    else {
        return;
    };
    let cancelled = ts.submit_ok(json!({"type": "dock.sleep"})).await;
    let running = ts.submit_ok(json!({"type": "dock.sleep"})).await;
    for id in [&cancelled, &running] {
        wait_log_line(&ts, id, "started").await;
    }
    let left = running_container(&host, &cancelled).await;
    let kept = running_container(&host, &running).await;

    fwd.cut();
    let (st, body) = ts
        .post(&format!("/async/jobs/{cancelled}/cancel"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // The worker's stop gives up (10 s without the engine), then so does the container's
    // removal: the output follower's note says the first is over.
    eventually("the stop gave up", Duration::from_secs(40), || async {
        log_lines(&ts, &cancelled)
            .await
            .iter()
            .any(|(_, l)| l.contains("not read to its end in time"))
            .then_some(())
    })
    .await;
    // The removal's three tries (300 ms apart) fail too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        containers_of(&host, &cancelled),
        vec![format!("{left} running")],
        "the cancel left the container running"
    );
    assert_eq!(status_of(&ts.get_job(&cancelled).await), "CANCELLED");

    fwd.restore();
    wait_removed(&host, &cancelled).await;
    // The running job's container was never touched.
    assert_eq!(
        containers_of(&host, &running),
        vec![format!("{kept} running")]
    );
    assert_eq!(status_of(&ts.get_job(&running).await), "RUNNING");
    let (st, body) = ts
        .post(&format!("/async/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    wait_removed(&host, &running).await;
}

/// Which containers the sweep removes: those of a job that ended (F5: a cancel, then runyard
/// killed before the removal, leaves one exited), of a job that does not exist any more
/// (retention) and of an earlier attempt; never one of a running job's current attempt, nor one
/// of another deployment sharing the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_only_containers_whose_job_is_done_with_them() {
    let Some(host) = setup("the_sweep_removes_only") else {
        return;
    };
    let ts = TestServer::builder(&runner_toml(
        &host,
        "dock.*",
        BUSYBOX,
        &[
            "/bin/sh",
            "-c",
            "echo started; [ \"$JOB_TYPE\" = dock.quick ] || sleep 300",
        ],
        "",
    ))
    .config(FAST_SWEEP)
    .start()
    .await;
    let running = ts.submit_ok(json!({"type": "dock.sleep"})).await;
    wait_log_line(&ts, &running, "started").await;
    let real = running_container(&host, &running).await;
    let labels = labels_of(&host, &real);
    let deployment = labels["runyard.deployment"].as_str().unwrap().to_string();
    assert_eq!(deployment.len(), 16, "{labels:#}");
    let ended = ts.submit_ok(json!({"type": "dock.quick"})).await;
    assert_eq!(status_of(&ts.wait_terminal(&ended, WAIT).await), "SUCCESS");
    wait_removed(&host, &ended).await;

    let ours = |job: &str, attempt: &str, detach: bool| {
        labelled_container(
            &host,
            &[
                ("runyard.managed", "true"),
                ("runyard.runner", "dock"),
                ("runyard.deployment", &deployment),
                ("runyard.job-id", job),
                ("runyard.attempt", attempt),
            ],
            detach,
        )
    };
    let deleted_job = uuid::Uuid::now_v7().to_string();
    let swept = [
        ours(&ended, "1", false),
        ours(&deleted_job, "1", true),
        ours(&running, "0", true),
    ];
    let _rm: Vec<Removed> = swept
        .iter()
        .map(|c| Removed(host.clone(), c.clone()))
        .collect();
    let current_attempt = ours(&running, "1", true);
    let _rm_current = Removed(host.clone(), current_attempt.clone());
    let elsewhere = labelled_container(
        &host,
        &[
            ("runyard.managed", "true"),
            ("runyard.runner", "dock"),
            ("runyard.deployment", "0123456789abcdef"),
            ("runyard.job-id", &deleted_job),
            ("runyard.attempt", "1"),
        ],
        true,
    );
    let _rm_elsewhere = Removed(host.clone(), elsewhere.clone());
    for c in &swept {
        let (h, c) = (host.clone(), c.clone());
        eventually(
            "a container its job is done with is swept",
            WAIT,
            move || {
                let gone = !exists(&h, &c);
                async move { gone.then_some(()) }
            },
        )
        .await;
    }
    // Swept in the same passes: left alone.
    assert!(exists(&host, &current_attempt));
    assert!(exists(&host, &elsewhere));
    assert!(containers_of(&host, &running).contains(&format!("{real} running")));
    assert_eq!(status_of(&ts.get_job(&running).await), "RUNNING");

    // Once the job ended (and its worker gave its lease up), its current attempt's is swept too.
    let (st, body) = ts
        .post(&format!("/async/jobs/{running}/cancel"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    wait_removed(&host, &running).await;
    assert!(exists(&host, &elsewhere));
}

/// A server started on a backup (`runyard backup`) while its original runs, on the same engine
/// (probe s48): the copy is another deployment. The original's container of a job running at the
/// backup's moment is not adopted nor stopped by the copy, which runs that job again in a
/// container of its own (labelled with its own fingerprint) without removing the original's at its
/// launch; the container of a job submitted to the original after the backup, which the copy does
/// not know, is not swept by the copy. Both original jobs end SUCCESS in the original. Before, the
/// copy's sweep took the unknown job's container for work left behind and removed it at its
/// start, and its reaper adopted the other one (the copy ran no attempt of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_backup_leaves_the_originals_containers_alone() {
    let Some(host) = setup("backup_beside_original") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, copy) = (dir.path().join("data"), dir.path().join("copy"));
    let runner = runner_toml(
        &host,
        "dock.nap",
        BUSYBOX,
        &["/bin/sh", "-c", "echo up; sleep 8; exit 0"],
        "",
    )
    .replace("max_attempts = 1", "max_attempts = 2");
    let server = |name: &str, data: &Path| {
        let port = support::child::free_port();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{port}"
data_dir = "{data}"

[worker]
lease_ttl = "1s"
kill_grace = "500ms"
poll_interval = "200ms"
sweep_interval = "300ms"
{runner}"#,
                data = data.display(),
            ),
        )
        .unwrap();
        (
            config,
            dir.path().join(format!("{name}.log")),
            format!("http://127.0.0.1:{port}"),
        )
    };
    let (a_cfg, a_log, a) = server("original", &data);
    let (b_cfg, b_log, b) = server("copy", &copy);
    let client = reqwest::Client::new();
    let submit = |url: &str| {
        let r = client
            .post(format!("{url}/async/jobs"))
            .json(&json!({"type": "dock.nap"}))
            .send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            r.json::<Value>().await.unwrap()["job_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let job = |url: &str, id: &str| {
        let r = client.get(format!("{url}/async/jobs/{id}")).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    };

    let _original = ServeProcess::start(&a_cfg, &a_log, &a).await;
    let before = submit(&a).await;
    let before_cid = running_container(&host, &before).await;
    let _c1 = Removed(host.clone(), before_cid.clone());
    let o = Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let after = submit(&a).await;
    let after_cid = running_container(&host, &after).await;
    let _c2 = Removed(host.clone(), after_cid.clone());

    let theirs = labels_of(&host, &before_cid)["runyard.deployment"].clone();
    assert!(theirs.is_string(), "{theirs}");

    let _copy = ServeProcess::start(&b_cfg, &b_log, &b).await;
    // The copy runs the job it requeued in a container of its own, beside the original's.
    let mine = {
        let (h, j, theirs) = (host.clone(), before.clone(), before_cid.clone());
        eventually(
            "the copy's container of the requeued job runs",
            WAIT,
            move || {
                let found = containers_of(&h, &j)
                    .into_iter()
                    .find(|l| l.ends_with(" running") && !l.starts_with(&theirs))
                    .map(|l| l.split(' ').next().unwrap_or_default().to_string());
                async move { found }
            },
        )
        .await
    };
    let _c3 = Removed(host.clone(), mine.clone());
    let labels = labels_of(&host, &mine);
    assert_eq!(labels["runyard.attempt"], "2", "{labels}");
    assert!(labels["runyard.deployment"].is_string(), "{labels}");
    assert_ne!(labels["runyard.deployment"], theirs, "{labels}");
    for id in [&before, &after] {
        let deadline = Instant::now() + Duration::from_secs(40);
        let done = loop {
            let j = job(&a, id).await;
            if is_terminal(&j["status"]) {
                break j;
            }
            assert!(
                Instant::now() < deadline,
                "{j:#}\ncopy's log:\n{}",
                tail(&b_log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            done["status"],
            "SUCCESS",
            "{done:#}\ncopy's log:\n{}",
            tail(&b_log)
        );
        assert_eq!(done["attempt"], 1, "{done:#}");
        assert_eq!(done["exit_code"], 0, "{done:#}");
    }
    // The copy ran the job it had requeued in a container of its own, another deployment's.
    let deadline = Instant::now() + Duration::from_secs(40);
    let again = loop {
        let j = job(&b, &before).await;
        if is_terminal(&j["status"]) {
            break j;
        }
        assert!(Instant::now() < deadline, "{j:#}\n{}", tail(&b_log));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(again["status"], "SUCCESS", "{again:#}");
    assert_eq!(again["attempt"], 2, "{again:#}");
    assert_eq!(again["runs"][0]["outcome"], "LOST", "{again:#}");
    let b_text = std::fs::read_to_string(&b_log).unwrap();
    assert!(
        !b_text.contains("removed work left behind"),
        "the copy swept the original's work:\n{b_text}"
    );
}
