//! [`JobCountStore`] for the embedded backend: two `GROUP BY` queries, each answered from an
//! index without reading the job rows (a child module of `sqlite`, reusing its reader pool).

use async_trait::async_trait;

use super::{rows, SqliteStore};
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::Result;

/// The indexes, created at open: `(type, status)` covers the counts, and the partial index of
/// QUEUED jobs by type gives each type's oldest `queued_at` as its first entry.
pub(super) const SCHEMA: &str = r#"
CREATE INDEX IF NOT EXISTS jobs_type_status ON jobs(type, status);
CREATE INDEX IF NOT EXISTS jobs_queued_type ON jobs(type, queued_at) WHERE status = 'QUEUED';
"#;

#[async_trait]
impl JobCountStore for SqliteStore {
    async fn job_counts(&self) -> Result<JobCounts> {
        self.read(|c| {
            let mut out = JobCounts::default();
            let counts = rows(
                c,
                "SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )?;
            for (t, s, n) in counts {
                // A status this build does not know (written by a newer one) is left out.
                if let Ok(s) = s.parse() {
                    out.by_type_status.insert((t, s), n.max(0) as u64);
                }
            }
            out.oldest_queued = rows(
                c,
                "SELECT type, MIN(queued_at) FROM jobs WHERE status = 'QUEUED' GROUP BY type",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )?
            .into_iter()
            .collect();
            Ok(out)
        })
        .await
    }
}
