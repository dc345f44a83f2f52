//! [`Maintenance`] for Redis: retention of finished jobs (`lua/retention.lua`) and of the global
//! event stream, the referenced file hashes, health.

use super::*;

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
        let prefixes =
            ["job:", "st:", "idem:", "fref:", "log:", "logn:", "jch:"].map(|k| self.key(k));
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
