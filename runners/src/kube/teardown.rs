//! Tearing an attempt down without overlap: pods with the stop's grace, then the Job with
//! Foreground propagation, and waiting until both are gone.

use std::time::Duration;

use ::kube::api::{Api, DeleteParams, Preconditions};
use ::kube::runtime::watcher::{self, Event};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::errors::bounded;
use super::monitor::{list_pods, Attempt};

/// Deletes the attempt: its pods with `grace` (a stop), then the Job with Foreground
/// propagation; waits until the watch says the Job is gone and no pod of it is left. False when
/// either was still there at the bound (the grace plus `delete_timeout`).
pub(super) async fn teardown<S>(a: &Attempt, events: &mut S, grace: Option<Duration>) -> bool
where
    S: futures::Stream<Item = Result<Event<Job>, watcher::Error>> + Unpin,
{
    let grace_used = grace.unwrap_or(a.opts.termination_grace);
    let bound = grace_used + a.opts.delete_timeout;
    let deadline = Instant::now() + bound;
    if let Some(g) = grace {
        delete_pods(a, g).await;
    }
    let t = a.opts.api_timeout;
    if let Err(e) = delete_job_foreground(&a.jobs, &a.name, &a.uid, deadline, t).await {
        tracing::warn!(job = %a.name, error = %e, "cannot delete the Kubernetes Job");
    }
    // Until the Job is gone (Foreground: after its pods).
    let mut in_list = true;
    let gone = tokio::time::timeout_at(deadline, async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(Event::Init) => in_list = false,
                Ok(Event::InitApply(j)) if j.metadata.uid.as_deref() == Some(a.uid.as_str()) => {
                    in_list = true
                }
                Ok(Event::InitDone) if !in_list => return,
                Ok(Event::Delete(j)) if j.metadata.uid.as_deref() == Some(a.uid.as_str()) => return,
                _ => {}
            }
        }
    })
    .await;
    if gone.is_err() {
        tracing::warn!(job = %a.name, "the Kubernetes Job is still there after {bound:?}");
    }
    let pods_gone = wait_pods_gone(a, deadline.saturating_duration_since(Instant::now())).await;
    gone.is_ok() && pods_gone
}

/// Deletes the attempt's pods with `gracePeriodSeconds` (each with a uid precondition).
async fn delete_pods(a: &Attempt, grace: Duration) {
    let Some(pods) = list_pods(a).await else {
        return;
    };
    for p in &pods {
        delete_pod(a, p, grace).await;
    }
}

/// The delete of pod `p`: `gracePeriodSeconds` (the grace rounded up) and a uid precondition
/// (a pod of that name made since is not deleted).
fn pod_delete_params(p: &Pod, grace: Duration) -> DeleteParams {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    DeleteParams {
        grace_period_seconds: Some(secs.min(u32::MAX as u64) as u32),
        preconditions: Some(Preconditions {
            uid: p.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    }
}

/// Deletes one pod with `gracePeriodSeconds` (the grace rounded up) and a uid precondition.
async fn delete_pod(a: &Attempt, p: &Pod, grace: Duration) {
    let Some(name) = p.metadata.name.clone() else {
        return;
    };
    let dp = pod_delete_params(p, grace);
    match bounded(a.opts.api_timeout, a.pods.delete(&name, &dp)).await {
        Ok(_) => {}
        Err(::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "cannot delete the pod"),
    }
}

/// Deletes the pods of an attempt whose Job someone else deleted, and waits (at most the pods'
/// grace plus `delete_timeout`) until none is left. A Job deleted with `Orphan` propagation
/// (`kubectl delete job --cascade=orphan`) leaves its pods running with no controller to stop
/// them; `Background` leaves them to the garbage collector: either way they are deleted here,
/// with the pods' own grace period (`termination_grace`), by the Job's `controller-uid` label,
/// which orphaned pods keep. Pods that a failed call did not delete are deleted again on the
/// next round. False when a pod was still there at the bound.
pub(super) async fn delete_orphaned_pods(a: &Attempt) -> bool {
    let grace = a.opts.termination_grace;
    let bound = grace + a.opts.delete_timeout;
    let deadline = Instant::now() + bound;
    loop {
        if let Some(pods) = list_pods(a).await {
            if pods.is_empty() {
                return true;
            }
            for p in pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                delete_pod(a, p, grace).await;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = %a.name, "pods of the deleted Kubernetes Job still there after {bound:?}");
            return false;
        }
        tokio::time::sleep(a.opts.poll_interval.min(deadline - Instant::now())).await;
    }
}

/// Deletes the Secret of an attempt whose Job someone else deleted. The Secret is owned by the
/// Job, so a `Background` or `Foreground` deletion has the garbage collector delete it; an
/// `Orphan` one (the API's default for Jobs, `kubectl delete job --cascade=orphan`) takes the
/// Job out of its `ownerReferences` instead, and the Secret, holding `JOB_SECRET_KEY` and maybe
/// `JOB_ARGS`, would stay for good. Already gone (404) is fine; a failure is logged.
pub(super) async fn delete_orphaned_secret(a: &Attempt) {
    let Some(name) = a.secret.as_deref() else {
        return;
    };
    match bounded(
        a.opts.api_timeout,
        a.secrets.delete(name, &DeleteParams::default()),
    )
    .await
    {
        Ok(_) => {}
        Err(::kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(job = %a.name, secret = %name, error = %e, "cannot delete the Secret of the deleted Kubernetes Job: delete it by hand")
        }
    }
}

/// Waits (at most `bound`) until no pod of the attempt is left.
async fn wait_pods_gone(a: &Attempt, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if list_pods(a).await.is_some_and(|p| p.is_empty()) {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(job = %a.name, "pods of the Kubernetes Job still there after {bound:?}");
            return false;
        }
        tokio::time::sleep(a.opts.poll_interval.min(deadline - Instant::now())).await;
    }
}

