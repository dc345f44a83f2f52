//! [`ActivityStore`] for the embedded backend: two grouped reads over indexes the writer already
//! keeps (nothing is added to a write). The finished jobs of the window are a range of
//! `jobs_finished` (by `finished_at`); the dead letters are the ERROR entries of `jobs_status`,
//! each row's attempts read from its body.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{rows, SqliteStore};
use crate::job::now_us;
use crate::store::activity::{
    minute_of, window_start, Activity, ActivityStore, FinishedCount, MINUTE_US,
};
use crate::store::Result;

/// Per minute, type and status: the range `finished_at >= since` is read from `jobs_finished`.
const FINISHED: &str = "SELECT finished_at / ?3, type, status, COUNT(*) FROM jobs \
     WHERE finished_at >= ?1 AND finished_at <= ?2 GROUP BY 1, 2, 3";

/// Dead letters by type: the ERROR rows (`jobs_status`) whose attempts are used up. In a body of
/// today's form (stored.rs) `n` is the attempt (absent: 0, a job that never ran) and `m` the
/// attempts allowed (absent: 1); a body written before has `attempt` (absent: 0) and
/// `max_attempts`.
const DEAD: &str = "SELECT type, COUNT(*) FROM jobs WHERE status = 'ERROR' \
     AND COALESCE(json_extract(body, '$.attempt'), json_extract(body, '$.n'), 0) \
      >= COALESCE(json_extract(body, '$.max_attempts'), json_extract(body, '$.m'), 1) \
     GROUP BY type";

#[async_trait]
impl ActivityStore for SqliteStore {
    async fn finished_per_minute(&self, minutes: u32) -> Result<Activity> {
        self.read(move |c| {
            let as_of = now_us();
            let since = window_start(as_of, minutes);
            let found = rows(c, FINISHED, [since, as_of, MINUTE_US], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            let finished = found
                .into_iter()
                .filter_map(|(m, job_type, s, n)| {
                    // A status this build does not know (a newer writer) is left out.
                    let status = s.parse::<crate::job::JobStatus>().ok()?;
                    status.is_terminal().then(|| FinishedCount {
                        minute: minute_of(m * MINUTE_US),
                        job_type,
                        status,
                        count: n.max(0) as u64,
                    })
                })
                .collect();
            Ok(Activity {
                as_of,
                since,
                finished,
            })
        })
        .await
    }

    async fn dead_letters(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|c| {
            let found = rows(c, DEAD, [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            Ok(found
                .into_iter()
                .map(|(t, n)| (t, n.max(0) as u64))
                .collect())
        })
        .await
    }
}
