//! [`ReplayMemory`] for the embedded backend: table `replay` (the SHA-256 of each accepted
//! request's replay key, until the request expires), so that a request the process before a
//! crash or restart accepted is refused after it too (a job in a container or a pod keeps its
//! attempt, and with it its secret, across a restart; a request it signed with its clock ahead of
//! the server's is still inside the time window then). In front of it, the process's own bounded
//! memory ([`runyard_hooks::ReplayGuard`]) answers a replay within the process without a write,
//! and makes two concurrent calls with one key reach the table one at a time. Expired rows go
//! with retention's pass (`retention.rs`).

use async_trait::async_trait;
use runyard_hooks::ReplayStore;
use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{exec, SqliteStore};
use crate::store::replay::{ReplayError, ReplayMemory};

/// The table, created at open.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS replay (
    key BLOB PRIMARY KEY,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replay_expires ON replay(expires);
"#;

/// Deletes the rows of requests expired before `now_ms` (at most `limit`): on the writer's
/// connection, in retention's transaction.
pub(super) fn forget_expired(
    c: &rusqlite::Connection,
    now_ms: i64,
    limit: i64,
) -> crate::store::Result<usize> {
    exec(
        c,
        "DELETE FROM replay WHERE key IN \
         (SELECT key FROM replay WHERE expires < ?1 ORDER BY expires LIMIT ?2)",
        params![now_ms, limit],
    )
}

#[async_trait]
impl ReplayMemory for SqliteStore {
    async fn remember_once(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError> {
        if !self.replay.check_and_remember(key, expires_at_ms, now_ms)? {
            return Ok(false);
        }
        let digest = Sha256::digest(key.as_bytes()).to_vec();
        // A row of an expired request is taken over; a live one means the process before this
        // one accepted it.
        let recorded = self
            .write(move |ctx| {
                let n = exec(
                    ctx.conn,
                    "INSERT INTO replay (key, expires) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET expires = excluded.expires \
                 WHERE replay.expires <= ?3",
                    params![digest, expires_at_ms, now_ms],
                )?;
                Ok(n == 1)
            })
            .await;
        match recorded {
            Ok(first) => Ok(first),
            // Not recorded (a full disk): the request is refused (503) and may be sent again,
            // which must not be taken for a replay.
            Err(e) => {
                self.replay.forget(key);
                Err(ReplayError::Unavailable(e.to_string()))
            }
        }
    }
}
