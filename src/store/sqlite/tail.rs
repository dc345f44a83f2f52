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
use crate::store::tail::{EventTail, Keep, Kept, TailReader};
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
    /// The id of the last event returned (0: none yet), or of the last one dropped unkept after
    /// it, while everything committed after it is in `pending` or still in `batches`; `None`
    /// when the store must be read first.
    synced: Option<i64>,
    /// The id of the last event taken from the batches, kept or not (`None`: none since the
    /// store was read).
    upto: Option<i64>,
    /// Events of a batch past the last page's `max`, those kept only.
    pending: VecDeque<Event>,
}

/// Keeps every event ([`TailReader::read`]).
fn all(_: &Event) -> bool {
    true
}

impl CommitTail {
    pub(super) fn new(store: Arc<SqliteStore>) -> Self {
        let batches = store.committed.subscribe();
        Self {
            store,
            batches,
            synced: None,
            upto: None,
            pending: VecDeque::new(),
        }
    }

    /// Events held taken from the batches and not yet returned.
    #[cfg(test)]
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Moves the batches already committed into `pending`, keeping the events after `synced`
    /// that `keep` accepts: how many events it took, or `None` when batches were missed (the
    /// channel lagged).
    fn drain(&mut self, synced: i64, keep: Keep<'_>) -> Option<usize> {
        let mut read = 0;
        loop {
            match self.batches.try_recv() {
                Ok(b) => {
                    read += self.take(&b, synced, keep);
                    if self.pending.len() > PENDING_MAX {
                        return None;
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return Some(read),
                Err(broadcast::error::TryRecvError::Lagged(_)) => return None,
                Err(broadcast::error::TryRecvError::Closed) => return Some(read),
            }
        }
    }

    /// Takes the events of `batch` after what was taken (or `synced`); copies those `keep`
    /// accepts into `pending`. How many it took.
    fn take(&mut self, batch: &Batch, synced: i64, keep: Keep<'_>) -> usize {
        let after = self.upto.map_or(synced, |u| u.max(synced));
        let mut read = 0;
        for e in batch.iter() {
            let id = id_of(e);
            if id <= after {
                continue;
            }
            read += 1;
            self.upto = Some(id);
            if keep(e) {
                self.pending.push_back(e.clone());
            }
        }
        read
    }

    /// Up to `max` pending events; `synced` follows the last, or the last event taken once
    /// nothing kept is left.
    fn page(&mut self, max: usize) -> Vec<Event> {
        let n = self.pending.len().min(max);
        let page: Vec<Event> = self.pending.drain(..n).collect();
        if let Some(last) = page.last() {
            self.synced = Some(id_of(last));
        }
        if self.pending.is_empty() {
            if let (Some(u), Some(s)) = (self.upto, self.synced) {
                self.synced = Some(u.max(s));
            }
        }
        page
    }

    /// Reads the store after `after`; in step with the batches again when it returned all there
    /// was.
    async fn read_store(&mut self, after: Option<&str>, max: usize) -> Result<Vec<Event>> {
        self.pending.clear();
        self.synced = None;
        self.upto = None;
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
        Ok(self.read_kept(after, wait, max, &all).await?.events)
    }

    async fn read_kept(
        &mut self,
        after: Option<&str>,
        wait: Duration,
        max: usize,
        keep: Keep<'_>,
    ) -> Result<Kept> {
        let cursor = after.map(parse_event_id).transpose()?.unwrap_or(0);
        let synced = match self.synced {
            // Asked for what this tail returned last: the batches carry on from there.
            Some(s) if s == cursor => s,
            _ => {
                let page = self.read_store(after, max).await?;
                if !page.is_empty() || self.synced.is_none() {
                    return Ok(Kept::of(page, keep));
                }
                cursor
            }
        };
        let Some(mut read) = self.drain(synced, keep) else {
            return Ok(Kept::of(self.read_store(after, max).await?, keep));
        };
        // Nothing new, and nothing held from an earlier call past its page: wait for a commit.
        if read == 0 && self.pending.is_empty() {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.batches.recv()).await {
                    Err(_) => return Ok(Kept::default()),
                    Ok(Ok(b)) => {
                        read += self.take(&b, synced, keep);
                        if read > 0 {
                            break;
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => {
                        return Ok(Kept::of(self.read_store(after, max).await?, keep))
                    }
                    Ok(Err(RecvError::Closed)) => {
                        return Err(StoreError::Unavailable("the store is closed".into()))
                    }
                }
            }
        }
        let events = self.page(max);
        Ok(Kept {
            events,
            last: self.synced.map(|s| s.to_string()),
            read,
        })
    }
}
