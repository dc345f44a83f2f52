//! Following one attempt's Job to its end, and tearing it down without overlap.
//!
//! One task per attempt ([`monitor`]) reads three things:
//! - the Job, through kube-runtime's watcher (it re-lists after a `410 Gone` and when a watch
//!   times out);
//! - the attempt's pods, selected by `batch.kubernetes.io/controller-uid` (the Job's uid, which no
//!   other attempt shares), every `poll_interval` and when the Job's counts say a pod goes (pods
//!   read once are remembered: a pod deleted by the Eviction API is gone when its Job fails);
//! - while the attempt has no pod, the Job's `FailedCreate` events (Pod Security or a quota
//!   refusing the pod leaves a Job with no pod and only such events).
//!
//! It decides:
//! - `Complete` / `Failed` (Kubernetes 1.31+ adds them once every pod has stopped; the interim
//!   `SuccessCriteriaMet` / `FailureTarget` come first and decide after `finish_timeout` if the
//!   final one does not come): the outcome, with disruptions (eviction, preemption, OOM kill,
//!   deadline) named as such rather than as the container's exit 137/143;
//! - waiting reasons that do not heal: `InvalidImageName` / `ErrImageNeverPull` at once; image pull
//!   and container config errors after `image_pull_timeout`; a pod Pending (e.g. `Unschedulable`)
//!   or no pod at all after `start_timeout`; a `FailedCreate` by Pod Security at once;
//! - a `job` container that ended while the pod keeps running (a sidecar that never exits): its
//!   exit decides after `finish_timeout`;
//! - a stop: the pods are deleted with the stop's grace period;
//! - the Job deleted by someone else: its pods, which a deletion with `Orphan` propagation
//!   leaves running, are deleted (with their own grace period) and waited for.
//!
//! Every decision other than the Job's own end deletes the Job with `propagationPolicy:
//! Foreground` (the Job stays, with a `foregroundDeletion` finalizer, until the garbage collector
//! has deleted its pods, which go only once their containers have stopped) and waits, through the
//! watch, until the Job is gone, and then until no pod of it is left: only then is the attempt
//! over, so the next attempt never runs next to this one.

use std::collections::HashMap;
use std::time::Duration;

use ::kube::api::{Api, ListParams};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ContainerStateWaiting, Event as K8sEvent, Pod, PodStatus, Secret,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::errors::bounded;
use super::outcome::{disruption, failure};
use super::teardown::{delete_orphaned_pods, delete_orphaned_secret, teardown};
use super::{KubeOptions, CONTAINER};
use crate::Outcome;

/// The label the Job controller puts on the pods of a Job: the Job's uid (Kubernetes 1.27+; the
/// Job's own `spec.selector` matches on it).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

/// The label selector of one Job's pods.
pub fn pod_selector(uid: &str) -> String {
    format!("{CONTROLLER_UID_LABEL}={uid}")
}

/// What a monitor works on.
#[derive(Clone)]
pub(super) struct Attempt {
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
    pub events: Api<K8sEvent>,
    pub secrets: Api<Secret>,
    pub name: String,
    pub uid: String,
    pub opts: KubeOptions,
    /// The attempt's timeout: a Job that meets its active deadline then timed out.
    pub timeout: Option<Duration>,
    /// The name of the attempt's Secret (None: its Job did not name one).
    pub secret: Option<String>,
}

/// Channels between the monitor, the log copier and the execution.
pub(super) struct Links {
    /// The attempt's outcome, and whether its Job and pods are known to be gone (false: a
    /// teardown, a stop's or an early end's, did not see them gone within its bound, or pods of
    /// a Job deleted by someone else outlived theirs).
    pub outcome: watch::Sender<Option<(Outcome, bool)>>,
    pub job_done: watch::Sender<bool>,
    pub logs_done: watch::Receiver<bool>,
    pub stop: watch::Receiver<Option<Duration>>,
}

