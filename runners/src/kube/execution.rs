//! One attempt's Job, watched: the monitor and log copier tasks, and what the worker sees
//! ([`KubeExecution`]).

use std::time::Duration;

use ::kube::api::Api;
use ::kube::Client;
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as K8sEvent, Pod, Secret};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{logs, monitor, KubeOptions};
use crate::{Execution, JobSpec, Outcome, RunHandle, RunKind, SharedReporter};

/// One attempt's Job, watched.
pub struct KubeExecution {
    namespace: String,
    name: String,
    uid: String,
    job_id: String,
    attempt: u32,
    /// The attempt's outcome, and whether its Job and pods are known to be gone
    /// ([`monitor::Links::outcome`]).
    outcome: watch::Receiver<Option<(Outcome, bool)>>,
    stop: watch::Sender<Option<Duration>>,
    bound: Duration,
    monitor_task: JoinHandle<()>,
    log_task: JoinHandle<()>,
    /// The outcome of a stop, and whether its end was confirmed.
    stopped: Option<(Outcome, bool)>,
}

impl KubeExecution {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        client: Client,
        namespace: String,
        name: String,
        uid: String,
        spec: &JobSpec,
        reporter: SharedReporter,
        cursor: logs::Cursor,
        (opts, secret): (KubeOptions, Option<String>),
    ) -> Self {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let events: Api<K8sEvent> = Api::namespaced(client, &namespace);
        let (outcome_tx, outcome) = watch::channel(None);
        let (job_done_tx, job_done) = watch::channel(false);
        let (logs_done_tx, logs_done) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(None);
        let log_task = tokio::spawn(logs::copy_logs(
            pods.clone(),
            uid.clone(),
            reporter,
            job_done,
            logs_done_tx,
            cursor,
            opts.poll_interval,
            opts.api_timeout,
        ));
        let bound = opts.termination_grace
            + opts.delete_timeout
            + opts.finish_timeout.max(Duration::from_secs(5))
            + Duration::from_secs(5);
        let attempt = monitor::Attempt {
            jobs,
            pods,
            events,
            secrets,
            name: name.clone(),
            uid: uid.clone(),
            opts,
            timeout: spec.timeout,
            secret,
        };
        let monitor_task = tokio::spawn(monitor::monitor(
            attempt,
            monitor::Links {
                outcome: outcome_tx,
                job_done: job_done_tx,
                logs_done,
                stop: stop_rx,
            },
        ));
        Self {
            namespace,
            name,
            uid,
            job_id: spec.id.clone(),
            attempt: spec.attempt,
            outcome,
            stop,
            bound,
            monitor_task,
            log_task,
            stopped: None,
        }
    }
}

#[async_trait]
impl Execution for KubeExecution {
    fn handle(&self) -> RunHandle {
        RunHandle {
            kind: RunKind::Kube,
            id: self.name.clone(),
            data: json!({
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "job_id": self.job_id,
                "attempt": self.attempt,
            }),
        }
    }

    async fn wait(&mut self) -> Outcome {
        if let Some((o, _)) = &self.stopped {
            return o.clone();
        }
        match self.outcome.wait_for(Option::is_some).await {
            Ok(o) => o
                .as_ref()
                .map_or_else(|| Outcome::failed("no outcome"), |(o, _)| o.clone()),
            Err(_) => Outcome::failed("the watch of the Kubernetes Job ended unexpectedly"),
        }
    }

    /// Deletes the pods with `grace` as their grace period, then the Job (Foreground), and
    /// returns once both are gone (within the grace plus `delete_timeout`): false when they were
    /// not gone by then.
    async fn stop(&mut self, grace: Duration) -> bool {
        // Ended or stopped before: as confirmed as that end was.
        if let Some((_, gone)) = &self.stopped {
            return *gone;
        }
        if let Some((_, gone)) = &*self.outcome.borrow() {
            return *gone;
        }
        let _ = self.stop.send(Some(grace));
        let waited =
            tokio::time::timeout(grace + self.bound, self.outcome.wait_for(Option::is_some)).await;
        let gone = matches!(&waited, Ok(Ok(o)) if o.as_ref().is_some_and(|(_, gone)| *gone));
        drop(waited);
        if !gone {
            tracing::warn!(job = %self.name, "the Kubernetes Job was not gone in time");
        }
        self.log_task.abort();
        self.monitor_task.abort();
        let o = Outcome::failed(format!("stopped: Kubernetes Job {} deleted", self.name));
        self.stopped = Some((o, gone));
        gone
    }

    /// False when the Job was deleted by someone else and its pods were not gone in time.
    fn end_confirmed(&self) -> bool {
        match &self.stopped {
            Some((_, gone)) => *gone,
            None => self.outcome.borrow().as_ref().is_none_or(|(_, gone)| *gone),
        }
    }
}

impl Drop for KubeExecution {
    fn drop(&mut self) {
        self.monitor_task.abort();
        self.log_task.abort();
    }
}
