//! Replay memory: which signed requests (hook calls, upload URLs) were already accepted, so that
//! each is accepted once. A capability of the store like the others, so that the API never names
//! a backend: the embedded store remembers in this process (one API process per data dir), Redis
//! remembers for every API node sharing it (`SET NX PX`).

use async_trait::async_trait;

pub use runyard_hooks::ReplayError;

/// Remembering accepted requests until they expire.
#[async_trait]
pub trait ReplayMemory: Send + Sync {
    /// Remembers `key` until `expires_at_ms` (ms since the epoch): true the first time, false
    /// while it is remembered (a replay). Atomic: two concurrent calls with one key never both
    /// answer true. An error remembers nothing; the request must then be refused (HTTP 503).
    async fn remember_once(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError>;

    /// Since when (ms since the epoch) this memory holds every request it accepted: `None` when
    /// it outlives the process (Redis), the process's start when it does not (the embedded
    /// store: a request signed before it may have been accepted by the process before a crash,
    /// so the API refuses it, 503, and the job signs it again).
    fn remembers_since_ms(&self) -> Option<i64> {
        None
    }
}
