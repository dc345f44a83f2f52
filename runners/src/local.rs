//! The `local` runner: a child process in any language.
//!
//! Each job leads its own session and process group (no controlling terminal), so cancel and
//! timeout stop the whole tree: the group, and what left it ([`crate::session`]); when the job
//! ends by itself its group is killed at once, what left it soon after ([`crate::sweep`]). On
//! Linux the child also gets `PR_SET_PDEATHSIG(SIGKILL)`, so a server killed with `kill -9` does
//! not leave its jobs running as orphans; after a restart, [`LocalRunner::recover`] makes sure the
//! old group is gone (matching the saved pid *and* process start time, so a reused pid is never
//! killed).
//!
//! With `user` / `group` the job runs under another identity, and with `rlimits` under resource
//! limits (see [`crate::isolation`]). A job that runs as another user and has no `cwd` starts in
//! a fresh private directory of its own (`$TMPDIR/runyard-job-...`, mode 0700, created by the
//! job's user), removed when the attempt ends.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::lines::Drain;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::args::{EnvArgs, LargeArgs};
use crate::isolation::{Isolation, IsolationError, Principal, Rlimits};
pub(crate) use crate::node::process_start_time;
use crate::node::{boot_id, node_id};
use crate::session::kill_group;
use crate::workdir::{rand_u64, remove_workdir, WorkdirGuard};
use crate::{
    Execution, JobSpec, LogStream, Outcome, Recovered, RunHandle, Runner, RunnerError,
    SharedReporter,
};

/// Longest log line kept whole; longer lines are split (the one limit of [`crate::lines`]).
pub use crate::lines::MAX_LINE_BYTES;

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
    /// Working directory; when absent, the server's, or a fresh private directory when the job
    /// runs as another `user`.
    pub cwd: Option<PathBuf>,
    /// Run the job as this user (name or uid); its group and supplementary groups follow unless
    /// `group` is set. Needs a server running as root (or with CAP_SETUID and CAP_SETGID).
    #[serde(default)]
    pub user: Option<Principal>,
    /// Run the job with this group (name or gid) as its only group.
    #[serde(default)]
    pub group: Option<Principal>,
    /// Resource limits of the job's processes.
    #[serde(default)]
    pub rlimits: Rlimits,
    /// What is done with args too large for `JOB_ARGS` (see [`crate::args`]).
    #[serde(default)]
    pub large_args: LargeArgs,
}

impl LocalConfig {
    /// Resolves `user`, `group` and `rlimits` (reads the user and group databases).
    pub fn isolation(&self) -> Result<Isolation, IsolationError> {
        Isolation::resolve(self.user.as_ref(), self.group.as_ref(), &self.rlimits)
    }
}

/// Runs jobs as child processes.
pub struct LocalRunner {
    config: LocalConfig,
    isolation: Arc<Isolation>,
}

impl LocalRunner {
    /// A runner for this configuration. The command must not be empty.
    pub fn new(config: LocalConfig) -> Result<Self, RunnerError> {
        if config.command.is_empty() || config.command[0].is_empty() {
            return Err(RunnerError::Invalid(
                "local runner needs a non-empty `command`".into(),
            ));
        }
        let isolation = config
            .isolation()
            .map_err(|e| RunnerError::Invalid(format!("`{}`: {}", e.key, e.message)))?;
        isolation.warn_if_output_stays_the_servers(&config.command[0]);
        // Checked (and warned of) at start: whether the walks of `/proc` can be trusted.
        crate::session::proc_is_ours();
        Ok(Self {
            config,
            isolation: Arc::new(isolation),
        })
    }
}

/// The largest args (as JSON, in bytes) given in `JOB_ARGS` (see [`crate::args`]).
pub use crate::args::MAX_ENV_ARGS;

