//! The `local` runner: a child process in any language.
//!
//! Each job runs in its own process group, so cancel and timeout stop the whole tree. On Linux the
//! child also gets `PR_SET_PDEATHSIG(SIGKILL)`, so a server killed with `kill -9` does not leave
//! its jobs running as orphans; after a restart, [`LocalRunner::recover`] makes sure the old group
//! is gone (matching the saved pid *and* process start time, so a reused pid is never killed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::{
    Execution, JobSpec, LogStream, Outcome, Recovered, Reporter, RunHandle, Runner, RunnerError,
    SharedReporter,
};

/// Longest log line kept whole; longer lines are split.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Environment variables passed from the server's own environment by default.
pub const DEFAULT_ENV_ALLOW: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// Configuration of a local runner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalConfig {
    /// Program and arguments, e.g. `["python3", "jobs/report.py"]`.
    pub command: Vec<String>,
    /// Extra environment variables for the job.
    pub env: BTreeMap<String, String>,
    /// Names of the server's own environment variables passed through (the rest are not).
    pub env_allow: Vec<String>,
    /// Working directory; the server's when absent.
    pub cwd: Option<PathBuf>,
}

/// Runs jobs as child processes.
pub struct LocalRunner {
    config: LocalConfig,
}

impl LocalRunner {
    /// A runner for this configuration. The command must not be empty.
    pub fn new(config: LocalConfig) -> Result<Self, RunnerError> {
        if config.command.is_empty() || config.command[0].is_empty() {
            return Err(RunnerError::Invalid(
                "local runner needs a non-empty `command`".into(),
            ));
        }
        Ok(Self { config })
    }
}

