//! A stateful fake Kubernetes API server for the `kube` runner's tests.
//!
//! It is an axum [`Router`] that `kube::Client::new` takes as its service (or that serves on
//! `127.0.0.1:0` behind a kubeconfig), and it behaves like the parts of the API server and the
//! controllers that the runner meets, each behaviour written from Kubernetes' sources (cited
//! where it is implemented):
//! - batch/v1 Jobs: create (validated like the API server: DNS-1123 name of at most 63
//!   characters, valid labels, restart policy, images, no literal `JOB_SECRET_KEY`), list and
//!   watch (field and label selectors, resource versions, `BOOKMARK` events with
//!   `allowWatchBookmarks`, the watch ended after `timeoutSeconds` scaled by
//!   [`Fake::watch_unit`], `410 Gone` for a version older than the compacted history
//!   ([`Fake::compact_history`]) or scripted), merge patch, delete by `propagationPolicy`:
//!   `Foreground` keeps the Job (with `deletionTimestamp` and the `foregroundDeletion`
//!   finalizer) until its pods are gone, `Background` removes it at once and then deletes its
//!   pods gracefully (they run on through their grace period) and its Secrets, none or `Orphan`
//!   takes the Job out of its pods' `ownerReferences` and leaves them running.
//! - A Job controller and kubelet: once a Job is not suspended, a pod is made for it (labelled
//!   `batch.kubernetes.io/controller-uid`), its env is resolved like the kubelet does (a
//!   `secretKeyRef` to a missing Secret is a violation), and it runs a [`Script`]: log lines, then
//!   an exit code (or OOM kill, eviction), or run until deleted; or it never starts (Pending for
//!   an image pull error, `CreateContainerConfigError`, or `Unschedulable`); or admission refuses
//!   it (a `FailedCreate` event, no pod; Pod Security `restricted` with
//!   [`Fake::enforce_restricted`], checked by [`pss::restricted_violations`]). An injected
//!   sidecar keeps a pod Running after its job container ended. Deleted pods stay Terminating
//!   until their process stops (`term_delay`) or their grace period ends ([`Fake::grace_unit`]).
//!   `activeDeadlineSeconds` is enforced ([`Fake::deadline_unit`]). The Job's conditions follow
//!   1.31+: `SuccessCriteriaMet`/`FailureTarget` first, `Complete`/`Failed` once the pods stopped.
//!   Two pods of one runyard job running at once is recorded as a violation.
//! - core/v1 Secrets (create), Pods (list, delete with `gracePeriodSeconds` and a uid
//!   precondition), Events (list, field selectors), pod logs (`follow`, `timestamps`,
//!   `sinceSeconds`, `sinceTime`, `container`; streams that break mid-way with
//!   `break_logs_every`).
//!
//! - What a real network and API server do now and then: a request that is never answered until
//!   released ([`Fake::hang`]: a half-open connection), a Job create carried out but answered
//!   `504 Timeout` ([`Fake::time_out_next_job_creates`]), a container the runtime cannot start
//!   (`StartError`, [`Script::start_error`]).
//!
//! Every request body is deserialised into its k8s-openapi type and serialised back; a wrong
//! type is refused with 400, an invalid object with 422; a field the type does not know (a
//! misspelt key) is dropped with a `Warning` header, as a real API server does by default
//! ([`Fake::warnings`]; the tests require none). Every call is recorded as (API group, resource,
//! verb) for the RBAC checks.

#![allow(dead_code)]
// Handlers answer errors as ready-made responses.
#![allow(clippy::result_large_err)]

pub mod pss;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use parking_lot::Mutex;
use runyard_runners::kube::k8s_openapi;
use runyard_runners::kube::kube_client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::ByteString;

/// What a Job's container does.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Lines it writes, one every 10 ms.
    pub lines: Vec<String>,
    /// Its exit code; `None`: it runs until deleted (or its deadline).
    pub exit: Option<i32>,
    /// How long it runs after writing its lines.
    pub run_for: Duration,
    /// The pod never starts: it stays Pending for this reason.
    pub pending: Option<Pending>,
    /// The pod is refused at creation (admission) with this message: the Job controller records
    /// a `FailedCreate` Warning event on the Job and the Job has no pod.
    pub refuse: Option<String>,
    /// After its lines, the pod is evicted by the kubelet (node pressure).
    pub evict: bool,
    /// After its lines, the pod is disrupted from outside (the Eviction API, preemption, the
    /// taint manager: this `DisruptionTarget` reason) and deleted: it terminates (143) and is
    /// gone, and only then does its Job fail.
    pub disrupt: Option<String>,
    /// The container is killed for memory (exit 137, `OOMKilled`) instead of exiting.
    pub oom: bool,
    /// The pod gets an injected sidecar container (like Istio's `istio-proxy`) that never exits.
    pub sidecar: bool,
    /// The pod's log streams break after every this many lines of its log (each place once: a
    /// dropped connection; the client must reopen).
    pub break_logs_every: Option<usize>,
    /// After SIGTERM, the process writes `terminating` and runs on this long (the kubelet kills
    /// it when the grace period ends first).
    pub term_delay: Duration,
    /// The runtime cannot start the container's process (its command is not in the image): the
    /// container is terminated at once with exit code 128, reason `StartError` and this message
    /// (containerd with `restartPolicy: Never`), and the pod fails.
    pub start_error: Option<String>,
}

/// Why a pod stays Pending.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// The image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`, again and again.
    ImagePull,
    /// No node fits: `PodScheduled=False`, reason `Unschedulable`.
    Unschedulable,
    /// The container cannot be created: `CreateContainerConfigError`.
    ConfigError,
}

/// Picks a Job's script from the Job and its container's resolved env.
pub type ScriptFn = Arc<dyn Fn(&Job, &BTreeMap<String, String>) -> Script + Send + Sync>;

/// The default script, by `JOB_TYPE`: `fail*` exits 3, `hang*` runs until deleted, anything else
/// succeeds. Each writes what it sees of its env (never the secret itself).
pub fn default_script(_job: &Job, env: &BTreeMap<String, String>) -> Script {
    let t = env.get("JOB_TYPE").cloned().unwrap_or_default();
    let short = t.rsplit('.').next().unwrap_or_default().to_string();
    let mut lines = vec![
        format!(
            "hello from {}",
            env.get("JOB_ID").cloned().unwrap_or_default()
        ),
        format!("args={}", env.get("JOB_ARGS").cloned().unwrap_or_default()),
        format!(
            "secret-len={}",
            env.get("JOB_SECRET_KEY").map(String::len).unwrap_or(0)
        ),
        format!("hook={}", env.get("JOB_HOOK").cloned().unwrap_or_default()),
    ];
    if short.starts_with("fail") {
        lines.push("oops".into());
        Script {
            lines,
            exit: Some(3),
            run_for: Duration::from_millis(50),
            ..Default::default()
        }
    } else if short.starts_with("hang") {
        Script {
            lines,
            exit: None,
            run_for: Duration::ZERO,
            ..Default::default()
        }
    } else {
        lines.push("done".into());
        Script {
            lines,
            exit: Some(0),
            run_for: Duration::from_millis(50),
            ..Default::default()
        }
    }
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// API group (`""` for core).
    pub group: String,
    /// Resource, with `/subresource`.
    pub resource: String,
    /// RBAC verb.
    pub verb: String,
    /// The body, when JSON.
    pub body: Option<Value>,
    /// The `Authorization` header.
    pub auth: Option<String>,
}

/// A recorded deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    /// `jobs`.
    pub resource: String,
    /// Name.
    pub name: String,
    /// The request's `propagationPolicy` (`None`: absent).
    pub propagation: Option<String>,
}

struct LogLine {
    at: Instant,
    wall: k8s_openapi::jiff::Timestamp,
    text: String,
}

