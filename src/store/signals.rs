//! Readiness signals: append-only records per key (`src.orders loaded`), idempotent by an optional
//! client id, read back since a time, bounded by retention and by a cap per key.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Result;
use crate::job::Micros;

/// Records kept per key at most (the oldest are dropped).
pub const MAX_PER_KEY: u64 = 10_000;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 200;
/// Longest client id, in bytes.
pub const MAX_ID_BYTES: usize = 200;

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The key.
    pub key: String,
    /// Position in the key's records, from 1, never reused.
    pub seq: u64,
    /// When it was written (µs).
    pub at: Micros,
    /// The client's id, which makes the write idempotent.
    #[serde(default)]
    pub id: Option<String>,
    /// Free-form JSON.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// One key of the listing: how many records it keeps and when its latest was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalKey {
    /// The key.
    pub key: String,
    /// Records kept.
    pub count: u64,
    /// When its newest record was written (µs).
    pub latest: Micros,
}

/// Checks a key: 1-200 bytes, no control characters. The error names what is wrong.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("`key` must not be empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "`key` is {} bytes: at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("`key` must not contain control characters".into());
    }
    Ok(())
}

/// Signals: append (idempotent by id), read since a time, trim.
#[async_trait]
pub trait SignalStore: Send + Sync {
    /// Appends a record at `at`; with an `id` already used for this key, returns that record and
    /// false (nothing written).
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)>;
    /// Records of `key` written at or after `since`, oldest first, at most `limit`.
    async fn signals(&self, key: &str, since: Micros, limit: usize) -> Result<Vec<Signal>>;
    /// Deletes records written before `before`; returns how many.
    async fn signals_trim(&self, before: Micros) -> Result<u64>;
    /// The keys that keep records, by name, after `after` (exclusive), at most `limit`.
    async fn signal_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<SignalKey>>;
}
