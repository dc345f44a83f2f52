//! Start-up checks of `runyard serve` and `runyard worker` (docs/configuration.md, "Start-up
//! checks"): configurations that would start but could never work are refused with a message
//! saying what to change; things that may still recover (a Docker engine that is starting) and
//! `RUNYARD_*` variables that are not configuration get a warning.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, RunnerKind};

/// What `serve` may be told to accept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// `--allow-no-runners` (or `--demo`, which adds its own).
    pub no_runners: bool,
}

/// The message of a `serve` without runners.
pub const NO_RUNNERS: &str = "no runners are configured, so every job would be refused (422). \
Add one to runyard.toml (or --config FILE), e.g.\n\n[[runners]]\nkind = \"local\"\ntypes = [\"report.*\"]\n\
command = [\"python3\", \"jobs/report.py\"]\n\nsee docs/configuration.md; or try `runyard serve --demo` \
(demo runners); or pass --allow-no-runners to start anyway";

/// The checks that refuse: the message names the keys and says how to fix them.
pub fn refuse(config: &Config, services: &[&str], allow: Allow) -> Result<(), String> {
    if config.runners.is_empty() && !allow.no_runners {
        return Err(NO_RUNNERS.into());
    }
    overlapping_types(config)?;
    service_functions(config, services)?;
    kube_clusters(config)?;
    Ok(())
}