impl LocalRunner {
    /// A failed start, said as it is: a program that is missing or cannot be executed is final
    /// ([`crate::exec_error::program_error`]); the OS reports a `cwd` that does not exist as the
    /// program missing (`ENOENT` either way), so a missing `cwd` (or one that is a file) is named.
    fn launch_error(&self, e: &std::io::Error, exec_only: bool) -> RunnerError {
        let what = format!("cannot start `{}`", self.config.command[0]);
        if let Some(final_error) = crate::exec_error::program_error(&what, e, exec_only) {
            return final_error;
        }
        match &self.config.cwd {
            Some(d)
                if (e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR))
                    && !d.is_dir() =>
            {
                RunnerError::from_launch_io(
                    &format!("{what}: its `cwd` {} is not a directory", d.display()),
                    e,
                )
            }
            _ => RunnerError::from_launch_io(&what, e),
        }
    }

    /// The job's command and environment (the server's own only through `env_allow`); args too
    /// large for `JOB_ARGS` that `large_args` refuses are [`RunnerError::LaunchFinal`].
    fn command(&self, spec: &JobSpec) -> Result<Command, RunnerError> {
        let mut cmd = Command::new(&self.config.command[0]);
        cmd.args(&self.config.command[1..]);
        cmd.env_clear();
        for name in &self.config.env_allow {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some((name, home)) = self
            .isolation
            .identity
            .as_ref()
            .and_then(|i| i.account.as_ref())
        {
            // The job's own account, not the server's (`env` may still override them).
            cmd.env("USER", name).env("LOGNAME", name).env("HOME", home);
        }
        cmd.envs(&self.config.env);
        cmd.env("JOB_ID", &spec.id)
            .env("JOB_SECRET_KEY", spec.secret.expose())
            .env("JOB_HOOK", &spec.hook_url)
            .env("JOB_TYPE", &spec.job_type)
            .env("JOB_ATTEMPT", spec.attempt.to_string());
        match self.config.large_args.env(&spec.args)? {
            // Nor a `JOB_ARGS_SIZE` of the runner's `env` say they were left out.
            EnvArgs::Inline(args) => cmd.env_remove("JOB_ARGS_SIZE").env("JOB_ARGS", args),
            // A `JOB_ARGS` of the runner's `env` must not stand in for them.
            EnvArgs::Hook { size } => cmd
                .env_remove("JOB_ARGS")
                .env("JOB_ARGS_SIZE", size.to_string()),
        };
        Ok(cmd)
    }

    /// Where the job starts: `cwd` entered as the server, or a directory entered (and made first,
    /// when flagged) as the job's user.
    fn placement(&self, spec: &JobSpec) -> Result<Placement, RunnerError> {
        let switch = self.isolation.switches_user();
        // A job run as another user enters its directory as that user (a `cwd` it cannot use
        // fails the launch), and without `cwd` gets a fresh one of its own: the server's
        // directory may be closed to it.
        let workdir = match (&self.config.cwd, switch) {
            (Some(_), false) => None,
            (Some(cwd), true) => Some((cwd.clone(), false)),
            (None, true) => Some((
                std::env::temp_dir().join(format!(
                    "runyard-job-{}-{}-{:016x}",
                    spec.id,
                    spec.attempt,
                    rand_u64()
                )),
                true,
            )),
            (None, false) => None,
        };
        let workdir_c = match &workdir {
            Some((w, create)) => Some((
                CString::new(w.as_os_str().as_encoded_bytes()).map_err(|_| {
                    RunnerError::Launch(format!("`cwd` {} holds a NUL byte", w.display()))
                })?,
                *create,
            )),
            None => None,
        };
        Ok(Placement {
            cwd: self.config.cwd.clone().filter(|_| !switch),
            workdir: workdir_c,
            // The directory made for the job (removed when it ends).
            made: workdir.and_then(|(w, create)| create.then_some(w)),
        })
    }

    /// Where the job starts, the process settings and what runs between fork and exec;
    /// returns the directory made for the job (removed when it ends), if any.
    fn prepare(&self, spec: &JobSpec, cmd: &mut Command) -> Result<Option<PathBuf>, RunnerError> {
        let Placement {
            cwd,
            workdir: workdir_c,
            made: workdir,
        } = self.placement(spec)?;
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let isolation = self.isolation.clone();
        let umask = crate::isolation::job_umask();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        #[cfg(target_os = "linux")]
        unsafe {
            // Safety: only async-signal-safe calls between fork and exec.
            cmd.pre_exec(move || {
                // A session of its own, as the spawner's jobs (`spawn_vfork`): no controlling
                // terminal, and a process group whose id is the job's pid.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Limits, the pipes' owner, groups, user (in that order), then the private
                // working directory.
                isolation.apply(workdir_c.as_ref().map(|(w, c)| (w.as_c_str(), *c)))?;
                if let Some(m) = umask {
                    libc::umask(m as libc::mode_t);
                }
                // After setuid, which clears the parent-death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() == 1 {
                    libc::_exit(137);
                }
                // 0, 1 and 2 (the job's pipes, already in place) and nothing the server inherited.
                crate::isolation::cloexec_inherited();
                Ok(())
            });
        }
        Ok(workdir)
    }
}

