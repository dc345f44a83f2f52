//! The `kube` runner: one Kubernetes batch/v1 Job per attempt.
//!
//! # Layout
//! - [`KubeConfig`] / [`KubeRunner`]: the runner. Its client comes from `kubeconfig` when set,
//!   else the in-cluster config, else the default kubeconfig; it is built on first use.
//!   [`KubeOptions`] (`options.rs`): pod settings and lifecycle bounds, validated at start.
//! - Launch ([`KubeRunner::launch`]):
//!   1. reconcile: any Job already labelled with this job's id (a launch that died before its
//!      handle was saved, an older attempt) is deleted with Foreground propagation and the launch
//!      waits until it and its pods are gone, so one job never runs twice at once;
//!   2. the Job is created *suspended* (no pod can start yet);
//!   3. a Secret holding `JOB_SECRET_KEY` (and `JOB_ARGS`) is created, owned by the Job, so
//!      deleting the Job garbage-collects it; the Job's env reads it with `secretKeyRef`, so the
//!      secret is never a literal in the Job spec;
//!   4. the Job is resumed (`spec.suspend = false`).
//!
//!   The Job has `backoffLimit: 0` (runyard owns retries), always an `activeDeadlineSeconds`
//!   (the attempt's timeout plus [`DEADLINE_MARGIN`], else `active_deadline`), and
//!   `ttlSecondsAfterFinished`; its pods meet the Pod Security Standards' `restricted` profile.
//! - [`KubeExecution`]: `monitor.rs` follows the Job (watch) and its pods (by controller uid),
//!   fails early on what does not heal, decides outcomes on the 1.31+ conditions, and tears the
//!   Job down (Foreground) and waits when runyard ends the attempt; `logs.rs` copies the pod's
//!   log, reopening broken streams from the last line's time.
//! - Recovery ([`KubeRunner::recover`]): finds the attempt's Job by label; a running Job is
//!   watched again, a finished one gives its outcome, a missing one means the job runs again.
//! - [`API_CALLS`]: every API call the runner makes; the chart's Role grants exactly these.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::Client;
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, Event as K8sEvent, LocalObjectReference, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    Secret as K8sSecret, SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::{
    Execution, JobSpec, Outcome, Recovered, RunHandle, Runner, RunnerError, SharedReporter,
};

mod logs;
mod monitor;
mod options;

pub use options::{
    is_dns_subdomain, is_env_name, is_label_value, is_qualified_name, is_quantity, KubeOptions,
    OptionError, DEFAULT_UID,
};

/// The client crates, re-exported so that tests and embedders use the same versions.
pub use ::k8s_openapi;
/// The kube client crate (see [`k8s_openapi`]).
pub use ::kube as kube_client;

/// Longest Kubernetes Job name: Job names become the `job-name` label of their pods, and label
/// values are at most 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// `ttlSecondsAfterFinished` when the config has none.
pub const DEFAULT_TTL_AFTER_FINISHED: Duration = Duration::from_secs(3600);

/// Added to the attempt's timeout for `activeDeadlineSeconds`, so that the server's own timeout
/// (which records `TIMEOUT`) fires first while it watches.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// The name of the job's container in the pod.
pub const CONTAINER: &str = "job";

/// Label: who manages the Job.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the runyard job id.
pub const LABEL_JOB_ID: &str = "runyard.io/job-id";
/// Label: the job type (made a valid label value; the exact type is in an annotation).
pub const LABEL_JOB_TYPE: &str = "runyard.io/job-type";
/// Label: the attempt number.
pub const LABEL_ATTEMPT: &str = "runyard.io/attempt";
/// Annotation: the exact job type.
pub const ANNOTATION_JOB_TYPE: &str = "runyard.io/job-type";

/// Secret keys read by the Job's env.
const SECRET_KEY: &str = "JOB_SECRET_KEY";
const ARGS_KEY: &str = "JOB_ARGS";

