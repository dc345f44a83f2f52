//! Prometheus metrics: counters kept in atomics, rendered as text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::job::JobStatus;
use crate::store::{Notice, Store};

/// Process-local counters.
#[derive(Default)]
pub struct Metrics {
    transitions: [AtomicU64; 9],
    lagged: AtomicU64,
    http_panics: AtomicU64,
}

impl Metrics {
    /// Counts status changes committed by `store` until `stop`.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut rx = store.subscribe();
        loop {
            tokio::select! {
                n = rx.recv() => match n {
                    Ok(Notice::Changed { status, .. }) => {
                        let i = JobStatus::ALL.iter().position(|s| *s == status).unwrap_or(0);
                        self.transitions[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        self.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => return,
                },
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Counts a request handler that panicked (answered 500 `internal`).
    pub fn count_http_panic(&self) {
        self.http_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# HELP runyard_job_transitions_total Job status changes committed by this process's store.\n\
             # TYPE runyard_job_transitions_total counter\n",
        );
        for (i, st) in JobStatus::ALL.iter().enumerate() {
            s.push_str(&format!(
                "runyard_job_transitions_total{{status=\"{}\"}} {}\n",
                st.as_str(),
                self.transitions[i].load(Ordering::Relaxed)
            ));
        }
        s.push_str(
            "# HELP runyard_notices_lagged_total Store notices this process's metrics missed.\n\
             # TYPE runyard_notices_lagged_total counter\n",
        );
        s.push_str(&format!(
            "runyard_notices_lagged_total {}\n",
            self.lagged.load(Ordering::Relaxed)
        ));
        let (fires, misfires, skipped) = crate::schedule::counters::snapshot();
        s.push_str(&format!(
            "# HELP runyard_schedule_fires_total Jobs submitted by cron schedule fires decided in this process.\n\
             # TYPE runyard_schedule_fires_total counter\n\
             runyard_schedule_fires_total {fires}\n\
             # HELP runyard_schedule_misfires_total Schedule fire times missed (misfire policy, catch-up window).\n\
             # TYPE runyard_schedule_misfires_total counter\n\
             runyard_schedule_misfires_total {misfires}\n\
             # HELP runyard_schedule_skipped_overlaps_total Schedule fires skipped while the previous job was active.\n\
             # TYPE runyard_schedule_skipped_overlaps_total counter\n\
             runyard_schedule_skipped_overlaps_total {skipped}\n"
        ));
        s.push_str(
            "# HELP runyard_http_panics_total Request handlers that panicked (answered 500).\n\
             # TYPE runyard_http_panics_total counter\n",
        );
        s.push_str(&format!(
            "runyard_http_panics_total {}\n",
            self.http_panics.load(Ordering::Relaxed)
        ));
        s
    }
}
