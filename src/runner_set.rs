//! The configured runners, and the choice of a runner for a job type: the first runner whose
//! `types` globs match wins (webda's `handleType`).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use runyard_runners::docker::{DockerConfig, DockerRunner};
pub use runyard_runners::glob_match;
use runyard_runners::kube::{KubeConfig, KubeRunner};
use runyard_runners::local::{LocalConfig, LocalRunner, DEFAULT_ENV_ALLOW};
use runyard_runners::service::{ServiceRegistry, ServiceRunner};
use runyard_runners::{Runner, RunnerError};

use crate::config::{Config, ConfigError, RunnerKind};
use crate::job::Backoff;

/// One configured runner with its limits.
pub struct RunnerSlot {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: RunnerKind,
    /// The type globs it claims.
    pub types: Vec<String>,
    /// The runner.
    pub runner: Arc<dyn Runner>,
    /// Jobs it may run at once in this process.
    pub concurrency: usize,
    /// Jobs running now in this process.
    pub active: AtomicUsize,
    /// Default time limit.
    pub timeout: Option<Duration>,
    /// Default attempts.
    pub max_attempts: u32,
    /// Default backoff.
    pub backoff: Backoff,
}

impl RunnerSlot {
    /// Whether this runner claims `job_type`.
    pub fn claims(&self, job_type: &str) -> bool {
        self.types.iter().any(|g| glob_match(g, job_type))
    }
}

/// All runners, in config order.
pub struct RunnerSet {
    slots: Vec<Arc<RunnerSlot>>,
}

/// Why no runner was chosen (the model's type; re-exported here for compatibility).
pub use crate::job::SelectError;

impl RunnerSet {
    /// Builds the runners of `cfg`; service runners call operations of `services`.
    pub fn build(cfg: &Config, services: Arc<ServiceRegistry>) -> Result<Self, ConfigError> {
        let mut slots = Vec::new();
        for (i, rc) in cfg.runners.iter().enumerate() {
            let key = |f: &str| format!("runners[{i}].{f}");
            let runner: Arc<dyn Runner> = match rc.kind {
                RunnerKind::Local => {
                    let lc = LocalConfig {
                        command: rc.command.clone(),
                        env: rc.env.clone(),
                        env_allow: rc.env_allow.clone().unwrap_or_else(|| {
                            DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect()
                        }),
                        cwd: rc.cwd.clone(),
                        user: rc.user.clone(),
                        group: rc.group.clone(),
                        rlimits: rc.rlimits.clone(),
                        large_args: rc.large_args.unwrap_or_default(),
                    };
                    lc.isolation()
                        .map_err(|e| ConfigError(format!("`{}`: {}", key(&e.key), e.message)))?;
                    Arc::new(
                        LocalRunner::new(lc)
                            .map_err(|e| ConfigError(format!("`{}`: {e}", key("command"))))?,
                    )
                }
                RunnerKind::Service => Arc::new(
                    ServiceRunner::new(services.clone(), rc.operation.clone())
                        .map_err(|e| ConfigError(format!("`{}`: {e}", key("operation"))))?,
                ),
                RunnerKind::Kube => Arc::new(
                    KubeRunner::new(KubeConfig {
                        namespace: rc.namespace.clone(),
                        image: rc.image.clone().unwrap_or_default(),
                        command: rc.command.clone(),
                        env: rc.env.clone(),
                        service_account: rc.service_account.clone(),
                        ttl_after_finished: rc.ttl_after_finished,
                        kubeconfig: rc.kubeconfig.clone(),
                        options: rc.kube.clone().unwrap_or_default(),
                        large_args: rc.large_args.unwrap_or_default(),
                    })
                    .map_err(|e| {
                        // Config validation caught the rest: what is left is the kubeconfig file.
                        let m = match e {
                            RunnerError::Invalid(m) => m,
                            e => e.to_string(),
                        };
                        ConfigError(format!("`{}`: {m}", key("kubeconfig")))
                    })?,
                ),
                RunnerKind::Docker => Arc::new(
                    DockerRunner::new(DockerConfig {
                        name: rc.name_at(i),
                        image: rc.image.clone().unwrap_or_default(),
                        command: rc.command.clone(),
                        env: rc.env.clone(),
                        network: rc.network.clone(),
                        memory: rc.memory.clone(),
                        cpus: rc.cpus,
                        allowed_images: rc.allowed_images.clone(),
                        labels: rc.labels.clone(),
                        docker_host: rc.docker_host.clone(),
                        large_args: rc.large_args.unwrap_or_default(),
                    })
                    // Config validation caught the rest: what is left is the engine address.
                    .map_err(|e| ConfigError(format!("`{}`: {e}", key("docker_host"))))?,
                ),
            };
            slots.push(Arc::new(RunnerSlot {
                name: rc.name_at(i),
                kind: rc.kind,
                types: rc.types.clone(),
                runner,
                concurrency: rc.concurrency,
                active: AtomicUsize::new(0),
                timeout: rc.timeout,
                max_attempts: rc.max_attempts,
                backoff: rc.backoff.unwrap_or_default(),
            }));
        }
        Ok(Self { slots })
    }

    /// The runner for a job: the named one (which must claim the type) or the first match.
    pub fn select(
        &self,
        job_type: &str,
        args: &serde_json::Value,
        named: Option<&str>,
    ) -> Result<&Arc<RunnerSlot>, SelectError> {
        let slot = match named {
            Some(n) => {
                let s = self
                    .get(n)
                    .ok_or_else(|| SelectError::UnknownRunner(n.to_string()))?;
                if !s.claims(job_type) {
                    return Err(SelectError::NotClaimed(n.into(), job_type.into()));
                }
                s
            }
            None => self
                .slots
                .iter()
                .find(|s| s.claims(job_type))
                .ok_or_else(|| SelectError::NoRunner(job_type.to_string()))?,
        };
        slot.runner.validate(job_type, args).map_err(|e| match e {
            RunnerError::ArgsTooLarge { .. } => {
                SelectError::InvalidRequest(format!("runner `{}`: {e}", slot.name))
            }
            e => SelectError::Refused(e.to_string()),
        })?;
        Ok(slot)
    }

    /// Where a stored job of `job_type` goes under this config: its `runner` if that exists and
    /// claims the type, else the first runner whose types match (as a submit picks); `None`
    /// when no runner claims the type. A job keeps its runner's name, and a config change
    /// (blocks reordered, renamed, their `types` changed) may leave that name to another runner
    /// or to none: the claim guard, the start's pass and a retry route it again with this.
    pub fn route(&self, job_type: &str, runner: &str) -> Option<&Arc<RunnerSlot>> {
        self.get(runner)
            .filter(|s| s.claims(job_type))
            .or_else(|| self.slots.iter().find(|s| s.claims(job_type)))
    }

    /// The runner named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<RunnerSlot>> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// All runners.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<RunnerSlot>> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("report.*", "report.daily"));
        assert!(!glob_match("report.*", "reports.daily"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("thumbnail", "thumbnails"));
        // Not ASCII (a config's glob may be): `?` is one character, not one byte.
        assert!(glob_match("r?sum?", "résumé"));
        assert!(glob_match("é*", "éa"));
        assert!(!glob_match("r?sum?", "résumés"));
    }
}