#[async_trait]
impl Runner for LocalRunner {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        let mut cmd = Command::new(&self.config.command[0]);
        cmd.args(&self.config.command[1..]);
        cmd.env_clear();
        for name in &self.config.env_allow {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.envs(&self.config.env);
        cmd.env("JOB_ID", &spec.id)
            .env("JOB_SECRET_KEY", spec.secret.expose())
            .env("JOB_HOOK", &spec.hook_url)
            .env("JOB_TYPE", &spec.job_type)
            .env("JOB_ATTEMPT", spec.attempt.to_string())
            .env("JOB_ARGS", spec.args.to_string());
        if let Some(cwd) = &self.config.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        #[cfg(target_os = "linux")]
        unsafe {
            // Safety: only async-signal-safe calls between fork and exec.
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() == 1 {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            RunnerError::from_launch_io(&format!("cannot start `{}`", self.config.command[0]), &e)
        })?;
        let pid = child
            .id()
            .ok_or_else(|| RunnerError::Launch("process exited before it had a pid".into()))?;
        let start_time = process_start_time(pid);
        let mut readers = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward_lines(
                out,
                LogStream::Stdout,
                reporter.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward_lines(
                err,
                LogStream::Stderr,
                reporter,
            )));
        }
        Ok(Box::new(LocalExecution {
            child,
            pid,
            start_time,
            readers,
            status: None,
        }))
    }

    async fn recover(
        &self,
        handle: &RunHandle,
        _spec: JobSpec,
        _reporter: SharedReporter,
    ) -> Result<Recovered, RunnerError> {
        // A child process cannot be waited on by a new parent: make sure it is gone. Only where
        // the pid means the same process (same boot, same pid namespace): elsewhere it names
        // another process, and the dead worker's children died with it (PR_SET_PDEATHSIG).
        if handle.data.get("boot_id").and_then(Value::as_str) != boot_id().as_deref() {
            return Ok(Recovered::Gone);
        }
        let pid = handle.data.get("pid").and_then(Value::as_u64);
        let start = handle.data.get("start_time").and_then(Value::as_u64);
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            let alive_start = process_start_time(pid as u32);
            let same = alive_start.is_some() && alive_start == start;
            if same || alive_start.is_none() {
                // Leader alive and ours, or leader gone (its group may linger).
                kill_group(pid, libc::SIGKILL);
            }
            if same {
                for _ in 0..100 {
                    if process_start_time(pid as u32) != start {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(Recovered::Gone)
    }
}

struct LocalExecution {
    child: Child,
    pid: u32,
    start_time: Option<u64>,
    readers: Vec<JoinHandle<()>>,
    status: Option<Outcome>,
}

#[async_trait]
impl Execution for LocalExecution {
    fn handle(&self) -> RunHandle {
        RunHandle {
            kind: "local".into(),
            id: self.pid.to_string(),
            data: json!({
                "pid": self.pid,
                "start_time": self.start_time,
                "boot_id": boot_id(),
            }),
        }
    }

    async fn wait(&mut self) -> Outcome {
        if let Some(o) = &self.status {
            return o.clone();
        }
        let status = self.child.wait().await;
        // The leader is gone: whatever it left behind in its group goes with it.
        kill_group(self.pid as i32, libc::SIGKILL);
        // Let the log readers drain what was written before the exit (bounded: a grandchild that
        // left the group could hold the pipe open).
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        let outcome = match status {
            Ok(s) => outcome_of(s),
            Err(e) => Outcome::failed(format!("cannot wait for process: {e}")),
        };
        self.status = Some(outcome.clone());
        outcome
    }

    async fn stop(&mut self, grace: Duration) {
        if self.status.is_some() {
            return;
        }
        kill_group(self.pid as i32, libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            kill_group(self.pid as i32, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        kill_group(self.pid as i32, libc::SIGKILL);
    }
}

fn outcome_of(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Outcome::Success { result: None };
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Failed {
            message: format!("process exited with code {code}"),
            exit_code: Some(code),
        },
        (None, Some(sig)) => Outcome::Failed {
            message: format!("process killed by signal {sig}"),
            exit_code: Some(128 + sig),
        },
        _ => Outcome::failed("process ended abnormally"),
    }
}

fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // Safety: plain syscall; ESRCH (no such group) is expected and ignored.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Where a pid means something: this machine's boot (`boot_id` changes on another machine or
/// after a reboot) and this process's pid namespace (two containers on one host share the boot
/// id, not the pids). A handle from elsewhere is never acted on.
fn boot_id() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// The start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after the command: state is field 3, start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

async fn forward_lines<R: AsyncRead + Unpin>(
    pipe: R,
    stream: LogStream,
    reporter: Arc<dyn Reporter>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        reporter.log(stream, String::from_utf8_lossy(&buf).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects log lines.
    #[derive(Default)]
    struct Lines(std::sync::Mutex<Vec<(LogStream, String)>>);
    impl Reporter for Lines {
        fn log(&self, stream: LogStream, line: String) {
            self.0.lock().unwrap().push((stream, line));
        }
        fn progress(&self, _p: f64, _d: Option<Value>) {}
    }

    fn spec() -> JobSpec {
        JobSpec {
            id: "0190-test".into(),
            job_type: "t.x".into(),
            args: json!({"a": 1}),
            attempt: 1,
            secret: crate::Secret::from_string("s3cr3t".into()),
            hook_url: "http://127.0.0.1:1/async".into(),
            timeout: None,
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

    #[tokio::test]
    async fn captures_output_env_and_exit_code() {
        let lines = Arc::new(Lines::default());
        let r = sh("echo id=$JOB_ID args=$JOB_ARGS; echo oops >&2; exit 3");
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
        assert!(got.contains(&(LogStream::Stdout, "id=0190-test args={\"a\":1}".into())));
        assert!(got.contains(&(LogStream::Stderr, "oops".into())));
    }

    #[tokio::test]
    async fn stop_kills_the_whole_tree() {
        let lines = Arc::new(Lines::default());
        let r = sh("sleep 300 & echo child=$!; sleep 300");
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        let child_pid = loop {
            if let Some((_, l)) = lines.0.lock().unwrap().first() {
                break l.trim_start_matches("child=").parse::<u32>().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let leader: u32 = ex.handle().id.parse().unwrap();
        ex.stop(Duration::from_millis(200)).await;
        let out = ex.wait().await;
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
        for pid in [leader, child_pid] {
            // Zombies are reaped by us (leader) or by init (grandchild); give init a moment.
            let mut gone = false;
            for _ in 0..100 {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                if state.is_none_or(|s| s.contains(") Z")) {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(gone, "pid {pid} still alive after stop");
        }
    }

    #[tokio::test]
    async fn recover_never_kills_on_another_machine() {
        let r = sh("sleep 30");
        let mut ex = r.launch(spec(), Arc::new(Lines::default())).await.unwrap();
        let mut h = ex.handle();
        assert!(h.data["boot_id"].is_string());
        // The same pid, from a handle made on another machine: left alone.
        h.data["boot_id"] = json!("another-machine");
        let got = r
            .recover(&h, spec(), Arc::new(Lines::default()))
            .await
            .unwrap();
        assert!(matches!(got, Recovered::Gone));
        let pid = ex.handle().id;
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "still running"
        );
        // The real handle: the group is killed.
        let got = r
            .recover(&ex.handle(), spec(), Arc::new(Lines::default()))
            .await
            .unwrap();
        assert!(matches!(got, Recovered::Gone));
        let out = ex.wait().await;
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(LocalRunner::new(LocalConfig::default()).is_err());
    }
}
