//! One running container: waiting for its exit, stopping it, removing it once it ended.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::*;

/// How long the output of a container that ended may take to be read to its end (the engine
/// may just be back from an outage) before the container is removed.
const LOG_DRAIN: Duration = Duration::from_secs(5);

pub(super) struct DockerExecution {
    docker: Docker,
    id: String,
    handle: RunHandle,
    logs: Option<JoinHandle<()>>,
    /// The job's logs, for a note when the output could not be copied to its end.
    reporter: SharedReporter,
    exit: Option<Outcome>,
    removed: bool,
    /// A stop whose end the engine did not confirm (see [`Execution::stop`]).
    unconfirmed: bool,
}

impl DockerExecution {
    pub(super) fn new(
        docker: Docker,
        id: String,
        handle: RunHandle,
        logs: JoinHandle<()>,
        reporter: SharedReporter,
    ) -> Self {
        Self {
            docker,
            id,
            handle,
            logs: Some(logs),
            reporter,
            exit: None,
            removed: false,
            unconfirmed: false,
        }
    }

    /// Once the container ended: lets the log follower drain, then removes the container.
    async fn cleanup(&mut self) {
        if self.removed {
            return;
        }
        if let Some(mut logs) = self.logs.take() {
            if tokio::time::timeout(LOG_DRAIN, &mut logs).await.is_err() {
                logs.abort();
                super::logs::dropped(
                    &self.reporter,
                    "the container's output was not read to its end in time",
                );
            }
        }
        remove(&self.docker, &self.id).await;
        self.removed = true;
    }
}

/// Dropped without a `wait` or a `stop` (an adoption that did not take, a stopping worker's
/// reaper, a worker that left its work to the reaper that took its job over): the container
/// runs on, its output is no longer followed.
impl Drop for DockerExecution {
    fn drop(&mut self) {
        if let Some(logs) = self.logs.take() {
            logs.abort();
        }
    }
}

#[async_trait]
impl Execution for DockerExecution {
    fn handle(&self) -> RunHandle {
        self.handle.clone()
    }

    async fn wait(&mut self) -> Outcome {
        if self.exit.is_none() {
            let o = wait_exit(&self.docker, &self.id).await;
            self.exit = Some(o);
        }
        self.cleanup().await;
        self.exit.clone().expect("set above")
    }

    async fn stop(&mut self, grace: Duration) -> bool {
        if self.exit.is_none() {
            stop_bounded(&self.docker, &self.id, grace).await;
            let o =
                tokio::time::timeout(Duration::from_secs(10), wait_exit(&self.docker, &self.id))
                    .await
                    .unwrap_or_else(|_| {
                        self.unconfirmed = true;
                        Outcome::failed("the container did not stop")
                    });
            self.exit = Some(o);
        }
        self.cleanup().await;
        !self.unconfirmed
    }
}

/// Stops a container: the image's stop signal, then SIGKILL after `grace` (a kill when the stop
/// fails). Bounded: a hung engine must not hang the worker. Whether it ended is not checked.
pub(super) async fn stop_bounded(docker: &Docker, id: &str, grace: Duration) {
    let secs = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
    let opts = StopContainerOptions {
        t: Some(secs),
        signal: None,
    };
    // `stop` returns once the container is down.
    let stopped = tokio::time::timeout(
        grace + Duration::from_secs(10),
        docker.stop_container(id, Some(opts)),
    )
    .await;
    if !matches!(stopped, Ok(Ok(()))) {
        let kill = docker.kill_container(id, Some(KillContainerOptions::default()));
        let _ = tokio::time::timeout(Duration::from_secs(10), kill).await;
    }
}

/// Waits until the container is not running; its exit code makes the outcome. Retries while the
/// engine cannot be reached (for at most [`LOST_ENGINE_LIMIT`]).
pub(super) async fn wait_exit(docker: &Docker, id: &str) -> Outcome {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let opts = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut s = docker.wait_container(id, Some(opts));
        let failure = match s.next().await {
            Some(Ok(r)) => {
                let msg = r.error.and_then(|e| e.message);
                return finish_outcome(docker, id, r.status_code, msg).await;
            }
            // bollard turns a non-zero exit into this error: it is the container's exit code.
            Some(Err(DockerError::DockerContainerWaitError { error, code })) => {
                let msg = (!error.is_empty()).then_some(error);
                return finish_outcome(docker, id, code, msg).await;
            }
            Some(Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            })) => return Outcome::failed("the container disappeared (removed outside runyard)"),
            Some(Err(e)) => engine_message(&e),
            None => "the engine closed the wait without an answer".to_string(),
        };
        if started.elapsed() >= LOST_ENGINE_LIMIT {
            return Outcome::failed(format!("lost contact with the docker engine: {failure}"));
        }
        tracing::warn!(container = %short(id), error = %failure, "waiting for the container failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

pub(super) async fn finish_outcome(
    docker: &Docker,
    id: &str,
    code: i64,
    msg: Option<String>,
) -> Outcome {
    if code == 0 {
        return Outcome::Success { result: None };
    }
    let oom = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => c.state.and_then(|s| s.oom_killed),
        Err(_) => None,
    };
    outcome_of(code, msg.as_deref(), oom)
}

/// The outcome of a container that exited with `code`.
pub(super) fn outcome_of(code: i64, error: Option<&str>, oom_killed: Option<bool>) -> Outcome {
    if code == 0 {
        return Outcome::Success { result: None };
    }
    let exit_code = i32::try_from(code).ok();
    let mut message = if oom_killed == Some(true) {
        format!("container killed: out of memory (exit code {code})")
    } else {
        format!("container exited with code {code}")
    };
    if let Some(e) = error.filter(|e| !e.is_empty()) {
        message.push_str(": ");
        message.push_str(e);
    }
    Outcome::Failed { message, exit_code }
}