#[derive(Default)]
struct St {
    rv: u64,
    next_uid: u64,
    jobs: BTreeMap<(String, String), Job>,
    pods: BTreeMap<(String, String), Pod>,
    secrets: BTreeMap<(String, String), Secret>,
    logs: HashMap<String, Vec<LogLine>>,
    history: Vec<(u64, &'static str, Job)>,
    calls: Vec<Call>,
    deletions: Vec<Deletion>,
    violations: Vec<String>,
    job_bodies: Vec<String>,
    expire_watches: usize,
    watch_410s: usize,
    inject: Vec<((String, String, String), u16)>,
    /// core/v1 Events.
    events: Vec<k8s_openapi::api::core::v1::Event>,
    /// `Warning` headers sent (unknown fields).
    warnings: Vec<String>,
    /// Watch history before this version is compacted away.
    compacted_rv: u64,
    /// Each pod's script (log stream breaks).
    pod_scripts: HashMap<String, Script>,
    /// How many log streams were cut.
    log_breaks: usize,
    /// Where log streams were cut: (pod, line index), each place once.
    broken_at: BTreeSet<(String, usize)>,
    /// Namespaces labelled `pod-security.kubernetes.io/enforce: restricted`.
    restricted: BTreeSet<String>,
    /// The API is unavailable: every request answers 500 ([`Fake::set_unavailable`]).
    unavailable: bool,
    /// Requests that get no answer until released ([`Fake::hang`]).
    hangs: Vec<Hang>,
    /// How many requests are waiting in a hang now.
    hanging: usize,
    /// The next this many Job creates are stored, then answered `504 Timeout`
    /// ([`Fake::time_out_next_job_creates`]).
    creates_504: usize,
}

/// Requests of (API group, resource, verb) whose decoded URI or body contains `text` get no
/// answer until released: a half-open connection, or a load balancer that drops a connection
/// silently, as the client sees it.
struct Hang {
    key: (String, String, String),
    text: String,
    released: tokio::sync::watch::Receiver<bool>,
    release: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The fake API server. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Fake {
    st: Arc<Mutex<St>>,
    events: broadcast::Sender<(u64, &'static str, Job)>,
    script: Arc<Mutex<ScriptFn>>,
    /// What one second of `activeDeadlineSeconds` lasts here.
    pub deadline_unit: Arc<Mutex<Duration>>,
    /// What one second of a grace period lasts here.
    pub grace_unit: Arc<Mutex<Duration>>,
    /// What one second of a watch's `timeoutSeconds` lasts here.
    pub watch_unit: Arc<Mutex<Duration>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// A fake with no objects and the [`default_script`].
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            st: Arc::new(Mutex::new(St::default())),
            events,
            script: Arc::new(Mutex::new(Arc::new(default_script))),
            deadline_unit: Arc::new(Mutex::new(Duration::from_secs(1))),
            grace_unit: Arc::new(Mutex::new(Duration::from_millis(100))),
            watch_unit: Arc::new(Mutex::new(Duration::from_millis(2))),
        }
    }

    /// Makes one second of a grace period last `unit` (default 100 ms).
    pub fn with_grace_unit(self, unit: Duration) -> Self {
        *self.grace_unit.lock() = unit;
        self
    }

    /// Enforces the Pod Security Standards' `restricted` profile on the pods of `namespace`
    /// (as with the label `pod-security.kubernetes.io/enforce: restricted`).
    pub fn enforce_restricted(&self, namespace: &str) {
        self.st.lock().restricted.insert(namespace.to_string());
    }

    /// Compacts the watch history: a watch from an older version gets `410 Gone`.
    pub fn compact_history(&self) {
        let mut st = self.st.lock();
        st.compacted_rv = st.rv;
        st.history.clear();
    }

    /// The `Warning` headers sent so far.
    pub fn warnings(&self) -> Vec<String> {
        self.st.lock().warnings.clone()
    }

    /// How many log streams were cut mid-way.
    pub fn log_breaks(&self) -> usize {
        self.st.lock().log_breaks
    }

    /// Replaces the script picker.
    pub fn with_script(
        self,
        f: impl Fn(&Job, &BTreeMap<String, String>) -> Script + Send + Sync + 'static,
    ) -> Self {
        *self.script.lock() = Arc::new(f);
        self
    }

    /// Makes one second of `activeDeadlineSeconds` last `unit`.
    pub fn with_deadline_unit(self, unit: Duration) -> Self {
        *self.deadline_unit.lock() = unit;
        self
    }

    /// The router (a tower service).
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// A kube client talking to this fake in-process, default namespace `default`.
    pub fn client(&self) -> kube_client::Client {
        kube_client::Client::new(self.router(), "default")
    }

