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
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::errors::bounded;
use super::monitor::pod_selector;
use super::CONTAINER;
use crate::lines::{self, LineSplitter, Piece};
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
/// each pod's log is drained (or the pod is gone). Each request but a log stream's body is
/// bounded by `limit` (`kube.api_timeout`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_logs(
    pods: Api<Pod>,
    uid: String,
    reporter: SharedReporter,
    mut job_done: watch::Receiver<bool>,
    logs_done: watch::Sender<bool>,
    start: Cursor,
    poll: Duration,
    limit: Duration,
) {
    let mut finished_pods: Vec<String> = Vec::new();
    loop {
        let done = *job_done.borrow_and_update();
        let lp = ListParams::default().labels(&pod_selector(&uid));
        if let Ok(list) = bounded(limit, pods.list(&lp)).await {
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
                    (poll, limit),
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
async fn container_state(
    pods: &Api<Pod>,
    uid: &str,
    name: &str,
    limit: Duration,
) -> Option<(bool, bool)> {
    let lp = ListParams::default().labels(&pod_selector(uid));
    let pod = match bounded(limit, pods.list(&lp)).await {
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
/// false when it has not started and the Job is done (nothing to copy). `poll` is how often
/// the pod is read, `limit` the bound of a request.
async fn copy_pod(
    pods: &Api<Pod>,
    uid: &str,
    name: &str,
    reporter: &SharedReporter,
    job_done: &mut watch::Receiver<bool>,
    mut cursor: Cursor,
    (poll, limit): (Duration, Duration),
) -> bool {
    // A bound on reopenings, so a server that keeps cutting streams cannot hold the copy forever.
    for _ in 0..10_000 {
        let Some((started, terminated)) = container_state(pods, uid, name, limit).await else {
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
        // The stream's opening is bounded; its body, which follows the container, is not.
        let copied = match bounded(limit, pods.log_stream(name, &lp)).await {
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
/// [`MAX_LINE_BYTES`](crate::lines::MAX_LINE_BYTES) are split (by the one line forwarder, [`crate::lines`]).
async fn forward(
    stream: impl futures::AsyncBufRead,
    pod: &str,
    reporter: &SharedReporter,
    cursor: &mut Cursor,
) -> usize {
    let mut stream = std::pin::pin!(stream);
    // Each line's timestamp is its head: the pieces' size does not count it.
    let mut split = LineSplitter::with_heads();
    let mut copy = Copy {
        skip_at_last: cursor.at_last,
        new: 0,
        copying: false,
        line_ts: None,
    };
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(pod, error = %e, "log stream broke");
                0
            }
        };
        if n == 0 {
            // A line cut by the end of the stream is not finished: the reopened stream brings
            // it whole (it is after the cursor).
            return copy.new;
        }
        split.push(&buf[..n], &mut |p| copy.piece(p, reporter, cursor));
    }
}

/// What [`forward`] knows about the line it copies.
struct Copy {
    /// Lines at the cursor's time still to skip (already copied).
    skip_at_last: usize,
    /// Pieces reported.
    new: usize,
    /// Whether the current line is copied (decided by its timestamp).
    copying: bool,
    /// The current line's timestamp.
    line_ts: Option<Timestamp>,
}

impl Copy {
    fn piece(&mut self, p: Piece<'_>, reporter: &SharedReporter, cursor: &mut Cursor) {
        let mut text = std::borrow::Cow::Borrowed(p.text);
        if p.first {
            let head = p.head.unwrap_or_default();
            let ts = std::str::from_utf8(head.strip_suffix(b" ").unwrap_or(head))
                .ok()
                .and_then(|t| t.parse::<Timestamp>().ok());
            self.copying = match (ts, cursor.last) {
                (Some(t), Some(l)) if t < l => false,
                (Some(t), Some(l)) if t == l && self.skip_at_last > 0 => {
                    self.skip_at_last -= 1;
                    false
                }
                (Some(t), Some(l)) if t > l => {
                    self.skip_at_last = 0;
                    true
                }
                // The same time as the last copied line, past those already copied; or the
                // first line; or no timestamp (not expected with timestamps=true).
                _ => true,
            };
            self.line_ts = ts;
            if ts.is_none() && !head.is_empty() {
                text = std::borrow::Cow::Owned([head, p.text].concat());
            }
        }
        if !self.copying {
            return;
        }
        self.new += 1;
        lines::report(reporter.as_ref(), LogStream::Stdout, &text);
        // Only a whole line moves the cursor: a line cut by a broken stream comes again.
        if let (true, Some(t)) = (p.last, self.line_ts) {
            if cursor.last == Some(t) {
                cursor.at_last = cursor.at_last.saturating_add(1);
            } else {
                cursor.last = Some(t);
                cursor.at_last = 1;
            }
        }
    }
}
