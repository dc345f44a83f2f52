//! [`Maintenance`] for Redis: retention of finished jobs (`lua/retention.lua`) and of the global
//! event stream, the referenced file hashes, health.

use std::sync::LazyLock;

use ::redis::Script;

use super::*;

/// `SCAN` calls (of about 1,000 keys each) per retention pass in [`RedisStore::sweep_old_streams`].
const SWEEP_CALLS: usize = 10;

/// Gives each key of KEYS without a TTL one of ARGV[1] ms; returns how many it gave one.
static GIVE_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local n = 0 \
         for _, k in ipairs(KEYS) do \
           if redis.call('PTTL', k) == -1 then redis.call('PEXPIRE', k, ARGV[1]); n = n + 1 end \
         end \
         return n",
    )
});

/// Jobs deleted per retention script call.
const RETENTION_CHUNK: usize = 500;
/// Retention script calls per [`Maintenance::retention`] (bounds one pass).
const RETENTION_CHUNKS: usize = 40;

#[async_trait]
impl Maintenance for RedisStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let keys = ["fin", "all", "jc", "fhashes"].map(|k| self.key(k));
        // The key families of each job, named by what the script reads (see retention.lua).
        let prefixes = ["job:", "st:", "idem:", "fref:", "log:", "logn:"].map(|k| self.key(k));
        let args: Vec<String> = [finished_before.to_string(), RETENTION_CHUNK.to_string()]
            .into_iter()
            .chain(prefixes)
            .collect();
        for _ in 0..RETENTION_CHUNKS {
            let n: u64 = self
                .run_script(&self.scripts.retention, &keys, &args)
                .await?;
            report.jobs += n;
            if (n as usize) < RETENTION_CHUNK {
                break;
            }
        }
        // `MAXLEN ~` at append keeps the global stream near its limit; trim it exactly here.
        let key = self.key("ev");
        let limit = self.s.store.global_limit;
        report.events = self
            .exec(true, |mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("XTRIM")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        self.sweep_old_streams().await?;
        Ok(report)
    }

    async fn file_hashes(&self) -> Result<HashSet<String>> {
        let key = self.key("fhashes");
        let mut out = HashSet::new();
        let mut cursor: u64 = 0;
        // Bounded: a set of a million hashes takes a thousand calls.
        for _ in 0..1_000_000 {
            let (next, batch): (u64, Vec<String>) = self
                .exec(true, |mut c| {
                    let key = key.clone();
                    async move {
                        ::redis::cmd("SSCAN")
                            .arg(key)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            out.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn health(&self) -> Result<()> {
        let mut c = self.conn.clone();
        match tokio::time::timeout(
            Duration::from_secs(1),
            ::redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.mark(true, "");
                Ok(())
            }
            Ok(Err(e)) => {
                self.mark(false, &e.to_string());
                Err(StoreError::Unavailable(format!("redis: {e}")))
            }
            Err(_) => {
                self.mark(false, "ping timed out");
                Err(StoreError::Unavailable(
                    "redis: no answer to PING within 1s".into(),
                ))
            }
        }
    }
}

impl RedisStore {
    /// Gives each channel stream `P:evc:{channel}` that has no TTL one of `retention.events`: an
    /// older build's worker, during a rolling upgrade to channel lists, creates such a stream for
    /// a job a new node submitted, as it skips the TTL refresh for a young job whose submit "set
    /// it" (docs/redis.md); nothing writes these streams any more, so `retention.events` from now
    /// is later than any reader needs. Bounded: [`SWEEP_CALLS`] `SCAN`s per pass, going on from
    /// where the last pass of any node stopped (its cursor in `P:evcsweep`), round the keyspace
    /// again once through it. Returns how many it gave a TTL.
    async fn sweep_old_streams(&self) -> Result<u64> {
        let pattern = format!("{}:evc:*", self.s.prefix);
        let ttl = self.s.channel_ttl.as_millis().max(1) as u64;
        let at = self.key("evcsweep");
        let saved: Option<String> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("GET").arg(&at).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut cursor: u64 = saved.and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut given = 0;
        for _ in 0..SWEEP_CALLS {
            let (next, keys): (u64, Vec<String>) = self
                .exec(true, |mut c| {
                    let cmd = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .arg("TYPE")
                        .arg("stream")
                        .clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            if !keys.is_empty() {
                let n: u64 = self
                    .run_script(&GIVE_TTL, &keys, &[ttl.to_string()])
                    .await?;
                given += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let _: () = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("SET")
                    .arg(&at)
                    .arg(cursor)
                    .arg("EX")
                    .arg(24 * 3600)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        if given > 0 {
            tracing::info!(
                streams = given,
                "gave old channel streams without a TTL one (left by an older build's worker)"
            );
        }
        Ok(given)
    }
}
