//! In-process word from the hook to the worker that a job reported its outcome (SUCCESS or
//! ERROR): the worker then gives the job's process `worker.exit_grace` to end by itself before it
//! stops it, and commits the reported outcome once the process has ended (see
//! [`crate::job::Reported`]).
//!
//! The registry is process-wide and keyed by job id (ids are unique, so several servers in one
//! process do not mix). When the hook is served by another process (an API node in front of
//! Redis), the worker finds the report by reading the job every `worker.lease_ttl / 3` instead.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

static WAITING: LazyLock<Mutex<HashMap<Uuid, Arc<Notify>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A running attempt's registration; unregisters when dropped.
pub struct Watch {
    id: Uuid,
    notify: Arc<Notify>,
}

impl Watch {
    /// Registers job `id` (one attempt at a time per process).
    pub fn new(id: Uuid) -> Self {
        let notify = Arc::new(Notify::new());
        WAITING.lock().insert(id, notify.clone());
        Self { id, notify }
    }

    /// Completes once [`reported`] was called for the job (also when it was called before).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = WAITING.lock();
        if w.get(&self.id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            w.remove(&self.id);
        }
    }
}

/// Tells the worker running job `id` in this process, if any, that the job reported its outcome.
pub fn reported(id: Uuid) {
    if let Some(n) = WAITING.lock().get(&id) {
        n.notify_one();
    }
}
