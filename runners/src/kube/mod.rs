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
//!   3. a Secret holding `JOB_SECRET_KEY` (and `JOB_ARGS`, unless they are too large for the
//!      environment and `large_args = "hook"`: see [`crate::args`]) is created, owned by the Job, so
//!      deleting the Job garbage-collects it; the Job's env reads it with `secretKeyRef`, so the
//!      secret is never a literal in the Job spec;
//!   4. the Job is resumed (`spec.suspend = false`).
//!
//!   A create answered `409 AlreadyExists` goes on with the Job of that name when it is this
//!   launch's own (`spec::is_this_launchs`: the API server carried the create out but answered
//!   with an error, e.g. a `504` kube's client retried).
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
//! - The sweep ([`Runner::leftovers`]): the Jobs of this deployment in the runner's namespace
//!   (label [`LABEL_DEPLOYMENT`]), running or finished; one whose job is done with it (a
//!   teardown that was not confirmed: the API out of reach during a cancel) is removed as a
//!   teardown does: its pods with the grace, then the Job with Foreground propagation.
//! - [`API_CALLS`]: every API call the runner makes; the chart's Role grants exactly these.
//! - Every request but the Job's watch and the body of a pod's log stream is bounded by
//!   `api_timeout` (`errors::bounded`): kube's client bounds none by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ::kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::Client;
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret as K8sSecret};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::args::LargeArgs;
use crate::{
    Execution, JobSpec, Leftover, Recovered, RunHandle, Runner, RunnerError, SharedReporter,
};
use errors::bounded;

mod errors;
mod execution;
mod logs;
mod monitor;
mod options;
mod outcome;
mod spec;
mod teardown;

pub use execution::KubeExecution;
use spec::random_suffix;
pub use spec::{attempt_selector, id_selector, is_dns_label, job_name, label_value, labels};

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
/// Label: the deployment's fingerprint ([`JobSpec::deployment`]): the sweep of work left behind
/// ([`Runner::leftovers`]) lists only the Jobs of its own deployment.
pub const LABEL_DEPLOYMENT: &str = "runyard.io/deployment";
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
    "JOB_ARGS_SIZE",
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
    ("", "secrets", "delete"),
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
    /// What is done with args too large for `JOB_ARGS` (see [`crate::args`]).
    #[serde(default)]
    pub large_args: LargeArgs,
}

