//! A copy of a database made by `runyard backup` (docs/reliability.md "Backups") is a store of
//! its own, not its original: a server started on it (beside the original while it runs, to
//! check the backup, or anywhere once the original is gone) never takes the original's work or
//! event ids for its own. The backup marks its copy ([`mark_copy`], before the copy is given its
//! name), and the copy's first open acts on the marks ([`release_inherited`]):
//!
//! - `meta` `copy`: a random id of the copy, in its deployment fingerprint
//!   (`runyard_hooks::deployment_id`): the containers and Kubernetes Jobs its runners launch are
//!   labelled as another deployment's than the original's, so neither's sweep of work left behind
//!   (`src/worker/orphans.rs`) nor launch takes the other's work for its own.
//! - `meta` `copy_leases`: the leases in the copy are the original's. Their work (a process whose
//!   pid, machine and start time name the original's live process on the same machine, a
//!   container or Kubernetes Job found by its job id and attempt) is the original's: the copy's
//!   first open requeues each job that was active at the backup's moment (`LeaseExpired`, the
//!   attempt lost, or `ERROR` when none is left, as for any lost attempt) and gives up the lease a
//!   cancelled job held while its work was being stopped (`StopLost`), without its work being
//!   looked for, in one transaction that also removes the mark. Crash recovery of the copy's own
//!   work later is any store's.
//! - Its events are numbered again from a first id of its own (`events_first`, a random multiple
//!   of 2^32 as a new database's, `events.rs`), away from the original's ids, which the original
//!   goes on handing out after the backup: any cursor of the original is below the copy's first
//!   id or past its newest, and gets a `resync` (docs/api.md, "A cursor from another database").
//!   Webhook deliveries keep the event ids they were written with: a receiver drops one that the
//!   original delivered already.

use std::path::Path;

use rusqlite::{params, Connection};

use super::{apply_in, counts, db_err, exec, queue, row, row_opt, Handoffs, WriteCtx};
use crate::job::{now_us, Command, JobStatus};
use crate::store::{Result, StoreError, StoreSettings};

/// Marks (in `meta`) the id of a copy.
const COPY: &str = "copy";
/// Marks (in `meta`) a copy whose leases are its original's, until its first open.
const COPY_LEASES: &str = "copy_leases";

