//! The `docker` runner: each attempt of a job is a container of the Docker Engine API.
//!
//! - The image is the runner's `image`, or an image the job picks with `args.image` among the
//!   runner's `allowed_images` globs (checked at submit time by [`Runner::validate`] and again at
//!   launch). A missing image is pulled once before the container is created.
//! - The container is named `runyard-{job id}-{attempt}` and labelled with the job id
//!   ([`LABEL_JOB_ID`]), the attempt, the job type, the runner and the deployment
//!   ([`LABEL_DEPLOYMENT`]), plus the runner's own `labels`.
//!   It gets the runner's `env` and the job's `JOB_ID`, `JOB_SECRET_KEY`, `JOB_HOOK`, `JOB_TYPE`,
//!   `JOB_ARGS` (or `JOB_ARGS_SIZE`, see [`crate::args`]) and `JOB_ATTEMPT`, the runner's
//!   memory/CPU limits and network mode.
//! - Its stdout and stderr are followed (with the engine's timestamps, so a broken log stream is
//!   resumed without repeating lines) and become the job's logs, line by line.
//! - Its exit code is the outcome: 0 is success, anything else a failure carrying the code (bollard
//!   reports a non-zero exit as `DockerContainerWaitError`, which is mapped here, not treated as an
//!   engine failure). An out-of-memory kill says so.
//! - The container is removed once it ended and its exit code is read; cancel and timeout stop it
//!   (the image's stop signal, then SIGKILL after the grace) and remove it.
//! - A container whose removal failed (the engine out of reach while the job ended or was
//!   cancelled) is found again by [`Runner::leftovers`] (this runner's containers of this
//!   deployment, by their labels) and removed by the worker's sweep once its job is done with it.
//! - After a restart of runyard, [`DockerRunner::recover`] finds the container again (by the id
//!   saved in the job's handle, then by its labels): still running, it is adopted and followed
//!   again; finished, its exit code is recorded (the container is left for the sweep, which
//!   removes it once its job is done with it: a second reaper may recover it meanwhile); gone,
//!   the job is run again.
//!
//! The secret is passed as a container environment variable, so whoever can use the Docker API
//! (`docker inspect`) can read it, as with any container env; it never appears in runyard's own
//! logs or API: the create body is never logged here, and the CLI filters bollard's debug logs
//! (which print request bodies). The engine is `docker_host`, else `DOCKER_HOST`, else
//! `unix:///var/run/docker.sock`; the API version is negotiated with the engine on first use.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, CreateImageOptions};
use bollard::Docker;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

mod engine;
mod exec;
mod logs;

use engine::{
    check_host, engine_message, find_containers, inspect, is_missing_image, remove, short,
    split_image, try_remove,
};
pub use engine::{container_name, nano_cpus, parse_memory};
use exec::{outcome_of, DockerExecution};
use logs::{follow_logs, now_ns};

use crate::args::{EnvArgs, LargeArgs};
use crate::{
    Execution, JobSpec, Leftover, LogStream, Outcome, Recovered, RunHandle, RunKind, Runner,
    RunnerError, SharedReporter,
};

/// Longest log line kept whole; longer lines are split (the one limit of [`crate::lines`]).
pub use crate::lines::MAX_LINE_BYTES;

/// Label on every container runyard creates (`true`).
pub const LABEL_MANAGED: &str = "runyard.managed";
/// Label holding the job id.
pub const LABEL_JOB_ID: &str = "runyard.job-id";
/// Label holding the attempt number.
pub const LABEL_ATTEMPT: &str = "runyard.attempt";
/// Label holding the job type.
pub const LABEL_JOB_TYPE: &str = "runyard.job-type";
/// Label holding the runner's name.
pub const LABEL_RUNNER: &str = "runyard.runner";
/// Label holding the deployment's fingerprint ([`JobSpec::deployment`]): the sweep of work left
/// behind ([`Runner::leftovers`]) lists only containers of its own deployment.
pub const LABEL_DEPLOYMENT: &str = "runyard.deployment";

