//! runyard runners: what actually executes a job.
//!
//! # Layout
//! - [`Runner`] launches a job and returns an [`Execution`]; an execution can be waited on
//!   (cancel-safe) and stopped. Its [`RunHandle`] is saved on the job, so that after a restart the
//!   runner can find the work again with [`Runner::recover`].
//! - [`Reporter`] is how a runner streams logs and progress back to the server while the job runs;
//!   [`lines`] is the one line forwarder (one [`MAX_LINE_BYTES`]) every runner uses for output;
//!   [`buffered`] is the one buffered reporter (the worker's and `runyard launch`'s).
//! - [`local`]: a child process leading its own session and process group (any language),
//!   optionally as another user and under resource limits ([`isolation`]).
//! - [`service`]: an in-process async Rust function registered by name.
//! - [`docker`]: a container of the Docker Engine API, found again by its labels after a restart.
//! - [`kube`]: a Kubernetes batch/v1 Job per attempt, found again by its labels after a restart.
//!
//! A runner never touches the store: it launches, reports what happened, and can be stopped.
//! Retries, timeouts and status transitions are the worker's business.

// Issue 8's limit: no function over 80 lines (clippy.toml's threshold) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod args;
pub mod buffered;
pub mod docker;
mod exec_error;
pub mod isolation;
pub mod kube;
pub mod lines;
pub mod local;
mod marks;
mod node;
pub mod service;
mod session;
pub mod spawn;
mod spawn_process;
mod spawn_vfork;
mod spawn_wire;
mod sweep;
mod workdir;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use marks::ScanSlot;
pub use node::node_id;
pub use runyard_hooks::Secret;
/// The shared vocabulary, defined on the bottom floor (`runyard_hooks::vocab`) and re-exported
/// here so that runner code and embedders keep their paths.
pub use runyard_hooks::{LogStream, RunHandle, RunKind, MAX_LINE_BYTES};

/// Everything a runner needs to know to start one attempt of a job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job id (UUID v7, as a string).
    pub id: String,
    /// The job's dotted type, e.g. `report.daily`.
    pub job_type: String,
    /// The job's arguments.
    pub args: Value,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// The secret the job signs its hook calls with; unique to this attempt.
    pub secret: Secret,
    /// The hook base URL (`{public_url}/async`).
    pub hook_url: String,
    /// The attempt's time limit, when it has one (the worker enforces it; runners whose work can
    /// outlive the server, like `kube`, also hand it to their backend as a backstop).
    pub timeout: Option<Duration>,
    /// The deployment's fingerprint ([`runyard_hooks::deployment_id`]), labelled on the work so
    /// that [`Runner::leftovers`] lists only this deployment's; empty: none (tests, `launch`).
    pub deployment: String,
}

/// Receives what a running job says. Implementations must be cheap and never block:
/// the worker buffers and writes in batches.
pub trait Reporter: Send + Sync {
    /// One log line (without its trailing newline).
    fn log(&self, stream: LogStream, line: String);
    /// Progress between 0 and 1, with optional details.
    fn progress(&self, progress: f64, details: Option<Value>);
    /// When the last log line already stored for this attempt was written, if known: a runner
    /// that recovers running work (kube) copies its logs from then on.
    fn last_log_time(&self) -> Option<std::time::SystemTime> {
        None
    }
    /// Resolves once the reporter has room for another line. A pipe reader awaits it before
    /// each line (backpressure: while it waits it does not read, so the job waits in its
    /// write, as with Docker's and Kubernetes' logs, instead of its lines being dropped). A
    /// reporter bounds the wait (a store that cannot take lines for long: it then drops the
    /// oldest and says so). By default there is always room.
    fn room(&self) -> Room<'_> {
        Box::pin(std::future::ready(()))
    }
}

/// What [`Reporter::room`] returns.
pub type Room<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A reporter that drops everything (tests, benchmarks).
pub struct NullReporter;