enum Decision {
    /// The Job ended by itself.
    Final(Outcome),
    /// The attempt failed before the Job did: delete it and wait.
    Early(Outcome),
    /// Stopped by runyard with this grace period.
    Stop(Duration),
    /// Someone else deleted the Job.
    Gone,
}

/// What the polls remember between rounds.
#[derive(Default)]
struct Seen {
    /// When each pod was first seen stuck in a pull or config error.
    stuck_since: HashMap<String, Instant>,
    /// When each pod was first seen Pending.
    pending_since: HashMap<String, Instant>,
    /// When the attempt was last seen with no pod (None: it has one).
    no_pod_since: Option<Instant>,
    /// When the `job` container was first seen ended while its pod ran on.
    main_done_since: Option<Instant>,
    /// When `SuccessCriteriaMet` / `FailureTarget` was first seen.
    interim_since: Option<Instant>,
    /// The last pods read.
    pods: Vec<Pod>,
    /// Pods read before and missing from the last read, newest last (at most [`GONE_KEPT`]): a
    /// pod deleted through the Eviction API, by preemption or by the taint manager is gone
    /// before its Job fails, and its `DisruptionTarget` condition is known only from them.
    gone: Vec<Pod>,
    /// The last Job read.
    job: Option<Job>,
}

/// How many pods no longer listed [`Seen`] keeps.
const GONE_KEPT: usize = 8;

impl Seen {
    /// A new read of the attempt's pods; those of the last read missing from it are kept.
    fn read(&mut self, pods: Vec<Pod>) {
        let last = std::mem::replace(&mut self.pods, pods);
        for p in last {
            let uid = &p.metadata.uid;
            if !self.pods.iter().any(|n| &n.metadata.uid == uid) {
                self.gone.retain(|g| &g.metadata.uid != uid);
                self.gone.push(p);
            }
        }
        let excess = self.gone.len().saturating_sub(GONE_KEPT);
        self.gone.drain(..excess);
    }

    /// Every pod known, those gone first ([`failure`] reads from the end: the last read
    /// decides before them).
    fn every_pod(&self) -> Vec<Pod> {
        self.gone.iter().chain(&self.pods).cloned().collect()
    }
}

/// Whether the Job's pod counts say a pod is going (`terminating` or `failed` rose, `active`
/// fell) since `before`: the pods are read at once rather than at the next poll, while the
/// going pod (deleted by the Eviction API, say) can still be read.
fn pod_going(before: Option<&Job>, now: &Job) -> bool {
    let counts = |j: Option<&Job>| {
        let s = j.and_then(|j| j.status.clone()).unwrap_or_default();
        let n = |v: Option<i32>| v.unwrap_or(0);
        (n(s.terminating), n(s.failed), n(s.active))
    };
    let (t0, f0, a0) = counts(before);
    let (t1, f1, a1) = counts(Some(now));
    t1 > t0 || f1 > f0 || a1 < a0
}

