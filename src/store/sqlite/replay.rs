//! [`ReplayMemory`] for the embedded backend: a bounded in-process memory
//! ([`runyard_hooks::ReplayGuard`]). The data dir is locked by one process, so this process is
//! the only API that can accept a request signed for its jobs.

use async_trait::async_trait;
use runyard_hooks::ReplayStore;

use super::SqliteStore;
use crate::store::replay::{ReplayError, ReplayMemory};

#[async_trait]
impl ReplayMemory for SqliteStore {
    async fn remember_once(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError> {
        self.replay.check_and_remember(key, expires_at_ms, now_ms)
    }

    fn remembers_since_ms(&self) -> Option<i64> {
        Some(self.replay_since_ms)
    }
}
