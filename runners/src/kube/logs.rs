//! Copying an attempt's pod logs into the job's logs without losing or repeating a line.
//!
//! The log of the `job` container is followed with `timestamps=true`: each line starts with its
//! RFC 3339 time (nanoseconds) and a space. The end of a stream is not the end of the container:
//! a connection can break (an API server restart, a proxy's idle timeout), so the stream is
//! reopened with `sinceTime` (whole seconds, rounded down) until the container has terminated
//! and a reopened stream brings nothing new. Lines already copied are skipped by their time (and,
//! for lines sharing one time, by how many of them were already copied).

use std::time::Duration;

use ::kube::api::{Api, ListParams, LogParams};
use futures::{AsyncBufReadExt, AsyncReadExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::monitor::pod_selector;
use super::CONTAINER;
use crate::local::MAX_LINE_BYTES;
use crate::{LogStream, SharedReporter};

/// Where a pod's log copy is.
#[derive(Debug, Clone, Default)]
pub(super) struct Cursor {
    /// The time of the last line copied.
    last: Option<Timestamp>,
    /// How many lines with that time were copied.
    at_last: usize,
}

impl Cursor {
    /// Starts after `t` (a restart: lines up to the last stored one's time were copied).
    pub fn after(t: Option<Timestamp>) -> Self {
        Self {
            last: t,
            at_last: usize::MAX,
        }
    }
}

/// Copies the logs of every pod of the Job `uid`, until the monitor says the Job is done and
/// each pod's log is drained (or the pod is gone).
pub(super) async fn copy_logs(
    pods: Api<Pod>,
    uid: String,
    reporter: SharedReporter,
    mut job_done: watch::Receiver<bool>,
    logs_done: watch::Sender<bool>,
    start: Cursor,
    poll: Duration,
) {
    let mut finished_pods: Vec<String> = Vec::new();
    loop {
        let done = *job_done.borrow_and_update();
        if let Ok(list) = pods
            .list(&ListParams::default().labels(&pod_selector(&uid)))
            .await
        {
            for pod in list.items {
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                if finished_pods.contains(&name) {
                    continue;
                }
                if copy_pod(
                    &pods,
                    &uid,
                    &name,
                    &reporter,
                    &mut job_done,
                    start.clone(),
                    poll,
                )
                .await
                {
                    finished_pods.push(name);
                }
            }
        }
        if done {
            break;
        }
        tokio::select! {
            _ = job_done.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    let _ = logs_done.send(true);
}

/// The state of the `job` container: (started, terminated); `None` when the pod is gone.
async fn container_state(pods: &Api<Pod>, uid: &str, name: &str) -> Option<(bool, bool)> {
    let pod = match pods
        .list(&ListParams::default().labels(&pod_selector(uid)))
        .await
    {
        Ok(l) => l
            .items
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))?,
        Err(_) => return Some((false, false)),
    };
    let status = pod.status.unwrap_or_default();
    let phase_done = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let state = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == CONTAINER)
        .and_then(|c| c.state);
    let running = state.as_ref().is_some_and(|s| s.running.is_some());
    let terminated = state.as_ref().is_some_and(|s| s.terminated.is_some()) || phase_done;
    Some((running || terminated, terminated))
}