/// The engine used when neither `docker_host` nor `DOCKER_HOST` is set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long an image pull may take before the launch fails.
const PULL_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How long `wait` keeps retrying while the engine cannot be reached before it gives up.
const LOST_ENGINE_LIMIT: Duration = Duration::from_secs(5 * 60);

/// Configuration of a docker runner.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// The runner's name (a label on its containers).
    pub name: String,
    /// The image jobs run in unless they pick another allowed one.
    pub image: String,
    /// The container's command (the image's `CMD` when empty; the image's entrypoint is kept).
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Network mode (`host`, `none`, `bridge`, a network name); the engine's default when absent.
    pub network: Option<String>,
    /// Memory limit, e.g. `512m`, `2g` (see [`parse_memory`]).
    pub memory: Option<String>,
    /// CPU limit, e.g. 1.5.
    pub cpus: Option<f64>,
    /// Globs of images a job may pick with `args.image`.
    pub allowed_images: Vec<String>,
    /// Extra labels on the containers.
    pub labels: BTreeMap<String, String>,
    /// The engine: `unix:///path`, `tcp://host:port` or `http://host:port`.
    pub docker_host: Option<String>,
    /// What is done with args too large for `JOB_ARGS` (see [`crate::args`]).
    pub large_args: LargeArgs,
}

/// Runs jobs as containers.
pub struct DockerRunner {
    config: DockerConfig,
    host: String,
    memory_bytes: Option<i64>,
    nano_cpus: Option<i64>,
    client: OnceCell<Docker>,
}

impl DockerRunner {
    /// A runner for this configuration. Checks the values; does not contact the engine (that
    /// happens on first use, so runyard starts even while the engine is down).
    pub fn new(config: DockerConfig) -> Result<Self, RunnerError> {
        if config.image.trim().is_empty() {
            return Err(RunnerError::Invalid(
                "docker runner needs an `image`".into(),
            ));
        }
        let memory_bytes = match &config.memory {
            Some(m) => Some(parse_memory(m).map_err(RunnerError::Invalid)?),
            None => None,
        };
        let nano_cpus = match config.cpus {
            Some(c) => Some(nano_cpus(c).map_err(RunnerError::Invalid)?),
            None => None,
        };
        let host = config
            .docker_host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        check_host(&host).map_err(RunnerError::Invalid)?;
        Ok(Self {
            config,
            host,
            memory_bytes,
            nano_cpus,
            client: OnceCell::new(),
        })
    }