    /// Serves on `127.0.0.1:0`; returns the address and a kubeconfig file for it (context
    /// namespace `namespace`, bearer token `fake-token`) inside `dir`.
    pub async fn serve_tcp(&self, dir: &std::path::Path, namespace: &str) -> (SocketAddr, PathBuf) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let router = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
                 current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n"
            ),
        )
        .expect("write kubeconfig");
        (addr, path)
    }

    // ---- scripting ----

    /// The next `n` watch requests get an `ERROR` event with code 410 (Expired), then end.
    pub fn expire_next_watches(&self, n: usize) {
        self.st.lock().expire_watches += n;
    }

    /// How many 410s were sent.
    pub fn watch_410s(&self) -> usize {
        self.st.lock().watch_410s
    }

    /// An API outage (`true`) and its end: meanwhile every request is recorded and answered
    /// `500 InternalError` "etcdserver: request timed out", as a kube-apiserver answers while
    /// its etcd cannot be reached (a status kube's client does not retry by itself, unlike 503).
    /// The controllers keep running: pods go on, nothing is deleted. Watches already open stay
    /// open but see no change made through the API, since none is made.
    pub fn set_unavailable(&self, down: bool) {
        self.st.lock().unavailable = down;
    }

    /// The next call of (group, resource, verb) fails with `code`.
    pub fn fail_next(&self, group: &str, resource: &str, verb: &str, code: u16) {
        self.st
            .lock()
            .inject
            .push(((group.into(), resource.into(), verb.into()), code));
    }

    /// From now on, requests of (group, resource, verb) whose decoded URI or body contains
    /// `text` (empty: every one) are read and never answered, until [`Fake::release_hangs`]
    /// (then they are served as usual, if their client still waits).
    pub fn hang(&self, group: &str, resource: &str, verb: &str, text: &str) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.st.lock().hangs.push(Hang {
            key: (group.into(), resource.into(), verb.into()),
            text: text.into(),
            released: rx,
            release: Arc::new(tx),
        });
    }

    /// Ends every [`Fake::hang`]: the requests waiting in one are served.
    pub fn release_hangs(&self) {
        for h in std::mem::take(&mut self.st.lock().hangs) {
            let _ = h.release.send(true);
        }
    }

    /// How many requests wait in a [`Fake::hang`] now.
    pub fn hanging(&self) -> usize {
        self.st.lock().hanging
    }

    /// The next `n` Job creates are carried out, then answered `504 Timeout` (an API server
    /// whose answer came too late for its gateway, or its own request timeout after etcd took
    /// the write: kubernetes/kubernetes issue 57452). kube's client retries a 504 by itself.
    pub fn time_out_next_job_creates(&self, n: usize) {
        self.st.lock().creates_504 += n;
    }

    /// Ends a running (hanging) Job's container with `exit`.
    pub fn finish_job(&self, namespace: &str, name: &str, exit: i32) {
        let f = self.clone();
        let (ns, name) = (namespace.to_string(), name.to_string());
        let uid = self.job(&ns, &name).and_then(|j| j.metadata.uid);
        if let (Some(uid), Some((_, pod))) = (uid.clone(), uid.and_then(|u| self.pod_of(&u))) {
            tokio::spawn(async move {
                f.main_exited(&ns, &name, &uid, &pod, exit, false, false)
                    .await
            });
        }
    }

    // ---- inspection ----

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.st.lock().calls.clone()
    }

    /// The distinct (group, resource, verb) of every request so far.
    pub fn api_calls(&self) -> BTreeSet<(String, String, String)> {
        self.st
            .lock()
            .calls
            .iter()
            .map(|c| (c.group.clone(), c.resource.clone(), c.verb.clone()))
            .collect()
    }

    /// Every deletion so far.
    pub fn deletions(&self) -> Vec<Deletion> {
        self.st.lock().deletions.clone()
    }

    /// What the fake found wrong in what the client did (must stay empty).
    pub fn violations(&self) -> Vec<String> {
        self.st.lock().violations.clone()
    }

    /// The raw bodies of every Job create request.
    pub fn job_bodies(&self) -> Vec<String> {
        self.st.lock().job_bodies.clone()
    }

    /// A Job.
    pub fn job(&self, namespace: &str, name: &str) -> Option<Job> {
        self.st
            .lock()
            .jobs
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    /// All Jobs.
    pub fn jobs(&self) -> Vec<Job> {
        self.st.lock().jobs.values().cloned().collect()
    }

    /// All pods.
    pub fn pods(&self) -> Vec<Pod> {
        self.st.lock().pods.values().cloned().collect()
    }

    /// All Secrets.
    pub fn secrets(&self) -> Vec<Secret> {
        self.st.lock().secrets.values().cloned().collect()
    }

    /// Whether the Job is `Complete` or `Failed`.
    pub fn job_finished(&self, namespace: &str, name: &str) -> bool {
        self.job(namespace, name).is_some_and(|j| {
            conditions(&j)
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
    }

    /// Polls until `f` holds (at most 10 s).
    pub async fn until(&self, what: &str, f: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "fake: `{what}` not reached in 10s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- the controllers ----

    fn bump(st: &mut St) -> String {
        st.rv += 1;
        st.rv.to_string()
    }

    fn emit(&self, st: &mut St, kind: &'static str, job: &Job) {
        let rv: u64 = job
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(st.rv);
        st.history.push((rv, kind, job.clone()));
        let _ = self.events.send((rv, kind, job.clone()));
    }

    /// Applies `f` to a Job (if its uid is still `uid`), bumps its version and tells watchers.
    fn update_job(&self, ns: &str, name: &str, uid: &str, f: impl FnOnce(&mut Job)) -> bool {
        let mut st = self.st.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(mut job) = st.jobs.get(&key).cloned() else {
            return false;
        };
        if job.metadata.uid.as_deref() != Some(uid) {
            return false;
        }
        f(&mut job);
        job.metadata.resource_version = Some(Self::bump(&mut st));
        st.jobs.insert(key, job.clone());
        self.emit(&mut st, "MODIFIED", &job);
        true
    }

    fn job_alive(&self, ns: &str, name: &str, uid: &str) -> bool {
        self.job(ns, name)
            .is_some_and(|j| j.metadata.uid.as_deref() == Some(uid))
    }

    fn pod_of(&self, job_uid: &str) -> Option<(String, String)> {
        self.st
            .lock()
            .pods
            .iter()
            .find(|(_, p)| owned_by(&p.metadata, job_uid))
            .map(|(k, _)| k.clone())
    }

    /// Resolves the container's env like the kubelet: literals and `secretKeyRef`s.
    fn resolve_env(&self, ns: &str, job: &Job) -> Result<BTreeMap<String, String>, String> {
        let st = self.st.lock();
        let mut out = BTreeMap::new();
        let spec = job.spec.as_ref().ok_or("no spec")?;
        let pod = spec.template.spec.as_ref().ok_or("no pod spec")?;
        for c in &pod.containers {
            for e in c.env.clone().unwrap_or_default() {
                if let Some(v) = e.value {
                    out.insert(e.name, v);
                } else if let Some(r) = e.value_from.and_then(|v| v.secret_key_ref) {
                    let secret = st
                        .secrets
                        .get(&(ns.to_string(), r.name.clone()))
                        .ok_or_else(|| {
                            format!(
                                "CreateContainerConfigError: secret \"{}\" not found (env {})",
                                r.name, e.name
                            )
                        })?;
                    let v = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .ok_or_else(|| {
                            format!(
                                "CreateContainerConfigError: no key {} in secret {}",
                                r.key, r.name
                            )
                        })?;
                    out.insert(e.name, String::from_utf8_lossy(&v.0).into_owned());
                }
            }
        }
        Ok(out)
    }

    /// The Job controller and the kubelet for one Job.
    async fn run_job(self, ns: String, name: String, uid: String) {
        let Some(job) = self.job(&ns, &name) else {
            return;
        };
        let env = match self.resolve_env(&ns, &job) {
            Ok(env) => env,
            Err(v) => {
                self.st
                    .lock()
                    .violations
                    .push(format!("pod of Job {name}: {v}"));
                return;
            }
        };
        let script = (self.script.lock().clone())(&job, &env);
        let started = Instant::now();
        let deadline = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| started + *self.deadline_unit.lock() * s.min(u32::MAX as i64) as u32);
        // Pod Security admission on the Job controller's pod create
        // (staging/src/k8s.io/pod-security-admission/admission/admission.go).
        let enforced = self.st.lock().restricted.contains(&ns);
        let psa = enforced
            .then(|| {
                let spec = job
                    .spec
                    .clone()
                    .unwrap_or_default()
                    .template
                    .spec
                    .unwrap_or_default();
                pss::restricted_violations(&spec)
            })
            .filter(|v| !v.is_empty())
            .map(|v| {
                format!(
                    "violates PodSecurity \"restricted:latest\": {}",
                    v.join(", ")
                )
            });
        if let Some(message) = psa.as_ref().or(script.refuse.as_ref()) {
            // Admission refused the pod: the Job controller records a Warning event with reason
            // `FailedCreate` (FailedCreatePodReason, pkg/controller/controller_utils.go) on the Job
            // and retries; the Job has no pod (kubernetes/kubernetes issue 66756).
            self.record_event(
                &job,
                "FailedCreate",
                &format!("Error creating: pods \"{name}-x\" is forbidden: {message}"),
            );
            self.until_deadline(&ns, &name, &uid, deadline).await;
            return;
        }
        // The pod.
        let pod_name = format!("{name}-{}", &uid[uid.len().saturating_sub(5)..]);
        {
            let mut st = self.st.lock();
            let template = job.spec.clone().unwrap_or_default().template;
            let mut labels = template
                .metadata
                .clone()
                .unwrap_or_default()
                .labels
                .unwrap_or_default();
            labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
            labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
            labels.insert("job-name".into(), name.clone());
            labels.insert("controller-uid".into(), uid.clone());
            let rv = Self::bump(&mut st);
            let mut spec = template.spec.clone().unwrap_or_default();
            if script.sidecar {
                // What a mutating webhook (Istio) injects: a plain container, not a native
                // sidecar, so the pod runs as long as it does.
                spec.containers.push(k8s_openapi::api::core::v1::Container {
                    name: "istio-proxy".into(),
                    image: Some("istio/proxyv2".into()),
                    ..Default::default()
                });
            }
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pod_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    uid: Some(format!("pod-{uid}")),
                    resource_version: Some(rv),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "batch/v1".into(),
                        kind: "Job".into(),
                        name: name.clone(),
                        uid: uid.clone(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]),
                    ..Default::default()
                },
                spec: Some(spec),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
            };
            st.pods.insert((ns.clone(), pod_name.clone()), pod);
            st.logs.insert(pod_name.clone(), Vec::new());
            st.pod_scripts.insert(pod_name.clone(), script.clone());
        }
        self.update_job(&ns, &name, &uid, |j| {
            let s = j.status.get_or_insert_with(JobStatus::default);
            s.active = Some(1);
            s.start_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(why) = &script.pending {
            self.stay_pending(&ns, &name, &uid, &pod_name, why, deadline)
                .await;
            return;
        }
        if let Some(message) = &script.start_error {
            self.start_failed(&ns, &name, &uid, &pod_name, message)
                .await;
            return;
        }
        if !self.set_pod(&ns, &pod_name, "Running", None) {
            return;
        }
        self.check_overlap(&ns, &pod_name);
        let mut next_line = 0;
        let mut end: Option<Instant> = None;
        let mut main_done = false;
        loop {
            let Some(pod) = self.pod(&ns, &pod_name) else {
                return;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                self.kubelet_terminate(&ns, &pod_name, &script, main_done)
                    .await;
                return;
            }
            if !main_done && !container_running(&pod) {
                return; // Ended from outside (finish_job).
            }
            let now = Instant::now();
            if !main_done && deadline.is_some_and(|d| now >= d) && !self.job_finished(&ns, &name) {
                // activeDeadlineSeconds: the Job controller adds FailureTarget and deletes the
                // active pods (gracefully); Failed follows once they are gone
                // (pkg/controller/job/job_controller.go, Kubernetes 1.31+).
                self.update_job(&ns, &name, &uid, |j| {
                    let s = j.status.get_or_insert_with(JobStatus::default);
                    s.conditions = Some(vec![condition("FailureTarget", "DeadlineExceeded")]);
                });
                self.delete_pod(&ns, &pod_name, None);
                continue;
            }
            if !main_done {
                if next_line < script.lines.len() {
                    self.push_log(&pod_name, &script.lines[next_line]);
                    next_line += 1;
                } else if let Some(reason) = &script.disrupt {
                    if end.is_none() {
                        end = Some(now);
                        self.disrupt(&ns, &name, &uid, &pod_name, reason);
                    }
                } else if script.exit.is_some() || script.evict || script.oom {
                    let e = *end.get_or_insert(now + script.run_for);
                    if now >= e {
                        main_done = true;
                        if script.evict {
                            self.evict(&ns, &name, &uid, &pod_name).await;
                            return;
                        }
                        let exit = if script.oom {
                            137
                        } else {
                            script.exit.unwrap_or(0)
                        };
                        self.main_exited(
                            &ns,
                            &name,
                            &uid,
                            &pod_name,
                            exit,
                            script.oom,
                            script.sidecar,
                        )
                        .await;
                        if !script.sidecar {
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.st
            .lock()
            .pods
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    fn push_log(&self, pod: &str, line: &str) {
        if let Some(l) = self.st.lock().logs.get_mut(pod) {
            l.push(LogLine {
                at: Instant::now(),
                wall: k8s_openapi::jiff::Timestamp::now(),
                text: line.to_string(),
            });
        }
    }

    /// Records a Warning event about a Job.
    fn record_event(&self, job: &Job, reason: &str, message: &str) {
        let mut st = self.st.lock();
        let rv = Self::bump(&mut st);
        let n = st.events.len();
        st.events.push(k8s_openapi::api::core::v1::Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{n:x}",
                    job.metadata.name.clone().unwrap_or_default()
                )),
                namespace: job.metadata.namespace.clone(),
                resource_version: Some(rv),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: job.metadata.name.clone(),
                namespace: job.metadata.namespace.clone(),
                uid: job.metadata.uid.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Warning".into()),
            count: Some(1),
            last_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("job-controller".into()),
                host: None,
            }),
            ..Default::default()
        });
    }

    /// A Job with no pod: only its deadline ends it.
    async fn until_deadline(&self, ns: &str, name: &str, uid: &str, deadline: Option<Instant>) {
        loop {
            if !self.job_alive(ns, name, uid) {
                return;
            }
            if self
                .job(ns, name)
                .is_some_and(|j| j.metadata.deletion_timestamp.is_some())
            {
                self.gc_job_if_done(ns, name);
                return;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.update_job(ns, name, uid, |j| {
                    let s = j.status.get_or_insert_with(JobStatus::default);
                    s.conditions = Some(vec![
                        condition("FailureTarget", "DeadlineExceeded"),
                        condition("Failed", "DeadlineExceeded"),
                    ]);
                });
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A pod that never starts. The kubelet reports the container `Waiting` with the pull
    /// errors of pkg/kubelet/images/types.go (`ErrImagePull`, then `ImagePullBackOff` while it
    /// backs off, kubernetes/kubernetes issue 122300), or `CreateContainerConfigError`
    /// (pkg/kubelet/kuberuntime/kuberuntime_container.go); the scheduler sets
    /// `PodScheduled=False` with reason `Unschedulable` (v1.PodReasonUnschedulable). None of
    /// them fails the Job: only `activeDeadlineSeconds` does.
    async fn stay_pending(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        pod_name: &str,
        why: &Pending,
        deadline: Option<Instant>,
    ) {
        let mut round = 0u32;
        loop {
            let Some(pod) = self.pod(ns, pod_name) else {
                return;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                // Nothing runs: the pod goes at once.
                self.remove_pod(ns, pod_name);
                return;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) && !self.job_finished(ns, name) {
                self.update_job(ns, name, uid, |j| {
                    let s = j.status.get_or_insert_with(JobStatus::default);
                    s.conditions = Some(vec![condition("FailureTarget", "DeadlineExceeded")]);
                });
                self.remove_pod(ns, pod_name);
                return;
            }
            {
                let mut st = self.st.lock();
                let rv = Self::bump(&mut st);
                if let Some(p) = st.pods.get_mut(&(ns.to_string(), pod_name.to_string())) {
                    p.metadata.resource_version = Some(rv);
                    let s = p.status.get_or_insert_with(Default::default);
                    match why {
                        Pending::Unschedulable => {
                            s.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                                type_: "PodScheduled".into(),
                                status: "False".into(),
                                reason: Some("Unschedulable".into()),
                                message: Some(
                                    "0/3 nodes are available: 3 Insufficient cpu.".into(),
                                ),
                                ..Default::default()
                            }]);
                        }
                        Pending::ImagePull | Pending::ConfigError => {
                            let (reason, message) = match why {
                                Pending::ImagePull if round.is_multiple_of(2) => (
                                    "ErrImagePull",
                                    "rpc error: code = NotFound desc = failed to pull and unpack image: not found",
                                ),
                                Pending::ImagePull => (
                                    "ImagePullBackOff",
                                    "Back-off pulling image \"ghcr.io/example/missing:1\"",
                                ),
                                _ => (
                                    "CreateContainerConfigError",
                                    "configmap \"settings\" not found",
                                ),
                            };
                            s.container_statuses = Some(vec![ContainerStatus {
                                name: runyard_runners::kube::CONTAINER.into(),
                                image: "img".into(),
                                image_id: String::new(),
                                ready: false,
                                restart_count: 0,
                                state: Some(ContainerState {
                                    waiting: Some(
                                        k8s_openapi::api::core::v1::ContainerStateWaiting {
                                            reason: Some(reason.into()),
                                            message: Some(message.into()),
                                        },
                                    ),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }]);
                        }
                    }
                }
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Two pods of one runyard job with running containers at once: what the runner must never
    /// let happen.
    fn check_overlap(&self, ns: &str, pod_name: &str) {
        let mut st = self.st.lock();
        let Some(me) = st.pods.get(&(ns.to_string(), pod_name.to_string())) else {
            return;
        };
        let id = me
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(runyard_runners::kube::LABEL_JOB_ID))
            .cloned();
        let Some(id) = id else { return };
        let others: Vec<String> = st
            .pods
            .iter()
            .filter(|((n, p), pod)| {
                *n == ns
                    && p != pod_name
                    && pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(runyard_runners::kube::LABEL_JOB_ID))
                        == Some(&id)
                    && container_running(pod)
            })
            .map(|((_, p), _)| p.clone())
            .collect();
        if !others.is_empty() {
            st.violations.push(format!(
                "pod {pod_name} started while {others:?} of the same job still run"
            ));
        }
    }

    /// The job container ended by itself.
    #[allow(clippy::too_many_arguments)]
    async fn main_exited(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        pod_name: &str,
        exit: i32,
        oom: bool,
        sidecar: bool,
    ) {
        let phase = if sidecar {
            // The sidecar keeps the pod Running, and the Job active (kubernetes/kubernetes
            // issue 25908; native sidecars, KEP-753, are the fix).
            "Running"
        } else if exit == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        self.set_pod(ns, pod_name, phase, Some(exit));
        if oom {
            let mut st = self.st.lock();
            if let Some(t) = st
                .pods
                .get_mut(&(ns.to_string(), pod_name.to_string()))
                .and_then(|p| p.status.as_mut())
                .and_then(|s| s.container_statuses.as_mut())
                .and_then(|c| c.first_mut())
                .and_then(|c| c.state.as_mut())
                .and_then(|s| s.terminated.as_mut())
            {
                t.reason = Some("OOMKilled".into());
            }
        }
        if sidecar {
            return;
        }
        self.finish_conditions(ns, name, uid, exit == 0).await;
    }

    /// The runtime could not start the container's process (containerd: `failed to create
    /// containerd task: ... exec: "python3": executable file not found in $PATH`): with
    /// `restartPolicy: Never` the kubelet reports it terminated (not waiting) with exit code 128,
    /// reason `StartError` and the runtime's message; the pod fails (kubernetes/kubernetes
    /// issue 14491).
    async fn start_failed(&self, ns: &str, name: &str, uid: &str, pod_name: &str, message: &str) {
        self.set_pod(ns, pod_name, "Failed", Some(128));
        {
            let mut st = self.st.lock();
            if let Some(t) = st
                .pods
                .get_mut(&(ns.to_string(), pod_name.to_string()))
                .and_then(|p| p.status.as_mut())
                .and_then(|s| s.container_statuses.as_mut())
                .and_then(|c| c.first_mut())
                .and_then(|c| c.state.as_mut())
                .and_then(|s| s.terminated.as_mut())
            {
                t.reason = Some("StartError".into());
                t.message = Some(message.into());
            }
        }
        self.finish_conditions(ns, name, uid, false).await;
    }

    /// `SuccessCriteriaMet`/`FailureTarget` first, then, once the pods have stopped,
    /// `Complete`/`Failed` (Kubernetes 1.31+, pkg/controller/job/job_controller.go: the terminal
    /// condition waits for the pods' terminal phase).
    async fn finish_conditions(&self, ns: &str, name: &str, uid: &str, ok: bool) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (interim, last, reason) = if ok {
            ("SuccessCriteriaMet", "Complete", "CompletionsReached")
        } else {
            ("FailureTarget", "Failed", "BackoffLimitExceeded")
        };
        self.update_job(ns, name, uid, |j| {
            let s = j.status.get_or_insert_with(JobStatus::default);
            s.active = Some(0);
            if ok {
                s.succeeded = Some(1);
            } else {
                s.failed = Some(1);
            }
            s.conditions = Some(vec![condition(interim, reason)]);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.update_job(ns, name, uid, |j| {
            let s = j.status.get_or_insert_with(JobStatus::default);
            s.conditions
                .get_or_insert_with(Vec::new)
                .push(condition(last, reason));
            s.completion_time = ok.then(|| Time(k8s_openapi::jiff::Timestamp::now()));
        });
    }

    /// Node-pressure eviction by the kubelet: the pod fails with `status.reason: Evicted`
    /// (pkg/kubelet/eviction/eviction_manager.go) and a `DisruptionTarget` condition with reason
    /// `TerminationByKubelet`; the container is killed (137).
    async fn evict(&self, ns: &str, name: &str, uid: &str, pod_name: &str) {
        self.set_pod(ns, pod_name, "Failed", Some(137));
        {
            let mut st = self.st.lock();
            if let Some(s) = st
                .pods
                .get_mut(&(ns.to_string(), pod_name.to_string()))
                .and_then(|p| p.status.as_mut())
            {
                s.reason = Some("Evicted".into());
                s.message = Some("The node was low on resource: memory. Threshold quantity: 100Mi, available: 12Mi.".into());
                s.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    message: Some("The node was low on resource: memory.".into()),
                    ..Default::default()
                }]);
            }
        }
        self.finish_conditions(ns, name, uid, false).await;
    }

    /// A disruption from outside the kubelet (the Eviction API, preemption, the taint manager):
    /// the pod gets a `DisruptionTarget` condition with `reason` and is deleted with its grace
    /// period; the Job controller counts it as terminating, no longer active
    /// (`status.terminating`, Kubernetes 1.29+). The pod then terminates (143) and goes, and
    /// only then does its Job fail ([`Self::remove_pod`]): when `Failed` comes, no pod is left
    /// to read the disruption from.
    fn disrupt(&self, ns: &str, name: &str, uid: &str, pod_name: &str, reason: &str) {
        {
            let mut st = self.st.lock();
            let rv = Self::bump(&mut st);
            if let Some(p) = st.pods.get_mut(&(ns.to_string(), pod_name.to_string())) {
                p.metadata.resource_version = Some(rv);
                let s = p.status.get_or_insert_with(PodStatus::default);
                s.conditions.get_or_insert_with(Vec::new).push(
                    k8s_openapi::api::core::v1::PodCondition {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some(format!("{reason}: deleting the pod")),
                        ..Default::default()
                    },
                );
            }
        }
        self.delete_pod(ns, pod_name, None);
        self.update_job(ns, name, uid, |j| {
            let s = j.status.get_or_insert_with(JobStatus::default);
            s.active = Some(0);
            s.terminating = Some(1);
        });
    }

    /// A pod being deleted: SIGTERM; the process runs on for `term_delay`, or until the grace
    /// period ends (then SIGKILL); the pod object goes once its containers have stopped
    /// (graceful deletion, pkg/registry/core/pod/strategy.go CheckGracefulDelete; the kubelet
    /// confirms with a zero-grace delete).
    async fn kubelet_terminate(&self, ns: &str, pod_name: &str, script: &Script, main_done: bool) {
        let grace = self
            .pod(ns, pod_name)
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u32;
        let grace = *self.grace_unit.lock() * grace;
        if !main_done {
            self.push_log(pod_name, "terminating");
        }
        let runs = if main_done && !script.sidecar {
            Duration::ZERO
        } else {
            script.term_delay.min(grace)
        };
        tokio::time::sleep(runs).await;
        let code = if script.term_delay > grace { 137 } else { 143 };
        if !main_done {
            self.set_pod(ns, pod_name, "Failed", Some(code));
        }
        self.remove_pod(ns, pod_name);
    }

    /// Removes a pod; then the owning Job's controller and garbage collector act.
    fn remove_pod(&self, ns: &str, pod_name: &str) {
        let owner = {
            let mut st = self.st.lock();
            let p = st.pods.remove(&(ns.to_string(), pod_name.to_string()));
            p.and_then(|p| p.metadata.owner_references)
                .and_then(|o| o.into_iter().next())
        };
        let Some(owner) = owner else { return };
        let Some(job) = self.job(ns, &owner.name) else {
            return;
        };
        if job.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
            return;
        }
        if job.metadata.deletion_timestamp.is_some() {
            self.gc_job_if_done(ns, &owner.name);
            return;
        }
        // The pod is gone: an interim condition becomes final; a pod deleted under a running
        // Job counts as failed (backoffLimit 0).
        let conds = conditions(&job);
        let has = |t: &str| conds.iter().any(|c| c.type_ == t);
        if has("Complete") || has("Failed") {
            return;
        }
        let reason = conds
            .iter()
            .find(|c| c.type_ == "FailureTarget")
            .and_then(|c| c.reason.clone());
        self.update_job(ns, &owner.name, &owner.uid, |j| {
            let s = j.status.get_or_insert_with(JobStatus::default);
            s.active = Some(0);
            if has("SuccessCriteriaMet") {
                s.conditions
                    .get_or_insert_with(Vec::new)
                    .push(condition("Complete", "CompletionsReached"));
            } else {
                let r = reason.as_deref().unwrap_or("BackoffLimitExceeded");
                let c = s.conditions.get_or_insert_with(Vec::new);
                if !c.iter().any(|c| c.type_ == "FailureTarget") {
                    c.push(condition("FailureTarget", r));
                }
                c.push(condition("Failed", r));
            }
        });
    }

    /// Graceful deletion of a pod: `deletionTimestamp` and `deletionGracePeriodSeconds` (the
    /// request's `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds`).
    fn delete_pod(&self, ns: &str, pod_name: &str, grace: Option<i64>) -> bool {
        let mut st = self.st.lock();
        let rv = Self::bump(&mut st);
        let Some(p) = st.pods.get_mut(&(ns.to_string(), pod_name.to_string())) else {
            return false;
        };
        if p.metadata.deletion_timestamp.is_none() {
            let g = grace.unwrap_or_else(|| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
            });
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            p.metadata.deletion_grace_period_seconds = Some(g);
        } else if let Some(g) = grace {
            // A shorter grace period can be set on a pod already terminating.
            let cur = p.metadata.deletion_grace_period_seconds.unwrap_or(g);
            p.metadata.deletion_grace_period_seconds = Some(cur.min(g));
        }
        p.metadata.resource_version = Some(rv);
        true
    }

    /// The garbage collector on a Job being deleted in the foreground: the Job object goes (with
    /// the Secrets it owns) once no dependent with `blockOwnerDeletion` is left
    /// (pkg/controller/garbagecollector/garbagecollector.go, `processDeletingDependentsItem`).
    fn gc_job_if_done(&self, ns: &str, name: &str) {
        let mut st = self.st.lock();
        let Some(job) = st.jobs.get(&(ns.to_string(), name.to_string())).cloned() else {
            return;
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        if st.pods.values().any(|p| owned_by(&p.metadata, &uid)) {
            return;
        }
        st.jobs.remove(&(ns.to_string(), name.to_string()));
        st.secrets.retain(|_, s| !owned_by(&s.metadata, &uid));
        let mut gone = job;
        gone.metadata.resource_version = Some(Self::bump(&mut st));
        self.emit(&mut st, "DELETED", &gone);
    }

    fn set_pod(&self, ns: &str, pod: &str, phase: &str, exit: Option<i32>) -> bool {
        let mut st = self.st.lock();
        let rv = Self::bump(&mut st);
        let Some(p) = st.pods.get_mut(&(ns.to_string(), pod.to_string())) else {
            return false;
        };
        p.metadata.resource_version = Some(rv);
        let state = match exit {
            None => ContainerState {
                running: Some(ContainerStateRunning { started_at: None }),
                ..Default::default()
            },
            Some(code) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let mut statuses = vec![ContainerStatus {
            name: runyard_runners::kube::CONTAINER.into(),
            image: "img".into(),
            image_id: String::new(),
            ready: exit.is_none(),
            restart_count: 0,
            state: Some(state),
            ..Default::default()
        }];
        let has_sidecar = p
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == "istio-proxy"));
        if has_sidecar && phase == "Running" {
            statuses.push(ContainerStatus {
                name: "istio-proxy".into(),
                image: "istio/proxyv2".into(),
                image_id: String::new(),
                ready: true,
                restart_count: 0,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: None }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        // The pod's conditions stay (a `DisruptionTarget` set before the kubelet ends it).
        let conditions = p.status.as_ref().and_then(|s| s.conditions.clone());
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(statuses),
            conditions,
            ..Default::default()
        });
        true
    }

    /// Deletes a Job by `propagationPolicy` (pkg/registry/batch/job/strategy.go: a Job deleted
    /// with no policy through the API orphans its pods):
    /// - `Foreground`: the Job gets a `deletionTimestamp` and the `foregroundDeletion`
    ///   finalizer; its pods are deleted gracefully; it goes once they are gone;
    /// - `Background`: the Job goes now; the garbage collector then deletes its pods
    ///   gracefully (they run on through their grace period) and its Secrets;
    /// - `Orphan` (or none): the pods stay, running, with the Job taken out of their
    ///   `ownerReferences`.
    fn delete_job(&self, ns: &str, name: &str, propagation: Option<String>) -> Option<Job> {
        let mut st = self.st.lock();
        let key = (ns.to_string(), name.to_string());
        let job = st.jobs.get(&key).cloned()?;
        st.deletions.push(Deletion {
            resource: "jobs".into(),
            name: name.into(),
            propagation: propagation.clone(),
        });
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<String> = st
            .pods
            .iter()
            .filter(|((n, _), p)| n == ns && owned_by(&p.metadata, &uid))
            .map(|((_, p), _)| p.clone())
            .collect();
        match propagation.as_deref() {
            Some("Foreground") => {
                if job.metadata.deletion_timestamp.is_some() {
                    return Some(job);
                }
                let mut j = job.clone();
                j.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
                j.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
                j.metadata.resource_version = Some(Self::bump(&mut st));
                st.jobs.insert(key, j.clone());
                self.emit(&mut st, "MODIFIED", &j);
                drop(st);
                for p in &owned {
                    self.delete_pod(ns, p, None);
                }
                self.gc_job_if_done(ns, name);
                Some(j)
            }
            other => {
                st.jobs.remove(&key);
                let mut gone = job.clone();
                gone.metadata.resource_version = Some(Self::bump(&mut st));
                self.emit(&mut st, "DELETED", &gone);
                drop(st);
                if other != Some("Background") {
                    // The garbage collector's `orphan` finalizer removes the Job from its
                    // dependents' `ownerReferences` before the Job goes (garbagecollector.go,
                    // `orphanDependents`): the pods keep their labels and run on, and the
                    // Secrets stay, owned by nothing.
                    let mut st = self.st.lock();
                    for sec in st.secrets.values_mut() {
                        if let Some(refs) = sec.metadata.owner_references.as_mut() {
                            refs.retain(|r| r.uid != uid);
                        }
                    }
                    for p in &owned {
                        let rv = Self::bump(&mut st);
                        if let Some(pod) = st.pods.get_mut(&(ns.to_string(), p.clone())) {
                            if let Some(refs) = pod.metadata.owner_references.as_mut() {
                                refs.retain(|r| r.uid != uid);
                            }
                            pod.metadata.resource_version = Some(rv);
                        }
                    }
                }
                if other == Some("Background") {
                    let f = self.clone();
                    let ns = ns.to_string();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        for p in &owned {
                            f.delete_pod(&ns, p, None);
                        }
                        f.st.lock()
                            .secrets
                            .retain(|_, s| !owned_by(&s.metadata, &uid));
                    });
                }
                Some(job)
            }
        }
    }
}

