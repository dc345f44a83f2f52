//! [`JobCountStore`] for Redis: `P:jc`, a hash of counters (field `{type}\n{status}`), and
//! `P:qt:{type}`, the QUEUED jobs of a type scored by `queued_at`, both kept by `commit.lua` and
//! `retention.lua` in the script that changes the job. A database written before they existed is
//! counted once by `lua/counts.lua` at the first read.

use std::collections::HashSet;
use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::RedisStore;
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::Result;

static BUILD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/counts.lua")));

/// The store handles (by their notice origin, unique per handle) that have seen the counts built:
/// each checks once.
static BUILT: LazyLock<parking_lot::Mutex<HashSet<String>>> = LazyLock::new(Default::default);

#[async_trait]
impl JobCountStore for RedisStore {
    async fn job_counts(&self) -> Result<JobCounts> {
        if !BUILT.lock().contains(&self.origin) {
            self.build_counts(None).await?;
            BUILT.lock().insert(self.origin.clone());
        }
        let fields = match self.count_fields().await? {
            Ok(f) => f,
            Err((why, mode)) => {
                // A hand edit, another program sharing the Redis: the commits pass it meanwhile
                // (commit.lua `flush_counts`), and the counts are built anew.
                tracing::warn!(key = %self.key("jc"), "{why}: counting the jobs again");
                self.build_counts(Some(mode)).await?;
                self.count_fields().await?.unwrap_or_default()
            }
        };
        let mut out = JobCounts::default();
        for (field, n) in fields {
            let Some((t, s)) = field.split_once('\n') else {
                continue;
            };
            if let (Ok(s), true) = (s.parse(), n > 0) {
                out.by_type_status.insert((t.to_string(), s), n as u64);
            }
        }
        let queued: Vec<String> = out
            .by_type_status
            .keys()
            .filter(|(_, s)| *s == crate::job::JobStatus::Queued)
            .map(|(t, _)| t.clone())
            .collect();
        for t in queued {
            if let Some(at) = self.first_score(&self.keyed("qt:", &t)).await? {
                out.oldest_queued.insert(t, at);
            }
        }
        Ok(out)
    }
}

/// Why the counts cannot be read, and the build that mends them.
type Unreadable = (&'static str, &'static str);

impl RedisStore {
    /// Builds the counts from the jobs (`lua/counts.lua`) if they were never built, or anew
    /// (`mode`: `rebuild`, or `unless-hash`: unless another reader has rebuilt them meanwhile).
    async fn build_counts(&self, mode: Option<&str>) -> Result<()> {
        let keys = ["jc:ready", "jc", "all"].map(|k| self.key(k));
        let mut args = vec![self.key("job:"), self.key("qt:")];
        args.extend(mode.map(String::from));
        let _: i64 = self.run_script(&BUILD, &keys, &args).await?;
        Ok(())
    }

    /// The counters of `P:jc`, or why they cannot be read and how to build them again.
    async fn count_fields(&self) -> Result<std::result::Result<Vec<(String, i64)>, Unreadable>> {
        let key = self.key("jc");
        let read: Option<Vec<(String, String)>> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("HGETALL").arg(&key).clone();
                async move {
                    match cmd.query_async(&mut c).await {
                        Err(e) if super::records::wrong_type(&e) => Ok(None),
                        r => r.map(Some),
                    }
                }
            })
            .await?;
        let Some(read) = read else {
            return Ok(Err(("the job counts' key is not a hash", "unless-hash")));
        };
        let parsed: Option<Vec<(String, i64)>> = read
            .into_iter()
            .map(|(f, n)| n.parse().ok().map(|n| (f, n)))
            .collect();
        Ok(parsed.ok_or(("a job count is not a number", "rebuild")))
    }
}
