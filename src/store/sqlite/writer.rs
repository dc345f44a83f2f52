//! The write connection and how requests reach it: one transaction per batch (group commit),
//! run by the writer thread for whatever queued up, or on the requesting task itself when the
//! writer is idle and nothing is queued (one request alone: no hand-off to the writer thread and
//! back, two thread wake-ups fewer on its latency; under load requests queue and are committed
//! together as before).
//!
//! Either way the connection is held under one lock for the whole batch, from `BEGIN` to the
//! replies and notices, so commits are published in commit order.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc};

use super::{handoff, sql, tail, Done, Handoffs, SqliteStore, WriteCtx, WriteOp, MAX_BATCH};
use crate::store::{Notice, StoreSettings};

/// The write connection and what a commit publishes to.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) notify: broadcast::Sender<Notice>,
    pub(super) committed: broadcast::Sender<tail::Batch>,
    pub(super) settings: StoreSettings,
    pub(super) handoffs: Arc<Handoffs>,
}

impl SqliteStore {
    /// The write connection, when no request is queued for the writer thread and nobody holds
    /// it: the caller runs its request at once.
    pub(super) fn idle_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        if self.writer.capacity() < self.writer.max_capacity() {
            return None;
        }
        self.inline.try_lock()
    }
}

/// The writer thread: takes every request waiting (up to [`MAX_BATCH`]) into one transaction.
pub(super) fn writer_loop(w: Arc<Mutex<Writer>>, mut rx: mpsc::Receiver<WriteOp>) {
    let mut batch: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let w = w.lock();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        w.run(&mut batch);
    }
}

impl Writer {
    /// Commits `batch`, then the give-backs of hand-offs it could not deliver, if any.
    pub(super) fn run(&self, batch: &mut Vec<WriteOp>) {
        while !batch.is_empty() {
            self.transaction(batch);
        }
    }

    /// One transaction of every request in `batch`, each in its own savepoint; replies and
    /// notices after the commit. Leaves in `batch` the give-backs of undelivered hand-offs.
    fn transaction(&self, batch: &mut Vec<WriteOp>) {
        let conn = &self.conn;
        let mut ctx = WriteCtx {
            conn,
            notices: Vec::new(),
            events: Vec::new(),
            settings: &self.settings,
            handoffs: &self.handoffs,
            handed: Vec::new(),
        };
        if let Err(e) = sql::control(conn, "BEGIN IMMEDIATE") {
            // Reply to everyone with the failure; nothing ran.
            let msg = e.to_string();
            for op in batch.drain(..) {
                let done = op(&mut ctx);
                done(Some(msg.clone()));
            }
            let _ = conn.execute_batch("ROLLBACK");
            return;
        }
        let dones: Vec<Done> = batch.drain(..).map(|op| op(&mut ctx)).collect();
        let commit = sql::control(conn, "COMMIT").err().map(|e| e.to_string());
        if commit.is_some() {
            let _ = conn.execute_batch("ROLLBACK");
            ctx.undo((0, 0, 0));
        }
        // The committed hand-offs first: the worker starts while the replies go out.
        handoff::deliver(std::mem::take(&mut ctx.handed), batch);
        let notices = std::mem::take(&mut ctx.notices);
        // Before the notices: a tail woken by `Notice::Events` finds the batch already sent.
        if !ctx.events.is_empty() && self.committed.receiver_count() > 0 {
            let _ = self.committed.send(std::mem::take(&mut ctx.events).into());
        }
        for d in dones {
            d(commit.clone());
        }
        let mut events = false;
        for n in notices {
            events |= matches!(n, Notice::Changed { .. });
            let _ = self.notify.send(n);
        }
        if events {
            let _ = self.notify.send(Notice::Events);
        }
    }
}