/// Whether a pod's job container runs (a terminating pod's too).
fn container_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.name == runyard_runners::kube::CONTAINER)
        })
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

fn conditions(job: &Job) -> Vec<JobCondition> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

fn condition(type_: &str, reason: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(format!("{type_}: {reason}")),
        ..Default::default()
    }
}

// ---- HTTP ----

fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok_json(code: StatusCode, v: impl Serialize) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_string(&v).expect("serialise"),
    )
        .into_response()
}

/// Deserialises strictly: a wrong type fails, and so does any field the type does not know (the
/// value must survive a round trip through the k8s-openapi type unchanged).
/// Unknown fields are not refused: like a real API server with the default `fieldValidation:
/// Warn` (KEP-2885, GA in 1.27), it drops them and answers with a `Warning: 299 - "unknown
/// field ..."` header (recorded in [`Fake::warnings`]).
fn strict<T: DeserializeOwned + Serialize>(v: &Value, what: &str) -> Result<T, Response> {
    let t: T = serde_json::from_value(v.clone())
        .map_err(|e| status(400, "BadRequest", format!("{what}: cannot decode: {e}")))?;
    let back = serde_json::to_value(&t).expect("serialise");
    if let Some(p) = first_unknown(v, &back, "") {
        WARNINGS.with(|w| {
            w.borrow_mut()
                .push(format!("unknown field \"{}\"", p.trim_start_matches('.')))
        });
    }
    Ok(t)
}

