//! Replay protection: remembering which signed requests were already accepted.
//!
//! A signed hook request is identified by the triple (job id, `X-Job-Time`, `X-Job-Hash`). The
//! verifier accepts a triple once; the same triple again, while it is still inside the time window,
//! is a replay. Outside the window the timestamp check refuses it anyway, so a triple only has to
//! be remembered until `time + window`.
//!
//! [`ReplayStore`] is the storage interface (an in-memory [`ReplayGuard`] here; a shared store such
//! as Redis `SET key 1 NX PX ttl` can implement it for several API processes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Default maximum number of remembered requests in a [`ReplayGuard`].
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;

/// Errors of a [`ReplayStore`].
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store holds `capacity` requests that are all still inside the window, so it can neither
    /// remember one more nor forget one. The request must be refused (try again later).
    #[error("replay store is full ({capacity} requests inside the window)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// A backing store (e.g. Redis) failed.
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

/// Where the verifier remembers accepted requests.
///
/// Implementations must be atomic: two concurrent calls with the same key must not both return
/// `Ok(true)`.
pub trait ReplayStore: Send + Sync {
    /// Remembers `key` until `expires_at_ms` (ms since the epoch) and returns `Ok(true)` if it was
    /// not already remembered (a first use), `Ok(false)` if it was and has not yet expired (a
    /// replay). A key is expired once `now_ms > expires_at_ms`. Returns an error, and remembers
    /// nothing, when the store cannot record the key; the request must then be refused.
    fn check_and_remember(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError>;
}

/// Fixed-size fingerprint of a replay key: the first 16 bytes of its SHA-256. Keys are long (job id
/// + time + 64 hex characters); 16 bytes keep a full guard at a few tens of MB.
type Fingerprint = [u8; 16];

fn fingerprint(key: &str) -> Fingerprint {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[derive(Default)]
struct Inner {
    /// Fingerprint -> expiry (ms).
    entries: HashMap<Fingerprint, i64>,
    /// Expiries in ascending order, for pruning. May hold stale pairs whose fingerprint was
    /// re-remembered with a later expiry; those are skipped when popped.
    expiries: BinaryHeap<Reverse<(i64, Fingerprint)>>,
}

impl Inner {
    fn prune(&mut self, now_ms: i64) {
        while let Some(Reverse((expires_at, fp))) = self.expiries.peek().copied() {
            if expires_at >= now_ms {
                break;
            }
            self.expiries.pop();
            if self.entries.get(&fp) == Some(&expires_at) {
                self.entries.remove(&fp);
            }
        }
    }
}

/// The in-memory [`ReplayStore`]: bounded, thread-safe, O(log n) per request.
///
/// Entries older than their expiry are pruned on every call. When `capacity` entries are all still
/// inside the window, new requests are refused with [`ReplayError::Full`] instead of growing the
/// memory use. It only protects one process: several API processes need a shared store.
pub struct ReplayGuard {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ReplayGuard {
    /// A guard holding at most [`DEFAULT_REPLAY_CAPACITY`] requests.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }

    /// A guard holding at most `capacity` requests (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The maximum number of remembered requests.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets `key` (a request whose acceptance could not be recorded elsewhere after all: sent
    /// again, it must not be taken for a replay).
    pub fn forget(&self, key: &str) {
        // Its pair in `expiries` stays, and is skipped when popped (no entry matches it).
        self.inner.lock().entries.remove(&fingerprint(key));
    }

    /// How many requests are remembered right now (expired ones included until the next call).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl ReplayStore for ReplayGuard {
    fn check_and_remember(
        &self,
        key: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, ReplayError> {
        let fp = fingerprint(key);
        let mut inner = self.inner.lock();
        inner.prune(now_ms);
        if let Some(&existing) = inner.entries.get(&fp) {
            if existing >= now_ms {
                return Ok(false);
            }
        }
        if expires_at_ms < now_ms {
            // Already expired: nothing to remember (the time window refuses it anyway).
            return Ok(true);
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&fp) {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        inner.entries.insert(fp, expires_at_ms);
        inner.expiries.push(Reverse((expires_at_ms, fp)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_then_replay() {
        let guard = ReplayGuard::new();
        assert!(guard.check_and_remember("a", 1_000, 0).expect("ok"));
        assert!(!guard.check_and_remember("a", 1_000, 10).expect("ok"));
        assert!(guard.check_and_remember("b", 1_000, 10).expect("ok"));
        assert_eq!(guard.len(), 2);
    }

    /// A key forgotten (its acceptance could not be recorded elsewhere) is taken again; others
    /// are still replays.
    #[test]
    fn a_forgotten_key_is_taken_again() {
        let guard = ReplayGuard::new();
        assert!(guard.check_and_remember("a", 1_000, 0).expect("ok"));
        assert!(guard.check_and_remember("b", 1_000, 0).expect("ok"));
        guard.forget("a");
        assert!(guard.check_and_remember("a", 1_000, 10).expect("ok"));
        assert!(!guard.check_and_remember("a", 1_000, 20).expect("ok"));
        assert!(!guard.check_and_remember("b", 1_000, 20).expect("ok"));
        // Its old pair in the expiry heap does not prune the new entry early.
        assert!(!guard.check_and_remember("a", 1_000, 999).expect("ok"));
    }

    #[test]
    fn forgets_after_expiry() {
        let guard = ReplayGuard::new();
        assert!(guard.check_and_remember("a", 1_000, 0).expect("ok"));
        // Still remembered at the expiry instant itself.
        assert!(!guard.check_and_remember("a", 1_000, 1_000).expect("ok"));
        // Pruned after it.
        assert!(guard.check_and_remember("b", 5_000, 1_001).expect("ok"));
        assert_eq!(guard.len(), 1);
        assert!(guard.check_and_remember("a", 6_000, 1_001).expect("ok"));
    }

    #[test]
    fn full_of_live_entries_refuses_then_recovers() {
        let guard = ReplayGuard::with_capacity(2);
        assert!(guard.check_and_remember("a", 100, 0).expect("ok"));
        assert!(guard.check_and_remember("b", 200, 0).expect("ok"));
        let err = guard.check_and_remember("c", 300, 50).expect_err("full");
        assert!(matches!(err, ReplayError::Full { capacity: 2 }));
        // A replay is still detected while full.
        assert!(!guard.check_and_remember("a", 100, 50).expect("ok"));
        // Once "a" expires there is room again.
        assert!(guard.check_and_remember("c", 300, 101).expect("ok"));
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn concurrent_use_accepts_each_key_once() {
        let guard = std::sync::Arc::new(ReplayGuard::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let guard = guard.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| {
                            guard
                                .check_and_remember(&format!("k{i}"), 10_000, 0)
                                .expect("ok")
                        })
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(accepted, 1000);
    }
}
