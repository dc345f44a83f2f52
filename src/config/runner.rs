//! `[[runners]]`: which runner takes which job types, and its options.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::Backoff;

/// The runner kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// A child process.
    Local,
    /// An in-process async Rust function.
    Service,
    /// A container (Docker Engine API).
    Docker,
    /// A Kubernetes batch/v1 Job.
    Kube,
}

/// One `[[runners]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Name shown on jobs and usable as `runner` at submit; defaults to `{kind}-{index}`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which runner.
    pub kind: RunnerKind,
    /// Job type globs it claims (`report.*`).
    pub types: Vec<String>,
    /// How many jobs it runs at once in this process.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Default per-attempt time limit.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Default attempts per job.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Default retry backoff.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// local: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// local: extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// local: the server's environment variables passed through (default: PATH, HOME, LANG, ...).
    #[serde(default)]
    pub env_allow: Option<Vec<String>>,
    /// local: working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// local: run jobs as this user (name or uid). Needs a server running as root.
    #[serde(default)]
    pub user: Option<runyard_runners::isolation::Principal>,
    /// local: run jobs with this group (name or gid).
    #[serde(default)]
    pub group: Option<runyard_runners::isolation::Principal>,
    /// local: resource limits of the jobs' processes (`cpu`, `memory`, `nofile`, `nproc`,
    /// `fsize`).
    #[serde(default)]
    pub rlimits: runyard_runners::isolation::Rlimits,
    /// service: the registered operation to call (default: the job type).
    #[serde(default)]
    pub operation: Option<String>,
    /// docker, kube: the image to run.
    #[serde(default)]
    pub image: Option<String>,
    /// docker: images a job may pick with `args.image` (globs); the runner's `image` is always
    /// allowed.
    #[serde(default)]
    pub allowed_images: Vec<String>,
    /// docker: network mode (`host` to reach a hook on 127.0.0.1).
    #[serde(default)]
    pub network: Option<String>,
    /// docker: memory limit, e.g. `512m`, `2g`.
    #[serde(default)]
    pub memory: Option<String>,
    /// docker: CPU limit, e.g. 1.5.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// docker: extra container labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// docker: the engine (`unix:///var/run/docker.sock`, `tcp://...`); `DOCKER_HOST` when absent.
    #[serde(default)]
    pub docker_host: Option<String>,
    /// kube: the namespace Jobs are created in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// kube: the service account of the Job's pods.
    #[serde(default)]
    pub service_account: Option<String>,
    /// kube: `ttlSecondsAfterFinished` of the Jobs.
    #[serde(default, with = "humantime_serde")]
    pub ttl_after_finished: Option<Duration>,
    /// kube: a kubeconfig file; absent: in-cluster config, then the default kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// local, docker, kube: what is done with args whose JSON is over 120 KiB (too large for
    /// `JOB_ARGS`): `refuse` (the default: the submit is refused, 422) or `hook` (`JOB_ARGS` left
    /// out, `JOB_ARGS_SIZE` set, the job reads them from its hook).
    #[serde(default)]
    pub large_args: Option<runyard_runners::args::LargeArgs>,
    /// kube: pod settings (resources, scheduling, security) and lifecycle bounds, the
    /// `[runners.kube]` table (see docs/kubernetes.md).
    #[serde(default)]
    pub kube: Option<runyard_runners::kube::KubeOptions>,
}

fn default_concurrency() -> usize {
    4
}

fn default_attempts() -> u32 {
    3
}

impl RunnerConfig {
    /// The runner's name.
    pub fn name_at(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            let kind = match self.kind {
                RunnerKind::Local => "local",
                RunnerKind::Service => "service",
                RunnerKind::Docker => "docker",
                RunnerKind::Kube => "kube",
            };
            format!("{kind}-{index}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn with_runner(kind_and_more: &str) -> Result<Config, String> {
        Config::from_toml(&format!("[[runners]]\ntypes = [\"t.*\"]\n{kind_and_more}"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn large_args_is_refuse_or_hook_on_local_docker_and_kube_runners() {
        let local = "kind = \"local\"\ncommand = [\"true\"]\n";
        let docker = "kind = \"docker\"\nimage = \"busybox\"\n";
        let kube = "kind = \"kube\"\nimage = \"busybox\"\n";
        for base in [local, docker, kube] {
            let c = with_runner(base).expect(base);
            assert_eq!(c.runners[0].large_args, None, "{base}");
            for word in ["refuse", "hook"] {
                let c = with_runner(&format!("{base}large_args = \"{word}\"")).expect(word);
                assert_eq!(c.runners[0].large_args.map(|l| l.as_str()), Some(word));
            }
            let e = with_runner(&format!("{base}large_args = \"env\"")).unwrap_err();
            assert!(
                e.contains("large_args") && e.contains("env") && e.contains("refuse"),
                "{e}"
            );
        }
        let e = with_runner("kind = \"service\"\nlarge_args = \"hook\"").unwrap_err();
        assert!(
            e.contains("runners[0].large_args") && e.contains("only local, docker and kube"),
            "{e}"
        );
    }
}