/// Two runners whose type globs can match the same type: the first one always wins, which is
/// rarely what was meant.
fn overlapping_types(config: &Config) -> Result<(), String> {
    let rs = &config.runners;
    for (j, b) in rs.iter().enumerate() {
        for (i, a) in rs.iter().enumerate().take(j) {
            for ga in &a.types {
                for gb in &b.types {
                    if let Some(t) = glob_overlap(ga, gb) {
                        return Err(format!(
                            "`runners[{i}].types` and `runners[{j}].types` overlap: `{ga}` ({}) and \
                             `{gb}` ({}) both match e.g. `{t}`, and the first runner always wins. \
                             Make the globs disjoint (e.g. a more specific glob in the later runner \
                             and an exclusive one in the earlier)",
                            a.name_at(i),
                            b.name_at(j),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A type both globs match (`*`: any characters, `?`: one), or `None` when none exists.
pub fn glob_overlap(a: &str, b: &str) -> Option<String> {
    fn go(
        a: &[char],
        b: &[char],
        i: usize,
        j: usize,
        failed: &mut HashSet<(usize, usize)>,
        out: &mut String,
    ) -> bool {
        if i == a.len() && j == b.len() {
            return true;
        }
        if failed.contains(&(i, j)) {
            return false;
        }
        // A star may match nothing.
        if a.get(i) == Some(&'*') && go(a, b, i + 1, j, failed, out) {
            return true;
        }
        if b.get(j) == Some(&'*') && go(a, b, i, j + 1, failed, out) {
            return true;
        }
        if let (Some(&ca), Some(&cb)) = (a.get(i), b.get(j)) {
            let wild = |c: char| c == '*' || c == '?';
            let c = match (wild(ca), wild(cb)) {
                (true, true) => Some('x'),
                (true, false) => Some(cb),
                (false, true) => Some(ca),
                (false, false) => (ca == cb).then_some(ca),
            };
            // Two stars consuming a character together loop; the moves above cover them.
            if let Some(c) = c.filter(|_| !(ca == '*' && cb == '*')) {
                let ni = if ca == '*' { i } else { i + 1 };
                let nj = if cb == '*' { j } else { j + 1 };
                out.push(c);
                if go(a, b, ni, nj, failed, out) {
                    return true;
                }
                out.pop();
            }
        }
        failed.insert((i, j));
        false
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut out = String::new();
    go(&a, &b, 0, 0, &mut HashSet::new(), &mut out).then_some(out)
}

/// Service runners: every type they claim must have a registered function (the `operation`, or
/// the type itself when there is none).
fn service_functions(config: &Config, services: &[&str]) -> Result<(), String> {
    for (i, r) in config.runners.iter().enumerate() {
        if r.kind != RunnerKind::Service || r.operation.is_some() {
            continue; // An unknown `operation` is refused when the runner is built.
        }
        for glob in &r.types {
            if !services
                .iter()
                .any(|s| crate::runner_set::glob_match(glob, s))
            {
                return Err(format!(
                    "`runners[{i}].types`: no registered service function matches `{glob}` \
                     (this program has: {}); every such job would fail. Use a `local`, `docker` \
                     or `kube` runner for it, or set `runners[{i}].operation` to one of those",
                    services.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Where the kube runner would find a cluster: its `kubeconfig`, the in-cluster service account,
/// `$KUBECONFIG` or `~/.kube/config`.
fn kube_clusters(config: &Config) -> Result<(), String> {
    for (i, r) in config.runners.iter().enumerate() {
        if r.kind != RunnerKind::Kube || r.kubeconfig.is_some() {
            continue; // A `kubeconfig` file is read when the runner is built.
        }
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
        let env_files: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
        let found = env_files.iter().any(|p| p.is_file()) || home.is_some_and(|p| p.is_file());
        if !in_cluster && !found {
            return Err(format!(
                "`runners[{i}]` (kube): no Kubernetes cluster to run jobs on: not running in a \
                 cluster (no KUBERNETES_SERVICE_HOST and service account token), no KUBECONFIG \
                 and no ~/.kube/config. Set `runners[{i}].kubeconfig` to a kubeconfig file, or run \
                 runyard in the cluster"
            ));
        }
    }
    Ok(())
}

/// The checks that only warn (logged).
pub async fn warn(config: &Config) {
    for (i, r) in config.runners.iter().enumerate() {
        // It may be mounted or made later, and a node that runs no local job does not need it.
        if let Some(cwd) = r
            .cwd
            .as_ref()
            .filter(|d| r.kind == RunnerKind::Local && !d.is_dir())
        {
            tracing::warn!(
                runner = %r.name_at(i),
                cwd = %cwd.display(),
                "`runners[{i}].cwd` is not a directory here: the jobs of this runner that this \
                 node starts will fail to launch until it is"
            );
        }
        if r.kind == RunnerKind::Docker {
            let host = r
                .docker_host
                .clone()
                .filter(|h| !h.is_empty())
                .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
                .unwrap_or_else(|| runyard_runners::docker::DEFAULT_DOCKER_HOST.to_string());
            if let Err(e) = docker_ping(&host).await {
                tracing::warn!(
                    runner = %r.name_at(i),
                    docker_host = %host,
                    error = %e,
                    "`runners[{i}]` (docker): the Docker engine does not answer; its jobs will fail \
                     until it does (it may still be starting)"
                );
            }
        }
    }
    for (name, closest) in
        unknown_env(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
    {
        tracing::warn!(
            variable = %name,
            "`{name}` is not a runyard setting and is ignored; did you mean `{closest}`?"
        );
    }
}

/// `GET /_ping` on the engine, within 3 s.
async fn docker_ping(host: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn ask<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
    ) -> Result<(), String> {
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..n]);
        if head.starts_with("HTTP/1.") && head.get(9..12) == Some("200") {
            Ok(())
        } else {
            Err(format!(
                "unexpected answer to /_ping: {:?}",
                head.lines().next().unwrap_or("")
            ))
        }
    }
    let attempt = async {
        if let Some(path) = host.strip_prefix("unix://") {
            ask(tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| e.to_string())?)
            .await
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            ask(tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
                .await
                .map_err(|e| e.to_string())?)
            .await
        } else {
            Ok(()) // TLS or another scheme: left to the first job.
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .map_err(|_| "no answer within 3s".to_string())?
}

/// `RUNYARD_*` variables that are not configuration but mean something to runyard or its tools.
const OTHER_VARS: &[&str] = &[
    "RUNYARD_LOG",
    "RUNYARD_LOG_FORMAT",
    "RUNYARD_CONFIG",
    "RUNYARD_SERVER",
    "RUNYARD_TOKEN",
    // The experimental hand-over at submit on Redis (docs/redis.md), read by `server.rs`.
    "RUNYARD_REDIS_HANDOVER",
    // The Redis channel index switched off (docs/redis.md), read by `server.rs`.
    "RUNYARD_REDIS_CHANNEL_INDEX",
    // The job clients' report window (docs/hooks.md): a job's variable, which a server's
    // environment may hold for its local jobs.
    "RUNYARD_JOB_REPORT_WINDOW",
];

/// Prefixes of variables used by runyard's tests and scripts.
const OTHER_PREFIXES: &[&str] = &[
    "RUNYARD_TEST_",
    "RUNYARD_FUZZ_",
    "RUNYARD_DOCKERD_",
    "RUNYARD_IMAGE",
    "RUNYARD_BUSYBOX_",
    "RUNYARD_PROPTEST_",
    "RUNYARD_BIN",
    "RUNYARD_PYTHON",
    "RUNYARD_MEMORY_",
];

/// Kubernetes' service-link variables (`RUNYARD_SERVICE_HOST`, `RUNYARD_PORT_7070_TCP_ADDR`, and
/// the same for services named `runyard-*`).
fn service_link(name: &str) -> bool {
    name.ends_with("_SERVICE_HOST")
        || name.contains("_SERVICE_PORT")
        || name.ends_with("_PORT")
        || name.contains("_PORT_")
            && (name.contains("_TCP") || name.contains("_UDP") || name.contains("_SCTP"))
}

/// Every configuration key path as its variable name: `RUNYARD_WORKER__LEASE_TTL`.
pub fn config_vars() -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                let name = format!("{prefix}{}", k.to_uppercase());
                if v.is_object() {
                    walk(&format!("{name}__"), v, out);
                } else if k != "runners" {
                    out.push(name);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(Config::default()) {
        walk("RUNYARD_", &v, &mut out);
    }
    out.sort();
    out
}

/// The `RUNYARD_*` names among `names` that are neither configuration keys nor runyard's other
/// variables, each with the closest known name.
pub fn unknown_env(names: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let keys = config_vars();
    let mut out = Vec::new();
    for name in names {
        let upper = name.to_uppercase();
        if !upper.starts_with("RUNYARD_")
            || keys.contains(&upper)
            || OTHER_VARS.contains(&upper.as_str())
            || OTHER_PREFIXES.iter().any(|p| upper.starts_with(p))
            || service_link(&upper)
        {
            continue;
        }
        // A section's own name with a nested key the config parser checks (`RUNYARD_WORKER__X`).
        let top = upper
            .trim_start_matches("RUNYARD_")
            .split("__")
            .next()
            .unwrap_or("");
        if upper.contains("__")
            && keys
                .iter()
                .any(|k| k.starts_with(&format!("RUNYARD_{top}__")))
        {
            continue;
        }
        let closest = keys
            .iter()
            .map(String::as_str)
            .chain(OTHER_VARS.iter().copied())
            .min_by_key(|k| strsim::levenshtein(k, &upper))
            .unwrap_or("RUNYARD_LISTEN")
            .to_string();
        out.push((name, closest));
    }
    out
}

/// Starts the spawners of local jobs (runners/src/spawn.rs, `worker.spawners`) when a local
/// runner is configured, so that jobs are not forked from the whole server. Spawners that cannot
/// start are a warning: jobs are then forked by the server, as before.
///
/// # Safety
/// Call it from the main thread while it is the only thread, after the secrets left the
/// environment and the process was hardened (the spawner is a copy of the process as it is now).
pub unsafe fn start_spawner(config: &Config) {
    if !config.runners.iter().any(|r| r.kind == RunnerKind::Local) {
        return;
    }
    if let Err(e) = runyard_runners::spawn::start_early(config.worker.spawners) {
        tracing::warn!(error = %e, "cannot start the spawner processes: local jobs are forked by the server");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_overlaps_are_found_with_an_example() {
        for (a, b, t) in [
            ("report.*", "report.daily", Some("report.daily")),
            ("report.*", "*.daily", Some("report.daily")),
            ("*", "thumbnail", Some("thumbnail")),
            ("a?c", "ab*", Some("abc")),
            ("report.*", "thumb.*", None),
            ("a.*.b", "a.*.c", None),
            ("x", "y", None),
        ] {
            let got = glob_overlap(a, b);
            assert_eq!(got.as_deref(), t, "{a} / {b}");
            if let Some(t) = got {
                assert!(
                    crate::runner_set::glob_match(a, &t) && crate::runner_set::glob_match(b, &t)
                );
            }
        }
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_key() {
        let got = unknown_env(
            [
                "RUNYARD_LISTN",
                "RUNYARD_LISTEN",
                "RUNYARD_DATA_DIR",
                "RUNYARD_WORKER__LEASE_TTL",
                "RUNYARD_LOG",
                "RUNYARD_REDIS_HANDOVER",
                "RUNYARD_REDIS_CHANNEL_INDEX",
                "RUNYARD_JOB_REPORT_WINDOW",
                "RUNYARD_SERVICE_HOST",
                "RUNYARD_PORT_7070_TCP_ADDR",
                "RUNYARD_DATADIR",
                "PATH",
            ]
            .into_iter()
            .map(String::from),
        );
        assert_eq!(
            got,
            vec![
                ("RUNYARD_LISTN".to_string(), "RUNYARD_LISTEN".to_string()),
                (
                    "RUNYARD_DATADIR".to_string(),
                    "RUNYARD_DATA_DIR".to_string()
                ),
            ]
        );
        assert!(config_vars().contains(&"RUNYARD_WORKER__EXIT_GRACE".to_string()));
    }
}
