//! The live tail of the global event stream: what this process's event streams (`src/events/`)
//! publish from. A capability of the store, so that the events module never names a backend:
//! Redis reads its global Stream with `XREAD BLOCK` on a connection of its own (every node sees
//! every node's commits); the embedded store reads its event table after each commit notice
//! ([`NoticeTail`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Notice, Result, Store, StoreError};
use crate::job::Event;

/// A reader of the global event stream, for one follower (it may hold a connection of its own).
#[async_trait]
pub trait TailReader: Send {
    /// Events of the global stream after `after` (exclusive; from the oldest kept when `None`),
    /// oldest first, at most `max`; waits up to `wait` for the first one (empty when none came).
    /// Starts with a `resync` event when events after `after` were trimmed.
    async fn read(&mut self, after: Option<&str>, wait: Duration, max: usize)
        -> Result<Vec<Event>>;
}

/// Following everything committed, for live delivery.
pub trait EventTail: Send + Sync {
    /// A reader that sees every event committed from now on (on every node sharing the store).
    /// Open it before reading where to start ([`super::EventLog::last_event_id`]), so that no
    /// commit in between is missed.
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn TailReader>>;
}

/// A [`TailReader`] for a store whose commits are all announced by its own notices (one process
/// per store, as the embedded one): reads [`super::EventLog::events`], and when nothing is new
/// waits for [`Notice::Events`].
pub struct NoticeTail {
    store: Arc<dyn Store>,
    notices: broadcast::Receiver<Notice>,
    /// The last read returned all there was: the next one waits for a commit's notice before
    /// it reads (an idle tail does not query the store).
    caught_up: bool,
}

impl NoticeTail {
    /// A tail of `store`, listening to its notices from now on.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let notices = store.subscribe();
        Self {
            store,
            notices,
            caught_up: false,
        }
    }

    /// Waits until events were committed (true) or `deadline` passed (false). Subscribed since
    /// [`Self::new`]: a commit after the last read has left its notice.
    async fn committed_by(&mut self, deadline: tokio::time::Instant) -> Result<bool> {
        loop {
            match tokio::time::timeout_at(deadline, self.notices.recv()).await {
                Err(_) => return Ok(false),
                Ok(Ok(Notice::Events)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    return Ok(true)
                }
                Ok(Ok(_)) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(StoreError::Unavailable("the store is closed".into()))
                }
            }
        }
    }
}

#[async_trait]
impl TailReader for NoticeTail {
    async fn read(
        &mut self,
        after: Option<&str>,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + wait;
        if self.caught_up && !self.committed_by(deadline).await? {
            return Ok(Vec::new());
        }
        let page = self.store.events(None, after, max).await?;
        self.caught_up = page.len() < max;
        if page.is_empty() && self.committed_by(deadline).await? {
            let page = self.store.events(None, after, max).await?;
            self.caught_up = page.len() < max;
            return Ok(page);
        }
        Ok(page)
    }
}
