//! The outcome of an attempt's Job: success, or a failure in words (deadline, disruption, OOM
//! kill, exit code, the Job's reason).

use std::time::Duration;

use ::kube::api::{Api, ListParams};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use super::monitor::pod_selector;
use super::CONTAINER;
use crate::Outcome;

/// A disruption of a pod, in words: eviction (`status.reason: Evicted`, the kubelet's eviction
/// manager), or a `DisruptionTarget` condition (pkg/apis/core/types.go: preemption, the Eviction
/// API, the taint manager, the kubelet).
pub(super) fn disruption(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if status.reason.as_deref() == Some("Evicted") {
        return Some(format!(
            "pod {name} was evicted: {}",
            status.message.as_deref().unwrap_or("no message")
        ));
    }
    let c = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
    let what = match c.reason.as_deref().unwrap_or_default() {
        "PreemptionByScheduler" => "was preempted",
        "EvictionByEvictionAPI" => "was evicted (Eviction API)",
        "DeletionByTaintManager" => "was deleted by the taint manager (node taint)",
        "TerminationByKubelet" => "was terminated by the kubelet (node pressure or shutdown)",
        _ => "was disrupted",
    };
    Some(format!(
        "pod {name} {what}: {}",
        c.message.as_deref().unwrap_or("no message")
    ))
}

fn main_terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

/// The outcome of a failed attempt: the deadline (the attempt's `timeout`'s, if it has one: a
/// TIMEOUT), a disruption, an OOM kill, the container's exit code, or the Job's reason, in
/// that order.
pub(super) fn failure(
    job: &Job,
    timeout: Option<Duration>,
    (reason, message): (Option<&str>, Option<&str>),
    pods: &[Pod],
) -> Outcome {
    if reason == Some("DeadlineExceeded") {
        if let Some(limit) = timeout {
            return Outcome::TimedOut { limit };
        }
        let secs = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or_default();
        return Outcome::failed(format!(
            "Kubernetes Job exceeded its active deadline ({secs}s, DeadlineExceeded)"
        ));
    }
    if let Some(d) = pods.iter().rev().find_map(disruption) {
        return Outcome::failed(d);
    }
    for pod in pods.iter().rev() {
        let Some(t) = main_terminated(pod) else {
            continue;
        };
        if t.reason.as_deref() == Some("OOMKilled") {
            return Outcome::failed(format!(
                "container was OOMKilled (out of memory; exit code {})",
                t.exit_code
            ));
        }
        if t.exit_code != 0 {
            return Outcome::Failed {
                message: format!("container exited with code {}", t.exit_code),
                exit_code: Some(t.exit_code),
            };
        }
    }
    Outcome::failed(
        format!(
            "Kubernetes Job failed: {} {}",
            reason.unwrap_or_default(),
            message.unwrap_or_default()
        )
        .trim()
        .to_string(),
    )
}

/// The outcome of a Job that is `Complete` or `Failed`; `None` while it runs.
pub(super) async fn finished_outcome(
    job: &Job,
    timeout: Option<Duration>,
    pods: &Api<Pod>,
) -> Option<Outcome> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if is("Complete").is_some() {
        return Some(Outcome::Success { result: None });
    }
    let f = is("Failed")?;
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let list = pods
        .list(&ListParams::default().labels(&pod_selector(uid)))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    Some(failure(
        job,
        timeout,
        (f.reason.as_deref(), f.message.as_deref()),
        &list,
    ))
}