/// Follows the attempt until it ends (or is stopped), tears it down when runyard ended it, lets
/// the logs drain, and publishes the outcome.
pub(super) async fn monitor(a: Attempt, mut links: Links) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", a.name));
    let mut events = watcher::watcher(a.jobs.clone(), cfg)
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(a.opts.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = Seen {
        no_pod_since: Some(Instant::now()),
        ..Default::default()
    };
    let mut in_list = false;
    let mut stop_open = true;
    let decision = loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => break Decision::Early(Outcome::failed("the watch of the Kubernetes Job ended")),
                Some(Ok(Event::Init)) => in_list = false,
                Some(Ok(Event::InitApply(j) | Event::Apply(j))) => {
                    if j.metadata.uid.as_deref() != Some(a.uid.as_str()) {
                        continue;
                    }
                    in_list = true;
                    let moved = pod_going(seen.job.as_ref(), &j);
                    seen.job = Some(j);
                    if let Some(d) = on_job(&a, &mut seen, moved).await {
                        break d;
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    if !in_list {
                        break Decision::Gone;
                    }
                }
                Some(Ok(Event::Delete(j))) => {
                    if j.metadata.uid.as_deref() == Some(a.uid.as_str()) {
                        break Decision::Gone;
                    }
                }
                Some(Err(e)) => tracing::debug!(job = %a.name, error = %e, "Job watch error"),
            },
            _ = tick.tick() => {
                if let Some(d) = poll(&a, &mut seen).await {
                    break d;
                }
            }
            r = links.stop.changed(), if stop_open => match r {
                Ok(()) => {
                    if let Some(grace) = *links.stop.borrow() {
                        break Decision::Stop(grace);
                    }
                }
                Err(_) => stop_open = false,
            },
        }
    };
    let outcome = conclude(&a, &mut events, decision).await;
    let _ = links.job_done.send(true);
    let drain = a.opts.finish_timeout.max(Duration::from_secs(5));
    let _ = tokio::time::timeout(drain, links.logs_done.wait_for(|d| *d)).await;
    let _ = links.outcome.send(Some(outcome));
}

/// The attempt's outcome once `decision` is taken, and whether its Job and pods are known to
/// be gone (false: a teardown, or the wait for the pods of a Job deleted by someone else, ran
/// past its bound).
async fn conclude<S>(a: &Attempt, events: &mut S, decision: Decision) -> (Outcome, bool)
where
    S: futures::Stream<Item = Result<Event<Job>, watcher::Error>> + Unpin,
{
    match decision {
        Decision::Final(o) => (o, true),
        Decision::Early(o) => {
            tracing::info!(job = %a.name, outcome = ?o, "ending the Kubernetes Job early");
            let gone = teardown(a, events, None).await;
            (o, gone)
        }
        Decision::Stop(grace) => {
            let gone = teardown(a, events, Some(grace)).await;
            let o = Outcome::failed(format!("stopped: Kubernetes Job {} deleted", a.name));
            (o, gone)
        }
        Decision::Gone => {
            // Deleted by someone else: with Orphan propagation its pods run on, with Background
            // they are deleted after it. They are deleted here, and the attempt is over once
            // they are gone; not gone in time, the end is not confirmed (the worker then keeps
            // the job's lease to run out before another attempt may start).
            let gone = delete_orphaned_pods(a).await;
            delete_orphaned_secret(a).await;
            (
                Outcome::failed(format!("Kubernetes Job {} was deleted", a.name)),
                gone,
            )
        }
    }
}

/// A Job update: its conditions; `moved`: its pod counts say a pod is going (the pods are read
/// again).
async fn on_job(a: &Attempt, seen: &mut Seen, moved: bool) -> Option<Decision> {
    let cond = |job: &Job, t: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"))
            .cloned()
    };
    let job = seen.job.as_ref()?;
    if cond(job, "Complete").is_some() {
        return Some(Decision::Final(Outcome::Success { result: None }));
    }
    let failed = cond(job, "Failed");
    if failed.is_some() || moved {
        if let Some(pods) = list_pods(a).await {
            seen.read(pods);
        }
    }
    let job = seen.job.as_ref()?;
    if let Some(f) = failed {
        return Some(Decision::Final(failure(
            job,
            a.timeout,
            (f.reason.as_deref(), f.message.as_deref()),
            &seen.every_pod(),
        )));
    }
    if (cond(job, "SuccessCriteriaMet").is_some() || cond(job, "FailureTarget").is_some())
        && seen.interim_since.is_none()
    {
        seen.interim_since = Some(Instant::now());
    }
    None
}

pub(super) async fn list_pods(a: &Attempt) -> Option<Vec<Pod>> {
    let lp = ListParams::default().labels(&pod_selector(&a.uid));
    match bounded(a.opts.api_timeout, a.pods.list(&lp)).await {
        Ok(l) => Some(l.items),
        Err(e) => {
            tracing::debug!(job = %a.name, error = %e, "cannot list the Job's pods");
            None
        }
    }
}

