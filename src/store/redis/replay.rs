//! [`ReplayMemory`] for Redis: `P:replay:{sha256 of the key}` set with `SET NX PX` until the
//! request expires, so every API node sharing the Redis refuses a request any of them accepted.
//!
//! The value is a nonce drawn for this acceptance, and the `SET` also answers the value it found
//! (`NX GET`, Redis 7.0): a `SET` sent again after its reply was lost (the connection dropped
//! after Redis ran it) finds its own nonce and still accepts, where a constant value could not
//! tell that from another node's acceptance and refused a fresh request as a replay.

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
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        // Nil: stored now; a value: the key was there (and is left as it was).
        let found: Option<String> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(&nonce)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(ttl)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await
            .map_err(|e| ReplayError::Unavailable(e.to_string()))?;
        Ok(accepted(found.as_deref(), &nonce))
    }
}

/// Whether the request is accepted: nothing was stored under its key, or what is stored is this
/// acceptance's own nonce (its `SET` ran, its reply was lost, and it was sent again).
fn accepted(found: Option<&str>, nonce: &str) -> bool {
    found.is_none_or(|v| v == nonce)
}

#[cfg(test)]
mod tests {
    use super::accepted;

    #[test]
    fn only_another_acceptances_value_is_a_replay() {
        assert!(accepted(None, "n1"), "stored now");
        assert!(accepted(Some("n1"), "n1"), "our own write, sent again");
        assert!(!accepted(Some("n2"), "n1"), "another acceptance");
        assert!(!accepted(Some("1"), "n1"), "an older build's value");
    }
}
