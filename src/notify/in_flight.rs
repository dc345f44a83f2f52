//! The attempts in flight per endpoint in this process, for the claim's cap per endpoint
//! (`notify.per_endpoint`, [`ClaimLimits`]): one slow or dead receiver holds at most its cap of
//! the `notify.concurrency` slots, and the deliveries of every other receiver are claimed past its
//! backlog.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::deliveries::{endpoint_part, ClaimLimits};

/// Attempts in flight per endpoint ([`endpoint_part`] of the URL).
#[derive(Clone)]
pub(super) struct InFlight {
    per_endpoint: usize,
    busy: Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub(super) fn new(per_endpoint: usize) -> Self {
        Self {
            per_endpoint,
            busy: Arc::default(),
        }
    }

    /// What the next claim may take.
    pub(super) fn limits(&self) -> ClaimLimits {
        ClaimLimits {
            per_endpoint: self.per_endpoint,
            busy: self.busy.lock().clone(),
        }
    }

    /// Whether some endpoint is at its cap (its due deliveries wait for one of its attempts to
    /// end, not for time to pass).
    pub(super) fn any_full(&self) -> bool {
        self.busy.lock().values().any(|n| *n >= self.per_endpoint)
    }

    /// Counts an attempt at `url` until the guard drops.
    pub(super) fn start(&self, url: &str) -> Attempting {
        let endpoint = endpoint_part(url).to_string();
        *self.busy.lock().entry(endpoint.clone()).or_default() += 1;
        Attempting {
            busy: self.busy.clone(),
            endpoint,
        }
    }
}

/// One attempt in flight; dropping it (the attempt ended, or its task was aborted) uncounts it.
pub(super) struct Attempting {
    busy: Arc<Mutex<HashMap<String, usize>>>,
    endpoint: String,
}

impl Drop for Attempting {
    fn drop(&mut self) {
        let mut busy = self.busy.lock();
        if let Some(n) = busy.get_mut(&self.endpoint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&self.endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_per_endpoint_until_they_end() {
        let f = InFlight::new(2);
        let a = f.start("https://h.example/x?job=1");
        let b = f.start("https://h.example/x?job=2");
        let c = f.start("https://h.example/y");
        assert!(f.any_full());
        let l = f.limits();
        assert_eq!(l.full(), vec!["https://h.example/x"]);
        assert_eq!(l.busy.get("https://h.example/y"), Some(&1));
        drop(a);
        assert!(!f.any_full());
        drop((b, c));
        assert!(f.limits().busy.is_empty(), "ended endpoints are forgotten");
    }
}
