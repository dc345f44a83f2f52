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
            let keys = ["jc:ready", "jc", "all"].map(|k| self.key(k));
            let args = [self.key("job:"), self.key("qt:")];
            let _: i64 = self.run_script(&BUILD, &keys, &args).await?;
            BUILT.lock().insert(self.origin.clone());
        }
        let key = self.key("jc");
        let fields: Vec<(String, i64)> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("HGETALL").arg(&key).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
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
