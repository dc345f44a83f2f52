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
/// The start of the ids of the records a job's `emits` writes (`job:{job_id}`, in the embedded
/// store's `emit_in` and Redis' `commit.lua`): reserved, a client may not write one (it would
/// make the job's own record a duplicate, dropped, and stand for it).
pub const EMIT_ID_PREFIX: &str = "job:";

/// Checks a client's id for a record: 1-200 bytes, no control or invisible characters, not
/// [`EMIT_ID_PREFIX`] (in any case) and a job id. The error names what is wrong.
pub fn check_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(format!(
            "`id` must be 1-{MAX_ID_BYTES} bytes without control characters"
        ));
    }
    // As for keys: an id with a zero-width or direction mark shows as another id.
    if let Some(c) = id.chars().find(|&c| crate::job::invisible(c)) {
        return Err(format!(
            "`id` must not contain invisible characters (zero-width, direction marks or other invisible ones): \
             U+{:04X} in {id:?}",
            c as u32
        ));
    }
    // Only the very shape of a job's record (`job:` and a job id): `job:{id}:loaded` is free.
    // The prefix in any case (`JOB:`, `Job:`): one a reader folding case takes for a job's.
    let reserved = id
        .get(..EMIT_ID_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(EMIT_ID_PREFIX))
        && uuid::Uuid::parse_str(&id[EMIT_ID_PREFIX.len()..]).is_ok();
    if reserved {
        return Err(format!(
            "`id` may not be `{EMIT_ID_PREFIX}` and a job id: those ids are the records a job's \
             `emits` writes when it succeeds"
        ));
    }
    Ok(())
}

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

/// A page of a key's records (see [`SignalStore::signals_page`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalPage {
    /// The records, by time, ties by `seq`.
    pub records: Vec<Signal>,
    /// The page was cut (by its `limit` or its bytes): records after its last may exist.
    pub more: bool,
}

/// Where a page of records read in time order ends: before a record at `at` once the page holds
/// `kept` records of `bytes` stored bytes, of which the last was written at `last`. A page ends
/// at its `limit` or once its bytes reach `budget`, never between two records of one microsecond
/// (so that `since` = the last time + 1 µs goes on with nothing skipped or repeated), and never
/// before its first record (a page that says more follows is never empty). The Redis read
/// (`lua/signal_page.lua`) applies the same rule.
pub fn page_ends(
    kept: usize,
    bytes: usize,
    last: Option<Micros>,
    at: Micros,
    limit: usize,
    budget: usize,
) -> bool {
    kept > 0 && (kept >= limit || bytes >= budget) && last != Some(at)
}

/// Checks a key to write or wait for: [`check_key_read`]'s rules, no invisible characters (a
/// zero-width space or a direction mark makes a key that shows as another, and a job waiting on
/// it waits for ever), no white space at its start or end (a key of spaces shows as nothing,
/// `"k "` as `"k"`), and not `.` or `..` (as schedule names: a client puts the key in a URL
/// path, which resolves such a segment, also written `%2E`, so no client could write or read
/// it). The error names what is wrong.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    check_key_read(key)?;
    if key == "." || key == ".." {
        return Err(format!(
            "`key` may not be `.` or `..` (got `{key}`): a client would resolve them as a path \
             (`/async/signals/..` is `/async`)"
        ));
    }
    if key.trim() != key {
        return Err(format!(
            "`key` must not start or end with white space: {key:?}"
        ));
    }
    if let Some(c) = key.chars().find(|&c| crate::job::invisible(c)) {
        return Err(format!(
            "`key` must not contain invisible characters (zero-width, direction marks or other invisible ones): \
             U+{:04X} in {key:?}",
            c as u32
        ));
    }
    Ok(())
}

/// Checks a key to read: 1-200 bytes, no control characters (a key an older version wrote
/// with invisible characters can still be read and listed past).
pub fn check_key_read(key: &str) -> std::result::Result<(), String> {
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
    /// Appends a record at `at` (the writer's clock), or one microsecond after the key's newest
    /// record when `at` is not later: a key's records are stamped in the order the store writes
    /// them, so a reader following a page's `next_since` misses no record written after the page
    /// was read (only records of an older version may share a microsecond). With an `id` already
    /// used for this key, returns that record and false (nothing written).
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)>;
    /// One page of `key`'s records written at or after `since`, in the order of their times
    /// (ties by `seq`): at most `limit`, and no more once the records kept pass `bytes` as stored
    /// ([`page_ends`]), except that a page never ends between two records of the same
    /// microsecond. `more` says whether records after the page's last may exist: go on with
    /// `since` one microsecond after its last record's time.
    async fn signals_page(
        &self,
        key: &str,
        since: Micros,
        limit: usize,
        bytes: usize,
    ) -> Result<SignalPage>;
    /// The numbers (`seq`) of at most `limit` of `key`'s records written at or after `since`
    /// and at or before `until` (a waiting job's deadline: a record after it counts for
    /// nothing; `Micros::MAX` for none), lowest first; no payload leaves the store.
    async fn signal_seqs(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<u64>>;
    /// How many of `key`'s records were written at or after `since` and at or before `until`,
    /// counted up to `limit` (the answer is at most `limit`): a waiting job's check counts
    /// before it reads any number ([`crate::store::waits`]), and never past what it needs.
    async fn signal_count(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<u64>;
    /// Deletes records written before `before`; returns how many.
    async fn signals_trim(&self, before: Micros) -> Result<u64>;
    /// The keys that keep records, by name, after `after` (exclusive), at most `limit`.
    async fn signal_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<SignalKey>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_dot_and_dot_dot_are_refused_to_write_but_read() {
        for key in [".", ".."] {
            let e = check_key(key).unwrap_err();
            assert!(e.contains("`.` or `..`"), "{e}");
            assert!(check_key_read(key).is_ok(), "read as any key");
        }
        for key in ["...", ".k", "k.", "a..b", "./k"] {
            assert!(check_key(key).is_ok(), "{key}");
        }
    }
}
