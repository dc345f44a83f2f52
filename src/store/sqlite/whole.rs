//! Write requests without a savepoint of their own, for the hot requests (a submit, a claim, an
//! attempt's start): SQLite copies every page a savepoint's statements touch into its
//! sub-journal, page by page, and frees the copies at `RELEASE`. That was 7-9% of the server's
//! CPU in the 32-in-flight and batch shapes, most of it on the writer thread (docs/benchmarks.md
//! "Session 9: 32 in flight and batch").
//!
//! A request run here ([`SqliteStore::write_whole`], [`attempt`]) must be one whose refusals
//! come before its first write (a missing job, a refused transition, an idempotent resubmit):
//! those are undone for free, as nothing was written. If one fails after it wrote something (the
//! database failing, or a bug), the transaction cannot drop just that request: it is
//! [`doomed`](WriteCtx::doomed), the remaining requests of the batch do not run, the writer
//! rolls the whole transaction back and every request of it is answered with the error, as when a
//! `COMMIT` fails. Nothing is half written and nobody is told "done" for a write that was undone.

use super::{SqliteStore, WriteCtx};
use crate::store::{Result, StoreError};

/// Runs `f` without a savepoint: on an error after a write, dooms the transaction.
pub(super) fn attempt<T>(
    ctx: &mut WriteCtx<'_>,
    f: impl FnOnce(&mut WriteCtx<'_>) -> Result<T>,
) -> Result<T> {
    if let Some(e) = &ctx.doomed {
        return Err(StoreError::Backend(format!("transaction undone: {e}")));
    }
    let mark = ctx.mark();
    let before = ctx.conn.total_changes();
    let r = f(ctx);
    if let Err(e) = &r {
        ctx.undo(mark);
        // A statement that changed rows completed, or SQLite rolled the transaction back
        // itself (an I/O error): only the whole transaction can be undone now.
        if ctx.conn.total_changes() != before || ctx.conn.is_autocommit() {
            ctx.doomed = Some(e.to_string());
        }
    }
    r
}

/// Opens a request's savepoint ([`SqliteStore::write`]); in a doomed transaction the request
/// fails without running.
pub(super) fn savepoint(ctx: &WriteCtx<'_>) -> Result<()> {
    match &ctx.doomed {
        Some(e) => Err(StoreError::Backend(format!("transaction undone: {e}"))),
        None => super::sql::control(ctx.conn, "SAVEPOINT op").map_err(super::db_err),
    }
}

impl SqliteStore {
    /// [`SqliteStore::write`] without the request's savepoint (see the module docs): for requests
    /// whose refusals all come before their first write.
    pub(super) async fn write_whole<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.request(move |ctx| attempt(ctx, f)).await
    }
}

#[cfg(test)]
#[path = "whole_tests.rs"]
mod tests;
