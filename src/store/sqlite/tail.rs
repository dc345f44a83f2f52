//! [`EventTail`] for the embedded backend. Its commits are all this process's: the writer hands
//! each committed transaction's events (with their ids) to the tail in commit order, so the tail
//! delivers them without reading them back from the database (a read-pool round trip and a
//! query per commit: about a tenth of the server's CPU on one-connection submits). It reads the
//! store ([`EventLog::events`]) only to start, when it fell behind the writer's batches (a
//! lagged channel), or when asked for a cursor it did not return itself; so it sees exactly what
//! the store would return, resync events included.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{events::parse_event_id, SqliteStore};
use crate::job::Event;
use crate::store::tail::{EventTail, TailReader};
use crate::store::{EventLog, Result, StoreError};

/// One committed transaction's events, oldest first.
pub(super) type Batch = Arc<[Event]>;

/// Committed batches a slow tail may be behind before it reads the store instead.
pub(super) const BATCHES: usize = 1024;

/// Events a tail may hold taken from the batches and not yet returned. A reader slower than the
/// writer (the hub's tail reads at most 1,000 events per 250 ms while no stream is open) would
/// otherwise grow `pending` without bound (issue 14: server RSS 194 -> 636 MiB over 1,000,000
/// jobs with no stream open); past it the tail drops them and reads the store instead, as when
/// it lagged.
pub(super) const PENDING_MAX: usize = 16 * 1024;

impl EventTail for SqliteStore {
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn TailReader>> {
        Ok(Box::new(CommitTail::new(self)))
    }
}

/// The tail of one follower.
pub(super) struct CommitTail {
    store: Arc<SqliteStore>,
    /// Subscribed when the tail was opened: every batch committed since.
    batches: broadcast::Receiver<Batch>,
    /// The id of the last event returned (0: none yet), while everything committed after it is
    /// in `pending` or still in `batches`; `None` when the store must be read first.
    synced: Option<i64>,
    /// Events of a batch past the last page's `max`.
    pending: VecDeque<Event>,
}

impl CommitTail {
    pub(super) fn new(store: Arc<SqliteStore>) -> Self {
        let batches = store.committed.subscribe();
        Self {
            store,
            batches,
            synced: None,
            pending: VecDeque::new(),
        }
    }

    /// Events held taken from the batches and not yet returned.
    #[cfg(test)]
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Moves the batches already committed into `pending`, keeping the events after `synced`.
    /// False when batches were missed (the channel lagged).
    fn drain(&mut self, synced: i64) -> bool {
        loop {
            match self.batches.try_recv() {
                Ok(b) => {
                    self.take(&b, synced);
                    if self.pending.len() > PENDING_MAX {
                        return false;
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return true,
                Err(broadcast::error::TryRecvError::Lagged(_)) => return false,
                Err(broadcast::error::TryRecvError::Closed) => return true,
            }
        }
    }

    fn take(&mut self, batch: &Batch, synced: i64) {
        let after = self.pending.back().map_or(synced, id_of);
        self.pending
            .extend(batch.iter().filter(|e| id_of(e) > after).cloned());
    }

    /// Up to `max` pending events; `synced` follows the last.
    fn page(&mut self, max: usize) -> Vec<Event> {
        let n = self.pending.len().min(max);
        let page: Vec<Event> = self.pending.drain(..n).collect();
        if let Some(last) = page.last() {
            self.synced = Some(id_of(last));
        }
        page
    }

    /// Reads the store after `after`; in step with the batches again when it returned all there
    /// was.
    async fn read_store(&mut self, after: Option<&str>, max: usize) -> Result<Vec<Event>> {
        self.pending.clear();
        self.synced = None;
        let page = self.store.events(None, after, max).await?;
        if page.len() < max {
            let last = match page.last() {
                Some(e) => parse_event_id(&e.id)?,
                None => after.map(parse_event_id).transpose()?.unwrap_or(0),
            };
            self.synced = Some(last);
        }
        Ok(page)
    }
}

/// An event id of this store (the writer and `events` set only integers).
fn id_of(e: &Event) -> i64 {
    e.id.parse().unwrap_or(i64::MAX)
}

#[async_trait]
impl TailReader for CommitTail {
    async fn read(
        &mut self,
        after: Option<&str>,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<Event>> {
        let cursor = after.map(parse_event_id).transpose()?.unwrap_or(0);
        let synced = match self.synced {
            // Asked for what this tail returned last: the batches carry on from there.
            Some(s) if s == cursor => s,
            _ => {
                let page = self.read_store(after, max).await?;
                if !page.is_empty() || self.synced.is_none() {
                    return Ok(page);
                }
                cursor
            }
        };
        if !self.drain(synced) {
            return self.read_store(after, max).await;
        }
        if self.pending.is_empty() {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.batches.recv()).await {
                    Err(_) => return Ok(Vec::new()),
                    Ok(Ok(b)) => {
                        self.take(&b, synced);
                        if !self.pending.is_empty() {
                            break;
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => return self.read_store(after, max).await,
                    Ok(Err(RecvError::Closed)) => {
                        return Err(StoreError::Unavailable("the store is closed".into()))
                    }
                }
            }
        }
        Ok(self.page(max))
    }
}