thread_local! {
    /// The warnings of the request being handled (handlers are synchronous up to their answer).
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The first path present in `orig` but not in `back`.
fn first_unknown(orig: &Value, back: &Value, path: &str) -> Option<String> {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    None if !v.is_null() => return Some(p),
                    None => {}
                    Some(bv) => {
                        if let Some(u) = first_unknown(v, bv, &p) {
                            return Some(u);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(o), Value::Array(b)) => o
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (ov, bv))| first_unknown(ov, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The parts of an API path.
struct ApiPath {
    group: String,
    namespace: String,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<ApiPath> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, res] => Some(ApiPath {
            group,
            namespace: ns.to_string(),
            resource: res.to_string(),
            name: None,
            sub: None,
        }),
        ["namespaces", ns, res, name] => Some(ApiPath {
            group,
            namespace: ns.to_string(),
            resource: res.to_string(),
            name: Some(name.to_string()),
            sub: None,
        }),
        ["namespaces", ns, res, name, sub] => Some(ApiPath {
            group,
            namespace: ns.to_string(),
            resource: res.to_string(),
            name: Some(name.to_string()),
            sub: Some(sub.to_string()),
        }),
        _ => None,
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-based selector terms (`a=b,c==d`); other operators are refused.
fn selector(s: Option<&String>) -> Result<Vec<(String, String)>, Response> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    s.split(',')
        .map(|t| {
            let t = t.replace("==", "=");
            match t.split_once('=') {
                Some((k, v)) if !k.contains('!') => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(status(
                    400,
                    "BadRequest",
                    format!("unsupported selector term `{t}`"),
                )),
            }
        })
        .collect()
}

fn matches(meta: &ObjectMeta, labels: &[(String, String)], fields: &[(String, String)]) -> bool {
    let l = meta.labels.clone().unwrap_or_default();
    labels.iter().all(|(k, v)| l.get(k) == Some(v))
        && fields.iter().all(|(k, v)| match k.as_str() {
            "metadata.name" => meta.name.as_deref() == Some(v.as_str()),
            "metadata.namespace" => meta.namespace.as_deref() == Some(v.as_str()),
            _ => false,
        })
}

fn verb(method: &Method, p: &ApiPath, q: &HashMap<String, String>) -> String {
    match (method.as_str(), &p.name) {
        ("GET", None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => "unknown",
    }
    .to_string()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain as the API server checks it: at most 253 characters in all, dot-separated
/// parts of lowercase alphanumerics and dashes, alphanumeric at both ends (no per-part limit).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

fn label_errors(labels: &BTreeMap<String, String>) -> Option<String> {
    for (k, v) in labels {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok || prefix.is_some_and(|p| !is_dns_subdomain(p)) {
            return Some(format!("invalid label key `{k}`"));
        }
        let value_ok = v.is_empty()
            || (v.len() <= 63
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
        if !value_ok {
            return Some(format!("invalid label value `{v}` of `{k}`"));
        }
    }
    None
}

/// What the API server's validation says of a new Job.
fn validate_job(job: &Job, ns: &str) -> Result<(), String> {
    let name = job
        .metadata
        .name
        .as_deref()
        .ok_or("metadata.name: Required value")?;
    if !is_dns_label(name) {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label of at most 63 characters"
        ));
    }
    if job.metadata.namespace.as_deref().is_some_and(|n| n != ns) {
        return Err("metadata.namespace does not match the request".into());
    }
    if let Some(e) = label_errors(&job.metadata.labels.clone().unwrap_or_default()) {
        return Err(format!("metadata.labels: {e}"));
    }
    let spec = job.spec.as_ref().ok_or("spec: Required value")?;
    if spec.selector.is_some() || spec.manual_selector == Some(true) {
        return Err("spec.selector: the runner must not set a selector".into());
    }
    if spec.backoff_limit.is_some_and(|b| b < 0) {
        return Err("spec.backoffLimit: must be >= 0".into());
    }
    if spec.active_deadline_seconds.is_some_and(|s| s <= 0) {
        return Err("spec.activeDeadlineSeconds: must be > 0".into());
    }
    if spec.ttl_seconds_after_finished.is_some_and(|s| s < 0) {
        return Err("spec.ttlSecondsAfterFinished: must be >= 0".into());
    }
    if let Some(m) = &spec.template.metadata {
        if let Some(e) = label_errors(&m.labels.clone().unwrap_or_default()) {
            return Err(format!("spec.template.metadata.labels: {e}"));
        }
    }
    let pod = spec
        .template
        .spec
        .as_ref()
        .ok_or("spec.template.spec: Required value")?;
    match pod.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => {}
        other => {
            return Err(format!(
                "spec.template.spec.restartPolicy: Unsupported value: {other:?}"
            ))
        }
    }
    if pod.containers.is_empty() {
        return Err("spec.template.spec.containers: Required value".into());
    }
    for c in &pod.containers {
        if !is_dns_label(&c.name) {
            return Err(format!("container name `{}` is invalid", c.name));
        }
        if c.image.as_deref().is_none_or(str::is_empty) {
            return Err("spec.template.spec.containers[].image: Required value".into());
        }
        for e in c.env.clone().unwrap_or_default() {
            if e.value.is_some() && e.value_from.is_some() {
                return Err(format!("env {}: value and valueFrom are exclusive", e.name));
            }
            if e.name == "JOB_SECRET_KEY" && e.value.is_some() {
                return Err("env JOB_SECRET_KEY: the secret must not be a literal".into());
            }
        }
    }
    Ok(())
}

async fn handle(
    State(f): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(mut released) = hang_of(&f, &method, &uri, &body) {
        f.st.lock().hanging += 1;
        let _gone = HangCount(f.clone());
        let _ = released.wait_for(|r| *r).await;
    }
    WARNINGS.with(|w| w.borrow_mut().clear());
    let mut r = route(f.clone(), method, uri, headers, body);
    let warnings = WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()));
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = axum::http::HeaderValue::from_str(&v) {
            r.headers_mut().append("warning", h);
        }
        f.st.lock().warnings.push(w);
    }
    r
}