impl Reporter for NullReporter {
    fn log(&self, _stream: LogStream, _line: String) {}
    fn progress(&self, _progress: f64, _details: Option<Value>) {}
}

/// How one execution ended, as far as the runner can tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The work finished successfully, maybe with a result.
    Success {
        /// The result value, when the runner has one (service functions).
        result: Option<Value>,
    },
    /// The work failed.
    Failed {
        /// A one-line explanation, e.g. `process exited with code 3`.
        message: String,
        /// The exit code, for processes and containers.
        exit_code: Option<i32>,
    },
    /// The work failed and said that no retry can fix it (a service function's
    /// [`service::AbortError`]): the job ends ERROR without using its remaining attempts.
    Aborted {
        /// A one-line explanation.
        message: String,
    },
    /// The work failed and said when a retry may work (a service function's
    /// [`service::RetryAfterError`]): the next attempt, if any is left, runs `after` from now
    /// instead of after the job's backoff.
    RetryAfter {
        /// A one-line explanation.
        message: String,
        /// How long to wait before the next attempt.
        after: std::time::Duration,
    },
    /// The work ran past the attempt's timeout and its platform stopped it (a Kubernetes Job's
    /// active deadline, met while no server watched): the job ends TIMEOUT, as when the
    /// worker's own timer stops it.
    TimedOut {
        /// The attempt's whole time limit.
        limit: std::time::Duration,
    },
}

impl Outcome {
    /// A failure with a message and no exit code.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome::Failed {
            message: message.into(),
            exit_code: None,
        }
    }

    /// How a process that exited with `status` ended.
    pub(crate) fn of_exit(status: std::process::ExitStatus) -> Self {
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
}

/// Errors a runner returns when it cannot launch or find work.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The job cannot be run by this runner (bad args, unknown operation, disallowed image).
    #[error("invalid job: {0}")]
    Invalid(String),
    /// Launching failed (spawn error, engine unreachable, API error).
    #[error("launch failed: {0}")]
    Launch(String),
    /// The runner's backend (engine, cluster) failed.
    #[error("runner backend error: {0}")]
    Backend(String),
    /// The host ran out of a resource (file descriptors, memory, processes) while launching: not
    /// the job's fault, so the worker retries it shortly without using one of its attempts.
    #[error("host out of resources, will retry: {0}")]
    HostResources(String),
    /// Launching failed in a way no retry can fix (`E2BIG`: the job's arguments and environment
    /// exceed what the kernel takes; a program that is missing or cannot be executed, see
    /// [`exec_error`]): the job ends ERROR without using its remaining attempts.
    #[error("launch failed, not retried: {0}")]
    LaunchFinal(String),
    /// The job's args are too large for this runner's environment (its `large_args` is
    /// `refuse`, see [`args`]): refused at submit time.
    #[error(
        "`args` are {size} bytes of JSON, over the {limit}-byte limit of a job's environment \
         (`JOB_ARGS`; Linux takes no environment string over 128 KiB): the runner's setting \
         `large_args = \"hook\"` allows them (the job then reads them from `GET {{JOB_HOOK}}/job`)"
    )]
    ArgsTooLarge {
        /// Their size as JSON, in bytes.
        size: usize,
        /// [`args::MAX_ENV_ARGS`].
        limit: usize,
    },
}

impl RunnerError {
    /// A launch error from a system call (spawn, fork, pipe): [`RunnerError::HostResources`] when
    /// the host is exhausted (`EMFILE`, `ENFILE`, `ENOMEM`, `EAGAIN`), else
    /// [`RunnerError::Launch`]. `what` says what was being done, e.g. ``cannot start `sh` ``.
    pub fn from_launch_io(what: &str, e: &std::io::Error) -> Self {
        let msg = format!("{what}: {e}");
        if is_host_exhaustion(e) {
            RunnerError::HostResources(msg)
        } else if exec_error::errno_of(e) == libc::E2BIG {
            RunnerError::LaunchFinal(msg)
        } else {
            RunnerError::Launch(msg)
        }
    }