/// Env names the runner sets itself; a config `env` entry of that name is ignored.
const RESERVED_ENV: &[&str] = &[
    "JOB_ID",
    "JOB_SECRET_KEY",
    "JOB_HOOK",
    "JOB_TYPE",
    "JOB_ATTEMPT",
    "JOB_ARGS",
];

/// One kind of Kubernetes API call: API group (`""` is core), resource (with subresource), verb.
pub type ApiCall = (&'static str, &'static str, &'static str);

/// Every call the runner makes. The chart's Role grants exactly these, and the tests check both
/// that the runner makes no other call and that the Role grants no more.
pub const API_CALLS: &[ApiCall] = &[
    ("batch", "jobs", "create"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    ("", "secrets", "create"),
    ("", "pods", "list"),
    ("", "pods", "delete"),
    ("", "pods/log", "get"),
    ("", "events", "list"),
];

/// Configuration of a kube runner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KubeConfig {
    /// Namespace of the Jobs; the client's default namespace when absent (in-cluster: the
    /// server's own namespace).
    pub namespace: Option<String>,
    /// The container image.
    pub image: String,
    /// The container command, e.g. `["runyard", "launch", "--", "python3", "job.py"]`; the
    /// image's entrypoint when empty.
    pub command: Vec<String>,
    /// Extra environment variables of the container.
    pub env: BTreeMap<String, String>,
    /// The service account of the Job's pods.
    pub service_account: Option<String>,
    /// `ttlSecondsAfterFinished`; [`DEFAULT_TTL_AFTER_FINISHED`] when absent.
    pub ttl_after_finished: Option<Duration>,
    /// A kubeconfig file; absent: in-cluster config, then the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Pod settings and lifecycle bounds (`[runners.kube]`).
    #[serde(default)]
    pub options: KubeOptions,
}

/// Runs each attempt as a Kubernetes Job.
pub struct KubeRunner {
    config: KubeConfig,
    kubeconfig: Option<Kubeconfig>,
    client: OnceCell<Client>,
}

impl KubeRunner {
    /// A runner for this configuration; its client is built on first use. A `kubeconfig` file is
    /// read now, so that a bad path stops the server at startup.
    pub fn new(config: KubeConfig) -> Result<Self, RunnerError> {
        Self::check(&config)?;
        let kubeconfig = match &config.kubeconfig {
            Some(path) => Some(Kubeconfig::read_from(path).map_err(|e| {
                RunnerError::Invalid(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?),
            None => None,
        };
        Ok(Self {
            config,
            kubeconfig,
            client: OnceCell::new(),
        })
    }

    /// A runner using `client` (tests, embedders); `config.kubeconfig` is ignored.
    pub fn with_client(config: KubeConfig, client: Client) -> Result<Self, RunnerError> {
        Self::check(&config)?;
        Ok(Self {
            config,
            kubeconfig: None,
            client: OnceCell::new_with(Some(client)),
        })
    }

    fn check(config: &KubeConfig) -> Result<(), RunnerError> {
        if config.image.trim().is_empty() {
            return Err(RunnerError::Invalid("kube runner needs an `image`".into()));
        }
        if let Some(ns) = &config.namespace {
            if !is_dns_label(ns) {
                return Err(RunnerError::Invalid(format!(
                    "`{ns}` is not a valid namespace name"
                )));
            }
        }
        for k in config.env.keys() {
            if !is_env_name(k) {
                return Err(RunnerError::Invalid(format!(
                    "env `{k}` is not a valid environment variable name (letters, digits and `_`, \
                     not starting with a digit)"
                )));
            }
        }
        if let Err(e) = config.options.validate() {
            return Err(RunnerError::Invalid(format!(
                "kube.{}: {}",
                e.key, e.message
            )));
        }
        if let Some(sa) = &config.service_account {
            if sa.is_empty() || sa.len() > 253 {
                return Err(RunnerError::Invalid(format!(
                    "`{sa}` is not a valid service account name"
                )));
            }
        }
        Ok(())
    }

    async fn client(&self) -> Result<Client, RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let cfg = match &self.kubeconfig {
                    Some(kc) => ::kube::Config::from_custom_kubeconfig(
                        kc.clone(),
                        &KubeConfigOptions::default(),
                    )
                    .await
                    .map_err(|e| RunnerError::Backend(format!("kubeconfig: {e}")))?,
                    None => match ::kube::Config::incluster() {
                        Ok(c) => c,
                        Err(in_cluster) => {
                            ::kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                                .await
                                .map_err(|e| {
                                    RunnerError::Backend(format!(
                                        "no Kubernetes config: not in a cluster ({in_cluster}) \
                                         and no usable kubeconfig ({e})"
                                    ))
                                })?
                        }
                    },
                };
                Client::try_from(cfg)
                    .map_err(|e| RunnerError::Backend(format!("cannot build the client: {e}")))
            })
            .await
            .cloned()
    }

    fn namespace(&self, client: &Client) -> String {
        self.config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }

    /// The Job of one attempt, suspended; `secret_name` holds JOB_SECRET_KEY and JOB_ARGS.
    pub fn build_job(&self, spec: &JobSpec, name: &str, namespace: &str, secret_name: &str) -> Job {
        let labels = labels(spec);
        let annotations =
            BTreeMap::from([(ANNOTATION_JOB_TYPE.to_string(), spec.job_type.clone())]);
        let mut env: Vec<EnvVar> = self
            .config
            .env
            .iter()
            .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
            .map(|(k, v)| literal(k, v))
            .collect();
        env.push(literal("JOB_ID", &spec.id));
        env.push(literal("JOB_HOOK", &spec.hook_url));
        env.push(literal("JOB_TYPE", &spec.job_type));
        env.push(literal("JOB_ATTEMPT", &spec.attempt.to_string()));
        env.push(from_secret("JOB_SECRET_KEY", secret_name, SECRET_KEY));
        env.push(from_secret("JOB_ARGS", secret_name, ARGS_KEY));
        let o = &self.config.options;
        let quantities = |m: &BTreeMap<String, String>| {
            (!m.is_empty()).then(|| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let resources =
            (!o.requests.is_empty() || !o.limits.is_empty()).then(|| ResourceRequirements {
                requests: quantities(&o.requests),
                limits: quantities(&o.limits),
                ..Default::default()
            });
        let container = Container {
            name: CONTAINER.into(),
            image: Some(self.config.image.clone()),
            command: (!self.config.command.is_empty()).then(|| self.config.command.clone()),
            env: Some(env),
            resources,
            // The Pod Security Standards' `restricted` profile, container level.
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                run_as_non_root: Some(true),
                privileged: Some(false),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ttl = self
            .config
            .ttl_after_finished
            .unwrap_or(DEFAULT_TTL_AFTER_FINISHED);
        // Always a deadline: the attempt's timeout (the server stops the job first), else the
        // configured backstop, so that a Job no server watches any more ends by itself.
        let deadline = match spec.timeout {
            Some(t) => t + DEADLINE_MARGIN,
            None => o.active_deadline,
        };
        let mut pod_annotations = o.annotations.clone();
        pod_annotations.extend(annotations.clone());
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(labels.clone()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(K8sJobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: Some(
                    (deadline.as_secs() + u64::from(deadline.subsec_nanos() > 0))
                        .min(i64::MAX as u64) as i64,
                ),
                ttl_seconds_after_finished: Some(ttl.as_secs().min(i32::MAX as u64) as i32),
                suspend: Some(true),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        annotations: Some(pod_annotations),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        service_account_name: self.config.service_account.clone(),
                        // Jobs talk to runyard through the hook, not to the API server.
                        automount_service_account_token: Some(false),
                        termination_grace_period_seconds: Some(
                            o.termination_grace.as_secs().min(i64::MAX as u64) as i64,
                        ),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: o.run_as_user,
                            run_as_group: o.run_as_group,
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                localhost_profile: None,
                            }),
                            ..Default::default()
                        }),
                        image_pull_secrets: (!o.image_pull_secrets.is_empty()).then(|| {
                            o.image_pull_secrets
                                .iter()
                                .map(|n| LocalObjectReference { name: n.clone() })
                                .collect()
                        }),
                        node_selector: (!o.node_selector.is_empty())
                            .then(|| o.node_selector.clone()),
                        tolerations: (!o.tolerations.is_empty()).then(|| o.tolerations.clone()),
                        affinity: o.affinity.clone(),
                        containers: vec![container],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Deletes the Jobs of this job id except `keep` with Foreground propagation, and waits
    /// until they (and so their pods) are gone: one job never runs twice at once. Returns the
    /// Jobs found first (all of them, `keep` included).
    async fn reconcile(
        &self,
        jobs: &Api<Job>,
        job_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<Job>, RunnerError> {
        let lp = ListParams::default().labels(&id_selector(job_id));
        let list = jobs
            .list(&lp)
            .await
            .map_err(|e| RunnerError::Backend(format!("cannot list Jobs: {e}")))?;
        let o = &self.config.options;
        let deadline = tokio::time::Instant::now() + o.termination_grace + o.delete_timeout;
        let others = |j: &Job| j.metadata.name.as_deref().is_some_and(|n| Some(n) != keep);
        for j in list.items.iter().filter(|j| others(j)) {
            let name = j.metadata.name.as_deref().unwrap_or_default();
            if j.metadata.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(job = name, "deleting a leftover Kubernetes Job of this job");
            let uid = j.metadata.uid.as_deref().unwrap_or_default();
            monitor::delete_job_foreground(jobs, name, uid, deadline)
                .await
                .map_err(RunnerError::Backend)?;
        }
        // Wait until they are gone (Foreground: their pods first).
        let mut left: Vec<String> = list
            .items
            .iter()
            .filter(|j| others(j))
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        while !left.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RunnerError::Backend(format!(
                    "a previous attempt's Kubernetes Job is still terminating: {}",
                    left.join(", ")
                )));
            }
            tokio::time::sleep(o.poll_interval).await;
            if let Ok(now) = jobs.list(&lp).await {
                left = now
                    .items
                    .iter()
                    .filter(|j| others(j))
                    .filter_map(|j| j.metadata.name.clone())
                    .collect();
            }
        }
        Ok(list.items)
    }
}

#[async_trait]
impl Runner for KubeRunner {
    fn kind(&self) -> &'static str {
        "kube"
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        let client = self.client().await?;
        let ns = self.namespace(&client);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<K8sSecret> = Api::namespaced(client.clone(), &ns);
        let name = job_name(&spec.job_type, &spec.id, spec.attempt);
        // 1. No other Job of this job may run next to this attempt.
        self.reconcile(&jobs, &spec.id, None).await?;
        // 2. The Job, suspended until its Secret exists. A same-named leftover that the
        //    reconcile just deleted may take a moment to go.
        let secret_name = format!("{name}-{}", random_suffix());
        let job = self.build_job(&spec, &name, &ns, &secret_name);
        let mut tries = 0;
        let created = loop {
            match jobs.create(&PostParams::default(), &job).await {
                Ok(j) => break j,
                Err(::kube::Error::Api(s)) if s.code == 409 && tries < 25 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(RunnerError::Launch(format!(
                        "cannot create Kubernetes Job {ns}/{name}: {e}"
                    )))
                }
            }
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        // 3. The Secret, owned by the Job: deleting the Job garbage-collects it.
        let secret = K8sSecret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels(&spec)),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: name.clone(),
                    uid: uid.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            immutable: Some(true),
            string_data: Some(BTreeMap::from([
                (SECRET_KEY.to_string(), spec.secret.expose().to_string()),
                (ARGS_KEY.to_string(), spec.args.to_string()),
            ])),
            ..Default::default()
        };
        let soon = tokio::time::Instant::now() + Duration::from_secs(5);
        if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
            let _ = monitor::delete_job_foreground(&jobs, &name, &uid, soon).await;
            return Err(RunnerError::Launch(format!(
                "cannot create Secret {ns}/{secret_name}: {e}"
            )));
        }
        // 4. Go.
        let resume = Patch::Merge(json!({"spec": {"suspend": false}}));
        if let Err(e) = jobs.patch(&name, &PatchParams::default(), &resume).await {
            let _ = monitor::delete_job_foreground(&jobs, &name, &uid, soon).await;
            return Err(RunnerError::Launch(format!(
                "cannot resume Kubernetes Job {ns}/{name}: {e}"
            )));
        }
        tracing::debug!(job = %name, namespace = %ns, "Kubernetes Job created");
        Ok(Box::new(KubeExecution::start(
            client,
            ns,
            name,
            uid,
            &spec,
            reporter,
            logs::Cursor::default(),
            self.config.options.clone(),
        )))
    }

    async fn recover(
        &self,
        handle: &RunHandle,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Recovered, RunnerError> {
        let client = self.client().await?;
        let ns = handle
            .data
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.namespace(&client));
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        // Every Job of this job but the handle's goes; the handle's is found by label.
        let all = self
            .reconcile(&jobs, &spec.id, Some(handle.id.as_str()))
            .await?;
        let ours = all.into_iter().find(|j| {
            j.metadata.deletion_timestamp.is_none()
                && j.metadata.name.as_deref() == Some(handle.id.as_str())
        });
        let Some(job) = ours else {
            return Ok(Recovered::Gone);
        };
        let name = job.metadata.name.clone().unwrap_or_default();
        if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
            // The launch died before the Job was resumed: make it gone, the job runs again.
            let uid = job.metadata.uid.as_deref().unwrap_or_default();
            let soon = tokio::time::Instant::now() + Duration::from_secs(5);
            monitor::delete_job_foreground(&jobs, &name, uid, soon)
                .await
                .map_err(RunnerError::Backend)?;
            return Ok(Recovered::Gone);
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if let Some(outcome) = monitor::finished_outcome(&job, &pods).await {
            return Ok(Recovered::Finished(outcome));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        // Lines up to the last stored one were copied by the previous server; without that
        // time, from now on (what was written while no server ran is then not copied).
        let since = reporter
            .last_log_time()
            .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok())
            .unwrap_or_else(k8s_openapi::jiff::Timestamp::now);
        Ok(Recovered::Running(Box::new(KubeExecution::start(
            client,
            ns,
            name,
            uid,
            &spec,
            reporter,
            logs::Cursor::after(Some(since)),
            self.config.options.clone(),
        ))))
    }
}

