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

/// Deletes the key when it holds this acceptance's nonce (a refused request's own write).
const FORGET: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// How long the take-back of a failed acceptance may wait.
const FORGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How much longer than the request's window a replay key lives (ms).
const TTL_SLACK_MS: i64 = 2_000;

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
        // `now_ms` is the store's clock (Redis's, as this node carries it), which Redis's expiry
        // also goes by; the slack covers the carried clock trailing Redis's by a little, so the
        // key outlives every node's window (a key gone a moment early let a re-send in).
        let ttl = (expires_at_ms - now_ms).max(1) + TTL_SLACK_MS;
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        // Nil: stored now; a value: the key was there (and is left as it was).
        let found: crate::store::Result<Option<String>> = self
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
            .await;
        match found {
            Ok(found) => Ok(accepted(found.as_deref(), &nonce)),
            Err(e) => {
                // A try whose reply was lost may have stored the key before a later one failed:
                // taken back (if still this acceptance's), so that an error means nothing is
                // remembered, as on the embedded store. Best effort: one try, and a request
                // cut at `api.request_timeout` before it gets here leaves its key.
                let forget = ::redis::cmd("EVAL")
                    .arg(FORGET)
                    .arg(1)
                    .arg(&key)
                    .arg(&nonce)
                    .clone();
                let _ = tokio::time::timeout(
                    FORGET_WAIT,
                    self.exec(false, |mut c| {
                        let cmd = forget.clone();
                        async move { cmd.query_async::<i64>(&mut c).await }
                    }),
                )
                .await;
                Err(ReplayError::Unavailable(e.to_string()))
            }
        }
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
