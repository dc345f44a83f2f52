//! The writer's context of one transaction (`WriteCtx`, mod.rs): how it starts, and the marks
//! a request's savepoint rolls its notices, events, hand-offs and count changes back to.

use rusqlite::Connection;

use super::{counts, Handoffs, Mark, StoreSettings, WriteCtx};

impl<'a> WriteCtx<'a> {
    /// Where a request's notices, events, hand-offs and count changes start, to drop them if
    /// it is undone.
    pub(super) fn mark(&self) -> Mark {
        Mark(
            self.notices.len(),
            self.events.len(),
            self.handed.len(),
            self.counts.mark(),
        )
    }

    /// A transaction's context: nothing recorded yet.
    pub(super) fn new(
        conn: &'a Connection,
        settings: &'a StoreSettings,
        handoffs: &'a Handoffs,
        counts: counts::Deltas,
        events_maybe_empty: bool,
    ) -> Self {
        WriteCtx {
            conn,
            notices: Vec::new(),
            events: Vec::new(),
            settings,
            handoffs,
            handed: Vec::new(),
            doomed: None,
            counts,
            events_maybe_empty,
        }
    }

    /// Drops what was recorded since `mark` (rolled back; a dropped hand-off tells its worker).
    pub(super) fn undo(&mut self, Mark(notices, events, handed, counts): Mark) {
        self.notices.truncate(notices);
        self.events.truncate(events);
        self.handed.truncate(handed);
        self.counts.undo(counts);
    }
}
