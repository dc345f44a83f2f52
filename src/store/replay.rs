//! Replay memory: which signed requests (hook calls, upload URLs) were already accepted, so that
//! each is accepted once. A capability of the store like the others, so that the API never names
//! a backend: the embedded store remembers in its database (one API process per data dir, and
//! the memory outlives it: a restart does not forget), Redis for every API node sharing it
//! (`SET NX GET PX` of a nonce, `redis/replay.rs`).

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
}