/// One round of reading the pods (and events): what does not heal, and bounded waits.
async fn poll(a: &Attempt, seen: &mut Seen) -> Option<Decision> {
    let now = Instant::now();
    if let Some(d) = interim_decision(a, seen, now) {
        return Some(d);
    }
    if seen
        .job
        .as_ref()
        .and_then(|j| j.spec.as_ref())
        .and_then(|s| s.suspend)
        == Some(true)
    {
        return None;
    }
    let pods = list_pods(a).await?;
    seen.read(pods.clone());
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if live.is_empty() {
        let since = *seen.no_pod_since.get_or_insert(now);
        if pods.is_empty() {
            return no_pod_decision(a, now.duration_since(since)).await;
        }
        return None;
    }
    seen.no_pod_since = None;
    for pod in live {
        if let Some(d) = pod_decision(a, seen, now, pod, &pods) {
            return Some(d);
        }
    }
    None
}

/// The interim condition without its final one past the bound: decide on it.
fn interim_decision(a: &Attempt, seen: &Seen, now: Instant) -> Option<Decision> {
    let (t, job) = (seen.interim_since?, seen.job.as_ref()?);
    if now.duration_since(t) < a.opts.finish_timeout {
        return None;
    }
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conds
        .iter()
        .any(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
    {
        return Some(Decision::Early(Outcome::Success { result: None }));
    }
    let f = conds
        .iter()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")?;
    Some(Decision::Early(failure(
        job,
        a.timeout,
        (f.reason.as_deref(), f.message.as_deref()),
        &seen.every_pod(),
    )))
}

/// No pod at all for `for_how_long`: refused by Pod Security (at once), or past `start_timeout`.
async fn no_pod_decision(a: &Attempt, for_how_long: Duration) -> Option<Decision> {
    let o = &a.opts;
    let refused = failed_create(a).await;
    if let Some(m) = refused
        .as_deref()
        .filter(|m| m.contains("violates PodSecurity"))
    {
        return Some(Decision::Early(Outcome::failed(format!(
            "the pod was refused by Pod Security admission (FailedCreate): {m}"
        ))));
    }
    if for_how_long >= o.start_timeout {
        let why = refused
            .map(|m| format!("FailedCreate: {m}"))
            .unwrap_or_else(|| "no FailedCreate event".into());
        return Some(Decision::Early(Outcome::failed(format!(
            "no pod of Kubernetes Job {} after {}: {why}",
            a.name,
            humantime::format_duration(o.start_timeout)
        ))));
    }
    None
}

/// What one pod's `job` container waits for.
enum Waiting {
    /// It will not heal: decide.
    Decide(Decision),
    /// Stuck, within its bound: nothing more to check on this pod this round.
    Stuck,
    /// Not waiting, or for a reason that passes.
    GoOn,
}

/// One live pod: what does not heal and bounded waits.
fn pod_decision(
    a: &Attempt,
    seen: &mut Seen,
    now: Instant,
    pod: &Pod,
    pods: &[Pod],
) -> Option<Decision> {
    let o = &a.opts;
    let pname = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let main = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER));
    let waiting = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let terminated = main
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match waiting_decision(a, seen, now, &pname, waiting) {
        Waiting::Decide(d) => return Some(d),
        Waiting::Stuck => return None,
        Waiting::GoOn => {}
    }
    if phase == "Pending" {
        let since = *seen.pending_since.entry(pname.clone()).or_insert(now);
        if now.duration_since(since) >= o.start_timeout {
            return Some(Decision::Early(Outcome::failed(format!(
                "pod {pname} did not start within {}: {}",
                humantime::format_duration(o.start_timeout),
                pending_reason(&status, waiting)
            ))));
        }
        return None;
    }
    seen.pending_since.remove(&pname);
    // The job's container ended but the pod runs on: a sidecar that does not exit.
    if terminated.is_some() && phase == "Running" {
        let since = *seen.main_done_since.get_or_insert(now);
        if now.duration_since(since) >= o.finish_timeout {
            let job = seen.job.clone().unwrap_or_default();
            let o = match terminated {
                Some(t) if t.exit_code == 0 => Outcome::Success { result: None },
                _ => failure(&job, a.timeout, (None, None), pods),
            };
            return Some(Decision::Early(o));
        }
    }
    // A disrupted pod whose Job does not say Failed within the bound.
    if phase == "Failed" && disruption(pod).is_some() {
        let since = *seen.main_done_since.get_or_insert(now);
        if now.duration_since(since) >= o.finish_timeout {
            let job = seen.job.clone().unwrap_or_default();
            return Some(Decision::Early(failure(
                &job,
                a.timeout,
                (None, None),
                pods,
            )));
        }
    }
    None
}