/// The release of the [`Hang`] the request matches, if any.
fn hang_of(
    f: &Fake,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Option<tokio::sync::watch::Receiver<bool>> {
    let p = parse_path(uri.path())?;
    let q = query_map(uri);
    let v = verb(method, &p, &q);
    let resource = match &p.sub {
        Some(s) => format!("{}/{s}", p.resource),
        None => p.resource.clone(),
    };
    let key = (p.group, resource, v);
    let text = format!(
        "{} {}",
        pct_decode(&uri.to_string()),
        String::from_utf8_lossy(body)
    );
    let st = f.st.lock();
    st.hangs
        .iter()
        .find(|h| h.key == key && text.contains(&h.text))
        .map(|h| h.released.clone())
}

/// Counts a request out of its hang when it is answered or its client went away.
struct HangCount(Fake);

impl Drop for HangCount {
    fn drop(&mut self) {
        self.0.st.lock().hanging -= 1;
    }
}

fn route(f: Fake, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let Some(p) = parse_path(uri.path()) else {
        return status(404, "NotFound", format!("no route {}", uri.path()));
    };
    let q = query_map(&uri);
    let v = verb(&method, &p, &q);
    let resource = match &p.sub {
        Some(s) => format!("{}/{s}", p.resource),
        None => p.resource.clone(),
    };
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => return status(400, "BadRequest", format!("body is not JSON: {e}")),
        }
    };
    {
        let mut st = f.st.lock();
        st.calls.push(Call {
            method: method.clone(),
            uri: uri.to_string(),
            group: p.group.clone(),
            resource: resource.clone(),
            verb: v.clone(),
            body: json_body.clone(),
            auth: headers
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string),
        });
        if st.unavailable {
            return status(500, "InternalError", "etcdserver: request timed out");
        }
        let key = (p.group.clone(), resource.clone(), v.clone());
        if let Some(i) = st.inject.iter().position(|(k, _)| *k == key) {
            let (_, code) = st.inject.remove(i);
            return status(code, "Injected", format!("injected failure of {key:?}"));
        }
    }
    let ns = p.namespace.clone();
    match (p.group.as_str(), resource.as_str(), v.as_str()) {
        ("batch", "jobs", "create") => {
            let Some(b) = json_body else {
                return status(400, "BadRequest", "no body");
            };
            let mut job: Job = match strict(&b, "Job") {
                Ok(j) => j,
                Err(r) => return r,
            };
            if let Err(e) = validate_job(&job, &ns) {
                return status(422, "Invalid", format!("Job is invalid: {e}"));
            }
            let name = job.metadata.name.clone().unwrap_or_default();
            let mut st = f.st.lock();
            st.job_bodies
                .push(String::from_utf8_lossy(&body).into_owned());
            if st.jobs.contains_key(&(ns.clone(), name.clone())) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("jobs.batch \"{name}\" already exists"),
                );
            }
            st.next_uid += 1;
            let uid = format!("00000000-0000-4000-8000-{:012}", st.next_uid);
            job.metadata.uid = Some(uid.clone());
            job.metadata.namespace = Some(ns.clone());
            job.metadata.resource_version = Some(Fake::bump(&mut st));
            job.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            if let Some(spec) = job.spec.as_mut() {
                spec.selector = Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "batch.kubernetes.io/controller-uid".to_string(),
                        uid.clone(),
                    )])),
                    ..Default::default()
                });
                let m = spec.template.metadata.get_or_insert_with(Default::default);
                let l = m.labels.get_or_insert_with(Default::default);
                l.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
                l.insert("batch.kubernetes.io/job-name".into(), name.clone());
            }
            job.status = Some(JobStatus::default());
            st.jobs.insert((ns.clone(), name.clone()), job.clone());
            f.emit(&mut st, "ADDED", &job);
            drop(st);
            if job.spec.as_ref().and_then(|s| s.suspend) != Some(true) {
                tokio::spawn(f.clone().run_job(ns.clone(), name.clone(), uid));
            }
            let mut st = f.st.lock();
            if st.creates_504 > 0 {
                st.creates_504 -= 1;
                // The API server's own request timeout (`apiserver.Timeout`): the write stands.
                return status(
                    504,
                    "Timeout",
                    format!("Timeout: request did not complete within requested timeout - context deadline exceeded (creating jobs.batch \"{name}\" in {ns})"),
                );
            }
            drop(st);
            ok_json(StatusCode::CREATED, &job)
        }
        ("batch", "jobs", "get") => match f.job(&ns, p.name.as_deref().unwrap_or_default()) {
            Some(j) => ok_json(StatusCode::OK, &j),
            None => status(404, "NotFound", "job not found"),
        },
        ("batch", "jobs", "list") => {
            let (labels, fields) = match (
                selector(q.get("labelSelector")),
                selector(q.get("fieldSelector")),
            ) {
                (Ok(l), Ok(fl)) => (l, fl),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let st = f.st.lock();
            let items: Vec<&Job> = st
                .jobs
                .iter()
                .filter(|((n, _), j)| *n == ns && matches(&j.metadata, &labels, &fields))
                .map(|(_, j)| j)
                .collect();
            ok_json(
                StatusCode::OK,
                json!({
                    "apiVersion": "batch/v1",
                    "kind": "JobList",
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": list_items(&items),
                }),
            )
        }
        ("batch", "jobs", "watch") => watch_jobs(f, ns, &q),
        ("batch", "jobs", "patch") => {
            let name = p.name.clone().unwrap_or_default();
            let ct = headers
                .get("content-type")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            if ct != "application/merge-patch+json" {
                return status(415, "UnsupportedMediaType", format!("patch type {ct}"));
            }
            let Some(patch) = json_body else {
                return status(400, "BadRequest", "no body");
            };
            let Some(old) = f.job(&ns, &name) else {
                return status(404, "NotFound", format!("jobs.batch \"{name}\" not found"));
            };
            let mut merged = serde_json::to_value(&old).expect("serialise");
            json_merge(&mut merged, &patch);
            let new: Job = match strict(&merged, "patched Job") {
                Ok(j) => j,
                Err(r) => return r,
            };
            let (was, is) = (
                old.spec.as_ref().and_then(|s| s.suspend) == Some(true),
                new.spec.as_ref().and_then(|s| s.suspend) == Some(true),
            );
            let old_template = serde_json::to_value(old.spec.as_ref().map(|s| &s.template));
            let new_template = serde_json::to_value(new.spec.as_ref().map(|s| &s.template));
            if old_template.ok() != new_template.ok() {
                return status(422, "Invalid", "spec.template: field is immutable");
            }
            let uid = old.metadata.uid.clone().unwrap_or_default();
            let mut st = f.st.lock();
            let mut new = new;
            new.metadata.resource_version = Some(Fake::bump(&mut st));
            st.jobs.insert((ns.clone(), name.clone()), new.clone());
            f.emit(&mut st, "MODIFIED", &new);
            drop(st);
            if was && !is {
                tokio::spawn(f.clone().run_job(ns, name, uid));
            }
            ok_json(StatusCode::OK, &new)
        }
        ("batch", "jobs", "delete") => {
            let opts: DeleteOptions = match json_body {
                Some(b) => match strict(&b, "DeleteOptions") {
                    Ok(o) => o,
                    Err(r) => return r,
                },
                None => DeleteOptions::default(),
            };
            let name = p.name.clone().unwrap_or_default();
            match f.delete_job(&ns, &name, opts.propagation_policy) {
                Some(j) => ok_json(
                    StatusCode::OK,
                    json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success",
                        "details": {"name": name, "group": "batch", "kind": "jobs",
                                    "uid": j.metadata.uid},
                    }),
                ),
                None => status(404, "NotFound", format!("jobs.batch \"{name}\" not found")),
            }
        }
        ("", "secrets", "create") => {
            let Some(b) = json_body else {
                return status(400, "BadRequest", "no body");
            };
            let mut secret: Secret = match strict(&b, "Secret") {
                Ok(s) => s,
                Err(r) => return r,
            };
            let name = secret.metadata.name.clone().unwrap_or_default();
            if !is_dns_subdomain(&name) {
                return status(422, "Invalid", format!("Secret name `{name}` is invalid"));
            }
            if let Some(e) = label_errors(&secret.metadata.labels.clone().unwrap_or_default()) {
                return status(422, "Invalid", format!("Secret labels: {e}"));
            }
            let mut st = f.st.lock();
            if st.secrets.contains_key(&(ns.clone(), name.clone())) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("secrets \"{name}\" already exists"),
                );
            }
            for r in secret.metadata.owner_references.clone().unwrap_or_default() {
                let owner = st.jobs.values().any(|j| {
                    j.metadata.uid.as_deref() == Some(r.uid.as_str())
                        && j.metadata.name.as_deref() == Some(r.name.as_str())
                        && r.kind == "Job"
                        && r.api_version == "batch/v1"
                });
                if !owner {
                    st.violations.push(format!(
                        "Secret {name}: owner {r:?} does not exist (the garbage collector would delete it)"
                    ));
                }
            }
            if let Some(sd) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(Default::default);
                for (k, v) in sd {
                    data.insert(k, ByteString(v.into_bytes()));
                }
            }
            secret.metadata.namespace = Some(ns.clone());
            secret.metadata.uid = Some(format!("secret-{name}"));
            secret.metadata.resource_version = Some(Fake::bump(&mut st));
            st.secrets.insert((ns, name), secret.clone());
            let mut shown = secret;
            shown.data = None;
            ok_json(StatusCode::CREATED, &shown)
        }
        ("", "secrets", "delete") => {
            let name = p.name.clone().unwrap_or_default();
            let mut st = f.st.lock();
            if st.secrets.remove(&(ns, name.clone())).is_none() {
                return status(404, "NotFound", format!("secrets \"{name}\" not found"));
            }
            st.deletions.push(Deletion {
                resource: "secrets".into(),
                name: name.clone(),
                propagation: None,
            });
            ok_json(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                       "details": {"name": name, "kind": "secrets"}}),
            )
        }
        ("", "pods", "list") => {
            let labels = match selector(q.get("labelSelector")) {
                Ok(l) => l,
                Err(r) => return r,
            };
            let st = f.st.lock();
            let items: Vec<&Pod> = st
                .pods
                .iter()
                .filter(|((n, _), p)| *n == ns && matches(&p.metadata, &labels, &[]))
                .map(|(_, p)| p)
                .collect();
            ok_json(
                StatusCode::OK,
                json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": list_items(&items),
                }),
            )
        }
        ("", "pods/log", "get") => pod_logs(f, ns, p.name.unwrap_or_default(), &q),
        ("", "pods", "delete") => {
            let opts: DeleteOptions = match json_body {
                Some(b) => match strict(&b, "DeleteOptions") {
                    Ok(o) => o,
                    Err(r) => return r,
                },
                None => DeleteOptions::default(),
            };
            let name = p.name.clone().unwrap_or_default();
            let Some(pod) = f.pod(&ns, &name) else {
                return status(404, "NotFound", format!("pods \"{name}\" not found"));
            };
            if let Some(want) = opts.preconditions.as_ref().and_then(|p| p.uid.as_ref()) {
                if pod.metadata.uid.as_ref() != Some(want) {
                    return status(409, "Conflict", "Precondition failed: UID in precondition");
                }
            }
            f.st.lock().deletions.push(Deletion {
                resource: "pods".into(),
                name: name.clone(),
                propagation: opts.propagation_policy.clone(),
            });
            let started = container_running(&pod)
                || pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph != "Pending");
            f.delete_pod(&ns, &name, opts.grace_period_seconds);
            if !started || opts.grace_period_seconds == Some(0) {
                f.remove_pod(&ns, &name);
            }
            ok_json(StatusCode::OK, f.pod(&ns, &name).unwrap_or(pod))
        }
        ("", "events", "list") => {
            // Field selectors of core/v1 Events: involvedObject.*, reason, type, source
            // (pkg/apis/core/v1/conversion.go).
            let fields = match selector(q.get("fieldSelector")) {
                Ok(fl) => fl,
                Err(r) => return r,
            };
            let st = f.st.lock();
            let mut items = Vec::new();
            for e in &st.events {
                let mut ok = e.metadata.namespace.as_deref() == Some(ns.as_str());
                for (k, v) in &fields {
                    let got = match k.as_str() {
                        "involvedObject.uid" => e.involved_object.uid.clone(),
                        "involvedObject.name" => e.involved_object.name.clone(),
                        "involvedObject.kind" => e.involved_object.kind.clone(),
                        "reason" => e.reason.clone(),
                        "type" => e.type_.clone(),
                        _ => {
                            return status(
                                400,
                                "BadRequest",
                                format!("field label not supported: {k}"),
                            )
                        }
                    };
                    ok &= got.as_deref() == Some(v.as_str());
                }
                if ok {
                    items.push(e);
                }
            }
            ok_json(
                StatusCode::OK,
                json!({
                    "apiVersion": "v1", "kind": "EventList",
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": list_items(&items),
                }),
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("the fake does not serve {method} {}", uri.path()),
        ),
    }
}