/// One attempt's Job, watched.
pub struct KubeExecution {
    namespace: String,
    name: String,
    uid: String,
    job_id: String,
    attempt: u32,
    outcome: watch::Receiver<Option<Outcome>>,
    stop: watch::Sender<Option<Duration>>,
    bound: Duration,
    monitor_task: JoinHandle<()>,
    log_task: JoinHandle<()>,
    stopped: Option<Outcome>,
}

impl KubeExecution {
    #[allow(clippy::too_many_arguments)]
    fn start(
        client: Client,
        namespace: String,
        name: String,
        uid: String,
        spec: &JobSpec,
        reporter: SharedReporter,
        cursor: logs::Cursor,
        opts: KubeOptions,
    ) -> Self {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
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
        ));
        let bound = opts.termination_grace
            + opts.delete_timeout
            + opts.finish_timeout.max(Duration::from_secs(5))
            + Duration::from_secs(5);
        let attempt = monitor::Attempt {
            jobs,
            pods,
            events,
            name: name.clone(),
            uid: uid.clone(),
            opts,
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
            kind: "kube".into(),
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
        if let Some(o) = &self.stopped {
            return o.clone();
        }
        match self.outcome.wait_for(Option::is_some).await {
            Ok(o) => o.clone().unwrap_or_else(|| Outcome::failed("no outcome")),
            Err(_) => Outcome::failed("the watch of the Kubernetes Job ended unexpectedly"),
        }
    }

    /// Deletes the pods with `grace` as their grace period, then the Job (Foreground), and
    /// returns once both are gone (within the grace plus `delete_timeout`).
    async fn stop(&mut self, grace: Duration) {
        if self.stopped.is_some() || self.outcome.borrow().is_some() {
            return;
        }
        let _ = self.stop.send(Some(grace));
        let waited =
            tokio::time::timeout(grace + self.bound, self.outcome.wait_for(Option::is_some)).await;
        if waited.is_err() {
            tracing::warn!(job = %self.name, "the Kubernetes Job was not gone in time");
        }
        self.log_task.abort();
        self.monitor_task.abort();
        self.stopped = Some(Outcome::failed(format!(
            "stopped: Kubernetes Job {} deleted",
            self.name
        )));
    }
}