/// Waiting reasons, from the kubelet (pkg/kubelet/images/types.go and
/// pkg/kubelet/kuberuntime/kuberuntime_container.go).
fn waiting_decision(
    a: &Attempt,
    seen: &mut Seen,
    now: Instant,
    pname: &str,
    waiting: Option<&ContainerStateWaiting>,
) -> Waiting {
    let Some(w) = waiting else {
        seen.stuck_since.remove(pname);
        return Waiting::GoOn;
    };
    let reason = w.reason.as_deref().unwrap_or_default();
    let message = w.message.as_deref().unwrap_or_default();
    match reason {
        "InvalidImageName" | "ErrImageNeverPull" => Waiting::Decide(Decision::Early(
            Outcome::failed(format!("cannot pull the image: {reason}: {message}")),
        )),
        "ErrImagePull"
        | "ImagePullBackOff"
        | "RegistryUnavailable"
        | "ImageInspectError"
        | "CreateContainerConfigError"
        | "CreateContainerError" => {
            let since = *seen.stuck_since.entry(pname.to_string()).or_insert(now);
            if now.duration_since(since) < a.opts.image_pull_timeout {
                return Waiting::Stuck;
            }
            let what = if reason.starts_with("Create") {
                "cannot create the container"
            } else {
                "cannot pull the image"
            };
            Waiting::Decide(Decision::Early(Outcome::failed(format!(
                "{what} after {}: {reason}: {message}",
                humantime::format_duration(a.opts.image_pull_timeout)
            ))))
        }
        _ => {
            seen.stuck_since.remove(pname);
            Waiting::GoOn
        }
    }
}

/// Why a pod is still Pending: not scheduled (and why), or its container's waiting reason.
fn pending_reason(status: &PodStatus, waiting: Option<&ContainerStateWaiting>) -> String {
    let sched = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    });
    match sched {
        Some(c) => format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("not scheduled"),
            c.message.as_deref().unwrap_or_default()
        ),
        None => waiting
            .map(|w| {
                format!(
                    "{}: {}",
                    w.reason.as_deref().unwrap_or_default(),
                    w.message.as_deref().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "Pending".into()),
    }
}

/// The message of the Job's latest `FailedCreate` event (the Job controller's
/// `FailedCreatePodReason`, pkg/controller/controller_utils.go), if any. Events are selected by
/// `involvedObject.uid` and `reason`, both supported field selectors of core/v1 Events
/// (pkg/apis/core/v1/conversion.go).
async fn failed_create(a: &Attempt) -> Option<String> {
    let lp =
        ListParams::default().fields(&format!("involvedObject.uid={},reason=FailedCreate", a.uid));
    match bounded(a.opts.api_timeout, a.events.list(&lp)).await {
        Ok(l) => l
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message),
        Err(e) => {
            tracing::debug!(job = %a.name, error = %e, "cannot list the Job's events");
            None
        }
    }
}