/// List items as the API server sends them: without `apiVersion` and `kind`.
fn list_items(items: &[impl Serialize]) -> Vec<Value> {
    items
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).expect("serialise");
            if let Some(o) = v.as_object_mut() {
                o.remove("apiVersion");
                o.remove("kind");
            }
            v
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
fn json_merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn watch_jobs(f: Fake, ns: String, q: &HashMap<String, String>) -> Response {
    let (labels, fields) = match (
        selector(q.get("labelSelector")),
        selector(q.get("fieldSelector")),
    ) {
        (Ok(l), Ok(fl)) => (l, fl),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut st = f.st.lock();
    // A version older than the compacted history is gone: `410 Expired`, "too old resource
    // version" (the watch cache, staging/src/k8s.io/apiserver/pkg/storage/cacher).
    let compacted = from != 0 && from < st.compacted_rv;
    if st.expire_watches > 0 || compacted {
        if !compacted {
            st.expire_watches -= 1;
        }
        st.watch_410s += 1;
        let err = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", st.rv),
            "reason": "Expired", "code": 410,
        });
        let body = event_line("ERROR", &err);
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    // Subscribe under the lock, so that nothing falls between the replay and the live events.
    let rx = f.events.subscribe();
    let replay: Vec<Bytes> = st
        .history
        .iter()
        .filter(|(rv, _, j)| {
            *rv > from
                && j.metadata.namespace.as_deref() == Some(ns.as_str())
                && matches(&j.metadata, &labels, &fields)
        })
        .map(|(_, k, j)| event_line(k, j))
        .collect();
    let last = st.rv;
    drop(st);
    let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |ev| {
        let out = match ev {
            Ok((rv, kind, j))
                if rv > last
                    && j.metadata.namespace.as_deref() == Some(ns.as_str())
                    && matches(&j.metadata, &labels, &fields) =>
            {
                Some(event_line(kind, &j))
            }
            _ => None,
        };
        futures::future::ready(out)
    });
    // `allowWatchBookmarks`: BOOKMARK events carry only the current resourceVersion, so a
    // client can resume from there (KEP-956).
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let fb = f.clone();
    let marks = futures::stream::unfold(0u8, move |n| {
        let fb = fb.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let rv = fb.st.lock().rv.to_string();
            Some((
                event_line(
                    "BOOKMARK",
                    &json!({"kind": "Job", "apiVersion": "batch/v1",
                            "metadata": {"resourceVersion": rv}}),
                ),
                n,
            ))
        }
    })
    .filter(move |_| futures::future::ready(bookmarks));
    let body = futures::stream::select(live, marks);
    // `timeoutSeconds`: the server ends the watch then (the client watches again from its last
    // version); scaled by `watch_unit`.
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u32>().ok())
        .map(|t| *f.watch_unit.lock() * t);
    let body: futures::stream::BoxStream<'static, Bytes> = match timeout {
        Some(t) => body.take_until(tokio::time::sleep(t)).boxed(),
        None => body.boxed(),
    };
    let stream = futures::stream::iter(replay)
        .chain(body)
        .map(Ok::<Bytes, std::convert::Infallible>);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One line of a watch response.