#[async_trait]
impl Runner for LocalRunner {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn validate(&self, _job_type: &str, args: &Value) -> Result<(), RunnerError> {
        self.config.large_args.check(args)
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        if crate::spawn::available() {
            if let Some(execution) = self.launch_spawned(&spec, reporter.clone()).await? {
                return Ok(execution);
            }
            // Every spawner went away before the request reached one: forked, as below.
        }
        let mut cmd = self.command(&spec)?;
        let workdir = self.prepare(&spec, &mut cmd)?;
        // Removes the directory if the child made it but the launch failed.
        let workdir_guard = WorkdirGuard(workdir);
        // Forked, the exec's error and the steps' before it come back alike: only a start that
        // enters no directory is known to have failed at the exec.
        let exec_only = self.config.cwd.is_none() && !self.isolation.switches_user();
        let attempt = crate::sweep::Attempt::register(&spec.id, spec.attempt);
        let mut child = cmd.spawn().map_err(|e| self.launch_error(&e, exec_only))?;
        let pid = child
            .id()
            .ok_or_else(|| RunnerError::Launch("process exited before it had a pid".into()))?;
        let start_time = process_start_time(pid);
        let drain = Drain::new();
        let readers = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => forward(out, err, reporter, drain.clone()),
            _ => Vec::new(),
        };
        Ok(Box::new(LocalExecution {
            child: Proc::Forked(child),
            pid,
            start_time,
            readers,
            drain,
            drain_by: None,
            status: None,
            workdir: workdir_guard.disarm(),
            attempt: Some(attempt),
        }))
    }

    fn reaches(&self, handle: &RunHandle) -> bool {
        match handle.data.get("node") {
            Some(node) => node
                .as_str()
                .is_some_and(|n| Some(n) == node_id().as_deref()),
            None => handle.data.get("boot_id").and_then(Value::as_str) == boot_id().as_deref(),
        }
    }

    fn unrecorded(&self, spec: &JobSpec, node: Option<&str>) -> Option<RunHandle> {
        let data = json!({"node": node, "job_id": spec.id, "attempt": spec.attempt});
        Some(RunHandle {
            kind: crate::RunKind::Local,
            id: String::new(),
            data,
        })
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
        if !self.reaches(handle) {
            return Ok(Recovered::Gone);
        }
        let pid = handle.data.get("pid").and_then(Value::as_u64);
        let start = handle.data.get("start_time").and_then(Value::as_u64);
        let job = handle
            .data
            .get("job_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let (None, Some(job), Some(n)) = (pid, job, handle.data.get("attempt")) {
            // No pid recorded (`Runner::unrecorded`): the attempt's processes, by their marks.
            let n = n.as_u64().unwrap_or_default();
            let user = self.isolation.identity.as_ref().and_then(|i| i.uid);
            for dir in crate::marks::kill_marked_bounded(job, n, user).await? {
                remove_workdir(dir).await;
            }
        }
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            let alive_start = process_start_time(pid as u32);
            let same = alive_start.is_some() && alive_start == start;
            if same || alive_start.is_none() {
                // Leader alive and ours, or leader gone (its group and session may linger).
                kill_group(pid, libc::SIGKILL);
                // Without a saved start time (a handle of an older build) the leader is gone
                // here: a start time no process has keeps a pid reused meanwhile out.
                let leader = [(pid as u32, Some(start.unwrap_or(u64::MAX)))];
                blocking(move || crate::session::kill_all(&leader, &[], Duration::from_secs(2)))
                    .await;
            }
            if same {
                for _ in 0..100 {
                    if !crate::session::lives(pid as u32, start) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if let Some(dir) = handle.data.get("workdir").and_then(Value::as_str) {
            remove_workdir(PathBuf::from(dir)).await;
        }
        Ok(Recovered::Gone)
    }
}

/// Where a job starts (see [`LocalRunner::placement`]).
struct Placement {
    /// Entered as the server.
    cwd: Option<PathBuf>,
    /// Entered as the job's user (made first when flagged).
    workdir: Option<(CString, bool)>,
    /// The directory made for the job, removed when it ends.
    made: Option<PathBuf>,
}

impl LocalRunner {
    /// [`Runner::launch`] through a spawner process (see [`crate::spawn`]); `None` when none was
    /// left to take the job.
    async fn launch_spawned(
        &self,
        spec: &JobSpec,
        reporter: SharedReporter,
    ) -> Result<Option<Box<dyn Execution>>, RunnerError> {
        let cmd = self.command(spec)?;
        let place = self.placement(spec)?;
        // Removes the directory if the child made it but the launch failed.
        let workdir_guard = WorkdirGuard(place.made.clone());
        let req = crate::spawn::request(
            cmd.as_std(),
            place.cwd.as_deref(),
            place.workdir.as_ref().map(|(w, c)| (w.as_c_str(), *c)),
            crate::isolation::job_umask(),
            &self.isolation,
        );
        let what = format!("cannot start `{}`", self.config.command[0]);
        let attempt = crate::sweep::Attempt::register(&spec.id, spec.attempt);
        let Some(started) = crate::spawn::start(req).await else {
            return Ok(None);
        };
        let started = started.map_err(|e| self.launch_error(&e, false))?;
        let pipe = |fd| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| RunnerError::from_launch_io(&what, &e))
        };
        let (out, err) = match (pipe(started.stdout), pipe(started.stderr)) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                kill_group(started.pid as i32, libc::SIGKILL);
                return Err(e);
            }
        };
        let drain = Drain::new();
        Ok(Some(Box::new(LocalExecution {
            child: Proc::Spawned(started.child),
            pid: started.pid,
            start_time: started.start_time,
            readers: forward(out, err, reporter, drain.clone()),
            drain,
            drain_by: None,
            status: None,
            workdir: workdir_guard.disarm(),
            attempt: Some(attempt.by(started.spawner)),
        })))
    }
}