/// Runs each attempt as a Kubernetes Job.
pub struct KubeRunner {
    config: KubeConfig,
    kubeconfig: Option<Kubeconfig>,
    client: OnceCell<Client>,
    /// The API server's address, once the client is built from a config (for errors).
    server: std::sync::OnceLock<String>,
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
            server: std::sync::OnceLock::new(),
        })
    }

    /// A runner using `client` (tests, embedders); `config.kubeconfig` is ignored.
    pub fn with_client(config: KubeConfig, client: Client) -> Result<Self, RunnerError> {
        Self::check(&config)?;
        Ok(Self {
            config,
            kubeconfig: None,
            client: OnceCell::new_with(Some(client)),
            server: std::sync::OnceLock::new(),
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
                let _ = self.server.set(cfg.cluster_url.to_string());
                // Off the runtime's thread: building the client runs the kubeconfig's exec
                // credential plugin (`aws eks get-token`, ...) as a blocking child process, and
                // a worker on a single-thread runtime must keep renewing its leases meanwhile.
                tokio::task::spawn_blocking(move || Client::try_from(cfg))
                    .await
                    .map_err(|e| RunnerError::Backend(format!("cannot build the client: {e}")))?
                    .map_err(|e| RunnerError::Backend(format!("cannot build the client: {e}")))
            })
            .await
            .cloned()
    }

    /// An API error in words, with its causes and the API server's address.
    fn api_error(&self, e: &::kube::Error) -> String {
        errors::describe(e, self.server.get().map(String::as_str))
    }

    fn namespace(&self, client: &Client) -> String {
        self.config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }

    /// Deletes the Jobs of this job id except `keep` (a name, and the attempt it is of) with
    /// Foreground propagation, and waits until they (and so their pods) are gone: one job never
    /// runs twice at once. Not those labelled with another deployment than `deployment` (when
    /// not empty, [`JobSpec::deployment`]: an original store's and its copy's share job ids),
    /// nor, with `keep`, those of a later attempt than its (a recovery read before the job
    /// moved on must not end the attempt that runs now). Returns the Jobs found first (all of
    /// them, `keep` included).
    async fn reconcile(
        &self,
        jobs: &Api<Job>,
        job_id: &str,
        deployment: &str,
        keep: Option<(&str, u32)>,
    ) -> Result<Vec<Job>, RunnerError> {
        let o = &self.config.options;
        let lp = ListParams::default().labels(&id_selector(job_id));
        let list = bounded(o.api_timeout, jobs.list(&lp)).await.map_err(|e| {
            RunnerError::Backend(format!("cannot list Jobs: {}", self.api_error(&e)))
        })?;
        let deadline = tokio::time::Instant::now() + o.termination_grace + o.delete_timeout;
        let others = |j: &Job| spec::is_leftover(j, deployment, keep);
        for j in list.items.iter().filter(|j| others(j)) {
            let name = j.metadata.name.as_deref().unwrap_or_default();
            if j.metadata.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(job = name, "deleting a leftover Kubernetes Job of this job");
            let uid = j.metadata.uid.as_deref().unwrap_or_default();
            teardown::delete_job_foreground(jobs, name, uid, deadline, o.api_timeout)
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
            if let Ok(now) = bounded(o.api_timeout, jobs.list(&lp)).await {
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

    /// The Job named `name` that this launch created ([`spec::is_this_launchs`]), when a create
    /// answered `409 AlreadyExists` for it; `None` when there is none (a leftover of that name
    /// on its way out) or it cannot be read now.
    async fn created_already(
        &self,
        jobs: &Api<Job>,
        spec: &JobSpec,
        name: &str,
        secret_name: &str,
    ) -> Option<Job> {
        let lp = ListParams::default().labels(&attempt_selector(&spec.id, spec.attempt));
        let t = self.config.options.api_timeout;
        let list = bounded(t, jobs.list(&lp)).await.ok()?;
        list.items.into_iter().find(|j| {
            j.metadata.name.as_deref() == Some(name) && spec::is_this_launchs(j, spec, secret_name)
        })
    }
}

#[async_trait]
impl Runner for KubeRunner {
    fn kind(&self) -> &'static str {
        "kube"
    }

    fn validate(&self, _job_type: &str, args: &Value) -> Result<(), RunnerError> {
        self.config.large_args.check(args)
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        // Args `large_args` refuses (stored before it was set) fail before any API call.
        let args = self.config.large_args.env(&spec.args)?;
        let client = self.client().await?;
        let ns = self.namespace(&client);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<K8sSecret> = Api::namespaced(client.clone(), &ns);
        let name = job_name(&spec.job_type, &spec.id, spec.attempt);
        // 1. No other Job of this job may run next to this attempt.
        self.reconcile(&jobs, &spec.id, &spec.deployment, None)
            .await?;
        // 2. The Job, suspended until its Secret exists. A same-named leftover that the
        //    reconcile just deleted may take a moment to go.
        let secret_name = format!("{name}-{}", random_suffix());
        let job = self.build_job(&spec, &args, &name, &ns, &secret_name);
        let t = self.config.options.api_timeout;
        let mut tries = 0;
        let created = loop {
            match bounded(t, jobs.create(&PostParams::default(), &job)).await {
                Ok(j) => break j,
                Err(::kube::Error::Api(s)) if s.code == 409 && tries < 25 => {
                    // This launch's own create, carried out though answered with an error?
                    if let Some(j) = self
                        .created_already(&jobs, &spec, &name, &secret_name)
                        .await
                    {
                        tracing::info!(job = %name, "the Kubernetes Job this launch created was answered with an error: carrying on with it");
                        break j;
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(RunnerError::Launch(format!(
                        "cannot create Kubernetes Job {ns}/{name}: {}",
                        self.api_error(&e)
                    )))
                }
            }
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        // 3. The Secret, owned by the Job: deleting the Job garbage-collects it.
        let secret = spec::build_secret(&spec, &args, &secret_name, &ns, &name, &uid);
        let soon = tokio::time::Instant::now() + Duration::from_secs(5);
        if let Err(e) = bounded(t, secrets.create(&PostParams::default(), &secret)).await {
            let _ = teardown::delete_job_foreground(&jobs, &name, &uid, soon, t).await;
            return Err(RunnerError::Launch(format!(
                "cannot create Secret {ns}/{secret_name}: {}",
                self.api_error(&e)
            )));
        }
        // 4. Go.
        let resume = Patch::Merge(json!({"spec": {"suspend": false}}));
        if let Err(e) = bounded(t, jobs.patch(&name, &PatchParams::default(), &resume)).await {
            let _ = teardown::delete_job_foreground(&jobs, &name, &uid, soon, t).await;
            return Err(RunnerError::Launch(format!(
                "cannot resume Kubernetes Job {ns}/{name}: {}",
                self.api_error(&e)
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
            (self.config.options.clone(), Some(secret_name)),
        )))
    }

    /// The attempt's Job by its name ([`job_name`]) in the runner's namespace; the job's other
    /// Jobs are found by label and deleted by `recover`, as for a stored handle.
    fn unrecorded(&self, spec: &JobSpec, _node: Option<&str>) -> Option<RunHandle> {
        let name = job_name(&spec.job_type, &spec.id, spec.attempt);
        Some(RunHandle {
            kind: crate::RunKind::Kube,
            id: name.clone(),
            data: serde_json::json!({"name": name, "job_id": spec.id, "attempt": spec.attempt}),
        })
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
            .reconcile(
                &jobs,
                &spec.id,
                &spec.deployment,
                Some((&handle.id, spec.attempt)),
            )
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
            let t = self.config.options.api_timeout;
            teardown::delete_job_foreground(&jobs, &name, uid, soon, t)
                .await
                .map_err(RunnerError::Backend)?;
            return Ok(Recovered::Gone);
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let t = self.config.options.api_timeout;
        if let Some(outcome) = outcome::finished_outcome(&job, spec.timeout, &pods, t).await {
            return Ok(Recovered::Finished(outcome));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let secret = spec::secret_of(&job).map(str::to_string);
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
            (self.config.options.clone(), secret),
        ))))
    }

    async fn leftovers(&self, deployment: &str) -> Result<Vec<Leftover>, RunnerError> {
        if deployment.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &self.namespace(&client));
        let selector = format!("{LABEL_MANAGED_BY}=runyard,{LABEL_DEPLOYMENT}={deployment}");
        let lp = ListParams::default().labels(&selector);
        let list = bounded(self.config.options.api_timeout, jobs.list(&lp))
            .await
            .map_err(|e| {
                RunnerError::Backend(format!(
                    "cannot list Kubernetes Jobs: {}",
                    self.api_error(&e)
                ))
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|j| {
                let labels = j.metadata.labels.unwrap_or_default();
                Some(Leftover {
                    job_id: labels.get(LABEL_JOB_ID)?.clone(),
                    attempt: labels.get(LABEL_ATTEMPT)?.parse().ok()?,
                    name: j.metadata.name?,
                })
            })
            .collect())
    }

    async fn remove_leftover(&self, item: &Leftover, grace: Duration) -> Result<(), RunnerError> {
        let client = self.client().await?;
        let ns = self.namespace(&client);
        let selector = attempt_selector(&item.job_id, item.attempt);
        let o = &self.config.options;
        let bound = grace + o.delete_timeout;
        teardown::remove_leftover(
            client,
            &ns,
            &item.name,
            &selector,
            grace,
            bound,
            o.api_timeout,
        )
        .await
        .map_err(RunnerError::Backend)
    }
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
