//! [`JobCountStore`] for the embedded backend: the jobs of each type in each status, kept in the
//! table `job_counts` by the writer, and each type's oldest QUEUED job from a partial index (a
//! child module of `sqlite`, reusing its reader pool).
//!
//! The counts were a `GROUP BY` over an index `jobs_type_status(type, status)`, whose entry every
//! status change deleted and inserted again: two b-tree writes per change, eight per job. Now the
//! writer notes each change of a row's status in memory ([`Deltas`]: where a row is inserted,
//! updated or deleted, `jobs.rs`, `apply.rs` `save`, `retention.rs`) and writes their sums into
//! `job_counts` once per transaction, before its `COMMIT` (a few rows, one page). A request that
//! is rolled back drops its notes with its rows (`WriteCtx::undo`); a transaction that fails is
//! rolled back whole, its sums with it. So `job_counts` is always the `GROUP BY` of the committed
//! rows.
//!
//! Databases made before (with `jobs_type_status`) are counted once at open and the index is
//! dropped ([`migrate`]). An older build that opens the database again makes the index again and
//! does not keep the table: the next open by this build finds the index and counts again.

use async_trait::async_trait;
use rusqlite::Connection;

use super::{db_err, exec, row, row_opt, rows, SqliteStore};
use crate::job::JobStatus;
use crate::store::counts::{JobCountStore, JobCounts};
use crate::store::Result;

/// The partial index of QUEUED jobs by type, created at open: each type's oldest `queued_at` is
/// its first entry.
pub(super) const SCHEMA: &str = r#"
CREATE INDEX IF NOT EXISTS jobs_queued_type ON jobs(type, queued_at) WHERE status = 'QUEUED';
"#;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS job_counts (
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (type, status)
) WITHOUT ROWID";

/// Makes `job_counts` and counts the jobs into it, when it is new or an index
/// `jobs_type_status` exists (a database made before, or opened by an older build since), then
/// drops that index; all in one transaction.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let exists = |kind: &str, name: &str| -> Result<bool> {
        Ok(row_opt(
            conn,
            "SELECT 1 FROM sqlite_master WHERE type = ?1 AND name = ?2",
            [kind, name],
            |_| Ok(()),
        )?
        .is_some())
    };
    if exists("table", "job_counts")? && !exists("index", "jobs_type_status")? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let r = conn.execute_batch(&format!(
        "{TABLE};
         DELETE FROM job_counts;
         INSERT INTO job_counts(type, status, n)
             SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status;
         DROP INDEX IF EXISTS jobs_type_status;
         COMMIT;"
    ));
    if let Err(e) = r {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(db_err(e));
    }
    Ok(())
}

/// The changes of the jobs' counts in the writer's current transaction, as a log (so a request
/// rolled back drops its own: [`Deltas::mark`], [`Deltas::undo`]); types and statuses are kept
/// as small numbers, so a note allocates nothing once its type has been seen.
#[derive(Default)]
pub(super) struct Deltas {
    /// Every type and status text seen; emptied between transactions when it grows large.
    names: Vec<String>,
    log: Vec<(u32, u32, i64)>,
}

impl Deltas {
    fn name(&mut self, s: &str) -> u32 {
        match self.names.iter().position(|n| n == s) {
            Some(i) => i as u32,
            None => {
                self.names.push(s.to_string());
                (self.names.len() - 1) as u32
            }
        }
    }

    /// One job of `job_type` more (`by` 1) or less (-1) in `status`.
    pub(super) fn add(&mut self, job_type: &str, status: &str, by: i64) {
        let (t, s) = (self.name(job_type), self.name(status));
        self.log.push((t, s, by));
    }

    pub(super) fn mark(&self) -> usize {
        self.log.len()
    }

    pub(super) fn undo(&mut self, mark: usize) {
        self.log.truncate(mark);
    }

    /// Writes the sums of the log into `job_counts` (in the writer's open transaction) and
    /// empties it; a count that falls to 0 loses its row.
    pub(super) fn flush(&mut self, conn: &Connection) -> Result<()> {
        let mut sums: Vec<(u32, u32, i64)> = Vec::new();
        for &(t, s, by) in &self.log {
            match sums.iter_mut().find(|(t2, s2, _)| (*t2, *s2) == (t, s)) {
                Some(e) => e.2 += by,
                None => sums.push((t, s, by)),
            }
        }
        self.log.clear();
        for (t, s, by) in sums {
            if by == 0 {
                continue;
            }
            let (t, s) = (&self.names[t as usize], &self.names[s as usize]);
            let n: i64 = row(
                conn,
                "INSERT INTO job_counts(type, status, n) VALUES (?1, ?2, ?3)
                 ON CONFLICT(type, status) DO UPDATE SET n = n + excluded.n RETURNING n",
                rusqlite::params![t, s, by],
                |r| r.get(0),
            )?;
            if n <= 0 {
                exec(
                    conn,
                    "DELETE FROM job_counts WHERE type = ?1 AND status = ?2",
                    [t, s],
                )?;
            }
        }
        if self.names.len() > 1024 {
            self.names.clear();
        }
        Ok(())
    }
}

/// A type's oldest QUEUED job: the first entry of the partial index `jobs_queued_type`.
pub(super) const OLDEST_QUEUED_SQL: &str =
    "SELECT MIN(queued_at) FROM jobs WHERE status = 'QUEUED' AND type = ?1";

#[async_trait]
impl JobCountStore for SqliteStore {
    async fn job_counts(&self) -> Result<JobCounts> {
        self.read(|c| {
            let mut out = JobCounts::default();
            let counts = rows(
                c,
                "SELECT type, status, n FROM job_counts WHERE n > 0",
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
            // One seek into `jobs_queued_type` per type with QUEUED jobs: a `GROUP BY type`
            // over every QUEUED job was planned on `jobs_status` and read each QUEUED row.
            let queued: Vec<String> = out
                .by_type_status
                .iter()
                .filter(|((_, s), n)| *s == JobStatus::Queued && **n > 0)
                .map(|((t, _), _)| t.clone())
                .collect();
            for t in queued {
                if let Some(at) = row(c, OLDEST_QUEUED_SQL, [&t], |r| r.get::<_, Option<i64>>(0))? {
                    out.oldest_queued.insert(t, at);
                }
            }
            Ok(out)
        })
        .await
    }
}
