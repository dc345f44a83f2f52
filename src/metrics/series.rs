//! Handles of the series a job's life and a request count, kept once their labels were built:
//! prometheus-client's counters and histograms share their value with their clones, so a handle
//! counts into its family's series (what `/metrics` shows is the same) without building a label
//! vector, allocating its strings and hashing them on every job and request.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use std::time::Duration;

use super::CommandKind;
use super::{Labels, Metrics, MAX_TYPES, OTHER_TYPE};
use crate::job::{Job, JobStatus};

/// The handles of one job type's series that a job's life counts (see [`Metrics::with_type`]):
/// prometheus-client's counters and histograms share their value with their clones, so a
/// handle counts into the family's series without building its labels again.
#[derive(Default)]
pub(super) struct TypeSeries {
    pub(super) submitted: Option<Counter>,
    pub(super) queue_wait: Option<Histogram>,
    pub(super) run_time: Option<Histogram>,
    /// `outcomes` by status, in [`JobStatus::ALL`]'s order.
    pub(super) outcomes: [Option<Counter>; JobStatus::ALL.len()],
}

/// A request's series of one route: its method, its status and the counter.
pub(super) type HttpSeries = (&'static str, u16, Counter);

/// Where `status` stands in [`JobStatus::ALL`] (the arrays of handles by status follow it).
fn status_index(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

/// The labels `type=label`.
pub(super) fn type_labels(label: &str) -> Labels {
    vec![("type", label.to_string())]
}

/// The series of `family` labelled `type=label`, through the handle in `slot`.
pub(super) fn cached<'a, M: Clone, C: MetricConstructor<M>>(
    slot: &'a mut Option<M>,
    family: &Family<Labels, M, C>,
    label: &str,
) -> &'a M {
    slot.get_or_insert_with(|| family.get_or_create(&type_labels(label)).clone())
}

impl Metrics {
    /// Runs `f` with the label value of `job_type` (itself, or [`OTHER_TYPE`] once
    /// [`MAX_TYPES`] types were seen) and the handles cached for it. `f` runs under the types'
    /// lock, which is not reentrant: it must not call back into `with_type` (or `type_label`).
    pub(super) fn with_type<R>(
        &self,
        job_type: &str,
        f: impl FnOnce(&str, &mut TypeSeries) -> R,
    ) -> R {
        let mut seen = self.types.lock();
        if let Some(s) = seen.get_mut(job_type) {
            return f(job_type, s);
        }
        if seen.len() < MAX_TYPES {
            let s = seen.entry(job_type.to_string()).or_default();
            return f(job_type, s);
        }
        drop(seen);
        f(OTHER_TYPE, &mut self.other.lock())
    }

    pub(super) fn transition(&self, to: JobStatus) {
        self.by_status[status_index(to)]
            .get_or_init(|| {
                self.transitions
                    .get_or_create(&vec![("status", to.as_str().to_string())])
                    .clone()
            })
            .inc();
    }

    /// A store operation `op` took `took`; `failed` when the store was unavailable or erred.
    pub fn store_op(&self, op: &'static str, took: Duration, failed: bool) {
        self.store_ops
            .lock()
            .entry(op)
            .or_insert_with(|| {
                self.store_seconds
                    .get_or_create(&vec![("op", op.to_string())])
                    .clone()
            })
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors
                .get_or_create(&vec![("op", op.to_string())])
                .inc();
        }
    }

    /// An HTTP request this process answered.
    pub fn http_request(&self, method: &'static str, route: &str, status: u16) {
        let mut series = self.http_series.lock();
        // Looked up by borrowed keys: a series counted before costs no allocation.
        if let Some((_, _, c)) = series
            .get(route)
            .and_then(|v| v.iter().find(|(m, s, _)| *m == method && *s == status))
        {
            c.inc();
            return;
        }
        let c = self
            .http_requests
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .clone();
        c.inc();
        series
            .entry(route.to_string())
            .or_default()
            .push((method, status, c));
    }

    /// A command this process committed; `job` as it is after it.
    pub fn job_changed(&self, cmd: &CommandKind, job: &Job) {
        if cmd.changes_status() {
            self.transition(job.status);
        }
        let ended = matches!(cmd, CommandKind::Finish | CommandKind::HookFinal);
        let final_by_this = ended || matches!(cmd, CommandKind::Cancel | CommandKind::LeaseExpired);
        let outcome = final_by_this && job.status.is_terminal();
        if !ended && !outcome && !cmd.expired_lease() {
            return;
        }
        self.with_type(&job.job_type, |label, s| {
            if ended {
                if let Some(r) = job.runs.last() {
                    if let Some(end) = r.ended_at {
                        let start = r.started_at.unwrap_or(r.claimed_at);
                        let secs = end.saturating_sub(start).max(0) as f64 / 1e6;
                        cached(&mut s.run_time, &self.run_time, label).observe(secs);
                    }
                }
                if job.status == JobStatus::Scheduled {
                    self.retries.get_or_create(&type_labels(label)).inc();
                }
            }
            if cmd.expired_lease() {
                self.lease_expirations
                    .get_or_create(&type_labels(label))
                    .inc();
            }
            if outcome {
                s.outcomes[status_index(job.status)]
                    .get_or_insert_with(|| {
                        let mut l = type_labels(label);
                        l.push(("outcome", job.status.as_str().to_ascii_lowercase()));
                        self.outcomes.get_or_create(&l).clone()
                    })
                    .inc();
            }
        });
    }
}