/// Removes a Job the sweep found left behind (`Runner::remove_leftover`): its pods (by the
/// attempt's `selector`) with `grace`, then the Job with Foreground propagation; does not wait
/// for them to go (the next sweep deletes again what is still there). An error when the API did
/// not take the deletes within `bound` (each request within `limit`, `kube.api_timeout`).
pub(super) async fn remove_leftover(
    client: ::kube::Client,
    ns: &str,
    name: &str,
    selector: &str,
    grace: Duration,
    bound: Duration,
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client, ns);
    let lp = ::kube::api::ListParams::default().labels(selector);
    let listed = tokio::time::timeout_at(deadline, bounded(limit, pods.list(&lp))).await;
    let list = match listed {
        Ok(Ok(l)) => l.items,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot list the pods of Kubernetes Job {name}: {}",
                super::errors::describe(&e, None)
            ))
        }
        Err(_) => {
            return Err(format!(
                "listing the pods of Kubernetes Job {name} timed out"
            ))
        }
    };
    for p in list
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(pod) = p.metadata.name.as_deref() else {
            continue;
        };
        let dp = pod_delete_params(p, grace);
        match tokio::time::timeout_at(deadline, bounded(limit, pods.delete(pod, &dp))).await {
            Ok(Ok(_)) => {}
            // Gone, or replaced by another pod of that name: nothing to delete here.
            Ok(Err(::kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {}
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot delete pod {pod}: {}",
                    super::errors::describe(&e, None)
                ))
            }
            Err(_) => return Err(format!("deleting pod {pod} timed out")),
        }
    }
    let delete = delete_job_foreground(&jobs, name, "", deadline, limit);
    match tokio::time::timeout_at(deadline, delete).await {
        Ok(r) => r,
        Err(_) => Err(format!("deleting Kubernetes Job {name} timed out")),
    }
}

/// Deletes a Job with `propagationPolicy: Foreground` (and a uid precondition when `uid` is not
/// empty); a Job already gone is fine; passing API errors are retried until `deadline`, each
/// request within `limit` (`kube.api_timeout`).
pub(super) async fn delete_job_foreground(
    jobs: &Api<Job>,
    name: &str,
    uid: &str,
    deadline: Instant,
    limit: Duration,
) -> Result<(), String> {
    let mut dp = DeleteParams::foreground();
    if !uid.is_empty() {
        dp.preconditions = Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
    }
    loop {
        match bounded(limit, jobs.delete(name, &dp)).await {
            Ok(_) => return Ok(()),
            // Gone, or another Job of that name (the precondition): not ours to delete.
            Err(::kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot delete Kubernetes Job {name}: {}",
                    super::errors::describe(&e, None)
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
