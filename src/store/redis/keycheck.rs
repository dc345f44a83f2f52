//! The check value of the deployment's master key: `P:master_key_check`, set by the first node
//! to start (`SET NX GET`: the first one wins, the others compare with it). `crate::master_key`
//! makes and compares it; the store only keeps it.

use super::RedisStore;
use crate::store::Result;

impl RedisStore {
    /// Records `check` unless the deployment keeps a check value already; returns the one it
    /// keeps and whether that was recorded now. A `SET` sent again after its reply was lost finds
    /// its own value, the same as `check`.
    pub async fn remember_key_check(&self, check: &str) -> Result<(String, bool)> {
        let key = self.key("master_key_check");
        let found: Option<String> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(check)
                    .arg("NX")
                    .arg("GET")
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(match found {
            Some(kept) => (kept, false),
            None => (check.to_string(), true),
        })
    }
}
