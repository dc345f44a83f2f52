//! Job records as read from Redis, from a job key of the wrong type too (a hand edit, another
//! program sharing the Redis, a bug): Redis refuses a hash command on it (`WRONGTYPE`), and one
//! such key once failed every read that met it with others (a listing, a claim, the reaper, the
//! promotion), round after round. A script that cannot read a job's hash (`redis.pcall`) returns
//! [`WRONG`] and Redis's error in place of the record, and so do [`RedisStore::body`] and
//! [`RedisStore::bodies`]; [`read_job_record`] reads it as a record this build cannot read, which
//! the rounds over many jobs leave out, logged (`queue.rs` `readable`, `jobs.rs` `listable`).

use super::*;

/// What stands in place of a record whose key is not a hash, before Redis's error. No record
/// starts with it (the job's JSON and the compact form are JSON objects).
pub(super) const WRONG: char = '!';

/// What stands in place of a record whose bytes are not UTF-8 ([`text`]), before the reason. No
/// record starts with it either.
pub(super) const NOT_UTF8: char = '~';

/// A job record (a job hash's `b`): the job's JSON, or the compact form
/// (`store.records = "compact"`): every node reads both. Public for the fuzz targets.
pub fn read_job_record(body: &str) -> Result<Job> {
    if let Some(err) = body.strip_prefix(WRONG) {
        return Err(StoreError::Backend(format!(
            "corrupt record: the job's key is not a hash ({err})"
        )));
    }
    if let Some(err) = body.strip_prefix(NOT_UTF8) {
        return Err(StoreError::Backend(format!(
            "corrupt record: the job's record is not UTF-8 ({err})"
        )));
    }
    crate::store::job_record::read_inline(body)
}

/// A record's bytes as text. A record is read as bytes, not as a string: one that is not UTF-8
/// (written by hand, by another program) failed the whole read as a type error, which no caller
/// took for an unreadable record (a schedule's made every schedule route answer 500). Nor is it
/// read lossily: a JSON string holding such bytes would read with U+FFFD, and the claim, the
/// fire loop would save that changed text for good. It reads as [`NOT_UTF8`] and the reason,
/// which [`read_job_record`] and the schedules report as a corrupt record (left out of a
/// listing, a claim; a schedule's unreadable paths), as the embedded store does.
pub(super) fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| format!("{NOT_UTF8}{}", e.utf8_error()))
}

/// Whether `e` is Redis's refusal of a command on a key of another type.
pub(super) fn wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// The key types a hash command reads: a hash, or none (an absent field).
fn readable_type(t: &str) -> bool {
    t == "hash" || t == "none"
}

impl RedisStore {
    /// The record (`b` field, read as [`text`]) of the hash `key`, none when it is absent;
    /// [`WRONG`] and the error when `key` is not a hash.
    pub(crate) async fn body(&self, key: &str) -> Result<Option<String>> {
        self.exec(true, |mut c| {
            let cmd = ::redis::cmd("HGET").arg(key).arg("b").clone();
            async move {
                match cmd.query_async::<Option<Vec<u8>>>(&mut c).await {
                    Ok(b) => Ok(b.map(text)),
                    Err(e) if wrong_type(&e) => Ok(Some(format!("{WRONG}{e}"))),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// The records (`b` fields) of the hashes `keys`, in one round trip (two more when one of
    /// them is not a hash: [`Self::per_key`]); [`WRONG`] and the error for a key not a hash.
    pub(crate) async fn bodies(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        let got = self
            .per_key::<Option<Vec<u8>>>(keys, |k| ::redis::cmd("HGET").arg(k).arg("b").clone())
            .await?;
        Ok(got
            .into_iter()
            .map(|r| match r {
                Ok(b) => b.map(text),
                Err(e) => Some(format!("{WRONG}{e}")),
            })
            .collect())
    }

    /// The answers to `cmd` (a hash command) for each of `keys`, pipelined in one round trip;
    /// an error for a key that is not a hash. Redis answers such a key with an error, which
    /// fails the whole pipeline: then the keys' types are read, and the command sent again for
    /// the hashes (and the keys absent) only. A key whose type changes in between fails the
    /// call (the caller's next round reads it again).
    pub(crate) async fn per_key<T>(
        &self,
        keys: &[String],
        cmd: impl Fn(&str) -> ::redis::Cmd + Sync,
    ) -> Result<Vec<std::result::Result<T, String>>>
    where
        T: ::redis::FromRedisValue + Send,
    {
        let all: Option<Vec<T>> = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                for k in keys {
                    p.add_command(cmd(k));
                }
                async move {
                    match p.query_async(&mut c).await {
                        Ok(v) => Ok(Some(v)),
                        Err(e) if wrong_type(&e) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if let Some(v) = all {
            return Ok(v.into_iter().map(Ok).collect());
        }
        let types: Vec<String> = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                for k in keys {
                    p.cmd("TYPE").arg(k);
                }
                async move { p.query_async(&mut c).await }
            })
            .await?;
        let good: Vec<&String> = keys
            .iter()
            .zip(&types)
            .filter(|(_, t)| readable_type(t))
            .map(|(k, _)| k)
            .collect();
        let got: Vec<T> = if good.is_empty() {
            Vec::new()
        } else {
            self.exec(true, |mut c| {
                let mut p = ::redis::pipe();
                for k in &good {
                    p.add_command(cmd(k));
                }
                async move { p.query_async(&mut c).await }
            })
            .await?
        };
        let mut got = got.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for (k, t) in keys.iter().zip(&types) {
            if readable_type(t) {
                let v = got
                    .next()
                    .ok_or_else(|| StoreError::Backend("per_key: short reply".into()))?;
                out.push(Ok(v));
            } else {
                out.push(Err(format!("WRONGTYPE the key {k} is a {t}, not a hash")));
            }
        }
        Ok(out)
    }
}
