//! The jobs the writer last claimed (a claim, a hand-over at submit), as it wrote them, so that
//! the attempt's start (`start.rs`) does not read and parse the row again: it was about a fifth
//! of the start's work on the writer (docs/benchmarks.md "Session 12: store").
//!
//! A kept job is exactly its row as written: any later change of that row drops it. SQLite's
//! update hook on the writer's connection sees every row inserted, updated or deleted in `jobs`
//! (the writer is the only connection that writes, and `jobs` is a rowid table written without
//! `REPLACE` or the truncate optimization), and drops the job of that rowid, whoever wrote it (a
//! cancel, a heartbeat, the lease reaper, retention). A write that is rolled back (a savepoint or
//! the whole transaction) may leave a kept job that was never committed, so the writer forgets
//! every kept job at any rollback ([`Recent::clear`], from `WriteCtx::undo`). A job not kept is
//! read from its row, as before.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;
use uuid::Uuid;

use crate::job::Job;
use crate::store::{Result, StoreError};

/// Jobs kept at most: more than the attempts in flight on a busy server (a worker's slots);
/// past it a claimed job is simply not kept.
const MAX: usize = 2048;

#[derive(Default)]
struct Inner {
    /// The kept jobs, with their rowids.
    jobs: HashMap<Uuid, (i64, Job)>,
    /// The job id of each kept rowid.
    ids: HashMap<i64, Uuid>,
}

/// The writer's kept jobs (see the module docs); none when the hook could not be set.
pub(super) struct Recent(Option<Arc<Mutex<Inner>>>);

impl Recent {
    /// Watches `conn` (the writer's) for changes of `jobs` rows; without the hook no job is
    /// kept, and every start reads its row.
    pub(super) fn watch(conn: &Connection) -> Self {
        Self::hook(conn).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the writer keeps no claimed jobs");
            Self(None)
        })
    }

    fn hook(conn: &Connection) -> Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let hook = inner.clone();
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, table: &str, rowid: i64| {
                if table == "jobs" {
                    let mut i = hook.lock();
                    if let Some(id) = i.ids.remove(&rowid) {
                        i.jobs.remove(&id);
                    }
                }
            },
        ))
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self(Some(inner)))
    }

    /// Keeps `job` as just written to the row `rowid` (after the statement that wrote it).
    pub(super) fn keep(&self, rowid: i64, job: &Job) {
        let Some(inner) = &self.0 else { return };
        let mut i = inner.lock();
        if i.jobs.len() >= MAX {
            return;
        }
        if let Some((old, _)) = i.jobs.insert(job.id, (rowid, job.clone())) {
            i.ids.remove(&old);
        }
        i.ids.insert(rowid, job.id);
    }

    /// The kept job `id` as its row holds it, no longer kept.
    pub(super) fn take(&self, id: Uuid) -> Option<Job> {
        let mut i = self.0.as_ref()?.lock();
        let (rowid, job) = i.jobs.remove(&id)?;
        i.ids.remove(&rowid);
        Some(job)
    }

    /// Forgets every kept job (a rollback).
    pub(super) fn clear(&self) {
        let Some(inner) = &self.0 else { return };
        let mut i = inner.lock();
        if !i.jobs.is_empty() {
            i.jobs.clear();
            i.ids.clear();
        }
    }
}

#[cfg(test)]
#[path = "recent_tests.rs"]
mod tests;
