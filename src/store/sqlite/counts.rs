//! [`JobCountStore`] for the embedded backend: two `GROUP BY` queries, each answered from an
//! index without reading the job rows (a child module of `sqlite`, reusing its reader pool).

use async_trait::async_trait;

use super::{db_err, SqliteStore};
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
            let mut q = c
                .prepare_cached("SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status")
                .map_err(db_err)?;
            let rows = q
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db_err)?;
            for row in rows {
                let (t, s, n) = row.map_err(db_err)?;
                // A status this build does not know (written by a newer one) is left out.
                if let Ok(s) = s.parse() {
                    out.by_type_status.insert((t, s), n.max(0) as u64);
                }
            }
            let mut q = c
                .prepare_cached(
                    "SELECT type, MIN(queued_at) FROM jobs WHERE status = 'QUEUED' GROUP BY type",
                )
                .map_err(db_err)?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err)?;
            for row in rows {
                let (t, at) = row.map_err(db_err)?;
                out.oldest_queued.insert(t, at);
            }
            Ok(out)
        })
        .await
    }
}
