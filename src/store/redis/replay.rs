//! [`ReplayMemory`] for Redis: `P:replay:{sha256 of the key}` set with `SET NX PX` until the
//! request expires, so every API node sharing the Redis refuses a request any of them accepted.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::RedisStore;
use crate::store::replay::{ReplayError, ReplayMemory};

#[async_trait]
impl ReplayMemory for RedisStore {
    async fn remember_once(
        &self,
        replay_key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError> {
        let digest = hex::encode(Sha256::digest(replay_key.as_bytes()));
        let key = self.keyed("replay:", digest);
        let ttl = (expires_at_ms - now_ms).max(1);
        let set: Option<String> = self
            .exec(true, |mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async(&mut c)
                        .await
                }
            })
            .await
            .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(set.is_some())
    }
}
