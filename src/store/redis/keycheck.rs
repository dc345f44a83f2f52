//! The check value of the deployment's master key: `P:master_key_check`, set by the first node
//! to start (`SET NX GET`: the first one wins, the others compare with it). `crate::master_key`
//! makes and judges it; the store keeps it, and a running node keeps it there
//! ([`RedisStore::keep_key_check`]).
//!
//! Redis can lose the value while nodes run: restarted without persistence, `FLUSHALL`, evicted,
//! deleted by hand. The next node to start would then decide the key, even another one (probe
//! s48). So every running node looks at it again every [`KEY_CHECK_EVERY`], and at once when its
//! connection comes back (a reconnect, the notice subscription renewed): missing, it records its
//! own again (`SET NX`: the first writer still wins); another key's (a node with another key
//! started first after the loss), or one this build cannot read, and the node refuses the
//! store's work ([`RedisStore::exec`] answers `Unavailable` with the reason, so do `health` and
//! readiness) until the value is its key's again or gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use crate::store::Result;

/// How often a running node looks at the check value.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long one look may take (no retries: an unreachable Redis is said by the rest).
const KEY_CHECK_TRY: Duration = Duration::from_secs(2);

/// How a running node judges the check value it finds: `None` when it is its own key's, else
/// what it says (never the key nor a check value).
pub type KeyJudge = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A running node's watch over the check value: whether it refuses the store's work and why,
/// and what wakes it early.
pub(super) struct KeyWatch {
    refused: AtomicBool,
    why: parking_lot::Mutex<Option<String>>,
    /// Notified when the connection comes back (`RedisStore::mark`, the notice subscriber).
    pub(super) wake: Arc<Notify>,
    stop: CancellationToken,
}

impl KeyWatch {
    pub(super) fn new(wake: Arc<Notify>, stop: CancellationToken) -> Self {
        Self {
            refused: AtomicBool::new(false),
            why: parking_lot::Mutex::new(None),
            wake,
            stop,
        }
    }

    /// Why this node refuses the store's work, if it does (one atomic load when it does not).
    pub(super) fn refused(&self) -> Option<String> {
        if !self.refused.load(Ordering::Acquire) {
            return None;
        }
        self.why.lock().clone()
    }

    fn set(&self, why: Option<String>) {
        let refusing = why.is_some();
        *self.why.lock() = why;
        self.refused.store(refusing, Ordering::Release);
    }
}

/// `SET key check NX GET`: the value kept, `None` when `check` was recorded now. A value of
/// another Redis type than a string (`WRONGTYPE`) is answered as an empty value, which no build
/// writes: it is judged as a value this build cannot read.
fn set_nx_get(key: &str, check: &str) -> ::redis::Cmd {
    ::redis::cmd("SET")
        .arg(key)
        .arg(check)
        .arg("NX")
        .arg("GET")
        .clone()
}

fn not_a_string(r: ::redis::RedisResult<Option<String>>) -> ::redis::RedisResult<Option<String>> {
    match r {
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(Some(String::new())),
        r => r,
    }
}

impl RedisStore {
    /// Records `check` unless the deployment keeps a check value already; returns the one it
    /// keeps (empty when the key holds another type than a string) and whether that was
    /// recorded now. A `SET` sent again after its reply was lost finds its own value, the same
    /// as `check`.
    pub async fn remember_key_check(&self, check: &str) -> Result<(String, bool)> {
        let key = self.key("master_key_check");
        let found: Option<String> = self
            .exec(true, |mut c| {
                let cmd = set_nx_get(&key, check);
                async move { not_a_string(cmd.query_async(&mut c).await) }
            })
            .await?;
        Ok(match found {
            Some(kept) => (kept, false),
            None => (check.to_string(), true),
        })
    }

    /// From now on, looks at the check value every [`KEY_CHECK_EVERY`] (and when the
    /// connection comes back) until the store is dropped: records `ours` again when it is
    /// missing; refuses the store's work while `judge` finds another (see the module docs).
    pub fn keep_key_check(self: &Arc<Self>, ours: String, judge: KeyJudge) {
        let me = Arc::downgrade(self);
        let (wake, stop) = (self.key_watch.wake.clone(), self.key_watch.stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(KEY_CHECK_EVERY) => {}
                    () = wake.notified() => {}
                    () = stop.cancelled() => return,
                }
                if !look(&me, &ours, &judge).await {
                    return;
                }
            }
        });
    }
}

/// One look at the check value; false once the store is gone.
async fn look(me: &Weak<RedisStore>, ours: &str, judge: &KeyJudge) -> bool {
    let Some(s) = me.upgrade() else { return false };
    let cmd = set_nx_get(&s.key("master_key_check"), ours);
    let mut c = s.conn.get();
    let found = tokio::time::timeout(KEY_CHECK_TRY, cmd.query_async(&mut c)).await;
    let kept = match found.map(not_a_string) {
        Ok(Ok(kept)) => kept,
        // Unreachable or refused: said by the store's other calls; looked at again later.
        Ok(Err(e)) => {
            s.conn.heal(&e).await;
            return true;
        }
        Err(_) => return true,
    };
    let was = s.key_watch.refused();
    let verdict = kept.as_deref().and_then(judge);
    match (&kept, &verdict) {
        (None, _) => tracing::warn!(
            "the store's master key check value was missing (Redis lost its data: restarted \
             without persistence, flushed, or the key deleted or evicted): this node recorded it \
             again, so a node with another key is refused from now on (one that started in \
             between recorded its own first, and this node would have said so: \
             docs/security.md)"
        ),
        (Some(_), Some(why)) => {
            if crate::store::log_quiet::loud("redis key check", "refused") {
                tracing::error!("{why}");
            } else {
                tracing::debug!("{why}");
            }
        }
        (Some(_), None) => {}
    }
    if was.is_some() && verdict.is_none() {
        tracing::info!(
            "the store's master key check value is this node's key's again: serving again"
        );
    }
    s.key_watch.set(verdict);
    true
}
