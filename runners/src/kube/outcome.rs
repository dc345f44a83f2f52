//! The outcome of an attempt's Job: success, or a failure in words (deadline, disruption, OOM
//! kill, a container that could not start, exit code, the Job's reason).

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
/// TIMEOUT), a disruption, an OOM kill, a container that could not start ([`start_error`]),
/// the container's exit code, or the Job's reason, in that order.
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
        if t.reason.as_deref() == Some("StartError") {
            return start_error(t);
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

/// A container the runtime could not start: containerd reports it terminated (with
/// `restartPolicy: Never`, not waiting) with reason `StartError`, exit code 128 and the
/// runtime's message. When that message says the command is missing from the image or cannot
/// be executed (runc's `exec: "python3": executable file not found in $PATH`, `exec: "/x":
/// stat /x: no such file or directory`, `permission denied`, `exec format error`; crun's
/// ``executable file `python3` not found``), another attempt would fail the same way: the
/// attempt is aborted (ERROR, not retried), as the local runner's missing program is. Any other
/// start error (a mount, a device, the node) is a failure like any other, retried.
fn start_error(t: &ContainerStateTerminated) -> Outcome {
    let said = t.message.as_deref().unwrap_or("no message");
    let m = said.to_ascii_lowercase();
    let cannot_exec = (m.contains("executable file") && m.contains("not found"))
        || m.contains("exec format error")
        || (m.contains("exec: \"")
            && [
                "no such file or directory",
                "permission denied",
                "not a directory",
            ]
            .iter()
            .any(|w| m.contains(w)));
    let what = format!(
        "the container could not start (StartError, exit code {}): {said}",
        t.exit_code
    );
    if cannot_exec {
        return Outcome::Aborted {
            message: format!(
                "{what}; not retried: its command is missing from the image or cannot be executed"
            ),
        };
    }
    Outcome::Failed {
        message: what,
        exit_code: Some(t.exit_code),
    }
}

/// The outcome of a Job that is `Complete` or `Failed`; `None` while it runs. Its pods are read
/// within `limit` (`kube.api_timeout`).
pub(super) async fn finished_outcome(
    job: &Job,
    timeout: Option<Duration>,
    pods: &Api<Pod>,
    limit: Duration,
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
    let lp = ListParams::default().labels(&pod_selector(uid));
    let list = super::errors::bounded(limit, pods.list(&lp))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn started(message: &str) -> Outcome {
        start_error(&ContainerStateTerminated {
            exit_code: 128,
            reason: Some("StartError".into()),
            message: Some(message.into()),
            ..Default::default()
        })
    }

    #[test]
    fn a_command_that_cannot_be_executed_is_not_retried_other_start_errors_are() {
        for cannot in [
            // runc (containerd's default runtime)
            r#"failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "python3": executable file not found in $PATH: unknown"#,
            r#"OCI runtime create failed: runc create failed: unable to start container process: exec: "/app/run": stat /app/run: no such file or directory: unknown"#,
            r#"OCI runtime create failed: runc create failed: unable to start container process: exec: "/app/run": permission denied: unknown"#,
            "OCI runtime create failed: runc create failed: unable to start container process: exec format error: unknown",
            // crun
            "executable file `python3` not found in $PATH: No such file or directory: OCI runtime attempted to invoke a command that was not found",
        ] {
            match started(cannot) {
                Outcome::Aborted { message } => {
                    assert!(message.contains(cannot), "{message}");
                    assert!(message.contains("not retried"), "{message}");
                }
                o => panic!("{cannot}: {o:?}"),
            }
        }
        let mount = r#"OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/data" to rootfs at "/data": no such file or directory: unknown"#;
        match started(mount) {
            Outcome::Failed { message, exit_code } => {
                assert!(message.contains(mount), "{message}");
                assert_eq!(exit_code, Some(128));
            }
            o => panic!("{o:?}"),
        }
    }
}