/// Makes the database at `path` (a copy just written by `runyard backup`, no one else using it)
/// a store of its own: a new copy id, its leases marked as the original's, its events numbered
/// from a new first id. One transaction. Returns the copy's id.
pub fn mark_copy(path: &Path) -> Result<u64> {
    // A newer build's database (its format mark) is not this build's to change.
    super::schema::refuse_foreign(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    // The tables an older build's database may not have yet (`meta`, `trims`), as at open.
    super::schema::create(&conn, path)?;
    let tx = conn.transaction().map_err(db_err)?;
    renumber_events(&tx)?;
    let id = (rand::random::<u64>() >> 1).max(1);
    for (key, value) in [(COPY, id as i64), (COPY_LEASES, 1)] {
        exec(
            &tx,
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
    }
    tx.commit().map_err(db_err)?;
    Ok(id)
}

/// The copy id of the database (`None`: it is no copy).
pub(super) fn copy_id(conn: &Connection) -> Result<Option<u64>> {
    let id: Option<i64> = row_opt(conn, "SELECT value FROM meta WHERE key = ?1", [COPY], |r| {
        r.get(0)
    })?;
    Ok(id.and_then(|i| u64::try_from(i).ok()))
}

/// Numbers the events (and the trims' marks) from a new first id, as a new database's, at
/// least a block of 2^32 ids away from every id the original used or will use soon.
fn renumber_events(conn: &Connection) -> Result<()> {
    let first: i64 = row(
        conn,
        "SELECT COALESCE((SELECT value FROM meta WHERE key = 'events_first'), 1)",
        [],
        |r| r.get(0),
    )?;
    let (lo, hi): (i64, i64) = row(
        conn,
        "SELECT MIN(?1, COALESCE((SELECT MIN(id) FROM events), ?1),
                    COALESCE((SELECT MIN(upto) FROM trims WHERE upto > 0), ?1)),
                MAX(?1, COALESCE((SELECT MAX(id) FROM events), ?1),
                    COALESCE((SELECT MAX(upto) FROM trims), ?1))",
        [first],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // Above the original's ids, a block apart: a receiver that orders a job's webhooks by event
    // id (notifications.md) puts the copy's after the original's, and an old AUTOINCREMENT
    // table's sequence (below them) cannot number the copy's next events as the original does.
    let above = |f: i64| (f >> 32) > (hi >> 32) + 1;
    let new_first = (0..1000)
        .map(|_| super::events::random_first())
        .find(|f| above(*f))
        .or_else(|| {
            let f = ((hi >> 32) + 2) << 32;
            (f < 1 << 53).then_some(f)
        })
        .ok_or_else(|| StoreError::Backend("no first event id above the original's".into()))?;
    let delta = new_first - lo;
    exec(conn, "UPDATE events SET id = id + ?1", [delta])?;
    exec(
        conn,
        "UPDATE trims SET upto = upto + ?1 WHERE upto >= ?2",
        [delta, lo],
    )?;
    exec(
        conn,
        "INSERT INTO meta(key, value) VALUES ('events_first', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [new_first],
    )?;
    Ok(())
}

/// At the open of a copy whose leases are still its original's (`copy_leases`; after
/// `queue::orphan_leases`, which made them expired): every job holding one is requeued (or
/// ends `ERROR`), a cancelled one's lease given up, its work not looked for; then the mark goes.
/// One transaction, with the jobs' events. Nothing to do for any other database.
pub(super) fn release_inherited(
    conn: &Connection,
    settings: &StoreSettings,
    handoffs: &Handoffs,
) -> Result<()> {
    let marked: Option<i64> = row_opt(
        conn,
        "SELECT value FROM meta WHERE key = ?1",
        [COPY_LEASES],
        |r| r.get(0),
    )?;
    if marked.is_none() {
        return Ok(());
    }
    let held = queue::readable_jobs(conn, queue::LEASED_SQL, [], usize::MAX, "open")?;
    super::sql::control(conn, "BEGIN IMMEDIATE").map_err(db_err)?;
    let mut ctx = WriteCtx::new(conn, settings, handoffs, counts::Deltas::default(), true);
    let r = (|| {
        for mut job in held {
            let Some(lease) = job.lease.clone() else {
                continue;
            };
            let cancelled = job.status == JobStatus::Cancelled;
            let cmd = if cancelled {
                Command::StopLost { token: lease.token }
            } else {
                Command::LeaseExpired {
                    token: Some(lease.token),
                }
            };
            // Past the lease's end, which `orphan_leases` set to now at the latest.
            let now = now_us().max(lease.expires_at.saturating_add(1));
            match apply_in(&mut ctx, &mut job, cmd, now) {
                Ok(()) => tracing::warn!(
                    job_id = %job.id,
                    r#type = %job.job_type,
                    attempt = job.attempt,
                    status = %job.status,
                    "this store is a copy (runyard backup): the job held a lease of the original \
                     store; {}, its work (the original's) left alone",
                    if cancelled {
                        "lease given up"
                    } else if job.status.is_terminal() {
                        "ended"
                    } else {
                        "requeued"
                    }
                ),
                Err(e @ StoreError::Transition(_)) => {
                    tracing::warn!(job_id = %job.id, error = %e, "a copied job's lease not released");
                }
                Err(e) => return Err(e),
            }
        }
        exec(conn, "DELETE FROM meta WHERE key = ?1", [COPY_LEASES])?;
        ctx.counts.flush(conn)
    })();
    match r.and_then(|()| super::sql::control(conn, "COMMIT").map_err(db_err)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
