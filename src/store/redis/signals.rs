//! [`SignalStore`] for Redis: `P:sig:{key}` sorted set of records by time, `P:sigid:{key}` the
//! records by client id, `P:sigseq` the sequence counter of each key, `P:sigkeys` keys by the
//! time of their last record (retention). Appends are one script (`lua/signal_append.lua`), reads
//! another (`lua/signal_page.lua`: by rank, within a byte budget, so a read never copies a key's
//! every payload).

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;
use serde_json::Value;

use super::{json_err, RedisStore};
use crate::job::Micros;
use crate::store::signals::{Signal, SignalKey, SignalPage, SignalStore, MAX_PER_KEY};
use crate::store::Result;

static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/sig_ids.lua"),
        include_str!("lua/signal_append.lua")
    ))
});
static PAGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/signal_page.lua")));
static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/sig_ids.lua"),
        include_str!("lua/signal_trim.lua")
    ))
});

/// Keys examined per retention call.
const TRIM_KEYS: usize = 10_000;

#[async_trait]
impl SignalStore for RedisStore {
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)> {
        let keys = [
            self.keyed("sig:", key),
            self.keyed("sigid:", key),
            self.key("sigseq"),
            self.key("sigkeys"),
            self.keyed("waitk:", key),
            self.key("waitdue"),
            self.key("waitgen"),
            self.key("notices"),
            self.keyed("sigidt:", key),
        ];
        let args = [
            key.to_string(),
            serde_json::to_string(key).map_err(json_err)?,
            id.clone().unwrap_or_default(),
            serde_json::to_string(&id).map_err(json_err)?,
            at.to_string(),
            payload
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json_err)?
                .unwrap_or_default(),
            MAX_PER_KEY.to_string(),
        ];
        let (created, rec): (i64, String) = self.run_script(&APPEND, &keys, &args).await?;
        let s: Signal = serde_json::from_str(&rec).map_err(json_err)?;
        Ok((s, created == 1))
    }

    async fn signals_page(
        &self,
        key: &str,
        since: Micros,
        limit: usize,
        bytes: usize,
    ) -> Result<SignalPage> {
        let args = [
            since.to_string(),
            limit.to_string(),
            bytes.to_string(),
            "page".into(),
        ];
        let (more, recs): (i64, Vec<String>) = self
            .run_script(&PAGE, &[self.keyed("sig:", key)], &args)
            .await?;
        let mut records = recs
            .iter()
            .map(|r| serde_json::from_str::<Signal>(r).map_err(json_err))
            .collect::<Result<Vec<_>>>()?;
        // The sorted set orders one microsecond's records by their text, the page by number.
        records.sort_by_key(|s| (s.at, s.seq));
        Ok(SignalPage {
            records,
            more: more == 1,
        })
    }

    async fn signal_seqs(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let args = [
            since.to_string(),
            limit.to_string(),
            "0".into(),
            "seqs".into(),
            until.to_string(),
        ];
        let (_, mut seqs): (i64, Vec<u64>) = self
            .run_script(&PAGE, &[self.keyed("sig:", key)], &args)
            .await?;
        seqs.sort_unstable();
        crate::store::waits::counters().count_reads(0, seqs.len());
        Ok(seqs)
    }

    async fn signal_count(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<u64> {
        // ZCOUNT: O(log N) whatever the count, no record read.
        let k = self.keyed("sig:", key);
        let n: u64 = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("ZCOUNT").arg(&k).arg(since).arg(until).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(n.min(limit))
    }

    async fn signals_trim(&self, before: Micros) -> Result<u64> {
        let args = [
            before.to_string(),
            TRIM_KEYS.to_string(),
            self.key("sig:"),
            self.key("sigid:"),
            self.key("sigidt:"),
        ];
        let n: i64 = self
            .run_script(&TRIM, &[self.key("sigkeys")], &args)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn signal_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<SignalKey>> {
        // `P:sigkeys` holds every key with records (scored by time): its names are read whole
        // (one per key, trimmed by retention), a page is cut by name, and each key of the page
        // answers its count and newest record from its own sorted set, in one round trip.
        let mut names = self.zset_members(&self.key("sigkeys")).await?;
        names.retain(|k| after.is_none_or(|a| k.as_str() > a));
        names.sort_unstable();
        names.truncate(limit);
        if names.is_empty() {
            return Ok(vec![]);
        }
        let sets: Vec<String> = names.iter().map(|k| self.keyed("sig:", k)).collect();
        let replies: Vec<KeyReply> = self
            .exec(true, |mut c| {
                let mut pipe = ::redis::pipe();
                for k in &sets {
                    pipe.cmd("ZCARD").arg(k);
                    pipe.cmd("ZRANGE").arg(k).arg(-1).arg(-1).arg("WITHSCORES");
                }
                async move { pipe.query_async::<Vec<::redis::Value>>(&mut c).await }
            })
            .await
            .and_then(pair_up)?;
        Ok(names
            .into_iter()
            .zip(replies)
            .filter(|(_, (n, _))| *n > 0)
            .map(|(key, (count, last))| SignalKey {
                key,
                count,
                latest: last.first().map_or(0, |(_, at)| *at as Micros),
            })
            .collect())
    }
}

/// A key's count and newest (record, time).
type KeyReply = (u64, Vec<(String, f64)>);

/// The pipeline's replies as (ZCARD, ZRANGE WITHSCORES) pairs.
fn pair_up(vals: Vec<::redis::Value>) -> Result<Vec<KeyReply>> {
    let bad = |e: ::redis::RedisError| crate::store::StoreError::Backend(e.to_string());
    vals.chunks(2)
        .map(|p| match p {
            [n, last] => Ok((
                ::redis::from_redis_value::<u64>(n).map_err(bad)?,
                ::redis::from_redis_value::<Vec<(String, f64)>>(last).map_err(bad)?,
            )),
            _ => Ok((0, vec![])),
        })
        .collect()
}