/// Copies one pod's log to its end. Returns true when done with the pod (drained or gone),
/// false when it has not started and the Job is done (nothing to copy).
async fn copy_pod(
    pods: &Api<Pod>,
    uid: &str,
    name: &str,
    reporter: &SharedReporter,
    job_done: &mut watch::Receiver<bool>,
    mut cursor: Cursor,
    poll: Duration,
) -> bool {
    // A bound on reopenings, so a server that keeps cutting streams cannot hold the copy forever.
    for _ in 0..10_000 {
        let Some((started, terminated)) = container_state(pods, uid, name).await else {
            return true;
        };
        if !started {
            if *job_done.borrow() {
                return true;
            }
            tokio::select! {
                _ = job_done.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            follow: true,
            timestamps: true,
            // sinceTime has whole seconds; rounded down, the skip below drops what was copied.
            since_time: cursor
                .last
                .and_then(|t| Timestamp::from_second(t.as_second()).ok()),
            ..Default::default()
        };
        let copied = match pods.log_stream(name, &lp).await {
            Ok(stream) => forward(stream, name, reporter, &mut cursor).await,
            Err(::kube::Error::Api(s)) if s.code == 404 => return true,
            Err(e) => {
                tracing::debug!(pod = name, error = %e, "cannot read pod logs yet");
                0
            }
        };
        if terminated && copied == 0 {
            return true;
        }
        if !terminated && copied == 0 {
            tokio::time::sleep(poll.min(Duration::from_millis(500))).await;
        }
    }
    true
}

/// Reports the new lines of one stream; returns how many were new. Lines longer than
/// [`MAX_LINE_BYTES`] are split.
async fn forward(
    stream: impl futures::AsyncBufRead,
    pod: &str,
    reporter: &SharedReporter,
    cursor: &mut Cursor,
) -> usize {
    let mut stream = std::pin::pin!(stream);
    let mut skip_at_last = cursor.at_last;
    let mut new = 0;
    let mut buf = Vec::with_capacity(256);
    // The current line's text not yet reported (reported in pieces of MAX_LINE_BYTES).
    let mut pending: Vec<u8> = Vec::new();
    // Whether the current line is copied (decided by its timestamp), and whether it goes on.
    let mut copying = false;
    let mut continuing = false;
    let mut line_ts: Option<Timestamp> = None;
    let emit = |text: &[u8], new: &mut usize| {
        *new += 1;
        reporter.log(
            LogStream::Stdout,
            String::from_utf8_lossy(text).into_owned(),
        );
    };
    loop {
        buf.clear();
        // Room for the timestamp ahead of a line's first piece.
        let room = if continuing {
            MAX_LINE_BYTES
        } else {
            MAX_LINE_BYTES + 64
        };
        let n = match (&mut stream)
            .take(room as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(pod, error = %e, "log stream broke");
                0
            }
        };
        if n == 0 {
            // A line cut by the end of the stream is not reported: the reopened stream brings
            // it whole (it is after the cursor).
            return new;
        }
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if continuing {
            pending.extend_from_slice(&buf);
        } else {
            let (ts, rest) = match buf.iter().position(|b| *b == b' ') {
                Some(i) => (
                    std::str::from_utf8(&buf[..i])
                        .ok()
                        .and_then(|t| t.parse::<Timestamp>().ok()),
                    &buf[i + 1..],
                ),
                None => (
                    std::str::from_utf8(&buf)
                        .ok()
                        .and_then(|t| t.parse::<Timestamp>().ok()),
                    &buf[buf.len()..],
                ),
            };
            copying = match (ts, cursor.last) {
                (Some(t), Some(l)) if t < l => false,
                (Some(t), Some(l)) if t == l && skip_at_last > 0 => {
                    skip_at_last -= 1;
                    false
                }
                (Some(t), Some(l)) if t > l => {
                    skip_at_last = 0;
                    true
                }
                // The same time as the last copied line, past those already copied; or the
                // first line; or no timestamp (not expected with timestamps=true).
                _ => true,
            };
            line_ts = ts;
            pending.clear();
            pending.extend_from_slice(if ts.is_some() { rest } else { &buf });
        }
        continuing = !complete;
        if copying {
            while pending.len() >= MAX_LINE_BYTES && (continuing || pending.len() > MAX_LINE_BYTES)
            {
                let rest = pending.split_off(MAX_LINE_BYTES);
                emit(&pending, &mut new);
                pending = rest;
            }
            if complete {
                emit(&pending, &mut new);
                pending.clear();
                // Only a whole line moves the cursor: a line cut by a broken stream comes again.
                if let Some(t) = line_ts {
                    if cursor.last == Some(t) {
                        cursor.at_last = cursor.at_last.saturating_add(1);
                    } else {
                        cursor.last = Some(t);
                        cursor.at_last = 1;
                    }
                }
            }
        }
    }
}