fn event_line(kind: &str, obj: &impl Serialize) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn pod_logs(f: Fake, ns: String, pod: String, q: &HashMap<String, String>) -> Response {
    let Some(p) = f.st.lock().pods.get(&(ns.clone(), pod.clone())).cloned() else {
        return status(404, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let containers: Vec<String> = p
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if let Some(c) = q.get("container") {
        if !containers.contains(c) {
            return status(
                400,
                "BadRequest",
                format!("container {c} is not valid for pod {pod}"),
            );
        }
    }
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Pending" {
        return status(
            400,
            "BadRequest",
            format!("container \"job\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
        );
    }
    let follow = q.get("follow").is_some_and(|v| v == "true");
    let timestamps = q.get("timestamps").is_some_and(|v| v == "true");
    let since = q
        .get("sinceSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| Instant::now() - Duration::from_secs(s));
    // sinceTime (RFC 3339): lines at or after it (the kubelet skips lines `Before` it,
    // pkg/kubelet/kuberuntime/logs/logs.go).
    let since_time = match q.get("sinceTime") {
        Some(t) => match t.parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(e) => return status(400, "BadRequest", format!("sinceTime: {e}")),
        },
        None => None,
    };
    let break_every =
        f.st.lock()
            .pod_scripts
            .get(&pod)
            .and_then(|s| s.break_logs_every);
    let start = {
        let st = f.st.lock();
        st.logs
            .get(&pod)
            .map(|l| {
                l.iter()
                    .position(|x| {
                        since.is_none_or(|t| x.at >= t) && since_time.is_none_or(|t| x.wall >= t)
                    })
                    .unwrap_or(l.len())
            })
            .unwrap_or(0)
    };
    // One line per chunk, so a stream can break between any two lines.
    let stream = futures::stream::unfold(
        (f, ns, pod, start, 0usize),
        move |(f, ns, pod, mut i, sent)| async move {
            loop {
                if let Some(n) = break_every {
                    let mut st = f.st.lock();
                    if sent > 0 && i.is_multiple_of(n) && st.broken_at.insert((pod.clone(), i)) {
                        st.log_breaks += 1;
                        return None;
                    }
                }
                let (line, ended) = {
                    let st = f.st.lock();
                    let line = st.logs.get(&pod).and_then(|l| l.get(i)).map(|x| {
                        if timestamps {
                            format!("{} {}\n", x.wall, x.text)
                        } else {
                            format!("{}\n", x.text)
                        }
                    });
                    let ended = match st.pods.get(&(ns.clone(), pod.clone())) {
                        None => true,
                        Some(p) => !container_running(p),
                    };
                    (line, ended)
                };
                if let Some(text) = line {
                    i += 1;
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(Bytes::from(text)),
                        (f, ns, pod, i, sent + 1),
                    ));
                }
                if ended || !follow {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    );
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}