    /// True when retrying later may succeed because the host, not the job, was the problem.
    pub fn is_host_resources(&self) -> bool {
        matches!(self, RunnerError::HostResources(_))
    }

    /// True when no retry can fix it ([`RunnerError::LaunchFinal`]).
    pub fn is_final(&self) -> bool {
        matches!(self, RunnerError::LaunchFinal(_))
    }
}

/// Whether an I/O error means the host is out of file descriptors, memory or processes.
pub fn is_host_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        exec_error::errno_of(e),
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN
    )
}

/// The result of looking for an execution after a restart.
pub enum Recovered {
    /// The work is still running and can be waited on again.
    Running(Box<dyn Execution>),
    /// The work finished while nobody watched.
    Finished(Outcome),
    /// The work is gone (or was made gone): the job must be run again.
    Gone,
}

/// One piece of work a runner's backend holds under runyard's labels (a container, a Kubernetes
/// Job), as [`Runner::leftovers`] lists it for the worker's sweep of work left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The job id of its labels (not checked: the sweep skips one that is not a job id).
    pub job_id: String,
    /// The attempt of its labels.
    pub attempt: u32,
    /// What the runner removes it by (a container id, a Kubernetes Job name).
    pub name: String,
}

/// An executor of jobs. Object-safe: the server holds `Arc<dyn Runner>`.
#[async_trait]
pub trait Runner: Send + Sync {
    /// The runner kind, e.g. `local`.
    fn kind(&self) -> &'static str;

    /// Checks at submit time that this runner can run a job of this type with these args.
    /// The default accepts everything.
    fn validate(&self, _job_type: &str, _args: &Value) -> Result<(), RunnerError> {
        Ok(())
    }