/// Forwards a job's stdout and stderr as log lines: one task for both pipes (a task per pipe
/// cost a second spawn, wake-up and join per job).
fn forward<O, E>(out: O, err: E, reporter: SharedReporter, drain: Drain) -> Vec<JoinHandle<()>>
where
    O: tokio::io::AsyncRead + Unpin + Send + 'static,
    E: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    vec![tokio::spawn(async move {
        tokio::join!(
            crate::lines::forward_lines(out, LogStream::Stdout, reporter.clone(), drain.clone()),
            crate::lines::forward_lines(err, LogStream::Stderr, reporter, drain),
        );
    })]
}

/// A job's process: a child of the server, or of the spawner.
enum Proc {
    Forked(Child),
    Spawned(crate::spawn::SpawnedChild),
}

impl Proc {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Proc::Forked(c) => c.wait().await,
            Proc::Spawned(s) => s.wait().await,
        }
    }
}

struct LocalExecution {
    child: Proc,
    pid: u32,
    start_time: Option<u64>,
    readers: Vec<JoinHandle<()>>,
    /// Cancelled near the drain deadline (or at a stop): the readers stop waiting for room.
    drain: Drain,
    /// Until when the log readers may drain, once the exit was seen (and the group killed).
    drain_by: Option<tokio::time::Instant>,
    status: Option<Outcome>,
    /// The private working directory made for the job, removed once it has ended.
    workdir: Option<PathBuf>,
    /// Registered from before the job starts, handed to the sweeper at its end (`crate::sweep`).
    attempt: Option<crate::sweep::Attempt>,
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
                "workdir": self.workdir.as_deref().map(Path::to_string_lossy),
            }),
        }
    }

    /// Cancel-safe at every step (the worker races it against recording the start): the exit
    /// status is kept once reaped, the group is killed once, a log reader is let go only once it
    /// has drained (or its deadline passed, kept across calls), the directory is forgotten only
    /// once removed; a call after a dropped one picks up where it stopped.
    async fn wait(&mut self) -> Outcome {
        if let Some(o) = &self.status {
            return o.clone();
        }
        let status = self.child.wait().await;
        let drain_by = match self.drain_by {
            Some(t) => t,
            None => {
                // The leader is gone: whatever it left behind in its group goes with it, and the
                // rest (its session, what left it) soon after, without waiting here.
                kill_group(self.pid as i32, libc::SIGKILL);
                if let Some(a) = self.attempt.take() {
                    crate::sweep::ended(self.pid, a);
                }
                // Bounded: a grandchild that left the group could hold the pipe open.
                let t = tokio::time::Instant::now() + Duration::from_secs(2);
                self.drain_by = Some(t);
                t
            }
        };
        // Let the log readers drain what was written before the exit; in the last 500 ms they
        // wait for room no more (the oldest go) and read for `LAST_READS`: the last lines too.
        let soft = drain_by - Duration::from_millis(500);
        while let Some(r) = self.readers.last_mut() {
            if tokio::time::timeout_at(soft, &mut *r).await.is_err() {
                self.drain.end_soon();
                let _ = tokio::time::timeout_at(drain_by, &mut *r).await;
            }
            r.abort(); // past the deadline (a pipe held by a grandchild): no line after the end
            self.readers.pop();
        }
        let outcome = match status {
            Ok(s) => Outcome::of_exit(s),
            Err(e) => Outcome::failed(format!("cannot wait for process: {e}")),
        };
        if let Some(dir) = &self.workdir {
            remove_workdir(dir.clone()).await;
            self.workdir = None;
        }
        self.status = Some(outcome.clone());
        outcome
    }

    async fn stop(&mut self, grace: Duration) -> bool {
        if self.status.is_some() {
            return true;
        }
        // The job's processes outside its group (`crate::session`), found while its leader
        // still runs (their parent links to it are lost once it has gone).
        let leader = [(self.pid, self.start_time)];
        let others = blocking(move || crate::session::members(&leader, &[])).await;
        self.drain.stop_waiting();
        kill_group(self.pid as i32, libc::SIGTERM);
        let outside: Vec<_> = others
            .iter()
            .filter(|m| m.pgrp != self.pid)
            .copied()
            .collect();
        crate::session::signal(&outside, libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            kill_group(self.pid as i32, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        kill_group(self.pid as i32, libc::SIGKILL);
        blocking(move || crate::session::kill_all(&leader, &others, Duration::from_secs(2))).await;
        if let Some(a) = self.attempt.take() {
            // What left the session once its parent had exited (`crate::sweep`).
            crate::sweep::ended(self.pid, a);
        }
        if let Some(dir) = self.workdir.take() {
            remove_workdir(dir).await;
        }
        // The process was waited for; its group, its session and its descendants got SIGKILL.
        true
    }
}

/// Runs `f` on a blocking thread (a walk of `/proc`); its default value if that thread is lost.
async fn blocking<T: Default + Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reporter;

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
        spec_with(json!({"a": 1}))
    }

    fn spec_with(args: Value) -> JobSpec {
        JobSpec {
            id: "0190-test".into(),
            job_type: "t.x".into(),
            args,
            attempt: 1,
            secret: crate::Secret::from_string("s3cr3t".into()),
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

    /// Review 18: args too large for `JOB_ARGS` are refused by default (at submit, and at
    /// launch without a retry), never given to a command as no args; with `large_args = "hook"`
    /// the job gets `JOB_ARGS_SIZE` instead (a `JOB_ARGS` of the runner's `env` left out too).
    #[tokio::test]
    async fn args_too_large_for_the_environment_are_refused_or_left_to_the_hook() {
        let with = |large_args| {
            LocalRunner::new(LocalConfig {
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo args=${JOB_ARGS-unset} size=$JOB_ARGS_SIZE".into(),
                ],
                env: BTreeMap::from([("JOB_ARGS".into(), "{}".into())]),
                large_args,
                ..Default::default()
            })
            .unwrap()
        };
        let big = spec_with(json!({"x": "A".repeat(200_000 - 8)}));
        let refuse = with(LargeArgs::Refuse);
        let e = refuse.validate("t.x", &big.args).unwrap_err();
        assert!(
            matches!(e, RunnerError::ArgsTooLarge { size: 200_000, .. }),
            "{e:?}"
        );
        let e = match refuse.launch(big.clone(), Arc::new(Lines::default())).await {
            Ok(_) => panic!("launched with args too large"),
            Err(e) => e,
        };
        assert!(
            e.is_final() && e.to_string().contains("large_args"),
            "{e:?}"
        );

        let hook = with(LargeArgs::Hook);
        assert!(hook.validate("t.x", &big.args).is_ok());
        let lines = Arc::new(Lines::default());
        let mut ex = hook.launch(big, lines.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        assert_eq!(lines.0.lock().unwrap()[0].1, "args=unset size=200000");
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

    /// The worker races `wait` against recording the start and may drop it at any step: a
    /// dropped `wait` that had seen the exit and was draining the log pipes must leave the rest
    /// of the draining to the next call (the output is all there when the outcome is).
    #[tokio::test]
    async fn a_dropped_wait_resumes_draining_the_logs() {
        let dir = tempfile_dir();
        let go = dir.join("go");
        let lines = Arc::new(Lines::default());
        // A process of another session (out of reach of the group kill) keeps the pipe open and
        // writes a line once told to.
        let r = sh(&format!(
            "setsid sh -c 'touch {r}; while [ ! -e {g} ]; do sleep 0.01; done; echo late' & \
             while [ ! -e {r} ]; do sleep 0.01; done; echo early",
            r = dir.join("ready").display(),
            g = go.display()
        ));
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        let leader: u32 = ex.handle().id.parse().unwrap();
        // Dropped `wait`s, until one of them has reaped the leader (it then drains the pipes).
        loop {
            let w = tokio::time::timeout(Duration::from_millis(20), ex.wait()).await;
            assert!(w.is_err(), "the pipe is held open: {w:?}");
            if !Path::new(&format!("/proc/{leader}")).exists() {
                break;
            }
        }
        std::fs::write(&go, b"").unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        let got: Vec<String> = lines
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.1.clone())
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, ["early", "late"]);
    }

    /// A sink that takes nothing until its gate opens (a store paused at the job's exit).
    struct Paused(
        Arc<tokio::sync::Semaphore>,
        Arc<std::sync::Mutex<Vec<String>>>,
    );

    #[async_trait]
    impl crate::buffered::BatchSink for Paused {
        async fn send(&self, batch: crate::buffered::Batch) {
            let _ = self.0.acquire().await.map(|p| p.forget());
            let mut got = self.1.lock().unwrap();
            got.extend(batch.lines.into_iter().map(|l| l.2));
        }
    }

    /// Review of the backpressure change: a job that wrote many lines, then its error, and
    /// exited while the store took nothing. Its readers stop waiting for room before the end of
    /// the drain window (the oldest lines go, with the note): the final flush, which the worker
    /// makes before it records the finish, carries the job's last lines. Before, the readers
    /// still waited for room, `wait` let them go after 2 s, and the error was not in that flush.
    #[tokio::test]
    async fn the_last_lines_are_in_the_final_flush_even_when_the_store_is_paused_at_exit() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Paused(gate.clone(), got.clone());
        let hour = Duration::from_secs(3600);
        let reporter = crate::buffered::BufferedReporter::new(sink, hour, 100);
        let r = sh("i=0; while [ $i -lt 1000 ]; do echo $i; i=$((i+1)); done; echo FATAL >&2");
        let mut ex = r.launch(spec(), reporter.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        gate.add_permits(100);
        reporter.flush().await;
        let got = got.lock().unwrap().clone();
        assert!(got.contains(&"FATAL".to_string()), "{got:?}");
        assert!(got.contains(&"999".to_string()), "{got:?}");
        assert!(got[0].contains("line(s) dropped"), "{got:?}");
        assert_eq!(got.len(), 101, "{got:?}");
    }

    /// Second review of the drain: a reader still running at the drain deadline (a grandchild
    /// out of the job's group holds the pipe open) was let go, not stopped: it kept the
    /// reporter and stored what the grandchild wrote after the job's end (possibly into the next
    /// attempt). Now it is aborted there: the reporter is dropped, `late` never arrives.
    #[tokio::test]
    async fn a_grandchild_holding_the_pipe_writes_nothing_after_the_end() {
        let dir = tempfile_dir();
        let mark = dir.join("wrote");
        let lines = Arc::new(Lines::default());
        let r = sh(&format!(
            "setsid sh -c 'touch {r}; sleep 3; (echo late); touch {m}' & \
             while [ ! -e {r} ]; do sleep 0.01; done; echo early",
            r = dir.join("ready").display(),
            m = mark.display()
        ));
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        let text = |l: &Lines| -> Vec<String> {
            l.0.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
        };
        assert_eq!(text(&lines), ["early"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&lines) > 1 || !mark.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "reader kept ({}) or the grandchild did not write",
                Arc::strong_count(&lines)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The grandchild wrote (or died of SIGPIPE trying): nothing read it.
        assert_eq!(text(&lines), ["early"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A last line without its newline was lost when a grandchild out of the job's group held
    /// the pipe past the drain deadline: its reader was aborted with the line in its splitter.
    #[tokio::test]
    async fn a_last_line_without_newline_is_kept_when_a_grandchild_holds_the_pipe() {
        let dir = tempfile_dir();
        let lines = Arc::new(Lines::default());
        let r = sh(&format!(
            "setsid sh -c 'touch {r}; sleep 5' & \
             while [ ! -e {r} ]; do sleep 0.01; done; echo early; printf 'last words'",
            r = dir.join("ready").display(),
        ));
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        let got: Vec<String> = lines
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        assert_eq!(got, ["early", "last words"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("runyard-test-wait-{:016x}", rand_u64()));
        std::fs::create_dir(&d).unwrap();
        d
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

    /// Forked by the server (no spawner): the job leads a session of its own (so it has no
    /// controlling terminal), and a stop reaches what left its group: GNU `timeout` puts itself
    /// and its command in a group of their own.
    #[tokio::test]
    async fn a_forked_job_leads_its_session_and_stop_kills_what_left_the_group() {
        let lines = Arc::new(Lines::default());
        let r = sh("timeout 1000 sleep 999 & echo bg=$!; \
                    echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; wait");
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        let value = |key: &str| {
            lines
                .0
                .lock()
                .unwrap()
                .iter()
                .find_map(|(_, l)| l.strip_prefix(key).map(str::to_string))
        };
        let (bg, sid) = loop {
            if let (Some(bg), Some(sid)) = (value("bg="), value("sid=")) {
                break (bg.parse::<u32>().unwrap(), sid);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let leader = ex.handle().id;
        assert_eq!(sid, format!("{leader} pid={leader}"));
        // `timeout` has started `sleep`, in its own group.
        let children = |p: u32| {
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default()
        };
        let sleep: u32 = loop {
            if let Some(c) = children(bg).split_whitespace().next() {
                break c.parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        ex.stop(Duration::from_millis(200)).await;
        assert!(matches!(ex.wait().await, Outcome::Failed { .. }));
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        };
        for _ in 0..250 {
            if !alive(bg) && !alive(sleep) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left: Vec<u32> = [bg, sleep].into_iter().filter(|p| alive(*p)).collect();
        for p in &left {
            // Safety: plain syscall on a process this test's job started (none left behind).
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        assert!(
            left.is_empty(),
            "outside the job's group, still alive after stop: {left:?}"
        );
    }

    /// Probe `session`, forked by the server (no spawner): what left the job's group but not its
    /// session (GNU `timeout` and its command) is killed soon after the job ends by itself.
    #[tokio::test]
    async fn a_forked_job_that_ends_leaves_nothing_of_its_session() {
        let lines = Arc::new(Lines::default());
        // Once `timeout` leads its own group, the job prints its pid and start time, and ends.
        let r = sh(
            "timeout 100 sleep 331 </dev/null >/dev/null 2>&1 & t=$!; i=0; \
                    while [ $i -lt 400 ] && [ \"$(cut -d' ' -f5 /proc/$t/stat)\" != $t ]; \
                    do sleep 0.05; i=$((i+1)); done; echo $t $(cut -d' ' -f22 /proc/$t/stat)",
        );
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        let line = lines.0.lock().unwrap()[0].1.clone();
        let (pid, start) = line.split_once(' ').unwrap();
        let (pid, start): (u32, u64) = (pid.parse().unwrap(), start.parse().unwrap());
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while crate::session::lives(pid, Some(start)) {
            if std::time::Instant::now() > until {
                // Safety: plain syscall on the group of `timeout` (and its command), which
                // this test's job started.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                panic!("`timeout` ({pid}) still runs 10 s after its job ended");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Without a recorded pid (`Runner::unrecorded`: the worker hung before it stored the
    /// handle) the attempt's processes are found by `JOB_ID` and `JOB_ATTEMPT` and killed with
    /// their group; another attempt of the same job is left alone, and nothing is done for a
    /// node that is not this one.
    #[tokio::test]
    async fn recover_without_a_pid_kills_the_attempts_marked_processes_only() {
        let r = sh("sleep 30 & sleep 30");
        let one = JobSpec {
            id: "0190-unrecorded".into(),
            ..spec()
        };
        let two = JobSpec {
            attempt: 2,
            ..one.clone()
        };
        let mut ex1 = r
            .launch(one.clone(), Arc::new(Lines::default()))
            .await
            .unwrap();
        let mut ex2 = r.launch(two, Arc::new(Lines::default())).await.unwrap();
        // The live processes of the attempt's group (zombies left to be reaped are not).
        let group = |ex: &dyn Execution| {
            let pid: u32 = ex.handle().id.parse().unwrap();
            !crate::session::members(&[(pid, None)], &[]).is_empty()
        };
        let far = r.unrecorded(&one, Some("0123456789abcdef")).unwrap();
        assert!(!r.reaches(&far));
        assert!(!r.reaches(&r.unrecorded(&one, None).unwrap()));
        let here = r.unrecorded(&one, node_id().as_deref()).unwrap();
        assert!(r.reaches(&here));
        let got = r
            .recover(&here, one, Arc::new(Lines::default()))
            .await
            .unwrap();
        assert!(matches!(got, Recovered::Gone));
        let out = ex1.wait().await;
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
        assert!(
            !group(ex1.as_ref()),
            "the attempt's group is gone, its background child too"
        );
        assert!(group(ex2.as_ref()), "another attempt runs on");
        assert!(ex2.stop(Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn recover_never_kills_on_another_machine() {
        let r = sh("sleep 30");
        let mut ex = r.launch(spec(), Arc::new(Lines::default())).await.unwrap();
        let mut h = ex.handle();
        assert!(h.data["boot_id"].is_string());
        // The same pid, from a handle made on another machine: left alone.
        h.data["boot_id"] = json!("another-machine");
        assert!(!r.reaches(&h));
        assert!(r.reaches(&ex.handle()));
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

    /// A runner whose jobs run as `user` (root here: the private directory is made all the same).
    fn sh_as(user: &str, script: &str, cwd: Option<PathBuf>) -> LocalRunner {
        LocalRunner::new(LocalConfig {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env_allow: vec!["PATH".into()],
            user: Some(Principal::Name(user.into())),
            cwd,
            ..Default::default()
        })
        .unwrap()
    }

    fn is_root() -> bool {
        // Safety: plain syscall.
        unsafe { libc::geteuid() == 0 }
    }

    /// A job with a private directory whose worker hung before it recorded the handle: the
    /// recovery by its marks kills it and removes that directory (read from the processes'
    /// working directory before the kill), as with a recorded handle.
    #[tokio::test]
    async fn an_unrecorded_attempt_has_its_private_directory_removed() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let lines = Arc::new(Lines::default());
        let r = sh_as("root", "pwd; sleep 30", None);
        let mut one = spec();
        one.id = "0190-unrecorded-dir".into();
        let mut ex = r.launch(one.clone(), lines.clone()).await.unwrap();
        let dir = loop {
            if let Some((_, l)) = lines.0.lock().unwrap().first() {
                break PathBuf::from(l);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(dir.exists());
        let here = r.unrecorded(&one, node_id().as_deref()).unwrap();
        let got = r
            .recover(&here, one, Arc::new(Lines::default()))
            .await
            .unwrap();
        assert!(matches!(got, Recovered::Gone));
        // Before this process's own execution ends (which removes it too).
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(matches!(ex.wait().await, Outcome::Failed { .. }));
    }

    #[tokio::test]
    async fn a_job_of_another_user_gets_a_private_directory_removed_at_the_end() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let lines = Arc::new(Lines::default());
        let r = sh_as("root", "pwd; echo x > made-here; sleep 30", None);
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        let dir = loop {
            if let Some((_, l)) = lines.0.lock().unwrap().first() {
                break PathBuf::from(l);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(dir.parent(), Some(std::env::temp_dir().as_path()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(ex.handle().data["workdir"], json!(dir.to_string_lossy()));
        // After a crash: recovery kills the job and removes its directory.
        let got = r
            .recover(&ex.handle(), spec(), Arc::new(Lines::default()))
            .await
            .unwrap();
        assert!(matches!(got, Recovered::Gone));
        assert!(!dir.exists(), "{} left behind", dir.display());
        ex.wait().await;

        // A job that ends normally: removed too.
        let lines = Arc::new(Lines::default());
        let r = sh_as("root", "pwd; echo x > made-here", None);
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        assert_eq!(ex.wait().await, Outcome::Success { result: None });
        let dir = PathBuf::from(&lines.0.lock().unwrap()[0].1);
        assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[tokio::test]
    async fn a_cwd_the_job_user_cannot_enter_fails_the_launch() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = std::env::temp_dir().join(format!("runyard-test-closed-{:016x}", rand_u64()));
        std::fs::create_dir(&t).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = sh_as("nobody", "pwd", Some(t.clone()));
        let got = r.launch(spec(), Arc::new(Lines::default())).await;
        let _ = std::fs::remove_dir(&t);
        let err = got.err().expect("the launch must fail").to_string();
        assert!(err.contains("Permission denied"), "{err}");
    }

    /// The fork path (no spawner in this process) gives the job's output pipes to its user as
    /// the spawner does: a job run as `nobody` re-opens them by name (`/dev/stdout`,
    /// `/dev/stderr`: `/proc/self/fd/N`), which was refused while they stayed the server's.
    #[tokio::test]
    async fn a_forked_job_of_another_user_writes_through_dev_stdout_and_dev_stderr() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        assert!(!crate::spawn::available(), "this must take the fork path");
        let lines = Arc::new(Lines::default());
        let r = sh_as(
            "nobody",
            "set -e; echo by-dev-stdout > /dev/stdout; echo by-dev-stderr > /dev/stderr; \
             echo by-tee | tee /dev/stderr; id -u",
            None,
        );
        let mut ex = r.launch(spec(), lines.clone()).await.unwrap();
        let out = ex.wait().await;
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(out, Outcome::Success { result: None }, "{got:?}");
        for want in [
            (LogStream::Stdout, "65534"),
            (LogStream::Stdout, "by-dev-stdout"),
            (LogStream::Stderr, "by-dev-stderr"),
            (LogStream::Stdout, "by-tee"),
            (LogStream::Stderr, "by-tee"),
        ] {
            assert!(got.contains(&(want.0, want.1.into())), "{want:?}: {got:?}");
        }
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(LocalRunner::new(LocalConfig::default()).is_err());
    }
}