    /// The engine address this runner talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A client with the API version negotiated with the engine (once; retried while it fails).
    async fn client(&self) -> Result<Docker, RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_host(&self.host).map_err(|e| {
                    RunnerError::Backend(format!(
                        "cannot connect to the docker engine at {}: {e}",
                        self.host
                    ))
                })?;
                docker.negotiate_version().await.map_err(|e| {
                    RunnerError::Backend(format!(
                        "the docker engine at {} does not answer: {e}",
                        self.host
                    ))
                })
            })
            .await
            .cloned()
    }

    /// The image a job runs in: `args.image` when present and allowed, else the runner's image.
    pub fn image_for(&self, args: &Value) -> Result<String, RunnerError> {
        match args.get("image") {
            None | Some(Value::Null) => Ok(self.config.image.clone()),
            Some(Value::String(img)) => {
                if img == &self.config.image
                    || self
                        .config
                        .allowed_images
                        .iter()
                        .any(|g| crate::glob_match(g, img))
                {
                    Ok(img.clone())
                } else {
                    let mut allowed = vec![self.config.image.as_str()];
                    allowed.extend(self.config.allowed_images.iter().map(String::as_str));
                    Err(RunnerError::Invalid(format!(
                        "image `{img}` is not allowed by this runner (allowed: {})",
                        allowed.join(", ")
                    )))
                }
            }
            Some(_) => Err(RunnerError::Invalid("`args.image` must be a string".into())),
        }
    }

    fn labels(&self, spec: &JobSpec) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = self
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.into(), "true".into());
        labels.insert(LABEL_JOB_ID.into(), spec.id.clone());
        labels.insert(LABEL_ATTEMPT.into(), spec.attempt.to_string());
        labels.insert(LABEL_JOB_TYPE.into(), spec.job_type.clone());
        labels.insert(LABEL_RUNNER.into(), self.config.name.clone());
        if !spec.deployment.is_empty() {
            labels.insert(LABEL_DEPLOYMENT.into(), spec.deployment.clone());
        }
        labels
    }

    /// The create body. It holds the job's secret: never log it. Args too large for `JOB_ARGS`
    /// that `large_args` refuses are [`RunnerError::LaunchFinal`].
    fn create_body(&self, spec: &JobSpec, image: &str) -> Result<ContainerCreateBody, RunnerError> {
        let mut env = self.config.env.clone();
        env.insert("JOB_ID".into(), spec.id.clone());
        env.insert("JOB_SECRET_KEY".into(), spec.secret.expose().to_string());
        env.insert("JOB_HOOK".into(), spec.hook_url.clone());
        env.insert("JOB_TYPE".into(), spec.job_type.clone());
        match self.config.large_args.env(&spec.args)? {
            EnvArgs::Inline(args) => {
                // Nor a `JOB_ARGS_SIZE` of the runner's `env` say they were left out.
                env.remove("JOB_ARGS_SIZE");
                env.insert("JOB_ARGS".into(), args)
            }
            // A `JOB_ARGS` of the runner's `env` or of the image (`ENV JOB_ARGS`) must not stand
            // in for them: set empty, which the Python client reads as unset.
            EnvArgs::Hook { size } => {
                env.insert("JOB_ARGS".into(), String::new());
                env.insert("JOB_ARGS_SIZE".into(), size.to_string())
            }
        };
        env.insert("JOB_ATTEMPT".into(), spec.attempt.to_string());
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: (!self.config.command.is_empty()).then(|| self.config.command.clone()),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(self.labels(spec)),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            open_stdin: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                network_mode: self.config.network.clone(),
                memory: self.memory_bytes,
                nano_cpus: self.nano_cpus,
                auto_remove: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Removes every container of this job (earlier attempts whose worker died before it could
    /// record them, or a leftover of this very attempt) but another deployment's (`deployment`,
    /// [`JobSpec::deployment`]: an original store's, or its copy's, running the same job). Best
    /// effort.
    async fn remove_stale(&self, docker: &Docker, job_id: &str, deployment: &str) {
        for id in find_containers(docker, job_id, None, deployment)
            .await
            .unwrap_or_default()
        {
            tracing::info!(job_id, container = %short(&id), "removing a stale container of this job");
            remove(docker, &id).await;
        }
    }

    async fn pull(&self, docker: &Docker, image: &str) -> Result<(), RunnerError> {
        let (repo, tag) = split_image(image);
        let opts = CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: tag.map(str::to_string),
            ..Default::default()
        };
        tracing::info!(image, "pulling image");
        let pull = async {
            let mut s = docker.create_image(Some(opts), None, None);
            while let Some(item) = s.next().await {
                match item {
                    Ok(info) => {
                        if let Some(d) = info.error_detail {
                            return Err(d.message.unwrap_or_else(|| "pull failed".into()));
                        }
                    }
                    Err(e) => return Err(engine_message(&e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(PULL_LIMIT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(RunnerError::Launch(format!(
                "image `{image}` is not present and cannot be pulled: {m}"
            ))),
            Err(_) => Err(RunnerError::Launch(format!(
                "pulling image `{image}` took longer than {}s",
                PULL_LIMIT.as_secs()
            ))),
        }
    }
}

#[async_trait]
impl Runner for DockerRunner {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn validate(&self, _job_type: &str, args: &Value) -> Result<(), RunnerError> {
        self.config.large_args.check(args)?;
        self.image_for(args).map(|_| ())
    }

    async fn launch(
        &self,
        spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Box<dyn Execution>, RunnerError> {
        let image = self.image_for(&spec.args)?;
        let body = self.create_body(&spec, &image)?;
        let docker = self.client().await?;
        let secret = spec.secret.expose().to_string();
        let scrub = |m: String| {
            if secret.is_empty() {
                m
            } else {
                m.replace(&secret, "***")
            }
        };
        self.remove_stale(&docker, &spec.id, &spec.deployment).await;
        let name = container_name(&spec.id, spec.attempt);
        let opts = || CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = match docker.create_container(Some(opts()), body.clone()).await {
            Ok(c) => c,
            Err(e) if is_missing_image(&e) => {
                self.pull(&docker, &image).await?;
                docker
                    .create_container(Some(opts()), body)
                    .await
                    .map_err(|e| {
                        RunnerError::Launch(scrub(format!(
                            "cannot create the container: {}",
                            engine_message(&e)
                        )))
                    })?
            }
            Err(e) => {
                return Err(RunnerError::Launch(scrub(format!(
                    "cannot create the container: {}",
                    engine_message(&e)
                ))))
            }
        };
        let id = created.id;
        for w in created.warnings {
            reporter.log(LogStream::Job, format!("docker: {}", scrub(w)));
        }
        if let Err(e) = docker.start_container(&id, None).await {
            remove(&docker, &id).await;
            return Err(RunnerError::Launch(scrub(format!(
                "cannot start the container: {}",
                engine_message(&e)
            ))));
        }
        tracing::debug!(container = %short(&id), %image, "container started");
        let logs = tokio::spawn(follow_logs(
            docker.clone(),
            id.clone(),
            reporter.clone(),
            None,
        ));
        let handle = RunHandle {
            kind: RunKind::Docker,
            id: short(&id).to_string(),
            data: json!({
                "container_id": id,
                "name": name,
                "image": image,
                "job_id": spec.id,
                "attempt": spec.attempt,
            }),
        };
        Ok(Box::new(DockerExecution::new(
            docker, id, handle, logs, reporter,
        )))
    }

    /// The attempt's container by its name (`runyard-{job id}-{attempt}`), else its labels.
    fn unrecorded(&self, spec: &JobSpec, _node: Option<&str>) -> Option<RunHandle> {
        let name = container_name(&spec.id, spec.attempt);
        Some(RunHandle {
            kind: RunKind::Docker,
            id: name.clone(),
            data: json!({"container_id": name, "job_id": spec.id, "attempt": spec.attempt}),
        })
    }

    async fn recover(
        &self,
        handle: &RunHandle,
        _spec: JobSpec,
        reporter: SharedReporter,
    ) -> Result<Recovered, RunnerError> {
        if handle.kind != RunKind::Docker {
            // Work of another runner kind (the configuration changed): nothing of ours to find.
            return Ok(Recovered::Gone);
        }
        let docker = self.client().await?;
        let saved = handle
            .data
            .get("container_id")
            .and_then(Value::as_str)
            .unwrap_or(&handle.id)
            .to_string();
        let mut found = inspect(&docker, &saved).await?;
        if found.is_none() {
            // The saved id is gone (or was never saved whole): look for the attempt by its labels.
            if let Some(job_id) = handle.data.get("job_id").and_then(Value::as_str) {
                let attempt = handle.data.get("attempt").and_then(Value::as_u64);
                let ids = find_containers(&docker, job_id, attempt, "")
                    .await
                    .map_err(|e| RunnerError::Backend(engine_message(&e)))?;
                if let Some(id) = ids.first() {
                    found = inspect(&docker, id).await?;
                }
            }
        }
        let Some(c) = found else {
            return Ok(Recovered::Gone);
        };
        let id = c.id.clone().unwrap_or(saved);
        let state = c.state.clone().unwrap_or_default();
        match state.status {
            Some(
                ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING,
            ) => {
                tracing::info!(container = %short(&id), "found the job's container still running");
                reporter.log(
                    LogStream::Job,
                    format!(
                        "runyard: found container {} still running after a restart; following \
                         its output again from now on",
                        short(&id)
                    ),
                );
                let now = now_ns();
                let logs = tokio::spawn(follow_logs(
                    docker.clone(),
                    id.clone(),
                    reporter.clone(),
                    Some(now),
                ));
                let mut handle = handle.clone();
                if let Value::Object(m) = &mut handle.data {
                    m.insert("container_id".into(), json!(id));
                }
                Ok(Recovered::Running(Box::new(DockerExecution::new(
                    docker, id, handle, logs, reporter,
                ))))
            }
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                // Not removed here: its outcome is not recorded yet. Another reaper (a second
                // worker process on the store) may recover it too and must find it ended, not
                // gone (the job would be run again, this outcome lost), and one that recovered
                // it still running must still read its exit. It is removed once the outcome is
                // recorded: by the sweep ([`Runner::leftovers`]) once its job is done with it, or
                // by the next attempt's launch (`remove_stale`).
                let code = state.exit_code.unwrap_or(-1);
                let outcome = outcome_of(code, state.error.as_deref(), state.oom_killed);
                Ok(Recovered::Finished(outcome))
            }
            _ => {
                // Created but never started (the launch died half-way), or being removed.
                remove(&docker, &id).await;
                Ok(Recovered::Gone)
            }
        }
    }

    async fn leftovers(&self, deployment: &str) -> Result<Vec<Leftover>, RunnerError> {
        if deployment.is_empty() {
            return Ok(Vec::new());
        }
        let docker = self.client().await?;
        engine::leftovers(&docker, &self.config.name, deployment)
            .await
            .map_err(|e| {
                RunnerError::Backend(format!("cannot list containers: {}", engine_message(&e)))
            })
    }

    async fn remove_leftover(&self, item: &Leftover, grace: Duration) -> Result<(), RunnerError> {
        let docker = self.client().await?;
        exec::stop_bounded(&docker, &item.name, grace).await;
        try_remove(&docker, &item.name).await.map_err(|e| {
            RunnerError::Backend(format!(
                "cannot remove container {}: {e}",
                short(&item.name)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::logs::{parse_rfc3339_ns, split_timestamp};
    use super::*;

    fn runner(allowed: &[&str]) -> DockerRunner {
        DockerRunner::new(DockerConfig {
            name: "d".into(),
            image: "busybox:local".into(),
            allowed_images: allowed.iter().map(|s| s.to_string()).collect(),
            docker_host: Some("unix:///nonexistent.sock".into()),
            ..Default::default()
        })
        .unwrap()
    }

    /// Review 18: a container's `JOB_ARGS` over 128 KiB fails at exec (`E2BIG`): by default
    /// such args are refused at submit (and at launch, not retried); with `large_args = "hook"`
    /// they are left out (a `JOB_ARGS` of the runner's `env` too) and `JOB_ARGS_SIZE` is set.
    #[test]
    fn args_too_large_for_the_environment_are_refused_or_left_to_the_hook() {
        let with = |large_args| {
            DockerRunner::new(DockerConfig {
                name: "d".into(),
                image: "busybox:local".into(),
                env: BTreeMap::from([("JOB_ARGS".into(), "{}".into())]),
                docker_host: Some("unix:///nonexistent.sock".into()),
                large_args,
                ..Default::default()
            })
            .unwrap()
        };
        let spec = |args: Value| JobSpec {
            id: "0190-test".into(),
            job_type: "t.x".into(),
            args,
            attempt: 1,
            secret: crate::Secret::from_string("s3cr3t".into()),
            hook_url: "http://127.0.0.1:1/async".into(),
            timeout: None,
            deployment: String::new(),
        };
        let big = json!({"x": "A".repeat(200_000 - 8)});
        let env = |r: &DockerRunner, args: &Value| {
            r.create_body(&spec(args.clone()), "busybox:local")
                .map(|b| b.env.unwrap_or_default())
        };
        let refuse = with(LargeArgs::default());
        let e = refuse.validate("t.x", &big).unwrap_err();
        assert!(
            matches!(e, RunnerError::ArgsTooLarge { size: 200_000, .. }),
            "{e:?}"
        );
        let e = env(&refuse, &big).unwrap_err();
        assert!(
            e.is_final() && e.to_string().contains("large_args"),
            "{e:?}"
        );
        let small = env(&refuse, &json!({"x": 1})).unwrap();
        assert!(
            small.contains(&r#"JOB_ARGS={"x":1}"#.to_string()),
            "{small:?}"
        );

        let hook = with(LargeArgs::Hook);
        assert!(hook.validate("t.x", &big).is_ok());
        let env = env(&hook, &big).unwrap();
        assert!(env.contains(&"JOB_ARGS_SIZE=200000".to_string()), "{env:?}");
        // Empty, so that an image's `ENV JOB_ARGS` does not stand in for them either.
        assert!(env.contains(&"JOB_ARGS=".to_string()), "{env:?}");
        assert!(!env.iter().any(|e| e.starts_with("JOB_ARGS={")), "{env:?}");
    }

    #[test]
    fn images_are_checked_against_the_allow_list() {
        let r = runner(&["registry.example.com/team/*", "tools:?.?"]);
        assert_eq!(r.image_for(&json!({})).unwrap(), "busybox:local");
        assert_eq!(
            r.image_for(&json!({"image": null})).unwrap(),
            "busybox:local"
        );
        assert_eq!(
            r.image_for(&json!({"image": "busybox:local"})).unwrap(),
            "busybox:local"
        );
        assert!(r
            .validate("t", &json!({"image": "registry.example.com/team/app:1"}))
            .is_ok());
        assert!(r.validate("t", &json!({"image": "tools:1.2"})).is_ok());
        let e = r
            .validate("t", &json!({"image": "evil:latest"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("evil:latest") && e.contains("not allowed"),
            "{e}"
        );
        assert!(r.validate("t", &json!({"image": 3})).is_err());
    }

    #[test]
    fn config_values_are_checked() {
        let bad = |c: DockerConfig| DockerRunner::new(c).err().map(|e| e.to_string());
        let base = DockerConfig {
            image: "x".into(),
            docker_host: Some("unix:///x.sock".into()),
            ..Default::default()
        };
        assert!(bad(DockerConfig {
            image: " ".into(),
            ..base.clone()
        })
        .is_some());
        assert!(bad(DockerConfig {
            memory: Some("lots".into()),
            ..base.clone()
        })
        .unwrap()
        .contains("lots"));
        assert!(bad(DockerConfig {
            cpus: Some(0.0),
            ..base.clone()
        })
        .is_some());
        assert!(bad(DockerConfig {
            docker_host: Some("ssh://h".into()),
            ..base.clone()
        })
        .unwrap()
        .contains("ssh://h"));
        assert!(bad(base).is_none());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2g").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory("64 MB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k").is_err(), "under the engine's minimum");
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("").is_err());
        assert_eq!(nano_cpus(1.5).unwrap(), 1_500_000_000);
        assert!(nano_cpus(-1.0).is_err());
    }

    #[test]
    fn timestamps_and_frames() {
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01Z"),
            Some(1_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T12:00:00.5Z"),
            Some(1_709_208_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T13:00:00.000000001+01:00"),
            Some(1_709_208_000_000_000_001)
        );
        assert_eq!(parse_rfc3339_ns("yesterday"), None);
        let (ts, rest) = split_timestamp(b"2024-02-29T12:00:00.123456789Z hello world\n");
        assert_eq!(ts, Some(1_709_208_000_123_456_789));
        assert_eq!(rest, b"hello world\n");
        let (ts, rest) = split_timestamp(b"no timestamp here");
        assert_eq!((ts, rest), (None, &b"no timestamp here"[..]));
    }

    #[test]
    fn image_references_split_for_pulls() {
        assert_eq!(split_image("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_image("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_image("localhost:5000/team/app"),
            ("localhost:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_image("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", Some("v2"))
        );
        assert_eq!(split_image("app@sha256:abc"), ("app@sha256:abc", None));
    }

    #[test]
    fn exit_codes_make_outcomes() {
        assert_eq!(outcome_of(0, None, None), Outcome::Success { result: None });
        assert_eq!(
            outcome_of(3, None, Some(false)),
            Outcome::Failed {
                message: "container exited with code 3".into(),
                exit_code: Some(3)
            }
        );
        assert_eq!(
            outcome_of(137, None, Some(true)),
            Outcome::Failed {
                message: "container killed: out of memory (exit code 137)".into(),
                exit_code: Some(137)
            }
        );
    }
}
