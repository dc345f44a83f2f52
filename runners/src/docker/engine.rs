//! Engine calls (inspect, list by label, remove) and the small parsers of engine values.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;

use super::*;

/// Inspects a container; `None` when it does not exist.
pub(super) async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<Option<ContainerInspectResponse>, RunnerError> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) => Ok(Some(c)),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(RunnerError::Backend(format!(
            "cannot inspect container {}: {}",
            short(id),
            engine_message(&e)
        ))),
    }
}

/// The ids of the containers of a job (of one attempt, when given), running or not; with a
/// `deployment` (not empty), not those labelled with another deployment's fingerprint (an
/// original store's and its copy's, which share job ids: `JobSpec::deployment`).
pub(super) async fn find_containers(
    docker: &Docker,
    job_id: &str,
    attempt: Option<u64>,
    deployment: &str,
) -> Result<Vec<String>, DockerError> {
    let mut labels = vec![format!("{LABEL_JOB_ID}={job_id}")];
    if let Some(a) = attempt {
        labels.push(format!("{LABEL_ATTEMPT}={a}"));
    }
    let opts = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), labels)])),
        ..Default::default()
    };
    let list = docker.list_containers(Some(opts)).await?;
    let ours = |labels: &Option<HashMap<String, String>>| {
        let theirs = labels.as_ref().and_then(|l| l.get(LABEL_DEPLOYMENT));
        deployment.is_empty() || theirs.is_none_or(|d| d == deployment)
    };
    Ok(list
        .into_iter()
        .filter(|c| ours(&c.labels))
        .filter_map(|c| c.id)
        .collect())
}

/// Force-removes a container and its anonymous volumes; a missing container is fine. A failure
/// is only logged: the worker's sweep removes the container later (`Runner::leftovers`).
pub(super) async fn remove(docker: &Docker, id: &str) {
    if let Err(e) = try_remove(docker, id).await {
        tracing::warn!(container = %short(id), error = %e, "cannot remove the container");
    }
}

/// Force-removes a container and its anonymous volumes (three tries); a missing container is
/// fine. The engine's message when it cannot.
pub(super) async fn try_remove(docker: &Docker, id: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    for attempt in 0..3 {
        match docker.remove_container(id, Some(opts.clone())).await {
            Ok(()) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            // 409: removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) if attempt > 0 => return Ok(()),
            Err(e) => {
                if attempt == 2 {
                    return Err(engine_message(&e));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(())
}

/// Every container of runyard's labels that this runner (`runner`: its name) of this deployment
/// created, running or not, as sweep items: one list call. Containers without a readable attempt label are left
/// out (not runyard's to remove).
pub(super) async fn leftovers(
    docker: &Docker,
    runner: &str,
    deployment: &str,
) -> Result<Vec<Leftover>, DockerError> {
    let labels = vec![
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_RUNNER}={runner}"),
        format!("{LABEL_DEPLOYMENT}={deployment}"),
        LABEL_JOB_ID.to_string(),
    ];
    let opts = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), labels)])),
        ..Default::default()
    };
    let list = docker.list_containers(Some(opts)).await?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            Some(Leftover {
                job_id: labels.get(LABEL_JOB_ID)?.clone(),
                attempt: labels.get(LABEL_ATTEMPT)?.parse().ok()?,
                name: c.id?,
            })
        })
        .collect())
}

/// The container name of an attempt.
pub fn container_name(job_id: &str, attempt: u32) -> String {
    format!("runyard-{job_id}-{attempt}")
}

pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Whether an engine error says the image is not present locally.
pub(super) fn is_missing_image(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, message }
        if message.to_ascii_lowercase().contains("no such image"))
}

/// A short message for an engine error (the engine's own message when it answered).
pub(super) fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Splits `repo[:tag]` / `repo@digest` for a pull; no tag means `latest`.
pub(super) fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(c) => (&image[..slash + c], Some(&image[slash + c + 1..])),
        None => (image, Some("latest")),
    }
}

/// Checks the scheme of an engine address.
pub(super) fn check_host(host: &str) -> Result<(), String> {
    let ok = ["unix://", "tcp://", "http://"]
        .iter()
        .any(|p| host.starts_with(p) && host.len() > p.len());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "docker host `{host}` is not supported: use unix:///path/to/docker.sock, tcp://HOST:PORT \
             or http://HOST:PORT"
        ))
    }
}

/// Parses a memory size like Docker's CLI: a number with an optional binary unit `b`, `k`, `m`,
/// `g`, `t` (optionally followed by `b` / `ib`), e.g. `512m`, `2g`, `1.5GiB`, `1048576`.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let unit = unit.trim();
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("memory `{s}`: unknown unit (use b, k, m, g or t)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("memory `{s}` is not a size like 512m or 2g"))?;
    let bytes = (n * mult).round();
    // Docker refuses limits under 6 MiB.
    if !(6.0 * 1024.0 * 1024.0..=i64::MAX as f64).contains(&bytes) {
        return Err(format!("memory `{s}`: must be at least 6m"));
    }
    Ok(bytes as i64)
}

/// A CPU count as the engine's `NanoCpus`.
pub fn nano_cpus(cpus: f64) -> Result<i64, String> {
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1_000_000.0 {
        return Err(format!("cpus `{cpus}` must be a positive number"));
    }
    Ok((cpus * 1e9).round() as i64)
}