impl Drop for KubeExecution {
    fn drop(&mut self) {
        self.monitor_task.abort();
        self.log_task.abort();
    }
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// The labels of an attempt's Job, its pods and its Secret.
pub fn labels(spec: &JobSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), "runyard".to_string()),
        (LABEL_JOB_ID.to_string(), label_value(&spec.id)),
        (LABEL_JOB_TYPE.to_string(), label_value(&spec.job_type)),
        (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
    ])
}

/// The label selector of every Job of a job.
pub fn id_selector(job_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}=runyard,{LABEL_JOB_ID}={}",
        label_value(job_id)
    )
}

/// The label selector of one attempt's Job and pods.
pub fn attempt_selector(job_id: &str, attempt: u32) -> String {
    format!("{},{LABEL_ATTEMPT}={attempt}", id_selector(job_id))
}

/// The Job name of an attempt: `ry-{type}-{id}-{attempt}`, a valid DNS-1123 label of at most 63
/// characters. The type is lowercased, other characters become `-`, and it is cut to fit; the id
/// part is the job id's last 12 alphanumerics (a UUID v7's random bits).
pub fn job_name(job_type: &str, job_id: &str, attempt: u32) -> String {
    let id: String = job_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let id = if id.is_empty() {
        "0".to_string()
    } else {
        id[id.len().saturating_sub(12)..].to_string()
    };
    let tail = format!("-{id}-{attempt}");
    let budget = MAX_NAME_LEN - "ry-".len() - tail.len();
    let t = dns_part(job_type, budget);
    if t.is_empty() {
        format!("ry{tail}")
    } else {
        format!("ry-{t}{tail}")
    }
}

/// Lowercase alphanumerics and single dashes, no dash at either end, at most `max` characters.
fn dns_part(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

/// Whether `s` is a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `s` as a label value: `[A-Za-z0-9._-]`, at most 63 characters, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    v.truncate(63);
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Five random lowercase alphanumerics (the Secret's name suffix).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        let id = "01920c4e-7f3a-7b6e-9c1d-0123456789ab";
        let n = job_name("report.daily", id, 1);
        assert_eq!(n, "ry-report-daily-0123456789ab-1");
        for t in [
            "",
            "...",
            "A_B:C",
            "-x-",
            &"very.long.type.name".repeat(10),
            "ÜNÏCÖDE.type",
            "9",
        ] {
            for attempt in [1, 100, u32::MAX] {
                let n = job_name(t, id, attempt);
                assert!(is_dns_label(&n), "{t:?} -> {n:?}");
                assert!(n.ends_with(&format!("-{attempt}")), "{n}");
            }
        }
        assert!(is_dns_label(&job_name("x", "", 1)));
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("report.daily"), "report.daily");
        assert_eq!(label_value("a:b"), "a_b");
        assert_eq!(label_value("_x_"), "x");
        assert!(label_value(&"a".repeat(100)).len() <= 63);
    }
}
