//! [`ActivityStore`] for Redis: read-side scripts over index keys `commit.lua` already keeps, in
//! bounded chunks (each script call reads at most [`CHUNK`] jobs, so no call holds Redis long):
//! `lua/finished.lua` counts a range of `P:fin` (finished jobs by finished_at) per minute, type
//! and status; `lua/dead.lua` checks the ERROR jobs of `P:st:ERROR` for their attempts.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::RedisStore;
use crate::job::JobStatus;
use crate::store::activity::{window_start, Activity, ActivityStore, FinishedCount, MINUTE_US};
use crate::store::{Result, StoreError};

static FINISHED: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/finished.lua")));
static DEAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/dead.lua")));

/// Jobs read per script call.
const CHUNK: usize = 1000;

/// A script's reply: where the next chunk starts ('' at the end), then (key, count) pairs.
fn split(reply: Vec<::redis::Value>) -> Result<(String, Vec<(String, u64)>)> {
    let bad = || StoreError::Backend("unexpected reply of an activity script".into());
    let mut it = reply.into_iter();
    let next: String = ::redis::from_redis_value(&it.next().ok_or_else(bad)?).map_err(|_| bad())?;
    let mut pairs = Vec::new();
    while let (Some(k), Some(n)) = (it.next(), it.next()) {
        let k: String = ::redis::from_redis_value(&k).map_err(|_| bad())?;
        let n: i64 = ::redis::from_redis_value(&n).map_err(|_| bad())?;
        pairs.push((k, n.max(0) as u64));
    }
    Ok((next, pairs))
}

#[async_trait]
impl ActivityStore for RedisStore {
    async fn finished_per_minute(&self, minutes: u32) -> Result<Activity> {
        let as_of = self.now().await;
        let since = window_start(as_of, minutes);
        let keys = [self.key("fin")];
        let mut lo = since.to_string();
        let mut counts: HashMap<(i64, String, JobStatus), u64> = HashMap::new();
        loop {
            let args = [
                self.key("job:"),
                lo.clone(),
                as_of.to_string(),
                CHUNK.to_string(),
                MINUTE_US.to_string(),
            ];
            let reply: Vec<::redis::Value> = self.run_script(&FINISHED, &keys, &args).await?;
            let (next, pairs) = split(reply)?;
            for (key, n) in pairs {
                let mut parts = key.splitn(3, '\n');
                let (Some(m), Some(t), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                // A status this build does not know (a newer writer) is left out.
                let (Ok(m), Ok(s)) = (m.parse::<i64>(), s.parse::<JobStatus>()) else {
                    continue;
                };
                if s.is_terminal() {
                    *counts.entry((m * MINUTE_US, t.to_string(), s)).or_default() += n;
                }
            }
            if next.is_empty() {
                break;
            }
            lo = next;
        }
        let mut finished: Vec<FinishedCount> = counts
            .into_iter()
            .map(|((minute, job_type, status), count)| FinishedCount {
                minute,
                job_type,
                status,
                count,
            })
            .collect();
        finished.sort_by(|a, b| {
            (a.minute, &a.job_type, a.status.to_string()).cmp(&(
                b.minute,
                &b.job_type,
                b.status.to_string(),
            ))
        });
        Ok(Activity {
            as_of,
            since,
            finished,
        })
    }

    async fn dead_letters(&self) -> Result<BTreeMap<String, u64>> {
        let keys = [self.keyed("st:", JobStatus::Error)];
        let mut from = "-".to_string();
        let mut out = BTreeMap::new();
        loop {
            let args = [self.key("job:"), from.clone(), CHUNK.to_string()];
            let reply: Vec<::redis::Value> = self.run_script(&DEAD, &keys, &args).await?;
            let (next, pairs) = split(reply)?;
            for (t, n) in pairs {
                *out.entry(t).or_default() += n;
            }
            if next.is_empty() {
                break;
            }
            from = next;
        }
        Ok(out)
    }
}
