//! [`WaitStore`] for the embedded backend: `wait_keys` (the jobs waiting on each signal key) and
//! `wait_deadlines` (WAITING jobs by deadline). A signal write releases the jobs it completes in
//! its own transaction; a job that stops waiting leaves both tables in the transaction that
//! changes it.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use super::{apply_in, exec, load, load_readable, rows, SqliteStore, WriteCtx};
use crate::job::wait::{all_met, Seen, WaitItem, MAX_SIGNAL_IDS};
use crate::job::{now_us, Command, Job, JobStatus, Micros};
use crate::store::waits::{counters, distinct_reads, seen_of, WaitStore};
use crate::store::{Result, StoreError};

/// The tables, created at open.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS wait_keys (
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, job_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wait_keys_job ON wait_keys(job_id);
CREATE TABLE IF NOT EXISTS wait_deadlines (
    job_id TEXT PRIMARY KEY,
    deadline INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wait_deadlines_at ON wait_deadlines(deadline);
"#;

/// The counts one transaction made, by (key, since, until): the count and the limit it was
/// counted to (exact when below it). The jobs a signal checks mostly wait on the same key from
/// the same time, so its records are counted once, not once per job and item.
#[derive(Default)]
pub(super) struct Counts {
    /// By (key, since, until): the count and the limit it was counted to.
    counted: HashMap<(String, Micros, Micros), (u64, u64)>,
    /// The counts read from the table (the unit test holds the sharing to it).
    #[cfg(test)]
    reads: usize,
}

impl Counts {
    /// How many records `key` has from `since` to `until`, counted up to `needed`.
    fn count(
        &mut self,
        conn: &rusqlite::Connection,
        key: &str,
        since: Micros,
        until: Micros,
        needed: u32,
    ) -> Result<u64> {
        let needed = u64::from(needed);
        let k = (key.to_string(), since, until);
        if let Some(&(n, limit)) = self.counted.get(&k) {
            if n < limit || limit >= needed {
                return Ok(n.min(needed));
            }
        }
        let n = super::signals::count_in(conn, key, since, until, needed)?;
        #[cfg(test)]
        {
            self.reads += 1;
        }
        self.counted.insert(k, (n, needed));
        Ok(n)
    }

    /// Whether every item has its count, stopping at the first short. The items on keys other
    /// than `signalled` first (a job still waiting was short of one at the last check, and only
    /// `signalled` gained a record), the smallest counts first (a count steps over at most that
    /// many records).
    fn all_met(
        &mut self,
        conn: &rusqlite::Connection,
        items: &[WaitItem],
        until: Micros,
        signalled: Option<&str>,
    ) -> Result<bool> {
        let mut order: Vec<&WaitItem> = items.iter().collect();
        order.sort_by_key(|i| (Some(i.key.as_str()) == signalled, i.needed));
        for i in order {
            let n = self.count(conn, &i.key, i.since.unwrap_or(0), until, i.needed)?;
            if n < u64::from(i.needed) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The records each item has up to `until` (counted up to its `needed`, the numbers of the
    /// first [`crate::job::wait::MAX_SIGNAL_IDS`]), on the writer's connection.
    fn seen(
        &mut self,
        conn: &rusqlite::Connection,
        items: &[WaitItem],
        until: Micros,
    ) -> Result<Seen> {
        let (reads, of_item) = distinct_reads(items);
        let mut answers = Vec::with_capacity(reads.len());
        for (key, since, needed) in reads {
            let n = self.count(conn, key, since, until, needed)?;
            let shown = (n as usize).min(MAX_SIGNAL_IDS);
            let ids = if shown == 0 {
                vec![]
            } else {
                super::signals::seqs_in(conn, key, since, until, shown)?
            };
            answers.push((n, ids));
        }
        Ok(seen_of(items, &of_item, &answers))
    }
}

/// Releases `job` (WAITING) when its conditions hold (counted first: record numbers are read
/// only for a job that is released). True when released.
fn check_in(
    ctx: &mut WriteCtx<'_>,
    job: &mut Job,
    counts: &mut Counts,
    signalled: Option<&str>,
) -> Result<bool> {
    if job.status != JobStatus::Waiting {
        return Ok(false);
    }
    let Some(w) = &job.wait else {
        return Ok(false);
    };
    if !counts.all_met(ctx.conn, &w.items, w.until(), signalled)? {
        return Ok(false);
    }
    let seen = counts.seen(ctx.conn, &w.items, w.until())?;
    if !all_met(&w.items, &seen) {
        return Ok(false);
    }
    apply_in(ctx, job, Command::WaitRelease { seen }, now_us())?;
    Ok(true)
}

/// A job was just stored WAITING: index it, then release it at once if its signals are there.
pub(super) fn enter_in(ctx: &mut WriteCtx<'_>, job: &mut Job) -> Result<()> {
    let Some(w) = &job.wait else {
        return Ok(());
    };
    let id = job.id.to_string();
    for i in &w.items {
        exec(
            ctx.conn,
            "INSERT OR IGNORE INTO wait_keys(key, job_id) VALUES (?1, ?2)",
            params![i.key, id],
        )?;
    }
    if let Some(d) = w.deadline {
        exec(
            ctx.conn,
            "INSERT OR REPLACE INTO wait_deadlines(job_id, deadline) VALUES (?1, ?2)",
            params![id, d],
        )?;
    }
    counters()
        .entered
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    check_in(ctx, job, &mut Counts::default(), None)?;
    Ok(())
}

/// A job left WAITING: out of both indexes.
pub(super) fn leave_in(conn: &rusqlite::Connection, id: &str) -> Result<()> {
    exec(conn, "DELETE FROM wait_keys WHERE job_id = ?1", [id])?;
    exec(conn, "DELETE FROM wait_deadlines WHERE job_id = ?1", [id])?;
    Ok(())
}

/// A record of `key` was written: check the jobs waiting on it (same transaction).
pub(super) fn on_signal(ctx: &mut WriteCtx<'_>, key: &str) -> Result<()> {
    let ids: Vec<String> = rows(
        ctx.conn,
        "SELECT job_id FROM wait_keys WHERE key = ?1",
        [key],
        |r| r.get(0),
    )?;
    let mut counts = Counts::default();
    for id in ids {
        // A record this build cannot read is passed over, its entries kept (as on Redis): the
        // signal is stored and the other jobs waiting on it are checked.
        match load_readable(ctx.conn, &id, "a signal")? {
            Some(Some(mut job)) => {
                check_in(ctx, &mut job, &mut counts, Some(key))?;
            }
            Some(None) => leave_in(ctx.conn, &id)?,
            None => {}
        }
    }
    Ok(())
}

#[async_trait]
impl WaitStore for SqliteStore {
    async fn wait_check(&self, id: Uuid) -> Result<bool> {
        self.write(move |ctx| {
            let Some(mut job) = load(ctx.conn, &id.to_string())? else {
                return Err(StoreError::NotFound);
            };
            check_in(ctx, &mut job, &mut Counts::default(), None)
        })
        .await
    }

    async fn wait_check_marked(&self, _max: usize) -> Result<usize> {
        Ok(0)
    }

    async fn wait_next_deadline(&self) -> Result<Option<Micros>> {
        self.read_min("SELECT MIN(deadline) FROM wait_deadlines")
            .await
    }

    async fn wait_fire_deadlines(&self, max: usize) -> Result<Vec<Job>> {
        self.write(move |ctx| {
            let now = now_us();
            // Up to `UNREADABLE_PASSED` more: a record this build cannot read is passed over,
            // its entries kept (as on Redis), and the deadlines after it fire.
            let ids: Vec<String> = rows(
                ctx.conn,
                "SELECT job_id FROM wait_deadlines WHERE deadline <= ?1 ORDER BY deadline LIMIT ?2",
                params![now, super::queue::with_passed(max)],
                |r| r.get(0),
            )?;
            let mut out = Vec::with_capacity(ids.len().min(max));
            let mut counts = Counts::default();
            for id in ids {
                if out.len() == max {
                    break;
                }
                let mut job = match load_readable(ctx.conn, &id, "a wait's deadline")? {
                    Some(Some(job)) => job,
                    Some(None) => {
                        leave_in(ctx.conn, &id)?;
                        continue;
                    }
                    None => continue,
                };
                let (items, until) = job
                    .wait
                    .as_ref()
                    .map(|w| (w.items.clone(), w.until()))
                    .unwrap_or_default();
                let seen = counts.seen(ctx.conn, &items, until)?;
                match apply_in(ctx, &mut job, Command::WaitDeadline { seen }, now) {
                    Ok(()) => out.push(job),
                    // No longer waiting (an index entry left behind): drop it.
                    Err(StoreError::Transition(_)) => leave_in(ctx.conn, &id)?,
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;
    use crate::job::wait::WaitItem;
    use crate::job::Micros;
    use crate::store::waits::test_item as item;

    /// The counts of one transaction (a signal checking every job waiting on its key) are read
    /// once per distinct (key, since): by each job's check and by the reads of the job it
    /// releases, whatever the number of jobs and of identical items; again only for a larger
    /// count than the one read (a count stops at its limit).
    #[test]
    fn counts_are_read_once_per_key_and_since_across_items_and_jobs() {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        conn.execute_batch(super::super::signals::SCHEMA)
            .expect("schema");
        for at in 10..15 {
            super::super::signals::append_in(&conn, "a".into(), None, None, at).expect("a");
        }
        super::super::signals::append_in(&conn, "b".into(), None, None, 10).expect("b");
        let mut job: Vec<WaitItem> = vec![item("a", 3, None); 5];
        job.push(item("a", 3, Some(12)));
        job.push(item("b", 1, None));
        let mut counts = Counts::default();
        for _ in 0..10 {
            assert!(counts.all_met(&conn, &job, Micros::MAX, Some("a")).unwrap());
            let seen = counts.seen(&conn, &job, Micros::MAX).unwrap();
            assert_eq!(seen[0], (3, vec![1, 2, 3]));
            assert_eq!(seen[5], (3, vec![3, 4, 5]));
            assert_eq!(seen[6], (1, vec![1]));
        }
        assert_eq!(counts.reads, 3, "(a, 0), (a, 12), (b, 0)");
        // A job needing more of `a` than was counted (the count stopped at 3): one more read,
        // then shared again.
        let more = vec![item("a", 5, None)];
        for _ in 0..3 {
            assert!(counts.all_met(&conn, &more, Micros::MAX, None).unwrap());
        }
        assert_eq!(counts.reads, 4);
        // A smaller count than one read needs no read.
        assert!(counts
            .all_met(&conn, &[item("a", 2, None)], Micros::MAX, None)
            .unwrap());
        assert_eq!(counts.reads, 4);
    }
}