    /// Starts one attempt. Returns once the work is running (or failed to start).
    async fn launch(
        &self,
        spec: JobSpec,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Box<dyn Execution>, RunnerError>;

    /// Whether [`Runner::recover`] here can reach the work of `handle` if it still runs (a
    /// process only on the machine and in the pid namespace that started it). When it cannot,
    /// `recover` answers [`Recovered::Gone`] on the word that a dead worker's work died with it,
    /// which a hung worker's does not. The default: yes (a container engine or a Kubernetes API
    /// reaches its work from anywhere; a service job runs in its worker's process).
    fn reaches(&self, _handle: &RunHandle) -> bool {
        true
    }

    /// A handle to attempt `spec.attempt`'s work when none was stored: its worker hung or died
    /// after it launched the work but before it recorded the handle (a job cancelled, or whose
    /// lease ran out, while `STARTING`). Built from what this runner marks its work with, the
    /// job id and attempt (local: the `JOB_ID` and `JOB_ATTEMPT` of the process's environment,
    /// on the machine and pid namespace `node`, the claiming worker's [`node_id`] when its id
    /// says it; docker: the container's name and labels; kube: the Job's name and labels).
    /// [`Runner::reaches`] and [`Runner::recover`] take it as a stored one. `None`: this runner
    /// has nothing to find that way (the default: a service job runs in its worker's process).
    fn unrecorded(&self, _spec: &JobSpec, _node: Option<&str>) -> Option<RunHandle> {
        None
    }

    /// Finds work launched by an earlier (maybe dead) server process. Runners whose work cannot
    /// outlive the server make sure it is gone and return [`Recovered::Gone`]. Work that ended
    /// is answered [`Recovered::Finished`] and left where it is: its outcome is not recorded yet,
    /// and another reaper may recover it too (it must find it ended, not gone); the worker's
    /// sweep removes it once its job is done with it ([`Runner::leftovers`]).
    async fn recover(
        &self,
        handle: &RunHandle,
        spec: JobSpec,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Recovered, RunnerError>;

    /// The work this runner's backend holds under runyard's labels and this deployment's
    /// fingerprint (`deployment`, see [`JobSpec::deployment`]), running or ended, whichever
    /// process launched it (one list call to the backend). The worker's sweep removes, with
    /// [`Runner::remove_leftover`], the items whose job is done with them (see
    /// `src/worker/orphans.rs`). The default: nothing (the work of runners whose work cannot
    /// outlive the server, `local` and `service`, is gone with it).
    async fn leftovers(&self, _deployment: &str) -> Result<Vec<Leftover>, RunnerError> {
        Ok(Vec::new())
    }

    /// Stops (politely first, by force once `grace` has passed) and removes one item of
    /// [`Runner::leftovers`]; one already gone is fine. Bounded: an unreachable backend is an
    /// error, not a hang.
    async fn remove_leftover(&self, _item: &Leftover, _grace: Duration) -> Result<(), RunnerError> {
        Ok(())
    }
}

/// One running attempt. The execution of a container or a Kubernetes Job dropped without `wait`
/// or `stop` leaves the work running (for the reaper or the worker that takes it over) and
/// stops following it: its log and watch tasks end with it.
#[async_trait]
pub trait Execution: Send {
    /// The handle to save on the job.
    fn handle(&self) -> RunHandle;

    /// Waits for the work to end. Cancel-safe: dropping the future and calling it again is fine.
    async fn wait(&mut self) -> Outcome;

    /// Stops the work: politely first, then by force once `grace` has passed. After it returns,
    /// `wait` returns promptly. True when the work is known to have ended (or had ended
    /// before); false when it may still run: the container engine or the Kubernetes API did not
    /// confirm the end in time. The worker then keeps the job's lease to run out, so that no
    /// other attempt starts beside work that may live on.
    async fn stop(&mut self, grace: Duration) -> bool;

    /// After `wait` returned: whether the work is known to be gone. False when it ended in a
    /// way that may leave it running (a Kubernetes Job deleted by someone else whose pods were
    /// not gone within the bound); the worker then records nothing and keeps the job's lease to
    /// run out, as after a stop that was not confirmed. True by default.
    fn end_confirmed(&self) -> bool {
        true
    }
}

/// Glob match with `*` (any run of characters, `.` and `/` included) and `?` (one character):
/// job types against runner `types`, images against `allowed_images`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Job types are ASCII (the API refuses others): their bytes are their characters, and a
    // claim's check of every job (the worker's guard) allocates nothing.
    if pattern.is_ascii() && text.is_ascii() {
        return glob_items(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob_items(&p, &t, '*', '?')
}

/// [`glob_match`] over items (bytes or characters): `star` any run, `one` any one item.
fn glob_items<T: Copy + PartialEq>(p: &[T], t: &[T], star_item: T, one: T) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star_item {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == star_item)
}

/// Shared pointer to a reporter.
pub type SharedReporter = Arc<dyn Reporter>;

#[cfg(test)]
mod host_error_tests {
    use super::*;

    #[test]
    fn exhaustion_errors_are_host_resources() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN] {
            let e = std::io::Error::from_raw_os_error(code);
            assert!(RunnerError::from_launch_io("cannot start `x`", &e).is_host_resources());
        }
        // So do they when `execve` itself failed (the spawner says so), and `E2BIG` stays final.
        for code in [libc::ENOMEM, libc::EAGAIN] {
            let e = exec_error::exec_failed(code);
            assert!(RunnerError::from_launch_io("cannot start `x`", &e).is_host_resources());
        }
        let e = exec_error::exec_failed(libc::E2BIG);
        assert!(RunnerError::from_launch_io("cannot start `x`", &e).is_final());
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        let r = RunnerError::from_launch_io("cannot start `x`", &e);
        assert!(!r.is_host_resources());
        assert!(matches!(r, RunnerError::Launch(ref m) if m.starts_with("cannot start `x`: ")));
    }
}
